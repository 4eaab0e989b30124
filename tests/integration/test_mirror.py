"""The authenticated mirror for docker (README "Authenticated mirror for
docker"): a real dockerd with `registry-mirrors` pointing at the gateway
over TLS, admitted by the client certificate in its certs.d (an `mtls:`
rule) or by its network (a `cidr:` rule), refused without either, and the
Docker Hub credentials it sends a mirror kept out of every upstream
request, log line and audit record.

Why the mirror is https://[::1]:PORT and not 127.0.0.1: dockerd treats a
mirror on 127.0.0.0/8 (or listed in insecure-registries) as insecure, and
for an insecure mirror it neither verifies the certificate nor reads
certs.d, so it would never present a client certificate.  ::1 is the same
loopback, but dockerd only counts 127.0.0.0/8 as insecure by default.

Nothing leaves the machine: dockerd's fallback to Docker Hub goes through
HTTPS_PROXY, a closed loopback port (lib/util.PROXY_ENV), and each test
asserts that this fallback was tried and failed there.  dockerd runs with
a private /etc/docker (lib/clients.Dockerd).  The upstream is a real
docker-registry behind lib/recording_proxy (a test double that relays
bytes unchanged and keeps what the gateway sent), the audit stream a real
redis-server."""

import base64
import glob
import json
import os
import re
import shlex
import socket
import urllib.parse
import uuid

import pytest
import requests

from lib.gateway import gateway_config, upstream
from lib.images import HOST_ARCH
from lib.pki import PKI
from lib.recording_proxy import RecordingProxy
from lib.redis import RedisServer, entries_to_dicts
from lib.util import free_port, wait_for

STREAM = "portcullis:audit"
# How an audit record writes an anonymous caller.
ANON = ("none", "anonymous")
ACCEPT_DOCKER = "application/vnd.docker.distribution.manifest.v2+json"
NODE_ORG = "Portcullis Test"
NODE_DN = "CN=node1,O=" + NODE_ORG
RULE = "nodes-pull-hub"
NET_RULE = "loopback-nodes-pull-hub"
# Where dockerd's fallback to Docker Hub must end (lib/util.PROXY_ENV).
DEAD_PROXY = "127.0.0.1:9"


def free_port6():
    """A TCP port on ::1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
        s.bind(("::1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    p = PKI(tmp_path_factory.mktemp("mirror-pki"))
    p.server = p.issue("gateway", "/CN=::1", san="IP:::1,IP:127.0.0.1")
    p.node1 = p.issue("node1", "/O=%s/CN=node1" % NODE_ORG, client=True)
    p.node2 = p.issue("node2", "/O=%s/CN=node2" % NODE_ORG, client=True)
    assert p.rfc2253(p.node1[0]) == NODE_DN
    return p


@pytest.fixture(scope="module")
def hub(start_registry_module, image_factory, skopeo):
    """A docker-registry standing in for Docker Hub, holding library/
    images in Docker media types (what dockerd 20.10 pulls)."""
    reg = start_registry_module("hub")
    reg.images = {}
    for name in ("mirror-demo", "mirror-creds", "mirror-net"):
        img = image_factory(name, platforms=[("linux", HOST_ARCH)],
                            seed=name, media="docker")
        skopeo("copy", "--dest-tls-verify=false", img.ref,
               "docker://%s/library/%s:latest" % (reg.host, name))
        reg.images[name] = img
    return reg


@pytest.fixture
def tap(hub):
    t = RecordingProxy(hub.host)
    try:
        yield t
    finally:
        t.stop()


@pytest.fixture
def redis(tmp_path_factory):
    s = RedisServer(tmp_path_factory.mktemp("mirror-redis-"))
    try:
        yield s
    finally:
        s.stop()


def policy(*rules):
    return {"rules": list(rules)}


def pull_rule(rule_id, subject):
    return {"id": rule_id, "effect": "allow", "actions": ["pull"],
            "repositories": ["library/**"], "subjects": [subject]}


def mirror_gateway(start_gateway, pki, hub, tap, redis, tmp_path, rules,
                   verify_client="optional", host="::1"):
    """The gateway as the README's recipe sets it up: a TLS listener that
    asks for (and verifies) client certificates, Docker Hub as the
    default upstream, a policy, audit records in Redis, debug logs (the
    most a log could say)."""
    if host == "::1":
        address = "[::1]:%d" % free_port6()
    else:
        address = "%s:%d" % (host, free_port())
    cert, key = pki.server
    cfg = gateway_config(
        # hosts: containerd's ?ns=docker.io reaches this upstream too.
        upstream(hub, prefix="hub", default=True, docker_hub=True,
                 url=tap.url, hosts=["docker.io", hub.host]),
        listen={"address": address,
                "tls": {"cert_file": cert, "key_file": key,
                        "client_ca_file": pki.ca,
                        "verify_client": verify_client}},
        policy=policy(*rules),
        audit={"redis": redis.host, "spool_file": str(tmp_path / "spool"),
               "timeout": 2},
        log={"level": "debug"})
    tls_client = {"ca": pki.ca}
    if verify_client == "require":
        # The harness's own /healthz probes need one then.
        tls_client.update(cert=pki.node2[0], key=pki.node2[1])
    return start_gateway(cfg, tls_client=tls_client)


def mirror_dockerd(start_dockerd, gw, pki, cert=None):
    """dockerd whose only mirror is the gateway; its certs.d trusts the
    test CA and holds `cert` ((cert, key)) as client.cert/client.key."""
    dk = start_dockerd({"registry-mirrors": [gw.url]})
    install_certs(dk, gw, pki, cert)
    return dk


def install_certs(dk, gw, pki, cert):
    d = dk.certs_dir(gw.host)
    for n in ("ca.crt", "client.cert", "client.key"):
        if os.path.exists(os.path.join(d, n)):
            os.unlink(os.path.join(d, n))
    with open(pki.ca) as f, open(os.path.join(d, "ca.crt"), "w") as o:
        o.write(f.read())
    if cert:
        for src, n in zip(cert, ("client.cert", "client.key")):
            with open(src) as f, open(os.path.join(d, n), "w") as o:
                o.write(f.read())


def records(redis_srv):
    with redis_srv.client() as c:
        return [d for _, d in entries_to_dicts(
            c.call("XRANGE", STREAM, "-", "+"))]


def wait_records(redis_srv, pred, what):
    return wait_for(lambda: [d for d in records(redis_srv) if pred(d)],
                    timeout=30, what=what)


def upstream_requests(tap, repo):
    return [l for l in tap.request_lines() if "/v2/%s/" % repo in l]


def assert_fell_back_locally(dk, out):
    """dockerd fell back from the mirror to Docker Hub, as docker does, and
    that attempt ended at the closed loopback proxy port."""
    log = dk.log_text()
    assert "registry-1.docker.io" in log, log[-3000:]
    assert DEAD_PROXY in out or DEAD_PROXY in log, (out, log[-3000:])
    assert "connection refused" in (out + log), (out, log[-3000:])


def assert_left_the_mirror(dk, gw):
    """dockerd gave the mirror up after an error from it: its last try of
    the mirror is followed by "Attempting next endpoint" before it tries
    anything else.  Returns that line."""
    log = dk.log_text()
    lines = [l for l in log.splitlines()
             if "Trying to pull" in l or "Attempting next endpoint" in l]
    tries = [i for i, l in enumerate(lines)
             if "from https://%s/" % gw.host in l]
    assert tries, log[-3000:]
    after = lines[tries[-1] + 1:tries[-1] + 2]
    assert after and "Attempting next endpoint" in after[0], log[-3000:]
    return after[0]


def pull(dk, name):
    return dk.docker("pull", "%s:latest" % name, check=False, timeout=180)


# ---------------------------------------------------------------------------
# Acceptance 3: a node with its certificate pulls; the same node without it
# is refused and falls back as docker does.

def test_node_certificate_admits_the_pull_and_its_absence_refuses(
        pki, hub, tap, redis, start_gateway, start_dockerd, tmp_path):
    gw = mirror_gateway(start_gateway, pki, hub, tap, redis, tmp_path,
                        [pull_rule(RULE, "mtls:" + NODE_DN)])
    dk = mirror_dockerd(start_dockerd, gw, pki, cert=pki.node1)
    img = hub.images["mirror-demo"]

    cp = pull(dk, "mirror-demo")
    assert cp.returncode == 0, cp.stderr + dk.log_text()[-3000:]
    image_id = dk.docker("image", "inspect", "--format", "{{.Id}}",
                         "mirror-demo:latest").stdout.strip()
    assert image_id == img.images[0]["config_digest"]
    # Through the mirror, not around it: the upstream served the manifest
    # and every layer, and dockerd never tried Docker Hub.
    got = upstream_requests(tap, "library/mirror-demo")
    assert any("/manifests/" in l for l in got), got
    for l in img.images[0]["layers"]:
        assert any(l["digest"] in r for r in got), (l, got)
    assert "https://registry-1.docker.io" not in dk.log_text()
    recs = wait_records(redis, lambda d: d["repository"] ==
                        "library/mirror-demo" and "/manifests/" in d["path"],
                        "the manifest's audit record")
    for d in recs:
        assert (d["auth_method"], d["subject"]) == ("mtls", NODE_DN), d
        assert (d["decision"], d["rule"], d["status"]) == \
            ("allow", RULE, "200"), d

    # The same dockerd, its certificate taken away (it reads certs.d at
    # every pull): refused by the policy, not by TLS.  GET /v2/ already
    # says 401 (this caller may pull nothing); with no Docker Hub login to
    # answer the challenge, dockerd gives up on the mirror there and
    # falls back.
    install_certs(dk, gw, pki, None)
    dk.docker("rmi", "mirror-demo:latest")
    n = len(tap.request_lines())
    cp = pull(dk, "mirror-demo")
    assert cp.returncode != 0
    assert_left_the_mirror(dk, gw)
    assert_fell_back_locally(dk, cp.stdout + cp.stderr)
    # Nothing reached the upstream for it.
    assert upstream_requests(tap, "library/mirror-demo") == got
    assert tap.request_lines()[n:] == []
    refused = wait_records(redis, lambda d: d["decision"] == "deny",
                           "the refusal's audit record")
    for d in refused:
        assert (d["path"], d["status"]) == ("/v2/", "401"), d
        assert (d["auth_method"], d["subject"]) == ANON, d
        assert d["rule"] == "", d      # default deny: no rule matched

    # Another node's certificate, which no rule names: identified, so
    # 403 on the manifest (credentials would not help), and the fallback.
    install_certs(dk, gw, pki, pki.node2)
    node2 = pki.rfc2253(pki.node2[0])
    cp = pull(dk, "mirror-demo")
    assert cp.returncode != 0
    assert_left_the_mirror(dk, gw)
    assert_fell_back_locally(dk, cp.stdout + cp.stderr)
    assert tap.request_lines()[n:] == []
    denied = wait_records(redis, lambda d: d["subject"] == node2 and
                          "/manifests/" in d["path"],
                          "node2's manifest audit record")
    for d in denied:
        assert (d["auth_method"], d["status"]) == ("mtls", "403"), d
        assert d["decision"] == "deny", d
    assert gw.alive()


def test_node_admitted_by_network_without_certificate(
        pki, hub, tap, redis, start_gateway, start_dockerd, tmp_path):
    """A `cidr:` rule admits the nodes of a network that have no
    certificate; a certificate that no rule names changes nothing."""
    gw = mirror_gateway(start_gateway, pki, hub, tap, redis, tmp_path,
                        [pull_rule(NET_RULE, "cidr:::1/128")])
    dk = mirror_dockerd(start_dockerd, gw, pki, cert=None)
    cp = pull(dk, "mirror-net")
    assert cp.returncode == 0, cp.stderr + dk.log_text()[-3000:]
    assert "https://registry-1.docker.io" not in dk.log_text()
    recs = wait_records(redis, lambda d: d["repository"] ==
                        "library/mirror-net" and "/manifests/" in d["path"],
                        "the manifest's audit record")
    for d in recs:
        assert (d["auth_method"], d["subject"]) == ANON, d
        assert d["client_ip"] == "::1", d
        assert (d["decision"], d["rule"]) == ("allow", NET_RULE), d
    install_certs(dk, gw, pki, pki.node2)
    dk.docker("rmi", "mirror-net:latest")
    cp = pull(dk, "mirror-net")
    assert cp.returncode == 0, cp.stderr + dk.log_text()[-3000:]
    node2 = pki.rfc2253(pki.node2[0])
    recs = wait_records(redis, lambda d: d["subject"] == node2 and
                        "/manifests/" in d["path"],
                        "node2's manifest audit record")
    for d in recs:
        assert (d["auth_method"], d["client_ip"]) == ("mtls", "::1"), d
        assert (d["decision"], d["rule"]) == ("allow", NET_RULE), d

    # A certificate from another CA: dockerd (Go) presents a certificate
    # only when its issuer is among the CAs the gateway names, so the node
    # is anonymous, and admitted by its network.  A client that presents
    # it anyway fails the handshake: an unverified certificate never
    # passes, not even as anonymous.
    stranger = PKI(tmp_path / "stranger-pki", name="stranger CA")
    alien = stranger.issue("node1", "/O=%s/CN=node1" % NODE_ORG,
                           client=True)
    install_certs(dk, gw, pki, alien)
    dk.docker("rmi", "mirror-net:latest")
    n = len(records(redis))
    cp = pull(dk, "mirror-net")
    assert cp.returncode == 0, cp.stderr + dk.log_text()[-3000:]
    recs = wait_for(lambda: [d for d in records(redis)[n:]
                             if "/manifests/" in d["path"]],
                    what="the third pull's manifest record")
    for d in recs:
        assert (d["auth_method"], d["subject"]) == ANON, d
        assert (d["decision"], d["rule"]) == ("allow", NET_RULE), d
    s = requests.Session()
    s.trust_env = False
    s.verify, s.cert = pki.ca, alien
    with pytest.raises(requests.exceptions.SSLError):
        s.get(gw.url + "/v2/", timeout=30)


def test_require_refuses_at_the_handshake_without_a_record(
        pki, hub, tap, redis, start_gateway, start_dockerd, tmp_path):
    """verify_client "require" (what the README's recipe does not pick):
    a node without a certificate is refused by TLS before it names a
    repository, so no rule can admit it by network and there is no audit
    record of what it wanted; dockerd falls back all the same."""
    gw = mirror_gateway(start_gateway, pki, hub, tap, redis, tmp_path,
                        [pull_rule(NET_RULE, "cidr:::1/128")],
                        verify_client="require")
    dk = mirror_dockerd(start_dockerd, gw, pki, cert=None)
    cp = pull(dk, "mirror-net")
    assert cp.returncode != 0
    assert_fell_back_locally(dk, cp.stdout + cp.stderr)
    assert "tls_error" in gw.log_text()
    assert tap.request_lines() == []
    # One request that does get through, so that the records written by
    # then are all there are: none from the refused node.
    s = requests.Session()
    s.trust_env = False
    s.verify, s.cert = pki.ca, pki.node2
    r = s.get(gw.url + "/v2/", timeout=30)
    rid = r.headers["X-Request-Id"]
    wait_records(redis, lambda d: d["request_id"] == rid,
                 "the probe's audit record")
    assert [d["request_id"] for d in records(redis)
            if d["path"].startswith("/v2/")] == [rid]


# ---------------------------------------------------------------------------
# Docker Hub credentials: dockerd sends them to the mirror; they go nowhere.

def marker_forms(user, password):
    """Every form in which a credential could be copied somewhere."""
    basic = base64.b64encode(("%s:%s" % (user, password)).encode()).decode()
    forms = {password, user, basic, basic.rstrip("="),
             base64.b64encode(password.encode()).decode().rstrip("="),
             base64.urlsafe_b64encode(("%s:%s" % (user, password))
                                      .encode()).decode().rstrip("="),
             urllib.parse.quote(password, safe="")}
    return {f for f in forms if f}


def redis_bytes(redis_srv):
    """Everything Redis was ever told: its append-only files."""
    out = b""
    for p in glob.glob(os.path.join(redis_srv.dir, "**", "*.aof*"),
                       recursive=True):
        with open(p, "rb") as f:
            out += f.read()
    return out


@pytest.mark.parametrize("with_cert", [True, False],
                         ids=["with-certificate", "without-certificate"])
def test_docker_hub_credentials_reach_no_upstream_log_or_record(
        with_cert, pki, hub, tap, redis, start_gateway, start_dockerd,
        tmp_path):
    gw = mirror_gateway(start_gateway, pki, hub, tap, redis, tmp_path,
                        [pull_rule(RULE, "mtls:" + NODE_DN)])
    dk = mirror_dockerd(start_dockerd, gw, pki,
                        cert=pki.node1 if with_cert else None)
    # What `docker login` would have written (no real login is possible
    # here): the CLI sends it to dockerd as X-Registry-Auth, and dockerd
    # answers the mirror's challenge with it.
    tag = uuid.uuid4().hex
    user, password = "hubuser" + tag[:12], "hubpass-" + tag
    auth = base64.b64encode(("%s:%s" % (user, password)).encode()).decode()
    with open(os.path.join(dk.docker_config, "config.json"), "w") as f:
        json.dump({"auths": {"https://index.docker.io/v1/":
                             {"auth": auth}}}, f)

    cp = pull(dk, "mirror-creds")
    recs = wait_records(redis, lambda d: d["repository"] ==
                        "library/mirror-creds", "the pull's audit records")
    log = gw.log_text()
    if with_cert:
        # GET /v2/ said 200 to the node: nothing asked for credentials,
        # and dockerd sent none.
        assert cp.returncode == 0, cp.stderr + dk.log_text()[-3000:]
        assert any("/manifests/" in l for l in
                   upstream_requests(tap, "library/mirror-creds"))
        assert "credentials ignored" not in log
        for d in recs:
            assert (d["auth_method"], d["subject"]) == ("mtls", NODE_DN), d
            assert d["decision"] == "allow", d
        # A client that sends them anyway on requests the policy lets
        # through (what dockerd does behind a challenging /v2/): they are
        # ignored and the requests go upstream without them.
        s = requests.Session()
        s.trust_env = False
        s.verify, s.cert = pki.ca, pki.node1
        img = hub.images["mirror-creds"].images[0]
        n = len(tap.request_lines())
        for path, authz in (
                ("manifests/latest", "Basic " + auth),
                ("blobs/" + img["layers"][0]["digest"], "Bearer " + password)):
            r = s.get("%s/v2/library/mirror-creds/%s" % (gw.url, path),
                      headers={"Authorization": authz,
                               "Accept": ACCEPT_DOCKER}, timeout=30)
            assert r.status_code == 200, r.text
        assert len(upstream_requests(tap, "library/mirror-creds")) >= 2
        assert len(tap.request_lines()) >= n + 2
        log = wait_for(lambda: (lambda t: t if t.count(
            "identity credentials ignored") >= 2 else None)(gw.log_text()),
            what="two 'credentials ignored' log lines")
        assert "scheme=basic" in log and "scheme=bearer" in log
    else:
        # GET /v2/ said 401 with a challenge, and dockerd answered it
        # with the Docker Hub login: the gateway saw credentials (and
        # says so without them), counted them for nothing, and refused
        # the anonymous caller on the manifest.
        assert cp.returncode != 0
        assert_left_the_mirror(dk, gw)
        assert_fell_back_locally(dk, cp.stdout + cp.stderr)
        assert "identity credentials ignored scheme=basic" in log, \
            log[-3000:]
        assert upstream_requests(tap, "library/mirror-creds") == []
        assert any("/manifests/" in d["path"] for d in recs), recs
        for d in recs:
            assert (d["auth_method"], d["subject"]) == ANON, d
            assert (d["decision"], d["status"]) == ("deny", "401"), d
    # ... and went nowhere.
    forms = marker_forms(user, password)
    wire = tap.sent()
    # The gateway has no credentials for this upstream: any Authorization
    # field on the wire to it would be the client's.
    assert b"authorization:" not in wire.lower()
    stored = redis_bytes(redis)
    assert stored, "no append-only file found under %s" % redis.dir
    all_records = json.dumps(records(redis))
    for f in forms:
        assert f not in log, "credential form %r in the gateway log" % f
        assert f.encode() not in wire, "credential form %r upstream" % f
        assert f not in all_records, "credential form %r audited" % f
        assert f.encode() not in stored, "credential form %r in Redis" % f


# ---------------------------------------------------------------------------
# containerd: the same recipe with a hosts.toml.

def ctr_hosts(base, gw, pki, cert):
    """A certs.d tree whose docker.io/hosts.toml sends pulls to the gateway
    over TLS, trusting the test CA, presenting `cert` when given; Docker
    Hub itself stays the fallback (reached through the dead proxy)."""
    d = os.path.join(base, "certs.d")
    os.makedirs(os.path.join(d, "docker.io"), exist_ok=True)
    client = ""
    if cert:
        client = '  client = [["%s", "%s"]]\n' % cert
    with open(os.path.join(d, "docker.io", "hosts.toml"), "w") as f:
        f.write('server = "https://registry-1.docker.io"\n\n'
                '[host."%s"]\n'
                '  capabilities = ["pull", "resolve"]\n'
                '  ca = "%s"\n%s' % (gw.url, pki.ca, client))
    return d


def test_containerd_node_certificate_admits_the_pull(
        pki, hub, tap, redis, start_gateway, start_containerd, tmp_path):
    """containerd has no loopback exception (its hosts.toml says what to
    trust and present), and its TOML parser (go-toml v1) refuses a host key
    with brackets: the gateway listens on 127.0.0.1 here."""
    gw = mirror_gateway(start_gateway, pki, hub, tap, redis, tmp_path,
                        [pull_rule(RULE, "mtls:" + NODE_DN)],
                        host="127.0.0.1")
    img = hub.images["mirror-demo"]
    ref = "docker.io/library/mirror-demo:latest"

    ctd = start_containerd()
    cp = ctd.ctr("images", "pull", "--hosts-dir",
                 ctr_hosts(ctd.dir, gw, pki, pki.node1), ref, check=False)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert img.digest in ctd.ctr("images", "ls").stdout
    recs = wait_records(redis, lambda d: d["repository"] ==
                        "library/mirror-demo" and "/manifests/" in d["path"],
                        "the manifest's audit record")
    for d in recs:
        assert (d["auth_method"], d["subject"]) == ("mtls", NODE_DN), d
        assert (d["decision"], d["rule"]) == ("allow", RULE), d

    # Another containerd without a client certificate is refused and
    # falls back to Docker Hub, which it cannot reach here.
    n = len(tap.request_lines())
    ctd2 = start_containerd()
    cp = ctd2.ctr("images", "pull", "--hosts-dir",
                  ctr_hosts(ctd2.dir, gw, pki, None), ref, check=False)
    assert cp.returncode != 0
    out = cp.stdout + cp.stderr
    assert "registry-1.docker.io" in out and DEAD_PROXY in out, out
    assert not [l for l in tap.request_lines()[n:] if "/v2/library/" in l]
    wait_records(redis, lambda d: d["repository"] == "library/mirror-demo"
                 and d["decision"] == "deny" and d["status"] == "401",
                 "the refusal's audit record")


# ---------------------------------------------------------------------------
# The README's recipe is a configuration the gateway takes.

def test_readme_recipe_config_is_valid(pki, tmp_path):
    from lib.gateway import REPO_ROOT, gateway_bin
    from lib.util import run
    with open(os.path.join(REPO_ROOT, "README.md")) as f:
        readme = f.read()
    sec = readme[readme.index("### Authenticated mirror for docker"):]
    sec = sec[:sec.index("\n## ")]
    blocks = re.findall(r"```json\n(.*?)```", sec, re.S)
    cfg = json.loads(blocks[0])
    assert json.loads(blocks[1])["registry-mirrors"]
    # Its files, made here; everything else as written.
    t = cfg["listen"]["tls"]
    t["cert_file"], t["key_file"] = pki.server
    t["client_ca_file"] = pki.ca
    cred = tmp_path / "hub.credentials"
    cred.write_text("user:secret\n")
    cfg["upstreams"][0]["credentials_file"] = str(cred)
    path = tmp_path / "mirror.json"
    path.write_text(json.dumps(cfg))
    cp = run([gateway_bin(), "check-config", "-c", path], check=False)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    # Its explain lines, run against it; and a node neither admits.
    cmds = [shlex.split(l.strip()) for l in sec.splitlines()
            if l.strip().startswith("portcullis policy explain")]
    assert len(cmds) == 2, cmds
    for argv in cmds:
        argv[0], argv[argv.index("-c") + 1] = gateway_bin(), str(path)
        cp = run(argv, check=False)
        assert cp.returncode == 0, cp.stdout + cp.stderr
        assert "allow" in cp.stdout
    cp = run([gateway_bin(), "policy", "explain", "-c", path, "--ip",
              "192.0.2.10", "--repo", "library/alpine", "--action", "pull"],
             check=False)
    assert cp.returncode == 1, cp.stdout + cp.stderr
    subjects = [s for r in cfg["policy"]["rules"] for s in r["subjects"]]
    assert "mtls:CN=node1,O=Corp" in subjects
    assert any(s.startswith("cidr:") for s in subjects)
    # The DN form the README promises for -subj "/O=Corp/CN=node1".
    crt, _ = pki.issue("readme-node1", "/O=Corp/CN=node1", client=True)
    assert pki.rfc2253(crt) == "CN=node1,O=Corp"
