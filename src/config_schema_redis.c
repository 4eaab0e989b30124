/*
 * config_schema_redis.c: the schema rows of the sections that live in
 * Redis: the shared Redis link (and its Sentinel), the audit stream and
 * its spool, gateway secrets, revocation and the rate limits.
 * cfg_root_keys (config_schema.c) names these tables; the rules of every
 * schema table are stated there.
 */
#include <stddef.h>

#include "config.h"
#include "config_int.h"

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
const struct cfg_key cfg_redis_keys[] = {
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

static const char *const cfg_fsync_names[] = {
	"always", "interval", "never", NULL
};

static const char *const cfg_audit_failure_names[] = {
	"drop", "reject", NULL
};

#define AUDIT_OFF(f)	offsetof(struct config_audit, f)
const struct cfg_key cfg_audit_keys[] = {
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

static const char *const cfg_secrets_fail_names[] = {
	"fail_closed", "cached", NULL
};

/* Gateway secrets (secrets.c, secrets_cli.c); README "Secrets". */
const struct cfg_key cfg_secrets_keys[] = {
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
const struct cfg_key cfg_revocation_keys[] = {
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
const struct cfg_key cfg_ratelimit_keys[] = {
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
