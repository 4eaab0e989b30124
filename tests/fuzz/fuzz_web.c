/*
 * fuzz_web.c: libFuzzer target for web.c.  The input is both a Cookie
 * header and a value to escape.  Checks that a cookie found is made of
 * cookie-octets and fits, that the escaped text holds no markup byte
 * ('<', '>', '"', '\'', and '&' only as a character reference) and no
 * control character but tab and newline.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "web.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static void
check(int cond)
{
	if (!cond)
		abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char		*s, v[64];
	struct wbuf	 b;
	size_t		 i;

	if ((s = malloc(size + 1)) == NULL)
		return (0);
	memcpy(s, data, size);
	s[size] = '\0';
	if (web_cookie_get(s, 4096, "sid", v, sizeof(v)) == 0) {
		check(strlen(v) > 0 && strlen(v) < sizeof(v));
		for (i = 0; v[i] != '\0'; i++)
			check(v[i] > 0x20 && v[i] < 0x7f && v[i] != '"' &&
			    v[i] != ',' && v[i] != ';' && v[i] != '\\');
	}
	wbuf_init(&b);
	wbuf_esc(&b, s);
	for (i = 0; b.p != NULL && b.p[i] != '\0'; i++) {
		unsigned char	 c = (unsigned char)b.p[i];

		check(c != '<' && c != '>' && c != '"' && c != '\'');
		check(c >= 0x20 || c == '\t' || c == '\n');
		check(c != 0x7f);
		if (c == '&')
			check(strncmp(b.p + i, "&amp;", 5) == 0 ||
			    strncmp(b.p + i, "&lt;", 4) == 0 ||
			    strncmp(b.p + i, "&gt;", 4) == 0 ||
			    strncmp(b.p + i, "&quot;", 6) == 0 ||
			    strncmp(b.p + i, "&#39;", 5) == 0);
	}
	wbuf_free(&b);
	free(s);
	return (0);
}
