/*
 * fuzz_url.c: libFuzzer target for url.c.  The first byte picks a query
 * key; the rest is both a URL and a query string.  Checks that a parsed
 * URL survives a round trip through url_hostport, that a stripped query
 * no longer has the key, and that encoding then decoding is the identity.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "url.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static void
check(int cond)
{
	if (!cond)
		abort();
}

static void
fuzz_parse(const char *s)
{
	static char	 again[4096];
	struct url	 u, u2;
	char		 hp[300];
	size_t		 i;
	int		 n;

	if (url_parse(s, &u) == -1)
		return;
	check(u.host[0] != '\0' && u.port >= 1 && u.port <= 65535);
	for (i = 0; u.host[i] != '\0'; i++)
		check(u.host[i] > 0x20 && u.host[i] < 0x7f &&
		    !(u.host[i] >= 'A' && u.host[i] <= 'Z') &&
		    u.host[i] != '@' && u.host[i] != '/');
	check((n = url_hostport(&u, hp, sizeof(hp))) > 0);
	check((size_t)n == strlen(hp));
	n = snprintf(again, sizeof(again), "%s://%s%s", u.scheme, hp, u.path);
	check(n > 0 && (size_t)n < sizeof(again));
	check(url_parse(again, &u2) == 0);
	check(memcmp(&u, &u2, sizeof(u)) == 0);
}

static void
fuzz_query(const char *q, size_t qlen, const char *key)
{
	static char	 out[4096], out2[4096], val[4096];
	size_t		 i;
	int		 n, n2;

	(void)url_query_get(q, qlen, key, val, sizeof(val));
	check(strlen(val) < sizeof(val));
	if ((n = url_query_strip(q, qlen, key, out, sizeof(out))) == -1)
		return;
	/* Byte-exact copy: a NUL in the query is kept, not a terminator. */
	check((size_t)n <= qlen && out[n] == '\0');
	check(n == 0 || (out[0] != '&' && out[n - 1] != '&'));
	for (i = 1; i < (size_t)n; i++)
		check(out[i - 1] != '&' || out[i] != '&');
	check(url_query_get(out, (size_t)n, key, val, sizeof(val)) == -1);
	n2 = url_query_strip(out, (size_t)n, key, out2, sizeof(out2));
	check(n2 == n && memcmp(out, out2, (size_t)n) == 0);
}

static void
fuzz_encode(const char *s)
{
	static char	 enc[3 * 4096 + 8], dec[4096];
	int		 n;

	enc[0] = 'k';
	enc[1] = '=';
	if ((n = url_pct_encode(s, enc + 2, sizeof(enc) - 2)) == -1)
		return;
	check(strspn(enc + 2, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnop"
	    "qrstuvwxyz0123456789-._~%") == (size_t)n);
	check(url_query_get(enc, (size_t)n + 2, "k", dec, sizeof(dec)) == 0);
	check(strcmp(dec, s) == 0);
}

/* One fuzz input: must never crash, and every check must hold. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const keys[] = { "ns", "scope", "", "a", "n%73" };
	static char	 s[4096];
	const char	*key;

	if (size < 1 || size >= sizeof(s))
		return 0;
	key = keys[data[0] % (sizeof(keys) / sizeof(keys[0]))];
	data++;
	size--;
	memcpy(s, data, size);
	s[size] = '\0';

	fuzz_parse(s);
	fuzz_query((const char *)data, size, key);
	fuzz_encode(s);
	return 0;
}
