"""Issue 9 acceptance 2 end to end: a CI job's client-credentials access
token from a real OpenID Connect provider (npm oidc-provider) used as the
Basic password with skopeo, through the gateway with its token service
on (skopeo meets the Bearer challenge, logs in at /token with the IdP
token, pulls with the gateway's token):

- it pulls what the policy allows that client (by subject, and by a
  claim rule), and is refused elsewhere (skopeo fails; the gateway
  answers 401 insufficient_scope to the token, 403 to the identified
  caller);
- the provider rotates its key (a new kid): picked up without a restart,
  the first request meeting the new kid waits for the JWKS fetch;
- the provider stopped, after a failed periodic refresh (seen on
  /admin/identity, not slept for): a token minted before the stop that
  the gateway never saw (no verified-token cache to help) is verified
  with the cached keys, and skopeo pulls with it.

Acceptance 5 alongside: Redis runs with the default user off and the
gateway logs in as the README's ACL user (lib/idfix.py); logins are
audited there, and `portcullis token revoke` through that user ends the
IdP subject's logins.

Real parts only: oidc-provider on node, docker-registry, skopeo,
redis-server."""

import json
import os
import time

import pytest
import requests

from lib.clients import Skopeo
from lib.gateway import gateway_bin, gateway_config, upstream
from lib.idfix import SERVICE, access_of, acl_redis, claims, \
    claims_header, idp_sign, issuer_cfg, make_keys, needs_idp, \
    redis_section, start_idp, token_cfg
from lib.redis import entries_to_dicts
from lib.util import run, wait_for

pytestmark = needs_idp

STREAM = "portcullis:audit"


def policy():
    """Anonymous callers may pull nothing (so /v2/ challenges, as a
    registry requiring a login does); idp:ci pulls ci/**, a claim rule
    lets client_id=ci pull claim/**; loopback callers may read the
    admin endpoints."""
    return {"rules": [
        {"id": "ci-rw", "effect": "allow", "repositories": ["ci/**"],
         "subjects": ["user:idp:ci"], "actions": ["pull", "push"]},
        {"id": "ci-claim", "effect": "allow", "repositories": ["claim/**"],
         "subjects": [{"claim": "client_id", "equals": "ci"}],
         "actions": ["pull"]},
        {"id": "team", "effect": "allow", "repositories": ["team/**"],
         "subjects": ["user:someone-else"], "actions": ["pull"]},
        {"id": "admin-loopback", "effect": "allow",
         "subjects": ["cidr:127.0.0.0/8"], "actions": ["admin"]}]}


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return make_keys(tmp_path_factory.mktemp("login-keys"))


@pytest.fixture(scope="module")
def rs(tmp_path_factory):
    s = acl_redis(tmp_path_factory.mktemp("login-redis-"))
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def reg(start_registry_module, single_image, tmp_path_factory):
    r = start_registry_module("up1")
    sk = Skopeo(tmp_path_factory.mktemp("login-seed"))
    for repo in ("ci/img", "claim/img", "team/img"):
        sk("copy", "-q", "--dest-tls-verify=false", single_image.ref,
           "docker://%s/%s:v1" % (r.host, repo))
    return r


@pytest.fixture(scope="module")
def idp(tmp_path_factory):
    p = start_idp(tmp_path_factory.mktemp("login-idp"))
    try:
        yield p
    finally:
        p.stop()


def config(reg, keys, rs, workdir, idp, **issuer_kw):
    return gateway_config(
        upstream(reg, default=True), policy=policy(),
        redis=redis_section(rs, workdir),
        audit={"spool_file": os.path.join(str(workdir), "spool"),
               "timeout": 2},
        identity={"token": token_cfg(keys),
                  "issuers": [issuer_cfg(idp, **issuer_kw)]})


def ready(g):
    wait_for(lambda: "oidc keys_loaded issuer=idp" in g.log_text(),
             timeout=30, what="the IdP's keys")
    wait_for(lambda: "revoke synced" in g.log_text(), timeout=20,
             what="the revocation table's first sync")
    return g


@pytest.fixture(scope="module")
def gw(start_gateway_module, reg, keys, rs, idp, tmp_path_factory):
    d = tmp_path_factory.mktemp("login-gw")
    return ready(start_gateway_module(config(reg, keys, rs, d, idp)))


def plain():
    s = requests.Session()
    s.trust_env = False
    return s


def records(rs):
    with rs.client() as c:
        return [d for _, d in entries_to_dicts(c.call("XRANGE", STREAM, "-",
                                                      "+"))]


def record_of(rs, rid):
    def find():
        for d in records(rs):
            if d["request_id"] == rid:
                return d
        return None
    return wait_for(find, timeout=20, what="audit record of %s" % rid)


def identity_state(g):
    r = plain().get(g.url + "/admin/identity", timeout=10)
    assert r.status_code == 200, r.text
    (st,) = [i for i in r.json()["issuers"] if i["name"] == "idp"]
    return st


def pull(sk, g, repo, cc, check=True):
    """skopeo inspect --raw through the gateway with the IdP token as
    the Basic password; the CompletedProcess."""
    return sk("inspect", "--raw", "--tls-verify=false", "--creds",
              "ci:" + cc, "docker://%s/%s:v1" % (g.host, repo), check=check)


# ---------------------------------------------------------------------------

def test_skopeo_pulls_what_policy_allows(gw, idp, rs, tmp_path):
    cc = idp.client_credentials_token()
    assert claims(cc)["client_id"] == "ci"
    logins = len([d for d in records(rs) if d["path"] == "/token"])
    sk = Skopeo(tmp_path / "skopeo")
    out = pull(sk, gw, "ci/img", cc)
    assert json.loads(out.stdout)["schemaVersion"] == 2
    # A whole copy (manifest, config, layers) with the same login.
    sk("copy", "-q", "--src-tls-verify=false", "--src-creds", "ci:" + cc,
       "docker://%s/ci/img:v1" % gw.host, "dir:" + str(tmp_path / "out"))
    assert (tmp_path / "out" / "manifest.json").exists()
    # By a claim rule (client_id), not the subject.
    pull(sk, gw, "claim/img", cc)
    # skopeo logged in at /token: audited with the subject and method.
    recs = wait_for(lambda: [d for d in records(rs)
                             if d["path"] == "/token"][logins:],
                    timeout=20, what="the logins' records")
    assert all(d["subject"] == "idp:ci" and d["auth_method"] == "oidc" and
               d["status"] == "200" for d in recs), recs
    assert gw.log_text().count("token issued method=oidc") >= 3

    # Not allowed for idp:ci: skopeo fails.
    r = pull(sk, gw, "team/img", cc, check=False)
    assert r.returncode != 0
    assert "unauthorized" in r.stderr.lower() or \
        "denied" in r.stderr.lower(), r.stderr
    # What the gateway answered it: a token without team/img, which
    # /v2/ refuses with 401 insufficient_scope (a client may ask again);
    # the IdP token itself as Basic on /v2/: identified, so 403.
    s = plain()
    r = s.get(gw.url + "/token", params=[
        ("service", SERVICE), ("scope", "repository:team/img:pull"),
        ("scope", "repository:ci/img:pull")], auth=("ci", cc), timeout=15)
    assert r.status_code == 200
    tok = r.json()["token"]
    assert access_of(tok) == {("repository", "ci/img"): ["pull"]}
    r = s.get(gw.url + "/v2/team/img/manifests/v1",
              headers={"Authorization": "Bearer " + tok}, timeout=15)
    assert r.status_code == 401
    assert 'error="insufficient_scope"' in r.headers["WWW-Authenticate"]
    r = s.get(gw.url + "/v2/team/img/manifests/v1", auth=("ci", cc),
              timeout=15)
    assert r.status_code == 403
    assert r.json()["errors"][0]["code"] == "DENIED"
    d = record_of(rs, r.headers["X-Request-Id"])
    assert (d["subject"], d["decision"]) == ("idp:ci", "deny")
    # Never a credential in the log or the audit.
    assert cc not in gw.log_text() and tok not in gw.log_text()
    assert cc not in json.dumps(records(rs))


def test_wrong_password_refused_and_audited(gw, idp, rs, tmp_path):
    cc = idp.client_credentials_token()
    h, p, sig = cc.split(".")
    bad = ".".join((h, p, sig[:-4] + ("AAAA" if sig[-4:] != "AAAA"
                                      else "BBBB")))
    sk = Skopeo(tmp_path / "skopeo")
    assert pull(sk, gw, "ci/img", bad, check=False).returncode != 0
    r = plain().get(gw.url + "/token", params={"service": SERVICE},
                    auth=("ci", bad), timeout=15)
    assert r.status_code == 401
    d = record_of(rs, r.headers["X-Request-Id"])
    assert d["auth_failure"] == "bad_signature" and d["action"] == "token"
    assert bad not in gw.log_text() and bad not in json.dumps(records(rs))


def test_token_revoke_through_the_acl_user_ends_idp_logins(
        start_gateway, reg, keys, rs, idp, tmp_path):
    """`portcullis token revoke` (WATCH/MULTI/EXEC, PUBLISH as the ACL
    user) reaches an IdP subject: a token issued before is refused."""
    g = ready(start_gateway(config(reg, keys, rs, tmp_path, idp)))
    sk = Skopeo(tmp_path / "skopeo")
    cc = idp.client_credentials_token()
    pull(sk, g, "ci/img", cc)
    out = run([gateway_bin(), "token", "revoke", "-c", g.config_path,
               "--subject", "idp:ci"], timeout=60)
    assert "revoked" in out.stdout + out.stderr, out.stdout + out.stderr
    wait_for(lambda: plain().get(
        g.url + "/token", params={"service": SERVICE}, auth=("ci", cc),
        timeout=15).status_code == 401, timeout=5,
        what="the revocation to reach the gateway")
    assert "login_failed reason=revoked" in g.log_text()
    assert pull(sk, g, "ci/img", cc, check=False).returncode != 0


def test_idp_key_rotation_waits_for_keys(start_gateway, reg, keys, rs,
                                         tmp_path):
    """The provider rotates its key (restart with a new kid): a token
    signed with the key the gateway has not seen makes the request wait
    (the credential stage) for the issuer's JWKS fetch, then passes,
    with curl-like requests and with skopeo; no restart."""
    p = start_idp(tmp_path / "idp2", keys=[("RS256", "rsa-1")])
    try:
        g = ready(start_gateway(dict(
            config(reg, keys, rs, tmp_path, p, min_refresh_interval=1),
            log={"level": "debug"})))
        s = plain()
        r = s.get(g.url + "/token", params={
            "service": SERVICE, "scope": "repository:ci/app:push"},
            auth=("ci", p.client_credentials_token()), timeout=15)
        assert r.status_code == 200
        p.restart(keys=[("RS256", "rsa-2")])
        cc = p.client_credentials_token()
        assert claims_header(cc)["kid"] == "rsa-2"

        def push_ok():
            r = s.post(g.url + "/v2/ci/app/blobs/uploads/",
                       auth=("ci", cc), timeout=15)
            # Rate-limited (min_refresh_interval after the first fetch):
            # 401 unknown_kid until a fetch may start.
            assert r.status_code in (202, 401), r.text
            return r.status_code == 202
        wait_for(push_ok, timeout=30, what="the new kid to be accepted")
        assert "trigger=unknown-kid" in g.log_text()
        # The request that met the new kid waited for the fetch.
        assert "credential waits for issuer idp keys" in g.log_text()
        # skopeo with a token of the new key: the pull goes through.
        sk = Skopeo(tmp_path / "skopeo")
        out = pull(sk, g, "ci/img", p.client_credentials_token())
        assert json.loads(out.stdout)["schemaVersion"] == 2
        assert identity_state(g)["kids"] == ["rsa-2"]
        # Not even at debug level.
        assert cc not in g.log_text()
    finally:
        p.stop()


def test_provider_down_cached_keys_still_verify(start_gateway, reg, keys,
                                                rs, tmp_path):
    """The provider stops; once a periodic refresh has failed (on
    /admin/identity), a token minted before the stop and never shown to
    the gateway is verified with the keys it kept: skopeo pulls."""
    p = start_idp(tmp_path / "idp4")
    try:
        g = ready(start_gateway(
            config(reg, keys, rs, tmp_path, p, refresh=2,
                   min_refresh_interval=1)))
        assert identity_state(g)["loaded"]
        cc = p.client_credentials_token()
        p.stop()
        st = wait_for(lambda: (s := identity_state(g))["failures"] > 0 and s,
                      timeout=30, what="a failed periodic refresh")
        assert st["loaded"] and st["last_error"] != ""
        assert "oidc refresh_failed issuer=idp" in g.log_text()
        assert "token issued" not in g.log_text()   # cc never seen
        sk = Skopeo(tmp_path / "skopeo")
        out = pull(sk, g, "ci/img", cc)
        assert json.loads(out.stdout)["schemaVersion"] == 2
        assert "token issued method=oidc" in g.log_text()
        # Still down: the keys were the kept ones.
        assert identity_state(g)["failures"] > 0
        # A bad one is still refused while the provider is down.
        h, pl, sig = cc.split(".")
        bad = ".".join((h, pl, sig[:-4] + ("AAAA" if sig[-4:] != "AAAA"
                                           else "BBBB")))
        assert pull(sk, g, "ci/img", bad, check=False).returncode != 0
    finally:
        p.stop()


def test_tokens_never_outlive_the_idp_token(start_gateway, reg, keys, rs,
                                            tmp_path):
    """A CI job's IdP token valid two minutes buys no week: the refresh
    token (offline_token=true, and the password grant's
    access_type=offline) ends when the IdP token does, and so does the
    access token, down to distribution's floor of 60 s (an IdP token
    with 30 s left gets a 60 s access token, and a 30 s refresh
    token)."""
    p = start_idp(tmp_path / "idp5", at_ttl=120)
    try:
        cfg = config(reg, keys, rs, tmp_path, p)
        cfg["identity"]["token"].update(expires_in=300,
                                        refresh_expires_in=7 * 86400)
        g = ready(start_gateway(cfg))
        s = plain()
        cc = p.client_credentials_token()
        assert claims(cc)["exp"] - claims(cc)["iat"] == 120
        r = s.get(g.url + "/token", params=[
            ("service", SERVICE), ("scope", "repository:ci/img:pull"),
            ("offline_token", "true")], auth=("ci", cc), timeout=15)
        assert r.status_code == 200, r.text
        body = r.json()
        at, rt = claims(body["token"]), claims(body["refresh_token"])
        assert rt["exp"] <= claims(cc)["exp"]
        assert at["exp"] <= claims(cc)["exp"]
        assert 60 <= body["expires_in"] <= 120
        assert at["exp"] - at["iat"] == body["expires_in"]
        # The refresh grant: its access token ends with the refresh
        # token (and so with the IdP token).
        r = s.post(g.url + "/token", data={
            "grant_type": "refresh_token", "service": SERVICE,
            "refresh_token": body["refresh_token"],
            "scope": "repository:ci/img:pull"}, timeout=15)
        assert r.status_code == 200, r.text
        assert claims(r.json()["token"])["exp"] <= claims(cc)["exp"]

        # 30 s left: the access token gets the 60 s floor, the refresh
        # token no more than the 30 s.
        p.at_ttl = 30
        p.restart()
        cc = p.client_credentials_token()
        assert claims(cc)["exp"] - claims(cc)["iat"] == 30
        r = s.post(g.url + "/token", data={
            "grant_type": "password", "service": SERVICE,
            "client_id": "containerd", "username": "ci", "password": cc,
            "access_type": "offline", "scope": "repository:ci/img:pull"},
            timeout=15)
        assert r.status_code == 200, r.text
        body = r.json()
        at, rt = claims(body["token"]), claims(body["refresh_token"])
        assert body["expires_in"] == 60 and at["exp"] - at["iat"] == 60
        assert rt["exp"] <= claims(cc)["exp"]
        assert cc not in g.log_text()
    finally:
        p.stop()


def test_idp_token_past_its_exp_within_leeway_gets_nothing(gw, idp):
    """An IdP token 10 s past its exp still verifies (the issuer's
    leeway, 60 s by default), but there is nothing left to issue a token
    for: 401, auth_failure expired, no token at all."""
    now = int(time.time())
    cc = idp_sign(idp, {"iss": idp.issuer, "aud": "https://portcullis.test",
                        "sub": "ci", "client_id": "ci", "iat": now - 100,
                        "exp": now - 10})
    s = plain()
    r = s.get(gw.url + "/token", params=[
        ("service", SERVICE), ("scope", "repository:ci/img:pull"),
        ("offline_token", "true")], auth=("ci", cc), timeout=15)
    assert r.status_code == 401, r.text
    assert "token login_failed reason=expired" in gw.log_text()
    # The same token 10 s before its exp: a 60 s access token, a refresh
    # token of 10 s.
    cc = idp_sign(idp, {"iss": idp.issuer, "aud": "https://portcullis.test",
                        "sub": "ci", "client_id": "ci", "iat": now - 100,
                        "exp": now + 10})
    r = s.get(gw.url + "/token", params=[
        ("service", SERVICE), ("scope", "repository:ci/img:pull"),
        ("offline_token", "true")], auth=("ci", cc), timeout=15)
    assert r.status_code == 200, r.text
    assert r.json()["expires_in"] == 60
    assert claims(r.json()["refresh_token"])["exp"] <= now + 10
