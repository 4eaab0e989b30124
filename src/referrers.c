/*
 * referrers.c: the OCI 1.1 referrers API (distribution spec 1.1,
 * "Listing Referrers"), GET /v2/<name>/referrers/<digest>, also in front
 * of an upstream that lacks it (Debian's registry 2.8 answers every such
 * request 404 "404 page not found", text/plain).
 *
 * Reading: the gateway asks the upstream's API with a client-less fetch
 * (docfetch.c, as taglist.c reads a tag list) and answers an image index
 * itself, so the artifactType filter is always applied here
 * (OCI-Filters-Applied); an answer the upstream pages (Link rel=next) is
 * read page by page and merged (rf_get_page).
 * A registry with the API never answers 404 (spec: "MUST NOT return a
 * 404"); so a 404 whose body is no OCI error (a router's "page not
 * found") or a 405 means the endpoint is missing, remembered per
 * upstream for limits.referrers_fallback, and the answer comes from the
 * referrers tag schema instead: the tag <alg>-<hex> holding an image
 * index.  A 404 with an OCI error (MANIFEST_UNKNOWN, NAME_UNKNOWN) is a
 * registry that has the endpoint but not the subject, answered as the
 * spec wants it: 200 with an empty index.  With a cache on the upstream,
 * answers are kept in memory for cache.referrers_ttl (bounded by
 * cache.referrers_entries and, in bytes of their documents, by
 * cache.referrers_bytes: held parsed, an answer takes many times its
 * text, so the count alone let a few large ones take GiB).
 *
 * Pushing (a manifest with a `subject`, and the subject's referrers tag
 * kept when the upstream keeps none) is referrers_push.c's.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "referrers_int.h"

/* A GET of referrers: the request's UPSTREAM stage. */
struct rf_get {
	struct req		*req;
	struct docfetch		 doc;
	int			 from_tag;	/* reading the tag */
	int			 has_filter;
	char			 filter[RF_TYPE_MAX];
	char			*key;
	json_t			*merged;	/* the API's pages so far */
	size_t			 used;		/* their bytes */
	size_t			 pages;		/* read */
	char			 base[OCI_NAME_MAX + OCI_REF_MAX + 48];
	char			 cont[RF_LINK_MAX]; /* a client's go-on */
	int			 retired;
	struct reap_node	 reap;
};

static const struct req_stage_ops rf_get_stage_ops;

/* --- per-context state --- */

struct referrers *
rf_state(struct pc_ctx *ctx)
{
	struct referrers	*r;

	if ((r = ctx->referrers) != NULL)
		return (r);
	if ((r = calloc(1, sizeof(*r))) == NULL)
		fatal("calloc");
	TAILQ_INIT(&r->ups);
	TAILQ_INIT(&r->cache);
	TAILQ_INIT(&r->locks);
	TAILQ_INIT(&r->detached);
	ctx->referrers = r;
	return (r);
}

/* Free the state at shutdown (no request is left to use it). */
void
referrers_free(struct referrers *r)
{
	struct rf_up	*u;
	struct rf_entry	*e;

	if (r == NULL)
		return;
	rf_push_shutdown(r);	/* index updates of clients gone */
	while ((u = TAILQ_FIRST(&r->ups)) != NULL) {
		TAILQ_REMOVE(&r->ups, u, entry);
		free(u->name);
		free(u);
	}
	while ((e = TAILQ_FIRST(&r->cache)) != NULL) {
		TAILQ_REMOVE(&r->cache, e, entry);
		json_decref(e->manifests);
		free(e->key);
		free(e);
	}
	free(r);
}

static struct rf_up *
rf_up_get(struct pc_ctx *ctx, const struct config_upstream *up)
{
	struct referrers	*r = rf_state(ctx);
	struct rf_up		*u;

	TAILQ_FOREACH(u, &r->ups, entry)
		if (strcmp(u->name, up->name) == 0)
			return (u);
	if ((u = calloc(1, sizeof(*u))) == NULL ||
	    (u->name = strdup(up->name)) == NULL)
		fatal("calloc");
	TAILQ_INSERT_TAIL(&r->ups, u, entry);
	return (u);
}

/* Whether the upstream was found without the API recently enough. */
static int
rf_absent(struct req *req)
{
	return (rf_up_get(req->c->ctx, req->up)->absent_until > now_ms());
}

void
rf_set_absent(struct req *req, int absent)
{
	struct rf_up	*u = rf_up_get(req->c->ctx, req->up);

	if (absent && u->absent_until <= now_ms())
		log_info("%llu.%u referrers upstream=%s api=absent "
		    "fallback=tag_schema", (unsigned long long)req->c->id,
		    req->seq, req->up->name);
	u->absent_until = absent ? now_ms() +
	    (uint64_t)req->conf->referrers_fallback_ms : 0;
}

/* The key of a subject: upstream, upstream repository, digest. */
char *
rf_key(struct req *req, const char *subject)
{
	char	*key;

	if (asprintf(&key, "%s\n%s\n%s", req->up->name, req->upname,
	    subject) == -1)
		fatal("asprintf");
	return (key);
}

/* --- the answer cache --- */

static int
rf_caching(struct req *req)
{
	return (req->conf->cache != NULL && req->up->cache &&
	    req->conf->cache->referrers_ttl_ms > 0);
}

static void
rf_entry_free(struct referrers *r, struct rf_entry *e)
{
	TAILQ_REMOVE(&r->cache, e, entry);
	r->ncache--;
	r->cache_bytes -= e->bytes;
	json_decref(e->manifests);
	free(e->key);
	free(e);
}

static struct rf_entry *
rf_cache_find(struct pc_ctx *ctx, const char *key)
{
	struct referrers	*r = rf_state(ctx);
	struct rf_entry		*e;

	/* Linear: at most cache.referrers_entries, short keys. */
	TAILQ_FOREACH(e, &r->cache, entry)
		if (strcmp(e->key, key) == 0)
			return (e);
	return (NULL);
}

/* A push through this gateway added to the subject: drop its answer. */
void
rf_cache_drop(struct pc_ctx *ctx, const char *key)
{
	struct rf_entry	*e;

	if ((e = rf_cache_find(ctx, key)) != NULL)
		rf_entry_free(ctx->referrers, e);
}

static void
rf_cache_put(struct req *req, const char *key, json_t *manifests,
    size_t bytes)
{
	struct referrers	*r = rf_state(req->c->ctx);
	struct rf_entry		*e;
	size_t			 max = req->conf->cache->referrers_bytes;

	rf_cache_drop(req->c->ctx, key);
	if (bytes > max)
		return;
	while (r->ncache > 0 &&
	    (r->ncache >= req->conf->cache->referrers_entries ||
	    r->cache_bytes + bytes > max))
		rf_entry_free(r, TAILQ_LAST(&r->cache, rf_entries));
	if ((e = calloc(1, sizeof(*e))) == NULL ||
	    (e->key = strdup(key)) == NULL)
		fatal("calloc");
	e->manifests = json_incref(manifests);
	e->bytes = bytes;
	r->cache_bytes += bytes;
	e->expires = now_ms() + (uint64_t)req->conf->cache->referrers_ttl_ms;
	TAILQ_INSERT_HEAD(&r->cache, e, entry);
	r->ncache++;
}

/*
 * Whether a link's parameters (`; rel="next"; ...`, RFC 8288 3) hold
 * the relation type "next".  Unusually long parameters are no link the
 * gateway follows.
 */
static int
rf_rel_next(const char *p, size_t len)
{
	char	 buf[256], *last, *param, *v, *t, *tl;

	if (len >= sizeof(buf))
		return (0);
	memcpy(buf, p, len);
	buf[len] = '\0';
	for (param = strtok_r(buf, ";", &last); param != NULL;
	    param = strtok_r(NULL, ";", &last)) {
		param += strspn(param, " \t");
		if (strncasecmp(param, "rel", 3) != 0)
			continue;
		v = param + 3 + strspn(param + 3, " \t");
		if (*v++ != '=')
			continue;
		/* One type, or a quoted list of them separated by spaces. */
		for (t = strtok_r(v, " \t\"", &tl); t != NULL;
		    t = strtok_r(NULL, " \t\"", &tl))
			if (strcasecmp(t, "next") == 0)
				return (1);
	}
	return (0);
}

/*
 * The target of an answer's rel="next" link (of any Link field; links in
 * one field are separated by commas outside quotes) into out: 1, 0 when
 * there is none, -1 when it is too long to keep.
 */
static int
rf_next_link(const struct headers *h, char *out, size_t len)
{
	const char	*p, *gt, *q;
	size_t		 i, tlen;
	int		 quoted;

	out[0] = '\0';
	for (i = 0; i < h->n; i++) {
		if (strcasecmp(h->v[i].name, "Link") != 0)
			continue;
		for (p = h->v[i].value;;) {
			p += strspn(p, " \t,");
			if (*p != '<' || (gt = strchr(p, '>')) == NULL)
				break;
			for (q = gt + 1, quoted = 0; *q != '\0' &&
			    (quoted || *q != ','); q++)
				if (*q == '"')
					quoted = !quoted;
			if (rf_rel_next(gt + 1, q - gt - 1)) {
				tlen = gt - p - 1;
				if (tlen >= len)
					return (-1);
				memcpy(out, p + 1, tlen);
				out[tlen] = '\0';
				return (1);
			}
			p = q;
		}
	}
	return (0);
}

/*
 * The referrers tag of a digest (spec, "Referrers Tag Schema"): the
 * algorithm and the encoded part joined by '-', cut to 32 and 64
 * characters.
 */
void
rf_tag(const char *digest, char *out, size_t len)
{
	const char	*colon = strchr(digest, ':');
	int		 alen = colon != NULL ? (int)(colon - digest) : 0;

	if (alen > 32)
		alen = 32;
	snprintf(out, len, "%.*s-%.64s", alen, digest,
	    colon != NULL ? colon + 1 : digest);
}

/* The descriptors of an image index, or NULL when it is none. */
json_t *
rf_index_manifests(json_t *doc)
{
	json_t	*m;

	if (!json_is_object(doc) ||
	    (m = json_object_get(doc, "manifests")) == NULL)
		return (NULL);
	if (json_is_null(m))
		return (json_array());
	return (json_is_array(m) ? json_incref(m) : NULL);
}

/* --- GET /v2/<name>/referrers/<digest> --- */

/*
 * Answer an image index of the descriptors whose artifactType matches
 * the filter (all without one).  Descriptors without a string mediaType
 * and digest are left out: no client can use them.
 */
static void
rf_answer(struct req *req, json_t *manifests, int has_filter,
    const char *filter, const char *link)
{
	struct headers	 h;
	json_t		*out, *doc, *m;
	const char	*at;
	char		*body;
	size_t		 i;

	if ((out = json_array()) == NULL)
		fatal("json_array");
	json_array_foreach(manifests, i, m) {
		if (!json_is_object(m) ||
		    !json_is_string(json_object_get(m, "mediaType")) ||
		    !json_is_string(json_object_get(m, "digest")))
			continue;
		at = json_string_value(json_object_get(m, "artifactType"));
		if (has_filter && (at == NULL || strcmp(at, filter) != 0))
			continue;
		json_array_append(out, m);
	}
	doc = json_pack("{s:i, s:s, s:o}", "schemaVersion", 2, "mediaType",
	    RF_INDEX_MT, "manifests", out);
	if (doc == NULL || (body = json_dumps(doc, JSON_COMPACT)) == NULL)
		fatal("json_dumps");
	json_decref(doc);
	headers_init(&h);
	if (has_filter)
		headers_add(&h, "OCI-Filters-Applied", 19, "artifactType", 12);
	if (link != NULL)
		headers_add(&h, "Link", 4, link, strlen(link));
	log_debug("%llu.%u referrers answer count=%zu filtered=%d more=%d",
	    (unsigned long long)req->c->id, req->seq, json_array_size(out),
	    has_filter, link != NULL);
	req_respond_simple(req, 200, RF_INDEX_MT, body, &h);
	headers_clear(&h);
	free(body);
}

static void
rf_get_destroy(void *arg)
{
	struct rf_get	*g = arg;

	docfetch_clear(&g->doc);
	json_decref(g->merged);
	free(g->key);
	free(g);
}

static void
rf_get_free(void *arg)
{
	struct rf_get	*g = arg;

	if (g == NULL || g->retired)
		return;
	g->retired = 1;
	docfetch_stop(&g->doc);
	conn_reap_later(g->req->c->ctx, &g->reap, rf_get_destroy, g);
}

/*
 * Answer from descriptors found (kept for the cache first: a whole
 * list, not one that goes on or went on from a client's Link), read from
 * documents of `bytes`; `link` non-NULL says where the list goes on.
 */
static void
rf_get_answer(struct rf_get *g, json_t *manifests, size_t bytes,
    const char *link)
{
	struct req	*req = g->req;

	if (rf_caching(req) && link == NULL && g->cont[0] == '\0')
		rf_cache_put(req, g->key, manifests, bytes);
	rf_answer(req, manifests, g->has_filter, g->filter, link);
	json_decref(manifests);
}

/* Whether a query holds URL characters only (RFC 3986 3.4). */
static int
rf_query_ok(const char *q, size_t len)
{
	size_t	i;

	for (i = 0; i < len; i++)
		if (!isalnum((unsigned char)q[i]) &&
		    strchr("-._~%!$&'()*+,;=:@/?", q[i]) == NULL)
			return (0);
	return (1);
}

/*
 * The upstream path of a next page the gateway may follow, into out:
 * on the same upstream (a path, a query alone, or an absolute URL of
 * the upstream's own scheme, host and port) and of the same list (the
 * path exactly the first page's; a query of URL characters, its
 * fragment dropped).  -1 otherwise: on an upstream's word the gateway
 * goes nowhere else, not even to another repository of the upstream,
 * whose credentials it holds.
 */
static int
rf_next_path(struct rf_get *g, const char *target, char *out, size_t len)
{
	const struct config_upstream	*up = g->req->up;
	struct url			 u;
	const char			*rest, *q;
	size_t				 plen, qlen, blen = strlen(g->base);
	int				 n;

	if (strncasecmp(target, "http://", 7) == 0 ||
	    strncasecmp(target, "https://", 8) == 0) {
		if (url_parse(target, &u) == -1 ||
		    strcmp(u.scheme, up->u.scheme) != 0 ||
		    strcmp(u.host, up->u.host) != 0 || u.port != up->u.port)
			return (-1);
		rest = target + strlen(target) - strlen(u.path);
	} else if ((target[0] == '/' && target[1] != '/') || target[0] == '?')
		rest = target;
	else
		return (-1);
	plen = strcspn(rest, "?#");
	if (rest[0] != '?' && (plen != blen || strncmp(rest, g->base,
	    blen) != 0))
		return (-1);
	q = rest + plen;
	qlen = *q == '?' ? strcspn(q, "#") : 0;
	if (qlen > 0 && !rf_query_ok(q + 1, qlen - 1))
		return (-1);
	n = snprintf(out, len, "%s%.*s", g->base, (int)qlen, q);
	return (n < 0 || (size_t)n >= len ? -1 : 0);
}

/*
 * The Link of an answer cut at limits.referrers_pages: the gateway's own
 * path, with the upstream's next query (the client's request for it
 * goes on from there: referrers_start), the filter and ns= routing.
 * The upstream's own ns= and artifactType= are left out: the first of a
 * query wins, so they would pick another upstream or filter for the
 * client's next request.  NULL when it does not fit or nothing is left
 * to go on from (then the answer fails).
 */
static char *
rf_go_on_link(struct rf_get *g, const char *next)
{
	struct req	*req = g->req;
	struct evbuffer	*b;
	const char	*q = strchr(next, '?');
	char		 enc[RF_TYPE_MAX * 3 + 1], *link = NULL;
	char		 q1[RF_LINK_MAX + 256], q2[RF_LINK_MAX + 256];
	size_t		 len;
	int		 n;

	if (q == NULL || (n = url_query_strip(q + 1, strlen(q + 1), "ns", q1,
	    sizeof(q1))) == -1 || url_query_strip(q1, n, "artifactType", q2,
	    sizeof(q2)) <= 0)
		return (NULL);	/* nothing to go on from */
	if ((b = evbuffer_new()) == NULL)
		fatal("evbuffer_new");
	evbuffer_add_printf(b, "</v2/%s/referrers/%s?%s", req->route.name,
	    req->route.ref, q2);
	if (g->has_filter && url_pct_encode(g->filter, enc,
	    sizeof(enc)) >= 0)
		evbuffer_add_printf(b, "&artifactType=%s", enc);
	if (req->ns[0] != '\0' && url_pct_encode(req->ns, enc,
	    sizeof(enc)) >= 0)
		evbuffer_add_printf(b, "&ns=%s", enc);
	evbuffer_add_printf(b, ">; rel=\"next\"");
	if ((len = evbuffer_get_length(b)) < RF_LINK_MAX * 2) {
		if ((link = malloc(len + 1)) == NULL)
			fatal("malloc");
		evbuffer_remove(b, link, len);
		link[len] = '\0';
	}
	evbuffer_free(b);
	return (link);
}

static void	rf_get_send(struct rf_get *, const char *, const char *,
		    size_t);

/*
 * A page of the API's answer: merged with those before it; the next
 * one read while the upstream's Link says more follow (only on its own
 * path: rf_next_path), at most limits.referrers_pages, all of them
 * within limits.manifest_bytes.  Past the pages the answer ends with a
 * Link of the gateway's own.
 */
static void
rf_get_page(struct rf_get *g, json_t *m, size_t len)
{
	struct req	*req = g->req;
	char		 path[RF_LINK_MAX + 256], next[RF_LINK_MAX];
	char		 scope[OCI_NAME_MAX + 48], *link;
	int		 has;

	if (g->merged == NULL)
		g->merged = json_incref(m);
	else if (json_array_extend(g->merged, m) == -1)
		fatal("json_array_extend");
	json_decref(m);
	g->used += len;
	g->pages++;
	if ((has = rf_next_link(&g->doc.head, next, sizeof(next))) == -1 ||
	    (has == 1 && rf_next_path(g, next, path, sizeof(path)) == -1)) {
		/* Dropped: what was read is answered. */
		log_warn("%llu.%u referrers upstream=%s next_link=dropped "
		    "pages=%zu reason=\"%s\"", (unsigned long long)req->c->id,
		    req->seq, req->up->name, g->pages, has == -1 ?
		    "too long" : "not the same upstream path");
		has = 0;
	}
	if (has == 0) {
		m = g->merged;
		g->merged = NULL;
		rf_get_answer(g, m, g->used, NULL);
		return;
	}
	if (g->pages >= req->conf->referrers_pages) {
		log_info("%llu.%u referrers bound pages=%zu count=%zu",
		    (unsigned long long)req->c->id, req->seq, g->pages,
		    json_array_size(g->merged));
		if ((link = rf_go_on_link(g, path)) == NULL) {
			req_fail(req, ERR_UPSTREAM_PROTO, "upstream referrers "
			    "answer has more than limits.referrers_pages "
			    "pages");
			return;
		}
		m = g->merged;
		g->merged = NULL;
		rf_get_answer(g, m, g->used, link);
		free(link);
		return;
	}
	snprintf(scope, sizeof(scope), "repository:%s:pull", req->upname);
	rf_get_send(g, path, scope, req->conf->manifest_bytes - g->used);
}

static void	rf_get_done(void *, enum pc_err, const char *);

/* GET a document of the upstream (at most max bytes) for the answer. */
static void
rf_get_send(struct rf_get *g, const char *path, const char *scope,
    size_t max)
{
	struct req	*req = g->req;
	char		 logid[48];

	snprintf(logid, sizeof(logid), "%llu.%u",
	    (unsigned long long)req->c->id, req->seq);
	docfetch_send(&g->doc, req->c->ctx, req->conf, req->up, logid,
	    HTTP_GET, path, scope, "Accept", RF_INDEX_MT, NULL, max,
	    "upstream referrers document larger than limits.manifest_bytes");
}

/* Read the subject's referrers tag (the upstream lacks the API). */
static void
rf_get_tag(struct rf_get *g)
{
	struct req	*req = g->req;
	char		 path[OCI_NAME_MAX + RF_TAG_MAX + 32];
	char		 scope[OCI_NAME_MAX + 48], tag[RF_TAG_MAX];

	g->from_tag = 1;
	rf_tag(req->route.ref, tag, sizeof(tag));
	snprintf(path, sizeof(path), "/v2/%s/manifests/%s", req->upname, tag);
	snprintf(scope, sizeof(scope), "repository:%s:pull", req->upname);
	rf_get_send(g, path, scope, req->conf->manifest_bytes);
}

static void
rf_get_done(void *arg, enum pc_err err, const char *detail)
{
	struct rf_get	*g = arg;
	struct req	*req = g->req;
	json_t		*doc, *m;
	json_error_t	 jerr;
	const char	*text;
	char		 code[64];
	size_t		 len;

	if (err != ERR_NONE) {
		req_fail(req, err, detail);
		return;
	}
	text = docfetch_text(&g->doc, &len);
	if (g->doc.status == 200) {
		doc = json_loadb(text, len, 0, &jerr);
		m = rf_index_manifests(doc);
		json_decref(doc);
		if (m == NULL) {
			req_fail(req, ERR_UPSTREAM_PROTO, g->from_tag ?
			    "the referrers tag holds no image index" :
			    "upstream referrers answer is no image index");
			return;
		}
		if (!g->from_tag) {
			rf_set_absent(req, 0);
			rf_get_page(g, m, len);
			return;
		}
		rf_get_answer(g, m, len, NULL);
		return;
	}
	if (g->doc.status == 404 && g->from_tag) {
		/* No tag: nothing refers to the subject (yet). */
		rf_get_answer(g, json_array(), 0, NULL);
		return;
	}
	/*
	 * No such endpoint: the tag schema stands in for it.  Only a
	 * request without a follow-up query may say so: the client chose
	 * that query, and it must not switch every client of the upstream
	 * to the tag schema by making the upstream answer 404.
	 */
	if (!g->from_tag && g->pages == 0 && g->cont[0] == '\0' &&
	    (g->doc.status == 405 || (g->doc.status == 404 &&
	    errs_parse_code(text, len, code, sizeof(code)) == -1))) {
		rf_set_absent(req, 1);
		rf_get_tag(g);
		return;
	}
	if (g->doc.status == 404 && g->pages == 0) {
		/* The API, without the subject: spec 1.1 says 200, empty. */
		rf_get_answer(g, json_array(), 0, NULL);
		return;
	}
	docfetch_fail_status(req, &g->doc, g->from_tag ?
	    "the referrers tag read" : "a referrers request", ERR_UPSTREAM);
}

/* Start the referrers stage for a routed GET or HEAD of referrers. */
void
referrers_start(struct req *req)
{
	struct rf_get	*g;
	struct rf_entry	*e;
	char		 path[sizeof(g->base) + RF_LINK_MAX];
	char		 scope[OCI_NAME_MAX + 48], q[RF_LINK_MAX];
	int		 n;

	if ((g = calloc(1, sizeof(*g))) == NULL)
		fatal("calloc");
	g->req = req;
	docfetch_init(&g->doc, rf_get_done, g);
	g->key = rf_key(req, req->route.ref);
	req_stage_set(req, &rf_get_stage_ops, g);
	if (req->query != NULL && url_query_get(req->query,
	    strlen(req->query), "artifactType", g->filter,
	    sizeof(g->filter)) == 0 && g->filter[0] != '\0')
		g->has_filter = 1;
	snprintf(g->base, sizeof(g->base), "/v2/%s/referrers/%s", req->upname,
	    req->route.ref);
	/*
	 * The rest of the query is where a list cut at
	 * limits.referrers_pages goes on (the Link of rf_go_on_link): the
	 * upstream's own next query, asked of its API as it is.
	 */
	if (req->query != NULL && ((n = url_query_strip(req->query,
	    strlen(req->query), "artifactType", q, sizeof(q))) == -1 ||
	    url_query_strip(q, n, "ns", g->cont, sizeof(g->cont)) == -1 ||
	    !rf_query_ok(g->cont, strlen(g->cont)))) {
		g->cont[0] = '\0';
		req_fail(req, ERR_BAD_REQUEST, "referrers query too long or "
		    "not a URL query");
		return;
	}
	if (g->cont[0] == '\0' && rf_caching(req) &&
	    (e = rf_cache_find(req->c->ctx, g->key)) != NULL) {
		if (e->expires > now_ms()) {
			log_debug("%llu.%u referrers cache hit",
			    (unsigned long long)req->c->id, req->seq);
			TAILQ_REMOVE(&req->c->ctx->referrers->cache, e, entry);
			TAILQ_INSERT_HEAD(&req->c->ctx->referrers->cache, e,
			    entry);
			rf_answer(req, e->manifests, g->has_filter,
			    g->filter, NULL);
			return;
		}
		rf_entry_free(req->c->ctx->referrers, e);
	}
	if (rf_absent(req)) {
		/* The tag holds the whole list: nothing to go on from. */
		g->cont[0] = '\0';
		rf_get_tag(g);
		return;
	}
	/* Unfiltered: the filter is applied here, whatever the upstream. */
	snprintf(path, sizeof(path), "%s%s%s", g->base, g->cont[0] != '\0' ?
	    "?" : "", g->cont);
	snprintf(scope, sizeof(scope), "repository:%s:pull", req->upname);
	rf_get_send(g, path, scope, req->conf->manifest_bytes);
}

static const struct req_stage_ops rf_get_stage_ops = {
	"referrers",
	NULL,
	NULL,
	rf_get_free
};

