/*
 * audit_query.c: reading the audit stream.  One query engine, newest
 * first and paginated, driven two ways: synchronously by the CLI
 * (`portcullis audit query`, hiredis' blocking API: the CLI is not the
 * event loop) and asynchronously by GET /admin/audit (admin.c) on the
 * gateway's Redis link.  The engine only says which commands to send
 * next and takes their replies one by one, so both drivers share every
 * rule.
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
 * Also here: `audit tail` (XREAD BLOCK from the newest entry, same
 * filters), `audit export` (the query to its end as JSON lines, resumed
 * by cursor) and `audit generate`, which writes synthetic records
 * through the writer's own script, for tests and benchmarks.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

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
		SET(0, 0, "XREVRANGE");
		SET(0, 1, q->index[0] != '\0' ? q->index : q->stream);
		SET(0, 2, q->hi);
		SET(0, 3, q->lo);
		SET(0, 4, "COUNT");
		SET(0, 5, q->count);
		q->argc[0] = 6;
		q->ncmds = 1;
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
static int
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
	for (k = 0; k < r->elements && q->phase != AQ_DONE; k++) {
		if (aq_entry(r->element[k], &id, &fl) == -1)
			continue;
		q->scanned++;
		snprintf(q->last, sizeof(q->last), "%s", id);
		if (q->index[0] != '\0') {
			if (aq_prefilter(q->f, &fl) && q->nids < AQ_BATCH)
				snprintf(q->ids[q->nids++], 48, "%s", id);
		} else if (audit_filter_match(q->f, &fl) && (!q->walk ||
		    q->f->subject != NULL || audit_indexed_repository(&fl)))
			aq_found(q, id, &fl);
	}
	if (r->elements < AQ_BATCH)
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
	if (q->scan_max != 0 && q->scanned >= q->scan_max) {
		/* A partial page: the caller goes on from here. */
		snprintf(q->next, sizeof(q->next), "%s", q->last);
		q->phase = AQ_DONE;
		return;
	}
	snprintf(q->hi, sizeof(q->hi), "(%s", q->last);
}

/* A record as a JSON object: integers as numbers, the rest strings. */
static json_t *
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

/* The command line: audit query, tail, generate. */

struct aq_out {
	int	 json;
	int	 header_done;
	size_t	 n;
	char	 last[48];
};

static void	aq_print_json(json_t *);

/* --stats: how much the query read, the bound the tests check. */
static void
aq_stats(const struct aq *q)
{
	fprintf(stderr, "stats: plan=%s entries_read=%zu commands=%zu\n",
	    q->prefix ? "segment-index" : q->f->subject != NULL ||
	    (q->f->repo != NULL && audit_glob_literal(q->f->repo)) ?
	    "index" : "stream", q->scanned, q->ncmds_sent);
}

static void
aq_fmt_time(const struct audit_fields *fl, char *buf, size_t len)
{
	char		 tmp[32];
	struct tm	 tm;
	time_t		 s;
	long long	 ms;

	if (fl->len[AF_TIME] == 0 || fl->len[AF_TIME] >= sizeof(tmp)) {
		snprintf(buf, len, "-");
		return;
	}
	memcpy(tmp, fl->v[AF_TIME], fl->len[AF_TIME]);
	tmp[fl->len[AF_TIME]] = '\0';
	ms = strtoll(tmp, NULL, 10);
	s = (time_t)(ms / 1000);
	gmtime_r(&s, &tm);
	strftime(tmp, sizeof(tmp), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf, len, "%s.%03lldZ", tmp, ms % 1000);
}

static void
aq_row(const struct audit_fields *fl)
{
	char	 t[40];

#define V(f) (fl->len[f] > 0 ? (int)fl->len[f] : 1), \
	(fl->len[f] > 0 ? fl->v[f] : "-")
	aq_fmt_time(fl, t, sizeof(t));
	printf("%-24s %3.*s %-7.*s %-8.*s %-16.*s %-30.*s %-20.*s %-15.*s "
	    "%5.*s %.*s\n", t, V(AF_STATUS), V(AF_ACTION), V(AF_DECISION),
	    V(AF_SUBJECT), V(AF_REPOSITORY), V(AF_REFERENCE), V(AF_CLIENT_IP),
	    V(AF_DURATION_MS), V(AF_REQUEST_ID));
#undef V
}

static void
aq_header(void)
{
	printf("%-24s %3s %-7s %-8s %-16s %-30s %-20s %-15s %5s %s\n",
	    "TIME", "ST", "ACTION", "DECISION", "SUBJECT", "REPOSITORY",
	    "REFERENCE", "CLIENT", "MS", "REQUEST_ID");
}

static void
aq_emit_table(void *arg, const char *id, const struct audit_fields *fl)
{
	struct aq_out	*o = arg;

	if (!o->header_done) {
		aq_header();
		o->header_done = 1;
	}
	aq_row(fl);
}

/*
 * Connect to the audit's Redis as the gateway does (rds.c: AUTH and
 * SELECT from the top-level redis section), then wait up to timeout_s
 * for each reply.
 */
static redisContext *
aq_connect(const struct config *conf, int timeout_s)
{
	struct rds_params	 p;
	redisContext		*rc;
	struct timeval		 tv = { 5, 0 };

	audit_rds_params(&p, conf);
	/* As before: 5 s to connect, whatever audit.timeout says. */
	p.connect_timeout_ms = 5000;
	if (rds_connect_cli(&p, "audit", &rc) != 0)
		return (NULL);
	tv.tv_sec = timeout_s;
	redisSetTimeout(rc, tv);
	return (rc);
}

/*
 * The CLI's replies live in an arena: a walk reads every field of every
 * entry, and hiredis' own objects (a malloc for each of an entry's 48
 * values and arrays, a free for each) were most of the CLI's time.  A
 * reply is processed whole and then dropped, so the arena is reset
 * after each; its blocks are kept for the next (a reply is at most one
 * step: AQ_BATCH entries or one record).
 */
struct aq_blk {
	struct aq_blk	*next;
	size_t		 size;
	size_t		 used;
	char		 data[];
};

struct aq_arena {
	struct aq_blk	*head;
	struct aq_blk	*cur;
};

#define AQ_BLK_SIZE	(1024 * 1024)

static void *
aq_alloc(struct aq_arena *a, size_t n)
{
	struct aq_blk	*b, **bp;
	void		*p;

	n = (n + 15) & ~(size_t)15;
	for (b = a->cur; b != NULL; b = b->next) {
		if (b->size - b->used >= n) {
			p = b->data + b->used;
			b->used += n;
			a->cur = b;
			return (p);
		}
		if (b->next != NULL)
			b->next->used = 0;
	}
	for (bp = &a->head; *bp != NULL; bp = &(*bp)->next)
		;
	if ((b = malloc(sizeof(*b) + (n > AQ_BLK_SIZE ? n :
	    AQ_BLK_SIZE))) == NULL)
		fatal("malloc");
	b->next = NULL;
	b->size = n > AQ_BLK_SIZE ? n : AQ_BLK_SIZE;
	b->used = n;
	*bp = b;
	a->cur = b;
	return (b->data);
}

static void
aq_arena_reset(struct aq_arena *a)
{
	if ((a->cur = a->head) != NULL)
		a->head->used = 0;
}

static void
aq_arena_free(struct aq_arena *a)
{
	struct aq_blk	*b, *next;

	for (b = a->head; b != NULL; b = next) {
		next = b->next;
		free(b);
	}
	a->head = a->cur = NULL;
}

static redisReply *
aq_obj(const redisReadTask *t, int type)
{
	redisReply	*r, *parent;

	r = aq_alloc(t->privdata, sizeof(*r));
	memset(r, 0, sizeof(*r));
	r->type = type;
	if (t->parent != NULL) {
		parent = t->parent->obj;
		parent->element[t->idx] = r;
	}
	return (r);
}

static void *
aq_obj_string(const redisReadTask *t, char *str, size_t len)
{
	redisReply	*r = aq_obj(t, t->type);

	r->str = aq_alloc(t->privdata, len + 1);
	memcpy(r->str, str, len);
	r->str[len] = '\0';
	r->len = len;
	return (r);
}

static void *
aq_obj_array(const redisReadTask *t, int n)
{
	redisReply	*r = aq_obj(t, REDIS_REPLY_ARRAY);

	r->elements = n;
	if (n > 0) {
		r->element = aq_alloc(t->privdata, n * sizeof(*r->element));
		memset(r->element, 0, n * sizeof(*r->element));
	}
	return (r);
}

static void *
aq_obj_integer(const redisReadTask *t, long long v)
{
	redisReply	*r = aq_obj(t, REDIS_REPLY_INTEGER);

	r->integer = v;
	return (r);
}

static void *
aq_obj_nil(const redisReadTask *t)
{
	return (aq_obj(t, REDIS_REPLY_NIL));
}

static void
aq_obj_free(void *r)
{
	(void)r;	/* the arena is reset after each reply */
}

static redisReplyObjectFunctions aq_arena_fns = {
	aq_obj_string, aq_obj_array, aq_obj_integer, aq_obj_nil, aq_obj_free
};

/* Drive a query to its end on a blocking connection.  0 or -1. */
static int
aq_run_sync(redisContext *rc, struct aq *q)
{
	struct aq_arena			 arena = { NULL, NULL };
	redisReplyObjectFunctions	*fn = rc->reader->fn;
	void				*priv = rc->reader->privdata;
	redisReply			*r;
	int				 i, n, rv = -1;

	rc->reader->fn = &aq_arena_fns;
	rc->reader->privdata = &arena;
	while ((n = aq_prepare(q)) > 0) {
		for (i = 0; i < n; i++)
			if (redisAppendCommandArgv(rc, q->argc[i], q->argv[i],
			    q->lens[i]) != REDIS_OK)
				goto lost;
		for (i = 0; i < n; i++) {
			if (redisGetReply(rc, (void **)&r) != REDIS_OK)
				goto lost;
			aq_reply(q, i, r);
			aq_arena_reset(&arena);
		}
		aq_step_done(q);
	}
	rv = q->failed ? -1 : 0;
	goto out;
lost:
	snprintf(q->err, sizeof(q->err), "Redis: %s", rc->errstr);
	q->failed = 1;
	/* A reply cut short is in the arena: redisFree must not free it. */
	rc->reader->reply = NULL;
out:
	rc->reader->fn = fn;
	rc->reader->privdata = priv;
	aq_arena_free(&arena);
	return (rv);
}

static const char aq_usage[] =
    "usage: portcullis audit query -c FILE [--since DUR|TIME] "
    "[--until DUR|TIME]\n"
    "           [--subject S] [--repo GLOB] [--action A] "
    "[--status N|Nxx]\n"
    "           [--decision allow|deny] [--limit N] [--cursor ID] "
    "[--format table|json]\n"
    "       portcullis audit tail -c FILE [same filters] "
    "[--format table|json]\n"
    "       portcullis audit export -c FILE [same filters] "
    "[--cursor ID] [--limit N]\n"
    "       portcullis audit generate -c FILE --count N "
    "[--step-ms MS]\n"
    "\n"
    "query: newest first, one page of --limit records (default 100);\n"
    "the last line (table) or \"next\" (json) is the --cursor of the\n"
    "next page.  Times: 30s, 15m, 2h, 7d back from now, RFC 3339\n"
    "(2024-05-01T12:00:00Z), a date, or epoch milliseconds.  --repo is\n"
    "a glob ('*' matches across '/').  --subject, a --repo without\n"
    "glob characters and one whose first segment has none ('team/*')\n"
    "read the indexes.  --stats: what the query read, on stderr.\n"
    "export: every matching record as a JSON line, newest first, no\n"
    "page limit (--limit caps it); the last line on stderr is\n"
    "\"next: ID\" to resume with --cursor ID, or \"next: none\".\n"
    "tail: follow new records as they arrive (XREAD BLOCK).\n"
    "generate: write N synthetic records (tests and benchmarks).\n";

/* An emit function for export: one JSON line, nothing kept. */
static void
aq_emit_line(void *arg, const char *id, const struct audit_fields *fl)
{
	struct aq_out	*o = arg;

	aq_print_json(aq_json(id, fl));
	snprintf(o->last, sizeof(o->last), "%s", id);
	o->n++;
}

/*
 * `audit export`: the query run to its end (or --limit), each record
 * printed as it comes, so memory stays at one step's replies.  The
 * resume point is the last record printed: a cursor excludes it and
 * everything newer, so a resumed export repeats and misses nothing.
 */
static int
aq_export(redisContext *rc, struct audit_filter *f, const char *stream,
    int limited, int stats)
{
	struct aq_out	 o;
	struct aq	*q;
	int		 rv = 0;

	memset(&o, 0, sizeof(o));
	if (!limited)
		f->limit = SIZE_MAX;
	q = aq_new(f, stream, 0, aq_emit_line, &o);
	if (aq_run_sync(rc, q) == -1) {
		fprintf(stderr, "portcullis: audit export: %s\n", q->err);
		rv = 1;
	}
	if (fflush(stdout) == EOF || ferror(stdout)) {
		fprintf(stderr, "portcullis: audit export: stdout: %s\n",
		    strerror(errno));
		rv = 1;
	}
	if (stats)
		aq_stats(q);
	fprintf(stderr, "exported %zu records\n", o.n);
	if (rv != 0 || q->next[0] != '\0')
		fprintf(stderr, "next: %s\n", o.n > 0 ? o.last :
		    f->cursor[0] != '\0' ? f->cursor : "none");
	else
		fprintf(stderr, "next: none\n");
	aq_free(q);
	return (rv);
}

static int
aq_generate(const struct config *conf, long long count, long long step)
{
	static const char *const acts[] = { "pull", "push", "pull",
	    "delete", "pull" };
	static const int sts[] = { 200, 201, 404, 401, 403, 429, 500, 200 };
	const struct config_audit	*ac = conf->audit;
	struct audit_buf		 b;
	redisContext			*rc;
	redisReply			*r;
	struct audit_fields		 fl;
	const char			*argv[18 + 2 * AF__MAX];
	size_t				 lens[18 + 2 * AF__MAX];
	char				 sha[48], inst[64], run[24], n[24];
	char				 kw[256], ks[AQ_KEY_MAX], kr[AQ_KEY_MAX];
	char				 maxlen[24], maxage[24], maxidx[24];
	char				 ki[256];
	long long			 i, done = 0, t0, start;
	int				 argc, f, batch, k, st;

	if ((rc = aq_connect(conf, 60)) == NULL)
		return (1);
	r = redisCommand(rc, "SCRIPT LOAD %s", audit_script());
	if (r == NULL || r->type != REDIS_REPLY_STRING || r->len >= 48) {
		fprintf(stderr, "portcullis: audit generate: SCRIPT LOAD: %s\n",
		    r == NULL ? rc->errstr : r->type == REDIS_REPLY_ERROR ?
		    r->str : "unexpected reply");
		freeReplyObject(r);
		redisFree(rc);
		return (1);
	}
	snprintf(sha, sizeof(sha), "%s", r->str);
	freeReplyObject(r);
	t0 = (long long)time(NULL) * 1000;
	start = t0 - count * step;
	snprintf(inst, sizeof(inst), "generate-%ld-%lld", (long)getpid(), t0);
	snprintf(run, sizeof(run), "%lld", t0);
	snprintf(kw, sizeof(kw), "%s:writers", ac->stream);
	snprintf(ki, sizeof(ki), "%s:indexes", ac->stream);
	snprintf(maxidx, sizeof(maxidx), "%zu", ac->max_index_keys);
	snprintf(maxlen, sizeof(maxlen), "%zu", ac->max_len);
	snprintf(maxage, sizeof(maxage), "%llu",
	    (unsigned long long)ac->max_age * 1000);
	for (i = 0; i < count; i += batch) {
		batch = count - i > 1000 ? 1000 : (int)(count - i);
		for (k = 0; k < batch; k++) {
			long long j = i + k;

			/* Each field cycles with its own period; see tests. */
			st = sts[j % 8];
			audit_buf_init(&b);
			audit_buf_addf(&b, AF_TIME, "%lld", start + j * step);
			audit_buf_addf(&b, AF_ID, "%s/%s-%lld", inst, run,
			    j + 1);
			audit_buf_addf(&b, AF_REQUEST_ID, "gen%010lld", j);
			audit_buf_add(&b, AF_INSTANCE, inst, strlen(inst));
			audit_buf_addf(&b, AF_CLIENT_IP, "10.0.%lld.%lld",
			    (j / 256) % 256, j % 256);
			audit_buf_add(&b, AF_USER_AGENT, "generate", 8);
			audit_buf_addf(&b, AF_SUBJECT, "user%03lld", j % 97);
			audit_buf_add(&b, AF_AUTH_METHOD, "oidc", 4);
			audit_buf_add(&b, AF_ACTION, acts[j % 5],
			    strlen(acts[j % 5]));
			audit_buf_addf(&b, AF_REPOSITORY, "team%lld/app%lld",
			    j % 7, j % 11);
			audit_buf_addf(&b, AF_REFERENCE, "v%lld", j % 13);
			audit_buf_add(&b, AF_UPSTREAM, "up1", 3);
			audit_buf_add(&b, AF_METHOD, "GET", 3);
			audit_buf_addf(&b, AF_PATH, "/v2/team%lld/app%lld/"
			    "manifests/v%lld", j % 7, j % 11, j % 13);
			audit_buf_addf(&b, AF_STATUS, "%d", st);
			audit_buf_add(&b, AF_ERROR, "", 0);
			audit_buf_add(&b, AF_DECISION, st == 401 || st == 403 ||
			    st == 429 ? "deny" : "allow", st == 401 ||
			    st == 403 || st == 429 ? 4 : 5);
			audit_buf_add(&b, AF_RULE, "generated", 9);
			audit_buf_add(&b, AF_BYTES_IN, "0", 1);
			audit_buf_addf(&b, AF_BYTES_OUT, "%lld", j % 10000);
			audit_buf_addf(&b, AF_DURATION_MS, "%lld", j % 50);
			audit_buf_add(&b, AF_CACHE, j % 3 == 0 ? "hit" : "miss",
			    j % 3 == 0 ? 3 : 4);
			audit_buf_add(&b, AF_AUTH_FAILURE, "", 0);
			audit_payload_parse(b.data, b.len, &fl);
			snprintf(n, sizeof(n), "%lld", j + 1);
			snprintf(ks, sizeof(ks), "%s:subject:%.*s", ac->stream,
			    (int)fl.len[AF_SUBJECT], fl.v[AF_SUBJECT]);
			snprintf(kr, sizeof(kr), "%s:repository:%.*s",
			    ac->stream, (int)fl.len[AF_REPOSITORY],
			    fl.v[AF_REPOSITORY]);
			argc = 0;
#define ARG(s, l) do { argv[argc] = (s); lens[argc] = (l); argc++; } while (0)
			ARG("EVALSHA", 7);
			ARG(sha, strlen(sha));
			ARG("5", 1);
			ARG(ac->stream, strlen(ac->stream));
			ARG(kw, strlen(kw));
			ARG(ki, strlen(ki));
			ARG(ks, strlen(ks));
			ARG(kr, strlen(kr));
			ARG(inst, strlen(inst));
			ARG(run, strlen(run));
			ARG(n, strlen(n));
			ARG(maxlen, strlen(maxlen));
			ARG(maxage, strlen(maxage));
			ARG(maxidx, strlen(maxidx));
			ARG(fl.v[AF_ACTION], fl.len[AF_ACTION]);
			ARG(fl.v[AF_STATUS], fl.len[AF_STATUS]);
			ARG(fl.v[AF_DECISION], fl.len[AF_DECISION]);
			for (f = 0; f < AF__MAX; f++) {
				ARG(audit_field_name(f),
				    strlen(audit_field_name(f)));
				ARG(fl.v[f], fl.len[f]);
			}
#undef ARG
			if (redisAppendCommandArgv(rc, argc, argv, lens) !=
			    REDIS_OK)
				goto lost;
		}
		for (k = 0; k < batch; k++) {
			if (redisGetReply(rc, (void **)&r) != REDIS_OK)
				goto lost;
			if (r->type == REDIS_REPLY_INTEGER && r->integer == 1)
				done++;
			else if (r->type == REDIS_REPLY_ERROR) {
				fprintf(stderr, "portcullis: audit generate: "
				    "%s\n", r->str);
				freeReplyObject(r);
				redisFree(rc);
				return (1);
			}
			freeReplyObject(r);
		}
	}
	redisFree(rc);
	printf("generated %lld records in %s\n", done, ac->stream);
	return (0);
lost:
	fprintf(stderr, "portcullis: audit generate: Redis: %s\n", rc->errstr);
	redisFree(rc);
	return (1);
}

/* One compact JSON document on a line of stdout; drops the reference. */
static void
aq_print_json(json_t *j)
{
	char	*s;

	if ((s = json_dumps(j, JSON_COMPACT)) == NULL)
		fatal("json_dumps");
	printf("%s\n", s);
	free(s);
	json_decref(j);
}

static void
aq_tail_emit(const struct audit_filter *f, struct aq_out *o, const char *id,
    const struct audit_fields *fl)
{
	if (!audit_filter_match(f, fl))
		return;
	if (o->json)
		aq_print_json(aq_json(id, fl));
	else
		aq_emit_table(o, id, fl);
}

/* Follow the stream from its newest entry; returns only on error. */
static int
aq_tail(const struct config *conf, const struct audit_filter *f,
    struct aq_out *o)
{
	const struct config_audit	*ac = conf->audit;
	redisContext		*rc;
	redisReply		*r, *s, *ent;
	struct audit_fields	 fl;
	const char		*id;
	char			 last[48] = "0-0";
	size_t			 i;

	if ((rc = aq_connect(conf, 30)) == NULL)
		return (1);
	r = redisCommand(rc, "XREVRANGE %s + - COUNT 1", ac->stream);
	if (r == NULL || r->type != REDIS_REPLY_ARRAY)
		goto fail;
	if (r->elements == 1 && aq_entry(r->element[0], &id, &fl) == 0)
		snprintf(last, sizeof(last), "%s", id);
	freeReplyObject(r);
	if (!o->json) {
		aq_header();
		o->header_done = 1;
	}
	fflush(stdout);
	for (;;) {
		r = redisCommand(rc, "XREAD BLOCK 5000 COUNT 500 STREAMS %s %s",
		    ac->stream, last);
		if (r == NULL)
			goto fail;
		if (r->type == REDIS_REPLY_NIL) {
			freeReplyObject(r);
			continue;
		}
		if (r->type != REDIS_REPLY_ARRAY || r->elements != 1 ||
		    (s = r->element[0])->type != REDIS_REPLY_ARRAY ||
		    s->elements != 2 ||
		    s->element[1]->type != REDIS_REPLY_ARRAY)
			goto fail;
		for (i = 0; i < s->element[1]->elements; i++) {
			ent = s->element[1]->element[i];
			if (aq_entry(ent, &id, &fl) == -1)
				continue;
			snprintf(last, sizeof(last), "%s", id);
			aq_tail_emit(f, o, id, &fl);
		}
		freeReplyObject(r);
		if (fflush(stdout) == EOF || ferror(stdout)) {
			redisFree(rc);
			return (1);
		}
	}
fail:
	fprintf(stderr, "portcullis: audit tail: %s\n", r == NULL ?
	    rc->errstr : r->type == REDIS_REPLY_ERROR ? r->str :
	    "unexpected reply");
	freeReplyObject(r);
	redisFree(rc);
	return (1);
}

/* `portcullis audit query|tail|generate ...` */
int
audit_cli(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "since", required_argument, NULL, 1 },
		{ "until", required_argument, NULL, 2 },
		{ "subject", required_argument, NULL, 3 },
		{ "repo", required_argument, NULL, 4 },
		{ "action", required_argument, NULL, 5 },
		{ "status", required_argument, NULL, 6 },
		{ "decision", required_argument, NULL, 7 },
		{ "limit", required_argument, NULL, 8 },
		{ "cursor", required_argument, NULL, 9 },
		{ "format", required_argument, NULL, 10 },
		{ "count", required_argument, NULL, 11 },
		{ "step-ms", required_argument, NULL, 12 },
		{ "stats", no_argument, NULL, 13 },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	static const char *const fnames[] = { NULL, "since", "until",
	    "subject", "repo", "action", "status", "decision", "limit",
	    "cursor" };
	struct audit_filter	 f;
	struct aq_out		 o;
	struct config		*conf = NULL;
	struct aq		*q;
	redisContext		*rc;
	json_t			*records = NULL, *page;
	const char		*file = NULL, *sub;
	char			*cause = NULL, *ep, *s;
	long long		 count = 0, step = 100;
	int			 ch, rv = 1, stats = 0, limited = 0;

	if (argc < 2 || strcmp(argv[1], "--help") == 0 ||
	    strcmp(argv[1], "-h") == 0) {
		fputs(aq_usage, argc < 2 ? stderr : stdout);
		return (argc < 2 ? 1 : 0);
	}
	sub = argv[1];
	if (strcmp(sub, "query") != 0 && strcmp(sub, "tail") != 0 &&
	    strcmp(sub, "generate") != 0 && strcmp(sub, "export") != 0) {
		fprintf(stderr, "portcullis: audit: unknown command '%s'\n%s",
		    sub, aq_usage);
		return (1);
	}
	audit_filter_init(&f);
	memset(&o, 0, sizeof(o));
	optind = 1;
	while ((ch = getopt_long(argc - 1, argv + 1, "c:h", longopts,
	    NULL)) != -1) {
		switch (ch) {
		case 'c':
			file = optarg;
			break;
		case 'h':
			fputs(aq_usage, stdout);
			rv = 0;
			goto out;
		case 10:
			if (strcmp(optarg, "json") == 0)
				o.json = 1;
			else if (strcmp(optarg, "table") != 0) {
				fprintf(stderr, "portcullis: audit: --format: "
				    "table or json\n");
				goto out;
			}
			break;
		case 11:
		case 12:
			errno = 0;
			if (ch == 11)
				count = strtoll(optarg, &ep, 10);
			else
				step = strtoll(optarg, &ep, 10);
			if (errno != 0 || *ep != '\0' || count < 0 ||
			    count > 100000000 || step < 0 || step > 86400000) {
				fprintf(stderr, "portcullis: audit: --%s: bad "
				    "number\n", ch == 11 ? "count" : "step-ms");
				goto out;
			}
			break;
		case 13:
			stats = 1;
			break;
		default:
			if (ch == 8)
				limited = 1;
			if (ch < 1 || ch > 9) {
				fputs(aq_usage, stderr);
				goto out;
			}
			if (audit_filter_set(&f, fnames[ch], optarg,
			    (int64_t)time(NULL) * 1000, &s) == -1) {
				fprintf(stderr, "portcullis: audit: --%s\n", s);
				goto out;
			}
			break;
		}
	}
	if (file == NULL || optind != argc - 1) {
		fputs(aq_usage, stderr);
		goto out;
	}
	if ((conf = config_load(file, &cause)) == NULL) {
		fprintf(stderr, "%s\n", cause != NULL ? cause : "invalid");
		goto out;
	}
	if (conf->audit == NULL) {
		fprintf(stderr, "portcullis: audit: %s has no \"audit\" "
		    "section\n", file);
		goto out;
	}
	if (strcmp(sub, "generate") == 0) {
		rv = aq_generate(conf, count, step);
		goto out;
	}
	if (strcmp(sub, "tail") == 0) {
		rv = aq_tail(conf, &f, &o);
		goto out;
	}
	if ((rc = aq_connect(conf, 60)) == NULL)
		goto out;
	if (strcmp(sub, "export") == 0) {
		rv = aq_export(rc, &f, conf->audit->stream, limited, stats);
		redisFree(rc);
		goto out;
	}
	if (o.json) {
		if ((records = json_array()) == NULL)
			fatal("json_array");
		q = aq_new(&f, conf->audit->stream, 0, aq_emit_json, records);
	} else
		q = aq_new(&f, conf->audit->stream, 0, aq_emit_table, &o);
	if (aq_run_sync(rc, q) == -1) {
		fprintf(stderr, "portcullis: audit query: %s\n", q->err);
		json_decref(records);
	} else if (o.json) {
		page = aq_page(records, q);
		aq_print_json(page);
		rv = 0;
	} else {
		if (!o.header_done)
			aq_header();
		if (q->next[0] != '\0')
			printf("# next page: --cursor %s\n", q->next);
		rv = 0;
	}
	if (stats && !q->failed)
		aq_stats(q);
	aq_free(q);
	redisFree(rc);
out:
	free(cause);
	config_unref(conf);
	audit_filter_clear(&f);
	return (rv);
}
