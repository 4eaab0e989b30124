/*
 * fuzz_login_http.c: libFuzzer target for the answer parser of the
 * terminal sign-in's HTTP client (login_http.c: the status line, the
 * head's end, the chunked decoder).  The input is one whole answer as a
 * hostile registry or provider would send it.  Checks that a parsed
 * body is NUL-terminated, no longer than the input nor than
 * LOGIN_MAX_ANSWER.
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "portcullis.h"
#include "login.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

/* login_http.c's only calls into log.c: nothing a peer may reach. */
void
fatal(const char *fmt, ...)
{
	(void)fmt;
	abort();
}

void
fatalx(const char *fmt, ...)
{
	(void)fmt;
	abort();
}

static void
check(int cond)
{
	if (!cond)
		abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct login_resp	 r;
	char			*raw;

	if ((raw = malloc(size + 1)) == NULL)
		return (0);
	memcpy(raw, data, size);
	raw[size] = '\0';
	if (login_http_parse(raw, size, &r) == 0) {
		check(r.body != NULL);
		check(r.len <= size && r.len <= LOGIN_MAX_ANSWER);
		check(r.body[r.len] == '\0');
		login_resp_free(&r);
	} else
		check(r.body == NULL);
	free(raw);
	return (0);
}
