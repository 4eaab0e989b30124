/*
 * proxy.h: what proxy.c (the upstream HTTP client) and proxy_relay.c (a
 * client request relayed through it, the UPSTREAM stage) share and
 * nothing else includes: struct proxy and the few functions one of the
 * two calls in the other.  The rest of the daemon sees struct proxy as
 * opaque, through src/portcullis.h.
 */
#ifndef PC_PROXY_H
#define PC_PROXY_H

#include "portcullis.h"

struct proxy;
/* A sub-request's answer: status -1 with err on failure. */
typedef void	(*px_sub_cb)(struct proxy *, int, struct headers *,
		    const char *, size_t, const char *);

struct proxy {
	struct req			*req;		/* NULL: a fetch */
	struct pc_ctx			*ctx;
	struct config			*conf;
	const struct proxy_ops		*ops;
	void				*arg;		/* ops' argument */
	int				 method;	/* enum http_method */
	const char			*method_str;
	const struct headers		*fwd;		/* fields to forward */
	const char			*peer;		/* X-Forwarded-For */
	int				 has_body;
	int				 follow;	/* redirects: blob */
	char				 logid[48];	/* "conn.seq" */
	const struct config_upstream	*up;
	struct upstream_state		*us;
	struct origin			 origin;
	char				*upath;
	char				 scope[1200];
	struct uconn			*uc;
	struct proxy			*sub;		/* token, probe */
	struct proxy			*parent;	/* we are its sub */
	px_sub_cb			 on_sub;	/* parent's callback */
	proxy_url_cb			 on_url;	/* a URL fetch's owner */
	void				*url_arg;
	struct evbuffer			*sink;		/* a sub's answer */
	struct event			*deadline;	/* a sub's, whole */
	size_t				 sink_max;
	int				 too_large;
	char				*extra;		/* header lines */
	char				*form;		/* a fetch's POST body */
	size_t				 formlen;
	struct hframe			 rf;
	char				*token;
	int				 auth_tried;
	int				 redirects;
	int				 foreign;
	int				 reconnects;
	int				 got_bytes;
	int				 got_head; /* passed to the owner */
	int				 up_paused;
	int				 up_eof;
	int				 want_pause;
	int				 chunked_out;
	struct evbuffer			*fetch_body;	/* a fetch's PUT */
	/* A manifest answer held until its digest is known (tagpol.c). */
	struct evbuffer			*held;
	struct headers			 held_hdrs;
	int				 held_status;
	/* A small error answer's first bytes, copied as they stream. */
	char				*errcap;
	size_t				 errcaplen;
	struct px_splice		*spl;		/* proxy_splice.c */
	int				 no_splice;	/* tried: not again */
	uint64_t			 sent_ms;	/* request head out */
	int				 retired;	/* proxy_free() */
	struct reap_node		 reap;
};

struct px_splice;

/* proxy.c */
void	px_done(struct proxy *);
void	px_fail(struct proxy *, enum pc_err, const char *);
int	px_target(struct proxy *, const char *, const char *, const char *,
	    const char *, const char *);
void	px_begin(struct proxy *);

/* proxy_relay.c: the request body to the upstream (req->body_sink...). */
void	px_body_head(struct proxy *, struct evbuffer *);
void	px_body_start(struct proxy *);
int	px_splice_ok(struct proxy *);

/* proxy_splice.c: a Content-Length body socket to socket. */
int	px_splice_start(struct proxy *);
void	px_splice_free(struct proxy *);

#endif /* PC_PROXY_H */
