/*
 * credhelper.c: docker-credential-portcullis, the credential-helper
 * protocol of docker (and of containers/image: podman, skopeo, buildah)
 * over the store `portcullis login` writes (README "Credential helper").
 *
 *	get	stdin: the server URL; stdout: {"ServerURL", "Username",
 *		"Secret"}.  A sign-in answers Username "<token>" and the
 *		gateway refresh token as Secret: docker and containers/image
 *		take that as an identity token and send it to the token
 *		endpoint the registry's challenge names (a refresh grant,
 *		which re-checks the person with the provider).  Before it
 *		answers, the refresh token is tried when the access token it
 *		last gave expired (the check is silent); refused there, the
 *		device flow starts when a terminal is attached (its prompts
 *		go to /dev/tty), else get fails saying to run portcullis
 *		login.
 *	store	stdin: {"ServerURL", "Username", "Secret"}
 *	erase	stdin: the server URL
 *	list	stdout: {"<server>": "<username>", ...}
 *
 * Errors go to stdout, one line, exit 1, as docker's helpers do; a missing
 * entry is "credentials not found in native keychain", which docker
 * recognises.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "portcullis.h"
#include "login.h"

#define CH_NOT_FOUND	"credentials not found in native keychain"
#define CH_STDIN_MAX	(64 * 1024)
#define CH_SKEW		30	/* seconds before expiry a token is old */

static int
ch_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int
ch_fail(const char *fmt, ...)
{
	char	buf[2048];
	va_list	ap;

	/* docker shows it: the gateway's text, so no escapes (login_say). */
	va_start(ap, fmt);
	(void)vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	login_say(stdout, "%s\n", buf);
	fflush(stdout);
	return (1);
}

/* stdin whole (bounded), trailing whitespace cut; NULL when too long. */
static char *
ch_stdin(void)
{
	char	*buf;
	size_t	 n = 0, r;

	if ((buf = malloc(CH_STDIN_MAX + 1)) == NULL)
		fatal("malloc");
	while ((r = fread(buf + n, 1, CH_STDIN_MAX - n, stdin)) > 0)
		n += r;
	if (n == CH_STDIN_MAX && fgetc(stdin) != EOF) {
		free(buf);
		return (NULL);
	}
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' ||
	    buf[n - 1] == ' '))
		n--;
	buf[n] = '\0';
	return (buf);
}

/* The store's key of a server URL: host[:port]; -1 when not one. */
static int
ch_key(const char *server, char *host, size_t hlen)
{
	char	*base;

	if (login_registry_host(server, host, hlen, &base) == -1)
		return (-1);
	free(base);
	return (0);
}

static json_t *
ch_load(char **path)
{
	json_t	*doc;
	char	 err[512];

	*path = login_helper_store_path();
	if ((doc = login_json_load(*path, err, sizeof(err))) == NULL) {
		printf("%s\n", err);
		return (NULL);
	}
	if (!json_is_object(json_object_get(doc, "registries")))
		json_object_set_new(doc, "registries", json_object());
	return (doc);
}

static int
ch_save(const char *path, json_t *doc)
{
	char	err[512];

	if (login_json_save(path, doc, err, sizeof(err)) == -1)
		return (ch_fail("%s", err));
	return (0);
}

static void
ch_answer(const char *server, const char *user, const char *secret)
{
	json_t	*o = json_object();
	char	*s;

	json_object_set_new(o, "ServerURL", json_string(server));
	json_object_set_new(o, "Username", json_string(user));
	json_object_set_new(o, "Secret", json_string(secret));
	if ((s = json_dumps(o, JSON_COMPACT)) == NULL)
		fatal("json_dumps");
	json_decref(o);
	printf("%s\n", s);
	fflush(stdout);
	OPENSSL_cleanse(s, strlen(s));
	free(s);
}

/*
 * Try the refresh token at the gateway: 1 refreshed (the entry updated),
 * 0 refused (the sign-in is over: *why), -1 not reachable (*why).
 */
static int
ch_refresh(json_t *e, char *why, size_t wlen)
{
	const char	*tep = json_string_value(json_object_get(e,
			    "token_endpoint"));
	const char	*ca = json_string_value(json_object_get(e, "ca_file"));
	const char	*kv[12];
	json_t		*doc;
	char		*form;
	int		 st;

	if (tep == NULL) {
		snprintf(why, wlen, "no token endpoint known");
		return (0);
	}
	kv[0] = "grant_type"; kv[1] = "refresh_token";
	kv[2] = "client_id"; kv[3] = "docker-credential-portcullis";
	kv[4] = "service";
	kv[5] = json_string_value(json_object_get(e, "service"));
	kv[6] = "refresh_token";
	kv[7] = json_string_value(json_object_get(e, "refresh_token"));
	kv[8] = NULL;
	form = login_form(kv);
	doc = login_http_json("POST", tep, form, ca, &st, why, wlen);
	OPENSSL_cleanse(form, strlen(form));
	free(form);
	if (doc == NULL)
		return (-1);
	if (st == 200 && json_string_value(json_object_get(doc,
	    "access_token")) != NULL) {
		json_object_set(e, "access_token", json_object_get(doc,
		    "access_token"));
		json_object_set_new(e, "access_expires",
		    json_integer((json_int_t)time(NULL) +
		    json_integer_value(json_object_get(doc, "expires_in"))));
		json_decref(doc);
		return (1);
	}
	snprintf(why, wlen, "HTTP %d: %s", st, json_string_value(
	    json_object_get(json_array_get(json_object_get(doc, "errors"), 0),
	    "message")) != NULL ? json_string_value(json_object_get(
	    json_array_get(json_object_get(doc, "errors"), 0), "message")) :
	    "refused");
	json_decref(doc);
	return (st >= 500 ? -1 : 0);
}

/* The device flow on the controlling terminal; 0 with the entry new. */
static int
ch_device(const char *host, json_t *e)
{
	struct login_opts	 o;
	struct login_result	 r;
	FILE			*tty;
	char			 err[512];
	const char		*url = json_string_value(json_object_get(e,
				    "url"));
	int			 fd;

	if ((fd = open("/dev/tty", O_RDWR | O_CLOEXEC)) == -1 ||
	    !isatty(fd) || (tty = fdopen(fd, "w")) == NULL) {
		if (fd != -1)
			close(fd);
		return (-1);
	}
	memset(&o, 0, sizeof(o));
	o.registry = url != NULL ? url : host;
	o.ca_file = json_string_value(json_object_get(e, "ca_file"));
	o.out = tty;
	fprintf(tty, "docker-credential-portcullis: the sign-in for %s "
	    "expired.\n", host);
	if (login_device(&o, &r) == -1) {
		fclose(tty);
		return (-1);
	}
	fclose(tty);
	if (login_helper_put(&r, o.ca_file, err, sizeof(err)) == -1) {
		login_result_free(&r);
		return (-1);
	}
	login_result_free(&r);
	return (0);
}

static int
ch_get(const char *server)
{
	json_t		*doc, *e;
	char		*path, host[300], why[512];
	const char	*u, *s;
	int		 rv;

	if (ch_key(server, host, sizeof(host)) == -1)
		return (ch_fail("%s", CH_NOT_FOUND));
	if ((doc = ch_load(&path)) == NULL) {
		free(path);
		return (1);
	}
	if ((e = json_object_get(json_object_get(doc, "registries"),
	    host)) == NULL) {
		json_decref(doc);
		free(path);
		return (ch_fail("%s", CH_NOT_FOUND));
	}
	/* Stored by `store` with a password: given back as it is. */
	if ((u = json_string_value(json_object_get(e, "username"))) != NULL &&
	    (s = json_string_value(json_object_get(e, "secret"))) != NULL) {
		ch_answer(server, u, s);
		json_decref(doc);
		free(path);
		return (0);
	}
	if (json_string_value(json_object_get(e, "refresh_token")) == NULL) {
		json_decref(doc);
		free(path);
		return (ch_fail("%s", CH_NOT_FOUND));
	}
	rv = 1;
	/*
	 * An identity token docker stored (no sign-in of ours: no token
	 * endpoint) is given back as it is; docker refreshes it at the
	 * endpoint the registry's challenge names.
	 */
	if (json_string_value(json_object_get(e, "token_endpoint")) == NULL)
		rv = 1;
	else if (json_integer_value(json_object_get(e, "access_expires")) >
	    (json_int_t)time(NULL) + CH_SKEW)
		rv = 1;
	else if ((rv = ch_refresh(e, why, sizeof(why))) == 1 &&
	    ch_save(path, doc) != 0) {
		json_decref(doc);
		free(path);
		return (1);
	}
	if (rv == 0) {
		if (ch_device(host, e) == -1) {
			json_decref(doc);
			free(path);
			return (ch_fail("the sign-in for %s is over (%s); "
			    "run: portcullis login %s", host, why, host));
		}
		json_decref(doc);
		if ((doc = ch_load(&path)) == NULL)
			return (1);
		e = json_object_get(json_object_get(doc, "registries"), host);
		rv = e != NULL ? 1 : 0;
	}
	if (rv == -1) {
		json_decref(doc);
		free(path);
		return (ch_fail("%s: %s", host, why));
	}
	if (rv == 1)
		ch_answer(server, "<token>", json_string_value(
		    json_object_get(e, "refresh_token")));
	json_decref(doc);
	free(path);
	return (rv == 1 ? 0 : 1);
}

static int
ch_store(const char *in)
{
	json_t		*req, *doc, *regs, *e;
	char		*path, host[300];
	const char	*server, *u, *s;
	int		 rv;

	if ((req = json_loads(in, 0, NULL)) == NULL ||
	    (server = json_string_value(json_object_get(req, "ServerURL"))) ==
	    NULL ||
	    (u = json_string_value(json_object_get(req, "Username"))) ==
	    NULL ||
	    (s = json_string_value(json_object_get(req, "Secret"))) == NULL ||
	    ch_key(server, host, sizeof(host)) == -1) {
		json_decref(req);
		return (ch_fail("store: expected {\"ServerURL\", "
		    "\"Username\", \"Secret\"}"));
	}
	if ((doc = ch_load(&path)) == NULL) {
		json_decref(req);
		free(path);
		return (1);
	}
	regs = json_object_get(doc, "registries");
	if (strcmp(u, "<token>") == 0) {
		/* An identity token: kept as a sign-in's refresh token. */
		if ((e = json_object_get(regs, host)) == NULL) {
			e = json_object();
			json_object_set_new(regs, host, e);
		}
		json_object_del(e, "username");
		json_object_del(e, "secret");
		json_object_del(e, "access_token");
		json_object_del(e, "access_expires");
		json_object_set_new(e, "refresh_token", json_string(s));
		if (json_object_get(e, "url") == NULL)
			json_object_set_new(e, "url", json_string(server));
	} else {
		e = json_object();
		json_object_set_new(e, "username", json_string(u));
		json_object_set_new(e, "secret", json_string(s));
		json_object_set_new(regs, host, e);
	}
	rv = ch_save(path, doc);
	json_decref(doc);
	json_decref(req);
	free(path);
	return (rv);
}

static int
ch_erase(const char *server)
{
	json_t	*doc, *regs;
	char	*path, host[300];
	int	 rv;

	if (ch_key(server, host, sizeof(host)) == -1)
		return (ch_fail("%s", CH_NOT_FOUND));
	if ((doc = ch_load(&path)) == NULL) {
		free(path);
		return (1);
	}
	regs = json_object_get(doc, "registries");
	if (json_object_get(regs, host) == NULL) {
		json_decref(doc);
		free(path);
		return (ch_fail("%s", CH_NOT_FOUND));
	}
	json_object_del(regs, host);
	rv = ch_save(path, doc);
	json_decref(doc);
	free(path);
	return (rv);
}

static int
ch_list(void)
{
	json_t		*doc, *out, *e;
	const char	*k, *u;
	char		*path, *s;

	if ((doc = ch_load(&path)) == NULL) {
		free(path);
		return (1);
	}
	out = json_object();
	json_object_foreach(json_object_get(doc, "registries"), k, e) {
		u = json_string_value(json_object_get(e, "username"));
		json_object_set_new(out, k, json_string(u != NULL ? u :
		    "<token>"));
	}
	if ((s = json_dumps(out, JSON_COMPACT | JSON_SORT_KEYS)) == NULL)
		fatal("json_dumps");
	printf("%s\n", s);
	fflush(stdout);
	free(s);
	json_decref(out);
	json_decref(doc);
	free(path);
	return (0);
}

int
credhelper_main(int argc, char **argv)
{
	char	*in;
	int	 rv;

	if (argc != 2 || (strcmp(argv[1], "get") != 0 &&
	    strcmp(argv[1], "store") != 0 && strcmp(argv[1], "erase") != 0 &&
	    strcmp(argv[1], "list") != 0)) {
		fprintf(stderr, "usage: docker-credential-portcullis "
		    "get|store|erase|list (the docker credential-helper "
		    "protocol; README \"Credential helper\")\n");
		return (1);
	}
	if (strcmp(argv[1], "list") == 0)
		return (ch_list());
	if ((in = ch_stdin()) == NULL)
		return (ch_fail("input longer than 64 KiB"));
	if (strcmp(argv[1], "get") == 0)
		rv = ch_get(in);
	else if (strcmp(argv[1], "store") == 0)
		rv = ch_store(in);
	else
		rv = ch_erase(in);
	OPENSSL_cleanse(in, strlen(in));
	free(in);
	return (rv);
}
