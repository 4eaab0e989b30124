/*
 * token.c: the Docker token service (distribution's token, oauth2 and
 * jwt specs).  Verifying the gateway's own tokens, for the identity
 * stage and the refresh grant, is token_verify.c's.
 *
 *	GET /.well-known/jwks.json	the public keys, rotated-out ones
 *					until their valid_until
 *	GET /token			Basic or anonymous (or mTLS);
 *					service, account, repeated scope=,
 *					offline_token
 *	POST /token			form: grant_type=password or
 *					refresh_token, client_id, scope, ...
 *
 * The access claim is the intersection of what was asked and what the
 * live policy lets the caller do: lacking permission is never an error
 * here, the token just grants less.  Repository names in scopes are the
 * client's (the ones it uses in /v2/ paths); each is mapped to its
 * upstream's name the way routing does (req_prefix_upstream,
 * req_map_name) before the policy is asked, and the claim keeps the
 * client's name, which is what the request paths carry.
 *
 * Two token types, never taken for each other: an access token (aud the
 * service, token_use "access"), which registry:2 and the gateway's /v2/
 * accept, and a refresh token (aud "refresh:" + service, token_use
 * "refresh", no access), which only the refresh grant accepts.  Both
 * carry sub, iat, jti, auth_method and groups, which revocation (next
 * session) and the refresh grant need.
 *
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "portcullis.h"
#include "jose.h"
#include "policy.h"
#include "scope.h"
#include "revoke.h"
#include "token_int.h"

#define TOK_CLIENT_ID_MAX	128
/* Distribution's token spec: expires_in is at least 60 seconds. */
#define TOK_MIN_EXPIRES_IN	60

struct tok_body {
	struct req		*req;
	struct evbuffer		*buf;
};

/* The clock tokens are issued and verified by. */
int64_t
tok_now(void)
{
	return ((int64_t)time(NULL));
}

/* --- /.well-known/jwks.json --- */

/* GET /.well-known/jwks.json: the public keys (from req_route). */
void
token_jwks(struct req *req)
{
	const struct config_token	*tk;
	json_t				*j;
	char				*doc;
	struct headers			 h;

	if (req->msg->method != HTTP_GET && req->msg->method != HTTP_HEAD) {
		req_fail(req, ERR_METHOD, NULL);
		return;
	}
	if (req->conf->identity == NULL ||
	    (tk = req->conf->identity->token) == NULL || tk->keys == NULL) {
		req_fail(req, ERR_NOT_FOUND, "no token service configured");
		return;
	}
	if ((j = jwk_set_public_json(tk->keys, tok_now())) == NULL ||
	    (doc = json_dumps(j, JSON_COMPACT)) == NULL)
		fatal("jwks");
	json_decref(j);
	headers_init(&h);
	headers_add(&h, "Cache-Control", 13, "max-age=60", 10);
	req->decision = "allow";
	req_respond_simple(req, 200, "application/json", doc, &h);
	headers_clear(&h);
	free(doc);
}

/* --- /token --- */

/*
 * Answer 401 to a failed login: the OCI error body, a Basic challenge
 * (the credentials /token takes), and the reason in the request for the
 * log line and the audit record (a fixed name, never the credential).
 */
void
token_refuse(struct req *req, const char *reason, const char *detail)
{
	struct headers	h;
	char		chal[320];
	int		n;

	req->auth_failure = reason;
	req->decision = "deny";
	log_info("%llu.%u token login_failed reason=%s",
	    (unsigned long long)req->c->id, req->seq, reason);
	headers_init(&h);
	n = snprintf(chal, sizeof(chal), "Basic realm=\"%s\"",
	    req->conf->identity->token->service);
	if (n > 0 && (size_t)n < sizeof(chal))
		headers_add(&h, "WWW-Authenticate", 16, chal, (size_t)n);
	req_fail_with(req, ERR_UNAUTHORIZED, detail, &h);
	headers_clear(&h);
}

static int
tok_scope_bits_allowed(struct req *req, const struct scope *s)
{
	const struct config		*conf = req->conf;
	const struct config_upstream	*up;
	struct pol_result		 res;
	const char			*rest;
	char				 upname[OCI_NAME_MAX + 16];
	unsigned			 want = s->actions, got = 0;
	size_t				 i;

	if (want & SCOPE_ANY)
		want = SCOPE_PULL | SCOPE_PUSH | SCOPE_DELETE;
	if (s->type == SCOPE_REGISTRY) {
		/* registry:catalog:*: listing at all, on some upstream. */
		for (i = 0; i < conf->nupstreams; i++)
			if (policy_decide(conf->policy, &req->principal,
			    conf->upstreams[i].name, NULL, POL_CATALOG, &res))
				return (s->actions);
		return (0);
	}
	if ((up = req_prefix_upstream(conf, s->name, &rest)) == NULL) {
		if (conf->default_upstream < 0)
			return (0);
		up = &conf->upstreams[conf->default_upstream];
	}
	if (req_map_name(up, rest, upname, sizeof(upname)) == -1)
		return (0);
	if ((want & SCOPE_PULL) && policy_decide(conf->policy,
	    &req->principal, up->name, upname, POL_PULL, &res))
		got |= SCOPE_PULL;
	if ((want & SCOPE_PUSH) && policy_decide(conf->policy,
	    &req->principal, up->name, upname, POL_PUSH, &res))
		got |= SCOPE_PUSH;
	if ((want & SCOPE_DELETE) && policy_decide(conf->policy,
	    &req->principal, up->name, upname, POL_DELETE, &res))
		got |= SCOPE_DELETE;
	return (got);
}

/*
 * When the credential a token is issued for ends; 0 when it does not (an
 * anonymous caller, a secret without expiry).  A token never outlives it
 * (README "Token service", lifetimes): a CI job's IdP JWT valid five
 * minutes, leaked, must not buy a week of refresh tokens.
 *
 *	Basic / password grant	the IdP JWT's exp, the secret's expiry
 *	refresh grant		the refresh token's exp (capped so);
 *				any gateway token's, its exp (1, over,
 *				when it has none: never "no end")
 *	mTLS			the client certificate's notAfter
 *
 * The one place a login's end is decided.  A linked refresh token (the
 * terminal sign-in, token_idp.c) is the exception by design: its
 * provider session, asked again at every refresh, is the credential.
 */
int64_t
token_credential_end(const struct req *req)
{
	if (req->login != NULL)
		return (req->login->exp > 0 ? req->login->exp : 0);
	if (req->tok != NULL)
		return (req->tok->exp > 0 ? req->tok->exp : 1);
	if (req->principal.method == AUTH_MTLS)
		return (req->c->tls_not_after);
	return (0);
}

/*
 * A token's lifetime: its configured one, but never past the end of the
 * credential it was issued for (token_credential_end).  An access token
 * keeps distribution's floor of TOK_MIN_EXPIRES_IN (clients refresh
 * earlier below it), so it may outlive its credential by less than that;
 * a refresh token never does.  -1 when the credential has ended.
 */
static int64_t
tok_ttl(const struct req *req, const struct config_token *tk, int refresh,
    int64_t now)
{
	int64_t	ttl = refresh ? tk->refresh_expires_in : tk->expires_in;
	int64_t	end = token_credential_end(req);

	/*
	 * A terminal sign-in's refresh token: the provider session behind
	 * it is asked again at every refresh (token_idp.c), not the
	 * id_token's few minutes.
	 */
	if (refresh && req->idp_jti != NULL)
		return (ttl);
	if (end == 0)
		return (ttl);
	if (end <= now)
		return (-1);
	if (end - now < ttl)
		ttl = end - now;
	if (!refresh && ttl < TOK_MIN_EXPIRES_IN)
		ttl = TOK_MIN_EXPIRES_IN;
	return (ttl);
}

static char *
tok_sign(struct req *req, const struct config_token *tk, int refresh,
    json_t *access, int64_t now, char **cause)
{
	const struct principal	*p = &req->principal;
	struct jose_sign_req	 sr;
	json_t			*extra, *groups, *cl, *arr;
	char			 aud[TOK_AUD_MAX];
	char			*t;
	size_t			 i;
	enum auth_method	 m = p->method;

	if (req->tok != NULL)
		m = req->tok->method;	/* a refresh keeps the first one */
	extra = json_object();
	groups = json_array();
	for (i = 0; i < p->ngroups; i++)
		json_array_append_new(groups, json_string(p->groups[i]));
	json_object_set_new(extra, "groups", groups);
	json_object_set_new(extra, "auth_method",
	    json_string(principal_method_name(m)));
	/* Not secret itself (`secret list` shows it): the refresh grant's. */
	if (req->login != NULL && req->login->secret_id != NULL)
		json_object_set_new(extra, "secret_id",
		    json_string(req->login->secret_id));
	else if (req->tok != NULL && req->tok->secret_id != NULL)
		json_object_set_new(extra, "secret_id",
		    json_string(req->tok->secret_id));
	json_object_set_new(extra, "token_use",
	    json_string(refresh ? "refresh" : "access"));
	if (refresh && req->idp_jti != NULL)
		json_object_set_new(extra, "idp_link", json_true());
	/*
	 * An IdP login's verified claims ride along, so that claim rules of
	 * the live policy decide on /v2/ and at a refresh as they did here.
	 */
	if (p->nclaims > 0) {
		cl = json_object();
		for (i = 0; i < p->nclaims; i++) {
			if ((arr = json_object_get(cl, p->claims[i].name)) ==
			    NULL) {
				arr = json_array();
				json_object_set_new(cl, p->claims[i].name, arr);
			}
			json_array_append_new(arr,
			    json_string(p->claims[i].value));
		}
		json_object_set_new(extra, "idp_claims", cl);
	}
	if (refresh)
		snprintf(aud, sizeof(aud), "%s%s", TOK_REFRESH_AUD_PREFIX,
		    tk->service);
	else
		snprintf(aud, sizeof(aud), "%s", tk->service);
	memset(&sr, 0, sizeof(sr));
	sr.issuer = tk->issuer;
	sr.subject = p->subject != NULL ? p->subject : "";
	sr.audience = aud;
	sr.now = now;
	sr.ttl = tok_ttl(req, tk, refresh, now);
	if (refresh)
		sr.jti = req->idp_jti;	/* NULL: a random one */
	sr.access = access;
	sr.extra = extra;
	t = jose_sign(&tk->keys->keys[0], &sr, cause);
	json_decref(extra);
	return (t);
}

/*
 * Collect every value of a form or query parameter into the scope set.
 * '+' is turned into a space after decoding, which a %2B also becomes:
 * harmless here, as no scope holds a '+'; a password is read without it.
 */
static enum scope_err
tok_scopes(struct scope_set *set, const char *q, size_t qlen,
    const char *param)
{
	char		 val[4096];
	const char	*p, *end = q + qlen;
	size_t		 plen = strlen(param), n, k;
	enum scope_err	 e;

	for (p = q; p < end; p += n + 1) {
		n = strcspn(p, "&");
		if (p + n > end)
			n = end - p;
		if (n > plen && strncmp(p, param, plen) == 0 &&
		    p[plen] == '=') {
			if (url_query_get(p, n, param, val, sizeof(val)) == -1)
				return (SCOPE_E_MALFORMED);
			/* A form writes spaces as '+'. */
			for (k = 0; val[k] != '\0'; k++)
				if (val[k] == '+')
					val[k] = ' ';
			if ((e = scope_parse(set, val, strlen(val))) !=
			    SCOPE_OK)
				return (e);
		}
	}
	return (SCOPE_OK);
}

/* A parameter's value, '+' as space; "" when absent. */
static void
tok_param(const char *q, size_t qlen, const char *name, char *out,
    size_t len)
{
	size_t	k;

	if (q == NULL || url_query_get(q, qlen, name, out, len) == -1)
		out[0] = '\0';
	for (k = 0; out[k] != '\0'; k++)
		if (out[k] == '+')
			out[k] = ' ';
}

/*
 * The service= parameter of a token request (query or form) against the
 * configured service.  Absent is fine (clients that did not read it from
 * a challenge); present, it must be exactly the service: a value too long
 * to be it, one that does not decode (a "%00" or a bad escape) or another
 * service is an error, never the same as absent.  Only the first counts,
 * as in distribution's and docker_auth's Go (FormValue).
 */
enum tok_svc
token_service_check(const char *q, size_t qlen, const char *service)
{
	const char	*p, *amp, *eq;
	char		 buf[TOK_SERVICE_MAX + 1], *big;
	size_t		 off = 0, plen, nlen;
	int		 found = 0, r;

	while (!found && off < qlen) {
		p = q + off;
		amp = memchr(p, '&', qlen - off);
		plen = amp != NULL ? (size_t)(amp - p) : qlen - off;
		off += plen + 1;
		eq = memchr(p, '=', plen);
		nlen = eq != NULL ? (size_t)(eq - p) : plen;
		found = nlen == 7 && memcmp(p, "service", 7) == 0;
	}
	if (!found)
		return (TOK_SVC_ABSENT);
	if (url_query_get(q, qlen, "service", buf, sizeof(buf)) == 0)
		return (strcmp(buf, service) == 0 ? TOK_SVC_OK :
		    TOK_SVC_OTHER);
	/* Decoding is never longer than the query: too long, or bad. */
	if ((big = malloc(qlen + 1)) == NULL)
		fatal("malloc");
	r = url_query_get(q, qlen, "service", big, qlen + 1);
	free(big);
	return (r == 0 ? TOK_SVC_TOO_LONG : TOK_SVC_MALFORMED);
}

/* A service= that is not this token service's: 400, saying why. */
static int
tok_service_refused(struct req *req, const char *q, size_t qlen)
{
	const char	*svc = req->conf->identity->token->service;
	char		 msg[400];

	switch (token_service_check(q, qlen, svc)) {
	case TOK_SVC_ABSENT:
	case TOK_SVC_OK:
		return (0);
	case TOK_SVC_TOO_LONG:
		snprintf(msg, sizeof(msg), "service is longer than %d bytes; "
		    "this token service is \"%s\"", TOK_SERVICE_MAX, svc);
		break;
	case TOK_SVC_MALFORMED:
		snprintf(msg, sizeof(msg), "service is not valid "
		    "percent-encoding or holds a NUL byte; this token service "
		    "is \"%s\"", svc);
		break;
	default:
		snprintf(msg, sizeof(msg), "unknown service; this token "
		    "service is \"%s\"", svc);
		break;
	}
	req_fail(req, ERR_BAD_REQUEST, msg);
	return (1);
}

/*
 * The principal of a checked Basic password (credential.c): kept in
 * req->login, not req->tok, as it carries no access claim to enforce.
 */
void
token_login_principal(struct req *req, struct tok_ident *ti)
{
	struct principal	*p = &req->principal;

	req->login = ti;
	p->method = ti->method;
	p->subject = ti->subject;
	p->groups = (const char *const *)ti->groups;
	p->ngroups = ti->ngroups;
	p->claims = ti->claims;
	p->nclaims = ti->nclaims;
}

/*
 * Decode a Basic value ("Basic " already checked) into buf as
 * "user\0password"; the password's length in *pwlen.  0 or -1.
 */
int
token_basic_decode(const char *v, char *buf, size_t len, const char **user,
    const char **pw, size_t *pwlen)
{
	size_t	n;
	int	out;
	char	*colon;

	v += 6;
	while (*v == ' ')
		v++;
	n = strcspn(v, " \t");
	if (n == 0 || n % 4 != 0 || n / 4 * 3 + 1 > len)
		return (-1);
	if ((out = EVP_DecodeBlock((unsigned char *)buf,
	    (const unsigned char *)v, (int)n)) < 0)
		return (-1);
	/* EVP_DecodeBlock counts the padding as zero bytes. */
	if (n >= 1 && v[n - 1] == '=')
		out--;
	if (n >= 2 && v[n - 2] == '=')
		out--;
	buf[out] = '\0';
	if (strlen(buf) != (size_t)out ||
	    (colon = strchr(buf, ':')) == NULL)
		return (-1);
	*colon = '\0';
	*user = buf;
	*pw = colon + 1;
	*pwlen = (size_t)out - (size_t)(colon + 1 - buf);
	return (0);
}

/* Whether the form names a parameter at all (its value aside). */
static int
tok_has_param(const char *q, size_t qlen, const char *name)
{
	size_t	n = strlen(name), i = 0;

	while (i < qlen) {
		if (qlen - i > n && memcmp(q + i, name, n) == 0 &&
		    q[i + n] == '=')
			return (1);
		while (i < qlen && q[i] != '&')
			i++;
		i++;
	}
	return (0);
}

/* Issue the token(s) for req->principal and the scopes in set. */
static void
tok_issue(struct req *req, struct scope_set *set, int offline)
{
	const struct config_token	*tk = req->conf->identity->token;
	struct scope_set		*granted;
	json_t				*access, *resp;
	char				*at, *rt = NULL, *cause = NULL;
	char				*doc;
	char				 iat[32];
	struct headers			 h;
	struct tm			 tm;
	time_t				 t;
	int64_t				 now = tok_now();
	size_t				 i;

	/* A credential within its verifier's leeway past its end. */
	if (tok_ttl(req, tk, 0, now) == -1) {
		token_refuse(req, "expired", "the credential has expired");
		return;
	}
	if ((granted = scope_set_new(tk->max_scopes)) == NULL)
		fatal("scope_set_new");
	for (i = 0; i < set->n; i++) {
		granted->v[granted->n] = set->v[i];
		granted->v[granted->n].actions =
		    tok_scope_bits_allowed(req, &set->v[i]);
		if (granted->v[granted->n].actions != 0)
			granted->n++;
	}
	if ((access = scope_access_json(granted)) == NULL)
		fatal("scope_access_json");
	scope_set_free(granted);
	at = tok_sign(req, tk, 0, access, now, &cause);
	json_decref(access);
	if (at != NULL && offline)
		rt = tok_sign(req, tk, 1, NULL, now, &cause);
	if (at == NULL || (offline && rt == NULL)) {
		log_warn("%llu.%u token sign_failed: %s",
		    (unsigned long long)req->c->id, req->seq,
		    cause != NULL ? cause : "?");
		free(cause);
		free(at);
		req_fail(req, ERR_INTERNAL, "token signing failed");
		return;
	}
	t = (time_t)now;
	gmtime_r(&t, &tm);
	strftime(iat, sizeof(iat), "%Y-%m-%dT%H:%M:%SZ", &tm);
	resp = json_object();
	json_object_set_new(resp, "token", json_string(at));
	json_object_set_new(resp, "access_token", json_string(at));
	json_object_set_new(resp, "expires_in",
	    json_integer(tok_ttl(req, tk, 0, now)));
	json_object_set_new(resp, "issued_at", json_string(iat));
	if (rt != NULL)
		json_object_set_new(resp, "refresh_token", json_string(rt));
	if ((doc = json_dumps(resp, JSON_COMPACT)) == NULL)
		fatal("json_dumps");
	json_decref(resp);
	explicit_bzero(at, strlen(at));
	free(at);
	if (rt != NULL) {
		explicit_bzero(rt, strlen(rt));
		free(rt);
	}
	req->decision = "allow";
	log_info("%llu.%u token issued method=%s scopes=%zu refresh=%d",
	    (unsigned long long)req->c->id, req->seq,
	    principal_method_name(req->principal.method), set->n,
	    offline);
	headers_init(&h);
	headers_add(&h, "Cache-Control", 13, "no-store", 8);
	req_respond_simple(req, 200, "application/json", doc, &h);
	headers_clear(&h);
	explicit_bzero(doc, strlen(doc));
	free(doc);
}

static void	tok_get(struct req *);
static void	tok_post(struct req *, const char *, size_t);

/* The refresh grant's answer: an access token for the scopes asked. */
static void
tok_refresh_issue(struct req *req, const char *form, size_t flen)
{
	const struct config_token	*tk = req->conf->identity->token;
	struct scope_set		*set;
	enum scope_err			 e;

	if ((set = scope_set_new(tk->max_scopes)) == NULL)
		fatal("scope_set_new");
	if ((e = tok_scopes(set, form, flen, "scope")) != SCOPE_OK) {
		scope_set_free(set);
		req_fail(req, ERR_BAD_REQUEST, e == SCOPE_E_TOO_MANY ?
		    "too many scopes (identity.token.max_scopes)" :
		    "invalid scope");
		return;
	}
	/* No new refresh token: the one in hand stays the client's. */
	tok_issue(req, set, 0);
	scope_set_free(set);
}

/* The refresh grant, once token_idp.c re-checked the provider. */
void
token_refresh_issue(struct req *req)
{
	tok_refresh_issue(req, req->tok_form, req->tok_formlen);
}

/* The password grant, once token_idp.c made the exchange's link. */
void
token_password_issue(struct req *req)
{
	tok_post(req, req->tok_form, req->tok_formlen);
}

/* The secret a refresh token was issued for was read again. */
static void
tok_refresh_secret_done(struct req *req, struct tok_ident *ti,
    const char *why)
{
	if (ti == NULL) {
		token_refuse(req, why != NULL ? why : "invalid_credentials",
		    "invalid refresh token");
		return;
	}
	tok_ident_unref(ti);
	tok_refresh_issue(req, req->tok_form, req->tok_formlen);
}

static void
tok_get_login_done(struct req *req, struct tok_ident *ti, const char *why)
{
	if (ti == NULL) {
		token_refuse(req, why != NULL ? why : "invalid_credentials",
		    "invalid credentials");
		return;
	}
	token_login_principal(req, ti);
	tok_get(req);
}

static void
tok_post_login_done(struct req *req, struct tok_ident *ti, const char *why)
{
	if (ti == NULL) {
		token_refuse(req, why != NULL ? why : "invalid_credentials",
		    "invalid credentials");
		return;
	}
	token_login_principal(req, ti);
	tok_post(req, req->tok_form, req->tok_formlen);
}

/*
 * Check the password of a Basic header (auth) or of a password grant
 * (user, pw from the form): answered, or continued by done(), now or
 * once the check stops waiting.
 */
static void
tok_login(struct req *req, const char *auth, const char *pwform,
    size_t pwlen, cred_done_fn done)
{
	struct tok_ident	*ti;
	const char		*user, *pw, *why;
	char			*buf;
	size_t			 len, plen;
	enum cred_result	 r;

	len = req->conf->identity->token->max_token_bytes + 512;
	if ((buf = malloc(len)) == NULL)
		fatal("malloc");
	if (auth != NULL) {
		if (token_basic_decode(auth, buf, len, &user, &pw,
		    &plen) == -1) {
			free(buf);
			token_refuse(req, "malformed_basic",
			    "malformed Basic credentials");
			return;
		}
	} else {
		user = "";
		pw = pwform;
		plen = pwlen;
	}
	r = cred_check(req, user, pw, plen, &ti, &why, done);
	explicit_bzero(buf, len);
	free(buf);
	switch (r) {
	case CRED_OK:
		done(req, ti, NULL);
		break;
	case CRED_FAIL:
		done(req, NULL, why);
		break;
	case CRED_WAIT:
		break;
	}
}

/* GET /token: Basic or anonymous (or mTLS), scopes in the query. */
static void
tok_get(struct req *req)
{
	const struct config_token	*tk = req->conf->identity->token;
	struct scope_set		*set;
	const char			*q = req->query != NULL ? req->query :
					    "", *auth;
	size_t				 qlen = strlen(q);
	char				 off[16];
	enum scope_err			 e;

	if (tok_service_refused(req, q, qlen))
		return;
	auth = headers_get(&req->msg->hdrs, "Authorization");
	if (auth != NULL && strncasecmp(auth, "Basic ", 6) == 0 &&
	    req->login == NULL) {
		tok_login(req, auth, NULL, 0, tok_get_login_done);
		return;
	}
	/*
	 * A client certificate whose subject was revoked after it was
	 * issued (identity.c): a login refused, not an anonymous token.
	 */
	if (auth == NULL && req->c->tls_subject != NULL &&
	    req->principal.method == AUTH_ANONYMOUS &&
	    req->auth_failure != NULL &&
	    strcmp(req->auth_failure, "revoked") == 0) {
		token_refuse(req, "revoked", "the client certificate's "
		    "subject is revoked");
		return;
	}
	if ((set = scope_set_new(tk->max_scopes)) == NULL)
		fatal("scope_set_new");
	if ((e = tok_scopes(set, q, qlen, "scope")) != SCOPE_OK) {
		scope_set_free(set);
		req_fail(req, ERR_BAD_REQUEST, e == SCOPE_E_TOO_MANY ?
		    "too many scopes (identity.token.max_scopes)" :
		    "invalid scope");
		return;
	}
	tok_param(q, qlen, "offline_token", off, sizeof(off));
	/* An anonymous caller gets no refresh token: nothing to refresh. */
	tok_issue(req, set, strcmp(off, "true") == 0 &&
	    req->principal.method != AUTH_ANONYMOUS);
	scope_set_free(set);
}

/* POST /token: the form is read whole (bounded), then answered. */
static void
tok_post(struct req *req, const char *form, size_t flen)
{
	const struct config_token	*tk = req->conf->identity->token;
	struct scope_set		*set;
	struct tok_ident		*ti;
	char				 grant[32], *v;
	const char			*why;
	size_t				 vlen;
	enum scope_err			 e;

	tok_param(form, flen, "grant_type", grant, sizeof(grant));
	if (tok_service_refused(req, form, flen))
		return;
	if (strcmp(grant, "password") == 0 && req->login == NULL) {
		/* Kept for the answer: the check may wait. */
		if (req->tok_form == NULL) {
			if ((req->tok_form = malloc(flen + 1)) == NULL)
				fatal("malloc");
			memcpy(req->tok_form, form, flen);
			req->tok_form[flen] = '\0';
			req->tok_formlen = flen;
		}
		vlen = tk->max_token_bytes + 1;
		if ((v = malloc(vlen)) == NULL)
			fatal("malloc");
		if (url_query_get(form, flen, "password", v, vlen) == -1) {
			free(v);
			token_refuse(req, "no_password", "password missing or "
			    "longer than identity.token.max_token_bytes");
			return;
		}
		tok_login(req, NULL, v, strlen(v), tok_post_login_done);
		explicit_bzero(v, vlen);
		free(v);
		return;
	}
	if (strcmp(grant, "password") == 0) {
		/* A terminal sign-in's exchange (token_idp.c), issued later. */
		if (req->idp_jti == NULL &&
		    tok_has_param(form, flen, "idp_refresh_token")) {
			tokidp_exchange(req);
			return;
		}
		if ((set = scope_set_new(tk->max_scopes)) == NULL)
			fatal("scope_set_new");
		if ((e = tok_scopes(set, form, flen, "scope")) != SCOPE_OK) {
			scope_set_free(set);
			req_fail(req, ERR_BAD_REQUEST, "invalid scope");
			return;
		}
		tok_param(form, flen, "access_type", grant, sizeof(grant));
		tok_issue(req, set, strcmp(grant, "offline") == 0 ||
		    req->idp_jti != NULL);
		scope_set_free(set);
		return;
	}
	if (strcmp(grant, "refresh_token") != 0) {
		req_fail(req, ERR_BAD_REQUEST, "unsupported grant_type");
		return;
	}
	/* Longer than max_token_bytes does not fit: refused unread. */
	vlen = tk->max_token_bytes + 1;
	if ((v = malloc(vlen)) == NULL)
		fatal("malloc");
	if (url_query_get(form, flen, "refresh_token", v, vlen) == -1) {
		free(v);
		token_refuse(req, "no_refresh_token", "refresh_token missing "
		    "or longer than identity.token.max_token_bytes");
		return;
	}
	/*
	 * Revocations made while the revocation link is down are unknown
	 * here: the refresh grant fails closed then, as secrets do
	 * (secrets.redis_unavailable fail_closed, the default).
	 */
	if (req->conf->secrets_redis_unavailable == SECRETS_FAIL_CLOSED &&
	    !revoke_current(req->c->ctx->revoke)) {
		explicit_bzero(v, vlen);
		free(v);
		token_refuse(req, "redis_unavailable", "invalid refresh token");
		return;
	}
	why = token_verify(req, v, strlen(v), 1, &ti);
	explicit_bzero(v, vlen);
	free(v);
	if (why != NULL) {
		token_refuse(req, why, "invalid refresh token");
		return;
	}
	/*
	 * Revocation refuses a subject's tokens issued before a time
	 * (ti->iat); a linked refresh token (portcullis login) then has
	 * its person re-checked with the provider (token_idp.c).
	 */
	token_principal(req, ti);
	if (ti->method == AUTH_ANONYMOUS) {
		token_refuse(req, "wrong_token_type", "invalid refresh token");
		return;
	}
	/* A terminal sign-in's: its provider is asked first (token_idp.c). */
	if (ti->idp_link != NULL) {
		if (req->tok_form == NULL) {
			if ((req->tok_form = malloc(flen + 1)) == NULL)
				fatal("malloc");
			memcpy(req->tok_form, form, flen);
			req->tok_form[flen] = '\0';
			req->tok_formlen = flen;
		}
		tokidp_refresh(req, ti);
		return;
	}
	/*
	 * A secret's refresh token lives as long as the secret does: `secret
	 * revoke` (or its expiry) must end it, so the record is read again.
	 */
	if (ti->method == AUTH_SECRET) {
		if (ti->secret_id == NULL) {
			token_refuse(req, jose_reason_name(JOSE_R_BAD_CLAIM),
			    "invalid refresh token");
			return;
		}
		if (req->tok_form == NULL) {
			if ((req->tok_form = malloc(flen + 1)) == NULL)
				fatal("malloc");
			memcpy(req->tok_form, form, flen);
			req->tok_form[flen] = '\0';
			req->tok_formlen = flen;
		}
		if (cred_check_secret_id(req, ti->secret_id, &why,
		    tok_refresh_secret_done) == CRED_FAIL)
			token_refuse(req, why, "invalid refresh token");
		return;
	}
	tok_refresh_issue(req, form, flen);
}

static int	tok_sink(struct req *, struct evbuffer *, size_t);

static void
tok_body_free(void *arg)
{
	struct tok_body	*tb = arg;
	struct req	*req = tb->req;

	/* Nothing more goes to the freed buffer; an unread rest closes. */
	if (req->body_sink == tok_sink) {
		req->body_ready = 0;
		req->body_sink = NULL;
		req->body_sink_data = NULL;
		req->body_end = NULL;
	}
	if (tb->buf != NULL) {
		evbuffer_free(tb->buf);
		tb->buf = NULL;
	}
	free(tb);
}

static const struct req_stage_ops tok_stage_ops = {
	.name = "token",
	.free = tok_body_free,
};

static int
tok_sink_data(struct req *req, const char *data, size_t n)
{
	struct tok_body	*tb = req->stage_arg;

	if (evbuffer_get_length(tb->buf) + n >
	    req->conf->identity->token->max_body_bytes) {
		req->body_sink_data = NULL;
		req_fail(req, ERR_TOO_LARGE, "form larger than "
		    "identity.token.max_body_bytes");
		return (0);
	}
	evbuffer_add(tb->buf, data, n);
	return (0);
}

static int
tok_sink(struct req *req, struct evbuffer *in, size_t n)
{
	struct tok_body	*tb = req->stage_arg;

	if (evbuffer_get_length(tb->buf) + n >
	    req->conf->identity->token->max_body_bytes) {
		evbuffer_drain(in, n);
		req_fail(req, ERR_TOO_LARGE, "form larger than "
		    "identity.token.max_body_bytes");
		return (0);
	}
	evbuffer_remove_buffer(in, tb->buf, n);
	return (0);
}

static void
tok_body_end(struct req *req)
{
	struct tok_body	*tb = req->stage_arg;
	size_t		 len;
	char		*form;

	req->body_ready = 0;
	req->body_sink = NULL;
	req->body_sink_data = NULL;
	req->body_end = NULL;
	len = evbuffer_get_length(tb->buf);
	if ((form = malloc(len + 1)) == NULL)
		fatal("malloc");
	evbuffer_remove(tb->buf, form, len);
	form[len] = '\0';
	if (strlen(form) != len) {
		req_fail(req, ERR_BAD_REQUEST, "NUL in form");
	} else {
		req_stage_end(req);
		tok_post(req, form, len);
	}
	explicit_bzero(form, len);
	free(form);
}

/* GET or POST /token (from req_route). */
void
token_start(struct req *req)
{
	const struct config_token	*tk;
	struct tok_body			*tb;
	int				 m = req->msg->method;

	if (req->conf->identity == NULL ||
	    (tk = req->conf->identity->token) == NULL || tk->keys == NULL) {
		req_fail(req, ERR_NOT_FOUND, "no token service configured");
		return;
	}
	if (m == HTTP_GET) {
		tok_get(req);
		return;
	}
	if (m != HTTP_POST) {
		req_fail(req, ERR_METHOD, NULL);
		return;
	}
	if (req->msg->has_length && req->msg->length > tk->max_body_bytes) {
		req_fail(req, ERR_TOO_LARGE, "form larger than "
		    "identity.token.max_body_bytes");
		return;
	}
	if (req->body_done) {
		tok_post(req, "", 0);
		return;
	}
	/* A chunked form is cut by the framer once over the bound. */
	if (hframe_set_max_body(&req->c->hf, tk->max_body_bytes) == -1) {
		req_fail(req, ERR_TOO_LARGE, "form larger than "
		    "identity.token.max_body_bytes");
		return;
	}
	if ((tb = calloc(1, sizeof(*tb))) == NULL ||
	    (tb->buf = evbuffer_new()) == NULL)
		fatal("token_start");
	tb->req = req;
	req_stage_set(req, &tok_stage_ops, tb);
	req->body_sink = tok_sink;
	req->body_sink_data = tok_sink_data;
	req->body_end = tok_body_end;
	req->body_ready = 1;
	if (req->msg->expect_continue)
		evbuffer_add_printf(conn_output(req->c),
		    "HTTP/1.1 100 Continue\r\n\r\n");
	conn_resume_read(req->c);
}
