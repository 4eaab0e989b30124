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
import socket
import subprocess
import time
from urllib.parse import parse_qs, urljoin, urlparse

import pytest
import requests

from lib.clients import Skopeo
from lib.gateway import Gateway, gateway_config, upstream
from lib.hostile_idp import HostileIdP
from lib.hostile_upstream import DripService
from lib.idp import IdP, idp_available
from lib.pki import PKI
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
             issuer_extra=None, audit=True, tls=None, redis_extra=None):
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
    if tls:
        cfg["listen"]["tls"] = {"cert_file": tls[0], "key_file": tls[1]}
        cfg["external_url"] = "https://127.0.0.1:%d" % port
    cfg["redis"] = {"address": rs.host}
    cfg["redis"].update(redis_extra or {})
    if audit:
        cfg["audit"] = {"redis": rs.host, "stream": STREAM,
                        "spool_file": str(d / "spool"), "timeout": 2}
    cfg["policy"] = POLICY
    cfg["metrics"] = {"allow": ["127.0.0.1/32"]}
    cfg["identity"] = {
        "issuers": [issuer_entry(idp, **(issuer_extra or {}))],
        "sso": sso_section(sf, **(sso_extra or {})),
    }
    g = Gateway(d, cfg, tls_client={"ca": tls[2]} if tls else None)
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
    cbs = ["%s://127.0.0.1:%d/oauth2/callback" % (sch, p)
           for p in (e.port, e.port2) for sch in ("http", "https")]
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
    assert sso_logins(g) == {"ok": 1}
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
    assert "skopeo login --tls-verify=false --username 'corp_alice' " \
        "127.0.0.1:%d" % g.port in r.text
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
    assert "podman login --tls-verify=false --username 'corp_alice' %s" % \
        g.host in who["loginLines"]
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


# --- security (acceptance 3) ---

def failure_of(env, path, rid_pred=None):
    return audited(env.rs, lambda d: d["path"] == path and
                   d["auth_failure"] != "" and
                   (rid_pred is None or rid_pred(d)), "a failed " + path)


def sso_logins(g):
    """portcullis_sso_logins_total by result, from /metrics."""
    r = requests.get(g.url + "/metrics", timeout=10)
    assert r.status_code == 200, r.text
    out = {}
    for line in r.text.splitlines():
        m = re.match(r'portcullis_sso_logins_total\{result="([^"]*)"\} '
                     r'(\d+)$', line)
        if m:
            out[m.group(1)] = int(m.group(2))
    return out


def test_forged_state_refused(env):
    g = gateway(env)
    s = session()
    begin(g, s)
    forged = "A" * 43
    # A state this browser did not start: its login cookie differs.
    r = s.get(g.url + "/oauth2/callback", params={
        "code": "x", "state": forged}, timeout=20)
    assert r.status_code == 400
    assert "not started in this browser" in r.text
    # Forged consistently (cookie and parameter): unknown to Redis.
    s2 = session()
    s2.cookies.set("portcullis_session_login", forged)
    r = s2.get(g.url + "/oauth2/callback", params={
        "code": "x", "state": forged}, timeout=20)
    assert r.status_code == 400
    assert "unknown, expired or already finished" in r.text
    assert "portcullis_session=" not in r.headers.get("Set-Cookie", "")
    wait_for(lambda: sorted(d["auth_failure"] for d in records(env.rs)
                            if d["path"] == "/oauth2/callback") ==
             ["state_not_this_browser", "state_unknown"], timeout=20,
             what="both refusals in the audit")
    assert all(d["subject"] == "anonymous" for d in records(env.rs)
               if d["path"] == "/oauth2/callback")
    assert sso_logins(g) == {"state_not_this_browser": 1, "state_unknown": 1}


def test_replayed_callback_and_code_refused(env):
    g = gateway(env)
    s = session()
    r, back = sign_in(g, s, env.idp)
    assert r.status_code == 303
    # The same callback again: the state was taken once (GETDEL).
    s.cookies.set("portcullis_session_login",
                  parse_qs(urlparse(back).query)["state"][0],
                  path="/oauth2/")
    r = s.get(back, allow_redirects=False, timeout=20)
    assert r.status_code == 400 and "already finished" in r.text
    # The same code with a fresh state of this browser: the provider
    # refuses it (a code is good once).
    code = parse_qs(urlparse(back).query)["code"][0]
    s3 = session()
    _loc, q = begin(g, s3)
    r = s3.get(g.url + "/oauth2/callback", params={
        "code": code, "state": q["state"]}, allow_redirects=False,
        timeout=20)
    assert r.status_code == 502, r.text
    assert "refused the sign-in code" in r.text
    assert code not in r.text
    wait_for(lambda: sorted(d["auth_failure"] for d in records(env.rs)
                            if d["path"] == "/oauth2/callback" and
                            d["auth_failure"]) ==
             ["code_refused", "state_unknown"], timeout=20,
             what="both refusals in the audit")
    everything = json.dumps(records(env.rs)) + g.log_text()
    assert code not in everything


def test_wrong_nonce_refused(env):
    g = gateway(env)
    s = session()
    loc, q = begin(g, s)
    # The provider signs the nonce it was given; this one is not ours.
    bad = loc.replace("nonce=" + q["nonce"], "nonce=" + "N" * 43)
    assert bad != loc
    back = at_provider(env.idp, bad, q["redirect_uri"])
    r = s.get(back, allow_redirects=False, timeout=20)
    assert r.status_code == 403, r.text
    assert "did not pass the gateway" in r.text
    assert "portcullis_session=" not in r.headers.get("Set-Cookie", "")
    failure_of(env, "/oauth2/callback",
               lambda d: d["auth_failure"] == "nonce_mismatch")


def test_provider_access_denied_clear_page(env):
    g = gateway(env)
    env.idp.set_state(deny=True)
    s = session()
    loc, q = begin(g, s)
    back = at_provider(env.idp, loc, q["redirect_uri"])
    assert "error=access_denied" in back
    r = s.get(back, allow_redirects=False, timeout=20)
    assert r.status_code == 403
    assert "access_denied" in r.text and "Sign in" in r.text
    assert r.headers["Content-Type"].startswith("text/html")
    failure_of(env, "/oauth2/callback",
               lambda d: d["auth_failure"] == "provider_access_denied")
    # An error value with markup is escaped, and the gateway lives on.
    r = s.get(g.url + "/oauth2/callback", params={
        "error": "<b>x</b>", "state": q["state"]}, timeout=20)
    assert "<b>x</b>" not in r.text and "&lt;b&gt;" not in r.text
    assert "(an error)" in r.text
    assert g.http.get(g.url + "/healthz", timeout=5).status_code == 200


def test_callback_finished_on_second_instance(env):
    """Both instances share Redis and the external URL (as behind one
    load balancer): one starts the sign-in, the other finishes it, and
    the session works on both."""
    g1 = gateway(env, name="gw1")
    cb = g1.url + "/oauth2/callback"
    g2 = gateway(env, name="gw2", port=env.port2,
                 sso_extra={"redirect_url": cb})
    s = session()
    r, back = sign_in(g1, s, env.idp, callback_on=g2)
    assert back.startswith(g2.url)
    assert r.status_code == 303, r.text
    assert "sso login" in g2.log_text()
    assert "sso login" not in g1.log_text()
    for g in (g1, g2):
        assert 'id="subject">corp:alice<' in signed_in_page(g, s).text


def test_expired_session_and_no_session_on_v2(env):
    g = gateway(env)
    s = session()
    sign_in(g, s, env.idp)
    assert 'id="subject"' in signed_in_page(g, s).text
    # A session cookie is no credential for the registry API.
    r = s.get(g.url + "/v2/team/dev/app/tags/list", timeout=20)
    assert r.status_code == 401
    # The record's own expiry passed (its key outlived it).
    with env.rs.client() as c:
        key = [k for k in c.call("KEYS", "portcullis:sso:session:*")][0]
        rec = json.loads(c.call("GET", key))
        rec["expires"] = int(time.time()) - 1
        c.call("SET", key, json.dumps(rec), "KEEPTTL")
    r = s.get(g.url + "/", timeout=20)
    assert r.status_code == 200
    assert "Your session has ended" in r.text and 'id="subject"' not in \
        r.text
    assert any(c.startswith("portcullis_session=;") and "Max-Age=0" in c
               for c in r.raw.headers.getlist("Set-Cookie"))
    # A session whose key expired in Redis.
    s2 = session()
    sign_in(g, s2, env.idp)
    with env.rs.client() as c:
        for k in c.call("KEYS", "portcullis:sso:session:*"):
            c.call("PEXPIRE", k, "1")
    wait_for(lambda: "Your session has ended" in s2.get(
        g.url + "/", timeout=20).text, timeout=10, what="session expiry")
    # A form posted with an ended session does nothing.
    r = s2.post(g.url + "/ui/secrets", data={"csrf": "x"}, timeout=20)
    assert r.status_code == 403


def test_forms_need_the_sessions_csrf_token(env):
    g = gateway(env)
    s = session()
    sign_in(g, s, env.idp)
    page = signed_in_page(g, s).text
    good = csrf_of(page)
    other = session()
    sign_in(g, other, env.idp)
    others = csrf_of(signed_in_page(g, other).text)
    assert others != good
    for data in ({"name": "x"}, {"name": "x", "csrf": ""},
                 {"name": "x", "csrf": "A" * 43},
                 {"name": "x", "csrf": others},
                 {"name": "x", "csrf": good[:-1]}):
        r = s.post(g.url + "/ui/secrets", data=data, timeout=20)
        assert r.status_code == 403, (data, r.status_code)
        assert "CSRF" in r.text
        assert not SECRET_RE.search(r.text)
    for path, data in (("/logout", {}), ("/ui/secrets/revoke",
                                          {"id": "0" * 16})):
        r = s.post(g.url + path, data=data, allow_redirects=False,
                   timeout=20)
        assert r.status_code == 403
    with env.rs.client() as c:
        assert c.call("KEYS", "portcullis:secret:*") == []
    # Still signed in (logout refused); the right token works.
    r = s.post(g.url + "/ui/secrets", data={"csrf": good, "name": "ok"},
               timeout=20)
    assert r.status_code == 200 and SECRET_RE.search(r.text)
    fails = [d for d in records(env.rs) if d["auth_failure"] == "csrf"]
    wait_for(lambda: len([d for d in records(env.rs)
                          if d["auth_failure"] == "csrf"]) == 7,
             timeout=20, what="seven csrf refusals in the audit")
    assert fails is not None


def test_html_injection_through_claims_escaped(env):
    env.idp.set_state(accounts={"alice": {
        "email": "a@example.test\"><script>alert(2)</script>",
        "name": "<script>alert(1)</script>",
        "groups": ["dev", "<img src=x onerror=alert(3)>"]}}, login="alice")
    g = gateway(env)
    s = session()
    r, _back = sign_in(g, s, env.idp)
    assert r.status_code == 303, r.text
    t = signed_in_page(g, s).text
    assert "<script>" not in t and "<img" not in t
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in t
    assert "corp:&lt;img src=x onerror=alert(3)&gt;" in t
    assert "&quot;&gt;&lt;script&gt;alert(2)" in t
    # The page allows no script at all anyway.
    r = s.get(g.url + "/", timeout=20)
    assert "script-src" not in r.headers["Content-Security-Policy"]
    assert "default-src 'none'" in r.headers["Content-Security-Policy"]


# --- a misbehaving provider (TEST DOUBLE: lib/hostile_idp.py) ---

def _b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


class DoubleKey:
    """An RSA key the double publishes, and RS256 signing with it."""

    def __init__(self, kid="double-1"):
        from cryptography.hazmat.primitives.asymmetric import rsa
        self.kid = kid
        self.key = rsa.generate_private_key(public_exponent=65537,
                                            key_size=2048)
        pub = self.key.public_key().public_numbers()
        self.jwk = {"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig",
                    "n": _b64u(pub.n.to_bytes(256, "big")),
                    "e": _b64u(pub.e.to_bytes(3, "big"))}

    def sign(self, claims):
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding
        h = _b64u(json.dumps({"alg": "RS256", "typ": "JWT",
                              "kid": self.kid}).encode())
        p = _b64u(json.dumps(claims).encode())
        sig = self.key.sign(("%s.%s" % (h, p)).encode(), padding.PKCS1v15(),
                            hashes.SHA256())
        return "%s.%s.%s" % (h, p, _b64u(sig))


@pytest.fixture
def double(tmp_path):
    d = HostileIdP()
    d.key = DoubleKey()
    d.discovery(authorization_endpoint=d.url + "/authorize",
                token_endpoint=d.url + "/token",
                userinfo_endpoint=d.url + "/userinfo")
    d.jwks({"keys": [d.key.jwk]})
    try:
        yield d
    finally:
        d.stop()


def double_gateway(env, double, **kw):
    g = start_gw(env.tmp, "gw-double", env.port, double, env.rs, **kw)
    env.stop.append(g)
    return g


def double_signin(g, double, q, aud="gateway", pad=0, answer_pad=0,
                  nonce=None):
    now = int(time.time())
    tok = double.key.sign({"iss": double.issuer, "aud": aud, "sub": "bob",
                           "nonce": nonce or q["nonce"], "iat": now,
                           "exp": now + 300, "groups": ["dev"],
                           "pad": "x" * pad})
    body = json.dumps({"id_token": tok, "access_token": "at",
                       "token_type": "Bearer"}).encode() + \
        b" " * answer_pad
    double.route("POST", "/token", 200,
                 {"Content-Type": "application/json"}, body)
    return tok


def test_id_token_for_another_audience_refused(env, double):
    g = double_gateway(env, double)
    s = session()
    _loc, q = begin(g, s)
    double_signin(g, double, q, aud="another-client")
    r = s.get(g.url + "/oauth2/callback", params={
        "code": "c1", "state": q["state"]}, allow_redirects=False,
        timeout=20)
    assert r.status_code == 403, r.text
    failure_of(env, "/oauth2/callback",
               lambda d: d["auth_failure"] == "wrong_audience")
    # The code went with client_secret_basic and PKCE.
    posts = [h for m, p, h in double.seen() if m == "POST"]
    assert posts and posts[-1]["Authorization"] == "Basic " + \
        base64.b64encode(b"gateway:" + CLIENT_SECRET.encode()).decode()
    # Control: the same double, the right audience, signs bob in.
    s = session()
    _loc, q = begin(g, s)
    double_signin(g, double, q)
    r = s.get(g.url + "/oauth2/callback", params={
        "code": "c2", "state": q["state"]}, allow_redirects=False,
        timeout=20)
    assert r.status_code == 303, r.text
    assert 'id="subject">corp:bob<' in signed_in_page(g, s).text


# --- bounds ---

def test_bounds_state_code_cookie_form(env):
    g = gateway(env, sso_extra={"max_state_bytes": 64,
                                "max_code_bytes": 100,
                                "max_cookie_bytes": 512,
                                "max_form_bytes": 512})
    s = session()
    _loc, q = begin(g, s)
    r = s.get(g.url + "/oauth2/callback", params={
        "code": "c", "state": "S" * 65}, timeout=20)
    assert r.status_code == 400 and "state" in r.text
    r = s.get(g.url + "/oauth2/callback", params={
        "code": "c" * 101, "state": q["state"]}, timeout=20)
    assert r.status_code == 400 and "code" in r.text
    fails = [d["auth_failure"] for d in records(env.rs)
             if d["path"] == "/oauth2/callback"]
    wait_for(lambda: sorted(d["auth_failure"] for d in records(env.rs)
                            if d["path"] == "/oauth2/callback") ==
             ["bad_code", "bad_state"], timeout=20, what="two records")
    assert fails is not None
    # Under the bounds, the same flow works.
    s = session()
    r, _back = sign_in(g, s, env.idp)
    assert r.status_code == 303
    page = signed_in_page(g, s).text
    # A Cookie header over max_cookie_bytes: no session is looked up.
    s.cookies.set("padding", "p" * 600)
    r = s.get(g.url + "/", timeout=20)
    assert 'id="subject"' not in r.text and "Sign in" in r.text
    s.cookies.set("padding", "p")
    assert 'id="subject"' in signed_in_page(g, s).text
    # A form over max_form_bytes: 413, nothing made.
    r = s.post(g.url + "/ui/secrets", data={"csrf": csrf_of(page),
                                             "name": "n" * 600}, timeout=20)
    assert r.status_code == 413


def test_bounds_token_answer_and_id_token(env, double):
    g = double_gateway(env, double, sso_extra={
        "max_token_response_bytes": 4096, "max_id_token_bytes": 2048})
    cases = [({"answer_pad": 5000}, 502, "code_exchange_failed"),
             ({"pad": 1500}, 403, "id_token_too_large"),
             ({}, 303, "")]
    for kw, status, why in cases:
        s = session()
        _loc, q = begin(g, s)
        double_signin(g, double, q, **kw)
        r = s.get(g.url + "/oauth2/callback", params={
            "code": "c", "state": q["state"]}, allow_redirects=False,
            timeout=20)
        assert r.status_code == status, (kw, r.text)
        if why:
            failure_of(env, "/oauth2/callback",
                       lambda d, w=why: d["auth_failure"] == w)
    assert "larger than 4096" in g.log_text()



def test_bounds_provider_token_userinfo_and_session_index(env, double):
    """The re-check's bounds: max_provider_token_bytes (a longer provider
    access token is not kept: that session makes no secret),
    max_token_response_bytes for the userinfo answer too (larger: 503,
    no secret), session_index_rebuild (the person's session index is
    rebuilt from its live members when it holds that many)."""
    g = double_gateway(env, double, sso_extra={
        "max_provider_token_bytes": 256, "max_token_response_bytes": 4096,
        "session_index_rebuild": 2})

    def sign_in_bob(at):
        s = session()
        _loc, q = begin(g, s)
        now = int(time.time())
        tok = double.key.sign({"iss": double.issuer, "aud": "gateway",
                               "sub": "bob", "nonce": q["nonce"],
                               "iat": now, "exp": now + 300,
                               "groups": ["dev"]})
        double.route("POST", "/token", 200,
                     {"Content-Type": "application/json"},
                     json.dumps({"id_token": tok, "access_token": at,
                                 "token_type": "Bearer"}).encode())
        r = s.get(g.url + "/oauth2/callback", params={
            "code": "c", "state": q["state"]}, allow_redirects=False,
            timeout=20)
        assert r.status_code == 303, r.text
        return s

    def create(s):
        page = signed_in_page(g, s).text
        return s.post(g.url + "/ui/secrets", data={"csrf": csrf_of(page),
                                                    "name": "x"},
                      timeout=20)

    def userinfo(body):
        double.route("GET", "/userinfo", 200,
                     {"Content-Type": "application/json"},
                     json.dumps(body).encode())

    userinfo({"sub": "bob"})
    # One byte over max_provider_token_bytes: not kept, no secret.
    s1 = sign_in_bob("a" * 257)
    r = create(s1)
    assert r.status_code == 403 and not SECRET_RE.search(r.text), r.text
    failure_of(env, "/ui/secrets",
               lambda d: d["auth_failure"] == "idp_no_token")
    # At the bound: kept, asked, a secret.
    s2 = sign_in_bob("b" * 256)
    r = create(s2)
    assert r.status_code == 200 and SECRET_RE.search(r.text), r.text
    # A userinfo answer over max_token_response_bytes: 503, no secret.
    userinfo({"sub": "bob", "pad": "x" * 5000})
    r = create(s2)
    assert r.status_code == 503 and not SECRET_RE.search(r.text), r.text
    assert "userinfo endpoint answer larger than 4096" in g.log_text()
    userinfo({"sub": "bob", "pad": "x" * 3000})
    assert create(s2).status_code == 200
    # session_index_rebuild: s1's session ends; the index still names it
    # (2 members) until the next sign-in rebuilds it from the live ones.
    with env.rs.client() as c:
        idx = c.call("KEYS", "*sessions:corp:bob")
        assert len(idx) == 1
        idx = idx[0]
        assert c.call("SCARD", idx) == 2
    page = signed_in_page(g, s1).text
    r = s1.post(g.url + "/logout", data={"csrf": csrf_of(page)},
                allow_redirects=False, timeout=20)
    assert r.status_code == 303
    with env.rs.client() as c:
        assert c.call("SCARD", idx) == 2
    s3 = sign_in_bob("c")
    with env.rs.client() as c:
        members = c.call("SMEMBERS", idx)
        assert len(members) == 2, members   # s2's and s3's, not s1's
        assert all(c.call("EXISTS", m) == 1 for m in members)
    assert 'id="subject"' in signed_in_page(g, s3).text


def test_config_errors(tmp_path, env):
    from lib.gateway import gateway_bin
    sf = tmp_path / "cs"
    sf.write_text("s\n")
    base = gateway_config({"name": "up1", "url": "http://127.0.0.1:9",
                           "default": True})
    cases = [
        ({"issuer": "nope"}, True, "no identity.issuers entry is named nope"),
        ({"scopes": ["profile"]}, True, "must include openid"),
        ({"redirect_url": "http://x.test/cb"}, True, "/oauth2/callback"),
        ({}, False, "needs the redis section"),
        ({"cookie_name": "a b"}, True, "letters, digits"),
        ({"max_state_bytes": 10}, True, "max_state_bytes"),
    ]
    for extra, with_redis, msg in cases:
        cfg = dict(base)
        cfg["external_url"] = "http://127.0.0.1:1"
        if with_redis:
            cfg["redis"] = {"address": env.rs.host}
        cfg["identity"] = {"issuers": [issuer_entry(env.idp)],
                           "sso": sso_section(sf, **extra)}
        p = tmp_path / "c.json"
        p.write_text(json.dumps(cfg))
        r = subprocess.run([gateway_bin(), "check-config", "-c", str(p)],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode != 0, extra
        assert msg in r.stderr, (extra, r.stderr)
        assert "s\n" not in r.stderr.replace(msg, "")


def test_session_cookie_secure_over_tls(env, tmp_path):
    pki = PKI(tmp_path / "gw-pki")
    cert, key = pki.issue("gateway", "/CN=127.0.0.1", san="IP:127.0.0.1")
    g = gateway(env, tls=(cert, key, pki.ca))
    s = session()
    s.verify = pki.ca
    loc, q = begin(g, s)
    assert q["redirect_uri"] == "https://127.0.0.1:%d/oauth2/callback" % (
        g.port)
    back = at_provider(env.idp, loc, q["redirect_uri"])
    r = s.get(back, allow_redirects=False, timeout=20)
    assert r.status_code == 303, r.text
    sc = r.raw.headers.getlist("Set-Cookie")
    sess = [c for c in sc if c.startswith("__Host-portcullis_session=")][0]
    assert "; Secure" in sess and "HttpOnly" in sess
    page = signed_in_page(g, s).text
    assert 'id="subject">corp:alice<' in page
    # Over TLS the login lines need no --tls-verify=false, and no note.
    r = s.post(g.url + "/ui/secrets", data={"csrf": csrf_of(page),
                                             "name": "tls"}, timeout=20)
    assert r.status_code == 200 and SECRET_RE.search(r.text), r.text
    lines = re.search(r'<pre id="login-lines">(.*?)</pre>', r.text,
                      re.S).group(1)
    assert "podman login --username" in lines, lines
    assert "tls-verify" not in lines and "plain-http-note" not in r.text


# The README's ACL lines: the audit's, the gateway's for secrets and
# revocation, and the sign-in's.
AUDIT_ACL = ("+evalsha +script|load +xadd +xtrim +xrange +xrevrange +xread "
             "+hget +hset +del +unlink +type +time +pexpire +zadd "
             "+zrangebyscore +zrem +zcard +zpopmin +select +ping").split()
SECRETS_ACL = "+hgetall +hset +subscribe +select +ping".split()
SSO_ACL = ("+set +get +getdel +del +eval +scard +sismember +smembers "
           "+hsetnx +sadd +publish +incr +pexpire +pttl").split()


def test_readme_acl_user_is_enough(tmp_path, start_registry, single_image):
    """The whole sign-in, a secret made, used, listed and revoked, and
    the activity read, as an ACL user with only the README's commands."""
    pw = "sso-acl-Pw-41x"
    rs = RedisServer(tmp_path / "redis-acl", requirepass="admin-Pw-1",
                     users=[["portcullis", "on", ">" + pw, "resetkeys",
                             "~portcullis:*", "resetchannels",
                             "&portcullis:revoke", "-@all"] + AUDIT_ACL +
                            SECRETS_ACL + SSO_ACL])
    pwf = tmp_path / "redis.pw"
    pwf.write_text(pw + "\n")
    os.chmod(pwf, 0o600)
    port = free_port()
    idp = IdP(tmp_path / "idp", redirect_uris=[
        "http://127.0.0.1:%d/oauth2/callback" % port])
    reg = start_registry()
    g = None
    try:
        g = start_gw(tmp_path, "gw-acl", port, idp, rs, reg=reg,
                     redis_extra={"username": "portcullis",
                                  "password_file": str(pwf)})
        s = session()
        r, _back = sign_in(g, s, idp)
        assert r.status_code == 303, r.text
        page = signed_in_page(g, s).text
        r = s.post(g.url + "/ui/secrets", data={"csrf": csrf_of(page),
                                                 "name": "acl"}, timeout=20)
        secret = SECRET_RE.search(r.text).group(0)
        sk = Skopeo(tmp_path / "skopeo")
        sk("copy", "-q", "--dest-tls-verify=false", single_image.ref,
           "docker://%s/team/x:v1" % reg.host)
        sk("login", "--tls-verify=false", "-u", "corp_alice", "-p", secret,
           g.host)
        sk("inspect", "--tls-verify=false", "docker://%s/team/x:v1" % g.host)
        wait_for(lambda: "team/x" in signed_in_page(g, s).text.split(
            'id="activity"')[1], timeout=20, what="the pull in activity")
        page = signed_in_page(g, s).text
        assert secret[4:20] in page and ">active<" in page
        r = s.post(g.url + "/ui/secrets/revoke", data={
            "csrf": csrf_of(page), "id": secret[4:20]}, timeout=20)
        assert ">revoked<" in r.text
        r = s.post(g.url + "/logout", data={"csrf": csrf_of(r.text)},
                   timeout=20)
        assert "Sign in" in r.text
        assert "NOPERM" not in g.log_text() and "noperm" not in \
            g.log_text().lower()
    finally:
        if g is not None:
            g.stop()
        idp.stop()
        rs.stop()


def test_client_gone_during_code_exchange_cancels_it(env, double):
    """A browser that goes away while the gateway waits for the token
    endpoint (a TEST DOUBLE that drips its answer): the exchange is
    cancelled (its connection closed at once), nothing is left behind."""
    drip = DripService(count=300, every=0.1)
    try:
        double.discovery(authorization_endpoint=double.url + "/authorize",
                         token_endpoint=drip.url + "/token")
        g = double_gateway(env, double,
                           issuer_extra={"jwks_hosts": [drip.host]})
        s = session()
        _loc, q = begin(g, s)
        c = socket.create_connection(("127.0.0.1", g.port), timeout=10)
        c.sendall(("GET /oauth2/callback?code=c&state=%s HTTP/1.1\r\n"
                   "Host: 127.0.0.1\r\nCookie: portcullis_session_login=%s"
                   "\r\n\r\n" % (q["state"], q["state"])).encode())
        wait_for(lambda: drip.sent and drip.sent[0] >= 2, timeout=20,
                 what="the exchange under way")
        c.close()
        wait_for(lambda: drip.done(0), timeout=10,
                 what="the exchange's connection closed")
        assert drip.sent[0] < 300
        assert g.http.get(g.url + "/healthz", timeout=5).status_code == 200
        # The state was used: the same callback cannot be finished now.
        s.cookies.set("portcullis_session_login", q["state"],
                      path="/oauth2/")
        r = s.get(g.url + "/oauth2/callback", params={
            "code": "c", "state": q["state"]}, timeout=20)
        assert r.status_code == 400
    finally:
        drip.stop()


def test_revoked_subject_session_makes_no_secret(env, tmp_path):
    """Review: `portcullis token revoke --subject` must also end what a
    browser session opened before it may do.  The session was opened
    before the not-before time; a secret it made after that time would be
    stamped `created` later than it and so pass the revocation check: a
    revoked person would keep minting 90-day secrets for the rest of the
    session (8 hours)."""
    from lib.gateway import gateway_bin
    from lib.util import run
    g = gateway(env)
    s = session()
    r, _back = sign_in(g, s, env.idp)
    assert r.status_code == 303, r.text
    page = signed_in_page(g, s).text
    assert 'id="subject">corp:alice<' in page
    out = run([gateway_bin(), "token", "revoke", "-c", g.config_path,
               "--subject", "corp:alice"], timeout=60)
    assert "revoked" in out.stdout + out.stderr, out.stdout + out.stderr
    wait_for(lambda: 'revoke received subject="corp:alice"' in
             g.log_text(), timeout=10, what="the revocation to arrive")
    with env.rs.client() as c:
        nb = int(c.call("HGET", "portcullis:revoked", "s:corp:alice"))
    # A secret made now would be stamped after the not-before time.
    wait_for(lambda: time.time() >= nb + 1, timeout=5,
             what="the clock to pass the not-before time")
    r = s.post(g.url + "/ui/secrets", data={"csrf": csrf_of(page),
                                             "name": "after"}, timeout=20)
    assert not SECRET_RE.search(r.text), "a revoked session made a secret"
    assert r.status_code == 403, r.status_code
    with env.rs.client() as c:
        assert c.call("KEYS", "portcullis:secret:*") == []
    # The page no longer treats the session as signed in.
    t = s.get(g.url + "/", timeout=20).text
    assert 'id="subject"' not in t


def test_person_disabled_at_the_provider_makes_no_secret(env):
    """A person disabled at the provider keeps the browser session, but
    the provider is asked (userinfo, with the session's sealed provider
    access token) before a secret is made: refused, audited, no secret;
    enabled again, the same session makes one.  The sealed token is not
    in Redis in the clear."""
    env.idp.set_state(accounts={"alice": {
        "email": "alice@example.test", "name": "Alice Example",
        "groups": ["dev"]}}, login="alice")
    g = gateway(env)
    s = session()
    r, _back = sign_in(g, s, env.idp)
    assert r.status_code == 303, r.text
    page = signed_in_page(g, s).text
    with env.rs.client() as c:
        keys = [k for k in c.call("KEYS", "*session:*")]
        assert len(keys) == 1
        rec = json.loads(c.call("GET", keys[0]))
    assert rec["idp_sub"] == "alice" and len(rec["pat"]) > 40
    env.idp.set_state(accounts={"alice": {
        "email": "alice@example.test", "name": "Alice Example",
        "groups": ["dev"], "disabled": True}})
    r = s.post(g.url + "/ui/secrets", data={"csrf": csrf_of(page),
                                             "name": "gone"}, timeout=20)
    assert r.status_code == 403, r.status_code
    assert not SECRET_RE.search(r.text) and "Sign in again" in r.text
    with env.rs.client() as c:
        assert c.call("KEYS", "portcullis:secret:*") == []
    d = failure_of(env, "/ui/secrets")[0]
    assert d["auth_failure"] == "idp_refused" and \
        d["subject"] == "corp:alice", d
    assert 'recheck_refused subject="corp:alice"' in g.log_text()
    env.idp.set_state(accounts={"alice": {
        "email": "alice@example.test", "name": "Alice Example",
        "groups": ["dev"]}})
    r = s.post(g.url + "/ui/secrets", data={"csrf": csrf_of(page),
                                             "name": "back"}, timeout=20)
    assert r.status_code == 200 and SECRET_RE.search(r.text), r.text


def test_sign_out_everywhere(env):
    """Signing in again leaves the older session valid until it ends;
    "Sign out everywhere" (the landing page's second form) ends every
    session of the person (the per-subject session index), not another
    person's; plain "Sign out" ends only its own."""
    env.idp.set_state(accounts={
        "alice": {"email": "a@example.test", "name": "A", "groups": ["dev"]},
        "bob": {"email": "b@example.test", "name": "B", "groups": ["dev"]}},
        login="alice")
    g = gateway(env)
    a1, a2, a3 = session(), session(), session()
    for s in (a1, a2, a3):
        assert sign_in(g, s, env.idp)[0].status_code == 303
    env.idp.set_state(login="bob")
    b = session()
    assert sign_in(g, b, env.idp)[0].status_code == 303
    env.idp.set_state(login="alice")

    def signed_in(s):
        return 'id="subject"' in s.get(g.url + "/", timeout=20).text
    # Plain sign out: only a3's own session.
    page = signed_in_page(g, a3).text
    r = a3.post(g.url + "/logout", data={"csrf": csrf_of(page)},
                allow_redirects=False, timeout=20)
    assert r.status_code == 303
    assert not signed_in(a3) and signed_in(a1) and signed_in(a2)
    page = signed_in_page(g, a1).text
    assert 'id="logout-everywhere"' in page
    r = a1.post(g.url + "/logout", data={"csrf": csrf_of(page),
                                         "everywhere": "1"},
                allow_redirects=False, timeout=20)
    assert r.status_code == 303, r.text
    assert not signed_in(a1) and not signed_in(a2)
    assert signed_in(b)
    assert 'logout_everywhere subject="corp:alice"' in g.log_text()
    with env.rs.client() as c:
        assert c.call("KEYS", "*sessions:corp:alice") == []
        assert len(c.call("KEYS", "*session:*")) == 1   # bob's



def test_sign_out_everywhere_index_outlives_its_sessions(env):
    """Review: the session index took each new session's lifetime as its
    own (PEXPIRE), also when shorter than an older session's remaining
    one (instances sharing Redis with different session_lifetime, or a
    reload lowering it), and a rebuild dropped its expiry to the new
    session's too: the index then ended first and "sign out everywhere"
    missed the older, longer session.  The index now lives as long as
    its longest member."""
    g1 = gateway(env, name="gw1", sso_extra={"session_lifetime": 3600})
    cb = g1.url + "/oauth2/callback"
    g2 = gateway(env, name="gw2", port=env.port2, sso_extra={
        "redirect_url": cb, "session_lifetime": 60,
        "session_index_rebuild": 2})
    a1 = session()
    assert sign_in(g1, a1, env.idp)[0].status_code == 303

    def index_outlives_members():
        with env.rs.client() as c:
            idx = c.call("KEYS", "*sessions:corp:alice")
            assert len(idx) == 1, idx
            members = c.call("SMEMBERS", idx[0])
            longest = max(c.call("PTTL", m) for m in members)
            assert longest > 600000      # a1's (an hour)
            assert c.call("PTTL", idx[0]) >= longest - 5000, (
                c.call("PTTL", idx[0]), longest)
    index_outlives_members()
    # A shorter session on the other instance (index: 2 members) ...
    a2 = session()
    assert sign_in(g1, a2, env.idp, callback_on=g2)[0].status_code == 303
    index_outlives_members()
    # ... and one more there, at session_index_rebuild: a rebuild.
    a3 = session()
    assert sign_in(g1, a3, env.idp, callback_on=g2)[0].status_code == 303
    index_outlives_members()
    page = signed_in_page(g2, a3).text
    r = a3.post(g2.url + "/logout", data={"csrf": csrf_of(page),
                                          "everywhere": "1"},
                allow_redirects=False, timeout=20)
    assert r.status_code == 303, r.text
    for s in (a1, a2, a3):
        assert 'id="subject"' not in s.get(g1.url + "/", timeout=20).text


def test_secret_refused_when_the_provider_says_another_subject(
        env, double):
    """userinfo naming another sub than the id_token (OIDC Core 5.3.2),
    or refusing the token, or answering nothing usable: no secret."""
    g = double_gateway(env, double)
    s = session()
    _loc, q = begin(g, s)
    double_signin(g, double, q)
    r = s.get(g.url + "/oauth2/callback", params={
        "code": "c1", "state": q["state"]}, allow_redirects=False,
        timeout=20)
    assert r.status_code == 303, r.text
    page = signed_in_page(g, s).text
    for status, body, want in (
            (200, {"sub": "mallory"}, 403),
            # Review: the sub compared exactly, as a string only.
            (200, {"sub": ["bob"]}, 403),
            (200, {"sub": {"bob": 1}}, 403),
            (200, {"sub": 0}, 403),
            (200, {"sub": "bob "}, 403),
            (200, {"sub": "bo"}, 403),
            (200, {"sub": "BOB"}, 403),
            (200, {"name": "bob"}, 403),
            (200, ["bob"], 503),
            (401, {"error": "invalid_token"}, 403),
            (401, None, 403),
            (500, None, 503)):
        double.route("GET", "/userinfo", status,
                     {"Content-Type": "application/json"},
                     json.dumps(body).encode() if body else b"")
        r = s.post(g.url + "/ui/secrets", data={"csrf": csrf_of(page),
                                                 "name": "x"}, timeout=20)
        assert r.status_code == want, (status, body, r.status_code)
        assert not SECRET_RE.search(r.text)
    double.route("GET", "/userinfo", 200, {"Content-Type":
                                           "application/json"},
                 json.dumps({"sub": "bob"}).encode())
    r = s.post(g.url + "/ui/secrets", data={"csrf": csrf_of(page),
                                             "name": "x"}, timeout=20)
    assert r.status_code == 200 and SECRET_RE.search(r.text), r.text
    # The provider's access token ("at") never went to a log.
    assert "Bearer" not in g.log_text()


def test_login_states_bounded(env):
    """Review: every GET /login, unauthenticated, stores a state in Redis
    for state_lifetime (10 minutes): a loop of them filled the Redis the
    audit, sessions and revocation share.  identity.sso
    .max_logins_per_minute bounds the sign-ins begun per minute over all
    instances; past it /login is 429 and stores nothing."""
    g = gateway(env, sso_extra={"max_logins_per_minute": 20})
    g2 = gateway(env, name="gw2", port=env.port2,
                 sso_extra={"max_logins_per_minute": 20})
    s = session()
    codes = []
    for i in range(30):
        gw = g if i % 2 == 0 else g2
        r = s.get(gw.url + "/login", allow_redirects=False, timeout=10)
        codes.append(r.status_code)
    assert codes.count(302) == 20, codes
    assert codes.count(429) == 10, codes
    assert codes[:20] == [302] * 20, codes
    with env.rs.client() as c:
        assert len(c.call("KEYS", "portcullis:sso:state:*")) == 20
    r = s.get(g.url + "/login", allow_redirects=False, timeout=10)
    assert r.status_code == 429
    assert r.headers.get("Retry-After") == "60"
    assert "Too many sign-ins" in r.text
    assert "Location" not in r.headers
    failure_of(env, "/login", lambda d: d["auth_failure"] ==
               "too_many_logins")


def test_hostile_id_tokens_refused(env, double):
    """Review, a hostile provider (TEST DOUBLE: lib/hostile_idp.py): each
    id_token below must fail the callback with 403 and open no session:
    an azp naming another client (OIDC Core 3.1.3.7: when azp is present
    it must be the client_id, even with one audience), alg none, HS256
    keyed with the published RSA key (keys confusion), another issuer,
    expired, no nonce, a nonce of another sign-in, a subject with a
    control character, an id_token that is no string."""
    import hashlib
    import hmac
    g = double_gateway(env, double)
    now = int(time.time())

    def claims(q, **kw):
        c = {"iss": double.issuer, "aud": "gateway", "sub": "bob",
             "nonce": q["nonce"], "iat": now, "exp": now + 300,
             "groups": ["dev"]}
        c.update(kw)
        return {k: v for k, v in c.items() if v is not None}

    def unsigned(c):
        h = _b64u(json.dumps({"alg": "none", "typ": "JWT"}).encode())
        return "%s.%s." % (h, _b64u(json.dumps(c).encode()))

    def hs256(c):
        h = _b64u(json.dumps({"alg": "HS256", "typ": "JWT",
                              "kid": double.key.kid}).encode())
        p = _b64u(json.dumps(c).encode())
        key = json.dumps(double.key.jwk).encode()
        sig = hmac.new(key, ("%s.%s" % (h, p)).encode(),
                       hashlib.sha256).digest()
        return "%s.%s.%s" % (h, p, _b64u(sig))

    cases = [
        ("azp of another client", lambda q: double.key.sign(
            claims(q, azp="another-client")), "wrong_azp"),
        ("alg none", lambda q: unsigned(claims(q)), None),
        ("HS256 with the public key", lambda q: hs256(claims(q)), None),
        ("another issuer", lambda q: double.key.sign(
            claims(q, iss="https://evil.example")), None),
        ("expired", lambda q: double.key.sign(
            claims(q, iat=now - 7200, exp=now - 3600)), "expired"),
        ("no nonce", lambda q: double.key.sign(claims(q, nonce=None)),
         "nonce_mismatch"),
        ("another sign-in's nonce", lambda q: double.key.sign(
            claims(q, nonce="B" * 43)), "nonce_mismatch"),
        ("control character in sub", lambda q: double.key.sign(
            claims(q, sub="bob\nadmin")), None),
        ("id_token not a string", lambda q: 42, "no_id_token"),
    ]
    for i, (what, make, reason) in enumerate(cases):
        s = session()
        _loc, q = begin(g, s)
        body = json.dumps({"id_token": make(q), "access_token": "at",
                           "token_type": "Bearer"}).encode()
        double.route("POST", "/token", 200,
                     {"Content-Type": "application/json"}, body)
        r = s.get(g.url + "/oauth2/callback", params={
            "code": "c%d" % i, "state": q["state"]}, allow_redirects=False,
            timeout=20)
        assert r.status_code in (403, 502), (what, r.status_code, r.text)
        assert not any(c.startswith("portcullis_session=") and
                       "Max-Age=0" not in c
                       for c in r.raw.headers.getlist("Set-Cookie")), what
        assert 'id="subject"' not in s.get(g.url + "/", timeout=20).text
        if reason:
            failure_of(env, "/oauth2/callback",
                       lambda d, rs=reason: d["auth_failure"] == rs)


def test_cookies_tossed_by_a_sibling_host_ignored_over_tls(env, tmp_path):
    """Review, a hostile sibling host (evil.example.com next to
    registry.example.com, or anything that can answer plain http for a
    parent domain) sets cookies for the parent domain: `Domain=` cookies
    reach the gateway with whatever names they like.  It tosses its own
    sign-in's login cookie (then sends the victim to its own callback
    URL), or its own session id: either way the victim's browser would
    be signed in as the attacker (login CSRF; what the victim then makes,
    a secret, is the attacker's account's).  Over TLS the gateway's
    cookies are __Host- prefixed, which a browser accepts only from the
    host itself (Secure, Path=/, no Domain), and it reads no other: a
    tossed cookie is modelled here by putting the unprefixed name in the
    victim's jar."""
    pki = PKI(tmp_path / "gw-pki")
    cert, key = pki.issue("gateway", "/CN=127.0.0.1", san="IP:127.0.0.1")
    g = gateway(env, tls=(cert, key, pki.ca))
    # The attacker begins a sign-in of its own and stops at the callback.
    att = session()
    att.verify = pki.ca
    loc, q = begin(g, att)
    back = at_provider(env.idp, loc, q["redirect_uri"])
    # The victim's browser got the attacker's login cookie from a sibling.
    vic = session()
    vic.verify = pki.ca
    vic.cookies.set("portcullis_session_login", q["state"])
    r = vic.get(back, allow_redirects=False, timeout=20)
    assert r.status_code == 400, (r.status_code, r.text)
    assert "not started in this browser" in r.text
    assert 'id="subject"' not in vic.get(g.url + "/", timeout=20).text
    # The attacker's own session id tossed the same way.
    att2 = session()
    att2.verify = pki.ca
    r, _back = sign_in(g, att2, env.idp)
    assert r.status_code == 303, r.text
    sc = r.raw.headers.getlist("Set-Cookie")
    sess = [c for c in sc if c.startswith("__Host-portcullis_session=")]
    assert sess, sc
    assert "; Secure" in sess[0] and "Path=/;" in sess[0] and \
        "Domain" not in sess[0]
    sid = sess[0].split(";")[0].split("=", 1)[1]
    vic2 = session()
    vic2.verify = pki.ca
    vic2.cookies.set("portcullis_session", sid)
    assert 'id="subject"' not in vic2.get(g.url + "/", timeout=20).text
    # The host's own cookie works.
    assert 'id="subject">corp:alice<' in signed_in_page(g, att2).text


def test_login_lines_quote_the_subject_for_the_shell(env, double):
    """Review: the page's login lines are meant to be pasted into a shell,
    and the user name in them is the subject, which comes from the
    provider (a subject_claim such as preferred_username may even be the
    person's to choose).  A ' in it ended the quoted word: the rest ran as
    shell words (here: a second command).  The lines now carry only
    letters, digits and . _ - @ of it (secret_login_user, the same name
    `portcullis secret create` prints), so it stays one shell word."""
    import html
    import shlex
    g = double_gateway(env, double)
    s = session()
    _loc, q = begin(g, s)
    now = int(time.time())
    tok = double.key.sign({"iss": double.issuer, "aud": "gateway",
                           "sub": "o'brien'; touch /tmp/pwned; '",
                           "nonce": q["nonce"], "iat": now,
                           "exp": now + 300, "groups": ["dev"]})
    double.route("POST", "/token", 200, {"Content-Type":
                                          "application/json"},
                 json.dumps({"id_token": tok, "access_token": "at",
                             "token_type": "Bearer"}).encode())
    r = s.get(g.url + "/oauth2/callback", params={
        "code": "c1", "state": q["state"]}, allow_redirects=False,
        timeout=20)
    assert r.status_code == 303, r.text
    page = signed_in_page(g, s).text
    # The provider's userinfo, asked before the secret is made.
    double.route("GET", "/userinfo", 200, {"Content-Type":
                                           "application/json"},
                 json.dumps({"sub": "o'brien'; touch /tmp/pwned; '"})
                 .encode())
    r = s.post(g.url + "/ui/secrets", data={"csrf": csrf_of(page),
                                             "name": "q"}, timeout=20)
    assert r.status_code == 200 and SECRET_RE.search(r.text), r.text
    lines = html.unescape(re.search(r'<pre id="login-lines">(.*?)</pre>',
                                    r.text, re.S).group(1)).splitlines()
    assert len(lines) == 3, lines
    # The gateway is plain http: podman and skopeo are told so, docker
    # has no such flag (a note on the page says why it needs none here).
    for tool, line in zip(("docker", "podman", "skopeo"), lines):
        assert shlex.split(line) == [tool, "login"] + (
            [] if tool == "docker" else ["--tls-verify=false"]) + [
            "--username", "corp_o_brien___touch__tmp_pwned___",
            "127.0.0.1:%d" % g.port], line
    note = re.search(r'<p class="muted" id="plain-http-note">(.*?)</p>',
                     r.text, re.S)
    assert note and "127.0.0.0/8" in note.group(1) and \
        "insecure-registries" in note.group(1), r.text


def test_revoke_form_cannot_reach_another_persons_secret(env):
    """Review, IDOR: /ui/secrets/revoke takes a secret id from the form;
    one person naming another's id (ids are listed on that person's page
    and in `secret list`) must revoke nothing.  Also the max_secrets bound
    per person, counted in the create script."""
    env.idp.set_state(accounts={
        "alice": {"email": "a@example.test", "name": "A", "groups": ["dev"]},
        "bob": {"email": "b@example.test", "name": "B", "groups": ["dev"]}},
        login="alice")
    g = gateway(env, sso_extra={"max_secrets": 2})
    a = session()
    sign_in(g, a, env.idp)
    env.idp.set_state(login="bob")
    b = session()
    sign_in(g, b, env.idp)
    assert 'id="subject">corp:bob<' in signed_in_page(g, b).text
    r = b.post(g.url + "/ui/secrets", data={
        "csrf": csrf_of(signed_in_page(g, b).text), "name": "bobs"},
        timeout=20)
    bobs = SECRET_RE.search(r.text).group(0)
    page = signed_in_page(g, a).text
    assert 'id="subject">corp:alice<' in page and bobs[4:20] not in page
    r = a.post(g.url + "/ui/secrets/revoke", data={
        "csrf": csrf_of(page), "id": bobs[4:20]}, timeout=20)
    assert r.status_code == 200 and "No such secret of yours" in r.text
    with env.rs.client() as c:
        assert c.call("HGET", "portcullis:secret:" + bobs[4:20],
                      "revoked") is None
    assert ">active<" in signed_in_page(g, b).text
    # max_secrets: alice gets two, not a third.
    for i in range(3):
        page = signed_in_page(g, a).text
        r = a.post(g.url + "/ui/secrets", data={"csrf": csrf_of(page),
                                                 "name": "n%d" % i},
                   timeout=20)
        assert r.status_code == 200
        assert bool(SECRET_RE.search(r.text)) == (i < 2), i
    assert "as many secrets as allowed" in r.text
    with env.rs.client() as c:
        assert c.call("SCARD", "portcullis:secret:subject:corp:alice") == 2


def test_activity_fields_escaped(env):
    """Review: the recent-activity table shows audit fields a client
    chose (the request path, repository and reference of its own
    requests); written here straight into the stream and the person's
    index, as any request of the person's would put them, they must come
    out as text."""
    g = gateway(env)
    s = session()
    sign_in(g, s, env.idp)
    hostile = {"time": str(int(time.time() * 1000)), "action": "pull",
               "method": "GET<script>alert(1)</script>",
               "path": "/v2/x/<img src=x onerror=alert(2)>/manifests/y",
               "repository": "\"><svg onload=alert(3)>",
               "reference": "'><iframe src=//evil>",
               "status": "200<b>", "decision": "allow<u>"}
    # Both entries in one script, as the audit writer makes them: a
    # record the gateway writes in between would take the index past it.
    with env.rs.client() as c:
        args = []
        for k, v in hostile.items():
            args += [k, v]
        c.call("EVAL", "local id = redis.call('XADD', KEYS[1], '*', "
               "unpack(ARGV)) redis.call('XADD', KEYS[2], id, 'r', '1') "
               "return id", "2", STREAM, STREAM + ":subject:corp:alice",
               *args)
    t = signed_in_page(g, s).text
    act = t.split('id="activity"')[1]
    for bad in ("<script", "<img", "<svg", "<iframe", "<b>", "<u>"):
        assert bad not in act, bad
    assert "&lt;img src=x onerror=alert(2)&gt;" in act
    assert "&quot;&gt;&lt;svg onload=alert(3)&gt;" in act
    assert "&#39;&gt;&lt;iframe src=//evil&gt;" in act


def test_callback_error_page_shows_no_foreign_text(env):
    """Review, a hostile second site: /oauth2/callback?error=... needs no
    state, so any site can link a person to the gateway's own page with a
    sentence of its choosing in it ("call the help desk at ... and give
    your password").  Only an OAuth error code's shape ([a-z_], as RFC
    6749 and OIDC name them) is shown."""
    g = gateway(env)
    s = session()
    r = s.get(g.url + "/oauth2/callback", params={
        "error": "Your account is locked. Call +1 555 0100 with your "
                 "password"}, timeout=20)
    assert r.status_code == 403
    assert "Call +1 555" not in r.text and "locked" not in r.text
    r = s.get(g.url + "/oauth2/callback", params={
        "error": "interaction_required"}, timeout=20)
    assert "(interaction_required)" in r.text


def test_secret_revoked_on_the_page_reaches_an_instance_that_missed_it(env):
    """Review: a secret revoked on the landing page was only PUBLISHed;
    `portcullis secret revoke` also writes x:ID into the revocation hash,
    which is how an instance that was not listening at that moment (its
    subscriber link down, or started later) learns it at its next sync
    and refuses the tokens already issued for the secret.  Without the
    field those tokens lived on there until they expired."""
    g = gateway(env)
    s = session()
    sign_in(g, s, env.idp)
    r = s.post(g.url + "/ui/secrets", data={
        "csrf": csrf_of(signed_in_page(g, s).text), "name": "x"},
        timeout=20)
    sid = SECRET_RE.search(r.text).group(0)[4:20]
    r = s.post(g.url + "/ui/secrets/revoke", data={
        "csrf": csrf_of(signed_in_page(g, s).text), "id": sid},
        allow_redirects=False, timeout=20)
    assert r.status_code == 303, r.text
    with env.rs.client() as c:
        at = c.call("HGET", "portcullis:revoked", "x:" + sid)
        rec = c.call("HGET", "portcullis:secret:" + sid, "revoked")
    assert at is not None and at == rec, (at, rec)
    # An instance that was not listening learns it from the hash.
    g2 = gateway(env, name="gw2", port=env.port2)
    wait_for(lambda: "revoke sync secret=%s" % sid in g2.log_text(),
             timeout=20, what="the second instance to learn the revocation")


def test_host_header_changes_no_redirect_uri_or_cookie(env):
    """Review, Host header games: the redirect_uri and the cookies'
    Secure flag and names come from the configuration and the listener,
    never from Host or X-Forwarded-* (checked, sound; pinned here)."""
    g = gateway(env)
    s = session()
    r = s.get(g.url + "/login", allow_redirects=False, timeout=10,
              headers={"Host": "evil.example",
                       "X-Forwarded-Proto": "https",
                       "X-Forwarded-Host": "evil.example"})
    assert r.status_code == 302
    q = {k: v[0] for k, v in
         parse_qs(urlparse(r.headers["Location"]).query).items()}
    assert q["redirect_uri"] == g.url + "/oauth2/callback"
    sc = r.raw.headers.getlist("Set-Cookie")
    assert sc and all(c.startswith("portcullis_session_login=") and
                      "Secure" not in c and "Domain" not in c for c in sc)
