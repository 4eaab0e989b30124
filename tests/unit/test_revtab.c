#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

/*
 * test_revtab.c: the revocation table (src/revtab.c): a credential issued
 * before its subject's time or the global time is revoked, at the second
 * boundary exactly; times only grow; at the bound a new subject
 * overflows the table, which then refuses everything; a long random run
 * against a simple model.
 */
#include <stdio.h>
#include <stdlib.h>

#include "revtab.h"

/*
 * Entries with an end (revoked secrets') go at the sweep after it, and
 * their slots take new revocations; entries kept for good, and the probe
 * chains of the survivors, stay.
 */
static void
test_sweep(void **state)
{
	struct revtab	*t;
	char		 k[32];
	int		 i;

	(void)state;
	t = revtab_new(64);
	assert_non_null(t);
	assert_int_equal(revtab_set(t, "alice", 100), 1);
	for (i = 0; i < 64 - 1; i++) {
		snprintf(k, sizeof(k), "\001%016x", i);
		assert_int_equal(revtab_set_until(t, k, INT64_MAX,
		    1000 + (i % 2) * 1000), 1);
	}
	assert_int_equal(revtab_count(t), 64);
	assert_int_equal(revtab_get(t, "alice"), 100);
	assert_int_equal(revtab_get(t, "\001" "0000000000000000"), INT64_MAX);
	assert_true(revtab_revoked(t, "\001" "0000000000000000", 1 << 30));
	/* A later until is kept; an earlier one does not shorten it. */
	assert_int_equal(revtab_set_until(t, "\001" "0000000000000000",
	    INT64_MAX, 5000), 0);
	assert_int_equal(revtab_set_until(t, "\001" "0000000000000002",
	    INT64_MAX, 10), 0);
	assert_int_equal(revtab_sweep(t, 999), 0);
	assert_int_equal(revtab_sweep(t, 1000), 31);
	assert_int_equal(revtab_count(t), 64 - 31);
	for (i = 0; i < 64 - 1; i++) {
		snprintf(k, sizeof(k), "\001%016x", i);
		assert_int_equal(revtab_get(t, k), i % 2 == 1 || i == 0 ?
		    INT64_MAX : 0);
	}
	assert_int_equal(revtab_get(t, "alice"), 100);
	/* The freed slots hold new revocations: no overflow. */
	for (i = 0; i < 31; i++) {
		snprintf(k, sizeof(k), "new%d", i);
		assert_int_equal(revtab_set(t, k, 7), 1);
	}
	assert_false(revtab_overflowed(t));
	assert_int_equal(revtab_sweep(t, 1u << 30), 32);
	assert_int_equal(revtab_count(t), 32);
	assert_int_equal(revtab_get(t, "alice"), 100);
	assert_int_equal(revtab_get(t, "new30"), 7);
	revtab_free(t);
}

static void
test_basics(void **state)
{
	struct revtab	*t;

	(void)state;
	assert_null(revtab_new(0));
	assert_null(revtab_new((1u << 24) + 1));
	t = revtab_new(3);
	assert_non_null(t);
	assert_false(revtab_revoked(t, "alice", 10));
	assert_int_equal(revtab_set(t, "alice", 100), 1);
	assert_true(revtab_revoked(t, "alice", 99));
	assert_false(revtab_revoked(t, "alice", 100));
	assert_false(revtab_revoked(t, "bob", 0));
	/* Never lowered. */
	assert_int_equal(revtab_set(t, "alice", 50), 0);
	assert_int_equal(revtab_set(t, "alice", 100), 0);
	assert_true(revtab_revoked(t, "alice", 99));
	assert_int_equal(revtab_set(t, "alice", 200), 1);
	assert_true(revtab_revoked(t, "alice", 150));
	/* The global time: everyone, the later of the two counts. */
	assert_int_equal(revtab_set_all(t, 150), 1);
	assert_int_equal(revtab_set_all(t, 140), 0);
	assert_true(revtab_revoked(t, "bob", 149));
	assert_false(revtab_revoked(t, "bob", 150));
	assert_true(revtab_revoked(t, "alice", 199));
	assert_int_equal(revtab_not_before(t, "alice"), 200);
	assert_int_equal(revtab_not_before(t, "bob"), 150);
	assert_int_equal(revtab_all(t), 150);
	/* Full: a new subject overflows, and then nothing passes. */
	assert_int_equal(revtab_set(t, "bob", 1), 1);
	assert_int_equal(revtab_set(t, "carol", 1), 1);
	assert_int_equal(revtab_count(t), 3);
	assert_false(revtab_overflowed(t));
	assert_int_equal(revtab_set(t, "carol", 5), 1);	/* known: fine */
	assert_false(revtab_overflowed(t));
	assert_int_equal(revtab_set(t, "dave", 1), -1);
	assert_true(revtab_overflowed(t));
	assert_true(revtab_revoked(t, "erin", 1 << 30));
	revtab_free(t);
}

#define SUBJECTS	300
#define MAX		200

static void
test_model(void **state)
{
	struct revtab	*t;
	int64_t		 nb[SUBJECTS] = { 0 }, all = 0, v, iat;
	int		 held[SUBJECTS] = { 0 }, count = 0, i, s;
	char		 name[32];

	(void)state;
	srandom(7);
	t = revtab_new(MAX);
	assert_non_null(t);
	for (i = 0; i < 100000; i++) {
		s = random() % SUBJECTS;
		snprintf(name, sizeof(name), "subject-%d", s);
		v = random() % 1000;
		switch (random() % 4) {
		case 0:
			if (!held[s] && count >= MAX - 1)
				break;	/* stay below the bound here */
			assert_int_equal(revtab_set(t, name, v),
			    !held[s] || v > nb[s] ? 1 : 0);
			if (!held[s]) {
				held[s] = 1;
				count++;
				nb[s] = v;
			} else if (v > nb[s])
				nb[s] = v;
			break;
		case 1:
			if (random() % 50 == 0) {
				assert_int_equal(revtab_set_all(t, v / 4),
				    v / 4 > all);
				if (v / 4 > all)
					all = v / 4;
			}
			break;
		default:
			iat = random() % 1000;
			assert_int_equal(revtab_revoked(t, name, iat),
			    iat < all || (held[s] && iat < nb[s]));
		}
	}
	assert_int_equal((int)revtab_count(t), count);
	assert_false(revtab_overflowed(t));
	revtab_free(t);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_basics),
		cmocka_unit_test(test_sweep),
		cmocka_unit_test(test_model),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
