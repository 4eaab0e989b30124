/*
 * errs.h: the one table of request errors.  Each error has an HTTP status,
 * an OCI distribution-spec error code and a default message.  Every request
 * failure in the gateway is one of these; req_fail() turns it into a
 * response.  Leaf: no libevent, no project header.
 */
#ifndef PC_ERRS_H
#define PC_ERRS_H

#include <stddef.h>

/* X(enum, http status, OCI code, message) */
#define PC_ERRS(X)							\
	X(ERR_NONE, 200, "", "")					\
	X(ERR_NAME_INVALID, 400, "NAME_INVALID",			\
	    "invalid repository name")					\
	X(ERR_DIGEST_INVALID, 400, "DIGEST_INVALID",			\
	    "provided digest did not match uploaded content or is malformed") \
	X(ERR_TAG_INVALID, 400, "TAG_INVALID",				\
	    "manifest tag is malformed")				\
	X(ERR_UPLOAD_INVALID, 400, "BLOB_UPLOAD_INVALID",		\
	    "blob upload id is malformed")				\
	X(ERR_BAD_REQUEST, 400, "UNSUPPORTED",			\
	    "malformed request")					\
	X(ERR_UNAUTHORIZED, 401, "UNAUTHORIZED",			\
	    "authentication required")					\
	X(ERR_DENIED, 403, "DENIED",					\
	    "requested access to the resource is denied")		\
	X(ERR_TAG_IMMUTABLE, 403, "DENIED",				\
	    "manifest tag is immutable")				\
	X(ERR_DIGEST_BLOCKED, 403, "DENIED",				\
	    "manifest digest is blocked")				\
	X(ERR_NOT_FOUND, 404, "NOT_FOUND",				\
	    "no such endpoint")						\
	X(ERR_NAME_UNKNOWN, 404, "NAME_UNKNOWN",			\
	    "repository name not known to this gateway")		\
	X(ERR_BLOB_UNKNOWN, 404, "BLOB_UNKNOWN",			\
	    "blob unknown to registry")					\
	X(ERR_MANIFEST_UNKNOWN, 404, "MANIFEST_UNKNOWN",		\
	    "manifest unknown")						\
	X(ERR_METHOD, 405, "UNSUPPORTED",				\
	    "method not allowed on this endpoint")			\
	X(ERR_TAG_DELETE, 405, "UNSUPPORTED",				\
	    "deleting a manifest by tag is not supported")		\
	X(ERR_RANGE_INVALID, 416, "BLOB_UPLOAD_INVALID",		\
	    "chunk does not start at the upload's current offset")	\
	X(ERR_TOO_LARGE, 413, "SIZE_INVALID",				\
	    "request body too large")					\
	X(ERR_URI_TOO_LONG, 414, "UNSUPPORTED",			\
	    "request URI too long")					\
	X(ERR_HEADERS_TOO_LARGE, 431, "UNSUPPORTED",			\
	    "request header fields too large")				\
	X(ERR_TOO_MANY_REQUESTS, 429, "TOOMANYREQUESTS",		\
	    "too many requests")					\
	X(ERR_RATE_LIMITED, 429, "TOOMANYREQUESTS",			\
	    "rate limit exceeded")					\
	X(ERR_INTERNAL, 500, "UNKNOWN",				\
	    "internal gateway error")					\
	X(ERR_UPSTREAM, 502, "UNAVAILABLE",				\
	    "upstream registry unavailable")				\
	X(ERR_UPSTREAM_PROTO, 502, "UNAVAILABLE",			\
	    "upstream registry sent an invalid response")		\
	X(ERR_UPSTREAM_AUTH, 502, "UNAVAILABLE",			\
	    "upstream registry authentication failed")			\
	X(ERR_UNAVAILABLE, 503, "UNAVAILABLE",			\
	    "service unavailable")					\
	X(ERR_UPSTREAM_TIMEOUT, 504, "UNAVAILABLE",			\
	    "upstream registry timed out")

#define PC_ERR_ENUM(e, s, c, m) e,
enum pc_err {
	PC_ERRS(PC_ERR_ENUM)
	ERR__MAX
};
#undef PC_ERR_ENUM

/* The enum's own name, e.g. "ERR_NAME_INVALID", for logs and metrics. */
const char	*errs_name(enum pc_err);
int		 errs_status(enum pc_err);
const char	*errs_code(enum pc_err);
const char	*errs_message(enum pc_err);

/*
 * Write the OCI JSON error body for `e` into buf (at most len bytes,
 * always NUL-terminated).  `detail` is optional, plain text, and is JSON
 * escaped.  Returns the body length, or -1 when it did not fit.
 */
int		 errs_body(enum pc_err e, const char *detail, char *buf,
		    size_t len);
/* As errs_body(), with `message` (NULL: the table's) for the message. */
int		 errs_body_msg(enum pc_err e, const char *message,
		    const char *detail, char *buf, size_t len);

/*
 * The OCI error code of an upstream's error body ({"errors": [{"code":
 * ...}]}, the first entry), for the audit record: at most ERRS_BODY_MAX
 * bytes are looked at, and only a code of A-Z, 0-9 and '_' shorter than
 * outlen is taken.  0 and the code in out; -1 (out empty) otherwise.
 */
#define ERRS_BODY_MAX	4096
int		 errs_parse_code(const char *body, size_t len, char *out,
		    size_t outlen);

/* The reason phrase for an HTTP status ("Not Found"). */
const char	*errs_reason(int);

#endif
