/*
 * audit_redis.c: the audit writer's link to Redis, an rds link (rds.c:
 * connect to a numeric address, AUTH and SELECT from the top-level redis
 * section, reconnect with a back-off) on the gateway's own event loop:
 * once it is up, load the writer's Lua script, send records in batches
 * (up to AUDIT_BATCH, or what AUDIT_LINGER_US gathered), one pipelined
 * EVALSHA per batch formatted here, take the replies, and on any failure
 * (error reply, reply later than audit.timeout, connection lost) hand
 * everything unacknowledged to the spool; the link connects again.
 *
 * Guarantees: the loop never waits for Redis; records are sent in order,
 * a batch holds consecutive records of one run, and a record leaves the
 * writer's hands (freed, or its spool space released) only once Redis
 * acknowledged it.  The script (below) makes a replay of what Redis
 * already has write nothing: the stream holds each record exactly once.
 */
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "portcullis.h"
#include "audit.h"
#include "rds.h"

#define AUDIT_LINGER_US		4000	/* or after this long */

static int	audit_rec_id(const struct audit_fields *, const char **,
		    size_t *, uint64_t *, uint64_t *);

/*
 * The writer's script.  One call writes a batch: records n, n+1, ... of
 * one run of one writer, so that Redis runs the script, reads and
 * advances the high-water mark, and trims once per batch rather than once
 * per record.
 * KEYS: stream, writers hash, the index set, then for each record its
 * subject index and its repository index ("" or the stream key: none;
 * the writer sends the stream key, so that an ACL user limited to the
 * stream's prefix, ~<stream>*, may run it: Redis checks every key a
 * script is given, "" included).
 * ARGV: instance, run, n, max_len, max_age ms, max_index_keys, then for
 * each record its time (ms), what its index entries keep of it
 * (audit_ref_tail(): " <action> <status> <decision>;") and the record
 * packed (audit_pack()), stored as the entry's one field: one value
 * rather than 23 pairs is what makes an XADD cheap here, and an XRANGE
 * of the walk too (README "What the stream holds").
 * Index entries: one per index a batch touches, with the id of its
 * newest record there and the refs of all of them (the ids in the main
 * stream, each with the ref tail), not one entry per record: an XADD
 * costs Redis about as much for one ref as for a hundred.  What the
 * script does a record besides its XADD is kept small, since it runs on
 * Redis's one thread (bench/audit_script_bench.py): the loop keeps the
 * lists of the record before's index keys (consecutive records mostly
 * share them), lists ids and tails apart for one table.concat() an
 * index rather than joining each pair into a new string.  Entries of an
 * index stay in id order and so do their refs, since every batch's ids
 * are above the one before (audit_query.c relies on it).
 * Returns how many records were written: those at or below the writer's
 * mark are duplicates, skipped; a batch that does not follow the mark is
 * refused with a GAP error, unless its n is written "!n": the writer
 * knows the records before it were acknowledged once and lost by Redis
 * since (a failover to a replica that lagged), and goes on past the
 * hole rather than retrying forever.  An error half-way still advances the mark
 * past what was written, so that sending the batch again writes nothing
 * twice.
 * The index set (<stream>:indexes) is a sorted set of the index streams,
 * scored by the ms of their last entry: past max_index_keys the least
 * recently written are deleted, so that client-chosen names cannot grow
 * Redis beyond the cap (the records stay in the main stream).  One call
 * deletes at most 2 * n + AUDIT_EVICT_SLACK of them (older than max_age,
 * then over the cap), so that it never blocks Redis for long; the
 * highest score evicted goes to the writers hash (AUDIT_EVICTED_FIELD),
 * which tells queries how far back an index can be trusted.  A set key
 * of another type (not ours: the stream's prefix is) is replaced, as an
 * index stream of another type is, rather than failing every batch
 * after its records were written and leaving the index streams
 * uncounted.  The shebang makes Redis refuse the whole script up front when
 * it is out of memory, read-only or failing to persist, instead of
 * failing half-way.
 * Stream ids and time: a record's id is never before its `time` (ms),
 * whatever the two clocks say: Redis's '*' when its clock is at or past
 * the record's time, else "<time>-*" (which Redis refuses only when the
 * stream's top is later still, and then '*' is later too).  So a query's
 * --since stops its walk at the first id before it (audit_query.c).
 * Records of `audit generate` (instance "generate-...") take their time
 * as id whenever the stream allows it, so that a generated stream looks
 * like one written over time.  A record whose id is more than
 * AUDIT_LATE_MS after its time (a replay, a backed-up queue) puts its
 * batch in <stream>:late (AUDIT_LATE_MS in audit.h), trimmed with the
 * stream, so that --until may start its walk near until.  Ids only
 * grow, so a batch whose newest id is within AUDIT_LATE_MS of its oldest
 * time holds no late record: each record's id is read only otherwise
 * (a pattern match per record was a tenth of the script's own work).
 * First-segment index: a record in <stream>:repository:<a>/<b...> also
 * goes into <stream>:repository:<a>/ (no repository name ends in '/'),
 * an index stream like the others (counted, evicted, trimmed), for
 * --repo 'a/...' globs; the key is made here from the repository key,
 * so the batch layout is unchanged (an ACL limited to ~<stream>* covers
 * it).  AUDIT_PREFIX_FIELD in the writers hash keeps when the first one
 * was written: older records are found by walking.  The mark and the
 * late set are written after the writer's mark and with pcall, so that
 * an ACL user of an older README (without HSETNX, ZREMRANGEBYSCORE)
 * still has every record written exactly once; it only loses the mark
 * (queries then walk) and the trimming of the late set.
 */
static const char audit_lua[] =
"#!lua\n"
"local nrec = (#KEYS - 3) / 2\n"
"if nrec < 1 or nrec % 1 ~= 0 or #ARGV ~= 6 + 3 * nrec then\n"
"  return redis.error_reply('ERR audit: malformed batch')\n"
"end\n"
"local force = string.sub(ARGV[3], 1, 1) == '!'\n"
"local run = tonumber(ARGV[2])\n"
"local n = tonumber(force and string.sub(ARGV[3], 2) or ARGV[3])\n"
"local skip = 0\n"
"local last = redis.call('HGET', KEYS[2], ARGV[1])\n"
"if last then\n"
"  local lr, ln = string.match(last, '^(%d+)-(%d+)$')\n"
"  lr, ln = tonumber(lr), tonumber(ln)\n"
"  if run < lr or (run == lr and n + nrec - 1 <= ln) then return 0 end\n"
"  if not force and ((run == lr and n > ln + 1) or\n"
"      (run > lr and n ~= 1)) then\n"
"    return redis.error_reply('GAP writer ' .. ARGV[1] .. ' is at ' ..\n"
"      last .. ', got ' .. ARGV[2] .. '-' .. ARGV[3])\n"
"  end\n"
"  if run == lr and n <= ln + 1 then skip = ln + 1 - n end\n"
"end\n"
"local written, lastid, touched, refs = 0, nil, {}, {}\n"
"local tn = redis.call('TIME')\n"
"local now = tonumber(tn[1]) * 1000 + math.floor(tonumber(tn[2]) / 1000)\n"
"local rpfx, late, pfxs = KEYS[1] .. ':repository:', nil, false\n"
"local gen = string.sub(ARGV[1], 1, 9) == 'generate-'\n"
"local function add(t, rec)\n"
"  if t and (gen or t > now) then\n"
"    local r = redis.pcall('XADD', KEYS[1],\n"
"      string.format('%.0f', t) .. '-*', '" AUDIT_PACKED_FIELD "', rec)\n"
"    if type(r) == 'string' then return r end\n"
"  end\n"
"  return redis.call('XADD', KEYS[1], '*', '" AUDIT_PACKED_FIELD "', rec)\n"
"end\n"
"local function list(key)\n"
"  local l = refs[key]\n"
"  if not l then l = {}; refs[key] = l end\n"
"  return l\n"
"end\n"
"local ids, mint, segs = {}, nil, {}\n"
"local pks, pkr, ls, lr, lg\n"
"local ok, err = pcall(function()\n"
"  for i = skip, nrec - 1 do\n"
"    local a = 7 + 3 * i\n"
"    local t = tonumber(ARGV[a])\n"
"    local id\n"
"    if t and (gen or t > now) then id = add(t, ARGV[a + 2])\n"
"    else\n"
"      id = redis.call('XADD', KEYS[1], '*', '" AUDIT_PACKED_FIELD "',\n"
"        ARGV[a + 2])\n"
"    end\n"
"    ids[written + 1] = id\n"
"    if t and (not mint or t < mint) then mint = t end\n"
"    local ks, kr, r = KEYS[4 + 2 * i], KEYS[5 + 2 * i], ARGV[a + 1]\n"
"    if ks ~= pks then\n"
"      pks = ks\n"
"      ls = ks ~= '' and ks ~= KEYS[1] and list(ks)\n"
"    end\n"
"    if kr ~= pkr then\n"
"      pkr = kr\n"
"      lr = kr ~= '' and kr ~= KEYS[1] and list(kr)\n"
"      lg = false\n"
"      if lr then\n"
"        local seg = segs[kr]\n"
"        if seg == nil then\n"
"          seg = string.match(string.sub(kr, #rpfx + 1), '^([^/]+)/')\n"
"          seg = seg and rpfx .. seg .. '/' or false\n"
"          segs[kr] = seg\n"
"        end\n"
"        lg = seg and list(seg)\n"
"      end\n"
"    end\n"
"    if ls then local k = #ls; ls[k + 1], ls[k + 2] = id, r end\n"
"    if lr then local k = #lr; lr[k + 1], lr[k + 2] = id, r end\n"
"    if lg then\n"
"      local k = #lg\n"
"      lg[k + 1], lg[k + 2], pfxs = id, r, true\n"
"    end\n"
"    written, lastid = written + 1, id\n"
"  end\n"
"end)\n"
"for key, l in pairs(refs) do touched[key] = l[#l - 1] end\n"
"if mint and tonumber(string.match(ids[#ids], '^%d+')) - mint > "
    AUDIT_LATE_MS " then\n"
"  for j = 1, #ids do\n"
"    local t = tonumber(ARGV[7 + 3 * (skip + j - 1)])\n"
"    if t and tonumber(string.match(ids[j], '^%d+')) - t > "
    AUDIT_LATE_MS " and\n"
"        (not late or t < late) then\n"
"      late = t\n"
"    end\n"
"  end\n"
"end\n"
"local iok, ierr = pcall(function()\n"
"  for key, l in pairs(refs) do\n"
"    local v = table.concat(l)\n"
"    local r = redis.pcall('XADD', key, touched[key],\n"
"      '" AUDIT_REFS_FIELD "', v)\n"
"    if type(r) == 'table' and r.err then\n"
"      redis.call('DEL', key)\n"
"      redis.call('XADD', key, touched[key], '" AUDIT_REFS_FIELD "', v)\n"
"    end\n"
"  end\n"
"end)\n"
"if ok then ok, err = iok, ierr end\n"
"if written > 0 then\n"
"  redis.call('HSET', KEYS[2], ARGV[1],\n"
"    ARGV[2] .. '-' .. string.format('%.0f', n + skip + written - 1))\n"
"  if pfxs then\n"
"    redis.pcall('HSETNX', KEYS[2], '" AUDIT_PREFIX_FIELD "',\n"
"      string.match(lastid, '^%d+'))\n"
"  end\n"
"  if ARGV[4] ~= '0' then\n"
"    redis.call('XTRIM', KEYS[1], 'MAXLEN', '~', ARGV[4])\n"
"  end\n"
"  local maxage, minid = tonumber(ARGV[5]), nil\n"
"  if maxage > 0 then\n"
"    local t = redis.call('TIME')\n"
"    local min = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
"    minid = string.format('%.0f', min - maxage)\n"
"    redis.call('XTRIM', KEYS[1], 'MINID', '~', minid)\n"
"  end\n"
"  local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)\n"
"  local firstid = lastid\n"
"  if first[1] then firstid = first[1][1] end\n"
"  if next(touched) and redis.call('TYPE', KEYS[3]).ok ~= 'zset' then\n"
"    redis.call('DEL', KEYS[3])\n"
"  end\n"
"  if late then\n"
"    local kl = KEYS[1] .. ':late'\n"
"    redis.pcall('ZADD', kl, string.match(lastid, '^%d+'),\n"
"      lastid .. ' ' .. string.format('%.0f', late))\n"
"    redis.pcall('ZREMRANGEBYSCORE', kl, '-inf',\n"
"      '(' .. string.match(firstid, '^%d+'))\n"
"    if maxage > 0 then redis.pcall('PEXPIRE', kl, maxage) end\n"
"  end\n"
"  for key, id in pairs(touched) do\n"
"    redis.call('XTRIM', key, 'MINID', '~', firstid)\n"
"    if maxage > 0 then redis.call('PEXPIRE', key, maxage) end\n"
"    redis.call('ZADD', KEYS[3], string.match(id, '^%d+'), key)\n"
"  end\n"
"  if next(touched) then\n"
"    local budget = 2 * nrec + " AUDIT_EVICT_SLACK "\n"
"    if minid then\n"
"      local stale = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf',\n"
"        '(' .. minid, 'LIMIT', 0, budget)\n"
"      for j = 1, #stale do\n"
"        redis.call('ZREM', KEYS[3], stale[j])\n"
"        redis.call('UNLINK', stale[j])\n"
"      end\n"
"      budget = budget - #stale\n"
"      redis.call('PEXPIRE', KEYS[3], maxage)\n"
"    end\n"
"    local over = redis.call('ZCARD', KEYS[3]) - tonumber(ARGV[6])\n"
"    if over > budget then over = budget end\n"
"    if over > 0 then\n"
"      local old = redis.call('ZPOPMIN', KEYS[3], over)\n"
"      for j = 1, #old, 2 do redis.call('UNLINK', old[j]) end\n"
"      local hw = tonumber(redis.call('HGET', KEYS[2],\n"
"        '" AUDIT_EVICTED_FIELD "'))\n"
"      if #old > 0 and (not hw or tonumber(old[#old]) > hw) then\n"
"        redis.call('HSET', KEYS[2], '" AUDIT_EVICTED_FIELD "', old[#old])\n"
"      end\n"
"    end\n"
"  end\n"
"end\n"
"if not ok then\n"
"  if type(err) == 'table' and err.err then err = err.err end\n"
"  return redis.error_reply(tostring(err))\n"
"end\n"
"return written\n";

/*
 * The k oldest records in flight are acknowledged: written, or found to
 * be duplicates, and (with wait_replicas) on enough replicas.
 */
static void
audit_acked(struct audit *w, size_t k)
{
	struct audit_rec	*rec;
	size_t			 i;

	for (i = 0; i < k && (rec = TAILQ_FIRST(&w->inflight)) != NULL;
	    i++) {
		TAILQ_REMOVE(&w->inflight, rec, entry);
		w->ninflight--;
		if (rec->spool_end != 0) {
			w->spool_acked = rec->spool_end;
			w->acked_crc = rec->crc;
		}
		if (!rec->from_spool)
			w->ifbytes -= rec->len;
		audit_rec_free(w, rec);
	}
	if (w->ac->wal)
		audit_spool_release(w, 0);
	else if (w->mode == AUDIT_DIRECT && w->spool_size > AUDIT_SPOOL_HDR &&
	    w->spool_acked == w->spool_size)
		audit_spool_reset(w);
	audit_kick(w);
}

/*
 * The reply to the WAIT after a batch (priv: how many records it held):
 * fewer replicas than wait_replicas have it, so a failover could lose
 * it.  It is not acknowledged: the link is dropped, the records go back
 * to the spool and are sent again, which the script makes write nothing
 * twice.
 */
static void
audit_on_wait(struct rds *l, redisReply *reply, void *priv)
{
	struct audit	*w = rds_data(l);
	uint64_t	 t;

	if (reply == NULL || w->link != LINK_READY)
		return;
	if (TAILQ_EMPTY(&w->inflight))
		return;
	if (reply->type != REDIS_REPLY_INTEGER ||
	    reply->integer < w->ac->wait_replicas) {
		w->n_unreplicated++;
		t = now_ms();
		if (t - w->err_logged_ms >= 1000) {
			w->err_logged_ms = t;
			log_warn("- audit redis_unreplicated replicas=%lld "
			    "wanted=%d error=\"%.200s\"",
			    reply->type == REDIS_REPLY_INTEGER ?
			    reply->integer : -1LL, w->ac->wait_replicas,
			    reply->type == REDIS_REPLY_ERROR ? reply->str :
			    "");
		}
		audit_link_lost(w, "not replicated");
		return;
	}
	audit_acked(w, (uintptr_t)priv);
}

/*
 * A GAP for the oldest batch in flight: every record before it was
 * acknowledged (a failed earlier batch would have dropped the link
 * before this reply), so Redis lost them since: a failover to a replica
 * that had not got them (audit.wait_replicas prevents it).  Sending the
 * batch again would be refused forever while the spool fills: say so
 * loudly, and send it again marked to go past the hole.
 */
static void
audit_on_gap(struct audit *w, const char *err)
{
	const char	*run;
	size_t		 runlen;
	uint64_t	 runv, n;
	struct audit_fields	 fl;
	struct audit_rec	*rec = TAILQ_FIRST(&w->inflight);

	if (audit_payload_parse(rec->data, rec->len, &fl) == -1 ||
	    audit_rec_id(&fl, &run, &runlen, &runv, &n) == -1) {
		audit_link_lost(w, "error reply");
		return;
	}
	w->gap_run = runv;
	w->gap_n = n;
	w->n_gaps++;
	log_warn("- audit redis_gap error=\"%.200s\" lost=\"records "
	    "acknowledged before it, lost by Redis (a failover to a replica "
	    "that lagged? see audit.wait_replicas)\"", err);
	audit_link_lost(w, "gap");
}

/*
 * A reply to one batch (priv: how many records it held), the oldest in
 * flight: they are written or found to be duplicates; acknowledged now,
 * or, with wait_replicas, by the WAIT that follows.
 */
static void
audit_on_reply(struct rds *l, redisReply *reply, void *priv)
{
	struct audit		*w = rds_data(l);
	size_t			 k = (uintptr_t)priv;
	uint64_t		 t;
	char			 kind[32];

	if (reply == NULL || w->link != LINK_READY)
		return;		/* link lost; the spool has them */
	if (TAILQ_EMPTY(&w->inflight))
		return;
	if (reply->type == REDIS_REPLY_ERROR && reply->str != NULL &&
	    strncmp(reply->str, "GAP ", 4) == 0) {
		audit_on_gap(w, reply->str);
		return;
	}
	if (reply->type != REDIS_REPLY_INTEGER || reply->integer < 0 ||
	    (unsigned long long)reply->integer > k) {
		t = now_ms();
		if (t - w->err_logged_ms >= 1000) {
			w->err_logged_ms = t;
			log_warn("- audit redis_error kind=%s error=\"%.200s\"",
			    rds_error_kind(reply, kind, sizeof(kind)),
			    reply->type == REDIS_REPLY_ERROR ? reply->str :
			    "unexpected reply");
		}
		audit_link_lost(w, "error reply");
		return;
	}
	w->n_written += reply->integer;
	w->n_dup += k - reply->integer;
	if (w->ac->wait_replicas == 0)
		audit_acked(w, k);
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

/*
 * Whether a record goes into its repository's index: only when the
 * request was routed to an upstream and the policy let it through, i.e.
 * it names an upstream and either no error or an `allow` decision (an
 * upstream's own error code, which the record names since issue 13, or
 * a failure after the policy allowed the name).  A name refused (400,
 * a deny), unrouted (404) or failed before the policy would otherwise
 * let clients create index streams at will; such records are still in
 * the main stream, found by a --repo glob.  Decided from the record
 * alone, so that a replayed spool is indexed the same way.
 */
int
audit_indexed_repository(const struct audit_fields *fl)
{
	if (fl->len[AF_REPOSITORY] == 0 || fl->len[AF_UPSTREAM] == 0)
		return (0);
	return (fl->len[AF_ERROR] == 0 || (fl->len[AF_DECISION] == 5 &&
	    memcmp(fl->v[AF_DECISION], "allow", 5) == 0));
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
 * as one EVALSHA in the script's layout (each record packed), formatted
 * here: hiredis' own formatting costs a printf per argument.
 * On success they are in flight.
 */
static int
audit_send(struct audit *w, size_t k)
{
	const struct audit_fields	*fl;
	const char			*stream = w->ac->stream, *run;
	size_t				 slen = strlen(stream), runlen, i;
	size_t				 plen;
	uint64_t			 runv, n, t;
	char				 ntmp[AUDIT_U64_MAX], *np;
	char				 tail[AUDIT_REF_TAIL_MAX];
	char				 wn[16], wms[16];
	const char			*wargv[3] = { "WAIT", wn, wms };
	size_t				 wlens[3];

	if (audit_rec_id(&w->bfl[0], &run, &runlen, &runv, &n) == -1)
		return (-1);
	wlens[0] = 4;
	wlens[1] = snprintf(wn, sizeof(wn), "%d", w->ac->wait_replicas);
	wlens[2] = snprintf(wms, sizeof(wms), "%d", w->ac->timeout_ms / 2);
	w->cmdlen = 0;
	audit_cmd_len(w, '*', 3 + 3 + 2 * k + 6 + 3 * k);
	AUDIT_ARG(w, "EVALSHA", 7);
	AUDIT_ARGS(w, w->sha);
	np = audit_u64(ntmp, 3 + 2 * k);
	AUDIT_ARG(w, np, ntmp + sizeof(ntmp) - np);
	AUDIT_ARG(w, stream, slen);
	AUDIT_ARGS(w, w->kw);
	AUDIT_ARGS(w, w->ki);
	for (i = 0; i < k; i++) {
		fl = &w->bfl[i];
		audit_cmd_arg(w, stream, slen, ":subject:", 9,
		    fl->v[AF_SUBJECT], fl->len[AF_SUBJECT]);
		if (audit_indexed_repository(fl))
			audit_cmd_arg(w, stream, slen, ":repository:", 12,
			    fl->v[AF_REPOSITORY], fl->len[AF_REPOSITORY]);
		else
			AUDIT_ARG(w, stream, slen);
	}
	AUDIT_ARGS(w, w->conf->instance_id);
	AUDIT_ARG(w, run, runlen);
	np = audit_u64(ntmp, n);
	if (w->gap_n != 0 && runv == w->gap_run && n == w->gap_n)
		audit_cmd_arg(w, "!", 1, np, ntmp + sizeof(ntmp) - np, NULL,
		    0);
	else
		AUDIT_ARG(w, np, ntmp + sizeof(ntmp) - np);
	AUDIT_ARGS(w, w->maxlen);
	AUDIT_ARGS(w, w->maxage);
	AUDIT_ARGS(w, w->maxidx);
	for (i = 0; i < k; i++) {
		fl = &w->bfl[i];
		AUDIT_ARG(w, fl->v[AF_TIME], fl->len[AF_TIME]);
		AUDIT_ARG(w, tail, audit_ref_tail(fl, tail, sizeof(tail)));
		plen = audit_pack_len(fl);
		audit_cmd_len(w, '$', plen);
		audit_cmd_room(w, plen + 2);
		w->cmdlen += audit_pack(fl, w->cmd + w->cmdlen);
		w->cmd[w->cmdlen++] = '\r';
		w->cmd[w->cmdlen++] = '\n';
	}
	if (rds_command_formatted(w->rds, audit_on_reply,
	    (void *)(uintptr_t)k, w->cmd, w->cmdlen) == -1)
		return (-1);
	/*
	 * Pipelined behind the batch; Redis holds the link's next commands
	 * until it answers, so batches go one replication round trip
	 * apart (README "Redis failover").
	 */
	if (w->ac->wait_replicas > 0 && rds_command_argv(w->rds,
	    audit_on_wait, (void *)(uintptr_t)k, 3, wargv, wlens) == -1)
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

/*
 * A record that can never be sent: its payload does not parse or has no
 * id of the form the script needs.  The writer's own records always
 * parse; this is a spool file written by something else.  Dropped, or
 * it would be sent again on every connection and nothing after it ever
 * would (the records after it in its run then go past the hole as after
 * a GAP).  Its place in the file counts as acknowledged once nothing
 * before it is in flight; else the next acknowledgement covers it.
 */
static void
audit_unsendable(struct audit *w, struct audit_rec *r)
{
	uint64_t	 t = now_ms();

	w->n_dropped++;
	/* Not for want of room: no spool_full line for it (audit_tick_cb). */
	w->n_dropped_logged++;
	if (t - w->err_logged_ms >= 1000) {
		w->err_logged_ms = t;
		log_err("- audit unsendable_record offset=%llu bytes=%zu "
		    "error=\"no record id\"", r->spool_end == 0 ? 0ULL :
		    (unsigned long long)(r->spool_end - r->len -
		    AUDIT_SPOOL_FRAME), r->len);
	}
	if (!r->from_spool)
		w->ifbytes -= r->len;
	if (r->spool_end != 0 && w->ninflight == 0 &&
	    r->spool_end > w->spool_acked) {
		w->spool_acked = r->spool_end;
		w->acked_crc = r->crc;
	}
	audit_rec_free(w, r);
}

/*
 * Send what may be sent, in batches of consecutive records of one run:
 * the spool first, then the memory queue.
 */
void
audit_flush(struct audit *w)
{
	struct audit_rec	*r;
	const char		*run;
	size_t			 k, runlen;
	uint64_t		 runv, n, run0 = 0, n0 = 0;

	/* fsync always: what is about to be sent is on disk first. */
	if (w->ac->fsync == CONFIG_FSYNC_ALWAYS)
		audit_fsync(w);
	while (w->link == LINK_READY &&
	    w->ninflight < w->ac->max_inflight) {
		for (k = 0; k < AUDIT_BATCH &&
		    w->ninflight + k < w->ac->max_inflight; ) {
			if ((r = audit_next(w)) == NULL)
				break;
			/* A record built here is not parsed back. */
			if (!r->from_spool)
				audit_payload_fields(r->data, r->voff,
				    r->vlen, &w->bfl[k]);
			if ((r->from_spool && audit_payload_parse(r->data,
			    r->len, &w->bfl[k]) == -1) ||
			    audit_rec_id(&w->bfl[k],
			    &run, &runlen, &runv, &n) == -1) {
				/* The batch before it goes first. */
				if (k > 0) {
					audit_unnext(w, r);
					break;
				}
				audit_unsendable(w, r);
				continue;
			}
			if (k == 0) {
				run0 = runv;
				n0 = n;
			} else if (runv != run0 || n != n0 + k) {
				audit_unnext(w, r);
				break;
			}
			w->batch[k++] = r;
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
	return;
fail:
	audit_link_lost(w, "send failed");
}

/* ev_kick and ev_linger: send what may be sent. */
void
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
 * turn, and so do records of a WAL with fsync always, so that the fsync
 * comes before their responses leave.
 */
void
audit_kick(struct audit *w)
{
	struct timeval	 tv = { 0, AUDIT_LINGER_US };

	if (w->mode == AUDIT_SPOOL || w->nqueue >= AUDIT_BATCH ||
	    2 * (w->nqueue + w->ninflight) >= w->ac->queue_max ||
	    (w->ac->wal && w->ac->fsync == CONFIG_FSYNC_ALWAYS)) {
		event_active(w->ev_kick, 0, 0);
		return;
	}
	if (!evtimer_pending(w->ev_linger, NULL))
		evtimer_add(w->ev_linger, &tv);
}

/*
 * The writer gives the link up (error reply, reply timeout, queue full,
 * a send that failed): rds drops it, which calls audit_on_down() first,
 * and connects again after its back-off.
 */
void
audit_link_lost(struct audit *w, const char *why)
{
	rds_reset(w->rds, why);
}

/*
 * The link is gone: everything unacknowledged goes to the spool.  Runs
 * before the connection is freed: freeing runs the admin queries'
 * callbacks, whose responses write records, which must now find the
 * spool mode set.
 */
static void
audit_on_down(struct rds *l, void *arg, const char *why, int was_up)
{
	struct audit	*w = arg;

	w->link = LINK_DOWN;
	/* Once per outage: the link retries on its own. */
	if (!w->down_logged)
		log_warn("- audit redis_down reason=\"%s\" inflight=%zu "
		    "queued=%zu", why, w->ninflight, w->nqueue);
	w->down_logged = 1;
	audit_spool_unacked(w);
}

static void
audit_on_script(struct rds *l, redisReply *reply, void *priv)
{
	struct audit	*w = rds_data(l);
	char		 kind[32];

	if (reply == NULL || w->link != LINK_LOADING)
		return;
	if (reply->type != REDIS_REPLY_STRING || reply->len <= 0 ||
	    (size_t)reply->len >= sizeof(w->sha)) {
		log_warn("- audit redis_error during=script_load kind=%s "
		    "error=\"%.200s\"", rds_error_kind(reply, kind,
		    sizeof(kind)), reply->type == REDIS_REPLY_ERROR ?
		    reply->str : "unexpected reply");
		audit_link_lost(w, "script load failed");
		return;
	}
	memcpy(w->sha, reply->str, reply->len);
	w->sha[reply->len] = '\0';
	w->link = LINK_READY;
	w->down_logged = 0;
	log_info("- audit redis_up address=%s spooled_bytes=%llu",
	    rds_address(l), (unsigned long long)(w->spool_size -
	    w->spool_acked));
	audit_kick(w);
}

/* Authenticated, on its database: load the script. */
static void
audit_on_up(struct rds *l, void *arg)
{
	struct audit	*w = arg;
	const char	*argv[3] = { "SCRIPT", "LOAD", audit_lua };
	size_t		 lens[3] = { 6, 4, sizeof(audit_lua) - 1 };

	w->link = LINK_LOADING;
	w->link_since = now_ms();
	if (rds_command_argv(l, audit_on_script, NULL, 3, argv, lens) == -1)
		audit_link_lost(w, "script load failed");
}

static const struct rds_ops audit_rds_ops = {
	audit_on_up, audit_on_down, NULL
};

/*
 * Where the audit link goes and as whom: audit.redis (which is
 * redis.address when it is not written), with the user, password and
 * database of the top-level redis section, and audit.timeout for
 * connecting and for replies, as before there was such a section.
 */
void
audit_rds_params(struct rds_params *p, const struct config *conf)
{
	const struct config_audit	*ac = conf->audit;

	rds_params_init(p, conf, "audit");
	/* audit.redis written apart from the shared section: no sentinel. */
	if (strcmp(p->host, ac->redis_host) != 0 ||
	    p->port != ac->redis_port)
		p->nsentinels = 0;
	p->host = ac->redis_host;
	p->port = ac->redis_port;
	p->connect_timeout_ms = ac->timeout_ms;
	p->command_timeout_ms = ac->timeout_ms;
}

/* Make the writer's link and start connecting. */
void
audit_connect(struct audit *w)
{
	struct rds_params	 p;

	if (w->rds != NULL)
		return;
	audit_rds_params(&p, w->conf);
	w->rds = rds_new(w->ctx->base, &p, &audit_rds_ops, w);
	w->link = LINK_CONNECTING;
	w->link_since = now_ms();
	rds_start(w->rds);
}

/* Close the link, for good: pending replies come back NULL. */
void
audit_redis_close(struct audit *w)
{
	struct rds	*l;

	if ((l = w->rds) != NULL) {
		w->rds = NULL;
		w->link = LINK_DOWN;
		rds_free(l);
	}
}

/*
 * An admin query's reply on connection gen of link l is later than
 * audit.timeout: Redis counts as down, as for a record
 * (audit_tick_cb() sees records only).  Dropping the link runs the
 * query's callbacks with no reply, which answer 503.
 */
void
audit_redis_overdue(struct pc_ctx *ctx, struct rds *l, uint64_t gen)
{
	struct audit	*w = ctx->audit;

	if (w == NULL || w->rds != l || w->link != LINK_READY ||
	    rds_generation(l) != gen)
		return;
	audit_link_lost(w, "reply timeout");
}

/* The Redis link for admin queries, or NULL while it is not up. */
struct rds *
audit_redis(struct pc_ctx *ctx)
{
	struct audit	*w = ctx->audit;

	if (w == NULL || w->link != LINK_READY)
		return (NULL);
	return (w->rds);
}

/* The Lua script, for `audit generate`. */
const char *
audit_script(void)
{
	return (audit_lua);
}
