/*
 * config_int.h: what the configuration files (config*.c) share and
 * nothing else includes.  It holds the shape of a schema row (enum
 * cfg_type, the row flags, struct cfg_key), the root table that the
 * loader, the reload check and the reference generator walk, and the few
 * helpers one of the files calls in another.  The rest of the daemon sees
 * only src/config.h.
 */
#ifndef PC_CONFIG_INT_H
#define PC_CONFIG_INT_H

#include <stddef.h>
#include <stdint.h>

#define CFG_PTR_MAX	512	/* longest JSON pointer we build */

/* A row's offset of a field of struct config (the root and its objects). */
#define CFG_OFF(f)	offsetof(struct config, f)

enum cfg_type {
	CFG_STRING,	/* char *, checked by key->check */
	CFG_PATH,	/* char *, a readable file; relative to the config */
	CFG_ENUM,	/* one of key->choices, stored as int index */
	CFG_BOOL,	/* int 0 or 1 */
	CFG_INT,	/* JSON integer, stored as int */
	CFG_SIZE,	/* JSON integer, stored as size_t */
	CFG_SECONDS,	/* JSON number of seconds, stored as int ms */
	CFG_FRACTION,	/* JSON number, stored as double; bounds in 1/1000 */
	CFG_STRLIST,	/* char **, NULL-terminated; count at count_off */
	CFG_OBJECT,	/* nested object, its fields in the same struct */
	CFG_PTR_OBJECT,	/* nested object, allocated when present */
	CFG_ARRAY	/* array of objects; count at count_off */
};

#define CFG_RELOAD	0x1	/* a reload may change it */
#define CFG_REQUIRED	0x2	/* no default: must be present */
#define CFG_SHORTHAND	0x4	/* CFG_ARRAY: a string entry sets the */
				/* entry's first key */

struct cfg_ctx;
struct config;
struct json_t;

struct cfg_key {
	const char		 *name;
	enum cfg_type		  type;
	int			  flags;
	size_t			  off;
	size_t			  count_off;
	long long		  min;	/* value, ms or entries */
	long long		  max;
	long long		  def;	/* ms for CFG_SECONDS */
	const char		 *def_str;
	const char		 *def_doc;	/* documented default */
	const char *const	 *choices;	/* CFG_ENUM */
	const struct cfg_key	 *sub;	/* nested keys */
	size_t			  sub_size;	/* allocated objects */
	const char		*(*check)(const char *);
	void			(*loaded)(struct cfg_ctx *, void *,
				    const char *, const char *);
	const char		 *help;
};

/* config.c */
void	 cfg_error(struct cfg_ctx *, const char *, const char *, ...)
	    __attribute__((__format__(__printf__, 3, 4)));
char	*cfg_xstrdup(const char *);
void	*cfg_xcalloc(size_t, size_t);
void	 cfg_ptr(char *, size_t, const char *, const char *);
int	 cfg_open_regular(const char *);
void	 cfg_parse_object(struct cfg_ctx *, const struct cfg_key *,
	    struct json_t *, void *, const char *);

/* config_secret.c */
void	 cfg_load_credentials(struct cfg_ctx *, void *, const char *,
	    const char *);
void	 cfg_load_sentinel_password(struct cfg_ctx *, void *, const char *,
	    const char *);
void	 cfg_load_redis_password(struct cfg_ctx *, void *, const char *,
	    const char *);
void	 cfg_load_sso_secret(struct cfg_ctx *, void *, const char *,
	    const char *);

/* config_access.c */
void	 cfg_load_policy_file(struct cfg_ctx *, void *, const char *,
	    const char *);
void	 cfg_compile_policy(struct cfg_ctx *, struct config *);
void	 cfg_load_signing_key(struct cfg_ctx *, void *, const char *,
	    const char *);
void	 cfg_load_verification_key(struct cfg_ctx *, void *,
	    const char *, const char *);
void	 cfg_finish_identity(struct cfg_ctx *, struct config *);

/* config_ratelimit.c */
void	 cfg_finish_ratelimit(struct cfg_ctx *, struct config *);

/* config_schema.c */
extern const struct cfg_key	 cfg_root_keys[];
int		 cfg_split_listen(const char *, char *, size_t, int *);
/* YYYY-MM-DDTHH:MM:SSZ into seconds since the epoch (out may be NULL). */
int		 cfg_parse_rfc3339(const char *, int64_t *);
/* The rows' check functions: NULL, or a constant message. */
const char	*cfg_check_listen(const char *);
const char	*cfg_check_external_url(const char *);
const char	*cfg_check_service(const char *);
const char	*cfg_check_rfc3339(const char *);
const char	*cfg_check_instance_id(const char *);
const char	*cfg_check_name(const char *);
const char	*cfg_check_upstream_url(const char *);
const char	*cfg_check_prefix(const char *);
const char	*cfg_check_host(const char *);
const char	*cfg_check_cache_dir(const char *);
const char	*cfg_check_redis(const char *);
const char	*cfg_check_stream_key(const char *);
const char	*cfg_check_ip(const char *);
const char	*cfg_check_spool_file(const char *);
const char	*cfg_check_redis_user(const char *);
const char	*cfg_check_issuer(const char *);
const char	*cfg_check_claim(const char *);
const char	*cfg_check_audience(const char *);
const char	*cfg_check_algorithm(const char *);
const char	*cfg_check_redirect_url(const char *);
const char	*cfg_check_scope_token(const char *);
const char	*cfg_check_cookie_name(const char *);
const char	*cfg_check_net(const char *);
const char	*cfg_check_account(const char *);

/* config_schema_server.c */
extern const struct cfg_key	 cfg_listen_keys[];
extern const struct cfg_key	 cfg_limits_keys[];
extern const struct cfg_key	 cfg_buffers_keys[];
extern const struct cfg_key	 cfg_timeouts_keys[];
extern const struct cfg_key	 cfg_log_keys[];
extern const struct cfg_key	 cfg_admin_keys[];
extern const struct cfg_key	 cfg_metrics_keys[];
extern const char *const	 cfg_level_names[];

/* config_schema_upstream.c */
extern const struct cfg_key	 cfg_upstream_keys[];
extern const struct cfg_key	 cfg_cache_keys[];

/* config_schema_redis.c */
extern const struct cfg_key	 cfg_redis_keys[];
extern const struct cfg_key	 cfg_audit_keys[];
extern const struct cfg_key	 cfg_secrets_keys[];
extern const struct cfg_key	 cfg_revocation_keys[];
extern const struct cfg_key	 cfg_ratelimit_keys[];

/* config_schema_access.c */
extern const struct cfg_key	 cfg_policy_keys[];
extern const struct cfg_key	 cfg_policy_file_keys[];
extern const struct cfg_key	 cfg_identity_keys[];

#endif /* PC_CONFIG_INT_H */
