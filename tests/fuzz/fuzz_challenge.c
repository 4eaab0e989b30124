/*
 * fuzz_challenge.c: libFuzzer target for challenge.c.  A parsed challenge
 * is written back out in canonical form and must parse to the same thing;
 * the token URL built from it must start with its realm.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "challenge.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static void
check(int cond)
{
	if (!cond)
		abort();
}

/* Append name="value" with quoted-pair escapes, after sep. */
static size_t
put(char *buf, size_t len, size_t o, char *sep, const char *name,
    const char *value)
{
	const char	*p;

	if (*value == '\0')
		return o;
	o += (size_t)snprintf(buf + o, len - o, "%c%s=\"", *sep, name);
	*sep = ',';
	for (p = value; *p != '\0'; p++) {
		check(o + 3 < len);
		if (*p == '"' || *p == '\\')
			buf[o++] = '\\';
		buf[o++] = *p;
	}
	buf[o++] = '"';
	buf[o] = '\0';
	return o;
}

/* One fuzz input: must never crash, and every check must hold. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const scopes[] = {
		"repository:library/alpine:pull", "a b&c=d?#"
	};
	static char		 buf[8192];
	struct challenge	 c, c2;
	char			 url[4096];
	size_t			 o;
	char			 sep = ' ';
	int			 n;

	if (challenge_parse((const char *)data, size, &c) == -1) {
		check(c.scheme[0] == '\0' && c.realm[0] == '\0');
		return 0;
	}
	check(strcmp(c.scheme, "Bearer") == 0 ||
	    strcmp(c.scheme, "Basic") == 0);

	o = (size_t)snprintf(buf, sizeof(buf), "Foo x, %s", c.scheme);
	o = put(buf, sizeof(buf), o, &sep, "realm", c.realm);
	o = put(buf, sizeof(buf), o, &sep, "service", c.service);
	o = put(buf, sizeof(buf), o, &sep, "scope", c.scope);
	o = put(buf, sizeof(buf), o, &sep, "error", c.error);
	check(challenge_parse(buf, o, &c2) == 0);
	check(memcmp(&c, &c2, sizeof(c)) == 0);

	n = challenge_token_url(&c, NULL, 0, url, sizeof(url));
	if (n != -1) {
		check((size_t)n == strlen(url));
		check(strncmp(url, c.realm, strlen(c.realm)) == 0);
		check(strchr(url, ' ') == NULL);
	}
	n = challenge_token_url(&c, scopes, 2, url, sizeof(url));
	if (n != -1)
		check(strstr(url, "scope=a%20b%26c%3Dd%3F%23") != NULL);
	return 0;
}
