/*
 * jose.h: JWS compact tokens (RFC 7515, 7519) verified and signed safely:
 * the verifier the identity stage runs on IdP JWTs and on the gateway's
 * own Bearer tokens, and the signer the token service uses.  Leaf:
 * OpenSSL 3, jansson and libjwt (signing only), no libevent, no project
 * header.
 *
 * How the next stages use it:
 * - Identity stage, IdP JWT: jose_peek() to learn the claimed issuer and
 *   kid (unverified: only to pick the issuer's key set, and to trigger a
 *   JWKS refresh on JOSE_R_KID_UNKNOWN); then jose_verify() with that
 *   issuer's set and options; the principal takes claims->subject chosen
 *   with jose_claim_string(), claims->groups and claims->claims.
 * - Identity stage, gateway token: jose_verify() with the gateway's own
 *   set (current and rotated-out keys, each with not_after), issuer and
 *   audience the gateway's; the access claim is read with scope.h's
 *   scope_from_access(json_object_get(claims->payload, "access")).
 * - Verified-token cache: jose_token_hash() gives the key; tcache.h
 *   keeps the claims (or the principal) until claims->exp, and
 *   tcache_purge() drops them on revocation.
 * - Token service: jose_sign() with the current signing key.
 * - Failed logins: the jose_reason name goes to the audit record and the
 *   metric label; it never contains any part of the token.
 */
#ifndef PC_JOSE_H
#define PC_JOSE_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "jwk.h"
#include "principal.h"

/* X(enum, name for logs, audit "failed login" reasons and metrics) */
#define JOSE_REASONS(X)							\
	X(JOSE_OK, "ok")						\
	X(JOSE_R_TOO_LARGE, "too_large")				\
	X(JOSE_R_MALFORMED, "malformed")	/* not three parts */	\
	X(JOSE_R_BAD_BASE64, "bad_base64")				\
	X(JOSE_R_BAD_JSON, "bad_json")					\
	X(JOSE_R_DUPLICATE_KEY, "duplicate_key")			\
	X(JOSE_R_CRIT, "crit")						\
	X(JOSE_R_ALG_NONE, "alg_none")					\
	X(JOSE_R_ALG_HMAC, "alg_hmac")					\
	X(JOSE_R_ALG_UNKNOWN, "alg_unknown")				\
	X(JOSE_R_ALG_NOT_ALLOWED, "alg_not_allowed")			\
	X(JOSE_R_KID_UNKNOWN, "unknown_kid")				\
	X(JOSE_R_KEY_RETIRED, "key_retired")				\
	X(JOSE_R_BAD_SIGNATURE, "bad_signature")			\
	X(JOSE_R_ISSUER, "wrong_issuer")				\
	X(JOSE_R_AUDIENCE, "wrong_audience")				\
	X(JOSE_R_NO_EXPIRY, "no_expiry")				\
	X(JOSE_R_EXPIRED, "expired")					\
	X(JOSE_R_NOT_YET_VALID, "not_yet_valid")			\
	X(JOSE_R_ISSUED_IN_FUTURE, "issued_in_future")			\
	X(JOSE_R_BAD_CLAIM, "bad_claim")				\
	X(JOSE_R_CLAIMS_TOO_LARGE, "claims_too_large")			\
	X(JOSE_R_INTERNAL, "internal")

#define JOSE_REASON_ENUM(e, s) e,
enum jose_reason {
	JOSE_REASONS(JOSE_REASON_ENUM)
	JOSE_R__MAX
};
#undef JOSE_REASON_ENUM

/* Defaults for the bounds; the config rows that set them use these. */
#define JOSE_DEFAULT_MAX_TOKEN_BYTES	16384
#define JOSE_DEFAULT_LEEWAY		30
#define JOSE_DEFAULT_MAX_CLAIMS		256
#define JOSE_DEFAULT_MAX_CLAIM_BYTES	1024
#define JOSE_MAX_AUDIENCES		16
#define JOSE_SIGN_MAX_CLAIMS_BYTES	65536

struct jose_verify_opts {
	int64_t		  now;		/* seconds since the epoch */
	int64_t		  leeway;	/* seconds, for exp, nbf and iat */
	size_t		  max_token_bytes;
	/*
	 * Claim bounds: string and array-of-string claims become
	 * claims->claims, one entry per value; more than max_claims values
	 * or a name or value longer than max_claim_bytes refuses the token
	 * (JOSE_R_CLAIMS_TOO_LARGE) rather than dropping a claim a deny
	 * rule might match.  Other claim types are not visible to policy.
	 */
	size_t		  max_claims;
	size_t		  max_claim_bytes;
	/* The exact `iss` required; NULL refuses every token. */
	const char	 *issuer;
	/* `aud` must hold one of these; naudiences 0: not checked. */
	const char *const *audiences;
	size_t		  naudiences;
	/* Further restricts the key's algorithms; 0: the key's own. */
	unsigned	  algs;
	/* The claim holding groups (string or array); NULL: none. */
	const char	 *groups_claim;
};

/*
 * A verified token's claims.  Every string is borrowed from payload and
 * lives until jose_claims_free().
 */
struct jose_claims {
	json_t			*payload;	/* the whole claim set */
	const char		*issuer;
	const char		*subject;	/* `sub`; NULL when absent */
	const char		*jti;		/* NULL when absent */
	const char		**audiences;
	size_t			 naudiences;
	int64_t			 exp;
	int64_t			 nbf;		/* 0 when absent */
	int64_t			 iat;		/* 0 when absent */
	const char		**groups;
	size_t			 ngroups;
	/* String claims, one entry per value, as principal.h has them. */
	struct principal_claim	*claims;
	size_t			 nclaims;
	enum jose_alg		 alg;
	/* The verifying key's kid (never the header's); "" without one. */
	char			 kid[JWK_KID_MAX + 1];
};

/* What a token claims before verification: for choosing a key set. */
struct jose_peek {
	char		 issuer[512];	/* "" when absent or too long */
	/* "" when absent or not printable ASCII */
	char		 kid[JWK_KID_MAX + 1];
	int		 alg;		/* enum jose_alg, or -1 */
};

/* The reason's name, e.g. "expired"; "unknown" when out of range. */
const char	*jose_reason_name(enum jose_reason);

/* Options with the default bounds and no issuer (the caller sets it). */
void		 jose_verify_opts_init(struct jose_verify_opts *,
		    int64_t now);

/*
 * Verify a compact JWS of len bytes (need not be NUL-terminated) against
 * the key set, in this order: the size (before anything else); three
 * base64url parts; the header JSON (duplicate members refused); no
 * `crit`; `alg` not "none", not HS*, known; the key by `kid` (or the only
 * key); `alg` allowed for that key (and by opts->algs); the key not
 * retired at opts->now; the signature; then the payload JSON, `iss`,
 * `aud`, `exp` (required), `nbf`, `iat` and the claim bounds.  Returns
 * JOSE_OK and a new *out (caller frees with jose_claims_free), or the
 * first reason the token fails and *out NULL.
 */
enum jose_reason jose_verify(const struct jwk_set *, const char *token,
		    size_t len, const struct jose_verify_opts *,
		    struct jose_claims **out);

void		 jose_claims_free(struct jose_claims *);

/* The claim's value when it is one string; NULL otherwise. */
const char	*jose_claim_string(const struct jose_claims *,
		    const char *name);

/*
 * Read the header and payload of a token without verifying anything, for
 * choosing the issuer's key set.  Nothing read here may be trusted.
 * Same size, base64url and JSON checks as jose_verify.
 */
enum jose_reason jose_peek(const char *token, size_t len,
		    size_t max_token_bytes, struct jose_peek *);

struct jose_sign_req {
	const char	*issuer;
	const char	*subject;
	const char	*audience;	/* the registry's service name */
	int64_t		 now;
	int64_t		 ttl;		/* seconds until exp; nbf = iat = now */
	const char	*jti;		/* NULL: 128 random bits, base64url */
	json_t		*access;	/* the access claim; NULL: [] */
	/* More claims, an object or NULL; none the signer sets itself. */
	json_t		*extra;
};

/*
 * Sign a token with key k (a private key from jwk_load_private or
 * jwk_private_from_pem) as registry:2 expects: header {typ: JWT, alg
 * (ES256, ES384 or RS256 from the key), kid (the libtrust kid)}, claims
 * iss, sub, aud, exp, nbf, iat, jti, access.  Returns a new string
 * (caller frees) or NULL with *cause set; extra naming any of those
 * claims is refused (libjwt would let it replace the signer's).
 */
char		*jose_sign(const struct jwk_key *k,
		    const struct jose_sign_req *, char **cause);

/*
 * The verified-token cache key: HMAC-SHA-256 of the token under a
 * process-local secret key, so a cache entry or a dumped key never
 * stands for the token itself.  0 or -1.
 */
int		 jose_token_hash(const unsigned char *key, size_t keylen,
		    const char *token, size_t len, unsigned char out[32]);

#endif /* PC_JOSE_H */
