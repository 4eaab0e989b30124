/*
 * sso.c: sign-in for people in a browser (identity.sso; README "Sign-in
 * for people (browser)").  The gateway's own pages, routed from
 * req_route() and never proxied:
 *
 *	GET  /login		start the OpenID Connect authorization-code
 *				flow (PKCE S256, state, nonce) at the
 *				configured issuer
 *	GET  /oauth2/callback	finish it: the state taken once from Redis,
 *				the code exchanged (oidc_client.c), the
 *				id_token verified (jose.c), a session opened
 *	POST /logout		end the session (CSRF token)
 *	GET  /			the landing page (sso_account.c gathers it,
 *				sso_page.c writes it), or a sign-in link
 *				without a session
 *	POST /ui/secrets	create a secret, shown once (CSRF token;
 *				sso_account.c)
 *	POST /ui/secrets/revoke	revoke one of one's secrets (CSRF token;
 *				sso_account.c)
 *	GET  /ui/style.css	the one stylesheet
 *
 * The landing page lives at / because that is where a person who types
 * the registry's address into a browser arrives; registry clients never
 * ask for / (they use /v2/ and /token), so nothing else wants it.
 *
 * States and sessions live in Redis (the redis section), so any instance
 * finishes a sign-in another began and serves a session another opened.
 * A state is <prefix>state:<state>, kept state_lifetime and taken with
 * GETDEL, so a replayed callback finds nothing; it is also bound to the
 * browser that began it by a short cookie on /oauth2/ (login CSRF).  A
 * session id is 256 random bits in an HttpOnly, SameSite=Lax cookie
 * (Secure over TLS); Redis holds only <prefix>session:<SHA-256 of it>
 * with the subject, groups, the claims policy may use, the CSRF token and
 * the times, expiring with the session.
 *
 * A session is a principal only for these pages: identity.c never looks
 * at the cookie, so it opens nothing on /v2/ or /token; registry clients
 * use the secrets made here.  Each request's audit record (audit.c)
 * tells what happened: action "login" for /login, the callback and
 * /logout, with the subject once known and auth_failure naming why a
 * callback failed (never a code, token or cookie); action "secret" for a
 * secret created or revoked.
 *
 * Each operation that waits (Redis, the token endpoint) is the request's
 * stage: a client that goes away detaches it (op->req = NULL), the token
 * request is cancelled, and the last Redis reply frees it.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <hiredis/hiredis.h>
#include <jansson.h>

#include "portcullis.h"
#include "jose.h"
#include "oidc.h"
#include "oidc_client.h"
#include "policy.h"
#include "rds.h"
#include "revoke.h"
#include "secret.h"
#include "sso.h"

#define SSO_CLAIMS_MAX		64	/* string claims kept in a session */
#define SSO_SESSION_MAX		65536	/* a session record's bytes */

struct sso {
	struct pc_ctx		*ctx;
	struct rds		*link;
};

/* The redis link of the sign-in, made with the first use. */
struct rds *
sso_link(struct pc_ctx *ctx)
{
	static const struct rds_ops	 ops = { NULL, NULL, NULL };
	struct rds_params		 p;

	if (ctx->conf->redis == NULL)
		return (NULL);
	if (ctx->sso == NULL) {
		if ((ctx->sso = calloc(1, sizeof(*ctx->sso))) == NULL)
			fatal("calloc");
		ctx->sso->ctx = ctx;
		rds_params_init(&p, ctx->conf, "sso");
		if ((ctx->sso->link = rds_new(ctx->base, &p, &ops,
		    ctx->sso)) == NULL)
			fatalx("out of memory");
		rds_start(ctx->sso->link);
	}
	return (rds_ready(ctx->sso->link) ? ctx->sso->link : NULL);
}

/* At start: connect now, so the first sign-in finds the link up. */
void
sso_init(struct pc_ctx *ctx)
{
	if (ctx->conf->identity != NULL && ctx->conf->identity->sso != NULL)
		(void)sso_link(ctx);
}

void
sso_free(struct pc_ctx *ctx)
{
	if (ctx->sso == NULL)
		return;
	rds_free(ctx->sso->link);
	free(ctx->sso);
	ctx->sso = NULL;
}

/* --- operations --- */

static void
sso_rows_free(struct sso_op *op)
{
	size_t	 i;

	for (i = 0; i < op->nsecrets; i++)
		free(op->secrets[i].name);
	free(op->secrets);
	op->secrets = NULL;
	op->nsecrets = 0;
	for (i = 0; i < op->nactivity; i++) {
		free(op->activity[i].time);
		free(op->activity[i].action);
		free(op->activity[i].method);
		free(op->activity[i].path);
		free(op->activity[i].repository);
		free(op->activity[i].reference);
		free(op->activity[i].status);
		free(op->activity[i].decision);
	}
	free(op->activity);
	op->activity = NULL;
	op->nactivity = 0;
	for (i = 0; i < op->nact_ids; i++)
		free(op->act_ids[i]);
	free(op->act_ids);
	op->act_ids = NULL;
	op->nact_ids = 0;
}

void
sso_op_free(struct sso_op *op)
{
	oidc_token_cancel(op->treq);
	if (op->body != NULL)
		evbuffer_free(op->body);
	if (op->form != NULL) {
		explicit_bzero(op->form, strlen(op->form));
		free(op->form);
	}
	if (op->new_secret != NULL) {
		explicit_bzero(op->new_secret, strlen(op->new_secret));
		free(op->new_secret);
	}
	json_decref(op->sess);
	tok_ident_unref(op->ti);
	sso_rows_free(op);
	explicit_bzero(op->sid, sizeof(op->sid));
	explicit_bzero(op->verifier, sizeof(op->verifier));
	free(op);
}

static int	sso_sink(struct req *, struct evbuffer *, size_t);

/*
 * The stage's free hook: the request ended, failed or went away.  A token
 * request is cancelled; replies still on their way find op->req NULL and
 * the last one frees op.
 */
static void
sso_op_detach(void *arg)
{
	struct sso_op	*op = arg;
	struct req	*req = op->req;

	if (req != NULL && req->body_sink == sso_sink) {
		req->body_ready = 0;
		req->body_sink = NULL;
		req->body_sink_data = NULL;
		req->body_end = NULL;
	}
	op->req = NULL;
	oidc_token_cancel(op->treq);
	op->treq = NULL;
	if (op->pending == 0)
		sso_op_free(op);
}

static const struct req_stage_ops sso_stage_ops = {
	.name = "sso",
	.free = sso_op_detach,
};

static void
sso_on_reply(struct rds *l, redisReply *r, void *arg)
{
	struct sso_cmd	*c = arg;
	struct sso_op	*op = c->op;

	op->pending--;
	if (op->req == NULL) {
		if (op->pending == 0)
			sso_op_free(op);
	} else
		c->fn(op, r, c->idx);
	free(c);
}

/* Send one command on l; fn(op, reply or NULL, idx) follows.  -1: not. */
int
sso_send(struct sso_op *op, struct rds *l, sso_step *fn, int idx, int argc,
    const char **argv)
{
	struct sso_cmd	*c;
	size_t		 lens[16];
	int		 i;

	if (l == NULL || argc > 16)
		return (-1);
	for (i = 0; i < argc; i++)
		lens[i] = strlen(argv[i]);
	if ((c = calloc(1, sizeof(*c))) == NULL)
		fatal("calloc");
	c->op = op;
	c->fn = fn;
	c->idx = idx;
	if (rds_command_argv(l, sso_on_reply, c, argc, argv, lens) == -1) {
		free(c);
		return (-1);
	}
	op->pending++;
	return (0);
}

/* --- answers --- */

/* The headers every page carries: no caching, a strict CSP. */
void
sso_page_headers(struct headers *h)
{
	headers_init(h);
	headers_set(h, "Content-Security-Policy", "default-src 'none'; "
	    "style-src 'self'; form-action 'self'; frame-ancestors 'none'; "
	    "base-uri 'none'");
	headers_set(h, "X-Content-Type-Options", "nosniff");
	headers_set(h, "Referrer-Policy", "no-referrer");
	headers_set(h, "X-Frame-Options", "DENY");
	headers_set(h, "Cache-Control", "no-store");
}

/* Whether the session cookie must be Secure: served over TLS. */
static int
sso_secure(struct req *req)
{
	const struct config_sso	*so = req->conf->identity->sso;

	return (req->c->tls || (so->redirect_url != NULL &&
	    strncmp(so->redirect_url, "https:", 6) == 0) ||
	    (so->redirect_url == NULL && req->conf->external_url != NULL &&
	    strncmp(req->conf->external_url, "https:", 6) == 0));
}

/*
 * The session cookie's name (login 0) or the login cookie's (1).  Over
 * TLS both are __Host- prefixed: a browser takes such a cookie only from
 * this host (Secure, Path=/, no Domain), so a sibling host of a parent
 * domain cannot toss in its own sign-in's login cookie or its own
 * session id (login CSRF), and the gateway reads no other name.  Plain
 * http cannot have them (and cookies there are anyone's on the path).
 */
static const char *
sso_cookie_name(struct req *req, int login, char *buf, size_t len)
{
	snprintf(buf, len, "%s%s%s", sso_secure(req) ? "__Host-" : "",
	    req->conf->identity->sso->cookie_name, login ? "_login" : "");
	return (buf);
}

/*
 * Add a Set-Cookie for the session cookie (login 0) or the login cookie
 * (1): value (NULL: delete it) for max_age seconds.  The login cookie
 * stays on /oauth2/ over plain http; a __Host- one must be on /.
 */
static void
sso_cookie(struct req *req, struct headers *h, int login,
    const char *value, long max_age)
{
	char	 buf[512], name[128];

	snprintf(buf, sizeof(buf), "%s=%s; Path=%s; Max-Age=%ld; HttpOnly; "
	    "SameSite=Lax%s", sso_cookie_name(req, login, name, sizeof(name)),
	    value != NULL ? value : "", login && !sso_secure(req) ?
	    "/oauth2/" : "/", value != NULL ? max_age : 0L,
	    sso_secure(req) ? "; Secure" : "");
	headers_add(h, "Set-Cookie", 10, buf, strlen(buf));
}

/* Answer an HTML body with the page headers plus extra. */
void
sso_answer(struct req *req, int status, struct wbuf *b, struct headers *h)
{
	req_respond_simple(req, status, "text/html; charset=utf-8", b->p, h);
}

/* A message page (escaped), with the page headers and h's. */
static void
sso_message(struct req *req, int status, const char *title,
    const char *text, int sign_in, struct headers *extra)
{
	struct wbuf	 b;
	struct headers	 h;
	size_t		 i;

	sso_page_headers(&h);
	for (i = 0; extra != NULL && i < extra->n; i++)
		headers_add(&h, extra->v[i].name, extra->v[i].nlen,
		    extra->v[i].value, extra->v[i].vlen);
	wbuf_init(&b);
	sso_page_message(&b, title, text, sign_in);
	sso_answer(req, status, &b, &h);
	wbuf_free(&b);
	headers_clear(&h);
}

/* End op's stage (op stays ours) and return its request. */
struct req *
sso_take(struct sso_op *op)
{
	struct req	*req = op->req;

	op->pending++;		/* keep op through the detach */
	req_stage_end(req);
	op->pending--;
	return (req);
}

/* Answer a message page and drop op. */
void
sso_op_message(struct sso_op *op, int status, const char *title,
    const char *text, int sign_in)
{
	struct req	*req = sso_take(op);

	sso_op_free(op);
	sso_message(req, status, title, text, sign_in, NULL);
}

/* A redirect (303 after a form, 302 to the provider) with h's fields. */
void
sso_redirect(struct req *req, int status, const char *location,
    struct headers *h)
{
	headers_set(h, "Location", location);
	headers_set(h, "Cache-Control", "no-store");
	headers_set(h, "Referrer-Policy", "no-referrer");
	req_respond_simple(req, status, NULL, NULL, h);
}

/* The redirect_uri: redirect_url, else external_url + the callback. */
static void
sso_redirect_uri(const struct config *conf, char *buf, size_t len)
{
	const struct config_sso	*so = conf->identity->sso;
	int			 n;

	if (so->redirect_url != NULL) {
		snprintf(buf, len, "%s", so->redirect_url);
		return;
	}
	n = snprintf(buf, len, "%s", conf->external_url);
	while (n > 0 && (size_t)n < len && buf[n - 1] == '/')
		buf[--n] = '\0';
	if (n >= 0 && (size_t)n < len)
		snprintf(buf + n, len - n, "/oauth2/callback");
}

/* The person is the request's principal (pages, the audit record). */
static void
sso_principal(struct req *req, struct tok_ident *ti)
{
	/* A Basic or Bearer the page ignored may have set one. */
	tok_ident_unref(req->login);
	req->login = NULL;
	token_login_principal(req, ti);
}

/* --- /login --- */

/*
 * KEYS: the state, the sign-in counter.  ARGV: the state's record, its
 * lifetime (ms), the most sign-ins per minute (0: any).  One
 * transaction: each state lives state_lifetime in the Redis that audit,
 * sessions and revocation share, and /login needs no credential, so the
 * sign-ins begun per minute are counted over all instances and bounded.
 */
static const char sso_login_lua[] =
    "local max = tonumber(ARGV[3])\n"
    "if max > 0 then\n"
    "  local n = redis.call('INCR', KEYS[2])\n"
    "  if n == 1 then redis.call('PEXPIRE', KEYS[2], 60000) end\n"
    "  if n > max then return 'busy' end\n"
    "end\n"
    "if not redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2], 'NX') then\n"
    "  return 'collision' end\n"
    "return 'ok'\n";

/* Too many sign-ins begun this minute: 429, nothing stored. */
static void
sso_login_busy(struct sso_op *op)
{
	struct req	*req = sso_take(op);
	struct headers	 h;

	req->auth_failure = "too_many_logins";
	metrics_count_named(req->c->ctx, M_SSO_LOGINS, "too_many_logins");
	sso_op_free(op);
	headers_init(&h);
	headers_set(&h, "Retry-After", "60");
	sso_message(req, 429, "Sign-in busy", "Too many sign-ins were begun "
	    "in the last minute (identity.sso.max_logins_per_minute). Try "
	    "again in a minute.", 0, &h);
	headers_clear(&h);
}

static void
sso_login_stored(struct sso_op *op, redisReply *r, int idx)
{
	const struct config_sso	*so = op->req->conf->identity->sso;
	struct req		*req;
	struct headers		 h;
	struct wbuf		 u;
	struct url		 eu;
	struct origin		 eo;
	char			 ep[2048], enc[2048], chal[48], redir[2048];
	const char		*why;
	size_t			 i;

	if (r != NULL && r->type == REDIS_REPLY_STRING &&
	    strcmp(r->str, "busy") == 0) {
		sso_login_busy(op);
		return;
	}
	if (r == NULL || r->type != REDIS_REPLY_STRING ||
	    strcmp(r->str, "ok") != 0) {
		sso_op_message(op, 503, "Sign-in unavailable", "The session "
		    "store did not answer. Try again in a moment.", 0);
		return;
	}
	if (oidc_endpoint(op->ctx, so->issuer, OIDC_EP_AUTHORIZATION, ep,
	    sizeof(ep), &eu, &eo, &why) == -1) {
		sso_op_message(op, 503, "Sign-in unavailable", why, 0);
		return;
	}
	req = sso_take(op);
	sso_redirect_uri(req->conf, redir, sizeof(redir));
	web_pkce_s256(op->verifier, chal);
	wbuf_init(&u);
	wbuf_str(&u, ep);
	wbuf_str(&u, strchr(ep, '?') != NULL ? "&" : "?");
	wbuf_str(&u, "response_type=code&client_id=");
	(void)url_pct_encode(so->client_id, enc, sizeof(enc));
	wbuf_str(&u, enc);
	wbuf_str(&u, "&redirect_uri=");
	(void)url_pct_encode(redir, enc, sizeof(enc));
	wbuf_str(&u, enc);
	wbuf_str(&u, "&scope=");
	for (i = 0; i < so->nscopes; i++) {
		(void)url_pct_encode(so->scopes[i], enc, sizeof(enc));
		wbuf_printf(&u, "%s%s", i > 0 ? "%20" : "", enc);
	}
	wbuf_printf(&u, "&state=%s&nonce=%s&code_challenge=%s"
	    "&code_challenge_method=S256", op->state, op->nonce, chal);
	headers_init(&h);
	/* Binds the sign-in to this browser (login CSRF). */
	sso_cookie(req, &h, 1, op->state, so->state_ttl_ms / 1000);
	sso_op_free(op);
	sso_redirect(req, 302, u.p, &h);
	headers_clear(&h);
	wbuf_free(&u);
}

static void
sso_login(struct sso_op *op)
{
	const struct config_sso	*so = op->req->conf->identity->sso;
	json_t			*j;
	char			*rec, key[512], ckey[512], ttl[32], max[32];
	const char		*argv[8];

	if (web_random_token(op->state) == -1 ||
	    web_random_token(op->nonce) == -1 ||
	    web_random_token(op->verifier) == -1)
		fatalx("no random bytes");
	if ((j = json_pack("{s:s, s:s, s:I}", "v", op->verifier, "n",
	    op->nonce, "t", (json_int_t)time(NULL))) == NULL ||
	    (rec = json_dumps(j, JSON_COMPACT)) == NULL)
		fatal("json");
	json_decref(j);
	snprintf(key, sizeof(key), "%sstate:%s", so->key_prefix, op->state);
	snprintf(ckey, sizeof(ckey), "%slogins", so->key_prefix);
	snprintf(ttl, sizeof(ttl), "%d", so->state_ttl_ms);
	snprintf(max, sizeof(max), "%zu", so->max_logins_per_minute);
	argv[0] = "EVAL";
	argv[1] = sso_login_lua;
	argv[2] = "2";
	argv[3] = key;
	argv[4] = ckey;
	argv[5] = rec;
	argv[6] = ttl;
	argv[7] = max;
	if (sso_send(op, sso_link(op->ctx), sso_login_stored, 0, 8, argv) ==
	    -1)
		sso_op_message(op, 503, "Sign-in unavailable", "The session "
		    "store is not connected. Try again in a moment.", 0);
	explicit_bzero(rec, strlen(rec));
	free(rec);
}

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

static void
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

/* --- sessions --- */

static void	sso_with_session(struct sso_op *);

/* The session's principal (for the policy and the audit record). */
static struct tok_ident *
sso_session_ident(json_t *sess)
{
	struct tok_ident	*ti;
	json_t			*g, *c, *e;
	size_t			 i, n;

	if ((ti = calloc(1, sizeof(*ti))) == NULL)
		fatal("calloc");
	ti->refcnt = 1;
	ti->method = AUTH_OIDC;
	if ((ti->subject = strdup(json_string_value(json_object_get(sess,
	    "sub")))) == NULL)
		fatal("strdup");
	g = json_object_get(sess, "groups");
	n = json_array_size(g);
	if (n > 0 && (ti->groups = calloc(n, sizeof(char *))) == NULL)
		fatal("calloc");
	json_array_foreach(g, i, e)
		if (json_is_string(e) && (ti->groups[ti->ngroups++] =
		    strdup(json_string_value(e))) == NULL)
			fatal("strdup");
	c = json_object_get(sess, "claims");
	json_array_foreach(c, i, e)
		if (json_is_string(json_array_get(e, 0)) &&
		    json_is_string(json_array_get(e, 1)))
			(void)tok_ident_add_claim(ti,
			    json_string_value(json_array_get(e, 0)),
			    json_string_value(json_array_get(e, 1)),
			    SSO_CLAIMS_MAX);
	return (ti);
}

static void	sso_signed_out(struct sso_op *, const char *);

static void
sso_session_got(struct sso_op *op, redisReply *r, int idx)
{
	json_error_t	 jerr;
	json_t		*s;

	if (r == NULL || (r->type != REDIS_REPLY_STRING &&
	    r->type != REDIS_REPLY_NIL)) {
		sso_op_message(op, 503, "Unavailable", "The session store "
		    "did not answer. Try again in a moment.", 0);
		return;
	}
	if (r->type == REDIS_REPLY_NIL || r->len > SSO_SESSION_MAX ||
	    (s = json_loadb(r->str, r->len, 0, &jerr)) == NULL) {
		sso_signed_out(op, "Your session has ended. Sign in again.");
		return;
	}
	if (!json_is_string(json_object_get(s, "sub")) ||
	    !json_is_string(json_object_get(s, "csrf")) ||
	    json_integer_value(json_object_get(s, "expires")) <=
	    (json_int_t)time(NULL)) {
		json_decref(s);
		sso_signed_out(op, "Your session has ended. Sign in again.");
		return;
	}
	/*
	 * A revocation of the subject after the sign-in ends the session:
	 * it would otherwise go on making secrets stamped after the
	 * revocation's not-before time, which that time no longer covers.
	 */
	if (revoke_check(op->ctx->revoke, json_string_value(json_object_get(s,
	    "sub")), json_integer_value(json_object_get(s, "created")))) {
		json_decref(s);
		op->req->auth_failure = "revoked";
		sso_signed_out(op, "Your access was revoked. Sign in again.");
		return;
	}
	op->sess = s;
	op->ti = sso_session_ident(s);
	/* Pages name the person in their audit record. */
	sso_principal(op->req, op->ti);
	op->ti->refcnt++;
	sso_with_session(op);
}

/*
 * Look the session up from the cookie; then sso_with_session().  Without
 * a usable cookie: the signed-out page (a form post: 403).
 */
static void
sso_session(struct sso_op *op)
{
	struct req		*req = op->req;
	const struct config_sso	*so = req->conf->identity->sso;
	char			 key[512], name[128];
	const char		*argv[2];

	if (web_cookie_get(headers_get(&req->msg->hdrs, "Cookie"),
	    so->max_cookie_bytes, sso_cookie_name(req, 0, name, sizeof(name)),
	    op->sid,
	    sizeof(op->sid)) == -1 || !web_token_ok(op->sid)) {
		sso_signed_out(op, NULL);
		return;
	}
	web_sha256_hex(op->sid, strlen(op->sid), op->sid_hash);
	snprintf(key, sizeof(key), "%ssession:%s", so->key_prefix,
	    op->sid_hash);
	argv[0] = "GET";
	argv[1] = key;
	if (sso_send(op, sso_link(op->ctx), sso_session_got, 0, 2, argv) ==
	    -1)
		sso_op_message(op, 503, "Unavailable", "The session store is "
		    "not connected. Try again in a moment.", 0);
}

/* No session: the sign-in page, or 403 for a form. */
static void
sso_signed_out(struct sso_op *op, const char *why)
{
	struct req		*req = sso_take(op);
	struct headers		 h;

	headers_init(&h);
	if (why != NULL)
		sso_cookie(req, &h, 0, NULL, 0);
	if (op->kind == SSO_PAGE) {
		sso_op_free(op);
		sso_message(req, 200, "Sign in", why != NULL ? why :
		    "Sign in with your company account to see what you may "
		    "pull and push, and to make registry secrets.", 1, &h);
	} else {
		if (req->auth_failure == NULL)
			req->auth_failure = "no_session";
		sso_op_free(op);
		sso_message(req, 403, "Not signed in", why != NULL ? why :
		    "You are not signed in.", 1, &h);
	}
	headers_clear(&h);
}

/* Whether the form's csrf field is the session's token. */
static int
sso_csrf_ok(struct sso_op *op)
{
	char		 v[WEB_TOKEN_LEN + 2];
	const char	*want;

	want = json_string_value(json_object_get(op->sess, "csrf"));
	if (op->form == NULL || want == NULL || url_query_get(op->form,
	    strlen(op->form), "csrf", v, sizeof(v)) == -1)
		return (0);
	return (web_ct_equal(v, want));
}

static void
sso_logged_out(struct sso_op *op, redisReply *r, int idx)
{
	struct req	*req = sso_take(op);
	struct headers	 h;

	log_info("%llu.%u sso logout subject=\"%s\"",
	    (unsigned long long)req->c->id, req->seq, op->ti->subject);
	sso_op_free(op);
	headers_init(&h);
	sso_cookie(req, &h, 0, NULL, 0);
	sso_redirect(req, 303, "/", &h);
	headers_clear(&h);
}

/* KEYS: this session, the person's session index: all of them go. */
static const char sso_logout_all_lua[] =
    "for _, m in ipairs(redis.call('SMEMBERS', KEYS[2])) do\n"
    "  redis.call('DEL', m)\n"
    "end\n"
    "return redis.call('DEL', KEYS[1], KEYS[2])\n";

static void
sso_logout(struct sso_op *op)
{
	const char	*pfx = op->req->conf->identity->sso->key_prefix;
	char		 key[512], idx[1024], v[8];
	const char	*argv[5];
	int		 n = 2;

	snprintf(key, sizeof(key), "%ssession:%s", pfx, op->sid_hash);
	argv[0] = "DEL";
	argv[1] = key;
	/* "Sign out everywhere": every session of the person. */
	if (op->form != NULL && url_query_get(op->form, strlen(op->form),
	    "everywhere", v, sizeof(v)) == 0 && strcmp(v, "1") == 0) {
		snprintf(idx, sizeof(idx), "%ssessions:%s", pfx,
		    op->ti->subject);
		log_info("%llu.%u sso logout_everywhere subject=\"%s\"",
		    (unsigned long long)op->req->c->id, op->req->seq,
		    op->ti->subject);
		argv[0] = "EVAL";
		argv[1] = sso_logout_all_lua;
		argv[2] = "2";
		argv[3] = key;
		argv[4] = idx;
		n = 5;
	}
	if (sso_send(op, sso_link(op->ctx), sso_logged_out, 0, n, argv) ==
	    -1)
		sso_op_message(op, 503, "Unavailable", "The session store is "
		    "not connected; you are still signed in. Try again.", 0);
}

/* The session is known: do what the request asked. */
static void
sso_with_session(struct sso_op *op)
{
	if (op->kind != SSO_PAGE && !sso_csrf_ok(op)) {
		op->req->auth_failure = "csrf";
		log_info("%llu.%u sso csrf_refused path=%s",
		    (unsigned long long)op->req->c->id, op->req->seq,
		    op->req->path);
		sso_op_message(op, 403, "Form refused", "This form is stale "
		    "or did not come from this site (CSRF check). Go back, "
		    "reload the page and try again.", 0);
		return;
	}
	switch (op->kind) {
	case SSO_CREATE:
		sso_recheck(op);	/* asks the provider, then creates */
		break;
	case SSO_REVOKE:
		sso_revoke(op);
		break;
	case SSO_LOGOUT:
		sso_logout(op);
		break;
	default:
		sso_landing(op);
	}
}

/* --- the form body --- */

static int
sso_sink_data(struct req *req, const char *data, size_t n)
{
	struct sso_op	*op = req->stage_arg;

	if (evbuffer_get_length(op->body) + n >
	    req->conf->identity->sso->max_form_bytes) {
		req->body_sink_data = NULL;
		req_fail(req, ERR_TOO_LARGE, "form larger than "
		    "identity.sso.max_form_bytes");
		return (0);
	}
	evbuffer_add(op->body, data, n);
	return (0);
}

static int
sso_sink(struct req *req, struct evbuffer *in, size_t n)
{
	struct sso_op	*op = req->stage_arg;

	if (evbuffer_get_length(op->body) + n >
	    req->conf->identity->sso->max_form_bytes) {
		evbuffer_drain(in, n);
		req_fail(req, ERR_TOO_LARGE, "form larger than "
		    "identity.sso.max_form_bytes");
		return (0);
	}
	evbuffer_remove_buffer(in, op->body, n);
	return (0);
}

static void
sso_body_end(struct req *req)
{
	struct sso_op	*op = req->stage_arg;
	size_t		 len;

	req->body_ready = 0;
	req->body_sink = NULL;
	req->body_sink_data = NULL;
	req->body_end = NULL;
	len = evbuffer_get_length(op->body);
	if ((op->form = malloc(len + 1)) == NULL)
		fatal("malloc");
	evbuffer_remove(op->body, op->form, len);
	op->form[len] = '\0';
	if (strlen(op->form) != len) {
		req_fail(req, ERR_BAD_REQUEST, "NUL in form");
		return;
	}
	sso_session(op);
}

/* Read the POSTed form, then look the session up. */
static void
sso_read_form(struct sso_op *op)
{
	struct req		*req = op->req;
	size_t			 max = req->conf->identity->sso->max_form_bytes;

	if (req->msg->has_length && req->msg->length > max) {
		req_fail(req, ERR_TOO_LARGE, "form larger than "
		    "identity.sso.max_form_bytes");
		return;
	}
	if (req->body_done) {
		if ((op->form = strdup("")) == NULL)
			fatal("strdup");
		sso_session(op);
		return;
	}
	if (hframe_set_max_body(&req->c->hf, max) == -1) {
		req_fail(req, ERR_TOO_LARGE, "form larger than "
		    "identity.sso.max_form_bytes");
		return;
	}
	if ((op->body = evbuffer_new()) == NULL)
		fatal("evbuffer_new");
	req->body_sink = sso_sink;
	req->body_sink_data = sso_sink_data;
	req->body_end = sso_body_end;
	req->body_ready = 1;
	if (req->msg->expect_continue)
		evbuffer_add_printf(conn_output(req->c),
		    "HTTP/1.1 100 Continue\r\n\r\n");
	conn_resume_read(req->c);
}

/* --- routing --- */

/* Whether the request is one of the sign-in's pages (from req_route). */
int
sso_wants(const struct req *req)
{
	const char	*p = req->path;

	if (req->conf->identity == NULL || req->conf->identity->sso == NULL)
		return (0);
	return (strcmp(p, "/") == 0 || strcmp(p, "/login") == 0 ||
	    strcmp(p, "/logout") == 0 || strcmp(p, "/oauth2/callback") == 0 ||
	    strcmp(p, "/ui/style.css") == 0 ||
	    strcmp(p, "/ui/secrets") == 0 ||
	    strcmp(p, "/ui/secrets/revoke") == 0);
}

/* Answer a sign-in page (from req_route, after the audit gate). */
void
sso_start(struct req *req)
{
	struct sso_op	*op;
	struct headers	 h;
	const char	*p = req->path;
	int		 m = req->msg->method, get, post;

	get = m == HTTP_GET || m == HTTP_HEAD;
	post = m == HTTP_POST;
	if (strcmp(p, "/ui/style.css") == 0) {
		if (!get) {
			req_fail(req, ERR_METHOD, NULL);
			return;
		}
		headers_init(&h);
		headers_set(&h, "Cache-Control", "max-age=300");
		headers_set(&h, "X-Content-Type-Options", "nosniff");
		req_respond_simple(req, 200, "text/css; charset=utf-8",
		    sso_stylesheet, &h);
		headers_clear(&h);
		return;
	}
	if ((op = calloc(1, sizeof(*op))) == NULL)
		fatal("calloc");
	op->ctx = req->c->ctx;
	op->req = req;
	if (strcmp(p, "/login") == 0 && get)
		op->kind = SSO_LOGIN;
	else if (strcmp(p, "/oauth2/callback") == 0 && get)
		op->kind = SSO_CALLBACK;
	else if (strcmp(p, "/") == 0 && get)
		op->kind = SSO_PAGE;
	else if (strcmp(p, "/logout") == 0 && post)
		op->kind = SSO_LOGOUT;
	else if (strcmp(p, "/ui/secrets") == 0 && post)
		op->kind = SSO_CREATE;
	else if (strcmp(p, "/ui/secrets/revoke") == 0 && post)
		op->kind = SSO_REVOKE;
	else {
		free(op);
		req_fail(req, ERR_METHOD, NULL);
		return;
	}
	req_stage_set(req, &sso_stage_ops, op);
	switch (op->kind) {
	case SSO_LOGIN:
		sso_login(op);
		break;
	case SSO_CALLBACK:
		sso_callback(op);
		break;
	case SSO_PAGE:
		sso_session(op);
		break;
	default:
		sso_read_form(op);
	}
}
