/*
 * revtab.c: the revocation table (revtab.h), an open-addressing hash
 * table sized at creation for max subjects at a load of at most one half,
 * so that no insertion allocates a slot array later.  Leaf.
 */
#include <stdlib.h>
#include <string.h>

#include "revtab.h"

#define REVTAB_MAX	(1u << 24)

struct revtab_slot {
	char		*subject;	/* NULL: empty */
	int64_t		 not_before;
	int64_t		 until;		/* 0: kept for good */
};

struct revtab {
	struct revtab_slot	*slots;
	size_t			 nslots;	/* a power of two */
	size_t			 count;
	size_t			 max;
	int64_t			 all;
	int			 overflowed;
};

/* FNV-1a: subjects are chosen by operators and IdPs, not by clients. */
static size_t
revtab_hash(const char *s)
{
	uint64_t	 h = 1469598103934665603ULL;

	for (; *s != '\0'; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ULL;
	}
	return ((size_t)h);
}

struct revtab *
revtab_new(size_t max)
{
	struct revtab	*t;
	size_t		 n = 4;

	if (max < 1 || max > REVTAB_MAX)
		return (NULL);
	while (n < max * 2)
		n <<= 1;
	if ((t = calloc(1, sizeof(*t))) == NULL)
		return (NULL);
	if ((t->slots = calloc(n, sizeof(*t->slots))) == NULL) {
		free(t);
		return (NULL);
	}
	t->nslots = n;
	t->max = max;
	return (t);
}

void
revtab_free(struct revtab *t)
{
	size_t	 i;

	if (t == NULL)
		return;
	for (i = 0; i < t->nslots; i++)
		free(t->slots[i].subject);
	free(t->slots);
	free(t);
}

static struct revtab_slot *
revtab_find(const struct revtab *t, const char *subject)
{
	size_t	 i = revtab_hash(subject) & (t->nslots - 1);

	/* At most half full: an empty slot ends every probe. */
	while (t->slots[i].subject != NULL) {
		if (strcmp(t->slots[i].subject, subject) == 0)
			return (&t->slots[i]);
		i = (i + 1) & (t->nslots - 1);
	}
	return (&t->slots[i]);
}

static int
revtab_put(struct revtab *t, const char *subject, int64_t nb, int64_t until)
{
	struct revtab_slot	*s = revtab_find(t, subject);

	if (s->subject != NULL) {
		/* Kept for good wins; else the later end. */
		if (s->until != 0 && (until == 0 || until > s->until))
			s->until = until;
		if (s->not_before >= nb)
			return (0);
		s->not_before = nb;
		return (1);
	}
	if (t->count >= t->max || (s->subject = strdup(subject)) == NULL) {
		t->overflowed = 1;
		return (-1);
	}
	s->not_before = nb;
	s->until = until;
	t->count++;
	return (1);
}

int
revtab_set(struct revtab *t, const char *subject, int64_t nb)
{
	return (revtab_put(t, subject, nb, 0));
}

int
revtab_set_until(struct revtab *t, const char *key, int64_t nb,
    int64_t until)
{
	return (revtab_put(t, key, nb, until > 0 ? until : 1));
}

int64_t
revtab_get(const struct revtab *t, const char *key)
{
	const struct revtab_slot	*s = revtab_find(t, key);

	return (s->subject != NULL ? s->not_before : 0);
}

size_t
revtab_sweep(struct revtab *t, int64_t now)
{
	struct revtab_slot	*old = t->slots, *ns, *s;
	size_t			 i, n = 0;

	for (i = 0; i < t->nslots; i++)
		if (old[i].subject != NULL && old[i].until != 0 &&
		    old[i].until <= now)
			n++;
	if (n == 0)
		return (0);
	/*
	 * Linear probing: removing a slot could cut the probe chain of
	 * another, so the survivors are placed again in a new array.
	 */
	if ((ns = calloc(t->nslots, sizeof(*ns))) == NULL)
		return (0);
	t->slots = ns;
	for (i = 0; i < t->nslots; i++) {
		if (old[i].subject == NULL)
			continue;
		if (old[i].until != 0 && old[i].until <= now) {
			free(old[i].subject);
			t->count--;
			continue;
		}
		s = revtab_find(t, old[i].subject);
		*s = old[i];
	}
	free(old);
	return (n);
}

int
revtab_set_all(struct revtab *t, int64_t nb)
{
	if (t->all >= nb)
		return (0);
	t->all = nb;
	return (1);
}

int64_t
revtab_not_before(const struct revtab *t, const char *subject)
{
	const struct revtab_slot	*s = revtab_find(t, subject);

	if (s->subject != NULL && s->not_before > t->all)
		return (s->not_before);
	return (t->all);
}

int
revtab_revoked(const struct revtab *t, const char *subject, int64_t iat)
{
	if (t->overflowed)
		return (1);
	return (iat < revtab_not_before(t, subject));
}

size_t
revtab_count(const struct revtab *t)
{
	return (t->count);
}

int64_t
revtab_all(const struct revtab *t)
{
	return (t->all);
}

int
revtab_overflowed(const struct revtab *t)
{
	return (t->overflowed);
}
