/*
 * taglist.c: GET and HEAD /v2/<name>/tags/list, paged by the gateway
 * itself (distribution spec, "Listing Tags"): `n` and `last` honoured,
 * tags in lexical order, a `Link: <...>; rel="next"` while more follow --
 * also in front of a registry that ignores `n` and `last` (Debian's
 * registry 2.8 answers every tag, in its own order).
 *
 * So the upstream's list is read whole, as the catalog reads its pages
 * (catalog.c): a client-less fetch (docfetch.c) per upstream page,
 * asking for n = limits.tag_list_names after the client's `last` (an
 * upstream that pages answers from there; one that does not answers
 * everything); an upstream Link is followed, at most
 * limits.tag_list_pages pages.  The tags after the client's `last` are
 * kept, sorted, and the first n answered.
 *
 * Bounded: one upstream page body (limits.tag_list_names tags of at most
 * 128 bytes, quoted, plus 4 KiB) and at most 2 * limits.tag_list_names
 * kept tags in memory; past that the smallest limits.tag_list_names are
 * kept and the answer ends with a Link, so the client goes on from the
 * last tag it got and every tag is listed once, in order.
 *
 * The list is the request's UPSTREAM stage (tl_stage_ops); its fetch is
 * retired with the stage.
 */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "docfetch.h"

struct taglist {
	struct req		*req;
	struct docfetch		 doc;		/* the page being read */
	char			**tags;		/* kept, after `cursor` */
	size_t			 ntags;
	size_t			 tagsz;		/* slots, up to 2 * cap */
	size_t			 cap;		/* limits.tag_list_names */
	size_t			 want;		/* tags to answer */
	size_t			 pages;		/* upstream pages read */
	size_t			 page_max;	/* bytes of one page */
	int			 more;		/* tags past the bound */
	char			 cursor[OCI_TAG_MAX + 1]; /* client's last */
	char			 scan[OCI_TAG_MAX + 1];	/* upstream's last */
	int			 retired;
	struct reap_node	 reap;
};

static const struct req_stage_ops tl_stage_ops;
static void	tl_fetch(struct taglist *);
static void	tl_fetch_done(void *, enum pc_err, const char *);

static void
tl_destroy(void *arg)
{
	struct taglist	*tl = arg;
	size_t		 i;

	for (i = 0; i < tl->ntags; i++)
		free(tl->tags[i]);
	free(tl->tags);
	docfetch_clear(&tl->doc);
	free(tl);
}

/* Retire the stage: its fetch retired, its memory freed next turn. */
static void
tl_free(void *arg)
{
	struct taglist	*tl = arg;

	if (tl == NULL || tl->retired)
		return;
	tl->retired = 1;
	docfetch_stop(&tl->doc);
	conn_reap_later(tl->req->c->ctx, &tl->reap, tl_destroy, tl);
}

static int
tl_cmp(const void *a, const void *b)
{
	return (strcmp(*(char *const *)a, *(char *const *)b));
}

/*
 * Sort the kept tags, drop repeats, and keep the smallest `cap`: what
 * goes past it is for a later page (tl->more).
 */
static void
tl_trim(struct taglist *tl)
{
	size_t	i, j;

	if (tl->ntags == 0)
		return;
	qsort(tl->tags, tl->ntags, sizeof(*tl->tags), tl_cmp);
	for (i = 1, j = 1; i < tl->ntags; i++) {
		if (strcmp(tl->tags[i], tl->tags[j - 1]) == 0)
			free(tl->tags[i]);
		else
			tl->tags[j++] = tl->tags[i];
	}
	tl->ntags = j;
	if (tl->ntags > tl->cap) {
		for (i = tl->cap; i < tl->ntags; i++)
			free(tl->tags[i]);
		tl->ntags = tl->cap;
		tl->more = 1;
	}
}

/* Answer the first `want` kept tags, with a Link when more follow. */
static void
tl_answer(struct taglist *tl)
{
	struct req	*req = tl->req;
	struct evbuffer	*out;
	struct headers	 h;
	char		 ns[600], link[1200];
	const char	*body;
	size_t		 i, k;
	int		 n;

	tl_trim(tl);
	k = tl->ntags < tl->want ? tl->ntags : tl->want;
	if ((out = evbuffer_new()) == NULL)
		fatal("evbuffer_new");
	/* Names and tags match their grammars: nothing to escape. */
	evbuffer_add_printf(out, "{\"name\":\"%s\",\"tags\":[",
	    req->route.name);
	for (i = 0; i < k; i++)
		evbuffer_add_printf(out, "%s\"%s\"", i > 0 ? "," : "",
		    tl->tags[i]);
	evbuffer_add(out, "]}", 3);		/* with the NUL */
	headers_init(&h);
	if (k > 0 && (tl->ntags > k || tl->more)) {
		ns[0] = '\0';
		/* Keep ns= routing: the next page is of the same upstream. */
		if (req->ns[0] != '\0') {
			snprintf(ns, sizeof(ns), "&ns=");
			if (url_pct_encode(req->ns, ns + 4,
			    sizeof(ns) - 4) == -1)
				ns[0] = '\0';
		}
		n = snprintf(link, sizeof(link),
		    "</v2/%s/tags/list?n=%zu&last=%s%s>; rel=\"next\"",
		    req->route.name, tl->want, tl->tags[k - 1], ns);
		if (n > 0 && (size_t)n < sizeof(link))
			headers_add(&h, "Link", 4, link, n);
	}
	body = (const char *)evbuffer_pullup(out, -1);
	log_debug("%llu.%u tags answer tags=%zu pages=%zu more=%d",
	    (unsigned long long)req->c->id, req->seq, k, tl->pages,
	    tl->ntags > k || tl->more);
	req_respond_simple(req, 200, "application/json", body, &h);
	headers_clear(&h);		/* req and tl are retired */
	evbuffer_free(out);
}

/* Room for more kept tags: doubled, never past 2 * cap (tl_trim). */
static void
tl_grow(struct taglist *tl)
{
	size_t	n = tl->tagsz > 0 ? tl->tagsz * 2 : 64;

	if (n > 2 * tl->cap)
		n = 2 * tl->cap;
	if (n <= tl->tagsz)
		fatalx("%s: %zu tags kept", __func__, tl->ntags);
	if ((tl->tags = reallocarray(tl->tags, n, sizeof(*tl->tags))) ==
	    NULL)
		fatal("reallocarray");
	tl->tagsz = n;
}

/*
 * A page is read: keep its tags after what the page was asked from,
 * then answer or read the next.  A page that brings nothing new ends
 * the walk, so an upstream repeating itself cannot hold it.
 */
static void
tl_page_done(struct taglist *tl)
{
	struct req	*req = tl->req;
	json_t		*doc, *tags, *v;
	json_error_t	 jerr;
	const char	*t, *text;
	char		 from[OCI_TAG_MAX + 1];
	size_t		 i, count, fresh = 0, len;
	int		 link = docfetch_field(&tl->doc, "Link") != NULL;

	text = docfetch_text(&tl->doc, &len);
	doc = json_loadb(text, len, 0, &jerr);
	if (doc == NULL || (tags = json_object_get(doc, "tags")) == NULL ||
	    (!json_is_array(tags) && !json_is_null(tags))) {
		json_decref(doc);
		req_fail(req, ERR_UPSTREAM_PROTO, "upstream tag list is not "
		    "{\"tags\": [...]}");
		return;
	}
	snprintf(from, sizeof(from), "%s", tl->scan);
	count = json_is_array(tags) ? json_array_size(tags) : 0;
	for (i = 0; i < count; i++) {
		v = json_array_get(tags, i);
		if ((t = json_string_value(v)) == NULL ||
		    !router_valid_tag(t, strlen(t)) ||
		    strcmp(t, from) <= 0)
			continue;
		fresh++;
		if (strcmp(t, tl->scan) > 0)
			snprintf(tl->scan, sizeof(tl->scan), "%s", t);
		if (tl->ntags == tl->tagsz)
			tl_grow(tl);
		if ((tl->tags[tl->ntags++] = strdup(t)) == NULL)
			fatal("strdup");
		if (tl->ntags == 2 * tl->cap)
			tl_trim(tl);
	}
	json_decref(doc);
	/*
	 * An upstream that pages lists in lexical order: once more than
	 * `want` are kept, the answer and its Link are certain.
	 */
	if (!link || fresh == 0 || tl->ntags > tl->want) {
		if (link && fresh > 0)
			tl->more = 1;
		tl_answer(tl);
		return;
	}
	if (tl->pages >= req->conf->tag_list_pages) {
		log_info("%llu.%u tags bound pages=%zu tags=%zu",
		    (unsigned long long)req->c->id, req->seq, tl->pages,
		    tl->ntags);
		tl->more = 1;
		tl_answer(tl);
		return;
	}
	tl_fetch(tl);
}

/* Read the next upstream page after the scan position. */
static void
tl_fetch(struct taglist *tl)
{
	struct req	*req = tl->req;
	char		 path[OCI_NAME_MAX + 16 + OCI_TAG_MAX + 64];
	char		 scope[OCI_NAME_MAX + 32], logid[48];

	tl->pages++;
	/* Names and tags are URL-safe by their grammars. */
	snprintf(path, sizeof(path), "/v2/%s/tags/list?n=%zu%s%s",
	    req->upname, tl->cap, tl->scan[0] != '\0' ? "&last=" : "",
	    tl->scan);
	snprintf(scope, sizeof(scope), "repository:%s:pull", req->upname);
	snprintf(logid, sizeof(logid), "%llu.%u",
	    (unsigned long long)req->c->id, req->seq);
	docfetch_send(&tl->doc, req->c->ctx, req->conf, req->up, logid,
	    HTTP_GET, path, scope, NULL, NULL, NULL, tl->page_max,
	    "upstream tag list larger than limits.tag_list_names allows");
}

/*
 * The client's n: absent means limits.tag_list_names; a larger one is
 * cut to it (the Link says where to go on).  -1 when not a number.
 */
static int
tl_parse_n(struct req *req, size_t *n)
{
	char		 v[32], *ep;
	unsigned long	 x;

	*n = req->conf->tag_list_names;
	if (req->query == NULL || url_query_get(req->query,
	    strlen(req->query), "n", v, sizeof(v)) == -1)
		return (0);
	if (v[0] < '0' || v[0] > '9')
		return (-1);
	x = strtoul(v, &ep, 10);
	if (*ep != '\0')
		return (-1);
	if (x < *n)
		*n = x;
	return (0);
}

/* Start the tag list stage for a routed GET or HEAD of tags/list. */
void
taglist_start(struct req *req)
{
	struct taglist	*tl;
	char		 last[OCI_TAG_MAX + 2];

	if ((tl = calloc(1, sizeof(*tl))) == NULL)
		fatal("taglist");
	tl->req = req;
	docfetch_init(&tl->doc, tl_fetch_done, tl);
	tl->cap = req->conf->tag_list_names;
	tl->page_max = tl->cap * (OCI_TAG_MAX + 3) + 4096;
	req_stage_set(req, &tl_stage_ops, tl);
	if (tl_parse_n(req, &tl->want) == -1) {
		req_fail(req, ERR_BAD_REQUEST, "n must be a non-negative "
		    "integer");
		return;
	}
	if (req->query != NULL && url_query_get(req->query,
	    strlen(req->query), "last", last, sizeof(last)) == 0 &&
	    last[0] != '\0') {
		if (!router_valid_tag(last, strlen(last))) {
			req_fail(req, ERR_BAD_REQUEST, "last must be a tag");
			return;
		}
		snprintf(tl->cursor, sizeof(tl->cursor), "%s", last);
		snprintf(tl->scan, sizeof(tl->scan), "%s", last);
	}
	if (tl->want == 0) {
		tl_answer(tl);
		return;
	}
	tl_fetch(tl);
}

/* A page's answer (docfetch.c). */
static void
tl_fetch_done(void *arg, enum pc_err err, const char *detail)
{
	struct taglist	*tl = arg;

	if (err != ERR_NONE)
		req_fail(tl->req, err, detail);
	else if (tl->doc.status != 200)
		docfetch_fail_status(tl->req, &tl->doc, "a tag list request",
		    ERR_NAME_UNKNOWN);
	else
		tl_page_done(tl);
}

/* --- the list as the request's UPSTREAM stage --- */

static const struct req_stage_ops tl_stage_ops = {
	"taglist",
	NULL,
	NULL,
	tl_free
};
