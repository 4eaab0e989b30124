/*
 * sso.h: what sso.c (the browser sign-in: routes, states, sessions, the
 * code exchange, the forms) and sso_page.c (the HTML it answers with)
 * share and nothing else includes.  The daemon sees sso_wants(),
 * sso_start() and sso_free() through src/portcullis.h.
 */
#ifndef PC_SSO_H
#define PC_SSO_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "web.h"

struct policy;
struct principal;

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
	const char			*notice;	/* NULL: none */
};

/* sso_page.c */
void	sso_page_landing(struct wbuf *, const struct sso_view *);
void	sso_page_message(struct wbuf *, const char *title, const char *text,
	    int sign_in_link);
extern const char	sso_stylesheet[];

#endif /* PC_SSO_H */
