/*
 * revoke.c: the gateway's side of revocation (revoke.h): two rds links,
 * a subscriber on revocation.channel and a command link for the re-sync
 * (HGETALL revocation.key), the table in memory, and the listeners told
 * of each change.
 *
 * The re-sync is wanted whenever the subscriber link is (re)subscribed,
 * and every resync_interval; it runs as soon as the command link is up.
 * Both the messages and the re-sync only ever raise times (revtab.h), so
 * their order does not matter: a message processed before the HGETALL
 * reply that predates it is not undone by that reply.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <hiredis/hiredis.h>

#include "portcullis.h"
#include "revoke.h"
#include "revtab.h"
#include "rds.h"
#include "secret.h"

#define REVOKE_LOG_LEARNED	16	/* subjects named per re-sync log */

struct revoke_listener {
	revoke_listen_fn	*fn;
	void			*arg;
};

struct revoke {
	struct event_base	*base;
	struct revtab		*tab;
	struct rds		*sub;
	struct rds		*cmd;
	struct event		*ev_resync;
	char			*key;
	int			 resync_ms;
	int			 want_sync;
	int			 syncing;
	/*
	 * The table is current: the subscriber link is up and a re-sync
	 * started while it was (on the same connection) has completed.
	 */
	int			 current;
	uint64_t		 sync_gen;	/* sub link's, at sync start */
	int			 sync_sub_up;	/* it was up then */
	uint64_t		 syncs;
	struct revoke_listener	 listeners[REVOKE_MAX_LISTENERS];
	size_t			 nlisteners;
};

static void	revoke_try_sync(struct revoke *);

static void
revoke_tell(struct revoke *rv, const struct revoke_event *ev)
{
	size_t	 i;

	for (i = 0; i < rv->nlisteners; i++)
		rv->listeners[i].fn(ev, rv->listeners[i].arg);
}

static int64_t
revoke_number(const char *s, size_t n)
{
	int64_t	 t = 0;
	size_t	 i;

	if (n == 0 || n > 13)
		return (-1);
	for (i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return (-1);
		t = t * 10 + (s[i] - '0');
	}
	return (t);
}

static int
revoke_subject_ok(const char *s, size_t n)
{
	size_t	 i;

	if (n == 0 || n > REVOKE_SUBJECT_MAX)
		return (0);
	for (i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return (0);
	return (1);
}

int
revoke_parse_message(const char *msg, size_t len, char *buf,
    struct revoke_event *ev)
{
	const char	*sp;
	char		 id[SECRET_ID_LEN + 1];
	size_t		 n;

	memset(ev, 0, sizeof(*ev));
	memcpy(buf, msg, len);
	buf[len] = '\0';
	if (len > 7 && memcmp(buf, "secret ", 7) == 0) {
		char	 fake[SECRET_LEN + 1];

		/* The id alone: check it as the id part of a secret. */
		if (len - 7 != SECRET_ID_LEN)
			return (-1);
		snprintf(fake, sizeof(fake), "%s%s_%s", SECRET_PREFIX,
		    buf + 7, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
		if (secret_parse(fake, SECRET_LEN, id) == -1)
			return (-1);
		ev->kind = REVOKE_SECRET;
		ev->secret_id = buf + 7;
		return (0);
	}
	if (len > 4 && memcmp(buf, "all ", 4) == 0) {
		ev->kind = REVOKE_ALL;
		if ((ev->not_before = revoke_number(buf + 4, len - 4)) == -1)
			return (-1);
		return (0);
	}
	if (len > 8 && memcmp(buf, "subject ", 8) == 0) {
		ev->kind = REVOKE_SUBJECT;
		if ((sp = memchr(buf + 8, ' ', len - 8)) == NULL)
			return (-1);
		n = sp - (buf + 8);
		if ((ev->not_before = revoke_number(buf + 8, n)) == -1)
			return (-1);
		ev->subject = sp + 1;
		if (!revoke_subject_ok(ev->subject, len - (sp + 1 - buf)) ||
		    strlen(ev->subject) != len - (size_t)(sp + 1 - buf))
			return (-1);
		return (0);
	}
	return (-1);
}

/* The table's key of a revoked secret: no subject has its first byte. */
static void
revoke_secret_key(const char *id, char *key, size_t len)
{
	snprintf(key, len, "%c%s", REVOKE_SECRET_KEY_BYTE, id);
}

/* Hold a revoked secret (revoked at `at`) until REVOKE_SECRET_KEEP after. */
static int
revoke_hold_secret(struct revoke *rv, const char *id, int64_t at)
{
	char	 key[SECRET_ID_LEN + 2];
	int	 r;

	revoke_secret_key(id, key, sizeof(key));
	if ((r = revtab_set_until(rv->tab, key, INT64_MAX,
	    at + REVOKE_SECRET_KEEP)) == -1)
		log_warn("- revoke table_full max_subjects=%zu: every "
		    "credential is refused until restarted with a larger "
		    "revocation.max_subjects", revtab_count(rv->tab));
	return (r);
}

/* Apply one event to the table; log and tell the listeners. */
static void
revoke_apply(struct revoke *rv, const struct revoke_event *ev,
    const char *via)
{
	int	 r = 0;

	switch (ev->kind) {
	case REVOKE_SUBJECT:
		if ((r = revtab_set(rv->tab, ev->subject,
		    ev->not_before)) == -1)
			log_warn("- revoke table_full max_subjects=%zu: every "
			    "credential is refused until restarted with a "
			    "larger revocation.max_subjects",
			    revtab_count(rv->tab));
		else if (r == 1)
			log_info("- revoke %s subject=\"%s\" not_before=%lld",
			    via, ev->subject, (long long)ev->not_before);
		break;
	case REVOKE_ALL:
		if ((r = revtab_set_all(rv->tab, ev->not_before)) == 1)
			log_info("- revoke %s all not_before=%lld", via,
			    (long long)ev->not_before);
		break;
	case REVOKE_SECRET:
		/* Told in any case: secrets.c drops its cached record. */
		r = 1;
		revoke_hold_secret(rv, ev->secret_id, (int64_t)time(NULL));
		log_info("- revoke %s secret=%s", via, ev->secret_id);
		break;
	case REVOKE_RESYNCED:
		r = 1;
		break;
	}
	if (r != 0)
		revoke_tell(rv, ev);
}

/*
 * A field x:ID of the hash, the secret revoked at `at`: held unless it
 * is past keeping (a token it could refuse has expired).
 */
static void
revoke_sync_secret(struct revoke *rv, const redisReply *f, int64_t at,
    size_t *learned)
{
	struct revoke_event	 ev;
	char			 id[SECRET_ID_LEN + 1];
	char			 pid[SECRET_ID_LEN + 1];
	char			 fake[SECRET_LEN + 1];

	memcpy(id, f->str + 2, SECRET_ID_LEN);
	id[SECRET_ID_LEN] = '\0';
	snprintf(fake, sizeof(fake), "%s%s_%s", SECRET_PREFIX, id,
	    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
	if (secret_parse(fake, SECRET_LEN, pid) == -1 ||
	    at + REVOKE_SECRET_KEEP <= (int64_t)time(NULL))
		return;
	if (revoke_hold_secret(rv, id, at) == 1) {
		if ((*learned)++ < REVOKE_LOG_LEARNED)
			log_info("- revoke sync secret=%s", id);
		memset(&ev, 0, sizeof(ev));
		ev.kind = REVOKE_SECRET;
		ev.secret_id = id;
		revoke_tell(rv, &ev);
	}
}

static void
revoke_on_sync(struct rds *l, redisReply *r, void *arg)
{
	struct revoke		*rv = arg;
	struct revoke_event	 ev;
	redisReply		*f, *v;
	size_t			 i, learned = 0;
	int			 res;

	rv->syncing = 0;
	if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements % 2) {
		if (r != NULL)
			log_warn("- revoke sync_failed key=%s error=\"%s\"",
			    rv->key, r->type == REDIS_REPLY_ERROR ? r->str :
			    "not a hash");
		rv->want_sync = 1;	/* again when the link is back */
		return;
	}
	for (i = 0; i < r->elements; i += 2) {
		f = r->element[i];
		v = r->element[i + 1];
		if (f->type != REDIS_REPLY_STRING ||
		    v->type != REDIS_REPLY_STRING)
			continue;
		memset(&ev, 0, sizeof(ev));
		if ((ev.not_before = revoke_number(v->str, v->len)) == -1)
			continue;
		if (f->len == 3 && memcmp(f->str, "all", 3) == 0) {
			if (revtab_set_all(rv->tab, ev.not_before) == 1) {
				ev.kind = REVOKE_ALL;
				learned++;
				log_info("- revoke sync all not_before=%lld",
				    (long long)ev.not_before);
				revoke_tell(rv, &ev);
			}
			continue;
		}
		if (f->len == 2 + SECRET_ID_LEN && memcmp(f->str,
		    REVOKE_SECRET_FIELD, 2) == 0) {
			revoke_sync_secret(rv, f, ev.not_before, &learned);
			continue;
		}
		if (f->len < 3 || memcmp(f->str, "s:", 2) != 0 ||
		    !revoke_subject_ok(f->str + 2, f->len - 2) ||
		    strlen(f->str) != f->len)
			continue;
		ev.kind = REVOKE_SUBJECT;
		ev.subject = f->str + 2;
		if ((res = revtab_set(rv->tab, ev.subject,
		    ev.not_before)) == 1) {
			if (learned++ < REVOKE_LOG_LEARNED)
				log_info("- revoke sync subject=\"%s\" "
				    "not_before=%lld", ev.subject,
				    (long long)ev.not_before);
			revoke_tell(rv, &ev);
		} else if (res == -1)
			log_warn("- revoke table_full max_subjects=%zu: every "
			    "credential is refused", revtab_count(rv->tab));
	}
	rv->syncs++;
	if (rv->sync_sub_up && rds_ready(rv->sub) &&
	    rds_generation(rv->sub) == rv->sync_gen)
		rv->current = 1;
	log_info("- revoke synced subjects=%zu learned=%zu all=%lld",
	    revtab_count(rv->tab), learned, (long long)revtab_all(rv->tab));
	memset(&ev, 0, sizeof(ev));
	ev.kind = REVOKE_RESYNCED;
	revoke_tell(rv, &ev);
	/*
	 * Wanted again while this one was in flight (the subscriber came
	 * back): this reply may predate what was published while it was
	 * down, so read once more.  Only after a good reply: a failing one
	 * waits for the link or the timer, never loops.
	 */
	revoke_try_sync(rv);
}

static void
revoke_try_sync(struct revoke *rv)
{
	const char	*argv[2] = { "HGETALL", rv->key };
	size_t		 lens[2] = { 7, strlen(rv->key) };

	if (!rv->want_sync || rv->syncing || !rds_ready(rv->cmd))
		return;
	if (rds_command_argv(rv->cmd, revoke_on_sync, rv, 2, argv,
	    lens) == -1)
		return;
	rv->want_sync = 0;
	rv->syncing = 1;
	rv->sync_sub_up = rds_ready(rv->sub);
	rv->sync_gen = rds_generation(rv->sub);
}

static void
revoke_resync_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct revoke	*rv = arg;
	struct timeval	 tv;
	size_t		 n;

	rv->want_sync = 1;
	revoke_try_sync(rv);
	if ((n = revtab_sweep(rv->tab, (int64_t)time(NULL))) > 0)
		log_info("- revoke reclaimed secrets=%zu subjects=%zu", n,
		    revtab_count(rv->tab));
	tv.tv_sec = rv->resync_ms / 1000;
	tv.tv_usec = (rv->resync_ms % 1000) * 1000;
	evtimer_add(rv->ev_resync, &tv);
}

static void
revoke_sub_up(struct rds *l, void *arg)
{
	struct revoke	*rv = arg;

	/* Whatever was published while down is in the hash: read it. */
	rv->current = 0;
	rv->want_sync = 1;
	revoke_try_sync(rv);
}

static void
revoke_cmd_up(struct rds *l, void *arg)
{
	revoke_try_sync(arg);
}

static void
revoke_cmd_down(struct rds *l, void *arg, const char *why, int was_up)
{
	struct revoke	*rv = arg;

	/* A sync in flight got its NULL reply: want_sync is set again. */
	(void)rv;
}

static void
revoke_sub_down(struct rds *l, void *arg, const char *why, int was_up)
{
	struct revoke	*rv = arg;

	rv->current = 0;
	if (was_up)
		log_warn("- revoke link_down reason=\"%s\": revocations "
		    "made meanwhile apply when it is back", why);
	rv->want_sync = 1;
}

static void
revoke_message(struct rds *l, void *arg, const char *chan, size_t chanlen,
    const char *msg, size_t len)
{
	struct revoke		*rv = arg;
	struct revoke_event	 ev;
	char			*buf;

	if (len > REVOKE_SUBJECT_MAX + 32) {
		log_warn("- revoke bad_message bytes=%zu", len);
		return;
	}
	if ((buf = malloc(len + 1)) == NULL) {
		rv->want_sync = 1;	/* learned at the next re-sync */
		return;
	}
	if (revoke_parse_message(msg, len, buf, &ev) == -1)
		log_warn("- revoke bad_message bytes=%zu", len);
	else
		revoke_apply(rv, &ev, "received");
	free(buf);
}

static const struct rds_ops revoke_sub_ops = {
	revoke_sub_up, revoke_sub_down, revoke_message
};
static const struct rds_ops revoke_cmd_ops = {
	revoke_cmd_up, revoke_cmd_down, NULL
};

struct revoke *
revoke_new(struct event_base *base, const struct config *conf)
{
	struct revoke		*rv;
	struct rds_params	 p;
	struct timeval		 tv;

	if ((rv = calloc(1, sizeof(*rv))) == NULL)
		return (NULL);
	rv->base = base;
	rv->resync_ms = conf->revocation_resync_interval_ms;
	if ((rv->key = strdup(conf->revocation_key)) == NULL ||
	    (rv->tab = revtab_new(conf->revocation_max_subjects)) == NULL ||
	    (rv->ev_resync = evtimer_new(base, revoke_resync_cb,
	    rv)) == NULL) {
		revoke_free(rv);
		return (NULL);
	}
	rds_params_init(&p, conf, "revoke");
	rv->sub = rds_new(base, &p, &revoke_sub_ops, rv);
	rds_subscribe(rv->sub, conf->revocation_channel);
	rds_params_init(&p, conf, "revoke-sync");
	rv->cmd = rds_new(base, &p, &revoke_cmd_ops, rv);
	rv->want_sync = 1;
	rds_start(rv->sub);
	rds_start(rv->cmd);
	tv.tv_sec = rv->resync_ms / 1000;
	tv.tv_usec = (rv->resync_ms % 1000) * 1000;
	evtimer_add(rv->ev_resync, &tv);
	return (rv);
}

void
revoke_free(struct revoke *rv)
{
	if (rv == NULL)
		return;
	if (rv->sub != NULL)
		rds_free(rv->sub);
	if (rv->cmd != NULL)
		rds_free(rv->cmd);
	if (rv->ev_resync != NULL)
		event_free(rv->ev_resync);
	revtab_free(rv->tab);
	free(rv->key);
	free(rv);
}

int
revoke_check(const struct revoke *rv, const char *subject, int64_t iat)
{
	if (rv == NULL)
		return (0);
	return (revtab_revoked(rv->tab, subject, iat));
}

int
revoke_check_secret(const struct revoke *rv, const char *id)
{
	char	 key[SECRET_ID_LEN + 2];

	if (rv == NULL || id == NULL)
		return (0);
	if (revtab_overflowed(rv->tab))
		return (1);
	if (strlen(id) != SECRET_ID_LEN)
		return (0);
	revoke_secret_key(id, key, sizeof(key));
	return (revtab_get(rv->tab, key) != 0);
}

/*
 * Whether the table knows every revocation made so far: the subscriber
 * link is up and the hash was read since it came up.  What must fail
 * closed while Redis is away (the refresh grant) asks this.
 */
int
revoke_current(const struct revoke *rv)
{
	return (rv == NULL || rv->current);
}

/* A Redis link (sub: the subscriber), for /metrics and /readyz. */
struct rds *
revoke_link(const struct revoke *rv, int sub)
{
	if (rv == NULL)
		return (NULL);
	return (sub ? rv->sub : rv->cmd);
}

int
revoke_listen(struct revoke *rv, revoke_listen_fn *fn, void *arg)
{
	if (rv->nlisteners >= REVOKE_MAX_LISTENERS)
		return (-1);
	rv->listeners[rv->nlisteners].fn = fn;
	rv->listeners[rv->nlisteners].arg = arg;
	rv->nlisteners++;
	return (0);
}

uint64_t
revoke_syncs(const struct revoke *rv)
{
	return (rv == NULL ? 0 : rv->syncs);
}
