/*
 * config_access.c: the configuration sections that say who may do what.
 *
 * The policy section (inline or in the file /policy/file names) is read
 * and compiled into the snapshot's policy object; the identity section's
 * token keys are loaded and its issuers checked against each other.  The
 * schema loader in config.c calls in here: the key files and the policy
 * file from their rows, the rest from cfg_finish().
 *
 * Guarantees: as for config.c, every problem is reported with its JSON
 * pointer (inside the policy file as "FILE#/pointer"), and neither a key
 * file's content nor a policy file's text goes into a message.
 */
#include <sys/stat.h>

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "config.h"
#include "config_int.h"
#include "jwk.h"
#include "policy.h"

/*
 * Read the policy file that /policy/file names into the same pol_src as
 * inline rules would go, refusing it above max_file_bytes before reading.
 * Errors inside it are named "FILE#/rules/3/..." (a JSON pointer in a URI
 * fragment, RFC 6901 section 6).
 */
void
cfg_load_policy_file(struct cfg_ctx *ctx, void *base, const char *file,
    const char *ptr)
{
	struct pol_src	*src = base;
	struct stat	 st;
	json_error_t	 jerr;
	json_t		*root;
	char		*buf = NULL, *near, where[CFG_PTR_MAX];
	size_t		 len = 0, max = src->max_file_bytes;
	ssize_t		 n = 0;
	int		 fd;

	if (src->rules != NULL || src->blocked != NULL ||
	    src->immutable != NULL) {
		cfg_error(ctx, ptr, "rules, blocked_digests and "
		    "immutable_tags go either inline or in the file, not both");
		return;
	}
	if ((fd = cfg_open_regular(file)) == -1) {
		cfg_error(ctx, ptr, "cannot read: %s", strerror(errno));
		return;
	}
	if (fstat(fd, &st) == -1 || (size_t)st.st_size > max) {
		cfg_error(ctx, ptr, "larger than policy/max_file_bytes (%zu)",
		    max);
		goto out;
	}
	if ((buf = malloc(max + 1)) == NULL)
		abort();
	while (len <= max) {
		n = read(fd, buf + len, max + 1 - len);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += n;
	}
	if (n == -1) {
		cfg_error(ctx, ptr, "cannot read: %s", strerror(errno));
		goto out;
	}
	if (len > max) {
		cfg_error(ctx, ptr, "larger than policy/max_file_bytes (%zu)",
		    max);
		goto out;
	}
	if ((root = json_loadb(buf, len, JSON_REJECT_DUPLICATES,
	    &jerr)) == NULL) {
		snprintf(where, sizeof(where), "%s:%d:%d", file, jerr.line,
		    jerr.column);
		/*
		 * Without jansson's "near '<token>'": a path mistaken for
		 * the policy file may hold a secret (the credentials file
		 * is configured next to it); line and column suffice.
		 */
		if ((near = strstr(jerr.text, " near '")) != NULL)
			*near = '\0';
		cfg_error(ctx, where, "%s", jerr.text);
		goto out;
	}
	snprintf(where, sizeof(where), "%s#", file);
	cfg_parse_object(ctx, cfg_policy_file_keys, root, base, where);
	json_decref(root);
out:
	free(buf);
	close(fd);
}

static void
cfg_policy_error(void *arg, const char *ptr, const char *msg)
{
	cfg_error(arg, ptr, "%s", msg);
}

/*
 * Compile the policy (none: the empty policy, which denies everything).
 * Runs even when other keys were wrong, so one pass reports every error.
 */
void
cfg_compile_policy(struct cfg_ctx *ctx, struct config *cfg)
{
	const struct pol_src	*src = cfg->policy_src;
	const char		**names;
	char			 where[CFG_PTR_MAX];
	size_t			 i;

	names = cfg_xcalloc(cfg->nupstreams, sizeof(*names));
	for (i = 0; i < cfg->nupstreams; i++)
		names[i] = cfg->upstreams[i].name;
	if (src != NULL && src->file != NULL)
		snprintf(where, sizeof(where), "%s#", src->file);
	else
		snprintf(where, sizeof(where), "/policy");
	cfg->policy = policy_compile(src, names, cfg->nupstreams, where,
	    cfg_policy_error, ctx);
	free(names);
}

/*
 * A token key file, read when its row is (a file that cannot be read is
 * reported by the row, and not loaded): the signing key becomes the
 * first key of the token service's set, a rotated-out one waits in its
 * entry until cfg_token_keys() knows its valid_until.  A key file's
 * content never goes into a message.
 */
static struct jwk_key *
cfg_token_key(struct cfg_ctx *ctx, const char *file, const char *ptr)
{
	struct jwk_key	*k;
	char		*cause = NULL;

	if ((k = calloc(1, sizeof(*k))) == NULL)
		abort();
	if (jwk_load_private(file, k, &cause) == -1) {
		cfg_error(ctx, ptr, "%s", cause != NULL ? cause :
		    "cannot load the key");
		free(cause);
		jwk_key_clear(k);
		free(k);
		return (NULL);
	}
	return (k);
}

/* Load /identity/token/signing_key as the first key of the set. */
void
cfg_load_signing_key(struct cfg_ctx *ctx, void *base, const char *file,
    const char *ptr)
{
	struct config_token	*tk = base;
	struct jwk_key		*k;

	if ((k = cfg_token_key(ctx, file, ptr)) == NULL)
		return;
	if ((tk->keys = jwk_set_new()) == NULL || jwk_set_add(tk->keys, k) ==
	    -1)
		abort();
	jwk_key_clear(k);
	free(k);
}

/* Load one rotated-out key of /identity/token/verification_keys. */
void
cfg_load_verification_key(struct cfg_ctx *ctx, void *base,
    const char *file, const char *ptr)
{
	struct config_token_vkey	*vk = base;

	vk->key = cfg_token_key(ctx, file, ptr);
}

/*
 * The rotated-out keys join the set after the signing key, each
 * verifying until its valid_until; the service defaults to the
 * top-level one.
 */
static void
cfg_token_keys(struct cfg_ctx *ctx, struct config *cfg)
{
	struct config_token	*tk = cfg->identity->token;
	struct jwk_key		*k;
	char			 p[CFG_PTR_MAX];
	int64_t			 until;
	size_t			 i;

	if (tk->service == NULL && cfg->service != NULL)
		tk->service = cfg_xstrdup(cfg->service);
	for (i = 0; i < tk->nvkeys; i++) {
		if ((k = tk->vkeys[i].key) == NULL || tk->keys == NULL ||
		    tk->vkeys[i].valid_until == NULL ||
		    cfg_parse_rfc3339(tk->vkeys[i].valid_until, &until) == -1)
			continue;	/* reported by its row */
		k->not_after = until;
		if (jwk_set_find(tk->keys, k->kid, strlen(k->kid)) != NULL) {
			snprintf(p, sizeof(p),
			    "/identity/token/verification_keys/%zu/file", i);
			cfg_error(ctx, p, "the same key as another one");
		} else if (jwk_set_add(tk->keys, k) == -1)
			abort();
	}
}

/* Whether one issuer prefix (NULL: none) begins the other. */
static int
cfg_prefix_overlap(const char *a, const char *b)
{
	size_t	la, lb;

	a = a != NULL ? a : "";
	b = b != NULL ? b : "";
	la = strlen(a);
	lb = strlen(b);
	return (strncmp(a, b, la < lb ? la : lb) == 0);
}

/*
 * identity.sso: its issuer must be configured, openid asked, a fixed
 * redirect_uri known (the Host header is the client's), and Redis there
 * to keep states and sessions in.
 */
static void
cfg_finish_sso(struct cfg_ctx *ctx, struct config *cfg)
{
	struct config_sso	*so = cfg->identity->sso;
	size_t			 i;
	int			 openid = 0;

	for (i = 0; i < cfg->identity->nissuers; i++)
		if (so->issuer != NULL && cfg->identity->issuers[i].name !=
		    NULL && strcmp(so->issuer,
		    cfg->identity->issuers[i].name) == 0)
			break;
	if (so->issuer != NULL && i == cfg->identity->nissuers)
		cfg_error(ctx, "/identity/sso/issuer", "no identity.issuers "
		    "entry is named %s", so->issuer);
	if (so->scopes == NULL) {
		so->scopes = cfg_xcalloc(5, sizeof(char *));
		so->scopes[0] = cfg_xstrdup("openid");
		so->scopes[1] = cfg_xstrdup("profile");
		so->scopes[2] = cfg_xstrdup("email");
		so->scopes[3] = cfg_xstrdup("groups");
		so->nscopes = 4;
	}
	for (i = 0; i < so->nscopes; i++)
		if (strcmp(so->scopes[i], "openid") == 0)
			openid = 1;
	if (!openid)
		cfg_error(ctx, "/identity/sso/scopes", "must include openid");
	if (so->redirect_url == NULL && cfg->external_url == NULL)
		cfg_error(ctx, "/identity/sso", "needs redirect_url or the "
		    "top-level external_url");
	if (cfg->redis == NULL)
		cfg_error(ctx, "/identity/sso", "needs the redis section (it "
		    "keeps sign-in states and sessions)");
}

/*
 * Issuers: the parsed URL, the default algorithm, and unique names and
 * issuer identifiers (a token's iss picks its issuer: two entries with
 * one identifier would make that depend on order).
 */
void
cfg_finish_identity(struct cfg_ctx *ctx, struct config *cfg)
{
	struct config_oidc_issuer	*is, *o;
	char				 p[CFG_PTR_MAX], q[CFG_PTR_MAX];
	size_t				 i, j;

	if (cfg->identity == NULL)
		return;
	if (cfg->identity->token != NULL)
		cfg_token_keys(ctx, cfg);
	for (i = 0; i < cfg->identity->nissuers; i++) {
		is = &cfg->identity->issuers[i];
		if (is->issuer != NULL)
			(void)url_parse(is->issuer, &is->u);
		if (is->algorithms == NULL) {
			is->algorithms = cfg_xcalloc(2, sizeof(char *));
			is->algorithms[0] = cfg_xstrdup("RS256");
			is->nalgorithms = 1;
		}
		for (j = 0; j < i; j++) {
			o = &cfg->identity->issuers[j];
			if (is->name != NULL && o->name != NULL &&
			    strcmp(is->name, o->name) == 0) {
				snprintf(p, sizeof(p),
				    "/identity/issuers/%zu/name", i);
				snprintf(q, sizeof(q),
				    "/identity/issuers/%zu/name", j);
				cfg_error(ctx, p, "duplicate of %s", q);
			}
			if (is->issuer != NULL && o->issuer != NULL &&
			    strcmp(is->issuer, o->issuer) == 0) {
				snprintf(p, sizeof(p),
				    "/identity/issuers/%zu/issuer", i);
				snprintf(q, sizeof(q),
				    "/identity/issuers/%zu/issuer", j);
				cfg_error(ctx, p, "duplicate of %s", q);
			}
			/*
			 * Subjects and groups are "prefix" + the IdP's
			 * value: if one prefix begins another (none is ""),
			 * an issuer can name the other's users and groups.
			 */
			if (cfg_prefix_overlap(is->prefix, o->prefix)) {
				snprintf(p, sizeof(p),
				    "/identity/issuers/%zu/prefix", i);
				snprintf(q, sizeof(q),
				    "/identity/issuers/%zu/prefix", j);
				cfg_error(ctx, p, "with several issuers, each "
				    "needs a prefix that does not begin "
				    "another's (%s)", q);
			}
		}
	}
	if (cfg->identity->sso != NULL)
		cfg_finish_sso(ctx, cfg);
}
