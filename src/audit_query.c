/*
 * audit_query.c: reading the audit stream.  One query engine, newest
 * first and paginated, driven two ways: synchronously by the CLI
 * (`portcullis audit query`, audit_cli.c: hiredis' blocking API, the
 * CLI is not the event loop) and asynchronously by GET /admin/audit
 * (admin.c) on the gateway's Redis link.  The engine only says which
 * commands to send next and takes their replies one by one, so both
 * drivers share every rule.
 *
 * Plans: a subject filter reads <stream>:subject:<s>, a repository
 * filter without glob characters <stream>:repository:<r>; their entries
 * have the main entry's id, so the engine fetches just those records
 * (pipelined XRANGE id id) after a prefilter on the action, status and
 * decision the index entries carry.  Otherwise it walks the main stream
 * with XREVRANGE.  An index holds every entry newer than the last index
 * evicted over audit.max_index_keys (AUDIT_EVICTED_FIELD in the writers
 * hash, read first): what is not newer is found by walking the main
 * stream, keeping for a repository plan only the records the writer
 * indexes (audit_indexed_repository()), so that a query gives the same
 * answer whether or not its index was evicted on the way.
 * A repository glob whose first segment is literal ("team/...") reads
 * the first-segment index <stream>:repository:team/ the same way (whole
 * after the later of the evicted mark and AUDIT_PREFIX_FIELD).
 * Time bounds limit what is read: the writer's script gives every
 * record an id at or after its time, so --since is the walk's lower id
 * exactly; a walk with --until starts at until + AUDIT_LATE_MS, or
 * higher when <stream>:late holds a batch above that with a record at
 * or before until (AQ_LATE, first); the records are then filtered on
 * their time.  (Records written before that rule, by a gateway whose
 * clock ran ahead of Redis's, may sit below their time and be missed by
 * --since near them.)  The page ends at --limit records; "next" is the
 * id to pass as the cursor for the one after.
 *
 * The command line that drives it (`portcullis audit query|tail|export|
 * generate`) is audit_cli.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <hiredis/hiredis.h>

#include "portcullis.h"
#include "audit.h"
#include "rds.h"

/*
 * The first-segment index of a glob: "team/app?" reads
 * <stream>:repository:team/ when the part before the first '/' has no
 * glob character.  seg gets "team/".  1, or 0 when there is none.
 */
static int
aq_glob_segment(const char *glob, char *seg, size_t len)
{
	const char	*sl;

	if ((sl = strchr(glob, '/')) == NULL || sl == glob ||
	    (size_t)(sl - glob) + 2 > len)
		return (0);
	if (strcspn(glob, "*?[\\") < (size_t)(sl - glob))
		return (0);
	memcpy(seg, glob, sl - glob + 1);
	seg[sl - glob + 1] = '\0';
	return (1);
}

/*
 * A query for filter f over stream; each record found goes to emit(arg).
 * scan_max: entries one page may scan (0: no cap).  f must outlive it.
 */
struct aq *
aq_new(const struct audit_filter *f, const char *stream, size_t scan_max,
    aq_emit_fn emit, void *arg)
{
	struct aq	*q;
	char		 seg[AUDIT_VALUE_MAX + 2];

	if ((q = calloc(1, sizeof(*q))) == NULL ||
	    (q->ids = calloc(AQ_BATCH, sizeof(*q->ids))) == NULL)
		fatal("calloc");
	q->f = f;
	q->stream = stream;
	q->scan_max = scan_max;
	q->emit = emit;
	q->arg = arg;
	if (f->subject != NULL)
		snprintf(q->index, sizeof(q->index), "%s:subject:%s", stream,
		    f->subject);
	else if (f->repo != NULL && audit_glob_literal(f->repo))
		snprintf(q->index, sizeof(q->index), "%s:repository:%s",
		    stream, f->repo);
	else if (f->repo != NULL && (f->decision == NULL ||
	    strcmp(f->decision, "deny") != 0) && aq_glob_segment(f->repo,
	    seg, sizeof(seg))) {
		/* Refusals are in no repository index: deny walks. */
		snprintf(q->index, sizeof(q->index), "%s:repository:%s",
		    stream, seg);
		q->prefix = 1;
	}
	if (f->cursor[0] != '\0')
		snprintf(q->hi, sizeof(q->hi), "(%s", f->cursor);
	else
		snprintf(q->hi, sizeof(q->hi), "+");
	/*
	 * The script gives every record an id whose ms is at or after its
	 * time: an entry before since holds a record before since, and
	 * the walk stops there.
	 */
	if (f->since_ms > 0)
		snprintf(q->lo, sizeof(q->lo), "%lld", (long long)f->since_ms);
	else
		snprintf(q->lo, sizeof(q->lo), "-");
	q->ncount = AQ_BATCH;
	snprintf(q->count, sizeof(q->count), "%d", AQ_BATCH);
	snprintf(q->lo_main, sizeof(q->lo_main), "%s", q->lo);
	snprintf(q->kw, sizeof(q->kw), "%s:writers", stream);
	snprintf(q->klate, sizeof(q->klate), "%s:late", stream);
	if (f->until_ms > 0) {
		snprintf(q->late_lo, sizeof(q->late_lo), "(%lld",
		    (long long)f->until_ms + atoll(AUDIT_LATE_MS));
		q->phase = AQ_LATE;
	} else
		q->phase = q->index[0] != '\0' ? AQ_MARK : AQ_SCAN;
	return (q);
}

/* The ms of a stream id, or of a bound such as "-" (0) or "(id". */
static unsigned long long
aq_id_ms(const char *id)
{
	if (*id == '(')
		id++;
	return (strtoull(id, NULL, 10));
}

/* The sequence part of an id ("ms-seq"); a bare ms is the top of it. */
static unsigned long long
aq_id_seq(const char *id)
{
	const char	*d;

	if ((d = strchr(id, '-')) == NULL)
		return (~0ULL);
	return (strtoull(d + 1, NULL, 10));
}

/*
 * Lower q->hi to id (inclusive) when id is below it: an --until walk
 * starts at the newest entry that may hold a record up to until.
 */
static void
aq_lower_hi(struct aq *q, const char *id)
{
	unsigned long long	 hm, im;

	if (strcmp(q->hi, "+") != 0) {
		hm = aq_id_ms(q->hi);
		im = aq_id_ms(id);
		if (hm < im || (hm == im && aq_id_seq(q->hi + 1) <=
		    aq_id_seq(id)))
			return;
	}
	snprintf(q->hi, sizeof(q->hi), "%s", id);
}

/*
 * The reply to AQ_LATE: late batches above until + AUDIT_LATE_MS,
 * newest first.  The newest one that holds a record at or before until
 * is where the walk starts; with none, until + AUDIT_LATE_MS; when
 * AUDIT_LATE_READ of them did not tell, the top of the stream.
 */
static void
aq_late(struct aq *q, const redisReply *r)
{
	const redisReply	*e;
	char			 id[48], *sp;
	size_t			 k;

	if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
		aq_fail(q, "ZREVRANGEBYSCORE", r);
		return;
	}
	for (k = 0; k < r->elements; k++) {
		e = r->element[k];
		if (e->type != REDIS_REPLY_STRING || e->len >= sizeof(id))
			continue;
		memcpy(id, e->str, e->len + 1);
		if ((sp = strchr(id, ' ')) == NULL)
			continue;
		*sp = '\0';
		if (!audit_valid_stream_id(id) ||
		    strtoll(sp + 1, NULL, 10) > q->f->until_ms)
			continue;
		aq_lower_hi(q, id);
		return;
	}
	if (r->elements >= AUDIT_LATE_READ)
		return;
	aq_lower_hi(q, q->late_lo + 1);
}

/*
 * The index is whole only after the evicted mark: walk the main stream
 * from the mark down (or from the cursor, when it is below the mark).
 * No mark (a first-segment index never written): the whole walk.
 */
static void
aq_walk_main(struct aq *q)
{
	q->index[0] = '\0';
	q->walk = 1;
	q->exhausted = 0;
	if (q->evicted[0] != '\0' && (strcmp(q->hi, "+") == 0 ||
	    aq_id_ms(q->hi) > strtoull(q->evicted, NULL, 10)))
		snprintf(q->hi, sizeof(q->hi), "%s", q->evicted);
	snprintf(q->lo, sizeof(q->lo), "%s", q->lo_main);
}

/* One field of the AQ_MARK reply: a number of ms, or nil (0).  -1 bad. */
static int
aq_mark_field(const redisReply *r, unsigned long long *w, int *set)
{
	size_t	 n;

	*set = 0;
	if (r->type == REDIS_REPLY_NIL)
		return (0);
	if (r->type != REDIS_REPLY_STRING)
		return (-1);
	n = strspn(r->str, "0123456789");
	if (n == 0 || n > 19 || n != r->len)
		return (-1);
	*w = strtoull(r->str, NULL, 10);
	*set = 1;
	return (0);
}

/* The reply to AQ_MARK: the evicted mark and the prefix mark, or nils. */
static void
aq_mark(struct aq *q, const redisReply *r)
{
	unsigned long long	 w = 0, p = 0;
	int			 wset, pset;

	if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
	    aq_mark_field(r->element[0], &w, &wset) == -1 ||
	    aq_mark_field(r->element[1], &p, &pset) == -1) {
		aq_fail(q, "HMGET", r);
		return;
	}
	if (q->prefix && !pset) {
		/* No first-segment index was ever written: walk it all. */
		aq_walk_main(q);
		return;
	}
	if (q->prefix && p > w) {
		w = p;
		wset = 1;
	}
	if (!wset)
		return;
	snprintf(q->evicted, sizeof(q->evicted), "%llu", w);
	if (strcmp(q->lo_main, "-") != 0 && aq_id_ms(q->lo_main) > w) {
		/* The walk ends above the mark: the index has it all. */
		q->evicted[0] = '\0';
		return;
	}
	if (strcmp(q->hi, "+") != 0 && aq_id_ms(q->hi) <= w) {
		aq_walk_main(q);
		return;
	}
	snprintf(q->lo, sizeof(q->lo), "%llu", w + 1);
}

/* Free a query; NULL is fine. */
void
aq_free(struct aq *q)
{
	if (q == NULL)
		return;
	free(q->ids);
	free(q);
}

/* The query failed (what: the command; r: its reply or NULL). */
void
aq_fail(struct aq *q, const char *what, const redisReply *r)
{
	q->failed = 1;
	q->phase = AQ_DONE;
	snprintf(q->err, sizeof(q->err), "%s: %s", what, r == NULL ?
	    "no reply (Redis link lost)" : r->type == REDIS_REPLY_ERROR ?
	    r->str : "unexpected reply");
}

/* The commands of the next step; 0 when the query is done. */
int
aq_prepare(struct aq *q)
{
	size_t	 i;

#define SET(c, k, s) do {						\
	q->argv[c][k] = (s);						\
	q->lens[c][k] = strlen(s);					\
} while (0)
	q->ncmds = 0;
	switch (q->phase) {
	case AQ_LATE:
		SET(0, 0, "ZREVRANGEBYSCORE");
		SET(0, 1, q->klate);
		SET(0, 2, "+inf");
		SET(0, 3, q->late_lo);
		SET(0, 4, "LIMIT");
		SET(0, 5, "0");
		SET(0, 6, AUDIT_LATE_READ_S);
		q->argc[0] = 7;
		q->ncmds = 1;
		break;
	case AQ_MARK:
		SET(0, 0, "HMGET");
		SET(0, 1, q->kw);
		SET(0, 2, AUDIT_EVICTED_FIELD);
		SET(0, 3, AUDIT_PREFIX_FIELD);
		q->argc[0] = 4;
		q->ncmds = 1;
		break;
	case AQ_SCAN:
		q->nstrad = 0;
		q->stop = 0;
		q->step_refs = 0;
		if (q->index[0] != '\0' && strcmp(q->hi, "+") != 0) {
			/*
			 * An index entry has the id of its newest ref: the
			 * first one above hi may hold refs below it.
			 */
			snprintf(q->strad, sizeof(q->strad), "(%s%s",
			    q->hi + (q->hi[0] == '('),
			    strchr(q->hi, '-') == NULL ?
			    "-18446744073709551615" : "");
			SET(0, 0, "XRANGE");
			SET(0, 1, q->index);
			SET(0, 2, q->strad);
			SET(0, 3, "+");
			SET(0, 4, "COUNT");
			SET(0, 5, "1");
			q->argc[0] = 6;
			q->nstrad = 1;
		}
		i = q->nstrad;
		SET(i, 0, "XREVRANGE");
		SET(i, 1, q->index[0] != '\0' ? q->index : q->stream);
		SET(i, 2, q->hi);
		SET(i, 3, q->lo);
		SET(i, 4, "COUNT");
		SET(i, 5, q->index[0] != '\0' ? AQ_INDEX_BATCH_S : q->count);
		q->argc[i] = 6;
		q->ncmds = (int)i + 1;
		break;
	case AQ_FETCH:
		for (i = 0; i < q->nids; i++) {
			SET(i, 0, "XRANGE");
			SET(i, 1, q->stream);
			SET(i, 2, q->ids[i]);
			SET(i, 3, q->ids[i]);
			q->argc[i] = 4;
		}
		q->ncmds = (int)q->nids;
		break;
	case AQ_DONE:
		break;
	}
#undef SET
	q->ncmds_sent += q->ncmds;
	return (q->ncmds);
}

/* An entry of an XRANGE-style reply: its id and its fields. */
int
aq_entry(const redisReply *e, const char **id, struct audit_fields *fl)
{
	const redisReply	*kv;
	size_t			 i;
	int			 f;

	if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
	    e->element[0]->type != REDIS_REPLY_STRING ||
	    e->element[0]->len >= 48)
		return (-1);
	*id = e->element[0]->str;
	kv = e->element[1];
	for (f = 0; f < AF__MAX; f++) {
		fl->v[f] = "";
		fl->len[f] = 0;
	}
	if (kv->type != REDIS_REPLY_ARRAY)
		return (0);	/* a deleted entry */
	if (kv->elements == 2 && kv->element[0]->type == REDIS_REPLY_STRING &&
	    kv->element[1]->type == REDIS_REPLY_STRING &&
	    kv->element[0]->len == sizeof(AUDIT_PACKED_FIELD) - 1 &&
	    memcmp(kv->element[0]->str, AUDIT_PACKED_FIELD,
	    sizeof(AUDIT_PACKED_FIELD) - 1) == 0)
		return (audit_unpack(kv->element[1]->str, kv->element[1]->len,
		    fl));
	/* The layout before: a field per value. */
	for (i = 0; i + 1 < kv->elements; i += 2) {
		if (kv->element[i]->type != REDIS_REPLY_STRING ||
		    kv->element[i + 1]->type != REDIS_REPLY_STRING)
			continue;
		f = audit_field_lookup(kv->element[i]->str,
		    kv->element[i]->len);
		if (f == -1)
			continue;
		fl->v[f] = kv->element[i + 1]->str;
		fl->len[f] = kv->element[i + 1]->len;
	}
	return (0);
}

/*
 * Start on the refs of an index entry e: AUDIT_REFS_FIELD, or an entry of
 * the layout before (the record's own id, action, status, decision).
 * 0, or -1 when e is no entry.
 */
int
aq_refs_init(struct aq_refs *it, const redisReply *e)
{
	const redisReply	*kv;

	memset(it, 0, sizeof(*it));
	if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
	    e->element[0]->type != REDIS_REPLY_STRING ||
	    e->element[0]->len >= AUDIT_ID_MAX)
		return (-1);
	it->e = e;
	kv = e->element[1];
	if (kv->type == REDIS_REPLY_ARRAY && kv->elements == 2 &&
	    kv->element[0]->type == REDIS_REPLY_STRING &&
	    kv->element[1]->type == REDIS_REPLY_STRING &&
	    kv->element[0]->len == sizeof(AUDIT_REFS_FIELD) - 1 &&
	    memcmp(kv->element[0]->str, AUDIT_REFS_FIELD,
	    sizeof(AUDIT_REFS_FIELD) - 1) == 0) {
		it->v = kv->element[1]->str;
		it->end = kv->element[1]->len;
	}
	return (0);
}

/*
 * The next ref, newest first: its id into id (AUDIT_ID_MAX bytes), what
 * the entry keeps of the record into fl.  1, 0 at the end, -1 when the
 * rest is malformed.
 */
int
aq_refs_next(struct aq_refs *it, char *id, struct audit_fields *fl)
{
	const char	*eid;

	if (it->done)
		return (0);
	if (it->v == NULL) {
		it->done = 1;
		if (aq_entry(it->e, &eid, fl) == -1)
			return (-1);
		snprintf(id, AUDIT_ID_MAX, "%s", eid);
		return (1);
	}
	return (audit_ref_prev(it->v, &it->end, id, fl));
}

/* a < b, = or > as -1, 0, 1: stream ids, or a bare ms (the top of it). */
static int
aq_id_cmp(const char *a, const char *b)
{
	unsigned long long	 x = aq_id_ms(a), y = aq_id_ms(b);

	if (x == y) {
		x = aq_id_seq(a);
		y = aq_id_seq(b);
	}
	return (x < y ? -1 : x > y);
}

/* What an index entry carries is enough to skip a record. */
static int
aq_prefilter(const struct audit_filter *f, const struct audit_fields *fl)
{
	struct audit_filter	 g;

	audit_filter_init(&g);
	g.action = f->action;
	g.decision = f->decision;
	g.status = f->status;
	g.status_class = f->status_class;
	return (audit_filter_match(&g, fl));
}

static void
aq_found(struct aq *q, const char *id, const struct audit_fields *fl)
{
	q->emit(q->arg, id, fl);
	if (++q->nout >= q->f->limit) {
		snprintf(q->next, sizeof(q->next), "%s", id);
		q->phase = AQ_DONE;
	}
}

/*
 * The refs of index entry e, newest first: those below hi (the entry
 * above it, read first, may hold newer ones) and at or above lo go to
 * the prefilter.  Stops the step when the fetch batch is full or a ref
 * is below lo (then so is everything after it).
 */
static void
aq_index_entry(struct aq *q, const redisReply *e)
{
	struct aq_refs		 it;
	struct audit_fields	 fl;
	char			 id[AUDIT_ID_MAX];
	const char		*hi = q->hi + (q->hi[0] == '(');
	int			 c;

	if (aq_refs_init(&it, e) == -1)
		return;
	while (!q->stop && aq_refs_next(&it, id, &fl) == 1) {
		if (!audit_valid_stream_id(id))
			break;
		if (strcmp(q->hi, "+") != 0 && ((c = aq_id_cmp(id, hi)) > 0 ||
		    (c == 0 && q->hi[0] == '(')))
			continue;
		if (strcmp(q->lo, "-") != 0 && aq_id_ms(id) < aq_id_ms(q->lo)) {
			q->exhausted = 1;
			q->stop = 1;
			break;
		}
		q->scanned++;
		q->step_refs++;
		snprintf(q->last, sizeof(q->last), "%s", id);
		if (aq_prefilter(q->f, &fl)) {
			snprintf(q->ids[q->nids++], 48, "%s", id);
			/* No more than the page still wants, for a start. */
			if (q->nids == AQ_BATCH ||
			    q->nout + q->nids >= q->f->limit)
				q->stop = 1;
		}
	}
}

/* A reply of an index scan: the entry above hi, then those below. */
static void
aq_index_reply(struct aq *q, int i, const redisReply *r)
{
	size_t	 k;

	for (k = 0; k < r->elements && !q->stop; k++)
		aq_index_entry(q, r->element[k]);
	if (i < q->nstrad)
		return;
	if (r->elements > 0 && r->element[r->elements - 1]->type ==
	    REDIS_REPLY_ARRAY && r->element[r->elements - 1]->elements ==
	    2 && r->element[r->elements - 1]->element[0]->type ==
	    REDIS_REPLY_STRING)
		snprintf(q->last_entry, sizeof(q->last_entry), "%s",
		    r->element[r->elements - 1]->element[0]->str);
	if (!q->stop && r->elements < AQ_INDEX_BATCH)
		q->exhausted = 1;
}

/* The reply to command i of the current step. */
void
aq_reply(struct aq *q, int i, const redisReply *r)
{
	struct audit_fields	 fl;
	const char		*id;
	size_t			 k;

	if (q->phase == AQ_DONE)
		return;
	if (q->phase == AQ_LATE) {
		aq_late(q, r);
		return;
	}
	if (q->phase == AQ_MARK) {
		aq_mark(q, r);
		return;
	}
	if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
		aq_fail(q, q->phase == AQ_SCAN ? "XREVRANGE" : "XRANGE", r);
		return;
	}
	if (q->phase == AQ_FETCH) {
		if (r->elements == 0) {
			/* Trimmed from the stream: so is all that is older. */
			q->exhausted = 1;
			return;
		}
		if (aq_entry(r->element[0], &id, &fl) == 0 &&
		    audit_filter_match(q->f, &fl))
			aq_found(q, id, &fl);
		return;
	}
	if (q->index[0] != '\0') {
		aq_index_reply(q, i, r);
		return;
	}
	for (k = 0; k < r->elements && q->phase != AQ_DONE; k++) {
		if (aq_entry(r->element[k], &id, &fl) == -1)
			continue;
		q->scanned++;
		snprintf(q->last, sizeof(q->last), "%s", id);
		if (audit_filter_match(q->f, &fl) && (!q->walk ||
		    q->f->subject != NULL || audit_indexed_repository(&fl)))
			aq_found(q, id, &fl);
	}
	if (r->elements < q->ncount)
		q->exhausted = 1;
}

/* All replies of the step are in: choose the next one. */
void
aq_step_done(struct aq *q)
{
	if (q->phase == AQ_DONE)
		return;
	if (q->phase == AQ_LATE) {
		q->phase = q->index[0] != '\0' ? AQ_MARK : AQ_SCAN;
		return;
	}
	if (q->phase == AQ_MARK) {
		q->phase = AQ_SCAN;
		return;
	}
	if (q->phase == AQ_FETCH) {
		q->nids = 0;
		q->phase = AQ_SCAN;
	} else if (q->nids > 0) {
		q->phase = AQ_FETCH;
		snprintf(q->hi, sizeof(q->hi), "(%s", q->last);
		return;
	}
	if (q->exhausted && q->evicted[0] != '\0' && !q->walk) {
		/* Through the index down to the mark: the rest is older. */
		aq_walk_main(q);
		return;
	}
	if (q->exhausted) {
		q->phase = AQ_DONE;
		return;
	}
	if (q->index[0] != '\0' && q->step_refs == 0) {
		/* Entries without a readable ref: go on below them. */
		snprintf(q->hi, sizeof(q->hi), "(%s", q->last_entry);
		return;
	}
	if (q->scan_max != 0 && q->scanned >= q->scan_max) {
		/* A partial page: the caller goes on from here. */
		snprintf(q->next, sizeof(q->next), "%s", q->last);
		q->phase = AQ_DONE;
		return;
	}
	/*
	 * A walk that goes on takes larger steps: fewer round trips, each
	 * of which costs a wake-up of both sides on a busy machine.  Not
	 * the gateway's (scan_max set): a step is parsed on its loop.
	 */
	if (q->scan_max == 0 && q->index[0] == '\0' &&
	    q->ncount < AQ_WALK_MAX) {
		q->ncount *= 2;
		snprintf(q->count, sizeof(q->count), "%zu", q->ncount);
	}
	snprintf(q->hi, sizeof(q->hi), "(%s", q->last);
}

/* A record as a JSON object: integers as numbers, the rest strings. */
json_t *
aq_json(const char *id, const struct audit_fields *fl)
{
	json_t		*o;
	char		 tmp[32];
	int		 f;

	if ((o = json_object()) == NULL)
		fatal("json_object");
	json_object_set_new(o, "stream_id", json_string(id));
	for (f = 0; f < AF__MAX; f++) {
		if (audit_field_is_int(f) && fl->len[f] > 0 &&
		    fl->len[f] < sizeof(tmp)) {
			memcpy(tmp, fl->v[f], fl->len[f]);
			tmp[fl->len[f]] = '\0';
			json_object_set_new(o, audit_field_name(f),
			    json_integer(strtoll(tmp, NULL, 10)));
		} else
			json_object_set_new(o, audit_field_name(f),
			    json_stringn(fl->v[f], fl->len[f]));
	}
	return (o);
}

/* The page: takes ownership of records, adds "next". */
json_t *
aq_page(json_t *records, const struct aq *q)
{
	json_t	*o;

	if ((o = json_object()) == NULL)
		fatal("json_object");
	json_object_set_new(o, "records", records);
	json_object_set_new(o, "next", q->next[0] != '\0' ?
	    json_string(q->next) : json_null());
	return (o);
}

/* An emit function: append the record to the JSON array arg. */
void
aq_emit_json(void *arg, const char *id, const struct audit_fields *fl)
{
	json_array_append_new(arg, aq_json(id, fl));
}
