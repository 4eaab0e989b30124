/*
 * config_ratelimit.c: the checks of the ratelimit section that its schema
 * rows cannot express, and the compiled parts of each rule (action,
 * endpoint and method masks, exempt networks), so that the request path
 * matches a rule with a few bit tests.  Called from cfg_finish().
 *
 * Guarantees: every problem is reported with its JSON pointer; a snapshot
 * that passes has rules whose bucket parameters rlb_params_init() takes
 * for one instance.
 */
#include <arpa/inet.h>

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <http_parser.h>

#include "config.h"
#include "config_int.h"
#include "policy.h"
#include "rlbucket.h"
#include "router.h"

/* A rule id as the policy's: 1 to 64 of [A-Za-z0-9._:-]. */
static int
cfg_rl_id_ok(const char *s)
{
	size_t	n;

	for (n = 0; s[n] != '\0'; n++)
		if (!((s[n] >= 'a' && s[n] <= 'z') ||
		    (s[n] >= 'A' && s[n] <= 'Z') ||
		    (s[n] >= '0' && s[n] <= '9') ||
		    strchr("._:-", s[n]) != NULL) || n >= 64)
			return (0);
	return (n > 0);
}

/* ADDRESS/PREFIX, host bits zero; NULL or what is wrong. */
static const char *
cfg_rl_cidr(const char *s, struct config_rl_cidr *c)
{
	char		 addr[INET6_ADDRSTRLEN + 1], *end;
	const char	*slash;
	long		 plen;
	int		 i, max;

	if ((slash = strchr(s, '/')) == NULL ||
	    (size_t)(slash - s) >= sizeof(addr))
		return ("must be ADDRESS/PREFIX");
	memcpy(addr, s, slash - s);
	addr[slash - s] = '\0';
	memset(c, 0, sizeof(*c));
	if (inet_pton(AF_INET, addr, c->net) == 1) {
		c->af = AF_INET;
		max = 32;
	} else if (inet_pton(AF_INET6, addr, c->net) == 1) {
		c->af = AF_INET6;
		max = 128;
	} else
		return ("address is neither IPv4 nor IPv6");
	if (slash[1] < '0' || slash[1] > '9')
		return ("prefix must be a number");
	plen = strtol(slash + 1, &end, 10);
	if (*end != '\0' || plen < 0 || plen > max)
		return ("prefix length out of range");
	c->plen = (int)plen;
	for (i = (int)plen; i < max; i++)
		if (c->net[i / 8] & (0x80 >> (i % 8)))
			return ("has bits set after the prefix");
	return (NULL);
}

static int
cfg_rl_method(const char *s)
{
	static const struct {
		const char	*name;
		int		 m;
	} methods[] = {
		{ "GET", HTTP_GET }, { "HEAD", HTTP_HEAD },
		{ "PUT", HTTP_PUT }, { "POST", HTTP_POST },
		{ "PATCH", HTTP_PATCH }, { "DELETE", HTTP_DELETE },
	};
	size_t	i;

	for (i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
		if (strcmp(s, methods[i].name) == 0)
			return (methods[i].m);
	return (-1);
}

static int
cfg_rl_endpoint(const char *s)
{
	int	e;

	for (e = 0; e < OCI_EP__MAX; e++)
		if (e != OCI_EP_BASE && strcmp(s, router_ep_name(e)) == 0)
			return (e);
	return (-1);
}

/* One rule's lists into masks and networks. */
static void
cfg_rl_rule(struct cfg_ctx *ctx, const struct config *cfg,
    struct config_rl_rule *r, size_t i)
{
	struct rlb_params	 p;
	char			 ptr[CFG_PTR_MAX];
	const char		*why;
	size_t			 j, k;
	int			 a;

	if (!cfg_rl_id_ok(r->id)) {
		snprintf(ptr, sizeof(ptr), "/ratelimit/rules/%zu/id", i);
		cfg_error(ctx, ptr, "must be 1 to 64 of letters, digits, "
		    "'.', '_', '-', ':'");
	}
	r->action_mask = r->nactions == 0 ? POL_ACTION_ALL : 0;
	for (j = 0; j < r->nactions; j++) {
		if (strcmp(r->actions[j], "*") == 0)
			a = POL_ACTION_ALL;
		else if ((a = policy_action_parse(r->actions[j])) == -1 ||
		    a == POL_ADMIN) {
			snprintf(ptr, sizeof(ptr),
			    "/ratelimit/rules/%zu/actions/%zu", i, j);
			cfg_error(ctx, ptr, "unknown action: use pull, push, "
			    "delete, catalog or *");
			continue;
		}
		r->action_mask |= (unsigned)a;
	}
	r->endpoint_mask = r->nendpoints == 0 ? ~0u : 0;
	for (j = 0; j < r->nendpoints; j++) {
		if ((a = cfg_rl_endpoint(r->endpoints[j])) == -1) {
			snprintf(ptr, sizeof(ptr),
			    "/ratelimit/rules/%zu/endpoints/%zu", i, j);
			cfg_error(ctx, ptr, "unknown endpoint: use manifest, "
			    "blob, tags, referrers, upload_start, upload or "
			    "catalog");
			continue;
		}
		r->endpoint_mask |= 1u << a;
	}
	r->method_mask = r->nmethods == 0 ? ~0u : 0;
	for (j = 0; j < r->nmethods; j++) {
		if ((a = cfg_rl_method(r->methods[j])) == -1) {
			snprintf(ptr, sizeof(ptr),
			    "/ratelimit/rules/%zu/methods/%zu", i, j);
			cfg_error(ctx, ptr, "unknown method: use GET, HEAD, "
			    "PUT, POST, PATCH or DELETE");
			continue;
		}
		r->method_mask |= 1u << a;
	}
	for (j = 0; j < r->nupstreams; j++) {
		for (k = 0; k < cfg->nupstreams; k++)
			if (cfg->upstreams[k].name != NULL &&
			    strcmp(cfg->upstreams[k].name,
			    r->upstreams[j]) == 0)
				break;
		if (k == cfg->nupstreams) {
			snprintf(ptr, sizeof(ptr),
			    "/ratelimit/rules/%zu/upstreams/%zu", i, j);
			cfg_error(ctx, ptr, "no upstream has this name");
		}
	}
	for (j = 0; j < r->nexempt_cidrs; j++) {
		if ((why = cfg_rl_cidr(r->exempt_cidrs[j],
		    &r->exempt[j])) != NULL) {
			snprintf(ptr, sizeof(ptr),
			    "/ratelimit/rules/%zu/exempt_cidrs/%zu", i, j);
			cfg_error(ctx, ptr, "%s", why);
		}
	}
	if (r->burst == 0)
		r->burst = r->count;
	/*
	 * burst x interval (one instance's span) within Lua's exact
	 * range; a local share that would pass it is cut by ratelimit.c.
	 */
	if (r->count > 0 && r->window_ms > 0 && rlb_params_init(&p,
	    (int64_t)r->count, (int64_t)r->window_ms * 1000,
	    (int64_t)r->burst, 1) == -1) {
		snprintf(ptr, sizeof(ptr), "/ratelimit/rules/%zu/burst", i);
		cfg_error(ctx, ptr, "burst x window / count must be at most "
		    "%lld seconds (35 years)",
		    (long long)(RLB_SPAN_MAX_US / 1000000));
	}
}

/*
 * The ratelimit section as a whole: rule ids unique, the redis section
 * there (the shared buckets live in it), each rule compiled.
 */
void
cfg_finish_ratelimit(struct cfg_ctx *ctx, struct config *cfg)
{
	struct config_ratelimit	*rl = cfg->ratelimit;
	char			 p[CFG_PTR_MAX], q[CFG_PTR_MAX];
	size_t			 i, j;

	if (rl == NULL)
		return;
	if (rl->nrules > 0 && cfg->redis == NULL)
		cfg_error(ctx, "/ratelimit/rules", "rate limits need the "
		    "redis section (the shared buckets live there)");
	for (i = 0; i < rl->nrules; i++) {
		if (rl->rules[i].id == NULL)
			continue;
		cfg_rl_rule(ctx, cfg, &rl->rules[i], i);
		for (j = 0; j < i; j++) {
			if (rl->rules[j].id == NULL ||
			    strcmp(rl->rules[i].id, rl->rules[j].id) != 0)
				continue;
			snprintf(p, sizeof(p), "/ratelimit/rules/%zu/id", i);
			snprintf(q, sizeof(q), "/ratelimit/rules/%zu/id", j);
			cfg_error(ctx, p, "duplicate of %s", q);
			break;
		}
	}
}
