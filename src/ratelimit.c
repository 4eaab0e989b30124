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
 * manifest GETs the cache cannot answer while the quota is nearly spent.
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
#include <event2/event_struct.h>
#include <hiredis/hiredis.h>

#include "portcullis.h"
#include "cache.h"
#include "cache_http.h"
#include "policy.h"
#include "rds.h"
#include "rlbucket.h"

/* Heartbeats: an instance missing for this many intervals is gone. */
#define RL_HB_MISSES	3
/* Rules per section (the schema's bound) and keys built on the stack. */
#define RL_RULES_MAX	256
#define RL_KEYS_STACK	4096
/* Buckets whose EVALSHA arguments are built on the stack. */
#define RL_ARGV_STACK	16

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
	const char			*key;	/* rlb_key(), in the call */
	size_t				 keylen;
	int				 allowed;
	int64_t				 remaining;
	int64_t				 retry_us;
	int				 unchecked;	/* closed: Redis away */
};

/*
 * A request's check; outlives the request until Redis answers.  One
 * allocation holds it, its items and their keys: the gate runs for every
 * counted request.
 */
struct rl_call {
	struct ratelimit	*rl;
	struct req		*req;		/* NULL: detached */
	struct event		 timer;		/* redis_budget */
	int			 timer_set;	/* assigned */
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
 * The bucket's key (rlb_key(): prefix, the rule id's length and id, then
 * the value).  The repository part comes first in subject+repository: a
 * name cannot hold '|', a subject can.  An anonymous IPv6 caller counts
 * by its network of the rule's cidr_v6 bits for keys subject and ip too:
 * one host holds a /64 (or more), and each of its addresses would
 * otherwise start a fresh bucket.  IPv4 callers count by their address.
 */
static char *
rl_cat(char *p, const char *end, const char *s)
{
	size_t	n = strlen(s);

	if (p == NULL || n > (size_t)(end - p))
		return (NULL);
	memcpy(p, s, n);
	return (p + n);
}

static size_t
rl_key(const struct config_ratelimit *rc, const struct config_rl_rule *r,
    const struct req *req, char *out)
{
	const struct principal	*pr = &req->principal;
	char			 addr[RLB_ADDR_MAX], sbuf[1536];
	char			*v = sbuf, *p, *end;
	unsigned char		 a[16];
	const char		*sub = NULL;
	size_t			 need;
	int			 af, bits = 128, len;

	addr[0] = '\0';
	if ((af = rl_addr(pr, a)) != 0) {
		if (r->key == CONFIG_RL_CIDR)
			bits = af == AF_INET ? r->cidr_v4 : r->cidr_v6;
		else if (af == AF_INET6)
			bits = r->cidr_v6;
		if (rlb_addr_text(af, a, bits, r->key == CONFIG_RL_CIDR,
		    addr) == -1)
			addr[0] = '\0';
	}
	if (pr->method != AUTH_ANONYMOUS && pr->subject[0] != '\0')
		sub = pr->subject;
	/* Room for the longest: repository, '|', "s:" and the subject. */
	need = strlen(req->up->name) + strlen(req->upname) + sizeof(addr) +
	    (sub != NULL ? strlen(sub) : 0) + 16;
	if (need > sizeof(sbuf) && (v = malloc(need)) == NULL)
		fatal("malloc");
	p = v;
	end = v + need;
	switch (r->key) {
	case CONFIG_RL_SUBJECT:
		p = sub != NULL ? rl_cat(rl_cat(p, end, "s:"), end, sub) :
		    rl_cat(rl_cat(p, end, "a:"), end, addr);
		break;
	case CONFIG_RL_IP:
		p = rl_cat(rl_cat(p, end, "ip:"), end, addr);
		break;
	case CONFIG_RL_CIDR:
		p = rl_cat(rl_cat(p, end, "net:"), end, addr);
		break;
	case CONFIG_RL_REPOSITORY:
	case CONFIG_RL_SUBJECT_REPOSITORY:
		p = rl_cat(rl_cat(rl_cat(rl_cat(p, end, "r:"), end,
		    req->up->name), end, "/"), end, req->upname);
		if (r->key == CONFIG_RL_REPOSITORY)
			break;
		p = sub != NULL ? rl_cat(rl_cat(p, end, "|s:"), end, sub) :
		    rl_cat(rl_cat(p, end, "|a:"), end, addr);
		break;
	default:
		p = rl_cat(rl_cat(p, end, "u:"), end, req->up->name);
		break;
	}
	if (p == NULL || (len = rlb_key(out, rc->key_prefix, r->id, v,
	    (size_t)(p - v))) == -1)
		fatalx("ratelimit: key");	/* bounded by the config */
	if (v != sbuf)
		free(v);
	return ((size_t)len);
}

/* Keys built for one request: on the stack unless there are many. */
struct rl_keys {
	char		*buf;
	size_t		 len;
	size_t		 cap;
	char		 stack[RL_KEYS_STACK];
};

/*
 * The rules that count this request, into rules[] (RL_RULES_MAX), their
 * keys one after the other (NUL-terminated) into kb; how many.
 */
static size_t
rl_match(struct req *req, int a, int *hit,
    const struct config_rl_rule **rules, struct rl_keys *kb)
{
	const struct config_ratelimit	*rc = req->conf->ratelimit;
	const struct config_rl_rule	*r;
	char				*nb;
	size_t				 i, n = 0, len;

	kb->buf = kb->stack;
	kb->cap = sizeof(kb->stack);
	kb->len = 0;
	if (rc == NULL || rc->nrules == 0 || req->up == NULL || a == -1)
		return (0);
	for (i = 0; i < rc->nrules && n < RL_RULES_MAX; i++) {
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
		if (kb->cap - kb->len < RLB_KEY_MAX + 1) {
			/* At most RL_RULES_MAX keys of RLB_KEY_MAX + 1. */
			len = kb->cap * 2;
			if ((nb = malloc(len)) == NULL)
				fatal("malloc");
			memcpy(nb, kb->buf, kb->len);
			if (kb->buf != kb->stack)
				free(kb->buf);
			kb->buf = nb;
			kb->cap = len;
		}
		rules[n++] = r;
		kb->len += rl_key(rc, r, req, kb->buf + kb->len) + 1;
	}
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
 * "N;w=W" (RateLimit-*) into 48 bytes (req->rl_limit), without printf:
 * every allowed request carries two.
 */
static void
rl_rate_text(char *out, uint64_t n, long long w)
{
	size_t	len;

	_Static_assert(sizeof(((struct req *)0)->rl_limit) >=
	    2 * RLB_DEC_MAX + 2, "rl_limit holds N;w=W");

	len = rlb_dec(out, n);
	memcpy(out + len, ";w=", 3);
	rlb_dec(out + len + 3, (uint64_t)w);
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
			rl_rate_text(req->rl_limit, r->count, w);
			rl_rate_text(req->rl_remaining,
			    (uint64_t)least->remaining, w);
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
	if (call->timer_set)
		evtimer_del(&call->timer);
	if (!call->sent)
		rl_call_free(call);
}

static const struct req_stage_ops rl_stage_ops = {
	"ratelimit", NULL, NULL, rl_stage_free
};

static void
rl_call_free(struct rl_call *call)
{
	if (call->timer_set)
		evtimer_del(&call->timer);
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
	const char		*sargv[4 + 3 * RL_ARGV_STACK], **argv = sargv;
	size_t			 slens[4 + 3 * RL_ARGV_STACK], *lens = slens;
	char			 snums[RL_ARGV_STACK][2][RLB_DEC_MAX];
	char			(*nums)[2][RLB_DEC_MAX] = snums;
	char			 nkeys[RLB_DEC_MAX];
	size_t			 i, argc = 4 + 3 * call->n;
	int			 rv;

	/* Built without printf or, for a few rules, the heap. */
	if (call->n > RL_ARGV_STACK &&
	    ((argv = calloc(argc, sizeof(*argv))) == NULL ||
	    (lens = calloc(argc, sizeof(*lens))) == NULL ||
	    (nums = calloc(call->n, sizeof(*nums))) == NULL))
		fatal("calloc");
	argv[0] = "EVALSHA";
	lens[0] = 7;
	argv[1] = rl->sha;
	lens[1] = strlen(rl->sha);
	argv[2] = nkeys;
	lens[2] = rlb_dec(nkeys, call->n);
	argv[3 + call->n] = "";		/* the time: Redis's own */
	lens[3 + call->n] = 0;
	for (i = 0; i < call->n; i++) {
		argv[3 + i] = call->items[i].key;
		lens[3 + i] = call->items[i].keylen;
		rl_params(call->items[i].rule, 1, &p);
		argv[4 + call->n + 2 * i] = nums[i][0];
		lens[4 + call->n + 2 * i] = rlb_dec(nums[i][0],
		    (uint64_t)p.interval_us);
		argv[5 + call->n + 2 * i] = nums[i][1];
		lens[5 + call->n + 2 * i] = rlb_dec(nums[i][1],
		    (uint64_t)p.burst);
	}
	rv = rds_command_argv(rl->rds, rl_on_reply, call, (int)argc, argv,
	    lens);
	if (argv != sargv) {
		free(argv);
		free(lens);
		free(nums);
	}
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
	evtimer_del(&call->timer);
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
 * quota_floor, a manifest GET the cache cannot answer is refused for
 * quota_hold after the report, so that the last of the quota is not
 * spent by the gateway's misses, while what the cache holds is still
 * served.  Only what Docker Hub counts is refused: manifest GETs.  Its
 * HEADs and blob requests cost no quota, and refusing the blobs of a
 * manifest already paid for would leave that pull half done for nothing.
 * After quota_hold one goes through, and the report in its answer
 * decides.  -1: answered (429).
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

	if (up == NULL || up->quota_floor < 0 || a != POL_PULL ||
	    req->route.ep != OCI_EP_MANIFEST || req->msg->method != HTTP_GET)
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
	struct ratelimit		*rl = req->c->ctx->ratelimit;
	const struct config_rl_rule	*rules[RL_RULES_MAX];
	struct rl_keys			 kb;
	struct rl_call			*call;
	struct timeval			 tv;
	const char			*k;
	size_t				 n, i;
	int				 rv, ms, a, hit = -1;

	req->rl_checked = 1;
	a = req->up != NULL ? authz_action(req) : -1;
	if (rl_quota(req, a, &hit) == -1)
		return (-1);
	if (rl == NULL || (n = rl_match(req, a, &hit, rules, &kb)) == 0)
		return (0);
	/* The call, its items and their keys: one allocation. */
	if ((call = calloc(1, sizeof(*call) + n * sizeof(*call->items) +
	    kb.len)) == NULL)
		fatal("calloc");
	call->rl = rl;
	call->req = req;
	call->items = (struct rl_item *)(call + 1);
	call->n = n;
	memcpy(call->items + n, kb.buf, kb.len);
	if (kb.buf != kb.stack)
		free(kb.buf);
	for (k = (const char *)(call->items + n), i = 0; i < n; i++) {
		call->items[i].rule = rules[i];
		call->items[i].key = k;
		call->items[i].keylen = strlen(k);
		k += call->items[i].keylen + 1;
	}
	if (rl->ready && rl->late == 0 && evtimer_assign(&call->timer,
	    rl->ctx->base, rl_budget_cb, call) == 0)
		call->timer_set = 1;
	if (call->timer_set && rl_send(call) == 0) {
		ms = req->conf->ratelimit->redis_budget_ms;
		tv.tv_sec = ms / 1000;
		tv.tv_usec = (ms % 1000) * 1000;
		evtimer_add(&call->timer, &tv);
		req_stage_set(req, &rl_stage_ops, call);
		return (1);
	}
	/* Redis away: decided here, nothing to wait for. */
	rl_fallback(rl, req, call->items, n);
	rv = rl_decide(req, call->items, n, "fallback");
	rl_call_free(call);
	return (rv);
}
