/*
 * cache.h: what the cache's files share: the store and its index
 * (cache.c), fills from the upstream (cache_fill.c) and the readers that
 * serve clients (cache_serve.c).  Not a leaf: it builds on portcullis.h.
 */
#ifndef PC_CACHE_H
#define PC_CACHE_H

#include <dirent.h>
#include <limits.h>

#include "portcullis.h"
#include "cache_http.h"

#define CACHE_DIGEST_MAX	(7 + 128 + 1)	/* "sha512:" + hex + NUL */
#define CACHE_UPSTREAM_MAX	64	/* upstream names in type lines */

enum cache_kind {
	CACHE_BLOB,
	CACHE_MANIFEST
};

/* A verified, published file: one per (kind, digest). */
/*
 * A small manifest's file (its type line read, and its body) held in
 * memory, so that a hit costs no open/fstat/pread/close
 * (cache.memory_bytes; cache_mem_keep).  Valid while cache_gen() is the
 * gen it was read at: any file published or removed in the directory,
 * by this process or another worker, moves the count on.
 */
struct cache_mem {
	int				 refs;		/* entry + readers */
	uint64_t			 gen;
	size_t				 len;		/* body bytes */
	char				 ctype[256];
	char				 up[CACHE_UPSTREAM_MAX];
	char				 data[];
};

struct cache_entry {
	struct cache_entry		*hnext;		/* hash chain */
	TAILQ_ENTRY(cache_entry)	 lru;		/* oldest first */
	uint64_t			 size;		/* file bytes */
	uint64_t			 used_ms;
	uint64_t			 touched_ms;	/* mtime last set */
	int				 refs;		/* open readers */
	enum cache_kind			 kind;
	struct cache_mem		*mem;		/* or NULL */
	char				 digest[];
};

struct fill_pool;

struct cache {
	struct pc_ctx			*ctx;
	char				*dir;
	int				 lock_fd;
	uint64_t			 max_bytes;
	uint64_t			 bytes;		/* published */
	uint64_t			 filling;	/* in tmp files */
	uint64_t			 reserved;	/* fills' lengths */
	uint64_t			 pinned;	/* entries readers hold */
	uint64_t			 mem_bytes;	/* cache_mem copies */
	uint64_t			 mem_max;	/* cache.memory_bytes */
	size_t				 nfills;
	size_t				 max_fills;
	size_t				 max_fills_per_client;
	uint64_t			 fill_max_bytes;
	double				 fill_finish_fraction;
	struct fill_pool		*pool;		/* digest threads */
	struct cache_entry		**buckets;
	size_t				 nbuckets;
	size_t				 nentries;
	TAILQ_HEAD(, cache_entry)	 lru;
	TAILQ_HEAD(, cache_fill)	 fills;
	struct event			*ev_evict;
	uint64_t			 seq;		/* tmp names, log ids */
	uint64_t			 evicted; /* entries, since start */
	struct cache_tags		*tags;		/* cache_tags.c */
	struct cache_links		*links;		/* cache_links.c */
	TAILQ_HEAD(, cache_confirm)	 confirms;	/* cache_confirm.c */
	size_t				 nconfirms;	/* HEADs running */
};

/* What a confirming HEAD answered (cache_confirm.c). */
struct cache_confirm_answer {
	int				 status;
	char				 digest[CACHE_DIGEST_MAX];
	char				 length[32];
	char				 retry_after[64];
};

struct fill_hash;
struct cache_tags;
struct cache_links;
struct cache_confirm;

/* One upstream transfer into a temp file, followed by its readers. */
struct cache_fill {
	TAILQ_ENTRY(cache_fill)		 entry;
	struct cache			*cache;
	struct config			*conf;		/* a reference */
	enum cache_kind			 kind;
	enum cache_alg			 alg;
	char				 digest[CACHE_DIGEST_MAX];
	/* The key is (upstream, kind, digest); the repository and client
	 * are the first requester's. */
	const struct config_upstream	*up;		/* in conf */
	char				 upname[OCI_NAME_MAX + 16];
	char				 client[64];	/* its address */
	char				 tmp[PATH_MAX];
	char				 logid[48];
	int				 fd;
	struct fill_hash		*hash;		/* its thread */
	struct proxy			*px;
	struct headers			 fwd;		/* sent upstream */
	int				 got_head;	/* a 200 head */
	int				 have_length;
	uint64_t			 expect;	/* Content-Length */
	uint64_t			 written;	/* body bytes on disk */
	uint64_t			 synced;	/* writeback started */
	uint64_t			 acct;		/* in cache->filling */
	uint64_t			 reserve;	/* in cache->reserved */
	int				 declined;	/* pass through */
	int				 listed;	/* on cache->fills */
	int				 cancel_check;	/* readers left */
	size_t				 hdr_len;	/* manifest type line */
	char				 ctype[256];
	uint64_t			 start_ms;
	TAILQ_HEAD(, cache_reader)	 readers;
	/* A non-200 answer, for readers that have no head yet. */
	int				 up_status;
	char				 retry_after[64];
	char				 errtype[128];
	struct evbuffer			*errbody;
	/* A failure found inside a body callback, acted on next turn. */
	struct event			*ev_fail;	/* start, or fail */
	int				 started;
	enum pc_err			 fail_err;
	char				 fail_detail[256];
	int				 peer_fd;	/* workers: the lock */
};

/* The cache stage of one request. */
struct cache_reader {
	TAILQ_ENTRY(cache_reader)	 entry;		/* on fill->readers */
	struct req			*req;
	struct cache			*cache;
	struct cache_fill		*fill;		/* following it */
	struct cache_entry		*ent;		/* pinned */
	enum cache_kind			 kind;
	char				 digest[CACHE_DIGEST_MAX];
	int				 fd;
	struct cache_mem		*mem;		/* or the file's copy */
	size_t				 data_off;	/* past the type line */
	uint64_t			 size;		/* body bytes */
	uint64_t			 off;		/* next to send */
	uint64_t			 end;		/* one past the last */
	int				 waiting;	/* on fill progress */
	struct event			*ev_step;	/* bytes short of a step */
	int				 step_due;	/* waited enough: send */
	int				 stale;		/* add a Warning */
	int				 retired;	/* cache_reader_free */
	/* Repository link (cache_links.c): confirmed by a HEAD for the
	 * request's repository, or waiting for one (cache_confirm.c). */
	int				 confirmed;
	struct cache_confirm		*confirm;
	TAILQ_ENTRY(cache_reader)	 centry;	/* on confirm's */
	uint64_t			 confirm_size;	/* 0: unknown */
	struct reap_node		 reap;
	char				 ctype[256];
	/* Tag revalidation. */
	struct proxy			*px;
	struct headers			 fwd;
	char				 accept[2048];
	char				 tag_digest[CACHE_DIGEST_MAX];
	uint64_t			 tag_fetched_ms;
	int				 tag_found;
	int				 up_status;
	char				 up_digest[CACHE_DIGEST_MAX];
	char				 up_ctype[256];
	char				 up_length[32];
	char				 retry_after[64];
	/* Workers: waiting for another worker's fill of the digest. */
	struct event			*ev_peer;
	uint64_t			 peer_deadline_ms;
	int				 peer_rechecked;
};

/* cache.c */
int	cache_path(struct cache *, enum cache_kind, const char *, char *,
	    size_t);
struct cache_entry *cache_lookup(struct cache *, enum cache_kind,
	    const char *);
struct cache_entry *cache_insert(struct cache *, enum cache_kind,
	    const char *, uint64_t);
void	cache_remove(struct cache *, struct cache_entry *);
void	cache_touch(struct cache *, struct cache_entry *);
void	cache_evict_soon(struct cache *);
int	cache_tmp_open(struct cache *, char *, size_t);
int	cache_mkdirs(const char *);
DIR	*cache_opendir_at(int, const char *);
int	cache_manifest_type(int, char *, size_t, char *, size_t, size_t *);
uint64_t cache_gen(void);
struct cache_mem *cache_mem_keep(struct cache *, struct cache_entry *, int,
	    size_t, const char *, const char *, uint64_t);
void	cache_mem_drop(struct cache *, struct cache_entry *);
void	cache_mem_unref(struct cache *, struct cache_mem *);

/* cache_tags.c */
struct cache_tags *cache_tags_open(struct cache *,
	    const struct config_cache *);
void	cache_tags_close(struct cache_tags *);
int	cache_tag_get(struct cache *, const struct config_upstream *,
	    const char *, const char *, const char *, char *, size_t,
	    uint64_t *);
void	cache_tag_put(struct cache *, const struct config_upstream *,
	    const char *, const char *, const char *, const char *);
void	cache_tag_put_unknown(struct cache *, const struct config_upstream *,
	    const char *, const char *, const char *, int);
int	cache_tag_is_unknown(struct cache *, const struct config_upstream *,
	    const char *, const char *, const char *, int);
int	cache_tag_all(struct cache *, const struct config_upstream *,
	    const char *, const char *, char (*)[CACHE_DIGEST_MAX], int);
uint64_t cache_wall_ms(void);
uint64_t cache_pinned_bytes(struct cache *);
void	cache_pin(struct cache *, struct cache_entry *);
void	cache_unpin(struct cache *, struct cache_entry *);

/* cache_links.c */
struct cache_links *cache_links_open(struct cache *,
	    const struct config_cache *);
void	cache_links_close(struct cache_links *);
int	cache_link_has(struct cache *, const struct config_upstream *,
	    const char *, enum cache_kind, const char *);
void	cache_link_put(struct cache *, const struct config_upstream *,
	    const char *, enum cache_kind, const char *);
int	cache_link_upstream_has(struct cache *,
	    const struct config_upstream *, enum cache_kind, const char *);
void	cache_links_sync(struct cache *);

/* cache.c, workers sharing the directory */
struct cache_entry *cache_adopt(struct cache *, enum cache_kind,
	    const char *);
int	cache_peer_lock(struct cache *, enum cache_kind, const char *);
void	cache_shared_add(int64_t);
uint64_t cache_used(const struct cache *);
void	cache_peer_unlock(struct cache *, int, enum cache_kind,
	    const char *);

/* cache_confirm.c */
int	cache_confirm_join(struct cache_reader *);
void	cache_confirm_leave(struct cache_reader *);
void	cache_confirm_free_all(struct cache *);

/* cache_fill.c */
struct cache_fill *cache_fill_find(struct cache *, enum cache_kind,
	    const struct config_upstream *, const char *);
struct cache_fill *cache_fill_new(struct req *, enum cache_kind,
	    const char *, const struct headers *);
void	cache_fill_join(struct cache_fill *, struct cache_reader *);
void	cache_fill_leave(struct cache_fill *, struct cache_reader *);
void	cache_fill_free_all(struct cache *);
void	fill_hashed(struct cache_fill *);

/* cache_digest.c */
struct fill_pool *cache_fill_pool_new(struct pc_ctx *, size_t);
void	cache_fill_pool_free(struct fill_pool *);
void	fill_hash_start(struct cache_fill *);
int	fill_hash_feed(struct fill_hash *, struct evbuffer *, const void *,
	    size_t, int);
void	fill_hash_free(struct fill_hash *);
int	fill_hash_digest(struct fill_hash *, enum cache_alg, char *, size_t);

/* cache_serve.c */
void	cache_reader_has_head(struct cache_reader *);
void	cache_reader_progress(struct cache_reader *);
void	cache_reader_filled(struct cache_reader *, struct cache_entry *);
void	cache_reader_fill_failed(struct cache_reader *, struct cache_fill *,
	    enum pc_err, const char *);
void	cache_reader_fill_declined(struct cache_reader *);
void	cache_reader_confirmed(struct cache_reader *,
	    const struct cache_confirm_answer *);
void	cache_reader_confirm_failed(struct cache_reader *, enum pc_err,
	    const char *);

#endif
