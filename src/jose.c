/*
 * jose.c: verify and sign JWS compact tokens.
 *
 * Verification never hands a token to a library before this file has
 * decided which key and which algorithm it may be checked with: libjwt
 * 1.10's jwt_decode() chooses the algorithm from the token's own header
 * (HS256 with a PEM public key uses the PEM as the HMAC secret).  The
 * signature itself is checked with OpenSSL's EVP_DigestVerify, not with
 * libjwt, because libjwt 1.10 cannot verify what identity providers send:
 * it has no PS256 (nor PS384/512), and jwt_decode() refuses any token
 * whose `typ` is not "JWT" — checked against Debian's 1.10.2, which
 * refuses RFC 9068 access tokens (`typ: at+jwt`, what oidc-provider
 * issues) with EINVAL.  The OpenSSL code is one call per algorithm family
 * plus the JOSE-to-DER conversion of ECDSA signatures (RFC 7518 3.4:
 * R || S, each exactly the field size).
 *
 * Signing uses libjwt, which does it correctly for what the token service
 * needs (ES256 with the raw R || S signature registry:2 expects, RS256);
 * the unit tests check every signature it makes is 64 bytes and verifies
 * here.
 *
 * Guarantees of jose_verify, for any input bytes:
 * - Nothing is allocated before the length is checked against
 *   max_token_bytes; every later allocation is bounded by that length.
 * - base64url is strict (no padding, no stray bits), JSON parsing refuses
 *   duplicate member names, so the header and claims this file checks are
 *   the only reading of the token.
 * - `alg` is pinned by the key: none, HS*, unknown algorithms and any
 *   algorithm the key's type does not allow are refused before the
 *   signature is looked at; header members naming other keys (`jwk`,
 *   `jku`, `x5u`, `x5c`) are never used.
 * - The payload is parsed only after its signature has verified.
 * - Reasons never carry token bytes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jwt.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>

#include "jose.h"

/* The largest signature: RSA 8192 bits. */
#define JOSE_SIG_MAX	(JWK_RSA_MAX_BITS / 8)
/* NumericDate bound: the end of year 9999. */
#define JOSE_TIME_MAX	253402300799LL

#define JOSE_REASON_NAME(e, s) s,
static const char *const jose_reason_names[] = {
	JOSE_REASONS(JOSE_REASON_NAME)
};
#undef JOSE_REASON_NAME

struct jose_parts {
	const char	*p[3];
	size_t		 len[3];
};

/* The reason's name from the JOSE_REASONS list. */
const char *
jose_reason_name(enum jose_reason r)
{
	if ((unsigned)r >= JOSE_R__MAX)
		return ("unknown");
	return (jose_reason_names[r]);
}

/* Default bounds; see jose.h. */
void
jose_verify_opts_init(struct jose_verify_opts *o, int64_t now)
{
	memset(o, 0, sizeof(*o));
	o->now = now;
	o->leeway = JOSE_DEFAULT_LEEWAY;
	o->max_token_bytes = JOSE_DEFAULT_MAX_TOKEN_BYTES;
	o->max_claims = JOSE_DEFAULT_MAX_CLAIMS;
	o->max_claim_bytes = JOSE_DEFAULT_MAX_CLAIM_BYTES;
}

/* Exactly three dot-separated parts; the size is checked first. */
static enum jose_reason
jose_split(const char *t, size_t len, size_t max, struct jose_parts *jp)
{
	const char	*d1, *d2;

	if (len > max)
		return (JOSE_R_TOO_LARGE);
	if (t == NULL || len == 0 ||
	    (d1 = memchr(t, '.', len)) == NULL ||
	    (d2 = memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - t))) == NULL ||
	    memchr(d2 + 1, '.', len - (size_t)(d2 + 1 - t)) != NULL)
		return (JOSE_R_MALFORMED);
	jp->p[0] = t;
	jp->len[0] = (size_t)(d1 - t);
	jp->p[1] = d1 + 1;
	jp->len[1] = (size_t)(d2 - d1 - 1);
	jp->p[2] = d2 + 1;
	jp->len[2] = len - (size_t)(d2 + 1 - t);
	if (jp->len[0] == 0)
		return (JOSE_R_MALFORMED);
	return (JOSE_OK);
}

/* Decode one base64url part holding a JSON object. */
static enum jose_reason
jose_part_json(const char *s, size_t len, json_t **out)
{
	json_error_t	 err;
	unsigned char	*buf;
	size_t		 n;

	*out = NULL;
	/* len is bounded by max_token_bytes; +1: malloc(0). */
	if ((buf = malloc(len / 4 * 3 + 3)) == NULL)
		return (JOSE_R_INTERNAL);
	if (jwk_b64url_decode(s, len, buf, len / 4 * 3 + 3, &n) == -1) {
		free(buf);
		return (JOSE_R_BAD_BASE64);
	}
	*out = json_loadb((const char *)buf, n, JSON_REJECT_DUPLICATES, &err);
	free(buf);
	if (*out == NULL)
		return (json_error_code(&err) == json_error_duplicate_key ?
		    JOSE_R_DUPLICATE_KEY : JOSE_R_BAD_JSON);
	if (!json_is_object(*out)) {
		json_decref(*out);
		*out = NULL;
		return (JOSE_R_BAD_JSON);
	}
	return (JOSE_OK);
}

/* The header's alg: pinned names only, none and HMAC named as such. */
static enum jose_reason
jose_header_alg(const json_t *hdr, int *alg)
{
	const json_t	*v = json_object_get(hdr, "alg");
	const char	*s;
	size_t		 len;

	if (!json_is_string(v))
		return (JOSE_R_ALG_UNKNOWN);
	s = json_string_value(v);
	len = json_string_length(v);
	if (len == 4 && strncasecmp(s, "none", 4) == 0)
		return (JOSE_R_ALG_NONE);
	if (len >= 2 && strncasecmp(s, "HS", 2) == 0)
		return (JOSE_R_ALG_HMAC);
	if ((*alg = jose_alg_lookup(s, len)) == -1)
		return (JOSE_R_ALG_UNKNOWN);
	return (JOSE_OK);
}

static const EVP_MD *
jose_alg_md(enum jose_alg a)
{
	switch (a) {
	case JOSE_ALG_RS256:
	case JOSE_ALG_PS256:
	case JOSE_ALG_ES256:
		return (EVP_sha256());
	case JOSE_ALG_RS384:
	case JOSE_ALG_PS384:
	case JOSE_ALG_ES384:
		return (EVP_sha384());
	default:
		return (EVP_sha512());
	}
}

/* JOSE R || S into a DER ECDSA-Sig-Value; its length or -1. */
static int
jose_ecdsa_der(const struct jwk_key *k, const unsigned char *sig,
    size_t len, unsigned char **der)
{
	ECDSA_SIG	*es;
	BIGNUM		*r, *s;
	size_t		 flen = (size_t)k->bits / 8;
	int		 n;

	if (len != 2 * flen)
		return (-1);
	if ((es = ECDSA_SIG_new()) == NULL)
		return (-1);
	r = BN_bin2bn(sig, (int)flen, NULL);
	s = BN_bin2bn(sig + flen, (int)flen, NULL);
	if (r == NULL || s == NULL || !ECDSA_SIG_set0(es, r, s)) {
		BN_free(r);
		BN_free(s);
		ECDSA_SIG_free(es);
		return (-1);
	}
	*der = NULL;
	n = i2d_ECDSA_SIG(es, der);
	ECDSA_SIG_free(es);
	return (n > 0 ? n : -1);
}

/* 1 when sig is k's signature with alg over the signing input. */
static int
jose_sig_ok(const struct jwk_key *k, enum jose_alg alg, const char *input,
    size_t inlen, const unsigned char *sig, size_t siglen)
{
	EVP_MD_CTX	*ctx;
	EVP_PKEY_CTX	*pctx = NULL;
	unsigned char	*der = NULL;
	int		 ok = 0, n;

	if ((ctx = EVP_MD_CTX_new()) == NULL)
		return (0);
	if (EVP_DigestVerifyInit(ctx, &pctx, jose_alg_md(alg), NULL,
	    k->pkey) != 1)
		goto out;
	switch (alg) {
	case JOSE_ALG_PS256:
	case JOSE_ALG_PS384:
	case JOSE_ALG_PS512:
		/* RFC 7518 3.5: MGF1 with the same hash, salt = hash size. */
		if (EVP_PKEY_CTX_set_rsa_padding(pctx,
		    RSA_PKCS1_PSS_PADDING) <= 0 ||
		    EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx,
		    RSA_PSS_SALTLEN_DIGEST) <= 0)
			goto out;
		/* FALLTHROUGH */
	case JOSE_ALG_RS256:
	case JOSE_ALG_RS384:
	case JOSE_ALG_RS512:
		if (siglen != (size_t)EVP_PKEY_get_size(k->pkey))
			goto out;
		ok = EVP_DigestVerify(ctx, sig, siglen,
		    (const unsigned char *)input, inlen) == 1;
		break;
	case JOSE_ALG_ES256:
	case JOSE_ALG_ES384:
		if ((n = jose_ecdsa_der(k, sig, siglen, &der)) == -1)
			goto out;
		ok = EVP_DigestVerify(ctx, der, (size_t)n,
		    (const unsigned char *)input, inlen) == 1;
		break;
	default:
		break;
	}
out:
	OPENSSL_free(der);
	EVP_MD_CTX_free(ctx);
	return (ok);
}

/* A NumericDate (RFC 7519 2) into *t; -1 when not a sane one. */
static int
jose_numeric_date(const json_t *v, int64_t *t)
{
	double	d;

	if (json_is_integer(v)) {
		if (json_integer_value(v) < 0 ||
		    json_integer_value(v) > JOSE_TIME_MAX)
			return (-1);
		*t = json_integer_value(v);
		return (0);
	}
	if (json_is_real(v)) {
		d = json_real_value(v);
		if (!(d >= 0 && d <= (double)JOSE_TIME_MAX))
			return (-1);
		*t = (int64_t)d;
		return (0);
	}
	return (-1);
}

/* Verify the header and the signature; the key's alg into *alg. */
static enum jose_reason
jose_check_signed(const struct jwk_set *ks, const struct jose_parts *jp,
    const struct jose_verify_opts *o, int *alg, char *kid)
{
	const struct jwk_key	*k;
	const json_t		*v;
	unsigned char		*sig = NULL;
	json_t			*hdr;
	enum jose_reason	 r;
	unsigned		 allowed;
	size_t			 siglen;

	if ((r = jose_part_json(jp->p[0], jp->len[0], &hdr)) != JOSE_OK)
		return (r);
	/* RFC 7515 4.1.11: no extension is understood here. */
	if (json_object_get(hdr, "crit") != NULL) {
		r = JOSE_R_CRIT;
		goto out;
	}
	if ((r = jose_header_alg(hdr, alg)) != JOSE_OK)
		goto out;
	v = json_object_get(hdr, "kid");
	if (v != NULL && (!json_is_string(v) ||
	    json_string_length(v) > JWK_KID_MAX)) {
		r = JOSE_R_KID_UNKNOWN;
		goto out;
	}
	if ((k = jwk_set_find(ks, json_string_value(v),
	    json_string_length(v))) == NULL) {
		r = JOSE_R_KID_UNKNOWN;
		goto out;
	}
	/*
	 * The key's kid, not the header's: with a single kid-less key any
	 * header kid selects it, and those bytes may hold control characters.
	 */
	memcpy(kid, k->kid, sizeof(k->kid));
	allowed = k->algs & (o->algs ? o->algs : JOSE_ALGS_ALL);
	if ((allowed & JOSE_ALG_BIT(*alg)) == 0) {
		r = JOSE_R_ALG_NOT_ALLOWED;
		goto out;
	}
	if (k->not_after != 0 && o->now > k->not_after) {
		r = JOSE_R_KEY_RETIRED;
		goto out;
	}
	if (jp->len[2] > JWK_B64_LEN(JOSE_SIG_MAX) ||
	    (sig = malloc(JOSE_SIG_MAX)) == NULL) {
		r = jp->len[2] > JWK_B64_LEN(JOSE_SIG_MAX) ?
		    JOSE_R_BAD_SIGNATURE : JOSE_R_INTERNAL;
		goto out;
	}
	if (jwk_b64url_decode(jp->p[2], jp->len[2], sig, JOSE_SIG_MAX,
	    &siglen) == -1) {
		r = JOSE_R_BAD_BASE64;
		goto out;
	}
	/* The signing input is the ASCII header "." payload (RFC 7515 5.2). */
	if (!jose_sig_ok(k, *alg, jp->p[0], jp->len[0] + 1 + jp->len[1], sig,
	    siglen))
		r = JOSE_R_BAD_SIGNATURE;
out:
	free(sig);
	json_decref(hdr);
	return (r);
}

/* Append the string values of a string or array-of-strings claim. */
static enum jose_reason
jose_strings(const json_t *v, const char ***out, size_t *n, size_t max,
    size_t maxbytes)
{
	const char	**a;
	size_t		  i, cnt;

	cnt = json_is_array(v) ? json_array_size(v) : 1;
	if (!json_is_array(v) && !json_is_string(v))
		return (JOSE_R_BAD_CLAIM);
	if (cnt > max)
		return (JOSE_R_CLAIMS_TOO_LARGE);
	if ((a = calloc(cnt ? cnt : 1, sizeof(*a))) == NULL)
		return (JOSE_R_INTERNAL);
	for (i = 0; i < cnt; i++) {
		const json_t *e = json_is_array(v) ? json_array_get(v, i) : v;

		if (!json_is_string(e)) {
			free(a);
			return (JOSE_R_BAD_CLAIM);
		}
		if (json_string_length(e) > maxbytes) {
			free(a);
			return (JOSE_R_CLAIMS_TOO_LARGE);
		}
		a[i] = json_string_value(e);
	}
	*out = a;
	*n = cnt;
	return (JOSE_OK);
}

/* 1 when v is an array of strings only. */
static int
jose_string_array(const json_t *v)
{
	size_t	i;

	if (!json_is_array(v))
		return (0);
	for (i = 0; i < json_array_size(v); i++)
		if (!json_is_string(json_array_get(v, i)))
			return (0);
	return (1);
}

/* The flat claim list, bounded; other claim types are not listed. */
static enum jose_reason
jose_flat_claims(struct jose_claims *c, const struct jose_verify_opts *o)
{
	const char	*name;
	json_t		*v;
	size_t		 n = 0, i;

	json_object_foreach(c->payload, name, v) {
		if (json_is_string(v))
			n++;
		else if (jose_string_array(v))
			n += json_array_size(v);
		else
			continue;
		if (n > o->max_claims || strlen(name) > o->max_claim_bytes)
			return (JOSE_R_CLAIMS_TOO_LARGE);
	}
	if ((c->claims = calloc(n ? n : 1, sizeof(*c->claims))) == NULL)
		return (JOSE_R_INTERNAL);
	json_object_foreach(c->payload, name, v) {
		if (json_is_string(v)) {
			if (json_string_length(v) > o->max_claim_bytes)
				return (JOSE_R_CLAIMS_TOO_LARGE);
			c->claims[c->nclaims].name = name;
			c->claims[c->nclaims++].value = json_string_value(v);
		} else if (jose_string_array(v)) {
			for (i = 0; i < json_array_size(v); i++) {
				json_t *e = json_array_get(v, i);

				if (json_string_length(e) > o->max_claim_bytes)
					return (JOSE_R_CLAIMS_TOO_LARGE);
				c->claims[c->nclaims].name = name;
				c->claims[c->nclaims++].value =
				    json_string_value(e);
			}
		}
	}
	return (JOSE_OK);
}

/* The registered claims and the claim lists of a verified payload. */
static enum jose_reason
jose_check_claims(struct jose_claims *c, const struct jose_verify_opts *o)
{
	const json_t		*v;
	enum jose_reason	 r;
	size_t			 i, j;
	int			 hit;

	v = json_object_get(c->payload, "iss");
	if (v != NULL && !json_is_string(v))
		return (JOSE_R_BAD_CLAIM);
	c->issuer = json_string_value(v);
	if (o->issuer == NULL || c->issuer == NULL ||
	    strcmp(c->issuer, o->issuer) != 0)
		return (JOSE_R_ISSUER);
	if ((v = json_object_get(c->payload, "aud")) != NULL &&
	    (r = jose_strings(v, &c->audiences, &c->naudiences,
	    JOSE_MAX_AUDIENCES, o->max_claim_bytes)) != JOSE_OK)
		return (r);
	if (o->naudiences > 0) {
		hit = 0;
		for (i = 0; i < c->naudiences && !hit; i++)
			for (j = 0; j < o->naudiences && !hit; j++)
				hit = strcmp(c->audiences[i],
				    o->audiences[j]) == 0;
		if (!hit)
			return (JOSE_R_AUDIENCE);
	}
	if ((v = json_object_get(c->payload, "exp")) == NULL)
		return (JOSE_R_NO_EXPIRY);
	if (jose_numeric_date(v, &c->exp) == -1)
		return (JOSE_R_BAD_CLAIM);
	/* RFC 7519 4.1.4: the current time must be before exp. */
	if (o->now - o->leeway >= c->exp)
		return (JOSE_R_EXPIRED);
	if ((v = json_object_get(c->payload, "nbf")) != NULL) {
		if (jose_numeric_date(v, &c->nbf) == -1)
			return (JOSE_R_BAD_CLAIM);
		if (o->now + o->leeway < c->nbf)
			return (JOSE_R_NOT_YET_VALID);
	}
	if ((v = json_object_get(c->payload, "iat")) != NULL) {
		if (jose_numeric_date(v, &c->iat) == -1)
			return (JOSE_R_BAD_CLAIM);
		if (c->iat > o->now + o->leeway)
			return (JOSE_R_ISSUED_IN_FUTURE);
	}
	v = json_object_get(c->payload, "sub");
	if (v != NULL && !json_is_string(v))
		return (JOSE_R_BAD_CLAIM);
	c->subject = json_string_value(v);
	v = json_object_get(c->payload, "jti");
	if (v != NULL && !json_is_string(v))
		return (JOSE_R_BAD_CLAIM);
	c->jti = json_string_value(v);
	if (o->groups_claim != NULL &&
	    (v = json_object_get(c->payload, o->groups_claim)) != NULL &&
	    (r = jose_strings(v, &c->groups, &c->ngroups, o->max_claims,
	    o->max_claim_bytes)) != JOSE_OK)
		return (r);
	return (jose_flat_claims(c, o));
}

/* Verify a token; see jose.h. */
enum jose_reason
jose_verify(const struct jwk_set *ks, const char *token, size_t len,
    const struct jose_verify_opts *o, struct jose_claims **out)
{
	struct jose_parts	 jp;
	struct jose_claims	*c;
	enum jose_reason	 r;
	int			 alg = -1;

	*out = NULL;
	if ((r = jose_split(token, len, o->max_token_bytes, &jp)) != JOSE_OK)
		return (r);
	if ((c = calloc(1, sizeof(*c))) == NULL)
		return (JOSE_R_INTERNAL);
	if ((r = jose_check_signed(ks, &jp, o, &alg, c->kid)) != JOSE_OK ||
	    (r = jose_part_json(jp.p[1], jp.len[1], &c->payload)) !=
	    JOSE_OK || (r = jose_check_claims(c, o)) != JOSE_OK) {
		jose_claims_free(c);
		return (r);
	}
	c->alg = alg;
	*out = c;
	return (JOSE_OK);
}

/* Free verified claims. */
void
jose_claims_free(struct jose_claims *c)
{
	if (c == NULL)
		return;
	free(c->audiences);
	free(c->groups);
	free(c->claims);
	json_decref(c->payload);
	free(c);
}

/* A single-string claim; see jose.h. */
const char *
jose_claim_string(const struct jose_claims *c, const char *name)
{
	return (json_string_value(json_object_get(c->payload, name)));
}

/* Printable ASCII only: a peeked kid may reach a log line. */
static int
jose_printable(const char *s, size_t len)
{
	size_t	i;

	for (i = 0; i < len; i++)
		if (s[i] < 0x20 || s[i] > 0x7e)
			return (0);
	return (1);
}

/* Unverified header and issuer; see jose.h. */
enum jose_reason
jose_peek(const char *token, size_t len, size_t max, struct jose_peek *pk)
{
	struct jose_parts	 jp;
	enum jose_reason	 r;
	const json_t		*v;
	json_t			*hdr = NULL, *pl = NULL;

	memset(pk, 0, sizeof(*pk));
	pk->alg = -1;
	if ((r = jose_split(token, len, max, &jp)) != JOSE_OK ||
	    (r = jose_part_json(jp.p[0], jp.len[0], &hdr)) != JOSE_OK ||
	    (r = jose_part_json(jp.p[1], jp.len[1], &pl)) != JOSE_OK)
		goto out;
	v = json_object_get(hdr, "kid");
	if (json_is_string(v) && json_string_length(v) < sizeof(pk->kid) &&
	    jose_printable(json_string_value(v), json_string_length(v)))
		memcpy(pk->kid, json_string_value(v), json_string_length(v));
	v = json_object_get(hdr, "alg");
	if (json_is_string(v))
		pk->alg = jose_alg_lookup(json_string_value(v),
		    json_string_length(v));
	v = json_object_get(pl, "iss");
	if (json_is_string(v) && json_string_length(v) < sizeof(pk->issuer))
		memcpy(pk->issuer, json_string_value(v),
		    json_string_length(v));
out:
	json_decref(hdr);
	json_decref(pl);
	return (r);
}

/* The claims jose_sign sets itself; extra may not name them. */
static const char *const jose_sign_claims[] = {
	"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "access"
};

/* Sign a registry token; see jose.h. */
char *
jose_sign(const struct jwk_key *k, const struct jose_sign_req *rq,
    char **cause)
{
	unsigned char	 rnd[16];
	char		 jti[JWK_B64_LEN(sizeof(rnd)) + 1];
	jwt_alg_t	 alg;
	json_t		*grants = NULL;
	jwt_t		*jwt = NULL;
	char		*js = NULL, *tok = NULL;
	const char	*err = "cannot sign";
	size_t		 i;

	if (k->pem == NULL) {
		err = "not a private key";
		goto out;
	}
	if (k->algs == JOSE_ALG_BIT(JOSE_ALG_ES256))
		alg = JWT_ALG_ES256;
	else if (k->algs == JOSE_ALG_BIT(JOSE_ALG_ES384))
		alg = JWT_ALG_ES384;
	else if (k->kty == JWK_KTY_RSA)
		alg = JWT_ALG_RS256;
	else {
		err = "key has no signing algorithm";
		goto out;
	}
	/*
	 * libjwt merges the extra claims with json_object_update(), which
	 * overwrites: an extra iss, exp, ... would replace the signer's own.
	 */
	for (i = 0; rq->extra != NULL && i < sizeof(jose_sign_claims) /
	    sizeof(jose_sign_claims[0]); i++)
		if (json_object_get(rq->extra, jose_sign_claims[i]) != NULL) {
			if (cause != NULL) {
				free(*cause);
				if (asprintf(cause, "extra claims name "
				    "\"%s\", which the signer sets",
				    jose_sign_claims[i]) == -1)
					*cause = NULL;
			}
			return (NULL);
		}
	if (rq->jti == NULL) {
		if (RAND_bytes(rnd, sizeof(rnd)) != 1 ||
		    jwk_b64url_encode(rnd, sizeof(rnd), jti, sizeof(jti)) == -1)
			goto out;
	}
	/* access, then the extras, as one JSON object libjwt merges in. */
	if ((grants = rq->extra != NULL ? json_deep_copy(rq->extra) :
	    json_object()) == NULL || !json_is_object(grants) ||
	    json_object_set_new(grants, "access", rq->access != NULL ?
	    json_deep_copy(rq->access) : json_array()) == -1 ||
	    (js = json_dumps(grants, JSON_COMPACT)) == NULL ||
	    strlen(js) > JOSE_SIGN_MAX_CLAIMS_BYTES)
		goto out;
	if (jwt_new(&jwt) != 0 ||
	    jwt_add_header(jwt, "kid", k->kid) != 0 ||
	    jwt_add_grant(jwt, "iss", rq->issuer) != 0 ||
	    jwt_add_grant(jwt, "sub", rq->subject) != 0 ||
	    jwt_add_grant(jwt, "aud", rq->audience) != 0 ||
	    jwt_add_grant_int(jwt, "exp", (long)(rq->now + rq->ttl)) != 0 ||
	    jwt_add_grant_int(jwt, "nbf", (long)rq->now) != 0 ||
	    jwt_add_grant_int(jwt, "iat", (long)rq->now) != 0 ||
	    jwt_add_grant(jwt, "jti", rq->jti ? rq->jti : jti) != 0 ||
	    jwt_add_grants_json(jwt, js) != 0 ||
	    jwt_set_alg(jwt, alg, k->pem, (int)k->pemlen) != 0 ||
	    (tok = jwt_encode_str(jwt)) == NULL)
		goto out;
	err = NULL;
out:
	if (err != NULL && cause != NULL) {
		free(*cause);
		*cause = strdup(err);
	}
	free(js);
	json_decref(grants);
	jwt_free(jwt);
	return (tok);
}

/*
 * The cache key of a token; see jose.h.  HMAC-SHA-256 (RFC 2104) over a
 * SHA-256 fetched once: OpenSSL 3's one-shot HMAC() fetches the digest
 * and the MAC by name on every call, which cost about 5% of a cached
 * manifest GET with a Bearer token (every request hashes its token).
 * The digest context is kept too: called on the event loop's thread only
 * (the identity stage, credential.c).
 */
int
jose_token_hash(const unsigned char *key, size_t keylen, const char *token,
    size_t len, unsigned char out[32])
{
	static EVP_MD		*md;
	static EVP_MD_CTX	*ctx;
	unsigned char		 k[64], pad[64], inner[32];
	unsigned int		 n;
	size_t			 i;
	int			 ok;

	if (md == NULL && (md = EVP_MD_fetch(NULL, "SHA2-256", NULL)) == NULL)
		return (-1);
	if (ctx == NULL && (ctx = EVP_MD_CTX_new()) == NULL)
		return (-1);
	memset(k, 0, sizeof(k));
	if (keylen > sizeof(k)) {
		n = 32;
		if (!EVP_Digest(key, keylen, k, &n, md, NULL))
			return (-1);
	} else if (keylen > 0)
		memcpy(k, key, keylen);
	for (i = 0; i < sizeof(pad); i++)
		pad[i] = k[i] ^ 0x36;
	ok = EVP_DigestInit_ex2(ctx, md, NULL) &&
	    EVP_DigestUpdate(ctx, pad, sizeof(pad)) &&
	    EVP_DigestUpdate(ctx, token, len) &&
	    EVP_DigestFinal_ex(ctx, inner, &n) && n == 32;
	for (i = 0; ok && i < sizeof(pad); i++)
		pad[i] = k[i] ^ 0x5c;
	ok = ok && EVP_DigestInit_ex2(ctx, md, NULL) &&
	    EVP_DigestUpdate(ctx, pad, sizeof(pad)) &&
	    EVP_DigestUpdate(ctx, inner, sizeof(inner)) &&
	    EVP_DigestFinal_ex(ctx, out, &n) && n == 32;
	OPENSSL_cleanse(k, sizeof(k));
	OPENSSL_cleanse(pad, sizeof(pad));
	OPENSSL_cleanse(inner, sizeof(inner));
	return (ok ? 0 : -1);
}
