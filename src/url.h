/*
 * url.h: absolute http(s) URLs for upstreams and token realms, and the
 * query-string helpers the router and the token client need.  Leaf: no
 * libevent, no project header.
 */
#ifndef PC_URL_H
#define PC_URL_H

#include <stddef.h>

struct url {
	char	 scheme[8];	/* "http" or "https" */
	char	 host[256];	/* lowercase; IPv6 without brackets */
	int	 port;
	char	 path[2048];	/* verbatim from the first '/', '?' or '#' */
	int	 tls;
};

/*
 * Parse "http://host[:port][/path]" or "https://..." into u.  Refuses
 * userinfo, an empty host, bad ports, spaces, control and non-ASCII bytes
 * and other schemes.  0 ok, -1 bad (u is then zeroed).
 */
int	url_parse(const char *s, struct url *u);

/*
 * Write "host" (port is the scheme's default) or "host:port" to out, IPv6
 * in brackets.  Returns the length, or -1 when it does not fit.
 */
int	url_hostport(const struct url *u, char *out, size_t len);

/*
 * Find the first parameter named key (names compared raw, undecoded) in
 * query ("a=1&b=2", no '?') and percent-decode its value, '+' as space,
 * into out.  0 found; -1 absent, malformed ("%zz", "%00") or too long.
 */
int	url_query_get(const char *query, size_t qlen, const char *key,
	    char *out, size_t outlen);

/*
 * Copy query into out without any parameter named key, keeping the others
 * byte-exact and in order, joined by single '&'.  Returns the length
 * written (NUL-terminated), or -1 when it does not fit.
 */
int	url_query_strip(const char *query, size_t qlen, const char *key,
	    char *out, size_t outlen);

/*
 * Percent-encode every byte of the C string in but the unreserved ones
 * (ALPHA DIGIT - . _ ~), RFC 3986 2.3.  Returns the length or -1.
 */
int	url_pct_encode(const char *in, char *out, size_t outlen);

#endif
