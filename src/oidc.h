/*
 * oidc.h: the keys of the configured OpenID Connect issuers, as oidc.c
 * fetches and keeps them, and what the identity stage (next) calls to
 * verify an IdP token: the current key set of an issuer, named by its
 * configured name or by a token's iss; a refresh when a token names a kid
 * the set lacks, with a callback when it completes; and each issuer's
 * state for the admin endpoint and, later, /readyz.
 */
#ifndef PC_OIDC_H
#define PC_OIDC_H

#include <stddef.h>
#include <stdint.h>

struct pc_ctx;
struct req;
struct jwk_set;		/* the parsed keys (jwk.h) */

#define OIDC_KID_MAX	128	/* longest kid kept; longer is refused */

/*
 * One fetched JWKS.  Immutable once published and reference-counted: a
 * refresh publishes a new set and drops its own reference to the old one,
 * so a request verifying with the old set keeps it valid until it lets
 * go.  jwks is the document as fetched, checked to be a JSON object whose
 * "keys" is an array of at most max_keys objects, each with a string kty
 * and an optional unique printable kid (kids[i], "" without one).
 */
struct oidc_keys {
	int		 refcnt;
	char		*jwks;		/* NUL-terminated */
	size_t		 jwks_len;
	char		**kids;		/* nkeys entries */
	char		**ktys;
	size_t		 nkeys;
	uint64_t	 fetched_ms;
	/*
	 * The keys built from jwks (jwk_set_parse), each key's algs cut to
	 * the issuer's `algorithms` (a key left with none verifies nothing).
	 * Never NULL in a published set; NULL from oidc_keys_parse() alone.
	 */
	struct jwk_set	*set;
};

/*
 * Check a JWKS document (bounded by the caller) and list its keys; NULL
 * with the reason in why.  The set holds a copy of the document.
 */
struct oidc_keys	*oidc_keys_parse(const char *, size_t, size_t, char *,
			    size_t);
/* The current keys of the issuer with this configured name, referenced. */
struct oidc_keys	*oidc_keys_get(struct pc_ctx *, const char *);
/* The same by issuer identifier (a token's iss, compared exactly). */
struct oidc_keys	*oidc_keys_by_iss(struct pc_ctx *, const char *,
			    const char **);
void			 oidc_keys_unref(struct oidc_keys *);
/* Whether the set holds a key with this kid. */
int			 oidc_keys_has_kid(const struct oidc_keys *,
			    const char *);
/* The keys to verify with (jwk.h: jwk_set_find, then jose.c). */
const struct jwk_set	*oidc_keys_set(const struct oidc_keys *);

/*
 * A token names a kid the issuer's keys lack.  OIDC_KID_KNOWN: it is
 * there now (a refresh landed meanwhile): take the keys again.
 * OIDC_KID_WAIT: a fetch is on its way (started now, or already running:
 * many requests share one), and cb(arg, keys, ok) runs once when it ends
 * with the keys then current (borrowed for the call; NULL when the issuer
 * has none) and ok 0 when it failed; *wp is the waiter, which the caller
 * cancels with oidc_wait_cancel() when it goes away first.
 * OIDC_KID_UNKNOWN: no fetch (the last began less than
 * min_refresh_interval ago, max_waiters wait already, or no such issuer):
 * the token's kid is unknown; *why says which.
 */
enum oidc_kid { OIDC_KID_KNOWN, OIDC_KID_WAIT, OIDC_KID_UNKNOWN };
struct oidc_wait;
typedef void	(*oidc_wait_cb)(void *, struct oidc_keys *, int);
enum oidc_kid	 oidc_unknown_kid(struct pc_ctx *, const char *, const char *,
		    oidc_wait_cb, void *, struct oidc_wait **, const char **);
void		 oidc_wait_cancel(struct oidc_wait *);

/*
 * The provider's endpoints from its discovery document, for the sign-in
 * flows (sso.c, oidc_client.c): the URL checked under the rules jwks_uri
 * follows, the origin to dial it at (restricted to public addresses
 * unless the issuer's own or in jwks_hosts).
 */
enum oidc_ep {
	OIDC_EP_AUTHORIZATION,
	OIDC_EP_TOKEN,
	OIDC_EP_DEVICE,
	OIDC_EP_USERINFO,
	OIDC_EP__MAX
};
struct url;
struct origin;
struct config_upstream;
int	oidc_endpoint(struct pc_ctx *, const char *, enum oidc_ep, char *,
	    size_t, struct url *, struct origin *, const char **);
/* The peer that names an issuer to proxy.c (logs, errors). */
const struct config_upstream *oidc_peer(struct pc_ctx *, const char *);

/* An issuer's state, for GET /admin/identity and /readyz. */
struct oidc_status {
	const char	*name;
	const char	*issuer;
	int		 loaded;		/* has keys */
	size_t		 nkeys;
	int		 fetching;
	const char	*jwks_uri;		/* last seen; "" before */
	uint64_t	 last_attempt_ms;	/* 0: never */
	uint64_t	 last_success_ms;
	uint64_t	 last_failure_ms;
	const char	*last_error;		/* "" after a success */
	uint64_t	 next_refresh_ms;
	int		 kid_refresh_allowed;	/* not rate-limited now */
	size_t		 waiters;		/* for the fetch running */
	uint64_t	 fetches;
	uint64_t	 failures;
	uint64_t	 kid_refreshes;		/* started by unknown kids */
	uint64_t	 kid_limited;		/* refused by the rate limit */
};
size_t	oidc_nissuers(struct pc_ctx *);
/* The i-th issuer's state; its strings live until the next loop turn. */
int	oidc_status_get(struct pc_ctx *, size_t, struct oidc_status *);
/* Whether every configured issuer has keys (for /readyz). */
int	oidc_ready(struct pc_ctx *);

/* Take the configuration in force: at start and after every reload. */
void	oidc_config_loaded(struct pc_ctx *);
void	oidc_free(struct pc_ctx *);

/* GET /admin/identity and POST /admin/identity/refresh (oidc.c). */
void	oidc_admin(struct req *);

#endif /* PC_OIDC_H */
