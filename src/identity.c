/*
 * identity.c: the identity stage, who asks.  It fills the request's
 * principal (principal.h), which every later stage (policy, rate limits,
 * the log line and the audit record) reads instead of any raw credential.
 *
 * From the connection: the client's address, and the subject of a client
 * certificate that TLS verified (method "mtls") until its chain's end
 * (a keep-alive connection outlives it: anonymous from then on,
 * auth_failure certificate_expired) and unless its subject was revoked
 * after it was issued (auth_failure revoked); anyone else is anonymous.  Then
 * from the Authorization header:
 *
 *	Bearer <gateway token>	token_verify.c verifies it with the gateway's
 *				own keys (cached); the principal is the
 *				token's subject, req->tok its access list
 *	Bearer <IdP JWT>	a CI job's token of a configured issuer,
 *	Basic user:<IdP JWT>	checked by credential.c with the issuer's
 *				keys (method "oidc")
 *	Basic user:<secret>	a gateway secret, checked by credential.c
 *				through secrets.c (method "secret")
 *	anything else		ignored: a mirror's dockerd sends the
 *				Docker Hub login of whoever ran `docker
 *				login`; it stays anonymous
 *
 * A credential that fails leaves the caller anonymous, marked
 * (req->bearer_invalid, req->auth_failure), and authz.c answers 401
 * invalid_token.  No header value is ever logged or forwarded.
 *
 * It runs at request start, before routing and the policy gate.  It waits
 * for a gateway secret's Redis lookup, and for an IdP JWT whose kid the
 * issuer's keys lack (oidc.c fetches them, rate-limited): then
 * credential.c is the request's stage, and req_identity_done() routes
 * the request once the check ends.  All strings live
 * as long as the request: the connection's, or a refcounted tok_ident.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "portcullis.h"
#include "jose.h"
#include "revoke.h"

/*
 * The scheme of an Authorization value, as one of a fixed set of words:
 * the log line that says credentials came must not carry a byte of them.
 */
static const char *
identity_scheme(const char *v)
{
	size_t	n = strcspn(v, " \t");

	if (n == 5 && strncasecmp(v, "Basic", 5) == 0)
		return ("basic");
	if (n == 6 && strncasecmp(v, "Bearer", 6) == 0)
		return ("bearer");
	return ("other");
}

/*
 * A Bearer token: the gateway's own (token_verify.c verifies it with the
 * gateway's keys, iss and aud, through the verified-token cache, never
 * waiting).  A valid one makes the principal the token's, with its
 * access list kept in the request for the policy gate; an invalid one
 * leaves the caller anonymous and marked, and authz.c answers 401
 * invalid_token on /v2/.  An IdP JWT as a Bearer is the next session's
 * (it may wait for a JWKS refresh, and becomes a stage then).
 */
static void
identity_refused(struct req *req, const char *why)
{
	req->auth_failure = why != NULL ? why : "invalid_credentials";
	req->bearer_invalid = 1;
	log_info("%llu.%u identity credentials_refused reason=%s",
	    (unsigned long long)req->c->id, req->seq, req->auth_failure);
}

/* A checked IdP JWT, now or after waiting for the issuer's keys. */
static void
identity_cred_done(struct req *req, struct tok_ident *ti, const char *why)
{
	if (ti == NULL)
		identity_refused(req, why);
	else
		token_login_principal(req, ti);
}

static void
identity_cred_waited(struct req *req, struct tok_ident *ti, const char *why)
{
	identity_cred_done(req, ti, why);
	req_identity_done(req);
}

/*
 * An IdP JWT (as a Basic password, or as a Bearer for CI): checked by
 * credential.c with the issuer's keys.  1 when it waits (the request is
 * routed by identity_cred_waited), else 0.
 */
static int
identity_idp(struct req *req, const char *user, const char *pw, size_t len)
{
	struct tok_ident	*ti;
	const char		*why;

	switch (cred_check(req, user, pw, len, &ti, &why,
	    identity_cred_waited)) {
	case CRED_OK:
		identity_cred_done(req, ti, NULL);
		return (0);
	case CRED_FAIL:
		identity_cred_done(req, NULL, why);
		return (0);
	default:
		return (1);
	}
}

/*
 * Basic on /v2/: a password that is a gateway secret or a JWT of a
 * configured IdP is checked (refused: 401 from authz.c); any other is
 * ignored as before, so a mirror's dockerd that sends a Docker Hub login
 * stays anonymous.  /token checks its Basic itself (token.c).
 */
static int
identity_basic(struct req *req, const char *v)
{
	const char	*user, *pw;
	char		*buf;
	size_t		 len = JOSE_DEFAULT_MAX_TOKEN_BYTES + 512, pwlen;
	int		 r = 0;

	if (strcmp(req->path, "/token") == 0)
		return (0);
	/* Room for the longest token the configuration verifies. */
	if (req->conf->identity != NULL && req->conf->identity->token != NULL)
		len = req->conf->identity->token->max_token_bytes + 512;
	/* No more than the value decodes to (a mirror sends it each time). */
	if (strlen(v) / 4 * 3 + 4 < len)
		len = strlen(v) / 4 * 3 + 4;
	if ((buf = malloc(len)) == NULL)
		fatal("malloc");
	if (token_basic_decode(v, buf, len, &user, &pw, &pwlen) == 0 &&
	    cred_is_credential(req->conf, pw, pwlen))
		r = identity_idp(req, user, pw, pwlen);
	else
		log_debug("%llu.%u identity credentials ignored scheme=basic",
		    (unsigned long long)req->c->id, req->seq);
	explicit_bzero(buf, len);
	free(buf);
	return (r);
}

static void
identity_bearer(struct req *req, const char *tok)
{
	struct tok_ident	*ti;
	const char		*why;

	while (*tok == ' ' || *tok == '\t')
		tok++;
	if ((why = token_verify(req, tok, strlen(tok), 0, &ti)) !=
	    NULL) {
		req->auth_failure = why;
		req->bearer_invalid = 1;
		log_info("%llu.%u identity bearer_refused reason=%s",
		    (unsigned long long)req->c->id, req->seq, why);
		return;
	}
	token_principal(req, ti);
}

int
identity_from_conn(struct req *req)
{
	struct principal	*p = &req->principal;
	struct conn		*c = req->c;
	const char		*v, *b;

	memset(p, 0, sizeof(*p));
	p->af = c->peer_af;
	memcpy(p->addr, c->peer_addr, sizeof(p->addr));
	if (c->tls_subject != NULL &&
	    c->tls_not_after <= (int64_t)time(NULL)) {
		/*
		 * Verified at the handshake, expired since: a keep-alive
		 * connection names nobody any more, as a new handshake would
		 * not (tls_peer_not_after: the chain's end).
		 */
		p->method = AUTH_ANONYMOUS;
		p->subject = "";
		req->auth_failure = "certificate_expired";
		log_info("%llu.%u identity client_certificate_expired",
		    (unsigned long long)c->id, req->seq);
	} else if (c->tls_subject != NULL &&
	    revoke_check(c->ctx->revoke, c->tls_subject, c->tls_not_before)) {
		/*
		 * `token revoke --subject DN` (or --all): a certificate
		 * issued (notBefore) before the revocation names nobody, on
		 * this connection too; one issued again after it works.
		 */
		p->method = AUTH_ANONYMOUS;
		p->subject = "";
		req->auth_failure = "revoked";
		log_info("%llu.%u identity client_certificate_revoked",
		    (unsigned long long)c->id, req->seq);
	} else if (c->tls_subject != NULL) {
		/* tls_peer_subject() keeps only a verified certificate's. */
		p->method = AUTH_MTLS;
		p->subject = c->tls_subject;
		p->mtls_subject = c->tls_subject;
	} else {
		p->method = AUTH_ANONYMOUS;
		p->subject = "";
	}
	/*
	 * /token reads its own credentials (token.c): Basic and the form's
	 * password or refresh token.  A Bearer there is ignored, so a token
	 * never buys a fresh one past its lifetime.
	 */
	if ((v = headers_get(&req->msg->hdrs, "Authorization")) == NULL ||
	    strcmp(req->path, "/token") == 0)
		return (0);
	if (strcmp(identity_scheme(v), "bearer") == 0) {
		b = v + 6;
		while (*b == ' ' || *b == '\t')
			b++;
		/* A CI job's IdP token straight as a Bearer. */
		if (cred_is_idp_jwt(req->conf, b, strlen(b)))
			return (identity_idp(req, "", b, strlen(b)));
		if (req->conf->identity != NULL &&
		    req->conf->identity->token != NULL) {
			identity_bearer(req, b);
			return (0);
		}
	}
	if (strcmp(identity_scheme(v), "basic") == 0)
		return (identity_basic(req, v));
	/*
	 * An operator who wonders why a node that sends credentials is
	 * anonymous learns that some came, and their scheme; nothing of
	 * their value.
	 */
	log_debug("%llu.%u identity credentials ignored scheme=%s",
	    (unsigned long long)c->id, req->seq, identity_scheme(v));
	return (0);
}
