/*
 * identity.c: the identity stage, who asks.  It fills the request's
 * principal (principal.h), which every later stage (policy, rate limits,
 * the log line and the audit record) reads instead of any raw credential.
 *
 * Until the identity issue lands the principal comes from the connection
 * alone: the client's address, and the subject of a client certificate
 * that TLS verified (method "mtls"); anyone else is anonymous.  Nothing a
 * client sends in a header counts.  In particular an Authorization header
 * (dockerd sends a mirror the Docker Hub credentials of whoever ran
 * `docker login`) is ignored here, dropped by proxy.c before a request
 * goes upstream, and written to no log line or audit record.
 *
 * The connection's facts are known before the request is routed, so this
 * runs at request start and never waits; when credentials are verified
 * (a Redis lookup, a JWKS fetch) that part becomes a DISPATCH stage of
 * its own.  All strings stay the connection's: the principal lives as
 * long as the request, which never outlives its connection.
 */
#include <string.h>
#include <strings.h>

#include "portcullis.h"

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
 * A Bearer token: the gateway's own (token.c verifies it with the
 * gateway's keys, iss and aud, through the verified-token cache, never
 * waiting).  A valid one makes the principal the token's, with its
 * access list kept in the request for the policy gate; an invalid one
 * leaves the caller anonymous and marked, and authz.c answers 401
 * invalid_token on /v2/.  An IdP JWT as a Bearer is the next session's
 * (it may wait for a JWKS refresh, and becomes a stage then).
 */
static void
identity_bearer(struct req *req, const char *tok)
{
	struct tok_ident	*ti;
	const char		*why;

	while (*tok == ' ' || *tok == '\t')
		tok++;
	if ((why = token_verify(req->conf, tok, strlen(tok), 0, &ti)) !=
	    NULL) {
		req->auth_failure = why;
		req->bearer_invalid = 1;
		log_info("%llu.%u identity bearer_refused reason=%s",
		    (unsigned long long)req->c->id, req->seq, why);
		return;
	}
	token_principal(req, ti);
}

void
identity_from_conn(struct req *req)
{
	struct principal	*p = &req->principal;
	struct conn		*c = req->c;
	const char		*v;

	memset(p, 0, sizeof(*p));
	p->af = c->peer_af;
	memcpy(p->addr, c->peer_addr, sizeof(p->addr));
	if (c->tls_subject != NULL) {
		/* tls_peer_subject() keeps only a verified certificate's. */
		p->method = AUTH_MTLS;
		p->subject = c->tls_subject;
		p->mtls_subject = c->tls_subject;
	} else {
		p->method = AUTH_ANONYMOUS;
		p->subject = "";
	}
	if ((v = headers_get(&req->msg->hdrs, "Authorization")) == NULL)
		return;
	if (strcmp(identity_scheme(v), "bearer") == 0 &&
	    req->conf->identity != NULL &&
	    req->conf->identity->token != NULL) {
		identity_bearer(req, v + 6);
		return;
	}
	/*
	 * Basic on /v2/ (a gateway secret or an IdP JWT as the password)
	 * is the next session's: until a credential backend exists it is
	 * ignored here as before, so a mirror's dockerd, which sends the
	 * Docker Hub login of whoever ran `docker login`, stays anonymous
	 * rather than refused.  /token refuses Basic itself (token.c).
	 * An operator who wonders why a node that sends credentials is
	 * anonymous learns that some came, and their scheme; nothing of
	 * their value.
	 */
	log_debug("%llu.%u identity credentials ignored scheme=%s",
	    (unsigned long long)c->id, req->seq, identity_scheme(v));
}
