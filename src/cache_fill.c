/*
 * cache_fill.c: one upstream transfer of a blob or manifest into the
 * cache, shared by every client that wants the digest meanwhile.
 *
 * A fill is a proxy request without a client (proxy_fetch_new), so the
 * upstream pool, tokens and redirects are proxy.c's.  Body bytes go to a
 * temp file under tmp/ as they arrive, one writev(2) per upstream read; a
 * thread of the fill's reads them back through an incremental EVP digest
 * (struct fill_hash); readers (cache_serve.c) follow the file, sending
 * from it with file segments.  The upstream is read as fast as the disk
 * takes it: slow readers never hold the fill back, and the memory a fill
 * uses is the upstream bufferevent's read watermark and the thread's
 * buffer, whatever the blob's size.
 *
 * At the end the length is checked against Content-Length and the digest
 * against the one asked for; only then is the file fsync'd and renamed
 * into place.  Readers never get the last byte of a body before that, so
 * a client can never hold a complete, wrong body: on failure every reader
 * that has a head sees its connection end, the others get an error, the
 * temp file is removed, and nothing is published.
 *
 * When the last reader leaves, the fill goes on to the end and publishes:
 * the upstream transfer is already paid for (and counted against pull
 * limits); clients that gave up usually retry at once; and stopping would
 * let a client's disconnect cancel the work of readers that joined after
 * it.  It is still bounded by the upstream response timeout, and its bytes
 * count against the cache's cap while it runs.
 */
#include <sys/stat.h>
#include <sys/uio.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "cache.h"

#define FILL_ERRBODY_MAX	16384
#define FILL_SYNC_STEP		(8 * 1024 * 1024)
#define FILL_HASH_BUF		(256 * 1024)	/* stays in the L2 cache */
#define FILL_IOV		64

/*
 * The digest of a fill is computed by a thread of its own, which reads
 * the temp file back (from the page cache) a little behind the loop's
 * writes: SHA-256 is the largest single cost of a fill (about a third of
 * its CPU), and on the loop it would slow every transfer the gateway
 * runs.  The thread touches nothing but this struct; its memory is the
 * fixed buffer, whatever the blob's size.  The loop publishes its
 * progress (avail) without the lock and wakes the thread only when it
 * sleeps (idle; both sequentially consistent, so one of the two always
 * sees the other's store); eof, stop and the result go under mtx.  It
 * ends when told that no more bytes come (eof) or to stop, and then says
 * so through the pipe, which the loop watches.  What is verified is what
 * readers are sent: the file's bytes.
 */
struct fill_hash {
	pthread_t		 thr;
	pthread_mutex_t		 mtx;
	pthread_cond_t		 cv;
	EVP_MD_CTX		*md;
	int			 fd;		/* the fill's; pread only */
	off_t			 base;		/* body offset in the file */
	_Atomic uint64_t	 avail;		/* body bytes written */
	uint64_t		 hashed;	/* the thread's own */
	atomic_int		 idle;		/* waiting on cv */
	int			 eof;		/* avail is final */
	int			 stop;
	int			 error;		/* errno of a failed read */
	int			 finished;
	int			 joined;
	int			 pipe[2];	/* thread -> loop */
	struct event		*ev;
	unsigned char		*buf;
};

static void	fill_fail(struct cache_fill *, enum pc_err, const char *);
static void	fill_hashed(evutil_socket_t, short, void *);
static void	fill_publish(struct cache_fill *);
static const struct proxy_ops fill_ops;

static void *
fill_hash_main(void *arg)
{
	struct fill_hash	*h = arg;
	uint64_t		 avail, want;
	ssize_t			 n;
	int			 err = 0, stop = 0;

	for (;;) {
		if ((avail = atomic_load(&h->avail)) == h->hashed) {
			pthread_mutex_lock(&h->mtx);
			atomic_store(&h->idle, 1);
			while (!h->stop && !h->eof &&
			    atomic_load(&h->avail) == h->hashed)
				pthread_cond_wait(&h->cv, &h->mtx);
			atomic_store(&h->idle, 0);
			stop = h->stop;
			pthread_mutex_unlock(&h->mtx);
			avail = atomic_load(&h->avail);
			if (stop || avail == h->hashed)
				break;	/* stopped, or eof and all hashed */
		}
		want = avail - h->hashed;
		if (want > FILL_HASH_BUF)
			want = FILL_HASH_BUF;
		while ((n = pread(h->fd, h->buf, want, h->base +
		    (off_t)h->hashed)) == -1 && errno == EINTR)
			;
		if (n <= 0) {
			err = n == 0 ? EIO : errno;
			break;
		}
		if (EVP_DigestUpdate(h->md, h->buf, (size_t)n) != 1) {
			err = EINVAL;
			break;
		}
		h->hashed += (uint64_t)n;
	}
	pthread_mutex_lock(&h->mtx);
	h->error = err;
	h->finished = 1;
	pthread_mutex_unlock(&h->mtx);
	while (write(h->pipe[1], "", 1) == -1 && errno == EINTR)
		;
	return (NULL);
}

/* Start the fill's hash thread on its temp file.  Returns 0 or -1. */
static int
fill_hash_start(struct cache_fill *f)
{
	struct fill_hash	*h;
	sigset_t		 all, old;
	int			 rv;

	if ((h = calloc(1, sizeof(*h))) == NULL ||
	    (h->buf = malloc(FILL_HASH_BUF)) == NULL)
		fatal("calloc");
	h->fd = f->fd;
	h->base = (off_t)f->hdr_len;
	h->pipe[0] = h->pipe[1] = -1;
	if ((h->md = EVP_MD_CTX_new()) == NULL ||
	    EVP_DigestInit_ex(h->md, f->alg == CACHE_ALG_SHA512 ?
	    EVP_sha512() : EVP_sha256(), NULL) != 1)
		fatalx("EVP digest init failed");
	if (pipe2(h->pipe, O_CLOEXEC | O_NONBLOCK) == -1)
		goto fail;
	h->ev = event_new(f->cache->ctx->base, h->pipe[0], EV_READ,
	    fill_hashed, f);
	if (h->ev == NULL || event_add(h->ev, NULL) == -1)
		goto fail;
	pthread_mutex_init(&h->mtx, NULL);
	pthread_cond_init(&h->cv, NULL);
	/* Signals stay with the loop's thread. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rv = pthread_create(&h->thr, NULL, fill_hash_main, h);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rv != 0) {
		pthread_cond_destroy(&h->cv);
		pthread_mutex_destroy(&h->mtx);
		errno = rv;
		goto fail;
	}
	f->hash = h;
	return (0);
fail:
	rv = errno;
	if (h->ev != NULL)
		event_free(h->ev);
	if (h->pipe[0] != -1) {
		close(h->pipe[0]);
		close(h->pipe[1]);
	}
	EVP_MD_CTX_free(h->md);
	free(h->buf);
	free(h);
	errno = rv;
	return (-1);
}

/* Tell the thread about bytes written (eof: and that no more come). */
static void
fill_hash_feed(struct fill_hash *h, uint64_t written, int eof)
{
	atomic_store(&h->avail, written);
	/* A wake-up only when it sleeps: not one per read. */
	if (!eof && !atomic_load(&h->idle))
		return;
	pthread_mutex_lock(&h->mtx);
	h->eof |= eof;
	pthread_cond_signal(&h->cv);
	pthread_mutex_unlock(&h->mtx);
}

/* Stop the thread, wait for it, free it.  NULL is fine. */
static void
fill_hash_free(struct fill_hash *h)
{
	if (h == NULL)
		return;
	pthread_mutex_lock(&h->mtx);
	h->stop = 1;
	pthread_cond_signal(&h->cv);
	pthread_mutex_unlock(&h->mtx);
	/* At most one read of FILL_HASH_BUF away. */
	if (!h->joined)
		pthread_join(h->thr, NULL);
	pthread_cond_destroy(&h->cv);
	pthread_mutex_destroy(&h->mtx);
	event_free(h->ev);
	close(h->pipe[0]);
	close(h->pipe[1]);
	EVP_MD_CTX_free(h->md);
	free(h->buf);
	free(h);
}

/* The fill running for (kind, digest), or NULL. */
struct cache_fill *
cache_fill_find(struct cache *c, enum cache_kind kind, const char *digest)
{
	struct cache_fill	*f;

	TAILQ_FOREACH(f, &c->fills, entry)
		if (f->kind == kind && strcmp(f->digest, digest) == 0)
			return (f);
	return (NULL);
}

static void
fill_free(struct cache_fill *f)
{
	struct cache	*c = f->cache;

	TAILQ_REMOVE(&c->fills, f, entry);
	if (f->px != NULL)
		proxy_free(f->px);
	fill_hash_free(f->hash);	/* before its fd is closed */
	if (f->fd != -1) {
		close(f->fd);
		unlink(f->tmp);
	}
	c->filling -= f->written + f->hdr_len;
	headers_clear(&f->fwd);
	if (f->errbody != NULL)
		evbuffer_free(f->errbody);
	if (f->ev_fail != NULL)
		event_free(f->ev_fail);
	config_unref(f->conf);
	free(f);
}

static void
fill_event_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct cache_fill	*f = arg;

	if (!f->started) {
		f->started = 1;
		proxy_fetch_start(f->px);	/* may fail: fill_fail_later */
		return;
	}
	fill_fail(f, f->fail_err, f->fail_detail);
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
	size_t			 i;

	if ((f = calloc(1, sizeof(*f))) == NULL)
		fatal("calloc");
	f->cache = c;
	f->conf = req->conf;
	config_ref(f->conf);
	f->kind = kind;
	f->alg = cache_digest_alg(digest, &hex);
	f->fd = -1;
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

/* A reader leaves (its client went away or it is done); the fill goes
 * on. */
void
cache_fill_leave(struct cache_fill *f, struct cache_reader *cr)
{
	TAILQ_REMOVE(&f->readers, cr, entry);
	cr->fill = NULL;
}

/* Fail at the next turn: used where the proxy must not be freed. */
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
		/* May free cr. */
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
		f->cache->filling += (uint64_t)w;
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

	if (f->hash != NULL)
		fill_hash_feed(f->hash, f->written, 0);
	TAILQ_FOREACH_SAFE(cr, &f->readers, entry, next)
		if (cr->waiting)
			cache_reader_progress(cr);
	cache_evict_soon(f->cache);
}

static int
fill_head(void *arg, struct hframe_msg *rm)
{
	struct cache_fill	*f = arg;
	struct cache_reader	*cr, *next;
	const char		*ct, *ra;
	char			 detail[256];
	size_t			 max;

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
		fill_fail(f, ERR_UPSTREAM_PROTO, detail);
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
	if ((f->fd = cache_tmp_open(f->cache, f->tmp, sizeof(f->tmp))) == -1) {
		snprintf(detail, sizeof(detail), "cache: cannot create a "
		    "temp file: %s", strerror(errno));
		fill_fail(f, ERR_INTERNAL, detail);
		return (-1);
	}
	if (f->kind == CACHE_MANIFEST) {
		/* The type line; readers start after it. */
		f->hdr_len = strlen(f->ctype) + 1;
		f->cache->filling += f->hdr_len;
		if (write(f->fd, f->ctype, f->hdr_len - 1) !=
		    (ssize_t)f->hdr_len - 1 || write(f->fd, "\n", 1) != 1) {
			fill_fail(f, ERR_INTERNAL, "cache: cannot write");
			return (-1);
		}
	}
	if (fill_hash_start(f) == -1) {
		snprintf(detail, sizeof(detail), "cache: cannot start the "
		    "digest thread: %s", strerror(errno));
		fill_fail(f, ERR_INTERNAL, detail);
		return (-1);
	}
	f->have_length = rm->has_length;
	f->expect = rm->length;
	f->got_head = 1;
	log_debug("- cache fill_head %s length=%lld", f->logid,
	    rm->has_length ? (long long)rm->length : -1LL);
	TAILQ_FOREACH_SAFE(cr, &f->readers, entry, next)
		cache_reader_has_head(cr);
	return (0);
}

static int
fill_body(void *arg, struct evbuffer *in, size_t n)
{
	struct cache_fill	*f = arg;
	struct evbuffer_iovec	 v[FILL_IOV];
	size_t			 left = n, take;
	int			 i, nv;

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
		nv = evbuffer_peek(in, left, NULL, v, FILL_IOV);
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
			evbuffer_drain(in, left);
			return (1);
		}
		evbuffer_drain(in, take);
		left -= take;
	}
	fill_progress(f);
	return (0);
}

static int
fill_body_data(void *arg, const char *data, size_t n)
{
	struct cache_fill	*f = arg;
	struct iovec		 iov;
	size_t			 take;

	if (f->fail_err != ERR_NONE)
		return (1);
	if (f->errbody != NULL) {
		take = FILL_ERRBODY_MAX - evbuffer_get_length(f->errbody);
		evbuffer_add(f->errbody, data, take < n ? take : n);
		return (0);
	}
	if ((f->kind == CACHE_MANIFEST && f->written + n >
	    f->conf->manifest_bytes)) {
		fill_fail_later(f, ERR_UPSTREAM_PROTO, "upstream manifest "
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
	fill_progress(f);
	return (0);
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
 * when the hash thread has caught up (fill_hashed).
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
		snprintf(detail, sizeof(detail), "upstream answered %d",
		    f->up_status);
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
	fill_hash_feed(f->hash, f->written, 1);
}

/*
 * The hash thread has read the whole file: compare the digest, and
 * publish when it matches.
 */
static void
fill_hashed(evutil_socket_t fd, short ev, void *arg)
{
	struct cache_fill	*f = arg;
	struct fill_hash	*h = f->hash;
	unsigned char		 md[EVP_MAX_MD_SIZE];
	unsigned int		 mdlen = 0, i;
	char			 got[CACHE_DIGEST_MAX], detail[300];
	int			 n, err;

	pthread_mutex_lock(&h->mtx);
	n = h->finished;
	err = h->error;
	pthread_mutex_unlock(&h->mtx);
	if (!n) {
		event_add(h->ev, NULL);	/* not from the thread's end */
		return;
	}
	pthread_join(h->thr, NULL);
	h->joined = 1;
	if (err != 0) {
		snprintf(detail, sizeof(detail), "cache: cannot read the temp "
		    "file back: %s", strerror(err));
		fill_fail(f, ERR_INTERNAL, detail);
		return;
	}
	if (EVP_DigestFinal_ex(h->md, md, &mdlen) != 1)
		fatalx("EVP_DigestFinal_ex failed");
	n = snprintf(got, sizeof(got), "%s:", cache_alg_name(f->alg));
	for (i = 0; i < mdlen; i++)
		n += snprintf(got + n, sizeof(got) - n, "%02x", md[i]);
	if (strcmp(got, f->digest) != 0) {
		snprintf(detail, sizeof(detail), "upstream content does not "
		    "match its digest (got %.24s...)", got);
		fill_fail(f, ERR_UPSTREAM_PROTO, detail);
		return;
	}
	fill_publish(f);
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

	if (cache_path(f->cache, f->kind, f->digest, path, sizeof(path)) ==
	    -1 || fill_mkparent(path) == -1 || fdatasync(f->fd) == -1 ||
	    rename(f->tmp, path) == -1) {
		snprintf(detail, sizeof(detail), "cache: cannot publish: %s",
		    strerror(errno));
		fill_fail(f, ERR_INTERNAL, detail);
		return;
	}
	fill_sync_dir(path);
	fill_hash_free(f->hash);
	f->hash = NULL;
	close(f->fd);
	f->fd = -1;
	f->cache->filling -= f->written + f->hdr_len;
	e = cache_insert(f->cache, f->kind, f->digest, f->written + f->hdr_len);
	f->cache->filling += f->written + f->hdr_len;	/* fill_free() */
	log_info("- cache fill_done %s digest=%s bytes=%llu ms=%llu",
	    f->logid, f->digest, (unsigned long long)f->written,
	    (unsigned long long)(now_ms() - f->start_ms));
	/* The readers carry on from the published entry. */
	while ((cr = TAILQ_FIRST(&f->readers)) != NULL) {
		cache_fill_leave(f, cr);
		cache_reader_filled(cr, e);	/* may free cr */
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

/* Shutdown: stop every fill; readers were freed with their conns. */
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
