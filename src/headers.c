/*
 * headers.c: ordered, case-insensitive HTTP header list.  Each field is one
 * allocation holding "name\0value\0"; the caller bounds the count and total
 * size (limits.header_count, limits.header_bytes) before adding.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "headers.h"

/* Start an empty list. */
void
headers_init(struct headers *h)
{
	memset(h, 0, sizeof(*h));
}

/* Free every field and leave the list empty and reusable. */
void
headers_clear(struct headers *h)
{
	size_t	i;

	for (i = 0; i < h->n; i++)
		free(h->v[i].name);
	free(h->v);
	memset(h, 0, sizeof(*h));
}

/* Append a field; name and value need not be NUL-terminated. */
int
headers_add(struct headers *h, const char *name, size_t nlen,
    const char *value, size_t vlen)
{
	struct header	*nv, *hd;
	char		*mem;
	size_t		 ncap;

	if (h->n == h->cap) {
		ncap = h->cap == 0 ? 16 : h->cap * 2;
		if ((nv = reallocarray(h->v, ncap, sizeof(*nv))) == NULL)
			return (-1);
		h->v = nv;
		h->cap = ncap;
	}
	if ((mem = malloc(nlen + vlen + 2)) == NULL)
		return (-1);
	memcpy(mem, name, nlen);
	mem[nlen] = '\0';
	memcpy(mem + nlen + 1, value, vlen);
	mem[nlen + 1 + vlen] = '\0';
	hd = &h->v[h->n++];
	hd->name = mem;
	hd->value = mem + nlen + 1;
	hd->nlen = nlen;
	hd->vlen = vlen;
	h->bytes += nlen + vlen;
	return (0);
}

/*
 * Extend the value of the last field (http-parser may deliver one value in
 * several pieces when it spans reads).
 */
int
headers_append_value(struct headers *h, const char *value, size_t vlen)
{
	struct header	*hd;
	char		*mem;

	if (h->n == 0)
		return (-1);
	hd = &h->v[h->n - 1];
	if ((mem = realloc(hd->name, hd->nlen + hd->vlen + vlen + 2)) == NULL)
		return (-1);
	hd->name = mem;
	hd->value = mem + hd->nlen + 1;
	memcpy(hd->value + hd->vlen, value, vlen);
	hd->vlen += vlen;
	hd->value[hd->vlen] = '\0';
	h->bytes += vlen;
	return (0);
}

/* The first value of a field, or NULL. */
const char *
headers_get(const struct headers *h, const char *name)
{
	size_t	i;

	for (i = 0; i < h->n; i++)
		if (strcasecmp(h->v[i].name, name) == 0)
			return (h->v[i].value);
	return (NULL);
}

/* How many times a field occurs. */
size_t
headers_count(const struct headers *h, const char *name)
{
	size_t	i, n = 0;

	for (i = 0; i < h->n; i++)
		if (strcasecmp(h->v[i].name, name) == 0)
			n++;
	return (n);
}

/* Remove every occurrence of a field; returns how many went. */
size_t
headers_del(struct headers *h, const char *name)
{
	size_t	i, j, n = 0;

	for (i = j = 0; i < h->n; i++) {
		if (strcasecmp(h->v[i].name, name) == 0) {
			h->bytes -= h->v[i].nlen + h->v[i].vlen;
			free(h->v[i].name);
			n++;
			continue;
		}
		h->v[j++] = h->v[i];
	}
	h->n = j;
	return (n);
}

/* Replace every occurrence of a field with one new value. */
int
headers_set(struct headers *h, const char *name, const char *value)
{
	headers_del(h, name);
	return (headers_add(h, name, strlen(name), value, strlen(value)));
}

/*
 * Whether any occurrence of a comma-separated field (Connection,
 * Transfer-Encoding, ...) lists `token`, case-insensitively.
 */
int
headers_has_token(const struct headers *h, const char *name,
    const char *token)
{
	const char	*p, *e;
	size_t		 i, tlen = strlen(token), len;

	for (i = 0; i < h->n; i++) {
		if (strcasecmp(h->v[i].name, name) != 0)
			continue;
		p = h->v[i].value;
		while (*p != '\0') {
			while (*p == ' ' || *p == '\t' || *p == ',')
				p++;
			e = p;
			while (*e != '\0' && *e != ',')
				e++;
			len = e - p;
			while (len > 0 && (p[len - 1] == ' ' ||
			    p[len - 1] == '\t'))
				len--;
			if (len == tlen && strncasecmp(p, token, len) == 0)
				return (1);
			p = e;
		}
	}
	return (0);
}

/*
 * Whether a field is hop-by-hop (RFC 9110 7.6.1, plus the Proxy-* fields
 * and the old Keep-Alive/Proxy-Connection): it belongs to one connection
 * and never passes a proxy.  The one list for both directions.  Fields a
 * message names in its own Connection header are hop-by-hop too: see
 * headers_has_token().
 */
int
headers_hop_by_hop(const char *name)
{
	static const char *const hop[] = { "Connection", "Keep-Alive",
	    "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization",
	    "TE", "Trailer", "Transfer-Encoding", "Upgrade" };
	size_t	i;

	for (i = 0; i < sizeof(hop) / sizeof(hop[0]); i++)
		if (strcasecmp(name, hop[i]) == 0)
			return (1);
	return (0);
}
