/*
 * audit.c: the audit writer's record queue and admission.  Every request
 * the gateway answers (but /healthz, /readyz and /metrics) becomes one
 * record, built here from the finished struct req (or, for a request the
 * framer refused, from what is known), numbered, and kept: in a bounded
 * memory queue that audit_redis.c sends to a Redis stream, or in the
 * spool (audit_spool.c) while Redis is away and until the spool has been
 * replayed.  This file also owns the writer's state (struct audit, in
 * audit.h), its start and stop, the timer that enforces audit.timeout
 * and the fsync interval, and the reject policy's admission stage.
 *
 * Nothing lost: with audit.wal (the default) the spool file is a
 * write-ahead log: a record is appended to it (CRC-framed, see audit.h)
 * when it is taken, before its response's last byte is handed to a
 * plain socket and before it is sent to Redis, and the memory queue
 * holds a copy for sending; the prefix Redis acknowledged is released
 * (audit_spool.c).  A killed gateway so loses nothing: the page cache
 * keeps the file, and the next start replays what follows the
 * acknowledged mark.  Without the WAL, records reach the file only when
 * Redis is down, slow (queue full, reply late) or refusing writes (an
 * error reply): then every record not yet acknowledged goes there, in
 * order.  Either way, from then on every new record is appended there
 * too, until the file has been replayed, in order, once Redis is back;
 * and a new process replays what the last one left, after dropping a
 * torn tail.  With the spool full, audit.on_failure decides: drop the
 * record (counted, logged once a second) or reject requests with 503
 * before they are served (audit_admit(), which reserves the space its
 * record needs).  A stop gives Redis up to audit.timeout to acknowledge
 * what is queued (audit_settle()); the rest stays in the spool.
 *
 * None twice: each record carries a stable id, "<instance>/<run>-<n>":
 * run is this process's number (one more than the spool header's last,
 * and at least the wall clock in ms, so a lost spool cannot reuse one),
 * n counts the records of the run from 1 without gaps.  The writer's
 * script (audit_redis.c) keeps, per gateway instance, the id of the last
 * record it wrote (hash <stream>:writers) and atomically skips the
 * records at or below it.  So replaying something Redis already has (a
 * crash between XADD and the spool's truncation, a reply lost with the
 * connection) writes nothing, and the stream holds each record exactly
 * once, in order.  A batch holds consecutive records of one run; one
 * whose first new record's predecessor is missing (an earlier pipelined
 * batch failed) is refused with a GAP error and everything from the
 * oldest unacknowledged record is sent again; a record this process has
 * to give up after numbering it (spool write error) starts a new run, so
 * no gap is ever waited for.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#endif

#include "portcullis.h"
#include "audit.h"

#define AUDIT_TICK_MS		200

/* The wall clock in ms, for record times and run numbers. */
uint64_t
audit_wall_ms(void)
{
	struct timespec	ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return ((uint64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
}

/*
 * Records of up to AUDIT_REC_SLOT bytes (nearly all) are kept for reuse
 * when freed, up to AUDIT_POOL_MAX of them: a batch allocates and frees
 * 128 at a time, more than malloc's per-thread cache holds, and malloc
 * and free were a tenth of what audit added to a request's CPU
 * (bench/audit_wal_perf.sh, "nowal" next to "off").
 */
#define AUDIT_REC_SLOT		640
#define AUDIT_POOL_MAX		512

/*
 * With AddressSanitizer (--enable-asan) a pooled record is poisoned but
 * for its list entry, as free(3) would make it: a use after it went back
 * to the pool is reported instead of reading a reused record.
 */
#if defined(__SANITIZE_ADDRESS__)
#define AUDIT_POOL_BODY		(sizeof(struct audit_rec) + AUDIT_REC_SLOT - \
	    offsetof(struct audit_rec, spool_end))
#define AUDIT_POOL_POISON(r)	\
	ASAN_POISON_MEMORY_REGION(&(r)->spool_end, AUDIT_POOL_BODY)
#define AUDIT_POOL_UNPOISON(r)	\
	ASAN_UNPOISON_MEMORY_REGION(&(r)->spool_end, AUDIT_POOL_BODY)
#else
#define AUDIT_POOL_POISON(r)	do { } while (0)
#define AUDIT_POOL_UNPOISON(r)	do { } while (0)
#endif

/* A record with room for len bytes; its fields are the caller's. */
struct audit_rec *
audit_rec_new(struct audit *w, size_t len)
{
	struct audit_rec	*r;

	if (len <= AUDIT_REC_SLOT && (r = TAILQ_FIRST(&w->pool)) != NULL) {
		TAILQ_REMOVE(&w->pool, r, entry);
		w->npool--;
		AUDIT_POOL_UNPOISON(r);
		return (r);
	}
	if ((r = malloc(sizeof(*r) + (len <= AUDIT_REC_SLOT ?
	    AUDIT_REC_SLOT : len))) == NULL)
		fatal("malloc");
	return (r);
}

/* Free a record of audit_rec_new(); r->len says how it was made. */
void
audit_rec_free(struct audit *w, struct audit_rec *r)
{
	if (r->len <= AUDIT_REC_SLOT && w->npool < AUDIT_POOL_MAX) {
		TAILQ_INSERT_HEAD(&w->pool, r, entry);
		w->npool++;
		AUDIT_POOL_POISON(r);
		return;
	}
	free(r);
}

/* The next record to send, the spool first, then the memory queue. */
struct audit_rec *
audit_next(struct audit *w)
{
	struct audit_rec	*r;

	for (;;) {
		if (w->mode == AUDIT_SPOOL) {
			if (w->spool_rd >= w->spool_size) {
				/* Caught up: new records may skip the disk. */
				w->mode = AUDIT_DIRECT;
				if (w->spool_acked == w->spool_size)
					audit_spool_reset(w);
				continue;
			}
			if ((r = audit_spool_read(w)) == NULL)
				continue;
			w->n_replayed++;
			return (r);
		}
		if ((r = TAILQ_FIRST(&w->queue)) == NULL)
			return (NULL);
		TAILQ_REMOVE(&w->queue, r, entry);
		w->nqueue--;
		w->qbytes -= r->len;
		w->ifbytes += r->len;
		return (r);
	}
}

/*
 * Give back the record audit_next() returned last: it goes first next
 * time.  A memory record goes back to the head of the queue; a spool
 * record is read again.
 */
void
audit_unnext(struct audit *w, struct audit_rec *r)
{
	if (r->from_spool) {
		w->spool_rd = r->spool_end - r->len - AUDIT_SPOOL_FRAME;
		w->mode = AUDIT_SPOOL;
		w->n_replayed--;
		audit_rec_free(w, r);
		return;
	}
	w->ifbytes -= r->len;
	TAILQ_INSERT_HEAD(&w->queue, r, entry);
	w->nqueue++;
	w->qbytes += r->len;
}

/* Every AUDIT_TICK_MS: timeouts, the fsync interval, rate-limited logs. */
static void
audit_tick_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct audit		*w = arg;
	struct audit_rec	*r;
	uint64_t		 t = now_ms();

	/* Connecting, AUTH and SELECT are timed by the link (rds.c). */
	if (w->link == LINK_LOADING &&
	    t - w->link_since > (uint64_t)w->ac->timeout_ms)
		audit_link_lost(w, "connect timeout");
	else if (w->link == LINK_READY &&
	    (r = TAILQ_FIRST(&w->inflight)) != NULL &&
	    t - r->sent_ms > (uint64_t)w->ac->timeout_ms)
		audit_link_lost(w, "reply timeout");
	audit_spool_alloc(w);		/* the disk was full at start */
	if (w->ac->wal) {
		/* Idle: empty the file; and keep the mark near the truth. */
		if (w->spool_acked == w->spool_size)
			audit_spool_release(w, 1);
		audit_spool_mark_write(w);
	}
	audit_fsync_reap(w);
	if (w->ac->fsync == CONFIG_FSYNC_INTERVAL && w->spool_dirty &&
	    t - w->last_fsync_ms >= 1000)
		audit_fsync_interval(w);
	if (w->n_dropped != w->n_dropped_logged ||
	    w->n_rejected != w->n_rejected_logged) {
		if (t - w->err_logged_ms >= 1000) {
			log_warn("- audit spool_full dropped=%llu "
			    "rejected=%llu spool_bytes=%llu",
			    (unsigned long long)w->n_dropped,
			    (unsigned long long)w->n_rejected,
			    (unsigned long long)audit_spool_used(w));
			w->n_dropped_logged = w->n_dropped;
			w->n_rejected_logged = w->n_rejected;
			w->err_logged_ms = t;
		}
	}
}

/* Start the writer: open the spool and connect.  NULL and *cause. */
struct audit *
audit_new(struct pc_ctx *ctx, char **cause)
{
	struct audit	*w;
	struct timeval	 tv = { 0, AUDIT_TICK_MS * 1000 };

	if ((w = calloc(1, sizeof(*w))) == NULL)
		fatal("calloc");
	w->ctx = ctx;
	w->conf = ctx->conf;
	config_ref(w->conf);
	w->ac = w->conf->audit;
	w->fd = -1;
	TAILQ_INIT(&w->queue);
	TAILQ_INIT(&w->inflight);
	TAILQ_INIT(&w->pool);
	if (asprintf(&w->kw, "%s:writers", w->ac->stream) == -1 ||
	    asprintf(&w->ki, "%s:indexes", w->ac->stream) == -1)
		fatal("asprintf");
	snprintf(w->maxlen, sizeof(w->maxlen), "%zu", w->ac->max_len);
	snprintf(w->maxage, sizeof(w->maxage), "%llu",
	    (unsigned long long)w->ac->max_age * 1000);
	snprintf(w->maxidx, sizeof(w->maxidx), "%zu", w->ac->max_index_keys);
	if (audit_spool_open(w, cause) == -1) {
		/* Not ours to write to: never spool into it. */
		if (w->fd != -1)
			close(w->fd);
		w->fd = -1;
		audit_free(w);
		return (NULL);
	}
	w->ev_kick = event_new(ctx->base, -1, 0, audit_kick_cb, w);
	w->ev_linger = evtimer_new(ctx->base, audit_kick_cb, w);
	w->ev_tick = event_new(ctx->base, -1, EV_PERSIST, audit_tick_cb, w);
	evtimer_add(w->ev_tick, &tv);
	audit_connect(w);
	return (w);
}

/*
 * A graceful stop (the connections are gone): give Redis up to
 * audit.timeout to acknowledge the records held in memory, running the
 * loop for it, so that a clean stop with Redis up leaves nothing to
 * replay.  A lost link, a reply timeout (the tick) or the deadline ends
 * it: the rest is in the spool.  The loop's exit flag is no signal here
 * (the drain may have asked for an exit more than once), so a second
 * SIGTERM does not cut it short; audit.timeout bounds it.
 */
static void
audit_settle(struct audit *w)
{
	struct event_base	*base = w->ctx->base;
	uint64_t		 deadline;
	int			 loops = 0;

	if (base == NULL || w->rds == NULL || w->link != LINK_READY ||
	    (w->nqueue == 0 && w->ifbytes == 0))
		return;
	deadline = now_ms() + w->ac->timeout_ms;
	audit_flush(w);
	/* The tick wakes the loop at least every AUDIT_TICK_MS. */
	while (w->link == LINK_READY && (w->nqueue > 0 || w->ifbytes > 0) &&
	    now_ms() < deadline && loops++ < 100000) {
		if (event_base_loop(base, EVLOOP_ONCE) == -1)
			break;
	}
	log_info("- audit settle queued=%zu inflight=%zu", w->nqueue,
	    w->ninflight);
}

/*
 * Stop the writer: after a bounded wait for Redis (audit_settle()),
 * whatever it has not acknowledged is in the spool, for the next run to
 * replay.  NULL is fine.
 */
void
audit_free(struct audit *w)
{
	struct audit_rec	*r;

	if (w == NULL)
		return;
	if (w->fd != -1)
		audit_settle(w);
	audit_redis_close(w);
	if (w->fd != -1) {
		audit_spool_unacked(w);
		if (w->spool_acked == w->spool_size)
			audit_spool_release(w, 1);
		log_info("- audit stop written=%llu duplicates=%llu "
		    "spooled=%llu replayed=%llu dropped=%llu rejected=%llu "
		    "spool_bytes=%llu released=%llu",
		    (unsigned long long)w->n_written,
		    (unsigned long long)w->n_dup,
		    (unsigned long long)w->n_spooled,
		    (unsigned long long)w->n_replayed,
		    (unsigned long long)w->n_dropped,
		    (unsigned long long)w->n_rejected,
		    (unsigned long long)audit_spool_used(w),
		    (unsigned long long)w->n_released);
		audit_spool_close(w);
	}
	if (w->ev_kick != NULL)
		event_free(w->ev_kick);
	if (w->ev_linger != NULL)
		event_free(w->ev_linger);
	if (w->ev_tick != NULL)
		event_free(w->ev_tick);
	while ((r = TAILQ_FIRST(&w->pool)) != NULL) {
		TAILQ_REMOVE(&w->pool, r, entry);
		AUDIT_POOL_UNPOISON(r);
		free(r);
	}
	config_unref(w->conf);
	free(w->kw);
	free(w->ki);
	free(w->cmd);
	free(w->tmp_path);
	free(w->spool_dir);
	free(w);
}

/* Requests that are not audited: probes that would drown the stream. */
static int
audit_exempt(const char *path)
{
	return (strcmp(path, "/healthz") == 0 ||
	    strcmp(path, "/readyz") == 0 || strcmp(path, "/metrics") == 0);
}

/* What the request did, for the record and the indexes. */
static const char *
audit_action(const struct req *req)
{
	int	m = req->msg != NULL ? (int)req->msg->method : -1;

	if (!req->is_v2) {
		if (strcmp(req->path, "/token") == 0)
			return ("token");
		if (strcmp(req->path, "/login") == 0 ||
		    strcmp(req->path, "/logout") == 0 ||
		    strncmp(req->path, "/oauth2/", 8) == 0)
			return ("login");
		if (strncmp(req->path, "/admin/", 7) == 0 ||
		    strcmp(req->path, "/metrics") == 0)
			return ("admin");
		if (strncmp(req->path, "/ui/secrets", 11) == 0)
			return ("secret");
		return ("other");
	}
	if (strcmp(req->path, "/v2") == 0 || strcmp(req->path, "/v2/") == 0)
		return ("ping");
	if (strcmp(req->path, "/v2/_catalog") == 0)
		return ("catalog");
	/* An upload's status (GET) is part of a push, as the policy says. */
	if (req->up != NULL && (req->route.ep == OCI_EP_UPLOAD ||
	    req->route.ep == OCI_EP_UPLOAD_START))
		return ("push");
	switch (m) {
	case HTTP_GET:
	case HTTP_HEAD:
		return ("pull");
	case HTTP_DELETE:
		return ("delete");
	case HTTP_PUT:
	case HTTP_POST:
	case HTTP_PATCH:
		return ("push");
	default:
		return ("other");
	}
}

static const char *
audit_decision(const struct req *req)
{
	if (req->decision != NULL)
		return (req->decision);
	switch (req->err) {
	case ERR_UNAUTHORIZED:
	case ERR_DENIED:
	case ERR_TOO_MANY_REQUESTS:
		return ("deny");
	default:
		return ("");
	}
}

/*
 * Whether a record in memory is kept out of the WAL (its write failed):
 * the records after it stay out too, so that the file never holds one
 * record before an older one (a link loss spools the unlogged ones at its
 * end; the replay must send them in order).  A scan only after a failure.
 */
static int
audit_unspooled_pending(struct audit *w)
{
	struct audit_rec	*r;

	if (!w->unspooled)
		return (0);
	TAILQ_FOREACH(r, &w->inflight, entry)
		if (r->spool_end == 0)
			return (1);
	TAILQ_FOREACH(r, &w->queue, entry)
		if (r->spool_end == 0)
			return (1);
	w->unspooled = 0;
	return (0);
}

/*
 * Take a record into the queue or the spool.  Its id is assigned here,
 * only once it is kept.  Returns 0, or -1 when it was dropped.
 */
static int
audit_submit(struct audit *w, struct audit_buf *b, uint64_t t,
    const struct audit_buf *rest)
{
	struct audit_rec	*r;
	char			 id[AUDIT_VALUE_MAX], *p;
	size_t			 len, nlen, restlen = rest->len;
	int			 logged = 0, f;

	audit_buf_init(b);
	audit_buf_addu(b, AF_TIME, t);
	memcpy(id, w->idpfx, w->idpfxlen);
	p = audit_u64(id + w->idpfxlen, w->next_n + 1);
	nlen = id + w->idpfxlen + AUDIT_U64_MAX - p;
	memmove(id + w->idpfxlen, p, nlen);
	audit_buf_add(b, AF_ID, id, w->idpfxlen + nlen);
	if (b->len + restlen > sizeof(b->data)) {
		w->n_dropped++;
		return (-1);
	}
	memcpy(b->data + b->len, rest->data, restlen);
	/* Where rest's values landed, for audit_flush(). */
	for (f = 0; f < AF__MAX; f++)
		if (f != AF_TIME && f != AF_ID) {
			b->voff[f] = rest->voff[f] + b->len;
			b->vlen[f] = rest->vlen[f];
		}
	b->len += restlen;
	len = b->len;
	if (w->mode == AUDIT_DIRECT && w->nqueue + w->ninflight >=
	    w->ac->queue_max) {
		/* Redis is too slow to keep up: the spool takes over. */
		if (w->link != LINK_DOWN)
			audit_link_lost(w, "queue full");
		else
			audit_spool_unacked(w);
		/* The run may have changed: renumber. */
		return (audit_submit(w, b, t, rest));
	}
	if (w->mode == AUDIT_DIRECT) {
		/*
		 * The WAL: on file before it is sent, and before the
		 * response's last byte goes out, which a plain socket
		 * writes on a later loop turn (OpenSSL's bufferevent may
		 * have written it already, microseconds ago).
		 */
		/*
		 * A record the disk refuses (full) is sent as with wal
		 * false, as the gathered records whose write failed are
		 * (audit_wal_write()), and so are the ones after it until
		 * it is acknowledged or spooled (audit_unspooled_pending).
		 */
		if (w->ac->wal && !audit_unspooled_pending(w)) {
			if (audit_spool_append(w, b->data, len) == 0)
				logged = 1;
			else if (!w->wal_failed) {
				w->n_dropped++;
				return (-1);
			} else
				w->unspooled = 1;
		}
		r = audit_rec_new(w, len);
		r->spool_end = logged ? w->spool_size : 0;
		r->crc = w->append_crc;
		r->from_spool = 0;
		r->len = len;
		memcpy(r->data, b->data, len);
		memcpy(r->voff, b->voff, sizeof(r->voff));
		memcpy(r->vlen, b->vlen, sizeof(r->vlen));
		TAILQ_INSERT_TAIL(&w->queue, r, entry);
		w->nqueue++;
		w->qbytes += len;
	} else if (audit_spool_append(w, b->data, len) == -1) {
		w->n_dropped++;
		return (-1);
	}
	w->next_n++;
	audit_kick(w);
	return (0);
}

/* Everything but time and id, which audit_submit() puts first. */
static void
audit_fill(struct audit_buf *b, const struct req *req, const char *inst)
{
	const char	*ua = NULL, *ref = "", *am = "none";
	char		 digest[OCI_REF_MAX + 1];
	size_t		 qlen;

	if (req->msg != NULL)
		ua = headers_get(&req->msg->hdrs, "User-Agent");
	if (req->is_v2 && req->route.name[0] != '\0') {
		if (req->route.ep == OCI_EP_UPLOAD && req->query != NULL &&
		    (qlen = strlen(req->query)) > 0 &&
		    url_query_get(req->query, qlen, "digest", digest,
		    sizeof(digest)) == 0)
			ref = digest;
		else if (req->route.ep == OCI_EP_MANIFEST ||
		    req->route.ep == OCI_EP_BLOB ||
		    req->route.ep == OCI_EP_REFERRERS)
			ref = req->route.ref;
	}
	audit_buf_add(b, AF_REQUEST_ID, req->request_id,
	    strlen(req->request_id));
	audit_buf_add(b, AF_INSTANCE, inst, strlen(inst));
	audit_buf_add(b, AF_CLIENT_IP, req->c->peer, strlen(req->c->peer));
	audit_buf_add(b, AF_USER_AGENT, ua, ua != NULL ? strlen(ua) : 0);
	/*
	 * The principal (identity.c), never a credential.  An anonymous
	 * caller is written as subject "anonymous", method "none", as
	 * before there were identities, so queries and index keys keep.
	 */
	if (req->principal.subject != NULL &&
	    req->principal.subject[0] != '\0') {
		audit_buf_add(b, AF_SUBJECT, req->principal.subject,
		    strlen(req->principal.subject));
		am = principal_method_name(req->principal.method);
	} else
		audit_buf_add(b, AF_SUBJECT, "anonymous", 9);
	audit_buf_add(b, AF_AUTH_METHOD, am, strlen(am));
	audit_buf_add(b, AF_ACTION, audit_action(req),
	    strlen(audit_action(req)));
	audit_buf_add(b, AF_REPOSITORY, req->is_v2 ? req->route.name : "",
	    req->is_v2 ? strlen(req->route.name) : 0);
	audit_buf_add(b, AF_REFERENCE, ref, strlen(ref));
	audit_buf_add(b, AF_UPSTREAM, req->up != NULL ? req->up->name : "",
	    req->up != NULL ? strlen(req->up->name) : 0);
	audit_buf_add(b, AF_METHOD, req->method, strlen(req->method));
	audit_buf_add(b, AF_PATH, req->path, strlen(req->path));
	audit_buf_addu(b, AF_STATUS, req->status > 0 ? req->status : 0);
	/* The gateway's own error, else the upstream's relayed one. */
	if (req->err != ERR_NONE)
		audit_buf_add(b, AF_ERROR, errs_code(req->err),
		    strlen(errs_code(req->err)));
	else
		audit_buf_add(b, AF_ERROR, req->up_error,
		    strlen(req->up_error));
	audit_buf_add(b, AF_DECISION, audit_decision(req),
	    strlen(audit_decision(req)));
	audit_buf_add(b, AF_RULE, req->rule, req->rule != NULL ?
	    strlen(req->rule) : 0);
	audit_buf_addu(b, AF_BYTES_IN, req->bytes_in);
	audit_buf_addu(b, AF_BYTES_OUT, req->bytes_out);
	audit_buf_addu(b, AF_DURATION_MS, (req->done_ms != 0 ? req->done_ms :
	    now_ms()) - req->start_ms);
	audit_buf_add(b, AF_CACHE, req->cache_status, req->cache_status !=
	    NULL ? strlen(req->cache_status) : 0);
	/* Why credentials were refused: a fixed name, never a credential. */
	audit_buf_add(b, AF_AUTH_FAILURE, req->auth_failure,
	    req->auth_failure != NULL ? strlen(req->auth_failure) : 0);
}

/*
 * The request is finished (from req_free()): write its record.  Also
 * releases what audit_admit() reserved.
 */
void
audit_request(struct req *req)
{
	struct audit		*w = req->c->ctx->audit;
	struct audit_buf	 rest, b;

	if (w == NULL)
		return;
	if (req->audit_admitted) {
		w->reserved -= AUDIT_SPOOL_FRAME + AUDIT_REC_MAX;
		req->audit_admitted = 0;
	}
	/* A refused scrape is a denial like any other: recorded. */
	if (audit_exempt(req->path) && (req->decision == NULL ||
	    strcmp(req->decision, "deny") != 0))
		return;
	audit_buf_init(&rest);
	audit_fill(&rest, req, w->conf->instance_id);
	w->wal_now = audit_wal_now(req->c);	/* audit_spool.c */
	audit_submit(w, &b, audit_wall_ms(), &rest);
	w->wal_now = 0;
}

/*
 * A request the framer refused before a struct req existed (400, 414,
 * 431, 408): its record has what is known, the peer and the status, and
 * the id, body bytes and duration its answer and log line carry.
 */
void
audit_framing(struct conn *c, int status, enum pc_err err, const char *rid,
    uint64_t bytes_out, uint64_t duration_ms)
{
	struct audit		*w = c->ctx->audit;
	struct audit_buf	 rest, b;
	size_t			 i;
	const char		*code = err != ERR_NONE ? errs_code(err) : "";

	if (w == NULL)
		return;
	audit_buf_init(&rest);
	audit_buf_add(&rest, AF_REQUEST_ID, rid, strlen(rid));
	audit_buf_add(&rest, AF_INSTANCE, w->conf->instance_id,
	    strlen(w->conf->instance_id));
	audit_buf_add(&rest, AF_CLIENT_IP, c->peer, strlen(c->peer));
	audit_buf_add(&rest, AF_USER_AGENT, "", 0);
	audit_buf_add(&rest, AF_SUBJECT, "anonymous", 9);
	audit_buf_add(&rest, AF_AUTH_METHOD, "none", 4);
	audit_buf_add(&rest, AF_ACTION, "other", 5);
	for (i = AF_REPOSITORY; i <= AF_PATH; i++)
		audit_buf_add(&rest, i, "", 0);
	audit_buf_addf(&rest, AF_STATUS, "%d", status);
	audit_buf_add(&rest, AF_ERROR, code, strlen(code));
	for (i = AF_DECISION; i <= AF_RULE; i++)
		audit_buf_add(&rest, i, "", 0);
	audit_buf_add(&rest, AF_BYTES_IN, "0", 1);
	audit_buf_addu(&rest, AF_BYTES_OUT, bytes_out);
	audit_buf_addu(&rest, AF_DURATION_MS, duration_ms);
	audit_buf_add(&rest, AF_CACHE, "", 0);
	audit_buf_add(&rest, AF_AUTH_FAILURE, "", 0);
	w->wal_now = audit_wal_now(c);		/* audit_spool.c */
	audit_submit(w, &b, audit_wall_ms(), &rest);
	w->wal_now = 0;
}

/*
 * The reject policy's stage, before a request is served: admit it only
 * when its record is sure to find room (the spool, counting what is
 * queued, in flight and reserved by other admitted requests).  Returns 0,
 * or -1: answer 503.
 */
int
audit_admit(struct req *req)
{
	struct audit	*w = req->c->ctx->audit;
	uint64_t	 need, committed;

	if (w == NULL || req->conf->audit == NULL ||
	    req->conf->audit->on_failure != CONFIG_AUDIT_REJECT ||
	    audit_exempt(req->path))
		return (0);
	need = AUDIT_SPOOL_FRAME + AUDIT_REC_MAX;
	/*
	 * The acknowledged part of the ring is free; with the WAL, records
	 * in memory are in the ring already.
	 */
	committed = audit_spool_used(w) + w->reserved;
	if (!w->ac->wal)
		committed += w->qbytes + w->ifbytes +
		    (w->nqueue + w->ninflight) * AUDIT_SPOOL_FRAME;
	if (committed + need > w->ring_size) {
		w->n_rejected++;
		return (-1);
	}
	/*
	 * While Redis is away the records go nowhere else (dropped when
	 * the disk refuses a step), so admit only what the file holds,
	 * allocated now if need be, with every record in memory that a
	 * link loss would append.  With Redis up, records go from memory.
	 */
	if ((w->mode == AUDIT_SPOOL || w->link != LINK_READY) &&
	    !audit_spool_allocated(w, w->reserved + need + (w->mode ==
	    AUDIT_DIRECT ? w->qbytes + w->ifbytes + (w->nqueue +
	    w->ninflight) * AUDIT_SPOOL_FRAME : 0))) {
		w->n_rejected++;
		return (-1);
	}
	w->reserved += need;
	req->audit_admitted = 1;
	return (0);
}
