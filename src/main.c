/*
 * main.c: the command line.  One binary with subcommands; each has --help.
 * Only start-up lives here: the daemon is server.c, config validation is
 * config.c.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "portcullis.h"
#include "login.h"
#include "revoke.h"
#include "secrets.h"

struct cmd {
	const char	*name;
	int		(*fn)(int, char **);
	const char	*usage;
	const char	*summary;	/* one sentence, for the list */
	const char	*help;
};

static int	cmd_serve(int, char **);
static int	cmd_check_config(int, char **);
static int	cmd_version(int, char **);
static int	cmd_config_reference(int, char **);
static int	cmd_audit(int, char **);
static int	cmd_policy(int, char **);
static int	cmd_keygen(int, char **);
static int	cmd_redis(int, char **);
static int	cmd_secret(int, char **);
static int	cmd_token(int, char **);
static int	cmd_metrics_reference(int, char **);
static int	cmd_login(int, char **);

static const struct cmd cmds[] = {
	{ "serve", cmd_serve, "serve -c FILE",
	    "Run the gateway.",
	    "Run the gateway in the foreground; logs go to stderr (or\n"
	    "log.file).  Started as root with \"user\" set, it switches to\n"
	    "that user once the listeners are bound and the keys read.\n"
	    "SIGTERM or SIGINT drains in-flight requests (up to\n"
	    "timeouts.drain), then exits.  SIGHUP reloads the config, the\n"
	    "policy, the TLS certificate and the token keys without\n"
	    "dropping connections.  SIGUSR1 reopens log.file (logrotate)." },
	{ "check-config", cmd_check_config, "check-config -c FILE",
	    "Validate a configuration file.",
	    "Validate a configuration file.  Every error names its JSON\n"
	    "path.  Exit 0 when valid, 1 otherwise." },
	{ "config-reference", cmd_config_reference, "config-reference",
	    "Print the configuration reference.",
	    "Print the configuration reference (Markdown) generated from\n"
	    "the schema." },
	{ "version", cmd_version, "version", "Print the version.",
	    "Print the version." },
	{ "audit", cmd_audit,
	    "audit query|tail|export|generate -c FILE [options]",
	    "Search, follow, export or fill the audit stream.",
	    "Search the audit stream (query), follow it (tail), write a\n"
	    "time range as JSON lines (export), or write synthetic\n"
	    "records for tests and benchmarks (generate);\n"
	    "portcullis audit --help lists the options." },
	{ "policy", cmd_policy, "policy explain -c FILE [options]",
	    "Explain the policy's decision for one request.",
	    "Decide one request with the configuration's policy and say\n"
	    "why; portcullis policy --help lists the options." },
	{ "keygen", cmd_keygen, "keygen [-t ec|rsa] -o PREFIX",
	    "Write a new token signing key pair.",
	    "Write a new token signing key pair (PREFIX.key, .crt, .jwk)\n"
	    "and print its kid; portcullis keygen --help for options." },
	{ "redis", cmd_redis, "redis check|subscribe -c FILE",
	    "Check the Redis login, or follow its channels.",
	    "Log in to the configured Redis as serve would (check), or\n"
	    "follow channels over a subscriber link (subscribe)." },
	{ "secret", cmd_secret, "secret create|list|revoke|verify -c FILE",
	    "Manage robot and CLI secrets.",
	    "Robot and CLI secrets, stored hashed in Redis; portcullis\n"
	    "secret --help lists the options." },
	{ "token", cmd_token, "token revoke -c FILE (--subject S | --all)",
	    "Revoke a subject's (or everyone's) tokens.",
	    "Refuse a subject's (or everyone's) tokens and secrets issued\n"
	    "before a time, on every instance; portcullis token --help." },
	{ "login", cmd_login, "login [options] REGISTRY",
	    "Sign in to a registry from a terminal (device flow).",
	    "Sign in with the registry's identity provider (the device\n"
	    "flow: approve a code in any browser) and store the credential\n"
	    "for docker, podman and skopeo; portcullis login --help." },
	{ "metrics-reference", cmd_metrics_reference, "metrics-reference",
	    "Print the metrics reference.",
	    "Print the table of metrics (Markdown) that GET /metrics\n"
	    "exposes, generated from their declarations." },
};

static void
usage_all(FILE *f)
{
	size_t	i;

	fprintf(f, "usage: portcullis COMMAND [options]\n\ncommands:\n");
	/* Whole sentences: a long usage puts its summary on the next line. */
	for (i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		if (strlen(cmds[i].usage) <= 30)
			fprintf(f, "  %-30s  %s\n", cmds[i].usage,
			    cmds[i].summary);
		else
			fprintf(f, "  %s\n  %-30s  %s\n", cmds[i].usage, "",
			    cmds[i].summary);
	}
	fprintf(f, "\nportcullis COMMAND --help for more.\n");
}

static int
cmd_help(const struct cmd *c, FILE *f)
{
	fprintf(f, "usage: portcullis %s\n\n%s\n", c->usage, c->help);
	return (f == stdout ? 0 : 1);
}

/* Parse "-c FILE" / "--config FILE" and "--help". */
static const char *
parse_config_arg(const struct cmd *c, int argc, char **argv, int *rv)
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	const char	*file = NULL;
	int		 ch;

	optind = 1;
	while ((ch = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			file = optarg;
			break;
		case 'h':
			*rv = cmd_help(c, stdout);
			return (NULL);
		default:
			*rv = cmd_help(c, stderr);
			return (NULL);
		}
	}
	if (file == NULL || optind != argc) {
		*rv = cmd_help(c, stderr);
		return (NULL);
	}
	return (file);
}

static int
cmd_serve(int argc, char **argv)
{
	const char	*file;
	char		*cause = NULL;
	int		 rv = 1;

	if ((file = parse_config_arg(&cmds[0], argc, argv, &rv)) == NULL)
		return (rv);
	if (server_run(file, &cause) == -1) {
		fprintf(stderr, "portcullis: %s\n", cause ? cause :
		    "cannot start");
		free(cause);
		return (1);
	}
	return (0);
}

static int
cmd_check_config(int argc, char **argv)
{
	struct config	*conf;
	const char	*file;
	char		*cause = NULL;
	int		 rv = 1;

	if ((file = parse_config_arg(&cmds[1], argc, argv, &rv)) == NULL)
		return (rv);
	if ((conf = config_load(file, &cause)) == NULL) {
		fprintf(stderr, "%s", cause ? cause : "invalid\n");
		if (cause != NULL && cause[strlen(cause) - 1] != '\n')
			fputc('\n', stderr);
		free(cause);
		return (1);
	}
	printf("%s: ok (%zu upstream%s)\n", file, conf->nupstreams,
	    conf->nupstreams == 1 ? "" : "s");
	config_unref(conf);
	return (0);
}

static int
cmd_config_reference(int argc, char **argv)
{
	if (argc > 1) {
		if (strcmp(argv[1], "--help") == 0)
			return (cmd_help(&cmds[2], stdout));
		return (cmd_help(&cmds[2], stderr));
	}
	config_reference(stdout);
	return (0);
}

static void
metrics_ref_emit(void *arg, const char *data, size_t len)
{
	fwrite(data, 1, len, arg);
}

static int
cmd_metrics_reference(int argc, char **argv)
{
	const struct cmd	*c = &cmds[sizeof(cmds) / sizeof(cmds[0]) - 1];

	if (argc > 1)
		return (cmd_help(c, strcmp(argv[1], "--help") == 0 ? stdout :
		    stderr));
	metrics_reference(metrics_ref_emit, stdout);
	return (0);
}

static int
cmd_audit(int argc, char **argv)
{
	return (audit_cli(argc, argv));
}

static int
cmd_policy(int argc, char **argv)
{
	return (policy_cli(argc, argv));
}

static int
cmd_keygen(int argc, char **argv)
{
	return (keygen_cli(argc, argv));
}

static int
cmd_redis(int argc, char **argv)
{
	return (rds_cli(argc, argv));
}

static int
cmd_secret(int argc, char **argv)
{
	return (secrets_cli(argc, argv));
}

static int
cmd_token(int argc, char **argv)
{
	return (revoke_cli(argc, argv));
}

static int
cmd_login(int argc, char **argv)
{
	return (login_cli(argc, argv));
}

static int
cmd_version(int argc, char **argv)
{
	if (argc > 1) {
		if (strcmp(argv[1], "--help") == 0)
			return (cmd_help(&cmds[3], stdout));
		return (cmd_help(&cmds[3], stderr));
	}
	printf("portcullis %s\n", PC_VERSION);
	return (0);
}

int
main(int argc, char **argv)
{
	size_t		 i;
	const char	*prog;

	/* The same binary as docker-credential-portcullis (make install). */
	prog = argv[0] != NULL && strrchr(argv[0], '/') != NULL ?
	    strrchr(argv[0], '/') + 1 : argv[0];
	if (prog != NULL && strncmp(prog, "docker-credential-", 18) == 0)
		return (credhelper_main(argc, argv));
	if (argc < 2) {
		usage_all(stderr);
		return (1);
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
	    strcmp(argv[1], "help") == 0) {
		usage_all(stdout);
		return (0);
	}
	if (strcmp(argv[1], "--version") == 0)
		return (cmd_version(1, argv));
	for (i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		if (strcmp(argv[1], cmds[i].name) == 0)
			return (cmds[i].fn(argc - 1, argv + 1));
	fprintf(stderr, "portcullis: unknown command '%s'\n", argv[1]);
	usage_all(stderr);
	return (1);
}
