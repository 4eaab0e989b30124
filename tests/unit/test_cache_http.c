/*
 * test_cache_http.c: the cache's HTTP rules: single byte ranges, the
 * normalised Accept set that keys a tag, and verifiable digests.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "cache_http.h"

static void
test_ranges(void **state)
{
	uint64_t	s = 0, e = 0;

	(void)state;
	assert_int_equal(cache_range_parse(NULL, 100, &s, &e),
	    CACHE_RANGE_NONE);
	assert_int_equal(cache_range_parse("bytes=0-9", 100, &s, &e),
	    CACHE_RANGE_OK);
	assert_true(s == 0 && e == 9);
	assert_int_equal(cache_range_parse("bytes=90-", 100, &s, &e),
	    CACHE_RANGE_OK);
	assert_true(s == 90 && e == 99);
	assert_int_equal(cache_range_parse("bytes=-10", 100, &s, &e),
	    CACHE_RANGE_OK);
	assert_true(s == 90 && e == 99);
	assert_int_equal(cache_range_parse("bytes=-1000", 100, &s, &e),
	    CACHE_RANGE_OK);
	assert_true(s == 0 && e == 99);
	/* An end past the size is cut to it. */
	assert_int_equal(cache_range_parse("bytes=50-5000", 100, &s, &e),
	    CACHE_RANGE_OK);
	assert_true(s == 50 && e == 99);
	assert_int_equal(cache_range_parse("bytes=100-", 100, &s, &e),
	    CACHE_RANGE_UNSAT);
	assert_int_equal(cache_range_parse("bytes=-0", 100, &s, &e),
	    CACHE_RANGE_UNSAT);
	/* Ignored: several ranges, other units, nonsense, reversed. */
	assert_int_equal(cache_range_parse("bytes=0-1,5-6", 100, &s, &e),
	    CACHE_RANGE_NONE);
	assert_int_equal(cache_range_parse("items=0-1", 100, &s, &e),
	    CACHE_RANGE_NONE);
	assert_int_equal(cache_range_parse("bytes=a-b", 100, &s, &e),
	    CACHE_RANGE_NONE);
	assert_int_equal(cache_range_parse("bytes=9-1", 100, &s, &e),
	    CACHE_RANGE_NONE);
	assert_int_equal(cache_range_parse("bytes=99999999999999999999-",
	    100, &s, &e), CACHE_RANGE_NONE);
}

static void
test_accept_norm(void **state)
{
	struct headers	h;
	char		out[512];

	(void)state;
	headers_init(&h);
	assert_int_equal(cache_accept_norm(&h, out, sizeof(out)), 0);
	assert_string_equal(out, "");
	/* dockerd: several lines; params, case and order do not matter. */
	headers_add(&h, "Accept", 6,
	    "application/vnd.docker.distribution.manifest.v2+json", 52);
	headers_add(&h, "accept", 6, "Application/JSON; q=0.5 , "
	    "application/vnd.docker.distribution.manifest.v2+json", 78);
	assert_true(cache_accept_norm(&h, out, sizeof(out)) > 0);
	assert_string_equal(out, "application/json,"
	    "application/vnd.docker.distribution.manifest.v2+json");
	assert_true(cache_accept_has(out,
	    "application/vnd.docker.distribution.manifest.v2+json"));
	assert_false(cache_accept_has(out,
	    "application/vnd.oci.image.index.v1+json"));
	assert_true(cache_accept_has("", "anything/at-all"));
	assert_true(cache_accept_has("application/*", "application/x"));
	assert_true(cache_accept_has("*/*", "text/plain"));
	assert_int_equal(cache_accept_norm(&h, out, 10), -1);
	headers_clear(&h);
}

static int
norm1(const char *accept, char *out, size_t len)
{
	struct headers	h;
	int		n;

	headers_init(&h);
	headers_add(&h, "Accept", 6, accept, strlen(accept));
	n = cache_accept_norm(&h, out, len);
	headers_clear(&h);
	return (n);
}

/* RFC 9110 12.4.2: q=0 is "not acceptable", so it is not in the set. */
static void
test_accept_norm_drops_q0(void **state)
{
	char	out[512];

	(void)state;
	assert_true(norm1("application/vnd.oci.image.index.v1+json;q=0, "
	    "application/vnd.oci.image.manifest.v1+json", out,
	    sizeof(out)) > 0);
	assert_string_equal(out, "application/vnd.oci.image.manifest.v1+json");
	/* Every spelling of zero, after other parameters, any case. */
	assert_true(norm1("a/x;q=0.000, b/y; Q = 0., c/z;charset=u;q=0.0, "
	    "d/w;q=0;level=1, e/v", out, sizeof(out)) > 0);
	assert_string_equal(out, "e/v");
	/* Not zero: a small weight, 1, a parameter that merely starts with
	 * q, a malformed weight. */
	assert_true(norm1("a/x;q=0.001, b/y;q=1, c/z;qs=0, d/w;q=00, "
	    "e/v;q=0.5", out, sizeof(out)) > 0);
	assert_string_equal(out, "a/x,b/y,c/z,d/w,e/v");
	/* Nothing acceptable, or a wildcard beside a refused type: not a
	 * plain set, not a key. */
	assert_int_equal(norm1("application/json;q=0", out, sizeof(out)), -1);
	assert_int_equal(norm1("application/*, application/vnd.oci.image."
	    "index.v1+json;q=0", out, sizeof(out)), -1);
	assert_int_equal(norm1("*/*;q=0, text/plain", out, sizeof(out)),
	    (int)strlen("text/plain"));
	assert_string_equal(out, "text/plain");
}

static void
test_digests(void **state)
{
	const char	*hex;
	char		 d[200];

	(void)state;
	snprintf(d, sizeof(d), "sha256:%064d", 0);
	assert_int_equal(cache_digest_alg(d, &hex), CACHE_ALG_SHA256);
	assert_ptr_equal(hex, d + 7);
	snprintf(d, sizeof(d), "sha512:%0128d", 7);
	assert_int_equal(cache_digest_alg(d, &hex), CACHE_ALG_SHA512);
	snprintf(d, sizeof(d), "sha256:%063d", 0);
	assert_int_equal(cache_digest_alg(d, &hex), CACHE_ALG_NONE);
	snprintf(d, sizeof(d), "sha256:%063dA", 0);
	assert_int_equal(cache_digest_alg(d, &hex), CACHE_ALG_NONE);
	snprintf(d, sizeof(d), "sha256:../%062d", 0);
	assert_int_equal(cache_digest_alg(d, &hex), CACHE_ALG_NONE);
	assert_int_equal(cache_digest_alg("md5:abc", &hex), CACHE_ALG_NONE);
	assert_string_equal(cache_alg_name(CACHE_ALG_SHA512), "sha512");
	assert_true(cache_valid_media_type("application/json; charset=x"));
	assert_false(cache_valid_media_type("a\nb"));
	assert_false(cache_valid_media_type(""));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ranges),
		cmocka_unit_test(test_accept_norm),
		cmocka_unit_test(test_accept_norm_drops_q0),
		cmocka_unit_test(test_digests),
	};

	return (cmocka_run_group_tests(tests, NULL, NULL));
}
