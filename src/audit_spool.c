/*
 * audit_spool.c: the audit writer's spool file, a write-ahead log.  With
 * audit.wal (the default) every record is appended here before it is
 * sent to Redis, and the prefix Redis acknowledged is released; without
 * it only while Redis is down, slow or refusing writes.  Either way,
 * when Redis goes away every record not yet acknowledged is in the file,
 * in order, and so is every new record until the file has been
 * replayed.  This file appends, fsyncs (per audit.fsync), reads records
 * back for the replay, releases the acknowledged prefix (truncating an
 * all-acknowledged file, or copying the short unacknowledged tail to a
 * new file renamed over it), keeps the acknowledged mark in the header,
 * and opens the file at start: one gateway per spool (flock), a torn
 * tail dropped, the replay started after the mark, the next run number
 * taken from the header.
 *
 * Guarantees: a record is appended whole or not at all (a short write is
 * truncated away); records are read back in the order they were
 * written; appends are write(2)s, so the page cache keeps them when the
 * process is killed, and a power loss loses at most what audit.fsync
 * leaves unsynced.  The WAL's appends (records on their way to Redis)
 * are gathered in memory and written with one write(2) at the end of
 * the loop turn that made them (ev_wal, activated by the first one):
 * before the loop polls again, so before a plain socket writes the
 * responses they belong to (it writes in its write event, which only a
 * poll makes active, and ev_wal is queued ahead of those), and before a
 * Redis reply can acknowledge them.  A record whose response may leave
 * sooner is written at once (audit_wal_now()).  A write(2) per record
 * was most of what the WAL cost (bench/audit_wal_perf.sh).  Everything
 * here that reads, syncs or rewrites the file writes the gathered
 * records first; releasing never loses an unacknowledged record (the
 * new file is complete, and synced unless fsync is never, before it
 * replaces the old); a run number never repeats (the header keeps the
 * last one, and a new run is at least the wall clock in ms), so a record
 * given up after it was numbered never leaves a gap the Redis script
 * waits for.  The file stays within spool_max_bytes; with Redis
 * acknowledging, within about release_bytes plus what is in flight.
 */
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/uio.h>

#include <errno.h>
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

static void	audit_header_frames(struct audit *);

/*
 * Write the gathered WAL appends (w->wallen bytes ending at spool_size).
 * 0, or -1: the file is cut back to what it held, and the records lose
 * their place in it (they are still sent, as with wal false).
 */
static int
audit_wal_write(struct audit *w)
{
	struct audit_rec	*r;
	uint64_t		 at;
	ssize_t			 n;

	if (w->wallen == 0)
		return (0);
	at = w->spool_size - w->wallen;
	audit_header_frames(w);
	n = pwrite(w->fd, w->walbuf, w->wallen, (off_t)at);
	if (n == (ssize_t)w->wallen) {
		w->wallen = 0;
		return (0);
	}
	log_err("- audit spool_write error=\"%s\"",
	    n == -1 ? strerror(errno) : "short write");
	if (ftruncate(w->fd, (off_t)at) == -1)
		log_err("- audit spool_truncate error=\"%s\"",
		    strerror(errno));
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
	w->spool_dirty = 0;
	w->last_fsync_ms = now_ms();
}

/* The header; frames: the file holds frames, or is about to (audit.h). */
static int
audit_write_header(struct audit *w, int frames)
{
	unsigned char	 h[AUDIT_SPOOL_HDR];

	audit_spool_header(h, w->run, frames);
	audit_spool_mark(h + AUDIT_SPOOL_MARK_AT, w->mark_off ==
	    AUDIT_SPOOL_HDR ? 0 : w->mark_off, w->mark_crc);
	if (pwrite(w->fd, h, sizeof(h), 0) != (ssize_t)sizeof(h))
		return (-1);
	w->hdr_frames = frames;
	return (0);
}

/*
 * Frames are about to be written to a file whose header says it has
 * none: it says "PCAUDSP2" first, so that a writer before "PCR2" frames
 * refuses the file instead of dropping them as a torn tail.
 */
static void
audit_header_frames(struct audit *w)
{
	if (!w->hdr_frames && audit_write_header(w, 1) == -1)
		log_warn("- audit spool_header error=\"%s\"", strerror(errno));
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
	if (audit_write_header(w, w->spool_size > AUDIT_SPOOL_HDR) == -1)
		log_warn("- audit spool_header error=\"%s\"", strerror(errno));
	w->spool_dirty = 1;
}

/*
 * Append one payload to the spool (its frame CRC in w->append_crc).  0,
 * or -1 when it does not fit even once the acknowledged prefix is
 * released, or the write failed (then w->wal_failed is set).
 */
int
audit_spool_append(struct audit *w, const char *p, size_t len)
{
	unsigned char	 frame[AUDIT_SPOOL_FRAME];
	struct iovec	 iov[2];
	ssize_t		 n;

	if (w->spool_size + AUDIT_SPOOL_FRAME + len >
	    w->ac->spool_max_bytes && audit_spool_releasable(w) > 0)
		audit_spool_release(w, 1);
	w->wal_failed = 0;
	if (w->spool_size + AUDIT_SPOOL_FRAME + len > w->ac->spool_max_bytes)
		return (-1);
	audit_spool_frame(frame, p, len);
	w->append_crc = audit_spool_frame_crc(frame);
	/* The WAL: gathered, written at the end of this loop turn. */
	if (w->mode == AUDIT_DIRECT && w->walbuf != NULL && !w->wal_now) {
		if (w->wallen + AUDIT_SPOOL_FRAME + len > AUDIT_WAL_BUF &&
		    audit_wal_write(w) == -1) {
			w->wal_failed = 1;
			return (-1);
		}
		if (w->wallen == 0)
			event_active(w->ev_wal, 0, 0);
		memcpy(w->walbuf + w->wallen, frame, sizeof(frame));
		memcpy(w->walbuf + w->wallen + sizeof(frame), p, len);
		w->wallen += sizeof(frame) + len;
		w->spool_size += sizeof(frame) + len;
		w->spool_dirty = 1;
		return (0);
	}
	if (audit_wal_write(w) == -1) {
		w->wal_failed = 1;
		return (-1);
	}
	iov[0].iov_base = frame;
	iov[0].iov_len = sizeof(frame);
	iov[1].iov_base = (void *)(uintptr_t)p;
	iov[1].iov_len = len;
	audit_header_frames(w);
	n = pwritev(w->fd, iov, 2, (off_t)w->spool_size);
	if (n != (ssize_t)(AUDIT_SPOOL_FRAME + len)) {
		log_err("- audit spool_write error=\"%s\"",
		    n == -1 ? strerror(errno) : "short write");
		if (ftruncate(w->fd, (off_t)w->spool_size) == -1)
			log_err("- audit spool_truncate error=\"%s\"",
			    strerror(errno));
		w->wal_failed = 1;
		return (-1);
	}
	w->spool_size += n;
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
		    (unsigned long long)w->spool_size);
}

/* The spool is fully acknowledged: empty it. */
void
audit_spool_reset(struct audit *w)
{
	/* Acknowledged before it was written: nothing left to write. */
	w->wallen = 0;
	if (ftruncate(w->fd, AUDIT_SPOOL_HDR) == -1) {
		log_warn("- audit spool_truncate error=\"%s\"",
		    strerror(errno));
		return;
	}
	/* With the WAL this is routine; a replay's end is news. */
	if (w->n_replayed != w->n_replayed_reset)
		log_info("- audit spool replayed bytes=%llu",
		    (unsigned long long)(w->spool_size - AUDIT_SPOOL_HDR));
	w->n_replayed_reset = w->n_replayed;
	w->spool_size = w->spool_rd = w->spool_acked = AUDIT_SPOOL_HDR;
	w->spool_dirty = 1;
	w->n_released++;
	audit_spool_mark_write(w);
	/* Empty: a writer before "PCR2" frames may have the file again. */
	if (w->hdr_frames && audit_write_header(w, 0) == -1)
		log_warn("- audit spool_header error=\"%s\"", strerror(errno));
}

/*
 * Write the acknowledged mark into the header if it moved.  Only a hint
 * (audit.h), so it is written now and then (the writer's tick, a reset,
 * the stop), not on every reply.
 */
void
audit_spool_mark_write(struct audit *w)
{
	unsigned char	 m[AUDIT_SPOOL_MARK];

	if (w->spool_acked == w->mark_off)
		return;
	/* The mark points at records that are in the file. */
	if (audit_wal_write(w) == -1 || w->spool_acked == w->mark_off)
		return;
	w->mark_off = w->spool_acked;
	w->mark_crc = w->mark_off == AUDIT_SPOOL_HDR ? 0 : w->acked_crc;
	audit_spool_mark(m, w->mark_off == AUDIT_SPOOL_HDR ? 0 : w->mark_off,
	    w->mark_crc);
	if (pwrite(w->fd, m, sizeof(m), AUDIT_SPOOL_MARK_AT) !=
	    (ssize_t)sizeof(m))
		log_warn("- audit spool_header error=\"%s\"", strerror(errno));
	w->spool_dirty = 1;
}

/* Largest unacknowledged tail copied to release a prefix. */
#define AUDIT_COMPACT_MAX	(16ULL << 20)

/*
 * Bytes that releasing the acknowledged prefix would free now: all of
 * it when nothing follows it, or when what follows (copied to a new
 * file) is short, both absolutely, so that the loop never stalls on a
 * big copy, and next to the prefix, so that copying costs at most 16
 * bytes a byte freed.  A long backlog being replayed is released when
 * the replay nears its end.
 */
uint64_t
audit_spool_releasable(const struct audit *w)
{
	uint64_t	 done = w->spool_acked - AUDIT_SPOOL_HDR;
	uint64_t	 tail = w->spool_size - w->spool_acked;

	if (done == 0)
		return (0);
	if (tail == 0 || (tail <= AUDIT_COMPACT_MAX && tail <= 16 * done))
		return (done);
	return (0);
}

/* Shift the offsets of the records the writer holds by d bytes down. */
static void
audit_spool_shift(struct audit *w, uint64_t d)
{
	struct audit_rec	*r;

	TAILQ_FOREACH(r, &w->inflight, entry)
		if (r->spool_end != 0)
			r->spool_end -= d;
	TAILQ_FOREACH(r, &w->queue, entry)
		if (r->spool_end != 0)
			r->spool_end -= d;
	/* Not kept up to date while records come from memory. */
	if (w->spool_rd < w->spool_acked)
		w->spool_rd = w->spool_acked;
	w->spool_size -= d;
	w->spool_rd -= d;
	w->spool_acked -= d;
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

/*
 * Release the acknowledged prefix by copying the unacknowledged tail to
 * <spool_file>.tmp and renaming it over the spool.  The new file is
 * locked before it gets the spool's name, and synced (unless fsync is
 * never) before the rename, so that neither another gateway nor a power
 * loss ever sees a spool without its tail.  0, or -1: the old file is
 * kept as it was.
 */
static int
audit_spool_compact(struct audit *w)
{
	unsigned char	 buf[16384], h[AUDIT_SPOOL_HDR];
	uint64_t	 d, at, end;
	ssize_t		 n;
	int		 fd;

	if (audit_wal_write(w) == -1)
		return (-1);
	d = w->spool_acked - AUDIT_SPOOL_HDR;
	if (unlink(w->tmp_path) == -1 && errno != ENOENT)
		goto fail;
	fd = open(w->tmp_path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC |
	    O_NOFOLLOW, 0600);
	if (fd == -1)
		goto fail;
	if (flock(fd, LOCK_EX | LOCK_NB) == -1)
		goto fail_fd;
	/* The tail is not empty: frames. */
	audit_spool_header(h, w->run, 1);
	if (pwrite(fd, h, sizeof(h), 0) != (ssize_t)sizeof(h))
		goto fail_fd;
	for (at = w->spool_acked, end = w->spool_size; at < end; at += n) {
		n = pread(w->fd, buf, end - at < sizeof(buf) ? end - at :
		    sizeof(buf), (off_t)at);
		if (n <= 0 || pwrite(fd, buf, n, (off_t)(at - d)) != n) {
			if (n == 0)
				errno = EIO;
			goto fail_fd;
		}
	}
	if (w->ac->fsync != CONFIG_FSYNC_NEVER && fdatasync(fd) == -1)
		goto fail_fd;
	if (rename(w->tmp_path, w->ac->spool_file) == -1)
		goto fail_fd;
	if (w->ac->fsync != CONFIG_FSYNC_NEVER)
		audit_dir_sync(w);
	close(w->fd);
	w->fd = fd;
	audit_spool_shift(w, d);
	w->mark_off = AUDIT_SPOOL_HDR;
	w->mark_crc = 0;
	w->hdr_frames = 1;
	w->spool_dirty = 0;
	w->last_fsync_ms = now_ms();
	w->n_released++;
	return (0);
fail_fd:
	log_warn("- audit spool_release error=\"%s\"", strerror(errno));
	close(fd);
	unlink(w->tmp_path);
	return (-1);
fail:
	log_warn("- audit spool_release error=\"%s\"", strerror(errno));
	return (-1);
}

/*
 * Release the acknowledged prefix: when it reached release_bytes, or,
 * with `now`, whatever its size (the file is full, the writer is idle or
 * stopping).  Only what audit_spool_releasable() allows.
 */
void
audit_spool_release(struct audit *w, int now)
{
	uint64_t	 done = w->spool_acked - AUDIT_SPOOL_HDR;

	if (done == 0 || (!now && done < w->release_bytes) ||
	    audit_spool_releasable(w) == 0)
		return;
	if (w->spool_acked == w->spool_size)
		audit_spool_reset(w);
	else
		audit_spool_compact(w);
}

/*
 * The next record of the replay, or NULL when the rest of the spool is
 * unreadable (it is dropped, and a new run starts).
 */
struct audit_rec *
audit_spool_read(struct audit *w)
{
	unsigned char		 buf[AUDIT_SPOOL_FRAME + AUDIT_REC_MAX];
	struct audit_rec	*r;
	size_t			 want;
	ssize_t			 n;
	long			 len;

	(void)audit_wal_write(w);
	want = w->spool_size - w->spool_rd;
	if (want > sizeof(buf))
		want = sizeof(buf);
	n = pread(w->fd, buf, want, (off_t)w->spool_rd);
	if (n <= 0 || (len = audit_spool_check(buf, (size_t)n)) <= 0) {
		log_err("- audit spool_corrupt offset=%llu dropped_bytes=%llu",
		    (unsigned long long)w->spool_rd,
		    (unsigned long long)(w->spool_size - w->spool_rd));
		if (ftruncate(w->fd, (off_t)w->spool_rd) == 0)
			w->spool_size = w->spool_rd;
		audit_new_run(w);
		return (NULL);
	}
	r = audit_rec_new(w, len - AUDIT_SPOOL_FRAME);
	r->len = len - AUDIT_SPOOL_FRAME;
	memcpy(r->data, buf + AUDIT_SPOOL_FRAME, r->len);
	w->spool_rd += len;
	r->spool_end = w->spool_rd;
	r->crc = audit_spool_frame_crc(buf);
	r->from_spool = 1;
	return (r);
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
 * Open the spool: lock it (one gateway per spool), check the header,
 * drop a torn tail, start the replay after the acknowledged mark, and
 * take the next run number.
 */
int
audit_spool_open(struct audit *w, char **cause)
{
	unsigned char	*buf;
	struct stat	 st;
	uint64_t	 off, old_run = 0, nrec = 0, nacked = 0, moff = 0;
	uint64_t	 acked = AUDIT_SPOOL_HDR;
	uint32_t	 mcrc = 0, acrc = 0;
	size_t		 have = 0, at, bufsz = 1 << 20;
	ssize_t		 n;
	long		 len;
	const char	*path = w->ac->spool_file;
	char		*dup;

	if (asprintf(&w->tmp_path, "%s.tmp", path) == -1 ||
	    (dup = strdup(path)) == NULL)
		fatal("asprintf");
	if ((w->spool_dir = strdup(dirname(dup))) == NULL)
		fatal("strdup");
	free(dup);
	/* A quarter of the file, so that Redis acknowledging keeps room. */
	w->release_bytes = w->ac->spool_max_bytes / 4;
	if (w->release_bytes > (4ULL << 20))
		w->release_bytes = 4ULL << 20;
	if (audit_spool_lock(w, cause) == -1)
		return (-1);
	/* A release that a crash interrupted; we hold the lock. */
	(void)unlink(w->tmp_path);
	if (fstat(w->fd, &st) == -1) {
		if (asprintf(cause, "/audit/spool_file: %s: %s", path,
		    strerror(errno)) == -1)
			*cause = NULL;
		return (-1);
	}
	if ((buf = malloc(bufsz)) == NULL)
		fatal("malloc");
	off = 0;
	if (st.st_size > 0) {
		n = pread(w->fd, buf, AUDIT_SPOOL_HDR, 0);
		if (n != AUDIT_SPOOL_HDR || audit_spool_header_parse(buf,
		    (size_t)n, &old_run) == -1) {
			free(buf);
			if (asprintf(cause, "/audit/spool_file: %s: not a "
			    "portcullis audit spool (move it away to start "
			    "with an empty one)", path) == -1)
				*cause = NULL;
			return (-1);
		}
		audit_spool_mark_parse(buf + AUDIT_SPOOL_MARK_AT, &moff, &mcrc);
		/* Walk the records; the first bad one ends the file. */
		off = AUDIT_SPOOL_HDR;
		for (;;) {
			n = pread(w->fd, buf + have, bufsz - have,
			    (off_t)(off + have));
			if (n < 0) {
				free(buf);
				if (asprintf(cause, "/audit/spool_file: %s: %s",
				    path, strerror(errno)) == -1)
					*cause = NULL;
				return (-1);
			}
			have += n;
			/* The part record left moves to the front once. */
			for (at = 0; (len = audit_spool_check(buf + at,
			    have - at)) > 0; at += len) {
				off += len;
				nrec++;
				/* The mark, where a record of its CRC ends. */
				if (off == moff &&
				    audit_spool_frame_crc(buf + at) == mcrc) {
					acked = off;
					acrc = mcrc;
					nacked = nrec;
				}
			}
			memmove(buf, buf + at, have - at);
			have -= at;
			if (len < 0 || n == 0)
				break;
		}
		if ((uint64_t)st.st_size > off) {
			log_warn("- audit spool torn_tail bytes=%llu",
			    (unsigned long long)(st.st_size - off));
			if (ftruncate(w->fd, (off_t)off) == -1)
				log_warn("- audit spool_truncate error=\"%s\"",
				    strerror(errno));
		}
	} else
		off = AUDIT_SPOOL_HDR;
	free(buf);
	w->mark_off = acked;
	w->mark_crc = acrc;
	w->run = old_run;
	/* Before the header is written: whether it says there are frames. */
	w->spool_size = off;
	audit_new_run(w);
	audit_fsync(w);
	w->spool_rd = w->spool_acked = acked;
	w->acked_crc = acrc;
	w->mode = nrec > nacked ? AUDIT_SPOOL : AUDIT_DIRECT;
	log_info("- audit spool file=%s records=%llu acknowledged=%llu "
	    "run=%llu wal=%s", path, (unsigned long long)(nrec - nacked),
	    (unsigned long long)nacked, (unsigned long long)w->run,
	    w->ac->wal ? "on" : "off");
	if (w->mode == AUDIT_DIRECT && w->spool_size > AUDIT_SPOOL_HDR)
		audit_spool_reset(w);
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
 * The writer stops: write the mark, sync and close.  What follows the
 * mark is replayed next time.
 */
void
audit_spool_close(struct audit *w)
{
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
