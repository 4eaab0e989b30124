/*
 * oidc_client.c: the gateway as an OAuth 2.0 client of an identity
 * provider's token endpoint (RFC 6749 3.2).  One request: a form POSTed
 * through the one HTTP client (proxy_fetch_url + proxy_fetch_set_form),
 * TLS verified with the issuer's ca_file, the endpoint taken from the
 * issuer's discovery document under the rules jwks_uri follows
 * (oidc_endpoint: https, restricted to public addresses unless the
 * issuer's own origin or in jwks_hosts), the client authenticated with
 * client_secret_basic (2.3.1: id and secret form-urlencoded, then
 * Basic) or, for a public client, by client_id in the form.  The answer
 * is bounded by the caller and parsed as JSON.
 *
 * The browser sign-in's code exchange (sso.c) and the terminal
 * sign-in's renewals (token_idp.c) use it; oidc_userinfo_request() GETs
 * the userinfo endpoint with a provider access token instead (the
 * browser session's re-check before a secret is made, sso_account.c).
 *
 * Guarantees: the callback runs exactly once unless cancelled first, and
 * never before oidc_token_request() returns (the fetch starts on the next
 * loop turn); neither the form nor the secret is logged.
 */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "oidc.h"
#include "portcullis.h"
#include "oidc_client.h"

struct oidc_treq {
	struct pc_ctx		*ctx;
	struct config		*conf;		/* referenced */
	struct proxy		*fetch;
	struct event		*ev_start;
	oidc_token_cb		 cb;
	void			*arg;
	size_t			 max;
	struct url		 u;
	struct origin		 o;
	char			*hdrs;
	char			*form;		/* NULL: a GET */
	size_t			 formlen;
	const char		*what;		/* for reasons */
	char			 logid[64];
	/* A copy: the issuer's may go with a reload before the answer. */
	struct config_upstream	 peer;
	char			 peer_name[48];
};

static void
oidc_treq_free(struct oidc_treq *t)
{
	if (t->ev_start != NULL)
		event_free(t->ev_start);
	proxy_free(t->fetch);
	if (t->hdrs != NULL) {
		OPENSSL_cleanse(t->hdrs, strlen(t->hdrs));
		free(t->hdrs);
	}
	if (t->form != NULL) {
		OPENSSL_cleanse(t->form, t->formlen);
		free(t->form);
	}
	config_unref(t->conf);
	free(t);
}

/* Forget a request before its callback: the callback never runs. */
void
oidc_token_cancel(struct oidc_treq *t)
{
	if (t != NULL)
		oidc_treq_free(t);
}

/* A printable OAuth error code (RFC 6749 5.2: %x20-21 / %x23-5B / ...). */
static const char *
oidc_error_code(json_t *doc)
{
	const char	*s;
	size_t		 i;

	if (!json_is_string(json_object_get(doc, "error")))
		return (NULL);
	s = json_string_value(json_object_get(doc, "error"));
	for (i = 0; s[i] != '\0'; i++)
		if (s[i] < 0x20 || s[i] > 0x7e || s[i] == '"' ||
		    s[i] == '\\' || i >= 64)
			return ("invalid_error_code");
	return (i > 0 ? s : NULL);
}

static void
oidc_treq_answer(void *arg, int status, const struct headers *h,
    const char *body, size_t len, const char *err)
{
	struct oidc_treq	*t = arg;
	json_t			*doc = NULL;
	json_error_t		 jerr;
	char			 why[160];
	const char		*code = NULL;

	t->fetch = NULL;	/* retired by proxy.c */
	if (status < 0) {
		if (err != NULL && strstr(err, "too large") != NULL)
			snprintf(why, sizeof(why), "%s answer "
			    "larger than %zu bytes", t->what, t->max);
		else
			snprintf(why, sizeof(why), "%s: %s", t->what,
			    err != NULL ? err : "failed");
		t->cb(t->arg, NULL, NULL, why);
		oidc_treq_free(t);
		return;
	}
	if (len > 0)
		doc = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
	if (doc != NULL && !json_is_object(doc)) {
		json_decref(doc);
		doc = NULL;
	}
	if (status == 200 && doc != NULL) {
		t->cb(t->arg, doc, NULL, NULL);
	} else if (doc != NULL && (code = oidc_error_code(doc)) != NULL) {
		snprintf(why, sizeof(why), "the provider refused: %s", code);
		t->cb(t->arg, NULL, code, why);
	} else if (t->form == NULL && status == 401) {
		/* userinfo: RFC 6750 3.1 says it in WWW-Authenticate. */
		t->cb(t->arg, NULL, "invalid_token", "the provider refused: "
		    "invalid_token");
	} else {
		snprintf(why, sizeof(why), "%s answered HTTP %d%s", t->what,
		    status, status == 200 ? " without a JSON object" : "");
		t->cb(t->arg, NULL, NULL, why);
	}
	json_decref(doc);
	oidc_treq_free(t);
}

static void
oidc_treq_start_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct oidc_treq	*t = arg;

	t->fetch = proxy_fetch_url(t->ctx, t->conf, &t->peer, &t->u, &t->o,
	    t->hdrs, t->max, oidc_treq_answer, t, t->logid);
	if (t->form != NULL)
		proxy_fetch_set_form(t->fetch, t->form, t->formlen);
	/* A failure to start calls back (and frees t) before this returns. */
	proxy_fetch_start(t->fetch);
}

/* A request to endpoint `which` of issuer `issuer`; NULL with *why. */
static struct oidc_treq *
oidc_treq_new(struct pc_ctx *ctx, struct config *conf, const char *issuer,
    enum oidc_ep which, size_t max, oidc_token_cb cb, void *arg,
    const char *logid, const char **why)
{
	struct oidc_treq		*t;
	const struct config_upstream	*peer;
	char				 ep[2048];

	if ((t = calloc(1, sizeof(*t))) == NULL)
		fatal("calloc");
	if (oidc_endpoint(ctx, issuer, which, ep, sizeof(ep), &t->u, &t->o,
	    why) == -1 || (peer = oidc_peer(ctx, issuer)) == NULL) {
		free(t);
		return (NULL);
	}
	t->peer = *peer;
	snprintf(t->peer_name, sizeof(t->peer_name), "%s", peer->name);
	t->peer.name = t->peer_name;
	t->ctx = ctx;
	config_ref(conf);
	t->conf = conf;
	t->cb = cb;
	t->arg = arg;
	t->max = max;
	snprintf(t->logid, sizeof(t->logid), "%s", logid);
	return (t);
}

/*
 * POST form to issuer `issuer`'s token endpoint as client_id (with
 * client_secret: client_secret_basic; NULL: a public client, and the
 * form must carry client_id).  The answer, at most max bytes, goes to
 * cb: a JSON object on 200; else the provider's error code (or NULL) and
 * a reason.  NULL with *why when the endpoint is not usable now.
 */
struct oidc_treq *
oidc_token_request(struct pc_ctx *ctx, struct config *conf,
    const char *issuer, const char *client_id, const char *client_secret,
    const char *form, size_t max, oidc_token_cb cb, void *arg,
    const char *logid, const char **why)
{
	struct oidc_treq	*t;
	struct timeval		 tv = { 0, 0 };
	char			 id[512], sec[1024], *cred = NULL;
	char			*b64 = NULL;
	size_t			 n;

	if ((t = oidc_treq_new(ctx, conf, issuer, OIDC_EP_TOKEN, max, cb, arg,
	    logid, why)) == NULL)
		return (NULL);
	t->what = "token endpoint";
	if (client_secret != NULL) {
		if (url_pct_encode(client_id, id, sizeof(id)) == -1 ||
		    url_pct_encode(client_secret, sec, sizeof(sec)) == -1) {
			OPENSSL_cleanse(sec, sizeof(sec));
			oidc_treq_free(t);
			*why = "client_id or client secret too long";
			return (NULL);
		}
		if (asprintf(&cred, "%s:%s", id, sec) == -1)
			fatal("asprintf");
		OPENSSL_cleanse(sec, sizeof(sec));
		n = strlen(cred);
		if ((b64 = malloc(4 * ((n + 2) / 3) + 1)) == NULL)
			fatal("malloc");
		EVP_EncodeBlock((unsigned char *)b64, (unsigned char *)cred,
		    (int)n);
		OPENSSL_cleanse(cred, n);
		free(cred);
	}
	if (asprintf(&t->hdrs, "User-Agent: portcullis/%s\r\n"
	    "Accept: application/json\r\n%s%s%s", PC_VERSION,
	    b64 != NULL ? "Authorization: Basic " : "",
	    b64 != NULL ? b64 : "", b64 != NULL ? "\r\n" : "") == -1)
		fatal("asprintf");
	if (b64 != NULL) {
		OPENSSL_cleanse(b64, strlen(b64));
		free(b64);
	}
	t->formlen = strlen(form);
	if ((t->form = strdup(form)) == NULL ||
	    (t->ev_start = evtimer_new(ctx->base, oidc_treq_start_cb, t)) ==
	    NULL)
		fatal("oidc_token_request");
	evtimer_add(t->ev_start, &tv);
	return (t);
}

/*
 * GET issuer `issuer`'s userinfo endpoint (OIDC Core 5.3) with a
 * provider access token: whether the provider still knows the person.
 * cb as above; a 401 comes as error "invalid_token".
 */
struct oidc_treq *
oidc_userinfo_request(struct pc_ctx *ctx, struct config *conf,
    const char *issuer, const char *bearer, size_t max, oidc_token_cb cb,
    void *arg, const char *logid, const char **why)
{
	struct oidc_treq	*t;
	struct timeval		 tv = { 0, 0 };

	if (strpbrk(bearer, "\r\n") != NULL) {
		*why = "access token unusable";
		return (NULL);
	}
	if ((t = oidc_treq_new(ctx, conf, issuer, OIDC_EP_USERINFO, max, cb,
	    arg, logid, why)) == NULL)
		return (NULL);
	t->what = "userinfo endpoint";
	if (asprintf(&t->hdrs, "User-Agent: portcullis/%s\r\n"
	    "Accept: application/json\r\nAuthorization: Bearer %s\r\n",
	    PC_VERSION, bearer) == -1)
		fatal("asprintf");
	if ((t->ev_start = evtimer_new(ctx->base, oidc_treq_start_cb, t)) ==
	    NULL)
		fatal("oidc_userinfo_request");
	evtimer_add(t->ev_start, &tv);
	return (t);
}
