/*
 * cache_serve.c: the CACHE stage of a request (req.c sequences it between
 * DISPATCH and UPSTREAM).  Only GET and HEAD of blobs and manifests of an
 * upstream with caching on come here; everything else, pushes above all,
 * goes straight to the upstream.
 *
 * By digest: a stored entry is served from its file (hit), without asking
 * the upstream, when a repository link (cache_links.c) says the upstream
 * holds the digest in the request's repository; else the request follows
 * the fill for the digest from its upstream, starting one when none runs
 * (miss) or joining it (coalesced).  A HEAD that is not a hit, and a miss
 * beyond the fill caps or that the fill declines (cache_fill.c), go to
 * the upstream as is.
 *
 * Confirm: a stored entry without a link for the repository, or a fill
 * started through another repository, is not served until a HEAD for the
 * digest in this repository (the client's Accept fields, the upstream's
 * credentials for this repository, as proxy.c does for every fetch)
 * answers 200 with the same digest and, for a blob, the same length; the
 * link is recorded and the request goes on as a hit (or joins the fill).
 * A 404 is the upstream's answer for this repository: 404, no cached
 * byte.  Unreachable, a timeout, 5xx: the request fails (fails closed),
 * since the cache cannot know.  429 is relayed; any other answer (401,
 * 403, a different digest) sends the request to the upstream as is.
 * Readers that want the same confirm at once share one HEAD, and at most
 * cache.max_confirms HEADs run; beyond it a hit is passed through
 * (cache_confirm.c).  Without this, anyone who may pull one repository
 * could read any cached blob by its digest through it.  A HEAD is trusted
 * only for bytes this upstream sent before (a link in any repository,
 * cache_link_upstream_has): an entry only other upstreams sent is a miss
 * through this one, filled (and verified) from it, so that an upstream
 * answering 200 for what it does not hold never gets another's bytes.
 *
 * By tag: the tag's digest is kept per (upstream, repository, tag,
 * normalised Accept set) for tag_ttl, an unknown tag for negative_ttl
 * (cache_tags.c, which bounds both).
 * When the record is older, a HEAD to the upstream (which Docker Hub does
 * not count against pull limits) revalidates it, and the manifest is then
 * served by digest.  When that HEAD cannot be answered (unreachable,
 * timeout, 5xx, 429) a known digest is served anyway, with a Warning
 * (stale).  Answers the cache has no rule for (401, 403, ...) make the
 * request go to the upstream as is.
 *
 * Sending: the file goes to the client in windows of cache.send_window
 * bytes, as file segments (sendfile(2) on plain connections) or, with
 * cache.sendfile off, and with auto for files under cache.sendfile_min
 * bytes (cr_copies), read into the output buffer; the next window when
 * the client's output drains, so a reader holds at most one window
 * whatever the file's size.  A reader following a fill sends what is on
 * disk and waits for more; it never sends the last byte before the fill
 * verified the whole body.
 */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "cache.h"

/*
 * Bytes a follower waits for before it sends more: each send is a file
 * segment (a dup(2), a sendfile(2), a close(2)) and a write event added
 * and removed, so a step per upstream read (64 KiB here before) cost
 * about 4,000 sendfiles and 8,000 epoll_ctl calls per GiB; at 1 MiB,
 * 1,000 and half as many.  The client waits at most that much longer
 * for bytes that are already on disk.
 */
#define CR_MIN_STEP	(1024 * 1024)
/*
 * But bytes on disk wait for a step at most this long: an upstream that
 * stalls or trickles below a step would otherwise leave its clients with
 * a head and nothing more for as long as it dawdles, and a client's (or
 * a proxy's in front) read timeout then cuts them.  A fast fill fills a
 * step long before: the timer only costs a slow one a send now and then.
 */
#define CR_STEP_WAIT_US	200000
#define CR_PEER_POLL_US	50000	/* workers: a look at another's fill */

static void	cr_pump(struct cache_reader *);
static void	cr_step_wait(struct cache_reader *);
static int	cr_copies(const struct config_cache *, uint64_t);
static void	cr_respond(struct cache_reader *);
static void	cr_by_digest(struct cache_reader *, const char *);
static void	cr_by_tag(struct cache_reader *);
static void	cr_confirm(struct cache_reader *, uint64_t);
static const struct proxy_ops tag_ops;
static const struct req_stage_ops cr_stage_ops;

/* Whether the cache stage takes this routed request. */
int
cache_wants(struct req *req)
{
	const char	*hex;
	int		 m = req->msg->method;

	if (req->c->ctx->cache == NULL || req->conf->cache == NULL ||
	    req->up == NULL || !req->up->cache)
		return (0);
	if (m != HTTP_GET && m != HTTP_HEAD)
		return (0);
	switch (req->route.ep) {
	case OCI_EP_BLOB:
		return (req->route.ref_digest &&
		    cache_digest_alg(req->route.ref, &hex) != CACHE_ALG_NONE);
	case OCI_EP_MANIFEST:
		return (!req->route.ref_digest ||
		    cache_digest_alg(req->route.ref, &hex) != CACHE_ALG_NONE);
	default:
		return (0);
	}
}

/* Run the cache stage. */
void
cache_start(struct req *req)
{
	struct cache_reader	*cr;

	if ((cr = calloc(1, sizeof(*cr))) == NULL)
		fatal("calloc");
	cr->req = req;
	cr->cache = req->c->ctx->cache;
	cr->fd = -1;
	cr->kind = req->route.ep == OCI_EP_BLOB ? CACHE_BLOB : CACHE_MANIFEST;
	headers_init(&cr->fwd);
	req_stage_set(req, &cr_stage_ops, cr);
	if (req->route.ref_digest)
		cr_by_digest(cr, req->route.ref);
	else
		cr_by_tag(cr);
}

/* The reaper's half of cache_reader_free(). */
static void
cr_destroy(void *arg)
{
	struct cache_reader	*cr = arg;

	if (cr->fd != -1)
		close(cr->fd);
	headers_clear(&cr->fwd);
	free(cr);
}

/*
 * Retire the stage's state: off the fill it followed (which goes on for
 * the others), its tag request retired, its entry unpinned; its memory is
 * freed on the reaper's next turn.  NULL and a retired reader are fine.
 */
static void
cache_reader_free(struct cache_reader *cr)
{
	if (cr == NULL || cr->retired)
		return;
	cr->retired = 1;
	cr->waiting = 0;
	if (cr->fill != NULL)
		cache_fill_leave(cr->fill, cr);
	cache_confirm_leave(cr);
	if (cr->ev_peer != NULL) {
		event_free(cr->ev_peer);
		cr->ev_peer = NULL;
	}
	if (cr->ev_step != NULL) {
		event_free(cr->ev_step);
		cr->ev_step = NULL;
	}
	proxy_free(cr->px);
	cr->px = NULL;
	if (cr->ent != NULL) {
		cache_unpin(cr->cache, cr->ent);
		cr->ent = NULL;
		cache_evict_soon(cr->cache);
	}
	cache_mem_unref(cr->cache, cr->mem);
	cr->mem = NULL;
	conn_reap_later(cr->cache->ctx, &cr->reap, cr_destroy, cr);
}

/* Leave the cache stage: the request goes to the upstream as is. */
static void
cr_passthrough(struct cache_reader *cr)
{
	req_stage_next(cr->req);	/* retires cr */
}

static void
cr_log(struct cache_reader *cr, const char *event, const char *digest)
{
	log_debug("%llu.%u cache %s digest=%s", (unsigned long long)
	    cr->req->c->id, cr->req->seq, event, digest);
}

/* The client's Accept fields, which go upstream with a manifest fetch. */
static void
cr_copy_accept(struct cache_reader *cr)
{
	const struct headers	*h = &cr->req->msg->hdrs;
	size_t			 i;

	if (cr->fwd.n > 0)
		return;
	for (i = 0; i < h->n; i++)
		if (strcasecmp(h->v[i].name, "Accept") == 0)
			headers_add(&cr->fwd, h->v[i].name, h->v[i].nlen,
			    h->v[i].value, h->v[i].vlen);
}

/*
 * Open a stored entry and pin it.  A file that is not what the index
 * says (changed behind our back) is dropped.  A manifest without a
 * mediaType of its own is served only through the upstream whose type
 * its type line holds (cache_manifest_type): through another, it is not
 * there (-2), and a fill from that one replaces it.  Returns 0, -1 or -2.
 */
static int
cr_open_entry(struct cache_reader *cr, struct cache_entry *e)
{
	struct cache	*c = cr->cache;
	struct cache_mem *m = e->mem;
	struct stat	 st;
	char		 path[PATH_MAX], up[CACHE_UPSTREAM_MAX];
	size_t		 off = 0;
	uint64_t	 gen = cache_gen();
	int		 fd;

	/*
	 * A small manifest held in memory (cache_mem_keep, below) while no
	 * file was published or removed since it was read: no system call.
	 */
	if (m != NULL && m->gen != gen) {
		cache_mem_drop(c, e);
		m = NULL;
	}
	if (m != NULL) {
		if (m->up[0] != '\0' && strcmp(m->up, cr->req->up->name) != 0)
			return (-2);
		fd = -1;
		snprintf(cr->ctype, sizeof(cr->ctype), "%s", m->ctype);
		goto opened;
	}
	if (cache_path(c, e->kind, e->digest, path, sizeof(path)) == -1)
		return (-1);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1 && errno != ENOENT) {
		/*
		 * Out of descriptors (which a client holding connections
		 * open can cause) or the like: a miss this time, not a
		 * damaged entry to drop.
		 */
		log_warn("%llu.%u cache entry_unreadable digest=%s: %s",
		    (unsigned long long)cr->req->c->id, cr->req->seq,
		    e->digest, strerror(errno));
		return (-1);
	}
	if (fd == -1 ||
	    fstat(fd, &st) == -1 || (uint64_t)st.st_size != e->size ||
	    (e->kind == CACHE_MANIFEST && cache_manifest_type(fd, cr->ctype,
	    sizeof(cr->ctype), up, sizeof(up), &off) == -1)) {
		log_warn("%llu.%u cache entry_damaged digest=%s: dropped",
		    (unsigned long long)cr->req->c->id, cr->req->seq,
		    e->digest);
		if (fd != -1)
			close(fd);
		if (e->refs == 0)
			cache_remove(c, e);
		return (-1);
	}
	if (e->kind == CACHE_MANIFEST && up[0] != '\0' &&
	    strcmp(up, cr->req->up->name) != 0) {
		close(fd);
		return (-2);
	}
	if (e->kind == CACHE_MANIFEST &&
	    cr_copies(cr->req->conf->cache, e->size - off) &&
	    (m = cache_mem_keep(c, e, fd, off, cr->ctype, up, gen)) != NULL) {
		close(fd);
		fd = -1;
	}
opened:
	if (cr->fd != -1)
		close(cr->fd);
	cache_mem_unref(c, cr->mem);
	cr->fd = fd;
	cr->mem = m;
	if (m != NULL) {
		m->refs++;
		cr->data_off = 0;
		cr->size = m->len;
	} else {
		cr->data_off = off;
		cr->size = e->size - off;
	}
	snprintf(cr->digest, sizeof(cr->digest), "%s", e->digest);
	cache_pin(cr->cache, e);
	cr->ent = e;
	cache_touch(c, e);
	return (0);
}

static void
cr_unpin(struct cache_reader *cr)
{
	if (cr->ent != NULL) {
		cache_unpin(cr->cache, cr->ent);
		cr->ent = NULL;
	}
	if (cr->fd != -1) {
		close(cr->fd);
		cr->fd = -1;
	}
	cache_mem_unref(cr->cache, cr->mem);
	cr->mem = NULL;
}

/* 429 with the upstream's Retry-After and an OCI TOOMANYREQUESTS body. */
static void
cr_fail_429(struct cache_reader *cr, const char *retry_after,
    const char *detail)
{
	struct headers	 h;

	headers_init(&h);
	if (retry_after != NULL && retry_after[0] != '\0')
		headers_add(&h, "Retry-After", 11, retry_after,
		    strlen(retry_after));
	req_fail_with(cr->req, ERR_TOO_MANY_REQUESTS, detail, &h);
	headers_clear(&h);
}

static void	cr_by_digest(struct cache_reader *, const char *);

static void
cr_peer_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct cache_reader	*cr = arg;
	struct req		*req = cr->req;

	if (cr->retired)
		return;
	if (now_ms() >= cr->peer_deadline_ms) {
		log_info("%llu.%u cache peer_wait_timeout digest=%s: passed "
		    "through", (unsigned long long)req->c->id, req->seq,
		    cr->digest);
		req->cache_status = "miss";
		cr_passthrough(cr);
		return;
	}
	cr_by_digest(cr, cr->digest);
}

/*
 * Workers: another worker fills the digest (cache_peer_lock).  Look
 * again every CR_PEER_POLL_US: its file published is a hit; its lock
 * released without a file (it failed, or died) makes this one fill.
 * Bounded by timeouts.cache_peer_wait, then passed through.
 */
static void
cr_peer_wait(struct cache_reader *cr)
{
	struct timeval	tv = { 0, CR_PEER_POLL_US };
	struct req	*req = cr->req;

	if (cr->ev_peer == NULL) {
		if ((cr->ev_peer = evtimer_new(cr->cache->ctx->base,
		    cr_peer_cb, cr)) == NULL)
			fatalx("out of memory");
		cr->peer_deadline_ms = now_ms() +
		    (uint64_t)req->conf->cache_peer_wait_ms;
		log_info("%llu.%u cache peer_wait digest=%s",
		    (unsigned long long)req->c->id, req->seq, cr->digest);
	}
	evtimer_add(cr->ev_peer, &tv);
}

/* By digest: hit, coalesced, or a new fill. */
static void
cr_by_digest(struct cache_reader *cr, const char *digest)
{
	struct req		*req = cr->req;
	struct cache_entry	*e;
	struct cache_fill	*f;
	int			 pfd, stored;

	if (digest != cr->digest)
		snprintf(cr->digest, sizeof(cr->digest), "%.*s",
		    (int)sizeof(cr->digest) - 1, digest);
	/*
	 * Workers: the links another worker recorded or dropped (a DELETE
	 * through it) since this one last looked; a stat(2) when nothing
	 * changed.
	 */
	cache_links_sync(cr->cache);
	if ((e = cache_lookup(cr->cache, cr->kind, digest)) == NULL)
		e = cache_adopt(cr->cache, cr->kind, digest);
	stored = e != NULL;
	if (e != NULL &&
	    !cache_link_upstream_has(cr->cache, req->up, cr->kind, digest)) {
		/*
		 * Stored, but only ever sent by other upstreams: this one's
		 * word is not enough, it must send the bytes (a fill, which
		 * verifies them).  A confirm of this reader does not change
		 * that (it may have been for a fill that failed since).
		 */
		e = NULL;
	} else if (e != NULL && !cr->confirmed && !cache_link_has(cr->cache,
	    req->up, req->upname, cr->kind, digest)) {
		/* Stored, but not known to be this repository's. */
		cr_confirm(cr, cr->kind == CACHE_BLOB ? e->size : 0);
		return;
	}
	if (e != NULL && cr_open_entry(cr, e) == 0) {
		if (req->cache_status == NULL)
			req->cache_status = "hit";
		cr_log(cr, "hit", digest);
		cr_respond(cr);
		return;
	}
	if (req->msg->method == HTTP_HEAD) {
		req->cache_status = "miss";
		cr_passthrough(cr);
		return;
	}
	if ((f = cache_fill_find(cr->cache, cr->kind, req->up, digest)) !=
	    NULL && !cr->confirmed && strcmp(f->upname, req->upname) != 0 &&
	    !cache_link_has(cr->cache, req->up, req->upname, cr->kind,
	    digest)) {
		/* Its bytes come through another repository. */
		cr_confirm(cr, f->have_length && cr->kind == CACHE_BLOB ?
		    f->expect : 0);
		return;
	}
	if (f != NULL) {
		req->cache_status = "coalesced";
		log_info("%llu.%u cache coalesced %s digest=%s",
		    (unsigned long long)req->c->id, req->seq, f->logid, digest);
		cache_fill_join(f, cr);
		return;
	}
	/* Workers: one fill of the digest across them. */
	if ((pfd = cache_peer_lock(cr->cache, cr->kind, digest)) == -1) {
		cr_peer_wait(cr);
		return;
	}
	if (pfd >= 0 && !stored && !cr->peer_rechecked &&
	    cache_adopt(cr->cache, cr->kind, digest) != NULL) {
		/* Published between the look and the lock. */
		cache_peer_unlock(cr->cache, pfd, cr->kind, digest);
		cr->peer_rechecked = 1;
		cr_by_digest(cr, digest);
		return;
	}
	req->cache_status = "miss";
	if (cr->kind == CACHE_MANIFEST)
		cr_copy_accept(cr);
	if ((f = cache_fill_new(req, cr->kind, digest, &cr->fwd)) == NULL) {
		cache_peer_unlock(cr->cache, pfd, cr->kind, digest);
		cr_passthrough(cr);	/* over a fill cap: uncached */
		return;
	}
	f->peer_fd = pfd;
	cache_fill_join(f, cr);
}

/* A blob GET with a Range: answered from a fill only once verified. */
static int
cr_wants_range(const struct cache_reader *cr)
{
	return (cr->kind == CACHE_BLOB &&
	    cr->req->msg->method == HTTP_GET &&
	    headers_get(&cr->req->msg->hdrs, "Range") != NULL);
}

/*
 * Send the head for a file of known size (a stored entry, or a fill
 * with a Content-Length), honouring a single Range on blobs, then the
 * body.
 */
static void
cr_respond(struct cache_reader *cr)
{
	struct req		*req = cr->req;
	struct headers		 h;
	enum cache_range	 rr = CACHE_RANGE_NONE;
	const char		*ct;
	uint64_t		 s = 0, e = 0;
	int			 head = req->msg->method == HTTP_HEAD;
	int			 status = 200;
	int			 verified = cr->ent != NULL;
	char			 buf[CACHE_DIGEST_MAX + 8];

	/*
	 * From a stored entry the upstream has no more part (a confirming
	 * HEAD or a tag's revalidation is over): its slot goes on.
	 */
	if (verified)
		upcap_req_done(req);
	/* Policy: a tag that leads to a blocked digest (tagpol.c). */
	if (cr->kind == CACHE_MANIFEST && tagpol_blocked(req, cr->digest))
		return;				/* retires cr */
	if (cr->kind == CACHE_BLOB && !head)
		rr = cache_range_parse(headers_get(&req->msg->hdrs, "Range"),
		    cr->size, &s, &e);
	ct = cr->kind == CACHE_BLOB ? "application/octet-stream" : cr->ctype;
	headers_init(&h);
	headers_add(&h, "Content-Type", 12, ct, strlen(ct));
	/*
	 * A follower of a fill answers before the bytes are verified: its
	 * last byte waits for that, so the client never holds a complete,
	 * wrong body, but nothing that lets a cache keep it goes with it.
	 */
	headers_add(&h, "Docker-Content-Digest", 21, cr->digest,
	    strlen(cr->digest));
	snprintf(buf, sizeof(buf), "\"%s\"", cr->digest);
	if (verified)
		headers_add(&h, "ETag", 4, buf, strlen(buf));
	if (cr->kind == CACHE_BLOB) {
		headers_add(&h, "Accept-Ranges", 13, "bytes", 5);
		if (verified)
			headers_add(&h, "Cache-Control", 13,
			    "max-age=31536000", 16);
		else
			headers_add(&h, "Cache-Control", 13, "no-store", 8);
	}
	if (cr->stale)
		headers_add(&h, "Warning", 7, "110 - \"Response is Stale\"",
		    25);
	if (req->ns[0] != '\0')
		headers_add(&h, "OCI-Namespace", 13, req->ns,
		    strlen(req->ns));
	if (rr == CACHE_RANGE_UNSAT) {
		snprintf(buf, sizeof(buf), "bytes */%llu",
		    (unsigned long long)cr->size);
		headers_add(&h, "Content-Range", 13, buf, strlen(buf));
		req_send_head(req, 416, &h, RESP_LENGTH, 0);
		headers_clear(&h);
		req_end_response(req);
		return;
	}
	cr->off = 0;
	cr->end = cr->size;
	if (rr == CACHE_RANGE_OK) {
		status = 206;
		cr->off = s;
		cr->end = e + 1;
		snprintf(buf, sizeof(buf), "bytes %llu-%llu/%llu",
		    (unsigned long long)s, (unsigned long long)e,
		    (unsigned long long)cr->size);
		headers_add(&h, "Content-Range", 13, buf, strlen(buf));
	}
	req_send_head(req, status, &h, head ? RESP_NONE : RESP_LENGTH,
	    (int64_t)(cr->end - cr->off));
	headers_clear(&h);
	if (head || cr->off == cr->end) {
		req_end_response(req);
		return;
	}
	log_debug("%llu.%u cache send digest=%s bytes=%llu by=%s",
	    (unsigned long long)req->c->id, req->seq,
	    cr->digest[0] != '\0' ? cr->digest : "-",
	    (unsigned long long)(cr->end - cr->off),
	    cr_copies(req->conf->cache, cr->size) ? "copy" : "sendfile");
	cr_pump(cr);
}

/*
 * Whether a file of size bytes is copied into the output buffer rather
 * than sent as a file segment.  auto copies a small file: a segment
 * costs a dup(2), a sendfile(2) of its own after the head's write and a
 * close(2), more than reading a few KiB (a manifest) and sending it with
 * the head in one write; a large file is cheaper by sendfile, which
 * never copies it through our memory.
 */
static int
cr_copies(const struct config_cache *cc, uint64_t size)
{
	if (cc == NULL)
		return (0);
	switch (cc->sendfile) {
	case CONFIG_SENDFILE_OFF:
		return (1);
	case CONFIG_SENDFILE_AUTO:
		return (size < cc->sendfile_min);
	default:
		return (0);
	}
}

/*
 * Queue the next windows of the file while the client takes them.  Ends
 * the response when the last byte is queued, which retires req and cr.
 */
static void
cr_pump(struct cache_reader *cr)
{
	struct req		*req = cr->req;
	struct cache_fill	*f = cr->fill;
	const struct config_cache *cc = req->conf->cache;
	uint64_t		 limit, avail, n, window;
	int			 flags;

	window = cc != NULL ? cc->send_window : 2097152;
	flags = cr_copies(cc, cr->size) ? REQ_FILE_NO_SENDFILE : 0;
	while (cr->off < cr->end) {
		if (conn_output_full(req->c))
			return;		/* cr_stage_writable() */
		limit = cr->end;
		if (f != NULL) {
			/* Never the last byte before the fill verified. */
			avail = f->written;
			if (avail >= f->expect)
				avail = f->expect - 1;
			if (limit > avail)
				limit = avail;
			/* Wait for a worthwhile piece, not every read, but
			 * not for long (cr_step_cb). */
			if (cr->off >= limit || (limit < cr->end &&
			    limit - cr->off < CR_MIN_STEP && !cr->step_due)) {
				cr->waiting = 1;
				if (cr->off < limit)
					cr_step_wait(cr);
				return;	/* cache_reader_progress() */
			}
			cr->step_due = 0;
			if (cr->ev_step != NULL)
				evtimer_del(cr->ev_step);
		}
		n = limit - cr->off;
		if (n > window)
			n = window;
		if (cr->mem != NULL)
			(void)req_send_body_data(req, cr->mem->data + cr->off,
			    n);
		else if (req_send_file(req, cr->fd, cr->data_off + cr->off, n,
		    flags) == -1) {
			req->err = ERR_INTERNAL;
			req_abort(req, "cannot send the cached file");
			return;
		}
		cr->off += n;
	}
	req_end_response(req);
}

/* Bytes on disk waited CR_STEP_WAIT_US for a step: send them. */
static void
cr_step_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct cache_reader	*cr = arg;

	if (cr->retired)
		return;
	cr->step_due = 1;
	if (cr->waiting && cr->req->head_sent) {
		cr->waiting = 0;
		cr_pump(cr);	/* may retire cr */
	}
}

/* Bytes are on disk short of a step: send them at the latest after
 * CR_STEP_WAIT_US (the timer runs on from the first such wait). */
static void
cr_step_wait(struct cache_reader *cr)
{
	struct timeval	tv = { 0, CR_STEP_WAIT_US };

	if (cr->ev_step == NULL && (cr->ev_step = evtimer_new(
	    cr->cache->ctx->base, cr_step_cb, cr)) == NULL)
		fatalx("out of memory");
	if (!evtimer_pending(cr->ev_step, NULL))
		evtimer_add(cr->ev_step, &tv);
}

/* --- the reader as the request's CACHE stage (struct req_stage_ops) --- */

/* The client's output drained: send more. */
static void
cr_stage_writable(void *arg)
{
	struct cache_reader	*cr = arg;

	if ((cr->fd != -1 || cr->mem != NULL) && cr->req->head_sent &&
	    cr->px == NULL)
		cr_pump(cr);
}

/*
 * The client went away: a fill this request followed goes on for the
 * others (or is cancelled when it was the last, cache_fill_leave).
 */
static void
cr_stage_client_gone(void *arg)
{
	struct cache_reader	*cr = arg;

	log_debug("%llu.%u cache client_gone digest=%s fill=%s",
	    (unsigned long long)cr->req->c->id, cr->req->seq,
	    cr->digest[0] != '\0' ? cr->digest : "-",
	    cr->fill != NULL ? cr->fill->logid : "-");
}

static void
cr_stage_free(void *arg)
{
	cache_reader_free(arg);
}

static const struct req_stage_ops cr_stage_ops = {
	"cache",
	cr_stage_writable,
	cr_stage_client_gone,
	cr_stage_free
};

/* The fill has a 200 head: start the response when the size is known. */
void
cache_reader_has_head(struct cache_reader *cr)
{
	struct cache_fill	*f = cr->fill;
	struct req		*req = cr->req;

	/*
	 * Chunked, or empty, or a Range (which would complete before the
	 * digest is checked): answered when it is verified.
	 */
	if (!f->have_length || f->expect == 0 || cr->fd != -1 ||
	    cr->mem != NULL || cr_wants_range(cr))
		return;
	if ((cr->fd = open(f->tmp, O_RDONLY | O_CLOEXEC)) == -1) {
		req_fail(req, ERR_INTERNAL, "cache: cannot open the fill");
		return;
	}
	cr->data_off = f->hdr_len;
	cr->size = f->expect;
	snprintf(cr->ctype, sizeof(cr->ctype), "%s", f->ctype);
	cr_respond(cr);
}

/* More bytes are on disk. */
void
cache_reader_progress(struct cache_reader *cr)
{
	cr->waiting = 0;
	if (cr->req->head_sent)
		cr_pump(cr);
}

/* The fill verified and published the entry: carry on from it. */
void
cache_reader_filled(struct cache_reader *cr, struct cache_entry *e)
{
	struct req	*req = cr->req;

	cr->waiting = 0;
	/*
	 * The upstream has sent all it will: its concurrency slot goes to
	 * the next (upcap.c), however slowly this client reads the rest.
	 */
	upcap_req_done(req);
	/* By tag: the upstream named the digest and has now sent it. */
	if (cr->kind == CACHE_MANIFEST && !req->route.ref_digest &&
	    strcmp(e->digest, cr->tag_digest) == 0) {
		cache_tag_put(cr->cache, req->up, req->upname, req->route.ref,
		    cr->accept, e->digest);
		cache_link_put(cr->cache, req->up, req->upname,
		    CACHE_MANIFEST, e->digest);
	}
	if (!cr->req->head_sent) {
		if (cr_open_entry(cr, e) != 0) {
			req_fail(cr->req, ERR_INTERNAL,
			    "cache: cannot open the entry");
			return;
		}
		cr_respond(cr);
		return;
	}
	/* The temp file was renamed (or, for a manifest, written again
	 * with its own type): the open fd has the entry's bytes. */
	cache_pin(cr->cache, e);
	cr->ent = e;
	cr_pump(cr);
}

/* The fill failed: end the transfer, or relay the upstream's answer. */
void
cache_reader_fill_failed(struct cache_reader *cr, struct cache_fill *f,
    enum pc_err err, const char *detail)
{
	struct req	*req = cr->req;
	struct headers	 h;
	size_t		 len;
	char		 digest[CACHE_DIGEST_MAX];

	cr->waiting = 0;
	if (req->head_sent) {
		/* Never a complete, wrong body: the connection ends. */
		req->err = err;
		req_abort(req, detail);
		return;
	}
	if (strcmp(req->upname, f->upname) != 0) {
		/*
		 * Joined from another repository: what failed for that one
		 * (a 404, a stall, a lie) says nothing about this one, which
		 * fetches on its own; the failed fill is off the list.
		 */
		snprintf(digest, sizeof(digest), "%s", cr->digest);
		log_info("%llu.%u cache refetch %s digest=%s",
		    (unsigned long long)req->c->id, req->seq, f->logid,
		    digest);
		cr_by_digest(cr, digest);
		return;
	}
	if (f->errbody == NULL || f->up_status == 0) {
		req_fail(req, err, detail);
		return;
	}
	if (f->up_status == 404) {
		req_fail(req, cr->kind == CACHE_BLOB ? ERR_BLOB_UNKNOWN :
		    ERR_MANIFEST_UNKNOWN, NULL);
		return;
	}
	if (f->up_status == 429) {
		cr_fail_429(cr, f->retry_after, "upstream rate limit");
		return;
	}
	/*
	 * A server error is the upstream being unavailable: the client
	 * gets the gateway's OCI error, the upstream's status in its
	 * detail, whatever body (an HTML page, text/plain) came with it.
	 */
	if (f->up_status >= 500) {
		req_fail(req, ERR_UPSTREAM, detail);
		return;
	}
	/* Anything else: the upstream's status and (bounded) body. */
	len = evbuffer_get_length(f->errbody);
	req->err = err;
	errs_parse_code((const char *)evbuffer_pullup(f->errbody, -1), len,
	    req->up_error, sizeof(req->up_error));
	headers_init(&h);
	if (f->errtype[0] != '\0')
		headers_add(&h, "Content-Type", 12, f->errtype,
		    strlen(f->errtype));
	req_send_head(req, f->up_status, &h, RESP_LENGTH, (int64_t)len);
	headers_clear(&h);
	if (len > 0)
		req_send_body_data(req, (const char *)evbuffer_pullup(
		    f->errbody, -1), len);
	req_end_response(req);
}

/* The fill will not cache after all: go to the upstream as is. */
void
cache_reader_fill_declined(struct cache_reader *cr)
{
	cr->waiting = 0;
	if (cr->req->head_sent) {
		cr->req->err = ERR_INTERNAL;
		req_abort(cr->req, "cache fill declined");
		return;
	}
	cr_passthrough(cr);	/* retires cr */
}

/* --- by tag --- */

static void	cr_revalidate(struct cache_reader *);

static int
cr_tag_ttl(struct cache_reader *cr)
{
	const struct req	*req = cr->req;

	if (req->up->tag_ttl_ms >= 0)
		return (req->up->tag_ttl_ms);
	return (req->conf->cache->tag_ttl_ms);
}

/* Open the stored manifest of the tag's digest; -1 when not stored or
 * not acceptable to this client. */
static int
cr_open_tag_digest(struct cache_reader *cr, const char *digest)
{
	struct cache_entry	*e;

	if ((e = cache_lookup(cr->cache, CACHE_MANIFEST, digest)) == NULL)
		e = cache_adopt(cr->cache, CACHE_MANIFEST, digest);
	if (e == NULL || cr_open_entry(cr, e) != 0)
		return (-1);
	if (!cache_accept_has(cr->accept, cr->ctype)) {
		cr_unpin(cr);
		return (-1);
	}
	/*
	 * The tag's record is the upstream's word that this repository
	 * holds the digest (only a revalidation through it writes one), so
	 * it is as good as a link; record one for requests by digest.
	 */
	cache_link_put(cr->cache, cr->req->up, cr->req->upname,
	    CACHE_MANIFEST, digest);
	return (0);
}

/* As cr_open_tag_digest(), then answer (which retires cr and req). */
static int
cr_serve_tag_digest(struct cache_reader *cr, const char *digest)
{
	if (cr_open_tag_digest(cr, digest) == -1)
		return (-1);
	cr_respond(cr);
	return (0);
}

static void
cr_by_tag(struct cache_reader *cr)
{
	struct req	*req = cr->req;
	uint64_t	 now = cache_wall_ms(), age;

	if (cache_accept_norm(&req->msg->hdrs, cr->accept,
	    sizeof(cr->accept)) == -1) {
		cr_passthrough(cr);	/* an Accept set too odd to key */
		return;
	}
	if (cache_tag_is_unknown(cr->cache, req->up, req->upname,
	    req->route.ref, cr->accept, req->conf->cache->negative_ttl_ms)) {
		req->cache_status = "hit";
		req_fail(req, ERR_MANIFEST_UNKNOWN,
		    "unknown to the upstream (cached)");
		return;
	}
	cr->tag_found = cache_tag_get(cr->cache, req->up, req->upname,
	    req->route.ref, cr->accept, cr->tag_digest,
	    sizeof(cr->tag_digest), &cr->tag_fetched_ms) == 0;
	if (cr->tag_found) {
		age = now > cr->tag_fetched_ms ? now - cr->tag_fetched_ms : 0;
		if (age < (uint64_t)cr_tag_ttl(cr)) {
			req->cache_status = "hit";
			if (cr_serve_tag_digest(cr, cr->tag_digest) == 0)
				return;
		}
	}
	cr_revalidate(cr);
}

/* HEAD the tag upstream; the answer decides (cr_tag_decide). */
static void
cr_revalidate(struct cache_reader *cr)
{
	struct req	*req = cr->req;
	char		 logid[48];

	req->cache_status = NULL;
	cr_copy_accept(cr);
	snprintf(logid, sizeof(logid), "%llu.%u",
	    (unsigned long long)req->c->id, req->seq);
	cr->px = proxy_fetch_new(req->c->ctx, req->conf, req->up, HTTP_HEAD,
	    req->upname, "manifests", req->route.ref, &cr->fwd, &tag_ops, cr,
	    logid);
	proxy_fetch_start(cr->px);	/* may answer at once */
}

/* The upstream cannot say: serve what we know, stale, or fail. */
static void
cr_tag_unreachable(struct cache_reader *cr, enum pc_err err,
    const char *detail)
{
	struct req	*req = cr->req;
	char		 all[8][CACHE_DIGEST_MAX];
	int		 i, n = 0;

	/* This Accept set's record first, then any other one whose
	 * manifest this client accepts. */
	if (cr->tag_found)
		snprintf(all[n++], CACHE_DIGEST_MAX, "%s", cr->tag_digest);
	n += cache_tag_all(cr->cache, req->up, req->upname, req->route.ref,
	    all + n, 8 - n);
	for (i = 0; i < n; i++) {
		if (cr_open_tag_digest(cr, all[i]) == -1)
			continue;
		cr->stale = 1;
		req->cache_status = "stale";
		log_info("%llu.%u cache serve_stale digest=%s reason=\"%s\"",
		    (unsigned long long)req->c->id, req->seq, all[i], detail);
		cr_respond(cr);
		return;
	}
	if (err == ERR_TOO_MANY_REQUESTS) {
		cr_fail_429(cr, cr->retry_after, detail);
		return;
	}
	req_fail(req, err, detail);
}

static void
cr_tag_decide(struct cache_reader *cr)
{
	struct req		*req = cr->req;
	struct cache_fill	*f;
	struct headers		 h;
	const char		*hex;
	char			 detail[128], etag[CACHE_DIGEST_MAX + 2];
	long long		 len;
	int			 st = cr->up_status;

	if (st == 200 && cache_digest_alg(cr->up_digest, &hex) !=
	    CACHE_ALG_NONE) {
		/* Policy: refused before a fill or a head (tagpol.c). */
		if (tagpol_blocked(req, cr->up_digest))
			return;			/* retires cr */
		snprintf(cr->tag_digest, sizeof(cr->tag_digest), "%s",
		    cr->up_digest);
		/*
		 * Its word is a link, and a tag record (which is one too),
		 * only when this upstream ever sent the manifest: else it
		 * is fetched from it by digest (verified) and the tag is
		 * recorded at the next revalidation.
		 */
		req->cache_status = "miss";
		if (cache_link_upstream_has(cr->cache, req->up,
		    CACHE_MANIFEST, cr->up_digest)) {
			cache_tag_put(cr->cache, req->up, req->upname,
			    req->route.ref, cr->accept, cr->up_digest);
			cache_link_put(cr->cache, req->up, req->upname,
			    CACHE_MANIFEST, cr->up_digest);
			req->cache_status = "hit";
			if (cr_serve_tag_digest(cr, cr->up_digest) == 0)
				return;
		}
		req->cache_status = "miss";
		if (req->msg->method == HTTP_HEAD &&
		    cache_valid_media_type(cr->up_ctype)) {
			/* From the upstream's HEAD: no GET upstream. */
			len = strtoll(cr->up_length, NULL, 10);
			headers_init(&h);
			headers_add(&h, "Content-Type", 12, cr->up_ctype,
			    strlen(cr->up_ctype));
			headers_add(&h, "Docker-Content-Digest", 21,
			    cr->up_digest, strlen(cr->up_digest));
			snprintf(etag, sizeof(etag), "\"%s\"", cr->up_digest);
			headers_add(&h, "ETag", 4, etag, strlen(etag));
			req_send_head(req, 200, &h, RESP_NONE, len > 0 ? len :
			    -1);
			headers_clear(&h);
			req_end_response(req);
			return;
		}
		if (req->msg->method == HTTP_HEAD) {
			cr_passthrough(cr);
			return;
		}
		snprintf(cr->digest, sizeof(cr->digest), "%s", cr->up_digest);
		if ((f = cache_fill_find(cr->cache, CACHE_MANIFEST, req->up,
		    cr->up_digest)) != NULL)
			req->cache_status = "coalesced";
		else if ((f = cache_fill_new(req, CACHE_MANIFEST,
		    cr->up_digest, &cr->fwd)) == NULL) {
			cr_passthrough(cr);	/* over a fill cap */
			return;
		}
		cache_fill_join(f, cr);
		return;
	}
	if (st == 404) {
		cache_tag_put_unknown(cr->cache, req->up, req->upname,
		    req->route.ref, cr->accept,
		    req->conf->cache->negative_ttl_ms);
		req->cache_status = "miss";
		req_fail(req, ERR_MANIFEST_UNKNOWN, NULL);
		return;
	}
	if (st == 429 || st >= 500) {
		snprintf(detail, sizeof(detail), "upstream %s answered %d",
		    req->up->name, st);
		cr_tag_unreachable(cr, st == 429 ? ERR_TOO_MANY_REQUESTS :
		    ERR_UPSTREAM, detail);
		return;
	}
	cr_passthrough(cr);	/* 401, 403, no digest, ...: as is */
}

static int
tag_head(void *arg, struct hframe_msg *rm)
{
	struct cache_reader	*cr = arg;
	const char		*v;

	cr->up_status = rm->status;
	if ((v = headers_get(&rm->hdrs, "Docker-Content-Digest")) != NULL)
		snprintf(cr->up_digest, sizeof(cr->up_digest), "%s", v);
	if ((v = headers_get(&rm->hdrs, "Content-Type")) != NULL)
		snprintf(cr->up_ctype, sizeof(cr->up_ctype), "%s", v);
	if ((v = headers_get(&rm->hdrs, "Content-Length")) != NULL)
		snprintf(cr->up_length, sizeof(cr->up_length), "%s", v);
	if ((v = headers_get(&rm->hdrs, "Retry-After")) != NULL)
		snprintf(cr->retry_after, sizeof(cr->retry_after), "%s", v);
	return (0);
}

static int
tag_body(void *arg, struct evbuffer *in, size_t n)
{
	evbuffer_drain(in, n);
	return (0);
}

static int
tag_body_data(void *arg, const char *data, size_t n)
{
	return (0);
}

static void
tag_done(void *arg)
{
	struct cache_reader	*cr = arg;

	proxy_free(cr->px);
	cr->px = NULL;
	cr_tag_decide(cr);
}

static void
tag_fail(void *arg, enum pc_err err, const char *detail)
{
	struct cache_reader	*cr = arg;

	proxy_free(cr->px);
	cr->px = NULL;
	cr_tag_unreachable(cr, err, detail);
}

static const struct proxy_ops tag_ops = {
	tag_head,
	tag_body,
	tag_body_data,
	tag_done,
	tag_fail
};

/* --- confirm: does the upstream hold the digest in this repository? --- */

/*
 * HEAD the digest in the request's repository (cache_confirm.c, shared
 * with the readers that want the same meanwhile); the answer decides
 * (cache_reader_confirmed).  size is the length a blob must have, 0 when
 * it is not known yet.
 */
static void
cr_confirm(struct cache_reader *cr, uint64_t size)
{
	struct req	*req = cr->req;

	cr->confirm_size = size;
	if (cache_confirm_join(cr) == -1) {
		log_info("%llu.%u cache confirm_refused digest=%s "
		    "reason=cache.max_confirms", (unsigned long long)
		    req->c->id, req->seq, cr->digest);
		req->cache_status = "miss";
		cr_passthrough(cr);	/* the upstream answers for itself */
	}
	/* Else told, perhaps already: cr may be retired. */
}

/* The confirming HEAD answered. */
void
cache_reader_confirmed(struct cache_reader *cr,
    const struct cache_confirm_answer *a)
{
	struct req		*req = cr->req;
	char			 detail[128];
	unsigned long long	 len;
	char			*ep;
	int			 same;

	same = a->digest[0] == '\0' || strcmp(a->digest, cr->digest) == 0;
	if (same && cr->confirm_size > 0 && a->length[0] != '\0') {
		len = strtoull(a->length, &ep, 10);
		same = *ep == '\0' && len == cr->confirm_size;
	}
	if (a->status == 200 && same) {
		/* A link only on top of bytes this upstream sent (else the
		 * reader joins its fill, which must verify them). */
		if (cache_link_upstream_has(cr->cache, req->up, cr->kind,
		    cr->digest))
			cache_link_put(cr->cache, req->up, req->upname,
			    cr->kind, cr->digest);
		cr->confirmed = 1;
		log_info("%llu.%u cache confirmed digest=%s name=%s",
		    (unsigned long long)req->c->id, req->seq, cr->digest,
		    req->upname);
		cr_by_digest(cr, cr->digest);
		return;
	}
	if (a->status == 404) {
		log_info("%llu.%u cache confirm_unknown digest=%s name=%s",
		    (unsigned long long)req->c->id, req->seq, cr->digest,
		    req->upname);
		req->cache_status = "miss";
		req_fail(req, cr->kind == CACHE_BLOB ? ERR_BLOB_UNKNOWN :
		    ERR_MANIFEST_UNKNOWN, NULL);
		return;
	}
	if (a->status == 429) {
		cr_fail_429(cr, a->retry_after, "upstream rate limit");
		return;
	}
	if (a->status >= 500) {
		snprintf(detail, sizeof(detail), "upstream %s answered %d",
		    req->up->name, a->status);
		req_fail(req, ERR_UPSTREAM, detail);
		return;
	}
	if (a->status == 200)
		log_warn("%llu.%u cache confirm_mismatch digest=%s name=%s "
		    "up_digest=%.80s length=%.30s", (unsigned long long)
		    req->c->id, req->seq, cr->digest, req->upname, a->digest,
		    a->length);
	req->cache_status = "miss";
	cr_passthrough(cr);	/* 401, 403, another digest: as is */
}

/* Unreachable, a timeout, a broken answer: fail closed. */
void
cache_reader_confirm_failed(struct cache_reader *cr, enum pc_err err,
    const char *detail)
{
	req_fail(cr->req, err, detail);
}
