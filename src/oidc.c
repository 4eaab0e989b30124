/*
 * oidc.c: the keys of the configured OpenID Connect issuers.  For each
 * issuer it fetches the discovery document (<issuer>/.well-known/openid-
 * configuration) and then the JWKS it names, through the gateway's one
 * HTTP client (proxy_fetch_url), at start and after a reload, again every
 * `refresh` (with jitter), and when a token names a kid the keys lack
 * (oidc_unknown_kid: at most once per min_refresh_interval, one fetch
 * however many requests ask, each told when it ends).
 *
 * The IdP is a peer like an upstream, hostile until proven otherwise:
 * every document is bounded (max_discovery_bytes, max_jwks_bytes,
 * max_keys) before it is held; the discovery document's issuer must equal
 * the configured one exactly (OIDC Discovery 4.3), or another issuer's
 * keys could be taken for this one's; jwks_uri must be https (http only
 * at a numeric loopback address, when the issuer itself is a loopback
 * http one), and unless it is the issuer's own origin or in jwks_hosts
 * it may only be dialled at a public address (upstream.c checks the
 * resolved address, as for a redirect);
 * redirects are not followed.
 *
 * Guarantees: a failed fetch keeps the keys held before (logged, counted,
 * retried after min_refresh_interval, doubling up to refresh); a
 * successful one publishes a new reference-counted key set, so a request
 * verifying with the old one is never left with freed keys.  Verifying
 * tokens with these keys is the identity stage's, not this file's.
 */
#include <arpa/inet.h>

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "jwk.h"
#include "netaddr.h"
#include "oidc.h"
#include "portcullis.h"

#define OIDC_WELL_KNOWN		"/.well-known/openid-configuration"
#define OIDC_ERROR_MAX		256

enum oidc_step { OIDC_IDLE, OIDC_SCHEDULED, OIDC_DISCOVERY, OIDC_JWKS };

struct oidc_wait {
	TAILQ_ENTRY(oidc_wait)	 entry;
	struct oidc_issuer	*is;
	unsigned		 gen;		/* the fetch it waits for */
	oidc_wait_cb		 cb;
	void			*arg;
};

struct oidc_issuer {
	TAILQ_ENTRY(oidc_issuer)	 entry;
	struct pc_ctx			*ctx;
	struct config			*conf;	/* holds cf */
	const struct config_oidc_issuer	*cf;
	struct config			*fetch_conf;	/* the fetch's */
	struct config_upstream		 peer;	/* names it to proxy.c */
	char				 peer_name[48];
	struct proxy			*fetch;
	enum oidc_step			 step;
	const char			*why;	/* start, periodic, ... */
	char				 jwks_uri[2048];
	/* From discovery, "" when absent: sso.c, oidc_client.c. */
	char				 endpoints[OIDC_EP__MAX][2048];
	struct oidc_keys		*keys;
	struct event			*timer;
	uint64_t			 last_attempt_ms;
	uint64_t			 last_ok_ms;
	uint64_t			 last_fail_ms;
	uint64_t			 next_ms;
	char				 error[OIDC_ERROR_MAX];
	int				 backoff_ms;
	uint64_t			 nfetch;
	uint64_t			 nfail;
	uint64_t			 nkid;
	uint64_t			 nlimited;
	TAILQ_HEAD(, oidc_wait)		 waiters;
	size_t				 nwaiters;
	unsigned			 gen;	/* fetches begun */
};

struct oidc {
	TAILQ_HEAD(, oidc_issuer)	 issuers;
	size_t				 n;
};

static void	oidc_fetch_begin(struct oidc_issuer *);
static void	oidc_on_discovery(void *, int, const struct headers *,
		    const char *, size_t, const char *);
static void	oidc_on_jwks(void *, int, const struct headers *,
		    const char *, size_t, const char *);

void
oidc_keys_unref(struct oidc_keys *k)
{
	size_t	 i;

	if (k == NULL || --k->refcnt > 0)
		return;
	for (i = 0; i < k->nkeys; i++) {
		free(k->kids[i]);
		free(k->ktys[i]);
	}
	free(k->kids);
	free(k->ktys);
	free(k->jwks);
	jwk_set_free(k->set);
	free(k);
}

/* Whether the set holds a key with this kid. */
int
oidc_keys_has_kid(const struct oidc_keys *k, const char *kid)
{
	size_t	 i;

	for (i = 0; k != NULL && i < k->nkeys; i++)
		if (strcmp(k->kids[i], kid) == 0)
			return (1);
	return (0);
}

/* The keys built from the document (jwk.c), for jose.c to verify with. */
const struct jwk_set *
oidc_keys_set(const struct oidc_keys *k)
{
	return (k != NULL ? k->set : NULL);
}

static struct oidc_issuer *
oidc_find(struct pc_ctx *ctx, const char *name)
{
	struct oidc_issuer	*is;

	if (ctx->oidc == NULL)
		return (NULL);
	TAILQ_FOREACH(is, &ctx->oidc->issuers, entry)
		if (strcmp(is->cf->name, name) == 0)
			return (is);
	return (NULL);
}

/* The current keys of the issuer named so in the config, referenced. */
struct oidc_keys *
oidc_keys_get(struct pc_ctx *ctx, const char *name)
{
	struct oidc_issuer	*is;

	if ((is = oidc_find(ctx, name)) == NULL || is->keys == NULL)
		return (NULL);
	is->keys->refcnt++;
	return (is->keys);
}

/*
 * The current keys of the issuer whose identifier is iss, referenced, and
 * its configured name in *name (valid until the next reload).
 */
struct oidc_keys *
oidc_keys_by_iss(struct pc_ctx *ctx, const char *iss, const char **name)
{
	struct oidc_issuer	*is;

	if (ctx->oidc == NULL)
		return (NULL);
	TAILQ_FOREACH(is, &ctx->oidc->issuers, entry) {
		if (strcmp(is->cf->issuer, iss) != 0)
			continue;
		if (name != NULL)
			*name = is->cf->name;
		if (is->keys == NULL)
			return (NULL);
		is->keys->refcnt++;
		return (is->keys);
	}
	return (NULL);
}

static void
oidc_timer_set(struct oidc_issuer *is, int ms)
{
	struct timeval	 tv;

	tv.tv_sec = ms / 1000;
	tv.tv_usec = (ms % 1000) * 1000;
	evtimer_del(is->timer);
	evtimer_add(is->timer, &tv);
	is->next_ms = now_ms() + (uint64_t)ms;
}

/* The next periodic fetch: refresh, minus up to 10% so peers spread. */
static void
oidc_schedule_periodic(struct oidc_issuer *is)
{
	int	 ms = is->cf->refresh_ms;

	ms -= (int)arc4random_uniform((uint32_t)ms / 10 + 1);
	oidc_timer_set(is, ms);
}

/* Run the waiters of the fetch that just ended (and no later one's). */
static void
oidc_wake(struct oidc_issuer *is, int ok)
{
	struct oidc_wait	*w;
	unsigned		 gen = is->gen;

	while ((w = TAILQ_FIRST(&is->waiters)) != NULL && w->gen == gen) {
		TAILQ_REMOVE(&is->waiters, w, entry);
		is->nwaiters--;
		w->cb(w->arg, is->keys, ok);
		free(w);
	}
}

/* The fetch ended; ok says whether new keys came. */
static void
oidc_fetch_end(struct oidc_issuer *is, int ok)
{
	is->fetch = NULL;
	is->step = OIDC_IDLE;
	config_unref(is->fetch_conf);
	is->fetch_conf = NULL;
	if (ok) {
		is->backoff_ms = 0;
		oidc_schedule_periodic(is);
	} else {
		/* Retry sooner than refresh, later each time. */
		if (is->backoff_ms == 0)
			is->backoff_ms = is->cf->min_refresh_ms;
		else if (is->backoff_ms < is->cf->refresh_ms / 2)
			is->backoff_ms *= 2;
		else
			is->backoff_ms = is->cf->refresh_ms;
		oidc_timer_set(is, is->backoff_ms);
	}
	oidc_wake(is, ok);
}

static void
oidc_fail(struct oidc_issuer *is, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* A failed fetch: the keys held stay; say why. */
static void
oidc_fail(struct oidc_issuer *is, const char *fmt, ...)
{
	va_list	 ap;

	va_start(ap, fmt);
	vsnprintf(is->error, sizeof(is->error), fmt, ap);
	va_end(ap);
	is->nfail++;
	is->last_fail_ms = now_ms();
	log_warn("- oidc refresh_failed issuer=%s trigger=%s keys_kept=%zu "
	    "reason=\"%s\"", is->cf->name, is->why, is->keys != NULL ?
	    is->keys->nkeys : 0, is->error);
	oidc_fetch_end(is, 0);
}

/* GET u for is with the bound max; cb gets the answer. */
static void
oidc_get(struct oidc_issuer *is, const struct url *u, int restricted,
    size_t max, proxy_url_cb cb)
{
	struct origin	 o;
	char		 hdrs[128], logid[64];

	origin_from_url(&o, u, is->cf->ca_file);
	o.restricted = restricted;
	snprintf(hdrs, sizeof(hdrs), "User-Agent: portcullis/%s\r\n"
	    "Accept: application/json\r\n", PC_VERSION);
	snprintf(logid, sizeof(logid), "- oidc %s", is->cf->name);
	is->fetch = proxy_fetch_url(is->ctx, is->fetch_conf, &is->peer, u,
	    &o, hdrs, max, cb, is, logid);
	/* A failure to start calls back before this returns. */
	proxy_fetch_start(is->fetch);
}

/* Start a fetch: the discovery document first. */
static void
oidc_fetch_begin(struct oidc_issuer *is)
{
	struct url	 u = is->cf->u;
	size_t		 n;

	is->step = OIDC_DISCOVERY;
	is->gen++;
	is->last_attempt_ms = now_ms();
	is->nfetch++;
	config_ref(is->conf);
	is->fetch_conf = is->conf;
	/* OIDC Discovery 4: a path's final '/' goes before appending. */
	n = strlen(u.path);
	if (n > 0 && u.path[n - 1] == '/')
		u.path[--n] = '\0';
	if (n + sizeof(OIDC_WELL_KNOWN) > sizeof(u.path)) {
		oidc_fail(is, "issuer path too long");
		return;
	}
	memcpy(u.path + n, OIDC_WELL_KNOWN, sizeof(OIDC_WELL_KNOWN));
	log_debug("- oidc fetch issuer=%s trigger=%s", is->cf->name, is->why);
	oidc_get(is, &u, 0, is->cf->max_discovery_bytes, oidc_on_discovery);
}

static void
oidc_timer_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct oidc_issuer	*is = arg;

	if (is->step != OIDC_IDLE && is->step != OIDC_SCHEDULED)
		return;		/* cannot happen: no timer while fetching */
	if (is->step == OIDC_IDLE)
		is->why = is->last_attempt_ms == 0 ? "start" :
		    is->last_fail_ms > is->last_ok_ms ? "retry" : "periodic";
	oidc_fetch_begin(is);
}

/* A fetch answered no document: fail, saying why (a bound by name). */
static void
oidc_bad_answer(struct oidc_issuer *is, const char *what, int status,
    const char *err, size_t max, const char *bound)
{
	if (status < 0 && err != NULL && strstr(err, "too large") != NULL)
		oidc_fail(is, "%s larger than %s (%zu bytes)", what, bound,
		    max);
	else if (status < 0)
		oidc_fail(is, "%s: %s", what, err != NULL ? err : "failed");
	else
		oidc_fail(is, "%s answered HTTP %d", what, status);
}

/* Whether jwks_uri u is the issuer's own origin. */
static int
oidc_same_origin(const struct url *a, const struct url *b)
{
	return (a->tls == b->tls && a->port == b->port &&
	    strcmp(a->host, b->host) == 0);
}

/* Whether host is a numeric loopback address (not a name). */
static int
oidc_numeric_loopback(const char *host)
{
	unsigned char	 a[16];

	if (inet_pton(AF_INET, host, a) == 1)
		return (netaddr_class_v4(a) == NETADDR_LOOPBACK);
	if (inet_pton(AF_INET6, host, a) == 1)
		return (netaddr_class_v6(a) == NETADDR_LOOPBACK);
	return (0);
}

/*
 * The endpoints a sign-in needs, kept as the document names them (each
 * checked when used: oidc_endpoint); one that is no URL is left out.
 */
static void
oidc_take_endpoints(struct oidc_issuer *is, json_t *doc)
{
	static const char *const names[OIDC_EP__MAX] = {
	    "authorization_endpoint", "token_endpoint",
	    "device_authorization_endpoint", "userinfo_endpoint" };
	struct url	 u;
	const char	*s;
	json_t		*v;
	int		 i;

	for (i = 0; i < OIDC_EP__MAX; i++) {
		is->endpoints[i][0] = '\0';
		v = json_object_get(doc, names[i]);
		s = json_is_string(v) ? json_string_value(v) : NULL;
		if (s != NULL && strlen(s) < sizeof(is->endpoints[i]) &&
		    strchr(s, '#') == NULL && url_parse(s, &u) == 0)
			snprintf(is->endpoints[i], sizeof(is->endpoints[i]),
			    "%s", s);
	}
}

/*
 * An endpoint of issuer `name` from its last discovery document, under
 * the rules jwks_uri follows: https (http only at a numeric loopback
 * address when the issuer is a loopback http one), and unless it is the
 * issuer's own origin or in jwks_hosts, dialled only at a public address
 * (o->restricted).  0 with the URL in buf, u and o (the issuer's ca_file)
 * set; -1 with *why.
 */
int
oidc_endpoint(struct pc_ctx *ctx, const char *name, enum oidc_ep which,
    char *buf, size_t len, struct url *u, struct origin *o, const char **why)
{
	struct oidc_issuer		*is;
	const struct config_oidc_issuer	*cf;

	if ((is = oidc_find(ctx, name)) == NULL) {
		*why = "no such issuer";
		return (-1);
	}
	cf = is->cf;
	if (which < 0 || which >= OIDC_EP__MAX ||
	    is->endpoints[which][0] == '\0') {
		*why = is->last_ok_ms == 0 ? "the issuer's discovery document "
		    "has not been fetched yet" : "the issuer's discovery "
		    "document names no such endpoint";
		return (-1);
	}
	if (url_parse(is->endpoints[which], u) == -1 ||
	    (size_t)snprintf(buf, len, "%s", is->endpoints[which]) >= len) {
		*why = "endpoint URL unusable";
		return (-1);
	}
	if (!u->tls && (cf->u.tls || !oidc_numeric_loopback(u->host))) {
		*why = "endpoint must be https";
		return (-1);
	}
	origin_from_url(o, u, cf->ca_file);
	o->restricted = !oidc_same_origin(u, &cf->u) &&
	    !netaddr_listed(cf->jwks_hosts, cf->njwks_hosts, u->host, u->port);
	return (0);
}

/* The peer naming issuer `name` to proxy.c; NULL when not configured. */
const struct config_upstream *
oidc_peer(struct pc_ctx *ctx, const char *name)
{
	struct oidc_issuer	*is;

	if ((is = oidc_find(ctx, name)) == NULL)
		return (NULL);
	return (&is->peer);
}

static void
oidc_on_discovery(void *arg, int status, const struct headers *h,
    const char *body, size_t len, const char *err)
{
	struct oidc_issuer		*is = arg;
	const struct config_oidc_issuer	*cf = is->cf;
	json_t				*doc, *v;
	json_error_t			 jerr;
	struct url			 u;
	const char			*s;
	int				 restricted;

	is->fetch = NULL;
	if (status != 200) {
		oidc_bad_answer(is, "discovery document", status, err,
		    cf->max_discovery_bytes, "max_discovery_bytes");
		return;
	}
	if ((doc = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr)) ==
	    NULL) {
		oidc_fail(is, "discovery document is not valid JSON (a "
		    "duplicate member, a NUL or a syntax error)");
		return;
	}
	if (!json_is_object(doc)) {
		json_decref(doc);
		oidc_fail(is, "discovery document is not a JSON object");
		return;
	}
	v = json_object_get(doc, "issuer");
	if (!json_is_string(v) || strcmp(json_string_value(v),
	    cf->issuer) != 0) {
		json_decref(doc);
		oidc_fail(is, "discovery document's issuer is not %s "
		    "(OIDC Discovery 4.3: it must match exactly)", cf->issuer);
		return;
	}
	v = json_object_get(doc, "jwks_uri");
	s = json_is_string(v) ? json_string_value(v) : NULL;
	if (s == NULL || strlen(s) >= sizeof(is->jwks_uri) ||
	    strchr(s, '#') != NULL || url_parse(s, &u) == -1) {
		json_decref(doc);
		oidc_fail(is, "discovery document has no usable jwks_uri "
		    "(an absolute http(s) URL)");
		return;
	}
	snprintf(is->jwks_uri, sizeof(is->jwks_uri), "%s", s);
	oidc_take_endpoints(is, doc);
	json_decref(doc);
	/*
	 * A loopback http issuer may keep its keys on http, at a numeric
	 * loopback address too: a name (even one in jwks_hosts) would carry
	 * the keys unprotected wherever it leads.
	 */
	if (!u.tls && (cf->u.tls || !oidc_numeric_loopback(u.host))) {
		oidc_fail(is, "jwks_uri must be https");
		return;
	}
	restricted = !oidc_same_origin(&u, &cf->u) &&
	    !netaddr_listed(cf->jwks_hosts, cf->njwks_hosts, u.host, u.port);
	is->step = OIDC_JWKS;
	oidc_get(is, &u, restricted, cf->max_jwks_bytes, oidc_on_jwks);
}

/*
 * A JSON string of 1 to max printable ASCII characters without quotes,
 * backslashes or commas (it goes into log lines), and no NUL inside.
 */
static const char *
oidc_token_str(json_t *v, size_t max)
{
	const char	*s;
	size_t		 i, n;

	if (!json_is_string(v))
		return (NULL);
	s = json_string_value(v);
	n = json_string_length(v);
	if (n == 0 || n > max || strlen(s) != n)
		return (NULL);
	for (i = 0; i < n; i++)
		if (s[i] <= ' ' || s[i] > '~' || s[i] == '"' ||
		    s[i] == '\\' || s[i] == ',')
			return (NULL);
	return (s);
}

/*
 * Check a JWKS document and list its keys: a JSON object without
 * duplicate members whose "keys" is an array of 1 to max_keys objects,
 * each with a kty and an optional kid (both printable), the kids unique.
 * NULL with why set when it is not.  Takes a copy of body.
 */
struct oidc_keys *
oidc_keys_parse(const char *body, size_t len, size_t max_keys, char *why,
    size_t whylen)
{
	struct oidc_keys	*k;
	json_t			*doc, *keys, *key, *kid;
	json_error_t		 jerr;
	const char		*s, *ty;
	size_t			 i, j, n;

	/* jerr's text quotes the document: the reason stays ours. */
	if ((doc = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr)) ==
	    NULL) {
		snprintf(why, whylen, "JWKS is not valid JSON (a duplicate "
		    "member, a NUL or a syntax error)");
		return (NULL);
	}
	if (!json_is_object(doc) ||
	    !json_is_array(keys = json_object_get(doc, "keys"))) {
		json_decref(doc);
		snprintf(why, whylen, "JWKS is not a JSON object with a "
		    "\"keys\" array");
		return (NULL);
	}
	if ((n = json_array_size(keys)) == 0 || n > max_keys) {
		json_decref(doc);
		snprintf(why, whylen, "JWKS has %zu keys (1 to max_keys, %zu)",
		    n, max_keys);
		return (NULL);
	}
	if ((k = calloc(1, sizeof(*k))) == NULL ||
	    (k->kids = calloc(n, sizeof(char *))) == NULL ||
	    (k->ktys = calloc(n, sizeof(char *))) == NULL ||
	    (k->jwks = malloc(len + 1)) == NULL)
		fatal("calloc");
	k->refcnt = 1;
	memcpy(k->jwks, body, len);
	k->jwks[len] = '\0';
	k->jwks_len = len;
	json_array_foreach(keys, i, key) {
		if (!json_is_object(key) || (ty = oidc_token_str(
		    json_object_get(key, "kty"), 16)) == NULL) {
			snprintf(why, whylen, "JWKS key %zu has no kty of 1 to "
			    "16 printable characters", i);
			goto bad;
		}
		s = "";
		if ((kid = json_object_get(key, "kid")) != NULL &&
		    (s = oidc_token_str(kid, OIDC_KID_MAX)) == NULL) {
			snprintf(why, whylen, "JWKS key %zu: kid is not 1 to "
			    "%d printable characters", i, OIDC_KID_MAX);
			goto bad;
		}
		for (j = 0; j < k->nkeys; j++)
			if (strcmp(k->kids[j], s) == 0) {
				snprintf(why, whylen, "JWKS keys %zu and %zu "
				    "have the same kid%s", j, i, *s == '\0' ?
				    " (none)" : "");
				goto bad;
			}
		if ((k->kids[k->nkeys] = strdup(s)) == NULL ||
		    (k->ktys[k->nkeys] = strdup(ty)) == NULL)
			fatal("strdup");
		k->nkeys++;
	}
	json_decref(doc);
	k->fetched_ms = now_ms();
	return (k);
bad:
	json_decref(doc);
	oidc_keys_unref(k);
	return (NULL);
}

/*
 * Build the keys of a checked JWKS (jwk.c: RSA and EC public keys, each
 * pinned to the algorithms of its type) and pin them further to the
 * issuer's algorithms.  A document with no usable key is a failed fetch:
 * the keys held before are better than none.  The kids and ktys it
 * names were checked before, so the leaf's reasons are safe to log.
 */
static int
oidc_keys_build(struct oidc_keys *k, const struct config_oidc_issuer *cf,
    const struct jwk_limits *lim, char *why, size_t whylen)
{
	unsigned		 mask = 0;
	char			*cause = NULL;
	size_t			 i;
	int			 a;

	if ((k->set = jwk_set_parse(k->jwks, k->jwks_len, lim,
	    &cause)) == NULL) {
		snprintf(why, whylen, "%s", cause != NULL ? cause :
		    "JWKS has no usable key");
		free(cause);
		return (-1);
	}
	for (i = 0; i < cf->nalgorithms; i++)
		if ((a = jose_alg_lookup(cf->algorithms[i],
		    strlen(cf->algorithms[i]))) >= 0)
			mask |= JOSE_ALG_BIT(a);
	for (i = 0; i < k->set->nkeys; i++)
		k->set->keys[i].algs &= mask;
	return (0);
}

/* Whether two issuer configs accept the same algorithms, in order. */
static int
oidc_same_algorithms(const struct config_oidc_issuer *a,
    const struct config_oidc_issuer *b)
{
	size_t	 i;

	if (a->nalgorithms != b->nalgorithms)
		return (0);
	for (i = 0; i < a->nalgorithms; i++)
		if (strcmp(a->algorithms[i], b->algorithms[i]) != 0)
			return (0);
	return (1);
}

/*
 * A reload kept an issuer's keys but changed its algorithms: the keys
 * were cut to the old list when fetched, so the same document is built
 * again and cut to the new one, at once (a withdrawn algorithm must not
 * verify until the next refresh).  A new set: a verifier may hold the
 * old.  The document passed its bounds when fetched; it is held to its
 * own size here, not to a reload's smaller ones.  NULL if it cannot be.
 */
static struct oidc_keys *
oidc_keys_recut(const struct oidc_keys *old,
    const struct config_oidc_issuer *cf)
{
	struct jwk_limits	 lim = { old->jwks_len, old->nkeys };
	struct oidc_keys	*k;
	char			 why[OIDC_ERROR_MAX];

	if ((k = oidc_keys_parse(old->jwks, old->jwks_len, old->nkeys, why,
	    sizeof(why))) == NULL)
		return (NULL);
	if (oidc_keys_build(k, cf, &lim, why, sizeof(why)) == -1) {
		oidc_keys_unref(k);
		return (NULL);
	}
	k->fetched_ms = old->fetched_ms;
	return (k);
}

static void
oidc_on_jwks(void *arg, int status, const struct headers *h,
    const char *body, size_t len, const char *err)
{
	struct oidc_issuer	*is = arg;
	struct jwk_limits	 lim = { is->cf->max_jwks_bytes,
				    is->cf->max_keys };
	struct oidc_keys	*k;
	char			 why[OIDC_ERROR_MAX], kids[512];
	size_t			 i, off = 0;

	is->fetch = NULL;
	if (status < 0 && err != NULL && strstr(err, "refused: ") != NULL) {
		oidc_fail(is, "jwks_uri %s (not the issuer's origin, not in "
		    "jwks_hosts)", strstr(err, "refused: "));
		return;
	}
	if (status != 200) {
		oidc_bad_answer(is, "JWKS", status, err, is->cf->max_jwks_bytes,
		    "max_jwks_bytes");
		return;
	}
	if ((k = oidc_keys_parse(body, len, is->cf->max_keys, why,
	    sizeof(why))) == NULL) {
		oidc_fail(is, "%s", why);
		return;
	}
	if (oidc_keys_build(k, is->cf, &lim, why, sizeof(why)) == -1) {
		oidc_keys_unref(k);
		oidc_fail(is, "%s", why);
		return;
	}
	for (i = 0; i < k->nkeys && off < sizeof(kids); i++)
		off += snprintf(kids + off, sizeof(kids) - off, "%s%s:%s",
		    i > 0 ? "," : "", k->kids[i], k->ktys[i]);
	oidc_keys_unref(is->keys);	/* a verifier may still hold it */
	is->keys = k;
	is->last_ok_ms = now_ms();
	is->error[0] = '\0';
	log_info("- oidc keys_loaded issuer=%s trigger=%s keys=%zu "
	    "kids=\"%s\"", is->cf->name, is->why, k->nkeys, kids);
	oidc_fetch_end(is, 1);
}

/* A token names a kid the issuer lacks: see oidc.h. */
enum oidc_kid
oidc_unknown_kid(struct pc_ctx *ctx, const char *name, const char *kid,
    oidc_wait_cb cb, void *arg, struct oidc_wait **wp, const char **why)
{
	struct oidc_issuer	*is;
	struct oidc_wait	*w;
	uint64_t		 now = now_ms();

	*wp = NULL;
	*why = NULL;
	if ((is = oidc_find(ctx, name)) == NULL) {
		*why = "no such issuer";
		return (OIDC_KID_UNKNOWN);
	}
	if (oidc_keys_has_kid(is->keys, kid))
		return (OIDC_KID_KNOWN);
	if (is->nwaiters >= is->cf->max_waiters) {
		*why = "too many requests wait for this issuer's keys "
		    "(max_waiters)";
		return (OIDC_KID_UNKNOWN);
	}
	if (is->step == OIDC_IDLE) {
		if (is->last_attempt_ms != 0 && now <
		    is->last_attempt_ms + (uint64_t)is->cf->min_refresh_ms) {
			is->nlimited++;
			*why = "keys were fetched less than "
			    "min_refresh_interval ago";
			return (OIDC_KID_UNKNOWN);
		}
		/* From the timer: the caller is not called back inside. */
		is->nkid++;
		is->why = "unknown-kid";
		is->step = OIDC_SCHEDULED;
		oidc_timer_set(is, 0);
	}
	if ((w = calloc(1, sizeof(*w))) == NULL)
		fatal("calloc");
	w->is = is;
	/* The fetch it waits for: the running one, or the one to come. */
	w->gen = is->step == OIDC_SCHEDULED ? is->gen + 1 : is->gen;
	w->cb = cb;
	w->arg = arg;
	TAILQ_INSERT_TAIL(&is->waiters, w, entry);
	is->nwaiters++;
	*wp = w;
	return (OIDC_KID_WAIT);
}

/* The waiter's request went away: it is not called back. */
void
oidc_wait_cancel(struct oidc_wait *w)
{
	if (w == NULL)
		return;
	TAILQ_REMOVE(&w->is->waiters, w, entry);
	w->is->nwaiters--;
	free(w);
}

static struct oidc_issuer *
oidc_issuer_new(struct pc_ctx *ctx, struct config *conf,
    const struct config_oidc_issuer *cf)
{
	struct oidc_issuer	*is;

	if ((is = calloc(1, sizeof(*is))) == NULL)
		fatal("calloc");
	is->ctx = ctx;
	config_ref(conf);
	is->conf = conf;
	is->cf = cf;
	TAILQ_INIT(&is->waiters);
	if ((is->timer = evtimer_new(ctx->base, oidc_timer_cb, is)) == NULL)
		fatal("evtimer_new");
	snprintf(is->peer_name, sizeof(is->peer_name), "oidc-%s", cf->name);
	is->peer.name = is->peer_name;
	is->peer.u = cf->u;
	return (is);
}

/* Drop an issuer: its fetch retired, its waiters told it failed. */
static void
oidc_issuer_free(struct oidc_issuer *is)
{
	struct oidc_wait	*w;

	proxy_free(is->fetch);
	is->fetch = NULL;
	config_unref(is->fetch_conf);
	while ((w = TAILQ_FIRST(&is->waiters)) != NULL) {
		TAILQ_REMOVE(&is->waiters, w, entry);
		is->nwaiters--;
		w->cb(w->arg, NULL, 0);
		free(w);
	}
	event_free(is->timer);
	oidc_keys_unref(is->keys);
	config_unref(is->conf);
	free(is);
}

/* Whether a reload changed what the keys come from. */
static int
oidc_same_source(const struct config_oidc_issuer *a,
    const struct config_oidc_issuer *b)
{
	size_t	 i;

	if (strcmp(a->issuer, b->issuer) != 0 ||
	    (a->ca_file == NULL) != (b->ca_file == NULL) ||
	    (a->ca_file != NULL && strcmp(a->ca_file, b->ca_file) != 0) ||
	    a->njwks_hosts != b->njwks_hosts)
		return (0);
	for (i = 0; i < a->njwks_hosts; i++)
		if (strcmp(a->jwks_hosts[i], b->jwks_hosts[i]) != 0)
			return (0);
	return (1);
}

/*
 * Take the configuration in force.  An issuer that keeps its name and
 * its source (issuer, ca_file, jwks_hosts) keeps its keys and schedule,
 * and takes the other settings at once; a new or changed one is fetched
 * now, with no keys until then; a removed one is dropped.
 */
void
oidc_config_loaded(struct pc_ctx *ctx)
{
	struct config			*conf = ctx->conf;
	struct oidc			*o = ctx->oidc;
	struct oidc_issuer		*is, *next;
	struct oidc_keys		*k;
	TAILQ_HEAD(, oidc_issuer)	 old;
	const struct config_oidc_issuer	*cf;
	size_t				 i, n;

	n = conf->identity != NULL ? conf->identity->nissuers : 0;
	if (o == NULL) {
		if (n == 0)
			return;
		if ((o = calloc(1, sizeof(*o))) == NULL)
			fatal("calloc");
		TAILQ_INIT(&o->issuers);
		ctx->oidc = o;
	}
	TAILQ_INIT(&old);
	TAILQ_CONCAT(&old, &o->issuers, entry);
	o->n = 0;
	for (i = 0; i < n; i++) {
		cf = &conf->identity->issuers[i];
		TAILQ_FOREACH(is, &old, entry)
			if (strcmp(is->cf->name, cf->name) == 0)
				break;
		if (is != NULL && oidc_same_source(is->cf, cf)) {
			TAILQ_REMOVE(&old, is, entry);
			if (is->keys != NULL &&
			    !oidc_same_algorithms(is->cf, cf)) {
				k = oidc_keys_recut(is->keys, cf);
				oidc_keys_unref(is->keys);
				/* Cannot happen; no keys beat wrong ones. */
				if ((is->keys = k) == NULL)
					log_warn("- oidc keys_dropped "
					    "issuer=%s reason=\"cannot apply "
					    "the new algorithms\"", cf->name);
			}
			config_ref(conf);
			config_unref(is->conf);
			is->conf = conf;
			is->cf = cf;
			is->peer.u = cf->u;
			/* A shorter refresh applies now, not at the next. */
			if (is->step == OIDC_IDLE && is->keys != NULL &&
			    is->next_ms > now_ms() + (uint64_t)cf->refresh_ms)
				oidc_schedule_periodic(is);
		} else {
			is = oidc_issuer_new(ctx, conf, cf);
			is->why = "start";
			is->step = OIDC_SCHEDULED;
			oidc_timer_set(is, 0);
		}
		TAILQ_INSERT_TAIL(&o->issuers, is, entry);
		o->n++;
	}
	TAILQ_FOREACH_SAFE(is, &old, entry, next) {
		TAILQ_REMOVE(&old, is, entry);
		log_info("- oidc issuer_dropped issuer=%s", is->cf->name);
		oidc_issuer_free(is);
	}
}

/* Drop every issuer (the gateway stops). */
void
oidc_free(struct pc_ctx *ctx)
{
	struct oidc		*o = ctx->oidc;
	struct oidc_issuer	*is;

	if (o == NULL)
		return;
	while ((is = TAILQ_FIRST(&o->issuers)) != NULL) {
		TAILQ_REMOVE(&o->issuers, is, entry);
		oidc_issuer_free(is);
	}
	free(o);
	ctx->oidc = NULL;
}

size_t
oidc_nissuers(struct pc_ctx *ctx)
{
	return (ctx->oidc != NULL ? ctx->oidc->n : 0);
}

/* The i-th issuer's state (configuration order). */
int
oidc_status_get(struct pc_ctx *ctx, size_t i, struct oidc_status *st)
{
	struct oidc_issuer	*is;

	if (ctx->oidc == NULL)
		return (-1);
	TAILQ_FOREACH(is, &ctx->oidc->issuers, entry)
		if (i-- == 0)
			break;
	if (is == NULL)
		return (-1);
	memset(st, 0, sizeof(*st));
	st->name = is->cf->name;
	st->issuer = is->cf->issuer;
	st->loaded = is->keys != NULL;
	st->nkeys = is->keys != NULL ? is->keys->nkeys : 0;
	st->fetching = is->step == OIDC_DISCOVERY || is->step == OIDC_JWKS;
	st->jwks_uri = is->jwks_uri;
	st->last_attempt_ms = is->last_attempt_ms;
	st->last_success_ms = is->last_ok_ms;
	st->last_failure_ms = is->last_fail_ms;
	st->last_error = is->error;
	st->next_refresh_ms = is->next_ms;
	st->waiters = is->nwaiters;
	st->kid_refresh_allowed = is->step != OIDC_IDLE ||
	    is->last_attempt_ms == 0 || now_ms() >= is->last_attempt_ms +
	    (uint64_t)is->cf->min_refresh_ms;
	st->fetches = is->nfetch;
	st->failures = is->nfail;
	st->kid_refreshes = is->nkid;
	st->kid_limited = is->nlimited;
	return (0);
}

/* Whether every configured issuer has keys. */
int
oidc_ready(struct pc_ctx *ctx)
{
	struct oidc_issuer	*is;

	if (ctx->oidc == NULL)
		return (1);
	TAILQ_FOREACH(is, &ctx->oidc->issuers, entry)
		if (is->keys == NULL)
			return (0);
	return (1);
}

/*
 * GET /admin/identity: every issuer's state and kids.
 */
static json_t *
oidc_admin_json(struct pc_ctx *ctx)
{
	struct oidc_status	 st;
	struct cred_cache_stats	 cs;
	struct oidc_issuer	*is;
	const struct jwk_set	*set;
	json_t			*all, *one, *kids, *algs, *ka;
	size_t			 i, j;
	int			 a;

	if ((all = json_array()) == NULL)
		fatal("json_array");
	for (i = 0; oidc_status_get(ctx, i, &st) == 0; i++) {
		is = oidc_find(ctx, st.name);
		if ((kids = json_array()) == NULL)
			fatal("json_array");
		for (j = 0; is->keys != NULL && j < is->keys->nkeys; j++)
			json_array_append_new(kids,
			    json_string(is->keys->kids[j]));
		/* What each usable key verifies with, by kid. */
		if ((algs = json_object()) == NULL)
			fatal("json_object");
		set = oidc_keys_set(is->keys);
		for (j = 0; set != NULL && j < set->nkeys; j++) {
			if ((ka = json_array()) == NULL)
				fatal("json_array");
			for (a = 0; a < JOSE_ALG__MAX; a++)
				if (set->keys[j].algs & JOSE_ALG_BIT(a))
					json_array_append_new(ka,
					    json_string(jose_alg_name(a)));
			json_object_set_new(algs, set->keys[j].kid, ka);
		}
		one = json_pack("{s:s, s:s, s:b, s:I, s:o, s:o, s:b, s:s, s:I, "
		    "s:I, s:I, s:s, s:I, s:b, s:I, s:I, s:I, s:I, s:I}",
		    "name", st.name, "issuer", st.issuer, "loaded", st.loaded,
		    "keys", (json_int_t)st.nkeys, "kids", kids,
		    "key_algorithms", algs,
		    "fetching", st.fetching, "jwks_uri", st.jwks_uri,
		    "last_attempt_ms", (json_int_t)st.last_attempt_ms,
		    "last_success_ms", (json_int_t)st.last_success_ms,
		    "last_failure_ms", (json_int_t)st.last_failure_ms,
		    "last_error", st.last_error,
		    "next_refresh_ms", (json_int_t)st.next_refresh_ms,
		    "kid_refresh_allowed", st.kid_refresh_allowed,
		    "waiters", (json_int_t)st.waiters,
		    "fetches", (json_int_t)st.fetches,
		    "failures", (json_int_t)st.failures,
		    "kid_refreshes", (json_int_t)st.kid_refreshes,
		    "kid_rate_limited", (json_int_t)st.kid_limited);
		if (one == NULL)
			fatal("json_pack");
		json_array_append_new(all, one);
	}
	cred_cache_stats(&cs);
	return (json_pack("{s:b, s:o, s:{s:I, s:I, s:I, s:I}}", "ready",
	    oidc_ready(ctx), "issuers", all, "idp_token_cache",
	    "entries", (json_int_t)cs.entries, "hits", (json_int_t)cs.hits,
	    "misses", (json_int_t)cs.misses,
	    "key_drops", (json_int_t)cs.key_drops));
}

static void
oidc_admin_answer(struct req *req, json_t *doc)
{
	char	*body;

	if (doc == NULL || (body = json_dumps(doc, JSON_COMPACT)) == NULL)
		fatal("json_dumps");
	json_decref(doc);
	req_respond_simple(req, 200, "application/json", body, NULL);
	free(body);
}

/* A refresh the admin endpoint asked for, waiting as the request's stage. */
struct oidc_admin_wait {
	struct req		*req;
	struct oidc_wait	*w;
	char			 kid[OIDC_KID_MAX + 1];
};

static void
oidc_admin_detach(void *arg)
{
	struct oidc_admin_wait	*a = arg;

	oidc_wait_cancel(a->w);
	free(a);
}

static const struct req_stage_ops oidc_admin_stage = {
	"identity", NULL, NULL, oidc_admin_detach
};

static void
oidc_admin_woken(void *arg, struct oidc_keys *keys, int ok)
{
	struct oidc_admin_wait	*a = arg;
	struct req		*req = a->req;
	int			 known = oidc_keys_has_kid(keys, a->kid);

	a->w = NULL;		/* it is being freed: do not cancel it */
	req_stage_end(req);	/* frees a */
	oidc_admin_answer(req, json_pack("{s:s, s:b}", "result", ok ?
	    "fetched" : "failed", "known", known));
}

/*
 * POST /admin/identity/refresh?issuer=NAME&kid=KID: what a token naming
 * an unknown kid does (oidc_unknown_kid), for operators and tests, until
 * the identity stage verifies tokens.  The answer waits for the fetch.
 */
static void
oidc_admin_refresh(struct req *req)
{
	struct oidc_admin_wait	*a;
	struct oidc_wait	*w;
	const char		*why;
	char			 name[64];
	size_t			 qlen = req->query != NULL ?
				    strlen(req->query) : 0;

	if ((a = calloc(1, sizeof(*a))) == NULL)
		fatal("calloc");
	if (qlen == 0 || url_query_get(req->query, qlen, "issuer", name,
	    sizeof(name)) == -1 || url_query_get(req->query, qlen, "kid",
	    a->kid, sizeof(a->kid)) == -1) {
		free(a);
		req_fail(req, ERR_BAD_REQUEST, "issuer and kid are required");
		return;
	}
	switch (oidc_unknown_kid(req->c->ctx, name, a->kid, oidc_admin_woken,
	    a, &w, &why)) {
	case OIDC_KID_KNOWN:
		free(a);
		oidc_admin_answer(req, json_pack("{s:s, s:b}", "result",
		    "known", "known", 1));
		return;
	case OIDC_KID_UNKNOWN:
		free(a);
		oidc_admin_answer(req, json_pack("{s:s, s:b, s:s}", "result",
		    "refused", "known", 0, "reason", why));
		return;
	case OIDC_KID_WAIT:
		break;
	}
	a->req = req;
	a->w = w;
	req_stage_set(req, &oidc_admin_stage, a);
}

/* The identity admin endpoints; the admin action was checked before. */
void
oidc_admin(struct req *req)
{
	int	 m = req->msg->method;

	if (strcmp(req->path, "/admin/identity") == 0) {
		if (m != HTTP_GET && m != HTTP_HEAD) {
			req_fail(req, ERR_METHOD, NULL);
			return;
		}
		oidc_admin_answer(req, oidc_admin_json(req->c->ctx));
		return;
	}
	if (m != HTTP_POST) {
		req_fail(req, ERR_METHOD, NULL);
		return;
	}
	oidc_admin_refresh(req);
}
