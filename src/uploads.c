/*
 * uploads.c: what the gateway knows of each chunked blob upload that
 * passed through it -- its current offset and its latest Location -- so
 * that it answers as the distribution spec requires where older
 * registries do not ("Pushing a blob in chunks"):
 *
 * - a PATCH whose Content-Range does not start at the upload's current
 *   offset (a chunk out of order, or one retried after it was taken) is
 *   416 with the current Range and Location, and never reaches the
 *   upstream, which could otherwise take it at the wrong place or lose
 *   the upload;
 * - a GET of an upload location -- also an older one that the client
 *   kept (registry 2.8 puts the state in the Location's query, so an old
 *   one reports an old offset) -- is 204 with the current Range and the
 *   latest Location, from here.
 *
 * The state comes from the upstream's own answers, as relayed
 * (uploads_note, from proxy_relay.c): a 202 or 204 with Range and
 * Location sets it; the upload's end (a 2xx to PUT or DELETE, a 404)
 * forgets it.  Uploads are keyed by upstream, the upstream's repository
 * name and the upload id, so one client's upload never answers for
 * another repository.
 *
 * In memory, per process: at most limits.upload_sessions uploads, the
 * least recently used dropped first (a dropped or unknown upload is
 * simply relayed, as before).  With a top-level "redis" section the
 * state is also written to Redis (a hash per upload, offset and
 * location, expiring after limits.upload_ttl; deleted at the upload's
 * end) on a link of its own, and read from there before a GET or PATCH
 * of an upload (the request waits as the `upload` stage), so that every
 * instance behind a balancer agrees on where an upload is.  Redis
 * unreachable: this instance's memory answers, as without Redis.
 *
 * What Redis does not close: a note is sent to Redis as the upstream's
 * answer is relayed, not before the client has it, so a client that
 * sends its next request to another instance faster than one Redis
 * write (loopback: tens of microseconds) may be answered from the state
 * before; that answer is a 416 or a stale 204 the client recovers from
 * with a GET, never a chunk written at the wrong offset, because the
 * upstream itself refuses those.
 */
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "portcullis.h"
#include "rds.h"

#define UPL_LOC_MAX	2048		/* a longer Location: not kept */

struct upload {
	TAILQ_ENTRY(upload)	 lru;
	struct upload		*hnext;
	uint64_t		 hash;
	char			*key;		/* up NUL name NUL id */
	size_t			 klen;
	uint64_t		 offset;	/* bytes the upstream holds */
	char			*location;	/* latest, as sent */
};

TAILQ_HEAD(upload_lru, upload);

struct uploads {
	struct upload		**buckets;
	size_t			 nbuckets;	/* a power of two */
	struct upload_lru	 lru;		/* most recent first */
	size_t			 n;
	struct rds		*rds;		/* NULL: memory only */
};

/* A GET or PATCH waiting for Redis: the request's `upload` stage. */
struct upl_wait {
	struct req		*req;
	struct pc_ctx		*ctx;
	int			 inflight;	/* the HGETALL's reply */
	int			 retired;
	struct reap_node	 reap;
};

#define UPL_REDIS_PREFIX	"portcullis:upload:"

static uint64_t
upl_hash(const char *key, size_t len)
{
	uint64_t	h = 1469598103934665603ULL;
	size_t		i;

	for (i = 0; i < len; i++) {
		h ^= (unsigned char)key[i];
		h *= 1099511628211ULL;
	}
	return (h);
}

/* The key of (upstream, upstream name, id) into buf; its length or 0. */
static size_t
upl_key(const struct req *req, const char *id, char *buf, size_t len)
{
	int	n;

	if (req->up == NULL || id == NULL || *id == '\0')
		return (0);
	n = snprintf(buf, len, "%s%c%s%c%s", req->up->name, '\0',
	    req->upname, '\0', id);
	if (n < 0 || (size_t)n >= len)
		return (0);
	return ((size_t)n);
}

static struct uploads *
upl_table(struct pc_ctx *ctx, size_t max)
{
	struct uploads	*u;
	size_t		 nb = 64;

	if (ctx->uploads != NULL)
		return (ctx->uploads);
	/* Sized once, from the limit then: a reload only changes the cap. */
	while (nb < max && nb < (1U << 20))
		nb *= 2;
	if ((u = calloc(1, sizeof(*u))) == NULL ||
	    (u->buckets = calloc(nb, sizeof(*u->buckets))) == NULL)
		fatal("uploads");
	u->nbuckets = nb;
	TAILQ_INIT(&u->lru);
	ctx->uploads = u;
	return (u);
}

static const struct rds_ops upl_rds_ops = { NULL, NULL, NULL };

/*
 * With a top-level "redis" section: the uploads' Redis link, so that
 * every instance agrees (at start; the section cannot change on reload).
 */
void
uploads_start(struct pc_ctx *ctx)
{
	struct uploads		*u;
	struct rds_params	 p;

	if (ctx->conf->redis == NULL || ctx->conf->upload_sessions == 0)
		return;
	u = upl_table(ctx, ctx->conf->upload_sessions);
	rds_params_init(&p, ctx->conf, "uploads");
	if ((u->rds = rds_new(ctx->base, &p, &upl_rds_ops, u)) == NULL)
		fatalx("uploads: redis link");
	rds_start(u->rds);
}

/* The Redis key of an upload key ("up NUL name NUL id"). */
static int
upl_rkey(const char *key, size_t klen, char *out, size_t len)
{
	size_t	i, n = sizeof(UPL_REDIS_PREFIX) - 1;

	if (klen + n + 1 > len)
		return (-1);
	memcpy(out, UPL_REDIS_PREFIX, n);
	for (i = 0; i < klen; i++)
		out[n + i] = key[i] == '\0' ? ':' : key[i];
	out[n + klen] = '\0';
	return (0);
}

/* A write's reply: nothing waits on it; a refusal is logged. */
static void
upl_on_write(struct rds *l, redisReply *r, void *arg)
{
	char	kind[64];

	if (r != NULL && r->type == REDIS_REPLY_ERROR)
		log_info("- uploads redis_error kind=%s",
		    rds_error_kind(r, kind, sizeof(kind)));
}

/* Tell Redis what the upload is now, or (e NULL) that it ended. */
static void
upl_redis_note(struct req *req, const char *key, size_t klen,
    const struct upload *e)
{
	struct uploads	*u = req->c->ctx->uploads;
	const char	*argv[6];
	size_t		 lens[6];
	char		 rkey[OCI_NAME_MAX * 2 + OCI_REF_MAX + 64];
	char		 off[32], ttl[32];

	if (u == NULL || u->rds == NULL || !rds_ready(u->rds) ||
	    upl_rkey(key, klen, rkey, sizeof(rkey)) == -1)
		return;
	argv[1] = rkey;
	lens[1] = strlen(rkey);
	if (e == NULL) {
		argv[0] = "DEL";
		lens[0] = 3;
		(void)rds_command_argv(u->rds, upl_on_write, NULL, 2, argv,
		    lens);
		return;
	}
	snprintf(off, sizeof(off), "%llu", (unsigned long long)e->offset);
	argv[0] = "HSET";
	argv[2] = "offset";
	argv[3] = off;
	argv[4] = "location";
	argv[5] = e->location;
	lens[0] = 4;
	lens[2] = 6;
	lens[3] = strlen(off);
	lens[4] = 8;
	lens[5] = strlen(e->location);
	if (rds_command_argv(u->rds, upl_on_write, NULL, 6, argv, lens) == -1)
		return;
	/* Abandoned uploads leave Redis on their own. */
	snprintf(ttl, sizeof(ttl), "%d", req->conf->upload_ttl_ms);
	argv[0] = "PEXPIRE";
	argv[2] = ttl;
	lens[0] = 7;
	lens[2] = strlen(ttl);
	(void)rds_command_argv(u->rds, upl_on_write, NULL, 3, argv, lens);
}

static struct upload *
upl_find(struct uploads *u, const char *key, size_t klen, uint64_t h)
{
	struct upload	*e;

	if (u == NULL)
		return (NULL);
	for (e = u->buckets[h & (u->nbuckets - 1)]; e != NULL; e = e->hnext)
		if (e->hash == h && e->klen == klen &&
		    memcmp(e->key, key, klen) == 0)
			return (e);
	return (NULL);
}

static void
upl_remove(struct uploads *u, struct upload *e)
{
	struct upload	**pp;

	for (pp = &u->buckets[e->hash & (u->nbuckets - 1)]; *pp != e;
	    pp = &(*pp)->hnext)
		;
	*pp = e->hnext;
	TAILQ_REMOVE(&u->lru, e, lru);
	u->n--;
	free(e->key);
	free(e->location);
	free(e);
}

/* Free the table (at shutdown).  NULL is fine. */
void
uploads_free(struct uploads *u)
{
	struct upload	*e;

	if (u == NULL)
		return;
	rds_free(u->rds);	/* waiting requests are gone: replies NULL */
	while ((e = TAILQ_FIRST(&u->lru)) != NULL)
		upl_remove(u, e);
	free(u->buckets);
	free(u);
}

/* "0-E" (registries' Range): E, or -1. */
static int64_t
upl_range_end(const char *v)
{
	char		*ep;
	long long	 e;

	if (v == NULL || strncmp(v, "0-", 2) != 0 || v[2] < '0' ||
	    v[2] > '9')
		return (-1);
	e = strtoll(v + 2, &ep, 10);
	if (*ep != '\0' || e < 0)
		return (-1);
	return (e);
}

/* The upload id in a Location's path (".../blobs/uploads/<id>[?...]"). */
static int
upl_loc_id(const char *loc, char *id, size_t len)
{
	const char	*p, *q;
	size_t		 n;

	if (loc == NULL || (p = strstr(loc, "/blobs/uploads/")) == NULL)
		return (-1);
	p += 15;
	q = p + strcspn(p, "?#");
	n = (size_t)(q - p);
	if (n == 0 || n >= len || !router_valid_upload_id(p, n))
		return (-1);
	memcpy(id, p, n);
	id[n] = '\0';
	return (0);
}

/*
 * The upstream answered a request of an upload (its start, a chunk, a
 * status, its end) with `status`: `up_hdrs` are the upstream's fields,
 * `client_loc` the Location as the client gets it (NULL: none).  Keep
 * or forget what the upload is now.
 */
void
uploads_note(struct req *req, int status, const struct headers *up_hdrs,
    const char *client_loc)
{
	struct uploads	*u;
	struct upload	*e;
	char		 key[OCI_NAME_MAX * 2 + OCI_REF_MAX + 16];
	char		 id[OCI_REF_MAX + 1];
	size_t		 klen, max = req->conf->upload_sessions;
	uint64_t	 h, off;
	int64_t		 end;
	int		 m = req->msg->method;

	if (max == 0 || req->up == NULL)
		return;
	if (req->route.ep == OCI_EP_UPLOAD)
		snprintf(id, sizeof(id), "%s", req->route.ref);
	else if (req->route.ep != OCI_EP_UPLOAD_START ||
	    upl_loc_id(headers_get(up_hdrs, "Location"), id,
	    sizeof(id)) == -1)
		return;
	if ((klen = upl_key(req, id, key, sizeof(key))) == 0)
		return;
	h = upl_hash(key, klen);
	e = upl_find(req->c->ctx->uploads, key, klen, h);
	/* The end of the upload: completed, cancelled, or gone upstream. */
	if (status == 404 || (status >= 200 && status < 300 &&
	    (m == HTTP_PUT || m == HTTP_DELETE))) {
		if (e != NULL)
			upl_remove(req->c->ctx->uploads, e);
		upl_redis_note(req, key, klen, NULL);
		return;
	}
	if ((status != 202 && status != 204) || client_loc == NULL ||
	    strlen(client_loc) >= UPL_LOC_MAX ||
	    (end = upl_range_end(headers_get(up_hdrs, "Range"))) == -1)
		return;
	/*
	 * "0-E" holds E + 1 bytes, but registries also write "0-0" for an
	 * empty upload: then the offset is what this request added to what
	 * was known (a PATCH's body), which tells 0 from 1.
	 */
	if (end > 0)
		off = (uint64_t)end + 1;
	else if (m == HTTP_PATCH)
		off = (e != NULL ? e->offset : 0) + req->bytes_in;
	else
		off = e != NULL && e->offset <= 1 ? e->offset : 0;
	u = upl_table(req->c->ctx, max);
	if (e == NULL) {
		while (u->n >= max && (e = TAILQ_LAST(&u->lru, upload_lru)) !=
		    NULL)
			upl_remove(u, e);
		if ((e = calloc(1, sizeof(*e))) == NULL ||
		    (e->key = malloc(klen)) == NULL)
			fatal("uploads");
		memcpy(e->key, key, klen);
		e->klen = klen;
		e->hash = h;
		e->hnext = u->buckets[h & (u->nbuckets - 1)];
		u->buckets[h & (u->nbuckets - 1)] = e;
		u->n++;
	} else
		TAILQ_REMOVE(&u->lru, e, lru);
	TAILQ_INSERT_HEAD(&u->lru, e, lru);
	free(e->location);
	if ((e->location = strdup(client_loc)) == NULL)
		fatal("strdup");
	e->offset = off;
	upl_redis_note(req, key, klen, e);
	log_debug("%llu.%u upload state id=%s offset=%llu",
	    (unsigned long long)req->c->id, req->seq, id,
	    (unsigned long long)off);
}

/* "S-E" or "bytes S-E[/...]": S, or -1 when it is neither. */
static int64_t
upl_content_range_start(const char *v)
{
	char		*ep;
	long long	 s;

	if (v == NULL)
		return (-1);
	if (strncmp(v, "bytes ", 6) == 0)
		v += 6;
	if (*v < '0' || *v > '9')
		return (-1);
	s = strtoll(v, &ep, 10);
	if (*ep != '-' || s < 0)
		return (-1);
	return (s);
}

/* The upload's Range and Location fields, for a 204 or a 416. */
static void
upl_fields(struct headers *h, const struct upload *e, const char *id)
{
	char	range[48];
	int	n;

	n = snprintf(range, sizeof(range), "0-%llu",
	    (unsigned long long)(e->offset > 0 ? e->offset - 1 : 0));
	headers_add(h, "Range", 5, range, n);
	headers_add(h, "Location", 8, e->location, strlen(e->location));
	headers_add(h, "Docker-Upload-UUID", 18, id, strlen(id));
}

/*
 * Answer a request of the upload `e` knows: a GET from here, a PATCH
 * that does not start at the offset with 416.  1 when answered, 0 when
 * the request goes on to the upstream.
 */
static int
upl_decide(struct req *req, const struct upload *e)
{
	struct headers	 h;
	char		 detail[160];
	int64_t		 s;

	headers_init(&h);
	upl_fields(&h, e, req->route.ref);
	if (req->msg->method == HTTP_GET) {
		req_respond_simple(req, 204, NULL, NULL, &h);
		headers_clear(&h);
		return (1);
	}
	s = upl_content_range_start(headers_get(&req->msg->hdrs,
	    "Content-Range"));
	if (s == -1 || (uint64_t)s == e->offset) {
		headers_clear(&h);
		return (0);
	}
	snprintf(detail, sizeof(detail), "chunk starts at %lld, the upload "
	    "is at %llu", (long long)s, (unsigned long long)e->offset);
	req_fail_with(req, ERR_RANGE_INVALID, detail, &h);
	headers_clear(&h);
	return (1);
}

static void
upl_wait_destroy(void *arg)
{
	free(arg);
}

/* Retire the stage; its memory goes once the reply is in too. */
static void
upl_wait_free(void *arg)
{
	struct upl_wait	*w = arg;

	if (w->retired)
		return;
	w->retired = 1;
	w->req = NULL;
	if (!w->inflight)
		conn_reap_later(w->ctx, &w->reap, upl_wait_destroy, w);
}

static const struct req_stage_ops upl_wait_ops = {
	"upload",
	NULL,
	NULL,
	upl_wait_free
};

/* This instance's memory of the upload, or NULL. */
static struct upload *
upl_local(struct req *req)
{
	char	key[OCI_NAME_MAX * 2 + OCI_REF_MAX + 16];
	size_t	klen;

	if ((klen = upl_key(req, req->route.ref, key, sizeof(key))) == 0)
		return (NULL);
	return (upl_find(req->c->ctx->uploads, key, klen,
	    upl_hash(key, klen)));
}

/*
 * Redis said what the upload is (a hash of offset and location, or
 * nothing: unknown, or ended through another instance).  No reply (the
 * link went): this instance's memory decides.
 */
static void
upl_on_state(struct rds *l, redisReply *r, void *arg)
{
	struct upl_wait	*w = arg;
	struct req	*req = w->req;
	struct upload	 e, *ep = NULL;
	const char	*f, *v;
	char		*end;
	size_t		 i;
	int		 have;

	w->inflight = 0;
	if (w->retired) {
		conn_reap_later(w->ctx, &w->reap, upl_wait_destroy, w);
		return;
	}
	memset(&e, 0, sizeof(e));
	have = 0;
	if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
		log_info("%llu.%u upload redis_unavailable from=memory",
		    (unsigned long long)req->c->id, req->seq);
		ep = upl_local(req);
	} else {
		for (i = 0; i + 1 < r->elements; i += 2) {
			if (r->element[i]->type != REDIS_REPLY_STRING ||
			    r->element[i + 1]->type != REDIS_REPLY_STRING)
				continue;
			f = r->element[i]->str;
			v = r->element[i + 1]->str;
			if (strcmp(f, "offset") == 0 && *v >= '0' &&
			    *v <= '9') {
				e.offset = strtoull(v, &end, 10);
				have = *end == '\0';
			} else if (strcmp(f, "location") == 0 &&
			    r->element[i + 1]->len < UPL_LOC_MAX)
				e.location = (char *)v;
		}
		if (have && e.location != NULL)
			ep = &e;
	}
	log_debug("%llu.%u upload state from=%s known=%d",
	    (unsigned long long)req->c->id, req->seq,
	    r != NULL && r->type == REDIS_REPLY_ARRAY ? "redis" : "memory",
	    ep != NULL);
	if (ep != NULL && upl_decide(req, ep))
		return;			/* answered: w retired */
	req->upload_checked = 1;
	req_stage_next(req);		/* on to the upstream */
}

/*
 * Before a request of a known upload goes upstream: answer a GET from
 * here, refuse a PATCH that does not start at the offset (416).  With
 * Redis, ask it first (the request waits as the `upload` stage).  1
 * when the request was answered or waits, 0 when it goes on to the
 * upstream.
 */
int
uploads_answer(struct req *req)
{
	struct uploads	*u = req->c->ctx->uploads;
	struct upl_wait	*w;
	struct upload	*e;
	const char	*argv[2];
	size_t		 lens[2], klen;
	char		 key[OCI_NAME_MAX * 2 + OCI_REF_MAX + 16];
	char		 rkey[OCI_NAME_MAX * 2 + OCI_REF_MAX + 64];
	int		 m = req->msg->method;

	if (req->route.ep != OCI_EP_UPLOAD || req->conf->upload_sessions == 0 ||
	    req->upload_checked || (m != HTTP_GET && m != HTTP_PATCH) ||
	    (klen = upl_key(req, req->route.ref, key, sizeof(key))) == 0)
		return (0);
	if (u != NULL && u->rds != NULL && rds_ready(u->rds) &&
	    upl_rkey(key, klen, rkey, sizeof(rkey)) == 0) {
		if ((w = calloc(1, sizeof(*w))) == NULL)
			fatal("calloc");
		w->req = req;
		w->ctx = req->c->ctx;
		argv[0] = "HGETALL";
		argv[1] = rkey;
		lens[0] = 7;
		lens[1] = strlen(rkey);
		if (rds_command_argv(u->rds, upl_on_state, w, 2, argv,
		    lens) == 0) {
			w->inflight = 1;
			req_stage_set(req, &upl_wait_ops, w);
			return (1);
		}
		free(w);
	}
	if ((e = upl_find(u, key, klen, upl_hash(key, klen))) == NULL)
		return (0);
	return (upl_decide(req, e));
}
