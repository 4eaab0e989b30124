/*
 * cache_tags.c: what the cache knows about tags, and the bounds on it.
 *
 * A tag record says which digest a tag had, for one upstream, repository,
 * tag and normalised Accept set, as a file:
 *
 *	tags/<upstream>/<k1>/<k2>	"<digest> <unix ms>\n"
 *
 * where k1 is the SHA-256 of "<upstream URL>\0<repository>\0<tag>" and k2
 * that of "accept\0<Accept set>".  The URL is in the key because a record
 * is as good as a repository link (cache_links.c): an upstream name that
 * a reload points at another registry starts from no records, and those
 * of the old one are never read again (the bounds below remove them).
 * Files, so that they survive a restart; but every one of them is in an
 * in-memory index, built by the start-up scan and kept by every write,
 * and the index is what bounds them:
 *
 *  - at most cache.tag_variants Accept sets per tag: a new one drops the
 *    tag's least recently used (random Accept sets churn that tag's
 *    variants and no other tag's);
 *  - at most cache.max_tag_records records in all: a new one removes the
 *    least recently used record's file, and its tag's directory when it
 *    was the last one there, so directories stay bounded too.
 *
 * An upstream 404 writes nothing to disk.  It is an entry in memory, one
 * of at most cache.negative_entries, answered for cache.negative_ttl;
 * when the table is full the oldest entry is replaced.  Negative entries
 * share a tag's variants with its records, since a registry may answer
 * 404 to one Accept set and 200 to another (distribution does for an OCI
 * manifest asked for without its media type).
 *
 * Guarantees: a lookup the index cannot answer never touches the disk; a
 * write is one file written whole and renamed (a reader sees the old
 * record or the new one), plus at most one unlink and one rmdir for what
 * it displaces; a push of a tag drops its variants from the index's list
 * instead of reading a directory.  So the work per request is bounded by
 * tag_variants, never by what clients asked before.  Memory: about 80
 * bytes per variant and 120 per tag with any.
 */
#include <sys/stat.h>
#include <sys/types.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "cache.h"

#define TAGS_UPNAME_MAX		32	/* as config.c allows */
#define TAGS_KEY_LEN		32	/* SHA-256 */
#define TAGS_REC_MAX		256	/* bytes of one record file */
#define TAGS_TOUCH_MS		60000
#define TAGS_EXPIRE_PER_PUT	16

/* One tag of one upstream: tags/<up>/<k1>/ and its negative entries. */
struct tag {
	struct tag		*hnext;		/* hash chain */
	TAILQ_HEAD(tag_vars, tag_var) vars;	/* least recently used 1st */
	int			 nvars;
	int			 nrecs;		/* of them, on disk */
	unsigned char		 k1[TAGS_KEY_LEN];
	char			 up[TAGS_UPNAME_MAX + 1];
};

/* One Accept set of a tag: a record on disk, or a negative entry. */
struct tag_var {
	TAILQ_ENTRY(tag_var)	 sib;		/* on tag->vars */
	TAILQ_ENTRY(tag_var)	 lru;		/* on recs or negs */
	struct tag		*tag;
	int			 negative;
	/* Record: when the file's mtime was last set; negative: when the
	 * 404 was learnt.  Both monotonic. */
	uint64_t		 ms;
	unsigned char		 k2[TAGS_KEY_LEN];
};

struct cache_tags {
	struct cache		*cache;
	size_t			 max_recs;
	int			 max_vars;
	size_t			 max_negs;
	struct tag		**buckets;
	size_t			 nbuckets;	/* a power of two */
	size_t			 ntags;
	TAILQ_HEAD(, tag_var)	 recs;		/* least recent first */
	size_t			 nrecs;
	TAILQ_HEAD(, tag_var)	 negs;		/* oldest first */
	size_t			 nnegs;
};

struct tag_key {
	const char		*up;
	unsigned char		 k1[TAGS_KEY_LEN];
	unsigned char		 k2[TAGS_KEY_LEN];
};

/* Wall-clock ms: tag records outlive the process, so not monotonic. */
uint64_t
cache_wall_ms(void)
{
	struct timespec	ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return ((uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000);
}

/* SHA-256 of "a\0b", or of "a\0b\0c" when c is not NULL. */
static void
tags_sha256(const char *a, const char *b, const char *c, unsigned char *out)
{
	unsigned int	 mdlen = 0;
	EVP_MD_CTX	*ctx;

	if ((ctx = EVP_MD_CTX_new()) == NULL)
		fatal("EVP_MD_CTX_new");
	if (EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1 ||
	    EVP_DigestUpdate(ctx, a, strlen(a)) != 1 ||
	    EVP_DigestUpdate(ctx, "", 1) != 1 ||
	    EVP_DigestUpdate(ctx, b, strlen(b)) != 1 ||
	    (c != NULL && (EVP_DigestUpdate(ctx, "", 1) != 1 ||
	    EVP_DigestUpdate(ctx, c, strlen(c)) != 1)) ||
	    EVP_DigestFinal_ex(ctx, out, &mdlen) != 1 ||
	    mdlen != TAGS_KEY_LEN)
		fatalx("sha256 failed");
	EVP_MD_CTX_free(ctx);
}

static void
tags_hex(const unsigned char *k, char *out)
{
	static const char	 xd[] = "0123456789abcdef";
	int			 i;

	for (i = 0; i < TAGS_KEY_LEN; i++) {
		out[2 * i] = xd[k[i] >> 4];
		out[2 * i + 1] = xd[k[i] & 0xf];
	}
	out[2 * TAGS_KEY_LEN] = '\0';
}

/* 64 lowercase hex digits into a key; -1 for anything else. */
static int
tags_unhex(const char *s, unsigned char *k)
{
	int	i, hi, lo;

	if (strlen(s) != 2 * TAGS_KEY_LEN)
		return (-1);
	for (i = 0; i < TAGS_KEY_LEN; i++) {
		hi = s[2 * i];
		lo = s[2 * i + 1];
		hi = hi >= '0' && hi <= '9' ? hi - '0' :
		    hi >= 'a' && hi <= 'f' ? hi - 'a' + 10 : -1;
		lo = lo >= '0' && lo <= '9' ? lo - '0' :
		    lo >= 'a' && lo <= 'f' ? lo - 'a' + 10 : -1;
		if (hi == -1 || lo == -1)
			return (-1);
		k[i] = (unsigned char)(hi << 4 | lo);
	}
	return (0);
}

/* An upstream name as config.c allows it: [a-z0-9-], 1 to 32. */
static int
tags_valid_up(const char *s)
{
	size_t	n;

	for (n = 0; s[n] != '\0'; n++)
		if (!((s[n] >= 'a' && s[n] <= 'z') ||
		    (s[n] >= '0' && s[n] <= '9') || s[n] == '-'))
			return (0);
	return (n > 0 && n <= TAGS_UPNAME_MAX);
}

static int
tags_key(const struct config_upstream *up, const char *name,
    const char *tag, const char *accept, struct tag_key *k)
{
	if (!tags_valid_up(up->name))
		return (-1);
	k->up = up->name;
	/* The URL too: what a registry said about its tags is no word of
	 * another one the name is pointed at by a reload. */
	tags_sha256(up->url, name, tag, k->k1);
	if (accept != NULL)
		tags_sha256("accept", accept, NULL, k->k2);
	return (0);
}

static size_t
tags_hash(const char *up, const unsigned char *k1)
{
	uint64_t	h = 1469598103934665603ULL, x;

	for (; *up != '\0'; up++) {
		h ^= (unsigned char)*up;
		h *= 1099511628211ULL;
	}
	memcpy(&x, k1, sizeof(x));	/* a SHA-256: already uniform */
	return ((size_t)(h ^ x));
}

static int
tags_dir(struct cache_tags *t, const char *up, const unsigned char *k1,
    char *buf, size_t len)
{
	char	hex[2 * TAGS_KEY_LEN + 1];
	int	n;

	tags_hex(k1, hex);
	n = snprintf(buf, len, "%s/tags/%s/%s", t->cache->dir, up, hex);
	return (n < 0 || (size_t)n >= len ? -1 : 0);
}

static int
tags_path(struct cache_tags *t, const struct tag *g,
    const unsigned char *k2, char *buf, size_t len)
{
	char	dir[PATH_MAX], hex[2 * TAGS_KEY_LEN + 1];
	int	n;

	if (tags_dir(t, g->up, g->k1, dir, sizeof(dir)) == -1)
		return (-1);
	tags_hex(k2, hex);
	n = snprintf(buf, len, "%s/%s", dir, hex);
	return (n < 0 || (size_t)n >= len ? -1 : 0);
}

/*
 * Read a record file, name relative to dirfd (or AT_FDCWD): its digest
 * into buf and when it was learnt into *at.  Returns 0, or -1 with errno:
 * EINVAL when it is not a record (negative records, "- <ms>", were
 * written by versions before the table), or why it could not be read.
 */
static int
tags_read_at(int dirfd, const char *name, char *buf, size_t len,
    uint64_t *at)
{
	char			 rec[TAGS_REC_MAX], *sp, *ep;
	const char		*hex;
	unsigned long long	 ms;
	ssize_t			 n;
	int			 fd, serrno;

	if ((fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW |
	    O_NONBLOCK)) == -1)
		return (-1);
	n = read(fd, rec, sizeof(rec) - 1);
	serrno = errno;
	close(fd);
	if (n == -1) {
		errno = serrno;
		return (-1);
	}
	rec[n] = '\0';
	errno = 0;
	if ((sp = strchr(rec, ' ')) != NULL) {
		*sp++ = '\0';
		ms = strtoull(sp, &ep, 10);
	}
	if (sp == NULL || errno != 0 || ep == sp || *ep != '\n' ||
	    ep[1] != '\0' || cache_digest_alg(rec, &hex) == CACHE_ALG_NONE ||
	    strlen(rec) >= len) {
		errno = EINVAL;
		return (-1);
	}
	snprintf(buf, len, "%s", rec);
	*at = ms;
	return (0);
}

static int
tags_read(const char *path, char *buf, size_t len, uint64_t *at)
{
	return (tags_read_at(AT_FDCWD, path, buf, len, at));
}

/*
 * Whether a failed read means the record is gone or not ours.  Anything
 * else (EMFILE, ENFILE, ENOMEM, EIO) says nothing about the file, and a
 * client can cause the first two at will by holding connections open: a
 * record is not removed for it.
 */
static int
tags_read_damaged(int error)
{
	return (error == EINVAL || error == ENOENT || error == ENOTDIR ||
	    error == ELOOP || error == EISDIR || error == ENXIO);
}

/* --- the index --- */

static struct tag *
tags_find(struct cache_tags *t, const char *up, const unsigned char *k1)
{
	struct tag	*g;

	g = t->buckets[tags_hash(up, k1) & (t->nbuckets - 1)];
	for (; g != NULL; g = g->hnext)
		if (memcmp(g->k1, k1, TAGS_KEY_LEN) == 0 &&
		    strcmp(g->up, up) == 0)
			return (g);
	return (NULL);
}

static struct tag_var *
tags_var_find(struct tag *g, const unsigned char *k2)
{
	struct tag_var	*v;

	if (g == NULL)
		return (NULL);
	TAILQ_FOREACH(v, &g->vars, sib)
		if (memcmp(v->k2, k2, TAGS_KEY_LEN) == 0)
			return (v);
	return (NULL);
}

static void
tags_rehash(struct cache_tags *t)
{
	struct tag	**nb, *g, *next;
	size_t		  i, n = t->nbuckets * 2, h;

	if ((nb = calloc(n, sizeof(*nb))) == NULL)
		fatal("calloc");
	for (i = 0; i < t->nbuckets; i++) {
		for (g = t->buckets[i]; g != NULL; g = next) {
			next = g->hnext;
			h = tags_hash(g->up, g->k1) & (n - 1);
			g->hnext = nb[h];
			nb[h] = g;
		}
	}
	free(t->buckets);
	t->buckets = nb;
	t->nbuckets = n;
}

static struct tag *
tags_find_or_add(struct cache_tags *t, const char *up,
    const unsigned char *k1)
{
	struct tag	*g;
	size_t		 h;

	if ((g = tags_find(t, up, k1)) != NULL)
		return (g);
	if ((g = calloc(1, sizeof(*g))) == NULL)
		fatal("calloc");
	TAILQ_INIT(&g->vars);
	memcpy(g->k1, k1, TAGS_KEY_LEN);
	snprintf(g->up, sizeof(g->up), "%s", up);
	if (t->ntags >= t->nbuckets)
		tags_rehash(t);
	h = tags_hash(up, k1) & (t->nbuckets - 1);
	g->hnext = t->buckets[h];
	t->buckets[h] = g;
	t->ntags++;
	return (g);
}

static void
tags_free_tag(struct cache_tags *t, struct tag *g)
{
	struct tag	**pp;

	pp = &t->buckets[tags_hash(g->up, g->k1) & (t->nbuckets - 1)];
	while (*pp != NULL && *pp != g)
		pp = &(*pp)->hnext;
	if (*pp == g)
		*pp = g->hnext;
	t->ntags--;
	free(g);
}

/* Take a record out of the count and remove its file, and the tag's
 * directory with the last one. */
static void
tags_unrecord(struct cache_tags *t, struct tag_var *v)
{
	struct tag	*g = v->tag;
	char		 path[PATH_MAX];

	TAILQ_REMOVE(&t->recs, v, lru);
	t->nrecs--;
	g->nrecs--;
	if (tags_path(t, g, v->k2, path, sizeof(path)) == 0 &&
	    unlink(path) == -1 && errno != ENOENT)
		log_warn("- cache tag_unlink_failed path=%s error=\"%s\"",
		    path, strerror(errno));
	if (g->nrecs == 0 && tags_dir(t, g->up, g->k1, path,
	    sizeof(path)) == 0 && rmdir(path) == -1 && errno != ENOENT)
		log_warn("- cache tag_rmdir_failed path=%s error=\"%s\"",
		    path, strerror(errno));
}

/* Forget one variant (and its file); the tag goes with its last one. */
static void
tags_drop(struct cache_tags *t, struct tag_var *v)
{
	struct tag	*g = v->tag;

	if (v->negative) {
		TAILQ_REMOVE(&t->negs, v, lru);
		t->nnegs--;
	} else
		tags_unrecord(t, v);
	TAILQ_REMOVE(&g->vars, v, sib);
	g->nvars--;
	free(v);
	if (g->nvars == 0)
		tags_free_tag(t, g);
}

/*
 * Make (g, k2) a record or a negative entry, the most recently used, then
 * bring the counts back under their caps.  A record's file must already
 * be in place; a record turned negative loses its file.  The variant
 * returned is never the one the caps drop: it is the newest of each list.
 */
static struct tag_var *
tags_set(struct cache_tags *t, struct tag *g, const unsigned char *k2,
    int negative)
{
	struct tag_var	*v;

	if ((v = tags_var_find(g, k2)) != NULL) {
		TAILQ_REMOVE(&g->vars, v, sib);
		if (v->negative) {
			TAILQ_REMOVE(&t->negs, v, lru);
			t->nnegs--;
		} else if (negative)
			tags_unrecord(t, v);
		else {
			TAILQ_REMOVE(&t->recs, v, lru);
			t->nrecs--;
			g->nrecs--;
		}
	} else {
		if ((v = calloc(1, sizeof(*v))) == NULL)
			fatal("calloc");
		v->tag = g;
		memcpy(v->k2, k2, TAGS_KEY_LEN);
		g->nvars++;
	}
	TAILQ_INSERT_TAIL(&g->vars, v, sib);
	v->negative = negative;
	if (negative) {
		TAILQ_INSERT_TAIL(&t->negs, v, lru);
		t->nnegs++;
	} else {
		TAILQ_INSERT_TAIL(&t->recs, v, lru);
		t->nrecs++;
		g->nrecs++;
	}
	/* v is last everywhere and each list holds at least two when over
	 * its cap (every cap is at least 1), so v itself stays. */
	while (g->nvars > t->max_vars)
		tags_drop(t, TAILQ_FIRST(&g->vars));
	while (t->nrecs > t->max_recs)
		tags_drop(t, TAILQ_FIRST(&t->recs));
	while (t->nnegs > t->max_negs)
		tags_drop(t, TAILQ_FIRST(&t->negs));
	return (v);
}

/* --- the interface --- */

/*
 * Workers (master.c) share tags/ but each has its own index: a record
 * another worker wrote is taken into this index when asked for (the
 * file is read as usual after).  Returns 0 when one was taken in.
 */
static int
tags_adopt(struct cache_tags *t, const struct tag_key *k)
{
	struct stat	 st;
	struct tag	*g;
	char		 dir[PATH_MAX], path[PATH_MAX];
	char		 hex[2 * TAGS_KEY_LEN + 1];
	int		 n;

	if (config_worker < 0 ||
	    tags_dir(t, k->up, k->k1, dir, sizeof(dir)) == -1)
		return (-1);
	tags_hex(k->k2, hex);
	n = snprintf(path, sizeof(path), "%s/%s", dir, hex);
	if (n < 0 || n >= (int)sizeof(path) || stat(path, &st) == -1 ||
	    !S_ISREG(st.st_mode))
		return (-1);
	g = tags_find_or_add(t, k->up, k->k1);
	if (tags_var_find(g, k->k2) == NULL)
		(void)tags_set(t, g, k->k2, 0);
	return (0);
}

/*
 * Workers: a push through one of them removes the records of the tag
 * whoever wrote them (the others find the file gone at their next read
 * and ask the upstream).  Bounded: a tag's directory holds at most
 * cache.tag_variants records per worker.
 */
static void
tags_unlink_all(struct cache_tags *t, const struct tag_key *k)
{
	struct dirent	*de;
	DIR		*d;
	char		 dir[PATH_MAX];
	int		 n = 0;

	if (config_worker < 0 ||
	    tags_dir(t, k->up, k->k1, dir, sizeof(dir)) == -1 ||
	    (d = opendir(dir)) == NULL)
		return;
	while ((de = readdir(d)) != NULL && n++ < 4096)
		if (de->d_name[0] != '.')
			(void)unlinkat(dirfd(d), de->d_name, 0);
	closedir(d);
	(void)rmdir(dir);
}

/*
 * The tag record for (upstream, repository, tag, Accept set): the digest
 * into buf and when it was learnt (wall-clock ms) into *at; the record
 * becomes the most recently used.  Returns 0, or -1 when there is none.
 */
int
cache_tag_get(struct cache *c, const struct config_upstream *up,
    const char *name, const char *tag, const char *accept, char *buf,
    size_t len, uint64_t *at)
{
	struct cache_tags	*t = c->tags;
	struct tag_key		 k;
	struct tag		*g;
	struct tag_var		*v;
	char			 path[PATH_MAX];
	uint64_t		 now;

	if (tags_key(up, name, tag, accept, &k) == -1)
		return (-1);
	if (((g = tags_find(t, k.up, k.k1)) == NULL ||
	    tags_var_find(g, k.k2) == NULL) && tags_adopt(t, &k) == 0)
		g = tags_find(t, k.up, k.k1);
	if (g == NULL ||
	    (v = tags_var_find(g, k.k2)) == NULL || v->negative ||
	    tags_path(t, g, v->k2, path, sizeof(path)) == -1)
		return (-1);
	if (tags_read(path, buf, len, at) == -1) {
		if (!tags_read_damaged(errno)) {
			log_debug("- cache tag_record_unreadable path=%s "
			    "error=\"%s\"", path, strerror(errno));
			return (-1);
		}
		log_warn("- cache tag_record_damaged path=%s: removed", path);
		tags_drop(t, v);
		return (-1);
	}
	/* Learnt in the future: written while the clock was ahead, or not
	 * by us.  As old as can be, so it is revalidated (and still there
	 * to serve stale), not fresh until the clock catches up. */
	if (*at > cache_wall_ms() + TAGS_TOUCH_MS)
		*at = 0;
	TAILQ_REMOVE(&g->vars, v, sib);
	TAILQ_INSERT_TAIL(&g->vars, v, sib);
	TAILQ_REMOVE(&t->recs, v, lru);
	TAILQ_INSERT_TAIL(&t->recs, v, lru);
	/* The mtime keeps the order across a restart; a minute is close
	 * enough and spares a write per hit. */
	now = now_ms();
	if (v->ms == 0 || now - v->ms >= TAGS_TOUCH_MS) {
		v->ms = now;
		(void)utimensat(AT_FDCWD, path, NULL, 0);
	}
	return (0);
}

/* Record a tag's digest for an Accept set (replacing a negative entry). */
void
cache_tag_put(struct cache *c, const struct config_upstream *up,
    const char *name, const char *tag, const char *accept,
    const char *digest)
{
	struct cache_tags	*t = c->tags;
	struct tag_key		 k;
	struct tag		*g;
	struct tag_var		*v;
	char			 path[PATH_MAX], dir[PATH_MAX];
	char			 tmp[PATH_MAX], rec[TAGS_REC_MAX];
	char			 hex[2 * TAGS_KEY_LEN + 1];
	int			 fd, n;

	if (tags_key(up, name, tag, accept, &k) == -1 ||
	    tags_dir(t, k.up, k.k1, dir, sizeof(dir)) == -1)
		return;
	tags_hex(k.k2, hex);
	n = snprintf(path, sizeof(path), "%s/%s", dir, hex);
	if (n < 0 || n >= (int)sizeof(path))
		return;
	n = snprintf(rec, sizeof(rec), "%s %llu\n", digest,
	    (unsigned long long)cache_wall_ms());
	if (n < 0 || n >= (int)sizeof(rec))
		return;
	if (cache_mkdirs(dir) == -1 ||
	    (fd = cache_tmp_open(c, tmp, sizeof(tmp))) == -1) {
		log_warn("- cache tag_write_failed error=\"%s\"",
		    strerror(errno));
		return;
	}
	/* Written whole, then renamed: a reader sees old or new. */
	if (write(fd, rec, n) != n || close(fd) == -1 ||
	    rename(tmp, path) == -1) {
		log_warn("- cache tag_write_failed error=\"%s\"",
		    strerror(errno));
		unlink(tmp);
		return;
	}
	g = tags_find_or_add(t, k.up, k.k1);
	v = tags_set(t, g, k.k2, 0);
	v->ms = now_ms();	/* the rename set the mtime */
}

/*
 * The upstream does not know the tag (404) for this Accept set: answer so
 * for ttl_ms without asking it again.  Only in memory; a record of the
 * same Accept set goes.
 */
void
cache_tag_put_unknown(struct cache *c, const struct config_upstream *up,
    const char *name, const char *tag, const char *accept, int ttl_ms)
{
	struct cache_tags	*t = c->tags;
	struct tag_key		 k;
	struct tag		*g;
	struct tag_var		*v;
	uint64_t		 now = now_ms();
	int			 n;

	if (tags_key(up, name, tag, accept, &k) == -1)
		return;
	/* Expired entries make room first, a few at a time. */
	for (n = 0; n < TAGS_EXPIRE_PER_PUT &&
	    (v = TAILQ_FIRST(&t->negs)) != NULL &&
	    now - v->ms >= (uint64_t)ttl_ms; n++)
		tags_drop(t, v);
	g = tags_find(t, k.up, k.k1);
	if (t->max_negs == 0 || ttl_ms <= 0) {
		/* Nothing to remember, but the record is wrong now. */
		if ((v = tags_var_find(g, k.k2)) != NULL)
			tags_drop(t, v);
		return;
	}
	if (g == NULL)
		g = tags_find_or_add(t, k.up, k.k1);
	v = tags_set(t, g, k.k2, 1);
	v->ms = now;
}

/* Whether the upstream answered 404 for this Accept set less than ttl_ms
 * ago. */
int
cache_tag_is_unknown(struct cache *c, const struct config_upstream *up,
    const char *name, const char *tag, const char *accept, int ttl_ms)
{
	struct cache_tags	*t = c->tags;
	struct tag_key		 k;
	struct tag_var		*v;

	if (tags_key(up, name, tag, accept, &k) == -1 ||
	    (v = tags_var_find(tags_find(t, k.up, k.k1), k.k2)) == NULL ||
	    !v->negative)
		return (0);
	if (ttl_ms <= 0 || now_ms() - v->ms >= (uint64_t)ttl_ms) {
		tags_drop(t, v);	/* expired */
		return (0);
	}
	return (1);
}

/*
 * The digests the tag has under any Accept set (at most max, into out),
 * most recently used first, for serving stale to a client whose own
 * Accept set has no record.  Returns how many.
 */
int
cache_tag_all(struct cache *c, const struct config_upstream *up,
    const char *name, const char *tag, char (*out)[CACHE_DIGEST_MAX],
    int max)
{
	struct cache_tags	*t = c->tags;
	struct tag_key		 k;
	struct tag		*g;
	struct tag_var		*v;
	char			 path[PATH_MAX];
	uint64_t		 at;
	int			 n = 0;

	if (tags_key(up, name, tag, NULL, &k) == -1 ||
	    (g = tags_find(t, k.up, k.k1)) == NULL)
		return (0);
	TAILQ_FOREACH_REVERSE(v, &g->vars, tag_vars, sib) {
		if (n == max)
			break;
		if (v->negative ||
		    tags_path(t, g, v->k2, path, sizeof(path)) == -1 ||
		    tags_read(path, out[n], CACHE_DIGEST_MAX, &at) == -1)
			continue;
		n++;
	}
	return (n);
}

/* A push or delete of the tag: forget what every Accept set learnt. */
void
cache_invalidate_tag(struct req *req)
{
	if (req->up == NULL || req->route.ref_digest)
		return;
	cache_invalidate_tag_name(req->c->ctx, req->up, req->upname,
	    req->route.ref);
}

/*
 * As cache_invalidate_tag(), for a tag the gateway wrote itself (a
 * subject's referrers tag, referrers.c): drop its records.
 */
void
cache_invalidate_tag_name(struct pc_ctx *ctx,
    const struct config_upstream *up, const char *upname, const char *tag)
{
	struct cache	*c = ctx->cache;
	struct tag_key	 k;
	struct tag	*g;
	int		 n, i;

	if (c == NULL || tags_key(up, upname, tag, NULL, &k) == -1)
		return;
	tags_unlink_all(c->tags, &k);	/* workers: the others' records */
	if ((g = tags_find(c->tags, k.up, k.k1)) == NULL)
		return;
	/* At most tag_variants; the last drop frees g. */
	n = g->nvars;
	for (i = 0; i < n; i++)
		tags_drop(c->tags, TAILQ_FIRST(&g->vars));
	log_debug("- cache tag_invalidated tag=%s variants=%d", tag, n);
}

/* --- start-up --- */

struct tags_scan {
	char		 up[TAGS_UPNAME_MAX + 1];
	unsigned char	 k1[TAGS_KEY_LEN];
	unsigned char	 k2[TAGS_KEY_LEN];
	uint64_t	 mtime_ms;
};

struct tags_scanv {
	struct cache_tags	*t;
	struct tags_scan	*v;
	size_t			 n;
	size_t			 cap;
	size_t			 max;		/* entries held before a trim */
	size_t			 found;
	int			 removed;
	int			 foreign;
};

static int
tags_scan_cmp(const void *a, const void *b)
{
	const struct tags_scan	*x = a, *y = b;

	if (x->mtime_ms != y->mtime_ms)
		return (x->mtime_ms < y->mtime_ms ? -1 : 1);
	return (0);
}

/*
 * The scan holds at most twice max_tag_records entries, whatever the disk
 * holds (files of an older version, a lowered cap): past that, the oldest
 * above the cap are removed at once and forgotten.  The variant cap then
 * applies to the newest max_tag_records only, which can keep fewer than
 * a scan of everything would; only a disk over twice the cap sees it.
 */
static void
tags_scan_trim(struct tags_scanv *sv)
{
	char	path[PATH_MAX], h1[2 * TAGS_KEY_LEN + 1];
	char	h2[2 * TAGS_KEY_LEN + 1];
	size_t	i, drop;
	int	n;

	qsort(sv->v, sv->n, sizeof(*sv->v), tags_scan_cmp);
	drop = sv->n - sv->t->max_recs;
	for (i = 0; i < drop; i++) {
		tags_hex(sv->v[i].k1, h1);
		tags_hex(sv->v[i].k2, h2);
		n = snprintf(path, sizeof(path), "%s/tags/%s/%s/%s",
		    sv->t->cache->dir, sv->v[i].up, h1, h2);
		if (n < 0 || (size_t)n >= sizeof(path) || unlink(path) == -1)
			continue;
		sv->removed++;
		/* The tag's directory with its last record, as at run time. */
		*strrchr(path, '/') = '\0';
		(void)rmdir(path);
	}
	memmove(sv->v, sv->v + drop, (sv->n - drop) * sizeof(*sv->v));
	sv->n -= drop;
}

#define TAGS_FOREIGN_LOGGED	16

/*
 * Log a file under tags/ that is not ours, left alone: its name is
 * whatever was put there, so bytes that could end or forge a log line
 * are shown as '?', and only the first few are named.
 */
static void
tags_foreign(struct tags_scanv *sv, const char *a, const char *b)
{
	char	 name[2 * (TAGS_UPNAME_MAX + 1) + NAME_MAX + 2], *p;

	if (sv->foreign++ >= TAGS_FOREIGN_LOGGED)
		return;
	snprintf(name, sizeof(name), "%s%s%s", a, b != NULL ? "/" : "",
	    b != NULL ? b : "");
	for (p = name; *p != '\0'; p++)
		if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f ||
		    *p == '"' || *p == '\\')
			*p = '?';
	log_warn("- cache foreign_file name=\"tags/%s\": left alone", name);
}

/*
 * The records of one tag directory, k1name in the upstream's directory
 * updfd; the directory goes when none is left.  Everything is relative
 * to a directory opened without following a symbolic link: junk is
 * removed here, and a link must not lead that out of the cache.
 */
static void
tags_scan_tag(int updfd, const char *k1name, const char *up,
    const unsigned char *k1, struct tags_scanv *sv)
{
	char		 digest[CACHE_DIGEST_MAX];
	unsigned char	 k2[TAGS_KEY_LEN];
	struct dirent	*de;
	struct stat	 st;
	uint64_t	 at;
	DIR		*d;
	int		 fd, kept = 0;

	if ((d = cache_opendir_at(updfd, k1name)) == NULL) {
		tags_foreign(sv, up, k1name);
		return;
	}
	fd = dirfd(d);
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		/* Junk, or a negative record of an older version, goes; a
		 * file that cannot be read just now counts as a record, and
		 * its first lookup decides. */
		if (tags_unhex(de->d_name, k2) == -1 ||
		    fstatat(fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) == -1 ||
		    !S_ISREG(st.st_mode) || (tags_read_at(fd, de->d_name,
		    digest, sizeof(digest), &at) == -1 &&
		    tags_read_damaged(errno))) {
			if (unlinkat(fd, de->d_name, 0) == 0)
				sv->removed++;
			continue;
		}
		if (sv->n == sv->max)
			tags_scan_trim(sv);
		if (sv->n == sv->cap) {
			sv->cap = sv->cap ? sv->cap * 2 : 1024;
			if (sv->cap > sv->max)
				sv->cap = sv->max;
			if ((sv->v = reallocarray(sv->v, sv->cap,
			    sizeof(*sv->v))) == NULL)
				fatal("reallocarray");
		}
		snprintf(sv->v[sv->n].up, sizeof(sv->v[sv->n].up), "%.*s",
		    TAGS_UPNAME_MAX, up);
		memcpy(sv->v[sv->n].k1, k1, TAGS_KEY_LEN);
		memcpy(sv->v[sv->n].k2, k2, TAGS_KEY_LEN);
		sv->v[sv->n].mtime_ms = (uint64_t)st.st_mtim.tv_sec * 1000 +
		    (uint64_t)st.st_mtim.tv_nsec / 1000000;
		sv->n++;
		sv->found++;
		kept++;
	}
	closedir(d);
	if (kept == 0)
		(void)unlinkat(updfd, k1name, AT_REMOVEDIR);
}

/* Every record under tags/<upstream>/<k1>/, never through a link. */
static void
tags_scan(struct cache_tags *t, struct tags_scanv *sv)
{
	char		 top[PATH_MAX];
	unsigned char	 k1[TAGS_KEY_LEN];
	struct dirent	*de, *ke;
	DIR		*d, *ud;
	int		 ufd;

	snprintf(top, sizeof(top), "%s/tags", t->cache->dir);
	if ((d = cache_opendir_at(AT_FDCWD, top)) == NULL) {
		if (errno != ENOENT)
			log_warn("- cache tags_unreadable path=%s error=\"%s\"",
			    top, strerror(errno));
		return;
	}
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		if (!tags_valid_up(de->d_name) ||
		    (ud = cache_opendir_at(dirfd(d), de->d_name)) == NULL) {
			tags_foreign(sv, de->d_name, NULL);
			continue;
		}
		ufd = dirfd(ud);
		while ((ke = readdir(ud)) != NULL) {
			if (ke->d_name[0] == '.')
				continue;
			if (tags_unhex(ke->d_name, k1) == -1) {
				tags_foreign(sv, de->d_name, ke->d_name);
				continue;
			}
			tags_scan_tag(ufd, ke->d_name, de->d_name, k1, sv);
		}
		closedir(ud);
	}
	closedir(d);
}

/*
 * Build the index from the records on disk, least recently used first, and
 * apply the caps to them as if they had just been written in that order.
 */
struct cache_tags *
cache_tags_open(struct cache *c, const struct config_cache *cc)
{
	struct cache_tags	*t;
	struct tags_scanv	 sv = { NULL, NULL, 0, 0, 0, 0, 0, 0 };
	struct tag		*g;
	struct tag_var		*v;
	size_t			 i;

	if ((t = calloc(1, sizeof(*t))) == NULL)
		fatal("calloc");
	t->cache = c;
	t->max_recs = cc->max_tag_records > 0 ? cc->max_tag_records : 1;
	t->max_vars = cc->tag_variants > 0 ? cc->tag_variants : 1;
	t->max_negs = cc->negative_entries;
	t->nbuckets = 1024;
	if ((t->buckets = calloc(t->nbuckets, sizeof(*t->buckets))) == NULL)
		fatal("calloc");
	TAILQ_INIT(&t->recs);
	TAILQ_INIT(&t->negs);
	sv.t = t;
	sv.max = t->max_recs < 512 ? 1024 : 2 * t->max_recs;
	tags_scan(t, &sv);
	if (sv.n > 0)
		qsort(sv.v, sv.n, sizeof(*sv.v), tags_scan_cmp);
	for (i = 0; i < sv.n; i++) {
		g = tags_find_or_add(t, sv.v[i].up, sv.v[i].k1);
		v = tags_set(t, g, sv.v[i].k2, 0);
		v->ms = 0;	/* the first hit refreshes the mtime */
	}
	free(sv.v);
	log_info("- cache tags records=%zu max=%zu found=%zu removed=%d "
	    "foreign=%d", t->nrecs, t->max_recs, sv.found, sv.removed,
	    sv.foreign);
	return (t);
}

/* Free the index; the records stay on disk.  NULL is fine. */
void
cache_tags_close(struct cache_tags *t)
{
	struct tag	*g, *next;
	struct tag_var	*v;
	size_t		 i;

	if (t == NULL)
		return;
	for (i = 0; i < t->nbuckets; i++) {
		for (g = t->buckets[i]; g != NULL; g = next) {
			next = g->hnext;
			while ((v = TAILQ_FIRST(&g->vars)) != NULL) {
				TAILQ_REMOVE(&g->vars, v, sib);
				free(v);
			}
			free(g);
		}
	}
	free(t->buckets);
	free(t);
}
