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
 * fetch is the small HTTP client under it: one request, a bounded body
 * collected in memory (token responses, probes), then one callback.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "challenge.h"
#include "portcullis.h"

#define UAUTH_TOKEN_MAX		65536	/* token response body bytes */
#define UAUTH_CACHE_MAX		256	/* tokens per upstream */
#define UAUTH_DEFAULT_TTL_S	60	/* spec: when expires_in is absent */

struct utoken {
	TAILQ_ENTRY(utoken)	 entry;
	char			*scope;
	char			*token;
	uint64_t		 expires_ms;
};

struct fetch {
	struct pc_ctx		*ctx;
	struct uconn		*uc;
	char			*text;		/* the request */
	struct hframe		 rf;
	struct evbuffer		*body;
	size_t			 max_body;
	int			 timeout_ms;
	fetch_cb		 cb;
	void			*arg;
	int			 own_arg;	/* free arg on cancel */
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

/* --- fetch: one small request, the whole bounded answer --- */

static void	fetch_read_cb(struct bufferevent *, void *);
static void	fetch_event_cb(struct bufferevent *, short, void *);

static void
fetch_destroy(struct fetch *f)
{
	if (f->uc != NULL)
		uconn_free(f->uc);
	hframe_free(&f->rf);
	evbuffer_free(f->body);
	free(f->text);
	free(f);
}

/* Stop a fetch; its callback will not run. */
void
fetch_cancel(struct fetch *f)
{
	if (f == NULL)
		return;
	if (f->own_arg)
		free(f->arg);
	fetch_destroy(f);
}

/* Deliver the result and free the fetch; the callback runs last. */
static void
fetch_finish(struct fetch *f, int status, const char *err)
{
	size_t	 len = evbuffer_get_length(f->body);
	char	*body;

	if (f->uc != NULL) {
		if (status > 0 && f->rf.msg.keep_alive)
			uconn_release(f->uc);
		else
			uconn_free(f->uc);
		f->uc = NULL;
	}
	evbuffer_add(f->body, "", 1);
	body = (char *)evbuffer_pullup(f->body, -1);
	f->cb(f->arg, status, &f->rf.msg.hdrs, body, len, err);
	fetch_destroy(f);
}

static int
fetch_body(void *arg, const char *data, size_t len)
{
	struct fetch	*f = arg;

	if (evbuffer_get_length(f->body) + len > f->max_body)
		return (-1);
	evbuffer_add(f->body, data, len);
	return (0);
}

static void
fetch_read_cb(struct bufferevent *bev, void *arg)
{
	struct fetch		*f = arg;
	struct evbuffer		*in = bufferevent_get_input(bev);
	struct evbuffer_iovec	 v;
	size_t			 n;

	while (evbuffer_get_length(in) > 0) {
		if (f->rf.phase == HF_BODY_LENGTH) {
			n = evbuffer_get_length(in);
			if (n > f->rf.remaining)
				n = f->rf.remaining;
			if (evbuffer_get_length(f->body) + n > f->max_body) {
				fetch_finish(f, -1, "response too large");
				return;
			}
			evbuffer_remove_buffer(in, f->body, n);
			hframe_body_consumed(&f->rf, n);
		} else {
			if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
				break;
			n = hframe_feed(&f->rf, v.iov_base, v.iov_len);
			evbuffer_drain(in, n);
		}
		if (f->rf.phase == HF_ERROR) {
			fetch_finish(f, -1, hframe_err_str(f->rf.err));
			return;
		}
		if (f->rf.phase == HF_BODY_LENGTH && f->rf.remaining >
		    f->max_body) {
			fetch_finish(f, -1, "response too large");
			return;
		}
		if (f->rf.phase == HF_DONE) {
			if (f->rf.msg.status >= 100 && f->rf.msg.status < 200) {
				hframe_next(&f->rf);
				continue;
			}
			fetch_finish(f, f->rf.msg.status, NULL);
			return;
		}
	}
}

static void
fetch_event_cb(struct bufferevent *bev, short events, void *arg)
{
	struct fetch	*f = arg;

	if ((events & BEV_EVENT_EOF) && hframe_eof(&f->rf) == 0) {
		fetch_finish(f, f->rf.msg.status, NULL);
		return;
	}
	fetch_finish(f, -1, (events & BEV_EVENT_TIMEOUT) ? "timed out" :
	    "connection failed");
}

static void
fetch_connected(struct uconn *uc, int error, void *arg)
{
	struct fetch	*f = arg;
	struct timeval	 tv;

	if (error != 0) {
		fetch_finish(f, -1, error == ETIMEDOUT ? "connect timed out" :
		    "cannot connect");
		return;
	}
	tv.tv_sec = f->timeout_ms / 1000;
	tv.tv_usec = (f->timeout_ms % 1000) * 1000;
	bufferevent_setcb(uc->bev, fetch_read_cb, NULL, fetch_event_cb, f);
	bufferevent_set_timeouts(uc->bev, &tv, &tv);
	bufferevent_setwatermark(uc->bev, EV_READ, 0, 0);
	bufferevent_write(uc->bev, f->text, strlen(f->text));
	bufferevent_enable(uc->bev, EV_READ | EV_WRITE);
}

/*
 * Start a request to u (GET or HEAD, no body) with extra header lines
 * (each ending in CRLF; may hold credentials: never logged).  The
 * callback gets the status (-1 on failure, with err), the headers and the
 * body (NUL-terminated, at most max_body bytes); afterwards the fetch is
 * gone.  Returns NULL when it cannot start.
 */
struct fetch *
fetch_start(struct pc_ctx *ctx, const struct url *u, char *ca_file,
    const char *method, const char *extra, size_t max_body, int timeout_ms,
    fetch_cb cb, void *arg)
{
	struct fetch		*f;
	struct origin		 o;
	struct hframe_limits	 lim = { 65536, 200, 8192 };
	char			 hostport[300];

	if ((f = calloc(1, sizeof(*f))) == NULL)
		return (NULL);
	f->ctx = ctx;
	f->cb = cb;
	f->arg = arg;
	f->max_body = max_body;
	f->timeout_ms = timeout_ms;
	if ((f->body = evbuffer_new()) == NULL) {
		free(f);
		return (NULL);
	}
	hframe_init(&f->rf, HFRAME_RESPONSE, &lim, fetch_body, f);
	f->rf.skip_body = strcmp(method, "HEAD") == 0;
	origin_from_url(&o, u, ca_file);
	origin_hostport(&o, hostport, sizeof(hostport));
	if (asprintf(&f->text, "%s %s HTTP/1.1\r\nHost: %s\r\n"
	    "User-Agent: portcullis/%s\r\nAccept: application/json\r\n%s\r\n",
	    method, u->path[0] ? u->path : "/", hostport, PC_VERSION,
	    extra ? extra : "") == -1) {
		f->text = NULL;
		fetch_destroy(f);
		return (NULL);
	}
	if ((f->uc = uconn_get(ctx, &o, ctx->conf->upstream_connect_timeout_ms,
	    fetch_connected, f)) == NULL) {
		fetch_destroy(f);
		return (NULL);
	}
	if (f->uc->connected)
		fetch_connected(f->uc, 0, f);
	return (f);
}

/* --- tokens --- */

struct tokreq {
	struct upstream_state	*us;
	char			 scope[1024];
	void			(*cb)(void *, const char *, const char *);
	void			*arg;
};

static void
uauth_on_token(void *arg, int status, struct headers *h, const char *body,
    size_t len, const char *err)
{
	struct tokreq	*tr = arg;
	struct utoken	*t;
	json_t		*root, *tok, *exp;
	json_error_t	 jerr;
	char		 msg[128];
	const char	*s;
	json_int_t	 ttl = UAUTH_DEFAULT_TTL_S;

	if (status != 200) {
		if (status < 0)
			snprintf(msg, sizeof(msg), "token service: %s", err);
		else
			snprintf(msg, sizeof(msg), "token service answered %d",
			    status);
		log_info("- upstream %s token_failed scope=\"%s\" %s",
		    tr->us->name, tr->scope, msg);
		tr->cb(tr->arg, NULL, msg);
		free(tr);
		return;
	}
	root = json_loadb(body, len, 0, &jerr);
	tok = root ? json_object_get(root, "token") : NULL;
	if (!json_is_string(tok))
		tok = root ? json_object_get(root, "access_token") : NULL;
	if (!json_is_string(tok) || *(s = json_string_value(tok)) == '\0' ||
	    strlen(s) > 16384 || strpbrk(s, "\r\n") != NULL) {
		json_decref(root);
		tr->cb(tr->arg, NULL, "token service sent no usable token");
		free(tr);
		return;
	}
	exp = json_object_get(root, "expires_in");
	if (json_is_integer(exp) && json_integer_value(exp) > 0)
		ttl = json_integer_value(exp);
	if (ttl > 86400)
		ttl = 86400;
	/* Renew a little early: a token must not expire in flight. */
	ttl = ttl * 9 / 10;
	if ((t = calloc(1, sizeof(*t))) == NULL ||
	    (t->scope = strdup(tr->scope)) == NULL ||
	    (t->token = strdup(s)) == NULL)
		fatal("calloc");
	t->expires_ms = now_ms() + (uint64_t)ttl * 1000;
	if (tr->us->ntokens >= UAUTH_CACHE_MAX) {
		struct utoken *old = TAILQ_LAST(&tr->us->tokens, utokenq);

		TAILQ_REMOVE(&tr->us->tokens, old, entry);
		tr->us->ntokens--;
		utoken_free(old);
	}
	TAILQ_INSERT_HEAD(&tr->us->tokens, t, entry);
	tr->us->ntokens++;
	json_decref(root);
	log_debug("- upstream %s token_fetched scope=\"%s\" ttl=%lld",
	    tr->us->name, tr->scope, (long long)ttl);
	tr->cb(tr->arg, t->token, NULL);
	free(tr);
}

/*
 * Fetch a token for scope (space-separated scopes allowed) from the
 * upstream's realm.  cb(arg, token, NULL) or cb(arg, NULL, error) runs
 * later; the returned fetch can be cancelled.  NULL: could not start.
 */
struct fetch *
uauth_query_token(struct pc_ctx *ctx, const struct config_upstream *up,
    struct upstream_state *us, const char *scope,
    void (*cb)(void *, const char *, const char *), void *arg)
{
	struct challenge	 ch;
	struct tokreq		*tr;
	struct fetch		*f;
	struct url		 u;
	const char		*scopes[16];
	char			 copy[1024], *p, *save = NULL;
	char			 urlbuf[4096], extra[1500], auth[1400];
	size_t			 n = 0;

	memset(&ch, 0, sizeof(ch));
	snprintf(ch.scheme, sizeof(ch.scheme), "Bearer");
	snprintf(ch.realm, sizeof(ch.realm), "%s", us->realm);
	snprintf(ch.service, sizeof(ch.service), "%s", us->service);
	snprintf(copy, sizeof(copy), "%s", scope);
	for (p = strtok_r(copy, " ", &save); p != NULL && n < 16;
	    p = strtok_r(NULL, " ", &save))
		scopes[n++] = p;
	if (challenge_token_url(&ch, scopes, n, urlbuf, sizeof(urlbuf)) < 0 ||
	    url_parse(urlbuf, &u) == -1) {
		log_info("- upstream %s bad_realm", us->name);
		return (NULL);
	}
	extra[0] = '\0';
	if (uauth_basic(up, auth, sizeof(auth)) == 0) {
		snprintf(extra, sizeof(extra), "Authorization: %s\r\n", auth);
		explicit_bzero(auth, sizeof(auth));
	}
	if ((tr = calloc(1, sizeof(*tr))) == NULL)
		return (NULL);
	tr->us = us;
	snprintf(tr->scope, sizeof(tr->scope), "%s", scope);
	tr->cb = cb;
	tr->arg = arg;
	/* The realm's host may differ from the registry's: system CAs then. */
	f = fetch_start(ctx, &u, strcmp(u.host, up->u.host) == 0 ?
	    up->ca_file : NULL, "GET", extra, UAUTH_TOKEN_MAX,
	    ctx->conf->upstream_response_timeout_ms, uauth_on_token, tr);
	explicit_bzero(extra, sizeof(extra));
	if (f == NULL) {
		free(tr);
		return (NULL);
	}
	f->own_arg = 1;
	return (f);
}
