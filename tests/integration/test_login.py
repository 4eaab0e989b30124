"""Sign-in from a terminal (issue 10, acceptance 2 and 4): the discovery
document /.well-known/portcullis, `portcullis login` running the device
flow against the provider while a scripted user approves the code
(idp.device_approve), the exchange at /token for a gateway refresh token
linked to the provider session (token_idp.c), then skopeo, podman and
docker pulling with what login wrote; docker-credential-portcullis and
its four verbs (an expired access token refreshed silently, an expired
refresh token failing clearly without a terminal, and with one, a pty as
the helper's controlling terminal, the device flow run there); `login
--helper` with skopeo; groups stay live: a
user removed from a group at the provider gets a next refreshed token
without it, a disabled user gets none (401 idp_refused, audited);
sso.recheck_interval lets the last check's groups stand within it; the
Redis record is sealed, and a check in flight (its lock) makes a refresh
take the last check's groups.

Real parts only: oidc-provider on node (lib/idp.py), redis-server,
docker-registry, skopeo, podman, dockerd."""

import fcntl
import hashlib
import json
import os
import queue
import re
import select
import shutil
import signal
import stat
import subprocess
import termios
import threading
import time

import pytest
import requests

from lib.clients import Skopeo
from lib.gateway import gateway_bin, gateway_config, upstream
from lib.idfix import SERVICE, claims, jose_sign, token_cfg
from lib.idfix import keys  # noqa: F401 (fixture)
from lib.idp import IdP, idp_available
from lib.redis import RedisServer, entries_to_dicts
from lib.util import free_port, run, safe_env, wait_for

pytestmark = pytest.mark.skipif(idp_available() is not None,
                                reason=idp_available() or "")

STREAM = "portcullis:audit"
CODE_RE = re.compile(r"open (\S+) and enter the code (\S+)")
NOT_FOUND = "credentials not found in native keychain"

POLICY = {"rules": [
    {"id": "dev-pull", "effect": "allow", "repositories": ["team/**"],
     "subjects": ["group:corp:dev"], "actions": ["pull"]},
    {"id": "ops-pull", "effect": "allow", "repositories": ["ops/**"],
     "subjects": ["group:corp:ops"], "actions": ["pull"]},
]}


def session():
    s = requests.Session()
    s.trust_env = False
    return s


def records(rs):
    with rs.client() as c:
        return [d for _, d in entries_to_dicts(
            c.call("XRANGE", STREAM, "-", "+"))]


class Env:
    pass


def gw_config(e, recheck=None):
    sso = {"issuer": "corp", "client_id": "gateway",
           "client_secret_file": e.secret_file, "cli_client_id": "cli"}
    if recheck is not None:
        sso["recheck_interval"] = recheck
    return gateway_config(
        upstream(e.reg, default=True),
        listen={"address": "127.0.0.1:%d" % e.port},
        external_url="http://127.0.0.1:%d" % e.port,
        policy=POLICY,
        redis={"address": e.rs.host},
        audit={"redis": e.rs.host, "stream": STREAM,
               "spool_file": os.path.join(e.dir, "spool"), "timeout": 2},
        identity={
            "token": token_cfg(e.keys),
            "issuers": [{"name": "corp", "issuer": e.idp.issuer,
                         "ca_file": e.idp.ca,
                         "audiences": ["gateway", "cli"],
                         "groups_claim": "groups", "prefix": "corp:",
                         "algorithms": ["RS256", "ES256"]}],
            "sso": sso})


@pytest.fixture(scope="module")
def env(tmp_path_factory, start_registry_module, start_gateway_module,
        keys, single_image):
    e = Env()
    e.dir = str(tmp_path_factory.mktemp("login"))
    e.keys = keys
    e.stop = []
    try:
        e.rs = RedisServer(os.path.join(e.dir, "redis"))
        e.stop.append(e.rs)
        e.idp = IdP(os.path.join(e.dir, "idp"))
        e.stop.append(e.idp)
        e.idp.set_state(accounts={"alice": {
            "email": "alice@example.test", "name": "Alice",
            "groups": ["dev"]}}, login="alice")
        e.reg = start_registry_module("up1")
        sk = Skopeo(os.path.join(e.dir, "seed"))
        for repo in ("team/img:v1", "ops/img:v1"):
            sk("copy", "-q", "--dest-tls-verify=false", single_image.ref,
               "docker://%s/%s" % (e.reg.host, repo))
        e.secret_file = os.path.join(e.dir, "client.secret")
        with open(e.secret_file, "w") as f:
            f.write("gateway-test-secret\n")
        os.chmod(e.secret_file, 0o600)
        e.port = free_port()
        e.gw = start_gateway_module(gw_config(e))
        wait_for(lambda: "oidc keys_loaded issuer=corp" in
                 e.gw.log_text(), timeout=30, what="the issuer's keys")
        # A CA bundle for the CLI: the provider's (the gateway is http).
        e.ca = e.idp.ca
        e.bindir = os.path.join(e.dir, "bin")
        os.makedirs(e.bindir)
        os.symlink(os.path.abspath(gateway_bin()),
                   os.path.join(e.bindir, "docker-credential-portcullis"))
        yield e
    finally:
        for s in reversed(e.stop):
            s.stop()


def cli_env(home):
    """An isolated HOME for the CLI and the helper."""
    os.makedirs(home, exist_ok=True)
    env = safe_env({"HOME": home,
                    "XDG_CONFIG_HOME": os.path.join(home, ".config"),
                    "XDG_RUNTIME_DIR": os.path.join(home, "run")})
    env.pop("DOCKER_CONFIG", None)
    env.pop("REGISTRY_AUTH_FILE", None)
    return env


def login(e, home, *opts, approve=True):
    """Run `portcullis login` in the background, read its output line by
    line, approve the code at the provider as the scripted user; returns
    (exit code, stdout, stderr, the line with the code)."""
    p = subprocess.Popen(
        [gateway_bin(), "login", "--ca-file", e.ca] + list(opts) +
        ["http://127.0.0.1:%d" % e.port],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=cli_env(home), stdin=subprocess.DEVNULL,
        start_new_session=True)
    lines = queue.Queue()

    def reader():
        for ln in p.stdout:
            lines.put(ln)
        lines.put(None)
    t = threading.Thread(target=reader, daemon=True)
    t.start()
    out = []
    try:
        first = None
        deadline = time.monotonic() + 60
        while first is None and time.monotonic() < deadline:
            ln = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            if ln is None:
                break
            out.append(ln)
            m = CODE_RE.search(ln)
            if m:
                first = m
        assert first is not None, "no code printed: %r %s" % (
            out, p.stderr.read() if p.poll() is not None else "")
        if approve:
            e.idp.device_approve(first.group(2))
        rc = p.wait(timeout=120)
        t.join(timeout=10)
        while True:
            ln = lines.get_nowait() if not lines.empty() else None
            if ln is None:
                break
            out.append(ln)
        return rc, "".join(out), p.stderr.read(), first.group(0)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=10)


def helper(e, home, verb, stdin=None, tty=False):
    return subprocess.run(
        [os.path.join(e.bindir, "docker-credential-portcullis"), verb],
        input=stdin if stdin is not None else "", capture_output=True,
        text=True, env=cli_env(home), timeout=120,
        start_new_session=not tty)


def store_path(home):
    return os.path.join(home, ".config", "portcullis", "credentials.json")


def refresh(e, rt, scope):
    return session().post(e.gw.url + "/token", data={
        "grant_type": "refresh_token", "refresh_token": rt,
        "service": SERVICE, "client_id": "test", "scope": scope},
        timeout=30)


@pytest.fixture(scope="module")
def signed_in(env, tmp_path_factory):
    """One `portcullis login` for the module's client tests."""
    home = str(tmp_path_factory.mktemp("home-a"))
    ddir = os.path.join(home, "dockercfg")
    afile = os.path.join(home, "auth.json")
    rc, out, err, line = login(env, home, "--docker-config", ddir,
                               "--authfile", afile)
    assert rc == 0, (out, err)
    return {"home": home, "docker": ddir, "authfile": afile, "out": out,
            "line": line}


# ---------------------------------------------------------------------------

def test_discovery_document(env):
    r = session().get(env.gw.url + "/.well-known/portcullis", timeout=15)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/json")
    d = r.json()
    assert d["token_endpoint"] == env.gw.url + "/token"
    assert d["service"] == SERVICE
    disc = env.idp.discovery()
    dev = d["device"]
    assert dev["issuer"] == env.idp.issuer
    assert dev["client_id"] == "cli"
    assert dev["device_authorization_endpoint"] == \
        disc["device_authorization_endpoint"]
    assert dev["token_endpoint"] == disc["token_endpoint"]
    assert "offline_access" in dev["scope"].split()
    r = session().post(env.gw.url + "/.well-known/portcullis", timeout=15)
    assert r.status_code == 405


def test_login_writes_auth_files_and_clients_pull(env, signed_in, podman,
                                                  start_dockerd):
    s = signed_in
    assert "To sign in to 127.0.0.1:%d" % env.port in s["out"]
    assert env.idp.issuer + "/device" in s["line"]
    host = "127.0.0.1:%d" % env.port
    for path in (os.path.join(s["docker"], "config.json"), s["authfile"],
                 store_path(s["home"])):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    with open(os.path.join(s["docker"], "config.json")) as f:
        entry = json.load(f)["auths"][host]
    rt = entry["identitytoken"]
    c = claims(rt)
    assert c["token_use"] == "refresh" and c["sub"] == "corp:alice"
    assert c["idp_link"] is True and c["groups"] == ["corp:dev"]
    with open(s["authfile"]) as f:
        assert json.load(f)["auths"][host]["identitytoken"] == rt
    with open(store_path(s["home"])) as f:
        st = json.load(f)["registries"][host]
    assert st["refresh_token"] == rt
    assert st["token_endpoint"] == env.gw.url + "/token"
    # Neither provider nor gateway token in the gateway's log.
    assert rt not in env.gw.log_text()

    sk = Skopeo(os.path.join(s["home"], "skopeo"))
    r = sk("inspect", "--tls-verify=false", "--authfile", s["authfile"],
           "docker://%s/team/img:v1" % host)
    assert json.loads(r.stdout)["Digest"].startswith("sha256:")
    # The policy decides on the groups: alice (dev) may not pull ops/.
    r = sk("inspect", "--tls-verify=false", "--authfile", s["authfile"],
           "docker://%s/ops/img:v1" % host, check=False)
    assert r.returncode != 0
    podman("pull", "-q", "--tls-verify=false", "--authfile", s["authfile"],
       "%s/team/img:v1" % host)
    if not os.path.exists("/usr/sbin/dockerd"):
        pytest.skip("dockerd is not installed")
    d = start_dockerd()
    shutil.copy(os.path.join(s["docker"], "config.json"),
                os.path.join(d.docker_config, "config.json"))
    n = len(records(env.rs))
    d.docker("pull", "%s/team/img:v1" % host, timeout=300)
    # docker sent the identity token as a refresh grant: re-checked.
    recs = [x for x in records(env.rs)[n:] if x["path"] == "/token"]
    assert any(x["method"] == "POST" and x["status"] == "200" and
               x["subject"] == "corp:alice" for x in recs), recs


def test_credential_helper_verbs(env, tmp_path):
    home = str(tmp_path / "h")
    host = "127.0.0.1:%d" % env.port
    r = helper(env, home, "get", "http://" + host)
    assert r.returncode == 1 and r.stdout.strip() == NOT_FOUND
    r = helper(env, home, "list")
    assert r.returncode == 0 and json.loads(r.stdout) == {}
    r = helper(env, home, "store", json.dumps(
        {"ServerURL": host, "Username": "bob", "Secret": "pcs_x"}))
    assert r.returncode == 0, r.stdout
    assert stat.S_IMODE(os.stat(store_path(home)).st_mode) == 0o600
    r = helper(env, home, "get", host)
    assert r.returncode == 0
    assert json.loads(r.stdout) == {"ServerURL": host, "Username": "bob",
                                    "Secret": "pcs_x"}
    r = helper(env, home, "store", json.dumps(
        {"ServerURL": "https://other.test", "Username": "<token>",
         "Secret": "opaque"}))
    assert r.returncode == 0
    r = helper(env, home, "list")
    assert json.loads(r.stdout) == {host: "bob", "other.test": "<token>"}
    r = helper(env, home, "erase", host)
    assert r.returncode == 0
    r = helper(env, home, "get", host)
    assert r.returncode == 1 and r.stdout.strip() == NOT_FOUND
    r = helper(env, home, "erase", host)
    assert r.returncode == 1 and r.stdout.strip() == NOT_FOUND
    r = helper(env, home, "store", "not json")
    assert r.returncode == 1 and "store: expected" in r.stdout
    r = helper(env, home, "frobnicate")
    assert r.returncode == 1


def test_helper_refreshes_silently_and_fails_clearly(env, signed_in, keys,
                                                     tmp_path):
    home = str(tmp_path / "h")
    os.makedirs(os.path.dirname(store_path(home)))
    shutil.copy(store_path(signed_in["home"]), store_path(home))
    host = "127.0.0.1:%d" % env.port
    with open(store_path(home)) as f:
        doc = json.load(f)
    e = doc["registries"][host]
    rt = e["refresh_token"]
    # Fresh: answered from the store, no request to the gateway.
    n = len(records(env.rs))
    r = helper(env, home, "get", host)
    assert r.returncode == 0, r.stdout
    assert json.loads(r.stdout) == {"ServerURL": host,
                                    "Username": "<token>", "Secret": rt}
    # The access token expired: refreshed silently (a refresh grant,
    # which re-checks alice at the provider), then the same answer.
    e["access_expires"] = 0
    old_at = e["access_token"]
    with open(store_path(home), "w") as f:
        json.dump(doc, f)
    r = helper(env, home, "get", host)
    assert r.returncode == 0, r.stdout
    assert json.loads(r.stdout)["Secret"] == rt
    assert r.stderr == ""
    with open(store_path(home)) as f:
        e2 = json.load(f)["registries"][host]
    assert e2["access_expires"] > time.time()
    assert e2["access_token"] != old_at
    recs = wait_for(lambda: [x for x in records(env.rs)[n:]
                             if x["path"] == "/token" and
                             x["method"] == "POST"],
                    timeout=20, what="the refresh grant's record")
    assert recs[-1]["status"] == "200"
    assert "idp_session rechecked" in env.gw.log_text()
    # An expired refresh token, no terminal: a clear failure on stdout.
    expired = jose_sign(keys["cur"] + ".key", [], aud="refresh:" + SERVICE,
                        ttl=-600)
    e2["refresh_token"] = expired
    e2["access_expires"] = 0
    with open(store_path(home), "w") as f:
        json.dump({"registries": {host: e2}}, f)
    r = helper(env, home, "get", host)
    assert r.returncode == 1
    assert "the sign-in for %s is over" % host in r.stdout
    assert "run: portcullis login %s" % host in r.stdout
    assert expired not in r.stdout


def test_groups_stay_live(env, tmp_path):
    """A second person (bob, in dev): removed from dev at the provider,
    the next refreshed token lacks team/ pull; added to ops, it has ops/;
    disabled, no token (401 idp_refused, audited), and the link is gone
    after."""
    st = env.idp.get_state()
    accounts = st["accounts"]
    accounts["bob"] = {"email": "bob@example.test", "name": "Bob",
                       "groups": ["dev"]}
    env.idp.set_state(accounts=accounts, login="bob")
    try:
        home = str(tmp_path / "bob")
        rc, out, err, _ = login(env, home, "--docker-config",
                                os.path.join(home, "d"), "--authfile",
                                os.path.join(home, "auth.json"))
        assert rc == 0, (out, err)
    finally:
        env.idp.set_state(login="alice")
    with open(store_path(home)) as f:
        rt = json.load(f)["registries"]["127.0.0.1:%d" %
                                         env.port]["refresh_token"]
    assert claims(rt)["sub"] == "corp:bob"
    scope = "repository:team/img:pull repository:ops/img:pull"

    def granted(r):
        assert r.status_code == 200, r.text
        return sorted(a["name"] for a in claims(r.json()["access_token"])[
            "access"] if "pull" in a["actions"])
    assert granted(refresh(env, rt, scope)) == ["team/img"]
    accounts["bob"]["groups"] = ["ops"]
    env.idp.set_state(accounts=accounts)
    r = refresh(env, rt, scope)
    assert granted(r) == ["ops/img"]
    assert claims(r.json()["access_token"])["groups"] == ["corp:ops"]
    # Disabled at the provider: no new token, and the reason audited.
    accounts["bob"]["disabled"] = True
    env.idp.set_state(accounts=accounts)
    n = len(records(env.rs))
    r = refresh(env, rt, scope)
    assert r.status_code == 401
    assert "refused to renew the sign-in" in r.text
    # Records land asynchronously: wait for the refused one itself.
    rec = wait_for(lambda: [x for x in records(env.rs)[n:]
                            if x["path"] == "/token" and
                            x["status"] == "401"],
                   timeout=20, what="the refused refresh's record")
    assert rec[-1].get("auth_failure") == "idp_refused", rec[-1]
    assert rec[-1]["subject"] == "corp:bob", rec[-1]
    # Enabled again: the link stays ended (sign in again).
    del accounts["bob"]["disabled"]
    env.idp.set_state(accounts=accounts)
    r = refresh(env, rt, scope)
    assert r.status_code == 401 and "session is gone" in r.text


def test_exchange_refusals(env):
    s = session()
    # An idp_refresh_token without a valid id_token as the password.
    r = s.post(env.gw.url + "/token", data={
        "grant_type": "password", "password": "x.y.z",
        "idp_refresh_token": "abc", "service": SERVICE}, timeout=15)
    assert r.status_code == 401
    # A live id_token with a provider refresh token that is not live.
    d = env.idp.device_start()
    env.idp.device_approve(d["user_code"])
    t = env.idp.token({"grant_type":
                       "urn:ietf:params:oauth:grant-type:device_code",
                       "device_code": d["device_code"], "client_id": "cli"})
    r = s.post(env.gw.url + "/token", data={
        "grant_type": "password", "password": t["id_token"],
        "idp_refresh_token": "not-a-refresh-token",
        "access_type": "offline", "service": SERVICE}, timeout=15)
    assert r.status_code == 401
    assert "refused to renew the sign-in" in r.text
    # The real pair: a linked refresh token.
    r = s.post(env.gw.url + "/token", data={
        "grant_type": "password", "password": t["id_token"],
        "idp_refresh_token": t["refresh_token"], "service": SERVICE},
        timeout=15)
    assert r.status_code == 200, r.text
    assert claims(r.json()["refresh_token"])["idp_link"] is True
    # Its lifetime is the configured one, not the id_token's minutes.
    c = claims(r.json()["refresh_token"])
    assert c["exp"] - c["iat"] > 3600
    for k in (t["id_token"], t["refresh_token"]):
        assert k not in env.gw.log_text()


def add_person(env, name, groups):
    accounts = env.idp.get_state()["accounts"]
    accounts[name] = {"email": name + "@example.test", "name": name,
                      "groups": groups}
    env.idp.set_state(accounts=accounts)
    return accounts


def login_as(env, home, name, *opts):
    env.idp.set_state(login=name)
    try:
        rc, out, err, _ = login(env, home, "--docker-config",
                                os.path.join(home, "d"), "--authfile",
                                os.path.join(home, "auth.json"), *opts)
        assert rc == 0, (out, err)
    finally:
        env.idp.set_state(login="alice")
    with open(store_path(home)) as f:
        return json.load(f)["registries"]["127.0.0.1:%d" % env.port]


def reload(env, cfg):
    g = env.gw
    k = g.log_text().count("server reload done")
    with open(g.config_path, "w") as f:
        json.dump(cfg, f)
    os.kill(g.pid, signal.SIGHUP)
    wait_for(lambda: g.log_text().count("server reload done") > k,
             what="the reload to be done")


def test_recheck_interval_bounds_the_skip(env, tmp_path):
    """sso.recheck_interval: within it a refresh takes the last check's
    groups (no request to the provider); at 0 (the default) every
    refresh asks, so the removal shows at once."""
    accounts = add_person(env, "carol", ["dev"])
    rt = login_as(env, str(tmp_path / "carol"), "carol")["refresh_token"]
    scope = "repository:team/img:pull"
    reload(env, gw_config(env, recheck=3600))
    try:
        accounts["carol"]["groups"] = []
        env.idp.set_state(accounts=accounts)
        k = env.gw.log_text().count("idp_session rechecked")
        r = refresh(env, rt, scope)
        assert r.status_code == 200
        assert claims(r.json()["access_token"])["groups"] == ["corp:dev"]
        assert len(claims(r.json()["access_token"])["access"]) == 1
        assert env.gw.log_text().count("idp_session rechecked") == k
    finally:
        reload(env, gw_config(env))
    r = refresh(env, rt, scope)
    assert r.status_code == 200
    assert claims(r.json()["access_token"])["groups"] == []
    assert claims(r.json()["access_token"])["access"] == []


def test_login_helper_mode_serves_skopeo(env, tmp_path):
    """portcullis login --helper: the auth file names the helper
    (credHelpers), the token lives only in the helper's store, and
    skopeo pulls through docker-credential-portcullis."""
    home = str(tmp_path / "hh")
    afile = os.path.join(home, "auth.json")
    login_as(env, home, "alice", "--helper")
    host = "127.0.0.1:%d" % env.port
    with open(afile) as f:
        doc = json.load(f)
    assert doc["credHelpers"] == {host: "portcullis"}
    assert host not in doc.get("auths", {})
    with open(os.path.join(home, "d", "config.json")) as f:
        assert json.load(f)["credHelpers"] == {host: "portcullis"}
    sk = Skopeo(os.path.join(home, "sk"))
    cenv = sk.cenv.env()
    cenv.update(cli_env(home))
    cenv["PATH"] = env.bindir + ":" + cenv.get("PATH", "/usr/bin:/bin")
    r = run([shutil.which("skopeo"), "--policy", sk.cenv.policy,
             "inspect", "--tls-verify=false", "--authfile", afile,
             "docker://%s/team/img:v1" % host], env=cenv, timeout=120)
    assert json.loads(r.stdout)["Digest"].startswith("sha256:")


def test_record_is_sealed_and_a_check_in_flight_lets_groups_stand(
        env, tmp_path):
    """The Redis record names no subject, group or token in the clear;
    while a check holds the lock, a refresh takes the last check's
    groups instead of replaying the provider's refresh token."""
    accounts = add_person(env, "dave", ["dev"])
    rt = login_as(env, str(tmp_path / "dave"), "dave")["refresh_token"]
    jti = claims(rt)["jti"]
    key = "portcullis:sso:idp:" + hashlib.sha256(
        b"portcullis idp record id\0" + jti.encode()).hexdigest()
    with env.rs.client() as c:
        val = c.call("GET", key)
        assert val is not None
        assert b"dave" not in val and b"corp:" not in val
        assert 0 < c.call("PTTL", key) <= 604800 * 1000
        assert c.call("SET", key + ":lock", "1", "PX", "60000") == b"OK"
    scope = "repository:team/img:pull"
    accounts["dave"]["groups"] = []
    env.idp.set_state(accounts=accounts)
    k = env.gw.log_text().count("idp_session rechecked")
    r = refresh(env, rt, scope)
    assert r.status_code == 200
    assert claims(r.json()["access_token"])["groups"] == ["corp:dev"]
    assert "idp_session recheck_in_flight" in env.gw.log_text()
    assert env.gw.log_text().count("idp_session rechecked") == k
    with env.rs.client() as c:
        c.call("DEL", key + ":lock")
    r = refresh(env, rt, scope)
    assert r.status_code == 200
    assert claims(r.json()["access_token"])["groups"] == []
    with env.rs.client() as c:
        assert c.call("EXISTS", key + ":lock") == 0


def test_helper_signs_in_again_on_a_terminal(env, signed_in, keys,
                                             tmp_path):
    """The refresh token refused and a terminal attached (a pty as the
    helper's controlling terminal): get runs the device flow there, the
    scripted user approves, and get answers the new refresh token."""
    home = str(tmp_path / "t")
    os.makedirs(os.path.dirname(store_path(home)))
    host = "127.0.0.1:%d" % env.port
    with open(store_path(signed_in["home"])) as f:
        e = json.load(f)["registries"][host]
    e["refresh_token"] = jose_sign(keys["cur"] + ".key", [],
                                   aud="refresh:" + SERVICE, ttl=-600)
    e["access_expires"] = 0
    with open(store_path(home), "w") as f:
        json.dump({"registries": {host: e}}, f)
    master, slave = os.openpty()

    def ctty():
        os.setsid()
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    p = subprocess.Popen(
        [os.path.join(env.bindir, "docker-credential-portcullis"), "get"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=cli_env(home),
        preexec_fn=ctty, pass_fds=(slave,))
    os.close(slave)
    try:
        p.stdin.write(host + "\n")
        p.stdin.close()
        p.stdin = None          # communicate() below has nothing to send
        seen = b""
        deadline = time.monotonic() + 60
        m = None
        while m is None and time.monotonic() < deadline:
            r, _, _ = select.select([master], [], [], 1)
            if r:
                try:
                    chunk = os.read(master, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                seen += chunk
                m = CODE_RE.search(seen.decode("utf-8", "replace"))
        assert m is not None, seen
        assert b"the sign-in for %s expired" % host.encode() in seen
        env.idp.device_approve(m.group(2))
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=10)
        os.close(master)
    assert p.returncode == 0, (out, err)
    ans = json.loads(out)
    assert ans["Username"] == "<token>"
    assert claims(ans["Secret"])["idp_link"] is True
    assert claims(ans["Secret"])["sub"] == "corp:alice"
    with open(store_path(home)) as f:
        assert json.load(f)["registries"][host]["refresh_token"] == \
            ans["Secret"]


def test_refused_id_token_keeps_the_rotated_refresh_token(env, tmp_path):
    """The provider rotates the CLI client's refresh token at each
    renewal and ends the session when a spent one comes back: a renewal
    whose id_token the gateway refuses (here: the issuer's audiences no
    longer name the CLI client) still keeps the new refresh token, so
    the sign-in works again once the configuration is fixed."""
    add_person(env, "erin", ["dev"])
    rt = login_as(env, str(tmp_path / "erin"), "erin")["refresh_token"]
    scope = "repository:team/img:pull"
    cfg = gw_config(env)
    cfg["identity"]["issuers"][0]["audiences"] = ["gateway"]
    reload(env, cfg)
    try:
        r = refresh(env, rt, scope)
        assert r.status_code == 401, r.text
        assert "id_token was refused" in r.text
    finally:
        reload(env, gw_config(env))
    r = refresh(env, rt, scope)
    assert r.status_code == 200, r.text
    assert claims(r.json()["access_token"])["groups"] == ["corp:dev"]


def _record_crypto(jti):
    h = hashlib.sha256(b"portcullis idp record id\0" + jti.encode())
    key = "portcullis:sso:idp:" + h.hexdigest()
    ek = hashlib.sha256(b"portcullis idp record key\0" +
                        jti.encode()).digest()
    return key, ek


def _reseal(env, key, ek, change):
    import base64
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    with env.rs.client() as c:
        val = c.call("GET", key)
        pttl = c.call("PTTL", key)
    raw = base64.urlsafe_b64decode(val + b"=" * (-len(val) % 4))
    rec = json.loads(AESGCM(ek).decrypt(raw[:12], raw[12:], key.encode()))
    change(rec)
    nonce = os.urandom(12)
    sealed = base64.urlsafe_b64encode(nonce + AESGCM(ek).encrypt(
        nonce, json.dumps(rec).encode(), key.encode())).rstrip(b"=")
    with env.rs.client() as c:
        assert c.call("SET", key, sealed, "PX", str(pttl)) == b"OK"
    return rec


def test_a_check_in_flight_does_not_let_old_groups_stand(env, tmp_path):
    """review: the lock's stand-in took the last check's groups however
    old that check was.  A client keeping one refresh in flight (or a
    provider that hangs) would let every other refresh carry groups the
    provider removed long ago, past sso.recheck_interval plus an access
    token's life.  With the last check older than recheck_interval plus
    the lock's 30 s, a refresh that finds the lock held waits for the
    check in flight and takes its groups; a check that never ends makes
    it a 503 once the lock's life is over."""
    accounts = add_person(env, "fay", ["dev"])
    rt = login_as(env, str(tmp_path / "fay"), "fay")["refresh_token"]
    key, ek = _record_crypto(claims(rt)["jti"])
    hour_ago = int(time.time() * 1000) - 3600 * 1000

    def age(rec):
        rec["checked"] = hour_ago
    # The last check an hour ago (as a lock held again and again makes
    # it), re-sealed as the gateway would; a check holds the lock.
    assert _reseal(env, key, ek, age)["groups"] == ["corp:dev"]
    with env.rs.client() as c:
        assert c.call("SET", key + ":lock", "1", "PX", "120000") == b"OK"
    accounts["fay"]["groups"] = []
    env.idp.set_state(accounts=accounts)
    scope = "repository:team/img:pull"
    k = env.gw.log_text().count("idp_session recheck_wait ")
    res = {}
    t = threading.Thread(target=lambda: res.update(r=refresh(env, rt,
                                                              scope)))
    t.start()
    try:
        wait_for(lambda: env.gw.log_text().count(
            "idp_session recheck_wait ") > k or
            env.gw.log_text().count("idp_session recheck_wait\n") > k,
            timeout=20, what="the refresh to wait for the check")
        assert "r" not in res

        def checked_now(rec):
            rec["checked"] = int(time.time() * 1000)
            rec["groups"] = []
        # The check in flight ends: its groups, then the lock goes.
        _reseal(env, key, ek, checked_now)
        with env.rs.client() as c:
            c.call("DEL", key + ":lock")
    finally:
        t.join(timeout=60)
    assert res["r"].status_code == 200, res["r"].text
    assert claims(res["r"].json()["access_token"])["groups"] == []
    # A check that never ends (its lock held, its record unchanged).
    _reseal(env, key, ek, age)
    with env.rs.client() as c:
        assert c.call("SET", key + ":lock", "1", "PX", "120000") == b"OK"
    r = refresh(env, rt, scope)
    assert r.status_code == 503, (r.status_code, r.text)
    assert "under way" in r.text
    with env.rs.client() as c:
        c.call("DEL", key + ":lock")
    r = refresh(env, rt, scope)
    assert r.status_code == 200, r.text
    assert claims(r.json()["access_token"])["groups"] == []


def _device_tokens(env, who):
    env.idp.set_state(login=who)
    try:
        d = env.idp.device_start()
        env.idp.device_approve(d["user_code"])
        return env.idp.token({
            "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
            "device_code": d["device_code"], "client_id": "cli"})
    finally:
        env.idp.set_state(login="alice")


def test_exchange_needs_one_live_session_of_one_subject(env):
    """review (sound): an id_token of one person with the provider
    refresh token of another is refused; an exchanged pair cannot be
    replayed (the provider rotated its refresh token, and oidc-provider
    ends the grant on the replay, so the linked token ends too); `token
    revoke --subject` ends a linked refresh token."""
    add_person(env, "gus", ["dev"])
    add_person(env, "hal", ["ops"])
    g, h = _device_tokens(env, "gus"), _device_tokens(env, "hal")
    s = session()

    def exchange(idt, prt):
        return s.post(env.gw.url + "/token", data={
            "grant_type": "password", "password": idt,
            "idp_refresh_token": prt, "service": SERVICE}, timeout=15)
    r = exchange(g["id_token"], h["refresh_token"])
    assert r.status_code == 401, r.text
    assert "another subject" in r.text
    r = exchange(g["id_token"], g["refresh_token"])
    assert r.status_code == 200, r.text
    rt = r.json()["refresh_token"]
    assert claims(rt)["sub"] == "corp:gus"
    r = exchange(g["id_token"], g["refresh_token"])
    assert r.status_code == 401, r.text
    scope = "repository:team/img:pull"
    # The provider took the replay of its spent refresh token as theft
    # and ended the grant: the linked token ends with it.
    r = refresh(env, rt, scope)
    assert r.status_code == 401 and "refused to renew" in r.text, r.text
    g = _device_tokens(env, "gus")
    r = exchange(g["id_token"], g["refresh_token"])
    assert r.status_code == 200, r.text
    rt = r.json()["refresh_token"]
    assert refresh(env, rt, scope).status_code == 200
    out = run([gateway_bin(), "token", "revoke", "-c", env.gw.config_path,
               "--subject", "corp:gus"], timeout=60)
    assert "revoked" in out.stdout + out.stderr, out.stdout + out.stderr
    wait_for(lambda: refresh(env, rt, scope).status_code == 401,
             timeout=10, what="the revocation to reach the gateway")
