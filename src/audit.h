/*
 * audit.h: the audit record schema and the pure parts of the audit
 * subsystem: the record payload (what the spool and the in-memory queue
 * hold), the spool file framing with its checksum, and the query filters
 * shared by `portcullis audit query|tail` and GET /admin/audit.  Leaf: no
 * libevent, no hiredis, no project header.  The last part, internal to
 * the audit files and admin.c, declares the state they share.
 */
#ifndef PC_AUDIT_H
#define PC_AUDIT_H

#include <stddef.h>
#include <stdint.h>

/*
 * The record's fields, in the order they are written to the stream.
 * X(enum, stream field name, 1 when the JSON value is an integer).
 * Every record carries every field, so that Redis stores the names once
 * per stream node instead of once per entry.
 */
#define AUDIT_FIELDS(X)							\
	X(AF_TIME, "time", 1)						\
	X(AF_ID, "id", 0)						\
	X(AF_REQUEST_ID, "request_id", 0)				\
	X(AF_INSTANCE, "instance", 0)					\
	X(AF_CLIENT_IP, "client_ip", 0)					\
	X(AF_USER_AGENT, "user_agent", 0)				\
	X(AF_SUBJECT, "subject", 0)					\
	X(AF_AUTH_METHOD, "auth_method", 0)				\
	X(AF_ACTION, "action", 0)					\
	X(AF_REPOSITORY, "repository", 0)				\
	X(AF_REFERENCE, "reference", 0)					\
	X(AF_UPSTREAM, "upstream", 0)					\
	X(AF_METHOD, "method", 0)					\
	X(AF_PATH, "path", 0)						\
	X(AF_STATUS, "status", 1)					\
	X(AF_ERROR, "error", 0)						\
	X(AF_DECISION, "decision", 0)					\
	X(AF_RULE, "rule", 0)						\
	X(AF_BYTES_IN, "bytes_in", 1)					\
	X(AF_BYTES_OUT, "bytes_out", 1)					\
	X(AF_DURATION_MS, "duration_ms", 1)				\
	X(AF_CACHE, "cache", 0)						\
	X(AF_AUTH_FAILURE, "auth_failure", 0)

#define AUDIT_FIELD_ENUM(e, n, i) e,
enum audit_field {
	AUDIT_FIELDS(AUDIT_FIELD_ENUM)
	AF__MAX
};
#undef AUDIT_FIELD_ENUM

/* Largest encoded record; each field is truncated to keep under it. */
#define AUDIT_REC_MAX		4096
#define AUDIT_VALUE_MAX		1024	/* one field's value */
#define AUDIT_UA_MAX		256	/* the user agent */

/* A record's values, pointing into a payload or a Redis reply. */
struct audit_fields {
	const char	*v[AF__MAX];
	size_t		 len[AF__MAX];
};

const char	*audit_field_name(enum audit_field);
size_t		 audit_field_name_len(enum audit_field);
int		 audit_field_is_int(enum audit_field);
int		 audit_field_lookup(const char *, size_t);

/*
 * The payload: "name\0value\0" for each field, in schema order.  Values
 * are sanitised on the way in (printable ASCII; anything else becomes
 * '?') so they never hold a NUL, a newline or a terminal escape.
 */
struct audit_buf {
	char	 data[AUDIT_REC_MAX];
	size_t	 len;
	int	 truncated;
	/*
	 * Where each value is in data and its length (0 for a field not
	 * added), as audit_payload_parse() would find them: kept from the
	 * build so that sending a record need not parse it back.
	 */
	uint16_t voff[AF__MAX];
	uint16_t vlen[AF__MAX];
};

void	audit_buf_init(struct audit_buf *);
/* Append one field; the value is cut at max bytes (0: AUDIT_VALUE_MAX). */
void	audit_buf_add(struct audit_buf *, enum audit_field, const char *,
	    size_t);
void	audit_buf_addf(struct audit_buf *, enum audit_field, const char *,
	    ...) __attribute__((format(printf, 3, 4)));
/* Append an unsigned number in decimal, without printf. */
void	audit_buf_addu(struct audit_buf *, enum audit_field, uint64_t);
/* The digits of a number, ending at the end of a buffer this long. */
#define AUDIT_U64_MAX		20
char	*audit_u64(char *, uint64_t);
/* Parse a payload; unknown fields are ignored.  0, or -1 when malformed. */
int	audit_payload_parse(const char *, size_t, struct audit_fields *);
/* The fields of a payload at p from offsets kept by audit_buf_add(). */
void	audit_payload_fields(const char *, const uint16_t *,
	    const uint16_t *, struct audit_fields *);

/*
 * The stream's layout (README "What the stream holds").  A record is one
 * entry with one field, AUDIT_PACKED_FIELD: its values in schema order,
 * each followed by a tab (values never hold one); fields added to the
 * schema go at the end, and a reader takes missing ones as "".  Entries
 * of the layout before (one field per value) are read too.  An index
 * entry has one field, AUDIT_REFS_FIELD: the records it points to, oldest
 * first, each "<main stream id> <action> <status> <decision>;"; its id
 * is the newest record's id.  Entries of the layout before (the record's
 * own id, with action, status and decision fields) are read too.
 */
#define AUDIT_PACKED_FIELD	"record"
#define AUDIT_REFS_FIELD	"refs"
/* " <action> <status> <decision>;", each value at most AUDIT_VALUE_MAX */
#define AUDIT_REF_TAIL_MAX	(3 * AUDIT_VALUE_MAX + 4)
/* A stream id as text, with its NUL. */
#define AUDIT_ID_MAX		48
size_t	audit_pack_len(const struct audit_fields *);
size_t	audit_pack(const struct audit_fields *, char *);
int	audit_unpack(const char *, size_t, struct audit_fields *);
size_t	audit_ref_tail(const struct audit_fields *, char *, size_t);
/* The next ref of a refs value, from its end (newest first). */
int	audit_ref_prev(const char *, size_t *, char *,
	    struct audit_fields *);

/* The spool's on-disk format: audit_frame.h. */
#include "audit_frame.h"

/* Query filters. */
struct audit_filter {
	int64_t		 since_ms;	/* 0: none */
	int64_t		 until_ms;	/* 0: none */
	char		*subject;
	char		*repo;		/* fnmatch(3) glob; '*' spans '/' */
	char		*action;
	char		*decision;
	int		 status;	/* 0: any */
	int		 status_class;	/* 4 for 4xx; 0: any */
	size_t		 limit;
	char		 cursor[48];	/* stream id; older records follow */
};

void	audit_filter_init(struct audit_filter *);
void	audit_filter_clear(struct audit_filter *);
/* Set one filter from its name ("since", "repo", ...); -1 and *cause. */
int	audit_filter_set(struct audit_filter *, const char *, const char *,
	    int64_t, char **);
int	audit_filter_match(const struct audit_filter *,
	    const struct audit_fields *);
/* A repository filter without glob characters names one repository. */
int	audit_glob_literal(const char *);
/* "15m", "2h", "7d" back from now, or RFC 3339 / epoch ms.  0 or -1. */
int	audit_parse_time(const char *, int64_t, int64_t *);
/* A Redis stream id: digits, optionally "-" digits. */
int	audit_valid_stream_id(const char *);

/*
 * Internal to the audit files.  The writer's parts (audit.c: the record
 * queue and admission; audit_spool.c: the spool; audit_redis.c: the
 * Redis link) share struct audit; the query engine (audit_query.c) is
 * shared with the admin endpoint (admin.c).  Other files see only the
 * prototypes in portcullis.h.  Types of libevent, hiredis, jansson and
 * the daemon are named here by forward declaration only.
 */
#include <sys/queue.h>

struct config;
struct config_audit;
struct event;
struct json_t;
struct pc_ctx;
struct rds;
struct rds_params;
struct redisReply;
struct req;

#define AUDIT_BATCH		128	/* records that are sent at once */
/*
 * A batch call deletes at most 2 records' worth of index streams plus
 * this many, so that a smaller max_index_keys after a restart, or a set
 * that aged out at once, is worked off over calls instead of blocking
 * Redis in one.
 */
#define AUDIT_EVICT_SLACK	"1024"
/*
 * Field of <stream>:writers: the time (ms) of the last entry of the most
 * recently written index stream evicted so far.  An index holds every
 * entry after it; queries walk the main stream for what is older.  The
 * space keeps it apart from instance ids, which have none.
 */
#define AUDIT_EVICTED_FIELD	"evicted indexes"
/*
 * Field of <stream>:writers: the ms of the first batch that wrote a
 * first-segment index (<stream>:repository:<segment>/).  Such an index
 * holds every entry after it (and after the evicted mark); older records
 * were written by a script without it and are found by walking.
 */
#define AUDIT_PREFIX_FIELD	"prefix indexes"
/*
 * A record whose stream id is later than its time by more than this (a
 * replay from the spool, a long request) puts its batch in <stream>:late
 * (score: the batch's last id's ms; member: "<last id> <earliest late
 * time>"), so that --until can start a walk at until + AUDIT_LATE_MS and
 * still find them.  A string: it is pasted into the Lua script.
 */
#define AUDIT_LATE_MS		"10000"
#define AUDIT_LATE_READ		1000	/* late batches a query reads */
#define AUDIT_LATE_READ_S	"1000"	/* the same, as an argument */

/* One record: in the memory queue, or sent and not yet acknowledged. */
struct audit_rec {
	TAILQ_ENTRY(audit_rec)	 entry;
	uint64_t		 spool_end;	/* in the spool: offset after
						   it; 0: in memory only */
	uint32_t		 crc;		/* its frame's, in the spool */
	int			 from_spool;	/* read back by the replay */
	uint64_t		 sent_ms;
	size_t			 len;
	/* Built here (not from_spool): its fields, as in audit_buf. */
	uint16_t		 voff[AF__MAX];
	uint16_t		 vlen[AF__MAX];
	char			 data[];
};
TAILQ_HEAD(audit_recq, audit_rec);

enum audit_mode {
	AUDIT_DIRECT,		/* new records: memory queue -> Redis */
	AUDIT_SPOOL		/* new records: spool; Redis replays it */
};

enum audit_link {
	LINK_DOWN,		/* the rds link retries by itself */
	LINK_CONNECTING,	/* the first time */
	LINK_LOADING,		/* SCRIPT LOAD sent */
	LINK_READY
};

struct audit_syncer;

struct audit {
	struct pc_ctx		*ctx;
	struct config		*conf;		/* snapshot at start */
	const struct config_audit *ac;
	struct rds		*rds;
	enum audit_link		 link;
	uint64_t		 link_since;
	int			 down_logged;	/* this outage */
	char			 sha[48];
	struct event		*ev_tick;
	struct event		*ev_kick;
	struct event		*ev_linger;
	enum audit_mode		 mode;
	struct audit_recq	 queue;
	size_t			 nqueue;
	size_t			 qbytes;
	struct audit_recq	 inflight;
	size_t			 ninflight;
	struct audit_recq	 pool;		/* freed records, for reuse */
	size_t			 npool;
	size_t			 ifbytes;	/* memory-origin in flight */
	size_t			 reserved;	/* by admitted requests */

	int			 fd;
	uint64_t		 spool_size;
	uint64_t		 spool_rd;	/* next record to replay */
	uint64_t		 spool_acked;	/* acknowledged below this */
	uint32_t		 acked_crc;	/* of the record ending there */
	uint64_t		 mark_off;	/* the header's mark; HDR: none */
	uint32_t		 mark_crc;
	uint32_t		 append_crc;	/* of the last record appended */
	unsigned char		*walbuf;	/* WAL appends, not written */
	size_t			 wallen;	/* end of spool_size */
	struct event		*ev_wal;	/* writes them, this turn */
	int			 wal_now;	/* this record at once */
	int			 wal_failed;	/* the last append's write */
	int			 unspooled;	/* a record may be kept unlogged */
	uint64_t		 ring_size;	/* bytes of records */
	uint64_t		 ring_hot;	/* wrap early past this */
	uint64_t		 head_synced;	/* the head fdatasync'ed */
	uint64_t		 pad_at;	/* the last early wrap's pad */
	uint64_t		 ring_alloc_end;	/* allocated to here */
	int			 alloc_failed;	/* the last allocation */
	uint64_t		 ring_try_ms;	/* the last allocation tried */
	char			*tmp_path;	/* "<spool_file>.tmp" */
	char			*spool_dir;	/* fsync'ed after a rename */
	uint64_t		 n_replayed_reset;	/* at the last reset */
	int			 spool_dirty;
	uint64_t		 last_fsync_ms;
	struct audit_syncer	*syncer;	/* fsync interval, off the loop */
	uint64_t		 run;
	uint64_t		 next_n;
	char			 idpfx[AUDIT_VALUE_MAX];	/* "<instance>/<run>-" */
	size_t			 idpfxlen;

	/* The batch being sent, and its EVALSHA (RESP), formatted here. */
	struct audit_rec	*batch[AUDIT_BATCH];
	struct audit_fields	 bfl[AUDIT_BATCH];
	char			*cmd;
	size_t			 cmdlen;
	size_t			 cmdsz;
	char			*kw;		/* "<stream>:writers" */
	char			*ki;		/* "<stream>:indexes" */
	char			 maxlen[AUDIT_U64_MAX + 1];
	char			 maxage[AUDIT_U64_MAX + 1];
	char			 maxidx[AUDIT_U64_MAX + 1];

	uint64_t		 n_written;
	uint64_t		 n_dup;
	uint64_t		 n_unreplicated;	/* WAITs short of replicas */
	uint64_t		 n_gaps;	/* holes Redis lost */
	uint64_t		 gap_run;	/* the record sent as "!n" */
	uint64_t		 gap_n;
	uint64_t		 n_spooled;
	uint64_t		 n_replayed;
	uint64_t		 n_dropped;
	uint64_t		 n_rejected;
	uint64_t		 n_released;	/* acknowledged prefixes */
	uint64_t		 n_dropped_logged;
	uint64_t		 n_rejected_logged;
	uint64_t		 err_logged_ms;
};

/* audit.c */
uint64_t	 audit_wall_ms(void);
struct audit_rec *audit_rec_new(struct audit *, size_t);
void		 audit_rec_free(struct audit *, struct audit_rec *);
struct audit_rec *audit_next(struct audit *);
void		 audit_unnext(struct audit *, struct audit_rec *);

/* audit_spool.c */
int		 audit_spool_open(struct audit *, char **);
int		 audit_spool_append(struct audit *, const char *, size_t);
struct audit_rec *audit_spool_read(struct audit *);
void		 audit_spool_unacked(struct audit *);
void		 audit_spool_reset(struct audit *);
uint64_t	 audit_spool_used(const struct audit *);
void		 audit_spool_release(struct audit *, int);
void		 audit_spool_mark_write(struct audit *);
void		 audit_spool_close(struct audit *);
uint64_t	 audit_spool_pending(const char *);
void		 audit_spool_alloc(struct audit *);
int		 audit_spool_allocated(struct audit *, uint64_t);
void		 audit_fsync(struct audit *);
void		 audit_fsync_interval(struct audit *);
void		 audit_fsync_reap(struct audit *);
void		 audit_new_run(struct audit *);
struct conn;
int		 audit_wal_now(const struct conn *);

/* audit_redis.c */
int		 audit_indexed_repository(const struct audit_fields *);
void		 audit_rds_params(struct rds_params *, const struct config *);
void		 audit_connect(struct audit *);
void		 audit_redis_close(struct audit *);
void		 audit_redis_overdue(struct pc_ctx *, struct rds *, uint64_t);
void		 audit_link_lost(struct audit *, const char *);
void		 audit_flush(struct audit *);
void		 audit_kick(struct audit *);
void		 audit_kick_cb(int, short, void *);

/* audit_query.c: the query engine (see there); audit_cli.c drives it. */
#define AQ_BATCH		500	/* entries per XREVRANGE */
/* Entries per XREVRANGE of the CLI's walk, doubling from AQ_BATCH. */
#define AQ_WALK_MAX		8000
/* Index entries per XREVRANGE: each may hold a batch's refs. */
#define AQ_INDEX_BATCH		100
#define AQ_INDEX_BATCH_S	"100"
#define AQ_KEY_MAX		(AUDIT_VALUE_MAX + 256)

enum aq_phase {
	AQ_LATE,		/* where an --until walk starts */
	AQ_MARK,		/* how far back the index is whole */
	AQ_SCAN,
	AQ_FETCH,
	AQ_DONE
};

typedef void	(*aq_emit_fn)(void *, const char *,
		    const struct audit_fields *);

struct aq {
	const struct audit_filter *f;
	const char		*stream;
	char			 index[AQ_KEY_MAX];	/* "": main */
	char			 kw[AQ_KEY_MAX];	/* writers hash */
	char			 lo_main[64];	/* lo of the main walk */
	char			 evicted[24];	/* ms; "": none */
	int			 walk;		/* main walk, for an index */
	int			 prefix;	/* index of a first segment */
	size_t			 ncmds_sent;	/* Redis commands, for --stats */
	char			 klate[AQ_KEY_MAX];	/* <stream>:late */
	char			 late_lo[32];	/* "(" until + AUDIT_LATE_MS */
	enum aq_phase		 phase;
	char			 hi[64];
	char			 lo[64];
	char			 strad[72];	/* "(" hi, whole */
	int			 nstrad;	/* before the scan */
	int			 stop;		/* step done */
	size_t			 step_refs;	/* refs taken */
	char			 last_entry[48];	/* oldest read */
	char			 last[48];
	char			 next[48];
	char			 count[16];
	size_t			 ncount;	/* count, as a number */
	size_t			 nout;
	size_t			 scanned;
	size_t			 scan_max;	/* 0: no cap */
	int			 exhausted;
	int			 failed;
	char			 err[256];
	char			 (*ids)[48];
	size_t			 nids;
	aq_emit_fn		 emit;
	void			*arg;
	/* The commands of the current step. */
	int			 ncmds;
	int			 argc[AQ_BATCH];
	const char		*argv[AQ_BATCH][7];
	size_t			 lens[AQ_BATCH][7];
};

/* The refs of an index entry (either layout), newest first. */
struct aq_refs {
	const struct redisReply *e;
	const char		*v;	/* refs; NULL: old layout */
	size_t			 end;
	int			 done;
};

struct aq	*aq_new(const struct audit_filter *, const char *, size_t,
		    aq_emit_fn, void *);
void		 aq_free(struct aq *);
void		 aq_fail(struct aq *, const char *, const struct redisReply *);
int		 aq_prepare(struct aq *);
void		 aq_reply(struct aq *, int, const struct redisReply *);
void		 aq_step_done(struct aq *);
struct json_t	*aq_page(struct json_t *, const struct aq *);
void		 aq_emit_json(void *, const char *,
		    const struct audit_fields *);
struct json_t	*aq_json(const char *, const struct audit_fields *);
int		 aq_entry(const struct redisReply *, const char **,
		    struct audit_fields *);
int		 aq_refs_init(struct aq_refs *, const struct redisReply *);
int		 aq_refs_next(struct aq_refs *, char *,
		    struct audit_fields *);

#endif /* PC_AUDIT_H */
