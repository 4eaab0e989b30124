/*
 * config_secret.c: read the secret files the configuration names -- an
 * upstream's credentials_file, the Redis and Sentinel password files and
 * identity.sso.client_secret_file -- as the schema rows' `loaded' hooks
 * (config_schema*.c), while config.c parses the document.
 *
 * Guarantees: each file is one line (a final LF or CRLF allowed) with no
 * NUL, CR or LF inside; neither its content nor its length goes into an
 * error message; the read buffer is wiped, and a value it replaces is
 * wiped before it is freed.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "config_int.h"

#define CFG_CRED_MAX	4096	/* largest credentials file */

/*
 * Read a secret file that holds one line, with or without a final
 * newline (CRLF too), into buf (size bytes): its length, or -1 with the
 * error reported for ptr.  A file that is empty, too long for buf, or
 * holds NUL, CR or LF inside the line is an error `what`.  Neither the
 * content nor its length goes into a message; the caller wipes buf.
 */
static ssize_t
cfg_read_secret_line(struct cfg_ctx *ctx, const char *file, const char *ptr,
    const char *what, char *buf, size_t size)
{
	size_t	 len = 0;
	ssize_t	 n = 0;
	int	 fd;

	if ((fd = cfg_open_regular(file)) == -1) {
		cfg_error(ctx, ptr, "cannot read: %s", strerror(errno));
		return -1;
	}
	while (len < size - 1) {
		n = read(fd, buf + len, size - 1 - len);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += n;
	}
	close(fd);
	if (n == -1) {
		cfg_error(ctx, ptr, "cannot read: %s", strerror(errno));
		return -1;
	}
	buf[len] = '\0';
	if (len > 0 && buf[len - 1] == '\n')
		buf[--len] = '\0';
	if (len > 0 && buf[len - 1] == '\r')
		buf[--len] = '\0';
	if (len == 0 || len >= size - 2 || strlen(buf) != len ||
	    strpbrk(buf, "\r\n") != NULL) {
		cfg_error(ctx, ptr, "%s", what);
		return -1;
	}
	return (ssize_t)len;
}

/*
 * Read the upstream's credentials: exactly one line "username:password".
 * Neither the content nor its length goes into an error message.
 */
void
cfg_load_credentials(struct cfg_ctx *ctx, void *base, const char *file,
    const char *ptr)
{
	static const char	 what[] =
	    "expected one line 'username:password'";
	struct config_upstream	*up = base;
	char			 buf[CFG_CRED_MAX + 1], *colon;

	if (cfg_read_secret_line(ctx, file, ptr, what, buf, sizeof(buf)) ==
	    -1)
		goto out;
	if ((colon = strchr(buf, ':')) == NULL || colon == buf ||
	    colon[1] == '\0') {
		cfg_error(ctx, ptr, "%s", what);
		goto out;
	}
	*colon = '\0';
	up->username = cfg_xstrdup(buf);
	up->password = cfg_xstrdup(colon + 1);
out:
	explicit_bzero(buf, sizeof(buf));
}

/*
 * Read the Redis password: exactly one line; any bytes but NUL, CR and
 * LF (spaces are part of it).  As for credentials_file, neither the
 * content nor its length goes into an error message.
 */
void
cfg_load_redis_password(struct cfg_ctx *ctx, void *base, const char *file,
    const char *ptr)
{
	struct config_redis	*r = base;
	char			 buf[CFG_CRED_MAX + 1];

	if (cfg_read_secret_line(ctx, file, ptr,
	    "expected the password on one line", buf, sizeof(buf)) == -1)
		goto out;
	if (r->password != NULL) {
		explicit_bzero(r->password, strlen(r->password));
		free(r->password);
	}
	r->password = cfg_xstrdup(buf);
out:
	explicit_bzero(buf, sizeof(buf));
}

/* Read the sentinels' password (redis.sentinel.password_file). */
void
cfg_load_sentinel_password(struct cfg_ctx *ctx, void *base, const char *file,
    const char *ptr)
{
	struct config_sentinel	*sn = base;
	char			 buf[CFG_CRED_MAX + 1];

	if (cfg_read_secret_line(ctx, file, ptr,
	    "expected the password on one line", buf, sizeof(buf)) == -1)
		goto out;
	if (sn->password != NULL) {
		explicit_bzero(sn->password, strlen(sn->password));
		free(sn->password);
	}
	sn->password = cfg_xstrdup(buf);
out:
	explicit_bzero(buf, sizeof(buf));
}

/*
 * Read the SSO client secret (identity.sso.client_secret_file): one
 * line, as for the Redis password; never in a message.
 */
void
cfg_load_sso_secret(struct cfg_ctx *ctx, void *base, const char *file,
    const char *ptr)
{
	struct config_sso	*so = base;
	char			 buf[CFG_CRED_MAX + 1];

	if (cfg_read_secret_line(ctx, file, ptr,
	    "expected the client secret on one line", buf, sizeof(buf)) == -1)
		goto out;
	if (so->client_secret != NULL) {
		explicit_bzero(so->client_secret, strlen(so->client_secret));
		free(so->client_secret);
	}
	so->client_secret = cfg_xstrdup(buf);
out:
	explicit_bzero(buf, sizeof(buf));
}
