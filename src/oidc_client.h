/*
 * oidc_client.h: the gateway as a client of an identity provider's token
 * endpoint (oidc_client.c): the browser sign-in's code exchange now, the
 * device grant and the refresh grant's re-check later.
 *
 *	t = oidc_token_request(ctx, conf, "corp", client_id, secret,
 *	    "grant_type=authorization_code&code=...", max, cb, arg, logid,
 *	    &why);
 *	...
 *	oidc_token_cancel(t);	(the owner went away, before cb only)
 *
 * cb(arg, doc, error, why): doc the answer's JSON object on HTTP 200
 * (borrowed for the call), else NULL with error the provider's OAuth
 * error code ("invalid_grant", "authorization_pending", "slow_down";
 * NULL when it sent none) and why a reason for logs and pages (never a
 * token).  cb runs once, never before oidc_token_request() returns.
 */
#ifndef PC_OIDC_CLIENT_H
#define PC_OIDC_CLIENT_H

#include <stddef.h>

#include <jansson.h>

struct pc_ctx;
struct config;
struct oidc_treq;

typedef void	(*oidc_token_cb)(void *, json_t *, const char *,
		    const char *);

struct oidc_treq	*oidc_token_request(struct pc_ctx *, struct config *,
			    const char *, const char *, const char *,
			    const char *, size_t, oidc_token_cb, void *,
			    const char *, const char **);
struct oidc_treq	*oidc_userinfo_request(struct pc_ctx *,
			    struct config *, const char *, const char *,
			    size_t, oidc_token_cb, void *, const char *,
			    const char **);
void			 oidc_token_cancel(struct oidc_treq *);

#endif /* PC_OIDC_CLIENT_H */
