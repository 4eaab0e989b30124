/*
 * fill_floor.c: a MEASURING DEVICE for bench/blob_1g.sh, not a product.
 * It does exactly the work a cold cache fill of one blob must do, and
 * nothing else, as cheaply as it can, so that the bench can say how far
 * a cold pull through portcullis is from what this machine allows:
 *
 *   one client GET -> one upstream GET of the blob; every byte received
 *   is written into a temp file in the cache dir and SHA-256'd from the
 *   memory it arrived in (OpenSSL, on a second thread, as the gateway
 *   does); the client is sent the file with sendfile(2) as it grows, the
 *   last byte held back until the digest matched and the file was
 *   fdatasync'd and renamed into place (the gateway's order).
 *
 * No event loop, no HTTP beyond what the bench sends, no policy, no
 * logging, no limits beyond a fixed ring of buffers: three blocking
 * threads (receive + write, hash, send) on one connection at a time.
 * Anything but a blob GET with Content-Length from the upstream is
 * refused.  Loopback only.
 *
 *   fill_floor LISTEN_PORT UPSTREAM_PORT CACHE_DIR [SLOT_KIB [NSLOT]]
 *
 * GET /healthz answers 200 (for the bench's readiness poll).  In the
 * environment, FLOOR_INLINE=1 hashes on the receiving thread instead,
 * and FLOOR_SYNC_MIB sets how often writeback is started with
 * sync_file_range(2) (default 8, as the gateway; 0: never), to see
 * which is cheaper here; FLOOR_SEND=mem sends the client each buffer from
 * memory as soon as it arrived (send(2): one copy more than sendfile, but
 * the client no longer waits for the write into the page cache);
 * FLOOR_DIRECT=1 (implies FLOOR_SEND=mem, not FLOOR_INLINE) has the hash
 * thread write each buffer after hashing it, with O_DIRECT: no copy into
 * the page cache at all; FLOOR_SERIAL=1 sends with sendfile from the
 * receiving thread after each write, serially, as one event loop does.
 */
#define _GNU_SOURCE	/* fallocate, strcasestr */
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/sendfile.h>
#include <sys/stat.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <openssl/evp.h>

#define HEAD_MAX	16384

struct slot {
	char	*buf;
	size_t	 len;
	int	 full;		/* received, written, not yet hashed */
	int	 unsent;	/* FLOOR_SEND=mem: received, not yet sent */
};

struct fill {
	pthread_mutex_t	 mtx;
	pthread_cond_t	 cv;
	struct slot	*slots;
	size_t		 nslot, slotsz;
	size_t		 head, tail;	/* recv fills head, hash takes tail */
	int		 eof;		/* no more slots come */
	int		 hashed;	/* hash thread finished */
	int		 verdict;	/* 0 pending, 1 published, -1 failed */
	uint64_t	 written, total;
	EVP_MD_CTX	*md;
	int		 fd, cfd;
};

static int	inline_hash, send_mem, direct_io, serial;
static uint64_t	sync_step = 8 * 1048576;

static void
die(const char *what)
{
	perror(what);
	exit(1);
}

static int
writeall(int fd, const void *p, size_t n)
{
	ssize_t	w;

	while (n > 0) {
		if ((w = write(fd, p, n)) == -1) {
			if (errno == EINTR)
				continue;
			return (-1);
		}
		p = (const char *)p + w;
		n -= (size_t)w;
	}
	return (0);
}

/* Read a request or response head (to "\r\n\r\n") into buf; its length
 * with the body bytes read past it in *extra. */
static ssize_t
readhead(int fd, char *buf, size_t max, size_t *extra)
{
	size_t	 got = 0;
	ssize_t	 r;
	char	*e;

	while (got < max - 1) {
		if ((r = read(fd, buf + got, max - 1 - got)) <= 0) {
			if (r == -1 && errno == EINTR)
				continue;
			return (-1);
		}
		got += (size_t)r;
		buf[got] = '\0';
		if ((e = strstr(buf, "\r\n\r\n")) != NULL) {
			*extra = got - (size_t)(e + 4 - buf);
			return (e + 4 - buf);
		}
	}
	return (-1);
}

/*
 * FLOOR_DIRECT=1: the hash thread writes each slot with O_DIRECT after
 * hashing it (no copy into the page cache); a tail that is not a whole
 * number of blocks goes through the page cache.
 */
static int
floor_write_direct(struct fill *f, struct slot *s)
{
	if (s->len % 4096 != 0)
		(void)fcntl(f->fd, F_SETFL, fcntl(f->fd, F_GETFL) & ~O_DIRECT);
	return (writeall(f->fd, s->buf, s->len));
}

static void *
hash_main(void *arg)
{
	struct fill	*f = arg;
	struct slot	*s;

	pthread_mutex_lock(&f->mtx);
	for (;;) {
		while (!f->slots[f->tail].full && !f->eof)
			pthread_cond_wait(&f->cv, &f->mtx);
		s = &f->slots[f->tail];
		if (!s->full)
			break;		/* eof and drained */
		pthread_mutex_unlock(&f->mtx);
		if (EVP_DigestUpdate(f->md, s->buf, s->len) != 1)
			abort();
		if (direct_io && floor_write_direct(f, s) == -1)
			die("write (O_DIRECT)");
		pthread_mutex_lock(&f->mtx);
		s->full = 0;
		f->tail = (f->tail + 1) % f->nslot;
		pthread_cond_broadcast(&f->cv);
	}
	f->hashed = 1;
	pthread_cond_broadcast(&f->cv);
	pthread_mutex_unlock(&f->mtx);
	return (NULL);
}

/* Follow the file: everything written but the last byte until the
 * verdict, then the rest. */
static void *
send_main(void *arg)
{
	struct fill	*f = arg;
	uint64_t	 limit, sent = 0;
	off_t		 off = 0;
	ssize_t		 n;

	for (;;) {
		pthread_mutex_lock(&f->mtx);
		for (;;) {
			limit = f->written;
			if (f->verdict != 1 && limit == f->total)
				limit = f->total - 1;
			if (limit > sent || f->verdict == -1 ||
			    (f->verdict == 1 && sent == f->total))
				break;
			pthread_cond_wait(&f->cv, &f->mtx);
		}
		pthread_mutex_unlock(&f->mtx);
		if (f->verdict == -1 || sent == f->total)
			return (NULL);
		while (sent < limit) {
			n = sendfile(f->cfd, f->fd, &off, limit - sent);
			if (n == -1 && errno == EINTR)
				continue;
			if (n <= 0)
				return (NULL);	/* client gone */
			sent += (uint64_t)n;
		}
	}
}

/* Send the file to the client up to offset limit (FLOOR_SERIAL). */
static int
send_upto(struct fill *f, off_t *off, uint64_t limit)
{
	ssize_t	n;

	while ((uint64_t)*off < limit) {
		n = sendfile(f->cfd, f->fd, off, limit - (uint64_t)*off);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			return (-1);
	}
	return (0);
}

/* FLOOR_SEND=mem: send each slot from memory as soon as it arrived,
 * the last byte after the verdict. */
static void *
send_mem_main(void *arg)
{
	struct fill	*f = arg;
	struct slot	*s;
	uint64_t	 sent = 0;
	size_t		 idx = 0, off, len;
	ssize_t		 n;
	int		 last;

	while (sent < f->total) {
		pthread_mutex_lock(&f->mtx);
		s = &f->slots[idx];
		while (!s->unsent && f->verdict != -1)
			pthread_cond_wait(&f->cv, &f->mtx);
		pthread_mutex_unlock(&f->mtx);
		if (f->verdict == -1)
			return (NULL);
		len = s->len;
		last = sent + len == f->total;
		for (off = 0; off < len; ) {
			if (last && off == len - 1) {
				pthread_mutex_lock(&f->mtx);
				while (f->verdict == 0)
					pthread_cond_wait(&f->cv, &f->mtx);
				pthread_mutex_unlock(&f->mtx);
				if (f->verdict != 1)
					return (NULL);
			}
			n = send(f->cfd, s->buf + off, (last && off < len - 1) ?
			    len - 1 - off : len - off, 0);
			if (n == -1 && errno == EINTR)
				continue;
			if (n <= 0)
				return (NULL);	/* client gone */
			off += (size_t)n;
		}
		sent += len;
		pthread_mutex_lock(&f->mtx);
		s->unsent = 0;
		pthread_cond_broadcast(&f->cv);
		pthread_mutex_unlock(&f->mtx);
		idx = (idx + 1) % f->nslot;
	}
	return (NULL);
}

static void
reply(int cfd, const char *status)
{
	char	b[256];
	int	n;

	n = snprintf(b, sizeof(b), "HTTP/1.1 %s\r\nContent-Length: 0\r\n"
	    "Connection: close\r\n\r\n", status);
	(void)writeall(cfd, b, (size_t)n);
}

static void
serve(int cfd, int uport, const char *dir, size_t slotsz, size_t nslot)
{
	struct sockaddr_in	 sin;
	struct fill		 f;
	pthread_t		 ht, st;
	char			 head[HEAD_MAX], path[2048], digest[80];
	char			 tmp[4096], dst[4096], req[4096], *p, *cl;
	unsigned char		 md[EVP_MAX_MD_SIZE];
	unsigned int		 mdlen, i;
	size_t			 extra, off;
	uint64_t		 synced = 0;
	off_t			 soff = 0;
	ssize_t			 hl, r;
	struct slot		*s;
	int			 ufd, n;

	if ((hl = readhead(cfd, head, sizeof(head), &extra)) == -1)
		return;
	if (sscanf(head, "GET %2047s HTTP/1.1", path) != 1) {
		reply(cfd, "400 Bad Request");
		return;
	}
	if (strcmp(path, "/healthz") == 0) {
		reply(cfd, "200 OK");
		return;
	}
	if ((p = strstr(path, "/blobs/sha256:")) == NULL ||
	    strlen(p + 7) != 71) {
		reply(cfd, "404 Not Found");
		return;
	}
	snprintf(digest, sizeof(digest), "%s", p + 7);

	/* The one upstream GET. */
	if ((ufd = socket(AF_INET, SOCK_STREAM, 0)) == -1)
		die("socket");
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons((uint16_t)uport);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(ufd, (struct sockaddr *)&sin, sizeof(sin)) == -1) {
		reply(cfd, "502 Bad Gateway");
		close(ufd);
		return;
	}
	n = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d"
	    "\r\nConnection: close\r\n\r\n", path, uport);
	if (writeall(ufd, req, (size_t)n) == -1 ||
	    (hl = readhead(ufd, head, sizeof(head), &extra)) == -1 ||
	    strncmp(head, "HTTP/1.1 200 ", 13) != 0 ||
	    (cl = strcasestr(head, "\r\nContent-Length:")) == NULL) {
		reply(cfd, "502 Bad Gateway");
		close(ufd);
		return;
	}

	memset(&f, 0, sizeof(f));
	pthread_mutex_init(&f.mtx, NULL);
	pthread_cond_init(&f.cv, NULL);
	f.total = strtoull(cl + 17, NULL, 10);
	f.cfd = cfd;
	f.nslot = nslot;
	f.slotsz = slotsz;
	if (f.total == 0 || (f.slots = calloc(nslot, sizeof(*f.slots))) ==
	    NULL)
		die("calloc");
	for (i = 0; i < nslot; i++)
		if (posix_memalign((void **)&f.slots[i].buf, 4096, slotsz) != 0)
			die("posix_memalign");
	if ((f.md = EVP_MD_CTX_new()) == NULL ||
	    EVP_DigestInit_ex(f.md, EVP_sha256(), NULL) != 1)
		die("EVP");
	snprintf(tmp, sizeof(tmp), "%s/tmp.XXXXXX", dir);
	if ((f.fd = mkostemp(tmp, direct_io ? O_DIRECT : 0)) == -1)
		die("mkstemp");
	(void)fallocate(f.fd, FALLOC_FL_KEEP_SIZE, 0, (off_t)f.total);
	n = snprintf(req, sizeof(req), "HTTP/1.1 200 OK\r\nContent-Type: "
	    "application/octet-stream\r\nContent-Length: %llu\r\n"
	    "Docker-Content-Digest: %s\r\nConnection: close\r\n\r\n",
	    (unsigned long long)f.total, digest);
	if (writeall(cfd, req, (size_t)n) == -1)
		goto out;
	if (!inline_hash)
		pthread_create(&ht, NULL, hash_main, &f);
	if (!serial)
		pthread_create(&st, NULL, send_mem ? send_mem_main : send_main,
		    &f);

	/* Receive into the ring, write each slot, hand it to the hash. */
	r = 0;
	for (;;) {
		pthread_mutex_lock(&f.mtx);
		s = &f.slots[f.head];
		while (s->full || s->unsent)
			pthread_cond_wait(&f.cv, &f.mtx);
		pthread_mutex_unlock(&f.mtx);
		off = 0;
		if (extra > 0) {	/* body bytes that came with the head */
			memcpy(s->buf, head + hl, extra);
			off = extra;
			extra = 0;
		}
		while (off < slotsz && f.written + off < f.total) {
			r = read(ufd, s->buf + off, slotsz - off);
			if (r == -1 && errno == EINTR)
				continue;
			if (r <= 0)
				break;
			off += (size_t)r;
		}
		if (off == 0)
			break;
		if (send_mem) {		/* the client need not wait for the disk */
			pthread_mutex_lock(&f.mtx);
			s->len = off;
			s->unsent = 1;
			pthread_cond_broadcast(&f.cv);
			pthread_mutex_unlock(&f.mtx);
		}
		if (!direct_io && writeall(f.fd, s->buf, off) == -1)
			die("write");
		if (inline_hash && EVP_DigestUpdate(f.md, s->buf, off) != 1)
			die("EVP");
		/* Start writeback as it goes: the fdatasync before the last
		 * byte would otherwise wait for the whole blob's writes. */
		if (!direct_io && sync_step > 0 && f.written + off - synced >= sync_step) {
			(void)sync_file_range(f.fd, (off_t)synced,
			    (off_t)(f.written + off - synced),
			    SYNC_FILE_RANGE_WRITE);
			synced = f.written + off;
		}
		pthread_mutex_lock(&f.mtx);
		f.written += off;
		s->len = off;
		s->full = !inline_hash;
		f.head = (f.head + 1) % f.nslot;
		pthread_cond_broadcast(&f.cv);
		pthread_mutex_unlock(&f.mtx);
		/* FLOOR_SERIAL: send on this thread, as one event loop would. */
		if (serial && send_upto(&f, &soff, f.written < f.total ?
		    f.written : f.total - 1) == -1)
			break;
		if (r <= 0 || f.written >= f.total)
			break;
	}
	close(ufd);
	pthread_mutex_lock(&f.mtx);
	f.eof = 1;
	pthread_cond_broadcast(&f.cv);
	pthread_mutex_unlock(&f.mtx);
	if (!inline_hash)
		pthread_join(ht, NULL);

	/* Verify, make durable, publish; then the last byte goes. */
	EVP_DigestFinal_ex(f.md, md, &mdlen);
	p = digest + 7;
	for (i = 0; i < mdlen; i++)
		snprintf(req + 2 * i, 3, "%02x", md[i]);
	snprintf(dst, sizeof(dst), "%s/%s", dir, p);
	pthread_mutex_lock(&f.mtx);
	if (f.written == f.total && strcmp(req, p) == 0 &&
	    fdatasync(f.fd) == 0 && rename(tmp, dst) == 0)
		f.verdict = 1;
	else
		f.verdict = -1;
	pthread_cond_broadcast(&f.cv);
	pthread_mutex_unlock(&f.mtx);
	if (serial) {
		if (f.verdict == 1)
			(void)send_upto(&f, &soff, f.total);
	} else
		pthread_join(st, NULL);
	if (f.verdict != 1) {
		fprintf(stderr, "fill_floor: %s failed (%llu of %llu bytes)\n",
		    digest, (unsigned long long)f.written,
		    (unsigned long long)f.total);
		unlink(tmp);
	}
out:
	close(f.fd);
	EVP_MD_CTX_free(f.md);
	for (i = 0; i < nslot; i++)
		free(f.slots[i].buf);
	free(f.slots);
	pthread_mutex_destroy(&f.mtx);
	pthread_cond_destroy(&f.cv);
}

int
main(int argc, char *argv[])
{
	struct sockaddr_in	 sin;
	size_t			 slotsz = 256 * 1024, nslot = 16;
	int			 lfd, cfd, one = 1;
	const char		*e;

	if (argc < 4 || argc > 6) {
		fprintf(stderr, "usage: fill_floor LISTEN_PORT UPSTREAM_PORT "
		    "CACHE_DIR [SLOT_KIB [NSLOT]]\n");
		return (2);
	}
	if (argc >= 5)
		slotsz = strtoul(argv[4], NULL, 10) * 1024;
	if (argc >= 6)
		nslot = strtoul(argv[5], NULL, 10);
	if (slotsz < 4096 || slotsz > 64 * 1048576 || nslot < 2 ||
	    nslot > 1024) {
		fprintf(stderr, "fill_floor: SLOT_KIB 4..65536, NSLOT 2..1024\n");
		return (2);
	}
	inline_hash = (e = getenv("FLOOR_INLINE")) != NULL && *e == '1';
	send_mem = (e = getenv("FLOOR_SEND")) != NULL &&
	    strcmp(e, "mem") == 0;
	serial = (e = getenv("FLOOR_SERIAL")) != NULL && *e == '1';
	if ((e = getenv("FLOOR_DIRECT")) != NULL && *e == '1') {
		serial = 0;
		direct_io = send_mem = 1;
		inline_hash = 0;
		if (slotsz % 4096 != 0) {
			fprintf(stderr, "fill_floor: FLOOR_DIRECT needs "
			    "SLOT_KIB a multiple of 4\n");
			return (2);
		}
	}
	if ((e = getenv("FLOOR_SYNC_MIB")) != NULL)
		sync_step = strtoull(e, NULL, 10) * 1048576;
	signal(SIGPIPE, SIG_IGN);
	if ((lfd = socket(AF_INET, SOCK_STREAM, 0)) == -1)
		die("socket");
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons((uint16_t)atoi(argv[1]));
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(lfd, (struct sockaddr *)&sin, sizeof(sin)) == -1 ||
	    listen(lfd, 16) == -1)
		die("bind/listen");
	for (;;) {
		if ((cfd = accept(lfd, NULL, NULL)) == -1) {
			if (errno == EINTR)
				continue;
			die("accept");
		}
		serve(cfd, atoi(argv[2]), argv[3], slotsz, nslot);
		close(cfd);
	}
}
