/*
 * audit_format.c: the pure parts of the audit subsystem.  The record
 * payload (fields in schema order, sanitised and bounded), the spool
 * file's header and record frames with their CRC-32, and the query
 * filters with their time grammar.  Leaf: everything here is a function
 * of its arguments; time comes in as a parameter.
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
	for (i = 0; i < vlen; i++) {
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

/*
 * Parse a payload into fields pointing into it.  Every name and value
 * must be NUL-terminated inside the buffer.  Missing fields are "".
 */
int
audit_payload_parse(const char *p, size_t len, struct audit_fields *out)
{
	const char	*end = p + len, *name, *val, *z;
	int		 f, i, next = 0;

	for (i = 0; i < AF__MAX; i++) {
		out->v[i] = "";
		out->len[i] = 0;
	}
	while (p < end) {
		name = p;
		if ((z = memchr(p, '\0', end - p)) == NULL)
			return (-1);
		val = z + 1;
		if (val >= end)
			return (-1);
		if ((z = memchr(val, '\0', end - val)) == NULL)
			return (-1);
		/* Fields come in schema order: try the next one first. */
		if (next < AF__MAX && audit_field_is(next, name,
		    val - 1 - name))
			f = next;
		else
			f = audit_field_lookup(name, val - 1 - name);
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
 * CRC-32 (IEEE 802.3, as zlib's crc32()), one table lookup a byte: with
 * the write-ahead log every record is framed, and the bitwise loop cost
 * a few microseconds a record (bench/audit_bench.sh, part 4).  The table
 * is crc of each byte value, (c >> 1) ^ (0xedb88320 & -(c & 1)) 8 times.
 */
static const uint32_t audit_crc_table[256] = {
	0x00000000u, 0x77073096u, 0xee0e612cu, 0x990951bau,
	0x076dc419u, 0x706af48fu, 0xe963a535u, 0x9e6495a3u,
	0x0edb8832u, 0x79dcb8a4u, 0xe0d5e91eu, 0x97d2d988u,
	0x09b64c2bu, 0x7eb17cbdu, 0xe7b82d07u, 0x90bf1d91u,
	0x1db71064u, 0x6ab020f2u, 0xf3b97148u, 0x84be41deu,
	0x1adad47du, 0x6ddde4ebu, 0xf4d4b551u, 0x83d385c7u,
	0x136c9856u, 0x646ba8c0u, 0xfd62f97au, 0x8a65c9ecu,
	0x14015c4fu, 0x63066cd9u, 0xfa0f3d63u, 0x8d080df5u,
	0x3b6e20c8u, 0x4c69105eu, 0xd56041e4u, 0xa2677172u,
	0x3c03e4d1u, 0x4b04d447u, 0xd20d85fdu, 0xa50ab56bu,
	0x35b5a8fau, 0x42b2986cu, 0xdbbbc9d6u, 0xacbcf940u,
	0x32d86ce3u, 0x45df5c75u, 0xdcd60dcfu, 0xabd13d59u,
	0x26d930acu, 0x51de003au, 0xc8d75180u, 0xbfd06116u,
	0x21b4f4b5u, 0x56b3c423u, 0xcfba9599u, 0xb8bda50fu,
	0x2802b89eu, 0x5f058808u, 0xc60cd9b2u, 0xb10be924u,
	0x2f6f7c87u, 0x58684c11u, 0xc1611dabu, 0xb6662d3du,
	0x76dc4190u, 0x01db7106u, 0x98d220bcu, 0xefd5102au,
	0x71b18589u, 0x06b6b51fu, 0x9fbfe4a5u, 0xe8b8d433u,
	0x7807c9a2u, 0x0f00f934u, 0x9609a88eu, 0xe10e9818u,
	0x7f6a0dbbu, 0x086d3d2du, 0x91646c97u, 0xe6635c01u,
	0x6b6b51f4u, 0x1c6c6162u, 0x856530d8u, 0xf262004eu,
	0x6c0695edu, 0x1b01a57bu, 0x8208f4c1u, 0xf50fc457u,
	0x65b0d9c6u, 0x12b7e950u, 0x8bbeb8eau, 0xfcb9887cu,
	0x62dd1ddfu, 0x15da2d49u, 0x8cd37cf3u, 0xfbd44c65u,
	0x4db26158u, 0x3ab551ceu, 0xa3bc0074u, 0xd4bb30e2u,
	0x4adfa541u, 0x3dd895d7u, 0xa4d1c46du, 0xd3d6f4fbu,
	0x4369e96au, 0x346ed9fcu, 0xad678846u, 0xda60b8d0u,
	0x44042d73u, 0x33031de5u, 0xaa0a4c5fu, 0xdd0d7cc9u,
	0x5005713cu, 0x270241aau, 0xbe0b1010u, 0xc90c2086u,
	0x5768b525u, 0x206f85b3u, 0xb966d409u, 0xce61e49fu,
	0x5edef90eu, 0x29d9c998u, 0xb0d09822u, 0xc7d7a8b4u,
	0x59b33d17u, 0x2eb40d81u, 0xb7bd5c3bu, 0xc0ba6cadu,
	0xedb88320u, 0x9abfb3b6u, 0x03b6e20cu, 0x74b1d29au,
	0xead54739u, 0x9dd277afu, 0x04db2615u, 0x73dc1683u,
	0xe3630b12u, 0x94643b84u, 0x0d6d6a3eu, 0x7a6a5aa8u,
	0xe40ecf0bu, 0x9309ff9du, 0x0a00ae27u, 0x7d079eb1u,
	0xf00f9344u, 0x8708a3d2u, 0x1e01f268u, 0x6906c2feu,
	0xf762575du, 0x806567cbu, 0x196c3671u, 0x6e6b06e7u,
	0xfed41b76u, 0x89d32be0u, 0x10da7a5au, 0x67dd4accu,
	0xf9b9df6fu, 0x8ebeeff9u, 0x17b7be43u, 0x60b08ed5u,
	0xd6d6a3e8u, 0xa1d1937eu, 0x38d8c2c4u, 0x4fdff252u,
	0xd1bb67f1u, 0xa6bc5767u, 0x3fb506ddu, 0x48b2364bu,
	0xd80d2bdau, 0xaf0a1b4cu, 0x36034af6u, 0x41047a60u,
	0xdf60efc3u, 0xa867df55u, 0x316e8eefu, 0x4669be79u,
	0xcb61b38cu, 0xbc66831au, 0x256fd2a0u, 0x5268e236u,
	0xcc0c7795u, 0xbb0b4703u, 0x220216b9u, 0x5505262fu,
	0xc5ba3bbeu, 0xb2bd0b28u, 0x2bb45a92u, 0x5cb36a04u,
	0xc2d7ffa7u, 0xb5d0cf31u, 0x2cd99e8bu, 0x5bdeae1du,
	0x9b64c2b0u, 0xec63f226u, 0x756aa39cu, 0x026d930au,
	0x9c0906a9u, 0xeb0e363fu, 0x72076785u, 0x05005713u,
	0x95bf4a82u, 0xe2b87a14u, 0x7bb12baeu, 0x0cb61b38u,
	0x92d28e9bu, 0xe5d5be0du, 0x7cdcefb7u, 0x0bdbdf21u,
	0x86d3d2d4u, 0xf1d4e242u, 0x68ddb3f8u, 0x1fda836eu,
	0x81be16cdu, 0xf6b9265bu, 0x6fb077e1u, 0x18b74777u,
	0x88085ae6u, 0xff0f6a70u, 0x66063bcau, 0x11010b5cu,
	0x8f659effu, 0xf862ae69u, 0x616bffd3u, 0x166ccf45u,
	0xa00ae278u, 0xd70dd2eeu, 0x4e048354u, 0x3903b3c2u,
	0xa7672661u, 0xd06016f7u, 0x4969474du, 0x3e6e77dbu,
	0xaed16a4au, 0xd9d65adcu, 0x40df0b66u, 0x37d83bf0u,
	0xa9bcae53u, 0xdebb9ec5u, 0x47b2cf7fu, 0x30b5ffe9u,
	0xbdbdf21cu, 0xcabac28au, 0x53b39330u, 0x24b4a3a6u,
	0xbad03605u, 0xcdd70693u, 0x54de5729u, 0x23d967bfu,
	0xb3667a2eu, 0xc4614ab8u, 0x5d681b02u, 0x2a6f2b94u,
	0xb40bbe37u, 0xc30c8ea1u, 0x5a05df1bu, 0x2d02ef8du,
};

uint32_t
audit_crc32(const void *data, size_t len)
{
	const unsigned char	*p = data;
	uint32_t		 crc = 0xffffffffu;

	while (len-- > 0)
		crc = audit_crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return (crc ^ 0xffffffffu);
}

static void
put32(unsigned char *p, uint32_t v)
{
	p[0] = v & 0xff;
	p[1] = (v >> 8) & 0xff;
	p[2] = (v >> 16) & 0xff;
	p[3] = (v >> 24) & 0xff;
}

static uint32_t
get32(const unsigned char *p)
{
	return ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	    (uint32_t)p[3] << 24);
}

/* Write the 32-byte spool header for the given writer run. */
void
audit_spool_header(unsigned char *h, uint64_t run)
{
	memset(h, 0, AUDIT_SPOOL_HDR);
	memcpy(h, "PCAUDSP1", 8);
	put32(h + 8, (uint32_t)(run & 0xffffffffu));
	put32(h + 12, (uint32_t)(run >> 32));
	put32(h + 16, audit_crc32(h, 16));
}

/* Parse a spool header.  0 and the run number, or -1. */
int
audit_spool_header_parse(const unsigned char *h, size_t len, uint64_t *run)
{
	if (len < AUDIT_SPOOL_HDR || memcmp(h, "PCAUDSP1", 8) != 0 ||
	    get32(h + 16) != audit_crc32(h, 16))
		return (-1);
	*run = (uint64_t)get32(h + 8) | (uint64_t)get32(h + 12) << 32;
	return (0);
}

/* See audit.h: the acknowledged mark, 12 bytes. */
void
audit_spool_mark(unsigned char *m, uint64_t off, uint32_t crc)
{
	put32(m, (uint32_t)(off & 0xffffffffu));
	put32(m + 4, (uint32_t)(off >> 32));
	put32(m + 8, crc);
}

/* See audit.h. */
void
audit_spool_mark_parse(const unsigned char *m, uint64_t *off, uint32_t *crc)
{
	*off = (uint64_t)get32(m) | (uint64_t)get32(m + 4) << 32;
	*crc = get32(m + 8);
}

/* The payload CRC a frame head carries. */
uint32_t
audit_spool_frame_crc(const unsigned char *f)
{
	return (get32(f + 8));
}

/* Write the frame head of a record whose payload is p[0..len). */
void
audit_spool_frame(unsigned char *f, const void *p, size_t len)
{
	put32(f, AUDIT_SPOOL_MAGIC);
	put32(f + 4, (uint32_t)len);
	put32(f + 8, audit_crc32(p, len));
}

/* See audit.h. */
long
audit_spool_check(const unsigned char *p, size_t avail)
{
	uint32_t	 len;

	if (avail < AUDIT_SPOOL_FRAME)
		return (0);
	if (get32(p) != AUDIT_SPOOL_MAGIC)
		return (-1);
	len = get32(p + 4);
	if (len == 0 || len > AUDIT_REC_MAX)
		return (-1);
	if (avail < AUDIT_SPOOL_FRAME + (size_t)len)
		return (0);
	if (get32(p + 8) != audit_crc32(p + AUDIT_SPOOL_FRAME, len))
		return (-1);
	return ((long)(AUDIT_SPOOL_FRAME + len));
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
