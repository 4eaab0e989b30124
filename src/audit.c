/*
 * audit.c: the audit writer.  Every request the gateway answers (but
 * /healthz, /readyz and /metrics) becomes one record, built here from the
 * finished struct req, and goes to a Redis stream through hiredis' async
 * API on the gateway's own event loop: pipelined EVALSHA of one Lua
 * script that XADDs the record, XADDs a pointer to it to a per-subject and
 * a per-repository index stream (same entry id), trims all three and
 * advances the writer's high-water mark.  The loop never waits for Redis:
 * records wait in a bounded memory queue, and a reply slower than
 * audit.timeout counts as an outage.
 *
 * Nothing lost: when Redis is down, slow (queue full, reply late) or
 * refusing writes (an error reply), every record not yet acknowledged,
 * in order, goes to an append-only spool file (CRC-framed records, see
 * audit.h), and so does every new record until the spool has been
 * replayed, in order, once Redis is back.  The spool survives restarts:
 * a new process replays what the last one left, after dropping a torn
 * tail.  With the spool full, audit.on_failure decides: drop the record
 * (counted, logged once a second) or reject requests with 503 before they
 * are served (audit_admit(), which reserves the space its record needs).
 *
 * None twice: each record carries a stable id, "<instance>/<run>-<n>":
 * run is this process's number (one more than the spool header's last,
 * and at least the wall clock in ms, so a lost spool cannot reuse one),
 * n counts the records of the run from 1 without gaps.  The script keeps, per gateway
 * instance, the id of the last record it wrote (hash <stream>:writers)
 * and atomically skips a record at or below it.  So replaying something
 * Redis already has (a crash between XADD and the spool's truncation, a
 * reply lost with the connection) writes nothing, and the stream holds
 * each record exactly once, in order.  A record whose predecessor is
 * missing (an earlier pipelined one failed) is refused with a GAP error
 * and everything from the oldest unacknowledged record is sent again; a
 * record this process has to give up after numbering it (spool write
 * error) starts a new run, so no gap is ever waited for.
 */
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/uio.h>

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <hiredis/async.h>
#include <hiredis/adapters/libevent.h>

#include "portcullis.h"
#include "audit.h"

#define AUDIT_TICK_MS		200
#define AUDIT_BACKOFF_MIN_MS	100
#define AUDIT_BACKOFF_MAX_MS	5000
#define AUDIT_BATCH		64	/* records that are sent at once */
#define AUDIT_LINGER_US		2000	/* or after this long */

/*
 * KEYS: stream, writers hash, subject index, repository index ("" none).
 * ARGV: instance, run, n, max_len, max_age ms, index action, status,
 * decision, then the record's field/value pairs.
 * Returns 1 (written), 0 (a duplicate, skipped) or a GAP error.  The
 * shebang makes Redis refuse the whole script up front when it is out of
 * memory, read-only or failing to persist, instead of failing half-way.
 */
static const char audit_lua[] =
"#!lua\n"
"local run, n = tonumber(ARGV[2]), tonumber(ARGV[3])\n"
"local last = redis.call('HGET', KEYS[2], ARGV[1])\n"
"if last then\n"
"  local lr, ln = string.match(last, '^(%d+)-(%d+)$')\n"
"  lr, ln = tonumber(lr), tonumber(ln)\n"
"  if run < lr or (run == lr and n <= ln) then return 0 end\n"
"  if (run == lr and n ~= ln + 1) or (run > lr and n ~= 1) then\n"
"    return redis.error_reply('GAP writer ' .. ARGV[1] .. ' is at ' ..\n"
"      last .. ', got ' .. ARGV[2] .. '-' .. ARGV[3])\n"
"  end\n"
"end\n"
"local f = {}\n"
"for i = 9, #ARGV do f[#f + 1] = ARGV[i] end\n"
"local id\n"
"if ARGV[4] ~= '0' then\n"
"  id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], '*', unpack(f))\n"
"else\n"
"  id = redis.call('XADD', KEYS[1], '*', unpack(f))\n"
"end\n"
"local maxage = tonumber(ARGV[5])\n"
"if maxage > 0 then\n"
"  local t = redis.call('TIME')\n"
"  local min = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
"  redis.call('XTRIM', KEYS[1], 'MINID', '~',\n"
"    string.format('%.0f', min - maxage))\n"
"end\n"
"local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)\n"
"local firstid = id\n"
"if first[1] then firstid = first[1][1] end\n"
"for k = 3, 4 do\n"
"  if KEYS[k] ~= '' then\n"
"    local r = redis.pcall('XADD', KEYS[k], id, 'action', ARGV[6],\n"
"      'status', ARGV[7], 'decision', ARGV[8])\n"
"    if type(r) == 'table' and r.err then\n"
"      redis.call('DEL', KEYS[k])\n"
"      redis.call('XADD', KEYS[k], id, 'action', ARGV[6],\n"
"        'status', ARGV[7], 'decision', ARGV[8])\n"
"    end\n"
"    redis.call('XTRIM', KEYS[k], 'MINID', '~', firstid)\n"
"    if maxage > 0 then redis.call('PEXPIRE', KEYS[k], maxage) end\n"
"  end\n"
"end\n"
"redis.call('HSET', KEYS[2], ARGV[1], ARGV[2] .. '-' .. ARGV[3])\n"
"return 1\n";

/* One record: in the memory queue, or sent and not yet acknowledged. */
struct audit_rec {
	TAILQ_ENTRY(audit_rec)	 entry;
	uint64_t		 spool_end;	/* read from the spool: offset
						   after it; 0: from memory */
	uint64_t		 sent_ms;
	size_t			 len;
	char			 data[];
};
TAILQ_HEAD(audit_recq, audit_rec);

enum audit_mode {
	AUDIT_DIRECT,		/* new records: memory queue -> Redis */
	AUDIT_SPOOL		/* new records: spool; Redis replays it */
};

enum audit_link {
	LINK_DOWN,
	LINK_CONNECTING,
	LINK_LOADING,		/* SCRIPT LOAD sent */
	LINK_READY
};

/* An admin query waiting for Redis; its req may go away first. */
struct audit_waiter {
	TAILQ_ENTRY(audit_waiter) entry;
	struct req		*req;
	void			(*gone)(void *);
	void			*arg;
};

struct audit {
	struct pc_ctx		*ctx;
	struct config		*conf;		/* snapshot at start */
	const struct config_audit *ac;
	redisAsyncContext	*rc;
	enum audit_link		 link;
	uint64_t		 link_since;
	char			 sha[48];
	int			 backoff_ms;
	struct event		*ev_retry;
	struct event		*ev_tick;
	struct event		*ev_kick;
	struct event		*ev_linger;
	enum audit_mode		 mode;
	struct audit_recq	 queue;
	size_t			 nqueue;
	size_t			 qbytes;
	struct audit_recq	 inflight;
	size_t			 ninflight;
	size_t			 ifbytes;	/* memory-origin in flight */
	size_t			 reserved;	/* by admitted requests */
	TAILQ_HEAD(, audit_waiter) waiters;

	int			 fd;
	uint64_t		 spool_size;
	uint64_t		 spool_rd;	/* next record to replay */
	uint64_t		 spool_acked;	/* acknowledged below this */
	int			 spool_dirty;
	uint64_t		 last_fsync_ms;
	uint64_t		 run;
	uint64_t		 next_n;

	uint64_t		 n_written;
	uint64_t		 n_dup;
	uint64_t		 n_spooled;
	uint64_t		 n_replayed;
	uint64_t		 n_dropped;
	uint64_t		 n_rejected;
	uint64_t		 n_dropped_logged;
	uint64_t		 n_rejected_logged;
	uint64_t		 err_logged_ms;
};

static void	audit_connect(struct audit *);
static void	audit_link_lost(struct audit *, const char *, int);
static void	audit_kick(struct audit *);

static uint64_t
wall_ms(void)
{
	struct timespec	ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return ((uint64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
}

static void
audit_fsync(struct audit *w)
{
	if (!w->spool_dirty)
		return;
	if (fdatasync(w->fd) == -1)
		log_warn("- audit spool_fsync error=\"%s\"", strerror(errno));
	w->spool_dirty = 0;
	w->last_fsync_ms = now_ms();
}

static int
audit_write_header(struct audit *w)
{
	unsigned char	 h[AUDIT_SPOOL_HDR];

	audit_spool_header(h, w->run);
	if (pwrite(w->fd, h, sizeof(h), 0) != (ssize_t)sizeof(h))
		return (-1);
	return (0);
}

/* A numbered record was given up: never wait for it, start a new run. */
static void
audit_new_run(struct audit *w)
{
	uint64_t	 t = wall_ms();

	w->run = w->run + 1 > t ? w->run + 1 : t;
	w->next_n = 0;
	if (audit_write_header(w) == -1)
		log_warn("- audit spool_header error=\"%s\"", strerror(errno));
	w->spool_dirty = 1;
}

/* Append one payload to the spool.  0, or -1 when it does not fit. */
static int
audit_spool_append(struct audit *w, const char *p, size_t len)
{
	unsigned char	 frame[AUDIT_SPOOL_FRAME];
	struct iovec	 iov[2];
	ssize_t		 n;

	if (w->spool_size + AUDIT_SPOOL_FRAME + len > w->ac->spool_max_bytes)
		return (-1);
	audit_spool_frame(frame, p, len);
	iov[0].iov_base = frame;
	iov[0].iov_len = sizeof(frame);
	iov[1].iov_base = (void *)(uintptr_t)p;
	iov[1].iov_len = len;
	n = pwritev(w->fd, iov, 2, (off_t)w->spool_size);
	if (n != (ssize_t)(AUDIT_SPOOL_FRAME + len)) {
		log_err("- audit spool_write error=\"%s\"",
		    n == -1 ? strerror(errno) : "short write");
		if (ftruncate(w->fd, (off_t)w->spool_size) == -1)
			log_err("- audit spool_truncate error=\"%s\"",
			    strerror(errno));
		return (-1);
	}
	w->spool_size += n;
	w->spool_dirty = 1;
	w->n_spooled++;
	return (0);
}

/* Hand a record that was numbered but cannot be kept. */
static void
audit_lose(struct audit *w, struct audit_rec *r)
{
	w->n_dropped++;
	free(r);
	audit_new_run(w);
}

/*
 * Everything not acknowledged goes to the spool, oldest first: records
 * read from the spool are still in it (replay restarts at the oldest
 * unacknowledged one), then memory records in flight, then the queue.
 * From here on new records are spooled too, until the replay catches up.
 */
static void
audit_spool_unacked(struct audit *w)
{
	struct audit_rec	*r;
	struct audit_recq	 all;
	size_t			 n = 0;

	TAILQ_INIT(&all);
	while ((r = TAILQ_FIRST(&w->inflight)) != NULL) {
		TAILQ_REMOVE(&w->inflight, r, entry);
		if (r->spool_end != 0)
			free(r);
		else
			TAILQ_INSERT_TAIL(&all, r, entry);
	}
	TAILQ_CONCAT(&all, &w->queue, entry);
	w->ninflight = w->nqueue = 0;
	w->ifbytes = w->qbytes = 0;
	w->spool_rd = w->spool_acked;
	w->mode = AUDIT_SPOOL;
	while ((r = TAILQ_FIRST(&all)) != NULL) {
		TAILQ_REMOVE(&all, r, entry);
		if (audit_spool_append(w, r->data, r->len) == -1) {
			audit_lose(w, r);
			continue;
		}
		free(r);
		n++;
	}
	if (w->ac->fsync == CONFIG_FSYNC_ALWAYS)
		audit_fsync(w);
	if (n > 0)
		log_info("- audit spool records=%zu bytes=%llu", n,
		    (unsigned long long)w->spool_size);
}

/* The spool is fully acknowledged: empty it. */
static void
audit_spool_reset(struct audit *w)
{
	if (ftruncate(w->fd, AUDIT_SPOOL_HDR) == -1) {
		log_warn("- audit spool_truncate error=\"%s\"",
		    strerror(errno));
		return;
	}
	log_info("- audit spool replayed bytes=%llu",
	    (unsigned long long)(w->spool_size - AUDIT_SPOOL_HDR));
	w->spool_size = w->spool_rd = w->spool_acked = AUDIT_SPOOL_HDR;
	w->spool_dirty = 1;
}

static void
audit_on_reply(redisAsyncContext *rc, void *r, void *priv)
{
	struct audit		*w = rc->data;
	redisReply		*reply = r;
	struct audit_rec	*rec;
	uint64_t		 t;

	if (w == NULL || reply == NULL || rc != w->rc)
		return;		/* link lost; the spool has them */
	if ((rec = TAILQ_FIRST(&w->inflight)) == NULL)
		return;
	if (reply->type != REDIS_REPLY_INTEGER) {
		t = now_ms();
		if (t - w->err_logged_ms >= 1000) {
			w->err_logged_ms = t;
			log_warn("- audit redis_error error=\"%.200s\"",
			    reply->type == REDIS_REPLY_ERROR ? reply->str :
			    "unexpected reply");
		}
		audit_link_lost(w, "error reply", 1);
		return;
	}
	if (reply->integer == 1)
		w->n_written++;
	else
		w->n_dup++;
	TAILQ_REMOVE(&w->inflight, rec, entry);
	w->ninflight--;
	if (rec->spool_end != 0)
		w->spool_acked = rec->spool_end;
	else
		w->ifbytes -= rec->len;
	free(rec);
	if (w->mode == AUDIT_DIRECT && w->spool_size > AUDIT_SPOOL_HDR &&
	    w->spool_acked == w->spool_size)
		audit_spool_reset(w);
	audit_kick(w);
}

/* Send one record: EVALSHA with its keys and fields. */
static int
audit_send(struct audit *w, struct audit_rec *rec)
{
	struct audit_fields	 fl;
	const char		*argv[16 + 2 * AF__MAX];
	size_t			 lens[16 + 2 * AF__MAX];
	char			 kidx[2][AUDIT_VALUE_MAX + 256], kw[256];
	char			 run[48], n[48], maxlen[24], maxage[24];
	char			 idbuf[AUDIT_VALUE_MAX + 1], *rn, *dash;
	const char		*stream = w->ac->stream;
	int			 argc = 0, i;

	if (audit_payload_parse(rec->data, rec->len, &fl) == -1 ||
	    fl.len[AF_ID] >= sizeof(idbuf))
		return (-1);
	memcpy(idbuf, fl.v[AF_ID], fl.len[AF_ID]);
	idbuf[fl.len[AF_ID]] = '\0';
	/* "<instance>/<run>-<n>" */
	if ((rn = strrchr(idbuf, '/')) == NULL ||
	    (dash = strchr(rn, '-')) == NULL)
		return (-1);
	*dash = '\0';
	snprintf(run, sizeof(run), "%s", rn + 1);
	snprintf(n, sizeof(n), "%s", dash + 1);
	snprintf(kw, sizeof(kw), "%s:writers", stream);
	snprintf(kidx[0], sizeof(kidx[0]), "%s:subject:%.*s", stream,
	    (int)fl.len[AF_SUBJECT], fl.v[AF_SUBJECT]);
	if (fl.len[AF_REPOSITORY] > 0)
		snprintf(kidx[1], sizeof(kidx[1]), "%s:repository:%.*s",
		    stream, (int)fl.len[AF_REPOSITORY], fl.v[AF_REPOSITORY]);
	else
		kidx[1][0] = '\0';
	snprintf(maxlen, sizeof(maxlen), "%zu", w->ac->max_len);
	snprintf(maxage, sizeof(maxage), "%llu",
	    (unsigned long long)w->ac->max_age * 1000);

#define ARG(s, l) do { argv[argc] = (s); lens[argc] = (l); argc++; } while (0)
#define ARGS(s) ARG((s), strlen(s))
	ARGS("EVALSHA");
	ARGS(w->sha);
	ARGS("4");
	ARGS(stream);
	ARGS(kw);
	ARGS(kidx[0]);
	ARGS(kidx[1]);
	ARGS(w->conf->instance_id);
	ARGS(run);
	ARGS(n);
	ARGS(maxlen);
	ARGS(maxage);
	ARG(fl.v[AF_ACTION], fl.len[AF_ACTION]);
	ARG(fl.v[AF_STATUS], fl.len[AF_STATUS]);
	ARG(fl.v[AF_DECISION], fl.len[AF_DECISION]);
	for (i = 0; i < AF__MAX; i++) {
		ARGS(audit_field_name(i));
		ARG(fl.v[i], fl.len[i]);
	}
#undef ARGS
#undef ARG
	if (redisAsyncCommandArgv(w->rc, audit_on_reply, NULL, argc, argv,
	    lens) != REDIS_OK)
		return (-1);
	rec->sent_ms = now_ms();
	TAILQ_INSERT_TAIL(&w->inflight, rec, entry);
	w->ninflight++;
	return (0);
}

/*
 * Read the spool record at spool_rd.  Returns it (malloc'd), or NULL at a
 * bad record: the rest of the file cannot be trusted and is cut off.
 */
static struct audit_rec *
audit_spool_read(struct audit *w)
{
	unsigned char		 buf[AUDIT_SPOOL_FRAME + AUDIT_REC_MAX];
	struct audit_rec	*r;
	size_t			 want;
	ssize_t			 n;
	long			 len;

	want = w->spool_size - w->spool_rd;
	if (want > sizeof(buf))
		want = sizeof(buf);
	n = pread(w->fd, buf, want, (off_t)w->spool_rd);
	if (n <= 0 || (len = audit_spool_check(buf, (size_t)n)) <= 0) {
		log_err("- audit spool_corrupt offset=%llu dropped_bytes=%llu",
		    (unsigned long long)w->spool_rd,
		    (unsigned long long)(w->spool_size - w->spool_rd));
		if (ftruncate(w->fd, (off_t)w->spool_rd) == 0)
			w->spool_size = w->spool_rd;
		audit_new_run(w);
		return (NULL);
	}
	if ((r = malloc(sizeof(*r) + len - AUDIT_SPOOL_FRAME)) == NULL)
		fatal("malloc");
	r->len = len - AUDIT_SPOOL_FRAME;
	memcpy(r->data, buf + AUDIT_SPOOL_FRAME, r->len);
	w->spool_rd += len;
	r->spool_end = w->spool_rd;
	return (r);
}

/* Send what may be sent: the spool first, then the memory queue. */
static void
audit_flush(struct audit *w)
{
	struct audit_rec	*r;

	while (w->link == LINK_READY &&
	    w->ninflight < w->ac->max_inflight) {
		if (w->mode == AUDIT_SPOOL) {
			if (w->spool_rd >= w->spool_size) {
				/* Caught up: new records may skip the disk. */
				w->mode = AUDIT_DIRECT;
				if (w->spool_acked == w->spool_size &&
				    w->spool_size > AUDIT_SPOOL_HDR)
					audit_spool_reset(w);
				continue;
			}
			if ((r = audit_spool_read(w)) == NULL)
				continue;
			w->n_replayed++;
		} else {
			if ((r = TAILQ_FIRST(&w->queue)) == NULL)
				break;
			TAILQ_REMOVE(&w->queue, r, entry);
			w->nqueue--;
			w->qbytes -= r->len;
			w->ifbytes += r->len;
		}
		if (audit_send(w, r) == -1) {
			if (r->spool_end == 0) {
				/* Back to the head of the queue; spooled. */
				w->ifbytes -= r->len;
				TAILQ_INSERT_HEAD(&w->queue, r, entry);
				w->nqueue++;
				w->qbytes += r->len;
			} else {
				w->spool_rd = r->spool_end - r->len -
				    AUDIT_SPOOL_FRAME;
				free(r);
			}
			audit_link_lost(w, "send failed", 1);
			return;
		}
	}
	if (w->ac->fsync == CONFIG_FSYNC_ALWAYS)
		audit_fsync(w);
}

static void
audit_kick_cb(evutil_socket_t fd, short ev, void *arg)
{
	audit_flush(arg);
}

/*
 * Run audit_flush() soon.  Records from the memory queue linger up to
 * AUDIT_LINGER_US so that one write to Redis carries many of them (and
 * one epoll round, and one AOF write on the other side): per record,
 * that is most of what audit costs.  A full batch or a replay goes this
 * loop turn.
 */
static void
audit_kick(struct audit *w)
{
	struct timeval	 tv = { 0, AUDIT_LINGER_US };

	if (w->mode == AUDIT_SPOOL || w->nqueue >= AUDIT_BATCH) {
		event_active(w->ev_kick, 0, 0);
		return;
	}
	if (!evtimer_pending(w->ev_linger, NULL))
		evtimer_add(w->ev_linger, &tv);
}

static void
audit_retry_cb(evutil_socket_t fd, short ev, void *arg)
{
	audit_connect(arg);
}

/*
 * The link to Redis is gone or given up.  `free_it`: free the hiredis
 * context here (hiredis frees it itself after its own callbacks).
 * Callbacks still pending on it see rc->data == NULL and do nothing.
 */
static void
audit_link_lost(struct audit *w, const char *why, int free_it)
{
	redisAsyncContext	*rc = w->rc;
	struct timeval		 tv;
	int			 was_ready = w->link == LINK_READY;

	w->rc = NULL;
	w->link = LINK_DOWN;
	if (rc != NULL)
		rc->data = NULL;
	if (was_ready || w->backoff_ms == 0)
		log_warn("- audit redis_down reason=\"%s\" inflight=%zu "
		    "queued=%zu", why, w->ninflight, w->nqueue);
	audit_spool_unacked(w);
	if (w->backoff_ms == 0)
		w->backoff_ms = AUDIT_BACKOFF_MIN_MS;
	else if ((w->backoff_ms *= 2) > AUDIT_BACKOFF_MAX_MS)
		w->backoff_ms = AUDIT_BACKOFF_MAX_MS;
	tv.tv_sec = w->backoff_ms / 1000;
	tv.tv_usec = (w->backoff_ms % 1000) * 1000;
	evtimer_add(w->ev_retry, &tv);
	/*
	 * Last: freeing runs the admin queries' callbacks, whose responses
	 * write records, which must now find the spool mode set.
	 */
	if (rc != NULL && free_it)
		redisAsyncFree(rc);
}

static void
audit_on_script(redisAsyncContext *rc, void *r, void *priv)
{
	struct audit	*w = rc->data;
	redisReply	*reply = r;

	if (w == NULL || reply == NULL || rc != w->rc)
		return;
	if (reply->type != REDIS_REPLY_STRING || reply->len <= 0 ||
	    (size_t)reply->len >= sizeof(w->sha)) {
		log_warn("- audit redis_error during=script_load "
		    "error=\"%.200s\"", reply->type == REDIS_REPLY_ERROR ?
		    reply->str : "unexpected reply");
		audit_link_lost(w, "script load failed", 1);
		return;
	}
	memcpy(w->sha, reply->str, reply->len);
	w->sha[reply->len] = '\0';
	w->link = LINK_READY;
	w->backoff_ms = 0;
	log_info("- audit redis_up address=%s spooled_bytes=%llu",
	    w->ac->redis, (unsigned long long)(w->spool_size -
	    w->spool_acked));
	audit_kick(w);
}

static void
audit_on_connect(const redisAsyncContext *crc, int status)
{
	struct audit		*w = crc->data;
	redisAsyncContext	*rc;
	const char		*argv[3] = { "SCRIPT", "LOAD", audit_lua };
	size_t			 lens[3] = { 6, 4, sizeof(audit_lua) - 1 };

	if (w == NULL || crc != w->rc)
		return;
	rc = w->rc;
	if (status != REDIS_OK) {
		/* hiredis frees the context after this returns. */
		audit_link_lost(w, crc->errstr[0] != '\0' ? crc->errstr :
		    "connect failed", 0);
		return;
	}
	w->link = LINK_LOADING;
	if (redisAsyncCommandArgv(rc, audit_on_script, NULL, 3, argv,
	    lens) != REDIS_OK)
		audit_link_lost(w, "script load failed", 1);
}

static void
audit_on_disconnect(const redisAsyncContext *crc, int status)
{
	struct audit	*w = crc->data;

	if (w == NULL || crc != w->rc)
		return;
	audit_link_lost(w, crc->errstr[0] != '\0' ? crc->errstr :
	    "disconnected", 0);
}

static void
audit_connect(struct audit *w)
{
	redisAsyncContext	*rc;

	if (w->rc != NULL)
		return;
	/* The address is numeric (config): this does not resolve names. */
	rc = redisAsyncConnect(w->ac->redis_host, w->ac->redis_port);
	if (rc == NULL)
		fatal("redisAsyncConnect");
	if (rc->err) {
		w->rc = NULL;
		w->link = LINK_CONNECTING;
		log_debug("- audit connect error=\"%s\"", rc->errstr);
		redisAsyncFree(rc);
		audit_link_lost(w, "connect failed", 0);
		return;
	}
	rc->data = w;
	w->rc = rc;
	w->link = LINK_CONNECTING;
	w->link_since = now_ms();
	redisLibeventAttach(rc, w->ctx->base);
	redisAsyncSetConnectCallback(rc, audit_on_connect);
	redisAsyncSetDisconnectCallback(rc, audit_on_disconnect);
}

/* Every AUDIT_TICK_MS: timeouts, the fsync interval, rate-limited logs. */
static void
audit_tick_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct audit		*w = arg;
	struct audit_rec	*r;
	uint64_t		 t = now_ms();

	if ((w->link == LINK_CONNECTING || w->link == LINK_LOADING) &&
	    t - w->link_since > (uint64_t)w->ac->timeout_ms)
		audit_link_lost(w, "connect timeout", 1);
	else if (w->link == LINK_READY &&
	    (r = TAILQ_FIRST(&w->inflight)) != NULL &&
	    t - r->sent_ms > (uint64_t)w->ac->timeout_ms)
		audit_link_lost(w, "reply timeout", 1);
	if (w->ac->fsync == CONFIG_FSYNC_INTERVAL && w->spool_dirty &&
	    t - w->last_fsync_ms >= 1000)
		audit_fsync(w);
	if (w->n_dropped != w->n_dropped_logged ||
	    w->n_rejected != w->n_rejected_logged) {
		if (t - w->err_logged_ms >= 1000) {
			log_warn("- audit spool_full dropped=%llu "
			    "rejected=%llu spool_bytes=%llu",
			    (unsigned long long)w->n_dropped,
			    (unsigned long long)w->n_rejected,
			    (unsigned long long)w->spool_size);
			w->n_dropped_logged = w->n_dropped;
			w->n_rejected_logged = w->n_rejected;
			w->err_logged_ms = t;
		}
	}
}

/*
 * Open the spool: lock it (one gateway per spool), check the header,
 * drop a torn tail, and take the next run number.
 */
static int
audit_spool_open(struct audit *w, char **cause)
{
	unsigned char	*buf;
	struct stat	 st;
	uint64_t	 off, old_run = 0, nrec = 0;
	size_t		 have = 0, bufsz = 1 << 20;
	ssize_t		 n;
	long		 len;
	const char	*path = w->ac->spool_file;

	w->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (w->fd == -1) {
		if (asprintf(cause, "/audit/spool_file: %s: %s", path,
		    strerror(errno)) == -1)
			*cause = NULL;
		return (-1);
	}
	if (flock(w->fd, LOCK_EX | LOCK_NB) == -1) {
		if (asprintf(cause, "/audit/spool_file: %s: in use by another "
		    "process", path) == -1)
			*cause = NULL;
		return (-1);
	}
	if (fstat(w->fd, &st) == -1 || !S_ISREG(st.st_mode)) {
		if (asprintf(cause, "/audit/spool_file: %s: not a regular "
		    "file", path) == -1)
			*cause = NULL;
		return (-1);
	}
	if ((buf = malloc(bufsz)) == NULL)
		fatal("malloc");
	off = 0;
	if (st.st_size > 0) {
		n = pread(w->fd, buf, AUDIT_SPOOL_HDR, 0);
		if (n != AUDIT_SPOOL_HDR || audit_spool_header_parse(buf,
		    (size_t)n, &old_run) == -1) {
			free(buf);
			if (asprintf(cause, "/audit/spool_file: %s: not a "
			    "portcullis audit spool (move it away to start "
			    "with an empty one)", path) == -1)
				*cause = NULL;
			return (-1);
		}
		/* Walk the records; the first bad one ends the file. */
		off = AUDIT_SPOOL_HDR;
		for (;;) {
			n = pread(w->fd, buf + have, bufsz - have,
			    (off_t)(off + have));
			if (n < 0) {
				free(buf);
				if (asprintf(cause, "/audit/spool_file: %s: %s",
				    path, strerror(errno)) == -1)
					*cause = NULL;
				return (-1);
			}
			have += n;
			while ((len = audit_spool_check(buf, have)) > 0) {
				off += len;
				nrec++;
				memmove(buf, buf + len, have - len);
				have -= len;
			}
			if (len < 0 || n == 0)
				break;
		}
		if ((uint64_t)st.st_size > off) {
			log_warn("- audit spool torn_tail bytes=%llu",
			    (unsigned long long)(st.st_size - off));
			if (ftruncate(w->fd, (off_t)off) == -1)
				log_warn("- audit spool_truncate error=\"%s\"",
				    strerror(errno));
		}
	} else
		off = AUDIT_SPOOL_HDR;
	free(buf);
	w->run = old_run;
	audit_new_run(w);
	audit_fsync(w);
	w->spool_size = off;
	w->spool_rd = w->spool_acked = AUDIT_SPOOL_HDR;
	w->mode = nrec > 0 ? AUDIT_SPOOL : AUDIT_DIRECT;
	log_info("- audit spool file=%s records=%llu run=%llu", path,
	    (unsigned long long)nrec, (unsigned long long)w->run);
	return (0);
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
	TAILQ_INIT(&w->waiters);
	if (audit_spool_open(w, cause) == -1) {
		/* Not ours to write to: never spool into it. */
		if (w->fd != -1)
			close(w->fd);
		w->fd = -1;
		audit_free(w);
		return (NULL);
	}
	w->ev_retry = evtimer_new(ctx->base, audit_retry_cb, w);
	w->ev_kick = event_new(ctx->base, -1, 0, audit_kick_cb, w);
	w->ev_linger = evtimer_new(ctx->base, audit_kick_cb, w);
	w->ev_tick = event_new(ctx->base, -1, EV_PERSIST, audit_tick_cb, w);
	evtimer_add(w->ev_tick, &tv);
	audit_connect(w);
	return (w);
}

/*
 * Stop the writer: whatever Redis has not acknowledged goes to the
 * spool, for the next run to replay.  NULL is fine.
 */
void
audit_free(struct audit *w)
{
	redisAsyncContext	*rc;
	struct audit_waiter	*aw;

	if (w == NULL)
		return;
	if ((rc = w->rc) != NULL) {
		w->rc = NULL;
		rc->data = NULL;
		redisAsyncFree(rc);
	}
	while ((aw = TAILQ_FIRST(&w->waiters)) != NULL) {
		TAILQ_REMOVE(&w->waiters, aw, entry);
		free(aw);
	}
	if (w->fd != -1) {
		audit_spool_unacked(w);
		audit_fsync(w);
		log_info("- audit stop written=%llu duplicates=%llu "
		    "spooled=%llu replayed=%llu dropped=%llu rejected=%llu "
		    "spool_bytes=%llu", (unsigned long long)w->n_written,
		    (unsigned long long)w->n_dup,
		    (unsigned long long)w->n_spooled,
		    (unsigned long long)w->n_replayed,
		    (unsigned long long)w->n_dropped,
		    (unsigned long long)w->n_rejected,
		    (unsigned long long)(w->spool_size - AUDIT_SPOOL_HDR));
		close(w->fd);
	}
	if (w->ev_retry != NULL)
		event_free(w->ev_retry);
	if (w->ev_kick != NULL)
		event_free(w->ev_kick);
	if (w->ev_linger != NULL)
		event_free(w->ev_linger);
	if (w->ev_tick != NULL)
		event_free(w->ev_tick);
	config_unref(w->conf);
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
		if (strncmp(req->path, "/admin/", 7) == 0)
			return ("admin");
		return ("other");
	}
	if (strcmp(req->path, "/v2") == 0 || strcmp(req->path, "/v2/") == 0)
		return ("ping");
	if (strcmp(req->path, "/v2/_catalog") == 0)
		return ("catalog");
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
 * Take a record into the queue or the spool.  Its id is assigned here,
 * only once it is kept.  Returns 0, or -1 when it was dropped.
 */
static int
audit_submit(struct audit *w, struct audit_buf *b, uint64_t t,
    const char *rest, size_t restlen)
{
	struct audit_rec	*r;
	size_t			 len;

	audit_buf_init(b);
	audit_buf_addf(b, AF_TIME, "%llu", (unsigned long long)t);
	audit_buf_addf(b, AF_ID, "%s/%llu-%llu", w->conf->instance_id,
	    (unsigned long long)w->run, (unsigned long long)w->next_n + 1);
	if (b->len + restlen > sizeof(b->data)) {
		w->n_dropped++;
		return (-1);
	}
	memcpy(b->data + b->len, rest, restlen);
	b->len += restlen;
	len = b->len;
	if (w->mode == AUDIT_DIRECT && w->nqueue + w->ninflight >=
	    w->ac->queue_max) {
		/* Redis is too slow to keep up: the spool takes over. */
		if (w->rc != NULL)
			audit_link_lost(w, "queue full", 1);
		else
			audit_spool_unacked(w);
		/* The run may have changed: renumber. */
		return (audit_submit(w, b, t, rest, restlen));
	}
	if (w->mode == AUDIT_DIRECT) {
		if ((r = malloc(sizeof(*r) + len)) == NULL)
			fatal("malloc");
		r->spool_end = 0;
		r->len = len;
		memcpy(r->data, b->data, len);
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
	const char	*ua = NULL, *ref = "";
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
	/* Identity and policy fill these once they exist. */
	audit_buf_add(b, AF_SUBJECT, "anonymous", 9);
	audit_buf_add(b, AF_AUTH_METHOD, "none", 4);
	audit_buf_add(b, AF_ACTION, audit_action(req),
	    strlen(audit_action(req)));
	audit_buf_add(b, AF_REPOSITORY, req->is_v2 ? req->route.name : "",
	    req->is_v2 ? strlen(req->route.name) : 0);
	audit_buf_add(b, AF_REFERENCE, ref, strlen(ref));
	audit_buf_add(b, AF_UPSTREAM, req->up != NULL ? req->up->name : "",
	    req->up != NULL ? strlen(req->up->name) : 0);
	audit_buf_add(b, AF_METHOD, req->method, strlen(req->method));
	audit_buf_add(b, AF_PATH, req->path, strlen(req->path));
	audit_buf_addf(b, AF_STATUS, "%d", req->status);
	audit_buf_add(b, AF_ERROR, req->err != ERR_NONE ?
	    errs_code(req->err) : "", req->err != ERR_NONE ?
	    strlen(errs_code(req->err)) : 0);
	audit_buf_add(b, AF_DECISION, audit_decision(req),
	    strlen(audit_decision(req)));
	audit_buf_add(b, AF_RULE, "", 0);
	audit_buf_addf(b, AF_BYTES_IN, "%llu",
	    (unsigned long long)req->bytes_in);
	audit_buf_addf(b, AF_BYTES_OUT, "%llu",
	    (unsigned long long)req->bytes_out);
	audit_buf_addf(b, AF_DURATION_MS, "%llu",
	    (unsigned long long)(now_ms() - req->start_ms));
	audit_buf_add(b, AF_CACHE, req->cache_status, req->cache_status !=
	    NULL ? strlen(req->cache_status) : 0);
}

/*
 * The request is finished (from req_free()): write its record.  Also
 * releases what audit_admit() reserved and forgets admin queries that
 * were waiting on it.
 */
void
audit_request(struct req *req)
{
	struct audit		*w = req->c->ctx->audit;
	struct audit_waiter	*aw, *next;
	struct audit_buf	 rest, b;

	if (w == NULL)
		return;
	if (req->audit_admitted) {
		w->reserved -= AUDIT_SPOOL_FRAME + AUDIT_REC_MAX;
		req->audit_admitted = 0;
	}
	TAILQ_FOREACH_SAFE(aw, &w->waiters, entry, next) {
		if (aw->req != req)
			continue;
		TAILQ_REMOVE(&w->waiters, aw, entry);
		aw->gone(aw->arg);
		free(aw);
	}
	if (audit_exempt(req->path))
		return;
	audit_buf_init(&rest);
	audit_fill(&rest, req, w->conf->instance_id);
	audit_submit(w, &b, wall_ms(), rest.data, rest.len);
}

/*
 * A request the framer refused before a struct req existed (400, 414,
 * 431, 408): its record has what is known, the peer and the status.
 */
void
audit_framing(struct conn *c, int status, enum pc_err err)
{
	struct audit		*w = c->ctx->audit;
	struct audit_buf	 rest, b;
	unsigned char		 rnd[8];
	char			 rid[20];
	size_t			 i;
	const char		*code = err != ERR_NONE ? errs_code(err) : "";

	if (w == NULL)
		return;
	arc4random_buf(rnd, sizeof(rnd));
	for (i = 0; i < sizeof(rnd); i++)
		snprintf(rid + 2 * i, 3, "%02x", rnd[i]);
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
	for (i = AF_BYTES_IN; i <= AF_DURATION_MS; i++)
		audit_buf_add(&rest, i, "0", 1);
	audit_buf_add(&rest, AF_CACHE, "", 0);
	audit_submit(w, &b, wall_ms(), rest.data, rest.len);
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
	committed = w->spool_size + w->qbytes + w->ifbytes + w->reserved +
	    (w->nqueue + w->ninflight) * AUDIT_SPOOL_FRAME;
	if (committed + need > w->ac->spool_max_bytes) {
		w->n_rejected++;
		return (-1);
	}
	w->reserved += need;
	req->audit_admitted = 1;
	return (0);
}

/* The Redis link for admin queries, or NULL while it is not up. */
redisAsyncContext *
audit_redis(struct pc_ctx *ctx)
{
	struct audit	*w = ctx->audit;

	if (w == NULL || w->link != LINK_READY)
		return (NULL);
	return (w->rc);
}

/* Call gone(arg) if req ends before audit_unwait(). */
struct audit_waiter *
audit_wait(struct pc_ctx *ctx, struct req *req, void (*gone)(void *),
    void *arg)
{
	struct audit_waiter	*aw;

	if ((aw = calloc(1, sizeof(*aw))) == NULL)
		fatal("calloc");
	aw->req = req;
	aw->gone = gone;
	aw->arg = arg;
	TAILQ_INSERT_TAIL(&ctx->audit->waiters, aw, entry);
	return (aw);
}

/* Stop watching a request. */
void
audit_unwait(struct pc_ctx *ctx, struct audit_waiter *aw)
{
	if (aw == NULL || ctx->audit == NULL)
		return;
	TAILQ_REMOVE(&ctx->audit->waiters, aw, entry);
	free(aw);
}

/* The Lua script, for `audit generate`. */
const char *
audit_script(void)
{
	return (audit_lua);
}
