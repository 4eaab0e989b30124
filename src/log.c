/*
 * log.c: log lines to stderr.  Format: an RFC 3339 UTC timestamp, the
 * level, then the caller's text, which by convention is
 * "<conn id>.<req seq> <subsystem> <event> key=value ...".  Nothing here
 * knows about requests; callers never pass a credential.
 */
#include <sys/time.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "portcullis.h"

/*
 * The level is process-wide by nature (stderr is); it is set once from the
 * config at start-up.  This is the one piece of file-scope state.
 */
static int log_level = LOG_INFO;

static const char *log_names[] = { "error", "warn", "info", "debug" };

/* Set up logging at the given level. */
void
log_init(int level)
{
	log_level = level;
	setvbuf(stderr, NULL, _IOLBF, 0);
}

/* Change the level. */
void
log_set_level(int level)
{
	log_level = level;
}

/* Whether a message at this level would be written. */
int
log_enabled(int level)
{
	return (level <= log_level);
}

/* Write one log line. */
void
log_vmsg(int level, const char *fmt, va_list ap)
{
	struct timeval	 tv;
	struct tm	 tm;
	char		 ts[32], line[4096];

	if (level > log_level)
		return;
	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
	vsnprintf(line, sizeof(line), fmt, ap);
	fprintf(stderr, "%s.%03ldZ %s %s\n", ts, (long)tv.tv_usec / 1000,
	    log_names[level < 0 ? 0 : level > 3 ? 3 : level], line);
}

/* Write one log line. */
void
log_msg(int level, const char *fmt, ...)
{
	va_list	ap;

	va_start(ap, fmt);
	log_vmsg(level, fmt, ap);
	va_end(ap);
}

/* Log with errno's text and exit: start-up failures and broken invariants. */
void
fatal(const char *fmt, ...)
{
	va_list	ap;
	char	buf[1024];
	int	saved = errno;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	log_msg(LOG_ERR, "fatal: %s: %s", buf, strerror(saved));
	exit(1);
}

/* Log and exit. */
void
fatalx(const char *fmt, ...)
{
	va_list	ap;
	char	buf[1024];

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	log_msg(LOG_ERR, "fatal: %s", buf);
	exit(1);
}

/* Milliseconds on the monotonic clock. */
uint64_t
now_ms(void)
{
	struct timespec	ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ((uint64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
}
