"""The gateway authenticates to a token-protected upstream with the
credentials in its credentials_file: clients send no credentials, the
upstream's token issuer sees the gateway's Basic credentials and the right
scopes, tokens are cached, and wrong credentials give the client an OCI
error rather than a success."""

import json

import pytest

from lib.gateway import gateway_config, upstream
from lib.images import read_layout


@pytest.fixture(scope="module")
def stack(start_registry_module, start_gateway_module, tmp_path_factory):
    reg = start_registry_module("authup", auth="token")
    d = tmp_path_factory.mktemp("creds-")
    good = d / "good"
    good.write_text("%s:%s\n" % (reg.issuer.username, reg.issuer.password))
    good.chmod(0o600)
    # The issuer is another port of the registry's (loopback) host: a
    # realm there is dialled only when auth_hosts names it.
    gw = start_gateway_module(gateway_config(
        upstream(reg, name="up1", prefix="up1", default=True,
                 credentials_file=good,
                 auth_hosts=["127.0.0.1:%d" % reg.issuer.port])))

    class S:
        pass
    s = S()
    s.reg, s.gw, s.creds_dir = reg, gw, d
    return s


def test_issuer_refuses_anonymous_and_wrong_credentials(stack, http):
    # The harness itself: the registry really is protected, so a gateway
    # that forwards without credentials cannot pass the tests below.
    r = http.get(stack.reg.url + "/v2/", timeout=10)
    assert r.status_code == 401
    assert "Bearer" in r.headers["WWW-Authenticate"]
    params = {"service": stack.reg.service,
              "scope": "repository:auth/app:pull"}
    assert http.get(stack.reg.issuer.realm, params=params,
                    timeout=10).status_code == 401
    assert http.get(stack.reg.issuer.realm, params=params, timeout=10,
                    auth=(stack.reg.issuer.username, "nope")).status_code \
        == 401


def _scopes(recs):
    out = set()
    for rec in recs:
        for s in rec["scopes"]:
            out.update(x for x in s.split(" ") if x)
    return out


def test_push_and_pull_without_client_credentials(stack, skopeo,
                                                  multiarch_image, tmp_path):
    img = multiarch_image
    mark = stack.reg.issuer.mark()
    skopeo("copy", "--all", "--dest-tls-verify=false", img.ref,
           "docker://%s/auth/app:v1" % stack.gw.host)
    recs = stack.reg.issuer.requests_since(mark)
    assert recs, "the gateway never asked the upstream's issuer for a token"
    assert all(r["user"] == stack.reg.issuer.username and r["ok"] and
               r["authorization"] in ("basic", None) for r in recs), recs
    assert all(r["service"] == stack.reg.service for r in recs), recs
    push_scopes = [s for s in _scopes(recs)
                   if s.startswith("repository:auth/app:")]
    assert any("push" in s.rsplit(":", 1)[1].split(",")
               for s in push_scopes), recs
    direct = stack.reg.get_manifest("auth/app", "v1")
    assert direct.status_code == 200
    assert direct.headers["Docker-Content-Digest"] == img.digest

    mark = stack.reg.issuer.mark()
    out = tmp_path / "pulled"
    skopeo("copy", "--all", "--src-tls-verify=false",
           "docker://%s/up1/auth/app:v1" % stack.gw.host, "oci:%s:v1" % out)
    top, blobs = read_layout(str(out), "v1")
    assert top == img.digest
    assert set(blobs) == img.all_digests() and all(blobs.values())
    for r in stack.reg.issuer.requests_since(mark):
        assert r["user"] == stack.reg.issuer.username and r["ok"], r
        assert all(s.startswith("repository:auth/app:")
                   for s in _scopes([r])), r


def test_cached_token_reused_across_requests(stack, skopeo, single_image,
                                             http):
    skopeo("copy", "--dest-tls-verify=false", single_image.ref,
           "docker://%s/auth/cache:v1" % stack.gw.host)
    # Warm up: one request may fetch a pull token.
    r = http.get(stack.gw.url + "/v2/auth/cache/manifests/v1",
                 headers={"Accept": single_image.media_type}, timeout=30)
    assert r.status_code == 200, r.text
    mark = stack.reg.issuer.mark()
    n = 12
    layer = single_image.images[0]["layers"][0]["digest"]
    for i in range(n):
        r = http.get(stack.gw.url + "/v2/auth/cache/manifests/v1",
                     headers={"Accept": single_image.media_type}, timeout=30)
        assert r.status_code == 200, r.text
        assert r.headers["Docker-Content-Digest"] == single_image.digest
        b = http.get(stack.gw.url + "/v2/auth/cache/blobs/" + layer,
                     timeout=30)
        assert b.status_code == 200
    fetched = len(stack.reg.issuer.requests_since(mark))
    assert fetched <= 2, "gateway fetched %d tokens for %d requests" % (
        fetched, 2 * n)


def test_wrong_upstream_credentials_give_oci_error(stack, start_gateway,
                                                   skopeo, single_image,
                                                   http):
    skopeo("copy", "--dest-tls-verify=false", single_image.ref,
           "docker://%s/auth/wrong:v1" % stack.gw.host)
    bad = stack.creds_dir / "bad"
    bad.write_text("%s:not-the-password\n" % stack.reg.issuer.username)
    gw = start_gateway(gateway_config(
        upstream(stack.reg, name="up1", prefix="up1", default=True,
                 credentials_file=bad,
                 auth_hosts=["127.0.0.1:%d" % stack.reg.issuer.port])))
    mark = stack.reg.issuer.mark()
    r = http.get(gw.url + "/v2/auth/wrong/manifests/v1",
                 headers={"Accept": single_image.media_type}, timeout=30)
    # The client did nothing wrong: the gateway's own credentials were
    # refused, which is the gateway's upstream failing (502), not a 401
    # that would make the client ask its user for a password.
    assert r.status_code == 502, (r.status_code, r.text)
    body = json.loads(r.content)
    assert body["errors"][0]["code"] == "UNAVAILABLE", body
    assert "WWW-Authenticate" not in r.headers
    assert r.headers.get("Docker-Distribution-Api-Version") == "registry/2.0"
    recs = stack.reg.issuer.requests_since(mark)
    assert recs and all(not x["ok"] for x in recs), recs
    assert any(x["user"] == stack.reg.issuer.username for x in recs), recs
    cp = skopeo("copy", "--src-tls-verify=false",
                "docker://%s/auth/wrong:v1" % gw.host,
                "oci:%s:v1" % (stack.creds_dir / "never"), check=False)
    assert cp.returncode != 0
