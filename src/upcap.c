/*
 * upcap.c: a cap on the requests each upstream serves at once, a gate of
 * DISPATCH after the rate limits.  A request that will reach the
 * upstream (routed to it and not one the cache holds) takes one of the
 * upstream's max_concurrent slots and keeps it until it ends (req_free:
 * upcap_req_done), or a cache reader until the upstream's part is over
 * (cache_serve.c: the fill done, a stored entry served), so that a
 * client reading slowly never holds the upstream's slot; when all are
 * taken it waits in a FIFO of at most `queue` requests, as the request's
 * stage, for at most queue_timeout; a full queue or a wait that times
 * out is a 503 with Retry-After.
 *
 * A slot freed goes to the first waiter: it is marked granted and its
 * event made active, so it carries on from the loop, never from inside
 * the request that ended.  A waiter whose client goes, or that is
 * otherwise retired, leaves the queue, and gives on a slot it was
 * granted but had not taken.  The counts live in the upstream's
 * struct upstream_state, which outlives reloads.
 *
 * What it does not count: a cache fill joined by several readers counts
 * once per reader (more than the upstream sees), and client-less fetches
 * (tag revalidations behind a hit, the catalog's pages, IdP keys) not at
 * all.
 */
#include <sys/types.h>
#include <sys/queue.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "portcullis.h"

struct upcap_wait {
	struct upcap_wait	*next;
	struct req		*req;
	struct upstream_state	*us;
	struct event		*ev;
	int			 queued;
	int			 granted;	/* holds a slot not yet taken */
};

static void
upcap_unlink(struct upcap_wait *w)
{
	struct upstream_state	*us = w->us;
	struct upcap_wait	**pp;

	for (pp = &us->cap_head; *pp != NULL; pp = &(*pp)->next)
		if (*pp == w) {
			*pp = w->next;
			break;
		}
	if (us->cap_tail == w) {
		us->cap_tail = NULL;
		for (pp = &us->cap_head; *pp != NULL; pp = &(*pp)->next)
			us->cap_tail = *pp;
	}
	w->queued = 0;
	us->cap_queued--;
}

/* Free slots go to the waiters, first come first served. */
static void
upcap_pass(struct upstream_state *us)
{
	struct upcap_wait	*w;

	while (us->cap_inflight < us->cap_max &&
	    (w = us->cap_head) != NULL) {
		upcap_unlink(w);
		us->cap_inflight++;
		w->granted = 1;
		event_active(w->ev, EV_TIMEOUT, 1);
	}
}

static void
upcap_release(struct upstream_state *us)
{
	if (us->cap_inflight > 0)
		us->cap_inflight--;
	upcap_pass(us);
}

static void
upcap_stage_free(void *arg)
{
	struct upcap_wait	*w = arg;

	if (w->queued)
		upcap_unlink(w);
	if (w->granted)
		upcap_release(w->us);	/* granted, not taken: on */
	event_free(w->ev);
	free(w);
}

static const struct req_stage_ops upcap_stage_ops = {
	"upstream_queue", NULL, NULL, upcap_stage_free
};

static void
upcap_fail(struct req *req, const char *why)
{
	struct headers	h;

	log_info("%llu.%u upcap refuse upstream=%s reason=%s",
	    (unsigned long long)req->c->id, req->seq, req->up->name, why);
	headers_init(&h);
	headers_add(&h, "Retry-After", 11, "1", 1);
	req_fail_with(req, ERR_UNAVAILABLE, why, &h);
	headers_clear(&h);
}

static void
upcap_event_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct upcap_wait	*w = arg;
	struct req		*req = w->req;

	(void)fd;
	(void)ev;
	event_del(w->ev);
	if (w->granted) {
		/* The slot is the request's now; the stage's free is done. */
		w->granted = 0;
		req->cap_us = w->us;
		req_stage_next(req);
		return;
	}
	upcap_fail(req, "upstream busy: waited queue_timeout for a "
	    "connection slot");
}

/*
 * The gate.  0: go on now (with a slot, or none needed); 1: waiting as
 * the request's stage; -1: answered (503).
 */
int
upcap_request(struct req *req)
{
	const struct config_upstream	*up = req->up;
	struct upstream_state		*us;
	struct upcap_wait		*w;
	struct timeval			 tv;

	req->cap_checked = 1;
	if (up == NULL || up->max_concurrent <= 0 ||
	    ratelimit_would_hit(req))
		return (0);
	us = upstream_state_get(req->c->ctx, up);
	us->cap_max = up->max_concurrent;	/* the newest snapshot's */
	if (us->cap_inflight < us->cap_max && us->cap_head == NULL) {
		us->cap_inflight++;
		req->cap_us = us;
		return (0);
	}
	if (us->cap_queued >= (size_t)up->queue) {
		upcap_fail(req, "upstream busy: its queue is full");
		return (-1);
	}
	if ((w = calloc(1, sizeof(*w))) == NULL ||
	    (w->ev = evtimer_new(req->c->ctx->base, upcap_event_cb,
	    w)) == NULL)
		fatal("upcap_request");
	w->req = req;
	w->us = us;
	w->queued = 1;
	if (us->cap_tail != NULL)
		us->cap_tail->next = w;
	else
		us->cap_head = w;
	us->cap_tail = w;
	us->cap_queued++;
	tv.tv_sec = up->queue_timeout_ms / 1000;
	tv.tv_usec = (up->queue_timeout_ms % 1000) * 1000;
	evtimer_add(w->ev, &tv);
	req_stage_set(req, &upcap_stage_ops, w);
	log_info("%llu.%u upcap queued upstream=%s inflight=%d queued=%zu",
	    (unsigned long long)req->c->id, req->seq, up->name,
	    us->cap_inflight, us->cap_queued);
	return (1);
}

/* The request ends: its slot, if it held one, goes to the next. */
void
upcap_req_done(struct req *req)
{
	struct upstream_state	*us = req->cap_us;

	if (us == NULL)
		return;
	req->cap_us = NULL;
	upcap_release(us);
}
