/*
 * config.h: the gateway's configuration, loaded from a JSON file into an
 * immutable, reference-counted snapshot.  One schema table per object type
 * drives parsing, defaults, validation, reload checks and the reference
 * documentation.  A snapshot that config_load() returns has passed every
 * check; a reload builds a new one and swaps it in whole, while requests in
 * flight keep a reference to the one they started with.  Secrets are read
 * from files named in the configuration and are never printed.
 */
#ifndef PC_CONFIG_H
#define PC_CONFIG_H

#include <stddef.h>
#include <stdio.h>

#include "url.h"

struct policy;
struct pol_src;
struct jwk_set;
struct jwk_key;

/* Largest configuration file config_load() reads. */
#define CONFIG_MAX_FILE_BYTES	(1024 * 1024)

enum config_verify {
	CONFIG_VERIFY_NONE,
	CONFIG_VERIFY_OPTIONAL,
	CONFIG_VERIFY_REQUIRE
};

/* secrets.redis_unavailable */
enum {
	SECRETS_FAIL_CLOSED,	/* every secret refused */
	SECRETS_FAIL_CACHED	/* a secret verified recently still works */
};

enum config_log_level {
	CONFIG_LOG_ERROR,
	CONFIG_LOG_WARN,
	CONFIG_LOG_INFO,
	CONFIG_LOG_DEBUG
};

struct config_tls {
	char			*cert_file;
	char			*key_file;
	char			*client_ca_file;	/* NULL: none */
	enum config_verify	 verify_client;
};

enum config_sendfile {
	CONFIG_SENDFILE_AUTO,
	CONFIG_SENDFILE_ON,
	CONFIG_SENDFILE_OFF
};
/* cache.sendfile_min: measured, README "Benchmarks". */
#define SENDFILE_MIN_DEFAULT	65536

/* The pull-through cache; absent from the file means no cache. */
struct config_cache {
	char			*dir;
	size_t			 max_bytes;
	int			 tag_ttl_ms;
	int			 negative_ttl_ms;
	int			 sendfile;	/* enum config_sendfile */
	size_t			 sendfile_min;	/* auto: copy below */
	size_t			 send_window;
	size_t			 memory_bytes;	/* small manifests */
	size_t			 max_tag_records;
	int			 tag_variants;
	size_t			 negative_entries;
	size_t			 max_fills;
	size_t			 max_fills_per_client;
	size_t			 digest_threads;
	double			 fill_max_fraction;
	double			 fill_finish_fraction;
	size_t			 max_repo_links;
	size_t			 max_confirms;
	int			 referrers_ttl_ms; /* 0: not cached */
	size_t			 referrers_entries;
	size_t			 referrers_bytes;	/* their documents */
};

enum config_fsync {
	CONFIG_FSYNC_ALWAYS,
	CONFIG_FSYNC_INTERVAL,
	CONFIG_FSYNC_NEVER
};

enum config_audit_failure {
	CONFIG_AUDIT_DROP,
	CONFIG_AUDIT_REJECT
};

/*
 * The shared Redis settings (README "Redis"): where, as whom, which
 * database, how long to wait.  Absent from the file: none (the audit
 * then uses audit.redis, or its default, without AUTH).
 */
/* Redis Sentinel: where the links ask for the master (README "Redis"). */
struct config_sentinel {
	char			**addresses;	/* host:port, numeric */
	size_t			 naddresses;
	char			*master_name;
	char			*username;	/* NULL: the default user */
	char			*password_file;	/* NULL: no AUTH */
	char			*password;	/* never printed */
};

struct config_redis {
	char			*address;	/* host:port, numeric */
	char			 host[256];
	int			 port;
	int			 database;
	char			*username;	/* NULL: the default user */
	char			*password_file;	/* NULL: no AUTH */
	char			*password;	/* from password_file; never
						   printed */
	int			 connect_timeout_ms;
	int			 command_timeout_ms;
	int			 reconnect_min_ms;
	int			 reconnect_max_ms;
	struct config_sentinel	*sentinel;	/* NULL: address is the
						   master */
};

/* The audit stream in Redis; absent from the file means no audit. */
struct config_audit {
	char			*redis;		/* host:port, numeric; absent:
						   redis.address */
	char			 redis_host[256];
	int			 redis_port;
	char			*stream;
	size_t			 max_len;	/* 0: no length cap */
	size_t			 max_age;	/* seconds; 0: no age cap */
	char			*spool_file;	/* resolved */
	size_t			 spool_max_bytes;
	int			 fsync;		/* enum config_fsync */
	int			 on_failure;	/* enum config_audit_failure */
	char			**admin_addresses;
	size_t			 nadmin_addresses;
	size_t			 queue_max;
	size_t			 max_inflight;
	int			 wait_replicas;	/* WAIT after each batch;
						   0: none */
	int			 timeout_ms;
	size_t			 max_index_keys;	/* index streams kept */
	int			 wal;		/* spool is a write-ahead log */
};

struct config_upstream {
	char			*name;
	char			*url;		/* as written */
	struct url		 u;		/* parsed; path is "" or "/" */
	char			*prefix;	/* NULL or one name component */
	char			**hosts;	/* matched against ns= */
	size_t			 nhosts;
	int			 docker_hub;	/* alpine: library/alpine */
	int			 is_default;
	char			*ca_file;	/* NULL: system CAs */
	char			*credentials_file;	/* NULL: anonymous */
	char			*username;	/* from credentials_file */
	char			*password;	/* from credentials_file */
	int			 pool_max_idle;
	int			 cache;		/* use the cache (when any) */
	int			 tag_ttl_ms;	/* -1: the cache's tag_ttl */
	char			**redirect_allow;	/* host[:port] */
	size_t			 nredirect_allow;
	char			**auth_hosts;		/* host[:port] */
	size_t			 nauth_hosts;
	int			 quota_floor;	/* -1: off (ratelimit.c) */
	int			 quota_hold_ms;
	int			 max_concurrent;	/* 0: no cap, upcap.c */
	int			 queue;
	int			 queue_timeout_ms;
};

/* A claim an IdP token must carry with this value (identity.issuers). */
struct config_oidc_claim {
	char			*claim;
	char			*equals;
};

/* An OpenID Connect issuer whose tokens identify callers (oidc.c). */
struct config_oidc_issuer {
	char			*name;
	char			*issuer;	/* exactly as the IdP says it */
	struct url		 u;		/* parsed issuer */
	char			**audiences;
	size_t			 naudiences;
	char			*subject_claim;
	char			*groups_claim;	/* NULL: no groups */
	char			*prefix;	/* NULL: none */
	char			**algorithms;	/* "RS256", ... */
	size_t			 nalgorithms;
	struct config_oidc_claim *required_claims;
	size_t			 nrequired_claims;
	char			*ca_file;	/* NULL: system CAs */
	char			**jwks_hosts;	/* host[:port] */
	size_t			 njwks_hosts;
	int			 refresh_ms;
	int			 min_refresh_ms;
	int			 leeway_ms;
	size_t			 max_discovery_bytes;
	size_t			 max_jwks_bytes;
	size_t			 max_keys;
	size_t			 max_waiters;
};

/* A rotated-out token key (identity.token.verification_keys). */
struct config_token_vkey {
	char			*file;
	char			*valid_until;	/* RFC 3339, UTC */
	struct jwk_key		*key;	/* loaded, joins keys */
};

/*
 * The token service (token.c) and the gateway-token half of the identity
 * stage (identity.token).  keys is built at load from signing_key (first,
 * the signer) and verification_keys (each with not_after), so a reload
 * rereads the files and a request keeps its snapshot's keys.
 */
struct config_token {
	char			*issuer;
	char			*service;	/* NULL: top-level */
	char			*signing_key;
	struct config_token_vkey *vkeys;
	size_t			 nvkeys;
	int			 expires_in;	/* seconds */
	int			 refresh_expires_in;	/* seconds */
	size_t			 max_token_bytes;
	int			 leeway;	/* seconds */
	size_t			 max_claims;
	size_t			 max_claim_bytes;
	size_t			 max_scopes;
	size_t			 max_body_bytes;
	size_t			 cache_entries;
	struct jwk_set		*keys;		/* [0] signs */
};

/*
 * Sign-in for people in a browser (identity.sso; sso.c, sso_page.c):
 * the authorization-code flow against one configured issuer, sessions
 * and the landing page.
 */
struct config_sso {
	char			*issuer;	/* an identity.issuers name */
	char			*client_id;
	char			*client_secret_file;
	char			*client_secret;	/* from the file; never
						   printed */
	char			*redirect_url;	/* NULL: external_url + */
						/* /oauth2/callback */
	char			**scopes;	/* NULL: the default */
	size_t			 nscopes;
	char			*key_prefix;	/* Redis keys */
	char			*cookie_name;
	int			 session_ttl_ms;
	int			 state_ttl_ms;
	int			 secret_lifetime;	/* seconds; 0: none */
	size_t			 max_secrets;	/* per subject */
	size_t			 activity_records;
	size_t			 max_cookie_bytes;
	size_t			 max_state_bytes;
	size_t			 max_code_bytes;
	size_t			 max_token_response_bytes;
	size_t			 max_id_token_bytes;
	size_t			 max_form_bytes;
	size_t			 max_provider_token_bytes;
	size_t			 session_index_rebuild;	/* members */
	/* Terminal sign-in (token_idp.c): the public device-grant client. */
	char			*cli_client_id;		/* NULL: none */
	int			 recheck_interval_ms;	/* 0: every refresh */
	size_t			 max_logins_per_minute;
};

/* Who callers are: the identity stage's settings. */
struct config_identity {
	struct config_oidc_issuer *issuers;
	size_t			 nissuers;
	struct config_token	*token;		/* NULL: no token service */
	size_t			 idp_cache_entries;	/* 0: none */
	struct config_sso	*sso;		/* NULL: no browser sign-in */
};

/* ratelimit.rules[].key: what one bucket is for (README "Rate limits"). */
enum config_rl_key {
	CONFIG_RL_SUBJECT,		/* anonymous: by address */
	CONFIG_RL_IP,
	CONFIG_RL_CIDR,			/* the address's network */
	CONFIG_RL_REPOSITORY,		/* upstream and its repository */
	CONFIG_RL_SUBJECT_REPOSITORY,
	CONFIG_RL_UPSTREAM
};

/* ratelimit.rules[].on_redis_down */
enum config_rl_down {
	CONFIG_RL_DOWN_LOCAL,		/* limit/N in this process */
	CONFIG_RL_DOWN_OPEN,		/* not limited */
	CONFIG_RL_DOWN_CLOSED		/* every counted request refused */
};

#define CONFIG_RL_CIDRS_MAX	64

struct config_rl_cidr {
	int			 af;
	int			 plen;
	unsigned char		 net[16];
};

/* One rate-limit rule; the fields after on_redis_down are compiled. */
struct config_rl_rule {
	char			*id;
	int			 key;		/* enum config_rl_key */
	int			 cidr_v4;	/* prefix lengths, key cidr */
	int			 cidr_v6;
	char			**actions;
	size_t			 nactions;
	char			**endpoints;
	size_t			 nendpoints;
	char			**methods;
	size_t			 nmethods;
	char			**upstreams;
	size_t			 nupstreams;
	int			 count_cache_hits;
	size_t			 count;
	int			 window_ms;
	size_t			 burst;		/* 0: count */
	char			**exempt_groups;
	size_t			 nexempt_groups;
	char			**exempt_subjects;
	size_t			 nexempt_subjects;
	char			**exempt_cidrs;
	size_t			 nexempt_cidrs;
	int			 on_redis_down;	/* enum config_rl_down */

	unsigned		 action_mask;	/* enum pol_action bits */
	unsigned		 endpoint_mask;	/* 1 << enum oci_ep */
	unsigned		 method_mask;	/* 1 << enum http_method */
	struct config_rl_cidr	 exempt[CONFIG_RL_CIDRS_MAX];
};

/* The ratelimit section; absent from the file means no limits. */
struct config_ratelimit {
	struct config_rl_rule	*rules;
	size_t			 nrules;
	char			*key_prefix;
	int			 redis_budget_ms;
	int			 instances;	/* 0: learned (heartbeat) */
	int			 heartbeat_interval_ms;
	size_t			 local_buckets;
};

struct config {
	int			 refcnt;
	char			*path;		/* NULL: from a string */

	char			*listen_address;
	char			 listen_host[256];	/* "": any address */
	int			 listen_port;
	struct config_tls	*tls;		/* NULL: plain HTTP */

	char			*external_url;	/* NULL: from Host header */
	char			*service;
	char			*instance_id;

	size_t			 header_bytes;
	size_t			 header_count;
	size_t			 uri_bytes;
	size_t			 max_connections;
	size_t			 max_connections_per_ip;
	size_t			 linger_bytes;
	size_t			 manifest_bytes;
	int			 redirects;	/* hops followed */
	size_t			 upstream_header_bytes;
	size_t			 upstream_header_count;
	size_t			 token_bytes;
	size_t			 catalog_names;	/* per _catalog answer */
	size_t			 catalog_pages;	/* upstream pages per answer */
	size_t			 catalog_page_bytes;
	size_t			 tag_list_names; /* tags read per list */
	size_t			 tag_list_pages; /* upstream pages per list */
	size_t			 upload_sessions; /* uploads tracked */
	int			 upload_ttl_ms;	/* in Redis */
	int			 referrers_fallback_ms; /* API absent, kept */
	size_t			 referrers_attempts; /* index writes */
	size_t			 referrers_pages; /* upstream pages merged */
	size_t			 high_watermark;
	int			 splice;	/* bodies socket to socket */

	int			 header_timeout_ms;
	int			 idle_timeout_ms;
	int			 body_timeout_ms;
	int			 upstream_connect_timeout_ms;
	int			 upstream_response_timeout_ms;
	int			 drain_timeout_ms;
	int			 linger_timeout_ms;
	int			 worker_restart_ms;
	int			 worker_stall_ms;
	int			 cache_peer_wait_ms;

	int			 log_level;	/* enum config_log_level */
	char			*log_file;	/* NULL: stderr; resolved */
	char			*run_user;	/* NULL: no privilege drop */
	char			*run_group;	/* NULL: the user's */
	size_t			 workers;	/* 0: one per core */
	size_t			 worker_balance; /* 0: off */

	struct config_cache	*cache;		/* NULL: no cache */
	struct config_audit	*audit;		/* NULL: no audit */
	struct config_redis	*redis;		/* NULL: no shared section */
	struct config_identity	*identity;	/* NULL: no IdPs */
	struct config_ratelimit	*ratelimit;	/* NULL: no limits */

	/* secrets and revocation (README "Secrets", "Revocation"). */
	char			*secrets_key_prefix;
	int			 secrets_redis_unavailable; /* SECRETS_FAIL_ */
	int			 secrets_cache_ttl_ms;
	int			 secrets_cache_entries;
	int			 secrets_last_used_interval_ms;
	int			 secrets_max_groups;
	char			*revocation_key;
	char			*revocation_channel;
	int			 revocation_max_subjects;
	int			 revocation_resync_interval_ms;

	/* The admin listener (README "Metrics"); NULL: none. */
	char			*admin_listen;
	char			 admin_listen_host[256]; /* "": any */
	int			 admin_listen_port;

	/* GET /metrics (README "Metrics"). */
	char			**metrics_allow;	/* networks */
	size_t			 nmetrics_allow;
	size_t			 metrics_label_values;

	/* Compiled access policy; never NULL (no rules: deny all). */
	struct policy		*policy;
	struct pol_src		*policy_src;	/* as written; NULL: none */

	struct config_upstream	*upstreams;	/* at least one */
	size_t			 nupstreams;
	int			 default_upstream;	/* index or -1 */
};

/* Load and validate the file at path; NULL and every error in *cause. */
struct config	*config_load(const char *, char **);
/* Load and validate a JSON document held in memory; as config_load(). */
struct config	*config_load_string(const char *, const char *, char **);
/* Take another reference to a snapshot. */
void		 config_ref(struct config *);
/* Drop a reference; the snapshot is freed with its last one. */
void		 config_unref(struct config *);
/* Report keys a reload may not change that differ between two snapshots. */
int		 config_reload_check(const struct config *,
		    const struct config *, char **);
/* Find the upstream whose prefix is the given name component. */
const struct config_upstream *
		 config_upstream_by_prefix(const struct config *, const char *,
		    size_t);
/* Find the upstream serving a registry host name (containerd's ns=). */
const struct config_upstream *
		 config_upstream_by_host(const struct config *, const char *,
		    size_t);
/* Name of a log level, as written in the configuration. */
const char	*config_log_level_name(int);
/* Print the configuration reference as a Markdown table. */
void		 config_reference(FILE *);

/* master.c: the worker this process is, or -1. */
extern int	config_worker;
void		config_worker_identity(struct config *, int);

#endif /* PC_CONFIG_H */
