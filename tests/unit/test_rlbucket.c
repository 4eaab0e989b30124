#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

/*
 * test_rlbucket.c: the rate-limit bucket arithmetic (src/rlbucket.c) with
 * time as a parameter: a full bucket's burst, refill at the rate, the
 * edges of an interval to the microsecond, the clock going backwards, huge
 * gaps, bounds that keep every product exact, the local share of N
 * instances, and the in-process table's bound.  A long run against a
 * plain token-bucket model with fractions shows both say the same.
 *
 * `test_rlbucket --table` prints a table of cases, one JSON line each,
 * that tests/integration/test_ratelimit.py runs through the Lua script
 * in a real redis-server: the two forms must agree.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rlbucket.h"

#define S	1000000LL	/* a second, in microseconds */
#define T0	(1700000000LL * S)	/* an epoch time, as Redis gives */

static void
test_params(void **state)
{
	struct rlb_params	p;

	(void)state;
	assert_int_equal(rlb_params_init(&p, 100, 21600 * S, 100, 1), 0);
	assert_int_equal(p.interval_us, 216 * S);
	assert_int_equal(p.burst, 100);
	assert_int_equal(p.span_us, 21600 * S);
	/* Rounded up: 3 per second is one per 333334 us. */
	assert_int_equal(rlb_params_init(&p, 3, S, 3, 1), 0);
	assert_int_equal(p.interval_us, 333334);
	/* Out of bounds. */
	assert_int_equal(rlb_params_init(&p, 0, S, 1, 1), -1);
	assert_int_equal(rlb_params_init(&p, RLB_COUNT_MAX + 1, S, 1, 1), -1);
	assert_int_equal(rlb_params_init(&p, 1, 999, 1, 1), -1);
	assert_int_equal(rlb_params_init(&p, 1, RLB_WINDOW_MAX_US + 1, 1, 1),
	    -1);
	assert_int_equal(rlb_params_init(&p, 1, S, 0, 1), -1);
	assert_int_equal(rlb_params_init(&p, 1, S, 1, 0), -1);
	assert_int_equal(rlb_params_init(&p, 1, S, 1, RLB_DIVIDE_MAX + 1), -1);
	/* A span past 2^50 (Lua's exact range, with room for the time). */
	assert_int_equal(rlb_params_init(&p, 1, RLB_WINDOW_MAX_US,
	    RLB_COUNT_MAX, 1), -1);
	assert_int_equal(rlb_params_init(&p, RLB_COUNT_MAX, RLB_WINDOW_MAX_US,
	    RLB_COUNT_MAX, 1), 0);
	assert_true(p.span_us <= RLB_SPAN_MAX_US);
	/* The extremes at their largest still fit. */
	assert_int_equal(rlb_params_init(&p, 1, 86400 * S, 1,
	    RLB_DIVIDE_MAX), 0);
	assert_int_equal(p.interval_us, 86400 * S * RLB_DIVIDE_MAX);
	assert_int_equal(rlb_params_init(&p, 1, RLB_WINDOW_MAX_US, 1,
	    RLB_DIVIDE_MAX), -1);
}

/* A fresh bucket gives its burst at once, then nothing. */
static void
test_burst(void **state)
{
	struct rlb_params	p;
	struct rlb_verdict	v;
	int64_t			tat = 0;
	int			i;

	(void)state;
	assert_int_equal(rlb_params_init(&p, 10, 10 * S, 5, 1), 0);
	for (i = 0; i < 5; i++) {
		rlb_take(&p, tat, T0, &v);
		assert_true(v.allowed);
		assert_int_equal(v.remaining, 4 - i);
		tat = v.tat;
	}
	rlb_take(&p, tat, T0, &v);
	assert_false(v.allowed);
	assert_int_equal(v.remaining, 0);
	assert_int_equal(v.retry_us, S);	/* one interval */
	/* Refused: nothing to store, the next try the same. */
	rlb_take(&p, tat, T0 + S / 2, &v);
	assert_false(v.allowed);
	assert_int_equal(v.retry_us, S / 2);
}

/* Refill at the rate, to the microsecond at the interval's edge. */
static void
test_refill_edges(void **state)
{
	struct rlb_params	p;
	struct rlb_verdict	v;
	int64_t			tat = 0, t;
	int			i;

	(void)state;
	assert_int_equal(rlb_params_init(&p, 100, 100 * S, 100, 1), 0);
	for (i = 0; i < 100; i++) {
		rlb_take(&p, tat, T0, &v);
		assert_true(v.allowed);
		tat = v.tat;
	}
	/* One interval (1 s) later one more, not a microsecond before. */
	rlb_take(&p, tat, T0 + S - 1, &v);
	assert_false(v.allowed);
	assert_int_equal(v.retry_us, 1);
	rlb_take(&p, tat, T0 + S, &v);
	assert_true(v.allowed);
	assert_int_equal(v.remaining, 0);
	tat = v.tat;
	/* Ten seconds on: ten back (and the one just taken is gone). */
	rlb_take(&p, tat, T0 + 11 * S, &v);
	assert_true(v.allowed);
	assert_int_equal(v.remaining, 9);
	/* A whole window of steady rate: exactly count pass. */
	tat = 0;
	for (i = 0; i < 100; i++) {
		rlb_take(&p, tat, T0, &v);
		tat = v.tat;
	}
	{
		int	n = 0;

		for (t = T0; t <= T0 + 100 * S; t += S / 10) {
			rlb_take(&p, tat, t, &v);
			if (v.allowed) {
				n++;
				tat = v.tat;
			}
		}
		assert_int_equal(n, 100);
	}
}

/* A clock that goes back: the bucket counts as empty, never worse. */
static void
test_clock_backwards(void **state)
{
	struct rlb_params	p;
	struct rlb_verdict	v;
	int64_t			tat = 0;

	(void)state;
	assert_int_equal(rlb_params_init(&p, 10, 10 * S, 10, 1), 0);
	rlb_take(&p, tat, T0, &v);
	tat = v.tat;
	/* An hour back: the stored TAT is far ahead; capped at a full wait. */
	rlb_take(&p, tat, T0 - 3600 * S, &v);
	assert_false(v.allowed);
	assert_int_equal(v.retry_us, S);
	assert_true(v.store);		/* the cut is kept */
	assert_int_equal(v.tat, T0 - 3600 * S + 10 * S);
	tat = v.tat;
	/* After one interval on the new clock, one passes. */
	rlb_take(&p, tat, T0 - 3600 * S + S, &v);
	assert_true(v.allowed);
	assert_int_equal(v.remaining, 0);
	/* A garbage TAT (Redis held something odd) behaves the same. */
	rlb_take(&p, INT64_MAX / 4, T0, &v);
	assert_false(v.allowed);
	assert_int_equal(v.retry_us, S);
	assert_true(v.store);
	/* A plain refusal stores nothing. */
	rlb_take(&p, T0 + 10 * S, T0, &v);
	assert_false(v.allowed);
	assert_false(v.store);
	/* Negative or zero: never used. */
	rlb_take(&p, -5, T0, &v);
	assert_true(v.allowed);
	assert_int_equal(v.remaining, 9);
	/* A small step back within the window just waits a little more. */
	rlb_take(&p, T0 + 5 * S, T0 - 1, &v);
	assert_true(v.allowed);
	assert_int_equal(v.remaining, 3);
}

/* A huge gap fills the bucket, no more. */
static void
test_huge_gap(void **state)
{
	struct rlb_params	p;
	struct rlb_verdict	v;

	(void)state;
	assert_int_equal(rlb_params_init(&p, 5, 60 * S, 5, 1), 0);
	rlb_take(&p, 1, T0, &v);
	assert_true(v.allowed);
	assert_int_equal(v.remaining, 4);
	rlb_take(&p, T0, INT64_C(1) << 52, &v);
	assert_true(v.allowed);
	assert_int_equal(v.remaining, 4);
	/* The largest parameters at the largest time stay exact. */
	assert_int_equal(rlb_params_init(&p, RLB_COUNT_MAX, RLB_WINDOW_MAX_US,
	    RLB_COUNT_MAX, 1), 0);
	rlb_take(&p, 0, INT64_C(1) << 52, &v);
	assert_true(v.allowed);
	assert_int_equal(v.remaining, RLB_COUNT_MAX - 1);
}

/* N instances each hold limit/N; together at most the limit. */
static void
test_divide(void **state)
{
	struct rlb_params	p;
	struct rlb_verdict	v;
	int64_t			tat[3] = { 0, 0, 0 };
	int			i, n = 0;

	(void)state;
	assert_int_equal(rlb_params_init(&p, 90, 3600 * S, 90, 3), 0);
	assert_int_equal(p.burst, 30);
	assert_int_equal(p.interval_us, 120 * S);
	for (i = 0; i < 300; i++) {
		rlb_take(&p, tat[i % 3], T0, &v);
		if (v.allowed) {
			n++;
			tat[i % 3] = v.tat;
		}
	}
	assert_int_equal(n, 90);
	/* A burst smaller than N still lets one through per instance. */
	assert_int_equal(rlb_params_init(&p, 2, 60 * S, 2, 4), 0);
	assert_int_equal(p.burst, 1);
}

/*
 * Against a token bucket with fractional tokens: level starts at burst,
 * gains elapsed/interval, capped at burst; a request takes one when at
 * least one is there.  Random steps forward and sometimes back.
 */
static void
test_model(void **state)
{
	struct rlb_params	p;
	struct rlb_verdict	v;
	int64_t			tat = 0, now = T0, last = T0;
	long double		level;
	int			i, model;
	unsigned		seed = 12345;

	(void)state;
	assert_int_equal(rlb_params_init(&p, 7, 3 * S, 4, 1), 0);
	level = p.burst;
	for (i = 0; i < 200000; i++) {
		seed = seed * 1103515245u + 12345u;
		now += (seed >> 8) % (p.interval_us * 2);
		level += (long double)(now - last) / p.interval_us;
		if (level > p.burst)
			level = p.burst;
		last = now;
		model = level >= 1.0L - 1e-12L;
		rlb_take(&p, tat, now, &v);
		assert_int_equal(v.allowed, model);
		if (model) {
			level -= 1.0L;
			tat = v.tat;
			/* remaining: whole tokens left after this one. */
			assert_int_equal(v.remaining,
			    (int64_t)(level + 1e-12L));
		}
	}
}

static void
test_table(void **state)
{
	struct rlb_table	*t;
	char			 key[RLB_KEY_MAX + 2];
	int			 i;

	(void)state;
	assert_null(rlb_table_new(0));
	assert_null(rlb_table_new((1u << 24) + 1));
	t = rlb_table_new(3);
	assert_non_null(t);
	assert_int_equal(rlb_table_peek(t, "a"), 0);
	assert_int_equal(rlb_table_put(t, "a", 1), 0);
	assert_int_equal(rlb_table_put(t, "b", 2), 0);
	assert_int_equal(rlb_table_put(t, "c", 3), 0);
	assert_int_equal(rlb_table_put(t, "a", 11), 0);	/* a is recent */
	assert_int_equal(rlb_table_count(t), 3);
	assert_int_equal(rlb_table_put(t, "d", 4), 0);	/* b goes */
	assert_int_equal(rlb_table_count(t), 3);
	assert_int_equal(rlb_table_peek(t, "b"), 0);
	assert_int_equal(rlb_table_peek(t, "a"), 11);
	assert_int_equal(rlb_table_peek(t, "c"), 3);
	assert_int_equal(rlb_table_peek(t, "d"), 4);
	memset(key, 'k', sizeof(key) - 1);
	key[sizeof(key) - 1] = '\0';
	assert_int_equal(rlb_table_put(t, key, 5), -1);
	assert_int_equal(rlb_table_peek(t, key), 0);
	key[RLB_KEY_MAX] = '\0';
	assert_int_equal(rlb_table_put(t, key, 5), 0);
	assert_int_equal(rlb_table_peek(t, key), 5);
	rlb_table_clear(t);
	assert_int_equal(rlb_table_count(t), 0);
	for (i = 0; i < 1000; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		assert_int_equal(rlb_table_put(t, key, i + 1), 0);
	}
	assert_int_equal(rlb_table_count(t), 3);
	assert_int_equal(rlb_table_peek(t, "k999"), 1000);
	assert_int_equal(rlb_table_peek(t, "k996"), 0);
	rlb_table_free(t);
	rlb_table_free(NULL);
}

/*
 * The table's keys hold what a client chooses (an IPv6 /128 out of its
 * /64, a repository name): keys that all land in one hash chain under a
 * hash anyone can compute (unseeded FNV-1a) would make every lookup walk
 * them all.  Here 1000 such keys, found for FNV-1a the way an attacker
 * would; the longest chain must stay short.
 */
static uint32_t
fnv1a(const char *s)
{
	uint32_t	h = 2166136261u;

	for (; *s != '\0'; s++) {
		h ^= (unsigned char)*s;
		h *= 16777619u;
	}
	return (h);
}

static void
test_table_flood(void **state)
{
	struct rlb_table	*t;
	char			 key[128];
	uint32_t		 a;
	int			 n = 0;

	(void)state;
	t = rlb_table_new(4096);		/* 4096 slots */
	assert_non_null(t);
	for (a = 0; n < 1000; a++) {
		snprintf(key, sizeof(key),
		    "portcullis:rl:per-ip:ip:2001:db8::%x:%x", a >> 16,
		    a & 0xffff);
		if ((fnv1a(key) & 4095) != 0)
			continue;
		assert_int_equal(rlb_table_put(t, key, n + 1), 0);
		n++;
	}
	assert_int_equal(rlb_table_count(t), 1000);
	assert_true(rlb_table_chain_max(t) <= 16);
	rlb_table_free(t);
}

/*
 * The agreement table: sequences of requests on one bucket, each with its
 * time; printed with the C verdicts as JSON lines
 * {"count","window_us","burst","steps":[[now, allowed, remaining,
 * retry_us], ...]} for the Lua run.
 */
static int
print_table(void)
{
	static const struct {
		int64_t	count, window_us, burst;
		int64_t	steps[12];	/* offsets from T0; INT64_MIN ends */
	} cases[] = {
		{ 10, 10 * S, 5, { 0, 0, 0, 0, 0, 0, S - 1, S, S, 3 * S,
		    INT64_MIN } },
		{ 3, S, 3, { 0, 0, 0, 0, 333333, 333334, 999999, 1000002,
		    INT64_MIN } },
		{ 100, 21600 * S, 100, { 0, 1, 2, 216 * S, 21600 * S,
		    INT64_MIN } },
		{ 2, 60 * S, 2, { 0, 0, 0, -3600 * S, -3600 * S + 30 * S,
		    0, INT64_MIN } },
		{ 7, 3 * S, 4, { 0, 1, 2, 3, 4, 5, 428571, 428572,
		    857143, 100 * S, 100 * S, INT64_MIN } },
		{ RLB_COUNT_MAX, RLB_WINDOW_MAX_US, RLB_COUNT_MAX,
		    { 0, 1, 2, 3, INT64_MIN } },
		{ 1, RLB_WINDOW_MAX_US, 35, { 0, 0, 1, INT64_MIN } },
	};
	struct rlb_params	p;
	struct rlb_verdict	v;
	size_t			i, j;
	int64_t			tat;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		if (rlb_params_init(&p, cases[i].count, cases[i].window_us,
		    cases[i].burst, 1) == -1)
			return (1);
		printf("{\"count\":%lld,\"window_us\":%lld,\"burst\":%lld,"
		    "\"interval_us\":%lld,\"steps\":[",
		    (long long)cases[i].count, (long long)cases[i].window_us,
		    (long long)cases[i].burst, (long long)p.interval_us);
		tat = 0;
		for (j = 0; cases[i].steps[j] != INT64_MIN; j++) {
			rlb_take(&p, tat, T0 + cases[i].steps[j], &v);
			if (v.store)
				tat = v.tat;
			printf("%s[%lld,%d,%lld,%lld]", j ? "," : "",
			    (long long)(T0 + cases[i].steps[j]), v.allowed,
			    (long long)v.remaining, (long long)v.retry_us);
		}
		printf("]}\n");
	}
	return (0);
}

int
main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_params),
		cmocka_unit_test(test_burst),
		cmocka_unit_test(test_refill_edges),
		cmocka_unit_test(test_clock_backwards),
		cmocka_unit_test(test_huge_gap),
		cmocka_unit_test(test_divide),
		cmocka_unit_test(test_model),
		cmocka_unit_test(test_table),
		cmocka_unit_test(test_table_flood),
	};

	if (argc == 2 && strcmp(argv[1], "--table") == 0)
		return (print_table());
	return (cmocka_run_group_tests(tests, NULL, NULL));
}
