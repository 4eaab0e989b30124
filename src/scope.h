/*
 * scope.h: the Docker token service's scope grammar (distribution,
 * docs/spec/auth/scope.md) and the `access` claim of registry tokens
 * (docs/spec/auth/jwt.md).  Leaf: jansson only, plus router.h for the
 * repository-name grammar.
 *
 * The token service parses every `scope` query parameter (or the
 * space-separated `scope` form field) into one scope_set, intersects each
 * entry's actions with what policy allows, and signs scope_access_json()
 * of the result.  The identity stage turns a verified gateway token's
 * `access` claim back into a set with scope_from_access() and asks
 * scope_actions() on each /v2/ request.
 */
#ifndef PC_SCOPE_H
#define PC_SCOPE_H

#include <stddef.h>

#include <jansson.h>

#include "router.h"

/* X(enum, name in scopes and the access claim) */
#define SCOPE_TYPES(X)							\
	X(SCOPE_REPOSITORY, "repository")				\
	X(SCOPE_REGISTRY, "registry")

#define SCOPE_TYPE_ENUM(e, s) e,
enum scope_type {
	SCOPE_TYPES(SCOPE_TYPE_ENUM)
	SCOPE_TYPE__MAX
};
#undef SCOPE_TYPE_ENUM

/* X(bit, name): actions as a bitmask, in the order they are written. */
#define SCOPE_ACTIONS(X)						\
	X(SCOPE_PULL, "pull")						\
	X(SCOPE_PUSH, "push")						\
	X(SCOPE_DELETE, "delete")					\
	X(SCOPE_ANY, "*")

#define SCOPE_ACTION_ENUM(e, s) e##_BIT,
enum { SCOPE_ACTIONS(SCOPE_ACTION_ENUM) SCOPE_ACTION__MAX };
#undef SCOPE_ACTION_ENUM
#define SCOPE_PULL	(1u << SCOPE_PULL_BIT)
#define SCOPE_PUSH	(1u << SCOPE_PUSH_BIT)
#define SCOPE_DELETE	(1u << SCOPE_DELETE_BIT)
#define SCOPE_ANY	(1u << SCOPE_ANY_BIT)	/* "*": every action */

#define SCOPE_CLASS_MAX		32	/* "plugin" in repository(plugin) */
#define SCOPE_DEFAULT_MAX	32	/* distinct entries per request */

/* X(enum, name) of scope_parse's results */
#define SCOPE_ERRS(X)							\
	X(SCOPE_OK, "ok")						\
	X(SCOPE_E_MALFORMED, "malformed")				\
	X(SCOPE_E_NAME, "invalid_name")					\
	X(SCOPE_E_TOO_MANY, "too_many")					\
	X(SCOPE_E_NOMEM, "nomem")

#define SCOPE_ERR_ENUM(e, s) e,
enum scope_err {
	SCOPE_ERRS(SCOPE_ERR_ENUM)
	SCOPE_E__MAX
};
#undef SCOPE_ERR_ENUM

struct scope {
	enum scope_type	 type;
	char		 class[SCOPE_CLASS_MAX + 1];	/* "" when none */
	char		 name[OCI_NAME_MAX + 1];
	unsigned	 actions;	/* SCOPE_PULL | ...; may be 0 */
};

/* Distinct (type, class, name) entries, at most cap of them. */
struct scope_set {
	struct scope	*v;
	size_t		 n;
	size_t		 cap;
};

/* "malformed", ...; "unknown" when out of range. */
const char	*scope_err_name(enum scope_err);

/* A set holding at most max entries; NULL on allocation failure. */
struct scope_set *scope_set_new(size_t max);
void		 scope_set_free(struct scope_set *);

/*
 * Add the scopes of one `scope` value (len bytes, already URL-decoded,
 * need not be NUL-terminated): resource scopes separated by spaces, each
 * TYPE[(CLASS)]:NAME:ACTION[,ACTION]*.  Types other than repository and
 * registry, registry names other than "catalog", and actions other than
 * pull, push, delete and "*" are ignored, as distribution does; a
 * repository name must pass router_valid_name.  An entry already in the
 * set (same type, class and name) gains the new actions.  On an error
 * the set keeps what earlier scopes added.
 */
enum scope_err	 scope_parse(struct scope_set *, const char *s, size_t len);

/*
 * The access claim: [{"type","name","actions":[...]}] with "class" when
 * set, actions in SCOPE_ACTIONS order.  A new reference or NULL.
 */
json_t		*scope_access_json(const struct scope_set *);

/*
 * Read an access claim back (from a verified gateway token) into set,
 * with the same grammar checks and bound.  Entries of unknown types or
 * names are ignored; a claim that is not an array of objects is
 * SCOPE_E_MALFORMED.
 */
enum scope_err	 scope_from_access(struct scope_set *, const json_t *);

/*
 * The actions the set grants on (type, name), "*" expanded to every
 * action; 0 when the set has no such entry.
 */
unsigned	 scope_actions(const struct scope_set *, enum scope_type,
		    const char *name);

#endif /* PC_SCOPE_H */
