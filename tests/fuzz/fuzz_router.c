/*
 * fuzz_router.c: libFuzzer target for router_parse.  Beyond not crashing,
 * it checks that a routed path is exactly the canonical path of its route:
 * the router never normalises, so what is authorised is what is sent.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "router.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static void
check(int cond)
{
	if (!cond)
		abort();
}

/* The one path that means r, and its length; -1 when not unique. */
static int
canonical(const struct oci_route *r, char *buf, size_t len)
{
	switch (r->ep) {
	case OCI_EP_CATALOG:
		return snprintf(buf, len, "/v2/_catalog");
	case OCI_EP_MANIFEST:
		return snprintf(buf, len, "/v2/%s/manifests/%s", r->name,
		    r->ref);
	case OCI_EP_BLOB:
		return snprintf(buf, len, "/v2/%s/blobs/%s", r->name, r->ref);
	case OCI_EP_UPLOAD:
		return snprintf(buf, len, "/v2/%s/blobs/uploads/%s", r->name,
		    r->ref);
	case OCI_EP_TAGS:
		return snprintf(buf, len, "/v2/%s/tags/list", r->name);
	case OCI_EP_REFERRERS:
		return snprintf(buf, len, "/v2/%s/referrers/%s", r->name,
		    r->ref);
	default:
		return -1;
	}
}

/* One fuzz input: must never crash, and every check must hold. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char		*path = (const char *)data;
	struct oci_route	 r, r2;
	char			 buf[1024];
	size_t			 nlen, rlen;
	int			 n;

	if (router_parse(path, size, &r) != ERR_NONE) {
		check(r.name[0] == '\0' && r.ref[0] == '\0');
		return 0;
	}
	check(strcmp(router_ep_name(r.ep), "unknown") != 0);
	nlen = strnlen(r.name, sizeof(r.name));
	rlen = strnlen(r.ref, sizeof(r.ref));
	check(nlen < sizeof(r.name) && rlen < sizeof(r.ref));
	check(strstr(r.name, "..") == NULL && strchr(r.name, '%') == NULL);

	switch (r.ep) {
	case OCI_EP_BASE:
		check(size == 3 || size == 4);
		check(nlen == 0 && rlen == 0);
		return 0;
	case OCI_EP_CATALOG:
		check(nlen == 0 && rlen == 0);
		break;
	case OCI_EP_UPLOAD_START:
		check(router_valid_name(r.name, nlen) && rlen == 0);
		n = snprintf(buf, sizeof(buf), "/v2/%s/blobs/uploads/",
		    r.name);
		check((size_t)n == size || (size_t)n == size + 1);
		check(memcmp(buf, path, size) == 0);
		return 0;
	case OCI_EP_MANIFEST:
		check(router_valid_name(r.name, nlen));
		check(r.ref_digest ? router_valid_digest(r.ref, rlen) :
		    router_valid_tag(r.ref, rlen));
		break;
	case OCI_EP_BLOB:
	case OCI_EP_REFERRERS:
		check(router_valid_name(r.name, nlen));
		check(r.ref_digest && router_valid_digest(r.ref, rlen));
		break;
	case OCI_EP_UPLOAD:
		check(router_valid_name(r.name, nlen));
		check(router_valid_upload_id(r.ref, rlen));
		break;
	case OCI_EP_TAGS:
		check(router_valid_name(r.name, nlen) && rlen == 0);
		break;
	default:
		abort();
	}

	/* No normalisation: the input is the canonical path, byte for byte. */
	n = canonical(&r, buf, sizeof(buf));
	check(n > 0 && (size_t)n == size && memcmp(buf, path, size) == 0);
	check(router_parse(buf, (size_t)n, &r2) == ERR_NONE);
	check(memcmp(&r, &r2, sizeof(r)) == 0);
	return 0;
}
