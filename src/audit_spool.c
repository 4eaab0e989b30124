/*
 * audit_spool.c: the audit writer's disk spool.  When Redis is down, slow
 * or refusing writes, every record not yet acknowledged goes, in order,
 * to an append-only file of CRC-framed records (the framing is in
 * audit_format.c, see audit.h), and so does every new record until the
 * spool has been replayed.  This file appends, fsyncs (per
 * audit.fsync), reads records back for the replay, empties the file once
 * all of it is acknowledged, and opens it at start: one gateway per
 * spool (flock), a torn tail dropped, the next run number taken from the
 * header.
 *
 * Guarantees: a record is appended whole or not at all (a short write is
 * truncated away); records are read back in the order they were
 * written; a run number never repeats (the header keeps the last one,
 * and a new run is at least the wall clock in ms), so a record given up
 * after it was numbered never leaves a gap the Redis script waits for.
 */
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/uio.h>

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "portcullis.h"
#include "audit.h"

/* Flush the spool to disk if it was written since the last flush. */
void
audit_fsync(struct audit *w)
{
	if (!w->spool_dirty)
		return;
	if (fdatasync(w->fd) == -1)
		log_warn("- audit spool_fsync error=\"%s\"", strerror(errno));
	w->spool_dirty = 0;
	w->last_fsync_ms = now_ms();
}

static int
audit_write_header(struct audit *w)
{
	unsigned char	 h[AUDIT_SPOOL_HDR];

	audit_spool_header(h, w->run);
	if (pwrite(w->fd, h, sizeof(h), 0) != (ssize_t)sizeof(h))
		return (-1);
	return (0);
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

/* Append one payload to the spool.  0, or -1 when it does not fit. */
int
audit_spool_append(struct audit *w, const char *p, size_t len)
{
	unsigned char	 frame[AUDIT_SPOOL_FRAME];
	struct iovec	 iov[2];
	ssize_t		 n;

	if (w->spool_size + AUDIT_SPOOL_FRAME + len > w->ac->spool_max_bytes)
		return (-1);
	audit_spool_frame(frame, p, len);
	iov[0].iov_base = frame;
	iov[0].iov_len = sizeof(frame);
	iov[1].iov_base = (void *)(uintptr_t)p;
	iov[1].iov_len = len;
	n = pwritev(w->fd, iov, 2, (off_t)w->spool_size);
	if (n != (ssize_t)(AUDIT_SPOOL_FRAME + len)) {
		log_err("- audit spool_write error=\"%s\"",
		    n == -1 ? strerror(errno) : "short write");
		if (ftruncate(w->fd, (off_t)w->spool_size) == -1)
			log_err("- audit spool_truncate error=\"%s\"",
			    strerror(errno));
		return (-1);
	}
	w->spool_size += n;
	w->spool_dirty = 1;
	w->n_spooled++;
	return (0);
}

/* Hand a record that was numbered but cannot be kept. */
static void
audit_lose(struct audit *w, struct audit_rec *r)
{
	w->n_dropped++;
	free(r);
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

	TAILQ_INIT(&all);
	while ((r = TAILQ_FIRST(&w->inflight)) != NULL) {
		TAILQ_REMOVE(&w->inflight, r, entry);
		if (r->spool_end != 0)
			free(r);
		else
			TAILQ_INSERT_TAIL(&all, r, entry);
	}
	TAILQ_CONCAT(&all, &w->queue, entry);
	w->ninflight = w->nqueue = 0;
	w->ifbytes = w->qbytes = 0;
	w->spool_rd = w->spool_acked;
	w->mode = AUDIT_SPOOL;
	while ((r = TAILQ_FIRST(&all)) != NULL) {
		TAILQ_REMOVE(&all, r, entry);
		if (audit_spool_append(w, r->data, r->len) == -1) {
			audit_lose(w, r);
			continue;
		}
		free(r);
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
	if (ftruncate(w->fd, AUDIT_SPOOL_HDR) == -1) {
		log_warn("- audit spool_truncate error=\"%s\"",
		    strerror(errno));
		return;
	}
	log_info("- audit spool replayed bytes=%llu",
	    (unsigned long long)(w->spool_size - AUDIT_SPOOL_HDR));
	w->spool_size = w->spool_rd = w->spool_acked = AUDIT_SPOOL_HDR;
	w->spool_dirty = 1;
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
	if ((r = malloc(sizeof(*r) + len - AUDIT_SPOOL_FRAME)) == NULL)
		fatal("malloc");
	r->len = len - AUDIT_SPOOL_FRAME;
	memcpy(r->data, buf + AUDIT_SPOOL_FRAME, r->len);
	w->spool_rd += len;
	r->spool_end = w->spool_rd;
	return (r);
}

/*
 * Open the spool: lock it (one gateway per spool), check the header,
 * drop a torn tail, and take the next run number.
 */
int
audit_spool_open(struct audit *w, char **cause)
{
	unsigned char	*buf;
	struct stat	 st;
	uint64_t	 off, old_run = 0, nrec = 0;
	size_t		 have = 0, bufsz = 1 << 20;
	ssize_t		 n;
	long		 len;
	const char	*path = w->ac->spool_file;

	w->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (w->fd == -1) {
		if (asprintf(cause, "/audit/spool_file: %s: %s", path,
		    strerror(errno)) == -1)
			*cause = NULL;
		return (-1);
	}
	if (flock(w->fd, LOCK_EX | LOCK_NB) == -1) {
		if (asprintf(cause, "/audit/spool_file: %s: in use by another "
		    "process", path) == -1)
			*cause = NULL;
		return (-1);
	}
	if (fstat(w->fd, &st) == -1 || !S_ISREG(st.st_mode)) {
		if (asprintf(cause, "/audit/spool_file: %s: not a regular "
		    "file", path) == -1)
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
			while ((len = audit_spool_check(buf, have)) > 0) {
				off += len;
				nrec++;
				memmove(buf, buf + len, have - len);
				have -= len;
			}
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
	w->run = old_run;
	audit_new_run(w);
	audit_fsync(w);
	w->spool_size = off;
	w->spool_rd = w->spool_acked = AUDIT_SPOOL_HDR;
	w->mode = nrec > 0 ? AUDIT_SPOOL : AUDIT_DIRECT;
	log_info("- audit spool file=%s records=%llu run=%llu", path,
	    (unsigned long long)nrec, (unsigned long long)w->run);
	return (0);
}
