/*
 * privdrop.c: give up root once the privileged work is done.  server.c
 * binds the listeners and the config loader reads the TLS key, the token
 * signing keys and the secret files as root; then priv_drop() switches to
 * the configured user and group for good (setgroups, setgid, setuid, in
 * that order, checked by trying to get root back; a named user keeps its
 * supplementary groups, as login would give them).  The cache directory
 * and the audit spool are opened after the drop, so what the gateway
 * writes belongs to that user; priv_check_dir() says clearly when it may
 * not write there.  A leaf: no libevent.
 */
#include <sys/stat.h>
#include <sys/types.h>

#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "portcullis.h"
#include "privdrop.h"

/*
 * A name or a number: the uid, the account's primary gid and (*named)
 * whether it is a named account, whose supplementary groups count (a
 * group such as ssl-cert that may read the keys on reload).
 */
static int
priv_lookup_user(const char *name, uid_t *uid, gid_t *gid, int *named,
    char **cause)
{
	struct passwd	*pw;
	char		*ep;
	unsigned long	 v;

	errno = 0;
	*named = 0;
	if ((pw = getpwnam(name)) != NULL) {
		*uid = pw->pw_uid;
		*gid = pw->pw_gid;
		*named = 1;
		return (0);
	}
	v = strtoul(name, &ep, 10);
	if (*name != '\0' && *ep == '\0' && v < UINT_MAX) {
		*uid = (uid_t)v;
		pw = getpwuid(*uid);
		*gid = pw != NULL ? pw->pw_gid : (gid_t)v;
		return (0);
	}
	if (asprintf(cause, "user: no such user: %s", name) == -1)
		*cause = NULL;
	return (-1);
}

static int
priv_lookup_group(const char *name, gid_t *gid, char **cause)
{
	struct group	*gr;
	char		*ep;
	unsigned long	 v;

	if ((gr = getgrnam(name)) != NULL) {
		*gid = gr->gr_gid;
		return (0);
	}
	v = strtoul(name, &ep, 10);
	if (*name != '\0' && *ep == '\0' && v < UINT_MAX) {
		*gid = (gid_t)v;
		return (0);
	}
	if (asprintf(cause, "group: no such group: %s", name) == -1)
		*cause = NULL;
	return (-1);
}

/*
 * Switch to user (and group, NULL: the user's primary group).  Not root:
 * nothing to give up; a warning when the user differs (as nginx does), 0.
 * Root without a user: a warning, 0 (it runs, but everything a client
 * can reach runs as root).  -1 with *cause when the switch fails; the
 * caller must then exit, never carry on as root.
 */
int
priv_drop(const char *user, const char *group, char **cause)
{
	uid_t	uid;
	gid_t	gid;
	int	named, rv;

	if (user == NULL) {
		if (geteuid() == 0)
			log_warn("- server running_as_root: set \"user\" to "
			    "drop privileges after start (README \"Running "
			    "as a service\")");
		return (0);
	}
	if (priv_lookup_user(user, &uid, &gid, &named, cause) == -1)
		return (-1);
	if (group != NULL && priv_lookup_group(group, &gid, cause) == -1)
		return (-1);
	/* Root by another name gives nothing up: say so, never pretend. */
	if (uid == 0) {
		if (asprintf(cause, "user: %s is root (uid 0): name an "
		    "unprivileged user, or leave user out", user) == -1)
			*cause = NULL;
		return (-1);
	}
	if (gid == 0) {
		if (asprintf(cause, "group: %s%s is root's group (gid 0): "
		    "name an unprivileged group", group != NULL ? group :
		    "the primary group of ", group != NULL ? "" : user) == -1)
			*cause = NULL;
		return (-1);
	}
	if (geteuid() != 0) {
		if (geteuid() != uid)
			log_warn("- server user=%s ignored: not started as "
			    "root, staying uid=%lu", user,
			    (unsigned long)geteuid());
		return (0);
	}
	rv = named ? initgroups(user, gid) : setgroups(1, &gid);
	if (rv == -1 || setresgid(gid, gid, gid) == -1 ||
	    setresuid(uid, uid, uid) == -1) {
		if (asprintf(cause, "user: cannot switch to %s: %s", user,
		    strerror(errno)) == -1)
			*cause = NULL;
		return (-1);
	}
	/* Root must be gone for good, not only from the effective ids. */
	if (uid != 0 && (setuid(0) != -1 || seteuid(0) != -1)) {
		if (asprintf(cause, "user: still able to become root after "
		    "switching to %s", user) == -1)
			*cause = NULL;
		return (-1);
	}
	log_info("- server privileges_dropped user=%s uid=%lu gid=%lu", user,
	    (unsigned long)uid, (unsigned long)gid);
	return (0);
}

/*
 * The directory dir (key names the setting) must exist, or be creatable,
 * and be writable and searchable by who the process is now.  -1 with a
 * *cause that says which user needs what.
 */
int
priv_check_dir(const char *dir, const char *key, char **cause)
{
	struct stat	st;
	struct passwd	*pw = getpwuid(geteuid());
	char		 who[64];

	if (pw != NULL)
		snprintf(who, sizeof(who), "%s (uid %lu)", pw->pw_name,
		    (unsigned long)geteuid());
	else
		snprintf(who, sizeof(who), "uid %lu",
		    (unsigned long)geteuid());
	if (stat(dir, &st) == -1) {
		if (errno == ENOENT)
			return (0);	/* created by its owner, errors there */
		if (asprintf(cause, "%s %s: %s, running as %s", key, dir,
		    strerror(errno), who) == -1)
			*cause = NULL;
		return (-1);
	}
	if (!S_ISDIR(st.st_mode) || access(dir, W_OK | X_OK) == -1) {
		if (asprintf(cause, "%s %s: not a directory %s can write "
		    "(owner uid %lu, mode %03o): chown it to the configured "
		    "user", key, dir, who, (unsigned long)st.st_uid,
		    (unsigned)(st.st_mode & 0777)) == -1)
			*cause = NULL;
		return (-1);
	}
	return (0);
}
