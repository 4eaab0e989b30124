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
 * and dropped when a DELETE of the digest in R through the gateway
 * succeeds (cache_invalidate_link, from req.c): the gateway then knows R
 * no longer holds it, and a cached copy must not outlive that for R.
 *
 * The upstream is named and its URL is part of the key: a reload that
 * points the name elsewhere starts from no links.
 *
 * Links are held in memory, a hash and an LRU list of at most
 * cache.max_repo_links, the least recently used dropped first, and kept
 * across restarts in one append-only file, dir/links, one line per link
 * recorded:
 *
 *	<b|m> TAB <digest> TAB <repository> TAB <upstream> TAB <url> LF
 *
 * or, for a link dropped, the same line with a kind of "-b" or "-m", read
 * back at start in order (so the newest are the most recent), and
 * rewritten whole from memory (tmp/, then rename) when it holds more than
 * twice max_repo_links lines, so it stays bounded by the setting; a lookup
 * never touches it.  Nothing is fsync'd: every line that is lost, torn or
 * not ours (exactly five fields, a kind of b, m, -b or -m, a digest the
 * cache can verify; anything else is skipped) is a link missing, and a
 * missing link is safe by construction: it costs one HEAD at the next hit
 * through its repository (a GET, when the upstream has no other link for
 * the digest), never a wrong answer.  (A lost drop line, alone, keeps a
 * link that a DELETE dropped: the deletion is then missed after a
 * restart, as it is for one done upstream directly.)  The file is opened without following
 * a symbolic link (one found there is removed, not followed); when it
 * cannot be opened, or is not a regular file (a FIFO would block the
 * loop), the links live in memory only, and after a restart each
 * (repository, digest) is confirmed again, which fails closed while the
 * upstream is unreachable.  The rewrite is the one cost that grows with the
 * setting: about 150 bytes a link, written on the loop once per
 * max_repo_links new links.  Memory: about 100 bytes plus the upstream's
 * name and URL, the repository and the digest per link.
 */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cache.h"

#define LINK_KEY_MAX	4096
#define LINK_READ_BUF	65536

struct link_up;

struct cache_link {
	struct cache_link	*hnext;		/* hash chain */
	TAILQ_ENTRY(cache_link)	 lru;		/* least recent first */
	struct link_up		*up;		/* its (upstream, digest) */
	uint64_t		 hash;
	size_t			 klen;
	char			 key[];	/* kind, name, url, repo, digest; */
					/* klen bytes and a NUL */
};

/*
 * The links of one (upstream, kind, digest), whatever the repository: the
 * upstream has sent those bytes (cache_link_upstream_has).  Counted, and
 * freed with its last link.
 */
struct link_up {
	struct link_up		*hnext;
	uint64_t		 hash;
	size_t			 n;		/* links */
	size_t			 klen;
	char			 key[];		/* kind, name, url, digest */
};

struct cache_links {
	struct cache		*cache;
	int			 fd;		/* dir/links, or -1 */
	off_t			 roff;		/* read up to here */
	ino_t			 ino;		/* of what roff is in */
	dev_t			 dev;
	size_t			 nlines;	/* in the file */
	size_t			 max;
	struct cache_link	**buckets;
	size_t			 nbuckets;	/* a power of two */
	size_t			 n;
	uint64_t		 evicted;
	TAILQ_HEAD(, cache_link) lru;
	struct link_up		**ubuckets;
	size_t			 nubuckets;	/* a power of two */
	size_t			 nu;
};

/*
 * The key: the parts joined by NULs, so no two tuples share one.  -1 when
 * it does not fit (a very long upstream URL): no link, so every hit
 * through it is confirmed, which is safe.
 */
static int
links_key(const char *name, const char *url, const char *repo, char kind,
    const char *digest, char *buf, size_t *len)
{
	int	n;

	n = snprintf(buf, LINK_KEY_MAX, "%c%s%c%s%c%s%c%s", kind, name, '\0',
	    url, '\0', repo, '\0', digest);
	if (n < 0 || n >= LINK_KEY_MAX)
		return (-1);
	*len = (size_t)n;
	return (0);
}

static char
links_kind(enum cache_kind kind)
{
	return (kind == CACHE_BLOB ? 'b' : 'm');
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

/* The (upstream, kind, digest) key of a link's key: its repository out. */
static size_t
links_upkey(const char *key, char *buf)
{
	const char	*name = key + 1, *url, *repo, *digest;
	size_t		 a, b, c;

	url = name + strlen(name) + 1;
	repo = url + strlen(url) + 1;
	digest = repo + strlen(repo) + 1;
	a = (size_t)(repo - key);		/* kind, name, NUL, url, NUL */
	b = strlen(digest);
	memcpy(buf, key, a);
	memcpy(buf + a, digest, b);
	c = a + b;
	buf[c] = '\0';
	return (c);
}

static struct link_up *
links_up_find(struct cache_links *l, const char *key, size_t len,
    uint64_t h)
{
	struct link_up	*u;

	for (u = l->ubuckets[h & (l->nubuckets - 1)]; u != NULL;
	    u = u->hnext)
		if (u->hash == h && u->klen == len &&
		    memcmp(u->key, key, len) == 0)
			return (u);
	return (NULL);
}

/* Count a new link k in its (upstream, kind, digest). */
static void
links_up_add(struct cache_links *l, struct cache_link *k)
{
	struct link_up	*u, **nb, *next;
	char		 key[LINK_KEY_MAX];
	size_t		 len, i, n;
	uint64_t	 h;

	len = links_upkey(k->key, key);
	h = links_hash(key, len);
	if ((u = links_up_find(l, key, len, h)) == NULL) {
		if (l->nu >= l->nubuckets) {
			n = l->nubuckets * 2;
			if ((nb = calloc(n, sizeof(*nb))) == NULL)
				fatal("calloc");
			for (i = 0; i < l->nubuckets; i++)
				for (u = l->ubuckets[i]; u != NULL; u = next) {
					next = u->hnext;
					u->hnext = nb[u->hash & (n - 1)];
					nb[u->hash & (n - 1)] = u;
				}
			free(l->ubuckets);
			l->ubuckets = nb;
			l->nubuckets = n;
		}
		if ((u = calloc(1, sizeof(*u) + len + 1)) == NULL)
			fatal("calloc");
		memcpy(u->key, key, len);
		u->klen = len;
		u->hash = h;
		u->hnext = l->ubuckets[h & (l->nubuckets - 1)];
		l->ubuckets[h & (l->nubuckets - 1)] = u;
		l->nu++;
	}
	u->n++;
	k->up = u;
}

/* A link goes: its (upstream, kind, digest) with its last one. */
static void
links_up_del(struct cache_links *l, struct cache_link *k)
{
	struct link_up	*u = k->up, **pp;

	if (--u->n > 0)
		return;
	pp = &l->ubuckets[u->hash & (l->nubuckets - 1)];
	while (*pp != NULL && *pp != u)
		pp = &(*pp)->hnext;
	if (*pp == u)
		*pp = u->hnext;
	l->nu--;
	free(u);
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
	links_up_del(l, k);
	l->n--;
	free(k);
}

/*
 * The link for key, the most recently used; added (and the least recently
 * used dropped above the cap) when new.  Returns 1 when it was new.
 */
static int
links_insert(struct cache_links *l, const char *key, size_t len)
{
	struct cache_link	*k;
	uint64_t		 h = links_hash(key, len);

	if ((k = links_find(l, key, len, h)) != NULL) {
		TAILQ_REMOVE(&l->lru, k, lru);
		TAILQ_INSERT_TAIL(&l->lru, k, lru);
		return (0);
	}
	/* NUL-terminated too: links_line() reads its last part. */
	if ((k = malloc(sizeof(*k) + len + 1)) == NULL)
		fatal("malloc");
	memcpy(k->key, key, len);
	k->key[len] = '\0';
	k->klen = len;
	k->hash = h;
	if (l->n >= l->nbuckets)
		links_rehash(l);
	k->hnext = l->buckets[h & (l->nbuckets - 1)];
	l->buckets[h & (l->nbuckets - 1)] = k;
	TAILQ_INSERT_TAIL(&l->lru, k, lru);
	links_up_add(l, k);
	l->n++;
	/* The new link is last and max is at least 1: it stays. */
	while (l->n > l->max) {
		links_drop(l, TAILQ_FIRST(&l->lru));
		l->evicted++;
	}
	return (1);
}

/* A field fit for the file: not empty, printable, no tab. */
static int
links_field_ok(const char *s, size_t max)
{
	size_t	n;

	for (n = 0; s[n] != '\0'; n++)
		if ((unsigned char)s[n] <= 0x20 || (unsigned char)s[n] >= 0x7f)
			return (0);
	return (n > 0 && n <= max);
}

/* The file's line for a key (the same parts, tab-separated), marked as
 * a drop when drop is set.  -1 when a part is not fit for the file (the
 * link stays in memory only). */
static int
links_line(const char *key, size_t klen, int drop, char *buf, size_t len)
{
	const char	*name, *url, *repo, *digest;
	int		 n;

	name = key + 1;
	url = name + strlen(name) + 1;
	repo = url + strlen(url) + 1;
	digest = repo + strlen(repo) + 1;
	if (digest > key + klen || !links_field_ok(name, CACHE_UPSTREAM_MAX) ||
	    !links_field_ok(url, LINK_KEY_MAX) ||
	    !links_field_ok(repo, OCI_NAME_MAX + 16))
		return (-1);
	n = snprintf(buf, len, "%s%c\t%s\t%s\t%s\t%s\n", drop ? "-" : "",
	    key[0], digest, repo, name, url);
	return (n < 0 || (size_t)n >= len ? -1 : n);
}

/*
 * Parse one line of the file (without its LF) into a key, and whether it
 * drops the link.  -1 for anything but exactly five well-formed fields.
 */
static int
links_parse(char *line, char *key, size_t *klen, int *drop)
{
	char		*f[5], *p = line;
	const char	*hex;
	int		 i;

	for (i = 0; i < 5; i++) {
		f[i] = p;
		if ((p = strchr(p, '\t')) == NULL) {
			if (i != 4)
				return (-1);
			break;
		}
		*p++ = '\0';
	}
	if (p != NULL)
		return (-1);		/* a sixth field */
	if ((*drop = f[0][0] == '-'))
		f[0]++;
	if ((strcmp(f[0], "b") != 0 && strcmp(f[0], "m") != 0) ||
	    cache_digest_alg(f[1], &hex) == CACHE_ALG_NONE ||
	    !links_field_ok(f[2], OCI_NAME_MAX + 16) ||
	    !links_field_ok(f[3], CACHE_UPSTREAM_MAX) ||
	    !links_field_ok(f[4], LINK_KEY_MAX))
		return (-1);
	return (links_key(f[3], f[4], f[2], f[0][0], f[1], key, klen));
}

/*
 * Open dir/links for appending, never through a symbolic link, and only
 * when it is a regular file: appending to a FIFO would block the loop
 * once its pipe is full (O_NONBLOCK so that the open itself cannot).
 */
static int
links_open_file(struct cache_links *l, int trunc)
{
	struct stat	st;
	char		path[PATH_MAX];
	int		flags = O_RDWR | O_CREAT | O_APPEND | O_NOFOLLOW |
			    O_CLOEXEC | O_NONBLOCK;

	if (trunc)
		flags |= O_TRUNC;
	snprintf(path, sizeof(path), "%s/links", l->cache->dir);
	if ((l->fd = open(path, flags, 0640)) == -1 && errno == ELOOP) {
		/* Not ours: the link goes, what it points at stays. */
		log_warn("- cache foreign_file path=%s: a symbolic link, "
		    "removed", path);
		if (unlink(path) == 0)
			l->fd = open(path, flags, 0640);
	}
	if (l->fd != -1 && (fstat(l->fd, &st) == -1 || !S_ISREG(st.st_mode))) {
		log_warn("- cache foreign_file path=%s: not a regular file, "
		    "left alone; repository links in memory only", path);
		close(l->fd);
		l->fd = -1;
		return (-1);
	}
	if (l->fd == -1) {
		log_warn("- cache links_unavailable path=%s error=\"%s\": "
		    "repository links in memory only", path, strerror(errno));
		return (-1);
	}
	return (0);
}

/*
 * Rewrite the file from memory, least recently used first, through tmp/
 * and a rename: bounded by max_repo_links lines.  On failure the old
 * file stays (it only grows until the next try).
 */
static void
links_compact(struct cache_links *l)
{
	struct cache_link	*k;
	char			 tmp[PATH_MAX], path[PATH_MAX];
	char			 line[LINK_KEY_MAX + 8];
	size_t			 n = 0;
	FILE			*fp;
	int			 fd, len;

	if ((fd = cache_tmp_open(l->cache, tmp, sizeof(tmp))) == -1 ||
	    (fp = fdopen(fd, "w")) == NULL) {
		if (fd != -1) {
			close(fd);
			unlink(tmp);
		}
		log_warn("- cache links_compact_failed error=\"%s\"",
		    strerror(errno));
		return;
	}
	TAILQ_FOREACH(k, &l->lru, lru) {
		if ((len = links_line(k->key, k->klen, 0, line,
		    sizeof(line))) == -1)
			continue;
		fwrite(line, 1, (size_t)len, fp);
		n++;
	}
	snprintf(path, sizeof(path), "%s/links", l->cache->dir);
	if (fflush(fp) != 0 || ferror(fp) || fclose(fp) != 0 ||
	    rename(tmp, path) == -1) {
		log_warn("- cache links_compact_failed error=\"%s\"",
		    strerror(errno));
		unlink(tmp);
		return;
	}
	if (l->fd != -1)
		close(l->fd);
	l->nlines = n;
	(void)links_open_file(l, 0);
	log_debug("- cache links_compacted lines=%zu", n);
}

/* Append a new link's line, or a dropped one's; rewrite the file when
 * it holds too many. */
static void
links_append(struct cache_links *l, const char *key, size_t klen, int drop)
{
	char	line[LINK_KEY_MAX + 8];
	int	len;

	if (l->fd == -1 || (len = links_line(key, klen, drop, line,
	    sizeof(line))) == -1)
		return;
	/* A short write leaves a torn line, which the next start skips. */
	if (write(l->fd, line, (size_t)len) != len)
		return;
	if (++l->nlines > 2 * l->max)
		links_compact(l);
}

/* Read the file back in order; returns the lines read. */
static size_t
links_load(struct cache_links *l)
{
	struct cache_link	*k;
	char			*buf, *p, *nl, key[LINK_KEY_MAX];
	size_t			 have = 0, lines = 0, klen;
	ssize_t			 n;
	int			 skip = 0, drop;

	if ((buf = malloc(LINK_READ_BUF + 1)) == NULL)
		fatal("malloc");
	for (;;) {
		while ((n = read(l->fd, buf + have, LINK_READ_BUF - have)) ==
		    -1 && errno == EINTR)
			;
		if (n <= 0)
			break;
		have += (size_t)n;
		buf[have] = '\0';
		p = buf;
		while ((nl = memchr(p, '\n', have - (p - buf))) != NULL) {
			*nl = '\0';
			lines++;
			if (!skip && links_parse(p, key, &klen, &drop) == 0) {
				if (!drop)
					links_insert(l, key, klen);
				else if ((k = links_find(l, key, klen,
				    links_hash(key, klen))) != NULL)
					links_drop(l, k);
			}
			skip = 0;
			p = nl + 1;
		}
		have -= (size_t)(p - buf);
		memmove(buf, p, have);
		if (have == LINK_READ_BUF) {
			/* A line longer than any link: not ours. */
			have = 0;
			skip = 1;
		}
	}
	free(buf);
	return (lines);
}

/*
 * The links of the cache c: those in dir/links, at most
 * cc->max_repo_links of them, the most recently recorded kept.
 */
struct cache_links *
cache_links_open(struct cache *c, const struct config_cache *cc)
{
	struct cache_links	*l;

	if ((l = calloc(1, sizeof(*l))) == NULL)
		fatal("calloc");
	l->cache = c;
	l->fd = -1;
	l->max = cc->max_repo_links > 0 ? cc->max_repo_links : 1;
	l->nbuckets = 1024;
	if ((l->buckets = calloc(l->nbuckets, sizeof(*l->buckets))) == NULL)
		fatal("calloc");
	l->nubuckets = 1024;
	if ((l->ubuckets = calloc(l->nubuckets, sizeof(*l->ubuckets))) ==
	    NULL)
		fatal("calloc");
	TAILQ_INIT(&l->lru);
	if (links_open_file(l, 0) == 0) {
		if (lseek(l->fd, 0, SEEK_SET) == 0) {
			l->nlines = links_load(l);
			l->roff = lseek(l->fd, 0, SEEK_CUR);
		}
		/* Over the bound only when max_repo_links was lowered. */
		if (l->nlines > 2 * l->max)
			links_compact(l);
	}
	log_info("- cache links n=%zu max=%zu file=%s", l->n, l->max,
	    l->fd != -1 ? "yes" : "no");
	return (l);
}

/* Free every link; the file stays.  NULL is fine. */
void
cache_links_close(struct cache_links *l)
{
	struct cache_link	*k;

	if (l == NULL)
		return;
	while ((k = TAILQ_FIRST(&l->lru)) != NULL)
		links_drop(l, k);
	if (l->fd != -1)
		close(l->fd);
	free(l->buckets);
	free(l->ubuckets);
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

	if (links_key(up->name, up->url, repo, links_kind(kind), digest, key,
	    &len) == -1 ||
	    (k = links_find(l, key, len, links_hash(key, len))) == NULL)
		return (0);
	TAILQ_REMOVE(&l->lru, k, lru);
	TAILQ_INSERT_TAIL(&l->lru, k, lru);
	return (1);
}

/*
 * Whether the upstream has a link for (kind, digest) in any repository:
 * it once sent those bytes.  Links are recorded only when it did (a fill
 * from it published them) or when it already had one (cache_serve.c), so
 * an upstream's word (a HEAD's 200) never makes another upstream's bytes
 * its own.
 */
int
cache_link_upstream_has(struct cache *c, const struct config_upstream *up,
    enum cache_kind kind, const char *digest)
{
	struct cache_links	*l = c->links;
	char			 key[LINK_KEY_MAX];
	int			 n;

	n = snprintf(key, sizeof(key), "%c%s%c%s%c%s", links_kind(kind),
	    up->name, '\0', up->url, '\0', digest);
	if (n < 0 || n >= (int)sizeof(key))
		return (0);
	return (links_up_find(l, key, (size_t)n,
	    links_hash(key, (size_t)n)) != NULL);
}

/*
 * Record that the upstream holds (kind, digest) in repository repo; above
 * cache.max_repo_links the least recently used link goes.  A new link is
 * appended to the file.
 */
void
cache_link_put(struct cache *c, const struct config_upstream *up,
    const char *repo, enum cache_kind kind, const char *digest)
{
	struct cache_links	*l = c->links;
	char			 key[LINK_KEY_MAX];
	size_t			 len;

	if (links_key(up->name, up->url, repo, links_kind(kind), digest, key,
	    &len) == -1)
		return;
	if (links_insert(l, key, len))
		links_append(l, key, len, 0);
}

/*
 * A DELETE of a manifest or blob by digest through the gateway succeeded:
 * the upstream no longer holds it in that repository, so its link goes,
 * in memory and (a drop line, whether or not memory still had it: the
 * file may) in the file.  Tag records that name a deleted manifest are
 * not found by digest: they are used until tag_ttl, as a tag moved
 * upstream is.
 */
void
cache_invalidate_link(struct req *req)
{
	struct cache		*c = req->c->ctx->cache;
	struct cache_links	*l;
	struct cache_link	*k;
	char			 key[LINK_KEY_MAX];
	size_t			 len;
	char			 kind;

	if (c == NULL || (l = c->links) == NULL || req->up == NULL ||
	    !req->route.ref_digest)
		return;
	kind = req->route.ep == OCI_EP_BLOB ? 'b' : 'm';
	if (links_key(req->up->name, req->up->url, req->upname, kind,
	    req->route.ref, key, &len) == -1)
		return;
	if ((k = links_find(l, key, len, links_hash(key, len))) != NULL)
		links_drop(l, k);
	links_append(l, key, len, 1);
	log_debug("%llu.%u cache link_dropped digest=%s name=%s",
	    (unsigned long long)req->c->id, req->seq, req->route.ref,
	    req->upname);
}

/*
 * Workers share dir/links: each appends the links it records, and one
 * that adopts an entry another published (cache_adopt) reads first what
 * the others appended since its last read, or the whole file again when
 * one of them rewrote it (links_compact renames a new file in).  A line
 * missed (torn by a concurrent append, or appended to a file that was
 * just replaced) is a link missing, which is safe: see the top.
 */
void
cache_links_sync(struct cache *c)
{
	struct cache_links	*l = c->links;
	struct stat		 a, b;
	char			 path[PATH_MAX];
	off_t			 end;

	if (config_worker < 0 || l == NULL || l->fd == -1)
		return;
	snprintf(path, sizeof(path), "%s/links", c->dir);
	if (stat(path, &b) == -1)
		return;
	if (b.st_ino == l->ino && b.st_dev == l->dev && b.st_size == l->roff)
		return;				/* nothing new */
	if (fstat(l->fd, &a) == 0 &&
	    (a.st_ino != b.st_ino || a.st_dev != b.st_dev)) {
		close(l->fd);
		l->fd = -1;
		l->roff = 0;
		l->nlines = 0;
		if (links_open_file(l, 0) == -1)
			return;
	}
	if (lseek(l->fd, l->roff, SEEK_SET) == -1)
		return;
	l->nlines += links_load(l);
	if ((end = lseek(l->fd, 0, SEEK_CUR)) != -1)
		l->roff = end;
	if (fstat(l->fd, &a) == 0) {
		l->ino = a.st_ino;
		l->dev = a.st_dev;
	}
}
