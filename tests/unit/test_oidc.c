#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

/*
 * test_oidc.c: the JWKS check oidc.c applies to what an identity provider
 * serves before its keys are kept (oidc_keys_parse): the shape, the
 * bounds, kids and ktys that go into log lines, duplicate kids and
 * duplicate members; and the reference count of a key set.
 */
#include <stdio.h>
#include <string.h>

#include "oidc.h"

struct bad_case {
	const char	*doc;
	size_t		 max_keys;
	const char	*why;
};

static const struct bad_case bad[] = {
	{ "", 8, "JWKS is not valid JSON (a duplicate member, a NUL or a "
	  "syntax error)" },
	{ "[]", 8, "JWKS is not a JSON object with a \"keys\" array" },
	{ "{\"keys\":{}}", 8,
	  "JWKS is not a JSON object with a \"keys\" array" },
	{ "{\"keys\":[],\"keys\":[]}", 8,
	  "JWKS is not valid JSON (a duplicate member, a NUL or a "
	  "syntax error)" },
	{ "{\"keys\":[]}", 8, "JWKS has 0 keys (1 to max_keys, 8)" },
	{ "{\"keys\":[{\"kty\":\"EC\"},{\"kty\":\"EC\",\"kid\":\"b\"},"
	  "{\"kty\":\"EC\",\"kid\":\"c\"}]}", 2,
	  "JWKS has 3 keys (1 to max_keys, 2)" },
	{ "{\"keys\":[1]}", 8,
	  "JWKS key 0 has no kty of 1 to 16 printable characters" },
	{ "{\"keys\":[{\"kid\":\"a\"}]}", 8,
	  "JWKS key 0 has no kty of 1 to 16 printable characters" },
	{ "{\"keys\":[{\"kty\":\"RSA\\n\",\"kid\":\"a\"}]}", 8,
	  "JWKS key 0 has no kty of 1 to 16 printable characters" },
	{ "{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"a\\nINFO forged\"}]}", 8,
	  "JWKS key 0: kid is not 1 to 128 printable characters" },
	{ "{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"a\\u0000b\"}]}", 8,
	  "JWKS is not valid JSON (a duplicate member, a NUL or a "
	  "syntax error)" },
	{ "{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"a\\\"b\"}]}", 8,
	  "JWKS key 0: kid is not 1 to 128 printable characters" },
	{ "{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"\"}]}", 8,
	  "JWKS key 0: kid is not 1 to 128 printable characters" },
	{ "{\"keys\":[{\"kty\":\"RSA\",\"kid\":7}]}", 8,
	  "JWKS key 0: kid is not 1 to 128 printable characters" },
	{ "{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"x\"},"
	  "{\"kty\":\"EC\",\"kid\":\"x\"}]}", 8,
	  "JWKS keys 0 and 1 have the same kid" },
	{ "{\"keys\":[{\"kty\":\"RSA\"},{\"kty\":\"EC\"}]}", 8,
	  "JWKS keys 0 and 1 have the same kid (none)" },
	{ "{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"x\",\"kid\":\"y\"}]}", 8,
	  "JWKS is not valid JSON (a duplicate member, a NUL or a "
	  "syntax error)" },
};

static void
test_bad(void **state)
{
	struct oidc_keys	*k;
	char			 why[256];
	size_t			 i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		print_message("case %zu: %s\n", i, bad[i].why);
		why[0] = '\0';
		k = oidc_keys_parse(bad[i].doc, strlen(bad[i].doc),
		    bad[i].max_keys, why, sizeof(why));
		assert_null(k);
		assert_string_equal(why, bad[i].why);
	}
}

static void
test_kid_bound(void **state)
{
	struct oidc_keys	*k;
	char			 doc[512], why[256], kid[130];

	(void)state;
	memset(kid, 'k', 128);
	kid[128] = '\0';
	snprintf(doc, sizeof(doc), "{\"keys\":[{\"kty\":\"EC\",\"kid\":"
	    "\"%s\"}]}", kid);
	k = oidc_keys_parse(doc, strlen(doc), 1, why, sizeof(why));
	assert_non_null(k);
	assert_string_equal(k->kids[0], kid);
	oidc_keys_unref(k);
	kid[128] = 'k';
	kid[129] = '\0';
	snprintf(doc, sizeof(doc), "{\"keys\":[{\"kty\":\"EC\",\"kid\":"
	    "\"%s\"}]}", kid);
	assert_null(oidc_keys_parse(doc, strlen(doc), 1, why, sizeof(why)));
}

static void
test_good(void **state)
{
	static const char doc[] = "{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"r1\","
	    "\"n\":\"AQAB\",\"e\":\"AQAB\"},{\"kty\":\"EC\",\"kid\":\"e1\","
	    "\"crv\":\"P-256\"},{\"kty\":\"OKP\"}],\"extra\":true}";
	struct oidc_keys	*k;
	char			 why[256];

	(void)state;
	k = oidc_keys_parse(doc, strlen(doc), 3, why, sizeof(why));
	assert_non_null(k);
	assert_int_equal(k->refcnt, 1);
	assert_int_equal(k->nkeys, 3);
	assert_string_equal(k->kids[0], "r1");
	assert_string_equal(k->ktys[0], "RSA");
	assert_string_equal(k->kids[1], "e1");
	assert_string_equal(k->ktys[1], "EC");
	assert_string_equal(k->kids[2], "");
	assert_true(oidc_keys_has_kid(k, "e1"));
	assert_false(oidc_keys_has_kid(k, "e2"));
	assert_false(oidc_keys_has_kid(NULL, "e1"));
	/* The document as fetched, for the JWK leaf. */
	assert_int_equal(k->jwks_len, strlen(doc));
	assert_string_equal(k->jwks, doc);
	assert_null(oidc_keys_set(k));
	/* A verifier's reference outlives the publisher's. */
	k->refcnt++;
	oidc_keys_unref(k);
	assert_int_equal(k->refcnt, 1);
	assert_string_equal(k->kids[0], "r1");
	oidc_keys_unref(k);
	oidc_keys_unref(NULL);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bad),
		cmocka_unit_test(test_kid_bound),
		cmocka_unit_test(test_good),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
