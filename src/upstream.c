/*
 * upstream.c: connections to upstream origins (a registry, its token
 * service, a blob storage host it redirects to).  uconn_get() hands out an
 * idle keep-alive connection for the same origin when one is pooled, else
 * starts a new one: asynchronous DNS (evdns), TCP, and TLS with SNI and
 * hostname verification.  A uconn belongs either to the pool or to exactly
 * one user; the pool watches idle ones and drops those the peer closes.
 *
 * An origin a hostile upstream chose (a redirect target, a token realm) is
 * `restricted`: the address the name resolved to is checked right before
 * it is dialled, so neither a name like localhost nor DNS rebinding can
 * reach the gateway's own networks (netaddr.h).  Restricted connections
 * pool apart from the others: one dialled to a private address for a
 * configured upstream is never handed to a redirect.
 */
#include <sys/uio.h>
#include <netinet/in.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "netaddr.h"
#include "portcullis.h"

#define UCONN_IDLE_MAX		256	/* across all origins */
#define UCONN_IDLE_PER_ORIGIN	16
#define UCONN_IDLE_MS		30000

static void	uconn_connect_cb(struct bufferevent *, short, void *);
static void	uconn_timer_cb(evutil_socket_t, short, void *);
static void	uconn_idle_read_cb(struct bufferevent *, void *);
static void	uconn_idle_event_cb(struct bufferevent *, short, void *);

/*
 * An outstanding name lookup.  It outlives its uconn when the uconn is
 * freed first: evdns still calls back once (EVUTIL_EAI_CANCEL).
 */
struct uconn_dns {
	struct uconn				*uc;	/* NULL: gone */
	struct evdns_getaddrinfo_request	*req;
};

/* Fill an origin from a parsed URL; ca_file is borrowed. */
void
origin_from_url(struct origin *o, const struct url *u, char *ca_file)
{
	memset(o, 0, sizeof(*o));
	snprintf(o->host, sizeof(o->host), "%s", u->host);
	o->port = u->port;
	o->tls = u->tls;
	o->ca_file = ca_file;
	o->restricted = 0;
}

/* "host" or "host:port" as the Host header wants it. */
int
origin_hostport(const struct origin *o, char *buf, size_t len)
{
	int	v6 = strchr(o->host, ':') != NULL;

	if ((o->tls && o->port == 443) || (!o->tls && o->port == 80))
		return (snprintf(buf, len, v6 ? "[%s]" : "%s", o->host));
	return (snprintf(buf, len, v6 ? "[%s]:%d" : "%s:%d", o->host,
	    o->port));
}

static void
uconn_key(const struct origin *o, char *buf, size_t len)
{
	snprintf(buf, len, "%s|%s|%d|%s|%d", o->tls ? "https" : "http",
	    o->host, o->port, o->ca_file ? o->ca_file : "", o->restricted);
}

static void
uconn_set_timer(struct uconn *uc, int ms)
{
	struct timeval	tv;

	tv.tv_sec = ms / 1000;
	tv.tv_usec = (ms % 1000) * 1000;
	evtimer_add(uc->timer, &tv);
}

/* Report an error from the timer: never inside uconn_get(). */
static void
uconn_fail_later(struct uconn *uc, int err)
{
	struct timeval	tv = { 0, 0 };

	uc->err = err;
	evtimer_del(uc->timer);
	evtimer_add(uc->timer, &tv);
}

/*
 * The name resolved: check the first address (the one a connect would
 * use) against the origin's restriction, then dial it.  May run inside
 * evdns_getaddrinfo() for numeric hosts, so failures are deferred.
 */
static void
uconn_dns_cb(int result, struct evutil_addrinfo *res, void *arg)
{
	struct uconn_dns	*d = arg;
	struct uconn		*uc = d->uc;
	enum netaddr_class	 cls;
	char			 addr[INET6_ADDRSTRLEN];

	free(d);
	if (uc == NULL) {
		if (res != NULL)
			evutil_freeaddrinfo(res);
		return;
	}
	uc->dns = NULL;
	if (result != 0 || res == NULL) {
		log_info("- upstream connect_failed host=%s port=%d "
		    "error=\"%s\"", uc->origin.host, uc->origin.port,
		    evutil_gai_strerror(result));
		if (res != NULL)
			evutil_freeaddrinfo(res);
		uconn_fail_later(uc, EHOSTUNREACH);
		return;
	}
	cls = netaddr_class_sa(res->ai_addr, res->ai_addrlen);
	if (uc->origin.restricted && cls != NETADDR_PUBLIC) {
		if (evutil_inet_ntop(res->ai_family, res->ai_family ==
		    AF_INET6 ? (void *)&((struct sockaddr_in6 *)(void *)
		    res->ai_addr)->sin6_addr : (void *)&((struct sockaddr_in *)
		    (void *)res->ai_addr)->sin_addr, addr,
		    sizeof(addr)) == NULL)
			snprintf(addr, sizeof(addr), "?");
		/*
		 * The client reads why: the class, not the address, or a
		 * hostile upstream and a client could map internal names.
		 */
		snprintf(uc->why, sizeof(uc->why), "%s resolves to a %s "
		    "address", uc->origin.host, netaddr_class_str(cls));
		log_info("- upstream refused host=%s port=%d address=%s "
		    "class=\"%s\"", uc->origin.host, uc->origin.port, addr,
		    netaddr_class_str(cls));
		evutil_freeaddrinfo(res);
		uconn_fail_later(uc, EACCES);
		return;
	}
	if (bufferevent_socket_connect(uc->bev, res->ai_addr,
	    res->ai_addrlen) != 0) {
		evutil_freeaddrinfo(res);
		uconn_fail_later(uc, ECONNREFUSED);
		return;
	}
	evutil_freeaddrinfo(res);
}

static int
uconn_resolve(struct uconn *uc)
{
	struct evutil_addrinfo			 hints;
	struct uconn_dns			*d;
	struct evdns_getaddrinfo_request	*req;
	char					 port[8];

	if ((d = calloc(1, sizeof(*d))) == NULL)
		return (-1);
	d->uc = uc;
	uc->dns = d;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_protocol = IPPROTO_TCP;
	snprintf(port, sizeof(port), "%d", uc->origin.port);
	/* NULL: answered (or failed) already, and d is freed. */
	req = evdns_getaddrinfo(uc->ctx->dns, uc->origin.host, port, &hints,
	    uconn_dns_cb, d);
	if (req != NULL)
		d->req = req;
	return (0);
}

/*
 * A connection to the origin.  Returns a pooled one with connected set
 * (use it at once), or a new one whose on_connect(uc, error, arg) fires
 * later (error 0: connected; else uc is still the caller's to free), or
 * NULL when it cannot even start.
 */
struct uconn *
uconn_get(struct pc_ctx *ctx, const struct origin *o, int timeout_ms,
    void (*on_connect)(struct uconn *, int, void *), void *arg)
{
	struct uconn	*uc;
	char		 key[sizeof(uc->key)];
	SSL_CTX		*sctx;
	SSL		*ssl;

	uconn_key(o, key, sizeof(key));
	TAILQ_FOREACH(uc, &ctx->idle, entry) {
		if (strcmp(uc->key, key) != 0)
			continue;
		TAILQ_REMOVE(&ctx->idle, uc, entry);
		ctx->nidle--;
		evtimer_del(uc->timer);
		bufferevent_setcb(uc->bev, NULL, NULL, NULL, NULL);
		uc->reused = 1;
		uc->on_connect = on_connect;
		uc->arg = arg;
		return (uc);
	}
	if ((uc = calloc(1, sizeof(*uc))) == NULL)
		return (NULL);
	uc->ctx = ctx;
	uc->origin = *o;
	memcpy(uc->key, key, sizeof(uc->key));
	uc->on_connect = on_connect;
	uc->arg = arg;
	uc->timer = evtimer_new(ctx->base, uconn_timer_cb, uc);
	if (o->tls) {
		if ((sctx = tls_client_for(ctx, o->ca_file)) == NULL ||
		    (ssl = tls_client_ssl(sctx, o->host)) == NULL) {
			event_free(uc->timer);
			free(uc);
			return (NULL);
		}
		uc->bev = bufferevent_openssl_socket_new(ctx->base, -1, ssl,
		    BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE);
		if (uc->bev != NULL)
			bufferevent_openssl_set_allow_dirty_shutdown(uc->bev,
			    1);
	} else
		uc->bev = bufferevent_socket_new(ctx->base, -1,
		    BEV_OPT_CLOSE_ON_FREE);
	if (uc->bev == NULL) {
		event_free(uc->timer);
		free(uc);
		return (NULL);
	}
	bufferevent_setcb(uc->bev, NULL, NULL, uconn_connect_cb, uc);
	/* As for clients (conn.c): fewer, larger writes of upload bodies. */
	bufferevent_set_max_single_write(uc->bev, UCONN_READ_CHUNK);
	uconn_set_timer(uc, timeout_ms);
	if (uconn_resolve(uc) == -1) {
		uconn_free(uc);
		return (NULL);
	}
	return (uc);
}

static void
uconn_connect_cb(struct bufferevent *bev, short events, void *arg)
{
	struct uconn	*uc = arg;
	unsigned long	 tlserr;

	evtimer_del(uc->timer);
	if (events & BEV_EVENT_CONNECTED) {
		uc->connected = 1;
		bufferevent_setcb(uc->bev, NULL, NULL, NULL, NULL);
		uc->on_connect(uc, 0, uc->arg);
		return;
	}
	if (uc->origin.tls && (tlserr = bufferevent_get_openssl_error(bev)) !=
	    0) {
		/* The handshake failed: keep the reason for the client. */
		snprintf(uc->why, sizeof(uc->why), "%s",
		    ERR_reason_error_string(tlserr) != NULL ?
		    ERR_reason_error_string(tlserr) : "handshake failed");
		log_info("- upstream tls_failed host=%s port=%d error=\"%s\"",
		    uc->origin.host, uc->origin.port, uc->why);
		uc->on_connect(uc, EPROTO, uc->arg);
		return;
	}
	log_info("- upstream connect_failed host=%s port=%d error=\"%s\"",
	    uc->origin.host, uc->origin.port,
	    evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
	uc->on_connect(uc, ECONNREFUSED, uc->arg);
}

static void
uconn_timer_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct uconn	*uc = arg;

	if (!uc->connected && uc->err != 0) {
		bufferevent_setcb(uc->bev, NULL, NULL, NULL, NULL);
		uc->on_connect(uc, uc->err, uc->arg);
		return;
	}
	if (!uc->connected) {
		bufferevent_setcb(uc->bev, NULL, NULL, NULL, NULL);
		log_info("- upstream connect_timeout host=%s port=%d",
		    uc->origin.host, uc->origin.port);
		uc->on_connect(uc, ETIMEDOUT, uc->arg);
		return;
	}
	/* Idle too long in the pool. */
	TAILQ_REMOVE(&uc->ctx->idle, uc, entry);
	uc->ctx->nidle--;
	uconn_free(uc);
}

/* Close and free a connection that is not in the pool. */
void
uconn_free(struct uconn *uc)
{
	if (uc == NULL)
		return;
	if (uc->dns != NULL) {
		uc->dns->uc = NULL;
		if (uc->dns->req != NULL)
			evdns_getaddrinfo_cancel(uc->dns->req);
	}
	bufferevent_free(uc->bev);
	event_free(uc->timer);
	free(uc);
}

/*
 * Give a connection back after a complete exchange.  It joins the pool
 * unless the pool for its origin is full or stray bytes are waiting.
 */
void
uconn_release(struct uconn *uc)
{
	struct pc_ctx	*ctx = uc->ctx;
	struct uconn	*u;
	size_t		 same = 0;

	if (evbuffer_get_length(bufferevent_get_input(uc->bev)) != 0 ||
	    ctx->draining) {
		uconn_free(uc);
		return;
	}
	TAILQ_FOREACH(u, &ctx->idle, entry)
		if (strcmp(u->key, uc->key) == 0)
			same++;
	if (same >= UCONN_IDLE_PER_ORIGIN || ctx->nidle >= UCONN_IDLE_MAX) {
		uconn_free(uc);
		return;
	}
	bufferevent_setcb(uc->bev, uconn_idle_read_cb, NULL,
	    uconn_idle_event_cb, uc);
	bufferevent_set_timeouts(uc->bev, NULL, NULL);
	bufferevent_setwatermark(uc->bev, EV_READ, 0, 0);
	bufferevent_enable(uc->bev, EV_READ);
	uc->idle_since = now_ms();
	uconn_set_timer(uc, UCONN_IDLE_MS);
	TAILQ_INSERT_HEAD(&ctx->idle, uc, entry);
	ctx->nidle++;
}

static void
uconn_idle_drop(struct uconn *uc)
{
	TAILQ_REMOVE(&uc->ctx->idle, uc, entry);
	uc->ctx->nidle--;
	uconn_free(uc);
}

static void
uconn_idle_read_cb(struct bufferevent *bev, void *arg)
{
	/* An idle upstream must not talk: drop it. */
	uconn_idle_drop(arg);
}

static void
uconn_idle_event_cb(struct bufferevent *bev, short events, void *arg)
{
	uconn_idle_drop(arg);
}

/* Close every pooled connection. */
void
uconn_pool_flush(struct pc_ctx *ctx)
{
	struct uconn	*uc;

	while ((uc = TAILQ_FIRST(&ctx->idle)) != NULL)
		uconn_idle_drop(uc);
}

/*
 * libevent 2.1 reads a socket at most 4096 bytes at a time
 * (EVBUFFER_MAX_READ), which caps a relayed body at a few hundred MB/s on
 * loopback.  After its read, take what else the kernel holds, until the
 * input buffer has `max` bytes.  EOF and errors are left for libevent to
 * find on its next read.  Plain sockets only: TLS reads go through
 * OpenSSL in whole records anyway.
 */
void
uconn_read_more(struct uconn *uc, size_t max)
{
	if (!uc->origin.tls)
		bev_read_more(uc->bev, max);
}

/* The same for any plain socket bufferevent (client bodies: conn.c). */
void
bev_read_more(struct bufferevent *bev, size_t max)
{
	struct evbuffer		*in = bufferevent_get_input(bev);
	struct evbuffer_iovec	 v[2];
	evutil_socket_t		 fd;
	size_t			 have, want, first;
	ssize_t			 n;
	int			 nv;

	if ((fd = bufferevent_getfd(bev)) == -1)
		return;
	for (;;) {
		if ((have = evbuffer_get_length(in)) >= max)
			return;
		want = max - have;
		if (want > UCONN_READ_CHUNK)
			want = UCONN_READ_CHUNK;
		/* A bufferevent keeps its input's end frozen between reads. */
		evbuffer_unfreeze(in, 0);
		nv = evbuffer_reserve_space(in, want, v, 2);
		if (nv <= 0) {
			evbuffer_freeze(in, 0);
			return;
		}
		if (v[0].iov_len > want)
			v[0].iov_len = want;
		if (nv == 2 && v[0].iov_len + v[1].iov_len > want)
			v[1].iov_len = want - v[0].iov_len;
		/* evbuffer_iovec is laid out as struct iovec on Unix. */
		n = readv(fd, (struct iovec *)v, nv);
		if (n <= 0) {
			evbuffer_commit_space(in, v, 0);
			evbuffer_freeze(in, 0);
			return;
		}
		first = v[0].iov_len;
		if ((size_t)n <= first) {
			v[0].iov_len = n;
			nv = 1;
		} else
			v[1].iov_len = n - first;
		evbuffer_commit_space(in, v, nv);
		evbuffer_freeze(in, 0);
		if ((size_t)n < want)
			return;		/* the socket is drained */
	}
}
