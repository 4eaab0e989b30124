"""The quick start (README's first command, contrib/quickstart.sh) with its
demo identity provider (issue 10, acceptance 5): the script itself runs
on free loopback ports from this tree (QUICKSTART_SKIP_BUILD=1: no
install, no build; everything else as a newcomer gets it: its Redis, its
demo upstream seeded with demo/hello and team/app, the demo IdP —
tests/integration/idp/provider.mjs with --demo-password — and the
gateway from conf/quickstart.json.in), then:

- an anonymous caller pulls nothing (GET /v2/ challenges it, so clients
  send the login they hold: the README explains why a registry that
  lets anonymous callers pull anything never asks them for one);
- headless Chromium (browser/signin.mjs) signs in at the demo IdP's form
  as the demo user with the password the script printed (a wrong one
  first: refused), sees its group and team/**, and creates a secret;
- skopeo logs in with that secret as the page prints it and pulls
  demo/hello and team/app; `portcullis audit query` (as the script
  suggests) shows the pull as demo:demo;
- every server it started listens on 127.0.0.1 only, and SIGTERM to the
  script (Ctrl-C) leaves none of them running.

Real parts only: the script, redis-server, docker-registry, skopeo,
oidc-provider on node, Debian's chromium with playwright-core."""

import base64
import html
import json
import os
import re
import shutil
import subprocess
from urllib.parse import urljoin

import pytest
import requests

from lib.clients import Skopeo
from lib.gateway import REPO_ROOT
from lib.idp import idp_available
from lib.util import ManagedProcess, free_port, port_open, run, safe_env, \
    wait_for

BROWSER_DIR = os.path.join(REPO_ROOT, "tests", "integration", "browser")
SECRET_RE = re.compile(r"pcs_[0-9a-f]{16}_[A-Za-z0-9_-]{43}")


def _why_not():
    if idp_available() is not None:
        return idp_available()
    if not os.path.exists("/usr/bin/chromium"):
        return "chromium is not installed"
    if not os.path.isdir(os.path.join(BROWSER_DIR, "node_modules",
                                      "playwright-core")):
        return "playwright-core is not installed (contrib/install-deps.sh)"
    return None


pytestmark = pytest.mark.skipif(_why_not() is not None,
                                reason=_why_not() or "")


def listening_addresses(port):
    """The local addresses of the TCP sockets listening on port."""
    found = []
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(name) as f:
            for line in f.readlines()[1:]:
                local, st = line.split()[1], line.split()[3]
                addr, p = local.rsplit(":", 1)
                if st == "0A" and int(p, 16) == port:
                    found.append(addr)
    return found


@pytest.fixture
def quickstart(tmp_path):
    ports = {k: free_port() for k in ("GATEWAY_PORT", "UPSTREAM_PORT",
                                      "REDIS_PORT", "IDP_PORT")}
    state = tmp_path / "state"
    env = safe_env(dict({k: str(v) for k, v in ports.items()},
                        STATE=str(state), QUICKSTART_SKIP_BUILD="1"))
    p = ManagedProcess(["sh", os.path.join(REPO_ROOT, "contrib",
                                           "quickstart.sh")],
                       tmp_path / "quickstart.out", env=env, cwd=REPO_ROOT,
                       name="quickstart.sh")
    p.ports = ports
    p.state = state
    p.url = "http://127.0.0.1:%d" % ports["GATEWAY_PORT"]
    p.host = "127.0.0.1:%d" % ports["GATEWAY_PORT"]
    p.out = lambda: open(p.stdout_path).read()
    try:
        p.wait_ready(lambda: "oidc keys_loaded issuer=demo" in p.out() and
                     port_open(ports["GATEWAY_PORT"]), timeout=120,
                     what="the quick start's gateway with the demo IdP's "
                     "keys")
        yield p
    finally:
        p.stop(timeout=30)
    # Ctrl-C (SIGTERM here) stopped everything the script started.
    for name, port in ports.items():
        wait_for(lambda pt=port: not port_open(pt), timeout=30,
                 what="%s %d closed after the script stopped" % (name, port))


def test_quickstart_demo_idp_sign_in_secret_pull(quickstart, tmp_path):
    q = quickstart
    out = q.out()
    # Loopback only, every server the script started.
    for name, port in q.ports.items():
        addrs = listening_addresses(port)
        assert addrs and all(a == "0100007F" for a in addrs), (name, addrs)
    # The password printed is the demo IdP's, random, in a private file.
    m = re.search(r"user: demo +password: (\S+)", out)
    assert m, out
    pw_file = q.state / "demo-password"
    assert pw_file.read_text().strip() == m.group(1)
    assert len(m.group(1)) >= 16
    assert os.stat(q.state).st_mode & 0o077 == 0
    for f in ("demo-password", "idp-client.secret", "idp-jwks.json",
              "token.key"):
        assert os.stat(q.state / f).st_mode & 0o077 == 0, f
    assert "%s/" % q.url in out
    assert "portcullis login http://127.0.0.1:%d" % q.ports["GATEWAY_PORT"] \
        in out

    sk = Skopeo(tmp_path / "skopeo")
    # Anonymous: nothing.
    for repo in ("demo/hello", "team/app"):
        r = sk("inspect", "--raw", "--tls-verify=false",
               "docker://%s/%s:latest" % (q.host, repo), check=False)
        assert r.returncode != 0 and "unauthorized" in r.stderr.lower(), \
            r.stderr

    # A person's browser: the gateway's Sign in, the demo IdP's form.
    shot = tmp_path / "quickstart-landing.png"
    r = subprocess.run(["node", os.path.join(BROWSER_DIR, "signin.mjs"),
                        "--gateway", q.url, "--screenshot", str(shot),
                        "--user", "demo", "--password-file", str(pw_file),
                        "--secret-name", "quickstart"],
                       capture_output=True, text=True, timeout=180,
                       cwd=BROWSER_DIR, env=safe_env())
    assert r.returncode == 0, r.stderr
    who = json.loads(r.stdout.strip().splitlines()[-1])
    print("screenshots: %s and %s" % (shot, str(shot).replace(
        ".png", "-idp.png")))
    assert shot.stat().st_size > 10000
    assert (tmp_path / "quickstart-landing-idp.png").stat().st_size > 1000
    assert who["subject"] == "demo:demo"
    assert who["name"] == "Demo User"
    assert who["groups"] == ["demo:developers"]
    assert "team/**" in who["pull"] and "team/**" in who["push"]
    assert who["cspViolations"] == []
    secret = who["secret"]
    assert SECRET_RE.fullmatch(secret)
    m = re.search(r"skopeo login --username '([^']+)' (\S+)",
                  who["loginLines"])
    assert m and m.group(2) == q.host, who["loginLines"]

    # The secret as the page prints it: skopeo logs in, pulls both.
    assert "skopeo login --tls-verify=false --username %s %s" % (
        m.group(1), q.host) in out
    sk("login", "--tls-verify=false", "-u", m.group(1), "-p", secret,
       q.host)
    sk("inspect", "--raw", "--tls-verify=false",
       "docker://%s/demo/hello:latest" % q.host)
    sk("copy", "-q", "--src-tls-verify=false",
       "docker://%s/team/app:latest" % q.host,
       "oci:%s:x" % (tmp_path / "pulled"))
    assert (tmp_path / "pulled" / "index.json").exists()
    # Who pulled what, as the script tells the newcomer to look.
    config = str(q.state / "portcullis.json")
    assert "-c %s" % config in out

    def pulled_as_demo():
        a = run([os.path.join(REPO_ROOT, "portcullis"), "audit", "query",
                 "-c", config, "--subject", "demo:demo", "--format",
                 "json"], timeout=60)
        recs = [json.loads(ln) for ln in a.stdout.splitlines()
                if ln.startswith("{")]
        recs = [x for d in recs for x in d.get("records", [d])]
        return [d for d in recs if d.get("repository") == "team/app" and
                d.get("action") == "pull" and d.get("status") in
                (200, "200")]
    wait_for(pulled_as_demo, timeout=30, what="the pull as demo:demo in "
             "`portcullis audit query`")
    assert secret not in q.out()
    assert m.group(1) != "" and ":" not in m.group(1)


def test_quickstart_without_node_runs_without_sign_in(tmp_path):
    """A machine without node 20: the demo IdP is left out, the rest of
    the quick start runs (the configuration without issuers and sign-in
    passes check-config), and the secret the script says to make pulls
    demo/hello and team/app."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    # A PATH where node is missing: links to what the script runs.
    for tool in ("sh", "redis-server", "docker-registry", "skopeo", "curl",
                 "sed", "cat", "mkdir", "chmod", "rm", "sleep", "dirname",
                 "kill", "nproc"):
        path = shutil.which(tool)
        if path:
            os.symlink(path, bindir / tool)
    ports = {k: free_port() for k in ("GATEWAY_PORT", "UPSTREAM_PORT",
                                      "REDIS_PORT", "IDP_PORT")}
    env = safe_env(dict({k: str(v) for k, v in ports.items()},
                        STATE=str(tmp_path / "state"),
                        QUICKSTART_SKIP_BUILD="1", PATH=str(bindir)))
    p = ManagedProcess([str(bindir / "sh"), os.path.join(
        REPO_ROOT, "contrib", "quickstart.sh")], tmp_path / "out", env=env,
        cwd=REPO_ROOT, name="quickstart.sh")
    try:
        p.wait_ready(lambda: port_open(ports["GATEWAY_PORT"]), timeout=120,
                     what="the quick start's gateway")
        text = open(p.stdout_path).read()
        assert "demo identity provider is left out" in text
        assert "password:" not in text
        assert not port_open(ports["IDP_PORT"])
        cfg = json.load(open(tmp_path / "state" / "portcullis.json"))
        assert "issuers" not in cfg["identity"] and \
            "sso" not in cfg["identity"]
        m = re.search(r"\n    \./portcullis (secret create .*)\n", text)
        assert m, text
        out = run([os.path.join(REPO_ROOT, "portcullis")] +
                  m.group(1).split(), timeout=60).stdout
        secret = out.splitlines()[0]
        assert SECRET_RE.fullmatch(secret), out
        m = re.search(r"skopeo login --tls-verify=false --username (\S+) "
                      r"(\S+)\n", text)
        assert m and m.group(2) == "127.0.0.1:%d" % ports["GATEWAY_PORT"]
        sk = Skopeo(tmp_path / "skopeo")
        sk("login", "--tls-verify=false", "-u", m.group(1), "-p", secret,
           m.group(2))
        for repo in ("demo/hello", "team/app"):
            sk("inspect", "--raw", "--tls-verify=false",
               "docker://%s/%s:latest" % (m.group(2), repo))
    finally:
        p.stop(timeout=30)
    for port in ports.values():
        wait_for(lambda pt=port: not port_open(pt), timeout=30,
                 what="port %d closed" % port)


def test_quickstart_demo_idp_device_flow(quickstart):
    """What `portcullis login` meets at the quick start's demo IdP: the
    device grant for the public client "cli" (which the gateway's demo
    issuer accepts as an audience), the person's step through the
    sign-in form (a wrong password refused), and the tokens with the
    demo user's group.  A person's browser is played by requests."""
    q = quickstart
    idp = "http://127.0.0.1:%d" % q.ports["IDP_PORT"]
    pw = (q.state / "demo-password").read_text().strip()
    s = requests.Session()
    s.trust_env = False
    disc = s.get(idp + "/.well-known/openid-configuration",
                 timeout=10).json()
    d = s.post(disc["device_authorization_endpoint"], data={
        "client_id": "cli", "scope": "openid offline_access groups"},
        timeout=10).json()
    assert re.fullmatch(r"[A-Z]{4}-[A-Z]{4}", d["user_code"]), d
    poll = {"grant_type": "urn:ietf:params:oauth:grant-type:device_code",
            "device_code": d["device_code"], "client_id": "cli"}
    r = s.post(disc["token_endpoint"], data=poll, timeout=10)
    assert r.json()["error"] == "authorization_pending"

    def hidden(page):
        return {html.unescape(m.group(1)): html.unescape(m.group(2))
                for m in re.finditer(r'<input type="hidden" name="([^"]+)" '
                                     r'value="([^"]*)"', page)}
    # The code form, then its confirmation.
    f = hidden(s.get(idp + "/device", timeout=10).text)
    f["user_code"] = d["user_code"]
    r = s.post(idp + "/device", data=f, allow_redirects=False, timeout=10)
    if r.status_code == 200:
        r = s.post(idp + "/device", data=hidden(r.text),
                   allow_redirects=False, timeout=10)
    assert r.status_code in (302, 303), r.text[:500]
    r = s.get(urljoin(idp, r.headers["Location"]), timeout=10)
    # The demo IdP's sign-in form, not a test's auto-login.
    m = re.search(r'<form method="post" action="([^"]+)"', r.text)
    assert m and 'name="password"' in r.text, r.text[:500]
    action = urljoin(idp, html.unescape(m.group(1)))
    bad = s.post(action, data={"username": "demo", "password": pw + "x"},
                 timeout=10)
    assert bad.status_code == 401 and 'id="error"' in bad.text
    r = s.post(action, data={"username": "demo", "password": pw},
               timeout=10)
    assert r.status_code == 200 and "Sign-in Success" in r.text, \
        r.text[:500]
    t = s.post(disc["token_endpoint"], data=poll, timeout=10).json()
    assert "refresh_token" in t and "id_token" in t, t
    p = t["id_token"].split(".")[1]
    c = json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
    assert c["sub"] == "demo" and c["aud"] == "cli"
    assert c["groups"] == ["developers"]
    cfg = json.load(open(q.state / "portcullis.json"))
    (iss,) = cfg["identity"]["issuers"]
    assert iss["issuer"] == c["iss"] and "cli" in iss["audiences"]
    # No test back door in demo mode, and no client whose secret is in
    # the repository.
    assert s.get(idp + "/test/state", timeout=10).status_code == 404
    r = s.post(disc["token_endpoint"], data={
        "grant_type": "client_credentials", "scope": "pull"},
        auth=("ci", "ci-test-secret"), timeout=10)
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
