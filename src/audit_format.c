/*
 * audit_format.c: the pure parts of the audit subsystem.  The record
 * payload (fields in schema order, sanitised and bounded) and the query
 * filters with their time grammar (the spool's on-disk format is in
 * audit_frame.c).  Leaf: everything here is a function of its
 * arguments; time comes in as a parameter.
 */
#include <ctype.h>
#include <errno.h>
#include <fnmatch.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "audit.h"

struct audit_field_def {
	const char	*name;
	size_t		 len;
	int		 is_int;
};

#define AUDIT_FIELD_ROW(e, n, i) { n, sizeof(n) - 1, i },
static const struct audit_field_def audit_field_defs[] = {
	AUDIT_FIELDS(AUDIT_FIELD_ROW)
};
#undef AUDIT_FIELD_ROW

/* The stream field name of a record field. */
const char *
audit_field_name(enum audit_field f)
{
	if ((unsigned)f >= AF__MAX)
		return ("?");
	return (audit_field_defs[f].name);
}

/* Whether the field's JSON value is an integer. */
int
audit_field_is_int(enum audit_field f)
{
	if ((unsigned)f >= AF__MAX)
		return (0);
	return (audit_field_defs[f].is_int);
}

/* The length of a record field's name. */
size_t
audit_field_name_len(enum audit_field f)
{
	if ((unsigned)f >= AF__MAX)
		return (1);
	return (audit_field_defs[f].len);
}

static int
audit_field_is(int i, const char *s, size_t len)
{
	return (audit_field_defs[i].len == len &&
	    memcmp(audit_field_defs[i].name, s, len) == 0);
}

/* The field named by [s, s + len), or -1. */
int
audit_field_lookup(const char *s, size_t len)
{
	int	i;

	for (i = 0; i < AF__MAX; i++)
		if (audit_field_is(i, s, len))
			return (i);
	return (-1);
}

/* Start an empty payload. */
void
audit_buf_init(struct audit_buf *b)
{
	b->len = 0;
	b->truncated = 0;
	memset(b->voff, 0, sizeof(b->voff));
	memset(b->vlen, 0, sizeof(b->vlen));
}

/*
 * Append "name\0value\0".  The value is cut to AUDIT_VALUE_MAX (the user
 * agent to AUDIT_UA_MAX) and sanitised.  When the record would pass
 * AUDIT_REC_MAX the value is cut further; the schema keeps every field.
 */
void
audit_buf_add(struct audit_buf *b, enum audit_field f, const char *v,
    size_t vlen)
{
	const char	*name = audit_field_name(f);
	size_t		 nlen = audit_field_name_len(f), room, i, max;
	uint64_t	 x;
	unsigned char	 ch;

	if (v == NULL) {
		v = "";
		vlen = 0;
	}
	max = f == AF_USER_AGENT ? AUDIT_UA_MAX : AUDIT_VALUE_MAX;
	if (vlen > max) {
		vlen = max;
		b->truncated = 1;
	}
	/* Leave room for the other fields' names: at most 32 bytes each. */
	room = AUDIT_REC_MAX - b->len;
	if (room < nlen + 2 + (AF__MAX - f) * 32)
		vlen = 0;
	else if (vlen > room - nlen - 2 - (AF__MAX - f) * 32) {
		vlen = room - nlen - 2 - (AF__MAX - f) * 32;
		b->truncated = 1;
	}
	if (b->len + nlen + vlen + 2 > AUDIT_REC_MAX)
		return;		/* cannot happen: see the reserve above */
	memcpy(b->data + b->len, name, nlen + 1);
	b->len += nlen + 1;
	if ((unsigned)f < AF__MAX) {
		b->voff[f] = b->len;
		b->vlen[f] = vlen;
	}
	/*
	 * Eight bytes a step while all are printable (0x20 to 0x7e: no
	 * byte below 0x20, none above 0x7e), the usual case; a byte at a
	 * time from the first word that is not.  The byte loop was most of
	 * what building a record cost.
	 */
	for (i = 0; i + 8 <= vlen; i += 8) {
		memcpy(&x, v + i, 8);
		if ((((x - 0x2020202020202020ULL) & ~x) |
		    (x + 0x0101010101010101ULL) | x) & 0x8080808080808080ULL)
			break;
		memcpy(b->data + b->len, &x, 8);
		b->len += 8;
	}
	for (; i < vlen; i++) {
		ch = (unsigned char)v[i];
		b->data[b->len++] = (ch < 0x20 || ch > 0x7e) ? '?' : (char)ch;
	}
	b->data[b->len++] = '\0';
}

/* As audit_buf_add(), formatted. */
void
audit_buf_addf(struct audit_buf *b, enum audit_field f, const char *fmt, ...)
{
	char	 tmp[AUDIT_VALUE_MAX + 1];
	va_list	 ap;
	int	 n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n >= sizeof(tmp))
		n = sizeof(tmp) - 1;
	audit_buf_add(b, f, tmp, (size_t)n);
}

/*
 * Format v in decimal at the end of buf[0..AUDIT_U64_MAX) and return
 * where it starts; the digits run to the end of buf.  Without printf:
 * every record carries several numbers.
 */
char *
audit_u64(char *buf, uint64_t v)
{
	char	*p = buf + AUDIT_U64_MAX;

	do {
		*--p = '0' + v % 10;
		v /= 10;
	} while (v != 0);
	return (p);
}

/* As audit_buf_add(), an unsigned number in decimal. */
void
audit_buf_addu(struct audit_buf *b, enum audit_field f, uint64_t v)
{
	char	 tmp[AUDIT_U64_MAX], *p;

	p = audit_u64(tmp, v);
	audit_buf_add(b, f, p, tmp + sizeof(tmp) - p);
}

/* Whether a word has a zero byte (exact as a yes or no). */
#define AUDIT_HAS0(x)	(((x) - 0x0101010101010101ULL) & ~(x) & \
			    0x8080808080808080ULL)

/* The first NUL in [p, end), or end: eight bytes a step. */
static const char *
audit_find0(const char *p, const char *end)
{
	uint64_t	 x;

	for (; end - p >= 8; p += 8) {
		memcpy(&x, p, 8);
		if (AUDIT_HAS0(x))
			break;
	}
	while (p < end && *p != '\0')
		p++;
	return (p);
}

/*
 * Parse a payload into fields pointing into it.  Every name and value
 * must be NUL-terminated inside the buffer.  Missing fields are "".
 */
int
audit_payload_parse(const char *p, size_t len, struct audit_fields *out)
{
	const char	*end = p + len, *name, *val, *z, *n;
	size_t		 k;
	int		 f, i, next = 0;

	for (i = 0; i < AF__MAX; i++) {
		out->v[i] = "";
		out->len[i] = 0;
	}
	/*
	 * Byte loops, not memchr(3): the strings are short, and 46 calls a
	 * record were a tenth of what audit added to a request's CPU.
	 */
	while (p < end) {
		name = p;
		/* Fields come in schema order: try the next one first. */
		f = -1;
		if (next < AF__MAX) {
			n = audit_field_defs[next].name;
			k = audit_field_defs[next].len;
			if ((size_t)(end - p) > k) {
				for (i = 0; (size_t)i < k && p[i] == n[i]; i++)
					;
				if ((size_t)i == k && p[k] == '\0')
					f = next;
			}
		}
		if (f != -1)
			val = p + k + 1;
		else {
			for (z = p; z < end && *z != '\0'; z++)
				;
			if (z == end)
				return (-1);
			val = z + 1;
			f = audit_field_lookup(name, val - 1 - name);
		}
		if (val >= end)
			return (-1);
		z = audit_find0(val, end);
		if (z == end)
			return (-1);
		if (f != -1) {
			next = f + 1;
			out->v[f] = val;
			out->len[f] = z - val;
		}
		p = z + 1;
	}
	return (0);
}

/*
 * The fields of a payload p built by audit_buf_add(), from the offsets
 * and lengths it kept (voff, vlen): what audit_payload_parse() finds,
 * without reading the payload.
 */
void
audit_payload_fields(const char *p, const uint16_t *voff,
    const uint16_t *vlen, struct audit_fields *out)
{
	int	 i;

	for (i = 0; i < AF__MAX; i++) {
		out->v[i] = vlen[i] > 0 ? p + voff[i] : "";
		out->len[i] = vlen[i];
	}
}

/* The length of a record packed by audit_pack(). */
size_t
audit_pack_len(const struct audit_fields *fl)
{
	size_t	 n = AF__MAX;
	int	 f;

	for (f = 0; f < AF__MAX; f++)
		n += fl->len[f];
	return (n);
}

/*
 * Pack a record: its values in schema order, each followed by a tab, into
 * out (audit_pack_len() bytes).  Values are sanitised on the way in and
 * hold no tab; a payload from elsewhere gets '?' for one all the same.
 */
size_t
audit_pack(const struct audit_fields *fl, char *out)
{
	char		*p = out;
	const char	*t, *e;
	uint64_t	 x;
	int		 f;

	for (f = 0; f < AF__MAX; f++) {
		/*
		 * One pass, eight bytes a step while they hold no tab
		 * (memchr(3) per field cost more than the copy).
		 */
		t = fl->v[f];
		e = t + fl->len[f];
		for (; e - t >= 8; t += 8, p += 8) {
			memcpy(&x, t, 8);
			if (AUDIT_HAS0(x ^ 0x0909090909090909ULL))
				break;
			memcpy(p, &x, 8);
		}
		for (; t < e; t++)
			*p++ = *t == '\t' ? '?' : *t;
		*p++ = '\t';
	}
	return (p - out);
}

/*
 * Unpack a packed record into fields pointing into it (not NUL-ended:
 * use the lengths).  Values past the schema's end (a newer writer's
 * fields) are ignored, missing ones are "".  0, or -1 when malformed.
 */
int
audit_unpack(const char *p, size_t len, struct audit_fields *out)
{
	const char	*end = p + len, *t;
	int		 f;

	for (f = 0; f < AF__MAX; f++) {
		out->v[f] = "";
		out->len[f] = 0;
	}
	for (f = 0; p < end && f < AF__MAX; f++) {
		if ((t = memchr(p, '\t', end - p)) == NULL)
			return (-1);
		out->v[f] = p;
		out->len[f] = t - p;
		p = t + 1;
	}
	return (0);
}

/* Copy a word of a ref: a space or ';' in it would end it early. */
static char *
audit_ref_word(char *p, const char *v, size_t len)
{
	size_t	 i;

	for (i = 0; i < len; i++)
		p[i] = v[i] == ' ' || v[i] == ';' ? '?' : v[i];
	return (p + len);
}

/*
 * What an index entry keeps of a record besides its id, for a query's
 * prefilter: " <action> <status> <decision>;" into buf (len bytes).  Its
 * length; 0 when it does not fit.
 */
size_t
audit_ref_tail(const struct audit_fields *fl, char *buf, size_t len)
{
	char	*p = buf;

	if (fl->len[AF_ACTION] + fl->len[AF_STATUS] + fl->len[AF_DECISION] +
	    4 > len)
		return (0);
	*p++ = ' ';
	p = audit_ref_word(p, fl->v[AF_ACTION], fl->len[AF_ACTION]);
	*p++ = ' ';
	p = audit_ref_word(p, fl->v[AF_STATUS], fl->len[AF_STATUS]);
	*p++ = ' ';
	p = audit_ref_word(p, fl->v[AF_DECISION], fl->len[AF_DECISION]);
	*p++ = ';';
	return (p - buf);
}

/*
 * The ref before offset *end of a refs value v: its id into id
 * (AUDIT_ID_MAX bytes) and its action, status and decision into out
 * (pointing into v); *end moves to its start.  1, 0 at the start of v,
 * -1 when malformed.
 */
int
audit_ref_prev(const char *v, size_t *end, char *id,
    struct audit_fields *out)
{
	const char	*e = v + *end, *s, *w[4];
	size_t		 wl[4];
	int		 f, k;

	while (e > v && e[-1] == ';')
		e--;
	if (e == v) {
		*end = 0;
		return (0);
	}
	for (s = e; s > v && s[-1] != ';'; s--)
		;
	*end = s - v;
	for (k = 0; k < 4; k++) {
		w[k] = s;
		while (s < e && *s != ' ')
			s++;
		wl[k] = s - w[k];
		if (k < 3 && s == e)
			return (-1);
		s++;
	}
	if (wl[0] == 0 || wl[0] >= AUDIT_ID_MAX)
		return (-1);
	memcpy(id, w[0], wl[0]);
	id[wl[0]] = '\0';
	for (f = 0; f < AF__MAX; f++) {
		out->v[f] = "";
		out->len[f] = 0;
	}
	out->v[AF_ACTION] = w[1];
	out->len[AF_ACTION] = wl[1];
	out->v[AF_STATUS] = w[2];
	out->len[AF_STATUS] = wl[2];
	out->v[AF_DECISION] = w[3];
	out->len[AF_DECISION] = wl[3];
	return (1);
}

/* An empty filter: everything matches, limit 100. */
void
audit_filter_init(struct audit_filter *f)
{
	memset(f, 0, sizeof(*f));
	f->limit = 100;
}

/* Free what a filter owns. */
void
audit_filter_clear(struct audit_filter *f)
{
	free(f->subject);
	free(f->repo);
	free(f->action);
	free(f->decision);
	audit_filter_init(f);
}

/* Whether a repository pattern holds no glob characters. */
int
audit_glob_literal(const char *s)
{
	return (strpbrk(s, "*?[\\") == NULL);
}

/* Digits, or digits "-" digits. */
int
audit_valid_stream_id(const char *s)
{
	size_t	 n;

	n = strspn(s, "0123456789");
	if (n == 0 || n > 20)
		return (0);
	if (s[n] == '\0')
		return (1);
	if (s[n] != '-')
		return (0);
	s += n + 1;
	n = strspn(s, "0123456789");
	return (n > 0 && n <= 20 && s[n] == '\0');
}

/*
 * A time: a duration back from now ("30s", "15m", "2h", "7d", "1w"), an
 * RFC 3339 UTC time ("2024-05-01T12:00:00Z", fraction optional, or a
 * date "2024-05-01"), or milliseconds since the epoch.
 */
int
audit_parse_time(const char *s, int64_t now_ms, int64_t *out)
{
	struct tm	 tm;
	const char	*p;
	char		*ep;
	long long	 v;
	int64_t		 unit, frac = 0;
	int		 n = 0, digits;

	if (*s == '\0' || strlen(s) > 40)
		return (-1);
	errno = 0;
	v = strtoll(s, &ep, 10);
	if (errno == 0 && ep != s && isdigit((unsigned char)*s)) {
		unit = -1;
		if (*ep == '\0' && v > 100000000000LL) {
			*out = v;	/* epoch milliseconds */
			return (0);
		}
		if (strcmp(ep, "s") == 0)
			unit = 1000;
		else if (strcmp(ep, "m") == 0)
			unit = 60000;
		else if (strcmp(ep, "h") == 0)
			unit = 3600000;
		else if (strcmp(ep, "d") == 0)
			unit = 86400000;
		else if (strcmp(ep, "w") == 0)
			unit = 7 * 86400000LL;
		if (unit > 0 && v >= 0 && v <= 3650LL * 86400000 / unit) {
			*out = now_ms - v * unit;
			return (0);
		}
	}
	memset(&tm, 0, sizeof(tm));
	if (sscanf(s, "%4d-%2d-%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
	    &n) != 3 || n != 10)
		return (-1);
	p = s + n;
	if (*p == 'T' || *p == 't' || *p == ' ') {
		n = 0;
		if (sscanf(p + 1, "%2d:%2d:%2d%n", &tm.tm_hour, &tm.tm_min,
		    &tm.tm_sec, &n) != 3 || n != 8)
			return (-1);
		p += 1 + n;
		if (*p == '.') {
			for (p++, digits = 0; isdigit((unsigned char)*p);
			    p++, digits++)
				if (digits < 3)
					frac = frac * 10 + (*p - '0');
			for (; digits < 3; digits++)
				frac *= 10;
		}
		if (*p != 'Z' && *p != 'z')
			return (-1);
		p++;
	}
	if (*p != '\0')
		return (-1);
	if (tm.tm_mon < 1 || tm.tm_mon > 12 || tm.tm_mday < 1 ||
	    tm.tm_mday > 31 || tm.tm_hour > 23 || tm.tm_min > 59 ||
	    tm.tm_sec > 60 || tm.tm_year < 1970)
		return (-1);
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	*out = (int64_t)timegm(&tm) * 1000 + frac;
	return (0);
}

static int
audit_set_str(char **dst, const char *v)
{
	if (*v == '\0' || strlen(v) > AUDIT_VALUE_MAX)
		return (-1);
	free(*dst);
	if ((*dst = strdup(v)) == NULL)
		abort();
	return (0);
}

/*
 * Set the filter named `name` from its text.  Returns 0, or -1 with
 * *cause set to a static message.
 */
int
audit_filter_set(struct audit_filter *f, const char *name, const char *v,
    int64_t now_ms, char **cause)
{
	static char	 msg[160];
	char		*ep;
	long		 n;

	if (strcmp(name, "since") == 0 || strcmp(name, "until") == 0) {
		if (audit_parse_time(v, now_ms, strcmp(name, "since") == 0 ?
		    &f->since_ms : &f->until_ms) == -1)
			goto bad;
		return (0);
	}
	if (strcmp(name, "subject") == 0) {
		if (audit_set_str(&f->subject, v) == -1)
			goto bad;
		return (0);
	}
	if (strcmp(name, "repo") == 0) {
		if (audit_set_str(&f->repo, v) == -1)
			goto bad;
		return (0);
	}
	if (strcmp(name, "action") == 0) {
		if (audit_set_str(&f->action, v) == -1)
			goto bad;
		return (0);
	}
	if (strcmp(name, "decision") == 0) {
		if (strcmp(v, "allow") != 0 && strcmp(v, "deny") != 0)
			goto bad;
		return (audit_set_str(&f->decision, v));
	}
	if (strcmp(name, "status") == 0) {
		if (strlen(v) == 3 && isdigit((unsigned char)v[0]) &&
		    v[0] >= '1' && v[0] <= '5' &&
		    (v[1] == 'x' || v[1] == 'X') && (v[2] == 'x' || v[2] == 'X')) {
			f->status_class = v[0] - '0';
			f->status = 0;
			return (0);
		}
		errno = 0;
		n = strtol(v, &ep, 10);
		if (errno != 0 || *ep != '\0' || n < 100 || n > 599)
			goto bad;
		f->status = (int)n;
		f->status_class = 0;
		return (0);
	}
	if (strcmp(name, "limit") == 0) {
		errno = 0;
		n = strtol(v, &ep, 10);
		if (errno != 0 || *ep != '\0' || n < 1 || n > 1000000)
			goto bad;
		f->limit = (size_t)n;
		return (0);
	}
	if (strcmp(name, "cursor") == 0) {
		if (!audit_valid_stream_id(v) || strlen(v) >= sizeof(f->cursor))
			goto bad;
		snprintf(f->cursor, sizeof(f->cursor), "%s", v);
		return (0);
	}
	snprintf(msg, sizeof(msg), "unknown filter");
	*cause = msg;
	return (-1);
bad:
	snprintf(msg, sizeof(msg), "%.32s: invalid value", name);
	*cause = msg;
	return (-1);
}

static int
audit_eq(const struct audit_fields *r, enum audit_field fl, const char *s)
{
	return (r->len[fl] == strlen(s) && memcmp(r->v[fl], s,
	    r->len[fl]) == 0);
}

static long long
audit_int(const struct audit_fields *r, enum audit_field fl)
{
	char	 tmp[32];
	size_t	 n = r->len[fl];

	if (n == 0 || n >= sizeof(tmp))
		return (-1);
	memcpy(tmp, r->v[fl], n);
	tmp[n] = '\0';
	return (strtoll(tmp, NULL, 10));
}

/* Whether a record passes every filter set. */
int
audit_filter_match(const struct audit_filter *f, const struct audit_fields *r)
{
	char		 repo[AUDIT_VALUE_MAX + 1];
	long long	 t, st;

	if (f->subject != NULL && !audit_eq(r, AF_SUBJECT, f->subject))
		return (0);
	if (f->action != NULL && !audit_eq(r, AF_ACTION, f->action))
		return (0);
	if (f->decision != NULL && !audit_eq(r, AF_DECISION, f->decision))
		return (0);
	if (f->status != 0 || f->status_class != 0) {
		st = audit_int(r, AF_STATUS);
		if (f->status != 0 && st != f->status)
			return (0);
		if (f->status_class != 0 && st / 100 != f->status_class)
			return (0);
	}
	if (f->since_ms != 0 || f->until_ms != 0) {
		t = audit_int(r, AF_TIME);
		if (f->since_ms != 0 && t < f->since_ms)
			return (0);
		if (f->until_ms != 0 && t > f->until_ms)
			return (0);
	}
	if (f->repo != NULL) {
		if (r->len[AF_REPOSITORY] >= sizeof(repo))
			return (0);
		memcpy(repo, r->v[AF_REPOSITORY], r->len[AF_REPOSITORY]);
		repo[r->len[AF_REPOSITORY]] = '\0';
		if (fnmatch(f->repo, repo, 0) != 0)
			return (0);
	}
	return (1);
}
