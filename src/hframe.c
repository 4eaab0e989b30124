/*
 * hframe.c: HTTP/1.1 framing with limits, on http-parser.
 *
 * Guarantees: no allocation happens before the relevant limit is checked
 * (URI length, header count, header bytes); a message with both
 * Content-Length and Transfer-Encoding, with repeated or malformed
 * Content-Length, with a Transfer-Encoding other than a lone "chunked", or
 * with obs-fold continuation lines is an error (RFC 9112 6.1, 6.3, 5.2),
 * so a request cannot be framed differently here and at the upstream.
 * Debian builds http-parser without HTTP_PARSER_STRICT, which lets raw
 * TAB, FF and bytes >= 0x80 into the request target, takes a bare LF (or
 * a CR followed by anything) as a line end and skips the CRLF after chunk
 * data unchecked; the checks here put those rules back: a request target
 * holds only RFC 3986 characters, request head lines end in CRLF (RFC
 * 9112 2.2), and a chunked body's size lines, extensions and trailers
 * hold no control characters and end in CRLF (RFC 9112 7.1).  A chunked
 * body is fed to the parser one line, or one chunk's data and CRLF, at a
 * time, so each line is checked whole before the parser acts on it.
 *
 * The parser is paused when the header section is complete so that the
 * caller can act on the head before any body byte is consumed; at that
 * point http-parser has not yet consumed the final LF of the header
 * section, which hframe_feed() accounts for.
 */
#include <ctype.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "hframe.h"

static int	hframe_on_url(http_parser *, const char *, size_t);
static int	hframe_on_status(http_parser *, const char *, size_t);
static int	hframe_on_field(http_parser *, const char *, size_t);
static int	hframe_on_value(http_parser *, const char *, size_t);
static int	hframe_on_headers_complete(http_parser *);
static int	hframe_on_body(http_parser *, const char *, size_t);
static int	hframe_on_message_complete(http_parser *);
static int	hframe_on_chunk_header(http_parser *);

static const http_parser_settings hframe_settings = {
	.on_url = hframe_on_url,
	.on_status = hframe_on_status,
	.on_header_field = hframe_on_field,
	.on_header_value = hframe_on_value,
	.on_headers_complete = hframe_on_headers_complete,
	.on_body = hframe_on_body,
	.on_message_complete = hframe_on_message_complete,
	.on_chunk_header = hframe_on_chunk_header,
};

#define HFRAME_ERR_ROW(e, s, t) { s, t },
static const struct {
	int		 status;
	const char	*text;
} hframe_errs[] = {
	HFRAME_ERRS(HFRAME_ERR_ROW)
};
#undef HFRAME_ERR_ROW

/* Set up a framer for one direction of a connection. */
void
hframe_init(struct hframe *hf, enum hframe_kind kind,
    const struct hframe_limits *lim, hframe_body_cb on_body, void *arg)
{
	memset(hf, 0, sizeof(*hf));
	hf->kind = kind;
	hf->lim = *lim;
	hf->on_body = on_body;
	hf->arg = arg;
	headers_init(&hf->msg.hdrs);
	hframe_next(hf);
}

/* Release what the current message holds. */
void
hframe_free(struct hframe *hf)
{
	free(hf->msg.url);
	hf->msg.url = NULL;
	headers_clear(&hf->msg.hdrs);
}

/* Forget the current message and get ready for the next one. */
void
hframe_next(struct hframe *hf)
{
	hframe_free(hf);
	memset(&hf->msg, 0, sizeof(hf->msg));
	headers_init(&hf->msg.hdrs);
	http_parser_init(&hf->parser, hf->kind == HFRAME_REQUEST ?
	    HTTP_REQUEST : HTTP_RESPONSE);
	hf->parser.data = hf;
	hf->phase = HF_HEAD;
	hf->err = HF_E_NONE;
	hf->remaining = 0;
	hf->body_bytes = 0;
	hf->head_bytes = 0;
	hf->skip_body = 0;
	hf->last_lf = 0;
	hf->last_cr = 0;
	hf->chunk_line = 0;
	hf->chunk_left = 0;
	hf->max_body = 0;
	hf->name_len = 0;
	hf->in_value = 0;
}

static int
hframe_fail(struct hframe *hf, enum hframe_err err)
{
	if (hf->err == HF_E_NONE)
		hf->err = err;
	hf->phase = HF_ERROR;
	return (-1);
}

/* Bytes of the head so far, checked against the limit before growing. */
static int
hframe_head_room(struct hframe *hf, size_t more)
{
	if (hf->msg.url_len + hf->msg.hdrs.bytes + hf->name_len + more +
	    4 * hf->msg.hdrs.n > hf->lim.header_bytes)
		return (hframe_fail(hf, HF_E_HEADER_BYTES));
	return (0);
}

static int
hframe_on_url(http_parser *p, const char *at, size_t len)
{
	struct hframe	*hf = p->data;
	char		*nu;

	if (hf->msg.url_len + len > hf->lim.uri_bytes)
		return (hframe_fail(hf, HF_E_URI));
	if (hframe_head_room(hf, len) == -1)
		return (-1);
	if ((nu = realloc(hf->msg.url, hf->msg.url_len + len + 1)) == NULL)
		return (hframe_fail(hf, HF_E_NOMEM));
	memcpy(nu + hf->msg.url_len, at, len);
	hf->msg.url_len += len;
	nu[hf->msg.url_len] = '\0';
	hf->msg.url = nu;
	return (0);
}

static int
hframe_on_status(http_parser *p, const char *at, size_t len)
{
	struct hframe	*hf = p->data;

	(void)at;
	return (hframe_head_room(hf, len));
}

/* A field name seen without a value yet becomes a field now. */
/* RFC 9110 5.6.2 token characters; http-parser's lenient build takes more. */
static int
hframe_tchar(unsigned char ch)
{
	return (isalnum(ch) || (ch != '\0' && strchr("!#$%&'*+-.^_`|~", ch)
	    != NULL));
}

static int
hframe_flush_name(struct hframe *hf, const char *val, size_t vlen)
{
	size_t	i;

	if (hf->name_len == 0)
		return (hframe_fail(hf, HF_E_SYNTAX));
	for (i = 0; i < hf->name_len; i++)
		if (!hframe_tchar((unsigned char)hf->name[i]))
			return (hframe_fail(hf, HF_E_SYNTAX));
	if (hf->msg.hdrs.n >= hf->lim.header_count)
		return (hframe_fail(hf, HF_E_HEADER_COUNT));
	if (headers_add(&hf->msg.hdrs, hf->name, hf->name_len, val,
	    vlen) == -1)
		return (hframe_fail(hf, HF_E_NOMEM));
	hf->name_len = 0;
	return (0);
}

/*
 * A chunked body's trailer section comes through the field callbacks
 * too.  RFC 9110 6.5.1: a trailer field is not merged into the header
 * section, which the request and its forwarding already acted on; it is
 * counted against limits.header_bytes with the head and dropped.
 */
static int
hframe_trailer(struct hframe *hf, size_t len)
{
	hf->head_bytes += len;
	if (hf->head_bytes > hf->lim.header_bytes)
		return (hframe_fail(hf, HF_E_HEADER_BYTES));
	return (0);
}

static int
hframe_on_field(http_parser *p, const char *at, size_t len)
{
	struct hframe	*hf = p->data;

	if (hf->phase != HF_HEAD)
		return (hframe_trailer(hf, len));
	/* A field after a value starts a new name; else it continues one. */
	if (hf->in_value)
		hf->in_value = 0;
	if (hf->msg.hdrs.n >= hf->lim.header_count)
		return (hframe_fail(hf, HF_E_HEADER_COUNT));
	if (hframe_head_room(hf, len) == -1)
		return (-1);
	if (hf->name_len + len > sizeof(hf->name))
		return (hframe_fail(hf, HF_E_HEADER_BYTES));
	memcpy(hf->name + hf->name_len, at, len);
	hf->name_len += len;
	return (0);
}

static int
hframe_on_value(http_parser *p, const char *at, size_t len)
{
	struct hframe	*hf = p->data;

	if (hf->phase != HF_HEAD)
		return (hframe_trailer(hf, len));
	if (hframe_head_room(hf, len) == -1)
		return (-1);
	if (!hf->in_value) {
		hf->in_value = 1;
		return (hframe_flush_name(hf, at, len));
	}
	if (headers_append_value(&hf->msg.hdrs, at, len) == -1)
		return (hframe_fail(hf, HF_E_NOMEM));
	return (0);
}

/* Content-Length must be one field holding only digits. */
static int
hframe_check_length(struct hframe *hf, const http_parser *p)
{
	struct hframe_msg	*m = &hf->msg;
	const char		*cl, *te, *s;

	cl = headers_get(&m->hdrs, "Content-Length");
	te = headers_get(&m->hdrs, "Transfer-Encoding");
	if (cl != NULL) {
		if (headers_count(&m->hdrs, "Content-Length") != 1)
			return (hframe_fail(hf, HF_E_LENGTH));
		if (*cl == '\0')
			return (hframe_fail(hf, HF_E_LENGTH));
		for (s = cl; *s != '\0'; s++)
			if (!isdigit((unsigned char)*s))
				return (hframe_fail(hf, HF_E_LENGTH));
	}
	if (te != NULL) {
		/* RFC 9112 6.1: TE in HTTP/1.0 means faulty framing. */
		if (p->http_minor == 0)
			return (hframe_fail(hf, HF_E_TE_BAD));
		if (cl != NULL)
			return (hframe_fail(hf, HF_E_LENGTH));
		if (headers_count(&m->hdrs, "Transfer-Encoding") != 1)
			return (hframe_fail(hf, HF_E_TE_BAD));
		if (strcasecmp(te, "chunked") != 0) {
			if (headers_has_token(&m->hdrs, "Transfer-Encoding",
			    "chunked"))
				return (hframe_fail(hf, HF_E_TE_BAD));
			return (hframe_fail(hf, HF_E_TE_UNSUPPORTED));
		}
	}
	return (0);
}

static int
hframe_on_headers_complete(http_parser *p)
{
	struct hframe		*hf = p->data;
	struct hframe_msg	*m = &hf->msg;
	const char		*ex;
	size_t			 n;

	if (hf->name_len > 0 && !hf->in_value &&
	    hframe_flush_name(hf, "", 0) == -1)
		return (-1);
	if (p->http_major != 1 || p->http_minor > 1)
		return (hframe_fail(hf, HF_E_VERSION));
	if (hframe_check_length(hf, p) == -1)
		return (-1);
	/* RFC 9112 3.2: exactly one Host in 1.1, at most one in 1.0. */
	if (p->type == HTTP_REQUEST) {
		n = headers_count(&m->hdrs, "Host");
		if (n > 1 || (n == 0 && p->http_minor == 1))
			return (hframe_fail(hf, HF_E_HOST));
	}
	m->method = p->method;
	m->status = p->status_code;
	m->major = p->http_major;
	m->minor = p->http_minor;
	m->keep_alive = http_should_keep_alive(p);
	m->chunked = (p->flags & F_CHUNKED) != 0;
	if (!m->chunked && (p->flags & F_CONTENTLENGTH) &&
	    p->content_length != ULLONG_MAX) {
		m->has_length = 1;
		m->length = p->content_length;
	}
	if (hf->kind == HFRAME_REQUEST && m->url == NULL)
		return (hframe_fail(hf, HF_E_SYNTAX));
	if (hf->kind == HFRAME_REQUEST &&
	    !hframe_valid_target(m->url, m->url_len))
		return (hframe_fail(hf, HF_E_TARGET));
	/* RFC 9110 10.1.1: an HTTP/1.0 client's 100-continue is ignored. */
	if ((ex = headers_get(&m->hdrs, "Expect")) != NULL &&
	    strcasecmp(ex, "100-continue") == 0 && m->minor >= 1)
		m->expect_continue = 1;
	http_parser_pause(p, 1);
	return (hf->skip_body ? 1 : 0);
}

static int
hframe_on_body(http_parser *p, const char *at, size_t len)
{
	struct hframe	*hf = p->data;

	/* Nothing past the bound goes to the consumer. */
	if (hf->max_body > 0 && hf->body_bytes + len > hf->max_body)
		return (hframe_fail(hf, HF_E_BODY_TOO_LARGE));
	hf->body_bytes += len;
	if (hf->on_body != NULL && hf->on_body(hf->arg, at, len) == -1)
		return (hframe_fail(hf, HF_E_CALLBACK));
	return (0);
}

/* A chunk-size line is complete: its data and CRLF follow. */
static int
hframe_on_chunk_header(http_parser *p)
{
	struct hframe	*hf = p->data;

	if (p->content_length > 0) {
		hf->chunk_line = 0;
		hf->chunk_left = p->content_length + 2;
	}
	return (0);
}

static int
hframe_on_message_complete(http_parser *p)
{
	struct hframe	*hf = p->data;

	if (hf->phase == HF_BODY_PARSED)
		hf->phase = HF_DONE;
	http_parser_pause(p, 1);
	return (0);
}

/* Whether a response to this request may carry a body at all. */
static int
hframe_no_body(struct hframe *hf)
{
	int	s = hf->msg.status;

	if (hf->kind == HFRAME_REQUEST)
		return (!hf->msg.chunked && !hf->msg.has_length);
	if (hf->skip_body || (s >= 100 && s < 200) || s == 204 || s == 304)
		return (1);
	return (0);
}

/*
 * Scan head bytes for a line that starts with whitespace (obs-fold) and,
 * in requests, for a line end other than CRLF.
 */
static int
hframe_scan_head(struct hframe *hf, const char *data, size_t len)
{
	const char	*lf, *cr;
	size_t		 i, end;

	for (i = 0; i < len; i++) {
		if (hf->last_lf && (data[i] == ' ' || data[i] == '\t'))
			return (hframe_fail(hf, HF_E_OBS_FOLD));
		if (hf->kind == HFRAME_REQUEST &&
		    (data[i] == '\n') != hf->last_cr)
			return (hframe_fail(hf, HF_E_LINE_END));
		hf->last_lf = data[i] == '\n';
		hf->last_cr = data[i] == '\r';
		if (hf->last_lf || hf->last_cr || i + 1 == len)
			continue;
		/*
		 * Inside a line only CR and LF matter: jump to the next LF
		 * (memchr, not byte by byte: this ran on every request's
		 * head).  In a request the only CR before it is the one just
		 * before it; it and the LF are checked by the loop.
		 */
		lf = memchr(data + i + 1, '\n', len - i - 1);
		end = lf != NULL ? (size_t)(lf - data) : len;
		if (hf->kind == HFRAME_REQUEST && end - i - 1 > 1 &&
		    (cr = memchr(data + i + 1, '\r', end - i - 2)) != NULL)
			end = (size_t)(cr - data);	/* the loop refuses it */
		else if (end - i - 1 > 1)
			end--;		/* the byte before the LF, or the last */
		else
			continue;
		hf->last_lf = hf->last_cr = 0;
		i = end - 1;
	}
	return (0);
}

/*
 * RFC 3986 2: unreserved, reserved and '%' followed by two hex digits.
 * Anything else (controls, space, '"', '<', '>', '\\', '^', '`', '{',
 * '|', '}', bytes >= 0x80) is not a request target; nor is '#': a
 * fragment is never sent (RFC 9112 3.2), and one would be read as part
 * of the path or query by some parsers and cut off by others.
 */
int
hframe_valid_target(const char *s, size_t len)
{
	size_t		i;
	unsigned char	ch;

	if (len == 0)
		return (0);
	for (i = 0; i < len; i++) {
		ch = (unsigned char)s[i];
		if (ch == '%') {
			if (i + 2 >= len)
				return (0);
			if (!isxdigit((unsigned char)s[i + 1]) ||
			    !isxdigit((unsigned char)s[i + 2]))
				return (0);
			i += 2;
			continue;
		}
		if (ch >= 0x80 || (!isalnum(ch) &&
		    strchr("-._~:/?[]@!$&'()*+,;=", ch) == NULL))
			return (0);
	}
	return (1);
}

/*
 * How much of a chunked body to feed next: up to the end of the current
 * line (size line, the CRLF after data, a trailer) or of the current
 * chunk's data and CRLF.  Checks the bytes first: line bytes are no
 * control character but HTAB and end in CRLF; the two bytes after chunk
 * data are CRLF.  Returns the length, or 0 after failing the message.
 */
static size_t
hframe_chunk_piece(struct hframe *hf, const char *data, size_t len)
{
	size_t		i;
	uint64_t	left;
	int		cr = hf->last_cr;
	unsigned char	ch;

	if (!hf->chunk_line) {
		left = hf->chunk_left;
		if (len > left)
			len = (size_t)left;
		for (i = 0; i < len; i++, left--)
			if ((left == 2 && data[i] != '\r') ||
			    (left == 1 && data[i] != '\n')) {
				hframe_fail(hf, HF_E_BODY);
				return (0);
			}
		return (len);
	}
	for (i = 0; i < len; i++) {
		ch = (unsigned char)data[i];
		if ((ch == '\n') != cr || ch == 0x7f || (ch < 0x20 &&
		    ch != '\t' && ch != '\r' && ch != '\n')) {
			hframe_fail(hf, HF_E_BODY);
			return (0);
		}
		if (ch == '\n')
			return (i + 1);
		cr = ch == '\r';
	}
	return (len);
}

/* Feed a chunked body one checked piece at a time. */
static size_t
hframe_feed_chunked(struct hframe *hf, const char *data, size_t len)
{
	size_t		piece, n, total = 0;
	enum http_errno	e;
	int		was_line;

	while (total < len && hf->phase == HF_BODY_PARSED) {
		was_line = hf->chunk_line;
		if ((piece = hframe_chunk_piece(hf, data + total,
		    len - total)) == 0)
			break;
		n = http_parser_execute(&hf->parser, &hframe_settings,
		    data + total, piece);
		e = HTTP_PARSER_ERRNO(&hf->parser);
		if (hf->phase == HF_ERROR)
			return (total + n);
		if (e != HPE_OK && e != HPE_PAUSED) {
			hframe_fail(hf, HF_E_BODY);
			return (total + n);
		}
		if (was_line && n > 0)
			hf->last_cr = data[total + n - 1] == '\r';
		else if (!was_line) {
			hf->chunk_left -= n;
			if (hf->chunk_left == 0) {
				hf->chunk_line = 1;
				hf->last_cr = 0;
			}
		}
		total += n;
		if (e == HPE_PAUSED) {
			http_parser_pause(&hf->parser, 0);
			break;
		}
		if (n < piece)
			break;
	}
	return (total);
}

/*
 * Feed bytes; returns how many were consumed.  Stops early when the head
 * is complete (phase leaves HF_HEAD), when the message is complete, or on
 * error (phase HF_ERROR).  In HF_BODY_LENGTH it consumes nothing: the
 * caller moves the body and reports it with hframe_body_consumed().
 */
size_t
hframe_feed(struct hframe *hf, const char *data, size_t len)
{
	size_t			n;
	enum http_errno		e;

	if (hf->phase == HF_ERROR || hf->phase == HF_DONE ||
	    hf->phase == HF_BODY_LENGTH || len == 0)
		return (0);
	if (hf->phase == HF_BODY_PARSED && hf->msg.chunked)
		return (hframe_feed_chunked(hf, data, len));
	if (hf->phase == HF_HEAD) {
		if (hf->head_bytes + len > hf->lim.header_bytes + 2)
			len = hf->lim.header_bytes + 2 - hf->head_bytes;
		if (len == 0) {
			hframe_fail(hf, HF_E_HEADER_BYTES);
			return (0);
		}
	}
	n = http_parser_execute(&hf->parser, &hframe_settings, data, len);
	e = HTTP_PARSER_ERRNO(&hf->parser);
	if (hf->phase == HF_ERROR)
		return (n);
	if (e != HPE_OK && e != HPE_PAUSED) {
		switch (e) {
		case HPE_HEADER_OVERFLOW:
			hframe_fail(hf, HF_E_HEADER_BYTES);
			break;
		case HPE_UNEXPECTED_CONTENT_LENGTH:
		case HPE_INVALID_CONTENT_LENGTH:
			hframe_fail(hf, HF_E_LENGTH);
			break;
		case HPE_INVALID_CHUNK_SIZE:
			hframe_fail(hf, HF_E_BODY);
			break;
		default:
			hframe_fail(hf, hf->phase == HF_HEAD ?
			    HF_E_SYNTAX : HF_E_BODY);
			break;
		}
		return (n);
	}
	if (hf->phase == HF_HEAD) {
		if (hframe_scan_head(hf, data, n) == -1)
			return (n);
		hf->head_bytes += n;
		if (e != HPE_PAUSED) {
			if (hf->head_bytes > hf->lim.header_bytes)
				hframe_fail(hf, HF_E_HEADER_BYTES);
			return (n);
		}
		/* Paused in on_headers_complete, just before the final LF. */
		if (n >= len || data[n] != '\n') {
			hframe_fail(hf, HF_E_SYNTAX);
			return (n);
		}
		if (hf->kind == HFRAME_REQUEST && !hf->last_cr) {
			hframe_fail(hf, HF_E_LINE_END);
			return (n);
		}
		if (hframe_no_body(hf)) {
			hf->phase = HF_DONE;
			return (n + 1);
		}
		if (hf->msg.has_length) {
			if (hf->msg.length == 0) {
				hf->phase = HF_DONE;
				return (n + 1);
			}
			hf->phase = HF_BODY_LENGTH;
			hf->remaining = hf->msg.length;
			return (n + 1);
		}
		/* Chunked, or a response delimited by the connection close. */
		hf->phase = HF_BODY_PARSED;
		hf->chunk_line = 1;	/* the head's final LF comes first */
		http_parser_pause(&hf->parser, 0);
		return (n);
	}
	/* HF_BODY_PARSED, close-delimited */
	if (e == HPE_PAUSED)
		http_parser_pause(&hf->parser, 0);
	return (n);
}

/*
 * Bound the decoded body of the current message (a manifest, say): the
 * framer fails with HF_E_BODY_TOO_LARGE before handing on a byte past it.
 * Returns -1 when the message's Content-Length already exceeds it; the
 * caller, which moves such bodies itself, refuses the message.
 */
int
hframe_set_max_body(struct hframe *hf, uint64_t max)
{
	hf->max_body = max;
	if (max > 0 && hf->msg.has_length && hf->msg.length > max)
		return (-1);
	return (0);
}

/* The caller moved n bytes of a Content-Length body. */
void
hframe_body_consumed(struct hframe *hf, uint64_t n)
{
	if (hf->phase != HF_BODY_LENGTH)
		return;
	if (n > hf->remaining)
		n = hf->remaining;
	hf->remaining -= n;
	hf->body_bytes += n;
	if (hf->remaining == 0)
		hf->phase = HF_DONE;
}

/*
 * The peer closed.  Completes a close-delimited response body; returns 0
 * when the message is complete, -1 when it was cut short.
 */
int
hframe_eof(struct hframe *hf)
{
	if (hf->phase == HF_DONE)
		return (0);
	if (hf->phase == HF_BODY_PARSED && hf->kind == HFRAME_RESPONSE &&
	    !hf->msg.chunked && !hf->msg.has_length) {
		http_parser_execute(&hf->parser, &hframe_settings, NULL, 0);
		hf->phase = HF_DONE;
		return (0);
	}
	if (hf->phase != HF_ERROR)
		hframe_fail(hf, HF_E_INCOMPLETE);
	return (-1);
}

/* The HTTP status that answers a framing error. */
int
hframe_err_status(enum hframe_err e)
{
	if ((unsigned)e >= HF_E__MAX)
		return (500);
	return (hframe_errs[e].status);
}

/* Human-readable text of a framing error. */
const char *
hframe_err_str(enum hframe_err e)
{
	if ((unsigned)e >= HF_E__MAX)
		return ("unknown error");
	return (hframe_errs[e].text);
}
