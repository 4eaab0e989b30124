/*
 * audit_spool.c: the audit writer's spool file, a write-ahead log kept
 * as a ring.  With audit.wal (the default) every record is appended here
 * before it is sent to Redis, and the prefix Redis acknowledged is
 * released; without it only while Redis is down, slow or refusing
 * writes.  Either way, when Redis goes away every record not yet
 * acknowledged is in the file, in order, and so is every new record
 * until the file has been replayed.
 *
 * The file is a ring of spool_max_bytes (audit.h: a header page, then
 * records) allocated at start and as records reach further
 * (posix_fallocate, ring_grow()) and never truncated or replaced while
 * the gateway runs: an append writes into pages that
 * are in the page cache already (after the first lap), which is what a
 * growing, truncated file made the WAL pay for (a fresh page, and
 * freeing it at each release; bench/audit_wal_perf.sh).  Releasing the
 * acknowledged prefix moves the head; the header keeps a head that is
 * never ahead of the oldest unacknowledged record and never behind
 * bytes that have been overwritten: before an append reuses the bytes
 * of a position below the header's head plus the ring's size, the head
 * is written (and synced unless fsync is never), so the records from
 * the header's head on are always whole or the torn tail.  Written now
 * and then otherwise (the writer's tick, the stop): a stale head only
 * replays acknowledged records, which the Redis script skips.  Each
 * frame carries its position, so the replay at start walks from the
 * head, across the wrap, and stops at the first frame that is not
 * whole or not at the position it names: the torn tail of a kill -9,
 * or a frame of the previous lap.
 *
 * Guarantees: a record is appended whole or not at all (a short write
 * gives the record up to the memory path, and its bytes are overwritten
 * by the next append); records are read back in the order they were
 * written; appends are pwrite(2)s, so the page cache keeps them when the
 * process is killed, and a power loss loses at most what audit.fsync
 * leaves unsynced.  No SIGBUS: nothing is mapped.  The WAL's appends
 * (records on their way to Redis) are gathered in memory and written
 * with one pwrite(2) (two at the wrap) at the end of the loop turn that
 * made them (ev_wal, activated by the first one): before the loop polls
 * again, so before a plain socket writes the responses they belong to
 * (it writes in its write event, which only a poll makes active, and
 * ev_wal is queued ahead of those), and before a Redis reply can
 * acknowledge them.  A record whose response may leave sooner is written
 * at once (audit_wal_now()).  Everything here that reads or syncs the
 * file writes the gathered records first.  A run number never repeats
 * (the header keeps the last one, and a new run is at least the wall
 * clock in ms), so a record given up after it was numbered never leaves
 * a gap the Redis script waits for.  A spool of the append-log format
 * (PCR1/PCR2 frames, "PCAUDSP1") or a ring of another size is copied
 * into a new ring at start (its unacknowledged records, in order) and
 * replaced by it, then replayed from the ring once.  When the disk
 * cannot hold what the ring needs, the appends that need it fail as a
 * write would (the records go to Redis from memory, or on_failure
 * applies while Redis is away), and the allocation is tried again once a
 * second.
 */
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/uio.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/bufferevent.h>
#include <event2/bufferevent_struct.h>
#include <event2/event_struct.h>

#include "portcullis.h"
#include "audit.h"

/* Room for the WAL appends of one loop turn; a record always fits. */
#define AUDIT_WAL_BUF	(64 * 1024)

/* The file offset of ring position pos. */
static off_t
ring_off(uint64_t size, uint64_t pos)
{
	return ((off_t)(AUDIT_RING_DATA + (pos - AUDIT_RING_DATA) % size));
}

/*
 * Write (wr) or read len bytes at ring position pos of a ring of size
 * bytes in fd: one pwrite/pread, two when they wrap.  0, or -1 (errno;
 * EIO for a short transfer).
 */
static int
ring_io(int fd, uint64_t size, int wr, void *buf, size_t len, uint64_t pos)
{
	unsigned char	*b = buf;
	size_t		 k;
	off_t		 o;
	ssize_t		 n;

	while (len > 0) {
		o = ring_off(size, pos);
		k = AUDIT_RING_DATA + size - (uint64_t)o;
		if (k > len)
			k = len;
		n = wr ? pwrite(fd, b, k, o) : pread(fd, b, k, o);
		if (n != (ssize_t)k) {
			if (n >= 0)
				errno = EIO;
			return (-1);
		}
		b += k;
		pos += k;
		len -= k;
	}
	return (0);
}

/*
 * Read up to len bytes at ring position pos, as ring_io() does, but the
 * file's end (a ring not allocated that far yet: ring_grow()) ends the
 * read instead of failing it.  The bytes read, or -1 (errno).
 */
static ssize_t
ring_read(int fd, uint64_t size, void *buf, size_t len, uint64_t pos)
{
	unsigned char	*b = buf;
	size_t		 k, got = 0;
	off_t		 o;
	ssize_t		 n;

	while (got < len) {
		o = ring_off(size, pos + got);
		k = AUDIT_RING_DATA + size - (uint64_t)o;
		if (k > len - got)
			k = len - got;
		if ((n = pread(fd, b + got, k, o)) == -1)
			return (-1);
		got += n;
		if ((size_t)n < k)
			break;
	}
	return ((ssize_t)got);
}

static int
audit_write_header(struct audit *w)
{
	unsigned char	 h[AUDIT_RING_HDR];

	audit_ring_header(h, w->run, w->ring_size, w->mark_off);
	if (pwrite(w->fd, h, sizeof(h), 0) != (ssize_t)sizeof(h))
		return (-1);
	w->spool_dirty = 1;
	return (0);
}

/*
 * The oldest position the header's head may still name after a crash
 * (a kill -9: the page cache; a power loss: what was synced, unless
 * fsync is never and nothing is promised).
 */
static int	 audit_wal_write(struct audit *);

static uint64_t
ring_head_floor(const struct audit *w)
{
	return (w->ac->fsync == CONFIG_FSYNC_NEVER ? w->mark_off :
	    w->head_synced);
}

/*
 * Bytes up to position end are about to be written: if that reuses
 * bytes the header's head may still cover, move the head first (to the
 * acknowledged position) and, unless fsync is never, sync it, so that
 * no replay starts at a record that was overwritten.  0, or -1.
 */
static int
ring_room(struct audit *w, uint64_t end)
{
	uint64_t	 old = w->mark_off;

	if (end <= ring_head_floor(w) + w->ring_size)
		return (0);
	w->mark_off = w->spool_acked;
	if (audit_write_header(w) == -1) {
		/* mark_off is the head on disk (ring_head_floor()). */
		w->mark_off = old;
		log_err("- audit spool_header error=\"%s\"", strerror(errno));
		return (-1);
	}
	if (w->ac->fsync != CONFIG_FSYNC_NEVER && fdatasync(w->fd) == -1) {
		log_err("- audit spool_header error=\"%s\"", strerror(errno));
		return (-1);
	}
	w->head_synced = w->mark_off;
	return (0);
}

/*
 * Wrap early: past ring_hot bytes into the lap, with everything
 * acknowledged (Redis keeps up), and room to write ring_hot / 2 bytes
 * at the lap's start without moving the head, end this lap with a pad
 * and go on at the next one.  The pages written then stay the first
 * ring_hot or so of the file, which the page cache keeps: an append
 * rewrites a page that is there rather than a fresh one.  Only with
 * nothing unacknowledged: a record left before the pad would sit where
 * the next lap writes, and the ring would hold no more than the bytes
 * before it until Redis acknowledged it (an outage starting then would
 * find the ring nearly full).  While Redis is away the whole ring
 * fills.  The pad is written at once (the gathered records first): a
 * replay that meets the lap's end without it would stop there and
 * miss what follows.
 */
static void
ring_wrap(struct audit *w)
{
	unsigned char	 pad[AUDIT_SPOOL_FRAME];
	uint64_t	 pos = w->spool_size, off, lap;

	off = (pos - AUDIT_RING_DATA) % w->ring_size;
	lap = pos - off;
	if (off < w->ring_hot || off + sizeof(pad) > w->ring_size ||
	    audit_spool_used(w) != 0 ||
	    ring_head_floor(w) < lap + w->ring_hot / 2)
		return;
	if (audit_wal_write(w) == -1 || w->spool_size != pos)
		return;
	audit_ring_pad(pad, pos);
	if (pwrite(w->fd, pad, sizeof(pad), ring_off(w->ring_size, pos)) !=
	    (ssize_t)sizeof(pad))
		return;
	w->spool_size = lap + w->ring_size;
	w->pad_at = pos;
	w->spool_dirty = 1;
	/*
	 * Everything before the next lap is acknowledged: say so, so that
	 * the head (ring_room(), the tick) and a replay of an outage that
	 * starts now (audit_spool_unacked()) start at the next lap, not at
	 * the pad, whose bytes the next lap overwrites once it is past them.
	 */
	w->spool_acked = w->spool_size;
	if (w->spool_rd == pos)
		w->spool_rd = w->spool_size;
}

/*
 * Write the gathered WAL appends (w->wallen bytes ending at spool_size).
 * 0, or -1: the records lose their place in the ring (they are still
 * sent, as with wal false), and the next appends overwrite their bytes.
 */
static int
audit_wal_write(struct audit *w)
{
	struct audit_rec	*r;
	uint64_t		 at;

	if (w->wallen == 0)
		return (0);
	at = w->spool_size - w->wallen;
	if (ring_room(w, w->spool_size) == 0 && ring_io(w->fd, w->ring_size,
	    1, w->walbuf, w->wallen, at) == 0) {
		w->wallen = 0;
		return (0);
	}
	log_err("- audit spool_write error=\"%s\"", strerror(errno));
	TAILQ_FOREACH(r, &w->inflight, entry)
		if (r->spool_end > at)
			r->spool_end = 0;
	TAILQ_FOREACH(r, &w->queue, entry)
		if (r->spool_end > at)
			r->spool_end = 0;
	w->unspooled = 1;
	w->spool_size = at;
	if (w->spool_acked > at)
		w->spool_acked = at;
	if (w->spool_rd > at)
		w->spool_rd = at;
	w->wallen = 0;
	return (-1);
}

/*
 * Whether the record of a request on c that ends now must be written at
 * once rather than at the end of the loop turn: its response may leave
 * before then.  TLS (bufferevent_openssl) writes to the socket as data
 * is queued; a plain socket whose write event this turn's poll already
 * made active (bytes were waiting, the socket is writable) writes later
 * in this turn, before ev_wal.  Otherwise the write event can only
 * become active at the next poll, after ev_wal.  Reads libevent's
 * struct event (event_struct.h): no call tells active from pending.
 * A connection staging its output (conn.c) writes it at the end of
 * the turn, after audit_wal_flush().
 */
int
audit_wal_now(const struct conn *c)
{
	if (c == NULL || c->bev == NULL)
		return (0);
	if (c->tls)
		return (1);
	return ((c->bev->ev_write.ev_evcallback.evcb_flags &
	    (EVLIST_ACTIVE | EVLIST_ACTIVE_LATER)) != 0);
}

/* The records gathered in this turn, written now (before answers). */
void
audit_wal_flush(struct audit *w)
{
	if (w != NULL && w->wallen > 0)
		(void)audit_wal_write(w);
}

/* ev_wal: the loop turn that appended records ends. */
static void
audit_wal_cb(evutil_socket_t fd, short ev, void *arg)
{
	(void)audit_wal_write(arg);
}

/* Flush the spool to disk if it was written since the last flush. */
void
audit_fsync(struct audit *w)
{
	(void)audit_wal_write(w);
	if (!w->spool_dirty)
		return;
	if (fdatasync(w->fd) == -1)
		log_warn("- audit spool_fsync error=\"%s\"", strerror(errno));
	else
		w->head_synced = w->mark_off;
	w->spool_dirty = 0;
	w->last_fsync_ms = now_ms();
}

/*
 * fsync interval: the once-a-second fdatasync runs on a thread of the
 * writer's own, not on the event loop.  On the loop it held every
 * request of its worker for as long as the disk took: 1 to 30 ms here
 * while the ring's first lap turns its allocated (unwritten) extents
 * into written ones, which doubled the p99 of cached manifest GETs.
 * One sync at a time; the loop hands over the head that the header on
 * disk holds when it asks (mark_off) and takes the result at a later
 * tick: only then does head_synced move to it, so ring_room() goes by a
 * head that is durable (an older one while a sync runs: it only syncs
 * itself sooner).  The appends go on meanwhile; those the sync misses
 * are dirty again for the next.  fsync always and the syncs ring_room()
 * and a stop make stay on the loop, where their order matters.
 */
struct audit_syncer {
	pthread_t		 thr;
	pthread_mutex_t		 mtx;
	pthread_cond_t		 cv;
	int			 fd;
	int			 asked;		/* a sync to do */
	int			 busy;		/* asked or running */
	int			 done;		/* finished, not reaped */
	int			 err;		/* its errno, or 0 */
	int			 stop;
	uint64_t		 mark;		/* the head it makes durable */
};

static void *
audit_syncer_main(void *arg)
{
	struct audit_syncer	*s = arg;
	int			 fd, e;

	pthread_mutex_lock(&s->mtx);
	for (;;) {
		while (!s->asked && !s->stop)
			pthread_cond_wait(&s->cv, &s->mtx);
		if (!s->asked)
			break;
		s->asked = 0;
		fd = s->fd;
		pthread_mutex_unlock(&s->mtx);
		e = fdatasync(fd) == -1 ? errno : 0;
		pthread_mutex_lock(&s->mtx);
		s->err = e;
		s->done = 1;
	}
	pthread_mutex_unlock(&s->mtx);
	return (NULL);
}

/* A sync the thread finished: its head is durable now. */
void
audit_fsync_reap(struct audit *w)
{
	struct audit_syncer	*s = w->syncer;
	uint64_t		 mark;
	int			 done, err;

	if (s == NULL)
		return;
	pthread_mutex_lock(&s->mtx);
	done = s->done;
	err = s->err;
	mark = s->mark;
	if (done)
		s->done = s->busy = 0;
	pthread_mutex_unlock(&s->mtx);
	if (!done)
		return;
	if (err != 0) {
		log_warn("- audit spool_fsync error=\"%s\"", strerror(err));
		w->spool_dirty = 1;
	} else if (mark > w->head_synced)
		w->head_synced = mark;
}

/* The tick, fsync interval: ask the thread for a sync (started once). */
void
audit_fsync_interval(struct audit *w)
{
	struct audit_syncer	*s = w->syncer;
	sigset_t		 all, old;
	int			 rv;

	audit_fsync_reap(w);
	if (s != NULL && s->busy)
		return;			/* the next tick */
	(void)audit_wal_write(w);
	if (!w->spool_dirty || w->fd == -1)
		return;
	if (s == NULL) {
		if ((s = calloc(1, sizeof(*s))) == NULL) {
			audit_fsync(w);
			return;
		}
		pthread_mutex_init(&s->mtx, NULL);
		pthread_cond_init(&s->cv, NULL);
		s->fd = w->fd;
		/* Signals stay the loop's (libevent's handlers). */
		sigfillset(&all);
		pthread_sigmask(SIG_SETMASK, &all, &old);
		rv = pthread_create(&s->thr, NULL, audit_syncer_main, s);
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		if (rv != 0) {
			log_warn("- audit spool_fsync thread: syncing on the "
			    "loop");
			pthread_cond_destroy(&s->cv);
			pthread_mutex_destroy(&s->mtx);
			free(s);
			audit_fsync(w);
			return;
		}
		w->syncer = s;
	}
	pthread_mutex_lock(&s->mtx);
	s->mark = w->mark_off;
	s->asked = s->busy = 1;
	pthread_cond_signal(&s->cv);
	pthread_mutex_unlock(&s->mtx);
	w->spool_dirty = 0;
	w->last_fsync_ms = now_ms();
}

/* The writer stops: the thread finishes its sync and ends. */
static void
audit_syncer_stop(struct audit *w)
{
	struct audit_syncer	*s = w->syncer;

	if (s == NULL)
		return;
	pthread_mutex_lock(&s->mtx);
	s->stop = 1;
	pthread_cond_signal(&s->cv);
	pthread_mutex_unlock(&s->mtx);
	pthread_join(s->thr, NULL);
	audit_fsync_reap(w);
	pthread_cond_destroy(&s->cv);
	pthread_mutex_destroy(&s->mtx);
	free(s);
	w->syncer = NULL;
}

/*
 * The ids of this run's records start "<instance>/<run>-": keep that
 * ready.  The instance is cut so that any n fits in AUDIT_VALUE_MAX.
 */
static void
audit_id_prefix(struct audit *w)
{
	const char	*inst = w->conf->instance_id;
	char		 tmp[AUDIT_U64_MAX], *p;
	size_t		 len = strlen(inst), max;

	p = audit_u64(tmp, w->run);
	max = AUDIT_VALUE_MAX - 2 * AUDIT_U64_MAX - 2;
	if (len > max)
		len = max;
	memcpy(w->idpfx, inst, len);
	w->idpfx[len++] = '/';
	memcpy(w->idpfx + len, p, tmp + sizeof(tmp) - p);
	len += tmp + sizeof(tmp) - p;
	w->idpfx[len++] = '-';
	w->idpfxlen = len;
}

/* A numbered record was given up: never wait for it, start a new run. */
void
audit_new_run(struct audit *w)
{
	uint64_t	 t = audit_wall_ms();

	w->run = w->run + 1 > t ? w->run + 1 : t;
	w->next_n = 0;
	audit_id_prefix(w);
	if (audit_write_header(w) == -1)
		log_warn("- audit spool_header error=\"%s\"", strerror(errno));
	w->spool_dirty = 1;
}

/*
 * The ring's file is allocated (posix_fallocate) a step at a time, as
 * far as records have reached: with Redis keeping up the writer wraps
 * within the first ring_hot bytes (ring_wrap()), so a ring of 1 GiB
 * takes a step or a few on disk; while Redis is away it takes up to
 * spool_max_bytes, as the append log before it did.  Never shrunk.
 */
#define AUDIT_RING_STEP	(4ULL << 20)

/*
 * Allocate the file up to offset `to` (rounded up to a step, at most the
 * whole ring).  0, or -1 and errno: the append that needed it fails as a
 * write would (logged once until an allocation succeeds; tried again at
 * most once a second, and by the writer's tick).
 */
static int
ring_grow(struct audit *w, uint64_t to)
{
	uint64_t	 full = AUDIT_RING_DATA + w->ring_size;
	int		 e;

	if (to <= w->ring_alloc_end)
		return (0);
	to = (to + AUDIT_RING_STEP - 1) / AUDIT_RING_STEP * AUDIT_RING_STEP;
	if (to > full)
		to = full;
	w->ring_try_ms = now_ms();
	if ((e = posix_fallocate(w->fd, 0, (off_t)to)) != 0) {
		if (!w->alloc_failed)
			log_err("- audit spool_allocate bytes=%llu "
			    "error=\"%s\"", (unsigned long long)to,
			    strerror(e));
		w->alloc_failed = 1;
		errno = e;
		return (-1);
	}
	if (w->alloc_failed)
		log_info("- audit spool allocated bytes=%llu",
		    (unsigned long long)to);
	w->alloc_failed = 0;
	w->ring_alloc_end = to;
	return (0);
}

/* The writer's tick: an allocation the disk refused, tried again. */
void
audit_spool_alloc(struct audit *w)
{
	if (w->alloc_failed && w->fd != -1 &&
	    now_ms() - w->ring_try_ms >= 1000)
		(void)ring_grow(w, w->ring_alloc_end + 1);
}

/*
 * Whether `bytes` more after the last record have their place in the
 * file, allocating the steps they need now (a wrap needs the whole
 * ring; after a refusal, tried again at most once a second): the
 * reject policy admits a request only once its record's bytes are on
 * disk (audit_admit()), not when the append finds the disk full after
 * the response left.
 */
int
audit_spool_allocated(struct audit *w, uint64_t bytes)
{
	uint64_t	 to;

	to = (uint64_t)ring_off(w->ring_size, w->spool_size) + bytes;
	if (to <= w->ring_alloc_end)
		return (1);
	if (w->alloc_failed && now_ms() - w->ring_try_ms < 1000)
		return (0);
	return (ring_grow(w, to) == 0);
}

/*
 * Append one payload to the spool (its frame CRC in w->append_crc).  0,
 * or -1 when it does not fit in the ring next to what is not
 * acknowledged, or the write failed (then w->wal_failed is set).
 */
int
audit_spool_append(struct audit *w, const char *p, size_t len)
{
	unsigned char	 frame[AUDIT_SPOOL_FRAME];
	struct iovec	 iov[2];
	uint64_t	 pos;
	off_t		 o;
	int		 ok;

	w->wal_failed = 0;
	if (w->ring_hot < w->ring_size)
		ring_wrap(w);
	if (audit_spool_used(w) + AUDIT_SPOOL_FRAME + len > w->ring_size)
		return (-1);
	/* Its bytes on disk: a step more of the file, or all at the wrap. */
	o = ring_off(w->ring_size, w->spool_size);
	if ((uint64_t)o + AUDIT_SPOOL_FRAME + len > w->ring_alloc_end &&
	    ((w->alloc_failed && now_ms() - w->ring_try_ms < 1000) ||
	    ring_grow(w, (uint64_t)o + AUDIT_SPOOL_FRAME + len) == -1)) {
		w->wal_failed = 1;
		return (-1);
	}
	/* The WAL: gathered, written at the end of this loop turn. */
	if (w->mode == AUDIT_DIRECT && w->walbuf != NULL && !w->wal_now) {
		if (w->wallen + AUDIT_SPOOL_FRAME + len > AUDIT_WAL_BUF &&
		    audit_wal_write(w) == -1) {
			w->wal_failed = 1;
			return (-1);
		}
		if (w->wallen == 0)
			event_active(w->ev_wal, 0, 0);
		audit_ring_frame(w->walbuf + w->wallen, p, len, w->spool_size);
		w->append_crc = audit_spool_frame_crc(w->walbuf + w->wallen);
		memcpy(w->walbuf + w->wallen + AUDIT_SPOOL_FRAME, p, len);
		w->wallen += AUDIT_SPOOL_FRAME + len;
		w->spool_size += AUDIT_SPOOL_FRAME + len;
		w->spool_dirty = 1;
		return (0);
	}
	if (audit_wal_write(w) == -1) {
		w->wal_failed = 1;
		return (-1);
	}
	pos = w->spool_size;
	audit_ring_frame(frame, p, len, pos);
	w->append_crc = audit_spool_frame_crc(frame);
	ok = ring_room(w, pos + AUDIT_SPOOL_FRAME + len) == 0;
	o = ring_off(w->ring_size, pos);
	if (ok && (uint64_t)o + AUDIT_SPOOL_FRAME + len <= AUDIT_RING_DATA +
	    w->ring_size) {
		iov[0].iov_base = frame;
		iov[0].iov_len = sizeof(frame);
		iov[1].iov_base = (void *)(uintptr_t)p;
		iov[1].iov_len = len;
		ok = pwritev(w->fd, iov, 2, o) ==
		    (ssize_t)(AUDIT_SPOOL_FRAME + len);
		if (!ok && errno == 0)
			errno = EIO;
	} else if (ok)
		ok = ring_io(w->fd, w->ring_size, 1, frame, sizeof(frame),
		    pos) == 0 && ring_io(w->fd, w->ring_size, 1,
		    (void *)(uintptr_t)p, len, pos + AUDIT_SPOOL_FRAME) == 0;
	if (!ok) {
		/* Its bytes are overwritten by the next append. */
		log_err("- audit spool_write error=\"%s\"", strerror(errno));
		w->wal_failed = 1;
		return (-1);
	}
	w->spool_size += AUDIT_SPOOL_FRAME + len;
	w->spool_dirty = 1;
	/* Spooled: kept for a replay, not just logged ahead of a send. */
	if (w->mode == AUDIT_SPOOL)
		w->n_spooled++;
	return (0);
}

/* Hand a record that was numbered but cannot be kept. */
static void
audit_lose(struct audit *w, struct audit_rec *r)
{
	w->n_dropped++;
	audit_rec_free(w, r);
	audit_new_run(w);
}

/*
 * Everything not acknowledged goes to the spool, oldest first: records
 * read from the spool are still in it (replay restarts at the oldest
 * unacknowledged one), then memory records in flight, then the queue.
 * From here on new records are spooled too, until the replay catches up.
 */
void
audit_spool_unacked(struct audit *w)
{
	struct audit_rec	*r;
	struct audit_recq	 all;
	size_t			 n = 0;

	/* What the WAL gathered is in the file from here on. */
	(void)audit_wal_write(w);
	TAILQ_INIT(&all);
	while ((r = TAILQ_FIRST(&w->inflight)) != NULL) {
		TAILQ_REMOVE(&w->inflight, r, entry);
		TAILQ_INSERT_TAIL(&all, r, entry);
	}
	TAILQ_CONCAT(&all, &w->queue, entry);
	w->ninflight = w->nqueue = 0;
	w->ifbytes = w->qbytes = 0;
	w->spool_rd = w->spool_acked;
	w->mode = AUDIT_SPOOL;
	while ((r = TAILQ_FIRST(&all)) != NULL) {
		TAILQ_REMOVE(&all, r, entry);
		/* In the file already: read back by the replay, or the WAL. */
		if (r->spool_end != 0) {
			if (!r->from_spool) {
				w->n_spooled++;
				n++;
			}
			audit_rec_free(w, r);
			continue;
		}
		if (audit_spool_append(w, r->data, r->len) == -1) {
			audit_lose(w, r);
			continue;
		}
		audit_rec_free(w, r);
		n++;
	}
	if (w->ac->fsync == CONFIG_FSYNC_ALWAYS)
		audit_fsync(w);
	if (n > 0)
		log_info("- audit spool records=%zu bytes=%llu", n,
		    (unsigned long long)audit_spool_used(w));
}

/*
 * The spool is fully acknowledged: release it (the head moves; nothing
 * is truncated).  What the WAL gathered is written first even though it
 * was acknowledged: a hole of unwritten bytes below later records would
 * end a replay that starts at a stale head before them.
 */
void
audit_spool_reset(struct audit *w)
{
	(void)audit_wal_write(w);
	/* With the WAL this is routine; a replay's end is news. */
	if (w->n_replayed != w->n_replayed_reset)
		log_info("- audit spool replayed bytes=%llu",
		    (unsigned long long)(w->spool_size - w->mark_off));
	w->n_replayed_reset = w->n_replayed;
	audit_spool_mark_write(w);
}

/*
 * Move the header's head to the acknowledged position if it moved.  The
 * head is a hint as long as ring_room() keeps it at or below the oldest
 * byte not overwritten, so it is written now and then (the writer's
 * tick, a reset, the stop), not on every reply.
 */
void
audit_spool_mark_write(struct audit *w)
{
	uint64_t	 old = w->mark_off;

	if (w->spool_acked == w->mark_off)
		return;
	w->mark_off = w->spool_acked;
	/*
	 * Not written: the head on disk is still the old one, which
	 * ring_room() and audit_fsync() must go by (they take mark_off
	 * for it); the next tick tries again.
	 */
	if (audit_write_header(w) == -1) {
		w->mark_off = old;
		log_warn("- audit spool_header error=\"%s\"", strerror(errno));
		return;
	}
	w->n_released++;
}

/* Bytes of the ring that records not acknowledged take. */
uint64_t
audit_spool_used(const struct audit *w)
{
	uint64_t	 acked = w->spool_acked;

	/* All before the last pad acknowledged: the rest of its lap too. */
	if (acked == w->pad_at && acked != 0)
		acked += w->ring_size - (acked - AUDIT_RING_DATA) %
		    w->ring_size;
	return (acked >= w->spool_size ? 0 : w->spool_size - acked);
}

/*
 * Release the acknowledged prefix: with `now` (the writer is idle or
 * stopping) the head is written; otherwise nothing needs doing, the
 * acknowledged position is the ring's free space already.
 */
void
audit_spool_release(struct audit *w, int now)
{
	if (now)
		audit_spool_mark_write(w);
}

/*
 * The next record of the replay, or NULL when the rest of the spool is
 * unreadable (it is dropped, and a new run starts).
 */
struct audit_rec *
audit_spool_read(struct audit *w)
{
	unsigned char		 buf[AUDIT_SPOOL_FRAME + AUDIT_REC_MAX];
	unsigned char		 pad[AUDIT_SPOOL_FRAME];
	struct audit_rec	*r;
	size_t			 want;
	ssize_t			 got;
	long			 len;
	int			 pads;

	(void)audit_wal_write(w);
	for (pads = 0;; pads++) {
		want = w->spool_size - w->spool_rd;
		if (want > sizeof(buf))
			want = sizeof(buf);
		/*
		 * Up to the file's end: a record's room past spool_rd may
		 * reach beyond what ring_grow() allocated (a pad near it).
		 */
		if ((got = ring_read(w->fd, w->ring_size, buf, want,
		    w->spool_rd)) == -1) {
			want = 0;
			break;
		}
		want = (size_t)got;
		if (pads > 0 || !audit_ring_is_pad(buf, want, w->spool_rd))
			break;
		/* The lap ended early: the next record starts the next. */
		w->spool_rd += w->ring_size - (w->spool_rd - AUDIT_RING_DATA) %
		    w->ring_size;
		if (w->spool_rd >= w->spool_size)
			return (NULL);
	}
	if ((len = audit_ring_check(buf, want, w->spool_rd)) <= 0) {
		log_err("- audit spool_corrupt offset=%llu dropped_bytes=%llu",
		    (unsigned long long)w->spool_rd,
		    (unsigned long long)(w->spool_size - w->spool_rd));
		w->spool_size = w->spool_rd;
		audit_new_run(w);
		return (NULL);
	}
	r = audit_rec_new(w, len - AUDIT_SPOOL_FRAME);
	r->len = len - AUDIT_SPOOL_FRAME;
	memcpy(r->data, buf + AUDIT_SPOOL_FRAME, r->len);
	w->spool_rd += len;
	/*
	 * A pad next (a head a crash left before an early wrap): the
	 * record ends its lap, so that once it is acknowledged the rest
	 * of the lap is free and the head and a replay start at the next
	 * lap, as ring_wrap() says at the wrap, not at the pad, which the
	 * next lap overwrites.
	 */
	if (w->spool_rd < w->spool_size && ring_read(w->fd, w->ring_size,
	    pad, sizeof(pad), w->spool_rd) == (ssize_t)sizeof(pad) &&
	    audit_ring_is_pad(pad, sizeof(pad), w->spool_rd))
		w->spool_rd += w->ring_size - (w->spool_rd -
		    AUDIT_RING_DATA) % w->ring_size;
	r->spool_end = w->spool_rd;
	r->crc = audit_spool_frame_crc(buf);
	r->from_spool = 1;
	return (r);
}

static void
audit_dir_sync(struct audit *w)
{
	int	 dfd;

	if ((dfd = open(w->spool_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) ==
	    -1 || fsync(dfd) == -1)
		log_warn("- audit spool_dir_fsync dir=%s error=\"%s\"",
		    w->spool_dir, strerror(errno));
	if (dfd != -1)
		close(dfd);
}

/* Called for each valid record of a scan: 0 goes on, -1 stops. */
typedef int (*spool_scan_cb)(void *, const unsigned char *, size_t,
    uint64_t);

/*
 * Walk the records of fd from position `from` to the first one that is
 * not valid: a ring of `size` bytes (frames at the position they name),
 * or with size 0 an append log (PCR1/PCR2 frames, to the end of the
 * file).  The position after the last valid record in *end, and
 * whether what stopped the walk is a frame begun there (a torn tail) in
 * *torn.  Records (frame and payload) to cb.  -1: out of memory.
 */
static int
spool_scan(int fd, uint64_t size, uint64_t from, uint64_t *end, int *torn,
    spool_scan_cb cb, void *arg)
{
	unsigned char	*buf;
	size_t		 bufsz = 1 << 20, have = 0, off = 0, k;
	uint64_t	 pos = from, lim = from + size;
	ssize_t		 n;
	long		 len;
	int		 eof = 0;

	if ((buf = malloc(bufsz)) == NULL)
		return (-1);
	for (;;) {
		if (!eof && have - off < AUDIT_SPOOL_FRAME + AUDIT_REC_MAX) {
			memmove(buf, buf + off, have - off);
			have -= off;
			off = 0;
			k = bufsz - have;
			if (size != 0) {
				if (k > lim - (pos + have))
					k = lim - (pos + have);
				n = k == 0 ? 0 : ring_read(fd, size,
				    buf + have, k, pos + have);
			} else
				n = pread(fd, buf + have, k,
				    (off_t)(pos + have));
			if (n <= 0)
				eof = 1;
			else
				have += n;
		}
		len = size != 0 ? audit_ring_check(buf + off, have - off, pos) :
		    audit_spool_check(buf + off, have - off);
		if (len == -1 && size != 0 &&
		    audit_ring_is_pad(buf + off, have - off, pos) &&
		    pos + size - (pos - AUDIT_RING_DATA) % size < lim) {
			/* The lap ended early: on at the next. */
			pos += size - (pos - AUDIT_RING_DATA) % size;
			have = off = 0;
			eof = 0;
			continue;
		}
		if (len == 0 && !eof)
			continue;
		if (len <= 0)
			break;
		if (cb != NULL && cb(arg, buf + off, (size_t)len, pos + len) ==
		    -1)
			break;
		pos += len;
		off += len;
	}
	*end = pos;
	/* A frame begun where the walk stopped: the torn tail. */
	*torn = have - off > 0 && (size == 0 || (have - off >=
	    AUDIT_SPOOL_FRAME && audit_ring_check(buf + off,
	    AUDIT_SPOOL_FRAME, pos) == 0));
	free(buf);
	return (0);
}

static int
spool_count_cb(void *arg, const unsigned char *rec, size_t len, uint64_t end)
{
	(*(uint64_t *)arg)++;
	return (0);
}

/* Where an append log's acknowledged mark matches a record. */
struct spool_mark {
	uint64_t	 off;
	uint32_t	 crc;
	uint64_t	 acked;
};

static int
spool_mark_cb(void *arg, const unsigned char *rec, size_t len, uint64_t end)
{
	struct spool_mark	*m = arg;

	if (end == m->off && audit_spool_frame_crc(rec) == m->crc)
		m->acked = end;
	return (0);
}

/* Records copied into a new ring. */
struct spool_copy {
	int		 fd;
	uint64_t	 size;
	size_t		 frame;		/* of the old format */
	uint64_t	 pos;		/* in the new ring */
	uint64_t	 nrec;
	uint64_t	 dropped;
	unsigned char	 buf[AUDIT_WAL_BUF];
	size_t		 len;
	int		 failed;
	int		 full;		/* a record did not fit */
};

static int
spool_copy_flush(struct spool_copy *c)
{
	if (c->len > 0 && ring_io(c->fd, c->size, 1, c->buf, c->len,
	    c->pos - c->len) == -1)
		return (-1);
	c->len = 0;
	return (0);
}

static int
spool_copy_cb(void *arg, const unsigned char *rec, size_t len, uint64_t end)
{
	struct spool_copy	*c = arg;
	size_t			 plen = len - c->frame;

	/*
	 * The ring of the new size is full: the rest is dropped, a smaller
	 * record after it too, which would leave a hole in its run (that
	 * Redis refuses as a GAP, and the writer takes for records Redis
	 * lost).
	 */
	if (c->full || c->pos - AUDIT_RING_DATA + AUDIT_SPOOL_FRAME + plen >
	    c->size) {
		c->full = 1;
		c->dropped++;
		return (0);
	}
	if (c->len + AUDIT_SPOOL_FRAME + plen > sizeof(c->buf) &&
	    spool_copy_flush(c) == -1) {
		c->failed = 1;
		return (-1);
	}
	audit_ring_frame(c->buf + c->len, rec + c->frame, plen, c->pos);
	memcpy(c->buf + c->len + AUDIT_SPOOL_FRAME, rec + c->frame, plen);
	c->len += AUDIT_SPOOL_FRAME + plen;
	c->pos += AUDIT_SPOOL_FRAME + plen;
	c->nrec++;
	return (0);
}

/*
 * The spool is an append log (PCR1/PCR2, a writer before the ring) or a
 * ring of another size (spool_max_bytes changed): copy its records not
 * acknowledged, in order, into a new ring at <spool_file>.tmp (locked,
 * allocated, synced unless fsync is never) renamed over it, and take
 * that.  The replay then sends them from the ring, once.  0 and the old
 * run in *run, or -1 and *cause (the old file is left as it was).
 */
static int
audit_spool_convert(struct audit *w, const unsigned char *h, size_t hlen,
    uint64_t *run, char **cause)
{
	struct spool_copy	*c;
	struct spool_mark	 m;
	unsigned char		 rh[AUDIT_RING_HDR];
	uint64_t		 osize, ohead, from, end;
	const char		*path = w->ac->spool_file, *what;
	int			 fd, e, torn;

	memset(&m, 0, sizeof(m));
	if (audit_ring_header_parse(h, hlen, run, &osize, &ohead) == 0) {
		what = "ring";
		from = ohead;
	} else if (hlen >= AUDIT_SPOOL_HDR &&
	    audit_spool_header_parse(h, hlen, run) == 0) {
		what = "log";
		osize = 0;
		audit_spool_mark_parse(h + AUDIT_SPOOL_MARK_AT, &m.off, &m.crc);
		m.acked = AUDIT_SPOOL_HDR;
		if (spool_scan(w->fd, 0, AUDIT_SPOOL_HDR, &end, &torn,
		    spool_mark_cb, &m) == -1)
			fatal("malloc");
		from = m.acked;
	} else {
		if (asprintf(cause, "/audit/spool_file: %s: not a portcullis "
		    "audit spool (move it away to start with an empty one)",
		    path) == -1)
			*cause = NULL;
		return (-1);
	}
	if ((c = calloc(1, sizeof(*c))) == NULL)
		fatal("calloc");
	c->size = w->ring_size;
	c->frame = osize == 0 ? AUDIT_LOG_FRAME : AUDIT_SPOOL_FRAME;
	c->pos = AUDIT_RING_DATA;
	if (unlink(w->tmp_path) == -1 && errno != ENOENT)
		goto fail;
	fd = open(w->tmp_path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC |
	    O_NOFOLLOW, 0600);
	if (fd == -1)
		goto fail;
	c->fd = fd;
	if (flock(fd, LOCK_EX | LOCK_NB) == -1)
		goto fail_fd;
	/* A first step (ring_grow()); the copy writes what it needs. */
	if ((e = posix_fallocate(fd, 0, (off_t)(AUDIT_RING_DATA +
	    w->ring_size < AUDIT_RING_STEP ? AUDIT_RING_DATA + w->ring_size :
	    AUDIT_RING_STEP))) != 0) {
		errno = e;
		goto fail_fd;
	}
	if (spool_scan(w->fd, osize, from, &end, &torn, spool_copy_cb, c) ==
	    -1)
		fatal("malloc");
	if (c->failed || spool_copy_flush(c) == -1)
		goto fail_fd;
	/* The old file's torn tail is not copied. */
	if (torn)
		log_warn("- audit spool torn_tail offset=%llu",
		    (unsigned long long)end);
	audit_ring_header(rh, *run, w->ring_size, AUDIT_RING_DATA);
	if (pwrite(fd, rh, sizeof(rh), 0) != (ssize_t)sizeof(rh))
		goto fail_fd;
	if (w->ac->fsync != CONFIG_FSYNC_NEVER && fdatasync(fd) == -1)
		goto fail_fd;
	if (rename(w->tmp_path, path) == -1)
		goto fail_fd;
	if (w->ac->fsync != CONFIG_FSYNC_NEVER)
		audit_dir_sync(w);
	close(w->fd);
	w->fd = fd;
	log_info("- audit spool converted from=%s records=%llu dropped=%llu "
	    "ring_bytes=%llu", what, (unsigned long long)c->nrec,
	    (unsigned long long)c->dropped,
	    (unsigned long long)w->ring_size);
	if (c->dropped > 0) {
		log_err("- audit spool_convert dropped=%llu: the ring "
		    "(spool_max_bytes) is smaller than what was not sent",
		    (unsigned long long)c->dropped);
		w->n_dropped += c->dropped;
	}
	free(c);
	return (0);
fail_fd:
	e = errno;
	close(fd);
	unlink(w->tmp_path);
	errno = e;
fail:
	if (asprintf(cause, "/audit/spool_file: %s: cannot replace the %s "
	    "spool with a ring of %llu bytes: %s", path, what,
	    (unsigned long long)(AUDIT_RING_DATA + w->ring_size),
	    strerror(errno)) == -1)
		*cause = NULL;
	free(c);
	return (-1);
}

/*
 * Open and lock the spool file.  Another gateway may be renaming a new
 * file over it (audit_spool_compact()): what got locked must still be
 * the file of that name.  0, or -1 and *cause.
 */
static int
audit_spool_lock(struct audit *w, char **cause)
{
	struct stat	 st, pst;
	const char	*path = w->ac->spool_file;
	int		 tries;

	for (tries = 0; tries < 10; tries++) {
		w->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW,
		    0600);
		if (w->fd == -1) {
			if (asprintf(cause, "/audit/spool_file: %s: %s", path,
			    strerror(errno)) == -1)
				*cause = NULL;
			return (-1);
		}
		if (flock(w->fd, LOCK_EX | LOCK_NB) == -1) {
			if (asprintf(cause, "/audit/spool_file: %s: in use by "
			    "another process", path) == -1)
				*cause = NULL;
			return (-1);
		}
		if (fstat(w->fd, &st) == -1 || !S_ISREG(st.st_mode)) {
			if (asprintf(cause, "/audit/spool_file: %s: not a "
			    "regular file", path) == -1)
				*cause = NULL;
			return (-1);
		}
		if (stat(path, &pst) == 0 && pst.st_dev == st.st_dev &&
		    pst.st_ino == st.st_ino)
			return (0);
		close(w->fd);
		w->fd = -1;
	}
	if (asprintf(cause, "/audit/spool_file: %s: keeps being replaced",
	    path) == -1)
		*cause = NULL;
	return (-1);
}

/*
 * Open the spool: lock it (one gateway per spool), allocate the ring or
 * convert an older spool into one, walk the records from the head (the
 * torn tail and what follows are left to be overwritten), and take the
 * next run number.
 */
int
audit_spool_open(struct audit *w, char **cause)
{
	unsigned char	 h[AUDIT_RING_HDR], pad[AUDIT_SPOOL_FRAME];
	struct stat	 st;
	uint64_t	 run = 0, size, head = AUDIT_RING_DATA, end;
	uint64_t	 nrec = 0;
	ssize_t		 n = 0;
	const char	*path = w->ac->spool_file;
	char		*dup;
	ssize_t		 i;
	int		 torn = 0;

	if (asprintf(&w->tmp_path, "%s.tmp", path) == -1 ||
	    (dup = strdup(path)) == NULL)
		fatal("asprintf");
	if ((w->spool_dir = strdup(dirname(dup))) == NULL)
		fatal("strdup");
	free(dup);
	/* The whole file is spool_max_bytes: a page of header, the ring. */
	w->ring_size = (w->ac->spool_max_bytes - AUDIT_RING_DATA) &
	    ~(uint64_t)(AUDIT_RING_DATA - 1);
	/* A quarter of the ring, at most 4 MiB: wrap early past it. */
	w->ring_hot = w->ring_size / 4;
	if (w->ring_hot > (4ULL << 20))
		w->ring_hot = 4ULL << 20;
	if (audit_spool_lock(w, cause) == -1)
		return (-1);
	/* A conversion that a crash interrupted; we hold the lock. */
	(void)unlink(w->tmp_path);
	if (fstat(w->fd, &st) == -1 || (st.st_size > 0 &&
	    (n = pread(w->fd, h, sizeof(h), 0)) == -1)) {
		if (asprintf(cause, "/audit/spool_file: %s: %s", path,
		    strerror(errno)) == -1)
			*cause = NULL;
		return (-1);
	}
	/*
	 * A header of zeros was never written: a kill -9 between the first
	 * allocation and the header (below) leaves that, and no record
	 * was appended before it.  An empty ring, not a foreign file.
	 */
	for (i = 0; i < n && h[i] == 0; i++)
		;
	if (st.st_size > 0 && i == n)
		log_warn("- audit spool_header_missing file=%s: taken as an "
		    "empty ring", path);
	if (st.st_size > 0 && i < n && (audit_ring_header_parse(h,
	    (size_t)n, &run, &size, &head) == -1 || size != w->ring_size)) {
		if (audit_spool_convert(w, h, (size_t)n, &run, cause) == -1)
			return (-1);
		head = AUDIT_RING_DATA;
		if (fstat(w->fd, &st) == -1)
			st.st_size = 0;
	}
	/* What a run before allocated or wrote, then a first step. */
	w->ring_alloc_end = (uint64_t)st.st_size;
	(void)ring_grow(w, AUDIT_RING_DATA + 1);
	if (spool_scan(w->fd, w->ring_size, head, &end, &torn, spool_count_cb,
	    &nrec) == -1)
		fatal("malloc");
	if (torn)
		log_warn("- audit spool torn_tail offset=%llu",
		    (unsigned long long)end);
	w->mark_off = head;
	w->run = run;
	audit_new_run(w);
	audit_fsync(w);
	w->spool_size = end;
	w->spool_rd = w->spool_acked = head;
	/*
	 * The head at a pad (a crash right after an early wrap, before the
	 * head was written past it): nothing before the next lap is
	 * unacknowledged, so the ring's free bytes are counted from there.
	 */
	if (ring_io(w->fd, w->ring_size, 0, pad, sizeof(pad), head) == 0 &&
	    audit_ring_is_pad(pad, sizeof(pad), head))
		w->spool_rd = w->spool_acked = head + w->ring_size -
		    (head - AUDIT_RING_DATA) % w->ring_size;
	w->mode = end > w->spool_acked ? AUDIT_SPOOL : AUDIT_DIRECT;
	log_info("- audit spool file=%s records=%llu bytes=%llu "
	    "ring_bytes=%llu run=%llu wal=%s", path, (unsigned long long)nrec,
	    (unsigned long long)(end - head),
	    (unsigned long long)w->ring_size, (unsigned long long)w->run,
	    w->ac->wal ? "on" : "off");
	/* The WAL gathers a loop turn's appends (no loop: one at a time). */
	if (w->ac->wal && w->ctx != NULL && w->ctx->base != NULL) {
		if ((w->walbuf = malloc(AUDIT_WAL_BUF)) == NULL)
			fatal("malloc");
		w->ev_wal = event_new(w->ctx->base, -1, 0, audit_wal_cb, w);
		if (w->ev_wal == NULL)
			fatal("event_new");
	}
	return (0);
}

/*
 * The writer stops: write the head, sync and close.  What follows the
 * head is replayed next time.
 */
void
audit_spool_close(struct audit *w)
{
	audit_syncer_stop(w);
	if (w->fd != -1)
		(void)audit_wal_write(w);
	if (w->ev_wal != NULL)
		event_free(w->ev_wal);
	w->ev_wal = NULL;
	free(w->walbuf);
	w->walbuf = NULL;
	if (w->fd == -1)
		return;
	audit_spool_mark_write(w);
	audit_fsync(w);
	close(w->fd);
	w->fd = -1;
}

/*
 * The bytes of records the spool file at path may hold to replay (for
 * a warning at start, without the lock): those of a ring from its head
 * to the first frame that is not valid; the file's size for anything
 * longer than a header (an append log, or not a spool: the gateway
 * will say so when it opens it).  0: nothing to replay.
 */
uint64_t
audit_spool_pending(const char *path)
{
	unsigned char	 h[AUDIT_RING_HDR];
	struct stat	 st;
	uint64_t	 run, size, head, end = 0, ret = 0, nrec = 0;
	int		 fd, torn;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)) == -1)
		return (0);
	if (fstat(fd, &st) == 0 && st.st_size > AUDIT_SPOOL_HDR) {
		ret = (uint64_t)st.st_size;
		if (pread(fd, h, sizeof(h), 0) == (ssize_t)sizeof(h) &&
		    audit_ring_header_parse(h, sizeof(h), &run, &size,
		    &head) == 0)
			ret = spool_scan(fd, size, head, &end, &torn,
			    spool_count_cb, &nrec) == 0 ? end - head : 0;
	}
	close(fd);
	return (ret);
}
