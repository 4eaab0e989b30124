#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

/*
 * test_jose.c: JWK parsing (src/jwk.c) and JWS verification and signing
 * (src/jose.c): JWK -> key for RSA and EC against keys made by openssl,
 * JWKS bounds and unusable keys, the libtrust kid against a vector made
 * with openssl and python, tokens signed by Python's cryptography
 * (RS256, PS256 with typ at+jwt, ES256), a battery of hostile tokens each
 * refused with its own reason, and round trips of the signer (ES256
 * signatures are 64 bytes, raw R || S).  Time is always a parameter: no
 * test reads the clock.
 */
#include <sys/resource.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jwt.h>
#include <openssl/bio.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "jose.h"
#include "scope.h"

#include "jose_vectors.h"

#define NOW	1700000000LL

/* The keys of the vectors, loaded once. */
static EVP_PKEY		*ec_priv, *rsa_priv;
static struct jwk_set	*idp;		/* rsa1 + ec1, public, from JWKS */

static EVP_PKEY *
load_pem(const char *pem)
{
	BIO		*b = BIO_new_mem_buf(pem, -1);
	EVP_PKEY	*k = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);

	BIO_free(b);
	assert_non_null(k);
	return (k);
}

static struct jwk_set *
parse_jwks(const char *doc)
{
	struct jwk_limits	 lim = { JWK_DEFAULT_MAX_BYTES,
	    JWK_DEFAULT_MAX_KEYS };
	struct jwk_set		*s;
	char			*cause = NULL;

	s = jwk_set_parse(doc, strlen(doc), &lim, &cause);
	if (s == NULL)
		fail_msg("jwks: %s", cause);
	return (s);
}

static int
setup(void **state)
{
	char	doc[4096];

	(void)state;
	ec_priv = load_pem(vec_ec_pem);
	rsa_priv = load_pem(vec_rsa_pem);
	snprintf(doc, sizeof(doc), "{\"keys\":[%s,%s]}", vec_rsa_jwk,
	    vec_ec_jwk);
	idp = parse_jwks(doc);
	return (0);
}

static int
teardown(void **state)
{
	(void)state;
	EVP_PKEY_free(ec_priv);
	EVP_PKEY_free(rsa_priv);
	jwk_set_free(idp);
	return (0);
}

static void
b64(const void *in, size_t len, char *out, size_t outsize)
{
	assert_int_equal(jwk_b64url_encode(in, len, out, outsize), 0);
}

/*
 * A test signer, independent of jose_sign: header and payload JSON as
 * given, signed with key by alg ("RS256", "PS256", "ES256", "HS256" with
 * the secret, "none").  For ES*, der=1 leaves the signature DER-encoded
 * (what a naive signer sends).
 */
static char *
mk(const char *hdr, const char *pl, const char *alg, EVP_PKEY *key,
    const void *secret, size_t secretlen, int der)
{
	unsigned char	 sig[1024], dsig[1024];
	char		*t, *p;
	size_t		 siglen = sizeof(dsig), n;
	const EVP_MD	*md;
	EVP_MD_CTX	*ctx;
	EVP_PKEY_CTX	*pctx;
	unsigned int	 hlen;

	t = calloc(1, 16384);
	assert_non_null(t);
	b64(hdr, strlen(hdr), t, 8192);
	n = strlen(t);
	t[n++] = '.';
	b64(pl, strlen(pl), t + n, 8192);
	n = strlen(t);
	md = strstr(alg, "384") ? EVP_sha384() : strstr(alg, "512") ?
	    EVP_sha512() : EVP_sha256();
	if (strcmp(alg, "none") == 0) {
		siglen = 0;
	} else if (alg[0] == 'H') {
		hlen = sizeof(sig);
		assert_non_null(HMAC(md, secret, (int)secretlen,
		    (unsigned char *)t, n, sig, &hlen));
		siglen = hlen;
	} else {
		ctx = EVP_MD_CTX_new();
		assert_int_equal(EVP_DigestSignInit(ctx, &pctx, md, NULL, key),
		    1);
		if (alg[0] == 'P') {
			assert_true(EVP_PKEY_CTX_set_rsa_padding(pctx,
			    RSA_PKCS1_PSS_PADDING) > 0);
			assert_true(EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx,
			    RSA_PSS_SALTLEN_DIGEST) > 0);
		}
		assert_int_equal(EVP_DigestSign(ctx, dsig, &siglen,
		    (unsigned char *)t, n), 1);
		EVP_MD_CTX_free(ctx);
		if (alg[0] == 'E' && !der) {
			const unsigned char	*dp = dsig;
			ECDSA_SIG		*es;
			int			 fl;

			fl = strstr(alg, "384") ? 48 : 32;

			es = d2i_ECDSA_SIG(NULL, &dp, (long)siglen);
			assert_non_null(es);
			BN_bn2binpad(ECDSA_SIG_get0_r(es), sig, fl);
			BN_bn2binpad(ECDSA_SIG_get0_s(es), sig + fl, fl);
			ECDSA_SIG_free(es);
			siglen = 2 * (size_t)fl;
		} else
			memcpy(sig, dsig, siglen);
	}
	t[n++] = '.';
	p = t + n;
	b64(sig, siglen, p, 16384 - n);
	return (t);
}

static void
opts(struct jose_verify_opts *o)
{
	static const char *const auds[] = { "other", "portcullis" };

	jose_verify_opts_init(o, NOW);
	o->issuer = "https://idp.test";
	o->audiences = auds;
	o->naudiences = 2;
	o->groups_claim = "groups";
}

static enum jose_reason
verify(const struct jwk_set *ks, const char *tok,
    const struct jose_verify_opts *o)
{
	struct jose_claims	*c = NULL;
	enum jose_reason	 r;

	r = jose_verify(ks, tok, strlen(tok), o, &c);
	assert_true((r == JOSE_OK) == (c != NULL));
	jose_claims_free(c);
	return (r);
}

/* A valid payload around NOW. */
#define PL	"{\"iss\":\"https://idp.test\",\"sub\":\"alice\","	\
	"\"aud\":\"portcullis\",\"exp\":1700000600,\"iat\":1700000000,"	\
	"\"nbf\":1699999990,\"groups\":[\"dev\",\"ops\"],"		\
	"\"project_path\":\"g/app\"}"
#define H_RSA	"{\"alg\":\"RS256\",\"kid\":\"rsa1\",\"typ\":\"JWT\"}"
#define H_EC	"{\"alg\":\"ES256\",\"kid\":\"ec1\"}"

static void
test_b64url(void **state)
{
	unsigned char	out[16];
	char		enc[32];
	size_t		n, i;

	(void)state;
	for (i = 0; i <= 5; i++) {
		b64("hello", i, enc, sizeof(enc));
		assert_int_equal(strlen(enc), JWK_B64_LEN(i));
		assert_int_equal(jwk_b64url_decode(enc, strlen(enc), out,
		    sizeof(out), &n), 0);
		assert_int_equal(n, i);
		assert_memory_equal(out, "hello", i);
	}
	b64("\xfb\xff", 2, enc, sizeof(enc));
	assert_string_equal(enc, "-_8");
	assert_int_equal(jwk_b64url_decode("aGk=", 4, out, 16, &n), -1);
	assert_int_equal(jwk_b64url_decode("a+k", 3, out, 16, &n), -1);
	assert_int_equal(jwk_b64url_decode("a/k", 3, out, 16, &n), -1);
	assert_int_equal(jwk_b64url_decode("aGkx\n", 5, out, 16, &n), -1);
	assert_int_equal(jwk_b64url_decode("a", 1, out, 16, &n), -1);
	/* "aGk" is "hi"; "aGl" has a stray low bit: not canonical. */
	assert_int_equal(jwk_b64url_decode("aGk", 3, out, 16, &n), 0);
	assert_int_equal(jwk_b64url_decode("aGl", 3, out, 16, &n), -1);
	assert_int_equal(jwk_b64url_decode("aGVsbG8", 7, out, 4, &n), -1);
	assert_int_equal(jwk_b64url_encode((unsigned char *)"hello", 5, enc,
	    7), -1);
}

/* JWK -> key for RSA and EC: the same key openssl generated. */
static void
test_jwk_keys(void **state)
{
	const struct jwk_key	*k;

	(void)state;
	assert_int_equal(idp->nkeys, 2);
	k = jwk_set_find(idp, "rsa1", 4);
	assert_non_null(k);
	assert_int_equal(k->kty, JWK_KTY_RSA);
	assert_int_equal(k->bits, 2048);
	assert_int_equal(k->algs, JOSE_ALGS_RSA);
	assert_int_equal(EVP_PKEY_eq(k->pkey, rsa_priv), 1);
	assert_int_not_equal(EVP_PKEY_eq(k->pkey, ec_priv), 1);
	k = jwk_set_find(idp, "ec1", 3);
	assert_non_null(k);
	assert_int_equal(k->kty, JWK_KTY_EC);
	assert_int_equal(k->bits, 256);
	assert_int_equal(k->algs, JOSE_ALG_BIT(JOSE_ALG_ES256));
	assert_int_equal(EVP_PKEY_eq(k->pkey, ec_priv), 1);
	/* Selection: by kid; without one only from a one-key set. */
	assert_null(jwk_set_find(idp, "rsa", 3));
	assert_null(jwk_set_find(idp, NULL, 0));
}

/* A JWKS of one key, built from a freshly generated key's export. */
static char *
jwks_of(EVP_PKEY *pkey, const char *extra)
{
	struct jwk_key	 k;
	json_t		*o, *x;
	char		*js, *doc;

	memset(&k, 0, sizeof(k));
	k.pkey = pkey;
	k.kty = EVP_PKEY_get_base_id(pkey) == EVP_PKEY_RSA ? JWK_KTY_RSA :
	    JWK_KTY_EC;
	k.bits = EVP_PKEY_get_bits(pkey);
	k.algs = k.kty == JWK_KTY_RSA ? JOSE_ALG_BIT(JOSE_ALG_RS256) :
	    k.bits == 256 ? JOSE_ALG_BIT(JOSE_ALG_ES256) :
	    JOSE_ALG_BIT(JOSE_ALG_ES384);
	strcpy(k.kid, "k");
	o = jwk_public_json(&k);
	assert_non_null(o);
	json_object_del(o, "alg");
	if (extra != NULL) {
		x = json_loads(extra, 0, NULL);
		assert_non_null(x);
		json_object_update(o, x);
		json_decref(x);
	}
	js = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	assert_true(asprintf(&doc, "{\"keys\":[%s]}", js) > 0);
	free(js);
	return (doc);
}

static struct jwk_set *
try_jwks(const char *doc, size_t max_bytes, size_t max_keys, char **cause)
{
	struct jwk_limits	lim = { max_bytes, max_keys };

	free(*cause);
	*cause = NULL;
	return (jwk_set_parse(doc, strlen(doc), &lim, cause));
}

static void
test_jwks_bounds(void **state)
{
	struct jwk_set	*s;
	EVP_PKEY	*k;
	char		 doc[8192], *d, *cause = NULL;

	(void)state;
	snprintf(doc, sizeof(doc), "{\"keys\":[%s,%s]}", vec_rsa_jwk,
	    vec_ec_jwk);
	assert_null(try_jwks(doc, strlen(doc) - 1, 8, &cause));
	assert_non_null(strstr(cause, "larger than"));
	assert_null(try_jwks(doc, 65536, 1, &cause));
	assert_non_null(strstr(cause, "more than 1 keys"));
	assert_null(try_jwks("{\"keys\":[],\"keys\":[]}", 65536, 8, &cause));
	assert_null(try_jwks("nope", 65536, 8, &cause));
	assert_null(try_jwks("{\"keys\":{}}", 65536, 8, &cause));
	assert_null(try_jwks("{\"keys\":[]}", 65536, 8, &cause));
	assert_non_null(strstr(cause, "no usable key"));
	/* The same kid twice is ambiguous: the document is refused. */
	snprintf(doc, sizeof(doc), "{\"keys\":[%s,%s]}", vec_ec_jwk,
	    vec_ec_jwk);
	assert_null(try_jwks(doc, 65536, 8, &cause));
	assert_non_null(strstr(cause, "repeats kid"));
	/* Unusable keys are skipped, usable ones kept. */
	snprintf(doc, sizeof(doc), "{\"keys\":["
	    "{\"kty\":\"oct\",\"k\":\"c2VjcmV0\"},"
	    "{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"AAAA\"},"
	    "{\"kty\":\"EC\",\"crv\":\"P-521\",\"x\":\"AA\",\"y\":\"AA\"},"
	    "{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"AA\",\"y\":\"AA\"},"
	    "%s]}", vec_ec_jwk);
	s = try_jwks(doc, 65536, 8, &cause);
	assert_non_null(s);
	assert_int_equal(s->nkeys, 1);
	jwk_set_free(s);

	/* RSA below 2048 bits is not usable. */
	k = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
	d = jwks_of(k, NULL);
	assert_null(try_jwks(d, 65536, 8, &cause));
	assert_non_null(strstr(cause, "1024 bits"));
	free(d);
	EVP_PKEY_free(k);

	/* P-384: ES384 only; use enc and an alg of another type refused. */
	k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
	d = jwks_of(k, NULL);
	s = try_jwks(d, 65536, 8, &cause);
	assert_non_null(s);
	assert_int_equal(s->keys[0].algs, JOSE_ALG_BIT(JOSE_ALG_ES384));
	assert_int_equal(EVP_PKEY_eq(s->keys[0].pkey, k), 1);
	jwk_set_free(s);
	free(d);
	d = jwks_of(k, "{\"use\":\"enc\"}");
	assert_null(try_jwks(d, 65536, 8, &cause));
	free(d);
	d = jwks_of(k, "{\"alg\":\"ES256\"}");
	assert_null(try_jwks(d, 65536, 8, &cause));
	assert_non_null(strstr(cause, "alg does not fit"));
	free(d);
	d = jwks_of(k, "{\"alg\":\"HS256\"}");
	assert_null(try_jwks(d, 65536, 8, &cause));
	free(d);
	d = jwks_of(k, "{\"key_ops\":[\"encrypt\"]}");
	assert_null(try_jwks(d, 65536, 8, &cause));
	free(d);
	d = jwks_of(k, "{\"key_ops\":[\"verify\"],\"use\":\"sig\"}");
	s = try_jwks(d, 65536, 8, &cause);
	assert_non_null(s);
	jwk_set_free(s);
	free(d);
	/* A point moved off the curve fails the public-key check. */
	d = jwks_of(k, "{\"y\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"}");
	assert_null(try_jwks(d, 65536, 8, &cause));
	free(d);
	/* Coordinates must be exactly the field size. */
	d = jwks_of(k, "{\"x\":\"AAAA\"}");
	assert_null(try_jwks(d, 65536, 8, &cause));
	free(d);
	EVP_PKEY_free(k);

	/* An RSA JWK pinned to PS256 is usable for PS256 only. */
	k = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
	d = jwks_of(k, "{\"alg\":\"PS256\"}");
	s = try_jwks(d, 65536, 8, &cause);
	assert_non_null(s);
	assert_int_equal(s->keys[0].algs, JOSE_ALG_BIT(JOSE_ALG_PS256));
	jwk_set_free(s);
	free(d);
	d = jwks_of(k, "{\"alg\":\"ES256\"}");
	assert_null(try_jwks(d, 65536, 8, &cause));
	free(d);
	d = jwks_of(k, "{\"kid\":\"a\\u0001b\"}");
	assert_null(try_jwks(d, 65536, 8, &cause));
	free(d);
	EVP_PKEY_free(k);
	free(cause);
}

/* The libtrust kid matches the vector computed with openssl + python. */
static void
test_libtrust_kid(void **state)
{
	struct jwk_key	k;
	char		kid[JWK_LIBTRUST_KID_LEN + 1], *cause = NULL;

	(void)state;
	assert_int_equal(jwk_libtrust_kid(ec_priv, kid, sizeof(kid)), 0);
	assert_string_equal(kid, VEC_EC_LIBTRUST_KID);
	assert_int_equal(jwk_libtrust_kid(rsa_priv, kid, sizeof(kid)), 0);
	assert_string_equal(kid, VEC_RSA_LIBTRUST_KID);
	assert_int_equal(jwk_libtrust_kid(rsa_priv, kid, sizeof(kid) - 1),
	    -1);
	/* The public key alone gives the same kid. */
	assert_int_equal(jwk_libtrust_kid(jwk_set_find(idp, "ec1", 3)->pkey,
	    kid, sizeof(kid)), 0);
	assert_string_equal(kid, VEC_EC_LIBTRUST_KID);
	/* A private key loaded from PEM carries it as its kid. */
	assert_int_equal(jwk_private_from_pem((unsigned char *)vec_ec_pem,
	    strlen(vec_ec_pem), &k, &cause), 0);
	assert_string_equal(k.kid, VEC_EC_LIBTRUST_KID);
	assert_int_equal(k.algs, JOSE_ALG_BIT(JOSE_ALG_ES256));
	assert_non_null(k.pem);
	jwk_key_clear(&k);
	assert_int_equal(jwk_private_from_pem((unsigned char *)"junk", 4, &k,
	    &cause), -1);
	assert_non_null(cause);
	free(cause);
}

/* Tokens made by another implementation verify, with their claims. */
static void
test_vectors(void **state)
{
	static const char *const toks[] = { vec_rs256, vec_ps256, vec_es256 };
	static const int algs[] = { JOSE_ALG_RS256, JOSE_ALG_PS256,
	    JOSE_ALG_ES256 };
	struct jose_verify_opts	 o;
	struct jose_claims	*c;
	size_t			 i, j, ngroups;

	(void)state;
	opts(&o);
	for (i = 0; i < 3; i++) {
		assert_int_equal(jose_verify(idp, toks[i], strlen(toks[i]), &o,
		    &c), JOSE_OK);
		assert_int_equal(c->alg, algs[i]);
		assert_string_equal(c->subject, "alice");
		assert_string_equal(c->issuer, "https://idp.test");
		assert_int_equal(c->naudiences, 1);
		assert_string_equal(c->audiences[0], "portcullis");
		assert_int_equal(c->exp, 4102444800LL);
		assert_int_equal(c->iat, 1700000000LL);
		assert_int_equal(c->ngroups, 2);
		assert_string_equal(c->groups[0], "dev");
		assert_string_equal(c->groups[1], "ops");
		assert_string_equal(c->kid, i == 2 ? "ec1" : "rsa1");
		/* Flat claims: iss, sub, aud, groups twice. */
		assert_int_equal(c->nclaims, 5);
		for (j = ngroups = 0; j < c->nclaims; j++)
			if (strcmp(c->claims[j].name, "groups") == 0)
				ngroups++;
		assert_int_equal(ngroups, 2);
		assert_string_equal(jose_claim_string(c, "sub"), "alice");
		assert_null(jose_claim_string(c, "groups"));
		jose_claims_free(c);
	}
}

/*
 * libjwt 1.10, given the RSA public key's PEM, accepts an HS256 token
 * whose HMAC key is that PEM (SPEC.md): the premise of pinning.  And it
 * refuses typ at+jwt, why jose.c verifies with OpenSSL.
 */
static void
test_libjwt_premise(void **state)
{
	EVP_PKEY	*pub;
	BIO		*b;
	char		*pem, *tok;
	long		 len;
	jwt_t		*j = NULL;

	(void)state;
	pub = jwk_set_find(idp, "rsa1", 4)->pkey;
	b = BIO_new(BIO_s_mem());
	assert_true(PEM_write_bio_PUBKEY(b, pub));
	len = BIO_get_mem_data(b, &pem);
	tok = mk("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", PL, "HS256", NULL,
	    pem, (size_t)len, 0);
	assert_int_equal(jwt_decode(&j, tok, (unsigned char *)pem, (int)len),
	    0);
	jwt_free(j);
	j = NULL;
	assert_int_not_equal(jwt_decode(&j, vec_ps256,
	    (unsigned char *)pem, (int)len), 0);
	jwt_free(j);
	free(tok);
	BIO_free(b);
}

struct hostile {
	const char		*what;
	const char		*hdr;
	const char		*pl;
	const char		*alg;	/* how mk signs; NULL: raw token */
	enum jose_reason	 want;
};

static const struct hostile hostile[] = {
	{ "valid RS256", H_RSA, PL, "RS256", JOSE_OK },
	{ "valid ES256", H_EC, PL, "ES256", JOSE_OK },
	{ "valid PS256", "{\"alg\":\"PS256\",\"kid\":\"rsa1\"}", PL, "PS256",
	    JOSE_OK },
	{ "valid RS512", "{\"alg\":\"RS512\",\"kid\":\"rsa1\"}", PL, "RS512",
	    JOSE_OK },
	{ "alg none", "{\"alg\":\"none\",\"kid\":\"rsa1\"}", PL, "none",
	    JOSE_R_ALG_NONE },
	{ "alg NoNe", "{\"alg\":\"NoNe\",\"kid\":\"rsa1\"}", PL, "none",
	    JOSE_R_ALG_NONE },
	{ "HS256 with the PEM (confusion)", "{\"alg\":\"HS256\","
	    "\"kid\":\"rsa1\"}", PL, "HS256-PEM", JOSE_R_ALG_HMAC },
	{ "HS512", "{\"alg\":\"HS512\",\"kid\":\"rsa1\"}", PL, "HS512-PEM",
	    JOSE_R_ALG_HMAC },
	{ "alg missing", "{\"kid\":\"rsa1\"}", PL, "RS256",
	    JOSE_R_ALG_UNKNOWN },
	{ "alg EdDSA", "{\"alg\":\"EdDSA\",\"kid\":\"rsa1\"}", PL, "RS256",
	    JOSE_R_ALG_UNKNOWN },
	{ "alg as number", "{\"alg\":256,\"kid\":\"rsa1\"}", PL, "RS256",
	    JOSE_R_ALG_UNKNOWN },
	{ "RS256 on the EC key", "{\"alg\":\"RS256\",\"kid\":\"ec1\"}", PL,
	    "RS256", JOSE_R_ALG_NOT_ALLOWED },
	{ "ES256 on the RSA key", "{\"alg\":\"ES256\",\"kid\":\"rsa1\"}", PL,
	    "ES256", JOSE_R_ALG_NOT_ALLOWED },
	{ "ES384 on a P-256 key", "{\"alg\":\"ES384\",\"kid\":\"ec1\"}", PL,
	    "ES384", JOSE_R_ALG_NOT_ALLOWED },
	{ "PS512 on a key without alg", "{\"alg\":\"PS512\",\"kid\":"
	    "\"rsa1\"}", PL, "PS512", JOSE_R_ALG_NOT_ALLOWED },
	{ "unknown kid", "{\"alg\":\"RS256\",\"kid\":\"rsa2\"}", PL, "RS256",
	    JOSE_R_KID_UNKNOWN },
	{ "no kid, two keys", "{\"alg\":\"RS256\"}", PL, "RS256",
	    JOSE_R_KID_UNKNOWN },
	{ "kid not a string", "{\"alg\":\"RS256\",\"kid\":1}", PL, "RS256",
	    JOSE_R_KID_UNKNOWN },
	{ "crit header", "{\"alg\":\"RS256\",\"kid\":\"rsa1\",\"crit\":"
	    "[\"exp\"],\"exp\":1}", PL, "RS256", JOSE_R_CRIT },
	{ "b64 false (needs crit)", "{\"alg\":\"RS256\",\"kid\":\"rsa1\","
	    "\"b64\":false,\"crit\":[\"b64\"]}", PL, "RS256", JOSE_R_CRIT },
	{ "duplicate alg in header", "{\"alg\":\"RS256\",\"kid\":\"rsa1\","
	    "\"alg\":\"none\"}", PL, "RS256", JOSE_R_DUPLICATE_KEY },
	{ "duplicate sub in payload", H_RSA, "{\"iss\":\"https://idp.test\","
	    "\"sub\":\"alice\",\"aud\":\"portcullis\",\"exp\":1700000600,"
	    "\"sub\":\"admin\"}", "RS256", JOSE_R_DUPLICATE_KEY },
	{ "header not an object", "[\"RS256\"]", PL, "RS256",
	    JOSE_R_BAD_JSON },
	{ "header not JSON", "{alg:RS256}", PL, "RS256", JOSE_R_BAD_JSON },
	{ "payload not JSON", H_RSA, "hello", "RS256", JOSE_R_BAD_JSON },
	{ "expired", H_RSA, "{\"iss\":\"https://idp.test\",\"aud\":"
	    "\"portcullis\",\"exp\":1699999969}", "RS256", JOSE_R_EXPIRED },
	{ "expired, within leeway", H_RSA, "{\"iss\":\"https://idp.test\","
	    "\"aud\":\"portcullis\",\"exp\":1699999971}", "RS256", JOSE_OK },
	{ "not yet valid", H_RSA, "{\"iss\":\"https://idp.test\",\"aud\":"
	    "\"portcullis\",\"exp\":1700000600,\"nbf\":1700000031}", "RS256",
	    JOSE_R_NOT_YET_VALID },
	{ "nbf within leeway", H_RSA, "{\"iss\":\"https://idp.test\",\"aud\":"
	    "\"portcullis\",\"exp\":1700000600,\"nbf\":1700000030}", "RS256",
	    JOSE_OK },
	{ "issued in the future", H_RSA, "{\"iss\":\"https://idp.test\","
	    "\"aud\":\"portcullis\",\"exp\":1700000600,\"iat\":1700000100}",
	    "RS256", JOSE_R_ISSUED_IN_FUTURE },
	{ "no exp", H_RSA, "{\"iss\":\"https://idp.test\",\"aud\":"
	    "\"portcullis\"}", "RS256", JOSE_R_NO_EXPIRY },
	{ "exp a string", H_RSA, "{\"iss\":\"https://idp.test\",\"aud\":"
	    "\"portcullis\",\"exp\":\"1700000600\"}", "RS256",
	    JOSE_R_BAD_CLAIM },
	{ "exp negative", H_RSA, "{\"iss\":\"https://idp.test\",\"aud\":"
	    "\"portcullis\",\"exp\":-1}", "RS256", JOSE_R_BAD_CLAIM },
	{ "exp real", H_RSA, "{\"iss\":\"https://idp.test\",\"aud\":"
	    "\"portcullis\",\"exp\":1700000600.5}", "RS256", JOSE_OK },
	{ "wrong iss", H_RSA, "{\"iss\":\"https://idp.test/\",\"aud\":"
	    "\"portcullis\",\"exp\":1700000600}", "RS256", JOSE_R_ISSUER },
	{ "no iss", H_RSA, "{\"aud\":\"portcullis\",\"exp\":1700000600}",
	    "RS256", JOSE_R_ISSUER },
	{ "wrong aud", H_RSA, "{\"iss\":\"https://idp.test\",\"aud\":"
	    "\"portcullis2\",\"exp\":1700000600}", "RS256",
	    JOSE_R_AUDIENCE },
	{ "no aud", H_RSA, "{\"iss\":\"https://idp.test\",\"exp\":"
	    "1700000600}", "RS256", JOSE_R_AUDIENCE },
	{ "aud array, one accepted", H_RSA, "{\"iss\":\"https://idp.test\","
	    "\"aud\":[\"x\",\"portcullis\"],\"exp\":1700000600}", "RS256",
	    JOSE_OK },
	{ "aud array of numbers", H_RSA, "{\"iss\":\"https://idp.test\","
	    "\"aud\":[1],\"exp\":1700000600}", "RS256", JOSE_R_BAD_CLAIM },
	{ "sub a number", H_RSA, "{\"iss\":\"https://idp.test\",\"aud\":"
	    "\"portcullis\",\"exp\":1700000600,\"sub\":7}", "RS256",
	    JOSE_R_BAD_CLAIM },
	{ "groups of numbers", H_RSA, "{\"iss\":\"https://idp.test\",\"aud\":"
	    "\"portcullis\",\"exp\":1700000600,\"groups\":[1]}", "RS256",
	    JOSE_R_BAD_CLAIM },
	{ "signature DER, not R||S", H_EC, PL, "ES256-DER",
	    JOSE_R_BAD_SIGNATURE },
	{ "flipped signature bit", H_RSA, PL, "RS256-FLIP",
	    JOSE_R_BAD_SIGNATURE },
	{ "flipped ES256 bit", H_EC, PL, "ES256-FLIP", JOSE_R_BAD_SIGNATURE },
	{ "payload changed", H_RSA, PL, "RS256-PAYLOAD",
	    JOSE_R_BAD_SIGNATURE },
	{ "empty signature", H_RSA, PL, "none", JOSE_R_BAD_SIGNATURE },
	{ "bad base64 in header", NULL, NULL, "eyJhbGciOiJSUzI1NiJ9+.e30.AA",
	    JOSE_R_BAD_BASE64 },
	{ "padded base64", NULL, NULL, "eyJhbGciOiJub25lIn0=.e30.AA",
	    JOSE_R_BAD_BASE64 },
	{ "bad base64 in signature", H_RSA, PL, "RS256-BADSIG",
	    JOSE_R_BAD_BASE64 },
	{ "two parts", NULL, NULL, "eyJhbGciOiJub25lIn0.e30",
	    JOSE_R_MALFORMED },
	{ "four parts", NULL, NULL, "eyJhbGciOiJub25lIn0.e30.AA.AA",
	    JOSE_R_MALFORMED },
	{ "empty header", NULL, NULL, ".e30.AA", JOSE_R_MALFORMED },
	{ "empty", NULL, NULL, "", JOSE_R_MALFORMED },
	{ "1 MiB token", NULL, NULL, "1MiB", JOSE_R_TOO_LARGE },
};

/* Build the token a battery row describes. */
static char *
hostile_token(const struct hostile *h)
{
	EVP_PKEY	*pub;
	BIO		*b;
	char		*pem, *t, alg[16], *dot;
	long		 len;
	int		 ec;

	if (h->hdr == NULL) {
		if (strcmp(h->alg, "1MiB") == 0) {
			t = malloc(1024 * 1024 + 1);
			assert_non_null(t);
			memset(t, 'A', 1024 * 1024);
			t[100] = t[200] = '.';
			t[1024 * 1024] = '\0';
			return (t);
		}
		return (strdup(h->alg));
	}
	snprintf(alg, sizeof(alg), "%.5s", h->alg);
	if (strstr(h->alg, "-PEM") != NULL) {
		/* The HMAC secret is the RSA public key's PEM. */
		pub = jwk_set_find(idp, "rsa1", 4)->pkey;
		b = BIO_new(BIO_s_mem());
		assert_true(PEM_write_bio_PUBKEY(b, pub));
		len = BIO_get_mem_data(b, &pem);
		t = mk(h->hdr, h->pl, alg, NULL, pem, (size_t)len, 0);
		BIO_free(b);
		return (t);
	}
	if (strcmp(alg, "none") == 0)
		return (mk(h->hdr, h->pl, "none", NULL, NULL, 0, 0));
	ec = alg[0] == 'E';
	t = mk(h->hdr, h->pl, alg, ec ? ec_priv : rsa_priv, NULL, 0,
	    strstr(h->alg, "-DER") != NULL);
	dot = strrchr(t, '.');
	if (strstr(h->alg, "-FLIP") != NULL)
		dot[5] = dot[5] == 'A' ? 'B' : 'A';	/* one bit of the sig */
	if (strstr(h->alg, "-BADSIG") != NULL)
		dot[3] = '*';
	if (strstr(h->alg, "-PAYLOAD") != NULL)
		t[strchr(t, '.') - t + 3] ^= 1;
	return (t);
}

/* Every hostile token is refused, each with its own reason. */
static void
test_hostile(void **state)
{
	struct jose_verify_opts	 o;
	enum jose_reason	 r;
	size_t			 i;
	char			*t;

	(void)state;
	opts(&o);
	for (i = 0; i < sizeof(hostile) / sizeof(hostile[0]); i++) {
		t = hostile_token(&hostile[i]);
		r = verify(idp, t, &o);
		if (r != hostile[i].want)
			fail_msg("%s: got %s, want %s", hostile[i].what,
			    jose_reason_name(r),
			    jose_reason_name(hostile[i].want));
		free(t);
	}
}

/* Options: issuer restriction, algorithm restriction, bounds, retired. */
static void
test_options(void **state)
{
	struct jose_verify_opts	 o;
	struct jwk_set		*one;
	char			*t, pl[8192];
	size_t			 n, i;

	(void)state;
	opts(&o);
	t = mk(H_RSA, PL, "RS256", rsa_priv, NULL, 0, 0);
	assert_int_equal(verify(idp, t, &o), JOSE_OK);
	o.issuer = NULL;
	assert_int_equal(verify(idp, t, &o), JOSE_R_ISSUER);
	opts(&o);
	o.naudiences = 0;		/* not checked */
	assert_int_equal(verify(idp, t, &o), JOSE_OK);
	opts(&o);
	o.algs = JOSE_ALG_BIT(JOSE_ALG_ES256);
	assert_int_equal(verify(idp, t, &o), JOSE_R_ALG_NOT_ALLOWED);
	opts(&o);
	o.max_token_bytes = strlen(t) - 1;
	assert_int_equal(verify(idp, t, &o), JOSE_R_TOO_LARGE);
	o.max_token_bytes = strlen(t);
	assert_int_equal(verify(idp, t, &o), JOSE_OK);
	opts(&o);
	o.leeway = 0;
	o.now = 1700000600;		/* exactly exp: expired */
	assert_int_equal(verify(idp, t, &o), JOSE_R_EXPIRED);
	o.now = 1700000599;
	assert_int_equal(verify(idp, t, &o), JOSE_OK);
	/* The claim bounds: 6 values in PL (iss sub aud 2 groups path). */
	opts(&o);
	o.max_claims = 5;
	assert_int_equal(verify(idp, t, &o), JOSE_R_CLAIMS_TOO_LARGE);
	o.max_claims = 6;
	assert_int_equal(verify(idp, t, &o), JOSE_OK);
	o.max_claim_bytes = 15;		/* "https://idp.test" is 16 */
	assert_int_equal(verify(idp, t, &o), JOSE_R_CLAIMS_TOO_LARGE);
	free(t);
	/* A long claim-name and many values. */
	n = (size_t)snprintf(pl, sizeof(pl), "{\"iss\":\"https://idp.test\","
	    "\"aud\":\"portcullis\",\"exp\":1700000600,\"many\":[");
	for (i = 0; i < 300; i++)
		n += (size_t)snprintf(pl + n, sizeof(pl) - n, "%s\"v\"",
		    i ? "," : "");
	snprintf(pl + n, sizeof(pl) - n, "]}");
	t = mk(H_RSA, pl, "RS256", rsa_priv, NULL, 0, 0);
	opts(&o);
	assert_int_equal(verify(idp, t, &o), JOSE_R_CLAIMS_TOO_LARGE);
	o.max_claims = 302;
	assert_int_equal(verify(idp, t, &o), JOSE_OK);
	free(t);
	/* Objects and numbers are not claims policy sees, nor counted. */
	t = mk(H_RSA, "{\"iss\":\"https://idp.test\",\"aud\":\"portcullis\","
	    "\"exp\":1700000600,\"o\":{\"a\":\"b\"},\"n\":5,\"m\":[\"a\",1]}",
	    "RS256", rsa_priv, NULL, 0, 0);
	opts(&o);
	o.max_claims = 2;
	assert_int_equal(verify(idp, t, &o), JOSE_OK);
	free(t);

	/* A one-key set without kid takes tokens with or without one. */
	snprintf(pl, sizeof(pl), "{\"keys\":[%s]}", vec_ec_jwk);
	one = parse_jwks(pl);
	one->keys[0].kid[0] = '\0';
	opts(&o);
	t = mk("{\"alg\":\"ES256\"}", PL, "ES256", ec_priv, NULL, 0, 0);
	assert_int_equal(verify(one, t, &o), JOSE_OK);
	free(t);
	t = mk(H_EC, PL, "ES256", ec_priv, NULL, 0, 0);
	assert_int_equal(verify(one, t, &o), JOSE_OK);
	/* A retired key verifies until not_after, then never. */
	one->keys[0].not_after = NOW;
	assert_int_equal(verify(one, t, &o), JOSE_OK);
	one->keys[0].not_after = NOW - 1;
	assert_int_equal(verify(one, t, &o), JOSE_R_KEY_RETIRED);
	free(t);
	jwk_set_free(one);
}

/* The gateway's signer: registry:2's form, and it verifies here. */
static void
test_sign_roundtrip(void **state)
{
	struct jose_verify_opts	 o;
	struct jose_claims	*c, *c0 = NULL;
	struct jose_sign_req	 rq;
	struct jose_peek	 pk;
	struct scope_set	*ss, *back;
	struct jwk_key		 k, pubk;
	struct jwk_set		*set;
	unsigned char		 sig[128];
	const char		*aud[] = { "registry.test" };
	const char		*sc = "repository:a/b:pull,push "
	    "registry:catalog:*";
	json_t			*hdr, *jk;
	char			*t = NULL, *t0 = NULL, *cause = NULL, *dot;
	char			 hb[256];
	size_t			 n, i;
	int			 rsa;

	(void)state;
	for (rsa = 0; rsa < 2; rsa++) {
		assert_int_equal(jwk_private_from_pem(rsa ?
		    (unsigned char *)vec_rsa_pem : (unsigned char *)vec_ec_pem,
		    strlen(rsa ? vec_rsa_pem : vec_ec_pem), &k, &cause), 0);
		/* The verifier's set: the signer's public JWK, parsed. */
		jk = jwk_public_json(&k);
		assert_non_null(jk);
		assert_string_equal(json_string_value(json_object_get(jk,
		    "alg")), rsa ? "RS256" : "ES256");
		assert_int_equal(jwk_from_json(jk, &pubk, &cause), 0);
		json_decref(jk);
		set = jwk_set_new();
		assert_int_equal(jwk_set_add(set, &pubk), 0);
		jwk_key_clear(&pubk);

		ss = scope_set_new(8);
		assert_int_equal(scope_parse(ss, sc, strlen(sc)), SCOPE_OK);
		memset(&rq, 0, sizeof(rq));
		rq.issuer = "portcullis";
		rq.subject = "alice";
		rq.audience = "registry.test";
		rq.now = NOW;
		rq.ttl = 300;
		rq.access = scope_access_json(ss);
		jose_verify_opts_init(&o, NOW + 10);
		o.issuer = "portcullis";
		o.audiences = aud;
		o.naudiences = 1;
		/* Enough ES256 signatures that a short R or S would show. */
		for (i = 0; i < (rsa ? 4 : 300); i++) {
			t = jose_sign(&k, &rq, &cause);
			assert_non_null(t);
			dot = strrchr(t, '.');
			assert_int_equal(jwk_b64url_decode(dot + 1,
			    strlen(dot + 1), sig, sizeof(sig), &n), rsa ? -1 :
			    0);
			if (!rsa)
				assert_int_equal(n, 64);
			assert_int_equal(jose_verify(set, t, strlen(t), &o,
			    &c), JOSE_OK);
			if (i == 0) {
				t0 = t;
				c0 = c;
			} else {
				jose_claims_free(c);
				free(t);
			}
		}
		t = t0;
		c = c0;
		/* The header registry:2 needs, the claims, the access. */
		n = (size_t)(strchr(t, '.') - t);
		assert_int_equal(jwk_b64url_decode(t, n, (unsigned char *)hb,
		    sizeof(hb) - 1, &n), 0);
		hb[n] = '\0';
		hdr = json_loads(hb, 0, NULL);
		assert_string_equal(json_string_value(json_object_get(hdr,
		    "typ")), "JWT");
		assert_string_equal(json_string_value(json_object_get(hdr,
		    "alg")), rsa ? "RS256" : "ES256");
		assert_string_equal(json_string_value(json_object_get(hdr,
		    "kid")), rsa ? VEC_RSA_LIBTRUST_KID : VEC_EC_LIBTRUST_KID);
		json_decref(hdr);
		assert_string_equal(c->subject, "alice");
		assert_int_equal(c->exp, NOW + 300);
		assert_int_equal(c->nbf, NOW);
		assert_int_equal(c->iat, NOW);
		assert_non_null(c->jti);
		assert_int_equal(strlen(c->jti), 22);
		back = scope_set_new(8);
		assert_int_equal(scope_from_access(back,
		    json_object_get(c->payload, "access")), SCOPE_OK);
		assert_int_equal(scope_actions(back, SCOPE_REPOSITORY, "a/b"),
		    SCOPE_PULL | SCOPE_PUSH);
		assert_int_equal(scope_actions(back, SCOPE_REGISTRY,
		    "catalog"), SCOPE_PULL | SCOPE_PUSH | SCOPE_DELETE |
		    SCOPE_ANY);
		assert_int_equal(jose_peek(t, strlen(t), 16384, &pk), JOSE_OK);
		assert_string_equal(pk.issuer, "portcullis");
		assert_string_equal(pk.kid, k.kid);
		assert_int_equal(pk.alg, rsa ? JOSE_ALG_RS256 :
		    JOSE_ALG_ES256);
		/* Tokens of this signer do not pass for another audience. */
		o.audiences = (const char *[]){ "other" };
		assert_int_equal(verify(set, t, &o), JOSE_R_AUDIENCE);
		scope_set_free(back);
		scope_set_free(ss);
		json_decref(rq.access);
		rq.access = NULL;
		jose_claims_free(c);
		free(t);
		jwk_set_free(set);
		jwk_key_clear(&k);
	}
	/* A public key cannot sign. */
	assert_null(jose_sign(jwk_set_find(idp, "ec1", 3), &rq, &cause));
	assert_string_equal(cause, "not a private key");
	free(cause);
}

/* ES384 from a P-384 key: 96-byte signatures that verify. */
static void
test_sign_es384(void **state)
{
	struct jose_verify_opts	 o;
	struct jose_sign_req	 rq;
	struct jose_claims	*c;
	struct jwk_key		 k, pubk;
	struct jwk_set		*set;
	unsigned char		 sig[128];
	const char		*aud[] = { "svc" };
	EVP_PKEY		*p;
	BIO			*b;
	json_t			*jk;
	char			*pem, *t, *cause = NULL;
	long			 len;
	size_t			 n;
	int			 i;

	(void)state;
	p = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
	b = BIO_new(BIO_s_mem());
	assert_true(PEM_write_bio_PrivateKey(b, p, NULL, NULL, 0, NULL,
	    NULL));
	len = BIO_get_mem_data(b, &pem);
	assert_int_equal(jwk_private_from_pem((unsigned char *)pem,
	    (size_t)len, &k, &cause), 0);
	assert_int_equal(k.algs, JOSE_ALG_BIT(JOSE_ALG_ES384));
	jk = jwk_public_json(&k);
	assert_int_equal(jwk_from_json(jk, &pubk, &cause), 0);
	json_decref(jk);
	set = jwk_set_new();
	assert_int_equal(jwk_set_add(set, &pubk), 0);
	memset(&rq, 0, sizeof(rq));
	rq.issuer = "gw";
	rq.subject = "bob";
	rq.audience = "svc";
	rq.now = NOW;
	rq.ttl = 60;
	jose_verify_opts_init(&o, NOW);
	o.issuer = "gw";
	o.audiences = aud;
	o.naudiences = 1;
	for (i = 0; i < 100; i++) {
		t = jose_sign(&k, &rq, &cause);
		assert_non_null(t);
		assert_int_equal(jwk_b64url_decode(strrchr(t, '.') + 1,
		    strlen(strrchr(t, '.') + 1), sig, sizeof(sig), &n), 0);
		assert_int_equal(n, 96);
		assert_int_equal(jose_verify(set, t, strlen(t), &o, &c),
		    JOSE_OK);
		assert_int_equal(c->alg, JOSE_ALG_ES384);
		jose_claims_free(c);
		free(t);
	}
	/* An encrypted PEM is refused, without asking for a passphrase. */
	BIO_free(b);
	b = BIO_new(BIO_s_mem());
	assert_true(PEM_write_bio_PrivateKey(b, p, EVP_aes_128_cbc(), NULL, 0,
	    NULL, (void *)"passphrase"));
	len = BIO_get_mem_data(b, &pem);
	jwk_key_clear(&pubk);
	assert_int_equal(jwk_private_from_pem((unsigned char *)pem,
	    (size_t)len, &pubk, &cause), -1);
	assert_non_null(strstr(cause, "encrypted"));
	free(cause);
	BIO_free(b);
	jwk_key_clear(&k);
	jwk_set_free(set);
	EVP_PKEY_free(p);
}

/* The published JWKS leaves out retired keys past their time. */
static void
test_public_jwks(void **state)
{
	struct jwk_set	*s;
	json_t		*j;
	char		*js;

	(void)state;
	s = jwk_set_new();
	assert_int_equal(jwk_set_add(s, &idp->keys[0]), 0);
	assert_int_equal(jwk_set_add(s, &idp->keys[1]), 0);
	s->keys[0].not_after = NOW;
	j = jwk_set_public_json(s, NOW);
	assert_int_equal(json_array_size(json_object_get(j, "keys")), 2);
	json_decref(j);
	j = jwk_set_public_json(s, NOW + 1);
	assert_int_equal(json_array_size(json_object_get(j, "keys")), 1);
	js = json_dumps(j, JSON_COMPACT);
	/* What it publishes parses back into the same key. */
	jwk_set_free(s);
	s = parse_jwks(js);
	assert_int_equal(EVP_PKEY_eq(s->keys[0].pkey, ec_priv), 1);
	assert_null(strstr(js, "\"d\""));
	free(js);
	json_decref(j);
	jwk_set_free(s);
}

static void
test_peek_and_hash(void **state)
{
	struct jose_peek	pk;
	unsigned char		h1[32], h2[32], h3[32];

	(void)state;
	assert_int_equal(jose_peek(vec_es256, strlen(vec_es256), 16384, &pk),
	    JOSE_OK);
	assert_string_equal(pk.issuer, "https://idp.test");
	assert_string_equal(pk.kid, "ec1");
	assert_int_equal(pk.alg, JOSE_ALG_ES256);
	assert_int_equal(jose_peek(vec_es256, strlen(vec_es256), 100, &pk),
	    JOSE_R_TOO_LARGE);
	assert_int_equal(jose_peek("a.b", 3, 100, &pk), JOSE_R_MALFORMED);

	assert_int_equal(jose_token_hash((unsigned char *)"k1", 2, "tok", 3,
	    h1), 0);
	assert_int_equal(jose_token_hash((unsigned char *)"k1", 2, "tok", 3,
	    h2), 0);
	assert_memory_equal(h1, h2, 32);
	assert_int_equal(jose_token_hash((unsigned char *)"k2", 2, "tok", 3,
	    h3), 0);
	assert_memory_not_equal(h1, h3, 32);
	assert_int_equal(jose_token_hash((unsigned char *)"k1", 2, "tok2", 4,
	    h3), 0);
	assert_memory_not_equal(h1, h3, 32);
	/* It is HMAC-SHA-256: the same as OpenSSL's, short and long keys. */
	{
		unsigned char	 key[100], ref[32];
		unsigned int	 n;
		size_t		 kl;
		static const size_t	 kls[] = { 0, 1, 32, 63, 64, 65, 100 };
		const char	*t = vec_es256;

		for (kl = 0; kl < sizeof(key); kl++)
			key[kl] = (unsigned char)(kl * 7 + 1);
		for (kl = 0; kl < sizeof(kls) / sizeof(kls[0]); kl++) {
			n = 32;
			assert_non_null(HMAC(EVP_sha256(), key, (int)kls[kl],
			    (const unsigned char *)t, strlen(t), ref, &n));
			assert_int_equal(jose_token_hash(key, kls[kl], t,
			    strlen(t), h3), 0);
			assert_memory_equal(h3, ref, 32);
		}
	}
}

/*
 * The extra claims cannot replace the claims the signer sets: libjwt's
 * jwt_add_grants_json() merges with json_object_update(), which
 * overwrites, so an extra "exp" (or iss, sub, aud, nbf, iat, jti) taken
 * from a caller's input would have been signed as the token's own.
 */
static void
test_sign_extra_cannot_override(void **state)
{
	static const char *const reg[] = { "iss", "sub", "aud", "exp", "nbf",
	    "iat", "jti", "access" };
	struct jose_sign_req	 rq;
	struct jwk_key		 k;
	char			*t, *cause = NULL;
	size_t			 i;

	(void)state;
	assert_int_equal(jwk_private_from_pem((unsigned char *)vec_ec_pem,
	    strlen(vec_ec_pem), &k, &cause), 0);
	memset(&rq, 0, sizeof(rq));
	rq.issuer = "portcullis";
	rq.subject = "alice";
	rq.audience = "registry.test";
	rq.now = NOW;
	rq.ttl = 300;
	for (i = 0; i < sizeof(reg) / sizeof(reg[0]); i++) {
		rq.extra = json_pack("{s:s, s:s}", "project", "g/app", reg[i],
		    "9999999999");
		if (strcmp(reg[i], "exp") == 0)
			json_object_set_new(rq.extra, "exp",
			    json_integer(9999999999LL));
		t = jose_sign(&k, &rq, &cause);
		assert_null(t);
		assert_non_null(cause);
		assert_non_null(strstr(cause, reg[i]));
		json_decref(rq.extra);
	}
	/* Other extra claims are signed. */
	rq.extra = json_pack("{s:s}", "project", "g/app");
	t = jose_sign(&k, &rq, &cause);
	assert_non_null(t);
	free(t);
	json_decref(rq.extra);
	free(cause);
	jwk_key_clear(&k);
}

/*
 * The kid a verified token reports is the key's, never the header's
 * bytes: with a single kid-less key any header kid selects it, and a kid
 * with a newline or an escape must not reach the claims (logs, audit).
 * jose_peek reports only a printable kid.
 */
static void
test_kid_not_from_header(void **state)
{
	struct jose_verify_opts	 o;
	struct jose_claims	*c = NULL;
	struct jose_peek	 pk;
	struct jwk_key		 k;
	struct jwk_set		*set;
	json_t			*j;
	char			*t, *cause = NULL;

	(void)state;
	j = json_loads(vec_ec_jwk, 0, NULL);
	assert_non_null(j);
	json_object_del(j, "kid");
	assert_int_equal(jwk_from_json(j, &k, &cause), 0);
	json_decref(j);
	set = jwk_set_new();
	assert_int_equal(jwk_set_add(set, &k), 0);
	jwk_key_clear(&k);
	opts(&o);
	t = mk("{\"alg\":\"ES256\",\"kid\":\"a\\nb\\u001b[31m\"}", PL,
	    "ES256", ec_priv, NULL, 0, 0);
	assert_int_equal(jose_verify(set, t, strlen(t), &o, &c), JOSE_OK);
	assert_null(strchr(c->kid, '\n'));
	assert_null(strchr(c->kid, 0x1b));
	assert_string_equal(c->kid, "");
	jose_claims_free(c);
	assert_int_equal(jose_peek(t, strlen(t), 16384, &pk), JOSE_OK);
	assert_string_equal(pk.kid, "");
	free(t);
	jwk_set_free(set);
	/* A matching kid is reported as the key's. */
	t = mk(H_EC, PL, "ES256", ec_priv, NULL, 0, 0);
	assert_int_equal(jose_verify(idp, t, strlen(t), &o, &c), JOSE_OK);
	assert_string_equal(c->kid, "ec1");
	jose_claims_free(c);
	free(t);
}

/*
 * A JWK published with its private half ("d", or RSA's primes and CRT
 * values) is no trust anchor: anyone who fetched the JWKS can sign with
 * it.  Such a key is skipped, never used to verify.
 */
static void
test_jwks_private_members(void **state)
{
	static const char *const priv[] = { "d", "p", "q", "dp", "dq", "qi",
	    "oth" };
	struct jwk_limits	 lim = { JWK_DEFAULT_MAX_BYTES, 8 };
	struct jose_verify_opts	 o;
	struct jwk_set		*set;
	BIGNUM			*d = NULL;
	unsigned char		 bin[32];
	json_t			*j;
	char			 enc[64], *doc, *t, *cause = NULL;
	size_t			 i;

	(void)state;
	assert_true(EVP_PKEY_get_bn_param(ec_priv, "priv", &d));
	assert_int_equal(BN_bn2binpad(d, bin, 32), 32);
	BN_free(d);
	b64(bin, 32, enc, sizeof(enc));
	opts(&o);
	t = mk(H_EC, PL, "ES256", ec_priv, NULL, 0, 0);
	for (i = 0; i < sizeof(priv) / sizeof(priv[0]); i++) {
		j = json_loads(vec_ec_jwk, 0, NULL);
		json_object_set_new(j, priv[i], json_string(enc));
		j = json_pack("{s:[o]}", "keys", j);
		doc = json_dumps(j, 0);
		json_decref(j);
		assert_non_null(doc);
		set = jwk_set_parse(doc, strlen(doc), &lim, &cause);
		if (set != NULL)
			fail_msg("a key with \"%s\" was kept (the token "
			    "verifies: %s)", priv[i],
			    jose_reason_name(verify(set, t, &o)));
		assert_non_null(strstr(cause, "private"));
		free(doc);
	}
	free(t);
	free(cause);
}

/* An 8192-bit prime (openssl prime -generate -bits 8192 -hex). */
static const char prime8192_hex[] =
	"FB78487492D88F8C065E28E702D2794C3C7D96E05C6F80725C5E44CB6B0AE189"
	"1E0A9E184A3220A13707330800FA7F693EE2993C71F179B80E02B66507D4C19F"
	"41400A05ABA033B0F8655C5D9E74D3AD27BE953D2621A6BEA73CC48ABC481687"
	"267DE0184DC0A7CEE0D273DDD0509DEA28BC9AD2B7094A39E5558BE9F551839B"
	"6E92CD7A62E01DBE8D92CBB4044D8DF4212C502A46DC886D4A34166028A486CC"
	"E102500049068EF0E9C76EB9C61A0F3F7839A5BC23C5A22E49E2D59B12935E33"
	"D75F1041CAEADF4051F2A5063FE6A4A8DDC301EE7DD42382E46251525FF6CA75"
	"F64A2B257550A55198F9CB76E36A70DCA6CF5DFE92EF35184E26374CB9EEE886"
	"DA06899D5A86350DA16BFC2AF9BC2A05A1F87E0C3D73A47106F23E6ADEEF0432"
	"F7B4D44BAEABFAD59DAA53630B52A4A5B19FCF0B6124762F36850AE402F64F24"
	"3995672E46CC8DE251A4F4FC5AAC5148FE656B7E88D2B208CF9DDFCD6DAEA630"
	"65B9AC11756658A96C4EBB393765AC9D600AAABC031C7AD118C14346961D0021"
	"8624FB29B4E0F16805F9A6725A20AA692D769CD11F377B84203A488DB30374B9"
	"057D0DD4E490CF9F75CEE647380DAF4A6470F01AF02517C2338A0462B7D6752A"
	"469825001BCC96D4754823C868145F013D4E7D35E7A861CD596F59F4F7C3C90A"
	"CF15A99308A2D8CBA03CB72CBE65754ACB141CAB7417CC676D62C4C52919AD4E"
	"2E7BC9014613F2763309A83112AA264EB96007364C540B2CFCBB1749C038DED9"
	"9A551EAB2ED3AE822A984A6B552B9B0D446ED979C8952159449CE212011EFC9E"
	"2C8D4C5DE3423036F6BAE6DD13FDE53CFB00CE5ACCD6229E8DF5A98809D88892"
	"081AACA3F6DDACA41C23271EDF3748B00505E8FD01CB8C4BAA6B19AD4DA29E4D"
	"DBDB054DFDC3C555AB3F44788226C37DAEB1D0EA8E05F90CF52F0278CE8F0EF4"
	"12E2EBCE01719927895AA41249D87D6E8A9ADFF76CAB38F55D65334FE314C036"
	"FF5BFC0B28BA333D7555CFB6EB534609D70E988F5C0A62C224423DA2232D419C"
	"3A131A6BB3F9CCAAB04C9E2AA23230E6CF29F688724F35D1A4B3E01030A2D916"
	"2F50F86737C48B2A41480B29C8A2CD1CB5EAF22FC9AADC448A400516DA85C87C"
	"C95FCC57CE023922009885BE1365B9089813DAF5863EB2B2FB43A363B0EA2EC1"
	"85054AA327505E5E409DCE0D077A2297C19D3F197330F8402FB854518A01715E"
	"EA299C4B84E1B18FFA9C723261BCFB99E207B9119E1E6AE110A4C8931DDEB359"
	"4CA5ED59B67091A4F4D2DA586D05DF31F06790C5BB56F720620F5AD1CEA1D747"
	"5306C5E3C995FA5FA2291CD9122697B541EB10CE50C5EFF84CCD1D9AEB3B3D49"
	"72110470DD40DF0E85B9C5E88440D58EC231115D3E74A7096047C610FBD63B96"
	"887EA40CE9523B1820FECA3227EF13A7F586A14CB4B2DB9C3A500F72E8F4F869";

/*
 * Building an IdP's keys costs no big-number exponentiation: OpenSSL's
 * RSA public check runs Miller-Rabin rounds on the modulus (a full
 * modular exponentiation each: 0.1 s for a composite 8192-bit modulus,
 * 0.6 s for a prime one), on the event loop, for every key of every
 * fetch: a hostile IdP serving 32 such keys (the default max_keys) held
 * the gateway for 18 s per fetch.  Bounded in CPU time (getrusage), not
 * wall-clock: the fixed parser needs milliseconds.
 */
static void
test_jwks_rsa_check_cost(void **state)
{
	struct jwk_set	*s;
	struct rusage	 r0, r1;
	BIGNUM		*bn = NULL;
	unsigned char	 bin[1024];
	char		 n[1400], *doc, *cause = NULL;
	size_t		 off = 0, cap = 64 * 1024;
	double		 cpu;
	int		 i, len;

	(void)state;
	assert_true(BN_hex2bn(&bn, prime8192_hex) > 0);
	len = BN_bn2bin(bn, bin);
	assert_int_equal(len, 1024);
	b64(bin, (size_t)len, n, sizeof(n));
	assert_non_null(doc = malloc(cap));
	off += (size_t)snprintf(doc + off, cap - off, "{\"keys\":[");
	for (i = 0; i < JWK_DEFAULT_MAX_KEYS; i++)
		off += (size_t)snprintf(doc + off, cap - off, "%s{\"kty\":"
		    "\"RSA\",\"kid\":\"k%d\",\"e\":\"AQAB\",\"n\":\"%s\"}",
		    i ? "," : "", i, n);
	off += (size_t)snprintf(doc + off, cap - off, "]}");
	assert_true(off < cap);
	assert_int_equal(getrusage(RUSAGE_SELF, &r0), 0);
	s = try_jwks(doc, JWK_DEFAULT_MAX_BYTES, JWK_DEFAULT_MAX_KEYS,
	    &cause);
	assert_int_equal(getrusage(RUSAGE_SELF, &r1), 0);
	cpu = (double)(r1.ru_utime.tv_sec - r0.ru_utime.tv_sec) +
	    (double)(r1.ru_utime.tv_usec - r0.ru_utime.tv_usec) / 1e6 +
	    (double)(r1.ru_stime.tv_sec - r0.ru_stime.tv_sec) +
	    (double)(r1.ru_stime.tv_usec - r0.ru_stime.tv_usec) / 1e6;
	if (cpu >= 1.0)
		fail_msg("building %d RSA-8192 keys took %.2f s of CPU",
		    JWK_DEFAULT_MAX_KEYS, cpu);
	jwk_set_free(s);
	free(doc);
	free(cause);
	cause = NULL;
	/* The cheap checks stay: even modulus, even or unit exponent. */
	BN_sub_word(bn, 1);
	len = BN_bn2bin(bn, bin);
	b64(bin, (size_t)len, n, sizeof(n));
	assert_non_null(doc = malloc(cap));
	snprintf(doc, cap, "{\"keys\":[{\"kty\":\"RSA\",\"e\":\"AQAB\","
	    "\"n\":\"%s\"}]}", n);
	assert_null(try_jwks(doc, cap, 8, &cause));
	BN_add_word(bn, 1);
	len = BN_bn2bin(bn, bin);
	b64(bin, (size_t)len, n, sizeof(n));
	snprintf(doc, cap, "{\"keys\":[{\"kty\":\"RSA\",\"e\":\"AQ\","
	    "\"n\":\"%s\"}]}", n);
	assert_null(try_jwks(doc, cap, 8, &cause));
	snprintf(doc, cap, "{\"keys\":[{\"kty\":\"RSA\",\"e\":\"AQAA\","
	    "\"n\":\"%s\"}]}", n);
	assert_null(try_jwks(doc, cap, 8, &cause));
	free(doc);
	free(cause);
	BN_free(bn);
}

/* Every reason has a distinct, non-empty name. */
static void
test_reason_names(void **state)
{
	int	i, j;

	(void)state;
	for (i = 0; i < JOSE_R__MAX; i++) {
		assert_true(strlen(jose_reason_name(i)) > 0);
		for (j = 0; j < i; j++)
			assert_string_not_equal(jose_reason_name(i),
			    jose_reason_name(j));
	}
	assert_string_equal(jose_reason_name(JOSE_R__MAX), "unknown");
	assert_string_equal(jose_reason_name(JOSE_R_ALG_HMAC), "alg_hmac");
	assert_int_equal(jose_alg_lookup("none", 4), -1);
	assert_int_equal(jose_alg_lookup("HS256", 5), -1);
	assert_int_equal(jose_alg_lookup("ES256", 5), JOSE_ALG_ES256);
	assert_int_equal(jose_alg_lookup("ES2560", 6), -1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_b64url),
		cmocka_unit_test(test_jwk_keys),
		cmocka_unit_test(test_jwks_bounds),
		cmocka_unit_test(test_libtrust_kid),
		cmocka_unit_test(test_vectors),
		cmocka_unit_test(test_libjwt_premise),
		cmocka_unit_test(test_hostile),
		cmocka_unit_test(test_options),
		cmocka_unit_test(test_sign_roundtrip),
		cmocka_unit_test(test_sign_es384),
		cmocka_unit_test(test_public_jwks),
		cmocka_unit_test(test_peek_and_hash),
		cmocka_unit_test(test_reason_names),
		cmocka_unit_test(test_sign_extra_cannot_override),
		cmocka_unit_test(test_kid_not_from_header),
		cmocka_unit_test(test_jwks_rsa_check_cost),
		cmocka_unit_test(test_jwks_private_members),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
