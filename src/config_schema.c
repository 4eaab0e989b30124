/*
 * config_schema.c: the configuration schema's root.  One table per JSON
 * object lists every key with its type, bounds, default, whether a reload
 * may change it and its help text; cfg_root_keys below is the top-level
 * object, and its rows name the section tables, which live one family a
 * file (config_schema_server.c, config_schema_upstream.c,
 * config_schema_redis.c, config_schema_access.c).  Parsing, defaults,
 * reload checks and the reference documentation all walk these tables
 * from cfg_root_keys (config.c, config_ref.c), so a key cannot be
 * documented but not parsed or the other way round.  This file also holds
 * the per-key check functions the rows of every section name.
 *
 * Guarantees: the tables are constant; a row's position is the order in
 * which its key is parsed, reported and documented.  A check function only
 * reads its argument: no allocation, no I/O, and its message is a constant
 * that never echoes the value.
 */
#include <arpa/inet.h>

#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "config_int.h"
#include "metrics.h"
#include "netaddr.h"
#include "policy.h"

#define CFG_NAME_MAX	32	/* upstream names */

const struct cfg_key cfg_root_keys[] = {
	{ .name = "listen", .type = CFG_OBJECT, .sub = cfg_listen_keys,
	  .help = "Where clients connect." },
	{ .name = "external_url", .type = CFG_STRING, .flags = CFG_RELOAD,
	  .off = CFG_OFF(external_url), .check = cfg_check_external_url,
	  .def_doc = "from the Host header",
	  .help = "URL clients reach the gateway at, used in token realms "
	  "and redirects: http or https, no path." },
	{ .name = "service", .type = CFG_STRING, .flags = CFG_RELOAD,
	  .off = CFG_OFF(service), .def_str = "portcullis",
	  .check = cfg_check_service,
	  .help = "Token service name (the service= of the Bearer "
	  "challenge and the aud of issued tokens)." },
	{ .name = "instance_id", .type = CFG_STRING,
	  .off = CFG_OFF(instance_id), .check = cfg_check_instance_id,
	  .def_doc = "HOSTNAME:PORT",
	  .help = "Name of this gateway instance in logs, metrics and audit "
	  "records." },
	{ .name = "limits", .type = CFG_OBJECT, .sub = cfg_limits_keys,
	  .help = "Sizes and counts bounded before memory is allocated." },
	{ .name = "buffers", .type = CFG_OBJECT, .sub = cfg_buffers_keys,
	  .help = "Buffering and backpressure." },
	{ .name = "timeouts", .type = CFG_OBJECT, .sub = cfg_timeouts_keys,
	  .help = "Timeouts, in seconds; fractions allowed." },
	{ .name = "log", .type = CFG_OBJECT, .sub = cfg_log_keys,
	  .help = "Logging." },
	{ .name = "cache", .type = CFG_PTR_OBJECT, .off = CFG_OFF(cache),
	  .sub = cfg_cache_keys, .sub_size = sizeof(struct config_cache),
	  .def_doc = "no cache",
	  .help = "Pull-through cache of blobs, manifests and tags on local "
	  "disk; absent means every pull goes to the upstream." },
	{ .name = "audit", .type = CFG_PTR_OBJECT, .off = CFG_OFF(audit),
	  .sub = cfg_audit_keys, .sub_size = sizeof(struct config_audit),
	  .def_doc = "no audit",
	  .help = "Audit record of every request in a Redis stream, spooled "
	  "to disk while Redis is away; absent means no audit." },
	{ .name = "redis", .type = CFG_PTR_OBJECT, .off = CFG_OFF(redis),
	  .sub = cfg_redis_keys, .sub_size = sizeof(struct config_redis),
	  .def_doc = "none",
	  .help = "Shared Redis settings (address, database, ACL user, "
	  "password file, timeouts) for the audit, secrets and revocation "
	  "(README \"Redis\")." },
	{ .name = "secrets", .type = CFG_OBJECT, .sub = cfg_secrets_keys,
	  .help = "Gateway secrets for robots and CLIs, kept in the redis "
	  "section's Redis (README \"Secrets\")." },
	{ .name = "revocation", .type = CFG_OBJECT,
	  .sub = cfg_revocation_keys,
	  .help = "Revocation of tokens and secrets on every instance, "
	  "through the redis section's Redis (README \"Revocation\")." },
	{ .name = "upstreams", .type = CFG_ARRAY,
	  .flags = CFG_RELOAD | CFG_REQUIRED, .off = CFG_OFF(upstreams),
	  .count_off = CFG_OFF(nupstreams), .min = 1, .max = 256,
	  .sub = cfg_upstream_keys, .sub_size = sizeof(struct config_upstream),
	  .help = "Registries behind the gateway." },
	{ .name = "policy", .type = CFG_PTR_OBJECT, .flags = CFG_RELOAD,
	  .off = CFG_OFF(policy_src), .sub = cfg_policy_keys,
	  .sub_size = sizeof(struct pol_src),
	  .def_doc = "no rules: every request is denied",
	  .help = "Per-repository access policy (README \"Policy\")." },
	{ .name = "admin", .type = CFG_OBJECT, .sub = cfg_admin_keys,
	  .help = "The admin listener (README \"Metrics\")." },
	{ .name = "metrics", .type = CFG_OBJECT, .sub = cfg_metrics_keys,
	  .help = "GET /metrics: who may read it, and the bound on label "
	  "values (README \"Metrics\")." },
	{ .name = "user", .type = CFG_STRING, .off = CFG_OFF(run_user),
	  .check = cfg_check_account, .def_doc = "none: stay who started it",
	  .help = "When started as root: after binding the listeners and "
	  "reading the keys and secret files, switch to this user (name or "
	  "number) and its group; the cache and spool must be writable by "
	  "it (README \"Running as a service\")." },
	{ .name = "group", .type = CFG_STRING, .off = CFG_OFF(run_group),
	  .check = cfg_check_account, .def_doc = "the user's group",
	  .help = "Group to switch to with user." },
	{ .name = "workers", .type = CFG_SIZE, .off = CFG_OFF(workers),
	  .min = 0, .max = 256, .def = 0,
	  .def_doc = "0: the number of cores",
	  .help = "Processes that serve requests, under one supervising "
	  "master; 1 runs a single process and no master (README \"Every "
	  "core\")." },
	{ .name = "worker_balance", .type = CFG_SIZE, .flags = CFG_RELOAD,
	  .off = CFG_OFF(worker_balance), .min = 0, .max = 65536, .def = 4,
	  .help = "With workers: a worker holding more than this many open "
	  "connections above the least loaded other worker stops accepting "
	  "until it is not, so a burst of new connections is spread over "
	  "the workers; 0 lets whichever worker wakes first take them "
	  "(README \"Every core\")." },
	{ .name = "identity", .type = CFG_PTR_OBJECT, .flags = CFG_RELOAD,
	  .off = CFG_OFF(identity), .sub = cfg_identity_keys,
	  .sub_size = sizeof(struct config_identity),
	  .def_doc = "no identity providers",
	  .help = "Who callers are: identity providers and their "
	  "settings." },
	{ .name = "ratelimit", .type = CFG_PTR_OBJECT, .flags = CFG_RELOAD,
	  .off = CFG_OFF(ratelimit), .sub = cfg_ratelimit_keys,
	  .sub_size = sizeof(struct config_ratelimit),
	  .def_doc = "no limits",
	  .help = "Rate limits shared by every instance through the redis "
	  "section's Redis (README \"Rate limits\")." },
	{ .name = NULL }
};

/*
 * Split a listen address into host and port.  Accepts host:port,
 * [v6addr]:port and :port (every address); the brackets are dropped.
 */
int
cfg_split_listen(const char *s, char *host, size_t hostlen, int *port)
{
	const char	*colon, *end;
	size_t		 n, i;
	long		 v;
	char		*ep;

	if (*s == '[') {
		if ((end = strchr(s, ']')) == NULL || end[1] != ':')
			return -1;
		n = end - s - 1;
		if (n == 0)
			return -1;
		for (i = 1; i <= n; i++)
			if (!isxdigit((unsigned char)s[i]) && s[i] != ':' &&
			    s[i] != '.' && s[i] != '%')
				return -1;
		s++;
		colon = end + 1;
	} else {
		if ((colon = strrchr(s, ':')) == NULL)
			return -1;
		n = colon - s;
		for (i = 0; i < n; i++)
			if (!isalnum((unsigned char)s[i]) && s[i] != '.' &&
			    s[i] != '-' && s[i] != '_')
				return -1;
	}
	if (n >= hostlen)
		return -1;
	if (!isdigit((unsigned char)colon[1]))
		return -1;
	errno = 0;
	v = strtol(colon + 1, &ep, 10);
	if (errno != 0 || *ep != '\0' || v < 1 || v > 65535)
		return -1;
	memcpy(host, s, n);
	host[n] = '\0';
	*port = (int)v;
	return 0;
}

/* A listen address: host:port, [ipv6-address]:port or :port. */
const char *
cfg_check_listen(const char *s)
{
	char	 host[256];
	int	 port;

	if (cfg_split_listen(s, host, sizeof(host), &port) == -1)
		return "must be host:port, [ipv6-address]:port or :port";
	return NULL;
}

/* An http or https URL with no credentials, path, query or fragment. */
static const char *
cfg_check_base_url(const char *s, struct url *u)
{
	const char	*auth;
	size_t		 n;

	/* url_parse() refuses userinfo too; say why it is refused here. */
	if ((auth = strstr(s, "://")) != NULL) {
		auth += 3;
		n = strcspn(auth, "/?#");
		if (memchr(auth, '@', n) != NULL)
			return "must not contain credentials; "
			    "use credentials_file";
	}
	if (url_parse(s, u) == -1 ||
	    (strcmp(u->scheme, "http") != 0 && strcmp(u->scheme, "https") != 0))
		return "must be an http or https URL";
	if ((u->path[0] != '\0' && strcmp(u->path, "/") != 0) ||
	    strpbrk(s, "?#") != NULL)
		return "must not have a path, query or fragment";
	return NULL;
}

/* An upstream's url: a base URL, as cfg_check_base_url() says. */
const char *
cfg_check_upstream_url(const char *s)
{
	struct url	 u;

	return cfg_check_base_url(s, &u);
}

/* external_url: a base URL, as cfg_check_base_url() says. */
const char *
cfg_check_external_url(const char *s)
{
	struct url	 u;

	return cfg_check_base_url(s, &u);
}

/* Printable ASCII; it is quoted in WWW-Authenticate and in logs. */
static int
cfg_printable(const char *s, size_t max, int spaces)
{
	size_t	 n;

	for (n = 0; s[n] != '\0'; n++) {
		if (s[n] <= ' ' && !(spaces && s[n] == ' '))
			return 0;
		if (s[n] > '~' || s[n] == '"' || s[n] == '\\')
			return 0;
	}
	return n > 0 && n <= max;
}

/* The token service name: printable, spaces allowed. */
const char *
cfg_check_service(const char *s)
{
	if (!cfg_printable(s, 255, 1))
		return "must be 1 to 255 printable ASCII characters, "
		    "without quotes or backslashes";
	return NULL;
}

/* An instance id: printable, no spaces. */
const char *
cfg_check_instance_id(const char *s)
{
	if (!cfg_printable(s, 255, 0))
		return "must be 1 to 255 printable ASCII characters, "
		    "without spaces, quotes or backslashes";
	return NULL;
}

/* The cache directory: an absolute path. */
const char *
cfg_check_cache_dir(const char *s)
{
	if (s[0] != '/' || strlen(s) > 3072)
		return "must be an absolute path of at most 3072 bytes";
	return NULL;
}

/* A Redis address: numeric ip:port or [ipv6]:port. */
const char *
cfg_check_redis(const char *s)
{
	char		 host[256];
	unsigned char	 a[16];
	int		 port;

	if (cfg_split_listen(s, host, sizeof(host), &port) == -1 ||
	    (inet_pton(AF_INET, host, a) != 1 &&
	    inet_pton(AF_INET6, host, a) != 1))
		return "must be a numeric ip:port or [ipv6]:port";
	return NULL;
}

/* An ACL user name: printable, no spaces (ACL SETUSER splits on them). */
const char *
cfg_check_redis_user(const char *s)
{
	if (!cfg_printable(s, 128, 0))
		return "must be 1 to 128 printable ASCII characters, "
		    "without spaces, quotes or backslashes";
	return NULL;
}

/* A Redis key, stream or channel name: printable, no spaces. */
const char *
cfg_check_stream_key(const char *s)
{
	if (!cfg_printable(s, 200, 0))
		return "must be 1 to 200 printable ASCII characters, "
		    "without spaces, quotes or backslashes";
	return NULL;
}

/* A numeric IPv4 or IPv6 address. */
const char *
cfg_check_ip(const char *s)
{
	unsigned char	 a[16];

	if (inet_pton(AF_INET, s, a) != 1 && inet_pton(AF_INET6, s, a) != 1)
		return "must be a numeric IPv4 or IPv6 address";
	return NULL;
}

/* An address list entry of metrics.allow. */
const char *
cfg_check_net(const char *s)
{
	struct metrics_net	n;

	if (metrics_net_parse(s, &n) != NULL)
		return "must be a numeric address or network (ADDRESS/PREFIX, "
		    "no bits set after the prefix)";
	return NULL;
}

/* A file name (a spool or log file): not a directory. */
const char *
cfg_check_spool_file(const char *s)
{
	if (*s == '\0' || strlen(s) > 3072 || s[strlen(s) - 1] == '/')
		return "must be a file name of at most 3072 bytes";
	return NULL;
}

/* user, group: a POSIX portable name (or a number), as useradd takes. */
const char *
cfg_check_account(const char *s)
{
	size_t	i, n = strlen(s);

	if (n == 0 || n > 32 || s[0] == '-')
		return "must be a user or group name of 1 to 32 characters";
	for (i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && strchr("._-", s[i]) ==
		    NULL && !(i == n - 1 && s[i] == '$'))
			return "must be a user or group name: letters, digits, "
			    "'.', '_', '-'";
	return NULL;
}

/* The SSO redirect_uri: a base URL plus exactly /oauth2/callback. */
const char *
cfg_check_redirect_url(const char *s)
{
	static const char	 cb[] = "/oauth2/callback";
	struct url		 u;
	char			 base[2048];
	size_t			 n = strlen(s);

	if (n <= sizeof(cb) - 1 || n >= sizeof(base) ||
	    strcmp(s + n - (sizeof(cb) - 1), cb) != 0)
		return "must be an http(s) URL ending in /oauth2/callback";
	memcpy(base, s, n - (sizeof(cb) - 1));
	base[n - (sizeof(cb) - 1)] = '\0';
	if (strchr(base + 8, '/') != NULL)
		return "must be the gateway's origin + /oauth2/callback";
	return cfg_check_base_url(base, &u);
}

/* An OAuth scope token (RFC 6749 3.3): printable, no space or quote. */
const char *
cfg_check_scope_token(const char *s)
{
	if (!cfg_printable(s, 128, 0))
		return "must be 1 to 128 printable ASCII characters, no "
		    "spaces, quotes or backslashes";
	return NULL;
}

/* A cookie name: an RFC 6265 token, kept to a safe subset. */
const char *
cfg_check_cookie_name(const char *s)
{
	size_t	 n;

	for (n = 0; s[n] != '\0'; n++)
		if (!isalnum((unsigned char)s[n]) && s[n] != '_' &&
		    s[n] != '-')
			break;
	if (n == 0 || s[n] != '\0' || n > 64)
		return "must be 1 to 64 letters, digits, '_' or '-'";
	return NULL;
}

/* A name of ours (upstream, issuer): lowercase, digits, '-'. */
const char *
cfg_check_name(const char *s)
{
	size_t	 n;

	for (n = 0; s[n] != '\0'; n++) {
		if (islower((unsigned char)s[n]) ||
		    isdigit((unsigned char)s[n]))
			continue;
		if (s[n] == '-' && n > 0)
			continue;
		break;
	}
	if (n == 0 || s[n] != '\0' || n > CFG_NAME_MAX)
		return "must be lowercase letters, digits and '-', "
		    "not starting with '-', at most 32 characters";
	return NULL;
}

/*
 * One repository name component, as the distribution spec defines it:
 * [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*
 */
const char *
cfg_check_prefix(const char *s)
{
	const char	*p = s;
	size_t		 sep;

	for (;;) {
		if (!islower((unsigned char)*p) && !isdigit((unsigned char)*p))
			goto bad;
		while (islower((unsigned char)*p) || isdigit((unsigned char)*p))
			p++;
		if (*p == '\0')
			break;
		if (*p == '.')
			p++;
		else if (*p == '_')
			p += p[1] == '_' ? 2 : 1;
		else if (*p == '-') {
			sep = strspn(p, "-");
			p += sep;
		} else
			goto bad;
	}
	if (p - s > 255)
		goto bad;
	return NULL;
bad:
	return "must be one repository name component: lowercase letters "
	    "and digits, separated by '.', '_', '__' or '-'";
}

const char *
cfg_check_host(const char *s)
{
	char	 host[256];
	int	 port;
	size_t	 n;

	/* A bare IPv6 literal, as url_hostport() writes it. */
	n = strspn(s + 1, "0123456789abcdefABCDEF:.");
	if (s[0] == '[' && n > 0 && s[n + 1] == ']' && s[n + 2] == '\0')
		return NULL;
	if (strchr(s, ':') != NULL &&
	    cfg_split_listen(s, host, sizeof(host), &port) == 0 &&
	    host[0] != '\0')
		return NULL;
	for (n = 0; s[n] != '\0'; n++)
		if (!isalnum((unsigned char)s[n]) && s[n] != '.' &&
		    s[n] != '-' && s[n] != '_')
			break;
	if (n == 0 || s[n] != '\0' || n > 255)
		return "must be a registry host name, optionally with :port";
	return NULL;
}

/*
 * An issuer identifier (OIDC Discovery 3, RFC 8414 2): https, no query,
 * fragment or credentials; a path is allowed.  Plain http only for a
 * numeric loopback host, so that tests can run a provider without TLS:
 * nothing on the network path can swap the keys then.
 */
const char *
cfg_check_issuer(const char *s)
{
	struct url	 u;
	unsigned char	 a[16];

	if (strpbrk(s, "?#@") != NULL || url_parse(s, &u) == -1)
		return "must be an https URL without credentials, query or "
		    "fragment";
	if (u.tls)
		return NULL;
	if (inet_pton(AF_INET, u.host, a) == 1 &&
	    netaddr_class_v4(a) == NETADDR_LOOPBACK)
		return NULL;
	if (inet_pton(AF_INET6, u.host, a) == 1 &&
	    netaddr_class_v6(a) == NETADDR_LOOPBACK)
		return NULL;
	return "must be https (http only for a numeric loopback host)";
}

/* A claim name: it is quoted in logs and JSON, so printable ASCII. */
const char *
cfg_check_claim(const char *s)
{
	if (!cfg_printable(s, 64, 0))
		return "must be 1 to 64 printable ASCII characters, without "
		    "spaces, quotes or backslashes";
	return NULL;
}

/* An audience, a prefix or a required claim's value. */
const char *
cfg_check_audience(const char *s)
{
	if (!cfg_printable(s, 255, 0))
		return "must be 1 to 255 printable ASCII characters, without "
		    "spaces, quotes or backslashes";
	return NULL;
}

/* The asymmetric algorithms the JWT verifier implements (SPEC). */
const char *
cfg_check_algorithm(const char *s)
{
	static const char *const algs[] = { "RS256", "RS384", "RS512",
	    "PS256", "ES256", "ES384" };
	size_t	 i;

	for (i = 0; i < sizeof(algs) / sizeof(algs[0]); i++)
		if (strcmp(s, algs[i]) == 0)
			return NULL;
	return "must be one of RS256, RS384, RS512, PS256, ES256, ES384";
}

/* A UTC time as YYYY-MM-DDTHH:MM:SSZ (valid_until). */
const char *
cfg_check_rfc3339(const char *s)
{
	if (cfg_parse_rfc3339(s, NULL) == -1)
		return "must be a UTC time YYYY-MM-DDTHH:MM:SSZ";
	return NULL;
}

/* Parse YYYY-MM-DDTHH:MM:SSZ into seconds since the epoch; 0 or -1. */
int
cfg_parse_rfc3339(const char *s, int64_t *out)
{
	struct tm	tm;
	const char	*e;
	time_t		t;

	memset(&tm, 0, sizeof(tm));
	if (strlen(s) != 20 || (e = strptime(s, "%Y-%m-%dT%H:%M:%SZ",
	    &tm)) == NULL || *e != '\0' || (t = timegm(&tm)) == -1)
		return -1;
	if (out != NULL)
		*out = (int64_t)t;
	return 0;
}
