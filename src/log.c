/*
 * log.c: log lines to stderr.  Format: an RFC 3339 UTC timestamp, the
 * level, then the caller's text, which by convention is
 * "<conn id>.<req seq> <subsystem> <event> key=value ...".  Nothing here
 * knows about requests; callers never pass a credential.
 *
 * log.file: the file is opened onto descriptor 2, so that every line
 * written to stderr (ours, a library's, the exit message) lands in it;
 * SIGUSR1 opens the name again after logrotate moved the old file away.
 */
#include <sys/time.h>

#include <fcntl.h>

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
/* Likewise the log file's name: stderr is redirected to it. */
static char *log_path;

static const char *log_names[] = { "error", "warn", "info", "debug" };

/* Set up logging at the given level. */
void
log_init(int level)
{
	log_level = level;
	setvbuf(stderr, NULL, _IOLBF, 0);
}

/* Open path (append, created 0640) onto stderr; -1 with errno set. */
static int
log_open_onto_stderr(const char *path)
{
	int	fd, saved;

	if ((fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC |
	    O_NOCTTY | O_NONBLOCK, 0640)) == -1)
		return (-1);
	fflush(stderr);
	if (fd != STDERR_FILENO) {
		if (dup2(fd, STDERR_FILENO) == -1) {
			saved = errno;
			close(fd);
			errno = saved;
			return (-1);
		}
		close(fd);
	}
	/* O_NONBLOCK only kept a FIFO from stopping open(2). */
	(void)fcntl(STDERR_FILENO, F_SETFL, O_APPEND);
	return (0);
}

/*
 * Send log lines to path from now on (log.file).  -1 with *cause when it
 * cannot be opened; stderr stays as it was.
 */
int
log_file_open(const char *path, char **cause)
{
	char	*p;

	if ((p = strdup(path)) == NULL)
		fatal("strdup");
	if (log_open_onto_stderr(p) == -1) {
		if (asprintf(cause, "log.file %s: cannot open: %s", p,
		    strerror(errno)) == -1)
			*cause = NULL;
		free(p);
		return (-1);
	}
	free(log_path);
	log_path = p;
	return (0);
}

/*
 * SIGUSR1: open log.file again (logrotate renamed it; its postrotate
 * sends the signal).  When that fails the old file stays in use and
 * the reason is written to it.
 */
void
log_reopen(void)
{
	if (log_path == NULL) {
		log_info("- log reopen: no log.file, logging to stderr");
		return;
	}
	if (log_open_onto_stderr(log_path) == -1) {
		log_warn("- log reopen_failed file=%s error=\"%s\": still "
		    "writing to the old file", log_path, strerror(errno));
		return;
	}
	log_info("- log reopened file=%s", log_path);
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
