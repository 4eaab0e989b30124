/*
 * config_schema_server.c: the schema rows of the gateway's own serving:
 * the listener and its TLS, the limits checked before allocation,
 * buffering, timeouts, logging, the admin listener and who may read the
 * metrics.  cfg_root_keys (config_schema.c) names these tables; the rules
 * of every schema table are stated there.
 */
#include <stddef.h>

#include "config.h"
#include "config_int.h"

static const char *const cfg_verify_names[] = {
	"none", "optional", "require", NULL
};

const char *const cfg_level_names[] = {
	"error", "warn", "info", "debug", NULL
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

const struct cfg_key cfg_listen_keys[] = {
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

const struct cfg_key cfg_limits_keys[] = {
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

const struct cfg_key cfg_buffers_keys[] = {
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

const struct cfg_key cfg_timeouts_keys[] = {
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

const struct cfg_key cfg_log_keys[] = {
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

const struct cfg_key cfg_admin_keys[] = {
	{ .name = "listen", .type = CFG_STRING, .off = CFG_OFF(admin_listen),
	  .check = cfg_check_listen, .def_doc = "none",
	  .help = "A second, plain HTTP listener (host:port, [v6addr]:port "
	  "or :port) that answers only /metrics, /readyz and /healthz, for "
	  "a monitoring network; the main listener answers them too." },
	{ .name = NULL }
};

const struct cfg_key cfg_metrics_keys[] = {
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
