/*
 * policy_eval.c: decide requests against a policy compiled by policy.c
 * (semantics in policy.h): subject, CIDR and mTLS DN matching,
 * policy_decide(), policy_any_allow(), policy_explain_rule(), the
 * blocklist lookup and policy_immutable().
 *
 * A decision hashes the repository's first segment, then walks the deny
 * entries of that bucket and of the wildcard list in rule order, then the
 * allow entries the same way.  Walking in rule order and stopping at the
 * first match makes the reported rule the first in the file among those
 * that decide, while the decision itself (any deny beats any allow,
 * default deny) does not depend on order.
 *
 * Guarantees: the policy is only read; policy_decide(), policy_blocked()
 * and policy_immutable() allocate nothing.
 */
#include <sys/types.h>
#include <sys/socket.h>

#include <stdint.h>
#include <string.h>

#include "pattern.h"
#include "policy.h"
#include "policy_int.h"

/*
 * Actions that name no repository: one passed with them is ignored, so
 * that no caller can make a rule scoped to some repositories grant them.
 * Admin names no upstream either, and one passed with it is ignored too.
 */
#define POL_NOREPO	(POL_CATALOG | POL_ADMIN)

/* Index of a single action bit; -1 otherwise. */
static int
pol_action_index(unsigned a)
{
	int	 i;

	for (i = 0; i < POL_NACT; i++)
		if (a == (1u << i))
			return i;
	return -1;
}

/* The bucket for segment s, or NULL. */
static const struct pol_bucket *
pol_bucket_find(const struct policy *pol, const char *s, size_t len)
{
	const struct pol_bucket	*b;
	size_t			 i, mask;

	if (pol->nbuckets == 0)
		return NULL;
	mask = pol->nbuckets - 1;
	for (i = pol_hash(s, len) & mask; ; i = (i + 1) & mask) {
		b = &pol->buckets[i];
		if (b->seg == NULL)
			return NULL;
		if (b->len == len && memcmp(b->seg, s, len) == 0)
			return b;
	}
}

/* Does the prefix of plen bits of a equal that of net? */
static int
pol_prefix_eq(const unsigned char *a, const unsigned char *net, int plen)
{
	int	 bytes = plen / 8, bits = plen % 8;

	if (memcmp(a, net, bytes) != 0)
		return 0;
	if (bits == 0)
		return 1;
	return ((a[bytes] ^ net[bytes]) & (0xff00 >> bits) & 0xff) == 0;
}

static const unsigned char pol_v4mapped[12] = {
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff
};

/* Does the client address fall in the network?  v4 and mapped v6 agree. */
static int
pol_cidr_match(const struct pol_subj *sj, const struct principal *p)
{
	unsigned char	 mapped[16];

	if (p->af == sj->af)
		return pol_prefix_eq(p->addr, sj->net, sj->plen);
	if (p->af == AF_INET6 && sj->af == AF_INET &&
	    memcmp(p->addr, pol_v4mapped, 12) == 0)
		return pol_prefix_eq(p->addr + 12, sj->net, sj->plen);
	if (p->af == AF_INET && sj->af == AF_INET6) {
		memcpy(mapped, pol_v4mapped, 12);
		memcpy(mapped + 12, p->addr, 4);
		return pol_prefix_eq(mapped, sj->net, sj->plen);
	}
	return 0;
}

static int
pol_dn_sep(char c)
{
	return c == ',' || c == '+' || c == '=' || c == '\\';
}

/*
 * Match an mTLS subject glob.  Greedy with one backtrack point is complete
 * here as well: a star that would have to cross a separator to match can
 * never be rescued by an earlier star, since every later star starts after
 * it, so the walk fails as soon as the last star meets a separator.
 */
static int
pol_dn_glob(const char *pat, const char *s)
{
	const char	*star = NULL, *ss = NULL;

	while (*s != '\0') {
		if (*pat == '*') {
			star = ++pat;
			ss = s;
			continue;
		}
		if (*pat != '\0' && *pat == *s) {
			pat++;
			s++;
			continue;
		}
		if (star == NULL || pol_dn_sep(*ss))
			return 0;
		pat = star;
		s = ++ss;
	}
	while (*pat == '*')
		pat++;
	return *pat == '\0';
}

/* Does one subject entry match the principal? */
static int
pol_subj_match(const struct pol_subj *sj, const struct principal *p)
{
	size_t	 i;

	switch (sj->kind) {
	case SUBJ_ANONYMOUS:
		return p->method == AUTH_ANONYMOUS;
	case SUBJ_AUTHENTICATED:
		return p->method != AUTH_ANONYMOUS;
	case SUBJ_USER:
		return p->method != AUTH_ANONYMOUS && p->subject != NULL &&
		    strcmp(p->subject, sj->name) == 0;
	case SUBJ_GROUP:
		for (i = 0; i < p->ngroups; i++)
			if (p->groups[i] != NULL &&
			    strcmp(p->groups[i], sj->name) == 0)
				return 1;
		return 0;
	case SUBJ_CIDR:
		return pol_cidr_match(sj, p);
	case SUBJ_MTLS:
		return p->mtls_subject != NULL &&
		    strcmp(p->mtls_subject, sj->name) == 0;
	case SUBJ_MTLS_GLOB:
		return p->mtls_subject != NULL &&
		    pol_dn_glob(sj->name, p->mtls_subject);
	case SUBJ_CLAIM_EQ:
	case SUBJ_CLAIM_GLOB:
		for (i = 0; i < p->nclaims; i++) {
			if (p->claims[i].name == NULL ||
			    p->claims[i].value == NULL ||
			    strcmp(p->claims[i].name, sj->name) != 0)
				continue;
			if (sj->kind == SUBJ_CLAIM_EQ ?
			    strcmp(p->claims[i].value, sj->value) == 0 :
			    pattern_match(sj->glob, p->claims[i].value,
			    strlen(p->claims[i].value), NULL))
				return 1;
		}
		return 0;
	}
	return 0;
}

static int
pol_subjects_match(const struct pol_rule *r, const struct principal *p)
{
	size_t	 i;

	for (i = 0; i < r->nsubj; i++)
		if (pol_subj_match(&r->subj[i], p))
			return 1;
	return 0;
}

static int
pol_listed(char *const *list, size_t n, const char *s)
{
	size_t	 i;

	if (n == 0)
		return 1;
	if (s == NULL)
		return 0;
	for (i = 0; i < n; i++)
		if (strcmp(list[i], s) == 0)
			return 1;
	return 0;
}

/* Does entry e (rule and one pattern) match the request? */
static int
pol_entry_match(const struct policy *pol, const struct pol_entry *e,
    const struct principal *p, const char *upstream, const char *repo,
    size_t len)
{
	const struct pol_rule	*r = &pol->rules[e->rule];

	/* Cheapest first: subjects are a few compares, patterns a walk. */
	if (!pol_listed(r->upstreams, r->nupstreams, upstream) ||
	    !pol_subjects_match(r, p))
		return 0;
	return repo == NULL || e->pat < 0 ||
	    pattern_match_principal(r->pats[e->pat], repo, len, p) ==
	    PAT_MATCH;
}

/*
 * The first matching entry of two lists, each in rule order, walked as one
 * merged list so that the lower rule index wins; -1 when none matches.
 */
static long
pol_first(const struct policy *pol, const struct pol_list *a,
    const struct pol_list *b, const struct principal *p,
    const char *upstream, const char *repo, size_t len)
{
	const struct pol_entry	*e;
	size_t			 i = 0, j = 0, na, nb;

	na = a != NULL ? a->n : 0;
	nb = b != NULL ? b->n : 0;
	while (i < na || j < nb) {
		if (j == nb || (i < na && a->v[i].rule <= b->v[j].rule))
			e = &a->v[i++];
		else
			e = &b->v[j++];
		if (pol_entry_match(pol, e, p, upstream, repo, len))
			return (long)e->rule;
	}
	return -1;
}

/* Decide one request; see policy.h. */
int
policy_decide(const struct policy *pol, const struct principal *p,
    const char *upstream, const char *repo, enum pol_action a,
    struct pol_result *res)
{
	const struct pol_list	*x, *y;
	const struct pol_bucket	*b = NULL;
	const char		*sl;
	size_t			 len = 0;
	long			 ri;
	int			 ai, deny;

	res->allow = 0;
	res->why = POL_WHY_DEFAULT;
	res->rule = NULL;
	if ((ai = pol_action_index(a)) == -1 || pol == NULL || p == NULL)
		return 0;
	if (a & POL_NOREPO)
		repo = NULL;
	if (a == POL_ADMIN)
		upstream = NULL;
	if (repo != NULL) {
		len = strlen(repo);
		sl = memchr(repo, '/', len);
		b = pol_bucket_find(pol, repo, sl != NULL ?
		    (size_t)(sl - repo) : len);
	}
	/* Denies first: one is enough, whatever allows exist. */
	for (deny = 1; deny >= 0; deny--) {
		if (repo == NULL) {
			x = &pol->norepo[ai][deny];
			y = NULL;
		} else {
			x = b != NULL ? &b->l[ai][deny] : NULL;
			y = &pol->wild.l[ai][deny];
		}
		if ((ri = pol_first(pol, x, y, p, upstream, repo, len)) ==
		    -1)
			continue;
		res->allow = !deny;
		res->why = deny ? POL_WHY_DENY : POL_WHY_ALLOW;
		res->rule = pol->rules[ri].id;
		return res->allow;
	}
	return 0;
}

/*
 * Whether an allow rule for action a matches p on upstream, whatever its
 * repositories; see policy.h.  A walk of every rule, for the base
 * endpoint only (one per client session), never for a repository's
 * request.
 */
int
policy_any_allow(const struct policy *pol, const struct principal *p,
    const char *upstream, enum pol_action a)
{
	const struct pol_rule	*r;
	size_t			 i;

	if (pol == NULL || p == NULL || pol_action_index(a) == -1)
		return 0;
	if (a == POL_ADMIN)
		upstream = NULL;
	for (i = 0; i < pol->nrules; i++) {
		r = &pol->rules[i];
		if (!r->deny && (r->actions & a) &&
		    pol_listed(r->upstreams, r->nupstreams, upstream) &&
		    pol_subjects_match(r, p))
			return 1;
	}
	return 0;
}

/*
 * What the allow rules let p do with action a, for a person's landing
 * page: fn(arg, rule id, repository pattern as written ("**": any),
 * upstreams, nupstreams) per pattern of each allow rule whose subjects
 * match p.  Deny rules are not subtracted (they may narrow it); returns
 * the number of patterns reported.  A walk of every rule: not for
 * requests.
 */
size_t
policy_allow_patterns(const struct policy *pol, const struct principal *p,
    enum pol_action a, policy_pattern_fn *fn, void *arg)
{
	const struct pol_rule	*r;
	size_t			 i, j, n = 0;

	if (pol == NULL || p == NULL || pol_action_index(a) == -1)
		return 0;
	for (i = 0; i < pol->nrules; i++) {
		r = &pol->rules[i];
		if (r->deny || !(r->actions & a) || !pol_subjects_match(r, p))
			continue;
		if (r->npats == 0) {
			fn(arg, r->id, "**", (const char *const *)r->upstreams,
			    r->nupstreams);
			n++;
		}
		for (j = 0; j < r->npats; j++, n++)
			fn(arg, r->id, pattern_source(r->pats[j]),
			    (const char *const *)r->upstreams, r->nupstreams);
	}
	return n;
}

/* Rule i against one request, with the first condition that failed. */
enum pol_miss
policy_explain_rule(const struct policy *pol, size_t i,
    const struct principal *p, const char *upstream, const char *repo,
    enum pol_action a)
{
	const struct pol_rule	*r = &pol->rules[i];
	size_t			 j, len;
	int			 unusable = 0;

	if (pol_action_index(a) == -1 || !(r->actions & a))
		return POL_MISS_ACTION;
	if (a & POL_NOREPO)
		repo = NULL;
	if (a == POL_ADMIN)
		upstream = NULL;
	if (!pol_listed(r->upstreams, r->nupstreams, upstream))
		return POL_MISS_UPSTREAM;
	if (repo == NULL && !r->all_repos)
		return POL_MISS_SCOPED;
	if (repo != NULL && r->npats > 0) {
		len = strlen(repo);
		for (j = 0; j < r->npats; j++) {
			switch (pattern_match_principal(r->pats[j], repo, len,
			    p)) {
			case PAT_MATCH:
				goto subjects;
			case PAT_UNUSABLE:
				unusable = 1;
				break;
			default:
				break;
			}
		}
		return unusable ? POL_MISS_TEMPLATE : POL_MISS_REPOSITORY;
	}
subjects:
	return pol_subjects_match(r, p) ? POL_MATCHED : POL_MISS_SUBJECT;
}

static const struct pol_blocked *
pol_blocked_find(const struct policy *pol, const char *digest)
{
	size_t	 lo = 0, hi = pol->nblocked, mid;
	int	 c;

	if (digest == NULL)
		return NULL;
	while (lo < hi) {
		mid = lo + (hi - lo) / 2;
		c = strcmp(digest, pol->blocked[mid].digest);
		if (c == 0)
			return &pol->blocked[mid];
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return NULL;
}

/* Is digest on the blocklist?  *id is the digest as listed. */
int
policy_blocked(const struct policy *pol, const char *digest, const char **id)
{
	const struct pol_blocked	*b;

	if ((b = pol_blocked_find(pol, digest)) == NULL)
		return 0;
	if (id != NULL)
		*id = b->digest;
	return 1;
}

/* The reason given for a blocked digest, or NULL. */
const char *
policy_blocked_reason(const struct policy *pol, const char *digest)
{
	const struct pol_blocked	*b;

	if ((b = pol_blocked_find(pol, digest)) == NULL)
		return NULL;
	return b->reason;
}

static int
pol_any_match(struct pattern *const *pats, size_t n, const char *s)
{
	size_t	 i, len = strlen(s);

	for (i = 0; i < n; i++)
		if (pattern_match(pats[i], s, len, NULL))
			return 1;
	return 0;
}

/* Is tag of repo on upstream immutable?  *rule is the first rule's id. */
int
policy_immutable(const struct policy *pol, const char *upstream,
    const char *repo, const char *tag, const char **rule)
{
	const struct pol_imm	*im;
	size_t			 i;

	if (repo == NULL || tag == NULL)
		return 0;
	for (i = 0; i < pol->nimm; i++) {
		im = &pol->imm[i];
		if (!pol_listed(im->upstreams, im->nupstreams, upstream) ||
		    !pol_any_match(im->pats, im->npats, repo) ||
		    !pol_any_match(im->tags, im->ntags, tag))
			continue;
		if (rule != NULL)
			*rule = im->id;
		return 1;
	}
	return 0;
}
