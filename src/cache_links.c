/*
 * cache_links.c: through which repositories the cache may serve an entry.
 *
 * The store is shared: one file per (kind, digest), whatever repository
 * filled it.  Served as is, a client allowed to pull public/x could read
 * a blob of private/y through public/x by asking for its digest.  So, as
 * the reference registry links each blob and manifest to the repositories
 * that hold it, an entry is served for repository R of an upstream only
 * when there is a link (upstream, R, kind, digest): proof that the
 * upstream holds the digest in R.  A link is recorded when
 *
 *  - a fill through R publishes the entry (cache_fill.c);
 *  - a tag of R is revalidated and the upstream names the digest, or a
 *    tag record of R, which only such an answer writes, is used
 *    (cache_serve.c);
 *  - a HEAD for the digest in R, sent before a hit that has no link
 *    (cache_serve.c, "confirm"), answers 200 with the same digest (and,
 *    for a blob, the same length).
 *
 * The upstream is named and its URL is part of the key: a reload that
 * points the name elsewhere starts from no links.
 *
 * Links live in memory only: a hash and an LRU list of at most
 * cache.max_repo_links, the least recently used dropped first.  A link
 * lost (evicted, or at a restart) costs one HEAD to the upstream at the
 * next hit through its repository, never a wrong answer: missing links are
 * safe by construction.  The price is that after a restart a hit needs
 * the upstream once per (repository, digest), and while the upstream is
 * unreachable such a hit fails closed (502/504) instead of being served;
 * links on disk would spare that, at the cost of a file (or an index and
 * its compaction) per link and a start-up scan.  Memory: about 100 bytes
 * plus the upstream's name and URL, the repository and the digest per
 * link.
 */
#include <stdlib.h>
#include <string.h>

#include "cache.h"

#define LINK_KEY_MAX	4096

struct cache_link {
	struct cache_link	*hnext;		/* hash chain */
	TAILQ_ENTRY(cache_link)	 lru;		/* least recent first */
	uint64_t		 hash;
	size_t			 klen;
	char			 key[];	/* kind, name, url, repo, digest */
};

struct cache_links {
	size_t			 max;
	struct cache_link	**buckets;
	size_t			 nbuckets;	/* a power of two */
	size_t			 n;
	uint64_t		 evicted;
	TAILQ_HEAD(, cache_link) lru;
};

/*
 * The key: the parts joined by NULs, so no two tuples share one.  -1 when
 * it does not fit (a very long upstream URL): no link, so every hit
 * through it is confirmed, which is safe.
 */
static int
links_key(const struct config_upstream *up, const char *repo,
    enum cache_kind kind, const char *digest, char *buf, size_t *len)
{
	int	n;

	n = snprintf(buf, LINK_KEY_MAX, "%c%s%c%s%c%s%c%s",
	    kind == CACHE_BLOB ? 'b' : 'm', up->name, '\0', up->url, '\0',
	    repo, '\0', digest);
	if (n < 0 || n >= LINK_KEY_MAX)
		return (-1);
	*len = (size_t)n;
	return (0);
}

static uint64_t
links_hash(const char *key, size_t len)
{
	uint64_t	h = 1469598103934665603ULL;
	size_t		i;

	for (i = 0; i < len; i++) {
		h ^= (unsigned char)key[i];
		h *= 1099511628211ULL;
	}
	return (h);
}

static struct cache_link *
links_find(struct cache_links *l, const char *key, size_t len, uint64_t h)
{
	struct cache_link	*k;

	for (k = l->buckets[h & (l->nbuckets - 1)]; k != NULL; k = k->hnext)
		if (k->hash == h && k->klen == len &&
		    memcmp(k->key, key, len) == 0)
			return (k);
	return (NULL);
}

static void
links_rehash(struct cache_links *l)
{
	struct cache_link	**nb, *k, *next;
	size_t			  i, n = l->nbuckets * 2;

	if ((nb = calloc(n, sizeof(*nb))) == NULL)
		fatal("calloc");
	for (i = 0; i < l->nbuckets; i++) {
		for (k = l->buckets[i]; k != NULL; k = next) {
			next = k->hnext;
			k->hnext = nb[k->hash & (n - 1)];
			nb[k->hash & (n - 1)] = k;
		}
	}
	free(l->buckets);
	l->buckets = nb;
	l->nbuckets = n;
}

static void
links_drop(struct cache_links *l, struct cache_link *k)
{
	struct cache_link	**pp;

	pp = &l->buckets[k->hash & (l->nbuckets - 1)];
	while (*pp != NULL && *pp != k)
		pp = &(*pp)->hnext;
	if (*pp == k)
		*pp = k->hnext;
	TAILQ_REMOVE(&l->lru, k, lru);
	l->n--;
	free(k);
}

/* An empty set of links, holding at most cc->max_repo_links. */
struct cache_links *
cache_links_open(const struct config_cache *cc)
{
	struct cache_links	*l;

	if ((l = calloc(1, sizeof(*l))) == NULL)
		fatal("calloc");
	l->max = cc->max_repo_links > 0 ? cc->max_repo_links : 1;
	l->nbuckets = 1024;
	if ((l->buckets = calloc(l->nbuckets, sizeof(*l->buckets))) == NULL)
		fatal("calloc");
	TAILQ_INIT(&l->lru);
	return (l);
}

/* Free every link.  NULL is fine. */
void
cache_links_close(struct cache_links *l)
{
	struct cache_link	*k;

	if (l == NULL)
		return;
	while ((k = TAILQ_FIRST(&l->lru)) != NULL)
		links_drop(l, k);
	free(l->buckets);
	free(l);
}

/*
 * Whether the upstream is known to hold (kind, digest) in repository repo
 * (the upstream's name); a link found becomes the most recently used.
 */
int
cache_link_has(struct cache *c, const struct config_upstream *up,
    const char *repo, enum cache_kind kind, const char *digest)
{
	struct cache_links	*l = c->links;
	struct cache_link	*k;
	char			 key[LINK_KEY_MAX];
	size_t			 len;

	if (links_key(up, repo, kind, digest, key, &len) == -1 ||
	    (k = links_find(l, key, len, links_hash(key, len))) == NULL)
		return (0);
	TAILQ_REMOVE(&l->lru, k, lru);
	TAILQ_INSERT_TAIL(&l->lru, k, lru);
	return (1);
}

/*
 * Record that the upstream holds (kind, digest) in repository repo; above
 * cache.max_repo_links the least recently used link goes.
 */
void
cache_link_put(struct cache *c, const struct config_upstream *up,
    const char *repo, enum cache_kind kind, const char *digest)
{
	struct cache_links	*l = c->links;
	struct cache_link	*k;
	char			 key[LINK_KEY_MAX];
	size_t			 len;
	uint64_t		 h;

	if (links_key(up, repo, kind, digest, key, &len) == -1)
		return;
	h = links_hash(key, len);
	if ((k = links_find(l, key, len, h)) != NULL) {
		TAILQ_REMOVE(&l->lru, k, lru);
		TAILQ_INSERT_TAIL(&l->lru, k, lru);
		return;
	}
	if ((k = malloc(sizeof(*k) + len)) == NULL)
		fatal("malloc");
	memcpy(k->key, key, len);
	k->klen = len;
	k->hash = h;
	if (l->n >= l->nbuckets)
		links_rehash(l);
	k->hnext = l->buckets[h & (l->nbuckets - 1)];
	l->buckets[h & (l->nbuckets - 1)] = k;
	TAILQ_INSERT_TAIL(&l->lru, k, lru);
	l->n++;
	/* The new link is last and max is at least 1: it stays. */
	while (l->n > l->max) {
		links_drop(l, TAILQ_FIRST(&l->lru));
		l->evicted++;
	}
}
