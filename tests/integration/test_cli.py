"""The command line (check-config, version, --help, config-reference) and
the daemon's life cycle: SIGTERM drains requests in flight, then exits."""

import hashlib
import json
import os
import re
import signal
import socket
import shutil
import subprocess

import pytest

from lib import rawhttp
from lib.gateway import REPO_ROOT, gateway_bin, gateway_config, upstream
from lib.util import wait_for


def run(*args, timeout=30):
    return subprocess.run([gateway_bin()] + list(args), capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("name", sorted(
    f for f in os.listdir(os.path.join(REPO_ROOT, "conf"))
    if f.endswith(".json")))
def test_shipped_configs_are_valid(name, tmp_path):
    # Checked from a copy of conf/ so that the token signing key the
    # example names is made here, as the README tells the operator to
    # (portcullis keygen -o conf/token-signing): none is shipped.
    conf = tmp_path / "conf"
    shutil.copytree(os.path.join(REPO_ROOT, "conf"), conf)
    k = run("keygen", "-o", str(conf / "token-signing"))
    assert k.returncode == 0, k.stderr
    r = run("check-config", "-c", str(conf / name))
    assert r.returncode == 0, r.stderr
    assert "ok" in r.stdout


def test_example_config_needs_the_operators_signing_key(tmp_path):
    for f in ("portcullis.example.json", "credentials.example",
              "sso-client-secret.example"):
        shutil.copy(os.path.join(REPO_ROOT, "conf", f), tmp_path / f)
    r = run("check-config", "-c", str(tmp_path / "portcullis.example.json"))
    assert r.returncode != 0
    assert "/identity/token/signing_key" in r.stderr, r.stderr


BAD = [
    ({"upstreams": [{"name": "a", "url": "ftp://x", "default": True}]},
     ["/upstreams/0/url:"]),
    ({"upstreams": [{"name": "a", "url": "http://x", "default": True}],
      "listen": {"address": "nope"}, "bogus": 1},
     ["/listen/address:", "/bogus: unknown key"]),
    ({"upstreams": []}, ["/upstreams"]),
    ({"upstreams": [{"name": "a", "url": "http://x", "default": True},
                    {"name": "a", "url": "http://y", "default": True}]},
     ["/upstreams/1"]),
    ({"upstreams": [{"name": "a", "url": "http://x"}],
      "timeouts": {"header": "soon"}}, ["/timeouts/header:"]),
    ({"upstreams": [{"name": "a", "url": "http://x",
                     "credentials_file": "/nonexistent/creds"}]},
     ["/upstreams/0/credentials_file:"]),
]


@pytest.mark.parametrize("cfg,paths", BAD, ids=range(len(BAD)))
def test_check_config_names_every_error_path(tmp_path, cfg, paths):
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(cfg))
    r = run("check-config", "-c", str(p))
    assert r.returncode == 1, (r.stdout, r.stderr)
    for path in paths:
        assert path in r.stderr, r.stderr


def test_check_config_reports_json_syntax_and_missing_file(tmp_path):
    p = tmp_path / "broken.json"
    p.write_text('{"upstreams": [')
    r = run("check-config", "-c", str(p))
    assert r.returncode == 1 and "broken.json:1:" in r.stderr, r.stderr
    r = run("check-config", "-c", str(tmp_path / "absent.json"))
    assert r.returncode == 1 and "absent.json" in r.stderr, r.stderr


def test_serve_refuses_a_bad_config(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(BAD[0][0]))
    r = run("serve", "-c", str(p))
    assert r.returncode == 1
    assert "/upstreams/0/url:" in r.stderr


def test_version_help_and_unknown_command():
    r = run("version")
    assert r.returncode == 0 and r.stdout.startswith("portcullis ")
    for cmd in ("serve", "check-config", "config-reference", "version",
                "login"):
        r = run(cmd, "--help")
        assert r.returncode == 0, (cmd, r.stderr)
        assert r.stdout.startswith("usage: portcullis " + cmd), r.stdout
    r = run("--help")
    assert r.returncode == 0 and "commands:" in r.stdout
    r = run("frobnicate")
    assert r.returncode != 0 and "unknown command" in r.stderr
    r = run("check-config")
    assert r.returncode != 0 and "usage" in r.stderr


def test_config_reference_covers_the_schema():
    r = run("config-reference")
    assert r.returncode == 0
    for key in ("/listen/address", "/upstreams/N/url", "/timeouts/drain",
                "/upstreams/N/credentials_file", "/listen/tls/cert_file"):
        assert key in r.stdout, key


# ---------------------------------------------------------------------------
# SIGTERM.

def _upload_then_stall(gw, data):
    """Start a monolithic upload through the gateway and send only part of
    the body; returns (conn, location, digest)."""
    c = rawhttp.RawConn("127.0.0.1", gw.port, timeout=30)
    c.send(rawhttp.build("POST", "/v2/sig/blob/blobs/uploads/",
                         [("Content-Length", "0")], host=gw.host))
    r = c.read_response(timeout=30)
    assert r.status == 202, r.body
    loc = r.header("Location")
    loc = loc[loc.index("/v2/"):]
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    c.send(rawhttp.build(
        "PUT", loc + ("&" if "?" in loc else "?") + "digest=" + digest,
        [("Content-Length", str(len(data)))], data[:100], host=gw.host))
    return c, digest


def _refused(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            return s.recv(100) == b""
    except OSError:
        return True


def test_sigterm_drains_requests_in_flight(start_registry, start_gateway):
    reg = start_registry("drain")
    gw = start_gateway(gateway_config(upstream(reg, default=True),
                                      timeouts={"drain": 30},
                                      log={"level": "debug"}))
    data = os.urandom(4096)
    c, digest = _upload_then_stall(gw, data)
    wait_for(lambda: "proxy sent head" in gw.log_text().split(
        "path=/v2/sig/blob/blobs/uploads/ status=202")[-1],
        what="the upload to reach the upstream")
    os.kill(gw.pid, signal.SIGTERM)
    wait_for(lambda: "drain start" in gw.log_text(), what="drain to start")
    # New connections are no longer served; the one in flight still is.
    assert wait_for(lambda: _refused(gw.port), what="listener closed")
    assert gw.alive()
    c.send(data[100:])
    r = c.read_response(timeout=30)
    assert r.status == 201, r.body
    assert r.header("Docker-Content-Digest") == digest
    c.close()
    wait_for(lambda: not gw.alive(), what="gateway to exit after drain")
    assert gw.proc.returncode() == 0
    assert reg.has_blob("sig/blob", digest)


def test_drain_timeout_ends_stuck_requests(start_registry, start_gateway):
    reg = start_registry("drainto")
    gw = start_gateway(gateway_config(upstream(reg, default=True),
                                      timeouts={"drain": 1},
                                      log={"level": "debug"}))
    c, digest = _upload_then_stall(gw, os.urandom(4096))
    wait_for(lambda: "proxy sent head" in gw.log_text().split(
        "path=/v2/sig/blob/blobs/uploads/ status=202")[-1],
        what="the upload to reach the upstream")
    os.kill(gw.pid, signal.SIGTERM)
    wait_for(lambda: not gw.alive(), timeout=20,
             what="gateway to exit at the drain timeout")
    assert "drain_timeout" in gw.log_text()
    assert c.wait_closed(timeout=10)
    assert not reg.has_blob("sig/blob", digest)


def test_sighup_reloads_a_valid_config_and_keeps_the_old_on_error(
        start_registry, start_gateway, http):
    r1 = start_registry("one")
    r2 = start_registry("two")
    for reg in (r1, r2):
        r = reg.http.post(reg.url + "/v2/only-%s/blobs/uploads/" % reg.name,
                          timeout=10)
        assert r.status_code == 202
    gw = start_gateway(gateway_config(upstream(r1, default=True)))

    def status(repo):
        return http.get(gw.url + "/v2/%s/tags/list" % repo,
                        timeout=10).status_code

    def reload(cfg):
        n = gw.reloads_ended()
        with open(gw.config_path, "w") as f:
            json.dump(cfg, f)
        os.kill(gw.pid, signal.SIGHUP)
        wait_for(lambda: gw.reloads_ended() > n,
                 what="the reload's outcome logged")

    m2 = r2.mark()
    cfg = dict(gw.config)
    cfg["upstreams"] = [upstream(r2, default=True)]
    reload(cfg)
    assert "server reload done" in gw.log_text()
    status("only-two")
    assert any(e["path"] == "/v2/only-two/tags/list"
               for e in r2.access_log(since=m2))
    # A broken file is refused; the running config stays.
    reload({"upstreams": [{"name": "x", "url": "ftp://nope"}]})
    assert "reload failed" in gw.log_text()
    assert "/upstreams/0/url:" in gw.log_text()
    # So is a change that needs a restart (the listen address).
    bad = dict(cfg)
    bad["listen"] = {"address": "127.0.0.1:1"}
    reload(bad)
    assert "reload refused" in gw.log_text()
    m2 = r2.mark()
    status("only-two")
    assert any(e["path"] == "/v2/only-two/tags/list"
               for e in r2.access_log(since=m2))
    assert gw.alive()


def test_readme_configuration_reference_is_current():
    """README.md's reference is `portcullis config-reference` verbatim
    (contrib/update-readme.sh regenerates it)."""
    with open(os.path.join(REPO_ROOT, "README.md")) as f:
        readme = f.read()
    b, e = "<!-- config-reference:begin -->\n", "<!-- config-reference:end -->"
    assert b in readme and e in readme
    block = readme[readme.index(b) + len(b):readme.index(e)]
    assert block == run("config-reference").stdout, \
        "README.md is stale: run contrib/update-readme.sh"


def test_command_list_is_whole_sentences_and_complete():
    # Issue 13: descriptions were cut mid-sentence, audit generate absent.
    r = run()
    assert r.returncode != 0
    out = r.stderr
    assert "audit query|tail|export|generate" in out, out
    summaries = []
    for ln in out.splitlines():
        if ln.startswith("    "):             # under a long usage
            summaries.append(ln.strip())
        elif ln.startswith("  ") and "  " in ln.strip():
            summaries.append(re.split(r"\s{2,}", ln.strip())[-1])
    assert len(summaries) >= 10, out
    for text in summaries:
        assert text.endswith("."), text


def test_same_url_twice_needs_distinct_hosts(tmp_path):
    cfg = {"upstreams": [
        {"name": "a", "url": "http://127.0.0.1:5999", "prefix": "a"},
        {"name": "b", "url": "http://127.0.0.1:5999", "prefix": "b"}]}
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cfg))
    r = run("check-config", "-c", str(path))
    assert r.returncode != 0 and "/upstreams/1/hosts" in r.stderr, r.stderr
    cfg["upstreams"][1]["hosts"] = []
    path.write_text(json.dumps(cfg))
    assert run("check-config", "-c", str(path)).returncode == 0
    ref = run("config-reference").stdout
    assert "two upstreams with the same url need distinct hosts" in ref
