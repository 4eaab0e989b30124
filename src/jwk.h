/*
 * jwk.h: JSON Web Keys (RFC 7517, 7518) as the gateway uses them: the
 * public keys of an identity provider's JWKS, and the gateway's own token
 * signing keys loaded from PEM files, with their public JWK export for
 * /.well-known/jwks.json and their libtrust key id (the `kid` registry:2
 * requires).  Leaf: OpenSSL 3 and jansson, no libevent, no project header.
 *
 * Every key carries the set of JWS algorithms it may verify (or sign)
 * with; jose.c refuses a token whose header `alg` is not in that set, so
 * a key is never used with an algorithm of another type (no HMAC with a
 * public key, no RSA key for ES256, no P-256 key for ES384).
 */
#ifndef PC_JWK_H
#define PC_JWK_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <openssl/evp.h>

/* X(enum, name as in the JWS header) */
#define JOSE_ALGS(X)							\
	X(JOSE_ALG_RS256, "RS256")					\
	X(JOSE_ALG_RS384, "RS384")					\
	X(JOSE_ALG_RS512, "RS512")					\
	X(JOSE_ALG_PS256, "PS256")					\
	X(JOSE_ALG_PS384, "PS384")					\
	X(JOSE_ALG_PS512, "PS512")					\
	X(JOSE_ALG_ES256, "ES256")					\
	X(JOSE_ALG_ES384, "ES384")

#define JOSE_ALG_ENUM(e, s) e,
enum jose_alg {
	JOSE_ALGS(JOSE_ALG_ENUM)
	JOSE_ALG__MAX
};
#undef JOSE_ALG_ENUM

#define JOSE_ALG_BIT(a)		(1u << (a))
#define JOSE_ALGS_RSA	(JOSE_ALG_BIT(JOSE_ALG_RS256) |			\
	JOSE_ALG_BIT(JOSE_ALG_RS384) | JOSE_ALG_BIT(JOSE_ALG_RS512) |	\
	JOSE_ALG_BIT(JOSE_ALG_PS256))
#define JOSE_ALGS_ALL	((1u << JOSE_ALG__MAX) - 1)

enum jwk_kty {
	JWK_KTY_RSA,
	JWK_KTY_EC
};

/* Bounds of a JWKS document and its keys (RFC 7518 6.3: RSA >= 2048). */
#define JWK_KID_MAX		256
#define JWK_RSA_MIN_BITS	2048
#define JWK_RSA_MAX_BITS	8192
#define JWK_DEFAULT_MAX_BYTES	(64 * 1024)
#define JWK_DEFAULT_MAX_KEYS	32

/* libtrust key id: 12 groups of 4 base32 characters joined by ':'. */
#define JWK_LIBTRUST_KID_LEN	59

struct jwk_key {
	char		 kid[JWK_KID_MAX + 1];	/* "" when the JWK has none */
	enum jwk_kty	 kty;
	int		 bits;		/* RSA modulus or EC field size */
	unsigned	 algs;		/* JOSE_ALG_BIT()s it may use */
	EVP_PKEY	*pkey;		/* public, or private for a signer */
	/*
	 * A rotated-out key verifies until this time (seconds since the
	 * epoch) and is left out of the published JWKS after it; 0: no end.
	 */
	int64_t		 not_after;
	/* Signers only: the private key as PEM (libjwt signs from PEM). */
	unsigned char	*pem;
	size_t		 pemlen;
};

struct jwk_set {
	struct jwk_key	*keys;
	size_t		 nkeys;
};

struct jwk_limits {
	size_t		 max_bytes;	/* the JWKS document */
	size_t		 max_keys;	/* entries in "keys", usable or not */
};

/* "RS256", ...; NULL when out of range. */
const char	*jose_alg_name(enum jose_alg);
/* The algorithm named by len bytes of s; -1 when unknown (incl. none). */
int		 jose_alg_lookup(const char *s, size_t len);

/*
 * Parse a JWKS document (len bytes, need not be NUL-terminated) into a
 * new key set.  The size is checked before parsing, the key count before
 * any key is built.  Keys the gateway cannot use are skipped (`use` other
 * than "sig", a kty other than RSA and EC, a curve other than P-256 and
 * P-384, private members published (`d`, `p`, ...: anyone may sign
 * with such a key), an RSA modulus outside 2048..8192 bits, an `alg`
 * that is not a JWS algorithm of the key's type, `key_ops` without
 * "verify"); a document that is not a JWKS, repeats a `kid` among its
 * usable keys or has no usable key is an error.  An `alg` member pins the key to that
 * one algorithm; without it RSA keys get RS256/384/512 and PS256, P-256
 * keys ES256 and P-384 keys ES384.  Returns NULL and sets *cause
 * (caller frees) on error.
 */
struct jwk_set	*jwk_set_parse(const char *doc, size_t len,
		    const struct jwk_limits *, char **cause);

/* Build one key from one JWK object; 0 or -1 with *cause set. */
int		 jwk_from_json(const json_t *, struct jwk_key *,
		    char **cause);

/*
 * Load a private signing key from a PEM file (PKCS#8 or traditional, not
 * encrypted; EC P-256 or P-384, or RSA 2048..8192 bits).  Its kid is the
 * libtrust key id; its algorithm ES256, ES384 or RS256.  0, or -1 with
 * *cause set.
 */
int		 jwk_load_private(const char *path, struct jwk_key *,
		    char **cause);

/* The same from PEM bytes (for tests and the key generator). */
int		 jwk_private_from_pem(const unsigned char *pem, size_t len,
		    struct jwk_key *, char **cause);

/*
 * The libtrust key id of a key (public or private): the first 240 bits of
 * SHA-256 over the DER SubjectPublicKeyInfo, base32 (RFC 4648 alphabet,
 * no padding), in groups of 4 joined by ':'.  buf must hold
 * JWK_LIBTRUST_KID_LEN + 1 bytes.  0 or -1.
 */
int		 jwk_libtrust_kid(EVP_PKEY *, char *buf, size_t len);

/*
 * The public JWK of a key: kty, use "sig", alg (the first allowed), kid,
 * and n/e or crv/x/y.  A new reference, NULL on allocation failure.
 */
json_t		*jwk_public_json(const struct jwk_key *);

/*
 * The public JWKS {"keys":[...]} of a set, leaving out keys whose
 * not_after has passed at `now`.  A new reference or NULL.
 */
json_t		*jwk_set_public_json(const struct jwk_set *, int64_t now);

/*
 * Select the key for a token: the key whose kid equals kid (len bytes),
 * or, when the set holds exactly one key, that key if the token has no
 * kid or the key has none.  NULL when none fits.
 */
const struct jwk_key *jwk_set_find(const struct jwk_set *, const char *kid,
		    size_t len);

/* Add a copy of key (taking a reference on its EVP_PKEY) to the set. */
int		 jwk_set_add(struct jwk_set *, const struct jwk_key *);

/*
 * base64url (RFC 4648 section 5) as JWS compact serialization uses it: no
 * padding, no whitespace, and the unused low bits of the last character
 * zero, so one byte string has exactly one encoding.  Decode writes at
 * most outsize bytes; -1 on a bad character, a bad length, non-zero pad
 * bits or an output that would not fit.  Encode NUL-terminates and needs
 * outsize >= JWK_B64_LEN(len) + 1.
 */
#define JWK_B64_LEN(n)	(((n) / 3) * 4 + ((n) % 3 ? (n) % 3 + 1 : 0))
int		 jwk_b64url_decode(const char *s, size_t len,
		    unsigned char *out, size_t outsize, size_t *outlen);
int		 jwk_b64url_encode(const unsigned char *in, size_t len,
		    char *out, size_t outsize);

struct jwk_set	*jwk_set_new(void);
void		 jwk_set_free(struct jwk_set *);
/* Free what the key holds (not the struct itself); scrubs the PEM. */
void		 jwk_key_clear(struct jwk_key *);

#endif /* PC_JWK_H */
