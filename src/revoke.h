/*
 * revoke.h: revocation shared by every instance through Redis (README
 * "Revocation").  `portcullis token revoke` raises a not-before time in
 * the hash revocation.key (field s:SUBJECT, or all) and PUBLISHes on
 * revocation.channel; `portcullis secret revoke` marks the secret's
 * record and PUBLISHes too.  Every gateway holds the table in memory
 * (revtab.h), follows the channel over a subscriber link, and reads the
 * whole hash again each time that link is (re)subscribed and every
 * revocation.resync_interval, so a message missed while disconnected
 * cannot leave a revoked token alive: it is learned at the re-sync.
 *
 * The identity stage (identity.c, token_verify.c) calls revoke_check() on
 * every credential it accepts, from memory, never waiting; and registers
 * with revoke_listen() to drop what it caches (tcache_purge) when told.
 *
 * Messages on the channel, one per revocation (the format is the
 * interface between instances of different versions):
 *   "subject NOT_BEFORE SUBJECT"   a subject's credentials issued before
 *   "all NOT_BEFORE"               every subject's
 *   "secret ID"                    one secret
 * NOT_BEFORE is in seconds since the epoch.
 *
 * A revoked secret also has a field x:ID in revocation.key (the time it
 * was revoked), and an entry in the table under a key no subject can
 * have (REVOKE_SECRET_KEY_BYTE, then the id): every token issued for
 * the secret (its secret_id claim) is refused from then on, on every
 * instance, as a subject's are (revoke_check_secret).  A token issued for
 * a secret lives at most identity.token.expires_in (86400 at most) plus
 * the leeway (600 at most) and none is issued after the revocation, so
 * REVOKE_SECRET_KEEP seconds after it the entry protects nothing: the
 * gateways drop it from memory (revtab_sweep, at each resync_interval)
 * and from what they read, and `secret revoke` deletes such fields.
 */
#ifndef PC_REVOKE_H
#define PC_REVOKE_H

#include <stddef.h>
#include <stdint.h>

struct config;
struct rds;
struct event_base;
struct revoke;

#define REVOKE_SUBJECT_MAX	1024	/* bytes of a subject */
#define REVOKE_MAX_LISTENERS	8

#define REVOKE_SECRET_FIELD	"x:"	/* revocation.key field prefix */
#define REVOKE_SECRET_KEY_BYTE	'\001'	/* no subject has it */
#define REVOKE_SECRET_KEEP	(86400 + 600)

enum revoke_kind {
	REVOKE_SUBJECT,		/* subject, not_before */
	REVOKE_ALL,		/* not_before */
	REVOKE_SECRET,		/* secret_id */
	REVOKE_RESYNCED		/* the table was read again: drop
				   what was cached while down */
};

struct revoke_event {
	enum revoke_kind	 kind;
	const char		*subject;
	const char		*secret_id;
	int64_t			 not_before;
};

typedef void	 revoke_listen_fn(const struct revoke_event *, void *);

/*
 * Start following revocations on base with conf's redis, revocation
 * and (for its cache) secrets settings.  The links connect in the
 * background; until the first sync the table is empty.  NULL on
 * allocation failure.
 */
struct revoke	*revoke_new(struct event_base *, const struct config *);
void		 revoke_free(struct revoke *);

/*
 * Whether a credential of subject issued at iat (seconds) is revoked.
 * NULL revoke (no redis section): never.  Never waits.
 */
int		 revoke_check(const struct revoke *, const char *subject,
		    int64_t iat);

/* Whether a token issued for the secret id is revoked.  Never waits. */
int		 revoke_check_secret(const struct revoke *, const char *id);

/* Whether the table knows every revocation made so far. */
int		 revoke_current(const struct revoke *);

/* Call fn for every event from now on; -1 past REVOKE_MAX_LISTENERS. */
int		 revoke_listen(struct revoke *, revoke_listen_fn *, void *);

/* A Redis link (1: the subscriber, 0: commands), for /metrics, /readyz. */
struct rds	*revoke_link(const struct revoke *, int);

/* Times the whole table was read (0: not yet). */
uint64_t	 revoke_syncs(const struct revoke *);

/*
 * Parse a channel message into ev (subject and secret_id point into
 * buf, which must hold len + 1 bytes).  0, or -1 when malformed.
 */
int		 revoke_parse_message(const char *msg, size_t len, char *buf,
		    struct revoke_event *ev);

/* revoke_cli.c: portcullis token revoke. */
int		 revoke_cli(int, char **);

#endif /* PC_REVOKE_H */
