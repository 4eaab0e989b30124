/*
 * cache_http.h: the HTTP and OCI rules the cache applies, as pure
 * functions: single byte ranges (RFC 9110 section 14), the normalised
 * Accept set that keys a tag, and which digests the cache can verify.
 * Leaf: no libevent, no project header but headers.h.
 */
#ifndef PC_CACHE_HTTP_H
#define PC_CACHE_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "headers.h"

enum cache_range {
	CACHE_RANGE_NONE,	/* no Range, or one we ignore: send 200 */
	CACHE_RANGE_OK,		/* send 206 for [start, end] */
	CACHE_RANGE_UNSAT	/* send 416 */
};

/*
 * Parse a Range field value against a representation of `size` bytes.
 * One range only (bytes=N-M, bytes=N-, bytes=-N); several ranges, other
 * units and malformed values are ignored (RFC 9110 14.2 lets a server
 * ignore Range).  On CACHE_RANGE_OK, *start and *end (inclusive) are set.
 */
enum cache_range cache_range_parse(const char *, uint64_t, uint64_t *,
		    uint64_t *);

/*
 * The normalised Accept set: every media range of every Accept field,
 * without those of weight q=0 (not acceptable, RFC 9110 12.4.2),
 * parameters dropped, lowercased, sorted and deduplicated, joined by ','.
 * "" when there is none.  Returns the length, or -1 when it does not fit
 * or is not a plain set (every range refused, or a wildcard left beside a
 * refused range).
 */
int		 cache_accept_norm(const struct headers *, char *, size_t);

/* Whether the media type is in a normalised Accept set (or it has a
 * wildcard); an empty set accepts everything. */
int		 cache_accept_has(const char *, const char *);

enum cache_alg {
	CACHE_ALG_NONE,
	CACHE_ALG_SHA256,
	CACHE_ALG_SHA512
};

/*
 * The algorithm of a digest the cache can verify ("sha256:" and 64
 * lowercase hex digits, or "sha512:" and 128), with *hex pointing at the
 * hex part; CACHE_ALG_NONE for anything else.
 */
enum cache_alg	 cache_digest_alg(const char *, const char **);

/* The algorithm's name as in a digest ("sha256"). */
const char	*cache_alg_name(enum cache_alg);

/* A media type fit to store and send back: 1..255 printable bytes
 * (spaces allowed, no control characters). */
int		 cache_valid_media_type(const char *);

#endif
