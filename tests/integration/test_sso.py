"""Sign-in for people in a browser (issue 10, first part): /login,
/oauth2/callback, the landing page at /, secrets made there, /logout.

Real parts: the npm oidc-provider (lib/idp.py, its interaction handler
signs the test user in), redis-server (states and sessions, shared by two
gateways), docker-registry behind the gateway, skopeo, and Debian's
chromium driven by npm playwright-core (browser/signin.mjs) for the
acceptance run, which saves a screenshot of the landing page in the
test's tmp_path.  Requests without a browser follow the same redirects
with python-requests (cookies kept per host, as a browser does).

One test double, named as such: lib/hostile_idp.py as a misbehaving
provider whose token endpoint answers with an id_token for another
audience (a real provider will not mint one on demand).

Security cases, each a test: forged state, replayed callback and replayed
code, wrong nonce, another audience, an expired session, a form without or
with a wrong CSRF token, a callback finished on a second instance, HTML
injection through claim values; the provider's error=access_denied; the
bounds (state, code, cookie, token answer, id_token, form)."""

import base64
import json
import os
import re
import shutil
import subprocess
import time
from urllib.parse import parse_qs, urljoin, urlparse

import pytest
import requests

from lib.clients import Skopeo
from lib.gateway import Gateway, gateway_config, upstream
from lib.hostile_idp import HostileIdP
from lib.idp import IdP, idp_available
from lib.redis import RedisServer, entries_to_dicts
from lib.util import free_port, wait_for

STREAM = "portcullis:audit"
CLIENT_SECRET = "gateway-test-secret"
BROWSER_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                           "browser")
SECRET_RE = re.compile(r"pcs_[0-9a-f]{16}_[A-Za-z0-9_-]{43}")

pytestmark = pytest.mark.skipif(idp_available() is not None,
                                reason=idp_available() or "")

POLICY = {"rules": [
    {"id": "dev-pull", "effect": "allow", "repositories": ["team/**"],
     "subjects": ["group:corp:dev"], "actions": ["pull"]},
    {"id": "dev-push", "effect": "allow", "repositories": ["team/dev/*"],
     "subjects": ["group:corp:dev"], "actions": ["push"]},
    {"id": "ops-all", "effect": "allow", "repositories": ["ops/**"],
     "subjects": ["group:corp:ops"], "actions": ["pull", "push"]},
]}


class Env:
    pass


def session():
    s = requests.Session()
    s.trust_env = False
    return s


def sso_section(secret_file, **extra):
    so = {"issuer": "corp", "client_id": "gateway",
          "client_secret_file": str(secret_file)}
    so.update(extra)
    return so


def issuer_entry(idp, **extra):
    e = {"name": "corp", "issuer": idp.issuer, "audiences": ["gateway"],
         "groups_claim": "groups", "prefix": "corp:",
         "algorithms": ["RS256", "ES256"]}
    if getattr(idp, "ca", None):
        e["ca_file"] = idp.ca
    e.update(extra)
    return e


def start_gw(tmp_path, name, port, idp, rs, reg=None, sso_extra=None,
             issuer_extra=None, audit=True):
    d = tmp_path / name
    d.mkdir(exist_ok=True)
    sf = d / "client.secret"
    sf.write_text(CLIENT_SECRET + "\n")
    os.chmod(sf, 0o600)
    ups = [{"name": "up1", "url": reg.url, "default": True}] if reg \
        else [{"name": "up1", "url": "http://127.0.0.1:9", "default": True}]
    cfg = gateway_config(*ups)
    cfg["listen"] = {"address": "127.0.0.1:%d" % port}
    cfg["external_url"] = "http://127.0.0.1:%d" % port
    cfg["redis"] = {"address": rs.host}
    if audit:
        cfg["audit"] = {"redis": rs.host, "stream": STREAM,
                        "spool_file": str(d / "spool"), "timeout": 2}
    cfg["policy"] = POLICY
    cfg["log"] = {"level": "debug"}
    cfg["identity"] = {
        "issuers": [issuer_entry(idp, **(issuer_extra or {}))],
        "sso": sso_section(sf, **(sso_extra or {})),
    }
    g = Gateway(d, cfg)
    wait_for(lambda: "oidc keys_loaded issuer=corp" in g.log_text(),
             timeout=30, what="the issuer's keys")
    return g


@pytest.fixture
def env(tmp_path):
    e = Env()
    e.stop = []
    e.rs = RedisServer(tmp_path / "redis")
    e.stop.append(e.rs)
    e.port = free_port()
    e.port2 = free_port()
    cbs = ["http://127.0.0.1:%d/oauth2/callback" % p
           for p in (e.port, e.port2)]
    e.idp = IdP(tmp_path / "idp", redirect_uris=cbs)
    e.stop.append(e.idp)
    e.idp.set_state(accounts={"alice": {
        "email": "alice@example.test", "name": "Alice Example",
        "groups": ["dev"]}}, login="alice")
    e.tmp = tmp_path
    try:
        yield e
    finally:
        for s in reversed(e.stop):
            try:
                s.stop()
            except Exception:   # noqa: BLE001 - clean up the rest
                pass


def gateway(env, name="gw", port=None, **kw):
    g = start_gw(env.tmp, name, port or env.port, env.idp, env.rs, **kw)
    env.stop.append(g)
    return g


def records(rs):
    with rs.client() as c:
        return [d for _, d in entries_to_dicts(
            c.call("XRANGE", STREAM, "-", "+"))]


def audited(rs, pred, what):
    return wait_for(lambda: [d for d in records(rs) if pred(d)],
                    timeout=20, what=what)


def begin(g, s):
    """GET /login: the redirect to the provider, with its parameters."""
    r = s.get(g.url + "/login", allow_redirects=False, timeout=10)
    assert r.status_code == 302, r.text
    loc = r.headers["Location"]
    return loc, {k: v[0] for k, v in parse_qs(urlparse(loc).query).items()}


def at_provider(idp, loc, stop):
    """The provider's part (its interaction signs the test user in):
    follow its redirects until the one back to `stop`."""
    s = idp._session()
    r = s.get(loc, allow_redirects=False, timeout=10)
    _r, back = idp._follow(s, r, stop=stop)
    assert back is not None and back.startswith(stop), back
    return back


def sign_in(g, s, idp, callback_on=None):
    loc, q = begin(g, s)
    back = at_provider(idp, loc, q["redirect_uri"])
    if callback_on is not None:
        back = back.replace(g.url, callback_on.url)
    r = s.get(back, allow_redirects=False, timeout=20)
    return r, back


def signed_in_page(g, s):
    r = s.get(g.url + "/", timeout=20)
    assert r.status_code == 200, r.text
    return r


def csrf_of(page):
    m = re.search(r'name="csrf" value="([^"]+)"', page)
    assert m, page
    return m.group(1)


def test_signin_landing_secret_logout(env, start_registry, single_image,
                                      tmp_path):
    reg = start_registry()
    g = gateway(env, reg=reg)
    s = session()
    loc, q = begin(g, s)
    # PKCE S256, state, nonce, the configured client and redirect.
    assert q["code_challenge_method"] == "S256"
    assert len(q["code_challenge"]) == 43
    assert len(q["state"]) == 43 and len(q["nonce"]) == 43
    assert q["client_id"] == "gateway"
    assert q["redirect_uri"] == g.url + "/oauth2/callback"
    assert "openid" in q["scope"].split()
    back = at_provider(env.idp, loc, q["redirect_uri"])
    r = s.get(back, allow_redirects=False, timeout=20)
    assert r.status_code == 303, r.text
    assert r.headers["Location"] == "/"
    ck = [c for c in r.headers.get("Set-Cookie", "").split(", ")
          if c.startswith("portcullis_session=")]
    sc = r.raw.headers.getlist("Set-Cookie")
    sess = [c for c in sc if c.startswith("portcullis_session=")][0]
    assert "HttpOnly" in sess and "SameSite=Lax" in sess
    assert "Path=/;" in sess and "Max-Age=28800" in sess
    assert "Secure" not in sess     # plain http here
    assert ck is not None
    sid = sess.split(";")[0].split("=", 1)[1]
    assert len(sid) == 43
    # Redis holds its hash, never the id.
    with env.rs.client() as c:
        keys = [k.decode() for k in c.call("KEYS", "portcullis:sso:*")]
        assert any(k.endswith(":session:" + __import__("hashlib").sha256(
            sid.encode()).hexdigest()) for k in keys), keys
        for k in keys:
            if c.call("TYPE", k) == b"string":
                assert sid.encode() not in c.call("GET", k)
    page = signed_in_page(g, s)
    h = page.headers
    assert h["Content-Security-Policy"].startswith("default-src 'none'")
    assert "frame-ancestors 'none'" in h["Content-Security-Policy"]
    assert h["X-Content-Type-Options"] == "nosniff"
    assert h["Cache-Control"] == "no-store"
    assert h["Referrer-Policy"] == "no-referrer"
    t = page.text
    assert 'id="subject">corp:alice<' in t
    assert "Alice Example" in t
    assert '<span class="tag">corp:dev</span>' in t
    assert "<code>team/**</code>" in t and "<code>team/dev/*</code>" in t
    assert "ops/**" not in t
    # Create a secret: shown once, with the login lines.
    r = s.post(g.url + "/ui/secrets", data={"csrf": csrf_of(t),
                                             "name": "laptop"}, timeout=20)
    assert r.status_code == 200, r.text
    secret = SECRET_RE.search(r.text).group(0)
    assert "skopeo login --username 'corp_alice' 127.0.0.1:%d" % (
        g.port) in r.text
    again = signed_in_page(g, s).text
    assert secret not in again
    assert secret[4:20] in again and "laptop" in again
    # Use it with skopeo through the gateway.
    sk = Skopeo(tmp_path / "skopeo")
    sk("copy", "-q", "--dest-tls-verify=false", single_image.ref,
       "docker://%s/team/dev/app:v1" % reg.host)
    sk("login", "--tls-verify=false", "-u", "corp_alice", "-p", secret,
       g.host)
    sk("copy", "-q", "--src-tls-verify=false",
       "docker://%s/team/dev/app:v1" % g.host,
       "oci:%s:x" % (tmp_path / "pulled"))
    audited(env.rs, lambda d: d["subject"] == "corp:alice" and
            d["auth_method"] == "secret" and d["action"] == "pull" and
            d["status"] == "200", "the pull as corp:alice")
    # Recent activity shows the pull.
    act = signed_in_page(g, s).text
    assert "team/dev/app" in act.split('id="activity"')[1]
    # Revoke it: the same secret no longer logs in.
    page = signed_in_page(g, s).text
    r = s.post(g.url + "/ui/secrets/revoke", data={
        "csrf": csrf_of(page), "id": secret[4:20]}, allow_redirects=False,
        timeout=20)
    assert r.status_code == 303, r.text
    assert ">revoked<" in signed_in_page(g, s).text
    r = sk("login", "--tls-verify=false", "-u", "corp_alice", "-p",
           secret, g.host, check=False)
    assert r.returncode != 0
    # Records: login, secret created and revoked, never a secret value.
    audited(env.rs, lambda d: d["path"] == "/oauth2/callback" and
            d["subject"] == "corp:alice" and d["action"] == "login" and
            d["status"] == "303", "the login's record")
    audited(env.rs, lambda d: d["path"] == "/ui/secrets" and
            d["action"] == "secret" and d["subject"] == "corp:alice",
            "secret created")
    audited(env.rs, lambda d: d["path"] == "/ui/secrets/revoke" and
            d["status"] == "303", "secret revoked")
    # Sign out: the session is gone on the server.
    page = signed_in_page(g, s).text
    r = s.post(g.url + "/logout", data={"csrf": csrf_of(page)},
               allow_redirects=False, timeout=20)
    assert r.status_code == 303
    assert "Sign in" in s.get(g.url + "/", timeout=20).text
    s2 = session()
    s2.cookies.set("portcullis_session", sid)
    assert 'id="subject"' not in s2.get(g.url + "/", timeout=20).text
    audited(env.rs, lambda d: d["path"] == "/logout" and
            d["subject"] == "corp:alice" and d["action"] == "login",
            "the logout's record")
    everything = json.dumps(records(env.rs))
    assert secret not in everything and sid not in everything
    assert secret not in g.log_text() and sid not in g.log_text()


def browser_available():
    if shutil.which("chromium") is None:
        return "Debian's chromium is not installed (contrib/install-deps.sh)"
    if not os.path.isdir(os.path.join(BROWSER_DIR, "node_modules",
                                      "playwright-core")):
        return ("playwright-core is not installed: run "
                "contrib/install-deps.sh (npm ci in tests/integration/"
                "browser)")
    return None


@pytest.mark.skipif(browser_available() is not None,
                    reason=browser_available() or "")
def test_acceptance_browser_signin_secret_skopeo_pull(env, start_registry,
                                                      single_image,
                                                      tmp_path):
    """Acceptance 1: headless Chromium signs the test user in at the real
    provider, sees groups and allowed repositories, creates a secret;
    skopeo logs in with it and pulls through the gateway."""
    reg = start_registry()
    env.idp.set_state(accounts={"alice": {
        "email": "alice@example.test", "name": "Alice Example",
        "groups": ["dev", "ops"]}}, login="alice")
    g = gateway(env, reg=reg)
    shot = tmp_path / "landing-page.png"
    r = subprocess.run(["node", os.path.join(BROWSER_DIR, "signin.mjs"),
                        "--gateway", g.url, "--screenshot", str(shot),
                        "--secret-name", "from-chromium"],
                       capture_output=True, text=True, timeout=180,
                       cwd=BROWSER_DIR)
    assert r.returncode == 0, r.stderr
    who = json.loads(r.stdout.strip().splitlines()[-1])
    print("landing page screenshot: %s" % shot)
    assert shot.stat().st_size > 10000
    with open(shot, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert "Sign in" in who["signedOutText"]
    assert who["subject"] == "corp:alice"
    assert who["name"] == "Alice Example"
    assert sorted(who["groups"]) == ["corp:dev", "corp:ops"]
    assert who["pull"] == ["team/**", "ops/**"]
    assert who["push"] == ["team/dev/*", "ops/**"]
    sess = [c for c in who["cookies"] if c["name"] == "portcullis_session"]
    assert sess and sess[0]["httpOnly"] and sess[0]["sameSite"] == "Lax"
    assert who["cspViolations"] == []
    assert who["headerColor"] == "rgb(29, 35, 48)"
    secret = who["secret"]
    assert SECRET_RE.fullmatch(secret)
    assert "docker login --username 'corp_alice' %s" % g.host in \
        who["loginLines"]
    assert "podman login" in who["loginLines"]
    assert secret[4:20] in who["listed"]
    assert not who["secretShownAgain"]
    sk = Skopeo(tmp_path / "skopeo")
    sk("copy", "-q", "--dest-tls-verify=false", single_image.ref,
       "docker://%s/ops/tool:v1" % reg.host)
    sk("login", "--tls-verify=false", "-u", "corp_alice", "-p", secret,
       g.host)
    sk("copy", "-q", "--src-tls-verify=false",
       "docker://%s/ops/tool:v1" % g.host,
       "oci:%s:x" % (tmp_path / "pulled"))
    assert os.path.exists(tmp_path / "pulled" / "index.json")
    audited(env.rs, lambda d: d["subject"] == "corp:alice" and
            d["auth_method"] == "secret" and d["action"] == "pull" and
            d["repository"] == "ops/tool" and d["status"] == "200",
            "the pull as corp:alice")
