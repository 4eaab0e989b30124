#!/bin/sh
# mkman.sh: write portcullis(8) to stdout from the binary's own --help
# texts (the command list, then each command's usage and help), so the
# manual page cannot drift from the program.  `make install` runs it.
#   contrib/mkman.sh PORTCULLIS_BIN > portcullis.8
set -eu
bin=${1:-./portcullis}
ver=$("$bin" version | sed 's/^portcullis //')
# roff: a backslash is an escape, a leading dot or quote a request.
esc() {
	sed -e 's/\\/\\e/g' -e "s/^\\./\\\\\\&./" -e "s/^'/\\\\\\&'/"
}
cat <<HEAD
.TH PORTCULLIS 8 "" "portcullis $ver" "System Manager's Manual"
.SH NAME
portcullis \\- container registry gateway
.SH SYNOPSIS
.B portcullis
.I command
.RI [ options ]
.SH DESCRIPTION
portcullis sits in front of OCI registries: it authenticates callers,
applies a per-repository policy, caches blobs and manifests, and writes
an audit record of every request.  The README (installed with the
documentation) describes the configuration in full;
.B portcullis config-reference
prints every key.
.SH COMMANDS
HEAD
"$bin" --help | sed -n '/^commands:/,/^$/p' | sed '1d;/^$/d' |
    awk '/^  [a-z]/ && $0 !~ /^   / { print $1 }' | sort -u |
while read -r cmd; do
	out=$("$bin" "$cmd" --help 2>&1 || true)
	usage=$(printf '%s\n' "$out" | sed -n 's/^usage: portcullis //p' |
	    head -1)
	printf '.TP\n.B portcullis %s\n' "$(printf '%s' "$usage" | esc)"
	printf '%s\n' "$out" | sed '1,2d' | esc | sed 's/^$/.PP/'
done
cat <<'TAIL'
.SH SIGNALS
.TP
.B SIGTERM, SIGINT
Stop accepting, let requests in flight finish (up to timeouts.drain),
flush the audit queue, exit.
.TP
.B SIGHUP
Reload the configuration, the policy, the TLS certificate and the token
signing keys; connections and transfers in progress are not dropped.
.TP
.B SIGUSR1
Reopen log.file (for logrotate).
.SH FILES
.TP
.I /etc/portcullis/portcullis.json
the configuration (an example is installed next to it)
.SH SEE ALSO
.BR systemd.service (5),
.BR logrotate (8)
TAIL
