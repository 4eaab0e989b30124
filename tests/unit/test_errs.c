#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

/*
 * test_errs.c: the error table's answers, and errs_parse_code(), which
 * takes an upstream's OCI error code for the audit record from a body a
 * peer wrote: only a well-formed code of a small body.
 */
#include <stdio.h>
#include <string.h>

#include "errs.h"

static void
test_table(void **state)
{
	(void)state;
	assert_int_equal(errs_status(ERR_TAG_DELETE), 405);
	assert_string_equal(errs_code(ERR_TAG_DELETE), "UNSUPPORTED");
	assert_int_equal(errs_status(ERR_RANGE_INVALID), 416);
	assert_string_equal(errs_code(ERR_RANGE_INVALID),
	    "BLOB_UPLOAD_INVALID");
	assert_string_equal(errs_reason(416), "Range Not Satisfiable");
}

static int
parse(const char *body, char *out, size_t outlen)
{
	return (errs_parse_code(body, strlen(body), out, outlen));
}

static void
test_parse_code(void **state)
{
	char	out[48], big[ERRS_BODY_MAX + 64];
	size_t	n;

	(void)state;
	assert_int_equal(parse("{\"errors\":[{\"code\":\"MANIFEST_UNKNOWN\","
	    "\"message\":\"x\"},{\"code\":\"DENIED\"}]}", out, sizeof(out)),
	    0);
	assert_string_equal(out, "MANIFEST_UNKNOWN");
	/* Not a code: lower case, a space, a control byte, empty, long. */
	assert_int_equal(parse("{\"errors\":[{\"code\":\"denied\"}]}", out,
	    sizeof(out)), -1);
	assert_string_equal(out, "");
	assert_int_equal(parse("{\"errors\":[{\"code\":\"A B\"}]}", out,
	    sizeof(out)), -1);
	assert_int_equal(parse("{\"errors\":[{\"code\":\"A\\nB\"}]}", out,
	    sizeof(out)), -1);
	assert_int_equal(parse("{\"errors\":[{\"code\":\"\"}]}", out,
	    sizeof(out)), -1);
	assert_int_equal(parse("{\"errors\":[{\"code\":\"ABCDEFGHIJ\"}]}",
	    out, 8), -1);
	/* Not an OCI error body. */
	assert_int_equal(parse("oops\n", out, sizeof(out)), -1);
	assert_int_equal(parse("{\"errors\":[]}", out, sizeof(out)), -1);
	assert_int_equal(parse("{\"errors\":{\"code\":\"X\"}}", out,
	    sizeof(out)), -1);
	assert_int_equal(parse("[1,2]", out, sizeof(out)), -1);
	assert_int_equal(errs_parse_code(NULL, 0, out, sizeof(out)), -1);
	/* Over ERRS_BODY_MAX: not looked at, however well formed. */
	n = (size_t)snprintf(big, sizeof(big),
	    "{\"errors\":[{\"code\":\"DENIED\",\"detail\":\"%*s\"}]}",
	    ERRS_BODY_MAX, "");
	assert_true(n > ERRS_BODY_MAX);
	assert_int_equal(errs_parse_code(big, n, out, sizeof(out)), -1);
}

/* Run every test of this module. */
int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table),
		cmocka_unit_test(test_parse_code),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
