/*
 * challenge.c: read the WWW-Authenticate value of an upstream's 401 and
 * turn a Bearer challenge into the token-service URL to ask (distribution
 * token authentication spec, "How to authenticate").
 *
 * The grammar is RFC 7235 4.1 / 2.1:
 *	WWW-Authenticate = 1#challenge
 *	challenge  = auth-scheme [ 1*SP ( token68 / #auth-param ) ]
 *	auth-param = token BWS "=" BWS ( token / quoted-string )
 * Commas separate both challenges and their parameters; an element that is
 * `token BWS "="` continues the current challenge, any other token starts
 * a new one.  Names and schemes are case-insensitive.
 *
 * Guarantees, for any input bytes: no write beyond a destination, every
 * string in the result NUL-terminated and unescaped, and either a whole
 * Bearer (or Basic) challenge or nothing: a value that does not parse, a
 * realm/service/scope/error that does not fit, or one given twice in the
 * same challenge fails the whole header, because a half-understood
 * challenge could send credentials to the wrong realm.
 */
#include <limits.h>
#include <string.h>

#include "challenge.h"
#include "url.h"

enum chal_kind {
	CHAL_NONE,		/* no challenge yet */
	CHAL_OTHER,		/* a scheme we do not speak: skipped */
	CHAL_BASIC,
	CHAL_BEARER
};

struct chal_in {
	const char	*s;
	size_t		 len;
	size_t		 i;
};

static int
chal_lower(int ch)
{
	return (ch >= 'A' && ch <= 'Z') ? ch - 'A' + 'a' : ch;
}

static int
chal_alnum(int ch)
{
	ch = chal_lower(ch);
	return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9');
}

/* tchar, RFC 7230 3.2.6. */
static int
chal_tchar(int ch)
{
	return chal_alnum(ch) || (ch != '\0' &&
	    strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

/* token68 characters other than the trailing '=', RFC 7235 2.1. */
static int
chal_t68char(int ch)
{
	return chal_alnum(ch) || (ch != '\0' && strchr("-._~+/", ch) != NULL);
}

static int
chal_peek(const struct chal_in *in)
{
	return in->i < in->len ? (unsigned char)in->s[in->i] : -1;
}

static void
chal_ows(struct chal_in *in)
{
	while (chal_peek(in) == ' ' || chal_peek(in) == '\t')
		in->i++;
}

/* Consume a token; returns its length, 0 when there is none. */
static size_t
chal_token(struct chal_in *in)
{
	size_t	start = in->i;

	while (in->i < in->len && chal_tchar((unsigned char)in->s[in->i]))
		in->i++;
	return in->i - start;
}

/* Case-insensitive: does s (len bytes) equal lowercase lit? */
static int
chal_eq(const char *s, size_t len, const char *lit)
{
	size_t	i;

	if (strlen(lit) != len)
		return 0;
	for (i = 0; i < len; i++) {
		if (chal_lower((unsigned char)s[i]) != lit[i])
			return 0;
	}
	return 1;
}

/* End of a list element: OWS, then the end or a comma. */
static int
chal_elem_end(struct chal_in *in)
{
	chal_ows(in);
	return in->i == in->len || chal_peek(in) == ',';
}

/*
 * Is a lone token68 next (what follows the scheme in, say, "Negotiate
 * abc==")?  Consumes it when so.
 */
static int
chal_token68(struct chal_in *in)
{
	size_t	save = in->i;

	while (in->i < in->len && chal_t68char((unsigned char)in->s[in->i]))
		in->i++;
	if (in->i == save)
		return 0;
	while (chal_peek(in) == '=')
		in->i++;
	if (chal_elem_end(in))
		return 1;
	in->i = save;
	return 0;
}

/*
 * Consume a token or quoted-string value and, when dst is not NULL, store
 * it unescaped.  -1 when malformed or longer than dstlen - 1.
 */
static int
chal_value(struct chal_in *in, char *dst, size_t dstlen)
{
	size_t	o = 0, start;
	int	ch;

	if (chal_peek(in) != '"') {
		start = in->i;
		if (chal_token(in) == 0)
			return -1;
		if (dst != NULL) {
			if (in->i - start >= dstlen)
				return -1;
			memcpy(dst, in->s + start, in->i - start);
			dst[in->i - start] = '\0';
		}
		return 0;
	}
	in->i++;
	for (;;) {
		if ((ch = chal_peek(in)) == -1)
			return -1;	/* unterminated */
		in->i++;
		if (ch == '"')
			break;
		if (ch == '\\') {
			if ((ch = chal_peek(in)) == -1)
				return -1;
			in->i++;
		}
		/* qdtext and quoted-pair: HTAB, SP, VCHAR, obs-text. */
		if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
			return -1;
		if (dst != NULL) {
			if (o + 1 >= dstlen)
				return -1;
			dst[o++] = (char)ch;
		}
	}
	if (dst != NULL)
		dst[o] = '\0';
	return 0;
}

/* One auth-param into cur; `seen` catches a parameter given twice. */
static int
chal_param(struct chal_in *in, enum chal_kind kind, struct challenge *cur,
    unsigned int *seen)
{
	const char	*name;
	size_t		 nlen;
	char		*dst = NULL;
	size_t		 dstlen = 0;
	unsigned int	 bit = 0;

	name = in->s + in->i;
	if ((nlen = chal_token(in)) == 0)
		return -1;
	chal_ows(in);
	if (chal_peek(in) != '=')
		return -1;
	in->i++;
	chal_ows(in);

	if (kind == CHAL_BASIC || kind == CHAL_BEARER) {
		if (chal_eq(name, nlen, "realm")) {
			dst = cur->realm;
			dstlen = sizeof(cur->realm);
			bit = 1;
		} else if (chal_eq(name, nlen, "service")) {
			dst = cur->service;
			dstlen = sizeof(cur->service);
			bit = 2;
		} else if (chal_eq(name, nlen, "scope")) {
			dst = cur->scope;
			dstlen = sizeof(cur->scope);
			bit = 4;
		} else if (chal_eq(name, nlen, "error")) {
			dst = cur->error;
			dstlen = sizeof(cur->error);
			bit = 8;
		}
		if (*seen & bit)
			return -1;
		*seen |= bit;
	}
	if (chal_value(in, dst, dstlen) == -1)
		return -1;
	return chal_elem_end(in) ? 0 : -1;
}

/* Keep cur in c when it beats what c holds: Bearer over Basic, first wins. */
static void
chal_keep(struct challenge *c, enum chal_kind *best,
    const struct challenge *cur, enum chal_kind kind)
{
	if ((kind == CHAL_BEARER || kind == CHAL_BASIC) && kind > *best) {
		*c = *cur;
		*best = kind;
	}
}

/* Parse a WWW-Authenticate value; see challenge.h. */
int
challenge_parse(const char *value, size_t len, struct challenge *c)
{
	struct chal_in		 in;
	struct challenge	 cur;
	enum chal_kind		 kind = CHAL_NONE, best = CHAL_NONE;
	unsigned int		 seen = 0;
	int			 t68 = 0;
	size_t			 start, tlen;
	const char		*t;

	memset(c, 0, sizeof(*c));
	if (value == NULL)
		return -1;
	in.s = value;
	in.len = len;
	in.i = 0;
	memset(&cur, 0, sizeof(cur));

	for (;;) {
		chal_ows(&in);
		if (in.i == in.len)
			break;
		if (chal_peek(&in) == ',') {
			in.i++;
			continue;
		}
		start = in.i;
		t = in.s + in.i;
		if ((tlen = chal_token(&in)) == 0)
			goto bad;
		chal_ows(&in);
		if (chal_peek(&in) == '=') {
			/*
			 * An auth-param of the current challenge, which
			 * cannot have had a token68 as well.
			 */
			if (kind == CHAL_NONE || t68)
				goto bad;
			in.i = start;
			if (chal_param(&in, kind, &cur, &seen) == -1)
				goto bad;
			continue;
		}

		/* A new challenge: settle the one before it. */
		chal_keep(c, &best, &cur, kind);
		memset(&cur, 0, sizeof(cur));
		seen = 0;
		t68 = 0;
		if (chal_eq(t, tlen, "bearer")) {
			kind = CHAL_BEARER;
			memcpy(cur.scheme, "Bearer", sizeof("Bearer"));
		} else if (chal_eq(t, tlen, "basic")) {
			kind = CHAL_BASIC;
			memcpy(cur.scheme, "Basic", sizeof("Basic"));
		} else
			kind = CHAL_OTHER;
		if (in.i == in.len || chal_peek(&in) == ',')
			continue;
		if (in.i == start + tlen)
			goto bad;	/* no SP after the scheme */
		if (chal_token68(&in)) {
			t68 = 1;
			continue;
		}
		if (chal_param(&in, kind, &cur, &seen) == -1)
			goto bad;
	}
	chal_keep(c, &best, &cur, kind);
	if (best == CHAL_NONE)
		goto bad;
	return 0;
bad:
	memset(c, 0, sizeof(*c));
	return -1;
}

/* Append "name=<pct-encoded value>" after sep; -1 when it does not fit. */
static int
chal_add(char *out, size_t outlen, size_t *o, char *sep, const char *name,
    const char *value)
{
	size_t	nlen = strlen(name);
	int	n;

	if (*sep != '\0') {
		if (outlen - *o < 2)
			return -1;
		out[(*o)++] = *sep;
	}
	if (outlen - *o < nlen + 2)
		return -1;
	memcpy(out + *o, name, nlen);
	*o += nlen;
	out[(*o)++] = '=';
	if ((n = url_pct_encode(value, out + *o, outlen - *o)) == -1)
		return -1;
	*o += n;
	*sep = '&';
	return 0;
}

/* Token-service URL for c and the scopes asked for; see challenge.h. */
int
challenge_token_url(const struct challenge *c, const char *const *scopes,
    size_t nscopes, char *out, size_t outlen)
{
	char		 one[sizeof(c->scope)];
	const char	*p, *sp;
	size_t		 o, rlen, i, l;
	char		 sep;

	if (out == NULL || outlen == 0)
		return -1;
	out[0] = '\0';
	if (c == NULL || (nscopes > 0 && scopes == NULL) ||
	    memchr(c->realm, '\0', sizeof(c->realm)) == NULL ||
	    memchr(c->service, '\0', sizeof(c->service)) == NULL ||
	    memchr(c->scope, '\0', sizeof(c->scope)) == NULL)
		return -1;
	if ((rlen = strlen(c->realm)) == 0 || rlen >= outlen)
		return -1;
	for (i = 0; i < rlen; i++) {
		/* A '#' would turn the parameters into a fragment. */
		if ((unsigned char)c->realm[i] <= 0x20 ||
		    (unsigned char)c->realm[i] == 0x7f || c->realm[i] == '#')
			return -1;
	}
	memcpy(out, c->realm, rlen);
	o = rlen;
	if (memchr(c->realm, '?', rlen) == NULL)
		sep = '?';
	else if (c->realm[rlen - 1] == '?' || c->realm[rlen - 1] == '&')
		sep = '\0';
	else
		sep = '&';

	if (c->service[0] != '\0' &&
	    chal_add(out, outlen, &o, &sep, "service", c->service) == -1)
		goto bad;
	for (i = 0; i < nscopes; i++) {
		if (scopes[i] == NULL)
			goto bad;
		if (scopes[i][0] != '\0' &&
		    chal_add(out, outlen, &o, &sep, "scope", scopes[i]) == -1)
			goto bad;
	}
	/* The challenge's scope may list several, space-separated. */
	for (p = c->scope; nscopes == 0 && *p != '\0'; p = sp) {
		if ((sp = strchr(p, ' ')) == NULL)
			sp = p + strlen(p);
		if ((l = sp - p) > 0) {
			memcpy(one, p, l);
			one[l] = '\0';
			if (chal_add(out, outlen, &o, &sep, "scope", one) == -1)
				goto bad;
		}
		if (*sp == ' ')
			sp++;
	}
	if (o > INT_MAX)
		goto bad;
	out[o] = '\0';
	return (int)o;
bad:
	out[0] = '\0';
	return -1;
}
