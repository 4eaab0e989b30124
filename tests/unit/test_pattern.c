#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

/*
 * test_pattern.c: the policy's repository patterns (src/pattern.c):
 * segment edges, '**' at the start, middle and end, '?', '*', templates
 * filled from a principal with hostile values (empty, '/', '..', '*',
 * over-long), multi-valued claims, compile errors, and a pathological
 * input that would be exponential for a naive backtracker.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pattern.h"

struct match_case {
	const char	*pat;
	const char	*name;
	const char	*subject;	/* NULL: anonymous */
	const char	*claims;	/* "k=v;k=v", NULL: none */
	enum pat_result	 want;
};

#define Y	PAT_MATCH
#define N	PAT_NOMATCH
#define U	PAT_UNUSABLE

static char long255[256], long256[257], longpat[600];

static const struct match_case cases[] = {
	/* Literal patterns: whole names only. */
	{ "library/alpine", "library/alpine", NULL, NULL, Y },
	{ "library/alpine", "library/alpinex", NULL, NULL, N },
	{ "library/alpine", "library/alpin", NULL, NULL, N },
	{ "library/alpine", "library", NULL, NULL, N },
	{ "library/alpine", "library/alpine/x", NULL, NULL, N },
	{ "library/alpine", "xlibrary/alpine", NULL, NULL, N },
	{ "a", "a", NULL, NULL, Y },
	{ "a", "b", NULL, NULL, N },
	{ "a/b", "a/b/", NULL, NULL, N },
	/* '*' stays within one segment. */
	{ "library/*", "library/alpine", NULL, NULL, Y },
	{ "library/*", "library/a/b", NULL, NULL, N },
	{ "library/*", "library", NULL, NULL, N },
	{ "*", "alpine", NULL, NULL, Y },
	{ "*", "a/b", NULL, NULL, N },
	{ "*/*", "a/b", NULL, NULL, Y },
	{ "*/*", "a/b/c", NULL, NULL, N },
	{ "app-*", "app-", NULL, NULL, Y },
	{ "app-*", "app-web", NULL, NULL, Y },
	{ "app-*", "app", NULL, NULL, N },
	{ "app-*", "app-web/x", NULL, NULL, N },
	{ "*-svc", "a-svc", NULL, NULL, Y },
	{ "*-svc", "-svc", NULL, NULL, Y },
	{ "*-svc", "a-svcx", NULL, NULL, N },
	{ "*-svc", "a/b-svc", NULL, NULL, N },
	{ "*a*b*", "xaybz", NULL, NULL, Y },
	{ "*a*b*", "ab", NULL, NULL, Y },
	{ "*a*b*", "ba", NULL, NULL, N },
	{ "a*", "a", NULL, NULL, Y },
	{ "a**", "a", NULL, NULL, N },		/* compile error, below */
	{ "x/*z", "x/abcz", NULL, NULL, Y },
	{ "x/*z", "x/abczq", NULL, NULL, N },
	{ "x/a*a", "x/aa", NULL, NULL, Y },
	{ "x/a*a", "x/a", NULL, NULL, N },
	/* '?' is one character, never '/'. */
	{ "a?c", "abc", NULL, NULL, Y },
	{ "a?c", "ac", NULL, NULL, N },
	{ "a?c", "abbc", NULL, NULL, N },
	{ "a?c", "a/c", NULL, NULL, N },
	{ "t?st/*x", "test/ax", NULL, NULL, Y },
	{ "t?st/*x", "tst/ax", NULL, NULL, N },
	{ "???", "abc", NULL, NULL, Y },
	{ "???", "ab", NULL, NULL, N },
	{ "?*", "", NULL, NULL, N },
	/* '**' at the end: the base itself and anything below it. */
	{ "base/**", "base", NULL, NULL, Y },
	{ "base/**", "base/a", NULL, NULL, Y },
	{ "base/**", "base/a/b/c", NULL, NULL, Y },
	{ "base/**", "basement/a", NULL, NULL, N },
	{ "base/**", "bas", NULL, NULL, N },
	{ "base/**", "other/base", NULL, NULL, N },
	{ "base/**", "base2", NULL, NULL, N },
	{ "**", "a", NULL, NULL, Y },
	{ "**", "a/b/c", NULL, NULL, Y },
	/* '**' at the start. */
	{ "**/foo", "foo", NULL, NULL, Y },
	{ "**/foo", "a/foo", NULL, NULL, Y },
	{ "**/foo", "a/b/foo", NULL, NULL, Y },
	{ "**/foo", "a/foox", NULL, NULL, N },
	{ "**/foo", "a/xfoo", NULL, NULL, N },
	{ "**/foo", "foo/a", NULL, NULL, N },
	/* '**' in the middle, and twice. */
	{ "a/**/z", "a/z", NULL, NULL, Y },
	{ "a/**/z", "a/b/z", NULL, NULL, Y },
	{ "a/**/z", "a/b/c/z", NULL, NULL, Y },
	{ "a/**/z", "a/z/z", NULL, NULL, Y },
	{ "a/**/z", "a/b/c", NULL, NULL, N },
	{ "a/**/z", "z", NULL, NULL, N },
	{ "a/**/z", "b/a/z", NULL, NULL, N },
	{ "a/**/b/**/c", "a/b/c", NULL, NULL, Y },
	{ "a/**/b/**/c", "a/x/b/y/c", NULL, NULL, Y },
	{ "a/**/b/**/c", "a/b/b/c/c", NULL, NULL, Y },
	{ "a/**/b/**/c", "a/c", NULL, NULL, N },
	{ "a/**/b/**/c", "a/x/c", NULL, NULL, N },
	{ "**/**", "a", NULL, NULL, Y },
	{ "**/secret/**", "secret", NULL, NULL, Y },
	{ "**/secret/**", "team/secret/app", NULL, NULL, Y },
	{ "**/secret/**", "team/secrets/app", NULL, NULL, N },
	{ "**/a*/**", "x/ab/y", NULL, NULL, Y },
	{ "**/a*/**", "x/b/y", NULL, NULL, N },
	/* Pathological for a naive backtracker; linear walk here. */
	{ "*a*a*a*a*a*a*a*a*b",
	  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", NULL,
	  NULL, N },
	{ "**/**/**/**/**/**/**/**/x",
	  "a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/y", NULL,
	  NULL, N },
	/* ${subject}: the principal's subject as one literal segment. */
	{ "users/${subject}/**", "users/bob", "bob", NULL, Y },
	{ "users/${subject}/**", "users/bob/app", "bob", NULL, Y },
	{ "users/${subject}/**", "users/bobby/app", "bob", NULL, N },
	{ "users/${subject}/**", "users/alice/app", "bob", NULL, N },
	{ "users/${subject}/**", "users/bob/app", NULL, NULL, U },
	/* No value, and no value could match: plain no match. */
	{ "users/${subject}/**", "other/bob", NULL, NULL, N },
	{ "users/${subject}/**", "users", "..", NULL, N },
	{ "ci/${claim.repository}/**", "base/x", "ci", NULL, N },
	{ "x-${claim.a}-y", "x--y", "u", NULL, U },
	{ "x-${claim.a}-y", "x-z", "u", NULL, N },
	{ "users/${subject}", "users/b.o-b_1", "b.o-b_1", NULL, Y },
	{ "pre-${subject}-post", "pre-a-post", "a", NULL, Y },
	{ "pre-${subject}-post", "pre-ab-post", "a", NULL, N },
	{ "${subject}/${subject}", "a/a", "a", NULL, Y },
	{ "${subject}/${subject}", "a/b", "a", NULL, N },
	/* Hostile subjects: the rule does not match, ever. */
	{ "users/${subject}/**", "users/../x", "..", NULL, U },
	{ "users/${subject}/**", "users/./x", ".", NULL, U },
	{ "users/${subject}/**", "users/a/b/x", "a/b", NULL, U },
	{ "users/${subject}/**", "users/../etc", "../etc", NULL, U },
	{ "users/${subject}/**", "users/x", "*", NULL, U },
	{ "users/${subject}/**", "users/x", "?", NULL, U },
	{ "users/${subject}/**", "users/[x", "[x", NULL, U },
	{ "users/${subject}/**", "users/ab", "a*", NULL, U },
	{ "users/${subject}/**", "users/", "", NULL, U },
	{ "users/${subject}/**", "users/x", long256, NULL, U },
	{ "users/${subject}", NULL, long255, NULL, Y },	/* name built */
	/* ${claim.NAME}: any value of a multi-valued claim. */
	{ "ci/${claim.repository}/**", "ci/app/x", "ci",
	  "repository=app", Y },
	{ "ci/${claim.repository}/**", "ci/web/x", "ci",
	  "repository=app;repository=web", Y },
	{ "ci/${claim.repository}/**", "ci/db/x", "ci",
	  "repository=app;repository=web", N },
	{ "ci/${claim.repository}/**", "ci/app/x", "ci", "other=app", U },
	{ "ci/${claim.repository}/**", "ci/app/x", "ci", NULL, U },
	{ "ci/${claim.repository}/**", "ci/app/x", "ci",
	  "repository=*;repository=app", Y },
	{ "ci/${claim.repository}/**", "ci/x", "ci",
	  "repository=*;repository=app", N },
	{ "ci/${claim.repository}/**", "ci/x", "ci", "repository=../x", U },
	{ "ci/${claim.repository}/**", "ci/a/b", "ci", "repository=a/b", U },
	{ "ci/${claim.repository}/**", "ci/x", "ci", "repository=", U },
	{ "ci/${claim.repository}", "ci/x", NULL, "repository=x", Y },
	{ "${claim.team}/${claim.env}", "b/y", "u", "team=a;team=b;env=x;env=y",
	  Y },
	{ "${claim.team}/${claim.env}", "a/y", "u", "team=a;team=b;env=x;env=y",
	  Y },
	{ "${claim.team}/${claim.env}", "c/y", "u", "team=a;team=b;env=x;env=y",
	  N },
	{ "${claim.team}/${claim.env}", "a/x", "u", "team=a;team=b", U },
	{ "${subject}/${claim.env}", "u/x", "u", "env=x", Y },
	{ "${subject}/${claim.env}", "u/x", "..", "env=x", U },
};

struct compile_case {
	const char	*pat;
	int		 flags;
	const char	*err;	/* NULL: compiles */
};

static const struct compile_case compile_cases[] = {
	{ "a**", 0, "'**' must be a whole segment" },
	{ "**a", 0, "'**' must be a whole segment" },
	{ "a/**b/c", 0, "'**' must be a whole segment" },
	{ "a/***", 0, "'**' must be a whole segment" },
	{ "", 0, "pattern is empty" },
	{ "a//b", 0, "empty segment" },
	{ "/a", 0, "empty segment" },
	{ "a/", 0, "empty segment" },
	{ "users/${subject", PAT_TEMPLATES, "unterminated" },
	{ "users/${subject/x}", PAT_TEMPLATES, "may not hold '/'" },
	{ "users/${foo}", PAT_TEMPLATES, "unknown template variable" },
	{ "x/${subject}*", PAT_TEMPLATES, "may not share its segment" },
	{ "users/${subject}-*/**", PAT_TEMPLATES,
	    "may not share its segment" },
	{ "a/?${claim.r}", PAT_TEMPLATES, "may not share its segment" },
	{ "a/*/${subject}", PAT_TEMPLATES, NULL },
	{ "users/${claim.}", PAT_TEMPLATES, "unknown template variable" },
	{ "users/${claim.a b}", PAT_TEMPLATES, "claim name" },
	{ "${claim.a}/${claim.b}/${subject}", PAT_TEMPLATES, "at most 2" },
	{ "users/${subject}", 0, "templates are not allowed" },
	{ "${claim.a}/${claim.b}/${claim.a}", PAT_TEMPLATES, NULL },
	{ "**/**", 0, NULL },
	{ "a/**/b", 0, NULL },
	{ "a$b/${subject}", PAT_TEMPLATES, NULL },
	{ "x/a**", 0, "'**' must be a whole segment" },
};

/* Build a principal from "k=v;k=v" claims; storage in the caller's. */
static void
principal_from(struct principal *p, const char *subject, const char *claims,
    struct principal_claim *cl, char *buf, size_t buflen)
{
	char	*s, *eq, *save = NULL;

	memset(p, 0, sizeof(*p));
	p->method = subject != NULL ? AUTH_TOKEN : AUTH_ANONYMOUS;
	p->subject = subject != NULL ? subject : "";
	p->claims = cl;
	if (claims == NULL)
		return;
	snprintf(buf, buflen, "%s", claims);
	for (s = strtok_r(buf, ";", &save); s != NULL;
	    s = strtok_r(NULL, ";", &save)) {
		eq = strchr(s, '=');
		assert_non_null(eq);
		*eq = '\0';
		cl[p->nclaims].name = s;
		cl[p->nclaims].value = eq + 1;
		p->nclaims++;
	}
}

static void
test_match(void **state)
{
	struct principal	 p;
	struct principal_claim	 cl[16];
	struct pattern		*pat;
	const char		*err, *name;
	char			 buf[256], built[300];
	enum pat_result		 got;
	size_t			 i, n = 0;

	(void)state;
	memset(long255, 'a', 255);
	memset(long256, 'a', 256);
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		pat = pattern_compile(cases[i].pat, 512, PAT_TEMPLATES, &err);
		if (pat == NULL) {
			/* Only the deliberate compile failure above. */
			assert_string_equal(cases[i].pat, "a**");
			continue;
		}
		principal_from(&p, cases[i].subject, cases[i].claims, cl, buf,
		    sizeof(buf));
		name = cases[i].name;
		if (name == NULL) {
			snprintf(built, sizeof(built), "users/%s",
			    cases[i].subject);
			name = built;
		}
		got = pattern_match_principal(pat, name, strlen(name), &p);
		if (got != cases[i].want)
			fail_msg("case %zu: '%s' vs '%s' (subject %s, claims "
			    "%s): got %d, want %d", i, cases[i].pat, name,
			    cases[i].subject ? cases[i].subject : "-",
			    cases[i].claims ? cases[i].claims : "-", got,
			    cases[i].want);
		pattern_free(pat);
		n++;
	}
	assert_true(n >= 100);
}

static void
test_compile(void **state)
{
	struct pattern	*pat;
	const char	*err;
	size_t		 i;

	(void)state;
	for (i = 0; i < sizeof(compile_cases) / sizeof(compile_cases[0]);
	    i++) {
		pat = pattern_compile(compile_cases[i].pat, 512,
		    compile_cases[i].flags, &err);
		if (compile_cases[i].err == NULL) {
			if (pat == NULL)
				fail_msg("'%s': %s", compile_cases[i].pat,
				    err);
			pattern_free(pat);
			continue;
		}
		if (pat != NULL)
			fail_msg("'%s' compiled", compile_cases[i].pat);
		if (strstr(err, compile_cases[i].err) == NULL)
			fail_msg("'%s': got '%s', want '%s'",
			    compile_cases[i].pat, err, compile_cases[i].err);
	}
	/* Over-long, and exactly at the bound. */
	memset(longpat, 'a', sizeof(longpat) - 1);
	assert_null(pattern_compile(longpat, 512, 0, &err));
	assert_non_null(strstr(err, "max_pattern_bytes"));
	longpat[512] = '\0';
	assert_non_null(pat = pattern_compile(longpat, 512, 0, &err));
	pattern_free(pat);
	/* A claim name of 65 bytes. */
	snprintf(longpat, sizeof(longpat), "${claim.%065d}", 0);
	assert_null(pattern_compile(longpat, 512, PAT_TEMPLATES, &err));
}

static void
test_literal_head(void **state)
{
	struct pattern	*pat;
	const char	*err, *h;
	size_t		 len;

	(void)state;
	pat = pattern_compile("team-a/**", 512, 0, &err);
	h = pattern_literal_head(pat, &len);
	assert_non_null(h);
	assert_int_equal(len, 6);
	assert_memory_equal(h, "team-a", 6);
	pattern_free(pat);
	pat = pattern_compile("team-*/x", 512, 0, &err);
	assert_null(pattern_literal_head(pat, &len));
	pattern_free(pat);
	pat = pattern_compile("**/x", 512, 0, &err);
	assert_null(pattern_literal_head(pat, &len));
	pattern_free(pat);
	pat = pattern_compile("${subject}/x", 512, PAT_TEMPLATES, &err);
	assert_null(pattern_literal_head(pat, &len));
	assert_int_equal(pattern_nvars(pat), 1);
	pattern_free(pat);
}

static void
test_value_ok(void **state)
{
	(void)state;
	assert_true(pattern_value_ok("bob", 3));
	assert_true(pattern_value_ok("...", 3));
	assert_true(pattern_value_ok("a.b", 3));
	assert_false(pattern_value_ok("", 0));
	assert_false(pattern_value_ok(".", 1));
	assert_false(pattern_value_ok("..", 2));
	assert_false(pattern_value_ok("a/b", 3));
	assert_false(pattern_value_ok("a*", 2));
	assert_false(pattern_value_ok("a?", 2));
	assert_false(pattern_value_ok("[a", 2));
	assert_false(pattern_value_ok("a\0b", 3));
	assert_false(pattern_value_ok(NULL, 0));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_match),
		cmocka_unit_test(test_compile),
		cmocka_unit_test(test_literal_head),
		cmocka_unit_test(test_value_ok),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
