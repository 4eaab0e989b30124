/*
 * netaddr.h: which addresses the gateway may dial on an upstream's behalf.
 * An address a redirect or a token realm resolves to is refused when it is
 * one of the gateway's own networks (loopback, link-local, private,
 * carrier-grade NAT, unique local, unspecified), so a hostile upstream
 * cannot aim the gateway at services behind it.  Leaf: no libevent, no
 * project header.
 */
#ifndef PC_NETADDR_H
#define PC_NETADDR_H

#include <sys/types.h>
#include <sys/socket.h>

#include <stddef.h>

/*
 * The classes, with the ranges they hold: unspecified 0/8 and ::,
 * loopback 127/8 and ::1, link-local 169.254/16 and fe80::/10, private
 * (RFC 1918) 10/8, 172.16/12, 192.168/16 and local-use NAT64
 * 64:ff9b:1::/48, carrier-grade NAT (RFC 6598) 100.64/10, unique local
 * (RFC 4193) fc00::/7 and the deprecated site-local fec0::/10 (as unique
 * local), multicast or reserved 224/4, 240/4 (broadcast included) and
 * ff00::/8.  6to4 (2002::/16) and Teredo (2001::/32) addresses are
 * classified as the IPv4 address they carry.
 */
#define NETADDR_CLASSES(X)						\
	X(NETADDR_PUBLIC, "public")					\
	X(NETADDR_UNSPECIFIED, "unspecified")				\
	X(NETADDR_LOOPBACK, "loopback")					\
	X(NETADDR_LINK_LOCAL, "link-local")				\
	X(NETADDR_PRIVATE, "private")					\
	X(NETADDR_CGNAT, "carrier-grade NAT")				\
	X(NETADDR_ULA, "unique local")					\
	X(NETADDR_RESERVED, "multicast or reserved")			\
	X(NETADDR_UNKNOWN, "unknown family")

#define NETADDR_ENUM(e, s) e,
enum netaddr_class {
	NETADDR_CLASSES(NETADDR_ENUM)
	NETADDR__MAX
};
#undef NETADDR_ENUM

/*
 * The class of an IPv4 address given as 4 bytes in network order.
 */
enum netaddr_class	netaddr_class_v4(const unsigned char *);

/*
 * The class of an IPv6 address given as 16 bytes.  IPv4-mapped
 * (::ffff:a.b.c.d), IPv4-compatible (::a.b.c.d) and NAT64
 * (64:ff9b::a.b.c.d) addresses are classified as the IPv4 address they
 * carry, since that is where a connection to them goes.
 */
enum netaddr_class	netaddr_class_v6(const unsigned char *);

/* The class of a socket address (AF_INET or AF_INET6). */
enum netaddr_class	netaddr_class_sa(const struct sockaddr *, socklen_t);

/* A short name for the class: "loopback", "private", ... */
const char		*netaddr_class_str(enum netaddr_class);

/*
 * Whether host:port is named by one of the n entries of list, each "host"
 * (any port) or "host:port" ("[v6]:port" or a bare "[v6]" for IPv6).
 * Host names compare without case.  Returns 1 or 0.
 */
int			 netaddr_listed(char *const *list, size_t n,
			    const char *host, int port);

#endif /* PC_NETADDR_H */
