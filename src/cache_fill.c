/*
 * cache_fill.c: one upstream transfer of a blob or manifest into the
 * cache, shared by every client that wants the digest meanwhile.
 *
 * A fill is a proxy request without a client (proxy_fetch_new), so the
 * upstream pool, tokens and redirects are proxy.c's.  Body bytes go to a
 * temp file under tmp/ as they arrive, one writev(2) per upstream read
 * (its blocks allocated at the head when the length is known), and the
 * same buffer chunks then go to the shared digest threads, which hash
 * them from memory (struct fill_pool, cache_digest.c); readers
 * (cache_serve.c) follow the file, sending from it with file segments.
 * The upstream is read as fast as the disk and the digest threads take
 * it: slow readers never hold the fill back, and the memory a fill uses
 * is bounded by the watermark (struct fill_hash, cache_digest.c),
 * whatever the blob's size.
 *
 * A fill is keyed by (upstream, kind, digest): requests through another
 * upstream never wait on this one.  Readers of another repository of the
 * same upstream join it only once the upstream confirmed that repository
 * holds the digest (cache_serve.c, cache_links.c); when it fails before
 * their head, they fetch on their own instead of inheriting its error
 * (cache_reader_fill_failed).  A fill that publishes links the entry to
 * the repository it was fetched through.
 *
 * At the end the length is checked against Content-Length and the digest
 * against the one asked for; only then is the file fsync'd and renamed
 * into place.  Readers never get the last byte of a body before that, so
 * a client can never hold a complete, wrong body: on failure every reader
 * that has a head sees its connection end, the others get an error, the
 * temp file is removed, and nothing is published.  A Range is answered
 * only from the verified file.
 *
 * Bounds: at most cache.max_fills fills run, and cache.max_fills_per_client
 * started by one client address; beyond that a miss is passed through,
 * uncached.  At the head, a fill is admitted only when its Content-Length
 * is at most cache.fill_max_fraction of max_bytes and fits under
 * max_bytes next to the entries being read and the lengths of the other
 * fills (cache->reserved); else its readers are passed through.  Published
 * entries are evicted only for the bytes actually written (cache.c).
 *
 * When the last reader leaves, the fill is cancelled (transfer closed,
 * temp file removed) unless at least cache.fill_finish_fraction of its
 * Content-Length is on disk: then it goes on to the end and publishes,
 * since the transfer is almost paid for and clients that gave up usually
 * retry at once.  A client that asks and leaves after the head therefore
 * costs a connection for a moment, not a whole transfer and its disk.  A
 * fill that completes is still bounded by the upstream response timeout,
 * and its length counts against the cache's cap while it runs.
 */
#include <sys/stat.h>
#include <sys/uio.h>

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <jansson.h>

#include "cache.h"

#define FILL_ERRBODY_MAX	16384
#define FILL_SYNC_STEP		(8 * 1024 * 1024)
#define FILL_IOV		64
#define FILL_PREALLOC_MIN	(1024 * 1024)

static void	fill_fail(struct cache_fill *, enum pc_err, const char *);
static void	fill_publish(struct cache_fill *);
static const struct proxy_ops fill_ops;

/*
 * The same upstream: the same configured one, or its namesake in a
 * reloaded configuration when it points at the same place.
 */
static int
fill_same_upstream(const struct config_upstream *a,
    const struct config_upstream *b)
{
	return (a == b || (strcmp(a->name, b->name) == 0 &&
	    strcmp(a->url, b->url) == 0));
}

/*
 * The fill running for (upstream, kind, digest), or NULL.  Never one of
 * another upstream: a stalling or lying upstream must not hold up, or
 * answer for, a healthy one.
 */
struct cache_fill *
cache_fill_find(struct cache *c, enum cache_kind kind,
    const struct config_upstream *up, const char *digest)
{
	struct cache_fill	*f;

	TAILQ_FOREACH(f, &c->fills, entry)
		if (f->kind == kind && strcmp(f->digest, digest) == 0 &&
		    fill_same_upstream(f->up, up))
			return (f);
	return (NULL);
}

/* Off the list of running fills: no reader joins it any more. */
static void
fill_unlist(struct cache_fill *f)
{
	if (!f->listed)
		return;
	TAILQ_REMOVE(&f->cache->fills, f, entry);
	f->listed = 0;
	f->cache->nfills--;
}

/* Its bytes no longer count as filling (published, or going away). */
static void
fill_unaccount(struct cache_fill *f)
{
	f->cache->filling -= f->acct;
	f->cache->reserved -= f->reserve;
	f->acct = f->reserve = 0;
}

static void
fill_free(struct cache_fill *f)
{
	struct cache	*c = f->cache;

	fill_unlist(f);
	cache_peer_unlock(c, f->peer_fd, f->kind, f->digest);
	f->peer_fd = -1;
	if (f->px != NULL)
		proxy_free(f->px);
	fill_hash_free(f->hash);	/* it has its own fd */
	if (f->fd != -1) {
		close(f->fd);
		unlink(f->tmp);
	}
	fill_unaccount(f);
	cache_evict_soon(c);
	headers_clear(&f->fwd);
	if (f->errbody != NULL)
		evbuffer_free(f->errbody);
	if (f->ev_fail != NULL)
		event_free(f->ev_fail);
	config_unref(f->conf);
	free(f);
}

/*
 * Whether a fill left with no reader goes on: only when it is nearly
 * done (cache.fill_finish_fraction of its Content-Length on disk).
 */
static int
fill_nearly_done(const struct cache_fill *f)
{
	double	frac = f->cache->fill_finish_fraction;

	if (frac <= 0.0)
		return (1);
	if (!f->got_head || !f->have_length)
		return (0);
	return ((double)f->written >= frac * (double)f->expect);
}

/* No reader left and far from done: stop the transfer, keep nothing. */
static void
fill_cancel(struct cache_fill *f)
{
	log_info("- cache fill_cancelled %s digest=%s bytes=%llu of=%lld "
	    "reason=\"no reader left\"", f->logid, f->digest,
	    (unsigned long long)f->written,
	    f->have_length ? (long long)f->expect : -1LL);
	fill_free(f);
}

/*
 * Not cached after all (too large, no room, or over a cap found late):
 * the readers, none of which has a head yet, go to the upstream on their
 * own, and the fill ends.
 */
static void
fill_decline(struct cache_fill *f, const char *why)
{
	struct cache_reader	*cr;

	log_info("- cache fill_declined %s digest=%s reason=\"%s\"",
	    f->logid, f->digest, why);
	fill_unlist(f);
	if (f->px != NULL) {
		proxy_free(f->px);
		f->px = NULL;
	}
	while ((cr = TAILQ_FIRST(&f->readers)) != NULL) {
		cache_fill_leave(f, cr);
		cache_reader_fill_declined(cr);
	}
	fill_free(f);
}

static void
fill_event_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct cache_fill	*f = arg;

	if (!f->started) {
		f->started = 1;
		if (TAILQ_EMPTY(&f->readers)) {
			fill_cancel(f);
			return;
		}
		proxy_fetch_start(f->px);	/* may fail: fill_fail_later */
		return;
	}
	if (f->fail_err != ERR_NONE) {
		if (f->declined)
			fill_decline(f, f->fail_detail);
		else
			fill_fail(f, f->fail_err, f->fail_detail);
		return;
	}
	if (f->cancel_check) {
		f->cancel_check = 0;
		if (TAILQ_EMPTY(&f->readers) && !fill_nearly_done(f))
			fill_cancel(f);
	}
}

/*
 * Start a fill of (kind, digest) from the request's upstream and
 * repository, sending the fields in fwd (copied).  The caller joins it
 * right after; the transfer starts on the next loop turn so that a
 * failure cannot run into the caller.  NULL when it cannot start.
 */
struct cache_fill *
cache_fill_new(struct req *req, enum cache_kind kind, const char *digest,
    const struct headers *fwd)
{
	struct cache		*c = req->c->ctx->cache;
	struct cache_fill	*f;
	const char		*hex;
	size_t			 i, mine = 0;

	/* Bounded: beyond the caps a miss goes to the upstream as is. */
	TAILQ_FOREACH(f, &c->fills, entry)
		if (strcmp(f->client, req->c->peer) == 0)
			mine++;
	if (c->nfills >= c->max_fills ||
	    mine >= c->max_fills_per_client) {
		log_info("%llu.%u cache fill_refused digest=%s reason=%s",
		    (unsigned long long)req->c->id, req->seq, digest,
		    c->nfills >= c->max_fills ? "cache.max_fills" :
		    "cache.max_fills_per_client");
		return (NULL);
	}
	if ((f = calloc(1, sizeof(*f))) == NULL)
		fatal("calloc");
	f->up = req->up;
	snprintf(f->upname, sizeof(f->upname), "%s", req->upname);
	snprintf(f->client, sizeof(f->client), "%s", req->c->peer);
	f->cache = c;
	f->conf = req->conf;
	config_ref(f->conf);
	f->kind = kind;
	f->alg = cache_digest_alg(digest, &hex);
	f->fd = -1;
	f->peer_fd = -1;
	f->start_ms = now_ms();
	snprintf(f->digest, sizeof(f->digest), "%s", digest);
	snprintf(f->logid, sizeof(f->logid), "fill%llu",
	    (unsigned long long)++c->seq);
	TAILQ_INIT(&f->readers);
	headers_init(&f->fwd);
	for (i = 0; fwd != NULL && i < fwd->n; i++)
		headers_add(&f->fwd, fwd->v[i].name, fwd->v[i].nlen,
		    fwd->v[i].value, fwd->v[i].vlen);
	f->ev_fail = event_new(c->ctx->base, -1, 0, fill_event_cb, f);
	TAILQ_INSERT_TAIL(&c->fills, f, entry);
	f->listed = 1;
	c->nfills++;
	f->px = proxy_fetch_new(c->ctx, f->conf, req->up, HTTP_GET,
	    req->upname, kind == CACHE_BLOB ? "blobs" : "manifests", digest,
	    &f->fwd, &fill_ops, f, f->logid);
	log_info("%llu.%u cache fill_start %s digest=%s upstream=%s "
	    "name=%s", (unsigned long long)req->c->id, req->seq, f->logid,
	    digest, req->up->name, req->upname);
	/* Deferred: proxy_fetch_start() may fail at once. */
	event_active(f->ev_fail, 0, 0);
	return (f);
}

/* Add a reader; it is told about the head, progress and the end. */
void
cache_fill_join(struct cache_fill *f, struct cache_reader *cr)
{
	cr->fill = f;
	TAILQ_INSERT_TAIL(&f->readers, cr, entry);
	if (f->got_head)
		cache_reader_has_head(cr);
}

/*
 * A reader leaves (its client went away or it is done).  When it was the
 * last, the fill is cancelled on the next turn unless a reader joined
 * meanwhile or it is nearly done (fill_nearly_done): a client that
 * leaves after the head must not leave a transfer running on its behalf.
 */
void
cache_fill_leave(struct cache_fill *f, struct cache_reader *cr)
{
	TAILQ_REMOVE(&f->readers, cr, entry);
	cr->fill = NULL;
	if (TAILQ_EMPTY(&f->readers) && f->listed && f->started) {
		f->cancel_check = 1;
		event_active(f->ev_fail, 0, 0);
	}
}

/*
 * Fail at the next turn, from a fresh stack rather than from inside
 * proxy.c's parser: the fill itself is freed at once when it fails.
 */
static void
fill_fail_later(struct cache_fill *f, enum pc_err err, const char *detail)
{
	if (f->fail_err != ERR_NONE)
		return;
	f->fail_err = err;
	snprintf(f->fail_detail, sizeof(f->fail_detail), "%s", detail);
	event_active(f->ev_fail, 0, 0);
}

/*
 * The fill is over without a published file: tell every reader, remove
 * the temp file, free the fill.
 */
static void
fill_fail(struct cache_fill *f, enum pc_err err, const char *detail)
{
	struct cache_reader	*cr;

	/* First off the list: readers that fetch again start their own. */
	fill_unlist(f);
	log_info("- cache fill_failed %s digest=%s status=%d bytes=%llu "
	    "readers=%s error=%s detail=\"%s\"", f->logid, f->digest,
	    f->up_status, (unsigned long long)f->written,
	    TAILQ_EMPTY(&f->readers) ? "none" : "some", errs_name(err),
	    detail);
	if (f->px != NULL) {
		proxy_free(f->px);
		f->px = NULL;
	}
	while ((cr = TAILQ_FIRST(&f->readers)) != NULL) {
		cache_fill_leave(f, cr);
		cache_reader_fill_failed(cr, f, err, detail);
	}
	fill_free(f);
}

/*
 * Append iov to the temp file, all of it or fail: one writev(2) per read
 * of the upstream, not one write per buffer chunk.  The iovecs are
 * consumed.
 */
static int
fill_writev(struct cache_fill *f, struct iovec *iov, int niov)
{
	ssize_t		 w;
	size_t		 l;

	while (niov > 0) {
		if (iov->iov_len == 0) {
			iov++;
			niov--;
			continue;
		}
		if ((w = writev(f->fd, iov, niov)) == -1) {
			if (errno == EINTR)
				continue;
			return (-1);
		}
		f->written += (uint64_t)w;
		f->acct += (uint64_t)w;
		f->cache->filling += (uint64_t)w;
		if (f->acct > f->reserve) {
			/* Past its Content-Length, or chunked. */
			f->cache->reserved += f->acct - f->reserve;
			f->reserve = f->acct;
		}
		while (w > 0) {
			l = (size_t)w < iov->iov_len ? (size_t)w : iov->iov_len;
			iov->iov_base = (char *)iov->iov_base + l;
			iov->iov_len -= l;
			w -= (ssize_t)l;
			if (iov->iov_len == 0) {
				iov++;
				niov--;
			}
		}
	}
#ifdef SYNC_FILE_RANGE_WRITE
	/* Start writeback as we go, so the final fsync is short. */
	if (f->written - f->synced >= FILL_SYNC_STEP) {
		(void)sync_file_range(f->fd, (off_t)(f->hdr_len + f->synced),
		    (off_t)(f->written - f->synced), SYNC_FILE_RANGE_WRITE);
		f->synced = f->written;
	}
#endif
	return (0);
}

/* Wake the readers that wait for bytes; any of them may finish. */
static void
fill_progress(struct cache_fill *f)
{
	struct cache_reader	*cr, *next;

	TAILQ_FOREACH_SAFE(cr, &f->readers, entry, next)
		if (cr->waiting)
			cache_reader_progress(cr);
	cache_evict_soon(f->cache);
}

static int
fill_head(void *arg, struct hframe_msg *rm)
{
	struct cache_fill	*f = arg;
	struct cache		*c = f->cache;
	struct cache_reader	*cr, *next;
	const char		*ct, *ra;
	char			 detail[256], line[512];
	size_t			 max, llen = 0;
	uint64_t		 need;

	f->up_status = rm->status;
	if (rm->status != 200) {
		/* Keep a bounded error body for the readers. */
		if ((ra = headers_get(&rm->hdrs, "Retry-After")) != NULL)
			snprintf(f->retry_after, sizeof(f->retry_after), "%s",
			    ra);
		if ((ct = headers_get(&rm->hdrs, "Content-Type")) != NULL &&
		    cache_valid_media_type(ct))
			snprintf(f->errtype, sizeof(f->errtype), "%s", ct);
		if ((f->errbody = evbuffer_new()) == NULL)
			fatal("evbuffer_new");
		return (0);
	}
	max = f->kind == CACHE_MANIFEST ? f->conf->manifest_bytes :
	    SIZE_MAX;
	if (rm->has_length && rm->length > max) {
		snprintf(detail, sizeof(detail), "upstream manifest of %llu "
		    "bytes is larger than limits.manifest_bytes",
		    (unsigned long long)rm->length);
		fill_fail(f, ERR_TOO_LARGE, detail);
		return (-1);
	}
	ct = headers_get(&rm->hdrs, "Content-Type");
	if (ct == NULL || !cache_valid_media_type(ct))
		ct = f->kind == CACHE_BLOB ? "application/octet-stream" : NULL;
	if (ct == NULL) {
		fill_fail(f, ERR_UPSTREAM_PROTO,
		    "upstream manifest without a valid Content-Type");
		return (-1);
	}
	snprintf(f->ctype, sizeof(f->ctype), "%s", ct);
	/* A manifest's type line names this upstream until its own
	 * mediaType is known (fill_own_type). */
	if (f->kind == CACHE_MANIFEST)
		llen = (size_t)snprintf(line, sizeof(line), "%s\t%s\n",
		    f->ctype, f->up->name);
	/*
	 * Admission: what the file will take must fit under max_bytes next
	 * to what cannot be evicted (entries being read, other fills' full
	 * lengths), and be at most fill_max_fraction of it; else the readers
	 * fetch it themselves, uncached.
	 */
	need = (rm->has_length ? rm->length : 0) + llen;
	if (need > c->fill_max_bytes) {
		snprintf(detail, sizeof(detail), "%llu bytes is more than "
		    "cache.fill_max_fraction of max_bytes",
		    (unsigned long long)need);
		fill_decline(f, detail);
		return (-1);
	}
	if (cache_pinned_bytes(c) + c->reserved + need > c->max_bytes) {
		fill_decline(f, "no room without evicting entries in use "
		    "or being filled");
		return (-1);
	}
	f->reserve = need;
	c->reserved += need;
	cache_evict_soon(c);
	if ((f->fd = cache_tmp_open(f->cache, f->tmp, sizeof(f->tmp))) == -1) {
		snprintf(detail, sizeof(detail), "cache: cannot create a "
		    "temp file: %s", strerror(errno));
		fill_fail(f, ERR_INTERNAL, detail);
		return (-1);
	}
	if (f->kind == CACHE_MANIFEST) {
		/* The type line; readers start after it. */
		f->hdr_len = llen;
		f->acct += f->hdr_len;
		f->cache->filling += f->hdr_len;
		if (write(f->fd, line, llen) != (ssize_t)llen) {
			fill_fail(f, ERR_INTERNAL, "cache: cannot write");
			return (-1);
		}
	}
	fill_hash_start(f);
#ifdef FALLOC_FL_KEEP_SIZE
	/*
	 * Allocate the blocks at once: ext4's delayed allocation otherwise
	 * reserves and maps them one page at a time inside every write.
	 * Only a hint (not every file system can), and the size stays what
	 * is written, so a short body is still found short.
	 */
	if (rm->has_length && rm->length >= FILL_PREALLOC_MIN)
		(void)fallocate(f->fd, FALLOC_FL_KEEP_SIZE,
		    (off_t)f->hdr_len, (off_t)rm->length);
#endif
	f->have_length = rm->has_length;
	f->expect = rm->length;
	f->got_head = 1;
	log_debug("- cache fill_head %s length=%lld", f->logid,
	    rm->has_length ? (long long)rm->length : -1LL);
	TAILQ_FOREACH_SAFE(cr, &f->readers, entry, next)
		cache_reader_has_head(cr);
	return (0);
}

/*
 * A body without Content-Length grew past what admission would have
 * taken: declined on the next turn (its readers have no head yet).
 */
static int
fill_over(struct cache_fill *f)
{
	struct cache	*c = f->cache;

	if (f->have_length)
		return (0);
	/* Entries being read are fewer bytes than all entries. */
	if (f->acct <= c->fill_max_bytes && (cache_used(c) + c->reserved <=
	    c->max_bytes || cache_pinned_bytes(c) + c->reserved <=
	    c->max_bytes))
		return (0);
	fill_fail_later(f, ERR_UPSTREAM, f->acct > c->fill_max_bytes ?
	    "chunked body past cache.fill_max_fraction of max_bytes" :
	    "chunked body past the room left");
	f->declined = 1;
	return (1);
}

/*
 * n bytes of the body at the front of in: written to the temp file (one
 * writev per FILL_IOV chunks), then the chunks themselves move to the
 * digest threads.  1 pauses the upstream read while the hash queue is
 * full.
 */
static int
fill_body(void *arg, struct evbuffer *in, size_t n)
{
	struct cache_fill	*f = arg;
	struct evbuffer_iovec	 v[FILL_IOV];
	struct evbuffer_ptr	 pos;
	size_t			 left = n, take, done = 0;
	int			 i, nv, over;

	if (f->fail_err != ERR_NONE) {
		evbuffer_drain(in, n);
		return (1);
	}
	if (f->errbody != NULL) {
		take = FILL_ERRBODY_MAX - evbuffer_get_length(f->errbody);
		if (take > n)
			take = n;
		evbuffer_remove_buffer(in, f->errbody, take);
		evbuffer_drain(in, n - take);
		return (0);
	}
	while (left > 0) {
		/* Chunks after the first `done` bytes: they stay in `in`
		 * until the digest threads get them all at once. */
		if (evbuffer_ptr_set(in, &pos, done, EVBUFFER_PTR_SET) == -1)
			break;
		nv = evbuffer_peek(in, left, &pos, v, FILL_IOV);
		if (nv <= 0)
			break;
		if (nv > FILL_IOV)
			nv = FILL_IOV;
		take = 0;
		for (i = 0; i < nv; i++) {
			if (v[i].iov_len > left - take)
				v[i].iov_len = left - take;
			take += v[i].iov_len;
		}
		/* evbuffer_iovec is laid out as struct iovec on Unix. */
		if (fill_writev(f, (struct iovec *)v, nv) == -1) {
			fill_fail_later(f, ERR_INTERNAL,
			    "cache: cannot write the temp file");
			evbuffer_drain(in, n);
			return (1);
		}
		done += take;
		left -= take;
	}
	over = fill_hash_feed(f->hash, in, NULL, done, 0);
	if (done < n)
		evbuffer_drain(in, n - done);
	if (fill_over(f))
		return (1);	/* all n moved; declined next turn */
	fill_progress(f);
	return (over);
}

static int
fill_body_data(void *arg, const char *data, size_t n)
{
	struct cache_fill	*f = arg;
	struct iovec		 iov;
	size_t			 take;
	int			 over;

	if (f->fail_err != ERR_NONE)
		return (1);
	if (f->errbody != NULL) {
		take = FILL_ERRBODY_MAX - evbuffer_get_length(f->errbody);
		evbuffer_add(f->errbody, data, take < n ? take : n);
		return (0);
	}
	if ((f->kind == CACHE_MANIFEST && f->written + n >
	    f->conf->manifest_bytes)) {
		fill_fail_later(f, ERR_TOO_LARGE, "upstream manifest "
		    "is larger than limits.manifest_bytes");
		return (1);
	}
	iov.iov_base = (void *)data;
	iov.iov_len = n;
	if (fill_writev(f, &iov, 1) == -1) {
		fill_fail_later(f, ERR_INTERNAL,
		    "cache: cannot write the temp file");
		return (1);
	}
	/* Decoded bytes live in proxy.c's buffer: copied. */
	over = fill_hash_feed(f->hash, NULL, data, n, 0);
	if (fill_over(f))
		return (1);
	fill_progress(f);
	return (over);
}

/* fsync the directory so the rename itself survives a crash. */
static void
fill_sync_dir(const char *path)
{
	char	dir[PATH_MAX], *slash;
	int	fd;

	snprintf(dir, sizeof(dir), "%s", path);
	if ((slash = strrchr(dir, '/')) == NULL)
		return;
	*slash = '\0';
	if ((fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1)
		return;
	(void)fsync(fd);
	close(fd);
}

static int
fill_mkparent(const char *path)
{
	char	dir[PATH_MAX], *slash;

	snprintf(dir, sizeof(dir), "%s", path);
	if ((slash = strrchr(dir, '/')) == NULL)
		return (-1);
	*slash = '\0';
	if (mkdir(dir, 0750) == -1 && errno != EEXIST)
		return (-1);
	return (0);
}

/*
 * The upstream's answer is complete.  Check the length now; the digest
 * when the digest threads have caught up (fill_hashed).
 */
static void
fill_done(void *arg)
{
	struct cache_fill	*f = arg;
	char			 detail[300];

	if (f->fail_err != ERR_NONE)
		return;		/* failing on the next turn */
	proxy_free(f->px);
	f->px = NULL;
	if (f->errbody != NULL) {
		snprintf(detail, sizeof(detail), "upstream %s answered %d",
		    f->up->name, f->up_status);
		fill_fail(f, f->up_status == 429 ? ERR_TOO_MANY_REQUESTS :
		    ERR_UPSTREAM, detail);
		return;
	}
	if (f->have_length && f->written != f->expect) {
		snprintf(detail, sizeof(detail), "upstream sent %llu of %llu "
		    "bytes", (unsigned long long)f->written,
		    (unsigned long long)f->expect);
		fill_fail(f, ERR_UPSTREAM_PROTO, detail);
		return;
	}
	(void)fill_hash_feed(f->hash, NULL, NULL, 0, 1);
}

/*
 * The digest threads have hashed the whole body: compare the digest, and
 * publish when it matches.
 */
void
fill_hashed(struct cache_fill *f)
{
	char			 got[CACHE_DIGEST_MAX], detail[300];
	int			 err;

	err = fill_hash_digest(f->hash, f->alg, got, sizeof(got));
	if (err != 0) {
		snprintf(detail, sizeof(detail), "cache: cannot compute the "
		    "digest: %s", strerror(err));
		fill_fail(f, ERR_INTERNAL, detail);
		return;
	}
	if (strcmp(got, f->digest) != 0) {
		snprintf(detail, sizeof(detail), "upstream content does not "
		    "match its digest (got %.24s...)", got);
		fill_fail(f, ERR_UPSTREAM_PROTO, detail);
		return;
	}
	fill_publish(f);
}

/*
 * A verified manifest whose own mediaType field names a valid type is of
 * that type for every upstream, whatever Content-Type this one sent: its
 * file is written again with that type alone on its type line (the bytes
 * are small, at most limits.manifest_bytes).  Without one, or on any
 * error, the line keeps naming this upstream, whose type it is
 * (cache_serve.c serves it only through this upstream).  Readers that
 * follow the old file keep it open: its bytes are the same.
 */
static void
fill_own_type(struct cache_fill *f)
{
	json_t		*root, *mt;
	json_error_t	 jerr;
	const char	*type = NULL;
	char		*buf, tmp[PATH_MAX];
	size_t		 got = 0, tlen;
	ssize_t		 n;
	int		 fd;

	if ((buf = malloc(f->written + 1)) == NULL)
		fatal("malloc");
	while (got < f->written) {
		n = pread(f->fd, buf + got, f->written - got,
		    (off_t)(f->hdr_len + got));
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	root = got == f->written ? json_loadb(buf, got,
	    JSON_REJECT_DUPLICATES, &jerr) : NULL;
	if ((mt = json_object_get(root, "mediaType")) != NULL &&
	    json_is_string(mt) && cache_valid_media_type(json_string_value(mt)))
		type = json_string_value(mt);
	if (type == NULL || (tlen = strlen(type)) >= sizeof(f->ctype) ||
	    (fd = cache_tmp_open(f->cache, tmp, sizeof(tmp))) == -1)
		goto done;
	if (write(fd, type, tlen) != (ssize_t)tlen ||
	    write(fd, "\n", 1) != 1 ||
	    write(fd, buf, got) != (ssize_t)got) {
		log_warn("- cache retype_failed %s: %s", f->logid,
		    strerror(errno));
		close(fd);
		unlink(tmp);
		goto done;
	}
	close(f->fd);
	unlink(f->tmp);
	f->fd = fd;
	snprintf(f->tmp, sizeof(f->tmp), "%s", tmp);
	f->hdr_len = tlen + 1;
done:
	json_decref(root);
	free(buf);
}

/*
 * fsync and rename the verified file into place; only then do readers
 * get their last bytes (cache_reader_filled).
 */
static void
fill_publish(struct cache_fill *f)
{
	struct cache_reader	*cr;
	struct cache_entry	*e;
	char			 path[PATH_MAX], detail[300];

	if (f->kind == CACHE_MANIFEST)
		fill_own_type(f);
	if (cache_path(f->cache, f->kind, f->digest, path, sizeof(path)) ==
	    -1 || fill_mkparent(path) == -1 || fdatasync(f->fd) == -1 ||
	    rename(f->tmp, path) == -1) {
		snprintf(detail, sizeof(detail), "cache: cannot publish: %s",
		    strerror(errno));
		fill_fail(f, ERR_INTERNAL, detail);
		return;
	}
	fill_sync_dir(path);
	fill_unlist(f);
	fill_hash_free(f->hash);
	f->hash = NULL;
	close(f->fd);
	f->fd = -1;
	fill_unaccount(f);
	e = cache_insert(f->cache, f->kind, f->digest, f->written + f->hdr_len);
	cache_shared_add((int64_t)(f->written + f->hdr_len));	/* workers */
	/* Fetched through this repository: it holds the digest. */
	cache_link_put(f->cache, f->up, f->upname, f->kind, f->digest);
	log_info("- cache fill_done %s digest=%s bytes=%llu ms=%llu",
	    f->logid, f->digest, (unsigned long long)f->written,
	    (unsigned long long)(now_ms() - f->start_ms));
	/* The readers carry on from the published entry. */
	while ((cr = TAILQ_FIRST(&f->readers)) != NULL) {
		cache_fill_leave(f, cr);
		cache_reader_filled(cr, e);
	}
	fill_free(f);
}

static void
fill_proxy_fail(void *arg, enum pc_err err, const char *detail)
{
	struct cache_fill	*f = arg;

	/* The readers are told on the next turn, outside proxy.c. */
	fill_fail_later(f, err, detail);
}

static const struct proxy_ops fill_ops = {
	fill_head,
	fill_body,
	fill_body_data,
	fill_done,
	fill_proxy_fail
};

/* Shutdown: stop every fill; readers were retired with their requests. */
void
cache_fill_free_all(struct cache *c)
{
	struct cache_fill	*f;

	while ((f = TAILQ_FIRST(&c->fills)) != NULL) {
		while (!TAILQ_EMPTY(&f->readers))
			cache_fill_leave(f, TAILQ_FIRST(&f->readers));
		fill_free(f);
	}
}
