/*
 * router.h: the OCI distribution-spec router.  Maps a /v2 request path to
 * an endpoint, a repository name and a reference, and validates both
 * against the spec's grammars.  Leaf: no libevent, no project header but
 * errs.h.
 */
#ifndef PC_ROUTER_H
#define PC_ROUTER_H

#include <stddef.h>

#include "errs.h"

#define OCI_NAME_MAX	255
#define OCI_REF_MAX	255
#define OCI_TAG_MAX	128

/* X(enum, name) */
#define OCI_EPS(X)							\
	X(OCI_EP_BASE, "base")						\
	X(OCI_EP_CATALOG, "catalog")					\
	X(OCI_EP_MANIFEST, "manifest")					\
	X(OCI_EP_BLOB, "blob")						\
	X(OCI_EP_UPLOAD_START, "upload_start")				\
	X(OCI_EP_UPLOAD, "upload")					\
	X(OCI_EP_TAGS, "tags")						\
	X(OCI_EP_REFERRERS, "referrers")

#define OCI_EP_ENUM(e, s) e,
enum oci_ep {
	OCI_EPS(OCI_EP_ENUM)
	OCI_EP__MAX
};
#undef OCI_EP_ENUM

struct oci_route {
	enum oci_ep	 ep;
	char		 name[OCI_NAME_MAX + 1]; /* "" for base, catalog */
	char		 ref[OCI_REF_MAX + 1];	/* tag, digest, upload id */
	int		 ref_digest;		/* ref is a digest */
};

/* The endpoint's short name, e.g. "manifest"; "unknown" when out of range. */
const char	*router_ep_name(enum oci_ep);

/*
 * Route the request path (no query string, len bytes, need not be NUL
 * terminated) into r.  Returns ERR_NONE, ERR_NOT_FOUND, ERR_NAME_INVALID,
 * ERR_DIGEST_INVALID, ERR_TAG_INVALID or ERR_UPLOAD_INVALID.  On failure
 * r->name and r->ref are empty and r->ep is meaningless, except that a
 * manifest reference that is neither a tag nor a digest (ERR_TAG_INVALID
 * or ERR_DIGEST_INVALID) leaves r->ep at OCI_EP_MANIFEST: the caller
 * answers a read of it as an unknown manifest (router_ref_err()).
 */
enum pc_err	 router_parse(const char *path, size_t len,
		    struct oci_route *r);

/*
 * The error to answer for router_parse()'s `e`; `is_write` is 1 for a
 * PUT.  GET, HEAD and DELETE of a manifest reference that cannot exist
 * are 404 MANIFEST_UNKNOWN, as the reference registry answers; a PUT
 * keeps TAG_INVALID or DIGEST_INVALID.
 */
enum pc_err	 router_ref_err(enum pc_err e, const struct oci_route *r,
		    int is_write);

/* Grammar checks over len bytes: 1 when valid, 0 when not. */
int		 router_valid_name(const char *, size_t);
int		 router_valid_tag(const char *, size_t);
int		 router_valid_digest(const char *, size_t);
int		 router_valid_upload_id(const char *, size_t);

#endif
