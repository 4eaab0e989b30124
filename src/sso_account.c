/*
 * sso_account.c: what a signed-in person sees and does on the landing
 * page (sso.c signs them in and routes the forms here): their secrets,
 * listed, created and revoked by Lua scripts on the sign-in's Redis link
 * (each one transaction: the per-person bound, the subject's revocation
 * time, the owner check, the revocation PUBLISHed to every instance);
 * their recent audit records from the audit stream's per-subject index
 * on the audit writer's link; then the page (sso_page.c).
 *
 * A secret made here is a gateway secret like `portcullis secret
 * create`'s (secret.c's form and record), also listed in the person's
 * set <secrets.key_prefix>subject:<subject>; it is handed to the page
 * once and wiped with the operation.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <hiredis/hiredis.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "portcullis.h"
#include "audit.h"
#include "oidc_client.h"
#include "rds.h"
#include "revoke.h"
#include "secret.h"
#include "sso.h"

#define SSO_ROWS_FIELDS		32	/* fields of one secret record */

static void
sso_render(struct sso_op *op)
{
	struct req		*req = sso_take(op);
	struct sso_view		 v;
	struct headers		 h;
	struct wbuf		 b;
	char			 host[300];
	int			 n;

	memset(&v, 0, sizeof(v));
	v.signed_in = 1;
	v.subject = op->ti->subject;
	v.name = json_string_value(json_object_get(op->sess, "name"));
	v.email = json_string_value(json_object_get(op->sess, "email"));
	v.groups = (const char *const *)op->ti->groups;
	v.ngroups = op->ti->ngroups;
	v.csrf = json_string_value(json_object_get(op->sess, "csrf"));
	v.session_expires = json_integer_value(json_object_get(op->sess,
	    "expires"));
	v.policy = req->conf->policy;
	v.principal = &req->principal;
	v.secrets = op->secrets;
	v.nsecrets = op->nsecrets;
	v.secrets_failed = op->secrets_failed;
	v.activity = op->activity;
	v.nactivity = op->nactivity;
	v.activity_note = op->activity_note;
	v.new_secret = op->new_secret;
	v.notice = op->notice;
	if ((n = req_external_base(req, host, sizeof(host))) < 0)
		snprintf(host, sizeof(host), "REGISTRY");
	v.registry_host = strstr(host, "://") != NULL ? strstr(host, "://") +
	    3 : host;
	v.registry_http = strncmp(host, "http://", 7) == 0;
	wbuf_init(&b);
	sso_page_landing(&b, &v);
	sso_page_headers(&h);
	sso_answer(req, 200, &b, &h);
	headers_clear(&h);
	wbuf_free(&b);
	sso_op_free(op);
}

/* Audit records are written with ms times. */
static char *
sso_fmt_ms(const char *ms)
{
	struct tm	 tm;
	time_t		 t = (time_t)(strtoll(ms, NULL, 10) / 1000);
	char		 buf[32];

	gmtime_r(&t, &tm);
	strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S", &tm);
	return (strdup(buf));
}

static void
sso_activity_record(struct sso_op *op, redisReply *r, int idx)
{
	static const enum audit_field	 fs[] = { AF_ACTION, AF_METHOD,
	    AF_PATH, AF_REPOSITORY, AF_REFERENCE, AF_STATUS, AF_DECISION };
	struct sso_activity_row	*a;
	struct audit_fields	 fl;
	const char		*id;
	char			**slot[7], *t;
	size_t			 i;

	/* Either layout of the stream (audit.h): aq_entry() reads both. */
	if (r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 1 &&
	    (size_t)idx < op->nact_ids &&
	    aq_entry(r->element[0], &id, &fl) == 0) {
		a = &op->activity[idx];
		slot[0] = &a->action;
		slot[1] = &a->method;
		slot[2] = &a->path;
		slot[3] = &a->repository;
		slot[4] = &a->reference;
		slot[5] = &a->status;
		slot[6] = &a->decision;
		for (i = 0; i < 7; i++)
			if (*slot[i] == NULL && (*slot[i] = strndup(
			    fl.v[fs[i]], fl.len[fs[i]])) == NULL)
				fatal("strndup");
		if (a->time == NULL && fl.len[AF_TIME] > 0) {
			if ((t = strndup(fl.v[AF_TIME],
			    fl.len[AF_TIME])) == NULL)
				fatal("strndup");
			a->time = sso_fmt_ms(t);
			free(t);
		}
	}
	if (op->pending > 0)
		return;
	sso_render(op);
}

static void
sso_activity_index(struct sso_op *op, redisReply *r, int idx)
{
	const struct config_audit	*ac = op->req->conf->audit;
	struct rds			*l = audit_redis(op->ctx);
	const char			*argv[4];
	struct aq_refs			 it;
	struct audit_fields		 fl;
	char				 id[AUDIT_ID_MAX];
	size_t				 i, n;

	if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
		op->activity_note = "The audit store did not answer.";
		sso_render(op);
		return;
	}
	n = r->elements;
	if (n > op->req->conf->identity->sso->activity_records)
		n = op->req->conf->identity->sso->activity_records;
	if ((op->act_ids = calloc(n + 1, sizeof(char *))) == NULL ||
	    (op->activity = calloc(n + 1, sizeof(*op->activity))) == NULL)
		fatal("calloc");
	/* An index entry holds one ref or several (audit.h). */
	for (i = 0; i < r->elements && op->nact_ids < n; i++) {
		if (aq_refs_init(&it, r->element[i]) == -1)
			continue;
		while (op->nact_ids < n && aq_refs_next(&it, id, &fl) == 1)
			if ((op->act_ids[op->nact_ids++] = strdup(id)) ==
			    NULL)
				fatal("strdup");
	}
	op->nactivity = op->nact_ids;
	for (i = 0; i < op->nact_ids; i++) {
		argv[0] = "XRANGE";
		argv[1] = ac->stream;
		argv[2] = op->act_ids[i];
		argv[3] = op->act_ids[i];
		if (sso_send(op, l, sso_activity_record, (int)i, 4, argv) ==
		    -1) {
			op->activity_note = "The audit store is not "
			    "connected.";
			break;
		}
	}
	if (op->pending == 0)
		sso_render(op);
}

/* The person's recent audit records (its subject index), then render. */
static void
sso_activity(struct sso_op *op)
{
	const struct config_audit	*ac = op->req->conf->audit;
	char				 key[1024], count[32];
	const char			*argv[6];

	if (op->req->conf->identity->sso->activity_records == 0) {
		op->activity_note = "Not shown here (activity_records 0).";
		sso_render(op);
		return;
	}
	if (ac == NULL || op->ctx->audit == NULL) {
		op->activity_note = "No audit log is configured.";
		sso_render(op);
		return;
	}
	snprintf(key, sizeof(key), "%s:subject:%s", ac->stream,
	    op->ti->subject);
	snprintf(count, sizeof(count), "%zu",
	    op->req->conf->identity->sso->activity_records);
	argv[0] = "XREVRANGE";
	argv[1] = key;
	argv[2] = "+";
	argv[3] = "-";
	argv[4] = "COUNT";
	argv[5] = count;
	if (sso_send(op, audit_redis(op->ctx), sso_activity_index, 0, 6,
	    argv) == -1) {
		op->activity_note = "The audit store is not connected.";
		sso_render(op);
	}
}

/* Newest first. */
static int
sso_secret_cmp(const void *a, const void *b)
{
	const struct sso_secret_row	*x = a, *y = b;

	return (x->created < y->created ? 1 : x->created > y->created ? -1 :
	    strcmp(x->id, y->id));
}

static void
sso_secrets_listed(struct sso_op *op, redisReply *r, int idx)
{
	struct secret_rec	 rec;
	struct sso_secret_row	*row;
	redisReply		*e, *h;
	const char		*names[SSO_ROWS_FIELDS], *vals[SSO_ROWS_FIELDS];
	const char		*err;
	size_t			 nl[SSO_ROWS_FIELDS], vl[SSO_ROWS_FIELDS];
	size_t			 i, j, n;

	if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
		op->secrets_failed = 1;
		sso_activity(op);
		return;
	}
	if ((op->secrets = calloc(r->elements + 1,
	    sizeof(*op->secrets))) == NULL)
		fatal("calloc");
	for (i = 0; i < r->elements; i++) {
		e = r->element[i];
		if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
		    e->element[0]->type != REDIS_REPLY_STRING ||
		    e->element[0]->len != SECRET_ID_LEN ||
		    (h = e->element[1])->type != REDIS_REPLY_ARRAY ||
		    h->elements % 2 != 0 || h->elements / 2 > SSO_ROWS_FIELDS)
			continue;
		n = h->elements / 2;
		for (j = 0; j < n; j++) {
			names[j] = h->element[2 * j]->str;
			nl[j] = h->element[2 * j]->len;
			vals[j] = h->element[2 * j + 1]->str;
			vl[j] = h->element[2 * j + 1]->len;
		}
		if (secret_rec_parse(&rec, e->element[0]->str, names, nl,
		    vals, vl, n, (size_t)op->req->conf->secrets_max_groups,
		    &err) == -1)
			continue;
		/* The index is the person's; the record must agree. */
		if (strcmp(rec.subject, op->ti->subject) == 0) {
			row = &op->secrets[op->nsecrets++];
			snprintf(row->id, sizeof(row->id), "%s", rec.id);
			if ((row->name = strdup(rec.name)) == NULL)
				fatal("strdup");
			row->created = rec.created;
			row->expires = rec.expires;
			row->last_used = rec.last_used;
			row->revoked = rec.revoked;
		}
		secret_rec_clear(&rec);
	}
	qsort(op->secrets, op->nsecrets, sizeof(*op->secrets),
	    sso_secret_cmp);
	sso_activity(op);
}

/* KEYS[1] the person's index; ARGV: the record prefix, the most read. */
static const char sso_list_lua[] =
    "local ids = redis.call('SMEMBERS', KEYS[1])\n"
    "table.sort(ids)\n"
    "local out = {}\n"
    "for i, id in ipairs(ids) do\n"
    "  if i > tonumber(ARGV[2]) then break end\n"
    "  local h = redis.call('HGETALL', ARGV[1] .. id)\n"
    "  if #h > 0 then out[#out + 1] = {id, h} end\n"
    "end\n"
    "return out\n";

/* The landing page: the person's secrets, activity, then render. */
void
sso_landing(struct sso_op *op)
{
	const struct config	*conf = op->req->conf;
	char			 key[1024], max[32];
	const char		*argv[6];

	snprintf(key, sizeof(key), "%ssubject:%s", conf->secrets_key_prefix,
	    op->ti->subject);
	snprintf(max, sizeof(max), "%zu", conf->identity->sso->max_secrets);
	argv[0] = "EVAL";
	argv[1] = sso_list_lua;
	argv[2] = "1";
	argv[3] = key;
	argv[4] = conf->secrets_key_prefix;
	argv[5] = max;
	if (sso_send(op, sso_link(op->ctx), sso_secrets_listed, 0, 6,
	    argv) == -1) {
		op->secrets_failed = 1;
		sso_activity(op);
	}
}

/* --- forms: create, revoke, sign out --- */

/*
 * --- the provider re-check before a secret is made ---
 *
 * A person disabled at the provider would otherwise keep their browser
 * session, and make 90-day secrets with it, until it ends.  The code
 * exchange's provider access token is kept in the session record, sealed
 * (token_idp.c's AES-256-GCM) under a key derived from the session
 * cookie, which is not stored: a Redis dump holds no usable provider
 * token.  Creating a secret first asks the provider's userinfo endpoint
 * with it; a refusal (a disabled person, an ended provider session, an
 * expired token), another sub, or no token makes no secret.
 */

static void
sso_pat_key(const struct sso_op *op, unsigned char ek[32])
{
	EVP_MD_CTX	*m;

	if ((m = EVP_MD_CTX_new()) == NULL)
		fatal("EVP_MD_CTX_new");
	if (EVP_DigestInit_ex(m, EVP_sha256(), NULL) != 1 ||
	    EVP_DigestUpdate(m, "portcullis sso provider token", 29) != 1 ||
	    EVP_DigestUpdate(m, op->sid, strlen(op->sid)) != 1 ||
	    EVP_DigestFinal_ex(m, ek, NULL) != 1)
		fatalx("sha256");
	EVP_MD_CTX_free(m);
}

/*
 * Seal the code exchange's access token into the new session (its
 * Redis key is key); 0, or -1 when there is none to keep (the re-check
 * then refuses: sign in again).
 */
int
sso_keep_provider_token(struct sso_op *op, json_t *doc, const char *key)
{
	json_t		*at = json_object_get(doc, "access_token"), *j;
	json_t		*ei = json_object_get(doc, "expires_in");
	unsigned char	 ek[32];
	char		*pt, *sealed;
	int64_t		 exp = 0;

	if (!json_is_string(at) || json_string_length(at) == 0 ||
	    json_string_length(at) >
	    op->req->conf->identity->sso->max_provider_token_bytes)
		return (-1);
	if (json_is_integer(ei) && json_integer_value(ei) > 0 &&
	    json_integer_value(ei) < 366 * 86400)
		exp = (int64_t)time(NULL) + json_integer_value(ei);
	if ((j = json_pack("{s:O, s:I}", "at", at, "exp", (json_int_t)exp)) ==
	    NULL || (pt = json_dumps(j, JSON_COMPACT)) == NULL)
		fatal("json");
	json_decref(j);
	sso_pat_key(op, ek);
	sealed = tokidp_seal_with(ek, key, pt);
	OPENSSL_cleanse(ek, sizeof(ek));
	OPENSSL_cleanse(pt, strlen(pt));
	free(pt);
	if (sealed == NULL)
		return (-1);
	json_object_set_new(op->sess, "pat", json_string(sealed));
	free(sealed);
	return (0);
}

static void
sso_recheck_refused(struct sso_op *op, const char *reason, const char *why)
{
	op->req->auth_failure = reason;
	log_info("%llu.%u sso recheck_refused subject=\"%s\" why=\"%s\"",
	    (unsigned long long)op->req->c->id, op->req->seq,
	    op->ti->subject, why);
	sso_op_message(op, 403, "Sign in again", "The identity provider "
	    "no longer vouches for this sign-in (it ended there, or the "
	    "account was disabled), so no secret was made. Sign in again "
	    "to create one.", 1);
}

static void
sso_userinfo_answer(void *arg, json_t *doc, const char *error,
    const char *why)
{
	struct sso_op	*op = arg;
	const char	*want, *sub;

	op->treq = NULL;
	if (doc == NULL && error == NULL) {
		log_warn("%llu.%u sso recheck_failed why=\"%s\"",
		    (unsigned long long)op->req->c->id, op->req->seq, why);
		sso_op_message(op, 503, "Try again", "The identity provider "
		    "could not be asked whether your sign-in still holds; no "
		    "secret was made. Try again in a moment.", 0);
		return;
	}
	if (doc == NULL) {
		sso_recheck_refused(op, "idp_refused", why);
		return;
	}
	want = json_string_value(json_object_get(op->sess, "idp_sub"));
	sub = json_string_value(json_object_get(doc, "sub"));
	if (want == NULL || sub == NULL || strcmp(want, sub) != 0) {
		sso_recheck_refused(op, "idp_subject_mismatch", "userinfo "
		    "names another subject");
		return;
	}
	sso_create(op);
}

/* POST /ui/secrets: ask the provider first (sso_create when it agrees). */
void
sso_recheck(struct sso_op *op)
{
	struct req	*req = op->req;
	const char	*sealed, *at, *why, *key;
	unsigned char	 ek[32];
	char		 k[512], logid[64];
	json_t		*rec;
	int64_t		 exp;

	sealed = json_string_value(json_object_get(op->sess, "pat"));
	if (sealed == NULL) {
		sso_recheck_refused(op, "idp_no_token", "the session holds no "
		    "provider access token");
		return;
	}
	snprintf(k, sizeof(k), "%ssession:%s",
	    req->conf->identity->sso->key_prefix, op->sid_hash);
	key = k;
	sso_pat_key(op, ek);
	rec = tokidp_open_with(ek, key, sealed, strlen(sealed));
	OPENSSL_cleanse(ek, sizeof(ek));
	if (rec == NULL || (at = json_string_value(json_object_get(rec,
	    "at"))) == NULL) {
		json_decref(rec);
		sso_recheck_refused(op, "idp_no_token", "the session's "
		    "provider token does not open");
		return;
	}
	exp = json_integer_value(json_object_get(rec, "exp"));
	if (exp != 0 && (int64_t)time(NULL) >= exp) {
		json_decref(rec);
		sso_recheck_refused(op, "idp_token_expired", "the session's "
		    "provider access token expired");
		return;
	}
	snprintf(logid, sizeof(logid), "%llu.%u sso",
	    (unsigned long long)req->c->id, req->seq);
	op->treq = oidc_userinfo_request(op->ctx, req->conf,
	    req->conf->identity->sso->issuer, at,
	    req->conf->identity->sso->max_token_response_bytes,
	    sso_userinfo_answer, op, logid, &why);
	json_decref(rec);	/* the request holds its own copy */
	if (op->treq == NULL) {
		log_warn("%s userinfo_endpoint_unusable why=\"%s\"", logid,
		    why);
		sso_op_message(op, 503, "Try again", "The identity provider's "
		    "userinfo endpoint cannot be used now, so whether your "
		    "sign-in still holds is unknown; no secret was made.", 0);
	}
}

/*
 * KEYS: the record, the id set, the person's index, the revocation hash.
 * ARGV: hash, subject, groups, name, created, expires, max, id, the
 * session's start.  One transaction: a person at max_secrets gets none; a
 * subject revoked after the session began gets none (the secret, stamped
 * now, would outlive the revocation); an id taken is never overwritten.
 */
static const char sso_create_lua[] =
    "if redis.call('SCARD', KEYS[3]) >= tonumber(ARGV[7]) then\n"
    "  return 'too_many' end\n"
    "local nb = 0\n"
    "for _, f in ipairs({'s:' .. ARGV[2], 'all'}) do\n"
    "  local t = redis.call('HGET', KEYS[4], f)\n"
    "  if t and tonumber(t) and tonumber(t) > nb then nb = tonumber(t) end\n"
    "end\n"
    "if nb > tonumber(ARGV[9]) then return 'revoked' end\n"
    "if redis.call('HSETNX', KEYS[1], 'hash', ARGV[1]) ~= 1 then\n"
    "  return 'collision' end\n"
    "redis.call('HSET', KEYS[1], 'subject', ARGV[2], 'groups', ARGV[3],\n"
    "  'name', ARGV[4], 'created', ARGV[5], 'expires', ARGV[6])\n"
    "redis.call('SADD', KEYS[2], ARGV[8])\n"
    "redis.call('SADD', KEYS[3], ARGV[8])\n"
    "return 'ok'\n";

static void
sso_created(struct sso_op *op, redisReply *r, int idx)
{
	if (r == NULL || (r->type != REDIS_REPLY_STATUS &&
	    r->type != REDIS_REPLY_STRING)) {
		explicit_bzero(op->new_secret, strlen(op->new_secret));
		free(op->new_secret);
		op->new_secret = NULL;
		op->notice = "The secret store did not answer: no secret was "
		    "made.";
	} else if (strcmp(r->str, "ok") != 0) {
		explicit_bzero(op->new_secret, strlen(op->new_secret));
		free(op->new_secret);
		op->new_secret = NULL;
		op->notice = strcmp(r->str, "too_many") == 0 ? "You hold as "
		    "many secrets as allowed (identity.sso.max_secrets): "
		    "revoke one first." : strcmp(r->str, "revoked") == 0 ?
		    "Your access is revoked for now: no secret was made." :
		    "No secret was made; try again.";
	} else {
		log_info("%llu.%u sso secret_created subject=\"%s\"",
		    (unsigned long long)op->req->c->id, op->req->seq,
		    op->ti->subject);
		op->req->decision = "allow";
	}
	sso_landing(op);
}

void
sso_create(struct sso_op *op)
{
	struct req		*req = op->req;
	const struct config	*conf = req->conf;
	const struct config_sso	*so = conf->identity->sso;
	char			 secret[SECRET_LEN + 1], id[SECRET_ID_LEN + 1];
	char			 name[SECRET_FIELD_MAX + 1], key[512], idx[1024];
	char			 ids[512], hex[2 * SECRET_HASH_LEN + 1];
	char			 created[32], expires[32], max[32], *gj;
	char			 since[32];
	unsigned char		 hash[SECRET_HASH_LEN];
	const char		*argv[16];
	int64_t			 now = (int64_t)time(NULL);

	if (url_query_get(op->form, strlen(op->form), "name", name,
	    sizeof(name)) == -1)
		name[0] = '\0';
	if (!secret_field_ok(name, 1) || strlen(name) > 64) {
		op->notice = "A secret's name is at most 64 printable "
		    "characters.";
		sso_landing(op);
		return;
	}
	if (op->ti->ngroups > (size_t)conf->secrets_max_groups) {
		op->notice = "You are in more groups than a secret holds "
		    "(secrets.max_groups).";
		sso_landing(op);
		return;
	}
	if (secret_generate(secret, id) == -1)
		fatalx("secret: no random bytes");
	secret_hash(secret, SECRET_LEN, hash);
	secret_hash_hex(hash, hex);
	if ((gj = secret_groups_json((const char *const *)op->ti->groups,
	    op->ti->ngroups)) == NULL)
		fatal("secret_groups_json");
	if ((op->new_secret = strdup(secret)) == NULL)
		fatal("strdup");
	explicit_bzero(secret, sizeof(secret));
	snprintf(key, sizeof(key), "%s%s", conf->secrets_key_prefix, id);
	snprintf(ids, sizeof(ids), "%sids", conf->secrets_key_prefix);
	snprintf(idx, sizeof(idx), "%ssubject:%s", conf->secrets_key_prefix,
	    op->ti->subject);
	snprintf(created, sizeof(created), "%lld", (long long)now);
	snprintf(expires, sizeof(expires), "%lld", (long long)(so->
	    secret_lifetime != 0 ? now + so->secret_lifetime : 0));
	snprintf(max, sizeof(max), "%zu", so->max_secrets);
	argv[0] = "EVAL";
	argv[1] = sso_create_lua;
	argv[2] = "4";
	argv[3] = key;
	argv[4] = ids;
	argv[5] = idx;
	argv[6] = conf->revocation_key;
	argv[7] = hex;
	argv[8] = op->ti->subject;
	argv[9] = gj;
	argv[10] = name;
	argv[11] = created;
	argv[12] = expires;
	argv[13] = max;
	argv[14] = id;
	snprintf(since, sizeof(since), "%lld", (long long)json_integer_value(
	    json_object_get(op->sess, "created")));
	argv[15] = since;
	if (sso_send(op, sso_link(op->ctx), sso_created, 0, 16, argv) == -1)
		sso_created(op, NULL, 0);
	free(gj);
}

/*
 * KEYS: the record, the person's index, the revocation hash.  ARGV:
 * subject, now, channel, id.  Only one's own secret; the first revocation
 * time stays, in the record and as the hash's x:ID (as `secret revoke`
 * writes it: an instance that misses the message learns it at its next
 * sync, revoke.c); every listening instance hears of it at once.
 */
static const char sso_revoke_lua[] =
    "if redis.call('SISMEMBER', KEYS[2], ARGV[4]) ~= 1 or\n"
    "  redis.call('HGET', KEYS[1], 'subject') ~= ARGV[1] then\n"
    "  return 'unknown' end\n"
    "redis.call('HSETNX', KEYS[1], 'revoked', ARGV[2])\n"
    "redis.call('HSETNX', KEYS[3], '" REVOKE_SECRET_FIELD "' .. ARGV[4],\n"
    "  redis.call('HGET', KEYS[1], 'revoked'))\n"
    "redis.call('PUBLISH', ARGV[3], 'secret ' .. ARGV[4])\n"
    "return 'ok'\n";

static void
sso_revoked(struct sso_op *op, redisReply *r, int idx)
{
	struct req	*req;
	struct headers	 h;

	if (r == NULL || (r->type != REDIS_REPLY_STATUS &&
	    r->type != REDIS_REPLY_STRING) || strcmp(r->str, "ok") != 0) {
		op->notice = r != NULL && (r->type == REDIS_REPLY_STATUS ||
		    r->type == REDIS_REPLY_STRING) ? "No such secret of "
		    "yours." : "The secret store did not answer: nothing was "
		    "revoked.";
		sso_landing(op);
		return;
	}
	req = sso_take(op);
	log_info("%llu.%u sso secret_revoked subject=\"%s\"",
	    (unsigned long long)req->c->id, req->seq, op->ti->subject);
	req->decision = "allow";
	sso_op_free(op);
	headers_init(&h);
	sso_redirect(req, 303, "/", &h);
	headers_clear(&h);
}

void
sso_revoke(struct sso_op *op)
{
	const struct config	*conf = op->req->conf;
	char			 id[64], key[512], idx[1024], now[32];
	char			 probe[SECRET_LEN + 1], pid[SECRET_ID_LEN + 1];
	const char		*argv[10];

	if (url_query_get(op->form, strlen(op->form), "id", id,
	    sizeof(id)) == -1 || strlen(id) != SECRET_ID_LEN ||
	    snprintf(probe, sizeof(probe), "%s%s_%s", SECRET_PREFIX, id,
	    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA") < 0 ||
	    secret_parse(probe, strlen(probe), pid) == -1) {
		op->notice = "No such secret of yours.";
		sso_landing(op);
		return;
	}
	snprintf(key, sizeof(key), "%s%s", conf->secrets_key_prefix, id);
	snprintf(idx, sizeof(idx), "%ssubject:%s", conf->secrets_key_prefix,
	    op->ti->subject);
	snprintf(now, sizeof(now), "%lld", (long long)time(NULL));
	argv[0] = "EVAL";
	argv[1] = sso_revoke_lua;
	argv[2] = "3";
	argv[3] = key;
	argv[4] = idx;
	argv[5] = conf->revocation_key;
	argv[6] = op->ti->subject;
	argv[7] = now;
	argv[8] = conf->revocation_channel;
	argv[9] = id;
	if (sso_send(op, sso_link(op->ctx), sso_revoked, 0, 10, argv) == -1)
		sso_revoked(op, NULL, 0);
}
