/*
 * proxy.c: the one upstream HTTP client.  A proxy sends one request to
 * its upstream and hands the answer to its owner's proxy_ops.
 *
 * The request head goes out with hop-by-hop fields and the client's
 * Authorization dropped and the gateway's own upstream credentials added,
 * and a request body is streamed through as it arrives.  Both directions
 * obey backpressure: the client is read only while the upstream's output
 * is below the high watermark, and the upstream is read only while the
 * owner keeps up (proxy_resume reads it again).  Content-Length bodies
 * move between evbuffers without a copy, and a large one relayed between
 * plain sockets goes socket to socket (proxy_splice.c).
 *
 * Upstream auth: a 401 with a challenge on a bodiless request is answered
 * by fetching a token (upstream_auth.c decides where and with what) and
 * retrying once; before a request with a body goes to an upstream whose
 * auth is not known yet, a GET /v2/ probe learns it, because a streamed
 * body cannot be replayed.  Token requests and probes are proxies too
 * (px_sub_new): the same connection pool, address checks, 1xx, EOF and
 * timeout handling, with the answer collected in a bounded evbuffer.
 *
 * Redirects: blob GET/HEAD and fetches (fills, tag HEADs) follow an
 * upstream's 3xx to its storage hosts, at most limits.redirects hops, never
 * from https to http.  A hop is a request the upstream chose, so it carries
 * only Range, Accept and User-Agent (and the gateway's credentials when it
 * goes back to the upstream's own origin), and unless the target is that
 * origin or named in the upstream's redirect_allow, it may only be dialled
 * at a public address (upstream.c checks the resolved address).
 *
 * A proxy either relays for a client request (proxy_start, in
 * proxy_relay.c: the answer goes to req.c's response writer) or runs
 * without a client (proxy_fetch_new: the cache's fills and tag
 * revalidations, the immutable tag check; proxy_fetch_path: the catalog's
 * pages), in which case the owner's proxy_ops receive the answer, or
 * fetches a bounded document from any URL (proxy_fetch_url: an identity
 * provider's discovery document and keys), collected like a token.
 * Auth, the pool, redirects and backpressure are the same code either
 * way.  Its owner, either way, retires it with proxy_free() and it is
 * freed on the next turn.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "netaddr.h"
#include "portcullis.h"
#include "proxy.h"

static void	px_connect(struct proxy *);
static void	px_pump(struct proxy *);
static void	px_error(struct proxy *, enum pc_err, const char *);

/* The reaper's half of proxy_free(). */
static void
px_destroy(void *arg)
{
	struct proxy	*px = arg;

	if (px->sink != NULL)
		evbuffer_free(px->sink);
	if (px->held != NULL)
		evbuffer_free(px->held);
	if (px->fetch_body != NULL)
		evbuffer_free(px->fetch_body);
	free(px->errcap);
	headers_clear(&px->held_hdrs);
	if (px->extra != NULL) {
		explicit_bzero(px->extra, strlen(px->extra));
		free(px->extra);
	}
	if (px->form != NULL) {
		explicit_bzero(px->form, px->formlen);
		free(px->form);
	}
	hframe_free(&px->rf);
	free(px->upath);
	if (px->token != NULL) {
		explicit_bzero(px->token, strlen(px->token));
		free(px->token);
	}
	free(px);
}

/*
 * Retire the proxy: its upstream connection (and a token request or
 * probe of its own) closed, the request's body no longer sent to it, so
 * nothing reaches it or its owner any more; its memory is freed on the
 * reaper's next turn.  The request keeps going or is ending.  NULL and a
 * retired proxy are fine.
 */
void
proxy_free(struct proxy *px)
{
	struct req	*req;

	if (px == NULL || px->retired)
		return;
	px->retired = 1;
	req = px->req;
	if (req != NULL) {
		req->body_ready = 0;
		req->body_sink = NULL;
		req->body_sink_data = NULL;
		req->body_end = NULL;
	}
	proxy_free(px->sub);
	px->sub = NULL;
	/* A body being spliced: its events go before the socket does. */
	if (px->spl != NULL) {
		px_splice_free(px);
		if (req != NULL && !req->c->dead)
			bufferevent_enable(req->c->bev, EV_WRITE);
	}
	/* A retired sub-request's deadline must not fire. */
	if (px->deadline != NULL) {
		event_free(px->deadline);
		px->deadline = NULL;
	}
	uconn_free(px->uc);
	px->uc = NULL;
	conn_reap_later(px->ctx, &px->reap, px_destroy, px);
}

/* Drop the current upstream connection before a retry or redirect. */
static void
px_reset(struct proxy *px)
{
	uconn_free(px->uc);
	px->uc = NULL;
	px->got_bytes = 0;
	px->up_paused = 0;
	px->up_eof = 0;
}

/*
 * The one place upstream targets and scopes are made: the target
 * "/v2/<upname><rest>[?query]" and the token scope
 * "repository:<upname>:<actions>[ <more>]".  -1 when it does not fit.
 */
int
px_target(struct proxy *px, const char *upname, const char *rest,
    const char *query, const char *actions, const char *more)
{
	int	n;

	free(px->upath);
	n = asprintf(&px->upath, "/v2/%s%s%s%s", upname, rest,
	    query != NULL && *query != '\0' ? "?" : "",
	    query != NULL ? query : "");
	if (n < 0) {
		px->upath = NULL;
		return (-1);
	}
	n = snprintf(px->scope, sizeof(px->scope), "repository:%s:%s%s%s",
	    upname, actions, more != NULL && *more != '\0' ? " " : "",
	    more != NULL ? more : "");
	return (n < 0 || (size_t)n >= sizeof(px->scope) ? -1 : 0);
}

/* A client-less proxy with nothing to send yet (its target comes next). */
static struct proxy *
px_fetch_alloc(struct pc_ctx *ctx, struct config *conf,
    const struct config_upstream *up, int method, const struct headers *fwd,
    const struct proxy_ops *ops, void *arg, const char *logid)
{
	struct proxy		*px;
	struct hframe_limits	 lim = { conf->upstream_header_bytes,
				    conf->upstream_header_count, 8192 };

	if ((px = calloc(1, sizeof(*px))) == NULL)
		fatal("calloc");
	px->ctx = ctx;
	px->conf = conf;
	px->ops = ops;
	px->arg = arg;
	px->method = method;
	px->method_str = http_method_str(method);
	px->fwd = fwd;
	px->follow = 1;
	snprintf(px->logid, sizeof(px->logid), "%s", logid);
	px->up = up;
	px->us = upstream_state_get(ctx, up);
	origin_from_url(&px->origin, &up->u, up->ca_file);
	hframe_init(&px->rf, HFRAME_RESPONSE, &lim, NULL, px);
	return (px);
}

/*
 * A request to an upstream without a client: `method` (GET or HEAD) on
 * /v2/<upname>/<kind>/<ref> ("blobs" or "manifests") with a pull token,
 * forwarding the fields in `fwd` (kept by the owner until the proxy is
 * retired).  Nothing happens until proxy_fetch_start(); the answer goes to
 * ops with arg.  The owner retires the proxy with proxy_free(), in any of
 * its callbacks or after the last one (done or fail).
 */
struct proxy *
proxy_fetch_new(struct pc_ctx *ctx, struct config *conf,
    const struct config_upstream *up, int method, const char *upname,
    const char *kind, const char *ref, const struct headers *fwd,
    const struct proxy_ops *ops, void *arg, const char *logid)
{
	struct proxy		*px;
	char			 rest[OCI_REF_MAX + 32];

	px = px_fetch_alloc(ctx, conf, up, method, fwd, ops, arg, logid);
	snprintf(rest, sizeof(rest), "/%s/%s", kind, ref);
	if (px_target(px, upname, rest, NULL, "pull", NULL) == -1)
		fatal("proxy_fetch_new: name or reference too long");
	return (px);
}

/*
 * As proxy_fetch_new(), for a target of the gateway's own making that is
 * no repository's blob or manifest (the catalog): `upath` ("/v2/...",
 * with its query) under the token scope `scope` (a constant of the
 * caller's); redirects are not followed.
 */
struct proxy *
proxy_fetch_path(struct pc_ctx *ctx, struct config *conf,
    const struct config_upstream *up, int method, const char *upath,
    const char *scope, const struct headers *fwd,
    const struct proxy_ops *ops, void *arg, const char *logid)
{
	struct proxy	*px;

	px = px_fetch_alloc(ctx, conf, up, method, fwd, ops, arg, logid);
	px->follow = 0;
	if ((px->upath = strdup(upath)) == NULL)
		fatal("strdup");
	if ((size_t)snprintf(px->scope, sizeof(px->scope), "%s", scope) >=
	    sizeof(px->scope))
		fatalx("proxy_fetch_path: scope too long");
	return (px);
}

/*
 * Give a fetch made by proxy_fetch_path() a request body, sent with a
 * Content-Length (referrers.c's manifest and index PUTs).  Takes
 * ownership of `body`.  A request with a body is never retried, so an
 * upstream whose auth is not known yet is probed first (px_begin).
 */
void
proxy_fetch_body(struct proxy *px, struct evbuffer *body)
{
	if (px->fetch_body != NULL)
		evbuffer_free(px->fetch_body);
	px->fetch_body = body;
	px->has_body = 1;
}

/* Send a fetch made by proxy_fetch_new(); callbacks may run before this
 * returns. */
void
proxy_fetch_start(struct proxy *px)
{
	px_begin(px);
}

/* Report a failure to the owner, which retires the proxy. */
static void
px_error(struct proxy *px, enum pc_err err, const char *detail)
{
	metrics_upstream_error(px->ctx, px->up != NULL ? px->up->name : NULL);
	px->ops->fail(px->arg, err, detail);
}

static const struct proxy_ops px_sink_ops;

/*
 * A sub-request's answer is small, so it gets the connect and response
 * timeouts once for the whole exchange: the per-read timeout alone let a
 * token service dripping a byte at a time hold the client's request for
 * as long as the sink is large (limits.token_bytes).
 */
static void
px_sub_deadline_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct proxy	*sub = arg;
	char		 what[128];

	snprintf(what, sizeof(what), "timed out: no complete answer within "
	    "%d ms", sub->conf->upstream_connect_timeout_ms +
	    sub->conf->upstream_response_timeout_ms);
	px_fail(sub, ERR_UPSTREAM_TIMEOUT, what);	/* retires sub */
}

/*
 * A sub-request of px's own (a token, a probe): GET u from origin o with
 * the header lines hdrs (copied; may hold credentials), the answer
 * collected up to max bytes, then cb(px, ...).  px owns it as px->sub.
 */
static struct proxy *
px_sink_new(struct pc_ctx *ctx, struct config *conf,
    const struct config_upstream *up, const char *logid, const struct url *u,
    const struct origin *o, const char *hdrs, size_t max)
{
	struct proxy		*sub;
	struct hframe_limits	 lim = { conf->upstream_header_bytes,
				    conf->upstream_header_count, 8192 };
	struct timeval		 tv;
	int			 ms;

	if ((sub = calloc(1, sizeof(*sub))) == NULL)
		fatal("calloc");
	sub->ctx = ctx;
	sub->conf = conf;
	sub->ops = &px_sink_ops;
	sub->arg = sub;
	sub->method = HTTP_GET;
	sub->method_str = "GET";
	sub->foreign = 1;	/* no upstream auth: hdrs say it all */
	snprintf(sub->logid, sizeof(sub->logid), "%s", logid);
	sub->up = up;
	sub->origin = *o;
	sub->sink_max = max;
	if ((sub->sink = evbuffer_new()) == NULL ||
	    (sub->upath = strdup(u->path[0] ? u->path : "/")) == NULL ||
	    (sub->extra = strdup(hdrs)) == NULL ||
	    (sub->deadline = evtimer_new(ctx->base, px_sub_deadline_cb,
	    sub)) == NULL)
		fatal("sub-request");
	ms = conf->upstream_connect_timeout_ms +
	    conf->upstream_response_timeout_ms;
	tv.tv_sec = ms / 1000;
	tv.tv_usec = (ms % 1000) * 1000;
	evtimer_add(sub->deadline, &tv);
	hframe_init(&sub->rf, HFRAME_RESPONSE, &lim, NULL, sub);
	return (sub);
}

static struct proxy *
px_sub_new(struct proxy *px, const struct url *u, const struct origin *o,
    const char *hdrs, size_t max, px_sub_cb cb)
{
	struct proxy		*sub;

	sub = px_sink_new(px->ctx, px->conf, px->up, px->logid, u, o, hdrs,
	    max);
	sub->us = px->us;
	sub->parent = px;
	sub->on_sub = cb;
	px->sub = sub;
	return (sub);
}

/*
 * A GET of u at origin o without a client or an upstream's auth (an
 * identity provider's discovery document and keys: oidc.c), with the
 * header lines hdrs, the answer collected up to max bytes and handed to
 * cb(arg, ...) whole; redirects are not followed.  `up` names the peer
 * in logs and errors and must outlive the fetch.  Nothing happens until
 * proxy_fetch_start(); the fetch retires itself after cb, and the owner
 * may retire it before (proxy_free), after which cb never runs.
 */
struct proxy *
proxy_fetch_url(struct pc_ctx *ctx, struct config *conf,
    const struct config_upstream *up, const struct url *u,
    const struct origin *o, const char *hdrs, size_t max, proxy_url_cb cb,
    void *arg, const char *logid)
{
	struct proxy	*px;

	px = px_sink_new(ctx, conf, up, logid, u, o, hdrs, max);
	px->on_url = cb;
	px->url_arg = arg;
	return (px);
}

/*
 * Make a proxy_fetch_url() fetch a POST of the form body (copied; may
 * hold credentials: wiped when freed), application/x-www-form-urlencoded
 * with its Content-Length, as a token endpoint takes it (RFC 6749 4.1.3).
 * Before proxy_fetch_start().  Never retried on a dead pooled connection:
 * the provider may have acted on it (a code is good once).
 */
void
proxy_fetch_set_form(struct proxy *px, const char *body, size_t len)
{
	if ((px->form = malloc(len + 1)) == NULL)
		fatal("malloc");
	memcpy(px->form, body, len);
	px->form[len] = '\0';
	px->formlen = len;
	px->method = HTTP_POST;
	px->method_str = "POST";
}

/*
 * Hand a sub-request's answer to its parent, then retire it.  The parent
 * lets go of it first: the callback may retire the parent, or start
 * another sub-request.
 */
static void
px_sink_finish(struct proxy *sub, int status, const char *err)
{
	struct proxy	*px = sub->parent;
	size_t		 len = evbuffer_get_length(sub->sink);
	const char	*body;

	evbuffer_add(sub->sink, "", 1);
	body = (const char *)evbuffer_pullup(sub->sink, -1);
	if (px == NULL) {
		/* proxy_fetch_url(): retired first, so cb may start another. */
		proxy_free(sub);
		sub->on_url(sub->url_arg, status, &sub->rf.msg.hdrs, body, len,
		    err);
		return;
	}
	px->sub = NULL;
	sub->on_sub(px, status, &sub->rf.msg.hdrs, body, len, err);
	proxy_free(sub);
}

static int
px_sink_head(void *arg, struct hframe_msg *rm)
{
	struct proxy	*sub = arg;

	if (rm->has_length && rm->length > sub->sink_max) {
		px_sink_finish(sub, -1, "response too large");
		return (-1);
	}
	return (0);
}

static int
px_sink_body(void *arg, struct evbuffer *in, size_t n)
{
	struct proxy	*sub = arg;

	if (evbuffer_get_length(sub->sink) + n > sub->sink_max) {
		px_sink_finish(sub, -1, "response too large");
		return (-1);
	}
	evbuffer_remove_buffer(in, sub->sink, n);
	return (0);
}

static int
px_sink_body_data(void *arg, const char *data, size_t n)
{
	struct proxy	*sub = arg;

	/* px_pump fails the sub on the framing error (too_large says why). */
	if (evbuffer_get_length(sub->sink) + n > sub->sink_max) {
		sub->too_large = 1;
		return (-1);
	}
	evbuffer_add(sub->sink, data, n);
	return (0);
}

static void
px_sink_done(void *arg)
{
	struct proxy	*sub = arg;

	px_sink_finish(sub, sub->rf.msg.status, NULL);
}

static void
px_sink_fail(void *arg, enum pc_err err, const char *detail)
{
	px_sink_finish(arg, -1, detail);
}

static const struct proxy_ops px_sink_ops = {
	px_sink_head,
	px_sink_body,
	px_sink_body_data,
	px_sink_done,
	px_sink_fail
};

static void
px_on_token(struct proxy *px, int status, struct headers *h,
    const char *body, size_t len, const char *err)
{
	const char	*tok;
	char		 msg[512], why[128];

	if (status == 200 && (tok = uauth_store(px->us, px->scope, body, len,
	    why, sizeof(why))) != NULL) {
		free(px->token);
		if ((px->token = strdup(tok)) == NULL)
			fatal("strdup");
		px_connect(px);
		return;
	}
	if (status == 200)
		snprintf(msg, sizeof(msg), "%s", why);
	else if (status < 0)
		snprintf(msg, sizeof(msg), "token service: %s", err);
	else
		snprintf(msg, sizeof(msg), "token service answered %d", status);
	log_info("%s upstream %s token_failed scope=\"%s\" %s", px->logid,
	    px->up->name, px->scope, msg);
	px_error(px, ERR_UPSTREAM_AUTH, msg);
}

static void
px_on_probe(struct proxy *px, int status, struct headers *h,
    const char *body, size_t len, const char *err)
{
	const char	*wa;
	char		 detail[600];

	if (status < 0) {
		snprintf(detail, sizeof(detail), "upstream %s: %s",
		    px->up->name, err);
		px_error(px, strstr(err, "timed out") ?
		    ERR_UPSTREAM_TIMEOUT : ERR_UPSTREAM, detail);
		return;
	}
	if (status == 401 && (wa = headers_get(h, "WWW-Authenticate")) != NULL)
		uauth_learn(px->us, wa);
	if (!px->us->auth_known) {
		/* No usable challenge: the upstream takes requests as is. */
		px->us->auth_known = 1;
		px->us->bearer = 0;
		px->us->realm[0] = '\0';
	}
	px_begin(px);
}

/* Make sure of upstream auth, then connect. */
void
px_begin(struct proxy *px)
{
	struct upstream_state	*us = px->us;
	const char		*tok;
	struct url		 u;
	struct origin		 o;
	char			 hdrs[1600], why[512];

	if (!px->foreign && us->auth_known && us->bearer &&
	    us->realm[0] != '\0') {
		if ((tok = uauth_cached(us, px->scope)) != NULL) {
			free(px->token);
			if ((px->token = strdup(tok)) == NULL)
				fatal("strdup");
			px_connect(px);
			return;
		}
		if (uauth_token_request(px->up, us, px->scope, &u, &o, hdrs,
		    sizeof(hdrs), why, sizeof(why)) == -1) {
			log_info("%s upstream %s token_refused reason=\"%s\"",
			    px->logid, px->up->name, why);
			px_error(px, ERR_UPSTREAM_AUTH, why);
			return;
		}
		px_sub_new(px, &u, &o, hdrs, px->conf->token_bytes,
		    px_on_token);
		explicit_bzero(hdrs, sizeof(hdrs));
		px_connect(px->sub);
		return;
	}
	if (!px->foreign && !us->auth_known && px->has_body) {
		u = px->up->u;
		snprintf(u.path, sizeof(u.path), "/v2/");
		origin_from_url(&o, &u, px->up->ca_file);
		snprintf(hdrs, sizeof(hdrs), "User-Agent: portcullis/%s\r\n"
		    "Accept: application/json\r\n", PC_VERSION);
		px_sub_new(px, &u, &o, hdrs, px->conf->token_bytes,
		    px_on_probe);
		px_connect(px->sub);
		return;
	}
	px_connect(px);
}

static void	px_send(struct proxy *);

static void
px_on_connect(struct uconn *uc, int error, void *arg)
{
	struct proxy	*px = arg;
	char		 detail[1024];

	if (error != 0) {
		snprintf(detail, sizeof(detail), "upstream %s (%s:%d): %s%s%s",
		    px->up->name, uc->origin.host, uc->origin.port,
		    error == ETIMEDOUT ? "connect timed out" :
		    error == EHOSTUNREACH ? "cannot resolve host" :
		    error == EPROTO ? "TLS handshake failed: " :
		    error == EACCES ? "refused: " : "cannot connect",
		    error == EPROTO || error == EACCES ? uc->why : "",
		    error != EACCES || px->on_url != NULL ? "" :
		    px->parent != NULL ? " (not the "
		    "upstream's origin, not in auth_hosts)" : " (not the "
		    "upstream's origin, not in redirect_allow)");
		uconn_free(uc);
		px->uc = NULL;
		px_error(px, error == ETIMEDOUT ? ERR_UPSTREAM_TIMEOUT :
		    ERR_UPSTREAM, detail);
		return;
	}
	px_send(px);
}

static void
px_connect(struct proxy *px)
{
	struct uconn	*uc;
	char		 detail[300];

	uc = uconn_get(px->ctx, &px->origin,
	    px->conf->upstream_connect_timeout_ms, px_on_connect, px);
	if (uc == NULL) {
		snprintf(detail, sizeof(detail), "upstream %s: cannot connect",
		    px->up->name);
		px_error(px, ERR_UPSTREAM, detail);
		return;
	}
	px->uc = uc;
	if (uc->connected)
		px_send(px);
}

/*
 * Client request fields that never go upstream as they are: hop-by-hop
 * ones, those px_send() writes itself (Host, Authorization, framing,
 * Expect, which this hop answers), and the client's other credentials
 * (its cookies; the docker engine API's X-Registry-Auth and
 * X-Registry-Config, which hold registry logins), which are the
 * client's and never the gateway's to pass on.
 */
static int
px_skip_request_header(const struct headers *fwd, const char *name)
{
	static const char *const own[] = { "Host", "Authorization",
	    "Content-Length", "Expect", "Cookie", "X-Registry-Auth",
	    "X-Registry-Config" };
	size_t	i;

	if (headers_hop_by_hop(name))
		return (1);
	for (i = 0; i < sizeof(own) / sizeof(own[0]); i++)
		if (strcasecmp(name, own[i]) == 0)
			return (1);
	/* Fields the client marked hop-by-hop in Connection. */
	return (headers_has_token(fwd, "Connection", name));
}

/* The fields a redirect target gets from the client's request. */
static int
px_redirect_header(const char *name)
{
	return (strcasecmp(name, "Range") == 0 ||
	    strcasecmp(name, "Accept") == 0 ||
	    strcasecmp(name, "User-Agent") == 0);
}

static int
px_resp_body(void *arg, const char *data, size_t len)
{
	struct proxy	*px = arg;

	if (px->retired)
		return (-1);	/* the parser stops; px_pump sees why */
	switch (px->ops->body_data(px->arg, data, len)) {
	case -1:
		return (-1);	/* a framing error ends it */
	case 0:
		break;
	default:
		px->want_pause = 1;
	}
	return (0);
}

static void	px_up_read_cb(struct bufferevent *, void *);
static void	px_up_write_cb(struct bufferevent *, void *);
static void	px_up_event_cb(struct bufferevent *, short, void *);

/* Write the request head, then let the body flow. */
static void
px_send(struct proxy *px)
{
	const struct headers	*fwd = px->fwd;
	struct evbuffer		*out = bufferevent_get_output(px->uc->bev);
	struct timeval		 tv;
	char			 hostport[300], basic[1400];
	size_t			 i;
	int			 m = px->method;
	int			 tmo = px->conf->upstream_response_timeout_ms;

	origin_hostport(&px->origin, hostport, sizeof(hostport));
	evbuffer_add_printf(out, "%s %s HTTP/1.1\r\nHost: %s\r\n",
	    px->method_str, px->upath, hostport);
	for (i = 0; fwd != NULL && i < fwd->n; i++) {
		if (px_skip_request_header(fwd, fwd->v[i].name))
			continue;
		/* A target the upstream chose gets no more than it needs. */
		if (px->redirects > 0 && !px_redirect_header(fwd->v[i].name))
			continue;
		evbuffer_add(out, fwd->v[i].name, fwd->v[i].nlen);
		evbuffer_add(out, ": ", 2);
		evbuffer_add(out, fwd->v[i].value, fwd->v[i].vlen);
		evbuffer_add(out, "\r\n", 2);
	}
	if (px->extra != NULL)
		evbuffer_add(out, px->extra, strlen(px->extra));
	if (px->peer != NULL && px->redirects == 0)
		evbuffer_add_printf(out, "X-Forwarded-For: %s\r\n", px->peer);
	if (!px->foreign) {
		if (px->token != NULL)
			evbuffer_add_printf(out, "Authorization: Bearer %s\r\n",
			    px->token);
		else if (px->us->auth_known && !px->us->bearer &&
		    uauth_basic(px->up, basic, sizeof(basic)) == 0) {
			evbuffer_add_printf(out, "Authorization: %s\r\n",
			    basic);
			explicit_bzero(basic, sizeof(basic));
		}
	}
	px->chunked_out = 0;
	if (px->form != NULL)
		evbuffer_add_printf(out, "Content-Type: "
		    "application/x-www-form-urlencoded\r\n"
		    "Content-Length: %zu\r\n", px->formlen);
	else if (px->has_body)
		px_body_head(px, out);
	else if (m == HTTP_POST || m == HTTP_PUT || m == HTTP_PATCH)
		evbuffer_add_printf(out, "Content-Length: 0\r\n");
	evbuffer_add(out, "\r\n", 2);
	if (px->form != NULL)
		evbuffer_add(out, px->form, px->formlen);
	px->sent_ms = now_ms();		/* upstream latency, metrics */
	/* Tests and operators read "sent head" as the request itself. */
	log_debug("%s proxy sent %s upstream=%s", px->logid, px->parent ?
	    "sub-request" : "head", px->up->name);

	hframe_next(&px->rf);
	px->rf.on_body = px_resp_body;
	px->rf.arg = px;
	px->rf.skip_body = m == HTTP_HEAD;
	bufferevent_setcb(px->uc->bev, px_up_read_cb, px_up_write_cb,
	    px_up_event_cb, px);
	/*
	 * Twice what px_up_read_cb reads to (uconn_read_more): at that
	 * limit itself, libevent would suspend the read event after every
	 * read and resume it once px_pump moved the bytes on, two
	 * epoll_ctl(2) calls per read for nothing; backpressure is
	 * up_paused's.  The input stays bounded all the same.
	 */
	bufferevent_setwatermark(px->uc->bev, EV_READ, 0, 2 *
	    (px->req != NULL ? px->req->conf->high_watermark :
	    UCONN_READ_CHUNK));
	bufferevent_setwatermark(px->uc->bev, EV_WRITE,
	    px->conf->high_watermark / 2, 0);
	/* libevent moves 16 KiB per turn by default: up to a watermark. */
	bufferevent_set_max_single_read(px->uc->bev, px->conf->high_watermark);
	bufferevent_set_max_single_write(px->uc->bev,
	    px->conf->high_watermark);
	tv.tv_sec = tmo / 1000;
	tv.tv_usec = (tmo % 1000) * 1000;
	bufferevent_set_timeouts(px->uc->bev, &tv, &tv);
	bufferevent_enable(px->uc->bev, EV_READ | EV_WRITE);

	if (px->has_body)
		px_body_start(px);
}

static void
px_up_write_cb(struct bufferevent *bev, void *arg)
{
	struct proxy	*px = arg;

	/* The upstream took what we had: let the client send more. */
	if (px->req != NULL && !px->req->body_done &&
	    px->req->c->read_paused)
		conn_resume_read(px->req->c);
}

/* PX_STOP: px is retired, or went on with another connection. */
enum px_next { PX_CONTINUE, PX_STOP };

/* Refuse to follow a redirect: 502 with the reason. */
static enum px_next
px_redirect_refuse(struct proxy *px, const char *why)
{
	char	 detail[512];

	snprintf(detail, sizeof(detail), "upstream %s: redirect refused: %s",
	    px->up->name, why);
	log_info("%s proxy redirect_refused upstream=%s reason=\"%s\"",
	    px->logid, px->up->name, why);
	px_error(px, ERR_UPSTREAM, detail);
	return (PX_STOP);
}

/* Follow a redirect for a blob GET or HEAD, or a fetch. */
static enum px_next
px_redirect(struct proxy *px, const char *loc)
{
	const struct config_upstream	*up = px->up;
	struct url			 u;
	const unsigned char		*p;
	char				 why[300];
	int				 same;

	/*
	 * As url_parse() holds absolute ones: no space, control or
	 * non-ASCII byte may reach a request line through a relative one.
	 */
	for (p = (const unsigned char *)loc; *p != '\0'; p++)
		if (*p <= 0x20 || *p >= 0x7f)
			return (px_redirect_refuse(px, "Location has a space, "
			    "control or non-ASCII byte"));
	if (loc[0] == '/' && loc[1] != '/') {
		/* Relative to the origin the answer came from. */
		memset(&u, 0, sizeof(u));
		snprintf(u.scheme, sizeof(u.scheme), "%s", px->origin.tls ?
		    "https" : "http");
		snprintf(u.host, sizeof(u.host), "%s", px->origin.host);
		u.port = px->origin.port;
		u.tls = px->origin.tls;
		if ((size_t)snprintf(u.path, sizeof(u.path), "%s", loc) >=
		    sizeof(u.path))
			return (px_redirect_refuse(px, "Location too long"));
	} else if (url_parse(loc, &u) == -1)
		return (px_redirect_refuse(px, "Location is not an absolute "
		    "http(s) URL or an absolute path"));
	if (px->redirects >= px->conf->redirects) {
		snprintf(why, sizeof(why), "more than %d redirects "
		    "(limits.redirects)", px->conf->redirects);
		return (px_redirect_refuse(px, why));
	}
	if (px->origin.tls && !u.tls)
		return (px_redirect_refuse(px, "https to http downgrade"));
	px->redirects++;
	same = strcmp(u.host, up->u.host) == 0 && u.port == up->u.port &&
	    u.tls == up->u.tls;
	px->foreign = !same;
	origin_from_url(&px->origin, &u, same ? up->ca_file : NULL);
	px->origin.restricted = !same && !netaddr_listed(up->redirect_allow,
	    up->nredirect_allow, u.host, u.port);
	free(px->upath);
	if ((px->upath = strdup(u.path[0] ? u.path : "/")) == NULL)
		fatal("strdup");
	log_debug("%s proxy redirect host=%s port=%d foreign=%d "
	    "restricted=%d", px->logid, u.host, u.port, px->foreign,
	    px->origin.restricted);
	px_reset(px);
	px_connect(px);
	return (PX_STOP);
}

/*
 * Docker Hub's pull-limit headers (`ratelimit-limit: 100;w=21600`,
 * `ratelimit-remaining: 76;w=21600`): kept per upstream with the time of
 * the last report (ratelimit.c's quota floor), logged when they change.
 */
static void
px_note_ratelimit(struct proxy *px, const struct headers *h)
{
	struct upstream_state	*us = px->us;
	const char		*lim, *rem;

	lim = headers_get(h, "RateLimit-Limit");
	rem = headers_get(h, "RateLimit-Remaining");
	if (lim == NULL && rem == NULL)
		return;
	if (lim == NULL)
		lim = "";
	if (rem == NULL)
		rem = "";
	us->rl_seen_ms = now_ms();	/* the quota floor holds from here */
	if (strcmp(lim, us->rl_limit) == 0 &&
	    strcmp(rem, us->rl_remaining) == 0)
		return;
	snprintf(us->rl_limit, sizeof(us->rl_limit), "%s", lim);
	snprintf(us->rl_remaining, sizeof(us->rl_remaining), "%s", rem);
	log_info("%s upstream ratelimit upstream=%s limit=\"%s\" "
	    "remaining=\"%s\"", px->logid, px->up->name, us->rl_limit,
	    us->rl_remaining);
}

/* The upstream's response head is complete. */
static enum px_next
px_on_head(struct proxy *px)
{
	struct hframe_msg	*rm = &px->rf.msg;
	const char		*wa, *loc;
	int			 st = rm->status, m = px->method;

	metrics_upstream_head(px->ctx, px->up->name, st, px->sent_ms);
	if (st == 401 && px->token != NULL && !px->foreign) {
		/*
		 * The upstream refused this token (revoked, keys rotated):
		 * no request may take it from the cache again, this one's
		 * retry included, nor a client's retry of a streamed body.
		 */
		uauth_drop(px->us, px->scope, px->token);
		explicit_bzero(px->token, strlen(px->token));
		free(px->token);
		px->token = NULL;
	}
	/* One retry with fresh auth; a second 401 goes to the client. */
	if (st == 401 && !px->auth_tried && !px->has_body && !px->foreign &&
	    (wa = headers_get(&rm->hdrs, "WWW-Authenticate")) != NULL) {
		px->auth_tried = 1;
		uauth_learn(px->us, wa);
		if (px->us->auth_known && (px->us->bearer ||
		    px->up->username != NULL)) {
			log_debug("%s proxy challenge bearer=%d", px->logid,
			    px->us->bearer);
			px_reset(px);
			px_begin(px);
			return (PX_STOP);
		}
	}
	if ((st == 301 || st == 302 || st == 303 || st == 307 || st == 308) &&
	    px->follow && (m == HTTP_GET || m == HTTP_HEAD) &&
	    (loc = headers_get(&rm->hdrs, "Location")) != NULL)
		return (px_redirect(px, loc));
	if (!px->foreign)
		px_note_ratelimit(px, &rm->hdrs);
	px->got_head = 1;
	if (px->ops->head(px->arg, rm) == -1 || px->retired)
		return (PX_STOP);
	return (PX_CONTINUE);
}

/* The upstream's answer is complete: pool the connection, tell the owner. */
void
px_done(struct proxy *px)
{
	struct uconn	*uc = px->uc;
	int		 body_done = px->req == NULL || px->req->body_done;

	px->uc = NULL;
	if (px->rf.msg.keep_alive && body_done && !px->up_eof)
		uconn_release(uc);
	else
		uconn_free(uc);
	px->ops->done(px->arg);	/* the last call to the owner */
}

/* An upstream failure before or during the response. */
void
px_fail(struct proxy *px, enum pc_err err, const char *what)
{
	char	 detail[256];

	snprintf(detail, sizeof(detail), "upstream %s: %s", px->up->name,
	    what);
	if (px->got_head)
		log_info("%s proxy abort upstream=%s reason=\"%s\"", px->logid,
		    px->up->name, what);
	px_error(px, err, detail);
}

static void
px_pump(struct proxy *px)
{
	struct evbuffer		*in;
	struct evbuffer_iovec	 v;
	size_t			 n;
	int			 r;

	in = bufferevent_get_input(px->uc->bev);
	for (;;) {
		if (px->rf.phase == HF_DONE) {
			px_done(px);
			return;
		}
		if (px->up_paused || evbuffer_get_length(in) == 0)
			break;
		px->got_bytes = 1;
		switch (px->rf.phase) {
		case HF_HEAD:
			if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
				return;
			n = hframe_feed(&px->rf, v.iov_base, v.iov_len);
			evbuffer_drain(in, n);
			if (px->rf.phase == HF_ERROR) {
				px_fail(px, ERR_UPSTREAM_PROTO, px->too_large ?
				    "response too large" :
				    hframe_err_str(px->rf.err));
				return;
			}
			if (px->rf.phase == HF_HEAD)
				continue;
			if (px->rf.msg.status >= 100 &&
			    px->rf.msg.status < 200) {
				hframe_next(&px->rf);
				px->rf.skip_body = px->method == HTTP_HEAD;
				continue;
			}
			if (px_on_head(px) == PX_STOP)
				return;
			break;
		case HF_BODY_LENGTH:
			n = evbuffer_get_length(in);
			if (n > px->rf.remaining)
				n = px->rf.remaining;
			hframe_body_consumed(&px->rf, n);
			r = px->ops->body(px->arg, in, n);
			if (r == -1 || px->retired)
				return;
			if (r == 1)
				px->want_pause = 1;
			/* The rest socket to socket (proxy_splice.c). */
			if (evbuffer_get_length(in) == 0 &&
			    px_splice_ok(px) && px_splice_start(px) == 0)
				return;
			break;
		case HF_BODY_PARSED:
			if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
				return;
			n = hframe_feed(&px->rf, v.iov_base, v.iov_len);
			if (px->retired)
				return;		/* by the owner's body_data */
			evbuffer_drain(in, n);
			if (px->rf.phase == HF_ERROR) {
				px_fail(px, ERR_UPSTREAM_PROTO, px->too_large ?
				    "response too large" :
				    hframe_err_str(px->rf.err));
				return;
			}
			break;
		default:
			return;
		}
		if (px->want_pause && px->rf.phase != HF_DONE) {
			/* The owner is slow: stop reading the upstream. */
			px->want_pause = 0;
			px->up_paused = 1;
			bufferevent_disable(px->uc->bev, EV_READ);
		}
	}
	if (px->up_eof && !px->up_paused && evbuffer_get_length(in) == 0) {
		if (hframe_eof(&px->rf) == 0) {
			px_done(px);
			return;
		}
		px_fail(px, ERR_UPSTREAM, "upstream closed the connection "
		    "mid-response");
	}
}

static void
px_up_read_cb(struct bufferevent *bev, void *arg)
{
	struct proxy	*px = arg;

	if (px->spl != NULL)
		return;
	if (!px->up_paused && px->uc != NULL)
		uconn_read_more(px->uc, px->req != NULL ?
		    px->req->conf->high_watermark : UCONN_READ_CHUNK);
	px_pump(px);
}

/*
 * The owner can take more: read the upstream again.  The owner may retire
 * px from the callbacks this runs.
 */
void
proxy_resume(struct proxy *px)
{
	if (px->retired || !px->up_paused || px->uc == NULL ||
	    px->spl != NULL)
		return;
	px->up_paused = 0;
	bufferevent_enable(px->uc->bev, EV_READ);
	px_pump(px);
}

static void
px_up_event_cb(struct bufferevent *bev, short events, void *arg)
{
	struct proxy	*px = arg;
	char		 what[128];

	if (px->spl != NULL)		/* the splice's own events rule */
		return;
	if (events & BEV_EVENT_TIMEOUT) {
		snprintf(what, sizeof(what), "no answer within %d ms",
		    px->conf->upstream_response_timeout_ms);
		px_fail(px, ERR_UPSTREAM_TIMEOUT, what);
		return;
	}
	if (!px->got_head && !px->got_bytes && px->uc->reused &&
	    !px->has_body && (px->method == HTTP_GET ||
	    px->method == HTTP_HEAD) && px->reconnects == 0) {
		/*
		 * A pooled connection the upstream had closed: retry once,
		 * but only a safe method (RFC 9110 9.2.2).  The upstream may
		 * have acted on a POST or DELETE before it closed.
		 */
		px->reconnects++;
		px_reset(px);
		px_connect(px);
		return;
	}
	if (events & BEV_EVENT_EOF) {
		px->up_eof = 1;
		bufferevent_disable(bev, EV_READ);
		px_pump(px);	/* may finish or fail */
		return;
	}
	px_fail(px, ERR_UPSTREAM, "connection to upstream failed");
}
