/*
 * metrics_http.c: the gateway's side of the metrics registry (metrics.c)
 * and its two operational endpoints.  GET /metrics answers the text
 * exposition to the addresses of metrics.allow or a caller the policy
 * grants the admin action; GET /readyz answers 200 when the gateway can
 * serve what its configuration promises (not draining; the Redis links
 * it depends on up; every OIDC issuer's keys loaded) and 503 otherwise,
 * naming each check that failed to a caller /metrics would answer;
 * others get the status and a generic line (on either listener).
 * Both are routed in req_route() before the audit gate (they are not
 * audited: a scrape every few seconds would swamp the stream, and a
 * load balancer's probe must not wait on the audit), except a refused
 * /metrics, which audit_request() records as any denial.
 *
 * The hooks other files call are one line each: metrics_request_done()
 * when a request is retired, metrics_upstream_head() and
 * metrics_upstream_error() from proxy.c.  What other modules already
 * count (the cache, the audit writer, connections, the Redis links, an
 * upstream's RateLimit-Remaining) is read when /metrics is asked for
 * (metrics_collect), so their files need no hooks.
 *
 * Guarantees: nothing here allocates per request except the rendered
 * page of a scrape; readiness bodies name checks and addresses, never a
 * credential.
 */
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "portcullis.h"
#include "audit.h"
#include "cache.h"
#include "metrics.h"
#include "oidc.h"
#include "rds.h"
#include "revoke.h"
#include "router.h"
#include "secrets.h"

#define METRICS_CTYPE	"text/plain; version=0.0.4; charset=utf-8"

static struct metrics	**metrics_slots;	/* workers: one each */
static size_t		  metrics_nslots;
static struct event	 *metrics_ev_tick;	/* a worker's refresh */

/* The registry for the configuration in force at start. */
void
metrics_start(struct pc_ctx *ctx)
{
	if ((ctx->metrics = metrics_new(ctx->conf->metrics_label_values)) ==
	    NULL)
		fatal("metrics_new");
}

void
metrics_stop(struct pc_ctx *ctx)
{
	metrics_free(ctx->metrics);
	ctx->metrics = NULL;
}

/* The endpoint kind of a request, for the kind label. */
static enum metrics_kind
metrics_req_kind(const struct req *req)
{
	const char	*p = req->path;

	if (req->is_v2) {
		/* A path the router refused has no endpoint. */
		if (req->decision == NULL && (req->err == ERR_NOT_FOUND ||
		    req->err == ERR_NAME_INVALID ||
		    req->err == ERR_DIGEST_INVALID ||
		    req->err == ERR_TAG_INVALID ||
		    req->err == ERR_UPLOAD_INVALID))
			return (MK_OTHER);
		switch (req->route.ep) {
		case OCI_EP_BASE:
			return (MK_BASE);
		case OCI_EP_CATALOG:
			return (MK_CATALOG);
		case OCI_EP_MANIFEST:
			return (MK_MANIFEST);
		case OCI_EP_BLOB:
			return (MK_BLOB);
		case OCI_EP_UPLOAD_START:
			return (MK_UPLOAD_START);
		case OCI_EP_UPLOAD:
			return (MK_UPLOAD);
		case OCI_EP_TAGS:
			return (MK_TAGS);
		case OCI_EP_REFERRERS:
			return (MK_REFERRERS);
		default:
			return (MK_OTHER);
		}
	}
	if (strcmp(p, "/token") == 0 ||
	    strcmp(p, "/.well-known/jwks.json") == 0)
		return (MK_TOKEN);
	if (strcmp(p, "/admin") == 0 || strncmp(p, "/admin/", 7) == 0)
		return (MK_ADMIN);
	if (strcmp(p, "/healthz") == 0 || strcmp(p, "/readyz") == 0)
		return (MK_HEALTH);
	if (strcmp(p, "/metrics") == 0)
		return (MK_METRICS);
	if (strcmp(p, "/login") == 0 || strncmp(p, "/login/", 7) == 0)
		return (MK_LOGIN);
	return (MK_OTHER);
}

/*
 * A request is retired (req_free): count it, its time and bytes, its
 * cache result, its credential check and a policy refusal.
 */
void
metrics_request_done(struct req *req)
{
	struct metrics	*m = req->c->ctx->metrics;
	size_t		 ix[3], kind;
	uint64_t	 ms = now_ms() - req->start_ms;
	int		 cr;

	if (m == NULL)
		return;
	kind = metrics_req_kind(req);
	ix[0] = kind;
	ix[1] = metrics_method(req->method);
	ix[2] = metrics_class(req->status);
	metrics_add(m, M_REQUESTS, metrics_series(m, M_REQUESTS, ix), 1);
	metrics_observe(m, M_REQUEST_SECONDS, kind, ms * 1000);
	metrics_add(m, M_BYTES_IN, kind, req->bytes_in);
	metrics_add(m, M_BYTES_OUT, kind, req->bytes_out);
	if ((cr = metrics_cache_result(req->cache_status)) != -1) {
		metrics_add(m, M_CACHE_REQUESTS, (size_t)cr, 1);
		metrics_add(m, M_CACHE_SENT, (size_t)cr, req->bytes_out);
	}
	if (req->auth_failure != NULL) {
		metrics_add(m, M_AUTH, MA_FAILED, 1);
		metrics_add(m, M_AUTH_FAILURES, metrics_series1(m,
		    M_AUTH_FAILURES, metrics_dyn(m, D_REASON,
		    req->auth_failure)), 1);
	} else if (req->tok != NULL || req->login != NULL)
		metrics_add(m, M_AUTH, MA_OK, 1);
	/*
	 * A refused credential is counted above, not as a policy denial;
	 * a 429 is a rate limit's (its rule, or the upstream quota floor).
	 */
	if (req->err == ERR_RATE_LIMITED)
		metrics_add(m, M_RATELIMIT_REFUSALS, metrics_series1(m,
		    M_RATELIMIT_REFUSALS, metrics_dyn(m, D_LIMIT,
		    req->rule != NULL ? req->rule : "upstream_quota")), 1);
	else if (req->decision != NULL && strcmp(req->decision, "deny") == 0 &&
	    req->auth_failure == NULL)
		metrics_add(m, M_POLICY_DENIALS, metrics_series1(m,
		    M_POLICY_DENIALS, metrics_dyn(m, D_RULE,
		    req->rule != NULL ? req->rule : "default")), 1);
}

/* An upstream's response head arrived, sent_ms after its request. */
void
metrics_upstream_head(struct pc_ctx *ctx, const char *upstream, int status,
    uint64_t sent_ms)
{
	struct metrics	*m = ctx != NULL ? ctx->metrics : NULL;
	size_t		 ix[2];
	uint64_t	 now = now_ms();

	if (m == NULL || upstream == NULL)
		return;
	ix[0] = metrics_dyn(m, D_UPSTREAM, upstream);
	ix[1] = metrics_class(status);
	metrics_add(m, M_UPSTREAM_RESPONSES,
	    metrics_series(m, M_UPSTREAM_RESPONSES, ix), 1);
	if (sent_ms != 0 && now >= sent_ms)
		metrics_observe(m, M_UPSTREAM_SECONDS, metrics_series1(m,
		    M_UPSTREAM_SECONDS, ix[0]), (now - sent_ms) * 1000);
}

/* An upstream exchange failed without a usable answer. */
void
metrics_upstream_error(struct pc_ctx *ctx, const char *upstream)
{
	struct metrics	*m = ctx != NULL ? ctx->metrics : NULL;

	if (m == NULL || upstream == NULL)
		return;
	metrics_add(m, M_UPSTREAM_ERRORS, metrics_series1(m,
	    M_UPSTREAM_ERRORS, metrics_dyn(m, D_UPSTREAM, upstream)), 1);
}

/* For a rate-limit refusal or an SSO login, when those stages land. */
void
metrics_count_named(struct pc_ctx *ctx, enum metric_id id, const char *name)
{
	struct metrics	*m = ctx != NULL ? ctx->metrics : NULL;
	enum metrics_dim d;

	if (m == NULL)
		return;
	switch (id) {
	case M_RATELIMIT_REFUSALS:
		d = D_LIMIT;
		break;
	case M_SSO_LOGINS:
		d = D_SSO;
		break;
	default:
		return;
	}
	metrics_add(m, id, metrics_series1(m, id, metrics_dyn(m, d, name)),
	    1);
}

static void
metrics_link(struct metrics *m, const char *name, const struct rds *l)
{
	if (l == NULL)
		return;
	metrics_set(m, M_REDIS_UP, metrics_series1(m, M_REDIS_UP,
	    metrics_dyn(m, D_LINK, name)), rds_ready(l) ? 1 : 0);
}

/* Leading decimal digits ("76;w=21600" -> 76); -1 when none. */
static int64_t
metrics_leading_int(const char *s)
{
	int64_t	v = 0;
	int	n = 0;

	while (*s == ' ')
		s++;
	for (; *s >= '0' && *s <= '9' && n < 18; s++, n++)
		v = v * 10 + (*s - '0');
	return (n > 0 ? v : -1);
}

/*
 * The gateway's readiness: 1, or 0 with each failed check appended to
 * out as a line (when out is not NULL).
 */
static int
metrics_ready(struct pc_ctx *ctx, struct evbuffer *out)
{
	const struct config	*conf = ctx->conf;
	struct oidc_status	 st;
	size_t			 i;
	int			 ok = 1;

	if (ctx->draining) {
		ok = 0;
		if (out != NULL)
			evbuffer_add_printf(out, "draining: shutting down\n");
	}
	if (conf->cache != NULL && ctx->cache == NULL) {
		ok = 0;
		if (out != NULL)
			evbuffer_add_printf(out, "cache: index not built\n");
	}
	if (conf->audit != NULL &&
	    conf->audit->on_failure == CONFIG_AUDIT_REJECT &&
	    (ctx->audit == NULL || ctx->audit->link != LINK_READY)) {
		ok = 0;
		if (out != NULL)
			evbuffer_add_printf(out, "redis audit: not connected "
			    "to %s (audit.on_failure is reject)\n",
			    ctx->audit != NULL && ctx->audit->rds != NULL ?
			    rds_address(ctx->audit->rds) : "-");
	}
	if (ctx->secrets != NULL && !rds_ready(secrets_link(ctx->secrets))) {
		ok = 0;
		if (out != NULL)
			evbuffer_add_printf(out, "redis secrets: not "
			    "connected to %s\n",
			    rds_address(secrets_link(ctx->secrets)));
	}
	if (ctx->revoke != NULL && (!rds_ready(revoke_link(ctx->revoke, 1)) ||
	    !rds_ready(revoke_link(ctx->revoke, 0)))) {
		ok = 0;
		if (out != NULL)
			evbuffer_add_printf(out, "redis revocation: not "
			    "connected to %s\n",
			    rds_address(revoke_link(ctx->revoke, 1)));
	}
	for (i = 0; oidc_status_get(ctx, i, &st) == 0; i++) {
		if (st.loaded)
			continue;
		ok = 0;
		if (out != NULL)
			evbuffer_add_printf(out, "oidc %s: no keys yet%s%s\n",
			    st.name, st.last_error != NULL &&
			    st.last_error[0] != '\0' ? ": " : "",
			    st.last_error != NULL ? st.last_error : "");
	}
	return (ok);
}

/* What other modules count, read into the registry before a scrape. */
static void
metrics_collect(struct pc_ctx *ctx)
{
	struct metrics		*m = ctx->metrics;
	struct upstream_state	*us;
	struct audit		*a = ctx->audit;
	struct cache		*c = ctx->cache;
	int64_t			 v;

	metrics_set(m, M_CONNS_OPEN, 0, (int64_t)ctx->nconns);
	/* Worker w numbers from w * 10^12 (server_worker). */
	metrics_set(m, M_CONNS, 0,
	    (int64_t)(ctx->next_conn_id % 1000000000000ULL));
	if (c != NULL) {
		metrics_set(m, M_CACHE_BYTES, 0, (int64_t)c->bytes);
		metrics_set(m, M_CACHE_MAX_BYTES, 0, (int64_t)c->max_bytes);
		metrics_set(m, M_CACHE_ENTRIES, 0, (int64_t)c->nentries);
		metrics_set(m, M_CACHE_EVICTIONS, 0, (int64_t)c->evicted);
		metrics_set(m, M_CACHE_FILLS, 0, (int64_t)c->nfills);
	}
	if (a != NULL) {
		metrics_set(m, M_AUDIT_RECORDS, MAU_WRITTEN,
		    (int64_t)a->n_written);
		metrics_set(m, M_AUDIT_RECORDS, MAU_DUPLICATE,
		    (int64_t)a->n_dup);
		metrics_set(m, M_AUDIT_RECORDS, MAU_SPOOLED,
		    (int64_t)a->n_spooled);
		metrics_set(m, M_AUDIT_RECORDS, MAU_REPLAYED,
		    (int64_t)a->n_replayed);
		metrics_set(m, M_AUDIT_RECORDS, MAU_DROPPED,
		    (int64_t)a->n_dropped);
		metrics_set(m, M_AUDIT_RECORDS, MAU_REJECTED,
		    (int64_t)a->n_rejected);
		metrics_set(m, M_AUDIT_SPOOL_BYTES, 0,
		    (int64_t)audit_spool_used(a));
		metrics_set(m, M_AUDIT_QUEUE, 0, (int64_t)a->nqueue);
		metrics_set(m, M_AUDIT_UNREPLICATED, 0,
		    (int64_t)a->n_unreplicated);
		metrics_set(m, M_AUDIT_GAPS, 0, (int64_t)a->n_gaps);
		metrics_link(m, "audit", a->rds);
	}
	metrics_link(m, "secrets", secrets_link(ctx->secrets));
	metrics_link(m, "revocation_subscriber", revoke_link(ctx->revoke, 1));
	metrics_link(m, "revocation", revoke_link(ctx->revoke, 0));
	TAILQ_FOREACH(us, &ctx->ustates, entry) {
		if ((v = metrics_leading_int(us->rl_remaining)) == -1)
			continue;
		metrics_set(m, M_UPSTREAM_RL_REMAINING, metrics_series1(m,
		    M_UPSTREAM_RL_REMAINING, metrics_dyn(m, D_UPSTREAM,
		    us->name)), v);
	}
	metrics_set(m, M_READY, 0, metrics_ready(ctx, NULL));
}

static void
metrics_emit_evbuffer(void *arg, const char *data, size_t len)
{
	evbuffer_add(arg, data, len);
}

/* Whether the client's address is in metrics.allow. */
static int
metrics_allowed_address(const struct req *req)
{
	const struct principal	*p = &req->principal;
	struct metrics_net	 n;
	size_t			 i;

	if (p->af == 0)
		return (0);
	for (i = 0; i < req->conf->nmetrics_allow; i++)
		if (metrics_net_parse(req->conf->metrics_allow[i], &n) ==
		    NULL && metrics_net_match(&n, p->af, p->addr))
			return (1);
	return (0);
}

/* Answer a body held in buf (consumed) as a complete response. */
static void
metrics_respond(struct req *req, int status, const char *ctype,
    struct evbuffer *buf)
{
	char	*body;

	evbuffer_add(buf, "", 1);
	if ((body = (char *)evbuffer_pullup(buf, -1)) == NULL)
		fatal("evbuffer_pullup");
	req_respond_simple(req, status, ctype, body, NULL);
	evbuffer_free(buf);
}

/* GET /metrics and GET /readyz, from req_route(). */
void
metrics_http(struct req *req)
{
	struct pc_ctx	*ctx = req->c->ctx;
	struct evbuffer	*buf;
	int		 m = req->msg->method, ready;

	if (m != HTTP_GET && m != HTTP_HEAD) {
		req_fail(req, ERR_METHOD, NULL);
		return;
	}
	if ((buf = evbuffer_new()) == NULL)
		fatal("evbuffer_new");
	if (strcmp(req->path, "/readyz") == 0) {
		/*
		 * The status is for everyone (load balancers); which check
		 * failed names Redis addresses and IdP errors, so only for
		 * those who may see /metrics, on the admin listener too: it
		 * is only an address, which may be reached by more than the
		 * monitoring network, and /metrics there is gated.
		 */
		if (metrics_allowed_address(req) ||
		    authz_admin_allowed(req)) {
			ready = metrics_ready(ctx, buf);
			if (ready)
				evbuffer_add_printf(buf, "ready\n");
		} else {
			ready = metrics_ready(ctx, NULL);
			evbuffer_add_printf(buf, "%s\n", ready ? "ready" :
			    "not ready (the checks are shown to callers "
			    "allowed /metrics)");
		}
		metrics_respond(req, ready ? 200 : 503,
		    "text/plain; charset=utf-8", buf);
		return;
	}
	if (metrics_allowed_address(req)) {
		req->decision = "allow";
		req->rule = "metrics.allow";
	} else if (authz_admin(req) == -1) {
		evbuffer_free(buf);
		return;
	}
	metrics_collect(ctx);
	if (metrics_slots != NULL && config_worker >= 0) {
		struct metrics	*sum;
		size_t		 i;

		if ((sum = metrics_new(ctx->conf->metrics_label_values)) ==
		    NULL)
			fatal("metrics_new");
		for (i = 0; i < metrics_nslots; i++)
			metrics_merge(sum, metrics_slots[i]);
		metrics_render(sum, metrics_emit_evbuffer, buf);
		metrics_free(sum);
	} else
		metrics_render(ctx->metrics, metrics_emit_evbuffer, buf);
	metrics_respond(req, 200, METRICS_CTYPE, buf);
}

/*
 * Workers (master.c): one registry per worker in shared memory, mapped by
 * the master before forking; /metrics on any worker renders their sum.
 * What a worker reads from its own state at a scrape (connections, the
 * cache, the audit writer) it also refreshes every second, so the sum
 * holds the others' as of a second ago at most.  Counters read from a
 * process's state (audit records, evictions, connections accepted)
 * start again from zero with a worker that is restarted; those counted
 * as they happen go on from where the dead one stopped.
 */
int
metrics_workers_map(size_t n, size_t label_values)
{
	size_t	i;

	if ((metrics_slots = calloc(n, sizeof(*metrics_slots))) == NULL)
		return (-1);
	for (i = 0; i < n; i++)
		if ((metrics_slots[i] = metrics_new_shared(label_values)) ==
		    NULL)
			return (-1);
	metrics_nslots = n;
	return (0);
}

static void
metrics_tick_cb(evutil_socket_t fd, short ev, void *arg)
{
	metrics_collect(arg);
}

/* A worker, once its event base exists: count into its slot. */
void
metrics_worker_attach(struct pc_ctx *ctx, int w)
{
	struct timeval	tv = { 1, 0 };

	if (metrics_slots == NULL || (size_t)w >= metrics_nslots)
		return;
	metrics_free(ctx->metrics);
	ctx->metrics = metrics_slots[w];
	if ((metrics_ev_tick = event_new(ctx->base, -1, EV_PERSIST,
	    metrics_tick_cb, ctx)) == NULL)
		fatalx("out of memory");
	evtimer_add(metrics_ev_tick, &tv);
}

/* Before the event base goes. */
void
metrics_worker_detach(void)
{
	if (metrics_ev_tick != NULL) {
		event_free(metrics_ev_tick);
		metrics_ev_tick = NULL;
	}
}
