/*
 * router.c: map a /v2 request path onto an OCI distribution-spec endpoint
 * ("Endpoints" table of the distribution spec) and validate the repository
 * name and reference it carries.
 *
 * Guarantees, for any input bytes:
 * - On ERR_NONE, r->name is empty (base, catalog) or matches the name
 *   grammar (component ("/" component)*, component =
 *   [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*, at most 255 bytes), so it never
 *   holds "..", ".", an empty component, '%', '\\' or a control byte; and
 *   r->ref is a valid tag, digest (sha256 or sha512, lowercase hex) or
 *   upload id for the endpoint.  Both are NUL-terminated.
 * - Nothing is decoded.  A path that needs decoding or normalising to mean
 *   something is refused rather than reinterpreted, so the repository a
 *   request is authorised for is the one the upstream sees:
 *   - a path not starting with "/v2/" (or exactly "/v2") is ERR_NOT_FOUND;
 *   - after "/v2/", any '%', '\\', NUL or other control byte (< 0x20,
 *     0x7f), any empty segment ("//") other than the final slash of
 *     "blobs/uploads/", and any "." or ".." segment is ERR_NAME_INVALID,
 *     wherever it sits (so "/v2/a/manifests/t/../u" and an upload id ".."
 *     are NAME_INVALID too).
 * - Repository names hold slashes and may contain components called
 *   "manifests", "blobs", "uploads", "tags" or "referrers", so the endpoint
 *   is read from the right: the last one to three segments pick the
 *   endpoint and everything before them is the name.  The tails never
 *   overlap, except "<name>/blobs/uploads", which is the upload start and
 *   never a blob with digest "uploads".  Examples: "/v2/a/blobs/blobs/<d>"
 *   is blob <d> of "a/blobs"; "/v2/a/blobs/uploads/uploads" is upload
 *   "uploads" of "a"; "/v2/a/manifests/manifests" is tag "manifests" of
 *   "a".  A tail with nothing before it ("/v2/manifests/x") is
 *   ERR_NOT_FOUND.
 * - The name is checked before the reference: a request bad in both
 *   answers ERR_NAME_INVALID.  A manifest reference with a ':' is a digest
 *   (ERR_DIGEST_INVALID when bad), otherwise a tag (ERR_TAG_INVALID).
 *   Reading such a reference is not malformed to a client, only unknown:
 *   the reference registry's routes match tag|digest, and anything else
 *   is a 404 there.  router_ref_err() makes the same answer; only a PUT,
 *   which would create the reference, is told it is invalid.
 */
#include <string.h>

#include "router.h"

#define OCI_EP_NAME(e, s) s,
static const char *const router_ep_names[] = {
	OCI_EPS(OCI_EP_NAME)
};
#undef OCI_EP_NAME

/* Short endpoint name from the OCI_EPS list, for logs and metrics. */
const char *
router_ep_name(enum oci_ep ep)
{
	if ((unsigned)ep >= OCI_EP__MAX)
		return "unknown";
	return router_ep_names[ep];
}

/* Locale-independent character classes. */
static int
router_lower_alnum(unsigned char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9');
}

static int
router_alnum(unsigned char ch)
{
	return router_lower_alnum(ch) || (ch >= 'A' && ch <= 'Z');
}

static int
router_lower_hex(unsigned char ch)
{
	return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f');
}

/* Does s (len bytes) equal the C string lit? */
static int
router_eq(const char *s, size_t len, const char *lit)
{
	return strlen(lit) == len && memcmp(s, lit, len) == 0;
}

/* Name grammar of the distribution spec, "Pulling manifests". */
int
router_valid_name(const char *s, size_t len)
{
	const unsigned char	*p = (const unsigned char *)s;
	size_t			 i = 0;

	if (s == NULL || len == 0 || len > OCI_NAME_MAX)
		return 0;
	for (;;) {
		/* Every component, and every part after a separator. */
		if (i == len || !router_lower_alnum(p[i]))
			return 0;
		while (i < len && router_lower_alnum(p[i]))
			i++;
		if (i == len)
			return 1;
		switch (p[i]) {
		case '/':
		case '.':
			i++;
			break;
		case '_':
			i++;
			if (i < len && p[i] == '_')
				i++;
			break;
		case '-':
			while (i < len && p[i] == '-')
				i++;
			break;
		default:
			return 0;
		}
	}
}

/* tag = [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127} */
int
router_valid_tag(const char *s, size_t len)
{
	const unsigned char	*p = (const unsigned char *)s;
	size_t			 i;

	if (s == NULL || len == 0 || len > OCI_TAG_MAX)
		return 0;
	if (!router_alnum(p[0]) && p[0] != '_')
		return 0;
	for (i = 1; i < len; i++) {
		if (!router_alnum(p[i]) && p[i] != '_' && p[i] != '.' &&
		    p[i] != '-')
			return 0;
	}
	return 1;
}

/*
 * Only the two registered algorithms, with their exact encoded lengths;
 * uppercase hex is refused as the spec's registered-algorithm rules say.
 */
int
router_valid_digest(const char *s, size_t len)
{
	size_t	hexlen, i;

	if (s == NULL || len < 7)
		return 0;
	if (memcmp(s, "sha256:", 7) == 0)
		hexlen = 64;
	else if (memcmp(s, "sha512:", 7) == 0)
		hexlen = 128;
	else
		return 0;
	if (len != 7 + hexlen)
		return 0;
	for (i = 7; i < len; i++) {
		if (!router_lower_hex((unsigned char)s[i]))
			return 0;
	}
	return 1;
}

/* upload id = [A-Za-z0-9._=+-]{1,255}, but never "." or "..". */
int
router_valid_upload_id(const char *s, size_t len)
{
	const unsigned char	*p = (const unsigned char *)s;
	size_t			 i;

	if (s == NULL || len == 0 || len > OCI_REF_MAX)
		return 0;
	if (router_eq(s, len, ".") || router_eq(s, len, ".."))
		return 0;
	for (i = 0; i < len; i++) {
		if (!router_alnum(p[i]) && p[i] != '.' && p[i] != '_' &&
		    p[i] != '=' && p[i] != '+' && p[i] != '-')
			return 0;
	}
	return 1;
}

/*
 * Refuse what a decoder or normaliser downstream could turn into another
 * path: encoded bytes, backslashes, control bytes, empty, "." and ".."
 * segments.  p holds m bytes after "/v2/", without a final '/'.
 */
static int
router_path_clean(const char *p, size_t m)
{
	const unsigned char	*u = (const unsigned char *)p;
	size_t			 i, start;

	for (i = 0; i < m; i++) {
		if (u[i] == '%' || u[i] == '\\' || u[i] < 0x20 || u[i] == 0x7f)
			return 0;
	}
	start = 0;
	for (i = 0; i <= m; i++) {
		if (i < m && p[i] != '/')
			continue;
		if (i == start || router_eq(p + start, i - start, ".") ||
		    router_eq(p + start, i - start, ".."))
			return 0;
		start = i + 1;
	}
	return 1;
}

/* Start of the segment that ends at end (exclusive) in p. */
static size_t
router_seg_start(const char *p, size_t end)
{
	while (end > 0 && p[end - 1] != '/')
		end--;
	return end;
}

static enum pc_err
router_set_name(struct oci_route *r, const char *s, size_t len)
{
	if (!router_valid_name(s, len) || len > OCI_NAME_MAX)
		return ERR_NAME_INVALID;
	memcpy(r->name, s, len);
	r->name[len] = '\0';
	return ERR_NONE;
}

static enum pc_err
router_set_ref(struct oci_route *r, const char *s, size_t len)
{
	if (len > OCI_REF_MAX)
		return ERR_INTERNAL;
	memcpy(r->ref, s, len);
	r->ref[len] = '\0';
	return ERR_NONE;
}

static enum pc_err
router_set_digest(struct oci_route *r, const char *s, size_t len)
{
	if (!router_valid_digest(s, len))
		return ERR_DIGEST_INVALID;
	r->ref_digest = 1;
	return router_set_ref(r, s, len);
}

/* Validate and store the name, then the reference for r->ep. */
static enum pc_err
router_fill(struct oci_route *r, const char *name, size_t namelen,
    const char *ref, size_t reflen)
{
	enum pc_err	e;

	if ((e = router_set_name(r, name, namelen)) != ERR_NONE)
		return e;
	switch (r->ep) {
	case OCI_EP_MANIFEST:
		if (memchr(ref, ':', reflen) != NULL)
			return router_set_digest(r, ref, reflen);
		if (!router_valid_tag(ref, reflen))
			return ERR_TAG_INVALID;
		return router_set_ref(r, ref, reflen);
	case OCI_EP_BLOB:
	case OCI_EP_REFERRERS:
		return router_set_digest(r, ref, reflen);
	case OCI_EP_UPLOAD:
		if (!router_valid_upload_id(ref, reflen))
			return ERR_UPLOAD_INVALID;
		return router_set_ref(r, ref, reflen);
	default:
		return ERR_NONE;
	}
}

/* Map a manifest reference error to the answer for the method. */
enum pc_err
router_ref_err(enum pc_err e, const struct oci_route *r, int is_write)
{
	if (is_write || r->ep != OCI_EP_MANIFEST)
		return e;
	if (e == ERR_TAG_INVALID || e == ERR_DIGEST_INVALID)
		return ERR_MANIFEST_UNKNOWN;
	return e;
}

/* Route one request path; see the file comment for the rules. */
enum pc_err
router_parse(const char *path, size_t len, struct oci_route *r)
{
	const char	*p, *s1, *s2, *s3;
	size_t		 n, m, b1, b2, b3, l1, l2, l3;
	int		 trailing;
	enum pc_err	 e;

	memset(r, 0, sizeof(*r));
	if (path == NULL || len < 3 || memcmp(path, "/v2", 3) != 0)
		return ERR_NOT_FOUND;
	if (len == 3 || (len == 4 && path[3] == '/')) {
		r->ep = OCI_EP_BASE;
		return ERR_NONE;
	}
	if (path[3] != '/')
		return ERR_NOT_FOUND;
	p = path + 4;
	n = len - 4;

	trailing = p[n - 1] == '/';
	m = trailing ? n - 1 : n;
	if (!router_path_clean(p, m))
		return ERR_NAME_INVALID;
	if (!trailing && router_eq(p, n, "_catalog")) {
		r->ep = OCI_EP_CATALOG;
		return ERR_NONE;
	}

	/* Last segment s1 at b1, the one before it s2 at b2, then s3. */
	b1 = router_seg_start(p, m);
	if (b1 == 0)
		return ERR_NOT_FOUND;
	s1 = p + b1;
	l1 = m - b1;
	b2 = router_seg_start(p, b1 - 1);
	if (b2 == 0)
		return ERR_NOT_FOUND;	/* no name before the endpoint */
	s2 = p + b2;
	l2 = b1 - 1 - b2;

	if (trailing) {
		if (!router_eq(s2, l2, "blobs") ||
		    !router_eq(s1, l1, "uploads"))
			return ERR_NOT_FOUND;
		r->ep = OCI_EP_UPLOAD_START;
		e = router_fill(r, p, b2 - 1, NULL, 0);
		goto done;
	}

	if (router_eq(s2, l2, "uploads")) {
		b3 = router_seg_start(p, b2 - 1);
		s3 = p + b3;
		l3 = b2 - 1 - b3;
		if (b3 > 0 && router_eq(s3, l3, "blobs")) {
			r->ep = OCI_EP_UPLOAD;
			e = router_fill(r, p, b3 - 1, s1, l1);
			goto done;
		}
	}

	if (router_eq(s2, l2, "blobs") && router_eq(s1, l1, "uploads"))
		r->ep = OCI_EP_UPLOAD_START;
	else if (router_eq(s2, l2, "blobs"))
		r->ep = OCI_EP_BLOB;
	else if (router_eq(s2, l2, "manifests"))
		r->ep = OCI_EP_MANIFEST;
	else if (router_eq(s2, l2, "tags") && router_eq(s1, l1, "list"))
		r->ep = OCI_EP_TAGS;
	else if (router_eq(s2, l2, "referrers"))
		r->ep = OCI_EP_REFERRERS;
	else
		return ERR_NOT_FOUND;
	e = router_fill(r, p, b2 - 1, s1, l1);
done:
	if (e != ERR_NONE) {
		r->name[0] = '\0';
		r->ref[0] = '\0';
		r->ref_digest = 0;
	}
	return e;
}
