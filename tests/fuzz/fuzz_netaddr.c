/*
 * fuzz_netaddr.c: libFuzzer target for netaddr.c.  The input is both the
 * 16 bytes of an address (classified as IPv6 and, from its first 4 bytes,
 * IPv4) and a list of allow-list entries separated by newlines matched
 * against a host and port taken from the input too.  Checks that an
 * IPv4-mapped address classifies as its IPv4 address, and that an entry
 * always matches the host and port it names.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "netaddr.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static void
check(int cond)
{
	if (!cond)
		abort();
}

/* One fuzz input: must never crash, and every check must hold. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char	 text[4096], entry[300];
	unsigned char	 a6[16];
	char		*list[64], *p, *save = NULL, *host;
	size_t		 n = 0;
	int		 port;

	if (size < 18 || size >= sizeof(text))
		return 0;
	memcpy(a6, data, 16);
	check(netaddr_class_v6(a6) < NETADDR__MAX);
	check(netaddr_class_v4(a6) < NETADDR__MAX);
	memset(a6, 0, 10);
	a6[10] = a6[11] = 0xff;
	memcpy(a6 + 12, data, 4);
	check(netaddr_class_v6(a6) == netaddr_class_v4(data));
	check(netaddr_class_str(netaddr_class_v4(data)) != NULL);

	port = data[16] << 8 | data[17];
	memcpy(text, data + 18, size - 18);
	text[size - 18] = '\0';
	for (p = strtok_r(text, "\n", &save); p != NULL && n < 64;
	    p = strtok_r(NULL, "\n", &save))
		list[n++] = p;
	(void)netaddr_listed(list, n, n > 0 ? list[0] : "", port);
	/* An entry "host:port" for a plain host name matches exactly that. */
	if (n > 0 && strpbrk(list[0], ":[]") == NULL && *list[0] != '\0' &&
	    strlen(list[0]) < 250) {
		host = list[0];
		snprintf(entry, sizeof(entry), "%s:%d", host, port);
		list[0] = entry;
		check(netaddr_listed(list, 1, host, port) == 1);
		check(port == 65535 || netaddr_listed(list, 1, host,
		    port + 1) == 0);
	}
	return 0;
}
