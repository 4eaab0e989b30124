/*
 * authz.c: the policy stage, a gate of DISPATCH (req_dispatch) and of the
 * admin endpoints (req_route).  It asks the policy engine (policy.h)
 * whether the request's principal (identity.c) may do the action the
 * endpoint implies on the repository as its upstream names it, and either
 * lets the request on or answers it:
 *
 *	manifest, blob GET/HEAD; tags list; referrers	pull
 *	upload start, PATCH, PUT, status GET, cancel;	push
 *	manifest PUT
 *	manifest, blob DELETE				delete
 *	_catalog				catalog (no repository)
 *	/admin and below			admin (no repository, no
 *						upstream)
 *	the base, GET /v2/			pull, repositories aside
 *						(authz_base)
 *
 * A refusal is 401 UNAUTHORIZED with a challenge for an anonymous caller
 * (credentials might help), 401 with error="insufficient_scope" for a
 * gateway token whose access lacks the action (a token with that scope
 * might help, as distribution answers), and 403 DENIED for an identified
 * caller the live policy refuses (nothing would help).  A digest on the blocklist is 403 for everyone, before the
 * cache is consulted.  A cross-repository mount whose source the caller
 * may not pull is not refused: it degrades to a plain upload start, as
 * the distribution spec allows a registry to do.
 *
 * The decision and the deciding rule stay in the request (req->decision,
 * req->rule) for the summary log line and the audit record; the rule ids
 * are the policy's, which the request's config snapshot keeps alive.
 * Deciding allocates nothing and never waits, so the gate is not a stage
 * of its own: it answers or returns at once.
 */
#include <arpa/inet.h>
#include <sys/socket.h>

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "portcullis.h"
#include "policy.h"
#include "scope.h"

/* The rule id the records carry for the deprecated admin address list. */
#define AUTHZ_ADMIN_ALIAS	"audit.admin_addresses"

/*
 * The action a routed /v2 request implies; -1 for none (the base).  The
 * rate limits (ratelimit.c) count requests by it too.
 */
int
authz_action(const struct req *req)
{
	int	m = req->msg->method;

	switch (req->route.ep) {
	case OCI_EP_MANIFEST:
		if (m == HTTP_PUT)
			return (POL_PUSH);
		return (m == HTTP_DELETE ? POL_DELETE : POL_PULL);
	case OCI_EP_BLOB:
		return (m == HTTP_DELETE ? POL_DELETE : POL_PULL);
	case OCI_EP_TAGS:
	case OCI_EP_REFERRERS:
		return (POL_PULL);
	case OCI_EP_UPLOAD_START:
	case OCI_EP_UPLOAD:
		/* Its status (GET) and its cancel (DELETE) too. */
		return (POL_PUSH);
	case OCI_EP_CATALOG:
		return (POL_CATALOG);
	case OCI_EP_BASE:
		return (-1);	/* answered by authz_base() */
	default:
		/* An endpoint not named here is closed until it is. */
		return (POL_ADMIN);
	}
}

/*
 * The challenge of a 401 on /v2/.  RFC 9110 15.5.2: a 401 carries one.
 * With the token service configured it is the Bearer challenge of
 * distribution's token spec, as the reference registry sends it: realm
 * (external_url + "/token"), service, the scope the request needed when
 * it names one, and error="invalid_token" or "insufficient_scope" when a
 * token came.  Without a token service there is no realm to send a client
 * to; Basic with the service name says "credentials wanted" to the
 * clients that look.  The one builder: the gateway's own 401s and an
 * upstream's relayed one (proxy_relay.c) must send a client the same
 * way.  The length written, or -1 when it does not fit.
 */
static int
authz_challenge_build(struct req *req, const char *scope, const char *error,
    char *chal, size_t len)
{
	const struct config	*conf = req->conf;
	char			 base[512];
	int			 n;

	if (conf->identity != NULL && conf->identity->token != NULL &&
	    req_external_base(req, base, sizeof(base)) > 0)
		n = snprintf(chal, len, "Bearer realm=\"%s/token\","
		    "service=\"%s\"%s%s%s%s%s%s", base,
		    conf->identity->token->service,
		    scope != NULL ? ",scope=\"" : "",
		    scope != NULL ? scope : "", scope != NULL ? "\"" : "",
		    error != NULL ? ",error=\"" : "",
		    error != NULL ? error : "", error != NULL ? "\"" : "");
	else
		n = snprintf(chal, len, "Basic realm=\"%s\"", conf->service);
	return (n > 0 && (size_t)n < len ? n : -1);
}

/* Answer 401 UNAUTHORIZED with the challenge (authz_challenge_build). */
static void
authz_challenge(struct req *req, const char *detail, const char *scope,
    const char *error)
{
	struct headers		 h;
	char			 chal[OCI_NAME_MAX + 1024];
	int			 n;

	headers_init(&h);
	if ((n = authz_challenge_build(req, scope, error, chal,
	    sizeof(chal))) > 0)
		headers_add(&h, "WWW-Authenticate", 16, chal, (size_t)n);
	req_fail_with(req, ERR_UNAUTHORIZED, detail, &h);
	headers_clear(&h);
}

/* The scope a request needs, as a challenge names it; NULL: none. */
static const char *
authz_scope(const struct req *req, enum pol_action a, char *buf,
    size_t len)
{
	const char	*an;
	int		 n;

	if (a == POL_CATALOG)
		return ("registry:catalog:*");
	if (a == POL_ADMIN || !req->is_v2 || req->route.name[0] == '\0' ||
	    (an = policy_action_name(a)) == NULL)
		return (NULL);
	n = snprintf(buf, len, "repository:%s:%s", req->route.name, an);
	return (n < 0 || (size_t)n >= len ? NULL : buf);
}

/*
 * The challenge for an upstream's 401 relayed to the client
 * (proxy_relay.c): the one the gateway's own 401 for this request would
 * carry, naming the scope it needs, so that a client with a token
 * service in front asks the gateway's /token, never the upstream's
 * realm.  The length written into chal, or -1.
 */
int
authz_upstream_challenge(struct req *req, char *chal, size_t len)
{
	char	sc[OCI_NAME_MAX + 64];
	int	a = authz_action(req);

	return (authz_challenge_build(req, a == -1 ? NULL :
	    authz_scope(req, a, sc, sizeof(sc)), NULL, chal, len));
}

/*
 * A Bearer token that failed verification (identity.c marked it): 401
 * invalid_token, whatever the policy would say to an anonymous caller,
 * so a client with an expired token fetches a new one.  0 or -1.
 */
static int
authz_bad_token(struct req *req, const char *scope)
{
	if (!req->bearer_invalid)
		return (0);
	req->decision = "deny";
	req->rule = NULL;
	authz_challenge(req, "invalid credentials", scope,
	    "invalid_token");
	return (-1);
}

/*
 * A gateway token's access claim must grant the action on the
 * repository as the client names it (the name it asked /token for).
 * Policy decides besides: the live policy, so a change applies to the
 * tokens already issued.  0, or -1 when answered (401
 * insufficient_scope).
 */
static int
authz_token_access(struct req *req, enum pol_action a)
{
	char		 buf[OCI_NAME_MAX + 64];
	unsigned	 need, have;

	if (req->tok == NULL)
		return (0);
	switch (a) {
	case POL_PULL:
		need = SCOPE_PULL;
		break;
	case POL_PUSH:
		need = SCOPE_PUSH;
		break;
	case POL_DELETE:
		need = SCOPE_DELETE;
		break;
	case POL_CATALOG:
		need = SCOPE_PULL | SCOPE_PUSH | SCOPE_DELETE;
		break;
	default:
		need = 0;	/* admin: never in a token */
		break;
	}
	if (a == POL_CATALOG)
		have = scope_actions(req->tok->access, SCOPE_REGISTRY,
		    "catalog");
	else if (a == POL_ADMIN)
		have = 0;
	else
		have = scope_actions(req->tok->access, SCOPE_REPOSITORY,
		    req->route.name);
	if (need != 0 && (have & need) != 0 &&
	    (a == POL_CATALOG || (have & need) == need))
		return (0);
	req->decision = "deny";
	req->rule = NULL;
	authz_challenge(req, "the token does not grant this access",
	    authz_scope(req, a, buf, sizeof(buf)), "insufficient_scope");
	return (-1);
}

/*
 * Refuse: 401 with a challenge when the caller is anonymous, else 403.
 * The message names the action and the repository, never a credential.
 * The request is answered (and retired) when this returns.
 */
static void
authz_refuse(struct req *req, enum pol_action a, const char *repo,
    const char *rule)
{
	char		 detail[OCI_NAME_MAX + 192], sc[OCI_NAME_MAX + 64];
	const char	*an = policy_action_name(a), *why;
	int		 anon = req->principal.method == AUTH_ANONYMOUS;

	req->decision = "deny";
	req->rule = rule;
	why = anon ? "requires authentication" : "is denied";
	if (repo != NULL)
		snprintf(detail, sizeof(detail), "%s access to repository "
		    "%s of upstream %s %s", an, repo, req->up->name, why);
	else
		snprintf(detail, sizeof(detail), "%s access %s", an, why);
	if (!anon) {
		req_fail(req, ERR_DENIED, detail);
		return;
	}
	authz_challenge(req, detail, authz_scope(req, a, sc, sizeof(sc)),
	    req->tok != NULL ? "insufficient_scope" : NULL);
}

/*
 * The digest a request names that the blocklist must see, or NULL: the
 * reference of a manifest or blob by digest (pull, push by digest,
 * delete), and the digest= that completes an upload.  The digest= of an
 * upload start is a monolithic upload, completed at once.
 */
static const char *
authz_digest(const struct req *req, char *buf, size_t len)
{
	size_t	qlen;

	switch (req->route.ep) {
	case OCI_EP_MANIFEST:
	case OCI_EP_BLOB:
		return (req->route.ref_digest ? req->route.ref : NULL);
	case OCI_EP_UPLOAD:
	case OCI_EP_UPLOAD_START:
		if (req->query == NULL || (qlen = strlen(req->query)) == 0 ||
		    url_query_get(req->query, qlen, "digest", buf, len) == -1)
			return (NULL);
		return (buf);
	default:
		return (NULL);
	}
}

/*
 * The query parameters of an upload that the gateway decides on (digest,
 * mount, from) are found by their names as sent; the upstream decodes
 * names before it looks ("fr%6Fm" is its "from").  A percent in a
 * parameter name would therefore let a blocked digest= or an unchecked
 * from= past the gate: refuse it (no client encodes names).
 */
static int
authz_names_plain(const char *q)
{
	const char	*p;
	size_t		 nlen;

	for (p = q; p != NULL && *p != '\0'; p += strcspn(p, "&")) {
		while (*p == '&')
			p++;
		nlen = strcspn(p, "=&");
		if (memchr(p, '%', nlen) != NULL)
			return (0);
		p += nlen;
	}
	return (1);
}

/*
 * Whether an upload request carries a form body.  A Go registry
 * (distribution's Request.FormValue) reads its mount, from and digest
 * parameters from such a body as well as from the query, the body's
 * first: a mount source or a blocked digest in it would never be seen by
 * the checks here, which read the query.  No client sends a blob as a
 * form, so one is refused.  The media type is compared as Go's mime
 * package reads it: case aside, blanks around it, parameters after ';'.
 */
static int
authz_form_body(const struct req *req)
{
	static const char *const	 forms[] = {
		"application/x-www-form-urlencoded", "multipart/"
	};
	const struct headers		*h = &req->msg->hdrs;
	const char			*v;
	size_t				 i, k, n, len;

	if (!req->has_body)
		return (0);
	for (i = 0; i < h->n; i++) {
		if (strcasecmp(h->v[i].name, "Content-Type") != 0)
			continue;
		v = h->v[i].value;
		len = h->v[i].vlen;
		while (len > 0 && (*v == ' ' || *v == '\t')) {
			v++;
			len--;
		}
		for (k = 0; k < sizeof(forms) / sizeof(forms[0]); k++) {
			n = strlen(forms[k]);
			if (len >= n && strncasecmp(v, forms[k], n) == 0 &&
			    (forms[k][n - 1] == '/' || len == n ||
			    strchr(" \t;", v[n]) != NULL))
				return (1);
		}
	}
	return (0);
}

/*
 * A cross-repository mount (POST .../blobs/uploads/?mount=D&from=R) needs
 * pull on R besides push on the target (and, with a gateway token, its
 * access claim granting pull on R, as distribution asks).  R is mapped
 * by req_map_from(), as the relay maps it.  Without it the mount and from
 * parameters are dropped: the upstream then starts a plain upload (202),
 * and the client uploads the blob it could not borrow.  A `from` that
 * proxy_relay.c would not pass on (unparsable, another upstream's) needs
 * no check; one that it would is checked whatever `mount` says, so that
 * no odd spelling of the digest skips the check.  Returns 0, or -1 when
 * the request was answered.
 */
static int
authz_mount(struct req *req)
{
	const struct config	*conf = req->conf;
	struct pol_result	 res;
	char			 from[OCI_NAME_MAX + 1];
	char			 upfrom[OCI_NAME_MAX + 16];
	char			 digest[OCI_REF_MAX + 1];
	char			 q1[4096], q2[4096];
	const char		*id, *why = NULL;
	size_t			 qlen;

	if (req->route.ep != OCI_EP_UPLOAD_START || req->query == NULL ||
	    (qlen = strlen(req->query)) == 0)
		return (0);
	if (url_query_get(req->query, qlen, "from", from,
	    sizeof(from)) == -1 ||
	    req_map_from(req, from, upfrom, sizeof(upfrom)) == -1)
		return (0);
	policy_decide(conf->policy, &req->principal, req->up->name, upfrom,
	    POL_PULL, &res);
	if (!res.allow)
		why = "no_pull_on_source";
	else if (req->tok != NULL && !(scope_actions(req->tok->access,
	    SCOPE_REPOSITORY, from) & SCOPE_PULL))
		/* A token must grant the source's pull, by the client's name. */
		why = "token_lacks_source_pull";
	else if (url_query_get(req->query, qlen, "mount", digest,
	    sizeof(digest)) == 0 && policy_blocked(conf->policy, digest, &id))
		why = "blocked_digest";	/* its upload's end is refused */
	if (why == NULL)
		return (0);
	if (url_query_strip(req->query, qlen, "mount", q1, sizeof(q1)) < 0 ||
	    url_query_strip(q1, strlen(q1), "from", q2, sizeof(q2)) < 0) {
		/* Fail closed: the proxy would refuse it as well. */
		req_fail(req, ERR_BAD_REQUEST, "query string too long");
		return (-1);
	}
	log_info("%llu.%u authz mount_degraded from=%s rule=%s reason=%s",
	    (unsigned long long)req->c->id, req->seq, upfrom,
	    res.rule != NULL ? res.rule : "-", why);
	/* Never longer than what it replaces: rewritten in place. */
	memcpy(req->query, q2, strlen(q2) + 1);
	return (0);
}

/*
 * The policy gate of a routed /v2 request (from req_dispatch).  Returns
 * 0 to let it on, -1 when it was answered (the request is retired).
 */
int
authz_request(struct req *req)
{
	const struct config	*conf = req->conf;
	struct pol_result	 res;
	char			 buf[OCI_REF_MAX + 1];
	const char		*repo, *digest, *id;
	int			 a;

	if ((a = authz_action(req)) == -1)
		return (0);
	if (authz_bad_token(req, authz_scope(req, a, buf, sizeof(buf))) == -1)
		return (-1);
	if ((req->route.ep == OCI_EP_UPLOAD_START ||
	    req->route.ep == OCI_EP_UPLOAD) && !authz_names_plain(req->query)) {
		req_fail(req, ERR_BAD_REQUEST, "percent-encoded query "
		    "parameter name");
		return (-1);
	}
	if ((req->route.ep == OCI_EP_UPLOAD_START ||
	    req->route.ep == OCI_EP_UPLOAD) && authz_form_body(req)) {
		req_fail(req, ERR_BAD_REQUEST, "an upload's body is not a "
		    "form");
		return (-1);
	}
	repo = a == POL_CATALOG ? NULL : req->upname;
	policy_decide(conf->policy, &req->principal, req->up->name, repo, a,
	    &res);
	log_debug("%llu.%u authz %s action=%s repo=%s rule=%s",
	    (unsigned long long)req->c->id, req->seq,
	    res.allow ? "allow" : "deny", policy_action_name(a),
	    repo != NULL ? repo : "-", res.rule != NULL ? res.rule : "-");
	/*
	 * What the token lacks comes first: a client may ask /token again
	 * (401 insufficient_scope, as the reference registry answers); what
	 * the live policy refuses a token's holder it would refuse anyway.
	 */
	if (authz_token_access(req, a) == -1)
		return (-1);
	if (!res.allow) {
		authz_refuse(req, a, repo, res.rule);
		return (-1);
	}
	req->decision = "allow";
	req->rule = res.rule;
	/* For everyone, cached or not: before the cache is asked. */
	if ((digest = authz_digest(req, buf, sizeof(buf))) != NULL &&
	    policy_blocked(conf->policy, digest, &id)) {
		req->decision = "deny";
		req->rule = id;
		req_fail(req, ERR_DENIED, "digest is blocked");
		return (-1);
	}
	return (authz_mount(req));
}

/*
 * The base endpoint, GET /v2/ (from req_route), which clients call first
 * to learn whether and how to authenticate (distribution spec,
 * "Determining Support").  An anonymous caller gets 401 and the
 * challenge, as from a registry that requires authentication, unless an
 * allow rule for pull matches it on some upstream (whatever its
 * repositories); everyone else gets 200.  A client then sends the
 * credentials it holds with each request: for a mirror's dockerd, the
 * Docker Hub login of whoever ran `docker login` (moby issues 30880,
 * 42022).  identity.c ignores them, proxy.c never forwards them, and no
 * log line or audit record carries them.  A client with none goes on
 * anonymously, except dockerd, which leaves a Basic-challenging mirror at
 * once ("no basic auth credentials"): it would have been refused on its
 * first request anyway.
 * Returns 0 to let the caller answer 200, -1 when answered.
 */
int
authz_base(struct req *req)
{
	const struct config	*conf = req->conf;
	size_t			 i;

	if (authz_bad_token(req, NULL) == -1)
		return (-1);
	if (req->principal.method != AUTH_ANONYMOUS || req->tok != NULL)
		return (0);
	/*
	 * A challenge must never reach a caller that may pull something:
	 * dockerd, holding no credentials, would leave the mirror at once.
	 * So the question errs toward 200 (policy.h).
	 */
	for (i = 0; i < conf->nupstreams; i++)
		if (policy_any_allow(conf->policy, &req->principal,
		    conf->upstreams[i].name, POL_PULL))
			return (0);
	req->decision = "deny";
	req->rule = NULL;
	authz_challenge(req, "authentication required", NULL, NULL);
	return (-1);
}

/* Whether the client's address is in audit.admin_addresses. */
static int
authz_admin_address(const struct req *req)
{
	const struct config_audit	*ac = req->conf->audit;
	const struct principal		*p = &req->principal;
	unsigned char			 b[16];
	size_t				 i;

	if (ac == NULL || p->af == 0)
		return (0);
	for (i = 0; i < ac->nadmin_addresses; i++) {
		if (inet_pton(p->af, ac->admin_addresses[i], b) == 1 &&
		    memcmp(p->addr, b, p->af == AF_INET ? 4 : 16) == 0)
			return (1);
	}
	return (0);
}

/*
 * The gate of /admin and everything under it (from req_route): the
 * admin action, no repository, no upstream.  audit.admin_addresses,
 * deprecated, still admits its addresses as an allow rule would: a deny
 * rule that matches wins over it as over any allow.  Returns 0 or -1
 * (answered).
 */
int
authz_admin(struct req *req)
{
	struct pol_result	res;

	if (authz_bad_token(req, NULL) == -1)
		return (-1);
	policy_decide(req->conf->policy, &req->principal, NULL, NULL,
	    POL_ADMIN, &res);
	if (!res.allow && res.why == POL_WHY_DEFAULT &&
	    authz_admin_address(req)) {
		res.allow = 1;
		res.rule = AUTHZ_ADMIN_ALIAS;
	}
	if (authz_token_access(req, POL_ADMIN) == -1)
		return (-1);
	if (!res.allow) {
		authz_refuse(req, POL_ADMIN, NULL, res.rule);
		return (-1);
	}
	req->decision = "allow";
	req->rule = res.rule;
	return (0);
}

/*
 * Whether authz_admin() would admit the request, answering nothing: for
 * what only the admin action may see inside an answer everyone gets
 * (the checks /readyz names).  A gateway token never grants admin.
 */
int
authz_admin_allowed(const struct req *req)
{
	struct pol_result	res;

	if (req->bearer_invalid || req->tok != NULL)
		return (0);
	policy_decide(req->conf->policy, &req->principal, NULL, NULL,
	    POL_ADMIN, &res);
	if (!res.allow && res.why == POL_WHY_DEFAULT &&
	    authz_admin_address(req))
		res.allow = 1;
	return (res.allow);
}

/* At start and at each reload, what the operator should hear about. */
void
authz_config_loaded(const struct config *conf)
{
	if (conf->audit != NULL && conf->audit->nadmin_addresses > 0)
		log_warn("- config deprecated key=/audit/admin_addresses: "
		    "write an allow rule for the admin action instead "
		    "(addresses: cidr: subjects); it still admits its %zu "
		    "address(es) as such a rule would",
		    conf->audit->nadmin_addresses);
}
