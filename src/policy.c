/*
 * policy.c: compile the access policy once per configuration load
 * (semantics in policy.h) into the immutable, indexed form that
 * policy_eval.c decides requests against; names and accessors.
 *
 * Compiling turns each rule into an action bit set, compiled repository
 * patterns, an upstream list and parsed subjects, and builds an index so
 * that a decision looks at few rules: per action and effect, every
 * (rule, pattern) pair is filed under the pattern's first segment when
 * that segment is literal ("team-a" then "**" under "team-a") and otherwise in
 * one wildcard list (policy_eval.c walks it).
 *
 * Guarantees: the compiled object is immutable and owned by the snapshot;
 * compile reports every error with its JSON pointer and never echoes a
 * value from the file.
 */
#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pattern.h"
#include "policy.h"
#include "policy_int.h"
#include "router.h"

#define POL_ID_MAX	64

#define AUTH_METHOD_NAME(e, s) s,
static const char *const pol_method_names[] = {
	AUTH_METHODS(AUTH_METHOD_NAME)
};
#undef AUTH_METHOD_NAME

#define POL_MISS_NAME(e, s) s,
static const char *const pol_miss_names[] = {
	POL_MISSES(POL_MISS_NAME)
};
#undef POL_MISS_NAME

/* Compile-time context: where errors go. */
struct pol_cc {
	const char	*where;
	pol_error_fn	 err;
	void		*arg;
	int		 nerrs;
};

static void pol_err(struct pol_cc *, const char *, const char *, ...)
    __attribute__((__format__(__printf__, 3, 4)));

static void
pol_err(struct pol_cc *cc, const char *msg, const char *fmt, ...)
{
	char	 ptr[512], rel[256];
	va_list	 ap;

	va_start(ap, fmt);
	vsnprintf(rel, sizeof(rel), fmt, ap);
	va_end(ap);
	snprintf(ptr, sizeof(ptr), "%s%s", cc->where, rel);
	cc->nerrs++;
	if (cc->err != NULL)
		cc->err(cc->arg, ptr, msg);
}

static void *
pol_calloc(size_t n, size_t size)
{
	void	*p;

	if ((p = calloc(n == 0 ? 1 : n, size)) == NULL)
		abort();
	return p;
}

static char *
pol_strdup(const char *s)
{
	char	*p;

	if ((p = strdup(s)) == NULL)
		abort();
	return p;
}

/* The method's name. */
const char *
principal_method_name(enum auth_method m)
{
	if ((unsigned)m >= AUTH_METHOD__MAX)
		return "unknown";
	return pol_method_names[m];
}

/* The action's name, or NULL when a is not exactly one action. */
const char *
policy_action_name(enum pol_action a)
{
	switch (a) {
#define POL_ACTION_CASE(e, b, s) case e: return s;
	POL_ACTIONS(POL_ACTION_CASE)
#undef POL_ACTION_CASE
	}
	return NULL;
}

/* Parse an action name; -1 when unknown. */
int
policy_action_parse(const char *s)
{
#define POL_ACTION_PARSE(e, b, n) if (strcmp(s, n) == 0) return b;
	POL_ACTIONS(POL_ACTION_PARSE)
#undef POL_ACTION_PARSE
	return -1;
}

/* The reason's text. */
const char *
policy_miss_name(enum pol_miss m)
{
	if ((unsigned)m >= POL_MISS__MAX)
		return "unknown";
	return pol_miss_names[m];
}



static void
pol_list_add(struct pol_list *l, uint32_t rule, int32_t pat)
{
	struct pol_entry	*v;

	/* A rule's patterns are filed in order: skip a repeat. */
	if (l->n > 0 && l->v[l->n - 1].rule == rule && pat >= 0 &&
	    l->v[l->n - 1].pat == pat)
		return;
	if (l->n == l->cap) {
		l->cap = l->cap == 0 ? 4 : l->cap * 2;
		if ((v = reallocarray(l->v, l->cap, sizeof(*v))) == NULL)
			abort();
		l->v = v;
	}
	l->v[l->n].rule = rule;
	l->v[l->n].pat = pat;
	l->n++;
}

static void
pol_lists_free(struct pol_list l[POL_NACT][2])
{
	int	 a, d;

	for (a = 0; a < POL_NACT; a++)
		for (d = 0; d < 2; d++)
			free(l[a][d].v);
}

/* File (rule, pattern) under every action of the rule. */
static void
pol_file(struct pol_list l[POL_NACT][2], const struct pol_rule *r,
    uint32_t ri, int32_t pat)
{
	int	 a;

	for (a = 0; a < POL_NACT; a++)
		if (r->actions & (1u << a))
			pol_list_add(&l[a][r->deny], ri, pat);
}

/* Find or make the bucket for a literal head. */
static struct pol_bucket *
pol_bucket_get(struct policy *pol, const char *s, size_t len)
{
	struct pol_bucket	*b;
	size_t			 i, mask = pol->nbuckets - 1;

	for (i = pol_hash(s, len) & mask; ; i = (i + 1) & mask) {
		b = &pol->buckets[i];
		if (b->seg == NULL) {
			b->seg = s;
			b->len = len;
			return b;
		}
		if (b->len == len && memcmp(b->seg, s, len) == 0)
			return b;
	}
}

/* Build the index over every rule's patterns. */
static void
pol_index(struct policy *pol)
{
	const struct pol_rule	*r;
	struct pol_bucket	*b;
	const char		*head;
	size_t			 i, j, npats = 0, len;

	for (i = 0; i < pol->nrules; i++)
		npats += pol->rules[i].npats;
	/* At most half full, so probes stay short. */
	for (pol->nbuckets = 8; pol->nbuckets < npats * 2;)
		pol->nbuckets *= 2;
	pol->buckets = pol_calloc(pol->nbuckets, sizeof(*pol->buckets));
	for (i = 0; i < pol->nrules; i++) {
		r = &pol->rules[i];
		/* Catalog and admin: only rules over every repository. */
		if (r->all_repos)
			pol_file(pol->norepo, r, (uint32_t)i, -1);
		if (r->npats == 0)
			pol_file(pol->wild.l, r, (uint32_t)i, -1);
		for (j = 0; j < r->npats; j++) {
			head = pattern_literal_head(r->pats[j], &len);
			b = head != NULL ? pol_bucket_get(pol, head, len) :
			    &pol->wild;
			pol_file(b->l, r, (uint32_t)i, (int32_t)j);
		}
	}
}

/*
 * "cidr:A/N": v4 or v6 network.  Host bits must be zero, so a typo like
 * 10.0.0.1/8 is caught rather than silently widened.
 */
static const char *
pol_parse_cidr(const char *s, struct pol_subj *sj)
{
	char		 addr[INET6_ADDRSTRLEN + 1], *end;
	const char	*slash;
	long		 plen;
	int		 i, max;

	if ((slash = strchr(s, '/')) == NULL ||
	    (size_t)(slash - s) >= sizeof(addr))
		return "cidr must be ADDRESS/PREFIX";
	memcpy(addr, s, slash - s);
	addr[slash - s] = '\0';
	if (inet_pton(AF_INET, addr, sj->net) == 1) {
		sj->af = AF_INET;
		max = 32;
	} else if (inet_pton(AF_INET6, addr, sj->net) == 1) {
		sj->af = AF_INET6;
		max = 128;
	} else
		return "cidr address is neither IPv4 nor IPv6";
	if (slash[1] < '0' || slash[1] > '9')
		return "cidr prefix must be a number";
	plen = strtol(slash + 1, &end, 10);
	if (*end != '\0' || plen < 0 || plen > max)
		return "cidr prefix length out of range";
	sj->plen = (int)plen;
	for (i = (int)plen; i < max; i++)
		if (sj->net[i / 8] & (0x80 >> (i % 8)))
			return "cidr has bits set after the prefix";
	return NULL;
}

/*
 * An mTLS subject pattern: RFC 2253 text, with '*' standing for any run of
 * characters other than ',', '+', '=' and '\', so a star stays inside one
 * attribute value and cannot swallow an escaped separator.
 */
static const char *
pol_check_dn(const char *s)
{
	size_t	 i;

	if (*s == '\0')
		return "mtls subject is empty";
	for (i = 0; s[i] != '\0'; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return "mtls subject holds a control character";
		else if ((unsigned char)s[i] >= 0x80)
			/* tls.c prints them escaped (RFC 2253 2.4). */
			return "mtls subject holds a non-ASCII byte: write "
			    "it as the gateway logs it, e.g. "
			    "CN=J\\C3\\A9r\\C3\\B4me";
	if (strchr(s, '=') == NULL)
		return "mtls subject must be an RFC 2253 DN such as "
		    "CN=node1,O=Corp";
	return NULL;
}

static const char *
pol_parse_subject(const struct pol_subject_src *src, struct pol_subj *sj,
    size_t maxpat, const char **field)
{
	const char	*s = src->match, *err;

	*field = "";
	if (s != NULL && (src->claim != NULL || src->equals != NULL ||
	    src->glob != NULL))
		return "a subject is either a string or a claim condition";
	if (s == NULL) {
		if (src->claim == NULL)
			return "a claim condition needs \"claim\"";
		if ((src->equals == NULL) == (src->glob == NULL))
			return "a claim condition needs exactly one of "
			    "\"equals\" and \"glob\"";
		sj->name = src->claim;
		if (src->equals != NULL) {
			sj->kind = SUBJ_CLAIM_EQ;
			sj->value = src->equals;
			return NULL;
		}
		sj->kind = SUBJ_CLAIM_GLOB;
		sj->glob = pattern_compile(src->glob, maxpat, 0, &err);
		*field = "/glob";
		return sj->glob == NULL ? err : NULL;
	}
	if (strcmp(s, "anonymous") == 0) {
		sj->kind = SUBJ_ANONYMOUS;
		return NULL;
	}
	if (strcmp(s, "authenticated") == 0) {
		sj->kind = SUBJ_AUTHENTICATED;
		return NULL;
	}
	if (strncmp(s, "user:", 5) == 0 || strncmp(s, "group:", 6) == 0) {
		sj->kind = s[0] == 'u' ? SUBJ_USER : SUBJ_GROUP;
		sj->name = strchr(s, ':') + 1;
		if (*sj->name == '\0')
			return "user: and group: need a name";
		return NULL;
	}
	if (strncmp(s, "cidr:", 5) == 0) {
		sj->kind = SUBJ_CIDR;
		return pol_parse_cidr(s + 5, sj);
	}
	if (strncmp(s, "mtls:", 5) == 0) {
		sj->name = s + 5;
		sj->kind = strchr(sj->name, '*') != NULL ? SUBJ_MTLS_GLOB :
		    SUBJ_MTLS;
		return pol_check_dn(sj->name);
	}
	return "unknown subject: use user:NAME, group:NAME, anonymous, "
	    "authenticated, cidr:NET/LEN, mtls:DN or a claim condition";
}

/* Compile a list of patterns; errors name ptr/i. */
static struct pattern **
pol_patterns(struct pol_cc *cc, char *const *src, size_t n, size_t maxlen,
    int flags, const char *ptr)
{
	struct pattern	**pats;
	const char	 *err;
	size_t		  i;

	pats = pol_calloc(n, sizeof(*pats));
	for (i = 0; i < n; i++)
		if ((pats[i] = pattern_compile(src[i], maxlen, flags,
		    &err)) == NULL)
			pol_err(cc, err, "%s/%zu", ptr, i);
	return pats;
}

static void
pol_patterns_free(struct pattern **pats, size_t n)
{
	size_t	 i;

	for (i = 0; pats != NULL && i < n; i++)
		pattern_free(pats[i]);
	free(pats);
}

/* Every listed upstream must be one of the configuration's. */
static void
pol_check_upstreams(struct pol_cc *cc, char *const *list, size_t n,
    const char *const *ups, size_t nup, const char *ptr)
{
	size_t	 i, j;

	for (i = 0; i < n; i++) {
		for (j = 0; j < nup; j++)
			if (ups[j] != NULL && strcmp(list[i], ups[j]) == 0)
				break;
		if (j == nup)
			pol_err(cc, "no upstream has this name",
			    "%s/%zu", ptr, i);
	}
}

/* Ids: 1..64 of [A-Za-z0-9._:-], unique across rules and immutable_tags. */
static const char *
pol_check_id(const char *id)
{
	size_t	 i;

	if (id == NULL)		/* the schema row reported it */
		return NULL;
	for (i = 0; id[i] != '\0'; i++) {
		if (!((id[i] >= 'a' && id[i] <= 'z') ||
		    (id[i] >= 'A' && id[i] <= 'Z') ||
		    (id[i] >= '0' && id[i] <= '9') || id[i] == '.' ||
		    id[i] == '_' || id[i] == '-' || id[i] == ':'))
			return "an id holds only letters, digits, '.', '_', "
			    "'-' and ':'";
	}
	if (i == 0 || i > POL_ID_MAX)
		return "an id is 1 to 64 characters";
	return NULL;
}

static void
pol_compile_rule(struct pol_cc *cc, const struct pol_src *src, size_t i,
    struct pol_rule *r, const char *const *ups, size_t nup)
{
	const struct pol_rule_src	*rs = &src->rules[i];
	const char			*err, *field;
	char				 ptr[64];
	size_t				 j;
	int				 a;

	r->id = rs->id;
	r->deny = rs->effect == POL_EFFECT_DENY;
	if ((err = pol_check_id(rs->id)) != NULL)
		pol_err(cc, err, "/rules/%zu/id", i);
	if (rs->actions == NULL || rs->nactions == 0)
		pol_err(cc, "needs at least one action", "/rules/%zu/actions",
		    i);
	for (j = 0; j < rs->nactions; j++) {
		if (strcmp(rs->actions[j], "*") == 0)
			a = POL_ACTION_ALL;
		else if ((a = policy_action_parse(rs->actions[j])) == -1) {
			pol_err(cc, "unknown action: use pull, push, delete, "
			    "catalog, admin or *", "/rules/%zu/actions/%zu",
			    i, j);
			continue;
		}
		r->actions |= (unsigned)a;
	}
	snprintf(ptr, sizeof(ptr), "/rules/%zu/repositories", i);
	if (rs->repositories == NULL || rs->nrepositories == 0) {
		/* Only actions that name no repository may omit them. */
		if (r->actions & (POL_PULL | POL_PUSH | POL_DELETE))
			pol_err(cc, "is required unless actions are only "
			    "catalog and admin", "%s", ptr);
	} else {
		r->npats = rs->nrepositories;
		r->pats = pol_patterns(cc, rs->repositories, r->npats,
		    src->max_pattern_bytes, PAT_TEMPLATES, ptr);
	}
	r->all_repos = r->npats == 0;
	for (j = 0; j < r->npats; j++)
		if (r->pats[j] != NULL && pattern_matches_all(r->pats[j]))
			r->all_repos = 1;
	r->upstreams = rs->upstreams;
	r->nupstreams = rs->nupstreams;
	snprintf(ptr, sizeof(ptr), "/rules/%zu/upstreams", i);
	pol_check_upstreams(cc, rs->upstreams, rs->nupstreams, ups, nup, ptr);
	if (rs->subjects == NULL || rs->nsubjects == 0)
		pol_err(cc, "needs at least one subject (\"anonymous\", "
		    "\"authenticated\", ...)", "/rules/%zu/subjects", i);
	r->nsubj = rs->nsubjects;
	r->subj = pol_calloc(r->nsubj, sizeof(*r->subj));
	for (j = 0; j < r->nsubj; j++)
		if ((err = pol_parse_subject(&rs->subjects[j], &r->subj[j],
		    src->max_pattern_bytes, &field)) != NULL)
			pol_err(cc, err, "/rules/%zu/subjects/%zu%s", i, j,
			    field);
}

static int
pol_blocked_cmp(const void *a, const void *b)
{
	return strcmp(((const struct pol_blocked *)a)->digest,
	    ((const struct pol_blocked *)b)->digest);
}

static void
pol_compile_blocked(struct pol_cc *cc, const struct pol_src *src,
    struct policy *pol)
{
	const struct pol_blocked_src	*bs;
	size_t				 i, n = 0;

	pol->blocked = pol_calloc(src->nblocked, sizeof(*pol->blocked));
	for (i = 0; i < src->nblocked; i++) {
		bs = &src->blocked[i];
		if (bs->digest == NULL)		/* the schema reported it */
			continue;
		if (!router_valid_digest(bs->digest, strlen(bs->digest))) {
			pol_err(cc, "not a digest (sha256: or sha512: and "
			    "lowercase hex)", "/blocked_digests/%zu", i);
			continue;
		}
		pol->blocked[n].digest = pol_strdup(bs->digest);
		pol->blocked[n].reason = bs->reason;
		n++;
	}
	pol->nblocked = n;
	qsort(pol->blocked, n, sizeof(*pol->blocked), pol_blocked_cmp);
	for (i = 1; i < n; i++)
		if (strcmp(pol->blocked[i - 1].digest,
		    pol->blocked[i].digest) == 0)
			pol_err(cc, "a digest is listed twice",
			    "/blocked_digests");
}

static void
pol_compile_immutable(struct pol_cc *cc, const struct pol_src *src,
    struct policy *pol, const char *const *ups, size_t nup)
{
	const struct pol_immutable_src	*is;
	struct pol_imm			*im;
	const char			*err;
	char				 ptr[64];
	size_t				 i, j;

	pol->nimm = src->nimmutable;
	pol->imm = pol_calloc(pol->nimm, sizeof(*pol->imm));
	for (i = 0; i < pol->nimm; i++) {
		is = &src->immutable[i];
		im = &pol->imm[i];
		im->id = is->id;
		if ((err = pol_check_id(is->id)) != NULL)
			pol_err(cc, err, "/immutable_tags/%zu/id", i);
		snprintf(ptr, sizeof(ptr), "/immutable_tags/%zu/repositories",
		    i);
		if (is->nrepositories == 0)
			pol_err(cc, "needs at least one pattern", "%s", ptr);
		im->npats = is->nrepositories;
		im->pats = pol_patterns(cc, is->repositories, im->npats,
		    src->max_pattern_bytes, 0, ptr);
		snprintf(ptr, sizeof(ptr), "/immutable_tags/%zu/upstreams", i);
		pol_check_upstreams(cc, is->upstreams, is->nupstreams, ups,
		    nup, ptr);
		im->upstreams = is->upstreams;
		im->nupstreams = is->nupstreams;
		snprintf(ptr, sizeof(ptr), "/immutable_tags/%zu/tags", i);
		if (is->ntags == 0)
			pol_err(cc, "needs at least one tag glob", "%s", ptr);
		im->ntags = is->ntags;
		im->tags = pol_patterns(cc, is->tags, im->ntags,
		    src->max_pattern_bytes, 0, ptr);
		for (j = 0; j < is->ntags; j++)
			if (strchr(is->tags[j], '/') != NULL)
				pol_err(cc, "a tag glob has no '/'", "%s/%zu",
				    ptr, j);
	}
}

struct pol_idref {
	const char	*id;
	size_t		 i;	/* rules, then immutable_tags */
};

static int
pol_idref_cmp(const void *a, const void *b)
{
	const struct pol_idref	*x = a, *y = b;
	int			 c;

	if ((c = strcmp(x->id, y->id)) != 0)
		return c;
	return x->i < y->i ? -1 : x->i > y->i;
}

/*
 * Ids are what logs and audit records name: no two alike.  Sorted rather
 * than compared pairwise, since a reload compiles on the event loop and
 * max_rules allows a million; every repeat is reported, in file order.
 */
static void
pol_check_unique_ids(struct pol_cc *cc, const struct pol_src *src)
{
	struct pol_idref	*v;
	unsigned char		*dup;
	size_t			 i, k = 0, n = src->nrules + src->nimmutable;
	const char		*id;

	v = pol_calloc(n, sizeof(*v));
	dup = pol_calloc(n, 1);
	for (i = 0; i < n; i++) {
		id = i < src->nrules ? src->rules[i].id :
		    src->immutable[i - src->nrules].id;
		if (id == NULL)
			continue;
		v[k].id = id;
		v[k++].i = i;
	}
	qsort(v, k, sizeof(*v), pol_idref_cmp);
	/* Within a run of one id, all but the first in file order. */
	for (i = 1; i < k; i++)
		if (strcmp(v[i - 1].id, v[i].id) == 0)
			dup[v[i].i] = 1;
	for (i = 0; i < n; i++) {
		if (!dup[i])
			continue;
		if (i < src->nrules)
			pol_err(cc, "duplicate id", "/rules/%zu/id", i);
		else
			pol_err(cc, "duplicate id", "/immutable_tags/%zu/id",
			    i - src->nrules);
	}
	free(dup);
	free(v);
}

/* Compile the policy as written into its immutable, indexed form. */
struct policy *
policy_compile(const struct pol_src *src, const char *const *ups,
    size_t nup, const char *where, pol_error_fn err, void *arg)
{
	struct pol_cc	 cc;
	struct policy	*pol;
	size_t		 i;

	memset(&cc, 0, sizeof(cc));
	cc.where = where != NULL ? where : "";
	cc.err = err;
	cc.arg = arg;
	pol = pol_calloc(1, sizeof(*pol));
	if (src == NULL)
		goto done;
	if (src->max_rules > 0 && src->nrules > src->max_rules)
		pol_err(&cc, "more rules than policy/max_rules", "/rules");
	if (src->max_blocked > 0 && src->nblocked > src->max_blocked)
		pol_err(&cc, "more digests than policy/max_blocked_digests",
		    "/blocked_digests");
	if (cc.nerrs > 0)
		goto done;
	pol->nrules = src->nrules;
	pol->rules = pol_calloc(pol->nrules, sizeof(*pol->rules));
	for (i = 0; i < pol->nrules; i++)
		pol_compile_rule(&cc, src, i, &pol->rules[i], ups, nup);
	pol_check_unique_ids(&cc, src);
	pol_compile_blocked(&cc, src, pol);
	pol_compile_immutable(&cc, src, pol, ups, nup);
done:
	if (cc.nerrs > 0) {
		policy_free(pol);
		return NULL;
	}
	pol_index(pol);
	return pol;
}

/* Free a compiled policy; NULL is a no-op. */
void
policy_free(struct policy *pol)
{
	size_t	 i, j;

	if (pol == NULL)
		return;
	for (i = 0; i < pol->nrules; i++) {
		pol_patterns_free(pol->rules[i].pats, pol->rules[i].npats);
		for (j = 0; j < pol->rules[i].nsubj; j++)
			pattern_free(pol->rules[i].subj[j].glob);
		free(pol->rules[i].subj);
	}
	free(pol->rules);
	for (i = 0; i < pol->nbuckets; i++)
		pol_lists_free(pol->buckets[i].l);
	free(pol->buckets);
	pol_lists_free(pol->wild.l);
	pol_lists_free(pol->norepo);
	for (i = 0; i < pol->nblocked; i++)
		free(pol->blocked[i].digest);
	free(pol->blocked);
	for (i = 0; i < pol->nimm; i++) {
		pol_patterns_free(pol->imm[i].pats, pol->imm[i].npats);
		pol_patterns_free(pol->imm[i].tags, pol->imm[i].ntags);
	}
	free(pol->imm);
	free(pol);
}

/* The number of rules. */
size_t
policy_nrules(const struct policy *pol)
{
	return pol->nrules;
}

/* The number of blocked digests. */
size_t
policy_nblocked(const struct policy *pol)
{
	return pol->nblocked;
}

/* Rule i's id. */
const char *
policy_rule_id(const struct policy *pol, size_t i)
{
	return pol->rules[i].id;
}

/* Rule i's effect. */
enum pol_effect
policy_rule_effect(const struct policy *pol, size_t i)
{
	return pol->rules[i].deny ? POL_EFFECT_DENY : POL_EFFECT_ALLOW;
}
