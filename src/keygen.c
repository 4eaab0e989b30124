/*
 * keygen.c: `portcullis keygen`, a new token signing key.  Writes
 * PREFIX.key (the private key, PKCS#8 PEM, mode 0600), PREFIX.crt (a
 * self-signed certificate of it: registry:2's auth.token rootcertbundle
 * takes certificates, not bare keys) and PREFIX.jwk (the public JWK with
 * the libtrust kid, what /.well-known/jwks.json publishes), and prints the
 * kid.  No file is overwritten: all three are created exclusively, and a
 * failure part-way removes what this run created.
 */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include "portcullis.h"
#include "jwk.h"

#define KEYGEN_RSA_BITS		3072
#define KEYGEN_DAYS		3650

static const char keygen_usage[] =
    "usage: portcullis keygen [-t ec|rsa] [-b BITS] [-d DAYS] -o PREFIX\n"
    "\n"
    "Write a new token signing key: PREFIX.key (private key, PEM, mode\n"
    "0600), PREFIX.crt (a self-signed certificate for registry:2's\n"
    "auth.token.rootcertbundle) and PREFIX.jwk (the public JWK), and\n"
    "print its kid (the libtrust key id registry:2 looks tokens up by).\n"
    "Existing files are never overwritten.\n"
    "  -t ec|rsa   key type: EC P-256 for ES256 (default) or RSA for RS256\n"
    "  -b BITS     RSA modulus size, 2048..8192 (default 3072); for EC,\n"
    "              256 (default) or 384 (ES384)\n"
    "  -d DAYS     certificate validity (default 3650)\n";

static EVP_PKEY *
keygen_key(int rsa, int bits)
{
	if (rsa)
		return (EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)bits));
	return (EVP_PKEY_Q_keygen(NULL, NULL, "EC", bits == 384 ?
	    "P-384" : "P-256"));
}

/* A self-signed certificate of pkey, CN "portcullis token signer". */
static X509 *
keygen_cert(EVP_PKEY *pkey, int days)
{
	unsigned char	 serial[16];
	X509		*x;
	X509_NAME	*name;
	BIGNUM		*bn = NULL;
	int		 ok = 0;

	if ((x = X509_new()) == NULL)
		return (NULL);
	if (RAND_bytes(serial, sizeof(serial)) != 1)
		goto out;
	serial[0] &= 0x7f;	/* a positive serial number */
	if ((bn = BN_bin2bn(serial, sizeof(serial), NULL)) == NULL ||
	    BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) == NULL ||
	    !X509_set_version(x, X509_VERSION_3) ||
	    X509_gmtime_adj(X509_getm_notBefore(x), -300) == NULL ||
	    X509_time_adj_ex(X509_getm_notAfter(x), days, 0, NULL) == NULL ||
	    (name = X509_get_subject_name(x)) == NULL ||
	    !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
	    (const unsigned char *)"portcullis token signer", -1, -1, 0) ||
	    !X509_set_issuer_name(x, name) ||
	    !X509_set_pubkey(x, pkey) ||
	    X509_sign(x, pkey, EVP_sha256()) <= 0)
		goto out;
	ok = 1;
out:
	BN_free(bn);
	if (!ok) {
		X509_free(x);
		return (NULL);
	}
	return (x);
}

/* Create path exclusively with mode and write len bytes of buf. */
static int
keygen_write(const char *path, mode_t mode, const void *buf, size_t len)
{
	ssize_t	n;
	int	fd;

	if ((fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
	    mode)) == -1) {
		fprintf(stderr, "portcullis: %s: %s\n", path, strerror(errno));
		return (-1);
	}
	n = write(fd, buf, len);
	if (n < 0 || (size_t)n != len || fsync(fd) == -1) {
		fprintf(stderr, "portcullis: %s: write failed\n", path);
		close(fd);
		unlink(path);
		return (-1);
	}
	if (close(fd) == -1) {
		unlink(path);
		return (-1);
	}
	return (0);
}

/* PEM of a private key or certificate into a memory BIO's bytes. */
static BIO *
keygen_pem(EVP_PKEY *pkey, X509 *x)
{
	BIO	*b;

	if ((b = BIO_new(BIO_s_secmem())) == NULL)
		return (NULL);
	if ((pkey != NULL && !PEM_write_bio_PrivateKey(b, pkey, NULL, NULL, 0,
	    NULL, NULL)) || (x != NULL && !PEM_write_bio_X509(b, x))) {
		BIO_free(b);
		return (NULL);
	}
	return (b);
}

/* A decimal in min..max, or -1. */
static int
keygen_num(const char *s, long min, long max)
{
	char	*end;
	long	 v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
		return (-1);
	return ((int)v);
}

/* `portcullis keygen`; exit status 0, 1 on failure, 2 on usage. */
int
keygen_cli(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	char		 path[3][PATH_MAX], kid[JWK_KID_MAX + 1];
	const char	*prefix = NULL;
	struct jwk_key	 k;
	EVP_PKEY	*pkey = NULL;
	X509		*x = NULL;
	BIO		*kb = NULL, *cb = NULL;
	json_t		*jwk = NULL;
	char		*js = NULL, *jsnl = NULL, *cause = NULL, *data;
	long		 dlen;
	int		 ch, rsa = 0, bits = 0, days = KEYGEN_DAYS, done = 0;
	int		 rv = 1, i;

	memset(&k, 0, sizeof(k));
	optind = 1;
	while ((ch = getopt_long(argc, argv, "t:b:d:o:h", longopts,
	    NULL)) != -1) {
		switch (ch) {
		case 't':
			if (strcmp(optarg, "rsa") == 0)
				rsa = 1;
			else if (strcmp(optarg, "ec") != 0)
				goto usage;
			break;
		case 'b':
			if ((bits = keygen_num(optarg, 256,
			    JWK_RSA_MAX_BITS)) == -1)
				goto usage;
			break;
		case 'd':
			if ((days = keygen_num(optarg, 1, 36500)) == -1)
				goto usage;
			break;
		case 'o':
			prefix = optarg;
			break;
		case 'h':
			fputs(keygen_usage, stdout);
			return (0);
		default:
			goto usage;
		}
	}
	if (prefix == NULL || *prefix == '\0' || optind != argc)
		goto usage;
	if (bits == 0)
		bits = rsa ? KEYGEN_RSA_BITS : 256;
	if ((rsa && bits < JWK_RSA_MIN_BITS) ||
	    (!rsa && bits != 256 && bits != 384))
		goto usage;
	if (snprintf(path[0], sizeof(path[0]), "%s.key", prefix) >=
	    (int)sizeof(path[0]) ||
	    snprintf(path[1], sizeof(path[1]), "%s.crt", prefix) >=
	    (int)sizeof(path[1]) ||
	    snprintf(path[2], sizeof(path[2]), "%s.jwk", prefix) >=
	    (int)sizeof(path[2])) {
		fprintf(stderr, "portcullis: prefix too long\n");
		return (2);
	}
	for (i = 0; i < 3; i++)
		if (access(path[i], F_OK) == 0) {
			fprintf(stderr, "portcullis: %s exists; not "
			    "overwriting\n", path[i]);
			return (1);
		}

	if ((pkey = keygen_key(rsa, bits)) == NULL ||
	    (x = keygen_cert(pkey, days)) == NULL ||
	    (kb = keygen_pem(pkey, NULL)) == NULL ||
	    (cb = keygen_pem(NULL, x)) == NULL) {
		fprintf(stderr, "portcullis: cannot generate the key\n");
		goto out;
	}
	/* Read the key back as the gateway will: same checks, same kid. */
	dlen = BIO_get_mem_data(kb, &data);
	if (jwk_private_from_pem((unsigned char *)data, (size_t)dlen, &k,
	    &cause) == -1 || (jwk = jwk_public_json(&k)) == NULL ||
	    (js = json_dumps(jwk, JSON_INDENT(2))) == NULL ||
	    asprintf(&jsnl, "%s\n", js) == -1) {
		jsnl = NULL;
		fprintf(stderr, "portcullis: %s\n", cause ? cause :
		    "cannot encode the key");
		goto out;
	}
	snprintf(kid, sizeof(kid), "%s", k.kid);
	if (keygen_write(path[0], 0600, data, (size_t)dlen) == -1)
		goto out;
	done = 1;
	dlen = BIO_get_mem_data(cb, &data);
	if (keygen_write(path[1], 0644, data, (size_t)dlen) == -1)
		goto out;
	done = 2;
	if (keygen_write(path[2], 0644, jsnl, strlen(jsnl)) == -1)
		goto out;
	done = 3;
	printf("%s\n", kid);
	rv = 0;
out:
	/* Leave no half-written key pair behind. */
	for (i = 0; rv != 0 && i < done; i++)
		unlink(path[i]);
	free(js);
	free(jsnl);
	free(cause);
	json_decref(jwk);
	jwk_key_clear(&k);
	BIO_free(kb);
	BIO_free(cb);
	X509_free(x);
	EVP_PKEY_free(pkey);
	return (rv);
usage:
	fputs(keygen_usage, stderr);
	return (2);
}
