/*
 * url.c: parse the absolute http(s) URLs that name upstreams and token
 * realms (RFC 3986 3), render host:port for Host headers, and read, strip
 * and encode query strings.
 *
 * Guarantees, for any input: every write is bounded by the destination's
 * size, every output string is NUL-terminated (empty on failure), and a
 * parsed URL holds only printable ASCII.  Nothing is normalised beyond
 * lowercasing scheme and host: a URL that would need it (userinfo, empty
 * port, zone ids, spaces) is refused so that what is configured is what
 * is dialled.  Pure functions, no allocation, no locale.
 */
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "url.h"

static int
url_lower(int ch)
{
	return (ch >= 'A' && ch <= 'Z') ? ch - 'A' + 'a' : ch;
}

static int
url_digit(int ch)
{
	return ch >= '0' && ch <= '9';
}

static int
url_hexval(int ch)
{
	if (url_digit(ch))
		return ch - '0';
	ch = url_lower(ch);
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	return -1;
}

static int
url_alnum(int ch)
{
	ch = url_lower(ch);
	return url_digit(ch) || (ch >= 'a' && ch <= 'z');
}

/* Case-insensitive ASCII prefix test. */
static int
url_prefix(const char *s, const char *pfx)
{
	for (; *pfx != '\0'; s++, pfx++) {
		if (url_lower((unsigned char)*s) != *pfx)
			return 0;
	}
	return 1;
}

/* Store host (len bytes) lowercased; 0 ok, -1 when it does not fit. */
static int
url_set_host(struct url *u, const char *h, size_t len)
{
	size_t	i;

	if (len == 0 || len >= sizeof(u->host))
		return -1;
	for (i = 0; i < len; i++)
		u->host[i] = (char)url_lower((unsigned char)h[i]);
	u->host[len] = '\0';
	return 0;
}

/* port = 1*5DIGIT, 1..65535; no empty port, no sign, no spaces. */
static int
url_set_port(struct url *u, const char *p, size_t len)
{
	size_t	i;
	int	port = 0;

	if (len == 0 || len > 5)
		return -1;
	for (i = 0; i < len; i++) {
		if (!url_digit((unsigned char)p[i]))
			return -1;
		port = port * 10 + (p[i] - '0');
	}
	if (port < 1 || port > 65535)
		return -1;
	u->port = port;
	return 0;
}

/* Parse an http or https URL; see url.h. */
int
url_parse(const char *s, struct url *u)
{
	const char	*a, *e, *h, *close, *colon;
	size_t		 i, hlen, plen;

	memset(u, 0, sizeof(*u));
	if (s == NULL)
		return -1;
	for (i = 0; s[i] != '\0'; i++) {
		if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f)
			goto bad;
	}
	if (url_prefix(s, "http://")) {
		memcpy(u->scheme, "http", sizeof("http"));
		u->port = 80;
		a = s + 7;
	} else if (url_prefix(s, "https://")) {
		memcpy(u->scheme, "https", sizeof("https"));
		u->port = 443;
		u->tls = 1;
		a = s + 8;
	} else
		goto bad;

	e = a + strcspn(a, "/?#");
	if (memchr(a, '@', e - a) != NULL)
		goto bad;
	if (*a == '[') {
		/* IP-literal: hex, ':' and a dotted IPv4 tail; no zone id. */
		if ((close = memchr(a, ']', e - a)) == NULL)
			goto bad;
		h = a + 1;
		hlen = close - h;
		if (memchr(h, ':', hlen) == NULL)
			goto bad;
		for (i = 0; i < hlen; i++) {
			if (url_hexval((unsigned char)h[i]) == -1 &&
			    h[i] != ':' && h[i] != '.')
				goto bad;
		}
		colon = close + 1;
		if (colon != e && *colon != ':')
			goto bad;
	} else {
		h = a;
		if ((colon = memchr(a, ':', e - a)) == NULL)
			colon = e;
		hlen = colon - h;
		for (i = 0; i < hlen; i++) {
			if (!url_alnum((unsigned char)h[i]) && h[i] != '-' &&
			    h[i] != '.' && h[i] != '_')
				goto bad;
		}
	}
	if (url_set_host(u, h, hlen) == -1)
		goto bad;
	if (colon != e && url_set_port(u, colon + 1, e - colon - 1) == -1)
		goto bad;

	plen = strlen(e);
	if (plen >= sizeof(u->path))
		goto bad;
	memcpy(u->path, e, plen + 1);
	return 0;
bad:
	memset(u, 0, sizeof(*u));
	return -1;
}

/* Host header value for u; see url.h. */
int
url_hostport(const struct url *u, char *out, size_t len)
{
	int	 n, v6, def;

	if (out == NULL || len == 0)
		return -1;
	out[0] = '\0';
	if (u == NULL || u->host[0] == '\0' ||
	    memchr(u->host, '\0', sizeof(u->host)) == NULL)
		return -1;
	v6 = strchr(u->host, ':') != NULL;
	def = u->port == (u->tls ? 443 : 80);
	if (def)
		n = snprintf(out, len, v6 ? "[%s]" : "%s", u->host);
	else
		n = snprintf(out, len, v6 ? "[%s]:%d" : "%s:%d", u->host,
		    u->port);
	if (n < 0 || (size_t)n >= len) {
		out[0] = '\0';
		return -1;
	}
	return n;
}

/*
 * Percent-decode len bytes of s into out, '+' as space (the
 * application/x-www-form-urlencoded convention query strings follow).  A
 * NUL, raw or as %00, is refused: it would cut the value short.
 */
static int
url_pct_decode(const char *s, size_t len, char *out, size_t outlen)
{
	size_t	i, o = 0;
	int	hi, lo, ch;

	for (i = 0; i < len; i++) {
		ch = (unsigned char)s[i];
		if (ch == '%') {
			if (len - i < 3 ||
			    (hi = url_hexval((unsigned char)s[i + 1])) == -1 ||
			    (lo = url_hexval((unsigned char)s[i + 2])) == -1)
				goto bad;
			ch = hi << 4 | lo;
			i += 2;
		} else if (ch == '+')
			ch = ' ';
		if (ch == '\0' || o + 1 >= outlen)
			goto bad;
		out[o++] = (char)ch;
	}
	if (o >= outlen || o > INT_MAX)
		goto bad;
	out[o] = '\0';
	return (int)o;
bad:
	out[0] = '\0';
	return -1;
}

/*
 * Walk the non-empty '&'-separated parameters of query from *off; set p and
 * plen to the next one and nlen to the length of its name.  0 when done.
 */
static int
url_query_next(const char *query, size_t qlen, size_t *off,
    const char **p, size_t *plen, size_t *nlen)
{
	const char	*amp, *eq;
	size_t		 end;

	while (*off < qlen) {
		*p = query + *off;
		amp = memchr(*p, '&', qlen - *off);
		end = amp != NULL ? (size_t)(amp - query) : qlen;
		*plen = end - *off;
		*off = end + 1;
		if (*plen == 0)
			continue;
		eq = memchr(*p, '=', *plen);
		*nlen = eq != NULL ? (size_t)(eq - *p) : *plen;
		return 1;
	}
	return 0;
}

/* Decoded value of the first parameter named key; see url.h. */
int
url_query_get(const char *query, size_t qlen, const char *key, char *out,
    size_t outlen)
{
	const char	*p;
	size_t		 off = 0, plen, nlen, klen;

	if (out == NULL || outlen == 0)
		return -1;
	out[0] = '\0';
	if (query == NULL || key == NULL)
		return -1;
	klen = strlen(key);
	while (url_query_next(query, qlen, &off, &p, &plen, &nlen)) {
		if (nlen != klen || memcmp(p, key, klen) != 0)
			continue;
		if (nlen == plen)
			return 0;	/* "key" alone: an empty value */
		if (url_pct_decode(p + nlen + 1, plen - nlen - 1, out,
		    outlen) == -1)
			return -1;
		return 0;
	}
	return -1;
}

/* The query without parameters named key; see url.h. */
int
url_query_strip(const char *query, size_t qlen, const char *key, char *out,
    size_t outlen)
{
	const char	*p;
	size_t		 off = 0, o = 0, plen, nlen, klen, sep;

	if (out == NULL || outlen == 0)
		return -1;
	out[0] = '\0';
	if (key == NULL || (query == NULL && qlen != 0))
		return -1;
	klen = strlen(key);
	while (url_query_next(query, qlen, &off, &p, &plen, &nlen)) {
		if (nlen == klen && memcmp(p, key, klen) == 0)
			continue;
		sep = o > 0;
		if (plen >= outlen - o - sep) {
			out[0] = '\0';
			return -1;
		}
		if (sep)
			out[o++] = '&';
		memcpy(out + o, p, plen);
		o += plen;
	}
	if (o > INT_MAX) {
		out[0] = '\0';
		return -1;
	}
	out[o] = '\0';
	return (int)o;
}

/* Percent-encode all but the unreserved characters; see url.h. */
int
url_pct_encode(const char *in, char *out, size_t outlen)
{
	static const char	 hex[] = "0123456789ABCDEF";
	size_t			 o = 0;
	unsigned char		 ch;

	if (out == NULL || outlen == 0)
		return -1;
	out[0] = '\0';
	if (in == NULL)
		return -1;
	for (; *in != '\0'; in++) {
		ch = (unsigned char)*in;
		if (url_alnum(ch) || ch == '-' || ch == '.' || ch == '_' ||
		    ch == '~') {
			if (outlen - o < 2)
				goto bad;
			out[o++] = (char)ch;
		} else {
			if (outlen - o < 4)
				goto bad;
			out[o++] = '%';
			out[o++] = hex[ch >> 4];
			out[o++] = hex[ch & 0xf];
		}
	}
	if (o > INT_MAX)
		goto bad;
	out[o] = '\0';
	return (int)o;
bad:
	out[0] = '\0';
	return -1;
}
