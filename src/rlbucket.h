/*
 * rlbucket.h: the arithmetic of one rate-limit bucket, as GCRA (the
 * generic cell rate algorithm, ITU-T I.371): a bucket is one number, its
 * theoretical arrival time (TAT), in microseconds.  It behaves as a token
 * bucket of `burst` tokens refilled at `count` per `window`, but needs no
 * refill step, no fraction and one stored integer, so the shared form in
 * Redis is one GET and one SET per rule in a Lua script, and the same
 * few lines here for the in-process fallback.  The script (rlb_lua) is
 * kept in rlbucket.c beside rlb_take(): the two must agree, and a test
 * runs both on one table of cases.
 *
 * Time is a parameter.  A stored TAT further ahead than a full bucket
 * allows (the clock went backwards, a bad value) counts as an empty
 * bucket, never as a longer wait; a gap of any length fills the bucket
 * and no more.  Every product is bounded at set-up (rlb_params_init) so
 * nothing overflows, and every value stays below 2^53, exact in Lua's
 * doubles.  Also here: the bounded table of in-process buckets (hashed
 * with SipHash under a random key: clients choose what is in the keys).
 * Leaf: no libevent, no project header.
 */
#ifndef PC_RLBUCKET_H
#define PC_RLBUCKET_H

#include <stddef.h>
#include <stdint.h>

/* Bounds on a rule (also the config rows' bounds). */
#define RLB_COUNT_MAX		1000000000LL
#define RLB_WINDOW_MIN_US	1000LL			/* 1 ms */
#define RLB_WINDOW_MAX_US	(366LL * 86400 * 1000000)	/* a year */
#define RLB_SPAN_MAX_US		(1LL << 50)	/* burst x interval, 35 y */
#define RLB_DIVIDE_MAX		1024		/* instances for local */

/* One bucket's parameters. */
struct rlb_params {
	int64_t		interval_us;	/* one request's worth of time */
	int64_t		burst;		/* requests at once, full bucket */
	int64_t		span_us;	/* burst x interval */
};

/* The outcome of one request at one bucket. */
struct rlb_verdict {
	int		allowed;
	int64_t		remaining;	/* requests left now (after it) */
	int64_t		retry_us;	/* refused: when one would pass */
	int64_t		tat;		/* the value to store, when store */
	int		store;		/* allowed, or a TAT cut back */
};

/*
 * Set up a bucket of `count` requests per `window_us` with room for
 * `burst` at once, shared by `divide` instances each holding an equal
 * share (1: the shared bucket).  The interval is rounded up, so the
 * limit is never exceeded.  -1 when a value is out of bounds or the
 * span would pass RLB_SPAN_MAX_US.
 */
int	rlb_params_init(struct rlb_params *, int64_t count, int64_t window_us,
	    int64_t burst, int divide);

/*
 * One request at time now (microseconds, any origin, but one origin per
 * bucket) against a bucket whose stored TAT is tat (0 or less: never
 * used).  Pure: the caller stores v->tat when v->store and it keeps the
 * request, or when it refused it and v->allowed is 0 (a TAT cut back).
 */
void	rlb_take(const struct rlb_params *, int64_t tat, int64_t now,
	    struct rlb_verdict *);

/*
 * The Lua form of rlb_take() for EVALSHA, over several buckets at once.
 * KEYS: the buckets.  ARGV[1]: "" (time from redis TIME) or a time in
 * microseconds (the agreement test only); then per key its interval_us
 * and burst.  Every bucket is checked; only when all allow are they all
 * stored.  Returns { now, then per key allowed, remaining, retry_us }.
 */
extern const char	rlb_lua[];

/*
 * The in-process buckets: a table of at most `max` (key, TAT) pairs, the
 * least recently used dropped when full (a dropped bucket restarts full,
 * which errs towards letting a request through, never refusing one).
 */
struct rlb_table;

struct rlb_table *rlb_table_new(size_t max);
void		 rlb_table_free(struct rlb_table *);
#define RLB_KEY_MAX	1024
/* The stored TAT of key; 0 when none. */
int64_t		 rlb_table_peek(struct rlb_table *, const char *);
/* Store key's TAT (most recently used); -1: key longer than RLB_KEY_MAX. */
int		 rlb_table_put(struct rlb_table *, const char *, int64_t);
size_t		 rlb_table_count(const struct rlb_table *);
/* The longest hash chain (the tests: keys chosen to collide). */
size_t		 rlb_table_chain_max(const struct rlb_table *);
void		 rlb_table_clear(struct rlb_table *);

#endif /* PC_RLBUCKET_H */
