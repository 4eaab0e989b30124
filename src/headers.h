/*
 * headers.h: an ordered list of HTTP header fields.  Repeated fields are
 * kept as separate entries in arrival order (docker sends several Accept
 * lines and they must all reach the upstream).  Names compare without
 * regard to case.  Leaf: no libevent, no project header.
 */
#ifndef PC_HEADERS_H
#define PC_HEADERS_H

#include <stddef.h>

struct header {
	char	*name;		/* points into one allocation with value */
	char	*value;
	size_t	 nlen;
	size_t	 vlen;
};

struct headers {
	struct header	*v;
	size_t		 n;
	size_t		 cap;
	size_t		 bytes;		/* sum of name and value lengths */
};

void		 headers_init(struct headers *);
void		 headers_clear(struct headers *);
int		 headers_add(struct headers *, const char *, size_t,
		    const char *, size_t);
int		 headers_append_value(struct headers *, const char *, size_t);
const char	*headers_get(const struct headers *, const char *);
size_t		 headers_count(const struct headers *, const char *);
size_t		 headers_del(struct headers *, const char *);
int		 headers_set(struct headers *, const char *, const char *);
int		 headers_has_token(const struct headers *, const char *,
		    const char *);
int		 headers_hop_by_hop(const char *);

#endif
