/*
 * rds_int.h: what rds.c (the link) and rds_sentinel.c (finding the master
 * through Redis Sentinel) share and nothing else includes: the link's
 * state and struct, and the few functions one of them calls in the
 * other.  The rest of the daemon sees only src/rds.h.
 */
#ifndef PC_RDS_INT_H
#define PC_RDS_INT_H

#include <hiredis/hiredis.h>
#include <hiredis/async.h>

#include "rds.h"

enum rds_state {
	RDS_DOWN,
	RDS_RESOLVING,		/* asking a sentinel */
	RDS_CONNECTING,
	RDS_AUTH,
	RDS_SELECT,
	RDS_ROLE,		/* checking that it is the master */
	RDS_SUBSCRIBING,
	RDS_READY
};

/* A command sent, waiting for its reply (in the order sent). */
struct rds_cmd {
	TAILQ_ENTRY(rds_cmd)	 entry;
	struct rds		*l;
	rds_reply_fn		*fn;
	void			*arg;
	uint64_t		 sent_ms;
};

struct rds {
	struct event_base	*base;
	char			*name;
	char			*host;
	char			*username;
	char			*password;
	char			 address[300];
	struct rds_params	 p;
	const struct rds_ops	*ops;
	void			*arg;
	redisAsyncContext	*rc;
	enum rds_state		 state;
	uint64_t		 gen;		/* connections made */
	uint64_t		 since_ms;	/* this connection's start */
	uint64_t		 up_ms;		/* when it was last up */
	int			 backoff_ms;
	int			 started;
	struct event		*ev_retry;
	struct event		*ev_timer;	/* the nearest deadline */
	TAILQ_HEAD(, rds_cmd)	 cmds;
	char			**chans;
	size_t			 nchans;
	size_t			 nsubscribed;
	char			 lasterr[1024];	/* last logged failure */
	redisAsyncContext	*sc;		/* to a sentinel */
	size_t			 sidx;		/* the sentinel asked */
	char			**sentinels;
	char			*master_name;
	char			*susername;
	char			*spassword;
};

#define RDS_SENTINEL_CMD	"get-master-addr-by-name"

/* rds.c */
char		*rds_strdup(const char *);
void		 rds_format_address(char *, size_t, const char *, int);
void		 rds_error_text(char *, size_t, const redisReply *,
		    const char *);
void		 rds_arm(struct rds *);
void		 rds_log_failure(struct rds *, const char *);
void		 rds_lost(struct rds *, const char *, int);
void		 rds_selected(struct rds *);
void		 rds_connect_master(struct rds *);
int		 rds_connect_sync_at(const struct rds_params *,
		    struct redisContext **, char **);

/* rds_sentinel.c */
void		 rds_ask_sentinel(struct rds *);
void		 rds_sentinel_next(struct rds *, const char *, int);
void		 rds_on_role(redisAsyncContext *, void *, void *);
int		 rds_connect_sync_sentinel(const struct rds_params *,
		    struct redisContext **, char **);

#endif /* PC_RDS_INT_H */
