/*
 * rds.c: links to Redis.  An asynchronous link (struct rds) runs on the
 * gateway's event loop through hiredis' async API: connect (the address
 * is numeric: nothing is resolved), AUTH (`AUTH user password` for an ACL
 * user, `AUTH password` for requirepass), SELECT the database, for a
 * subscriber link SUBSCRIBE to its channels, and only then tell the
 * owner it is up.  Commands go through rds_command_*() and each one's
 * reply, or NULL when the link went first, comes back exactly once.  A
 * reply later than command_timeout, or a connection that takes longer
 * than connect_timeout to get ready, counts as Redis down: the link is
 * dropped, the owner told, and it connects again after a back-off that
 * doubles from reconnect_min up to reconnect_max.  rds_connect_sync() is
 * the same handshake, blocking, for the command line and the start-up
 * check; rds_connect_cli() wraps it for the CLIs, printing the failure.
 *
 * Guarantees: the password is sent only in AUTH and is never logged nor
 * put in an error message (Redis' error replies are cut to their code
 * and checked for it); an error reply to AUTH or SELECT is logged with
 * the user, never the password; the loop never waits for Redis.
 *
 * With sentinels (redis.sentinel), each connection starts by asking
 * them for the master's address, and after AUTH and SELECT the link
 * checks with ROLE that it is on the master (both in rds_sentinel.c).
 * A lost link, or a -READONLY reply (the master was demoted under it),
 * makes the next connection ask again.
 *
 * hiredis 0.14 notes: after a failed connect, and on a disconnect, it
 * frees the context itself once our callback returns; on a free (ours or
 * its own) every pending reply callback runs with a NULL reply before the
 * disconnect callback; a free from inside a reply callback is deferred
 * until the callback returns.  A context we let go has data == NULL, so
 * its remaining callbacks leave the link alone.
 */
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>
#include <hiredis/async.h>

#include <event2/event.h>

#include "portcullis.h"
#include "rds_int.h"

static void	rds_connect(struct rds *);

/*
 * hiredis' hooks on the loop, in place of its libevent adapter, which
 * costs four epoll_ctl() calls per command: its read event is not
 * persistent (taken off when it fires, put back by hiredis) and each
 * command adds the write event, which comes off once written.  Here the
 * read event stays armed while the link lives, and a command queued
 * while the socket takes data is written at the end of the loop turn
 * (an event made active, no system call), together with every other one
 * queued in that turn.  Only a write that would block, or the connect,
 * waits on the socket's write event.  cleanup may run from inside a
 * write (hiredis frees the context on a write error): the state then
 * goes when that write returns.
 */
struct rds_ev {
	redisAsyncContext	*ac;
	struct event		*rev;	/* persistent */
	struct event		*wev;	/* full socket; the connect */
	struct event		*flush;	/* only made active */
	int			 reading;
	int			 flushing;	/* flush is active */
	int			 writing;	/* in a write handler */
	int			 dead;		/* cleaned up in it */
};

static void
rds_ev_read(evutil_socket_t fd, short what, void *arg)
{
	struct rds_ev	*e = arg;

	redisAsyncHandleRead(e->ac);	/* may free e: not touched after */
}

static void
rds_ev_write(evutil_socket_t fd, short what, void *arg)
{
	struct rds_ev	*e = arg;

	if (fd == -1)
		e->flushing = 0;
	e->writing = 1;
	redisAsyncHandleWrite(e->ac);
	if (e->dead)
		free(e);
	else
		e->writing = 0;
}

static void
rds_ev_add_read(void *arg)
{
	struct rds_ev	*e = arg;

	if (!e->reading && event_add(e->rev, NULL) == 0)
		e->reading = 1;
}

static void
rds_ev_del_read(void *arg)
{
	struct rds_ev	*e = arg;

	if (e->reading) {
		event_del(e->rev);
		e->reading = 0;
	}
}

static void
rds_ev_add_write(void *arg)
{
	struct rds_ev	*e = arg;

	/* In a write handler it is a write that would block. */
	if (e->writing || !(e->ac->c.flags & REDIS_CONNECTED))
		event_add(e->wev, NULL);
	else if (!e->flushing && !event_pending(e->wev, EV_WRITE, NULL)) {
		e->flushing = 1;
		event_active(e->flush, EV_WRITE, 0);
	}
}

static void
rds_ev_del_write(void *arg)
{
	struct rds_ev	*e = arg;

	event_del(e->wev);	/* not added: no system call */
}

static void
rds_ev_cleanup(void *arg)
{
	struct rds_ev	*e = arg;

	event_free(e->rev);
	event_free(e->wev);
	event_free(e->flush);
	if (e->writing)
		e->dead = 1;
	else
		free(e);
}

static void
rds_ev_attach(redisAsyncContext *ac, struct event_base *base)
{
	struct rds_ev	*e;

	if ((e = calloc(1, sizeof(*e))) == NULL ||
	    (e->rev = event_new(base, ac->c.fd, EV_READ | EV_PERSIST,
	    rds_ev_read, e)) == NULL ||
	    (e->wev = event_new(base, ac->c.fd, EV_WRITE, rds_ev_write,
	    e)) == NULL ||
	    (e->flush = event_new(base, -1, 0, rds_ev_write, e)) == NULL)
		fatal("rds_ev_attach");
	e->ac = ac;
	ac->ev.addRead = rds_ev_add_read;
	ac->ev.delRead = rds_ev_del_read;
	ac->ev.addWrite = rds_ev_add_write;
	ac->ev.delWrite = rds_ev_del_write;
	ac->ev.cleanup = rds_ev_cleanup;
	ac->ev.data = e;
	/* As hiredis' adapter: the connect completes on the write event. */
	rds_ev_add_read(e);
	event_add(e->wev, NULL);
}

/* The params of the top-level redis section, or its defaults. */
void
rds_params_init(struct rds_params *p, const struct config *conf,
    const char *name)
{
	const struct config_redis	*r = conf->redis;

	memset(p, 0, sizeof(*p));
	p->name = name;
	p->host = "127.0.0.1";
	p->port = 6379;
	p->connect_timeout_ms = 5000;
	p->command_timeout_ms = 5000;
	p->reconnect_min_ms = 100;
	p->reconnect_max_ms = 5000;
	if (r == NULL)
		return;
	p->host = r->host;
	p->port = r->port;
	p->username = r->username;
	p->password = r->password;
	p->database = r->database;
	p->connect_timeout_ms = r->connect_timeout_ms;
	p->command_timeout_ms = r->command_timeout_ms;
	p->reconnect_min_ms = r->reconnect_min_ms;
	p->reconnect_max_ms = r->reconnect_max_ms;
	if (r->sentinel != NULL) {
		p->sentinels = r->sentinel->addresses;
		p->nsentinels = r->sentinel->naddresses;
		p->master_name = r->sentinel->master_name;
		p->sentinel_username = r->sentinel->username;
		p->sentinel_password = r->sentinel->password;
	}
}

char *
rds_strdup(const char *s)
{
	char	*d;

	if (s == NULL)
		return (NULL);
	if ((d = strdup(s)) == NULL)
		fatal("strdup");
	return (d);
}

static void
rds_wipe(char *s)
{
	if (s != NULL) {
		explicit_bzero(s, strlen(s));
		free(s);
	}
}

/* host:port as written in logs, [v6]:port for IPv6. */
void
rds_format_address(char *buf, size_t len, const char *host, int port)
{
	snprintf(buf, len, strchr(host, ':') != NULL ? "[%s]:%d" : "%s:%d",
	    host, port);
}

/*
 * What to say about an error reply to AUTH or SELECT: its code (the
 * first word, "WRONGPASS"), and for codes that do not explain themselves
 * the rest of the line, unless it holds the password (Redis does not
 * echo it, but this is the one place that could).
 */
void
rds_error_text(char *buf, size_t len, const redisReply *r,
    const char *password)
{
	char	 msg[160];
	size_t	 i, n, code;

	if (r == NULL || r->type != REDIS_REPLY_ERROR || r->str == NULL) {
		snprintf(buf, len, "unexpected reply");
		return;
	}
	n = (size_t)r->len < sizeof(msg) - 1 ? (size_t)r->len :
	    sizeof(msg) - 1;
	for (i = 0; i < n; i++)
		msg[i] = r->str[i] >= ' ' && r->str[i] <= '~' &&
		    r->str[i] != '"' ? r->str[i] : '?';
	msg[n] = '\0';
	code = strcspn(msg, " ");
	if (password != NULL && *password != '\0' &&
	    memmem(r->str, r->len, password, strlen(password)) != NULL)
		n = code;
	if (strncmp(msg, "WRONGPASS", code) == 0 ||
	    strncmp(msg, "NOPERM", code) == 0 || code == n)
		snprintf(buf, len, "%.*s", (int)code, msg);
	else
		snprintf(buf, len, "%.*s: %s", (int)code, msg, msg + code + 1);
}

/*
 * The kind of an error reply, for log lines an operator acts on: its
 * code ("NOPERM", "NOAUTH", "WRONGPASS", "ERR"), except that a command
 * a script may not run is NOPERM too: Redis 7.0 words it "ERR The user
 * executing the script can't ...".
 */
const char *
rds_error_kind(const struct redisReply *r, char *buf, size_t len)
{
	size_t	 n;

	if (r == NULL || r->type != REDIS_REPLY_ERROR || r->str == NULL)
		return ("unexpected");
	if (strstr(r->str, "user executing the script can't") != NULL ||
	    strstr(r->str, "NOPERM") != NULL)
		return ("NOPERM");
	n = strcspn(r->str, " ");
	if (n >= len)
		n = len - 1;
	memcpy(buf, r->str, n);
	buf[n] = '\0';
	return (buf);
}

/* "authentication failed for user 'u'" or "... the default user". */
static void
rds_auth_failed(char *buf, size_t len, const char *address,
    const char *username, const char *why)
{
	if (username != NULL)
		snprintf(buf, len, "redis %s: authentication failed for user "
		    "'%s' (%s)", address, username, why);
	else
		snprintf(buf, len, "redis %s: authentication failed for the "
		    "default user (%s)", address, why);
}

/* A new link, not connected yet (rds_start()).  Copies the params. */
struct rds *
rds_new(struct event_base *base, const struct rds_params *p,
    const struct rds_ops *ops, void *arg)
{
	struct rds	*l;
	size_t		 i;

	if ((l = calloc(1, sizeof(*l))) == NULL)
		fatal("calloc");
	l->base = base;
	l->p = *p;
	l->name = rds_strdup(p->name != NULL ? p->name : "redis");
	l->host = rds_strdup(p->host);
	l->username = rds_strdup(p->username);
	l->password = rds_strdup(p->password);
	l->p.name = l->name;
	l->p.host = l->host;
	l->p.username = l->username;
	l->p.password = l->password;
	rds_format_address(l->address, sizeof(l->address), l->host, p->port);
	if (p->nsentinels > 0) {
		if ((l->sentinels = calloc(p->nsentinels,
		    sizeof(*l->sentinels))) == NULL)
			fatal("calloc");
		for (i = 0; i < p->nsentinels; i++)
			l->sentinels[i] = rds_strdup(p->sentinels[i]);
		l->master_name = rds_strdup(p->master_name);
		l->susername = rds_strdup(p->sentinel_username);
		l->spassword = rds_strdup(p->sentinel_password);
		l->p.sentinels = l->sentinels;
		l->p.master_name = l->master_name;
		l->p.sentinel_username = l->susername;
		l->p.sentinel_password = l->spassword;
		/* Not known before a sentinel says. */
		snprintf(l->address, sizeof(l->address), "master %s",
		    l->master_name);
	}
	l->ops = ops;
	l->arg = arg;
	TAILQ_INIT(&l->cmds);
	return (l);
}

/*
 * Make the link a subscriber of a channel (before rds_start()).  It is
 * subscribed again on every connection, before up is called; it can
 * send no commands.
 */
void
rds_subscribe(struct rds *l, const char *chan)
{
	char	**c;

	if ((c = reallocarray(l->chans, l->nchans + 1, sizeof(*c))) == NULL)
		fatal("reallocarray");
	l->chans = c;
	l->chans[l->nchans++] = rds_strdup(chan);
}

/* The owner's pointer, as given to rds_new(). */
void *
rds_data(const struct rds *l)
{
	return (l->arg);
}

/* Whether commands may be sent. */
int
rds_ready(const struct rds *l)
{
	return (l != NULL && l->state == RDS_READY);
}

/* Which connection the link is on: one more for each connect. */
uint64_t
rds_generation(const struct rds *l)
{
	return (l->gen);
}

/* host:port, for the owner's log lines. */
const char *
rds_address(const struct rds *l)
{
	return (l->address);
}

/* Arm ev_timer for the nearest deadline: getting ready, or a reply. */
void
rds_arm(struct rds *l)
{
	struct rds_cmd	*c;
	struct timeval	 tv;
	uint64_t	 due, t = now_ms();

	if (l->state == RDS_DOWN)
		due = 0;
	else if (l->state != RDS_READY)
		due = l->since_ms + l->p.connect_timeout_ms;
	else if (l->p.command_timeout_ms > 0 &&
	    (c = TAILQ_FIRST(&l->cmds)) != NULL)
		due = c->sent_ms + l->p.command_timeout_ms;
	else
		due = 0;
	if (due == 0) {
		evtimer_del(l->ev_timer);
		return;
	}
	due = due > t ? due - t : 0;
	tv.tv_sec = due / 1000;
	tv.tv_usec = (due % 1000) * 1000;
	evtimer_add(l->ev_timer, &tv);
}

static void
rds_timer_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct rds	*l = arg;
	struct rds_cmd	*c;
	uint64_t	 t = now_ms();

	if (l->state == RDS_RESOLVING &&
	    t >= l->since_ms + l->p.connect_timeout_ms) {
		rds_sentinel_next(l, "timeout", 1);
		return;
	}
	if (l->state != RDS_DOWN && l->state != RDS_READY &&
	    t >= l->since_ms + l->p.connect_timeout_ms) {
		rds_lost(l, "connect timeout", 1);
		return;
	}
	if (l->state == RDS_READY && l->p.command_timeout_ms > 0 &&
	    (c = TAILQ_FIRST(&l->cmds)) != NULL &&
	    t >= c->sent_ms + l->p.command_timeout_ms) {
		rds_lost(l, "reply timeout", 1);
		return;
	}
	rds_arm(l);
}

static void
rds_retry_cb(evutil_socket_t fd, short ev, void *arg)
{
	rds_connect(arg);
}

/*
 * Log a failure to get the link ready, once until it changes or the
 * link comes up: a wrong password retried every reconnect_max would
 * otherwise fill the log.
 */
void
rds_log_failure(struct rds *l, const char *what)
{
	if (strncmp(l->lasterr, what, sizeof(l->lasterr) - 1) == 0)
		return;
	snprintf(l->lasterr, sizeof(l->lasterr), "%s", what);
	log_warn("- rds %s_failed link=%s address=%s error=\"%s\"",
	    l->state == RDS_AUTH ? "auth" : l->state == RDS_SELECT ?
	    "select" : l->state == RDS_ROLE ? "role" : l->state ==
	    RDS_RESOLVING ? "sentinel" : "subscribe", l->name, l->address,
	    what);
}

/*
 * The link is gone or given up.  free_it: free the hiredis context here
 * (hiredis frees it itself after a failed connect and a disconnect).
 * The owner hears of it before the context is freed, so that the NULL
 * replies of its pending commands find it knowing.
 */
void
rds_lost(struct rds *l, const char *why, int free_it)
{
	redisAsyncContext	*rc = l->rc, *sc = l->sc;
	struct timeval		 tv;
	int			 was_up = l->state == RDS_READY;

	l->rc = NULL;
	if ((l->sc = NULL, sc) != NULL) {
		sc->data = NULL;
		redisAsyncFree(sc);
	}
	l->state = RDS_DOWN;
	if (rc != NULL)
		rc->data = NULL;
	evtimer_del(l->ev_timer);
	/*
	 * The back-off starts again only after a link that stayed up a
	 * while: one its owner drops at once (a script refused, NOPERM)
	 * must not reconnect every reconnect_min.
	 */
	if (was_up && now_ms() - l->up_ms >= (uint64_t)l->p.reconnect_max_ms)
		l->backoff_ms = 0;
	if (l->backoff_ms == 0)
		l->backoff_ms = l->p.reconnect_min_ms;
	else if ((l->backoff_ms *= 2) > l->p.reconnect_max_ms)
		l->backoff_ms = l->p.reconnect_max_ms;
	tv.tv_sec = l->backoff_ms / 1000;
	tv.tv_usec = (l->backoff_ms % 1000) * 1000;
	evtimer_add(l->ev_retry, &tv);
	log_debug("- rds down link=%s address=%s reason=\"%s\" retry_ms=%d",
	    l->name, l->address, why, l->backoff_ms);
	if (l->ops != NULL && l->ops->down != NULL)
		l->ops->down(l, l->arg, why, was_up);
	if (rc != NULL && free_it)
		redisAsyncFree(rc);
}

/* The owner gave the link up (a bad reply, too slow): drop, reconnect. */
void
rds_reset(struct rds *l, const char *why)
{
	if (l->state == RDS_DOWN)
		return;
	rds_lost(l, why, 1);
}

static void
rds_up(struct rds *l)
{
	l->state = RDS_READY;
	l->up_ms = now_ms();
	l->lasterr[0] = '\0';
	rds_arm(l);
	log_debug("- rds up link=%s address=%s database=%d", l->name,
	    l->address, l->p.database);
	if (l->ops != NULL && l->ops->up != NULL)
		l->ops->up(l, l->arg);
}

/*
 * A subscriber's replies: the confirmations of SUBSCRIBE (the last one
 * makes the link up) and then messages.  hiredis keeps this callback
 * per channel and calls it with NULL when the context is freed.
 */
static void
rds_on_sub(redisAsyncContext *rc, void *r, void *priv)
{
	struct rds	*l = priv;
	redisReply	*reply = r, *e;
	char		 why[160];

	if (reply == NULL || rc->data != l || rc != l->rc)
		return;
	if (reply->type == REDIS_REPLY_ERROR) {
		rds_error_text(why, sizeof(why), reply, NULL);
		rds_log_failure(l, why);
		rds_lost(l, "subscribe refused", 1);
		return;
	}
	if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 3 ||
	    (e = reply->element[0])->type != REDIS_REPLY_STRING ||
	    reply->element[1]->type != REDIS_REPLY_STRING)
		return;
	if (strcasecmp(e->str, "subscribe") == 0) {
		if (l->state == RDS_SUBSCRIBING &&
		    ++l->nsubscribed == l->nchans)
			rds_up(l);
		return;
	}
	if (strcasecmp(e->str, "message") == 0 && l->state == RDS_READY &&
	    reply->element[2]->type == REDIS_REPLY_STRING &&
	    l->ops != NULL && l->ops->message != NULL)
		l->ops->message(l, l->arg, reply->element[1]->str,
		    reply->element[1]->len, reply->element[2]->str,
		    reply->element[2]->len);
}

/* Authenticated and on its database: subscribe, or be up. */
void
rds_selected(struct rds *l)
{
	const char	**argv;
	size_t		 *lens, i;

	if (l->sentinels != NULL && l->state != RDS_ROLE) {
		l->state = RDS_ROLE;
		if (redisAsyncCommand(l->rc, rds_on_role, l, "ROLE") !=
		    REDIS_OK)
			rds_lost(l, "role failed", 1);
		return;
	}
	if (l->nchans == 0) {
		rds_up(l);
		return;
	}
	if ((argv = calloc(l->nchans + 1, sizeof(*argv))) == NULL ||
	    (lens = calloc(l->nchans + 1, sizeof(*lens))) == NULL)
		fatal("calloc");
	argv[0] = "SUBSCRIBE";
	lens[0] = 9;
	for (i = 0; i < l->nchans; i++) {
		argv[i + 1] = l->chans[i];
		lens[i + 1] = strlen(l->chans[i]);
	}
	l->state = RDS_SUBSCRIBING;
	l->nsubscribed = 0;
	i = redisAsyncCommandArgv(l->rc, rds_on_sub, l, l->nchans + 1,
	    argv, lens) == REDIS_OK;
	free(argv);
	free(lens);
	if (!i)
		rds_lost(l, "subscribe failed", 1);
}

static void
rds_on_select(redisAsyncContext *rc, void *r, void *priv)
{
	struct rds	*l = priv;
	redisReply	*reply = r;
	char		 why[160], msg[256];

	if (reply == NULL || rc->data != l || rc != l->rc)
		return;
	if (reply->type != REDIS_REPLY_STATUS) {
		rds_error_text(why, sizeof(why), reply, NULL);
		snprintf(msg, sizeof(msg), "SELECT %d refused (%s)",
		    l->p.database, why);
		rds_log_failure(l, msg);
		rds_lost(l, "select refused", 1);
		return;
	}
	rds_selected(l);
}

/* Authenticated: select the database (0 is where a connection starts). */
static void
rds_authenticated(struct rds *l)
{
	char	 db[16];

	if (l->p.database == 0) {
		rds_selected(l);
		return;
	}
	snprintf(db, sizeof(db), "%d", l->p.database);
	l->state = RDS_SELECT;
	if (redisAsyncCommand(l->rc, rds_on_select, l, "SELECT %s", db) !=
	    REDIS_OK)
		rds_lost(l, "select failed", 1);
}

static void
rds_on_auth(redisAsyncContext *rc, void *r, void *priv)
{
	struct rds	*l = priv;
	redisReply	*reply = r;
	char		 why[160], msg[1024];

	if (reply == NULL || rc->data != l || rc != l->rc)
		return;
	if (reply->type != REDIS_REPLY_STATUS) {
		rds_error_text(why, sizeof(why), reply, l->password);
		rds_auth_failed(msg, sizeof(msg), l->address, l->username,
		    why);
		rds_log_failure(l, msg);
		rds_lost(l, "authentication failed", 1);
		return;
	}
	rds_authenticated(l);
}

static void
rds_on_connect(const redisAsyncContext *crc, int status)
{
	struct rds	*l = crc->data;
	const char	*argv[3];
	size_t		 lens[3];
	int		 argc = 0;

	if (l == NULL || crc != l->rc)
		return;
	if (status != REDIS_OK) {
		/* hiredis frees the context after this returns. */
		rds_lost(l, crc->errstr[0] != '\0' ? crc->errstr :
		    "connect failed", 0);
		return;
	}
	if (l->password == NULL) {
		rds_authenticated(l);
		return;
	}
	argv[argc] = "AUTH";
	lens[argc++] = 4;
	if (l->username != NULL) {
		argv[argc] = l->username;
		lens[argc++] = strlen(l->username);
	}
	argv[argc] = l->password;
	lens[argc++] = strlen(l->password);
	l->state = RDS_AUTH;
	if (redisAsyncCommandArgv(l->rc, rds_on_auth, l, argc, argv, lens) !=
	    REDIS_OK)
		rds_lost(l, "auth failed", 1);
}

static void
rds_on_disconnect(const redisAsyncContext *crc, int status)
{
	struct rds	*l = crc->data;

	if (l == NULL || crc != l->rc)
		return;
	/*
	 * hiredis answers an error reply to SUBSCRIBE (NOPERM: a channel
	 * the user may not read) by dropping the connection with the error
	 * as its reason.
	 */
	if (l->state == RDS_SUBSCRIBING && crc->errstr[0] != '\0')
		rds_log_failure(l, crc->errstr);
	rds_lost(l, crc->errstr[0] != '\0' ? crc->errstr : "disconnected",
	    0);
}

/* Connect, unless a connection is up or on its way. */
static void
rds_connect(struct rds *l)
{
	if (l->rc != NULL || l->sc != NULL)
		return;
	if (l->sentinels != NULL) {
		l->sidx = 0;
		rds_ask_sentinel(l);
		return;
	}
	rds_connect_master(l);
}

/* Connect to l->host, the configured one or the sentinels' master. */
void
rds_connect_master(struct rds *l)
{
	redisAsyncContext	*rc;

	/* The address is numeric (config): this does not resolve names. */
	if ((rc = redisAsyncConnect(l->host, l->p.port)) == NULL)
		fatal("redisAsyncConnect");
	l->gen++;
	l->since_ms = now_ms();
	l->state = RDS_CONNECTING;
	if (rc->err) {
		log_debug("- rds connect link=%s error=\"%s\"", l->name,
		    rc->errstr);
		redisAsyncFree(rc);
		rds_lost(l, "connect failed", 0);
		return;
	}
	/* An idle link (a subscriber) learns of a dead peer this way. */
	redisEnableKeepAlive(&rc->c);
	rc->data = l;
	l->rc = rc;
	rds_ev_attach(rc, l->base);
	redisAsyncSetConnectCallback(rc, rds_on_connect);
	redisAsyncSetDisconnectCallback(rc, rds_on_disconnect);
	rds_arm(l);
}

/* Start connecting; from now on the link keeps itself connected. */
void
rds_start(struct rds *l)
{
	if (l->started)
		return;
	l->started = 1;
	if ((l->ev_retry = evtimer_new(l->base, rds_retry_cb, l)) == NULL ||
	    (l->ev_timer = evtimer_new(l->base, rds_timer_cb, l)) == NULL)
		fatal("evtimer_new");
	rds_connect(l);
}

/*
 * Close the link for good.  Pending commands get their NULL reply here;
 * down is not called.  Never from one of the link's own callbacks.
 */
void
rds_free(struct rds *l)
{
	redisAsyncContext	*rc;
	size_t			 i;

	if (l == NULL)
		return;
	if ((rc = l->rc) != NULL) {
		l->rc = NULL;
		l->state = RDS_DOWN;
		rc->data = NULL;
		redisAsyncFree(rc);
	}
	if ((rc = l->sc) != NULL) {
		l->sc = NULL;
		rc->data = NULL;
		redisAsyncFree(rc);
	}
	for (i = 0; i < l->p.nsentinels; i++)
		free(l->sentinels[i]);
	free(l->sentinels);
	free(l->master_name);
	rds_wipe(l->susername);
	rds_wipe(l->spassword);
	if (l->ev_retry != NULL)
		event_free(l->ev_retry);
	if (l->ev_timer != NULL)
		event_free(l->ev_timer);
	for (i = 0; i < l->nchans; i++)
		free(l->chans[i]);
	free(l->chans);
	free(l->name);
	free(l->host);
	rds_wipe(l->username);
	rds_wipe(l->password);
	free(l);
}

/* hiredis' callback for every command: the owner's, then our record. */
static void
rds_on_reply(redisAsyncContext *rc, void *r, void *priv)
{
	struct rds_cmd	*c = priv;
	struct rds	*l = c->l;
	int		 head = c == TAILQ_FIRST(&l->cmds);

	redisReply	*reply = r;
	int		 demoted;

	TAILQ_REMOVE(&l->cmds, c, entry);
	if (r != NULL && head && l->state == RDS_READY)
		rds_arm(l);
	/* The master became a replica under the link: find the new one. */
	demoted = l->sentinels != NULL && reply != NULL &&
	    reply->type == REDIS_REPLY_ERROR && reply->str != NULL &&
	    strncmp(reply->str, "READONLY", 8) == 0;
	c->fn(l, r, c->arg);
	free(c);
	if (demoted && l->state == RDS_READY && l->rc == rc)
		rds_lost(l, "master demoted (READONLY)", 1);
}

static struct rds_cmd *
rds_cmd_new(struct rds *l, rds_reply_fn *fn, void *arg)
{
	struct rds_cmd	*c;

	if ((c = malloc(sizeof(*c))) == NULL)
		fatal("malloc");
	c->l = l;
	c->fn = fn;
	c->arg = arg;
	c->sent_ms = now_ms();
	return (c);
}

/* Queue the command c was made for; 0, or -1 (then c is freed). */
static int
rds_cmd_sent(struct rds *l, struct rds_cmd *c, int status)
{
	if (status != REDIS_OK) {
		free(c);
		return (-1);
	}
	TAILQ_INSERT_TAIL(&l->cmds, c, entry);
	if (TAILQ_FIRST(&l->cmds) == c)
		rds_arm(l);
	return (0);
}

/*
 * Send a command (argv form) on a ready link.  0: fn will be called
 * once, with the reply or NULL; -1: not sent, fn will not be called.
 */
int
rds_command_argv(struct rds *l, rds_reply_fn *fn, void *arg, int argc,
    const char **argv, const size_t *lens)
{
	struct rds_cmd	*c;

	if (l->state != RDS_READY || l->nchans > 0)
		return (-1);
	c = rds_cmd_new(l, fn, arg);
	return (rds_cmd_sent(l, c, redisAsyncCommandArgv(l->rc, rds_on_reply,
	    c, argc, argv, lens)));
}

/* Send a command already in RESP; as rds_command_argv(). */
int
rds_command_formatted(struct rds *l, rds_reply_fn *fn, void *arg,
    const char *cmd, size_t len)
{
	struct rds_cmd	*c;

	if (l->state != RDS_READY || l->nchans > 0)
		return (-1);
	c = rds_cmd_new(l, fn, arg);
	return (rds_cmd_sent(l, c, redisAsyncFormattedCommand(l->rc,
	    rds_on_reply, c, cmd, len)));
}

/*
 * The blocking handshake: connect, AUTH, SELECT, each bounded by the
 * connect timeout.  0 and *out (the caller sets its own timeout for what
 * follows and frees it); RDS_SYNC_DOWN when Redis could not be reached
 * in time, RDS_SYNC_REFUSED when it refused the credentials or the
 * database (that will not fix itself), each with *cause, which never
 * holds the password.
 */
int
rds_connect_sync_at(const struct rds_params *p, struct redisContext **out,
    char **cause)
{
	redisContext	*rc;
	redisReply	*r;
	struct timeval	 tv;
	const char	*argv[3];
	size_t		 lens[3];
	char		 address[300], why[160], msg[1024], db[16];
	int		 argc = 0;

	*out = NULL;
	rds_format_address(address, sizeof(address), p->host, p->port);
	tv.tv_sec = p->connect_timeout_ms / 1000;
	tv.tv_usec = (p->connect_timeout_ms % 1000) * 1000;
	rc = redisConnectWithTimeout(p->host, p->port, tv);
	if (rc == NULL || rc->err) {
		if (asprintf(cause, "redis %s: cannot connect: %s", address,
		    rc != NULL ? rc->errstr : "out of memory") == -1)
			*cause = NULL;
		if (rc != NULL)
			redisFree(rc);
		return (RDS_SYNC_DOWN);
	}
	redisSetTimeout(rc, tv);
	if (p->password != NULL) {
		argv[argc] = "AUTH";
		lens[argc++] = 4;
		if (p->username != NULL) {
			argv[argc] = p->username;
			lens[argc++] = strlen(p->username);
		}
		argv[argc] = p->password;
		lens[argc++] = strlen(p->password);
		if ((r = redisCommandArgv(rc, argc, argv, lens)) == NULL)
			goto lost;
		if (r->type != REDIS_REPLY_STATUS) {
			rds_error_text(why, sizeof(why), r, p->password);
			freeReplyObject(r);
			rds_auth_failed(msg, sizeof(msg), address, p->username,
			    why);
			goto refused;
		}
		freeReplyObject(r);
	}
	if (p->database != 0) {
		snprintf(db, sizeof(db), "%d", p->database);
		if ((r = redisCommand(rc, "SELECT %s", db)) == NULL)
			goto lost;
		if (r->type != REDIS_REPLY_STATUS) {
			rds_error_text(why, sizeof(why), r, NULL);
			freeReplyObject(r);
			snprintf(msg, sizeof(msg), "redis %s: SELECT %d "
			    "refused (%s)", address, p->database, why);
			goto refused;
		}
		freeReplyObject(r);
	}
	*out = rc;
	return (0);
lost:
	if (asprintf(cause, "redis %s: %s", address, rc->errstr) == -1)
		*cause = NULL;
	redisFree(rc);
	return (RDS_SYNC_DOWN);
refused:
	if ((*cause = strdup(msg)) == NULL)
		fatal("strdup");
	redisFree(rc);
	return (RDS_SYNC_REFUSED);
}

/*
 * The blocking handshake, to the master: with sentinels, ask them for
 * it, and check with ROLE that it is one (rds_sentinel.c).
 */
int
rds_connect_sync(const struct rds_params *p, struct redisContext **out,
    char **cause)
{
	if (p->nsentinels == 0)
		return (rds_connect_sync_at(p, out, cause));
	return (rds_connect_sync_sentinel(p, out, cause));
}

/*
 * rds_connect_sync() for a command-line tool: on failure, print the cause
 * as "portcullis: WHO: CAUSE" ("portcullis: CAUSE" when who is NULL).
 * Returns what rds_connect_sync() returned.
 */
int
rds_connect_cli(const struct rds_params *p, const char *who,
    struct redisContext **out)
{
	char	*cause = NULL;
	int	 st;

	if ((st = rds_connect_sync(p, out, &cause)) != 0) {
		fprintf(stderr, "portcullis: %s%s%s\n", who != NULL ? who : "",
		    who != NULL ? ": " : "", cause != NULL ? cause :
		    "cannot connect to Redis");
		free(cause);
	}
	return (st);
}

/*
 * At start: with credentials configured, try them on every address a
 * link will use (redis.address, and audit.redis when it differs), so
 * that a wrong password or an unknown user stops the gateway with a
 * clear message instead of failing every connection it makes.  A Redis
 * that cannot be reached is only a warning: the audit spools, and the
 * link connects when Redis is back.  -1 and *cause when refused.
 */
int
rds_startup_check(const struct config *conf, char **cause)
{
	struct rds_params	 p;
	redisContext		*rc;
	char			*why = NULL;
	int			 i, rv;

	if (conf->redis == NULL || conf->redis->password == NULL)
		return (0);
	for (i = 0; i < 2; i++) {
		rds_params_init(&p, conf, "check");
		if (i == 1) {
			if (conf->audit == NULL ||
			    (strcmp(conf->audit->redis_host, p.host) == 0 &&
			    conf->audit->redis_port == p.port))
				break;
			p.host = conf->audit->redis_host;
			p.port = conf->audit->redis_port;
		}
		rv = rds_connect_sync(&p, &rc, &why);
		if (rv == 0) {
			redisFree(rc);
			continue;
		}
		if (rv == RDS_SYNC_REFUSED) {
			*cause = why;
			return (-1);
		}
		log_warn("- rds startup_check %s; not fatal: the links "
		    "connect when it is back", why != NULL ? why :
		    "cannot connect");
		free(why);
		why = NULL;
	}
	return (0);
}
