#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

/*
 * test_scope.c: the token service's scope grammar and access claim
 * (src/scope.c): several scopes in one parameter, duplicates across
 * parameters merged, repository(plugin), registry:catalog:*, unknown
 * types and actions ignored, malformed and over-long scopes refused, the
 * entry bound, and the access claim written and read back.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scope.h"

static struct scope_set *
parse(const char *s, enum scope_err want, size_t max)
{
	struct scope_set	*set = scope_set_new(max);
	enum scope_err		 e;

	assert_non_null(set);
	e = scope_parse(set, s, strlen(s));
	if (e != want)
		fail_msg("\"%s\": got %s, want %s", s, scope_err_name(e),
		    scope_err_name(want));
	return (set);
}

static char *
access_str(const struct scope_set *set)
{
	json_t	*j = scope_access_json(set);
	char	*s;

	assert_non_null(j);
	s = json_dumps(j, JSON_COMPACT);
	json_decref(j);
	return (s);
}

static void
test_cases(void **state)
{
	static const struct {
		const char	*in;
		enum scope_err	 want;
		const char	*access;	/* NULL: not checked */
	} c[] = {
		{ "", SCOPE_OK, "[]" },
		{ "   ", SCOPE_OK, "[]" },
		{ "repository:library/alpine:pull", SCOPE_OK,
		    "[{\"type\":\"repository\",\"name\":\"library/alpine\","
		    "\"actions\":[\"pull\"]}]" },
		/* Actions written in canonical order, repeats merged. */
		{ "repository:a:push,pull,pull", SCOPE_OK,
		    "[{\"type\":\"repository\",\"name\":\"a\",\"actions\":"
		    "[\"pull\",\"push\"]}]" },
		/* Several scopes in one parameter (containerd). */
		{ "repository:a:pull repository:b/c:push  repository:a:delete",
		    SCOPE_OK, "[{\"type\":\"repository\",\"name\":\"a\","
		    "\"actions\":[\"pull\",\"delete\"]},{\"type\":"
		    "\"repository\",\"name\":\"b/c\",\"actions\":"
		    "[\"push\"]}]" },
		{ "registry:catalog:*", SCOPE_OK, "[{\"type\":\"registry\","
		    "\"name\":\"catalog\",\"actions\":[\"*\"]}]" },
		{ "registry:catalog:pull", SCOPE_OK, "[{\"type\":\"registry\","
		    "\"name\":\"catalog\",\"actions\":[]}]" },
		{ "repository:a:*", SCOPE_OK, "[{\"type\":\"repository\","
		    "\"name\":\"a\",\"actions\":[\"*\"]}]" },
		{ "repository(plugin):p/x:pull", SCOPE_OK,
		    "[{\"type\":\"repository\",\"class\":\"plugin\","
		    "\"name\":\"p/x\",\"actions\":[\"pull\"]}]" },
		/* Unknown types, registry names and actions are ignored. */
		{ "foo:bar:baz registry:other:* repository:a:pull,frob",
		    SCOPE_OK, "[{\"type\":\"repository\",\"name\":\"a\","
		    "\"actions\":[\"pull\"]}]" },
		{ "repository:a:", SCOPE_OK, "[{\"type\":\"repository\","
		    "\"name\":\"a\",\"actions\":[]}]" },
		/* Malformed. */
		{ "repository", SCOPE_E_MALFORMED, NULL },
		{ "repository:a", SCOPE_E_MALFORMED, NULL },
		{ "Repository:a:pull", SCOPE_E_MALFORMED, NULL },
		{ ":a:pull", SCOPE_E_MALFORMED, NULL },
		{ "repository:a:PULL", SCOPE_E_MALFORMED, NULL },
		{ "repository:a:pull;rm", SCOPE_E_MALFORMED, NULL },
		{ "repository(:a:pull", SCOPE_E_MALFORMED, NULL },
		{ "repository():a:pull", SCOPE_E_MALFORMED, NULL },
		{ "repository(Plugin):a:pull", SCOPE_E_MALFORMED, NULL },
		{ "repository\t:a:pull", SCOPE_E_MALFORMED, NULL },
		/* Names: the repository grammar, no host:port, no "..". */
		{ "repository::pull", SCOPE_E_NAME, NULL },
		{ "repository:A:pull", SCOPE_E_NAME, NULL },
		{ "repository:a/../b:pull", SCOPE_E_NAME, NULL },
		{ "repository:localhost:5000/a:pull", SCOPE_E_NAME, NULL },
		{ "repository:a%2fb:pull", SCOPE_E_NAME, NULL },
	};
	struct scope_set	*set;
	size_t			 i;
	char			*s;

	(void)state;
	for (i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		set = parse(c[i].in, c[i].want, 8);
		if (c[i].access != NULL) {
			s = access_str(set);
			if (strcmp(s, c[i].access) != 0)
				fail_msg("\"%s\": %s", c[i].in, s);
			free(s);
		}
		scope_set_free(set);
	}
}

/* Duplicated parameters (skopeo) merge into one entry per repository. */
static void
test_duplicates(void **state)
{
	struct scope_set	*set = scope_set_new(4);
	const char		*p[] = { "repository:a:pull",
	    "repository:a:pull", "repository:a:push", "repository:b:pull",
	    "repository(plugin):a:pull" };
	size_t			 i;

	(void)state;
	for (i = 0; i < 5; i++)
		assert_int_equal(scope_parse(set, p[i], strlen(p[i])),
		    SCOPE_OK);
	assert_int_equal(set->n, 3);
	assert_int_equal(scope_actions(set, SCOPE_REPOSITORY, "a"),
	    SCOPE_PULL | SCOPE_PUSH);
	assert_int_equal(scope_actions(set, SCOPE_REPOSITORY, "b"),
	    SCOPE_PULL);
	assert_int_equal(scope_actions(set, SCOPE_REPOSITORY, "c"), 0);
	assert_int_equal(scope_actions(set, SCOPE_REGISTRY, "a"), 0);
	scope_set_free(set);
}

/* The bound: distinct entries only; the set keeps what fit. */
static void
test_bound(void **state)
{
	struct scope_set	*set;
	char			 buf[4096], name[300];
	size_t			 i, n = 0;

	(void)state;
	for (i = 0; i < 5; i++)
		n += (size_t)snprintf(buf + n, sizeof(buf) - n,
		    "repository:r%zu:pull ", i);
	set = parse(buf, SCOPE_E_TOO_MANY, 4);
	assert_int_equal(set->n, 4);
	scope_set_free(set);
	/* The same scope a thousand times is one entry. */
	for (i = n = 0; i < 100; i++)
		n += (size_t)snprintf(buf + n, sizeof(buf) - n,
		    "repository:r:pull ");
	set = parse(buf, SCOPE_OK, 1);
	assert_int_equal(set->n, 1);
	scope_set_free(set);
	/* Over-long names: 255 bytes is the limit. */
	memset(name, 'a', sizeof(name));
	snprintf(buf, sizeof(buf), "repository:%.255s:pull", name);
	set = parse(buf, SCOPE_OK, 1);
	scope_set_free(set);
	snprintf(buf, sizeof(buf), "repository:%.256s:pull", name);
	set = parse(buf, SCOPE_E_NAME, 1);
	scope_set_free(set);
	snprintf(buf, sizeof(buf), "repository(%.33s):a:pull", name);
	set = parse(buf, SCOPE_E_MALFORMED, 1);
	scope_set_free(set);
	set = parse("repository:a:pull\0junk", SCOPE_OK, 1);
	scope_set_free(set);
	/* A NUL inside the value is not a separator. */
	set = scope_set_new(2);
	assert_int_equal(scope_parse(set, "repository:a\0b:pull", 19),
	    SCOPE_E_NAME);
	scope_set_free(set);
}

/* The access claim reads back into the same set. */
static void
test_access_roundtrip(void **state)
{
	struct scope_set	*a, *b;
	json_t			*j;
	char			*s1, *s2;

	(void)state;
	a = parse("repository:x/y:pull,push,delete repository(plugin):p:pull "
	    "registry:catalog:*", SCOPE_OK, 8);
	j = scope_access_json(a);
	b = scope_set_new(8);
	assert_int_equal(scope_from_access(b, j), SCOPE_OK);
	s1 = access_str(a);
	s2 = access_str(b);
	assert_string_equal(s1, s2);
	free(s1);
	free(s2);
	json_decref(j);
	scope_set_free(b);
	scope_set_free(a);

	/* Malformed claims; unknown entries skipped. */
	b = scope_set_new(1);
	j = json_loads("{}", 0, NULL);
	assert_int_equal(scope_from_access(b, j), SCOPE_E_MALFORMED);
	json_decref(j);
	j = json_loads("[{\"type\":\"repository\",\"name\":\"a\"}]", 0, NULL);
	assert_int_equal(scope_from_access(b, j), SCOPE_E_MALFORMED);
	json_decref(j);
	j = json_loads("[{\"type\":\"repository\",\"name\":\"a\",\"actions\":"
	    "[1]}]", 0, NULL);
	assert_int_equal(scope_from_access(b, j), SCOPE_E_MALFORMED);
	json_decref(j);
	j = json_loads("[{\"type\":\"repository\",\"name\":\"../a\","
	    "\"actions\":[\"pull\"]},{\"type\":\"x\",\"name\":\"a\","
	    "\"actions\":[]},{\"type\":\"repository\",\"name\":\"a\","
	    "\"actions\":[\"pull\",\"zap\"]},{\"type\":\"repository\","
	    "\"name\":\"b\",\"actions\":[\"pull\"]}]", 0, NULL);
	assert_int_equal(scope_from_access(b, j), SCOPE_E_TOO_MANY);
	assert_int_equal(b->n, 1);
	assert_int_equal(scope_actions(b, SCOPE_REPOSITORY, "a"), SCOPE_PULL);
	json_decref(j);
	scope_set_free(b);
	assert_string_equal(scope_err_name(SCOPE_E_TOO_MANY), "too_many");
	assert_string_equal(scope_err_name(SCOPE_E__MAX), "unknown");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cases),
		cmocka_unit_test(test_duplicates),
		cmocka_unit_test(test_bound),
		cmocka_unit_test(test_access_roundtrip),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
