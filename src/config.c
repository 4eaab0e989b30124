/*
 * config.c: load the JSON configuration into an immutable snapshot.
 *
 * One schema table per object type lists every key with its type, bounds,
 * default, whether a reload may change it and its help text.  The same
 * tables fill in defaults, parse and type-check the document, free the
 * snapshot, compare two snapshots on reload and print the reference
 * documentation, so a key cannot be documented but not parsed or the other
 * way round.  Checks that span several keys (duplicate prefixes, one default
 * upstream, TLS client verification) run after the tables.
 *
 * Guarantees: a returned snapshot passed every check; every problem found is
 * reported, one per line, named by its JSON pointer; values from the file
 * are never echoed in errors, and the credentials read from
 * credentials_file are never printed.  Referenced files are checked for
 * readability at load time, and the file itself is refused above 1 MiB
 * before it is read.  Allocation failure aborts: this runs at start-up
 * and on reload, where there is nothing better to do.
 */
#include <sys/stat.h>
#include <arpa/inet.h>

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <jansson.h>

#include "config.h"

#define CFG_PTR_MAX	512	/* longest JSON pointer we build */
#define CFG_CRED_MAX	4096	/* largest credentials file */
#define CFG_NAME_MAX	32	/* upstream names */

enum cfg_type {
	CFG_STRING,	/* char *, checked by key->check */
	CFG_PATH,	/* char *, a readable file; relative to the config */
	CFG_ENUM,	/* one of key->choices, stored as int index */
	CFG_BOOL,	/* int 0 or 1 */
	CFG_INT,	/* JSON integer, stored as int */
	CFG_SIZE,	/* JSON integer, stored as size_t */
	CFG_SECONDS,	/* JSON number of seconds, stored as int ms */
	CFG_FRACTION,	/* JSON number, stored as double; bounds in 1/1000 */
	CFG_STRLIST,	/* char **, NULL-terminated; count at count_off */
	CFG_OBJECT,	/* nested object, its fields in the same struct */
	CFG_PTR_OBJECT,	/* nested object, allocated when present */
	CFG_ARRAY	/* array of objects; count at count_off */
};

#define CFG_RELOAD	0x1	/* a reload may change it */
#define CFG_REQUIRED	0x2	/* no default: must be present */

struct cfg_ctx;

struct cfg_key {
	const char		 *name;
	enum cfg_type		  type;
	int			  flags;
	size_t			  off;
	size_t			  count_off;
	long long		  min;	/* value, ms or entries */
	long long		  max;
	long long		  def;	/* ms for CFG_SECONDS */
	const char		 *def_str;
	const char		 *def_doc;	/* documented default */
	const char *const	 *choices;	/* CFG_ENUM */
	const struct cfg_key	 *sub;	/* nested keys */
	size_t			  sub_size;	/* allocated objects */
	const char		*(*check)(const char *);
	void			(*loaded)(struct cfg_ctx *, void *,
				    const char *, const char *);
	const char		 *help;
};

struct cfg_ctx {
	char		*errs;		/* "pointer: message\n" lines */
	size_t		 errlen;
	size_t		 errsize;
	int		 nerrs;
	const char	*base_dir;	/* NULL: relative to the cwd */
};

#define FIELD(base, off, type)	((type *)(void *)((char *)(base) + (off)))
#define CONST_FIELD(base, off, type)					\
	((type const *)(const void *)((const char *)(base) + (off)))

static const char *cfg_check_listen(const char *);
static const char *cfg_check_external_url(const char *);
static const char *cfg_check_service(const char *);
static const char *cfg_check_instance_id(const char *);
static const char *cfg_check_name(const char *);
static const char *cfg_check_upstream_url(const char *);
static const char *cfg_check_prefix(const char *);
static const char *cfg_check_host(const char *);
static const char *cfg_check_cache_dir(const char *);
static void cfg_load_credentials(struct cfg_ctx *, void *, const char *,
    const char *);
static const char *cfg_check_redis(const char *);
static const char *cfg_check_stream_key(const char *);
static const char *cfg_check_ip(const char *);
static const char *cfg_check_spool_file(const char *);

static const char *const cfg_verify_names[] = {
	"none", "optional", "require", NULL
};

static const char *const cfg_level_names[] = {
	"error", "warn", "info", "debug", NULL
};

static const char *const cfg_sendfile_names[] = {
	"auto", "on", "off", NULL
};

#define TLS_OFF(f)	offsetof(struct config_tls, f)
static const struct cfg_key cfg_tls_keys[] = {
	{ .name = "cert_file", .type = CFG_PATH, .flags = CFG_REQUIRED,
	  .off = TLS_OFF(cert_file),
	  .help = "PEM certificate chain the listener presents." },
	{ .name = "key_file", .type = CFG_PATH, .flags = CFG_REQUIRED,
	  .off = TLS_OFF(key_file),
	  .help = "PEM private key of cert_file." },
	{ .name = "client_ca_file", .type = CFG_PATH,
	  .off = TLS_OFF(client_ca_file), .def_doc = "none",
	  .help = "PEM CA bundle that client certificates must chain to; "
	  "required unless verify_client is none." },
	{ .name = "verify_client", .type = CFG_ENUM,
	  .off = TLS_OFF(verify_client), .def = CONFIG_VERIFY_NONE,
	  .choices = cfg_verify_names,
	  .help = "Whether clients must present a certificate." },
	{ .name = NULL }
};

#define CFG_OFF(f)	offsetof(struct config, f)
static const struct cfg_key cfg_listen_keys[] = {
	{ .name = "address", .type = CFG_STRING,
	  .off = CFG_OFF(listen_address), .def_str = "127.0.0.1:5000",
	  .check = cfg_check_listen,
	  .help = "Address to listen on: host:port, [v6addr]:port, or :port "
	  "for every address." },
	{ .name = "tls", .type = CFG_PTR_OBJECT, .off = CFG_OFF(tls),
	  .sub = cfg_tls_keys, .sub_size = sizeof(struct config_tls),
	  .def_doc = "plain HTTP",
	  .help = "Serve HTTPS with this certificate; absent means plain "
	  "HTTP." },
	{ .name = NULL }
};

static const struct cfg_key cfg_limits_keys[] = {
	{ .name = "header_bytes", .type = CFG_SIZE, .flags = CFG_RELOAD,
	  .off = CFG_OFF(header_bytes), .min = 1024, .max = 1048576,
	  .def = 65536,
	  .help = "Largest request head (request line and headers); larger "
	  "gets 431." },
	{ .name = "header_count", .type = CFG_SIZE, .flags = CFG_RELOAD,
	  .off = CFG_OFF(header_count), .min = 8, .max = 1000, .def = 100,
	  .help = "Most header fields in one request; more gets 431." },
	{ .name = "uri_bytes", .type = CFG_SIZE, .flags = CFG_RELOAD,
	  .off = CFG_OFF(uri_bytes), .min = 256, .max = 65536, .def = 8192,
	  .help = "Longest request target; longer gets 414." },
	{ .name = "max_connections", .type = CFG_SIZE, .flags = CFG_RELOAD,
	  .off = CFG_OFF(max_connections), .min = 1, .max = 1000000,
	  .def = 4096,
	  .help = "Client connections served at once; at the limit the "
	  "gateway stops accepting and further ones wait in the listen "
	  "backlog." },
	{ .name = "max_connections_per_ip", .type = CFG_SIZE,
	  .flags = CFG_RELOAD, .off = CFG_OFF(max_connections_per_ip),
	  .min = 1, .max = 1000000, .def = 256,
	  .help = "Client connections from one address at once; one more "
	  "gets 503 and is closed." },
	{ .name = "linger_bytes", .type = CFG_SIZE, .flags = CFG_RELOAD,
	  .off = CFG_OFF(linger_bytes), .min = 0, .max = 1073741824,
	  .def = 16777216,
	  .help = "Unread request bytes read and discarded after an error "
	  "response before the connection is closed." },
	{ .name = "manifest_bytes", .type = CFG_SIZE, .flags = CFG_RELOAD,
	  .off = CFG_OFF(manifest_bytes), .min = 1024, .max = 67108864,
	  .def = 4194304,
	  .help = "Largest manifest accepted from a client or an upstream." },
	{ .name = "redirects", .type = CFG_INT, .flags = CFG_RELOAD,
	  .off = CFG_OFF(redirects), .min = 0, .max = 10, .def = 5,
	  .help = "Upstream redirects followed for one request (blob, cache "
	  "fill, tag revalidation); one more is answered 502." },
	{ .name = NULL }
};

static const struct cfg_key cfg_buffers_keys[] = {
	{ .name = "high_watermark", .type = CFG_SIZE, .flags = CFG_RELOAD,
	  .off = CFG_OFF(high_watermark), .min = 16384, .max = 67108864,
	  .def = 262144,
	  .help = "Bytes queued toward a peer before reading from the other "
	  "side pauses." },
	{ .name = NULL }
};

static const struct cfg_key cfg_timeouts_keys[] = {
	{ .name = "header", .type = CFG_SECONDS, .flags = CFG_RELOAD,
	  .off = CFG_OFF(header_timeout_ms), .min = 100, .max = 3600000,
	  .def = 30000,
	  .help = "Time a client has to send a complete request head." },
	{ .name = "idle", .type = CFG_SECONDS, .flags = CFG_RELOAD,
	  .off = CFG_OFF(idle_timeout_ms), .min = 100, .max = 86400000,
	  .def = 60000,
	  .help = "Time a keep-alive connection may sit between requests." },
	{ .name = "body", .type = CFG_SECONDS, .flags = CFG_RELOAD,
	  .off = CFG_OFF(body_timeout_ms), .min = 100, .max = 86400000,
	  .def = 60000,
	  .help = "Time a request or response body may make no progress." },
	{ .name = "upstream_connect", .type = CFG_SECONDS, .flags = CFG_RELOAD,
	  .off = CFG_OFF(upstream_connect_timeout_ms), .min = 100,
	  .max = 600000, .def = 10000,
	  .help = "Time to connect to an upstream, TLS handshake included." },
	{ .name = "upstream_response", .type = CFG_SECONDS,
	  .flags = CFG_RELOAD, .off = CFG_OFF(upstream_response_timeout_ms),
	  .min = 100, .max = 3600000, .def = 60000,
	  .help = "Time an upstream may take to answer, or to make progress "
	  "on a body." },
	{ .name = "drain", .type = CFG_SECONDS, .flags = CFG_RELOAD,
	  .off = CFG_OFF(drain_timeout_ms), .min = 0, .max = 3600000,
	  .def = 30000,
	  .help = "On shutdown, time requests in flight get to finish." },
	{ .name = "linger", .type = CFG_SECONDS, .flags = CFG_RELOAD,
	  .off = CFG_OFF(linger_timeout_ms), .min = 0, .max = 600000,
	  .def = 5000,
	  .help = "After an error response, time spent reading and "
	  "discarding the client's unread bytes before closing." },
	{ .name = NULL }
};

static const struct cfg_key cfg_log_keys[] = {
	{ .name = "level", .type = CFG_ENUM, .flags = CFG_RELOAD,
	  .off = CFG_OFF(log_level), .def = CONFIG_LOG_INFO,
	  .choices = cfg_level_names,
	  .help = "Least severe message written to stderr." },
	{ .name = NULL }
};

#define CACHE_OFF(f)	offsetof(struct config_cache, f)
static const struct cfg_key cfg_cache_keys[] = {
	{ .name = "dir", .type = CFG_STRING, .flags = CFG_REQUIRED,
	  .off = CACHE_OFF(dir), .check = cfg_check_cache_dir,
	  .help = "Absolute path of the cache directory (blobs/, manifests/, "
	  "tags/, tmp/); created at start. One gateway per directory." },
	{ .name = "max_bytes", .type = CFG_SIZE, .off = CACHE_OFF(max_bytes),
	  .min = 1048576, .max = 1LL << 60, .def = 10737418240LL,
	  .help = "Cap on the bytes of cached blobs and manifests; the least "
	  "recently used are evicted in the background above it." },
	{ .name = "tag_ttl", .type = CFG_SECONDS, .flags = CFG_RELOAD,
	  .off = CACHE_OFF(tag_ttl_ms), .min = 0, .max = 2073600000LL,
	  .def = 300000,
	  .help = "How long a tag's digest is used before it is revalidated "
	  "with a HEAD to the upstream." },
	{ .name = "negative_ttl", .type = CFG_SECONDS, .flags = CFG_RELOAD,
	  .off = CACHE_OFF(negative_ttl_ms), .min = 0, .max = 86400000,
	  .def = 30000,
	  .help = "How long an unknown tag (upstream 404) is answered "
	  "404 without asking the upstream again." },
	{ .name = "sendfile", .type = CFG_ENUM, .flags = CFG_RELOAD,
	  .off = CACHE_OFF(sendfile), .def = CONFIG_SENDFILE_AUTO,
	  .choices = cfg_sendfile_names,
	  .help = "How cached files reach clients: sendfile(2) (on; TLS "
	  "maps the file instead), read into the output buffer, a copy (off), "
	  "or auto, which is on. Measure: on some machines the copy is "
	  "faster." },
	{ .name = "send_window", .type = CFG_SIZE, .flags = CFG_RELOAD,
	  .off = CACHE_OFF(send_window), .min = 65536, .max = 67108864,
	  .def = 2097152,
	  .help = "Bytes of a cached file queued toward one client at a "
	  "time; bounds the memory a slow reader can pin." },
	{ .name = "max_tag_records", .type = CFG_SIZE,
	  .off = CACHE_OFF(max_tag_records), .min = 1, .max = 10000000,
	  .def = 100000,
	  .help = "Tag records kept on disk (tags/), counted from the files "
	  "found at start; above it the least recently used record is "
	  "removed, with its directory when it was the tag's last." },
	{ .name = "tag_variants", .type = CFG_INT,
	  .off = CACHE_OFF(tag_variants), .min = 1, .max = 64, .def = 4,
	  .help = "Accept sets remembered per tag, records and unknown-tag "
	  "entries together; a new one drops the tag's least recently used." },
	{ .name = "negative_entries", .type = CFG_SIZE,
	  .off = CACHE_OFF(negative_entries), .min = 0, .max = 1000000,
	  .def = 10000,
	  .help = "Unknown tags (upstream 404) remembered, in memory only, "
	  "each for negative_ttl; when full the oldest is replaced. 0 "
	  "remembers none." },
	{ .name = "max_fills", .type = CFG_SIZE,
	  .off = CACHE_OFF(max_fills), .min = 1, .max = 100000, .def = 64,
	  .help = "Fills (upstream transfers into the cache) running at "
	  "once; a miss beyond it is passed through without caching." },
	{ .name = "max_fills_per_client", .type = CFG_SIZE,
	  .off = CACHE_OFF(max_fills_per_client), .min = 1, .max = 100000,
	  .def = 8,
	  .help = "Fills running at once that were started by one client "
	  "address; beyond it that client's misses are passed through." },
	{ .name = "digest_threads", .type = CFG_SIZE,
	  .off = CACHE_OFF(digest_threads), .min = 1, .max = 64, .def = 2,
	  .help = "Threads that compute the digests of every fill, shared; "
	  "the gateway's thread count does not grow with fills." },
	{ .name = "fill_max_fraction", .type = CFG_FRACTION,
	  .off = CACHE_OFF(fill_max_fraction), .min = 1, .max = 1000,
	  .def = 250,
	  .help = "A blob or manifest larger than this fraction of max_bytes "
	  "is passed through, not cached." },
	{ .name = "fill_finish_fraction", .type = CFG_FRACTION,
	  .off = CACHE_OFF(fill_finish_fraction), .min = 0, .max = 1000,
	  .def = 900,
	  .help = "A fill left with no reader is cancelled unless at least "
	  "this fraction of its Content-Length is on disk; 0 lets "
	  "every fill complete." },
	{ .name = NULL }
};

static const char *const cfg_fsync_names[] = {
	"always", "interval", "never", NULL
};

static const char *const cfg_audit_failure_names[] = {
	"drop", "reject", NULL
};

#define AUDIT_OFF(f)	offsetof(struct config_audit, f)
static const struct cfg_key cfg_audit_keys[] = {
	{ .name = "redis", .type = CFG_STRING, .off = AUDIT_OFF(redis),
	  .def_str = "127.0.0.1:6379", .check = cfg_check_redis,
	  .help = "Redis server (7.0 or later) as a numeric ip:port or "
	  "[ipv6]:port, so that connecting never waits on DNS." },
	{ .name = "stream", .type = CFG_STRING, .off = AUDIT_OFF(stream),
	  .def_str = "portcullis:audit", .check = cfg_check_stream_key,
	  .help = "Stream key. Indexes and the writers' dedup hash use keys "
	  "that start with it and a colon." },
	{ .name = "max_len", .type = CFG_SIZE, .off = AUDIT_OFF(max_len),
	  .min = 0, .max = 1LL << 40, .def = 10000000,
	  .help = "Trim the stream to about this many records (XADD MAXLEN "
	  "~); 0 means no length cap." },
	{ .name = "max_age", .type = CFG_SIZE, .off = AUDIT_OFF(max_age),
	  .min = 0, .max = 3650LL * 86400, .def = 90LL * 86400,
	  .help = "Trim records older than this many seconds (XTRIM MINID "
	  "~); 0 means no age cap." },
	{ .name = "spool_file", .type = CFG_STRING,
	  .off = AUDIT_OFF(spool_file), .def_str = "audit.spool",
	  .check = cfg_check_spool_file,
	  .help = "Append-only file that holds records while Redis is down, "
	  "slow or refusing writes; relative to the config file's directory. "
	  "Created if missing; replayed in order at start." },
	{ .name = "spool_max_bytes", .type = CFG_SIZE,
	  .off = AUDIT_OFF(spool_max_bytes), .min = 16384, .max = 1LL << 40,
	  .def = 1073741824,
	  .help = "Largest spool file; when full, on_failure applies." },
	{ .name = "fsync", .type = CFG_ENUM, .off = AUDIT_OFF(fsync),
	  .def = CONFIG_FSYNC_INTERVAL, .choices = cfg_fsync_names,
	  .help = "When spooled records are fsync'ed: after every batch "
	  "written (always), once a second (interval) or never." },
	{ .name = "on_failure", .type = CFG_ENUM,
	  .off = AUDIT_OFF(on_failure), .def = CONFIG_AUDIT_DROP,
	  .choices = cfg_audit_failure_names,
	  .help = "With the spool full: drop records (counted, logged at "
	  "most once a second) or reject requests with 503 before they are "
	  "served." },
	{ .name = "admin_addresses", .type = CFG_STRLIST,
	  .off = AUDIT_OFF(admin_addresses),
	  .count_off = AUDIT_OFF(nadmin_addresses), .min = 0, .max = 256,
	  .check = cfg_check_ip, .def_doc = "none",
	  .help = "Client IP addresses that may use GET /admin/audit." },
	{ .name = "queue_max", .type = CFG_SIZE, .off = AUDIT_OFF(queue_max),
	  .min = 16, .max = 1000000, .def = 10000,
	  .help = "Records held in memory waiting for Redis; beyond it "
	  "Redis counts as slow and records go to the spool." },
	{ .name = "max_inflight", .type = CFG_SIZE,
	  .off = AUDIT_OFF(max_inflight), .min = 1, .max = 100000,
	  .def = 256,
	  .help = "Records sent to Redis (pipelined) and not yet "
	  "acknowledged." },
	{ .name = "timeout", .type = CFG_SECONDS, .off = AUDIT_OFF(timeout_ms),
	  .min = 100, .max = 600000, .def = 5000,
	  .help = "A reply slower than this makes Redis count as down: "
	  "records go to the spool and the writer reconnects." },
	{ .name = "max_index_keys", .type = CFG_SIZE,
	  .off = AUDIT_OFF(max_index_keys), .min = 1, .max = 100000000,
	  .def = 100000,
	  .help = "Index streams (per subject, per repository) kept in "
	  "Redis; beyond it the least recently written are deleted. Only "
	  "requests routed to an upstream and answered by it or the cache "
	  "are indexed by repository." },
	{ .name = NULL }
};

#define UP_OFF(f)	offsetof(struct config_upstream, f)
static const struct cfg_key cfg_upstream_keys[] = {
	{ .name = "name", .type = CFG_STRING,
	  .flags = CFG_RELOAD | CFG_REQUIRED, .off = UP_OFF(name),
	  .check = cfg_check_name,
	  .help = "Unique name used in logs, metrics and audit records: "
	  "lowercase letters, digits and '-', at most 32." },
	{ .name = "url", .type = CFG_STRING,
	  .flags = CFG_RELOAD | CFG_REQUIRED, .off = UP_OFF(url),
	  .check = cfg_check_upstream_url,
	  .help = "Base URL of the registry, http or https, without a path "
	  "or credentials." },
	{ .name = "prefix", .type = CFG_STRING, .flags = CFG_RELOAD,
	  .off = UP_OFF(prefix), .check = cfg_check_prefix,
	  .def_doc = "none",
	  .help = "First repository name component that routes here: "
	  "/v2/PREFIX/NAME/... goes to NAME on this upstream. Unique." },
	{ .name = "hosts", .type = CFG_STRLIST, .flags = CFG_RELOAD,
	  .off = UP_OFF(hosts), .count_off = UP_OFF(nhosts),
	  .min = 0, .max = 64, .check = cfg_check_host,
	  .def_doc = "host[:port] of url; with docker_hub also docker.io, "
	  "registry-1.docker.io, index.docker.io",
	  .help = "Registry host names (containerd's ns= parameter) that "
	  "route here; replaces the default. [] routes none." },
	{ .name = "docker_hub", .type = CFG_BOOL, .flags = CFG_RELOAD,
	  .off = UP_OFF(docker_hub), .def = 0,
	  .help = "Upstream is Docker Hub: single-component names mean "
	  "library/NAME." },
	{ .name = "default", .type = CFG_BOOL, .flags = CFG_RELOAD,
	  .off = UP_OFF(is_default), .def = 0,
	  .help = "Serve names that match no prefix (Docker registry-mirrors). "
	  "At most one upstream." },
	{ .name = "ca_file", .type = CFG_PATH, .flags = CFG_RELOAD,
	  .off = UP_OFF(ca_file), .def_doc = "system CAs",
	  .help = "PEM CA bundle that verifies the upstream's certificate." },
	{ .name = "credentials_file", .type = CFG_PATH, .flags = CFG_RELOAD,
	  .off = UP_OFF(credentials_file), .loaded = cfg_load_credentials,
	  .def_doc = "anonymous",
	  .help = "File holding one line username:password used to log in "
	  "to the upstream. Secrets are never written inline." },
	{ .name = "pool_max_idle", .type = CFG_INT, .flags = CFG_RELOAD,
	  .off = UP_OFF(pool_max_idle), .min = 0, .max = 1024, .def = 16,
	  .help = "Idle keep-alive connections kept open to the upstream." },
	{ .name = "cache", .type = CFG_BOOL, .flags = CFG_RELOAD,
	  .off = UP_OFF(cache), .def = 1,
	  .help = "Pull through the cache (when a top-level cache is "
	  "configured). Pushes are never cached." },
	{ .name = "tag_ttl", .type = CFG_SECONDS, .flags = CFG_RELOAD,
	  .off = UP_OFF(tag_ttl_ms), .min = 0, .max = 2073600000LL, .def = -1,
	  .def_doc = "cache.tag_ttl",
	  .help = "This upstream's tag time-to-live, replacing the cache's." },
	{ .name = "redirect_allow", .type = CFG_STRLIST, .flags = CFG_RELOAD,
	  .off = UP_OFF(redirect_allow),
	  .count_off = UP_OFF(nredirect_allow), .min = 0, .max = 64,
	  .check = cfg_check_host, .def_doc = "none",
	  .help = "Redirect targets (host, or host:port) this upstream may "
	  "send the gateway to even when they resolve to a loopback, "
	  "link-local, private, CGNAT, unique local or unspecified "
	  "address." },
	{ .name = "auth_hosts", .type = CFG_STRLIST, .flags = CFG_RELOAD,
	  .off = UP_OFF(auth_hosts), .count_off = UP_OFF(nauth_hosts),
	  .min = 0, .max = 64, .check = cfg_check_host,
	  .def_doc = "none; with docker_hub auth.docker.io",
	  .help = "Token realm hosts (host, or host:port) besides the "
	  "upstream's own host that get its credentials (over https only) "
	  "and may resolve to a non-public address." },
	{ .name = NULL }
};

static const struct cfg_key cfg_root_keys[] = {
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
	{ .name = "upstreams", .type = CFG_ARRAY,
	  .flags = CFG_RELOAD | CFG_REQUIRED, .off = CFG_OFF(upstreams),
	  .count_off = CFG_OFF(nupstreams), .min = 1, .max = 256,
	  .sub = cfg_upstream_keys, .sub_size = sizeof(struct config_upstream),
	  .help = "Registries behind the gateway." },
	{ .name = NULL }
};

/* Keys whose name suggests an inline secret get a pointed message. */
static const char *const cfg_secret_words[] = {
	"password", "passwd", "secret", "token", "username", "auth", NULL
};

static void cfg_error(struct cfg_ctx *, const char *, const char *, ...)
    __attribute__((__format__(__printf__, 3, 4)));

static void
cfg_error(struct cfg_ctx *ctx, const char *ptr, const char *fmt, ...)
{
	char	 line[CFG_PTR_MAX + 512];
	va_list	 ap;
	int	 n, m;
	size_t	 need;
	char	*p;

	n = snprintf(line, sizeof(line), "%s: ", *ptr == '\0' ? "/" : ptr);
	if (n < 0 || (size_t)n >= sizeof(line))
		n = 0;
	va_start(ap, fmt);
	m = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
	va_end(ap);
	if (m < 0)
		m = 0;
	if ((size_t)(n + m) >= sizeof(line))
		m = sizeof(line) - n - 1;
	need = ctx->errlen + n + m + 2;
	if (need > ctx->errsize) {
		if ((p = realloc(ctx->errs, need * 2)) == NULL)
			abort();
		ctx->errs = p;
		ctx->errsize = need * 2;
	}
	memcpy(ctx->errs + ctx->errlen, line, n + m);
	ctx->errlen += n + m;
	ctx->errs[ctx->errlen++] = '\n';
	ctx->errs[ctx->errlen] = '\0';
	ctx->nerrs++;
}

static char *
xstrdup(const char *s)
{
	char	*p;

	if ((p = strdup(s)) == NULL)
		abort();
	return p;
}

static void *
xcalloc(size_t n, size_t size)
{
	void	*p;

	if ((p = calloc(n == 0 ? 1 : n, size)) == NULL)
		abort();
	return p;
}

/* Append one reference token to a JSON pointer, escaping per RFC 6901. */
static void
cfg_ptr(char *out, size_t len, const char *parent, const char *token)
{
	size_t	 n;

	n = strnlen(parent, len - 1);
	memmove(out, parent, n);
	if (n + 1 < len)
		out[n++] = '/';
	for (; *token != '\0' && n + 2 < len; token++) {
		if (*token == '~' || *token == '/') {
			out[n++] = '~';
			out[n++] = *token == '~' ? '0' : '1';
		} else
			out[n++] = *token;
	}
	out[n] = '\0';
}

/* Append an array index to a JSON pointer. */
static void
cfg_ptr_index(char *out, size_t len, const char *parent, size_t i)
{
	char	 tok[32];

	snprintf(tok, sizeof(tok), "%zu", i);
	cfg_ptr(out, len, parent, tok);
}

/*
 * Split a listen address into host and port.  Accepts host:port,
 * [v6addr]:port and :port (every address); the brackets are dropped.
 */
static int
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

static const char *
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

static const char *
cfg_check_upstream_url(const char *s)
{
	struct url	 u;

	return cfg_check_base_url(s, &u);
}

static const char *
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

static const char *
cfg_check_service(const char *s)
{
	if (!cfg_printable(s, 255, 1))
		return "must be 1 to 255 printable ASCII characters, "
		    "without quotes or backslashes";
	return NULL;
}

static const char *
cfg_check_instance_id(const char *s)
{
	if (!cfg_printable(s, 255, 0))
		return "must be 1 to 255 printable ASCII characters, "
		    "without spaces, quotes or backslashes";
	return NULL;
}

static const char *
cfg_check_cache_dir(const char *s)
{
	if (s[0] != '/' || strlen(s) > 3072)
		return "must be an absolute path of at most 3072 bytes";
	return NULL;
}

static const char *
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

static const char *
cfg_check_stream_key(const char *s)
{
	if (!cfg_printable(s, 200, 0))
		return "must be 1 to 200 printable ASCII characters, "
		    "without spaces, quotes or backslashes";
	return NULL;
}

static const char *
cfg_check_ip(const char *s)
{
	unsigned char	 a[16];

	if (inet_pton(AF_INET, s, a) != 1 && inet_pton(AF_INET6, s, a) != 1)
		return "must be a numeric IPv4 or IPv6 address";
	return NULL;
}

static const char *
cfg_check_spool_file(const char *s)
{
	if (*s == '\0' || strlen(s) > 3072 || s[strlen(s) - 1] == '/')
		return "must be a file name of at most 3072 bytes";
	return NULL;
}

static const char *
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
static const char *
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

static const char *
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

/* Resolve a file named in the configuration against its directory. */
static char *
cfg_resolve(const struct cfg_ctx *ctx, const char *file)
{
	char	*p;
	size_t	 len;

	if (file[0] == '/' || ctx->base_dir == NULL || *ctx->base_dir == '\0')
		return xstrdup(file);
	len = strlen(ctx->base_dir) + strlen(file) + 2;
	if ((p = malloc(len)) == NULL)
		abort();
	snprintf(p, len, "%s/%s", ctx->base_dir, file);
	return p;
}

/* Open a regular file for reading; -1 with errno set otherwise. */
static int
cfg_open_regular(const char *file)
{
	struct stat	 st;
	int		 fd, saved;

	if ((fd = open(file, O_RDONLY | O_CLOEXEC | O_NOCTTY)) == -1)
		return -1;
	if (fstat(fd, &st) == -1) {
		saved = errno;
		close(fd);
		errno = saved;
		return -1;
	}
	if (!S_ISREG(st.st_mode)) {
		saved = S_ISDIR(st.st_mode) ? EISDIR : EINVAL;
		close(fd);
		errno = saved;
		return -1;
	}
	return fd;
}

/*
 * Read the upstream's credentials: exactly one line "username:password",
 * with or without a final newline.  Neither the content nor its length
 * goes into an error message.
 */
static void
cfg_load_credentials(struct cfg_ctx *ctx, void *base, const char *file,
    const char *ptr)
{
	struct config_upstream	*up = base;
	char			 buf[CFG_CRED_MAX + 1], *colon;
	size_t			 len = 0;
	ssize_t			 n = 0;
	int			 fd;

	if ((fd = cfg_open_regular(file)) == -1) {
		cfg_error(ctx, ptr, "cannot read: %s", strerror(errno));
		return;
	}
	while (len < sizeof(buf) - 1) {
		n = read(fd, buf + len, sizeof(buf) - 1 - len);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += n;
	}
	if (n == -1) {
		cfg_error(ctx, ptr, "cannot read: %s", strerror(errno));
		goto out;
	}
	buf[len] = '\0';
	if (len > 0 && buf[len - 1] == '\n')
		buf[--len] = '\0';
	if (len > 0 && buf[len - 1] == '\r')
		buf[--len] = '\0';
	if (len == 0 || len >= sizeof(buf) - 2 || strlen(buf) != len ||
	    strpbrk(buf, "\r\n") != NULL ||
	    (colon = strchr(buf, ':')) == NULL || colon == buf ||
	    colon[1] == '\0') {
		cfg_error(ctx, ptr, "expected one line 'username:password'");
		goto out;
	}
	*colon = '\0';
	up->username = xstrdup(buf);
	up->password = xstrdup(colon + 1);
out:
	explicit_bzero(buf, sizeof(buf));
	close(fd);
}

/* Fill in the defaults of every key of an object held in base. */
static void
cfg_defaults(const struct cfg_key *keys, void *base)
{
	const struct cfg_key	*k;

	for (k = keys; k->name != NULL; k++) {
		switch (k->type) {
		case CFG_STRING:
		case CFG_PATH:
			*FIELD(base, k->off, char *) = k->def_str == NULL ?
			    NULL : xstrdup(k->def_str);
			break;
		case CFG_ENUM:
		case CFG_BOOL:
		case CFG_INT:
		case CFG_SECONDS:
			*FIELD(base, k->off, int) = (int)k->def;
			break;
		case CFG_SIZE:
			*FIELD(base, k->off, size_t) = (size_t)k->def;
			break;
		case CFG_FRACTION:
			*FIELD(base, k->off, double) = k->def / 1000.0;
			break;
		case CFG_STRLIST:
			*FIELD(base, k->off, char **) = NULL;
			*FIELD(base, k->count_off, size_t) = 0;
			break;
		case CFG_OBJECT:
			cfg_defaults(k->sub, base);
			break;
		case CFG_PTR_OBJECT:
			*FIELD(base, k->off, void *) = NULL;
			break;
		case CFG_ARRAY:
			*FIELD(base, k->off, void *) = NULL;
			*FIELD(base, k->count_off, size_t) = 0;
			break;
		}
	}
}

/* Free what the keys of an object own; the object itself stays. */
static void
cfg_free_keys(const struct cfg_key *keys, void *base)
{
	const struct cfg_key	*k;
	char			**list;
	char			*elems;
	size_t			 i, n;

	for (k = keys; k->name != NULL; k++) {
		switch (k->type) {
		case CFG_STRING:
		case CFG_PATH:
			free(*FIELD(base, k->off, char *));
			*FIELD(base, k->off, char *) = NULL;
			break;
		case CFG_STRLIST:
			list = *FIELD(base, k->off, char **);
			n = *FIELD(base, k->count_off, size_t);
			for (i = 0; list != NULL && i < n; i++)
				free(list[i]);
			free(list);
			*FIELD(base, k->off, char **) = NULL;
			*FIELD(base, k->count_off, size_t) = 0;
			break;
		case CFG_OBJECT:
			cfg_free_keys(k->sub, base);
			break;
		case CFG_PTR_OBJECT:
			if ((elems = *FIELD(base, k->off, char *)) != NULL) {
				cfg_free_keys(k->sub, elems);
				free(elems);
			}
			*FIELD(base, k->off, char *) = NULL;
			break;
		case CFG_ARRAY:
			elems = *FIELD(base, k->off, char *);
			n = *FIELD(base, k->count_off, size_t);
			for (i = 0; elems != NULL && i < n; i++)
				cfg_free_keys(k->sub, elems + i * k->sub_size);
			free(elems);
			*FIELD(base, k->off, char *) = NULL;
			*FIELD(base, k->count_off, size_t) = 0;
			break;
		default:
			break;
		}
	}
}

static void	cfg_parse_object(struct cfg_ctx *, const struct cfg_key *,
		    json_t *, void *, const char *);

/* Parse one present value into its field; report what is wrong with it. */
static void
cfg_parse_value(struct cfg_ctx *ctx, const struct cfg_key *k, json_t *v,
    void *base, const char *ptr)
{
	char		 elptr[CFG_PTR_MAX], **list, *elems, *file;
	const char	*s, *msg;
	json_int_t	 iv;
	double		 dv;
	size_t		 i, n;
	int		 j;

	switch (k->type) {
	case CFG_STRING:
		if (!json_is_string(v)) {
			cfg_error(ctx, ptr, "must be a string");
			break;
		}
		s = json_string_value(v);
		if (k->check != NULL && (msg = k->check(s)) != NULL) {
			cfg_error(ctx, ptr, "%s", msg);
			break;
		}
		free(*FIELD(base, k->off, char *));
		*FIELD(base, k->off, char *) = xstrdup(s);
		break;
	case CFG_PATH:
		if (!json_is_string(v) || json_string_length(v) == 0) {
			cfg_error(ctx, ptr, "must be a file name");
			break;
		}
		/*
		 * Keep the name even when the file is unreadable, so that
		 * later checks ("verify_client needs client_ca_file") do
		 * not pile a second, misleading error onto this one.
		 */
		file = cfg_resolve(ctx, json_string_value(v));
		free(*FIELD(base, k->off, char *));
		*FIELD(base, k->off, char *) = file;
		if ((j = cfg_open_regular(file)) == -1) {
			cfg_error(ctx, ptr, "cannot read: %s", strerror(errno));
			break;
		}
		close(j);
		if (k->loaded != NULL)
			k->loaded(ctx, base, file, ptr);
		break;
	case CFG_ENUM:
		s = json_is_string(v) ? json_string_value(v) : "";
		for (j = 0; k->choices[j] != NULL; j++)
			if (strcmp(s, k->choices[j]) == 0)
				break;
		if (k->choices[j] == NULL) {
			char	 all[256] = "";

			for (j = 0; k->choices[j] != NULL; j++) {
				if (j > 0)
					strncat(all, ", ",
					    sizeof(all) - strlen(all) - 1);
				strncat(all, k->choices[j],
				    sizeof(all) - strlen(all) - 1);
			}
			cfg_error(ctx, ptr, "must be one of: %s", all);
			break;
		}
		*FIELD(base, k->off, int) = j;
		break;
	case CFG_BOOL:
		if (!json_is_boolean(v)) {
			cfg_error(ctx, ptr, "must be true or false");
			break;
		}
		*FIELD(base, k->off, int) = json_is_true(v);
		break;
	case CFG_INT:
	case CFG_SIZE:
		if (!json_is_integer(v)) {
			cfg_error(ctx, ptr, "must be an integer");
			break;
		}
		iv = json_integer_value(v);
		if (iv < k->min || iv > k->max) {
			cfg_error(ctx, ptr, "must be between %lld and %lld",
			    k->min, k->max);
			break;
		}
		if (k->type == CFG_INT)
			*FIELD(base, k->off, int) = (int)iv;
		else
			*FIELD(base, k->off, size_t) = (size_t)iv;
		break;
	case CFG_SECONDS:
		if (!json_is_number(v)) {
			cfg_error(ctx, ptr, "must be a number of seconds");
			break;
		}
		/* Bounds apply to the value rounded to milliseconds. */
		dv = json_number_value(v) * 1000.0;
		if (!(dv >= k->min - 0.5 && dv < k->max + 0.5)) {
			cfg_error(ctx, ptr, "must be between %g and %g seconds",
			    k->min / 1000.0, k->max / 1000.0);
			break;
		}
		*FIELD(base, k->off, int) = (int)(dv + 0.5);
		break;
	case CFG_FRACTION:
		if (!json_is_number(v)) {
			cfg_error(ctx, ptr, "must be a number");
			break;
		}
		dv = json_number_value(v);
		if (!(dv * 1000.0 >= k->min && dv * 1000.0 <= k->max)) {
			cfg_error(ctx, ptr, "must be between %g and %g",
			    k->min / 1000.0, k->max / 1000.0);
			break;
		}
		*FIELD(base, k->off, double) = dv;
		break;
	case CFG_STRLIST:
		if (!json_is_array(v)) {
			cfg_error(ctx, ptr, "must be an array of strings");
			break;
		}
		n = json_array_size(v);
		if (n < (size_t)k->min || n > (size_t)k->max) {
			cfg_error(ctx, ptr, "must have %lld to %lld entries",
			    k->min, k->max);
			break;
		}
		/* Allocated even when empty: non-NULL means "given". */
		list = xcalloc(n + 1, sizeof(*list));
		*FIELD(base, k->off, char **) = list;
		for (i = 0; i < n; i++) {
			cfg_ptr_index(elptr, sizeof(elptr), ptr, i);
			s = json_string_value(json_array_get(v, i));
			if (s == NULL) {
				cfg_error(ctx, elptr, "must be a string");
				continue;
			}
			if (k->check != NULL && (msg = k->check(s)) != NULL) {
				cfg_error(ctx, elptr, "%s", msg);
				continue;
			}
			list[(*FIELD(base, k->count_off, size_t))++] =
			    xstrdup(s);
		}
		break;
	case CFG_OBJECT:
		cfg_parse_object(ctx, k->sub, v, base, ptr);
		break;
	case CFG_PTR_OBJECT:
		if (!json_is_object(v)) {
			cfg_error(ctx, ptr, "must be an object");
			break;
		}
		elems = xcalloc(1, k->sub_size);
		*FIELD(base, k->off, char *) = elems;
		cfg_defaults(k->sub, elems);
		cfg_parse_object(ctx, k->sub, v, elems, ptr);
		break;
	case CFG_ARRAY:
		if (!json_is_array(v)) {
			cfg_error(ctx, ptr, "must be an array");
			break;
		}
		n = json_array_size(v);
		if (n < (size_t)k->min) {
			cfg_error(ctx, ptr, "must have at least %lld %s",
			    k->min, k->min == 1 ? "entry" : "entries");
			break;
		}
		if (n > (size_t)k->max) {
			cfg_error(ctx, ptr, "must have at most %lld entries",
			    k->max);
			break;
		}
		elems = xcalloc(n, k->sub_size);
		*FIELD(base, k->off, char *) = elems;
		*FIELD(base, k->count_off, size_t) = n;
		for (i = 0; i < n; i++)
			cfg_defaults(k->sub, elems + i * k->sub_size);
		for (i = 0; i < n; i++) {
			cfg_ptr_index(elptr, sizeof(elptr), ptr, i);
			cfg_parse_object(ctx, k->sub, json_array_get(v, i),
			    elems + i * k->sub_size, elptr);
		}
		break;
	}
}

static int
cfg_secret_name(const char *name)
{
	size_t	 i, wlen, at;

	for (i = 0; cfg_secret_words[i] != NULL; i++) {
		wlen = strlen(cfg_secret_words[i]);
		for (at = 0; name[at] != '\0'; at++)
			if (strncasecmp(name + at, cfg_secret_words[i],
			    wlen) == 0)
				return 1;
	}
	return 0;
}

/*
 * Parse the members of a JSON object against a key table.  Unknown keys
 * are reported first, in document order, then each known key in table
 * order.
 */
static void
cfg_parse_object(struct cfg_ctx *ctx, const struct cfg_key *keys, json_t *obj,
    void *base, const char *ptr)
{
	const struct cfg_key	*k;
	const char		*name;
	char			 kptr[CFG_PTR_MAX];
	json_t			*v;

	if (!json_is_object(obj)) {
		cfg_error(ctx, ptr, "must be an object");
		return;
	}
	json_object_foreach(obj, name, v) {
		for (k = keys; k->name != NULL; k++)
			if (strcmp(k->name, name) == 0)
				break;
		if (k->name != NULL)
			continue;
		cfg_ptr(kptr, sizeof(kptr), ptr, name);
		if (cfg_secret_name(name))
			cfg_error(ctx, kptr, "unknown key; secrets are never "
			    "written inline: put \"username:password\" in a "
			    "file and name it in credentials_file");
		else
			cfg_error(ctx, kptr, "unknown key");
	}
	for (k = keys; k->name != NULL; k++) {
		cfg_ptr(kptr, sizeof(kptr), ptr, k->name);
		if ((v = json_object_get(obj, k->name)) == NULL) {
			if (k->flags & CFG_REQUIRED)
				cfg_error(ctx, kptr, "is required");
			continue;
		}
		cfg_parse_value(ctx, k, v, base, kptr);
	}
}

static void
cfg_add_host(struct config_upstream *up, const char *host)
{
	char	**hosts;
	size_t	  i;

	for (i = 0; i < up->nhosts; i++)
		if (strcasecmp(up->hosts[i], host) == 0)
			return;
	hosts = realloc(up->hosts, (up->nhosts + 2) * sizeof(*hosts));
	if (hosts == NULL)
		abort();
	hosts[up->nhosts++] = xstrdup(host);
	hosts[up->nhosts] = NULL;
	up->hosts = hosts;
}

/*
 * The host names containerd sends in ns= for this upstream: its URL's
 * host[:port] (url_hostport() drops the scheme's default port), and for
 * Docker Hub the names docker.io images are known by.
 */
static void
cfg_default_hosts(struct config_upstream *up)
{
	char	 hp[300];

	if (url_hostport(&up->u, hp, sizeof(hp)) != -1)
		cfg_add_host(up, hp);
	if (up->docker_hub) {
		cfg_add_host(up, "docker.io");
		cfg_add_host(up, "registry-1.docker.io");
		cfg_add_host(up, "index.docker.io");
	}
	if (up->hosts == NULL)
		up->hosts = xcalloc(1, sizeof(*up->hosts));
}

/* Report a host that routes to two upstreams; given says who set it. */
static void
cfg_dup_host(struct cfg_ctx *ctx, const struct config_upstream *ups,
    const int *given, size_t i, size_t a, size_t j, size_t b)
{
	char	 p[CFG_PTR_MAX], q[CFG_PTR_MAX];

	snprintf(p, sizeof(p), "/upstreams/%zu/hosts", i);
	snprintf(q, sizeof(q), "/upstreams/%zu/hosts", j);
	if (given[j])
		snprintf(q + strlen(q), sizeof(q) - strlen(q), "/%zu", b);
	if (given[i])
		snprintf(p + strlen(p), sizeof(p) - strlen(p), "/%zu", a);
	if (given[i])
		cfg_error(ctx, p, "duplicate of %s", q);
	else
		cfg_error(ctx, p, "default host \"%s\" is also in %s; set "
		    "hosts on one of them", ups[i].hosts[a], q);
}

/* Checks that span keys, and values computed from others. */
static void
cfg_finish(struct cfg_ctx *ctx, struct config *cfg)
{
	struct config_upstream	*up, *o;
	char			 host[256], p[CFG_PTR_MAX], q[CFG_PTR_MAX];
	size_t			 i, j, a, b, ndefault = 0, len;
	int			*given;

	if (cfg->listen_address != NULL &&
	    cfg_split_listen(cfg->listen_address, cfg->listen_host,
	    sizeof(cfg->listen_host), &cfg->listen_port) == -1)
		cfg_error(ctx, "/listen/address", "%s",
		    cfg_check_listen(cfg->listen_address));

	if (cfg->tls != NULL && cfg->tls->verify_client != CONFIG_VERIFY_NONE &&
	    cfg->tls->client_ca_file == NULL)
		cfg_error(ctx, "/listen/tls/verify_client",
		    "requires client_ca_file");

	/* The realm is external_url + "/token": no doubled slash. */
	if (cfg->external_url != NULL &&
	    (len = strlen(cfg->external_url)) > 0 &&
	    cfg->external_url[len - 1] == '/')
		cfg->external_url[len - 1] = '\0';

	if (cfg->instance_id == NULL) {
		if (gethostname(host, sizeof(host)) == -1)
			strcpy(host, "localhost");
		host[sizeof(host) - 1] = '\0';
		len = strlen(host) + 16;
		if ((cfg->instance_id = malloc(len)) == NULL)
			abort();
		snprintf(cfg->instance_id, len, "%s:%d", host,
		    cfg->listen_port);
	}

	/* The spool is created at start: resolve it, do not require it. */
	if (cfg->audit != NULL && cfg->audit->spool_file != NULL) {
		char	*spool = cfg_resolve(ctx, cfg->audit->spool_file);

		free(cfg->audit->spool_file);
		cfg->audit->spool_file = spool;
	}
	if (cfg->audit != NULL && cfg->audit->redis != NULL &&
	    cfg_split_listen(cfg->audit->redis, cfg->audit->redis_host,
	    sizeof(cfg->audit->redis_host), &cfg->audit->redis_port) == -1)
		cfg->audit->redis_host[0] = '\0';

	cfg->default_upstream = -1;
	given = xcalloc(cfg->nupstreams, sizeof(*given));
	for (i = 0; i < cfg->nupstreams; i++) {
		up = &cfg->upstreams[i];
		given[i] = up->hosts != NULL;
		if (up->url != NULL && url_parse(up->url, &up->u) == 0 &&
		    up->hosts == NULL)
			cfg_default_hosts(up);
		if (up->is_default && ndefault++ == 0)
			cfg->default_upstream = (int)i;
		for (j = 0; j < i; j++) {
			o = &cfg->upstreams[j];
			if (up->name != NULL && o->name != NULL &&
			    strcmp(up->name, o->name) == 0) {
				snprintf(p, sizeof(p), "/upstreams/%zu/name",
				    i);
				snprintf(q, sizeof(q), "/upstreams/%zu/name",
				    j);
				cfg_error(ctx, p, "duplicate of %s", q);
				break;
			}
		}
		for (j = 0; j < i; j++) {
			o = &cfg->upstreams[j];
			if (up->prefix != NULL && o->prefix != NULL &&
			    strcmp(up->prefix, o->prefix) == 0) {
				snprintf(p, sizeof(p), "/upstreams/%zu/prefix",
				    i);
				snprintf(q, sizeof(q), "/upstreams/%zu/prefix",
				    j);
				cfg_error(ctx, p, "duplicate of %s", q);
				break;
			}
		}
	}
	if (ndefault > 1)
		cfg_error(ctx, "/upstreams",
		    "at most one upstream may be default");

	/* A host in two lists would make ns= routing depend on order. */
	for (i = 0; i < cfg->nupstreams; i++) {
		up = &cfg->upstreams[i];
		for (a = 0; a < up->nhosts; a++) {
			for (j = 0; j < i; j++) {
				o = &cfg->upstreams[j];
				for (b = 0; b < o->nhosts; b++)
					if (strcasecmp(up->hosts[a],
					    o->hosts[b]) == 0)
						break;
				if (b < o->nhosts) {
					cfg_dup_host(ctx, cfg->upstreams,
					    given, i, a, j, b);
					break;
				}
			}
		}
	}
	free(given);
}

static void
config_free(struct config *cfg)
{
	struct config_upstream	*up;
	size_t			 i;

	for (i = 0; cfg->upstreams != NULL && i < cfg->nupstreams; i++) {
		up = &cfg->upstreams[i];
		if (up->username != NULL) {
			explicit_bzero(up->username, strlen(up->username));
			free(up->username);
		}
		if (up->password != NULL) {
			explicit_bzero(up->password, strlen(up->password));
			free(up->password);
		}
	}
	cfg_free_keys(cfg_root_keys, cfg);
	free(cfg->path);
	free(cfg);
}

/* Hand the collected errors to the caller, without the last newline. */
static void
cfg_give_errors(struct cfg_ctx *ctx, char **cause)
{
	if (ctx->errlen > 0 && ctx->errs[ctx->errlen - 1] == '\n')
		ctx->errs[--ctx->errlen] = '\0';
	if (cause != NULL)
		*cause = ctx->errs;
	else
		free(ctx->errs);
	ctx->errs = NULL;
}

static struct config *
cfg_load_buf(const char *buf, size_t len, const char *file,
    const char *base_dir, char **cause)
{
	struct cfg_ctx	 ctx;
	struct config	*cfg;
	json_error_t	 jerr;
	json_t		*root;
	char		 where[CFG_PTR_MAX];

	memset(&ctx, 0, sizeof(ctx));
	ctx.base_dir = base_dir;

	root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
	if (root == NULL) {
		snprintf(where, sizeof(where), "%s%s%d:%d",
		    file != NULL ? file : "", file != NULL ? ":" : "",
		    jerr.line, jerr.column);
		cfg_error(&ctx, where, "%s", jerr.text);
		cfg_give_errors(&ctx, cause);
		return NULL;
	}

	cfg = xcalloc(1, sizeof(*cfg));
	cfg->refcnt = 1;
	cfg_defaults(cfg_root_keys, cfg);
	cfg_parse_object(&ctx, cfg_root_keys, root, cfg, "");
	/* Runs even after errors, so that one pass reports them all. */
	cfg_finish(&ctx, cfg);
	json_decref(root);

	if (ctx.nerrs > 0) {
		config_free(cfg);
		cfg_give_errors(&ctx, cause);
		return NULL;
	}
	free(ctx.errs);
	if (file != NULL)
		cfg->path = xstrdup(file);
	if (cause != NULL)
		*cause = NULL;
	return cfg;
}

/*
 * Load the configuration file at path.  Relative file names inside it
 * resolve against the file's directory.  Returns NULL and sets *cause
 * (to be freed) to every error, one per line.
 */
struct config *
config_load(const char *path, char **cause)
{
	struct cfg_ctx	 ctx;
	struct config	*cfg;
	struct stat	 st;
	char		*buf = NULL, *dir = NULL, *slash;
	size_t		 len = 0;
	ssize_t		 n = 0;
	int		 fd;

	memset(&ctx, 0, sizeof(ctx));
	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY)) == -1) {
		cfg_error(&ctx, path, "cannot read: %s", strerror(errno));
		goto fail;
	}
	if (fstat(fd, &st) == -1) {
		cfg_error(&ctx, path, "cannot read: %s", strerror(errno));
		goto fail;
	}
	if (S_ISDIR(st.st_mode)) {
		cfg_error(&ctx, path, "cannot read: %s", strerror(EISDIR));
		goto fail;
	}
	/* Refuse before reading; the read loop also stops pipes. */
	if (S_ISREG(st.st_mode) && st.st_size > CONFIG_MAX_FILE_BYTES)
		goto toobig;
	if ((buf = malloc(CONFIG_MAX_FILE_BYTES + 1)) == NULL)
		abort();
	while (len <= CONFIG_MAX_FILE_BYTES) {
		n = read(fd, buf + len, CONFIG_MAX_FILE_BYTES + 1 - len);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += n;
	}
	if (n == -1) {
		cfg_error(&ctx, path, "cannot read: %s", strerror(errno));
		goto fail;
	}
	if (len > CONFIG_MAX_FILE_BYTES)
		goto toobig;
	close(fd);
	fd = -1;

	if ((slash = strrchr(path, '/')) != NULL) {
		dir = xstrdup(path);
		dir[slash == path ? 1 : slash - path] = '\0';
	}
	cfg = cfg_load_buf(buf, len, path, dir, cause);
	free(dir);
	free(buf);
	return cfg;

toobig:
	cfg_error(&ctx, path, "larger than %d bytes", CONFIG_MAX_FILE_BYTES);
fail:
	if (fd != -1)
		close(fd);
	free(buf);
	cfg_give_errors(&ctx, cause);
	return NULL;
}

/*
 * Load a configuration held in memory; relative file names resolve
 * against base_dir (NULL: the working directory).
 */
struct config *
config_load_string(const char *json, const char *base_dir, char **cause)
{
	struct cfg_ctx	 ctx;
	size_t		 len;

	len = strnlen(json, CONFIG_MAX_FILE_BYTES + 1);
	if (len > CONFIG_MAX_FILE_BYTES) {
		memset(&ctx, 0, sizeof(ctx));
		cfg_error(&ctx, "", "larger than %d bytes",
		    CONFIG_MAX_FILE_BYTES);
		cfg_give_errors(&ctx, cause);
		return NULL;
	}
	return cfg_load_buf(json, len, NULL, base_dir, cause);
}

/*
 * Take a reference.  Snapshots are shared within one event loop, so the
 * count is not atomic.
 */
void
config_ref(struct config *cfg)
{
	cfg->refcnt++;
}

/* Drop a reference and free the snapshot with the last; NULL is a no-op. */
void
config_unref(struct config *cfg)
{
	if (cfg == NULL || --cfg->refcnt > 0)
		return;
	config_free(cfg);
}

/* Find the upstream whose prefix is the name component [s, s + len). */
const struct config_upstream *
config_upstream_by_prefix(const struct config *cfg, const char *s, size_t len)
{
	const struct config_upstream	*up;
	size_t				 i;

	for (i = 0; i < cfg->nupstreams; i++) {
		up = &cfg->upstreams[i];
		if (up->prefix != NULL && strlen(up->prefix) == len &&
		    memcmp(up->prefix, s, len) == 0)
			return up;
	}
	return NULL;
}

/* Find the upstream one of whose hosts is [s, s + len), ignoring case. */
const struct config_upstream *
config_upstream_by_host(const struct config *cfg, const char *s, size_t len)
{
	const struct config_upstream	*up;
	size_t				 i, j;

	for (i = 0; i < cfg->nupstreams; i++) {
		up = &cfg->upstreams[i];
		for (j = 0; j < up->nhosts; j++)
			if (strlen(up->hosts[j]) == len &&
			    strncasecmp(up->hosts[j], s, len) == 0)
				return up;
	}
	return NULL;
}

/* The configuration name of a log level. */
const char *
config_log_level_name(int level)
{
	if (level < CONFIG_LOG_ERROR || level > CONFIG_LOG_DEBUG)
		return "unknown";
	return cfg_level_names[level];
}

static int
cfg_str_eq(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return strcmp(a, b) == 0;
}

/* Is the leaf value of k the same in both objects? */
static int
cfg_leaf_eq(const struct cfg_key *k, const void *a, const void *b)
{
	char		**la, **lb;
	size_t		 i, n;

	switch (k->type) {
	case CFG_STRING:
	case CFG_PATH:
		return cfg_str_eq(*CONST_FIELD(a, k->off, char *),
		    *CONST_FIELD(b, k->off, char *));
	case CFG_ENUM:
	case CFG_BOOL:
	case CFG_INT:
	case CFG_SECONDS:
		return *CONST_FIELD(a, k->off, int) ==
		    *CONST_FIELD(b, k->off, int);
	case CFG_SIZE:
		return *CONST_FIELD(a, k->off, size_t) ==
		    *CONST_FIELD(b, k->off, size_t);
	case CFG_FRACTION:
		return *CONST_FIELD(a, k->off, double) ==
		    *CONST_FIELD(b, k->off, double);
	case CFG_STRLIST:
		n = *CONST_FIELD(a, k->count_off, size_t);
		if (n != *CONST_FIELD(b, k->count_off, size_t))
			return 0;
		la = *CONST_FIELD(a, k->off, char **);
		lb = *CONST_FIELD(b, k->off, char **);
		for (i = 0; i < n; i++)
			if (strcmp(la[i], lb[i]) != 0)
				return 0;
		return 1;
	default:
		return 1;
	}
}

/*
 * Walk two snapshots side by side and report keys that differ although a
 * reload may not change them (fixed: an enclosing key may not change).
 */
static void
cfg_compare(struct cfg_ctx *ctx, const struct cfg_key *keys, const void *a,
    const void *b, const char *ptr, int fixed)
{
	const struct cfg_key	*k;
	const char		*pa, *pb;
	char			 kptr[CFG_PTR_MAX], eptr[CFG_PTR_MAX];
	size_t			 i, na, nb;
	int			 f;

	for (k = keys; k->name != NULL; k++) {
		cfg_ptr(kptr, sizeof(kptr), ptr, k->name);
		f = fixed || !(k->flags & CFG_RELOAD);
		switch (k->type) {
		case CFG_OBJECT:
			cfg_compare(ctx, k->sub, a, b, kptr, fixed);
			break;
		case CFG_PTR_OBJECT:
			pa = *CONST_FIELD(a, k->off, char *);
			pb = *CONST_FIELD(b, k->off, char *);
			if (f && (pa == NULL) != (pb == NULL))
				cfg_error(ctx, kptr, "a reload cannot add or "
				    "remove it; restart to apply");
			else if (pa != NULL && pb != NULL)
				cfg_compare(ctx, k->sub, pa, pb, kptr, f);
			break;
		case CFG_ARRAY:
			pa = *CONST_FIELD(a, k->off, char *);
			pb = *CONST_FIELD(b, k->off, char *);
			na = *CONST_FIELD(a, k->count_off, size_t);
			nb = *CONST_FIELD(b, k->count_off, size_t);
			if (f && na != nb) {
				cfg_error(ctx, kptr, "a reload cannot change "
				    "the number of entries; restart to apply");
				break;
			}
			for (i = 0; i < na && i < nb; i++) {
				cfg_ptr_index(eptr, sizeof(eptr), kptr, i);
				cfg_compare(ctx, k->sub, pa + i * k->sub_size,
				    pb + i * k->sub_size, eptr, f);
			}
			break;
		default:
			if (f && !cfg_leaf_eq(k, a, b))
				cfg_error(ctx, kptr, "a reload cannot change "
				    "it; restart to apply");
			break;
		}
	}
}

/*
 * Check that next differs from cur only in keys a reload may change.
 * Returns -1 and sets *cause to every offending key otherwise.
 */
int
config_reload_check(const struct config *cur, const struct config *next,
    char **cause)
{
	struct cfg_ctx	 ctx;

	memset(&ctx, 0, sizeof(ctx));
	cfg_compare(&ctx, cfg_root_keys, cur, next, "", 0);
	if (ctx.nerrs > 0) {
		cfg_give_errors(&ctx, cause);
		return -1;
	}
	if (cause != NULL)
		*cause = NULL;
	return 0;
}

/* Print a Markdown table cell, escaping the column separator. */
static void
cfg_md(FILE *out, const char *s)
{
	fputs(" ", out);
	for (; *s != '\0'; s++) {
		if (*s == '|')
			fputc('\\', out);
		fputc(*s, out);
	}
	fputs(" |", out);
}

static void
cfg_reference_keys(FILE *out, const struct cfg_key *keys, const char *ptr,
    int fixed)
{
	const struct cfg_key	*k;
	const char		*type = "";
	char			 kptr[CFG_PTR_MAX], eptr[CFG_PTR_MAX];
	char			 def[256], range[256], cell[CFG_PTR_MAX + 4];
	int			 f, j;

	for (k = keys; k->name != NULL; k++) {
		cfg_ptr(kptr, sizeof(kptr), ptr, k->name);
		f = fixed || !(k->flags & CFG_RELOAD);
		def[0] = range[0] = '\0';
		switch (k->type) {
		case CFG_STRING:
			type = "string";
			if (k->def_str != NULL)
				snprintf(def, sizeof(def), "`%s`", k->def_str);
			break;
		case CFG_PATH:
			type = "file";
			break;
		case CFG_ENUM:
			type = "string";
			snprintf(def, sizeof(def), "`%s`", k->choices[k->def]);
			for (j = 0; k->choices[j] != NULL; j++)
				snprintf(range + strlen(range),
				    sizeof(range) - strlen(range), "%s`%s`",
				    j > 0 ? ", " : "", k->choices[j]);
			break;
		case CFG_BOOL:
			type = "boolean";
			snprintf(def, sizeof(def), "`%s`",
			    k->def ? "true" : "false");
			break;
		case CFG_INT:
		case CFG_SIZE:
			type = "integer";
			snprintf(def, sizeof(def), "`%lld`", k->def);
			snprintf(range, sizeof(range), "%lld..%lld", k->min,
			    k->max);
			break;
		case CFG_SECONDS:
			type = "seconds";
			snprintf(def, sizeof(def), "`%g`", k->def / 1000.0);
			snprintf(range, sizeof(range), "%g..%g",
			    k->min / 1000.0, k->max / 1000.0);
			break;
		case CFG_FRACTION:
			type = "number";
			snprintf(def, sizeof(def), "`%g`", k->def / 1000.0);
			snprintf(range, sizeof(range), "%g..%g",
			    k->min / 1000.0, k->max / 1000.0);
			break;
		case CFG_STRLIST:
			type = "array of strings";
			snprintf(range, sizeof(range), "%lld..%lld entries",
			    k->min, k->max);
			break;
		case CFG_OBJECT:
		case CFG_PTR_OBJECT:
			type = "object";
			break;
		case CFG_ARRAY:
			type = "array of objects";
			snprintf(range, sizeof(range), "%lld..%lld entries",
			    k->min, k->max);
			break;
		}
		if (k->flags & CFG_REQUIRED)
			snprintf(def, sizeof(def), "required");
		else if (k->def_doc != NULL)
			snprintf(def, sizeof(def), "%s", k->def_doc);

		fputs("|", out);
		snprintf(cell, sizeof(cell), "`%s`", kptr);
		cfg_md(out, cell);
		cfg_md(out, type);
		cfg_md(out, def);
		cfg_md(out, range);
		cfg_md(out, k->type == CFG_OBJECT ? "" : f ? "no" : "yes");
		cfg_md(out, k->help);
		fputs("\n", out);

		if (k->type == CFG_OBJECT)
			cfg_reference_keys(out, k->sub, kptr, fixed);
		else if (k->type == CFG_PTR_OBJECT)
			cfg_reference_keys(out, k->sub, kptr, f);
		else if (k->type == CFG_ARRAY) {
			cfg_ptr(eptr, sizeof(eptr), kptr, "N");
			cfg_reference_keys(out, k->sub, eptr, f);
		}
	}
}

/*
 * Print the configuration reference, generated from the schema tables, as
 * a Markdown table.  N in a key stands for an array index.
 */
void
config_reference(FILE *out)
{
	fputs("| Key | Type | Default | Allowed | Reload | Description |\n",
	    out);
	fputs("| --- | --- | --- | --- | --- | --- |\n", out);
	cfg_reference_keys(out, cfg_root_keys, "", 0);
}
