/*
 * proxy_splice.c: a Content-Length response body moved from the upstream
 * socket to the client socket with splice(2) through a pipe, so that its
 * bytes never enter the gateway's memory (buffers.splice).
 *
 * Only between two plain TCP sockets (TLS on either side keeps the
 * evbuffer path), only for a body of at least buffers.high_watermark
 * still to come, and only once the request is relayed (px_relay_splice
 * says when: its head out, no held manifest, no error copy, the request
 * body sent).  What the evbuffers still hold goes first: the upstream's
 * input has already moved to the client's output (px_pump), and that is
 * written here before the first byte leaves the pipe, so the order on
 * the wire is kept.  Both bufferevents sit still meanwhile (the upstream's
 * disabled, the client's write side disabled; its read side stays on, so
 * a client that resets is still seen) and two events of our own take
 * over, each with the timeout its bufferevent had:
 *
 *   - upstream readable: splice at most what the Content-Length leaves
 *     and what the pipe has room for (no byte past the body is read; a
 *     short body, the upstream closing, fails as px_pump fails it);
 *   - client writable: the pipe drained into the client socket.
 *
 * Backpressure is the pipe's: the upstream is read only while the pipe
 * (buffers.high_watermark, or what the kernel grants) has room.  Each
 * byte that leaves the pipe counts in the request's bytes_out.  A client
 * write error is the client gone (499, the upstream connection closed,
 * not pooled).  When the pipe is empty and the body complete, the
 * client's bufferevent writes again and px_done() pools the upstream
 * connection and ends the response, as the evbuffer path does.
 */
#include <sys/types.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "portcullis.h"
#include "proxy.h"

/* Moves per callback before yielding the loop to other connections. */
#define PX_SPLICE_ROUNDS	16

struct px_splice {
	int		 pipe[2];	/* [0] read end, [1] write end */
	size_t		 cap;		/* the pipe's size */
	size_t		 held;		/* bytes in the pipe */
	int		 full;		/* its slots taken: wait for the client */
	struct event	*ev_up;		/* upstream readable */
	struct event	*ev_cl;		/* client writable */
	struct event	*ev_go;		/* go on next turn */
};

static void	px_splice_run(struct proxy *);

static void
px_splice_up_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct proxy	*px = arg;
	char		 what[128];

	if (ev & EV_TIMEOUT) {
		snprintf(what, sizeof(what), "no answer within %d ms",
		    px->conf->upstream_response_timeout_ms);
		px_fail(px, ERR_UPSTREAM_TIMEOUT, what);
		return;
	}
	px_splice_run(px);
}

static void
px_splice_cl_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct proxy	*px = arg;
	struct conn	*c = px->req->c;

	if (ev & EV_TIMEOUT) {
		log_info("%llu.%u conn timeout during=response write",
		    (unsigned long long)c->id, c->nreqs);
		conn_close(c, "timeout");	/* retires px */
		return;
	}
	px_splice_run(px);
}

static void
px_splice_go_cb(evutil_socket_t fd, short ev, void *arg)
{
	px_splice_run(arg);
}

/* The events and the pipe; the bufferevents are the caller's to resume. */
void
px_splice_free(struct proxy *px)
{
	struct px_splice	*s = px->spl;

	if (s == NULL)
		return;
	px->spl = NULL;
	if (s->ev_up != NULL)
		event_free(s->ev_up);
	if (s->ev_cl != NULL)
		event_free(s->ev_cl);
	if (s->ev_go != NULL)
		event_free(s->ev_go);
	if (s->pipe[0] != -1)
		close(s->pipe[0]);
	if (s->pipe[1] != -1)
		close(s->pipe[1]);
	free(s);
}

/*
 * Take the body over.  Returns 0 when splicing, -1 when it could not
 * start (no pipe, no events): the evbuffer path goes on, nothing lost.
 */
int
px_splice_start(struct proxy *px)
{
	struct px_splice	*s;
	struct event_base	*base = px->ctx->base;
	evutil_socket_t		 ufd, cfd;
	int			 sz;

	ufd = bufferevent_getfd(px->uc->bev);
	cfd = bufferevent_getfd(px->req->c->bev);
	if (ufd == -1 || cfd == -1)
		return (-1);
	px->no_splice = 1;		/* once, whatever comes of it */
	if ((s = calloc(1, sizeof(*s))) == NULL)
		return (-1);
	s->pipe[0] = s->pipe[1] = -1;
	px->spl = s;
	if (pipe2(s->pipe, O_NONBLOCK | O_CLOEXEC) == -1) {
		s->pipe[0] = s->pipe[1] = -1;
		log_info("%s proxy splice_off error=\"pipe: %s\"", px->logid,
		    strerror(errno));
		px_splice_free(px);
		return (-1);
	}
	/* The kernel may grant less than asked (fs.pipe-max-size). */
	sz = px->conf->high_watermark > 0x7fffffff ? 0x7fffffff :
	    (int)px->conf->high_watermark;
	(void)fcntl(s->pipe[1], F_SETPIPE_SZ, sz);
	if ((sz = fcntl(s->pipe[1], F_GETPIPE_SZ)) <= 0) {
		px_splice_free(px);
		return (-1);
	}
	s->cap = (size_t)sz;
	s->ev_up = event_new(base, ufd, EV_READ | EV_PERSIST,
	    px_splice_up_cb, px);
	s->ev_cl = event_new(base, cfd, EV_WRITE | EV_PERSIST,
	    px_splice_cl_cb, px);
	s->ev_go = event_new(base, -1, 0, px_splice_go_cb, px);
	if (s->ev_up == NULL || s->ev_cl == NULL || s->ev_go == NULL) {
		px_splice_free(px);
		return (-1);
	}
	bufferevent_disable(px->uc->bev, EV_READ | EV_WRITE);
	bufferevent_disable(px->req->c->bev, EV_WRITE);
	px->up_paused = 0;
	px->want_pause = 0;
	log_debug("%s proxy splice start remaining=%llu pipe=%zu", px->logid,
	    (unsigned long long)px->rf.remaining, s->cap);
	px_splice_run(px);
	return (0);
}

/* Add ev with the timeout ms, unless pending and nothing moved. */
static void
px_splice_arm(struct event *ev, short what, int ms, int moved)
{
	struct timeval	tv;

	if (!moved && event_pending(ev, what, NULL))
		return;
	tv.tv_sec = ms / 1000;
	tv.tv_usec = (ms % 1000) * 1000;
	event_add(ev, &tv);
}

/* The body is complete and out: back to the bufferevents. */
static void
px_splice_done(struct proxy *px)
{
	struct conn	*c = px->req->c;
	evutil_socket_t	 ufd = bufferevent_getfd(px->uc->bev);
	int		 stray = 0;

	log_debug("%s proxy splice done bytes=%llu", px->logid,
	    (unsigned long long)px->rf.body_bytes);
	/*
	 * No byte past the body was read, so bytes the upstream sent after
	 * it wait in the socket, where uconn_release() does not look: a
	 * connection pooled with them would give them to the next request
	 * as its answer.  Not pooled.
	 */
	if (ufd != -1 && (ioctl(ufd, FIONREAD, &stray) == -1 || stray > 0)) {
		log_info("%s proxy stray_bytes upstream=%s after=body",
		    px->logid, px->up->name);
		px->rf.msg.keep_alive = 0;
	}
	px_splice_free(px);
	if (!c->dead)
		bufferevent_enable(c->bev, EV_WRITE);
	px_done(px);	/* pools the connection, ends the response */
}

/* The client failed on a write: gone, as conn_event_cb would say. */
static void
px_splice_client_gone(struct proxy *px, int err)
{
	struct conn	*c = px->req->c;

	log_debug("%s proxy splice client_error error=\"%s\"", px->logid,
	    strerror(err));
	c->client_left = 1;
	conn_close(c, "client error");		/* retires px */
}

static void
px_splice_run(struct proxy *px)
{
	struct px_splice	*s = px->spl;
	struct req		*req = px->req;
	struct evbuffer		*clout;
	evutil_socket_t		 ufd, cfd;
	ssize_t			 n;
	size_t			 want;
	int			 i, up_moved = 0, cl_moved = 0, up_wait = 0;
	int			 cl_wait = 0, busy = 0, e;
	char			 peek;

	if (s == NULL || px->retired)
		return;
	ufd = bufferevent_getfd(px->uc->bev);
	cfd = bufferevent_getfd(req->c->bev);
	clout = bufferevent_get_output(req->c->bev);
	for (i = 0; i < PX_SPLICE_ROUNDS; i++) {
		busy = 0;
		/* What the evbuffer path queued goes first. */
		if (evbuffer_get_length(clout) > 0) {
			/* A bufferevent keeps its output's start frozen. */
			evbuffer_unfreeze(clout, 1);
			n = evbuffer_write(clout, cfd);
			e = errno;
			evbuffer_freeze(clout, 1);
			if (n < 0 && e != EAGAIN && e != EINTR) {
				px_splice_client_gone(px, e);
				return;
			}
			if (n > 0)
				cl_moved = busy = 1;
			if (evbuffer_get_length(clout) > 0)
				cl_wait = 1;
		}
		if (!cl_wait && s->held > 0) {
			n = splice(s->pipe[0], NULL, cfd, NULL, s->held,
			    SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
			e = errno;
			if (n > 0) {
				s->held -= (size_t)n;
				s->full = 0;
				req->bytes_out += (uint64_t)n;
				cl_moved = busy = 1;
				if (s->held > 0)
					cl_wait = 1;
			} else if (n < 0 && (e == EAGAIN || e == EINTR))
				cl_wait = 1;
			else {
				px_splice_client_gone(px, n < 0 ? e : EPIPE);
				return;
			}
		}
		if (px->rf.phase == HF_DONE && s->held == 0 && !cl_wait) {
			px_splice_done(px);
			return;
		}
		if (px->rf.phase == HF_BODY_LENGTH && s->held < s->cap &&
		    !s->full) {
			want = s->cap - s->held;
			if (want > px->rf.remaining)
				want = (size_t)px->rf.remaining;
			n = splice(ufd, NULL, s->pipe[1], NULL, want,
			    SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
			e = errno;
			if (n > 0) {
				s->held += (size_t)n;
				hframe_body_consumed(&px->rf, (uint64_t)n);
				up_moved = busy = 1;
				up_wait = 0;
			} else if (n == 0) {
				px->up_eof = 1;
				px_fail(px, ERR_UPSTREAM, "upstream closed the "
				    "connection mid-response");
				return;
			} else if (e == EINTR || (e == EAGAIN && s->held == 0))
				up_wait = 1;
			else if (e == EAGAIN) {
				/*
				 * Each segment spliced takes one of the pipe's
				 * slots, so small segments fill it long before
				 * its size: EAGAIN then, with the socket still
				 * readable.  Waiting on the socket would spin;
				 * the client's draining frees the slots.
				 */
				n = recv(ufd, &peek, 1, MSG_PEEK | MSG_DONTWAIT);
				e = errno;
				if (n >= 0)
					s->full = 1;
				else if (e == EAGAIN || e == EWOULDBLOCK ||
				    e == EINTR)
					up_wait = 1;
				else {
					px_fail(px, ERR_UPSTREAM, "connection "
					    "to upstream failed");
					return;
				}
			} else {
				px_fail(px, ERR_UPSTREAM, "connection to "
				    "upstream failed");
				return;
			}
		}
		if (!busy)
			break;
	}
	if (busy) {
		/* Still moving: let other connections have this turn too. */
		event_del(s->ev_up);
		event_del(s->ev_cl);
		event_active(s->ev_go, 0, 0);
		return;
	}
	if (cl_wait)
		px_splice_arm(s->ev_cl, EV_WRITE, px->conf->body_timeout_ms,
		    cl_moved);
	else
		event_del(s->ev_cl);
	if (up_wait && px->rf.phase == HF_BODY_LENGTH && s->held < s->cap &&
	    !s->full)
		px_splice_arm(s->ev_up, EV_READ,
		    px->conf->upstream_response_timeout_ms, up_moved);
	else
		event_del(s->ev_up);
}
