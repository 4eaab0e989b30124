/*
 * tcache.h: the verified-token cache, a bounded LRU map from a token's
 * keyed hash (jose_token_hash, 32 bytes) to what verifying it produced,
 * so a CI job's repeated requests do not re-verify.  Leaf: no libevent,
 * no project header; time is a parameter.
 *
 * Meant for the identity stage: after jose_verify() returns JOSE_OK, put
 * the result (e.g. the claims, or the principal built from them) with
 * expires = the token's exp; look the hash up before verifying.  An entry
 * is never returned at or after its expiry.  Revocation drops entries
 * with tcache_purge() (e.g. every entry of a subject issued before a
 * time); the cache never decides what a value means.
 */
#ifndef PC_TCACHE_H
#define PC_TCACHE_H

#include <stddef.h>
#include <stdint.h>

#define TCACHE_KEY_LEN	32

struct tcache;

/*
 * A cache of at most max entries (1..2^24); free_val (may be NULL)
 * releases a value the cache drops.  All memory is allocated here, none
 * later.  NULL on allocation failure.
 */
struct tcache	*tcache_new(size_t max, void (*free_val)(void *));
/* Free the cache and every value in it. */
void		 tcache_free(struct tcache *);

/*
 * The value under key, made the most recently used; NULL when absent or
 * expired at now (an expired entry is dropped then).  The value stays
 * owned by the cache: valid until the next put, purge, clear or free.
 */
void		*tcache_get(struct tcache *, const unsigned char *key,
		    int64_t now);

/*
 * Store val under key until expires, replacing an entry with the same
 * key; when full, the least recently used entry is dropped.  Takes
 * ownership of val: a val already expired at now is released at once and
 * not stored.
 */
void		 tcache_put(struct tcache *, const unsigned char *key,
		    void *val, int64_t expires, int64_t now);

/* Drop every entry whose value pred() holds for; how many were. */
size_t		 tcache_purge(struct tcache *,
		    int (*pred)(const void *val, void *arg), void *arg);

/* Drop every entry. */
void		 tcache_clear(struct tcache *);

/* Entries held (expired ones not yet dropped included). */
size_t		 tcache_count(const struct tcache *);

#endif /* PC_TCACHE_H */
