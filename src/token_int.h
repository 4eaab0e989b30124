/*
 * token_int.h: what the token service (token.c) and the verification of
 * the gateway's own tokens (token_verify.c) share, private to the two.
 */
#ifndef PC_TOKEN_INT_H
#define PC_TOKEN_INT_H

#include <stdint.h>

#define TOK_REFRESH_AUD_PREFIX	"refresh:"
#define TOK_AUD_MAX		300

#define TOK_SERVICE_MAX		255	/* bytes of service= */

struct req;

/* token.c */
int64_t		 tok_now(void);
/* When the credential a token is issued for ends (0: it does not). */
int64_t		 token_credential_end(const struct req *);

enum tok_svc {
	TOK_SVC_ABSENT,		/* no service= */
	TOK_SVC_OK,		/* exactly the configured service */
	TOK_SVC_OTHER,		/* another one, or empty */
	TOK_SVC_TOO_LONG,	/* over TOK_SERVICE_MAX decoded */
	TOK_SVC_MALFORMED	/* bad percent-encoding, "%00" */
};
enum tok_svc	 token_service_check(const char *, size_t, const char *);

#endif
