/*
 * master.c: every core (README "Every core").  With workers > 1 the
 * process that starts becomes a supervising master: it loads and checks
 * the config, reads the TLS certificate, binds the listeners (as root
 * when started so), drops privileges, takes the cache directory's lock
 * and empties its tmp/, then forks the workers.  Each worker runs the
 * single-process life (server.c) on the inherited listening sockets.
 * The master serves nothing and runs no event loop: it waits for
 * signals and for its children with sigtimedwait(2), so its state is
 * this file's.
 *
 * Sharing the sockets.  Every worker accepts on the same inherited
 * socket (one accept queue).  The kernel wakes the workers waiting in
 * epoll on it; the ones that lose the race get EAGAIN, which libevent's
 * listener takes in its stride, so this is safe and needs nothing from
 * the kernel beyond fork.  SO_REUSEPORT (a queue per worker, hashed by
 * the 4-tuple) would spread connections more evenly under a light load,
 * but a queue belongs to its worker: connections waiting in a dead
 * worker's queue are reset, and a new socket per worker must be bound
 * again after the privilege drop (a port below 1024 then needs the
 * capability kept).  With one queue, a worker that dies loses only the
 * connections it had accepted; the others take the rest.
 *
 * The accept balance.  On one queue, whichever worker the kernel wakes
 * first accepts in a loop until the queue is empty (libevent's
 * listener), so a burst of new connections (a load generator's, a CI
 * fleet's) can land mostly on one worker while another idles, and the
 * loaded one's queueing is the tail latency.  So each worker publishes
 * its open connections in a slot of a page the master maps shared before
 * forking, and a worker holding more than worker_balance above the least
 * loaded other live worker stops accepting (server.c,
 * evconnlistener_disable) until it is not.  The least loaded never
 * stops, so the queue is never left alone: a live worker whose loop
 * has not published for timeouts.worker_stall (stopped, stuck on a
 * disk, starved) no longer counts as the least loaded -- each worker
 * publishes at least every MASTER_BEAT_MS from a timer (server.c),
 * which also makes a stopped worker look again -- so the others accept
 * again within that time; and a worker whose count rises,
 * or the master when a worker dies (its slot cleared), wakes every
 * stopped worker that may accept again through that worker's eventfd,
 * which the master made before forking.  Both sides publish, then read
 * (sequentially consistent), so a worker stopping while another's count
 * rises is seen by one of the two.  A dead worker's slot is cleared by
 * the master and a new one starts at zero once its loop runs (not during
 * its start-up, which accepts nothing), so the others stop accepting
 * until it has caught up.
 *
 * Restarts.  A worker that exits while the master is not stopping is
 * forked again after a back-off that doubles from 0.1 s up to
 * timeouts.worker_restart, and falls back to 0.1 s once a worker has run
 * for longer than that.  The new worker inherits the master's current
 * config snapshot, TLS context and the listening sockets.
 *
 * Signals.  SIGHUP: the master loads and checks the config (and the
 * certificate) itself; a good one becomes the master's snapshot, what a
 * restarted worker starts with.  SIGHUP then goes to every worker, which
 * reloads as a single process does: it checks the same file the same
 * way, so a config that fails or needs a restart changes nothing
 * anywhere, and each worker logs and counts the refusal in its own
 * metrics (portcullis_reloads_total) as a single process would.  SIGUSR1: reopen the master's log, then the
 * workers'.  SIGTERM/SIGINT: the workers drain (timeouts.drain); the
 * master waits for them up to that plus a margin, then kills what is
 * left and exits; a second signal is passed on (the workers exit now).
 * The master reports READY/RELOADING/STOPPING to systemd itself (it is
 * the main PID; workers have NOTIFY_SOCKET removed), and a worker gets
 * SIGTERM when the master dies (PR_SET_PDEATHSIG).
 */
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "portcullis.h"
#include "privdrop.h"

#define MASTER_BACKOFF_MIN_MS	100
#define MASTER_DRAIN_MARGIN_MS	5000
#define MASTER_TICK_MS		1000

struct master_worker {
	pid_t		pid;		/* 0: not running */
	uint64_t	started_ms;
	uint64_t	restart_ms;	/* when to fork it again */
	int		delay_ms;	/* the next back-off */
};

/* A worker's slot in the accept balance (shared; atomics only). */
struct master_slot {
	uint32_t	live;		/* a worker runs in it and accepts */
	uint32_t	stopped;	/* its listener is off by the balance */
	uint32_t	woken;		/* its eventfd was written, not read */
	uint32_t	nconns;		/* its open connections */
	uint64_t	beat_ms;	/* its loop last published */
};

static uint64_t			 master_now_ms(void);

static struct master_slot	*master_slots;	/* NULL: one process */
static int			*master_wakefd;	/* per slot */
static size_t			 master_nslots;

#define M_LOAD(p)	__atomic_load_n((p), __ATOMIC_SEQ_CST)
#define M_STORE(p, v)	__atomic_store_n((p), (v), __ATOMIC_SEQ_CST)

/* Before forking: the shared slots and an eventfd per worker. */
static int
master_balance_map(size_t n)
{
	size_t	i;

	master_slots = mmap(NULL, n * sizeof(*master_slots),
	    PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (master_slots == MAP_FAILED) {
		master_slots = NULL;
		return (-1);
	}
	if ((master_wakefd = calloc(n, sizeof(*master_wakefd))) == NULL)
		return (-1);
	for (i = 0; i < n; i++)
		if ((master_wakefd[i] = eventfd(0, EFD_NONBLOCK |
		    EFD_CLOEXEC)) == -1)
			return (-1);
	master_nslots = n;
	return (0);
}

/*
 * Whether worker w may accept holding n connections: no other live
 * worker, or at most slack more than the least loaded of them.
 */
static int
master_balance_ok(size_t w, uint32_t n, size_t slack, uint64_t stall_ms)
{
	struct master_slot	*s;
	size_t			 i;
	uint32_t		 min = UINT32_MAX;
	uint64_t		 now = master_now_ms();

	for (i = 0; i < master_nslots; i++) {
		s = &master_slots[i];
		if (i == w || !M_LOAD(&s->live))
			continue;
		/* Its loop has not turned for stall_ms: it takes nothing. */
		if (now > M_LOAD(&s->beat_ms) + stall_ms)
			continue;
		if (M_LOAD(&s->nconns) < min)
			min = M_LOAD(&s->nconns);
	}
	return (min == UINT32_MAX || n <= (uint64_t)min + slack);
}

/* Wake every stopped worker but skip that may accept again. */
static void
master_balance_wake(size_t skip, size_t slack, uint64_t stall_ms)
{
	struct master_slot	*s;
	uint64_t		 one = 1;
	size_t			 i;

	for (i = 0; i < master_nslots; i++) {
		s = &master_slots[i];
		if (i == skip || !M_LOAD(&s->live) || !M_LOAD(&s->stopped) ||
		    !master_balance_ok(i, M_LOAD(&s->nconns), slack,
		    stall_ms))
			continue;
		if (__atomic_exchange_n(&s->woken, 1, __ATOMIC_SEQ_CST) == 0)
			(void)write(master_wakefd[i], &one, sizeof(one));
	}
}

/* Worker w's eventfd (server.c watches it), or -1 with one process. */
int
master_balance_fd(int w)
{
	if (master_slots == NULL || w < 0 || (size_t)w >= master_nslots)
		return (-1);
	return (master_wakefd[w]);
}

/* Worker w read its eventfd: the next wake writes it again. */
void
master_balance_woken(int w)
{
	if (master_balance_fd(w) != -1)
		M_STORE(&master_slots[w].woken, 0);
}

/*
 * Worker w holds n connections and its listener is off by the balance
 * (stopped) or not; live 0 when it no longer accepts at all (draining).
 * Publishes that, wakes the stopped workers that may now accept, and
 * returns whether w may accept (always 1 with one process or slack 0).
 */
int
master_balance(int w, size_t n, int stopped, int live, size_t slack,
    uint64_t stall_ms)
{
	struct master_slot	*s;
	uint32_t		 n32 = n > UINT32_MAX ? UINT32_MAX : n;

	if (master_balance_fd(w) == -1)
		return (1);
	s = &master_slots[w];
	M_STORE(&s->beat_ms, master_now_ms());
	M_STORE(&s->nconns, n32);
	M_STORE(&s->stopped, (uint32_t)(stopped != 0));
	M_STORE(&s->live, (uint32_t)(live != 0));
	if (slack == 0)
		return (1);
	master_balance_wake((size_t)w, slack, stall_ms);
	return (master_balance_ok((size_t)w, n32, slack, stall_ms));
}

/* The master, when worker w is gone: clear its slot, wake the rest. */
static void
master_balance_clear(size_t w, size_t slack, uint64_t stall_ms)
{
	struct master_slot	*s;

	if (master_slots == NULL || w >= master_nslots)
		return;
	s = &master_slots[w];
	M_STORE(&s->live, 0);
	M_STORE(&s->stopped, 0);
	M_STORE(&s->nconns, 0);
	/*
	 * It may have died between reading its eventfd and saying so: left
	 * set, no one would write the eventfd for the next worker in the
	 * slot again.  A count left in the eventfd is one spurious wake.
	 */
	M_STORE(&s->woken, 0);
	M_STORE(&s->beat_ms, 0);
	if (slack > 0)
		master_balance_wake(w, slack, stall_ms);
}

static uint64_t
master_now_ms(void)
{
	struct timespec	ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ((uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000);
}

static void
master_spawn(struct pc_ctx *ctx, struct master_worker *w, int i, int lfd,
    int afd, const sigset_t *mask, pid_t master)
{
	pid_t	pid;

	if ((pid = fork()) == -1) {
		log_warn("- master fork_failed worker=%d error=\"%s\"", i,
		    strerror(errno));
		w->restart_ms = master_now_ms() + w->delay_ms;
		return;
	}
	if (pid == 0) {
		(void)prctl(PR_SET_PDEATHSIG, SIGTERM);
		if (getppid() != master)	/* it died before the prctl */
			_exit(0);
		unsetenv("NOTIFY_SOCKET");	/* the master speaks */
		/*
		 * Out of the terminal's process group: a ^C reaches the
		 * master only, which passes it on once (a second signal
		 * would end a worker's drain at once).
		 */
		(void)setpgid(0, 0);
		sigprocmask(SIG_SETMASK, mask, NULL);
		server_worker(ctx, i, lfd, afd);
	}
	w->pid = pid;
	w->started_ms = master_now_ms();
	log_info("- master worker_start worker=%d pid=%d", i, (int)pid);
}

static void
master_signal_all(struct master_worker *ws, size_t n, int sig)
{
	size_t	i;

	for (i = 0; i < n; i++)
		if (ws[i].pid > 0)
			kill(ws[i].pid, sig);
}

/* SIGHUP: the master's own snapshot.  Returns 1 when it was taken. */
static int
master_reload(struct pc_ctx *ctx)
{
	struct config		*conf;
	struct ssl_ctx_st	*tls = NULL;
	char			*cause = NULL;

	log_info("- master reload start file=%s", ctx->conf_path);
	if ((conf = config_load(ctx->conf_path, &cause)) == NULL) {
		log_warn("- master reload failed, keeping the running "
		    "config:\n%s", cause != NULL ? cause : "unknown error");
		free(cause);
		return (0);
	}
	if (config_reload_check(ctx->conf, conf, &cause) == -1) {
		log_warn("- master reload refused, restart needed:\n%s",
		    cause != NULL ? cause : "unknown error");
		free(cause);
		config_unref(conf);
		return (0);
	}
	if (conf->tls != NULL &&
	    (tls = tls_server_ctx(conf, &cause)) == NULL) {
		log_warn("- master reload failed, keeping the running "
		    "config and certificate: %s", cause != NULL ? cause :
		    "unknown error");
		free(cause);
		config_unref(conf);
		return (0);
	}
	if (tls != NULL) {
		tls_free_ctx(ctx->server_tls);
		ctx->server_tls = tls;
	}
	config_unref(ctx->conf);
	ctx->conf = conf;
	log_set_level(conf->log_level);
	return (1);
}

/* Run the master until the workers are gone.  Returns 0, or -1. */
int
master_run(struct pc_ctx *ctx, size_t n, char **cause)
{
	struct master_worker	*ws;
	struct timespec		 ts;
	siginfo_t		 si;
	sigset_t		 set, old;
	uint64_t		 now, next, deadline = 0;
	pid_t			 pid, self = getpid();
	size_t			 i, alive;
	int			 lfd, afd, lockfd, st, sig, draining = 0;

	if (server_bind_fds(ctx, &lfd, &afd, cause) == -1)
		return (-1);
	/* Bound and keys read: root is no longer needed. */
	if (priv_drop(ctx->conf->run_user, ctx->conf->run_group,
	    cause) == -1 || server_check_dirs(ctx->conf, cause) == -1)
		return (-1);
	if ((lockfd = cache_dir_prepare(ctx->conf, cause)) == -1)
		return (-1);
	if ((lockfd >= 0 && cache_shared_map() == -1) ||
	    metrics_workers_map(n, ctx->conf->metrics_label_values) == -1 ||
	    master_balance_map(n) == -1)
		fatal("mmap");
	if ((ws = calloc(n, sizeof(*ws))) == NULL)
		fatal("calloc");
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGUSR1);
	sigprocmask(SIG_BLOCK, &set, &old);
	log_info("- master start version=%s listen=%s workers=%zu pid=%d",
	    PC_VERSION, ctx->conf->listen_address, n, (int)self);
	for (i = 0; i < n; i++) {
		ws[i].delay_ms = MASTER_BACKOFF_MIN_MS;
		master_spawn(ctx, &ws[i], (int)i, lfd, afd, &old, self);
	}
	sd_notify_state("READY=1");
	for (;;) {
		while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
			for (i = 0; i < n && ws[i].pid != pid; i++)
				;
			if (i == n)
				continue;
			now = master_now_ms();
			ws[i].pid = 0;
			master_balance_clear(i, ctx->conf->worker_balance,
			    (uint64_t)ctx->conf->worker_stall_ms);
			if (draining) {
				log_info("- master worker_exit worker=%zu "
				    "pid=%d", i, (int)pid);
				continue;
			}
			if (now - ws[i].started_ms >
			    (uint64_t)ctx->conf->worker_restart_ms)
				ws[i].delay_ms = MASTER_BACKOFF_MIN_MS;
			ws[i].restart_ms = now + ws[i].delay_ms;
			log_warn("- master worker_died worker=%zu pid=%d "
			    "%s=%d restart_in_ms=%d", i, (int)pid,
			    WIFSIGNALED(st) ? "signal" : "status",
			    WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st),
			    ws[i].delay_ms);
			ws[i].delay_ms *= 2;
			if (ws[i].delay_ms > ctx->conf->worker_restart_ms)
				ws[i].delay_ms = ctx->conf->worker_restart_ms;
		}
		now = master_now_ms();
		next = now + MASTER_TICK_MS;
		for (i = alive = 0; i < n; i++) {
			if (ws[i].pid > 0) {
				alive++;
				continue;
			}
			if (draining)
				continue;
			if (ws[i].restart_ms <= now) {
				master_spawn(ctx, &ws[i], (int)i, lfd, afd,
				    &old, self);
				alive += ws[i].pid > 0;
			} else if (ws[i].restart_ms < next)
				next = ws[i].restart_ms;
		}
		if (draining && alive == 0)
			break;
		if (draining && now >= deadline) {
			log_warn("- master drain_timeout workers=%zu: killing "
			    "them", alive);
			master_signal_all(ws, n, SIGKILL);
			deadline = now + MASTER_DRAIN_MARGIN_MS;
		}
		ts.tv_sec = (next - now) / 1000;
		ts.tv_nsec = (long)((next - now) % 1000) * 1000000;
		if ((sig = sigtimedwait(&set, &si, &ts)) == -1)
			continue;	/* the tick, or EINTR */
		switch (sig) {
		case SIGHUP:
			if (draining)
				break;
			sd_notify_state("RELOADING=1");
			(void)master_reload(ctx);
			master_signal_all(ws, n, SIGHUP);
			log_info("- master reload forwarded workers=%zu", n);
			sd_notify_state("READY=1");
			break;
		case SIGUSR1:
			log_reopen();
			master_signal_all(ws, n, SIGUSR1);
			break;
		case SIGTERM:
		case SIGINT:
			if (!draining) {
				draining = 1;
				sd_notify_state("STOPPING=1");
				deadline = master_now_ms() +
				    (uint64_t)ctx->conf->drain_timeout_ms +
				    MASTER_DRAIN_MARGIN_MS;
				log_info("- master drain start signal=%d", sig);
			}
			master_signal_all(ws, n, sig);
			break;
		default:
			break;		/* SIGCHLD: reaped above */
		}
	}
	log_info("- master stop");
	sigprocmask(SIG_SETMASK, &old, NULL);
	free(ws);
	close(lfd);
	if (afd != -1)
		close(afd);
	if (lockfd >= 0)
		close(lockfd);
	return (0);
}
