#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

/*
 * test_netaddr.c: the address classes a redirect or token realm may not
 * reach (every range, its edges, IPv4-mapped and -compatible IPv6), and
 * the redirect_allow / auth_hosts matcher.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "netaddr.h"

struct addr_case {
	const char		*addr;
	enum netaddr_class	 want;
};

static const struct addr_case cases[] = {
	/* multicast and reserved; 6to4, Teredo, site-local */
	{ "224.0.0.1", NETADDR_RESERVED },
	{ "239.255.255.250", NETADDR_RESERVED },
	{ "240.0.0.1", NETADDR_RESERVED },
	{ "255.255.255.255", NETADDR_RESERVED },
	{ "223.255.255.255", NETADDR_PUBLIC },
	{ "ff02::1", NETADDR_RESERVED },
	{ "::ffff:224.0.0.1", NETADDR_RESERVED },
	{ "2002:7f00:1::", NETADDR_LOOPBACK },		/* 6to4 of 127.0.0.1 */
	{ "2002:a9fe:a9fe::1", NETADDR_LINK_LOCAL },	/* 169.254.169.254 */
	{ "2002:c000:201::1", NETADDR_PUBLIC },		/* 192.0.2.1 */
	{ "2001:0:4136:e378:8000:63bf:80ff:fffe", NETADDR_LOOPBACK },
							/* Teredo, ~ 127.0.0.1 */
	{ "2001:0:4136:e378:8000:63bf:3fff:fdd2", NETADDR_PUBLIC },
	{ "2001:db8::1", NETADDR_PUBLIC },
	{ "feff::1", NETADDR_ULA },
	/* unspecified: 0.0.0.0/8 and :: */
	{ "0.0.0.0", NETADDR_UNSPECIFIED },
	{ "0.255.255.255", NETADDR_UNSPECIFIED },
	{ "::", NETADDR_UNSPECIFIED },
	{ "1.0.0.0", NETADDR_PUBLIC },
	/* loopback */
	{ "127.0.0.1", NETADDR_LOOPBACK },
	{ "127.0.0.0", NETADDR_LOOPBACK },
	{ "127.255.255.255", NETADDR_LOOPBACK },
	{ "126.255.255.255", NETADDR_PUBLIC },
	{ "128.0.0.0", NETADDR_PUBLIC },
	{ "::1", NETADDR_LOOPBACK },
	{ "::2", NETADDR_UNSPECIFIED },	/* ::0.0.0.2, compatible form */
	/* link-local */
	{ "169.254.0.0", NETADDR_LINK_LOCAL },
	{ "169.254.169.254", NETADDR_LINK_LOCAL },
	{ "169.254.255.255", NETADDR_LINK_LOCAL },
	{ "169.253.255.255", NETADDR_PUBLIC },
	{ "169.255.0.0", NETADDR_PUBLIC },
	{ "fe80::", NETADDR_LINK_LOCAL },
	{ "fe80::1", NETADDR_LINK_LOCAL },
	{ "febf:ffff::1", NETADDR_LINK_LOCAL },
	{ "fec0::1", NETADDR_ULA },	/* site-local, deprecated */
	/* NAT64 (RFC 6052): the IPv4 address the translator goes to */
	{ "64:ff9b::7f00:1", NETADDR_LOOPBACK },
	{ "64:ff9b::a9fe:a9fe", NETADDR_LINK_LOCAL },
	{ "64:ff9b::a00:5", NETADDR_PRIVATE },
	{ "64:ff9b::6440:1", NETADDR_CGNAT },
	{ "64:ff9b::", NETADDR_UNSPECIFIED },
	{ "64:ff9b::808:808", NETADDR_PUBLIC },
	{ "64:ff9b:0:1::7f00:1", NETADDR_PUBLIC },	/* not the /96 */
	{ "64:ff9a::7f00:1", NETADDR_PUBLIC },
	/* local-use NAT64 (RFC 8215): the site's own translation */
	{ "64:ff9b:1::", NETADDR_PRIVATE },
	{ "64:ff9b:1:ffff::808:808", NETADDR_PRIVATE },
	{ "64:ff9b:2::a00:5", NETADDR_PUBLIC },
	{ "fe7f::1", NETADDR_PUBLIC },
	/* RFC 1918 */
	{ "10.0.0.0", NETADDR_PRIVATE },
	{ "10.255.255.255", NETADDR_PRIVATE },
	{ "9.255.255.255", NETADDR_PUBLIC },
	{ "11.0.0.0", NETADDR_PUBLIC },
	{ "172.16.0.0", NETADDR_PRIVATE },
	{ "172.31.255.255", NETADDR_PRIVATE },
	{ "172.15.255.255", NETADDR_PUBLIC },
	{ "172.32.0.0", NETADDR_PUBLIC },
	{ "192.168.0.0", NETADDR_PRIVATE },
	{ "192.168.255.255", NETADDR_PRIVATE },
	{ "192.167.255.255", NETADDR_PUBLIC },
	{ "192.169.0.0", NETADDR_PUBLIC },
	/* carrier-grade NAT, RFC 6598 */
	{ "100.64.0.0", NETADDR_CGNAT },
	{ "100.127.255.255", NETADDR_CGNAT },
	{ "100.63.255.255", NETADDR_PUBLIC },
	{ "100.128.0.0", NETADDR_PUBLIC },
	/* unique local, RFC 4193 */
	{ "fc00::", NETADDR_ULA },
	{ "fd12:3456::1", NETADDR_ULA },
	{ "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", NETADDR_ULA },
	{ "fbff:ffff::1", NETADDR_PUBLIC },
	{ "fe00::1", NETADDR_PUBLIC },
	/* IPv4-mapped and IPv4-compatible forms */
	{ "::ffff:127.0.0.1", NETADDR_LOOPBACK },
	{ "::ffff:10.1.2.3", NETADDR_PRIVATE },
	{ "::ffff:169.254.169.254", NETADDR_LINK_LOCAL },
	{ "::ffff:100.64.0.1", NETADDR_CGNAT },
	{ "::ffff:0.0.0.0", NETADDR_UNSPECIFIED },
	{ "::ffff:192.168.1.1", NETADDR_PRIVATE },
	{ "::ffff:8.8.8.8", NETADDR_PUBLIC },
	{ "::127.0.0.1", NETADDR_LOOPBACK },
	{ "::10.0.0.1", NETADDR_PRIVATE },
	{ "::8.8.8.8", NETADDR_PUBLIC },
	{ "::fffe:127.0.0.1", NETADDR_PUBLIC },	/* not a mapped form */
	/* public */
	{ "8.8.8.8", NETADDR_PUBLIC },
	{ "2001:db8::1", NETADDR_PUBLIC },
	{ "2606:4700::1111", NETADDR_PUBLIC },
};

static void
test_classes(void **state)
{
	struct sockaddr_in	s4;
	struct sockaddr_in6	s6;
	enum netaddr_class	got;
	size_t			i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		memset(&s4, 0, sizeof(s4));
		memset(&s6, 0, sizeof(s6));
		if (inet_pton(AF_INET, cases[i].addr, &s4.sin_addr) == 1) {
			s4.sin_family = AF_INET;
			got = netaddr_class_sa((struct sockaddr *)&s4,
			    sizeof(s4));
		} else {
			assert_int_equal(inet_pton(AF_INET6, cases[i].addr,
			    &s6.sin6_addr), 1);
			s6.sin6_family = AF_INET6;
			got = netaddr_class_sa((struct sockaddr *)&s6,
			    sizeof(s6));
		}
		if (got != cases[i].want)
			fail_msg("%s: got %s, want %s", cases[i].addr,
			    netaddr_class_str(got),
			    netaddr_class_str(cases[i].want));
	}
}

static void
test_odd_inputs(void **state)
{
	struct sockaddr_in	s4;
	struct sockaddr		sa;

	(void)state;
	assert_int_equal(netaddr_class_sa(NULL, 0), NETADDR_UNKNOWN);
	memset(&sa, 0, sizeof(sa));
	sa.sa_family = AF_UNIX;
	assert_int_equal(netaddr_class_sa(&sa, sizeof(sa)), NETADDR_UNKNOWN);
	/* Too short for its family. */
	memset(&s4, 0, sizeof(s4));
	s4.sin_family = AF_INET6;
	assert_int_equal(netaddr_class_sa((struct sockaddr *)&s4,
	    sizeof(s4)), NETADDR_UNKNOWN);
	assert_string_equal(netaddr_class_str(NETADDR_LOOPBACK), "loopback");
	assert_string_equal(netaddr_class_str(NETADDR__MAX), "unknown");
}

static void
test_listed(void **state)
{
	char	*list[] = { "Storage.Example.com", "127.0.0.1:5001",
	    "[::1]:7000", "[fe80::1]", "bad:port:x", "h:", "h2:12a",
	    "[::2" };
	size_t	 n = sizeof(list) / sizeof(list[0]);

	(void)state;
	assert_int_equal(netaddr_listed(list, n, "storage.example.com", 443),
	    1);
	assert_int_equal(netaddr_listed(list, n, "storage.example.com", 1),
	    1);
	assert_int_equal(netaddr_listed(list, n, "storage.example.co", 443),
	    0);
	assert_int_equal(netaddr_listed(list, n, "127.0.0.1", 5001), 1);
	assert_int_equal(netaddr_listed(list, n, "127.0.0.1", 5002), 0);
	assert_int_equal(netaddr_listed(list, n, "127.0.0.2", 5001), 0);
	assert_int_equal(netaddr_listed(list, n, "::1", 7000), 1);
	assert_int_equal(netaddr_listed(list, n, "::1", 7001), 0);
	assert_int_equal(netaddr_listed(list, n, "fe80::1", 1), 1);
	assert_int_equal(netaddr_listed(list, n, "bad", 80), 0);
	assert_int_equal(netaddr_listed(list, n, "h", 80), 0);
	assert_int_equal(netaddr_listed(list, n, "h2", 12), 0);
	assert_int_equal(netaddr_listed(list, n, "::2", 80), 0);
	assert_int_equal(netaddr_listed(NULL, 0, "h", 80), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_classes),
		cmocka_unit_test(test_odd_inputs),
		cmocka_unit_test(test_listed),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
