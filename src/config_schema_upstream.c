/*
 * config_schema_upstream.c: the schema rows of the registries behind the
 * gateway (the upstreams array) and of the pull-through cache of what they
 * serve.  cfg_root_keys (config_schema.c) names these tables; the rules of
 * every schema table are stated there.
 */
#include <stddef.h>

#include "config.h"
#include "config_int.h"

#define UP_OFF(f)	offsetof(struct config_upstream, f)
const struct cfg_key cfg_upstream_keys[] = {
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

static const char *const cfg_sendfile_names[] = {
	"auto", "on", "off", NULL
};

#define CACHE_OFF(f)	offsetof(struct config_cache, f)
const struct cfg_key cfg_cache_keys[] = {
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
