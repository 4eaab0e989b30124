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

#include "portcullis.h"

void
identity_from_conn(struct req *req)
{
	struct principal	*p = &req->principal;
	struct conn		*c = req->c;

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
}
