/*
 * admin.c: the admin endpoint, GET /admin/audit, a request stage next to
 * the proxy and the cache.  The policy gate (authz_admin) has let the
 * caller in before this runs.  It parses the filters from the query
 * string, and drives the audit query engine (audit_query.c) on the
 * writer's Redis link, step by step, without blocking the loop; the
 * answer is the page `audit query --format json` prints.
 *
 * Guarantees: a page scans at most AQ_ADMIN_SCAN entries and returns at
 * most AQ_ADMIN_LIMIT records; the query is the request's stage while it
 * waits for Redis, so a request that goes away is forgotten (the stage's
 * free hook) and the query's state is freed when its last reply comes; a
 * Redis failure is a 503, and so is a reply later than audit.timeout
 * (Redis counts as down then, as for a record).
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <hiredis/hiredis.h>

#include "portcullis.h"
#include "audit.h"
#include "rds.h"

#define AQ_ADMIN_LIMIT		1000
#define AQ_ADMIN_SCAN		200000	/* entries one admin page scans */

struct aq_admin {
	struct pc_ctx		*ctx;
	struct req		*req;		/* NULL once it is gone */
	int			 answering;	/* ending its stage itself */
	struct audit_filter	 f;
	struct aq		*q;
	json_t			*records;
	int			 pending;
	int			 idx;
	struct rds		*rds;		/* the link they went on */
	uint64_t		 gen;		/* and its connection */
	struct event		*ev_overdue;	/* audit.timeout per step */
	int			 timeout_ms;
};

static void
aq_admin_free(struct aq_admin *a)
{
	if (a->ev_overdue != NULL)
		event_free(a->ev_overdue);
	aq_free(a->q);
	json_decref(a->records);
	audit_filter_clear(&a->f);
	free(a);
}

/*
 * The stage's free hook: the request ended (or the query answered it).
 * Replies still on their way find a->req NULL; the last one frees a.
 */
static void
aq_admin_detach(void *arg)
{
	struct aq_admin	*a = arg;

	a->req = NULL;
	if (!a->answering && a->pending == 0)
		aq_admin_free(a);
}

static const struct req_stage_ops aq_admin_stage = {
	"admin", NULL, NULL, aq_admin_detach
};

static void	aq_admin_step(struct aq_admin *);

/*
 * A step's replies are late: the link is given up, which runs their
 * callbacks (no reply), and the last of them answers or frees a.  Nothing
 * here touches a afterwards.
 */
static void
aq_admin_overdue_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct aq_admin	*a = arg;

	audit_redis_overdue(a->ctx, a->rds, a->gen);
}

static void
aq_admin_on_reply(struct rds *l, redisReply *r, void *priv)
{
	struct aq_admin	*a = priv;

	if (a->req != NULL)
		aq_reply(a->q, a->idx++, r);
	if (--a->pending > 0)
		return;
	evtimer_del(a->ev_overdue);
	if (a->req == NULL) {
		aq_admin_free(a);
		return;
	}
	aq_step_done(a->q);
	aq_admin_step(a);
}

/* Send the next step, or answer. */
static void
aq_admin_step(struct aq_admin *a)
{
	struct rds			*rds;
	struct req			*req = a->req;
	struct timeval			 tv;
	json_t				*page;
	char				*body;
	int				 i, n;

	if ((n = aq_prepare(a->q)) > 0) {
		if ((rds = audit_redis(a->ctx)) == NULL) {
			aq_fail(a->q, "audit store", NULL);
			goto done;
		}
		a->pending = n;
		a->idx = 0;
		for (i = 0; i < n; i++) {
			if (rds_command_argv(rds, aq_admin_on_reply, a,
			    a->q->argc[i], a->q->argv[i], a->q->lens[i]) == 0)
				continue;
			/* Replies to the ones sent still come. */
			aq_fail(a->q, "audit store", NULL);
			if ((a->pending -= n - i) > 0)
				break;
			goto done;
		}
		a->rds = rds;
		a->gen = rds_generation(rds);
		tv.tv_sec = a->timeout_ms / 1000;
		tv.tv_usec = (a->timeout_ms % 1000) * 1000;
		evtimer_add(a->ev_overdue, &tv);
		return;
	}
done:
	a->answering = 1;
	req_stage_end(req);		/* a->req = NULL; a stays ours */
	if (a->q->failed) {
		log_warn("%llu.%u audit admin_query_failed error=\"%s\"",
		    (unsigned long long)req->c->id, req->seq, a->q->err);
		aq_admin_free(a);
		req_fail(req, ERR_UNAVAILABLE, "audit store unavailable");
		return;
	}
	page = aq_page(a->records, a->q);
	a->records = NULL;
	body = json_dumps(page, JSON_COMPACT);
	json_decref(page);
	aq_admin_free(a);
	if (body == NULL)
		fatal("json_dumps");
	req_respond_simple(req, 200, "application/json", body, NULL);
	free(body);
}

/*
 * GET /admin/audit?since=&until=&subject=&repo=&action=&status=
 * &decision=&limit=&cursor=: the same page `audit query --format json`
 * prints.  Who may ask was decided before (authz_admin(): the admin
 * action, or an address in the deprecated audit.admin_addresses).
 */
void
audit_admin(struct req *req)
{
	static const char *const names[] = { "since", "until", "subject",
	    "repo", "action", "status", "decision", "limit", "cursor" };
	const struct config_audit	*ac = req->conf->audit;
	struct aq_admin			*a;
	char				 val[AUDIT_VALUE_MAX + 1], detail[128];
	char				*cause;
	size_t				 i, qlen;
	int				 m = req->msg->method;

	if (ac == NULL || req->c->ctx->audit == NULL) {
		req_fail(req, ERR_NOT_FOUND, NULL);
		return;
	}
	if (m != HTTP_GET && m != HTTP_HEAD) {
		req_fail(req, ERR_METHOD, NULL);
		return;
	}
	if ((a = calloc(1, sizeof(*a))) == NULL)
		fatal("calloc");
	a->ctx = req->c->ctx;
	a->timeout_ms = ac->timeout_ms;
	if ((a->ev_overdue = evtimer_new(a->ctx->base, aq_admin_overdue_cb,
	    a)) == NULL)
		fatal("evtimer_new");
	audit_filter_init(&a->f);
	qlen = req->query != NULL ? strlen(req->query) : 0;
	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (qlen == 0 || url_query_get(req->query, qlen, names[i], val,
		    sizeof(val)) == -1)
			continue;
		if (audit_filter_set(&a->f, names[i], val,
		    (int64_t)time(NULL) * 1000, &cause) == -1) {
			snprintf(detail, sizeof(detail), "%s", cause);
			aq_admin_free(a);
			req_fail(req, ERR_BAD_REQUEST, detail);
			return;
		}
	}
	/* A larger page is cut to the bound: "next" leads on. */
	if (a->f.limit > AQ_ADMIN_LIMIT)
		a->f.limit = AQ_ADMIN_LIMIT;
	if (audit_redis(a->ctx) == NULL) {
		aq_admin_free(a);
		req_fail(req, ERR_UNAVAILABLE, "audit store unavailable");
		return;
	}
	if ((a->records = json_array()) == NULL)
		fatal("json_array");
	a->q = aq_new(&a->f, ac->stream, AQ_ADMIN_SCAN, aq_emit_json,
	    a->records);
	a->req = req;
	req_stage_set(req, &aq_admin_stage, a);
	aq_admin_step(a);
}
