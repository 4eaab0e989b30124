/*
 * rds.h: one link to Redis, shared by every part of the gateway that
 * talks to it (the audit writer now; secrets, revocation, rate limits
 * next).  A link is asynchronous, on the gateway's event loop, over
 * hiredis 0.14 and its libevent adapter; rds_connect_sync() is the
 * blocking form for the command line and the start-up check.  Both
 * authenticate (AUTH with the ACL user or requirepass) and select the
 * database from the top-level "redis" section before anything else is
 * sent.  Types of libevent and hiredis are named by forward declaration.
 */
#ifndef PC_RDS_H
#define PC_RDS_H

#include <stddef.h>
#include <stdint.h>

struct config;
struct event_base;
struct redisContext;
struct redisReply;
struct rds;

/*
 * Where and how one link connects.  rds_new() copies the strings.  With
 * sentinels, host:port is not used: the link asks them for the master of
 * master_name (README "Redis failover").
 */
struct rds_params {
	const char	*name;		/* the owner, for logs: "audit" */
	const char	*host;		/* numeric */
	int		 port;
	const char	*username;	/* NULL: AUTH with the password only */
	const char	*password;	/* NULL: no AUTH */
	int		 database;	/* 0: no SELECT */
	int		 connect_timeout_ms;	/* connect, AUTH, SELECT,
						   SUBSCRIBE */
	int		 command_timeout_ms;	/* 0: replies may take any
						   time */
	int		 reconnect_min_ms;
	int		 reconnect_max_ms;
	/* Sentinel; nsentinels 0: host:port is the master. */
	char		*const *sentinels;	/* numeric host:port */
	size_t		 nsentinels;
	const char	*master_name;
	const char	*sentinel_username;
	const char	*sentinel_password;	/* NULL: no AUTH */
};

/*
 * What a link tells its owner.  up: the link is ready (authenticated,
 * database selected; a subscriber link is subscribed to every channel,
 * so whatever is published from now on arrives: the owner re-syncs here
 * what it may have missed while it was down).  down: the link is gone
 * (was_up: it had been ready), not called for rds_free(); the link
 * connects again by itself after a back-off.  message: a subscriber
 * link's message.  Any of them may be NULL.
 */
struct rds_ops {
	void	(*up)(struct rds *, void *);
	void	(*down)(struct rds *, void *, const char *, int);
	void	(*message)(struct rds *, void *, const char *, size_t,
		    const char *, size_t);
};

/*
 * A command's reply; NULL when the link was lost or freed before it came
 * (every command sent gets exactly one call).  Error replies are replies:
 * the owner decides.  The reply is freed after the call.
 */
typedef void	 rds_reply_fn(struct rds *, struct redisReply *, void *);

/* The results of rds_connect_sync(). */
#define RDS_SYNC_DOWN		-1	/* unreachable, timed out */
#define RDS_SYNC_REFUSED	-2	/* AUTH or SELECT refused */

void		 rds_params_init(struct rds_params *, const struct config *,
		    const char *);
struct rds	*rds_new(struct event_base *, const struct rds_params *,
		    const struct rds_ops *, void *);
void		 rds_subscribe(struct rds *, const char *);
void		 rds_start(struct rds *);
void		 rds_free(struct rds *);
void		*rds_data(const struct rds *);
int		 rds_ready(const struct rds *);
uint64_t	 rds_generation(const struct rds *);
const char	*rds_address(const struct rds *);
int		 rds_command_argv(struct rds *, rds_reply_fn *, void *, int,
		    const char **, const size_t *);
int		 rds_command_formatted(struct rds *, rds_reply_fn *, void *,
		    const char *, size_t);
void		 rds_reset(struct rds *, const char *);
const char	*rds_error_kind(const struct redisReply *, char *, size_t);
int		 rds_connect_sync(const struct rds_params *,
		    struct redisContext **, char **);
int		 rds_connect_cli(const struct rds_params *, const char *,
		    struct redisContext **);
int		 rds_startup_check(const struct config *, char **);

#endif /* PC_RDS_H */
