/*
 * secret.c: the secret's text form, its hash, and the record Redis holds
 * (secret.h).  Leaf.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "secret.h"

#define SECRET_VERDICT_NAME(e, s) s,
static const char *const secret_verdict_names[] = {
	SECRET_VERDICTS(SECRET_VERDICT_NAME)
};
#undef SECRET_VERDICT_NAME

static const char secret_b64url[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

const char *
secret_verdict_name(enum secret_verdict v)
{
	if ((unsigned)v >= SECRET_VERDICT__MAX)
		return ("unknown");
	return (secret_verdict_names[v]);
}

int
secret_generate(char *out, char *id)
{
	unsigned char	 idb[SECRET_ID_LEN / 2], r[SECRET_HASH_LEN + 1];
	char		*p;
	size_t		 i;
	unsigned	 v;

	if (RAND_bytes(idb, sizeof(idb)) != 1 ||
	    RAND_bytes(r, SECRET_HASH_LEN) != 1)
		return (-1);
	r[SECRET_HASH_LEN] = 0;
	for (i = 0; i < sizeof(idb); i++)
		snprintf(id + 2 * i, 3, "%02x", idb[i]);
	memcpy(out, SECRET_PREFIX, SECRET_PREFIX_LEN);
	memcpy(out + SECRET_PREFIX_LEN, id, SECRET_ID_LEN);
	p = out + SECRET_PREFIX_LEN + SECRET_ID_LEN;
	*p++ = '_';
	/* 32 bytes: ten groups of three, then two bytes as three digits. */
	for (i = 0; i < SECRET_HASH_LEN; i += 3) {
		v = (unsigned)r[i] << 16 | (unsigned)r[i + 1] << 8;
		if (i + 2 < SECRET_HASH_LEN)
			v |= r[i + 2];
		*p++ = secret_b64url[v >> 18 & 63];
		*p++ = secret_b64url[v >> 12 & 63];
		*p++ = secret_b64url[v >> 6 & 63];
		if (i + 2 < SECRET_HASH_LEN)
			*p++ = secret_b64url[v & 63];
	}
	*p = '\0';
	OPENSSL_cleanse(r, sizeof(r));
	return (p - out == SECRET_LEN ? 0 : -1);
}

static int
secret_is_b64url(int c)
{
	return ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
	    (c >= '0' && c <= '9') || c == '-' || c == '_');
}

int
secret_parse(const char *s, size_t len, char *id)
{
	size_t	 i;
	int	 c;

	if (len != SECRET_LEN ||
	    memcmp(s, SECRET_PREFIX, SECRET_PREFIX_LEN) != 0 ||
	    s[SECRET_PREFIX_LEN + SECRET_ID_LEN] != '_')
		return (-1);
	for (i = 0; i < SECRET_ID_LEN; i++) {
		c = (unsigned char)s[SECRET_PREFIX_LEN + i];
		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
			return (-1);
	}
	for (i = SECRET_PREFIX_LEN + SECRET_ID_LEN + 1; i < len; i++)
		if (!secret_is_b64url((unsigned char)s[i]))
			return (-1);
	/* 43 digits carry 258 bits: the last one's low 2 bits are 0. */
	if (strchr("AEIMQUYcgkosw048", s[len - 1]) == NULL)
		return (-1);
	memcpy(id, s + SECRET_PREFIX_LEN, SECRET_ID_LEN);
	id[SECRET_ID_LEN] = '\0';
	return (0);
}

void
secret_hash(const char *s, size_t len, unsigned char *out)
{
	unsigned int	 n = SECRET_HASH_LEN;

	if (EVP_Digest(s, len, out, &n, EVP_sha256(), NULL) != 1)
		memset(out, 0, SECRET_HASH_LEN);	/* matches no record */
}

void
secret_hash_hex(const unsigned char *h, char *out)
{
	size_t	 i;

	for (i = 0; i < SECRET_HASH_LEN; i++)
		snprintf(out + 2 * i, 3, "%02x", h[i]);
}

int
secret_field_ok(const char *s, int empty_ok)
{
	size_t	 n = strlen(s), i;

	if (n > SECRET_FIELD_MAX || (n == 0 && !empty_ok))
		return (0);
	for (i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return (0);
	return (1);
}

static int
secret_hexval(int c)
{
	if (c >= '0' && c <= '9')
		return (c - '0');
	if (c >= 'a' && c <= 'f')
		return (c - 'a' + 10);
	return (-1);
}

/* A decimal count of seconds, 0..2^40; -1 otherwise. */
static int64_t
secret_time(const char *v, size_t n)
{
	int64_t	 t = 0;
	size_t	 i;

	if (n == 0 || n > 13)
		return (-1);
	for (i = 0; i < n; i++) {
		if (v[i] < '0' || v[i] > '9')
			return (-1);
		t = t * 10 + (v[i] - '0');
	}
	return (t);
}

static char *
secret_dup(const char *v, size_t n, int empty_ok)
{
	char	*s;

	if (n > SECRET_FIELD_MAX || memchr(v, '\0', n) != NULL ||
	    (s = malloc(n + 1)) == NULL)
		return (NULL);
	memcpy(s, v, n);
	s[n] = '\0';
	if (!secret_field_ok(s, empty_ok)) {
		free(s);
		return (NULL);
	}
	return (s);
}

static int
secret_groups_parse(struct secret_rec *rec, const char *v, size_t n,
    size_t max_groups)
{
	json_t		*a, *g;
	json_error_t	 jerr;
	size_t		 i, max_len;

	max_len = (max_groups + 1) * (SECRET_FIELD_MAX * 6 + 3) + 2;
	if (n > max_len ||
	    (a = json_loadb(v, n, JSON_REJECT_DUPLICATES, &jerr)) == NULL)
		return (-1);
	if (!json_is_array(a) || json_array_size(a) > max_groups ||
	    (json_array_size(a) > 0 && (rec->groups = calloc(
	    json_array_size(a), sizeof(*rec->groups))) == NULL)) {
		json_decref(a);
		return (-1);
	}
	json_array_foreach(a, i, g) {
		if (!json_is_string(g) ||
		    (rec->groups[i] = secret_dup(json_string_value(g),
		    json_string_length(g), 0)) == NULL) {
			json_decref(a);
			return (-1);
		}
		rec->ngroups++;
	}
	json_decref(a);
	return (0);
}

int
secret_rec_parse(struct secret_rec *rec, const char *id,
    const char *const *names, const size_t *nlens,
    const char *const *vals, const size_t *vlens, size_t n,
    size_t max_groups, const char **err)
{
	size_t	 i, j;
	int	 have_hash = 0, hi, lo;
	int64_t	*tp;

	memset(rec, 0, sizeof(*rec));
	snprintf(rec->id, sizeof(rec->id), "%s", id);
	for (i = 0; i < n; i++) {
		const char	*f = names[i], *v = vals[i];
		size_t		 fl = nlens[i], vl = vlens[i];

#define F(s)	(fl == sizeof(s) - 1 && memcmp(f, s, fl) == 0)
		tp = NULL;
		if (F("subject")) {
			free(rec->subject);
			if ((rec->subject = secret_dup(v, vl, 0)) == NULL) {
				*err = "subject";
				goto bad;
			}
		} else if (F("name")) {
			free(rec->name);
			if ((rec->name = secret_dup(v, vl, 1)) == NULL) {
				*err = "name";
				goto bad;
			}
		} else if (F("groups")) {
			if (rec->groups != NULL || secret_groups_parse(rec, v,
			    vl, max_groups) == -1) {
				*err = "groups";
				goto bad;
			}
		} else if (F("hash")) {
			if (vl != 2 * SECRET_HASH_LEN) {
				*err = "hash";
				goto bad;
			}
			for (j = 0; j < SECRET_HASH_LEN; j++) {
				hi = secret_hexval((unsigned char)v[2 * j]);
				lo = secret_hexval((unsigned char)v[2 * j + 1]);
				if (hi < 0 || lo < 0) {
					*err = "hash";
					goto bad;
				}
				rec->hash[j] = hi << 4 | lo;
			}
			have_hash = 1;
		} else if (F("created"))
			tp = &rec->created;
		else if (F("expires"))
			tp = &rec->expires;
		else if (F("last_used"))
			tp = &rec->last_used;
		else if (F("revoked"))
			tp = &rec->revoked;
#undef F
		if (tp != NULL && (*tp = secret_time(v, vl)) == -1) {
			*err = "a time field";
			goto bad;
		}
	}
	if (rec->subject == NULL || !have_hash) {
		*err = rec->subject == NULL ? "no subject" : "no hash";
		goto bad;
	}
	if (rec->name == NULL && (rec->name = strdup("")) == NULL) {
		*err = "out of memory";
		goto bad;
	}
	return (0);
bad:
	secret_rec_clear(rec);
	return (-1);
}

void
secret_rec_clear(struct secret_rec *rec)
{
	size_t	 i;

	free(rec->subject);
	free(rec->name);
	for (i = 0; i < rec->ngroups; i++)
		free(rec->groups[i]);
	free(rec->groups);
	memset(rec, 0, sizeof(*rec));
}

char *
secret_groups_json(const char *const *groups, size_t n)
{
	json_t	*a;
	char	*s;
	size_t	 i;

	if ((a = json_array()) == NULL)
		return (NULL);
	for (i = 0; i < n; i++)
		if (json_array_append_new(a, json_string(groups[i])) == -1) {
			json_decref(a);
			return (NULL);
		}
	s = json_dumps(a, JSON_COMPACT);
	json_decref(a);
	return (s);
}

enum secret_verdict
secret_judge(const struct secret_rec *rec, const unsigned char *hash,
    int64_t now)
{
	if (CRYPTO_memcmp(rec->hash, hash, SECRET_HASH_LEN) != 0)
		return (SECRET_WRONG);
	if (rec->revoked != 0)
		return (SECRET_REVOKED);
	if (rec->expires != 0 && now >= rec->expires)
		return (SECRET_EXPIRED);
	return (SECRET_OK);
}

int
secret_parse_duration(const char *s, int64_t *out)
{
	int64_t	 n = 0, unit;
	size_t	 i, len = strlen(s);

	if (len < 2 || len > 12)
		return (-1);
	for (i = 0; i + 1 < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return (-1);
		n = n * 10 + (s[i] - '0');
	}
	switch (s[len - 1]) {
	case 's': unit = 1; break;
	case 'm': unit = 60; break;
	case 'h': unit = 3600; break;
	case 'd': unit = 86400; break;
	case 'w': unit = 7 * 86400; break;
	default:
		return (-1);
	}
	if (n < 1 || n > 10LL * 366 * 86400 / unit)
		return (-1);
	*out = n * unit;
	return (0);
}

int
secret_parse_time(const char *s, int64_t now, int64_t *out)
{
	struct tm	 tm;
	const char	*e;
	int64_t		 t = 0;
	size_t		 i;
	time_t		 tt;

	if (strcmp(s, "now") == 0) {
		*out = now;
		return (0);
	}
	if (s[0] == '@') {
		for (i = 1; s[i] != '\0'; i++) {
			if (s[i] < '0' || s[i] > '9' || i > 12)
				return (-1);
			t = t * 10 + (s[i] - '0');
		}
		if (i == 1)
			return (-1);
		*out = t;
		return (0);
	}
	memset(&tm, 0, sizeof(tm));
	if ((e = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm)) == NULL ||
	    strcmp(e, "Z") != 0 || (tt = timegm(&tm)) == (time_t)-1 ||
	    tt < 0)
		return (-1);
	*out = tt;
	return (0);
}

const char *
secret_fmt_time(int64_t t, char *buf, size_t len)
{
	struct tm	 tm;
	time_t		 tt = (time_t)t;

	if (t == 0 || gmtime_r(&tt, &tm) == NULL ||
	    strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(buf, len, "%s", t == 0 ? "never" : "?");
	return (buf);
}

char *
secret_login_user(const char *subject, char *buf, size_t len)
{
	size_t	 i;
	char	 c;

	for (i = 0; i + 1 < len && subject[i] != '\0'; i++) {
		c = subject[i];
		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || c == '.' || c == '_' ||
		    c == '-' || c == '@')
			buf[i] = c;
		else
			buf[i] = '_';
	}
	buf[i] = '\0';
	return (buf);
}
