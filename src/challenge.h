/*
 * challenge.h: the WWW-Authenticate challenge an upstream registry sends
 * (RFC 7235 4.1, distribution token authentication spec) and the token
 * URL it leads to.  Leaf: no libevent, no project header (challenge.c
 * uses url.h's encoder).
 */
#ifndef PC_CHALLENGE_H
#define PC_CHALLENGE_H

#include <stddef.h>

struct challenge {
	char	scheme[16];	/* "Bearer" or "Basic" */
	char	realm[1024];
	char	service[256];
	char	scope[1024];
	char	error[64];
};

/*
 * Parse a WWW-Authenticate value (len bytes, need not be NUL terminated)
 * into c, preferring the first Bearer challenge over the first Basic one;
 * other schemes are skipped.  Returns 0, or -1 when the value is
 * malformed, a realm/service/scope/error value does not fit, a parameter
 * repeats within the chosen kind of challenge, or no Bearer or Basic
 * challenge is present (c is then zeroed).
 */
int	challenge_parse(const char *value, size_t len, struct challenge *c);

/*
 * Build the token request URL: realm, then "?" (or "&" when the realm
 * already has a query) and service=<enc>&scope=<enc>..., service omitted
 * when empty.  With nscopes == 0 the challenge's own scope is used, split
 * at spaces into one scope parameter each.  Returns the length, or -1
 * when the realm is empty or the URL does not fit in outlen.
 */
int	challenge_token_url(const struct challenge *c,
	    const char *const *scopes, size_t nscopes, char *out,
	    size_t outlen);

#endif
