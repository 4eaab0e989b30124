/*
 * privdrop.h: switching to the configured user after start (privdrop.c)
 * and telling systemd about the life cycle (sdnotify.c).
 */
#ifndef PRIVDROP_H
#define PRIVDROP_H

int	priv_drop(const char *, const char *, char **);
int	priv_check_dir(const char *, const char *, char **);

/* sd_notify(3) without libsystemd: "READY=1", "RELOADING=1", ... */
void	sd_notify_state(const char *);

#endif /* PRIVDROP_H */
