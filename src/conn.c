/*
 * conn.c: one client connection.  Owns the bufferevent (plain or TLS), the
 * request framer, keep-alive and the header and idle timers.  Requests on a
 * connection are handled one at a time, in order; pipelined bytes wait in
 * the input buffer, which the read watermark bounds.  A connection is never
 * freed inside its own callbacks: conn_close() unlinks it and the reaper
 * frees it on the next loop turn.  The reaper is the daemon's one way to
 * free what a callback retires: requests, proxies and cache readers wait
 * on the same list (conn_reap_later).
 *
 * Backpressure: request body bytes are moved to the request's sink only
 * while the sink has room; otherwise they stay in the input buffer, and at
 * the read high watermark libevent stops reading the socket.
 *
 * Lingering close: a connection closed after an error may still have
 * request bytes on the way (a body refused before it was read).  Closing
 * the socket with unread bytes makes the kernel send an RST, which can
 * destroy the error response before the client reads it.  So once the
 * response is flushed the write side is shut down (the client sees EOF)
 * and whatever the client still sends is read and discarded, until it
 * closes, for at most timeouts.linger and limits.linger_bytes.
 */
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/bufferevent_ssl.h>
#include <openssl/ssl.h>

#include "portcullis.h"

static void	conn_read_cb(struct bufferevent *, void *);
static void	conn_write_cb(struct bufferevent *, void *);
static void	conn_event_cb(struct bufferevent *, short, void *);
static void	conn_timer_cb(evutil_socket_t, short, void *);
static void	conn_process_cb(evutil_socket_t, short, void *);
static int	conn_body_data(void *, const char *, size_t);
static void	conn_process(struct conn *);
static void	conn_unstage(struct conn *);
static void	conn_linger(struct conn *);
static int	conn_send_error(struct conn *, int, enum pc_err,
		    const char *, const char *);

static void
conn_set_timer(struct conn *c, int ms)
{
	struct timeval	tv;

	if (ms <= 0) {
		evtimer_del(c->timer);
		return;
	}
	tv.tv_sec = ms / 1000;
	tv.tv_usec = (ms % 1000) * 1000;
	evtimer_add(c->timer, &tv);
}

/*
 * Body timeout: no progress reading the request body, or writing the
 * response, for timeouts.body.  Reading is only timed while a body is
 * expected: a client waiting for a slow upstream sends nothing.
 */
static void
conn_timeouts(struct conn *c, int reading)
{
	struct timeval	tv;

	tv.tv_sec = c->conf->body_timeout_ms / 1000;
	tv.tv_usec = (c->conf->body_timeout_ms % 1000) * 1000;
	bufferevent_set_timeouts(c->bev, reading ? &tv : NULL, &tv);
}

/*
 * Open connections from one address, closing and lingering ones included:
 * each holds a slot of limits.max_connections until it is freed, so one
 * address that left its connections lingering could otherwise hold every
 * slot.  A walk of the list: it is bounded by limits.max_connections and
 * runs once per accepted connection.
 */
static size_t
conn_count_peer(struct pc_ctx *ctx, const char *peer)
{
	struct conn	*c;
	size_t		 n = 0;

	TAILQ_FOREACH(c, &ctx->conns, entry)
		if (strcmp(c->peer, peer) == 0)
			n++;
	return (n);
}

static void	conn_accept_one(struct pc_ctx *, evutil_socket_t,
		    struct sockaddr *, int, int);

/* Take a new client socket. */
void
conn_accept(struct pc_ctx *ctx, evutil_socket_t fd, struct sockaddr *sa,
    int salen)
{
	conn_accept_one(ctx, fd, sa, salen, 0);
}

/* A socket of the admin listener: plain HTTP, operations paths only. */
void
conn_accept_admin(struct pc_ctx *ctx, evutil_socket_t fd,
    struct sockaddr *sa, int salen)
{
	conn_accept_one(ctx, fd, sa, salen, 1);
}

static void
conn_accept_one(struct pc_ctx *ctx, evutil_socket_t fd, struct sockaddr *sa,
    int salen, int admin)
{
	struct conn		*c;
	struct hframe_limits	 lim;
	char			 host[INET6_ADDRSTRLEN];
	int			 one = 1, port = 0;
	size_t			 npeer;
	SSL			*ssl;

	if ((c = calloc(1, sizeof(*c))) == NULL) {
		close(fd);
		return;
	}
	c->ctx = ctx;
	c->conf = ctx->conf;
	config_ref(c->conf);
	c->id = ++ctx->next_conn_id;
	c->admin = admin;
	host[0] = '\0';
	if (sa->sa_family == AF_INET) {
		struct sockaddr_in *s4 = (struct sockaddr_in *)sa;

		inet_ntop(AF_INET, &s4->sin_addr, host, sizeof(host));
		port = ntohs(s4->sin_port);
		c->peer_af = AF_INET;
		memcpy(c->peer_addr, &s4->sin_addr, 4);
	} else if (sa->sa_family == AF_INET6) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)sa;

		inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof(host));
		port = ntohs(s6->sin6_port);
		c->peer_af = AF_INET6;
		memcpy(c->peer_addr, &s6->sin6_addr, 16);
		if (strncmp(host, "::ffff:", 7) == 0) {
			/* An IPv4 client on a dual-stack socket is IPv4. */
			memmove(host, host + 7, strlen(host + 7) + 1);
			c->peer_af = AF_INET;
			memmove(c->peer_addr, c->peer_addr + 12, 4);
			memset(c->peer_addr + 4, 0, 12);
		}
	}
	snprintf(c->peer, sizeof(c->peer), "%s", host);
	(void)port;
	evutil_make_socket_nonblocking(fd);
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

	if (ctx->server_tls != NULL && !admin) {
		if ((ssl = tls_server_ssl(ctx->server_tls)) == NULL) {
			close(fd);
			config_unref(c->conf);
			free(c);
			return;
		}
		c->tls = 1;
		c->bev = bufferevent_openssl_socket_new(ctx->base, fd, ssl,
		    BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
	} else {
		c->bev = bufferevent_socket_new(ctx->base, fd,
		    BEV_OPT_CLOSE_ON_FREE);
		c->stage = evbuffer_new();
	}
	if (c->bev == NULL || (!c->tls && c->stage == NULL)) {
		if (c->bev != NULL)
			bufferevent_free(c->bev);
		else
			close(fd);
		if (c->stage != NULL)
			evbuffer_free(c->stage);
		config_unref(c->conf);
		free(c);
		return;
	}
	lim.header_bytes = c->conf->header_bytes;
	lim.header_count = c->conf->header_count;
	lim.uri_bytes = c->conf->uri_bytes;
	hframe_init(&c->hf, HFRAME_REQUEST, &lim, conn_body_data, c);
	c->timer = evtimer_new(ctx->base, conn_timer_cb, c);
	c->ev_process = event_new(ctx->base, -1, 0,
	    conn_process_cb, c);
	bufferevent_setcb(c->bev, conn_read_cb, conn_write_cb, conn_event_cb,
	    c);
	bufferevent_setwatermark(c->bev, EV_READ, 0, c->conf->high_watermark);
	bufferevent_setwatermark(c->bev, EV_WRITE, c->conf->high_watermark / 2,
	    0);
	/* libevent writes 16 KiB per call by default: one writev per
	 * watermark's worth is far fewer system calls for large bodies. */
	bufferevent_set_max_single_write(c->bev, c->conf->high_watermark);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	conn_set_timer(c, c->conf->header_timeout_ms);
	npeer = conn_count_peer(ctx, c->peer);
	TAILQ_INSERT_TAIL(&ctx->conns, c, entry);
	ctx->nconns++;
	log_debug("%llu.0 conn open peer=%s tls=%d",
	    (unsigned long long)c->id, c->peer, c->tls);
	if (npeer >= 2 * c->conf->max_connections_per_ip) {
		/*
		 * As many refusals still pending as connections allowed
		 * (TLS ones wait for a handshake): no answer, or they would
		 * fill limits.max_connections between them.
		 */
		log_info("%llu.0 conn refuse peer=%s reason="
		    "max_connections_per_ip n=%zu answer=none",
		    (unsigned long long)c->id, c->peer, npeer);
		conn_close(c, "max_connections_per_ip");
	} else if (npeer >= c->conf->max_connections_per_ip) {
		/*
		 * As nginx's limit_conn: 503, then close.  Without lingering,
		 * and within timeouts.header (a TLS handshake comes first):
		 * a refused connection must not hold a slot of
		 * limits.max_connections for long, or refusals alone could
		 * fill them.
		 */
		char	rid[17];

		/* Not a request (none was read): no record, but an id. */
		req_make_id(ctx, rid);
		log_info("%llu.0 conn refuse peer=%s reason="
		    "max_connections_per_ip n=%zu id=%s",
		    (unsigned long long)c->id, c->peer, npeer, rid);
		conn_send_error(c, 503, ERR_UNAVAILABLE,
		    "too many connections from this address", rid);
		conn_close_after_write(c, "max_connections_per_ip");
		if (!c->dead)
			conn_set_timer(c, c->conf->header_timeout_ms);
	}
}

/* The reaper's half of conn_close(). */
static void
conn_destroy(void *arg)
{
	struct conn	*c = arg;
	struct pc_ctx	*ctx = c->ctx;

	if (c->staged)
		TAILQ_REMOVE(&ctx->staged, c, stage_entry);
	bufferevent_free(c->bev);
	if (c->stage != NULL)
		evbuffer_free(c->stage);
	event_free(c->timer);
	event_free(c->ev_process);
	hframe_free(&c->hf);
	free(c->tls_subject);
	config_unref(c->conf);
	free(c);
	ctx->nconns--;
}

/* End the connection now; freed on the next loop turn. */
void
conn_close(struct conn *c, const char *reason)
{
	struct pc_ctx	*ctx = c->ctx;

	if (c->dead)
		return;
	c->dead = 1;
	c->close_reason = reason;
	if (c->req != NULL) {
		req_client_gone(c->req);
		req_free(c->req);
		c->req = NULL;
	}
	bufferevent_disable(c->bev, EV_READ | EV_WRITE);
	bufferevent_setcb(c->bev, NULL, NULL, NULL, NULL);
	evtimer_del(c->timer);
	event_del(c->ev_process);
	TAILQ_REMOVE(&ctx->conns, c, entry);
	conn_reap_later(ctx, &c->reap, conn_destroy, c);
	log_debug("%llu.%u conn close reason=%s", (unsigned long long)c->id,
	    c->nreqs, reason);
}

/*
 * Queue a retired object: free(arg) runs on the reaper's next turn.  The
 * caller has made it inert already (nothing may call into it any more),
 * and queues it once.
 */
void
conn_reap_later(struct pc_ctx *ctx, struct reap_node *n, void (*fn)(void *),
    void *arg)
{
	n->free = fn;
	n->arg = arg;
	TAILQ_INSERT_TAIL(&ctx->dead, n, entry);
	if (ctx->ev_reap != NULL)
		event_active(ctx->ev_reap, 0, 0);
}

/*
 * Free everything retired since the last turn, in the order it was
 * retired (a request before its connection), until the list is empty:
 * a free function may retire more.  Also run at shutdown.
 */
void
conn_reap(struct pc_ctx *ctx)
{
	struct reap_node	*n;

	while ((n = TAILQ_FIRST(&ctx->dead)) != NULL) {
		TAILQ_REMOVE(&ctx->dead, n, entry);
		n->free(n->arg);
	}
	server_conn_gone(ctx);
}

/*
 * Stop reading requests; close once the output is flushed, lingering
 * first when the client may still be sending.  Bytes that arrive
 * meanwhile are discarded (and count against limits.linger_bytes), so a
 * client blocked sending a refused body can go on and read the answer.
 */
void
conn_close_after_write(struct conn *c, const char *reason)
{
	if (c->dead || c->closing)
		return;
	conn_unstage(c);	/* the output's length below counts it */
	c->closing = 1;
	c->close_reason = reason;
	bufferevent_set_timeouts(c->bev, NULL, NULL);
	if (c->linger)
		conn_read_cb(c->bev, c);	/* discard what is there */
	else
		bufferevent_disable(c->bev, EV_READ);
	if (c->dead)
		return;
	if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0) {
		conn_linger(c);
		return;
	}
	/* The write callback fires when the output is empty. */
	bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
	conn_set_timer(c, c->conf->body_timeout_ms);
}

/*
 * The response is out.  Without unread bytes to expect, close.  Else
 * shut the write side down (RFC 9112 9.6: the client learns the response
 * is complete) and read and discard until the client closes, for at most
 * timeouts.linger and limits.linger_bytes.
 */
static void
conn_linger(struct conn *c)
{
	evutil_socket_t	fd;

	if (c->lingering)
		return;
	if (!c->linger || c->eof || c->conf->linger_timeout_ms == 0 ||
	    c->ctx->draining || (fd = bufferevent_getfd(c->bev)) == -1 ||
	    shutdown(fd, SHUT_WR) == -1) {
		conn_close(c, c->close_reason);
		return;
	}
	c->lingering = 1;
	bufferevent_disable(c->bev, EV_WRITE);
	bufferevent_enable(c->bev, EV_READ);
	conn_set_timer(c, c->conf->linger_timeout_ms);
	log_debug("%llu.%u conn linger reason=%s", (unsigned long long)c->id,
	    c->nreqs, c->close_reason);
}

/*
 * The client's output buffer, for responses: while conn_process runs on
 * a plain connection whose output was empty, the stage (conn_staged).
 */
struct evbuffer *
conn_output(struct conn *c)
{
	return (c->staging ? c->stage : bufferevent_get_output(c->bev));
}

/* Whether the client's output is above the high watermark. */
int
conn_output_full(struct conn *c)
{
	size_t	n = evbuffer_get_length(bufferevent_get_output(c->bev));

	if (c->staging)
		n += evbuffer_get_length(c->stage);
	return (n >= c->conf->high_watermark);
}

/* What the stage holds goes to the bufferevent, which writes it. */
static void
conn_unstage(struct conn *c)
{
	if (c->staged) {
		TAILQ_REMOVE(&c->ctx->staged, c, stage_entry);
		c->staged = 0;
	}
	if (!c->staging)
		return;
	c->staging = 0;
	if (c->dead)
		evbuffer_drain(c->stage, evbuffer_get_length(c->stage));
	else if (evbuffer_get_length(c->stage) > 0)
		evbuffer_add_buffer(bufferevent_get_output(c->bev), c->stage);
}

/*
 * The bufferevent's own output, what is staged moved into it first (in
 * order): a file segment goes out with sendfile(2) only from a buffer
 * that drains to the socket; added to the stage, libevent maps or reads
 * the file into memory instead.
 */
struct evbuffer *
conn_output_fd(struct conn *c)
{
	conn_unstage(c);
	return (bufferevent_get_output(c->bev));
}

/* Reading back on, if conn_read_cb took it off. */
static void
conn_read_on(struct conn *c)
{
	if (!c->read_off)
		return;
	c->read_off = 0;
	if (!c->eof && !c->out_paused && !c->closing)
		bufferevent_enable(c->bev, EV_READ);
}

/* Body bytes may be delivered again: re-run the read loop next turn. */
void
conn_resume_read(struct conn *c)
{
	if (c->dead)
		return;
	c->read_paused = 0;
	conn_read_on(c);
	event_active(c->ev_process, 0, 0);
}

/* Stop moving body bytes until conn_resume_read(). */
void
conn_pause_read(struct conn *c)
{
	c->read_paused = 1;
}

/*
 * The current request is finished (its response is queued).  Keep the
 * connection for the next request or close it.
 */
void
conn_req_done(struct conn *c)
{
	struct req	*req = c->req;
	int		 keep;

	keep = req->keep_alive && c->hf.phase == HF_DONE && !c->closing &&
	    !c->ctx->draining && !c->eof;
	c->req = NULL;
	req_free(req);
	bufferevent_set_timeouts(c->bev, NULL, NULL);
	if (!keep) {
		/* A body left unread, or pipelined requests: linger. */
		if (c->hf.phase != HF_DONE ||
		    evbuffer_get_length(bufferevent_get_input(c->bev)) > 0)
			c->linger = 1;
		conn_close_after_write(c, c->ctx->draining ? "draining" :
		    "not keep-alive");
		return;
	}
	hframe_next(&c->hf);
	c->head_started = 0;
	c->read_paused = 0;
	conn_read_on(c);
	conn_set_timer(c, c->conf->idle_timeout_ms);
	event_active(c->ev_process, 0, 0);
}

/*
 * Queue an error response without a request object, with the request id
 * `rid` the log line and the audit record carry too: a JSON body for an
 * error from the table, none for ERR_NONE (408).  Returns the body's
 * length, for bytes_out.
 */
static int
conn_send_error(struct conn *c, int status, enum pc_err pe, const char *why,
    const char *rid)
{
	struct evbuffer	*out = conn_output(c);
	char		 body[512];
	int		 len = 0;

	if (pe != ERR_NONE &&
	    (len = errs_body(pe, why, body, sizeof(body))) < 0)
		len = 0;
	evbuffer_add_printf(out, "HTTP/1.1 %d %s\r\n", status,
	    errs_reason(status));
	if (len > 0)
		evbuffer_add_printf(out, "Content-Type: application/json\r\n"
		    PC_API_VERSION_HDR ": " PC_API_VERSION "\r\n");
	evbuffer_add_printf(out, "X-Request-Id: %s\r\n"
	    "Content-Length: %d\r\nConnection: close\r\n\r\n", rid, len);
	evbuffer_add(out, body, len);
	return (len);
}

/* Answer a framing error without a request object and close. */
static void
conn_fail_framing(struct conn *c)
{
	enum hframe_err	 e = c->hf.err;
	int		 status = hframe_err_status(e);
	enum pc_err	 pe;
	const char	*why = hframe_err_str(e);
	char		 rid[17];
	uint64_t	 out, ms;

	/* Clients with TLS verification off try https first: say so. */
	if (c->saw_tls_hello)
		why = "TLS handshake on a plain HTTP listener";
	switch (status) {
	case 414:
		pe = ERR_URI_TOO_LONG;
		break;
	case 431:
		pe = ERR_HEADERS_TOO_LARGE;
		break;
	case 413:
		pe = ERR_TOO_LARGE;
		break;
	case 500:
		pe = ERR_INTERNAL;
		break;
	default:
		pe = ERR_BAD_REQUEST;
		break;
	}
	req_make_id(c->ctx, rid);
	out = (uint64_t)conn_send_error(c, status, pe, why, rid);
	ms = c->head_started ? now_ms() - c->head_start_ms : 0;
	/* The same id, bytes and duration as its record. */
	log_info("%llu.%u req framing_error peer=%s status=%d out=%llu "
	    "ms=%llu id=%s error=\"%s\"", (unsigned long long)c->id,
	    c->nreqs + 1, c->peer, status, (unsigned long long)out,
	    (unsigned long long)ms, rid, why);
	audit_framing(c, status, pe, rid, out, ms);
	/*
	 * A complete head refused (smuggling shapes, a bad target): its
	 * body may follow, so linger.  An endless or oversized head is not
	 * read any further.
	 */
	c->linger = e != HF_E_HEADER_BYTES && e != HF_E_HEADER_COUNT &&
	    e != HF_E_URI;
	conn_close_after_write(c, "framing error");
}

static int
conn_body_data(void *arg, const char *data, size_t len)
{
	struct conn	*c = arg;
	struct req	*req = c->req;

	if (req == NULL || req->body_sink_data == NULL)
		return (0);	/* discarded */
	req->bytes_in += len;
	if (req->body_sink_data(req, data, len) == 1)
		c->read_paused = 1;
	return (0);
}

/* Feed the framer from the input buffer; returns bytes consumed. */
static size_t
conn_feed(struct conn *c, struct evbuffer *in)
{
	struct evbuffer_iovec	 v;
	size_t			 n, total = 0;
	enum hframe_phase	 start = c->hf.phase;

	while (evbuffer_peek(in, -1, NULL, &v, 1) >= 1 && v.iov_len > 0) {
		/* 0x16: a TLS handshake record, not a request line. */
		if (c->nreqs == 0 && c->hf.head_bytes == 0 && !c->tls &&
		    *(unsigned char *)v.iov_base == 0x16)
			c->saw_tls_hello = 1;
		n = hframe_feed(&c->hf, v.iov_base, v.iov_len);
		evbuffer_drain(in, n);
		total += n;
		if (n < v.iov_len || c->hf.phase != start ||
		    c->read_paused)
			break;
	}
	return (total);
}

static void
conn_process_1(struct conn *c)
{
	struct evbuffer	*in;
	struct req	*req;
	size_t		 n, avail;

	if (c->dead)
		return;
	in = bufferevent_get_input(c->bev);
	while (!c->dead && !c->closing) {
		avail = evbuffer_get_length(in);
		if ((req = c->req) == NULL) {
			if (avail == 0)
				break;
			/*
			 * A client that pipelines and does not read: its
			 * next request waits until the answers drain below
			 * the write low watermark (conn_write_cb), or local
			 * answers would queue without bound.  Reading stops
			 * meanwhile: libevent runs the read callback again
			 * on every loop turn while the input is at its high
			 * watermark and reading is on.
			 */
			if ((c->out_paused = conn_output_full(c))) {
				bufferevent_disable(c->bev, EV_READ);
				break;
			}
			if (!c->head_started) {
				c->head_started = 1;
				c->head_start_ms = now_ms();
				conn_set_timer(c, c->conf->header_timeout_ms);
			}
			conn_feed(c, in);
			if (c->hf.phase == HF_ERROR) {
				conn_fail_framing(c);
				return;
			}
			if (c->hf.phase == HF_HEAD)
				break;
			evtimer_del(c->timer);
			c->nreqs++;
			req_start(c, &c->hf.msg);
			if (c->req != NULL && !c->dead)
				conn_timeouts(c, !c->req->body_done);
			continue;
		}
		if (c->hf.phase == HF_DONE || c->hf.phase == HF_HEAD)
			break;
		if (!req->body_ready || c->read_paused)
			break;
		if (c->hf.phase == HF_BODY_LENGTH) {
			n = avail < c->hf.remaining ? avail : c->hf.remaining;
			if (n == 0)
				break;
			hframe_body_consumed(&c->hf, n);
			req->bytes_in += n;
			if (req->body_sink(req, in, n) == 1)
				c->read_paused = 1;
		} else if (c->hf.phase == HF_BODY_PARSED) {
			if (avail == 0)
				break;
			conn_feed(c, in);
			if (c->hf.phase == HF_ERROR &&
			    c->hf.err == HF_E_BODY_TOO_LARGE) {
				/* Nothing past the bound went on: refuse. */
				req_fail(req, ERR_TOO_LARGE, "body larger "
				    "than limits.manifest_bytes");
				return;
			}
			if (c->hf.phase == HF_ERROR) {
				log_info("%llu.%u req body_error error=\"%s\"",
				    (unsigned long long)c->id, c->nreqs,
				    hframe_err_str(c->hf.err));
				/* Before the answer began: say why (400). */
				if (!req->head_sent)
					req_fail(req, ERR_BAD_REQUEST,
					    hframe_err_str(c->hf.err));
				else
					req_abort(req,
					    "malformed request body");
				return;
			}
		}
		if (c->dead || c->req != req)
			return;
		if (c->hf.phase == HF_DONE && !req->body_done) {
			req->body_done = 1;
			conn_timeouts(c, 0);
			if (req->body_end != NULL)
				req->body_end(req);
		}
	}
}

/*
 * Write what a connection staged, at the end of the loop turn (ev_stage):
 * the audit records of the turn's requests go to the WAL first, in one
 * write, and then each response with one write(2).  When that takes it
 * all, the bufferevent's write event is never added and deleted (two
 * epoll_ctl(2) and a loop turn per response saved, about 5% of a cached
 * manifest GET).  What is left goes to the bufferevent as before.  Its
 * write callback, which a request waiting for room and a closing
 * connection rely on, is run (deferred) when the stage was written
 * whole, as libevent would have once the output drained.
 */
static void
conn_stage_write(struct conn *c)
{
	evutil_socket_t	 fd;

	if (!c->staging)
		return;
	if (c->dead || evbuffer_get_length(c->stage) == 0 ||
	    (fd = bufferevent_getfd(c->bev)) == -1) {
		conn_unstage(c);
		return;
	}
	(void)evbuffer_write(c->stage, fd);	/* errors: the bufferevent's */
	if (evbuffer_get_length(c->stage) > 0) {
		conn_unstage(c);
		return;
	}
	c->staging = 0;
	if (c->req != NULL || c->out_paused)
		bufferevent_trigger(c->bev, EV_WRITE,
		    BEV_TRIG_DEFER_CALLBACKS);
}

static void
conn_stage_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct pc_ctx	*ctx = arg;
	struct conn	*c;

	audit_wal_flush(ctx->audit);	/* the records before the answers */
	while ((c = TAILQ_FIRST(&ctx->staged)) != NULL) {
		TAILQ_REMOVE(&ctx->staged, c, stage_entry);
		c->staged = 0;
		conn_stage_write(c);
	}
}

/*
 * Process what the client sent.  On a plain connection whose output is
 * empty, responses made meanwhile are staged, to be written at the end
 * of the loop turn (conn_stage_cb).
 */
static void
conn_process(struct conn *c)
{
	struct pc_ctx	*ctx = c->ctx;
	struct evbuffer	*out;

	if (c->staging || c->tls || c->stage == NULL || c->dead ||
	    c->closing || (out = bufferevent_get_output(c->bev)) == NULL ||
	    evbuffer_get_length(out) > 0) {
		conn_process_1(c);
		return;
	}
	c->staging = 1;
	conn_process_1(c);
	if (!c->staging)
		return;			/* conn_close_after_write took it */
	if (c->dead || evbuffer_get_length(c->stage) == 0) {
		conn_unstage(c);
		return;
	}
	if (ctx->ev_stage == NULL && (ctx->ev_stage = event_new(ctx->base,
	    -1, 0, conn_stage_cb, ctx)) == NULL) {
		conn_stage_write(c);
		return;
	}
	TAILQ_INSERT_TAIL(&ctx->staged, c, stage_entry);
	c->staged = 1;
	if (TAILQ_FIRST(&ctx->staged) == c)
		event_active(ctx->ev_stage, 0, 0);
}

static void
conn_process_cb(evutil_socket_t fd, short ev, void *arg)
{
	conn_process(arg);
}

static void
conn_read_cb(struct bufferevent *bev, void *arg)
{
	struct conn	*c = arg;
	size_t		 n;

	if (c->closing) {
		n = evbuffer_get_length(bufferevent_get_input(bev));
		evbuffer_drain(bufferevent_get_input(bev), n);
		c->linger_read += n;
		if (c->linger_read > c->conf->linger_bytes)
			conn_close(c, c->close_reason);
		return;
	}
	/* A request body is streaming: take more than libevent's 4 KiB. */
	if (!c->tls && c->req != NULL && c->req->body_ready &&
	    !c->read_paused)
		bev_read_more(bev, c->conf->high_watermark);
	conn_process(c);
	/*
	 * A body that cannot move on (its sink is full, or not there yet)
	 * with the input at its high watermark: reading stops until
	 * conn_resume_read().  Left on, libevent runs this callback again
	 * on every loop turn while the input is at the watermark: a client
	 * uploading to a stalled upstream kept a core busy.
	 */
	if (!c->dead && !c->closing && c->req != NULL &&
	    (c->read_paused || !c->req->body_ready) &&
	    evbuffer_get_length(bufferevent_get_input(bev)) >=
	    c->conf->high_watermark) {
		bufferevent_disable(bev, EV_READ);
		c->read_off = 1;
	}
}

static void
conn_write_cb(struct bufferevent *bev, void *arg)
{
	struct conn	*c = arg;

	if (c->closing) {
		if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
			conn_linger(c);
		return;
	}
	if (c->req != NULL)
		req_client_writable(c->req);
	else if (c->out_paused) {
		c->out_paused = 0;
		if (!c->eof)
			bufferevent_enable(c->bev, EV_READ);
		event_active(c->ev_process, 0, 0);
	}
}

static void
conn_event_cb(struct bufferevent *bev, short events, void *arg)
{
	struct conn	*c = arg;

	if (events & BEV_EVENT_CONNECTED) {
		/* TLS handshake done. */
		c->tls_subject = tls_peer_subject(bev);
		c->tls_not_after = tls_peer_not_after(bev);
		c->tls_not_before = tls_peer_not_before(bev);
		/* RFC 2253 escapes quotes and backslashes: one field. */
		log_debug("%llu tls handshake done client_subject=\"%s\"",
		    (unsigned long long)c->id,
		    c->tls_subject != NULL ? c->tls_subject : "-");
		return;
	}
	if (c->closing) {
		/* A client that half-closed still gets the response. */
		if ((events & BEV_EVENT_EOF) && !(events & BEV_EVENT_ERROR) &&
		    !c->lingering) {
			c->eof = 1;
			bufferevent_disable(bev, EV_READ);
			return;
		}
		/* Lingering and it closed, or it failed: done. */
		conn_close(c, c->close_reason);
		return;
	}
	if (events & BEV_EVENT_TIMEOUT) {
		if (c->req != NULL)
			log_info("%llu.%u conn timeout during=%s",
			    (unsigned long long)c->id, c->nreqs,
			    (events & BEV_EVENT_READING) ? "body read" :
			    "response write");
		conn_close(c, "timeout");
		return;
	}
	if ((events & BEV_EVENT_EOF) && !(events & BEV_EVENT_ERROR) &&
	    c->req != NULL && c->req->body_done && !c->closing &&
	    (c->req->head_sent || c->req->state == REQ_UPSTREAM)) {
		/*
		 * Half-close after a complete request: still answer it, once
		 * it is with the upstream or answering.  Not while it waits in
		 * a local stage with nothing sent (a Range waiting for a fill
		 * to verify, an admin query waiting for Redis, later a gate):
		 * a client that sent a request and closed would keep a whole
		 * fill or query alive that no one reads, since only a write
		 * would tell it is gone.  As nginx treats a client abort, that
		 * request ends here (499) and its stage is told.
		 */
		c->eof = 1;
		c->req->keep_alive = 0;
		return;
	}
	if ((events & BEV_EVENT_EOF) && !(events & BEV_EVENT_ERROR) &&
	    c->req == NULL &&
	    evbuffer_get_length(bufferevent_get_output(bev)) > 0) {
		/*
		 * Half-close after a response that is complete but still on
		 * its way out (a cached blob's file segments): closing now
		 * would cut it after its head.  Finish writing, then close.
		 */
		c->eof = 1;
		conn_close_after_write(c, "client closed");
		return;
	}
	if ((events & BEV_EVENT_ERROR) && c->tls)
		log_debug("%llu.%u conn tls_error error=\"%s\"",
		    (unsigned long long)c->id, c->nreqs, tls_last_error(bev));
	c->client_left = 1;
	conn_close(c, (events & BEV_EVENT_EOF) ? "client closed" :
	    "client error");
}

static void
conn_timer_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct conn	*c = arg;
	char		 rid[17];
	uint64_t	 ms;

	if (c->closing) {
		conn_close(c, c->lingering ? c->close_reason :
		    "write timeout");
		return;
	}
	if (c->req == NULL && c->head_started &&
	    c->hf.phase == HF_HEAD) {
		/* Slow or stalled header section: 408 and close. */
		req_make_id(c->ctx, rid);
		conn_send_error(c, 408, ERR_NONE, NULL, rid);
		ms = now_ms() - c->head_start_ms;
		log_info("%llu.%u req header_timeout peer=%s status=408 out=0 "
		    "ms=%llu id=%s", (unsigned long long)c->id, c->nreqs + 1,
		    c->peer, (unsigned long long)ms, rid);
		audit_framing(c, 408, ERR_NONE, rid, 0, ms);
		conn_close_after_write(c, "header timeout");
		return;
	}
	conn_close(c, c->nreqs == 0 ? "header timeout" : "idle timeout");
}
