/*
 * fuzz_scope.c: libFuzzer target for scope_parse and the access claim
 * (src/scope.c).  Beyond not crashing: the set never exceeds its bound,
 * every repository entry's name passes the repository grammar, a registry
 * entry is "catalog" with at most "*", and the access claim written from
 * the set reads back into an identical set.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "scope.h"

#define CAP	8

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static void
check(int cond)
{
	if (!cond)
		abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct scope_set	*a, *b;
	json_t			*j, *j2;
	size_t			 i;

	a = scope_set_new(CAP);
	b = scope_set_new(CAP);
	check(a != NULL && b != NULL);
	(void)scope_parse(a, (const char *)data, size);
	check(a->n <= CAP);
	for (i = 0; i < a->n; i++) {
		if (a->v[i].type == SCOPE_REPOSITORY)
			check(router_valid_name(a->v[i].name,
			    strlen(a->v[i].name)));
		else
			check(strcmp(a->v[i].name, "catalog") == 0 &&
			    (a->v[i].actions & ~SCOPE_ANY) == 0);
		check(strlen(a->v[i].class) <= SCOPE_CLASS_MAX);
	}
	j = scope_access_json(a);
	check(j != NULL);
	check(scope_from_access(b, j) == SCOPE_OK);
	j2 = scope_access_json(b);
	check(j2 != NULL && json_equal(j, j2));
	json_decref(j);
	json_decref(j2);
	scope_set_free(a);
	scope_set_free(b);
	return 0;
}
