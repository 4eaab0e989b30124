/*
 * referrers_push.c: a manifest pushed with a `subject` (distribution
 * spec 1.1, "Pushing Manifests with Subject"), and the subject's
 * referrers tag kept by the gateway when the upstream keeps none.
 *
 * A manifest PUT is read whole first (tagpol.c's body read, bounded by
 * limits.manifest_bytes); when it has a `subject`, the gateway sends it
 * itself (a client-less PUT) and, once the upstream accepted it without
 * an OCI-Subject of its own, adds a descriptor of it to the subject's
 * referrers tag <alg>-<hex> (read, add, write back, re-read), with the
 * gateway's upstream credentials on behalf of a client the policy gate
 * let push.  The client is answered with OCI-Subject when the index
 * holds the manifest, without it when the gateway could not make it so
 * (the spec's signal for a client to maintain the tag itself).  Pushes
 * to one subject are serialised within this gateway (struct rf_lock).
 * A client that leaves once the manifest is accepted does not stop the
 * index update: the push detaches from its request (a reference to the
 * configuration it started with) and finishes on its own; shutdown ends
 * the detached ones.
 *
 * What remains racy: the upstream has no conditional PUT, so another
 * writer (another gateway, or a client writing the tag directly) that
 * read the index before our write and writes after our re-read replaces
 * the index without our descriptor, and neither side sees it.  The
 * re-read after each write catches every overwrite that lands before it
 * (then the descriptor is added to what is there and written again, at
 * most limits.referrers_attempts rounds), which narrows the window to the
 * other writer's own read-to-write time.
 */
#include <stdlib.h>
#include <string.h>

#include "policy.h"
#include "referrers_int.h"

/* The pushes to one subject: the first writes, the others wait. */
struct rf_lock {
	TAILQ_ENTRY(rf_lock)	 entry;
	char			*key;
	struct rf_push		*holder;
	TAILQ_HEAD(, rf_push)	 waiters;
};

/*
 * RF_GET_MANIFEST: a DELETE's manifest read for its subject;
 * RF_PUT_MANIFEST: the manifest's own PUT or DELETE sent.
 */
enum rf_phase { RF_GET_MANIFEST, RF_PUT_MANIFEST, RF_WAIT, RF_READ,
	RF_WRITE };

#define RF_TOO_LARGE	"upstream referrers document larger than " \
	"limits.manifest_bytes"
#define RF_ACCEPT	RF_MANIFEST_MT ", " RF_INDEX_MT ", " \
	"application/vnd.docker.distribution.manifest.v2+json, " \
	"application/vnd.docker.distribution.manifest.list.v2+json"

/*
 * A manifest PUT with a subject, or a DELETE by digest: the request's
 * UPSTREAM stage (a DELETE's manifest read is a gate of DISPATCH).
 */
struct rf_push {
	struct req		*req;		/* NULL: detached */
	struct pc_ctx		*ctx;
	struct config		*conf;		/* a reference */
	const struct config_upstream *up;	/* conf's */
	char			 upname[OCI_NAME_MAX + 16]; /* req's */
	char			 logid[48];
	struct docfetch		 doc;
	enum rf_phase		 phase;
	int			 deleting;	/* a DELETE: take it out */
	json_t			*desc;		/* for the index */
	json_t			*written;	/* the index's descriptors */
	char			*key;
	char			 subject[RF_DIGEST_MAX];
	char			 digest[RF_DIGEST_MAX];	/* pushed */
	char			 tag[RF_TAG_MAX];
	int			 status;	/* of the manifest PUT */
	int			 subject_ok;	/* say OCI-Subject */
	size_t			 attempts;
	struct rf_lock		*lock;
	int			 waiting;	/* in lock->waiters */
	TAILQ_ENTRY(rf_push)	 wait_entry;
	TAILQ_ENTRY(rf_push)	 det_entry;	/* r->detached */
	struct event		*ev_go;		/* lock is ours */
	int			 retired;
	struct reap_node	 reap;
};

static const struct req_stage_ops rf_push_stage_ops;
static void	rf_push_read(struct rf_push *);
static void	rf_delete_read(struct rf_push *, enum pc_err);
static void	rf_delete_send(struct rf_push *);
static int	rf_has(json_t *, const char *);

/* The subject of a pushed manifest into out: 1, or 0 when none. */
static int
rf_subject(json_t *m, char *out, size_t len)
{
	const char	*d;

	d = json_string_value(json_object_get(json_object_get(m, "subject"),
	    "digest"));
	if (d == NULL || !router_valid_digest(d, strlen(d)) ||
	    strlen(d) >= len)
		return (0);
	snprintf(out, len, "%s", d);
	return (1);
}

/*
 * Whether a routed manifest PUT whose body was read (req->body_read, by
 * tagpol.c) carries a subject: then referrers_push_start() sends it.
 */
int
referrers_push_wants(struct req *req)
{
	json_t		*m;
	json_error_t	 jerr;
	char		 subject[RF_DIGEST_MAX];
	int		 yes;

	if (req->route.ep != OCI_EP_MANIFEST || req->msg->method != HTTP_PUT ||
	    req->body_read == NULL)
		return (0);
	m = json_loadb((const char *)evbuffer_pullup(req->body_read, -1),
	    evbuffer_get_length(req->body_read), 0, &jerr);
	yes = m != NULL && rf_subject(m, subject, sizeof(subject));
	json_decref(m);
	return (yes);
}

/* The lock of the push's subject: taken at once (1) or queued (0). */
static int
rf_lock_take(struct rf_push *p)
{
	struct referrers	*r = rf_state(p->ctx);
	struct rf_lock		*l;

	TAILQ_FOREACH(l, &r->locks, entry)
		if (strcmp(l->key, p->key) == 0)
			break;
	if (l == NULL) {
		if ((l = calloc(1, sizeof(*l))) == NULL ||
		    (l->key = strdup(p->key)) == NULL)
			fatal("calloc");
		TAILQ_INIT(&l->waiters);
		TAILQ_INSERT_TAIL(&r->locks, l, entry);
	}
	p->lock = l;
	if (l->holder == NULL) {
		l->holder = p;
		return (1);
	}
	TAILQ_INSERT_TAIL(&l->waiters, p, wait_entry);
	p->waiting = 1;
	return (0);
}

/*
 * Let go of the lock: the next waiter's turn starts from its own event
 * (not inside this push's end, which may be a callback of its own).
 */
static void
rf_lock_release(struct rf_push *p)
{
	struct referrers	*r = p->ctx->referrers;
	struct rf_lock		*l = p->lock;
	struct rf_push		*next;
	struct timeval		 tv = { 0, 0 };

	if (l == NULL)
		return;
	p->lock = NULL;
	if (p->waiting) {
		TAILQ_REMOVE(&l->waiters, p, wait_entry);
		p->waiting = 0;
		return;
	}
	if ((next = TAILQ_FIRST(&l->waiters)) != NULL) {
		TAILQ_REMOVE(&l->waiters, next, wait_entry);
		next->waiting = 0;
		l->holder = next;
		evtimer_add(next->ev_go, &tv);
		return;
	}
	TAILQ_REMOVE(&r->locks, l, entry);
	free(l->key);
	free(l);
}

static void
rf_push_destroy(void *arg)
{
	struct rf_push	*p = arg;

	docfetch_clear(&p->doc);
	if (p->ev_go != NULL)
		event_free(p->ev_go);
	json_decref(p->desc);
	json_decref(p->written);
	config_unref(p->conf);
	free(p->key);
	free(p);
}

/* Retire the push: its fetch, its turn and its lock let go. */
static void
rf_push_retire(struct rf_push *p)
{
	if (p->retired)
		return;
	p->retired = 1;
	docfetch_stop(&p->doc);
	evtimer_del(p->ev_go);
	rf_lock_release(p);
	if (p->req == NULL) {
		TAILQ_REMOVE(&p->ctx->referrers->detached, p, det_entry);
		p->ctx->referrers->ndetached--;
	}
	conn_reap_later(p->ctx, &p->reap, rf_push_destroy, p);
}

/*
 * The client went (free follows at once).  Once the upstream has the
 * manifest, the index update goes on without the request: a client
 * that gave up must not leave a pushed referrer out of the index.
 * Detached, it no longer counts as a connection, yet holds its
 * descriptor (annotations of the client's choosing) until its turn: so
 * at most limits.max_connections go on detached, else a client pushing
 * and leaving could queue any number of them.
 */
static void
rf_push_gone(void *arg)
{
	struct rf_push		*p = arg;
	struct referrers	*r = rf_state(p->ctx);

	if (!p->retired && p->phase == RF_PUT_MANIFEST) {
		/*
		 * Its upstream answer not read: whether the manifest was
		 * taken is unknown, so its index is not touched; say so, an
		 * operator may have to look at the subject's referrers.
		 */
		log_warn("%s referrers client_left_before_answer "
		    "index_not_updated repo=%s tag=%s", p->logid, p->upname,
		    p->tag);
		return;
	}
	if (p->retired || p->phase == RF_GET_MANIFEST ||
	    (p->deleting && p->status == 0))
		return;		/* not deleted: nothing to finish */
	/*
	 * The manifest is gone upstream: so is the cache's link to it,
	 * detached or not (the DELETE's answer, which drops it, never
	 * comes).
	 */
	if (p->deleting)
		cache_invalidate_link(p->req);
	if (r->ndetached >= p->conf->max_connections) {
		log_warn("%s referrers not_detached index_not_updated "
		    "repo=%s tag=%s reason=\"%zu detached index updates "
		    "(limits.max_connections)\"", p->logid, p->upname,
		    p->tag, r->ndetached);
		return;			/* rf_push_free() retires it */
	}
	log_info("%s referrers detached tag=%s", p->logid, p->tag);
	p->req = NULL;
	TAILQ_INSERT_TAIL(&r->detached, p, det_entry);
	r->ndetached++;
}

/* The stage's end: retired, unless detached to finish on its own. */
static void
rf_push_free(void *arg)
{
	struct rf_push	*p = arg;

	if (p == NULL || p->retired || p->req == NULL)
		return;
	rf_push_retire(p);
}

/* At shutdown: end the index updates whose clients are gone. */
void
rf_push_shutdown(struct referrers *r)
{
	struct rf_push	*p;
	struct rf_lock	*l;

	while ((p = TAILQ_FIRST(&r->detached)) != NULL) {
		log_info("%s referrers index_not_updated tag=%s "
		    "reason=\"shutdown\"", p->logid, p->tag);
		rf_push_retire(p);	/* unlinks it */
	}
	while ((l = TAILQ_FIRST(&r->locks)) != NULL) {
		TAILQ_REMOVE(&r->locks, l, entry);
		free(l->key);
		free(l);
	}
}

/* Answer the client as the upstream accepted the manifest. */
static void
rf_push_answer(struct rf_push *p)
{
	struct req	*req = p->req;
	struct headers	 h;
	char		 loc[OCI_NAME_MAX + RF_DIGEST_MAX + 32];
	int		 n;

	/* A later read of the subject's referrers must see this push. */
	rf_cache_drop(p->ctx, p->key);
	if (req == NULL) {		/* detached: nobody to answer */
		log_info("%s referrers detached_done tag=%s %s=%d",
		    p->logid, p->tag, p->deleting ? "removed" : "indexed",
		    p->subject_ok);
		rf_push_retire(p);
		return;
	}
	if (p->deleting) {		/* the upstream's 202, as relayed */
		req_respond_simple(req, p->status, NULL, NULL, NULL);
		return;
	}
	headers_init(&h);
	n = snprintf(loc, sizeof(loc), "/v2/%s/manifests/%s",
	    req->route.name, p->digest);
	headers_add(&h, "Location", 8, loc, n);
	headers_add(&h, "Docker-Content-Digest", 21, p->digest,
	    strlen(p->digest));
	if (p->subject_ok)
		headers_add(&h, "OCI-Subject", 11, p->subject,
		    strlen(p->subject));
	req_respond_simple(req, p->status, NULL, NULL, &h);
	headers_clear(&h);
}

/*
 * The index could not be made to hold the manifest (say no OCI-Subject)
 * or, for a DELETE, to lose it (the manifest is deleted all the same).
 */
static void
rf_push_give_up(struct rf_push *p, const char *why)
{
	log_warn("%s referrers index_not_updated repo=%s tag=%s "
	    "attempts=%zu%s reason=\"%s\"", p->logid, p->upname, p->tag,
	    p->attempts, p->deleting ? " removing=1" : "", why);
	p->subject_ok = 0;
	rf_push_answer(p);
}

/*
 * Write the index: what was read plus the pushed manifest's descriptor,
 * or without the deleted manifest's (all of them).
 */
static void
rf_push_write(struct rf_push *p, json_t *manifests)
{
	struct evbuffer	*body;
	json_t		*doc;
	const char	*d;
	char		*text;
	char		 path[OCI_NAME_MAX + RF_TAG_MAX + 32];
	char		 scope[OCI_NAME_MAX + 48];
	size_t		 i;

	if (!p->deleting && !rf_has(manifests, p->digest))
		json_array_append(manifests, p->desc);
	for (i = json_array_size(manifests); p->deleting && i > 0; i--) {
		d = json_string_value(json_object_get(json_array_get(
		    manifests, i - 1), "digest"));
		if (d != NULL && strcmp(d, p->digest) == 0)
			json_array_remove(manifests, i - 1);
	}
	doc = json_pack("{s:i, s:s, s:O}", "schemaVersion", 2, "mediaType",
	    RF_INDEX_MT, "manifests", manifests);
	if (doc == NULL || (text = json_dumps(doc, JSON_COMPACT)) == NULL)
		fatal("json_dumps");
	json_decref(doc);
	if (strlen(text) > p->conf->manifest_bytes) {
		free(text);
		rf_push_give_up(p, "index larger than limits.manifest_bytes");
		return;
	}
	json_decref(p->written);
	p->written = json_incref(manifests);	/* rf_push_prune's */
	if ((body = evbuffer_new()) == NULL)
		fatal("evbuffer_new");
	evbuffer_add(body, text, strlen(text));
	free(text);
	p->phase = RF_WRITE;
	snprintf(path, sizeof(path), "/v2/%s/manifests/%s", p->upname,
	    p->tag);
	snprintf(scope, sizeof(scope), "repository:%s:pull,push", p->upname);
	docfetch_send(&p->doc, p->ctx, p->conf, p->up, p->logid, HTTP_PUT,
	    path, scope, "Content-Type", RF_INDEX_MT, body, RF_ERRBODY_MAX,
	    RF_TOO_LARGE);
}

/*
 * Registry 2.8 refuses an index that lists a manifest it no longer has
 * (one deleted without the gateway): 400 MANIFEST_BLOB_UNKNOWN, the
 * digest in the detail.  Without them, no push or delete through the
 * gateway could ever update the index again: take them out and write
 * again, a round of limits.referrers_attempts.  1 when written again.
 */
static int
rf_push_prune(struct rf_push *p)
{
	json_t		*doc, *e, *m;
	json_error_t	 jerr;
	const char	*text, *code, *d, *md;
	size_t		 len, i, j, pruned = 0;

	if (p->written == NULL || p->attempts >= p->conf->referrers_attempts)
		return (0);
	text = docfetch_text(&p->doc, &len);
	if ((doc = json_loadb(text, len, 0, &jerr)) == NULL)
		return (0);
	json_array_foreach(json_object_get(doc, "errors"), i, e) {
		code = json_string_value(json_object_get(e, "code"));
		d = json_string_value(json_object_get(e, "detail"));
		if (code == NULL || d == NULL ||
		    (strcmp(code, "MANIFEST_BLOB_UNKNOWN") != 0 &&
		    strcmp(code, "MANIFEST_UNKNOWN") != 0) ||
		    (!p->deleting && strcmp(d, p->digest) == 0))
			continue;
		for (j = json_array_size(p->written); j > 0; j--) {
			md = json_string_value(json_object_get(
			    json_array_get(p->written, j - 1), "digest"));
			if (md != NULL && strcmp(md, d) == 0) {
				json_array_remove(p->written, j - 1);
				pruned++;
			}
		}
	}
	json_decref(doc);
	if (pruned == 0)
		return (0);
	log_info("%s referrers index_pruned tag=%s gone=%zu attempt=%zu",
	    p->logid, p->tag, pruned, p->attempts + 1);
	p->attempts++;
	m = p->written;
	p->written = NULL;
	rf_push_write(p, m);
	json_decref(m);
	return (1);
}

/* Whether the descriptors hold the pushed manifest's digest. */
static int
rf_has(json_t *manifests, const char *digest)
{
	json_t		*m;
	const char	*d;
	size_t		 i;

	json_array_foreach(manifests, i, m) {
		d = json_string_value(json_object_get(m, "digest"));
		if (d != NULL && strcmp(d, digest) == 0)
			return (1);
	}
	return (0);
}

/* The tag was read: done when it holds the manifest, else write. */
static void
rf_push_read_done(struct rf_push *p)
{
	json_t		*doc, *m;
	json_error_t	 jerr;
	const char	*text, *rule;
	size_t		 len;
	char		 why[160];

	text = docfetch_text(&p->doc, &len);
	if (p->doc.status == 404)
		m = json_array();
	else if (p->doc.status == 200) {
		doc = json_loadb(text, len, 0, &jerr);
		m = rf_index_manifests(doc);
		json_decref(doc);
		if (m == NULL) {
			rf_push_give_up(p, "the referrers tag holds no "
			    "image index");
			return;
		}
	} else {
		snprintf(why, sizeof(why), "upstream answered %d to the "
		    "read", p->doc.status);
		rf_push_give_up(p, why);
		return;
	}
	/* Pushed: done once it holds it; deleted: once it does not. */
	if (rf_has(m, p->digest) != p->deleting) {
		json_decref(m);
		p->subject_ok = 1;
		rf_push_answer(p);
		return;
	}
	/*
	 * The gateway writes the tag with its own credentials: an
	 * immutable one that exists is not moved (a client's own PUT of
	 * it is refused by tagpol.c), though it may be created, as a
	 * client may create a new immutable tag.
	 */
	if (p->doc.status == 200 && policy_immutable(p->conf->policy,
	    p->up->name, p->upname, p->tag, &rule)) {
		json_decref(m);
		snprintf(why, sizeof(why), "the referrers tag is immutable "
		    "(rule %s)", rule);
		rf_push_give_up(p, why);
		return;
	}
	if (p->attempts >= p->conf->referrers_attempts) {
		json_decref(m);
		rf_push_give_up(p, "the tag kept moving");
		return;
	}
	if (p->attempts > 0)
		log_info("%s referrers index_moved tag=%s attempt=%zu",
		    p->logid, p->tag, p->attempts + 1);
	p->attempts++;
	rf_push_write(p, m);
	json_decref(m);
}

/* The upstream's answer to the manifest PUT (the client is still here). */
static void
rf_push_put_done(struct rf_push *p)
{
	struct req	*req = p->req;
	const char	*text, *ctype, *v;
	size_t		 len;

	if (p->doc.status / 100 != 2) {
		if (p->doc.status == 401 || p->doc.status == 403 ||
		    p->doc.status == 429) {
			docfetch_fail_status(req, &p->doc, p->deleting ?
			    "a manifest delete" : "a manifest push",
			    ERR_UPSTREAM);
			return;
		}
		/* The upstream's own refusal (its OCI error), recorded. */
		text = docfetch_text(&p->doc, &len);
		errs_parse_code(text, len, req->up_error,
		    sizeof(req->up_error));
		ctype = docfetch_field(&p->doc, "Content-Type");
		req_respond_simple(req, p->doc.status, ctype != NULL &&
		    *ctype != '\0' ? ctype : "application/json", text, NULL);
		return;
	}
	p->status = p->doc.status;
	/*
	 * A DELETE says nothing of the upstream's referrers: the tag is
	 * read anyway (when it has the API, there is none, or a stale one
	 * that should not list a deleted manifest either).  It holds the
	 * subject's lock already.
	 */
	if (p->deleting) {
		rf_push_read(p);
		return;
	}
	if ((v = docfetch_field(&p->doc, "Docker-Content-Digest")) != NULL &&
	    router_valid_digest(v, strlen(v)) && strlen(v) < sizeof(p->digest))
		snprintf(p->digest, sizeof(p->digest), "%s", v);
	if (docfetch_field(&p->doc, "OCI-Subject") != NULL) {
		/* The upstream keeps its own referrers. */
		rf_set_absent(req, 0);
		p->subject_ok = 1;
		rf_push_answer(p);
		return;
	}
	rf_set_absent(req, 1);
	p->phase = RF_WAIT;
	if (rf_lock_take(p))
		rf_push_read(p);
	/* else ev_go starts it */
}

static void
rf_push_done(void *arg, enum pc_err err, const char *detail)
{
	struct rf_push	*p = arg;
	char		 why[64];

	if (p->phase == RF_GET_MANIFEST) {
		rf_delete_read(p, err);
		return;
	}
	if (p->phase == RF_PUT_MANIFEST) {
		if (err != ERR_NONE)
			req_fail(p->req, err, detail);
		else
			rf_push_put_done(p);
		return;
	}
	if (err != ERR_NONE) {
		rf_push_give_up(p, detail);
		return;
	}
	if (p->phase == RF_READ) {
		rf_push_read_done(p);
		return;
	}
	if (p->doc.status == 400 && rf_push_prune(p))
		return;
	if (p->doc.status / 100 != 2) {
		snprintf(why, sizeof(why), "upstream answered %d to the "
		    "index write", p->doc.status);
		rf_push_give_up(p, why);
		return;
	}
	/* A cached record of the tag is stale now. */
	cache_invalidate_tag_name(p->ctx, p->up, p->upname, p->tag);
	/* Written: read it back, another writer may have come between. */
	rf_push_read(p);
}

/* Read the subject's referrers tag (holding the subject's lock). */
static void
rf_push_read(struct rf_push *p)
{
	char	path[OCI_NAME_MAX + RF_TAG_MAX + 32];
	char	scope[OCI_NAME_MAX + 48];

	p->phase = RF_READ;
	snprintf(path, sizeof(path), "/v2/%s/manifests/%s", p->upname,
	    p->tag);
	snprintf(scope, sizeof(scope), "repository:%s:pull,push", p->upname);
	docfetch_send(&p->doc, p->ctx, p->conf, p->up, p->logid, HTTP_GET,
	    path, scope, "Accept", RF_INDEX_MT, NULL, p->conf->manifest_bytes,
	    RF_TOO_LARGE);
}

static void
rf_push_go_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct rf_push	*p = arg;

	if (p->deleting && p->status == 0)
		rf_delete_send(p);
	else
		rf_push_read(p);
}

/*
 * The descriptor the index gets for a pushed manifest (spec, "Listing
 * Referrers"): its mediaType, digest and size, its artifactType (else
 * its config's mediaType) and its annotations.
 */
static json_t *
rf_descriptor(json_t *m, const char *ctype, const char *digest,
    size_t size)
{
	json_t		*d, *a;
	const char	*mt, *at;

	if ((mt = json_string_value(json_object_get(m, "mediaType"))) ==
	    NULL)
		mt = ctype != NULL && *ctype != '\0' ? ctype : RF_MANIFEST_MT;
	if ((at = json_string_value(json_object_get(m, "artifactType"))) ==
	    NULL)
		at = json_string_value(json_object_get(
		    json_object_get(m, "config"), "mediaType"));
	d = json_pack("{s:s, s:s, s:I}", "mediaType", mt, "digest", digest,
	    "size", (json_int_t)size);
	if (d == NULL)
		fatal("json_pack");
	if (at != NULL)
		json_object_set_new(d, "artifactType", json_string(at));
	if (json_is_object(a = json_object_get(m, "annotations")))
		json_object_set(d, "annotations", a);
	return (d);
}

/*
 * Send a manifest PUT with a subject (referrers_push_wants() said so) as
 * the request's UPSTREAM stage: the upstream first, then the subject's
 * referrers tag when the upstream keeps none.
 */
/* A push or delete of the request's manifest, as its stage. */
static struct rf_push *
rf_push_new(struct req *req)
{
	struct rf_push	*p;

	if ((p = calloc(1, sizeof(*p))) == NULL)
		fatal("calloc");
	p->req = req;
	p->ctx = req->c->ctx;
	config_ref(req->conf);
	p->conf = req->conf;
	p->up = req->up;
	snprintf(p->upname, sizeof(p->upname), "%s", req->upname);
	snprintf(p->logid, sizeof(p->logid), "%llu.%u",
	    (unsigned long long)req->c->id, req->seq);
	docfetch_init(&p->doc, rf_push_done, p);
	if ((p->ev_go = evtimer_new(p->ctx->base, rf_push_go_cb, p)) ==
	    NULL)
		fatal("evtimer_new");
	req_stage_set(req, &rf_push_stage_ops, p);
	return (p);
}

void
referrers_push_start(struct req *req)
{
	struct rf_push	*p;
	struct evbuffer	*body = req->body_read;
	json_t		*m;
	json_error_t	 jerr;
	const char	*ctype;
	char		 path[OCI_NAME_MAX + OCI_REF_MAX + 32];
	char		 scope[OCI_NAME_MAX + 48];

	req->body_read = NULL;		/* ours now, then the fetch's */
	p = rf_push_new(req);
	m = json_loadb((const char *)evbuffer_pullup(body, -1),
	    evbuffer_get_length(body), 0, &jerr);
	if (m == NULL || !rf_subject(m, p->subject, sizeof(p->subject)) ||
	    tagpol_digest(req->route.ref_digest ? req->route.ref : NULL,
	    body, p->digest, sizeof(p->digest)) == -1)
		fatalx("%s: a manifest referrers_push_wants() took",
		    __func__);
	ctype = headers_get(&req->msg->hdrs, "Content-Type");
	p->desc = rf_descriptor(m, ctype, p->digest,
	    evbuffer_get_length(body));
	json_decref(m);
	p->key = rf_key(req, p->subject);
	rf_tag(p->subject, p->tag, sizeof(p->tag));
	log_debug("%s referrers push subject=%s digest=%s", p->logid,
	    p->subject, p->digest);
	p->phase = RF_PUT_MANIFEST;
	snprintf(path, sizeof(path), "/v2/%s/manifests/%s", req->upname,
	    req->route.ref);
	snprintf(scope, sizeof(scope), "repository:%s:pull,push",
	    req->upname);
	docfetch_send(&p->doc, p->ctx, p->conf, p->up, p->logid, HTTP_PUT,
	    path, scope, "Content-Type", ctype != NULL ? ctype :
	    RF_MANIFEST_MT, body, RF_ERRBODY_MAX, RF_TOO_LARGE);
}

/* --- a manifest deleted by digest --- */

/*
 * Whether a routed manifest DELETE by digest was not read yet: then
 * referrers_delete_start() reads it for a `subject` first.
 */
int
referrers_delete_wants(struct req *req)
{
	return (req->route.ep == OCI_EP_MANIFEST &&
	    req->msg->method == HTTP_DELETE && req->route.ref_digest &&
	    strlen(req->route.ref) < RF_DIGEST_MAX && !req->rf_checked);
}

/*
 * Read the manifest a DELETE by digest names (a gate of DISPATCH, like
 * tagpol.c's): one with a subject is deleted by this stage, which then
 * takes it out of its subject's referrers tag.
 */
void
referrers_delete_start(struct req *req)
{
	struct rf_push	*p;
	char		 path[OCI_NAME_MAX + OCI_REF_MAX + 32];
	char		 scope[OCI_NAME_MAX + 48];

	p = rf_push_new(req);
	p->deleting = 1;
	snprintf(p->digest, sizeof(p->digest), "%.*s",
	    (int)sizeof(p->digest) - 1, req->route.ref); /* fits: wants */
	p->phase = RF_GET_MANIFEST;
	snprintf(path, sizeof(path), "/v2/%s/manifests/%s", req->upname,
	    req->route.ref);
	snprintf(scope, sizeof(scope), "repository:%s:pull", req->upname);
	docfetch_send(&p->doc, p->ctx, p->conf, p->up, p->logid, HTTP_GET,
	    path, scope, "Accept", RF_ACCEPT, NULL, p->conf->manifest_bytes,
	    RF_TOO_LARGE);
}

/*
 * The manifest was read.  Without a subject (or not read: the DELETE's
 * own answer will say why) the DELETE goes on as any other; with one,
 * it is sent from here.
 */
static void
rf_delete_read(struct rf_push *p, enum pc_err err)
{
	struct req	*req = p->req;
	json_t		*m = NULL;
	json_error_t	 jerr;
	const char	*text;
	size_t		 len;

	if (err == ERR_NONE && p->doc.status == 200) {
		text = docfetch_text(&p->doc, &len);
		m = json_loadb(text, len, 0, &jerr);
	}
	if (m == NULL || !rf_subject(m, p->subject, sizeof(p->subject))) {
		json_decref(m);
		req->rf_checked = 1;
		req_stage_next(req);	/* retires p */
		return;
	}
	json_decref(m);
	p->key = rf_key(req, p->subject);
	rf_tag(p->subject, p->tag, sizeof(p->tag));
	log_debug("%s referrers delete subject=%s digest=%s", p->logid,
	    p->subject, p->digest);
	req_set_state(req, REQ_UPSTREAM);
	/*
	 * The lock first: a push that read the index while this manifest
	 * is deleted would write it back listing a manifest that is gone,
	 * which registry 2.8 refuses (400 MANIFEST_BLOB_UNKNOWN).
	 */
	p->phase = RF_WAIT;
	if (rf_lock_take(p))
		rf_delete_send(p);
	/* else ev_go starts it */
}

/* Send the DELETE (holding the subject's lock). */
static void
rf_delete_send(struct rf_push *p)
{
	char	path[OCI_NAME_MAX + OCI_REF_MAX + 32];
	char	scope[OCI_NAME_MAX + 48];

	p->phase = RF_PUT_MANIFEST;
	snprintf(path, sizeof(path), "/v2/%s/manifests/%s", p->upname,
	    p->digest);
	snprintf(scope, sizeof(scope), "repository:%s:delete", p->upname);
	docfetch_send(&p->doc, p->ctx, p->conf, p->up, p->logid, HTTP_DELETE,
	    path, scope, "Accept", "*/*", NULL, RF_ERRBODY_MAX, RF_TOO_LARGE);
}

static const struct req_stage_ops rf_push_stage_ops = {
	"referrers_push",
	NULL,
	rf_push_gone,
	rf_push_free
};
