/*
 * cache.c: the pull-through cache's store on local disk.
 *
 * Layout under cache.dir:
 *
 *	blobs/<alg>/<2 hex>/<hex>	a blob, exactly its bytes
 *	manifests/<alg>/<2 hex>/<hex>	a type line, then the manifest
 *					(cache_manifest_type)
 *	tags/<upstream>/<k1>/<k2>	tag records (cache_tags.c)
 *	links				repository links (cache_links.c)
 *	tmp/				fills in progress
 *	lock				flock(2): one gateway per dir
 *
 * Guarantees: a file appears under blobs/ or manifests/ only by rename(2)
 * from tmp/ after its length and digest were verified and its data was
 * fsync'd (cache_fill.c), so no kill, at any moment, leaves an entry that
 * would be served corrupt; tmp/ is emptied at start.  The in-memory index
 * (a hash of digests, an LRU list) is rebuilt from the files at start,
 * ordered by mtime, which a hit refreshes at most once a minute.  Eviction
 * runs from a timer, a bounded number of unlinks per turn, oldest first,
 * and skips entries a reader has open; fills are not in the index, so they
 * are never evicted.  Each admitted fill reserves its Content-Length
 * (cache->reserved), which admission counts as taken, but published
 * entries make room only for the bytes fills have written (cache->filling)
 * as they arrive: a fill cancelled after its head, which a client can
 * cause at will, evicts nothing.
 * Tag records have their own index and bounds (cache_tags.c).  An
 * entry is served through a repository only with a link saying the
 * upstream holds it there (cache_links.c): the store is shared, the
 * repositories are not.
 */
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cache.h"

#define CACHE_EVICT_PER_TURN	64
#define CACHE_TOUCH_MS		60000

static const char *cache_kind_dir[] = { "blobs", "manifests" };

static uint64_t
cache_hash(enum cache_kind kind, const char *digest)
{
	uint64_t	h = 1469598103934665603ULL ^ (uint64_t)kind;

	for (; *digest != '\0'; digest++) {
		h ^= (unsigned char)*digest;
		h *= 1099511628211ULL;
	}
	return (h);
}

/* The published path of (kind, digest).  Returns 0, or -1. */
int
cache_path(struct cache *c, enum cache_kind kind, const char *digest,
    char *buf, size_t len)
{
	const char	*hex;
	enum cache_alg	 alg;
	int		 n;

	if ((alg = cache_digest_alg(digest, &hex)) == CACHE_ALG_NONE)
		return (-1);
	n = snprintf(buf, len, "%s/%s/%s/%.2s/%s", c->dir,
	    cache_kind_dir[kind], cache_alg_name(alg), hex, hex);
	return (n < 0 || (size_t)n >= len ? -1 : 0);
}

/* The index entry of (kind, digest), or NULL. */
struct cache_entry *
cache_lookup(struct cache *c, enum cache_kind kind, const char *digest)
{
	struct cache_entry	*e;

	e = c->buckets[cache_hash(kind, digest) & (c->nbuckets - 1)];
	for (; e != NULL; e = e->hnext)
		if (e->kind == kind && strcmp(e->digest, digest) == 0)
			return (e);
	return (NULL);
}

static void
cache_rehash(struct cache *c)
{
	struct cache_entry	**nb, *e, *next;
	size_t			  i, n = c->nbuckets * 2, h;

	if ((nb = calloc(n, sizeof(*nb))) == NULL)
		fatal("calloc");
	for (i = 0; i < c->nbuckets; i++) {
		for (e = c->buckets[i]; e != NULL; e = next) {
			next = e->hnext;
			h = cache_hash(e->kind, e->digest) & (n - 1);
			e->hnext = nb[h];
			nb[h] = e;
		}
	}
	free(c->buckets);
	c->buckets = nb;
	c->nbuckets = n;
}

static struct cache_entry *
cache_add(struct cache *c, enum cache_kind kind, const char *digest,
    uint64_t size, uint64_t used_ms)
{
	struct cache_entry	*e;
	size_t			 h, dl = strlen(digest);

	if ((e = calloc(1, sizeof(*e) + dl + 1)) == NULL)
		fatal("calloc");
	memcpy(e->digest, digest, dl + 1);
	e->kind = kind;
	e->size = size;
	e->used_ms = used_ms;
	e->touched_ms = used_ms;
	if (c->nentries >= c->nbuckets)
		cache_rehash(c);
	h = cache_hash(kind, digest) & (c->nbuckets - 1);
	e->hnext = c->buckets[h];
	c->buckets[h] = e;
	c->nentries++;
	c->bytes += size;
	return (e);
}

/*
 * Publish a verified file that was just renamed into place: it becomes
 * the most recently used.  A stale entry for the same digest is replaced.
 */
struct cache_entry *
cache_insert(struct cache *c, enum cache_kind kind, const char *digest,
    uint64_t size)
{
	struct cache_entry	*e;

	if ((e = cache_lookup(c, kind, digest)) != NULL) {
		cache_mem_drop(c, e);	/* its type line may change */
		c->bytes -= e->size;
		if (e->refs > 0)
			c->pinned = c->pinned - e->size + size;
		e->size = size;
		c->bytes += size;
		cache_touch(c, e);
		cache_evict_soon(c);
		return (e);
	}
	e = cache_add(c, kind, digest, size, now_ms());
	e->touched_ms = e->used_ms;	/* the rename set the mtime */
	TAILQ_INSERT_TAIL(&c->lru, e, lru);
	cache_evict_soon(c);
	return (e);
}

static void
cache_unlink_entry(struct cache *c, struct cache_entry *e)
{
	struct cache_entry	**pp;

	pp = &c->buckets[cache_hash(e->kind, e->digest) & (c->nbuckets - 1)];
	while (*pp != NULL && *pp != e)
		pp = &(*pp)->hnext;
	if (*pp == e)
		*pp = e->hnext;
	TAILQ_REMOVE(&c->lru, e, lru);
	c->nentries--;
	c->bytes -= e->size;
}

/* Drop an entry and its file (found damaged, or evicted).  No reader may
 * hold it. */
void
cache_remove(struct cache *c, struct cache_entry *e)
{
	char	path[PATH_MAX];

	if (cache_path(c, e->kind, e->digest, path, sizeof(path)) == 0) {
		if (unlink(path) == 0)
			cache_shared_add(-(int64_t)e->size);
		else if (errno != ENOENT)
			log_warn("- cache unlink_failed path=%s error=\"%s\"",
			    path, strerror(errno));
	}
	cache_mem_drop(c, e);
	cache_unlink_entry(c, e);
	free(e);
}

/* A hit: most recently used now; the file's mtime keeps that across a
 * restart (refreshed at most once a minute). */
void
cache_touch(struct cache *c, struct cache_entry *e)
{
	char	path[PATH_MAX];
	uint64_t now = now_ms();

	e->used_ms = now;
	TAILQ_REMOVE(&c->lru, e, lru);
	TAILQ_INSERT_TAIL(&c->lru, e, lru);
	if (now - e->touched_ms < CACHE_TOUCH_MS)
		return;
	e->touched_ms = now;
	if (cache_path(c, e->kind, e->digest, path, sizeof(path)) == 0)
		(void)utimensat(AT_FDCWD, path, NULL, 0);
}

/*
 * Workers (master.c) evict against one total: the bytes of every
 * published file, in memory the master mapped shared before forking.
 * The worker that publishes a file adds its size, the one whose
 * unlink(2) removes it takes it off (another that finds it gone takes
 * nothing); the first worker to open the cache sets it from its scan.
 * Each worker then evicts from its own index (its scan, its fills, what
 * it adopted), least recently used first, while the total is over
 * max_bytes: together they keep the directory within it.  A count that
 * drifts (a file published twice in a race) only errs high, toward
 * evicting early.
 */
struct cache_shared {
	_Atomic uint64_t	bytes;
	_Atomic int		set;
	_Atomic uint64_t	gen;	/* files published or removed */
};
static struct cache_shared	*cache_shared;
static uint64_t			 cache_gen_local;

/* The master, before forking: the shared total.  Returns 0, or -1. */
int
cache_shared_map(void)
{
	void	*p;

	p = mmap(NULL, sizeof(*cache_shared), PROT_READ | PROT_WRITE,
	    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return (-1);
	cache_shared = p;
	return (0);
}

void
cache_shared_add(int64_t n)
{
	cache_gen_local++;
	if (cache_shared != NULL && config_worker >= 0) {
		atomic_fetch_add(&cache_shared->bytes, (uint64_t)n);
		atomic_fetch_add(&cache_shared->gen, 1);
	}
}

/*
 * Moves on whenever a file is published into the store or removed from
 * it, by this process or (workers) any other: cache_shared_add() is
 * called for each.  A cache_mem copy read at another count is not used.
 */
uint64_t
cache_gen(void)
{
	if (cache_shared != NULL && config_worker >= 0)
		return (atomic_load(&cache_shared->gen));
	return (cache_gen_local);
}

void
cache_mem_unref(struct cache *c, struct cache_mem *m)
{
	if (m == NULL || --m->refs > 0)
		return;
	c->mem_bytes -= sizeof(*m) + m->len;
	free(m);
}

/* The entry lets go of its copy (readers holding it keep theirs). */
void
cache_mem_drop(struct cache *c, struct cache_entry *e)
{
	struct cache_mem	*m = e->mem;

	e->mem = NULL;
	cache_mem_unref(c, m);
}

/* Room for need more bytes of copies: the least recently used let go,
 * at most CACHE_MEM_SCAN entries looked at. */
#define CACHE_MEM_SCAN	64
static int
cache_mem_room(struct cache *c, size_t need)
{
	struct cache_entry	*e, *next;
	int			 n = 0;

	for (e = TAILQ_FIRST(&c->lru); e != NULL && n < CACHE_MEM_SCAN &&
	    c->mem_bytes + need > c->mem_max; e = next, n++) {
		next = TAILQ_NEXT(e, lru);
		cache_mem_drop(c, e);
	}
	return (c->mem_bytes + need <= c->mem_max ? 0 : -1);
}

/*
 * Keep a copy of entry e's body (fd from off, e->size - off bytes; its
 * type line already read as ctype and up) when cache.memory_bytes has
 * room.  gen is cache_gen() from before fd was opened, so that a change
 * made meanwhile makes the copy unused.  Returns the copy (held by the entry) or NULL: then serve from
 * fd as before.
 */
struct cache_mem *
cache_mem_keep(struct cache *c, struct cache_entry *e, int fd, size_t off,
    const char *ctype, const char *up, uint64_t gen)
{
	struct cache_mem	*m;
	size_t			 len, got = 0;
	ssize_t			 r;

	if (e->size < off || c->mem_max == 0)
		return (NULL);
	len = e->size - off;
	if (len > c->mem_max || cache_mem_room(c, sizeof(*m) + len) == -1)
		return (NULL);
	if ((m = calloc(1, sizeof(*m) + len)) == NULL)
		return (NULL);		/* served from the file */
	while (got < len) {
		r = pread(fd, m->data + got, len - got, (off_t)(off + got));
		if (r <= 0) {
			free(m);
			return (NULL);
		}
		got += (size_t)r;
	}
	m->refs = 1;
	m->gen = gen;
	m->len = len;
	snprintf(m->ctype, sizeof(m->ctype), "%s", ctype);
	snprintf(m->up, sizeof(m->up), "%s", up);
	cache_mem_drop(c, e);
	e->mem = m;
	c->mem_bytes += sizeof(*m) + len;
	return (m);
}

/* The bytes that count against max_bytes. */
uint64_t
cache_used(const struct cache *c)
{
	uint64_t	n;

	if (cache_shared == NULL || config_worker < 0)
		return (c->bytes);
	n = atomic_load(&cache_shared->bytes);
	/* Below zero after a drift: never less than this index holds. */
	return ((int64_t)n < (int64_t)c->bytes ? c->bytes : n);
}

static void
cache_evict_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct cache		*c = arg;
	struct cache_entry	*e, *next;
	int			 n = 0;

	for (e = TAILQ_FIRST(&c->lru); e != NULL &&
	    cache_used(c) + c->filling > c->max_bytes; e = next) {
		next = TAILQ_NEXT(e, lru);
		if (e->refs > 0)
			continue;	/* being read: never evicted */
		log_debug("- cache evict digest=%s bytes=%llu", e->digest,
		    (unsigned long long)e->size);
		cache_remove(c, e);
		c->evicted++;
		if (++n == CACHE_EVICT_PER_TURN) {
			/* Bounded per turn: come back after other events. */
			cache_evict_soon(c);
			break;
		}
	}
	if (n > 0)
		log_info("- cache evicted entries=%d bytes=%llu max=%llu "
		    "filling=%llu reserved=%llu", n,
		    (unsigned long long)c->bytes,
		    (unsigned long long)c->max_bytes,
		    (unsigned long long)c->filling,
		    (unsigned long long)c->reserved);
}

/*
 * Bytes of the entries that readers hold open: eviction skips them, so
 * admission (cache_fill.c) counts them as taken.  Kept as a sum by
 * cache_pin() and cache_unpin(), so a fill head does not walk the index.
 */
uint64_t
cache_pinned_bytes(struct cache *c)
{
	return (c->pinned);
}

/* A reader holds the entry open: eviction must not take it. */
void
cache_pin(struct cache *c, struct cache_entry *e)
{
	if (e->refs++ == 0)
		c->pinned += e->size;
}

/* A reader let go of the entry. */
void
cache_unpin(struct cache *c, struct cache_entry *e)
{
	if (--e->refs == 0)
		c->pinned -= e->size;
}

/* Schedule an eviction pass when the store is above its cap. */
void
cache_evict_soon(struct cache *c)
{
	struct timeval	tv = { 0, 0 };

	if (cache_used(c) + c->filling > c->max_bytes &&
	    !evtimer_pending(c->ev_evict, NULL))
		evtimer_add(c->ev_evict, &tv);
}

/* A new temp file under tmp/; its path in buf.  Returns the fd or -1. */
int
cache_tmp_open(struct cache *c, char *buf, size_t len)
{
	int	n, fd;

	n = snprintf(buf, len, "%s/tmp/fill.%llu.XXXXXX", c->dir,
	    (unsigned long long)++c->seq);
	if (n < 0 || (size_t)n >= len)
		return (-1);
	if ((fd = mkostemp(buf, O_CLOEXEC)) == -1)
		return (-1);
	return (fd);
}

/*
 * Read the type line at the start of a stored manifest: "<type>\n" for a
 * manifest whose own mediaType field says its type (the same for every
 * upstream), "<type>\t<upstream>\n" for one without, whose type is what
 * that upstream said.  The type goes into buf, the upstream's name (""
 * for the first form) into up when not NULL, the body's offset into
 * *off.  Returns 0, or -1 when the file is not a stored manifest.
 */
int
cache_manifest_type(int fd, char *buf, size_t len, char *up, size_t uplen,
    size_t *off)
{
	char	 line[512], *nl, *tab;
	ssize_t	 n;

	if ((n = pread(fd, line, sizeof(line) - 1, 0)) <= 0)
		return (-1);
	line[n] = '\0';
	if ((nl = memchr(line, '\n', n)) == NULL)
		return (-1);
	*nl = '\0';
	if ((tab = strchr(line, '\t')) != NULL) {
		*tab++ = '\0';
		if (*tab == '\0' || strlen(tab) >= CACHE_UPSTREAM_MAX)
			return (-1);
	}
	if (!cache_valid_media_type(line) || strlen(line) >= len)
		return (-1);
	snprintf(buf, len, "%s", line);
	if (up != NULL)
		snprintf(up, uplen, "%s", tab != NULL ? tab : "");
	*off = (size_t)(nl - line) + 1;
	return (0);
}

/* mkdir -p.  Returns 0, or -1 with errno. */
int
cache_mkdirs(const char *path)
{
	char	tmp[PATH_MAX], *p;

	if (snprintf(tmp, sizeof(tmp), "%s", path) >= (int)sizeof(tmp))
		return (-1);
	for (p = tmp + 1; *p != '\0'; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(tmp, 0750) == -1 && errno != EEXIST)
			return (-1);
		*p = '/';
	}
	if (mkdir(tmp, 0750) == -1 && errno != EEXIST)
		return (-1);
	return (0);
}

/*
 * Open the directory name (relative to dfd, or a path with AT_FDCWD)
 * without following a symbolic link: what is then removed or read under it
 * stays inside the cache.  NULL with errno set.
 */
DIR *
cache_opendir_at(int dfd, const char *name)
{
	DIR	*d;
	int	 fd, e;

	if ((fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
	    O_CLOEXEC)) == -1)
		return (NULL);
	if ((d = fdopendir(fd)) == NULL) {
		e = errno;
		close(fd);
		errno = e;
	}
	return (d);
}

/*
 * Unlink the files of one directory; how many, or -1 when unreadable.
 * The directory itself must not be a symbolic link: emptying one would
 * delete whatever it points at (errno ELOOP or ENOTDIR then).
 */
static int
cache_empty_dir(const char *dir)
{
	DIR		*d;
	struct dirent	*de;
	int		 n = 0;

	if ((d = cache_opendir_at(AT_FDCWD, dir)) == NULL)
		return (-1);
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		if (unlinkat(dirfd(d), de->d_name, 0) == 0)
			n++;
	}
	closedir(d);
	return (n);
}

/* --- start-up --- */

struct cache_scan {
	enum cache_kind	 kind;
	uint64_t	 size;
	uint64_t	 mtime_ms;
	char		 digest[CACHE_DIGEST_MAX];
};

struct cache_scanv {
	struct cache_scan	*v;
	size_t			 n;
	size_t			 cap;
};

static int
cache_scan_cmp(const void *a, const void *b)
{
	const struct cache_scan	*x = a, *y = b;

	if (x->mtime_ms != y->mtime_ms)
		return (x->mtime_ms < y->mtime_ms ? -1 : 1);
	return (0);
}

/* Empty tmp/: whatever is there is an unfinished fill or tag write. */
static int
cache_clean_tmp(struct cache *c)
{
	char		 dir[PATH_MAX];
	int		 n;

	snprintf(dir, sizeof(dir), "%s/tmp", c->dir);
	if ((n = cache_empty_dir(dir)) == -1)
		return (-1);
	if (n > 0)
		log_info("- cache removed_temp_files n=%d", n);
	return (0);
}

/* Collect the published files of one kind and algorithm. */
static void
cache_scan_alg(struct cache *c, enum cache_kind kind, enum cache_alg alg,
    struct cache_scanv *sv)
{
	char		 dir[PATH_MAX], sub[PATH_MAX + 8];
	char		 path[PATH_MAX * 2];
	char		 digest[CACHE_DIGEST_MAX], ctype[256];
	const char	*hex;
	DIR		*d, *sd;
	struct dirent	*de, *fe;
	struct stat	 st;
	size_t		 off;
	int		 fd, bad;

	snprintf(dir, sizeof(dir), "%s/%s/%s", c->dir, cache_kind_dir[kind],
	    cache_alg_name(alg));
	if ((d = opendir(dir)) == NULL)
		return;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.' || strlen(de->d_name) != 2)
			continue;
		snprintf(sub, sizeof(sub), "%s/%.2s", dir, de->d_name);
		if ((sd = opendir(sub)) == NULL)
			continue;
		while ((fe = readdir(sd)) != NULL) {
			if (fe->d_name[0] == '.')
				continue;
			snprintf(path, sizeof(path), "%s/%s", sub, fe->d_name);
			snprintf(digest, sizeof(digest), "%s:%.128s",
			    cache_alg_name(alg), fe->d_name);
			bad = strlen(fe->d_name) > 128 ||
			    cache_digest_alg(digest, &hex) != alg ||
			    strncmp(hex, de->d_name, 2) != 0 ||
			    stat(path, &st) == -1 || !S_ISREG(st.st_mode);
			if (!bad && kind == CACHE_MANIFEST) {
				if ((fd = open(path, O_RDONLY | O_CLOEXEC)) ==
				    -1 || cache_manifest_type(fd, ctype,
				    sizeof(ctype), NULL, 0, &off) == -1)
					bad = 1;
				if (fd != -1)
					close(fd);
			}
			if (bad) {
				log_warn("- cache foreign_file path=%s: "
				    "removed", path);
				unlink(path);
				continue;
			}
			if (sv->n == sv->cap) {
				sv->cap = sv->cap ? sv->cap * 2 : 1024;
				sv->v = reallocarray(sv->v, sv->cap,
				    sizeof(*sv->v));
				if (sv->v == NULL)
					fatal("reallocarray");
			}
			sv->v[sv->n].kind = kind;
			sv->v[sv->n].size = (uint64_t)st.st_size;
			sv->v[sv->n].mtime_ms = (uint64_t)st.st_mtim.tv_sec *
			    1000 + (uint64_t)st.st_mtim.tv_nsec / 1000000;
			snprintf(sv->v[sv->n].digest,
			    sizeof(sv->v[sv->n].digest), "%s", digest);
			sv->n++;
		}
		closedir(sd);
	}
	closedir(d);
}

/*
 * Open the cache directory: take its lock, empty tmp/, and rebuild the
 * index from the published files.  NULL with *cause on failure.
 */
struct cache *
cache_open(struct pc_ctx *ctx, const struct config *conf, char **cause)
{
	static const char	*subdirs[] = { "tmp", "tags", "blobs/sha256",
	    "blobs/sha512", "manifests/sha256", "manifests/sha512" };
	struct cache		*c;
	struct cache_scanv	 sv = { NULL, 0, 0 };
	struct cache_entry	*e;
	char			 path[PATH_MAX];
	size_t			 i;
	int			 k, a;

	if ((c = calloc(1, sizeof(*c))) == NULL)
		fatal("calloc");
	c->ctx = ctx;
	c->lock_fd = -1;
	if ((c->dir = strdup(conf->cache->dir)) == NULL)
		fatal("strdup");
	c->max_bytes = conf->cache->max_bytes;
	c->mem_max = conf->cache->memory_bytes;
	c->max_fills = conf->cache->max_fills;
	c->max_fills_per_client = conf->cache->max_fills_per_client;
	c->fill_max_bytes = (uint64_t)(conf->cache->fill_max_fraction *
	    (double)c->max_bytes);
	c->fill_finish_fraction = conf->cache->fill_finish_fraction;
	c->nbuckets = 1024;
	if ((c->buckets = calloc(c->nbuckets, sizeof(*c->buckets))) == NULL)
		fatal("calloc");
	TAILQ_INIT(&c->lru);
	TAILQ_INIT(&c->fills);
	TAILQ_INIT(&c->confirms);
	for (i = 0; i < sizeof(subdirs) / sizeof(subdirs[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", c->dir, subdirs[i]);
		if (cache_mkdirs(path) == -1)
			goto fail;
	}
	snprintf(path, sizeof(path), "%s/lock", c->dir);
	/* A worker: the master holds the lock and emptied tmp/. */
	if (config_worker >= 0)
		goto locked;
	if ((c->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0640)) ==
	    -1)
		goto fail;
	if (flock(c->lock_fd, LOCK_EX | LOCK_NB) == -1) {
		if (asprintf(cause, "/cache/dir: %s is in use by another "
		    "gateway", c->dir) == -1)
			*cause = NULL;
		cache_close(c);
		return (NULL);
	}
	snprintf(path, sizeof(path), "%s/tmp", c->dir);
	if (cache_clean_tmp(c) == -1)
		goto fail;
locked:
	for (k = CACHE_BLOB; k <= CACHE_MANIFEST; k++)
		for (a = CACHE_ALG_SHA256; a <= CACHE_ALG_SHA512; a++)
			cache_scan_alg(c, k, a, &sv);
	if (sv.n > 0)
		qsort(sv.v, sv.n, sizeof(*sv.v), cache_scan_cmp);
	for (i = 0; i < sv.n; i++) {
		/* Oldest first; the first hit refreshes the mtime. */
		e = cache_add(c, sv.v[i].kind, sv.v[i].digest, sv.v[i].size,
		    0);
		TAILQ_INSERT_TAIL(&c->lru, e, lru);
	}
	free(sv.v);
	if (cache_shared != NULL && config_worker >= 0 &&
	    atomic_exchange(&cache_shared->set, 1) == 0)
		atomic_store(&cache_shared->bytes, c->bytes);
	c->tags = cache_tags_open(c, conf->cache);
	c->links = cache_links_open(c, conf->cache);
	c->ev_evict = evtimer_new(ctx->base, cache_evict_cb, c);
	if ((c->pool = cache_fill_pool_new(ctx,
	    conf->cache->digest_threads)) == NULL) {
		if (asprintf(cause, "/cache/digest_threads: cannot start "
		    "them: %s", strerror(errno)) == -1)
			*cause = NULL;
		cache_close(c);
		return (NULL);
	}
	log_info("- cache open dir=%s entries=%zu bytes=%llu max=%llu "
	    "digest_threads=%zu max_fills=%zu", c->dir, c->nentries,
	    (unsigned long long)c->bytes, (unsigned long long)c->max_bytes,
	    conf->cache->digest_threads, c->max_fills);
	cache_evict_soon(c);
	return (c);
fail:
	if (asprintf(cause, "/cache/dir: %s: %s", path, strerror(errno)) ==
	    -1)
		*cause = NULL;
	cache_close(c);
	return (NULL);
}

/* Stop fills, free the index; published files stay.  NULL is fine. */
void
cache_close(struct cache *c)
{
	struct cache_entry	*e;

	if (c == NULL)
		return;
	cache_fill_free_all(c);
	cache_confirm_free_all(c);
	cache_fill_pool_free(c->pool);	/* after the fills */
	while ((e = TAILQ_FIRST(&c->lru)) != NULL) {
		cache_mem_drop(c, e);
		cache_unlink_entry(c, e);
		free(e);
	}
	cache_tags_close(c->tags);
	cache_links_close(c->links);
	if (c->ev_evict != NULL)
		event_free(c->ev_evict);
	if (c->lock_fd != -1)
		close(c->lock_fd);
	free(c->buckets);
	free(c->dir);
	free(c);
}

/*
 * Before the workers fork (master.c): the directory's lock, held by the
 * master for its life (the workers share the directory, another gateway
 * may not), and tmp/ emptied once, since a worker that starts again must
 * not remove the temp files of the fills the others are running.
 */
int
cache_dir_prepare(const struct config *conf, char **cause)
{
	struct cache	c;
	char		path[PATH_MAX];
	int		fd;

	if (conf->cache == NULL)
		return (-2);
	memset(&c, 0, sizeof(c));
	c.dir = (char *)conf->cache->dir;
	snprintf(path, sizeof(path), "%s/tmp", c.dir);
	if (cache_mkdirs(path) == -1)
		goto fail;
	snprintf(path, sizeof(path), "%s/lock", c.dir);
	if ((fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0640)) == -1)
		goto fail;
	if (flock(fd, LOCK_EX | LOCK_NB) == -1) {
		close(fd);
		if (asprintf(cause, "/cache/dir: %s is in use by another "
		    "gateway", c.dir) == -1)
			*cause = NULL;
		return (-1);
	}
	if (cache_clean_tmp(&c) == -1) {
		close(fd);
		snprintf(path, sizeof(path), "%s/tmp", c.dir);
		goto fail;
	}
	return (fd);
fail:
	if (asprintf(cause, "/cache/dir: %s: %s", path, strerror(errno)) ==
	    -1)
		*cause = NULL;
	return (-1);
}

/*
 * Workers (master.c) share the directory but each has its own index: on
 * a miss in memory, a file another worker published under the digest's
 * name is taken into this index (and the links the others recorded are
 * read, cache_links_sync).  Only published files have that name: they
 * were verified before the rename.  NULL when there is none, or when
 * this process is the only one.
 */
struct cache_entry *
cache_adopt(struct cache *c, enum cache_kind kind, const char *digest)
{
	struct stat	st;
	char		path[PATH_MAX];

	if (config_worker < 0 || cache_path(c, kind, digest, path,
	    sizeof(path)) == -1 || stat(path, &st) == -1 ||
	    !S_ISREG(st.st_mode))
		return (NULL);
	cache_links_sync(c);
	log_debug("- cache adopt digest=%s bytes=%llu", digest,
	    (unsigned long long)st.st_size);
	return (cache_insert(c, kind, digest, (uint64_t)st.st_size));
}

static int
cache_peer_path(struct cache *c, enum cache_kind kind, const char *digest,
    char *buf, size_t len)
{
	int	n;

	n = snprintf(buf, len, "%s/tmp/fill-%s-%s.lock", c->dir,
	    cache_kind_dir[kind], digest);
	return (n < 0 || (size_t)n >= len ? -1 : 0);
}

/*
 * Workers: one fill of a digest across the processes.  The fill takes
 * an exclusive flock(2) on tmp/fill-<kind>-<digest>.lock; a worker that
 * finds it held waits for the file to be published (cache_serve.c polls)
 * instead of fetching too.  The kernel drops the lock with the process,
 * so a worker killed in the middle of a fill hands it to a waiter.  The
 * winner removes the file while it holds the lock, and a worker that got
 * the lock checks that it is still the file at the path (else it locked
 * a removed one and tries again).  Returns the fd to keep while filling;
 * -1 when another worker holds it; -2 when there is no lock to take
 * (the only process, or an error: then fill as a single process does).
 */
int
cache_peer_lock(struct cache *c, enum cache_kind kind, const char *digest)
{
	struct stat	a, b;
	char		path[PATH_MAX];
	int		fd, tries;

	if (config_worker < 0 ||
	    cache_peer_path(c, kind, digest, path, sizeof(path)) == -1)
		return (-2);
	for (tries = 0; tries < 3; tries++) {
		if ((fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC |
		    O_NOFOLLOW, 0600)) == -1)
			return (-2);
		if (flock(fd, LOCK_EX | LOCK_NB) == -1) {
			close(fd);
			return (errno == EWOULDBLOCK ? -1 : -2);
		}
		if (fstat(fd, &a) == 0 && stat(path, &b) == 0 &&
		    a.st_ino == b.st_ino && a.st_dev == b.st_dev)
			return (fd);
		close(fd);
	}
	return (-2);
}

/* The fill is over (published or failed): let the others look. */
void
cache_peer_unlock(struct cache *c, int fd, enum cache_kind kind,
    const char *digest)
{
	char	path[PATH_MAX];

	if (fd < 0)
		return;
	if (cache_peer_path(c, kind, digest, path, sizeof(path)) == 0)
		(void)unlink(path);
	close(fd);
}
