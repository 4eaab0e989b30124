/*
 * pattern.c: compile and match the policy's repository patterns (grammar
 * in pattern.h).
 *
 * A compiled pattern is a list of segments, each a "**" or a list of
 * tokens: literal bytes, '?', '*' or a template.  Matching walks the name
 * without copying it.  Both levels use the classic wildcard walk with a
 * single backtrack point: every token but the star matches a fixed number
 * of bytes (a template's value is fixed once chosen) and every segment but
 * "**" matches exactly one name segment, so retrying from the last star
 * alone is complete, and the work is bounded by the product of the
 * pattern's and the name's lengths.
 *
 * Guarantees: compile refuses "**" inside a segment, empty segments, an
 * unterminated or unknown template, more than PAT_MAX_VARS distinct
 * templates and patterns over maxlen; its messages never echo the input.
 * A template value is matched as literal bytes and only when
 * pattern_value_ok() holds, so a value can neither widen the pattern nor
 * reach into another segment.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pattern.h"

enum pat_tok_type {
	TOK_LIT,
	TOK_ONE,	/* ? */
	TOK_STAR,	/* * */
	TOK_VAR
};

struct pat_tok {
	uint8_t		 type;
	uint8_t		 var;	/* TOK_VAR: template index */
	uint16_t	 len;	/* TOK_LIT: bytes */
	uint32_t	 off;	/* TOK_LIT: offset in lit */
};

struct pat_seg {
	uint32_t	 tok;	/* first token */
	uint32_t	 ntok;
	int		 dstar;	/* "**" */
};

struct pat_var {
	enum pat_var_kind	 kind;
	char			 claim[PAT_CLAIM_MAX + 1];
};

struct pattern {
	char		*src;
	char		*lit;		/* literal bytes of every token */
	struct pat_seg	*segs;
	size_t		 nsegs;
	struct pat_tok	*toks;
	size_t		 ntoks;
	struct pat_var	 vars[PAT_MAX_VARS];
	size_t		 nvars;
};

static const char pat_unterminated[] = "unterminated '${'";

static int
pat_claim_char(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	    (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.' ||
	    c == ':';
}

/* Whether segment sg holds both a template and a '*' or '?'. */
static int
pat_var_with_wildcard(const struct pattern *p, const struct pat_seg *sg)
{
	uint32_t	i;
	int		var = 0, wild = 0;

	for (i = sg->tok; i < sg->tok + sg->ntok; i++) {
		if (p->toks[i].type == TOK_VAR)
			var = 1;
		else if (p->toks[i].type == TOK_STAR ||
		    p->toks[i].type == TOK_ONE)
			wild = 1;
	}
	return (var && wild);
}

/* Parse "${...}" at s; returns its length and sets *var, or 0 and *err. */
static size_t
pat_template(struct pattern *p, const char *s, size_t n, int *var,
    const char **err)
{
	const char		*end, *name;
	size_t			 len, i;
	enum pat_var_kind	 kind;

	end = memchr(s, '}', n);
	if (end == NULL) {
		*err = pat_unterminated;
		return 0;
	}
	name = s + 2;
	len = end - name;
	if (len == 7 && memcmp(name, "subject", 7) == 0) {
		kind = PAT_VAR_SUBJECT;
		name = "";
		len = 0;
	} else if (len > 6 && memcmp(name, "claim.", 6) == 0) {
		kind = PAT_VAR_CLAIM;
		name += 6;
		len -= 6;
		if (len > PAT_CLAIM_MAX) {
			*err = "claim name in template longer than 64 bytes";
			return 0;
		}
		for (i = 0; i < len; i++)
			if (!pat_claim_char((unsigned char)name[i])) {
				*err = "claim name in template may hold only "
				    "letters, digits, '_', '-', '.' and ':'";
				return 0;
			}
	} else {
		*err = "unknown template variable: use ${subject} or "
		    "${claim.NAME}";
		return 0;
	}
	for (i = 0; i < p->nvars; i++)
		if (p->vars[i].kind == kind &&
		    strlen(p->vars[i].claim) == len &&
		    memcmp(p->vars[i].claim, name, len) == 0)
			break;
	if (i == p->nvars) {
		if (p->nvars == PAT_MAX_VARS) {
			*err = "at most 2 distinct templates in one pattern";
			return 0;
		}
		p->vars[i].kind = kind;
		memcpy(p->vars[i].claim, name, len);
		p->vars[i].claim[len] = '\0';
		p->nvars++;
	}
	*var = (int)i;
	return end - s + 1;
}

/* Compile a pattern; NULL and a constant message in *err when malformed. */
struct pattern *
pattern_compile(const char *src, size_t maxlen, int flags, const char **err)
{
	struct pattern	*p;
	struct pat_tok	*t;
	struct pat_seg	*sg;
	size_t		 n, i, seglen, used, lit = 0;
	const char	*s, *slash;
	int		 var;

	*err = NULL;
	n = strlen(src);
	if (n == 0) {
		*err = "pattern is empty";
		return NULL;
	}
	if (n > maxlen) {
		*err = "pattern longer than policy/max_pattern_bytes";
		return NULL;
	}
	if ((p = calloc(1, sizeof(*p))) == NULL ||
	    (p->src = strdup(src)) == NULL ||
	    (p->lit = malloc(n + 1)) == NULL ||
	    /* Never more segments or tokens than bytes. */
	    (p->segs = calloc(n + 1, sizeof(*p->segs))) == NULL ||
	    (p->toks = calloc(n + 1, sizeof(*p->toks))) == NULL)
		abort();

	for (s = src; ; s = slash + 1) {
		slash = memchr(s, '/', src + n - s);
		seglen = (slash != NULL ? slash : src + n) - s;
		if (seglen == 0) {
			*err = "empty segment (leading, trailing or double "
			    "'/')";
			goto fail;
		}
		sg = &p->segs[p->nsegs++];
		sg->tok = (uint32_t)p->ntoks;
		if (seglen == 2 && s[0] == '*' && s[1] == '*') {
			sg->dstar = 1;
			goto next;
		}
		for (i = 0; i < seglen; i += used) {
			used = 1;
			t = &p->toks[p->ntoks];
			if (s[i] == '*' && i + 1 < seglen && s[i + 1] == '*') {
				*err = "'**' must be a whole segment";
				goto fail;
			}
			if (s[i] == '*') {
				/* Two stars in a row are one star. */
				if (p->ntoks > sg->tok &&
				    t[-1].type == TOK_STAR)
					continue;
				t->type = TOK_STAR;
			} else if (s[i] == '?')
				t->type = TOK_ONE;
			else if (s[i] == '$' && i + 1 < seglen &&
			    s[i + 1] == '{') {
				if (!(flags & PAT_TEMPLATES)) {
					*err = "templates are not allowed here";
					goto fail;
				}
				used = pat_template(p, s + i, seglen - i,
				    &var, err);
				if (used == 0) {
					if (*err == pat_unterminated &&
					    memchr(s + i, '}', src + n - s -
					    i) != NULL)
						*err = "a template may not "
						    "hold '/'";
					goto fail;
				}
				t->type = TOK_VAR;
				t->var = (uint8_t)var;
			} else {
				/* Extend the previous literal. */
				if (p->ntoks > sg->tok &&
				    t[-1].type == TOK_LIT) {
					t[-1].len++;
					p->lit[lit++] = s[i];
					continue;
				}
				t->type = TOK_LIT;
				t->off = (uint32_t)lit;
				t->len = 1;
				p->lit[lit++] = s[i];
			}
			p->ntoks++;
		}
next:
		sg->ntok = (uint32_t)p->ntoks - sg->tok;
		if (pat_var_with_wildcard(p, sg)) {
			/*
			 * users/${subject}-* would give bob the names of
			 * bob-smith too: a template's segment is its own.
			 */
			*err = "a template may not share its segment with "
			    "'*' or '?'";
			goto fail;
		}
		if (slash == NULL)
			break;
	}
	return p;
fail:
	pattern_free(p);
	return NULL;
}

/* Free a compiled pattern; NULL is a no-op. */
void
pattern_free(struct pattern *p)
{
	if (p == NULL)
		return;
	free(p->src);
	free(p->lit);
	free(p->segs);
	free(p->toks);
	free(p);
}

/* The pattern as written. */
const char *
pattern_source(const struct pattern *p)
{
	return p->src;
}

/* Number of distinct templates. */
size_t
pattern_nvars(const struct pattern *p)
{
	return p->nvars;
}

/* Template i's kind and claim name. */
enum pat_var_kind
pattern_var(const struct pattern *p, size_t i, const char **claim)
{
	*claim = p->vars[i].claim;
	return p->vars[i].kind;
}

/* The first segment when wholly literal, for indexing. */
const char *
pattern_literal_head(const struct pattern *p, size_t *len)
{
	const struct pat_seg	*sg = &p->segs[0];
	const struct pat_tok	*t;

	if (sg->dstar || sg->ntok != 1)
		return NULL;
	t = &p->toks[sg->tok];
	if (t->type != TOK_LIT)
		return NULL;
	*len = t->len;
	return p->lit + t->off;
}

/* Whether every segment is "**". */
int
pattern_matches_all(const struct pattern *p)
{
	size_t	 i;

	for (i = 0; i < p->nsegs; i++)
		if (!p->segs[i].dstar)
			return 0;
	return 1;
}

/* Whether a value may stand in for a template: 1 or 0. */
int
pattern_value_ok(const char *s, size_t len)
{
	size_t	 i;

	if (s == NULL || len == 0 || len > PAT_SEG_MAX)
		return 0;
	if ((len == 1 && s[0] == '.') ||
	    (len == 2 && s[0] == '.' && s[1] == '.'))
		return 0;
	for (i = 0; i < len; i++)
		if (s[i] == '/' || s[i] == '*' || s[i] == '?' ||
		    s[i] == '[' || s[i] == '\0')
			return 0;
	return 1;
}

/* Does token t match at s (n bytes left)?  *adv set to bytes consumed. */
static int
pat_tok_at(const struct pattern *p, const struct pat_tok *t,
    const struct pat_value *vals, const char *s, size_t n, size_t *adv)
{
	size_t	 len;

	switch (t->type) {
	case TOK_ONE:
		*adv = 1;
		return n >= 1;
	case TOK_LIT:
		len = t->len;
		*adv = len;
		return n >= len && memcmp(s, p->lit + t->off, len) == 0;
	case TOK_VAR:
		len = vals[t->var].len;
		*adv = len;
		return n >= len && memcmp(s, vals[t->var].s, len) == 0;
	default:
		return 0;
	}
}

/* Does segment pattern sg match the name segment s[0..n)? */
static int
pat_seg_match(const struct pattern *p, const struct pat_seg *sg,
    const struct pat_value *vals, const char *s, size_t n)
{
	const struct pat_tok	*t = p->toks + sg->tok;
	size_t			 ti = 0, ci = 0, nt = sg->ntok, adv;
	size_t			 star_ti = SIZE_MAX, star_ci = 0;

	/* The common case: a wholly literal segment. */
	if (nt == 1 && t[0].type == TOK_LIT)
		return n == t[0].len && memcmp(s, p->lit + t[0].off, n) == 0;
	while (ci < n) {
		if (ti < nt && (t[ti].type == TOK_STAR ||
		    (t[ti].type == TOK_VAR && vals[t[ti].var].s == NULL))) {
			star_ti = ti++;
			star_ci = ci;
			continue;
		}
		if (ti < nt && pat_tok_at(p, &t[ti], vals, s + ci, n - ci,
		    &adv)) {
			ti++;
			ci += adv;
			continue;
		}
		if (star_ti == SIZE_MAX)
			return 0;
		/* The last star takes one more byte; retry after it. */
		ci = ++star_ci;
		ti = star_ti + 1;
	}
	while (ti < nt && (t[ti].type == TOK_STAR ||
	    (t[ti].type == TOK_VAR && vals[t[ti].var].s == NULL)))
		ti++;
	return ti == nt;
}

/*
 * Match with explicit template values.  A value with s == NULL stands for
 * "any run of characters" (like '*'): pattern_match_principal() uses it to
 * tell a template without a usable value from a pattern that could not
 * match whatever the value.
 */
int
pattern_match(const struct pattern *p, const char *name, size_t len,
    const struct pat_value *vals)
{
	const struct pat_seg	*sg = p->segs;
	size_t			 si = 0, ni = 0, ns = p->nsegs, end;
	size_t			 star_si = SIZE_MAX, star_ni = 0;
	const char		*sl;

	/*
	 * ni is the offset of the current name segment; len + 1 means the
	 * name is used up.  An empty name has no segments.
	 */
	if (len == 0)
		ni = 1;
	while (ni <= len) {
		if (si < ns && sg[si].dstar) {
			star_si = si++;
			star_ni = ni;
			continue;
		}
		sl = memchr(name + ni, '/', len - ni);
		end = sl != NULL ? (size_t)(sl - name) : len;
		if (si < ns && pat_seg_match(p, &sg[si], vals, name + ni,
		    end - ni)) {
			si++;
			ni = end + 1;
			continue;
		}
		if (star_si == SIZE_MAX)
			return 0;
		/* The last "**" takes one more whole segment. */
		sl = memchr(name + star_ni, '/', len - star_ni);
		star_ni = sl != NULL ? (size_t)(sl - name) + 1 : len + 1;
		ni = star_ni;
		si = star_si + 1;
	}
	while (si < ns && sg[si].dstar)
		si++;
	return si == ns;
}

/*
 * The next claim index at or after i that names claim and has a usable
 * value; nclaims when none.
 */
static size_t
pat_next_claim(const struct principal *pr, const char *claim, size_t i)
{
	const struct principal_claim	*c;

	for (; i < pr->nclaims; i++) {
		c = &pr->claims[i];
		if (c->name != NULL && c->value != NULL &&
		    strcmp(c->name, claim) == 0 &&
		    pattern_value_ok(c->value, strlen(c->value)))
			return i;
	}
	return pr->nclaims;
}

/*
 * Match with values from the principal: every combination of usable values
 * of the (at most PAT_MAX_VARS) templates, odometer-style.
 */
enum pat_result
pattern_match_principal(const struct pattern *p, const char *name,
    size_t len, const struct principal *pr)
{
	struct pat_value	 vals[PAT_MAX_VARS];
	size_t			 at[PAT_MAX_VARS], i;
	const char		*s;

	if (p->nvars == 0)
		return pattern_match(p, name, len, NULL) ? PAT_MATCH :
		    PAT_NOMATCH;
	for (i = 0; i < p->nvars; i++) {
		if (pr == NULL)
			goto unusable;
		if (p->vars[i].kind == PAT_VAR_SUBJECT) {
			s = pr->method == AUTH_ANONYMOUS ? NULL : pr->subject;
			if (s == NULL || !pattern_value_ok(s, strlen(s)))
				goto unusable;
			vals[i].s = s;
			vals[i].len = strlen(s);
			at[i] = 0;
			continue;
		}
		at[i] = pat_next_claim(pr, p->vars[i].claim, 0);
		if (at[i] == pr->nclaims)
			goto unusable;
	}
	for (;;) {
		for (i = 0; i < p->nvars; i++)
			if (p->vars[i].kind == PAT_VAR_CLAIM) {
				vals[i].s = pr->claims[at[i]].value;
				vals[i].len = strlen(vals[i].s);
			}
		if (pattern_match(p, name, len, vals))
			return PAT_MATCH;
		/* Advance the odometer; done when every digit wrapped. */
		for (i = 0; i < p->nvars; i++) {
			if (p->vars[i].kind != PAT_VAR_CLAIM)
				continue;
			at[i] = pat_next_claim(pr, p->vars[i].claim,
			    at[i] + 1);
			if (at[i] < pr->nclaims)
				break;
			at[i] = pat_next_claim(pr, p->vars[i].claim, 0);
		}
		if (i == p->nvars)
			return PAT_NOMATCH;
	}

unusable:
	/*
	 * No usable value: the pattern matches nothing.  Say "unusable" only
	 * when some value could have matched, so that an explanation names
	 * the template rather than a pattern that was never close.
	 */
	for (i = 0; i < p->nvars; i++) {
		vals[i].s = NULL;
		vals[i].len = 0;
	}
	return pattern_match(p, name, len, vals) ? PAT_UNUSABLE : PAT_NOMATCH;
}
