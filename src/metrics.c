/*
 * metrics.c: the metrics registry declared in metrics.h, and its text
 * exposition (Prometheus 0.0.4: HELP and TYPE once per metric, label
 * values escaped, histogram buckets cumulative up to +Inf, then _sum and
 * _count).  Leaf: no libevent, no project header, no I/O; the caller
 * owns the registry and hands the rendered text on.
 *
 * Guarantees: every array is sized in metrics_new(), so an update never
 * allocates and never fails; a label value from the configuration or a
 * peer-independent constant name is bounded by the name tables, so the
 * number of series is fixed at start whatever the traffic.
 */
#include <sys/types.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"

#define METRICS_NAMES(e, n)	n,
static const char *const metrics_kind_names[] = {
	METRICS_KINDS(METRICS_NAMES) NULL
};
static const char *const metrics_method_names[] = {
	METRICS_METHODS(METRICS_NAMES) NULL
};
static const char *const metrics_class_names[] = {
	METRICS_CLASSES(METRICS_NAMES) NULL
};
static const char *const metrics_cache_names[] = {
	METRICS_CACHE(METRICS_NAMES) NULL
};
static const char *const metrics_auth_names[] = {
	METRICS_AUTH(METRICS_NAMES) NULL
};
static const char *const metrics_audit_names[] = {
	METRICS_AUDIT(METRICS_NAMES) NULL
};
#undef METRICS_NAMES

struct metrics_dimdecl {
	const char		*label;
	const char *const	*values;	/* NULL: dynamic */
};

#define METRICS_DIM_DECL(e, n, v)	{ n, v },
static const struct metrics_dimdecl metrics_dims[D__MAX] = {
	METRICS_DIMS(METRICS_DIM_DECL)
};
#undef METRICS_DIM_DECL

struct metrics_lsetdecl {
	size_t			 n;
	enum metrics_dim	 d[METRICS_LABELS_MAX];
};

#define METRICS_LSET_DECL(e, n, d0, d1, d2)	{ n, { d0, d1, d2 } },
static const struct metrics_lsetdecl metrics_lsets[L__MAX] = {
	METRICS_LSETS(METRICS_LSET_DECL)
};
#undef METRICS_LSET_DECL

#define METRICS_DECL(e, t, n, l, h)	{ n, t, l, h },
static const struct metrics_decl metrics_decls[M__MAX] = {
	METRICS_TABLE(METRICS_DECL)
};
#undef METRICS_DECL

static const uint64_t metrics_buckets[METRICS_NBUCKETS] = METRICS_BUCKETS_US;

/* A histogram series: the buckets, +Inf, the sum (us), the count. */
#define METRICS_HSLOTS		(METRICS_NBUCKETS + 3)
#define METRICS_HSUM		(METRICS_NBUCKETS + 1)
#define METRICS_HCOUNT		(METRICS_NBUCKETS + 2)

struct metrics {
	size_t		 cap;		/* names per dynamic dim */
	size_t		 card[D__MAX];	/* values (+ other) */
	char		*names[D__MAX];	/* cap x (NAME_MAX + 1) */
	size_t		 nnames[D__MAX];
	size_t		 nseries[M__MAX];
	size_t		 first[M__MAX];	/* its first series */
	size_t		 off[M__MAX];	/* its first value */
	uint64_t	*v;
	size_t		 nv;
	unsigned char	*seen;		/* per series */
	size_t		 nseen;
	size_t		 maplen;	/* shared: all in one mapping */
};

const struct metrics_decl *
metrics_decl(enum metric_id id)
{
	return (&metrics_decls[id]);
}

const char *
metrics_type_name(enum metrics_type t)
{
	switch (t) {
	case MT_COUNTER:
		return ("counter");
	case MT_GAUGE:
		return ("gauge");
	case MT_HISTOGRAM:
		return ("histogram");
	}
	return ("untyped");
}

void
metrics_label_names(enum metric_id id, char *buf, size_t len)
{
	const struct metrics_lsetdecl	*ls = &metrics_lsets[
	    metrics_decls[id].lset];
	size_t				 i, o = 0;
	int				 n;

	if (len == 0)
		return;
	buf[0] = '\0';
	for (i = 0; i < ls->n; i++) {
		n = snprintf(buf + o, len - o, "%s%s", i > 0 ? ", " : "",
		    metrics_dims[ls->d[i]].label);
		if (n < 0 || (size_t)n >= len - o)
			return;
		o += (size_t)n;
	}
}

static size_t
metrics_count(const char *const *v)
{
	size_t	n = 0;

	while (v[n] != NULL)
		n++;
	return (n);
}

/* A new, zeroed registry; dynamic dimensions hold label_values names. */
struct metrics *
metrics_new(size_t label_values)
{
	struct metrics			*m;
	const struct metrics_lsetdecl	*ls;
	size_t				 d, i, j, n;

	if (label_values == 0 || label_values > 65536)
		return (NULL);
	if ((m = calloc(1, sizeof(*m))) == NULL)
		return (NULL);
	m->cap = label_values;
	for (d = 0; d < D__MAX; d++) {
		if (metrics_dims[d].values != NULL) {
			m->card[d] = metrics_count(metrics_dims[d].values);
			continue;
		}
		m->card[d] = label_values + 1;	/* METRICS_OTHER last */
		if ((m->names[d] = calloc(label_values + 1,
		    METRICS_NAME_MAX + 1)) == NULL)
			goto fail;
		snprintf(m->names[d] + label_values * (METRICS_NAME_MAX + 1),
		    METRICS_NAME_MAX + 1, "%s", METRICS_OTHER);
	}
	for (i = 0; i < M__MAX; i++) {
		ls = &metrics_lsets[metrics_decls[i].lset];
		n = 1;
		for (j = 0; j < ls->n; j++)
			n *= m->card[ls->d[j]];
		m->nseries[i] = n;
		m->first[i] = m->nseen;
		m->off[i] = m->nv;
		m->nseen += n;
		m->nv += n * (metrics_decls[i].type == MT_HISTOGRAM ?
		    METRICS_HSLOTS : 1);
	}
	if ((m->v = calloc(m->nv, sizeof(*m->v))) == NULL ||
	    (m->seen = calloc(m->nseen, 1)) == NULL)
		goto fail;
	return (m);
fail:
	metrics_free(m);
	return (NULL);
}

static const char *metrics_dyn_name(const struct metrics *,
		    enum metrics_dim, size_t);

/*
 * The same registry in one MAP_SHARED mapping, for a worker's slot: the
 * master makes one per worker before forking (so a worker started again
 * goes on counting where the dead one stopped, and never backwards), and
 * any worker reads them all to render the sum (metrics_merge).  NULL on
 * failure.
 */
struct metrics *
metrics_new_shared(size_t label_values)
{
	struct metrics	*h, *m;
	size_t		 d, len, nlen, off;
	char		*p;

	if ((h = metrics_new(label_values)) == NULL)
		return (NULL);
	nlen = (h->cap + 1) * (METRICS_NAME_MAX + 1);
	len = sizeof(*m) + h->nv * sizeof(*h->v) + h->nseen + D__MAX * nlen;
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED |
	    MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) {
		metrics_free(h);
		return (NULL);
	}
	m = (struct metrics *)p;
	*m = *h;
	m->maplen = len;
	off = sizeof(*m);
	m->v = (uint64_t *)(p + off);	/* 8-aligned: the struct is */
	off += h->nv * sizeof(*h->v);
	m->seen = (unsigned char *)(p + off);
	off += h->nseen;
	for (d = 0; d < D__MAX; d++) {
		if (h->names[d] == NULL)
			continue;
		m->names[d] = p + off;
		memcpy(m->names[d], h->names[d], nlen);
		off += nlen;
	}
	metrics_free(h);
	return (m);
}

/*
 * How a gauge adds up over workers: what each holds (connections, fills,
 * spool and queue) sums; what each sees of one shared thing (the cache,
 * an upstream's quota, a link, readiness) is the largest.
 */
static int
metrics_gauge_sums(enum metric_id id)
{
	switch (id) {
	case M_CONNS_OPEN:
	case M_CACHE_FILLS:
	case M_AUDIT_SPOOL_BYTES:
	case M_AUDIT_QUEUE:
		return (1);
	default:
		return (0);
	}
}

/*
 * Add src's series into dst (the workers' sum): a dynamic label goes by
 * its name, since each worker numbers its names in the order it met
 * them.
 */
void
metrics_merge(struct metrics *dst, const struct metrics *src)
{
	const struct metrics_lsetdecl	*ls;
	size_t				 i, s, ds, j, k, rem, ix[METRICS_LABELS_MAX];
	enum metrics_dim		 d;
	uint64_t			*dv;
	const uint64_t			*sv;

	for (i = 0; i < M__MAX; i++) {
		ls = &metrics_lsets[metrics_decls[i].lset];
		for (s = 0; s < src->nseries[i]; s++) {
			if (!src->seen[src->first[i] + s])
				continue;
			rem = s;
			for (j = ls->n; j-- > 0; ) {
				d = ls->d[j];
				ix[j] = rem % src->card[d];
				rem /= src->card[d];
				if (src->names[d] == NULL)
					continue;
				if (ix[j] >= src->nnames[d])
					ix[j] = dst->cap;	/* other */
				else
					ix[j] = metrics_dyn(dst, d,
					    metrics_dyn_name(src, d, ix[j]));
			}
			ds = metrics_series(dst, i, ix);
			dst->seen[dst->first[i] + ds] = 1;
			if (metrics_decls[i].type == MT_HISTOGRAM) {
				dv = dst->v + dst->off[i] + ds * METRICS_HSLOTS;
				sv = src->v + src->off[i] + s * METRICS_HSLOTS;
				for (k = 0; k < METRICS_HSLOTS; k++)
					dv[k] += sv[k];
				continue;
			}
			dv = dst->v + dst->off[i] + ds;
			sv = src->v + src->off[i] + s;
			if (metrics_decls[i].type == MT_COUNTER ||
			    metrics_gauge_sums(i))
				*dv += *sv;
			else if ((int64_t)*sv > (int64_t)*dv)
				*dv = *sv;
		}
	}
}

void
metrics_free(struct metrics *m)
{
	size_t	d;

	if (m == NULL)
		return;
	if (m->maplen != 0)
		return;		/* a worker's slot: the master's, for good */
	for (d = 0; d < D__MAX; d++)
		free(m->names[d]);
	free(m->v);
	free(m->seen);
	free(m);
}

void
metrics_reset(struct metrics *m)
{
	size_t	d;

	memset(m->v, 0, m->nv * sizeof(*m->v));
	memset(m->seen, 0, m->nseen);
	for (d = 0; d < D__MAX; d++)
		m->nnames[d] = 0;
}

static const char *
metrics_dyn_name(const struct metrics *m, enum metrics_dim d, size_t i)
{
	return (m->names[d] + i * (METRICS_NAME_MAX + 1));
}

size_t
metrics_dyn(struct metrics *m, enum metrics_dim d, const char *name)
{
	size_t	i, len;

	if (m->names[d] == NULL)
		return (0);	/* a static dimension: not how it is used */
	len = name != NULL ? strlen(name) : 0;
	if (len == 0 || len > METRICS_NAME_MAX)
		return (m->cap);
	for (i = 0; i < m->nnames[d]; i++)
		if (strcmp(metrics_dyn_name(m, d, i), name) == 0)
			return (i);
	if (m->nnames[d] == m->cap)
		return (m->cap);
	memcpy(m->names[d] + i * (METRICS_NAME_MAX + 1), name, len + 1);
	m->nnames[d]++;
	return (i);
}

size_t
metrics_series(const struct metrics *m, enum metric_id id, const size_t *ix)
{
	const struct metrics_lsetdecl	*ls = &metrics_lsets[
	    metrics_decls[id].lset];
	size_t				 s = 0, j, c;

	for (j = 0; j < ls->n; j++) {
		c = m->card[ls->d[j]];
		s = s * c + (ix[j] < c ? ix[j] : c - 1);
	}
	return (s);
}

size_t
metrics_series1(const struct metrics *m, enum metric_id id, size_t i)
{
	return (metrics_series(m, id, &i));
}

static int
metrics_ok(const struct metrics *m, enum metric_id id, size_t s)
{
	return (m != NULL && (unsigned)id < M__MAX && s < m->nseries[id]);
}

void
metrics_add(struct metrics *m, enum metric_id id, size_t s, uint64_t n)
{
	if (!metrics_ok(m, id, s) || metrics_decls[id].type == MT_HISTOGRAM)
		return;
	m->v[m->off[id] + s] += n;
	m->seen[m->first[id] + s] = 1;
}

void
metrics_set(struct metrics *m, enum metric_id id, size_t s, int64_t n)
{
	if (!metrics_ok(m, id, s) || metrics_decls[id].type == MT_HISTOGRAM)
		return;
	m->v[m->off[id] + s] = (uint64_t)n;
	m->seen[m->first[id] + s] = 1;
}

void
metrics_observe(struct metrics *m, enum metric_id id, size_t s, uint64_t us)
{
	uint64_t	*h;
	size_t		 b;

	if (!metrics_ok(m, id, s) || metrics_decls[id].type != MT_HISTOGRAM)
		return;
	h = m->v + m->off[id] + s * METRICS_HSLOTS;
	for (b = 0; b < METRICS_NBUCKETS && us > metrics_buckets[b]; b++)
		;
	h[b]++;				/* b == NBUCKETS: +Inf only */
	h[METRICS_HSUM] += us;
	h[METRICS_HCOUNT]++;
	m->seen[m->first[id] + s] = 1;
}

int64_t
metrics_get(const struct metrics *m, enum metric_id id, size_t s)
{
	if (!metrics_ok(m, id, s))
		return (0);
	if (metrics_decls[id].type == MT_HISTOGRAM)
		return ((int64_t)m->v[m->off[id] + s * METRICS_HSLOTS +
		    METRICS_HCOUNT]);
	return ((int64_t)m->v[m->off[id] + s]);
}

const uint64_t *
metrics_values(const struct metrics *m, size_t *n)
{
	*n = m->nv;
	return (m->v);
}

/* Append s to buf at *o, escaped as HELP text or a label value wants. */
static void
metrics_esc(char *buf, size_t len, size_t *o, const char *s, int quote)
{
	for (; *s != '\0' && *o + 3 < len; s++) {
		if (*s == '\\' || (quote && *s == '"')) {
			buf[(*o)++] = '\\';
			buf[(*o)++] = *s;
		} else if (*s == '\n') {
			buf[(*o)++] = '\\';
			buf[(*o)++] = 'n';
		} else
			buf[(*o)++] = *s;
	}
	buf[*o] = '\0';
}

static void
metrics_cat(char *buf, size_t len, size_t *o, const char *s)
{
	size_t	n = strlen(s);

	if (*o + n >= len)
		n = len - *o - 1;
	memcpy(buf + *o, s, n);
	*o += n;
	buf[*o] = '\0';
}

/*
 * The label pairs of series s of metric id into buf, without braces;
 * 0 when a dynamic index has no name (the series does not exist).
 */
static int
metrics_labels(const struct metrics *m, enum metric_id id, size_t s,
    char *buf, size_t len)
{
	const struct metrics_lsetdecl	*ls = &metrics_lsets[
	    metrics_decls[id].lset];
	const struct metrics_dimdecl	*dd;
	size_t				 ix[METRICS_LABELS_MAX], j, o = 0;
	const char			*v;

	for (j = ls->n; j-- > 0;) {
		ix[j] = s % m->card[ls->d[j]];
		s /= m->card[ls->d[j]];
	}
	buf[0] = '\0';
	for (j = 0; j < ls->n; j++) {
		dd = &metrics_dims[ls->d[j]];
		if (dd->values != NULL)
			v = dd->values[ix[j]];
		else if (ix[j] < m->nnames[ls->d[j]] || ix[j] == m->cap)
			v = metrics_dyn_name(m, ls->d[j], ix[j]);
		else
			return (0);
		if (j > 0)
			metrics_cat(buf, len, &o, ",");
		metrics_cat(buf, len, &o, dd->label);
		metrics_cat(buf, len, &o, "=\"");
		metrics_esc(buf, len, &o, v, 1);
		metrics_cat(buf, len, &o, "\"");
	}
	return (1);
}

static void
metrics_emitf(metrics_emit_fn *emit, void *arg, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
metrics_emitf(metrics_emit_fn *emit, void *arg, const char *fmt, ...)
{
	char	line[2048];
	va_list	ap;
	int	n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(line))
		n = sizeof(line) - 1;
	emit(arg, line, (size_t)n);
}

static void
metrics_render_hist(const struct metrics *m, enum metric_id id, size_t s,
    const char *labels, metrics_emit_fn *emit, void *arg)
{
	const char	*name = metrics_decls[id].name;
	const uint64_t	*h = m->v + m->off[id] + s * METRICS_HSLOTS;
	const char	*sep = labels[0] != '\0' ? "," : "";
	uint64_t	 cum = 0;
	size_t		 b;

	for (b = 0; b < METRICS_NBUCKETS; b++) {
		cum += h[b];
		metrics_emitf(emit, arg, "%s_bucket{%s%sle=\"%g\"} %llu\n",
		    name, labels, sep, (double)metrics_buckets[b] / 1e6,
		    (unsigned long long)cum);
	}
	metrics_emitf(emit, arg, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name,
	    labels, sep, (unsigned long long)h[METRICS_HCOUNT]);
	metrics_emitf(emit, arg, "%s_sum%s%s%s %.6f\n", name,
	    labels[0] ? "{" : "", labels, labels[0] ? "}" : "",
	    (double)h[METRICS_HSUM] / 1e6);
	metrics_emitf(emit, arg, "%s_count%s%s%s %llu\n", name,
	    labels[0] ? "{" : "", labels, labels[0] ? "}" : "",
	    (unsigned long long)h[METRICS_HCOUNT]);
}

void
metrics_render(const struct metrics *m, metrics_emit_fn *emit, void *arg)
{
	const struct metrics_decl	*md;
	const struct metrics_lsetdecl	*ls;
	char				 labels[1024], help[1024];
	size_t				 i, s, o;
	int				 dense;

	for (i = 0; i < M__MAX; i++) {
		md = &metrics_decls[i];
		ls = &metrics_lsets[md->lset];
		o = 0;
		help[0] = '\0';
		metrics_esc(help, sizeof(help), &o, md->help, 0);
		metrics_emitf(emit, arg, "# HELP %s %s\n", md->name, help);
		metrics_emitf(emit, arg, "# TYPE %s %s\n", md->name,
		    metrics_type_name(md->type));
		/*
		 * Small fixed sets show their zeros (a rate needs a first
		 * sample); other series appear once they have a value.
		 */
		dense = md->type != MT_HISTOGRAM && (ls->n == 0 ||
		    (ls->n == 1 && metrics_dims[ls->d[0]].values != NULL &&
		    m->card[ls->d[0]] <= 8));
		for (s = 0; s < m->nseries[i]; s++) {
			if (!dense && !m->seen[m->first[i] + s])
				continue;
			if (!metrics_labels(m, i, s, labels, sizeof(labels)))
				continue;
			if (md->type == MT_HISTOGRAM) {
				metrics_render_hist(m, i, s, labels, emit,
				    arg);
				continue;
			}
			if (md->type == MT_GAUGE)
				metrics_emitf(emit, arg, "%s%s%s%s %lld\n",
				    md->name, labels[0] ? "{" : "", labels,
				    labels[0] ? "}" : "",
				    (long long)(int64_t)m->v[m->off[i] + s]);
			else
				metrics_emitf(emit, arg, "%s%s%s%s %llu\n",
				    md->name, labels[0] ? "{" : "", labels,
				    labels[0] ? "}" : "",
				    (unsigned long long)m->v[m->off[i] + s]);
		}
	}
}

void
metrics_reference(metrics_emit_fn *emit, void *arg)
{
	const struct metrics_decl	*md;
	char				 labels[128];
	size_t				 i;

	metrics_emitf(emit, arg, "| metric | type | labels | meaning |\n");
	metrics_emitf(emit, arg, "| --- | --- | --- | --- |\n");
	for (i = 0; i < M__MAX; i++) {
		md = &metrics_decls[i];
		metrics_label_names(i, labels, sizeof(labels));
		metrics_emitf(emit, arg, "| `%s` | %s | %s | %s |\n", md->name,
		    metrics_type_name(md->type), labels[0] ? labels : "-",
		    md->help);
	}
}

enum metrics_method
metrics_method(const char *s)
{
	size_t	i;

	for (i = 0; i < MM_OTHER; i++)
		if (s != NULL && strcmp(s, metrics_method_names[i]) == 0)
			return (i);
	return (MM_OTHER);
}

enum metrics_class
metrics_class(int status)
{
	if (status < 100 || status > 599)
		return (MC_NONE);
	return ((enum metrics_class)(status / 100 - 1));
}

int
metrics_cache_result(const char *s)
{
	size_t	i;

	for (i = 0; s != NULL && i < MCR__MAX; i++)
		if (strcmp(s, metrics_cache_names[i]) == 0)
			return ((int)i);
	return (-1);
}

/* ADDRESS or ADDRESS/PREFIX; host bits past the prefix must be zero. */
const char *
metrics_net_parse(const char *s, struct metrics_net *n)
{
	char		 addr[INET6_ADDRSTRLEN + 1], *end;
	const char	*slash;
	size_t		 alen;
	long		 plen;
	int		 i, max;

	slash = strchr(s, '/');
	alen = slash != NULL ? (size_t)(slash - s) : strlen(s);
	if (alen == 0 || alen >= sizeof(addr))
		return ("must be ADDRESS or ADDRESS/PREFIX");
	memcpy(addr, s, alen);
	addr[alen] = '\0';
	memset(n, 0, sizeof(*n));
	if (inet_pton(AF_INET, addr, n->net) == 1) {
		n->af = AF_INET;
		max = 32;
	} else if (inet_pton(AF_INET6, addr, n->net) == 1) {
		n->af = AF_INET6;
		max = 128;
	} else
		return ("address is neither IPv4 nor IPv6");
	n->plen = max;
	if (slash == NULL)
		return (NULL);
	if (slash[1] < '0' || slash[1] > '9')
		return ("prefix must be a number");
	plen = strtol(slash + 1, &end, 10);
	if (*end != '\0' || plen < 0 || plen > max)
		return ("prefix length out of range");
	n->plen = (int)plen;
	for (i = (int)plen; i < max; i++)
		if (n->net[i / 8] & (0x80 >> (i % 8)))
			return ("bits set after the prefix");
	return (NULL);
}

static int
metrics_prefix_eq(const unsigned char *a, const unsigned char *b, int plen)
{
	int	full = plen / 8, rest = plen % 8;

	if (memcmp(a, b, full) != 0)
		return (0);
	if (rest == 0)
		return (1);
	return (((a[full] ^ b[full]) & (0xff00 >> rest)) == 0);
}

int
metrics_net_match(const struct metrics_net *n, int af,
    const unsigned char *addr)
{
	static const unsigned char	 v4mapped[12] = { 0, 0, 0, 0, 0, 0,
					    0, 0, 0, 0, 0xff, 0xff };
	unsigned char			 mapped[16];

	if (af == n->af)
		return (metrics_prefix_eq(addr, n->net, n->plen));
	if (af == AF_INET6 && n->af == AF_INET &&
	    memcmp(addr, v4mapped, 12) == 0)
		return (metrics_prefix_eq(addr + 12, n->net, n->plen));
	if (af == AF_INET && n->af == AF_INET6) {
		memcpy(mapped, v4mapped, 12);
		memcpy(mapped + 12, addr, 4);
		return (metrics_prefix_eq(mapped, n->net, n->plen));
	}
	return (0);
}
