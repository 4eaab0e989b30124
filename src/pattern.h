/*
 * pattern.h: repository patterns of the access policy.  A pattern is a
 * '/'-separated list of segments matched against a repository name's
 * segments:
 *   *	any run of characters within one segment (never '/')
 *   ?	exactly one character other than '/'
 *   **	only as a whole segment: zero or more whole segments, so "base"
 *	then "**" as the next segment matches "base", "base/a" and
 *	"base/a/b"
 * Anything else is literal.  With PAT_TEMPLATES, "${subject}" and
 * "${claim.NAME}" stand for a value of the principal, substituted at match
 * time as a literal; a value that is empty, "." or "..", longer than a
 * segment (255) or holds '/', '*', '?' or '[' is unusable, and a pattern
 * whose template has no usable value matches nothing.
 *
 * Matching allocates nothing and is bounded: segments are matched with one
 * backtrack point for the last "**", characters within a segment with one
 * backtrack point for the last "*", and every other token matches a fixed
 * number of bytes, so the worst case is O(|pattern| x |name|) byte
 * comparisons; no input makes it exponential.
 *
 * Leaf: no libevent; only principal.h.
 */
#ifndef PC_PATTERN_H
#define PC_PATTERN_H

#include <stddef.h>

#include "principal.h"

#define PAT_SEG_MAX	255	/* longest segment a template value fills */
#define PAT_MAX_VARS	2	/* distinct templates in one pattern */
#define PAT_CLAIM_MAX	64	/* longest claim name in ${claim.NAME} */

#define PAT_TEMPLATES	0x1	/* allow ${subject} and ${claim.NAME} */

enum pat_var_kind {
	PAT_VAR_SUBJECT,
	PAT_VAR_CLAIM
};

/* A template's value for pattern_match(). */
struct pat_value {
	const char	*s;
	size_t		 len;
};

enum pat_result {
	PAT_NOMATCH,
	PAT_MATCH,
	PAT_UNUSABLE	/* a template had no usable value */
};

struct pattern;

/*
 * Compile src (at most maxlen bytes).  NULL and *err set to a constant
 * message that does not echo the pattern when it is malformed.
 */
struct pattern	*pattern_compile(const char *src, size_t maxlen, int flags,
		    const char **err);
void		 pattern_free(struct pattern *);
/* The pattern as written. */
const char	*pattern_source(const struct pattern *);
/* Distinct templates in the pattern, in order of first use. */
size_t		 pattern_nvars(const struct pattern *);
/* Template i's kind; *claim set to the claim name for PAT_VAR_CLAIM. */
enum pat_var_kind pattern_var(const struct pattern *, size_t i,
		    const char **claim);
/*
 * The first segment when it is wholly literal (neither wildcard nor
 * template, not "**"), so that a caller can index patterns by it; NULL
 * otherwise.
 */
const char	*pattern_literal_head(const struct pattern *, size_t *len);
/* Whether the pattern matches every name (only "**" segments): 1 or 0. */
int		 pattern_matches_all(const struct pattern *);
/* Whether a template value may fill a segment: 1 or 0. */
int		 pattern_value_ok(const char *, size_t);
/*
 * Match name[0..len) with vals[i] the value of template i (every value
 * must have passed pattern_value_ok(), or have s NULL for "any run of
 * characters"); 1 or 0.
 */
int		 pattern_match(const struct pattern *, const char *name,
		    size_t len, const struct pat_value *vals);
/*
 * Match with the templates filled from the principal (p may be NULL when
 * the pattern has none).  A multi-valued claim matches when any of its
 * values does; unusable values are skipped, and PAT_UNUSABLE says that
 * some template had no usable value at all while some value would have
 * matched (PAT_NOMATCH when none would have).
 */
enum pat_result	 pattern_match_principal(const struct pattern *,
		    const char *name, size_t len, const struct principal *);

#endif /* PC_PATTERN_H */
