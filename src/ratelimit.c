/*
 * ratelimit.c: the rate-limit gate of DISPATCH, after the policy gate.
 *
 * The rules of the request's snapshot that apply to it (action decided by
 * the policy, endpoint, method, upstream, not exempt, and, for rules that
 * do not count cache hits, not a request the cache holds) are checked in
 * ONE Redis round trip: an EVALSHA of rlbucket.c's script over every
 * rule's bucket, with the time from Redis's TIME, so N instances share
 * each limit exactly.  The strictest refusing rule answers 429; when all
 * allow, the rule with the fewest requests left names the RateLimit
 * headers of the response.
 *
 * While the request waits for Redis it is the request's stage (name
 * "ratelimit"); the call outlives it when the client goes or the budget
 * passes: it is detached then (call->req NULL) and freed by the reply,
 * which rds.c delivers exactly once (NULL when the link goes).  When
 * Redis is down, or slower than ratelimit.redis_budget, each rule's
 * on_redis_down decides: local (an in-process bucket holding limit/N,
 * N configured or learned from the instances' heartbeats), open (not
 * limited) or closed (429).  While a reply is overdue the next requests
 * are decided so at once, without asking Redis; after it, the next
 * request tries Redis again, so the shared buckets are back in force as
 * soon as it answers.
 *
 * Also here, before the rules: an upstream's own quota floor (Docker
 * Hub's RateLimit-Remaining as proxy.c last saw it), which refuses the
 * pulls the cache cannot answer while the quota is nearly spent.
 */
#include <sys/types.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "portcullis.h"
#include "cache.h"
#include "cache_http.h"
#include "policy.h"
#include "rds.h"
#include "rlbucket.h"

/* Heartbeats: an instance missing for this many intervals is gone. */
#define RL_HB_MISSES	3

struct ratelimit {
	struct pc_ctx		*ctx;
	struct rds		*rds;
	int			 ready;		/* script loaded */
	char			 sha[48];
	struct rlb_table	*local;
	int			 learned;	/* instances seen; 0: none */
	struct event		*hb_timer;
	int			 hb_busy;
	int			 down_logged;
	uint64_t		 slow_logged_ms;
	size_t			 late;		/* calls past the budget */
};

/* One rule applied to one request. */
struct rl_item {
	const struct config_rl_rule	*rule;
	char				*key;	/* prefix + id + ':' + value */
	int				 allowed;
	int64_t				 remaining;
	int64_t				 retry_us;
	int				 unchecked;	/* closed: Redis away */
};

/* A request's check; outlives the request until Redis answers. */
struct rl_call {
	struct ratelimit	*rl;
	struct req		*req;		/* NULL: detached */
	struct event		*timer;		/* redis_budget */
	int			 sent;		/* a reply will come */
	int			 retried;	/* NOSCRIPT once */
	int			 late;		/* its budget passed */
	size_t			 n;
	struct rl_item		*items;
};

static void	rl_call_free(struct rl_call *);
static void	rl_on_reply(struct rds *, struct redisReply *, void *);

static const char rl_hb_lua[] =
	"local t = redis.call('TIME')\n"
	"local now = tonumber(t[1]) * 1000 +\n"
	"    math.floor(tonumber(t[2]) / 1000)\n"
	"redis.call('ZADD', KEYS[1], now, ARGV[1])\n"
	"redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf',\n"
	"    now - tonumber(ARGV[2]))\n"
	"redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
	"return redis.call('ZCARD', KEYS[1])\n";

/* Microseconds of a clock that never goes back, for the local buckets. */
static int64_t
rl_mono_us(void)
{
	struct timespec	ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	/* From one, so that a stored 0 still means "never used". */
	return ((int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000 + 1);
}

/* --- the link --- */

static void
rl_on_script(struct rds *l, struct redisReply *reply, void *arg)
{
	struct ratelimit	*rl = rds_data(l);

	(void)arg;
	if (reply == NULL)
		return;
	if (reply->type != REDIS_REPLY_STRING || reply->len <= 0 ||
	    (size_t)reply->len >= sizeof(rl->sha)) {
		log_warn("- ratelimit redis_error during=script_load "
		    "error=\"%.200s\"", reply->type == REDIS_REPLY_ERROR ?
		    reply->str : "unexpected reply");
		rds_reset(l, "script load failed");
		return;
	}
	memcpy(rl->sha, reply->str, reply->len);
	rl->sha[reply->len] = '\0';
	if (!rl->ready || rl->down_logged)
		log_info("- ratelimit redis_up address=%s", rds_address(l));
	rl->ready = 1;
	rl->down_logged = 0;
}

static int
rl_load_script(struct ratelimit *rl)
{
	const char	*argv[3] = { "SCRIPT", "LOAD", rlb_lua };
	size_t		 lens[3] = { 6, 4, strlen(rlb_lua) };

	return (rds_command_argv(rl->rds, rl_on_script, NULL, 3, argv, lens));
}

static void
rl_on_up(struct rds *l, void *arg)
{
	struct ratelimit	*rl = arg;

	if (rl_load_script(rl) == -1)
		rds_reset(l, "script load failed");
}

static void
rl_on_down(struct rds *l, void *arg, const char *why, int was_up)
{
	struct ratelimit	*rl = arg;

	(void)l;
	rl->ready = 0;
	if (was_up && !rl->down_logged) {
		log_warn("- ratelimit redis_down reason=\"%s\" "
		    "fallback=on_redis_down", why);
		rl->down_logged = 1;
	}
}

static const struct rds_ops rl_rds_ops = {
	rl_on_up, rl_on_down, NULL
};

static void
rl_on_heartbeat(struct rds *l, struct redisReply *reply, void *arg)
{
	struct ratelimit	*rl = rds_data(l);

	(void)arg;
	rl->hb_busy = 0;
	if (reply == NULL || reply->type != REDIS_REPLY_INTEGER)
		return;
	if (reply->integer >= 1 && reply->integer <= RLB_DIVIDE_MAX &&
	    reply->integer != rl->learned) {
		log_info("- ratelimit instances learned=%lld",
		    (long long)reply->integer);
		rl->learned = (int)reply->integer;
	}
}

/*
 * Every heartbeat_interval: this instance's name into a sorted set scored
 * by Redis's time, the silent ones out, the count back.  Only for a
 * learned N (ratelimit.instances 0); the last count is kept while Redis
 * is away, which is when local mode needs it.
 */
static void
rl_heartbeat_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct ratelimit		*rl = arg;
	const struct config		*conf = rl->ctx->conf;
	const struct config_ratelimit	*rc = conf->ratelimit;
	struct timeval			 tv;
	char				 key[256], ttl[32];
	const char			*argv[6];
	size_t				 lens[6];
	int				 i;

	(void)fd;
	(void)ev;
	if (rc == NULL) {
		/* The section went in a reload; it may come back. */
		tv.tv_sec = 5;
		tv.tv_usec = 0;
		evtimer_add(rl->hb_timer, &tv);
		return;
	}
	if (rl->ready && !rl->hb_busy && rc->instances == 0) {
		snprintf(key, sizeof(key), "%sinstances", rc->key_prefix);
		snprintf(ttl, sizeof(ttl), "%d",
		    rc->heartbeat_interval_ms * RL_HB_MISSES);
		argv[0] = "EVAL";
		argv[1] = rl_hb_lua;
		argv[2] = "1";
		argv[3] = key;
		argv[4] = conf->instance_id;
		argv[5] = ttl;
		for (i = 0; i < 6; i++)
			lens[i] = strlen(argv[i]);
		if (rds_command_argv(rl->rds, rl_on_heartbeat, NULL, 6, argv,
		    lens) == 0)
			rl->hb_busy = 1;
	}
	tv.tv_sec = rc->heartbeat_interval_ms / 1000;
	tv.tv_usec = (rc->heartbeat_interval_ms % 1000) * 1000;
	evtimer_add(rl->hb_timer, &tv);
}

/* The gate's state and its Redis link; NULL when not configured. */
struct ratelimit *
ratelimit_new(struct pc_ctx *ctx)
{
	struct ratelimit		*rl;
	struct rds_params		 p;
	const struct config_ratelimit	*rc = ctx->conf->ratelimit;
	struct timeval			 now = { 0, 1000 };

	if (rc == NULL || ctx->conf->redis == NULL)
		return (NULL);
	if ((rl = calloc(1, sizeof(*rl))) == NULL ||
	    (rl->local = rlb_table_new(rc->local_buckets)) == NULL)
		fatal("ratelimit_new");
	rl->ctx = ctx;
	rds_params_init(&p, ctx->conf, "ratelimit");
	rl->rds = rds_new(ctx->base, &p, &rl_rds_ops, rl);
	rds_start(rl->rds);
	if ((rl->hb_timer = evtimer_new(ctx->base, rl_heartbeat_cb,
	    rl)) == NULL)
		fatalx("out of memory");
	evtimer_add(rl->hb_timer, &now);
	return (rl);
}

/* After the connections: pending calls come back NULL and are freed. */
void
ratelimit_free(struct ratelimit *rl)
{
	if (rl == NULL)
		return;
	if (rl->hb_timer != NULL)
		event_free(rl->hb_timer);
	rds_free(rl->rds);
	rlb_table_free(rl->local);
	free(rl);
}

/* --- which rules apply --- */

static int
rl_listed(char *const *list, size_t n, const char *s)
{
	size_t	i;

	for (i = 0; s != NULL && i < n; i++)
		if (strcmp(list[i], s) == 0)
			return (1);
	return (0);
}

/* The caller's address, an IPv4-mapped one as IPv4; 0: none. */
static int
rl_addr(const struct principal *pr, unsigned char *a)
{
	static const unsigned char	mapped[12] = {
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff
	};

	if (pr->af == AF_INET6 && memcmp(pr->addr, mapped, 12) == 0) {
		memcpy(a, pr->addr + 12, 4);
		return (AF_INET);
	}
	if (pr->af == AF_INET)
		memcpy(a, pr->addr, 4);
	else if (pr->af == AF_INET6)
		memcpy(a, pr->addr, 16);
	return (pr->af);
}

static int
rl_in_net(int af, const unsigned char *a, const struct config_rl_cidr *c)
{
	int	bits = c->plen;

	if (af != c->af)
		return (0);
	if (memcmp(a, c->net, bits / 8) != 0)
		return (0);
	if (bits % 8 == 0)
		return (1);
	return (((a[bits / 8] ^ c->net[bits / 8]) &
	    (0xff << (8 - bits % 8)) & 0xff) == 0);
}

static int
rl_exempt(const struct config_rl_rule *r, const struct principal *pr)
{
	unsigned char	a[16];
	size_t		i;
	int		af;

	if (pr->method != AUTH_ANONYMOUS && pr->subject[0] != '\0' &&
	    rl_listed(r->exempt_subjects, r->nexempt_subjects, pr->subject))
		return (1);
	for (i = 0; i < pr->ngroups; i++)
		if (rl_listed(r->exempt_groups, r->nexempt_groups,
		    pr->groups[i]))
			return (1);
	if ((af = rl_addr(pr, a)) != 0)
		for (i = 0; i < r->nexempt_cidrs; i++)
			if (rl_in_net(af, a, &r->exempt[i]))
				return (1);
	return (0);
}

/*
 * Whether the cache would answer the request from disk: a blob or
 * manifest by digest stored and linked to the repository, or a tag whose
 * record is fresh and whose manifest is.  Decided before the cache stage,
 * so a fill finishing meanwhile may make one more request counted.
 */
static int
rl_cache_hit(struct req *req)
{
	struct cache		*c = req->c->ctx->cache;
	enum cache_kind		 kind;
	char			 digest[CACHE_DIGEST_MAX], *accept;
	const char		*d = req->route.ref;
	uint64_t		 at;
	int			 ttl, hit;

	if (!cache_wants(req))
		return (0);
	kind = req->route.ep == OCI_EP_BLOB ? CACHE_BLOB : CACHE_MANIFEST;
	if (!req->route.ref_digest) {
		if ((accept = malloc(2048)) == NULL)
			fatal("malloc");
		hit = cache_accept_norm(&req->msg->hdrs, accept, 2048) >= 0 &&
		    cache_tag_get(c, req->up, req->upname, req->route.ref,
		    accept, digest, sizeof(digest), &at) == 0;
		free(accept);
		if (!hit)
			return (0);
		ttl = req->up->tag_ttl_ms >= 0 ? req->up->tag_ttl_ms :
		    req->conf->cache->tag_ttl_ms;
		if (cache_wall_ms() - at >= (uint64_t)ttl)
			return (0);	/* revalidated upstream */
		/* The tag's record is as good as a link (cache_serve.c). */
		return (cache_lookup(c, kind, digest) != NULL);
	}
	return (cache_lookup(c, kind, d) != NULL &&
	    cache_link_has(c, req->up, req->upname, kind, d));
}

/* Whether the cache will answer the request (upcap.c asks too). */
int
ratelimit_would_hit(struct req *req)
{
	return (rl_cache_hit(req));
}

/*
 * The bucket's key: prefix, rule id, then what the rule is keyed by.
 * The repository part comes first in subject+repository: a name cannot
 * hold '|', a subject can.  A value too long for RLB_KEY_MAX keeps its
 * head and a 64-bit hash of the whole.
 */
static char *
rl_key(const struct config_ratelimit *rc, const struct config_rl_rule *r,
    const struct req *req)
{
	const struct principal	*pr = &req->principal;
	char			 addr[INET6_ADDRSTRLEN + 8], who[1100];
	char			 repo[OCI_NAME_MAX + 80], buf[2400], *k;
	unsigned char		 a[16];
	int			 af, i, bits = 0;
	uint64_t		 h = 1469598103934665603ULL;
	size_t			 len, j;

	addr[0] = '\0';
	if ((af = rl_addr(pr, a)) != 0) {
		if (r->key == CONFIG_RL_CIDR) {
			bits = af == AF_INET ? r->cidr_v4 : r->cidr_v6;
			for (i = bits; i < (af == AF_INET ? 32 : 128); i++)
				a[i / 8] &= ~(0x80 >> (i % 8));
		}
		inet_ntop(af, a, addr, sizeof(addr));
		if (r->key == CONFIG_RL_CIDR)
			snprintf(addr + strlen(addr),
			    sizeof(addr) - strlen(addr), "/%d", bits);
	}
	if (pr->method != AUTH_ANONYMOUS && pr->subject[0] != '\0')
		snprintf(who, sizeof(who), "s:%s", pr->subject);
	else
		snprintf(who, sizeof(who), "a:%s", addr);
	snprintf(repo, sizeof(repo), "r:%s/%s", req->up->name, req->upname);
	switch (r->key) {
	case CONFIG_RL_SUBJECT:
		snprintf(buf, sizeof(buf), "%s", who);
		break;
	case CONFIG_RL_IP:
		snprintf(buf, sizeof(buf), "ip:%s", addr);
		break;
	case CONFIG_RL_CIDR:
		snprintf(buf, sizeof(buf), "net:%s", addr);
		break;
	case CONFIG_RL_REPOSITORY:
		snprintf(buf, sizeof(buf), "%s", repo);
		break;
	case CONFIG_RL_SUBJECT_REPOSITORY:
		snprintf(buf, sizeof(buf), "%s|%s", repo, who);
		break;
	default:
		snprintf(buf, sizeof(buf), "u:%s", req->up->name);
		break;
	}
	len = strlen(buf);
	if (strlen(rc->key_prefix) + strlen(r->id) + 1 + len > RLB_KEY_MAX) {
		for (j = 0; j < len; j++) {
			h ^= (unsigned char)buf[j];
			h *= 1099511628211ULL;
		}
		snprintf(buf + 512, sizeof(buf) - 512, "#%016llx",
		    (unsigned long long)h);
	}
	if (asprintf(&k, "%s%s:%s", rc->key_prefix, r->id, buf) == -1)
		fatal("asprintf");
	return (k);
}

/* The rules that count this request; 0 when none. */
static size_t
rl_match(struct req *req, int a, int *hit, struct rl_item **out)
{
	const struct config_ratelimit	*rc = req->conf->ratelimit;
	const struct config_rl_rule	*r;
	struct rl_item			*items = NULL;
	size_t				 i, n = 0;

	*out = NULL;
	if (rc == NULL || rc->nrules == 0 || req->up == NULL || a == -1)
		return (0);
	for (i = 0; i < rc->nrules; i++) {
		r = &rc->rules[i];
		if (!(r->action_mask & (unsigned)a) ||
		    !(r->endpoint_mask & (1u << req->route.ep)) ||
		    !(r->method_mask & (1u << req->msg->method)))
			continue;
		if (r->nupstreams > 0 &&
		    !rl_listed(r->upstreams, r->nupstreams, req->up->name))
			continue;
		if (rl_exempt(r, &req->principal))
			continue;
		if (!r->count_cache_hits) {
			if (*hit == -1)
				*hit = rl_cache_hit(req);
			if (*hit)
				continue;
		}
		if (items == NULL && (items = calloc(rc->nrules,
		    sizeof(*items))) == NULL)
			fatal("calloc");
		items[n].rule = r;
		items[n].key = rl_key(rc, r, req);
		n++;
	}
	*out = items;
	return (n);
}

/* --- deciding --- */

static void
rl_params(const struct config_rl_rule *r, int divide, struct rlb_params *p)
{
	/* The config checked divide 1; a share too long is cut in N. */
	while (rlb_params_init(p, (int64_t)r->count,
	    (int64_t)r->window_ms * 1000, (int64_t)r->burst, divide) == -1 &&
	    divide > 1)
		divide /= 2;
}

static int
rl_instances(const struct ratelimit *rl, const struct config_ratelimit *rc)
{
	if (rc->instances > 0)
		return (rc->instances);
	return (rl->learned > 0 ? rl->learned : 1);
}

/*
 * Redis did not answer in time or is away: each rule's on_redis_down.
 * The local rules are one all-or-nothing step on the in-process buckets,
 * as the script's on the shared ones.
 */
static void
rl_fallback(struct ratelimit *rl, struct req *req, struct rl_item *items,
    size_t n)
{
	const struct config_ratelimit	*rc = req->conf->ratelimit;
	struct rlb_params		 p;
	struct rlb_verdict		*v;
	int64_t				 now = rl_mono_us();
	size_t				 i;
	int				 all = 1, divide = rl_instances(rl, rc);

	if ((v = calloc(n, sizeof(*v))) == NULL)
		fatal("calloc");
	for (i = 0; i < n; i++) {
		switch (items[i].rule->on_redis_down) {
		case CONFIG_RL_DOWN_OPEN:
			items[i].allowed = 1;
			items[i].remaining = -1;	/* no header from it */
			break;
		case CONFIG_RL_DOWN_CLOSED:
			items[i].allowed = 0;
			items[i].unchecked = 1;
			items[i].retry_us = 1000000;
			all = 0;
			break;
		default:
			rl_params(items[i].rule, divide, &p);
			rlb_take(&p, rlb_table_peek(rl->local, items[i].key),
			    now, &v[i]);
			items[i].allowed = v[i].allowed;
			items[i].remaining = v[i].remaining;
			items[i].retry_us = v[i].retry_us;
			if (!v[i].allowed)
				all = 0;
			break;
		}
	}
	for (i = 0; i < n; i++)
		if (items[i].rule->on_redis_down == CONFIG_RL_DOWN_LOCAL &&
		    v[i].store && (all || !v[i].allowed))
			(void)rlb_table_put(rl->local, items[i].key, v[i].tat);
	free(v);
}

static const char *
rl_key_noun(int key)
{
	switch (key) {
	case CONFIG_RL_SUBJECT:
		return ("caller");
	case CONFIG_RL_IP:
		return ("client address");
	case CONFIG_RL_CIDR:
		return ("client network");
	case CONFIG_RL_REPOSITORY:
		return ("repository");
	case CONFIG_RL_SUBJECT_REPOSITORY:
		return ("caller and repository");
	default:
		return ("upstream");
	}
}

/*
 * The verdicts are in: answer 429 for the strictest refusing rule (the
 * longest wait), or note the rule with the fewest requests left for the
 * response's headers.  0: go on; -1: answered.
 */
static int
rl_decide(struct req *req, struct rl_item *items, size_t n, const char *mode)
{
	const struct rl_item	*worst = NULL, *least = NULL;
	const struct config_rl_rule *r;
	struct headers		 h;
	char			 msg[512], ra[32], lim[48], rem[48];
	int64_t			 secs;
	long long		 w;
	size_t			 i;

	for (i = 0; i < n; i++) {
		if (!items[i].allowed) {
			if (worst == NULL ||
			    items[i].retry_us > worst->retry_us)
				worst = &items[i];
		} else if (items[i].remaining >= 0 && (least == NULL ||
		    items[i].remaining < least->remaining))
			least = &items[i];
	}
	if (worst == NULL) {
		if (least != NULL) {
			r = least->rule;
			w = (r->window_ms + 999) / 1000;
			snprintf(req->rl_limit, sizeof(req->rl_limit),
			    "%zu;w=%lld", r->count, w);
			snprintf(req->rl_remaining, sizeof(req->rl_remaining),
			    "%lld;w=%lld", (long long)least->remaining, w);
		}
		return (0);
	}
	r = worst->rule;
	secs = (worst->retry_us + 999999) / 1000000;
	if (secs < 1)
		secs = 1;
	w = (r->window_ms + 999) / 1000;
	if (worst->unchecked)
		snprintf(msg, sizeof(msg), "rate limit \"%s\" cannot be "
		    "checked now (its shared counter is unavailable); retry "
		    "after %lld s", r->id, (long long)secs);
	else
		snprintf(msg, sizeof(msg), "rate limit \"%s\" exceeded: %zu "
		    "request%s per %lld s for this %s; retry after %lld s",
		    r->id, r->count, r->count == 1 ? "" : "s", w,
		    rl_key_noun(r->key), (long long)secs);
	snprintf(ra, sizeof(ra), "%lld", (long long)secs);
	snprintf(lim, sizeof(lim), "%zu;w=%lld", r->count, w);
	snprintf(rem, sizeof(rem), "0;w=%lld", w);
	log_info("%llu.%u ratelimit refuse rule=%s mode=%s retry_after=%lld",
	    (unsigned long long)req->c->id, req->seq, r->id, mode,
	    (long long)secs);
	req->decision = "deny";
	req->rule = r->id;
	headers_init(&h);
	headers_add(&h, "Retry-After", 11, ra, strlen(ra));
	headers_add(&h, "RateLimit-Limit", 15, lim, strlen(lim));
	headers_add(&h, "RateLimit-Remaining", 19, rem, strlen(rem));
	req_fail_msg(req, ERR_RATE_LIMITED, msg, NULL, &h);
	headers_clear(&h);
	return (-1);
}

/* --- the stage --- */

static void
rl_stage_free(void *arg)
{
	struct rl_call	*call = arg;

	/* The reply (or the link's end) frees it; until then it is inert. */
	call->req = NULL;
	if (call->timer != NULL)
		evtimer_del(call->timer);
	if (!call->sent)
		rl_call_free(call);
}

static const struct req_stage_ops rl_stage_ops = {
	"ratelimit", NULL, NULL, rl_stage_free
};

static void
rl_call_free(struct rl_call *call)
{
	size_t	i;

	if (call->timer != NULL)
		event_free(call->timer);
	for (i = 0; i < call->n; i++)
		free(call->items[i].key);
	free(call->items);
	free(call);
}

/* Decide from the fallback and go on, or answer; the stage ends. */
static void
rl_finish(struct rl_call *call, const char *mode)
{
	struct req	*req = call->req;

	if (rl_decide(req, call->items, call->n, mode) == 0)
		req_stage_next(req);
}

/* The budget passed: decide without Redis; its reply is dropped. */
static void
rl_budget_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct rl_call		*call = arg;
	struct ratelimit	*rl = call->rl;
	uint64_t		 now = now_ms();

	(void)fd;
	(void)ev;
	if (call->req == NULL)
		return;
	/*
	 * Until its reply comes, Redis is slow: the next requests are
	 * decided by on_redis_down at once, not queued behind it (each
	 * would wait out the budget, and be counted again in the shared
	 * bucket when Redis resumes, though decided here).
	 */
	call->late = 1;
	rl->late++;
	if (now - rl->slow_logged_ms >= 10000) {
		log_warn("- ratelimit redis_slow budget_ms=%d "
		    "fallback=on_redis_down",
		    call->req->conf->ratelimit->redis_budget_ms);
		rl->slow_logged_ms = now;
	}
	rl_fallback(rl, call->req, call->items, call->n);
	rl_finish(call, "fallback");
}

/* One EVALSHA over every bucket; 0 sent, -1 not. */
static int
rl_send(struct rl_call *call)
{
	struct ratelimit	*rl = call->rl;
	struct rlb_params	 p;
	const char		**argv;
	size_t			*lens, i, argc = 4 + 3 * call->n;
	char			(*nums)[2][24];
	char			 nkeys[16];
	int			 rv;

	if ((argv = calloc(argc, sizeof(*argv))) == NULL ||
	    (lens = calloc(argc, sizeof(*lens))) == NULL ||
	    (nums = calloc(call->n, sizeof(*nums))) == NULL)
		fatal("calloc");
	snprintf(nkeys, sizeof(nkeys), "%zu", call->n);
	argv[0] = "EVALSHA";
	argv[1] = rl->sha;
	argv[2] = nkeys;
	for (i = 0; i < call->n; i++) {
		argv[3 + i] = call->items[i].key;
		rl_params(call->items[i].rule, 1, &p);
		snprintf(nums[i][0], sizeof(nums[i][0]), "%lld",
		    (long long)p.interval_us);
		snprintf(nums[i][1], sizeof(nums[i][1]), "%lld",
		    (long long)p.burst);
		argv[4 + call->n + 2 * i] = nums[i][0];
		argv[5 + call->n + 2 * i] = nums[i][1];
	}
	argv[3 + call->n] = "";		/* the time: Redis's own */
	for (i = 0; i < argc; i++)
		lens[i] = strlen(argv[i]);
	rv = rds_command_argv(rl->rds, rl_on_reply, call, (int)argc, argv,
	    lens);
	free(argv);
	free(lens);
	free(nums);
	if (rv == 0)
		call->sent = 1;
	return (rv);
}

/* Take the script's verdicts; -1 when the reply is not its shape. */
static int
rl_parse(struct rl_call *call, const struct redisReply *reply)
{
	const struct redisReply		*e;
	const struct config_rl_rule	*r;
	long long			 v, max;
	size_t				 i;

	if (reply->type != REDIS_REPLY_ARRAY ||
	    reply->elements != 1 + 3 * call->n)
		return (-1);
	for (i = 0; i < reply->elements; i++)
		if (reply->element[i]->type != REDIS_REPLY_INTEGER)
			return (-1);
	for (i = 0; i < call->n; i++) {
		r = call->items[i].rule;
		e = reply->element[1 + 3 * i];
		call->items[i].allowed = e->integer == 1;
		/*
		 * Kept within what the script can say (a wait of at most
		 * a window, fewer left than the burst): whatever Redis
		 * answers, the headers stay true to the rule and the
		 * arithmetic on them cannot overflow.
		 */
		v = reply->element[2 + 3 * i]->integer;
		max = (long long)r->burst - 1;
		call->items[i].remaining = v < 0 ? 0 : v > max ? max : v;
		v = reply->element[3 + 3 * i]->integer;
		max = (long long)r->window_ms * 1000;
		call->items[i].retry_us = v < 0 ? 0 : v > max ? max : v;
	}
	return (0);
}

static void
rl_on_reply(struct rds *l, struct redisReply *reply, void *arg)
{
	struct rl_call		*call = arg;
	struct ratelimit	*rl = call->rl;

	/*
	 * call->sent stays set while the reply is handled: the stage's
	 * free, run from rl_finish(), then only detaches the call.
	 */
	(void)l;
	if (call->late) {
		call->late = 0;
		rl->late--;		/* Redis answered (or went) */
	}
	if (call->req == NULL) {
		rl_call_free(call);	/* detached: nobody waits */
		return;
	}
	/*
	 * NOSCRIPT: Redis lost its script cache (restart, SCRIPT FLUSH).
	 * Load it and send again, once; the two go in order on the link.
	 */
	if (reply != NULL && reply->type == REDIS_REPLY_ERROR &&
	    strncmp(reply->str, "NOSCRIPT", 8) == 0 && !call->retried) {
		call->retried = 1;
		if (rl_load_script(rl) == 0 && rl_send(call) == 0)
			return;
	}
	evtimer_del(call->timer);
	if (reply == NULL || rl_parse(call, reply) == -1) {
		if (reply != NULL)
			log_warn("%llu.%u ratelimit redis_error "
			    "error=\"%.200s\"", (unsigned long long)
			    call->req->c->id, call->req->seq,
			    reply->type == REDIS_REPLY_ERROR ? reply->str :
			    "unexpected reply");
		rl_fallback(rl, call->req, call->items, call->n);
		rl_finish(call, "fallback");
	} else
		rl_finish(call, "shared");
	rl_call_free(call);
}

/*
 * The upstream's own quota (Docker Hub's RateLimit-Remaining, which
 * proxy.c notes with the time of the report): at or below the upstream's
 * quota_floor, a pull the cache cannot answer is refused for quota_hold
 * after the report, so that the last of the quota is not spent by the
 * gateway's misses, while what the cache holds is still served.  After
 * quota_hold one goes through, and the report in its answer decides.
 * -1: answered (429).
 */
static int
rl_quota(struct req *req, int a, int *hit)
{
	const struct config_upstream	*up = req->up;
	struct upstream_state		*us;
	struct headers			 h;
	char				*ep, msg[512], ra[32];
	long				 rem;
	uint64_t			 age, left;

	if (up == NULL || up->quota_floor < 0 || a != POL_PULL)
		return (0);
	us = upstream_state_get(req->c->ctx, up);
	if (us->rl_remaining[0] == '\0')
		return (0);
	rem = strtol(us->rl_remaining, &ep, 10);
	if (ep == us->rl_remaining || rem > up->quota_floor)
		return (0);
	age = now_ms() - us->rl_seen_ms;
	if (age >= (uint64_t)up->quota_hold_ms)
		return (0);
	if (*hit == -1)
		*hit = rl_cache_hit(req);
	if (*hit)
		return (0);
	left = ((uint64_t)up->quota_hold_ms - age + 999) / 1000;
	snprintf(msg, sizeof(msg), "upstream \"%s\" reports %ld pulls left "
	    "of its quota (the gateway keeps %d): pulls it has not cached "
	    "are refused; retry after %llu s", up->name, rem,
	    up->quota_floor, (unsigned long long)left);
	snprintf(ra, sizeof(ra), "%llu", (unsigned long long)left);
	log_info("%llu.%u ratelimit quota_floor upstream=%s remaining=%ld "
	    "floor=%d retry_after=%llu", (unsigned long long)req->c->id,
	    req->seq, up->name, rem, up->quota_floor,
	    (unsigned long long)left);
	req->decision = "deny";
	req->rule = "upstream_quota";	/* the record names the refusal */
	headers_init(&h);
	headers_add(&h, "Retry-After", 11, ra, strlen(ra));
	req_fail_msg(req, ERR_RATE_LIMITED, msg, NULL, &h);
	headers_clear(&h);
	return (-1);
}

/*
 * The gate.  0: not limited, go on now; 1: waiting for Redis as the
 * request's stage (its end comes back to req_dispatch() through
 * req_stage_next()); -1: answered (429).
 */
int
ratelimit_request(struct req *req)
{
	struct ratelimit	*rl = req->c->ctx->ratelimit;
	struct rl_call		*call;
	struct rl_item		*items;
	struct timeval		 tv;
	size_t			 n, i;
	int			 rv, ms, a, hit = -1;

	req->rl_checked = 1;
	a = req->up != NULL ? authz_action(req) : -1;
	if (rl_quota(req, a, &hit) == -1)
		return (-1);
	if (rl == NULL || (n = rl_match(req, a, &hit, &items)) == 0)
		return (0);
	if ((call = calloc(1, sizeof(*call))) == NULL)
		fatal("calloc");
	call->rl = rl;
	call->req = req;
	call->items = items;
	call->n = n;
	if (rl->ready && rl->late == 0 && (call->timer =
	    evtimer_new(rl->ctx->base, rl_budget_cb, call)) != NULL &&
	    rl_send(call) == 0) {
		ms = req->conf->ratelimit->redis_budget_ms;
		tv.tv_sec = ms / 1000;
		tv.tv_usec = (ms % 1000) * 1000;
		evtimer_add(call->timer, &tv);
		req_stage_set(req, &rl_stage_ops, call);
		return (1);
	}
	/* Redis away: decided here, nothing to wait for. */
	rl_fallback(rl, req, items, n);
	rv = rl_decide(req, items, n, "fallback");
	for (i = 0; i < n; i++)
		free(items[i].key);
	free(items);
	if (call->timer != NULL)
		event_free(call->timer);
	free(call);
	return (rv);
}
