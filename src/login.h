/*
 * login.h: the terminal side of sign-in, shared by `portcullis login`
 * (login_cli.c) and docker-credential-portcullis (credhelper.c); the
 * blocking HTTP client both use (login_http.c).  No libevent: these run
 * as short commands, one request at a time.
 */
#ifndef PC_LOGIN_H
#define PC_LOGIN_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#define LOGIN_MAX_ANSWER	(1024 * 1024)	/* bytes of one answer */
#define LOGIN_IO_TIMEOUT	30		/* seconds, a whole request */

/* login_http.c */
struct login_resp {
	int	 status;
	char	*body;		/* NUL-terminated */
	size_t	 len;
};
int	 login_http(const char *, const char *, const char *, const char *,
	    const char *, struct login_resp *, char *, size_t);
json_t	*login_http_json(const char *, const char *, const char *,
	    const char *, int *, char *, size_t);
char	*login_form(const char *const *);
int	 login_http_parse(char *, size_t, struct login_resp *);
void	 login_resp_free(struct login_resp *);

/* login_cli.c */
struct login_opts {
	const char	*registry;	/* as given */
	const char	*ca_file;	/* NULL: the system's */
	FILE		*out;		/* where the person reads */
	int		 quiet;
};
/* What a sign-in gives, for the files. */
struct login_result {
	char		 host[300];	/* the auth files' key: host[:port] */
	char		*base;		/* http(s)://host[:port] */
	char		*token_endpoint;
	char		*service;
	char		*refresh_token;
	char		*access_token;
	int64_t		 access_expires;
};
int	 login_device(const struct login_opts *, struct login_result *);
void	 login_result_free(struct login_result *);
int	 login_registry_host(const char *, char *, size_t, char **);
json_t	*login_json_load(const char *, char *, size_t);
int	 login_json_save(const char *, json_t *, char *, size_t);
char	*login_helper_store_path(void);
int	 login_helper_put(const struct login_result *, const char *, char *,
	    size_t);
int	 login_cli(int, char **);
void	 login_say(FILE *, const char *, ...)
	    __attribute__((format(printf, 2, 3)));

/* credhelper.c */
int	 credhelper_main(int, char **);

#endif /* PC_LOGIN_H */
