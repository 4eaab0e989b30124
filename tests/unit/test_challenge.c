#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

/*
 * test_challenge.c: WWW-Authenticate parsing against what real registries
 * send, RFC 7235's corners, garbage; and the token URL built from it.
 */
#include <stdio.h>
#include <string.h>

#include "challenge.h"

struct chal_case {
	const char	*in;
	const char	*scheme;
	const char	*realm;
	const char	*service;
	const char	*scope;
	const char	*error;
};

static const struct chal_case good[] = {
	/* Docker Hub. */
	{ "Bearer realm=\"https://auth.docker.io/token\","
	    "service=\"registry.docker.io\","
	    "scope=\"repository:library/alpine:pull\"",
	    "Bearer", "https://auth.docker.io/token", "registry.docker.io",
	    "repository:library/alpine:pull", "" },
	/* GHCR. */
	{ "Bearer realm=\"https://ghcr.io/token\",service=\"ghcr.io\","
	    "scope=\"repository:user/image:pull\"",
	    "Bearer", "https://ghcr.io/token", "ghcr.io",
	    "repository:user/image:pull", "" },
	/* Quay, no scope. */
	{ "Bearer realm=\"https://quay.io/v2/auth\",service=\"quay.io\"",
	    "Bearer", "https://quay.io/v2/auth", "quay.io", "", "" },
	/* ECR. */
	{ "Basic realm=\"https://0123.dkr.ecr.us-east-1.amazonaws.com/\","
	    "service=\"ecr.amazonaws.com\"",
	    "Basic", "https://0123.dkr.ecr.us-east-1.amazonaws.com/",
	    "ecr.amazonaws.com", "", "" },
	/* registry:2 asking for more scope. */
	{ "Bearer realm=\"http://127.0.0.1:5001/auth\",service=\"registry\","
	    "scope=\"repository:a/b:pull,push\",error=\"insufficient_scope\"",
	    "Bearer", "http://127.0.0.1:5001/auth", "registry",
	    "repository:a/b:pull,push", "insufficient_scope" },
	/* Case, whitespace, order, token values, empty list elements. */
	{ "bEARER  SCOPE = \"s\" ,\tService=svc,,  REALM=\"r\"  ",
	    "Bearer", "r", "svc", "s", "" },
	{ ", ,Bearer realm=\"r\"", "Bearer", "r", "", "", "" },
	{ "Bearer realm=\"\"", "Bearer", "", "", "", "" },
	{ "Bearer", "Bearer", "", "", "", "" },
	{ "basic", "Basic", "", "", "", "" },
	/* RFC 7235 reads this as a token68, not an empty realm. */
	{ "Bearer realm=", "Bearer", "", "", "", "" },
	/* Quoted pairs are unescaped; other params are ignored. */
	{ "Bearer realm=\"a\\\"b\\\\c\\d\",charset=\"UTF-8\",x=y",
	    "Bearer", "a\"b\\cd", "", "", "" },
	{ "Bearer realm=\"a,b=c, Basic realm=d\"", "Bearer",
	    "a,b=c, Basic realm=d", "", "", "" },
	{ "Bearer realm=\"caf\xc3\xa9\\\t x\"", "Bearer",
	    "caf\xc3\xa9\t x", "", "", "" },
	/* Several challenges: Bearer wins, then the first of its kind. */
	{ "Basic realm=\"x\", Bearer realm=\"y\",service=\"z\"",
	    "Bearer", "y", "z", "", "" },
	{ "Bearer realm=\"y\", Basic realm=\"x\",service=\"b\"",
	    "Bearer", "y", "", "", "" },
	{ "Bearer realm=\"1\", Bearer realm=\"2\"", "Bearer", "1", "", "", "" },
	{ "Basic realm=\"1\", Basic realm=\"2\"", "Basic", "1", "", "", "" },
	{ "Negotiate, Basic realm=\"b\"", "Basic", "b", "", "", "" },
	{ "Negotiate abc+/==, Bearer realm=\"r\"", "Bearer", "r", "", "",
	    "" },
	{ "Digest realm=\"d\", nonce=\"n\", realm=\"d2\", Basic realm=\"b\"",
	    "Basic", "b", "", "", "" },
	{ "Basic realm=\"x\", Newauth realm=\"n\", service=\"s\"",
	    "Basic", "x", "", "", "" },
};

static const char *const bad[] = {
	"",
	"   ",
	",",
	"realm=\"x\"",
	"=x",
	"Bearer =x",
	"Negotiate",
	"Digest realm=\"d\"",
	"Bearer realm=\"x",
	"Bearer realm=\"x\\",
	"Bearer realm=,service=x",
	"Bearer realm=\"x\" y",
	"Bearer realm=\"x\"y",
	"Bearer\"x\"",
	"Bearer realm=\"x\"; service=\"y\"",
	"Bearer realm=\"a\x01z\"",
	"Bearer realm=\"a\x7fz\"",
	"Bearer realm=\"a\nz\"",
	"Bearer realm=a\"b\"",
	"Bearer realm=https://x/",
	"Bearer realm=\"x\", realm=\"y\"",
	"Bearer realm=\"x\", REALM=\"x\"",
	"Bearer service=a,service=b",
	"Bearer realm=\"x\",\x01",
	"Bearer (x)",
	"Bearer abc== x",
	"Negotiate abc==, realm=\"x\", Basic realm=\"y\"",
	"\"Bearer\"",
};

static void
test_parse_good(void **state)
{
	struct challenge	c;
	size_t			i;

	(void)state;
	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		const struct chal_case *t = &good[i];

		if (challenge_parse(t->in, strlen(t->in), &c) != 0)
			fail_msg("refused: %s", t->in);
		if (strcmp(c.scheme, t->scheme) != 0 ||
		    strcmp(c.realm, t->realm) != 0 ||
		    strcmp(c.service, t->service) != 0 ||
		    strcmp(c.scope, t->scope) != 0 ||
		    strcmp(c.error, t->error) != 0)
			fail_msg("%s: %s '%s' '%s' '%s' '%s'", t->in,
			    c.scheme, c.realm, c.service, c.scope, c.error);
	}
}

static void
test_parse_bad(void **state)
{
	struct challenge	c;
	size_t			i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(&c, 'x', sizeof(c));
		if (challenge_parse(bad[i], strlen(bad[i]), &c) != -1)
			fail_msg("accepted: %s", bad[i]);
		assert_string_equal(c.scheme, "");
		assert_string_equal(c.realm, "");
	}
	assert_int_equal(challenge_parse(NULL, 0, &c), -1);
}

/* len ends the value; a NUL inside it is malformed. */
static void
test_parse_len(void **state)
{
	static const char	 v[] = "Bearer realm=\"r\",service=\"s\"JUNK";
	static const char	 nul[] = "Bearer realm=\"r\"\0,service=\"s\"";
	static const char	 nulq[] = "Bearer realm=\"r\0x\"";
	struct challenge	 c;

	(void)state;
	assert_int_equal(challenge_parse(v, sizeof(v) - 5, &c), 0);
	assert_string_equal(c.service, "s");
	assert_int_equal(challenge_parse(v, sizeof(v) - 1, &c), -1);
	assert_int_equal(challenge_parse(v, 6, &c), 0);
	assert_string_equal(c.scheme, "Bearer");
	assert_int_equal(challenge_parse(nul, sizeof(nul) - 1, &c), -1);
	assert_int_equal(challenge_parse(nulq, sizeof(nulq) - 1, &c), -1);
}

/* Each field holds its size less one; one more fails the header. */
static void
test_parse_lengths(void **state)
{
	static char		 v[3000];
	struct challenge	 c;
	int			 n;

	(void)state;
	n = snprintf(v, sizeof(v), "Bearer realm=\"%01023d\"", 0);
	assert_int_equal(challenge_parse(v, n, &c), 0);
	assert_int_equal(strlen(c.realm), 1023);
	n = snprintf(v, sizeof(v), "Bearer realm=\"%01024d\"", 0);
	assert_int_equal(challenge_parse(v, n, &c), -1);
	n = snprintf(v, sizeof(v), "Bearer realm=r,service=%0255d", 0);
	assert_int_equal(challenge_parse(v, n, &c), 0);
	n = snprintf(v, sizeof(v), "Bearer realm=r,service=%0256d", 0);
	assert_int_equal(challenge_parse(v, n, &c), -1);
	n = snprintf(v, sizeof(v), "Bearer error=\"%063d\"", 0);
	assert_int_equal(challenge_parse(v, n, &c), 0);
	n = snprintf(v, sizeof(v), "Bearer error=\"%064d\"", 0);
	assert_int_equal(challenge_parse(v, n, &c), -1);
	/* Escapes count once they are undone. */
	n = snprintf(v, sizeof(v), "Bearer scope=\"%01022d\\\"\"", 0);
	assert_int_equal(challenge_parse(v, n, &c), 0);
	assert_int_equal(c.scope[1022], '"');
	/* A long value of a scheme we skip does not matter. */
	n = snprintf(v, sizeof(v), "Foo realm=\"%02000d\", Bearer realm=r",
	    0);
	assert_int_equal(challenge_parse(v, n, &c), 0);
	assert_string_equal(c.realm, "r");
}

static void
make(struct challenge *c, const char *realm, const char *service,
    const char *scope)
{
	memset(c, 0, sizeof(*c));
	memcpy(c->scheme, "Bearer", 7);
	strncpy(c->realm, realm, sizeof(c->realm) - 1);
	strncpy(c->service, service, sizeof(c->service) - 1);
	strncpy(c->scope, scope, sizeof(c->scope) - 1);
}

struct url_case {
	const char	*realm;
	const char	*service;
	const char	*scope;
	const char	*scopes[3];
	size_t		 nscopes;
	const char	*url;
};

static const struct url_case urls[] = {
	{ "https://auth.docker.io/token", "registry.docker.io",
	    "repository:library/alpine:pull", { NULL }, 0,
	    "https://auth.docker.io/token?service=registry.docker.io"
	    "&scope=repository%3Alibrary%2Falpine%3Apull" },
	{ "https://auth.docker.io/token", "registry.docker.io",
	    "repository:library/alpine:pull",
	    { "repository:a/b:pull,push", "registry:catalog:*" }, 2,
	    "https://auth.docker.io/token?service=registry.docker.io"
	    "&scope=repository%3Aa%2Fb%3Apull%2Cpush"
	    "&scope=registry%3Acatalog%3A%2A" },
	{ "https://h/t?x=1", "s v", "", { NULL }, 0,
	    "https://h/t?x=1&service=s%20v" },
	{ "https://h/t?", "s", "", { NULL }, 0, "https://h/t?service=s" },
	{ "https://h/t?x=1&", "s", "", { NULL }, 0,
	    "https://h/t?x=1&service=s" },
	{ "https://h/t", "", "a:b:pull", { NULL }, 0,
	    "https://h/t?scope=a%3Ab%3Apull" },
	{ "https://h/t", "", "", { NULL }, 0, "https://h/t" },
	{ "https://h/t", "s", "", { "", "x" }, 2,
	    "https://h/t?service=s&scope=x" },
	/* A challenge scope may hold several, space-separated. */
	{ "https://h/t", "s", " a:b:pull  c:d:push ", { NULL }, 0,
	    "https://h/t?service=s&scope=a%3Ab%3Apull&scope=c%3Ad%3Apush" },
};

static void
test_token_url(void **state)
{
	struct challenge	c;
	char			out[512];
	size_t			i;
	int			n;

	(void)state;
	for (i = 0; i < sizeof(urls) / sizeof(urls[0]); i++) {
		const struct url_case *t = &urls[i];

		make(&c, t->realm, t->service, t->scope);
		n = challenge_token_url(&c, t->scopes, t->nscopes, out,
		    sizeof(out));
		if (n != (int)strlen(t->url) || strcmp(out, t->url) != 0)
			fail_msg("%s: %d %s", t->url, n, out);
	}
}

/* Every buffer one byte short of the URL fails cleanly. */
static void
test_token_url_bounds(void **state)
{
	static const char *const scopes[] = { "repository:a:pull", "b c" };
	struct challenge	 c;
	char			 out[256], want[256];
	size_t			 len, n;

	(void)state;
	make(&c, "https://h/token", "svc/1", "");
	len = (size_t)challenge_token_url(&c, scopes, 2, want, sizeof(want));
	assert_string_equal(want, "https://h/token?service=svc%2F1"
	    "&scope=repository%3Aa%3Apull&scope=b%20c");
	for (n = 0; n <= len; n++) {
		memset(out, 'x', sizeof(out));
		assert_int_equal(challenge_token_url(&c, scopes, 2, out, n),
		    -1);
		if (n > 0)
			assert_int_equal(out[0], '\0');
		assert_int_equal(out[n], 'x');
	}
	assert_int_equal(challenge_token_url(&c, scopes, 2, out, len + 1),
	    (int)len);
	assert_string_equal(out, want);
}

static void
test_token_url_bad(void **state)
{
	static const char *const nulls[] = { "a", NULL };
	struct challenge	 c;
	char			 out[256];

	(void)state;
	make(&c, "", "s", "x");
	assert_int_equal(challenge_token_url(&c, NULL, 0, out, sizeof(out)),
	    -1);
	make(&c, "https://h/t x", "s", "");
	assert_int_equal(challenge_token_url(&c, NULL, 0, out, sizeof(out)),
	    -1);
	make(&c, "https://h/t#f", "s", "");
	assert_int_equal(challenge_token_url(&c, NULL, 0, out, sizeof(out)),
	    -1);
	make(&c, "https://h/t\r\n", "s", "");
	assert_int_equal(challenge_token_url(&c, NULL, 0, out, sizeof(out)),
	    -1);
	make(&c, "https://h/t", "s", "");
	assert_int_equal(challenge_token_url(&c, NULL, 1, out, sizeof(out)),
	    -1);
	assert_int_equal(challenge_token_url(&c, nulls, 2, out, sizeof(out)),
	    -1);
	assert_int_equal(challenge_token_url(NULL, NULL, 0, out, sizeof(out)),
	    -1);
	/* A realm that is not NUL-terminated is refused, not overread. */
	memset(c.realm, 'r', sizeof(c.realm));
	assert_int_equal(challenge_token_url(&c, NULL, 0, out, sizeof(out)),
	    -1);
}

/* What the parser gives, the URL builder takes. */
static void
test_parse_then_url(void **state)
{
	static const char	 v[] = "Basic realm=\"basic\", Bearer "
	    "realm=\"https://ghcr.io/token\",service=\"ghcr.io\","
	    "scope=\"repository:o/i:pull\"";
	struct challenge	 c;
	char			 out[256];

	(void)state;
	assert_int_equal(challenge_parse(v, sizeof(v) - 1, &c), 0);
	assert_true(challenge_token_url(&c, NULL, 0, out, sizeof(out)) > 0);
	assert_string_equal(out, "https://ghcr.io/token?service=ghcr.io"
	    "&scope=repository%3Ao%2Fi%3Apull");
}

/* Run every test of this module. */
int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_good),
		cmocka_unit_test(test_parse_bad),
		cmocka_unit_test(test_parse_len),
		cmocka_unit_test(test_parse_lengths),
		cmocka_unit_test(test_token_url),
		cmocka_unit_test(test_token_url_bounds),
		cmocka_unit_test(test_token_url_bad),
		cmocka_unit_test(test_parse_then_url),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
