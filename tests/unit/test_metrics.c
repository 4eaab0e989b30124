#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

/*
 * test_metrics.c: the metrics registry (src/metrics.c): counters,
 * gauges and histograms land in their series; the exposition has HELP
 * and TYPE once per metric, escaped label values, cumulative buckets
 * ending in +Inf equal to _count; a dynamic label keeps at most its
 * bound of values and counts the rest under "_other"; the address list
 * parser and matcher of metrics.allow.
 */
#include <sys/socket.h>
#include <arpa/inet.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"

struct out {
	char	buf[1 << 20];
	size_t	len;
};

static void
emit(void *arg, const char *d, size_t n)
{
	struct out	*o = arg;

	assert_true(o->len + n < sizeof(o->buf));
	memcpy(o->buf + o->len, d, n);
	o->len += n;
	o->buf[o->len] = '\0';
}

static struct out *
render(struct metrics *m)
{
	static struct out	o;

	o.len = 0;
	o.buf[0] = '\0';
	metrics_render(m, emit, &o);
	return (&o);
}

static void
test_counters_and_lines(void **state)
{
	struct metrics	*m;
	struct out	*o;
	size_t		 ix[3] = { MK_BLOB, MM_GET, MC_2XX };

	(void)state;
	assert_null(metrics_new(0));
	m = metrics_new(4);
	assert_non_null(m);
	metrics_add(m, M_REQUESTS, metrics_series(m, M_REQUESTS, ix), 2);
	assert_int_equal(metrics_get(m, M_REQUESTS,
	    metrics_series(m, M_REQUESTS, ix)), 2);
	metrics_add(m, M_CACHE_REQUESTS, MCR_HIT, 3);
	metrics_set(m, M_CONNS_OPEN, 0, 7);
	o = render(m);
	assert_non_null(strstr(o->buf, "# TYPE portcullis_requests_total "
	    "counter\n"));
	assert_non_null(strstr(o->buf, "portcullis_requests_total{kind="
	    "\"blob\",method=\"GET\",class=\"2xx\"} 2\n"));
	/* Series of several labels appear only once they have a value. */
	assert_null(strstr(o->buf, "kind=\"manifest\",method"));
	/* Small fixed sets show their zeros. */
	assert_non_null(strstr(o->buf,
	    "portcullis_cache_requests_total{result=\"miss\"} 0\n"));
	assert_non_null(strstr(o->buf,
	    "portcullis_cache_requests_total{result=\"hit\"} 3\n"));
	assert_non_null(strstr(o->buf, "portcullis_connections_open 7\n"));
	/* A histogram is not a counter: metrics_add ignores it. */
	metrics_add(m, M_REQUEST_SECONDS, 0, 1);
	assert_int_equal(metrics_get(m, M_REQUEST_SECONDS, 0), 0);
	metrics_reset(m);
	assert_int_equal(metrics_get(m, M_REQUESTS,
	    metrics_series(m, M_REQUESTS, ix)), 0);
	metrics_free(m);
}

static void
test_histogram(void **state)
{
	struct metrics	*m;
	struct out	*o;

	(void)state;
	m = metrics_new(4);
	metrics_observe(m, M_REQUEST_SECONDS, MK_MANIFEST, 1000);  /* 1 ms */
	metrics_observe(m, M_REQUEST_SECONDS, MK_MANIFEST, 1001);
	metrics_observe(m, M_REQUEST_SECONDS, MK_MANIFEST, 400000000);
	o = render(m);
	assert_non_null(strstr(o->buf, "portcullis_request_duration_seconds"
	    "_bucket{kind=\"manifest\",le=\"0.001\"} 1\n"));
	assert_non_null(strstr(o->buf, "portcullis_request_duration_seconds"
	    "_bucket{kind=\"manifest\",le=\"0.005\"} 2\n"));
	assert_non_null(strstr(o->buf, "portcullis_request_duration_seconds"
	    "_bucket{kind=\"manifest\",le=\"300\"} 2\n"));
	assert_non_null(strstr(o->buf, "portcullis_request_duration_seconds"
	    "_bucket{kind=\"manifest\",le=\"+Inf\"} 3\n"));
	assert_non_null(strstr(o->buf, "portcullis_request_duration_seconds"
	    "_sum{kind=\"manifest\"} 400.002001\n"));
	assert_non_null(strstr(o->buf, "portcullis_request_duration_seconds"
	    "_count{kind=\"manifest\"} 3\n"));
	/* Kinds with no observation have no series. */
	assert_null(strstr(o->buf, "_count{kind=\"blob\"}"));
	metrics_free(m);
}

static void
test_dynamic_labels(void **state)
{
	struct metrics	*m;
	struct out	*o;
	size_t		 a, b, c;

	(void)state;
	m = metrics_new(2);
	a = metrics_dyn(m, D_RULE, "deny \"x\"\\\n");
	b = metrics_dyn(m, D_RULE, "b");
	c = metrics_dyn(m, D_RULE, "c");	/* the table is full */
	assert_int_equal(a, 0);
	assert_int_equal(b, 1);
	assert_int_equal(c, 2);
	assert_int_equal(metrics_dyn(m, D_RULE, "b"), 1);
	assert_int_equal(metrics_dyn(m, D_RULE, ""), 2);
	metrics_add(m, M_POLICY_DENIALS, metrics_series1(m,
	    M_POLICY_DENIALS, a), 1);
	metrics_add(m, M_POLICY_DENIALS, metrics_series1(m,
	    M_POLICY_DENIALS, c), 5);
	o = render(m);
	assert_non_null(strstr(o->buf, "portcullis_policy_denials_total{"
	    "rule=\"deny \\\"x\\\"\\\\\\n\"} 1\n"));
	assert_non_null(strstr(o->buf, "portcullis_policy_denials_total{"
	    "rule=\"_other\"} 5\n"));
	/* "b" was named but never counted: no series. */
	assert_null(strstr(o->buf, "rule=\"b\""));
	/* Other dimensions have tables of their own. */
	assert_int_equal(metrics_dyn(m, D_UPSTREAM, "c"), 0);
	metrics_free(m);
}

static void
test_reference(void **state)
{
	struct out	*o = calloc(1, sizeof(*o));
	size_t		 i, rows = 0;

	(void)state;
	metrics_reference(emit, o);
	for (i = 0; i < o->len; i++)
		rows += o->buf[i] == '\n';
	assert_int_equal(rows, M__MAX + 2);
	assert_non_null(strstr(o->buf, "| `portcullis_policy_denials_total` "
	    "| counter | rule |"));
	free(o);
}

static void
test_nets(void **state)
{
	struct metrics_net	n;
	unsigned char		a[16];

	(void)state;
	assert_null(metrics_net_parse("127.0.0.0/8", &n));
	inet_pton(AF_INET, "127.1.2.3", a);
	assert_true(metrics_net_match(&n, AF_INET, a));
	inet_pton(AF_INET, "128.0.0.1", a);
	assert_false(metrics_net_match(&n, AF_INET, a));
	inet_pton(AF_INET6, "::ffff:127.0.0.9", a);
	assert_true(metrics_net_match(&n, AF_INET6, a));
	assert_null(metrics_net_parse("10.0.0.7", &n));
	inet_pton(AF_INET, "10.0.0.7", a);
	assert_true(metrics_net_match(&n, AF_INET, a));
	inet_pton(AF_INET, "10.0.0.8", a);
	assert_false(metrics_net_match(&n, AF_INET, a));
	assert_null(metrics_net_parse("fd00::/8", &n));
	inet_pton(AF_INET6, "fd12::1", a);
	assert_true(metrics_net_match(&n, AF_INET6, a));
	assert_non_null(metrics_net_parse("10.0.0.1/8", &n));
	assert_non_null(metrics_net_parse("10.0.0.0/33", &n));
	assert_non_null(metrics_net_parse("10.0.0.0/", &n));
	assert_non_null(metrics_net_parse("host.example", &n));
	assert_non_null(metrics_net_parse("", &n));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_counters_and_lines),
		cmocka_unit_test(test_histogram),
		cmocka_unit_test(test_dynamic_labels),
		cmocka_unit_test(test_reference),
		cmocka_unit_test(test_nets),
	};

	return (cmocka_run_group_tests(tests, NULL, NULL));
}
