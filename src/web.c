/*
 * web.c: the pieces of the browser pages (web.h): text buffer, HTML
 * escaping, Cookie parsing, tokens.  Every value a page shows goes
 * through wbuf_esc(), and nothing else escapes HTML, so there is one
 * function to get right and to test.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "web.h"

void
wbuf_init(struct wbuf *b)
{
	b->p = NULL;
	b->len = b->cap = 0;
}

void
wbuf_free(struct wbuf *b)
{
	if (b->p != NULL) {
		OPENSSL_cleanse(b->p, b->cap);
		free(b->p);
	}
	wbuf_init(b);
}

static void
wbuf_grow(struct wbuf *b, size_t n)
{
	size_t	 cap;
	char	*p;

	if (b->len + n + 1 <= b->cap)
		return;
	cap = b->cap == 0 ? 1024 : b->cap;
	while (cap < b->len + n + 1)
		cap *= 2;
	if ((p = malloc(cap)) == NULL)
		abort();
	if (b->p != NULL) {
		memcpy(p, b->p, b->len);
		OPENSSL_cleanse(b->p, b->cap);
		free(b->p);
	}
	b->p = p;
	b->cap = cap;
}

void
wbuf_add(struct wbuf *b, const char *s, size_t n)
{
	wbuf_grow(b, n);
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

void
wbuf_str(struct wbuf *b, const char *s)
{
	wbuf_add(b, s, strlen(s));
}

void
wbuf_printf(struct wbuf *b, const char *fmt, ...)
{
	va_list	 ap;
	char	 tmp[256];
	int	 n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n < 0)
		abort();
	if ((size_t)n < sizeof(tmp)) {
		wbuf_add(b, tmp, (size_t)n);
		return;
	}
	wbuf_grow(b, (size_t)n);
	va_start(ap, fmt);
	vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

void
wbuf_esc(struct wbuf *b, const char *s)
{
	const unsigned char	*p;

	if (s == NULL)
		return;
	for (p = (const unsigned char *)s; *p != '\0'; p++) {
		switch (*p) {
		case '&':
			wbuf_add(b, "&amp;", 5);
			break;
		case '<':
			wbuf_add(b, "&lt;", 4);
			break;
		case '>':
			wbuf_add(b, "&gt;", 4);
			break;
		case '"':
			wbuf_add(b, "&quot;", 6);
			break;
		case '\'':
			wbuf_add(b, "&#39;", 5);
			break;
		default:
			if ((*p < 0x20 && *p != '\t' && *p != '\n') ||
			    *p == 0x7f)
				break;
			wbuf_add(b, (const char *)p, 1);
		}
	}
}

/* RFC 6265 4.1.1 cookie-octet. */
static int
web_cookie_octet(unsigned char c)
{
	return (c == 0x21 || (c >= 0x23 && c <= 0x2b) ||
	    (c >= 0x2d && c <= 0x3a) || (c >= 0x3c && c <= 0x5b) ||
	    (c >= 0x5d && c <= 0x7e));
}

int
web_cookie_get(const char *hdr, size_t max, const char *name, char *out,
    size_t outlen)
{
	const char	*p, *eq, *end;
	size_t		 nlen = strlen(name), vlen, i;

	if (hdr == NULL || strlen(hdr) > max || outlen == 0)
		return (-1);
	for (p = hdr; *p != '\0'; p = *end == ';' ? end + 1 : end) {
		while (*p == ' ' || *p == '\t')
			p++;
		if ((end = strchr(p, ';')) == NULL)
			end = p + strlen(p);
		if ((eq = memchr(p, '=', (size_t)(end - p))) == NULL)
			continue;
		if ((size_t)(eq - p) != nlen || memcmp(p, name, nlen) != 0)
			continue;
		eq++;
		vlen = (size_t)(end - eq);
		while (vlen > 0 && (eq[vlen - 1] == ' ' ||
		    eq[vlen - 1] == '\t'))
			vlen--;
		if (vlen == 0 || vlen >= outlen)
			return (-1);
		for (i = 0; i < vlen; i++)
			if (!web_cookie_octet((unsigned char)eq[i]))
				return (-1);
		memcpy(out, eq, vlen);
		out[vlen] = '\0';
		return (0);
	}
	return (-1);
}

int
web_ct_equal(const char *a, const char *b)
{
	size_t	 n = strlen(a);

	if (n != strlen(b))
		return (0);
	return (CRYPTO_memcmp(a, b, n) == 0);
}

void
web_b64url(const unsigned char *in, size_t n, char *out)
{
	static const char	 t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	    "abcdefghijklmnopqrstuvwxyz0123456789-_";
	size_t			 i, o = 0;
	unsigned		 v;

	for (i = 0; i + 2 < n; i += 3) {
		v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8 |
		    in[i + 2];
		out[o++] = t[v >> 18 & 63];
		out[o++] = t[v >> 12 & 63];
		out[o++] = t[v >> 6 & 63];
		out[o++] = t[v & 63];
	}
	if (n - i == 1) {
		v = (unsigned)in[i] << 16;
		out[o++] = t[v >> 18 & 63];
		out[o++] = t[v >> 12 & 63];
	} else if (n - i == 2) {
		v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8;
		out[o++] = t[v >> 18 & 63];
		out[o++] = t[v >> 12 & 63];
		out[o++] = t[v >> 6 & 63];
	}
	out[o] = '\0';
}

int
web_random_token(char *out)
{
	unsigned char	 r[32];

	if (RAND_bytes(r, sizeof(r)) != 1)
		return (-1);
	web_b64url(r, sizeof(r), out);
	OPENSSL_cleanse(r, sizeof(r));
	return (0);
}

int
web_token_ok(const char *s)
{
	size_t	 i;

	for (i = 0; s[i] != '\0'; i++)
		if (!((s[i] >= 'A' && s[i] <= 'Z') ||
		    (s[i] >= 'a' && s[i] <= 'z') ||
		    (s[i] >= '0' && s[i] <= '9') || s[i] == '-' ||
		    s[i] == '_'))
			return (0);
	return (i == WEB_TOKEN_LEN);
}

void
web_sha256_hex(const char *s, size_t len, char *out)
{
	unsigned char	 h[SHA256_DIGEST_LENGTH];
	size_t		 i;

	SHA256((const unsigned char *)s, len, h);
	for (i = 0; i < sizeof(h); i++)
		snprintf(out + 2 * i, 3, "%02x", h[i]);
}

void
web_pkce_s256(const char *verifier, char *out)
{
	unsigned char	 h[SHA256_DIGEST_LENGTH];

	SHA256((const unsigned char *)verifier, strlen(verifier), h);
	web_b64url(h, sizeof(h), out);
}
