/*
 * fuzz_jose.c: libFuzzer target for the token verifier and the JWKS
 * parser (src/jose.c, src/jwk.c).  The first byte picks a mode:
 *   0: the rest is a token, verified against the test vectors' keys.  It
 *      may pass only if it is byte for byte one of the vector tokens:
 *      anything else passing is a forgery or a non-canonical reading.
 *   1: the rest is header JSON, NUL, payload JSON; the target signs it
 *      ES256 with the vector key, so the claim checks behind the
 *      signature are reached.  A passing token's claims must respect the
 *      bounds and times it was verified with.
 *   2: the rest is a JWKS; every key parsed must export to a JWK that
 *      parses back into the same key with the same algorithms.
 * jose_peek runs on every mode-0 input too.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "jose.h"

#include "../unit/jose_vectors.h"

#define NOW	1700000000LL

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static struct jwk_set	*keys;
static EVP_PKEY		*ec_priv;

static void
check(int cond)
{
	if (!cond)
		abort();
}

static void
init(void)
{
	struct jwk_limits	 lim = { JWK_DEFAULT_MAX_BYTES, 8 };
	char			 doc[4096];
	BIO			*b;

	snprintf(doc, sizeof(doc), "{\"keys\":[%s,%s]}", vec_rsa_jwk,
	    vec_ec_jwk);
	keys = jwk_set_parse(doc, strlen(doc), &lim, NULL);
	b = BIO_new_mem_buf(vec_ec_pem, -1);
	ec_priv = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
	BIO_free(b);
	check(keys != NULL && ec_priv != NULL);
}

static void
opts(struct jose_verify_opts *o)
{
	static const char *const auds[] = { "portcullis" };

	jose_verify_opts_init(o, NOW);
	o->issuer = "https://idp.test";
	o->audiences = auds;
	o->naudiences = 1;
	o->groups_claim = "groups";
	o->max_token_bytes = 8192;
	o->max_claims = 16;
	o->max_claim_bytes = 64;
}

static void
check_claims(const struct jose_claims *c, const struct jose_verify_opts *o)
{
	size_t	i;

	check(c->issuer != NULL && strcmp(c->issuer, o->issuer) == 0);
	check(c->exp > o->now - o->leeway);
	check(c->nclaims <= o->max_claims && c->ngroups <= o->max_claims);
	for (i = 0; i < c->nclaims; i++)
		check(strlen(c->claims[i].name) <= o->max_claim_bytes &&
		    strlen(c->claims[i].value) <= o->max_claim_bytes);
	for (i = 0; i < c->ngroups; i++)
		check(strlen(c->groups[i]) <= o->max_claim_bytes);
}

static void
mode_token(const char *t, size_t len)
{
	struct jose_verify_opts	 o;
	struct jose_claims	*c;
	struct jose_peek	 pk;

	opts(&o);
	(void)jose_peek(t, len, o.max_token_bytes, &pk);
	check(strlen(pk.kid) <= JWK_KID_MAX);
	if (jose_verify(keys, t, len, &o, &c) != JOSE_OK)
		return;
	check((len == strlen(vec_rs256) && memcmp(t, vec_rs256, len) == 0) ||
	    (len == strlen(vec_ps256) && memcmp(t, vec_ps256, len) == 0) ||
	    (len == strlen(vec_es256) && memcmp(t, vec_es256, len) == 0));
	check_claims(c, &o);
	jose_claims_free(c);
}

static void
mode_signed(const char *in, size_t len)
{
	struct jose_verify_opts	 o;
	struct jose_claims	*c;
	const char		*nul;
	unsigned char		 der[128], raw[64];
	const unsigned char	*dp;
	ECDSA_SIG		*es;
	EVP_MD_CTX		*ctx;
	size_t			 hl, n, dl = sizeof(der);
	char			*t;

	if ((nul = memchr(in, '\0', len)) == NULL || len > 4096)
		return;
	hl = (size_t)(nul - in);
	t = malloc(JWK_B64_LEN(len) + 2 + JWK_B64_LEN(64) + 1);
	check(t != NULL);
	check(jwk_b64url_encode((const unsigned char *)in, hl, t,
	    JWK_B64_LEN(hl) + 1) == 0);
	n = strlen(t);
	t[n++] = '.';
	check(jwk_b64url_encode((const unsigned char *)nul + 1,
	    len - hl - 1, t + n, JWK_B64_LEN(len - hl - 1) + 1) == 0);
	n = strlen(t);
	ctx = EVP_MD_CTX_new();
	check(EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, ec_priv) ==
	    1 && EVP_DigestSign(ctx, der, &dl, (unsigned char *)t, n) == 1);
	EVP_MD_CTX_free(ctx);
	dp = der;
	es = d2i_ECDSA_SIG(NULL, &dp, (long)dl);
	check(es != NULL);
	BN_bn2binpad(ECDSA_SIG_get0_r(es), raw, 32);
	BN_bn2binpad(ECDSA_SIG_get0_s(es), raw + 32, 32);
	ECDSA_SIG_free(es);
	t[n++] = '.';
	check(jwk_b64url_encode(raw, 64, t + n, JWK_B64_LEN(64) + 1) == 0);
	opts(&o);
	if (jose_verify(keys, t, strlen(t), &o, &c) == JOSE_OK) {
		check(c->alg == JOSE_ALG_ES256);
		check_claims(c, &o);
		jose_claims_free(c);
	}
	free(t);
}

static void
mode_jwks(const char *doc, size_t len)
{
	struct jwk_limits	 lim = { 4096, 4 };
	struct jwk_set		*s;
	struct jwk_key		 k;
	json_t			*j;
	size_t			 i;

	if ((s = jwk_set_parse(doc, len, &lim, NULL)) == NULL)
		return;
	check(s->nkeys >= 1 && s->nkeys <= lim.max_keys);
	for (i = 0; i < s->nkeys; i++) {
		check(s->keys[i].algs != 0 &&
		    (s->keys[i].algs & ~JOSE_ALGS_ALL) == 0);
		if (s->keys[i].kty == JWK_KTY_EC)
			check((s->keys[i].algs & ~(JOSE_ALG_BIT(JOSE_ALG_ES256) |
			    JOSE_ALG_BIT(JOSE_ALG_ES384))) == 0);
		else
			check(s->keys[i].bits >= JWK_RSA_MIN_BITS &&
			    (s->keys[i].algs & (JOSE_ALG_BIT(JOSE_ALG_ES256) |
			    JOSE_ALG_BIT(JOSE_ALG_ES384))) == 0);
		j = jwk_public_json(&s->keys[i]);
		check(j != NULL);
		check(jwk_from_json(j, &k, NULL) == 0);
		check(EVP_PKEY_eq(k.pkey, s->keys[i].pkey) == 1);
		check((k.algs & s->keys[i].algs) != 0);
		jwk_key_clear(&k);
		json_decref(j);
	}
	jwk_set_free(s);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (keys == NULL)
		init();
	if (size < 1)
		return 0;
	switch (data[0] % 3) {
	case 0:
		mode_token((const char *)data + 1, size - 1);
		break;
	case 1:
		mode_signed((const char *)data + 1, size - 1);
		break;
	default:
		mode_jwks((const char *)data + 1, size - 1);
		break;
	}
	return 0;
}
