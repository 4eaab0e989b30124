/*
 * referrers.c: the OCI 1.1 referrers API (distribution spec 1.1,
 * "Listing Referrers"), GET /v2/<name>/referrers/<digest>, also in front
 * of an upstream that lacks it (Debian's registry 2.8 answers every such
 * request 404 "404 page not found", text/plain).
 *
 * Reading: the gateway asks the upstream's API with a client-less fetch
 * (as taglist.c reads a tag list) and answers an image index itself, so
 * the artifactType filter is always applied here (OCI-Filters-Applied).
 * A registry with the API never answers 404 (spec: "MUST NOT return a
 * 404"); so a 404 whose body is no OCI error (a router's "page not
 * found") or a 405 means the endpoint is missing, remembered per
 * upstream for limits.referrers_fallback, and the answer comes from the
 * referrers tag schema instead: the tag <alg>-<hex> holding an image
 * index.  A 404 with an OCI error (MANIFEST_UNKNOWN, NAME_UNKNOWN) is a
 * registry that has the endpoint but not the subject, answered as the
 * spec wants it: 200 with an empty index.  With a cache on the upstream,
 * answers are kept in memory for cache.referrers_ttl (bounded by
 * cache.referrers_entries, each at most limits.manifest_bytes).
 *
 * Pushing: a manifest PUT is read whole first (tagpol.c's body read,
 * limits.manifest_bytes); when it has a `subject`, the gateway sends it
 * itself (a client-less PUT) and, once the upstream accepted it without
 * an OCI-Subject of its own, adds a descriptor of it to the subject's
 * referrers tag (read, add, write back, re-read), with the gateway's
 * upstream credentials on behalf of a client the policy gate let push.
 * The client is answered with OCI-Subject when the index holds the
 * manifest, without it when the gateway could not make it so (the spec's
 * signal for a client to maintain the tag itself).  Pushes to one
 * subject are serialised within this gateway (struct rf_lock).
 *
 * What remains racy: the upstream has no conditional PUT, so another
 * writer (another gateway, or a client writing the tag directly) that
 * read the index before our write and writes after our re-read replaces
 * the index without our descriptor, and neither side sees it.  The
 * re-read after each write catches every overwrite that lands before it
 * (then the descriptor is added to what is there and written again, at
 * most limits.referrers_attempts rounds), which narrows the window to the
 * other writer's own read-to-write time.
 */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "portcullis.h"

#define RF_INDEX_MT	"application/vnd.oci.image.index.v1+json"
#define RF_MANIFEST_MT	"application/vnd.oci.image.manifest.v1+json"
#define RF_DIGEST_MAX	(7 + 128 + 1)	/* "sha512:" + hex + NUL */
#define RF_TAG_MAX	(32 + 1 + 64 + 1) /* spec: alg <= 32, ref <= 64 */
#define RF_ERRBODY_MAX	16384		/* an upstream refusal */
#define RF_TYPE_MAX	256		/* an artifactType filter */

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
	uint64_t		 expires;	/* ms */
};

struct rf_push;

/* The pushes to one subject: the first writes, the others wait. */
struct rf_lock {
	TAILQ_ENTRY(rf_lock)	 entry;
	char			*key;
	struct rf_push		*holder;
	TAILQ_HEAD(, rf_push)	 waiters;
};

struct referrers {
	TAILQ_HEAD(, rf_up)	 ups;
	TAILQ_HEAD(rf_entries, rf_entry) cache;
	size_t			 ncache;
	TAILQ_HEAD(, rf_lock)	 locks;
};

/* One client-less fetch of a bounded document, and its answer. */
struct rf_doc {
	struct proxy		*px;
	struct headers		 fwd;
	struct evbuffer		*body;
	size_t			 max;		/* of a 2xx body */
	int			 status;
	int			 too_large;
	int			 oci_subject;
	char			 digest[RF_DIGEST_MAX];
	char			 ctype[128];
	char			 retry_after[64];
	void			(*done)(void *, enum pc_err, const char *);
	void			*owner;
};

/* A GET of referrers: the request's UPSTREAM stage. */
struct rf_get {
	struct req		*req;
	struct rf_doc		 doc;
	int			 from_tag;	/* reading the tag */
	int			 has_filter;
	char			 filter[RF_TYPE_MAX];
	char			*key;
	int			 retired;
	struct reap_node	 reap;
};

enum rf_phase { RF_PUT_MANIFEST, RF_READ, RF_WRITE };

/* A manifest PUT with a subject: the request's UPSTREAM stage. */
struct rf_push {
	struct req		*req;
	struct rf_doc		 doc;
	enum rf_phase		 phase;
	json_t			*desc;		/* for the index */
	char			*key;
	char			 subject[RF_DIGEST_MAX];
	char			 digest[RF_DIGEST_MAX];	/* pushed */
	char			 tag[RF_TAG_MAX];
	int			 status;	/* of the manifest PUT */
	int			 subject_ok;	/* say OCI-Subject */
	size_t			 attempts;
	struct rf_lock		*lock;
	int			 waiting;	/* in lock->waiters */
	TAILQ_ENTRY(rf_push)	 wait_entry;
	struct event		*ev_go;		/* lock is ours */
	int			 retired;
	struct reap_node	 reap;
};

static const struct proxy_ops rf_doc_ops;
static const struct req_stage_ops rf_get_stage_ops;
static const struct req_stage_ops rf_push_stage_ops;
static void	rf_push_read(struct rf_push *);

/* --- per-context state --- */

static struct referrers *
rf_state(struct pc_ctx *ctx)
{
	struct referrers	*r;

	if ((r = ctx->referrers) != NULL)
		return (r);
	if ((r = calloc(1, sizeof(*r))) == NULL)
		fatal("calloc");
	TAILQ_INIT(&r->ups);
	TAILQ_INIT(&r->cache);
	TAILQ_INIT(&r->locks);
	ctx->referrers = r;
	return (r);
}

/* Free the state at shutdown (no request is left to use it). */
void
referrers_free(struct referrers *r)
{
	struct rf_up	*u;
	struct rf_entry	*e;
	struct rf_lock	*l;

	if (r == NULL)
		return;
	while ((u = TAILQ_FIRST(&r->ups)) != NULL) {
		TAILQ_REMOVE(&r->ups, u, entry);
		free(u->name);
		free(u);
	}
	while ((e = TAILQ_FIRST(&r->cache)) != NULL) {
		TAILQ_REMOVE(&r->cache, e, entry);
		json_decref(e->manifests);
		free(e->key);
		free(e);
	}
	while ((l = TAILQ_FIRST(&r->locks)) != NULL) {
		TAILQ_REMOVE(&r->locks, l, entry);
		free(l->key);
		free(l);
	}
	free(r);
}

static struct rf_up *
rf_up_get(struct pc_ctx *ctx, const struct config_upstream *up)
{
	struct referrers	*r = rf_state(ctx);
	struct rf_up		*u;

	TAILQ_FOREACH(u, &r->ups, entry)
		if (strcmp(u->name, up->name) == 0)
			return (u);
	if ((u = calloc(1, sizeof(*u))) == NULL ||
	    (u->name = strdup(up->name)) == NULL)
		fatal("calloc");
	TAILQ_INSERT_TAIL(&r->ups, u, entry);
	return (u);
}

/* Whether the upstream was found without the API recently enough. */
static int
rf_absent(struct req *req)
{
	return (rf_up_get(req->c->ctx, req->up)->absent_until > now_ms());
}

static void
rf_set_absent(struct req *req, int absent)
{
	struct rf_up	*u = rf_up_get(req->c->ctx, req->up);

	if (absent && u->absent_until <= now_ms())
		log_info("%llu.%u referrers upstream=%s api=absent "
		    "fallback=tag_schema", (unsigned long long)req->c->id,
		    req->seq, req->up->name);
	u->absent_until = absent ? now_ms() +
	    (uint64_t)req->conf->referrers_fallback_ms : 0;
}

/* The key of a subject: upstream, upstream repository, digest. */
static char *
rf_key(struct req *req, const char *subject)
{
	char	*key;

	if (asprintf(&key, "%s\n%s\n%s", req->up->name, req->upname,
	    subject) == -1)
		fatal("asprintf");
	return (key);
}

/* --- the answer cache --- */

static int
rf_caching(struct req *req)
{
	return (req->conf->cache != NULL && req->up->cache &&
	    req->conf->cache->referrers_ttl_ms > 0);
}

static void
rf_entry_free(struct referrers *r, struct rf_entry *e)
{
	TAILQ_REMOVE(&r->cache, e, entry);
	r->ncache--;
	json_decref(e->manifests);
	free(e->key);
	free(e);
}

static struct rf_entry *
rf_cache_find(struct pc_ctx *ctx, const char *key)
{
	struct referrers	*r = rf_state(ctx);
	struct rf_entry		*e;

	/* Linear: at most cache.referrers_entries, short keys. */
	TAILQ_FOREACH(e, &r->cache, entry)
		if (strcmp(e->key, key) == 0)
			return (e);
	return (NULL);
}

/* A push through this gateway added to the subject: drop its answer. */
static void
rf_cache_drop(struct pc_ctx *ctx, const char *key)
{
	struct rf_entry	*e;

	if ((e = rf_cache_find(ctx, key)) != NULL)
		rf_entry_free(ctx->referrers, e);
}

static void
rf_cache_put(struct req *req, const char *key, json_t *manifests)
{
	struct referrers	*r = rf_state(req->c->ctx);
	struct rf_entry		*e;

	rf_cache_drop(req->c->ctx, key);
	while (r->ncache > 0 &&
	    r->ncache >= req->conf->cache->referrers_entries)
		rf_entry_free(r, TAILQ_LAST(&r->cache, rf_entries));
	if ((e = calloc(1, sizeof(*e))) == NULL ||
	    (e->key = strdup(key)) == NULL)
		fatal("calloc");
	e->manifests = json_incref(manifests);
	e->expires = now_ms() + (uint64_t)req->conf->cache->referrers_ttl_ms;
	TAILQ_INSERT_HEAD(&r->cache, e, entry);
	r->ncache++;
}

/* --- the fetch of one document (struct proxy_ops) --- */

static void
rf_doc_init(struct rf_doc *d, void (*done)(void *, enum pc_err,
    const char *), void *owner)
{
	headers_init(&d->fwd);
	if ((d->body = evbuffer_new()) == NULL)
		fatal("evbuffer_new");
	d->done = done;
	d->owner = owner;
}

static void
rf_doc_clear(struct rf_doc *d)
{
	proxy_free(d->px);
	d->px = NULL;
	headers_clear(&d->fwd);
	if (d->body != NULL)
		evbuffer_free(d->body);
	d->body = NULL;
}

/*
 * Send `method` on `path` (the upstream's, "/v2/...") under `scope`, with
 * the field `fname: fval` and, when not NULL, `body` (taken).  A 2xx
 * answer's body is kept up to `max` bytes (more is a failure), another's
 * up to RF_ERRBODY_MAX (the rest dropped).  The owner's done callback
 * runs once, with ERR_NONE when an answer came.
 */
static void
rf_doc_send(struct rf_doc *d, struct req *req, int method,
    const char *path, const char *scope, const char *fname,
    const char *fval, struct evbuffer *body, size_t max)
{
	char	logid[48];

	proxy_free(d->px);
	headers_clear(&d->fwd);
	headers_add(&d->fwd, fname, strlen(fname), fval, strlen(fval));
	evbuffer_drain(d->body, evbuffer_get_length(d->body));
	d->max = max;
	d->status = 0;
	d->too_large = 0;
	d->oci_subject = 0;
	d->digest[0] = d->ctype[0] = d->retry_after[0] = '\0';
	snprintf(logid, sizeof(logid), "%llu.%u",
	    (unsigned long long)req->c->id, req->seq);
	d->px = proxy_fetch_path(req->c->ctx, req->conf, req->up, method,
	    path, scope, &d->fwd, &rf_doc_ops, d, logid);
	if (body != NULL)
		proxy_fetch_body(d->px, body);
	proxy_fetch_start(d->px);	/* may answer at once */
}

static int
rf_doc_head(void *arg, struct hframe_msg *rm)
{
	struct rf_doc	*d = arg;
	const char	*v;

	d->status = rm->status;
	if ((v = headers_get(&rm->hdrs, "Docker-Content-Digest")) != NULL &&
	    router_valid_digest(v, strlen(v)))
		snprintf(d->digest, sizeof(d->digest), "%s", v);
	if ((v = headers_get(&rm->hdrs, "Content-Type")) != NULL)
		snprintf(d->ctype, sizeof(d->ctype), "%s", v);
	if ((v = headers_get(&rm->hdrs, "Retry-After")) != NULL)
		snprintf(d->retry_after, sizeof(d->retry_after), "%s", v);
	d->oci_subject = headers_get(&rm->hdrs, "OCI-Subject") != NULL;
	if (rm->status / 100 == 2 && rm->has_length && rm->length > d->max) {
		proxy_free(d->px);
		d->px = NULL;
		d->done(d->owner, ERR_UPSTREAM_PROTO, "upstream referrers "
		    "document larger than limits.manifest_bytes");
		return (-1);
	}
	return (0);
}

/* Keep n more bytes: 0, or -1 after failing the owner (too large). */
static int
rf_doc_keep(struct rf_doc *d, size_t n, int *drop)
{
	size_t	have = evbuffer_get_length(d->body);

	*drop = 0;
	if (d->status / 100 != 2) {
		*drop = have + n > RF_ERRBODY_MAX;
		return (0);
	}
	if (have + n > d->max) {
		proxy_free(d->px);
		d->px = NULL;
		d->done(d->owner, ERR_UPSTREAM_PROTO, "upstream referrers "
		    "document larger than limits.manifest_bytes");
		return (-1);
	}
	return (0);
}

static int
rf_doc_body(void *arg, struct evbuffer *in, size_t n)
{
	struct rf_doc	*d = arg;
	int		 drop;

	if (rf_doc_keep(d, n, &drop) == -1)
		return (-1);
	if (drop)
		evbuffer_drain(in, n);
	else
		evbuffer_remove_buffer(in, d->body, n);
	return (0);
}

static int
rf_doc_body_data(void *arg, const char *data, size_t n)
{
	struct rf_doc	*d = arg;
	int		 drop;

	if (rf_doc_keep(d, n, &drop) == -1)
		return (-1);
	if (!drop)
		evbuffer_add(d->body, data, n);
	return (0);
}

static void
rf_doc_done(void *arg)
{
	struct rf_doc	*d = arg;

	proxy_free(d->px);
	d->px = NULL;
	d->done(d->owner, ERR_NONE, NULL);
}

static void
rf_doc_fail(void *arg, enum pc_err err, const char *detail)
{
	struct rf_doc	*d = arg;

	proxy_free(d->px);
	d->px = NULL;
	d->done(d->owner, err, detail);
}

static const struct proxy_ops rf_doc_ops = {
	rf_doc_head,
	rf_doc_body,
	rf_doc_body_data,
	rf_doc_done,
	rf_doc_fail
};

/* The body as a NUL-terminated string (it may hold a NUL of its own). */
static const char *
rf_doc_text(struct rf_doc *d, size_t *len)
{
	*len = evbuffer_get_length(d->body);
	evbuffer_add(d->body, "", 1);
	return ((const char *)evbuffer_pullup(d->body, -1));
}

/* An upstream's answer the gateway does not relay: fail the request. */
static void
rf_fail_status(struct req *req, struct rf_doc *d, const char *what)
{
	struct headers	 h;
	char		 detail[300];

	snprintf(detail, sizeof(detail), "upstream %s answered %d to %s",
	    req->up->name, d->status, what);
	switch (d->status) {
	case 401:
	case 403:
		req_fail(req, ERR_UPSTREAM_AUTH, detail);
		return;
	case 429:
		headers_init(&h);
		if (d->retry_after[0] != '\0')
			headers_add(&h, "Retry-After", 11, d->retry_after,
			    strlen(d->retry_after));
		req_fail_with(req, ERR_TOO_MANY_REQUESTS, detail, &h);
		headers_clear(&h);
		return;
	default:
		req_fail(req, ERR_UPSTREAM, detail);
	}
}

/*
 * The referrers tag of a digest (spec, "Referrers Tag Schema"): the
 * algorithm and the encoded part joined by '-', cut to 32 and 64
 * characters.
 */
static void
rf_tag(const char *digest, char *out, size_t len)
{
	const char	*colon = strchr(digest, ':');
	int		 alen = colon != NULL ? (int)(colon - digest) : 0;

	if (alen > 32)
		alen = 32;
	snprintf(out, len, "%.*s-%.64s", alen, digest,
	    colon != NULL ? colon + 1 : digest);
}

/* The descriptors of an image index, or NULL when it is none. */
static json_t *
rf_index_manifests(json_t *doc)
{
	json_t	*m;

	if (!json_is_object(doc) ||
	    (m = json_object_get(doc, "manifests")) == NULL)
		return (NULL);
	if (json_is_null(m))
		return (json_array());
	return (json_is_array(m) ? json_incref(m) : NULL);
}

/* --- GET /v2/<name>/referrers/<digest> --- */

/*
 * Answer an image index of the descriptors whose artifactType matches
 * the filter (all without one).  Descriptors without a string mediaType
 * and digest are left out: no client can use them.
 */
static void
rf_answer(struct req *req, json_t *manifests, int has_filter,
    const char *filter)
{
	struct headers	 h;
	json_t		*out, *doc, *m;
	const char	*at;
	char		*body;
	size_t		 i;

	if ((out = json_array()) == NULL)
		fatal("json_array");
	json_array_foreach(manifests, i, m) {
		if (!json_is_object(m) ||
		    !json_is_string(json_object_get(m, "mediaType")) ||
		    !json_is_string(json_object_get(m, "digest")))
			continue;
		at = json_string_value(json_object_get(m, "artifactType"));
		if (has_filter && (at == NULL || strcmp(at, filter) != 0))
			continue;
		json_array_append(out, m);
	}
	doc = json_pack("{s:i, s:s, s:o}", "schemaVersion", 2, "mediaType",
	    RF_INDEX_MT, "manifests", out);
	if (doc == NULL || (body = json_dumps(doc, JSON_COMPACT)) == NULL)
		fatal("json_dumps");
	json_decref(doc);
	headers_init(&h);
	if (has_filter)
		headers_add(&h, "OCI-Filters-Applied", 19, "artifactType", 12);
	log_debug("%llu.%u referrers answer count=%zu filtered=%d",
	    (unsigned long long)req->c->id, req->seq, json_array_size(out),
	    has_filter);
	req_respond_simple(req, 200, RF_INDEX_MT, body, &h);
	headers_clear(&h);
	free(body);
}

static void
rf_get_destroy(void *arg)
{
	struct rf_get	*g = arg;

	rf_doc_clear(&g->doc);
	free(g->key);
	free(g);
}

static void
rf_get_free(void *arg)
{
	struct rf_get	*g = arg;

	if (g == NULL || g->retired)
		return;
	g->retired = 1;
	proxy_free(g->doc.px);
	g->doc.px = NULL;
	conn_reap_later(g->req->c->ctx, &g->reap, rf_get_destroy, g);
}

/* Answer from descriptors found (kept for the cache first). */
static void
rf_get_answer(struct rf_get *g, json_t *manifests)
{
	struct req	*req = g->req;

	if (rf_caching(req))
		rf_cache_put(req, g->key, manifests);
	rf_answer(req, manifests, g->has_filter, g->filter);
	json_decref(manifests);
}

static void	rf_get_done(void *, enum pc_err, const char *);

/* Read the subject's referrers tag (the upstream lacks the API). */
static void
rf_get_tag(struct rf_get *g)
{
	struct req	*req = g->req;
	char		 path[OCI_NAME_MAX + RF_TAG_MAX + 32];
	char		 scope[OCI_NAME_MAX + 48], tag[RF_TAG_MAX];

	g->from_tag = 1;
	rf_tag(req->route.ref, tag, sizeof(tag));
	snprintf(path, sizeof(path), "/v2/%s/manifests/%s", req->upname, tag);
	snprintf(scope, sizeof(scope), "repository:%s:pull", req->upname);
	rf_doc_send(&g->doc, req, HTTP_GET, path, scope, "Accept",
	    RF_INDEX_MT, NULL, req->conf->manifest_bytes);
}

static void
rf_get_done(void *arg, enum pc_err err, const char *detail)
{
	struct rf_get	*g = arg;
	struct req	*req = g->req;
	json_t		*doc, *m;
	json_error_t	 jerr;
	const char	*text;
	char		 code[64];
	size_t		 len;

	if (err != ERR_NONE) {
		req_fail(req, err, detail);
		return;
	}
	text = rf_doc_text(&g->doc, &len);
	if (g->doc.status == 200) {
		doc = json_loadb(text, len, 0, &jerr);
		m = rf_index_manifests(doc);
		json_decref(doc);
		if (m == NULL) {
			req_fail(req, ERR_UPSTREAM_PROTO, g->from_tag ?
			    "the referrers tag holds no image index" :
			    "upstream referrers answer is no image index");
			return;
		}
		if (!g->from_tag)
			rf_set_absent(req, 0);
		rf_get_answer(g, m);
		return;
	}
	if (g->doc.status == 404 && g->from_tag) {
		/* No tag: nothing refers to the subject (yet). */
		rf_get_answer(g, json_array());
		return;
	}
	if (!g->from_tag && (g->doc.status == 405 || (g->doc.status == 404 &&
	    errs_parse_code(text, len, code, sizeof(code)) == -1))) {
		/* No such endpoint: the tag schema stands in for it. */
		rf_set_absent(req, 1);
		rf_get_tag(g);
		return;
	}
	if (g->doc.status == 404) {
		/* The API, without the subject: spec 1.1 says 200, empty. */
		rf_get_answer(g, json_array());
		return;
	}
	rf_fail_status(req, &g->doc, g->from_tag ? "the referrers tag read" :
	    "a referrers request");
}

/* Start the referrers stage for a routed GET or HEAD of referrers. */
void
referrers_start(struct req *req)
{
	struct rf_get	*g;
	struct rf_entry	*e;
	char		 path[OCI_NAME_MAX + OCI_REF_MAX + 32];
	char		 scope[OCI_NAME_MAX + 48];

	if ((g = calloc(1, sizeof(*g))) == NULL)
		fatal("calloc");
	g->req = req;
	rf_doc_init(&g->doc, rf_get_done, g);
	g->key = rf_key(req, req->route.ref);
	req_stage_set(req, &rf_get_stage_ops, g);
	if (req->query != NULL && url_query_get(req->query,
	    strlen(req->query), "artifactType", g->filter,
	    sizeof(g->filter)) == 0 && g->filter[0] != '\0')
		g->has_filter = 1;
	if (rf_caching(req) && (e = rf_cache_find(req->c->ctx, g->key)) !=
	    NULL) {
		if (e->expires > now_ms()) {
			log_debug("%llu.%u referrers cache hit",
			    (unsigned long long)req->c->id, req->seq);
			TAILQ_REMOVE(&req->c->ctx->referrers->cache, e, entry);
			TAILQ_INSERT_HEAD(&req->c->ctx->referrers->cache, e,
			    entry);
			rf_answer(req, e->manifests, g->has_filter,
			    g->filter);
			return;
		}
		rf_entry_free(req->c->ctx->referrers, e);
	}
	if (rf_absent(req)) {
		rf_get_tag(g);
		return;
	}
	/* Unfiltered: the filter is applied here, whatever the upstream. */
	snprintf(path, sizeof(path), "/v2/%s/referrers/%s", req->upname,
	    req->route.ref);
	snprintf(scope, sizeof(scope), "repository:%s:pull", req->upname);
	rf_doc_send(&g->doc, req, HTTP_GET, path, scope, "Accept",
	    RF_INDEX_MT, NULL, req->conf->manifest_bytes);
}

static const struct req_stage_ops rf_get_stage_ops = {
	"referrers",
	NULL,
	NULL,
	rf_get_free
};

/* --- a manifest PUT with a subject --- */

/* The subject of a pushed manifest into out: 1, or 0 when none. */
static int
rf_subject(json_t *m, char *out, size_t len)
{
	const char	*d;

	d = json_string_value(json_object_get(json_object_get(m, "subject"),
	    "digest"));
	if (d == NULL || !router_valid_digest(d, strlen(d)) ||
	    strlen(d) >= len)
		return (0);
	snprintf(out, len, "%s", d);
	return (1);
}

/*
 * Whether a routed manifest PUT whose body was read (req->body_read, by
 * tagpol.c) carries a subject: then referrers_push_start() sends it.
 */
int
referrers_push_wants(struct req *req)
{
	json_t		*m;
	json_error_t	 jerr;
	char		 subject[RF_DIGEST_MAX];
	int		 yes;

	if (req->route.ep != OCI_EP_MANIFEST || req->msg->method != HTTP_PUT ||
	    req->body_read == NULL)
		return (0);
	m = json_loadb((const char *)evbuffer_pullup(req->body_read, -1),
	    evbuffer_get_length(req->body_read), 0, &jerr);
	yes = m != NULL && rf_subject(m, subject, sizeof(subject));
	json_decref(m);
	return (yes);
}

/* The lock of the push's subject: taken at once (1) or queued (0). */
static int
rf_lock_take(struct rf_push *p)
{
	struct referrers	*r = rf_state(p->req->c->ctx);
	struct rf_lock		*l;

	TAILQ_FOREACH(l, &r->locks, entry)
		if (strcmp(l->key, p->key) == 0)
			break;
	if (l == NULL) {
		if ((l = calloc(1, sizeof(*l))) == NULL ||
		    (l->key = strdup(p->key)) == NULL)
			fatal("calloc");
		TAILQ_INIT(&l->waiters);
		TAILQ_INSERT_TAIL(&r->locks, l, entry);
	}
	p->lock = l;
	if (l->holder == NULL) {
		l->holder = p;
		return (1);
	}
	TAILQ_INSERT_TAIL(&l->waiters, p, wait_entry);
	p->waiting = 1;
	return (0);
}

/*
 * Let go of the lock: the next waiter's turn starts from its own event
 * (not inside this push's end, which may be a callback of its own).
 */
static void
rf_lock_release(struct rf_push *p)
{
	struct referrers	*r = p->req->c->ctx->referrers;
	struct rf_lock		*l = p->lock;
	struct rf_push		*next;
	struct timeval		 tv = { 0, 0 };

	if (l == NULL)
		return;
	p->lock = NULL;
	if (p->waiting) {
		TAILQ_REMOVE(&l->waiters, p, wait_entry);
		p->waiting = 0;
		return;
	}
	if ((next = TAILQ_FIRST(&l->waiters)) != NULL) {
		TAILQ_REMOVE(&l->waiters, next, wait_entry);
		next->waiting = 0;
		l->holder = next;
		evtimer_add(next->ev_go, &tv);
		return;
	}
	TAILQ_REMOVE(&r->locks, l, entry);
	free(l->key);
	free(l);
}

static void
rf_push_destroy(void *arg)
{
	struct rf_push	*p = arg;

	rf_doc_clear(&p->doc);
	if (p->ev_go != NULL)
		event_free(p->ev_go);
	json_decref(p->desc);
	free(p->key);
	free(p);
}

static void
rf_push_free(void *arg)
{
	struct rf_push	*p = arg;

	if (p == NULL || p->retired)
		return;
	p->retired = 1;
	proxy_free(p->doc.px);
	p->doc.px = NULL;
	evtimer_del(p->ev_go);
	rf_lock_release(p);
	conn_reap_later(p->req->c->ctx, &p->reap, rf_push_destroy, p);
}

/* Answer the client as the upstream accepted the manifest. */
static void
rf_push_answer(struct rf_push *p)
{
	struct req	*req = p->req;
	struct headers	 h;
	char		 loc[OCI_NAME_MAX + RF_DIGEST_MAX + 32];
	int		 n;

	headers_init(&h);
	n = snprintf(loc, sizeof(loc), "/v2/%s/manifests/%s",
	    req->route.name, p->digest);
	headers_add(&h, "Location", 8, loc, n);
	headers_add(&h, "Docker-Content-Digest", 21, p->digest,
	    strlen(p->digest));
	if (p->subject_ok)
		headers_add(&h, "OCI-Subject", 11, p->subject,
		    strlen(p->subject));
	/* A later read of the subject's referrers must see this push. */
	rf_cache_drop(req->c->ctx, p->key);
	req_respond_simple(req, p->status, NULL, NULL, &h);
	headers_clear(&h);
}

/* The index could not be made to hold the manifest: say no OCI-Subject. */
static void
rf_push_give_up(struct rf_push *p, const char *why)
{
	struct req	*req = p->req;

	log_warn("%llu.%u referrers index_not_updated repo=%s tag=%s "
	    "attempts=%zu reason=\"%s\"", (unsigned long long)req->c->id,
	    req->seq, req->upname, p->tag, p->attempts, why);
	p->subject_ok = 0;
	rf_push_answer(p);
}

/* Write the index: what was read plus the pushed manifest's descriptor. */
static void
rf_push_write(struct rf_push *p, json_t *manifests)
{
	struct req	*req = p->req;
	struct evbuffer	*body;
	json_t		*doc;
	char		*text;
	char		 path[OCI_NAME_MAX + RF_TAG_MAX + 32];
	char		 scope[OCI_NAME_MAX + 48];

	json_array_append(manifests, p->desc);
	doc = json_pack("{s:i, s:s, s:O}", "schemaVersion", 2, "mediaType",
	    RF_INDEX_MT, "manifests", manifests);
	if (doc == NULL || (text = json_dumps(doc, JSON_COMPACT)) == NULL)
		fatal("json_dumps");
	json_decref(doc);
	if (strlen(text) > req->conf->manifest_bytes) {
		free(text);
		rf_push_give_up(p, "index larger than limits.manifest_bytes");
		return;
	}
	if ((body = evbuffer_new()) == NULL)
		fatal("evbuffer_new");
	evbuffer_add(body, text, strlen(text));
	free(text);
	p->phase = RF_WRITE;
	snprintf(path, sizeof(path), "/v2/%s/manifests/%s", req->upname,
	    p->tag);
	snprintf(scope, sizeof(scope), "repository:%s:pull,push",
	    req->upname);
	rf_doc_send(&p->doc, req, HTTP_PUT, path, scope, "Content-Type",
	    RF_INDEX_MT, body, RF_ERRBODY_MAX);
}

/* Whether the descriptors hold the pushed manifest's digest. */
static int
rf_has(json_t *manifests, const char *digest)
{
	json_t		*m;
	const char	*d;
	size_t		 i;

	json_array_foreach(manifests, i, m) {
		d = json_string_value(json_object_get(m, "digest"));
		if (d != NULL && strcmp(d, digest) == 0)
			return (1);
	}
	return (0);
}

/* The tag was read: done when it holds the manifest, else write. */
static void
rf_push_read_done(struct rf_push *p)
{
	json_t		*doc, *m;
	json_error_t	 jerr;
	const char	*text;
	size_t		 len;
	char		 why[64];

	text = rf_doc_text(&p->doc, &len);
	if (p->doc.status == 404)
		m = json_array();
	else if (p->doc.status == 200) {
		doc = json_loadb(text, len, 0, &jerr);
		m = rf_index_manifests(doc);
		json_decref(doc);
		if (m == NULL) {
			rf_push_give_up(p, "the referrers tag holds no "
			    "image index");
			return;
		}
	} else {
		snprintf(why, sizeof(why), "upstream answered %d to the "
		    "read", p->doc.status);
		rf_push_give_up(p, why);
		return;
	}
	if (rf_has(m, p->digest)) {
		json_decref(m);
		p->subject_ok = 1;
		rf_push_answer(p);
		return;
	}
	if (p->attempts >= p->req->conf->referrers_attempts) {
		json_decref(m);
		rf_push_give_up(p, "the tag kept moving");
		return;
	}
	if (p->attempts > 0)
		log_info("%llu.%u referrers index_moved tag=%s attempt=%zu",
		    (unsigned long long)p->req->c->id, p->req->seq, p->tag,
		    p->attempts + 1);
	p->attempts++;
	rf_push_write(p, m);
	json_decref(m);
}

static void
rf_push_done(void *arg, enum pc_err err, const char *detail)
{
	struct rf_push	*p = arg;
	struct req	*req = p->req;
	const char	*text;
	size_t		 len;
	char		 why[64];

	if (p->phase == RF_PUT_MANIFEST) {
		if (err != ERR_NONE) {
			req_fail(req, err, detail);
			return;
		}
		if (p->doc.status / 100 != 2) {
			if (p->doc.status == 401 || p->doc.status == 403 ||
			    p->doc.status == 429) {
				rf_fail_status(req, &p->doc, "a manifest "
				    "push");
				return;
			}
			/* The upstream's own refusal (its OCI error). */
			text = rf_doc_text(&p->doc, &len);
			req_respond_simple(req, p->doc.status,
			    p->doc.ctype[0] != '\0' ? p->doc.ctype :
			    "application/json", text, NULL);
			return;
		}
		p->status = p->doc.status;
		if (p->doc.digest[0] != '\0')
			snprintf(p->digest, sizeof(p->digest), "%s",
			    p->doc.digest);
		if (p->doc.oci_subject) {
			/* The upstream keeps its own referrers. */
			rf_set_absent(req, 0);
			p->subject_ok = 1;
			rf_push_answer(p);
			return;
		}
		rf_set_absent(req, 1);
		if (rf_lock_take(p))
			rf_push_read(p);
		return;			/* else ev_go starts it */
	}
	if (err != ERR_NONE) {
		rf_push_give_up(p, detail);
		return;
	}
	if (p->phase == RF_READ) {
		rf_push_read_done(p);
		return;
	}
	if (p->doc.status / 100 != 2) {
		snprintf(why, sizeof(why), "upstream answered %d to the "
		    "index write", p->doc.status);
		rf_push_give_up(p, why);
		return;
	}
	/* A cached record of the tag is stale now. */
	cache_invalidate_tag_name(req->c->ctx, req->up, req->upname, p->tag);
	/* Written: read it back, another writer may have come between. */
	rf_push_read(p);
}

/* Read the subject's referrers tag (holding the subject's lock). */
static void
rf_push_read(struct rf_push *p)
{
	struct req	*req = p->req;
	char		 path[OCI_NAME_MAX + RF_TAG_MAX + 32];
	char		 scope[OCI_NAME_MAX + 48];

	p->phase = RF_READ;
	snprintf(path, sizeof(path), "/v2/%s/manifests/%s", req->upname,
	    p->tag);
	snprintf(scope, sizeof(scope), "repository:%s:pull,push",
	    req->upname);
	rf_doc_send(&p->doc, req, HTTP_GET, path, scope, "Accept",
	    RF_INDEX_MT, NULL, req->conf->manifest_bytes);
}

static void
rf_push_go_cb(evutil_socket_t fd, short ev, void *arg)
{
	rf_push_read(arg);
}

/*
 * The descriptor the index gets for a pushed manifest (spec, "Listing
 * Referrers"): its mediaType, digest and size, its artifactType (else
 * its config's mediaType) and its annotations.
 */
static json_t *
rf_descriptor(json_t *m, const char *ctype, const char *digest,
    size_t size)
{
	json_t		*d, *a;
	const char	*mt, *at;

	if ((mt = json_string_value(json_object_get(m, "mediaType"))) ==
	    NULL)
		mt = ctype != NULL && *ctype != '\0' ? ctype : RF_MANIFEST_MT;
	if ((at = json_string_value(json_object_get(m, "artifactType"))) ==
	    NULL)
		at = json_string_value(json_object_get(
		    json_object_get(m, "config"), "mediaType"));
	d = json_pack("{s:s, s:s, s:I}", "mediaType", mt, "digest", digest,
	    "size", (json_int_t)size);
	if (d == NULL)
		fatal("json_pack");
	if (at != NULL)
		json_object_set_new(d, "artifactType", json_string(at));
	if (json_is_object(a = json_object_get(m, "annotations")))
		json_object_set(d, "annotations", a);
	return (d);
}

/*
 * Send a manifest PUT with a subject (referrers_push_wants() said so) as
 * the request's UPSTREAM stage: the upstream first, then the subject's
 * referrers tag when the upstream keeps none.
 */
void
referrers_push_start(struct req *req)
{
	struct rf_push	*p;
	struct evbuffer	*body = req->body_read;
	json_t		*m;
	json_error_t	 jerr;
	const char	*ctype;
	char		 path[OCI_NAME_MAX + OCI_REF_MAX + 32];
	char		 scope[OCI_NAME_MAX + 48];

	req->body_read = NULL;		/* ours now, then the fetch's */
	if ((p = calloc(1, sizeof(*p))) == NULL)
		fatal("calloc");
	p->req = req;
	rf_doc_init(&p->doc, rf_push_done, p);
	if ((p->ev_go = evtimer_new(req->c->ctx->base, rf_push_go_cb, p)) ==
	    NULL)
		fatal("evtimer_new");
	req_stage_set(req, &rf_push_stage_ops, p);
	m = json_loadb((const char *)evbuffer_pullup(body, -1),
	    evbuffer_get_length(body), 0, &jerr);
	if (m == NULL || !rf_subject(m, p->subject, sizeof(p->subject)) ||
	    tagpol_digest(req->route.ref_digest ? req->route.ref : NULL,
	    body, p->digest, sizeof(p->digest)) == -1)
		fatalx("%s: a manifest referrers_push_wants() took",
		    __func__);
	ctype = headers_get(&req->msg->hdrs, "Content-Type");
	p->desc = rf_descriptor(m, ctype, p->digest,
	    evbuffer_get_length(body));
	json_decref(m);
	p->key = rf_key(req, p->subject);
	rf_tag(p->subject, p->tag, sizeof(p->tag));
	log_debug("%llu.%u referrers push subject=%s digest=%s",
	    (unsigned long long)req->c->id, req->seq, p->subject, p->digest);
	p->phase = RF_PUT_MANIFEST;
	snprintf(path, sizeof(path), "/v2/%s/manifests/%s", req->upname,
	    req->route.ref);
	snprintf(scope, sizeof(scope), "repository:%s:pull,push",
	    req->upname);
	rf_doc_send(&p->doc, req, HTTP_PUT, path, scope, "Content-Type",
	    ctype != NULL ? ctype : RF_MANIFEST_MT, body, RF_ERRBODY_MAX);
}

static const struct req_stage_ops rf_push_stage_ops = {
	"referrers_push",
	NULL,
	NULL,
	rf_push_free
};
