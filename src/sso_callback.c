/*
 * sso_callback.c: the second half of a browser sign-in (identity.sso;
 * sso.c routes it here): GET /oauth2/callback.  The provider's error
 * shown plainly; the state, bound to this browser by the login cookie,
 * taken once from Redis (GETDEL, so a replayed callback finds nothing);
 * the code exchanged at the issuer's token endpoint (oidc_client.c, PKCE
 * verifier); the id_token verified (jose.c: keys, iss, aud, azp, nonce,
 * exp; a revoked subject refused); then the session stored with its
 * index in Redis and its cookie set.  A failed callback's audit record
 * names why in auth_failure, never a code, token or cookie.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <hiredis/hiredis.h>
#include <jansson.h>

#include "portcullis.h"
#include "jose.h"
#include "oidc.h"
#include "oidc_client.h"
#include "revoke.h"
#include "secret.h"
#include "sso.h"

/* --- /oauth2/callback --- */

/* A failed callback: the record says why, the page says it plainly. */
static void
sso_callback_fail(struct sso_op *op, int status, const char *reason,
    const char *text)
{
	struct req	*req = sso_take(op);
	struct headers	 h;

	req->auth_failure = reason;
	metrics_count_named(req->c->ctx, M_SSO_LOGINS, reason);
	log_info("%llu.%u sso callback_failed reason=%s",
	    (unsigned long long)req->c->id, req->seq, reason);
	sso_op_free(op);
	headers_init(&h);
	sso_cookie(req, &h, 1, NULL, 0);
	sso_message(req, status, "Sign-in failed", text, 1, &h);
	headers_clear(&h);
}

static void
sso_session_stored(struct sso_op *op, redisReply *r, int idx)
{
	const struct config_sso	*so = op->req->conf->identity->sso;
	struct req		*req;
	struct headers		 h;

	if (r == NULL || r->type != REDIS_REPLY_STATUS) {
		sso_callback_fail(op, 503, "session_store_unavailable",
		    "The session store did not answer. Sign in again in a "
		    "moment.");
		return;
	}
	req = sso_take(op);
	/* The record's subject: the person who just signed in. */
	sso_principal(req, op->ti);
	op->ti = NULL;
	metrics_count_named(req->c->ctx, M_SSO_LOGINS, "ok");
	log_info("%llu.%u sso login subject=\"%s\"",
	    (unsigned long long)req->c->id, req->seq,
	    req->principal.subject);
	headers_init(&h);
	sso_cookie(req, &h, 0, op->sid, so->session_ttl_ms / 1000);
	sso_cookie(req, &h, 1, NULL, 0);
	sso_op_free(op);
	sso_redirect(req, 303, "/", &h);
	headers_clear(&h);
}

/* "prefix" + s, new. */
static char *
sso_prefixed(const char *prefix, const char *s)
{
	char	*r;

	if (asprintf(&r, "%s%s", prefix != NULL ? prefix : "", s) == -1)
		fatal("asprintf");
	return (r);
}

/*
 * Verify the id_token (OIDC Core 3.1.3.7): the issuer's keys and
 * algorithms, iss exact, aud naming client_id (and azp it when several),
 * exp, nonce equal to the one this sign-in sent.  0 with op->ti and the
 * session record made; -1 with *reason.
 */
static int
sso_verify_id_token(struct sso_op *op, const char *idt, size_t len,
    const char **reason)
{
	struct req			*req = op->req;
	const struct config_sso		*so = req->conf->identity->sso;
	const struct config_oidc_issuer	*is = NULL;
	struct jose_verify_opts		 o;
	struct jose_claims		*cl = NULL;
	struct oidc_keys		*keys;
	struct tok_ident		*ti;
	enum jose_reason		 r;
	const char			*aud[1], *sub, *v;
	json_t				*groups, *claims, *azp;
	size_t				 i;
	int				 a;

	for (i = 0; i < req->conf->identity->nissuers; i++)
		if (strcmp(req->conf->identity->issuers[i].name,
		    so->issuer) == 0)
			is = &req->conf->identity->issuers[i];
	if (is == NULL) {
		*reason = "unknown_issuer";
		return (-1);
	}
	if (len > so->max_id_token_bytes) {
		*reason = "id_token_too_large";
		return (-1);
	}
	if ((keys = oidc_keys_get(op->ctx, is->name)) == NULL) {
		*reason = "issuer_keys_unavailable";
		return (-1);
	}
	jose_verify_opts_init(&o, (int64_t)time(NULL));
	o.leeway = is->leeway_ms / 1000;
	o.max_token_bytes = so->max_id_token_bytes;
	if (req->conf->identity->token != NULL) {
		o.max_claims = req->conf->identity->token->max_claims;
		o.max_claim_bytes = req->conf->identity->token->max_claim_bytes;
	}
	o.issuer = is->issuer;
	aud[0] = so->client_id;
	o.audiences = aud;
	o.naudiences = 1;
	o.groups_claim = is->groups_claim;
	o.algs = 0;
	for (i = 0; i < is->nalgorithms; i++)
		if ((a = jose_alg_lookup(is->algorithms[i],
		    strlen(is->algorithms[i]))) >= 0)
			o.algs |= JOSE_ALG_BIT(a);
	if (o.algs == 0)
		o.algs = JOSE_ALG_BIT(JOSE_ALG_RS256);
	r = jose_verify(oidc_keys_set(keys), idt, len, &o, &cl);
	oidc_keys_unref(keys);
	if (r != JOSE_OK) {
		*reason = jose_reason_name(r);
		return (-1);
	}
	v = jose_claim_string(cl, "nonce");
	if (v == NULL || !web_ct_equal(v, op->nonce)) {
		jose_claims_free(cl);
		*reason = "nonce_mismatch";
		return (-1);
	}
	/*
	 * OIDC Core 3.1.3.7: with several audiences azp must be there, and
	 * when present (one audience too) it must be this client.
	 */
	azp = json_object_get(cl->payload, "azp");
	if ((cl->naudiences > 1 && azp == NULL) || (azp != NULL &&
	    (!json_is_string(azp) || strcmp(json_string_value(azp),
	    so->client_id) != 0))) {
		jose_claims_free(cl);
		*reason = "wrong_azp";
		return (-1);
	}
	sub = jose_claim_string(cl, is->subject_claim != NULL ?
	    is->subject_claim : "sub");
	if (sub == NULL || *sub == '\0' || !secret_field_ok(sub, 0)) {
		jose_claims_free(cl);
		*reason = "no_subject";
		return (-1);
	}
	if ((ti = calloc(1, sizeof(*ti))) == NULL)
		fatal("calloc");
	ti->refcnt = 1;
	ti->method = AUTH_OIDC;
	ti->iat = cl->iat;
	ti->exp = cl->exp;
	ti->subject = sso_prefixed(is->prefix, sub);
	if (cl->ngroups > 0 && (ti->groups = calloc(cl->ngroups,
	    sizeof(*ti->groups))) == NULL)
		fatal("calloc");
	for (i = 0; i < cl->ngroups; i++)
		ti->groups[ti->ngroups++] = sso_prefixed(is->prefix,
		    cl->groups[i]);
	for (i = 0; i < cl->nclaims && i < SSO_CLAIMS_MAX; i++)
		(void)tok_ident_add_claim(ti, cl->claims[i].name,
		    cl->claims[i].value, cl->nclaims);
	if (!secret_field_ok(ti->subject, 0) ||
	    revoke_check(op->ctx->revoke, ti->subject, ti->iat ? ti->iat :
	    (int64_t)time(NULL))) {
		jose_claims_free(cl);
		tok_ident_unref(ti);
		*reason = "revoked";
		return (-1);
	}
	groups = json_array();
	claims = json_array();
	for (i = 0; i < ti->ngroups; i++)
		json_array_append_new(groups, json_string(ti->groups[i]));
	for (i = 0; i < ti->nclaims; i++)
		json_array_append_new(claims, json_pack("[ss]",
		    ti->claims[i].name, ti->claims[i].value));
	op->sess = json_pack("{s:s, s:o, s:o, s:s, s:I, s:I}", "sub",
	    ti->subject, "groups", groups, "claims", claims, "csrf", "",
	    "created", (json_int_t)time(NULL), "expires",
	    (json_int_t)(time(NULL) + so->session_ttl_ms / 1000));
	if (op->sess == NULL)
		fatal("json_pack");
	/* The provider's own sub: what its userinfo must say (re-check). */
	if ((v = jose_claim_string(cl, "sub")) != NULL)
		json_object_set_new(op->sess, "idp_sub", json_string(v));
	if ((v = jose_claim_string(cl, "name")) != NULL)
		json_object_set_new(op->sess, "name", json_string(v));
	if ((v = jose_claim_string(cl, "email")) != NULL)
		json_object_set_new(op->sess, "email", json_string(v));
	jose_claims_free(cl);
	op->ti = ti;
	return (0);
}

/*
 * KEYS: the session, the person's session index (for "sign out
 * everywhere").  ARGV: the record, its TTL in ms, session_index_rebuild.
 * The index is rebuilt from its live members when it grows (ended
 * sessions leave no trace else), so it stays about as large as the
 * person's live sessions.  It lives as long as its longest member: a
 * shorter session (another instance's or a reload's session_lifetime)
 * must not end it while an older session still runs.
 */
static const char sso_session_lua[] =
    "redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])\n"
    "local ttl = tonumber(ARGV[2])\n"
    "if redis.call('SCARD', KEYS[2]) >= tonumber(ARGV[3]) then\n"
    "  local live = {}\n"
    "  for _, m in ipairs(redis.call('SMEMBERS', KEYS[2])) do\n"
    "    local t = redis.call('PTTL', m)\n"
    "    if t ~= -2 then live[#live + 1] = m end\n"
    "    if t > ttl then ttl = t end\n"
    "  end\n"
    "  redis.call('DEL', KEYS[2])\n"
    "  for _, m in ipairs(live) do redis.call('SADD', KEYS[2], m) end\n"
    "else\n"
    "  local t = redis.call('PTTL', KEYS[2])\n"
    "  if t > ttl then ttl = t end\n"
    "end\n"
    "redis.call('SADD', KEYS[2], KEYS[1])\n"
    "redis.call('PEXPIRE', KEYS[2], ttl)\n"
    "return redis.status_reply('OK')\n";

static void
sso_exchanged(void *arg, json_t *doc, const char *error, const char *why)
{
	struct sso_op		*op = arg;
	const struct config_sso	*so = op->req->conf->identity->sso;
	json_t			*idt;
	char			 csrf[WEB_TOKEN_LEN + 1], key[512], ttl[32];
	char			 idx[1024], nrb[32], *rec;
	const char		*reason, *argv[8];

	op->treq = NULL;
	if (doc == NULL) {
		log_info("%llu.%u sso code_exchange_failed why=\"%s\"",
		    (unsigned long long)op->req->c->id, op->req->seq, why);
		sso_callback_fail(op, 502, error != NULL &&
		    strcmp(error, "invalid_grant") == 0 ? "code_refused" :
		    "code_exchange_failed", error != NULL &&
		    strcmp(error, "invalid_grant") == 0 ?
		    "The identity provider refused the sign-in code (used "
		    "before, or expired). Sign in again." :
		    "The identity provider did not complete the sign-in.");
		return;
	}
	idt = json_object_get(doc, "id_token");
	if (!json_is_string(idt)) {
		sso_callback_fail(op, 502, "no_id_token", "The identity "
		    "provider sent no id_token.");
		return;
	}
	if (sso_verify_id_token(op, json_string_value(idt),
	    json_string_length(idt), &reason) == -1) {
		sso_callback_fail(op, 403, reason, "The identity provider's "
		    "answer did not pass the gateway's checks. Sign in again; "
		    "if it keeps failing, tell your administrator.");
		return;
	}
	if (web_random_token(op->sid) == -1 || web_random_token(csrf) == -1)
		fatalx("no random bytes");
	json_object_set_new(op->sess, "csrf", json_string(csrf));
	web_sha256_hex(op->sid, strlen(op->sid), op->sid_hash);
	snprintf(key, sizeof(key), "%ssession:%s", so->key_prefix,
	    op->sid_hash);
	sso_keep_provider_token(op, doc, key);
	if ((rec = json_dumps(op->sess, JSON_COMPACT)) == NULL)
		fatal("json_dumps");
	if (strlen(rec) > SSO_SESSION_MAX) {
		free(rec);
		sso_callback_fail(op, 403, "claims_too_large", "Your account "
		    "carries more groups and claims than a session holds.");
		return;
	}
	snprintf(ttl, sizeof(ttl), "%d", so->session_ttl_ms);
	snprintf(idx, sizeof(idx), "%ssessions:%s", so->key_prefix,
	    op->ti->subject);
	argv[0] = "EVAL";
	argv[1] = sso_session_lua;
	argv[2] = "2";
	argv[3] = key;
	argv[4] = idx;
	argv[5] = rec;
	argv[6] = ttl;
	snprintf(nrb, sizeof(nrb), "%zu", so->session_index_rebuild);
	argv[7] = nrb;
	if (sso_send(op, sso_link(op->ctx), sso_session_stored, 0, 8,
	    argv) == -1)
		sso_callback_fail(op, 503, "session_store_unavailable",
		    "The session store is not connected. Sign in again in a "
		    "moment.");
	explicit_bzero(csrf, sizeof(csrf));
	free(rec);
}

static void
sso_state_taken(struct sso_op *op, redisReply *r, int idx)
{
	struct req		*req = op->req;
	const struct config_sso	*so = req->conf->identity->sso;
	json_t			*j;
	json_error_t		 jerr;
	const char		*v, *n, *why;
	char			 code[16384 + 1], redir[2048], enc[16384 * 3];
	struct wbuf		 form;
	char			 logid[64];

	if (r == NULL || (r->type != REDIS_REPLY_STRING &&
	    r->type != REDIS_REPLY_NIL)) {
		sso_callback_fail(op, 503, "session_store_unavailable",
		    "The session store did not answer. Sign in again in a "
		    "moment.");
		return;
	}
	if (r->type == REDIS_REPLY_NIL) {
		sso_callback_fail(op, 400, "state_unknown", "This sign-in is "
		    "unknown, expired or already finished. Sign in again.");
		return;
	}
	if ((j = json_loadb(r->str, r->len, 0, &jerr)) == NULL ||
	    (v = json_string_value(json_object_get(j, "v"))) == NULL ||
	    (n = json_string_value(json_object_get(j, "n"))) == NULL ||
	    !web_token_ok(v) || !web_token_ok(n)) {
		json_decref(j);
		sso_callback_fail(op, 400, "state_damaged", "This sign-in's "
		    "record is damaged. Sign in again.");
		return;
	}
	snprintf(op->verifier, sizeof(op->verifier), "%s", v);
	snprintf(op->nonce, sizeof(op->nonce), "%s", n);
	json_decref(j);
	if (url_query_get(req->query, strlen(req->query), "code", code,
	    sizeof(code)) == -1 || code[0] == '\0') {
		sso_callback_fail(op, 400, "no_code", "The identity provider "
		    "sent no code.");
		return;
	}
	sso_redirect_uri(req->conf, redir, sizeof(redir));
	/* RFC 6749 4.1.3; RFC 7636 4.5. */
	wbuf_init(&form);
	wbuf_str(&form, "grant_type=authorization_code&code=");
	(void)url_pct_encode(code, enc, sizeof(enc));
	wbuf_str(&form, enc);
	wbuf_str(&form, "&redirect_uri=");
	(void)url_pct_encode(redir, enc, sizeof(enc));
	wbuf_str(&form, enc);
	wbuf_printf(&form, "&code_verifier=%s", op->verifier);
	explicit_bzero(code, sizeof(code));
	snprintf(logid, sizeof(logid), "%llu.%u sso",
	    (unsigned long long)req->c->id, req->seq);
	op->treq = oidc_token_request(op->ctx, req->conf, so->issuer,
	    so->client_id, so->client_secret, form.p,
	    so->max_token_response_bytes, sso_exchanged, op, logid, &why);
	wbuf_free(&form);
	if (op->treq == NULL) {
		log_warn("%s token_endpoint_unusable why=\"%s\"", logid, why);
		sso_callback_fail(op, 503, "token_endpoint_unusable", "The "
		    "identity provider's token endpoint cannot be used now.");
	}
}

/* Finish a sign-in at /oauth2/callback (from sso_start). */
void
sso_callback(struct sso_op *op)
{
	struct req		*req = op->req;
	const struct config_sso	*so = req->conf->identity->sso;
	const char		*q = req->query != NULL ? req->query : "";
	size_t			 qlen = strlen(q);
	char			 err[128], state[1024 + 1], code[16384 + 1];
	char			 ck[WEB_TOKEN_LEN + 1], name[128], key[512];
	const char		*argv[2];

	/* RFC 6749 4.1.2.1: the provider says no (access_denied, ...). */
	if (url_query_get(q, qlen, "error", err, sizeof(err)) == 0) {
		char	 text[256];
		size_t	 i;

		/*
		 * This needs no state: any site may link here.  Only an error
		 * code's shape is shown, never a sentence of the linker's.
		 */
		for (i = 0; err[i] != '\0'; i++)
			if (!((err[i] >= 'a' && err[i] <= 'z') ||
			    err[i] == '_'))
				break;
		if (err[i] != '\0' || i == 0 || i > 64)
			snprintf(err, sizeof(err), "an error");
		snprintf(text, sizeof(text), "The identity provider did not "
		    "sign you in (%s).%s", err, strcmp(err, "access_denied") ==
		    0 ? " Access was denied or the sign-in was cancelled." :
		    "");
		req->auth_failure = strcmp(err, "access_denied") == 0 ?
		    "provider_access_denied" : "provider_error";
		metrics_count_named(req->c->ctx, M_SSO_LOGINS,
		    req->auth_failure);
		sso_op_message(op, 403, "Sign-in refused", text, 1);
		return;
	}
	if (url_query_get(q, qlen, "state", state, sizeof(state)) == -1 ||
	    strlen(state) > so->max_state_bytes) {
		sso_callback_fail(op, 400, "bad_state", "The sign-in answer "
		    "has no usable state parameter.");
		return;
	}
	if (url_query_get(q, qlen, "code", code, sizeof(code)) == -1 ||
	    strlen(code) > so->max_code_bytes || code[0] == '\0') {
		explicit_bzero(code, sizeof(code));
		sso_callback_fail(op, 400, "bad_code", "The sign-in answer "
		    "has no usable code parameter.");
		return;
	}
	explicit_bzero(code, sizeof(code));
	if (!web_token_ok(state)) {
		sso_callback_fail(op, 400, "state_unknown", "This sign-in is "
		    "unknown, expired or already finished. Sign in again.");
		return;
	}
	if (web_cookie_get(headers_get(&req->msg->hdrs, "Cookie"),
	    so->max_cookie_bytes, sso_cookie_name(req, 1, name, sizeof(name)),
	    ck, sizeof(ck)) == -1 ||
	    !web_ct_equal(ck, state)) {
		sso_callback_fail(op, 400, "state_not_this_browser", "This "
		    "sign-in was not started in this browser. Sign in again.");
		return;
	}
	snprintf(op->state, sizeof(op->state), "%s", state);
	snprintf(key, sizeof(key), "%sstate:%s", so->key_prefix, state);
	argv[0] = "GETDEL";	/* once: a replayed callback finds nothing */
	argv[1] = key;
	if (sso_send(op, sso_link(op->ctx), sso_state_taken, 0, 2, argv) ==
	    -1)
		sso_callback_fail(op, 503, "session_store_unavailable",
		    "The session store is not connected. Sign in again in a "
		    "moment.");
}
