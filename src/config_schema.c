/*
 * config_schema.c: the configuration schema.  One table per JSON object
 * lists every key with its type, bounds, default, whether a reload may
 * change it and its help text; the per-key check functions the rows name
 * validate string values.  Parsing, defaults, reload checks and the
 * reference documentation all walk these tables (config.c, config_ref.c),
 * so a key cannot be documented but not parsed or the other way round.
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

static const char *cfg_check_external_url(const char *);
static const char *cfg_check_service(const char *);
static const char *cfg_check_rfc3339(const char *);
static const char *cfg_check_instance_id(const char *);
static const char *cfg_check_name(const char *);
static const char *cfg_check_upstream_url(const char *);
static const char *cfg_check_prefix(const char *);
static const char *cfg_check_host(const char *);
static const char *cfg_check_cache_dir(const char *);
static const char *cfg_check_redis(const char *);
static const char *cfg_check_stream_key(const char *);
static const char *cfg_check_ip(const char *);
static const char *cfg_check_spool_file(const char *);
static const char *cfg_check_redis_user(const char *);
static const char *cfg_check_issuer(const char *);
static const char *cfg_check_claim(const char *);
static const char *cfg_check_audience(const char *);
static const char *cfg_check_algorithm(const char *);
static const char *cfg_check_redirect_url(const char *);
static const char *cfg_check_scope_token(const char *);
static const char *cfg_check_cookie_name(const char *);
static const char *cfg_check_net(const char *);
static const char *cfg_check_account(const char *);

static const char *const cfg_verify_names[] = {
	"none", "optional", "require", NULL
};

const char *const cfg_level_names[] = {
	"error", "warn", "info", "debug", NULL
};

static const char *const cfg_effect_names[] = {
	"allow", "deny", NULL
};

static const char *const cfg_sendfile_names[] = {
	"auto", "on", "off", NULL
};

#define TLS_OFF(f)	offsetof(struct config_tls, f)
static const struct cfg_key cfg_tls_keys[] = {
	{ .name = "cert_file", .type = CFG_PATH,
	  .flags = CFG_REQUIRED | CFG_RELOAD,
	  .off = TLS_OFF(cert_file),
	  .help = "PEM certificate chain the listener presents." },
	{ .name = "key_file", .type = CFG_PATH,
	  .flags = CFG_REQUIRED | CFG_RELOAD,
	  .off = TLS_OFF(key_file),
	  .help = "PEM private key of cert_file." },
	{ .name = "client_ca_file", .type = CFG_PATH, .flags = CFG_RELOAD,
	  .off = TLS_OFF(client_ca_file), .def_doc = "none",
	  .help = "PEM CA bundle that client certificates must chain to; "
	  "required unless verify_client is none." },
	{ .name = "verify_client", .type = CFG_ENUM, .flags = CFG_RELOAD,
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
	{ .name = "tls", .type = CFG_PTR_OBJECT, .flags = CFG_RELOAD,
	  .off = CFG_OFF(tls),
	  .sub = cfg_tls_keys, .sub_size = sizeof(struct config_tls),
	  .def_doc = "plain HTTP",
	  .help = "Serve HTTPS with this certificate; absent means plain "
	  "HTTP.  SIGHUP rereads the files (new connections get the new "
	  "certificate); a reload cannot turn TLS on or off." },
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
	{ .name = "upstream_header_bytes", .type = CFG_SIZE,
	  .flags = CFG_RELOAD, .off = CFG_OFF(upstream_header_bytes),
	  .min = 1024, .max = 1048576, .def = 65536,
	  .help = "Largest response head (status line and fields) accepted "
	  "from an upstream, a redirect target or a token realm; larger "
	  "is a 502." },
	{ .name = "upstream_header_count", .type = CFG_SIZE,
	  .flags = CFG_RELOAD, .off = CFG_OFF(upstream_header_count),
	  .min = 8, .max = 1000, .def = 256,
	  .help = "Most header fields in one upstream response; more is a "
	  "502." },
	{ .name = "token_bytes", .type = CFG_SIZE, .flags = CFG_RELOAD,
	  .off = CFG_OFF(token_bytes), .min = 1024, .max = 1048576,
	  .def = 65536,
	  .help = "Largest body of an upstream token response (or of the "
	  "GET /v2/ probe) the gateway reads into memory; larger is a "
	  "502." },
	{ .name = "redirects", .type = CFG_INT, .flags = CFG_RELOAD,
	  .off = CFG_OFF(redirects), .min = 0, .max = 10, .def = 5,
	  .help = "Upstream redirects followed for one request (blob, cache "
	  "fill, tag revalidation); one more is answered 502." },
	{ .name = "catalog_names", .type = CFG_SIZE, .flags = CFG_RELOAD,
	  .off = CFG_OFF(catalog_names), .min = 1, .max = 10000, .def = 100,
	  .help = "Most repository names in one _catalog answer (a larger or "
	  "absent n is cut to it, with a Link to the rest), and the n the "
	  "gateway asks the upstream for per catalog page." },
	{ .name = "catalog_pages", .type = CFG_SIZE, .flags = CFG_RELOAD,
	  .off = CFG_OFF(catalog_pages), .min = 1, .max = 1000, .def = 10,
	  .help = "Upstream catalog pages read to answer one _catalog "
	  "request; at the limit the names found so far are answered with "
	  "a Link to continue." },
	{ .name = "catalog_page_bytes", .type = CFG_SIZE, .flags = CFG_RELOAD,
	  .off = CFG_OFF(catalog_page_bytes), .min = 1024, .max = 67108864,
	  .def = 1048576,
	  .help = "Largest upstream catalog page body read into memory; "
	  "larger is a 502." },
	{ .name = "tag_list_names", .type = CFG_SIZE, .flags = CFG_RELOAD,
	  .off = CFG_OFF(tag_list_names), .min = 1, .max = 100000,
	  .def = 10000,
	  .help = "Most tags of one repository the gateway reads and sorts "
	  "to answer a tags/list request (it pages the list itself, also "
	  "when the upstream ignores n and last), the largest n answered "
	  "and the n asked of the upstream; one upstream page may hold "
	  "this many tags (a larger body is a 502), and tags past it are "
	  "answered on a later page through the Link." },
	{ .name = "tag_list_pages", .type = CFG_SIZE, .flags = CFG_RELOAD,
	  .off = CFG_OFF(tag_list_pages), .min = 1, .max = 1000, .def = 10,
	  .help = "Upstream tag list pages read to answer one tags/list "
	  "request (an upstream that pages); at the limit the tags found "
	  "so far are answered with a Link to continue." },
	{ .name = "upload_sessions", .type = CFG_SIZE, .flags = CFG_RELOAD,
	  .off = CFG_OFF(upload_sessions), .min = 0, .max = 1000000,
	  .def = 10000,
	  .help = "Chunked blob uploads whose offset and latest Location "
	  "the gateway keeps in memory (least recently used dropped "
	  "first), to answer a PATCH out of order with 416 and a GET of "
	  "an upload location itself; 0 turns this off. With a redis "
	  "section they are kept in Redis too, so every instance agrees." },
	{ .name = "upload_ttl", .type = CFG_SECONDS, .flags = CFG_RELOAD,
	  .off = CFG_OFF(upload_ttl_ms), .min = 1000, .max = 2073600000LL,
	  .def = 86400000,
	  .help = "How long an upload's state stays in Redis after its "
	  "last chunk (with a redis section); an upload finished or "
	  "cancelled through the gateway is removed at once." },
	{ .name = "referrers_fallback", .type = CFG_SECONDS,
	  .flags = CFG_RELOAD, .off = CFG_OFF(referrers_fallback_ms),
	  .min = 0, .max = 86400000, .def = 300000,
	  .help = "How long an upstream found without the referrers API "
	  "(404 without an OCI error, or 405) is answered from the "
	  "referrers tag schema without asking its API again; 0 asks "
	  "every time." },
	{ .name = "referrers_attempts", .type = CFG_SIZE, .flags = CFG_RELOAD,
	  .off = CFG_OFF(referrers_attempts), .min = 1, .max = 20, .def = 5,
	  .help = "Read-add-write rounds the gateway makes to add a pushed "
	  "manifest to its subject's referrers tag, or to take a deleted "
	  "one out (the tag moved under it: read again); past them the push "
	  "is answered without OCI-Subject, so the client maintains the tag "
	  "itself (a delete is logged)." },
	{ .name = "referrers_pages", .type = CFG_SIZE, .flags = CFG_RELOAD,
	  .off = CFG_OFF(referrers_pages), .min = 1, .max = 1000, .def = 10,
	  .help = "Pages of an upstream referrers answer (Link rel=next, "
	  "on the same upstream and path) merged into one answer; past "
	  "them the answer ends with a Link to the gateway's own path "
	  "that goes on from there. All pages together are bounded by "
	  "limits.manifest_bytes." },
	{ .name = NULL }
};

static const struct cfg_key cfg_buffers_keys[] = {
	{ .name = "high_watermark", .type = CFG_SIZE, .flags = CFG_RELOAD,
	  .off = CFG_OFF(high_watermark), .min = 16384, .max = 67108864,
	  .def = 262144,
	  .help = "Bytes queued toward a peer before reading from the other "
	  "side pauses." },
	{ .name = "splice", .type = CFG_BOOL, .flags = CFG_RELOAD,
	  .off = CFG_OFF(splice), .def = 1,
	  .help = "Relay a pass-through response body of at least "
	  "high_watermark bytes with a Content-Length from the upstream "
	  "socket to the client socket with splice(2) through a pipe of "
	  "high_watermark bytes, never copied into the gateway's memory "
	  "(plain TCP on both sides; TLS on either side copies)." },
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
	{ .name = "worker_restart", .type = CFG_SECONDS,
	  .flags = CFG_RELOAD, .off = CFG_OFF(worker_restart_ms),
	  .min = 100, .max = 600000, .def = 10000,
	  .help = "Longest wait before the master restarts a worker that "
	  "keeps crashing (the back-off doubles from 0.1 s up to this)." },
	{ .name = "worker_stall", .type = CFG_SECONDS,
	  .flags = CFG_RELOAD, .off = CFG_OFF(worker_stall_ms),
	  .min = 200, .max = 600000, .def = 1000,
	  .help = "With worker_balance: a worker whose event loop has not "
	  "turned for this long (stopped, stuck, starved of CPU) no longer "
	  "counts as the least loaded, so the others accept the new "
	  "connections again." },
	{ .name = "cache_peer_wait", .type = CFG_SECONDS,
	  .flags = CFG_RELOAD, .off = CFG_OFF(cache_peer_wait_ms),
	  .min = 100, .max = 3600000, .def = 300000,
	  .help = "With workers: how long a cache miss waits for the fill "
	  "another worker runs for the same digest before it is passed "
	  "through uncached." },
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
	{ .name = "file", .type = CFG_STRING, .off = CFG_OFF(log_file),
	  .check = cfg_check_spool_file, .def_doc = "stderr",
	  .help = "Append log lines to this file (relative: to the config "
	  "file's directory) instead of stderr; SIGUSR1 reopens it, for "
	  "logrotate." },
	{ .name = NULL }
};

static const char *const cfg_secrets_fail_names[] = {
	"fail_closed", "cached", NULL
};

/* Gateway secrets (secrets.c, secrets_cli.c); README "Secrets". */
static const struct cfg_key cfg_secrets_keys[] = {
	{ .name = "key_prefix", .type = CFG_STRING,
	  .off = CFG_OFF(secrets_key_prefix), .def_str = "portcullis:secret:",
	  .check = cfg_check_stream_key,
	  .help = "Prefix of the Redis keys of secrets: one hash per secret "
	  "(prefix + id) and the set of ids (prefix + \"ids\")." },
	{ .name = "redis_unavailable", .type = CFG_ENUM,
	  .off = CFG_OFF(secrets_redis_unavailable),
	  .def = SECRETS_FAIL_CLOSED, .choices = cfg_secrets_fail_names,
	  .help = "While Redis cannot answer: fail_closed refuses every "
	  "secret; cached accepts a secret this instance verified less "
	  "than cache_ttl ago (a revocation made meanwhile reaches it only "
	  "when Redis is back)." },
	{ .name = "cache_ttl", .type = CFG_SECONDS,
	  .off = CFG_OFF(secrets_cache_ttl_ms), .min = 1000, .max = 86400000,
	  .def = 300000,
	  .help = "How long a verified secret stays usable from memory when "
	  "redis_unavailable is cached." },
	{ .name = "cache_entries", .type = CFG_INT,
	  .off = CFG_OFF(secrets_cache_entries), .min = 1, .max = 1000000,
	  .def = 1024,
	  .help = "Verified secrets kept in memory for redis_unavailable "
	  "cached (least recently used dropped first)." },
	{ .name = "last_used_interval", .type = CFG_SECONDS,
	  .off = CFG_OFF(secrets_last_used_interval_ms), .min = 1000,
	  .max = 86400000, .def = 60000,
	  .help = "A secret's last_used is written when it is older than "
	  "this, so a busy CI job costs Redis one write per interval." },
	{ .name = "max_groups", .type = CFG_INT,
	  .off = CFG_OFF(secrets_max_groups), .min = 0, .max = 1024,
	  .def = 64,
	  .help = "Groups one secret may carry; a record with more is "
	  "refused as damaged." },
	{ .name = NULL }
};

/* Revocation shared through Redis (revoke.c); README "Revocation". */
static const struct cfg_key cfg_revocation_keys[] = {
	{ .name = "key", .type = CFG_STRING, .off = CFG_OFF(revocation_key),
	  .def_str = "portcullis:revoked", .check = cfg_check_stream_key,
	  .help = "Redis hash of not-before times: field s:SUBJECT per "
	  "subject, field all for every subject; x:ID per revoked secret "
	  "(its revocation time)." },
	{ .name = "channel", .type = CFG_STRING,
	  .off = CFG_OFF(revocation_channel), .def_str = "portcullis:revoke",
	  .check = cfg_check_stream_key,
	  .help = "Pub/sub channel that tells every instance of a "
	  "revocation at once." },
	{ .name = "max_subjects", .type = CFG_INT,
	  .off = CFG_OFF(revocation_max_subjects), .min = 1,
	  .max = 1 << 24, .def = 100000,
	  .help = "Subjects the in-memory revocation table holds, each "
	  "secret revoked in the last 24 h 10 min taking one too; past it "
	  "every credential is refused (a revocation not held must not "
	  "leave a token alive) until restarted with more." },
	{ .name = "resync_interval", .type = CFG_SECONDS,
	  .off = CFG_OFF(revocation_resync_interval_ms), .min = 1000,
	  .max = 86400000, .def = 60000,
	  .help = "The whole table is read again this often, besides after "
	  "every reconnect." },
	{ .name = NULL }
};

#define CACHE_OFF(f)	offsetof(struct config_cache, f)
static const struct cfg_key cfg_cache_keys[] = {
	{ .name = "dir", .type = CFG_STRING, .flags = CFG_REQUIRED,
	  .off = CACHE_OFF(dir), .check = cfg_check_cache_dir,
	  .help = "Absolute path of the cache directory (blobs/, manifests/, "
	  "tags/, links, tmp/); created at start. One gateway per directory." },
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
	  "or auto: a copy below cache.sendfile_min bytes, sendfile from "
	  "there on." },
	{ .name = "sendfile_min", .type = CFG_SIZE, .flags = CFG_RELOAD,
	  .off = CACHE_OFF(sendfile_min), .min = 0, .max = 67108864,
	  .def = SENDFILE_MIN_DEFAULT,
	  .help = "With sendfile auto: a cached file smaller than this is "
	  "copied into the output buffer (cheaper than a file segment for "
	  "small files such as manifests), a larger one goes by sendfile "
	  "(0: always sendfile)." },
	{ .name = "send_window", .type = CFG_SIZE, .flags = CFG_RELOAD,
	  .off = CACHE_OFF(send_window), .min = 65536, .max = 67108864,
	  .def = 2097152,
	  .help = "Bytes of a cached file queued toward one client at a "
	  "time; bounds the memory a slow reader can pin." },
	{ .name = "memory_bytes", .type = CFG_SIZE,
	  .off = CACHE_OFF(memory_bytes), .min = 0, .max = 1LL << 34,
	  .def = 33554432,
	  .help = "Memory per process for copies of small cached manifests "
	  "(those sendfile auto or off copies), so that a hit reads no "
	  "file; least recently used dropped first; a copy is not used once "
	  "any file was published into or removed from the cache since it "
	  "was read (0: none)." },
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
	{ .name = "max_repo_links", .type = CFG_SIZE,
	  .off = CACHE_OFF(max_repo_links), .min = 1, .max = 100000000,
	  .def = 100000,
	  .help = "Repository links kept (in memory and in dir/links, which "
	  "holds at most twice as many lines): which repositories of an "
	  "upstream are known to hold a cached blob or manifest. A hit "
	  "through a repository without one is confirmed with a HEAD to the "
	  "upstream first; above the cap the least recently used link is "
	  "dropped (it costs one HEAD later, a GET when it was the "
	  "upstream's last for the digest)." },
	{ .name = "max_confirms", .type = CFG_SIZE, .flags = CFG_RELOAD,
	  .off = CACHE_OFF(max_confirms), .min = 1, .max = 100000,
	  .def = 64,
	  .help = "HEADs to the upstream running at once that confirm a "
	  "repository holds a cached entry; a hit beyond it is passed "
	  "through to the upstream, not served from the cache." },
	{ .name = "referrers_ttl", .type = CFG_SECONDS, .flags = CFG_RELOAD,
	  .off = CACHE_OFF(referrers_ttl_ms), .min = 0, .max = 3600000,
	  .def = 10000,
	  .help = "How long a referrers answer of a caching upstream is "
	  "served from memory; a push or delete through this gateway that "
	  "changes the subject's referrers drops it at once (other "
	  "gateways' are seen after it expires). 0 turns this off." },
	{ .name = "referrers_entries", .type = CFG_SIZE, .flags = CFG_RELOAD,
	  .off = CACHE_OFF(referrers_entries), .min = 1, .max = 100000,
	  .def = 1000,
	  .help = "Referrers answers kept in memory (least recently used "
	  "dropped first); each is at most limits.manifest_bytes." },
	{ .name = "referrers_bytes", .type = CFG_SIZE, .flags = CFG_RELOAD,
	  .off = CACHE_OFF(referrers_bytes), .min = 0, .max = 1073741824,
	  .def = 8388608,
	  .help = "Bytes of the upstream documents behind the referrers "
	  "answers kept in memory (held parsed, which takes several times "
	  "that); the least recently used are dropped first, and a larger "
	  "answer is not kept." },
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
	  .check = cfg_check_redis,
	  .def_doc = "redis.address, else 127.0.0.1:6379",
	  .help = "Redis server (7.0 or later) of the audit stream as a "
	  "numeric ip:port or [ipv6]:port, so that connecting never waits "
	  "on DNS. Username, password and database come from the top-level "
	  "redis section when there is one." },
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
	  .help = "Ring file of records: each before it is sent "
	  "(wal), else while Redis is down, slow or refusing writes; "
	  "relative to the config file's directory, which must be writable "
	  "(an older spool is converted into a new file renamed over it). "
	  "Created if missing; replayed in order at start." },
	{ .name = "spool_max_bytes", .type = CFG_SIZE,
	  .off = AUDIT_OFF(spool_max_bytes), .min = 16384, .max = 1LL << 40,
	  .def = 1073741824,
	  .help = "Size of the spool ring (the file grows to it as "
	  "records reach further, never shrinks); when full, on_failure "
	  "applies." },
	{ .name = "fsync", .type = CFG_ENUM, .off = AUDIT_OFF(fsync),
	  .def = CONFIG_FSYNC_INTERVAL, .choices = cfg_fsync_names,
	  .help = "When the spool is fsync'ed: before each batch is sent "
	  "(always), once a second (interval) or never; a power loss loses "
	  "what was not." },
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
	  .help = "Deprecated: write a policy rule for the admin action. "
	  "Client IP addresses allowed the admin action (/admin/*) as if "
	  "an allow rule said so; a deny rule still wins." },
	{ .name = "queue_max", .type = CFG_SIZE, .off = AUDIT_OFF(queue_max),
	  .min = 16, .max = 1000000, .def = 10000,
	  .help = "Records held in memory waiting for Redis; beyond it "
	  "Redis counts as slow and records go to the spool." },
	{ .name = "max_inflight", .type = CFG_SIZE,
	  .off = AUDIT_OFF(max_inflight), .min = 1, .max = 100000,
	  .def = 256,
	  .help = "Records sent to Redis (pipelined) and not yet "
	  "acknowledged." },
	{ .name = "wait_replicas", .type = CFG_INT,
	  .off = AUDIT_OFF(wait_replicas), .min = 0, .max = 16, .def = 0,
	  .help = "Replicas that must have each batch (WAIT, up to half of "
	  "timeout) before its records count as written; with Sentinel, "
	  "what survives a failover (README \"Redis failover\")." },
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
	{ .name = "wal", .type = CFG_BOOL, .off = AUDIT_OFF(wal), .def = 1,
	  .help = "The spool is a write-ahead log: every record is appended "
	  "to spool_file before it is sent, so a killed gateway loses none "
	  "(README \"Nothing lost\"); false spools only while Redis is "
	  "away." },
	{ .name = NULL }
};

/*
 * The shared Redis settings, used by the audit (unless audit.redis names
 * another address), and by secrets and revocation.  No row may change on
 * reload: the links hold what they were started with.
 */
#define SENT_OFF(f)	offsetof(struct config_sentinel, f)
static const struct cfg_key cfg_sentinel_keys[] = {
	{ .name = "addresses", .type = CFG_STRLIST, .flags = CFG_REQUIRED,
	  .off = SENT_OFF(addresses), .count_off = SENT_OFF(naddresses),
	  .min = 1, .max = 16, .check = cfg_check_redis,
	  .help = "Sentinels, numeric ip:port or [ipv6]:port, asked in "
	  "order for the master's address." },
	{ .name = "master_name", .type = CFG_STRING,
	  .flags = CFG_REQUIRED, .off = SENT_OFF(master_name),
	  .check = cfg_check_redis_user,
	  .help = "The name the sentinels monitor the master under." },
	{ .name = "username", .type = CFG_STRING, .off = SENT_OFF(username),
	  .check = cfg_check_redis_user, .def_doc = "the default user",
	  .help = "ACL user on the sentinels, with the password in "
	  "password_file." },
	{ .name = "password_file", .type = CFG_PATH,
	  .off = SENT_OFF(password_file),
	  .loaded = cfg_load_sentinel_password, .def_doc = "no AUTH",
	  .help = "File holding the sentinels' password on one line; "
	  "relative to the configuration file. Never printed." },
	{ .name = NULL }
};

#define REDIS_OFF(f)	offsetof(struct config_redis, f)
static const struct cfg_key cfg_redis_keys[] = {
	{ .name = "address", .type = CFG_STRING, .off = REDIS_OFF(address),
	  .def_str = "127.0.0.1:6379", .check = cfg_check_redis,
	  .help = "Redis server (7.0 or later) as a numeric ip:port or "
	  "[ipv6]:port, so that connecting never waits on DNS." },
	{ .name = "database", .type = CFG_INT, .off = REDIS_OFF(database),
	  .min = 0, .max = 65535, .def = 0,
	  .help = "Database number (SELECT) every link uses." },
	{ .name = "username", .type = CFG_STRING, .off = REDIS_OFF(username),
	  .check = cfg_check_redis_user, .def_doc = "the default user",
	  .help = "ACL user (Redis 6 or later) to authenticate as, with "
	  "the password in password_file." },
	{ .name = "password_file", .type = CFG_PATH,
	  .off = REDIS_OFF(password_file), .loaded = cfg_load_redis_password,
	  .def_doc = "no AUTH",
	  .help = "File holding the password on one line (requirepass, or "
	  "the ACL user's); relative to the configuration file. Never "
	  "printed." },
	{ .name = "connect_timeout", .type = CFG_SECONDS,
	  .off = REDIS_OFF(connect_timeout_ms), .min = 100, .max = 600000,
	  .def = 5000,
	  .help = "Time to connect, authenticate and select the database; "
	  "longer counts as Redis down." },
	{ .name = "command_timeout", .type = CFG_SECONDS,
	  .off = REDIS_OFF(command_timeout_ms), .min = 100, .max = 600000,
	  .def = 5000,
	  .help = "A reply slower than this makes Redis count as down: the "
	  "link is dropped and made again." },
	{ .name = "reconnect_min", .type = CFG_SECONDS,
	  .off = REDIS_OFF(reconnect_min_ms), .min = 10, .max = 60000,
	  .def = 100,
	  .help = "First wait before connecting again after a link was "
	  "lost; doubled on each failure up to reconnect_max." },
	{ .name = "reconnect_max", .type = CFG_SECONDS,
	  .off = REDIS_OFF(reconnect_max_ms), .min = 10, .max = 600000,
	  .def = 5000,
	  .help = "Longest wait between connection attempts." },
	{ .name = "sentinel", .type = CFG_PTR_OBJECT,
	  .off = REDIS_OFF(sentinel), .sub = cfg_sentinel_keys,
	  .sub_size = sizeof(struct config_sentinel), .def_doc = "none",
	  .help = "Find the master through Redis Sentinel and follow its "
	  "failovers; address is then not used (README \"Redis failover\")." },
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
	  "route here; replaces the default. [] routes none. A host routes "
	  "to one upstream only, so two upstreams with the same url need "
	  "distinct hosts (e.g. [] on all but one)." },
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
	  .help = "Token realms (host, or host:port) besides the upstream's "
	  "own host that get its credentials (over https only), and besides "
	  "its own origin that may be dialled at a non-public address (a "
	  "token service on another port of a private upstream host must be "
	  "listed)." },
	{ .name = "quota_floor", .type = CFG_INT, .flags = CFG_RELOAD,
	  .off = UP_OFF(quota_floor), .min = -1, .max = 1000000000,
	  .def = -1, .def_doc = "-1 (off)",
	  .help = "When the upstream's RateLimit-Remaining (Docker Hub's "
	  "pull quota) is at or below this, pulls the cache cannot answer "
	  "are refused with 429 for quota_hold after that report; cache "
	  "hits are still served." },
	{ .name = "quota_hold", .type = CFG_SECONDS, .flags = CFG_RELOAD,
	  .off = UP_OFF(quota_hold_ms), .min = 1000, .max = 86400000,
	  .def = 60000,
	  .help = "How long a report at or below quota_floor refuses misses; "
	  "then one goes through and its answer's report decides again." },
	{ .name = "max_concurrent", .type = CFG_INT, .flags = CFG_RELOAD,
	  .off = UP_OFF(max_concurrent), .min = 0, .max = 100000, .def = 0,
	  .def_doc = "0 (no cap)",
	  .help = "Requests this gateway sends the upstream at once (those "
	  "the cache cannot answer, each for its whole length); more wait "
	  "in a queue." },
	{ .name = "queue", .type = CFG_INT, .flags = CFG_RELOAD,
	  .off = UP_OFF(queue), .min = 0, .max = 100000, .def = 64,
	  .help = "Requests waiting for one of max_concurrent; beyond it "
	  "503 with Retry-After at once." },
	{ .name = "queue_timeout", .type = CFG_SECONDS, .flags = CFG_RELOAD,
	  .off = UP_OFF(queue_timeout_ms), .min = 10, .max = 600000,
	  .def = 10000,
	  .help = "Longest wait in the queue; then 503 with Retry-After." },
	{ .name = NULL }
};

/*
 * The access policy (policy.c compiles it).  Rules, blocked digests and
 * immutable tags are written inline or in the file that "file" names; the
 * POL_BODY rows appear in both tables.  What a row cannot say (subject
 * grammar, patterns, unique ids, known upstreams) policy_compile() checks,
 * with the same JSON pointers.
 */
#define SUBJ_OFF(f)	offsetof(struct pol_subject_src, f)
static const struct cfg_key cfg_policy_subject_keys[] = {
	{ .name = "match", .type = CFG_STRING, .flags = CFG_RELOAD,
	  .off = SUBJ_OFF(match), .def_doc = "none",
	  .help = "What a string entry sets: user:NAME, group:NAME, "
	  "anonymous, authenticated, cidr:NET/LEN (IPv4 or IPv6), or "
	  "mtls:DN (RFC 2253; '*' matches within one attribute value)." },
	{ .name = "claim", .type = CFG_STRING, .flags = CFG_RELOAD,
	  .off = SUBJ_OFF(claim), .def_doc = "none",
	  .help = "A claim condition: the verified claim's name." },
	{ .name = "equals", .type = CFG_STRING, .flags = CFG_RELOAD,
	  .off = SUBJ_OFF(equals), .def_doc = "none",
	  .help = "The claim (any of its values) equals this." },
	{ .name = "glob", .type = CFG_STRING, .flags = CFG_RELOAD,
	  .off = SUBJ_OFF(glob), .def_doc = "none",
	  .help = "The claim (any of its values) matches this pattern "
	  "(repository pattern grammar, no templates)." },
	{ .name = NULL }
};

#define RULE_OFF(f)	offsetof(struct pol_rule_src, f)
static const struct cfg_key cfg_policy_rule_keys[] = {
	{ .name = "id", .type = CFG_STRING,
	  .flags = CFG_RELOAD | CFG_REQUIRED, .off = RULE_OFF(id),
	  .help = "The rule's name in logs, audit records and explain "
	  "output: 1 to 64 of letters, digits, '.', '_', '-', ':'; unique." },
	{ .name = "effect", .type = CFG_ENUM,
	  .flags = CFG_RELOAD | CFG_REQUIRED, .off = RULE_OFF(effect),
	  .choices = cfg_effect_names,
	  .help = "allow, or deny (any matching deny beats every allow)." },
	{ .name = "repositories", .type = CFG_STRLIST, .flags = CFG_RELOAD,
	  .off = RULE_OFF(repositories),
	  .count_off = RULE_OFF(nrepositories), .min = 0, .max = 256,
	  .def_doc = "required unless actions are only catalog, admin",
	  .help = "Repository patterns (the upstream's names): '*' within a "
	  "segment, '?' one character, '**' whole segments, templates "
	  "${subject} and ${claim.NAME}." },
	{ .name = "upstreams", .type = CFG_STRLIST, .flags = CFG_RELOAD,
	  .off = RULE_OFF(upstreams), .count_off = RULE_OFF(nupstreams),
	  .min = 0, .max = 256, .def_doc = "every upstream",
	  .help = "Upstream names the rule is limited to." },
	{ .name = "subjects", .type = CFG_ARRAY,
	  .flags = CFG_RELOAD | CFG_SHORTHAND, .off = RULE_OFF(subjects),
	  .count_off = RULE_OFF(nsubjects), .min = 0, .max = 256,
	  .sub = cfg_policy_subject_keys,
	  .sub_size = sizeof(struct pol_subject_src), .def_doc = "required",
	  .help = "Who the rule is about; it matches when any entry does. "
	  "An entry is a string (see match) or a claim condition." },
	{ .name = "actions", .type = CFG_STRLIST, .flags = CFG_RELOAD,
	  .off = RULE_OFF(actions), .count_off = RULE_OFF(nactions),
	  .min = 0, .max = 6, .def_doc = "required",
	  .help = "pull, push, delete, catalog, admin, or * for all." },
	{ .name = NULL }
};

#define BLOCK_OFF(f)	offsetof(struct pol_blocked_src, f)
static const struct cfg_key cfg_policy_blocked_keys[] = {
	{ .name = "digest", .type = CFG_STRING,
	  .flags = CFG_RELOAD | CFG_REQUIRED, .off = BLOCK_OFF(digest),
	  .help = "A manifest or blob digest refused to everyone; a string "
	  "entry sets it." },
	{ .name = "reason", .type = CFG_STRING, .flags = CFG_RELOAD,
	  .off = BLOCK_OFF(reason), .def_doc = "none",
	  .help = "Why, for `policy explain` and the operator." },
	{ .name = NULL }
};

#define IMM_OFF(f)	offsetof(struct pol_immutable_src, f)
static const struct cfg_key cfg_policy_immutable_keys[] = {
	{ .name = "id", .type = CFG_STRING,
	  .flags = CFG_RELOAD | CFG_REQUIRED, .off = IMM_OFF(id),
	  .help = "The rule's name, unique among rules and immutable_tags." },
	{ .name = "repositories", .type = CFG_STRLIST, .flags = CFG_RELOAD,
	  .off = IMM_OFF(repositories), .count_off = IMM_OFF(nrepositories),
	  .min = 0, .max = 256, .def_doc = "required",
	  .help = "Repository patterns (no templates)." },
	{ .name = "upstreams", .type = CFG_STRLIST, .flags = CFG_RELOAD,
	  .off = IMM_OFF(upstreams), .count_off = IMM_OFF(nupstreams),
	  .min = 0, .max = 256, .def_doc = "every upstream",
	  .help = "Upstream names the rule is limited to." },
	{ .name = "tags", .type = CFG_STRLIST, .flags = CFG_RELOAD,
	  .off = IMM_OFF(tags), .count_off = IMM_OFF(ntags),
	  .min = 0, .max = 256, .def_doc = "required",
	  .help = "Tag globs ('*', '?'); a tag matching one cannot be moved "
	  "once it exists." },
	{ .name = NULL }
};

#define POL_OFF(f)	offsetof(struct pol_src, f)
#define POL_BODY_ROWS							\
	{ .name = "rules", .type = CFG_ARRAY, .flags = CFG_RELOAD,	\
	  .off = POL_OFF(rules), .count_off = POL_OFF(nrules),		\
	  .min = 0, .max = 1000000, .sub = cfg_policy_rule_keys,	\
	  .sub_size = sizeof(struct pol_rule_src), .def_doc = "none",	\
	  .help = "Access rules.  Default deny; a request is allowed "	\
	  "when an allow rule matches and no deny rule does, whatever "	\
	  "their order." },						\
	{ .name = "blocked_digests", .type = CFG_ARRAY,			\
	  .flags = CFG_RELOAD | CFG_SHORTHAND, .off = POL_OFF(blocked),	\
	  .count_off = POL_OFF(nblocked), .min = 0, .max = 1000000,	\
	  .sub = cfg_policy_blocked_keys,				\
	  .sub_size = sizeof(struct pol_blocked_src),			\
	  .def_doc = "none",						\
	  .help = "Digests refused (403 DENIED) through every repository " \
	  "and tag, cached or not; an entry is a digest string or an "	\
	  "object." },							\
	{ .name = "immutable_tags", .type = CFG_ARRAY, .flags = CFG_RELOAD, \
	  .off = POL_OFF(immutable), .count_off = POL_OFF(nimmutable),	\
	  .min = 0, .max = 10000, .sub = cfg_policy_immutable_keys,	\
	  .sub_size = sizeof(struct pol_immutable_src),			\
	  .def_doc = "none",						\
	  .help = "Tags that a manifest PUT may create but never move." }

/* What a policy file holds. */
const struct cfg_key cfg_policy_file_keys[] = {
	POL_BODY_ROWS,
	{ .name = NULL }
};

static const struct cfg_key cfg_policy_keys[] = {
	POL_BODY_ROWS,
	{ .name = "max_rules", .type = CFG_SIZE, .flags = CFG_RELOAD,
	  .off = POL_OFF(max_rules), .min = 1, .max = 1000000, .def = 10000,
	  .help = "Most rules a policy may hold." },
	{ .name = "max_blocked_digests", .type = CFG_SIZE,
	  .flags = CFG_RELOAD, .off = POL_OFF(max_blocked), .min = 1,
	  .max = 1000000, .def = 100000,
	  .help = "Most entries in blocked_digests." },
	{ .name = "max_pattern_bytes", .type = CFG_SIZE, .flags = CFG_RELOAD,
	  .off = POL_OFF(max_pattern_bytes), .min = 16, .max = 4096,
	  .def = 512,
	  .help = "Longest repository pattern, tag glob or claim glob." },
	{ .name = "max_file_bytes", .type = CFG_SIZE, .flags = CFG_RELOAD,
	  .off = POL_OFF(max_file_bytes), .min = 1024, .max = 67108864,
	  .def = 4194304,
	  .help = "Largest policy file; refused before it is read." },
	{ .name = "file", .type = CFG_PATH, .flags = CFG_RELOAD,
	  .off = POL_OFF(file), .loaded = cfg_load_policy_file,
	  .def_doc = "inline",
	  .help = "JSON file holding rules, blocked_digests and "
	  "immutable_tags instead of this object (relative to the "
	  "configuration file); reread on reload." },
	{ .name = NULL }
};

/*
 * OpenID Connect issuers (oidc.c fetches their keys; the identity stage
 * verifies their tokens).  A reload keeps an issuer's keys when its name,
 * issuer, ca_file and jwks_hosts stay the same; otherwise it starts over.
 */
#define OCL_OFF(f)	offsetof(struct config_oidc_claim, f)
static const struct cfg_key cfg_oidc_claim_keys[] = {
	{ .name = "claim", .type = CFG_STRING,
	  .flags = CFG_RELOAD | CFG_REQUIRED, .off = OCL_OFF(claim),
	  .check = cfg_check_claim,
	  .help = "Name of a claim the token must carry." },
	{ .name = "equals", .type = CFG_STRING,
	  .flags = CFG_RELOAD | CFG_REQUIRED, .off = OCL_OFF(equals),
	  .check = cfg_check_audience,
	  .help = "The value it must have (a string claim, or one element "
	  "of an array claim)." },
	{ .name = NULL }
};

#define OIDC_OFF(f)	offsetof(struct config_oidc_issuer, f)
static const struct cfg_key cfg_oidc_issuer_keys[] = {
	{ .name = "name", .type = CFG_STRING,
	  .flags = CFG_RELOAD | CFG_REQUIRED, .off = OIDC_OFF(name),
	  .check = cfg_check_name,
	  .help = "Unique name of the issuer in logs, audit records and "
	  "GET /admin/identity: lowercase letters, digits and '-', at most "
	  "32." },
	{ .name = "issuer", .type = CFG_STRING,
	  .flags = CFG_RELOAD | CFG_REQUIRED, .off = OIDC_OFF(issuer),
	  .check = cfg_check_issuer,
	  .help = "Issuer identifier, exactly as the IdP's discovery "
	  "document and tokens write it: an https URL, or http with a "
	  "numeric loopback host (tests). Its /.well-known/openid-"
	  "configuration is fetched. Unique." },
	{ .name = "audiences", .type = CFG_STRLIST,
	  .flags = CFG_RELOAD | CFG_REQUIRED, .off = OIDC_OFF(audiences),
	  .count_off = OIDC_OFF(naudiences), .min = 1, .max = 64,
	  .check = cfg_check_audience,
	  .help = "Accepted aud values: a token must name one of them." },
	{ .name = "subject_claim", .type = CFG_STRING, .flags = CFG_RELOAD,
	  .off = OIDC_OFF(subject_claim), .def_str = "sub",
	  .check = cfg_check_claim,
	  .help = "Claim whose string value is the caller's subject (after "
	  "prefix)." },
	{ .name = "groups_claim", .type = CFG_STRING, .flags = CFG_RELOAD,
	  .off = OIDC_OFF(groups_claim), .def_doc = "none",
	  .check = cfg_check_claim,
	  .help = "Claim (a string or an array of strings) whose values are "
	  "the caller's groups (after prefix)." },
	{ .name = "prefix", .type = CFG_STRING, .flags = CFG_RELOAD,
	  .off = OIDC_OFF(prefix), .def_doc = "none",
	  .check = cfg_check_audience,
	  .help = "Put before the subject and each group, e.g. \"gitlab:\", "
	  "so that two issuers cannot name the same user or group; with "
	  "several issuers, required, and none may begin another's." },
	{ .name = "algorithms", .type = CFG_STRLIST, .flags = CFG_RELOAD,
	  .off = OIDC_OFF(algorithms), .count_off = OIDC_OFF(nalgorithms),
	  .min = 1, .max = 6, .check = cfg_check_algorithm,
	  .def_doc = "[\"RS256\"]",
	  .help = "Signature algorithms accepted from this issuer: RS256, "
	  "RS384, RS512, PS256, ES256, ES384. Never none or HMAC." },
	{ .name = "required_claims", .type = CFG_ARRAY, .flags = CFG_RELOAD,
	  .off = OIDC_OFF(required_claims),
	  .count_off = OIDC_OFF(nrequired_claims), .min = 0, .max = 32,
	  .sub = cfg_oidc_claim_keys,
	  .sub_size = sizeof(struct config_oidc_claim), .def_doc = "none",
	  .help = "Claims a token of this issuer must carry with the given "
	  "value, e.g. {\"claim\": \"namespace_path\", \"equals\": "
	  "\"acme\"}." },
	{ .name = "ca_file", .type = CFG_PATH, .flags = CFG_RELOAD,
	  .off = OIDC_OFF(ca_file), .def_doc = "system CAs",
	  .help = "PEM CA bundle that verifies the issuer's (and its "
	  "jwks_uri's) certificate." },
	{ .name = "jwks_hosts", .type = CFG_STRLIST, .flags = CFG_RELOAD,
	  .off = OIDC_OFF(jwks_hosts), .count_off = OIDC_OFF(njwks_hosts),
	  .min = 0, .max = 64, .check = cfg_check_host, .def_doc = "none",
	  .help = "Hosts (host, or host:port) besides the issuer's own "
	  "origin that the discovery document's jwks_uri may name and that "
	  "may be dialled at a loopback, private or other non-public "
	  "address; any other jwks_uri host must resolve to a public "
	  "address." },
	{ .name = "refresh", .type = CFG_SECONDS, .flags = CFG_RELOAD,
	  .off = OIDC_OFF(refresh_ms), .min = 1000, .max = 86400000,
	  .def = 3600000,
	  .help = "Discovery and JWKS are fetched again this often (with "
	  "up to 10% jitter)." },
	{ .name = "min_refresh_interval", .type = CFG_SECONDS,
	  .flags = CFG_RELOAD, .off = OIDC_OFF(min_refresh_ms), .min = 1000,
	  .max = 86400000, .def = 30000,
	  .help = "A token with an unknown kid triggers a fetch at most "
	  "this often; also the first retry delay after a failed fetch "
	  "(doubling up to refresh)." },
	{ .name = "leeway", .type = CFG_SECONDS, .flags = CFG_RELOAD,
	  .off = OIDC_OFF(leeway_ms), .min = 0, .max = 600000, .def = 60000,
	  .help = "Clock skew allowed when checking a token's exp, nbf and "
	  "iat." },
	{ .name = "max_discovery_bytes", .type = CFG_SIZE,
	  .flags = CFG_RELOAD, .off = OIDC_OFF(max_discovery_bytes),
	  .min = 1024, .max = 1048576, .def = 65536,
	  .help = "Largest discovery document read; larger is a failed "
	  "fetch." },
	{ .name = "max_jwks_bytes", .type = CFG_SIZE, .flags = CFG_RELOAD,
	  .off = OIDC_OFF(max_jwks_bytes), .min = 256, .max = 4194304,
	  .def = 262144,
	  .help = "Largest JWKS document read; larger is a failed fetch "
	  "(the keys held before stay)." },
	{ .name = "max_keys", .type = CFG_SIZE, .flags = CFG_RELOAD,
	  .off = OIDC_OFF(max_keys), .min = 1, .max = 1000, .def = 32,
	  .help = "Most keys in one JWKS; more is a failed fetch." },
	{ .name = "max_waiters", .type = CFG_SIZE, .flags = CFG_RELOAD,
	  .off = OIDC_OFF(max_waiters), .min = 1, .max = 100000,
	  .def = 1024,
	  .help = "Requests that may wait at once for a fetch an unknown "
	  "kid started; more are answered at once as unknown kid." },
	{ .name = NULL }
};

/*
 * The token service and the gateway's own Bearer tokens (token.c,
 * token_verify.c, identity.c).  Every key reloads: the key files are read
 * again, and the verified-token cache is emptied, so a key taken out stops
 * verifying at once.
 */
#define VK_OFF(f)	offsetof(struct config_token_vkey, f)
static const struct cfg_key cfg_token_vkey_keys[] = {
	{ .name = "file", .type = CFG_PATH, .flags = CFG_RELOAD | CFG_REQUIRED,
	  .off = VK_OFF(file), .loaded = cfg_load_verification_key,
	  .help = "The .key file of a rotated-out signing key, which "
	  "still verifies the tokens it signed (it signs nothing)." },
	{ .name = "valid_until", .type = CFG_STRING,
	  .flags = CFG_RELOAD | CFG_REQUIRED, .off = VK_OFF(valid_until),
	  .check = cfg_check_rfc3339,
	  .help = "UTC time (YYYY-MM-DDTHH:MM:SSZ) after which the key "
	  "verifies nothing and leaves /.well-known/jwks.json; set it at "
	  "least expires_in (refresh_expires_in for refresh tokens) after "
	  "the rotation." },
	{ .name = NULL }
};

#define TOK_OFF(f)	offsetof(struct config_token, f)
static const struct cfg_key cfg_token_keys[] = {
	{ .name = "signing_key", .type = CFG_PATH,
	  .flags = CFG_RELOAD | CFG_REQUIRED, .off = TOK_OFF(signing_key),
	  .loaded = cfg_load_signing_key,
	  .help = "PEM private key that signs tokens (`portcullis keygen`: "
	  "EC P-256, P-384 or RSA); its libtrust kid goes in each token." },
	{ .name = "verification_keys", .type = CFG_ARRAY, .flags = CFG_RELOAD,
	  .off = TOK_OFF(vkeys), .count_off = TOK_OFF(nvkeys), .min = 0,
	  .max = 8, .sub = cfg_token_vkey_keys,
	  .sub_size = sizeof(struct config_token_vkey), .def_doc = "none",
	  .help = "Rotated-out keys, each verifying until its valid_until." },
	{ .name = "issuer", .type = CFG_STRING, .flags = CFG_RELOAD,
	  .off = TOK_OFF(issuer), .def_str = "portcullis",
	  .check = cfg_check_service,
	  .help = "The iss of issued tokens (registry:2's "
	  "auth.token.issuer)." },
	{ .name = "service", .type = CFG_STRING, .flags = CFG_RELOAD,
	  .off = TOK_OFF(service), .def_doc = "the top-level service",
	  .check = cfg_check_service,
	  .help = "The aud of issued tokens and the service= of challenges "
	  "(registry:2's auth.token.service)." },
	{ .name = "expires_in", .type = CFG_INT, .flags = CFG_RELOAD,
	  .off = TOK_OFF(expires_in), .min = 60, .max = 86400, .def = 300,
	  .help = "Lifetime of an access token, in seconds." },
	{ .name = "refresh_expires_in", .type = CFG_INT, .flags = CFG_RELOAD,
	  .off = TOK_OFF(refresh_expires_in), .min = 60, .max = 31536000,
	  .def = 604800,
	  .help = "Lifetime of a refresh token (offline_token=true), in "
	  "seconds." },
	{ .name = "max_token_bytes", .type = CFG_SIZE, .flags = CFG_RELOAD,
	  .off = TOK_OFF(max_token_bytes), .min = 256, .max = 65536,
	  .def = 16384,
	  .help = "Longest Bearer or refresh token verified; longer is "
	  "refused unread." },
	{ .name = "leeway", .type = CFG_INT, .flags = CFG_RELOAD,
	  .off = TOK_OFF(leeway), .min = 0, .max = 600, .def = 30,
	  .help = "Clock skew allowed on exp, nbf and iat, in seconds." },
	{ .name = "max_claims", .type = CFG_SIZE, .flags = CFG_RELOAD,
	  .off = TOK_OFF(max_claims), .min = 8, .max = 4096, .def = 256,
	  .help = "String claim values a token may carry; more refuses it." },
	{ .name = "max_claim_bytes", .type = CFG_SIZE, .flags = CFG_RELOAD,
	  .off = TOK_OFF(max_claim_bytes), .min = 64, .max = 16384,
	  .def = 1024,
	  .help = "Longest claim name or value; longer refuses the token." },
	{ .name = "max_scopes", .type = CFG_SIZE, .flags = CFG_RELOAD,
	  .off = TOK_OFF(max_scopes), .min = 1, .max = 1024, .def = 32,
	  .help = "Distinct scopes one /token request may ask (and one "
	  "token's access claim may hold); more is 400." },
	{ .name = "max_body_bytes", .type = CFG_SIZE, .flags = CFG_RELOAD,
	  .off = TOK_OFF(max_body_bytes), .min = 1024, .max = 1048576,
	  .def = 65536,
	  .help = "Largest POST /token form body; larger is 413." },
	{ .name = "cache_entries", .type = CFG_SIZE, .flags = CFG_RELOAD,
	  .off = TOK_OFF(cache_entries), .min = 1, .max = 16777216,
	  .def = 10000,
	  .help = "Verified gateway tokens kept (until their exp) so "
	  "repeated requests skip the signature check." },
	{ .name = NULL }
};


/*
 * Browser sign-in (sso.c, sso_page.c; README "Sign-in for people
 * (browser)").  Every key reloads; sessions and states live in Redis and
 * outlast a reload.
 */
#define SSO_OFF(f)	offsetof(struct config_sso, f)
static const struct cfg_key cfg_sso_keys[] = {
	{ .name = "issuer", .type = CFG_STRING,
	  .flags = CFG_RELOAD | CFG_REQUIRED, .off = SSO_OFF(issuer),
	  .check = cfg_check_name,
	  .help = "Name of the identity.issuers entry people sign in at; its "
	  "discovery document gives the authorization and token endpoints, "
	  "its keys verify the id_token, its prefix, subject_claim and "
	  "groups_claim make the principal." },
	{ .name = "client_id", .type = CFG_STRING,
	  .flags = CFG_RELOAD | CFG_REQUIRED, .off = SSO_OFF(client_id),
	  .check = cfg_check_audience,
	  .help = "The gateway's client at the provider (a confidential "
	  "client, client_secret_basic); the id_token's aud must name it." },
	{ .name = "client_secret_file", .type = CFG_PATH,
	  .flags = CFG_RELOAD | CFG_REQUIRED,
	  .off = SSO_OFF(client_secret_file), .loaded = cfg_load_sso_secret,
	  .help = "File holding the client secret on one line; relative to "
	  "the configuration file. Never printed." },
	{ .name = "redirect_url", .type = CFG_STRING, .flags = CFG_RELOAD,
	  .off = SSO_OFF(redirect_url), .check = cfg_check_redirect_url,
	  .def_doc = "external_url + /oauth2/callback",
	  .help = "The redirect_uri registered at the provider: an http(s) "
	  "URL whose path is /oauth2/callback. Without it external_url is "
	  "required (the Host header is the client's to choose)." },
	{ .name = "scopes", .type = CFG_STRLIST, .flags = CFG_RELOAD,
	  .off = SSO_OFF(scopes), .count_off = SSO_OFF(nscopes), .min = 1,
	  .max = 32, .check = cfg_check_scope_token,
	  .def_doc = "[\"openid\", \"profile\", \"email\", \"groups\"]",
	  .help = "Scopes asked for; must include openid." },
	{ .name = "key_prefix", .type = CFG_STRING, .flags = CFG_RELOAD,
	  .off = SSO_OFF(key_prefix), .def_str = "portcullis:sso:",
	  .check = cfg_check_stream_key,
	  .help = "Prefix of the Redis keys of sign-in states "
	  "(<prefix>state:<state>) and sessions (<prefix>session:<SHA-256 "
	  "of the cookie>)." },
	{ .name = "cookie_name", .type = CFG_STRING, .flags = CFG_RELOAD,
	  .off = SSO_OFF(cookie_name), .def_str = "portcullis_session",
	  .check = cfg_check_cookie_name,
	  .help = "Name of the session cookie: letters, digits, '_' and "
	  "'-', at most 64." },
	{ .name = "session_lifetime", .type = CFG_SECONDS, .flags = CFG_RELOAD,
	  .off = SSO_OFF(session_ttl_ms), .min = 60000, .max = 604800000,
	  .def = 28800000,
	  .help = "How long a browser session lasts from sign-in (the "
	  "cookie's Max-Age and the Redis key's expiry)." },
	{ .name = "state_lifetime", .type = CFG_SECONDS, .flags = CFG_RELOAD,
	  .off = SSO_OFF(state_ttl_ms), .min = 10000, .max = 3600000,
	  .def = 600000,
	  .help = "How long a sign-in started at /login may take to come "
	  "back to /oauth2/callback; the state is used once." },
	{ .name = "secret_lifetime", .type = CFG_INT, .flags = CFG_RELOAD,
	  .off = SSO_OFF(secret_lifetime), .min = 0, .max = 315360000,
	  .def = 7776000,
	  .help = "Seconds a secret made on the landing page is valid "
	  "(0: until revoked)." },
	{ .name = "max_secrets", .type = CFG_SIZE, .flags = CFG_RELOAD,
	  .off = SSO_OFF(max_secrets), .min = 1, .max = 1000, .def = 20,
	  .help = "Secrets one person may hold from the landing page "
	  "(revoked and expired ones count until deleted); the list shows "
	  "at most this many." },
	{ .name = "activity_records", .type = CFG_SIZE, .flags = CFG_RELOAD,
	  .off = SSO_OFF(activity_records), .min = 0, .max = 200, .def = 20,
	  .help = "Recent audit records of the person shown on the landing "
	  "page (0: none)." },
	{ .name = "max_cookie_bytes", .type = CFG_SIZE, .flags = CFG_RELOAD,
	  .off = SSO_OFF(max_cookie_bytes), .min = 256, .max = 16384,
	  .def = 4096,
	  .help = "Longest Cookie header looked into; a longer one is "
	  "treated as no session." },
	{ .name = "max_state_bytes", .type = CFG_SIZE, .flags = CFG_RELOAD,
	  .off = SSO_OFF(max_state_bytes), .min = 43, .max = 1024, .def = 128,
	  .help = "Longest state parameter taken on the callback; longer is "
	  "400." },
	{ .name = "max_code_bytes", .type = CFG_SIZE, .flags = CFG_RELOAD,
	  .off = SSO_OFF(max_code_bytes), .min = 16, .max = 16384,
	  .def = 2048,
	  .help = "Longest authorization code taken on the callback; longer "
	  "is 400." },
	{ .name = "max_token_response_bytes", .type = CFG_SIZE,
	  .flags = CFG_RELOAD, .off = SSO_OFF(max_token_response_bytes),
	  .min = 1024, .max = 1048576, .def = 65536,
	  .help = "Largest token endpoint answer read; larger fails the "
	  "sign-in. Also the largest userinfo answer read before a secret is "
	  "made on the landing page; larger makes none (503)." },
	{ .name = "max_id_token_bytes", .type = CFG_SIZE, .flags = CFG_RELOAD,
	  .off = SSO_OFF(max_id_token_bytes), .min = 512, .max = 65536,
	  .def = 16384,
	  .help = "Longest id_token verified; longer fails the sign-in." },
	{ .name = "max_form_bytes", .type = CFG_SIZE, .flags = CFG_RELOAD,
	  .off = SSO_OFF(max_form_bytes), .min = 256, .max = 65536,
	  .def = 4096,
	  .help = "Largest form posted to the landing page (create or revoke "
	  "a secret, sign out); larger is 413." },
	{ .name = "max_provider_token_bytes", .type = CFG_SIZE,
	  .flags = CFG_RELOAD, .off = SSO_OFF(max_provider_token_bytes),
	  .min = 256, .max = 32768, .def = 16384,
	  .help = "Longest provider access token kept (sealed) in a browser "
	  "session for the userinfo re-check before a secret is made; a "
	  "longer one is not kept, and that session makes no secret (sign "
	  "in again)." },
	{ .name = "session_index_rebuild", .type = CFG_SIZE,
	  .flags = CFG_RELOAD, .off = SSO_OFF(session_index_rebuild),
	  .min = 2, .max = 100000, .def = 64,
	  .help = "Members of a person's session index (<prefix>sessions:"
	  "<subject>, for \"sign out everywhere\") at which a sign-in "
	  "rebuilds it from its live sessions; each rebuild reads every "
	  "member in one Redis script." },
	{ .name = "cli_client_id", .type = CFG_STRING, .flags = CFG_RELOAD,
	  .off = SSO_OFF(cli_client_id), .check = cfg_check_audience,
	  .def_doc = "no terminal sign-in",
	  .help = "The public client at the provider that `portcullis login` "
	  "uses (grants device_code and refresh_token); advertised at "
	  "/.well-known/portcullis. The issuer's audiences must name it: "
	  "its id_token is the password of the exchange at /token (README "
	  "\"Sign-in from a terminal\")." },
	{ .name = "recheck_interval", .type = CFG_SECONDS, .flags = CFG_RELOAD,
	  .off = SSO_OFF(recheck_interval_ms), .min = 0, .max = 3600000,
	  .def = 0,
	  .help = "How long the groups of a terminal sign-in's last check "
	  "with the provider stand in for a new one at the refresh grant "
	  "(0: every refresh asks the provider). Removing a person from a "
	  "group takes effect within this plus an access token's lifetime." },
	{ .name = "max_logins_per_minute", .type = CFG_SIZE,
	  .flags = CFG_RELOAD, .off = SSO_OFF(max_logins_per_minute),
	  .min = 0, .max = 10000000, .def = 6000,
	  .help = "Sign-ins begun at /login per minute over all instances "
	  "(counted in Redis); past it /login is 429. Each keeps a state in "
	  "Redis for state_lifetime, so this bounds them (0: no bound)." },
	{ .name = NULL }
};

#define IDENT_OFF(f)	offsetof(struct config_identity, f)
static const struct cfg_key cfg_identity_keys[] = {
	{ .name = "token", .type = CFG_PTR_OBJECT, .flags = CFG_RELOAD,
	  .off = IDENT_OFF(token), .sub = cfg_token_keys,
	  .sub_size = sizeof(struct config_token),
	  .def_doc = "no token service",
	  .help = "The Docker token service at /token and the gateway's own "
	  "Bearer tokens (README \"Token service\")." },
	{ .name = "issuers", .type = CFG_ARRAY, .flags = CFG_RELOAD,
	  .off = IDENT_OFF(issuers), .count_off = IDENT_OFF(nissuers),
	  .min = 0, .max = 32, .sub = cfg_oidc_issuer_keys,
	  .sub_size = sizeof(struct config_oidc_issuer), .def_doc = "none",
	  .help = "OpenID Connect issuers whose tokens identify callers "
	  "(README \"Identity providers\")." },
	{ .name = "idp_cache_entries", .type = CFG_SIZE, .flags = CFG_RELOAD,
	  .off = IDENT_OFF(idp_cache_entries), .min = 0, .max = 16777216,
	  .def = 10000,
	  .help = "Verified IdP tokens kept (until exp plus the issuer's "
	  "leeway, while the key that verified them is still the "
	  "issuer's) so repeated requests skip the signature check; 0 "
	  "keeps none." },
	{ .name = "sso", .type = CFG_PTR_OBJECT, .flags = CFG_RELOAD,
	  .off = IDENT_OFF(sso), .sub = cfg_sso_keys,
	  .sub_size = sizeof(struct config_sso),
	  .def_doc = "no browser sign-in",
	  .help = "Sign-in for people in a browser: /login, "
	  "/oauth2/callback, the landing page at / (README \"Sign-in for "
	  "people (browser)\"). Needs the redis section." },
	{ .name = NULL }
};

static const struct cfg_key cfg_admin_keys[] = {
	{ .name = "listen", .type = CFG_STRING, .off = CFG_OFF(admin_listen),
	  .check = cfg_check_listen, .def_doc = "none",
	  .help = "A second, plain HTTP listener (host:port, [v6addr]:port "
	  "or :port) that answers only /metrics, /readyz and /healthz, for "
	  "a monitoring network; the main listener answers them too." },
	{ .name = NULL }
};

static const struct cfg_key cfg_metrics_keys[] = {
	{ .name = "allow", .type = CFG_STRLIST, .flags = CFG_RELOAD,
	  .off = CFG_OFF(metrics_allow), .count_off = CFG_OFF(nmetrics_allow),
	  .min = 0, .max = 256, .check = cfg_check_net, .def_doc = "none",
	  .help = "Client addresses (ADDRESS or ADDRESS/PREFIX, IPv4 or "
	  "IPv6) that may read GET /metrics without a policy decision, "
	  "such as the Prometheus server's; everyone else needs the admin "
	  "action." },
	{ .name = "label_values", .type = CFG_SIZE,
	  .off = CFG_OFF(metrics_label_values), .min = 1, .max = 4096,
	  .def = 256,
	  .help = "Distinct values kept per label whose values come from "
	  "the configuration or the code (rule ids, upstream names, "
	  "failure reasons, Redis links); further values are counted "
	  "under \"_other\", so the number of series stays bounded." },
	{ .name = NULL }
};

/*
 * Rate limits (ratelimit.c, rlbucket.c); README "Rate limits".  What a
 * row cannot say (rule ids unique, actions, endpoints, methods, CIDRs,
 * known upstreams, the redis section present) cfg_finish_ratelimit()
 * checks, with the same JSON pointers.
 */
static const char *const cfg_rl_key_names[] = {
	"subject", "ip", "cidr", "repository", "subject+repository",
	"upstream", NULL
};

static const char *const cfg_rl_down_names[] = {
	"local", "open", "closed", NULL
};

#define RL_OFF(f)	offsetof(struct config_rl_rule, f)
static const struct cfg_key cfg_rl_rule_keys[] = {
	{ .name = "id", .type = CFG_STRING,
	  .flags = CFG_RELOAD | CFG_REQUIRED, .off = RL_OFF(id),
	  .help = "The rule's name in 429 messages, logs and audit records: "
	  "1 to 64 of letters, digits, '.', '_', '-', ':'; unique." },
	{ .name = "key", .type = CFG_ENUM, .flags = CFG_RELOAD | CFG_REQUIRED,
	  .off = RL_OFF(key), .choices = cfg_rl_key_names,
	  .help = "One bucket per: subject (an anonymous caller by its "
	  "address), ip, cidr (the address's network, see cidr_v4 and "
	  "cidr_v6), repository (upstream and name), subject+repository, "
	  "or upstream." },
	{ .name = "cidr_v4", .type = CFG_INT, .flags = CFG_RELOAD,
	  .off = RL_OFF(cidr_v4), .min = 0, .max = 32, .def = 24,
	  .help = "Prefix length of an IPv4 caller's network, key cidr." },
	{ .name = "cidr_v6", .type = CFG_INT, .flags = CFG_RELOAD,
	  .off = RL_OFF(cidr_v6), .min = 0, .max = 128, .def = 64,
	  .help = "Prefix length of an IPv6 caller's network: key cidr, "
	  "and an anonymous IPv6 caller's bucket for keys subject, ip and "
	  "subject+repository (128: each address its own)." },
	{ .name = "actions", .type = CFG_STRLIST, .flags = CFG_RELOAD,
	  .off = RL_OFF(actions), .count_off = RL_OFF(nactions),
	  .min = 0, .max = 6, .def_doc = "every action",
	  .help = "Which requests count, by the action the policy decided: "
	  "pull, push, delete, catalog, or *." },
	{ .name = "endpoints", .type = CFG_STRLIST, .flags = CFG_RELOAD,
	  .off = RL_OFF(endpoints), .count_off = RL_OFF(nendpoints),
	  .min = 0, .max = 8, .def_doc = "every endpoint",
	  .help = "Which requests count, by endpoint: manifest, blob, tags, "
	  "referrers, upload_start, upload, catalog (Docker Hub counts "
	  "manifest GETs: [\"manifest\"] with methods [\"GET\"])." },
	{ .name = "methods", .type = CFG_STRLIST, .flags = CFG_RELOAD,
	  .off = RL_OFF(methods), .count_off = RL_OFF(nmethods),
	  .min = 0, .max = 8, .def_doc = "every method",
	  .help = "Which requests count, by method: GET, HEAD, PUT, POST, "
	  "PATCH, DELETE." },
	{ .name = "upstreams", .type = CFG_STRLIST, .flags = CFG_RELOAD,
	  .off = RL_OFF(upstreams), .count_off = RL_OFF(nupstreams),
	  .min = 0, .max = 256, .def_doc = "every upstream",
	  .help = "Upstream names the rule is limited to." },
	{ .name = "count_cache_hits", .type = CFG_BOOL, .flags = CFG_RELOAD,
	  .off = RL_OFF(count_cache_hits), .def = 1,
	  .help = "Whether a request the cache holds counts; false counts "
	  "only what would reach the upstream (decided before the cache "
	  "stage from what the cache holds: a blob or manifest by digest "
	  "stored and linked to the repository, a tag whose record is "
	  "fresh)." },
	{ .name = "count", .type = CFG_SIZE,
	  .flags = CFG_RELOAD | CFG_REQUIRED, .off = RL_OFF(count),
	  .min = 1, .max = 1000000000,
	  .help = "Requests allowed per window, on every instance "
	  "together." },
	{ .name = "window", .type = CFG_SECONDS,
	  .flags = CFG_RELOAD | CFG_REQUIRED, .off = RL_OFF(window_ms),
	  .min = 1, .max = 2073600000LL,
	  .help = "The window count is per, in seconds (Docker Hub: 100 "
	  "per 21600)." },
	{ .name = "burst", .type = CFG_SIZE, .flags = CFG_RELOAD,
	  .off = RL_OFF(burst), .min = 1, .max = 1000000000, .def = 0,
	  .def_doc = "count",
	  .help = "Requests allowed at once from a full bucket; the bucket "
	  "refills at count per window." },
	{ .name = "exempt_groups", .type = CFG_STRLIST, .flags = CFG_RELOAD,
	  .off = RL_OFF(exempt_groups), .count_off = RL_OFF(nexempt_groups),
	  .min = 0, .max = 256, .def_doc = "none",
	  .help = "Callers in any of these groups are not counted." },
	{ .name = "exempt_subjects", .type = CFG_STRLIST, .flags = CFG_RELOAD,
	  .off = RL_OFF(exempt_subjects),
	  .count_off = RL_OFF(nexempt_subjects), .min = 0, .max = 256,
	  .def_doc = "none",
	  .help = "Subjects (exactly as in audit records) not counted." },
	{ .name = "exempt_cidrs", .type = CFG_STRLIST, .flags = CFG_RELOAD,
	  .off = RL_OFF(exempt_cidrs), .count_off = RL_OFF(nexempt_cidrs),
	  .min = 0, .max = CONFIG_RL_CIDRS_MAX, .def_doc = "none",
	  .help = "Client networks (ADDRESS/PREFIX, IPv4 or IPv6) not "
	  "counted." },
	{ .name = "on_redis_down", .type = CFG_ENUM, .flags = CFG_RELOAD,
	  .off = RL_OFF(on_redis_down), .def = CONFIG_RL_DOWN_LOCAL,
	  .choices = cfg_rl_down_names,
	  .help = "When Redis is down or slower than redis_budget: local "
	  "(each instance enforces count/N with its own bucket), open (not "
	  "limited) or closed (refused with 429)." },
	{ .name = NULL }
};

#define RLS_OFF(f)	offsetof(struct config_ratelimit, f)
static const struct cfg_key cfg_ratelimit_keys[] = {
	{ .name = "rules", .type = CFG_ARRAY, .flags = CFG_RELOAD,
	  .off = RLS_OFF(rules), .count_off = RLS_OFF(nrules),
	  .min = 0, .max = 256, .sub = cfg_rl_rule_keys,
	  .sub_size = sizeof(struct config_rl_rule), .def_doc = "none",
	  .help = "Limit rules; every rule that applies to a request "
	  "counts it, and the strictest refusing one answers." },
	{ .name = "key_prefix", .type = CFG_STRING, .flags = CFG_RELOAD,
	  .off = RLS_OFF(key_prefix), .def_str = "portcullis:rl:",
	  .check = cfg_check_stream_key,
	  .help = "Prefix of the Redis keys of the shared buckets (prefix + "
	  "rule id + ':' + key) and of the heartbeat set (prefix + "
	  "\"instances\")." },
	{ .name = "redis_budget", .type = CFG_SECONDS, .flags = CFG_RELOAD,
	  .off = RLS_OFF(redis_budget_ms), .min = 1, .max = 10000,
	  .def = 50,
	  .help = "Longest wait for Redis's answer on a request; past it "
	  "the request is decided by each rule's on_redis_down." },
	{ .name = "instances", .type = CFG_INT, .flags = CFG_RELOAD,
	  .off = RLS_OFF(instances), .min = 0, .max = 1024, .def = 0,
	  .def_doc = "learned",
	  .help = "Gateway instances sharing the limits (N of on_redis_down "
	  "local); 0 learns it from the instances' heartbeats in Redis "
	  "(1 until learned)." },
	{ .name = "heartbeat_interval", .type = CFG_SECONDS,
	  .off = RLS_OFF(heartbeat_interval_ms), .min = 100, .max = 600000,
	  .def = 5000,
	  .help = "How often an instance writes its heartbeat; one missing "
	  "for three intervals no longer counts." },
	{ .name = "local_buckets", .type = CFG_SIZE,
	  .off = RLS_OFF(local_buckets), .min = 1, .max = 16777216,
	  .def = 65536,
	  .help = "In-process buckets kept for on_redis_down local (least "
	  "recently used dropped first: such a key starts again full)." },
	{ .name = NULL }
};

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

/* An ACL user name: printable, no spaces (ACL SETUSER splits on them). */
static const char *
cfg_check_redis_user(const char *s)
{
	if (!cfg_printable(s, 128, 0))
		return "must be 1 to 128 printable ASCII characters, "
		    "without spaces, quotes or backslashes";
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

/* An address list entry of metrics.allow. */
static const char *
cfg_check_net(const char *s)
{
	struct metrics_net	n;

	if (metrics_net_parse(s, &n) != NULL)
		return "must be a numeric address or network (ADDRESS/PREFIX, "
		    "no bits set after the prefix)";
	return NULL;
}

static const char *
cfg_check_spool_file(const char *s)
{
	if (*s == '\0' || strlen(s) > 3072 || s[strlen(s) - 1] == '/')
		return "must be a file name of at most 3072 bytes";
	return NULL;
}

/* user, group: a POSIX portable name (or a number), as useradd takes. */
static const char *
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
static const char *
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
static const char *
cfg_check_scope_token(const char *s)
{
	if (!cfg_printable(s, 128, 0))
		return "must be 1 to 128 printable ASCII characters, no "
		    "spaces, quotes or backslashes";
	return NULL;
}

/* A cookie name: an RFC 6265 token, kept to a safe subset. */
static const char *
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

/*
 * An issuer identifier (OIDC Discovery 3, RFC 8414 2): https, no query,
 * fragment or credentials; a path is allowed.  Plain http only for a
 * numeric loopback host, so that tests can run a provider without TLS:
 * nothing on the network path can swap the keys then.
 */
static const char *
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
static const char *
cfg_check_claim(const char *s)
{
	if (!cfg_printable(s, 64, 0))
		return "must be 1 to 64 printable ASCII characters, without "
		    "spaces, quotes or backslashes";
	return NULL;
}

/* An audience, a prefix or a required claim's value. */
static const char *
cfg_check_audience(const char *s)
{
	if (!cfg_printable(s, 255, 0))
		return "must be 1 to 255 printable ASCII characters, without "
		    "spaces, quotes or backslashes";
	return NULL;
}

/* The asymmetric algorithms the JWT verifier implements (SPEC). */
static const char *
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
static const char *
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
