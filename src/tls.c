/*
 * tls.c: OpenSSL contexts for the listener and for upstream connections.
 * Server: TLS 1.2 or newer, the configured certificate and key, optional
 * client-certificate verification against a CA file.  Client: TLS 1.2 or
 * newer, peer verification against the system store or a CA file, SNI and
 * hostname checking on every connection.
 */
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <event2/bufferevent_ssl.h>

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "portcullis.h"

/* Longest client certificate subject kept (RFC 2253 text). */
#define TLS_SUBJECT_MAX		1024

static char *
tls_cause(const char *what, const char *file)
{
	char		*s;
	char		 buf[256];
	unsigned long	 e = ERR_get_error();

	ERR_error_string_n(e, buf, sizeof(buf));
	ERR_clear_error();
	if (asprintf(&s, "%s %s: %s", what, file ? file : "", buf) == -1)
		return (NULL);
	return (s);
}

/* A server context from the listener's TLS settings, or NULL with cause. */
SSL_CTX *
tls_server_ctx(const struct config *conf, char **cause)
{
	const struct config_tls	*t = conf->tls;
	SSL_CTX			*ctx;
	int			 mode;

	if ((ctx = SSL_CTX_new(TLS_server_method())) == NULL) {
		*cause = tls_cause("SSL_CTX_new", NULL);
		return (NULL);
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION |
	    SSL_OP_CIPHER_SERVER_PREFERENCE);
	if (SSL_CTX_use_certificate_chain_file(ctx, t->cert_file) != 1) {
		*cause = tls_cause("cannot load certificate", t->cert_file);
		goto fail;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, t->key_file,
	    SSL_FILETYPE_PEM) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
		*cause = tls_cause("cannot load key", t->key_file);
		goto fail;
	}
	if (t->verify_client != CONFIG_VERIFY_NONE) {
		if (SSL_CTX_load_verify_locations(ctx, t->client_ca_file,
		    NULL) != 1) {
			*cause = tls_cause("cannot load client CA",
			    t->client_ca_file);
			goto fail;
		}
		mode = SSL_VERIFY_PEER;
		if (t->verify_client == CONFIG_VERIFY_REQUIRE)
			mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
		SSL_CTX_set_verify(ctx, mode, NULL);
		SSL_CTX_set_client_CA_list(ctx,
		    SSL_load_client_CA_file(t->client_ca_file));
		/*
		 * No session resumption where a certificate identifies: a
		 * resumed session would carry the first handshake's verdict
		 * past the chain's end, without the chain (identity.c and
		 * the token service need its end).  Without a session id
		 * context OpenSSL also kills any resumption attempt with an
		 * internal_error alert; with one and no cache or tickets, a
		 * client offering a session just gets a full handshake.
		 */
		SSL_CTX_set_session_id_context(ctx,
		    (const unsigned char *)"portcullis", 10);
		SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
		SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
		SSL_CTX_set_num_tickets(ctx, 0);
	}
	return (ctx);
fail:
	SSL_CTX_free(ctx);
	return (NULL);
}

/* A client context verifying peers against ca_file or the system store. */
SSL_CTX *
tls_client_ctx(const char *ca_file, char **cause)
{
	SSL_CTX	*ctx;

	if ((ctx = SSL_CTX_new(TLS_client_method())) == NULL) {
		*cause = tls_cause("SSL_CTX_new", NULL);
		return (NULL);
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	if (ca_file != NULL) {
		if (SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
			*cause = tls_cause("cannot load CA file", ca_file);
			SSL_CTX_free(ctx);
			return (NULL);
		}
	} else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
		*cause = tls_cause("cannot load system CA store", NULL);
		SSL_CTX_free(ctx);
		return (NULL);
	}
	return (ctx);
}

/* A client SSL for one connection to host: SNI and hostname check. */
SSL *
tls_client_ssl(SSL_CTX *ctx, const char *host)
{
	SSL	*ssl;

	if ((ssl = SSL_new(ctx)) == NULL)
		return (NULL);
	/* SNI is only for DNS names, never for address literals. */
	if (strspn(host, "0123456789.") != strlen(host) &&
	    strchr(host, ':') == NULL)
		SSL_set_tlsext_host_name(ssl, host);
	if (SSL_set1_host(ssl, host) != 1) {
		SSL_free(ssl);
		return (NULL);
	}
	return (ssl);
}

/* A server SSL for one accepted connection. */
SSL *
tls_server_ssl(SSL_CTX *ctx)
{
	return (SSL_new(ctx));
}

/*
 * The verified client certificate's subject in RFC 2253 form, most
 * specific first ("CN=node1,O=Corp", as mtls: rules name it), or NULL.
 * Only a certificate that verified counts: with verify_client "optional"
 * a client may present any certificate, and one that failed verification
 * names nobody.  A subject longer than TLS_SUBJECT_MAX is refused (NULL)
 * rather than cut, so that it can never read as a shorter, other name.
 * Caller frees.
 */
char *
tls_peer_subject(struct bufferevent *bev)
{
	SSL	*ssl = bufferevent_openssl_get_ssl(bev);
	X509	*cert;
	BIO	*bio = NULL;
	char	*s = NULL, *p;
	long	 n;

	if (ssl == NULL || (cert = SSL_get1_peer_certificate(ssl)) == NULL)
		return (NULL);
	if (SSL_get_verify_result(ssl) != X509_V_OK)
		goto done;
	if ((bio = BIO_new(BIO_s_mem())) == NULL)
		goto done;
	if (X509_NAME_print_ex(bio, X509_get_subject_name(cert), 0,
	    XN_FLAG_RFC2253) < 0)
		goto done;
	if ((n = BIO_get_mem_data(bio, &p)) <= 0 || n > TLS_SUBJECT_MAX) {
		if (n > TLS_SUBJECT_MAX)
			log_warn("- tls client_subject_too_long bytes=%ld "
			    "max=%d: the certificate names nobody", n,
			    TLS_SUBJECT_MAX);
		goto done;
	}
	if ((s = strndup(p, (size_t)n)) == NULL)
		fatal("strndup");
done:
	BIO_free(bio);
	X509_free(cert);
	return (s);
}

/* A certificate's notAfter in seconds since the epoch; 0 if unreadable. */
static int64_t
tls_cert_not_after(X509 *cert)
{
	struct tm	tm;
	int64_t		t;

	memset(&tm, 0, sizeof(tm));
	if (ASN1_TIME_to_tm(X509_get0_notAfter(cert), &tm) != 1)
		return (0);
	t = (int64_t)timegm(&tm);
	return (t > 0 ? t : 0);
}

/*
 * The end of a client certificate TLS verified, in seconds since the
 * epoch: the earliest notAfter of the chain that verified it (an issuing
 * CA that ends first ends the credential with it: the leaf verifies no
 * more), the leaf's alone when that chain is not at hand (a resumed
 * session).  0 when there is no verified certificate; 1 (long over) when
 * a date cannot be read, never "no end".  The token service never lets a
 * token of an mTLS caller outlive it, and identity.c stops taking the
 * certificate once it has passed.
 */
int64_t
tls_peer_not_after(struct bufferevent *bev)
{
	SSL		*ssl = bufferevent_openssl_get_ssl(bev);
	STACK_OF(X509)	*chain;
	X509		*cert;
	int64_t		 t = 0, u;
	int		 i;

	if (ssl == NULL || (cert = SSL_get1_peer_certificate(ssl)) == NULL)
		return (0);
	if (SSL_get_verify_result(ssl) != X509_V_OK)
		goto done;
	if ((t = tls_cert_not_after(cert)) == 0)
		t = 1;
	if ((chain = SSL_get0_verified_chain(ssl)) != NULL)
		for (i = 0; i < sk_X509_num(chain); i++) {
			u = tls_cert_not_after(sk_X509_value(chain, i));
			if (u == 0)
				u = 1;
			if (u < t)
				t = u;
		}
done:
	X509_free(cert);
	return (t);
}

/*
 * The notBefore of the client certificate TLS verified, in seconds since
 * the epoch: when it was issued, as far as revocation goes (`token revoke
 * --subject DN` refuses a certificate issued before its time, as it does
 * a token; a certificate issued again after it works).  0 when there is
 * none, or when the date cannot be read: issued at the epoch then, so
 * that any revocation of its subject covers it.
 */
int64_t
tls_peer_not_before(struct bufferevent *bev)
{
	SSL		*ssl = bufferevent_openssl_get_ssl(bev);
	X509		*cert;
	struct tm	 tm;
	int64_t		 t = 0;

	if (ssl == NULL || (cert = SSL_get1_peer_certificate(ssl)) == NULL)
		return (0);
	if (SSL_get_verify_result(ssl) == X509_V_OK) {
		memset(&tm, 0, sizeof(tm));
		if (ASN1_TIME_to_tm(X509_get0_notBefore(cert), &tm) != 1 ||
		    (t = (int64_t)timegm(&tm)) <= 0)
			t = 0;
	}
	X509_free(cert);
	return (t);
}

/* Free a context; NULL is fine. */
void
tls_free_ctx(SSL_CTX *ctx)
{
	SSL_CTX_free(ctx);
}

/* The last TLS error on a bufferevent, as text (static storage). */
const char *
tls_last_error(struct bufferevent *bev)
{
	unsigned long	e;

	if ((e = bufferevent_get_openssl_error(bev)) == 0)
		return ("connection failed");
	return (ERR_reason_error_string(e) ? ERR_reason_error_string(e) :
	    "TLS error");
}

struct tls_client {
	TAILQ_ENTRY(tls_client)	 entry;
	char			*ca_file;	/* NULL: system store */
	SSL_CTX			*ctx;
};

/*
 * The client context for a CA file (NULL: the system store), made on first
 * use and kept for the life of the process.
 */
SSL_CTX *
tls_client_for(struct pc_ctx *ctx, const char *ca_file)
{
	struct tls_client	*tc;
	char			*cause = NULL;

	TAILQ_FOREACH(tc, &ctx->tls_clients, entry) {
		if ((tc->ca_file == NULL && ca_file == NULL) ||
		    (tc->ca_file != NULL && ca_file != NULL &&
		    strcmp(tc->ca_file, ca_file) == 0))
			return (tc->ctx);
	}
	if ((tc = calloc(1, sizeof(*tc))) == NULL)
		return (NULL);
	if ((tc->ctx = tls_client_ctx(ca_file, &cause)) == NULL) {
		log_warn("- tls client_ctx_failed cause=\"%s\"",
		    cause ? cause : "unknown");
		free(cause);
		free(tc);
		return (NULL);
	}
	if (ca_file != NULL && (tc->ca_file = strdup(ca_file)) == NULL) {
		SSL_CTX_free(tc->ctx);
		free(tc);
		return (NULL);
	}
	TAILQ_INSERT_TAIL(&ctx->tls_clients, tc, entry);
	return (tc->ctx);
}

/* Free every cached client context. */
void
tls_client_free_all(struct pc_ctx *ctx)
{
	struct tls_client	*tc;

	while ((tc = TAILQ_FIRST(&ctx->tls_clients)) != NULL) {
		TAILQ_REMOVE(&ctx->tls_clients, tc, entry);
		SSL_CTX_free(tc->ctx);
		free(tc->ca_file);
		free(tc);
	}
}
