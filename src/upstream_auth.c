/*
 * upstream_auth.c: the gateway as a client of an upstream's auth.
 *
 * An upstream that answers 401 with `WWW-Authenticate: Bearer realm=...`
 * wants a token from its token service (distribution token auth spec).
 * The gateway fetches one, anonymously or with the upstream's configured
 * credentials (HTTP Basic to the realm), caches it per upstream and scope
 * until shortly before it expires, and sends it on upstream requests.  A
 * `Basic` challenge means the credentials go on every request instead.
 *
 * The realm is the upstream's choice, so it is held to rules: the
 * credentials go only to the upstream's own host or a host in its
 * auth_hosts, only over https unless the upstream itself is plain http on
 * that same host, and a realm on any other host may only be dialled at a
 * public address.  This file decides; proxy.c (the one HTTP client) makes
 * the request.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "challenge.h"
#include "netaddr.h"
#include "portcullis.h"

#define UAUTH_CACHE_MAX		256	/* tokens per upstream */
#define UAUTH_DEFAULT_TTL_S	60	/* spec: when expires_in is absent */

struct utoken {
	TAILQ_ENTRY(utoken)	 entry;
	char			*scope;
	char			*token;
	uint64_t		 expires_ms;
};

/* The per-upstream auth state, made on first use. */
struct upstream_state *
upstream_state_get(struct pc_ctx *ctx, const struct config_upstream *up)
{
	struct upstream_state	*us;

	TAILQ_FOREACH(us, &ctx->ustates, entry)
		if (strcmp(us->name, up->name) == 0)
			return (us);
	if ((us = calloc(1, sizeof(*us))) == NULL)
		fatal("calloc");
	snprintf(us->name, sizeof(us->name), "%s", up->name);
	TAILQ_INIT(&us->tokens);
	TAILQ_INSERT_TAIL(&ctx->ustates, us, entry);
	return (us);
}

static void
utoken_free(struct utoken *t)
{
	free(t->scope);
	if (t->token != NULL) {
		explicit_bzero(t->token, strlen(t->token));
		free(t->token);
	}
	free(t);
}

/* Free all upstream state. */
void
upstream_state_free_all(struct pc_ctx *ctx)
{
	struct upstream_state	*us;
	struct utoken		*t;

	while ((us = TAILQ_FIRST(&ctx->ustates)) != NULL) {
		TAILQ_REMOVE(&ctx->ustates, us, entry);
		while ((t = TAILQ_FIRST(&us->tokens)) != NULL) {
			TAILQ_REMOVE(&us->tokens, t, entry);
			utoken_free(t);
		}
		free(us);
	}
}

/* A cached, unexpired token for the scope, or NULL. */
const char *
uauth_cached(struct upstream_state *us, const char *scope)
{
	struct utoken	*t, *next;
	uint64_t	 now = now_ms();

	TAILQ_FOREACH_SAFE(t, &us->tokens, entry, next) {
		if (t->expires_ms <= now) {
			TAILQ_REMOVE(&us->tokens, t, entry);
			us->ntokens--;
			utoken_free(t);
			continue;
		}
		if (strcmp(t->scope, scope) == 0)
			return (t->token);
	}
	return (NULL);
}

/* Remember an upstream's challenge (the WWW-Authenticate value). */
void
uauth_learn(struct upstream_state *us, const char *value)
{
	struct challenge	ch;

	if (challenge_parse(value, strlen(value), &ch) == -1) {
		log_info("- upstream %s bad_challenge", us->name);
		return;
	}
	us->auth_known = 1;
	us->bearer = strcmp(ch.scheme, "Bearer") == 0;
	snprintf(us->realm, sizeof(us->realm), "%s", ch.realm);
	snprintf(us->service, sizeof(us->service), "%s", ch.service);
}

/* "Basic <base64(user:pass)>" into buf; returns 0 or -1. */
int
uauth_basic(const struct config_upstream *up, char *buf, size_t len)
{
	char		 plain[1024];
	unsigned char	 enc[1400];
	int		 n;

	if (up->username == NULL || up->password == NULL)
		return (-1);
	n = snprintf(plain, sizeof(plain), "%s:%s", up->username,
	    up->password);
	if (n < 0 || (size_t)n >= sizeof(plain) || (size_t)n * 4 / 3 + 4 >=
	    sizeof(enc))
		return (-1);
	EVP_EncodeBlock(enc, (unsigned char *)plain, n);
	explicit_bzero(plain, sizeof(plain));
	n = snprintf(buf, len, "Basic %s", enc);
	explicit_bzero(enc, sizeof(enc));
	return (n < 0 || (size_t)n >= len ? -1 : 0);
}

/*
 * Forget the cached token for scope (only if it is tok, when tok is not
 * NULL: another request may have cached a fresh one meanwhile).
 */
void
uauth_drop(struct upstream_state *us, const char *scope, const char *tok)
{
	struct utoken	*t, *next;

	TAILQ_FOREACH_SAFE(t, &us->tokens, entry, next) {
		if (strcmp(t->scope, scope) != 0 ||
		    (tok != NULL && strcmp(t->token, tok) != 0))
			continue;
		TAILQ_REMOVE(&us->tokens, t, entry);
		us->ntokens--;
		utoken_free(t);
	}
}

/*
 * The token request for scope (space-separated scopes allowed): its URL
 * in u, the origin to dial in o (restricted unless the realm's host is
 * trusted) and the header lines in hdrs (with the upstream's Basic
 * credentials when they may go there: never logged).  -1 with the reason
 * in why when the realm is unusable or would receive the credentials
 * against the rules.
 */
int
uauth_token_request(const struct config_upstream *up,
    const struct upstream_state *us, const char *scope, struct url *u,
    struct origin *o, char *hdrs, size_t hlen, char *why, size_t wlen)
{
	struct challenge	 ch;
	const char		*scopes[16];
	char			 copy[1024], *p, *save = NULL;
	char			 urlbuf[4096], auth[1400];
	size_t			 n = 0;
	int			 own, listed, trusted, creds, r;

	memset(&ch, 0, sizeof(ch));
	snprintf(ch.scheme, sizeof(ch.scheme), "Bearer");
	snprintf(ch.realm, sizeof(ch.realm), "%s", us->realm);
	snprintf(ch.service, sizeof(ch.service), "%s", us->service);
	snprintf(copy, sizeof(copy), "%s", scope);
	for (p = strtok_r(copy, " ", &save); p != NULL && n < 16;
	    p = strtok_r(NULL, " ", &save))
		scopes[n++] = p;
	if (challenge_token_url(&ch, scopes, n, urlbuf, sizeof(urlbuf)) < 0 ||
	    url_parse(urlbuf, u) == -1) {
		snprintf(why, wlen, "token realm is not an http(s) URL");
		return (-1);
	}
	/* Credentials are host-scoped, like cookies: any port of the host. */
	own = strcasecmp(u->host, up->u.host) == 0;
	listed = netaddr_listed(up->auth_hosts, up->nauth_hosts, u->host,
	    u->port) || (up->docker_hub &&
	    strcmp(u->host, "auth.docker.io") == 0);
	trusted = own || listed;
	creds = up->username != NULL && up->password != NULL;
	if (creds && !trusted) {
		snprintf(why, wlen, "token realm host %s is neither the "
		    "upstream's host nor in its auth_hosts: credentials not "
		    "sent", u->host);
		return (-1);
	}
	if (creds && !u->tls && !(own && !up->u.tls)) {
		snprintf(why, wlen, "token realm %s is plain http: credentials "
		    "go over https only (or to a plain-http upstream's own "
		    "host)", u->host);
		return (-1);
	}
	origin_from_url(o, u, trusted ? up->ca_file : NULL);
	/*
	 * Dialling is origin-scoped, as for redirects: another port of the
	 * upstream's host is another service (the gateway's own neighbours
	 * when the upstream is on loopback), so only auth_hosts opens it.
	 */
	o->restricted = !listed && !(own && u->port == up->u.port &&
	    u->tls == up->u.tls);
	r = snprintf(hdrs, hlen, "User-Agent: portcullis/%s\r\n"
	    "Accept: application/json\r\n", PC_VERSION);
	if (r < 0 || (size_t)r >= hlen) {
		snprintf(why, wlen, "token request too long");
		return (-1);
	}
	if (creds) {
		if (uauth_basic(up, auth, sizeof(auth)) == -1) {
			snprintf(why, wlen, "credentials too long");
			return (-1);
		}
		n = r;
		r = snprintf(hdrs + n, hlen - n, "Authorization: %s\r\n",
		    auth);
		explicit_bzero(auth, sizeof(auth));
		if (r < 0 || (size_t)r >= hlen - n) {
			explicit_bzero(hdrs, hlen);
			snprintf(why, wlen, "token request too long");
			return (-1);
		}
	}
	return (0);
}

/*
 * Keep the token from a token service's 200 answer (body, len) for scope;
 * returns it (owned by the cache, valid until the next cache change) or
 * NULL with the reason in why.
 */
const char *
uauth_store(struct upstream_state *us, const char *scope, const char *body,
    size_t len, char *why, size_t wlen)
{
	struct utoken	*t;
	json_t		*root, *tok, *exp;
	json_error_t	 jerr;
	const char	*s;
	json_int_t	 ttl = UAUTH_DEFAULT_TTL_S;

	root = json_loadb(body, len, 0, &jerr);
	tok = root ? json_object_get(root, "token") : NULL;
	if (!json_is_string(tok))
		tok = root ? json_object_get(root, "access_token") : NULL;
	if (!json_is_string(tok) || *(s = json_string_value(tok)) == '\0' ||
	    strlen(s) > 16384 || strpbrk(s, "\r\n") != NULL) {
		json_decref(root);
		snprintf(why, wlen, "token service sent no usable token");
		return (NULL);
	}
	exp = json_object_get(root, "expires_in");
	if (json_is_integer(exp) && json_integer_value(exp) > 0)
		ttl = json_integer_value(exp);
	if (ttl > 86400)
		ttl = 86400;
	/* Renew a little early: a token must not expire in flight. */
	ttl = ttl * 9 / 10;
	uauth_drop(us, scope, NULL);
	if ((t = calloc(1, sizeof(*t))) == NULL ||
	    (t->scope = strdup(scope)) == NULL ||
	    (t->token = strdup(s)) == NULL)
		fatal("calloc");
	t->expires_ms = now_ms() + (uint64_t)ttl * 1000;
	if (us->ntokens >= UAUTH_CACHE_MAX) {
		struct utoken *old = TAILQ_LAST(&us->tokens, utokenq);

		TAILQ_REMOVE(&us->tokens, old, entry);
		us->ntokens--;
		utoken_free(old);
	}
	TAILQ_INSERT_HEAD(&us->tokens, t, entry);
	us->ntokens++;
	json_decref(root);
	log_debug("- upstream %s token_fetched scope=\"%s\" ttl=%lld",
	    us->name, scope, (long long)ttl);
	return (t->token);
}
