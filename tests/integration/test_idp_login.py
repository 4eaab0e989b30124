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

Besides (moved here from test_token.py): IdP JWTs as Basic passwords
at /token (GET and the chunked password grant), on /v2/ and as a Bearer
on /v2/; wrong ones audited with their reason (malformed_secret among
them); skopeo login/push/pull straight to a registry:2 trusting the
gateway; `docker login` (identitytoken, refresh grant) and `ctr -u`
(password grant); claim rules; subjects revocation could not name; no
credential in a debug log.  No token outlives the IdP token it was
issued for (refresh tokens end with it; access tokens too, down to the
60 s floor; one past its exp within the leeway gets nothing).  The
verified IdP token cache (identity.idp_cache_entries): a repeated token
is a hit on /admin/identity (Basic and Bearer on /v2/, Basic at /token),
a reload empties it, a key the provider withdraws ends it, a revoked
subject's cached token is refused, an expired one is never served past
exp + leeway; the size bounds it.

Acceptance 5 alongside: Redis runs with the default user off and the
gateway logs in as the README's ACL user (lib/idfix.py); logins are
audited there, and `portcullis token revoke` through that user ends the
IdP subject's logins.

Real parts only: oidc-provider on node, docker-registry, skopeo,
dockerd, containerd, redis-server."""

import base64
import json
import os
import signal
import time

import pytest

from lib.clients import Skopeo
from lib.gateway import gateway_bin, gateway_config, upstream
from lib.idfix import ISSUER, REGISTRY_AUTH, SERVICE, access_of, \
    acl_redis, bearer, blob_registry, chal, chunked_post, claims, \
    claims_header, cli, idp_sign, issuer_cfg, jose_sign, needs_idp, \
    plain, policy, record_of, records, redis_section, sess, start_idp, \
    token_cfg
from lib.idfix import keys, pki  # noqa: F401 (fixtures)
from lib.registry import Registry
from lib.util import run, wait_for

pytestmark = needs_idp

def login_policy():
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
def rs(tmp_path_factory):
    s = acl_redis(tmp_path_factory.mktemp("login-redis-"))
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def redis_mod(rs):
    return rs


@pytest.fixture(scope="module")
def reg(start_registry_module, single_image, tmp_path_factory):
    r = blob_registry(start_registry_module)
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
        upstream(reg, default=True), policy=login_policy(),
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
        start_gateway, reg, keys, idp, tmp_path):
    """`portcullis token revoke` (WATCH/MULTI/EXEC, PUBLISH as the ACL
    user) reaches an IdP subject: a token issued before is refused.  A
    Redis of its own: the revocation must not reach the other tests."""
    rs = acl_redis(tmp_path / "revoke-redis")
    try:
        revoke_idp_subject(start_gateway, reg, keys, rs, idp, tmp_path)
    finally:
        rs.stop()


def revoke_idp_subject(start_gateway, reg, keys, rs, idp, tmp_path):
    g = ready(start_gateway(config(reg, keys, rs, tmp_path, idp)))
    sk = Skopeo(tmp_path / "skopeo")
    cc = idp.client_credentials_token()
    pull(sk, g, "ci/img", cc)
    # The IdP token is in the verified-token cache now: a hit.
    h = idp_cache(g)["hits"]
    assert plain().get(g.url + "/token", params={"service": SERVICE},
                       auth=("ci", cc), timeout=15).status_code == 200
    assert idp_cache(g)["hits"] == h + 1 and idp_cache(g)["entries"] == 1
    out = run([gateway_bin(), "token", "revoke", "-c", g.config_path,
               "--subject", "idp:ci"], timeout=60)
    assert "revoked" in out.stdout + out.stderr, out.stdout + out.stderr
    # The cached verification is refused as soon as the revocation
    # arrives (and purged from the cache).
    wait_for(lambda: plain().get(
        g.url + "/token", params={"service": SERVICE}, auth=("ci", cc),
        timeout=15).status_code == 401, timeout=5,
        what="the revocation to reach the gateway")
    assert "login_failed reason=revoked" in g.log_text()
    assert idp_cache(g)["entries"] == 0
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


def idp_cache(g):
    """The verified IdP token cache's counters on /admin/identity."""
    r = plain().get(g.url + "/admin/identity", timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["idp_token_cache"]


def test_repeated_idp_token_is_a_cache_hit(start_gateway, reg, keys, rs,
                                           tmp_path):
    """The same IdP token again (Basic on /v2/, Bearer on /v2/, Basic at
    /token) is served from the verified-token cache: a hit on
    /admin/identity, no second full verification.  A reload empties the
    cache; the provider dropping the key that verified it (rotation)
    ends the cached verification at once, as it ends the uncached one;
    an expired token is refused, never served past exp + leeway."""
    p = start_idp(tmp_path / "idp6", keys=[("RS256", "rsa-1")])
    try:
        cfg = config(reg, keys, rs, tmp_path, p, refresh=2,
                     min_refresh_interval=1, leeway=1)
        g = ready(start_gateway(cfg))
        s = plain()
        cc = p.client_credentials_token()
        url = g.url + "/v2/ci/img/tags/list"
        hdr = {}
        c0 = idp_cache(g)
        assert c0["hits"] == 0 and c0["entries"] == 0
        r = s.get(url, auth=("ci", cc), headers=hdr, timeout=15)
        assert r.status_code == 200, r.text
        c1 = idp_cache(g)
        assert (c1["misses"], c1["hits"], c1["entries"]) == \
            (c0["misses"] + 1, 0, 1)
        # Basic again, then the same token as a Bearer, then at /token:
        # each a hit, none verified again.
        r = s.get(url, auth=("ci", cc), headers=hdr, timeout=15)
        assert r.status_code == 200, r.text
        r = s.get(url, headers=dict(hdr, **bearer(cc)), timeout=15)
        assert r.status_code == 200, r.text
        r = s.get(g.url + "/token", params={
            "service": SERVICE, "scope": "repository:ci/img:pull"},
            auth=("ci", cc), timeout=15)
        assert r.status_code == 200, r.text
        c2 = idp_cache(g)
        assert (c2["misses"], c2["hits"], c2["entries"]) == \
            (c1["misses"], 3, 1)
        # The policy still runs per request: a hit buys nothing it denies.
        r = s.get(g.url + "/v2/team/img/tags/list", auth=("ci", cc),
                  timeout=15)
        assert r.status_code == 403
        assert idp_cache(g)["hits"] == 4

        # A reload (a new snapshot, even unchanged) empties it.
        with open(g.config_path, "w") as f:
            json.dump(g.config, f)
        n = g.log_text().count("server reload done")
        os.kill(g.pid, signal.SIGHUP)
        wait_for(lambda: g.log_text().count("server reload done") > n,
                 timeout=20, what="the reload")
        r = s.get(url, auth=("ci", cc), headers=hdr, timeout=15)
        assert r.status_code == 200, r.text
        c3 = idp_cache(g)
        assert (c3["misses"], c3["hits"]) == (c2["misses"] + 1, 4)

        # The provider rotates: rsa-1 is gone from its JWKS.  Once the
        # gateway holds the new set, the cached verification by rsa-1
        # is dropped, not served.
        p.restart(keys=[("RS256", "rsa-2")])
        wait_for(lambda: identity_state(g)["kids"] == ["rsa-2"],
                 timeout=30, what="the rotated key set")
        r = s.get(url, auth=("ci", cc), headers=hdr, timeout=15)
        assert r.status_code == 401, r.text
        c4 = idp_cache(g)
        assert c4["key_drops"] == 1 and c4["hits"] == c3["hits"]
        # A token of the new key is verified and cached as before.
        cc2 = p.client_credentials_token()
        for _ in range(2):
            r = s.get(url, headers=dict(hdr, **bearer(cc2)), timeout=15)
            assert r.status_code == 200, r.text
        assert idp_cache(g)["hits"] == c4["hits"] + 1

        # A token living 5 s (leeway 1 s): cached, then refused once
        # past exp + leeway, never served from the cache after that.
        now = int(time.time())
        exp = now + 5
        short = idp_sign(p, {"iss": p.issuer,
                             "aud": "https://portcullis.test", "sub": "ci",
                             "client_id": "ci", "iat": now, "exp": exp})
        last_ok = []

        def refused():
            t = time.time()
            r = s.get(url, auth=("ci", short), headers=hdr, timeout=15)
            if r.status_code == 200:
                last_ok.append(t)
                return False
            assert r.status_code == 401, r.text
            return True
        h0 = idp_cache(g)["hits"]
        wait_for(refused, timeout=30, interval=0.2,
                 what="the short token to expire")
        assert len(last_ok) >= 2 and idp_cache(g)["hits"] > h0
        # Served (from the cache) only while the uncached check would
        # have taken it: before exp + leeway.
        assert last_ok[-1] < exp + 1
        assert time.time() >= exp
        r = s.get(url, auth=("ci", short), headers=hdr, timeout=15)
        assert r.status_code == 401
        assert cc not in g.log_text() and short not in g.log_text()
    finally:
        p.stop()


def test_idp_cache_entries_bounds_the_cache(start_gateway, reg, keys, rs,
                                            idp, tmp_path):
    """identity.idp_cache_entries: 1 keeps one token (the least recently
    used goes); 0, by a reload, keeps none."""
    cfg = config(reg, keys, rs, tmp_path, idp)
    cfg["identity"]["idp_cache_entries"] = 1
    g = ready(start_gateway(cfg))
    s = plain()
    a, b = idp.client_credentials_token(), idp.client_credentials_token()
    assert a != b

    def get(tok):
        r = s.get(g.url + "/v2/ci/img/tags/list", headers=bearer(tok),
                  timeout=15)
        assert r.status_code == 200, r.text
    for tok in (a, a, b, a):
        get(tok)
    c = idp_cache(g)
    # a: miss, hit; b: miss (a dropped); a: miss again.
    assert (c["hits"], c["misses"], c["entries"]) == (1, 3, 1)
    cfg = dict(g.config)
    cfg["identity"] = dict(cfg["identity"], idp_cache_entries=0)
    with open(g.config_path, "w") as f:
        json.dump(cfg, f)
    n = g.log_text().count("server reload done")
    os.kill(g.pid, signal.SIGHUP)
    wait_for(lambda: g.log_text().count("server reload done") > n,
             timeout=20, what="the reload")
    for tok in (a, a):
        get(tok)
    c = idp_cache(g)
    assert (c["hits"], c["entries"]) == (1, 0)


def sign_without_kid(p, claims_):
    """A JWT signed RS256 with the provider's first RSA key whose header
    names no kid (what a provider with a single key may issue)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa
    from lib.idfix import _b64int, _b64url
    jwk = next(k for k in p.jwks["keys"] if k["kty"] == "RSA")
    pub = rsa.RSAPublicNumbers(_b64int(jwk["e"]), _b64int(jwk["n"]))
    key = rsa.RSAPrivateNumbers(
        _b64int(jwk["p"]), _b64int(jwk["q"]), _b64int(jwk["d"]),
        _b64int(jwk["dp"]), _b64int(jwk["dq"]), _b64int(jwk["qi"]),
        pub).private_key()
    signing = "%s.%s" % (
        _b64url(json.dumps({"alg": "RS256", "typ": "JWT"}).encode()),
        _b64url(json.dumps(claims_).encode()))
    sig = key.sign(signing.encode(), padding.PKCS1v15(), hashes.SHA256())
    return signing + "." + _b64url(sig)


def test_idp_cache_hit_selects_the_key_as_verifying_would(
        start_gateway, reg, keys, rs, tmp_path):
    """A token without a kid is verified with the issuer's only key.
    Once the provider publishes a second key (the first unchanged), the
    uncached check cannot tell which key such a token means and refuses
    it; a cached verification of one is refused alike, not served
    because the key it was verified with is still in the set."""
    from lib.idp import make_jwk
    p = start_idp(tmp_path / "idp7", keys=[("RS256", "rsa-1")])
    try:
        g = ready(start_gateway(config(reg, keys, rs, tmp_path, p,
                                       refresh=2, min_refresh_interval=1)))
        s = plain()
        url = g.url + "/v2/ci/img/tags/list"
        now = int(time.time())
        body = {"iss": p.issuer, "aud": "https://portcullis.test",
                "sub": "ci", "client_id": "ci", "iat": now,
                "exp": now + 600}
        tok = sign_without_kid(p, body)
        assert "kid" not in claims_header(tok)
        for _ in range(2):
            r = s.get(url, headers=bearer(tok), timeout=15)
            assert r.status_code == 200, r.text
        # The same rsa-1 (same material, same kid) and a new rsa-2.
        p._save_state()
        p.stop()
        p.jwks = {"keys": [p.jwks["keys"][0], make_jwk("RS256", "rsa-2")]}
        p.kids = ["rsa-1", "rsa-2"]
        p.jwks_path = str(tmp_path / "idp7-jwks-2.json")
        with open(p.jwks_path, "w") as f:
            json.dump(p.jwks, f)
        p.start()
        wait_for(lambda: sorted(identity_state(g)["kids"]) ==
                 ["rsa-1", "rsa-2"], timeout=30, what="the second key")
        # Uncached: a kid-less token never seen is refused now.
        body["jti"] = "fresh"
        r = s.get(url, headers=bearer(sign_without_kid(p, body)),
                  timeout=15)
        assert r.status_code == 401, r.text
        # Cached: refused alike.
        r = s.get(url, headers=bearer(tok), timeout=15)
        assert r.status_code == 401, r.text
    finally:
        p.stop()


# ---------------------------------------------------------------------------
# IdP JWTs as Basic passwords at /token (the npm oidc-provider, a real
# OpenID Connect provider): a client-credentials access token of client
# "ci" logs in as idp:ci.

def idp_policy(pki):
    pol = policy(pki)
    pol["rules"].append(
        {"id": "ci-rw", "effect": "allow", "repositories": ["ci/**"],
         "subjects": ["user:idp:ci"], "actions": ["pull", "push"]})
    pol["rules"].append(
        {"id": "ci-claim", "effect": "allow", "repositories": ["claim/**"],
         "subjects": [{"claim": "client_id", "equals": "ci"}],
         "actions": ["pull", "push"]})
    return pol


@pytest.fixture(scope="module")
def idgw(start_gateway_module, reg, pki, keys, redis_mod, idp,
         tmp_path_factory):
    spool = tmp_path_factory.mktemp("token-idp-spool") / "spool"
    cfg = gateway_config(
        upstream(reg, default=True),
        listen={"tls": {"cert_file": pki.server[0],
                        "key_file": pki.server[1],
                        "client_ca_file": pki.ca,
                        "verify_client": "optional"}},
        policy=idp_policy(pki),
        identity={"token": token_cfg(keys), "issuers": [
            {"name": "idp", "issuer": idp.issuer, "ca_file": idp.ca,
             "audiences": ["https://portcullis.test"], "prefix": "idp:",
             "groups_claim": "groups", "algorithms": ["RS256", "ES256"]}]},
        redis=redis_section(redis_mod, redis_mod.dir),
        audit={"redis": "127.0.0.1:%d" % redis_mod.port,
               "spool_file": str(spool), "timeout": 2})
    g = start_gateway_module(cfg, tls_client={"ca": pki.ca})
    wait_for(lambda: "oidc keys_loaded issuer=idp" in g.log_text(),
             timeout=30, what="the IdP's keys")
    return g


@needs_idp
def test_idp_token_as_basic_password(idgw, idp, pki, reg):
    cc = idp.client_credentials_token()
    s = sess(pki)
    r = s.get(idgw.url + "/token", params=[
        ("service", SERVICE), ("account", "gitlab-ci-token"),
        ("scope", "repository:ci/app:pull,push"),
        ("scope", "repository:team/app:pull"),
        ("offline_token", "true")],
        auth=("gitlab-ci-token", cc), timeout=15)
    assert r.status_code == 200, r.text
    tok = r.json()["token"]
    c = claims(tok)
    assert c["sub"] == "idp:ci" and c["auth_method"] == "oidc"
    # team/** is the pusher's only: nothing there for idp:ci.
    assert access_of(tok) == {("repository", "ci/app"): ["pull", "push"]}
    assert claims(r.json()["refresh_token"])["sub"] == "idp:ci"
    r = s.post(idgw.url + "/v2/ci/app/blobs/uploads/", headers=bearer(tok),
               timeout=15)
    assert r.status_code == 202, r.text
    assert cc not in idgw.log_text()


@needs_idp
def test_idp_password_grant_chunked(idgw, idp, pki):
    cc = idp.client_credentials_token()
    # containerd: several scopes in one field, '+' for the space.
    form = ("grant_type=password&client_id=containerd&service=%s&username="
            "ci&password=%s&access_type=offline&scope=repository%%3Aci%%2F"
            "app%%3Apull+repository%%3Apub%%2Fapp%%3Apull" % (SERVICE, cc))
    status, payload = chunked_post(idgw, pki, form)
    assert status == 200, payload
    out = json.loads(payload[payload.index(b"{"):payload.rindex(b"}") + 1])
    assert access_of(out["access_token"]) == {
        ("repository", "ci/app"): ["pull"],
        ("repository", "pub/app"): ["pull"]}
    assert claims(out["refresh_token"])["token_use"] == "refresh"


@needs_idp
@pytest.mark.parametrize("kind,reason", [
    ("tampered", "bad_signature"),
    ("not_a_jwt", "no_credential_backend"),
    ("unknown_issuer", "unknown_issuer"),
    ("cut_secret", "malformed_secret"),
    ("bad_secret_char", "malformed_secret"),
])
def test_idp_bad_password(idgw, idp, pki, keys, redis_mod, kind, reason):
    if kind == "tampered":
        # Another audience written into a real token: the signature fails.
        pw = idp.client_credentials_token()
        h, p, sig = pw.split(".")
        c = claims(pw)
        c["aud"] = "https://elsewhere.test"
        pw = ".".join((h, base64.urlsafe_b64encode(json.dumps(c).encode())
                       .decode().rstrip("="), sig))
    elif kind == "not_a_jwt":
        pw = "hunter2-not-a-jwt"
    elif kind == "cut_secret":
        # A gateway secret that lost its end on the way (a copy-paste).
        pw = "pcs_0123456789abcdef_" + "A" * 30
    elif kind == "bad_secret_char":
        pw = "pcs_0123456789abcdeg_" + "A" * 43
    else:
        # A well-signed JWT of an issuer that is not configured.
        pw = jose_sign(keys["cur"] + ".key", [], issuer="https://nobody")
    r = sess(pki).get(idgw.url + "/token", params={"service": SERVICE},
                      auth=("ci", pw), timeout=15)
    assert r.status_code == 401
    d = record_of(redis_mod, r.headers["X-Request-Id"])
    assert d["auth_failure"] == reason and d["action"] == "token"
    assert pw not in json.dumps(d) and pw not in idgw.log_text()
    if reason == "malformed_secret":
        # On /v2/ too: refused (not ignored as a Docker Hub login is).
        r = sess(pki).get(idgw.url + "/v2/pub/app/tags/list",
                          auth=("ci", pw), timeout=15)
        assert r.status_code == 401
        assert 'error="invalid_token"' in chal(r)
        d = record_of(redis_mod, r.headers["X-Request-Id"])
        assert d["auth_failure"] == reason


@needs_idp
def test_skopeo_login_registry_with_gateway_tokens(idgw, idp, pki, keys,
                                                   tmp_path, single_image):
    """skopeo login, push and pull straight to a registry:2 whose token
    server is the gateway, with an IdP token as the password."""
    extra = REGISTRY_AUTH.format(realm=idgw.url + "/token", service=SERVICE,
                                 issuer=ISSUER, crt=keys["cur"] + ".crt")
    reg = Registry(tmp_path / "reg", name="trusting", extra_config=extra)
    try:
        sk = Skopeo(tmp_path / "skopeo")
        cc = idp.client_credentials_token()
        r = sk("login", "--tls-verify=false", "-u", "ci", "-p", "wrong.jwt.x",
               reg.host, check=False)
        assert r.returncode != 0
        sk("login", "--tls-verify=false", "-u", "ci", "-p", cc, reg.host)
        dest = "docker://%s/ci/app:v1" % reg.host
        sk("copy", "-q", "--dest-tls-verify=false", single_image.ref, dest)
        out = sk("inspect", "--raw", "--tls-verify=false", dest)
        assert json.loads(out.stdout)["schemaVersion"] == 2
        # idp:ci may not push team/**: the registry refuses the token.
        r = sk("copy", "-q", "--dest-tls-verify=false", single_image.ref,
               "docker://%s/team/app:v1" % reg.host, check=False)
        assert r.returncode != 0
        assert cc not in idgw.log_text()
    finally:
        reg.stop()


@needs_idp
def test_idp_jwt_on_v2(idgw, idp, pki, reg, redis_mod):
    cc = idp.client_credentials_token()
    s = sess(pki)
    # Basic with the IdP token as the password (GitLab's
    # gitlab-ci-token style), and the token straight as a Bearer.
    r = s.post(idgw.url + "/v2/ci/app/blobs/uploads/",
               auth=("gitlab-ci-token", cc), timeout=15)
    assert r.status_code == 202, r.text
    d = record_of(redis_mod, r.headers["X-Request-Id"])
    assert d["subject"] == "idp:ci" and d["auth_method"] == "oidc"
    r = s.post(idgw.url + "/v2/ci/app/blobs/uploads/", headers=bearer(cc),
               timeout=15)
    assert r.status_code == 202, r.text
    # Not allowed for idp:ci: identified, so 403.
    r = s.post(idgw.url + "/v2/team/app/blobs/uploads/",
               auth=("ci", cc), timeout=15)
    assert r.status_code == 403
    # A Docker Hub login (what a mirror's dockerd sends) is ignored:
    # anonymous, which may pull pub/**.
    r = s.get(idgw.url + "/v2/pub/app/blobs/" + reg.digest,
              auth=("hubuser", "hub.pass.word"), timeout=15)
    assert r.status_code == 200
    # A tampered IdP token: 401 invalid_token, even where anonymous may.
    h, p, sig = cc.split(".")
    bad = ".".join((h, p, sig[:-4] + ("AAAA" if sig[-4:] != "AAAA"
                                      else "BBBB")))
    r = s.get(idgw.url + "/v2/pub/app/blobs/" + reg.digest,
              auth=("ci", bad), timeout=15)
    assert r.status_code == 401
    assert 'error="invalid_token"' in chal(r)
    d = record_of(redis_mod, r.headers["X-Request-Id"])
    assert d["auth_failure"] == "bad_signature"
    assert cc not in idgw.log_text() and bad not in idgw.log_text()


# test_idp_key_rotation_waits_for_keys: now in test_idp_login.py (with
# skopeo).


# ---------------------------------------------------------------------------
# docker login and ctr -u against the gateway, with an IdP token as the
# password, on a gateway whose policy lets anonymous callers pull nothing
# (so /v2/ challenges, as a registry requiring authentication does).

@pytest.fixture
def closed_gw(start_gateway, reg, pki, keys, idp, redis_mod, tmp_path,
              single_image):
    sk = Skopeo(tmp_path / "seed")
    sk("copy", "-q", "--dest-tls-verify=false", single_image.ref,
       "docker://%s/ci/img:v1" % reg.host)
    pol = idp_policy(pki)
    pol["rules"] = [r for r in pol["rules"] if r["id"] != "anon-pub"]
    g = start_gateway(gateway_config(
        upstream(reg, default=True),
        listen={"tls": {"cert_file": pki.server[0],
                        "key_file": pki.server[1]}},
        policy=pol,
        identity={"token": token_cfg(keys), "issuers": [
            {"name": "idp", "issuer": idp.issuer, "ca_file": idp.ca,
             "audiences": ["https://portcullis.test"], "prefix": "idp:",
             "algorithms": ["RS256", "ES256"]}]},
        redis=redis_section(redis_mod, redis_mod.dir),
        audit={"redis": "127.0.0.1:%d" % redis_mod.port,
               "spool_file": str(tmp_path / "spool"), "timeout": 2}),
        tls_client={"ca": pki.ca})
    wait_for(lambda: "oidc keys_loaded issuer=idp" in g.log_text(),
             timeout=30, what="the IdP's keys")
    r = sess(pki).get(g.url + "/v2/", timeout=15)
    assert r.status_code == 401 and chal(r).startswith("Bearer realm=")
    return g


def token_records(rs, method):
    return [d for d in records(rs)
            if d["path"] == "/token" and d["method"] == method]


@needs_idp
@pytest.mark.skipif(not os.path.exists("/usr/sbin/dockerd"),
                    reason="dockerd is not installed")
def test_docker_login_stores_identity_token(closed_gw, start_dockerd, idp,
                                            pki, redis_mod):
    d = start_dockerd()
    with open(pki.ca, "rb") as f, \
            open(os.path.join(d.certs_dir(closed_gw.host), "ca.crt"),
                 "wb") as g:
        g.write(f.read())
    cc = idp.client_credentials_token()
    posts = len(token_records(redis_mod, "POST"))
    d.docker("login", "-u", "ci", "-p", cc, closed_gw.host)
    with open(os.path.join(d.docker_config, "config.json")) as f:
        auths = json.load(f)["auths"]
    entry = auths[closed_gw.host]
    # docker keeps the refresh token, not the password.
    assert "identitytoken" in entry
    assert claims(entry["identitytoken"])["token_use"] == "refresh"
    assert claims(entry["identitytoken"])["sub"] == "idp:ci"
    d.docker("pull", "%s/ci/img:v1" % closed_gw.host, timeout=300)
    # The pull got its token with the refresh grant (a POST).
    assert wait_for(lambda: len(token_records(redis_mod, "POST")) > posts,
                    timeout=20, what="the refresh grant's record")
    assert cc not in closed_gw.log_text()


@needs_idp
def test_ctr_user_uses_password_grant(closed_gw, start_containerd, idp,
                                      pki, redis_mod):
    c = start_containerd()
    # ctr takes a 127.0.0.1 host for plain HTTP unless hosts.toml says.
    hd = os.path.join(c.dir, "certs.d")
    os.makedirs(os.path.join(hd, closed_gw.host), exist_ok=True)
    with open(os.path.join(hd, closed_gw.host, "hosts.toml"), "w") as f:
        f.write('server = "https://%s"\n\n[host."https://%s"]\n'
                '  capabilities = ["pull", "resolve"]\n  ca = "%s"\n' % (
                    closed_gw.host, closed_gw.host, pki.ca))
    cc = idp.client_credentials_token()
    posts = len(token_records(redis_mod, "POST"))
    c.ctr("images", "pull", "--hosts-dir", hd, "-u", "ci:" + cc,
          "%s/ci/img:v1" % closed_gw.host, timeout=300)
    recs = wait_for(lambda: token_records(redis_mod, "POST")[posts:],
                    timeout=20, what="the password grant's record")
    assert recs[0]["status"] == "200" and recs[0]["subject"] == "idp:ci"
    r = c.ctr("images", "pull", "--hosts-dir", hd, "-u", "ci:x.y.z",
              "%s/ci/img:v1" % closed_gw.host, timeout=120, check=False)
    assert r.returncode != 0
    assert cc not in closed_gw.log_text()


# ---------------------------------------------------------------------------
# Claims, subjects revocation cannot name, and no credential in a debug log.

@needs_idp
def test_idp_claims_reach_the_policy(idgw, idp, pki):
    """A claim rule (client_id = ci) decides at /token, on /v2/ with the
    gateway token (whose idp_claims carry the claims), on /v2/ with the
    IdP token itself, and at the refresh grant."""
    cc = idp.client_credentials_token()
    s = sess(pki)
    r = s.get(idgw.url + "/token", params=[
        ("service", SERVICE), ("scope", "repository:claim/app:push,pull"),
        ("offline_token", "true")], auth=("ci", cc), timeout=15)
    assert r.status_code == 200, r.text
    tok, rt = r.json()["token"], r.json()["refresh_token"]
    assert access_of(tok) == {("repository", "claim/app"): ["pull", "push"]}
    assert claims(tok)["idp_claims"]["client_id"] == ["ci"]
    r = s.post(idgw.url + "/v2/claim/app/blobs/uploads/",
               headers=bearer(tok), timeout=15)
    assert r.status_code == 202, r.text
    r = s.post(idgw.url + "/v2/claim/app/blobs/uploads/", auth=("ci", cc),
               timeout=15)
    assert r.status_code == 202, r.text
    status, payload = chunked_post(idgw, pki, (
        "grant_type=refresh_token&service=%s&scope=repository%%3Aclaim"
        "%%2Fapp%%3Apush&refresh_token=%s" % (SERVICE, rt)))
    assert status == 200, payload
    out = json.loads(payload[payload.index(b"{"):payload.rindex(b"}") + 1])
    assert access_of(out["access_token"]) == {
        ("repository", "claim/app"): ["push"]}


@needs_idp
@pytest.mark.parametrize("sub", ["a" * 1022, "main\nforged"],
                         ids=["long", "newline"])
def test_idp_subject_that_cannot_be_revoked_is_refused(
        start_gateway, reg, pki, keys, idp, tmp_path, sub):
    """`portcullis token revoke --subject` can name only subjects of at
    most REVOKE_SUBJECT_MAX (1024) bytes without control characters (the
    gateway drops any other message or hash field): an IdP subject
    outside that (a CI claim the job's author controls, as a branch
    name) would be a login no revocation but --all could reach.  Such a
    subject is refused at login.  (1022 bytes pass max_claim_bytes,
    1024; with the prefix the subject is 1026.)"""
    rs = acl_redis(tmp_path / "sub-redis")
    try:
        g = start_gateway(gateway_config(
            upstream(reg, default=True), policy=idp_policy(pki),
            redis=redis_section(rs, tmp_path),
            identity={"token": token_cfg(keys), "issuers": [
                {"name": "idp", "issuer": idp.issuer, "ca_file": idp.ca,
                 "audiences": ["https://portcullis.test"],
                 "prefix": "idp:", "subject_claim": "ref",
                 "algorithms": ["RS256", "ES256"]}]}))
        wait_for(lambda: "oidc keys_loaded issuer=idp" in g.log_text(),
                 timeout=30, what="the IdP's keys")
        idp.set_state(clientClaims={"ci": {"ref": sub}})
        cc = idp.client_credentials_token()
        assert claims(cc)["ref"] == sub
        s = plain()
        r = s.get(g.url + "/token", params={"service": SERVICE},
                  auth=("ci", cc), timeout=15)
        assert r.status_code == 401, r.text
        assert "login_failed reason=bad_subject" in g.log_text()
        r = s.get(g.url + "/v2/ci/app/tags/list",
                  headers={"Authorization": "Bearer " + cc}, timeout=15)
        assert r.status_code == 401
        assert 'error="invalid_token"' in chal(r)
        # A plain one still works.
        idp.set_state(clientClaims={"ci": {"ref": "main"}})
        r = s.get(g.url + "/token", params={"service": SERVICE},
                  auth=("ci", idp.client_credentials_token()), timeout=15)
        assert r.status_code == 200, r.text
        assert claims(r.json()["token"])["sub"] == "idp:main"
    finally:
        idp.set_state(clientClaims={})
        rs.stop()


@needs_idp
def test_no_credential_in_debug_log(start_gateway, reg, pki, keys, idp,
                                    tmp_path):
    """At log level debug, every credential path (a secret and an IdP
    JWT as Basic at /token and on /v2/, the IdP JWT as a Bearer, a
    gateway token, a refresh grant, wrong ones of each) leaves none of
    the credentials, nor a piece of them, in the log."""
    rs = acl_redis(tmp_path / "dbg-redis")
    try:
        g = start_gateway(gateway_config(
            upstream(reg, default=True), policy=idp_policy(pki),
            redis=redis_section(rs, tmp_path), log={"level": "debug"},
            identity={"token": token_cfg(keys), "issuers": [
                {"name": "idp", "issuer": idp.issuer, "ca_file": idp.ca,
                 "audiences": ["https://portcullis.test"],
                 "prefix": "idp:", "algorithms": ["RS256", "ES256"]}]}))
        wait_for(lambda: "oidc keys_loaded issuer=idp" in g.log_text(),
                 timeout=30, what="the IdP's keys")
        wait_for(lambda: "revoke synced" in g.log_text(), timeout=20,
                 what="the revocation table's first sync")
        secret = cli("secret", "create", "-c", g.config_path, "--subject",
                     "robot:ci").stdout.splitlines()[0]
        cc = idp.client_credentials_token()
        s = plain()
        creds = [secret, cc]
        for pw in (secret, cc, secret[:-3] + "xyz", cc[:-3] + "xyz"):
            r = s.get(g.url + "/token", params=[
                ("service", SERVICE), ("offline_token", "true"),
                ("scope", "repository:ci/app:pull")], auth=("u", pw),
                timeout=15)
            if r.status_code == 200:
                creds += [r.json()["token"], r.json()["refresh_token"]]
                r2 = s.post(g.url + "/token", data={
                    "grant_type": "refresh_token", "service": SERVICE,
                    "refresh_token": r.json()["refresh_token"]},
                    timeout=15)
                assert r2.status_code == 200, r2.text
                creds.append(r2.json()["token"])
            s.get(g.url + "/v2/ci/app/tags/list", auth=("u", pw),
                  timeout=15)
        for t in creds + [cc[:-3] + "xyz"]:
            s.get(g.url + "/v2/ci/app/tags/list",
                  headers={"Authorization": "Bearer " + t}, timeout=15)
        log = g.log_text()
        assert "debug" in log
        for c in creds:
            for part in c.split("."):
                if len(part) >= 12:
                    assert part not in log
            assert c[-16:] not in log
    finally:
        rs.stop()
