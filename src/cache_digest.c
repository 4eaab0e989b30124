/*
 * cache_digest.c: the digest threads of the cache's fills (struct
 * fill_pool): the bytes cache_fill.c wrote to a fill's temp file are
 * handed over here (fill_hash_feed) and hashed off the event loop, the
 * upstream read paused while a fill's hash queue is over its limit and
 * resumed once it drained, and the loop told through a pipe when a
 * fill's body is hashed (fill_hashed), whose digest it then reads
 * (fill_hash_digest).
 *
 * Guarantees: what is verified is exactly what was written to the file,
 * from the same memory; a fill's hash state is freed by the loop, never
 * while a thread holds it; the threads never take signals.
 */
#include <errno.h>
#include <fcntl.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "cache.h"

/*
 * The digests of all fills are computed by a fixed pool of threads
 * (cache.digest_threads), from the very memory the bytes arrived in:
 * after the loop has written an upstream read to the temp file, it moves
 * the buffer chunks themselves (evbuffer_remove_buffer: pointers, no
 * copy) onto the fill's hash queue, and a thread hashes and frees them.
 * SHA-256 is the largest single cost of a fill (about a third of its
 * CPU), and on the loop it would slow every transfer the gateway runs;
 * reading the file back would cost a copy and a system call per buffer
 * more.  The thread count does not grow with fills.
 *
 * Wake-ups: an idle thread is woken (a futex call on each side) only
 * once FILL_HASH_BATCH watermarks of a fill wait, or its last byte came;
 * a thread that finds more queued when it is done takes it without
 * sleeping.  Handing over every upstream read instead (about 256 KiB)
 * cost a sleep and a wake per read, some 11,000 futex calls per GiB,
 * and with the pause at one watermark, a pause and a resume through the
 * pipe every fourth read or so (perf stat on the syscall tracepoints
 * during a cold 1 GiB pull; README, "Wake-ups and send steps").  Larger
 * batches and limits cut more wake-ups but keep more buffers in flight,
 * and glibc then gave its heap back and faulted it in again: up to
 * 99,000 page faults in a pull (cache_fill_pool_new).  The bytes waiting
 * for a batch are only hashed later, never lost: the last byte (eof)
 * always wakes a thread.
 *
 * Memory: once a fill's hash queue holds more than FILL_HASH_LIMIT
 * watermarks (buffers.high_watermark), the fill asks proxy.c to stop
 * reading the upstream (the read that crossed it is queued whole), and
 * the thread that brings it under half says so through the pipe
 * (fill_pool_done resumes the transfer).  So a fill holds at most its
 * upstream input (two watermarks) plus FILL_HASH_LIMIT watermarks and
 * one read (UCONN_READ_CHUNK) to hash: 1.75 MiB with the defaults,
 * whatever the blob's size; a slow digest thread slows its fills rather
 * than growing memory.
 *
 * A fill's state (struct fill_hash) is queued when it has bytes not yet
 * hashed; a thread takes it, moves everything queued so far to its own
 * buffer (work), hashes that without the mutex and queues the state again
 * at the tail when more came meanwhile, so fills share the threads in
 * turn.  When a fill's last byte is hashed after the loop said no more
 * come (eof), the thread puts it on the notify list and says so through
 * the pipe, which the loop watches; the same list carries resume
 * requests.  Everything but the EVP context and work is under the pool's
 * mutex; those two are touched only by the thread that holds the fill
 * (busy).  A fill freed while a thread holds it is abandoned: the thread
 * hands it to the loop, which frees it.  What is verified is exactly what
 * was written to the file, from the same memory.
 */
struct fill_hash {
	TAILQ_ENTRY(fill_hash)	 qentry;	/* on the work queue */
	TAILQ_ENTRY(fill_hash)	 nentry;	/* on the notify list */
	struct fill_pool	*pool;
	struct cache_fill	*fill;		/* NULL: abandoned */
	EVP_MD_CTX		*md;
	struct evbuffer		*stage;		/* the loop's own */
	struct evbuffer		*pending;	/* under mtx */
	struct evbuffer		*work;		/* the busy thread's */
	size_t			 queued;	/* bytes not yet hashed */
	size_t			 limit;		/* pause above this */
	size_t			 batch;		/* wake a thread above this */
	int			 on_queue;
	int			 on_notify;
	int			 busy;		/* a thread hashes it */
	int			 eof;		/* nothing more is fed */
	int			 paused;	/* the upstream read is */
	int			 error;
	int			 finished;
};

TAILQ_HEAD(fill_hash_list, fill_hash);

struct fill_pool {
	pthread_mutex_t		 mtx;
	pthread_cond_t		 cv;
	struct fill_hash_list	 queue;
	struct fill_hash_list	 notify;
	int			 stop;
	pthread_t		*thr;
	size_t			 nthr;
	int			 pipe[2];	/* threads -> loop */
	struct event		*ev;
};

#define FILL_DONE_PER_TURN	64
#define FILL_HASH_BATCH		2	/* watermarks that wake a thread */
#define FILL_HASH_LIMIT		4	/* watermarks that pause the read */
#define FILL_MMAP_MAX		(4 * 1024 * 1024)	/* mallopt, below */
#define FILL_TRIM_MAX		(32 * 1024 * 1024)

static void
fill_hash_destroy(struct fill_hash *h)
{
	evbuffer_free(h->stage);
	evbuffer_free(h->pending);
	evbuffer_free(h->work);
	EVP_MD_CTX_free(h->md);
	free(h);
}

/* Under the mutex: have the loop look at h (finished, or resume). */
static void
fill_pool_notify(struct fill_pool *p, struct fill_hash *h)
{
	if (h->on_notify)
		return;
	h->on_notify = 1;
	TAILQ_INSERT_TAIL(&p->notify, h, nentry);
	/* EAGAIN: the pipe is full, a wake-up is pending. */
	while (write(p->pipe[1], "", 1) == -1 && errno == EINTR)
		;
}

/* Hash and free every byte of a thread's work buffer: 0, or an errno. */
static int
fill_hash_work(struct fill_hash *h, int hash)
{
	struct evbuffer_iovec	 v[16];
	size_t			 len;
	int			 i, n, err = 0;

	while ((len = evbuffer_get_length(h->work)) > 0) {
		if ((n = evbuffer_peek(h->work, -1, NULL, v, 16)) <= 0) {
			evbuffer_drain(h->work, len);	/* cannot be */
			return (EINVAL);
		}
		if (n > 16)
			n = 16;
		len = 0;
		for (i = 0; i < n; i++) {
			if (hash && err == 0 && EVP_DigestUpdate(h->md,
			    v[i].iov_base, v[i].iov_len) != 1)
				err = EINVAL;
			len += v[i].iov_len;
		}
		evbuffer_drain(h->work, len);
	}
	return (err);
}

static void *
fill_pool_main(void *arg)
{
	struct fill_pool	*p = arg;
	struct fill_hash	*h;
	size_t			 len;
	int			 err, abandoned;

	pthread_mutex_lock(&p->mtx);
	for (;;) {
		while (!p->stop && TAILQ_EMPTY(&p->queue))
			pthread_cond_wait(&p->cv, &p->mtx);
		if (p->stop)
			break;
		h = TAILQ_FIRST(&p->queue);
		TAILQ_REMOVE(&p->queue, h, qentry);
		h->on_queue = 0;
		h->busy = 1;
		/* Chunk pointers move; no byte is copied. */
		evbuffer_add_buffer(h->work, h->pending);
		len = evbuffer_get_length(h->work);
		abandoned = h->fill == NULL || h->error != 0;
		pthread_mutex_unlock(&p->mtx);

		err = fill_hash_work(h, !abandoned);

		pthread_mutex_lock(&p->mtx);
		h->busy = 0;
		h->queued -= len;
		if (err != 0 && h->error == 0)
			h->error = err;
		if (h->fill == NULL || h->error != 0 ||
		    (h->eof && evbuffer_get_length(h->pending) == 0)) {
			h->finished = 1;
			fill_pool_notify(p, h);
		} else {
			if (evbuffer_get_length(h->pending) > 0) {
				h->on_queue = 1;
				TAILQ_INSERT_TAIL(&p->queue, h, qentry);
			}
			if (h->paused && h->queued <= h->limit / 2)
				fill_pool_notify(p, h);
		}
		/* Else idle until fill_hash_feed() queues it. */
	}
	pthread_mutex_unlock(&p->mtx);
	return (NULL);
}

/* The loop's side: fills whose hashing ended, were abandoned, or whose
 * hash queue has room again. */
static void
fill_pool_done(evutil_socket_t fd, short ev, void *arg)
{
	struct fill_pool	*p = arg;
	struct fill_hash	*h;
	char			 drain[64];
	int			 i, finished, resume;

	while (read(p->pipe[0], drain, sizeof(drain)) > 0)
		;
	/* One at a time: handling one may free the others' fills. */
	for (i = 0; i < FILL_DONE_PER_TURN; i++) {
		finished = resume = 0;
		pthread_mutex_lock(&p->mtx);
		if ((h = TAILQ_FIRST(&p->notify)) != NULL) {
			TAILQ_REMOVE(&p->notify, h, nentry);
			h->on_notify = 0;
			finished = h->finished;
			if (!finished && h->paused &&
			    h->queued <= h->limit / 2) {
				h->paused = 0;
				resume = 1;
			}
		}
		pthread_mutex_unlock(&p->mtx);
		if (h == NULL)
			return;
		if (h->fill == NULL) {
			if (finished)
				fill_hash_destroy(h);
		} else if (finished)
			fill_hashed(h->fill);	/* frees the fill */
		else if (resume && h->fill->px != NULL) {
			log_debug("- cache fill_resume %s", h->fill->logid);
			proxy_resume(h->fill->px);	/* may free it */
		}
	}
	/* Bounded per turn: come back after other events. */
	event_active(p->ev, EV_READ, 0);
}

/* Start the digest threads.  NULL when they cannot start. */
struct fill_pool *
cache_fill_pool_new(struct pc_ctx *ctx, size_t nthr)
{
	struct fill_pool	*p;
	sigset_t		 all, old;
	int			 rv = 0;

	if ((p = calloc(1, sizeof(*p))) == NULL ||
	    (p->thr = calloc(nthr, sizeof(*p->thr))) == NULL)
		fatal("calloc");
#ifdef __GLIBC__
	/*
	 * A fill's read buffers (libevent chains of up to 512 KiB for a
	 * 256 KiB read) are freed by the digest threads up to
	 * FILL_HASH_LIMIT watermarks later.  With glibc's adaptive
	 * thresholds that churn could shrink and grow the heap again and
	 * again, and the reads then landed on fresh pages: in some pulls
	 * 92,000-99,000 page faults (a zeroed page per 4 KiB, 0.2 s of a
	 * cold 1 GiB pull in perf), in others 1,000.  Freed memory is kept
	 * for the next reads instead: chains under FILL_MMAP_MAX come from
	 * the heap, whose top is given back only past FILL_TRIM_MAX (values
	 * glibc's adaptive thresholds reach by themselves).  Both only tune
	 * reuse, process-wide; the bounds on what is held (the watermarks,
	 * FILL_HASH_LIMIT, cache.max_fills) are the same.
	 */
	(void)mallopt(M_MMAP_THRESHOLD, FILL_MMAP_MAX);
	(void)mallopt(M_TRIM_THRESHOLD, FILL_TRIM_MAX);
#endif
	TAILQ_INIT(&p->queue);
	TAILQ_INIT(&p->notify);
	pthread_mutex_init(&p->mtx, NULL);
	pthread_cond_init(&p->cv, NULL);
	if (pipe2(p->pipe, O_CLOEXEC | O_NONBLOCK) == -1) {
		p->pipe[0] = p->pipe[1] = -1;
		cache_fill_pool_free(p);
		return (NULL);
	}
	if ((p->ev = event_new(ctx->base, p->pipe[0], EV_READ | EV_PERSIST,
	    fill_pool_done, p)) == NULL || event_add(p->ev, NULL) == -1)
		fatalx("event_new");
	/* Signals stay with the loop's thread. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	for (p->nthr = 0; p->nthr < nthr; p->nthr++)
		if ((rv = pthread_create(&p->thr[p->nthr], NULL,
		    fill_pool_main, p)) != 0)
			break;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rv != 0) {
		cache_fill_pool_free(p);
		errno = rv;
		return (NULL);
	}
	return (p);
}

/* Stop and join the threads; every fill is gone already.  NULL is fine. */
void
cache_fill_pool_free(struct fill_pool *p)
{
	struct fill_hash	*h;
	size_t			 i;

	if (p == NULL)
		return;
	pthread_mutex_lock(&p->mtx);
	p->stop = 1;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mtx);
	/* Each at most one queue's worth of hashing away. */
	for (i = 0; i < p->nthr; i++)
		pthread_join(p->thr[i], NULL);
	/* Abandoned states waiting for the loop (queued ones are on the
	 * notify list too, or belong to a live fill). */
	while ((h = TAILQ_FIRST(&p->notify)) != NULL) {
		TAILQ_REMOVE(&p->notify, h, nentry);
		if (h->on_queue)
			TAILQ_REMOVE(&p->queue, h, qentry);
		fill_hash_destroy(h);
	}
	while ((h = TAILQ_FIRST(&p->queue)) != NULL) {
		TAILQ_REMOVE(&p->queue, h, qentry);
		fill_hash_destroy(h);
	}
	if (p->ev != NULL)
		event_free(p->ev);
	if (p->pipe[0] != -1) {
		close(p->pipe[0]);
		close(p->pipe[1]);
	}
	pthread_cond_destroy(&p->cv);
	pthread_mutex_destroy(&p->mtx);
	free(p->thr);
	free(p);
}

/* Give the fill a hash state on the digest threads. */
void
fill_hash_start(struct cache_fill *f)
{
	struct fill_hash	*h;

	if ((h = calloc(1, sizeof(*h))) == NULL)
		fatal("calloc");
	h->pool = f->cache->pool;
	h->fill = f;
	h->limit = FILL_HASH_LIMIT * f->conf->high_watermark;
	h->batch = FILL_HASH_BATCH * f->conf->high_watermark;
	if ((h->stage = evbuffer_new()) == NULL ||
	    (h->pending = evbuffer_new()) == NULL ||
	    (h->work = evbuffer_new()) == NULL)
		fatal("evbuffer_new");
	if ((h->md = EVP_MD_CTX_new()) == NULL ||
	    EVP_DigestInit_ex(h->md, f->alg == CACHE_ALG_SHA512 ?
	    EVP_sha512() : EVP_sha256(), NULL) != 1)
		fatalx("EVP digest init failed");
	f->hash = h;
}

/*
 * Hand the threads n bytes: the first n of src (moved, src may be NULL)
 * or data (copied: a decoded chunked body).  eof: no more come.
 * Returns 1 when the hash queue is over its limit: the caller pauses the
 * upstream read until fill_pool_done resumes it.
 */
int
fill_hash_feed(struct fill_hash *h, struct evbuffer *src, const void *data,
    size_t n, int eof)
{
	struct fill_pool	*p = h->pool;
	int			 over;

	/* Outside the mutex: src's callbacks (its watermarks) may run. */
	if (n > 0 && src != NULL)
		evbuffer_remove_buffer(src, h->stage, n);
	else if (n > 0)
		evbuffer_add(h->stage, data, n);
	pthread_mutex_lock(&p->mtx);
	if (n > 0) {
		evbuffer_add_buffer(h->pending, h->stage);
		h->queued += n;
	}
	h->eof |= eof;
	/* An idle thread is woken for a batch (less than the pause's
	 * limit) or for the end. */
	if (!h->busy && !h->on_queue && !h->finished &&
	    (h->queued > h->batch || h->eof)) {
		h->on_queue = 1;
		TAILQ_INSERT_TAIL(&p->queue, h, qentry);
		pthread_cond_signal(&p->cv);
	}
	over = !h->eof && h->queued > h->limit;
	if (over)
		h->paused = 1;
	pthread_mutex_unlock(&p->mtx);
	return (over);
}

/* The fill is going away: free its state, or leave that to the loop's
 * next pass when a thread holds it.  NULL is fine. */
void
fill_hash_free(struct fill_hash *h)
{
	struct fill_pool	*p;

	if (h == NULL)
		return;
	p = h->pool;
	pthread_mutex_lock(&p->mtx);
	h->fill = NULL;
	if (h->busy) {
		pthread_mutex_unlock(&p->mtx);
		return;		/* fill_pool_done() frees it */
	}
	if (h->on_queue)
		TAILQ_REMOVE(&p->queue, h, qentry);
	if (h->on_notify)
		TAILQ_REMOVE(&p->notify, h, nentry);
	pthread_mutex_unlock(&p->mtx);
	fill_hash_destroy(h);
}

/*
 * The digest the threads computed, as "alg:hex" into got (len bytes):
 * 0, or the errno a thread met.
 */
int
fill_hash_digest(struct fill_hash *h, enum cache_alg alg, char *got,
    size_t len)
{
	unsigned char		 md[EVP_MAX_MD_SIZE];
	unsigned int		 mdlen = 0, i;
	int			 n;

	/* Finished and off the pool's lists: no thread touches it. */
	if (h->error != 0)
		return (h->error);
	if (EVP_DigestFinal_ex(h->md, md, &mdlen) != 1)
		fatalx("EVP_DigestFinal_ex failed");
	n = snprintf(got, len, "%s:", cache_alg_name(alg));
	for (i = 0; i < mdlen; i++)
		n += snprintf(got + n, len - n, "%02x", md[i]);
	return (0);
}
