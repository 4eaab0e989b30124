/*
 * web.h: the small pieces the browser pages (sso.c, sso_page.c) are made
 * of, kept apart so they can be unit-tested and fuzzed alone: a growable
 * text buffer with the one HTML escaping function, the Cookie header
 * parser, a form field reader, random tokens, base64url and a
 * constant-time comparison.  Leaf: no project header, no libevent.
 */
#ifndef PC_WEB_H
#define PC_WEB_H

#include <stddef.h>

/* A growable NUL-terminated buffer; fatal on allocation failure. */
struct wbuf {
	char	*p;
	size_t	 len;
	size_t	 cap;
};

void	wbuf_init(struct wbuf *);
void	wbuf_free(struct wbuf *);	/* wipes it first */
void	wbuf_add(struct wbuf *, const char *, size_t);
void	wbuf_str(struct wbuf *, const char *);
void	wbuf_printf(struct wbuf *, const char *, ...)
	    __attribute__((format(printf, 2, 3)));
/*
 * The one HTML escaping function: s (NULL is "") with & < > " ' as
 * character references, and control characters other than tab and
 * newline (and DEL) dropped, so any value is safe in text and in a
 * quoted attribute.
 */
void	wbuf_esc(struct wbuf *, const char *);

/*
 * The value of cookie `name` in a Cookie header (RFC 6265 5.4: "a=b;
 * c=d"), copied into out: 0 when found with a value of 1 to outlen - 1
 * cookie-octets; -1 when absent, empty, malformed or too long, and when
 * the header is longer than max (a session lookup is not worth a huge
 * header).  The first occurrence wins.
 */
int	web_cookie_get(const char *hdr, size_t max, const char *name,
	    char *out, size_t outlen);

/* Whether a and b are equal, in time that depends only on their lengths. */
int	web_ct_equal(const char *a, const char *b);

/* base64url without padding of n bytes; out holds 4 * n / 3 + 4. */
void	web_b64url(const unsigned char *in, size_t n, char *out);

#define WEB_TOKEN_LEN	43	/* 256 random bits, base64url */
/* A fresh random token of WEB_TOKEN_LEN characters; -1: no randomness. */
int	web_random_token(char *out);

/* Whether s is a token of ours: exactly WEB_TOKEN_LEN base64url chars. */
int	web_token_ok(const char *s);

/* Lowercase hex SHA-256 of s: out holds 65. */
void	web_sha256_hex(const char *s, size_t len, char *out);

/* The PKCE S256 challenge of a verifier (RFC 7636 4.2): out holds 44. */
void	web_pkce_s256(const char *verifier, char *out);

#endif /* PC_WEB_H */
