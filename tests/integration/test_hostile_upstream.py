"""A hostile upstream (the lib/hostile_upstream.py TEST DOUBLE) cannot use
the gateway against what sits next to it: redirects to the gateway's own
networks are refused unless the upstream's redirect_allow names them, no
https -> http, at most limits.redirects hops, and a redirect target gets no
client headers; token realms get the upstream's credentials only on its
own host or auth_hosts and are held to the same address rules; a rejected
token is dropped and fetched again once; a POST or DELETE is never sent
twice.  A local "secret" service counts every request that reaches it."""

import json

import pytest

from lib.cache import session
from lib.gateway import gateway_config
from lib.hostile_upstream import (DripService, HostileUpstream,
                                  SecretService, make_ca_and_cert)
from lib.util import wait_for

BLOB = b"a blob the hostile upstream pretends to hold\n" * 10


@pytest.fixture
def secret():
    s = SecretService()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def up():
    u = HostileUpstream()
    try:
        yield u
    finally:
        u.stop()


def hostile(up, **kw):
    u = {"name": "hostile", "url": up.url, "prefix": "h",
         "hosts": [up.host]}
    u.update(kw)
    return u


def assert_refused(r, *words):
    assert r.status_code == 502, (r.status_code, r.text)
    if r.request.method != "HEAD":
        err = json.loads(r.content)["errors"][0]
        assert err["code"] == "UNAVAILABLE", err
        text = json.dumps(err)
        for w in words:
            assert w in text, (w, err)


def secret_redirect(up, secret, path="/secret", status=307, host=None):
    d = sha = up.blob(BLOB)
    loc = "http://%s:%d%s" % (host or "127.0.0.1", secret.port, path)
    up.route("GET", "/v2/app/blobs/" + d, status, {"Location": loc})
    return sha


# --- 1. redirects ----------------------------------------------------------

@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_redirect_to_loopback_service_is_refused(up, secret, start_gateway,
                                                 method):
    gw = start_gateway(gateway_config(hostile(up, default=True)))
    d = secret_redirect(up, secret)
    r = session().request(method, gw.url + "/v2/h/app/blobs/" + d,
                          timeout=30)
    assert_refused(r, "loopback", "127.0.0.1")
    assert up.count(method, "/v2/app/blobs/" + d) == 1
    assert secret.count() == 0


@pytest.mark.parametrize("host,why", [
    ("localhost", "loopback"),             # a name: checked once resolved
    ("0.0.0.0", "unspecified"),            # Linux dials the host itself
    ("[::ffff:127.0.0.1]", "loopback")])   # IPv4-mapped IPv6
def test_redirect_to_other_forms_of_loopback_is_refused(up, secret,
                                                        start_gateway, host,
                                                        why):
    gw = start_gateway(gateway_config(hostile(up, default=True)))
    d = secret_redirect(up, secret, host=host)
    r = session().get(gw.url + "/v2/h/app/blobs/" + d, timeout=30)
    assert_refused(r, why)
    assert secret.count() == 0


def test_refusal_does_not_tell_the_client_what_a_name_resolves_to(
        up, secret, start_gateway):
    # Otherwise an upstream and a client together map the gateway's
    # internal names to addresses; the operator's log keeps the address.
    gw = start_gateway(gateway_config(hostile(up, default=True)))
    d = secret_redirect(up, secret, host="localhost")
    r = session().get(gw.url + "/v2/h/app/blobs/" + d, timeout=30)
    assert_refused(r, "localhost", "loopback")
    assert "127.0.0.1" not in r.text, r.text
    assert "address=127.0.0.1" in gw.log_text()
    assert secret.count() == 0


@pytest.mark.parametrize("loc", ["/v2/app/x\ty", "/v2/app/x y",
                                 "/v2/app/\x80"])
def test_relative_location_with_raw_bytes_is_refused(up, start_gateway,
                                                     loc):
    # Absolute Locations are parsed strictly; a relative one went into the
    # next request line byte for byte (TAB, space, obs-text).
    gw = start_gateway(gateway_config(hostile(up, default=True)))
    d = up.blob(BLOB)
    up.route("GET", "/v2/app/blobs/" + d, 307, {"Location": loc})
    r = session().get(gw.url + "/v2/h/app/blobs/" + d, timeout=30)
    assert_refused(r, "Location")
    assert up.count() == 1


def test_redirect_back_to_the_upstream_keeps_its_credentials(up,
                                                             start_gateway):
    # The upstream's own origin is no SSRF target: the token goes along.
    up.require_token()
    d = up.blob(BLOB)
    up.route("GET", "/v2/app/blobs/" + d, 307,
             {"Location": "/v2/app/storage/" + d})
    up.route("GET", "/v2/app/storage/" + d, 200,
             {"Content-Type": "application/octet-stream"}, BLOB)
    gw = start_gateway(gateway_config(hostile(up, default=True)))
    r = session().get(gw.url + "/v2/h/app/blobs/" + d, timeout=30)
    assert r.status_code == 200 and r.content == BLOB, (r.status_code,
                                                        r.text)
    hop = [h for m, p, h in up.seen() if p == "/v2/app/storage/" + d]
    assert hop and hop[-1]["Authorization"].startswith("Bearer tok-"), hop


def test_redirect_allow_lets_it_through_with_only_safe_headers(
        up, secret, start_gateway):
    up.require_token()      # the gateway holds a token it must not pass on
    gw = start_gateway(gateway_config(hostile(
        up, default=True, redirect_allow=["127.0.0.1:%d" % secret.port])))
    d = secret_redirect(up, secret)
    r = session().get(gw.url + "/v2/h/app/blobs/" + d, timeout=30,
                      headers={"Range": "bytes=0-3",
                               "Accept": "application/octet-stream",
                               "User-Agent": "hostile-test/1",
                               "X-Client-Secret": "do-not-forward",
                               "Cookie": "session=do-not-forward",
                               "Authorization": "Bearer client-token"})
    assert r.status_code == 200, (r.status_code, r.text)
    assert r.content == secret.body
    assert secret.count() == 1
    method, path, headers = secret.seen()[0]
    names = {k.lower() for k in headers}
    assert path == "/secret"
    assert headers.get("Range") == "bytes=0-3"
    assert headers.get("Accept") == "application/octet-stream"
    assert headers.get("User-Agent") == "hostile-test/1"
    assert names <= {"host", "range", "accept", "user-agent"}, headers
    # The upstream itself still got the client's request as before.
    first = up.seen()[-1][2]
    assert "X-Forwarded-For" in first


def test_cache_fill_redirect_is_refused(up, secret, start_gateway, tmp_path):
    gw = start_gateway(gateway_config(
        hostile(up, default=True),
        cache={"dir": str(tmp_path / "c"), "max_bytes": 1 << 30}))
    d = secret_redirect(up, secret)
    r = session().get(gw.url + "/v2/h/app/blobs/" + d, timeout=30)
    assert r.status_code == 502, (r.status_code, r.text)
    assert "cache" in gw.log_text()
    assert secret.count() == 0


def test_tag_head_revalidation_redirect_is_refused(up, secret, start_gateway,
                                                   tmp_path):
    mtype = "application/vnd.oci.image.manifest.v1+json"
    man = json.dumps({"schemaVersion": 2, "mediaType": mtype,
                      "config": {}, "layers": []}).encode()
    up.manifest("app", "v1", man, mtype)
    gw = start_gateway(gateway_config(
        hostile(up, default=True, tag_ttl=0),
        cache={"dir": str(tmp_path / "c"), "max_bytes": 1 << 30}))
    s = session()
    url = gw.url + "/v2/h/app/manifests/v1"
    r = s.get(url, headers={"Accept": mtype}, timeout=30)
    assert r.status_code == 200, r.text
    # From now on the tag's revalidation HEAD is sent to the secret.
    up.route("HEAD", "/v2/app/manifests/v1", 307,
             {"Location": "http://127.0.0.1:%d/secret" % secret.port})
    n = up.count("HEAD", "/v2/app/manifests/v1")
    s.get(url, headers={"Accept": mtype}, timeout=30)
    assert up.count("HEAD", "/v2/app/manifests/v1") == n + 1, \
        "the cached tag was not revalidated: the test proves nothing"
    wait_for(lambda: "redirect_refused" in gw.log_text() or
             "refused" in gw.log_text(), timeout=10,
             what="the refusal in the gateway's log")
    assert secret.count() == 0


def test_https_to_http_downgrade_is_refused(secret, start_gateway, tmp_path):
    ca, crt, key = make_ca_and_cert(tmp_path)
    tup = HostileUpstream(tls=(crt, key))
    try:
        gw = start_gateway(gateway_config(hostile(
            tup, default=True, ca_file=ca,
            redirect_allow=["127.0.0.1:%d" % secret.port])))
        d = secret_redirect(tup, secret)
        r = session().get(gw.url + "/v2/h/app/blobs/" + d, timeout=30)
        assert_refused(r, "https to http")
        assert tup.count("GET", "/v2/app/blobs/" + d) == 1
        assert secret.count() == 0
    finally:
        tup.stop()


def test_redirect_hop_limit(up, start_gateway):
    gw = start_gateway(gateway_config(hostile(up, default=True),
                                      limits={"redirects": 3}))
    d = up.blob(BLOB)
    # A chain of relative redirects on the upstream itself: /hop/1 ...
    up.route("GET", "/v2/app/blobs/" + d, 302, {"Location": "/hop/1"})
    for i in range(1, 10):
        up.route("GET", "/hop/%d" % i, 307, {"Location": "/hop/%d" % (i + 1)})
    r = session().get(gw.url + "/v2/h/app/blobs/" + d, timeout=30)
    assert_refused(r, "more than 3 redirects")
    assert up.count("GET", "/hop/3") == 1
    assert up.count("GET", "/hop/4") == 0
    # Three hops are fine.
    up.route("GET", "/hop/3", 200, {"Content-Type": "text/plain"}, b"end")
    r = session().get(gw.url + "/v2/h/app/blobs/" + d, timeout=30)
    assert r.status_code == 200 and r.content == b"end", r.text


# --- 2. token realms ---------------------------------------------------------

def creds_file(tmp_path):
    p = tmp_path / "creds"
    p.write_text("gwuser:gw-s3cret\n")
    p.chmod(0o600)
    return str(p)


@pytest.fixture
def other_host():
    """A "realm" on another host (127.0.0.2: loopback, but not the
    upstream's 127.0.0.1), recording what reaches it."""
    s = SecretService(addr="127.0.0.2", body=b'{"token":"stolen"}')
    try:
        yield s
    finally:
        s.stop()


def test_realm_on_another_host_gets_no_credentials(up, other_host,
                                                   start_gateway, tmp_path):
    up.require_token(realm=other_host.url + "/token")
    d = up.blob(BLOB)
    gw = start_gateway(gateway_config(hostile(
        up, default=True, credentials_file=creds_file(tmp_path))))
    r = session().get(gw.url + "/v2/h/app/blobs/" + d, timeout=30)
    assert_refused(r, "127.0.0.2", "auth_hosts", "credentials not sent")
    assert other_host.count() == 0


def test_plain_http_realm_in_auth_hosts_gets_no_credentials(
        up, other_host, start_gateway, tmp_path):
    up.require_token(realm=other_host.url + "/token")
    d = up.blob(BLOB)
    gw = start_gateway(gateway_config(hostile(
        up, default=True, credentials_file=creds_file(tmp_path),
        auth_hosts=[other_host.host])))
    r = session().get(gw.url + "/v2/h/app/blobs/" + d, timeout=30)
    assert_refused(r, "plain http", "https only")
    assert other_host.count() == 0


def test_anonymous_realm_is_held_to_the_address_rules(up, other_host,
                                                      start_gateway):
    # No credentials to leak, but the realm is still a request the
    # upstream chose: a loopback realm on another host is not dialled...
    up.require_token(realm=other_host.url + "/token")
    d = up.blob(BLOB)
    gw = start_gateway(gateway_config(hostile(up, default=True)))
    r = session().get(gw.url + "/v2/h/app/blobs/" + d, timeout=30)
    assert_refused(r, "loopback", "auth_hosts")
    assert other_host.count() == 0
    # ... unless auth_hosts names it; then it is asked, anonymously.
    gw2 = start_gateway(gateway_config(hostile(
        up, default=True, auth_hosts=["127.0.0.2"])))
    r = session().get(gw2.url + "/v2/h/app/blobs/" + d, timeout=30)
    assert other_host.count() == 1
    assert "Authorization" not in other_host.seen()[0][2]


def test_https_realm_in_auth_hosts_gets_credentials(up, start_gateway,
                                                    tmp_path):
    ca, crt, key = make_ca_and_cert(tmp_path, hosts=("127.0.0.2",))
    realm = SecretService(addr="127.0.0.2", tls=(crt, key),
                          body=b'{"token":"not-one-the-upstream-takes"}')
    try:
        up.require_token(realm=realm.url + "/token")
        d = up.blob(BLOB)
        gw = start_gateway(gateway_config(hostile(
            up, default=True, credentials_file=creds_file(tmp_path),
            ca_file=ca, auth_hosts=[realm.host])))
        session().get(gw.url + "/v2/h/app/blobs/" + d, timeout=30)
        assert realm.count() == 1
        assert realm.seen()[0][2].get("Authorization", "").startswith(
            "Basic ")
    finally:
        realm.stop()


def test_token_service_dripping_its_answer_is_cut_off(up, start_gateway):
    # Each byte comes well within the read timeout, but a token request's
    # whole answer gets the connect + response timeouts once (3 s here):
    # the gateway hangs up long before the 100 bytes (20 s) are out.
    drip = DripService(count=100, every=0.2)
    try:
        up.require_token(realm=drip.url + "/token")
        d = up.blob(BLOB)
        gw = start_gateway(gateway_config(
            hostile(up, default=True, auth_hosts=["127.0.0.2"]),
            timeouts={"upstream_connect": 2, "upstream_response": 1}))
        r = session().get(gw.url + "/v2/h/app/blobs/" + d, timeout=60)
        assert r.status_code == 502, r.text
        assert "timed out" in r.text, r.text
        wait_for(lambda: drip.done(0), timeout=30,
                 what="the dripping connection to end")
        assert drip.sent[0] < 100, drip.sent
    finally:
        drip.stop()


def test_realm_on_another_port_of_the_upstreams_host_is_not_dialled(
        up, secret, start_gateway, tmp_path):
    # The upstream's host is loopback here, so its other ports are the
    # gateway's own neighbours: the realm is held to the address rules
    # like any redirect target, and gets no credentials.
    up.require_token(realm="http://127.0.0.1:%d/token" % secret.port)
    d = up.blob(BLOB)
    gw = start_gateway(gateway_config(hostile(
        up, default=True, credentials_file=creds_file(tmp_path))))
    r = session().get(gw.url + "/v2/h/app/blobs/" + d, timeout=30)
    assert_refused(r, "loopback", "auth_hosts")
    assert secret.count() == 0
    # Listed with its port, it is asked (with the credentials: plain
    # http to a plain-http upstream's own host, as the README says).
    gw2 = start_gateway(gateway_config(hostile(
        up, default=True, credentials_file=creds_file(tmp_path),
        auth_hosts=["127.0.0.1:%d" % secret.port])))
    session().get(gw2.url + "/v2/h/app/blobs/" + d, timeout=30)
    assert secret.count() == 1


# --- 3. a refused token ------------------------------------------------------

def test_rejected_token_is_dropped_and_fetched_again(up, start_gateway):
    up.require_token()
    d = up.blob(BLOB)
    gw = start_gateway(gateway_config(hostile(up, default=True)))
    s = session()
    url = gw.url + "/v2/h/app/blobs/" + d
    assert s.get(url, timeout=30).status_code == 200
    assert up.ntokens == 1
    up.revoke("tok-1")
    r = s.get(url, timeout=30)
    assert r.status_code == 200, (r.status_code, r.text)
    assert r.content == BLOB
    assert up.ntokens == 2
    # The fresh token is cached again: no third fetch.
    assert s.get(url, timeout=30).status_code == 200
    assert up.ntokens == 2


def test_token_refused_twice_is_a_401_with_a_challenge_and_no_loop(
        up, start_gateway):
    up.require_token()
    d = up.blob(BLOB)
    path = "/v2/app/blobs/" + d
    gw = start_gateway(gateway_config(hostile(up, default=True)))
    s = session()
    url = gw.url + "/v2/h/app/blobs/" + d
    assert s.get(url, timeout=30).status_code == 200
    up.revoke_all = True
    tokens, gets = up.ntokens, up.count("GET", path)
    r = s.get(url, timeout=30)
    assert r.status_code == 401, (r.status_code, r.text)
    assert r.headers.get("WWW-Authenticate"), r.headers
    assert "127.0.0.1:%d" % up.port not in r.headers["WWW-Authenticate"]
    assert up.ntokens == tokens + 1
    assert up.count("GET", path) == gets + 2


# --- 13. no retried POST or DELETE ------------------------------------------

@pytest.mark.parametrize("method,path", [
    ("POST", "/v2/app/blobs/uploads/"),
    ("DELETE", "/v2/app/manifests/sha256:" + "0" * 64)])
def test_unsafe_request_not_resent_on_a_dropped_pooled_connection(
        up, start_gateway, method, path):
    d = up.blob(BLOB)
    gw = start_gateway(gateway_config(hostile(up, default=True)))
    s = session()
    # A GET leaves a kept-alive connection in the gateway's pool...
    assert s.get(gw.url + "/v2/h/app/blobs/" + d,
                 timeout=30).status_code == 200
    # ... which the upstream closes after reading the next request.
    up.drop_after_read = {method}
    r = s.request(method, gw.url + path.replace("/v2/", "/v2/h/"),
                  timeout=30)
    assert r.status_code == 502, (r.status_code, r.text)
    assert up.count(method, path) == 1


# --- upstream answers are bounded before they are held -----------------------

def test_token_answer_over_token_bytes_is_refused(up, start_gateway):
    up.require_token()
    up.token_pad = 8000
    d = up.blob(BLOB)
    url = "/v2/h/app/blobs/" + d
    cfg = gateway_config(hostile(up, default=True))
    cfg["limits"] = {"token_bytes": 4096}
    gw = start_gateway(cfg)
    r = session().get(gw.url + url, timeout=30)
    assert r.status_code == 502, (r.status_code, r.text)
    assert up.ntokens == 1
    # The same answer within the bound is read and used.
    cfg["limits"] = {"token_bytes": 16384}
    gw2 = start_gateway(cfg)
    r = session().get(gw2.url + url, timeout=30)
    assert r.status_code == 200, (r.status_code, r.text)
    assert r.content == BLOB


@pytest.mark.parametrize("limits,fields", [
    ({"upstream_header_count": 16}, {"X-Many-%d" % i: "v" for i in range(40)}),
    ({"upstream_header_bytes": 2048}, {"X-Big": "v" * 4000}),
])
def test_upstream_head_over_its_limits_is_refused(up, start_gateway, limits,
                                                   fields):
    d = up.blob(BLOB)
    path = "/v2/app/blobs/" + d
    _, headers, data = up.routes[("GET", path)]
    headers = dict(headers)
    headers.update(fields)
    up.route("GET", path, 200, headers, data)
    cfg = gateway_config(hostile(up, default=True))
    cfg["limits"] = limits
    gw = start_gateway(cfg)
    r = session().get(gw.url + "/v2/h/app/blobs/" + d, timeout=30)
    assert r.status_code == 502, (r.status_code, r.text)
    assert json.loads(r.content)["errors"][0]["code"] == "UNAVAILABLE"
    # Without the tighter limit the same answer goes through.
    gw2 = start_gateway(gateway_config(hostile(up, default=True)))
    r = session().get(gw2.url + "/v2/h/app/blobs/" + d, timeout=30)
    assert r.status_code == 200 and r.content == BLOB
