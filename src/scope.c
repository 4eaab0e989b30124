/*
 * scope.c: parse token-service scopes and build or read the access claim.
 *
 * Grammar (distribution docs/spec/auth/scope.md):
 *   scope          := resourcescope [ ' ' resourcescope ]*
 *   resourcescope  := resourcetype ":" resourcename ":" action [ ',' action ]*
 *   resourcetype   := resourcetypevalue [ '(' resourcetypevalue ')' ]
 *   resourcetypevalue := /[a-z0-9]+/
 *   action         := /[a-z]*\/ | "*"
 * A resource name may itself hold ':' (a hostname with a port), so, as
 * distribution does, the type ends at the first ':' and the actions
 * start after the last one.  Such a name then fails the repository-name
 * grammar here: the gateway authorises plain repository paths only.
 *
 * Guarantees, for any input bytes: the set never holds more than its cap
 * entries; every repository entry's name passes router_valid_name and
 * every registry entry is "catalog"; nothing is allocated beyond the set
 * itself (entries are fixed-size).  Runs in O(len * entries).
 */
#include <stdlib.h>
#include <string.h>

#include "scope.h"

#define SCOPE_TYPE_NAME(e, s) s,
static const char *const scope_type_names[] = {
	SCOPE_TYPES(SCOPE_TYPE_NAME)
};
#undef SCOPE_TYPE_NAME

#define SCOPE_ACTION_NAME(e, s) s,
static const char *const scope_action_names[] = {
	SCOPE_ACTIONS(SCOPE_ACTION_NAME)
};
#undef SCOPE_ACTION_NAME

#define SCOPE_ERR_NAME(e, s) s,
static const char *const scope_err_names[] = {
	SCOPE_ERRS(SCOPE_ERR_NAME)
};
#undef SCOPE_ERR_NAME

/* The result's name from the SCOPE_ERRS list. */
const char *
scope_err_name(enum scope_err e)
{
	if ((unsigned)e >= SCOPE_E__MAX)
		return ("unknown");
	return (scope_err_names[e]);
}

/* A set of at most max entries. */
struct scope_set *
scope_set_new(size_t max)
{
	struct scope_set	*set;

	if ((set = calloc(1, sizeof(*set))) == NULL)
		return (NULL);
	if ((set->v = calloc(max ? max : 1, sizeof(*set->v))) == NULL) {
		free(set);
		return (NULL);
	}
	set->cap = max;
	return (set);
}

/* Free a set. */
void
scope_set_free(struct scope_set *set)
{
	if (set == NULL)
		return;
	free(set->v);
	free(set);
}

static int
scope_eq(const char *s, size_t len, const char *lit)
{
	return (strlen(lit) == len && memcmp(s, lit, len) == 0);
}

/* resourcetypevalue: [a-z0-9]+ */
static int
scope_typevalue(const char *s, size_t len)
{
	size_t	i;

	if (len == 0)
		return (0);
	for (i = 0; i < len; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') ||
		    (s[i] >= '0' && s[i] <= '9')))
			return (0);
	return (1);
}

/* The bit of one action; 0 for an unknown one, -1 for a malformed one. */
static int
scope_action(const char *s, size_t len)
{
	size_t	i;

	for (i = 0; i < SCOPE_ACTION__MAX; i++)
		if (scope_eq(s, len, scope_action_names[i]))
			return ((int)(1u << i));
	for (i = 0; i < len; i++)
		if (s[i] < 'a' || s[i] > 'z')
			return (-1);
	return (0);
}

/* Add or merge one entry. */
static enum scope_err
scope_add(struct scope_set *set, enum scope_type type, const char *class,
    size_t classlen, const char *name, size_t namelen, unsigned actions)
{
	struct scope	*sc;
	size_t		 i;

	for (i = 0; i < set->n; i++) {
		sc = &set->v[i];
		if (sc->type == type && scope_eq(class, classlen, sc->class) &&
		    scope_eq(name, namelen, sc->name)) {
			sc->actions |= actions;
			return (SCOPE_OK);
		}
	}
	if (set->n >= set->cap)
		return (SCOPE_E_TOO_MANY);
	sc = &set->v[set->n++];
	memset(sc, 0, sizeof(*sc));
	sc->type = type;
	memcpy(sc->class, class, classlen);
	memcpy(sc->name, name, namelen);
	sc->actions = actions;
	return (SCOPE_OK);
}

/* One resource scope of len bytes (no spaces). */
static enum scope_err
scope_one(struct scope_set *set, const char *s, size_t len)
{
	const char	*c1, *c2, *p, *end = s + len, *class = "", *name;
	const char	*comma;
	size_t		 tlen, classlen = 0, namelen, alen;
	unsigned	 actions = 0;
	int		 type, bit;

	if ((c1 = memchr(s, ':', len)) == NULL)
		return (SCOPE_E_MALFORMED);
	for (c2 = end - 1; c2 > c1 && *c2 != ':'; c2--)
		continue;
	if (c2 == c1)
		return (SCOPE_E_MALFORMED);
	/* The type, with an optional (class). */
	tlen = (size_t)(c1 - s);
	if (tlen > 0 && s[tlen - 1] == ')') {
		if ((p = memchr(s, '(', tlen)) == NULL)
			return (SCOPE_E_MALFORMED);
		class = p + 1;
		classlen = (size_t)(s + tlen - 1 - class);
		tlen = (size_t)(p - s);
		if (classlen > SCOPE_CLASS_MAX ||
		    !scope_typevalue(class, classlen))
			return (SCOPE_E_MALFORMED);
	}
	if (!scope_typevalue(s, tlen))
		return (SCOPE_E_MALFORMED);
	/* Actions: a comma-separated list, unknown ones left out. */
	for (p = c2 + 1; p <= end; p += alen + 1) {
		if ((comma = memchr(p, ',', (size_t)(end - p))) == NULL)
			comma = end;
		alen = (size_t)(comma - p);
		if ((bit = scope_action(p, alen)) == -1)
			return (SCOPE_E_MALFORMED);
		actions |= (unsigned)bit;
	}
	name = c1 + 1;
	namelen = (size_t)(c2 - name);
	if (scope_eq(s, tlen, "repository"))
		type = SCOPE_REPOSITORY;
	else if (scope_eq(s, tlen, "registry"))
		type = SCOPE_REGISTRY;
	else
		return (SCOPE_OK);
	if (type == SCOPE_REGISTRY) {
		if (!scope_eq(name, namelen, "catalog"))
			return (SCOPE_OK);
		/* registry:catalog takes "*" only (distribution). */
		actions &= SCOPE_ANY;
	} else if (!router_valid_name(name, namelen))
		return (SCOPE_E_NAME);
	return (scope_add(set, type, class, classlen, name, namelen,
	    actions));
}

/* Parse one scope parameter into the set; see scope.h. */
enum scope_err
scope_parse(struct scope_set *set, const char *s, size_t len)
{
	enum scope_err	 e;
	size_t		 i = 0, j;

	while (i < len) {
		if (s[i] == ' ') {
			i++;
			continue;
		}
		for (j = i; j < len && s[j] != ' '; j++)
			continue;
		if ((e = scope_one(set, s + i, j - i)) != SCOPE_OK)
			return (e);
		i = j;
	}
	return (SCOPE_OK);
}

/* The access claim of a set; see scope.h. */
json_t *
scope_access_json(const struct scope_set *set)
{
	json_t		*arr, *o, *acts;
	size_t		 i, b;

	if ((arr = json_array()) == NULL)
		return (NULL);
	for (i = 0; i < set->n; i++) {
		if ((o = json_object()) == NULL ||
		    json_array_append_new(arr, o) == -1 ||
		    json_object_set_new(o, "type",
		    json_string(scope_type_names[set->v[i].type])) == -1 ||
		    (set->v[i].class[0] != '\0' && json_object_set_new(o,
		    "class", json_string(set->v[i].class)) == -1) ||
		    json_object_set_new(o, "name",
		    json_string(set->v[i].name)) == -1 ||
		    (acts = json_array()) == NULL ||
		    json_object_set_new(o, "actions", acts) == -1)
			goto fail;
		for (b = 0; b < SCOPE_ACTION__MAX; b++)
			if ((set->v[i].actions & (1u << b)) &&
			    json_array_append_new(acts,
			    json_string(scope_action_names[b])) == -1)
				goto fail;
	}
	return (arr);
fail:
	json_decref(arr);
	return (NULL);
}

/* Read an access claim; see scope.h. */
enum scope_err
scope_from_access(struct scope_set *set, const json_t *access)
{
	const json_t	*e, *acts, *a;
	const char	*type, *class, *name;
	enum scope_err	 err;
	unsigned	 actions;
	size_t		 i, j, classlen;
	int		 t, bit;

	if (!json_is_array(access))
		return (SCOPE_E_MALFORMED);
	for (i = 0; i < json_array_size(access); i++) {
		e = json_array_get(access, i);
		type = json_string_value(json_object_get(e, "type"));
		name = json_string_value(json_object_get(e, "name"));
		class = json_string_value(json_object_get(e, "class"));
		acts = json_object_get(e, "actions");
		if (!json_is_object(e) || type == NULL || name == NULL ||
		    !json_is_array(acts))
			return (SCOPE_E_MALFORMED);
		classlen = class ? strlen(class) : 0;
		if (class == NULL)
			class = "";
		else if (classlen > SCOPE_CLASS_MAX ||
		    !scope_typevalue(class, classlen))
			return (SCOPE_E_MALFORMED);
		if (strcmp(type, "repository") == 0 &&
		    router_valid_name(name, strlen(name)))
			t = SCOPE_REPOSITORY;
		else if (strcmp(type, "registry") == 0 &&
		    strcmp(name, "catalog") == 0)
			t = SCOPE_REGISTRY;
		else
			continue;
		actions = 0;
		for (j = 0; j < json_array_size(acts); j++) {
			a = json_array_get(acts, j);
			if (!json_is_string(a))
				return (SCOPE_E_MALFORMED);
			bit = scope_action(json_string_value(a),
			    json_string_length(a));
			if (bit == -1)
				return (SCOPE_E_MALFORMED);
			actions |= (unsigned)bit;
		}
		if (t == SCOPE_REGISTRY)
			actions &= SCOPE_ANY;
		if ((err = scope_add(set, t, class, classlen, name,
		    strlen(name), actions)) != SCOPE_OK)
			return (err);
	}
	return (SCOPE_OK);
}

/* The actions granted on (type, name); see scope.h. */
unsigned
scope_actions(const struct scope_set *set, enum scope_type type,
    const char *name)
{
	unsigned	a = 0;
	size_t		i;

	for (i = 0; i < set->n; i++)
		if (set->v[i].type == type &&
		    strcmp(set->v[i].name, name) == 0)
			a |= set->v[i].actions;
	if (a & SCOPE_ANY)
		a |= SCOPE_PULL | SCOPE_PUSH | SCOPE_DELETE;
	return (a);
}
