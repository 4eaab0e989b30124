/*
 * test_hframe.c: the framing layer's limits and smuggling rules.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hframe.h"

static const struct hframe_limits lim = { 4096, 20, 512 };

struct sink {
	char	buf[4096];
	size_t	len;
};

static int
sink_body(void *arg, const char *data, size_t len)
{
	struct sink	*s = arg;

	assert_true(s->len + len <= sizeof(s->buf));
	memcpy(s->buf + s->len, data, len);
	s->len += len;
	return (0);
}

/*
 * Feed a whole buffer, n bytes at a time (to exercise split callbacks),
 * moving Content-Length bodies as a caller would.  Returns bytes consumed.
 */
static size_t
feed_all(struct hframe *hf, struct sink *s, const char *data, size_t len,
    size_t step)
{
	size_t	off = 0, n, take;

	while (off < len && hf->phase != HF_ERROR && hf->phase != HF_DONE) {
		if (hf->phase == HF_BODY_LENGTH) {
			take = len - off;
			if (take > hf->remaining)
				take = hf->remaining;
			sink_body(s, data + off, take);
			hframe_body_consumed(hf, take);
			off += take;
			continue;
		}
		take = len - off < step ? len - off : step;
		n = hframe_feed(hf, data + off, take);
		off += n;
		if (n == 0 && hf->phase == HF_HEAD)
			break;
	}
	return (off);
}

static void
parse_req(const char *req, struct hframe *hf, struct sink *s, size_t step)
{
	memset(s, 0, sizeof(*s));
	hframe_init(hf, HFRAME_REQUEST, &lim, sink_body, s);
	feed_all(hf, s, req, strlen(req), step);
}

static void
test_simple_get(void **state)
{
	struct hframe	 hf;
	struct sink	 s;
	size_t		 step;

	(void)state;
	for (step = 1; step < 64; step++) {
		parse_req("GET /v2/ HTTP/1.1\r\nHost: x\r\nAccept: a\r\n"
		    "Accept: b\r\nX-Empty:\r\n\r\n", &hf, &s, step);
		assert_int_equal(hf.phase, HF_DONE);
		assert_string_equal(hf.msg.url, "/v2/");
		assert_int_equal(hf.msg.method, HTTP_GET);
		assert_int_equal(headers_count(&hf.msg.hdrs, "accept"), 2);
		assert_string_equal(hf.msg.hdrs.v[1].value, "a");
		assert_string_equal(hf.msg.hdrs.v[2].value, "b");
		assert_non_null(headers_get(&hf.msg.hdrs, "X-Empty"));
		assert_string_equal(headers_get(&hf.msg.hdrs, "X-Empty"), "");
		assert_true(hf.msg.keep_alive);
		hframe_free(&hf);
	}
}

static void
test_length_body_left_to_caller(void **state)
{
	struct hframe	 hf;
	struct sink	 s;
	const char	*r = "PUT /x HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
			    "GET /next HTTP/1.1\r\nHost: h\r\n\r\n";
	size_t		 n;

	(void)state;
	memset(&s, 0, sizeof(s));
	hframe_init(&hf, HFRAME_REQUEST, &lim, sink_body, &s);
	n = hframe_feed(&hf, r, strlen(r));
	assert_int_equal(hf.phase, HF_BODY_LENGTH);
	assert_int_equal(hf.remaining, 5);
	assert_memory_equal(r + n, "hello", 5);
	hframe_body_consumed(&hf, 5);
	assert_int_equal(hf.phase, HF_DONE);
	/* Pipelined next request parses from where the body ended. */
	hframe_next(&hf);
	n = hframe_feed(&hf, r + n + 5, strlen(r + n + 5));
	assert_int_equal(hf.phase, HF_DONE);
	assert_string_equal(hf.msg.url, "/next");
	hframe_free(&hf);
}

static void
test_chunked_body_decoded(void **state)
{
	struct hframe	 hf;
	struct sink	 s;
	size_t		 step;

	(void)state;
	for (step = 1; step < 40; step += 3) {
		parse_req("PATCH /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
		    "\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", &hf, &s,
		    step);
		assert_int_equal(hf.phase, HF_DONE);
		assert_true(hf.msg.chunked);
		assert_int_equal(s.len, 11);
		assert_memory_equal(s.buf, "hello world", 11);
		hframe_free(&hf);
	}
}

struct bad_case {
	const char		*name;
	const char		*req;
	enum hframe_err		 err;
	int			 status;
};

static const struct bad_case bad_cases[] = {
	{ "cl+te", "POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n"
	    "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", HF_E_LENGTH, 400 },
	{ "te+cl", "POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
	    "Content-Length: 3\r\n\r\n0\r\n\r\n", HF_E_LENGTH, 400 },
	{ "two cl", "POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n"
	    "Content-Length: 4\r\n\r\nabcd", HF_E_LENGTH, 400 },
	{ "same cl twice", "POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n"
	    "Content-Length: 3\r\n\r\nabc", HF_E_LENGTH, 400 },
	{ "cl letters", "POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 12a\r\n\r\n",
	    HF_E_LENGTH, 400 },
	{ "cl negative", "POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n",
	    HF_E_LENGTH, 400 },
	{ "te gzip", "POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n",
	    HF_E_TE_UNSUPPORTED, 501 },
	{ "te chunked,identity", "POST /x HTTP/1.1\r\nHost: h\r\n"
	    "Transfer-Encoding: chunked, identity\r\n\r\n", HF_E_TE_BAD, 400 },
	{ "te twice", "POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
	    "Transfer-Encoding: chunked\r\n\r\n", HF_E_TE_BAD, 400 },
	{ "no host", "GET /x HTTP/1.1\r\nAccept: a\r\n\r\n", HF_E_HOST, 400 },
	{ "two hosts", "GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
	    HF_E_HOST, 400 },
	{ "te in http/1.0", "POST /x HTTP/1.0\r\nTransfer-Encoding: chunked"
	    "\r\n\r\n0\r\n\r\n", HF_E_TE_BAD, 400 },
	{ "bad chunk size", "POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked"
	    "\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", HF_E_BODY, 400 },
	{ "obs-fold", "GET /x HTTP/1.1\r\nHost: h\r\nX-A: one\r\n two\r\n\r\n",
	    HF_E_OBS_FOLD, 400 },
	{ "http/2.0", "GET /x HTTP/2.0\r\n\r\n", HF_E_VERSION, 505 },
	{ "garbage", "\x01\x02 nonsense\r\n\r\n", HF_E_SYNTAX, 400 },
	{ "space in name", "GET /x HTTP/1.1\r\nHost: h\r\nX A: b\r\n\r\n", HF_E_SYNTAX,
	    400 },
	/* http-parser built without HTTP_PARSER_STRICT lets these through. */
	{ "tab in query", "GET /v2/a/tags/list?n=1\tb HTTP/1.1\r\nHost: h\r\n\r\n",
	    HF_E_TARGET, 400 },
	{ "ff in query", "GET /v2/a/tags/list?n=1\fb HTTP/1.1\r\nHost: h\r\n\r\n",
	    HF_E_TARGET, 400 },
	{ "obs-text in query", "GET /v2/a/tags/list?n=\xc3\xa9 HTTP/1.1\r\n"
	    "Host: h\r\n\r\n", HF_E_TARGET, 400 },
	{ "obs-text in path", "GET /v2/\x80/tags/list HTTP/1.1\r\nHost: h\r\n\r\n",
	    HF_E_TARGET, 400 },
	{ "quote in query", "GET /x?a=\"b\" HTTP/1.1\r\nHost: h\r\n\r\n",
	    HF_E_TARGET, 400 },
	{ "bad pct", "GET /x?a=%zz HTTP/1.1\r\nHost: h\r\n\r\n", HF_E_TARGET,
	    400 },
	{ "short pct", "GET /x?a=%4 HTTP/1.1\r\nHost: h\r\n\r\n", HF_E_TARGET,
	    400 },
	{ "fragment", "GET /v2/a/tags/list#?ns=x HTTP/1.1\r\nHost: h\r\n\r\n",
	    HF_E_TARGET, 400 },
	{ "fragment in query", "GET /x?a=1#b HTTP/1.1\r\nHost: h\r\n\r\n",
	    HF_E_TARGET, 400 },
	{ "bare lf request line", "GET /x HTTP/1.1\nHost: h\r\n\r\n",
	    HF_E_LINE_END, 400 },
	{ "bare lf field", "GET /x HTTP/1.1\r\nHost: h\nX: y\r\n\r\n",
	    HF_E_LINE_END, 400 },
	{ "bare lf end of head", "GET /x HTTP/1.1\r\nHost: h\r\n\n",
	    HF_E_LINE_END, 400 },
	{ "all bare lf", "GET /x HTTP/1.1\nHost: h\n\n", HF_E_LINE_END, 400 },
	{ "bare cr in field", "GET /x HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n",
	    HF_E_SYNTAX, 400 },
	{ "lf in chunk ext", "POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: "
	    "chunked\r\n\r\n5;a\nb\r\nhello\r\n0\r\n\r\n", HF_E_BODY, 400 },
	{ "bare lf chunk size", "POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: "
	    "chunked\r\n\r\n5\nhello\r\n0\r\n\r\n", HF_E_BODY, 400 },
	{ "no crlf after data", "POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: "
	    "chunked\r\n\r\n5\r\nhelloXY0\r\n\r\n", HF_E_BODY, 400 },
	{ "ctl in chunk ext", "POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: "
	    "chunked\r\n\r\n5;a\x01\r\nhello\r\n0\r\n\r\n", HF_E_BODY, 400 },
	{ "bare lf trailer", "POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: "
	    "chunked\r\n\r\n5\r\nhello\r\n0\r\nX: y\n\r\n", HF_E_BODY, 400 },
};

static void
test_bad_requests(void **state)
{
	struct hframe	 hf;
	struct sink	 s;
	size_t		 i, step;

	(void)state;
	for (i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
		for (step = 1; step <= 4096; step *= 64) {
			parse_req(bad_cases[i].req, &hf, &s, step);
			if (hf.phase != HF_ERROR || hf.err != bad_cases[i].err)
				fail_msg("%s (step %zu): phase %d err %s",
				    bad_cases[i].name, step, hf.phase,
				    hframe_err_str(hf.err));
			assert_int_equal(hframe_err_status(hf.err),
			    bad_cases[i].status);
			hframe_free(&hf);
		}
	}
}

static void
test_limits(void **state)
{
	struct hframe	 hf;
	struct sink	 s;
	char		 req[16384];
	size_t		 i, off;

	(void)state;
	/* URI over 512 bytes -> 414. */
	off = snprintf(req, sizeof(req), "GET /");
	for (i = 0; i < 600; i++)
		req[off++] = 'a';
	off += snprintf(req + off, sizeof(req) - off, " HTTP/1.1\r\nHost: h\r\n\r\n");
	parse_req(req, &hf, &s, 100);
	assert_int_equal(hf.err, HF_E_URI);
	assert_int_equal(hframe_err_status(hf.err), 414);
	hframe_free(&hf);

	/* 21 fields with a limit of 20 -> 431. */
	off = snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nHost: h\r\n");
	for (i = 0; i < 20; i++)
		off += snprintf(req + off, sizeof(req) - off,
		    "X-H%zu: v\r\n", i);
	snprintf(req + off, sizeof(req) - off, "\r\n");
	parse_req(req, &hf, &s, 7);
	assert_int_equal(hf.err, HF_E_HEADER_COUNT);
	assert_int_equal(hframe_err_status(hf.err), 431);
	hframe_free(&hf);

	/* 20 fields is fine. */
	off = snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nHost: h\r\n");
	for (i = 0; i < 19; i++)
		off += snprintf(req + off, sizeof(req) - off,
		    "X-H%zu: v\r\n", i);
	snprintf(req + off, sizeof(req) - off, "\r\n");
	parse_req(req, &hf, &s, 7);
	assert_int_equal(hf.phase, HF_DONE);
	hframe_free(&hf);

	/* One 5000-byte value with a 4096-byte head limit -> 431. */
	off = snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nHost: h\r\nX-Big: ");
	for (i = 0; i < 5000; i++)
		req[off++] = 'v';
	snprintf(req + off, sizeof(req) - off, "\r\n\r\n");
	parse_req(req, &hf, &s, 1000);
	assert_int_equal(hf.err, HF_E_HEADER_BYTES);
	assert_int_equal(hframe_err_status(hf.err), 431);
	hframe_free(&hf);

	/* A head that never ends stops at the limit, not at memory. */
	memset(&s, 0, sizeof(s));
	hframe_init(&hf, HFRAME_REQUEST, &lim, sink_body, &s);
	off = snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nHost: h\r\n");
	for (i = 0; i < 5000 && hf.phase == HF_HEAD; i++)
		hframe_feed(&hf, i == 0 ? req : "X", i == 0 ? off : 1);
	assert_int_equal(hf.phase, HF_ERROR);
	assert_int_equal(hframe_err_status(hf.err), 431);
	hframe_free(&hf);
}

static void
test_response_framing(void **state)
{
	struct hframe	 hf;
	struct sink	 s;
	const char	*r;
	size_t		 n;

	(void)state;
	/* HEAD response keeps Content-Length but has no body. */
	memset(&s, 0, sizeof(s));
	hframe_init(&hf, HFRAME_RESPONSE, &lim, sink_body, &s);
	hf.skip_body = 1;
	r = "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n";
	n = hframe_feed(&hf, r, strlen(r));
	assert_int_equal(n, strlen(r));
	assert_int_equal(hf.phase, HF_DONE);
	assert_int_equal(hf.msg.length, 1234);
	assert_int_equal(hf.msg.status, 200);

	/* Close-delimited body completes at EOF. */
	hframe_next(&hf);
	r = "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nabc";
	feed_all(&hf, &s, r, strlen(r), 5);
	assert_int_equal(hf.phase, HF_BODY_PARSED);
	assert_int_equal(hframe_eof(&hf), 0);
	assert_int_equal(s.len, 3);

	/* A Content-Length body cut short is an error at EOF. */
	hframe_next(&hf);
	r = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n";
	n = hframe_feed(&hf, r, strlen(r));
	assert_int_equal(hf.phase, HF_BODY_LENGTH);
	hframe_body_consumed(&hf, 4);
	assert_int_equal(hframe_eof(&hf), -1);
	assert_int_equal(hf.err, HF_E_INCOMPLETE);

	/* 204 has no body even without a length. */
	hframe_next(&hf);
	r = "HTTP/1.1 204 No Content\r\n\r\n";
	n = hframe_feed(&hf, r, strlen(r));
	assert_int_equal(hf.phase, HF_DONE);
	hframe_free(&hf);
}

/* Chunk extensions, trailers and every RFC 3986 character still pass. */
static void
test_strict_controls(void **state)
{
	struct hframe	 hf;
	struct sink	 s;
	size_t		 step;

	(void)state;
	for (step = 1; step < 40; step += 2) {
		parse_req("PATCH /v2/a-b_c.d~e/blobs/uploads/x?a=%2F&b=!$'()*+,;="
		    ":@[]f HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked"
		    "\r\n\r\n5;ext=1;q=\"a b\"\r\nhello\r\n6;x\r\n world\r\n"
		    "0\r\nX-Trailer: t\r\n\r\n", &hf, &s, step);
		if (hf.phase != HF_DONE)
			fail_msg("step %zu: phase %d err %s", step, hf.phase,
			    hframe_err_str(hf.err));
		assert_int_equal(s.len, 11);
		assert_memory_equal(s.buf, "hello world", 11);
		hframe_free(&hf);
	}
}

/*
 * Trailer fields are not merged into the header section (RFC 9110
 * 6.5.1): a trailer cannot add a Host or a Content-Length to a request
 * already framed and forwarded.  They count against header_bytes.
 */
static void
test_trailers_dropped(void **state)
{
	struct hframe	 hf;
	struct sink	 s;
	const char	*resp = "HTTP/1.1 200 OK\r\nTransfer-Encoding: "
			    "chunked\r\n\r\n5\r\nhello\r\n0\r\n"
			    "Content-Type: x\r\n\r\n";
	char		*big;
	size_t		 step, off;

	(void)state;
	for (step = 1; step < 40; step += 3) {
		parse_req("PUT /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: "
		    "chunked\r\n\r\n5\r\nhello\r\n0\r\nContent-Length: 5\r\n"
		    "Host: other\r\nX-Trailer: t\r\n\r\n", &hf, &s, step);
		if (hf.phase != HF_DONE)
			fail_msg("step %zu: phase %d err %s", step, hf.phase,
			    hframe_err_str(hf.err));
		assert_int_equal(hf.msg.hdrs.n, 2);
		assert_null(headers_get(&hf.msg.hdrs, "Content-Length"));
		assert_null(headers_get(&hf.msg.hdrs, "X-Trailer"));
		assert_int_equal(headers_count(&hf.msg.hdrs, "Host"), 1);
		assert_string_equal(headers_get(&hf.msg.hdrs, "Host"), "h");
		hframe_free(&hf);

		memset(&s, 0, sizeof(s));
		hframe_init(&hf, HFRAME_RESPONSE, &lim, sink_body, &s);
		feed_all(&hf, &s, resp, strlen(resp), step);
		assert_int_equal(hf.phase, HF_DONE);
		assert_int_equal(hf.msg.hdrs.n, 1);
		assert_null(headers_get(&hf.msg.hdrs, "Content-Type"));
		hframe_free(&hf);
	}
	/* Dropped, but bounded: trailers past header_bytes fail. */
	if ((big = malloc(3 * lim.header_bytes)) == NULL)
		fail();
	off = (size_t)snprintf(big, 3 * lim.header_bytes, "PUT /x HTTP/1.1\r\n"
	    "Host: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n");
	while (off + 16 < 3 * lim.header_bytes - 8)
		off += (size_t)snprintf(big + off, 3 * lim.header_bytes - off,
		    "X-Pad: 01234567\r\n");
	snprintf(big + off, 3 * lim.header_bytes - off, "\r\n");
	parse_req(big, &hf, &s, 100);
	assert_int_equal(hf.phase, HF_ERROR);
	assert_int_equal(hf.err, HF_E_HEADER_BYTES);
	hframe_free(&hf);
	free(big);
}

/* A bounded body: nothing past the bound reaches the consumer. */
static void
test_max_body(void **state)
{
	static const char	*r = "PUT /x HTTP/1.1\r\nHost: h\r\n"
	    "Transfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n4\r\nefgh\r\n"
	    "0\r\n\r\n";
	struct hframe		 hf;
	struct sink		 s;
	size_t			 n, len = strlen(r);

	(void)state;
	memset(&s, 0, sizeof(s));
	hframe_init(&hf, HFRAME_REQUEST, &lim, sink_body, &s);
	n = hframe_feed(&hf, r, len);
	assert_int_equal(hf.phase, HF_BODY_PARSED);
	assert_int_equal(hframe_set_max_body(&hf, 6), 0);
	feed_all(&hf, &s, r + n, len - n, 1);
	assert_int_equal(hf.phase, HF_ERROR);
	assert_int_equal(hf.err, HF_E_BODY_TOO_LARGE);
	assert_int_equal(hframe_err_status(hf.err), 413);
	assert_int_equal(s.len, 6);
	hframe_free(&hf);

	/* A Content-Length over the bound is for the caller to refuse. */
	parse_req("PUT /x HTTP/1.1\r\nHost: h\r\nContent-Length: 7\r\n\r\n",
	    &hf, &s, 64);
	assert_int_equal(hf.phase, HF_BODY_LENGTH);
	assert_int_equal(hframe_set_max_body(&hf, 6), -1);
	assert_int_equal(hframe_set_max_body(&hf, 7), 0);
	hframe_free(&hf);

	/* The next message on the connection is not bounded. */
	memset(&s, 0, sizeof(s));
	hframe_init(&hf, HFRAME_REQUEST, &lim, sink_body, &s);
	n = hframe_feed(&hf, r, len);
	hframe_set_max_body(&hf, 6);
	hframe_next(&hf);
	feed_all(&hf, &s, r, len, 5);
	assert_int_equal(hf.phase, HF_DONE);
	assert_int_equal(s.len, 8);
	hframe_free(&hf);
}

static void
test_expect_continue(void **state)
{
	struct hframe	 hf;
	struct sink	 s;

	(void)state;
	parse_req("PUT /x HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n"
	    "Content-Length: 3\r\n\r\n", &hf, &s, 64);
	assert_int_equal(hf.phase, HF_BODY_LENGTH);
	assert_true(hf.msg.expect_continue);
	hframe_free(&hf);

	/* RFC 9110 10.1.1: an HTTP/1.0 client gets no 100 Continue. */
	parse_req("PUT /x HTTP/1.0\r\nExpect: 100-continue\r\n"
	    "Content-Length: 3\r\n\r\n", &hf, &s, 64);
	assert_int_equal(hf.phase, HF_BODY_LENGTH);
	assert_false(hf.msg.expect_continue);
	hframe_free(&hf);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_simple_get),
		cmocka_unit_test(test_length_body_left_to_caller),
		cmocka_unit_test(test_chunked_body_decoded),
		cmocka_unit_test(test_bad_requests),
		cmocka_unit_test(test_limits),
		cmocka_unit_test(test_response_framing),
		cmocka_unit_test(test_expect_continue),
		cmocka_unit_test(test_strict_controls),
		cmocka_unit_test(test_max_body),
		cmocka_unit_test(test_trailers_dropped),
	};

	return (cmocka_run_group_tests(tests, NULL, NULL));
}
