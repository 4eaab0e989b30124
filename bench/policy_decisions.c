/*
 * policy_decisions.c: decisions per second of the policy engine
 * (policy_decide) for NRULES rules over NNAMES repository names, one
 * thread, for about SECONDS seconds (argv[1], default 3).  Built and run by
 * bench/policy_decisions.sh.
 *
 * The rules look like a large organisation's: per team an allow for its
 * group on "teamN/**", push for CI on "teamN/ci/${claim.repository}/**",
 * pulls by network on "shared/teamN-*", home directories with ${subject},
 * a deny on "teamN/legacy/**", and every 50th rule a deny whose pattern
 * starts with "**" and so must be checked for every name.  Names are spread
 * over the teams, shared and users trees; half the decisions are pulls,
 * half pushes, for a principal with 8 groups, 2 claims and an address.
 */
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "policy.h"

#define NRULES	1000
#define NNAMES	10000

static char *
xstrdup(const char *s)
{
	char	*p;

	if ((p = strdup(s)) == NULL)
		abort();
	return p;
}

static char **
list1(const char *s)
{
	char	**l;

	if ((l = calloc(2, sizeof(*l))) == NULL)
		abort();
	l[0] = xstrdup(s);
	return l;
}

static void
compile_error(void *arg, const char *ptr, const char *msg)
{
	fprintf(stderr, "%s: %s\n", ptr, msg);
	exit(1);
}

static double
now(void)
{
	struct timespec	 ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int
main(int argc, char **argv)
{
	static struct pol_rule_src	 rules[NRULES];
	static char			*names[NNAMES];
	struct pol_src			 src;
	struct pol_subject_src		*sj;
	struct policy			*pol;
	struct principal		 p;
	struct pol_result		 res;
	static const char *const	 ups[] = { "hub", "local" };
	const char			*groups[8];
	struct principal_claim		 claims[2];
	char				 buf[256], gbuf[8][32];
	double				 seconds, t0, t1, elapsed;
	unsigned long long		 n = 0, allowed = 0, checksum = 0;
	size_t				 i, k, round;

	seconds = argc > 1 ? atof(argv[1]) : 3.0;
	if (!(seconds > 0 && seconds <= 600))
		seconds = 3.0;
	memset(&src, 0, sizeof(src));
	for (i = 0; i < NRULES; i++) {
		struct pol_rule_src	*r = &rules[i];

		k = i / 10;	/* the team */
		snprintf(buf, sizeof(buf), "r%zu", i);
		r->id = xstrdup(buf);
		r->effect = POL_EFFECT_ALLOW;
		if ((sj = calloc(1, sizeof(*sj))) == NULL)
			abort();
		r->subjects = sj;
		r->nsubjects = 1;
		r->nactions = 1;
		switch (i % 10) {
		case 0: case 1: case 2: case 3:
			snprintf(buf, sizeof(buf), "team%zu/**", k);
			r->actions = list1(i % 2 ? "push" : "pull");
			snprintf(gbuf[0], sizeof(gbuf[0]), "group:team%zu",
			    k);
			sj->match = xstrdup(gbuf[0]);
			break;
		case 4:
			snprintf(buf, sizeof(buf),
			    "team%zu/ci/${claim.repository}/**", k);
			r->actions = list1("push");
			sj->claim = xstrdup("iss");
			sj->equals = xstrdup("https://ci.example");
			break;
		case 5:
			snprintf(buf, sizeof(buf), "shared/team%zu-*", k);
			r->actions = list1("pull");
			sj->match = xstrdup("cidr:10.0.0.0/8");
			break;
		case 6:
			snprintf(buf, sizeof(buf),
			    "users/${subject}/team%zu/**", k);
			r->actions = list1("*");
			sj->match = xstrdup("authenticated");
			break;
		case 7:
			snprintf(buf, sizeof(buf), "team%zu/legacy/**", k);
			r->actions = list1("push");
			r->effect = POL_EFFECT_DENY;
			sj->match = xstrdup("authenticated");
			break;
		case 8:
			snprintf(buf, sizeof(buf), "team%zu/*/app-?", k);
			r->actions = list1("pull");
			sj->match = xstrdup("mtls:CN=*,O=Example Nodes");
			break;
		default:
			if (i % 50 == 9) {
				snprintf(buf, sizeof(buf),
				    "**/quarantine-%zu/**", k);
				r->effect = POL_EFFECT_DENY;
				r->actions = list1("*");
				sj->match = xstrdup("anonymous");
			} else {
				snprintf(buf, sizeof(buf), "team%zu/docs/*",
				    k);
				r->actions = list1("pull");
				sj->match = xstrdup("user:reader");
			}
			break;
		}
		r->repositories = list1(buf);
		r->nrepositories = 1;
	}
	src.rules = rules;
	src.nrules = NRULES;
	src.max_rules = NRULES;
	src.max_pattern_bytes = 512;
	pol = policy_compile(&src, (const char *const *)ups, 2, "/policy",
	    compile_error, NULL);

	for (i = 0; i < NNAMES; i++) {
		switch (i % 5) {
		case 0:
		case 1:
			snprintf(buf, sizeof(buf), "team%zu/svc%zu/app-%zu",
			    (i * 7) % 100, i, i % 10);
			break;
		case 2:
			snprintf(buf, sizeof(buf), "team%zu/ci/web/img%zu",
			    (i * 3) % 100, i);
			break;
		case 3:
			snprintf(buf, sizeof(buf), "shared/team%zu-base%zu",
			    i % 100, i);
			break;
		default:
			snprintf(buf, sizeof(buf),
			    "users/bob/team%zu/scratch/%zu", i % 100, i);
			break;
		}
		names[i] = xstrdup(buf);
	}

	memset(&p, 0, sizeof(p));
	p.method = AUTH_OIDC;
	p.subject = "bob";
	for (i = 0; i < 8; i++) {
		snprintf(gbuf[i], sizeof(gbuf[i]), "team%zu", i * 13);
		groups[i] = gbuf[i];
	}
	p.groups = groups;
	p.ngroups = 8;
	claims[0].name = "iss";
	claims[0].value = "https://ci.example";
	claims[1].name = "repository";
	claims[1].value = "web";
	p.claims = claims;
	p.nclaims = 2;
	p.af = AF_INET;
	inet_pton(AF_INET, "10.1.2.3", p.addr);

	/* Whole passes over the names until the time is up. */
	t0 = now();
	for (round = 0; ; round++) {
		for (i = 0; i < NNAMES; i++) {
			allowed += policy_decide(pol, &p, "hub", names[i],
			    (i + round) % 2 ? POL_PUSH : POL_PULL, &res);
			checksum += res.rule != NULL ? (unsigned char)
			    res.rule[1] : 0;
		}
		n += NNAMES;
		if ((elapsed = (t1 = now()) - t0) >= seconds)
			break;
	}
	printf("rules=%d names=%d decisions=%llu seconds=%.2f "
	    "allowed=%.1f%% decisions/s=%.0f ns/decision=%.0f check=%llu\n",
	    NRULES, NNAMES, n, elapsed, 100.0 * allowed / n, n / elapsed,
	    elapsed * 1e9 / n, checksum);
	policy_free(pol);
	return 0;
}
