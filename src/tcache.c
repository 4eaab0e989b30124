/*
 * tcache.c: a bounded LRU map with expiry, keyed by 32-byte hashes.
 *
 * Every slot is allocated by tcache_new(): a fixed array of entries, a
 * free list and a bucket array of a power of two >= 2 * max heads with
 * chaining through the entries, so nothing is allocated per request and
 * the bound is the array.  The keys are HMAC outputs (uniform), so the
 * bucket is just their first bytes; a peer cannot aim collisions without
 * the process's HMAC key.  Lists use indices; NIL ends them.
 *
 * Guarantees: at most max entries; a value is released exactly once
 * (when dropped, replaced, purged, cleared or freed), never while the
 * cache still returns it; get never returns an entry at or after its
 * expiry.
 */
#include <stdlib.h>
#include <string.h>

#include "tcache.h"

#define NIL	UINT32_MAX
#define MAXENT	(1u << 24)

struct tce {
	unsigned char	 key[TCACHE_KEY_LEN];
	void		*val;
	int64_t		 expires;
	uint32_t	 prev, next;	/* LRU list, or the free list (next) */
	uint32_t	 hnext;		/* bucket chain */
};

struct tcache {
	struct tce	*e;
	uint32_t	*bucket;
	uint32_t	 mask;
	uint32_t	 max;
	uint32_t	 n;
	uint32_t	 head, tail;	/* most, least recently used */
	uint32_t	 free;
	void		(*free_val)(void *);
};

/* A new cache; see tcache.h. */
struct tcache *
tcache_new(size_t max, void (*free_val)(void *))
{
	struct tcache	*c;
	size_t		 nb = 2, i;

	if (max == 0 || max > MAXENT)
		return (NULL);
	while (nb < 2 * max)
		nb <<= 1;
	if ((c = calloc(1, sizeof(*c))) == NULL)
		return (NULL);
	c->e = calloc(max, sizeof(*c->e));
	c->bucket = malloc(nb * sizeof(*c->bucket));
	if (c->e == NULL || c->bucket == NULL) {
		free(c->e);
		free(c->bucket);
		free(c);
		return (NULL);
	}
	for (i = 0; i < nb; i++)
		c->bucket[i] = NIL;
	for (i = 0; i < max; i++)
		c->e[i].next = i + 1 < max ? (uint32_t)i + 1 : NIL;
	c->mask = (uint32_t)nb - 1;
	c->max = (uint32_t)max;
	c->head = c->tail = NIL;
	c->free = 0;
	c->free_val = free_val;
	return (c);
}

static uint32_t
tcache_bucket(const struct tcache *c, const unsigned char *key)
{
	uint32_t	h;

	memcpy(&h, key, sizeof(h));
	return (h & c->mask);
}

static void
tcache_unlink_lru(struct tcache *c, uint32_t i)
{
	struct tce	*e = &c->e[i];

	if (e->prev != NIL)
		c->e[e->prev].next = e->next;
	else
		c->head = e->next;
	if (e->next != NIL)
		c->e[e->next].prev = e->prev;
	else
		c->tail = e->prev;
}

static void
tcache_push_head(struct tcache *c, uint32_t i)
{
	struct tce	*e = &c->e[i];

	e->prev = NIL;
	e->next = c->head;
	if (c->head != NIL)
		c->e[c->head].prev = i;
	c->head = i;
	if (c->tail == NIL)
		c->tail = i;
}

static uint32_t
tcache_find(const struct tcache *c, const unsigned char *key)
{
	uint32_t	i;

	for (i = c->bucket[tcache_bucket(c, key)]; i != NIL;
	    i = c->e[i].hnext)
		if (memcmp(c->e[i].key, key, TCACHE_KEY_LEN) == 0)
			return (i);
	return (NIL);
}

/* Remove entry i everywhere, release its value, return it to the pool. */
static void
tcache_drop(struct tcache *c, uint32_t i)
{
	struct tce	*e = &c->e[i];
	uint32_t	*pp;
	void		*val;

	for (pp = &c->bucket[tcache_bucket(c, e->key)]; *pp != i;
	    pp = &c->e[*pp].hnext)
		continue;
	*pp = e->hnext;
	tcache_unlink_lru(c, i);
	val = e->val;
	memset(e, 0, sizeof(*e));
	e->next = c->free;
	c->free = i;
	c->n--;
	/* Released last: free_val may not re-enter a half-updated cache. */
	if (c->free_val != NULL)
		c->free_val(val);
}

/* Look a key up; see tcache.h. */
void *
tcache_get(struct tcache *c, const unsigned char *key, int64_t now)
{
	uint32_t	i;

	if ((i = tcache_find(c, key)) == NIL)
		return (NULL);
	if (now >= c->e[i].expires) {
		tcache_drop(c, i);
		return (NULL);
	}
	tcache_unlink_lru(c, i);
	tcache_push_head(c, i);
	return (c->e[i].val);
}

/* Store a value; see tcache.h. */
void
tcache_put(struct tcache *c, const unsigned char *key, void *val,
    int64_t expires, int64_t now)
{
	uint32_t	i, b;

	if ((i = tcache_find(c, key)) != NIL)
		tcache_drop(c, i);
	if (now >= expires) {
		if (c->free_val != NULL)
			c->free_val(val);
		return;
	}
	/* Full: the least recently used goes (expired ones go lazily). */
	if (c->free == NIL)
		tcache_drop(c, c->tail);
	i = c->free;
	c->free = c->e[i].next;
	memcpy(c->e[i].key, key, TCACHE_KEY_LEN);
	c->e[i].val = val;
	c->e[i].expires = expires;
	b = tcache_bucket(c, key);
	c->e[i].hnext = c->bucket[b];
	c->bucket[b] = i;
	tcache_push_head(c, i);
	c->n++;
}

/* Drop entries by predicate; see tcache.h. */
size_t
tcache_purge(struct tcache *c, int (*pred)(const void *, void *), void *arg)
{
	uint32_t	i, next;
	size_t		n = 0;

	for (i = c->head; i != NIL; i = next) {
		next = c->e[i].next;
		if (pred(c->e[i].val, arg)) {
			tcache_drop(c, i);
			n++;
		}
	}
	return (n);
}

/* Drop everything; see tcache.h. */
void
tcache_clear(struct tcache *c)
{
	while (c->head != NIL)
		tcache_drop(c, c->head);
}

/* Entries held. */
size_t
tcache_count(const struct tcache *c)
{
	return (c->n);
}

/* Free the cache; see tcache.h. */
void
tcache_free(struct tcache *c)
{
	if (c == NULL)
		return;
	tcache_clear(c);
	free(c->e);
	free(c->bucket);
	free(c);
}
