/*
 * credential.c: a password presented with Basic (at /token, and on /v2/)
 * checked into a principal.  Two kinds:
 *
 * - a gateway secret (pcs_<id>_..., secret_parse): secrets.c checks it
 *   against Redis (or its cache), always asynchronously, subject-wide
 *   revocations included; method "secret";
 * - an IdP JWT (an id_token, an access token or a CI job token) of a
 *   configured issuer (identity.issuers, oidc.c keeps their keys):
 *   verified with jose.c against that issuer's key set, audiences,
 *   algorithms, leeway and required claims, then revoke_check() on its
 *   prefixed subject and iat; its subject and groups take the issuer's
 *   prefix, its string claims become the principal's; method "oidc".
 *
 * A secret's Redis lookup, and a token naming a kid its issuer's keys
 * lack (oidc.c fetches them, rate-limited, coalesced), make the check
 * wait as the request's stage; it calls back when the answer comes.  The user name is not
 * checked for a JWT (GitLab's `gitlab-ci-token`, anything): the token
 * says who it is.  No part of a password reaches a log line or a
 * record: only the fixed reason names below.
 *
 * A verified IdP JWT is kept in a tcache of its own
 * (identity.idp_cache_entries: an issuer works without the token
 * service, whose cache token_verify.c keeps), keyed by the keyed hash of
 * the token's exact bytes, so a CI job's repeated requests do not verify
 * again.  An entry lives until exp + the issuer's leeway, the moment the
 * uncached check would start refusing it (jose.c: now - leeway >= exp),
 * never longer.  A hit is not trusted blindly:
 * - revoke_check() on every use, with the token's iat (and revocation
 *   events purge entries: token_verify.c's listener calls
 *   cred_cache_revoke);
 * - a configuration reload empties the cache (issuer, audiences,
 *   algorithms, required claims, prefix may all have changed);
 * - the key that verified it must still be in the issuer's current key
 *   set, the same key material under the same kid, allowing the same
 *   alg: a key the provider dropped (rotation, a compromised key
 *   withdrawn) ends the cached verifications it made at once, as it
 *   would end the uncached ones.  Only a token whose header names its
 *   key's kid is kept (the only-key fallback of a kid-less token is not
 *   a lookup a hit could repeat).  Checking the key rather than keying
 *   entries to the set's generation keeps entries across the periodic
 *   refetch of an unchanged JWKS.
 * The policy runs per request anyway, cached identity or not.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "portcullis.h"
#include "jose.h"
#include "jwk.h"
#include "oidc.h"
#include "revoke.h"
#include "secret.h"
#include "secrets.h"
#include "tcache.h"

struct cred_wait {
	struct req		*req;
	struct oidc_wait	*w;
	struct secrets_check	*sc;
	char			*pw;
	size_t			 len;
	cred_done_fn		 done;
	int			 retired;
	struct reap_node	 reap;
};

/* A cached IdP verification: what it made, and the key that made it. */
struct cred_cached {
	struct tok_ident	*ti;
	char			*iss;
	char			 kid[JWK_KID_MAX + 1];	/* the key's */
	enum jose_alg		 alg;
	EVP_PKEY		*pkey;		/* referenced */
};

/* Process state: one event loop, one cache. */
static struct tcache		*cred_cache;
/* Referenced, so a new snapshot never reuses its address unnoticed. */
static struct config		*cred_cache_conf;
static size_t			 cred_cache_size;
static unsigned char		 cred_hkey[32];
static int			 cred_hkey_set;
static uint64_t			 cred_hits, cred_misses, cred_key_drops;

static void
cred_cached_free(void *v)
{
	struct cred_cached	*cc = v;

	if (cc == NULL)
		return;
	tok_ident_unref(cc->ti);
	free(cc->iss);
	EVP_PKEY_free(cc->pkey);
	free(cc);
}

/* The cache for this snapshot (emptied when it changed); NULL: none. */
static struct tcache *
cred_cache_for(const struct config *conf)
{
	size_t	n = conf->identity != NULL ?
		    conf->identity->idp_cache_entries : 0;

	if (!cred_hkey_set) {
		arc4random_buf(cred_hkey, sizeof(cred_hkey));
		cred_hkey_set = 1;
	}
	if (cred_cache != NULL && cred_cache_size != n) {
		tcache_free(cred_cache);
		cred_cache = NULL;
	}
	if (n == 0) {
		/* Off: hold no snapshot alive either. */
		if (cred_cache_conf != NULL)
			config_unref(cred_cache_conf);
		cred_cache_conf = NULL;
		return (NULL);
	}
	if (cred_cache == NULL) {
		if ((cred_cache = tcache_new(n, cred_cached_free)) == NULL)
			return (NULL);
		cred_cache_size = n;
	} else if (cred_cache_conf != conf)
		tcache_clear(cred_cache);
	if (cred_cache_conf != conf) {
		if (cred_cache_conf != NULL)
			config_unref(cred_cache_conf);
		cred_cache_conf = (struct config *)conf;
		config_ref(cred_cache_conf);
	}
	return (cred_cache);
}

/* Drop the entry under h (a put of nothing, already expired). */
static void
cred_cache_drop(const unsigned char *h)
{
	if (cred_cache != NULL)
		tcache_put(cred_cache, h, NULL, 0, 1);
}

/* Whether the key that verified cc is still its issuer's, unchanged. */
static int
cred_cached_key_ok(struct pc_ctx *ctx, const struct cred_cached *cc)
{
	struct oidc_keys	*keys;
	const struct jwk_key	*k;
	int			 ok;

	if ((keys = oidc_keys_by_iss(ctx, cc->iss, NULL)) == NULL)
		return (0);
	k = jwk_set_find(oidc_keys_set(keys), cc->kid, strlen(cc->kid));
	ok = k != NULL && k->pkey != NULL &&
	    (k->algs & JOSE_ALG_BIT(cc->alg)) != 0 &&
	    EVP_PKEY_eq(k->pkey, cc->pkey) == 1;
	oidc_keys_unref(keys);
	return (ok);
}

/*
 * A cached verification of the token hashed to h: 1 with *out (a new
 * reference), -1 with *why when it is refused (revoked), 0 when there is
 * none to use (absent, expired, or its key gone: dropped).
 */
static int
cred_cache_get(struct req *req, const unsigned char *h,
    struct tok_ident **out, const char **why)
{
	struct cred_cached	*cc;

	if ((cc = tcache_get(cred_cache, h, (int64_t)time(NULL))) == NULL) {
		cred_misses++;
		return (0);
	}
	if (!cred_cached_key_ok(req->c->ctx, cc)) {
		cred_key_drops++;
		cred_cache_drop(h);
		return (0);
	}
	cred_hits++;
	/* From memory: a revocation since it was cached counts. */
	if (revoke_check(req->c->ctx->revoke, cc->ti->subject,
	    cc->ti->iat)) {
		*why = "revoked";
		return (-1);
	}
	log_debug("%llu.%u credential cached", (unsigned long long)
	    req->c->id, req->seq);
	cc->ti->refcnt++;
	*out = cc->ti;
	return (1);
}

/* Keep a verification the key k made, until exp + leeway (see above). */
static void
cred_cache_put(struct req *req, const char *pw, size_t len,
    const struct jose_claims *cl, const struct jwk_key *k,
    struct tok_ident *ti, int64_t until, int64_t now)
{
	struct tcache		*tc;
	struct cred_cached	*cc;
	unsigned char		 h[TCACHE_KEY_LEN];

	if (k == NULL || k->pkey == NULL ||
	    (tc = cred_cache_for(req->conf)) == NULL ||
	    jose_token_hash(cred_hkey, sizeof(cred_hkey), pw, len, h) != 0)
		return;
	if ((cc = calloc(1, sizeof(*cc))) == NULL ||
	    (cc->iss = strdup(cl->issuer)) == NULL ||
	    EVP_PKEY_up_ref(k->pkey) != 1)
		fatal("cred_cache_put");
	cc->pkey = k->pkey;
	memcpy(cc->kid, k->kid, sizeof(cc->kid));
	cc->alg = cl->alg;
	cc->ti = ti;
	ti->refcnt++;
	tcache_put(tc, h, cc, until, now);
}

struct cred_revoke {
	const char	*subject;	/* NULL: every subject */
	int64_t		 before;	/* 0: whenever issued */
};

static int
cred_revoke_pred(const void *val, void *arg)
{
	const struct cred_cached	*cc = val;
	const struct cred_revoke	*rv = arg;

	return ((rv->subject == NULL || strcmp(cc->ti->subject,
	    rv->subject) == 0) && (rv->before == 0 || cc->ti->iat <
	    rv->before));
}

/*
 * A revocation (token_verify.c's listener): drop the cached IdP
 * verifications of subject (NULL: everyone) issued before `before` (0:
 * all).  How many were dropped.
 */
size_t
cred_cache_revoke(const char *subject, int64_t before)
{
	struct cred_revoke	rv = { subject, before };

	if (cred_cache == NULL)
		return (0);
	return (tcache_purge(cred_cache, cred_revoke_pred, &rv));
}

/* Drop every cached IdP verification (a revocation resync); how many. */
size_t
cred_cache_clear(void)
{
	size_t	n;

	if (cred_cache == NULL)
		return (0);
	n = tcache_count(cred_cache);
	tcache_clear(cred_cache);
	return (n);
}

/* For GET /admin/identity. */
void
cred_cache_stats(struct cred_cache_stats *st)
{
	st->entries = cred_cache != NULL ? tcache_count(cred_cache) : 0;
	st->hits = cred_hits;
	st->misses = cred_misses;
	st->key_drops = cred_key_drops;
}

/* At shutdown. */
void
cred_cache_free(void)
{
	tcache_free(cred_cache);
	cred_cache = NULL;
	if (cred_cache_conf != NULL)
		config_unref(cred_cache_conf);
	cred_cache_conf = NULL;
}

/* The issuer config of this snapshot whose identifier is iss; or NULL. */
static const struct config_oidc_issuer *
cred_issuer(const struct config *conf, const char *iss)
{
	size_t	i;

	if (conf->identity == NULL)
		return (NULL);
	for (i = 0; i < conf->identity->nissuers; i++)
		if (strcmp(conf->identity->issuers[i].issuer, iss) == 0)
			return (&conf->identity->issuers[i]);
	return (NULL);
}

/*
 * Whether a password (or a Bearer value) is a JWT whose claimed issuer is
 * a configured IdP: what makes identity check it rather than ignore it
 * (a mirror's dockerd sends a Docker Hub password, which is not).
 * Unverified: it only picks the path.
 */
int
cred_is_idp_jwt(const struct config *conf, const char *pw, size_t len)
{
	struct jose_peek	pk;
	size_t			max = JOSE_DEFAULT_MAX_TOKEN_BYTES;

	if (conf->identity != NULL && conf->identity->token != NULL)
		max = conf->identity->token->max_token_bytes;
	if (conf->identity == NULL || conf->identity->nissuers == 0 ||
	    memchr(pw, '.', len) == NULL ||
	    jose_peek(pw, len, max, &pk) != JOSE_OK)
		return (0);
	return (cred_issuer(conf, pk.issuer) != NULL);
}

/*
 * Whether a password is meant as a gateway secret: it has the prefix
 * (pcs_), parsed or not.  A secret cut short or mangled on its way is
 * refused as one (malformed_secret), never taken for something else.
 */
static int
cred_secret_prefixed(const char *pw, size_t len)
{
	return (len >= SECRET_PREFIX_LEN &&
	    memcmp(pw, SECRET_PREFIX, SECRET_PREFIX_LEN) == 0);
}

/* Whether revocation can name a subject (revoke.c, revoke_subject_ok). */
static int
cred_subject_revocable(const char *s)
{
	size_t	i, n = strlen(s);

	if (n == 0 || n > REVOKE_SUBJECT_MAX)
		return (0);
	for (i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return (0);
	return (1);
}

/* "prefix" + s, new. */
static char *
cred_prefixed(const char *prefix, const char *s)
{
	char	*r;

	if (asprintf(&r, "%s%s", prefix != NULL ? prefix : "", s) == -1)
		fatal("asprintf");
	return (r);
}

/*
 * Verify an IdP JWT with the keys held now.  CRED_OK with *out, or
 * CRED_FAIL with *why; with kid_unknown set, the token's kid is not in
 * the keys (the caller may wait for a fetch).
 */
static enum cred_result
cred_idp_verify(struct req *req, const char *pw, size_t len,
    struct tok_ident **out, const char **why, int *kid_unknown,
    char *kid, size_t kidlen, const char **issname)
{
	const struct config_oidc_issuer	*is;
	struct jose_peek		 pk;
	struct jose_verify_opts		 o;
	struct jose_claims		*cl = NULL;
	struct oidc_keys		*keys;
	struct tok_ident		*ti;
	enum jose_reason		 r;
	const char			*sub, *v;
	size_t				 i, maxb;
	int				 a;

	*out = NULL;
	*kid_unknown = 0;
	maxb = req->conf->identity->token != NULL ?
	    req->conf->identity->token->max_token_bytes :
	    JOSE_DEFAULT_MAX_TOKEN_BYTES;
	if ((r = jose_peek(pw, len, maxb, &pk)) != JOSE_OK) {
		*why = jose_reason_name(r);
		return (CRED_FAIL);
	}
	if ((is = cred_issuer(req->conf, pk.issuer)) == NULL) {
		*why = "unknown_issuer";
		return (CRED_FAIL);
	}
	if ((keys = oidc_keys_by_iss(req->c->ctx, pk.issuer, issname)) ==
	    NULL) {
		*why = "issuer_keys_unavailable";
		return (CRED_FAIL);
	}
	jose_verify_opts_init(&o, (int64_t)time(NULL));
	o.leeway = is->leeway_ms / 1000;
	o.max_token_bytes = maxb;
	if (req->conf->identity->token != NULL) {
		o.max_claims = req->conf->identity->token->max_claims;
		o.max_claim_bytes = req->conf->identity->token->max_claim_bytes;
	}
	o.issuer = is->issuer;
	o.audiences = (const char *const *)is->audiences;
	o.naudiences = is->naudiences;
	o.groups_claim = is->groups_claim;
	o.algs = 0;
	for (i = 0; i < is->nalgorithms; i++)
		if ((a = jose_alg_lookup(is->algorithms[i],
		    strlen(is->algorithms[i]))) >= 0)
			o.algs |= JOSE_ALG_BIT(a);
	if (o.algs == 0)
		o.algs = JOSE_ALG_BIT(JOSE_ALG_RS256);
	r = jose_verify(oidc_keys_set(keys), pw, len, &o, &cl);
	if (r == JOSE_R_KID_UNKNOWN) {
		*kid_unknown = 1;
		snprintf(kid, kidlen, "%s", pk.kid);
	}
	if (r != JOSE_OK) {
		oidc_keys_unref(keys);
		*why = jose_reason_name(r);
		return (CRED_FAIL);
	}
	for (i = 0; i < is->nrequired_claims; i++) {
		v = jose_claim_string(cl, is->required_claims[i].claim);
		if (v == NULL ||
		    strcmp(v, is->required_claims[i].equals) != 0) {
			oidc_keys_unref(keys);
			jose_claims_free(cl);
			*why = "required_claim";
			return (CRED_FAIL);
		}
	}
	sub = jose_claim_string(cl, is->subject_claim != NULL ?
	    is->subject_claim : "sub");
	if (sub == NULL || *sub == '\0') {
		oidc_keys_unref(keys);
		jose_claims_free(cl);
		*why = "no_subject";
		return (CRED_FAIL);
	}
	if ((ti = calloc(1, sizeof(*ti))) == NULL)
		fatal("calloc");
	ti->refcnt = 1;
	ti->method = AUTH_OIDC;
	ti->iat = cl->iat;
	ti->exp = cl->exp;
	ti->subject = cred_prefixed(is->prefix, sub);
	if (cl->ngroups > 0 && (ti->groups = calloc(cl->ngroups,
	    sizeof(*ti->groups))) == NULL)
		fatal("calloc");
	for (i = 0; i < cl->ngroups; i++)
		ti->groups[i] = cred_prefixed(is->prefix, cl->groups[i]);
	ti->ngroups = cl->ngroups;
	/*
	 * `portcullis token revoke` names the prefixed subject; one it
	 * cannot name (too long, a control character: revoke.c drops such
	 * a message) would be a login only --all reaches.
	 */
	if (!cred_subject_revocable(ti->subject)) {
		oidc_keys_unref(keys);
		jose_claims_free(cl);
		tok_ident_unref(ti);
		*why = "bad_subject";
		return (CRED_FAIL);
	}
	if (revoke_check(req->c->ctx->revoke, ti->subject, ti->iat)) {
		oidc_keys_unref(keys);
		jose_claims_free(cl);
		tok_ident_unref(ti);
		*why = "revoked";
		return (CRED_FAIL);
	}
	/* Raw, for the policy's claim conditions (bounded by jose.c). */
	for (i = 0; i < cl->nclaims; i++)
		(void)tok_ident_add_claim(ti, cl->claims[i].name,
		    cl->claims[i].value, cl->nclaims);
	/*
	 * Until the uncached check would refuse it: now - leeway >= exp.
	 * Only when the header named the key's kid: a hit looks the key up
	 * by that kid, the same lookup verifying makes, while a key found
	 * by the only-key fallback (no kid, or a kid-less key) is one the
	 * uncached check stops finding once the set holds a second key.
	 */
	if (pk.kid[0] != '\0' && strcmp(pk.kid, cl->kid) == 0)
		cred_cache_put(req, pw, len, cl,
		    jwk_set_find(oidc_keys_set(keys), cl->kid,
		    strlen(cl->kid)), ti, cl->exp + o.leeway, o.now);
	oidc_keys_unref(keys);
	jose_claims_free(cl);
	*out = ti;
	return (CRED_OK);
}

/*
 * An IdP JWT verified with the keys held now, never waiting (token_idp.c:
 * the id_token a provider just sent back on a re-check).  A kid the keys
 * lack fails as "oidc_unknown_kid"; the issuer's scheduled refresh picks
 * the key up.
 */
enum cred_result
cred_check_idp_now(struct req *req, const char *tok, size_t len,
    struct tok_ident **out, const char **why)
{
	const char	*name = NULL;
	char		 kid[JWK_KID_MAX + 1];
	int		 unknown;
	enum cred_result r;

	r = cred_idp_verify(req, tok, len, out, why, &unknown, kid,
	    sizeof(kid), &name);
	if (r != CRED_OK && unknown)
		*why = "oidc_unknown_kid";
	return (r);
}

/* The reaper's half of cred_wait_free(). */
static void
cred_wait_destroy(void *arg)
{
	struct cred_wait	*cw = arg;

	/* A secret's wait holds no copy (secrets.c hashed it at once). */
	if (cw->pw != NULL)
		explicit_bzero(cw->pw, cw->len);
	free(cw->pw);
	free(cw);
}

static void
cred_wait_free(void *arg)
{
	struct cred_wait	*cw = arg;

	if (cw->retired)
		return;
	cw->retired = 1;
	oidc_wait_cancel(cw->w);
	cw->w = NULL;
	if (cw->sc != NULL)
		secrets_check_cancel(cw->sc);
	cw->sc = NULL;
	conn_reap_later(cw->req->c->ctx, &cw->reap, cred_wait_destroy, cw);
}

static const struct req_stage_ops cred_stage_ops = {
	.name = "credential",
	.free = cred_wait_free,
};

/* The issuer's keys were fetched (or not): verify once more, no wait. */
static void
cred_wait_done(void *arg, struct oidc_keys *keys, int ok)
{
	struct cred_wait	*cw = arg;
	struct req		*req = cw->req;
	struct tok_ident	*ti = NULL;
	const char		*why = NULL, *name;
	char			 kid[JWK_KID_MAX + 1];
	int			 unknown;
	cred_done_fn		 done = cw->done;

	cw->w = NULL;		/* oidc.c frees its waiter */
	if (cred_idp_verify(req, cw->pw, cw->len, &ti, &why, &unknown, kid,
	    sizeof(kid), &name) != CRED_OK && unknown && !ok)
		why = "issuer_keys_unavailable";
	req_stage_end(req);
	done(req, ti, why);
}

/* secrets.c answered (never before secrets_check() returned). */
static void
cred_secret_done(enum secret_verdict v, const struct secret_principal *sp,
    void *arg)
{
	struct cred_wait	*cw = arg;
	struct req		*req = cw->req;
	struct tok_ident	*ti = NULL;
	const char		*why = NULL;
	cred_done_fn		 done = cw->done;
	size_t			 i;

	cw->sc = NULL;		/* secrets.c frees its check */
	if (v == SECRET_OK) {
		if ((ti = calloc(1, sizeof(*ti))) == NULL ||
		    (ti->subject = strdup(sp->subject)) == NULL ||
		    (sp->ngroups > 0 && (ti->groups = calloc(sp->ngroups,
		    sizeof(*ti->groups))) == NULL))
			fatal("cred_secret_done");
		ti->refcnt = 1;
		ti->method = AUTH_SECRET;
		ti->iat = sp->created;
		ti->exp = sp->expires;
		for (i = 0; i < sp->ngroups; i++)
			if ((ti->groups[i] = strdup(sp->groups[i])) == NULL)
				fatal("strdup");
		ti->ngroups = sp->ngroups;
		if ((ti->secret_id = strdup(sp->id)) == NULL)
			fatal("strdup");
	} else
		why = secret_verdict_name(v);
	req_stage_end(req);
	done(req, ti, why);
}

/*
 * Whether a password is one credential.c checks: a gateway secret's
 * form, or a JWT of a configured IdP.  Anything else (a mirror's Docker
 * Hub login) the identity stage ignores on /v2/.
 */
int
cred_is_credential(const struct config *conf, const char *pw, size_t len)
{
	return (cred_secret_prefixed(pw, len) ||
	    cred_is_idp_jwt(conf, pw, len));
}

/*
 * Whether the gateway secret a refresh token was issued for is still
 * good (secrets_check_id): always waits (CRED_WAIT; done() gets an
 * identity on success), or CRED_FAIL with *why.
 */
enum cred_result
cred_check_secret_id(struct req *req, const char *id, const char **why,
    cred_done_fn done)
{
	struct cred_wait	*cw;

	*why = NULL;
	if (req->c->ctx->secrets == NULL) {
		*why = "no_secrets";
		return (CRED_FAIL);
	}
	if ((cw = calloc(1, sizeof(*cw))) == NULL)
		fatal("calloc");
	cw->req = req;
	cw->done = done;
	if ((cw->sc = secrets_check_id(req->c->ctx->secrets, id,
	    cred_secret_done, cw)) == NULL)
		fatal("secrets_check_id");
	req_stage_set(req, &cred_stage_ops, cw);
	return (CRED_WAIT);
}

/*
 * Check a Basic password.  CRED_OK: *out is the principal's identity (a
 * new reference).  CRED_FAIL: *why names the reason.  CRED_WAIT: the
 * request waits as the credential stage; done(req, ident or NULL, why)
 * runs once when it ends (not if the client went away first).
 */
enum cred_result
cred_check(struct req *req, const char *user, const char *pw, size_t len,
    struct tok_ident **out, const char **why, cred_done_fn done)
{
	struct cred_wait	*cw;
	const char		*name = NULL, *owhy;
	char			 kid[JWK_KID_MAX + 1], id[SECRET_ID_LEN + 1];
	unsigned char		 h[TCACHE_KEY_LEN];
	int			 unknown;
	enum cred_result	 r;

	*out = NULL;
	*why = NULL;
	/* A gateway secret: always asks Redis (or secrets.c's cache). */
	if (secret_parse(pw, len, id) == 0) {
		if (req->c->ctx->secrets == NULL) {
			*why = "no_secrets";	/* no redis section */
			return (CRED_FAIL);
		}
		if ((cw = calloc(1, sizeof(*cw))) == NULL)
			fatal("calloc");
		cw->req = req;
		cw->done = done;
		if ((cw->sc = secrets_check(req->c->ctx->secrets, pw, len,
		    cred_secret_done, cw)) == NULL)
			fatal("secrets_check");
		req_stage_set(req, &cred_stage_ops, cw);
		return (CRED_WAIT);
	}
	if (cred_secret_prefixed(pw, len)) {
		*why = "malformed_secret";
		return (CRED_FAIL);
	}
	/* Neither a secret nor a JWT an issuer could verify. */
	if (memchr(pw, '.', len) == NULL || req->conf->identity == NULL ||
	    req->conf->identity->nissuers == 0) {
		*why = "no_credential_backend";
		return (CRED_FAIL);
	}
	/* A token over max_token_bytes was never verified, so never kept. */
	if (cred_cache_for(req->conf) != NULL &&
	    jose_token_hash(cred_hkey, sizeof(cred_hkey), pw, len, h) == 0) {
		switch (cred_cache_get(req, h, out, why)) {
		case 1:
			return (CRED_OK);
		case -1:
			return (CRED_FAIL);
		default:
			break;
		}
	}
	r = cred_idp_verify(req, pw, len, out, why, &unknown, kid,
	    sizeof(kid), &name);
	if (r == CRED_OK || !unknown || name == NULL)
		return (r);
	if ((cw = calloc(1, sizeof(*cw))) == NULL ||
	    (cw->pw = malloc(len + 1)) == NULL)
		fatal("cred_check");
	memcpy(cw->pw, pw, len);
	cw->pw[len] = '\0';
	cw->len = len;
	cw->req = req;
	cw->done = done;
	switch (oidc_unknown_kid(req->c->ctx, name, kid, cred_wait_done, cw,
	    &cw->w, &owhy)) {
	case OIDC_KID_WAIT:
		req_stage_set(req, &cred_stage_ops, cw);
		log_debug("%llu.%u credential waits for issuer %s keys",
		    (unsigned long long)req->c->id, req->seq, name);
		return (CRED_WAIT);
	case OIDC_KID_KNOWN:
		/* A fetch landed meanwhile: once more, no wait. */
		cred_wait_destroy(cw);
		r = cred_idp_verify(req, pw, len, out, why, &unknown, kid,
		    sizeof(kid), &name);
		return (r);
	default:
		cred_wait_destroy(cw);
		return (CRED_FAIL);	/* *why: unknown_kid */
	}
}
