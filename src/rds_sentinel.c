/*
 * rds_sentinel.c: finding a link's master through Redis Sentinel
 * (redis.sentinel).  Each connection of an async link starts by asking
 * the sentinels, in order and each within connect_timeout, for the
 * master's address (SENTINEL get-master-addr-by-name); the answer is a
 * peer's word, so it must be numeric and of an address class the
 * configured sentinels allow (rds_master_allowed()).  After AUTH and
 * SELECT (rds.c) the link checks with ROLE that it is on the master:
 * right after a failover a sentinel may still name the demoted one.
 * Each change of master is logged.  rds_connect_sync_sentinel() is the
 * same for the blocking form.
 *
 * Guarantees: the sentinel password is sent only in AUTH and is never
 * logged nor put in an error message; a sentinel's answer is dialled
 * only once it passed rds_master_reply().
 */
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>
#include <hiredis/async.h>
#include <hiredis/adapters/libevent.h>

#include <arpa/inet.h>

#include "portcullis.h"
#include "netaddr.h"
#include "rds_int.h"

/* Split numeric "host:port" or "[v6]:port"; -1 when it is not one. */
static int
rds_split(const char *s, char *host, size_t len, int *port)
{
	const char	*c;
	char		*end;
	size_t		 n;
	long		 v;

	if ((c = strrchr(s, ':')) == NULL)
		return (-1);
	n = c - s;
	if (s[0] == '[' && n >= 2 && s[n - 1] == ']') {
		s++;
		n -= 2;
	}
	if (n == 0 || n >= len)
		return (-1);
	memcpy(host, s, n);
	host[n] = '\0';
	v = strtol(c + 1, &end, 10);
	if (*end != '\0' || v < 1 || v > 65535 || end == c + 1)
		return (-1);
	*port = (int)v;
	return (0);
}

/* The class of a numeric address; NETADDR_UNKNOWN when not numeric. */
static enum netaddr_class
rds_class(const char *host)
{
	unsigned char	 a[16];

	if (inet_pton(AF_INET, host, a) == 1)
		return (netaddr_class_v4(a));
	if (inet_pton(AF_INET6, host, a) == 1)
		return (netaddr_class_v6(a));
	return (NETADDR_UNKNOWN);
}

static int
rds_internal(enum netaddr_class c)
{
	return (c == NETADDR_LOOPBACK || c == NETADDR_PRIVATE ||
	    c == NETADDR_CGNAT || c == NETADDR_ULA);
}

/*
 * Whether the master address a sentinel gave may be dialled.  It is a
 * peer's word: it must be numeric; loopback only when a configured
 * sentinel is on loopback itself, private, carrier-grade NAT or unique
 * local only when a configured sentinel is on loopback or one of those
 * (an operator who points the gateway at internal sentinels trusts
 * their internal answers; a sentinel out there may not aim the gateway
 * inside); unspecified, link-local, multicast and reserved never.
 * NULL, or why not.
 */
static const char *
rds_master_allowed(char *const *sentinels, size_t n, const char *host)
{
	enum netaddr_class	 c, sc;
	char			 shost[256];
	size_t			 i;
	int			 port, loop = 0, internal = 0;

	for (i = 0; i < n; i++) {
		if (rds_split(sentinels[i], shost, sizeof(shost), &port) == -1)
			continue;
		sc = rds_class(shost);
		loop |= sc == NETADDR_LOOPBACK;
		internal |= rds_internal(sc);
	}
	switch ((c = rds_class(host))) {
	case NETADDR_PUBLIC:
		return (NULL);
	case NETADDR_LOOPBACK:
		return (loop ? NULL : "loopback, and no sentinel is");
	case NETADDR_PRIVATE:
	case NETADDR_CGNAT:
	case NETADDR_ULA:
		return (internal ? NULL : "internal, and no sentinel is");
	case NETADDR_UNKNOWN:
		return ("not a numeric address");
	default:
		return ("of a class never dialled");
	}
}

/*
 * Parse and check a sentinel's answer to get-master-addr-by-name into
 * host and *port.  NULL, or what is wrong with it (no address in it:
 * it may come from the peer).
 */
static const char *
rds_master_reply(const redisReply *r, char *const *sentinels, size_t n,
    char *host, size_t len, int *port)
{
	const char	*why;
	char		*end;
	long		 v;

	if (r == NULL)
		return ("no reply");
	if (r->type == REDIS_REPLY_NIL)
		return ("unknown master name");
	if (r->type == REDIS_REPLY_ERROR)
		return ("error reply");
	if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
	    r->element[0]->type != REDIS_REPLY_STRING ||
	    r->element[1]->type != REDIS_REPLY_STRING ||
	    (size_t)r->element[0]->len >= len ||
	    strlen(r->element[0]->str) != (size_t)r->element[0]->len)
		return ("malformed reply");
	v = strtol(r->element[1]->str, &end, 10);
	if (*end != '\0' || end == r->element[1]->str || v < 1 || v > 65535)
		return ("malformed port");
	if ((why = rds_master_allowed(sentinels, n, r->element[0]->str)) !=
	    NULL)
		return (why);
	memcpy(host, r->element[0]->str, r->element[0]->len + 1);
	*port = (int)v;
	return (NULL);
}

/* Whether a reply to ROLE says master. */
static int
rds_is_master(const redisReply *r)
{
	return (r != NULL && r->type == REDIS_REPLY_ARRAY &&
	    r->elements >= 1 && r->element[0]->type == REDIS_REPLY_STRING &&
	    strcmp(r->element[0]->str, "master") == 0);
}

/*
 * The answer to ROLE: on the master, go on; on a replica (a sentinel's
 * stale answer right after a failover) drop it and ask again after the
 * back-off.
 */
void
rds_on_role(redisAsyncContext *rc, void *r, void *priv)
{
	struct rds	*l = priv;

	if (r == NULL || rc->data != l || rc != l->rc)
		return;
	if (!rds_is_master(r)) {
		rds_log_failure(l, "not the master (a stale sentinel answer, "
		    "or a failover in progress)");
		rds_lost(l, "not the master", 1);
		return;
	}
	rds_selected(l);
}

/*
 * The sentinel being asked failed (why): the next one, or the link is
 * down when none is left.  free_it as for rds_lost().
 */
void
rds_sentinel_next(struct rds *l, const char *why, int free_it)
{
	redisAsyncContext	*sc = l->sc;

	l->sc = NULL;
	if (sc != NULL) {
		sc->data = NULL;
		if (free_it)
			redisAsyncFree(sc);
	}
	log_debug("- rds sentinel_failed link=%s sentinel=%s reason=\"%s\"",
	    l->name, l->sentinels[l->sidx], why);
	l->sidx++;
	rds_ask_sentinel(l);
}

/* The master's address: check it, take it, connect to it. */
static void
rds_on_master(redisAsyncContext *sc, void *r, void *priv)
{
	struct rds	*l = priv;
	const char	*why;
	char		 host[256], prev[300];
	int		 port;

	if (r == NULL || sc->data != l || sc != l->sc)
		return;
	if ((why = rds_master_reply(r, l->sentinels, l->p.nsentinels, host,
	    sizeof(host), &port)) != NULL) {
		char	msg[512];

		snprintf(msg, sizeof(msg), "sentinel %s: master %s: %s",
		    l->sentinels[l->sidx], l->master_name, why);
		rds_log_failure(l, msg);
		rds_sentinel_next(l, why, 1);
		return;
	}
	l->sc = NULL;
	sc->data = NULL;
	redisAsyncFree(sc);	/* deferred: we are in its callback */
	snprintf(prev, sizeof(prev), "%s", l->address);
	free(l->host);
	l->host = rds_strdup(host);
	l->p.host = l->host;
	l->p.port = port;
	rds_format_address(l->address, sizeof(l->address), host, port);
	if (strcmp(prev, l->address) != 0) {
		if (strncmp(prev, "master ", 7) == 0)
			log_info("- rds master link=%s master_name=%s "
			    "address=%s sentinel=%s", l->name,
			    l->master_name, l->address,
			    l->sentinels[l->sidx]);
		else
			log_warn("- rds master_switch link=%s master_name=%s "
			    "from=%s to=%s sentinel=%s", l->name,
			    l->master_name, prev, l->address,
			    l->sentinels[l->sidx]);
	}
	rds_connect_master(l);
}

static void
rds_sentinel_ask_cmd(struct rds *l)
{
	if (redisAsyncCommand(l->sc, rds_on_master, l,
	    "SENTINEL " RDS_SENTINEL_CMD " %s", l->master_name) != REDIS_OK)
		rds_sentinel_next(l, "send failed", 1);
}

static void
rds_on_sentinel_auth(redisAsyncContext *sc, void *r, void *priv)
{
	struct rds	*l = priv;
	char		 why[160], msg[512];

	if (r == NULL || sc->data != l || sc != l->sc)
		return;
	if (((redisReply *)r)->type != REDIS_REPLY_STATUS) {
		rds_error_text(why, sizeof(why), r, l->spassword);
		snprintf(msg, sizeof(msg), "sentinel %s: authentication "
		    "failed (%s)", l->sentinels[l->sidx], why);
		rds_log_failure(l, msg);
		rds_sentinel_next(l, "authentication failed", 1);
		return;
	}
	rds_sentinel_ask_cmd(l);
}

static void
rds_on_sentinel_connect(const redisAsyncContext *csc, int status)
{
	struct rds	*l = csc->data;
	const char	*argv[3];
	size_t		 lens[3];
	int		 argc = 0;

	if (l == NULL || csc != l->sc)
		return;
	if (status != REDIS_OK) {
		rds_sentinel_next(l, csc->errstr[0] != '\0' ? csc->errstr :
		    "connect failed", 0);
		return;
	}
	if (l->spassword == NULL) {
		rds_sentinel_ask_cmd(l);
		return;
	}
	argv[argc] = "AUTH";
	lens[argc++] = 4;
	if (l->susername != NULL) {
		argv[argc] = l->susername;
		lens[argc++] = strlen(l->susername);
	}
	argv[argc] = l->spassword;
	lens[argc++] = strlen(l->spassword);
	if (redisAsyncCommandArgv(l->sc, rds_on_sentinel_auth, l, argc, argv,
	    lens) != REDIS_OK)
		rds_sentinel_next(l, "send failed", 1);
}

static void
rds_on_sentinel_disconnect(const redisAsyncContext *csc, int status)
{
	struct rds	*l = csc->data;

	if (l == NULL || csc != l->sc)
		return;
	rds_sentinel_next(l, csc->errstr[0] != '\0' ? csc->errstr :
	    "disconnected", 0);
}

/*
 * Ask sentinel sidx for the master, each within connect_timeout; past
 * the last one the link is down (and tries them all again after the
 * back-off).
 */
void
rds_ask_sentinel(struct rds *l)
{
	redisAsyncContext	*sc;
	char			 host[256];
	int			 port;

	for (; l->sidx < l->p.nsentinels; l->sidx++) {
		if (rds_split(l->sentinels[l->sidx], host, sizeof(host),
		    &port) == -1)
			continue;	/* the config checked it */
		if ((sc = redisAsyncConnect(host, port)) == NULL)
			fatal("redisAsyncConnect");
		if (sc->err) {
			redisAsyncFree(sc);
			continue;
		}
		l->state = RDS_RESOLVING;
		l->since_ms = now_ms();
		sc->data = l;
		l->sc = sc;
		redisLibeventAttach(sc, l->base);
		redisAsyncSetConnectCallback(sc, rds_on_sentinel_connect);
		redisAsyncSetDisconnectCallback(sc,
		    rds_on_sentinel_disconnect);
		rds_arm(l);
		return;
	}
	l->state = RDS_RESOLVING;
	rds_lost(l, "no sentinel named a usable master", 0);
}

/*
 * Ask the sentinels in turn for the master (into host, *port), each
 * bounded by the connect timeout.  0, or RDS_SYNC_DOWN with *cause.
 */
static int
rds_resolve_sync(const struct rds_params *p, char *host, size_t len,
    int *port, char **cause)
{
	redisContext	*sc;
	redisReply	*r;
	struct timeval	 tv;
	const char	*argv[3], *why;
	size_t		 lens[3], i;
	char		 shost[256], last[512];
	int		 sport, argc;

	snprintf(last, sizeof(last), "no sentinel configured");
	tv.tv_sec = p->connect_timeout_ms / 1000;
	tv.tv_usec = (p->connect_timeout_ms % 1000) * 1000;
	for (i = 0; i < p->nsentinels; i++) {
		if (rds_split(p->sentinels[i], shost, sizeof(shost),
		    &sport) == -1)
			continue;
		sc = redisConnectWithTimeout(shost, sport, tv);
		if (sc == NULL || sc->err) {
			snprintf(last, sizeof(last), "sentinel %s: cannot "
			    "connect: %s", p->sentinels[i], sc != NULL ?
			    sc->errstr : "out of memory");
			if (sc != NULL)
				redisFree(sc);
			continue;
		}
		redisSetTimeout(sc, tv);
		why = NULL;
		if (p->sentinel_password != NULL) {
			argc = 0;
			argv[argc] = "AUTH";
			lens[argc++] = 4;
			if (p->sentinel_username != NULL) {
				argv[argc] = p->sentinel_username;
				lens[argc++] = strlen(p->sentinel_username);
			}
			argv[argc] = p->sentinel_password;
			lens[argc++] = strlen(p->sentinel_password);
			r = redisCommandArgv(sc, argc, argv, lens);
			if (r == NULL || r->type != REDIS_REPLY_STATUS)
				why = "authentication failed";
			freeReplyObject(r);
		}
		if (why == NULL) {
			r = redisCommand(sc, "SENTINEL " RDS_SENTINEL_CMD " %s",
			    p->master_name);
			why = rds_master_reply(r, p->sentinels, p->nsentinels,
			    host, len, port);
			freeReplyObject(r);
		}
		redisFree(sc);
		if (why == NULL)
			return (0);
		snprintf(last, sizeof(last), "sentinel %s: master %s: %s",
		    p->sentinels[i], p->master_name, why);
	}
	if ((*cause = strdup(last)) == NULL)
		fatal("strdup");
	return (RDS_SYNC_DOWN);
}

/*
 * rds_connect_sync() with sentinels: ask them for the master, do the
 * handshake there, and check with ROLE that it is one.
 */
int
rds_connect_sync_sentinel(const struct rds_params *p,
    struct redisContext **out, char **cause)
{
	struct rds_params	 mp;
	redisReply		*r;
	char			 host[256], address[300];
	int			 port, st, master;

	*out = NULL;
	if ((st = rds_resolve_sync(p, host, sizeof(host), &port, cause)) != 0)
		return (st);
	mp = *p;
	mp.host = host;
	mp.port = port;
	if ((st = rds_connect_sync_at(&mp, out, cause)) != 0)
		return (st);
	r = redisCommand(*out, "ROLE");
	master = rds_is_master(r);
	freeReplyObject(r);
	if (!master) {
		redisFree(*out);
		*out = NULL;
		rds_format_address(address, sizeof(address), host, port);
		if (asprintf(cause, "redis %s: not the master of %s (a stale "
		    "sentinel answer, or a failover in progress)", address,
		    p->master_name) == -1)
			*cause = NULL;
		return (RDS_SYNC_DOWN);
	}
	return (0);
}
