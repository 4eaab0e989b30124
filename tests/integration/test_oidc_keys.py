"""OIDC issuers: the gateway fetches the discovery document and the JWKS
of a real provider (npm oidc-provider over TLS with its own CA, lib/idp.py)
at start, picks up a key rotation by its periodic refresh and by an
unknown kid (POST /admin/identity/refresh, what a token with an unknown
kid will do once the identity stage verifies tokens), keeps its keys while
the provider is down, and refuses what a hostile provider serves (the
double lib/hostile_idp.py, named as such): another issuer, an oversized
JWKS or too many keys, a jwks_uri aimed at a service behind the gateway.

This session fetches and keeps keys only; verifying tokens with them comes
with the identity stage."""

import concurrent.futures
import json
import os
import signal
import socket

import pytest
import requests

from lib.gateway import OPEN_TEST_POLICY, gateway_config
from lib.hostile_idp import HostileIdP
from lib.hostile_upstream import SecretService
from lib.idp import IdP, idp_available, make_jwk
from lib.pki import PKI
from lib.util import wait_for

pytestmark = pytest.mark.skipif(idp_available() is not None,
                                reason=str(idp_available()))

UPSTREAM = {"name": "up", "url": "http://127.0.0.1:9", "prefix": "up"}

# The open test policy, plus the admin action for loopback callers.
POLICY = {"rules": OPEN_TEST_POLICY["rules"] + [{
    "id": "admin-loopback", "effect": "allow",
    "subjects": ["cidr:127.0.0.0/8"], "actions": ["admin"]}]}


def issuer_conf(idp, **kw):
    c = {"name": "test", "issuer": idp.issuer,
         "audiences": ["https://portcullis.test"],
         "algorithms": ["RS256", "ES256"]}
    if getattr(idp, "ca", None):
        c["ca_file"] = idp.ca
    c.update(kw)
    return c


def gw_config(*issuers):
    return gateway_config(UPSTREAM, policy=POLICY,
                          identity={"issuers": list(issuers)})


def state(gw, name="test"):
    r = gw.http.get(gw.url + "/admin/identity", timeout=5)
    assert r.status_code == 200, r.text
    for i in r.json()["issuers"]:
        if i["name"] == name:
            return i
    raise AssertionError("no issuer %s in %s" % (name, r.text))


def refresh(gw, kid, name="test"):
    r = gw.http.post(gw.url + "/admin/identity/refresh",
                     params={"issuer": name, "kid": kid}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture
def idp(tmp_path):
    p = IdP(tmp_path / "idp", keys=[("RS256", "rsa-1"), ("ES256", "ec-1")])
    try:
        yield p
    finally:
        p.stop()


def test_keys_fetched_at_start(idp, start_gateway):
    gw = start_gateway(gw_config(issuer_conf(idp)))
    st = wait_for(lambda: (s := state(gw))["loaded"] and s,
                  what="keys loaded")
    assert st["kids"] == ["rsa-1", "ec-1"]
    assert st["jwks_uri"] == idp.discovery()["jwks_uri"]
    assert st["last_error"] == "" and st["failures"] == 0
    assert 'oidc keys_loaded issuer=test trigger=start keys=2 ' \
        'kids="rsa-1:RSA,ec-1:EC"' in gw.log_text()
    # The admin endpoint is behind the admin action.
    r = gw.http.get(gw.url + "/admin/identity", timeout=5)
    assert r.json()["ready"] is True


def test_admin_endpoint_needs_admin(idp, start_gateway):
    gw = start_gateway(gateway_config(
        UPSTREAM, identity={"issuers": [issuer_conf(idp)]}))
    r = gw.http.get(gw.url + "/admin/identity", timeout=5)
    assert r.status_code in (401, 403)
    r = gw.http.post(gw.url + "/admin/identity/refresh",
                     params={"issuer": "test", "kid": "x"}, timeout=5)
    assert r.status_code in (401, 403)


def test_ca_file_is_used(idp, start_gateway):
    """Without the issuer's CA the provider's certificate is refused."""
    c = issuer_conf(idp)
    del c["ca_file"]
    gw = start_gateway(gw_config(c))
    st = wait_for(lambda: (s := state(gw))["failures"] > 0 and s,
                  what="a failed fetch")
    assert not st["loaded"]
    assert "TLS handshake failed" in st["last_error"], st
    assert state(gw)["kids"] == []


def test_rotation_by_periodic_refresh(idp, start_gateway):
    gw = start_gateway(gw_config(issuer_conf(idp, refresh=1,
                                             min_refresh_interval=1)))
    wait_for(lambda: state(gw)["kids"] == ["rsa-1", "ec-1"],
             what="first keys")
    idp.restart(keys=[("RS256", "rsa-2"), ("ES256", "ec-2")])
    wait_for(lambda: state(gw)["kids"] == ["rsa-2", "ec-2"], timeout=30,
             what="rotated keys")
    assert 'trigger=periodic keys=2 kids="rsa-2:RSA,ec-2:EC"' in \
        gw.log_text() or 'trigger=retry keys=2 kids="rsa-2:RSA,ec-2:EC"' \
        in gw.log_text()


def test_rotation_by_unknown_kid(idp, start_gateway):
    gw = start_gateway(gw_config(issuer_conf(idp, refresh=3600,
                                             min_refresh_interval=3)))
    wait_for(lambda: state(gw)["loaded"], what="first keys")
    # A kid the gateway holds needs no fetch.
    assert refresh(gw, "rsa-1") == {"result": "known", "known": True}
    idp.restart(keys=[("RS256", "rsa-1"), ("RS256", "rsa-2")])
    # The start fetch was less than min_refresh_interval ago: refused.
    if not state(gw)["kid_refresh_allowed"]:
        r = refresh(gw, "rsa-2")
        assert r["result"] == "refused", r
    wait_for(lambda: state(gw)["kid_refresh_allowed"], timeout=20,
             what="min_refresh_interval over")
    before = state(gw)
    r = refresh(gw, "rsa-2")
    assert r == {"result": "fetched", "known": True}
    after = state(gw)
    assert after["kids"] == ["rsa-1", "rsa-2"]
    assert after["fetches"] == before["fetches"] + 1
    assert after["kid_refreshes"] == before["kid_refreshes"] + 1
    assert "trigger=unknown-kid keys=2" in gw.log_text()
    # Right after, another unknown kid is rate-limited: no fetch.
    r = refresh(gw, "rsa-3")
    assert r["result"] == "refused" and not r["known"]
    assert "min_refresh_interval" in r["reason"]
    assert state(gw)["fetches"] == after["fetches"]
    assert state(gw)["kid_rate_limited"] >= 1


def test_unknown_kid_refreshes_coalesce(idp, start_gateway):
    """Many requests naming one unknown kid at once: one fetch, and every
    one of them is answered when it lands."""
    gw = start_gateway(gw_config(issuer_conf(idp, refresh=3600,
                                             min_refresh_interval=2)))
    wait_for(lambda: state(gw)["loaded"], what="first keys")
    idp.restart(keys=[("ES256", "ec-9")])
    wait_for(lambda: state(gw)["kid_refresh_allowed"], timeout=20,
             what="min_refresh_interval over")
    before = state(gw)
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        results = list(ex.map(lambda _: refresh(gw, "ec-9"), range(8)))
    assert all(r["known"] for r in results), results
    assert any(r["result"] == "fetched" for r in results), results
    after = state(gw)
    assert after["kids"] == ["ec-9"]
    assert after["fetches"] == before["fetches"] + 1
    assert after["kid_refreshes"] == before["kid_refreshes"] + 1


def test_provider_down_keeps_keys(idp, start_gateway):
    # Retries every 1 to 2 s: an unknown kid may start a fetch in between.
    gw = start_gateway(gw_config(issuer_conf(idp, refresh=2,
                                             min_refresh_interval=1)))
    wait_for(lambda: state(gw)["loaded"], what="first keys")
    idp.stop()
    st = wait_for(lambda: (s := state(gw))["failures"] > 0 and s,
                  timeout=30, what="a failed refresh")
    assert st["loaded"] and st["kids"] == ["rsa-1", "ec-1"]
    assert st["last_error"] != ""
    assert "oidc refresh_failed issuer=test" in gw.log_text()
    assert "keys_kept=2" in gw.log_text()
    # An unknown kid while it is down: the fetch fails, the keys stay.
    r = wait_for(lambda: (x := refresh(gw, "rsa-7"))["result"] != "refused"
                 and x, timeout=20, what="an unknown-kid refresh")
    assert r == {"result": "failed", "known": False}
    assert state(gw)["kids"] == ["rsa-1", "ec-1"]
    fail_ms = state(gw)["last_failure_ms"]
    idp.start()
    st = wait_for(lambda: (s := state(gw))["last_success_ms"] > fail_ms
                  and s, timeout=30, what="recovery")
    assert st["last_error"] == "" and st["kids"] == ["rsa-1", "ec-1"]


def test_discovery_issuer_mismatch_refused(start_gateway):
    idp = HostileIdP()
    try:
        idp.discovery(issuer=idp.url + "/other")
        idp.jwks({"keys": [make_jwk("RS256", "k")]})
        gw = start_gateway(gw_config(issuer_conf(idp)))
        st = wait_for(lambda: (s := state(gw))["failures"] > 0 and s,
                      what="a failed fetch")
        assert not st["loaded"]
        assert "OIDC Discovery 4.3" in st["last_error"]
        assert "discovery document's issuer is not %s" % idp.url in \
            gw.log_text()
        assert idp.count("GET", "/jwks") == 0
        assert gw.http.get(gw.url + "/admin/identity",
                           timeout=5).json()["ready"] is False
    finally:
        idp.stop()


def public(jwk):
    return {k: v for k, v in jwk.items() if k not in
            ("d", "p", "q", "dp", "dq", "qi")}


def test_jwks_bounds(start_gateway):
    idp = HostileIdP()
    try:
        keys = [public(make_jwk("ES256", "a"))]
        idp.discovery()
        idp.jwks({"keys": keys})
        gw = start_gateway(gw_config(issuer_conf(
            idp, max_jwks_bytes=1024, max_keys=2, refresh=3600,
            min_refresh_interval=1)))
        wait_for(lambda: state(gw)["kids"] == ["a"], what="small JWKS")
        # Over max_jwks_bytes: refused, the keys held stay.
        idp.jwks({"keys": keys}, pad=2000)
        r = wait_for(lambda: (x := refresh(gw, "b"))["result"] !=
                     "refused" and x, timeout=20, what="a refresh")
        assert r["result"] == "failed"
        st = state(gw)
        assert st["last_error"] == \
            "JWKS larger than max_jwks_bytes (1024 bytes)", st
        assert st["kids"] == ["a"]
        # More keys than max_keys.
        idp.jwks({"keys": [public(make_jwk("ES256", k))
                           for k in ("b", "c", "d")]})
        wait_for(lambda: refresh(gw, "b")["result"] != "refused",
                 timeout=20, what="a refresh")
        st = state(gw)
        assert st["last_error"] == "JWKS has 3 keys (1 to max_keys, 2)"
        assert st["kids"] == ["a"]
        # Duplicate kids are ambiguous.
        idp.jwks({"keys": [public(make_jwk("ES256", "b")),
                           public(make_jwk("RS256", "b"))]})
        wait_for(lambda: refresh(gw, "b")["result"] != "refused",
                 timeout=20, what="a refresh")
        assert state(gw)["last_error"] == \
            "JWKS keys 0 and 1 have the same kid"
        # Only an HMAC secret and a short RSA key: no usable key (jwk.c).
        idp.jwks({"keys": [{"kty": "oct", "kid": "h", "k": "c2VjcmV0"},
                           {"kty": "RSA", "kid": "r", "e": "AQAB",
                            "n": "AQAB" * 40}]})
        wait_for(lambda: refresh(gw, "h")["result"] != "refused",
                 timeout=20, what="a refresh")
        st = state(gw)
        assert st["last_error"].startswith("JWKS has no usable key"), st
        assert st["kids"] == ["a"]
        # Within the bounds: taken.
        idp.jwks({"keys": [public(make_jwk("ES256", "b"))]})
        r = wait_for(lambda: (x := refresh(gw, "b"))["result"] !=
                     "refused" and x, timeout=20, what="a refresh")
        assert r == {"result": "fetched", "known": True}
    finally:
        idp.stop()


def test_discovery_bound(start_gateway):
    idp = HostileIdP()
    try:
        idp.discovery(padding="x" * 2000)
        gw = start_gateway(gw_config(issuer_conf(idp,
                                                 max_discovery_bytes=1024)))
        st = wait_for(lambda: (s := state(gw))["failures"] > 0 and s,
                      what="a failed fetch")
        assert st["last_error"] == "discovery document larger than " \
            "max_discovery_bytes (1024 bytes)"
    finally:
        idp.stop()


def test_jwks_uri_ssrf_refused(start_gateway):
    """A jwks_uri on another origin, not in jwks_hosts, must resolve to a
    public address: a loopback service behind the gateway is refused, and
    reachable only once the operator lists it."""
    secret = SecretService()
    idp = HostileIdP()
    try:
        idp.discovery(jwks_uri=secret.url + "/jwks")
        gw = start_gateway(gw_config(issuer_conf(idp)))
        st = wait_for(lambda: (s := state(gw))["failures"] > 0 and s,
                      what="a failed fetch")
        assert "jwks_uri refused: 127.0.0.1 resolves to a loopback " \
            "address (not the issuer's origin, not in jwks_hosts)" == \
            st["last_error"], st
        assert secret.count() == 0
        gw.stop()
        gw2 = start_gateway(gw_config(issuer_conf(
            idp, jwks_hosts=[secret.host])))
        st = wait_for(lambda: (s := state(gw2))["failures"] > 0 and s,
                      what="a failed fetch")
        assert secret.count("GET", "/jwks") >= 1
        assert st["last_error"].startswith("JWKS is not valid JSON"), st
    finally:
        idp.stop()
        secret.stop()


def test_reload_keeps_keys_and_adds_issuers(idp, start_gateway):
    gw = start_gateway(gw_config(issuer_conf(idp)))
    wait_for(lambda: state(gw)["loaded"], what="first keys")
    fetches = state(gw)["fetches"]
    other = HostileIdP()
    try:
        other.discovery()
        other.jwks({"keys": [public(make_jwk("ES256", "o-1"))]})
        cfg = dict(gw.config)
        cfg["identity"] = {"issuers": [
            issuer_conf(idp, leeway=5, prefix="test:"),
            issuer_conf(other, name="other", prefix="other:")]}
        with open(gw.config_path, "w") as f:
            json.dump(cfg, f)
        os.kill(gw.pid, signal.SIGHUP)
        wait_for(lambda: state(gw, "other")["kids"] == ["o-1"],
                 what="the new issuer's keys")
        # The unchanged source kept its keys without a fetch.
        assert state(gw)["fetches"] == fetches
        assert state(gw)["kids"] == ["rsa-1", "ec-1"]
        # Dropped from the config: dropped.
        cfg["identity"] = {"issuers": [issuer_conf(other, name="other")]}
        with open(gw.config_path, "w") as f:
            json.dump(cfg, f)
        os.kill(gw.pid, signal.SIGHUP)
        wait_for(lambda: "oidc issuer_dropped issuer=test" in gw.log_text(),
                 what="issuer dropped")
        r = gw.http.get(gw.url + "/admin/identity", timeout=5).json()
        assert [i["name"] for i in r["issuers"]] == ["other"]
    finally:
        other.stop()


def test_issuer_config_errors(start_gateway):
    gw = start_gateway(gateway_config(UPSTREAM, identity={"issuers": [{
        "name": "x", "issuer": "http://idp.example",
        "audiences": ["a"]}]}), expect_fail=True)
    assert gw.returncode != 0
    assert "/identity/issuers/0/issuer: must be https (http only for a " \
        "numeric loopback host)" in gw.log_text()


def test_max_waiters(start_gateway):
    """Requests waiting for one fetch are bounded: the next is answered
    at once as an unknown kid.  The IdP here is a TEST DOUBLE: a socket
    that accepts connections (the kernel's backlog) and never answers,
    so the start fetch hangs until timeouts.upstream_response."""
    silent = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    issuer = "http://127.0.0.1:%d" % silent.getsockname()[1]
    try:
        cfg = gw_config({"name": "test", "issuer": issuer,
                         "audiences": ["a"], "max_waiters": 2})
        cfg["timeouts"]["upstream_response"] = 8
        gw = start_gateway(cfg)
        wait_for(lambda: state(gw)["fetching"], what="the start fetch")
        with concurrent.futures.ThreadPoolExecutor(2) as ex:
            waiting = [ex.submit(refresh, gw, "k%d" % i) for i in range(2)]
            wait_for(lambda: state(gw)["waiters"] == 2, what="2 waiters")
            r = refresh(gw, "k9")
            assert r["result"] == "refused" and "max_waiters" in \
                r["reason"], r
            # The two waiting are answered when the fetch times out.
            for f in waiting:
                assert f.result(timeout=30) == {"result": "failed",
                                                "known": False}
        st = state(gw)
        assert st["waiters"] == 0 and "no answer within 8000 ms" in \
        st["last_error"], st
    finally:
        silent.close()


def test_jwks_uri_must_be_https(tmp_path, start_gateway):
    """An https issuer's jwks_uri on plain http is refused (the keys would
    cross the network unprotected), before anything is dialled."""
    pki = PKI(tmp_path / "pki")
    crt, key = pki.issue("idp", "/CN=127.0.0.1", san="IP:127.0.0.1")
    secret = SecretService()
    idp = HostileIdP(tls=(crt, key))
    try:
        idp.discovery(jwks_uri=secret.url + "/jwks")
        gw = start_gateway(gw_config(issuer_conf(idp, ca_file=pki.ca)))
        st = wait_for(lambda: (s := state(gw))["failures"] > 0 and s,
                      what="a failed fetch")
        assert st["last_error"] == "jwks_uri must be https", st
        assert idp.count("GET", "/.well-known/openid-configuration") >= 1
        assert secret.count() == 0
    finally:
        idp.stop()
        secret.stop()


def test_discovery_redirect_not_followed(start_gateway):
    secret = SecretService()
    idp = HostileIdP()
    try:
        idp.route("GET", "/.well-known/openid-configuration", 302,
                  {"Location": secret.url + "/.well-known/openid-"
                   "configuration"})
        gw = start_gateway(gw_config(issuer_conf(idp)))
        st = wait_for(lambda: (s := state(gw))["failures"] > 0 and s,
                      what="a failed fetch")
        assert st["last_error"] == "discovery document answered HTTP 302"
        assert secret.count() == 0
    finally:
        idp.stop()
        secret.stop()


def test_reload_algorithms_apply_to_held_keys(start_gateway):
    """An issuer's `algorithms` cut each key's algorithms when its JWKS is
    fetched; a reload that keeps the issuer's source keeps its keys, and
    must cut them to the new list at once, not at the next refresh (an
    operator withdrawing RS256 would have seen it accepted for up to
    `refresh`)."""
    idp = HostileIdP()
    try:
        idp.discovery()
        idp.jwks({"keys": [public(make_jwk("RS256", "r")),
                           public(make_jwk("ES256", "e"))]})
        gw = start_gateway(gw_config(issuer_conf(idp, refresh=3600)))
        st = wait_for(lambda: (s := state(gw))["loaded"] and s,
                      what="keys loaded")
        assert st["key_algorithms"] == {"r": ["RS256"], "e": ["ES256"]}
        fetches = st["fetches"]
        cfg = dict(gw.config)
        cfg["identity"] = {"issuers": [issuer_conf(
            idp, refresh=3600, algorithms=["ES256"])]}
        with open(gw.config_path, "w") as f:
            json.dump(cfg, f)
        os.kill(gw.pid, signal.SIGHUP)
        wait_for(lambda: gw.log_text().count("server reload done") >= 1,
                 what="the reload")
        st = state(gw)
        assert st["key_algorithms"] == {"r": [], "e": ["ES256"]}
        assert st["kids"] == ["r", "e"]
        assert st["fetches"] == fetches     # no fetch needed
        # And back: a widened list applies at once too.
        cfg["identity"] = {"issuers": [issuer_conf(idp, refresh=3600)]}
        with open(gw.config_path, "w") as f:
            json.dump(cfg, f)
        os.kill(gw.pid, signal.SIGHUP)
        wait_for(lambda: gw.log_text().count("server reload done") >= 2,
                 what="the second reload")
        assert state(gw)["key_algorithms"] == {"r": ["RS256"],
                                               "e": ["ES256"]}
    finally:
        idp.stop()


def test_slow_provider_bounded(start_gateway):
    """An IdP that drips its discovery document a byte at a time is given
    up on after upstream_connect + upstream_response for the whole
    answer, not per byte: the fetch fails, the connection is closed."""
    from lib.hostile_upstream import DripService
    drip = DripService(count=200, every=0.1)
    try:
        cfg = gw_config({"name": "test", "issuer": drip.url,
                         "audiences": ["https://portcullis.test"]})
        cfg["timeouts"] = {"upstream_connect": 1, "upstream_response": 1}
        gw = start_gateway(cfg)
        st = wait_for(lambda: (s := state(gw))["failures"] > 0 and s,
                      timeout=15, what="the slow fetch given up")
        assert "timed out" in st["last_error"], st
        assert not st["loaded"]
        wait_for(lambda: drip.done(0), timeout=10,
                 what="the dripping connection closed")
        # Closed long before the 200 bytes (20 s) were dripped.
        assert drip.sent[0] < 100, drip.sent
    finally:
        drip.stop()


def test_reload_while_fetch_in_flight(start_gateway):
    """An issuer whose source changes while its fetch is in flight (a
    dripping IdP) is dropped with its fetch: the request waiting for it
    is told it failed, the gateway serves on, the new source's keys come."""
    from lib.hostile_upstream import DripService
    drip = DripService(count=600, every=0.1)
    idp = HostileIdP()
    try:
        idp.discovery()
        idp.jwks({"keys": [public(make_jwk("ES256", "new"))]})
        gw = start_gateway(gw_config({"name": "test", "issuer": drip.url,
                                      "audiences": ["x"]}))
        wait_for(lambda: state(gw)["fetching"], what="the slow fetch")
        with concurrent.futures.ThreadPoolExecutor(1) as ex:
            waiting = ex.submit(refresh, gw, "k")
            wait_for(lambda: state(gw)["waiters"] == 1, what="a waiter")
            cfg = dict(gw.config)
            cfg["identity"] = {"issuers": [issuer_conf(idp)]}
            with open(gw.config_path, "w") as f:
                json.dump(cfg, f)
            os.kill(gw.pid, signal.SIGHUP)
            assert waiting.result(timeout=10) == {"result": "failed",
                                                  "known": False}
        wait_for(lambda: state(gw)["kids"] == ["new"], what="new keys")
        wait_for(lambda: drip.done(0), timeout=10,
                 what="the old fetch's connection closed")
        assert gw.http.get(gw.url + "/healthz", timeout=5).status_code \
            == 200
    finally:
        drip.stop()
        idp.stop()


def test_http_jwks_uri_only_numeric_loopback(start_gateway):
    """A plain-http issuer is allowed only on a numeric loopback address
    (nothing on the path can swap its keys); its jwks_uri may be http
    only on one too.  A named host, even one the operator listed in
    jwks_hosts, would carry the keys unprotected wherever the name
    leads: refused before anything is dialled."""
    secret = SecretService()
    idp = HostileIdP()
    try:
        port = secret.host.rsplit(":", 1)[1]
        idp.discovery(jwks_uri="http://localhost:%s/jwks" % port)
        gw = start_gateway(gw_config(issuer_conf(
            idp, jwks_hosts=["localhost:%s" % port])))
        st = wait_for(lambda: (s := state(gw))["failures"] > 0 and s,
                      what="a failed fetch")
        assert st["last_error"] == "jwks_uri must be https", st
        assert secret.count() == 0
    finally:
        idp.stop()
        secret.stop()
