/*
 * rl_floor.c: bench/ratelimit_bench.sh's "floor" gateway only, loaded
 * with LD_PRELOAD into the unchanged portcullis binary.  It is not built
 * into the product and nothing in the product knows of it.
 *
 * It stands between the gateway and hiredis at redisAsyncCommandArgv()
 * and changes one command: the SCRIPT LOAD of the rate-limit script
 * (rlbucket.c's rlb_lua, known by its first line) loads instead a script
 * that does nothing but return the reply's shape (every bucket allows).
 * The gateway then takes the SHA Redis returns for it and sends one
 * EVALSHA per counted request exactly as it does with the real script:
 * same rules, keys, arguments, link and resume path.  What that gateway
 * costs against the one without limits is the floor of "one Redis round
 * trip per counted request" on this machine, whatever the script does.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <hiredis/async.h>

typedef int	argv_fn(redisAsyncContext *, redisCallbackFn *, void *, int,
		    const char **, const size_t *);

/* { now, then per key allowed, remaining, retry_us }: all allow. */
static const char floor_lua[] =
	"local r = { 0 }\n"
	"for i = 1, #KEYS do r[3 * i - 1] = 1; r[3 * i] = 0; "
	"r[3 * i + 1] = 0 end\n"
	"return r\n";

static const char rl_first_line[] = "local now\n";

int
redisAsyncCommandArgv(redisAsyncContext *ac, redisCallbackFn *fn,
    void *priv, int argc, const char **argv, const size_t *lens)
{
	static argv_fn	*real;
	static int	 told;
	const char	*a[3];
	size_t		 l[3];

	if (real == NULL &&
	    (real = (argv_fn *)dlsym(RTLD_NEXT, "redisAsyncCommandArgv")) ==
	    NULL) {
		fprintf(stderr, "rl_floor: no redisAsyncCommandArgv\n");
		abort();
	}
	if (argc == 3 &&
	    lens[0] == 6 && strncasecmp(argv[0], "SCRIPT", 6) == 0 &&
	    lens[1] == 4 && strncasecmp(argv[1], "LOAD", 4) == 0 &&
	    lens[2] > sizeof(rl_first_line) - 1 &&
	    memcmp(argv[2], rl_first_line, sizeof(rl_first_line) - 1) == 0) {
		a[0] = argv[0];
		a[1] = argv[1];
		a[2] = floor_lua;
		l[0] = lens[0];
		l[1] = lens[1];
		l[2] = sizeof(floor_lua) - 1;
		if (!told) {
			/* The bench checks the gateway's log for this. */
			fprintf(stderr, "rl_floor: rate-limit script replaced "
			    "by the floor script\n");
			told = 1;
		}
		return (real(ac, fn, priv, 3, a, l));
	}
	return (real(ac, fn, priv, argc, argv, lens));
}
