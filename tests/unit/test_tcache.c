#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

/*
 * test_tcache.c: the verified-token cache (src/tcache.c): hits, expiry at
 * exactly the expiry time, least-recently-used eviction at the bound,
 * replacement, purge by predicate (revocation), and every value released
 * exactly once; plus a long random run checked against a simple model.
 */
#include <stdlib.h>
#include <string.h>

#include "tcache.h"

struct val {
	int	id;
	int	*released;	/* per-id release counter */
};

static int	released[4096];

static void
val_free(void *p)
{
	struct val	*v = p;

	v->released[v->id]++;
	free(v);
}

static struct val *
val(int id)
{
	struct val	*v = malloc(sizeof(*v));

	assert_non_null(v);
	v->id = id;
	v->released = released;
	return (v);
}

static void
key(unsigned char *k, int id)
{
	/* Same low bytes for many ids: chains are exercised too. */
	memset(k, 0, TCACHE_KEY_LEN);
	k[0] = (unsigned char)(id & 3);
	k[31] = (unsigned char)id;
	k[30] = (unsigned char)(id >> 8);
}

static int
get_id(struct tcache *c, int id, int64_t now)
{
	unsigned char	 k[TCACHE_KEY_LEN];
	struct val	*v;

	key(k, id);
	v = tcache_get(c, k, now);
	return (v ? v->id : -1);
}

static void
put(struct tcache *c, int id, int64_t exp, int64_t now)
{
	unsigned char	k[TCACHE_KEY_LEN];

	key(k, id);
	tcache_put(c, k, val(id), exp, now);
}

static int
is_odd(const void *p, void *arg)
{
	(void)arg;
	return (((const struct val *)p)->id % 2);
}

static void
test_basics(void **state)
{
	struct tcache	*c;
	int		 i;

	(void)state;
	memset(released, 0, sizeof(released));
	assert_null(tcache_new(0, NULL));
	c = tcache_new(3, val_free);
	assert_non_null(c);
	put(c, 1, 100, 0);
	put(c, 2, 100, 0);
	put(c, 3, 50, 0);
	assert_int_equal(tcache_count(c), 3);
	assert_int_equal(get_id(c, 1, 10), 1);	/* 1 is now most recent */
	/* Full: 2 is the least recently used. */
	put(c, 4, 100, 10);
	assert_int_equal(released[2], 1);
	assert_int_equal(get_id(c, 2, 10), -1);
	assert_int_equal(tcache_count(c), 3);
	/* Expiry: never at or after the time; dropped when seen. */
	assert_int_equal(get_id(c, 3, 49), 3);
	assert_int_equal(get_id(c, 3, 50), -1);
	assert_int_equal(released[3], 1);
	assert_int_equal(tcache_count(c), 2);
	/* Already expired: released, not stored. */
	put(c, 5, 10, 10);
	assert_int_equal(released[5], 1);
	assert_int_equal(tcache_count(c), 2);
	/* Replacement releases the old value. */
	put(c, 1, 200, 10);
	assert_int_equal(released[1], 1);
	assert_int_equal(get_id(c, 1, 150), 1);
	/* Purge (revocation). */
	put(c, 7, 100, 10);
	assert_int_equal(tcache_purge(c, is_odd, NULL), 2);
	assert_int_equal(get_id(c, 7, 11), -1);
	assert_int_equal(get_id(c, 4, 11), 4);
	tcache_free(c);
	for (i = 0; i < 8; i++)
		assert_int_equal(released[i], i == 6 || i == 0 ? 0 :
		    i == 1 ? 2 : 1);
}

/* A random run against a model: bound, LRU order and releases. */
static void
test_model(void **state)
{
	enum { MAX = 16, IDS = 64, STEPS = 20000 };
	int64_t		 exp[IDS], age[IDS], now = 0, tick = 0;
	struct tcache	*c;
	int		 present[IDS], i, id, n, oldest, cnt, puts[IDS];

	(void)state;
	memset(released, 0, sizeof(released));
	memset(present, 0, sizeof(present));
	memset(puts, 0, sizeof(puts));
	srand(7);
	c = tcache_new(MAX, val_free);
	for (i = 0; i < STEPS; i++) {
		id = rand() % IDS;
		if (rand() % 8 == 0)
			now++;
		if (rand() % 2) {
			int64_t e = now + rand() % 5;

			present[id] = 0;	/* replaced, or absent */
			puts[id]++;
			if (e > now) {
				for (n = 0, oldest = -1, cnt = 0; n < IDS;
				    n++) {
					if (!present[n])
						continue;
					cnt++;
					if (oldest == -1 ||
					    age[n] < age[oldest])
						oldest = n;
				}
				/* Full: the least recently used goes. */
				if (cnt == MAX)
					present[oldest] = 0;
				present[id] = 1;
				exp[id] = e;
				age[id] = ++tick;
			}
			put(c, id, e, now);
		} else {
			int got = get_id(c, id, now);

			if (present[id] && now >= exp[id])
				present[id] = 0;
			assert_int_equal(got, present[id] ? id : -1);
			if (present[id])
				age[id] = ++tick;
		}
		for (n = 0, oldest = 0; n < IDS; n++)
			oldest += present[n];
		assert_int_equal((int)tcache_count(c), oldest);
		assert_true(tcache_count(c) <= MAX);
	}
	tcache_free(c);
	for (id = 0; id < IDS; id++)
		assert_int_equal(released[id], puts[id]);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_basics),
		cmocka_unit_test(test_model),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
