/*
 * server.c: the daemon's life cycle.  Loads the config snapshot, sets up the
 * event base, DNS, the listener (plain or TLS) and signal handling, runs
 * the loop, and on SIGTERM/SIGINT drains: stop accepting, let in-flight
 * requests finish (up to timeouts.drain), close idle keep-alive
 * connections, then exit.
 *
 * SIGHUP reloads (the config, the TLS certificate, the token keys), SIGUSR1
 * reopens log.file; started as root with "user" set, the process drops to
 * that user once the listeners are bound and the keys read (privdrop.c).
 *
 * limits.max_connections: at the limit the listener is disabled, so
 * further connections wait in the kernel's listen backlog (not reset);
 * it is enabled again when a connection has been freed.  A worker's main
 * listener is also off while the accept balance says another worker
 * should take the next connections (master.c, server_balance()).
 */
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <netinet/in.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/dns.h>

#include "audit.h"
#include "oidc.h"
#include "portcullis.h"
#include "revoke.h"
#include "secrets.h"
#include "rds.h"
#include "policy.h"
#include "privdrop.h"

static void	server_fd_limit(const struct config *);

/* Stop or resume accepting, on the main and the admin listener alike. */
static void
server_listeners_enable(struct pc_ctx *ctx, int on)
{
	if (ctx->listener != NULL) {
		if (on && !ctx->balance_stopped)
			evconnlistener_enable(ctx->listener);
		else
			evconnlistener_disable(ctx->listener);
	}
	if (ctx->admin_listener != NULL) {
		if (on)
			evconnlistener_enable(ctx->admin_listener);
		else
			evconnlistener_disable(ctx->admin_listener);
	}
}

/*
 * The accept balance (master.c): publish this worker's open connections,
 * and switch its main listener off while it holds more than
 * worker_balance above the least loaded other worker, on again when it
 * does not (checked at every accept and close, and when another worker
 * wakes it).  Off inside the accept callback also ends libevent's accept
 * loop, so the rest of a burst stays in the queue for the others.
 */
static void
server_balance(struct pc_ctx *ctx)
{
	size_t	slack = ctx->conf->worker_balance;
	int	live = ctx->listener != NULL && !ctx->draining;
	int	ok, i;

	for (i = 0; i < 2; i++) {
		ok = master_balance(config_worker, ctx->nconns,
		    ctx->balance_stopped, live, slack,
		    (uint64_t)ctx->conf->worker_stall_ms);
		if (!live || ok == !ctx->balance_stopped)
			return;
		/*
		 * Stopping: publish it and look once more, as a worker
		 * whose count rose meanwhile read our slot before it said
		 * stopped and woke no one (master.c).
		 */
		ctx->balance_stopped = !ok;
		if (!ctx->listener_paused) {
			if (ok)
				evconnlistener_enable(ctx->listener);
			else
				evconnlistener_disable(ctx->listener);
		}
		if (ok) {
			(void)master_balance(config_worker, ctx->nconns, 0,
			    live, slack, (uint64_t)ctx->conf->worker_stall_ms);
			return;
		}
	}
}

static void
server_balance_wake_cb(evutil_socket_t fd, short ev, void *arg)
{
	uint64_t	n;

	(void)read(fd, &n, sizeof(n));
	master_balance_woken(config_worker);
	server_balance(arg);
}

/*
 * Every MASTER_BEAT_MS: tell the others this loop still turns, and look
 * again while stopped (a worker that stopped running no longer counts
 * after timeouts.worker_stall, and wakes no one).
 */
static void
server_balance_beat_cb(evutil_socket_t fd, short ev, void *arg)
{
	server_balance(arg);
}

/* The loop's first turn: only now does this worker accept. */
static void
server_balance_start_cb(evutil_socket_t fd, short ev, void *arg)
{
	server_balance(arg);
}

static void
server_accepted(struct pc_ctx *ctx)
{
	if (ctx->nconns >= ctx->conf->max_connections &&
	    !ctx->listener_paused) {
		log_info("- server pause_accept reason=max_connections n=%zu",
		    ctx->nconns);
		ctx->listener_paused = 1;
		server_listeners_enable(ctx, 0);
	}
	server_balance(ctx);
}

static void
server_accept_cb(struct evconnlistener *l, evutil_socket_t fd,
    struct sockaddr *sa, int salen, void *arg)
{
	struct pc_ctx	*ctx = arg;

	if (ctx->draining) {
		close(fd);
		return;
	}
	/*
	 * Accepted despite the limit only when a reload lowered it; the
	 * listener stops below and the count falls as connections end.
	 */
	conn_accept(ctx, fd, sa, salen);
	server_accepted(ctx);
}

/* admin.listen: the same limits, operations paths only (req_route). */
static void
server_admin_accept_cb(struct evconnlistener *l, evutil_socket_t fd,
    struct sockaddr *sa, int salen, void *arg)
{
	struct pc_ctx	*ctx = arg;

	if (ctx->draining) {
		close(fd);
		return;
	}
	conn_accept_admin(ctx, fd, sa, salen);
	server_accepted(ctx);
}

/*
 * accept(2) failed: out of descriptors (EMFILE, ENFILE) or memory.  The
 * connection stays in the backlog and the listener readable, so libevent
 * would call this again at once, in a busy loop writing a log line each
 * time.  Pause accepting as at limits.max_connections instead: a freed
 * connection resumes it (server_conn_gone()), or, when descriptors were
 * held elsewhere (upstreams, cache files), a retry a second later.
 */
static void
server_accept_error_cb(struct evconnlistener *l, void *arg)
{
	struct pc_ctx	*ctx = arg;
	struct timeval	 tv = { 1, 0 };
	int		 e = EVUTIL_SOCKET_ERROR();

	log_warn("- server accept_error error=\"%s\" open=%zu: pausing "
	    "accept", evutil_socket_error_to_string(e), ctx->nconns);
	ctx->listener_paused = 1;
	server_listeners_enable(ctx, 0);
	if (ctx->ev_accept_retry != NULL)
		evtimer_add(ctx->ev_accept_retry, &tv);
}

static void
server_accept_retry_cb(evutil_socket_t fd, short ev, void *arg)
{
	server_conn_gone(arg);
}

/*
 * Connections were freed: accept again if the listener was paused at
 * limits.max_connections (or out of descriptors); exit the loop once
 * draining and nothing is left.
 */
void
server_conn_gone(struct pc_ctx *ctx)
{
	server_balance(ctx);
	if (ctx->listener_paused && ctx->listener != NULL &&
	    !ctx->draining && ctx->nconns < ctx->conf->max_connections) {
		ctx->listener_paused = 0;
		server_listeners_enable(ctx, 1);
		log_info("- server resume_accept n=%zu", ctx->nconns);
	}
	if (ctx->draining && ctx->nconns == 0)
		event_base_loopexit(ctx->base, NULL);
}

static void
server_drain_timeout_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct pc_ctx	*ctx = arg;

	log_warn("- server drain_timeout open=%zu", ctx->nconns);
	event_base_loopexit(ctx->base, NULL);
}

static void
server_signal_cb(evutil_socket_t sig, short ev, void *arg)
{
	struct pc_ctx	*ctx = arg;
	struct conn	*c, *next;
	struct timeval	 tv;

	if (ctx->draining) {
		log_info("- server signal=%d again: exiting now", (int)sig);
		event_base_loopexit(ctx->base, NULL);
		return;
	}
	ctx->draining = 1;
	sd_notify_state("STOPPING=1");
	log_info("- server drain start signal=%d open=%zu", (int)sig,
	    ctx->nconns);
	if (ctx->listener != NULL) {
		evconnlistener_free(ctx->listener);
		ctx->listener = NULL;
	}
	if (ctx->admin_listener != NULL) {
		evconnlistener_free(ctx->admin_listener);
		ctx->admin_listener = NULL;
	}
	/* Idle connections go now; busy ones close after their request. */
	TAILQ_FOREACH_SAFE(c, &ctx->conns, entry, next)
		if (c->req == NULL)
			conn_close(c, "draining");
	tv.tv_sec = ctx->conf->drain_timeout_ms / 1000;
	tv.tv_usec = (ctx->conf->drain_timeout_ms % 1000) * 1000;
	ctx->ev_drain = evtimer_new(ctx->base, server_drain_timeout_cb, ctx);
	evtimer_add(ctx->ev_drain, &tv);
	server_conn_gone(ctx);
}

/* Say how many rules are in force; an empty policy denies every request. */
static void
server_policy_note(const struct config *conf)
{
	if (policy_nrules(conf->policy) == 0)
		log_warn("- policy: no rules, every request is denied");
	else
		log_info("- policy loaded rules=%zu",
		    policy_nrules(conf->policy));
}

/* Count a reload's result and tell systemd it is over. */
static void
server_reload_result(struct pc_ctx *ctx, int ok)
{
	if (ctx->metrics != NULL)
		metrics_add(ctx->metrics, M_RELOADS, ok ? MA_OK : MA_FAILED,
		    1);
	sd_notify_state("READY=1");
}

/*
 * SIGHUP: load the file again and swap the snapshot in when it validates
 * and changes nothing that needs a restart.  Connections keep the snapshot
 * they were accepted with; new ones get the new one.  The snapshot holds
 * the token keys (config_access.c reads them again); the TLS certificate
 * and key are read again into a new SSL_CTX here.  SSL_new() takes a
 * reference on its context, so open connections keep the one they
 * started with, and the old context is freed with the last of them.  Any
 * failure (a bad certificate, a key that does not match it, a file the
 * dropped user may not read) keeps everything as it was and says why.
 */
static void
server_reload_cb(evutil_socket_t sig, short ev, void *arg)
{
	struct pc_ctx		*ctx = arg;
	struct config		*conf;
	struct ssl_ctx_st	*tls = NULL;
	char			*cause = NULL;

	sd_notify_state("RELOADING=1");
	log_info("- server reload start file=%s", ctx->conf_path);
	if ((conf = config_load(ctx->conf_path, &cause)) == NULL) {
		log_warn("- server reload failed, keeping the running "
		    "config:\n%s", cause != NULL ? cause : "unknown error");
		free(cause);
		server_reload_result(ctx, 0);
		return;
	}
	if (config_reload_check(ctx->conf, conf, &cause) == -1) {
		log_warn("- server reload refused, restart needed:\n%s",
		    cause != NULL ? cause : "unknown error");
		free(cause);
		config_unref(conf);
		server_reload_result(ctx, 0);
		return;
	}
	if (conf->tls != NULL &&
	    (tls = tls_server_ctx(conf, &cause)) == NULL) {
		log_warn("- server reload failed, keeping the running config "
		    "and certificate: %s", cause != NULL ? cause :
		    "unknown error");
		free(cause);
		config_unref(conf);
		server_reload_result(ctx, 0);
		return;
	}
	if (tls != NULL) {
		tls_free_ctx(ctx->server_tls);	/* open connections keep it */
		ctx->server_tls = tls;
	}
	config_unref(ctx->conf);
	ctx->conf = conf;
	log_set_level(conf->log_level);
	log_info("- server reload done upstreams=%zu tls=%s", conf->nupstreams,
	    tls != NULL ? "reloaded" : "off");
	server_reload_result(ctx, 1);
	server_policy_note(conf);
	authz_config_loaded(conf);
	oidc_config_loaded(ctx);
	if (ctx->ratelimit == NULL)	/* a ratelimit section added */
		ctx->ratelimit = ratelimit_new(ctx);
	server_fd_limit(conf);	/* a raised max_connections needs them */
	server_conn_gone(ctx);	/* a raised max_connections applies */
}

/*
 * A listener on host:port (host "": every address) for cb; NULL with
 * *cause naming the key (`what`) and the address.
 */
static struct evconnlistener *
server_bind(struct pc_ctx *ctx, const char *host, int port,
    const char *address, const char *what, evconnlistener_cb cb,
    char **cause)
{
	struct sockaddr_storage	 ss;
	struct evconnlistener	*l;
	int			 sslen = sizeof(ss);
	char			 addr[300];

	memset(&ss, 0, sizeof(ss));
	if (host[0] == '\0') {
		struct sockaddr_in6	*s6 = (struct sockaddr_in6 *)&ss;

		s6->sin6_family = AF_INET6;
		s6->sin6_addr = in6addr_any;
		s6->sin6_port = htons(port);
		sslen = sizeof(*s6);
	} else {
		if (strchr(host, ':') != NULL)
			snprintf(addr, sizeof(addr), "[%s]:%d", host, port);
		else
			snprintf(addr, sizeof(addr), "%s:%d", host, port);
		if (evutil_parse_sockaddr_port(addr, (struct sockaddr *)&ss,
		    &sslen) != 0) {
			if (asprintf(cause, "%s: not a numeric address: %s",
			    what, address) == -1)
				*cause = NULL;
			return (NULL);
		}
	}
	l = evconnlistener_new_bind(ctx->base, cb, ctx,
	    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE |
	    LEV_OPT_CLOSE_ON_EXEC, 1024, (struct sockaddr *)&ss, sslen);
	if (l == NULL) {
		if (asprintf(cause, "cannot listen on %s: %s", address,
		    strerror(errno)) == -1)
			*cause = NULL;
		return (NULL);
	}
	evconnlistener_set_error_cb(l, server_accept_error_cb);
	return (l);
}

static int
server_listen(struct pc_ctx *ctx, char **cause)
{
	const struct config	*conf = ctx->conf;

	if ((ctx->listener = server_bind(ctx, conf->listen_host,
	    conf->listen_port, conf->listen_address, "/listen/address",
	    server_accept_cb, cause)) == NULL)
		return (-1);
	if (conf->admin_listen != NULL &&
	    (ctx->admin_listener = server_bind(ctx, conf->admin_listen_host,
	    conf->admin_listen_port, conf->admin_listen, "/admin/listen",
	    server_admin_accept_cb, cause)) == NULL)
		return (-1);
	return (0);
}

/* SIGUSR1: logrotate moved log.file away; write to a new one. */
static void
server_usr1_cb(evutil_socket_t sig, short ev, void *arg)
{
	log_reopen();
}

/*
 * The directories the gateway writes to after dropping privileges: a
 * clear message now rather than a failed cache fill or spool write later.
 */
int
server_check_dirs(const struct config *conf, char **cause)
{
	char	*dir, *slash;
	int	 rv = 0;

	if (conf->cache != NULL &&
	    priv_check_dir(conf->cache->dir, "cache.dir", cause) == -1)
		return (-1);
	if (conf->audit != NULL && conf->audit->spool_file != NULL) {
		if ((dir = strdup(conf->audit->spool_file)) == NULL)
			fatal("strdup");
		if ((slash = strrchr(dir, '/')) != NULL) {
			if (slash == dir)
				slash[1] = '\0';
			else
				*slash = '\0';
			rv = priv_check_dir(dir, "audit.spool_file's directory",
			    cause);
		}
		free(dir);
	}
	return (rv);
}

static void
server_reap_cb(evutil_socket_t fd, short ev, void *arg)
{
	conn_reap(arg);
}

/*
 * Each client connection can hold two descriptors (its socket and an
 * upstream socket or a cached file), four when its answer is spliced
 * (buffers.splice: the pipe's two ends too), each fill a temp file and a
 * hashing copy.  Raise the soft descriptor limit toward that (up to the hard
 * limit), and say so (at start or reload) when it stays below: a short
 * limit is not fatal (accept pauses while descriptors run out) but it is
 * a limit the operator did not configure.
 */
static void
server_fd_limit(const struct config *conf)
{
	struct rlimit	rl;
	rlim_t		want;

	want = (rlim_t)conf->max_connections * (conf->splice ? 4 : 2) + 64;
	if (conf->cache != NULL)
		want += (rlim_t)conf->cache->max_fills * 2;
	if (getrlimit(RLIMIT_NOFILE, &rl) == -1 || rl.rlim_cur >= want)
		return;
	if (rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= want)
		rl.rlim_cur = want;
	else
		rl.rlim_cur = rl.rlim_max;
	(void)setrlimit(RLIMIT_NOFILE, &rl);
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < want)
		log_warn("- server fd_limit open_files=%llu wanted=%llu: "
		    "raise the hard limit (ulimit -n, LimitNOFILE=) or lower "
		    "limits.max_connections; meanwhile accepting pauses when "
		    "descriptors run out", (unsigned long long)rl.rlim_cur,
		    (unsigned long long)want);
}

/*
 * After the listeners are bound and privileges dropped: open the cache,
 * the audit writer and the rest, then run the loop until drained.
 * Returns 0, or -1 with *cause set.
 */
static int
server_serve(struct pc_ctx *ctx, const char *path, char **cause)
{
	if (server_check_dirs(ctx->conf, cause) == -1)
		return (-1);
	if (ctx->conf->cache != NULL &&
	    (ctx->cache = cache_open(ctx, ctx->conf, cause)) == NULL)
		return (-1);
	if (ctx->conf->audit != NULL &&
	    (ctx->audit = audit_new(ctx, cause)) == NULL)
		return (-1);
	/* Revocation and secrets share the redis section's Redis. */
	if (ctx->conf->redis != NULL &&
	    ((ctx->revoke = revoke_new(ctx->base, ctx->conf)) == NULL ||
	    (ctx->secrets = secrets_new(ctx->base, ctx->conf,
	    ctx->revoke)) == NULL))
		fatalx("out of memory");
	uploads_start(ctx);	/* with Redis: every instance agrees */
	token_listen(ctx);	/* revocations purge verified tokens */
	sso_init(ctx);		/* the sign-in's Redis link */
	ctx->ratelimit = ratelimit_new(ctx);	/* NULL: no limits */
	ctx->ev_reap = event_new(ctx->base, -1, 0, server_reap_cb, ctx);
	ctx->ev_accept_retry = evtimer_new(ctx->base, server_accept_retry_cb,
	    ctx);
	ctx->ev_sigterm = evsignal_new(ctx->base, SIGTERM, server_signal_cb,
	    ctx);
	ctx->ev_sigint = evsignal_new(ctx->base, SIGINT, server_signal_cb,
	    ctx);
	evsignal_add(ctx->ev_sigterm, NULL);
	evsignal_add(ctx->ev_sigint, NULL);
	if (ctx->conf_path == NULL)
		ctx->conf_path = strdup(path);
	ctx->ev_sighup = evsignal_new(ctx->base, SIGHUP, server_reload_cb,
	    ctx);
	if (ctx->conf_path == NULL || ctx->ev_sighup == NULL)
		fatalx("out of memory");
	evsignal_add(ctx->ev_sighup, NULL);
	if ((ctx->ev_sigusr1 = evsignal_new(ctx->base, SIGUSR1,
	    server_usr1_cb, ctx)) == NULL)
		fatalx("out of memory");
	evsignal_add(ctx->ev_sigusr1, NULL);

	log_info("- server start version=%s listen=%s tls=%s upstreams=%zu%s%s"
	    " worker=%d pid=%d", PC_VERSION, ctx->conf->listen_address,
	    ctx->conf->tls ? "on" : "off", ctx->conf->nupstreams,
	    ctx->conf->admin_listen != NULL ? " admin_listen=" : "",
	    ctx->conf->admin_listen != NULL ? ctx->conf->admin_listen : "",
	    config_worker, (int)getpid());
	server_policy_note(ctx->conf);
	authz_config_loaded(ctx->conf);
	oidc_config_loaded(ctx);
	sd_notify_state("READY=1");
	event_base_dispatch(ctx->base);
	log_info("- server stop open=%zu", ctx->nconns);
	return (0);
}

/* Close what server_run() and server_serve() opened, then the ctx. */
static void
server_cleanup(struct pc_ctx *ctx)
{
	struct conn	*c;

	while ((c = TAILQ_FIRST(&ctx->conns)) != NULL)
		conn_close(c, "shutdown");
	if (ctx->base != NULL)
		conn_reap(ctx);
	cache_close(ctx->cache);	/* after the conns: no readers left */
	audit_free(ctx->audit);		/* after the conns: records spooled */
	oidc_free(ctx);			/* after the conns: no waiters left */
	token_free();			/* the verified-token cache */
	secrets_free(ctx->secrets);	/* after the conns: no checks left */
	sso_free(ctx);
	ratelimit_free(ctx->ratelimit);	/* after the conns: calls detached */
	revoke_free(ctx->revoke);
	uploads_free(ctx->uploads);
	referrers_free(ctx->referrers);
	if (ctx->base != NULL)
		conn_reap(ctx);		/* what the fills retired */
	uconn_pool_flush(ctx);
	upstream_state_free_all(ctx);
	tls_client_free_all(ctx);
	if (ctx->listener != NULL)
		evconnlistener_free(ctx->listener);
	if (ctx->admin_listener != NULL)
		evconnlistener_free(ctx->admin_listener);
	if (ctx->ev_reap != NULL)
		event_free(ctx->ev_reap);
	if (ctx->ev_accept_retry != NULL)
		event_free(ctx->ev_accept_retry);
	if (ctx->ev_balance != NULL)
		event_free(ctx->ev_balance);
	if (ctx->ev_beat != NULL)
		event_free(ctx->ev_beat);
	if (ctx->ev_sigterm != NULL)
		event_free(ctx->ev_sigterm);
	if (ctx->ev_sigint != NULL)
		event_free(ctx->ev_sigint);
	if (ctx->ev_sighup != NULL)
		event_free(ctx->ev_sighup);
	if (ctx->ev_sigusr1 != NULL)
		event_free(ctx->ev_sigusr1);
	if (ctx->ev_stage != NULL)
		event_free(ctx->ev_stage);
	free(ctx->conf_path);
	if (ctx->ev_drain != NULL)
		event_free(ctx->ev_drain);
	if (ctx->dns != NULL)
		evdns_base_free(ctx->dns, 0);
	tls_free_ctx(ctx->server_tls);
	metrics_worker_detach();
	if (ctx->base != NULL)
		event_base_free(ctx->base);
	metrics_stop(ctx);
	config_unref(ctx->conf);
	free(ctx);
}

/* A new event base and resolver for ctx. */
static void
server_base(struct pc_ctx *ctx)
{
	if ((ctx->base = event_base_new()) == NULL)
		fatalx("event_base_new failed");
	if ((ctx->dns = evdns_base_new(ctx->base,
	    EVDNS_BASE_INITIALIZE_NAMESERVERS)) == NULL) {
		/* No resolv.conf: numeric upstreams still work. */
		ctx->dns = evdns_base_new(ctx->base, 0);
	}
}

/*
 * The master (master.c) binds the listeners before it drops privileges
 * and hands the sockets to each worker it forks: a listener is made on a
 * scratch event base, its socket duplicated, the listener freed.
 * Returns 0 with *lfd (and *afd, -1 without admin.listen), or -1.
 */
int
server_bind_fds(struct pc_ctx *ctx, int *lfd, int *afd, char **cause)
{
	int	rv = -1;

	*lfd = *afd = -1;
	if ((ctx->base = event_base_new()) == NULL)
		fatalx("event_base_new failed");
	if (server_listen(ctx, cause) == 0) {
		if ((*lfd = fcntl(evconnlistener_get_fd(ctx->listener),
		    F_DUPFD_CLOEXEC, 0)) == -1 ||
		    (ctx->admin_listener != NULL && (*afd = fcntl(
		    evconnlistener_get_fd(ctx->admin_listener),
		    F_DUPFD_CLOEXEC, 0)) == -1)) {
			if (asprintf(cause, "cannot keep the listener: %s",
			    strerror(errno)) == -1)
				*cause = NULL;
		} else
			rv = 0;
	}
	if (ctx->listener != NULL)
		evconnlistener_free(ctx->listener);
	if (ctx->admin_listener != NULL)
		evconnlistener_free(ctx->admin_listener);
	ctx->listener = ctx->admin_listener = NULL;
	event_base_free(ctx->base);
	ctx->base = NULL;
	return (rv);
}

/*
 * A forked worker: its own event base, a listener on each inherited
 * socket (every worker accepts on the same sockets: see master.c), and
 * the serving life of a single process.  Never returns.
 */
void
server_worker(struct pc_ctx *ctx, int worker, int lfd, int afd)
{
	struct timeval	 tv0 = { 0, 0 }, tvb;
	char		*cause = NULL;
	int		 fd, rv = 1;

	config_worker = worker;
	config_worker_identity(ctx->conf, worker);
	/*
	 * Connection ids stay unique in the shared log, and say whose they
	 * are: worker w numbers from w * 10^12.
	 */
	ctx->next_conn_id = (uint64_t)worker * 1000000000000ULL;
	server_base(ctx);
	metrics_worker_attach(ctx, worker);
	if ((ctx->listener = evconnlistener_new(ctx->base, server_accept_cb,
	    ctx, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, -1,
	    lfd)) == NULL ||
	    (afd != -1 && (ctx->admin_listener = evconnlistener_new(ctx->base,
	    server_admin_accept_cb, ctx, LEV_OPT_CLOSE_ON_FREE |
	    LEV_OPT_CLOSE_ON_EXEC, -1, afd)) == NULL))
		fatalx("evconnlistener_new failed");
	evconnlistener_set_error_cb(ctx->listener, server_accept_error_cb);
	if (ctx->admin_listener != NULL)
		evconnlistener_set_error_cb(ctx->admin_listener,
		    server_accept_error_cb);
	if ((fd = master_balance_fd(worker)) != -1) {
		if ((ctx->ev_balance = event_new(ctx->base, fd,
		    EV_READ | EV_PERSIST, server_balance_wake_cb, ctx)) == NULL)
			fatalx("out of memory");
		event_add(ctx->ev_balance, NULL);
		if ((ctx->ev_beat = event_new(ctx->base, -1, EV_PERSIST,
		    server_balance_beat_cb, ctx)) == NULL)
			fatalx("out of memory");
		tvb.tv_sec = 0;
		tvb.tv_usec = MASTER_BEAT_MS * 1000;
		event_add(ctx->ev_beat, &tvb);
	}
	/*
	 * Live, with no connections, once the loop runs: not before the
	 * start-up (a large cache's scan, a spool's replay), or the others
	 * would stop accepting at worker_balance above a worker that
	 * accepts nothing yet.
	 */
	if (event_base_once(ctx->base, -1, EV_TIMEOUT,
	    server_balance_start_cb, ctx, &tv0) == -1)
		fatalx("out of memory");
	server_fd_limit(ctx->conf);
	if (server_serve(ctx, ctx->conf_path, &cause) == 0)
		rv = 0;
	else {
		log_warn("- server worker_failed: %s", cause != NULL ? cause :
		    "cannot start");
		free(cause);
	}
	server_cleanup(ctx);
	exit(rv);
}

/*
 * The spool names depend on workers (config_worker_identity): a spool
 * of another setting (the plain name after a single-process run, or
 * "<spool_file>.<w>" of a worker that no longer exists) is replayed by
 * no one.  Say so at start, with what to do, rather than leave its
 * records behind without a word.
 */
static void
server_spool_leftovers(const struct config *conf, size_t nworkers)
{
	char		 path[PATH_MAX];
	uint64_t	 left;
	size_t		 w;

	if (conf->audit == NULL || conf->audit->spool_file == NULL)
		return;
	if (nworkers > 1 &&
	    (left = audit_spool_pending(conf->audit->spool_file)) > 0)
		log_warn("- server spool_left path=%s bytes=%llu: a spool of "
		    "a single-process run; with workers it is not replayed: "
		    "start once with workers 1 to send its records",
		    conf->audit->spool_file, (unsigned long long)left);
	for (w = nworkers > 1 ? nworkers : 0; w < 256; w++) {
		snprintf(path, sizeof(path), "%s.%zu", conf->audit->spool_file,
		    w);
		if ((left = audit_spool_pending(path)) > 0)
			log_warn("- server spool_left path=%s bytes=%llu: the "
			    "spool of worker %zu, which this setting does not "
			    "start: start once with workers %zu to send its "
			    "records", path, (unsigned long long)left, w,
			    w + 1);
	}
}

/* Run the gateway until drained.  Returns 0, or -1 with *cause set. */
int
server_run(const char *path, char **cause)
{
	struct pc_ctx	*ctx;
	size_t		 nworkers;
	long		 ncpu;
	int		 rv = -1;

	if ((ctx = calloc(1, sizeof(*ctx))) == NULL)
		fatal("calloc");
	TAILQ_INIT(&ctx->conns);
	TAILQ_INIT(&ctx->staged);
	TAILQ_INIT(&ctx->dead);
	TAILQ_INIT(&ctx->idle);
	TAILQ_INIT(&ctx->ustates);
	TAILQ_INIT(&ctx->tls_clients);
	if ((ctx->conf = config_load(path, cause)) == NULL)
		goto out;
	log_init(ctx->conf->log_level);
	/* Opened as root: the rotated file is made by logrotate. */
	if (ctx->conf->log_file != NULL &&
	    log_file_open(ctx->conf->log_file, cause) == -1)
		goto out;
	metrics_start(ctx);
	signal(SIGPIPE, SIG_IGN);
	/* A refused password will not fix itself: stop now, say so. */
	if (rds_startup_check(ctx->conf, cause) == -1)
		goto out;
	if ((nworkers = ctx->conf->workers) == 0)
		nworkers = (ncpu = sysconf(_SC_NPROCESSORS_ONLN)) > 0 ?
		    (size_t)ncpu : 1;
	server_spool_leftovers(ctx->conf, nworkers);
	if (ctx->conf->tls != NULL &&
	    (ctx->server_tls = tls_server_ctx(ctx->conf, cause)) == NULL)
		goto out;
	if (nworkers > 1) {
		if ((ctx->conf_path = strdup(path)) == NULL)
			fatal("strdup");
		rv = master_run(ctx, nworkers, cause);
		goto out;
	}
	server_base(ctx);
	server_fd_limit(ctx->conf);
	if (server_listen(ctx, cause) == -1)
		goto out;
	/* Bound and keys read: root is no longer needed. */
	if (priv_drop(ctx->conf->run_user, ctx->conf->run_group, cause) == -1)
		goto out;
	rv = server_serve(ctx, path, cause);
out:
	server_cleanup(ctx);
	return (rv);
}
