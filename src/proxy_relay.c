/*
 * proxy_relay.c: a client request forwarded to its upstream through a
 * proxy (proxy.c) and the answer relayed back through req.c.
 *
 * The request head is rewritten for the upstream (its repository name,
 * `ns` stripped, `from=` mapped; proxy.c drops the hop-by-hop fields and
 * the client's Authorization and adds the gateway's own upstream
 * credentials) and the body streamed through as it arrives (the request's
 * body sinks, set once the head is sent), or, when a gate read it whole
 * first (req->body_read: the immutable tag check), sent from memory.  The response head
 * is rewritten for the client (upload Locations point back at the
 * gateway, the upstream's challenge replaced by the gateway's, a 429 made
 * the OCI TOOMANYREQUESTS error, a manifest over limits.manifest_bytes
 * refused, a manifest pulled by tag refused when its digest is blocked)
 * and its body streamed back through req.c's response writer.
 *
 * The proxy is the request's UPSTREAM stage (px_stage_ops): the client's
 * output draining reads the upstream again (proxy_resume), and the
 * request retires the proxy with proxy_free() through the stage's free
 * hook; it is freed on the next turn.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "portcullis.h"
#include "proxy.h"
#include "policy.h"

static const struct proxy_ops px_client_ops;
static const struct req_stage_ops px_stage_ops;

/* The upstream request target and the token scope. */
static int
px_build_target(struct proxy *px)
{
	struct req	*req = px->req;
	const char	*rest, *write_acts;
	char		 q1[4096], q2[4096], from[OCI_NAME_MAX + 1];
	char		 upfrom[OCI_NAME_MAX + 16], enc[1024];
	char		 mount[OCI_NAME_MAX + 32] = "";
	size_t		 qlen;
	int		 m = req->msg->method, n;

	q2[0] = '\0';
	if (req->query != NULL && (qlen = strlen(req->query)) > 0) {
		if (url_query_strip(req->query, qlen, "ns", q1,
		    sizeof(q1)) < 0)
			return (-1);
		snprintf(q2, sizeof(q2), "%s", q1);
		if (req->route.ep == OCI_EP_UPLOAD_START &&
		    url_query_get(q1, strlen(q1), "from", from,
		    sizeof(from)) == 0) {
			if (url_query_strip(q1, strlen(q1), "from", q2,
			    sizeof(q2)) < 0)
				return (-1);
			if (req_map_from(px->req, from, upfrom,
			    sizeof(upfrom)) == 0) {
				if (url_pct_encode(upfrom, enc,
				    sizeof(enc)) < 0)
					return (-1);
				n = strlen(q2);
				snprintf(q2 + n, sizeof(q2) - n, "%sfrom=%s",
				    n > 0 ? "&" : "", enc);
				snprintf(mount, sizeof(mount),
				    "repository:%s:pull", upfrom);
			}
		}
	}
	if (req->route.ep == OCI_EP_CATALOG) {
		n = asprintf(&px->upath, "/v2/_catalog%s%s", q2[0] ? "?" : "",
		    q2);
		snprintf(px->scope, sizeof(px->scope), "registry:catalog:*");
		return (n < 0 ? -1 : 0);
	}
	rest = req->path + 4 + strlen(req->route.name);
	write_acts = m == HTTP_DELETE ? "delete" : "pull,push";
	return (px_target(px, req->upname, rest, q2,
	    (m == HTTP_GET || m == HTTP_HEAD) ? "pull" : write_acts, mount));
}

/* Start forwarding the routed request to its upstream. */
void
proxy_start(struct req *req)
{
	struct proxy		*px;
	struct hframe_limits	 lim = { req->conf->upstream_header_bytes,
				    req->conf->upstream_header_count, 8192 };

	if ((px = calloc(1, sizeof(*px))) == NULL)
		fatal("calloc");
	req_stage_set(req, &px_stage_ops, px);
	px->req = req;
	px->ctx = req->c->ctx;
	px->conf = req->conf;
	px->ops = &px_client_ops;
	px->arg = px;
	px->method = req->msg->method;
	px->method_str = req->method;
	px->fwd = &req->msg->hdrs;
	px->peer = req->c->peer;
	px->has_body = req->has_body;
	px->follow = req->route.ep == OCI_EP_BLOB;
	snprintf(px->logid, sizeof(px->logid), "%llu.%u",
	    (unsigned long long)req->c->id, req->seq);
	px->up = req->up;
	px->us = upstream_state_get(px->ctx, px->up);
	origin_from_url(&px->origin, &px->up->u, px->up->ca_file);
	hframe_init(&px->rf, HFRAME_RESPONSE, &lim, NULL, px);
	if (px_build_target(px) == -1) {
		req_fail(req, ERR_BAD_REQUEST, "query string too long");
		return;
	}
	px_begin(px);
}

/*
 * The request body to the upstream.  The sink is set only while the
 * proxy is the request's stage (and cleared when it is retired), so
 * stage_arg is this proxy.
 */
static int
px_body_sink(struct req *req, struct evbuffer *in, size_t n)
{
	struct proxy	*px = req->stage_arg;
	struct evbuffer	*out = bufferevent_get_output(px->uc->bev);

	evbuffer_remove_buffer(in, out, n);
	return (evbuffer_get_length(out) >= req->conf->high_watermark);
}

static int
px_body_sink_data(struct req *req, const char *data, size_t n)
{
	struct proxy	*px = req->stage_arg;
	struct evbuffer	*out = bufferevent_get_output(px->uc->bev);

	if (px->chunked_out)
		evbuffer_add_printf(out, "%zx\r\n", n);
	evbuffer_add(out, data, n);
	if (px->chunked_out)
		evbuffer_add(out, "\r\n", 2);
	return (evbuffer_get_length(out) >= req->conf->high_watermark);
}

static void
px_body_end(struct req *req)
{
	struct proxy	*px = req->stage_arg;

	if (px->chunked_out)
		evbuffer_add(bufferevent_get_output(px->uc->bev),
		    "0\r\n\r\n", 5);
}

/*
 * The request body's framing fields in the upstream request head.  A
 * body read whole before this stage (req->body_read: an immutable tag's
 * check, tagpol.c) goes with its length, whatever the client's framing.
 */
void
px_body_head(struct proxy *px, struct evbuffer *out)
{
	struct req	*req = px->req;

	if (req == NULL) {		/* a fetch's own body */
		evbuffer_add_printf(out, "Content-Length: %zu\r\n",
		    evbuffer_get_length(px->fetch_body));
		return;
	}
	if (req->body_read != NULL)
		evbuffer_add_printf(out, "Content-Length: %zu\r\n",
		    evbuffer_get_length(req->body_read));
	else if (req->msg->chunked) {
		px->chunked_out = 1;
		evbuffer_add_printf(out, "Transfer-Encoding: chunked\r\n");
	} else
		evbuffer_add_printf(out, "Content-Length: %llu\r\n",
		    (unsigned long long)req->msg->length);
}

/*
 * The head is out: send a body read before, or let the client's flow
 * (the sinks above, reading resumed, 100 Continue when it waits).  A
 * body read before is moved out, so it goes once: a request with a body
 * is never retried (proxy.c).
 */
void
px_body_start(struct proxy *px)
{
	struct req	*req = px->req;

	if (req == NULL) {		/* sent once: never retried */
		evbuffer_add_buffer(bufferevent_get_output(px->uc->bev),
		    px->fetch_body);
		return;
	}
	if (req->body_read != NULL) {
		evbuffer_add_buffer(bufferevent_get_output(px->uc->bev),
		    req->body_read);
		return;
	}
	if (req->body_done || req->body_ready)
		return;
	req->body_sink = px_body_sink;
	req->body_sink_data = px_body_sink_data;
	req->body_end = px_body_end;
	req->body_ready = 1;
	if (req->msg->expect_continue)
		evbuffer_add_printf(conn_output(req->c),
		    "HTTP/1.1 100 Continue\r\n\r\n");
	conn_resume_read(req->c);
}

/*
 * Rewrite an upstream Location for the client: the gateway's own base URL
 * and the client's repository name (with its routing prefix), the query
 * string kept.  Locations elsewhere (storage hosts) pass unchanged.
 */
static int
px_rewrite_location(struct proxy *px, const char *loc, char *out,
    size_t len)
{
	struct req	*req = px->req;
	struct url	 u;
	const char	*path;
	char		 base[600], head[OCI_NAME_MAX + 8];
	size_t		 hlen;
	int		 n;

	if (strncasecmp(loc, "http://", 7) == 0 ||
	    strncasecmp(loc, "https://", 8) == 0) {
		if (url_parse(loc, &u) == -1 || strcmp(u.host,
		    px->origin.host) != 0 || u.port != px->origin.port)
			return (-1);
		path = loc + strcspn(loc + 8, "/") + 8;
		if (*path != '/')
			return (-1);
	} else if (loc[0] == '/')
		path = loc;
	else
		return (-1);
	if (req_external_base(req, base, sizeof(base)) < 0)
		return (-1);
	hlen = snprintf(head, sizeof(head), "/v2/%s/", req->upname);
	if (strncmp(path, head, hlen) != 0 || req->route.ep ==
	    OCI_EP_CATALOG)
		n = snprintf(out, len, "%s%s", base, path);
	else
		n = snprintf(out, len, "%s/v2/%s/%s", base, req->route.name,
		    path + hlen);
	if (n < 0 || (size_t)n >= len)
		return (-1);
	/* Keep ns= routing for follow-up requests that carry no prefix. */
	if (req->ns[0] != '\0' && req->prefix[0] == '\0') {
		n += snprintf(out + n, len - n, "%sns=", strchr(out, '?') ?
		    "&" : "?");
		if ((size_t)n >= len || url_pct_encode(req->ns, out + n,
		    len - n) < 0)
			return (-1);
	}
	return (0);
}

/*
 * Rewrite a Link field's target (`<URL>; rel="next"`, the tag list's
 * next page) as a Location, so that following it keeps the client's
 * route: its prefix or ns=, its name.  One link, bounded; anything else
 * passes unchanged.
 */
static int
px_rewrite_link(struct proxy *px, const char *link, char *out, size_t len)
{
	char		 target[2048], loc[4096];
	const char	*end;
	size_t		 tlen;
	int		 n;

	if (link[0] != '<' || (end = strchr(link, '>')) == NULL ||
	    strchr(end + 1, '<') != NULL ||
	    (tlen = end - link - 1) >= sizeof(target))
		return (-1);
	memcpy(target, link + 1, tlen);
	target[tlen] = '\0';
	if (px_rewrite_location(px, target, loc, sizeof(loc)) == -1)
		return (-1);
	n = snprintf(out, len, "<%s>%s", loc, end + 1);
	return (n < 0 || (size_t)n >= len ? -1 : 0);
}

/* --- the client side: relay the answer through req.c --- */

static int
px_client_head(void *arg, struct hframe_msg *rm)
{
	struct proxy		*px = arg;
	struct req		*req = px->req;
	struct headers		 out;
	enum resp_framing	 framing;
	char			 newloc[4096], chal[OCI_NAME_MAX + 1024];
	int64_t			 length = -1;
	int			 st = rm->status, m = req->msg->method, n;
	size_t			 i;
	const char		*ra, *dcd;

	headers_init(&out);
	if (st == 429) {
		/*
		 * Whatever body the upstream sent, the client gets the OCI
		 * TOOMANYREQUESTS error and the upstream's Retry-After.  The
		 * upstream connection is dropped with its unread body.
		 */
		if ((ra = headers_get(&rm->hdrs, "Retry-After")) != NULL &&
		    *ra != '\0')
			headers_add(&out, "Retry-After", 11, ra, strlen(ra));
		req_fail_with(req, ERR_TOO_MANY_REQUESTS, "upstream "
		    "registry rate limit", &out);	/* retires px */
		headers_clear(&out);
		return (-1);
	}
	/*
	 * The distribution spec lets a registry refuse to delete by tag,
	 * with 405 UNSUPPORTED; older ones (registry 2.8) parse the tag as
	 * a digest and answer 400 DIGEST_INVALID, which no client expects
	 * for a tag.  The spec's answer instead (the body is dropped).
	 */
	if (req->route.ep == OCI_EP_MANIFEST && m == HTTP_DELETE &&
	    !req->route.ref_digest && st == 400) {
		snprintf(newloc, sizeof(newloc), "upstream %s does not delete "
		    "manifests by tag; delete by digest", req->up->name);
		req_fail(req, ERR_TAG_DELETE, newloc);	/* retires px */
		headers_clear(&out);
		return (-1);
	}
	/*
	 * With the cache on, a blob or manifest it passes through (a HEAD,
	 * a fill it declined) fails as its fills do: a server error is the
	 * gateway's 502 UNAVAILABLE, the upstream's status in the detail.
	 */
	if (st >= 500 && cache_wants(req)) {
		snprintf(newloc, sizeof(newloc), "upstream %s answered %d",
		    req->up->name, st);
		req_fail(req, ERR_UPSTREAM, newloc);	/* retires px */
		headers_clear(&out);
		return (-1);
	}
	/*
	 * A manifest is a bounded document: a length over the limit is
	 * refused before a byte goes out; a chunked one is cut by the
	 * framer once over (px_pump fails it: the client's answer ends).
	 */
	if (req->route.ep == OCI_EP_MANIFEST && m == HTTP_GET &&
	    st >= 200 && st < 300 && hframe_set_max_body(&px->rf,
	    req->conf->manifest_bytes) == -1) {
		req_fail(req, ERR_TOO_LARGE, "upstream manifest larger than "
		    "limits.manifest_bytes");	/* frees px */
		return (-1);
	}
	for (i = 0; i < rm->hdrs.n; i++) {
		const struct header *h = &rm->hdrs.v[i];

		/*
		 * The upstream's realm means nothing to our clients (the
		 * gateway holds the upstream credentials); a 401 gets the
		 * gateway's own challenge below instead.
		 */
		if (strcasecmp(h->name, "WWW-Authenticate") == 0 ||
		    strcasecmp(h->name, "X-Request-Id") == 0)
			continue;
		/* RFC 9110 7.6.1: fields the upstream's Connection names. */
		if (headers_has_token(&rm->hdrs, "Connection", h->name))
			continue;
		if (strcasecmp(h->name, "Location") == 0 &&
		    px_rewrite_location(px, h->value, newloc,
		    sizeof(newloc)) == 0) {
			headers_add(&out, h->name, h->nlen, newloc,
			    strlen(newloc));
			continue;
		}
		if (strcasecmp(h->name, "Link") == 0 &&
		    px_rewrite_link(px, h->value, newloc,
		    sizeof(newloc)) == 0) {
			headers_add(&out, h->name, h->nlen, newloc,
			    strlen(newloc));
			continue;
		}
		headers_add(&out, h->name, h->nlen, h->value, h->vlen);
	}
	if (req->ns[0] != '\0')
		headers_add(&out, "OCI-Namespace", 13, req->ns,
		    strlen(req->ns));
	/* What an upload is now (uploads.c), from the upstream's answer. */
	if (req->route.ep == OCI_EP_UPLOAD ||
	    req->route.ep == OCI_EP_UPLOAD_START)
		uploads_note(req, st, &rm->hdrs, headers_get(&out, "Location"));
	if (st == 401) {
		/*
		 * RFC 9110 15.5.2: a 401 carries at least one challenge;
		 * the gateway's own (Bearer with the token service), as
		 * its own 401s send it.
		 */
		if ((n = authz_upstream_challenge(req, chal,
		    sizeof(chal))) > 0)
			headers_add(&out, "WWW-Authenticate", 16, chal, n);
	}
	if (rm->has_length)
		length = (int64_t)rm->length;
	if (m == HTTP_HEAD || st == 204 || st == 304)
		framing = RESP_NONE;
	else if (rm->has_length)
		framing = RESP_LENGTH;
	else
		framing = RESP_CHUNKED;
	/*
	 * A manifest pulled: a blocked digest is refused before the head
	 * goes out (tagpol.c).  The upstream's Docker-Content-Digest, and
	 * the digest a request names, are only what the upstream says it
	 * sends: a GET's body (bounded above) is held and the digest of its
	 * bytes decides too, so that a manifest sent under another name (or
	 * none) is refused all the same.  With no digest blocked there is
	 * nothing to check, and it streams.
	 */
	if (req->route.ep == OCI_EP_MANIFEST && st >= 200 && st < 300) {
		if ((dcd = headers_get(&rm->hdrs, "Docker-Content-Digest")) !=
		    NULL && tagpol_blocked(req, dcd)) {	/* retires px */
			headers_clear(&out);
			return (-1);
		}
		if (m == HTTP_GET &&
		    policy_nblocked(req->conf->policy) > 0) {
			if ((px->held = evbuffer_new()) == NULL)
				fatal("evbuffer_new");
			px->held_hdrs = out;	/* moved */
			px->held_status = st;
			return (0);
		}
	}
	/*
	 * An error answer small enough (or of unknown length) keeps a copy
	 * of its first ERRS_BODY_MAX bytes as they go by, so the record can
	 * name the upstream's OCI error code once it is complete; the
	 * stream is not held for it.
	 */
	if (st >= 400 && m != HTTP_HEAD && (!rm->has_length ||
	    (rm->length > 0 && rm->length <= ERRS_BODY_MAX)) &&
	    (px->errcap = malloc(ERRS_BODY_MAX)) == NULL)
		fatal("malloc");
	req_send_head(req, st, &out, framing, length);
	headers_clear(&out);
	return (0);
}

/* Copy what fits of an error answer's body (px_client_head). */
static void
px_errcap(struct proxy *px, struct evbuffer *in, const char *data,
    size_t n)
{
	size_t	take;

	if (px->errcap == NULL)
		return;
	if (px->errcaplen + n > ERRS_BODY_MAX) {
		/* Larger than the bound: not parsed at all. */
		free(px->errcap);
		px->errcap = NULL;
		return;
	}
	take = n;
	if (in != NULL)
		evbuffer_copyout(in, px->errcap + px->errcaplen, take);
	else if (data != NULL)
		memcpy(px->errcap + px->errcaplen, data, take);
	px->errcaplen += take;
}

static int
px_client_body(void *arg, struct evbuffer *in, size_t n)
{
	struct proxy	*px = arg;

	if (px->held != NULL) {
		evbuffer_remove_buffer(in, px->held, n);
		return (0);
	}
	px_errcap(px, in, NULL, n);
	return (req_send_body(px->req, in, n));
}

static int
px_client_body_data(void *arg, const char *data, size_t n)
{
	struct proxy	*px = arg;

	if (px->held != NULL) {
		evbuffer_add(px->held, data, n);
		return (0);
	}
	px_errcap(px, NULL, data, n);
	return (req_send_body_data(px->req, data, n));
}

/* A held manifest is complete: refused when blocked, else sent whole. */
static void
px_client_send_held(struct proxy *px)
{
	struct req	*req = px->req;
	char		 digest[160];

	/* Its bytes' digest, whatever the upstream named. */
	if (tagpol_digest(NULL, px->held, digest, sizeof(digest)) == 0 &&
	    tagpol_blocked(req, digest))
		return;				/* retires req and px */
	req_send_head(req, px->held_status, &px->held_hdrs, RESP_LENGTH,
	    (int64_t)evbuffer_get_length(px->held));
	req_send_body(req, px->held, evbuffer_get_length(px->held));
	req_end_response(req);			/* retires req and px */
}

static void
px_client_done(void *arg)
{
	struct proxy	*px = arg;

	if (px->held != NULL) {
		px_client_send_held(px);
		return;
	}
	if (px->errcap != NULL)
		errs_parse_code(px->errcap, px->errcaplen, px->req->up_error,
		    sizeof(px->req->up_error));
	req_end_response(px->req);	/* retires req and px */
}

static void
px_client_fail(void *arg, enum pc_err err, const char *detail)
{
	struct proxy	*px = arg;
	struct req	*req = px->req;

	if (req->head_sent) {
		req->err = err;
		req_abort(req, detail);	/* retires req and px */
		return;
	}
	req_fail(req, err, detail);	/* retires px */
}

static const struct proxy_ops px_client_ops = {
	px_client_head,
	px_client_body,
	px_client_body_data,
	px_client_done,
	px_client_fail
};

/*
 * Whether the rest of the answer may go socket to socket (proxy_splice.c):
 * buffers.splice on, plain TCP both ways, a Content-Length body relayed
 * as it is (not held for a digest, no error copy) with at least a
 * watermark still to come, the request body sent, and nothing of the
 * upstream's still in its buffers.
 */
int
px_splice_ok(struct proxy *px)
{
	struct req	*req = px->req;

	if (req == NULL || px->retired || px->uc == NULL || px->spl != NULL ||
	    px->no_splice)
		return (0);
	return (req->conf->splice && !req->c->tls && !px->uc->origin.tls &&
	    !req->c->dead && !req->c->closing && req->head_sent &&
	    req->framing == RESP_LENGTH && req->body_done &&
	    px->held == NULL && px->errcap == NULL &&
	    px->rf.phase == HF_BODY_LENGTH &&
	    px->rf.remaining >= req->conf->high_watermark &&
	    evbuffer_get_length(bufferevent_get_output(px->uc->bev)) == 0);
}

/* --- the proxy as the request's UPSTREAM stage (struct req_stage_ops) --- */

/* The client's output drained: read the upstream again. */
static void
px_stage_writable(void *arg)
{
	proxy_resume(arg);
}

/*
 * The client went away: whatever the upstream still sends, or still
 * expects of the request body, goes with its connection, which is
 * closed rather than pooled (proxy_free).
 */
static void
px_stage_client_gone(void *arg)
{
	struct proxy	*px = arg;

	log_debug("%s proxy client_gone upstream=%s got_head=%d", px->logid,
	    px->up->name, px->got_head);
}

static void
px_stage_free(void *arg)
{
	proxy_free(arg);
}

static const struct req_stage_ops px_stage_ops = {
	"upstream",
	px_stage_writable,
	px_stage_client_gone,
	px_stage_free
};
