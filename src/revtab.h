/*
 * revtab.h: the revocation table each gateway keeps in memory, a bounded
 * map from subject to a not-before time, plus one not-before time for
 * every subject (`token revoke --all`).  A credential of a subject issued
 * (iat, a secret's created) before the subject's time or the global one
 * is revoked.  Times only grow: setting an earlier time than the one held
 * changes nothing, so that a re-sync racing a message, or messages out of
 * order, can never bring a revoked token back.  Leaf: no libevent, no
 * project header.
 */
#ifndef PC_REVTAB_H
#define PC_REVTAB_H

#include <stddef.h>
#include <stdint.h>

struct revtab;

/* A table of at most max subjects (1..2^24); NULL on allocation failure. */
struct revtab	*revtab_new(size_t max);
void		 revtab_free(struct revtab *);

/*
 * Raise the subject's not-before time to t (seconds).  1 when the table
 * changed, 0 when it already held t or later, -1 when the subject is new
 * and the table is full: the table then counts as overflowed and
 * refuses every credential (revtab_revoked), since a revocation it could
 * not hold must not leave a token alive.
 */
int		 revtab_set(struct revtab *, const char *subject, int64_t t);
/* Raise the global not-before time; 1 when it changed, else 0. */
int		 revtab_set_all(struct revtab *, int64_t t);

/*
 * As revtab_set, for an entry that may be dropped once `until` (seconds)
 * has passed (revtab_sweep): a revoked secret's, which no token outlives
 * (revoke.h).  The later until of two settings is kept.
 */
int		 revtab_set_until(struct revtab *, const char *key,
		    int64_t t, int64_t until);
/* The entry's own time, without the global one (0: none). */
int64_t		 revtab_get(const struct revtab *, const char *key);
/*
 * Drop the entries whose until has passed at now, freeing their slots
 * for new revocations.  How many were dropped (0 as well when the table
 * could not be rebuilt for lack of memory: tried again next time).
 */
size_t		 revtab_sweep(struct revtab *, int64_t now);

/* The subject's effective not-before time (0: none). */
int64_t		 revtab_not_before(const struct revtab *, const char *);
/* Whether a credential of subject issued at iat is revoked. */
int		 revtab_revoked(const struct revtab *, const char *subject,
		    int64_t iat);

size_t		 revtab_count(const struct revtab *);
int64_t		 revtab_all(const struct revtab *);
int		 revtab_overflowed(const struct revtab *);

#endif /* PC_REVTAB_H */
