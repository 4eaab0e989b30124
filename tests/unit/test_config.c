/*
 * test_config.c: the configuration loader: values, defaults, every kind of
 * error with its JSON pointer, credentials files, lookups, the reference
 * table and reference counting.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <sys/socket.h>
#include <sys/stat.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/*
 * By path: autoconf's generated config.h sits on the include path ahead of
 * src/ when this file is built from tests/unit/.
 */
#include "config.h"
#include "router.h"

int	keygen_cli(int, char **);	/* src/keygen.c */

static char	tmpdir[] = "/tmp/test_config.XXXXXX";

/* A valid upstream list, for tests about other keys. */
#define UP	"'upstreams':[{'name':'a','url':'http://127.0.0.1:5001'}]"

static void
write_file(const char *name, const char *content)
{
	char	 path[512];
	FILE	*f;

	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(content, f);
	assert_int_equal(fclose(f), 0);
}

static void
remove_file(const char *name)
{
	char	 path[512];

	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	unlink(path);
}

static int
setup(void **state)
{
	(void)state;
	if (mkdtemp(tmpdir) == NULL)
		return -1;
	write_file("cert.pem", "-----BEGIN CERTIFICATE-----\n");
	write_file("key.pem", "-----BEGIN PRIVATE KEY-----\n");
	write_file("ca.pem", "-----BEGIN CERTIFICATE-----\n");
	write_file("creds", "robot:s3cr3t:with:colons\n");
	write_file("creds-nonl", "robot:pw");
	write_file("creds-crlf", "robot:pw\r\n");
	write_file("creds-two", "robot:pw\nother:pw2\n");
	write_file("creds-nocolon", "robotpw-LEAKME\n");
	write_file("creds-nouser", ":pw-LEAKME\n");
	write_file("creds-nopass", "robot-LEAKME:\n");
	write_file("creds-empty", "");
	write_file("creds-blank2", "robot:pw-LEAKME\n\n");
	return 0;
}

static int
teardown(void **state)
{
	static const char *const files[] = {
		"cert.pem", "key.pem", "ca.pem", "creds", "creds-nonl",
		"creds-crlf", "creds-two", "creds-nocolon", "creds-nouser",
		"creds-nopass", "creds-empty", "creds-blank2",
		"shipped/credentials.example", "shipped/example.json",
		"shipped/sso-client-secret.example",
		"shipped/token-signing.key", "shipped/token-signing.crt",
		"shipped/token-signing.jwk", NULL
	};
	char	 dir[512];
	size_t	 i;

	(void)state;
	for (i = 0; files[i] != NULL; i++)
		remove_file(files[i]);
	snprintf(dir, sizeof(dir), "%s/shipped", tmpdir);
	rmdir(dir);
	return rmdir(tmpdir);
}

/* JSON with ' for " so that the tables below stay readable. */
static char *
dq(const char *s)
{
	char	*p, *q;

	p = strdup(s);
	assert_non_null(p);
	for (q = p; *q != '\0'; q++)
		if (*q == '\'')
			*q = '"';
	return p;
}

static struct config *
load(const char *json, char **cause)
{
	struct config	*cfg;
	char		*j;

	j = dq(json);
	*cause = NULL;
	cfg = config_load_string(j, tmpdir, cause);
	free(j);
	return cfg;
}

static struct config *
load_ok(const char *json)
{
	struct config	*cfg;
	char		*cause;

	cfg = load(json, &cause);
	if (cfg == NULL)
		fail_msg("unexpected errors:\n%s", cause);
	assert_null(cause);
	return cfg;
}

static size_t
count_lines(const char *s)
{
	size_t	 n = 1;

	for (; *s != '\0'; s++)
		if (*s == '\n')
			n++;
	return n;
}

/* Is line one of the lines of text, whole? */
static int
has_line(const char *text, const char *line)
{
	const char	*p = text;
	size_t		 n = strlen(line);

	while ((p = strstr(p, line)) != NULL) {
		if ((p == text || p[-1] == '\n') &&
		    (p[n] == '\0' || p[n] == '\n'))
			return 1;
		p++;
	}
	return 0;
}

static void
expect_error(const char *json, const char *line, size_t nlines)
{
	struct config	*cfg;
	char		*cause;

	cfg = load(json, &cause);
	if (cfg != NULL) {
		config_unref(cfg);
		fail_msg("loaded, expected \"%s\"", line);
	}
	assert_non_null(cause);
	if (!has_line(cause, line))
		fail_msg("expected \"%s\" in:\n%s", line, cause);
	if (nlines != 0 && count_lines(cause) != nlines)
		fail_msg("expected %zu lines in:\n%s", nlines, cause);
	free(cause);
}

static void
test_good(void **state)
{
	struct config			*cfg;
	const struct config_upstream	*up;
	char				 path[512];

	(void)state;
	cfg = load_ok("{"
	    "'listen':{'address':'[::1]:5443','tls':{'cert_file':'cert.pem',"
	    "'key_file':'key.pem','client_ca_file':'ca.pem',"
	    "'verify_client':'optional'}},"
	    "'external_url':'https://registry.example.com/',"
	    "'service':'reg.example.com','instance_id':'gw-1',"
	    "'limits':{'header_bytes':2048,'header_count':8,'uri_bytes':256,"
	    "'max_connections':1,'manifest_bytes':1048576},"
	    "'buffers':{'high_watermark':16384},"
	    "'timeouts':{'header':1,'idle':2,'body':3,'upstream_connect':4,"
	    "'upstream_response':5,'drain':0},"
	    "'log':{'level':'debug'},"
	    "'upstreams':["
	    "{'name':'hub','url':'https://registry-1.docker.io','prefix':'hub',"
	    "'docker_hub':true,'default':true,'pool_max_idle':0},"
	    "{'name':'my-reg','url':'http://10.0.0.1:5000/','prefix':'my.reg',"
	    "'hosts':['Reg.Example:5000','reg'],'ca_file':'ca.pem',"
	    "'credentials_file':'creds','pool_max_idle':1024}]}");

	assert_int_equal(cfg->refcnt, 1);
	assert_null(cfg->path);
	assert_string_equal(cfg->listen_address, "[::1]:5443");
	assert_string_equal(cfg->listen_host, "::1");
	assert_int_equal(cfg->listen_port, 5443);
	assert_non_null(cfg->tls);
	snprintf(path, sizeof(path), "%s/cert.pem", tmpdir);
	assert_string_equal(cfg->tls->cert_file, path);
	snprintf(path, sizeof(path), "%s/key.pem", tmpdir);
	assert_string_equal(cfg->tls->key_file, path);
	snprintf(path, sizeof(path), "%s/ca.pem", tmpdir);
	assert_string_equal(cfg->tls->client_ca_file, path);
	assert_int_equal(cfg->tls->verify_client, CONFIG_VERIFY_OPTIONAL);
	/* The trailing slash goes: the realm is external_url + "/token". */
	assert_string_equal(cfg->external_url, "https://registry.example.com");
	assert_string_equal(cfg->service, "reg.example.com");
	assert_string_equal(cfg->instance_id, "gw-1");
	assert_int_equal(cfg->header_bytes, 2048);
	assert_int_equal(cfg->header_count, 8);
	assert_int_equal(cfg->uri_bytes, 256);
	assert_int_equal(cfg->max_connections, 1);
	assert_int_equal(cfg->manifest_bytes, 1048576);
	assert_int_equal(cfg->high_watermark, 16384);
	assert_int_equal(cfg->header_timeout_ms, 1000);
	assert_int_equal(cfg->idle_timeout_ms, 2000);
	assert_int_equal(cfg->body_timeout_ms, 3000);
	assert_int_equal(cfg->upstream_connect_timeout_ms, 4000);
	assert_int_equal(cfg->upstream_response_timeout_ms, 5000);
	assert_int_equal(cfg->drain_timeout_ms, 0);
	assert_int_equal(cfg->log_level, CONFIG_LOG_DEBUG);
	assert_int_equal(cfg->nupstreams, 2);
	assert_int_equal(cfg->default_upstream, 0);

	up = &cfg->upstreams[0];
	assert_string_equal(up->name, "hub");
	assert_string_equal(up->url, "https://registry-1.docker.io");
	assert_string_equal(up->u.scheme, "https");
	assert_string_equal(up->u.host, "registry-1.docker.io");
	assert_int_equal(up->u.port, 443);
	assert_true(up->u.tls);
	assert_string_equal(up->prefix, "hub");
	assert_true(up->docker_hub);
	assert_true(up->is_default);
	assert_null(up->ca_file);
	assert_null(up->credentials_file);
	assert_null(up->username);
	assert_null(up->password);
	assert_int_equal(up->pool_max_idle, 0);

	up = &cfg->upstreams[1];
	assert_string_equal(up->name, "my-reg");
	assert_string_equal(up->u.host, "10.0.0.1");
	assert_int_equal(up->u.port, 5000);
	assert_false(up->u.tls);
	assert_string_equal(up->prefix, "my.reg");
	assert_false(up->docker_hub);
	assert_false(up->is_default);
	/* Given hosts replace the default ones. */
	assert_int_equal(up->nhosts, 2);
	assert_string_equal(up->hosts[0], "Reg.Example:5000");
	assert_string_equal(up->hosts[1], "reg");
	assert_string_equal(up->ca_file, path);
	snprintf(path, sizeof(path), "%s/creds", tmpdir);
	assert_string_equal(up->credentials_file, path);
	assert_string_equal(up->username, "robot");
	assert_string_equal(up->password, "s3cr3t:with:colons");
	assert_int_equal(up->pool_max_idle, 1024);
	config_unref(cfg);
}

static void
test_defaults(void **state)
{
	struct config			*cfg;
	const struct config_upstream	*up;
	char				 host[256], want[300];

	(void)state;
	cfg = load_ok("{" UP "}");
	assert_string_equal(cfg->listen_address, "127.0.0.1:5000");
	assert_string_equal(cfg->listen_host, "127.0.0.1");
	assert_int_equal(cfg->listen_port, 5000);
	assert_null(cfg->tls);
	assert_null(cfg->external_url);
	assert_string_equal(cfg->service, "portcullis");
	assert_int_equal(gethostname(host, sizeof(host)), 0);
	host[sizeof(host) - 1] = '\0';
	snprintf(want, sizeof(want), "%s:5000", host);
	assert_string_equal(cfg->instance_id, want);
	assert_int_equal(cfg->header_bytes, 65536);
	assert_int_equal(cfg->header_count, 100);
	assert_int_equal(cfg->uri_bytes, 8192);
	assert_int_equal(cfg->max_connections, 4096);
	assert_int_equal(cfg->manifest_bytes, 4194304);
	assert_int_equal(cfg->high_watermark, 262144);
	assert_int_equal(cfg->header_timeout_ms, 30000);
	assert_int_equal(cfg->idle_timeout_ms, 60000);
	assert_int_equal(cfg->body_timeout_ms, 60000);
	assert_int_equal(cfg->upstream_connect_timeout_ms, 10000);
	assert_int_equal(cfg->upstream_response_timeout_ms, 60000);
	assert_int_equal(cfg->drain_timeout_ms, 30000);
	assert_int_equal(cfg->log_level, CONFIG_LOG_INFO);
	assert_null(cfg->identity);
	assert_string_equal(config_log_level_name(cfg->log_level), "info");
	assert_int_equal(cfg->default_upstream, -1);
	up = &cfg->upstreams[0];
	assert_null(up->prefix);
	assert_false(up->docker_hub);
	assert_false(up->is_default);
	assert_int_equal(up->pool_max_idle, 16);
	assert_int_equal(up->nhosts, 1);
	assert_string_equal(up->hosts[0], "127.0.0.1:5001");
	assert_null(up->hosts[1]);
	config_unref(cfg);

	cfg = load_ok("{'listen':{'address':':8080'}," UP "}");
	assert_string_equal(cfg->listen_host, "");
	assert_int_equal(cfg->listen_port, 8080);
	config_unref(cfg);
}

struct err_case {
	const char	*json;
	const char	*line;
};

static const struct err_case err_cases[] = {
	/* Syntax, with line:column. */
	{ "{" UP ",\n 'log': }", "2:9: unexpected token near '}'" },
	{ "{" UP ",'log':{},'log':{}}",
	  "1:72: duplicate object key near '\"log\"'" },
	{ "[]", "/: must be an object" },
	/* Structure. */
	{ "{}", "/upstreams: is required" },
	{ "{'upstreams':[]}", "/upstreams: must have at least 1 entry" },
	{ "{'upstreams':{}}", "/upstreams: must be an array" },
	{ "{'upstreams':[1]}", "/upstreams/0: must be an object" },
	{ "{'upstreams':[{'url':'http://h'}]}",
	  "/upstreams/0/name: is required" },
	{ "{'upstreams':[{'name':'a'}]}", "/upstreams/0/url: is required" },
	{ "{" UP ",'foo':1}", "/foo: unknown key" },
	{ "{" UP ",'limits':{'header_size':1}}",
	  "/limits/header_size: unknown key" },
	{ "{" UP ",'a/b~c':1}", "/a~1b~0c: unknown key" },
	{ "{" UP ",'limits':[]}", "/limits: must be an object" },
	/* Secrets are never inline. */
	{ "{'upstreams':[{'name':'a','url':'http://h','password':'x'}]}",
	  "/upstreams/0/password: unknown key; secrets are never written "
	  "inline: put \"username:password\" in a file and name it in "
	  "credentials_file" },
	{ "{'upstreams':[{'name':'a','url':'http://h','auth_token':'x'}]}",
	  "/upstreams/0/auth_token: unknown key; secrets are never written "
	  "inline: put \"username:password\" in a file and name it in "
	  "credentials_file" },
	/* Types. */
	{ "{" UP ",'limits':{'header_count':'8'}}",
	  "/limits/header_count: must be an integer" },
	{ "{" UP ",'limits':{'header_count':8.5}}",
	  "/limits/header_count: must be an integer" },
	{ "{" UP ",'service':1}", "/service: must be a string" },
	{ "{" UP ",'timeouts':{'idle':'60'}}",
	  "/timeouts/idle: must be a number of seconds" },
	{ "{'upstreams':[{'name':'a','url':'http://h','docker_hub':1}]}",
	  "/upstreams/0/docker_hub: must be true or false" },
	{ "{" UP ",'log':{'level':'trace'}}",
	  "/log/level: must be one of: error, warn, info, debug" },
	{ "{'upstreams':[{'name':'a','url':'http://h','hosts':'h'}]}",
	  "/upstreams/0/hosts: must be an array of strings" },
	{ "{'upstreams':[{'name':'a','url':'http://h','hosts':['x',1]}]}",
	  "/upstreams/0/hosts/1: must be a string" },
	/* Bounds. */
	{ "{" UP ",'limits':{'header_count':7}}",
	  "/limits/header_count: must be between 8 and 1000" },
	{ "{" UP ",'limits':{'header_count':1001}}",
	  "/limits/header_count: must be between 8 and 1000" },
	{ "{" UP ",'limits':{'header_bytes':1023}}",
	  "/limits/header_bytes: must be between 1024 and 1048576" },
	{ "{" UP ",'limits':{'uri_bytes':65537}}",
	  "/limits/uri_bytes: must be between 256 and 65536" },
	{ "{" UP ",'limits':{'max_connections':0}}",
	  "/limits/max_connections: must be between 1 and 1000000" },
	{ "{" UP ",'buffers':{'high_watermark':16383}}",
	  "/buffers/high_watermark: must be between 16384 and 67108864" },
	{ "{" UP ",'timeouts':{'header':0.0994}}",
	  "/timeouts/header: must be between 0.1 and 3600 seconds" },
	{ "{" UP ",'timeouts':{'drain':-1}}",
	  "/timeouts/drain: must be between 0 and 3600 seconds" },
	{ "{" UP ",'timeouts':{'idle':1e300}}",
	  "/timeouts/idle: must be between 0.1 and 86400 seconds" },
	{ "{'upstreams':[{'name':'a','url':'http://h','pool_max_idle':1025}]}",
	  "/upstreams/0/pool_max_idle: must be between 0 and 1024" },
	{ "{" UP ",'cache':{'dir':'/tmp/c','fill_max_fraction':0}}",
	  "/cache/fill_max_fraction: must be between 0.001 and 1" },
	{ "{" UP ",'cache':{'dir':'/tmp/c','max_repo_links':0}}",
	  "/cache/max_repo_links: must be between 1 and 100000000" },
	{ "{" UP ",'cache':{'dir':'/tmp/c','max_confirms':0}}",
	  "/cache/max_confirms: must be between 1 and 100000" },
	{ "{" UP ",'cache':{'dir':'/tmp/c','referrers_entries':0}}",
	  "/cache/referrers_entries: must be between 1 and 100000" },
	{ "{" UP ",'limits':{'referrers_attempts':21}}",
	  "/limits/referrers_attempts: must be between 1 and 20" },
	{ "{" UP ",'cache':{'dir':'/tmp/c','fill_finish_fraction':1.01}}",
	  "/cache/fill_finish_fraction: must be between 0 and 1" },
	{ "{" UP ",'cache':{'dir':'/tmp/c','fill_finish_fraction':'1'}}",
	  "/cache/fill_finish_fraction: must be a number" },
	{ "{" UP ",'cache':{'dir':'/tmp/c','digest_threads':0}}",
	  "/cache/digest_threads: must be between 1 and 64" },
	/* Values. */
	{ "{'listen':{'address':'127.0.0.1'}," UP "}",
	  "/listen/address: must be host:port, [ipv6-address]:port or :port" },
	{ "{'listen':{'address':'::1:5000'}," UP "}",
	  "/listen/address: must be host:port, [ipv6-address]:port or :port" },
	{ "{'listen':{'address':'h:0'}," UP "}",
	  "/listen/address: must be host:port, [ipv6-address]:port or :port" },
	{ "{'listen':{'address':'h:65536'}," UP "}",
	  "/listen/address: must be host:port, [ipv6-address]:port or :port" },
	{ "{'upstreams':[{'name':'a','url':'ftp://h'}]}",
	  "/upstreams/0/url: must be an http or https URL" },
	{ "{'upstreams':[{'name':'a','url':'h:5000'}]}",
	  "/upstreams/0/url: must be an http or https URL" },
	{ "{'upstreams':[{'name':'a','url':'https://'}]}",
	  "/upstreams/0/url: must be an http or https URL" },
	{ "{'upstreams':[{'name':'a','url':'https://u:p@h'}]}",
	  "/upstreams/0/url: must not contain credentials; use "
	  "credentials_file" },
	{ "{'upstreams':[{'name':'a','url':'https://h/v2'}]}",
	  "/upstreams/0/url: must not have a path, query or fragment" },
	{ "{'upstreams':[{'name':'a','url':'https://h/?x=1'}]}",
	  "/upstreams/0/url: must not have a path, query or fragment" },
	{ "{" UP ",'external_url':'registry.example.com'}",
	  "/external_url: must be an http or https URL" },
	{ "{" UP ",'external_url':'https://r.example/gw'}",
	  "/external_url: must not have a path, query or fragment" },
	{ "{" UP ",'service':'a\\\\b'}",
	  "/service: must be 1 to 255 printable ASCII characters, without "
	  "quotes or backslashes" },
	{ "{" UP ",'instance_id':'gw 1'}",
	  "/instance_id: must be 1 to 255 printable ASCII characters, "
	  "without spaces, quotes or backslashes" },
	{ "{'upstreams':[{'name':'Hub','url':'http://h'}]}",
	  "/upstreams/0/name: must be lowercase letters, digits and '-', "
	  "not starting with '-', at most 32 characters" },
	{ "{'upstreams':[{'name':'-a','url':'http://h'}]}",
	  "/upstreams/0/name: must be lowercase letters, digits and '-', "
	  "not starting with '-', at most 32 characters" },
	{ "{'upstreams':[{'name':'abcdefghijklmnopqrstuvwxyz0123456',"
	  "'url':'http://h'}]}",
	  "/upstreams/0/name: must be lowercase letters, digits and '-', "
	  "not starting with '-', at most 32 characters" },
	{ "{'upstreams':[{'name':'a','url':'http://h','prefix':'a/b'}]}",
	  "/upstreams/0/prefix: must be one repository name component: "
	  "lowercase letters and digits, separated by '.', '_', '__' or '-'" },
	{ "{'upstreams':[{'name':'a','url':'http://h','prefix':'a___b'}]}",
	  "/upstreams/0/prefix: must be one repository name component: "
	  "lowercase letters and digits, separated by '.', '_', '__' or '-'" },
	{ "{'upstreams':[{'name':'a','url':'http://h','prefix':'a.'}]}",
	  "/upstreams/0/prefix: must be one repository name component: "
	  "lowercase letters and digits, separated by '.', '_', '__' or '-'" },
	{ "{'upstreams':[{'name':'a','url':'http://h','prefix':''}]}",
	  "/upstreams/0/prefix: must be one repository name component: "
	  "lowercase letters and digits, separated by '.', '_', '__' or '-'" },
	{ "{'upstreams':[{'name':'a','url':'http://h','hosts':['a b']}]}",
	  "/upstreams/0/hosts/0: must be a registry host name, optionally "
	  "with :port" },
	{ "{'upstreams':[{'name':'a','url':'http://h',"
	  "'redirect_allow':['s3.example.com','http://x']}]}",
	  "/upstreams/0/redirect_allow/1: must be a registry host name, "
	  "optionally with :port" },
	{ "{'upstreams':[{'name':'a','url':'http://h','auth_hosts':'a'}]}",
	  "/upstreams/0/auth_hosts: must be an array of strings" },
	{ "{'limits':{'redirects':11}," UP "}",
	  "/limits/redirects: must be between 0 and 10" },
	/* Files. */
	{ "{'listen':{'tls':{'cert_file':'nope.pem','key_file':'key.pem'}},"
	  UP "}", "/listen/tls/cert_file: cannot read: No such file or "
	  "directory" },
	{ "{'listen':{'tls':{'cert_file':'.','key_file':'key.pem'}}," UP "}",
	  "/listen/tls/cert_file: cannot read: Is a directory" },
	{ "{'listen':{'tls':{'cert_file':'','key_file':'key.pem'}}," UP "}",
	  "/listen/tls/cert_file: must be a file name" },
	{ "{'listen':{'tls':{'cert_file':'cert.pem'}}," UP "}",
	  "/listen/tls/key_file: is required" },
	{ "{'listen':{'tls':{'cert_file':'cert.pem','key_file':'key.pem',"
	  "'verify_client':'require'}}," UP "}",
	  "/listen/tls/verify_client: requires client_ca_file" },
	{ "{'listen':{'tls':{'cert_file':'cert.pem','key_file':'key.pem',"
	  "'verify_client':'always'}}," UP "}",
	  "/listen/tls/verify_client: must be one of: none, optional, "
	  "require" },
	{ "{'upstreams':[{'name':'a','url':'http://h',"
	  "'ca_file':'/nonexistent'}]}",
	  "/upstreams/0/ca_file: cannot read: No such file or directory" },
	/* Across upstreams. */
	{ "{'upstreams':[{'name':'a','url':'http://h1'},"
	  "{'name':'a','url':'http://h2'}]}",
	  "/upstreams/1/name: duplicate of /upstreams/0/name" },
	{ "{'upstreams':[{'name':'a','url':'http://h1','prefix':'p'},"
	  "{'name':'b','url':'http://h2'},"
	  "{'name':'c','url':'http://h3','prefix':'p'}]}",
	  "/upstreams/2/prefix: duplicate of /upstreams/0/prefix" },
	{ "{'upstreams':[{'name':'a','url':'http://h1','default':true},"
	  "{'name':'b','url':'http://h2','default':true}]}",
	  "/upstreams: at most one upstream may be default" },
	{ "{'upstreams':[{'name':'a','url':'http://h1'},"
	  "{'name':'b','url':'http://h1'}]}",
	  "/upstreams/1/hosts: default host \"h1\" is also in "
	  "/upstreams/0/hosts; set hosts on one of them" },
	{ "{'upstreams':[{'name':'a','url':'http://h1','hosts':['x','h']},"
	  "{'name':'b','url':'http://h2','hosts':['H']}]}",
	  "/upstreams/1/hosts/0: duplicate of /upstreams/0/hosts/1" },
	{ "{'upstreams':[{'name':'a','url':'https://registry-1.docker.io',"
	  "'docker_hub':true},{'name':'b','url':'http://h2',"
	  "'hosts':['Docker.IO']}]}",
	  "/upstreams/1/hosts/0: duplicate of /upstreams/0/hosts" },
	/* Identity providers. */
	{ "{" UP ",'identity':{'token':{}}}",
	  "/identity/token/signing_key: is required" },
	{ "{" UP ",'identity':{'token':{'signing_key':'/nonexistent'}}}",
	  "/identity/token/signing_key: cannot read: No such file or "
	  "directory" },
	{ "{" UP ",'identity':{'issuers':[{'name':'a',"
	  "'issuer':'http://idp.example','audiences':['x']}]}}",
	  "/identity/issuers/0/issuer: must be https (http only for a "
	  "numeric loopback host)" },
	{ "{" UP ",'identity':{'issuers':[{'name':'a',"
	  "'issuer':'https://u@idp.example','audiences':['x']}]}}",
	  "/identity/issuers/0/issuer: must be an https URL without "
	  "credentials, query or fragment" },
	{ "{" UP ",'identity':{'issuers':[{'name':'a',"
	  "'issuer':'https://idp.example'}]}}",
	  "/identity/issuers/0/audiences: is required" },
	{ "{" UP ",'identity':{'issuers':[{'name':'a',"
	  "'issuer':'https://idp.example','audiences':['x'],"
	  "'algorithms':['HS256']}]}}",
	  "/identity/issuers/0/algorithms/0: must be one of RS256, RS384, "
	  "RS512, PS256, ES256, ES384" },
	{ "{" UP ",'identity':{'issuers':[{'name':'a',"
	  "'issuer':'https://idp.example','audiences':['x'],"
	  "'max_jwks_bytes':100}]}}",
	  "/identity/issuers/0/max_jwks_bytes: must be between 256 and "
	  "4194304" },
	{ "{" UP ",'identity':{'issuers':[{'name':'a','prefix':'a:',"
	  "'issuer':'https://idp.example','audiences':['x']},{'name':'a',"
	  "'prefix':'b:','issuer':'https://idp2.example',"
	  "'audiences':['x']}]}}",
	  "/identity/issuers/1/name: duplicate of /identity/issuers/0/name" },
	{ "{" UP ",'identity':{'issuers':[{'name':'a','prefix':'a:',"
	  "'issuer':'https://idp.example','audiences':['x']},{'name':'b',"
	  "'prefix':'b:','issuer':'https://idp.example',"
	  "'audiences':['x']}]}}",
	  "/identity/issuers/1/issuer: duplicate of "
	  "/identity/issuers/0/issuer" },
	/* Issuer B without a prefix could name A's "gitlab:admins". */
	{ "{" UP ",'identity':{'issuers':[{'name':'a','prefix':'gitlab:',"
	  "'issuer':'https://idp.example','audiences':['x']},{'name':'b',"
	  "'issuer':'https://idp2.example','audiences':['x']}]}}",
	  "/identity/issuers/1/prefix: with several issuers, each needs a "
	  "prefix that does not begin another's (/identity/issuers/0/prefix)" },
	{ "{" UP ",'identity':{'issuers':[{'name':'a','prefix':'git:lab:',"
	  "'issuer':'https://idp.example','audiences':['x']},{'name':'b',"
	  "'prefix':'git:','issuer':'https://idp2.example',"
	  "'audiences':['x']}]}}",
	  "/identity/issuers/1/prefix: with several issuers, each needs a "
	  "prefix that does not begin another's (/identity/issuers/0/prefix)" },
};

static void
test_errors(void **state)
{
	size_t	 i;

	(void)state;
	for (i = 0; i < sizeof(err_cases) / sizeof(err_cases[0]); i++) {
		print_message("case %zu: %s\n", i, err_cases[i].line);
		expect_error(err_cases[i].json, err_cases[i].line, 1);
	/* Token lifetimes: at least the 60 s the token spec asks. */
	expect_error("{" UP ",'identity':{'token':{'signing_key':'/none',"
	    "'expires_in':59}}}", "/identity/token/expires_in: must be "
	    "between 60 and 86400", 2);
	expect_error("{" UP ",'identity':{'token':{'signing_key':'/none',"
	    "'verification_keys':[{'file':'/none','valid_until':'soon'}]}}}",
	    "/identity/token/verification_keys/0/valid_until: must be a UTC "
	    "time YYYY-MM-DDTHH:MM:SSZ", 3);
	}
}

static void
test_many_errors(void **state)
{
	struct config	*cfg;
	char		*cause;

	(void)state;
	cfg = load("{'listen':{'address':'x'},'foo':1,"
	    "'limits':{'header_count':5,'uri_bytes':'big'},"
	    "'timeouts':{'idle':0},"
	    "'upstreams':[{'name':'a','url':'ftp://h','prefix':'p'},"
	    "{'name':'a','url':'http://h','prefix':'p','default':true},"
	    "{'name':'c','url':'http://c','default':true,'secret':'s'}]}",
	    &cause);
	assert_null(cfg);
	assert_non_null(cause);
	assert_true(has_line(cause, "/foo: unknown key"));
	assert_true(has_line(cause, "/listen/address: must be host:port, "
	    "[ipv6-address]:port or :port"));
	assert_true(has_line(cause,
	    "/limits/header_count: must be between 8 and 1000"));
	assert_true(has_line(cause, "/limits/uri_bytes: must be an integer"));
	assert_true(has_line(cause,
	    "/timeouts/idle: must be between 0.1 and 86400 seconds"));
	assert_true(has_line(cause,
	    "/upstreams/0/url: must be an http or https URL"));
	assert_true(has_line(cause,
	    "/upstreams/1/name: duplicate of /upstreams/0/name"));
	assert_true(has_line(cause,
	    "/upstreams/1/prefix: duplicate of /upstreams/0/prefix"));
	assert_true(has_line(cause,
	    "/upstreams: at most one upstream may be default"));
	assert_non_null(strstr(cause, "/upstreams/2/secret: unknown key"));
	assert_int_equal(count_lines(cause), 10);
	/* Values from the file never appear in errors. */
	assert_null(strstr(cause, "ftp://h"));
	free(cause);
}

static void
test_fractional_timeouts(void **state)
{
	struct config	*cfg;

	(void)state;
	cfg = load_ok("{" UP ",'timeouts':{'header':0.25,'idle':1.5,"
	    "'body':0.1,'upstream_connect':2.0005,"
	    "'upstream_response':0.0999999,'drain':0}}");
	assert_int_equal(cfg->header_timeout_ms, 250);
	assert_int_equal(cfg->idle_timeout_ms, 1500);
	assert_int_equal(cfg->body_timeout_ms, 100);
	assert_int_equal(cfg->upstream_connect_timeout_ms, 2001);
	assert_int_equal(cfg->upstream_response_timeout_ms, 100);
	assert_int_equal(cfg->drain_timeout_ms, 0);
	config_unref(cfg);
}

static void
test_cache_fill_keys(void **state)
{
	struct config	*cfg;

	(void)state;
	cfg = load_ok("{" UP ",'cache':{'dir':'/tmp/c'}}");
	assert_int_equal(cfg->cache->max_fills, 64);
	assert_int_equal(cfg->cache->max_fills_per_client, 8);
	assert_int_equal(cfg->cache->digest_threads, 2);
	assert_true(cfg->cache->fill_max_fraction == 0.25);
	assert_true(cfg->cache->fill_finish_fraction == 0.9);
	assert_int_equal(cfg->cache->max_repo_links, 100000);
	assert_int_equal(cfg->cache->max_confirms, 64);
	assert_int_equal(cfg->cache->referrers_ttl_ms, 10000);
	assert_int_equal(cfg->cache->referrers_entries, 1000);
	assert_int_equal(cfg->cache->referrers_bytes, 8388608);
	assert_int_equal(cfg->referrers_fallback_ms, 300000);
	assert_int_equal(cfg->referrers_attempts, 5);
	config_unref(cfg);
	cfg = load_ok("{" UP ",'cache':{'dir':'/tmp/c','max_fills':3,"
	    "'fill_max_fraction':1,'fill_finish_fraction':0,"
	    "'max_repo_links':1,'max_confirms':2}}");
	assert_int_equal(cfg->cache->max_repo_links, 1);
	assert_int_equal(cfg->cache->max_confirms, 2);
	assert_int_equal(cfg->cache->max_fills, 3);
	assert_true(cfg->cache->fill_max_fraction == 1.0);
	assert_true(cfg->cache->fill_finish_fraction == 0.0);
	config_unref(cfg);
}

static void
test_docker_hub_hosts(void **state)
{
	struct config			*cfg;
	const struct config_upstream	*up;

	(void)state;
	cfg = load_ok("{'upstreams':[{'name':'hub',"
	    "'url':'https://registry-1.docker.io','docker_hub':true},"
	    "{'name':'local','url':'http://localhost:5001'},"
	    "{'name':'v6','url':'https://[fd00::1]:8443'}]}");
	up = &cfg->upstreams[0];
	assert_int_equal(up->nhosts, 3);
	assert_string_equal(up->hosts[0], "registry-1.docker.io");
	assert_string_equal(up->hosts[1], "docker.io");
	assert_string_equal(up->hosts[2], "index.docker.io");
	assert_null(up->hosts[3]);
	up = &cfg->upstreams[1];
	assert_int_equal(up->nhosts, 1);
	assert_string_equal(up->hosts[0], "localhost:5001");
	up = &cfg->upstreams[2];
	assert_int_equal(up->nhosts, 1);
	assert_string_equal(up->hosts[0], "[fd00::1]:8443");
	config_unref(cfg);

	cfg = load_ok("{'upstreams':[{'name':'v6','url':'https://[fd00::1]',"
	    "'hosts':['[fd00::1]','[FD00::2]:5000','reg_1.example:443']}]}");
	assert_int_equal(cfg->upstreams[0].nhosts, 3);
	assert_ptr_equal(config_upstream_by_host(cfg, "[fd00::2]:5000", 14),
	    &cfg->upstreams[0]);
	config_unref(cfg);

	/* Explicit hosts replace the defaults, even for Docker Hub. */
	cfg = load_ok("{'upstreams':[{'name':'hub',"
	    "'url':'https://registry-1.docker.io','docker_hub':true,"
	    "'hosts':['docker.io']},"
	    "{'name':'hidden','url':'https://registry-1.docker.io',"
	    "'hosts':[]}]}");
	assert_int_equal(cfg->upstreams[0].nhosts, 1);
	assert_string_equal(cfg->upstreams[0].hosts[0], "docker.io");
	assert_int_equal(cfg->upstreams[1].nhosts, 0);
	assert_null(config_upstream_by_host(cfg, "registry-1.docker.io", 20));
	config_unref(cfg);
}

static void
test_lookups(void **state)
{
	struct config	*cfg;
	const char	*path = "hub/library/alpine";

	(void)state;
	cfg = load_ok("{'upstreams':["
	    "{'name':'hub','url':'https://registry-1.docker.io','prefix':'hub',"
	    "'docker_hub':true,'default':true},"
	    "{'name':'ghcr','url':'https://ghcr.io','prefix':'ghcr'},"
	    "{'name':'local','url':'http://127.0.0.1:5001'}]}");
	assert_int_equal(cfg->default_upstream, 0);

	assert_ptr_equal(config_upstream_by_prefix(cfg, path, 3),
	    &cfg->upstreams[0]);
	assert_ptr_equal(config_upstream_by_prefix(cfg, "ghcr", 4),
	    &cfg->upstreams[1]);
	assert_null(config_upstream_by_prefix(cfg, path, 2));
	assert_null(config_upstream_by_prefix(cfg, path, 4));
	assert_null(config_upstream_by_prefix(cfg, "HUB", 3));
	assert_null(config_upstream_by_prefix(cfg, "", 0));

	assert_ptr_equal(config_upstream_by_host(cfg, "docker.io", 9),
	    &cfg->upstreams[0]);
	assert_ptr_equal(config_upstream_by_host(cfg, "Index.Docker.IO", 15),
	    &cfg->upstreams[0]);
	assert_ptr_equal(config_upstream_by_host(cfg, "ghcr.io&x", 7),
	    &cfg->upstreams[1]);
	assert_ptr_equal(config_upstream_by_host(cfg, "127.0.0.1:5001", 14),
	    &cfg->upstreams[2]);
	assert_null(config_upstream_by_host(cfg, "127.0.0.1", 9));
	assert_null(config_upstream_by_host(cfg, "docker.i", 8));
	assert_null(config_upstream_by_host(cfg, "quay.io", 7));
	config_unref(cfg);
}

static void
expect_creds_error(const char *file)
{
	struct config	*cfg;
	char		 json[256], *cause;

	snprintf(json, sizeof(json), "{'upstreams':[{'name':'a',"
	    "'url':'https://h','credentials_file':'%s'}]}", file);
	cfg = load(json, &cause);
	assert_null(cfg);
	if (strcmp(cause, "/upstreams/0/credentials_file: expected one line "
	    "'username:password'") != 0)
		fail_msg("%s: %s", file, cause);
	assert_null(strstr(cause, "LEAKME"));
	assert_null(strstr(cause, "robot"));
	free(cause);
}

static void
test_credentials(void **state)
{
	struct config	*cfg;
	char		 json[512], *cause;

	(void)state;
	cfg = load_ok("{'upstreams':["
	    "{'name':'a','url':'https://h1','credentials_file':'creds-nonl'},"
	    "{'name':'b','url':'https://h2',"
	    "'credentials_file':'creds-crlf'}]}");
	assert_string_equal(cfg->upstreams[0].username, "robot");
	assert_string_equal(cfg->upstreams[0].password, "pw");
	assert_string_equal(cfg->upstreams[1].username, "robot");
	assert_string_equal(cfg->upstreams[1].password, "pw");
	config_unref(cfg);

	/* Absolute paths are kept as they are. */
	snprintf(json, sizeof(json), "{'upstreams':[{'name':'a',"
	    "'url':'https://h','credentials_file':'%s/creds'}]}", tmpdir);
	cfg = load_ok(json);
	assert_string_equal(cfg->upstreams[0].password, "s3cr3t:with:colons");
	config_unref(cfg);

	expect_creds_error("creds-two");
	expect_creds_error("creds-nocolon");
	expect_creds_error("creds-nouser");
	expect_creds_error("creds-nopass");
	expect_creds_error("creds-empty");
	expect_creds_error("creds-blank2");

	cfg = load("{'upstreams':[{'name':'a','url':'https://h',"
	    "'credentials_file':'missing'}]}", &cause);
	assert_null(cfg);
	assert_string_equal(cause, "/upstreams/0/credentials_file: cannot "
	    "read: No such file or directory");
	free(cause);

	/* Relative to the working directory without a base directory. */
	cfg = config_load_string("{\"upstreams\":[{\"name\":\"a\","
	    "\"url\":\"https://h\",\"credentials_file\":\"creds\"}]}", NULL,
	    &cause);
	assert_null(cfg);
	assert_string_equal(cause, "/upstreams/0/credentials_file: cannot "
	    "read: No such file or directory");
	free(cause);
}

/*
 * The shared redis section: defaults, the password file (one line, never
 * in an error), the audit's address when audit.redis is or is not
 * written, the cross-key checks, and what a reload may not change.
 */
static void
test_redis(void **state)
{
	struct config	*cfg, *b;
	char		*cause;

	(void)state;
	write_file("rpw", "LEAKME pass word\n");
	write_file("rpw-two", "LEAKME\nsecond\n");
	write_file("rpw-empty", "\n");
	write_file("rpw-crlf", "LEAKME-crlf\r\n");
	write_file("rpw-rotated", "LEAKME-rotated\n");

	/* None: the audit keeps its old default, without AUTH. */
	cfg = load_ok("{'audit':{}," UP "}");
	assert_null(cfg->redis);
	assert_string_equal(cfg->audit->redis, "127.0.0.1:6379");
	assert_string_equal(cfg->audit->redis_host, "127.0.0.1");
	assert_int_equal(cfg->audit->redis_port, 6379);
	config_unref(cfg);

	/* Defaults of the section. */
	cfg = load_ok("{'redis':{}," UP "}");
	assert_string_equal(cfg->redis->address, "127.0.0.1:6379");
	assert_string_equal(cfg->redis->host, "127.0.0.1");
	assert_int_equal(cfg->redis->port, 6379);
	assert_int_equal(cfg->redis->database, 0);
	assert_null(cfg->redis->username);
	assert_null(cfg->redis->password_file);
	assert_null(cfg->redis->password);
	assert_int_equal(cfg->redis->connect_timeout_ms, 5000);
	assert_int_equal(cfg->redis->command_timeout_ms, 5000);
	assert_int_equal(cfg->redis->reconnect_min_ms, 100);
	assert_int_equal(cfg->redis->reconnect_max_ms, 5000);
	config_unref(cfg);

	/* The audit takes redis.address when audit.redis is not written. */
	cfg = load_ok("{'redis':{'address':'[::1]:6380','database':3,"
	    "'username':'portcullis','password_file':'rpw',"
	    "'connect_timeout':0.5,'command_timeout':2,'reconnect_min':0.05,"
	    "'reconnect_max':1},'audit':{}," UP "}");
	assert_string_equal(cfg->redis->host, "::1");
	assert_int_equal(cfg->redis->port, 6380);
	assert_int_equal(cfg->redis->database, 3);
	assert_string_equal(cfg->redis->username, "portcullis");
	/* Spaces are part of it; the final newline is not. */
	assert_string_equal(cfg->redis->password, "LEAKME pass word");
	assert_int_equal(cfg->redis->connect_timeout_ms, 500);
	assert_int_equal(cfg->redis->command_timeout_ms, 2000);
	assert_int_equal(cfg->redis->reconnect_min_ms, 50);
	assert_int_equal(cfg->redis->reconnect_max_ms, 1000);
	assert_string_equal(cfg->audit->redis, "[::1]:6380");
	assert_string_equal(cfg->audit->redis_host, "::1");
	assert_int_equal(cfg->audit->redis_port, 6380);
	config_unref(cfg);

	/* audit.redis, when written, stays the audit's address. */
	cfg = load_ok("{'redis':{'address':'127.0.0.1:7000'},"
	    "'audit':{'redis':'127.0.0.2:7001'}," UP "}");
	assert_string_equal(cfg->audit->redis_host, "127.0.0.2");
	assert_int_equal(cfg->audit->redis_port, 7001);
	config_unref(cfg);

	cfg = load_ok("{'redis':{'password_file':'rpw-crlf'}," UP "}");
	assert_string_equal(cfg->redis->password, "LEAKME-crlf");
	config_unref(cfg);

	expect_error("{'redis':{'password_file':'rpw-two'}," UP "}",
	    "/redis/password_file: expected the password on one line", 1);
	expect_error("{'redis':{'password_file':'rpw-empty'}," UP "}",
	    "/redis/password_file: expected the password on one line", 1);
	cfg = load("{'redis':{'password_file':'rpw-two'}," UP "}", &cause);
	assert_null(cfg);
	assert_null(strstr(cause, "LEAKME"));
	free(cause);
	expect_error("{'redis':{'password_file':'nope'}," UP "}",
	    "/redis/password_file: cannot read: No such file or directory", 1);
	expect_error("{'redis':{'address':'localhost:6379'}," UP "}",
	    "/redis/address: must be a numeric ip:port or [ipv6]:port", 1);
	expect_error("{'redis':{'database':-1}," UP "}",
	    "/redis/database: must be between 0 and 65535", 1);
	expect_error("{'redis':{'database':65536}," UP "}",
	    "/redis/database: must be between 0 and 65535", 1);
	expect_error("{'redis':{'username':'a b','password_file':'rpw'},"
	    UP "}", "/redis/username: must be 1 to 128 printable ASCII "
	    "characters, without spaces, quotes or backslashes", 1);
	expect_error("{'redis':{'username':'portcullis'}," UP "}",
	    "/redis/username: requires password_file", 1);
	expect_error("{'redis':{'reconnect_min':2,'reconnect_max':1}," UP "}",
	    "/redis/reconnect_min: must not be above reconnect_max", 1);
	expect_error("{'redis':{'connect_timeout':0.01}," UP "}",
	    "/redis/connect_timeout: must be between 0.1 and 600 seconds", 1);
	expect_error("{'redis':{'command_timeout':601}," UP "}",
	    "/redis/command_timeout: must be between 0.1 and 600 seconds", 1);
	expect_error("{'redis':{'password':'x'}," UP "}",
	    "/redis/password: unknown key; secrets are never written inline: "
	    "put the password in a file and name it in password_file", 1);

	/* A reload changes nothing here, the password file's content too. */
	cfg = load_ok("{'redis':{'password_file':'rpw'}," UP "}");
	b = load_ok("{'redis':{'password_file':'rpw-rotated'}," UP "}");
	assert_int_equal(config_reload_check(cfg, b, &cause), -1);
	assert_string_equal(cause, "/redis/password_file: a reload cannot "
	    "change it; restart to apply\n/redis/password_file: its content "
	    "changed; a reload cannot change it; restart to apply");
	assert_null(strstr(cause, "LEAKME"));
	free(cause);
	config_unref(b);
	b = load_ok("{'redis':{'password_file':'rpw','database':1}," UP "}");
	assert_int_equal(config_reload_check(cfg, b, &cause), -1);
	assert_string_equal(cause, "/redis/database: a reload cannot change "
	    "it; restart to apply");
	free(cause);
	config_unref(b);
	b = load_ok("{" UP "}");
	assert_int_equal(config_reload_check(cfg, b, &cause), -1);
	assert_string_equal(cause, "/redis: a reload cannot add or remove "
	    "it; restart to apply");
	free(cause);
	config_unref(b);
	b = load_ok("{'redis':{'password_file':'rpw'}," UP "}");
	assert_int_equal(config_reload_check(cfg, b, &cause), 0);
	config_unref(b);
	config_unref(cfg);
	remove_file("rpw");
	remove_file("rpw-two");
	remove_file("rpw-empty");
	remove_file("rpw-crlf");
	remove_file("rpw-rotated");
}

static void
test_load_file(void **state)
{
	struct config	*cfg;
	char		 path[256], want[512], *cause, *big;
	FILE		*f;

	(void)state;
	write_file("gw.json", "{\"upstreams\":[{\"name\":\"a\","
	    "\"url\":\"https://h\",\"credentials_file\":\"creds\"}]}\n");
	snprintf(path, sizeof(path), "%s/gw.json", tmpdir);
	cfg = config_load(path, &cause);
	if (cfg == NULL)
		fail_msg("%s", cause);
	assert_string_equal(cfg->path, path);
	snprintf(want, sizeof(want), "%s/creds", tmpdir);
	assert_string_equal(cfg->upstreams[0].credentials_file, want);
	assert_string_equal(cfg->upstreams[0].username, "robot");
	config_unref(cfg);

	write_file("gw.json",
	    "{\n  \"upstreams\": [\n    {\"name\": 1,}\n]}\n");
	assert_null(config_load(path, &cause));
	snprintf(want, sizeof(want), "%s:3:16: string or '}' expected near "
	    "'}'", path);
	assert_string_equal(cause, want);
	free(cause);

	/* Over 1 MiB: refused before it is parsed. */
	big = malloc(CONFIG_MAX_FILE_BYTES + 2);
	assert_non_null(big);
	memset(big, ' ', CONFIG_MAX_FILE_BYTES + 1);
	big[0] = '{';
	big[CONFIG_MAX_FILE_BYTES] = '}';
	big[CONFIG_MAX_FILE_BYTES + 1] = '\0';
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(big, f);
	fclose(f);
	assert_null(config_load(path, &cause));
	snprintf(want, sizeof(want), "%s: larger than 1048576 bytes", path);
	assert_string_equal(cause, want);
	free(cause);
	assert_null(config_load_string(big, NULL, &cause));
	assert_string_equal(cause, "/: larger than 1048576 bytes");
	free(cause);
	/* Exactly 1 MiB is fine as far as size goes. */
	big[CONFIG_MAX_FILE_BYTES - 1] = '}';
	big[CONFIG_MAX_FILE_BYTES] = '\0';
	assert_null(config_load_string(big, NULL, &cause));
	assert_string_equal(cause, "/upstreams: is required");
	free(cause);
	free(big);
	remove_file("gw.json");

	assert_null(config_load(path, &cause));
	snprintf(want, sizeof(want), "%s: cannot read: No such file or "
	    "directory", path);
	assert_string_equal(cause, want);
	free(cause);

	assert_null(config_load(tmpdir, &cause));
	snprintf(want, sizeof(want), "%s: cannot read: Is a directory",
	    tmpdir);
	assert_string_equal(cause, want);
	free(cause);
}

/* Copy top/name to dir/as. */
static void
copy_file(const char *top, const char *name, const char *dir,
    const char *as)
{
	char	 path[1024], buf[8192];
	FILE	*in, *out;
	size_t	 n;

	snprintf(path, sizeof(path), "%s/%s", top, name);
	assert_non_null(in = fopen(path, "r"));
	snprintf(path, sizeof(path), "%s/%s", dir, as);
	assert_non_null(out = fopen(path, "w"));
	while ((n = fread(buf, 1, sizeof(buf), in)) > 0)
		assert_int_equal(fwrite(buf, 1, n, out), n);
	fclose(in);
	assert_int_equal(fclose(out), 0);
}

/* The files shipped in conf/ load (check-config runs on them too). */
static void
test_shipped_files(void **state)
{
	static const char *const names[] = {
		"conf/minimal.json", "conf/portcullis.example.json", NULL
	};
	struct config	*cfg;
	const char	*top;
	char		 path[1024], dir[600], prefix[700], *cause;
	char		*kargv[] = { "keygen", "-o", NULL, NULL };
	size_t		 i;

	(void)state;
	if ((top = getenv("top_srcdir")) == NULL)
		top = ".";
	/*
	 * The example names a token signing key the operator makes with
	 * `portcullis keygen -o token-signing`; no private key is shipped.
	 * So it is loaded from a copy next to a key made here.
	 */
	snprintf(dir, sizeof(dir), "%s/shipped", tmpdir);
	assert_int_equal(mkdir(dir, 0700), 0);
	copy_file(top, "conf/credentials.example", dir, "credentials.example");
	copy_file(top, "conf/sso-client-secret.example", dir,
	    "sso-client-secret.example");
	snprintf(prefix, sizeof(prefix), "%s/token-signing", dir);
	kargv[2] = prefix;
	assert_int_equal(keygen_cli(3, kargv), 0);
	for (i = 0; names[i] != NULL; i++) {
		if (strcmp(names[i], "conf/portcullis.example.json") == 0) {
			copy_file(top, names[i], dir, "example.json");
			snprintf(path, sizeof(path), "%s/example.json", dir);
		} else
			snprintf(path, sizeof(path), "%s/%s", top, names[i]);
		if ((cfg = config_load(path, &cause)) == NULL)
			fail_msg("%s", cause);
		assert_true(cfg->nupstreams >= 1);
		assert_true(cfg->default_upstream >= 0);
		config_unref(cfg);
	}
}

static void
test_reference(void **state)
{
	static const char *const keys[] = {
		"/listen", "/listen/address", "/listen/tls",
		"/listen/tls/cert_file", "/listen/tls/key_file",
		"/listen/tls/client_ca_file", "/listen/tls/verify_client",
		"/external_url", "/service", "/instance_id", "/limits",
		"/limits/header_bytes", "/limits/header_count",
		"/limits/uri_bytes", "/limits/max_connections",
		"/limits/manifest_bytes",
		"/limits/max_connections_per_ip", "/limits/linger_bytes",
		"/limits/upstream_header_bytes", "/limits/upstream_header_count",
		"/limits/token_bytes",
		"/buffers", "/buffers/high_watermark", "/buffers/splice",
		"/timeouts", "/timeouts/header", "/timeouts/idle",
		"/timeouts/body", "/timeouts/upstream_connect",
		"/timeouts/upstream_response", "/timeouts/drain",
		"/timeouts/linger", "/timeouts/worker_restart",
		"/timeouts/worker_stall",
		"/timeouts/cache_peer_wait", "/workers", "/log",
		"/worker_balance", "/log/level", "/log/file", "/user", "/group",
		"/upstreams", "/upstreams/N/name",
		"/upstreams/N/url", "/upstreams/N/prefix", "/upstreams/N/hosts",
		"/upstreams/N/docker_hub", "/upstreams/N/default",
		"/upstreams/N/ca_file", "/upstreams/N/credentials_file",
		"/upstreams/N/pool_max_idle",
		"/upstreams/N/cache", "/upstreams/N/tag_ttl",
		"/upstreams/N/redirect_allow", "/upstreams/N/auth_hosts",
		"/upstreams/N/quota_floor", "/upstreams/N/quota_hold",
		"/upstreams/N/max_concurrent", "/upstreams/N/queue",
		"/upstreams/N/queue_timeout",
		"/limits/redirects", "/limits/catalog_names",
		"/limits/catalog_pages", "/limits/catalog_page_bytes",
		"/limits/tag_list_names", "/limits/tag_list_pages",
		"/limits/upload_sessions", "/limits/upload_ttl",
		"/limits/referrers_fallback", "/limits/referrers_attempts",
		"/limits/referrers_pages",
		"/cache",
		"/cache/dir", "/cache/max_bytes", "/cache/tag_ttl",
		"/cache/negative_ttl", "/cache/sendfile", "/cache/send_window",
		"/cache/sendfile_min",
		"/cache/memory_bytes",
		"/cache/max_tag_records", "/cache/tag_variants",
		"/cache/negative_entries",
		"/cache/max_fills", "/cache/max_fills_per_client",
		"/cache/digest_threads", "/cache/fill_max_fraction",
		"/cache/fill_finish_fraction",
		"/cache/max_repo_links", "/cache/max_confirms",
		"/cache/referrers_ttl", "/cache/referrers_entries",
		"/cache/referrers_bytes",
		"/audit", "/audit/redis", "/audit/stream", "/audit/max_len",
		"/audit/max_age", "/audit/spool_file", "/audit/spool_max_bytes",
		"/audit/fsync", "/audit/on_failure", "/audit/admin_addresses",
		"/audit/queue_max", "/audit/max_inflight", "/audit/timeout",
		"/audit/max_index_keys", "/audit/wal", "/audit/wait_replicas",
		"/redis", "/redis/address", "/redis/database", "/redis/username",
		"/redis/password_file", "/redis/connect_timeout",
		"/redis/command_timeout", "/redis/reconnect_min",
		"/redis/reconnect_max", "/redis/sentinel",
		"/redis/sentinel/addresses", "/redis/sentinel/master_name",
		"/redis/sentinel/username", "/redis/sentinel/password_file",
		"/secrets", "/secrets/key_prefix", "/secrets/redis_unavailable",
		"/secrets/cache_ttl", "/secrets/cache_entries",
		"/secrets/last_used_interval", "/secrets/max_groups",
		"/revocation", "/revocation/key", "/revocation/channel",
		"/revocation/max_subjects", "/revocation/resync_interval",
		"/metrics", "/metrics/allow", "/metrics/label_values",
		"/admin", "/admin/listen",
		"/policy", "/policy/rules", "/policy/rules/N/id",
		"/policy/rules/N/effect", "/policy/rules/N/repositories",
		"/policy/rules/N/upstreams", "/policy/rules/N/subjects",
		"/policy/rules/N/subjects/N/match",
		"/policy/rules/N/subjects/N/claim",
		"/policy/rules/N/subjects/N/equals",
		"/policy/rules/N/subjects/N/glob", "/policy/rules/N/actions",
		"/policy/blocked_digests", "/policy/blocked_digests/N/digest",
		"/policy/blocked_digests/N/reason", "/policy/immutable_tags",
		"/policy/immutable_tags/N/id",
		"/policy/immutable_tags/N/repositories",
		"/policy/immutable_tags/N/upstreams",
		"/policy/immutable_tags/N/tags", "/policy/max_rules",
		"/policy/max_blocked_digests", "/policy/max_pattern_bytes",
		"/policy/max_file_bytes", "/policy/file",
		"/identity", "/identity/issuers", "/identity/issuers/N/name",
		"/identity/issuers/N/issuer", "/identity/issuers/N/audiences",
		"/identity/issuers/N/subject_claim",
		"/identity/issuers/N/groups_claim",
		"/identity/issuers/N/prefix", "/identity/issuers/N/algorithms",
		"/identity/issuers/N/required_claims",
		"/identity/issuers/N/required_claims/N/claim",
		"/identity/issuers/N/required_claims/N/equals",
		"/identity/issuers/N/ca_file", "/identity/issuers/N/jwks_hosts",
		"/identity/issuers/N/refresh",
		"/identity/issuers/N/min_refresh_interval",
		"/identity/issuers/N/leeway",
		"/identity/issuers/N/max_discovery_bytes",
		"/identity/issuers/N/max_jwks_bytes",
		"/identity/issuers/N/max_keys",
		"/identity/issuers/N/max_waiters",
		"/identity/token", "/identity/token/signing_key",
		"/identity/token/verification_keys",
		"/identity/token/verification_keys/N/file",
		"/identity/token/verification_keys/N/valid_until",
		"/identity/token/issuer", "/identity/token/service",
		"/identity/token/expires_in",
		"/identity/token/refresh_expires_in",
		"/identity/token/max_token_bytes", "/identity/token/leeway",
		"/identity/token/max_claims", "/identity/token/max_claim_bytes",
		"/identity/token/max_scopes", "/identity/token/max_body_bytes",
		"/identity/token/cache_entries",
		"/identity/idp_cache_entries",
		"/identity/sso", "/identity/sso/issuer",
		"/identity/sso/client_id", "/identity/sso/client_secret_file",
		"/identity/sso/redirect_url", "/identity/sso/scopes",
		"/identity/sso/key_prefix", "/identity/sso/cookie_name",
		"/identity/sso/session_lifetime",
		"/identity/sso/state_lifetime",
		"/identity/sso/secret_lifetime", "/identity/sso/max_secrets",
		"/identity/sso/activity_records",
		"/identity/sso/max_cookie_bytes",
		"/identity/sso/max_state_bytes",
		"/identity/sso/max_code_bytes",
		"/identity/sso/max_token_response_bytes",
		"/identity/sso/max_id_token_bytes",
		"/identity/sso/max_form_bytes",
		"/identity/sso/max_provider_token_bytes",
		"/identity/sso/session_index_rebuild",
		"/ratelimit", "/ratelimit/rules", "/ratelimit/rules/N/id",
		"/ratelimit/rules/N/key", "/ratelimit/rules/N/cidr_v4",
		"/ratelimit/rules/N/cidr_v6", "/ratelimit/rules/N/actions",
		"/ratelimit/rules/N/endpoints", "/ratelimit/rules/N/methods",
		"/ratelimit/rules/N/upstreams",
		"/ratelimit/rules/N/count_cache_hits",
		"/ratelimit/rules/N/count", "/ratelimit/rules/N/window",
		"/ratelimit/rules/N/burst", "/ratelimit/rules/N/exempt_groups",
		"/ratelimit/rules/N/exempt_subjects",
		"/ratelimit/rules/N/exempt_cidrs",
		"/ratelimit/rules/N/on_redis_down", "/ratelimit/key_prefix",
		"/ratelimit/redis_budget", "/ratelimit/instances",
		"/ratelimit/heartbeat_interval", "/ratelimit/local_buckets",
		"/identity/sso/cli_client_id",
		"/identity/sso/recheck_interval",
		"/identity/sso/max_logins_per_minute",
		NULL
	};
	char	*buf = NULL, cell[128];
	size_t	 len = 0, i, rows = 0;
	FILE	*f;

	(void)state;
	f = open_memstream(&buf, &len);
	assert_non_null(f);
	config_reference(f);
	fclose(f);
	assert_true(strncmp(buf, "| Key | Type | Default | Allowed | Reload "
	    "| Description |\n| --- |", 60) == 0);
	for (i = 0; keys[i] != NULL; i++) {
		snprintf(cell, sizeof(cell), "| `%s` |", keys[i]);
		if (strstr(buf, cell) == NULL)
			fail_msg("no row for %s in:\n%s", keys[i], buf);
	}
	for (i = 0; i < len; i++)
		rows += buf[i] == '\n';
	/* Header, separator, and exactly one row per key. */
	assert_int_equal(rows, 2 + sizeof(keys) / sizeof(keys[0]) - 1);
	assert_non_null(strstr(buf, "| `/limits/header_count` | integer | "
	    "`100` | 8..1000 | yes |"));
	assert_non_null(strstr(buf, "| `/listen/address` | string | "
	    "`127.0.0.1:5000` |  | no |"));
	assert_non_null(strstr(buf, "| `/timeouts/header` | seconds | `30` | "
	    "0.1..3600 | yes |"));
	assert_non_null(strstr(buf, "| `/log/level` | string | `info` | "
	    "`error`, `warn`, `info`, `debug` | yes |"));
	assert_non_null(strstr(buf, "| `/listen/tls/cert_file` | file | "
	    "required |  | yes |"));
	assert_non_null(strstr(buf, "| `/upstreams/N/name` | string | "
	    "required |  | yes |"));
	free(buf);
}

static void
test_refcount(void **state)
{
	struct config	*cfg;

	(void)state;
	config_unref(NULL);
	cfg = load_ok("{'upstreams':[{'name':'a','url':'https://h',"
	    "'credentials_file':'creds'}]}");
	assert_int_equal(cfg->refcnt, 1);
	config_ref(cfg);
	config_ref(cfg);
	assert_int_equal(cfg->refcnt, 3);
	config_unref(cfg);
	config_unref(cfg);
	assert_int_equal(cfg->refcnt, 1);
	/* Still usable by its last holder. */
	assert_string_equal(cfg->upstreams[0].name, "a");
	config_unref(cfg);	/* ASan reports a leak or a double free */
}

static void
test_reload_check(void **state)
{
	struct config	*a, *b;
	char		*cause;

	(void)state;
	a = load_ok("{'instance_id':'gw-1'," UP "}");
	b = load_ok("{'instance_id':'gw-1','log':{'level':'debug'},"
	    "'limits':{'header_count':10},'upstreams':["
	    "{'name':'b','url':'http://h'},{'name':'c','url':'http://i'}]}");
	assert_int_equal(config_reload_check(a, b, &cause), 0);
	assert_null(cause);
	config_unref(b);

	b = load_ok("{'instance_id':'gw-2','listen':{'address':':5000',"
	    "'tls':{'cert_file':'cert.pem','key_file':'key.pem'}}," UP "}");
	assert_int_equal(config_reload_check(a, b, &cause), -1);
	assert_string_equal(cause,
	    "/listen/address: a reload cannot change it; restart to apply\n"
	    "/instance_id: a reload cannot change it; restart to apply\n"
	    "/listen/tls: a reload cannot add or remove it; restart to apply");
	free(cause);
	config_unref(b);
	config_unref(a);

	a = load_ok("{'listen':{'tls':{'cert_file':'cert.pem',"
	    "'key_file':'key.pem'}}," UP "}");
	b = load_ok("{'listen':{'tls':{'cert_file':'cert.pem',"
	    "'key_file':'key.pem','client_ca_file':'ca.pem'}}," UP "}");
	/* SIGHUP reads the TLS files again: their names may change too. */
	assert_int_equal(config_reload_check(a, b, &cause), 0);
	config_unref(b);
	b = load_ok("{'listen':{'tls':{'cert_file':'ca.pem',"
	    "'key_file':'key.pem'}},'user':'nobody'," UP "}");
	assert_int_equal(config_reload_check(a, b, &cause), -1);
	assert_string_equal(cause, "/user: a reload cannot change it; "
	    "restart to apply");
	free(cause);
	config_unref(b);
	config_unref(a);
}

/* An issuer's defaults, the parsed URL and a loopback http issuer. */
static void
test_identity(void **state)
{
	struct config				*cfg;
	const struct config_oidc_issuer		*is;

	(void)state;
	cfg = load_ok("{" UP ",'identity':{'issuers':[{'name':'gl',"
	    "'issuer':'https://gitlab.example/','audiences':['pc'],"
	    "'prefix':'gl:'},"
	    "{'name':'t','issuer':'http://127.0.0.1:9000/oidc',"
	    "'audiences':['a','b'],'algorithms':['ES256','RS256'],"
	    "'prefix':'t:','groups_claim':'groups','required_claims':"
	    "[{'claim':'namespace_path','equals':'acme'}],"
	    "'jwks_hosts':['keys.example:8443'],'refresh':2,"
	    "'min_refresh_interval':1}]}}");
	assert_non_null(cfg->identity);
	assert_int_equal(cfg->identity->nissuers, 2);
	is = &cfg->identity->issuers[0];
	assert_string_equal(is->issuer, "https://gitlab.example/");
	assert_string_equal(is->u.host, "gitlab.example");
	assert_int_equal(is->u.port, 443);
	assert_string_equal(is->subject_claim, "sub");
	assert_null(is->groups_claim);
	assert_string_equal(is->prefix, "gl:");
	assert_int_equal(is->nalgorithms, 1);
	assert_string_equal(is->algorithms[0], "RS256");
	assert_int_equal(is->refresh_ms, 3600000);
	assert_int_equal(is->min_refresh_ms, 30000);
	assert_int_equal(is->leeway_ms, 60000);
	assert_int_equal(is->max_discovery_bytes, 65536);
	assert_int_equal(is->max_jwks_bytes, 262144);
	assert_int_equal(is->max_keys, 32);
	assert_int_equal(is->max_waiters, 1024);
	is = &cfg->identity->issuers[1];
	assert_false(is->u.tls);
	assert_string_equal(is->u.path, "/oidc");
	assert_int_equal(is->nalgorithms, 2);
	assert_string_equal(is->prefix, "t:");
	assert_int_equal(is->nrequired_claims, 1);
	assert_string_equal(is->required_claims[0].claim, "namespace_path");
	assert_string_equal(is->required_claims[0].equals, "acme");
	assert_int_equal(is->njwks_hosts, 1);
	assert_int_equal(is->refresh_ms, 2000);
	assert_int_equal(is->min_refresh_ms, 1000);
	config_unref(cfg);
}

/* The ratelimit section: defaults, compiled masks, each refusal. */
static void
test_ratelimit(void **state)
{
	struct config			*cfg;
	const struct config_rl_rule	*r;

	(void)state;
	cfg = load_ok("{'redis':{},'ratelimit':{'rules':[{'id':'hub',"
	    "'key':'subject+repository','count':100,'window':21600,"
	    "'actions':['pull'],'endpoints':['manifest'],'methods':['GET'],"
	    "'exempt_cidrs':['10.0.0.0/8','fd00::/8'],"
	    "'exempt_groups':['ci'],'on_redis_down':'closed'},"
	    "{'id':'ip','key':'cidr','count':5,'window':1,'burst':2}]},"
	    UP "}");
	assert_non_null(cfg->ratelimit);
	assert_string_equal(cfg->ratelimit->key_prefix, "portcullis:rl:");
	assert_int_equal(cfg->ratelimit->redis_budget_ms, 50);
	assert_int_equal(cfg->ratelimit->instances, 0);
	assert_int_equal(cfg->ratelimit->heartbeat_interval_ms, 5000);
	assert_int_equal(cfg->ratelimit->local_buckets, 65536);
	assert_int_equal(cfg->ratelimit->nrules, 2);
	r = &cfg->ratelimit->rules[0];
	assert_int_equal(r->key, CONFIG_RL_SUBJECT_REPOSITORY);
	assert_int_equal(r->count, 100);
	assert_int_equal(r->burst, 100);	/* count */
	assert_int_equal(r->window_ms, 21600000);
	assert_int_equal(r->on_redis_down, CONFIG_RL_DOWN_CLOSED);
	assert_int_equal(r->action_mask, 0x01);
	assert_int_equal(r->endpoint_mask, 1u << OCI_EP_MANIFEST);
	assert_int_equal(r->nexempt_cidrs, 2);
	assert_int_equal(r->exempt[0].af, AF_INET);
	assert_int_equal(r->exempt[0].plen, 8);
	assert_int_equal(r->exempt[1].af, AF_INET6);
	assert_true(r->count_cache_hits);
	r = &cfg->ratelimit->rules[1];
	assert_int_equal(r->key, CONFIG_RL_CIDR);
	assert_int_equal(r->cidr_v4, 24);
	assert_int_equal(r->cidr_v6, 64);
	assert_int_equal(r->burst, 2);
	assert_int_equal(r->on_redis_down, CONFIG_RL_DOWN_LOCAL);
	assert_int_equal(r->endpoint_mask, ~0u);
	config_unref(cfg);

	expect_error("{'ratelimit':{'rules':[{'id':'a','key':'ip',"
	    "'count':1,'window':1}]}," UP "}",
	    "/ratelimit/rules: rate limits need the redis section (the "
	    "shared buckets live there)", 1);
	expect_error("{'redis':{},'ratelimit':{'rules':[{'id':'a',"
	    "'key':'ip','count':1,'window':1},{'id':'a','key':'ip',"
	    "'count':1,'window':1}]}," UP "}",
	    "/ratelimit/rules/1/id: duplicate of /ratelimit/rules/0/id", 1);
	expect_error("{'redis':{},'ratelimit':{'rules':[{'id':'a b',"
	    "'key':'ip','count':1,'window':1}]}," UP "}",
	    "/ratelimit/rules/0/id: must be 1 to 64 of letters, digits, "
	    "'.', '_', '-', ':'", 1);
	expect_error("{'redis':{},'ratelimit':{'rules':[{'id':'a',"
	    "'key':'ip','count':1,'window':1,'actions':['admin']}]},"
	    UP "}", "/ratelimit/rules/0/actions/0: unknown action: use "
	    "pull, push, delete, catalog or *", 1);
	expect_error("{'redis':{},'ratelimit':{'rules':[{'id':'a',"
	    "'key':'ip','count':1,'window':1,'endpoints':['base']}]},"
	    UP "}", "/ratelimit/rules/0/endpoints/0: unknown endpoint: use "
	    "manifest, blob, tags, referrers, upload_start, upload or "
	    "catalog", 1);
	expect_error("{'redis':{},'ratelimit':{'rules':[{'id':'a',"
	    "'key':'ip','count':1,'window':1,'methods':['get']}]},"
	    UP "}", "/ratelimit/rules/0/methods/0: unknown method: use GET, "
	    "HEAD, PUT, POST, PATCH or DELETE", 1);
	expect_error("{'redis':{},'ratelimit':{'rules':[{'id':'a',"
	    "'key':'ip','count':1,'window':1,'upstreams':['nope']}]},"
	    UP "}", "/ratelimit/rules/0/upstreams/0: no upstream has this "
	    "name", 1);
	expect_error("{'redis':{},'ratelimit':{'rules':[{'id':'a',"
	    "'key':'ip','count':1,'window':1,'exempt_cidrs':['10.0.0.1/8']}]},"
	    UP "}", "/ratelimit/rules/0/exempt_cidrs/0: has bits set after "
	    "the prefix", 1);
	expect_error("{'redis':{},'ratelimit':{'rules':[{'id':'a',"
	    "'key':'ip','count':1,'window':2000000,'burst':1000}]},"
	    UP "}", "/ratelimit/rules/0/burst: burst x window / count must "
	    "be at most 1125899906 seconds (35 years)", 1);
	expect_error("{'redis':{},'ratelimit':{'rules':[{'id':'a',"
	    "'key':'host','count':1,'window':1}]}," UP "}",
	    "/ratelimit/rules/0/key: must be one of: subject, ip, cidr, "
	    "repository, subject+repository, upstream", 1);
	expect_error("{'redis':{},'ratelimit':{'redis_budget':0}," UP "}",
	    "/ratelimit/redis_budget: must be between 0.001 and 10 seconds", 1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_good),
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_many_errors),
		cmocka_unit_test(test_fractional_timeouts),
		cmocka_unit_test(test_cache_fill_keys),
		cmocka_unit_test(test_docker_hub_hosts),
		cmocka_unit_test(test_lookups),
		cmocka_unit_test(test_credentials),
		cmocka_unit_test(test_load_file),
		cmocka_unit_test(test_shipped_files),
		cmocka_unit_test(test_reference),
		cmocka_unit_test(test_refcount),
		cmocka_unit_test(test_reload_check),
		cmocka_unit_test(test_redis),
		cmocka_unit_test(test_identity),
		cmocka_unit_test(test_ratelimit),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
