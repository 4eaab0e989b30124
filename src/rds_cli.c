/*
 * rds_cli.c: `portcullis redis check` and `portcullis redis subscribe`,
 * the operator's view of the links rds.c makes.  check logs in to every
 * Redis the configuration names, as `serve` would at start (rds.c's
 * blocking handshake, then PING), and says what it found; subscribe runs
 * one subscriber link (the asynchronous one the gateway uses) on an event
 * loop and prints a line each time it is subscribed, again after every
 * reconnect, and for each message, until SIGINT or SIGTERM.  Neither
 * prints the password.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "portcullis.h"
#include "rds.h"

#define RCLI_MAX_CHANNELS	64

static const char rcli_usage[] =
    "usage: portcullis redis check -c FILE\n"
    "       portcullis redis subscribe -c FILE CHANNEL...\n"
    "\n"
    "check: log in to the Redis of the redis section (and audit.redis\n"
    "when it differs) with its user, password file and database, as\n"
    "serve does at start, and PING.  Exit 0 when every one answered, 1\n"
    "when one refused the credentials or the database, 2 when one could\n"
    "not be reached.\n"
    "subscribe: subscribe to the channels over the gateway's own kind of\n"
    "link and print \"subscribed\" each time it is (again after every\n"
    "reconnect: where the gateway re-syncs), \"down REASON\" when it is\n"
    "lost, and \"message CHANNEL PAYLOAD\" for each message.\n";

static int
rcli_check(const struct config *conf)
{
	struct rds_params	 p;
	redisContext		*rc;
	redisReply		*r;
	int			 i, rv = 0, st;

	for (i = 0; i < 2; i++) {
		rds_params_init(&p, conf, "check");
		if (i == 1) {
			if (conf->audit == NULL ||
			    (strcmp(conf->audit->redis_host, p.host) == 0 &&
			    conf->audit->redis_port == p.port))
				break;
			p.host = conf->audit->redis_host;
			p.port = conf->audit->redis_port;
		} else if (conf->redis == NULL && conf->audit != NULL) {
			p.host = conf->audit->redis_host;
			p.port = conf->audit->redis_port;
		}
		if ((st = rds_connect_cli(&p, NULL, &rc)) != 0) {
			if (st == RDS_SYNC_REFUSED)
				rv = 1;
			else if (rv == 0)
				rv = 2;
			continue;
		}
		r = redisCommand(rc, "PING");
		/* Where it went: with sentinels, the master they named. */
		if (r == NULL || r->type == REDIS_REPLY_ERROR) {
			fprintf(stderr, "portcullis: redis %s:%d: PING: %s\n",
			    rc->tcp.host, rc->tcp.port, r == NULL ?
			    rc->errstr : r->str);
			rv = r == NULL ? 2 : 1;
		} else
			printf("redis %s:%d: ok%s%s, database %d%s%s\n",
			    rc->tcp.host, rc->tcp.port, p.username != NULL ?
			    ", user " : "", p.username != NULL ? p.username : "",
			    p.database, p.nsentinels > 0 ? ", master of " : "",
			    p.nsentinels > 0 ? p.master_name : "");
		freeReplyObject(r);
		redisFree(rc);
	}
	return (rv);
}

static void
rcli_up(struct rds *l, void *arg)
{
	printf("subscribed\n");
	fflush(stdout);
}

static void
rcli_down(struct rds *l, void *arg, const char *why, int was_up)
{
	printf("down %s\n", why);
	fflush(stdout);
}

static void
rcli_message(struct rds *l, void *arg, const char *chan, size_t chanlen,
    const char *msg, size_t msglen)
{
	size_t	 i;

	printf("message %.*s ", (int)chanlen, chan);
	for (i = 0; i < msglen; i++)
		putchar(msg[i] >= ' ' && msg[i] <= '~' ? msg[i] : '?');
	putchar('\n');
	fflush(stdout);
}

static const struct rds_ops rcli_ops = {
	rcli_up, rcli_down, rcli_message
};

static void
rcli_signal_cb(evutil_socket_t sig, short ev, void *arg)
{
	event_base_loopbreak(arg);
}

static int
rcli_subscribe(const struct config *conf, int nchans, char **chans)
{
	struct rds_params	 p;
	struct event_base	*base;
	struct event		*ev_term, *ev_int;
	struct rds		*l;
	int			 i;

	if ((base = event_base_new()) == NULL)
		fatalx("event_base_new failed");
	rds_params_init(&p, conf, "subscribe");
	l = rds_new(base, &p, &rcli_ops, NULL);
	for (i = 0; i < nchans; i++)
		rds_subscribe(l, chans[i]);
	ev_term = evsignal_new(base, SIGTERM, rcli_signal_cb, base);
	ev_int = evsignal_new(base, SIGINT, rcli_signal_cb, base);
	if (ev_term == NULL || ev_int == NULL)
		fatalx("evsignal_new failed");
	evsignal_add(ev_term, NULL);
	evsignal_add(ev_int, NULL);
	rds_start(l);
	event_base_dispatch(base);
	rds_free(l);
	event_free(ev_term);
	event_free(ev_int);
	event_base_free(base);
	return (0);
}

/* `portcullis redis check|subscribe ...` */
int
rds_cli(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	struct config	*conf;
	const char	*file = NULL, *sub;
	char		*cause = NULL;
	int		 ch, rv;

	if (argc < 2 || strcmp(argv[1], "--help") == 0 ||
	    strcmp(argv[1], "-h") == 0) {
		fputs(rcli_usage, argc < 2 ? stderr : stdout);
		return (argc < 2 ? 2 : 0);
	}
	sub = argv[1];
	if (strcmp(sub, "check") != 0 && strcmp(sub, "subscribe") != 0) {
		fprintf(stderr, "portcullis: redis: unknown command '%s'\n%s",
		    sub, rcli_usage);
		return (2);
	}
	optind = 1;
	while ((ch = getopt_long(argc - 1, argv + 1, "c:h", longopts,
	    NULL)) != -1) {
		switch (ch) {
		case 'c':
			file = optarg;
			break;
		case 'h':
			fputs(rcli_usage, stdout);
			return (0);
		default:
			fputs(rcli_usage, stderr);
			return (2);
		}
	}
	argc -= optind + 1;
	argv += optind + 1;
	if (file == NULL || (strcmp(sub, "check") == 0 && argc != 0) ||
	    (strcmp(sub, "subscribe") == 0 &&
	    (argc < 1 || argc > RCLI_MAX_CHANNELS))) {
		fputs(rcli_usage, stderr);
		return (2);
	}
	if ((conf = config_load(file, &cause)) == NULL) {
		fprintf(stderr, "%s\n", cause != NULL ? cause : "invalid");
		free(cause);
		return (2);
	}
	log_init(conf->log_level);
	signal(SIGPIPE, SIG_IGN);
	if (strcmp(sub, "check") == 0)
		rv = rcli_check(conf);
	else
		rv = rcli_subscribe(conf, argc, argv);
	config_unref(conf);
	return (rv);
}
