/*
 * policy_cli.c: `portcullis policy explain`, which answers "may this
 * principal do this action on this repository, and why" from a
 * configuration file, with the engine the gateway runs (policy.c): the
 * decision, the deciding rule, and for every rule whether it matched or
 * the first condition that did not hold.  A digest may be checked against
 * the blocklist at the same time.
 *
 * Exit status: 0 allow, 1 deny, 2 a usage or configuration error.  No
 * credential is read: the principal is described on the command line.
 */
#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "portcullis.h"
#include "policy.h"

#define PCLI_MAX_GROUPS	64
#define PCLI_MAX_CLAIMS	64

static const char pcli_usage[] =
    "usage: portcullis policy explain -c FILE [--subject S] [--method M]\n"
    "           [--group G]... [--claim NAME=VALUE]... [--ip ADDR] "
    "[--mtls DN]\n"
    "           [--upstream U] [--repo R] --action A [--digest D]\n"
    "           [--format text|json]\n"
    "\n"
    "Decide one request with the configuration's policy and say why.\n"
    "No --subject and no --mtls: anonymous.  --subject alone: method\n"
    "token (--method anonymous, token, oidc, secret or mtls to change\n"
    "it).  --mtls DN alone: method mtls with the DN as subject.  --repo\n"
    "is the repository as the policy sees it: the upstream's name,\n"
    "library/ included for Docker Hub; catalog and admin take none.\n"
    "--upstream defaults to the configuration's default upstream (none\n"
    "for admin).  --digest also checks the digest blocklist.\n"
    "Exit 0 allow, 1 deny, 2 usage or configuration error.\n";

struct pcli {
	struct principal	 p;
	const char		*groups[PCLI_MAX_GROUPS];
	struct principal_claim	 claims[PCLI_MAX_CLAIMS];
	const char		*ip;
	const char		*upstream;
	const char		*repo;
	const char		*action_name;
	enum pol_action		 action;
	const char		*digest;
	int			 json;
};

static int pcli_usage_error(const char *, ...)
    __attribute__((__format__(__printf__, 1, 2)));

static int
pcli_usage_error(const char *fmt, ...)
{
	va_list	 ap;

	fprintf(stderr, "portcullis: policy explain: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n%s", pcli_usage);
	return 2;
}

static int
pcli_method(const char *s, enum auth_method *m)
{
	int	 i;

	for (i = 0; i < AUTH_METHOD__MAX; i++)
		if (strcmp(s, principal_method_name(i)) == 0) {
			*m = i;
			return 0;
		}
	return -1;
}

/*
 * Print a value of the principal or a reason on one line of the text
 * output: control characters as \xNN, so that no value forges a line.
 */
static void
pcli_put(const char *s)
{
	const unsigned char	*u = (const unsigned char *)s;

	for (; *u != '\0'; u++) {
		if (*u < 0x20 || *u == 0x7f)
			printf("\\x%02x", *u);
		else
			putchar(*u);
	}
}

/*
 * Whether s is UTF-8 (what JSON output can carry; a principal's strings
 * come from JSON credentials or an ASCII RFC 2253 DN): 1 or 0.
 */
static int
pcli_utf8(const char *s)
{
	json_t	*j;

	if ((j = json_string(s)) == NULL)
		return 0;
	json_decref(j);
	return 1;
}

static void
pcli_text(const struct pcli *x, const struct policy *pol,
    const struct pol_result *res, const char *blocked, const char *reason)
{
	const struct principal	*p = &x->p;
	enum pol_miss		 m;
	size_t			 i, n = policy_nrules(pol);
	char			 ip[INET6_ADDRSTRLEN];

	printf("decision: %s\n", res->allow ? "allow" : "deny");
	if (blocked != NULL) {
		printf("rule: %s (blocked digest%s", blocked,
		    reason != NULL ? ": " : "");
		pcli_put(reason != NULL ? reason : "");
		printf(")\n");
	}
	else if (res->rule != NULL)
		printf("rule: %s (%s)\n", res->rule,
		    res->why == POL_WHY_DENY ? "deny" : "allow");
	else
		printf("rule: none (no rule matched: default deny)\n");
	printf("principal: method=%s subject=",
	    principal_method_name(p->method));
	pcli_put(*p->subject != '\0' ? p->subject : "-");
	for (i = 0; i < p->ngroups; i++) {
		printf(" group=");
		pcli_put(p->groups[i]);
	}
	for (i = 0; i < p->nclaims; i++) {
		printf(" claim.");
		pcli_put(p->claims[i].name);
		printf("=");
		pcli_put(p->claims[i].value);
	}
	if (p->af != 0 && inet_ntop(p->af, p->addr, ip, sizeof(ip)) != NULL)
		printf(" ip=%s", ip);
	if (p->mtls_subject != NULL) {
		printf(" mtls=");
		pcli_put(p->mtls_subject);
	}
	printf("\nrequest: action=%s upstream=%s repository=%s",
	    x->action_name, x->upstream != NULL ? x->upstream : "-",
	    x->repo != NULL ? x->repo : "-");
	if (x->digest != NULL)
		printf(" digest=%s", x->digest);
	printf("\n");
	if (x->digest != NULL)
		printf("digest: %s\n", blocked != NULL ? "blocked" :
		    "not blocked");
	printf("rules:\n");
	if (n == 0)
		printf("  (none: every request is denied)\n");
	for (i = 0; i < n; i++) {
		m = policy_explain_rule(pol, i, p, x->upstream, x->repo,
		    x->action);
		printf("  %-5s %s: ", policy_rule_effect(pol, i) ==
		    POL_EFFECT_DENY ? "deny" : "allow", policy_rule_id(pol, i));
		if (m != POL_MATCHED)
			printf("not matched: %s\n", policy_miss_name(m));
		else if (blocked == NULL && res->rule != NULL &&
		    strcmp(res->rule, policy_rule_id(pol, i)) == 0)
			printf("matched, decides\n");
		else
			printf("matched\n");
	}
}

static void
pcli_json(const struct pcli *x, const struct policy *pol,
    const struct pol_result *res, const char *blocked, const char *reason)
{
	const struct principal	*p = &x->p;
	json_t			*o, *pr, *rq, *rules, *r, *a;
	enum pol_miss		 m;
	size_t			 i, n = policy_nrules(pol);
	char			 ip[INET6_ADDRSTRLEN];
	const char		*rule, *why;

	rule = blocked != NULL ? blocked : res->rule;
	why = blocked != NULL ? "blocked" : res->why == POL_WHY_DENY ?
	    "deny" : res->why == POL_WHY_ALLOW ? "allow" : "default";
	o = json_object();
	json_object_set_new(o, "decision", json_string(res->allow ? "allow" :
	    "deny"));
	json_object_set_new(o, "why", json_string(why));
	json_object_set_new(o, "rule", rule != NULL ? json_string(rule) :
	    json_null());
	pr = json_object();
	json_object_set_new(pr, "method",
	    json_string(principal_method_name(p->method)));
	json_object_set_new(pr, "subject", json_string(p->subject));
	a = json_array();
	for (i = 0; i < p->ngroups; i++)
		json_array_append_new(a, json_string(p->groups[i]));
	json_object_set_new(pr, "groups", a);
	a = json_array();
	for (i = 0; i < p->nclaims; i++) {
		r = json_object();
		json_object_set_new(r, "name", json_string(p->claims[i].name));
		json_object_set_new(r, "value",
		    json_string(p->claims[i].value));
		json_array_append_new(a, r);
	}
	json_object_set_new(pr, "claims", a);
	json_object_set_new(pr, "ip", p->af != 0 && inet_ntop(p->af,
	    p->addr, ip, sizeof(ip)) != NULL ? json_string(ip) : json_null());
	json_object_set_new(pr, "mtls", p->mtls_subject != NULL ?
	    json_string(p->mtls_subject) : json_null());
	json_object_set_new(o, "principal", pr);
	rq = json_object();
	json_object_set_new(rq, "action", json_string(x->action_name));
	json_object_set_new(rq, "upstream", x->upstream != NULL ?
	    json_string(x->upstream) : json_null());
	json_object_set_new(rq, "repository", x->repo != NULL ?
	    json_string(x->repo) : json_null());
	if (x->digest != NULL) {
		json_object_set_new(rq, "digest", json_string(x->digest));
		json_object_set_new(rq, "digest_blocked",
		    json_boolean(blocked != NULL));
		json_object_set_new(rq, "digest_reason", reason != NULL ?
		    json_string(reason) : json_null());
	}
	json_object_set_new(o, "request", rq);
	rules = json_array();
	for (i = 0; i < n; i++) {
		m = policy_explain_rule(pol, i, p, x->upstream, x->repo,
		    x->action);
		r = json_object();
		json_object_set_new(r, "id",
		    json_string(policy_rule_id(pol, i)));
		json_object_set_new(r, "effect",
		    json_string(policy_rule_effect(pol, i) ==
		    POL_EFFECT_DENY ? "deny" : "allow"));
		json_object_set_new(r, "matched", json_boolean(m ==
		    POL_MATCHED));
		json_object_set_new(r, "decides", json_boolean(m ==
		    POL_MATCHED && blocked == NULL && res->rule != NULL &&
		    strcmp(res->rule, policy_rule_id(pol, i)) == 0));
		json_object_set_new(r, "reason",
		    json_string(policy_miss_name(m)));
		json_array_append_new(rules, r);
	}
	json_object_set_new(o, "rules", rules);
	json_dumpf(o, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	printf("\n");
	json_decref(o);
}

/* Fill the request from the options; 0, or 2 after a usage message. */
static int
pcli_parse(struct pcli *x, int argc, char **argv, const char **file)
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "subject", required_argument, NULL, 1 },
		{ "method", required_argument, NULL, 2 },
		{ "group", required_argument, NULL, 3 },
		{ "claim", required_argument, NULL, 4 },
		{ "ip", required_argument, NULL, 5 },
		{ "mtls", required_argument, NULL, 6 },
		{ "upstream", required_argument, NULL, 7 },
		{ "repo", required_argument, NULL, 8 },
		{ "action", required_argument, NULL, 9 },
		{ "digest", required_argument, NULL, 10 },
		{ "format", required_argument, NULL, 11 },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	const char	*method = NULL, *subject = NULL;
	char		*eq;
	size_t		 i;
	int		 ch, a, ok;

	optind = 1;
	while ((ch = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			*file = optarg;
			break;
		case 1:
			subject = optarg;
			break;
		case 2:
			method = optarg;
			break;
		case 3:
			if (x->p.ngroups == PCLI_MAX_GROUPS)
				return pcli_usage_error("more than %d groups",
				    PCLI_MAX_GROUPS);
			x->groups[x->p.ngroups++] = optarg;
			break;
		case 4:
			if ((eq = strchr(optarg, '=')) == NULL ||
			    eq == optarg)
				return pcli_usage_error("--claim wants "
				    "NAME=VALUE, not '%s'", optarg);
			if (x->p.nclaims == PCLI_MAX_CLAIMS)
				return pcli_usage_error("more than %d claims",
				    PCLI_MAX_CLAIMS);
			*eq = '\0';
			x->claims[x->p.nclaims].name = optarg;
			x->claims[x->p.nclaims++].value = eq + 1;
			break;
		case 5:
			x->ip = optarg;
			break;
		case 6:
			x->p.mtls_subject = optarg;
			break;
		case 7:
			x->upstream = optarg;
			break;
		case 8:
			x->repo = optarg;
			break;
		case 9:
			x->action_name = optarg;
			break;
		case 10:
			x->digest = optarg;
			break;
		case 11:
			if (strcmp(optarg, "json") == 0)
				x->json = 1;
			else if (strcmp(optarg, "text") != 0)
				return pcli_usage_error("--format is text or "
				    "json, not '%s'", optarg);
			break;
		case 'h':
			fputs(pcli_usage, stdout);
			return 3;
		default:
			fputs(pcli_usage, stderr);
			return 2;
		}
	}
	if (optind != argc)
		return pcli_usage_error("unexpected argument '%s'",
		    argv[optind]);
	if (*file == NULL)
		return pcli_usage_error("-c FILE is required");
	if (x->action_name == NULL)
		return pcli_usage_error("--action is required");
	if ((a = policy_action_parse(x->action_name)) == -1)
		return pcli_usage_error("unknown action '%s' (pull, push, "
		    "delete, catalog, admin)", x->action_name);
	x->action = a;
	if (x->repo == NULL && (a & (POL_PULL | POL_PUSH | POL_DELETE)))
		return pcli_usage_error("--repo is required for %s",
		    x->action_name);
	/* The gateway decides these with none; so must the explanation. */
	if (x->repo != NULL && (a & (POL_CATALOG | POL_ADMIN)))
		return pcli_usage_error("%s names no repository: drop --repo",
		    x->action_name);
	if (x->upstream != NULL && a == POL_ADMIN)
		return pcli_usage_error("admin names no upstream: drop "
		    "--upstream");
	if (x->repo != NULL && !router_valid_name(x->repo, strlen(x->repo)))
		return pcli_usage_error("'%s' is not a repository name",
		    x->repo);
	if (x->digest != NULL &&
	    !router_valid_digest(x->digest, strlen(x->digest)))
		return pcli_usage_error("'%s' is not a digest", x->digest);

	/* Who: anonymous, a subject, or a certificate. */
	x->p.method = AUTH_ANONYMOUS;
	x->p.subject = "";
	if (subject != NULL) {
		x->p.method = AUTH_TOKEN;
		x->p.subject = subject;
	} else if (x->p.mtls_subject != NULL) {
		x->p.method = AUTH_MTLS;
		x->p.subject = x->p.mtls_subject;
	}
	if (method != NULL && pcli_method(method, &x->p.method) == -1)
		return pcli_usage_error("unknown method '%s' (anonymous, "
		    "token, oidc, secret, mtls)", method);
	if (x->p.method == AUTH_ANONYMOUS && subject != NULL)
		return pcli_usage_error("--method anonymous takes no "
		    "--subject");
	x->p.groups = x->groups;
	x->p.claims = x->claims;
	/* JSON output would drop a non-UTF-8 string without a word. */
	ok = pcli_utf8(x->p.subject) && (x->p.mtls_subject == NULL ||
	    pcli_utf8(x->p.mtls_subject));
	for (i = 0; ok && i < x->p.ngroups; i++)
		ok = pcli_utf8(x->groups[i]);
	for (i = 0; ok && i < x->p.nclaims; i++)
		ok = pcli_utf8(x->claims[i].name) &&
		    pcli_utf8(x->claims[i].value);
	if (!ok)
		return pcli_usage_error("a subject, group, claim or DN is "
		    "not UTF-8");
	if (x->ip != NULL) {
		if (inet_pton(AF_INET, x->ip, x->p.addr) == 1)
			x->p.af = AF_INET;
		else if (inet_pton(AF_INET6, x->ip, x->p.addr) == 1)
			x->p.af = AF_INET6;
		else
			return pcli_usage_error("'%s' is not an IP address",
			    x->ip);
	}
	return 0;
}

/* `portcullis policy explain ...`; argv[0] is "policy". */
int
policy_cli(int argc, char **argv)
{
	struct pcli		 x;
	struct config		*conf;
	struct pol_result	 res;
	const char		*file = NULL, *blocked = NULL, *reason = NULL;
	char			*cause = NULL;
	size_t			 i;
	int			 rv;

	if (argc < 2 || strcmp(argv[1], "--help") == 0 ||
	    strcmp(argv[1], "-h") == 0) {
		fputs(pcli_usage, argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	if (strcmp(argv[1], "explain") != 0) {
		fprintf(stderr, "portcullis: policy: unknown command '%s'\n%s",
		    argv[1], pcli_usage);
		return 2;
	}
	memset(&x, 0, sizeof(x));
	if ((rv = pcli_parse(&x, argc - 1, argv + 1, &file)) != 0)
		return rv == 3 ? 0 : rv;
	if ((conf = config_load(file, &cause)) == NULL) {
		fprintf(stderr, "%s\n", cause != NULL ? cause : "invalid");
		free(cause);
		return 2;
	}
	if (x.upstream != NULL) {
		for (i = 0; i < conf->nupstreams; i++)
			if (strcmp(conf->upstreams[i].name, x.upstream) == 0)
				break;
		if (i == conf->nupstreams) {
			config_unref(conf);
			return pcli_usage_error("no upstream '%s' in the "
			    "configuration", x.upstream);
		}
	} else if (x.action != POL_ADMIN && conf->default_upstream >= 0)
		x.upstream = conf->upstreams[conf->default_upstream].name;

	policy_decide(conf->policy, &x.p, x.upstream, x.repo, x.action, &res);
	if (x.digest != NULL && policy_blocked(conf->policy, x.digest,
	    &blocked)) {
		reason = policy_blocked_reason(conf->policy, x.digest);
		res.allow = 0;
		res.why = POL_WHY_BLOCKED;
	}
	if (x.json)
		pcli_json(&x, conf->policy, &res, blocked, reason);
	else
		pcli_text(&x, conf->policy, &res, blocked, reason);
	rv = res.allow ? 0 : 1;
	config_unref(conf);
	return rv;
}
