/*
 * referrers_int.h: what the referrers files share (referrers.c: the API,
 * the answers' cache, the per-upstream memory;
 * referrers_push.c: a manifest pushed with a subject and its subject's
 * referrers tag) and nothing else includes.
 */
#ifndef PC_REFERRERS_INT_H
#define PC_REFERRERS_INT_H

#include <jansson.h>

#include "docfetch.h"

#define RF_INDEX_MT	"application/vnd.oci.image.index.v1+json"
#define RF_MANIFEST_MT	"application/vnd.oci.image.manifest.v1+json"
#define RF_DIGEST_MAX	(7 + 128 + 1)	/* "sha512:" + hex + NUL */
#define RF_TAG_MAX	(32 + 1 + 64 + 1) /* spec: alg <= 32, ref <= 64 */
#define RF_ERRBODY_MAX	DOCFETCH_ERRBODY_MAX	/* a refusal */
#define RF_TYPE_MAX	256		/* an artifactType filter */
#define RF_LINK_MAX	2048		/* a next page's target */

/* An upstream found without the API, until when. */
struct rf_up {
	TAILQ_ENTRY(rf_up)	 entry;
	char			*name;
	uint64_t		 absent_until;	/* ms; 0: has it */
};

/* A cached answer: the unfiltered descriptors of one subject. */
struct rf_entry {
	TAILQ_ENTRY(rf_entry)	 entry;		/* head: newest */
	char			*key;		/* up, repo, subject */
	json_t			*manifests;
	size_t			 bytes;		/* its document's */
	uint64_t		 expires;	/* ms */
};

struct rf_lock;
struct rf_push;

/* ctx->referrers */
struct referrers {
	TAILQ_HEAD(, rf_up)	 ups;
	TAILQ_HEAD(rf_entries, rf_entry) cache;
	size_t			 ncache;
	size_t			 cache_bytes;	/* <= referrers_bytes */
	TAILQ_HEAD(, rf_lock)	 locks;		/* referrers_push.c */
	TAILQ_HEAD(, rf_push)	 detached;	/* clients gone */
	size_t			 ndetached;	/* <= max_connections */
};

/* referrers.c */
struct referrers *rf_state(struct pc_ctx *);
void		 rf_set_absent(struct req *, int);
char		*rf_key(struct req *, const char *);
void		 rf_cache_drop(struct pc_ctx *, const char *);
void		 rf_tag(const char *, char *, size_t);
json_t		*rf_index_manifests(json_t *);

/* referrers_push.c */
void		 rf_push_shutdown(struct referrers *);

#endif /* PC_REFERRERS_INT_H */
