/*
 * netaddr.c: classify the address a connection is about to go to, and
 * match a host against a configured allow-list.  See netaddr.h.
 *
 * The ranges are the ones a gateway sits next to: its own host
 * (loopback), the local link (169.254/16 holds cloud metadata services),
 * the site (RFC 1918, RFC 6598 carrier-grade NAT, RFC 4193 unique local)
 * and the unspecified address, which Linux connects to the host itself.
 */
#include <netinet/in.h>

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "netaddr.h"

#define NETADDR_STR(e, s) s,
static const char *const netaddr_names[] = {
	NETADDR_CLASSES(NETADDR_STR)
};
#undef NETADDR_STR

/* Classify an IPv4 address (network byte order). */
enum netaddr_class
netaddr_class_v4(const unsigned char *a)
{
	if (a[0] == 0)
		return (NETADDR_UNSPECIFIED);	/* "this network", RFC 1122 */
	if (a[0] == 127)
		return (NETADDR_LOOPBACK);
	if (a[0] == 169 && a[1] == 254)
		return (NETADDR_LINK_LOCAL);
	if (a[0] == 10 || (a[0] == 172 && (a[1] & 0xf0) == 16) ||
	    (a[0] == 192 && a[1] == 168))
		return (NETADDR_PRIVATE);
	if (a[0] == 100 && (a[1] & 0xc0) == 64)
		return (NETADDR_CGNAT);
	if (a[0] >= 224)
		return (NETADDR_RESERVED);	/* multicast, 240/4, broadcast */
	return (NETADDR_PUBLIC);
}

/* Classify an IPv6 address (16 bytes). */
enum netaddr_class
netaddr_class_v6(const unsigned char *a)
{
	static const unsigned char zero[12];
	static const unsigned char nat64[12] = { 0x00, 0x64, 0xff, 0x9b };
	unsigned char	 v4[4];
	size_t		 i;

	/* ::ffff:a.b.c.d (mapped) and ::a.b.c.d (compatible, RFC 4291). */
	if (memcmp(a, zero, 10) == 0 && ((a[10] == 0xff && a[11] == 0xff) ||
	    (a[10] == 0 && a[11] == 0))) {
		if (a[10] == 0) {
			for (i = 12; i < 15 && a[i] == 0; i++)
				;
			if (i == 15 && a[15] == 0)
				return (NETADDR_UNSPECIFIED);	/* :: */
			if (i == 15 && a[15] == 1)
				return (NETADDR_LOOPBACK);	/* ::1 */
		}
		return (netaddr_class_v4(a + 12));
	}
	/*
	 * NAT64 (RFC 6052, 64:ff9b::/96): on an IPv6-only network the
	 * translator carries it to the IPv4 address in the last 32 bits,
	 * 10/8 and 169.254/16 included.  The local-use prefix (RFC 8215,
	 * 64:ff9b:1::/48) is the site's own translation: private.
	 */
	if (memcmp(a, nat64, 12) == 0)
		return (netaddr_class_v4(a + 12));
	if (memcmp(a, nat64, 4) == 0 && a[4] == 0 && a[5] == 1)
		return (NETADDR_PRIVATE);
	/*
	 * 6to4 (RFC 3056, 2002:V4::/48) and Teredo (RFC 4380,
	 * 2001:0::/32, the client's IPv4 inverted in the last 32 bits) are
	 * relayed to the IPv4 address they carry.
	 */
	if (a[0] == 0x20 && a[1] == 0x02)
		return (netaddr_class_v4(a + 2));
	if (a[0] == 0x20 && a[1] == 0x01 && a[2] == 0 && a[3] == 0) {
		for (i = 0; i < 4; i++)
			v4[i] = (unsigned char)~a[12 + i];
		return (netaddr_class_v4(v4));
	}
	if (a[0] == 0xfe && (a[1] & 0xc0) == 0x80)
		return (NETADDR_LINK_LOCAL);
	/* Site-local (RFC 3879 deprecated it; routers may still route it). */
	if (a[0] == 0xfe && (a[1] & 0xc0) == 0xc0)
		return (NETADDR_ULA);
	if ((a[0] & 0xfe) == 0xfc)
		return (NETADDR_ULA);
	if (a[0] == 0xff)
		return (NETADDR_RESERVED);	/* multicast */
	return (NETADDR_PUBLIC);
}

/* Classify a socket address. */
enum netaddr_class
netaddr_class_sa(const struct sockaddr *sa, socklen_t len)
{
	const struct sockaddr_in	*s4;
	const struct sockaddr_in6	*s6;

	if (sa == NULL)
		return (NETADDR_UNKNOWN);
	if (sa->sa_family == AF_INET && len >= (socklen_t)sizeof(*s4)) {
		s4 = (const struct sockaddr_in *)(const void *)sa;
		return (netaddr_class_v4((const unsigned char *)
		    &s4->sin_addr));
	}
	if (sa->sa_family == AF_INET6 && len >= (socklen_t)sizeof(*s6)) {
		s6 = (const struct sockaddr_in6 *)(const void *)sa;
		return (netaddr_class_v6(s6->sin6_addr.s6_addr));
	}
	return (NETADDR_UNKNOWN);
}

/* The class's name. */
const char *
netaddr_class_str(enum netaddr_class c)
{
	if ((unsigned)c >= NETADDR__MAX)
		return ("unknown");
	return (netaddr_names[c]);
}

/*
 * One list entry against host and port.  The entry's port, when it has
 * one, is all digits; anything else never matches.
 */
static int
netaddr_entry_match(const char *e, const char *host, int port)
{
	const char	*h = e, *p = NULL, *rb;
	size_t		 hlen;
	char		*end;
	long		 v;

	if (e[0] == '[') {
		if ((rb = strchr(e, ']')) == NULL)
			return (0);
		h = e + 1;
		hlen = rb - h;
		if (rb[1] == ':')
			p = rb + 2;
		else if (rb[1] != '\0')
			return (0);
	} else if ((p = strchr(e, ':')) != NULL) {
		hlen = p - e;
		p++;
		if (strchr(p, ':') != NULL)
			return (0);	/* a v6 literal must be bracketed */
	} else
		hlen = strlen(e);
	if (hlen == 0 || strlen(host) != hlen ||
	    strncasecmp(h, host, hlen) != 0)
		return (0);
	if (p == NULL)
		return (1);
	if (*p < '0' || *p > '9')
		return (0);
	v = strtol(p, &end, 10);
	return (*end == '\0' && v == port);
}

/* Whether host:port is named in list; see netaddr.h. */
int
netaddr_listed(char *const *list, size_t n, const char *host, int port)
{
	size_t	 i;

	for (i = 0; list != NULL && i < n; i++)
		if (list[i] != NULL && netaddr_entry_match(list[i], host,
		    port))
			return (1);
	return (0);
}
