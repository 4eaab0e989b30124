/*
 * config.c: load the JSON configuration into an immutable snapshot.
 *
 * The schema tables (config_schema*.c) drive everything here: they fill in
 * defaults, parse and type-check the document, free the snapshot and
 * compare two snapshots on reload.  Checks that span several keys
 * (duplicate prefixes, one default upstream, TLS client verification) run
 * after the tables; those of the policy and identity sections, and the
 * policy's compilation, are config_access.c's; the secret files the
 * document names (credentials, passwords, the SSO client secret) are read
 * by config_secret.c.  Snapshots are reference counted; the lookups by
 * prefix and host answer the router from one.
 *
 * Guarantees: a returned snapshot passed every check; every problem found is
 * reported, one per line, named by its JSON pointer; values from the file
 * are never echoed in errors, and the credentials read from
 * credentials_file are never printed.  Referenced files are checked for
 * readability at load time, and the file itself is refused above 1 MiB
 * before it is read.  Allocation failure aborts: this runs at start-up
 * and on reload, where there is nothing better to do.
 */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <jansson.h>

#include "config.h"
#include "config_int.h"
#include "jwk.h"
#include "policy.h"

struct cfg_ctx {
	char		*errs;		/* "pointer: message\n" lines */
	size_t		 errlen;
	size_t		 errsize;
	int		 nerrs;
	const char	*base_dir;	/* NULL: relative to the cwd */
};

#define FIELD(base, off, type)	((type *)(void *)((char *)(base) + (off)))
#define CONST_FIELD(base, off, type)					\
	((type const *)(const void *)((const char *)(base) + (off)))

/* Keys whose name suggests an inline secret get a pointed message. */
static const char *const cfg_secret_words[] = {
	"password", "passwd", "secret", "token", "username", "auth", NULL
};

/* Report one problem, named by its JSON pointer ("" is the root). */
void
cfg_error(struct cfg_ctx *ctx, const char *ptr, const char *fmt, ...)
{
	char	 line[CFG_PTR_MAX + 512];
	va_list	 ap;
	int	 n, m;
	size_t	 need;
	char	*p;

	n = snprintf(line, sizeof(line), "%s: ", *ptr == '\0' ? "/" : ptr);
	if (n < 0 || (size_t)n >= sizeof(line))
		n = 0;
	va_start(ap, fmt);
	m = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
	va_end(ap);
	if (m < 0)
		m = 0;
	if ((size_t)(n + m) >= sizeof(line))
		m = sizeof(line) - n - 1;
	need = ctx->errlen + n + m + 2;
	if (need > ctx->errsize) {
		if ((p = realloc(ctx->errs, need * 2)) == NULL)
			abort();
		ctx->errs = p;
		ctx->errsize = need * 2;
	}
	memcpy(ctx->errs + ctx->errlen, line, n + m);
	ctx->errlen += n + m;
	ctx->errs[ctx->errlen++] = '\n';
	ctx->errs[ctx->errlen] = '\0';
	ctx->nerrs++;
}

/* strdup(3) that aborts when memory runs out. */
char *
cfg_xstrdup(const char *s)
{
	char	*p;

	if ((p = strdup(s)) == NULL)
		abort();
	return p;
}

/* calloc(3) that aborts when memory runs out; n may be 0. */
void *
cfg_xcalloc(size_t n, size_t size)
{
	void	*p;

	if ((p = calloc(n == 0 ? 1 : n, size)) == NULL)
		abort();
	return p;
}

/* Append one reference token to a JSON pointer, escaping per RFC 6901. */
void
cfg_ptr(char *out, size_t len, const char *parent, const char *token)
{
	size_t	 n;

	n = strnlen(parent, len - 1);
	memmove(out, parent, n);
	if (n + 1 < len)
		out[n++] = '/';
	for (; *token != '\0' && n + 2 < len; token++) {
		if (*token == '~' || *token == '/') {
			out[n++] = '~';
			out[n++] = *token == '~' ? '0' : '1';
		} else
			out[n++] = *token;
	}
	out[n] = '\0';
}

/* Append an array index to a JSON pointer. */
static void
cfg_ptr_index(char *out, size_t len, const char *parent, size_t i)
{
	char	 tok[32];

	snprintf(tok, sizeof(tok), "%zu", i);
	cfg_ptr(out, len, parent, tok);
}

/* Resolve a file named in the configuration against its directory. */
static char *
cfg_resolve(const struct cfg_ctx *ctx, const char *file)
{
	char	*p;
	size_t	 len;

	if (file[0] == '/' || ctx->base_dir == NULL || *ctx->base_dir == '\0')
		return cfg_xstrdup(file);
	len = strlen(ctx->base_dir) + strlen(file) + 2;
	if ((p = malloc(len)) == NULL)
		abort();
	snprintf(p, len, "%s/%s", ctx->base_dir, file);
	return p;
}

/*
 * Open a regular file for reading; -1 with errno set otherwise.  Opened
 * non-blocking: open(2) of a FIFO waits for a writer, and a reload runs on
 * the event loop, so a FIFO where a file should be would stop every
 * client.  The flag is cleared again for the regular file.
 */
int
cfg_open_regular(const char *file)
{
	struct stat	 st;
	int		 fd, saved, fl;

	if ((fd = open(file, O_RDONLY | O_CLOEXEC | O_NOCTTY |
	    O_NONBLOCK)) == -1)
		return -1;
	if (fstat(fd, &st) == -1) {
		saved = errno;
		close(fd);
		errno = saved;
		return -1;
	}
	if (!S_ISREG(st.st_mode)) {
		saved = S_ISDIR(st.st_mode) ? EISDIR : EINVAL;
		close(fd);
		errno = saved;
		return -1;
	}
	if ((fl = fcntl(fd, F_GETFL)) == -1 ||
	    fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) == -1) {
		saved = errno;
		close(fd);
		errno = saved;
		return -1;
	}
	return fd;
}

/* Fill in the defaults of every key of an object held in base. */
static void
cfg_defaults(const struct cfg_key *keys, void *base)
{
	const struct cfg_key	*k;

	for (k = keys; k->name != NULL; k++) {
		switch (k->type) {
		case CFG_STRING:
		case CFG_PATH:
			*FIELD(base, k->off, char *) = k->def_str == NULL ?
			    NULL : cfg_xstrdup(k->def_str);
			break;
		case CFG_ENUM:
		case CFG_BOOL:
		case CFG_INT:
		case CFG_SECONDS:
			*FIELD(base, k->off, int) = (int)k->def;
			break;
		case CFG_SIZE:
			*FIELD(base, k->off, size_t) = (size_t)k->def;
			break;
		case CFG_FRACTION:
			*FIELD(base, k->off, double) = k->def / 1000.0;
			break;
		case CFG_STRLIST:
			*FIELD(base, k->off, char **) = NULL;
			*FIELD(base, k->count_off, size_t) = 0;
			break;
		case CFG_OBJECT:
			cfg_defaults(k->sub, base);
			break;
		case CFG_PTR_OBJECT:
			*FIELD(base, k->off, void *) = NULL;
			break;
		case CFG_ARRAY:
			*FIELD(base, k->off, void *) = NULL;
			*FIELD(base, k->count_off, size_t) = 0;
			break;
		}
	}
}

/* Free what the keys of an object own; the object itself stays. */
static void
cfg_free_keys(const struct cfg_key *keys, void *base)
{
	const struct cfg_key	*k;
	char			**list;
	char			*elems;
	size_t			 i, n;

	for (k = keys; k->name != NULL; k++) {
		switch (k->type) {
		case CFG_STRING:
		case CFG_PATH:
			free(*FIELD(base, k->off, char *));
			*FIELD(base, k->off, char *) = NULL;
			break;
		case CFG_STRLIST:
			list = *FIELD(base, k->off, char **);
			n = *FIELD(base, k->count_off, size_t);
			for (i = 0; list != NULL && i < n; i++)
				free(list[i]);
			free(list);
			*FIELD(base, k->off, char **) = NULL;
			*FIELD(base, k->count_off, size_t) = 0;
			break;
		case CFG_OBJECT:
			cfg_free_keys(k->sub, base);
			break;
		case CFG_PTR_OBJECT:
			if ((elems = *FIELD(base, k->off, char *)) != NULL) {
				cfg_free_keys(k->sub, elems);
				free(elems);
			}
			*FIELD(base, k->off, char *) = NULL;
			break;
		case CFG_ARRAY:
			elems = *FIELD(base, k->off, char *);
			n = *FIELD(base, k->count_off, size_t);
			for (i = 0; elems != NULL && i < n; i++)
				cfg_free_keys(k->sub, elems + i * k->sub_size);
			free(elems);
			*FIELD(base, k->off, char *) = NULL;
			*FIELD(base, k->count_off, size_t) = 0;
			break;
		default:
			break;
		}
	}
}


/* Parse one present value into its field; report what is wrong with it. */
static void
cfg_parse_value(struct cfg_ctx *ctx, const struct cfg_key *k, json_t *v,
    void *base, const char *ptr)
{
	char		 elptr[CFG_PTR_MAX], **list, *elems, *file;
	const char	*s, *msg;
	json_int_t	 iv;
	double		 dv;
	size_t		 i, n;
	int		 j;

	switch (k->type) {
	case CFG_STRING:
		if (!json_is_string(v)) {
			cfg_error(ctx, ptr, "must be a string");
			break;
		}
		s = json_string_value(v);
		if (k->check != NULL && (msg = k->check(s)) != NULL) {
			cfg_error(ctx, ptr, "%s", msg);
			break;
		}
		free(*FIELD(base, k->off, char *));
		*FIELD(base, k->off, char *) = cfg_xstrdup(s);
		break;
	case CFG_PATH:
		if (!json_is_string(v) || json_string_length(v) == 0) {
			cfg_error(ctx, ptr, "must be a file name");
			break;
		}
		/*
		 * Keep the name even when the file is unreadable, so that
		 * later checks ("verify_client needs client_ca_file") do
		 * not pile a second, misleading error onto this one.
		 */
		file = cfg_resolve(ctx, json_string_value(v));
		free(*FIELD(base, k->off, char *));
		*FIELD(base, k->off, char *) = file;
		if ((j = cfg_open_regular(file)) == -1) {
			cfg_error(ctx, ptr, "cannot read: %s", strerror(errno));
			break;
		}
		close(j);
		if (k->loaded != NULL)
			k->loaded(ctx, base, file, ptr);
		break;
	case CFG_ENUM:
		s = json_is_string(v) ? json_string_value(v) : "";
		for (j = 0; k->choices[j] != NULL; j++)
			if (strcmp(s, k->choices[j]) == 0)
				break;
		if (k->choices[j] == NULL) {
			char	 all[256] = "";

			for (j = 0; k->choices[j] != NULL; j++) {
				if (j > 0)
					strncat(all, ", ",
					    sizeof(all) - strlen(all) - 1);
				strncat(all, k->choices[j],
				    sizeof(all) - strlen(all) - 1);
			}
			cfg_error(ctx, ptr, "must be one of: %s", all);
			break;
		}
		*FIELD(base, k->off, int) = j;
		break;
	case CFG_BOOL:
		if (!json_is_boolean(v)) {
			cfg_error(ctx, ptr, "must be true or false");
			break;
		}
		*FIELD(base, k->off, int) = json_is_true(v);
		break;
	case CFG_INT:
	case CFG_SIZE:
		if (!json_is_integer(v)) {
			cfg_error(ctx, ptr, "must be an integer");
			break;
		}
		iv = json_integer_value(v);
		if (iv < k->min || iv > k->max) {
			cfg_error(ctx, ptr, "must be between %lld and %lld",
			    k->min, k->max);
			break;
		}
		if (k->type == CFG_INT)
			*FIELD(base, k->off, int) = (int)iv;
		else
			*FIELD(base, k->off, size_t) = (size_t)iv;
		break;
	case CFG_SECONDS:
		if (!json_is_number(v)) {
			cfg_error(ctx, ptr, "must be a number of seconds");
			break;
		}
		/* Bounds apply to the value rounded to milliseconds. */
		dv = json_number_value(v) * 1000.0;
		if (!(dv >= k->min - 0.5 && dv < k->max + 0.5)) {
			cfg_error(ctx, ptr, "must be between %g and %g seconds",
			    k->min / 1000.0, k->max / 1000.0);
			break;
		}
		*FIELD(base, k->off, int) = (int)(dv + 0.5);
		break;
	case CFG_FRACTION:
		if (!json_is_number(v)) {
			cfg_error(ctx, ptr, "must be a number");
			break;
		}
		dv = json_number_value(v);
		if (!(dv * 1000.0 >= k->min && dv * 1000.0 <= k->max)) {
			cfg_error(ctx, ptr, "must be between %g and %g",
			    k->min / 1000.0, k->max / 1000.0);
			break;
		}
		*FIELD(base, k->off, double) = dv;
		break;
	case CFG_STRLIST:
		if (!json_is_array(v)) {
			cfg_error(ctx, ptr, "must be an array of strings");
			break;
		}
		n = json_array_size(v);
		if (n < (size_t)k->min || n > (size_t)k->max) {
			cfg_error(ctx, ptr, "must have %lld to %lld entries",
			    k->min, k->max);
			break;
		}
		/* Allocated even when empty: non-NULL means "given". */
		list = cfg_xcalloc(n + 1, sizeof(*list));
		*FIELD(base, k->off, char **) = list;
		for (i = 0; i < n; i++) {
			cfg_ptr_index(elptr, sizeof(elptr), ptr, i);
			s = json_string_value(json_array_get(v, i));
			if (s == NULL) {
				cfg_error(ctx, elptr, "must be a string");
				continue;
			}
			if (k->check != NULL && (msg = k->check(s)) != NULL) {
				cfg_error(ctx, elptr, "%s", msg);
				continue;
			}
			list[(*FIELD(base, k->count_off, size_t))++] =
			    cfg_xstrdup(s);
		}
		break;
	case CFG_OBJECT:
		cfg_parse_object(ctx, k->sub, v, base, ptr);
		break;
	case CFG_PTR_OBJECT:
		if (!json_is_object(v)) {
			cfg_error(ctx, ptr, "must be an object");
			break;
		}
		elems = cfg_xcalloc(1, k->sub_size);
		*FIELD(base, k->off, char *) = elems;
		cfg_defaults(k->sub, elems);
		cfg_parse_object(ctx, k->sub, v, elems, ptr);
		break;
	case CFG_ARRAY:
		if (!json_is_array(v)) {
			cfg_error(ctx, ptr, "must be an array");
			break;
		}
		n = json_array_size(v);
		if (n < (size_t)k->min) {
			cfg_error(ctx, ptr, "must have at least %lld %s",
			    k->min, k->min == 1 ? "entry" : "entries");
			break;
		}
		if (n > (size_t)k->max) {
			cfg_error(ctx, ptr, "must have at most %lld entries",
			    k->max);
			break;
		}
		elems = cfg_xcalloc(n, k->sub_size);
		*FIELD(base, k->off, char *) = elems;
		*FIELD(base, k->count_off, size_t) = n;
		for (i = 0; i < n; i++)
			cfg_defaults(k->sub, elems + i * k->sub_size);
		for (i = 0; i < n; i++) {
			cfg_ptr_index(elptr, sizeof(elptr), ptr, i);
			/* "x" stands for {"<first key>": "x"}. */
			if ((k->flags & CFG_SHORTHAND) &&
			    json_is_string(json_array_get(v, i)))
				cfg_parse_value(ctx, &k->sub[0],
				    json_array_get(v, i),
				    elems + i * k->sub_size, elptr);
			else
				cfg_parse_object(ctx, k->sub,
				    json_array_get(v, i),
				    elems + i * k->sub_size, elptr);
		}
		break;
	}
}

static int
cfg_secret_name(const char *name)
{
	size_t	 i, wlen, at;

	for (i = 0; cfg_secret_words[i] != NULL; i++) {
		wlen = strlen(cfg_secret_words[i]);
		for (at = 0; name[at] != '\0'; at++)
			if (strncasecmp(name + at, cfg_secret_words[i],
			    wlen) == 0)
				return 1;
	}
	return 0;
}

/*
 * Parse the members of a JSON object against a key table.  Unknown keys
 * are reported first, in document order, then each known key in table
 * order.
 */
void
cfg_parse_object(struct cfg_ctx *ctx, const struct cfg_key *keys, json_t *obj,
    void *base, const char *ptr)
{
	const struct cfg_key	*k;
	const char		*name;
	char			 kptr[CFG_PTR_MAX];
	json_t			*v;

	if (!json_is_object(obj)) {
		cfg_error(ctx, ptr, "must be an object");
		return;
	}
	json_object_foreach(obj, name, v) {
		for (k = keys; k->name != NULL; k++)
			if (strcmp(k->name, name) == 0)
				break;
		if (k->name != NULL)
			continue;
		cfg_ptr(kptr, sizeof(kptr), ptr, name);
		/* The redis section names its file password_file. */
		for (k = keys; k->name != NULL; k++)
			if (strcmp(k->name, "password_file") == 0)
				break;
		if (cfg_secret_name(name) && k->name != NULL)
			cfg_error(ctx, kptr, "unknown key; secrets are never "
			    "written inline: put the password in a file and "
			    "name it in password_file");
		else if (cfg_secret_name(name))
			cfg_error(ctx, kptr, "unknown key; secrets are never "
			    "written inline: put \"username:password\" in a "
			    "file and name it in credentials_file");
		else
			cfg_error(ctx, kptr, "unknown key");
	}
	for (k = keys; k->name != NULL; k++) {
		cfg_ptr(kptr, sizeof(kptr), ptr, k->name);
		if ((v = json_object_get(obj, k->name)) == NULL) {
			if (k->flags & CFG_REQUIRED)
				cfg_error(ctx, kptr, "is required");
			continue;
		}
		cfg_parse_value(ctx, k, v, base, kptr);
	}
}

static void
cfg_add_host(struct config_upstream *up, const char *host)
{
	char	**hosts;
	size_t	  i;

	for (i = 0; i < up->nhosts; i++)
		if (strcasecmp(up->hosts[i], host) == 0)
			return;
	hosts = realloc(up->hosts, (up->nhosts + 2) * sizeof(*hosts));
	if (hosts == NULL)
		abort();
	hosts[up->nhosts++] = cfg_xstrdup(host);
	hosts[up->nhosts] = NULL;
	up->hosts = hosts;
}

/*
 * The host names containerd sends in ns= for this upstream: its URL's
 * host[:port] (url_hostport() drops the scheme's default port), and for
 * Docker Hub the names docker.io images are known by.
 */
static void
cfg_default_hosts(struct config_upstream *up)
{
	char	 hp[300];

	if (url_hostport(&up->u, hp, sizeof(hp)) != -1)
		cfg_add_host(up, hp);
	if (up->docker_hub) {
		cfg_add_host(up, "docker.io");
		cfg_add_host(up, "registry-1.docker.io");
		cfg_add_host(up, "index.docker.io");
	}
	if (up->hosts == NULL)
		up->hosts = cfg_xcalloc(1, sizeof(*up->hosts));
}

/* Report a host that routes to two upstreams; given says who set it. */
static void
cfg_dup_host(struct cfg_ctx *ctx, const struct config_upstream *ups,
    const int *given, size_t i, size_t a, size_t j, size_t b)
{
	char	 p[CFG_PTR_MAX], q[CFG_PTR_MAX];

	snprintf(p, sizeof(p), "/upstreams/%zu/hosts", i);
	snprintf(q, sizeof(q), "/upstreams/%zu/hosts", j);
	if (given[j])
		snprintf(q + strlen(q), sizeof(q) - strlen(q), "/%zu", b);
	if (given[i])
		snprintf(p + strlen(p), sizeof(p) - strlen(p), "/%zu", a);
	if (given[i])
		cfg_error(ctx, p, "duplicate of %s", q);
	else
		cfg_error(ctx, p, "default host \"%s\" is also in %s; set "
		    "hosts on one of them", ups[i].hosts[a], q);
}

/* Checks that span keys, and values computed from others. */
static void
cfg_finish(struct cfg_ctx *ctx, struct config *cfg)
{
	struct config_upstream	*up, *o;
	char			 host[256], p[CFG_PTR_MAX], q[CFG_PTR_MAX];
	size_t			 i, j, a, b, ndefault = 0, len;
	int			*given;

	if (cfg->listen_address != NULL &&
	    cfg_split_listen(cfg->listen_address, cfg->listen_host,
	    sizeof(cfg->listen_host), &cfg->listen_port) == -1)
		cfg_error(ctx, "/listen/address", "%s",
		    cfg_check_listen(cfg->listen_address));

	if (cfg->admin_listen != NULL &&
	    cfg_split_listen(cfg->admin_listen, cfg->admin_listen_host,
	    sizeof(cfg->admin_listen_host), &cfg->admin_listen_port) == -1)
		cfg_error(ctx, "/admin/listen", "%s",
		    cfg_check_listen(cfg->admin_listen));

	if (cfg->tls != NULL && cfg->tls->verify_client != CONFIG_VERIFY_NONE &&
	    cfg->tls->client_ca_file == NULL)
		cfg_error(ctx, "/listen/tls/verify_client",
		    "requires client_ca_file");

	/* The realm is external_url + "/token": no doubled slash. */
	if (cfg->external_url != NULL &&
	    (len = strlen(cfg->external_url)) > 0 &&
	    cfg->external_url[len - 1] == '/')
		cfg->external_url[len - 1] = '\0';

	if (cfg->instance_id == NULL) {
		if (gethostname(host, sizeof(host)) == -1)
			strcpy(host, "localhost");
		host[sizeof(host) - 1] = '\0';
		len = strlen(host) + 16;
		if ((cfg->instance_id = malloc(len)) == NULL)
			abort();
		snprintf(cfg->instance_id, len, "%s:%d", host,
		    cfg->listen_port);
	}

	/* The log file and spool are created at start: resolve, no check. */
	if (cfg->log_file != NULL) {
		char	*lf = cfg_resolve(ctx, cfg->log_file);

		free(cfg->log_file);
		cfg->log_file = lf;
	}
	if (cfg->run_group != NULL && cfg->run_user == NULL)
		cfg_error(ctx, "/group", "needs user");
	if (cfg->audit != NULL && cfg->audit->spool_file != NULL) {
		char	*spool = cfg_resolve(ctx, cfg->audit->spool_file);

		free(cfg->audit->spool_file);
		cfg->audit->spool_file = spool;
	}
	if (config_worker >= 0)
		config_worker_identity(cfg, config_worker);
	if (cfg->redis != NULL) {
		struct config_redis	*r = cfg->redis;

		if (r->address != NULL && cfg_split_listen(r->address,
		    r->host, sizeof(r->host), &r->port) == -1)
			r->host[0] = '\0';
		if (r->username != NULL && r->password_file == NULL)
			cfg_error(ctx, "/redis/username",
			    "requires password_file");
		if (r->sentinel != NULL && r->sentinel->username != NULL &&
		    r->sentinel->password_file == NULL)
			cfg_error(ctx, "/redis/sentinel/username",
			    "requires password_file");
		if (r->reconnect_min_ms > r->reconnect_max_ms)
			cfg_error(ctx, "/redis/reconnect_min",
			    "must not be above reconnect_max");
	}
	/*
	 * audit.redis, when written, is the audit's address, exactly as
	 * before there was a redis section; otherwise the shared one.
	 */
	if (cfg->audit != NULL && cfg->audit->redis == NULL)
		cfg->audit->redis = cfg_xstrdup(cfg->redis != NULL &&
		    cfg->redis->address != NULL ? cfg->redis->address :
		    "127.0.0.1:6379");
	if (cfg->audit != NULL && cfg->audit->redis != NULL &&
	    cfg_split_listen(cfg->audit->redis, cfg->audit->redis_host,
	    sizeof(cfg->audit->redis_host), &cfg->audit->redis_port) == -1)
		cfg->audit->redis_host[0] = '\0';

	cfg->default_upstream = -1;
	given = cfg_xcalloc(cfg->nupstreams, sizeof(*given));
	for (i = 0; i < cfg->nupstreams; i++) {
		up = &cfg->upstreams[i];
		given[i] = up->hosts != NULL;
		if (up->url != NULL && url_parse(up->url, &up->u) == 0 &&
		    up->hosts == NULL)
			cfg_default_hosts(up);
		if (up->is_default && ndefault++ == 0)
			cfg->default_upstream = (int)i;
		for (j = 0; j < i; j++) {
			o = &cfg->upstreams[j];
			if (up->name != NULL && o->name != NULL &&
			    strcmp(up->name, o->name) == 0) {
				snprintf(p, sizeof(p), "/upstreams/%zu/name",
				    i);
				snprintf(q, sizeof(q), "/upstreams/%zu/name",
				    j);
				cfg_error(ctx, p, "duplicate of %s", q);
				break;
			}
		}
		for (j = 0; j < i; j++) {
			o = &cfg->upstreams[j];
			if (up->prefix != NULL && o->prefix != NULL &&
			    strcmp(up->prefix, o->prefix) == 0) {
				snprintf(p, sizeof(p), "/upstreams/%zu/prefix",
				    i);
				snprintf(q, sizeof(q), "/upstreams/%zu/prefix",
				    j);
				cfg_error(ctx, p, "duplicate of %s", q);
				break;
			}
		}
	}
	if (ndefault > 1)
		cfg_error(ctx, "/upstreams",
		    "at most one upstream may be default");

	/* A host in two lists would make ns= routing depend on order. */
	for (i = 0; i < cfg->nupstreams; i++) {
		up = &cfg->upstreams[i];
		for (a = 0; a < up->nhosts; a++) {
			for (j = 0; j < i; j++) {
				o = &cfg->upstreams[j];
				for (b = 0; b < o->nhosts; b++)
					if (strcasecmp(up->hosts[a],
					    o->hosts[b]) == 0)
						break;
				if (b < o->nhosts) {
					cfg_dup_host(ctx, cfg->upstreams,
					    given, i, a, j, b);
					break;
				}
			}
		}
	}
	free(given);
	cfg_finish_identity(ctx, cfg);
	cfg_compile_policy(ctx, cfg);
	cfg_finish_ratelimit(ctx, cfg);
}

static void
config_free(struct config *cfg)
{
	struct config_upstream	*up;
	size_t			 i;

	for (i = 0; cfg->upstreams != NULL && i < cfg->nupstreams; i++) {
		up = &cfg->upstreams[i];
		if (up->username != NULL) {
			explicit_bzero(up->username, strlen(up->username));
			free(up->username);
		}
		if (up->password != NULL) {
			explicit_bzero(up->password, strlen(up->password));
			free(up->password);
		}
	}
	if (cfg->redis != NULL && cfg->redis->password != NULL) {
		explicit_bzero(cfg->redis->password,
		    strlen(cfg->redis->password));
		free(cfg->redis->password);
	}
	if (cfg->redis != NULL && cfg->redis->sentinel != NULL &&
	    cfg->redis->sentinel->password != NULL) {
		explicit_bzero(cfg->redis->sentinel->password,
		    strlen(cfg->redis->sentinel->password));
		free(cfg->redis->sentinel->password);
	}
	/* The compiled policy borrows strings from policy_src: first. */
	policy_free(cfg->policy);
	if (cfg->identity != NULL && cfg->identity->token != NULL) {
		struct config_token	*tk = cfg->identity->token;

		jwk_set_free(tk->keys);
		for (i = 0; i < tk->nvkeys; i++) {
			if (tk->vkeys[i].key != NULL)
				jwk_key_clear(tk->vkeys[i].key);
			free(tk->vkeys[i].key);
		}
	}
	if (cfg->identity != NULL && cfg->identity->sso != NULL &&
	    cfg->identity->sso->client_secret != NULL) {
		char	*cs = cfg->identity->sso->client_secret;

		explicit_bzero(cs, strlen(cs));
		free(cs);
	}
	cfg_free_keys(cfg_root_keys, cfg);
	free(cfg->path);
	free(cfg);
}

/* Hand the collected errors to the caller, without the last newline. */
static void
cfg_give_errors(struct cfg_ctx *ctx, char **cause)
{
	if (ctx->errlen > 0 && ctx->errs[ctx->errlen - 1] == '\n')
		ctx->errs[--ctx->errlen] = '\0';
	if (cause != NULL)
		*cause = ctx->errs;
	else
		free(ctx->errs);
	ctx->errs = NULL;
}

static struct config *
cfg_load_buf(const char *buf, size_t len, const char *file,
    const char *base_dir, char **cause)
{
	struct cfg_ctx	 ctx;
	struct config	*cfg;
	json_error_t	 jerr;
	json_t		*root;
	char		 where[CFG_PTR_MAX];

	memset(&ctx, 0, sizeof(ctx));
	ctx.base_dir = base_dir;

	root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
	if (root == NULL) {
		snprintf(where, sizeof(where), "%s%s%d:%d",
		    file != NULL ? file : "", file != NULL ? ":" : "",
		    jerr.line, jerr.column);
		cfg_error(&ctx, where, "%s", jerr.text);
		cfg_give_errors(&ctx, cause);
		return NULL;
	}

	cfg = cfg_xcalloc(1, sizeof(*cfg));
	cfg->refcnt = 1;
	cfg_defaults(cfg_root_keys, cfg);
	cfg_parse_object(&ctx, cfg_root_keys, root, cfg, "");
	/* Runs even after errors, so that one pass reports them all. */
	cfg_finish(&ctx, cfg);
	json_decref(root);

	if (ctx.nerrs > 0) {
		config_free(cfg);
		cfg_give_errors(&ctx, cause);
		return NULL;
	}
	free(ctx.errs);
	if (file != NULL)
		cfg->path = cfg_xstrdup(file);
	if (cause != NULL)
		*cause = NULL;
	return cfg;
}

/*
 * Load the configuration file at path.  Relative file names inside it
 * resolve against the file's directory.  Returns NULL and sets *cause
 * (to be freed) to every error, one per line.
 */
struct config *
config_load(const char *path, char **cause)
{
	struct cfg_ctx	 ctx;
	struct config	*cfg;
	struct stat	 st;
	char		*buf = NULL, *dir = NULL, *slash;
	size_t		 len = 0;
	ssize_t		 n = 0;
	int		 fd;

	memset(&ctx, 0, sizeof(ctx));
	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY)) == -1) {
		cfg_error(&ctx, path, "cannot read: %s", strerror(errno));
		goto fail;
	}
	if (fstat(fd, &st) == -1) {
		cfg_error(&ctx, path, "cannot read: %s", strerror(errno));
		goto fail;
	}
	if (S_ISDIR(st.st_mode)) {
		cfg_error(&ctx, path, "cannot read: %s", strerror(EISDIR));
		goto fail;
	}
	/* Refuse before reading; the read loop also stops pipes. */
	if (S_ISREG(st.st_mode) && st.st_size > CONFIG_MAX_FILE_BYTES)
		goto toobig;
	if ((buf = malloc(CONFIG_MAX_FILE_BYTES + 1)) == NULL)
		abort();
	while (len <= CONFIG_MAX_FILE_BYTES) {
		n = read(fd, buf + len, CONFIG_MAX_FILE_BYTES + 1 - len);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += n;
	}
	if (n == -1) {
		cfg_error(&ctx, path, "cannot read: %s", strerror(errno));
		goto fail;
	}
	if (len > CONFIG_MAX_FILE_BYTES)
		goto toobig;
	close(fd);
	fd = -1;

	if ((slash = strrchr(path, '/')) != NULL) {
		dir = cfg_xstrdup(path);
		dir[slash == path ? 1 : slash - path] = '\0';
	}
	cfg = cfg_load_buf(buf, len, path, dir, cause);
	free(dir);
	free(buf);
	return cfg;

toobig:
	cfg_error(&ctx, path, "larger than %d bytes", CONFIG_MAX_FILE_BYTES);
fail:
	if (fd != -1)
		close(fd);
	free(buf);
	cfg_give_errors(&ctx, cause);
	return NULL;
}

/*
 * Load a configuration held in memory; relative file names resolve
 * against base_dir (NULL: the working directory).
 */
struct config *
config_load_string(const char *json, const char *base_dir, char **cause)
{
	struct cfg_ctx	 ctx;
	size_t		 len;

	len = strnlen(json, CONFIG_MAX_FILE_BYTES + 1);
	if (len > CONFIG_MAX_FILE_BYTES) {
		memset(&ctx, 0, sizeof(ctx));
		cfg_error(&ctx, "", "larger than %d bytes",
		    CONFIG_MAX_FILE_BYTES);
		cfg_give_errors(&ctx, cause);
		return NULL;
	}
	return cfg_load_buf(json, len, NULL, base_dir, cause);
}

/*
 * Take a reference.  Snapshots are shared within one event loop, so the
 * count is not atomic.
 */
void
config_ref(struct config *cfg)
{
	cfg->refcnt++;
}

/* Drop a reference and free the snapshot with the last; NULL is a no-op. */
void
config_unref(struct config *cfg)
{
	if (cfg == NULL || --cfg->refcnt > 0)
		return;
	config_free(cfg);
}

/* Find the upstream whose prefix is the name component [s, s + len). */
const struct config_upstream *
config_upstream_by_prefix(const struct config *cfg, const char *s, size_t len)
{
	const struct config_upstream	*up;
	size_t				 i;

	for (i = 0; i < cfg->nupstreams; i++) {
		up = &cfg->upstreams[i];
		if (up->prefix != NULL && strlen(up->prefix) == len &&
		    memcmp(up->prefix, s, len) == 0)
			return up;
	}
	return NULL;
}

/* Find the upstream one of whose hosts is [s, s + len), ignoring case. */
const struct config_upstream *
config_upstream_by_host(const struct config *cfg, const char *s, size_t len)
{
	const struct config_upstream	*up;
	size_t				 i, j;

	for (i = 0; i < cfg->nupstreams; i++) {
		up = &cfg->upstreams[i];
		for (j = 0; j < up->nhosts; j++)
			if (strlen(up->hosts[j]) == len &&
			    strncasecmp(up->hosts[j], s, len) == 0)
				return up;
	}
	return NULL;
}

/* The configuration name of a log level. */
const char *
config_log_level_name(int level)
{
	if (level < CONFIG_LOG_ERROR || level > CONFIG_LOG_DEBUG)
		return "unknown";
	return cfg_level_names[level];
}

static int
cfg_str_eq(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return strcmp(a, b) == 0;
}

/* Is the leaf value of k the same in both objects? */
static int
cfg_leaf_eq(const struct cfg_key *k, const void *a, const void *b)
{
	char		**la, **lb;
	size_t		 i, n;

	switch (k->type) {
	case CFG_STRING:
	case CFG_PATH:
		return cfg_str_eq(*CONST_FIELD(a, k->off, char *),
		    *CONST_FIELD(b, k->off, char *));
	case CFG_ENUM:
	case CFG_BOOL:
	case CFG_INT:
	case CFG_SECONDS:
		return *CONST_FIELD(a, k->off, int) ==
		    *CONST_FIELD(b, k->off, int);
	case CFG_SIZE:
		return *CONST_FIELD(a, k->off, size_t) ==
		    *CONST_FIELD(b, k->off, size_t);
	case CFG_FRACTION:
		return *CONST_FIELD(a, k->off, double) ==
		    *CONST_FIELD(b, k->off, double);
	case CFG_STRLIST:
		n = *CONST_FIELD(a, k->count_off, size_t);
		if (n != *CONST_FIELD(b, k->count_off, size_t))
			return 0;
		la = *CONST_FIELD(a, k->off, char **);
		lb = *CONST_FIELD(b, k->off, char **);
		for (i = 0; i < n; i++)
			if (strcmp(la[i], lb[i]) != 0)
				return 0;
		return 1;
	default:
		return 1;
	}
}

/*
 * Walk two snapshots side by side and report keys that differ although a
 * reload may not change them (fixed: an enclosing key may not change).
 */
static void
cfg_compare(struct cfg_ctx *ctx, const struct cfg_key *keys, const void *a,
    const void *b, const char *ptr, int fixed)
{
	const struct cfg_key	*k;
	const char		*pa, *pb;
	char			 kptr[CFG_PTR_MAX], eptr[CFG_PTR_MAX];
	size_t			 i, na, nb;
	int			 f;

	for (k = keys; k->name != NULL; k++) {
		cfg_ptr(kptr, sizeof(kptr), ptr, k->name);
		f = fixed || !(k->flags & CFG_RELOAD);
		switch (k->type) {
		case CFG_OBJECT:
			cfg_compare(ctx, k->sub, a, b, kptr, fixed);
			break;
		case CFG_PTR_OBJECT:
			pa = *CONST_FIELD(a, k->off, char *);
			pb = *CONST_FIELD(b, k->off, char *);
			if (f && (pa == NULL) != (pb == NULL))
				cfg_error(ctx, kptr, "a reload cannot add or "
				    "remove it; restart to apply");
			else if (pa != NULL && pb != NULL)
				cfg_compare(ctx, k->sub, pa, pb, kptr, f);
			break;
		case CFG_ARRAY:
			pa = *CONST_FIELD(a, k->off, char *);
			pb = *CONST_FIELD(b, k->off, char *);
			na = *CONST_FIELD(a, k->count_off, size_t);
			nb = *CONST_FIELD(b, k->count_off, size_t);
			if (f && na != nb) {
				cfg_error(ctx, kptr, "a reload cannot change "
				    "the number of entries; restart to apply");
				break;
			}
			for (i = 0; i < na && i < nb; i++) {
				cfg_ptr_index(eptr, sizeof(eptr), kptr, i);
				cfg_compare(ctx, k->sub, pa + i * k->sub_size,
				    pb + i * k->sub_size, eptr, f);
			}
			break;
		default:
			if (f && !cfg_leaf_eq(k, a, b))
				cfg_error(ctx, kptr, "a reload cannot change "
				    "it; restart to apply");
			break;
		}
	}
}

/*
 * Check that next differs from cur only in keys a reload may change.
 * Returns -1 and sets *cause to every offending key otherwise.
 */
int
config_reload_check(const struct config *cur, const struct config *next,
    char **cause)
{
	struct cfg_ctx	 ctx;

	memset(&ctx, 0, sizeof(ctx));
	cfg_compare(&ctx, cfg_root_keys, cur, next, "", 0);
	/*
	 * The file's name is compared above; its content too, so that a
	 * rotated password is not taken for applied: the links keep the
	 * one they started with.
	 */
	/* tls may change its files on reload, not appear or go. */
	if ((cur->tls == NULL) != (next->tls == NULL))
		cfg_error(&ctx, "/listen/tls", "a reload cannot add or remove "
		    "it; restart to apply");
	if (cur->redis != NULL && next->redis != NULL &&
	    !cfg_str_eq(cur->redis->password, next->redis->password))
		cfg_error(&ctx, "/redis/password_file", "its content changed; "
		    "a reload cannot change it; restart to apply");
	if (ctx.nerrs > 0) {
		cfg_give_errors(&ctx, cause);
		return -1;
	}
	if (cause != NULL)
		*cause = NULL;
	return 0;
}

/* The worker this process is (master.c), or -1: the only process. */
int	config_worker = -1;

/*
 * A worker of several writes audit records as "<instance_id>/<worker>",
 * with its own spool "<spool_file>.<worker>": the exactly-once key of
 * the audit stream is the writer identity, and one spool file belongs
 * to one writer (audit_spool.c locks it).  Rate-limit heartbeats take
 * the same identity, so N counts the processes that enforce limits.
 */
void
config_worker_identity(struct config *cfg, int worker)
{
	char	*s;

	if (asprintf(&s, "%s/%d", cfg->instance_id, worker) == -1)
		abort();
	free(cfg->instance_id);
	cfg->instance_id = s;
	if (cfg->audit != NULL && cfg->audit->spool_file != NULL) {
		if (asprintf(&s, "%s.%d", cfg->audit->spool_file,
		    worker) == -1)
			abort();
		free(cfg->audit->spool_file);
		cfg->audit->spool_file = s;
	}
}
