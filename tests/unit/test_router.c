#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

/*
 * test_router.c: the OCI router.  Every endpoint, the name, tag, digest
 * and upload-id grammars, the right-to-left reading of names that hold
 * endpoint keywords, and the path tricks that must never reach another
 * repository.
 */
#include <stdio.h>
#include <string.h>

#include "router.h"

#define HEX64								\
	"ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb"
#define D256	"sha256:" HEX64
#define D512	"sha512:" HEX64 HEX64

struct route_case {
	const char	*path;
	enum pc_err	 err;
	enum oci_ep	 ep;
	const char	*name;
	const char	*ref;
	int		 digest;
};

static const struct route_case good_routes[] = {
	{ "/v2", ERR_NONE, OCI_EP_BASE, "", "", 0 },
	{ "/v2/", ERR_NONE, OCI_EP_BASE, "", "", 0 },
	{ "/v2/_catalog", ERR_NONE, OCI_EP_CATALOG, "", "", 0 },
	{ "/v2/alpine/manifests/latest", ERR_NONE, OCI_EP_MANIFEST,
	    "alpine", "latest", 0 },
	{ "/v2/library/alpine/manifests/3.19", ERR_NONE, OCI_EP_MANIFEST,
	    "library/alpine", "3.19", 0 },
	{ "/v2/a/manifests/" D256, ERR_NONE, OCI_EP_MANIFEST,
	    "a", D256, 1 },
	{ "/v2/a/manifests/" D512, ERR_NONE, OCI_EP_MANIFEST,
	    "a", D512, 1 },
	{ "/v2/hub/library/alpine/blobs/" D256, ERR_NONE, OCI_EP_BLOB,
	    "hub/library/alpine", D256, 1 },
	{ "/v2/a/b/blobs/uploads/", ERR_NONE, OCI_EP_UPLOAD_START,
	    "a/b", "", 0 },
	{ "/v2/a/b/blobs/uploads", ERR_NONE, OCI_EP_UPLOAD_START,
	    "a/b", "", 0 },
	{ "/v2/a/blobs/uploads/5f2c-44a1_x.y=+", ERR_NONE, OCI_EP_UPLOAD,
	    "a", "5f2c-44a1_x.y=+", 0 },
	{ "/v2/my-org/img/tags/list", ERR_NONE, OCI_EP_TAGS,
	    "my-org/img", "", 0 },
	{ "/v2/a/referrers/" D256, ERR_NONE, OCI_EP_REFERRERS,
	    "a", D256, 1 },
	{ "/v2/a__b/c.d/e--f/manifests/_v1.0-rc", ERR_NONE, OCI_EP_MANIFEST,
	    "a__b/c.d/e--f", "_v1.0-rc", 0 },

	/* Endpoint keywords as repository components: read from the right. */
	{ "/v2/a/blobs/blobs/" D256, ERR_NONE, OCI_EP_BLOB,
	    "a/blobs", D256, 1 },
	{ "/v2/manifests/manifests/latest", ERR_NONE, OCI_EP_MANIFEST,
	    "manifests", "latest", 0 },
	{ "/v2/a/manifests/manifests", ERR_NONE, OCI_EP_MANIFEST,
	    "a", "manifests", 0 },
	{ "/v2/a/blobs/manifests/t", ERR_NONE, OCI_EP_MANIFEST,
	    "a/blobs", "t", 0 },
	{ "/v2/a/blobs/uploads/uploads", ERR_NONE, OCI_EP_UPLOAD,
	    "a", "uploads", 0 },
	{ "/v2/a/blobs/uploads/blobs/uploads/", ERR_NONE,
	    OCI_EP_UPLOAD_START, "a/blobs/uploads", "", 0 },
	{ "/v2/a/blobs/uploads/blobs/" D256, ERR_NONE, OCI_EP_BLOB,
	    "a/blobs/uploads", D256, 1 },
	{ "/v2/blobs/blobs/uploads", ERR_NONE, OCI_EP_UPLOAD_START,
	    "blobs", "", 0 },
	{ "/v2/tags/list/tags/list", ERR_NONE, OCI_EP_TAGS,
	    "tags/list", "", 0 },
	{ "/v2/a/tags/list/manifests/list", ERR_NONE, OCI_EP_MANIFEST,
	    "a/tags/list", "list", 0 },
	{ "/v2/referrers/referrers/" D256, ERR_NONE, OCI_EP_REFERRERS,
	    "referrers", D256, 1 },
	{ "/v2/catalog/manifests/x", ERR_NONE, OCI_EP_MANIFEST,
	    "catalog", "x", 0 },
};

static const struct route_case bad_routes[] = {
	/* Not a /v2 endpoint. */
	{ "", ERR_NOT_FOUND, 0, NULL, NULL, 0 },
	{ "/", ERR_NOT_FOUND, 0, NULL, NULL, 0 },
	{ "/v", ERR_NOT_FOUND, 0, NULL, NULL, 0 },
	{ "/v1/a/manifests/t", ERR_NOT_FOUND, 0, NULL, NULL, 0 },
	{ "/V2/", ERR_NOT_FOUND, 0, NULL, NULL, 0 },
	{ "/v22/", ERR_NOT_FOUND, 0, NULL, NULL, 0 },
	{ "v2/", ERR_NOT_FOUND, 0, NULL, NULL, 0 },
	{ "//v2/a/manifests/t", ERR_NOT_FOUND, 0, NULL, NULL, 0 },
	{ "/v2%2fa/manifests/t", ERR_NOT_FOUND, 0, NULL, NULL, 0 },
	{ "/v2/a", ERR_NOT_FOUND, 0, NULL, NULL, 0 },
	{ "/v2/a/b", ERR_NOT_FOUND, 0, NULL, NULL, 0 },
	{ "/v2/a/manifests", ERR_NOT_FOUND, 0, NULL, NULL, 0 },
	{ "/v2/a/manifests/", ERR_NOT_FOUND, 0, NULL, NULL, 0 },
	{ "/v2/a/manifests/t/", ERR_NOT_FOUND, 0, NULL, NULL, 0 },
	{ "/v2/a/tags/list/", ERR_NOT_FOUND, 0, NULL, NULL, 0 },
	{ "/v2/a/tags/lists", ERR_NOT_FOUND, 0, NULL, NULL, 0 },
	{ "/v2/a/tags", ERR_NOT_FOUND, 0, NULL, NULL, 0 },
	{ "/v2/a/uploads/x", ERR_NOT_FOUND, 0, NULL, NULL, 0 },
	{ "/v2/manifests/latest", ERR_NOT_FOUND, 0, NULL, NULL, 0 },
	{ "/v2/blobs/uploads", ERR_NOT_FOUND, 0, NULL, NULL, 0 },
	{ "/v2/blobs/uploads/x", ERR_NOT_FOUND, 0, NULL, NULL, 0 },
	{ "/v2/tags/list", ERR_NOT_FOUND, 0, NULL, NULL, 0 },
	{ "/v2/_catalog/", ERR_NOT_FOUND, 0, NULL, NULL, 0 },
	{ "/v2/a/blobs/uploads/x/", ERR_NOT_FOUND, 0, NULL, NULL, 0 },

	/* Path tricks. */
	{ "/v2/../x", ERR_NAME_INVALID, 0, NULL, NULL, 0 },
	{ "/v2/a/../b/manifests/t", ERR_NAME_INVALID, 0, NULL, NULL, 0 },
	{ "/v2/a/./b/manifests/t", ERR_NAME_INVALID, 0, NULL, NULL, 0 },
	{ "/v2/a%2fb/manifests/t", ERR_NAME_INVALID, 0, NULL, NULL, 0 },
	{ "/v2/a%2Fb/manifests/t", ERR_NAME_INVALID, 0, NULL, NULL, 0 },
	{ "/v2/%2e%2e/x/manifests/t", ERR_NAME_INVALID, 0, NULL, NULL, 0 },
	{ "/v2/a/manifests/t%00", ERR_NAME_INVALID, 0, NULL, NULL, 0 },
	{ "/v2/%5fcatalog", ERR_NAME_INVALID, 0, NULL, NULL, 0 },
	{ "/v2//a/manifests/t", ERR_NAME_INVALID, 0, NULL, NULL, 0 },
	{ "/v2/a//b/manifests/t", ERR_NAME_INVALID, 0, NULL, NULL, 0 },
	{ "/v2/a/manifests//t", ERR_NAME_INVALID, 0, NULL, NULL, 0 },
	{ "/v2//", ERR_NAME_INVALID, 0, NULL, NULL, 0 },
	{ "/v2/a/manifests/t/../u", ERR_NAME_INVALID, 0, NULL, NULL, 0 },
	{ "/v2/a/b/../../c/manifests/t", ERR_NAME_INVALID, 0, NULL, NULL, 0 },
	{ "/v2/a\\b/manifests/t", ERR_NAME_INVALID, 0, NULL, NULL, 0 },
	{ "/v2/a/manifests/t\\..", ERR_NAME_INVALID, 0, NULL, NULL, 0 },
	{ "/v2/a/manifests/t\r\nX: y", ERR_NAME_INVALID, 0, NULL, NULL, 0 },
	{ "/v2/a\t/manifests/t", ERR_NAME_INVALID, 0, NULL, NULL, 0 },
	{ "/v2/a\x7f/manifests/t", ERR_NAME_INVALID, 0, NULL, NULL, 0 },
	{ "/v2/a/blobs/uploads/..", ERR_NAME_INVALID, 0, NULL, NULL, 0 },
	{ "/v2/a/blobs/uploads/.", ERR_NAME_INVALID, 0, NULL, NULL, 0 },

	/* Bad names. */
	{ "/v2/A/manifests/t", ERR_NAME_INVALID, 0, NULL, NULL, 0 },
	{ "/v2/Library/alpine/manifests/t", ERR_NAME_INVALID,
	    0, NULL, NULL, 0 },
	{ "/v2/-a/manifests/t", ERR_NAME_INVALID, 0, NULL, NULL, 0 },
	{ "/v2/a-/manifests/t", ERR_NAME_INVALID, 0, NULL, NULL, 0 },
	{ "/v2/a..b/manifests/t", ERR_NAME_INVALID, 0, NULL, NULL, 0 },
	{ "/v2/a___b/tags/list", ERR_NAME_INVALID, 0, NULL, NULL, 0 },
	{ "/v2/a b/tags/list", ERR_NAME_INVALID, 0, NULL, NULL, 0 },
	{ "/v2/_catalog/manifests/t", ERR_NAME_INVALID, 0, NULL, NULL, 0 },
	{ "/v2/a:b/blobs/uploads/", ERR_NAME_INVALID, 0, NULL, NULL, 0 },
	{ "/v2/\xc3\xa9/manifests/t", ERR_NAME_INVALID, 0, NULL, NULL, 0 },
	/* The name is checked before the reference. */
	{ "/v2/A/manifests/-bad", ERR_NAME_INVALID, 0, NULL, NULL, 0 },

	/* Bad references. */
	{ "/v2/a/manifests/-t", ERR_TAG_INVALID, 0, NULL, NULL, 0 },
	{ "/v2/a/manifests/.t", ERR_TAG_INVALID, 0, NULL, NULL, 0 },
	{ "/v2/a/manifests/t@x", ERR_TAG_INVALID, 0, NULL, NULL, 0 },
	{ "/v2/a/manifests/sha256:abc", ERR_DIGEST_INVALID, 0, NULL, NULL, 0 },
	{ "/v2/a/manifests/md5:" HEX64, ERR_DIGEST_INVALID, 0, NULL, NULL, 0 },
	{ "/v2/a/blobs/" HEX64, ERR_DIGEST_INVALID, 0, NULL, NULL, 0 },
	{ "/v2/a/blobs/latest", ERR_DIGEST_INVALID, 0, NULL, NULL, 0 },
	{ "/v2/a/blobs/SHA256:" HEX64, ERR_DIGEST_INVALID, 0, NULL, NULL, 0 },
	{ "/v2/a/referrers/latest", ERR_DIGEST_INVALID, 0, NULL, NULL, 0 },
	{ "/v2/a/referrers/sha256:" HEX64 "0", ERR_DIGEST_INVALID,
	    0, NULL, NULL, 0 },
	{ "/v2/a/blobs/uploads/a:b", ERR_UPLOAD_INVALID, 0, NULL, NULL, 0 },
	{ "/v2/a/blobs/uploads/a b", ERR_UPLOAD_INVALID, 0, NULL, NULL, 0 },
	{ "/v2/a/blobs/uploads/a~b", ERR_UPLOAD_INVALID, 0, NULL, NULL, 0 },
};

static void
test_ep_names(void **state)
{
	(void)state;
	assert_string_equal(router_ep_name(OCI_EP_BASE), "base");
	assert_string_equal(router_ep_name(OCI_EP_CATALOG), "catalog");
	assert_string_equal(router_ep_name(OCI_EP_MANIFEST), "manifest");
	assert_string_equal(router_ep_name(OCI_EP_BLOB), "blob");
	assert_string_equal(router_ep_name(OCI_EP_UPLOAD_START),
	    "upload_start");
	assert_string_equal(router_ep_name(OCI_EP_UPLOAD), "upload");
	assert_string_equal(router_ep_name(OCI_EP_TAGS), "tags");
	assert_string_equal(router_ep_name(OCI_EP_REFERRERS), "referrers");
	assert_string_equal(router_ep_name(OCI_EP__MAX), "unknown");
	assert_string_equal(router_ep_name((enum oci_ep)-1), "unknown");
}

static void
test_good_routes(void **state)
{
	struct oci_route	r;
	enum pc_err		e;
	size_t			i;

	(void)state;
	for (i = 0; i < sizeof(good_routes) / sizeof(good_routes[0]); i++) {
		const struct route_case *t = &good_routes[i];

		e = router_parse(t->path, strlen(t->path), &r);
		if (e != ERR_NONE || r.ep != t->ep ||
		    strcmp(r.name, t->name) != 0 ||
		    strcmp(r.ref, t->ref) != 0 || r.ref_digest != t->digest)
			fail_msg("%s: %s %s '%s' '%s' %d", t->path,
			    errs_name(e), router_ep_name(r.ep), r.name, r.ref,
			    r.ref_digest);
	}
}

static void
test_bad_routes(void **state)
{
	struct oci_route	r;
	enum pc_err		e;
	size_t			i;

	(void)state;
	for (i = 0; i < sizeof(bad_routes) / sizeof(bad_routes[0]); i++) {
		const struct route_case *t = &bad_routes[i];

		e = router_parse(t->path, strlen(t->path), &r);
		if (e != t->err)
			fail_msg("%s: %s, want %s", t->path, errs_name(e),
			    errs_name(t->err));
		/* A failed route leaves nothing a caller could act on. */
		assert_string_equal(r.name, "");
		assert_string_equal(r.ref, "");
		assert_int_equal(r.ref_digest, 0);
	}
}

/* len, not NUL, ends the path; a NUL inside it is a control byte. */
static void
test_path_len(void **state)
{
	static const char	 buf[] = "/v2/a/manifests/latestXYZ?x=1";
	static const char	 nul[] = "/v2/a/manifests/t\0/../../b";
	struct oci_route	 r;

	(void)state;
	assert_int_equal(router_parse(buf, strlen(buf) - 7, &r), ERR_NONE);
	assert_string_equal(r.ref, "latest");
	assert_int_equal(router_parse(buf, 2, &r), ERR_NOT_FOUND);
	assert_int_equal(router_parse(buf, 0, &r), ERR_NOT_FOUND);
	assert_int_equal(router_parse(NULL, 10, &r), ERR_NOT_FOUND);
	assert_int_equal(router_parse(nul, sizeof(nul) - 1, &r),
	    ERR_NAME_INVALID);
	assert_int_equal(router_parse(nul, strlen(nul), &r), ERR_NONE);
	assert_string_equal(r.ref, "t");
}

/* Names of 255 bytes route; 256 do not, neither whole nor in parts. */
static void
test_name_length(void **state)
{
	char			 name[300], path[400];
	struct oci_route	 r;

	(void)state;
	memset(name, 'a', sizeof(name));
	name[1] = '/';
	assert_int_equal(router_valid_name(name, 255), 1);
	assert_int_equal(router_valid_name(name, 256), 0);

	snprintf(path, sizeof(path), "/v2/%.255s/manifests/t", name);
	assert_int_equal(router_parse(path, strlen(path), &r), ERR_NONE);
	assert_int_equal(strlen(r.name), 255);
	assert_memory_equal(r.name, name, 255);

	snprintf(path, sizeof(path), "/v2/%.256s/manifests/t", name);
	assert_int_equal(router_parse(path, strlen(path), &r),
	    ERR_NAME_INVALID);
	assert_string_equal(r.name, "");
}

struct valid_case {
	const char	*s;
	int		 ok;
};

static const struct valid_case names[] = {
	{ "a", 1 }, { "0", 1 }, { "library/alpine", 1 }, { "a.b", 1 },
	{ "a_b", 1 }, { "a__b", 1 }, { "a-b", 1 }, { "a---b", 1 },
	{ "a.b-c_d__e/f0", 1 }, { "a/b/c/d/e", 1 },
	{ "", 0 }, { "A", 0 }, { "aB", 0 }, { ".a", 0 }, { "a.", 0 },
	{ "-a", 0 }, { "a-", 0 }, { "_a", 0 }, { "a_", 0 }, { "a..b", 0 },
	{ "a___b", 0 }, { "a._b", 0 }, { "a-.b", 0 }, { "a_-b", 0 },
	{ "/a", 0 }, { "a/", 0 }, { "a//b", 0 }, { "a/./b", 0 },
	{ "a/../b", 0 }, { "a b", 0 }, { "a:b", 0 }, { "a@b", 0 },
	{ "a%2fb", 0 },
};

static const struct valid_case tags[] = {
	{ "latest", 1 }, { "v1.0", 1 }, { "_x", 1 }, { "A-b_C.d", 1 },
	{ "0", 1 }, { "1.0--rc.._", 1 },
	{ "", 0 }, { ".x", 0 }, { "-x", 0 }, { "a/b", 0 }, { "a:b", 0 },
	{ "a b", 0 }, { "a+b", 0 }, { "\xc3\xa9", 0 },
};

static const struct valid_case digests[] = {
	{ D256, 1 }, { D512, 1 },
	{ "", 0 }, { "sha256", 0 }, { "sha256:", 0 }, { HEX64, 0 },
	{ "sha256" HEX64, 0 }, { "sha256:" HEX64 "a", 0 },
	/* 63 hex digits; uppercase; not hex. */
	{ "sha256:"
	    "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48b",
	    0 },
	{ "sha256:"
	    "CA978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb",
	    0 },
	{ "sha256:"
	    "ga978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb",
	    0 },
	{ "SHA256:" HEX64, 0 }, { "sha512:" HEX64, 0 },
	{ "sha384:" HEX64, 0 }, { "md5:" HEX64, 0 },
	{ "sha256+b64u:" HEX64, 0 }, { "sha256::" HEX64, 0 },
};

static const struct valid_case upload_ids[] = {
	{ "0f3a", 1 }, { "a.b_c=d+e-f", 1 }, { "...", 1 },
	{ "dGVzdA==", 1 },
	{ "", 0 }, { ".", 0 }, { "..", 0 }, { "a/b", 0 }, { "a:b", 0 },
	{ "a%b", 0 }, { "a b", 0 },
};

static void
check_valid(const struct valid_case *t, size_t n,
    int (*fn)(const char *, size_t))
{
	size_t	i;

	for (i = 0; i < n; i++) {
		if (fn(t[i].s, strlen(t[i].s)) != t[i].ok)
			fail_msg("'%s' should be %s", t[i].s,
			    t[i].ok ? "valid" : "invalid");
	}
}

static void
test_valid_name(void **state)
{
	(void)state;
	check_valid(names, sizeof(names) / sizeof(names[0]),
	    router_valid_name);
	assert_int_equal(router_valid_name(NULL, 0), 0);
	/* len bounds the check: "ab" is valid, 'B' beyond it is unread. */
	assert_int_equal(router_valid_name("abB", 2), 1);
}

static void
test_valid_tag(void **state)
{
	char	tag[200];

	(void)state;
	check_valid(tags, sizeof(tags) / sizeof(tags[0]), router_valid_tag);
	memset(tag, 'x', sizeof(tag));
	assert_int_equal(router_valid_tag(tag, 128), 1);
	assert_int_equal(router_valid_tag(tag, 129), 0);
}

static void
test_valid_digest(void **state)
{
	(void)state;
	check_valid(digests, sizeof(digests) / sizeof(digests[0]),
	    router_valid_digest);
}

static void
test_valid_upload_id(void **state)
{
	char	id[300];

	(void)state;
	check_valid(upload_ids, sizeof(upload_ids) / sizeof(upload_ids[0]),
	    router_valid_upload_id);
	memset(id, 'u', sizeof(id));
	assert_int_equal(router_valid_upload_id(id, 255), 1);
	assert_int_equal(router_valid_upload_id(id, 256), 0);
}

/* Tags over 128 bytes and upload ids over 255 are refused in routes. */
static void
test_long_refs(void **state)
{
	char			 path[700];
	struct oci_route	 r;
	int			 n;

	(void)state;
	n = snprintf(path, sizeof(path), "/v2/a/manifests/%0128d", 0);
	assert_int_equal(router_parse(path, n, &r), ERR_NONE);
	n = snprintf(path, sizeof(path), "/v2/a/manifests/%0129d", 0);
	assert_int_equal(router_parse(path, n, &r), ERR_TAG_INVALID);
	n = snprintf(path, sizeof(path), "/v2/a/blobs/uploads/%0255d", 0);
	assert_int_equal(router_parse(path, n, &r), ERR_NONE);
	assert_int_equal(strlen(r.ref), 255);
	n = snprintf(path, sizeof(path), "/v2/a/blobs/uploads/%0256d", 0);
	assert_int_equal(router_parse(path, n, &r), ERR_UPLOAD_INVALID);
}

/* A manifest reference that cannot exist is unknown to a read only. */
static void
test_ref_err(void **state)
{
	static const char *const bad[] = {
		"/v2/a/manifests/-t", "/v2/a/manifests/sha256:abc",
		"/v2/a/manifests/md5:" HEX64,
	};
	struct oci_route	 r;
	enum pc_err		 e;
	size_t			 i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		e = router_parse(bad[i], strlen(bad[i]), &r);
		assert_true(e == ERR_TAG_INVALID || e == ERR_DIGEST_INVALID);
		assert_int_equal(router_ref_err(e, &r, 0),
		    ERR_MANIFEST_UNKNOWN);
		assert_int_equal(router_ref_err(e, &r, 1), e);
	}
	/* Blobs, names and upload ids keep their own errors. */
	e = router_parse("/v2/a/blobs/latest", 18, &r);
	assert_int_equal(router_ref_err(e, &r, 0), ERR_DIGEST_INVALID);
	e = router_parse("/v2/A/manifests/t", 17, &r);
	assert_int_equal(router_ref_err(e, &r, 0), ERR_NAME_INVALID);
}

/* Run every test of this module. */
int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ep_names),
		cmocka_unit_test(test_good_routes),
		cmocka_unit_test(test_bad_routes),
		cmocka_unit_test(test_path_len),
		cmocka_unit_test(test_name_length),
		cmocka_unit_test(test_valid_name),
		cmocka_unit_test(test_valid_tag),
		cmocka_unit_test(test_valid_digest),
		cmocka_unit_test(test_valid_upload_id),
		cmocka_unit_test(test_long_refs),
		cmocka_unit_test(test_ref_err),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
