/*
 * secrets_cli.c: `portcullis secret create|list|revoke|verify`, over a
 * blocking Redis connection (rds_connect_cli) with the configuration's
 * redis and secrets settings; verify runs the gateway's own asynchronous
 * check (secrets.c) on an event loop, the subject-wide revocations
 * included, so it answers exactly as a gateway would.  create prints the
 * secret once, on a line of its own; nothing else ever prints a secret
 * or its hash.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <openssl/crypto.h>

#include "portcullis.h"
#include "rds.h"
#include "revoke.h"
#include "secrets.h"

#define SCLI_MAX_GROUPS_ARG	1024
#define SCLI_LIST_MAX		100000	/* ids `secret list` reads */

static const char scli_usage[] =
    "usage: portcullis secret create -c FILE --subject S [--group G]...\n"
    "           [--name N] [--expires DUR]\n"
    "       portcullis secret list -c FILE\n"
    "       portcullis secret revoke -c FILE ID\n"
    "       portcullis secret verify -c FILE < SECRET\n"
    "\n"
    "create: make a secret for subject S (a robot or a CLI user) with its\n"
    "groups, print it once on the first line of output, then login lines\n"
    "for docker, podman and skopeo.  Redis keeps only its SHA-256.\n"
    "DUR: a number and s, m, h, d or w (90d); default: never expires.\n"
    "list: every secret's id, subject, name, groups, times and state;\n"
    "never a secret or a hash.\n"
    "revoke: refuse the secret ID, and the tokens issued for it, from\n"
    "now on, on every instance.\n"
    "verify: read secrets from standard input, one per line, and say for\n"
    "each whether a gateway would accept it and whose it is (ok ...), or\n"
    "why not (refused reason=...); exit 0 when every one was accepted.\n";

static redisContext *
scli_connect(const struct config *conf)
{
	struct rds_params	 p;
	redisContext		*rc;

	rds_params_init(&p, conf, "secret");
	if (rds_connect_cli(&p, "secret", &rc) != 0)
		return (NULL);
	return (rc);
}

static int
scli_failed(redisContext *rc, redisReply *r, const char *what)
{
	fprintf(stderr, "portcullis: secret: %s: %s\n", what, r == NULL ?
	    rc->errstr : r->type == REDIS_REPLY_ERROR ? r->str :
	    "unexpected reply");
	freeReplyObject(r);
	return (1);
}

/* The host[:port] clients log in to, from external_url. */
static void
scli_host(const struct config *conf, char *buf, size_t len)
{
	const char	*u = conf->external_url, *p;

	if (u == NULL) {
		snprintf(buf, len, "GATEWAY-HOST");
		return;
	}
	if ((p = strstr(u, "://")) != NULL)
		u = p + 3;
	snprintf(buf, len, "%.*s", (int)strcspn(u, "/"), u);
}

/* s in single quotes for a POSIX shell. */
static void
scli_shell_quote(const char *s)
{
	putchar('\'');
	for (; *s != '\0'; s++) {
		if (*s == '\'')
			fputs("'\\''", stdout);
		else
			putchar(*s);
	}
	putchar('\'');
}

/*
 * The not-before time a secret of subject made now must clear: the
 * subject's or everyone's in revocation.key (0: none).  -1 when Redis
 * did not answer (the error is on stderr).
 */
static int64_t
scli_not_before(const struct config *conf, redisContext *rc,
    const char *subject)
{
	redisReply	*r;
	int64_t		 nb = 0, t;
	int		 i;

	for (i = 0; i < 2; i++) {
		r = i == 0 ? redisCommand(rc, "HGET %s s:%s",
		    conf->revocation_key, subject) : redisCommand(rc,
		    "HGET %s all", conf->revocation_key);
		if (r == NULL || (r->type != REDIS_REPLY_STRING &&
		    r->type != REDIS_REPLY_NIL)) {
			scli_failed(rc, r, "create");
			return (-1);
		}
		if (r->type == REDIS_REPLY_STRING &&
		    (t = strtoll(r->str, NULL, 10)) > nb)
			nb = t;
		freeReplyObject(r);
	}
	return (nb);
}

static int
scli_create(const struct config *conf, const char *subject,
    const char **groups, size_t ngroups, const char *name,
    const char *expires_s)
{
	redisContext	*rc;
	redisReply	*r;
	char		 secret[SECRET_LEN + 1], id[SECRET_ID_LEN + 1];
	char		 key[512], hex[2 * SECRET_HASH_LEN + 1], host[256];
	char		 created[32], expires[32], tbuf[32], *gj;
	unsigned char	 hash[SECRET_HASH_LEN];
	int64_t		 now = time(NULL), dur = 0, nb;
	char		 user[SECRET_FIELD_MAX + 1];
	size_t		 i;
	const char	*tools[] = { "docker", "podman", "skopeo" };

	if (!secret_field_ok(subject, 0)) {
		fprintf(stderr, "portcullis: secret: --subject must be 1 to "
		    "%d printable characters\n", SECRET_FIELD_MAX);
		return (2);
	}
	if (name != NULL && !secret_field_ok(name, 1)) {
		fprintf(stderr, "portcullis: secret: --name must be at most "
		    "%d printable characters\n", SECRET_FIELD_MAX);
		return (2);
	}
	if (ngroups > (size_t)conf->secrets_max_groups) {
		fprintf(stderr, "portcullis: secret: more than %d groups "
		    "(secrets.max_groups)\n", conf->secrets_max_groups);
		return (2);
	}
	for (i = 0; i < ngroups; i++)
		if (!secret_field_ok(groups[i], 0)) {
			fprintf(stderr, "portcullis: secret: --group must be "
			    "1 to %d printable characters\n",
			    SECRET_FIELD_MAX);
			return (2);
		}
	if (expires_s != NULL && secret_parse_duration(expires_s,
	    &dur) == -1) {
		fprintf(stderr, "portcullis: secret: --expires: a number and "
		    "s, m, h, d or w, up to 10 years\n");
		return (2);
	}
	if ((gj = secret_groups_json(groups, ngroups)) == NULL)
		fatalx("out of memory");
	if ((rc = scli_connect(conf)) == NULL) {
		free(gj);
		return (1);
	}
	/*
	 * `token revoke` refuses what was created before its time, which is
	 * by default the end of the current second: a secret made in that
	 * second (revoke a robot, then give it a new secret) would be
	 * refused for good.  Wait for that second to pass; a subject
	 * revoked further into the future gets no secret at all.
	 */
	if ((nb = scli_not_before(conf, rc, subject)) == -1) {
		free(gj);
		redisFree(rc);
		return (1);
	}
	if (nb > now + 1) {
		fprintf(stderr, "portcullis: secret: subject %s is revoked "
		    "until %s: a secret made now would be refused\n", subject,
		    secret_fmt_time(nb, tbuf, sizeof(tbuf)));
		free(gj);
		redisFree(rc);
		return (1);
	}
	for (i = 0; now < nb && i < 30; i++) {
		struct timespec	 ts = { 0, 100000000 };

		nanosleep(&ts, NULL);
		now = time(NULL);
	}
	if (now < nb) {
		fprintf(stderr, "portcullis: secret: the clock did not "
		    "reach %lld\n", (long long)nb);
		free(gj);
		redisFree(rc);
		return (1);
	}
	if (secret_generate(secret, id) == -1)
		fatalx("secret: no random bytes");
	secret_hash(secret, SECRET_LEN, hash);
	secret_hash_hex(hash, hex);
	snprintf(key, sizeof(key), "%s%s", conf->secrets_key_prefix, id);
	snprintf(created, sizeof(created), "%lld", (long long)now);
	snprintf(expires, sizeof(expires), "%lld",
	    (long long)(dur != 0 ? now + dur : 0));
	/* HSETNX first: a 64-bit id collision must not overwrite. */
	r = redisCommand(rc, "HSETNX %s hash %s", key, hex);
	if (r == NULL || r->type != REDIS_REPLY_INTEGER || r->integer != 1) {
		free(gj);
		OPENSSL_cleanse(secret, sizeof(secret));
		return (scli_failed(rc, r, "create"));
	}
	freeReplyObject(r);
	r = redisCommand(rc, "HSET %s subject %s groups %s name %s "
	    "created %s expires %s", key, subject, gj, name != NULL ? name :
	    "", created, expires);
	free(gj);
	if (r == NULL || r->type != REDIS_REPLY_INTEGER) {
		OPENSSL_cleanse(secret, sizeof(secret));
		return (scli_failed(rc, r, "create"));
	}
	freeReplyObject(r);
	r = redisCommand(rc, "SADD %sids %s", conf->secrets_key_prefix, id);
	if (r == NULL || r->type != REDIS_REPLY_INTEGER) {
		OPENSSL_cleanse(secret, sizeof(secret));
		return (scli_failed(rc, r, "create"));
	}
	freeReplyObject(r);
	redisFree(rc);

	printf("%s\n", secret);
	OPENSSL_cleanse(secret, sizeof(secret));
	printf("id:      %s\nsubject: %s\nexpires: %s\n", id, subject,
	    secret_fmt_time(dur != 0 ? now + dur : 0, tbuf, sizeof(tbuf)));
	printf("The secret above is not shown again: store it now.  Log in "
	    "with it as the\npassword (paste it at the prompt):\n");
	scli_host(conf, host, sizeof(host));
	for (i = 0; i < 3; i++) {
		printf("  %s login --username ", tools[i]);
		scli_shell_quote(secret_login_user(subject, user,
		    sizeof(user)));
		printf(" %s\n", host);
	}
	return (0);
}

/* One HGETALL reply into rec; 0 or -1 with a line on stderr. */
static int
scli_record(const struct config *conf, redisReply *r, const char *id,
    struct secret_rec *rec)
{
	const char	*names[32], *vals[32], *err;
	size_t		 nlens[32], vlens[32], i, n;

	if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements % 2 ||
	    r->elements == 0 || r->elements / 2 > 32)
		return (-1);
	n = r->elements / 2;
	for (i = 0; i < n; i++) {
		if (r->element[2 * i]->type != REDIS_REPLY_STRING ||
		    r->element[2 * i + 1]->type != REDIS_REPLY_STRING)
			return (-1);
		names[i] = r->element[2 * i]->str;
		nlens[i] = r->element[2 * i]->len;
		vals[i] = r->element[2 * i + 1]->str;
		vlens[i] = r->element[2 * i + 1]->len;
	}
	if (secret_rec_parse(rec, id, names, nlens, vals, vlens, n,
	    conf->secrets_max_groups, &err) == -1) {
		fprintf(stderr, "portcullis: secret %s: damaged record (%s)\n",
		    id, err);
		return (-1);
	}
	return (0);
}

static int
scli_list(const struct config *conf)
{
	redisContext		*rc;
	redisReply		*ids, *r;
	struct secret_rec	 rec;
	char			 c[32], e[32], u[32];
	const char		*state;
	size_t			 i, j;
	int64_t			 now = time(NULL);

	if ((rc = scli_connect(conf)) == NULL)
		return (1);
	ids = redisCommand(rc, "SMEMBERS %sids", conf->secrets_key_prefix);
	if (ids == NULL || ids->type != REDIS_REPLY_ARRAY)
		return (scli_failed(rc, ids, "list"));
	printf("%-16s  %-20s  %-20s  %-20s  %-20s  %-7s  %s  %s\n", "ID",
	    "CREATED", "EXPIRES", "LAST_USED", "SUBJECT", "STATE", "NAME",
	    "GROUPS");
	for (i = 0; i < ids->elements && i < SCLI_LIST_MAX; i++) {
		const char	*id = ids->element[i]->str;

		if (ids->element[i]->type != REDIS_REPLY_STRING ||
		    ids->element[i]->len != SECRET_ID_LEN)
			continue;
		r = redisCommand(rc, "HGETALL %s%s", conf->secrets_key_prefix,
		    id);
		if (r == NULL) {
			freeReplyObject(ids);
			return (scli_failed(rc, r, "list"));
		}
		if (r->type == REDIS_REPLY_ARRAY && r->elements == 0) {
			freeReplyObject(r);
			continue;	/* deleted by hand */
		}
		if (scli_record(conf, r, id, &rec) == -1) {
			freeReplyObject(r);
			continue;
		}
		freeReplyObject(r);
		state = rec.revoked != 0 ? "revoked" : (rec.expires != 0 &&
		    now >= rec.expires) ? "expired" : "active";
		printf("%-16s  %-20s  %-20s  %-20s  %-20s  %-7s  %s  ", id,
		    secret_fmt_time(rec.created, c, sizeof(c)),
		    secret_fmt_time(rec.expires, e, sizeof(e)),
		    secret_fmt_time(rec.last_used, u, sizeof(u)),
		    rec.subject, state, rec.name[0] != '\0' ? rec.name : "-");
		for (j = 0; j < rec.ngroups; j++)
			printf("%s%s", j > 0 ? "," : "", rec.groups[j]);
		printf("%s\n", rec.ngroups == 0 ? "-" : "");
		secret_rec_clear(&rec);
	}
	freeReplyObject(ids);
	redisFree(rc);
	return (0);
}

/*
 * Delete the x:ID fields of secrets revoked more than REVOKE_SECRET_KEEP
 * ago: every token they could refuse has expired, and the gateways no
 * longer hold them (revoke.h).  Best effort: a failure leaves fields the
 * gateways skip anyway.
 */
static void
scli_reclaim(redisContext *rc, const struct config *conf)
{
	redisReply	*r, *d, *f, *v;
	int64_t		 now = time(NULL);
	size_t		 i, n = 0;

	r = redisCommand(rc, "HGETALL %s", conf->revocation_key);
	if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
		freeReplyObject(r);
		return;
	}
	for (i = 0; i + 1 < r->elements; i += 2) {
		f = r->element[i];
		v = r->element[i + 1];
		if (f->type != REDIS_REPLY_STRING ||
		    v->type != REDIS_REPLY_STRING ||
		    f->len != 2 + SECRET_ID_LEN ||
		    memcmp(f->str, REVOKE_SECRET_FIELD, 2) != 0 ||
		    strtoll(v->str, NULL, 10) + REVOKE_SECRET_KEEP > now)
			continue;
		d = redisCommand(rc, "HDEL %s %b", conf->revocation_key,
		    f->str, f->len);
		if (d != NULL && d->type == REDIS_REPLY_INTEGER)
			n += d->integer;
		freeReplyObject(d);
	}
	freeReplyObject(r);
	if (n > 0)
		printf("reclaimed %zu revoked secret(s) past keeping in %s\n",
		    n, conf->revocation_key);
}

static int
scli_revoke(const struct config *conf, const char *id)
{
	redisContext	*rc;
	redisReply	*r;
	char		 probe[SECRET_LEN + 1], pid[SECRET_ID_LEN + 1];
	char		 key[512], now[32], msg[64];

	snprintf(probe, sizeof(probe), "%s%s_%s", SECRET_PREFIX, id,
	    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
	if (strlen(id) != SECRET_ID_LEN ||
	    secret_parse(probe, strlen(probe), pid) == -1) {
		fprintf(stderr, "portcullis: secret revoke: an ID is 16 "
		    "lowercase hex digits (secret list shows them)\n");
		return (2);
	}
	if ((rc = scli_connect(conf)) == NULL)
		return (1);
	snprintf(key, sizeof(key), "%s%s", conf->secrets_key_prefix, id);
	snprintf(now, sizeof(now), "%lld", (long long)time(NULL));
	r = redisCommand(rc, "HEXISTS %s hash", key);
	if (r == NULL || r->type != REDIS_REPLY_INTEGER)
		return (scli_failed(rc, r, "revoke"));
	if (r->integer != 1) {
		freeReplyObject(r);
		redisFree(rc);
		fprintf(stderr, "portcullis: secret revoke: no secret %s\n",
		    id);
		return (1);
	}
	freeReplyObject(r);
	/* Keep the first revocation time when revoked twice. */
	r = redisCommand(rc, "HSETNX %s revoked %s", key, now);
	if (r == NULL || r->type != REDIS_REPLY_INTEGER)
		return (scli_failed(rc, r, "revoke"));
	freeReplyObject(r);
	/*
	 * The revocation table's entry: every instance refuses the tokens
	 * already issued for the secret (revoke.h), including one that
	 * misses the message and reads the hash when it is back.
	 */
	r = redisCommand(rc, "HSETNX %s %s%s %s", conf->revocation_key,
	    REVOKE_SECRET_FIELD, id, now);
	if (r == NULL || r->type != REDIS_REPLY_INTEGER)
		return (scli_failed(rc, r, "revoke (the record is marked; "
		    "tokens already issued for it live until they expire)"));
	freeReplyObject(r);
	scli_reclaim(rc, conf);
	snprintf(msg, sizeof(msg), "secret %s", id);
	r = redisCommand(rc, "PUBLISH %s %s", conf->revocation_channel, msg);
	if (r == NULL || r->type != REDIS_REPLY_INTEGER)
		return (scli_failed(rc, r, "revoke (the record is marked; "
		    "instances learn it at their next lookup)"));
	printf("revoked secret %s; %lld listening instance(s) told\n", id,
	    r->integer);
	freeReplyObject(r);
	redisFree(rc);
	return (0);
}

/*
 * verify: the gateway's asynchronous check, on a loop of its own, with
 * the gateway's revocation table (and, with redis_unavailable cached, its
 * cache): one secret per line of standard input, one answer per line of
 * output, in order.  Standard input is read from the loop, so revocations
 * arrive between lines as they would between requests.
 */
#define SCLI_LINE_MAX	(SECRET_LEN + 64)

struct scli_verify {
	struct event_base	*base;
	struct revoke		*rv;
	struct secrets		*s;
	char			 buf[SCLI_LINE_MAX + 1];
	size_t			 have;
	int			 skipping;	/* a line too long */
	int			 eof;
	int			 busy;		/* a check in flight */
	int			 status;
	int			 waits;
	struct event		*ev_in;
	struct event		*ev_next;
	struct event		*ev_give_up;
};

static void	scli_verify_next(evutil_socket_t, short, void *);

static void
scli_verify_cb(enum secret_verdict v, const struct secret_principal *p,
    void *arg)
{
	struct scli_verify	*sv = arg;
	struct timeval		 tv = { 0, 0 };
	size_t			 i;
	char			 t[32];

	if (v == SECRET_OK) {
		printf("ok id=%s subject=%s method=secret groups=", p->id,
		    p->subject);
		for (i = 0; i < p->ngroups; i++)
			printf("%s%s", i > 0 ? "," : "", p->groups[i]);
		printf("%s name=%s expires=%s\n", p->ngroups == 0 ? "-" : "",
		    p->name[0] != '\0' ? p->name : "-",
		    secret_fmt_time(p->expires, t, sizeof(t)));
	} else {
		printf("refused reason=%s\n", secret_verdict_name(v));
		sv->status = 1;
	}
	fflush(stdout);
	sv->busy = 0;
	evtimer_add(sv->ev_next, &tv);
}

/* Check the next whole line, or leave at the end of the input. */
static void
scli_verify_next(evutil_socket_t fd, short ev, void *arg)
{
	struct scli_verify	*sv = arg;
	struct timeval		 tv = { 0, 10000 };
	char			*nl;
	size_t			 len, used;

	if (sv->busy)
		return;
	if (revoke_syncs(sv->rv) == 0) {
		evtimer_add(sv->ev_next, &tv);	/* as a gateway: synced */
		return;
	}
	if ((nl = memchr(sv->buf, '\n', sv->have)) != NULL) {
		len = nl - sv->buf;
		used = len + 1;
	} else if (!sv->eof) {
		event_add(sv->ev_in, NULL);	/* the rest of the line */
		return;
	} else if (sv->have > 0 && !sv->skipping) {
		len = used = sv->have;	/* last line, no newline */
	} else {
		/* Done: once the last_used write, if any, is. */
		if (secrets_writing(sv->s) && ++sv->waits < 500) {
			evtimer_add(sv->ev_next, &tv);
			return;
		}
		event_base_loopbreak(sv->base);
		return;
	}
	if (len > 0 && sv->buf[len - 1] == '\r')
		len--;
	sv->busy = 1;
	/* The check hashes the password before it returns. */
	if (secrets_check(sv->s, sv->buf, len, scli_verify_cb, sv) == NULL)
		fatalx("out of memory");
	OPENSSL_cleanse(sv->buf, used);
	sv->have -= used;
	memmove(sv->buf, sv->buf + used, sv->have);
}

static void
scli_verify_read(evutil_socket_t fd, short ev, void *arg)
{
	struct scli_verify	*sv = arg;
	struct timeval		 tv = { 0, 0 };
	ssize_t			 n;
	char			*nl;

	n = read(0, sv->buf + sv->have, SCLI_LINE_MAX - sv->have);
	if (n <= 0) {
		sv->eof = 1;
		event_del(sv->ev_in);
	} else
		sv->have += n;
	if (sv->skipping) {
		if ((nl = memchr(sv->buf, '\n', sv->have)) != NULL) {
			sv->skipping = 0;
			sv->have -= nl + 1 - sv->buf;
			memmove(sv->buf, nl + 1, sv->have);
		} else {
			OPENSSL_cleanse(sv->buf, sv->have);
			sv->have = 0;
		}
	} else if (sv->have == SCLI_LINE_MAX &&
	    memchr(sv->buf, '\n', sv->have) == NULL) {
		/* No secret is this long: answer, and skip to the line end. */
		OPENSSL_cleanse(sv->buf, sv->have);
		sv->have = 0;
		sv->skipping = 1;
		printf("refused reason=%s\n",
		    secret_verdict_name(SECRET_UNKNOWN));
		fflush(stdout);
		sv->status = 1;
	}
	/* One line at a time: read on once it is answered. */
	if (memchr(sv->buf, '\n', sv->have) != NULL)
		event_del(sv->ev_in);
	evtimer_add(sv->ev_next, &tv);
}

static void
scli_verify_give_up(evutil_socket_t fd, short ev, void *arg)
{
	struct scli_verify	*sv = arg;

	if (revoke_syncs(sv->rv) == 0) {
		printf("refused reason=%s\n",
		    secret_verdict_name(SECRET_REDIS_UNAVAILABLE));
		sv->status = 1;
		event_base_loopbreak(sv->base);
	}
}

static int
scli_verify(const struct config *conf)
{
	struct scli_verify	 sv;
	struct timeval		 give_up;

	memset(&sv, 0, sizeof(sv));
	if ((sv.base = event_base_new()) == NULL)
		fatalx("event_base_new failed");
	if ((sv.rv = revoke_new(sv.base, conf)) == NULL ||
	    (sv.s = secrets_new(sv.base, conf, sv.rv)) == NULL)
		fatalx("out of memory");
	sv.ev_in = event_new(sv.base, 0, EV_READ | EV_PERSIST,
	    scli_verify_read, &sv);
	sv.ev_next = evtimer_new(sv.base, scli_verify_next, &sv);
	sv.ev_give_up = evtimer_new(sv.base, scli_verify_give_up, &sv);
	if (sv.ev_in == NULL || sv.ev_next == NULL || sv.ev_give_up == NULL)
		fatalx("event_new failed");
	/* Until the first sync, Redis counts as unreachable. */
	give_up.tv_sec = conf->redis != NULL ?
	    conf->redis->connect_timeout_ms / 1000 + 1 : 6;
	give_up.tv_usec = 0;
	event_add(sv.ev_in, NULL);
	evtimer_add(sv.ev_give_up, &give_up);
	event_base_dispatch(sv.base);
	OPENSSL_cleanse(sv.buf, sizeof(sv.buf));
	event_free(sv.ev_in);
	event_free(sv.ev_next);
	event_free(sv.ev_give_up);
	secrets_free(sv.s);
	revoke_free(sv.rv);
	event_base_free(sv.base);
	return (sv.status);
}

/* `portcullis secret ...` */
int
secrets_cli(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "subject", required_argument, NULL, 's' },
		{ "group", required_argument, NULL, 'g' },
		{ "name", required_argument, NULL, 'n' },
		{ "expires", required_argument, NULL, 'e' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	struct config	*conf;
	const char	*file = NULL, *sub, *subject = NULL, *name = NULL;
	const char	*expires = NULL, **groups;
	char		*cause = NULL;
	size_t		 ngroups = 0;
	int		 ch, rv;

	if (argc < 2 || strcmp(argv[1], "--help") == 0 ||
	    strcmp(argv[1], "-h") == 0) {
		fputs(scli_usage, argc < 2 ? stderr : stdout);
		return (argc < 2 ? 2 : 0);
	}
	sub = argv[1];
	if (strcmp(sub, "create") != 0 && strcmp(sub, "list") != 0 &&
	    strcmp(sub, "revoke") != 0 && strcmp(sub, "verify") != 0) {
		fprintf(stderr, "portcullis: secret: unknown command '%s'\n%s",
		    sub, scli_usage);
		return (2);
	}
	if ((groups = calloc(SCLI_MAX_GROUPS_ARG, sizeof(*groups))) == NULL)
		fatal("calloc");
	optind = 1;
	while ((ch = getopt_long(argc - 1, argv + 1, "c:h", longopts,
	    NULL)) != -1) {
		switch (ch) {
		case 'c':
			file = optarg;
			break;
		case 's':
			subject = optarg;
			break;
		case 'g':
			if (ngroups == SCLI_MAX_GROUPS_ARG) {
				fprintf(stderr, "portcullis: secret: too many "
				    "--group\n");
				free(groups);
				return (2);
			}
			groups[ngroups++] = optarg;
			break;
		case 'n':
			name = optarg;
			break;
		case 'e':
			expires = optarg;
			break;
		case 'h':
			fputs(scli_usage, stdout);
			free(groups);
			return (0);
		default:
			fputs(scli_usage, stderr);
			free(groups);
			return (2);
		}
	}
	argc -= optind + 1;
	argv += optind + 1;
	if (file == NULL ||
	    (strcmp(sub, "create") == 0 && (subject == NULL || argc != 0)) ||
	    (strcmp(sub, "create") != 0 && (subject != NULL || ngroups ||
	    name != NULL || expires != NULL)) ||
	    (strcmp(sub, "revoke") == 0 && argc != 1) ||
	    (strcmp(sub, "revoke") != 0 && strcmp(sub, "create") != 0 &&
	    argc != 0)) {
		fputs(scli_usage, stderr);
		free(groups);
		return (2);
	}
	if ((conf = config_load(file, &cause)) == NULL) {
		fprintf(stderr, "%s\n", cause != NULL ? cause : "invalid");
		free(cause);
		free(groups);
		return (2);
	}
	/* verify logs what it learns, as a gateway would; others less. */
	log_init(strcmp(sub, "verify") == 0 ||
	    conf->log_level < CONFIG_LOG_WARN ? conf->log_level :
	    CONFIG_LOG_WARN);
	signal(SIGPIPE, SIG_IGN);
	if (strcmp(sub, "create") == 0)
		rv = scli_create(conf, subject, groups, ngroups, name, expires);
	else if (strcmp(sub, "list") == 0)
		rv = scli_list(conf);
	else if (strcmp(sub, "revoke") == 0)
		rv = scli_revoke(conf, argv[0]);
	else
		rv = scli_verify(conf);
	free(groups);
	config_unref(conf);
	return (rv);
}
