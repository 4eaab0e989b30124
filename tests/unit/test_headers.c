/*
 * test_headers.c: the ordered, case-insensitive header list.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "headers.h"

static void
test_order_and_repeats(void **state)
{
	struct headers	h;

	(void)state;
	headers_init(&h);
	assert_int_equal(headers_add(&h, "Accept", 6, "a", 1), 0);
	assert_int_equal(headers_add(&h, "Host", 4, "x", 1), 0);
	assert_int_equal(headers_add(&h, "accept", 6, "b", 1), 0);
	assert_int_equal(headers_count(&h, "ACCEPT"), 2);
	assert_string_equal(headers_get(&h, "accept"), "a");
	assert_string_equal(h.v[2].value, "b");
	assert_int_equal(h.bytes, 6 + 1 + 4 + 1 + 6 + 1);
	assert_int_equal(headers_del(&h, "Accept"), 2);
	assert_int_equal(h.n, 1);
	assert_string_equal(h.v[0].name, "Host");
	assert_int_equal(h.bytes, 5);
	assert_null(headers_get(&h, "Accept"));
	headers_clear(&h);
}

static void
test_append_and_set(void **state)
{
	struct headers	h;

	(void)state;
	headers_init(&h);
	assert_int_equal(headers_append_value(&h, "x", 1), -1);
	headers_add(&h, "X-Long", 6, "abc", 3);
	assert_int_equal(headers_append_value(&h, "def", 3), 0);
	assert_string_equal(headers_get(&h, "x-long"), "abcdef");
	headers_add(&h, "X-Long", 6, "zzz", 3);
	assert_int_equal(headers_set(&h, "x-long", "one"), 0);
	assert_int_equal(headers_count(&h, "X-Long"), 1);
	assert_string_equal(headers_get(&h, "X-Long"), "one");
	headers_clear(&h);
}

static void
test_tokens(void **state)
{
	struct headers	h;

	(void)state;
	headers_init(&h);
	headers_add(&h, "Connection", 10, "keep-alive, X-Hop ", 18);
	headers_add(&h, "Transfer-Encoding", 17, "gzip,chunked", 12);
	assert_true(headers_has_token(&h, "connection", "x-hop"));
	assert_true(headers_has_token(&h, "Connection", "Keep-Alive"));
	assert_false(headers_has_token(&h, "Connection", "close"));
	assert_false(headers_has_token(&h, "Connection", "keep"));
	assert_true(headers_has_token(&h, "Transfer-Encoding", "chunked"));
	assert_false(headers_has_token(&h, "Upgrade", "chunked"));
	headers_clear(&h);
}

static void
test_hop_by_hop(void **state)
{
	static const char *const hop[] = { "Connection", "keep-alive",
	    "PROXY-CONNECTION", "Proxy-Authenticate", "Proxy-Authorization",
	    "TE", "Trailer", "transfer-encoding", "Upgrade" };
	static const char *const end[] = { "Content-Length", "Host",
	    "Authorization", "Accept", "Range", "Trailers", "Upgrade-Insecure",
	    "" };
	size_t	i;

	(void)state;
	for (i = 0; i < sizeof(hop) / sizeof(hop[0]); i++)
		assert_int_equal(headers_hop_by_hop(hop[i]), 1);
	for (i = 0; i < sizeof(end) / sizeof(end[0]); i++)
		assert_int_equal(headers_hop_by_hop(end[i]), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_order_and_repeats),
		cmocka_unit_test(test_append_and_set),
		cmocka_unit_test(test_tokens),
		cmocka_unit_test(test_hop_by_hop),
	};

	return (cmocka_run_group_tests(tests, NULL, NULL));
}
