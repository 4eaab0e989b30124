/*
 * req.c: the request state machine, the one place that sequences a
 * request's stages:
 *
 *	ROUTE -> DISPATCH -> [CACHE] -> UPSTREAM -> RESPOND -> DONE
 *
 * ROUTE parses the target (router.c), checks the method and picks the
 * upstream (path prefix, then containerd's ns=, then the default).
 * DISPATCH runs the gates: the policy (authz.c) now, authentication and
 * rate limits as stages of their own once they exist.  CACHE
 * (cache_serve.c) takes pulls of blobs and manifests when the upstream
 * is cached: it answers them from disk or from a fill,
 * or hands them on to UPSTREAM.  UPSTREAM hands the request to proxy.c;
 * RESPOND streams the answer.  Every transition writes a debug trace line;
 * every request ends with one summary line.
 *
 * The stage working for the request (the cache reader, the proxy) is
 * known here only as req->stage (struct req_stage_ops): it hears that the
 * client can take more or went away, and is retired when the request
 * ends, fails or moves on (req_stage_next), whatever it is.  Retired
 * requests and stages are freed on the reaper's next turn (conn.c).
 *
 * This file also owns the response writer: status line, headers (hop-by-hop
 * fields dropped, the API version header added on /v2/) and the body
 * framing towards the client.  req_fail() is the one way to fail a request.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "oidc.h"
#include "portcullis.h"

#define REQ_STATE_NAME(e, s) s,
static const char *req_state_names[] = {
	REQ_STATES(REQ_STATE_NAME)
};
#undef REQ_STATE_NAME

static void	req_route(struct req *);
static void	req_dispatch(struct req *);

/* The trace name of a state. */
const char *
req_state_name(enum req_state s)
{
	if ((unsigned)s >= REQ__STATE_MAX)
		return ("?");
	return (req_state_names[s]);
}

/* Move to a new state, with a trace line. */
void
req_set_state(struct req *req, enum req_state s)
{
	log_debug("%llu.%u req state %s->%s",
	    (unsigned long long)req->c->id, req->seq,
	    req_state_name(req->state), req_state_name(s));
	req->state = s;
}

/*
 * A request id: unique within the process (a bijection of a counter),
 * unguessable across processes (keyed by a random seed from start-up),
 * and no system call per request.  16 hex digits; `out` holds 17 bytes.
 * Also for the answers conn.c makes without a request object.
 */
void
req_make_id(struct pc_ctx *ctx, char *out)
{
	static const char	 hex[] = "0123456789abcdef";
	uint64_t		 x;
	int			 i;

	if (ctx->rid_seed == 0)
		arc4random_buf(&ctx->rid_seed, sizeof(ctx->rid_seed));
	/* splitmix64: a bijection of (seed + n * golden ratio). */
	x = ctx->rid_seed + ++ctx->rid_next * 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	x ^= x >> 31;
	for (i = 15; i >= 0; i--, x >>= 4)
		out[i] = hex[x & 0xf];
	out[16] = '\0';
}

/* A request's head is parsed: start it.  May finish it at once. */
void
req_start(struct conn *c, struct hframe_msg *msg)
{
	struct req	*req;
	char		*q;

	if ((req = calloc(1, sizeof(*req))) == NULL)
		fatal("calloc");
	c->req = req;
	req->c = c;
	/*
	 * The snapshot current now, not the connection's: a reload (a
	 * changed policy above all) decides every request that starts
	 * after it, also on a keep-alive connection; one in flight keeps
	 * its own.  The connection's framing limits stay its own.
	 */
	req->conf = c->ctx->conf;
	config_ref(req->conf);
	req->seq = c->nreqs;
	req->start_ms = now_ms();
	req->msg = msg;
	req->method = http_method_str(msg->method);
	req->keep_alive = msg->keep_alive;
	req->has_body = msg->chunked || (msg->has_length && msg->length > 0);
	req->body_done = !req->has_body;
	req->status = 0;
	req_make_id(c->ctx, req->request_id);
	if ((req->path = strdup(msg->url)) == NULL)
		fatal("strdup");
	if ((q = strchr(req->path, '?')) != NULL) {
		*q++ = '\0';
		req->query = q;
	}
	if ((q = strchr(req->path, '#')) != NULL)
		*q = '\0';
	req->state = REQ_ROUTE;
	log_debug("%llu.%u req start method=%s", (unsigned long long)c->id,
	    req->seq, req->method);
	/*
	 * Who asks (identity.c): from the connection and a gateway token at
	 * once; a Basic password that is an IdP JWT may wait for the
	 * issuer's keys, and req_identity_done() routes the request then.
	 */
	if (identity_from_conn(req) == 1)
		return;
	req_route(req);
}

/* The identity stage waited and is done: route the request. */
void
req_identity_done(struct req *req)
{
	req_route(req);
}

/* The reaper's half of req_free(). */
static void
req_destroy(void *arg)
{
	struct req	*req = arg;

	free(req->path);
	if (req->body_read != NULL)
		evbuffer_free(req->body_read);
	tok_ident_unref(req->tok);
	tok_ident_unref(req->login);
	if (req->tok_form != NULL) {
		explicit_bzero(req->tok_form, req->tok_formlen);
		free(req->tok_form);
	}
	config_unref(req->conf);
	free(req);
}

/*
 * The request is over (its response ended, or its client went; the
 * caller has unlinked it from the conn): retire its stages, write its
 * summary line and its one audit record, now.  Its memory is freed on the
 * reaper's next turn, so code up the stack may still look at
 * req->retired.  NULL and a retired request are fine.
 */
void
req_free(struct req *req)
{
	struct conn	*c;
	char		 up[128];

	if (req == NULL || req->retired)
		return;
	req->retired = 1;
	c = req->c;
	req_stage_end(req);
	/* One clock reading: the log line and the record agree. */
	req->done_ms = now_ms();
	tagpol_req_done(req);		/* an immutable tag it held */
	upcap_req_done(req);		/* an upstream slot it held */
	if (req->up != NULL)
		snprintf(up, sizeof(up), "%s", req->up->name);
	else
		snprintf(up, sizeof(up), "-");
	/* The summary line: never a credential, never the query string. */
	log_info("%llu.%u req done method=%s path=%s status=%d in=%llu "
	    "out=%llu ms=%llu upstream=%s%s%s peer=%s id=%s%s%s%s%s%s%s%s%s"
	    "%s%s",
	    (unsigned long long)c->id, req->seq, req->method, req->path,
	    req->status, (unsigned long long)req->bytes_in,
	    (unsigned long long)req->bytes_out,
	    (unsigned long long)(req->done_ms - req->start_ms), up,
	    req->ns[0] != '\0' ? " ns=" : "", req->ns, c->peer,
	    req->request_id, req->err != ERR_NONE ? " error=" : "",
	    req->err != ERR_NONE ? errs_name(req->err) : "",
	    req->cache_status != NULL ? " cache=" : "",
	    req->cache_status != NULL ? req->cache_status : "",
	    req->decision != NULL ? " decision=" : "",
	    req->decision != NULL ? req->decision : "",
	    req->decision != NULL ? " rule=" : "",
	    req->decision != NULL ? (req->rule != NULL ? req->rule : "-") :
	    "", req->err == ERR_NONE && req->up_error[0] != '\0' ?
	    " up_error=" : "", req->err == ERR_NONE ? req->up_error : "");
	metrics_request_done(req);	/* metrics_http.c */
	audit_request(req);		/* its one audit record */
	conn_reap_later(c->ctx, &req->reap, req_destroy, req);
}

/*
 * The stage now working for the request (struct req_stage_ops); the one
 * before it has ended (req_stage_end).
 */
void
req_stage_set(struct req *req, const struct req_stage_ops *ops, void *arg)
{
	if (req->stage != NULL)
		fatalx("%s: stage %s still set", __func__, req->stage->name);
	log_debug("%llu.%u req stage %s", (unsigned long long)req->c->id,
	    req->seq, ops->name);
	req->stage = ops;
	req->stage_arg = arg;
}

/* Retire the current stage, if any: the request moves on or ends. */
void
req_stage_end(struct req *req)
{
	const struct req_stage_ops	*ops = req->stage;
	void				*arg = req->stage_arg;

	if (ops == NULL)
		return;
	req->stage = NULL;
	req->stage_arg = NULL;
	ops->free(arg);
}

/*
 * The current stage is done without answering: retire it and run the
 * next.  From CACHE (a miss it will not fill, a tag it has no rule for)
 * that is UPSTREAM, the request as is.  A gate of DISPATCH
 * (authentication, policy, rate limits) that waited for a reply as the
 * request's stage comes back through here too, to req_dispatch(), which
 * carries on after it: a gate keeps its result in the request (the
 * subject, the decision, the tokens taken), so one that has passed is
 * not run again.
 */
void
req_stage_next(struct req *req)
{
	req_stage_end(req);
	switch (req->state) {
	case REQ_DISPATCH:
		req_dispatch(req);
		break;
	case REQ_CACHE:
		req_set_state(req, REQ_UPSTREAM);
		proxy_start(req);
		break;
	default:
		fatalx("%s: in state %s", __func__, req_state_name(req->state));
	}
}

/*
 * The connection ends with the request unfinished; stop whatever it is
 * waiting for.  A client that left (closed or failed) before its whole
 * response was queued is recorded as 499 with the bytes it was sent, as
 * nginx records a client abort: what it got, not the status line that
 * began it.  Its stages are told (a fill it followed goes on by the
 * usual rule).  When the gateway ends it (an upstream cut mid-body, a
 * shutdown), the status it sent stands.
 */
void
req_client_gone(struct req *req)
{
	const struct req_stage_ops	*ops = req->stage;

	if (ops != NULL && ops->client_gone != NULL)
		ops->client_gone(req->stage_arg);
	req_stage_end(req);
	if (req->status == 0 || req->c->client_left)
		req->status = 499;
}

/* The client's output drained below the low watermark. */
void
req_client_writable(struct req *req)
{
	const struct req_stage_ops	*ops = req->stage;

	if (ops != NULL && ops->writable != NULL)
		ops->writable(req->stage_arg);
}

/* A response cannot be completed: the connection must end. */
void
req_abort(struct req *req, const char *why)
{
	log_info("%llu.%u req abort reason=\"%s\"",
	    (unsigned long long)req->c->id, req->seq, why);
	conn_close(req->c, why);
}

/*
 * The gateway's own base URL as clients reach it: external_url when set,
 * else the scheme of the listener and the request's Host header.
 */
int
req_external_base(struct req *req, char *buf, size_t len)
{
	const char	*host;
	int		 n;
	size_t		 i;

	if (req->conf->external_url != NULL) {
		n = snprintf(buf, len, "%s", req->conf->external_url);
		while (n > 0 && buf[n - 1] == '/')
			buf[--n] = '\0';
		return (n);
	}
	host = headers_get(&req->msg->hdrs, "Host");
	if (host == NULL || *host == '\0')
		host = req->conf->listen_address;
	/* Host is peer input: allow only what a host[:port] may hold. */
	for (i = 0; host[i] != '\0'; i++)
		if (strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
		    "0123456789.-:[]_", host[i]) == NULL)
			return (-1);
	return (snprintf(buf, len, "%s://%s", req->c->tls ? "https" : "http",
	    host));
}

/* Fields the response writer sets itself: hop-by-hop and framing. */
static int
req_hop_by_hop(const char *name)
{
	return (headers_hop_by_hop(name) ||
	    strcasecmp(name, "Content-Length") == 0);
}

/*
 * The head is assembled in a buffer on the stack and added to the output
 * in one piece: an evbuffer_add (with its callbacks) per piece and a
 * printf per line were a few percent of a cached manifest GET.
 */
struct req_hbuf {
	struct evbuffer	*out;
	size_t		 n;
	char		 b[2048];
};

static void
req_hb_add(struct req_hbuf *hb, const char *s, size_t len)
{
	if (hb->n + len > sizeof(hb->b)) {
		evbuffer_add(hb->out, hb->b, hb->n);
		hb->n = 0;
		if (len > sizeof(hb->b)) {
			evbuffer_add(hb->out, s, len);
			return;
		}
	}
	memcpy(hb->b + hb->n, s, len);
	hb->n += len;
}

static void
req_hb_str(struct req_hbuf *hb, const char *s)
{
	req_hb_add(hb, s, strlen(s));
}

static void
req_hb_num(struct req_hbuf *hb, unsigned long long v)
{
	char	d[24];
	size_t	i = sizeof(d);

	do {
		d[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v != 0 && i > 0);
	req_hb_add(hb, d + i, sizeof(d) - i);
}

/*
 * Write the status line and header section.  `length` is the
 * Content-Length to announce (-1: none); with RESP_NONE it is still
 * announced (HEAD keeps the upstream's length).  Returns 0 or -1.
 */
int
req_send_head(struct req *req, int status, struct headers *h,
    enum resp_framing framing, int64_t length)
{
	struct req_hbuf	 hb;
	size_t		 i;
	int		 api = 0, ons = 0;

	if (req->head_sent)
		return (-1);
	req->head_sent = 1;
	req->status = status;
	if (framing == RESP_CHUNKED && req->msg->minor == 0)
		framing = RESP_CLOSE;
	if (framing == RESP_CLOSE || req->c->ctx->draining)
		req->keep_alive = 0;
	req->framing = framing;
	hb.out = conn_output(req->c);
	hb.n = 0;
	req_hb_add(&hb, "HTTP/1.1 ", 9);
	req_hb_num(&hb, status >= 0 ? (unsigned)status : 0);
	req_hb_add(&hb, " ", 1);
	req_hb_str(&hb, errs_reason(status));
	req_hb_add(&hb, "\r\n", 2);
	if (h != NULL) {
		for (i = 0; i < h->n; i++) {
			if (req_hop_by_hop(h->v[i].name))
				continue;
			/* A rate limit of ours replaces the upstream's. */
			if (req->rl_limit[0] != '\0' &&
			    (strcasecmp(h->v[i].name, "RateLimit-Limit") == 0 ||
			    strcasecmp(h->v[i].name,
			    "RateLimit-Remaining") == 0))
				continue;
			if (strcasecmp(h->v[i].name, PC_API_VERSION_HDR) == 0)
				api = 1;
			if (strcasecmp(h->v[i].name, "OCI-Namespace") == 0)
				ons = 1;
			req_hb_add(&hb, h->v[i].name, h->v[i].nlen);
			req_hb_add(&hb, ": ", 2);
			req_hb_add(&hb, h->v[i].value, h->v[i].vlen);
			req_hb_add(&hb, "\r\n", 2);
		}
	}
	if (req->is_v2 && !api)
		req_hb_str(&hb, PC_API_VERSION_HDR ": " PC_API_VERSION "\r\n");
	/* Every answer to an ns= request says which, the gateway's too. */
	if (req->ns[0] != '\0' && !ons) {
		req_hb_str(&hb, "OCI-Namespace: ");
		req_hb_str(&hb, req->ns);
		req_hb_add(&hb, "\r\n", 2);
	}
	req_hb_str(&hb, "X-Request-Id: ");
	req_hb_str(&hb, req->request_id);
	req_hb_add(&hb, "\r\n", 2);
	if (req->rl_limit[0] != '\0') {
		req_hb_str(&hb, "RateLimit-Limit: ");
		req_hb_str(&hb, req->rl_limit);
		req_hb_str(&hb, "\r\nRateLimit-Remaining: ");
		req_hb_str(&hb, req->rl_remaining);
		req_hb_add(&hb, "\r\n", 2);
	}
	switch (framing) {
	case RESP_LENGTH:
	case RESP_NONE:
		/* RFC 9110 8.6: never on a 1xx or 204 (nor the upstream's). */
		if (length >= 0 && status != 204 && status >= 200) {
			req_hb_str(&hb, "Content-Length: ");
			req_hb_num(&hb, (unsigned long long)length);
			req_hb_add(&hb, "\r\n", 2);
		}
		break;
	case RESP_CHUNKED:
		req_hb_str(&hb, "Transfer-Encoding: chunked\r\n");
		break;
	case RESP_CLOSE:
		break;
	}
	if (!req->keep_alive || !req->body_done)
		req_hb_str(&hb, "Connection: close\r\n");
	else if (req->msg->minor == 0)
		/* An HTTP/1.0 client keeps the connection only when told. */
		req_hb_str(&hb, "Connection: keep-alive\r\n");
	req_hb_add(&hb, "\r\n", 2);
	evbuffer_add(hb.out, hb.b, hb.n);
	req_set_state(req, REQ_RESPOND);
	return (0);
}

/*
 * Move n bytes of response body from src to the client (no copy for
 * Content-Length bodies).  Returns 1 when the client's output is full and
 * the caller should stop reading its source, else 0.
 */
int
req_send_body(struct req *req, struct evbuffer *src, size_t n)
{
	struct evbuffer	*out = conn_output(req->c);

	if (n == 0)
		return (conn_output_full(req->c));
	if (req->framing == RESP_CHUNKED)
		evbuffer_add_printf(out, "%zx\r\n", n);
	evbuffer_remove_buffer(src, out, n);
	if (req->framing == RESP_CHUNKED)
		evbuffer_add(out, "\r\n", 2);
	req->bytes_out += n;
	return (conn_output_full(req->c));
}

/* As req_send_body(), from memory (decoded chunked data). */
int
req_send_body_data(struct req *req, const char *data, size_t n)
{
	struct evbuffer	*out = conn_output(req->c);

	if (n == 0)
		return (conn_output_full(req->c));
	if (req->framing == RESP_CHUNKED)
		evbuffer_add_printf(out, "%zx\r\n", n);
	evbuffer_add(out, data, n);
	if (req->framing == RESP_CHUNKED)
		evbuffer_add(out, "\r\n", 2);
	req->bytes_out += n;
	return (conn_output_full(req->c));
}

/* Copy len bytes of fd at off into the buffer (the caller bounds len). */
static int
req_read_file(struct evbuffer *out, int fd, uint64_t off, uint64_t len)
{
	struct evbuffer_iovec	 v[2];
	ssize_t			 n;
	int			 nv;

	while (len > 0) {
		if ((nv = evbuffer_reserve_space(out, (ev_ssize_t)len, v, 1)) <
		    1)
			return (-1);
		if (v[0].iov_len > len)
			v[0].iov_len = len;
		if ((n = pread(fd, v[0].iov_base, v[0].iov_len, (off_t)off)) <=
		    0)
			return (-1);
		v[0].iov_len = (size_t)n;
		if (evbuffer_commit_space(out, v, 1) == -1)
			return (-1);
		off += (uint64_t)n;
		len -= (uint64_t)n;
	}
	return (0);
}

/*
 * Queue len bytes of the file fd from offset off as response body.  By
 * default as a file segment: sendfile(2) where the connection allows it
 * (else libevent maps the segment), never a read into our memory.  With
 * REQ_FILE_NO_SENDFILE the bytes are read into the output buffer instead
 * (a copy, which is faster than sendfile on some machines).  The fd stays
 * the caller's: a segment holds its own duplicate, so it may outlive the
 * caller.  Returns 1 when the client's output is full, 0, or -1.
 */
int
req_send_file(struct req *req, int fd, uint64_t off, uint64_t len,
    int flags)
{
	struct evbuffer			*out = conn_output(req->c);
	struct evbuffer_file_segment	*seg;
	int				 dfd;
	int				 fsflags = EVBUF_FS_CLOSE_ON_FREE;

	if (len == 0)
		return (conn_output_full(req->c));
	/* libevent writes 16 KiB per turn by default: let a window go. */
	if (bufferevent_get_max_single_write(req->c->bev) < (ev_ssize_t)len)
		bufferevent_set_max_single_write(req->c->bev, len);
	if (flags & REQ_FILE_NO_SENDFILE) {
		if (req->framing == RESP_CHUNKED)
			evbuffer_add_printf(out, "%llx\r\n",
			    (unsigned long long)len);
		if (req_read_file(out, fd, off, len) == -1)
			return (-1);
		if (req->framing == RESP_CHUNKED)
			evbuffer_add(out, "\r\n", 2);
		req->bytes_out += len;
		return (conn_output_full(req->c));
	}
	out = conn_output_fd(req->c);	/* not staged: sendfile(2) */
	if ((dfd = dup(fd)) == -1)
		return (-1);
	if ((seg = evbuffer_file_segment_new(dfd, (ev_off_t)off,
	    (ev_off_t)len, fsflags)) == NULL) {
		close(dfd);
		return (-1);
	}
	if (req->framing == RESP_CHUNKED)
		evbuffer_add_printf(out, "%llx\r\n", (unsigned long long)len);
	if (evbuffer_add_file_segment(out, seg, 0, (ev_off_t)len) == -1) {
		evbuffer_file_segment_free(seg);
		return (-1);
	}
	evbuffer_file_segment_free(seg);	/* the buffer keeps its ref */
	if (req->framing == RESP_CHUNKED)
		evbuffer_add(out, "\r\n", 2);
	req->bytes_out += len;
	return (conn_output_full(req->c));
}

/*
 * The response is complete.  The request and its stages are retired
 * before this returns: callers return without touching them again.
 */
void
req_end_response(struct req *req)
{
	struct conn	*c = req->c;

	if (req->framing == RESP_CHUNKED)
		evbuffer_add(conn_output(c), "0\r\n\r\n", 5);
	if (req->framing == RESP_CLOSE)
		req->keep_alive = 0;
	if (req->up != NULL && req->route.ep == OCI_EP_MANIFEST &&
	    (req->msg->method == HTTP_PUT || req->msg->method == HTTP_DELETE) &&
	    req->status >= 200 && req->status < 300)
		cache_invalidate_tag(req);	/* the tag moved */
	if (req->up != NULL && (req->route.ep == OCI_EP_MANIFEST ||
	    req->route.ep == OCI_EP_BLOB) && req->route.ref_digest &&
	    req->msg->method == HTTP_DELETE &&
	    req->status >= 200 && req->status < 300)
		cache_invalidate_link(req);	/* no longer there */
	req_set_state(req, REQ_DONE);
	conn_req_done(c);
}

/* Answer with a small complete body. */
void
req_respond_simple(struct req *req, int status, const char *ctype,
    const char *body, const struct headers *extra)
{
	struct headers	h;
	size_t		len = body != NULL ? strlen(body) : 0, i;

	headers_init(&h);
	if (ctype != NULL)
		headers_add(&h, "Content-Type", 12, ctype, strlen(ctype));
	for (i = 0; extra != NULL && i < extra->n; i++)
		headers_add(&h, extra->v[i].name, extra->v[i].nlen,
		    extra->v[i].value, extra->v[i].vlen);
	req_send_head(req, status, &h, req->msg->method == HTTP_HEAD ?
	    RESP_NONE : RESP_LENGTH, (int64_t)len);
	headers_clear(&h);
	if (req->msg->method != HTTP_HEAD && len > 0)
		req_send_body_data(req, body, len);
	req_end_response(req);
}

/*
 * Fail the request with an error from the table.  Before the head is
 * sent this is a complete OCI JSON error response; after it, the only
 * honest thing left is to end the connection.  `detail` is plain text for
 * the client and the log; it never holds a credential.
 */
void
req_fail(struct req *req, enum pc_err err, const char *detail)
{
	req_fail_with(req, err, detail, NULL);
}

/* As req_fail(), with extra response headers (Retry-After, ...). */
void
req_fail_with(struct req *req, enum pc_err err, const char *detail,
    const struct headers *extra)
{
	req_fail_msg(req, err, NULL, detail, extra);
}

/* As req_fail_with(), with the error's message (NULL: the table's). */
void
req_fail_msg(struct req *req, enum pc_err err, const char *message,
    const char *detail, const struct headers *extra)
{
	char	body[2048];
	int	status = errs_status(err);

	req->err = err;
	req_stage_end(req);
	if (req->head_sent) {
		req_abort(req, errs_name(err));
		return;
	}
	if (errs_body_msg(err, message, detail, body, sizeof(body)) < 0)
		errs_body(err, NULL, body, sizeof(body));
	if (detail != NULL || message != NULL)
		log_info("%llu.%u req fail error=%s status=%d detail=\"%s\"",
		    (unsigned long long)req->c->id, req->seq, errs_name(err),
		    status, detail != NULL ? detail : message);
	/* An unread request body cannot be skipped safely: close after. */
	if (!req->body_done)
		req->keep_alive = 0;
	req_respond_simple(req, status, "application/json", body, extra);
}

/* Which methods each endpoint takes (distribution spec, "Endpoints"). */
static int
req_method_ok(enum oci_ep ep, int m)
{
	switch (ep) {
	case OCI_EP_BASE:
	case OCI_EP_CATALOG:
	case OCI_EP_TAGS:
	case OCI_EP_REFERRERS:
		return (m == HTTP_GET || m == HTTP_HEAD);
	case OCI_EP_MANIFEST:
		return (m == HTTP_GET || m == HTTP_HEAD || m == HTTP_PUT ||
		    m == HTTP_DELETE);
	case OCI_EP_BLOB:
		return (m == HTTP_GET || m == HTTP_HEAD || m == HTTP_DELETE);
	case OCI_EP_UPLOAD_START:
		return (m == HTTP_POST);
	case OCI_EP_UPLOAD:
		return (m == HTTP_GET || m == HTTP_PATCH || m == HTTP_PUT ||
		    m == HTTP_DELETE);
	default:
		return (0);
	}
}

/*
 * Map a client-side repository name to the upstream's: strip a routing
 * prefix (done by the caller) and, for Docker Hub, put one-component names
 * under library/.
 */
int
req_map_name(const struct config_upstream *up, const char *name, char *out,
    size_t len)
{
	int	n;

	if (up->docker_hub && strchr(name, '/') == NULL)
		n = snprintf(out, len, "library/%s", name);
	else
		n = snprintf(out, len, "%s", name);
	if (n < 0 || (size_t)n >= len || n > OCI_NAME_MAX)
		return (-1);
	return (0);
}

/*
 * The upstream's name of a cross-repository mount's `from`, for request
 * req: the routing prefix must be the request's own (a mount works within
 * one upstream only), the rest a valid name, mapped as req_map_name()
 * maps.  Shared by the policy gate (authz.c) and the relay
 * (proxy_relay.c), so the name checked is the name sent.  0, or -1: no
 * mount happens.
 */
int
req_map_from(const struct req *req, const char *from, char *out, size_t len)
{
	size_t	plen = strlen(req->prefix);

	if (plen > 0) {
		if (strncmp(from, req->prefix, plen) != 0)
			return (-1);
		from += plen;
	}
	if (!router_valid_name(from, strlen(from)))
		return (-1);
	return (req_map_name(req->up, from, out, len));
}

/*
 * The upstream a client-side name's routing prefix picks ("up1/x" with
 * an upstream whose prefix is up1), *rest the name after it; NULL (and
 * *rest the whole name) when there is none.  Shared by routing and the
 * token service (token.c), so a scope names what a request would.
 */
const struct config_upstream *
req_prefix_upstream(const struct config *conf, const char *name,
    const char **rest)
{
	const struct config_upstream	*up;
	const char			*slash;

	*rest = name;
	if ((slash = strchr(name, '/')) == NULL ||
	    (up = config_upstream_by_prefix(conf, name, slash - name)) ==
	    NULL)
		return (NULL);
	*rest = slash + 1;
	return (up);
}

/* containerd's ns= names a registry host: letters, digits, ".-:[]". */
static int
req_valid_ns(const char *ns)
{
	const char	*p;

	if (*ns == '\0')
		return (0);
	for (p = ns; *p != '\0'; p++)
		if (!isalnum((unsigned char)*p) && strchr(".-:[]_", *p) == NULL)
			return (0);
	return (1);
}

/* Pick the upstream: path prefix, then ns=, then the default. */
static enum pc_err
req_pick_upstream(struct req *req, char *detail, size_t dlen)
{
	const struct config		*conf = req->conf;
	const struct config_upstream	*up = NULL;
	const char			*name = req->route.name, *rest;
	size_t				 qlen;

	req->prefix[0] = '\0';
	if (req->route.ep != OCI_EP_CATALOG &&
	    (up = req_prefix_upstream(conf, name, &rest)) != NULL) {
		req->ns[0] = '\0';	/* not what routed it */
		snprintf(req->prefix, sizeof(req->prefix), "%.*s",
		    (int)(rest - name), name);
		name = rest;
	}
	if (up == NULL && req->query != NULL) {
		qlen = strlen(req->query);
		if (url_query_get(req->query, qlen, "ns", req->ns,
		    sizeof(req->ns)) == 0) {
			if (!req_valid_ns(req->ns)) {
				req->ns[0] = '\0';
				snprintf(detail, dlen, "ns is not a registry "
				    "host[:port]");
				return (ERR_BAD_REQUEST);
			}
			up = config_upstream_by_host(conf, req->ns,
			    strlen(req->ns));
			if (up == NULL) {
				snprintf(detail, dlen, "no upstream serves "
				    "ns=%s", req->ns);
				return (ERR_NAME_UNKNOWN);
			}
		}
	}
	if (up == NULL && conf->default_upstream >= 0)
		up = &conf->upstreams[conf->default_upstream];
	if (up == NULL) {
		snprintf(detail, dlen,
		    "no upstream matches and none is the default");
		return (ERR_NAME_UNKNOWN);
	}
	req->up = up;
	if (req->route.ep == OCI_EP_CATALOG)
		return (ERR_NONE);
	if (req_map_name(up, name, req->upname, sizeof(req->upname)) == -1) {
		snprintf(detail, dlen, "name too long for the upstream");
		return (ERR_NAME_INVALID);
	}
	return (ERR_NONE);
}

static void
req_route(struct req *req)
{
	enum pc_err	 err;
	char		 detail[320];
	size_t		 plen = strlen(req->path);
	int		 m = req->msg->method;

	if (req->path[0] != '/') {
		req_fail(req, ERR_BAD_REQUEST, "request target must be a path");
		return;
	}
	if (strcmp(req->path, "/healthz") == 0) {
		if (m != HTTP_GET && m != HTTP_HEAD) {
			req_fail(req, ERR_METHOD, NULL);
			return;
		}
		req_respond_simple(req, 200, "text/plain", "ok\n", NULL);
		return;
	}
	/* The admin listener answers operations paths only. */
	if (req->c->admin && strcmp(req->path, "/metrics") != 0 &&
	    strcmp(req->path, "/readyz") != 0) {
		req_fail(req, ERR_NOT_FOUND, "the admin listener answers "
		    "/metrics, /readyz and /healthz");
		return;
	}
	/* Operations, not audited; /metrics behind its own gate. */
	if (strcmp(req->path, "/metrics") == 0 ||
	    strcmp(req->path, "/readyz") == 0) {
		metrics_http(req);
		return;
	}
	/*
	 * Known before anything can fail: a /v2 answer carries the API
	 * version, and one to an ns= request its OCI-Namespace, whichever
	 * stage makes it.  req_pick_upstream() clears ns when a path
	 * prefix picks the upstream instead.
	 */
	req->is_v2 = strcmp(req->path, "/v2") == 0 ||
	    strncmp(req->path, "/v2/", 4) == 0;
	if (req->is_v2 && req->query != NULL &&
	    (url_query_get(req->query, strlen(req->query), "ns", req->ns,
	    sizeof(req->ns)) == -1 || !req_valid_ns(req->ns)))
		req->ns[0] = '\0';
	/*
	 * The audit stage comes first: with on_failure "reject", a request
	 * whose record could not be kept is not served at all, /v2/ included.
	 */
	if (audit_admit(req) == -1) {
		req_fail(req, ERR_UNAVAILABLE, "audit log unavailable");
		return;
	}
	if (strcmp(req->path, "/admin") == 0 ||
	    strncmp(req->path, "/admin/", 7) == 0) {
		/* The admin action, whatever the path: no probing past it. */
		if (authz_admin(req) == -1)
			return;
		if (strcmp(req->path, "/admin/audit") == 0)
			audit_admin(req);
		else if (strcmp(req->path, "/admin/identity") == 0 ||
		    strcmp(req->path, "/admin/identity/refresh") == 0)
			oidc_admin(req);
		else
			req_fail(req, ERR_NOT_FOUND, NULL);
		return;
	}
	/* Sign-in for people (sso.c): its own pages, never proxied. */
	if (sso_wants(req)) {
		sso_start(req);
		return;
	}
	/* The token service (token.c): its own answers, never proxied. */
	if (strcmp(req->path, "/token") == 0) {
		token_start(req);
		return;
	}
	if (strcmp(req->path, "/.well-known/jwks.json") == 0) {
		token_jwks(req);
		return;
	}
	if (strcmp(req->path, "/.well-known/portcullis") == 0) {
		token_discovery(req);
		return;
	}
	if (strcmp(req->path, "/v2") != 0 && strncmp(req->path, "/v2/", 4)) {
		req_fail(req, ERR_NOT_FOUND, NULL);
		return;
	}
	req->is_v2 = 1;
	if ((err = router_parse(req->path, plen, &req->route)) != ERR_NONE) {
		/* Not asked of the upstream: such a manifest cannot exist. */
		req_fail(req, router_ref_err(err, &req->route, m == HTTP_PUT),
		    NULL);
		return;
	}
	if (!req_method_ok(req->route.ep, m)) {
		req_fail(req, ERR_METHOD, NULL);
		return;
	}
	if (req->route.ep == OCI_EP_BASE) {
		/*
		 * Answered here: 200, or 401 to an anonymous caller the
		 * policy lets pull nothing (authz.c).  Each endpoint behind
		 * it is gated by the policy.
		 */
		if (authz_base(req) == -1)
			return;
		req->decision = "allow";
		req_respond_simple(req, 200, "application/json", "{}", NULL);
		return;
	}
	if ((err = req_pick_upstream(req, detail, sizeof(detail))) !=
	    ERR_NONE) {
		req_fail(req, err, detail);
		return;
	}
	req_set_state(req, REQ_DISPATCH);
	req_dispatch(req);
}

static void
req_dispatch(struct req *req)
{
	/*
	 * The policy gate (authz.c): may this principal do what the
	 * endpoint implies on this repository?  It decides at once; a
	 * request it let on has its decision set, so a gate that waited
	 * and came back through req_stage_next() does not run it twice.
	 */
	if (req->decision == NULL && authz_request(req) == -1)
		return;
	/*
	 * A manifest push is a bounded document (limits.manifest_bytes):
	 * an announced length over it is refused before the upstream hears
	 * of it; a chunked one is cut by the framer once over, and
	 * conn.c answers 413 without forwarding the excess.
	 */
	if (req->route.ep == OCI_EP_MANIFEST && req->msg->method == HTTP_PUT &&
	    hframe_set_max_body(&req->c->hf, req->conf->manifest_bytes) ==
	    -1) {
		req_fail(req, ERR_TOO_LARGE, "manifest larger than "
		    "limits.manifest_bytes");
		return;
	}
	/*
	 * Rate limits (ratelimit.c), after the policy: a refused request
	 * costs no limit, and the rules count by the action it decided.
	 * Before the cache: a hit is a request like any other unless a
	 * rule says otherwise.  It may wait for Redis as the request's
	 * stage, then comes back here with rl_checked set.
	 */
	if (!req->rl_checked && ratelimit_request(req) != 0)
		return;
	/*
	 * A request that will reach its upstream takes one of its
	 * max_concurrent slots, or waits for one (upcap.c); after the
	 * limits, so that a refused request never holds one.
	 */
	if (!req->cap_checked && upcap_request(req) != 0)
		return;
	/*
	 * A manifest pushed by tag is read whole first: a blocked digest is
	 * refused, an immutable tag checked with the upstream (tagpol.c).
	 */
	if (tagpol_wants(req)) {
		tagpol_start(req);
		return;
	}
	/* Referrers: the gateway's answer, from the API or the tag schema. */
	if (req->route.ep == OCI_EP_REFERRERS) {
		req_set_state(req, REQ_UPSTREAM);
		referrers_start(req);
		return;
	}
	/* A manifest with a subject: its referrers index kept (referrers.c). */
	if (referrers_push_wants(req)) {
		req_set_state(req, REQ_UPSTREAM);
		referrers_push_start(req);
		return;
	}
	/* A manifest deleted by digest: out of its subject's referrers. */
	if (referrers_delete_wants(req)) {
		referrers_delete_start(req);
		return;
	}
	/* The catalog is the gateway's own answer, filtered per caller. */
	if (req->route.ep == OCI_EP_CATALOG) {
		req_set_state(req, REQ_UPSTREAM);
		catalog_start(req);
		return;
	}
	/* A tag list is paged by the gateway, whatever the upstream does. */
	if (req->route.ep == OCI_EP_TAGS) {
		req_set_state(req, REQ_UPSTREAM);
		taglist_start(req);
		return;
	}
	if (cache_wants(req)) {
		req_set_state(req, REQ_CACHE);
		cache_start(req);
		return;
	}
	/* A known upload's status, or a chunk at the wrong offset (416). */
	if (uploads_answer(req))
		return;
	/*
	 * A manifest PUT or DELETE moves its tag only once the upstream
	 * accepts it: req_end_response() drops the tag's records on a 2xx.
	 * Dropping them here would let any refused request clear any tag.
	 */
	req_set_state(req, REQ_UPSTREAM);
	proxy_start(req);
}
