/*
 * hframe.h: HTTP/1.1 message framing on top of http-parser, with the
 * gateway's limits and request-smuggling rules.  One hframe parses one
 * direction of one connection: requests from a client or responses from
 * an upstream.  It never buffers a body: Content-Length bodies are left to
 * the caller to move (zero copy, evbuffer to evbuffer), chunked and
 * close-delimited bodies are decoded and handed to on_body piece by piece.
 * Leaf: no libevent, no project header.
 */
#ifndef PC_HFRAME_H
#define PC_HFRAME_H

#include <stddef.h>
#include <stdint.h>

#include <http_parser.h>

#include "headers.h"

enum hframe_kind {
	HFRAME_REQUEST,
	HFRAME_RESPONSE
};

enum hframe_phase {
	HF_HEAD,		/* reading the start line and header fields */
	HF_BODY_LENGTH,		/* caller moves `remaining` body bytes */
	HF_BODY_PARSED,		/* chunked or close-delimited: feed it */
	HF_DONE,		/* message complete; hframe_next() for more */
	HF_ERROR		/* see err; the connection must close */
};

/* X(enum, status, text) */
#define HFRAME_ERRS(X)							\
	X(HF_E_NONE, 200, "no error")					\
	X(HF_E_SYNTAX, 400, "malformed HTTP message")			\
	X(HF_E_VERSION, 505, "HTTP version not supported")		\
	X(HF_E_HEADER_BYTES, 431, "header section too large")		\
	X(HF_E_HEADER_COUNT, 431, "too many header fields")		\
	X(HF_E_URI, 414, "request target too long")			\
	X(HF_E_LENGTH, 400, "invalid or conflicting message length")	\
	X(HF_E_TE_BAD, 400, "invalid Transfer-Encoding")		\
	X(HF_E_TE_UNSUPPORTED, 501, "unsupported Transfer-Encoding")	\
	X(HF_E_OBS_FOLD, 400, "obsolete header line folding")		\
	X(HF_E_HOST, 400, "missing or repeated Host header")		\
	X(HF_E_BODY, 400, "malformed message body")			\
	X(HF_E_CALLBACK, 500, "body consumer failed")			\
	X(HF_E_INCOMPLETE, 400, "connection closed mid-message")	\
	X(HF_E_NOMEM, 500, "out of memory")				\
	X(HF_E_TARGET, 400, "request target has bytes outside RFC 3986") \
	X(HF_E_LINE_END, 400, "line not ended by CRLF")		\
	X(HF_E_BODY_TOO_LARGE, 413, "message body too large")

#define HFRAME_ERR_ENUM(e, s, t) e,
enum hframe_err {
	HFRAME_ERRS(HFRAME_ERR_ENUM)
	HF_E__MAX
};
#undef HFRAME_ERR_ENUM

struct hframe_limits {
	size_t	header_bytes;	/* start line plus all fields */
	size_t	header_count;
	size_t	uri_bytes;
};

struct hframe_msg {
	int		 method;	/* enum http_method */
	int		 status;	/* responses */
	unsigned short	 major;
	unsigned short	 minor;
	char		*url;		/* requests; NUL-terminated */
	size_t		 url_len;
	struct headers	 hdrs;
	int		 keep_alive;
	int		 chunked;
	int		 has_length;
	uint64_t	 length;
	int		 expect_continue;
};

typedef int (*hframe_body_cb)(void *, const char *, size_t);

#define HFRAME_NAME_MAX	256

struct hframe {
	http_parser		 parser;
	enum hframe_kind	 kind;
	struct hframe_limits	 lim;
	struct hframe_msg	 msg;
	enum hframe_phase	 phase;
	enum hframe_err		 err;
	uint64_t		 remaining;	/* HF_BODY_LENGTH */
	uint64_t		 body_bytes;	/* decoded so far */
	size_t			 head_bytes;
	int			 skip_body;	/* response to a HEAD */
	int			 last_lf;	/* obs-fold detection */
	int			 last_cr;	/* CRLF line ends */
	int			 chunk_line;	/* chunk: not in data */
	uint64_t		 chunk_left;	/* chunk data + its CRLF */
	uint64_t		 max_body;	/* decoded; 0: no bound */
	char			 name[HFRAME_NAME_MAX];
	size_t			 name_len;
	int			 in_value;
	hframe_body_cb		 on_body;
	void			*arg;
};

void		 hframe_init(struct hframe *, enum hframe_kind,
		    const struct hframe_limits *, hframe_body_cb, void *);
void		 hframe_free(struct hframe *);
void		 hframe_next(struct hframe *);
size_t		 hframe_feed(struct hframe *, const char *, size_t);
void		 hframe_body_consumed(struct hframe *, uint64_t);
int		 hframe_set_max_body(struct hframe *, uint64_t);
int		 hframe_valid_target(const char *, size_t);
int		 hframe_eof(struct hframe *);
int		 hframe_err_status(enum hframe_err);
const char	*hframe_err_str(enum hframe_err);

#endif
