"""The Docker token service (/token, /.well-known/jwks.json) and the
gateway's own Bearer tokens on /v2/ (issue 9): scopes intersected with the
live policy, the access claim enforced together with the live policy, the
Bearer challenge with invalid_token / insufficient_scope, access and
refresh tokens never taken for each other, the refresh grant in a chunked
form, failed logins in the audit record with their reason, and a real
docker-registry with auth.token trusting the gateway's keygen certificate
used by skopeo with the gateway as its token server.

Credentials: mTLS clients (their certificate identifies them at /token)
and gateway secrets (secrets.c, Redis) as Basic passwords; `portcullis
token revoke` reaching issued, cached and refresh tokens.  IdP JWTs
(the npm oidc-provider) are test_idp_login.py's.  Real clients: skopeo
(login, copy, inspect) against a registry:2 trusting the gateway and
against the gateway itself, `podman login` with a secret and pulls
(granted and refused).

Redis runs with the default user off and the gateway logs in as the
README's ACL user (lib/idfix.py: acceptance 5).  No token outlives its
credential (a secret's expiry, the client certificate's notAfter); an
upstream's 401 reaches the client with the gateway's Bearer challenge.

Real parts only: docker-registry, skopeo, podman, redis-server,
openssl."""

import base64
import json
import os
import shutil
import signal
import socket
import time

import pytest
import requests

from lib.clients import Podman, Skopeo, short_tmpdir
from lib.gateway import gateway_config, upstream
from lib.soak import push_blob
from lib.idfix import ISSUER, REGISTRY_AUTH, SERVICE, access_of, \
    acl_redis, bearer, blob_registry, chal, chunked_post, claims, \
    claims_header, cli, get_token, jose_sign, plain, policy, record_of, \
    records, redis_section, sess, token_cfg
from lib.idfix import keys, pki, redis_mod  # noqa: F401 (fixtures)
from lib.registry import Registry
from lib.util import free_port, wait_for

@pytest.fixture(scope="module")
def reg(start_registry_module):
    return blob_registry(start_registry_module)


@pytest.fixture(scope="module")
def gw(start_gateway_module, reg, pki, keys, redis_mod, tmp_path_factory):
    spool = tmp_path_factory.mktemp("token-spool") / "spool"
    cfg = gateway_config(
        upstream(reg, default=True),
        listen={"tls": {"cert_file": pki.server[0],
                        "key_file": pki.server[1],
                        "client_ca_file": pki.ca,
                        "verify_client": "optional"}},
        policy=policy(pki), identity={"token": token_cfg(keys)},
        redis=redis_section(redis_mod, redis_mod.dir),
        audit={"redis": "127.0.0.1:%d" % redis_mod.port,
               "spool_file": str(spool), "timeout": 2})
    g = start_gateway_module(cfg, tls_client={"ca": pki.ca})
    wait_for(lambda: "revoke synced" in g.log_text(), timeout=20,
             what="the revocation table's first sync")
    return g


def reload(g, pol):
    k = g.log_text().count("server reload done")
    with open(g.config_path, "w") as f:
        json.dump(dict(g.config, policy=pol), f)
    os.kill(g.pid, signal.SIGHUP)
    wait_for(lambda: g.log_text().count("server reload done") > k,
             what="the reload to be done")


# ---------------------------------------------------------------------------

def test_jwks_publishes_current_and_rotated_keys(gw, pki, keys):
    r = sess(pki).get(gw.url + "/.well-known/jwks.json", timeout=15)
    assert r.status_code == 200
    kids = [k["kid"] for k in r.json()["keys"]]
    assert kids[0] == keys["kids"]["cur"]
    assert keys["kids"]["old"] in kids
    # Past its valid_until: neither published nor verifying.
    assert keys["kids"]["gone"] not in kids
    assert all("d" not in k for k in r.json()["keys"])


def test_anonymous_token_for_anonymous_repo(gw, pki, reg):
    s = sess(pki)
    body = get_token(gw, s, ["repository:pub/app:pull,push"],
                     offline_token="true")
    tok = body["token"]
    # Push was asked; policy lets anonymous pull only: only pull granted.
    assert access_of(tok) == {("repository", "pub/app"): ["pull"]}
    c = claims(tok)
    assert c["aud"] == SERVICE and c["iss"] == ISSUER
    assert c["sub"] == "" and c["token_use"] == "access"
    assert c["exp"] - c["iat"] == 120
    # Nothing to refresh for an anonymous caller.
    assert "refresh_token" not in body
    url = gw.url + "/v2/pub/app/blobs/" + reg.digest
    r = s.get(url, headers=bearer(tok), timeout=15)
    assert r.status_code == 200 and r.content == reg.blob
    # The same token on another repository that anonymous may pull: the
    # token does not grant it.
    r = s.get(gw.url + "/v2/pub/other/blobs/" + reg.digest,
              headers=bearer(tok), timeout=15)
    assert r.status_code == 401
    assert 'error="insufficient_scope"' in chal(r)
    assert 'scope="repository:pub/other:pull"' in chal(r)
    # Pushing with it: 401 insufficient_scope naming the push scope.
    r = s.post(gw.url + "/v2/pub/app/blobs/uploads/", headers=bearer(tok),
               timeout=15)
    assert r.status_code == 401
    assert 'error="insufficient_scope"' in chal(r)
    assert 'scope="repository:pub/app:push"' in chal(r)


def test_challenge_is_bearer(gw, pki):
    s = sess(pki)
    r = s.get(gw.url + "/v2/team/app/tags/list", timeout=15)
    assert r.status_code == 401
    assert chal(r) == ('Bearer realm="%s/token",service="%s",'
                       'scope="repository:team/app:pull"' % (gw.url,
                                                             SERVICE))


def test_upstream_401_relayed_with_the_bearer_challenge(
        start_registry, start_gateway, pki, keys):
    """An upstream's own 401 reaches the client with the same Bearer
    challenge the gateway's own 401s carry, not a Basic one: the
    client's way in is the gateway's token service.  The upstream is a
    registry:2 whose token realm is the gateway itself but which trusts
    another key: the gateway's (anonymous) token for it is refused, the
    retry too, and the 401 is relayed."""
    port = free_port()
    extra = REGISTRY_AUTH.format(
        realm="http://127.0.0.1:%d/token" % port, service=SERVICE,
        issuer=ISSUER, crt=keys["other"] + ".crt")
    up = start_registry("locked", extra_config=extra)
    g = start_gateway(gateway_config(
        upstream(up, default=True, auth_hosts=["127.0.0.1:%d" % port]),
        listen={"address": "127.0.0.1:%d" % port},
        policy=policy(pki), identity={"token": token_cfg(keys)}))
    s = requests.Session()
    s.trust_env = False
    r = s.get(g.url + "/v2/pub/app/manifests/latest", timeout=15)
    assert r.status_code == 401, r.text
    assert chal(r) == ('Bearer realm="%s/token",service="%s",'
                       'scope="repository:pub/app:pull"' % (g.url, SERVICE))
    assert "token issued method=anonymous" in g.log_text()


def test_mtls_token_scope_intersection(gw, pki, reg):
    body = get_token(gw, sess(pki, pki.pusher),
                     ["repository:ro/app:push,pull",
                      "repository:team/app:pull,push",
                      "repository:hidden/app:pull"])
    tok = body["token"]
    assert access_of(tok) == {("repository", "ro/app"): ["pull"],
                              ("repository", "team/app"): ["pull", "push"]}
    c = claims(tok)
    assert c["sub"] == pki.pusher_dn and c["auth_method"] == "mtls"
    # The token alone identifies: no client certificate from here on.
    s = sess(pki)
    r = s.get(gw.url + "/v2/ro/app/blobs/" + reg.digest,
              headers=bearer(tok), timeout=15)
    assert r.status_code == 200
    r = s.post(gw.url + "/v2/ro/app/blobs/uploads/", headers=bearer(tok),
               timeout=15)
    assert r.status_code == 401
    assert 'error="insufficient_scope"' in chal(r)
    r = s.post(gw.url + "/v2/team/app/blobs/uploads/", headers=bearer(tok),
               timeout=15)
    assert r.status_code == 202, r.text


def test_mount_source_needs_the_tokens_pull(gw, pki, reg):
    """A cross-repository mount reads the `from` repository: a token that
    grants push on the target but nothing on the source must not borrow
    its blobs (distribution asks the token for pull on `from`), even
    though the live policy would let its subject pull the source.  The
    mount degrades to a plain upload start (202), as for the policy."""
    s = requests.Session()
    s.trust_env = False
    blob = b"only in ro/app: mount review\n" * 32
    digest = push_blob(s, reg.url, "ro/app", blob)
    tok = get_token(gw, sess(pki, pki.pusher),
                    ["repository:team/app:pull,push"])["token"]
    assert access_of(tok) == {("repository", "team/app"): ["pull", "push"]}
    url = gw.url + "/v2/team/app/blobs/uploads/"
    r = sess(pki).post(url, params={"mount": digest, "from": "ro/app"},
                       headers=bearer(tok), timeout=15)
    assert r.status_code == 202, (r.status_code, r.text)
    # With pull on the source in the token, the mount happens.
    tok2 = get_token(gw, sess(pki, pki.pusher),
                     ["repository:team/app:pull,push",
                      "repository:ro/app:pull"])["token"]
    r = sess(pki).post(url, params={"mount": digest, "from": "ro/app"},
                       headers=bearer(tok2), timeout=15)
    assert r.status_code == 201, (r.status_code, r.text)


def test_policy_change_applies_to_issued_token(start_gateway, reg, pki,
                                               keys):
    g = start_gateway(gateway_config(
        upstream(reg, default=True),
        listen={"tls": {"cert_file": pki.server[0],
                        "key_file": pki.server[1],
                        "client_ca_file": pki.ca,
                        "verify_client": "optional"}},
        policy=policy(pki), identity={"token": token_cfg(keys)}),
        tls_client={"ca": pki.ca})
    tok = get_token(g, sess(pki, pki.pusher),
                    ["repository:team/app:pull,push"])["token"]
    s = sess(pki)
    url = g.url + "/v2/team/app/blobs/uploads/"
    r = s.post(url, headers=bearer(tok), timeout=15)
    assert r.status_code == 202
    reload(g, policy(pki, push_team=False))
    r = s.post(url, headers=bearer(tok), timeout=15)
    # Identified (the token's subject) and denied by the live policy.
    assert r.status_code == 403, r.text
    r = s.get(g.url + "/v2/team/app/blobs/" + reg.digest,
              headers=bearer(tok), timeout=15)
    assert r.status_code == 200


@pytest.mark.parametrize("kind,reason", [
    ("expired", "expired"),
    ("audience", "wrong_audience"),
    ("issuer", "wrong_issuer"),
    ("forged", "bad_signature"),
    ("untrusted", "unknown_kid"),
    ("retired", "key_retired"),
    ("garbage", "malformed"),
])
def test_bad_tokens_are_invalid_token(gw, pki, keys, redis_mod, kind,
                                      reason):
    scope = ["repository:pub/app:pull"]
    if kind == "expired":
        tok = jose_sign(keys["cur"] + ".key", scope, ttl=-600)
    elif kind == "audience":
        tok = jose_sign(keys["cur"] + ".key", scope, aud="other.test")
    elif kind == "issuer":
        tok = jose_sign(keys["cur"] + ".key", scope, issuer="someone")
    elif kind == "forged":
        good = get_token(gw, sess(pki), scope)["token"]
        h, p, sig = good.split(".")
        c = claims(good)
        c["access"][0]["actions"] = ["pull", "push"]
        p = base64.urlsafe_b64encode(json.dumps(c).encode()).decode() \
            .rstrip("=")
        tok = ".".join((h, p, sig))
    elif kind == "untrusted":
        tok = jose_sign(keys["other"] + ".key", scope)
    elif kind == "retired":
        tok = jose_sign(keys["gone"] + ".key", scope)
    else:
        tok = "not.a-token"
    s = sess(pki)
    before = gw.log_text().count("bearer_refused reason=%s" % reason)
    # Anonymous may pull pub/app: a bad token still is 401, so that a
    # client with an expired one fetches a new one.
    r = s.get(gw.url + "/v2/pub/app/tags/list", headers=bearer(tok),
              timeout=15)
    assert r.status_code == 401
    assert 'error="invalid_token"' in chal(r)
    assert gw.log_text().count("bearer_refused reason=%s" % reason) > before
    assert tok not in gw.log_text()

    def rec():
        return [d for d in records(redis_mod)
                if d["path"] == "/v2/pub/app/tags/list" and
                d["auth_failure"] == reason]
    d = wait_for(rec, timeout=20, what="the refused token's record")[0]
    assert d["status"] == "401" and d["subject"] == "anonymous"


def test_base_with_bad_token(gw, pki):
    r = sess(pki).get(gw.url + "/v2/", headers=bearer("x.y.z"), timeout=15)
    assert r.status_code == 401
    assert 'error="invalid_token"' in chal(r)


def test_mtls_refresh_token_ends_with_the_certificate(gw, pki):
    """The pusher's certificate is valid two days, refresh_expires_in is
    a week: the refresh token ends at the certificate's notAfter (or its
    CA's, made a moment before it: the chain's end)."""
    from cryptography import x509

    def end(path):
        with open(path, "rb") as f:
            return x509.load_pem_x509_certificate(
                f.read()).not_valid_after.replace(
                    tzinfo=__import__("datetime").timezone.utc).timestamp()
    not_after = min(end(pki.pusher[0]), end(pki.ca))
    body = get_token(gw, sess(pki, pki.pusher), ["repository:team/app:pull"],
                     offline_token="true")
    rc = claims(body["refresh_token"])
    assert rc["exp"] - rc["iat"] < 7 * 86400
    assert rc["exp"] == int(not_after)
    # The access token's 120 s are well inside it.
    assert body["expires_in"] == 120


def test_token_scope_does_not_follow_ns(start_registry, start_gateway,
                                       reg, pki, keys):
    """A token's access claim names the client's repository (demo/app);
    routed elsewhere by containerd's ?ns= under the same client name,
    the live policy decides again for that upstream's repository, so the
    token reaches no further than the policy lets its holder."""
    r2 = start_registry("up2")
    digest = push_blob(plain(), r2.url, "demo/app", reg.blob)
    push_blob(plain(), reg.url, "demo/app", reg.blob)
    pol = {"rules": [
        {"id": "demo-up1", "effect": "allow", "repositories": ["demo/**"],
         "upstreams": ["up1"], "subjects": ["mtls:" + pki.pusher_dn],
         "actions": ["pull"]}]}
    g = start_gateway(gateway_config(
        upstream(reg, prefix="up1", default=True), upstream(r2, prefix="up2"),
        listen={"tls": {"cert_file": pki.server[0],
                        "key_file": pki.server[1],
                        "client_ca_file": pki.ca,
                        "verify_client": "optional"}},
        policy=pol, identity={"token": token_cfg(keys)}),
        tls_client={"ca": pki.ca})
    tok = get_token(g, sess(pki, pki.pusher),
                    ["repository:demo/app:pull",
                     "repository:up2/demo/app:pull"])["token"]
    assert access_of(tok) == {("repository", "demo/app"): ["pull"]}
    s = sess(pki)
    path = "/v2/demo/app/blobs/" + digest
    r = s.get(g.url + path, headers=bearer(tok), timeout=15)
    assert r.status_code == 200
    # The same client name, routed to up2 by ns=: the policy refuses.
    r = s.get(g.url + path + "?ns=" + r2.host, headers=bearer(tok),
              timeout=15)
    assert r.status_code == 403, r.text
    assert r.json()["errors"][0]["code"] == "DENIED"
    # By up2's prefix: the token does not name up2/demo/app.
    r = s.get(g.url + "/v2/up2/demo/app/blobs/" + digest,
              headers=bearer(tok), timeout=15)
    assert r.status_code == 401
    assert 'error="insufficient_scope"' in chal(r)


def test_refresh_and_access_never_swap(gw, pki, reg):
    s = sess(pki, pki.pusher)
    body = get_token(gw, s, ["repository:team/app:pull"],
                     offline_token="true", account="pusher",
                     client_id="docker")
    at, rt = body["token"], body["refresh_token"]
    rc = claims(rt)
    assert rc["token_use"] == "refresh" and rc["aud"] != SERVICE
    assert rc["sub"] == pki.pusher_dn and rc["access"] == []
    assert "iat" in rc
    # The refresh token is no access token.
    r = sess(pki).get(gw.url + "/v2/team/app/blobs/" + reg.digest,
                      headers=bearer(rt), timeout=15)
    assert r.status_code == 401
    assert 'error="invalid_token"' in chal(r)
    # The access token is no refresh token.
    r = sess(pki).post(gw.url + "/token", data={
        "grant_type": "refresh_token", "refresh_token": at,
        "service": SERVICE, "client_id": "docker",
        "scope": "repository:team/app:pull"}, timeout=15)
    assert r.status_code == 401
    assert r.json()["errors"][0]["code"] == "UNAUTHORIZED"


def test_refresh_grant_chunked(gw, pki, reg):
    body = get_token(gw, sess(pki, pki.pusher), [], offline_token="true")
    rt = body["refresh_token"]
    form = ("grant_type=refresh_token&client_id=containers-image&service="
            "%s&scope=repository%%3Ateam%%2Fapp%%3Apull%%2Cpush"
            "&scope=repository%%3Aro%%2Fapp%%3Apush&refresh_token=%s" % (
                SERVICE, rt))
    status, payload = chunked_post(gw, pki, form)
    assert status == 200, payload
    out = json.loads(payload.split(b"\r\n", 1)[1] if payload[:1] != b"{"
                     else payload)
    tok = out["access_token"]
    c = claims(tok)
    assert c["sub"] == pki.pusher_dn
    assert access_of(tok) == {("repository", "team/app"): ["pull", "push"]}
    assert "refresh_token" not in out
    # The refreshed token works without the certificate.
    r = sess(pki).get(gw.url + "/v2/team/app/blobs/" + reg.digest,
                      headers=bearer(tok), timeout=15)
    assert r.status_code == 200


def test_duplicate_and_combined_scopes(gw, pki):
    s = sess(pki, pki.pusher)
    p = [("service", SERVICE), ("scope", "repository:team/app:pull"),
         ("scope", "repository:team/app:pull"),
         ("scope", "repository:ro/app:pull repository:team/app:push")]
    r = s.get(gw.url + "/token", params=p, timeout=15)
    assert r.status_code == 200
    assert access_of(r.json()["token"]) == {
        ("repository", "ro/app"): ["pull"],
        ("repository", "team/app"): ["pull", "push"]}
    # containerd's password grant form: several scopes in one field,
    # '+' for the space.
    r = s.get(gw.url + "/token?service=%s&scope=repository:ro/app:pull+"
              "repository:pub/app:pull" % SERVICE, timeout=15)
    assert r.status_code == 200
    assert set(access_of(r.json()["token"])) == {
        ("repository", "ro/app"), ("repository", "pub/app")}


def test_scope_bounds(gw, pki):
    s = sess(pki)
    p = [("service", SERVICE)] + [("scope", "repository:pub/a%d:pull" % i)
                                  for i in range(40)]
    r = s.get(gw.url + "/token", params=p, timeout=15)
    assert r.status_code == 400
    r = s.get(gw.url + "/token", params={"service": "nope"}, timeout=15)
    assert r.status_code == 400
    r = s.post(gw.url + "/token", data="x" * 70000, headers={
        "Content-Type": "application/x-www-form-urlencoded"}, timeout=15)
    assert r.status_code == 413


def test_service_parameter_is_exact(gw, pki):
    """A service= that is present must be exactly the token service's:
    one too long to be it, one holding %00 (alone or after the service)
    and another one are each a 400 saying which, never taken for an
    absent service (which is fine) and answered with a token; the same
    in a POST form."""
    s = sess(pki)
    url = gw.url + "/token"
    scope = "scope=repository:pub/app:pull"
    r = s.get(url + "?" + scope, timeout=15)
    assert r.status_code == 200 and "token" in r.json()
    r = s.get(url + "?service=%s&%s" % (SERVICE, scope), timeout=15)
    assert r.status_code == 200
    cases = [("service=" + "a" * 256, "longer than 255 bytes"),
             ("service=" + "a" * 4000, "longer than 255 bytes"),
             ("service=%00", "NUL"),
             ("service=%s%%00" % SERVICE, "NUL"),
             ("service=%s%%00junk" % SERVICE, "NUL"),
             ("service=" + SERVICE + "x", "unknown service"),
             ("service=", "unknown service")]
    for q, why in cases:
        r = s.get(url + "?" + q + "&" + scope, timeout=15)
        assert r.status_code == 400, (q, r.status_code)
        assert why in r.text and SERVICE in r.text, (q, r.text)
        assert "access_token" not in r.text
        r = s.post(url, data="grant_type=password&" + q + "&password=x",
                   headers={"Content-Type":
                            "application/x-www-form-urlencoded"},
                   timeout=15)
        assert r.status_code == 400, (q, r.status_code)
        assert why in r.text, (q, r.text)


def test_failed_login_audited(gw, pki, redis_mod):
    s = sess(pki)
    r = s.get(gw.url + "/token", params={"service": SERVICE,
                                         "account": "alice"},
              auth=("alice", "s3cret-password"), timeout=15)
    assert r.status_code == 401
    assert r.json()["errors"][0]["code"] == "UNAUTHORIZED"
    r2 = s.post(gw.url + "/token", data={
        "grant_type": "password", "username": "alice",
        "password": "s3cret-password", "client_id": "containerd",
        "service": SERVICE}, timeout=15)
    assert r2.status_code == 401

    recs = [record_of(redis_mod, x.headers["X-Request-Id"])
            for x in (r, r2)]
    assert all(d["status"] == "401" and d["decision"] == "deny"
               for d in recs)
    assert all(d["auth_failure"] == "no_credential_backend" for d in recs)
    assert all(d["action"] == "token" for d in recs)
    assert "s3cret-password" not in json.dumps(records(redis_mod))
    assert "s3cret-password" not in gw.log_text()


def test_token_requests_audited_with_subject(gw, pki, reg, redis_mod):
    tok = get_token(gw, sess(pki, pki.pusher),
                    ["repository:team/app:pull"])["token"]
    r = sess(pki).get(gw.url + "/v2/team/app/blobs/" + reg.digest,
                      headers=bearer(tok), timeout=15)
    assert r.status_code == 200

    def mine():
        for d in records(redis_mod):
            if d.get("path") == "/v2/team/app/blobs/" + reg.digest and \
                    d.get("auth_method") == "token":
                return d
        return None
    d = wait_for(mine, timeout=20, what="the token request's record")
    assert d["subject"] == pki.pusher_dn and d["decision"] == "allow"
    assert tok not in json.dumps(records(redis_mod))


# ---------------------------------------------------------------------------
# A docker-registry with auth.token trusting the gateway's key: skopeo logs
# in (anonymously, or with its client certificate at the gateway) and
# pushes and pulls straight to that registry, the gateway its token
# server.

def test_registry_trusts_gateway_tokens(gw, pki, keys, tmp_path,
                                        single_image):
    extra = REGISTRY_AUTH.format(realm=gw.url + "/token", service=SERVICE,
                                 issuer=ISSUER, crt=keys["cur"] + ".crt")
    reg = Registry(tmp_path / "reg", name="trusting", extra_config=extra)
    try:
        sk = Skopeo(tmp_path / "skopeo")
        dest = "docker://%s/team/app:v1" % reg.host
        # Anonymous: the gateway grants no push on team/**.
        r = sk("copy", "-q", "--dest-tls-verify=false", single_image.ref,
               dest, check=False)
        assert r.returncode != 0
        assert "unauthorized" in r.stderr.lower() or \
            "denied" in r.stderr.lower(), r.stderr
        # With the pusher's certificate at the token server.
        n = gw.log_text().count("token issued method=mtls")
        sk("copy", "-q", "--dest-tls-verify=false",
           "--dest-cert-dir", pki.cert_dir, single_image.ref, dest)
        assert gw.log_text().count("token issued method=mtls") > n
        out = sk("inspect", "--raw", "--tls-verify=false",
                 "--cert-dir", pki.cert_dir, dest)
        assert json.loads(out.stdout)["schemaVersion"] == 2
        # Anonymous pull of team/app: the gateway grants nothing there.
        r = sk("inspect", "--raw", "--tls-verify=false", dest, check=False)
        assert r.returncode != 0
        sk("copy", "-q", "--dest-tls-verify=false",
           "--dest-cert-dir", pki.cert_dir, single_image.ref,
           "docker://%s/pub/app:v1" % reg.host)
        # pub/** is anonymous pull: skopeo's anonymous token works.
        sk("inspect", "--raw", "--tls-verify=false",
           "docker://%s/pub/app:v1" % reg.host)
    finally:
        reg.stop()


# ---------------------------------------------------------------------------
# Bounds and reload.

def test_token_bounds(start_gateway, reg, pki, keys):
    tc = dict(token_cfg(keys), max_scopes=2, max_body_bytes=1024,
              refresh_expires_in=600, max_token_bytes=700, leeway=0)
    g = start_gateway(gateway_config(
        upstream(reg, default=True),
        listen={"tls": {"cert_file": pki.server[0],
                        "key_file": pki.server[1],
                        "client_ca_file": pki.ca,
                        "verify_client": "optional"}},
        policy=policy(pki), identity={"token": tc}),
        tls_client={"ca": pki.ca})
    s = sess(pki, pki.pusher)
    r = s.get(g.url + "/token", params=[
        ("scope", "repository:pub/a:pull"), ("scope", "repository:pub/b:pull"),
        ("scope", "repository:pub/c:pull")], timeout=15)
    assert r.status_code == 400
    body = get_token(g, s, ["repository:pub/a:pull",
                            "repository:pub/b:pull"], offline_token="true")
    rc = claims(body["refresh_token"])
    assert rc["exp"] - rc["iat"] == 600
    # A chunked form over max_body_bytes: 413, nothing answered past it.
    status, _ = chunked_post(g, pki, "grant_type=refresh_token&x=" +
                             "a" * 2000)
    assert status == 413
    # max_token_bytes: a token longer is refused unread.
    long_tok = get_token(g, s, ["repository:team/app:pull"])["token"]
    big = jose_sign(keys["cur"] + ".key", ["repository:pub/app:pull"] +
                    ["repository:pub/x%d:pull" % i for i in range(12)])
    assert len(long_tok) <= 700 < len(big)
    r = sess(pki).get(g.url + "/v2/pub/app/tags/list", headers=bearer(big),
                      timeout=15)
    assert r.status_code == 401
    assert "bearer_refused reason=too_large" in g.log_text()
    # leeway 0: a token 5 s past its exp is expired.
    old = jose_sign(keys["cur"] + ".key", ["repository:pub/app:pull"],
                    ttl=-5)
    r = sess(pki).get(g.url + "/v2/pub/app/tags/list", headers=bearer(old),
                      timeout=15)
    assert r.status_code == 401
    assert "bearer_refused reason=expired" in g.log_text()


def test_token_leeway(start_gateway, reg, pki, keys):
    g = start_gateway(gateway_config(
        upstream(reg, default=True), policy=policy(pki),
        identity={"token": dict(token_cfg(keys), leeway=600)}))
    # 5 s past exp, within the leeway: not refused as expired (jose_sign
    # writes no token_use, which is what refuses it then).
    old = jose_sign(keys["cur"] + ".key", ["repository:pub/app:pull"],
                    ttl=-5)
    s = requests.Session()
    s.trust_env = False
    r = s.get(g.url + "/v2/pub/app/tags/list", headers=bearer(old),
              timeout=15)
    assert r.status_code == 401
    assert "bearer_refused reason=wrong_token_type" in g.log_text()
    assert "bearer_refused reason=expired" not in g.log_text()


def test_key_rotation_by_reload(start_gateway, reg, pki, keys):
    """signing_key replaced, the old key moved to verification_keys:
    tokens it signed still work, new ones carry the new kid; the old key
    taken out: its tokens are refused at once (the verified-token cache
    is emptied on reload)."""
    tc = {"signing_key": keys["old"] + ".key", "issuer": ISSUER,
          "service": SERVICE}
    g = start_gateway(gateway_config(
        upstream(reg, default=True), policy=policy(pki),
        identity={"token": tc}))
    s = requests.Session()
    s.trust_env = False
    tok = get_token(g, s, ["repository:pub/app:pull"])["token"]
    assert claims_header(tok)["kid"] == keys["kids"]["old"]
    url = g.url + "/v2/pub/app/blobs/" + reg.digest
    assert s.get(url, headers=bearer(tok), timeout=15).status_code == 200

    def reload_token(t):
        k = g.log_text().count("server reload done")
        cfg = dict(g.config)
        cfg["identity"] = {"token": t}
        with open(g.config_path, "w") as f:
            json.dump(cfg, f)
        os.kill(g.pid, signal.SIGHUP)
        wait_for(lambda: g.log_text().count("server reload done") > k,
                 what="the reload to be done")

    reload_token(dict(tc, signing_key=keys["cur"] + ".key",
                      verification_keys=[
                          {"file": keys["old"] + ".key",
                           "valid_until": "2099-01-01T00:00:00Z"}]))
    assert s.get(url, headers=bearer(tok), timeout=15).status_code == 200
    new = get_token(g, s, ["repository:pub/app:pull"])["token"]
    assert claims_header(new)["kid"] == keys["kids"]["cur"]
    jw = [k["kid"] for k in s.get(g.url + "/.well-known/jwks.json",
                                  timeout=15).json()["keys"]]
    assert jw == [keys["kids"]["cur"], keys["kids"]["old"]]
    reload_token(dict(tc, signing_key=keys["cur"] + ".key"))
    r = s.get(url, headers=bearer(tok), timeout=15)
    assert r.status_code == 401 and 'error="invalid_token"' in chal(r)
    assert s.get(url, headers=bearer(new), timeout=15).status_code == 200
    # A key file that does not load fails the reload; the old one stays.
    bad = os.path.join(os.path.dirname(g.config_path), "bad.key")
    with open(bad, "w") as f:
        f.write("not a key\n")
    k = g.reloads_ended()
    cfg = dict(g.config)
    cfg["identity"] = {"token": dict(tc, signing_key=bad)}
    with open(g.config_path, "w") as f:
        json.dump(cfg, f)
    os.kill(g.pid, signal.SIGHUP)
    wait_for(lambda: g.reloads_ended() > k,
             what="the reload attempt")
    wait_for(lambda: "/identity/token/signing_key" in g.log_text(),
             what="the refused reload's error")
    assert s.get(url, headers=bearer(new), timeout=15).status_code == 200


def test_cached_token_ends_with_its_key(start_gateway, reg, pki, keys):
    """A rotated-out key verifies nothing after its valid_until; a token
    it signed that was verified (and cached) before must not outlive it
    through the verified-token cache."""
    import datetime
    import time
    until = int(time.time()) + 3
    tc = dict(token_cfg(keys), verification_keys=[
        {"file": keys["old"] + ".key",
         "valid_until": datetime.datetime.fromtimestamp(
             until, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}])
    g = start_gateway(gateway_config(
        upstream(reg, default=True), policy=policy(pki),
        identity={"token": tc}))
    s = plain()
    tok = jose_sign(keys["old"] + ".key", ["repository:pub/app:pull"],
                    ttl=300, gateway=True)
    url = g.url + "/v2/pub/app/blobs/" + reg.digest
    assert s.get(url, headers=bearer(tok), timeout=15).status_code == 200
    # A new one signed by the same key each time (never cached) tells
    # when the key is done: the only wait here is for that condition.

    def key_done():
        probe = jose_sign(keys["old"] + ".key",
                          ["repository:pub/app:pull"], ttl=300,
                          gateway=True)
        assert probe != tok
        r = s.get(url, headers=bearer(probe), timeout=15)
        return r.status_code == 401
    wait_for(key_done, timeout=20, what="the old key's valid_until")
    r = s.get(url, headers=bearer(tok), timeout=15)
    assert r.status_code == 401 and 'error="invalid_token"' in chal(r)


def test_bearer_at_token_buys_nothing(gw, pki):
    """A gateway token presented at /token is ignored: the caller is who
    the connection says (here anonymous), so a token cannot be traded
    for a fresh one past its lifetime."""
    tok = get_token(gw, sess(pki, pki.pusher),
                    ["repository:team/app:pull"])["token"]
    r = sess(pki).get(gw.url + "/token", params=[
        ("service", SERVICE), ("scope", "repository:team/app:pull")],
        headers=bearer(tok), timeout=15)
    assert r.status_code == 200
    assert claims(r.json()["token"])["sub"] == ""
    assert claims(r.json()["token"])["access"] == []


# ---------------------------------------------------------------------------
# Gateway secrets (secrets.c, Redis) as Basic passwords, and revocation
# (`portcullis token revoke`) reaching issued tokens, refresh tokens and
# the verified-token cache.

def secret_gateway(start_gateway, reg, keys, tmp_path, audit=False):
    rs = acl_redis(tmp_path / "sec-redis")
    pol = {"rules": [
        {"id": "robot", "effect": "allow", "repositories": ["bot/**"],
         "subjects": ["user:robot:ci"], "actions": ["pull", "push"]}]}
    extra = {}
    if audit:
        extra["audit"] = {"redis": rs.host,
                          "spool_file": str(tmp_path / "sec-spool"),
                          "timeout": 2}
    try:
        g = start_gateway(gateway_config(
            upstream(reg, default=True), policy=pol,
            redis=redis_section(rs, tmp_path),
            identity={"token": token_cfg(keys)}, **extra))
        wait_for(lambda: "revoke synced" in g.log_text(), timeout=20,
                 what="the revocation table's first sync")
        out = cli("secret", "create", "-c", g.config_path, "--subject",
                  "robot:ci").stdout
        g.secret = out.splitlines()[0]
        assert g.secret.startswith("pcs_")
        g.redis_server = rs
        yield g
    finally:
        rs.stop()


@pytest.fixture
def secgw(start_gateway, reg, keys, tmp_path):
    yield from secret_gateway(start_gateway, reg, keys, tmp_path)


@pytest.fixture
def secgw_audited(start_gateway, reg, keys, tmp_path):
    """secgw, with its audit records in its own Redis."""
    yield from secret_gateway(start_gateway, reg, keys, tmp_path,
                              audit=True)


def test_secret_login_and_revocation(secgw):
    g, s = secgw, plain()
    # /v2/ challenges: anonymous may pull nothing here.
    r = s.get(g.url + "/v2/", timeout=15)
    assert r.status_code == 401 and chal(r).startswith("Bearer ")
    r = s.get(g.url + "/token", params=[
        ("service", SERVICE), ("scope", "repository:bot/app:push,pull"),
        ("offline_token", "true")], auth=("robot", g.secret),
        timeout=15)
    assert r.status_code == 200, r.text
    tok, rt = r.json()["token"], r.json()["refresh_token"]
    assert claims(tok)["sub"] == "robot:ci"
    assert claims(tok)["auth_method"] == "secret"
    url = g.url + "/v2/bot/app/blobs/uploads/"
    assert s.post(url, headers=bearer(tok), timeout=15).status_code == 202
    # The secret straight on /v2/ (Basic).
    assert s.post(url, auth=("robot", g.secret),
                  timeout=15).status_code == 202
    # A wrong one: 401, audited reason from secrets.c, never the secret.
    wrong = g.secret[:-4] + ("AAAA" if not g.secret.endswith("AAAA")
                             else "BBBB")
    r = s.get(g.url + "/token", params={"service": SERVICE},
              auth=("robot", wrong), timeout=15)
    assert r.status_code == 401
    assert "login_failed reason=wrong" in g.log_text()
    # Revoke the subject's credentials issued up to the token's second.
    cli("token", "revoke", "-c", g.config_path, "--subject", "robot:ci",
        "--before", "@%d" % (claims(tok)["iat"] + 1))
    wait_for(lambda: 'revoke received subject="robot:ci"' in g.log_text(),
             timeout=5, what="the revocation")
    # The cached verification went with it: refused at once.
    r = s.post(url, headers=bearer(tok), timeout=15)
    assert r.status_code == 401 and 'error="invalid_token"' in chal(r)
    assert "bearer_refused reason=revoked" in g.log_text()
    r = s.post(g.url + "/token", data={
        "grant_type": "refresh_token", "refresh_token": rt,
        "service": SERVICE}, timeout=15)
    assert r.status_code == 401
    assert "login_failed reason=revoked" in g.log_text()
    # The secret was created before too: revoked.
    r = s.get(g.url + "/token", params={"service": SERVICE},
              auth=("robot", g.secret), timeout=15)
    assert r.status_code == 401
    for t in (g.secret, tok, rt):
        assert t not in g.log_text()


def test_refresh_grant_fails_closed_without_redis(secgw, tmp_path):
    """README (Revocation): secrets and refresh grants need Redis and
    fail closed by default.  With the revocation link down, a revocation
    made elsewhere is unknown here: a refresh token must not buy a fresh
    access token meanwhile."""
    g, s = secgw, plain()
    r = s.get(g.url + "/token", params=[
        ("service", SERVICE), ("scope", "repository:bot/app:pull"),
        ("offline_token", "true")], auth=("robot", g.secret),
        timeout=15)
    assert r.status_code == 200, r.text
    rt = r.json()["refresh_token"]
    form = {"grant_type": "refresh_token", "refresh_token": rt,
            "service": SERVICE, "scope": "repository:bot/app:pull"}
    assert s.post(g.url + "/token", data=form,
                  timeout=15).status_code == 200
    g.redis_server.kill()
    wait_for(lambda: "revoke link_down" in g.log_text(), timeout=20,
             what="the revocation link to go down")
    r = s.post(g.url + "/token", data=form, timeout=15)
    assert r.status_code == 401, r.text
    assert "login_failed reason=redis_unavailable" in g.log_text()
    assert rt not in g.log_text()


def test_tokens_of_a_secret_end_with_it(secgw):
    """A secret made with --expires must not buy tokens that outlive it:
    above all the refresh token, which docker login keeps and which
    would otherwise mint access tokens for refresh_expires_in (a week)
    after the secret expired.  The access token is cut too, but never
    below distribution's floor of 60 s (expires_in is at least 60): a
    secret with 40 s left gets a 60 s access token."""
    g, s = secgw, plain()
    out = cli("secret", "create", "-c", g.config_path, "--subject",
              "robot:ci", "--expires", "40s").stdout
    short = out.splitlines()[0]
    r = s.get(g.url + "/token", params=[
        ("service", SERVICE), ("scope", "repository:bot/app:pull"),
        ("offline_token", "true")], auth=("robot", short), timeout=15)
    assert r.status_code == 200, r.text
    tok, rt = r.json()["token"], r.json()["refresh_token"]
    # The secret was created at most a few seconds before iat.
    limit = claims(tok)["iat"] + 41
    assert r.json()["expires_in"] == 60
    assert claims(tok)["exp"] - claims(tok)["iat"] == 60
    assert claims(rt)["exp"] <= limit
    r = s.post(g.url + "/token", data={
        "grant_type": "refresh_token", "refresh_token": rt,
        "service": SERVICE}, timeout=15)
    assert r.status_code == 200, r.text
    # Ends with the refresh token, up to the 60 s floor.
    assert r.json()["expires_in"] == 60
    assert claims(r.json()["token"])["exp"] <= claims(rt)["exp"] + 60


def test_secret_revoke_reaches_its_refresh_token(secgw):
    """`portcullis secret revoke ID` of a leaked secret: docker login
    kept a refresh token from it, which must not go on minting access
    tokens for refresh_expires_in (a week)."""
    g, s = secgw, plain()
    out = cli("secret", "create", "-c", g.config_path, "--subject",
              "robot:ci").stdout
    leaked = out.splitlines()[0]
    sid = leaked.split("_")[1]
    r = s.get(g.url + "/token", params=[
        ("service", SERVICE), ("scope", "repository:bot/app:pull"),
        ("offline_token", "true")], auth=("robot", leaked), timeout=15)
    assert r.status_code == 200, r.text
    rt = r.json()["refresh_token"]
    form = {"grant_type": "refresh_token", "refresh_token": rt,
            "service": SERVICE}
    assert s.post(g.url + "/token", data=form,
                  timeout=15).status_code == 200
    cli("secret", "revoke", "-c", g.config_path, sid)
    r = s.post(g.url + "/token", data=form, timeout=15)
    assert r.status_code == 401, r.text
    assert "login_failed reason=revoked" in g.log_text()
    # The other secret of the same subject is untouched.
    r = s.get(g.url + "/token", params={"service": SERVICE},
              auth=("robot", g.secret), timeout=15)
    assert r.status_code == 200, r.text


def test_revocation_on_one_instance_refused_on_the_other(start_gateway, reg,
                                                          keys, tmp_path):
    """Issue 9, acceptance 4: a secret and a subject's tokens revoked
    while two instances share Redis are refused on the other instance
    within one second.  Gateways A and B share one redis-server, the
    token keys and the policy; a subject's access token is issued at A
    and used on B first (so B's verified-token cache holds it), a secret
    of another subject works on B; `portcullis token revoke --subject`
    and `portcullis secret revoke ID` run with A's configuration; B is
    then polled, bounded by one second from the command's return, until
    it refuses each (a request started within the bound sees it).  A
    refuses too; a third subject, revoked by nobody, still works on
    B."""
    rs = acl_redis(tmp_path / "two-redis")
    pol = {"rules": [
        {"id": "robots", "effect": "allow", "repositories": ["bot/**"],
         "subjects": ["user:robot:ci", "user:robot:other",
                      "user:robot:keep"], "actions": ["pull"]}]}
    try:
        cfg = gateway_config(upstream(reg, default=True), policy=pol,
                             redis=redis_section(rs, tmp_path),
                             identity={"token": token_cfg(keys)})
        a = start_gateway(cfg)
        b = start_gateway(cfg)
        assert a.port != b.port
        for g in (a, b):
            wait_for(lambda: "revoke synced" in g.log_text(), timeout=20,
                     what="the revocation table's first sync on %s" %
                     g.host)
        blob = b"acceptance 4: two instances, one redis\n" * 16
        digest = push_blob(plain(), reg.url, "bot/two", blob)
        path = "/v2/bot/two/blobs/" + digest

        def secret_of(subject):
            out = cli("secret", "create", "-c", a.config_path, "--subject",
                      subject).stdout.splitlines()[0]
            assert out.startswith("pcs_")
            return out

        def token_at(g, secret):
            r = plain().get(g.url + "/token", params=[
                ("service", SERVICE), ("scope", "repository:bot/two:pull")],
                auth=("robot", secret), timeout=15)
            assert r.status_code == 200, r.text
            return r.json()["token"]

        sec_ci, sec_other, sec_keep = (secret_of("robot:" + n) for n in
                                       ("ci", "other", "keep"))
        sid_other = sec_other.split("_")[1]
        tok = token_at(a, sec_ci)
        assert claims(tok)["sub"] == "robot:ci"
        tok_keep = token_at(a, sec_keep)
        s = plain()
        # Works on B, twice: the second use is answered from B's cache.
        for _ in range(2):
            r = s.get(b.url + path, headers=bearer(tok), timeout=15)
            assert r.status_code == 200 and r.content == blob, r.text
        assert s.get(b.url + path, headers=bearer(tok_keep),
                     timeout=15).status_code == 200
        # The other subject's secret works on B, at /token and on /v2/;
        # an access token issued for it at A works on B (cached there).
        token_at(b, sec_other)
        r = s.get(b.url + path, auth=("robot", sec_other), timeout=15)
        assert r.status_code == 200 and r.content == blob
        tok_other = token_at(a, sec_other)
        assert claims(tok_other)["secret_id"] == sid_other
        for _ in range(2):
            assert s.get(b.url + path, headers=bearer(tok_other),
                         timeout=15).status_code == 200
        # A secret revoked two days ago, past keeping: `secret revoke`
        # deletes its field, and the gateways never hold it.
        stale = "x:" + "0123456789abcdef"
        rs.cli("HSET", "portcullis:revoked", stale,
               str(int(time.time()) - 2 * 86400))

        def refused_token(g):
            r = s.get(g.url + path, headers=bearer(tok), timeout=1.0)
            return r.status_code == 401 and \
                'error="invalid_token"' in chal(r)

        def refused_secret(g):
            r = s.get(g.url + "/token", params={"service": SERVICE},
                      auth=("robot", sec_other), timeout=1.0)
            return r.status_code == 401

        out = cli("token", "revoke", "-c", a.config_path, "--subject",
                  "robot:ci").stdout
        assert "2 listening instance(s) told" in out
        wait_for(lambda: refused_token(b), timeout=1.0,
                 what="B to refuse the revoked subject's token")
        out = cli("secret", "revoke", "-c", a.config_path, sid_other).stdout
        # The secret, and the access token issued for it before (cached
        # on B): both refused on B within the second, not the token alive
        # until its exp.
        wait_for(lambda: refused_secret(b) and s.get(
            b.url + path, headers=bearer(tok_other),
            timeout=1.0).status_code == 401, timeout=1.0,
            what="B to refuse the revoked secret and its token")
        assert "reclaimed 1 revoked secret(s)" in out
        assert rs.cli("HEXISTS", "portcullis:revoked", stale).strip() \
            == "0"
        assert rs.cli("HGET", "portcullis:revoked",
                      "x:" + sid_other).strip().isdigit()
        r = s.get(b.url + path, auth=("robot", sec_other), timeout=15)
        assert r.status_code == 401, r.text
        # A refuses both as well.
        assert refused_token(a) and refused_secret(a)
        assert s.get(a.url + path, headers=bearer(tok_other),
                     timeout=15).status_code == 401
        # B refused the token because of the revocation, having dropped
        # its cached verification.
        blog = b.log_text()
        assert 'revoke received subject="robot:ci"' in blog
        assert "revoke received secret=" + sid_other in blog
        assert "token cache_purged entries=" in blog
        assert "bearer_refused reason=revoked" in blog
        # Nobody revoked robot:keep: its token and secret still work on B.
        assert s.get(b.url + path, headers=bearer(tok_keep),
                     timeout=15).status_code == 200
        token_at(b, sec_keep)
        for g in (a, b):
            for t in (sec_ci, sec_other, sec_keep, tok, tok_keep,
                      tok_other):
                assert t not in g.log_text()
    finally:
        rs.stop()


def test_client_leaves_while_its_secret_is_checked(secgw):
    """The credential stage waits for Redis (paused here with CLIENT
    PAUSE): clients that close meanwhile (a Basic secret at /token and on
    /v2/, a secret's refresh grant) leave nothing behind that the late
    answers touch; the gateway answers the next caller correctly.  Run
    it with PORTCULLIS_BIN pointing at an ASan build to catch a
    use-after-free."""
    g, s = secgw, plain()
    r = s.get(g.url + "/token", params=[
        ("service", SERVICE), ("offline_token", "true")],
        auth=("robot", g.secret), timeout=15)
    assert r.status_code == 200, r.text
    rt = r.json()["refresh_token"]
    basic = base64.b64encode(("robot:" + g.secret).encode()).decode()
    form = "grant_type=refresh_token&service=%s&refresh_token=%s" % (
        SERVICE, rt)
    reqs = [
        "GET /token?service=%s HTTP/1.1\r\nHost: x\r\n"
        "Authorization: Basic %s\r\n\r\n" % (SERVICE, basic),
        "GET /v2/bot/app/tags/list HTTP/1.1\r\nHost: x\r\n"
        "Authorization: Basic %s\r\n\r\n" % basic,
        "POST /token HTTP/1.1\r\nHost: x\r\nContent-Type: "
        "application/x-www-form-urlencoded\r\nContent-Length: %d\r\n"
        "\r\n%s" % (len(form), form),
    ]
    g.redis_server.cli("CLIENT", "PAUSE", "1500", "ALL")
    for raw in reqs * 3:
        with socket.create_connection(("127.0.0.1", g.port),
                                      timeout=5) as c:
            c.sendall(raw.encode())
    # The pause ends by itself; these wait for it.
    r = s.get(g.url + "/token", params={"service": SERVICE},
              auth=("robot", g.secret), timeout=15)
    assert r.status_code == 200, r.text
    r = s.post(g.url + "/token", data={
        "grant_type": "refresh_token", "refresh_token": rt,
        "service": SERVICE}, timeout=15)
    assert r.status_code == 200, r.text
    assert g.alive()
    for t in (g.secret, rt):
        assert t not in g.log_text()


def test_skopeo_login_and_push_with_a_secret(secgw, tmp_path,
                                             single_image):
    """skopeo logs in to the gateway with a secret and pushes and pulls
    through it with the gateway's Bearer tokens."""
    g = secgw
    sk = Skopeo(tmp_path / "skopeo")
    r = sk("login", "--tls-verify=false", "-u", "robot", "-p",
           "pcs_0123456789abcdef_" + "x" * 43, g.host, check=False)
    assert r.returncode != 0
    sk("login", "--tls-verify=false", "-u", "robot", "-p", g.secret,
       g.host)
    dest = "docker://%s/bot/app:v1" % g.host
    sk("copy", "-q", "--dest-tls-verify=false", single_image.ref, dest)
    out = sk("inspect", "--raw", "--tls-verify=false", dest)
    assert json.loads(out.stdout)["schemaVersion"] == 2
    assert "token issued method=secret" in g.log_text()
    assert g.secret not in g.log_text()


def test_podman_login_and_pull_with_a_secret(secgw_audited, reg, tmp_path,
                                             single_image):
    """podman login with a gateway secret (--password-stdin, an auth file
    of its own): podman pings /v2/, takes the Bearer challenge and asks
    /token with the secret as its Basic password.  It then pulls through
    the gateway with the gateway's tokens: a repository the policy grants
    the subject comes, one it does not is refused (401 insufficient_scope,
    which podman shows as denied).  A wrong secret fails the login."""
    g = secgw_audited
    sk = Skopeo(tmp_path / "skopeo")
    for repo in ("bot/app", "team/app"):
        sk("copy", "-q", "--dest-tls-verify=false", single_image.ref,
           "docker://%s/%s:v1" % (reg.host, repo))
    # podman wants a runroot under 50 characters: tmp_path is too long.
    pdir = short_tmpdir("pc-pm-")
    try:
        podman_login_and_pull(g, Podman(pdir))
    finally:
        shutil.rmtree(pdir, ignore_errors=True)


def podman_login_and_pull(g, pm):
    rs = g.redis_server

    def audited(pred, what):
        return wait_for(lambda: [d for d in records(rs) if pred(d)],
                        timeout=20, what=what)

    def login(secret):
        return pm("login", "--tls-verify=false", "-u", "robot",
                  "--password-stdin", g.host, input=secret + "\n",
                  check=False)

    # The secret's id, a wrong remainder.
    wrong = g.secret[:-4] + ("AAAA" if not g.secret.endswith("AAAA")
                             else "BBBB")
    r = login(wrong)
    assert r.returncode != 0
    assert "invalid username/password" in r.stderr, r.stderr
    with open(pm.cenv.auth_file) as f:
        assert g.host not in json.load(f)["auths"]
    assert " token login_failed reason=wrong" in g.log_text()
    audited(lambda d: d["path"] == "/token" and d["status"] == "401"
            and d["auth_failure"] != "", "the failed login's record")

    n = len(records(rs))
    r = login(g.secret)
    assert r.returncode == 0, r.stderr
    assert "Login Succeeded" in r.stdout
    with open(pm.cenv.auth_file) as f:
        entry = json.load(f)["auths"][g.host]
    assert base64.b64decode(entry["auth"]).decode() == "robot:" + g.secret
    # What podman did: /v2/ (401, Bearer challenge), /token with the
    # secret (200, robot:ci by secret), /v2/ with the token (200).
    recs = audited(lambda d: d["path"] == "/v2/" and d["status"] == "200"
                   and d["subject"] == "robot:ci", "the login's ping")
    recs = [(d["path"], d["status"], d["subject"], d["auth_method"])
            for d in records(rs)[n:] if d["path"]]
    assert recs == [("/v2/", "401", "anonymous", "none"),
                    ("/token", "200", "robot:ci", "secret"),
                    ("/v2/", "200", "robot:ci", "token")], recs
    assert "token issued method=secret scopes=0" in g.log_text()

    ref = "%s/bot/app:v1" % g.host
    pm("pull", "--tls-verify=false", ref)
    out = pm("image", "inspect", "--format", "{{.Digest}}", ref).stdout
    assert out.strip().startswith("sha256:")
    audited(lambda d: d["path"] == "/v2/bot/app/manifests/v1"
            and d["status"] == "200" and d["subject"] == "robot:ci"
            and d["rule"] == "robot", "the allowed pull's record")

    r = pm("pull", "--tls-verify=false", "%s/team/app:v1" % g.host,
           check=False)
    assert r.returncode != 0
    # The gateway's answer: its error body (UNAUTHORIZED, "authentication
    # required") and its challenge's insufficient_scope, which podman
    # names "denied".
    assert "unauthorized: authentication required" in r.stderr, r.stderr
    assert "denied: requested access to the resource is denied" in \
        r.stderr, r.stderr
    assert 'detail="the token does not grant this access"' in g.log_text()
    audited(lambda d: d["path"] == "/v2/team/app/manifests/v1"
            and d["status"] == "401" and d["subject"] == "robot:ci"
            and d["decision"] == "deny", "the refused pull's record")
    assert not [d for d in records(rs)
                if d["path"].startswith("/v2/team/")
                and d["status"] == "200"]
    for t in (g.secret, wrong):
        assert t not in g.log_text()
