/*
 * login_http.c: a blocking HTTP/1.1 client for the terminal sign-in
 * (login_cli.c, credhelper.c): one request per connection, http or
 * https (OpenSSL, the peer's certificate verified against the system's
 * CAs or a given file, its name or IP address checked), every read and
 * write bounded by LOGIN_IO_TIMEOUT and the answer by LOGIN_MAX_ANSWER.
 * The timeout is the whole request's (connect, handshake, request and
 * answer), not each read's: a peer dribbling a byte now and then must not
 * hold the command (or docker, behind the credential helper) for days.
 * The socket is non-blocking; every wait is a poll() for what is left.
 * Nothing it sends or receives is printed: forms carry tokens.
 */
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "portcullis.h"
#include "login.h"

struct lconn {
	int		 fd;
	SSL_CTX		*ctx;
	SSL		*ssl;
	struct timespec	 deadline;	/* CLOCK_MONOTONIC */
};

/* Wait until fd is readable (or writable); -1 once the deadline passed. */
static int
lconn_wait(struct lconn *c, int out)
{
	struct pollfd	 pfd;
	struct timespec	 now;
	long long	 ms;
	int		 r;

	for (;;) {
		clock_gettime(CLOCK_MONOTONIC, &now);
		ms = (long long)(c->deadline.tv_sec - now.tv_sec) * 1000 +
		    (c->deadline.tv_nsec - now.tv_nsec) / 1000000;
		if (ms <= 0) {
			errno = ETIMEDOUT;
			return (-1);
		}
		pfd.fd = c->fd;
		pfd.events = out ? POLLOUT : POLLIN;
		pfd.revents = 0;
		if ((r = poll(&pfd, 1, (int)ms)) > 0)
			return (0);
		if (r == -1 && errno != EINTR)
			return (-1);
	}
}

/* After an SSL call returned r <= 0: 1 wait and retry, 0 no. */
static int
lconn_ssl_retry(struct lconn *c, int r)
{
	switch (SSL_get_error(c->ssl, r)) {
	case SSL_ERROR_WANT_READ:
		return (lconn_wait(c, 0) == 0);
	case SSL_ERROR_WANT_WRITE:
		return (lconn_wait(c, 1) == 0);
	default:
		return (0);
	}
}

static void
lconn_close(struct lconn *c)
{
	if (c->ssl != NULL) {
		SSL_shutdown(c->ssl);
		SSL_free(c->ssl);
	}
	SSL_CTX_free(c->ctx);
	if (c->fd != -1)
		close(c->fd);
}

static int
lconn_open(struct lconn *c, const struct url *u, const char *ca_file,
    char *err, size_t errlen)
{
	struct addrinfo	 hints, *res, *ai;
	socklen_t	 elen;
	char		 port[16];
	int		 e, r;

	memset(c, 0, sizeof(*c));
	c->fd = -1;
	clock_gettime(CLOCK_MONOTONIC, &c->deadline);
	c->deadline.tv_sec += LOGIN_IO_TIMEOUT;
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	snprintf(port, sizeof(port), "%d", u->port);
	if ((e = getaddrinfo(u->host, port, &hints, &res)) != 0) {
		snprintf(err, errlen, "%s: %s", u->host, gai_strerror(e));
		return (-1);
	}
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		if ((c->fd = socket(ai->ai_family, ai->ai_socktype |
		    SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol)) == -1)
			continue;
		if (connect(c->fd, ai->ai_addr, ai->ai_addrlen) == 0)
			break;
		if (errno == EINPROGRESS && lconn_wait(c, 1) == 0) {
			elen = sizeof(e);
			if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &e,
			    &elen) == 0 && e == 0)
				break;
			if (elen == sizeof(e) && e != 0)
				errno = e;
		}
		e = errno;
		close(c->fd);
		c->fd = -1;
		errno = e;
	}
	freeaddrinfo(res);
	if (c->fd == -1) {
		snprintf(err, errlen, "%s:%d: %s", u->host, u->port,
		    strerror(errno));
		return (-1);
	}
	if (!u->tls)
		return (0);
	if ((c->ctx = SSL_CTX_new(TLS_client_method())) == NULL)
		fatalx("SSL_CTX_new");
	SSL_CTX_set_min_proto_version(c->ctx, TLS1_2_VERSION);
	SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, NULL);
	if ((ca_file != NULL && SSL_CTX_load_verify_locations(c->ctx,
	    ca_file, NULL) != 1) || (ca_file == NULL &&
	    SSL_CTX_set_default_verify_paths(c->ctx) != 1)) {
		snprintf(err, errlen, "cannot load CA certificates%s%s",
		    ca_file != NULL ? " from " : "",
		    ca_file != NULL ? ca_file : "");
		lconn_close(c);
		return (-1);
	}
	if ((c->ssl = SSL_new(c->ctx)) == NULL)
		fatalx("SSL_new");
	SSL_set_fd(c->ssl, c->fd);
	if (inet_pton(AF_INET, u->host, port) == 1 ||
	    inet_pton(AF_INET6, u->host, port) == 1) {
		if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl),
		    u->host) != 1)
			fatalx("X509_VERIFY_PARAM_set1_ip_asc");
	} else {
		SSL_set_tlsext_host_name(c->ssl, u->host);
		if (SSL_set1_host(c->ssl, u->host) != 1)
			fatalx("SSL_set1_host");
	}
	while ((r = SSL_connect(c->ssl)) != 1 && lconn_ssl_retry(c, r))
		continue;
	if (r != 1) {
		e = (int)SSL_get_verify_result(c->ssl);
		snprintf(err, errlen, "TLS with %s:%d failed: %s", u->host,
		    u->port, e != X509_V_OK ?
		    X509_verify_cert_error_string(e) :
		    ERR_reason_error_string(ERR_get_error()));
		lconn_close(c);
		return (-1);
	}
	return (0);
}

static int
lconn_write(struct lconn *c, const char *p, size_t n)
{
	ssize_t	w;

	while (n > 0) {
		if (c->ssl != NULL) {
			w = SSL_write(c->ssl, p, (int)n);
			if (w <= 0 && lconn_ssl_retry(c, (int)w))
				continue;
		} else {
			w = write(c->fd, p, n);
			if (w == -1 && (errno == EAGAIN || errno == EINTR) &&
			    lconn_wait(c, 1) == 0)
				continue;
		}
		if (w <= 0)
			return (-1);
		p += w;
		n -= (size_t)w;
	}
	return (0);
}

/* Everything up to EOF, at most max bytes; -1 on error or too much. */
static int
lconn_read_all(struct lconn *c, char **out, size_t *len, size_t max)
{
	char	*buf;
	size_t	 n = 0, cap = 8192;
	ssize_t	 r;

	if ((buf = malloc(cap + 1)) == NULL)
		fatal("malloc");
	for (;;) {
		if (n == cap) {
			/* Room for the head: the body alone may be max. */
			if (cap >= max + 65536) {
				free(buf);
				return (-1);
			}
			cap = cap * 2 > max + 65536 ? max + 65536 : cap * 2;
			if ((buf = realloc(buf, cap + 1)) == NULL)
				fatal("realloc");
		}
		if (c->ssl != NULL) {
			r = SSL_read(c->ssl, buf + n, (int)(cap - n));
			if (r <= 0 && lconn_ssl_retry(c, (int)r))
				continue;
			if (r <= 0 && SSL_get_error(c->ssl, (int)r) ==
			    SSL_ERROR_ZERO_RETURN)
				r = 0;
			else if (r <= 0 && SSL_get_error(c->ssl, (int)r) ==
			    SSL_ERROR_SYSCALL && ERR_peek_error() == 0)
				r = 0;	/* closed without close_notify */
		} else {
			r = read(c->fd, buf + n, cap - n);
			if (r == -1 && (errno == EAGAIN || errno == EINTR) &&
			    lconn_wait(c, 0) == 0)
				continue;
		}
		if (r < 0) {
			free(buf);
			return (-1);
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	buf[n] = '\0';
	*out = buf;
	*len = n;
	return (0);
}

/* Decode a chunked body in place; -1 when malformed. */
static int
dechunk(char *b, size_t len, size_t *outlen)
{
	size_t	 i = 0, o = 0, sz;
	char	*end;

	for (;;) {
		if (i >= len)
			return (-1);
		sz = strtoul(b + i, &end, 16);
		if (end == b + i || (end = strstr(end, "\r\n")) == NULL)
			return (-1);
		i = (size_t)(end - b) + 2;
		if (sz == 0)
			break;
		if (sz > len - i)
			return (-1);
		memmove(b + o, b + i, sz);
		o += sz;
		i += sz + 2;
	}
	b[o] = '\0';
	*outlen = o;
	return (0);
}

/*
 * An answer read whole (raw[rawlen] == '\0'; raw is changed): the status
 * and a copy of the body (de-chunked) in *out.  0; -1 not HTTP, -2 bad
 * chunked body, -3 a body over LOGIN_MAX_ANSWER.  Apart from the socket
 * so that tests/fuzz/fuzz_login_http.c reaches it.
 */
int
login_http_parse(char *raw, size_t rawlen, struct login_resp *out)
{
	char	*hend, *p;
	size_t	 blen;

	memset(out, 0, sizeof(*out));
	if (sscanf(raw, "HTTP/1.%*[01] %d", &out->status) != 1 ||
	    (hend = strstr(raw, "\r\n\r\n")) == NULL)
		return (-1);
	*hend = '\0';
	p = hend + 4;
	blen = rawlen - (size_t)(p - raw);
	if (strcasestr(raw, "\r\ntransfer-encoding: chunked") != NULL &&
	    dechunk(p, blen, &blen) == -1)
		return (-2);
	if (blen > LOGIN_MAX_ANSWER)
		return (-3);
	if ((out->body = malloc(blen + 1)) == NULL)
		fatal("malloc");
	memcpy(out->body, p, blen);
	out->body[blen] = '\0';
	out->len = blen;
	return (0);
}

void
login_resp_free(struct login_resp *r)
{
	if (r->body != NULL) {
		OPENSSL_cleanse(r->body, r->len);
		free(r->body);
	}
	r->body = NULL;
}

/*
 * One request: method to url with an optional body of type ctype.  The
 * status and the body (at most LOGIN_MAX_ANSWER) in *out.  0, or -1 with
 * err (never any of the bytes sent).
 */
int
login_http(const char *method, const char *url, const char *ctype,
    const char *body, const char *ca_file, struct login_resp *out,
    char *err, size_t errlen)
{
	struct url	 u;
	struct lconn	 c;
	char		 hp[300], *req, *raw;
	size_t		 rawlen;
	int		 rv = -1, n;

	memset(out, 0, sizeof(*out));
	if (url_parse(url, &u) == -1 || url_hostport(&u, hp, sizeof(hp)) ==
	    -1) {
		snprintf(err, errlen, "not an http(s) URL: %.200s", url);
		return (-1);
	}
	if (lconn_open(&c, &u, ca_file, err, errlen) == -1)
		return (-1);
	n = asprintf(&req, "%s %s HTTP/1.1\r\nHost: %s\r\n"
	    "User-Agent: portcullis-login/%s\r\nAccept: application/json\r\n"
	    "Connection: close\r\n%s%s%s"
	    "Content-Length: %zu\r\n\r\n%s", method,
	    u.path[0] != '\0' ? u.path : "/", hp, PC_VERSION,
	    ctype != NULL ? "Content-Type: " : "",
	    ctype != NULL ? ctype : "", ctype != NULL ? "\r\n" : "",
	    body != NULL ? strlen(body) : 0, body != NULL ? body : "");
	if (n == -1)
		fatal("asprintf");
	if (lconn_write(&c, req, (size_t)n) == -1) {
		snprintf(err, errlen, "%s: cannot send the request", hp);
		goto done;
	}
	if (lconn_read_all(&c, &raw, &rawlen, LOGIN_MAX_ANSWER) == -1) {
		snprintf(err, errlen, "%s: no answer, or one over %d bytes",
		    hp, LOGIN_MAX_ANSWER);
		goto done;
	}
	switch (login_http_parse(raw, rawlen, out)) {
	case 0:
		rv = 0;
		break;
	case -2:
		snprintf(err, errlen, "%s: malformed chunked answer", hp);
		break;
	case -3:
		snprintf(err, errlen, "%s: no answer, or one over %d bytes",
		    hp, LOGIN_MAX_ANSWER);
		break;
	default:
		snprintf(err, errlen, "%s: not an HTTP answer", hp);
		break;
	}
	OPENSSL_cleanse(raw, rawlen);
	free(raw);
done:
	OPENSSL_cleanse(req, (size_t)n);
	free(req);
	lconn_close(&c);
	return (rv);
}

/* A request whose answer is a JSON object: it, with *status; or NULL. */
json_t *
login_http_json(const char *method, const char *url, const char *form,
    const char *ca_file, int *status, char *err, size_t errlen)
{
	struct login_resp	 r;
	json_t			*doc;

	if (login_http(method, url, form != NULL ?
	    "application/x-www-form-urlencoded" : NULL, form, ca_file, &r,
	    err, errlen) == -1)
		return (NULL);
	*status = r.status;
	doc = json_loadb(r.body, r.len, 0, NULL);
	login_resp_free(&r);
	if (doc == NULL || !json_is_object(doc)) {
		json_decref(doc);
		snprintf(err, errlen, "%s answered HTTP %d without a JSON "
		    "object", url, *status);
		return (NULL);
	}
	return (doc);
}

/* name=value pairs (NULL-terminated, values may be NULL: skipped). */
char *
login_form(const char *const *kv)
{
	char	*f = NULL, *t, *v;
	size_t	 i, n;

	if ((f = strdup("")) == NULL)
		fatal("strdup");
	for (i = 0; kv[i] != NULL; i += 2) {
		if (kv[i + 1] == NULL)
			continue;
		n = strlen(kv[i + 1]) * 3 + 1;
		if ((v = malloc(n)) == NULL)
			fatal("malloc");
		if (url_pct_encode(kv[i + 1], v, n) == -1)
			fatalx("url_pct_encode");
		if (asprintf(&t, "%s%s%s=%s", f, *f != '\0' ? "&" : "",
		    kv[i], v) == -1)
			fatal("asprintf");
		OPENSSL_cleanse(v, strlen(v));
		free(v);
		OPENSSL_cleanse(f, strlen(f));
		free(f);
		f = t;
	}
	return (f);
}
