/*
 * errs.c: lookups into the error table of errs.h and the OCI JSON error
 * body, the gateway's own and an upstream's.  Leaf module: pure
 * functions over the table.
 */
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "errs.h"

struct errs_entry {
	const char	*name;
	int		 status;
	const char	*code;
	const char	*message;
};

#define PC_ERR_ROW(e, s, c, m) { #e, s, c, m },
static const struct errs_entry errs_table[] = {
	PC_ERRS(PC_ERR_ROW)
};
#undef PC_ERR_ROW

static const struct errs_entry *
errs_get(enum pc_err e)
{
	if ((unsigned)e >= ERR__MAX)
		e = ERR_INTERNAL;
	return &errs_table[e];
}

const char *
errs_name(enum pc_err e)
{
	return errs_get(e)->name;
}

int
errs_status(enum pc_err e)
{
	return errs_get(e)->status;
}

const char *
errs_code(enum pc_err e)
{
	return errs_get(e)->code;
}

const char *
errs_message(enum pc_err e)
{
	return errs_get(e)->message;
}

/* Append s to buf as JSON string content; returns new offset or -1. */
static int
errs_escape(char *buf, size_t len, size_t off, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char ch;

	for (; *s != '\0'; s++) {
		ch = (unsigned char)*s;
		if (off + 7 >= len)
			return -1;
		if (ch == '"' || ch == '\\') {
			buf[off++] = '\\';
			buf[off++] = (char)ch;
		} else if (ch < 0x20 || ch == 0x7f) {
			buf[off++] = '\\';
			buf[off++] = 'u';
			buf[off++] = '0';
			buf[off++] = '0';
			buf[off++] = hex[ch >> 4];
			buf[off++] = hex[ch & 0xf];
		} else
			buf[off++] = (char)ch;
	}
	return (int)off;
}

int
errs_body(enum pc_err e, const char *detail, char *buf, size_t len)
{
	return (errs_body_msg(e, NULL, detail, buf, len));
}

/*
 * The same body with a message of the caller's: a rate limit names its
 * rule and when to retry there, where clients print it (they print the
 * message, seldom the detail).
 */
int
errs_body_msg(enum pc_err e, const char *message, const char *detail,
    char *buf, size_t len)
{
	const struct errs_entry	*ent = errs_get(e);
	int			 off;

	off = snprintf(buf, len, "{\"errors\":[{\"code\":\"%s\","
	    "\"message\":\"", ent->code);
	if (off < 0 || (size_t)off >= len)
		return -1;
	if ((off = errs_escape(buf, len, off, message != NULL ? message :
	    ent->message)) == -1)
		return -1;
	if (detail != NULL) {
		if ((size_t)off + 12 >= len)
			return -1;
		memcpy(buf + off, "\",\"detail\":\"", 12);
		off += 12;
		if ((off = errs_escape(buf, len, off, detail)) == -1)
			return -1;
		if ((size_t)off + 5 >= len)
			return -1;
		memcpy(buf + off, "\"}]}\n", 5);
		off += 5;
	} else {
		if ((size_t)off + 20 >= len)
			return -1;
		memcpy(buf + off, "\",\"detail\":null}]}\n", 19);
		off += 19;
	}
	buf[off] = '\0';
	return off;
}

/* The reason phrase for an HTTP status ("Not Found"). */
const char *
errs_reason(int status)
{
	switch (status) {
	case 100: return ("Continue");
	case 200: return ("OK");
	case 201: return ("Created");
	case 202: return ("Accepted");
	case 204: return ("No Content");
	case 206: return ("Partial Content");
	case 301: return ("Moved Permanently");
	case 302: return ("Found");
	case 303: return ("See Other");
	case 304: return ("Not Modified");
	case 307: return ("Temporary Redirect");
	case 308: return ("Permanent Redirect");
	case 400: return ("Bad Request");
	case 401: return ("Unauthorized");
	case 403: return ("Forbidden");
	case 404: return ("Not Found");
	case 405: return ("Method Not Allowed");
	case 408: return ("Request Timeout");
	case 409: return ("Conflict");
	case 411: return ("Length Required");
	case 413: return ("Content Too Large");
	case 414: return ("URI Too Long");
	case 416: return ("Range Not Satisfiable");
	case 429: return ("Too Many Requests");
	case 431: return ("Request Header Fields Too Large");
	case 500: return ("Internal Server Error");
	case 501: return ("Not Implemented");
	case 502: return ("Bad Gateway");
	case 503: return ("Service Unavailable");
	case 504: return ("Gateway Timeout");
	case 505: return ("HTTP Version Not Supported");
	default: return ("Unknown");
	}
}

/* The first error code of an upstream's OCI error body; see errs.h. */
int
errs_parse_code(const char *body, size_t len, char *out, size_t outlen)
{
	json_t		*doc, *errs, *code;
	json_error_t	 jerr;
	const char	*c;
	size_t		 i, n;
	int		 rc = -1;

	if (outlen > 0)
		out[0] = '\0';
	if (body == NULL || len == 0 || len > ERRS_BODY_MAX || outlen == 0)
		return (-1);
	if ((doc = json_loadb(body, len, 0, &jerr)) == NULL)
		return (-1);
	if ((errs = json_object_get(doc, "errors")) != NULL &&
	    json_is_array(errs) && json_array_size(errs) > 0 &&
	    (code = json_object_get(json_array_get(errs, 0), "code")) !=
	    NULL && (c = json_string_value(code)) != NULL &&
	    (n = strlen(c)) > 0 && n < outlen) {
		for (i = 0; i < n; i++)
			if (!((c[i] >= 'A' && c[i] <= 'Z') ||
			    (c[i] >= '0' && c[i] <= '9') || c[i] == '_'))
				break;
		if (i == n) {
			memcpy(out, c, n + 1);
			rc = 0;
		}
	}
	json_decref(doc);
	return (rc);
}
