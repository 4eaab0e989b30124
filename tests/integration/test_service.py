"""Running as a service (issue 12, acceptance 7 and hardening): the
privilege drop to `user` after binding (the /proc Uid/Gid lines, the cache
written as that user, clear errors when it cannot write), the systemd
unit (`systemd-analyze verify` on the unit `make install` writes, then
the gateway started with the credentials the unit gives it: an
unprivileged user with only CAP_NET_BIND_SERVICE, binding a port below
1024, via setpriv, since PID 1 here need not be systemd), the sd_notify
datagrams of Type=notify, SIGUSR1 reopening log.file after a logrotate
rename, and a pull in flight finishing after SIGTERM (timeouts.drain).

The privilege tests need root (they skip otherwise) and use the
system's `nobody` user; their directories live under a 0755 temporary
directory so that `nobody` can reach them."""

import hashlib
import json
import os
import pwd
import grp
import shutil
import signal
import socket
import subprocess
import tempfile
import urllib.parse

import pytest
import requests

from lib.cache import cache_cfg
from lib.gateway import OPEN_TEST_POLICY, REPO_ROOT, gateway_bin, \
    gateway_config, upstream
from lib.util import ManagedProcess, free_port, safe_env, wait_for

needs_root = pytest.mark.skipif(os.geteuid() != 0,
                                reason="the privilege drop needs root")


def _nobody():
    try:
        pw = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user nobody")
    return pw.pw_uid, pw.pw_gid


@pytest.fixture
def open_dir():
    """A temporary directory other users can traverse (0755)."""
    d = tempfile.mkdtemp(prefix="pc-service-", dir="/tmp")
    os.chmod(d, 0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _push_blob(reg, repo, data):
    s = requests.Session()
    s.trust_env = False
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    r = s.post("%s/v2/%s/blobs/uploads/" % (reg.url, repo), timeout=30)
    assert r.status_code == 202, r.text
    loc = urllib.parse.urljoin(reg.url + "/", r.headers["Location"])
    r = s.put(loc + ("&" if "?" in loc else "?") + "digest=" + d, data=data,
              headers={"Content-Type": "application/octet-stream"},
              timeout=120)
    assert r.status_code == 201, r.text
    return d


def _ids(pid):
    """The Uid, Gid and Groups lines of /proc/PID/status."""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("Uid", "Gid", "Groups", "CapEff", "CapAmb"):
                out[k] = v.split()
    return out


def _files_under(d):
    for root, _, files in os.walk(d):
        for f in files:
            yield os.path.join(root, f)


@needs_root
def test_drops_to_user_after_binding_and_serves(start_registry,
                                                start_gateway, open_dir):
    uid, gid = _nobody()
    reg = start_registry("up")
    data = os.urandom(300000)
    digest = _push_blob(reg, "lab/img", data)
    cdir = os.path.join(open_dir, "cache")
    os.mkdir(cdir)
    os.chown(cdir, uid, gid)
    gw = start_gateway(gateway_config(upstream(reg, default=True),
                                      cache=cache_cfg(cdir),
                                      user="nobody"))
    ids = _ids(gw.pid)
    assert ids["Uid"] == [str(uid)] * 4
    assert ids["Gid"] == [str(gid)] * 4
    assert ids["Groups"] == [str(gid)]
    assert int(ids["CapEff"][0], 16) == 0
    assert "server privileges_dropped user=nobody uid=%d" % uid \
        in gw.log_text()
    r = gw.http.get(gw.url + "/v2/up/lab/img/blobs/" + digest, timeout=30)
    assert r.status_code == 200
    assert r.content == data
    # The fill landed in the cache, written by nobody; served again from
    # it.
    r = gw.http.get(gw.url + "/v2/up/lab/img/blobs/" + digest, timeout=30)
    assert r.status_code == 200 and r.content == data
    files = list(_files_under(cdir))
    assert files
    big = [f for f in files if os.path.getsize(f) == len(data)]
    assert big, files
    assert all(os.stat(f).st_uid == uid for f in files)
    # A reload after the drop rereads the config as nobody: this one is
    # in root's private pytest directory, so it fails and says why,
    # and the gateway keeps serving.
    os.kill(gw.pid, signal.SIGHUP)
    wait_for(lambda: "server reload failed" in gw.log_text(),
             what="the unreadable reload to fail")
    assert "Permission denied" in gw.log_text()
    assert gw.http.get(gw.url + "/healthz", timeout=10).status_code == 200


@needs_root
def test_cache_the_user_cannot_write_is_a_clear_error(start_registry,
                                                      start_gateway,
                                                      open_dir):
    _nobody()
    reg = start_registry("up")
    cdir = os.path.join(open_dir, "cache")
    os.mkdir(cdir, 0o755)		# root's
    gw = start_gateway(gateway_config(upstream(reg, default=True),
                                      cache=cache_cfg(cdir),
                                      user="nobody"), expect_fail=True)
    assert gw.returncode == 1
    log = gw.log_text()
    assert "cache.dir %s: not a directory nobody (uid" % cdir in log
    assert "chown it to the configured user" in log


@needs_root
def test_unknown_user_is_refused(start_registry, start_gateway):
    reg = start_registry("up")
    gw = start_gateway(gateway_config(upstream(reg, default=True),
                                      user="no-such-user-pc"),
                       expect_fail=True)
    assert gw.returncode == 1
    assert "user: no such user: no-such-user-pc" in gw.log_text()


@needs_root
@pytest.mark.parametrize("user,group", [("root", None), ("0", None),
                                        ("nobody", "root"),
                                        ("nobody", "0")])
def test_user_or_group_root_is_refused(start_registry, start_gateway,
                                       user, group):
    """A "user" that is root (by name or number) or a root group gives
    nothing up: the gateway must not start and log privileges_dropped
    while it keeps root's rights."""
    reg = start_registry("up")
    extra = {"user": user}
    if group is not None:
        extra["group"] = group
    gw = start_gateway(gateway_config(upstream(reg, default=True),
                                      **extra), expect_fail=True)
    assert gw.returncode == 1
    assert "privileges_dropped" not in gw.log_text()
    want = "user: %s is root" % user if group is None else \
        "group: %s is root's group" % group
    assert want in gw.log_text()


def test_group_without_user_is_a_config_error(tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"group": "nogroup", "upstreams": [
        {"name": "a", "url": "http://127.0.0.1:1"}]}))
    p = subprocess.run([gateway_bin(), "check-config", "-c", str(cfg)],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 1
    assert "/group: needs user" in p.stderr


def _installed_unit(dest):
    """make install into dest; the unit it wrote."""
    subprocess.run(["make", "-s", "install", "DESTDIR=" + dest],
                   cwd=REPO_ROOT, check=True, capture_output=True,
                   timeout=300)
    unit = os.path.join(dest, "usr/local/lib/systemd/system",
                        "portcullis.service")
    assert os.path.isfile(unit)
    return unit


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze not installed")
def test_make_install_and_the_unit_verifies(tmp_path):
    dest = str(tmp_path / "dest")
    unit = _installed_unit(dest)
    for f in ("usr/local/bin/portcullis",
              "usr/local/bin/docker-credential-portcullis",
              "usr/local/etc/portcullis/portcullis.example.json",
              "usr/local/etc/logrotate.d/portcullis",
              "usr/local/share/man/man8/portcullis.8"):
        assert os.path.lexists(os.path.join(dest, f)), f
    man = open(os.path.join(dest, "usr/local/share/man/man8",
                            "portcullis.8")).read()
    assert ".TH PORTCULLIS 8" in man and "SIGUSR1" in man
    assert "portcullis check-config -c FILE" in man
    text = open(unit).read()
    assert "ExecStart=/usr/local/bin/portcullis serve -c " \
        "/usr/local/etc/portcullis/portcullis.json" in text
    # verify checks that ExecStart's binary exists: point it at the one
    # installed under dest (the only change).
    check = tmp_path / "portcullis.service"
    check.write_text(text.replace("/usr/local/bin/portcullis",
                                  os.path.join(dest, "usr/local/bin",
                                               "portcullis")))
    p = subprocess.run(["systemd-analyze", "verify", str(check)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stderr.strip() == "", p.stderr
    for want in ("Type=notify", "NoNewPrivileges=yes",
                 "ProtectSystem=strict", "PrivateTmp=yes",
                 "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
                 "AmbientCapabilities=CAP_NET_BIND_SERVICE",
                 "ReadWritePaths=/var/cache/portcullis /var/lib/portcullis",
                 "LimitNOFILE=", "ExecReload=/bin/kill -HUP $MAINPID",
                 "User=portcullis"):
        assert want in text, want


@needs_root
@pytest.mark.skipif(shutil.which("setpriv") is None,
                    reason="setpriv not installed")
def test_starts_as_the_unit_starts_it(start_registry, open_dir):
    """The credentials portcullis.service gives the process (User=,
    AmbientCapabilities= and CapabilityBoundingSet=CAP_NET_BIND_SERVICE,
    NoNewPrivileges=), made by setpriv: it binds a port below 1024 as
    nobody, says READY=1 on $NOTIFY_SOCKET, serves, writes its cache."""
    uid, gid = _nobody()
    reg = start_registry("up")
    data = os.urandom(100000)
    digest = _push_blob(reg, "lab/img", data)
    cdir = os.path.join(open_dir, "cache")
    os.mkdir(cdir)
    os.chown(cdir, uid, gid)
    port = None
    for p in range(600, 1000):
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", p))
            port = p
            break
        except OSError:
            continue
        finally:
            s.close()
    assert port is not None
    cfg = gateway_config(upstream(reg, default=True), cache=cache_cfg(cdir),
                         listen={"address": "127.0.0.1:%d" % port},
                         policy=OPEN_TEST_POLICY)
    cpath = os.path.join(open_dir, "portcullis.json")
    with open(cpath, "w") as f:
        json.dump(cfg, f)
    os.chmod(cpath, 0o644)
    nsock = os.path.join(open_dir, "notify.sock")
    ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    ns.bind(nsock)
    os.chmod(nsock, 0o777)
    ns.settimeout(30)
    log = os.path.join(open_dir, "gateway.log")
    proc = ManagedProcess(
        ["setpriv", "--reuid=%d" % uid, "--regid=%d" % gid,
         "--clear-groups", "--inh-caps=-all,+net_bind_service",
         "--ambient-caps=-all,+net_bind_service",
         "--bounding-set=-all,+net_bind_service", "--no-new-privs",
         gateway_bin(), "serve", "-c", cpath],
        log, env=safe_env({"NOTIFY_SOCKET": nsock}), name="portcullis")
    try:
        assert ns.recv(256) == b"READY=1"
        ids = _ids(proc.pid)
        assert ids["Uid"] == [str(uid)] * 4
        assert int(ids["CapAmb"][0], 16) == 1 << 10  # CAP_NET_BIND_SERVICE
        s = requests.Session()
        s.trust_env = False
        r = s.get("http://127.0.0.1:%d/v2/up/lab/img/blobs/%s" %
                  (port, digest), timeout=30)
        assert r.status_code == 200 and r.content == data
        assert any(os.stat(f).st_uid == uid for f in _files_under(cdir))
        # systemctl reload: RELOADING=1 (with MONOTONIC_USEC) then
        # READY=1; systemctl stop: STOPPING=1.
        os.kill(proc.pid, signal.SIGHUP)
        m = ns.recv(256).decode()
        assert m.startswith("RELOADING=1\nMONOTONIC_USEC="), m
        assert ns.recv(256) == b"READY=1"
        os.kill(proc.pid, signal.SIGTERM)
        assert ns.recv(256) == b"STOPPING=1"
        wait_for(lambda: not proc.alive(), what="the gateway to exit")
        assert proc.returncode() == 0
    finally:
        proc.stop()
        ns.close()
        with open(log, errors="replace") as f:
            print(f.read()[-3000:])


def test_sigusr1_reopens_log_file(start_registry, start_gateway, tmp_path):
    reg = start_registry("up")
    lf = tmp_path / "logs" / "portcullis.log"
    lf.parent.mkdir()
    gw = start_gateway(gateway_config(upstream(reg, default=True),
                                      log={"file": str(lf)}))
    assert "server start" in lf.read_text()
    assert gw.log_text() == ""	# nothing left on stderr
    gw.http.get(gw.url + "/v2/", timeout=10)
    wait_for(lambda: "path=/v2/ " in lf.read_text(), what="a request line")
    # logrotate: rename, then SIGUSR1 (postrotate).
    rotated = tmp_path / "logs" / "portcullis.log.1"
    os.rename(str(lf), str(rotated))
    gw.http.get(gw.url + "/v2/rot-before/tags/list", timeout=10)
    wait_for(lambda: "rot-before" in rotated.read_text(),
             what="lines to go to the renamed file until the signal")
    os.kill(gw.pid, signal.SIGUSR1)
    wait_for(lambda: lf.exists() and "log reopened" in lf.read_text(),
             what="a new log file")
    gw.http.get(gw.url + "/v2/rot-after/tags/list", timeout=10)
    wait_for(lambda: "rot-after" in lf.read_text(),
             what="lines in the new file")
    assert "rot-after" not in rotated.read_text()
    assert oct(lf.stat().st_mode & 0o777) == oct(0o640)
    # A name that cannot be opened (its directory moved away): the open
    # file stays in use and says so.
    moved = tmp_path / "moved"
    os.rename(str(lf.parent), str(moved))
    os.kill(gw.pid, signal.SIGUSR1)
    wait_for(lambda: "reopen_failed" in (moved / "portcullis.log")
             .read_text(), what="the failed reopen")
    gw.http.get(gw.url + "/v2/rot-still/tags/list", timeout=10)
    wait_for(lambda: "rot-still" in (moved / "portcullis.log").read_text(),
             what="lines still in the open file")


def test_log_file_that_cannot_be_opened_stops_start(start_registry,
                                                    start_gateway, tmp_path):
    reg = start_registry("up")
    gw = start_gateway(gateway_config(
        upstream(reg, default=True),
        log={"file": str(tmp_path / "no" / "such" / "dir" / "x.log")}),
        expect_fail=True)
    assert gw.returncode == 1
    assert "log.file %s: cannot open: No such file or directory" % (
        tmp_path / "no" / "such" / "dir" / "x.log") in gw.log_text()


@needs_root
def test_log_file_symlink_is_not_followed_as_root(start_registry,
                                                  start_gateway, open_dir):
    """log.file is opened as root, before the drop, in a directory the
    dropped user writes (LogsDirectory=, logrotate's create): a symlink
    that user planted there must not make root create or append to a
    file the link names."""
    uid, gid = _nobody()
    reg = start_registry("up")
    logs = os.path.join(open_dir, "logs")
    os.mkdir(logs)
    os.chown(logs, uid, gid)
    victim_dir = os.path.join(open_dir, "root-only")
    os.mkdir(victim_dir, 0o700)
    victim = os.path.join(victim_dir, "victim")
    lf = os.path.join(logs, "portcullis.log")
    os.symlink(victim, lf)
    os.lchown(lf, uid, gid)
    gw = start_gateway(gateway_config(upstream(reg, default=True),
                                      user="nobody", log={"file": lf}),
                       expect_fail=True)
    assert not os.path.exists(victim), "root followed the planted link"
    assert gw.returncode == 1
    assert "log.file %s: cannot open" % lf in gw.log_text()
    assert "symbolic link" in gw.log_text()


def test_pull_in_flight_completes_after_sigterm(start_registry,
                                                start_gateway):
    """SIGTERM while a 64 MiB blob is being read: the listener closes, the
    transfer finishes (all bytes, right digest), then the gateway exits
    0, well within timeouts.drain."""
    reg = start_registry("up")
    data = os.urandom(64 << 20)
    digest = _push_blob(reg, "lab/big", data)
    gw = start_gateway(gateway_config(upstream(reg, default=True),
                                      timeouts={"drain": 120,
                                                "upstream_connect": 5,
                                                "upstream_response": 60}))
    s = requests.Session()
    s.trust_env = False
    r = s.get(gw.url + "/v2/up/lab/big/blobs/" + digest, stream=True,
              timeout=60)
    assert r.status_code == 200
    it = r.iter_content(1 << 16)
    h = hashlib.sha256()
    got = 0
    first = next(it)
    h.update(first)
    got += len(first)
    # Reading stops here; the gateway's buffers fill and it waits.
    os.kill(gw.pid, signal.SIGTERM)
    wait_for(lambda: "drain start" in gw.log_text(), what="drain to start")

    def refused():
        try:
            socket.create_connection(("127.0.0.1", gw.port), 1).close()
            return False
        except OSError:
            return True
    wait_for(refused, what="the listener to close")
    assert gw.alive()
    for chunk in it:
        h.update(chunk)
        got += len(chunk)
    assert got == len(data)
    assert "sha256:" + h.hexdigest() == digest
    wait_for(lambda: not gw.alive(), what="the gateway to exit")
    assert gw.proc.returncode() == 0
    assert "drain_timeout" not in gw.log_text()
