/*
 * catalog.c: GET and HEAD /v2/_catalog, answered by the gateway itself
 * with only the repositories the caller may pull (the policy's `pull` on
 * each name, the upstream's name; that the caller may list at all, the
 * `catalog` action, is decided before this runs).
 *
 * The upstream's own pagination cannot be relayed: a page of n names
 * filtered is fewer than n, and its Link would point past names the
 * client never saw.  So the gateway reads the upstream's catalog itself,
 * page after page (n = limits.catalog_names, last = the last name it
 * saw), keeps the allowed names after the client's `last`, and answers
 * at most the client's n of them, in the upstream's (lexical) order, with
 * a Link to the next page while more allowed names may follow.  Names
 * that would not reach this repository through the gateway (their first
 * component is an upstream's routing prefix) are left out.
 *
 * Bounded: one upstream page (limits.catalog_page_bytes) and the answer
 * (n names) in memory, at most limits.catalog_pages upstream pages per
 * request; at that bound the names found so far are answered with a Link
 * from the last name scanned, so the client continues where the scan
 * stopped.  That name may be one the caller may not pull: the Link
 * carries it sealed (cat_seal), never in clear.
 *
 * The catalog is the request's UPSTREAM stage (cat_stage_ops); its fetch
 * is a client-less one (docfetch.c), retired with the stage.
 */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "docfetch.h"
#include "policy.h"

struct catalog {
	struct req		*req;
	struct docfetch		 doc;		/* the page being read */
	struct evbuffer		*out;		/* names answered, JSON */
	size_t			 want;		/* names to answer */
	size_t			 nout;
	size_t			 pages;		/* upstream pages read */
	char			 cursor[OCI_NAME_MAX + 1]; /* last scanned */
	char			 last_out[OCI_NAME_MAX + 1];
	int			 retired;
	struct reap_node	 reap;
};

static void	cat_fetch_done(void *, enum pc_err, const char *);
static const struct req_stage_ops cat_stage_ops;
static void	cat_fetch(struct catalog *);

/*
 * A sealed scan position: CAT_SEAL_MARK, then in hex a nonce, the name
 * NUL-padded to OCI_NAME_MAX bytes encrypted with AES-256-GCM under a
 * key of this process, and the tag.  The mark is no name's first byte,
 * so a `last` is either a name or a sealed position; the padding hides
 * the name's length; the tag keeps a client from making one up.  One
 * from before a restart no longer opens (400: the client starts over).
 */
#define CAT_SEAL_MARK	'~'
#define CAT_NONCE	12
#define CAT_TAG		16
#define CAT_SEAL_RAW	(CAT_NONCE + OCI_NAME_MAX + CAT_TAG)
#define CAT_SEALED_LEN	(1 + 2 * CAT_SEAL_RAW)

static unsigned char	cat_key[32];
static int		cat_keyed;

/* Seal a name into out (CAT_SEALED_LEN + 1 bytes).  0 or -1. */
static int
cat_seal(const char *name, char *out, size_t len)
{
	static const char	 hex[] = "0123456789abcdef";
	unsigned char		 pt[OCI_NAME_MAX], raw[CAT_SEAL_RAW];
	EVP_CIPHER_CTX		*cx;
	size_t			 i, nlen = strlen(name);
	int			 n, ok;

	if (len < CAT_SEALED_LEN + 1 || nlen > OCI_NAME_MAX)
		return (-1);
	if (!cat_keyed) {
		arc4random_buf(cat_key, sizeof(cat_key));
		cat_keyed = 1;
	}
	memset(pt, 0, sizeof(pt));
	memcpy(pt, name, nlen);
	arc4random_buf(raw, CAT_NONCE);
	if ((cx = EVP_CIPHER_CTX_new()) == NULL)
		fatal("EVP_CIPHER_CTX_new");
	ok = EVP_EncryptInit_ex(cx, EVP_aes_256_gcm(), NULL, cat_key,
	    raw) == 1 && EVP_EncryptUpdate(cx, raw + CAT_NONCE, &n, pt,
	    sizeof(pt)) == 1 && n == OCI_NAME_MAX &&
	    EVP_EncryptFinal_ex(cx, raw + CAT_NONCE + n, &n) == 1 &&
	    EVP_CIPHER_CTX_ctrl(cx, EVP_CTRL_GCM_GET_TAG, CAT_TAG,
	    raw + CAT_NONCE + OCI_NAME_MAX) == 1;
	EVP_CIPHER_CTX_free(cx);
	if (!ok)
		return (-1);
	out[0] = CAT_SEAL_MARK;
	for (i = 0; i < CAT_SEAL_RAW; i++) {
		out[1 + 2 * i] = hex[raw[i] >> 4];
		out[2 + 2 * i] = hex[raw[i] & 0xf];
	}
	out[CAT_SEALED_LEN] = '\0';
	return (0);
}

static int
cat_hexval(int c)
{
	if (c >= '0' && c <= '9')
		return (c - '0');
	if (c >= 'a' && c <= 'f')
		return (c - 'a' + 10);
	return (-1);
}

/* Open a sealed position into name (OCI_NAME_MAX + 1 bytes).  0 or -1. */
static int
cat_unseal(const char *s, char *name)
{
	unsigned char	 raw[CAT_SEAL_RAW], pt[OCI_NAME_MAX];
	EVP_CIPHER_CTX	*cx;
	size_t		 i, nlen;
	int		 hi, lo, n, ok;

	if (!cat_keyed || strlen(s) != CAT_SEALED_LEN || s[0] != CAT_SEAL_MARK)
		return (-1);
	for (i = 0; i < CAT_SEAL_RAW; i++) {
		if ((hi = cat_hexval((unsigned char)s[1 + 2 * i])) == -1 ||
		    (lo = cat_hexval((unsigned char)s[2 + 2 * i])) == -1)
			return (-1);
		raw[i] = hi << 4 | lo;
	}
	if ((cx = EVP_CIPHER_CTX_new()) == NULL)
		fatal("EVP_CIPHER_CTX_new");
	ok = EVP_DecryptInit_ex(cx, EVP_aes_256_gcm(), NULL, cat_key,
	    raw) == 1 && EVP_DecryptUpdate(cx, pt, &n, raw + CAT_NONCE,
	    OCI_NAME_MAX) == 1 && n == OCI_NAME_MAX &&
	    EVP_CIPHER_CTX_ctrl(cx, EVP_CTRL_GCM_SET_TAG, CAT_TAG,
	    raw + CAT_NONCE + OCI_NAME_MAX) == 1 &&
	    EVP_DecryptFinal_ex(cx, pt + n, &n) == 1;
	EVP_CIPHER_CTX_free(cx);
	if (!ok)
		return (-1);
	nlen = strnlen((char *)pt, sizeof(pt));
	if (!router_valid_name((char *)pt, nlen))
		return (-1);
	memcpy(name, pt, nlen);
	name[nlen] = '\0';
	return (0);
}

/* The reaper's half of cat_free(). */
static void
cat_destroy(void *arg)
{
	struct catalog	*cat = arg;

	docfetch_clear(&cat->doc);
	evbuffer_free(cat->out);
	free(cat);
}

/* Retire the stage: its fetch retired, its memory freed next turn. */
static void
cat_free(void *arg)
{
	struct catalog	*cat = arg;

	if (cat == NULL || cat->retired)
		return;
	cat->retired = 1;
	docfetch_stop(&cat->doc);
	conn_reap_later(cat->req->c->ctx, &cat->reap, cat_destroy, cat);
}

/*
 * The client's n: absent means limits.catalog_names; a larger one is cut
 * to it (the Link says where to go on).  -1 when it is not a number.
 */
static int
cat_parse_n(struct req *req, size_t *n)
{
	char		 v[32], *ep;
	unsigned long	 x;

	*n = req->conf->catalog_names;
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

/*
 * Whether a name of this upstream's catalog is listed: a client could
 * pull it under this name (its first component is no upstream's routing
 * prefix, which would send it elsewhere) and the policy lets the caller
 * pull it.
 */
static int
cat_allowed(struct req *req, const char *name)
{
	struct pol_result	 res;
	const char		*slash;

	if ((slash = strchr(name, '/')) != NULL &&
	    config_upstream_by_prefix(req->conf, name, slash - name) != NULL)
		return (0);
	return (policy_decide(req->conf->policy, &req->principal,
	    req->up->name, name, POL_PULL, &res));
}

/*
 * Answer with the names found; `next` non-NULL adds the Link from it,
 * sealed (cat_seal) unless it is the last name answered.
 */
static void
cat_answer(struct catalog *cat, const char *next)
{
	struct req	*req = cat->req;
	struct headers	 h;
	char		 enc[OCI_NAME_MAX * 3 + 1], ns[600], link[1400];
	char		 sealed[CAT_SEALED_LEN + 1];
	const char	*body;
	int		 n;

	headers_init(&h);
	if (next != NULL && strcmp(next, cat->last_out) != 0) {
		if (cat_seal(next, sealed, sizeof(sealed)) == -1) {
			headers_clear(&h);
			req_fail(req, ERR_INTERNAL, "catalog position");
			return;
		}
		next = sealed;
	}
	if (next != NULL && url_pct_encode(next, enc, sizeof(enc)) >= 0) {
		ns[0] = '\0';
		/* Keep ns= routing: the next page is of the same upstream. */
		if (req->ns[0] != '\0') {
			snprintf(ns, sizeof(ns), "&ns=");
			if (url_pct_encode(req->ns, ns + 4,
			    sizeof(ns) - 4) == -1)
				ns[0] = '\0';
		}
		n = snprintf(link, sizeof(link),
		    "</v2/_catalog?n=%zu&last=%s%s>; rel=\"next\"", cat->want,
		    enc, ns);
		if (n > 0 && (size_t)n < sizeof(link))
			headers_add(&h, "Link", 4, link, n);
	}
	evbuffer_add(cat->out, "]}", 3);	/* with the NUL */
	body = (const char *)evbuffer_pullup(cat->out, -1);
	log_debug("%llu.%u catalog answer names=%zu pages=%zu next=%s",
	    (unsigned long long)req->c->id, req->seq, cat->nout, cat->pages,
	    next != NULL ? "yes" : "no");
	req_respond_simple(req, 200, "application/json", body, &h);
	headers_clear(&h);		/* req and cat are retired */
}

/*
 * A page is read: take its allowed names after the cursor, then answer
 * or read the next.  The upstream lists names in lexical order; one that
 * is not after the cursor (a repeat, an upstream out of order) is
 * skipped, so the scan always moves on.
 */
static void
cat_page_done(struct catalog *cat)
{
	struct req	*req = cat->req;
	json_t		*doc, *repos, *v;
	json_error_t	 jerr;
	const char	*name, *text;
	size_t		 i, count, fresh = 0, len;
	int		 more_allowed = 0, end;
	int		 link = docfetch_field(&cat->doc, "Link") != NULL;

	text = docfetch_text(&cat->doc, &len);
	doc = json_loadb(text, len, 0, &jerr);
	if (doc == NULL || (repos = json_object_get(doc,
	    "repositories")) == NULL || (!json_is_array(repos) &&
	    !json_is_null(repos))) {
		json_decref(doc);
		req_fail(req, ERR_UPSTREAM_PROTO, "upstream catalog page is "
		    "not {\"repositories\": [...]}");
		return;
	}
	count = json_is_array(repos) ? json_array_size(repos) : 0;
	for (i = 0; i < count && !more_allowed; i++) {
		v = json_array_get(repos, i);
		if ((name = json_string_value(v)) == NULL ||
		    !router_valid_name(name, strlen(name)) ||
		    strcmp(name, cat->cursor) <= 0)
			continue;
		snprintf(cat->cursor, sizeof(cat->cursor), "%s", name);
		fresh++;
		if (!cat_allowed(req, name))
			continue;
		if (cat->nout == cat->want) {
			more_allowed = 1;	/* the Link is certain */
			break;
		}
		evbuffer_add_printf(cat->out, "%s\"%s\"", cat->nout > 0 ?
		    "," : "", name);
		cat->nout++;
		snprintf(cat->last_out, sizeof(cat->last_out), "%s", name);
	}
	json_decref(doc);
	end = fresh == 0 || (!link &&
	    count < req->conf->catalog_names);
	if (more_allowed || (cat->nout == cat->want && !end)) {
		cat_answer(cat, cat->last_out);
		return;
	}
	if (end) {
		cat_answer(cat, NULL);
		return;
	}
	if (cat->pages >= req->conf->catalog_pages) {
		/*
		 * The bound: answer what was found; the client goes on
		 * from the last name scanned, not the last answered, or
		 * it would scan the same names again.
		 */
		log_info("%llu.%u catalog bound pages=%zu names=%zu",
		    (unsigned long long)req->c->id, req->seq, cat->pages,
		    cat->nout);
		cat_answer(cat, cat->cursor);
		return;
	}
	cat_fetch(cat);
}

/* Read the next upstream page after the cursor. */
static void
cat_fetch(struct catalog *cat)
{
	struct req	*req = cat->req;
	char		 path[OCI_NAME_MAX * 3 + 64], enc[OCI_NAME_MAX * 3 + 1];
	char		 logid[48];

	cat->pages++;
	if (cat->cursor[0] != '\0' && url_pct_encode(cat->cursor, enc,
	    sizeof(enc)) >= 0)
		snprintf(path, sizeof(path), "/v2/_catalog?n=%zu&last=%s",
		    req->conf->catalog_names, enc);
	else
		snprintf(path, sizeof(path), "/v2/_catalog?n=%zu",
		    req->conf->catalog_names);
	snprintf(logid, sizeof(logid), "%llu.%u",
	    (unsigned long long)req->c->id, req->seq);
	docfetch_send(&cat->doc, req->c->ctx, req->conf, req->up, logid,
	    HTTP_GET, path, "registry:catalog:*", NULL, NULL, NULL,
	    req->conf->catalog_page_bytes, "upstream catalog page larger "
	    "than limits.catalog_page_bytes");
}

/* Start the catalog stage for a routed GET or HEAD of /v2/_catalog. */
void
catalog_start(struct req *req)
{
	struct catalog	*cat;
	char		 last[CAT_SEALED_LEN + 1];

	if ((cat = calloc(1, sizeof(*cat))) == NULL ||
	    (cat->out = evbuffer_new()) == NULL)
		fatal("catalog");
	cat->req = req;
	docfetch_init(&cat->doc, cat_fetch_done, cat);
	evbuffer_add_printf(cat->out, "{\"repositories\":[");
	req_stage_set(req, &cat_stage_ops, cat);
	if (cat_parse_n(req, &cat->want) == -1) {
		req_fail(req, ERR_BAD_REQUEST, "n must be a non-negative "
		    "integer");
		return;
	}
	if (req->query != NULL && url_query_get(req->query,
	    strlen(req->query), "last", last, sizeof(last)) == 0 &&
	    last[0] == CAT_SEAL_MARK) {
		if (cat_unseal(last, cat->cursor) == -1) {
			req_fail(req, ERR_BAD_REQUEST, "last is no position "
			    "this gateway gave");
			return;
		}
	} else if (req->query != NULL && last[0] != '\0') {
		if (!router_valid_name(last, strlen(last))) {
			req_fail(req, ERR_BAD_REQUEST, "last must be a "
			    "repository name");
			return;
		}
		snprintf(cat->cursor, sizeof(cat->cursor), "%s", last);
	}
	if (cat->want == 0) {
		cat_answer(cat, NULL);
		return;
	}
	cat_fetch(cat);
}

/* A page's answer (docfetch.c). */
static void
cat_fetch_done(void *arg, enum pc_err err, const char *detail)
{
	struct catalog	*cat = arg;

	if (err != ERR_NONE)
		req_fail(cat->req, err, detail);
	else if (cat->doc.status != 200)
		docfetch_fail_status(cat->req, &cat->doc, "a catalog request",
		    ERR_NOT_FOUND);
	else
		cat_page_done(cat);
}

/* --- the catalog as the request's UPSTREAM stage --- */

static const struct req_stage_ops cat_stage_ops = {
	"catalog",
	NULL,
	NULL,
	cat_free
};
