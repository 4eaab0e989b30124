/*
 * sso.h: what sso.c (the browser sign-in: routes, states, sessions, the
 * forms), sso_callback.c (the code exchange), sso_account.c and
 * sso_page.c (the HTML it answers with) share and nothing else
 * includes.  The daemon sees sso_wants(), sso_start() and sso_free()
 * through src/portcullis.h.
 */
#ifndef PC_SSO_H
#define PC_SSO_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "web.h"

struct policy;
struct principal;
struct pc_ctx;
struct req;
struct rds;
struct redisReply;
struct evbuffer;
struct headers;
struct oidc_treq;
struct tok_ident;
struct config;

#define SSO_CLAIMS_MAX		64	/* string claims kept in a session */
#define SSO_SESSION_MAX		65536	/* a session record's bytes */

/* One secret of the person's, as the list shows it. */
struct sso_secret_row {
	char		 id[17];
	char		*name;
	int64_t		 created;
	int64_t		 expires;	/* 0: never */
	int64_t		 last_used;	/* 0: never */
	int64_t		 revoked;	/* 0: not */
};

/* One audit record of the person's. */
struct sso_activity_row {
	char		*time;		/* RFC 3339 */
	char		*action;
	char		*method;
	char		*path;
	char		*repository;
	char		*reference;
	char		*status;
	char		*decision;
};

/* Everything a landing page shows; strings borrowed. */
struct sso_view {
	int				 signed_in;
	const char			*subject;
	const char			*name;		/* NULL: none */
	const char			*email;		/* NULL: none */
	const char *const		*groups;
	size_t				 ngroups;
	const char			*csrf;
	int64_t				 session_expires;
	const struct policy		*policy;
	const struct principal		*principal;
	const struct sso_secret_row	*secrets;
	size_t				 nsecrets;
	int				 secrets_failed;
	const struct sso_activity_row	*activity;
	size_t				 nactivity;
	const char			*activity_note;	/* NULL: shown */
	const char			*new_secret;	/* shown once */
	const char			*registry_host;	/* login lines */
	int				 registry_http;	/* plain http */
	const char			*notice;	/* NULL: none */
};

/* One sign-in operation: the request's stage "sso" while it waits. */
enum sso_kind {
	SSO_PAGE, SSO_LOGIN, SSO_CALLBACK, SSO_LOGOUT, SSO_CREATE, SSO_REVOKE
};

struct sso_op;
typedef void	 sso_step(struct sso_op *, struct redisReply *, int);

struct sso_cmd {
	struct sso_op		*op;
	sso_step		*fn;
	int			 idx;
};

struct sso_op {
	struct pc_ctx		*ctx;
	struct req		*req;		/* NULL once it went */
	enum sso_kind		 kind;
	int			 pending;	/* replies on their way */
	struct oidc_treq	*treq;	/* also the userinfo re-check */
	struct evbuffer		*body;		/* a form being read */
	char			*form;		/* read whole */
	char			 state[WEB_TOKEN_LEN + 1];
	char			 verifier[WEB_TOKEN_LEN + 1];
	char			 nonce[WEB_TOKEN_LEN + 1];
	char			 sid[WEB_TOKEN_LEN + 1];
	char			 sid_hash[65];
	json_t			*sess;		/* the session record */
	struct tok_ident	*ti;		/* the session's principal */
	char			*new_secret;
	const char		*notice;
	struct sso_secret_row	*secrets;
	size_t			 nsecrets;
	int			 secrets_failed;
	struct sso_activity_row	*activity;
	size_t			 nactivity;
	const char		*activity_note;
	char			**act_ids;
	size_t			 nact_ids;
};

/* sso.c: what sso_account.c calls back into. */
struct rds	*sso_link(struct pc_ctx *);
void		 sso_op_free(struct sso_op *);
int		 sso_send(struct sso_op *, struct rds *, sso_step *, int, int,
		    const char **);
void		 sso_page_headers(struct headers *);
void		 sso_answer(struct req *, int, struct wbuf *, struct headers *);
struct req	*sso_take(struct sso_op *);
void		 sso_op_message(struct sso_op *, int, const char *,
		    const char *, int);
void		 sso_redirect(struct req *, int, const char *,
		    struct headers *);

/* sso.c: what sso_callback.c calls back into as well. */
const char	*sso_cookie_name(struct req *, int, char *, size_t);
void		 sso_cookie(struct req *, struct headers *, int,
		    const char *, long);
void		 sso_message(struct req *, int, const char *, const char *,
		    int, struct headers *);
void		 sso_redirect_uri(const struct config *, char *, size_t);
void		 sso_principal(struct req *, struct tok_ident *);

/* sso_callback.c: /oauth2/callback, from sso_start(). */
void	sso_callback(struct sso_op *);

/* token_idp.c: its sealing, also for the session's provider token. */
char	*tokidp_seal_with(const unsigned char *, const char *, const char *);
json_t	*tokidp_open_with(const unsigned char *, const char *, const char *,
	    size_t);

/* sso_account.c: the landing page's data and its forms. */
void	sso_landing(struct sso_op *);
void	sso_create(struct sso_op *);
void	sso_recheck(struct sso_op *);
int	sso_keep_provider_token(struct sso_op *, json_t *, const char *);
void	sso_revoke(struct sso_op *);

/* sso_page.c */
void	sso_page_landing(struct wbuf *, const struct sso_view *);
void	sso_page_message(struct wbuf *, const char *title, const char *text,
	    int sign_in_link);
extern const char	sso_stylesheet[];

#endif /* PC_SSO_H */
