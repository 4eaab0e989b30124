/*
 * jwk.c: JSON Web Keys into OpenSSL 3 keys and back.
 *
 * Guarantees:
 * - A JWKS document is size-checked before jansson sees it (duplicate
 *   member names refused), and its key count before any key is built.
 *   Every base64url member is length-checked before it is decoded into a
 *   fixed buffer.
 * - Keys are built with EVP_PKEY_fromdata (no deprecated RSA / EC_KEY
 *   calls); EC keys pass EVP_PKEY_public_check, so the point is on its
 *   curve; RSA keys get the checks that cost no exponentiation (odd
 *   modulus, odd exponent above 1 and below the modulus), not OpenSSL's
 *   Miller-Rabin rounds: a peer's JWKS must not buy seconds of CPU.
 * - A key's allowed algorithms always match its type and size: RSA keys
 *   only RS* / PS*, P-256 only ES256, P-384 only ES384.  A JWK `alg` that
 *   contradicts its key makes the key unusable, never widens it.
 * - The libtrust kid is the one docker/libtrust computes
 *   (keyIDFromCryptoKey: SHA-256 of the DER SubjectPublicKeyInfo,
 *   truncated to 240 bits, base32, groups of 4 joined by ':').
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

#include "jwk.h"

/* A modulus of 8192 bits, base64url: 1366 characters. */
#define JWK_B64_MAX	JWK_B64_LEN(JWK_RSA_MAX_BITS / 8 + 1)
#define JWK_PEM_MAX	(64 * 1024)

#define JOSE_ALG_NAME(e, s) s,
static const char *const jose_alg_names[] = {
	JOSE_ALGS(JOSE_ALG_NAME)
};
#undef JOSE_ALG_NAME

static void
jwk_err(char **cause, const char *fmt, ...)
{
	va_list	ap;

	if (cause == NULL)
		return;
	free(*cause);
	va_start(ap, fmt);
	if (vasprintf(cause, fmt, ap) == -1)
		*cause = NULL;
	va_end(ap);
}

/* Short algorithm name from the JOSE_ALGS list. */
const char *
jose_alg_name(enum jose_alg a)
{
	if ((unsigned)a >= JOSE_ALG__MAX)
		return (NULL);
	return (jose_alg_names[a]);
}

/* The algorithm of that exact name; "none" and HS* are not in the list. */
int
jose_alg_lookup(const char *s, size_t len)
{
	size_t	i;

	for (i = 0; i < JOSE_ALG__MAX; i++)
		if (strlen(jose_alg_names[i]) == len &&
		    memcmp(jose_alg_names[i], s, len) == 0)
			return ((int)i);
	return (-1);
}

static int
jwk_b64_val(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return (c - 'A');
	if (c >= 'a' && c <= 'z')
		return (c - 'a' + 26);
	if (c >= '0' && c <= '9')
		return (c - '0' + 52);
	if (c == '-')
		return (62);
	if (c == '_')
		return (63);
	return (-1);
}

/* Strict base64url decode; see jwk.h. */
int
jwk_b64url_decode(const char *s, size_t len, unsigned char *out,
    size_t outsize, size_t *outlen)
{
	uint32_t	acc = 0;
	size_t		i, n = 0, need;
	int		bits = 0, v;

	if (len % 4 == 1)
		return (-1);
	need = len / 4 * 3 + (len % 4 ? len % 4 - 1 : 0);
	if (need > outsize)
		return (-1);
	for (i = 0; i < len; i++) {
		if ((v = jwk_b64_val((unsigned char)s[i])) == -1)
			return (-1);
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[n++] = (unsigned char)(acc >> bits);
			acc &= (1u << bits) - 1;
		}
	}
	/* The leftover bits of a canonical encoding are zero. */
	if (acc != 0)
		return (-1);
	*outlen = n;
	return (0);
}

/* base64url without padding; see jwk.h. */
int
jwk_b64url_encode(const unsigned char *in, size_t len, char *out,
    size_t outsize)
{
	static const char	 tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	    "abcdefghijklmnopqrstuvwxyz0123456789-_";
	uint32_t		 acc = 0;
	size_t			 i, n = 0;
	int			 bits = 0;

	if (outsize < JWK_B64_LEN(len) + 1)
		return (-1);
	for (i = 0; i < len; i++) {
		acc = (acc << 8) | in[i];
		bits += 8;
		while (bits >= 6) {
			bits -= 6;
			out[n++] = tab[(acc >> bits) & 63];
		}
		acc &= (1u << bits) - 1;
	}
	if (bits > 0)
		out[n++] = tab[(acc << (6 - bits)) & 63];
	out[n] = '\0';
	return (0);
}

/* Decode base64url member `name` of o into buf; its length or -1. */
static int
jwk_member_bytes(const json_t *o, const char *name, unsigned char *buf,
    size_t bufsize, char **cause)
{
	const json_t	*v;
	size_t		 n;

	v = json_object_get(o, name);
	if (!json_is_string(v)) {
		jwk_err(cause, "member %s missing or not a string", name);
		return (-1);
	}
	if (json_string_length(v) > JWK_B64_MAX ||
	    jwk_b64url_decode(json_string_value(v), json_string_length(v),
	    buf, bufsize, &n) == -1 || n == 0) {
		jwk_err(cause, "member %s is not base64url of a fitting size",
		    name);
		return (-1);
	}
	return ((int)n);
}

static EVP_PKEY *
jwk_fromdata(const char *type, OSSL_PARAM_BLD *bld, char **cause)
{
	OSSL_PARAM	*params = NULL;
	EVP_PKEY_CTX	*ctx = NULL, *check = NULL;
	EVP_PKEY	*pkey = NULL;

	if ((params = OSSL_PARAM_BLD_to_param(bld)) == NULL ||
	    (ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL)) == NULL ||
	    EVP_PKEY_fromdata_init(ctx) <= 0 ||
	    EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0) {
		jwk_err(cause, "not a valid %s public key", type);
		goto out;
	}
	/*
	 * EC only: the point is on its curve (cheap).  OpenSSL's RSA check
	 * runs Miller-Rabin on the modulus, a full modular exponentiation
	 * per round (0.1 s for a composite 8192-bit modulus, 0.6 s for a
	 * prime one) on the event loop for every key a peer serves; jwk_rsa
	 * makes the cheap checks instead.
	 */
	if (strcmp(type, "EC") == 0 && ((check =
	    EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL)) == NULL ||
	    EVP_PKEY_public_check(check) != 1)) {
		jwk_err(cause, "%s public key fails its check", type);
		EVP_PKEY_free(pkey);
		pkey = NULL;
	}
out:
	EVP_PKEY_CTX_free(check);
	EVP_PKEY_CTX_free(ctx);
	OSSL_PARAM_free(params);
	return (pkey);
}

static int
jwk_rsa(const json_t *o, struct jwk_key *k, char **cause)
{
	unsigned char	 n[JWK_RSA_MAX_BITS / 8 + 1], e[16];
	OSSL_PARAM_BLD	*bld = NULL;
	BIGNUM		*bn = NULL, *be = NULL;
	int		 nlen, elen, rv = -1;

	if ((nlen = jwk_member_bytes(o, "n", n, sizeof(n), cause)) == -1 ||
	    (elen = jwk_member_bytes(o, "e", e, sizeof(e), cause)) == -1)
		return (-1);
	if ((bn = BN_bin2bn(n, nlen, NULL)) == NULL ||
	    (be = BN_bin2bn(e, elen, NULL)) == NULL)
		goto out;
	k->bits = BN_num_bits(bn);
	if (k->bits < JWK_RSA_MIN_BITS || k->bits > JWK_RSA_MAX_BITS) {
		jwk_err(cause, "RSA modulus of %d bits (%d..%d allowed)",
		    k->bits, JWK_RSA_MIN_BITS, JWK_RSA_MAX_BITS);
		goto out;
	}
	/* What OpenSSL's check tests short of primality: no arithmetic. */
	if (!BN_is_odd(bn) || !BN_is_odd(be) || BN_is_one(be) ||
	    BN_cmp(be, bn) >= 0) {
		jwk_err(cause, "RSA public key fails its check");
		goto out;
	}
	if ((bld = OSSL_PARAM_BLD_new()) == NULL ||
	    !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) ||
	    !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be))
		goto out;
	if ((k->pkey = jwk_fromdata("RSA", bld, cause)) == NULL)
		goto out;
	k->kty = JWK_KTY_RSA;
	k->algs = JOSE_ALGS_RSA;
	rv = 0;
out:
	if (rv == -1 && cause != NULL && *cause == NULL)
		jwk_err(cause, "RSA key not usable");
	OSSL_PARAM_BLD_free(bld);
	BN_free(bn);
	BN_free(be);
	return (rv);
}

static int
jwk_ec(const json_t *o, struct jwk_key *k, char **cause)
{
	unsigned char	 pt[1 + 2 * 48], x[49], y[49];
	const char	*crv, *group;
	OSSL_PARAM_BLD	*bld = NULL;
	int		 flen, xlen, ylen, rv = -1;

	crv = json_string_value(json_object_get(o, "crv"));
	if (crv != NULL && strcmp(crv, "P-256") == 0) {
		group = "prime256v1";
		flen = 32;
		k->algs = JOSE_ALG_BIT(JOSE_ALG_ES256);
	} else if (crv != NULL && strcmp(crv, "P-384") == 0) {
		group = "secp384r1";
		flen = 48;
		k->algs = JOSE_ALG_BIT(JOSE_ALG_ES384);
	} else {
		jwk_err(cause, "EC curve not supported (P-256, P-384)");
		return (-1);
	}
	if ((xlen = jwk_member_bytes(o, "x", x, sizeof(x), cause)) == -1 ||
	    (ylen = jwk_member_bytes(o, "y", y, sizeof(y), cause)) == -1)
		return (-1);
	/* RFC 7518 6.2.1.2: exactly the field size, leading zeros kept. */
	if (xlen != flen || ylen != flen) {
		jwk_err(cause, "EC coordinates are not %d bytes", flen);
		return (-1);
	}
	pt[0] = 0x04;
	memcpy(pt + 1, x, flen);
	memcpy(pt + 1 + flen, y, flen);
	if ((bld = OSSL_PARAM_BLD_new()) == NULL ||
	    !OSSL_PARAM_BLD_push_utf8_string(bld,
	    OSSL_PKEY_PARAM_GROUP_NAME, group, 0) ||
	    !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY,
	    pt, 1 + 2 * (size_t)flen))
		goto out;
	if ((k->pkey = jwk_fromdata("EC", bld, cause)) == NULL)
		goto out;
	k->kty = JWK_KTY_EC;
	k->bits = flen * 8;
	rv = 0;
out:
	if (rv == -1 && cause != NULL && *cause == NULL)
		jwk_err(cause, "EC key not usable");
	OSSL_PARAM_BLD_free(bld);
	return (rv);
}

/* A kid is printable ASCII: it reaches logs and audit records. */
static int
jwk_kid_ok(const char *s, size_t len)
{
	size_t	i;

	if (len == 0 || len > JWK_KID_MAX)
		return (0);
	for (i = 0; i < len; i++)
		if (s[i] < 0x20 || s[i] > 0x7e)
			return (0);
	return (1);
}

/* JWK members of a private key (RFC 7518 6.2.2, 6.3.2). */
static const char *const jwk_private_members[] = {
	"d", "p", "q", "dp", "dq", "qi", "oth"
};

/* One JWK object into k; see jwk.h. */
int
jwk_from_json(const json_t *o, struct jwk_key *k, char **cause)
{
	const json_t	*v, *op;
	const char	*kty, *use;
	size_t		 i;
	int		 a, ok;

	memset(k, 0, sizeof(*k));
	if (!json_is_object(o)) {
		jwk_err(cause, "a key is not an object");
		return (-1);
	}
	if ((v = json_object_get(o, "kid")) != NULL) {
		if (!json_is_string(v) || !jwk_kid_ok(json_string_value(v),
		    json_string_length(v))) {
			jwk_err(cause, "kid is not 1..%d printable characters",
			    JWK_KID_MAX);
			return (-1);
		}
		memcpy(k->kid, json_string_value(v), json_string_length(v));
	}
	use = json_string_value(json_object_get(o, "use"));
	if (json_object_get(o, "use") != NULL &&
	    (use == NULL || strcmp(use, "sig") != 0)) {
		jwk_err(cause, "key %s: use is not sig", k->kid);
		return (-1);
	}
	if ((v = json_object_get(o, "key_ops")) != NULL) {
		ok = 0;
		for (i = 0; json_is_array(v) && i < json_array_size(v); i++) {
			op = json_array_get(v, i);
			if (json_is_string(op) &&
			    strcmp(json_string_value(op), "verify") == 0)
				ok = 1;
		}
		if (!ok) {
			jwk_err(cause, "key %s: key_ops lacks verify", k->kid);
			return (-1);
		}
	}
	/*
	 * RFC 7518 6.2.2, 6.3.2: a published private part makes the key
	 * anyone's to sign with, so it proves nothing.
	 */
	for (i = 0; i < sizeof(jwk_private_members) /
	    sizeof(jwk_private_members[0]); i++)
		if (json_object_get(o, jwk_private_members[i]) != NULL) {
			jwk_err(cause, "key %s: private key member %s "
			    "published", k->kid, jwk_private_members[i]);
			return (-1);
		}
	kty = json_string_value(json_object_get(o, "kty"));
	if (kty != NULL && strcmp(kty, "RSA") == 0) {
		if (jwk_rsa(o, k, cause) == -1)
			return (-1);
	} else if (kty != NULL && strcmp(kty, "EC") == 0) {
		if (jwk_ec(o, k, cause) == -1)
			return (-1);
	} else {
		jwk_err(cause, "key %s: kty is not RSA or EC", k->kid);
		return (-1);
	}
	if ((v = json_object_get(o, "alg")) != NULL) {
		a = json_is_string(v) ? jose_alg_lookup(json_string_value(v),
		    json_string_length(v)) : -1;
		/* PS384/512 only when asked for by name. */
		if (a != -1 && k->kty == JWK_KTY_RSA)
			k->algs = JOSE_ALGS_RSA | JOSE_ALG_BIT(JOSE_ALG_PS384) |
			    JOSE_ALG_BIT(JOSE_ALG_PS512);
		if (a == -1 || (k->algs & JOSE_ALG_BIT(a)) == 0) {
			jwk_err(cause, "key %s: alg does not fit the key",
			    k->kid);
			jwk_key_clear(k);
			return (-1);
		}
		k->algs = JOSE_ALG_BIT(a);
	}
	return (0);
}

/* Parse a JWKS document; see jwk.h. */
struct jwk_set *
jwk_set_parse(const char *doc, size_t len, const struct jwk_limits *lim,
    char **cause)
{
	struct jwk_set	*set = NULL;
	struct jwk_key	 k;
	json_error_t	 jerr;
	json_t		*root, *keys;
	char		*skip = NULL;
	size_t		 i, j, nskip = 0;

	if (len > lim->max_bytes) {
		jwk_err(cause, "JWKS larger than %zu bytes", lim->max_bytes);
		return (NULL);
	}
	if ((root = json_loadb(doc, len, JSON_REJECT_DUPLICATES,
	    &jerr)) == NULL) {
		jwk_err(cause, "JWKS is not JSON: %s", jerr.text);
		return (NULL);
	}
	keys = json_object_get(root, "keys");
	if (!json_is_array(keys)) {
		jwk_err(cause, "JWKS has no keys array");
		goto fail;
	}
	if (json_array_size(keys) > lim->max_keys) {
		jwk_err(cause, "JWKS has more than %zu keys", lim->max_keys);
		goto fail;
	}
	if ((set = jwk_set_new()) == NULL) {
		jwk_err(cause, "out of memory");
		goto fail;
	}
	for (i = 0; i < json_array_size(keys); i++) {
		if (jwk_from_json(json_array_get(keys, i), &k, &skip) == -1) {
			nskip++;
			continue;
		}
		for (j = 0; j < set->nkeys; j++)
			if (strcmp(set->keys[j].kid, k.kid) == 0) {
				jwk_err(cause, "JWKS repeats kid \"%s\"",
				    k.kid);
				jwk_key_clear(&k);
				goto fail;
			}
		if (jwk_set_add(set, &k) == -1) {
			jwk_key_clear(&k);
			jwk_err(cause, "out of memory");
			goto fail;
		}
		jwk_key_clear(&k);
	}
	if (set->nkeys == 0) {
		jwk_err(cause, "JWKS has no usable key (%zu skipped%s%s)",
		    nskip, skip ? ", last: " : "", skip ? skip : "");
		goto fail;
	}
	free(skip);
	json_decref(root);
	return (set);
fail:
	free(skip);
	jwk_set_free(set);
	json_decref(root);
	return (NULL);
}

/* libtrust key id; see jwk.h. */
int
jwk_libtrust_kid(EVP_PKEY *pkey, char *buf, size_t len)
{
	static const char	 b32[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
	unsigned char		 md[SHA256_DIGEST_LENGTH], *der = NULL;
	uint64_t		 acc = 0;
	size_t			 i, n = 0, nc = 0;
	int			 derlen, bits = 0;

	if (len < JWK_LIBTRUST_KID_LEN + 1 ||
	    (derlen = i2d_PUBKEY(pkey, &der)) <= 0)
		return (-1);
	SHA256(der, (size_t)derlen, md);
	OPENSSL_free(der);
	/* 30 bytes = 240 bits = 48 base32 characters, no padding. */
	for (i = 0; i < 30; i++) {
		acc = (acc << 8) | md[i];
		bits += 8;
		while (bits >= 5) {
			bits -= 5;
			if (nc > 0 && nc % 4 == 0)
				buf[n++] = ':';
			buf[n++] = b32[(acc >> bits) & 31];
			nc++;
		}
		acc &= (1u << bits) - 1;
	}
	buf[n] = '\0';
	return (0);
}

/*
 * Never ask for a passphrase: OpenSSL's default callback would read the
 * terminal, and a daemon must not block on one.
 */
static int
jwk_no_passphrase(char *buf, int size, int rw, void *u)
{
	(void)buf;
	(void)size;
	(void)rw;
	(void)u;
	return (0);
}

/* Private key from PEM bytes; see jwk.h. */
int
jwk_private_from_pem(const unsigned char *pem, size_t len,
    struct jwk_key *k, char **cause)
{
	BIO		*in = NULL, *out = NULL;
	char		 group[64], *data;
	long		 dlen;
	int		 rv = -1;

	memset(k, 0, sizeof(*k));
	if (len > JWK_PEM_MAX || (in = BIO_new_mem_buf(pem, (int)len)) ==
	    NULL || (k->pkey = PEM_read_bio_PrivateKey(in, NULL,
	    jwk_no_passphrase, NULL)) == NULL) {
		jwk_err(cause, "not a PEM private key (encrypted keys are "
		    "not supported)");
		goto out;
	}
	switch (EVP_PKEY_get_base_id(k->pkey)) {
	case EVP_PKEY_RSA:
		k->kty = JWK_KTY_RSA;
		k->bits = EVP_PKEY_get_bits(k->pkey);
		if (k->bits < JWK_RSA_MIN_BITS || k->bits > JWK_RSA_MAX_BITS) {
			jwk_err(cause, "RSA key of %d bits (%d..%d allowed)",
			    k->bits, JWK_RSA_MIN_BITS, JWK_RSA_MAX_BITS);
			goto out;
		}
		k->algs = JOSE_ALG_BIT(JOSE_ALG_RS256);
		break;
	case EVP_PKEY_EC:
		k->kty = JWK_KTY_EC;
		if (!EVP_PKEY_get_utf8_string_param(k->pkey,
		    OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group), NULL))
			group[0] = '\0';
		if (strcmp(group, "prime256v1") == 0) {
			k->bits = 256;
			k->algs = JOSE_ALG_BIT(JOSE_ALG_ES256);
		} else if (strcmp(group, "secp384r1") == 0) {
			k->bits = 384;
			k->algs = JOSE_ALG_BIT(JOSE_ALG_ES384);
		} else {
			jwk_err(cause, "EC curve not supported (P-256, P-384)");
			goto out;
		}
		break;
	default:
		jwk_err(cause, "key type not supported (EC or RSA)");
		goto out;
	}
	if (jwk_libtrust_kid(k->pkey, k->kid, sizeof(k->kid)) == -1)
		goto fail;
	/* Re-encode as PKCS#8 PEM: one form for libjwt whatever was read. */
	if ((out = BIO_new(BIO_s_secmem())) == NULL ||
	    !PEM_write_bio_PrivateKey(out, k->pkey, NULL, NULL, 0, NULL,
	    NULL) || (dlen = BIO_get_mem_data(out, &data)) <= 0 ||
	    (k->pem = OPENSSL_secure_malloc((size_t)dlen + 1)) == NULL)
		goto fail;
	memcpy(k->pem, data, (size_t)dlen);
	k->pem[dlen] = '\0';
	k->pemlen = (size_t)dlen;
	rv = 0;
	goto out;
fail:
	jwk_err(cause, "cannot encode the key");
out:
	BIO_free(in);
	BIO_free(out);
	if (rv == -1)
		jwk_key_clear(k);
	return (rv);
}

/* Private key from a PEM file; see jwk.h. */
int
jwk_load_private(const char *path, struct jwk_key *k, char **cause)
{
	unsigned char	*buf;
	FILE		*f;
	size_t		 n;
	int		 rv;

	memset(k, 0, sizeof(*k));
	if ((f = fopen(path, "r")) == NULL) {
		jwk_err(cause, "%s: cannot open", path);
		return (-1);
	}
	if ((buf = OPENSSL_secure_malloc(JWK_PEM_MAX + 1)) == NULL) {
		fclose(f);
		jwk_err(cause, "out of memory");
		return (-1);
	}
	n = fread(buf, 1, JWK_PEM_MAX + 1, f);
	if (ferror(f) || n > JWK_PEM_MAX) {
		fclose(f);
		OPENSSL_secure_clear_free(buf, JWK_PEM_MAX + 1);
		jwk_err(cause, "%s: unreadable or larger than %d bytes", path,
		    JWK_PEM_MAX);
		return (-1);
	}
	fclose(f);
	rv = jwk_private_from_pem(buf, n, k, cause);
	OPENSSL_secure_clear_free(buf, JWK_PEM_MAX + 1);
	if (rv == -1 && cause != NULL && *cause != NULL) {
		char	*c = *cause;

		*cause = NULL;
		jwk_err(cause, "%s: %s", path, c);
		free(c);
	}
	return (rv);
}

static int
jwk_put_bn(json_t *o, const char *name, const BIGNUM *bn, int pad)
{
	unsigned char	 bin[JWK_RSA_MAX_BITS / 8 + 1];
	char		 enc[JWK_B64_MAX + 1];
	int		 n;

	n = pad > 0 ? BN_bn2binpad(bn, bin, pad) : BN_bn2bin(bn, bin);
	if (n <= 0 || (size_t)n > sizeof(bin) ||
	    jwk_b64url_encode(bin, (size_t)n, enc, sizeof(enc)) == -1)
		return (-1);
	return (json_object_set_new(o, name, json_string(enc)));
}

/* Public JWK of a key; see jwk.h. */
json_t *
jwk_public_json(const struct jwk_key *k)
{
	BIGNUM	*a = NULL, *b = NULL;
	json_t	*o;
	int	 i, ok = 0;

	if ((o = json_object()) == NULL)
		return (NULL);
	for (i = 0; i < JOSE_ALG__MAX; i++)
		if (k->algs & JOSE_ALG_BIT(i))
			break;
	if (json_object_set_new(o, "kty", json_string(k->kty == JWK_KTY_RSA ?
	    "RSA" : "EC")) == -1 ||
	    json_object_set_new(o, "use", json_string("sig")) == -1 ||
	    (i < JOSE_ALG__MAX && json_object_set_new(o, "alg",
	    json_string(jose_alg_name(i))) == -1) ||
	    (k->kid[0] != '\0' && json_object_set_new(o, "kid",
	    json_string(k->kid)) == -1))
		goto out;
	if (k->kty == JWK_KTY_RSA) {
		if (!EVP_PKEY_get_bn_param(k->pkey, OSSL_PKEY_PARAM_RSA_N,
		    &a) || !EVP_PKEY_get_bn_param(k->pkey,
		    OSSL_PKEY_PARAM_RSA_E, &b) ||
		    jwk_put_bn(o, "n", a, 0) == -1 ||
		    jwk_put_bn(o, "e", b, 0) == -1)
			goto out;
	} else {
		if (!EVP_PKEY_get_bn_param(k->pkey, OSSL_PKEY_PARAM_EC_PUB_X,
		    &a) || !EVP_PKEY_get_bn_param(k->pkey,
		    OSSL_PKEY_PARAM_EC_PUB_Y, &b) ||
		    json_object_set_new(o, "crv", json_string(k->bits == 256 ?
		    "P-256" : "P-384")) == -1 ||
		    jwk_put_bn(o, "x", a, k->bits / 8) == -1 ||
		    jwk_put_bn(o, "y", b, k->bits / 8) == -1)
			goto out;
	}
	ok = 1;
out:
	BN_free(a);
	BN_free(b);
	if (!ok) {
		json_decref(o);
		return (NULL);
	}
	return (o);
}

/* Public JWKS of a set; see jwk.h. */
json_t *
jwk_set_public_json(const struct jwk_set *set, int64_t now)
{
	json_t	*root, *keys, *k;
	size_t	 i;

	if ((root = json_object()) == NULL)
		return (NULL);
	if ((keys = json_array()) == NULL ||
	    json_object_set_new(root, "keys", keys) == -1)
		goto fail;
	for (i = 0; i < set->nkeys; i++) {
		if (set->keys[i].not_after != 0 &&
		    now > set->keys[i].not_after)
			continue;
		if ((k = jwk_public_json(&set->keys[i])) == NULL ||
		    json_array_append_new(keys, k) == -1)
			goto fail;
	}
	return (root);
fail:
	json_decref(root);
	return (NULL);
}

/* Key selection by kid; see jwk.h. */
const struct jwk_key *
jwk_set_find(const struct jwk_set *set, const char *kid, size_t len)
{
	size_t	i;

	if (set == NULL || set->nkeys == 0)
		return (NULL);
	if (kid != NULL) {
		for (i = 0; i < set->nkeys; i++)
			if (strlen(set->keys[i].kid) == len &&
			    memcmp(set->keys[i].kid, kid, len) == 0)
				return (&set->keys[i]);
	}
	if (set->nkeys == 1 && (kid == NULL || set->keys[0].kid[0] == '\0'))
		return (&set->keys[0]);
	return (NULL);
}

/* Append a copy of k; see jwk.h. */
int
jwk_set_add(struct jwk_set *set, const struct jwk_key *k)
{
	struct jwk_key	*nk;

	nk = reallocarray(set->keys, set->nkeys + 1, sizeof(*nk));
	if (nk == NULL)
		return (-1);
	set->keys = nk;
	nk = &set->keys[set->nkeys];
	*nk = *k;
	nk->pem = NULL;
	nk->pemlen = 0;
	if (k->pem != NULL) {
		if ((nk->pem = OPENSSL_secure_malloc(k->pemlen + 1)) == NULL)
			return (-1);
		memcpy(nk->pem, k->pem, k->pemlen + 1);
		nk->pemlen = k->pemlen;
	}
	if (!EVP_PKEY_up_ref(k->pkey)) {
		OPENSSL_secure_clear_free(nk->pem, nk->pemlen + 1);
		return (-1);
	}
	set->nkeys++;
	return (0);
}

/* An empty set. */
struct jwk_set *
jwk_set_new(void)
{
	return (calloc(1, sizeof(struct jwk_set)));
}

/* Free a set and its keys. */
void
jwk_set_free(struct jwk_set *set)
{
	size_t	i;

	if (set == NULL)
		return;
	for (i = 0; i < set->nkeys; i++)
		jwk_key_clear(&set->keys[i]);
	free(set->keys);
	free(set);
}

/* Release a key's contents. */
void
jwk_key_clear(struct jwk_key *k)
{
	EVP_PKEY_free(k->pkey);
	k->pkey = NULL;
	if (k->pem != NULL)
		OPENSSL_secure_clear_free(k->pem, k->pemlen + 1);
	k->pem = NULL;
	k->pemlen = 0;
}
