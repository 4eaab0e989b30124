/*
 * secret.h: gateway secrets (robot accounts, CLI credentials) as text and
 * as the record Redis holds.  Leaf: no libevent, no project header; time
 * is a parameter.
 *
 * A secret reads pcs_<id>_<rand>: id is 16 lowercase hex digits (64
 * random bits) naming the record, so a check is one lookup and never a
 * scan; rand is 256 random bits in base64url without padding (43
 * characters).  The whole string is what the client sends as a password.
 * Redis holds SHA-256 of the whole string, never the string: with 256
 * random bits nobody can guess a preimage, so a slow password hash would
 * add only latency (README "Secrets").  Every comparison of a hash is
 * constant-time (CRYPTO_memcmp).
 */
#ifndef PC_SECRET_H
#define PC_SECRET_H

#include <stddef.h>
#include <stdint.h>

#define SECRET_PREFIX		"pcs_"
#define SECRET_PREFIX_LEN	4
#define SECRET_ID_LEN		16	/* hex */
#define SECRET_RAND_LEN		43	/* base64url of 32 bytes */
#define SECRET_LEN		(SECRET_PREFIX_LEN + SECRET_ID_LEN + 1 + \
				    SECRET_RAND_LEN)
#define SECRET_HASH_LEN		32	/* SHA-256 */
#define SECRET_FIELD_MAX	256	/* subject, name, each group */

/* X(enum, name in logs, audit and `secret verify`) */
#define SECRET_VERDICTS(X)						\
	X(SECRET_OK, "ok")						\
	X(SECRET_UNKNOWN, "unknown")	/* no such id, or not a secret */ \
	X(SECRET_REVOKED, "revoked")	/* the secret, or its subject */ \
	X(SECRET_EXPIRED, "expired")					\
	X(SECRET_WRONG, "wrong")	/* the id exists, the rest differs */ \
	X(SECRET_REDIS_UNAVAILABLE, "redis_unavailable")		\
	X(SECRET_BAD_RECORD, "bad_record")	/* not ours, or damaged */

#define SECRET_VERDICT_ENUM(e, s) e,
enum secret_verdict {
	SECRET_VERDICTS(SECRET_VERDICT_ENUM)
	SECRET_VERDICT__MAX
};
#undef SECRET_VERDICT_ENUM

/* A record as read from Redis (every field owned). */
struct secret_rec {
	char		 id[SECRET_ID_LEN + 1];
	char		*subject;
	char		**groups;
	size_t		 ngroups;
	char		*name;		/* "" when none */
	int64_t		 created;	/* seconds since the epoch */
	int64_t		 expires;	/* 0: never */
	int64_t		 last_used;	/* 0: never */
	int64_t		 revoked;	/* 0: not revoked */
	unsigned char	 hash[SECRET_HASH_LEN];
};

const char	*secret_verdict_name(enum secret_verdict);

/*
 * A new secret in out (SECRET_LEN + 1 bytes) and its id in id
 * (SECRET_ID_LEN + 1); 0, or -1 when the random generator failed.
 */
int		 secret_generate(char *out, char *id);

/*
 * Whether s (len bytes, not NUL-terminated) has the form of a secret; on
 * 0 the id is copied to id (SECRET_ID_LEN + 1).  -1 otherwise: the
 * password is something else (an IdP JWT).
 */
int		 secret_parse(const char *s, size_t len, char *id);

/* SHA-256 of the secret s; out holds SECRET_HASH_LEN bytes. */
void		 secret_hash(const char *s, size_t len, unsigned char *out);

/* Lowercase hex of a hash into out (2 * SECRET_HASH_LEN + 1 bytes). */
void		 secret_hash_hex(const unsigned char *, char *out);

/* Whether a subject, a name or a group may be stored: 1..256 printable. */
int		 secret_field_ok(const char *, int empty_ok);

/*
 * Fill rec from the field/value pairs of an HGETALL reply (n pairs).
 * 0, or -1 with *err naming what was wrong (never quoting a value): a
 * missing subject or hash, a field too long, more than max_groups groups.
 * rec is cleared either way on -1.
 */
int		 secret_rec_parse(struct secret_rec *, const char *id,
		    const char *const *names, const size_t *nlens,
		    const char *const *vals, const size_t *vlens, size_t n,
		    size_t max_groups, const char **err);
void		 secret_rec_clear(struct secret_rec *);

/* The groups as the JSON array Redis holds; NULL on allocation failure. */
char		*secret_groups_json(const char *const *, size_t);

/*
 * The verdict on a password (its hash given) for rec at now, not counting
 * a subject-wide revocation (revoke.h): a constant-time comparison of the
 * hashes first (whoever holds only the id, which `secret list` shows,
 * learns nothing more than "wrong"), then revoked, then expired.
 */
enum secret_verdict secret_judge(const struct secret_rec *,
		    const unsigned char *hash, int64_t now);

/*
 * A duration for --expires: a whole number with a unit s, m, h, d or w
 * ("90d"), up to 10 years; seconds in *out.  0, or -1.
 */
int		 secret_parse_duration(const char *, int64_t *out);

/*
 * A time for --before: "now", "@SECONDS", or RFC 3339 in UTC
 * ("2026-12-01T18:00:00Z"); seconds since the epoch in *out.  0, or -1.
 */
int		 secret_parse_time(const char *, int64_t now, int64_t *out);

/*
 * The user name the printed `docker login` lines use for a secret of
 * subject: the gateway never checks it (the secret names its subject),
 * but a Basic user name may hold no ':' (RFC 7617; docker splits at the
 * first one), which a prefixed subject has, and the lines are pasted into
 * a shell.  Every byte but letters, digits, '.', '_', '-' and '@' becomes
 * '_', cut to fit buf (len > 0, always NUL-terminated); returns buf.
 */
char		*secret_login_user(const char *subject, char *buf, size_t len);

/* RFC 3339 UTC of t into buf (at least 21 bytes); "never" for 0. */
const char	*secret_fmt_time(int64_t t, char *buf, size_t len);

#endif /* PC_SECRET_H */
