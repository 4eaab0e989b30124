/*
 * docfetch.h: one client-less fetch of a bounded document from an
 * upstream (docfetch.c), for the stages that answer from what the
 * upstream says rather than relaying it: the catalog's and the tag
 * list's pages, the referrers answers and index writes.
 */
#ifndef PC_DOCFETCH_H
#define PC_DOCFETCH_H

#include "portcullis.h"

#define DOCFETCH_ERRBODY_MAX	16384	/* of an answer not 2xx */

/* A fetch and, once its owner's done callback ran, its answer. */
struct docfetch {
	struct proxy		*px;		/* NULL: none in flight */
	struct headers		 fwd;		/* the one field sent */
	struct headers		 head;		/* the answer's fields */
	struct evbuffer		*body;
	size_t			 max;		/* of a 2xx body */
	const char		*too_large;	/* the detail when over */
	int			 status;
	void			(*done)(void *, enum pc_err, const char *);
	void			*owner;
};

void		 docfetch_init(struct docfetch *, void (*)(void *,
		    enum pc_err, const char *), void *);
void		 docfetch_stop(struct docfetch *);
void		 docfetch_clear(struct docfetch *);
void		 docfetch_send(struct docfetch *, struct pc_ctx *,
		    struct config *, const struct config_upstream *,
		    const char *, int, const char *, const char *,
		    const char *, const char *, struct evbuffer *, size_t,
		    const char *);
const char	*docfetch_field(const struct docfetch *, const char *);
const char	*docfetch_text(struct docfetch *, size_t *);
void		 docfetch_fail_status(struct req *, const struct docfetch *,
		    const char *, enum pc_err);

#endif /* PC_DOCFETCH_H */
