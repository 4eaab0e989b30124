/*
 * jose_verify.c: what verifying one JWT costs the gateway, without HTTP:
 * jose_verify() (src/jose.c, the function the identity stage runs on
 * every IdP JWT and on every gateway token the verified-token cache does
 * not hold) on NTOKENS distinct tokens per algorithm, RS256 with an RSA
 * 2048 key and ES256 with a P-256 key, one thread, for about SECONDS
 * seconds each (argv[1], default 2, at most 600); and jose_token_hash(),
 * the keyed hash a cache hit costs instead.  Built and run by
 * bench/jose_verify.sh and at the end of bench/auth_bench.sh.
 *
 * The tokens are signed with jose_sign() and carry the claims an IdP
 * access token does (iss, sub, aud, exp, nbf, iat, a unique jti, plus
 * client_id and scope); the verifier holds only the public keys, as
 * built from their JWK (jwk_from_json), and checks iss, aud and the
 * times as the identity stage does.  Prints one line per algorithm:
 * "<alg> <verifications/s> <us per verification>", then the hash line.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include "jose.h"
#include "jwk.h"

#define NTOKENS		1000
#define ISSUER		"https://idp.example"
#define AUDIENCE	"https://portcullis.test"

static double
now(void)
{
	struct timespec	 ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (ts.tv_sec + ts.tv_nsec / 1e9);
}

static void
die(const char *what, const char *cause)
{
	fprintf(stderr, "jose_verify: %s: %s\n", what, cause ? cause : "");
	exit(1);
}

/* A new signing key (RSA 2048 or P-256) through its PEM, as a file gives. */
static void
make_key(int rsa, struct jwk_key *k)
{
	EVP_PKEY	*p;
	BIO		*b;
	char		*pem, *cause = NULL;
	long		 n;

	p = rsa ? EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048) :
	    EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	if (p == NULL || (b = BIO_new(BIO_s_mem())) == NULL ||
	    !PEM_write_bio_PrivateKey(b, p, NULL, NULL, 0, NULL, NULL))
		die("keygen", "OpenSSL");
	n = BIO_get_mem_data(b, &pem);
	if (jwk_private_from_pem((unsigned char *)pem, n, k, &cause) == -1)
		die("jwk_private_from_pem", cause);
	BIO_free(b);
	EVP_PKEY_free(p);
}

static void
bench(const char *name, int rsa, double secs)
{
	struct jwk_key		 signer, pub;
	struct jwk_set		*set;
	struct jose_sign_req	 sr;
	struct jose_verify_opts	 o;
	struct jose_claims	*c;
	const char		*auds[] = { AUDIENCE };
	char			*tok[NTOKENS], *cause = NULL;
	size_t			 len[NTOKENS];
	json_t			*j, *extra;
	double			 t0, t;
	long			 n = 0;
	int			 i;
	enum jose_reason	 r;

	memset(&signer, 0, sizeof(signer));
	memset(&pub, 0, sizeof(pub));
	make_key(rsa, &signer);
	/* The verifier has the public key only, from its JWK. */
	if ((j = jwk_public_json(&signer)) == NULL ||
	    jwk_from_json(j, &pub, &cause) == -1)
		die("jwk_from_json", cause);
	json_decref(j);
	if ((set = jwk_set_new()) == NULL || jwk_set_add(set, &pub) == -1)
		die("jwk_set_add", NULL);
	extra = json_pack("{s:s, s:s}", "client_id", "ci", "scope", "pull");
	memset(&sr, 0, sizeof(sr));
	sr.issuer = ISSUER;
	sr.subject = "ci";
	sr.audience = AUDIENCE;
	sr.now = time(NULL);
	sr.ttl = 600;
	sr.extra = extra;
	for (i = 0; i < NTOKENS; i++) {		/* each with its own jti */
		if ((tok[i] = jose_sign(&signer, &sr, &cause)) == NULL)
			die("jose_sign", cause);
		len[i] = strlen(tok[i]);
	}
	jose_verify_opts_init(&o, time(NULL));
	o.issuer = ISSUER;
	o.audiences = auds;
	o.naudiences = 1;
	t0 = now();
	do {
		for (i = 0; i < NTOKENS; i++) {
			if ((r = jose_verify(set, tok[i], len[i], &o, &c)) !=
			    JOSE_OK)
				die(name, jose_reason_name(r));
			jose_claims_free(c);
		}
		n += NTOKENS;
		t = now() - t0;
	} while (t < secs);
	printf("%s %.0f %.1f\n", name, n / t, t * 1e6 / n);
	for (i = 0; i < NTOKENS; i++)
		free(tok[i]);
	json_decref(extra);
	jwk_set_free(set);
	jwk_key_clear(&signer);
	jwk_key_clear(&pub);
}

/* The cache hit's own cost: the keyed hash of a token (HMAC-SHA-256). */
static void
bench_hash(double secs)
{
	unsigned char	 key[32] = { 1 }, out[32];
	char		 tok[800];
	double		 t0, t;
	long		 n = 0;
	int		 i;

	memset(tok, 'a', sizeof(tok));
	t0 = now();
	do {
		for (i = 0; i < 10000; i++) {
			tok[i % sizeof(tok)]++;
			if (jose_token_hash(key, sizeof(key), tok, sizeof(tok),
			    out) == -1)
				die("jose_token_hash", NULL);
		}
		n += 10000;
		t = now() - t0;
	} while (t < secs);
	printf("hash %.0f %.2f\n", n / t, t * 1e6 / n);
}

int
main(int argc, char **argv)
{
	double	secs = argc > 1 ? atof(argv[1]) : 2;

	if (secs <= 0 || secs > 600) {
		fprintf(stderr, "usage: jose_verify [SECONDS (0..600]]\n");
		return (2);
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	bench("RS256", 1, secs);
	bench("ES256", 0, secs);
	bench_hash(secs);
	return (0);
}
