/*
 * secrets.c: checking gateway secrets on the event loop (secrets.h).
 * One rds link for HGETALL of the secret's record and the throttled
 * last_used write; with secrets.redis_unavailable = cached, a tcache of
 * what was verified, keyed by the secret's hash, used only while Redis
 * cannot answer and emptied whenever a revocation concerns it or the
 * revocation table is read again (a secret revoked while this instance
 * was away from Redis is not in the revocation hash, only in its record).
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <hiredis/hiredis.h>
#include <openssl/crypto.h>

#include "portcullis.h"
#include "rds.h"
#include "revoke.h"
#include "secrets.h"
#include "tcache.h"

/* A verified secret, as the cache holds it. */
struct secret_cached {
	struct secret_rec	 rec;
};

struct secrets_check {
	struct secrets			*s;
	TAILQ_ENTRY(secrets_check)	 entry;
	char				 id[SECRET_ID_LEN + 1];
	unsigned char			 hash[SECRET_HASH_LEN];
	secrets_cb			*cb;
	void				*arg;
	struct event			*ev_defer;
	enum secret_verdict		 verdict;	/* for ev_defer */
	int				 inflight;	/* HGETALL sent */
	uint64_t			 revocations;	/* s's, when sent */
	int				 cancelled;
	int				 by_id;	/* no password: state only */
};
TAILQ_HEAD(secrets_checks, secrets_check);

struct secrets {
	struct event_base	*base;
	struct rds		*cmd;
	struct revoke		*rv;
	struct tcache		*cache;	/* NULL: fail_closed */
	struct secrets_checks	 checks;
	char			*prefix;
	int			 mode;
	int64_t			 cache_ttl_ms;
	int64_t			 last_used_interval;	/* seconds */
	size_t			 max_groups;
	int			 writes;	/* last_used in flight */
	uint64_t		 revocations;	/* events heard */
	int			 closing;
};

static void
secrets_cached_free(void *v)
{
	struct secret_cached	*c = v;

	if (c == NULL)
		return;
	secret_rec_clear(&c->rec);
	free(c);
}

/*
 * Redis answered, and not "ok": whatever this instance verified under
 * the hash is void (the record was deleted, revoked without a message
 * reaching us, replaced), so the cache must not bring it back when
 * Redis is away later.  An entry already expired (NULL, 0) replaces it
 * and is not stored: tcache.h.
 */
static void
secrets_forget(struct secrets *s, const unsigned char *hash)
{
	if (s->cache != NULL)
		tcache_put(s->cache, hash, NULL, 0, (int64_t)now_ms());
}

static void
secrets_check_free(struct secrets_check *c)
{
	TAILQ_REMOVE(&c->s->checks, c, entry);
	if (c->ev_defer != NULL)
		event_free(c->ev_defer);
	OPENSSL_cleanse(c->hash, sizeof(c->hash));
	free(c);
}

/* Answer from a record: the caller's cb, then the check is gone. */
static void
secrets_answer(struct secrets_check *c, enum secret_verdict v,
    const struct secret_rec *rec)
{
	struct secret_principal	 p;

	if (v == SECRET_OK) {
		memset(&p, 0, sizeof(p));
		p.id = rec->id;
		p.subject = rec->subject;
		p.groups = (const char *const *)rec->groups;
		p.ngroups = rec->ngroups;
		p.name = rec->name;
		p.created = rec->created;
		p.expires = rec->expires;
		c->cb(v, &p, c->arg);
	} else
		c->cb(v, NULL, c->arg);
	secrets_check_free(c);
}

/* Redis answered the lookup with v, not ok: refuse, and forget it. */
static void
secrets_refuse(struct secrets_check *c, enum secret_verdict v)
{
	secrets_forget(c->s, c->hash);
	secrets_answer(c, v, NULL);
}

/* Judge a record, the subject-wide revocations included. */
static enum secret_verdict
secrets_judge(struct secrets *s, const struct secret_rec *rec,
    const unsigned char *hash, int64_t now)
{
	enum secret_verdict	 v;

	v = secret_judge(rec, hash, now);
	/*
	 * Until the revocation table has been read once (a start with
	 * Redis away), a subject's revocation is not known: fail closed.
	 */
	if (v == SECRET_OK && s->rv != NULL && revoke_syncs(s->rv) == 0)
		v = SECRET_REDIS_UNAVAILABLE;
	else if (v == SECRET_OK &&
	    revoke_check(s->rv, rec->subject, rec->created))
		v = SECRET_REVOKED;
	return (v);
}

/* Redis cannot answer: fail closed, or what this instance verified. */
static void
secrets_unavailable(struct secrets_check *c)
{
	struct secrets		*s = c->s;
	struct secret_cached	*sc;
	enum secret_verdict	 v;

	if (!c->by_id && s->cache != NULL && (sc = tcache_get(s->cache, c->hash,
	    (int64_t)now_ms())) != NULL &&
	    strcmp(sc->rec.id, c->id) == 0) {
		v = secrets_judge(s, &sc->rec, c->hash, time(NULL));
		secrets_answer(c, v, &sc->rec);
		return;
	}
	secrets_answer(c, SECRET_REDIS_UNAVAILABLE, NULL);
}

static void
secrets_defer_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct secrets_check	*c = arg;

	if (c->verdict == SECRET_REDIS_UNAVAILABLE)
		secrets_unavailable(c);
	else
		secrets_answer(c, c->verdict, NULL);
}

static void
secrets_touched(struct rds *l, redisReply *r, void *arg)
{
	struct secrets	*s = arg;

	s->writes--;
}

static void
secrets_touch(struct secrets *s, const struct secret_rec *rec, int64_t now)
{
	const char	*argv[4];
	size_t		 lens[4];
	char		 key[512], t[32];

	if (rec->last_used != 0 && now - rec->last_used <
	    s->last_used_interval)
		return;
	snprintf(key, sizeof(key), "%s%s", s->prefix, rec->id);
	snprintf(t, sizeof(t), "%lld", (long long)now);
	argv[0] = "HSET";
	argv[1] = key;
	argv[2] = "last_used";
	argv[3] = t;
	lens[0] = 4;
	lens[1] = strlen(key);
	lens[2] = 9;
	lens[3] = strlen(t);
	if (rds_command_argv(s->cmd, secrets_touched, s, 4, argv,
	    lens) == 0)
		s->writes++;
}

static void
secrets_on_record(struct rds *l, redisReply *r, void *arg)
{
	struct secrets_check	*c = arg;
	struct secrets		*s = c->s;
	struct secret_rec	 rec;
	struct secret_cached	*sc;
	enum secret_verdict	 v;
	const char		**names, **vals;
	size_t			*nlens, *vlens, i, n;
	const char		*err = NULL;
	char			 kind[64];
	int64_t			 now = time(NULL);

	c->inflight = 0;
	if (c->cancelled || s->closing) {
		secrets_check_free(c);
		return;
	}
	if (r == NULL) {
		secrets_unavailable(c);
		return;
	}
	if (r->type == REDIS_REPLY_ERROR) {
		rds_error_kind(r, kind, sizeof(kind));
		/* Redis did answer: the key is not a hash, not ours. */
		if (strcmp(kind, "WRONGTYPE") == 0) {
			log_warn("- secrets bad_record id=%s field=\"%s\"",
			    c->id, "not a hash");
			secrets_refuse(c, SECRET_BAD_RECORD);
			return;
		}
		log_warn("- secrets lookup_failed id=%s error=%s", c->id,
		    rds_error_kind(r, kind, sizeof(kind)));
		secrets_unavailable(c);
		return;
	}
	if (r->type != REDIS_REPLY_ARRAY || r->elements % 2 != 0) {
		secrets_refuse(c, SECRET_BAD_RECORD);
		return;
	}
	if (r->elements == 0) {
		secrets_refuse(c, SECRET_UNKNOWN);
		return;
	}
	n = r->elements / 2;
	names = calloc(n, sizeof(*names));
	vals = calloc(n, sizeof(*vals));
	nlens = calloc(n, sizeof(*nlens));
	vlens = calloc(n, sizeof(*vlens));
	if (names == NULL || vals == NULL || nlens == NULL || vlens == NULL) {
		free(names);
		free(vals);
		free(nlens);
		free(vlens);
		secrets_unavailable(c);
		return;
	}
	for (i = 0; i < n; i++) {
		redisReply	*fr = r->element[2 * i];
		redisReply	*vr = r->element[2 * i + 1];

		if (fr->type == REDIS_REPLY_STRING &&
		    vr->type == REDIS_REPLY_STRING) {
			names[i] = fr->str;
			nlens[i] = fr->len;
			vals[i] = vr->str;
			vlens[i] = vr->len;
		} else {
			names[i] = vals[i] = "";
			nlens[i] = vlens[i] = 0;
		}
	}
	i = secret_rec_parse(&rec, c->id, names, nlens, vals, vlens, n,
	    s->max_groups, &err) == 0;
	free(names);
	free(vals);
	free(nlens);
	free(vlens);
	if (!i) {
		log_warn("- secrets bad_record id=%s field=\"%s\"", c->id, err);
		secrets_refuse(c, SECRET_BAD_RECORD);
		return;
	}
	v = secrets_judge(s, &rec, c->by_id ? rec.hash : c->hash, now);
	if (v == SECRET_OK && !c->by_id) {
		secrets_touch(s, &rec, now);
		/*
		 * Not when a revocation was heard while the lookup was in
		 * flight: the record may predate it, and the purge it
		 * made did not see this entry.  This answer stands (the
		 * two were concurrent); keeping it would not.
		 */
		if (s->cache != NULL && c->revocations == s->revocations &&
		    (sc = calloc(1, sizeof(*sc))) != NULL) {
			int64_t	 exp;

			exp = (int64_t)now_ms() + s->cache_ttl_ms;

			/* Shallow move below; rec's strings now sc's. */
			sc->rec = rec;
			if (rec.expires != 0 &&
			    (rec.expires - now) * 1000 < s->cache_ttl_ms)
				exp = (int64_t)now_ms() +
				    (rec.expires - now) * 1000;
			secrets_answer(c, v, &sc->rec);
			tcache_put(s->cache, sc->rec.hash, sc, exp,
			    (int64_t)now_ms());
			return;
		}
	} else
		secrets_forget(s, c->hash);
	secrets_answer(c, v, &rec);
	secret_rec_clear(&rec);
}

/*
 * Whether the secret ID is still good (not revoked, not expired, its
 * subject not revoked since it was made), without its password: what
 * the refresh grant of a token issued for it asks.  Fails closed while
 * Redis is away.  Like secrets_check() otherwise.
 */
struct secrets_check *
secrets_check_id(struct secrets *s, const char *id, secrets_cb *cb,
    void *arg)
{
	struct secrets_check	*c;
	const char		*argv[2];
	size_t			 lens[2];
	char			 key[512];
	struct timeval		 tv = { 0, 0 };

	if ((c = calloc(1, sizeof(*c))) == NULL)
		return (NULL);
	c->s = s;
	c->cb = cb;
	c->arg = arg;
	c->by_id = 1;
	TAILQ_INSERT_TAIL(&s->checks, c, entry);
	c->verdict = SECRET_UNKNOWN;
	if (strlen(id) == SECRET_ID_LEN && secret_field_ok(id, 0)) {
		snprintf(c->id, sizeof(c->id), "%s", id);
		snprintf(key, sizeof(key), "%s%s", s->prefix, c->id);
		argv[0] = "HGETALL";
		argv[1] = key;
		lens[0] = 7;
		lens[1] = strlen(key);
		if (rds_command_argv(s->cmd, secrets_on_record, c, 2, argv,
		    lens) == 0) {
			c->inflight = 1;
			return (c);
		}
		c->verdict = SECRET_REDIS_UNAVAILABLE;
	}
	/* Never answer before the caller has the handle. */
	if ((c->ev_defer = evtimer_new(s->base, secrets_defer_cb,
	    c)) == NULL) {
		secrets_check_free(c);
		return (NULL);
	}
	evtimer_add(c->ev_defer, &tv);
	return (c);
}

struct secrets_check *
secrets_check(struct secrets *s, const char *password, size_t len,
    secrets_cb *cb, void *arg)
{
	struct secrets_check	*c;
	const char		*argv[2];
	size_t			 lens[2];
	char			 key[512];
	struct timeval		 tv = { 0, 0 };

	if ((c = calloc(1, sizeof(*c))) == NULL)
		return (NULL);
	c->s = s;
	c->cb = cb;
	c->arg = arg;
	TAILQ_INSERT_TAIL(&s->checks, c, entry);
	if (secret_parse(password, len, c->id) == -1) {
		c->verdict = SECRET_UNKNOWN;
		goto defer;
	}
	secret_hash(password, len, c->hash);
	snprintf(key, sizeof(key), "%s%s", s->prefix, c->id);
	argv[0] = "HGETALL";
	argv[1] = key;
	lens[0] = 7;
	lens[1] = strlen(key);
	c->revocations = s->revocations;
	if (rds_command_argv(s->cmd, secrets_on_record, c, 2, argv,
	    lens) == 0) {
		c->inflight = 1;
		return (c);
	}
	c->verdict = SECRET_REDIS_UNAVAILABLE;
defer:
	/* Never answer before the caller has the handle. */
	if ((c->ev_defer = evtimer_new(s->base, secrets_defer_cb,
	    c)) == NULL) {
		secrets_check_free(c);
		return (NULL);
	}
	evtimer_add(c->ev_defer, &tv);
	return (c);
}

void
secrets_check_cancel(struct secrets_check *c)
{
	if (c == NULL)
		return;
	if (c->inflight)
		c->cancelled = 1;	/* freed when the reply comes */
	else
		secrets_check_free(c);
}

static int
secrets_purge_pred(const void *v, void *arg)
{
	const struct secret_cached	*sc = v;
	const struct revoke_event	*ev = arg;

	switch (ev->kind) {
	case REVOKE_SECRET:
		return (strcmp(sc->rec.id, ev->secret_id) == 0);
	case REVOKE_SUBJECT:
		return (strcmp(sc->rec.subject, ev->subject) == 0 &&
		    sc->rec.created < ev->not_before);
	case REVOKE_ALL:
		return (sc->rec.created < ev->not_before);
	default:
		return (1);
	}
}

static void
secrets_revoked(const struct revoke_event *ev, void *arg)
{
	struct secrets	*s = arg;

	s->revocations++;
	if (s->cache == NULL)
		return;
	if (ev->kind == REVOKE_RESYNCED)
		tcache_clear(s->cache);
	else
		(void)tcache_purge(s->cache, secrets_purge_pred, (void *)ev);
}

static const struct rds_ops secrets_ops = { NULL, NULL, NULL };

struct secrets *
secrets_new(struct event_base *base, const struct config *conf,
    struct revoke *rv)
{
	struct secrets		*s;
	struct rds_params	 p;

	if ((s = calloc(1, sizeof(*s))) == NULL)
		return (NULL);
	TAILQ_INIT(&s->checks);
	s->base = base;
	s->rv = rv;
	s->mode = conf->secrets_redis_unavailable;
	s->cache_ttl_ms = conf->secrets_cache_ttl_ms;
	s->last_used_interval = conf->secrets_last_used_interval_ms / 1000;
	s->max_groups = conf->secrets_max_groups;
	if ((s->prefix = strdup(conf->secrets_key_prefix)) == NULL ||
	    (s->mode == SECRETS_FAIL_CACHED && (s->cache = tcache_new(
	    conf->secrets_cache_entries, secrets_cached_free)) == NULL) ||
	    (rv != NULL && revoke_listen(rv, secrets_revoked, s) == -1)) {
		tcache_free(s->cache);
		free(s->prefix);
		free(s);
		return (NULL);
	}
	rds_params_init(&p, conf, "secrets");
	s->cmd = rds_new(base, &p, &secrets_ops, s);
	rds_start(s->cmd);
	return (s);
}

/* The Redis link, for /metrics and /readyz (metrics_http.c). */
struct rds *
secrets_link(const struct secrets *s)
{
	return (s != NULL ? s->cmd : NULL);
}

int
secrets_writing(const struct secrets *s)
{
	return (s->writes > 0);
}

void
secrets_free(struct secrets *s)
{
	struct secrets_check	*c;

	if (s == NULL)
		return;
	s->closing = 1;
	rds_free(s->cmd);	/* replies in flight: NULL, checks freed */
	while ((c = TAILQ_FIRST(&s->checks)) != NULL)
		secrets_check_free(c);
	if (s->cache != NULL)
		tcache_free(s->cache);
	free(s->prefix);
	free(s);
}
