/*
 * login_cli.c: `portcullis login REGISTRY` (README "Sign-in from a
 * terminal").  The gateway's /.well-known/portcullis names the provider's
 * device endpoint and the public CLI client; the OAuth 2.0 device grant
 * (RFC 8628) runs against the provider (the person approves the code in
 * any browser), then the provider's id_token and refresh token are
 * exchanged at the gateway's /token for a gateway refresh token
 * (token_idp.c), which is written where docker, podman and skopeo read
 * credentials, and to the credential helper's store.
 *
 * Files (each written whole to a temporary file in its directory, mode
 * 0600, then renamed; directories made 0700):
 *	helper store	$XDG_CONFIG_HOME/portcullis/credentials.json
 *			(~/.config/portcullis/): always
 *	docker		$DOCKER_CONFIG/config.json (~/.docker/, or
 *			--docker-config DIR): auths.<host>.identitytoken,
 *			or with --helper credHelpers.<host> = "portcullis"
 *	podman, skopeo	--authfile FILE, else $REGISTRY_AUTH_FILE, else
 *			$XDG_RUNTIME_DIR/containers/auth.json, else
 *			~/.config/containers/auth.json: the same entry
 */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdarg.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "portcullis.h"
#include "login.h"

#define LOGIN_CLIENT_ID		"portcullis-login"
#define LOGIN_DEVICE_GRANT	"urn:ietf:params:oauth:grant-type:device_code"
#define LOGIN_MAX_WAIT		1800	/* seconds a code is waited for */
#define LOGIN_DEFAULT_INTERVAL	5	/* RFC 8628 3.5 */

/*
 * Print to a person's terminal: what the registry and the provider say
 * (the code, the URIs, their error text) is theirs, so every control
 * byte and every byte over 0x7e (C1 controls hide in UTF-8) becomes '?'
 * and no escape sequence reaches the terminal.  Newlines of fmt stay.
 */
void
login_say(FILE *f, const char *fmt, ...)
{
	char		 buf[2048];
	va_list		 ap;
	size_t		 i, n;
	unsigned char	 ch;

	va_start(ap, fmt);
	(void)vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	n = strlen(buf);
	for (i = 0; i < n; i++) {
		ch = (unsigned char)buf[i];
		if ((ch < 0x20 && ch != '\n') || ch > 0x7e)
			buf[i] = '?';
	}
	fputs(buf, f);
	OPENSSL_cleanse(buf, sizeof(buf));
}

void
login_result_free(struct login_result *r)
{
	free(r->base);
	free(r->token_endpoint);
	free(r->service);
	if (r->refresh_token != NULL) {
		OPENSSL_cleanse(r->refresh_token, strlen(r->refresh_token));
		free(r->refresh_token);
	}
	if (r->access_token != NULL) {
		OPENSSL_cleanse(r->access_token, strlen(r->access_token));
		free(r->access_token);
	}
	memset(r, 0, sizeof(*r));
}

/*
 * "host[:port]" or "http(s)://host[:port][/...]": the auth files' key
 * (host[:port]) and the base URL (https unless told).  0 or -1.
 */
int
login_registry_host(const char *reg, char *host, size_t hlen, char **base)
{
	struct url	 u;
	char		*s;

	if (strstr(reg, "://") != NULL) {
		if ((s = strdup(reg)) == NULL)
			fatal("strdup");
	} else if (asprintf(&s, "https://%s", reg) == -1)
		fatal("asprintf");
	if (url_parse(s, &u) == -1 || url_hostport(&u, host, hlen) == -1) {
		free(s);
		return (-1);
	}
	free(s);
	if (asprintf(base, "%s://%s", u.scheme, host) == -1)
		fatal("asprintf");
	return (0);
}

/* A JSON object from a file; an absent file is an empty object. */
json_t *
login_json_load(const char *path, char *err, size_t errlen)
{
	json_t		*doc;
	json_error_t	 je;

	if (access(path, F_OK) == -1 && errno == ENOENT)
		return (json_object());
	if ((doc = json_load_file(path, 0, &je)) == NULL ||
	    !json_is_object(doc)) {
		json_decref(doc);
		snprintf(err, errlen, "%s: not a JSON object (%s)", path,
		    je.text);
		return (NULL);
	}
	return (doc);
}

/* mkdir -p of path's directory, new ones 0700. */
static int
login_mkdirs(const char *path)
{
	char	 d[PATH_MAX], *p;

	if (snprintf(d, sizeof(d), "%s", path) >= (int)sizeof(d))
		return (-1);
	if ((p = strrchr(d, '/')) == NULL)
		return (0);
	*p = '\0';
	for (p = d + 1; *p != '\0'; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(d, 0700) == -1 && errno != EEXIST)
			return (-1);
		*p = '/';
	}
	if (d[0] != '\0' && mkdir(d, 0700) == -1 && errno != EEXIST)
		return (-1);
	return (0);
}

/* Write doc to path whole: a 0600 temporary file, then rename. */
int
login_json_save(const char *path, json_t *doc, char *err, size_t errlen)
{
	char	 tmp[PATH_MAX];
	int	 fd;

	if (login_mkdirs(path) == -1 || snprintf(tmp, sizeof(tmp),
	    "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof(tmp)) {
		snprintf(err, errlen, "%s: cannot make its directory: %s",
		    path, strerror(errno));
		return (-1);
	}
	(void)unlink(tmp);
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
	    0600)) == -1) {
		snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
		return (-1);
	}
	if (json_dumpfd(doc, fd, JSON_INDENT(2) | JSON_SORT_KEYS) == -1 ||
	    write(fd, "\n", 1) != 1 || fsync(fd) == -1) {
		snprintf(err, errlen, "%s: cannot write: %s", tmp,
		    strerror(errno));
		close(fd);
		unlink(tmp);
		return (-1);
	}
	close(fd);
	if (rename(tmp, path) == -1) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		unlink(tmp);
		return (-1);
	}
	return (0);
}

static char *
login_path(const char *env, const char *home_rel, const char *leaf)
{
	const char	*v = env != NULL ? getenv(env) : NULL, *h;
	char		*p;

	if (v != NULL && *v != '\0') {
		if (asprintf(&p, "%s%s%s", v, leaf != NULL ? "/" : "",
		    leaf != NULL ? leaf : "") == -1)
			fatal("asprintf");
		return (p);
	}
	if ((h = getenv("HOME")) == NULL || *h == '\0')
		h = "/";
	if (asprintf(&p, "%s/%s%s%s", h, home_rel, leaf != NULL ? "/" : "",
	    leaf != NULL ? leaf : "") == -1)
		fatal("asprintf");
	return (p);
}

/* The credential helper's store. */
char *
login_helper_store_path(void)
{
	return (login_path("XDG_CONFIG_HOME", ".config",
	    "portcullis/credentials.json"));
}

/* Keep a sign-in in the helper's store (registries.<host>). */
int
login_helper_put(const struct login_result *r, const char *ca_file,
    char *err, size_t errlen)
{
	char	*path = login_helper_store_path();
	json_t	*doc, *regs, *e;
	int	 rv;

	if ((doc = login_json_load(path, err, errlen)) == NULL) {
		free(path);
		return (-1);
	}
	if (!json_is_object(regs = json_object_get(doc, "registries"))) {
		regs = json_object();
		json_object_set_new(doc, "registries", regs);
	}
	e = json_object();
	json_object_set_new(e, "url", json_string(r->base));
	json_object_set_new(e, "token_endpoint",
	    json_string(r->token_endpoint));
	if (r->service != NULL)
		json_object_set_new(e, "service", json_string(r->service));
	json_object_set_new(e, "refresh_token",
	    json_string(r->refresh_token));
	if (r->access_token != NULL) {
		json_object_set_new(e, "access_token",
		    json_string(r->access_token));
		json_object_set_new(e, "access_expires",
		    json_integer(r->access_expires));
	}
	if (ca_file != NULL)
		json_object_set_new(e, "ca_file", json_string(ca_file));
	json_object_set_new(regs, r->host, e);
	rv = login_json_save(path, doc, err, errlen);
	json_decref(doc);
	free(path);
	return (rv);
}

/* The error an OAuth or registry answer gives, for a person. */
static const char *
login_answer_error(json_t *doc)
{
	json_t		*errs;
	const char	*s;

	if ((s = json_string_value(json_object_get(doc,
	    "error_description"))) != NULL ||
	    (s = json_string_value(json_object_get(doc, "error"))) != NULL)
		return (s);
	errs = json_object_get(doc, "errors");
	if ((s = json_string_value(json_object_get(json_array_get(errs, 0),
	    "message"))) != NULL)
		return (s);
	return ("no reason given");
}

/* Not an https URL (where a token may go). */
static int
login_plain(const char *u)
{
	return (strncasecmp(u, "https://", 8) != 0);
}

/* Resolve a path-only URL against base; new. */
static char *
login_abs(const char *base, const char *u)
{
	char	*s;

	if (u[0] == '/') {
		if (asprintf(&s, "%s%s", base, u) == -1)
			fatal("asprintf");
	} else if ((s = strdup(u)) == NULL)
		fatal("strdup");
	return (s);
}

/* Poll the provider until the person approved (or not); the token doc. */
static json_t *
login_poll(const struct login_opts *o, const char *tep, const char *cid,
    const char *dcode, int interval, int expires_in)
{
	const char	*kv[] = { "grant_type", LOGIN_DEVICE_GRANT,
			    "device_code", dcode, "client_id", cid, NULL };
	time_t		 deadline = time(NULL) + expires_in;
	json_t		*doc;
	char		*form, err[512];
	const char	*e;
	int		 st;

	form = login_form(kv);
	while (time(NULL) + interval <= deadline) {
		sleep((unsigned)interval);
		if ((doc = login_http_json("POST", tep, form, o->ca_file, &st,
		    err, sizeof(err))) == NULL) {
			login_say(stderr, "portcullis: %s\n", err);
			break;
		}
		if (st == 200) {
			OPENSSL_cleanse(form, strlen(form));
			free(form);
			return (doc);
		}
		e = json_string_value(json_object_get(doc, "error"));
		if (e != NULL && strcmp(e, "authorization_pending") == 0) {
			json_decref(doc);
			continue;
		}
		if (e != NULL && strcmp(e, "slow_down") == 0) {
			interval += 5;		/* RFC 8628 3.5 */
			json_decref(doc);
			continue;
		}
		if (e != NULL && strcmp(e, "access_denied") == 0)
			login_say(stderr, "portcullis: the sign-in was "
			    "declined at the provider\n");
		else if (e != NULL && strcmp(e, "expired_token") == 0)
			login_say(stderr, "portcullis: the code expired before "
			    "it was approved; run portcullis login again\n");
		else
			login_say(stderr, "portcullis: the provider refused: "
			    "%s\n", login_answer_error(doc));
		json_decref(doc);
		OPENSSL_cleanse(form, strlen(form));
		free(form);
		return (NULL);
	}
	if (time(NULL) + interval > deadline)
		login_say(stderr, "portcullis: the code expired before it was "
		    "approved; run portcullis login again\n");
	OPENSSL_cleanse(form, strlen(form));
	free(form);
	return (NULL);
}

/*
 * The device flow against the gateway opts->registry advertises, then
 * the exchange: *r filled.  0, or -1 after saying why on stderr.
 */
int
login_device(const struct login_opts *o, struct login_result *r)
{
	json_t		*disc = NULL, *dev, *da = NULL, *tok = NULL, *gw = NULL;
	char		*url = NULL, *form = NULL, err[512];
	const char	*cid, *dep, *tep, *scope, *uc, *vu, *vuc, *idt, *rt;
	const char	*kv[16];
	int		 st, rv = -1, interval, expires_in;

	memset(r, 0, sizeof(*r));
	if (login_registry_host(o->registry, r->host, sizeof(r->host),
	    &r->base) == -1) {
		login_say(stderr, "portcullis: not a registry address: %s\n",
		    o->registry);
		return (-1);
	}
	url = login_abs(r->base, "/.well-known/portcullis");
	if ((disc = login_http_json("GET", url, NULL, o->ca_file, &st, err,
	    sizeof(err))) == NULL || st != 200) {
		login_say(stderr, "portcullis: %s: %s\n", url, disc == NULL ?
		    err : login_answer_error(disc));
		goto done;
	}
	dev = json_object_get(disc, "device");
	cid = json_string_value(json_object_get(dev, "client_id"));
	dep = json_string_value(json_object_get(dev,
	    "device_authorization_endpoint"));
	tep = json_string_value(json_object_get(dev, "token_endpoint"));
	scope = json_string_value(json_object_get(dev, "scope"));
	if (cid == NULL || dep == NULL || tep == NULL ||
	    json_string_value(json_object_get(disc, "token_endpoint")) ==
	    NULL) {
		login_say(stderr, "portcullis: %s offers no terminal sign-in "
		    "(its identity.sso.cli_client_id)\n", r->host);
		goto done;
	}
	r->token_endpoint = login_abs(r->base, json_string_value(
	    json_object_get(disc, "token_endpoint")));
	/*
	 * The provider's tokens go to these: an https registry's document
	 * naming a plain http one would send them in the clear.
	 */
	if (strncmp(r->base, "https://", 8) == 0 &&
	    (login_plain(r->token_endpoint) || login_plain(dep) ||
	    login_plain(tep))) {
		login_say(stderr, "portcullis: %s names a plain http endpoint "
		    "for an https registry (%s, %s, %s); refused\n", url,
		    r->token_endpoint, dep, tep);
		goto done;
	}
	if (json_string_value(json_object_get(disc, "service")) != NULL &&
	    (r->service = strdup(json_string_value(json_object_get(disc,
	    "service")))) == NULL)
		fatal("strdup");
	kv[0] = "client_id"; kv[1] = cid;
	kv[2] = "scope"; kv[3] = scope != NULL ? scope :
	    "openid offline_access";
	kv[4] = NULL;
	form = login_form(kv);
	if ((da = login_http_json("POST", dep, form, o->ca_file, &st, err,
	    sizeof(err))) == NULL || st != 200) {
		login_say(stderr, "portcullis: the provider's device endpoint: "
		    "%s\n", da == NULL ? err : login_answer_error(da));
		goto done;
	}
	uc = json_string_value(json_object_get(da, "user_code"));
	vu = json_string_value(json_object_get(da, "verification_uri"));
	vuc = json_string_value(json_object_get(da,
	    "verification_uri_complete"));
	interval = json_is_integer(json_object_get(da, "interval")) ?
	    (int)json_integer_value(json_object_get(da, "interval")) :
	    LOGIN_DEFAULT_INTERVAL;
	expires_in = (int)json_integer_value(json_object_get(da,
	    "expires_in"));
	if (interval < 1 || interval > 60)
		interval = LOGIN_DEFAULT_INTERVAL;
	if (expires_in <= 0 || expires_in > LOGIN_MAX_WAIT)
		expires_in = expires_in <= 0 ? 600 : LOGIN_MAX_WAIT;
	if (uc == NULL || vu == NULL ||
	    json_string_value(json_object_get(da, "device_code")) == NULL) {
		login_say(stderr, "portcullis: the provider's device endpoint "
		    "answered without a code\n");
		goto done;
	}
	login_say(o->out, "To sign in to %s, open %s and enter the code %s\n",
	    r->host, vu, uc);
	if (vuc != NULL)
		login_say(o->out, "  (or open %s on any device; the code is "
		    "valid %d minutes)\n", vuc, (expires_in + 59) / 60);
	fflush(o->out);
	if ((tok = login_poll(o, tep, cid, json_string_value(
	    json_object_get(da, "device_code")), interval, expires_in)) ==
	    NULL)
		goto done;
	idt = json_string_value(json_object_get(tok, "id_token"));
	rt = json_string_value(json_object_get(tok, "refresh_token"));
	if (idt == NULL || rt == NULL) {
		login_say(stderr, "portcullis: the provider gave no %s (its "
		    "client %s needs scope %s)\n", idt == NULL ? "id_token" :
		    "refresh token", cid, idt == NULL ? "openid" :
		    "offline_access and grant refresh_token");
		goto done;
	}
	OPENSSL_cleanse(form, strlen(form));
	free(form);
	kv[0] = "grant_type"; kv[1] = "password";
	kv[2] = "client_id"; kv[3] = LOGIN_CLIENT_ID;
	kv[4] = "access_type"; kv[5] = "offline";
	kv[6] = "service"; kv[7] = r->service;
	kv[8] = "password"; kv[9] = idt;
	kv[10] = "idp_refresh_token"; kv[11] = rt;
	kv[12] = NULL;
	form = login_form(kv);
	if ((gw = login_http_json("POST", r->token_endpoint, form,
	    o->ca_file, &st, err, sizeof(err))) == NULL || st != 200) {
		login_say(stderr, "portcullis: %s refused the sign-in: %s\n",
		    r->host, gw == NULL ? err : login_answer_error(gw));
		goto done;
	}
	if (json_string_value(json_object_get(gw, "refresh_token")) == NULL) {
		login_say(stderr, "portcullis: %s gave no refresh token\n",
		    r->host);
		goto done;
	}
	if ((r->refresh_token = strdup(json_string_value(json_object_get(gw,
	    "refresh_token")))) == NULL)
		fatal("strdup");
	if (json_string_value(json_object_get(gw, "access_token")) != NULL) {
		if ((r->access_token = strdup(json_string_value(
		    json_object_get(gw, "access_token")))) == NULL)
			fatal("strdup");
		r->access_expires = (int64_t)time(NULL) +
		    json_integer_value(json_object_get(gw, "expires_in"));
	}
	rv = 0;
done:
	if (form != NULL) {
		OPENSSL_cleanse(form, strlen(form));
		free(form);
	}
	free(url);
	json_decref(disc);
	json_decref(da);
	json_decref(tok);
	json_decref(gw);
	return (rv);
}

/*
 * The entry docker and containers/image read: {auth: base64("<token>:"),
 * identitytoken}, which both send as a refresh token to the token
 * endpoint the registry's challenge names; with the helper, credHelpers.
 */
static int
login_put_auth(const char *path, const struct login_result *r, int helper,
    char *err, size_t errlen)
{
	json_t	*doc, *auths, *ch, *e;
	int	 rv;

	if ((doc = login_json_load(path, err, errlen)) == NULL)
		return (-1);
	if (!json_is_object(auths = json_object_get(doc, "auths"))) {
		auths = json_object();
		json_object_set_new(doc, "auths", auths);
	}
	ch = json_object_get(doc, "credHelpers");
	if (helper) {
		json_object_del(auths, r->host);
		if (!json_is_object(ch)) {
			ch = json_object();
			json_object_set_new(doc, "credHelpers", ch);
		}
		json_object_set_new(ch, r->host, json_string("portcullis"));
	} else {
		if (json_is_object(ch))
			json_object_del(ch, r->host);
		e = json_object();
		/* base64("<token>:") */
		json_object_set_new(e, "auth", json_string("PHRva2VuPjo="));
		json_object_set_new(e, "identitytoken",
		    json_string(r->refresh_token));
		json_object_set_new(auths, r->host, e);
	}
	rv = login_json_save(path, doc, err, errlen);
	json_decref(doc);
	return (rv);
}

static void
login_usage(FILE *f)
{
	fprintf(f, "usage: portcullis login [--ca-file FILE] "
	    "[--docker-config DIR]\n"
	    "                        [--authfile FILE] [--helper] REGISTRY\n"
	    "Sign in to REGISTRY (host[:port] or http(s)://host[:port]) "
	    "with its identity\nprovider's device flow and store the "
	    "credential for docker, podman and\nskopeo.  --helper: "
	    "docker-credential-portcullis serves it instead of the\n"
	    "auth files holding it.\n");
}

int
login_cli(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "ca-file", required_argument, NULL, 'C' },
		{ "docker-config", required_argument, NULL, 'd' },
		{ "authfile", required_argument, NULL, 'a' },
		{ "helper", no_argument, NULL, 'H' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	struct login_opts	 o;
	struct login_result	 r;
	char			*dcfg = NULL, *afile = NULL, *store, err[512];
	const char		*ddir = NULL, *af = NULL;
	int			 ch, helper = 0, rv = 1;

	memset(&o, 0, sizeof(o));
	o.out = stdout;
	optind = 1;
	while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (ch) {
		case 'C':
			o.ca_file = optarg;
			break;
		case 'd':
			ddir = optarg;
			break;
		case 'a':
			af = optarg;
			break;
		case 'H':
			helper = 1;
			break;
		case 'h':
			login_usage(stdout);
			return (0);
		default:
			login_usage(stderr);
			return (1);
		}
	}
	if (argc - optind != 1) {
		login_usage(stderr);
		return (1);
	}
	o.registry = argv[optind];
	if (login_device(&o, &r) == -1)
		return (1);
	if (ddir != NULL) {
		if (asprintf(&dcfg, "%s/config.json", ddir) == -1)
			fatal("asprintf");
	} else
		dcfg = login_path("DOCKER_CONFIG", ".docker", "config.json");
	if (af != NULL) {
		if ((afile = strdup(af)) == NULL)
			fatal("strdup");
	} else if (getenv("REGISTRY_AUTH_FILE") != NULL &&
	    *getenv("REGISTRY_AUTH_FILE") != '\0') {
		if ((afile = strdup(getenv("REGISTRY_AUTH_FILE"))) == NULL)
			fatal("strdup");
	} else if (getenv("XDG_RUNTIME_DIR") != NULL &&
	    *getenv("XDG_RUNTIME_DIR") != '\0')
		afile = login_path("XDG_RUNTIME_DIR", NULL,
		    "containers/auth.json");
	else
		afile = login_path(NULL, ".config", "containers/auth.json");
	store = login_helper_store_path();
	if (login_helper_put(&r, o.ca_file, err, sizeof(err)) == -1 ||
	    login_put_auth(dcfg, &r, helper, err, sizeof(err)) == -1 ||
	    login_put_auth(afile, &r, helper, err, sizeof(err)) == -1) {
		login_say(stderr, "portcullis: %s\n", err);
		goto done;
	}
	printf("Signed in to %s.\n", r.host);
	printf("  docker:          %s (%s)\n", dcfg, helper ?
	    "credHelpers: docker-credential-portcullis" : "identitytoken");
	printf("  podman, skopeo:  %s (%s)\n", afile, helper ?
	    "credHelpers: docker-credential-portcullis" : "identitytoken");
	printf("  helper store:    %s\n", store);
	fflush(stdout);
	rv = 0;
done:
	free(dcfg);
	free(afile);
	free(store);
	login_result_free(&r);
	return (rv);
}
