/*
 * load.c: the bench scripts' HTTP load generator (bench/audit_bench.sh,
 * bench/policy_http.sh compile it).  CONNS threads, one keep-alive
 * connection each to 127.0.0.1:PORT, GET PATH in a loop for SECONDS, with
 * one optional extra header line; a response counts when it is a 200 read
 * whole (Content-Length).  Prints "<req/s> <requests> <failed>".
 *
 *	load PORT PATH CONNS SECONDS [HEADER]
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

static int port, secs;
static const char *path, *hdr = "";
static volatile int stop;

static double now(void) {
	struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static void *worker(void *arg) {
	long n = 0, bad = 0;
	char req[2048], buf[65536];
	int fd = -1, one = 1, len = snprintf(req, sizeof(req),
	    "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: bench\r\n%s%s\r\n",
	    path, hdr, *hdr != '\0' ? "\r\n" : "");
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
		if (write(fd, req, len) != len) { close(fd); fd = -1; bad++; continue; }
		for (;;) {
			ssize_t r = read(fd, buf + have, sizeof(buf) - have - 1);
			if (r <= 0) break;
			have += r; buf[have] = 0;
			if (eoh == NULL && (eoh = strstr(buf, "\r\n\r\n")) != NULL) {
				char *cl = strcasestr(buf, "\r\nContent-Length:");
				need = (eoh - buf) + 4 + (cl ? strtoul(cl + 17, NULL, 10) : 0);
			}
			if (eoh != NULL && have >= need) break;
			if (have >= sizeof(buf) - 1) have = 0, eoh = NULL;	/* large: give up parsing */
		}
		if (eoh == NULL || have < need || strncmp(buf, "HTTP/1.1 200", 12) != 0) {
			bad++; close(fd); fd = -1; continue;
		}
		n++;
	}
	if (fd != -1) close(fd);
	long *res = malloc(2 * sizeof(long)); res[0] = n; res[1] = bad;
	return res;
}

int main(int argc, char **argv) {
	int i, conns = atoi(argv[3]);
	long total = 0, bad = 0;
	pthread_t t[256];
	if (argc < 5) {
		fprintf(stderr, "usage: load PORT PATH CONNS SECONDS [HEADER]\n");
		return 2;
	}
	port = atoi(argv[1]); path = argv[2]; secs = atoi(argv[4]);
	if (argc > 5 && strlen(argv[5]) < 1024) hdr = argv[5];
	double t0 = now();
	for (i = 0; i < conns && i < 256; i++) pthread_create(&t[i], NULL, worker, NULL);
	sleep(secs);
	stop = 1;
	for (i = 0; i < conns && i < 256; i++) {
		long *r; pthread_join(t[i], (void **)&r); total += r[0]; bad += r[1]; free(r);
	}
	printf("%.0f %ld %ld\n", total / (now() - t0), total, bad);
	return 0;
}
