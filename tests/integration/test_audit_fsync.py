"""audit.fsync "interval": the once-a-second fdatasync of the spool runs
off the event loop, so a slow disk does not hold the requests.

TEST DOUBLE: a slow disk.  A disk whose fdatasync takes seconds is what
the real one does under writeback pressure, but not on demand; an
LD_PRELOAD shim (built here with cc) holds every fdatasync of the
gateway, once the test arms it, until the test releases it.  Everything
else is real: the gateway binary, redis-server, docker-registry."""

import os
import shutil
import stat
import subprocess

import pytest
import requests

from lib.gateway import gateway_config, upstream
from lib.redis import RedisServer
from lib.util import wait_for
from test_audit_crash import audit_cfg, stream_request_ids

CC = shutil.which("cc")

SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* Hold fdatasync while DIR/arm exists and DIR/release does not (at most
 * 60 s), after saying so in DIR/held. */
int
fdatasync(int fd)
{
	static int (*real)(int);
	const char *dir = getenv("PC_TEST_SYNC_DIR");
	char p[4096];
	int i, f;

	if (real == NULL)
		real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
	if (dir != NULL) {
		snprintf(p, sizeof(p), "%s/arm", dir);
		if (access(p, F_OK) == 0) {
			snprintf(p, sizeof(p), "%s/held", dir);
			if ((f = open(p, O_CREAT | O_WRONLY, 0644)) != -1)
				close(f);
			snprintf(p, sizeof(p), "%s/release", dir);
			for (i = 0; i < 6000 && access(p, F_OK) != 0; i++)
				usleep(10000);
		}
	}
	return (real(fd));
}
"""


def _slow_disk_wrapper(tmp_path, ctl):
    src = tmp_path / "slowsync.c"
    src.write_text(SHIM)
    so = tmp_path / "slowsync.so"
    subprocess.run([CC, "-shared", "-fPIC", "-O2", "-o", str(so), str(src),
                    "-ldl"], check=True)
    real = os.path.abspath(os.path.join(os.path.dirname(__file__), "..",
                                        "..", "portcullis"))
    w = tmp_path / "portcullis-slowsync"
    # ASan wants its runtime first; the shim only adds a symbol.
    w.write_text("#!/bin/sh\nPC_TEST_SYNC_DIR=%s LD_PRELOAD=%s "
                 "ASAN_OPTIONS=\"${ASAN_OPTIONS:+$ASAN_OPTIONS:}"
                 "verify_asan_link_order=0\" exec %s \"$@\"\n"
                 % (ctl, so, os.environ.get("PORTCULLIS_BIN", real)))
    w.chmod(w.stat().st_mode | stat.S_IXUSR)
    return str(w)


@pytest.mark.skipif(CC is None, reason="needs cc")
def test_a_slow_fdatasync_does_not_hold_the_requests(
        start_registry, start_gateway, tmp_path, monkeypatch):
    """fsync interval, the disk's fdatasync held: requests are still
    answered while it is held (before: the loop itself was in it, and
    no request was answered until the disk came back), and once it is
    released every answered request has its one record."""
    ctl = tmp_path / "ctl"
    ctl.mkdir()
    rs = RedisServer(tmp_path / "redis")
    try:
        reg = start_registry("up1")
        monkeypatch.setenv("PORTCULLIS_BIN",
                           _slow_disk_wrapper(tmp_path, ctl))
        gw = start_gateway(gateway_config(
            upstream(reg, default=True), instance_id="gw-slowsync",
            audit=audit_cfg(rs.port, tmp_path / "spool",
                            fsync="interval")))
        s = requests.Session()
        s.trust_env = False
        rids = []

        def one():
            r = s.get(gw.url + "/v2/", timeout=20)
            assert r.status_code == 200
            rids.append(r.headers["X-Request-Id"])

        (ctl / "arm").touch()
        # Records make the spool dirty; the tick's sync comes within a
        # second or so and is held.
        wait_for(lambda: one() or (ctl / "held").exists(), timeout=30,
                 what="an fdatasync held")
        held_at = len(rids)
        for _ in range(20):
            one()
        assert not (ctl / "release").exists()
        assert len(rids) == held_at + 20
        (ctl / "release").touch()
        wait_for(lambda: set(rids) <= set(stream_request_ids(rs)),
                 timeout=60, what="every answered request in Redis")
        got = stream_request_ids(rs)
        assert len(got) == len(set(got)), "a record twice"
        gw.stop()
        assert "dropped=0" in gw.log_text()
    finally:
        (ctl / "release").touch()
        rs.stop()


def _sigblk(pid, tid):
    with open("/proc/%d/task/%d/status" % (pid, tid)) as f:
        for line in f:
            if line.startswith("SigBlk:"):
                return int(line.split()[1], 16)
    raise AssertionError("no SigBlk for task %d" % tid)


@pytest.mark.skipif(CC is None, reason="needs cc")
def test_the_sync_thread_takes_no_signal_and_stop_waits_for_it(
        start_registry, start_gateway, tmp_path, monkeypatch):
    """The sync thread blocks the signals the loop handles (SIGTERM,
    SIGHUP, SIGINT, SIGUSR1, SIGCHLD: a signal delivered to it would
    never reach libevent's handler; fails with the pthread_sigmask
    around pthread_create removed), and a stop that begins while its
    fdatasync is held neither ends early nor hangs: it ends once the
    disk comes back, with nothing dropped.  (The shim holds the stop's
    own fdatasync too, so this does not tell the join from that.)"""
    import signal
    ctl = tmp_path / "ctl"
    ctl.mkdir()
    rs = RedisServer(tmp_path / "redis")
    try:
        reg = start_registry("up1")
        monkeypatch.setenv("PORTCULLIS_BIN",
                           _slow_disk_wrapper(tmp_path, ctl))
        gw = start_gateway(gateway_config(
            upstream(reg, default=True), instance_id="gw-syncsig",
            audit=audit_cfg(rs.port, tmp_path / "spool",
                            fsync="interval")))
        s = requests.Session()
        s.trust_env = False
        (ctl / "arm").touch()
        wait_for(lambda: s.get(gw.url + "/v2/", timeout=20).ok and
                 (ctl / "held").exists(), timeout=30,
                 what="an fdatasync held")
        tids = [int(t) for t in os.listdir("/proc/%d/task" % gw.pid)]
        others = [t for t in tids if t != gw.pid]
        assert others, "no sync thread"
        for t in others:
            blk = _sigblk(gw.pid, t)
            for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT,
                        signal.SIGUSR1, signal.SIGCHLD):
                assert blk & (1 << (sig - 1)), \
                    "thread %d takes signal %d" % (t, sig)
        os.kill(gw.pid, signal.SIGTERM)
        wait_for(lambda: "audit stop" in gw.log_text() or
                 not gw.alive(), timeout=30, what="the stop begun")
        assert gw.alive(), "stopped with its fdatasync still held"
        (ctl / "release").touch()
        gw.stop()
        assert "dropped=0" in gw.log_text()
    finally:
        (ctl / "release").touch()
        rs.stop()
