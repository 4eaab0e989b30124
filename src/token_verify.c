/*
 * token_verify.c: the gateway's own tokens as the identity stage verifies
 * them (token_verify, token_principal), and the refcounted tok_ident they
 * become.  The token service (token.c) issues them and verifies a refresh
 * token with token_verify.
 *
 * Verified gateway tokens are kept in a tcache (by keyed hash) until
 * their exp, as refcounted tok_ident values, so a request keeps its
 * strings while the cache moves on.  The cache is emptied whenever the
 * configuration snapshot changes: a key removed by a reload verifies
 * nothing from then on.  Revocations (revoke.c) purge it: token_listen.
 */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "portcullis.h"
#include "jose.h"
#include "scope.h"
#include "tcache.h"
#include "revoke.h"
#include "token_int.h"

/* Process state: one event loop, one cache. */
static struct tcache		*tok_cache;
/* Referenced, so a new snapshot never reuses its address unnoticed. */
static struct config		*tok_cache_conf;
static size_t			 tok_cache_size;
static unsigned char		 tok_hkey[32];
static int			 tok_hkey_set;

/* Drop a reference; the last one frees the identity. */
void
tok_ident_unref(struct tok_ident *ti)
{
	size_t	i;

	if (ti == NULL || --ti->refcnt > 0)
		return;
	free(ti->subject);
	free(ti->secret_id);
	for (i = 0; i < ti->ngroups; i++)
		free(ti->groups[i]);
	free(ti->groups);
	for (i = 0; i < ti->nclaims; i++) {
		free((char *)ti->claims[i].name);
		free((char *)ti->claims[i].value);
	}
	free(ti->claims);
	scope_set_free(ti->access);
	free(ti);
}

static void
tok_cache_free_val(void *v)
{
	tok_ident_unref(v);
}

/* The cache for this snapshot: emptied when the snapshot changed. */
static struct tcache *
tok_cache_for(const struct config *conf)
{
	const struct config_token	*tk = conf->identity->token;

	if (!tok_hkey_set) {
		arc4random_buf(tok_hkey, sizeof(tok_hkey));
		tok_hkey_set = 1;
	}
	if (tok_cache != NULL && tok_cache_size != tk->cache_entries) {
		tcache_free(tok_cache);
		tok_cache = NULL;
	}
	if (tok_cache == NULL) {
		if ((tok_cache = tcache_new(tk->cache_entries,
		    tok_cache_free_val)) == NULL)
			return (NULL);
		tok_cache_size = tk->cache_entries;
	} else if (tok_cache_conf != conf)
		tcache_clear(tok_cache);
	if (tok_cache_conf != conf) {
		if (tok_cache_conf != NULL)
			config_unref(tok_cache_conf);
		tok_cache_conf = (struct config *)conf;
		config_ref(tok_cache_conf);
	}
	return (tok_cache);
}

struct tok_revoke {
	const char	*subject;	/* NULL: every subject */
	int64_t		 before;	/* 0: whenever issued */
	const char	*secret_id;	/* set: that secret's, whoever's */
};

static int
tok_revoke_pred(const void *val, void *arg)
{
	const struct tok_ident	*ti = val;
	const struct tok_revoke	*rv = arg;

	if (rv->secret_id != NULL)
		return (ti->secret_id != NULL &&
		    strcmp(ti->secret_id, rv->secret_id) == 0);
	return ((rv->subject == NULL || strcmp(ti->subject, rv->subject) ==
	    0) && (rv->before == 0 || ti->iat < rv->before));
}

/*
 * Revocation (next session) drops the cached verifications of a
 * subject's tokens (NULL: everyone's) issued before `before` (0: all),
 * besides refusing them in token_verify.  How many were dropped.
 */
size_t
token_cache_revoke(const char *subject, int64_t before)
{
	struct tok_revoke	rv = { subject, before, NULL };

	if (tok_cache == NULL)
		return (0);
	return (tcache_purge(tok_cache, tok_revoke_pred, &rv));
}

/* What revoke.c tells: drop the cached verifications it concerns. */
static void
tok_revoked(const struct revoke_event *ev, void *arg)
{
	struct tok_revoke	sr = { NULL, 0, NULL };
	size_t			n = 0;

	switch (ev->kind) {
	case REVOKE_SUBJECT:
		n = token_cache_revoke(ev->subject, ev->not_before);
		n += cred_cache_revoke(ev->subject, ev->not_before);
		break;
	case REVOKE_ALL:
		n = token_cache_revoke(NULL, ev->not_before);
		n += cred_cache_revoke(NULL, ev->not_before);
		break;
	case REVOKE_RESYNCED:
		/* Whatever was missed while away: verify everything again. */
		if (tok_cache != NULL) {
			n = tcache_count(tok_cache);
			tcache_clear(tok_cache);
		}
		n += cred_cache_clear();	/* IdP tokens: credential.c */
		break;
	case REVOKE_SECRET:
		/* Its tokens; its record: secrets.c's own cache. */
		sr.secret_id = ev->secret_id;
		if (tok_cache != NULL)
			n = tcache_purge(tok_cache, tok_revoke_pred, &sr);
		break;
	default:
		return;
	}
	if (n > 0)
		log_info("- token cache_purged entries=%zu", n);
}

/* Follow revocations (server.c, once ctx->revoke exists). */
void
token_listen(struct pc_ctx *ctx)
{
	if (ctx->revoke != NULL &&
	    revoke_listen(ctx->revoke, tok_revoked, NULL) == -1)
		log_warn("- token revocation listener refused");
}

/* At shutdown. */
void
token_free(void)
{
	tcache_free(tok_cache);
	tok_cache = NULL;
	cred_cache_free();
	if (tok_cache_conf != NULL)
		config_unref(tok_cache_conf);
	tok_cache_conf = NULL;
}

/* Add one claim (copied) to an identity; -1 past max. */
int
tok_ident_add_claim(struct tok_ident *ti, const char *name,
    const char *value, size_t max)
{
	struct principal_claim	*c;

	if (ti->nclaims >= max)
		return (-1);
	if ((c = reallocarray(ti->claims, ti->nclaims + 1,
	    sizeof(*c))) == NULL)
		fatal("reallocarray");
	ti->claims = c;
	if ((c[ti->nclaims].name = strdup(name)) == NULL ||
	    (c[ti->nclaims].value = strdup(value)) == NULL)
		fatal("strdup");
	ti->nclaims++;
	return (0);
}

/*
 * The IdP claims a gateway token carries ({"name": ["value", ...]}) back
 * into the identity, within the claim bounds; -1 when the member is
 * malformed or over them.
 */
static int
tok_claims_read(struct tok_ident *ti, const json_t *o,
    const struct config_token *tk)
{
	const char	*name;
	json_t		*vals, *v;
	size_t		 i;

	if (o == NULL)
		return (0);
	if (!json_is_object(o))
		return (-1);
	json_object_foreach((json_t *)o, name, vals) {
		if (!json_is_array(vals) || strlen(name) > tk->max_claim_bytes)
			return (-1);
		json_array_foreach(vals, i, v) {
			if (!json_is_string(v) ||
			    json_string_length(v) > tk->max_claim_bytes ||
			    strlen(json_string_value(v)) !=
			    json_string_length(v) ||
			    tok_ident_add_claim(ti, name, json_string_value(v),
			    tk->max_claims) == -1)
				return (-1);
		}
	}
	return (0);
}

/*
 * How long a verified token may stay cached: until its exp, but never
 * past the valid_until of the rotated-out key that signed it (from then
 * on that key verifies nothing, cached or not).
 */
static int64_t
tok_cache_until(const struct config_token *tk, const char *tok, size_t len,
    int64_t exp)
{
	struct jose_peek	 pk;
	const struct jwk_key	*k;

	if (jose_peek(tok, len, tk->max_token_bytes, &pk) != JOSE_OK)
		return (0);	/* not cached */
	if (pk.kid[0] != '\0' && (k = jwk_set_find(tk->keys, pk.kid,
	    strlen(pk.kid))) != NULL && k->not_after != 0 &&
	    k->not_after + 1 < exp)
		return (k->not_after + 1);
	return (exp);
}

/*
 * Whether a verified token is revoked: its subject's (or everyone's)
 * tokens issued before a time, or the secret it was issued for
 * (`secret revoke`: its access tokens die with it, not at their exp).
 */
static int
tok_ident_revoked(struct req *req, const struct tok_ident *ti)
{
	const struct revoke	*rv = req->c->ctx->revoke;

	return (revoke_check(rv, ti->subject, ti->iat) ||
	    (ti->secret_id != NULL && revoke_check_secret(rv, ti->secret_id)));
}

/*
 * Verify a gateway token (an access token, or with refresh set a
 * refresh token) of len bytes.  NULL and a new reference in *out, or the
 * reason it was refused (a fixed name, never a piece of the token).
 */
const char *
token_verify(struct req *req, const char *tok, size_t len, int refresh,
    struct tok_ident **out)
{
	const struct config		*conf = req->conf;
	const struct config_token	*tk;
	struct jose_verify_opts		 o;
	struct jose_claims		*cl = NULL;
	struct tok_ident		*ti;
	struct tcache			*tc = NULL;
	enum jose_reason		 r;
	unsigned char			 h[32];
	char				 aud[TOK_AUD_MAX];
	const char			*auds[1], *use, *am, *why = NULL;
	int64_t				 now = tok_now();
	size_t				 i;
	int				 m;

	*out = NULL;
	if (conf->identity == NULL || (tk = conf->identity->token) == NULL ||
	    tk->keys == NULL)
		return ("no_token_service");
	if (len > tk->max_token_bytes)
		return (jose_reason_name(JOSE_R_TOO_LARGE));
	if (!refresh && (tc = tok_cache_for(conf)) != NULL &&
	    jose_token_hash(tok_hkey, sizeof(tok_hkey), tok, len, h) == 0 &&
	    (ti = tcache_get(tc, h, now)) != NULL) {
		/* From memory: a revocation since it was cached counts. */
		if (tok_ident_revoked(req, ti))
			return ("revoked");
		ti->refcnt++;
		*out = ti;
		return (NULL);
	}
	if (refresh)
		snprintf(aud, sizeof(aud), "%s%s", TOK_REFRESH_AUD_PREFIX,
		    tk->service);
	else
		snprintf(aud, sizeof(aud), "%s", tk->service);
	auds[0] = aud;
	jose_verify_opts_init(&o, now);
	o.leeway = tk->leeway;
	o.max_token_bytes = tk->max_token_bytes;
	o.max_claims = tk->max_claims;
	o.max_claim_bytes = tk->max_claim_bytes;
	o.issuer = tk->issuer;
	o.audiences = auds;
	o.naudiences = 1;
	o.groups_claim = "groups";
	if ((r = jose_verify(tk->keys, tok, len, &o, &cl)) != JOSE_OK)
		return (jose_reason_name(r));
	/* The second barrier between the two types, besides aud. */
	use = jose_claim_string(cl, "token_use");
	if (use == NULL || strcmp(use, refresh ? "refresh" : "access") != 0) {
		why = "wrong_token_type";
		goto fail;
	}
	am = jose_claim_string(cl, "auth_method");
	for (m = 0; am != NULL && m < AUTH_METHOD__MAX; m++)
		if (strcmp(am, principal_method_name(m)) == 0)
			break;
	if (am == NULL || m == AUTH_METHOD__MAX || cl->subject == NULL ||
	    (m == AUTH_ANONYMOUS) != (cl->subject[0] == '\0')) {
		why = jose_reason_name(JOSE_R_BAD_CLAIM);
		goto fail;
	}
	if ((ti = calloc(1, sizeof(*ti))) == NULL)
		fatal("calloc");
	ti->refcnt = 1;
	ti->method = m;
	ti->iat = cl->iat;
	ti->exp = cl->exp;
	ti->refresh = refresh;
	if ((ti->subject = strdup(cl->subject)) == NULL ||
	    (cl->ngroups > 0 && (ti->groups = calloc(cl->ngroups,
	    sizeof(*ti->groups))) == NULL))
		fatal("token_verify");
	for (i = 0; i < cl->ngroups; i++)
		if ((ti->groups[i] = strdup(cl->groups[i])) == NULL)
			fatal("strdup");
	ti->ngroups = cl->ngroups;
	/* A secret's: which one, for the refresh grant to ask about. */
	if (m == AUTH_SECRET && (am = jose_claim_string(cl, "secret_id")) !=
	    NULL && (ti->secret_id = strdup(am)) == NULL)
		fatal("strdup");
	if (tok_claims_read(ti, json_object_get(cl->payload, "idp_claims"),
	    tk) == -1) {
		tok_ident_unref(ti);
		why = jose_reason_name(JOSE_R_BAD_CLAIM);
		goto fail;
	}
	if (!refresh) {
		if ((ti->access = scope_set_new(tk->max_scopes)) == NULL)
			fatal("scope_set_new");
		if (scope_from_access(ti->access, json_object_get(cl->payload,
		    "access")) != SCOPE_OK) {
			tok_ident_unref(ti);
			why = jose_reason_name(JOSE_R_BAD_CLAIM);
			goto fail;
		}
	}
	jose_claims_free(cl);
	/*
	 * `portcullis token revoke`: every token of the subject (or of
	 * everyone) issued before the not-before time is refused (a
	 * refresh grant also needs the table current: token_refresh).
	 */
	if (tok_ident_revoked(req, ti)) {
		tok_ident_unref(ti);
		return ("revoked");
	}
	if (tc != NULL) {
		ti->refcnt++;
		tcache_put(tc, h, ti, tok_cache_until(tk, tok, len, ti->exp),
		    now);
	}
	*out = ti;
	return (NULL);
fail:
	jose_claims_free(cl);
	return (why);
}

/*
 * The principal of a request carrying a verified access token.  An
 * anonymous caller's token keeps it anonymous (policy sees who got the
 * token, restricted by its access); an mTLS caller's keeps its
 * certificate subject, which the token asserts.
 */
void
token_principal(struct req *req, struct tok_ident *ti)
{
	struct principal	*p = &req->principal;

	req->tok = ti;
	p->subject = ti->subject;
	p->groups = (const char *const *)ti->groups;
	p->ngroups = ti->ngroups;
	p->claims = ti->claims;
	p->nclaims = ti->nclaims;
	switch (ti->method) {
	case AUTH_ANONYMOUS:
		p->method = AUTH_ANONYMOUS;
		break;
	case AUTH_MTLS:
		p->method = AUTH_TOKEN;
		p->mtls_subject = ti->subject;
		break;
	default:
		p->method = AUTH_TOKEN;
		break;
	}
}
