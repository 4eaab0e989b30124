/*
 * sdnotify.c: the systemd notification protocol (sd_notify(3)) without
 * libsystemd: one datagram to the AF_UNIX socket $NOTIFY_SOCKET names
 * ("@name": the abstract namespace).  Type=notify units learn when the
 * gateway is ready, reloading or stopping.  Without the variable
 * nothing happens.  A leaf: no libevent.
 */
#include <sys/socket.h>
#include <sys/un.h>

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "portcullis.h"
#include "privdrop.h"

/*
 * Send state ("READY=1", "STOPPING=1"; "RELOADING=1" gets the
 * MONOTONIC_USEC= that systemd 253's Type=notify-reload wants).  Best
 * effort: a failure is logged at debug, never fatal.
 */
void
sd_notify_state(const char *state)
{
	struct sockaddr_un	 sun;
	struct timespec		 ts;
	const char		*path = getenv("NOTIFY_SOCKET");
	char			 msg[256];
	socklen_t		 len;
	size_t			 n;
	int			 fd;

	if (path == NULL || *path == '\0')
		return;
	if ((n = strlen(path)) >= sizeof(sun.sun_path) ||
	    (path[0] != '/' && path[0] != '@'))
		return;
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	memcpy(sun.sun_path, path, n);
	if (path[0] == '@')
		sun.sun_path[0] = '\0';
	len = offsetof(struct sockaddr_un, sun_path) + n;
	if (strcmp(state, "RELOADING=1") == 0) {
		clock_gettime(CLOCK_MONOTONIC, &ts);
		snprintf(msg, sizeof(msg), "%s\nMONOTONIC_USEC=%llu", state,
		    (unsigned long long)ts.tv_sec * 1000000 +
		    (unsigned long long)ts.tv_nsec / 1000);
	} else
		snprintf(msg, sizeof(msg), "%s", state);
	if ((fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) == -1)
		return;
	if (sendto(fd, msg, strlen(msg), MSG_NOSIGNAL,
	    (struct sockaddr *)&sun, len) == -1)
		log_debug("- server sd_notify_failed state=%s", state);
	close(fd);
}
