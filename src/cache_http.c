/*
 * cache_http.c: ranges, Accept sets and digests for the cache.  Everything
 * here is peer input handled in fixed buffers; nothing allocates.
 */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cache_http.h"
#include "router.h"

#define ACCEPT_MAX_TYPES	64

/* A decimal number of at most 19 digits; returns the end or NULL. */
static const char *
cr_number(const char *p, uint64_t *v)
{
	uint64_t	n = 0;
	int		digits = 0;

	while (isdigit((unsigned char)*p)) {
		if (++digits > 19)
			return (NULL);
		n = n * 10 + (uint64_t)(*p - '0');
		p++;
	}
	if (digits == 0)
		return (NULL);
	*v = n;
	return (p);
}

enum cache_range
cache_range_parse(const char *s, uint64_t size, uint64_t *start,
    uint64_t *end)
{
	const char	*p;
	uint64_t	 a, b;

	if (s == NULL)
		return (CACHE_RANGE_NONE);
	while (*s == ' ' || *s == '\t')
		s++;
	if (strncasecmp(s, "bytes=", 6) != 0)
		return (CACHE_RANGE_NONE);
	p = s + 6;
	while (*p == ' ')
		p++;
	if (strchr(p, ',') != NULL)
		return (CACHE_RANGE_NONE);	/* several: send it all */
	if (*p == '-') {
		/* Suffix: the last N bytes. */
		if ((p = cr_number(p + 1, &b)) == NULL)
			return (CACHE_RANGE_NONE);
		while (*p == ' ')
			p++;
		if (*p != '\0')
			return (CACHE_RANGE_NONE);
		if (b == 0 || size == 0)
			return (CACHE_RANGE_UNSAT);
		*start = b >= size ? 0 : size - b;
		*end = size - 1;
		return (CACHE_RANGE_OK);
	}
	if ((p = cr_number(p, &a)) == NULL || *p++ != '-')
		return (CACHE_RANGE_NONE);
	if (*p == '\0' || *p == ' ') {
		b = UINT64_MAX;
	} else if ((p = cr_number(p, &b)) == NULL)
		return (CACHE_RANGE_NONE);
	while (*p == ' ')
		p++;
	if (*p != '\0' || b < a)
		return (CACHE_RANGE_NONE);
	if (a >= size)
		return (CACHE_RANGE_UNSAT);
	*start = a;
	*end = b >= size ? size - 1 : b;
	return (CACHE_RANGE_OK);
}

/*
 * Whether the parameters of a media range (what follows its first ';')
 * give it weight 0, which RFC 9110 12.4.2 defines as "not acceptable":
 * qvalue = "0" [ "." 0*3DIGIT ] with only zeros.  Lenient about spaces
 * around ';' and '=' (BWS); anything else is not a zero weight.
 */
static int
cr_weight_zero(const char *p)
{
	size_t	n, i;

	while (*p != '\0') {
		while (*p == ' ' || *p == '\t' || *p == ';')
			p++;
		n = strcspn(p, ";");
		if (n > 0 && (p[0] == 'q' || p[0] == 'Q')) {
			for (i = 1; i < n && (p[i] == ' ' || p[i] == '\t'); i++)
				;
			if (i < n && p[i] == '=') {
				for (i++; i < n && (p[i] == ' ' ||
				    p[i] == '\t'); i++)
					;
				if (i == n || p[i] != '0')
					return (0);
				i++;
				if (i < n && p[i] == '.')
					for (i++; i < n && p[i] == '0'; i++)
						;
				while (i < n && (p[i] == ' ' || p[i] == '\t'))
					i++;
				return (i == n);
			}
		}
		p += n;
	}
	return (0);
}

static int
cr_cmp(const void *a, const void *b)
{
	return (strcmp(*(char *const *)a, *(char *const *)b));
}

int
cache_accept_norm(const struct headers *h, char *out, size_t len)
{
	char		 buf[4096], *types[ACCEPT_MAX_TYPES], *p, *q, *e;
	size_t		 i, n = 0, off = 0, bl = 0, tl;
	int		 k, refused = 0, wild = 0;

	for (i = 0; i < h->n; i++) {
		if (strcasecmp(h->v[i].name, "Accept") != 0)
			continue;
		if (bl + h->v[i].vlen + 2 > sizeof(buf))
			return (-1);
		memcpy(buf + bl, h->v[i].value, h->v[i].vlen);
		bl += h->v[i].vlen;
		buf[bl++] = ',';
	}
	buf[bl] = '\0';
	for (p = buf; p != NULL && *p != '\0'; p = q) {
		if ((q = strchr(p, ',')) != NULL)
			*q++ = '\0';
		if ((e = strchr(p, ';')) != NULL) {
			*e = '\0';
			if (cr_weight_zero(e + 1)) {
				refused = 1;
				continue;
			}
		}
		while (*p == ' ' || *p == '\t')
			p++;
		tl = strlen(p);
		while (tl > 0 && (p[tl - 1] == ' ' || p[tl - 1] == '\t'))
			p[--tl] = '\0';
		if (tl == 0)
			continue;
		for (e = p; *e != '\0'; e++)
			*e = (char)tolower((unsigned char)*e);
		for (k = 0; k < (int)n; k++)
			if (strcmp(types[k], p) == 0)
				break;
		if (k < (int)n)
			continue;
		if (n == ACCEPT_MAX_TYPES)
			return (-1);
		if (strchr(p, '*') != NULL)
			wild = 1;
		types[n++] = p;
	}
	/*
	 * A set left empty refuses everything, and a wildcard left next to a
	 * refused type means "all but that one": neither is a plain set of
	 * types, so neither keys a record.
	 */
	if (refused && (n == 0 || wild))
		return (-1);
	qsort(types, n, sizeof(types[0]), cr_cmp);
	if (len == 0)
		return (-1);
	out[0] = '\0';
	for (i = 0; i < n; i++) {
		tl = strlen(types[i]);
		if (off + tl + 2 > len)
			return (-1);
		if (i > 0)
			out[off++] = ',';
		memcpy(out + off, types[i], tl);
		off += tl;
		out[off] = '\0';
	}
	return ((int)off);
}

int
cache_accept_has(const char *set, const char *type)
{
	const char	*p = set, *q;
	size_t		 tl = strlen(type), n;

	if (*set == '\0')
		return (1);
	while (*p != '\0') {
		q = strchr(p, ',');
		n = q != NULL ? (size_t)(q - p) : strlen(p);
		if ((n == tl && strncasecmp(p, type, n) == 0) ||
		    (n == 3 && strncmp(p, "*/*", 3) == 0))
			return (1);
		if (n >= 2 && p[n - 1] == '*' && p[n - 2] == '/' &&
		    strncasecmp(p, type, n - 1) == 0)
			return (1);
		if (q == NULL)
			break;
		p = q + 1;
	}
	return (0);
}

/* The router's digest grammar is the one validator (router.c). */
enum cache_alg
cache_digest_alg(const char *d, const char **hex)
{
	if (!router_valid_digest(d, strlen(d)))
		return (CACHE_ALG_NONE);
	*hex = d + 7;
	return (d[3] == '2' ? CACHE_ALG_SHA256 : CACHE_ALG_SHA512);
}

const char *
cache_alg_name(enum cache_alg a)
{
	switch (a) {
	case CACHE_ALG_SHA256:
		return ("sha256");
	case CACHE_ALG_SHA512:
		return ("sha512");
	default:
		return ("");
	}
}

int
cache_valid_media_type(const char *s)
{
	size_t	n;

	for (n = 0; s[n] != '\0'; n++)
		if (s[n] < ' ' || s[n] > '~')
			return (0);
	return (n > 0 && n <= 255);
}
