/*
 * token_idp.c: the provider session behind a terminal sign-in (README
 * "Sign-in from a terminal"), so that groups stay live.
 *
 *	GET /.well-known/portcullis	what `portcullis login` needs: the
 *					token endpoint and service, the
 *					issuer, the public CLI client and
 *					its device and token endpoints
 *	POST /token grant_type=password, password=<the provider's id_token>,
 *	    idp_refresh_token=<the provider's refresh token>
 *					the exchange: a gateway refresh
 *					token linked to the provider session
 *	POST /token grant_type=refresh_token (a linked refresh token)
 *					the re-check: the provider renews
 *					the session and says the groups now
 *
 * The exchange first renews the provider session once (grant_type=
 * refresh_token at the issuer's token endpoint as the CLI client): that
 * proves the provider refresh token is live and the id_token's subject's.
 * The provider's new refresh token, the subject and the fresh groups and
 * claims become a record in Redis under <sso.key_prefix>idp:<hex of
 * SHA-256("id" || jti)>, jti the gateway refresh token's (fresh random
 * bits, never stored); the record is AES-256-GCM sealed under SHA-256(
 * "key" || jti), so neither a Redis dump nor a log holds a usable
 * provider token.  The gateway refresh token carries `idp_link: true`
 * and lives identity.token.refresh_expires_in (not the id_token's few
 * minutes: the session is asked again at each refresh).
 *
 * The refresh grant on a linked token reads the record (gone: refused,
 * sign in again; Redis down: 503) and, unless the last check is younger
 * than sso.recheck_interval, renews the session at the provider: the
 * new id_token's groups (the issuer's prefix) are what the policy
 * decides on; invalid_grant (a disabled user, an ended session) ends
 * the link (record deleted, 401 idp_refused, audited).  Providers rotate
 * a public client's refresh token on use and treat a replayed one as
 * theft, so one check runs at a time per link: a lock key (SET NX PX);
 * a refresh that finds it held uses the last check's groups.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <hiredis/hiredis.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "portcullis.h"
#include "jose.h"
#include "jwk.h"
#include "oidc.h"
#include "oidc_client.h"
#include "rds.h"
#include "sso.h"
#include "token_int.h"

#define TOKIDP_JTI_BYTES	16
#define TOKIDP_LOCK_MS		30000	/* a crashed check's lock */
#define TOKIDP_WAIT_MS		250	/* a check in flight looked at */
#define TOKIDP_RECORD_MAX	65536	/* a sealed record's bytes */
#define TOKIDP_GROUPS_MAX	1024
#define TOKIDP_CLAIMS_MAX	256

struct tokidp_op {
	struct pc_ctx		*ctx;
	struct req		*req;		/* NULL once it went */
	int			 pending;	/* Redis replies on the way */
	int			 exchange;	/* else a refresh */
	int			 locked;
	int			 detached;	/* the request went first */
	int			 unverified;	/* groups not checked now */
	struct oidc_treq	*treq;
	char			 jti[JWK_B64_LEN(64) + 1];
	char			*key;		/* the record's Redis key */
	char			*lock;
	unsigned char		 ek[32];	/* the record's sealing key */
	char			*rt;		/* the provider's, in hand */
	char			*expect_sub;	/* the subject it must be */
	struct tok_ident	*fresh;		/* the principal to issue for */
	int64_t			 ttl_ms;	/* the record's */
	int64_t			 checked;	/* its last check, ms */
	struct event		*ev_wait;	/* for a check in flight */
	int64_t			 wait_until;	/* ms */
};

typedef void	 tokidp_step(struct tokidp_op *, redisReply *);

struct tokidp_cmd {
	struct tokidp_op	*op;
	tokidp_step		*fn;
};

static int64_t
tokidp_now_ms(void)
{
	struct timespec	ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return ((int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
}

static void
tokidp_free(struct tokidp_op *op)
{
	oidc_token_cancel(op->treq);
	if (op->ev_wait != NULL)
		event_free(op->ev_wait);
	if (op->rt != NULL) {
		OPENSSL_cleanse(op->rt, strlen(op->rt));
		free(op->rt);
	}
	free(op->key);
	free(op->lock);
	free(op->expect_sub);
	tok_ident_unref(op->fresh);
	OPENSSL_cleanse(op->ek, sizeof(op->ek));
	OPENSSL_cleanse(op->jti, sizeof(op->jti));
	free(op);
}

/* The stage's free hook: the request ended or went away. */
static void
tokidp_detach(void *arg)
{
	struct tokidp_op	*op = arg;

	op->req = NULL;
	/*
	 * A renewal under way may rotate the provider's refresh token: it
	 * finishes without the request, so the record keeps the new one
	 * (else the next refresh would replay the old one and lose the
	 * sign-in).  tokidp_answer() sees op->detached.
	 */
	if (op->treq != NULL && !op->exchange && op->fresh != NULL) {
		op->detached = 1;
		return;
	}
	oidc_token_cancel(op->treq);
	op->treq = NULL;
	if (op->pending == 0)
		tokidp_free(op);
}

static const struct req_stage_ops tokidp_stage_ops = {
	.name = "idp_session",
	.free = tokidp_detach,
};

/* Take the request back from op (its stage ends; op stays for now). */
static struct req *
tokidp_take(struct tokidp_op *op)
{
	struct req	*req = op->req;

	op->pending++;
	req_stage_end(req);
	op->pending--;
	return (req);
}

/* op is done: answered or handed back; freed once no reply is due. */
static void
tokidp_done(struct tokidp_op *op)
{
	if (op->pending == 0)
		tokidp_free(op);
}

/* Answer with an error and drop op (nothing: a detached op's caller). */
static void
tokidp_fail(struct tokidp_op *op, enum pc_err e, const char *msg)
{
	struct req	*req;

	if (op->req == NULL)
		return;
	req = tokidp_take(op);

	req_fail(req, e, msg);
	tokidp_done(op);
}

static void
tokidp_refuse(struct tokidp_op *op, const char *reason, const char *msg)
{
	struct req	*req;

	if (op->req == NULL)
		return;
	req = tokidp_take(op);

	token_refuse(req, reason, msg);
	tokidp_done(op);
}

static void
tokidp_on_reply(struct rds *l, redisReply *r, void *arg)
{
	struct tokidp_cmd	*c = arg;
	struct tokidp_op	*op = c->op;

	(void)l;
	op->pending--;
	if (op->req == NULL || c->fn == NULL) {
		if (op->req == NULL && op->pending == 0)
			tokidp_free(op);
	} else
		c->fn(op, r);
	free(c);
}

/* Send a command; fn(op, reply or NULL) follows (NULL fn: none).  -1. */
static int
tokidp_send(struct tokidp_op *op, tokidp_step *fn, int argc,
    const char **argv)
{
	struct tokidp_cmd	*c;
	struct rds		*l = sso_link(op->ctx);
	size_t			 lens[8];
	int			 i;

	if (l == NULL || argc > 8)
		return (-1);
	for (i = 0; i < argc; i++)
		lens[i] = strlen(argv[i]);
	if ((c = calloc(1, sizeof(*c))) == NULL)
		fatal("calloc");
	c->op = op;
	c->fn = fn;
	if (rds_command_argv(l, tokidp_on_reply, c, argc, argv, lens) == -1) {
		free(c);
		return (-1);
	}
	op->pending++;
	return (0);
}

/* The lock goes once a check ends, whatever its outcome. */
static void
tokidp_unlock(struct tokidp_op *op)
{
	const char	*argv[2] = { "DEL", op->lock };

	if (op->locked)
		(void)tokidp_send(op, NULL, 2, argv);
	op->locked = 0;
}

/* --- the sealed record --- */

/* Key and name of the record of the refresh token whose jti is op's. */
static void
tokidp_derive(struct tokidp_op *op, const char *prefix)
{
	unsigned char	 h[32];
	char		 hex[65];
	EVP_MD_CTX	*m;
	size_t		 i;

	if ((m = EVP_MD_CTX_new()) == NULL)
		fatal("EVP_MD_CTX_new");
	if (EVP_DigestInit_ex(m, EVP_sha256(), NULL) != 1 ||
	    EVP_DigestUpdate(m, "portcullis idp record id", 25) != 1 ||
	    EVP_DigestUpdate(m, op->jti, strlen(op->jti)) != 1 ||
	    EVP_DigestFinal_ex(m, h, NULL) != 1 ||
	    EVP_DigestInit_ex(m, EVP_sha256(), NULL) != 1 ||
	    EVP_DigestUpdate(m, "portcullis idp record key", 26) != 1 ||
	    EVP_DigestUpdate(m, op->jti, strlen(op->jti)) != 1 ||
	    EVP_DigestFinal_ex(m, op->ek, NULL) != 1)
		fatalx("sha256");
	EVP_MD_CTX_free(m);
	for (i = 0; i < sizeof(h); i++)
		snprintf(hex + 2 * i, 3, "%02x", h[i]);
	if (asprintf(&op->key, "%sidp:%s", prefix, hex) == -1 ||
	    asprintf(&op->lock, "%sidp:%s:lock", prefix, hex) == -1)
		fatal("asprintf");
}

/* AES-256-GCM: base64url(nonce || ciphertext || tag), new; NULL: no. */
static char *
tokidp_seal(const struct tokidp_op *op, const char *pt)
{
	EVP_CIPHER_CTX	*c;
	unsigned char	*buf;
	char		*out;
	size_t		 n = strlen(pt), olen;
	int		 len, fin;

	if (n > TOKIDP_RECORD_MAX / 2 ||
	    (buf = malloc(12 + n + 16)) == NULL)
		return (NULL);
	if ((c = EVP_CIPHER_CTX_new()) == NULL)
		fatal("EVP_CIPHER_CTX_new");
	if (RAND_bytes(buf, 12) != 1 ||
	    EVP_EncryptInit_ex(c, EVP_aes_256_gcm(), NULL, op->ek, buf) != 1 ||
	    EVP_EncryptUpdate(c, NULL, &len, (unsigned char *)op->key,
	    (int)strlen(op->key)) != 1 ||
	    EVP_EncryptUpdate(c, buf + 12, &len, (const unsigned char *)pt,
	    (int)n) != 1 ||
	    EVP_EncryptFinal_ex(c, buf + 12 + len, &fin) != 1 ||
	    EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, 16,
	    buf + 12 + n) != 1)
		fatalx("aes-256-gcm");
	EVP_CIPHER_CTX_free(c);
	olen = JWK_B64_LEN(12 + n + 16) + 1;
	if ((out = malloc(olen)) == NULL ||
	    jwk_b64url_encode(buf, 12 + n + 16, out, olen) == -1)
		fatal("tokidp_seal");
	OPENSSL_cleanse(buf, 12 + n + 16);
	free(buf);
	return (out);
}

/* The record's JSON, or NULL (not ours, altered, too long). */
static json_t *
tokidp_open(const struct tokidp_op *op, const char *s, size_t slen)
{
	EVP_CIPHER_CTX	*c;
	unsigned char	*buf, *pt;
	json_t		*doc = NULL;
	size_t		 n;
	int		 len, ok;

	if (slen > TOKIDP_RECORD_MAX || (buf = malloc(slen)) == NULL)
		return (NULL);
	if (jwk_b64url_decode(s, slen, buf, slen, &n) == -1 || n < 12 + 16 ||
	    (pt = malloc(n - 28 + 1)) == NULL) {
		free(buf);
		return (NULL);
	}
	if ((c = EVP_CIPHER_CTX_new()) == NULL)
		fatal("EVP_CIPHER_CTX_new");
	ok = EVP_DecryptInit_ex(c, EVP_aes_256_gcm(), NULL, op->ek,
	    buf) == 1 &&
	    EVP_DecryptUpdate(c, NULL, &len, (unsigned char *)op->key,
	    (int)strlen(op->key)) == 1 &&
	    EVP_DecryptUpdate(c, pt, &len, buf + 12, (int)(n - 28)) == 1 &&
	    EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, 16,
	    buf + n - 16) == 1 &&
	    EVP_DecryptFinal_ex(c, pt + len, &len) == 1;
	EVP_CIPHER_CTX_free(c);
	if (ok)
		doc = json_loadb((char *)pt, n - 28, JSON_REJECT_DUPLICATES,
		    NULL);
	OPENSSL_cleanse(pt, n - 28);
	free(pt);
	free(buf);
	if (doc != NULL && !json_is_object(doc)) {
		json_decref(doc);
		doc = NULL;
	}
	return (doc);
}

/* The principal a record holds (its last check), new; NULL: malformed. */
static struct tok_ident *
tokidp_record_ident(json_t *rec, int64_t exp)
{
	struct tok_ident	*ti;
	json_t			*g, *cl, *v;
	size_t			 i;
	const char		*sub;

	sub = json_string_value(json_object_get(rec, "sub"));
	g = json_object_get(rec, "groups");
	cl = json_object_get(rec, "claims");
	if (sub == NULL || !json_is_array(g) || !json_is_array(cl) ||
	    json_array_size(g) > TOKIDP_GROUPS_MAX ||
	    json_array_size(cl) > TOKIDP_CLAIMS_MAX)
		return (NULL);
	if ((ti = calloc(1, sizeof(*ti))) == NULL ||
	    (ti->subject = strdup(sub)) == NULL ||
	    (json_array_size(g) > 0 && (ti->groups = calloc(json_array_size(g),
	    sizeof(*ti->groups))) == NULL))
		fatal("tokidp_record_ident");
	ti->refcnt = 1;
	ti->method = AUTH_OIDC;
	ti->exp = exp;
	json_array_foreach(g, i, v) {
		if (!json_is_string(v)) {
			tok_ident_unref(ti);
			return (NULL);
		}
		if ((ti->groups[ti->ngroups++] = strdup(json_string_value(v)))
		    == NULL)
			fatal("strdup");
	}
	json_array_foreach(cl, i, v) {
		if (!json_is_string(json_array_get(v, 0)) ||
		    !json_is_string(json_array_get(v, 1))) {
			tok_ident_unref(ti);
			return (NULL);
		}
		(void)tok_ident_add_claim(ti,
		    json_string_value(json_array_get(v, 0)),
		    json_string_value(json_array_get(v, 1)),
		    json_array_size(cl));
	}
	return (ti);
}

/* --- issuing --- */

/* Issue for op->fresh: the exchange's tokens or the refresh's token. */
static void
tokidp_issue(struct tokidp_op *op)
{
	struct req		*req = tokidp_take(op);
	struct tok_ident	*old;

	if (op->exchange) {
		old = req->login;
		req->login = NULL;
		token_login_principal(req, op->fresh);
		op->fresh = NULL;
		tok_ident_unref(old);
		/* Read only while this call signs; req may be gone after. */
		req->idp_jti = op->jti;
		token_password_issue(req);
	} else {
		token_login_principal(req, op->fresh);
		op->fresh = NULL;
		token_refresh_issue(req);
	}
	tokidp_done(op);
}

static void
tokidp_stored(struct tokidp_op *op, redisReply *r)
{
	if (r == NULL || r->type != REDIS_REPLY_STATUS) {
		log_warn("%llu.%u idp_session record_not_stored",
		    (unsigned long long)op->req->c->id, op->req->seq);
		tokidp_fail(op, ERR_UNAVAILABLE, "the sign-in's session "
		    "could not be stored (Redis); try again");
		return;
	}
	tokidp_issue(op);
}

/*
 * Seal and store the record of op->fresh with op->rt; then fn (NULL:
 * nothing follows, and a failure is not answered).
 */
static void
tokidp_store(struct tokidp_op *op, tokidp_step *fn)
{
	json_t		*rec, *g, *cl, *pair;
	char		*pt, *sealed, px[32];
	const char	*argv[5];
	size_t		 i;

	rec = json_object();
	g = json_array();
	cl = json_array();
	for (i = 0; i < op->fresh->ngroups; i++)
		json_array_append_new(g, json_string(op->fresh->groups[i]));
	for (i = 0; i < op->fresh->nclaims; i++) {
		pair = json_array();
		json_array_append_new(pair,
		    json_string(op->fresh->claims[i].name));
		json_array_append_new(pair,
		    json_string(op->fresh->claims[i].value));
		json_array_append_new(cl, pair);
	}
	json_object_set_new(rec, "sub", json_string(op->fresh->subject));
	json_object_set_new(rec, "rt", json_string(op->rt));
	/* Groups not checked by this renewal are re-checked next time. */
	json_object_set_new(rec, "checked", json_integer(op->unverified ? 0 :
	    tokidp_now_ms()));
	json_object_set_new(rec, "groups", g);
	json_object_set_new(rec, "claims", cl);
	if ((pt = json_dumps(rec, JSON_COMPACT)) == NULL)
		fatal("json_dumps");
	json_decref(rec);
	sealed = tokidp_seal(op, pt);
	OPENSSL_cleanse(pt, strlen(pt));
	free(pt);
	if (sealed == NULL) {
		tokidp_unlock(op);
		if (fn != NULL)
			tokidp_fail(op, ERR_INTERNAL, "the provider's answer "
			    "is too large to keep");
		return;
	}
	snprintf(px, sizeof(px), "%lld", (long long)(op->ttl_ms > 1000 ?
	    op->ttl_ms : 1000));
	argv[0] = "SET";
	argv[1] = op->key;
	argv[2] = sealed;
	argv[3] = "PX";
	argv[4] = px;
	if (tokidp_send(op, fn, 5, argv) == -1) {
		free(sealed);
		tokidp_unlock(op);
		if (fn != NULL)
			tokidp_fail(op, ERR_UNAVAILABLE, "Redis is "
			    "unavailable");
		return;
	}
	free(sealed);
	tokidp_unlock(op);
}

static void
tokidp_dropped(struct tokidp_op *op, redisReply *r)
{
	(void)r;
	tokidp_refuse(op, "idp_refused", "the identity provider refused to "
	    "renew the sign-in (the account is disabled or the session "
	    "ended); sign in again with portcullis login");
}

/*
 * The answer to a renewal whose request went away: keep what the
 * provider said for the next refresh (a rotated refresh token, or the
 * end of the session); nobody is answered.
 */
static void
tokidp_answer_detached(struct tokidp_op *op, json_t *doc, const char *error)
{
	const char	*nrt, *argv[2];

	if (doc == NULL && error != NULL && strcmp(error, "invalid_grant") ==
	    0) {
		argv[0] = "DEL";
		argv[1] = op->key;
		(void)tokidp_send(op, NULL, 2, argv);
	} else if (doc != NULL && (nrt = json_string_value(json_object_get(doc,
	    "refresh_token"))) != NULL) {
		OPENSSL_cleanse(op->rt, strlen(op->rt));
		free(op->rt);
		if ((op->rt = strdup(nrt)) == NULL)
			fatal("strdup");
		op->unverified = 1;
		tokidp_store(op, NULL);	/* the record's groups, checked 0 */
	}
	tokidp_unlock(op);
	tokidp_done(op);
}

/*
 * A renewal whose groups are not taken (its id_token missing or refused):
 * a rotated refresh token is kept all the same, else the next refresh
 * would replay the spent one and the provider end the session.
 */
static void
tokidp_keep_rotated(struct tokidp_op *op, json_t *doc)
{
	const char	*nrt;

	if (op->exchange || op->fresh == NULL || (nrt = json_string_value(
	    json_object_get(doc, "refresh_token"))) == NULL)
		return;
	OPENSSL_cleanse(op->rt, strlen(op->rt));
	free(op->rt);
	if ((op->rt = strdup(nrt)) == NULL)
		fatal("strdup");
	op->unverified = 1;
	tokidp_store(op, NULL);
}

/* The provider's answer to the session's renewal. */
static void
tokidp_answer(void *arg, json_t *doc, const char *error, const char *why)
{
	struct tokidp_op	*op = arg;
	struct req		*req = op->req;
	struct tok_ident	*ti;
	const char		*idt, *nrt, *cwhy, *argv[2];
	char			 msg[256];

	op->treq = NULL;
	if (op->detached) {
		tokidp_answer_detached(op, doc, error);
		return;
	}
	if (doc == NULL && error != NULL && strcmp(error, "invalid_grant") ==
	    0) {
		log_info("%llu.%u idp_session refused by the provider",
		    (unsigned long long)req->c->id, req->seq);
		/* The link is over: its record goes (and the lock with it). */
		tokidp_unlock(op);
		argv[0] = "DEL";
		argv[1] = op->key;
		if (op->exchange || tokidp_send(op, tokidp_dropped, 2,
		    argv) == -1)
			tokidp_dropped(op, NULL);
		return;
	}
	if (doc == NULL) {
		tokidp_unlock(op);
		log_warn("%llu.%u idp_session recheck_failed why=\"%s\"",
		    (unsigned long long)req->c->id, req->seq, why);
		snprintf(msg, sizeof(msg), "the identity provider could not "
		    "be asked: %s", why);
		tokidp_fail(op, ERR_UNAVAILABLE, msg);
		return;
	}
	if ((idt = json_string_value(json_object_get(doc, "id_token"))) ==
	    NULL) {
		tokidp_keep_rotated(op, doc);
		tokidp_unlock(op);
		tokidp_refuse(op, "idp_no_id_token", "the identity provider "
		    "renewed the sign-in without an id_token (scope openid)");
		return;
	}
	if (cred_check_idp_now(req, idt, strlen(idt), &ti, &cwhy) !=
	    CRED_OK) {
		tokidp_keep_rotated(op, doc);
		tokidp_unlock(op);
		snprintf(msg, sizeof(msg), "the provider's id_token was "
		    "refused: %s", cwhy != NULL ? cwhy : "invalid");
		tokidp_refuse(op, cwhy != NULL ? cwhy : "invalid_credentials",
		    msg);
		return;
	}
	if (strcmp(ti->subject, op->expect_sub) != 0) {
		tok_ident_unref(ti);
		tokidp_unlock(op);
		tokidp_refuse(op, "idp_subject_changed", "the provider "
		    "session belongs to another subject");
		return;
	}
	tok_ident_unref(op->fresh);
	op->fresh = ti;
	/* Rotated (a public client's usually is): the new one from now. */
	if ((nrt = json_string_value(json_object_get(doc,
	    "refresh_token"))) != NULL) {
		OPENSSL_cleanse(op->rt, strlen(op->rt));
		free(op->rt);
		if ((op->rt = strdup(nrt)) == NULL)
			fatal("strdup");
	}
	log_info("%llu.%u idp_session rechecked groups=%zu",
	    (unsigned long long)req->c->id, req->seq, ti->ngroups);
	tokidp_store(op, tokidp_stored);
}

/* Renew the provider session with op->rt as the CLI client. */
static void
tokidp_ask(struct tokidp_op *op)
{
	const struct config_sso	*so = op->req->conf->identity->sso;
	struct req		*req = op->req;
	char			*form, *id, *rt, logid[64];
	const char		*why = NULL;
	size_t			 n;

	n = strlen(op->rt) * 3 + 1;
	if ((rt = malloc(n)) == NULL ||
	    (id = malloc(strlen(so->cli_client_id) * 3 + 1)) == NULL)
		fatal("malloc");
	if (url_pct_encode(op->rt, rt, n) == -1 ||
	    url_pct_encode(so->cli_client_id, id,
	    strlen(so->cli_client_id) * 3 + 1) == -1)
		fatalx("url_pct_encode");
	if (asprintf(&form, "grant_type=refresh_token&client_id=%s&"
	    "refresh_token=%s", id, rt) == -1)
		fatal("asprintf");
	OPENSSL_cleanse(rt, strlen(rt));
	free(rt);
	free(id);
	snprintf(logid, sizeof(logid), "%llu.%u idp_session",
	    (unsigned long long)req->c->id, req->seq);
	op->treq = oidc_token_request(op->ctx, req->conf, so->issuer,
	    so->cli_client_id, NULL, form, so->max_token_response_bytes,
	    tokidp_answer, op, logid, &why);
	OPENSSL_cleanse(form, strlen(form));
	free(form);
	if (op->treq == NULL) {
		tokidp_unlock(op);
		log_warn("%s token_endpoint_unusable why=\"%s\"", logid, why);
		tokidp_fail(op, ERR_UNAVAILABLE, "the identity provider's "
		    "token endpoint is not usable now");
	}
}

/* A new op as the request's stage; NULL when no terminal sign-in. */
static struct tokidp_op *
tokidp_new(struct req *req, const char *jti, const char *sub)
{
	const struct config_sso	*so;
	struct tokidp_op	*op;

	if (req->conf->identity == NULL ||
	    (so = req->conf->identity->sso) == NULL ||
	    so->cli_client_id == NULL || req->conf->redis == NULL)
		return (NULL);
	if ((op = calloc(1, sizeof(*op))) == NULL ||
	    (op->expect_sub = strdup(sub)) == NULL)
		fatal("calloc");
	op->ctx = req->c->ctx;
	op->req = req;
	snprintf(op->jti, sizeof(op->jti), "%s", jti);
	tokidp_derive(op, so->key_prefix);
	req_stage_set(req, &tokidp_stage_ops, op);
	return (op);
}

/* --- the exchange --- */

/* The issuer entry the terminal sign-in uses. */
static const struct config_oidc_issuer *
tokidp_issuer(const struct config *conf)
{
	size_t	i;

	for (i = 0; i < conf->identity->nissuers; i++)
		if (strcmp(conf->identity->issuers[i].name,
		    conf->identity->sso->issuer) == 0)
			return (&conf->identity->issuers[i]);
	return (NULL);
}

/*
 * POST /token, the password grant with idp_refresh_token: req->login is
 * the checked id_token (the password), req->tok_form the form.
 */
void
tokidp_exchange(struct req *req)
{
	const struct config_token	*tk = req->conf->identity->token;
	const struct config_oidc_issuer	*is;
	struct tokidp_op		*op;
	struct jose_peek		 pk;
	unsigned char			 rnd[TOKIDP_JTI_BYTES];
	char				 jti[JWK_B64_LEN(TOKIDP_JTI_BYTES) + 1];
	char				*v;
	size_t				 vlen = tk->max_token_bytes + 1;

	if (req->conf->identity->sso == NULL ||
	    req->conf->identity->sso->cli_client_id == NULL ||
	    req->conf->redis == NULL) {
		req_fail(req, ERR_BAD_REQUEST, "no terminal sign-in here "
		    "(identity.sso.cli_client_id): idp_refresh_token is not "
		    "taken");
		return;
	}
	if ((v = malloc(vlen)) == NULL)
		fatal("malloc");
	/* The id_token (checked already) must be the sign-in issuer's. */
	is = tokidp_issuer(req->conf);
	if (req->login == NULL || req->login->method != AUTH_OIDC ||
	    is == NULL || url_query_get(req->tok_form, req->tok_formlen,
	    "password", v, vlen) == -1 ||
	    jose_peek(v, strlen(v), tk->max_token_bytes, &pk) != JOSE_OK ||
	    strcmp(pk.issuer, is->issuer) != 0) {
		explicit_bzero(v, vlen);
		free(v);
		token_refuse(req, "wrong_issuer", "the exchange takes an "
		    "id_token of the sign-in's issuer as the password");
		return;
	}
	explicit_bzero(v, vlen);
	if (url_query_get(req->tok_form, req->tok_formlen,
	    "idp_refresh_token", v, vlen) == -1 || *v == '\0') {
		free(v);
		token_refuse(req, "no_refresh_token", "idp_refresh_token "
		    "empty or longer than identity.token.max_token_bytes");
		return;
	}
	if (RAND_bytes(rnd, sizeof(rnd)) != 1 ||
	    jwk_b64url_encode(rnd, sizeof(rnd), jti, sizeof(jti)) == -1)
		fatalx("RAND_bytes");
	op = tokidp_new(req, jti, req->login->subject);
	OPENSSL_cleanse(jti, sizeof(jti));
	op->exchange = 1;
	op->rt = v;
	op->ttl_ms = (int64_t)tk->refresh_expires_in * 1000;
	tokidp_ask(op);
}

/* --- the refresh grant --- */

static void	tokidp_rewait(struct tokidp_op *, redisReply *);

static void
tokidp_wait_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct tokidp_op	*op = arg;
	const char		*argv[2];

	(void)fd;
	(void)ev;
	if (op->req == NULL)
		return;
	argv[0] = "GET";
	argv[1] = op->key;
	if (tokidp_send(op, tokidp_rewait, 2, argv) == -1)
		tokidp_fail(op, ERR_UNAVAILABLE, "Redis is unavailable");
}

/* Look at the record again in TOKIDP_WAIT_MS. */
static void
tokidp_wait(struct tokidp_op *op)
{
	struct timeval	tv = { 0, TOKIDP_WAIT_MS * 1000 };

	if (op->ev_wait == NULL) {
		log_info("%llu.%u idp_session recheck_wait",
		    (unsigned long long)op->req->c->id, op->req->seq);
		op->wait_until = tokidp_now_ms() + TOKIDP_LOCK_MS;
		if ((op->ev_wait = evtimer_new(op->ctx->base, tokidp_wait_cb,
		    op)) == NULL)
			fatal("evtimer_new");
	}
	evtimer_add(op->ev_wait, &tv);
}

/* The record again, while a check is in flight: has it ended? */
static void
tokidp_rewait(struct tokidp_op *op, redisReply *r)
{
	struct tok_ident	*ti;
	json_t			*rec;
	const char		*sub;
	int64_t			 checked;

	if (r == NULL || (r->type != REDIS_REPLY_STRING &&
	    r->type != REDIS_REPLY_NIL)) {
		tokidp_fail(op, ERR_UNAVAILABLE, "Redis is unavailable");
		return;
	}
	if (r->type == REDIS_REPLY_NIL ||
	    (rec = tokidp_open(op, r->str, r->len)) == NULL) {
		tokidp_refuse(op, "idp_session_gone", "the sign-in's provider "
		    "session is gone; sign in again with portcullis login");
		return;
	}
	sub = json_string_value(json_object_get(rec, "sub"));
	checked = json_integer_value(json_object_get(rec, "checked"));
	if (sub != NULL && strcmp(sub, op->expect_sub) == 0 &&
	    checked > op->checked) {
		/* The check ended: its groups. */
		ti = tokidp_record_ident(rec, op->req->tok->exp);
		json_decref(rec);
		if (ti == NULL) {
			tokidp_refuse(op, "idp_session_gone", "the sign-in's "
			    "provider session is gone; sign in again with "
			    "portcullis login");
			return;
		}
		tok_ident_unref(op->fresh);
		op->fresh = ti;
		tokidp_issue(op);
		return;
	}
	json_decref(rec);
	if (tokidp_now_ms() >= op->wait_until) {
		log_info("%llu.%u idp_session recheck_wait_over",
		    (unsigned long long)op->req->c->id, op->req->seq);
		tokidp_fail(op, ERR_UNAVAILABLE, "a check of the sign-in with "
		    "the identity provider is under way and did not end; try "
		    "again");
		return;
	}
	tokidp_wait(op);
}

static void
tokidp_locked(struct tokidp_op *op, redisReply *r)
{
	if (r != NULL && r->type == REDIS_REPLY_STATUS) {
		op->locked = 1;
		tokidp_ask(op);
		return;
	}
	if (r == NULL || r->type != REDIS_REPLY_NIL) {
		tokidp_fail(op, ERR_UNAVAILABLE, "Redis is unavailable");
		return;
	}
	/*
	 * A check runs now: its predecessor's groups stand in when that
	 * check is as young as recheck_interval plus a lock's life allows.
	 * Older, the refresh waits for the check in flight (tokidp_rewait)
	 * rather than take groups the provider may have removed long ago
	 * (a client keeping one refresh in flight, or a provider that
	 * hangs, must not make them stand).
	 */
	if (tokidp_now_ms() - op->checked >= op->req->conf->identity->sso->
	    recheck_interval_ms + TOKIDP_LOCK_MS) {
		tokidp_wait(op);
		return;
	}
	log_info("%llu.%u idp_session recheck_in_flight",
	    (unsigned long long)op->req->c->id, op->req->seq);
	tokidp_issue(op);
}

static void
tokidp_got(struct tokidp_op *op, redisReply *r)
{
	const struct config_sso	*so = op->req->conf->identity->sso;
	json_t			*rec;
	const char		*sub, *rt, *argv[6];
	char			 px[32];
	int64_t			 checked;

	if (r == NULL || (r->type != REDIS_REPLY_STRING &&
	    r->type != REDIS_REPLY_NIL)) {
		tokidp_fail(op, ERR_UNAVAILABLE, "Redis is unavailable");
		return;
	}
	if (r->type == REDIS_REPLY_NIL ||
	    (rec = tokidp_open(op, r->str, r->len)) == NULL) {
		tokidp_refuse(op, "idp_session_gone", "the sign-in's provider "
		    "session is gone; sign in again with portcullis login");
		return;
	}
	sub = json_string_value(json_object_get(rec, "sub"));
	rt = json_string_value(json_object_get(rec, "rt"));
	checked = json_integer_value(json_object_get(rec, "checked"));
	op->checked = checked;
	if (sub == NULL || rt == NULL || strcmp(sub, op->expect_sub) != 0 ||
	    (op->fresh = tokidp_record_ident(rec, op->req->tok->exp)) ==
	    NULL) {
		json_decref(rec);
		tokidp_refuse(op, "idp_session_gone", "the sign-in's provider "
		    "session is gone; sign in again with portcullis login");
		return;
	}
	if ((op->rt = strdup(rt)) == NULL)
		fatal("strdup");
	json_decref(rec);
	op->ttl_ms = (op->req->tok->exp - tok_now()) * 1000;
	/* Checked recently enough (sso.recheck_interval): its groups. */
	if (so->recheck_interval_ms > 0 &&
	    tokidp_now_ms() - checked < so->recheck_interval_ms) {
		tokidp_issue(op);
		return;
	}
	/* op->fresh stays: a check already in flight lets it stand in. */
	snprintf(px, sizeof(px), "%d", TOKIDP_LOCK_MS);
	argv[0] = "SET";
	argv[1] = op->lock;
	argv[2] = "1";
	argv[3] = "NX";
	argv[4] = "PX";
	argv[5] = px;
	if (tokidp_send(op, tokidp_locked, 6, argv) == -1)
		tokidp_fail(op, ERR_UNAVAILABLE, "Redis is unavailable");
}

/* POST /token, the refresh grant, ti a linked refresh token. */
void
tokidp_refresh(struct req *req, struct tok_ident *ti)
{
	struct tokidp_op	*op;
	const char		*argv[2];

	if ((op = tokidp_new(req, ti->idp_link, ti->subject)) == NULL) {
		token_refuse(req, "idp_session_unconfigured", "terminal "
		    "sign-in is no longer configured here "
		    "(identity.sso.cli_client_id)");
		return;
	}
	argv[0] = "GET";
	argv[1] = op->key;
	if (tokidp_send(op, tokidp_got, 2, argv) == -1)
		tokidp_fail(op, ERR_UNAVAILABLE, "Redis is unavailable; the "
		    "sign-in cannot be checked");
}

/* --- discovery --- */

/* GET /.well-known/portcullis: what `portcullis login` needs. */
void
token_discovery(struct req *req)
{
	const struct config_token	*tk;
	const struct config_sso		*so;
	const struct config_oidc_issuer	*is;
	struct headers			 h;
	struct url			 u;
	struct origin			 o;
	json_t				*doc, *dev;
	char				 ep[2048], *s, *scope = NULL, *t;
	const char			*why = NULL;
	size_t				 i;

	if (req->msg->method != HTTP_GET && req->msg->method != HTTP_HEAD) {
		req_fail(req, ERR_METHOD, NULL);
		return;
	}
	if (req->conf->identity == NULL ||
	    (tk = req->conf->identity->token) == NULL || tk->keys == NULL) {
		req_fail(req, ERR_NOT_FOUND, "no token service configured");
		return;
	}
	doc = json_object();
	if (req->conf->external_url != NULL) {
		if (asprintf(&t, "%s/token", req->conf->external_url) == -1)
			fatal("asprintf");
		json_object_set_new(doc, "token_endpoint", json_string(t));
		free(t);
	} else
		json_object_set_new(doc, "token_endpoint",
		    json_string("/token"));
	json_object_set_new(doc, "service", json_string(tk->service != NULL ?
	    tk->service : req->conf->service));
	so = req->conf->identity->sso;
	if (so != NULL && so->cli_client_id != NULL &&
	    (is = tokidp_issuer(req->conf)) != NULL) {
		if (oidc_endpoint(req->c->ctx, so->issuer, OIDC_EP_DEVICE, ep,
		    sizeof(ep), &u, &o, &why) == -1) {
			json_decref(doc);
			log_warn("%llu.%u discovery device_endpoint why=\"%s\"",
			    (unsigned long long)req->c->id, req->seq, why);
			req_fail(req, ERR_UNAVAILABLE, "the identity "
			    "provider's device endpoint is not known yet");
			return;
		}
		dev = json_object();
		json_object_set_new(dev, "issuer", json_string(is->issuer));
		json_object_set_new(dev, "client_id",
		    json_string(so->cli_client_id));
		json_object_set_new(dev, "device_authorization_endpoint",
		    json_string(ep));
		if (oidc_endpoint(req->c->ctx, so->issuer, OIDC_EP_TOKEN, ep,
		    sizeof(ep), &u, &o, &why) == 0)
			json_object_set_new(dev, "token_endpoint",
			    json_string(ep));
		/* The browser sign-in's scopes, and a refresh token. */
		if ((scope = strdup("openid offline_access")) == NULL)
			fatal("strdup");
		for (i = 0; i < so->nscopes; i++) {
			if (strcmp(so->scopes[i], "openid") == 0 ||
			    strcmp(so->scopes[i], "offline_access") == 0)
				continue;
			if (asprintf(&t, "%s %s", scope, so->scopes[i]) == -1)
				fatal("asprintf");
			free(scope);
			scope = t;
		}
		if (so->nscopes == 0) {
			if (asprintf(&t, "%s profile email groups",
			    scope) == -1)
				fatal("asprintf");
			free(scope);
			scope = t;
		}
		json_object_set_new(dev, "scope", json_string(scope));
		free(scope);
		json_object_set_new(dev, "exchange", json_string("password "
		    "grant: password=id_token, idp_refresh_token="
		    "refresh_token"));
		json_object_set_new(doc, "device", dev);
	}
	if ((s = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS)) == NULL)
		fatal("json_dumps");
	json_decref(doc);
	headers_init(&h);
	headers_add(&h, "Cache-Control", 13, "no-store", 8);
	req_respond_simple(req, 200, "application/json", s, &h);
	headers_clear(&h);
	free(s);
}
