/*
 * audit_cli.c: `portcullis audit query|tail|export|generate`, the
 * command line over the audit stream.  query and export drive the query
 * engine (audit_query.c) to its end on hiredis' blocking API (the CLI is
 * not the event loop), their replies read into an arena that is reset
 * after each one; query prints one page as a table or JSON with the
 * cursor of the next, export every matching record as a JSON line with
 * the point to resume from on stderr.  tail follows the stream with
 * XREAD BLOCK from its newest entry, same filters; generate writes
 * synthetic records through the writer's own script, for tests and
 * benchmarks.  Each connects to the audit's Redis as the gateway does
 * (rds_connect_cli()).
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
 * step: up to AQ_WALK_MAX entries or one record).
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

/*
 * What one EVALSHA of `audit generate` carries: GEN_BATCH records of one
 * run, in the writer's layout (audit_redis.c), so that a generated stream
 * is written as the gateway writes one: records packed, index entries of
 * a batch's refs.
 */
#define GEN_BATCH	100

struct gen_batch {
	struct audit_buf	 b[GEN_BATCH];
	char			 packed[GEN_BATCH][AUDIT_REC_MAX];
	char			 tail[GEN_BATCH][AUDIT_REF_TAIL_MAX];
	char			 ks[GEN_BATCH][AQ_KEY_MAX];
	char			 kr[GEN_BATCH][AQ_KEY_MAX];
	const char		*argv[12 + 5 * GEN_BATCH];
	size_t			 lens[12 + 5 * GEN_BATCH];
};

/* Record j of a generated stream into b; each field has its own period. */
static void
gen_record(struct audit_buf *b, long long j, long long start,
    long long step, const char *inst, const char *run)
{
	static const char *const acts[] = { "pull", "push", "pull",
	    "delete", "pull" };
	static const int sts[] = { 200, 201, 404, 401, 403, 429, 500, 200 };
	int	 st = sts[j % 8];

	audit_buf_init(b);
	audit_buf_addf(b, AF_TIME, "%lld", start + j * step);
	audit_buf_addf(b, AF_ID, "%s/%s-%lld", inst, run, j + 1);
	audit_buf_addf(b, AF_REQUEST_ID, "gen%010lld", j);
	audit_buf_add(b, AF_INSTANCE, inst, strlen(inst));
	audit_buf_addf(b, AF_CLIENT_IP, "10.0.%lld.%lld", (j / 256) % 256,
	    j % 256);
	audit_buf_add(b, AF_USER_AGENT, "generate", 8);
	audit_buf_addf(b, AF_SUBJECT, "user%03lld", j % 97);
	audit_buf_add(b, AF_AUTH_METHOD, "oidc", 4);
	audit_buf_add(b, AF_ACTION, acts[j % 5], strlen(acts[j % 5]));
	audit_buf_addf(b, AF_REPOSITORY, "team%lld/app%lld", j % 7, j % 11);
	audit_buf_addf(b, AF_REFERENCE, "v%lld", j % 13);
	audit_buf_add(b, AF_UPSTREAM, "up1", 3);
	audit_buf_add(b, AF_METHOD, "GET", 3);
	audit_buf_addf(b, AF_PATH, "/v2/team%lld/app%lld/manifests/v%lld",
	    j % 7, j % 11, j % 13);
	audit_buf_addf(b, AF_STATUS, "%d", st);
	audit_buf_add(b, AF_ERROR, "", 0);
	audit_buf_add(b, AF_DECISION, st == 401 || st == 403 || st == 429 ?
	    "deny" : "allow", st == 401 || st == 403 || st == 429 ? 4 : 5);
	audit_buf_add(b, AF_RULE, "generated", 9);
	audit_buf_add(b, AF_BYTES_IN, "0", 1);
	audit_buf_addf(b, AF_BYTES_OUT, "%lld", j % 10000);
	audit_buf_addf(b, AF_DURATION_MS, "%lld", j % 50);
	audit_buf_add(b, AF_CACHE, j % 3 == 0 ? "hit" : "miss",
	    j % 3 == 0 ? 3 : 4);
	audit_buf_add(b, AF_AUTH_FAILURE, "", 0);
}

static int
aq_generate(const struct config *conf, long long count, long long step)
{
	const struct config_audit	*ac = conf->audit;
	struct gen_batch		*g;
	redisContext			*rc;
	redisReply			*r;
	struct audit_fields		 fl;
	char				 sha[48], inst[64], run[24], n[24];
	char				 kw[256], nk[24];
	char				 maxlen[24], maxage[24], maxidx[24];
	char				 ki[256];
	long long			 i, done = 0, t0, start;
	int				 argc, batch, k, inflight;

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
	if ((g = malloc(sizeof(*g))) == NULL)
		fatal("malloc");
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
	/* Up to 10 calls in flight: Redis is kept busy, memory bounded. */
	for (i = 0, inflight = 0; i < count || inflight > 0; ) {
		while (i < count && inflight < 10) {
			batch = count - i > GEN_BATCH ? GEN_BATCH :
			    (int)(count - i);
			argc = 0;
#define ARG(s, l) do {							\
	g->argv[argc] = (s);						\
	g->lens[argc] = (l);						\
	argc++;								\
} while (0)
			snprintf(nk, sizeof(nk), "%d", 3 + 2 * batch);
			snprintf(n, sizeof(n), "%lld", i + 1);
			ARG("EVALSHA", 7);
			ARG(sha, strlen(sha));
			ARG(nk, strlen(nk));
			ARG(ac->stream, strlen(ac->stream));
			ARG(kw, strlen(kw));
			ARG(ki, strlen(ki));
			for (k = 0; k < batch; k++) {
				gen_record(&g->b[k], i + k, start, step, inst,
				    run);
				audit_payload_parse(g->b[k].data, g->b[k].len,
				    &fl);
				snprintf(g->ks[k], AQ_KEY_MAX,
				    "%s:subject:%.*s", ac->stream,
				    (int)fl.len[AF_SUBJECT], fl.v[AF_SUBJECT]);
				snprintf(g->kr[k], AQ_KEY_MAX,
				    "%s:repository:%.*s", ac->stream,
				    (int)fl.len[AF_REPOSITORY],
				    fl.v[AF_REPOSITORY]);
				ARG(g->ks[k], strlen(g->ks[k]));
				ARG(g->kr[k], strlen(g->kr[k]));
			}
			ARG(inst, strlen(inst));
			ARG(run, strlen(run));
			ARG(n, strlen(n));
			ARG(maxlen, strlen(maxlen));
			ARG(maxage, strlen(maxage));
			ARG(maxidx, strlen(maxidx));
			for (k = 0; k < batch; k++) {
				audit_payload_parse(g->b[k].data, g->b[k].len,
				    &fl);
				ARG(fl.v[AF_TIME], fl.len[AF_TIME]);
				ARG(g->tail[k], audit_ref_tail(&fl, g->tail[k],
				    AUDIT_REF_TAIL_MAX));
				ARG(g->packed[k], audit_pack(&fl,
				    g->packed[k]));
			}
#undef ARG
			/* hiredis copies the arguments: g is free again. */
			if (redisAppendCommandArgv(rc, argc, g->argv,
			    g->lens) != REDIS_OK)
				goto lost;
			i += batch;
			inflight++;
		}
		/* One reply: room for one more call. */
		if (redisGetReply(rc, (void **)&r) != REDIS_OK)
			goto lost;
		inflight--;
		if (r->type == REDIS_REPLY_INTEGER && r->integer >= 0)
			done += r->integer;
		else {
			fprintf(stderr, "portcullis: audit generate: %s\n",
			    r->type == REDIS_REPLY_ERROR ? r->str :
			    "unexpected reply");
			freeReplyObject(r);
			free(g);
			redisFree(rc);
			return (1);
		}
		freeReplyObject(r);
	}
	free(g);
	redisFree(rc);
	printf("generated %lld records in %s\n", done, ac->stream);
	return (0);
lost:
	fprintf(stderr, "portcullis: audit generate: Redis: %s\n", rc->errstr);
	free(g);
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
