"""The policy file (policy.file) as a careless operator can leave it: a
path that is a FIFO must be refused at once, at start and on a SIGHUP
reload, and must never block the gateway (the reload runs on the event
loop, so an open(2) that waits for a writer would stop every client).

Real parts only: a docker-registry upstream and the gateway binary."""

import json
import os
import signal
import subprocess

import requests

from lib.gateway import gateway_bin, gateway_config, upstream
from lib.util import wait_for

ANON_PULL = {"rules": [
    {"id": "anon-pull", "effect": "allow", "repositories": ["**"],
     "subjects": ["anonymous"], "actions": ["pull"]}]}


def _release(path):
    """Open the FIFO's other end, so that a reader stuck in open(2)
    returns (cleanup on the code before the fix); a no-op otherwise."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    except OSError:
        return
    os.close(fd)


def test_policy_file_that_is_a_fifo_never_blocks(start_registry,
                                                 start_gateway, tmp_path):
    reg = start_registry("fifoup")
    pol = tmp_path / "policy.json"
    pol.write_text(json.dumps(ANON_PULL))
    g = start_gateway(gateway_config(
        upstream(reg, default=True),
        policy={"file": str(pol)}))
    s = requests.Session()
    s.trust_env = False
    assert s.get(g.url + "/v2/", timeout=15).status_code == 200
    os.unlink(pol)
    os.mkfifo(pol)
    try:
        n = g.log_text().count("server reload failed")
        os.kill(g.pid, signal.SIGHUP)
        wait_for(lambda: g.log_text().count("server reload failed") > n,
                 timeout=20, what="the reload to fail on the FIFO")
        tail = g.log_text()
        tail = tail[tail.rindex("server reload failed"):]
        assert "/policy/file" in tail, tail[:2000]
        assert "cannot read" in tail, tail[:2000]
        # The old policy stays, and the gateway still answers.
        assert s.get(g.url + "/v2/", timeout=15).status_code == 200
    finally:
        _release(str(pol))
    # At start: refused with the same message, without hanging.
    bad = start_gateway(gateway_config(
        upstream(reg, default=True),
        policy={"file": str(pol)}), expect_fail=True, start_timeout=20)
    assert bad.returncode not in (None, 0)
    assert "/policy/file" in bad.log_text()
    assert "cannot read" in bad.log_text()


def test_policy_file_content_never_echoed(tmp_path):
    """policy.file pointed by mistake at a one-line secret (the
    credentials file sits next to it): the JSON error names the file,
    line and column, never the text it choked on."""
    secret = "hubPasswordOnlyLetters"
    (tmp_path / "hub.credentials").write_text("robot:%s\n" % secret)
    (tmp_path / "token").write_text(secret + "\n")
    for name in ("hub.credentials", "token"):
        (tmp_path / "gw.json").write_text(json.dumps({
            "upstreams": [{"name": "hub",
                           "url": "https://registry-1.docker.io",
                           "docker_hub": True, "default": True}],
            "policy": {"file": name}}))
        r = subprocess.run([gateway_bin(), "check-config", "-c",
                            str(tmp_path / "gw.json")],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 1, (r.stdout, r.stderr)
        assert name + ":1:" in r.stderr
        assert secret not in r.stderr + r.stdout
        assert "robot" not in r.stderr + r.stdout
