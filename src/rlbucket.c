/*
 * rlbucket.c: GCRA arithmetic for the rate limits (see rlbucket.h), its
 * Lua twin run by Redis, and the bounded table of in-process buckets the
 * limits fall back to while Redis is away.
 *
 * A bucket of burst B and interval T (window / count) stores its TAT.  A
 * request at now: tat = max(stored, now), capped at now + B*T (a full
 * wait, whatever the clock did); the request would move it to tat + T;
 * it passes when that is at most now + B*T.  What is left is how many
 * more intervals fit before now + B*T.
 */
#include <sys/queue.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rlbucket.h"

/* Set up one bucket; see rlbucket.h. */
int
rlb_params_init(struct rlb_params *p, int64_t count, int64_t window_us,
    int64_t burst, int divide)
{
	int64_t	interval, share;

	if (count < 1 || count > RLB_COUNT_MAX ||
	    window_us < RLB_WINDOW_MIN_US || window_us > RLB_WINDOW_MAX_US ||
	    burst < 1 || burst > RLB_COUNT_MAX ||
	    divide < 1 || divide > RLB_DIVIDE_MAX)
		return (-1);
	/* Rounded up: a limit is never exceeded, only approached. */
	interval = (window_us + count - 1) / count;
	/*
	 * An instance's share of the limit: the same burst split N ways
	 * (at least one), each request worth N intervals.  interval and
	 * divide are bounded, so the product is below 2^46.
	 */
	interval *= divide;
	share = burst / divide;
	if (share < 1)
		share = 1;
	if (share > RLB_SPAN_MAX_US / interval)
		return (-1);
	p->interval_us = interval;
	p->burst = share;
	p->span_us = share * interval;
	return (0);
}

/* One request against one bucket; see rlbucket.h. */
void
rlb_take(const struct rlb_params *p, int64_t tat, int64_t now,
    struct rlb_verdict *v)
{
	int64_t	limit, next;
	int	clamped = 0;

	/*
	 * now is at most about 2^51 (epoch microseconds, a monotonic clock)
	 * and span at most 2^50: no sum here overflows.
	 */
	limit = now + p->span_us;
	if (tat < now)
		tat = now;		/* idle: the bucket is full */
	if (tat > limit) {
		tat = limit;		/* clock went back: empty, no worse */
		clamped = 1;
	}
	next = tat + p->interval_us;
	memset(v, 0, sizeof(*v));
	if (next > limit) {
		/*
		 * Refused.  A clamped TAT is stored all the same: else the
		 * far one would stay and refuse every request until the
		 * clock caught up with it.
		 */
		v->allowed = 0;
		v->retry_us = next - limit;
		v->remaining = 0;
		v->tat = tat;
		v->store = clamped;
		return;
	}
	v->store = 1;
	v->allowed = 1;
	v->remaining = (limit - next) / p->interval_us;
	v->tat = next;
}

/*
 * The script, line for line rlb_take() over every key (tests/integration
 * test_ratelimit.py runs it against this file's results).  Lua numbers
 * are doubles: every value stays below 2^53 (rlb_params_init), the
 * division is corrected to an exact floor, and the stored value is
 * written with %.0f, since tostring() would keep 14 digits only.  The
 * buckets are stored only when every one allows: a refused request costs
 * no rule anything (a TAT cut back to a full wait is stored anyway).
 */
const char rlb_lua[] =
	"local now\n"
	"if ARGV[1] == '' then\n"
	"  local t = redis.call('TIME')\n"
	"  now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
	"else\n"
	"  now = tonumber(ARGV[1])\n"
	"end\n"
	"local res = { now }\n"
	"local nexts = {}\n"
	"local ok = true\n"
	"local held = redis.call('MGET', unpack(KEYS))\n"
	"for i = 1, #KEYS do\n"
	"  local iv = tonumber(ARGV[2 * i])\n"
	"  local burst = tonumber(ARGV[2 * i + 1])\n"
	"  local limit = now + burst * iv\n"
	"  local tat = tonumber(held[i] or '0') or 0\n"
	"  local cut = false\n"
	"  if tat < now then tat = now end\n"
	"  if tat > limit then tat = limit; cut = true end\n"
	"  local nx = tat + iv\n"
	"  if nx > limit then\n"
	"    ok = false\n"
	"    if cut then\n"
	"      redis.call('SET', KEYS[i], string.format('%.0f', tat),\n"
	"          'PX', math.floor((tat - now) / 1000) + 1)\n"
	"    end\n"
	"    res[#res + 1] = 0\n"
	"    res[#res + 1] = 0\n"
	"    res[#res + 1] = nx - limit\n"
	"  else\n"
	"    local left = limit - nx\n"
	"    local r = math.floor(left / iv)\n"
	"    if r * iv > left then r = r - 1 end\n"
	"    if (r + 1) * iv <= left then r = r + 1 end\n"
	"    nexts[i] = nx\n"
	"    res[#res + 1] = 1\n"
	"    res[#res + 1] = r\n"
	"    res[#res + 1] = 0\n"
	"  end\n"
	"end\n"
	"if ok then\n"
	"  for i = 1, #KEYS do\n"
	"    local ttl = math.floor((nexts[i] - now) / 1000) + 1\n"
	"    redis.call('SET', KEYS[i], string.format('%.0f', nexts[i]),\n"
	"        'PX', ttl)\n"
	"  end\n"
	"end\n"
	"return res\n";

/* The in-process table: chained hash, LRU list, fixed capacity. */
struct rlb_node {
	TAILQ_ENTRY(rlb_node)	 lru;
	struct rlb_node		*next;	/* hash chain */
	uint32_t		 hash;
	int64_t			 tat;
	char			 key[];
};

struct rlb_table {
	TAILQ_HEAD(rlb_node_head, rlb_node) lru;	/* most recent first */
	struct rlb_node		**slots;
	size_t			 nslots;	/* power of two */
	size_t			 count;
	size_t			 max;
	uint64_t		 hkey[2];	/* rlb_hash's, random */
};

/*
 * SipHash-2-4 under a key drawn per table.  The keys hold what clients
 * choose (an address out of an IPv6 /64, a repository name): under a
 * hash anyone can compute they could all be made to land in one chain,
 * and every lookup would walk them all.
 */
#define RLB_ROTL(x, b)	(uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define RLB_SIPROUND(v0, v1, v2, v3) do {				\
	v0 += v1; v1 = RLB_ROTL(v1, 13); v1 ^= v0; v0 = RLB_ROTL(v0, 32); \
	v2 += v3; v3 = RLB_ROTL(v3, 16); v3 ^= v2;			\
	v0 += v3; v3 = RLB_ROTL(v3, 21); v3 ^= v0;			\
	v2 += v1; v1 = RLB_ROTL(v1, 17); v1 ^= v2; v2 = RLB_ROTL(v2, 32); \
} while (0)

static uint64_t
rlb_le64(const unsigned char *p)
{
	uint64_t	v = 0;
	int		i;

	for (i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return (v);
}

static uint32_t
rlb_hash(const uint64_t k[2], const char *s, size_t len)
{
	const unsigned char	*p = (const unsigned char *)s;
	uint64_t		 v0 = k[0] ^ 0x736f6d6570736575ULL;
	uint64_t		 v1 = k[1] ^ 0x646f72616e646f6dULL;
	uint64_t		 v2 = k[0] ^ 0x6c7967656e657261ULL;
	uint64_t		 v3 = k[1] ^ 0x7465646279746573ULL;
	uint64_t		 m, b = (uint64_t)len << 56;
	size_t			 i, left = len & 7;

	for (i = 0; i + 8 <= len; i += 8) {
		m = rlb_le64(p + i);
		v3 ^= m;
		RLB_SIPROUND(v0, v1, v2, v3);
		RLB_SIPROUND(v0, v1, v2, v3);
		v0 ^= m;
	}
	while (left-- > 0)
		b |= (uint64_t)p[i + left] << (8 * left);
	v3 ^= b;
	RLB_SIPROUND(v0, v1, v2, v3);
	RLB_SIPROUND(v0, v1, v2, v3);
	v0 ^= b;
	v2 ^= 0xff;
	for (i = 0; i < 4; i++)
		RLB_SIPROUND(v0, v1, v2, v3);
	return ((uint32_t)(v0 ^ v1 ^ v2 ^ v3));
}

/* A table of at most max buckets (1..2^24); NULL on failure. */
struct rlb_table *
rlb_table_new(size_t max)
{
	struct rlb_table	*t;
	size_t			 n = 16;

	if (max < 1 || max > (1u << 24))
		return (NULL);
	while (n < max)
		n <<= 1;
	if ((t = calloc(1, sizeof(*t))) == NULL)
		return (NULL);
	if ((t->slots = calloc(n, sizeof(*t->slots))) == NULL) {
		free(t);
		return (NULL);
	}
	TAILQ_INIT(&t->lru);
	arc4random_buf(t->hkey, sizeof(t->hkey));
	t->nslots = n;
	t->max = max;
	return (t);
}

/* Drop every bucket. */
void
rlb_table_clear(struct rlb_table *t)
{
	struct rlb_node	*n;

	while ((n = TAILQ_FIRST(&t->lru)) != NULL) {
		TAILQ_REMOVE(&t->lru, n, lru);
		free(n);
	}
	memset(t->slots, 0, t->nslots * sizeof(*t->slots));
	t->count = 0;
}

void
rlb_table_free(struct rlb_table *t)
{
	if (t == NULL)
		return;
	rlb_table_clear(t);
	free(t->slots);
	free(t);
}

static struct rlb_node **
rlb_find(struct rlb_table *t, const char *key, uint32_t h)
{
	struct rlb_node	**pp;

	for (pp = &t->slots[h & (t->nslots - 1)]; *pp != NULL;
	    pp = &(*pp)->next)
		if ((*pp)->hash == h && strcmp((*pp)->key, key) == 0)
			break;
	return (pp);
}

/* The stored TAT of key; 0 when none. */
int64_t
rlb_table_peek(struct rlb_table *t, const char *key)
{
	struct rlb_node	**pp;
	size_t		  len = strnlen(key, RLB_KEY_MAX + 1);

	if (len > RLB_KEY_MAX)
		return (0);
	pp = rlb_find(t, key, rlb_hash(t->hkey, key, len));
	return (*pp == NULL ? 0 : (*pp)->tat);
}

/* Store key's TAT; the least recently used goes when full. */
int
rlb_table_put(struct rlb_table *t, const char *key, int64_t tat)
{
	struct rlb_node	**pp, *n, *old;
	size_t		  len = strnlen(key, RLB_KEY_MAX + 1);
	uint32_t	  h;

	if (len > RLB_KEY_MAX)
		return (-1);
	h = rlb_hash(t->hkey, key, len);
	pp = rlb_find(t, key, h);
	if ((n = *pp) != NULL) {
		n->tat = tat;
		TAILQ_REMOVE(&t->lru, n, lru);
		TAILQ_INSERT_HEAD(&t->lru, n, lru);
		return (0);
	}
	if (t->count >= t->max) {
		old = TAILQ_LAST(&t->lru, rlb_node_head);
		TAILQ_REMOVE(&t->lru, old, lru);
		for (pp = &t->slots[old->hash & (t->nslots - 1)];
		    *pp != old; pp = &(*pp)->next)
			;
		*pp = old->next;
		free(old);
		t->count--;
	}
	if ((n = malloc(sizeof(*n) + len + 1)) == NULL)
		return (-1);
	memcpy(n->key, key, len + 1);
	n->hash = h;
	n->tat = tat;
	pp = &t->slots[h & (t->nslots - 1)];
	n->next = *pp;
	*pp = n;
	TAILQ_INSERT_HEAD(&t->lru, n, lru);
	t->count++;
	return (0);
}

size_t
rlb_table_count(const struct rlb_table *t)
{
	return (t->count);
}

size_t
rlb_table_chain_max(const struct rlb_table *t)
{
	const struct rlb_node	*n;
	size_t			 i, len, max = 0;

	for (i = 0; i < t->nslots; i++) {
		for (len = 0, n = t->slots[i]; n != NULL; n = n->next)
			len++;
		if (len > max)
			max = len;
	}
	return (max);
}
