#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

/*
 * test_url.c: upstream URL parsing, host:port rendering, and the query
 * helpers used for containerd's ?ns= parameter and token requests.
 */
#include <string.h>

#include "url.h"

struct url_case {
	const char	*in;
	const char	*scheme;
	const char	*host;
	int		 port;
	const char	*path;
	int		 tls;
	const char	*hostport;
};

static const struct url_case good_urls[] = {
	{ "http://registry", "http", "registry", 80, "", 0, "registry" },
	{ "https://registry-1.docker.io", "https", "registry-1.docker.io",
	    443, "", 1, "registry-1.docker.io" },
	{ "https://auth.docker.io/token", "https", "auth.docker.io", 443,
	    "/token", 1, "auth.docker.io" },
	{ "HTTPS://GHCR.IO/Token?a=B", "https", "ghcr.io", 443,
	    "/Token?a=B", 1, "ghcr.io" },
	{ "http://127.0.0.1:5000/", "http", "127.0.0.1", 5000, "/", 0,
	    "127.0.0.1:5000" },
	{ "http://h:443", "http", "h", 443, "", 0, "h:443" },
	{ "https://h:80/x", "https", "h", 80, "/x", 1, "h:80" },
	{ "https://h:443/x", "https", "h", 443, "/x", 1, "h" },
	{ "http://h:65535", "http", "h", 65535, "", 0, "h:65535" },
	{ "http://h:00080", "http", "h", 80, "", 0, "h" },
	{ "http://[::1]:5000/v2/", "http", "::1", 5000, "/v2/", 0,
	    "[::1]:5000" },
	{ "https://[2001:DB8::1]", "https", "2001:db8::1", 443, "", 1,
	    "[2001:db8::1]" },
	{ "http://[::ffff:127.0.0.1]/", "http", "::ffff:127.0.0.1", 80, "/",
	    0, "[::ffff:127.0.0.1]" },
	{ "http://my_registry.local:8080?x=1", "http", "my_registry.local",
	    8080, "?x=1", 0, "my_registry.local:8080" },
};

static const char *const bad_urls[] = {
	"",
	"registry",
	"ftp://h/",
	"http:/h",
	"http//h",
	"httpx://h",
	"http://",
	"http:///path",
	"http://:80",
	"http://user@h",
	"http://user:pw@h/",
	"https://h@evil.example/",
	"http://h:",
	"http://h:0",
	"http://h:65536",
	"http://h:123456",
	"http://h:-1",
	"http://h:+80",
	"http://h:8a",
	"http://h:80:80",
	"http://h /x",
	"http://h/x y",
	" http://h",
	"http://h/\x01",
	"http://h\r\n/x",
	"http://h/\x7f",
	"http://h/\xc3\xa9",
	"http://h%2e/",
	"http://h!/",
	"http://[::1",
	"http://[]/",
	"http://[::1]x/",
	"http://[::1]:/",
	"http://[fe80::1%25eth0]/",
	"http://[v1.x]/",
	"http://[127.0.0.1]/",
	"http://[::1]:99999/",
};

static void
test_parse_good(void **state)
{
	struct url	u;
	char		hp[300];
	size_t		i;

	(void)state;
	for (i = 0; i < sizeof(good_urls) / sizeof(good_urls[0]); i++) {
		const struct url_case *t = &good_urls[i];

		if (url_parse(t->in, &u) != 0)
			fail_msg("%s: refused", t->in);
		assert_string_equal(u.scheme, t->scheme);
		assert_string_equal(u.host, t->host);
		assert_int_equal(u.port, t->port);
		assert_string_equal(u.path, t->path);
		assert_int_equal(u.tls, t->tls);
		assert_int_equal(url_hostport(&u, hp, sizeof(hp)),
		    (int)strlen(t->hostport));
		assert_string_equal(hp, t->hostport);
	}
}

static void
test_parse_bad(void **state)
{
	struct url	u;
	size_t		i;

	(void)state;
	for (i = 0; i < sizeof(bad_urls) / sizeof(bad_urls[0]); i++) {
		memset(&u, 'x', sizeof(u));
		if (url_parse(bad_urls[i], &u) != -1)
			fail_msg("'%s': accepted", bad_urls[i]);
		/* Nothing half-parsed is left behind. */
		assert_string_equal(u.host, "");
		assert_string_equal(u.path, "");
	}
	assert_int_equal(url_parse(NULL, &u), -1);
}

/* The fixed fields bound what is accepted. */
static void
test_parse_lengths(void **state)
{
	static char	in[4200];
	struct url	u;
	char		hp[8];
	size_t		n;

	(void)state;
	memcpy(in, "http://", 7);
	memset(in + 7, 'a', 255);
	in[7 + 255] = '\0';
	assert_int_equal(url_parse(in, &u), 0);
	assert_int_equal(strlen(u.host), 255);
	assert_int_equal(url_hostport(&u, hp, sizeof(hp)), -1);
	assert_string_equal(hp, "");
	in[7 + 255] = 'a';
	in[7 + 256] = '\0';
	assert_int_equal(url_parse(in, &u), -1);

	memcpy(in, "http://h", 8);
	n = 8;
	in[n] = '/';
	memset(in + n + 1, 'p', 2046);
	in[n + 2047] = '\0';
	assert_int_equal(url_parse(in, &u), 0);
	assert_int_equal(strlen(u.path), 2047);
	in[n + 2047] = 'p';
	in[n + 2048] = '\0';
	assert_int_equal(url_parse(in, &u), -1);
}

static void
test_hostport_small(void **state)
{
	struct url	u;
	char		hp[16];

	(void)state;
	assert_int_equal(url_parse("http://[::1]:5000", &u), 0);
	assert_int_equal(url_hostport(&u, hp, 11), 10);
	assert_string_equal(hp, "[::1]:5000");
	assert_int_equal(url_hostport(&u, hp, 10), -1);
	assert_string_equal(hp, "");
	assert_int_equal(url_hostport(&u, hp, 0), -1);
	memset(&u, 0, sizeof(u));
	assert_int_equal(url_hostport(&u, hp, sizeof(hp)), -1);
}

struct get_case {
	const char	*query;
	const char	*key;
	int		 rc;
	const char	*value;
};

static const struct get_case get_cases[] = {
	{ "ns=docker.io&x=1", "ns", 0, "docker.io" },
	{ "a=1&ns=docker.io&b=2", "ns", 0, "docker.io" },
	{ "a=1&ns=docker.io", "ns", 0, "docker.io" },
	{ "ns=docker.io", "ns", 0, "docker.io" },
	{ "a=1&b=2", "ns", -1, "" },
	{ "", "ns", -1, "" },
	{ "ns=first&ns=second", "ns", 0, "first" },
	{ "xns=1&nsx=2&ns=3", "ns", 0, "3" },
	{ "NS=upper&ns=lower", "ns", 0, "lower" },
	{ "ns", "ns", 0, "" },
	{ "ns=", "ns", 0, "" },
	{ "&&ns=x&&", "ns", 0, "x" },
	{ "scope=repository%3Alibrary%2Falpine%3Apull", "scope", 0,
	    "repository:library/alpine:pull" },
	{ "q=a+b%20c%2B", "q", 0, "a b c+" },
	{ "q=%e2%82%AC", "q", 0, "\xe2\x82\xac" },
	{ "q=a=b", "q", 0, "a=b" },
	{ "q=%", "q", -1, "" },
	{ "q=%4", "q", -1, "" },
	{ "q=%zz", "q", -1, "" },
	{ "q=%00", "q", -1, "" },
	/* A bad first value is not skipped in favour of a later one. */
	{ "q=%zz&q=ok", "q", -1, "" },
	/* Names are compared raw: an encoded name is another name. */
	{ "n%73=evil&ns=good", "ns", 0, "good" },
};

static void
test_query_get(void **state)
{
	char	out[64];
	size_t	i;
	int	rc;

	(void)state;
	for (i = 0; i < sizeof(get_cases) / sizeof(get_cases[0]); i++) {
		const struct get_case *t = &get_cases[i];

		memset(out, 'x', sizeof(out));
		rc = url_query_get(t->query, strlen(t->query), t->key, out,
		    sizeof(out));
		if (rc != t->rc || strcmp(out, t->value) != 0)
			fail_msg("%s [%s]: %d '%s'", t->query, t->key, rc,
			    out);
	}
}

static void
test_query_get_bounds(void **state)
{
	static const char	 q[] = "ns=docker.io&b=2";
	static const char	 nul[] = "a=1\0&ns=x";
	char			 out[16];

	(void)state;
	/* qlen ends the query: "ns=dock". */
	assert_int_equal(url_query_get(q, 7, "ns", out, sizeof(out)), 0);
	assert_string_equal(out, "dock");
	assert_int_equal(url_query_get(q, sizeof(q) - 1, "ns", out, 10), 0);
	assert_string_equal(out, "docker.io");
	assert_int_equal(url_query_get(q, sizeof(q) - 1, "ns", out, 9), -1);
	assert_string_equal(out, "");
	assert_int_equal(url_query_get(q, sizeof(q) - 1, "ns", out, 0), -1);
	assert_int_equal(url_query_get(NULL, 0, "ns", out, sizeof(out)), -1);
	assert_int_equal(url_query_get(q, sizeof(q) - 1, NULL, out,
	    sizeof(out)), -1);
	/* A raw NUL in a value is refused; elsewhere it is just a byte. */
	assert_int_equal(url_query_get(nul, sizeof(nul) - 1, "a", out,
	    sizeof(out)), -1);
	assert_int_equal(url_query_get(nul, sizeof(nul) - 1, "ns", out,
	    sizeof(out)), 0);
	assert_string_equal(out, "x");
}

struct strip_case {
	const char	*query;
	const char	*key;
	const char	*out;
};

static const struct strip_case strip_cases[] = {
	{ "ns=docker.io&n=1&last=2", "ns", "n=1&last=2" },
	{ "a=1&ns=docker.io&b=2", "ns", "a=1&b=2" },
	{ "a=1&b=2&ns=docker.io", "ns", "a=1&b=2" },
	{ "ns=docker.io", "ns", "" },
	{ "a=1&b=%2F+x", "ns", "a=1&b=%2F+x" },
	{ "ns=a&x=1&ns=b&ns", "ns", "x=1" },
	{ "", "ns", "" },
	{ "nsx=1&xns=2&NS=3&n%73=4", "ns", "nsx=1&xns=2&NS=3&n%73=4" },
	{ "&&a=1&&ns=2&&b&&", "ns", "a=1&b" },
	{ "a=1&a=1", "ns", "a=1&a=1" },
};

static void
test_query_strip(void **state)
{
	char	out[64];
	size_t	i;
	int	rc;

	(void)state;
	for (i = 0; i < sizeof(strip_cases) / sizeof(strip_cases[0]); i++) {
		const struct strip_case *t = &strip_cases[i];

		rc = url_query_strip(t->query, strlen(t->query), t->key, out,
		    sizeof(out));
		if (rc != (int)strlen(t->out) || strcmp(out, t->out) != 0)
			fail_msg("%s [%s]: %d '%s'", t->query, t->key, rc,
			    out);
	}
}

static void
test_query_strip_bounds(void **state)
{
	static const char	 q[] = "a=1&ns=x&b=2";
	char			 out[16];

	(void)state;
	assert_int_equal(url_query_strip(q, sizeof(q) - 1, "ns", out, 8), 7);
	assert_string_equal(out, "a=1&b=2");
	assert_int_equal(url_query_strip(q, sizeof(q) - 1, "ns", out, 7), -1);
	assert_string_equal(out, "");
	assert_int_equal(url_query_strip(q, sizeof(q) - 1, "ns", out, 4), -1);
	assert_int_equal(url_query_strip(q, sizeof(q) - 1, "ns", out, 0), -1);
	assert_int_equal(url_query_strip(q, 3, "ns", out, 4), 3);
	assert_string_equal(out, "a=1");
	assert_int_equal(url_query_strip(NULL, 0, "ns", out, 4), 0);
	assert_string_equal(out, "");
	assert_int_equal(url_query_strip(NULL, 3, "ns", out, 4), -1);
}

static void
test_pct_encode(void **state)
{
	char	out[128];

	(void)state;
	assert_int_equal(url_pct_encode("repository:library/alpine:pull",
	    out, sizeof(out)), 36);
	assert_string_equal(out, "repository%3Alibrary%2Falpine%3Apull");
	assert_int_equal(url_pct_encode("AZaz09-._~", out, sizeof(out)), 10);
	assert_string_equal(out, "AZaz09-._~");
	assert_int_equal(url_pct_encode("a b+c&d=e?f#%\xff", out,
	    sizeof(out)), 30);
	assert_string_equal(out, "a%20b%2Bc%26d%3De%3Ff%23%25%FF");
	assert_int_equal(url_pct_encode("", out, sizeof(out)), 0);
	assert_string_equal(out, "");
	/* Exactly fitting, then one byte short, plain and encoded. */
	assert_int_equal(url_pct_encode("abc", out, 4), 3);
	assert_int_equal(url_pct_encode("abc", out, 3), -1);
	assert_string_equal(out, "");
	assert_int_equal(url_pct_encode("a/", out, 5), 4);
	assert_string_equal(out, "a%2F");
	assert_int_equal(url_pct_encode("a/", out, 4), -1);
	assert_int_equal(url_pct_encode("a", out, 0), -1);
	assert_int_equal(url_pct_encode(NULL, out, sizeof(out)), -1);
}

/* Run every test of this module. */
int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_good),
		cmocka_unit_test(test_parse_bad),
		cmocka_unit_test(test_parse_lengths),
		cmocka_unit_test(test_hostport_small),
		cmocka_unit_test(test_query_get),
		cmocka_unit_test(test_query_get_bounds),
		cmocka_unit_test(test_query_strip),
		cmocka_unit_test(test_query_strip_bounds),
		cmocka_unit_test(test_pct_encode),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
