/*
 * policy.h: the access policy engine.  A policy is compiled once per
 * configuration load from the config's "policy" section (and the file it
 * names) into an immutable object that the snapshot owns; requests in
 * flight keep the snapshot, so a reload never changes a decision midway.
 *
 * Semantics: default deny; a request is allowed only when at least one
 * allow rule matches and no deny rule matches, so the result does not
 * depend on rule order.  A rule matches when its action set holds the
 * action, its upstream list (when any) holds the upstream, one of its
 * repository patterns matches the repository, and one of its subjects
 * matches the principal.  Repositories are the upstream's names
 * (Docker Hub names carry library/), never the client's prefixed form, so
 * one repository has one name whatever route reached it.
 *
 * Evaluation allocates nothing.  Leaf: no libevent; only principal.h.
 */
#ifndef PC_POLICY_H
#define PC_POLICY_H

#include <stddef.h>

#include "principal.h"

/* X(enum, bit, name) */
#define POL_ACTIONS(X)							\
	X(POL_PULL, 0x01, "pull")					\
	X(POL_PUSH, 0x02, "push")					\
	X(POL_DELETE, 0x04, "delete")					\
	X(POL_CATALOG, 0x08, "catalog")					\
	X(POL_ADMIN, 0x10, "admin")

#define POL_ACTION_ENUM(e, b, s) e = b,
enum pol_action {
	POL_ACTIONS(POL_ACTION_ENUM)
};
#undef POL_ACTION_ENUM
#define POL_ACTION_ALL	0x1f

struct policy;

/* Why a decision came out as it did. */
enum pol_why {
	POL_WHY_DEFAULT,	/* no rule matched: default deny */
	POL_WHY_ALLOW,		/* an allow rule matched, no deny did */
	POL_WHY_DENY,		/* a deny rule matched */
	POL_WHY_BLOCKED		/* the digest is on the blocklist */
};

struct pol_result {
	int		 allow;		/* 1 allow, 0 deny */
	enum pol_why	 why;
	const char	*rule;		/* deciding rule or blocklist id; */
					/* NULL for the default */
};

/* The action's name ("pull"), or NULL for a value that is not one action. */
const char	*policy_action_name(enum pol_action);
/* Parse an action name; -1 when unknown. */
int		 policy_action_parse(const char *);

/*
 * Decide whether principal p may do action a on repository repo (the
 * upstream's name) of upstream `upstream`.  Fills *res; returns res->allow.
 * repo is NULL for the actions that name no repository (catalog: may the
 * caller list at all; admin): then repository patterns are not consulted.
 * upstream is NULL for admin: then a rule limited to upstreams does not
 * match.
 */
int		 policy_decide(const struct policy *, const struct principal *,
		    const char *upstream, const char *repo, enum pol_action,
		    struct pol_result *);

/*
 * Whether digest ("sha256:...") is on the blocklist: 1 and *id set to the
 * entry's id (or the digest) when it is, 0 when not.
 */
int		 policy_blocked(const struct policy *, const char *digest,
		    const char **id);

/*
 * Whether tag of repo (upstream's name) on upstream is immutable: 1 and
 * *rule set to the immutability rule's id when it is, 0 when not.
 */
int		 policy_immutable(const struct policy *, const char *upstream,
		    const char *repo, const char *tag, const char **rule);

/* The number of rules (for logs: "policy loaded rules=N"). */
size_t		 policy_nrules(const struct policy *);

void		 policy_free(struct policy *);

#endif /* PC_POLICY_H */
