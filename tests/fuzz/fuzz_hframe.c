/*
 * fuzz_hframe.c: libFuzzer target for the request and response framer.
 * The first byte picks request or response and how the input is split into
 * feeds (the framer must not care where reads end).  Checks the limits hold
 * (no head over header_bytes, no more fields than header_count), that a
 * Content-Length body is never handed out beyond its length, and that an
 * accepted message never carries both framings or a request target with
 * bytes outside RFC 3986.  With an odd feed size each decoded body is
 * bounded (hframe_set_max_body) and must never hand out more.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hframe.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static const struct hframe_limits lim = { 1024, 16, 256 };

#define FUZZ_MAX_BODY	100

static void
check(int cond)
{
	if (!cond)
		abort();
}

static int
body(void *arg, const char *data, size_t len)
{
	*(uint64_t *)arg += len;
	return (0);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct hframe	 hf;
	uint64_t	 got = 0, moved = 0, n;
	const char	*p;
	size_t		 left, step, used;
	int		 rounds = 0;

	if (size < 1)
		return (0);
	hframe_init(&hf, (data[0] & 1) ? HFRAME_RESPONSE : HFRAME_REQUEST,
	    &lim, body, &got);
	step = (data[0] >> 1) + 1;
	p = (const char *)data + 1;
	left = size - 1;
	while (left > 0 && rounds++ < 100000) {
		if (hf.phase == HF_ERROR)
			break;
		if (hf.phase == HF_DONE) {
			hframe_next(&hf);
			got = moved = 0;
			continue;
		}
		if (hf.phase == HF_BODY_LENGTH) {
			/* The caller moves Content-Length bodies itself. */
			n = hf.remaining < left ? hf.remaining : left;
			if (n > step)
				n = step;
			hframe_body_consumed(&hf, n);
			moved += n;
			p += n;
			left -= n;
			continue;
		}
		if (hf.phase == HF_BODY_PARSED && (step & 1) &&
		    hf.max_body == 0)
			hframe_set_max_body(&hf, FUZZ_MAX_BODY);
		used = hframe_feed(&hf, p, left < step ? left : step);
		if (hf.max_body != 0)
			check(got <= FUZZ_MAX_BODY);
		check(used <= (left < step ? left : step));
		if (hf.phase != HF_HEAD && hf.phase != HF_ERROR) {
			check(hf.head_bytes <= lim.header_bytes + 2);
			check(hf.msg.hdrs.n <= lim.header_count);
			check(!(hf.msg.chunked && hf.msg.has_length));
			/* Only RFC 3986 bytes in an accepted target. */
			if (hf.kind == HFRAME_REQUEST)
				check(hframe_valid_target(hf.msg.url,
				    hf.msg.url_len));
			if (hf.msg.has_length)
				check(moved + got <= hf.msg.length ||
				    hf.phase == HF_DONE);
		}
		if (used == 0 && hf.phase == HF_HEAD)
			break;
		p += used;
		left -= used;
	}
	if (hf.phase == HF_ERROR)
		check(hframe_err_status(hf.err) >= 400);
	hframe_free(&hf);
	return (0);
}
