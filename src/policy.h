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
 * caller list at all; admin), and ignored when given with them: then
 * repository patterns are not consulted, and a rule applies only when it
 * has no repositories or one of them is "**" (every repository), so that
 * a rule scoped to some repositories with actions "*" never grants admin.
 * upstream is NULL for admin (and ignored when given with it): then a
 * rule limited to upstreams does not match.
 */
int		 policy_decide(const struct policy *, const struct principal *,
		    const char *upstream, const char *repo, enum pol_action,
		    struct pol_result *);

/*
 * Whether some allow rule for action a matches principal p on upstream,
 * whatever repositories it names (templates unresolved): "might p do a on
 * anything there?".  Deny rules are not consulted, so it can say yes where
 * every request would be denied; never no where one would be allowed.
 * For the answer of the base endpoint (GET /v2/), not for a decision.
 */
int		 policy_any_allow(const struct policy *, const struct principal *,
		    const char *upstream, enum pol_action);

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

/*
 * The repository patterns the allow rules let p use for action a (rule
 * id, pattern as written, the rule's upstreams; none: any), for the
 * sign-in landing page.  Deny rules may narrow them.  The count.
 */
typedef void	policy_pattern_fn(void *, const char *, const char *,
		    const char *const *, size_t);
size_t		 policy_allow_patterns(const struct policy *,
		    const struct principal *, enum pol_action,
		    policy_pattern_fn *, void *);

/* The number of rules (for logs: "policy loaded rules=N"). */
size_t		 policy_nrules(const struct policy *);
/* The number of blocked digests: with none, nothing needs hashing. */
size_t		 policy_nblocked(const struct policy *);

void		 policy_free(struct policy *);

/*
 * The policy as written: what the configuration loader fills from the
 * "policy" section (its schema rows in config_schema_access.c), and what
 * policy_compile() turns into a struct policy.  Strings are owned by the
 * configuration snapshot.
 */
enum pol_effect {
	POL_EFFECT_ALLOW,
	POL_EFFECT_DENY
};

struct pol_subject_src {
	char		 *match;	/* "user:NAME", "cidr:...", ... */
	char		 *claim;	/* or a claim condition: */
	char		 *equals;
	char		 *glob;
};

struct pol_rule_src {
	char			 *id;
	int			  effect;	/* enum pol_effect */
	char			**repositories;
	size_t			  nrepositories;
	char			**upstreams;
	size_t			  nupstreams;
	struct pol_subject_src	 *subjects;
	size_t			  nsubjects;
	char			**actions;
	size_t			  nactions;
};

struct pol_blocked_src {
	char		 *digest;
	char		 *reason;
};

struct pol_immutable_src {
	char		 *id;
	char		**repositories;
	size_t		  nrepositories;
	char		**upstreams;
	size_t		  nupstreams;
	char		**tags;
	size_t		  ntags;
};

struct pol_src {
	struct pol_rule_src		*rules;
	size_t				 nrules;
	struct pol_blocked_src		*blocked;
	size_t				 nblocked;
	struct pol_immutable_src	*immutable;
	size_t				 nimmutable;
	char				*file;	/* NULL: inline */
	size_t				 max_rules;
	size_t				 max_blocked;
	size_t				 max_pattern_bytes;
	size_t				 max_file_bytes;
};

/* Called once per compile error with its JSON pointer and a message. */
typedef void	(*pol_error_fn)(void *, const char *, const char *);

/*
 * Compile src (NULL: no policy section, which denies everything).  Names
 * in upstreams are given by the nup names of the configuration, against
 * which rules' upstream lists are checked.  Every error goes to err with
 * its JSON pointer under where ("/policy", or "FILE#" for a policy file);
 * returns NULL when there was any.
 */
struct policy	*policy_compile(const struct pol_src *src,
		    const char *const *upstreams, size_t nup,
		    const char *where, pol_error_fn err, void *arg);

/* Why one rule did or did not match, for `portcullis policy explain`. */
#define POL_MISSES(X)							\
	X(POL_MATCHED, "matched")					\
	X(POL_MISS_ACTION, "action not in rule")			\
	X(POL_MISS_UPSTREAM, "upstream not listed")			\
	X(POL_MISS_REPOSITORY, "no repository pattern matched")		\
	X(POL_MISS_SCOPED,						\
	    "rule is limited to repositories; the action names none")	\
	X(POL_MISS_TEMPLATE, "template value unusable")			\
	X(POL_MISS_SUBJECT, "no subject matched")

#define POL_MISS_ENUM(e, s) e,
enum pol_miss {
	POL_MISSES(POL_MISS_ENUM)
	POL_MISS__MAX
};
#undef POL_MISS_ENUM

/* The reason's text. */
const char	*policy_miss_name(enum pol_miss);
/* Rule i's id (i < policy_nrules()). */
const char	*policy_rule_id(const struct policy *, size_t);
/* Rule i's effect. */
enum pol_effect	 policy_rule_effect(const struct policy *, size_t);
/*
 * Whether rule i matches the request, and the first condition that failed
 * (action, upstream, repository, subject) when it does not.  Same inputs
 * and the same conditions as policy_decide().
 */
enum pol_miss	 policy_explain_rule(const struct policy *, size_t,
		    const struct principal *, const char *upstream,
		    const char *repo, enum pol_action);
/* The reason a blocked digest was listed, or NULL. */
const char	*policy_blocked_reason(const struct policy *, const char *);

#endif /* PC_POLICY_H */
