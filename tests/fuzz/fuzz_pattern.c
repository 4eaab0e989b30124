/*
 * fuzz_pattern.c: libFuzzer target for the policy's pattern matcher.  The
 * input is "pattern\0name\0value": the pattern is compiled with templates
 * allowed, every template is given `value`, and when that value is usable
 * the result of pattern_match() must equal a plain dynamic-programming
 * matcher run over the pattern with the value substituted as text (which
 * can only hold literal bytes: a usable value has no '*', '?' or '/'),
 * and a NULL value must behave as '*' does.
 * Beyond agreeing, nothing may crash, leak or read out of bounds.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pattern.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static int	stand_in;	/* STAND_IN is a star (NULL values) */

#define MAXLEN	128
#define STAND_IN	'\001'	/* a '*' that never forms a "**" segment */

static void
check(int cond)
{
	if (!cond)
		abort();
}

/* Characters of one segment: '*' any run, '?' one, else literal (DP). */
static int
ref_seg(const char *p, size_t pn, const char *s, size_t sn)
{
	unsigned char	 d[MAXLEN * 2 + 2][MAXLEN + 2];
	size_t		 i, j;

	memset(d, 0, sizeof(d));
	d[pn][sn] = 1;
	for (i = pn + 1; i-- > 0;) {
		for (j = sn + 1; j-- > 0;) {
			if (i == pn)
				continue;
			if (p[i] == '*' || (stand_in && p[i] == STAND_IN))
				d[i][j] = d[i + 1][j] || (j < sn &&
				    d[i][j + 1]);
			else if (j < sn && (p[i] == '?' || p[i] == s[j]))
				d[i][j] = d[i + 1][j + 1];
		}
	}
	return d[0][0];
}

struct seg {
	const char	*s;
	size_t		 n;
};

static size_t
split(const char *s, size_t n, struct seg *v)
{
	size_t	 k = 0, i, start = 0;

	for (i = 0; i <= n; i++)
		if (i == n || s[i] == '/') {
			v[k].s = s + start;
			v[k].n = i - start;
			k++;
			start = i + 1;
		}
	return k;
}

/* Segments: "**" any run of whole segments (DP). */
static int
ref_match(const char *pat, size_t pn, const char *name, size_t nn)
{
	struct seg	 ps[MAXLEN * 2], ns[MAXLEN + 1];
	unsigned char	 d[MAXLEN * 2 + 1][MAXLEN + 2];
	size_t		 np, nnm, i, j;
	int		 dstar;

	np = split(pat, pn, ps);
	nnm = nn == 0 ? 0 : split(name, nn, ns);
	memset(d, 0, sizeof(d));
	d[np][nnm] = 1;
	for (i = np; i-- > 0;) {
		dstar = ps[i].n == 2 && ps[i].s[0] == '*' && ps[i].s[1] == '*';
		for (j = nnm + 1; j-- > 0;) {
			if (dstar)
				d[i][j] = d[i + 1][j] || (j < nnm &&
				    d[i][j + 1]);
			else if (j < nnm && ref_seg(ps[i].s, ps[i].n, ns[j].s,
			    ns[j].n))
				d[i][j] = d[i + 1][j + 1];
		}
	}
	return d[0][0];
}

/* Replace every ${...} of src with value; 0 when it does not fit. */
static int
substitute(const char *src, const char *value, char *out, size_t outlen)
{
	size_t	 o = 0, vlen = strlen(value);
	const char *end;

	while (*src != '\0') {
		if (src[0] == '$' && src[1] == '{' &&
		    (end = strchr(src, '}')) != NULL) {
			if (o + vlen >= outlen)
				return 0;
			memcpy(out + o, value, vlen);
			o += vlen;
			src = end + 1;
			continue;
		}
		if (o + 1 >= outlen)
			return 0;
		out[o++] = *src++;
	}
	out[o] = '\0';
	return 1;
}

/* One fuzz input. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char			 buf[3 * MAXLEN + 3], sub[2 * MAXLEN + 1];
	const char		*pat, *name, *value, *err;
	struct pattern		*p;
	struct pat_value	 vals[PAT_MAX_VARS];
	size_t			 i, nlen;
	int			 got, want;

	if (size > sizeof(buf) - 3)
		return 0;
	memcpy(buf, data, size);
	buf[size] = buf[size + 1] = buf[size + 2] = '\0';
	pat = buf;
	name = pat + strlen(pat) + 1;
	if (name > buf + size)
		name = buf + size + 1;
	value = name + strlen(name) + 1;
	if (value > buf + size + 1)
		value = buf + size + 2;
	if (strlen(pat) > MAXLEN || strlen(name) > MAXLEN ||
	    strlen(value) > MAXLEN)
		return 0;

	p = pattern_compile(pat, MAXLEN, PAT_TEMPLATES, &err);
	if (p == NULL) {
		check(err != NULL && *err != '\0');
		return 0;
	}
	check(strcmp(pattern_source(p), pat) == 0);
	check(pattern_nvars(p) <= PAT_MAX_VARS);
	nlen = strlen(name);
	if (pattern_nvars(p) == 0) {
		got = pattern_match(p, name, nlen, NULL);
		want = ref_match(pat, strlen(pat), name, nlen);
		check(got == want);
	} else if (pattern_value_ok(value, strlen(value)) &&
	    substitute(pat, value, sub, sizeof(sub))) {
		for (i = 0; i < pattern_nvars(p); i++) {
			vals[i].s = value;
			vals[i].len = strlen(value);
		}
		got = pattern_match(p, name, nlen, vals);
		want = ref_match(sub, strlen(sub), name, nlen);
		check(got == want);
	}
	/* A NULL value stands for '*' (within its segment). */
	if (pattern_nvars(p) > 0 && strchr(pat, STAND_IN) == NULL &&
	    substitute(pat, "\001", sub, sizeof(sub))) {
		for (i = 0; i < pattern_nvars(p); i++) {
			vals[i].s = NULL;
			vals[i].len = 0;
		}
		got = pattern_match(p, name, nlen, vals);
		stand_in = 1;
		want = ref_match(sub, strlen(sub), name, nlen);
		stand_in = 0;
		check(got == want);
	}
	pattern_free(p);
	return 0;
}
