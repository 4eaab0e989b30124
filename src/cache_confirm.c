/*
 * cache_confirm.c: the HEAD that asks an upstream whether a repository
 * holds a digest, before the cache serves that repository an entry it has
 * no link for (cache_links.c, cache_serve.c).
 *
 * A confirm is a proxy request without a client (proxy_fetch_new), so
 * the upstream pool, the credentials and the token scoped for the
 * repository, and redirects are proxy.c's.  Confirms are coalesced: the
 * readers that want the same (upstream, repository, kind, digest) at once
 * (for a manifest, with the same normalised Accept set, on which a
 * registry's answer may depend) share one HEAD, and each then decides with
 * its own expectations (the length of the entry it would serve).  At most
 * cache.max_confirms run at once; a reader beyond it is told so
 * (cache_confirm_join returns -1) and goes to the upstream as is.
 *
 * When the last reader of a confirm goes away, the HEAD is closed and the
 * confirm freed at once, as a fill is: its proxy is retired first, so
 * proxy.c never calls into freed memory.  When the HEAD ends, the confirm
 * is joined by none before any reader is told, each reader is off it
 * before it is told (telling one may retire it, or start a fill), and the
 * confirm is freed after the last.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cache.h"

struct cache_confirm {
	TAILQ_ENTRY(cache_confirm)	 entry;		/* on cache->confirms */
	struct cache			*cache;
	struct config			*conf;		/* a reference */
	const struct config_upstream	*up;		/* in conf */
	enum cache_kind			 kind;
	int				 solo;		/* joined by none */
	char				 digest[CACHE_DIGEST_MAX];
	char				 repo[OCI_NAME_MAX + 16];
	char				 accept[2048];	/* normalised */
	char				 logid[48];
	struct proxy			*px;
	struct headers			 fwd;		/* Accept fields */
	TAILQ_HEAD(, cache_reader)	 readers;
	struct cache_confirm_answer	 ans;
};

static const struct proxy_ops confirm_ops;

static void
confirm_free(struct cache_confirm *cf)
{
	struct cache	*c = cf->cache;

	TAILQ_REMOVE(&c->confirms, cf, entry);
	c->nconfirms--;
	proxy_free(cf->px);
	headers_clear(&cf->fwd);
	config_unref(cf->conf);
	free(cf);
}

/* Same upstream: the configured one, or its namesake at the same URL. */
static int
confirm_same_upstream(const struct config_upstream *a,
    const struct config_upstream *b)
{
	return (a == b || (strcmp(a->name, b->name) == 0 &&
	    strcmp(a->url, b->url) == 0));
}

/*
 * Join the confirm of the reader's (upstream, repository, kind, digest),
 * starting one when none runs.  Returns 0, or -1 when cache.max_confirms
 * run already.  The reader is told by cache_reader_confirmed() or
 * cache_reader_confirm_failed(), perhaps before this returns.
 */
int
cache_confirm_join(struct cache_reader *cr)
{
	struct req		*req = cr->req;
	struct cache		*c = cr->cache;
	struct cache_confirm	*cf;
	const struct headers	*h = &req->msg->hdrs;
	char			 accept[2048];
	int			 solo = 0;
	size_t			 i;

	accept[0] = '\0';
	if (cr->kind == CACHE_MANIFEST && cache_accept_norm(h, accept,
	    sizeof(accept)) == -1)
		solo = 1;	/* an Accept set too odd to key: its own */
	TAILQ_FOREACH(cf, &c->confirms, entry) {
		if (!solo && !cf->solo && cf->kind == cr->kind &&
		    strcmp(cf->digest, cr->digest) == 0 &&
		    strcmp(cf->repo, req->upname) == 0 &&
		    strcmp(cf->accept, accept) == 0 &&
		    confirm_same_upstream(cf->up, req->up)) {
			cr->confirm = cf;
			TAILQ_INSERT_TAIL(&cf->readers, cr, centry);
			log_info("%llu.%u cache confirm_coalesced %s",
			    (unsigned long long)req->c->id, req->seq,
			    cf->logid);
			return (0);
		}
	}
	if (c->nconfirms >= req->conf->cache->max_confirms)
		return (-1);
	if ((cf = calloc(1, sizeof(*cf))) == NULL)
		fatal("calloc");
	cf->cache = c;
	cf->conf = req->conf;
	config_ref(cf->conf);
	cf->up = req->up;
	cf->kind = cr->kind;
	cf->solo = solo;
	snprintf(cf->digest, sizeof(cf->digest), "%s", cr->digest);
	snprintf(cf->repo, sizeof(cf->repo), "%s", req->upname);
	snprintf(cf->accept, sizeof(cf->accept), "%s", accept);
	snprintf(cf->logid, sizeof(cf->logid), "confirm%llu",
	    (unsigned long long)++c->seq);
	TAILQ_INIT(&cf->readers);
	headers_init(&cf->fwd);
	if (cr->kind == CACHE_MANIFEST)
		for (i = 0; i < h->n; i++)
			if (strcasecmp(h->v[i].name, "Accept") == 0)
				headers_add(&cf->fwd, h->v[i].name,
				    h->v[i].nlen, h->v[i].value, h->v[i].vlen);
	TAILQ_INSERT_TAIL(&c->confirms, cf, entry);
	c->nconfirms++;
	cr->confirm = cf;
	TAILQ_INSERT_TAIL(&cf->readers, cr, centry);
	log_debug("%llu.%u cache confirm_start %s digest=%s name=%s",
	    (unsigned long long)req->c->id, req->seq, cf->logid, cf->digest,
	    cf->repo);
	cf->px = proxy_fetch_new(c->ctx, cf->conf, cf->up, HTTP_HEAD,
	    cf->repo, cf->kind == CACHE_BLOB ? "blobs" : "manifests",
	    cf->digest, &cf->fwd, &confirm_ops, cf, cf->logid);
	proxy_fetch_start(cf->px);	/* may fail at once: confirm_fail */
	return (0);
}

/* A reader leaves (its client went away); the last one ends the HEAD. */
void
cache_confirm_leave(struct cache_reader *cr)
{
	struct cache_confirm	*cf = cr->confirm;

	if (cf == NULL)
		return;
	TAILQ_REMOVE(&cf->readers, cr, centry);
	cr->confirm = NULL;
	if (TAILQ_EMPTY(&cf->readers))
		confirm_free(cf);
}

static int
confirm_head(void *arg, struct hframe_msg *rm)
{
	struct cache_confirm	*cf = arg;
	const char		*v;

	cf->ans.status = rm->status;
	if ((v = headers_get(&rm->hdrs, "Docker-Content-Digest")) != NULL)
		snprintf(cf->ans.digest, sizeof(cf->ans.digest), "%s", v);
	if ((v = headers_get(&rm->hdrs, "Content-Length")) != NULL)
		snprintf(cf->ans.length, sizeof(cf->ans.length), "%s", v);
	if ((v = headers_get(&rm->hdrs, "Retry-After")) != NULL)
		snprintf(cf->ans.retry_after, sizeof(cf->ans.retry_after),
		    "%s", v);
	return (0);
}

static int
confirm_body(void *arg, struct evbuffer *in, size_t n)
{
	evbuffer_drain(in, n);
	return (0);
}

static int
confirm_body_data(void *arg, const char *data, size_t n)
{
	return (0);
}

/*
 * The HEAD is over: joined by none any more, each reader told in turn,
 * then freed.
 */
static void
confirm_end(struct cache_confirm *cf, enum pc_err err, const char *detail)
{
	struct cache_reader	*cr;

	cf->solo = 1;		/* still counted, but joined by none */
	while ((cr = TAILQ_FIRST(&cf->readers)) != NULL) {
		TAILQ_REMOVE(&cf->readers, cr, centry);
		cr->confirm = NULL;
		if (err == ERR_NONE)
			cache_reader_confirmed(cr, &cf->ans);
		else
			cache_reader_confirm_failed(cr, err, detail);
	}
	confirm_free(cf);
}

static void
confirm_done(void *arg)
{
	confirm_end(arg, ERR_NONE, NULL);
}

/* Unreachable, a timeout, a broken answer. */
static void
confirm_fail(void *arg, enum pc_err err, const char *detail)
{
	struct cache_confirm	*cf = arg;

	log_info("- cache confirm_failed %s digest=%s name=%s detail=\"%s\"",
	    cf->logid, cf->digest, cf->repo, detail);
	confirm_end(cf, err, detail);
}

static const struct proxy_ops confirm_ops = {
	confirm_head,
	confirm_body,
	confirm_body_data,
	confirm_done,
	confirm_fail
};

/* Shutdown: stop every confirm; readers were retired with their requests. */
void
cache_confirm_free_all(struct cache *c)
{
	struct cache_confirm	*cf;

	while ((cf = TAILQ_FIRST(&c->confirms)) != NULL) {
		if (TAILQ_EMPTY(&cf->readers)) {
			confirm_free(cf);
			continue;
		}
		while (!TAILQ_EMPTY(&cf->readers))
			cache_confirm_leave(TAILQ_FIRST(&cf->readers));
		/* The last leave freed it. */
	}
}
