/*
 * token_int.h: what the token service (token.c) and the verification of
 * the gateway's own tokens (token_verify.c) share, private to the two.
 */
#ifndef PC_TOKEN_INT_H
#define PC_TOKEN_INT_H

#include <stdint.h>

#define TOK_REFRESH_AUD_PREFIX	"refresh:"
#define TOK_AUD_MAX		300

/* token.c */
int64_t		 tok_now(void);

#endif
