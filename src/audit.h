/*
 * audit.h: the audit record schema and the pure parts of the audit
 * subsystem: the record payload (what the spool and the in-memory queue
 * hold), the spool file framing with its checksum, and the query filters
 * shared by `portcullis audit query|tail` and GET /admin/audit.  Leaf: no
 * libevent, no hiredis, no project header.
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
	X(AF_CACHE, "cache", 0)

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

/*
 * The spool file: a 32-byte header ("PCAUDSP1", the writer's run number,
 * zeros), then records, each a 12-byte frame head (magic, payload length,
 * CRC-32 of the payload; little endian) and the payload.  A record that
 * is short, too long or fails its checksum ends the valid part of the
 * file: after a crash that is the torn tail, and it is dropped.
 */
#define AUDIT_SPOOL_HDR		32
#define AUDIT_SPOOL_FRAME	12
#define AUDIT_SPOOL_MAGIC	0x31524350u	/* "PCR1" */

uint32_t audit_crc32(const void *, size_t);
void	 audit_spool_header(unsigned char *, uint64_t);
int	 audit_spool_header_parse(const unsigned char *, size_t, uint64_t *);
void	 audit_spool_frame(unsigned char *, const void *, size_t);
/*
 * Check the record at buf (avail bytes).  Returns its total size (frame
 * and payload), 0 when more bytes are needed, -1 when it is invalid.
 */
long	 audit_spool_check(const unsigned char *, size_t);

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

#endif /* PC_AUDIT_H */
