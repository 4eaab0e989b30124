/*
 * revoke_cli.c: `portcullis token revoke (--subject S | --all)
 * [--before TIME]`: raise the not-before time in revocation.key (never
 * lower it: an older --before changes nothing) and PUBLISH the
 * revocation on revocation.channel, so that every running instance
 * refuses at once every token, refresh token and secret of the subject
 * issued before TIME.  An instance that misses the message (it was away
 * from Redis) reads the hash again when it is back.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <hiredis/hiredis.h>

#include "portcullis.h"
#include "rds.h"
#include "revoke.h"
#include "secret.h"

#define TCLI_TRIES	10	/* transactions before giving up */

static const char rcli_usage[] =
    "usage: portcullis token revoke -c FILE (--subject S | --all) "
    "[--before TIME]\n"
    "\n"
    "Refuse, on every running instance, every token, refresh token and\n"
    "secret of subject S (or of everyone, --all) issued before TIME.\n"
    "TIME: now (the default: everything issued up to this second,\n"
    "included), @SECONDS since the epoch, or 2026-12-01T18:00:00Z.\n";

static int
tcli_revoke(const struct config *conf, const char *subject,
    int64_t before)
{
	struct rds_params	 p;
	redisContext		*rc;
	redisReply		*r;
	char			 field[REVOKE_SUBJECT_MAX + 3];
	char			 msg[REVOKE_SUBJECT_MAX + 64];
	char			 nb[32], t[32];
	long long		 cur = 0;
	int			 tries, done;

	rds_params_init(&p, conf, "token revoke");
	if (rds_connect_cli(&p, "token revoke", &rc) != 0)
		return (1);
	if (subject != NULL) {
		snprintf(field, sizeof(field), "s:%s", subject);
		snprintf(msg, sizeof(msg), "subject %lld %s",
		    (long long)before, subject);
	} else {
		snprintf(field, sizeof(field), "all");
		snprintf(msg, sizeof(msg), "all %lld", (long long)before);
	}
	snprintf(nb, sizeof(nb), "%lld", (long long)before);
	/*
	 * Read and raise in one transaction: another revocation between
	 * the HGET and the HSET, with a later time, must not be overwritten
	 * with this earlier one (instances re-reading the hash would learn
	 * the lower time).  EXEC answers nil when the key changed after
	 * WATCH: read again.
	 */
	for (tries = 0;; tries++) {
		if (tries == TCLI_TRIES) {
			fprintf(stderr, "portcullis: token revoke: %s "
			    "kept changing; nothing written\n",
			    conf->revocation_key);
			redisFree(rc);
			return (1);
		}
		r = redisCommand(rc, "WATCH %s", conf->revocation_key);
		if (r == NULL || r->type != REDIS_REPLY_STATUS)
			goto fail;
		freeReplyObject(r);
		r = redisCommand(rc, "HGET %s %s", conf->revocation_key,
		    field);
		if (r == NULL || (r->type != REDIS_REPLY_STRING &&
		    r->type != REDIS_REPLY_NIL))
			goto fail;
		cur = r->type == REDIS_REPLY_STRING ?
		    strtoll(r->str, NULL, 10) : 0;
		freeReplyObject(r);
		if (cur >= before) {
			r = redisCommand(rc, "UNWATCH");
			if (r == NULL || r->type != REDIS_REPLY_STATUS)
				goto fail;
			freeReplyObject(r);
			break;
		}
		r = redisCommand(rc, "MULTI");
		if (r == NULL || r->type != REDIS_REPLY_STATUS)
			goto fail;
		freeReplyObject(r);
		r = redisCommand(rc, "HSET %s %s %s", conf->revocation_key,
		    field, nb);
		if (r == NULL || r->type != REDIS_REPLY_STATUS)
			goto fail;	/* QUEUED */
		freeReplyObject(r);
		r = redisCommand(rc, "EXEC");
		if (r == NULL || (r->type != REDIS_REPLY_ARRAY &&
		    r->type != REDIS_REPLY_NIL))
			goto fail;
		if (r->type == REDIS_REPLY_ARRAY && (r->elements != 1 ||
		    r->element[0]->type != REDIS_REPLY_INTEGER)) {
			fprintf(stderr, "portcullis: token revoke: HSET %s: "
			    "%s\n", conf->revocation_key,
			    r->elements == 1 && r->element[0]->type ==
			    REDIS_REPLY_ERROR ? r->element[0]->str :
			    "unexpected reply");
			freeReplyObject(r);
			redisFree(rc);
			return (1);
		}
		done = r->type == REDIS_REPLY_ARRAY;	/* nil: changed */
		freeReplyObject(r);
		if (done)
			break;
	}
	r = redisCommand(rc, "PUBLISH %s %s", conf->revocation_channel, msg);
	if (r == NULL || r->type != REDIS_REPLY_INTEGER)
		goto fail;
	printf("revoked %s%s issued before %s; %lld listening instance(s) "
	    "told\n", subject != NULL ? "subject " : "every subject",
	    subject != NULL ? subject : "",
	    secret_fmt_time(cur < before ? before : cur, t, sizeof(t)),
	    r->integer);
	freeReplyObject(r);
	redisFree(rc);
	return (0);
fail:
	fprintf(stderr, "portcullis: token revoke: %s\n", r == NULL ?
	    rc->errstr : r->type == REDIS_REPLY_ERROR ? r->str :
	    "unexpected reply");
	freeReplyObject(r);
	redisFree(rc);
	return (1);
}

/* `portcullis token revoke ...` */
int
revoke_cli(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "subject", required_argument, NULL, 's' },
		{ "all", no_argument, NULL, 'a' },
		{ "before", required_argument, NULL, 'b' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	struct config	*conf;
	const char	*file = NULL, *subject = NULL, *before_s = NULL;
	char		*cause = NULL;
	int		 ch, all = 0, rv, i, ok;
	int64_t		 now = time(NULL), before;

	if (argc < 2 || strcmp(argv[1], "--help") == 0 ||
	    strcmp(argv[1], "-h") == 0) {
		fputs(rcli_usage, argc < 2 ? stderr : stdout);
		return (argc < 2 ? 2 : 0);
	}
	if (strcmp(argv[1], "revoke") != 0) {
		fprintf(stderr, "portcullis: token: unknown command '%s'\n%s",
		    argv[1], rcli_usage);
		return (2);
	}
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
		case 'a':
			all = 1;
			break;
		case 'b':
			before_s = optarg;
			break;
		case 'h':
			fputs(rcli_usage, stdout);
			return (0);
		default:
			fputs(rcli_usage, stderr);
			return (2);
		}
	}
	if (file == NULL || optind + 1 != argc || (subject == NULL) == !all) {
		fputs(rcli_usage, stderr);
		return (2);
	}
	if (subject != NULL) {
		ok = subject[0] != '\0' &&
		    strlen(subject) <= REVOKE_SUBJECT_MAX;
		for (i = 0; ok && subject[i] != '\0'; i++)
			ok = (unsigned char)subject[i] >= 0x20 &&
			    subject[i] != 0x7f;
		if (!ok) {
			fprintf(stderr, "portcullis: token revoke: --subject "
			    "must be 1 to %d printable characters\n",
			    REVOKE_SUBJECT_MAX);
			return (2);
		}
	}
	/*
	 * Times are whole seconds (iat): "now" means up to the end of this
	 * second, so that a token issued a moment before the command, in
	 * the same second, is not left alive.
	 */
	if (before_s == NULL || strcmp(before_s, "now") == 0)
		before = now + 1;
	else if (secret_parse_time(before_s, now, &before) == -1) {
		fprintf(stderr, "portcullis: token revoke: --before: now, "
		    "@SECONDS or 2026-12-01T18:00:00Z\n");
		return (2);
	}
	if ((conf = config_load(file, &cause)) == NULL) {
		fprintf(stderr, "%s\n", cause != NULL ? cause : "invalid");
		free(cause);
		return (2);
	}
	log_init(conf->log_level);
	signal(SIGPIPE, SIG_IGN);
	rv = tcli_revoke(conf, subject, before);
	config_unref(conf);
	return (rv);
}
