"""The OCI 1.1 referrers API (issue 13) in front of Debian's
docker-registry 2.8, which lacks it: the gateway answers from the
referrers tag schema (the tag <alg>-<hex> holding an image index), keeps
that index when a manifest with a `subject` is pushed through it (and
says OCI-Subject), applies the artifactType filter, caches answers
briefly and drops them on a push, and asks for pull.

Artifact manifests are written by hand (oras and cosign are not in
Debian) and pushed with raw HTTP.  Real docker-registry; the race of two
writers of the referrers tag is made to happen with lib/holding_proxy.py,
a test double of the network between the gateway and the registry."""

import hashlib
import json
import threading
import urllib.parse

import pytest

from lib.cache import cache_cfg, session
from lib.gateway import gateway_config, upstream

MT = "application/vnd.oci.image.manifest.v1+json"
IDX = "application/vnd.oci.image.index.v1+json"
EMPTY_MT = "application/vnd.oci.empty.v1+json"
SBOM = "application/vnd.example.sbom.v1"
SIG = "application/vnd.example.signature.v1"


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def ref_tag(digest):
    return digest.replace(":", "-")


def push_blob(base, repo, data, s):
    d = sha256(data)
    r = s.post("%s/v2/%s/blobs/uploads/" % (base, repo), timeout=30)
    assert r.status_code == 202, r.text
    loc = urllib.parse.urljoin(base + "/", r.headers["Location"])
    r = s.put(loc + ("&" if "?" in loc else "?") + "digest=" + d, data=data,
              headers={"Content-Type": "application/octet-stream"},
              timeout=60)
    assert r.status_code == 201, r.text
    return d


def push_image(base, repo, tag):
    """A tiny OCI image pushed to `base` (gateway or registry)."""
    with session() as s:
        cfg = b'{"architecture":"amd64","os":"linux"}'
        cd = push_blob(base, repo, cfg, s)
        m = json.dumps({"schemaVersion": 2, "mediaType": MT,
                        "config": {"mediaType":
                                   "application/vnd.oci.image.config.v1+json",
                                   "digest": cd, "size": len(cfg)},
                        "layers": []}).encode()
        r = s.put("%s/v2/%s/manifests/%s" % (base, repo, tag), data=m,
                  headers={"Content-Type": MT}, timeout=30)
        assert r.status_code == 201, r.text
        return sha256(m), len(m)


def artifact(subject, size, artifact_type, note, config_type=None):
    """An artifact manifest (OCI 1.1 image manifest with artifactType, or
    the older form naming the type in config.mediaType) referring to
    `subject`; returns (bytes, digest)."""
    m = {"schemaVersion": 2, "mediaType": MT,
         "config": {"mediaType": config_type or EMPTY_MT,
                    "digest": sha256(b"{}"), "size": 2},
         "layers": [{"mediaType": EMPTY_MT, "digest": sha256(b"{}"),
                     "size": 2}],
         "subject": {"mediaType": MT, "digest": subject, "size": size},
         "annotations": {"org.example.note": note}}
    if config_type is None:
        m["artifactType"] = artifact_type
    b = json.dumps(m).encode()
    return b, sha256(b)


def push_artifact(base, repo, body, by_digest=True, blob=True):
    with session() as s:
        if blob:
            push_blob(base, repo, b"{}", s)
        ref = sha256(body) if by_digest else "art-" + sha256(body)[7:19]
        return s.put("%s/v2/%s/manifests/%s" % (base, repo, ref), data=body,
                     headers={"Content-Type": MT}, timeout=30)


def referrers(base, repo, subject, artifact_type=None):
    q = "" if artifact_type is None else "?artifactType=" + \
        urllib.parse.quote(artifact_type, safe="")
    with session() as s:
        return s.get("%s/v2/%s/referrers/%s%s" % (base, repo, subject, q),
                     timeout=30)


def digests(r):
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == IDX
    doc = r.json()
    assert doc["schemaVersion"] == 2 and doc["mediaType"] == IDX
    return sorted(m["digest"] for m in doc["manifests"])


@pytest.fixture
def reg(start_registry):
    return start_registry("up1")


@pytest.fixture
def gw(reg, start_gateway):
    return start_gateway(gateway_config(upstream(reg, default=True)))


def test_referrers_fallback_end_to_end(reg, gw):
    subj, size = push_image(gw.url, "ref/app", "v1")
    # The witness: registry 2.8 has no referrers endpoint at all.
    r = referrers(reg.url, "ref/app", subj)
    assert r.status_code == 404 and "page not found" in r.text, r.text
    # Nothing refers to it yet: 200 with an empty index, no filter header.
    r = referrers(gw.url, "ref/app", subj)
    assert digests(r) == []
    assert "OCI-Filters-Applied" not in r.headers

    sbom, sbom_d = artifact(subj, size, SBOM, "sbom")
    r = push_artifact(gw.url, "ref/app", sbom)
    assert r.status_code == 201, r.text
    assert r.headers["OCI-Subject"] == subj
    assert r.headers["Docker-Content-Digest"] == sbom_d
    # The older form: the type is the config's mediaType; pushed by tag.
    sig, sig_d = artifact(subj, size, None, "sig", config_type=SIG)
    r = push_artifact(gw.url, "ref/app", sig, by_digest=False)
    assert r.status_code == 201, r.text
    assert r.headers["OCI-Subject"] == subj

    r = referrers(gw.url, "ref/app", subj)
    assert digests(r) == sorted([sbom_d, sig_d])
    by = {m["digest"]: m for m in r.json()["manifests"]}
    assert by[sbom_d] == {"mediaType": MT, "digest": sbom_d,
                          "size": len(sbom), "artifactType": SBOM,
                          "annotations": {"org.example.note": "sbom"}}
    assert by[sig_d]["artifactType"] == SIG
    assert by[sig_d]["size"] == len(sig)

    # Filtered, with the header that says so.
    r = referrers(gw.url, "ref/app", subj, SBOM)
    assert digests(r) == [sbom_d]
    assert r.headers["OCI-Filters-Applied"] == "artifactType"
    r = referrers(gw.url, "ref/app", subj, "application/x-none")
    assert digests(r) == []
    assert r.headers["OCI-Filters-Applied"] == "artifactType"

    # The index lives in the registry under the referrers tag schema.
    r = reg.http.get("%s/v2/ref/app/manifests/%s" % (reg.url, ref_tag(subj)),
                     headers={"Accept": IDX}, timeout=30)
    assert r.status_code == 200, r.text
    assert sorted(m["digest"] for m in r.json()["manifests"]) == \
        sorted([sbom_d, sig_d])

    # HEAD: the head of the GET, no body.
    with session() as s:
        r = s.head("%s/v2/ref/app/referrers/%s" % (gw.url, subj),
                   timeout=30)
    assert r.status_code == 200 and r.headers["Content-Type"] == IDX
    assert int(r.headers["Content-Length"]) > 0 and r.content == b""

    # An unknown subject, in a known and an unknown repository.
    unknown = "sha256:" + "ab" * 32
    assert digests(referrers(gw.url, "ref/app", unknown)) == []
    assert digests(referrers(gw.url, "ref/none", unknown)) == []
    # A malformed digest is the router's 400, as for blobs.
    r = referrers(gw.url, "ref/app", "sha256:xyz")
    assert r.status_code == 400, r.text


def test_absent_api_is_remembered(reg, start_gateway):
    gw = start_gateway(gateway_config(
        upstream(reg, default=True),
        limits={"referrers_fallback": 3600}))
    subj, _ = push_image(reg.url, "mem/app", "v1")
    mark = reg.mark()
    for _ in range(3):
        assert digests(referrers(gw.url, "mem/app", subj)) == []
    paths = [e["path"] for e in reg.access_log(since=mark)]
    # The API once; from then on only the tag.
    assert sum("/referrers/" in p for p in paths) == 1, paths
    assert paths.count("/v2/mem/app/manifests/" + ref_tag(subj)) == 3, paths
    assert "api=absent" in gw.log_text()


def test_absent_api_asked_again_with_zero_fallback(reg, start_gateway):
    gw = start_gateway(gateway_config(
        upstream(reg, default=True), limits={"referrers_fallback": 0}))
    subj, _ = push_image(reg.url, "mem0/app", "v1")
    mark = reg.mark()
    for _ in range(2):
        assert digests(referrers(gw.url, "mem0/app", subj)) == []
    paths = [e["path"] for e in reg.access_log(since=mark)]
    assert sum("/referrers/" in p for p in paths) == 2, paths


def test_concurrent_pushes_to_one_subject_are_all_listed(reg, gw):
    subj, size = push_image(gw.url, "conc/app", "v1")
    # The empty blob once, before: with six uploads of it racing the
    # manifest PUTs, registry 2.8 now and then refused a manifest with
    # 400 DIGEST_INVALID / BLOB_UNKNOWN for that blob (its filesystem
    # driver rewrites a blob's repository link in place), which is no
    # part of what this test is about.
    with session() as s:
        push_blob(gw.url, "conc/app", b"{}", s)
    arts = [artifact(subj, size, SBOM, "n%d" % i) for i in range(6)]
    results = [None] * len(arts)
    go = threading.Barrier(len(arts))

    def push(i):
        go.wait(timeout=30)
        results[i] = push_artifact(gw.url, "conc/app", arts[i][0],
                                   blob=False)

    ts = [threading.Thread(target=push, args=(i,)) for i in range(len(arts))]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=120)
    for r in results:
        assert r is not None and r.status_code == 201, (r, r.text)
        assert r.headers["OCI-Subject"] == subj
    assert digests(referrers(gw.url, "conc/app", subj)) == \
        sorted(d for _, d in arts)


@pytest.fixture
def held(reg, start_gateway):
    """A gateway whose upstream connections pass through HoldingProxy (a
    TEST DOUBLE of the network, lib/holding_proxy.py), so that a test can
    land another writer's index between the gateway's write of the
    referrers tag and its re-read: the race two writers without a
    conditional PUT have, made to happen every time."""
    from lib.holding_proxy import HoldingProxy
    hp = HoldingProxy(reg.host)
    try:
        def start(**limits):
            return start_gateway(gateway_config(
                upstream(reg, default=True, url="http://" + hp.host),
                limits=limits))
        yield hp, start
    finally:
        hp.stop()


def overwrite_between_write_and_reread(reg, hp, gw, attempts_note):
    """Push an artifact through `gw`; once the registry has taken its
    index write (its answer held back), another writer replaces the
    index with one of its own.  Returns (response, digest pushed,
    digest of the other writer's artifact)."""
    from lib.util import wait_for
    subj, size = push_image(reg.url, "race/app", "v1")
    other, other_d = artifact(subj, size, SIG, "other writer")
    assert push_artifact(reg.url, "race/app", other).status_code == 201
    mine, mine_d = artifact(subj, size, SBOM, attempts_note)
    marker = b"PUT /v2/race/app/manifests/" + ref_tag(subj).encode()
    hp.hold(marker)
    out = {}
    t = threading.Thread(target=lambda: out.update(
        r=push_artifact(gw.url, "race/app", mine)))
    t.start()
    try:
        wait_for(lambda: hp.held(marker) > 0, timeout=30,
                 what="the gateway's index write answered")
        r = reg.http.get("%s/v2/race/app/manifests/%s" % (
            reg.url, ref_tag(subj)), headers={"Accept": IDX}, timeout=30)
        assert [m["digest"] for m in r.json()["manifests"]] == [mine_d]
        idx = {"schemaVersion": 2, "mediaType": IDX, "manifests": [
            {"mediaType": MT, "digest": other_d, "size": len(other),
             "artifactType": SIG}]}
        r = reg.http.put("%s/v2/race/app/manifests/%s" % (
            reg.url, ref_tag(subj)), data=json.dumps(idx),
            headers={"Content-Type": IDX}, timeout=30)
        assert r.status_code == 201, r.text
    finally:
        hp.release()
        t.join(timeout=60)
    return subj, out["r"], mine_d, other_d


def test_index_overwritten_after_the_write_is_written_again(reg, held):
    hp, start = held
    gw = start()
    subj, r, mine, other = overwrite_between_write_and_reread(
        reg, hp, gw, "retried")
    assert r.status_code == 201, r.text
    assert r.headers["OCI-Subject"] == subj
    # The re-read found the other writer's index and added to it.
    assert "referrers index_moved" in gw.log_text()
    assert digests(referrers(gw.url, "race/app", subj)) == \
        sorted([mine, other])


def test_index_still_moving_after_the_last_round_says_no_subject(reg, held):
    hp, start = held
    gw = start(referrers_attempts=1)
    subj, r, mine, other = overwrite_between_write_and_reread(
        reg, hp, gw, "given up")
    # The manifest is pushed; the index does not hold it, and the
    # answer says so by leaving OCI-Subject out (the client's cue to
    # keep the tag itself).
    assert r.status_code == 201, r.text
    assert "OCI-Subject" not in r.headers
    assert "referrers index_not_updated" in gw.log_text()
    assert digests(referrers(gw.url, "race/app", subj)) == [other]
    with session() as s:
        assert s.get("%s/v2/race/app/manifests/%s" % (gw.url, mine),
                     headers={"Accept": MT}, timeout=30).status_code == 200


def detach_a_push(reg, hp, gw, repo):
    """Push an artifact with a raw socket and reset the connection once
    the registry has taken the gateway's index write (its answer held
    back), so the push goes on without its client.  Returns (subject,
    digest pushed); the caller releases hp."""
    import socket
    import struct
    from lib.util import wait_for
    subj, size = push_image(reg.url, repo, "v1")
    with session() as s:
        push_blob(gw.url, repo, b"{}", s)
    body, d = artifact(subj, size, SBOM, "left early")
    marker = ("PUT /v2/%s/manifests/%s" % (repo, ref_tag(subj))).encode()
    hp.hold(marker)
    c = socket.create_connection(("127.0.0.1", gw.port), timeout=30)
    c.sendall(b"PUT /v2/%s/manifests/%s HTTP/1.1\r\n"
              b"Host: %s\r\nContent-Type: %s\r\n"
              b"Content-Length: %d\r\n\r\n" % (
                  repo.encode(), d.encode(), gw.host.encode(), MT.encode(),
                  len(body)) + body)
    wait_for(lambda: hp.held(marker) > 0, timeout=30,
             what="the gateway's index write answered")
    # A reset, not a FIN: a half-closed client is still answered.
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                 struct.pack("ii", 1, 0))
    c.close()
    wait_for(lambda: "referrers detached" in gw.log_text(), timeout=30,
             what="the push detached from its client")
    return subj, d


def test_client_gone_during_the_index_update(reg, held):
    """A client that leaves once the manifest is accepted does not leave
    its referrer out: the gateway finishes the index update alone."""
    from lib.util import wait_for
    hp, start = held
    gw = start()
    try:
        subj, d = detach_a_push(reg, hp, gw, "gone/app")
    finally:
        hp.release()
    wait_for(lambda: "referrers detached_done" in gw.log_text(),
             timeout=30, what="the detached update's end")
    assert "indexed=1" in gw.log_text()
    assert digests(referrers(gw.url, "gone/app", subj)) == [d]


def test_shutdown_ends_a_detached_update(reg, held):
    hp, start = held
    gw = start()
    try:
        detach_a_push(reg, hp, gw, "down/app")
        assert gw.stop() == 0
    finally:
        hp.release()
    log = gw.log_text()
    assert 'referrers index_not_updated tag=sha256-' in log
    assert 'reason="shutdown"' in log


def test_cached_answer_dropped_by_a_push(reg, start_gateway, tmp_path):
    gw = start_gateway(gateway_config(
        upstream(reg, default=True),
        cache=cache_cfg(tmp_path / "c", referrers_ttl=3600)))
    subj, size = push_image(reg.url, "cache/app", "v1")
    a1, d1 = artifact(subj, size, SBOM, "one")
    assert push_artifact(gw.url, "cache/app", a1).status_code == 201
    assert digests(referrers(gw.url, "cache/app", subj)) == [d1]
    # Someone else adds to the index behind the gateway's back: the
    # cached answer stands until its TTL ...
    a2, d2 = artifact(subj, size, SBOM, "two")
    assert push_artifact(reg.url, "cache/app", a2).status_code == 201
    tag = ref_tag(subj)
    r = reg.http.get("%s/v2/cache/app/manifests/%s" % (reg.url, tag),
                     headers={"Accept": IDX}, timeout=30)
    idx = r.json()
    idx["manifests"].append({"mediaType": MT, "digest": d2,
                             "size": len(a2), "artifactType": SBOM})
    r = reg.http.put("%s/v2/cache/app/manifests/%s" % (reg.url, tag),
                     data=json.dumps(idx), headers={"Content-Type": IDX},
                     timeout=30)
    assert r.status_code == 201, r.text
    mark = reg.mark()
    assert digests(referrers(gw.url, "cache/app", subj)) == [d1]
    assert digests(referrers(gw.url, "cache/app", subj, SBOM)) == [d1]
    assert not [e for e in reg.access_log(since=mark)
                if tag in e["path"] or "/referrers/" in e["path"]]
    # The tag itself read through the gateway: cached (cache.tag_ttl).
    with session() as s:
        r = s.get("%s/v2/cache/app/manifests/%s" % (gw.url, tag),
                  headers={"Accept": IDX}, timeout=30)
    assert sorted(m["digest"] for m in r.json()["manifests"]) == \
        sorted([d1, d2])
    # ... and a push through the gateway drops both at once.
    a3, d3 = artifact(subj, size, SIG, "three")
    assert push_artifact(gw.url, "cache/app", a3).status_code == 201
    assert digests(referrers(gw.url, "cache/app", subj)) == \
        sorted([d1, d2, d3])
    with session() as s:
        r = s.get("%s/v2/cache/app/manifests/%s" % (gw.url, tag),
                  headers={"Accept": IDX}, timeout=30)
    assert sorted(m["digest"] for m in r.json()["manifests"]) == \
        sorted([d1, d2, d3])


def test_referrers_need_pull(reg, start_gateway):
    gw = start_gateway(gateway_config(
        upstream(reg, default=True),
        policy={"rules": [
            {"id": "open", "effect": "allow", "repositories": ["open/**"],
             "subjects": ["anonymous"], "actions": ["pull", "push"]},
            {"id": "push-only", "effect": "allow",
             "repositories": ["drop/**"], "subjects": ["anonymous"],
             "actions": ["push"]}]}))
    subj, size = push_image(reg.url, "closed/app", "v1")
    r = referrers(gw.url, "closed/app", subj)
    assert r.status_code == 401, r.text
    assert r.json()["errors"][0]["code"] == "UNAUTHORIZED"
    # Pull is what it takes; push alone is not enough.
    push_image(reg.url, "drop/app", "v1")
    assert referrers(gw.url, "drop/app", subj).status_code == 401
    push_image(reg.url, "open/app", "v1")
    assert digests(referrers(gw.url, "open/app", subj)) == []
    # A push with a subject needs push: refused before the upstream.
    mark = reg.mark()
    body, _ = artifact(subj, size, SBOM, "x")
    with session() as s:
        r = s.put("%s/v2/closed/app/manifests/%s" % (gw.url, sha256(body)),
                  data=body, headers={"Content-Type": MT}, timeout=30)
    assert r.status_code == 401, r.text
    assert not [e for e in reg.access_log(since=mark)
                if e["path"].startswith("/v2/closed/")]


def test_refused_push_is_relayed_and_keeps_no_index(reg, gw):
    """A manifest the upstream refuses (its config blob is missing) gets
    the upstream's own error, and no referrers tag is written."""
    subj, size = push_image(gw.url, "bad/app", "v1")
    m = json.dumps({"schemaVersion": 2, "mediaType": MT,
                    "artifactType": SBOM,
                    "config": {"mediaType": EMPTY_MT,
                               "digest": "sha256:" + "cd" * 32, "size": 2},
                    "layers": [],
                    "subject": {"mediaType": MT, "digest": subj,
                                "size": size}}).encode()
    with session() as s:
        r = s.put("%s/v2/bad/app/manifests/%s" % (gw.url, sha256(m)),
                  data=m, headers={"Content-Type": MT}, timeout=30)
    assert r.status_code == 400, r.text
    assert r.json()["errors"][0]["code"] == "MANIFEST_BLOB_UNKNOWN"
    assert "OCI-Subject" not in r.headers
    # review: the record names the upstream's code, as for any relayed
    # refusal (it was left out on this path).
    from lib.util import wait_for
    rid = r.headers["X-Request-Id"]
    wait_for(lambda: any(rid in ln and "req done" in ln
                         for ln in gw.log_text().splitlines()),
             timeout=30, what="the push's record")
    line = [ln for ln in gw.log_text().splitlines()
            if rid in ln and "req done" in ln][0]
    assert "up_error=MANIFEST_BLOB_UNKNOWN" in line, line
    r = reg.http.get("%s/v2/bad/app/manifests/%s" % (reg.url, ref_tag(subj)),
                     headers={"Accept": IDX}, timeout=30)
    assert r.status_code == 404


def test_index_written_with_the_gateways_credentials(start_registry,
                                                     start_gateway,
                                                     tmp_path):
    """A token-protected upstream: the client sends no credentials; the
    manifest and the referrers index are pushed with the gateway's own,
    under a push scope of the repository."""
    reg = start_registry("authref", auth="token")
    creds = tmp_path / "creds"
    creds.write_text("%s:%s\n" % (reg.issuer.username, reg.issuer.password))
    creds.chmod(0o600)
    gw = start_gateway(gateway_config(
        upstream(reg, default=True, credentials_file=creds,
                 auth_hosts=["127.0.0.1:%d" % reg.issuer.port])))
    mark = reg.issuer.mark()
    subj, size = push_image(gw.url, "auth/app", "v1")
    body, d = artifact(subj, size, SBOM, "auth")
    r = push_artifact(gw.url, "auth/app", body)
    assert r.status_code == 201, r.text
    assert r.headers["OCI-Subject"] == subj
    # Every request reached the token-protected registry (an anonymous
    # one would be a 401), with tokens the gateway's login got.
    recs = reg.issuer.requests_since(mark)
    assert recs and all(x["user"] == reg.issuer.username and x["ok"]
                        for x in recs), recs
    assert not [e for e in reg.access_log()
                if "/manifests/" in e["path"] and e["status"] == 401]
    assert digests(referrers(gw.url, "auth/app", subj)) == [d]
    # The index is in the registry, under the tag schema.
    tok = reg.token_for("repository:auth/app:pull")
    r = reg.http.get("%s/v2/auth/app/manifests/%s" % (reg.url,
                                                      ref_tag(subj)),
                     headers={"Accept": IDX,
                              "Authorization": "Bearer " + tok},
                     timeout=30)
    assert r.status_code == 200, r.text
    assert [m["digest"] for m in r.json()["manifests"]] == [d]


def test_index_tag_under_an_immutable_rule_is_not_moved(reg, start_gateway):
    """review: the gateway wrote the referrers tag <alg>-<hex> with its
    own credentials on a client's behalf without asking the policy's
    immutable_tags: a client whose own PUT of that tag is refused (403,
    immutable) moved it all the same by pushing a second artifact with
    the same subject.  The tag may be created (as a client may create a
    new immutable tag) but, once there, is not moved: the push is
    answered without OCI-Subject, the spec's signal that the index was
    not kept."""
    allow = {"id": "all", "effect": "allow", "subjects": ["anonymous"],
             "actions": ["pull", "push"], "repositories": ["**"]}
    gw = start_gateway(gateway_config(
        upstream(reg, default=True),
        policy={"rules": [allow],
                "immutable_tags": [{"id": "frozen",
                                    "repositories": ["imm/**"],
                                    "tags": ["sha256-*"]}]}))
    subj, size = push_image(gw.url, "imm/app", "v1")
    a, da = artifact(subj, size, SBOM, "first")
    r = push_artifact(gw.url, "imm/app", a)
    assert r.status_code == 201, r.text
    assert r.headers.get("OCI-Subject") == subj
    # The client itself may not move the tag.
    with session() as s:
        r = s.put("%s/v2/imm/app/manifests/%s" % (gw.url, ref_tag(subj)),
                  data=json.dumps({"schemaVersion": 2, "mediaType": IDX,
                                   "manifests": []}).encode(),
                  headers={"Content-Type": IDX}, timeout=30)
    assert r.status_code == 403, r.text
    b, db = artifact(subj, size, SIG, "second")
    r = push_artifact(gw.url, "imm/app", b)
    assert r.status_code == 201, r.text
    assert "OCI-Subject" not in r.headers, r.headers
    idx = json.loads(reg.get_manifest("imm/app", ref_tag(subj),
                                      accept=IDX).content)
    assert [m["digest"] for m in idx["manifests"]] == [da]


def test_detached_index_updates_are_bounded(reg, held):
    """review: a push whose client leaves once the manifest is accepted
    goes on detached, holding its descriptor (annotations of the
    client's choosing, up to limits.manifest_bytes) until its turn at
    the subject's lock; detached, it no longer counts against
    limits.max_connections, so a client pushing and resetting could
    queue any number of them (memory held: every byte it sent).  Now
    at most limits.max_connections index updates go on detached; past
    that a leaving client's update is ended and logged
    index_not_updated."""
    import socket
    import struct
    from lib.util import wait_for
    hp, start = held
    gw = start(max_connections=2)
    repo = "many/app"
    try:
        subj, _ = detach_a_push(reg, hp, gw, repo)
        size = len(reg.get_manifest(repo, "v1").content)
        for i in range(5):
            body, d = artifact(subj, size, SBOM, "queued %d" % i)
            mark = reg.mark()
            c = socket.create_connection(("127.0.0.1", gw.port), timeout=30)
            c.sendall(b"PUT /v2/%s/manifests/%s HTTP/1.1\r\n"
                      b"Host: %s\r\nContent-Type: %s\r\n"
                      b"Content-Length: %d\r\n\r\n" % (
                          repo.encode(), d.encode(), gw.host.encode(),
                          MT.encode(), len(body)) + body)
            wait_for(lambda: any(e["method"] == "PUT" and
                                 e["path"].endswith(d) and
                                 e["status"] == 201
                                 for e in reg.access_log(since=mark)),
                     timeout=30, what="the manifest accepted upstream")
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                         struct.pack("ii", 1, 0))
            c.close()
            # The registry's 201 may not have been read by the gateway
            # when the client resets: that push ends with
            # client_left_before_answer instead.
            wait_for(lambda: gw.log_text().count("referrers detached "
                                                 "tag=") +
                     gw.log_text().count("referrers not_detached") +
                     gw.log_text().count("referrers client_left_before") >=
                     i + 2,
                     timeout=30, what="push %d detached or ended" % i)
        log = gw.log_text()
        assert log.count("referrers detached tag=") <= 2, log
        assert log.count("referrers not_detached") + \
            log.count("referrers client_left_before") >= 3, log
    finally:
        hp.release()
    wait_for(lambda: gw.log_text().count("referrers detached_done") ==
             gw.log_text().count("referrers detached tag="), timeout=30,
             what="every detached update's end")
    assert gw.alive()


def test_referrers_cache_memory_is_bounded(reg, start_gateway, tmp_path):
    """review: the referrers answer cache was bounded by its count alone
    (cache.referrers_entries, default 1000) with each answer up to
    limits.manifest_bytes (default 4 MiB), held parsed (several times
    its text): a client that can push index tags <alg>-<hex> (or read a
    repository where large ones are) filled it with large answers, some
    GiB with the defaults.  Now the cached answers' bytes are bounded
    too (cache.referrers_bytes, default 8 MiB of documents)."""
    gw = start_gateway(gateway_config(
        upstream(reg, default=True),
        cache=cache_cfg(tmp_path / "c", referrers_ttl=3600)))
    repo = "big/app"
    subj, size = push_image(reg.url, repo, "v1")
    ann = {"k%05d" % i: "v" for i in range(25000)}
    desc = [{"mediaType": MT, "digest": subj, "size": size,
             "artifactType": SBOM, "annotations": ann}] * 4
    idx = json.dumps({"schemaVersion": 2, "mediaType": IDX,
                      "manifests": desc}).encode()
    assert 1 << 20 < len(idx) < 4 << 20
    subjects = [sha256(b"subject %d" % i) for i in range(32)]
    for s_ in subjects:
        r = reg.http.put("%s/v2/%s/manifests/%s" % (reg.url, repo,
                                                    ref_tag(s_)),
                         data=idx, headers={"Content-Type": IDX},
                         timeout=60)
        assert r.status_code == 201, r.text
    r = referrers(gw.url, repo, subjects[0])
    assert r.status_code == 200, r.text
    base = gw.rss_kib()
    for s_ in subjects[1:]:
        r = referrers(gw.url, repo, s_)
        assert r.status_code == 200 and len(r.json()["manifests"]) == 4
    grown = gw.rss_kib() - base
    # The oldest answers were dropped: asking again reads the tag.
    mark = reg.mark()
    assert len(referrers(gw.url, repo, subjects[1]).json()["manifests"]) \
        == 4
    assert [e for e in reg.access_log(since=mark)
            if e["method"] == "GET" and
            e["path"].endswith(ref_tag(subjects[1]))]
    # 31 answers of 1.5 MiB of text each, held parsed: hundreds of MiB
    # without a bound on bytes.  (Not measured under AddressSanitizer,
    # whose quarantine holds freed memory.)
    with open("/proc/%d/maps" % gw.pid) as f:
        asan = "libasan" in f.read()
    assert asan or grown < 160 * 1024, "rss grew %d KiB" % grown
    assert gw.alive()


# --- an upstream with the API that pages its answer ---------------------
# Registry 2.8 has no referrers API, so these run against
# lib/paging_referrers.py, a TEST DOUBLE of a registry that has one and
# pages it with Link: rel="next".

SUBJ = "sha256:" + "5e" * 32


def descriptors(n, types=(SBOM, SIG)):
    return [{"mediaType": MT, "digest": sha256(b"referrer %d" % i),
             "size": 100 + i, "artifactType": types[i % len(types)]}
            for i in range(n)]


@pytest.fixture
def pager():
    from lib.paging_referrers import PagingReferrers
    made = []

    def make(**kw):
        p = PagingReferrers(**kw)
        made.append(p)
        return p
    try:
        yield make
    finally:
        for p in made:
            p.stop()


def referrer_gets(up):
    return [p for p in up.paths() if "/referrers/" in p]


@pytest.mark.parametrize("link", ["path", "query", "absolute"])
def test_paged_upstream_answer_is_merged(pager, start_gateway, link):
    """All pages behind the upstream's Link, on its own referrers path,
    are read and answered as one index (filtered here); before, only
    the first page was served."""
    up = pager(page_size=2, link=link)
    refs = descriptors(7)
    up.set_referrers("app", SUBJ, refs)
    gw = start_gateway(gateway_config(upstream(up, default=True)))
    r = referrers(gw.url, "app", SUBJ)
    assert digests(r) == sorted(d["digest"] for d in refs)
    assert "Link" not in r.headers
    assert r.json()["manifests"][0] == refs[0]
    assert referrer_gets(up) == ["/v2/app/referrers/%s" % SUBJ] + [
        "/v2/app/referrers/%s?page=%d" % (SUBJ, i) for i in (1, 2, 3)]
    r = referrers(gw.url, "app", SUBJ, SIG)
    assert digests(r) == sorted(d["digest"] for d in refs
                                if d["artifactType"] == SIG)
    assert r.headers["OCI-Filters-Applied"] == "artifactType"


@pytest.mark.parametrize("link", ["elsewhere", "otherrepo"])
def test_next_link_elsewhere_is_never_followed(pager, start_gateway, link):
    """A next page on another origin (here another port of 127.0.0.1,
    where a second registry listens) or on another path of the same
    upstream is dropped: the gateway answers what it read from the
    upstream's own path and never goes there."""
    other = pager(page_size=2)
    other.set_referrers("app", SUBJ, descriptors(7))
    up = pager(page_size=2, link=link, other_port=other.port)
    refs = descriptors(7)
    up.set_referrers("app", SUBJ, refs)
    gw = start_gateway(gateway_config(upstream(up, default=True)))
    r = referrers(gw.url, "app", SUBJ)
    assert digests(r) == sorted(d["digest"] for d in refs[:2])
    assert "Link" not in r.headers
    assert referrer_gets(up) == ["/v2/app/referrers/%s" % SUBJ]
    assert other.paths() == []
    assert "next_link=dropped" in gw.log_text()


def test_pages_past_the_bound_go_on_through_the_gateway(pager,
                                                        start_gateway):
    """At limits.referrers_pages the answer ends with a Link of the
    gateway's own path carrying the upstream's next query (and the
    filter); following it lists the rest, every referrer once."""
    up = pager(page_size=2, link="path")
    refs = descriptors(9, types=(SBOM,))
    up.set_referrers("app", SUBJ, refs)
    gw = start_gateway(gateway_config(upstream(up, default=True),
                                      limits={"referrers_pages": 2}))
    got, url, answers = [], "%s/v2/app/referrers/%s?artifactType=%s" % (
        gw.url, SUBJ, urllib.parse.quote(SBOM, safe="")), 0
    with session() as s:
        while url and answers < 10:
            r = s.get(url, timeout=30)
            answers += 1
            assert r.status_code == 200, r.text
            assert r.headers["OCI-Filters-Applied"] == "artifactType"
            got += [m["digest"] for m in r.json()["manifests"]]
            nxt = r.links.get("next", {}).get("url")
            if nxt:
                assert nxt.startswith("/v2/app/referrers/%s?page=" % SUBJ)
                assert "artifactType=" in nxt
            url = gw.url + nxt if nxt else None
    assert answers == 3
    assert got == [d["digest"] for d in refs]
    # Each answer read at most two upstream pages.
    assert len(referrer_gets(up)) == 5


def test_follow_up_query_cannot_switch_the_upstream_to_the_tag_schema(
        pager, start_gateway):
    """A client's follow-up query the upstream answers with a plain 404
    gets an empty answer for itself, and does not mark the upstream's
    API as absent: the next plain request still reads the API, not the
    referrers tag."""
    up = pager(page_size=2, link="path")
    refs = descriptors(3)
    up.set_referrers("app", SUBJ, refs)
    up.plain404_on = "bogus"
    gw = start_gateway(gateway_config(upstream(up, default=True)))
    r = session().get("%s/v2/app/referrers/%s?bogus=1" % (gw.url, SUBJ),
                      timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["manifests"] == []
    r = referrers(gw.url, "app", SUBJ)
    assert digests(r) == sorted(d["digest"] for d in refs)
    assert "api=absent" not in gw.log_text()
    assert not [p for p in up.paths() if "/manifests/" in p]


def test_an_upstream_linking_in_a_loop_is_bounded(pager, start_gateway):
    up = pager(page_size=2, link="loop")
    up.set_referrers("app", SUBJ, descriptors(2))
    gw = start_gateway(gateway_config(upstream(up, default=True),
                                      limits={"referrers_pages": 3}))
    r = referrers(gw.url, "app", SUBJ)
    assert r.status_code == 200, r.text
    assert len(r.json()["manifests"]) == 6      # the same page 3 times
    assert r.links["next"]["url"] == "/v2/app/referrers/%s?page=0" % SUBJ
    assert len(referrer_gets(up)) == 3


def test_paged_answer_bounded_in_bytes(pager, start_gateway):
    """All pages together are bounded by limits.manifest_bytes: 502."""
    up = pager(page_size=8, link="path")
    refs = descriptors(64)
    up.set_referrers("app", SUBJ, refs)
    page = len(json.dumps({"schemaVersion": 2, "mediaType": IDX,
                           "manifests": refs[:8]}))
    gw = start_gateway(gateway_config(
        upstream(up, default=True),
        limits={"manifest_bytes": page * 3}))
    r = referrers(gw.url, "app", SUBJ)
    assert r.status_code == 502, r.text
    assert "limits.manifest_bytes" in r.text
    assert len(referrer_gets(up)) <= 4
    # A list within the bound is answered whole.
    up.set_referrers("app", SUBJ, refs[:16])
    assert len(referrers(gw.url, "app", SUBJ).json()["manifests"]) == 16


# --- a manifest with a subject deleted through the gateway --------------

def delete_manifest(base, repo, ref):
    with session() as s:
        return s.delete("%s/v2/%s/manifests/%s" % (base, repo, ref),
                        timeout=30)


def tag_index(reg, repo, subj):
    r = reg.http.get("%s/v2/%s/manifests/%s" % (reg.url, repo,
                                                 ref_tag(subj)),
                     headers={"Accept": IDX}, timeout=30)
    assert r.status_code == 200, r.text
    return sorted(m["digest"] for m in r.json()["manifests"])


def test_deleted_referrer_leaves_the_index(reg, start_gateway, tmp_path):
    """A DELETE by digest of a manifest with a subject, on registry 2.8
    (deletes enabled, no referrers API): deleted upstream, taken out of
    the subject's referrers tag, and the cached answer dropped."""
    gw = start_gateway(gateway_config(
        upstream(reg, default=True),
        cache=cache_cfg(tmp_path / "c", referrers_ttl=3600)))
    subj, size = push_image(gw.url, "del/app", "v1")
    a1, d1 = artifact(subj, size, SBOM, "one")
    a2, d2 = artifact(subj, size, SIG, "two")
    for a in (a1, a2):
        assert push_artifact(gw.url, "del/app", a).status_code == 201
    assert digests(referrers(gw.url, "del/app", subj)) == sorted([d1, d2])

    r = delete_manifest(gw.url, "del/app", d1)
    assert r.status_code == 202, r.text
    assert reg.get_manifest("del/app", d1, accept=MT).status_code == 404
    assert tag_index(reg, "del/app", subj) == [d2]
    # The cached answer (TTL an hour) went with it.
    assert digests(referrers(gw.url, "del/app", subj)) == [d2]
    assert digests(referrers(gw.url, "del/app", subj, SBOM)) == []

    # The last one out leaves an empty index.
    assert delete_manifest(gw.url, "del/app", d2).status_code == 202
    assert tag_index(reg, "del/app", subj) == []
    assert digests(referrers(gw.url, "del/app", subj)) == []

    # Without a subject a DELETE is relayed as before: no tag touched.
    mark = reg.mark()
    assert delete_manifest(gw.url, "del/app", subj).status_code == 202
    log = reg.access_log(since=mark)
    assert [(e["method"], e["path"]) for e in log
            if "/manifests/" in e["path"]] == [
        ("GET", "/v2/del/app/manifests/" + subj),
        ("DELETE", "/v2/del/app/manifests/" + subj)]
    # Unknown: the upstream's own 404; by tag: as before (405).
    r = delete_manifest(gw.url, "del/app", "sha256:" + "ee" * 32)
    assert r.status_code == 404, r.text
    assert r.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    r = delete_manifest(gw.url, "del/app", "v1")
    assert r.status_code == 405, r.text


def test_delete_denied_by_the_policy_reads_nothing(reg, start_gateway):
    """The policy gate comes first: a DELETE it refuses reaches neither
    the manifest nor the index."""
    gw = start_gateway(gateway_config(
        upstream(reg, default=True),
        policy={"rules": [{"id": "rw", "effect": "allow",
                           "subjects": ["anonymous"],
                           "repositories": ["**"],
                           "actions": ["pull", "push"]}]}))
    subj, size = push_image(gw.url, "keep/app", "v1")
    a, d = artifact(subj, size, SBOM, "kept")
    assert push_artifact(gw.url, "keep/app", a).status_code == 201
    mark = reg.mark()
    r = delete_manifest(gw.url, "keep/app", d)
    assert r.status_code in (401, 403), r.text
    assert not [e for e in reg.access_log(since=mark)
                if e["path"].startswith("/v2/keep/")]
    assert tag_index(reg, "keep/app", subj) == [d]


def test_deletes_and_pushes_to_one_subject_are_serialised(reg, gw):
    subj, size = push_image(gw.url, "mix/app", "v1")
    with session() as s:
        push_blob(gw.url, "mix/app", b"{}", s)
    old = [artifact(subj, size, SBOM, "old %d" % i) for i in range(3)]
    for body, _ in old:
        assert push_artifact(gw.url, "mix/app", body,
                             blob=False).status_code == 201
    new = [artifact(subj, size, SIG, "new %d" % i) for i in range(3)]
    results = {}
    go = threading.Barrier(6)

    def run(kind, i):
        go.wait(timeout=30)
        if kind == "del":
            results[(kind, i)] = delete_manifest(gw.url, "mix/app",
                                                 old[i][1])
        else:
            results[(kind, i)] = push_artifact(gw.url, "mix/app",
                                               new[i][0], blob=False)

    ts = [threading.Thread(target=run, args=(k, i))
          for k in ("del", "put") for i in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=120)
    for (kind, _), r in results.items():
        assert r.status_code == (202 if kind == "del" else 201), r.text
    assert len(results) == 6
    want = sorted(d for _, d in new)
    assert tag_index(reg, "mix/app", subj) == want
    assert digests(referrers(gw.url, "mix/app", subj)) == want


def test_referrer_deleted_behind_the_gateway_is_pruned(reg, gw):
    """A referrer deleted at the registry itself stays in the index, and
    registry 2.8 then refuses every index listing it (400
    MANIFEST_BLOB_UNKNOWN naming it): the gateway takes what the
    registry names out and writes again, so pushes and deletes through
    it keep the index up to date."""
    subj, size = push_image(gw.url, "prune/app", "v1")
    arts = [artifact(subj, size, SBOM, "n%d" % i) for i in range(4)]
    for body, _ in arts[:3]:
        assert push_artifact(gw.url, "prune/app", body).status_code == 201
    with reg.http.delete("%s/v2/prune/app/manifests/%s" % (
            reg.url, arts[0][1]), timeout=30) as r:
        assert r.status_code == 202, r.text
    r = push_artifact(gw.url, "prune/app", arts[3][0])
    assert r.status_code == 201, r.text
    assert r.headers["OCI-Subject"] == subj
    assert tag_index(reg, "prune/app", subj) == sorted(
        [arts[1][1], arts[2][1], arts[3][1]])
    assert "referrers index_pruned" in gw.log_text()
    # The same for a delete through the gateway.
    with reg.http.delete("%s/v2/prune/app/manifests/%s" % (
            reg.url, arts[1][1]), timeout=30) as r:
        assert r.status_code == 202, r.text
    assert delete_manifest(gw.url, "prune/app", arts[2][1]).status_code \
        == 202
    assert tag_index(reg, "prune/app", subj) == [arts[3][1]]
    assert gw.log_text().count("referrers index_pruned") == 2


def test_delete_keeps_an_immutable_index_tag(reg, start_gateway):
    allow = {"id": "all", "effect": "allow", "subjects": ["anonymous"],
             "actions": ["pull", "push", "delete"], "repositories": ["**"]}
    gw = start_gateway(gateway_config(
        upstream(reg, default=True),
        policy={"rules": [allow],
                "immutable_tags": [{"id": "frozen",
                                    "repositories": ["imm/**"],
                                    "tags": ["sha256-*"]}]}))
    subj, size = push_image(gw.url, "imm/del", "v1")
    a, d = artifact(subj, size, SBOM, "first")
    assert push_artifact(gw.url, "imm/del", a).status_code == 201
    r = delete_manifest(gw.url, "imm/del", d)
    # The manifest is deleted; its index tag is not moved.
    assert r.status_code == 202, r.text
    assert reg.get_manifest("imm/del", d, accept=MT).status_code == 404
    assert tag_index(reg, "imm/del", subj) == [d]
    assert 'removing=1 reason="the referrers tag is immutable' in \
        gw.log_text()


@pytest.mark.parametrize("param", ["ns", "artifactType"])
def test_upstream_next_query_cannot_reroute_the_go_on_link(pager,
                                                          start_gateway,
                                                          param):
    """The gateway's own Link (past limits.referrers_pages) carries the
    upstream's next query; an ns= or artifactType= in it must not decide
    where the client's follow-up goes or what it is filtered by (the
    first one of a query wins): a hostile upstream could send the
    client's next request to another upstream, or filter it away."""
    other = pager(page_size=2)
    other.set_referrers("app", SUBJ, descriptors(7, types=(SIG,)))
    up = pager(page_size=2, link="path")
    refs = descriptors(6, types=(SBOM,))
    up.set_referrers("app", SUBJ, refs)
    up.extra_query = "&%s=%s" % (param, other.host if param == "ns" else
                                 urllib.parse.quote(SIG, safe=""))
    gw = start_gateway(gateway_config(
        upstream(up, default=True), upstream(other, name="other"),
        limits={"referrers_pages": 1}))
    got, url, answers = [], "%s/v2/app/referrers/%s" % (gw.url, SUBJ), 0
    with session() as s:
        while url and answers < 10:
            r = s.get(url, timeout=30)
            answers += 1
            assert r.status_code == 200, r.text
            got += [m["digest"] for m in r.json()["manifests"]]
            nxt = r.links.get("next", {}).get("url")
            url = gw.url + nxt if nxt else None
    assert referrer_gets(other) == []
    assert got == [d["digest"] for d in refs]
    assert answers == 3


def test_deleted_referrer_not_detached_leaves_no_cached_link(reg,
                                                             start_gateway,
                                                             tmp_path):
    """A DELETE the upstream took (202) whose client leaves during the
    index update, when limits.max_connections updates are detached
    already (here 1): the update is dropped, but the cache must not go on
    serving the deleted manifest by digest as if the upstream still had
    it (the DELETE's own answer, which drops the link, never comes)."""
    import socket
    import struct
    from lib.holding_proxy import HoldingProxy
    from lib.util import wait_for
    hp = HoldingProxy(reg.host)
    try:
        gw = start_gateway(gateway_config(
            upstream(reg, default=True, url="http://" + hp.host),
            cache=cache_cfg(tmp_path / "c"),
            limits={"max_connections": 2}))
        dels = {}
        for repo in ("inv/one", "inv/three", "inv/two"):
            subj, size = push_image(reg.url, repo, "v1")
            body, d = artifact(subj, size, SBOM, repo)
            assert push_artifact(reg.url, repo, body).status_code == 201
            dels[repo] = d
        # The gateway's cache holds inv/two's artifact by digest.
        with session() as s:
            r = s.get("%s/v2/inv/two/manifests/%s" % (gw.url,
                                                      dels["inv/two"]),
                      headers={"Accept": MT}, timeout=30)
            assert r.status_code == 200, r.text
        marker = b"/manifests/sha256-"         # an index read
        hp.hold(marker)

        def delete_and_leave(repo, logged, count, nth):
            c = socket.create_connection(("127.0.0.1", gw.port), timeout=30)
            c.sendall(b"DELETE /v2/%s/manifests/%s HTTP/1.1\r\nHost: %s"
                      b"\r\n\r\n" % (repo.encode(), dels[repo].encode(),
                                     gw.host.encode()))
            # This DELETE's own index read held (the earlier ones stay
            # held: counting bytes held let the third leave before its
            # update began, and "not_detached" never came).
            wait_for(lambda: hp.held_conns(marker) >= nth and
                     reg.get_manifest(repo, dels[repo],
                                      accept=MT).status_code == 404,
                     timeout=30, what="the DELETE taken, index read held")
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                         struct.pack("ii", 1, 0))
            c.close()
            wait_for(lambda: gw.log_text().count(logged) == count,
                     timeout=30, what=logged)

        delete_and_leave("inv/one", "referrers detached ", 1, 1)
        delete_and_leave("inv/three", "referrers detached ", 2, 2)
        delete_and_leave("inv/two", "referrers not_detached", 1, 3)
    finally:
        hp.release()
    wait_for(lambda: gw.log_text().count("referrers detached_done") == 2,
             timeout=30, what="the detached update's end")
    with session() as s:
        r = s.get("%s/v2/inv/two/manifests/%s" % (gw.url, dels["inv/two"]),
                  headers={"Accept": MT}, timeout=30)
    assert r.status_code == 404, (r.status_code, r.text)
    assert gw.alive()


def test_client_gone_with_the_delete_hanging_frees_the_subject(reg,
                                                               held):
    """A DELETE holds its subject's lock while the upstream has not
    answered it; its client leaving then (the upstream hanging) lets the
    lock go: the next DELETE of a referrer of the same subject goes on."""
    import socket
    import struct
    from lib.util import wait_for
    hp, start = held
    gw = start()
    subj, size = push_image(reg.url, "lk/app", "v1")
    ds = []
    for note in ("a", "b"):
        body, d = artifact(subj, size, SBOM, note)
        assert push_artifact(reg.url, "lk/app", body).status_code == 201
        ds.append(d)
    marker = ("DELETE /v2/lk/app/manifests/%s" % ds[0]).encode()
    hp.hold(marker)
    try:
        c = socket.create_connection(("127.0.0.1", gw.port), timeout=30)
        c.sendall(b"DELETE /v2/lk/app/manifests/%s HTTP/1.1\r\nHost: %s"
                  b"\r\n\r\n" % (ds[0].encode(), gw.host.encode()))
        wait_for(lambda: hp.held(marker) > 0, timeout=30,
                 what="the DELETE's answer held")
        hp.hold(None)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                     struct.pack("ii", 1, 0))
        c.close()
        r = delete_manifest(gw.url, "lk/app", ds[1])
        assert r.status_code == 202, r.text
    finally:
        hp.release()
    assert gw.alive()
