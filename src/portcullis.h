/*
 * portcullis.h: the daemon's one internal header.  Shared structs, forward
 * declarations and prototypes, grouped by file in build order.  Leaf
 * modules (errs, headers, hframe, router, url, challenge, config) have their
 * own small headers and do not include this one.
 */
#ifndef PORTCULLIS_H
#define PORTCULLIS_H

#include <sys/queue.h>
#include <sys/types.h>

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>

#include <event2/event.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/listener.h>

#include "errs.h"
#include "headers.h"
#include "hframe.h"
#include "router.h"
#include "url.h"
#include "config.h"
#include "metrics.h"
#include "principal.h"

#ifndef TAILQ_FOREACH_SAFE	/* glibc's sys/queue.h lacks it */
#define TAILQ_FOREACH_SAFE(var, head, field, tvar)			\
	for ((var) = TAILQ_FIRST(head);					\
	    (var) != NULL && ((tvar) = TAILQ_NEXT(var, field), 1);	\
	    (var) = (tvar))
#endif

#define PC_VERSION		PACKAGE_VERSION
#define PC_API_VERSION_HDR	"Docker-Distribution-Api-Version"
#define PC_API_VERSION		"registry/2.0"

struct ssl_ctx_st;
struct conn;
struct req;
struct uconn;
struct proxy;
struct cache;
struct cache_reader;
struct audit;
struct uploads;
struct referrers;
struct rds;
struct oidc;
struct redisAsyncContext;

/*
 * Deferred frees (conn.c).  An object retired inside a callback (a
 * connection, a request, a proxy, a cache reader) is made inert at once
 * (its events detached, unlinked from its owner) and queued on ctx->dead
 * with its free function; the reaper frees it on the next loop turn.  So
 * no callback ever frees the object that called it: a caller checks the
 * object's retired flag, never whether its memory is still there.
 */
struct reap_node {
	TAILQ_ENTRY(reap_node)	 entry;
	void			(*free)(void *);
	void			*arg;
};

/* Everything mutable hangs off this; no file-scope globals. */
struct pc_ctx {
	struct event_base		*base;
	struct evdns_base		*dns;
	struct config			*conf;
	struct evconnlistener		*listener;
	struct evconnlistener		*admin_listener; /* admin.listen */
	int				 listener_paused; /* at max_conns */
	int				 balance_stopped; /* master.c */
	struct event			*ev_balance;	/* its wake fd */
	struct event			*ev_beat;	/* publishes, looks */
	struct event			*ev_accept_retry; /* after EMFILE */
	struct ssl_ctx_st		*server_tls;
	TAILQ_HEAD(, conn)		 conns;
	TAILQ_HEAD(, conn)		 staged;	/* written at turn's end */
	struct event			*ev_stage;	/* writes them */
	size_t				 nconns;
	uint64_t			 next_conn_id;
	uint64_t			 rid_seed;	/* request ids */
	uint64_t			 rid_next;
	TAILQ_HEAD(, uconn)		 idle;		/* upstream pool */
	size_t				 nidle;
	TAILQ_HEAD(, upstream_state)	 ustates;
	TAILQ_HEAD(, tls_client)	 tls_clients;	/* per CA file */
	struct event			*ev_sigterm;
	struct event			*ev_sigint;
	struct event			*ev_sighup;
	struct event			*ev_sigusr1;	/* log reopen */
	char				*conf_path;
	struct event			*ev_drain;
	int				 draining;
	struct event			*ev_reap;	/* runs conn_reap() */
	TAILQ_HEAD(, reap_node)		 dead;		/* retired objects */
	struct cache			*cache;		/* NULL: no cache */
	struct audit			*audit;		/* NULL: no audit */
	struct oidc			*oidc;		/* NULL: no IdPs */
	struct revoke			*revoke;	/* NULL: no redis */
	struct secrets			*secrets;	/* NULL: no redis */
	struct uploads			*uploads;	/* NULL: none yet */
	struct sso			*sso;		/* browser sign-in */
	struct metrics			*metrics; /* metrics_http.c */
	struct ratelimit		*ratelimit;	/* NULL: no limits */
	struct referrers		*referrers;	/* NULL: none yet */
};

/* log.c */
enum log_level { LOG_ERR, LOG_WARN, LOG_INFO, LOG_DEBUG };
void	log_init(int);
void	log_set_level(int);
int	log_file_open(const char *, char **);
void	log_reopen(void);
int	log_enabled(int);
void	log_msg(int, const char *, ...)
	    __attribute__((format(printf, 2, 3)));
void	log_vmsg(int, const char *, va_list);
__attribute__((noreturn, format(printf, 1, 2)))
void	fatal(const char *, ...);
__attribute__((noreturn, format(printf, 1, 2)))
void	fatalx(const char *, ...);
#define log_err(...)	log_msg(LOG_ERR, __VA_ARGS__)
#define log_warn(...)	log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...)	log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...)	do {						\
	if (log_enabled(LOG_DEBUG))					\
		log_msg(LOG_DEBUG, __VA_ARGS__);			\
} while (0)
uint64_t	now_ms(void);

/* tls.c */
struct ssl_ctx_st	*tls_server_ctx(const struct config *, char **);
struct ssl_ctx_st	*tls_client_ctx(const char *, char **);
struct ssl_st		*tls_client_ssl(struct ssl_ctx_st *, const char *);
struct ssl_ctx_st	*tls_client_for(struct pc_ctx *, const char *);
void			 tls_client_free_all(struct pc_ctx *);
struct ssl_st		*tls_server_ssl(struct ssl_ctx_st *);
char			*tls_peer_subject(struct bufferevent *);
int64_t			 tls_peer_not_after(struct bufferevent *);
int64_t			 tls_peer_not_before(struct bufferevent *);
void			 tls_free_ctx(struct ssl_ctx_st *);
const char		*tls_last_error(struct bufferevent *);

/* server.c */
int	server_run(const char *, char **);
int	server_check_dirs(const struct config *, char **);
int	server_bind_fds(struct pc_ctx *, int *, int *, char **);
void	server_worker(struct pc_ctx *, int, int, int) __attribute__((noreturn));
/* master.c */
int	master_run(struct pc_ctx *, size_t, char **);
/* A worker publishes its slot at least this often (timeouts.worker_stall). */
#define MASTER_BEAT_MS	100
int	master_balance(int, size_t, int, int, size_t, uint64_t);
int	master_balance_fd(int);
void	master_balance_woken(int);
void	server_conn_gone(struct pc_ctx *);

/* conn.c: one client connection, HTTP/1.1 framing and keep-alive. */
struct conn {
	TAILQ_ENTRY(conn)	 entry;
	struct pc_ctx		*ctx;
	struct config		*conf;		/* snapshot at accept */
	uint64_t		 id;
	struct bufferevent	*bev;
	char			 peer[64];
	int			 peer_af;	/* AF_INET, AF_INET6; 0 */
	unsigned char		 peer_addr[16];	/* network order */
	char			*tls_subject;	/* verified client cert */
	int64_t			 tls_not_after;	/* its notAfter; 0: none */
	int64_t			 tls_not_before; /* its notBefore */
	int			 tls;
	int			 admin;		/* on admin.listen */
	struct hframe		 hf;
	struct req		*req;		/* in progress, or NULL */
	uint32_t		 nreqs;
	struct event		*timer;		/* header or idle */
	int			 closing;	/* flush, then free */
	int			 dead;		/* retired: on ctx->dead */
	struct reap_node	 reap;
	int			 read_paused;	/* backpressure */
	int			 saw_tls_hello;	/* TLS on the plain port */
	const char		*close_reason;
	struct event		*ev_process;	/* re-runs the reads */
	int			 eof;		/* client half-closed */
	int			 client_left;	/* closed or failed on us */
	int			 head_started;	/* header timer on */
	uint64_t		 head_start_ms;	/* its first byte came */
	int			 linger;	/* unread bytes may follow */
	int			 lingering;	/* write shut, draining */
	uint64_t		 linger_read;	/* bytes discarded */
	struct evbuffer		*stage;		/* plain: conn_process's */
	int			 staging;	/* output goes to stage */
	int			 staged;	/* on ctx->staged */
	TAILQ_ENTRY(conn)	 stage_entry;
	int			 out_paused;	/* next request waits */
	int			 read_off;	/* conn_read_cb stopped it */
};

void	conn_accept(struct pc_ctx *, evutil_socket_t, struct sockaddr *,
	    int);
void	conn_accept_admin(struct pc_ctx *, evutil_socket_t,
	    struct sockaddr *, int);
void	conn_close(struct conn *, const char *);
void	conn_close_after_write(struct conn *, const char *);
void	conn_req_done(struct conn *);
void	conn_pause_read(struct conn *);
void	conn_resume_read(struct conn *);
void	conn_reap(struct pc_ctx *);
void	conn_reap_later(struct pc_ctx *, struct reap_node *,
	    void (*)(void *), void *);
struct evbuffer	*conn_output(struct conn *);
struct evbuffer	*conn_output_fd(struct conn *);
int	conn_output_full(struct conn *);

/* req.c: the request state machine. */
#define REQ_STATES(X)							\
	X(REQ_ROUTE, "route")						\
	X(REQ_DISPATCH, "dispatch")					\
	X(REQ_CACHE, "cache")						\
	X(REQ_UPSTREAM, "upstream")					\
	X(REQ_RESPOND, "respond")					\
	X(REQ_DONE, "done")
#define REQ_STATE_ENUM(e, s) e,
enum req_state {
	REQ_STATES(REQ_STATE_ENUM)
	REQ__STATE_MAX
};
#undef REQ_STATE_ENUM

/* How the body of the response to the client is framed. */
enum resp_framing {
	RESP_NONE,		/* HEAD, 204, 304 */
	RESP_LENGTH,		/* Content-Length */
	RESP_CHUNKED,
	RESP_CLOSE		/* ends with the connection (HTTP/1.0) */
};

/*
 * A request stage: what works for the request while req.c waits for it
 * (today the cache reader and the proxy; authentication, policy and rate
 * limits as they come).  One stage at a time is the request's,
 * req->stage with req->stage_arg; req.c knows it only through these, and
 * retires it whenever the request ends, fails or loses its client, so a
 * stage has no teardown path of its own.  Each gets stage_arg:
 *
 *	writable	the client's output drained below the low watermark:
 *			send more.  NULL: the stage does not send.
 *	client_gone	the client went away: cancel what is pending (an
 *			upstream request, a Redis reply, a key fetch); free
 *			follows at once.  NULL: free does it all.
 *	free		retire the stage's state, once: inert at once (no
 *			event or reply reaches it any more, unlinked from
 *			what it waited on), its memory freed on the reaper's
 *			next turn (conn_reap_later).
 *
 * A stage ends in one of three ways: it answers (req_fail(), or
 * req_send_head() ... req_end_response()); it lets the request on to the
 * next stage (req_stage_next()); or req.c retires it.  A call that can end
 * the request (req_fail, req_end_response, req_abort) retires the request
 * and its stage before it returns: the caller returns without touching
 * either again (their memory is still valid; `retired` says so).
 */
struct req_stage_ops {
	const char	*name;
	void		(*writable)(void *);
	void		(*client_gone)(void *);
	void		(*free)(void *);
};

struct req {
	struct conn		*c;
	struct config		*conf;
	uint32_t		 seq;
	enum req_state		 state;
	uint64_t		 start_ms;
	uint64_t		 done_ms;	/* set once, by req_free() */
	struct hframe_msg	*msg;		/* the conn's parsed head */
	const char		*method;
	char			*path;		/* without the query */
	char			*query;		/* NULL or after '?' */
	struct oci_route	 route;
	int			 is_v2;
	const struct config_upstream *up;
	char			 upname[OCI_NAME_MAX + 16];
	char			 prefix[64];	/* "up1/" or "" */
	char			 ns[256];
	char			 request_id[40];
	int			 has_body;
	int			 body_done;	/* request body fully read */
	int			 keep_alive;
	int			 status;
	enum pc_err		 err;
	/* The upstream's own OCI error code, for the record; "": none. */
	char			 up_error[48];
	enum resp_framing	 framing;
	uint64_t		 bytes_in;
	uint64_t		 bytes_out;
	int			 head_sent;
	int			 retired;	/* over: freed by the reaper */
	struct reap_node	 reap;
	const struct req_stage_ops *stage;	/* working for it, or NULL */
	void			*stage_arg;
	/* "hit", "miss", "stale", "coalesced"; NULL: cache not involved. */
	const char		*cache_status;
	/* "allow" or "deny" once decided (policy); NULL: not decided. */
	const char		*decision;
	const char		*rule;		/* deciding rule id, or NULL */
	struct principal	 principal;	/* who asks (identity stage) */
	/* A verified gateway token's identity and access; NULL: none. */
	struct tok_ident	*tok;
	/* A checked Basic password's identity (credential.c); NULL: none. */
	struct tok_ident	*login;
	char			*tok_form;	/* POST /token form, waiting */
	size_t			 tok_formlen;
	/* The exchange's refresh token jti (token_idp.c); NULL: none. */
	const char		*idp_jti;
	/* Why credentials were refused (a fixed name); NULL: they were not. */
	const char		*auth_failure;
	int			 bearer_invalid;	/* answer invalid_token */
	int			 audit_admitted;	/* reserved a record */
	/* Where body bytes go while the request body is read. */
	int			(*body_sink)(struct req *, struct evbuffer *,
				    size_t);
	int			(*body_sink_data)(struct req *, const char *,
				    size_t);
	void			(*body_end)(struct req *);
	int			 body_ready;	/* sink may take bytes */
	/* The body read whole before UPSTREAM (tagpol.c); sent from here. */
	struct evbuffer		*body_read;
	int			 tag_checked;	/* immutable tag check passed */
	int			 rl_checked;	/* rate limits decided */
	/* The strictest rule's RateLimit-Limit, -Remaining; "": none. */
	char			 rl_limit[48];
	char			 rl_remaining[48];
	int			 cap_checked;	/* upcap.c decided */
	struct upstream_state	*cap_us;	/* holds a slot of it */
	int			 upload_checked; /* uploads.c asked Redis */
	int			 rf_checked;	/* DELETE read for a subject */
};

void	req_start(struct conn *, struct hframe_msg *);
void	req_make_id(struct pc_ctx *, char *);
void	req_identity_done(struct req *);
void	req_free(struct req *);
void	req_set_state(struct req *, enum req_state);
void	req_fail(struct req *, enum pc_err, const char *);
void	req_fail_with(struct req *, enum pc_err, const char *,
	    const struct headers *);
void	req_fail_msg(struct req *, enum pc_err, const char *, const char *,
	    const struct headers *);
void	req_respond_simple(struct req *, int, const char *, const char *,
	    const struct headers *);
int	req_send_head(struct req *, int, struct headers *, enum resp_framing,
	    int64_t);
int	req_send_body(struct req *, struct evbuffer *, size_t);
int	req_send_body_data(struct req *, const char *, size_t);
#define REQ_FILE_NO_SENDFILE	0x1	/* map and write instead */
int	req_send_file(struct req *, int, uint64_t, uint64_t, int);
void	req_end_response(struct req *);
void	req_abort(struct req *, const char *);
void	req_client_gone(struct req *);
void	req_client_writable(struct req *);
void	req_stage_set(struct req *, const struct req_stage_ops *, void *);
void	req_stage_end(struct req *);
void	req_stage_next(struct req *);
void	req_body_available(struct req *);
const char *req_state_name(enum req_state);
int	req_external_base(struct req *, char *, size_t);

/* upstream.c: connections to upstreams, with a keep-alive pool. */
struct origin {
	char	host[256];
	int	port;
	int	tls;
	char	*ca_file;	/* borrowed from the config */
	int	restricted;	/* dial public addresses only (netaddr.h) */
};

struct uconn {
	TAILQ_ENTRY(uconn)	 entry;
	struct pc_ctx		*ctx;
	struct bufferevent	*bev;
	struct origin		 origin;
	char			 key[300];
	uint64_t		 idle_since;
	int			 connected;
	int			 reused;
	char			 why[384];	/* TLS failure, refusal */
	int			 err;		/* to report from the timer */
	struct uconn_dns	*dns;		/* resolving */
	void			(*on_connect)(struct uconn *, int, void *);
	void			*arg;
	struct event		*timer;
};

struct uconn	*uconn_get(struct pc_ctx *, const struct origin *,
		    int, void (*)(struct uconn *, int, void *), void *);
void		 uconn_release(struct uconn *);
void		 uconn_free(struct uconn *);
void		 uconn_pool_flush(struct pc_ctx *);
#define UCONN_READ_CHUNK	(256 * 1024)
void		 uconn_read_more(struct uconn *, size_t);
void		 bev_read_more(struct bufferevent *, size_t);
void		 origin_from_url(struct origin *, const struct url *,
		    char *);
int		 origin_hostport(const struct origin *, char *, size_t);

/* upstream_auth.c: tokens for upstreams that answer with a challenge. */
struct upstream_state {
	TAILQ_ENTRY(upstream_state)	 entry;
	char				 name[64];
	int				 auth_known;	/* 0 unknown, 1 known */
	int				 bearer;	/* challenge is Bearer */
	char				 realm[1024];
	char				 service[256];
	TAILQ_HEAD(utokenq, utoken)	 tokens;
	size_t				 ntokens;
	char				 rl_limit[64];	/* RateLimit-Limit */
	char				 rl_remaining[64];
	uint64_t			 rl_seen_ms;
	/* upcap.c: slots in use, the cap, the waiters (FIFO). */
	int				 cap_inflight;
	int				 cap_max;
	size_t				 cap_queued;
	struct upcap_wait		*cap_head;
	struct upcap_wait		*cap_tail;
};

struct upstream_state *upstream_state_get(struct pc_ctx *,
		    const struct config_upstream *);
void		 upstream_state_free_all(struct pc_ctx *);
const char	*uauth_cached(struct upstream_state *, const char *);
void		 uauth_learn(struct upstream_state *, const char *);
int		 uauth_basic(const struct config_upstream *, char *, size_t);
void		 uauth_drop(struct upstream_state *, const char *,
		    const char *);
int		 uauth_token_request(const struct config_upstream *,
		    const struct upstream_state *, const char *, struct url *,
		    struct origin *, char *, size_t, char *, size_t);
const char	*uauth_store(struct upstream_state *, const char *,
		    const char *, size_t, char *, size_t);

/* proxy.c: one request forwarded to an upstream and its answer relayed. */
/*
 * What a proxy tells its owner: req.c's response writer for proxy_start(),
 * the cache for proxy_fetch_new().  The owner may retire the proxy
 * (proxy_free) inside any of these: proxy.c checks px->retired when they
 * return and then delivers nothing more (the memory stays valid until the
 * reaper's next turn).  done and fail are the last calls; the owner
 * retires the proxy in them or later.
 */
struct proxy_ops {
	/* The response head: 0 to go on, -1 to stop (px retired). */
	int	(*head)(void *, struct hframe_msg *);
	/* Move n body bytes out of the buffer: 0, 1 pauses, -1 stops. */
	int	(*body)(void *, struct evbuffer *, size_t);
	/* Decoded (chunked) body bytes: 0, 1 pauses, -1 fails the parse. */
	int	(*body_data)(void *, const char *, size_t);
	/* The answer is complete; the upstream connection is let go. */
	void	(*done)(void *);
	/* It failed (detail for the client and log). */
	void	(*fail)(void *, enum pc_err, const char *);
};
void	proxy_start(struct req *);
struct proxy *proxy_fetch_new(struct pc_ctx *, struct config *,
	    const struct config_upstream *, int, const char *, const char *,
	    const char *, const struct headers *, const struct proxy_ops *,
	    void *, const char *);
struct proxy *proxy_fetch_path(struct pc_ctx *, struct config *,
	    const struct config_upstream *, int, const char *, const char *,
	    const struct headers *, const struct proxy_ops *, void *,
	    const char *);
void	proxy_fetch_body(struct proxy *, struct evbuffer *);
void	proxy_fetch_start(struct proxy *);
/* A fetch's whole answer: status -1 with err on failure (proxy_fetch_url). */
typedef void	(*proxy_url_cb)(void *, int, const struct headers *,
		    const char *, size_t, const char *);
struct proxy *proxy_fetch_url(struct pc_ctx *, struct config *,
	    const struct config_upstream *, const struct url *,
	    const struct origin *, const char *, size_t, proxy_url_cb, void *,
	    const char *);
void	proxy_fetch_set_form(struct proxy *, const char *, size_t);
void	proxy_resume(struct proxy *);
void	proxy_free(struct proxy *);

/* cache.c, cache_fill.c, cache_serve.c: the pull-through cache. */
struct cache	*cache_open(struct pc_ctx *, const struct config *, char **);
void		 cache_close(struct cache *);
/* master.c: lock the cache directory and empty tmp/ for the workers;
 * the lock's fd, -2 without a cache, or -1 with *cause. */
int		 cache_dir_prepare(const struct config *, char **);
/* master.c, before forking: the workers' shared byte total. */
int		 cache_shared_map(void);
int		 cache_wants(struct req *);
void		 cache_start(struct req *);
void		 cache_invalidate_tag(struct req *);
void		 cache_invalidate_tag_name(struct pc_ctx *,
		    const struct config_upstream *, const char *,
		    const char *);
void		 cache_invalidate_link(struct req *);

/* catalog.c: /v2/_catalog filtered by the policy. */
void		 catalog_start(struct req *);

/* taglist.c: tags/list sorted and paged by the gateway. */
void		 taglist_start(struct req *);

/* uploads.c: chunked uploads' offsets and latest Locations. */
void		 uploads_note(struct req *, int, const struct headers *,
		    const char *);
int		 uploads_answer(struct req *);
void		 uploads_start(struct pc_ctx *);
void		 uploads_free(struct uploads *);

/* referrers.c: the referrers API, also in front of an upstream without it. */
void		 referrers_start(struct req *);
int		 referrers_push_wants(struct req *);
int		 referrers_delete_wants(struct req *);
void		 referrers_delete_start(struct req *);
void		 referrers_push_start(struct req *);
void		 referrers_free(struct referrers *);

/* tagpol.c: immutable tags, blocked digests reached through a tag. */
int		 tagpol_wants(struct req *);
void		 tagpol_start(struct req *);
void		 tagpol_req_done(struct req *);
int		 tagpol_blocked(struct req *, const char *);
int		 tagpol_digest(const char *, struct evbuffer *, char *, size_t);

/* audit.c, audit_spool.c, audit_redis.c: the audit writer. */
struct audit	*audit_new(struct pc_ctx *, char **);
void		 audit_wal_flush(struct audit *);
void		 audit_free(struct audit *);
int		 audit_admit(struct req *);
void		 audit_request(struct req *);
void		 audit_framing(struct conn *, int, enum pc_err, const char *,
		    uint64_t, uint64_t);
struct rds	*audit_redis(struct pc_ctx *);
const char	*audit_script(void);

/* sso.c: sign-in for people in a browser (identity.sso). */
int	sso_wants(const struct req *);
void	sso_start(struct req *);
void	sso_init(struct pc_ctx *);
void	sso_free(struct pc_ctx *);

/* audit_query.c: audit query, tail and generate (CLI). */
int		 audit_cli(int, char **);

/* policy_cli.c */
int		 policy_cli(int, char **);

/* keygen.c: portcullis keygen. */
int		 keygen_cli(int, char **);

/* rds_cli.c: portcullis redis check|subscribe. */
int		 rds_cli(int, char **);

/* admin.c: GET /admin/audit. */
void		 audit_admin(struct req *);

/* identity.c: who asks (the request's principal). */
int		 identity_from_conn(struct req *);

/* token_verify.c */
/*
 * What a verified gateway token says, shared by the verified-token cache
 * and the requests using it (refcounted; strings live as long as it).
 */
struct tok_ident {
	int			 refcnt;
	int			 refresh;	/* a refresh token */
	enum auth_method	 method;	/* how its subject logged in */
	char			*subject;	/* "" when anonymous */
	char			**groups;
	size_t			 ngroups;
	struct scope_set	*access;	/* access tokens; else NULL */
	/* Verified IdP claims (strings owned here), for claim rules. */
	struct principal_claim	*claims;
	size_t			 nclaims;
	int64_t			 iat;		/* for revocation */
	int64_t			 exp;
	char			*secret_id;	/* method secret: which */
	/* A refresh token's jti when a provider session backs it. */
	char			*idp_link;
};
const char	*token_verify(struct req *, const char *, size_t, int,
		    struct tok_ident **);
void		 token_principal(struct req *, struct tok_ident *);
void		 tok_ident_unref(struct tok_ident *);
int		 tok_ident_add_claim(struct tok_ident *, const char *,
		    const char *, size_t);
size_t		 token_cache_revoke(const char *, int64_t);
void		 token_free(void);
void		 token_listen(struct pc_ctx *);

/* token.c */
void		 token_start(struct req *);
void		 token_login_principal(struct req *, struct tok_ident *);
int		 token_basic_decode(const char *, char *, size_t,
		    const char **, const char **, size_t *);
int		 cred_is_idp_jwt(const struct config *, const char *,
		    size_t);
int		 cred_is_credential(const struct config *, const char *,
		    size_t);

/* credential.c */
enum cred_result { CRED_OK, CRED_FAIL, CRED_WAIT };
typedef void	(*cred_done_fn)(struct req *, struct tok_ident *,
		    const char *);
enum cred_result cred_check(struct req *, const char *, const char *,
		    size_t, struct tok_ident **, const char **, cred_done_fn);
enum cred_result cred_check_secret_id(struct req *, const char *,
		    const char **, cred_done_fn);
enum cred_result cred_check_idp_now(struct req *, const char *, size_t,
		    struct tok_ident **, const char **);
/* The verified IdP token cache (credential.c). */
struct cred_cache_stats {
	size_t		 entries;
	uint64_t	 hits;		/* served from it */
	uint64_t	 misses;	/* verified in full */
	uint64_t	 key_drops;	/* dropped: its key left the set */
};
void		 cred_cache_stats(struct cred_cache_stats *);
size_t		 cred_cache_revoke(const char *, int64_t);
size_t		 cred_cache_clear(void);
void		 cred_cache_free(void);
void		 token_jwks(struct req *);
void		 token_discovery(struct req *);
const struct config_upstream *
		 req_prefix_upstream(const struct config *, const char *,
		    const char **);
int		 req_map_name(const struct config_upstream *, const char *,
		    char *, size_t);
int		 req_map_from(const struct req *, const char *, char *, size_t);

/* metrics_http.c: GET /metrics, GET /readyz, the metrics hooks. */
void		 metrics_start(struct pc_ctx *);
void		 metrics_stop(struct pc_ctx *);
int		 metrics_workers_map(size_t, size_t);
void		 metrics_worker_attach(struct pc_ctx *, int);
void		 metrics_worker_detach(void);
void		 metrics_http(struct req *);
void		 metrics_request_done(struct req *);
void		 metrics_upstream_head(struct pc_ctx *, const char *, int,
		    uint64_t);
void		 metrics_upstream_error(struct pc_ctx *, const char *);
void		 metrics_count_named(struct pc_ctx *, enum metric_id,
		    const char *);

/* authz.c: the policy gate. */
int		 authz_request(struct req *);
int		 authz_action(const struct req *);
int		 authz_base(struct req *);
int		 authz_admin(struct req *);
int		 authz_admin_allowed(const struct req *);
int		 authz_upstream_challenge(struct req *, char *, size_t);
void		 authz_config_loaded(const struct config *);

/* ratelimit.c: the rate-limit gate (after the policy gate). */
struct ratelimit *ratelimit_new(struct pc_ctx *);
void		 ratelimit_free(struct ratelimit *);
int		 ratelimit_request(struct req *);
int		 ratelimit_would_hit(struct req *);

/* upcap.c: the cap on requests an upstream serves at once. */
int		 upcap_request(struct req *);
void		 upcap_req_done(struct req *);

#endif
