/*
 * jose_sign.c: a test helper, not part of the product.  Signs one
 * registry token with the library's signer (jose_sign) so the integration
 * tests can show that docker-registry accepts what the gateway signs,
 * before the token service exists:
 *   jose_sign KEY ISSUER SUBJECT AUDIENCE TTL [SCOPE...]
 * KEY is a PEM private key (portcullis keygen's PREFIX.key); each SCOPE
 * is parsed with scope_parse and granted as asked.  Prints the token.
 * With JOSE_SIGN_GATEWAY=1 in the environment, the claims the gateway's
 * access tokens carry besides (token_use access, auth_method secret).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "jose.h"
#include "scope.h"

int
main(int argc, char **argv)
{
	struct jose_sign_req	 rq;
	struct scope_set	*ss;
	struct jwk_key		 k;
	char			*cause = NULL, *tok;
	int			 i;

	if (argc < 6) {
		fprintf(stderr, "usage: jose_sign KEY ISSUER SUBJECT AUDIENCE "
		    "TTL [SCOPE...]\n");
		return (2);
	}
	if (jwk_load_private(argv[1], &k, &cause) == -1) {
		fprintf(stderr, "jose_sign: %s\n", cause);
		return (1);
	}
	if ((ss = scope_set_new(SCOPE_DEFAULT_MAX)) == NULL)
		return (1);
	for (i = 6; i < argc; i++)
		if (scope_parse(ss, argv[i], strlen(argv[i])) != SCOPE_OK) {
			fprintf(stderr, "jose_sign: bad scope %s\n", argv[i]);
			return (1);
		}
	memset(&rq, 0, sizeof(rq));
	rq.issuer = argv[2];
	rq.subject = argv[3];
	rq.audience = argv[4];
	rq.now = (int64_t)time(NULL);
	rq.ttl = strtoll(argv[5], NULL, 10);
	rq.access = scope_access_json(ss);
	if (getenv("JOSE_SIGN_GATEWAY") != NULL) {
		rq.extra = json_pack("{s:s, s:s, s:[]}", "token_use", "access",
		    "auth_method", "secret", "groups");
		if (rq.extra == NULL)
			return (1);
	}
	/* A terminal sign-in's refresh token (token_idp.c's idp_link). */
	if (getenv("JOSE_SIGN_IDP_REFRESH") != NULL) {
		rq.extra = json_pack("{s:s, s:s, s:[], s:b}", "token_use",
		    "refresh", "auth_method", "oidc", "groups", "idp_link", 1);
		if (rq.extra == NULL)
			return (1);
	}
	if ((tok = jose_sign(&k, &rq, &cause)) == NULL) {
		fprintf(stderr, "jose_sign: %s\n", cause);
		return (1);
	}
	printf("%s\n", tok);
	free(tok);
	json_decref(rq.access);
	json_decref(rq.extra);
	scope_set_free(ss);
	jwk_key_clear(&k);
	return (0);
}
