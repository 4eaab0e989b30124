"""Soak (issue 7, acceptance point 2): SOAK_SECONDS of mixed hostile
traffic against one gateway with a cache and an audit stream, in front of
a real docker-registry and a real redis-server, while a legitimate client
(skopeo) pulls an image through it in a loop.

Hostile traffic comes from 127.0.0.2, so the per-client limits apply to
it and not to the legitimate client on 127.0.0.1:
  - blob GETs for distinct digests (blobs pushed beforehand, many times
    more bytes than cache.max_bytes, a few larger than the fill fraction),
    each connection reading the response head and then resetting;
  - random repository names: routed (the upstream answers 404), unrouted
    (404) and invalid (400);
  - manifest GETs by tag with random Accept sets (random order, unknown
    types, q-values, q=0);
  - manifest PUTs larger than limits.manifest_bytes;
  - request targets with TAB, FF and bytes >= 0x80 in the query, sent
    byte for byte on a raw socket.

Every SAMPLE_INTERVAL the gateway's RSS, thread count and open files, the
bytes in the cache's tmp/, the files under tags/ and Redis' key count are
sampled.  The test passes when every sample stays under its bound (BOUNDS,
derived from CONFIG below), no oversize manifest was accepted, the gateway
is alive and healthy at the end, and every legitimate pull succeeded with
every digest checked.  Nothing is gated on throughput: loops are bounded
in count and time, and only bounds and successes are asserted.

PORTCULLIS_SOAK_SECONDS overrides SOAK_SECONDS for quick local runs.
"""

import json
import os
import random
import shutil
import statistics
import threading
import time
import traceback

import pytest

from lib import rawhttp
from lib.gateway import upstream
from lib.images import HOST_ARCH, read_layout
from lib.redis import RedisServer
from lib.registry import MANIFEST_TYPES
from lib.soak import (MIB, SourceConn, Sampler, abortive_close, fd_count,
                      proc_status, push_blobs, read_head, sample_table,
                      tree_usage)

# --- the configuration and the bounds it implies -------------------------

SOAK_SECONDS = 120
if os.environ.get("PORTCULLIS_SOAK_SECONDS"):     # quick local runs
    SOAK_SECONDS = float(os.environ["PORTCULLIS_SOAK_SECONDS"])
SAMPLE_INTERVAL = 0.5

KIB = 1024
HOSTILE_ADDR = "127.0.0.2"     # every hostile connection binds here; skopeo
                               # connects from 127.0.0.1

CONFIG = {
    "limits": {
        "max_connections": 32,
        "max_connections_per_ip": 16,
        "manifest_bytes": 64 * KIB,
        "header_bytes": 16 * KIB,
    },
    "buffers": {"high_watermark": 64 * KIB},
    "timeouts": {"upstream_connect": 2, "upstream_response": 10,
                 "header": 10, "idle": 10, "body": 10, "drain": 2},
    "cache": {
        "max_bytes": 32 * MIB,
        "send_window": 256 * KIB,
        "max_fills": 4,
        "max_fills_per_client": 2,
        "digest_threads": 2,
        "fill_max_fraction": 0.25,
        "fill_finish_fraction": 0.9,
        "max_tag_records": 256,
        "tag_variants": 4,
        "negative_entries": 256,
    },
    "audit": {"max_index_keys": 256, "timeout": 2},
}
POOL_MAX_IDLE = 4              # upstreams[0].pool_max_idle

_L, _B, _C, _A = (CONFIG["limits"], CONFIG["buffers"], CONFIG["cache"],
                  CONFIG["audit"])

# One upstream read queued whole for hashing (UCONN_READ_CHUNK).
FILL_HASH_BUF = 256 * KIB
# Watermarks of bytes a fill's hash queue holds before the upstream read
# pauses (FILL_HASH_LIMIT in src/cache_digest.c).
FILL_HASH_LIMIT = 4
# Memory one client connection may pin: its output buffer and the
# upstream's input buffer (each stops at high_watermark), a cached file's
# send window (when it is copied rather than sent with sendfile) and its
# request head.
PER_CONN_BYTES = 2 * _B["high_watermark"] + _C["send_window"] + \
    _L["header_bytes"]
# A fill: the upstream input (two watermarks), the hash queue up to its
# pause point and the read that crossed it.
PER_FILL_BYTES = (2 + FILL_HASH_LIMIT) * _B["high_watermark"] + FILL_HASH_BUF
# What no configuration key sizes: allocator fragmentation, the touched
# part of thread stacks, OpenSSL and hiredis state, the audit queue.
RSS_SLACK_BYTES = 64 * MIB

# Bounds on each sampled figure: (limit, why).  "rss0"/"fd0" are the
# gateway's own figures right after it started (program, libraries,
# listener, Redis link, cache lock), before any request.
BOUNDS = {
    "threads": (lambda base: 1 + _C["digest_threads"] + 2,
                "1 loop thread + cache.digest_threads + 2 spare"),
    "fds": (lambda base: base["fd0"] + 2 * _L["max_connections"] +
            2 * _C["max_fills"] + 2 * _C["digest_threads"] + POOL_MAX_IDLE +
            16,
            "fd0 + 2 x limits.max_connections (the client's socket, and an "
            "upstream socket or a cached file) + 2 x cache.max_fills "
            "(upstream socket, tmp file) + 2 x cache.digest_threads (a "
            "wake-up pipe each) + pool_max_idle + 16"),
    "rss_kib": (lambda base: base["rss0"] +
                (_L["max_connections"] * PER_CONN_BYTES +
                 (_C["max_fills"] + _C["digest_threads"]) * PER_FILL_BYTES +
                 RSS_SLACK_BYTES) // KIB,
                "rss0 + max_connections x (2 x high_watermark + "
                "send_window + header_bytes) + (max_fills + digest_threads)"
                " x (6 x high_watermark + 256 KiB) + 64 MiB"),
    "tmp_bytes": (lambda base: _C["max_bytes"], "cache.max_bytes"),
    "tag_files": (lambda base: _C["max_tag_records"],
                  "cache.max_tag_records"),
    "redis_keys": (lambda base: _A["max_index_keys"] + 8,
                   "audit.max_index_keys + 8 (stream, writers hash, "
                   "bookkeeping)"),
}
COLUMNS = ["rss_kib", "threads", "fds", "tmp_bytes", "tmp_files",
           "tag_files", "cache_bytes", "redis_keys"]

# The hostile blobs: many times cache.max_bytes in all, so that coming
# back to a digest is a miss again; a few larger than fill_max_fraction.
N_BLOBS = 120
BLOB_SIZES = (3 * MIB, 7 * MIB)
N_BIG_BLOBS = 4
BIG_BLOB_SIZE = int(_C["fill_max_fraction"] * _C["max_bytes"]) + 2 * MIB

# Load: worker threads and the most operations each may make.
BLOB_WORKERS = 2
MIX_WORKERS = 1
MAX_OPS_PER_WORKER = int(SOAK_SECONDS * 500) + 100
OP_TIMEOUT = 15.0              # any one hostile request
PULL_TIMEOUT = 45              # one skopeo copy (it takes well under 1s)
JOIN_GRACE = 50.0              # workers must be done this long after the end
LEGIT_PAUSE = 0.5              # between two pulls (the machine has 2 cores)
MAX_PULLS = int(SOAK_SECONDS * 4) + 10

LEGIT_REPO = "soak/app"        # what skopeo pulls, tag v1
TAGS_REPO = "soak/tags"        # tags t0..t95 for the Accept-set GETs
JUNK_REPO = "soak/junk"        # the hostile blobs
# More tags x tag_variants than max_tag_records, so that the cap is reached.
N_TAGS = 96
PUT_TAGS = 4                   # oversize PUTs go to big-0..big-3


@pytest.fixture
def redis_server(tmp_path_factory):
    srv = RedisServer(tmp_path_factory.mktemp("redis-soak-"))
    try:
        # The soak checks key counts, not durability: no fsync per batch.
        srv.call("CONFIG", "SET", "appendfsync", "everysec")
        yield srv
    finally:
        srv.stop()


def gateway_cfg(reg, redis, cdir, spool):
    cfg = json.loads(json.dumps(CONFIG))
    u = upstream(reg, prefix="up1")
    u["pool_max_idle"] = POOL_MAX_IDLE
    cfg["upstreams"] = [u]
    cfg["cache"]["dir"] = str(cdir)
    cfg["audit"].update({"redis": "127.0.0.1:%d" % redis.port,
                         "spool_file": str(spool)})
    return cfg


# --- traffic --------------------------------------------------------------

class Tally:
    """Outcome counts per (kind, outcome) and the first traceback of each
    unexpected exception type, shared by the workers."""

    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {}
        self.harness_errors = {}

    def add(self, kind, outcome):
        with self.lock:
            k = (kind, str(outcome))
            self.counts[k] = self.counts.get(k, 0) + 1

    def harness_error(self, kind, e):
        with self.lock:
            name = "%s: %s" % (kind, type(e).__name__)
            if name not in self.harness_errors:
                self.harness_errors[name] = traceback.format_exc()
            k = (kind, "HARNESS-ERROR")
            self.counts[k] = self.counts.get(k, 0) + 1

    def total(self, kind):
        with self.lock:
            return sum(n for (k, _), n in self.counts.items() if k == kind)

    def report(self):
        with self.lock:
            kinds = sorted({k for k, _ in self.counts})
            lines = []
            for k in kinds:
                outs = sorted((o, n) for (kk, o), n in self.counts.items()
                              if kk == k)
                lines.append("  %-16s %6d  %s" % (
                    k, sum(n for _, n in outs),
                    ", ".join("%s=%d" % on for on in outs)))
            return "\n".join(lines)


def one_op(tally, kind, fn):
    """Run one hostile request; a refusal, reset or timeout from the
    gateway is an outcome, anything else a harness error."""
    try:
        tally.add(kind, fn())
    except rawhttp.ResponseTimeout:
        tally.add(kind, "timeout")
    except rawhttp.PeerClosed:
        tally.add(kind, "closed")
    except (ConnectionResetError, BrokenPipeError):
        tally.add(kind, "reset")
    except OSError as e:
        tally.add(kind, "oserror-%s" % (e.errno,))
    except Exception as e:  # noqa: BLE001 - counted and reported
        tally.harness_error(kind, e)


def random_accept(rnd):
    """An Accept field value (or several, as a list) no client would send
    twice: known and unknown types, random order and q-values."""
    pool = MANIFEST_TYPES + ["application/json", "*/*",
                             "application/vnd.oci.artifact.manifest.v1+json"]
    types = rnd.sample(pool, rnd.randint(1, len(pool)))
    types += ["application/x-soak-%08x+json" % rnd.getrandbits(32)
              for _ in range(rnd.randint(0, 2))]
    rnd.shuffle(types)
    parts = []
    for t in types:
        r = rnd.random()
        if r < 0.2:
            t += ";q=0"
        elif r < 0.5:
            t += ";q=0.%d" % rnd.randint(1, 9)
        parts.append(t)
    if rnd.random() < 0.3 and len(parts) > 1:
        cut = rnd.randint(1, len(parts) - 1)
        return [", ".join(parts[:cut]), ",".join(parts[cut:])]
    return [", ".join(parts)]


class Hostile:
    """The hostile operations, each one connection from HOSTILE_ADDR."""

    def __init__(self, gw, blobs, manifest_doc, tally):
        self.gw = gw
        self.blobs = blobs
        self.manifest_doc = manifest_doc
        self.tally = tally
        self.blob_lock = threading.Lock()
        self.blob_next = 0

    def conn(self):
        return SourceConn("127.0.0.1", self.gw.port, HOSTILE_ADDR,
                          timeout=OP_TIMEOUT)

    def request(self, target, headers=(), method="GET", body=b""):
        c = self.conn()
        try:
            c.send(rawhttp.build(method, target, list(headers), body,
                                 host=self.gw.host))
            return c.read_response(method=method).status
        finally:
            c.close()

    def next_blob(self):
        with self.blob_lock:
            d = self.blobs[self.blob_next % len(self.blobs)]
            self.blob_next += 1
            return d

    # Distinct-digest miss, response head read, then a reset.
    def blob_miss(self, rnd):
        digest = self.next_blob()
        c = self.conn()
        try:
            c.send(rawhttp.build("GET", "/v2/up1/%s/blobs/%s" % (
                JUNK_REPO, digest), host=self.gw.host))
            return read_head(c, timeout=OP_TIMEOUT)
        finally:
            abortive_close(c)

    def random_name(self, rnd):
        h = "%08x" % rnd.getrandbits(32)
        r = rnd.random()
        if r < 0.45:
            kind, target = "name-routed", "/v2/up1/r%s/x%d/manifests/%s" % (
                h, rnd.randint(0, 9), rnd.choice(["latest", "v" + h[:3]]))
        elif r < 0.6:
            kind, target = "name-routed", "/v2/up1/r%s/blobs/sha256:%064x" % (
                h, rnd.getrandbits(256))
        elif r < 0.8:
            kind, target = "name-unrouted", "/v2/nope%s/%s/manifests/t" % (
                h, h[::-1])
        else:
            kind, target = "name-invalid", "/v2/up1/%s/manifests/t" % (
                rnd.choice(["Bad%s", "a..%s", "%s__x", "-%s", "%s/", "a//%s",
                            "%s%%2e%%2e"]) % h)
        headers = []
        if rnd.random() < 0.5:
            headers = [("Accept", v) for v in random_accept(rnd)]
        return kind, lambda: self.request(target, headers)

    def accept_variant(self, rnd):
        target = "/v2/up1/%s/manifests/t%d" % (TAGS_REPO,
                                               rnd.randrange(N_TAGS))
        headers = [("Accept", v) for v in random_accept(rnd)]
        return self.request(target, headers)

    def oversize_put(self, rnd):
        size = _L["manifest_bytes"] + rnd.randint(1, 64 * KIB)
        doc = json.loads(self.manifest_doc)
        doc["annotations"] = {"org.portcullis.soak.pad": ""}
        base = len(json.dumps(doc).encode())
        doc["annotations"]["org.portcullis.soak.pad"] = "p" * max(
            0, size - base)
        body = json.dumps(doc).encode()
        target = "/v2/up1/%s/manifests/big-%d" % (TAGS_REPO,
                                                  rnd.randrange(PUT_TAGS))
        c = self.conn()
        try:
            c.send(rawhttp.build("PUT", target, [
                ("Content-Type", json.loads(self.manifest_doc)["mediaType"]),
                ("Content-Length", str(len(body)))], host=self.gw.host))
            try:
                c.send(body)
            except (ConnectionResetError, BrokenPipeError):
                pass    # refused before the body: read the answer if any
            return c.read_response(method="PUT").status
        finally:
            c.close()

    def bad_query(self, rnd):
        bad = rnd.choice([b"\t", b"\x0c", bytes([rnd.randint(0x80, 0xff)]),
                          b"a\tb", b"\xc3\xa9", b"x\x0cy\x9f"])
        path = rnd.choice([
            b"/v2/up1/%s/manifests/t0" % TAGS_REPO.encode(),
            b"/v2/up1/%s/tags/list" % TAGS_REPO.encode(),
            b"/v2/up1/r%08x/manifests/latest" % rnd.getrandbits(32)])
        target = path + b"?q=" + bad + b"&n=%d" % rnd.randint(0, 99)
        return self.request(target)


def run_worker(tally, deadline, stop, max_ops, body):
    n = 0
    try:
        while n < max_ops and not stop.is_set() and \
                time.monotonic() < deadline:
            body()
            n += 1
    except Exception as e:  # noqa: BLE001 - a bug in the test: fails it
        tally.harness_error("worker", e)


class LegitPuller:
    """skopeo copy of LEGIT_REPO:v1 through the gateway into a fresh OCI
    layout, again and again; each copy must exit 0 and leave exactly the
    image's manifest, config and layers, each hashing to its name."""

    def __init__(self, skopeo, gw, img, workdir):
        self.skopeo = skopeo
        self.gw = gw
        self.img = img
        self.workdir = str(workdir)
        self.ok = 0
        self.failures = []
        self.durations = []

    def pull_once(self, i):
        dest = os.path.join(self.workdir, "pull-%d" % i)
        t0 = time.monotonic()
        try:
            self.skopeo("copy", "--src-tls-verify=false",
                        "docker://%s/up1/%s:v1" % (self.gw.host, LEGIT_REPO),
                        "oci:%s:v1" % dest, timeout=PULL_TIMEOUT)
            top, found = read_layout(dest, "v1")
            problems = []
            if top != self.img.digest:
                problems.append("top %s, want %s" % (top, self.img.digest))
            if set(found) != self.img.all_digests():
                problems.append("blobs %s, want %s" % (
                    sorted(found), sorted(self.img.all_digests())))
            bad = sorted(d for d, ok in found.items() if not ok)
            if bad:
                problems.append("content does not match digest: %s" % bad)
            if problems:
                raise AssertionError("; ".join(problems))
            self.ok += 1
        except Exception as e:  # noqa: BLE001 - every failure counts
            self.failures.append("pull %d, after %.1fs: %s" % (
                i, time.monotonic() - t0, str(e)[-1500:]))
        finally:
            self.durations.append(time.monotonic() - t0)
            shutil.rmtree(dest, ignore_errors=True)

    def run(self, deadline, stop, max_pulls):
        i = 0
        while i < max_pulls and not stop.is_set() and \
                time.monotonic() < deadline:
            self.pull_once(i)
            i += 1
            stop.wait(LEGIT_PAUSE)


# --- the test ---------------------------------------------------------------

def test_soak_hostile_mix_stays_bounded(start_registry, start_gateway, skopeo,
                                        image_factory, redis_server,
                                        tmp_path):
    t_setup = time.monotonic()
    reg = start_registry("up1")
    img = image_factory("soak", platforms=[("linux", HOST_ARCH)],
                        layer_sizes=(256 * KIB, 2 * MIB), seed="soak")
    skopeo("copy", "--dest-tls-verify=false", img.ref,
           "docker://%s/%s:v1" % (reg.host, LEGIT_REPO))
    skopeo("copy", "--dest-tls-verify=false", img.ref,
           "docker://%s/%s:t0" % (reg.host, TAGS_REPO))
    for i in range(1, N_TAGS):
        r = reg.http.put("%s/v2/%s/manifests/t%d" % (reg.url, TAGS_REPO, i),
                         data=img.document,
                         headers={"Content-Type": img.media_type}, timeout=30)
        assert r.status_code == 201, r.text

    # Distinct blobs: a unique prefix on a shared random body, so they
    # cost little to make and nothing to compress.
    rnd0 = random.Random("portcullis-soak")
    body = rnd0.randbytes(BIG_BLOB_SIZE)
    sizes = [rnd0.randint(*BLOB_SIZES) for _ in range(N_BLOBS)] + \
        [BIG_BLOB_SIZE] * N_BIG_BLOBS

    def make_blob(i):
        head = b"portcullis soak blob %d\n" % i
        return head + body[:sizes[i] - len(head)]
    pushed = push_blobs(reg.url, JUNK_REPO, make_blob, len(sizes))
    blobs = [d for d, _ in pushed]
    rnd0.shuffle(blobs)

    cdir = tmp_path / "cache"
    cfg = gateway_cfg(reg, redis_server, cdir, tmp_path / "audit.spool")
    gw = start_gateway(cfg)
    st = proc_status(gw.pid)
    base = {"rss0": st["rss_kib"], "fd0": fd_count(gw.pid),
            "threads0": st["threads"]}
    limits = {k: f(base) for k, (f, _) in BOUNDS.items()}

    def probe():
        s = proc_status(gw.pid)
        s["fds"] = fd_count(gw.pid)
        s["tmp_files"], s["tmp_bytes"] = tree_usage(str(cdir / "tmp"))
        s["tag_files"], _ = tree_usage(str(cdir / "tags"))
        s["cache_bytes"] = tree_usage(str(cdir / "blobs"))[1] + \
            tree_usage(str(cdir / "manifests"))[1]
        s["redis_keys"] = redis_server.call("DBSIZE")
        return s

    tally = Tally()
    hostile = Hostile(gw, blobs, img.document, tally)
    puller = LegitPuller(skopeo, gw, img, tmp_path)
    setup_s = time.monotonic() - t_setup

    stop = threading.Event()
    t0 = time.monotonic()
    deadline = t0 + SOAK_SECONDS
    sampler = Sampler(probe, SAMPLE_INTERVAL, deadline + JOIN_GRACE,
                      max_samples=int((SOAK_SECONDS + JOIN_GRACE) /
                                      SAMPLE_INTERVAL) + 10)

    def blob_body(seed):
        rnd = random.Random(seed)
        return lambda: one_op(tally, "blob-miss",
                              lambda: hostile.blob_miss(rnd))

    def mix_body(seed):
        rnd = random.Random(seed)

        def body():
            r = rnd.random()
            if r < 0.4:
                kind, fn = hostile.random_name(rnd)
                one_op(tally, kind, fn)
            elif r < 0.7:
                one_op(tally, "accept-variant",
                       lambda: hostile.accept_variant(rnd))
            elif r < 0.8:
                one_op(tally, "oversize-put",
                       lambda: hostile.oversize_put(rnd))
            else:
                one_op(tally, "bad-query", lambda: hostile.bad_query(rnd))
        return body

    workers = [threading.Thread(
        target=run_worker, name="blob-%d" % i, daemon=True,
        args=(tally, deadline, stop, MAX_OPS_PER_WORKER, blob_body(i)))
        for i in range(BLOB_WORKERS)]
    workers += [threading.Thread(
        target=run_worker, name="mix-%d" % i, daemon=True,
        args=(tally, deadline, stop, MAX_OPS_PER_WORKER, mix_body(100 + i)))
        for i in range(MIX_WORKERS)]
    legit = threading.Thread(target=puller.run, name="legit", daemon=True,
                             args=(deadline, stop, MAX_PULLS))
    violations = []
    stuck = []
    try:
        sampler.start()
        for w in workers + [legit]:
            w.start()
        for w in workers + [legit]:
            w.join(timeout=max(1.0, deadline + JOIN_GRACE - time.monotonic()))
        stuck = [w.name for w in workers + [legit] if w.is_alive()]
    finally:
        stop.set()
        sampler.stop()
        sampler.join(timeout=10)
        soak_s = time.monotonic() - t0
        alive = gw.alive()
        final = None
        if alive:
            try:
                final = sampler.sample_once()
            except Exception as e:  # noqa: BLE001 - reported below
                sampler.error = sampler.error or e
        healthy = False
        if alive:
            try:
                healthy = gw.http.get(gw.url + "/healthz",
                                      timeout=10).status_code == 200
            except Exception:  # noqa: BLE001 - reported as unhealthy
                pass

        maxima = {}
        for k in COLUMNS:
            vals = [s[k] for s in sampler.samples if k in s]
            if vals:
                maxima[k] = max(vals)
        for k, (f, why) in BOUNDS.items():
            if k in maxima and maxima[k] > limits[k]:
                at = next(s["t"] for s in sampler.samples
                          if s.get(k) == maxima[k])
                violations.append("%s reached %s at %.1fs, bound %s (%s)" % (
                    k, maxima[k], at, limits[k], why))
        accepted = sum(n for (k, o), n in tally.counts.items()
                       if k == "oversize-put" and o.startswith("2"))
        if accepted:
            violations.append("%d manifest PUTs over limits.manifest_bytes "
                              "(%d) were accepted" % (accepted,
                                                      _L["manifest_bytes"]))

        every = max(1, len(sampler.samples) // 40)
        d = sorted(puller.durations)
        print("\n==== soak: %.0fs of traffic (set-up %.1fs), gateway pid %d,"
              " %d samples every %.1fs ====" % (
                  soak_s, setup_s, gw.pid, len(sampler.samples),
                  SAMPLE_INTERVAL))
        print("start: rss0=%d KiB fd0=%d threads0=%d" % (
            base["rss0"], base["fd0"], base["threads0"]))
        print(sample_table(sampler.samples, COLUMNS, every=every))
        print("%7s" % "max" + "".join("%14s" % (maxima.get(c, "-"),)
                                      for c in COLUMNS))
        print("%7s" % "bound" + "".join("%14s" % (limits.get(c, "-"),)
                                        for c in COLUMNS))
        print("hostile requests (kind, total, outcomes):")
        print(tally.report())
        print("legitimate pulls: %d ok, %d failed; seconds min/median/max "
              "%s" % (puller.ok, len(puller.failures),
                      "%.1f/%.1f/%.1f" % (d[0], statistics.median(d), d[-1])
                      if d else "-"))
        for f in puller.failures[:10]:
            print("  FAILED " + f)
        for name, tb in tally.harness_errors.items():
            print("harness error %s:\n%s" % (name, tb))
        if sampler.error is not None:
            print("sampler error: %r" % (sampler.error,))
        print("gateway alive at the end: %s, /healthz 200: %s, final "
              "sample: %s" % (alive, healthy, final))
        print("bound violations:\n  " + ("\n  ".join(violations) or "none"))

    assert alive, "the gateway died during the soak (log tail above)"
    assert healthy, "the gateway does not answer /healthz 200 after the soak"
    assert not stuck, "workers still running after the grace: %s" % stuck
    assert sampler.error is None, "sampling failed: %r" % (sampler.error,)
    assert not tally.harness_errors, \
        "the test itself failed: %s" % list(tally.harness_errors)
    for kind in ("blob-miss", "name-routed", "name-unrouted", "name-invalid",
                 "accept-variant", "oversize-put", "bad-query"):
        assert tally.total(kind) > 0, "no %s request was made" % kind
    assert puller.ok > 0 and not puller.failures, \
        "legitimate pulls: %d ok, failures: %s" % (puller.ok,
                                                   puller.failures[:3])
    assert not violations, "bounds broken:\n" + "\n".join(violations)
