/*
 * audit.c: the audit writer.  Every request the gateway answers (but
 * /healthz, /readyz and /metrics) becomes one record, built here from the
 * finished struct req, and goes to a Redis stream through hiredis' async
 * API on the gateway's own event loop.  Records are sent in batches (up
 * to AUDIT_BATCH, or what AUDIT_LINGER_US gathered), one pipelined
 * EVALSHA per batch, of one Lua script that XADDs each record, XADDs a
 * pointer to it to a per-subject and a per-repository index stream (same
 * entry id), then trims the streams and advances the writer's high-water
 * mark once for the batch.  The loop never waits for Redis: records wait
 * in a bounded memory queue, and a reply slower than audit.timeout counts
 * as an outage.
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
 * n counts the records of the run from 1 without gaps.  The script
 * keeps, per gateway instance, the id of the last record it wrote (hash
 * <stream>:writers) and atomically skips the records at or below it.  So
 * replaying something Redis already has (a crash between XADD and the
 * spool's truncation, a reply lost with the connection) writes nothing,
 * and the stream holds each record exactly once, in order.  A batch
 * holds consecutive records of one run; one whose first new record's
 * predecessor is missing (an earlier pipelined batch failed) is refused
 * with a GAP error and everything from the oldest unacknowledged record
 * is sent again; a record this process has to give up after numbering
 * it (spool write error) starts a new run, so no gap is ever waited for.
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
#define AUDIT_BATCH		128	/* records that are sent at once */
#define AUDIT_LINGER_US		4000	/* or after this long */

/*
 * The writer's script.  One call writes a batch: records n, n+1, ... of
 * one run of one writer, so that Redis runs the script, reads and
 * advances the high-water mark, and trims once per batch rather than once
 * per record.
 * KEYS: stream, writers hash, then for each record its subject index and
 * its repository index ("": none).
 * ARGV: instance, run, n, max_len, max_age ms, then
 *  - the batch layout (the writer): the number of fields F, their F
 *    names, then for each record the index fields action, status and
 *    decision and its F values;
 *  - or, one record per call (`audit generate`): action, status,
 *    decision and the record's field/value pairs.
 * ARGV[6] tells them apart: a number only in the batch layout.
 * Returns how many records were written: those at or below the writer's
 * mark are duplicates, skipped; a batch that does not follow the mark is
 * refused with a GAP error.  An error half-way still advances the mark
 * past what was written, so that sending the batch again writes nothing
 * twice.  The shebang makes Redis refuse the whole script up front when
 * it is out of memory, read-only or failing to persist, instead of
 * failing half-way.
 */
static const char audit_lua[] =
"#!lua\n"
"local nrec = (#KEYS - 2) / 2\n"
"local nf = tonumber(ARGV[6])\n"
"local base, stride, row = 6, #ARGV - 5, nil\n"
"if nf then\n"
"  base, stride, row = 7 + nf, 3 + nf, {}\n"
"  if nf < 1 or nf % 1 ~= 0 or #ARGV ~= 6 + nf + nrec * stride then\n"
"    nrec = 0\n"
"  end\n"
"  for j = 1, nrec > 0 and nf or 0 do row[2 * j - 1] = ARGV[6 + j] end\n"
"elseif nrec ~= 1 or stride < 5 or stride % 2 ~= 1 then\n"
"  nrec = 0\n"
"end\n"
"if nrec < 1 or nrec % 1 ~= 0 then\n"
"  return redis.error_reply('ERR audit: malformed batch')\n"
"end\n"
"local run, n = tonumber(ARGV[2]), tonumber(ARGV[3])\n"
"local skip = 0\n"
"local last = redis.call('HGET', KEYS[2], ARGV[1])\n"
"if last then\n"
"  local lr, ln = string.match(last, '^(%d+)-(%d+)$')\n"
"  lr, ln = tonumber(lr), tonumber(ln)\n"
"  if run < lr or (run == lr and n + nrec - 1 <= ln) then return 0 end\n"
"  if (run == lr and n > ln + 1) or (run > lr and n ~= 1) then\n"
"    return redis.error_reply('GAP writer ' .. ARGV[1] .. ' is at ' ..\n"
"      last .. ', got ' .. ARGV[2] .. '-' .. ARGV[3])\n"
"  end\n"
"  if run == lr then skip = ln + 1 - n end\n"
"end\n"
"local written, lastid, touched = 0, nil, {}\n"
"local ok, err = pcall(function()\n"
"  for i = skip, nrec - 1 do\n"
"    local a, id = base + i * stride, nil\n"
"    if row then\n"
"      for j = 1, nf do row[2 * j] = ARGV[a + 2 + j] end\n"
"      id = redis.call('XADD', KEYS[1], '*', unpack(row))\n"
"    else\n"
"      id = redis.call('XADD', KEYS[1], '*',\n"
"        unpack(ARGV, a + 3, a + stride - 1))\n"
"    end\n"
"    for k = 3 + 2 * i, 4 + 2 * i do\n"
"      local key = KEYS[k]\n"
"      if key ~= '' then\n"
"        local r = redis.pcall('XADD', key, id, 'action', ARGV[a],\n"
"          'status', ARGV[a + 1], 'decision', ARGV[a + 2])\n"
"        if type(r) == 'table' and r.err then\n"
"          redis.call('DEL', key)\n"
"          redis.call('XADD', key, id, 'action', ARGV[a],\n"
"            'status', ARGV[a + 1], 'decision', ARGV[a + 2])\n"
"        end\n"
"        touched[key] = true\n"
"      end\n"
"    end\n"
"    written, lastid = written + 1, id\n"
"  end\n"
"end)\n"
"if written > 0 then\n"
"  redis.call('HSET', KEYS[2], ARGV[1],\n"
"    ARGV[2] .. '-' .. string.format('%.0f', n + skip + written - 1))\n"
"  if ARGV[4] ~= '0' then\n"
"    redis.call('XTRIM', KEYS[1], 'MAXLEN', '~', ARGV[4])\n"
"  end\n"
"  local maxage = tonumber(ARGV[5])\n"
"  if maxage > 0 then\n"
"    local t = redis.call('TIME')\n"
"    local min = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
"    redis.call('XTRIM', KEYS[1], 'MINID', '~',\n"
"      string.format('%.0f', min - maxage))\n"
"  end\n"
"  local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)\n"
"  local firstid = lastid\n"
"  if first[1] then firstid = first[1][1] end\n"
"  for key in pairs(touched) do\n"
"    redis.call('XTRIM', key, 'MINID', '~', firstid)\n"
"    if maxage > 0 then redis.call('PEXPIRE', key, maxage) end\n"
"  end\n"
"end\n"
"if not ok then\n"
"  if type(err) == 'table' and err.err then err = err.err end\n"
"  return redis.error_reply(tostring(err))\n"
"end\n"
"return written\n";

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
	char			 idpfx[AUDIT_VALUE_MAX];	/* "<instance>/<run>-" */
	size_t			 idpfxlen;

	/* The batch being sent, and its EVALSHA (RESP), formatted here. */
	struct audit_rec	*batch[AUDIT_BATCH];
	struct audit_fields	 bfl[AUDIT_BATCH];
	char			*cmd;
	size_t			 cmdlen;
	size_t			 cmdsz;
	char			*kw;		/* "<stream>:writers" */
	char			 maxlen[AUDIT_U64_MAX + 1];
	char			 maxage[AUDIT_U64_MAX + 1];

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

/*
 * The ids of this run's records start "<instance>/<run>-": keep that
 * ready.  The instance is cut so that any n fits in AUDIT_VALUE_MAX.
 */
static void
audit_id_prefix(struct audit *w)
{
	const char	*inst = w->conf->instance_id;
	char		 tmp[AUDIT_U64_MAX], *p;
	size_t		 len = strlen(inst), max;

	p = audit_u64(tmp, w->run);
	max = AUDIT_VALUE_MAX - 2 * AUDIT_U64_MAX - 2;
	if (len > max)
		len = max;
	memcpy(w->idpfx, inst, len);
	w->idpfx[len++] = '/';
	memcpy(w->idpfx + len, p, tmp + sizeof(tmp) - p);
	len += tmp + sizeof(tmp) - p;
	w->idpfx[len++] = '-';
	w->idpfxlen = len;
}

/* A numbered record was given up: never wait for it, start a new run. */
static void
audit_new_run(struct audit *w)
{
	uint64_t	 t = wall_ms();

	w->run = w->run + 1 > t ? w->run + 1 : t;
	w->next_n = 0;
	audit_id_prefix(w);
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

/*
 * A reply to one batch (priv: how many records it held), the oldest in
 * flight: they are acknowledged, written or found to be duplicates.
 */
static void
audit_on_reply(redisAsyncContext *rc, void *r, void *priv)
{
	struct audit		*w = rc->data;
	redisReply		*reply = r;
	struct audit_rec	*rec;
	size_t			 k = (uintptr_t)priv, i;
	uint64_t		 t;

	if (w == NULL || reply == NULL || rc != w->rc)
		return;		/* link lost; the spool has them */
	if (TAILQ_EMPTY(&w->inflight))
		return;
	if (reply->type != REDIS_REPLY_INTEGER || reply->integer < 0 ||
	    (unsigned long long)reply->integer > k) {
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
	w->n_written += reply->integer;
	w->n_dup += k - reply->integer;
	for (i = 0; i < k && (rec = TAILQ_FIRST(&w->inflight)) != NULL;
	    i++) {
		TAILQ_REMOVE(&w->inflight, rec, entry);
		w->ninflight--;
		if (rec->spool_end != 0)
			w->spool_acked = rec->spool_end;
		else
			w->ifbytes -= rec->len;
		free(rec);
	}
	if (w->mode == AUDIT_DIRECT && w->spool_size > AUDIT_SPOOL_HDR &&
	    w->spool_acked == w->spool_size)
		audit_spool_reset(w);
	audit_kick(w);
}

/*
 * The run and number of a record from its id, "<instance>/<run>-<n>";
 * run also as text.  0, or -1 when the id is malformed.
 */
static int
audit_rec_id(const struct audit_fields *fl, const char **run,
    size_t *runlen, uint64_t *runv, uint64_t *n)
{
	const char	*id = fl->v[AF_ID], *p, *slash = NULL;
	size_t		 len = fl->len[AF_ID], i;
	uint64_t	*v;

	for (p = id + len; p > id; p--)
		if (p[-1] == '/') {
			slash = p;
			break;
		}
	if (slash == NULL)
		return (-1);
	*run = slash;
	*runv = *n = 0;
	v = runv;
	for (i = 0, p = slash; p < id + len; p++) {
		if (*p == '-' && v == runv && i > 0) {
			*runlen = p - slash;
			v = n;
			i = 0;
			continue;
		}
		if (*p < '0' || *p > '9' || ++i > 19)
			return (-1);
		*v = *v * 10 + (*p - '0');
	}
	return (v == n && i > 0 ? 0 : -1);
}

/* Room for `need` more bytes of the command being formatted. */
static void
audit_cmd_room(struct audit *w, size_t need)
{
	size_t	 sz;

	if (w->cmdlen + need <= w->cmdsz)
		return;
	for (sz = w->cmdsz > 0 ? w->cmdsz : 65536; sz < w->cmdlen + need;
	    sz *= 2)
		;
	if ((w->cmd = realloc(w->cmd, sz)) == NULL)
		fatal("realloc");
	w->cmdsz = sz;
}

/* Append "<c><n>\r\n" (c: '*' for a command's count, '$' an argument). */
static void
audit_cmd_len(struct audit *w, char c, size_t n)
{
	char	 tmp[AUDIT_U64_MAX], *p;

	p = audit_u64(tmp, n);
	audit_cmd_room(w, 3 + sizeof(tmp));
	w->cmd[w->cmdlen++] = c;
	memcpy(w->cmd + w->cmdlen, p, tmp + sizeof(tmp) - p);
	w->cmdlen += tmp + sizeof(tmp) - p;
	w->cmd[w->cmdlen++] = '\r';
	w->cmd[w->cmdlen++] = '\n';
}

/* Append one argument made of a, b and c, one after the other. */
static void
audit_cmd_arg(struct audit *w, const char *a, size_t alen, const char *b,
    size_t blen, const char *c, size_t clen)
{
	audit_cmd_len(w, '$', alen + blen + clen);
	audit_cmd_room(w, alen + blen + clen + 2);
	/* b and c may be NULL when empty: memcpy must not see them. */
	if (alen > 0)
		memcpy(w->cmd + w->cmdlen, a, alen);
	if (blen > 0)
		memcpy(w->cmd + w->cmdlen + alen, b, blen);
	if (clen > 0)
		memcpy(w->cmd + w->cmdlen + alen + blen, c, clen);
	w->cmdlen += alen + blen + clen;
	w->cmd[w->cmdlen++] = '\r';
	w->cmd[w->cmdlen++] = '\n';
}

#define AUDIT_ARG(w, s, l)	audit_cmd_arg((w), (s), (l), NULL, 0, NULL, 0)
#define AUDIT_ARGS(w, s)	AUDIT_ARG((w), (s), strlen(s))

/*
 * Send w->batch[0..k), parsed in w->bfl: consecutive records of one run,
 * as one EVALSHA in the script's batch layout (the field names once),
 * formatted here: hiredis' own formatting costs a printf per argument.
 * On success they are in flight.
 */
static int
audit_send(struct audit *w, size_t k)
{
	const struct audit_fields	*fl;
	const char			*stream = w->ac->stream, *run;
	size_t				 slen = strlen(stream), runlen, i;
	uint64_t			 runv, n, t;
	int				 f;
	char				 ntmp[AUDIT_U64_MAX], *np;

	if (audit_rec_id(&w->bfl[0], &run, &runlen, &runv, &n) == -1)
		return (-1);
	w->cmdlen = 0;
	audit_cmd_len(w, '*', 3 + 2 + 2 * k + 5 + 1 + AF__MAX +
	    k * (3 + AF__MAX));
	AUDIT_ARG(w, "EVALSHA", 7);
	AUDIT_ARGS(w, w->sha);
	np = audit_u64(ntmp, 2 + 2 * k);
	AUDIT_ARG(w, np, ntmp + sizeof(ntmp) - np);
	AUDIT_ARG(w, stream, slen);
	AUDIT_ARGS(w, w->kw);
	for (i = 0; i < k; i++) {
		fl = &w->bfl[i];
		audit_cmd_arg(w, stream, slen, ":subject:", 9,
		    fl->v[AF_SUBJECT], fl->len[AF_SUBJECT]);
		if (fl->len[AF_REPOSITORY] > 0)
			audit_cmd_arg(w, stream, slen, ":repository:", 12,
			    fl->v[AF_REPOSITORY], fl->len[AF_REPOSITORY]);
		else
			AUDIT_ARG(w, "", 0);
	}
	AUDIT_ARGS(w, w->conf->instance_id);
	AUDIT_ARG(w, run, runlen);
	np = audit_u64(ntmp, n);
	AUDIT_ARG(w, np, ntmp + sizeof(ntmp) - np);
	AUDIT_ARGS(w, w->maxlen);
	AUDIT_ARGS(w, w->maxage);
	np = audit_u64(ntmp, AF__MAX);
	AUDIT_ARG(w, np, ntmp + sizeof(ntmp) - np);
	for (f = 0; f < AF__MAX; f++)
		AUDIT_ARG(w, audit_field_name(f), audit_field_name_len(f));
	for (i = 0; i < k; i++) {
		fl = &w->bfl[i];
		AUDIT_ARG(w, fl->v[AF_ACTION], fl->len[AF_ACTION]);
		AUDIT_ARG(w, fl->v[AF_STATUS], fl->len[AF_STATUS]);
		AUDIT_ARG(w, fl->v[AF_DECISION], fl->len[AF_DECISION]);
		for (f = 0; f < AF__MAX; f++)
			AUDIT_ARG(w, fl->v[f], fl->len[f]);
	}
	if (redisAsyncFormattedCommand(w->rc, audit_on_reply,
	    (void *)(uintptr_t)k, w->cmd, w->cmdlen) != REDIS_OK)
		return (-1);
	t = now_ms();
	for (i = 0; i < k; i++) {
		w->batch[i]->sent_ms = t;
		TAILQ_INSERT_TAIL(&w->inflight, w->batch[i], entry);
		w->ninflight++;
	}
	return (0);
}

#undef AUDIT_ARGS
#undef AUDIT_ARG

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

/* The next record to send, the spool first, then the memory queue. */
static struct audit_rec *
audit_next(struct audit *w)
{
	struct audit_rec	*r;

	for (;;) {
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
static void
audit_unnext(struct audit *w, struct audit_rec *r)
{
	if (r->spool_end != 0) {
		w->spool_rd = r->spool_end - r->len - AUDIT_SPOOL_FRAME;
		w->mode = AUDIT_SPOOL;
		w->n_replayed--;
		free(r);
		return;
	}
	w->ifbytes -= r->len;
	TAILQ_INSERT_HEAD(&w->queue, r, entry);
	w->nqueue++;
	w->qbytes += r->len;
}

/*
 * Send what may be sent, in batches of consecutive records of one run:
 * the spool first, then the memory queue.
 */
static void
audit_flush(struct audit *w)
{
	struct audit_rec	*r;
	const char		*run;
	size_t			 k, runlen;
	uint64_t		 runv, n, run0 = 0, n0 = 0;

	while (w->link == LINK_READY &&
	    w->ninflight < w->ac->max_inflight) {
		for (k = 0; k < AUDIT_BATCH &&
		    w->ninflight + k < w->ac->max_inflight; k++) {
			if ((r = audit_next(w)) == NULL)
				break;
			if (audit_payload_parse(r->data, r->len,
			    &w->bfl[k]) == -1 || audit_rec_id(&w->bfl[k],
			    &run, &runlen, &runv, &n) == -1) {
				/* Cannot be sent; fails alone, below. */
				audit_unnext(w, r);
				if (k == 0)
					goto fail;
				break;
			}
			if (k == 0) {
				run0 = runv;
				n0 = n;
			} else if (runv != run0 || n != n0 + k) {
				audit_unnext(w, r);
				break;
			}
			w->batch[k] = r;
		}
		if (k == 0)
			break;
		if (audit_send(w, k) == -1) {
			/* Back in order; audit_link_lost() spools them. */
			while (k-- > 0)
				audit_unnext(w, w->batch[k]);
			goto fail;
		}
	}
	if (w->ac->fsync == CONFIG_FSYNC_ALWAYS)
		audit_fsync(w);
	return;
fail:
	audit_link_lost(w, "send failed", 1);
}

static void
audit_kick_cb(evutil_socket_t fd, short ev, void *arg)
{
	audit_flush(arg);
}

/*
 * Run audit_flush() soon.  Records from the memory queue linger up to
 * AUDIT_LINGER_US so that one EVALSHA carries many of them: one script
 * run, one write and one reply, one AOF write on the other side.  Redis
 * shares the machine, and its per-call cost is most of what audit costs
 * (bench/audit_bench.sh).  A full batch, a queue half way to queue_max
 * (which would make Redis count as slow) or a replay goes this loop
 * turn.
 */
static void
audit_kick(struct audit *w)
{
	struct timeval	 tv = { 0, AUDIT_LINGER_US };

	if (w->mode == AUDIT_SPOOL || w->nqueue >= AUDIT_BATCH ||
	    2 * (w->nqueue + w->ninflight) >= w->ac->queue_max) {
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
	if (asprintf(&w->kw, "%s:writers", w->ac->stream) == -1)
		fatal("asprintf");
	snprintf(w->maxlen, sizeof(w->maxlen), "%zu", w->ac->max_len);
	snprintf(w->maxage, sizeof(w->maxage), "%llu",
	    (unsigned long long)w->ac->max_age * 1000);
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
	free(w->kw);
	free(w->cmd);
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
	char			 id[AUDIT_VALUE_MAX], *p;
	size_t			 len, nlen;

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
	audit_buf_addu(b, AF_STATUS, req->status > 0 ? req->status : 0);
	audit_buf_add(b, AF_ERROR, req->err != ERR_NONE ?
	    errs_code(req->err) : "", req->err != ERR_NONE ?
	    strlen(errs_code(req->err)) : 0);
	audit_buf_add(b, AF_DECISION, audit_decision(req),
	    strlen(audit_decision(req)));
	audit_buf_add(b, AF_RULE, "", 0);
	audit_buf_addu(b, AF_BYTES_IN, req->bytes_in);
	audit_buf_addu(b, AF_BYTES_OUT, req->bytes_out);
	audit_buf_addu(b, AF_DURATION_MS, now_ms() - req->start_ms);
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
