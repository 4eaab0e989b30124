/*
 * load.c: the bench scripts' HTTP load generator (bench/audit_bench.sh,
 * bench/policy_http.sh compile it).  CONNS threads, one keep-alive
 * connection each to 127.0.0.1:PORT, GET PATH in a loop for SECONDS, with
 * one optional extra header line; a response counts when it is a 200 read
 * whole (Content-Length; a body of any size is counted, not kept).  Prints "<req/s> <requests> <failed>".
 *
 * With -f FILE (bench/auth_bench.sh), every request also carries the next
 * line of FILE as a header line (e.g. "Authorization: Bearer <JWT>"),
 * shared by all connections in order and taken round-robin: a file of N
 * lines makes request k carry line k mod N, so no line comes back before
 * N - 1 others did.  Then a fourth field follows: the lines sent (failed
 * requests included), so that a caller can start the next run where this
 * one stopped (rotate the file by sent mod N) and tell whether any line
 * went twice (sent > N).  At most MAX_LINES lines of at most 4 KiB each.
 *
 *	load [-f FILE] PORT PATH CONNS SECONDS [HEADER]
 *
 * With LOAD_LATENCY=1 in the environment (bench/workers_bench.sh), each
 * response's time is kept (at most LAT_MAX per connection) and two more
 * fields follow: the median and the 99th percentile, in milliseconds.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_LINES	1000000
#define MAX_LINE	4096
#define LAT_MAX		(1 << 17)

static int port, secs;
static const char *path, *hdr = "";
static volatile int stop;
static char **lines;			/* -f: header lines, or NULL */
static size_t nlines;
static unsigned long next_line;		/* atomic: the next line to send */
static unsigned long sent_lines;	/* atomic: lines sent */
static int latency;			/* LOAD_LATENCY=1 */
struct res { long n, bad, nlat; float *lat; };

static void read_lines(const char *file) {
	FILE *f = fopen(file, "r");
	char buf[MAX_LINE + 2];
	if (f == NULL) { perror(file); exit(2); }
	if ((lines = calloc(MAX_LINES, sizeof(*lines))) == NULL) { perror("calloc"); exit(2); }
	while (fgets(buf, sizeof(buf), f) != NULL) {
		size_t n = strcspn(buf, "\r\n");
		if (buf[n] == '\0' && !feof(f)) { fprintf(stderr, "%s: line over %d bytes\n", file, MAX_LINE); exit(2); }
		if (n == 0) continue;
		if (nlines == MAX_LINES) { fprintf(stderr, "%s: over %d lines\n", file, MAX_LINES); exit(2); }
		buf[n] = '\0';
		if ((lines[nlines++] = strdup(buf)) == NULL) { perror("strdup"); exit(2); }
	}
	fclose(f);
	if (nlines == 0) { fprintf(stderr, "%s: no lines\n", file); exit(2); }
}

static int fcmp(const void *a, const void *b) {
	float x = *(const float *)a, y = *(const float *)b;
	return (x > y) - (x < y);
}

static double now(void) {
	struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static double now(void);

static void *worker(void *arg) {
	long n = 0, bad = 0, nlat = 0;
	float *lat = latency ? malloc(LAT_MAX * sizeof(*lat)) : NULL;
	double t0 = 0;
	char req[2048 + MAX_LINE + 8], buf[65536];
	int fd = -1, one = 1, len = snprintf(req, sizeof(req),
	    "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: bench\r\n%s%s\r\n",
	    path, hdr, *hdr != '\0' ? "\r\n" : ""), base = len - 2;
	struct sockaddr_in sa = { .sin_family = AF_INET,
	    .sin_port = htons(port) };
	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	while (!stop) {
		size_t have = 0, need = 0;
		char *eoh = NULL;
		if (fd == -1) {
			fd = socket(AF_INET, SOCK_STREAM, 0);
			setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
			if (connect(fd, (void *)&sa, sizeof(sa)) == -1) { perror("connect"); exit(1); }
		}
		if (lines != NULL) {	/* the next line, before the blank one */
			const char *l = lines[__atomic_fetch_add(&next_line, 1,
			    __ATOMIC_RELAXED) % nlines];
			len = base + snprintf(req + base, sizeof(req) - base,
			    "%s\r\n\r\n", l);
			__atomic_fetch_add(&sent_lines, 1, __ATOMIC_RELAXED);
		}
		if (lat != NULL) t0 = now();
		if (write(fd, req, len) != len) { close(fd); fd = -1; bad++; continue; }
		int ok = 0;
		for (;;) {
			/* After the head, the body is counted, not kept. */
			ssize_t r = eoh == NULL ?
			    read(fd, buf + have, sizeof(buf) - have - 1) :
			    read(fd, buf, sizeof(buf) - 1);
			if (r <= 0) break;
			if (eoh != NULL) { have += r; if (have >= need) break; continue; }
			have += r; buf[have] = 0;
			if ((eoh = strstr(buf, "\r\n\r\n")) != NULL) {
				char *cl = strcasestr(buf, "\r\nContent-Length:");
				need = (eoh - buf) + 4 + (cl ? strtoul(cl + 17, NULL, 10) : 0);
				ok = strncmp(buf, "HTTP/1.1 200", 12) == 0;
			}
			if (eoh != NULL && have >= need) break;
			if (eoh == NULL && have >= sizeof(buf) - 1) break;	/* head too large */
		}
		if (eoh == NULL || have < need || !ok) {
			bad++; close(fd); fd = -1; continue;
		}
		n++;
		if (lat != NULL && nlat < LAT_MAX) lat[nlat++] = (now() - t0) * 1e3;
	}
	if (fd != -1) close(fd);
	struct res *res = malloc(sizeof(*res));
	res->n = n; res->bad = bad; res->nlat = nlat; res->lat = lat;
	return res;
}

int main(int argc, char **argv) {
	int i, conns;
	long total = 0, bad = 0, nl = 0;
	float *all = NULL;
	pthread_t t[256];
	const char *e = getenv("LOAD_LATENCY");
	latency = e != NULL && strcmp(e, "1") == 0;
	if (argc > 2 && strcmp(argv[1], "-f") == 0) {
		read_lines(argv[2]);
		argc -= 2; argv += 2;
	}
	if (argc < 5) {
		fprintf(stderr, "usage: load [-f FILE] PORT PATH CONNS SECONDS [HEADER]\n");
		return 2;
	}
	conns = atoi(argv[3]);
	port = atoi(argv[1]); path = argv[2]; secs = atoi(argv[4]);
	if (argc > 5 && strlen(argv[5]) < 1024) hdr = argv[5];
	if (latency && (all = malloc((size_t)(conns < 256 ? conns : 256) *
	    LAT_MAX * sizeof(*all))) == NULL) { perror("malloc"); return 2; }
	double t0 = now();
	for (i = 0; i < conns && i < 256; i++) pthread_create(&t[i], NULL, worker, NULL);
	sleep(secs);
	stop = 1;
	for (i = 0; i < conns && i < 256; i++) {
		struct res *r; pthread_join(t[i], (void **)&r);
		total += r->n; bad += r->bad;
		if (r->lat != NULL) {
			memcpy(all + nl, r->lat, r->nlat * sizeof(*all));
			nl += r->nlat;
			free(r->lat);
		}
		free(r);
	}
	double el = now() - t0;
	if (lines != NULL)
		printf("%.0f %ld %ld %lu\n", total / el, total, bad,
		    sent_lines);
	else if (latency) {
		qsort(all, nl, sizeof(*all), fcmp);
		printf("%.0f %ld %ld %.2f %.2f\n", total / el, total, bad,
		    nl ? all[nl / 2] : 0.0, nl ? all[(long)(nl * 0.99)] : 0.0);
	} else
		printf("%.0f %ld %ld\n", total / el, total, bad);
	free(all);
	return 0;
}
