/*
 * secrets.h: checking a gateway secret on the gateway's event loop
 * (README "Secrets"; the text form and the record are secret.h's).
 *
 * For the identity stage: a Basic password that secret_parse() accepts
 * (it starts "pcs_") is a gateway secret; anything else is not (try it
 * as an IdP JWT).  The Basic user name is not checked: docker, podman
 * and skopeo insist on one, and the id in the secret already names the
 * record, whose subject is the one that counts (`secret create` prints
 * login lines with the subject as the user, which is what people will
 * see in their tools).
 *
 * ctx->secrets (and ctx->revoke) exist only with a top-level redis
 * section; NULL means there are no secrets: refuse as "unknown".
 *
 *	h = secrets_check(ctx->secrets, password, len, cb, arg);
 *	...
 *	secrets_check_cancel(h);	(client gone, before cb only)
 *
 * cb is called exactly once, never before secrets_check() returns,
 * unless cancelled first.  On SECRET_OK it gets the principal's fields
 * (valid during the call only; copy what is kept); otherwise only the
 * reason, which may be audited and logged (it never holds the secret).
 * A subject-wide revocation (revoke.h) counts: its secrets created
 * before the not-before time are SECRET_REVOKED.
 */
#ifndef PC_SECRETS_H
#define PC_SECRETS_H

#include <stddef.h>
#include <stdint.h>

#include "secret.h"

struct config;
struct event_base;
struct rds;
struct revoke;
struct secrets;
struct secrets_check;

/* What an accepted secret stands for (method: AUTH_SECRET). */
struct secret_principal {
	const char		*id;		/* names it; not secret */
	const char		*subject;
	const char *const	*groups;
	size_t			 ngroups;
	const char		*name;		/* "" when none */
	int64_t			 created;
	int64_t			 expires;	/* 0: never */
};

typedef void	 secrets_cb(enum secret_verdict,
		    const struct secret_principal *, void *);

/*
 * Check secrets on base with conf's redis and secrets settings; rv (may
 * be NULL) gives the subject-wide revocations and tells of revoked
 * secrets.  NULL on allocation failure.
 */
struct secrets	*secrets_new(struct event_base *, const struct config *,
		    struct revoke *);
void		 secrets_free(struct secrets *);

/*
 * Check a password; a handle for secrets_check_cancel(), or NULL when
 * out of memory (cb is not called then).
 */
struct secrets_check *secrets_check(struct secrets *, const char *password,
		    size_t len, secrets_cb *, void *);
struct secrets_check *secrets_check_id(struct secrets *, const char *id,
		    secrets_cb *, void *);
/* Forget a check before its cb: cb is never called. */
void		 secrets_check_cancel(struct secrets_check *);

/* The Redis link, for /metrics and /readyz; NULL: none. */
struct rds	*secrets_link(const struct secrets *);

/* Whether a last_used write is still in flight (for a command's exit). */
int		 secrets_writing(const struct secrets *);

/* secrets_cli.c: portcullis secret create|list|revoke|verify. */
int		 secrets_cli(int, char **);

#endif /* PC_SECRETS_H */
