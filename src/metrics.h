/*
 * metrics.h: the gateway's metrics registry (leaf: no libevent, no
 * project header).  Every metric is declared once, in METRICS_TABLE
 * below: its name, type, label set and help text.  The registry keeps
 * the values of one process as one flat array of uint64_t (counters,
 * gauges as int64_t bit patterns, histogram buckets, sums in
 * microseconds and counts), so a later multi-worker master can sum the
 * workers' arrays element by element; the values of labels that come
 * from the configuration (rule ids, upstream names, ...) are kept in
 * per-dimension name tables of a bounded size, beyond which a value is
 * counted under METRICS_OTHER.  metrics_render() writes the Prometheus
 * text exposition format 0.0.4; the README's metric list is generated
 * from the same table (`portcullis metrics-reference`).
 *
 * Hooks in other files are one call each: metrics_add(m, M_X, series,
 * n), with series from metrics_series() or 0 for an unlabelled metric.
 */
#ifndef PC_METRICS_H
#define PC_METRICS_H

#include <stddef.h>
#include <stdint.h>

/* The value a bounded label takes once its name table is full. */
#define METRICS_OTHER		"_other"
#define METRICS_NAME_MAX	128	/* a label value's bytes, at most */
#define METRICS_LABELS_MAX	3	/* labels of one metric */

enum metrics_type { MT_COUNTER, MT_GAUGE, MT_HISTOGRAM };

/*
 * Label dimensions.  Static ones have their values listed here; dynamic
 * ones (D_DYN) take theirs from the configuration at run time, bounded
 * by metrics.label_values.
 * X(enum, label name, values or NULL for a dynamic one)
 */
#define METRICS_DIMS(X)							\
	X(D_KIND, "kind", metrics_kind_names)				\
	X(D_METHOD, "method", metrics_method_names)			\
	X(D_CLASS, "class", metrics_class_names)			\
	X(D_CACHE, "result", metrics_cache_names)			\
	X(D_AUTH, "result", metrics_auth_names)				\
	X(D_AUDIT, "outcome", metrics_audit_names)			\
	X(D_UPSTREAM, "upstream", NULL)					\
	X(D_REASON, "reason", NULL)					\
	X(D_RULE, "rule", NULL)						\
	X(D_LINK, "link", NULL)						\
	X(D_LIMIT, "limit", NULL)					\
	X(D_SSO, "result", NULL)

#define METRICS_DIM_ENUM(e, n, v)	e,
enum metrics_dim {
	METRICS_DIMS(METRICS_DIM_ENUM)
	D__MAX
};
#undef METRICS_DIM_ENUM

/* Endpoint kinds: the OCI endpoints (router.h) and the gateway's own. */
#define METRICS_KINDS(X)						\
	X(MK_BASE, "base")						\
	X(MK_CATALOG, "catalog")					\
	X(MK_MANIFEST, "manifest")					\
	X(MK_BLOB, "blob")						\
	X(MK_UPLOAD_START, "upload_start")				\
	X(MK_UPLOAD, "upload")						\
	X(MK_TAGS, "tags")						\
	X(MK_REFERRERS, "referrers")					\
	X(MK_TOKEN, "token")						\
	X(MK_ADMIN, "admin")						\
	X(MK_HEALTH, "health")		/* /healthz, /readyz */	\
	X(MK_METRICS, "metrics")					\
	X(MK_LOGIN, "login")		/* browser SSO, later */	\
	X(MK_OTHER, "other")		/* not found, malformed */

#define METRICS_METHODS(X)						\
	X(MM_GET, "GET")						\
	X(MM_HEAD, "HEAD")						\
	X(MM_PUT, "PUT")						\
	X(MM_POST, "POST")						\
	X(MM_PATCH, "PATCH")						\
	X(MM_DELETE, "DELETE")						\
	X(MM_OTHER, "other")

#define METRICS_CLASSES(X)						\
	X(MC_1XX, "1xx")						\
	X(MC_2XX, "2xx")						\
	X(MC_3XX, "3xx")						\
	X(MC_4XX, "4xx")						\
	X(MC_5XX, "5xx")						\
	X(MC_NONE, "none")		/* no status: aborted */

#define METRICS_CACHE(X)						\
	X(MCR_HIT, "hit")						\
	X(MCR_MISS, "miss")						\
	X(MCR_STALE, "stale")						\
	X(MCR_COALESCED, "coalesced")

#define METRICS_AUTH(X)							\
	X(MA_OK, "ok")							\
	X(MA_FAILED, "failed")

#define METRICS_AUDIT(X)						\
	X(MAU_WRITTEN, "written")	/* acknowledged by Redis */	\
	X(MAU_DUPLICATE, "duplicate")	/* Redis had it already */	\
	X(MAU_SPOOLED, "spooled")					\
	X(MAU_REPLAYED, "replayed")	/* from the spool */		\
	X(MAU_DROPPED, "dropped")					\
	X(MAU_REJECTED, "rejected")	/* request refused, 503 */

#define METRICS_ENUM(e, n)	e,
enum metrics_kind { METRICS_KINDS(METRICS_ENUM) MK__MAX };
enum metrics_method { METRICS_METHODS(METRICS_ENUM) MM__MAX };
enum metrics_class { METRICS_CLASSES(METRICS_ENUM) MC__MAX };
enum metrics_cache { METRICS_CACHE(METRICS_ENUM) MCR__MAX };
enum metrics_auth { METRICS_AUTH(METRICS_ENUM) MA__MAX };
enum metrics_audit { METRICS_AUDIT(METRICS_ENUM) MAU__MAX };
#undef METRICS_ENUM

/* Label sets: X(enum, number of labels, their dimensions in order). */
#define METRICS_LSETS(X)						\
	X(L_NONE, 0, D__MAX, D__MAX, D__MAX)				\
	X(L_REQ, 3, D_KIND, D_METHOD, D_CLASS)				\
	X(L_KIND, 1, D_KIND, D__MAX, D__MAX)				\
	X(L_CACHE, 1, D_CACHE, D__MAX, D__MAX)				\
	X(L_AUTH, 1, D_AUTH, D__MAX, D__MAX)				\
	X(L_AUDIT, 1, D_AUDIT, D__MAX, D__MAX)				\
	X(L_UPSTREAM, 1, D_UPSTREAM, D__MAX, D__MAX)			\
	X(L_UPSTREAM_CLASS, 2, D_UPSTREAM, D_CLASS, D__MAX)		\
	X(L_REASON, 1, D_REASON, D__MAX, D__MAX)			\
	X(L_RULE, 1, D_RULE, D__MAX, D__MAX)				\
	X(L_LINK, 1, D_LINK, D__MAX, D__MAX)				\
	X(L_LIMIT, 1, D_LIMIT, D__MAX, D__MAX)				\
	X(L_SSO, 1, D_SSO, D__MAX, D__MAX)

#define METRICS_LSET_ENUM(e, n, d0, d1, d2)	e,
enum metrics_lset { METRICS_LSETS(METRICS_LSET_ENUM) L__MAX };
#undef METRICS_LSET_ENUM

/*
 * Every metric, once.  X(enum, type, name, label set, help).  Rows
 * marked "not wired yet" are declared so that dashboards can be written
 * against them; they stay 0 until their stage lands.
 */
#define METRICS_TABLE(X)						\
	X(M_REQUESTS, MT_COUNTER, "portcullis_requests_total", L_REQ,	\
	  "Requests answered, by endpoint kind, method and status class.") \
	X(M_REQUEST_SECONDS, MT_HISTOGRAM,				\
	  "portcullis_request_duration_seconds", L_KIND,		\
	  "Time from a request's head to its end, by endpoint kind.")	\
	X(M_BYTES_IN, MT_COUNTER, "portcullis_received_bytes_total", L_KIND, \
	  "Request body bytes received from clients, by endpoint kind.") \
	X(M_BYTES_OUT, MT_COUNTER, "portcullis_sent_bytes_total", L_KIND, \
	  "Response body bytes sent to clients, by endpoint kind.")	\
	X(M_CONNS_OPEN, MT_GAUGE, "portcullis_connections_open", L_NONE, \
	  "Client connections open now.")				\
	X(M_CONNS, MT_COUNTER, "portcullis_connections_total", L_NONE,	\
	  "Client connections accepted.")				\
	X(M_CACHE_REQUESTS, MT_COUNTER, "portcullis_cache_requests_total", \
	  L_CACHE, "Cache lookups by result: hit (served from disk), miss " \
	  "(a fill started), stale (a cached tag served while the upstream " \
	  "could not be asked), coalesced "				\
	  "(joined a fill already running).")				\
	X(M_CACHE_SENT, MT_COUNTER, "portcullis_cache_sent_bytes_total", \
	  L_CACHE, "Response body bytes sent by cached requests, by "	\
	  "result.")							\
	X(M_CACHE_BYTES, MT_GAUGE, "portcullis_cache_bytes", L_NONE,	\
	  "Bytes of published cache entries on disk.")			\
	X(M_CACHE_MAX_BYTES, MT_GAUGE, "portcullis_cache_max_bytes", L_NONE, \
	  "The cache's size bound (cache.max_bytes).")			\
	X(M_CACHE_ENTRIES, MT_GAUGE, "portcullis_cache_entries", L_NONE, \
	  "Published cache entries.")					\
	X(M_CACHE_EVICTIONS, MT_COUNTER, "portcullis_cache_evictions_total", \
	  L_NONE, "Cache entries evicted to stay within max_bytes.")	\
	X(M_CACHE_FILLS, MT_GAUGE, "portcullis_cache_fills_in_progress", \
	  L_NONE, "Upstream transfers into the cache running now.")	\
	X(M_UPSTREAM_RESPONSES, MT_COUNTER,				\
	  "portcullis_upstream_responses_total", L_UPSTREAM_CLASS,	\
	  "Upstream response heads received (token requests, probes and " \
	  "redirects included), by upstream and status class.")		\
	X(M_UPSTREAM_ERRORS, MT_COUNTER, "portcullis_upstream_errors_total", \
	  L_UPSTREAM, "Upstream exchanges that failed without a usable " \
	  "answer (connect, TLS, timeout, framing, refused redirect).")	\
	X(M_UPSTREAM_SECONDS, MT_HISTOGRAM,				\
	  "portcullis_upstream_response_seconds", L_UPSTREAM,		\
	  "Time from sending a request upstream to its response head.")	\
	X(M_UPSTREAM_RL_REMAINING, MT_GAUGE,				\
	  "portcullis_upstream_ratelimit_remaining", L_UPSTREAM,	\
	  "The last RateLimit-Remaining an upstream sent (Docker Hub's " \
	  "pull allowance); only upstreams that sent one.")		\
	X(M_AUTH, MT_COUNTER, "portcullis_auth_checks_total", L_AUTH,	\
	  "Credentials checked (gateway tokens, IdP JWTs, secrets, "	\
	  "logins at /token), by result.")				\
	X(M_AUTH_FAILURES, MT_COUNTER, "portcullis_auth_failures_total", \
	  L_REASON, "Refused credentials by reason (the auth_failure of " \
	  "the audit record).")						\
	X(M_POLICY_DENIALS, MT_COUNTER, "portcullis_policy_denials_total", \
	  L_RULE, "Requests the policy refused, by deciding rule id "	\
	  "(\"default\": no rule matched).")				\
	X(M_RATELIMIT_REFUSALS, MT_COUNTER,				\
	  "portcullis_ratelimit_refusals_total", L_LIMIT,		\
	  "Requests refused with 429 by a rate limit, by limit "	\
	  "(its rule id; upstream_quota: an upstream's quota floor).")				\
	X(M_SSO_LOGINS, MT_COUNTER, "portcullis_sso_logins_total", L_SSO, \
	  "Browser SSO sign-ins by result (\"ok\", else the callback's "	\
	  "auth_failure reason).")		\
	X(M_RELOADS, MT_COUNTER, "portcullis_reloads_total", L_AUTH,	\
	  "Reloads (SIGHUP) by result: ok (the new configuration, "	\
	  "certificate and keys are in use), failed (the running ones "	\
	  "stay).")							\
	X(M_AUDIT_RECORDS, MT_COUNTER, "portcullis_audit_records_total", \
	  L_AUDIT, "Audit records by outcome.")				\
	X(M_AUDIT_SPOOL_BYTES, MT_GAUGE, "portcullis_audit_spool_bytes", \
	  L_NONE, "Size of the audit spool file.")			\
	X(M_AUDIT_QUEUE, MT_GAUGE, "portcullis_audit_queue_records", L_NONE, \
	  "Audit records in memory waiting for Redis.")			\
	X(M_AUDIT_UNREPLICATED, MT_COUNTER,				\
	  "portcullis_audit_unreplicated_batches_total", L_NONE,	\
	  "Audit batches that fewer replicas than audit.wait_replicas " \
	  "acknowledged (sent again after a reconnect).")		\
	X(M_AUDIT_GAPS, MT_COUNTER, "portcullis_audit_redis_gaps_total", \
	  L_NONE, "Holes in the audit stream found at a send: records " \
	  "Redis had acknowledged and lost since (a failover to a "	\
	  "replica that lagged).")					\
	X(M_REDIS_UP, MT_GAUGE, "portcullis_redis_link_up", L_LINK,	\
	  "1 when a Redis link is connected and ready, else 0.")	\
	X(M_READY, MT_GAUGE, "portcullis_ready", L_NONE,		\
	  "1 when /readyz answers 200, else 0.")

#define METRICS_ID_ENUM(e, t, n, l, h)	e,
enum metric_id { METRICS_TABLE(METRICS_ID_ENUM) M__MAX };
#undef METRICS_ID_ENUM

/* Histogram bucket bounds in seconds (the same for every histogram). */
#define METRICS_BUCKETS_US						\
	{ 1000, 5000, 10000, 25000, 50000, 100000, 250000, 500000,	\
	  1000000, 2500000, 5000000, 10000000, 30000000, 60000000,	\
	  300000000 }
#define METRICS_NBUCKETS	15

struct metrics;

/* One metric's declaration, for the renderer and the reference. */
struct metrics_decl {
	const char		*name;
	enum metrics_type	 type;
	enum metrics_lset	 lset;
	const char		*help;
};
const struct metrics_decl *metrics_decl(enum metric_id);
const char	*metrics_type_name(enum metrics_type);
/* The label names of a metric, comma separated, "" for none. */
void		 metrics_label_names(enum metric_id, char *, size_t);

/* `label_values`: the bound of each dynamic dimension's name table. */
struct metrics	*metrics_new(size_t label_values);
void		 metrics_free(struct metrics *);
/* A worker's slot in shared memory; the sum of the slots into dst. */
struct metrics	*metrics_new_shared(size_t);
void		 metrics_merge(struct metrics *, const struct metrics *);
/* Forget every value (the tests). */
void		 metrics_reset(struct metrics *);

/*
 * The index of a dynamic dimension's value, taken into its table when
 * it is new; once the table is full (or the name is empty or longer
 * than METRICS_NAME_MAX), the index of METRICS_OTHER.
 */
size_t		 metrics_dyn(struct metrics *, enum metrics_dim,
		    const char *);
/* The series of a label set from each dimension's index, in order. */
size_t		 metrics_series(const struct metrics *, enum metric_id,
		    const size_t *);
size_t		 metrics_series1(const struct metrics *, enum metric_id,
		    size_t);

void		 metrics_add(struct metrics *, enum metric_id, size_t,
		    uint64_t);
void		 metrics_set(struct metrics *, enum metric_id, size_t,
		    int64_t);
/* A histogram observation, in microseconds. */
void		 metrics_observe(struct metrics *, enum metric_id, size_t,
		    uint64_t);
/* A counter's or gauge's value; a histogram's count. */
int64_t		 metrics_get(const struct metrics *, enum metric_id,
		    size_t);

/* The flat value array (what a master would sum across workers). */
const uint64_t	*metrics_values(const struct metrics *, size_t *);

/*
 * The text exposition format 0.0.4, in pieces handed to emit(arg, data,
 * len).  Counters and gauges with no label, or one label of at most 8
 * fixed values, appear with every value (0 included); other series
 * appear once they have a value.
 */
typedef void	 metrics_emit_fn(void *, const char *, size_t);
void		 metrics_render(const struct metrics *, metrics_emit_fn *,
		    void *);
/* The Markdown table of the README's "Metrics" section. */
void		 metrics_reference(metrics_emit_fn *, void *);

/* Static dimension helpers. */
enum metrics_method	metrics_method(const char *);
enum metrics_class	metrics_class(int);
int			metrics_cache_result(const char *);	/* -1 */

/* An address list entry: ADDRESS or ADDRESS/PREFIX, IPv4 or IPv6. */
struct metrics_net {
	int		af;
	unsigned char	net[16];
	int		plen;
};
const char	*metrics_net_parse(const char *, struct metrics_net *);
/* Whether addr (af, 4 or 16 bytes) is in the network; v4-mapped too. */
int		 metrics_net_match(const struct metrics_net *, int,
		    const unsigned char *);

#endif /* PC_METRICS_H */
