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
 */
#include <stdlib.h>
#include <string.h>

#include "portcullis.h"
#include "jose.h"
#include "oidc.h"
#include "revoke.h"
#include "secret.h"
#include "secrets.h"

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
	oidc_keys_unref(keys);
	if (r == JOSE_R_KID_UNKNOWN) {
		*kid_unknown = 1;
		snprintf(kid, kidlen, "%s", pk.kid);
	}
	if (r != JOSE_OK) {
		*why = jose_reason_name(r);
		return (CRED_FAIL);
	}
	for (i = 0; i < is->nrequired_claims; i++) {
		v = jose_claim_string(cl, is->required_claims[i].claim);
		if (v == NULL ||
		    strcmp(v, is->required_claims[i].equals) != 0) {
			jose_claims_free(cl);
			*why = "required_claim";
			return (CRED_FAIL);
		}
	}
	sub = jose_claim_string(cl, is->subject_claim != NULL ?
	    is->subject_claim : "sub");
	if (sub == NULL || *sub == '\0') {
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
		jose_claims_free(cl);
		tok_ident_unref(ti);
		*why = "bad_subject";
		return (CRED_FAIL);
	}
	if (revoke_check(req->c->ctx->revoke, ti->subject, ti->iat)) {
		jose_claims_free(cl);
		tok_ident_unref(ti);
		*why = "revoked";
		return (CRED_FAIL);
	}
	/* Raw, for the policy's claim conditions (bounded by jose.c). */
	for (i = 0; i < cl->nclaims; i++)
		(void)tok_ident_add_claim(ti, cl->claims[i].name,
		    cl->claims[i].value, cl->nclaims);
	jose_claims_free(cl);
	*out = ti;
	return (CRED_OK);
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
