#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

/*
 * test_policy.c: the policy engine (src/policy.c) through the
 * configuration loader, as the gateway uses it: decisions for principals
 * of every kind (anonymous, token with groups, claims, CIDRs v4/v6 and
 * IPv4-mapped, mTLS DNs with escaped commas), deny beating allow whatever
 * the order, upstream limits, the blocklist, tag immutability, compile
 * errors named by their JSON path (all of them in one pass), the policy
 * file and its size bound, reload, and that deciding allocates nothing.
 */
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "policy.h"

/* Count allocations while `counting` is set (glibc's real allocator). */
extern void	*__libc_malloc(size_t);
extern void	*__libc_calloc(size_t, size_t);
extern void	*__libc_realloc(void *, size_t);
static int	 counting;
static size_t	 nallocs;

void *
malloc(size_t n)
{
	if (counting)
		nallocs++;
	return __libc_malloc(n);
}

void *
calloc(size_t n, size_t m)
{
	if (counting)
		nallocs++;
	return __libc_calloc(n, m);
}

void *
realloc(void *p, size_t n)
{
	if (counting)
		nallocs++;
	return __libc_realloc(p, n);
}

/*
 * Count strcmp() calls while `counting_cmp` is set: compiling must not
 * compare every id with every other (a reload runs on the event loop).
 */
static int	 counting_cmp;
static size_t	 ncmps;

int
strcmp(const char *a, const char *b)
{
	const unsigned char	*x = (const unsigned char *)a;
	const unsigned char	*y = (const unsigned char *)b;

	if (counting_cmp)
		ncmps++;
	while (*x != '\0' && *x == *y) {
		x++;
		y++;
	}
	return *x - *y;
}

#define UPSTREAMS							\
	"\"upstreams\": ["						\
	"{\"name\": \"hub\", \"url\": \"https://registry-1.docker.io\", " \
	"\"docker_hub\": true, \"default\": true},"			\
	"{\"name\": \"local\", \"url\": \"http://127.0.0.1:5001\", "	\
	"\"prefix\": \"local\"}]"

#define D1 "sha256:" \
    "1111111111111111111111111111111111111111111111111111111111111111"
#define D2 "sha256:" \
    "2222222222222222222222222222222222222222222222222222222222222222"
#define D3 "sha256:" \
    "3333333333333333333333333333333333333333333333333333333333333333"

/*
 * Rules are listed allow-first on purpose: the denies must win although
 * they come last (and test_order reverses the whole list).
 */
static const char *const rules_json[] = {
	"{\"id\": \"pull-library\", \"effect\": \"allow\", "
	"\"repositories\": [\"library/**\"], \"upstreams\": [\"hub\"], "
	"\"subjects\": [\"authenticated\", \"cidr:10.0.0.0/8\"], "
	"\"actions\": [\"pull\"]}",
	"{\"id\": \"platform\", \"effect\": \"allow\", "
	"\"repositories\": [\"base/**\"], "
	"\"subjects\": [\"group:platform\"], "
	"\"actions\": [\"pull\", \"push\"]}",
	"{\"id\": \"ci\", \"effect\": \"allow\", "
	"\"repositories\": [\"ci/${claim.repository}/**\"], "
	"\"subjects\": [{\"claim\": \"iss\", \"equals\": \"https://ci\"}], "
	"\"actions\": [\"pull\", \"push\"]}",
	"{\"id\": \"home\", \"effect\": \"allow\", "
	"\"repositories\": [\"users/${subject}/**\"], "
	"\"subjects\": [\"authenticated\"], \"actions\": [\"*\"]}",
	"{\"id\": \"nodes\", \"effect\": \"allow\", "
	"\"repositories\": [\"mirror/**\"], "
	"\"subjects\": [\"mtls:CN=*,O=Corp\", "
	"\"mtls:CN=admin,O=Corp\\\\, Inc\"], "
	"\"actions\": [\"pull\"]}",
	"{\"id\": \"v6\", \"effect\": \"allow\", \"repositories\": [\"v6/*\"], "
	"\"subjects\": [\"cidr:fd00::/8\"], \"actions\": [\"pull\"]}",
	"{\"id\": \"catalog\", \"effect\": \"allow\", "
	"\"subjects\": [\"authenticated\"], \"actions\": [\"catalog\"]}",
	"{\"id\": \"ops\", \"effect\": \"allow\", "
	"\"subjects\": [\"group:ops\", \"user:root\"], "
	"\"actions\": [\"admin\"]}",
	"{\"id\": \"teams\", \"effect\": \"allow\", "
	"\"repositories\": [\"team/*/**\"], "
	"\"subjects\": [{\"claim\": \"team\", \"glob\": \"t-*\"}], "
	"\"actions\": [\"pull\"]}",
	"{\"id\": \"alice\", \"effect\": \"allow\", "
	"\"repositories\": [\"x/**\", \"y/?\"], "
	"\"subjects\": [\"user:alice\"], "
	"\"actions\": [\"pull\", \"delete\"]}",
	"{\"id\": \"local-any\", \"effect\": \"allow\", "
	"\"repositories\": [\"**\"], \"upstreams\": [\"local\"], "
	"\"subjects\": [\"group:local\"], \"actions\": [\"pull\"]}",
	"{\"id\": \"no-secret\", \"effect\": \"deny\", "
	"\"repositories\": [\"**/secret/**\"], "
	"\"subjects\": [\"anonymous\", \"authenticated\"], "
	"\"actions\": [\"*\"]}",
	"{\"id\": \"no-anon-write\", \"effect\": \"deny\", "
	"\"repositories\": [\"**\"], \"subjects\": [\"anonymous\"], "
	"\"actions\": [\"push\", \"delete\"]}",
	"{\"id\": \"bad-lib\", \"effect\": \"deny\", "
	"\"repositories\": [\"library/bad\"], \"upstreams\": [\"hub\"], "
	"\"subjects\": [\"cidr:0.0.0.0/0\", \"cidr:::/0\", \"authenticated\"], "
	"\"actions\": [\"pull\"]}",
	"{\"id\": \"quarantine\", \"effect\": \"deny\", "
	"\"repositories\": [\"base/legacy/**\"], "
	"\"subjects\": [\"cidr:10.9.0.0/16\"], \"actions\": [\"*\"]}",
};
#define NRULES	(sizeof(rules_json) / sizeof(rules_json[0]))

#define EXTRA								\
	"\"blocked_digests\": [\"" D1 "\", {\"digest\": \"" D2 "\", "	\
	"\"reason\": \"CVE-2024-0001\"}],"				\
	"\"immutable_tags\": [{\"id\": \"releases\", "			\
	"\"repositories\": [\"base/**\"], \"tags\": [\"v*\", \"stable\"]}, " \
	"{\"id\": \"hub-latest\", \"repositories\": [\"library/*\"], "	\
	"\"upstreams\": [\"hub\"], \"tags\": [\"latest\"]}]"

/* Principals the table refers to by index. */
enum who {
	ANON_10,	/* anonymous from 10.1.2.3 */
	ANON_LO,	/* anonymous from 127.0.0.1 */
	ANON_MAPPED,	/* anonymous from ::ffff:10.1.2.3 */
	ANON_V6,	/* anonymous from fd12::1 */
	ANON_V6_OUT,	/* anonymous from 2001:db8::1 */
	BOB,		/* token "bob", groups platform, local */
	CI,		/* oidc "ci", iss=https://ci, repository=app,web */
	CI_EVIL,	/* oidc, iss=https://evil, repository=app */
	CI_HOSTILE,	/* oidc, iss=https://ci, repository=../x,* */
	NODE,		/* mtls CN=node1,O=Corp */
	NODE_ESC,	/* mtls CN=evil\,O=Corp,O=Other */
	NODE_ADMIN,	/* mtls CN=admin,O=Corp\, Inc */
	NODE_OTHER,	/* mtls CN=node1,O=Other */
	ROOT,		/* secret "root" */
	OPS,		/* token "carol", group ops */
	TEAM,		/* oidc "t", team=t-red */
	TEAM_BAD,	/* oidc "t", team=red */
	ALICE,		/* token "alice" */
	DOTDOT,		/* token "..", from 10.9.1.1 */
	QUAR,		/* token "bob", group platform, from 10.9.1.1 */
	NWHO
};

static struct principal		 who[NWHO];
static const char *const	 g_platform[] = { "platform", "local" };
static const char *const	 g_ops[] = { "ops" };
static const struct principal_claim c_ci[] = {
	{ "iss", "https://ci" }, { "repository", "app" },
	{ "repository", "web" }
};
static const struct principal_claim c_evil[] = {
	{ "iss", "https://evil" }, { "repository", "app" }
};
static const struct principal_claim c_hostile[] = {
	{ "iss", "https://ci" }, { "repository", "../x" },
	{ "repository", "*" }
};
static const struct principal_claim c_team[] = { { "team", "t-red" } };
static const struct principal_claim c_team_bad[] = { { "team", "red" } };

static void
set_ip(struct principal *p, const char *ip)
{
	if (inet_pton(AF_INET, ip, p->addr) == 1)
		p->af = AF_INET;
	else {
		assert_int_equal(inet_pton(AF_INET6, ip, p->addr), 1);
		p->af = AF_INET6;
	}
}

static void
setup_who(void)
{
	size_t	 i;

	memset(who, 0, sizeof(who));
	for (i = 0; i < NWHO; i++) {
		who[i].subject = "";
		set_ip(&who[i], "192.0.2.1");
	}
	set_ip(&who[ANON_10], "10.1.2.3");
	set_ip(&who[ANON_LO], "127.0.0.1");
	set_ip(&who[ANON_MAPPED], "::ffff:10.1.2.3");
	set_ip(&who[ANON_V6], "fd12::1");
	set_ip(&who[ANON_V6_OUT], "2001:db8::1");
	who[BOB].method = AUTH_TOKEN;
	who[BOB].subject = "bob";
	who[BOB].groups = g_platform;
	who[BOB].ngroups = 2;
	who[CI].method = AUTH_OIDC;
	who[CI].subject = "ci";
	who[CI].claims = c_ci;
	who[CI].nclaims = 3;
	who[CI_EVIL] = who[CI];
	who[CI_EVIL].claims = c_evil;
	who[CI_EVIL].nclaims = 2;
	who[CI_HOSTILE] = who[CI];
	who[CI_HOSTILE].claims = c_hostile;
	who[NODE].method = AUTH_MTLS;
	who[NODE].subject = who[NODE].mtls_subject = "CN=node1,O=Corp";
	who[NODE_ESC].method = AUTH_MTLS;
	who[NODE_ESC].subject = who[NODE_ESC].mtls_subject =
	    "CN=evil\\,O=Corp,O=Other";
	who[NODE_ADMIN].method = AUTH_MTLS;
	who[NODE_ADMIN].subject = who[NODE_ADMIN].mtls_subject =
	    "CN=admin,O=Corp\\, Inc";
	who[NODE_OTHER].method = AUTH_MTLS;
	who[NODE_OTHER].subject = who[NODE_OTHER].mtls_subject =
	    "CN=node1,O=Other";
	who[ROOT].method = AUTH_SECRET;
	who[ROOT].subject = "root";
	who[OPS].method = AUTH_TOKEN;
	who[OPS].subject = "carol";
	who[OPS].groups = g_ops;
	who[OPS].ngroups = 1;
	who[TEAM].method = AUTH_OIDC;
	who[TEAM].subject = "t";
	who[TEAM].claims = c_team;
	who[TEAM].nclaims = 1;
	who[TEAM_BAD] = who[TEAM];
	who[TEAM_BAD].claims = c_team_bad;
	who[ALICE].method = AUTH_TOKEN;
	who[ALICE].subject = "alice";
	who[DOTDOT].method = AUTH_TOKEN;
	who[DOTDOT].subject = "..";
	set_ip(&who[DOTDOT], "10.9.1.1");
	who[QUAR] = who[BOB];
	set_ip(&who[QUAR], "10.9.1.1");
}

struct decide_case {
	enum who	 who;
	const char	*upstream;
	const char	*repo;
	enum pol_action	 action;
	int		 allow;
	const char	*rule;	/* NULL: default deny */
};

static const struct decide_case decide_cases[] = {
	/* Anonymous: by network only. */
	{ ANON_10, "hub", "library/alpine", POL_PULL, 1, "pull-library" },
	{ ANON_10, "hub", "library/alpine/x", POL_PULL, 1, "pull-library" },
	{ ANON_10, "hub", "library", POL_PULL, 1, "pull-library" },
	{ ANON_10, "hub", "libraryx/alpine", POL_PULL, 0, NULL },
	{ ANON_10, "local", "library/alpine", POL_PULL, 0, NULL },
	{ ANON_10, NULL, "library/alpine", POL_PULL, 0, NULL },
	{ ANON_10, "hub", "library/alpine", POL_PUSH, 0, "no-anon-write" },
	{ ANON_10, "hub", "library/alpine", POL_DELETE, 0, "no-anon-write" },
	{ ANON_10, "hub", "library/bad", POL_PULL, 0, "bad-lib" },
	{ ANON_10, "hub", "library/secret", POL_PULL, 0, "no-secret" },
	{ ANON_10, "hub", "library/secret/x", POL_PULL, 0, "no-secret" },
	{ ANON_10, "hub", "library/secrets", POL_PULL, 1, "pull-library" },
	{ ANON_10, "hub", NULL, POL_CATALOG, 0, NULL },
	{ ANON_10, NULL, NULL, POL_ADMIN, 0, NULL },
	{ ANON_LO, "hub", "library/alpine", POL_PULL, 0, NULL },
	{ ANON_LO, "hub", "library/alpine", POL_PUSH, 0, "no-anon-write" },
	{ ANON_MAPPED, "hub", "library/alpine", POL_PULL, 1,
	  "pull-library" },
	{ ANON_MAPPED, "hub", "library/bad", POL_PULL, 0, "bad-lib" },
	{ ANON_V6, "hub", "v6/a", POL_PULL, 1, "v6" },
	{ ANON_V6, "hub", "v6/a/b", POL_PULL, 0, NULL },
	{ ANON_V6, "hub", "v6/a", POL_PUSH, 0, "no-anon-write" },
	{ ANON_V6, "hub", "library/alpine", POL_PULL, 0, NULL },
	{ ANON_V6, "hub", "library/bad", POL_PULL, 0, "bad-lib" },
	{ ANON_V6_OUT, "hub", "v6/a", POL_PULL, 0, NULL },
	{ ANON_V6_OUT, "hub", "library/bad", POL_PULL, 0, "bad-lib" },
	/* A token with groups. */
	{ BOB, "hub", "base/debian", POL_PUSH, 1, "platform" },
	{ BOB, "local", "base/debian", POL_PUSH, 1, "platform" },
	{ BOB, "hub", "base", POL_PULL, 1, "platform" },
	{ BOB, "hub", "base/debian", POL_DELETE, 0, NULL },
	{ BOB, "hub", "basement/x", POL_PUSH, 0, NULL },
	{ BOB, "hub", "base/secret/x", POL_PULL, 0, "no-secret" },
	{ BOB, "hub", "base/a/secret", POL_PUSH, 0, "no-secret" },
	{ BOB, "hub", "library/alpine", POL_PULL, 1, "pull-library" },
	{ BOB, "hub", "library/alpine", POL_PUSH, 0, NULL },
	{ BOB, "hub", "library/bad", POL_PULL, 0, "bad-lib" },
	{ BOB, "local", "library/bad", POL_PULL, 1, "local-any" },
	{ BOB, "local", "anything/at/all", POL_PULL, 1, "local-any" },
	{ BOB, "local", "anything/secret", POL_PULL, 0, "no-secret" },
	{ BOB, "hub", "anything/at/all", POL_PULL, 0, NULL },
	{ BOB, "hub", "users/bob/app", POL_PUSH, 1, "home" },
	{ BOB, "hub", "users/bob/app", POL_DELETE, 1, "home" },
	{ BOB, "hub", "users/bob", POL_PULL, 1, "home" },
	{ BOB, "hub", "users/alice/app", POL_PULL, 0, NULL },
	{ BOB, "hub", "users/bobby/app", POL_PULL, 0, NULL },
	{ BOB, "hub", NULL, POL_CATALOG, 1, "catalog" },
	{ BOB, NULL, NULL, POL_ADMIN, 0, NULL },
	/* Quarantine: a deny by network beats the group allow. */
	{ QUAR, "hub", "base/legacy/x", POL_PULL, 0, "quarantine" },
	{ QUAR, "hub", "base/legacy", POL_PUSH, 0, "quarantine" },
	{ QUAR, "hub", "base/current", POL_PUSH, 1, "platform" },
	/* Claims: equals on iss, template on repository. */
	{ CI, "hub", "ci/app/img", POL_PUSH, 1, "ci" },
	{ CI, "hub", "ci/web/img", POL_PUSH, 1, "ci" },
	{ CI, "hub", "ci/web", POL_PULL, 1, "ci" },
	{ CI, "hub", "ci/db/img", POL_PUSH, 0, NULL },
	{ CI, "hub", "ci/app/img", POL_DELETE, 0, NULL },
	{ CI, "hub", "ci/app/secret", POL_PULL, 0, "no-secret" },
	{ CI, "hub", "users/ci/x", POL_PUSH, 1, "home" },
	{ CI_EVIL, "hub", "ci/app/img", POL_PUSH, 0, NULL },
	{ CI_HOSTILE, "hub", "ci/../x/img", POL_PUSH, 0, NULL },
	{ CI_HOSTILE, "hub", "ci/x/img", POL_PUSH, 0, NULL },
	{ CI_HOSTILE, "hub", "ci/app/img", POL_PUSH, 0, NULL },
	/* mTLS: exact, glob within one value, escaped commas. */
	{ NODE, "hub", "mirror/library/alpine", POL_PULL, 1, "nodes" },
	{ NODE, "hub", "mirror/x", POL_PUSH, 0, NULL },
	{ NODE, "hub", "library/alpine", POL_PULL, 1, "pull-library" },
	{ NODE_ESC, "hub", "mirror/x", POL_PULL, 0, NULL },
	{ NODE_ADMIN, "hub", "mirror/x", POL_PULL, 1, "nodes" },
	{ NODE_OTHER, "hub", "mirror/x", POL_PULL, 0, NULL },
	/* Admin and catalog name no repository. */
	{ ROOT, NULL, NULL, POL_ADMIN, 1, "ops" },
	{ ROOT, "hub", NULL, POL_ADMIN, 1, "ops" },
	{ OPS, NULL, NULL, POL_ADMIN, 1, "ops" },
	{ OPS, "hub", NULL, POL_CATALOG, 1, "catalog" },
	/* A rule without repositories covers every one. */
	{ OPS, "hub", "library/alpine", POL_ADMIN, 1, "ops" },
	/* "*" on a scoped rule never grants admin or catalog... */
	{ ALICE, NULL, NULL, POL_CATALOG, 1, "catalog" },
	{ DOTDOT, NULL, NULL, POL_ADMIN, 0, NULL },
	/* ... but a deny over "**" does cover them. */
	{ ANON_10, "local", NULL, POL_PUSH, 0, "no-anon-write" },
	{ BOB, "local", NULL, POL_PULL, 1, "local-any" },
	{ BOB, "hub", NULL, POL_PULL, 0, NULL },
	{ ALICE, NULL, NULL, POL_ADMIN, 0, NULL },
	/* Claim globs. */
	{ TEAM, "hub", "team/red/app", POL_PULL, 1, "teams" },
	{ TEAM, "hub", "team/red", POL_PULL, 1, "teams" },
	{ TEAM, "hub", "team", POL_PULL, 0, NULL },
	{ TEAM_BAD, "hub", "team/red/app", POL_PULL, 0, NULL },
	/* A user with two patterns. */
	{ ALICE, "hub", "x/a/b", POL_PULL, 1, "alice" },
	{ ALICE, "hub", "y/a", POL_DELETE, 1, "alice" },
	{ ALICE, "hub", "y/ab", POL_PULL, 0, NULL },
	{ ALICE, "hub", "x/a", POL_PUSH, 0, NULL },
	/* A hostile subject never fills its template. */
	{ DOTDOT, "hub", "users/../x", POL_PULL, 0, NULL },
	{ DOTDOT, "hub", "users/x", POL_PULL, 0, NULL },
	/* Not one action. */
	{ BOB, "hub", "base/x", POL_PULL | POL_PUSH, 0, NULL },
	{ BOB, "hub", "base/x", 0, 0, NULL },
};

static char *
build_config(int reverse, const char *extra)
{
	char	*buf, *p;
	size_t	 i, len = 65536;

	buf = p = malloc(len);
	assert_non_null(buf);
	p += snprintf(p, len, "{" UPSTREAMS ", \"policy\": {\"rules\": [");
	for (i = 0; i < NRULES; i++)
		p += snprintf(p, buf + len - p, "%s%s", i > 0 ? ", " : "",
		    rules_json[reverse ? NRULES - 1 - i : i]);
	snprintf(p, buf + len - p, "]%s%s}}", extra != NULL ? ", " : "",
	    extra != NULL ? extra : "");
	return buf;
}

static struct config *
load(const char *json)
{
	struct config	*cfg;
	char		*cause = NULL;

	if ((cfg = config_load_string(json, NULL, &cause)) == NULL)
		fail_msg("config: %s", cause);
	return cfg;
}

static void
run_decide_table(struct config *cfg)
{
	const struct decide_case	*c;
	struct pol_result		 res;
	size_t				 i;
	int				 got;

	for (i = 0; i < sizeof(decide_cases) / sizeof(decide_cases[0]);
	    i++) {
		c = &decide_cases[i];
		got = policy_decide(cfg->policy, &who[c->who], c->upstream,
		    c->repo, c->action, &res);
		if (got != c->allow || res.allow != c->allow ||
		    (c->rule == NULL) != (res.rule == NULL) ||
		    (c->rule != NULL && strcmp(c->rule, res.rule) != 0))
			fail_msg("case %zu (who %d, %s, %s, %d): got %d by %s, "
			    "want %d by %s", i, c->who,
			    c->upstream ? c->upstream : "-",
			    c->repo ? c->repo : "-", c->action, got,
			    res.rule ? res.rule : "default", c->allow,
			    c->rule ? c->rule : "default");
		assert_int_equal(res.why, c->rule == NULL ? POL_WHY_DEFAULT :
		    c->allow ? POL_WHY_ALLOW : POL_WHY_DENY);
	}
}

static void
test_decide(void **state)
{
	struct config	*cfg;
	char		*json;

	(void)state;
	setup_who();
	json = build_config(0, EXTRA);
	cfg = load(json);
	assert_int_equal(policy_nrules(cfg->policy), NRULES);
	run_decide_table(cfg);
	config_unref(cfg);
	free(json);
}

/*
 * policy_any_allow(), the base endpoint's question: an allow rule for the
 * action matches on the upstream, whatever its repositories; deny rules
 * are not consulted.
 */
static void
test_any_allow(void **state)
{
	static const struct {
		int		 who;
		const char	*upstream;
		enum pol_action	 action;
		int		 want;
	} cases[] = {
		{ ANON_10, "hub", POL_PULL, 1 },	/* pull-library */
		{ ANON_10, "local", POL_PULL, 0 },	/* it is hub's only */
		{ ANON_10, "hub", POL_PUSH, 0 },
		{ ANON_LO, "hub", POL_PULL, 0 },	/* no rule names it */
		{ ANON_LO, "local", POL_PULL, 0 },
		{ ANON_V6, "local", POL_PULL, 1 },	/* v6, any upstream */
		{ ANON_V6_OUT, "hub", POL_PULL, 0 },
		{ NODE, "hub", POL_PULL, 1 },		/* authenticated */
		{ NODE, "local", POL_PULL, 1 },		/* nodes: mtls glob */
		/* home: a template, unresolved, still counts */
		{ NODE_OTHER, "local", POL_PULL, 1 },
		{ QUAR, "hub", POL_PULL, 1 },		/* denies not asked */
		{ BOB, "hub", POL_CATALOG, 1 },
		{ ANON_10, "hub", POL_CATALOG, 0 },
		{ ANON_10, "hub", (enum pol_action)0x40, 0 },
	};
	struct config	*cfg;
	char		*json;
	size_t		 i;

	(void)state;
	setup_who();
	json = build_config(0, NULL);
	cfg = load(json);
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		if (policy_any_allow(cfg->policy, &who[cases[i].who],
		    cases[i].upstream, cases[i].action) != cases[i].want)
			fail_msg("any_allow case %zu: want %d", i,
			    cases[i].want);
	assert_int_equal(policy_any_allow(NULL, &who[NODE], "hub", POL_PULL),
	    0);
	config_unref(cfg);
	free(json);
}

struct pats_seen {
	char	 buf[2048];
	size_t	 n;
};

static void
pats_collect(void *arg, const char *rule, const char *pat,
    const char *const *ups, size_t nups)
{
	struct pats_seen	*ps = arg;
	size_t			 len = strlen(ps->buf);

	snprintf(ps->buf + len, sizeof(ps->buf) - len, "%s=%s@%s;", rule, pat,
	    nups > 0 ? ups[0] : "*");
	ps->n++;
}

/*
 * policy_allow_patterns(), the landing page's list: each allow rule whose
 * subjects match, pattern by pattern as written, with its upstreams; a
 * rule of another person or another action is left out.
 */
static void
test_allow_patterns(void **state)
{
	struct config		*cfg;
	struct pats_seen	 ps;
	char			*json;
	size_t			 n;

	(void)state;
	setup_who();
	json = build_config(0, NULL);
	cfg = load(json);
	memset(&ps, 0, sizeof(ps));
	n = policy_allow_patterns(cfg->policy, &who[BOB], POL_PULL,
	    pats_collect, &ps);
	assert_int_equal(n, ps.n);
	assert_true(n >= 3);
	assert_non_null(strstr(ps.buf, "pull-library=library/**@hub;"));
	assert_non_null(strstr(ps.buf, "platform=base/**@*;"));
	assert_non_null(strstr(ps.buf, "home=users/${subject}/**@*;"));
	assert_null(strstr(ps.buf, "alice="));
	assert_null(strstr(ps.buf, "nodes="));
	memset(&ps, 0, sizeof(ps));
	(void)policy_allow_patterns(cfg->policy, &who[BOB], POL_PUSH,
	    pats_collect, &ps);
	assert_non_null(strstr(ps.buf, "platform=base/**@*;"));
	assert_null(strstr(ps.buf, "pull-library="));
	assert_int_equal(policy_allow_patterns(NULL, &who[BOB], POL_PULL,
	    pats_collect, &ps), 0);
	config_unref(cfg);
	free(json);
}

/* The same table with the rules in reverse: the order never matters. */
static void
test_order(void **state)
{
	struct config	*cfg;
	char		*json;

	(void)state;
	setup_who();
	json = build_config(1, NULL);
	cfg = load(json);
	run_decide_table(cfg);
	config_unref(cfg);
	free(json);
}

/* The explain API agrees with policy_decide and says why not. */
static void
test_explain(void **state)
{
	struct config	*cfg;
	char		*json;
	size_t		 i, n;
	enum pol_miss	 want[NRULES];
	const char	*id;

	(void)state;
	setup_who();
	json = build_config(0, NULL);
	cfg = load(json);
	n = policy_nrules(cfg->policy);
	for (i = 0; i < n; i++)
		want[i] = POL_MISS_ACTION;
	/* BOB pushes base/secret/x on hub. */
	for (i = 0; i < n; i++) {
		id = policy_rule_id(cfg->policy, i);
		if (strcmp(id, "platform") == 0 ||
		    strcmp(id, "no-secret") == 0)
			want[i] = POL_MATCHED;
		else if (strcmp(id, "home") == 0)
			want[i] = POL_MISS_REPOSITORY;
		else if (strcmp(id, "ci") == 0)
			want[i] = POL_MISS_REPOSITORY;
		else if (strcmp(id, "no-anon-write") == 0)
			want[i] = POL_MISS_SUBJECT;
		else if (strcmp(id, "quarantine") == 0)
			want[i] = POL_MISS_REPOSITORY;
		assert_int_equal(policy_explain_rule(cfg->policy, i, &who[BOB],
		    "hub", "base/secret/x", POL_PUSH), want[i]);
	}
	assert_int_equal(policy_rule_effect(cfg->policy, 0), POL_EFFECT_ALLOW);
	assert_int_equal(policy_rule_effect(cfg->policy, n - 1),
	    POL_EFFECT_DENY);
	/* A template without a value, where a value could have matched. */
	assert_int_equal(policy_explain_rule(cfg->policy, 2, &who[BOB], "hub",
	    "ci/app/x", POL_PUSH), POL_MISS_TEMPLATE);
	assert_int_equal(policy_explain_rule(cfg->policy, 3, &who[ANON_10],
	    "hub", "users/bob/x", POL_PULL), POL_MISS_TEMPLATE);
	/* An upstream the rule is not limited to. */
	assert_int_equal(policy_explain_rule(cfg->policy, 0, &who[BOB],
	    "local", "library/x", POL_PULL), POL_MISS_UPSTREAM);
	assert_string_equal(policy_miss_name(POL_MISS_TEMPLATE),
	    "template value unusable");
	assert_string_equal(principal_method_name(AUTH_MTLS), "mtls");
	assert_string_equal(principal_method_name(AUTH_ANONYMOUS),
	    "anonymous");
	assert_string_equal(policy_action_name(POL_CATALOG), "catalog");
	assert_null(policy_action_name(POL_PULL | POL_PUSH));
	assert_int_equal(policy_action_parse("delete"), POL_DELETE);
	assert_int_equal(policy_action_parse("*"), -1);
	config_unref(cfg);
	free(json);
}

static void
test_blocked_immutable(void **state)
{
	struct config	*cfg;
	char		*json;
	const char	*id;

	(void)state;
	json = build_config(0, EXTRA);
	cfg = load(json);
	assert_int_equal(policy_blocked(cfg->policy, D1, &id), 1);
	assert_string_equal(id, D1);
	assert_null(policy_blocked_reason(cfg->policy, D1));
	assert_int_equal(policy_blocked(cfg->policy, D2, &id), 1);
	assert_string_equal(policy_blocked_reason(cfg->policy, D2),
	    "CVE-2024-0001");
	assert_int_equal(policy_blocked(cfg->policy, D3, &id), 0);
	assert_int_equal(policy_blocked(cfg->policy, "sha256:11", &id), 0);
	assert_int_equal(policy_blocked(cfg->policy, NULL, &id), 0);

	assert_int_equal(policy_immutable(cfg->policy, "hub", "base/debian",
	    "v1.2", &id), 1);
	assert_string_equal(id, "releases");
	assert_int_equal(policy_immutable(cfg->policy, "local", "base",
	    "stable", &id), 1);
	assert_int_equal(policy_immutable(cfg->policy, "hub", "base/debian",
	    "latest", &id), 0);
	assert_int_equal(policy_immutable(cfg->policy, "hub", "base/debian",
	    "stable2", &id), 0);
	assert_int_equal(policy_immutable(cfg->policy, "hub", "other/x",
	    "v1", &id), 0);
	assert_int_equal(policy_immutable(cfg->policy, "hub",
	    "library/alpine", "latest", &id), 1);
	assert_string_equal(id, "hub-latest");
	assert_int_equal(policy_immutable(cfg->policy, "local",
	    "library/alpine", "latest", &id), 0);
	assert_int_equal(policy_immutable(cfg->policy, "hub",
	    "library/a/b", "latest", &id), 0);
	config_unref(cfg);
	free(json);
}

/* Every compile error, each named by its JSON path, in one pass. */
struct error_case {
	const char	*policy;	/* the "policy" object's members */
	const char	*want[6];	/* lines expected in the errors */
};

#define R(x)	"\"rules\": [" x "]"
#define RULE(fields) "{\"id\": \"r\", \"effect\": \"allow\", " fields "}"

static const struct error_case error_cases[] = {
	{ R(RULE("\"repositories\": [\"x\"], \"subjects\": "
	  "[\"mtls:CN=J\xc3\xa9r\xc3\xb4me,O=Corp\"], "
	  "\"actions\": [\"pull\"]")),
	  { "/policy/rules/0/subjects/0: mtls subject holds a non-ASCII "
	    "byte" } },
	{ R(RULE("\"repositories\": [\"users/${subject}-*\"], "
	  "\"subjects\": [\"authenticated\"], \"actions\": [\"pull\"]")),
	  { "/policy/rules/0/repositories/0: a template may not share its "
	    "segment with '*' or '?'" } },
	{ R(RULE("\"repositories\": [\"a**b\"], \"subjects\": "
	  "[\"anonymous\"], \"actions\": [\"pull\"]")),
	  { "/policy/rules/0/repositories/0: '**' must be a whole segment" } },
	{ R(RULE("\"repositories\": [\"ok/**\", \"x/${nope}\"], "
	  "\"subjects\": [\"anonymous\"], \"actions\": [\"pull\"]")),
	  { "/policy/rules/0/repositories/1: unknown template variable" } },
	{ R(RULE("\"repositories\": [\"x/${subject\"], "
	  "\"subjects\": [\"anonymous\"], \"actions\": [\"pull\"]")),
	  { "/policy/rules/0/repositories/0: unterminated '${'" } },
	{ R(RULE("\"repositories\": [\"x\"], \"subjects\": [\"anonymous\"], "
	  "\"actions\": [\"pull\", \"fly\"]")),
	  { "/policy/rules/0/actions/1: unknown action" } },
	{ R(RULE("\"repositories\": [\"x\"], \"subjects\": [\"anonymous\"], "
	  "\"actions\": []")),
	  { "/policy/rules/0/actions: needs at least one action" } },
	{ R(RULE("\"subjects\": [\"anonymous\"], \"actions\": [\"pull\"]")),
	  { "/policy/rules/0/repositories: is required unless actions are "
	    "only catalog and admin" } },
	{ R(RULE("\"repositories\": [\"x\"], \"actions\": [\"pull\"]")),
	  { "/policy/rules/0/subjects: needs at least one subject" } },
	{ R(RULE("\"repositories\": [\"x\"], \"subjects\": [\"wizard\", "
	  "\"user:\", \"cidr:10.0.0.1/8\", \"cidr:10.0.0.0/33\", "
	  "\"cidr:fd00::/129\", \"mtls:nodn\"], \"actions\": [\"pull\"]")),
	  { "/policy/rules/0/subjects/0: unknown subject",
	    "/policy/rules/0/subjects/1: user: and group: need a name",
	    "/policy/rules/0/subjects/2: cidr has bits set after the prefix",
	    "/policy/rules/0/subjects/3: cidr prefix length out of range",
	    "/policy/rules/0/subjects/4: cidr prefix length out of range",
	    "/policy/rules/0/subjects/5: mtls subject must be an RFC 2253" } },
	{ R(RULE("\"repositories\": [\"x\"], \"subjects\": [{\"claim\": "
	  "\"a\"}, {\"claim\": \"a\", \"equals\": \"x\", \"glob\": \"y\"}, "
	  "{\"claim\": \"a\", \"glob\": \"a**\"}, {\"equals\": \"x\"}, "
	  "{\"match\": \"anonymous\", \"claim\": \"a\", \"equals\": \"b\"}, "
	  "5], \"actions\": [\"pull\"]")),
	  { "/policy/rules/0/subjects/0: a claim condition needs exactly one",
	    "/policy/rules/0/subjects/1: a claim condition needs exactly one",
	    "/policy/rules/0/subjects/2/glob: '**' must be a whole segment",
	    "/policy/rules/0/subjects/3: a claim condition needs \"claim\"",
	    "/policy/rules/0/subjects/4: a subject is either a string",
	    "/policy/rules/0/subjects/5: must be an object" } },
	{ R(RULE("\"repositories\": [\"x\"], \"upstreams\": [\"hub\", "
	  "\"nope\"], \"subjects\": [\"anonymous\"], \"actions\": [\"pull\"]")),
	  { "/policy/rules/0/upstreams/1: no upstream has this name" } },
	{ R("{\"effect\": \"allow\", \"repositories\": [\"x\"], "
	  "\"subjects\": [\"anonymous\"], \"actions\": [\"pull\"]}, "
	  "{\"id\": \"bad id\", \"effect\": \"maybe\", \"repositories\": "
	  "[\"x\"], \"subjects\": [\"anonymous\"], \"actions\": [\"pull\"]}"),
	  { "/policy/rules/0/id: is required",
	    "/policy/rules/1/effect: must be one of: allow, deny",
	    "/policy/rules/1/id: an id holds only" } },
	{ R(RULE("\"repositories\": [\"x\"], \"subjects\": [\"anonymous\"], "
	  "\"actions\": [\"pull\"]") ", "
	  RULE("\"repositories\": [\"y\"], \"subjects\": [\"anonymous\"], "
	  "\"actions\": [\"pull\"]")) ", \"immutable_tags\": [{\"id\": \"r\", "
	  "\"repositories\": [\"x/${subject}\"], \"tags\": [\"a/b\"]}]",
	  { "/policy/rules/1/id: duplicate id",
	    "/policy/immutable_tags/0/id: duplicate id",
	    "/policy/immutable_tags/0/repositories/0: templates are not "
	    "allowed here",
	    "/policy/immutable_tags/0/tags/0: a tag glob has no '/'" } },
	{ "\"blocked_digests\": [\"sha256:abc\", {\"reason\": \"x\"}, 5, "
	  "\"" D1 "\", \"" D1 "\", \"SHA256:11\"]",
	  { "/policy/blocked_digests/0: not a digest",
	    "/policy/blocked_digests/1/digest: is required",
	    "/policy/blocked_digests/2: must be an object",
	    "/policy/blocked_digests: a digest is listed twice",
	    "/policy/blocked_digests/5: not a digest" } },
	{ "\"rules\": [], \"max_rules\": 0, \"bogus\": 1",
	  { "/policy/max_rules: must be between 1 and 1000000",
	    "/policy/bogus: unknown key" } },
	{ R(RULE("\"repositories\": [\"x\"], \"subjects\": [\"anonymous\"], "
	  "\"actions\": [\"pull\"]") ", " RULE("\"repositories\": [\"x\"], "
	  "\"subjects\": [\"anonymous\"], \"actions\": [\"pull\"]"))
	  ", \"max_rules\": 1",
	  { "/policy/rules: more rules than policy/max_rules" } },
	{ "\"blocked_digests\": [\"" D1 "\", \"" D2 "\"], "
	  "\"max_blocked_digests\": 1",
	  { "/policy/blocked_digests: more digests than "
	    "policy/max_blocked_digests" } },
	{ R(RULE("\"repositories\": [\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"], \"subjects\": "
	  "[\"anonymous\"], \"actions\": [\"pull\"]"))
	  ", \"max_pattern_bytes\": 64",
	  { "/policy/rules/0/repositories/0: pattern longer than "
	    "policy/max_pattern_bytes" } },
	{ "\"rules\": 5, \"immutable_tags\": [{\"id\": \"i\"}]",
	  { "/policy/rules: must be an array",
	    "/policy/immutable_tags/0/repositories: needs at least one",
	    "/policy/immutable_tags/0/tags: needs at least one tag glob" } },
};

static void
test_errors(void **state)
{
	struct config	*cfg;
	char		 json[4096], *cause = NULL;
	size_t		 i, j;

	(void)state;
	for (i = 0; i < sizeof(error_cases) / sizeof(error_cases[0]); i++) {
		snprintf(json, sizeof(json), "{" UPSTREAMS ", \"policy\": "
		    "{%s}}", error_cases[i].policy);
		cfg = config_load_string(json, NULL, &cause);
		if (cfg != NULL)
			fail_msg("case %zu loaded", i);
		for (j = 0; j < 6 && error_cases[i].want[j] != NULL; j++)
			if (strstr(cause, error_cases[i].want[j]) == NULL)
				fail_msg("case %zu: no '%s' in:\n%s", i,
				    error_cases[i].want[j], cause);
		free(cause);
		cause = NULL;
	}
}

/* No policy section: the empty policy, which denies everything. */
static void
test_empty(void **state)
{
	struct config		*cfg;
	struct pol_result	 res;

	(void)state;
	setup_who();
	cfg = load("{" UPSTREAMS "}");
	assert_non_null(cfg->policy);
	assert_null(cfg->policy_src);
	assert_int_equal(policy_nrules(cfg->policy), 0);
	assert_int_equal(policy_decide(cfg->policy, &who[ROOT], "hub",
	    "library/alpine", POL_PULL, &res), 0);
	assert_int_equal(res.why, POL_WHY_DEFAULT);
	assert_null(res.rule);
	assert_int_equal(policy_decide(cfg->policy, &who[ROOT], NULL, NULL,
	    POL_ADMIN, &res), 0);
	assert_int_equal(policy_blocked(cfg->policy, D1, NULL), 0);
	assert_int_equal(policy_immutable(cfg->policy, "hub", "a", "b",
	    NULL), 0);
	config_unref(cfg);
	cfg = load("{" UPSTREAMS ", \"policy\": {}}");
	assert_int_equal(policy_nrules(cfg->policy), 0);
	config_unref(cfg);
}

static void
write_file(const char *path, const char *s)
{
	FILE	*f;

	assert_non_null(f = fopen(path, "w"));
	fputs(s, f);
	fclose(f);
}

/* The policy in a file named relative to the config; bounded in size. */
static void
test_file(void **state)
{
	struct config		*cfg, *cfg2;
	struct pol_result	 res;
	char			 dir[] = "/tmp/test_policy.XXXXXX";
	char			 conf[256], pol[256], json[1024], *cause;
	char			*big;

	(void)state;
	setup_who();
	assert_non_null(mkdtemp(dir));
	snprintf(conf, sizeof(conf), "%s/gw.json", dir);
	snprintf(pol, sizeof(pol), "%s/policy.json", dir);
	snprintf(json, sizeof(json), "{" UPSTREAMS ", \"policy\": "
	    "{\"file\": \"policy.json\"}}");
	write_file(conf, json);
	write_file(pol, "{\"rules\": [{\"id\": \"f\", \"effect\": \"allow\", "
	    "\"repositories\": [\"library/**\"], \"subjects\": "
	    "[\"authenticated\"], \"actions\": [\"pull\"]}], "
	    "\"blocked_digests\": [\"" D3 "\"]}");
	if ((cfg = config_load(conf, &cause)) == NULL)
		fail_msg("%s", cause);
	assert_int_equal(policy_decide(cfg->policy, &who[BOB], "hub",
	    "library/alpine", POL_PULL, &res), 1);
	assert_string_equal(res.rule, "f");
	assert_int_equal(policy_blocked(cfg->policy, D3, NULL), 1);

	/* A changed file reloads; the reload check accepts it. */
	write_file(pol, "{\"rules\": [{\"id\": \"g\", \"effect\": \"deny\", "
	    "\"repositories\": [\"library/**\"], \"subjects\": "
	    "[\"authenticated\"], \"actions\": [\"pull\"]}]}");
	if ((cfg2 = config_load(conf, &cause)) == NULL)
		fail_msg("%s", cause);
	if (config_reload_check(cfg, cfg2, &cause) == -1)
		fail_msg("%s", cause);
	assert_int_equal(policy_decide(cfg2->policy, &who[BOB], "hub",
	    "library/alpine", POL_PULL, &res), 0);
	assert_string_equal(res.rule, "g");
	/* The old snapshot still decides as before. */
	assert_int_equal(policy_decide(cfg->policy, &who[BOB], "hub",
	    "library/alpine", POL_PULL, &res), 1);
	config_unref(cfg2);

	/* Errors in the file are named FILE#/pointer. */
	write_file(pol, "{\"rules\": [{\"id\": \"g\", \"effect\": \"deny\", "
	    "\"repositories\": [\"a**\"], \"subjects\": [\"x\"], "
	    "\"actions\": [\"pull\"]}], \"max_rules\": 3}");
	assert_null(config_load(conf, &cause));
	assert_non_null(strstr(cause, "policy.json#/rules/0/repositories/0: "
	    "'**' must be a whole segment"));
	assert_non_null(strstr(cause, "policy.json#/rules/0/subjects/0: "
	    "unknown subject"));
	assert_non_null(strstr(cause, "policy.json#/max_rules: unknown key"));
	free(cause);

	/* Bad JSON: file, line and column. */
	write_file(pol, "{\"rules\": [}");
	assert_null(config_load(conf, &cause));
	assert_non_null(strstr(cause, "policy.json:1:"));
	free(cause);

	/* Inline rules and a file at once. */
	snprintf(json, sizeof(json), "{" UPSTREAMS ", \"policy\": "
	    "{\"rules\": [], \"file\": \"policy.json\"}}");
	write_file(conf, json);
	assert_null(config_load(conf, &cause));
	assert_non_null(strstr(cause, "/policy/file: rules, blocked_digests "
	    "and immutable_tags go either inline or in the file"));
	free(cause);

	/* Above max_file_bytes: refused before reading. */
	snprintf(json, sizeof(json), "{" UPSTREAMS ", \"policy\": "
	    "{\"max_file_bytes\": 1024, \"file\": \"policy.json\"}}");
	write_file(conf, json);
	big = calloc(1, 2048);
	memset(big, ' ', 2047);
	big[0] = '{';
	big[2046] = '}';
	write_file(pol, big);
	assert_null(config_load(conf, &cause));
	assert_non_null(strstr(cause, "/policy/file: larger than "
	    "policy/max_file_bytes"));
	free(cause);
	big[1000] = '}';
	big[1001] = '\0';
	write_file(pol, big);
	if ((cfg2 = config_load(conf, &cause)) == NULL)
		fail_msg("%s", cause);
	config_unref(cfg2);
	free(big);

	/* A missing file. */
	unlink(pol);
	assert_null(config_load(conf, &cause));
	assert_non_null(strstr(cause, "/policy/file: cannot read"));
	free(cause);
	unlink(conf);
	rmdir(dir);
	config_unref(cfg);
}

/* The reference for mTLS globs: '*' is any run without , + = or \\. */
static int
dn_ref(const char *p, const char *s)
{
	if (*p == '\0')
		return *s == '\0';
	if (*p == '*') {
		if (dn_ref(p + 1, s))
			return 1;
		return *s != '\0' && strchr(",+=\\", *s) == NULL &&
		    dn_ref(p, s + 1);
	}
	return *s == *p && dn_ref(p + 1, s + 1);
}

/* Next string over alphabet a in odometer order; 0 after the last. */
static int
next_str(char *s, size_t max, const char *a)
{
	size_t	 i, na = strlen(a), n = strlen(s);
	const char *at;

	for (i = n; i-- > 0;) {
		at = strchr(a, s[i]);
		if ((size_t)(at - a) + 1 < na) {
			s[i] = at[1];
			return 1;
		}
		s[i] = a[0];
	}
	if (n == max)
		return 0;
	memset(s, a[0], n + 1);
	s[n + 1] = '\0';
	return 1;
}

/*
 * mtls: globs against every short DN over a hostile alphabet, compared
 * with a plain recursive matcher: the one-backtrack walk in policy.c must
 * agree, and '*' must never cross a separator or an escape.
 */
static void
test_mtls_glob_exhaustive(void **state)
{
	struct config		*cfg;
	struct principal	 p;
	struct pol_result	 res;
	char			 pat[8] = "", dn[8], json[1024], esc[32];
	size_t			 i, j, npat = 0;
	int			 got;

	(void)state;
	memset(&p, 0, sizeof(p));
	p.method = AUTH_MTLS;
	while (next_str(pat, 5, "a,=*\\")) {
		if (strchr(pat, '*') == NULL || strchr(pat, '=') == NULL)
			continue;
		for (i = j = 0; pat[i] != '\0'; i++) {
			if (pat[i] == '\\')
				esc[j++] = '\\';
			esc[j++] = pat[i];
		}
		esc[j] = '\0';
		snprintf(json, sizeof(json), "{" UPSTREAMS ", \"policy\": "
		    "{\"rules\": [{\"id\": \"m\", \"effect\": \"allow\", "
		    "\"repositories\": [\"**\"], \"subjects\": [\"mtls:%s\"], "
		    "\"actions\": [\"pull\"]}]}}", esc);
		cfg = load(json);
		npat++;
		dn[0] = '\0';
		do {
			p.subject = p.mtls_subject = dn;
			got = policy_decide(cfg->policy, &p, "hub", "a",
			    POL_PULL, &res);
			if (got != dn_ref(pat, dn))
				fail_msg("mtls:%s vs '%s': got %d", pat, dn,
				    got);
		} while (next_str(dn, 4, "a,=\\+"));
		config_unref(cfg);
	}
	assert_true(npat > 500);
}

/*
 * catalog and admin name no repository, admin no upstream: one given with
 * them (by a caller that should not) must not let a rule scoped to some
 * repositories or upstreams grant them.
 */
static void
test_norepo_actions_ignore_repo(void **state)
{
	struct config		*cfg;
	struct principal	 p;
	struct pol_result	 res;
	static const enum pol_action acts[] = { POL_CATALOG, POL_ADMIN };
	size_t			 i;

	(void)state;
	cfg = load("{" UPSTREAMS ", \"policy\": {\"rules\": ["
	    "{\"id\": \"team\", \"effect\": \"allow\", "
	    "\"repositories\": [\"team/**\"], "
	    "\"subjects\": [\"anonymous\"], \"actions\": [\"*\"]}]}}");
	memset(&p, 0, sizeof(p));
	p.method = AUTH_ANONYMOUS;
	p.subject = "";
	for (i = 0; i < 2; i++) {
		assert_int_equal(policy_decide(cfg->policy, &p, "hub",
		    "team/app", acts[i], &res), 0);
		assert_null(res.rule);
		assert_int_equal(policy_explain_rule(cfg->policy, 0, &p,
		    "hub", "team/app", acts[i]), POL_MISS_SCOPED);
	}
	/* The repository still counts for pull. */
	assert_int_equal(policy_decide(cfg->policy, &p, "hub", "team/app",
	    POL_PULL, &res), 1);
	config_unref(cfg);

	/* Nor does an upstream given with admin, which names none. */
	cfg = load("{" UPSTREAMS ", \"policy\": {\"rules\": ["
	    "{\"id\": \"hub-admin\", \"effect\": \"allow\", "
	    "\"upstreams\": [\"hub\"], "
	    "\"subjects\": [\"anonymous\"], \"actions\": [\"admin\"]}]}}");
	assert_int_equal(policy_decide(cfg->policy, &p, "hub", NULL,
	    POL_ADMIN, &res), 0);
	assert_int_equal(policy_explain_rule(cfg->policy, 0, &p, "hub", NULL,
	    POL_ADMIN), POL_MISS_UPSTREAM);
	assert_int_equal(policy_any_allow(cfg->policy, &p, "hub", POL_ADMIN),
	    0);
	config_unref(cfg);
}

/*
 * The index (literal first segment, wildcard list, the no-repository
 * lists) against a walk of every rule with policy_explain_rule(): for
 * random policies over a small alphabet of patterns, subjects, actions
 * and upstreams, the decision and the reported rule (the first deny in
 * the file, else the first allow) must agree.  Deterministic (fixed seed).
 */
static unsigned long	 rnd_state = 20261201;

static unsigned
rnd(unsigned n)
{
	rnd_state = rnd_state * 6364136223846793005UL + 1442695040888963407UL;
	return (unsigned)((rnd_state >> 33) % n);
}

static void
test_index_vs_every_rule(void **state)
{
	static const char *const segs[] = { "a", "b", "ab", "*", "?", "**",
	    "a*", "*b", "${subject}", "${claim.t}", "a${subject}",
	    "x-${claim.t}", "library" };
	static const char *const names[] = { "a", "b", "ab", "library",
	    "x-a", "x-ab", "ba", "aa", "abc" };
	static const char *const subjs[] = { "anonymous", "authenticated",
	    "user:a", "user:ab", "group:g", "cidr:10.0.0.0/8",
	    "cidr:::ffff:10.0.0.0/104", "mtls:CN=*,O=x" };
	static const char *const acts[] = { "pull", "push", "delete",
	    "catalog", "admin", "*" };
	static const char *ups[] = { "u1", "u2" };
	static char		 pbuf[6][3][64], ids[6][8];
	static char		*pats[6][3], *alist[6][2], *ulist[6][2];
	static struct pol_subject_src sj[6][2];
	struct pol_rule_src	 rules[6];
	struct pol_src		 src;
	struct policy		*pol;
	struct principal	 pr;
	struct principal_claim	 cl[2];
	struct pol_result	 res;
	const char		*gr[] = { "g" }, *up, *rp, *want;
	char			 repo[64];
	size_t			 it, q, i, j, k, nr;
	long			 fd, fa;
	int			 a;

	(void)state;
	for (it = 0; it < 3000; it++) {
		memset(rules, 0, sizeof(rules));
		memset(sj, 0, sizeof(sj));
		nr = 1 + rnd(6);
		for (i = 0; i < nr; i++) {
			snprintf(ids[i], sizeof(ids[i]), "r%zu", i);
			rules[i].id = ids[i];
			rules[i].effect = rnd(3) == 0;
			rules[i].nrepositories = rnd(4);
			for (j = 0; j < rules[i].nrepositories; j++) {
				pbuf[i][j][0] = '\0';
				for (k = 1 + rnd(3); k > 0; k--) {
					if (pbuf[i][j][0] != '\0')
						strcat(pbuf[i][j], "/");
					strcat(pbuf[i][j], segs[rnd(13)]);
				}
				pats[i][j] = pbuf[i][j];
			}
			rules[i].repositories = pats[i];
			rules[i].nactions = 1 + rnd(2);
			for (j = 0; j < rules[i].nactions; j++)
				alist[i][j] = (char *)acts[rnd(6)];
			if (rules[i].nrepositories == 0) {
				rules[i].nactions = 1;
				alist[i][0] = rnd(2) ? "catalog" : "admin";
			}
			rules[i].actions = alist[i];
			rules[i].nupstreams = rnd(3);
			for (j = 0; j < rules[i].nupstreams; j++)
				ulist[i][j] = (char *)ups[j];
			rules[i].upstreams = ulist[i];
			rules[i].nsubjects = 1 + rnd(2);
			for (j = 0; j < rules[i].nsubjects; j++) {
				if (rnd(5) == 0) {
					sj[i][j].claim = "t";
					if (rnd(2))
						sj[i][j].equals = "a";
					else
						sj[i][j].glob = "a*";
				} else
					sj[i][j].match = (char *)subjs[rnd(8)];
			}
			rules[i].subjects = sj[i];
		}
		memset(&src, 0, sizeof(src));
		src.rules = rules;
		src.nrules = nr;
		src.max_rules = 100;
		src.max_pattern_bytes = 512;
		pol = policy_compile(&src, ups, 2, "/policy", NULL, NULL);
		assert_non_null(pol);
		for (q = 0; q < 40; q++) {
			memset(&pr, 0, sizeof(pr));
			a = 1 << rnd(5);
			up = rnd(3) == 0 ? NULL : ups[rnd(2)];
			pr.method = rnd(3) == 0 ? AUTH_ANONYMOUS :
			    rnd(2) ? AUTH_TOKEN : AUTH_MTLS;
			pr.subject = pr.method == AUTH_ANONYMOUS ? "" :
			    names[rnd(9)];
			if (pr.method != AUTH_ANONYMOUS && rnd(2)) {
				pr.groups = gr;
				pr.ngroups = 1;
			}
			cl[0].name = cl[1].name = "t";
			cl[0].value = names[rnd(9)];
			cl[1].value = names[rnd(9)];
			pr.claims = cl;
			pr.nclaims = rnd(3);
			pr.af = rnd(2) ? AF_INET : AF_INET6;
			if (pr.af == AF_INET)
				pr.addr[0] = rnd(2) ? 10 : 11;
			else {
				pr.addr[10] = pr.addr[11] = 0xff;
				pr.addr[12] = rnd(2) ? 10 : 11;
			}
			if (pr.method == AUTH_MTLS)
				pr.mtls_subject = rnd(2) ? "CN=a,O=x" :
				    "CN=a\\,O=x";
			rp = NULL;
			if ((a != POL_CATALOG && a != POL_ADMIN) ||
			    rnd(4) == 0) {
				repo[0] = '\0';
				for (k = 1 + rnd(3); k > 0; k--) {
					if (repo[0] != '\0')
						strcat(repo, "/");
					strcat(repo, names[rnd(9)]);
				}
				rp = repo;
			}
			policy_decide(pol, &pr, up, rp, a, &res);
			fd = fa = -1;
			for (i = 0; i < nr; i++) {
				if (policy_explain_rule(pol, i, &pr, up, rp,
				    a) != POL_MATCHED)
					continue;
				if (rules[i].effect == POL_EFFECT_DENY) {
					if (fd < 0)
						fd = (long)i;
				} else if (fa < 0)
					fa = (long)i;
			}
			want = fd >= 0 ? ids[fd] : fa >= 0 ? ids[fa] : NULL;
			if (res.allow != (fd < 0 && fa >= 0) ||
			    (want == NULL) != (res.rule == NULL) ||
			    (want != NULL && strcmp(want, res.rule) != 0))
				fail_msg("policy %zu query %zu: action %d repo "
				    "%s: decide %d %s, every rule %s", it, q,
				    a, rp != NULL ? rp : "-", res.allow,
				    res.rule != NULL ? res.rule : "-",
				    want != NULL ? want : "-");
		}
		policy_free(pol);
	}
}

static void
count_err(void *arg, const char *ptr, const char *msg)
{
	(void)ptr;
	(void)msg;
	(*(int *)arg)++;
}

/*
 * Compiling many rules costs O(n log n) comparisons, not one per pair of
 * ids: at policy/max_rules (1000000) the pairwise check took minutes of
 * the event loop on every reload.  A duplicate among them is still found.
 */
static void
test_many_ids(void **state)
{
	static char		*repos[] = { "a/**" }, *acts[] = { "pull" };
	static struct pol_subject_src	 subj = { .match = "anonymous" };
	const char		*ups[] = { "hub" };
	struct pol_rule_src	*r;
	struct pol_src		 src;
	struct policy		*pol;
	size_t			 i, n = 20000;
	int			 nerr = 0;

	(void)state;
	r = calloc(n, sizeof(*r));
	assert_non_null(r);
	for (i = 0; i < n; i++) {
		assert_non_null(r[i].id = malloc(16));
		snprintf(r[i].id, 16, "r%zu", i);
		r[i].repositories = repos;
		r[i].nrepositories = 1;
		r[i].actions = acts;
		r[i].nactions = 1;
		r[i].subjects = &subj;
		r[i].nsubjects = 1;
	}
	memset(&src, 0, sizeof(src));
	src.rules = r;
	src.nrules = n;
	src.max_rules = n;
	src.max_pattern_bytes = 512;
	ncmps = 0;
	counting_cmp = 1;
	pol = policy_compile(&src, ups, 1, "/policy", NULL, NULL);
	counting_cmp = 0;
	assert_non_null(pol);
	/* n log2 n is 286000; every pair would be 200 million. */
	if (ncmps > 64 * n)
		fail_msg("%zu rules: %zu strcmp calls", n, ncmps);
	policy_free(pol);
	/* The last id repeats one in the middle: still an error. */
	snprintf(r[n - 1].id, 16, "r%zu", n / 2);
	assert_null(policy_compile(&src, ups, 1, "/policy",
	    count_err, &nerr));
	assert_int_equal(nerr, 1);
	for (i = 0; i < n; i++)
		free(r[i].id);
	free(r);
}

/* Deciding, the blocklist and immutability allocate nothing. */
static void
test_no_alloc(void **state)
{
	struct config		*cfg;
	struct pol_result	 res;
	char			*json;
	size_t			 i;

	(void)state;
	setup_who();
	json = build_config(0, EXTRA);
	/*
	 * First show that the hook counts (compiling allocates); under a
	 * tool that replaces malloc itself (valgrind) it cannot: skip.
	 */
	nallocs = 0;
	counting = 1;
	cfg = load(json);
	counting = 0;
	if (nallocs == 0) {
		config_unref(cfg);
		free(json);
		skip();
	}
	nallocs = 0;
	counting = 1;
	for (i = 0; i < sizeof(decide_cases) / sizeof(decide_cases[0]); i++)
		policy_decide(cfg->policy, &who[decide_cases[i].who],
		    decide_cases[i].upstream, decide_cases[i].repo,
		    decide_cases[i].action, &res);
	policy_blocked(cfg->policy, D2, NULL);
	policy_immutable(cfg->policy, "hub", "base/x", "v1", NULL);
	for (i = 0; i < policy_nrules(cfg->policy); i++)
		policy_explain_rule(cfg->policy, i, &who[CI], "hub",
		    "ci/app/x", POL_PUSH);
	counting = 0;
	assert_int_equal(nallocs, 0);
	config_unref(cfg);
	free(json);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_decide),
		cmocka_unit_test(test_order),
		cmocka_unit_test(test_any_allow),
		cmocka_unit_test(test_allow_patterns),
		cmocka_unit_test(test_explain),
		cmocka_unit_test(test_blocked_immutable),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_empty),
		cmocka_unit_test(test_file),
		cmocka_unit_test(test_mtls_glob_exhaustive),
		cmocka_unit_test(test_no_alloc),
		cmocka_unit_test(test_many_ids),
		cmocka_unit_test(test_norepo_actions_ignore_repo),
		cmocka_unit_test(test_index_vs_every_rule),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
