#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

/*
 * test_web.c: the pieces of the browser pages (src/web.c): the one HTML
 * escaping function on every character that matters in text and in
 * quoted attributes, control characters dropped; Cookie header parsing
 * (first occurrence, spaces, prefixes of other names, bad octets, the
 * bound on the header); the constant-time comparison; tokens, base64url
 * and the PKCE S256 challenge of RFC 7636's appendix B.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "web.h"

static char *
esc(const char *s)
{
	static char	 out[1024];
	struct wbuf	 b;

	wbuf_init(&b);
	wbuf_esc(&b, s);
	snprintf(out, sizeof(out), "%s", b.p != NULL ? b.p : "");
	wbuf_free(&b);
	return (out);
}

static void
test_escape(void **state)
{
	(void)state;
	assert_string_equal(esc("plain text"), "plain text");
	assert_string_equal(esc("<script>alert(1)</script>"),
	    "&lt;script&gt;alert(1)&lt;/script&gt;");
	assert_string_equal(esc("a&b"), "a&amp;b");
	assert_string_equal(esc("\" onmouseover='x'"),
	    "&quot; onmouseover=&#39;x&#39;");
	assert_string_equal(esc("&lt;"), "&amp;lt;");
	assert_string_equal(esc("tab\there\nline"), "tab\there\nline");
	assert_string_equal(esc("bell\x07\x1b[31m\x7f"), "bell[31m");
	assert_string_equal(esc("caf\xc3\xa9"), "caf\xc3\xa9");
	assert_string_equal(esc(""), "");
	assert_string_equal(esc(NULL), "");
}

static void
test_wbuf_grows(void **state)
{
	struct wbuf	 b;
	int		 i;

	(void)state;
	wbuf_init(&b);
	for (i = 0; i < 5000; i++)
		wbuf_esc(&b, "<");
	assert_int_equal(b.len, 5000 * 4);
	assert_int_equal(strlen(b.p), 5000 * 4);
	wbuf_printf(&b, "%d-%s", 42, "x");
	assert_string_equal(b.p + 20000, "42-x");
	wbuf_free(&b);
	assert_null(b.p);
}

static void
test_cookie(void **state)
{
	char	 v[64];

	(void)state;
	assert_int_equal(web_cookie_get("a=1; sid=abc; b=2", 4096, "sid", v,
	    sizeof(v)), 0);
	assert_string_equal(v, "abc");
	assert_int_equal(web_cookie_get("sid=first; sid=second", 4096, "sid",
	    v, sizeof(v)), 0);
	assert_string_equal(v, "first");
	/* A name that merely ends or begins the same is another cookie. */
	assert_int_equal(web_cookie_get("xsid=no; sidx=no", 4096, "sid", v,
	    sizeof(v)), -1);
	assert_int_equal(web_cookie_get("  sid=spaced  ;x=1", 4096, "sid", v,
	    sizeof(v)), 0);
	assert_string_equal(v, "spaced");
	assert_int_equal(web_cookie_get("sid=", 4096, "sid", v, sizeof(v)),
	    -1);
	assert_int_equal(web_cookie_get("sid=a\"b", 4096, "sid", v,
	    sizeof(v)), -1);
	assert_int_equal(web_cookie_get("sid=a,b", 4096, "sid", v,
	    sizeof(v)), -1);
	assert_int_equal(web_cookie_get("sid=a b", 4096, "sid", v,
	    sizeof(v)), -1);
	assert_int_equal(web_cookie_get(NULL, 4096, "sid", v, sizeof(v)),
	    -1);
	assert_int_equal(web_cookie_get("novalue; sid=ok", 4096, "sid", v,
	    sizeof(v)), 0);
	assert_string_equal(v, "ok");
	/* Too long a value for out, or a header over the bound. */
	assert_int_equal(web_cookie_get("sid=0123456789", 4096, "sid", v,
	    10), -1);
	assert_int_equal(web_cookie_get("sid=abc; pad=xxxxxxxxxxxxxxxx", 20,
	    "sid", v, sizeof(v)), -1);
	assert_int_equal(web_cookie_get("sid=abc", 7, "sid", v, sizeof(v)),
	    0);
}

static void
test_ct_equal(void **state)
{
	(void)state;
	assert_true(web_ct_equal("abc", "abc"));
	assert_false(web_ct_equal("abc", "abd"));
	assert_false(web_ct_equal("abc", "abcd"));
	assert_false(web_ct_equal("", "a"));
	assert_true(web_ct_equal("", ""));
}

static void
test_tokens(void **state)
{
	char	 a[WEB_TOKEN_LEN + 1], b[WEB_TOKEN_LEN + 1], hex[65];

	(void)state;
	assert_int_equal(web_random_token(a), 0);
	assert_int_equal(web_random_token(b), 0);
	assert_int_equal(strlen(a), WEB_TOKEN_LEN);
	assert_true(web_token_ok(a));
	assert_string_not_equal(a, b);
	assert_false(web_token_ok("short"));
	a[5] = '=';
	assert_false(web_token_ok(a));
	web_sha256_hex("abc", 3, hex);
	assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223"
	    "b00361a396177a9cb410ff61f20015ad");
}

static void
test_b64url_pkce(void **state)
{
	char	 out[64];

	(void)state;
	web_b64url((const unsigned char *)"\xfb\xff", 2, out);
	assert_string_equal(out, "-_8");
	web_b64url((const unsigned char *)"f", 1, out);
	assert_string_equal(out, "Zg");
	web_b64url((const unsigned char *)"foo", 3, out);
	assert_string_equal(out, "Zm9v");
	/* RFC 7636 appendix B. */
	web_pkce_s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk", out);
	assert_string_equal(out, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_escape),
		cmocka_unit_test(test_wbuf_grows),
		cmocka_unit_test(test_cookie),
		cmocka_unit_test(test_ct_equal),
		cmocka_unit_test(test_tokens),
		cmocka_unit_test(test_b64url_pkce),
	};

	return (cmocka_run_group_tests(tests, NULL, NULL));
}
