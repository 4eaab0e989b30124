/*
 * policy_int.h: what the policy compiler (policy.c) and the evaluator
 * (policy_eval.c) share and nothing else includes: the compiled policy's
 * private structures (rules, parsed subjects, the index's buckets and
 * lists, blocked digests, immutable-tag rules) and the segment hash the
 * index is built and searched with.  The rest of the daemon sees only
 * src/policy.h.
 */
#ifndef PC_POLICY_INT_H
#define PC_POLICY_INT_H

#include <stddef.h>
#include <stdint.h>

struct pattern;

#define POL_NACT	5	/* actions, indexed by bit position */

enum pol_subj_kind {
	SUBJ_USER,
	SUBJ_GROUP,
	SUBJ_ANONYMOUS,
	SUBJ_AUTHENTICATED,
	SUBJ_CIDR,
	SUBJ_MTLS,
	SUBJ_MTLS_GLOB,
	SUBJ_CLAIM_EQ,
	SUBJ_CLAIM_GLOB
};

struct pol_subj {
	enum pol_subj_kind	 kind;
	const char		*name;	/* user, group, DN, claim: borrowed */
	const char		*value;	/* claim equals: borrowed */
	struct pattern		*glob;	/* claim glob */
	int			 af;	/* cidr */
	unsigned char		 net[16];
	int			 plen;
};

struct pol_rule {
	const char		 *id;		/* borrowed from the source */
	int			  deny;
	unsigned		  actions;
	struct pattern		**pats;		/* none: any repository */
	size_t			  npats;
	int			  all_repos;	/* none, or one is "**" */
	char *const		 *upstreams;	/* none: any upstream */
	size_t			  nupstreams;
	struct pol_subj		 *subj;
	size_t			  nsubj;
};

struct pol_entry {
	uint32_t	 rule;
	int32_t		 pat;	/* -1: any repository */
};

struct pol_list {
	struct pol_entry	*v;
	size_t			 n;
	size_t			 cap;
};

struct pol_bucket {
	const char	*seg;	/* NULL: empty slot */
	size_t		 len;
	struct pol_list	 l[POL_NACT][2];	/* [action][deny] */
};

struct pol_blocked {
	char		*digest;
	const char	*reason;	/* NULL: none */
};

struct pol_imm {
	const char		 *id;
	struct pattern		**pats;
	size_t			  npats;
	char *const		 *upstreams;
	size_t			  nupstreams;
	struct pattern		**tags;
	size_t			  ntags;
};

struct policy {
	struct pol_rule		*rules;
	size_t			 nrules;
	struct pol_bucket	*buckets;	/* open addressing */
	size_t			 nbuckets;	/* a power of two */
	struct pol_bucket	 wild;
	struct pol_list		 norepo[POL_NACT][2];
	struct pol_blocked	*blocked;	/* sorted by digest */
	size_t			 nblocked;
	struct pol_imm		*imm;
	size_t			 nimm;
};

/* FNV-1a of a segment: the index and its lookup must hash alike. */
static inline uint32_t
pol_hash(const char *s, size_t len)
{
	uint32_t	 h = 2166136261u;
	size_t		 i;

	for (i = 0; i < len; i++) {
		h ^= (unsigned char)s[i];
		h *= 16777619u;
	}
	return h;
}

#endif /* PC_POLICY_INT_H */
