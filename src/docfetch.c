/*
 * docfetch.c: one client-less fetch of a bounded document from an
 * upstream (proxy_fetch_path), its answer kept whole: the status, the
 * head's fields and the body -- a 2xx body up to the owner's bound (more
 * fails the fetch, with the owner's detail), any other up to
 * DOCFETCH_ERRBODY_MAX (the rest dropped: an error body is only read for
 * its OCI error).  The owner's done callback runs once per send, with
 * ERR_NONE when an answer came; the fetch is let go before it runs, so
 * the owner may send again or retire from it.
 *
 * The catalog (catalog.c), the tag list (taglist.c) and the referrers
 * (referrers.c, referrers_push.c) read their upstream documents so.
 */
#include <stdlib.h>
#include <string.h>

#include "docfetch.h"

static const struct proxy_ops docfetch_ops;

void
docfetch_init(struct docfetch *d, void (*done)(void *, enum pc_err,
    const char *), void *owner)
{
	memset(d, 0, sizeof(*d));
	headers_init(&d->fwd);
	headers_init(&d->head);
	if ((d->body = evbuffer_new()) == NULL)
		fatal("evbuffer_new");
	d->done = done;
	d->owner = owner;
}

/* Let go of the fetch in flight, if any (the owner retires). */
void
docfetch_stop(struct docfetch *d)
{
	proxy_free(d->px);
	d->px = NULL;
}

void
docfetch_clear(struct docfetch *d)
{
	docfetch_stop(d);
	headers_clear(&d->fwd);
	headers_clear(&d->head);
	if (d->body != NULL)
		evbuffer_free(d->body);
	d->body = NULL;
}

/*
 * Send `method` on `path` (the upstream's, "/v2/...", with its query)
 * under `scope`, with the field `fname: fval` when fname is not NULL
 * and, when not NULL, `body` (taken).  A 2xx answer's body is kept up
 * to `max` bytes; more fails the fetch with ERR_UPSTREAM_PROTO and the
 * detail `too_large` (a string that outlives the fetch).
 */
void
docfetch_send(struct docfetch *d, struct pc_ctx *ctx, struct config *conf,
    const struct config_upstream *up, const char *logid, int method,
    const char *path, const char *scope, const char *fname,
    const char *fval, struct evbuffer *body, size_t max,
    const char *too_large)
{
	docfetch_stop(d);
	headers_clear(&d->fwd);
	headers_clear(&d->head);
	if (fname != NULL)
		headers_add(&d->fwd, fname, strlen(fname), fval,
		    strlen(fval));
	evbuffer_drain(d->body, evbuffer_get_length(d->body));
	d->max = max;
	d->too_large = too_large;
	d->status = 0;
	d->px = proxy_fetch_path(ctx, conf, up, method, path, scope,
	    &d->fwd, &docfetch_ops, d, logid);
	if (body != NULL)
		proxy_fetch_body(d->px, body);
	proxy_fetch_start(d->px);	/* may answer at once */
}

/* A field of the answer's head, or NULL. */
const char *
docfetch_field(const struct docfetch *d, const char *name)
{
	return (headers_get(&d->head, name));
}

/* The body as a NUL-terminated string (it may hold a NUL of its own). */
const char *
docfetch_text(struct docfetch *d, size_t *len)
{
	*len = evbuffer_get_length(d->body);
	evbuffer_add(d->body, "", 1);
	return ((const char *)evbuffer_pullup(d->body, -1));
}

/*
 * An upstream's answer the gateway does not relay fails the request:
 * 401 and 403 are the gateway's credentials refused (502), 429 the
 * client's 429 with the upstream's Retry-After, 404 `on404`, anything
 * else 502.  `what` names the request in the detail ("a tag list
 * request").
 */
void
docfetch_fail_status(struct req *req, const struct docfetch *d,
    const char *what, enum pc_err on404)
{
	struct headers	 h;
	const char	*ra = docfetch_field(d, "Retry-After");
	char		 detail[300];

	snprintf(detail, sizeof(detail), "upstream %s answered %d to %s",
	    req->up->name, d->status, what);
	switch (d->status) {
	case 401:
	case 403:
		req_fail(req, ERR_UPSTREAM_AUTH, detail);
		return;
	case 404:
		req_fail(req, on404, detail);
		return;
	case 429:
		headers_init(&h);
		if (ra != NULL && *ra != '\0')
			headers_add(&h, "Retry-After", 11, ra, strlen(ra));
		req_fail_with(req, ERR_TOO_MANY_REQUESTS, detail, &h);
		headers_clear(&h);
		return;
	default:
		req_fail(req, ERR_UPSTREAM, detail);
	}
}

/* The fetch failed: let it go, then tell the owner. */
static void
docfetch_failed(struct docfetch *d, enum pc_err err, const char *detail)
{
	docfetch_stop(d);
	d->done(d->owner, err, detail);
}

/* --- struct proxy_ops --- */

static int
docfetch_head(void *arg, struct hframe_msg *rm)
{
	struct docfetch	*d = arg;
	size_t		 i;

	d->status = rm->status;
	/* Bounded: limits.upstream_header_bytes and _count. */
	for (i = 0; i < rm->hdrs.n; i++)
		headers_add(&d->head, rm->hdrs.v[i].name, rm->hdrs.v[i].nlen,
		    rm->hdrs.v[i].value, rm->hdrs.v[i].vlen);
	if (rm->status / 100 == 2 && rm->has_length && rm->length > d->max) {
		docfetch_failed(d, ERR_UPSTREAM_PROTO, d->too_large);
		return (-1);
	}
	return (0);
}

/* Keep n more bytes: 0 (*drop: an error body's excess), -1 too large. */
static int
docfetch_keep(struct docfetch *d, size_t n, int *drop)
{
	size_t	have = evbuffer_get_length(d->body);

	*drop = 0;
	if (d->status / 100 != 2) {
		*drop = have + n > DOCFETCH_ERRBODY_MAX;
		return (0);
	}
	if (have + n > d->max) {
		docfetch_failed(d, ERR_UPSTREAM_PROTO, d->too_large);
		return (-1);
	}
	return (0);
}

static int
docfetch_body(void *arg, struct evbuffer *in, size_t n)
{
	struct docfetch	*d = arg;
	int		 drop;

	if (docfetch_keep(d, n, &drop) == -1)
		return (-1);
	if (drop)
		evbuffer_drain(in, n);
	else
		evbuffer_remove_buffer(in, d->body, n);
	return (0);
}

static int
docfetch_body_data(void *arg, const char *data, size_t n)
{
	struct docfetch	*d = arg;
	int		 drop;

	if (docfetch_keep(d, n, &drop) == -1)
		return (-1);
	if (!drop)
		evbuffer_add(d->body, data, n);
	return (0);
}

static void
docfetch_done(void *arg)
{
	struct docfetch	*d = arg;

	docfetch_stop(d);
	d->done(d->owner, ERR_NONE, NULL);
}

static void
docfetch_fail(void *arg, enum pc_err err, const char *detail)
{
	docfetch_failed(arg, err, detail);
}

static const struct proxy_ops docfetch_ops = {
	docfetch_head,
	docfetch_body,
	docfetch_body_data,
	docfetch_done,
	docfetch_fail
};
