/*
 * tagpol.c: what the policy says about the manifest a tag points at.
 *
 * Immutable tags (the policy's immutable_tags rules, policy_immutable()):
 * a manifest PUT by tag that would move an existing immutable tag is
 * refused before the upstream sees it.  The gateway reads the pushed
 * manifest into memory (bounded by limits.manifest_bytes, which the
 * framer enforces), then asks the upstream (a HEAD of the manifest by
 * tag, through proxy.c's client-less request): only then, so that the
 * answer is as fresh as can be when the PUT follows (a client holding
 * its body back must not push on a 404 that someone else's push of the
 * tag has made stale meanwhile).  A 404 lets the push
 * go on (a new tag); a 200 whose Docker-Content-Digest is the pushed
 * body's digest lets it go on too (the same manifest pushed again); any
 * other digest is a 403 DENIED naming the rule.  Every other answer, or
 * none, fails closed (502/504): an immutability rule that cannot be
 * checked is not waived.  The body read here goes upstream from the
 * request (req->body_read, sent by proxy_relay.c).  The check is a gate
 * of DISPATCH: it makes itself the request's stage and comes back through
 * req_stage_next(), with req->tag_checked set so it runs once.
 *
 * Blocked digests reached through a tag: a request by digest is refused
 * by the policy gate before anything is fetched; a manifest pushed by tag
 * is read whole (as for an immutable tag) and refused when its bytes'
 * digest is blocked; a pull by tag learns its
 * digest only from the upstream's answer or the cache's tag record, so
 * the relay (proxy_relay.c) and the cache (cache_serve.c) ask
 * tagpol_blocked() before the head goes to the client.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "policy.h"
#include "portcullis.h"

#define TP_DIGEST_MAX	(7 + 128 + 1)	/* "sha512:" + hex + NUL */

/* Every manifest type, so the upstream answers with what it stores. */
static const char tp_accept[] =
    "application/vnd.oci.image.manifest.v1+json, "
    "application/vnd.oci.image.index.v1+json, "
    "application/vnd.docker.distribution.manifest.v2+json, "
    "application/vnd.docker.distribution.manifest.list.v2+json, "
    "application/vnd.docker.distribution.manifest.v1+prettyjws, "
    "application/vnd.docker.distribution.manifest.v1+json";

struct tagpol {
	struct req		*req;
	struct proxy		*px;		/* the HEAD by tag */
	struct headers		 fwd;		/* its Accept */
	struct evbuffer		*body;		/* the pushed manifest */
	const char		*rule;		/* immutability rule id */
	int			 head_done;	/* status is known */
	int			 status;
	char			 up_digest[TP_DIGEST_MAX];
	int			 retired;
	struct reap_node	 reap;
};

/*
 * The pushes of immutable tags from their check to their end.  The check
 * and the PUT are two upstream requests: two pushes of one new tag
 * checked before either landed would both see 404, and the second would
 * move the tag.  So a push whose tag has another push in flight here is
 * refused (503, to be retried: its check then sees the tag).  Other
 * gateways sharing the upstream are not seen (README).
 */
struct tp_inflight {
	TAILQ_ENTRY(tp_inflight) entry;
	const struct req	*req;
	char			*key;	/* upstream, repository, tag */
};
static TAILQ_HEAD(, tp_inflight) tp_inflight =
    TAILQ_HEAD_INITIALIZER(tp_inflight);

static const struct proxy_ops tp_ops;
static const struct req_stage_ops tp_stage_ops;
static int	tp_sink(struct req *, struct evbuffer *, size_t);
static void	tp_ask(struct tagpol *);

/* Take the tag for this push: 0, or -1 when another push holds it. */
static int
tp_inflight_take(struct req *req)
{
	struct tp_inflight	*f;
	char			*key;

	if (asprintf(&key, "%s\n%s\n%s", req->up->name, req->upname,
	    req->route.ref) == -1)
		fatal("asprintf");
	TAILQ_FOREACH(f, &tp_inflight, entry) {
		if (strcmp(f->key, key) == 0) {
			free(key);
			return (-1);
		}
	}
	if ((f = calloc(1, sizeof(*f))) == NULL)
		fatal("calloc");
	f->req = req;
	f->key = key;
	TAILQ_INSERT_TAIL(&tp_inflight, f, entry);
	return (0);
}

/* A request ended (req_free): a tag its push held is free again. */
void
tagpol_req_done(struct req *req)
{
	struct tp_inflight	*f;

	/* By the request alone: its message may be the next one by now. */
	TAILQ_FOREACH(f, &tp_inflight, entry) {
		if (f->req == req) {
			TAILQ_REMOVE(&tp_inflight, f, entry);
			free(f->key);
			free(f);
			return;
		}
	}
}

/*
 * The digest of a buffer's bytes in the algorithm `like` names
 * ("sha512:..." for SHA-512, else SHA-256): "alg:hex" into out.
 */
int
tagpol_digest(const char *like, struct evbuffer *b, char *out, size_t len)
{
	static const char	 hex[] = "0123456789abcdef";
	struct evbuffer_ptr	 ptr;
	struct evbuffer_iovec	 v[8];
	EVP_MD_CTX		*md;
	unsigned char		 sum[EVP_MAX_MD_SIZE];
	unsigned int		 n, i;
	int			 sha512, nv, k, rc;
	size_t			 off;

	sha512 = like != NULL && strncmp(like, "sha512:", 7) == 0;
	if ((md = EVP_MD_CTX_new()) == NULL)
		fatal("EVP_MD_CTX_new");
	if (EVP_DigestInit_ex(md, sha512 ? EVP_sha512() : EVP_sha256(),
	    NULL) != 1)
		fatalx("EVP_DigestInit_ex failed");
	evbuffer_ptr_set(b, &ptr, 0, EVBUFFER_PTR_SET);
	/* Walk the chains without a copy; each peek takes up to 8. */
	for (off = 0; off < evbuffer_get_length(b); ) {
		nv = evbuffer_peek(b, -1, &ptr, v, 8);
		if (nv <= 0)
			break;
		for (k = 0; k < nv && k < 8; k++) {
			if (EVP_DigestUpdate(md, v[k].iov_base,
			    v[k].iov_len) != 1)
				fatalx("EVP_DigestUpdate failed");
			off += v[k].iov_len;
		}
		if (evbuffer_ptr_set(b, &ptr, off, EVBUFFER_PTR_SET) == -1)
			break;
	}
	if (EVP_DigestFinal_ex(md, sum, &n) != 1)
		fatalx("EVP_DigestFinal_ex failed");
	EVP_MD_CTX_free(md);
	if (len < 8 + 2 * (size_t)n)
		return (-1);
	rc = snprintf(out, len, "%s:", sha512 ? "sha512" : "sha256");
	for (i = 0; i < n; i++) {
		out[rc++] = hex[sum[i] >> 4];
		out[rc++] = hex[sum[i] & 0xf];
	}
	out[rc] = '\0';
	return (0);
}

/*
 * Whether a manifest pull's answer is refused because its digest is on
 * the blocklist: 1 after failing the request with 403 DENIED (the caller
 * returns without touching it), 0 when it may be served.  Requests other
 * than manifest GET/HEAD are never refused here.
 */
int
tagpol_blocked(struct req *req, const char *digest)
{
	const char	*id;
	char		 detail[600];
	int		 named;

	if (req->route.ep != OCI_EP_MANIFEST || digest == NULL ||
	    (req->msg->method != HTTP_GET && req->msg->method != HTTP_HEAD) ||
	    !policy_blocked(req->conf->policy, digest, &id))
		return (0);
	/* An entry without an id of its own is named by its digest. */
	named = id != NULL && strcmp(id, digest) != 0;
	snprintf(detail, sizeof(detail), "manifest %s of %s:%s is blocked"
	    "%s%s%s", digest, req->route.name, req->route.ref,
	    named ? " (" : "", named ? id : "", named ? ")" : "");
	req->decision = "deny";
	req->rule = id;
	req_fail(req, ERR_DIGEST_BLOCKED, detail);
	return (1);
}

/*
 * Whether a routed request is a manifest PUT not yet checked.  By digest
 * the policy gate checked the blocklist; by tag the digest is the body's,
 * so the body is read and its digest checked (a push of a blocked
 * manifest is refused however it is named), then, for an immutable tag,
 * the upstream is asked.  Every manifest push is read whole (it is
 * bounded by limits.manifest_bytes): one with a `subject` has its
 * referrers index kept by the gateway when the upstream keeps none
 * (referrers.c), which needs its bytes before it goes upstream.
 */
int
tagpol_wants(struct req *req)
{
	return (req->route.ep == OCI_EP_MANIFEST &&
	    req->msg->method == HTTP_PUT && !req->tag_checked);
}

/* The check passed: the push goes on with the body read. */
static void
tp_pass(struct tagpol *tp)
{
	struct req	*req = tp->req;

	req->tag_checked = 1;
	req->body_read = tp->body;
	tp->body = NULL;
	req_stage_next(req);		/* retires tp */
}

/* The reaper's half of tp_free(). */
static void
tp_destroy(void *arg)
{
	struct tagpol	*tp = arg;

	if (tp->body != NULL)
		evbuffer_free(tp->body);
	headers_clear(&tp->fwd);
	free(tp);
}

/*
 * Retire the stage: the HEAD retired, the request body no longer read
 * into it (an unread rest makes the connection close after the answer).
 */
static void
tp_free(void *arg)
{
	struct tagpol	*tp = arg;
	struct req	*req = tp->req;

	if (tp->retired)
		return;
	tp->retired = 1;
	if (req->body_sink == tp_sink) {
		req->body_ready = 0;
		req->body_sink = NULL;
		req->body_sink_data = NULL;
		req->body_end = NULL;
	}
	proxy_free(tp->px);
	tp->px = NULL;
	conn_reap_later(req->c->ctx, &tp->reap, tp_destroy, tp);
}

/* The HEAD's answer and the whole body are in: decide. */
static void
tp_decide(struct tagpol *tp)
{
	struct req	*req = tp->req;
	char		 pushed[TP_DIGEST_MAX], detail[700];

	if (!tp->head_done || !req->body_done)
		return;
	if (tp->status == 200) {
		if (tp->up_digest[0] == '\0') {
			snprintf(detail, sizeof(detail), "upstream %s gave "
			    "no Docker-Content-Digest for %s:%s (immutable "
			    "tag check)", req->up->name, req->route.name,
			    req->route.ref);
			req_fail(req, ERR_UPSTREAM_PROTO, detail);
			return;
		}
		if (tagpol_digest(tp->up_digest, tp->body, pushed,
		    sizeof(pushed)) == -1 || strcmp(pushed,
		    tp->up_digest) != 0) {
			snprintf(detail, sizeof(detail), "tag %s of %s is "
			    "immutable (%s)", req->route.ref, req->route.name,
			    tp->rule);
			req->decision = "deny";
			req->rule = tp->rule;
			log_info("%llu.%u policy immutable repo=%s tag=%s "
			    "rule=%s upstream_digest=%s pushed=%s",
			    (unsigned long long)req->c->id, req->seq,
			    req->upname, req->route.ref, tp->rule,
			    tp->up_digest, pushed);
			req_fail(req, ERR_TAG_IMMUTABLE, detail);
			return;
		}
	} else if (tp->status != 404) {
		snprintf(detail, sizeof(detail), "upstream %s answered %d to "
		    "the immutable tag check of %s:%s", req->up->name,
		    tp->status, req->route.name, req->route.ref);
		req_fail(req, ERR_UPSTREAM, detail);
		return;
	}
	/* A new tag, or the same manifest again: the push goes on. */
	tp_pass(tp);
}

/* --- the pushed manifest, read whole (req->body_sink...) --- */

static int
tp_sink_data(struct req *req, const char *data, size_t n)
{
	struct tagpol	*tp = req->stage_arg;

	/* The framer bounds it already; this keeps memory bounded anyway. */
	if (evbuffer_get_length(tp->body) + n > req->conf->manifest_bytes) {
		req->body_sink_data = NULL;	/* the rest is discarded */
		req_fail(req, ERR_TOO_LARGE, "manifest larger than "
		    "limits.manifest_bytes");
		return (0);
	}
	evbuffer_add(tp->body, data, n);
	return (0);
}

static int
tp_sink(struct req *req, struct evbuffer *in, size_t n)
{
	struct tagpol	*tp = req->stage_arg;

	if (evbuffer_get_length(tp->body) + n > req->conf->manifest_bytes) {
		evbuffer_drain(in, n);
		req_fail(req, ERR_TOO_LARGE, "manifest larger than "
		    "limits.manifest_bytes");
		return (0);
	}
	evbuffer_remove_buffer(in, tp->body, n);
	return (0);
}

static void
tp_body_end(struct req *req)
{
	tp_ask(req->stage_arg);
}

/*
 * Run the immutable tag check of a manifest PUT (tagpol_wants() said so)
 * as the request's stage.
 */
void
tagpol_start(struct req *req)
{
	struct tagpol	*tp;

	if ((tp = calloc(1, sizeof(*tp))) == NULL ||
	    (tp->body = evbuffer_new()) == NULL)
		fatal("tagpol");
	tp->req = req;
	if (req->route.ref_digest || !policy_immutable(req->conf->policy,
	    req->up->name, req->upname, req->route.ref, &tp->rule))
		tp->rule = NULL;
	headers_init(&tp->fwd);
	headers_add(&tp->fwd, "Accept", 6, tp_accept, sizeof(tp_accept) - 1);
	req_stage_set(req, &tp_stage_ops, tp);
	if (tp->rule != NULL)
		log_debug("%llu.%u policy immutable_check repo=%s tag=%s "
		    "rule=%s", (unsigned long long)req->c->id, req->seq,
		    req->upname, req->route.ref, tp->rule);
	if (!req->body_done) {
		req->body_sink = tp_sink;
		req->body_sink_data = tp_sink_data;
		req->body_end = tp_body_end;
		req->body_ready = 1;
		if (req->msg->expect_continue)
			evbuffer_add_printf(conn_output(req->c),
			    "HTTP/1.1 100 Continue\r\n\r\n");
		conn_resume_read(req->c);
		return;			/* tp_body_end() asks */
	}
	tp_ask(tp);
}

/*
 * The pushed manifest is in: refuse it when its digest is blocked, else
 * let it on, or for an immutable tag ask the upstream about the tag now.
 */
static void
tp_ask(struct tagpol *tp)
{
	struct req	*req = tp->req;
	struct headers	 h;
	char		 logid[48], digest[TP_DIGEST_MAX], detail[600];
	const char	*id;

	if (tagpol_digest(NULL, tp->body, digest, sizeof(digest)) == 0 &&
	    policy_blocked(req->conf->policy, digest, &id)) {
		req->decision = "deny";
		req->rule = id;
		req_fail(req, ERR_DENIED, "digest is blocked");
		return;
	}
	if (tp->rule == NULL) {
		tp_pass(tp);
		return;
	}
	if (tp_inflight_take(req) == -1) {
		headers_init(&h);
		headers_add(&h, "Retry-After", 11, "1", 1);
		snprintf(detail, sizeof(detail), "another push of immutable "
		    "tag %s of %s is in progress", req->route.ref,
		    req->route.name);
		req_fail_with(req, ERR_UNAVAILABLE, detail, &h);
		headers_clear(&h);
		return;
	}
	snprintf(logid, sizeof(logid), "%llu.%u",
	    (unsigned long long)req->c->id, req->seq);
	tp->px = proxy_fetch_new(req->c->ctx, req->conf, req->up, HTTP_HEAD,
	    req->upname, "manifests", req->route.ref, &tp->fwd, &tp_ops, tp,
	    logid);
	proxy_fetch_start(tp->px);	/* may answer at once */
}

/* --- the HEAD by tag (struct proxy_ops) --- */

static int
tp_head(void *arg, struct hframe_msg *rm)
{
	struct tagpol	*tp = arg;
	const char	*v;

	tp->status = rm->status;
	if ((v = headers_get(&rm->hdrs, "Docker-Content-Digest")) != NULL &&
	    router_valid_digest(v, strlen(v)))
		snprintf(tp->up_digest, sizeof(tp->up_digest), "%s", v);
	return (0);
}

static int
tp_body(void *arg, struct evbuffer *in, size_t n)
{
	evbuffer_drain(in, n);
	return (0);
}

static int
tp_body_data(void *arg, const char *data, size_t n)
{
	return (0);
}

static void
tp_done(void *arg)
{
	struct tagpol	*tp = arg;

	proxy_free(tp->px);
	tp->px = NULL;
	tp->head_done = 1;
	tp_decide(tp);
}

/* No answer to the check: fail closed with the proxy's reason. */
static void
tp_fail(void *arg, enum pc_err err, const char *detail)
{
	struct tagpol	*tp = arg;

	proxy_free(tp->px);
	tp->px = NULL;
	req_fail(tp->req, err, detail);
}

static const struct proxy_ops tp_ops = {
	tp_head,
	tp_body,
	tp_body_data,
	tp_done,
	tp_fail
};

static const struct req_stage_ops tp_stage_ops = {
	"immutable",
	NULL,
	NULL,
	tp_free
};
