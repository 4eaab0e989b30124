/*
 * principal.h: who is asking, as every stage after identity sees it.  The
 * identity stage fills one per request from the connection (client
 * address, the verified client-certificate subject) and, once the identity
 * issue lands, from a verified credential (gateway token, IdP JWT, secret).
 * Policy, rate limits and the audit record read only this, never a raw
 * credential.  All strings are borrowed: they live as long as the request
 * (or, for `portcullis policy explain`, the command).  Leaf: no project
 * header.
 */
#ifndef PC_PRINCIPAL_H
#define PC_PRINCIPAL_H

#include <stddef.h>

/* X(enum, name as written in config, audit and explain output) */
#define AUTH_METHODS(X)							\
	X(AUTH_ANONYMOUS, "anonymous")					\
	X(AUTH_TOKEN, "token")		/* gateway-issued Bearer */	\
	X(AUTH_OIDC, "oidc")		/* IdP JWT */			\
	X(AUTH_SECRET, "secret")	/* gateway secret (Basic) */	\
	X(AUTH_MTLS, "mtls")		/* client certificate */

#define AUTH_METHOD_ENUM(e, s) e,
enum auth_method {
	AUTH_METHODS(AUTH_METHOD_ENUM)
	AUTH_METHOD__MAX
};
#undef AUTH_METHOD_ENUM

/* One verified claim; a multi-valued claim appears once per value. */
struct principal_claim {
	const char	*name;
	const char	*value;
};

struct principal {
	enum auth_method		 method;
	const char			*subject;	/* "" when anonymous */
	const char *const		*groups;
	size_t				 ngroups;
	const struct principal_claim	*claims;
	size_t				 nclaims;
	int				 af;	/* AF_INET, AF_INET6; 0: none */
	unsigned char			 addr[16];	/* network order */
	/* Verified client certificate subject, RFC 2253; NULL: none. */
	const char			*mtls_subject;
};

/* The method's name: "anonymous", "token", ... */
const char	*principal_method_name(enum auth_method);

#endif /* PC_PRINCIPAL_H */
