"""The audit spool as a write-ahead log (issue 12, acceptance 4): a
gateway killed with SIGKILL in the middle of 5,000 requests, with Redis
up, loses no record: after a restart on the same spool every request
that got a response has exactly one record in the stream.  And a
graceful stop (SIGTERM) with records waiting for a paused Redis leaves
each of them in Redis or in the spool, replayed exactly once by the next
start.

Real parts: redis-server (appendfsync always, so a record Redis
acknowledged survives anything here), docker-registry, the gateway with
its cache.  Every wait is on a condition."""

import hashlib
import http.client
import json
import os
import signal
import struct
import threading
import urllib.parse
import zlib

import pytest
import requests

from lib.cache import cache_cfg
from lib.gateway import gateway_bin, gateway_config, upstream
from lib.redis import entries_to_dicts
from lib.util import free_port, run, wait_for

STREAM = "portcullis:audit"
HDR = 32
MT = "application/vnd.oci.image.manifest.v1+json"


@pytest.fixture
def redis(start_redis):
    return start_redis


def audit_cfg(redis_port, spool, **kw):
    a = {"redis": "127.0.0.1:%d" % redis_port, "spool_file": str(spool),
         "timeout": 2}
    a.update(kw)
    return a


def spool_size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return -1


_CRC32C = []


def crc32c(data):
    """CRC-32C (Castagnoli), the checksum of "PCR2" frames, by table."""
    if not _CRC32C:
        for i in range(256):
            c = i
            for _ in range(8):
                c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
            _CRC32C.append(c)
    crc = 0xFFFFFFFF
    for b in data:
        crc = _CRC32C[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def frame_ok(magic, payload, crc):
    """A frame's checksum by its magic: "PCR2" CRC-32C, "PCR1" CRC-32."""
    if magic == 0x32524350:
        return crc32c(payload) == crc
    return magic == 0x31524350 and zlib.crc32(payload) == crc


def spool_records(path):
    """The request ids of the records in a spool file, in file order,
    read by its format (audit.h): a 32-byte header, then frames of magic,
    payload length and checksum, and "name\\0value\\0" payloads."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] in (b"PCAUDSP1", b"PCAUDSP2"), "not a spool"
    ids, off = [], HDR
    while off + 12 <= len(data):
        magic, n, crc = struct.unpack("<III", data[off:off + 12])
        payload = data[off + 12:off + 12 + n]
        if len(payload) != n or not frame_ok(magic, payload, crc):
            break
        parts = payload.split(b"\0")
        fields = dict(zip(parts[0::2], parts[1::2]))
        ids.append(fields[b"request_id"].decode())
        off += 12 + n
    return ids


def stream_request_ids(rs):
    with rs.client() as c:
        recs = entries_to_dicts(c.call("XRANGE", STREAM, "-", "+"))
    return [d["request_id"] for _, d in recs]


def push_image(reg):
    """A small image in crash/app: its manifest digest and a blob's."""
    s = requests.Session()
    s.trust_env = False
    base = "http://%s" % reg.host

    def put_blob(data):
        d = "sha256:" + hashlib.sha256(data).hexdigest()
        r = s.post(base + "/v2/crash/app/blobs/uploads/", timeout=30)
        assert r.status_code == 202, r.text
        loc = urllib.parse.urljoin(base + "/", r.headers["Location"])
        sep = "&" if "?" in loc else "?"
        r = s.put(loc + sep + "digest=" + d, data=data, timeout=30,
                  headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 201, r.text
        return d
    layer = os.urandom(2048)
    ld = put_blob(layer)
    cd = put_blob(b"{}")
    man = json.dumps({
        "schemaVersion": 2, "mediaType": MT,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": cd, "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": ld, "size": len(layer)}]}).encode()
    r = s.put(base + "/v2/crash/app/manifests/v1", data=man, timeout=30,
              headers={"Content-Type": MT})
    assert r.status_code == 201, r.text
    return "sha256:" + hashlib.sha256(man).hexdigest(), ld


class Load:
    """`total` requests over `conns` keep-alive connections, one thread
    each, to whatever port `self.port` names.  Remembers the X-Request-Id
    of every response.  A request that gets no response (the gateway was
    killed) waits for `self.up` and is made again, so that `total`
    requests are answered in all."""

    def __init__(self, port, paths, total, conns):
        self.port = port
        self.paths = paths
        self.total = total
        self.conns = conns
        self.lock = threading.Lock()
        self.next = 0
        self.ids = []
        self.failures = 0
        self.errors = []
        self.up = threading.Event()
        self.up.set()
        self.threads = [threading.Thread(target=self._run, args=(i,),
                                         daemon=True) for i in range(conns)]

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def answered(self):
        with self.lock:
            return len(self.ids)

    def join(self, timeout):
        for t in self.threads:
            t.join(timeout)
            assert not t.is_alive(), "load thread stuck"
        assert not self.errors, self.errors[:3]

    def _run(self, k):
        conn = None
        while True:
            with self.lock:
                if self.next >= self.total:
                    break
                i = self.next
                self.next += 1
            path, accept = self.paths[i % len(self.paths)]
            for attempt in range(50):
                if not self.up.wait(60):
                    self.errors.append("gateway not back")
                    return
                try:
                    if conn is None:
                        conn = http.client.HTTPConnection(
                            "127.0.0.1", self.port, timeout=30)
                    h = {"User-Agent": "crash-test"}
                    if accept:
                        h["Accept"] = accept
                    conn.request("GET", path, headers=h)
                    r = conn.getresponse()
                    r.read()
                except (http.client.HTTPException, OSError):
                    # No response: the gateway is gone.  Not answered,
                    # so not counted; try again once it is back.
                    if conn is not None:
                        conn.close()
                    conn = None
                    with self.lock:
                        self.failures += 1
                    self.up.wait(60)
                    continue
                rid = r.getheader("X-Request-Id")
                if rid is None or r.status not in (200, 404):
                    self.errors.append((path, r.status, rid))
                with self.lock:
                    self.ids.append(rid)
                if r.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
                break
            else:
                self.errors.append("no answer after 50 attempts")
                return
        if conn is not None:
            conn.close()


def test_kill9_mid_load_loses_no_record(redis, start_registry,
                                        start_gateway, tmp_path):
    """Acceptance 4: SIGKILL after 2,500 of 5,000 answered requests (8
    connections; mostly cached manifest GETs by digest, and GET /v2/, a
    cached blob GET, a 404), Redis up; a restart on the same spool; then
    every answered request has exactly one record."""
    rs = redis()
    reg = start_registry("up1")
    man, blob = push_image(reg)
    spool = tmp_path / "crash.spool"
    cfg = gateway_config(upstream(reg, default=True), instance_id="gw-crash",
                         cache=cache_cfg(tmp_path / "cache"),
                         audit=audit_cfg(rs.port, spool))
    gw = start_gateway(cfg)
    # Fill the cache: the manifest GETs below are hits.
    s = requests.Session()
    s.trust_env = False
    r = s.get("%s/v2/crash/app/manifests/%s" % (gw.url, man),
              headers={"Accept": MT}, timeout=30)
    assert r.status_code == 200
    warm = [r.headers["X-Request-Id"]]
    paths = [("/v2/crash/app/manifests/%s" % man, MT)] * 5 + [
        ("/v2/", None), ("/v2/crash/app/blobs/%s" % blob, None),
        ("/v2/crash/app/manifests/%s" % man, MT),
        ("/v2/crash/app/manifests/no-such-tag", MT)]
    load = Load(gw.port, paths, 5000, 8).start()
    wait_for(lambda: load.answered() >= 2500, timeout=120,
             what="2,500 answered requests")
    load.up.clear()
    gw.proc.stop(sig=signal.SIGKILL)
    answered_before = load.answered()
    # What the killed gateway left: the records Redis had not
    # acknowledged are in the spool (the page cache kept them).
    left = spool_records(spool)
    in_redis = set(stream_request_ids(rs))

    gw2 = start_gateway(cfg)
    load.port = gw2.port
    load.up.set()
    load.join(timeout=300)
    assert load.answered() == 5000
    answered = warm + load.ids
    assert len(set(answered)) == len(answered), "a request id repeats"
    # The stream holds every answered request (and the spool was
    # replayed and released), then stops growing.
    wait_for(lambda: set(answered) <= set(stream_request_ids(rs)),
             timeout=60, what="every answered request in the stream")
    wait_for(lambda: spool_size(spool) == HDR, timeout=30,
             what="spool released")
    got = stream_request_ids(rs)
    dup = sorted({x for x in got if got.count(x) > 1})
    assert not dup, "recorded twice: %r" % dup[:10]
    missing = set(answered) - set(got)
    assert not missing, "%d answered requests have no record" % len(missing)
    # None but answered requests, and those the kill cut off (processed
    # and recorded, the response not read): at most one per connection.
    extra = set(got) - set(answered)
    assert len(extra) <= 8, "%d records of unanswered requests" % len(extra)
    gw2.stop()
    log = gw2.log_text()
    assert "dropped=0" in log
    print("answered before the kill: %d; spool left: %d records, %d of "
          "them not in Redis then; failed attempts: %d" % (
              answered_before, len(left), len(set(left) - in_redis),
              load.failures))


def test_sigterm_with_redis_paused_briefly_flushes_to_redis(
        redis, start_registry, start_gateway, tmp_path):
    """A graceful stop waits (up to audit.timeout) for Redis to
    acknowledge what is queued: with Redis paused for less than that,
    every record is in Redis when the gateway has exited, and the spool
    holds nothing to replay."""
    rs = redis()
    reg = start_registry("up1")
    spool = tmp_path / "term.spool"
    cfg = gateway_config(upstream(reg, default=True), instance_id="gw-term",
                         audit=audit_cfg(rs.port, spool, timeout=20))
    gw = start_gateway(cfg)
    s = requests.Session()
    s.trust_env = False
    ids = []
    for _ in range(20):
        ids.append(s.get(gw.url + "/v2/", timeout=10).headers["X-Request-Id"])
    rs.wait_xlen(STREAM, 20)
    # Redis holds every command for 1.5 s: the next records wait.
    rs.call("CLIENT", "PAUSE", "1500", "ALL")
    for _ in range(30):
        ids.append(s.get(gw.url + "/v2/", timeout=10).headers["X-Request-Id"])
    s.close()
    assert gw.stop(timeout=30) == 0
    log = gw.log_text()
    assert "audit settle queued=0 inflight=0" in log, log[-2000:]
    got = stream_request_ids(rs)
    assert got == ids
    assert spool_records(spool) == []
    # The next start has nothing to replay.
    gw2 = start_gateway(cfg)
    gw2.stop()
    assert "records=0 " in gw2.log_text()
    assert stream_request_ids(rs) == ids


def test_sigterm_with_redis_paused_long_spools_then_replays_once(
        redis, start_registry, start_gateway, tmp_path):
    """Redis paused for longer than audit.timeout: the stop gives up
    waiting after audit.timeout, the records are in the spool (whether
    Redis, once it resumes, still runs what it was sent on the dropped
    link does not matter), and the next start replays the spool without
    writing any twice."""
    rs = redis()
    reg = start_registry("up1")
    spool = tmp_path / "term2.spool"
    cfg = gateway_config(upstream(reg, default=True), instance_id="gw-term2",
                         audit=audit_cfg(rs.port, spool, timeout=1))
    gw = start_gateway(cfg)
    s = requests.Session()
    s.trust_env = False
    ids = []
    for _ in range(20):
        ids.append(s.get(gw.url + "/v2/", timeout=10).headers["X-Request-Id"])
    rs.wait_xlen(STREAM, 20)
    rs.call("CLIENT", "PAUSE", "4000", "ALL")
    for _ in range(30):
        ids.append(s.get(gw.url + "/v2/", timeout=10).headers["X-Request-Id"])
    s.close()
    assert gw.stop(timeout=30) == 0
    # Every record is in Redis or in the spool: the 30 were not
    # acknowledged, so the spool has them all, in order.
    left = spool_records(spool)
    assert left[-30:] == ids[20:], "the unacknowledged records are spooled"
    assert set(left) <= set(ids)
    # Redis resumes and runs what it was sent; the replay adds nothing
    # twice, whatever of the 30 that was.
    gw2 = start_gateway(cfg)
    wait_for(lambda: spool_size(spool) == HDR, timeout=30,
             what="spool replayed")
    got = stream_request_ids(rs)
    assert got == ids, "each record exactly once, in order"
    gw2.stop()
    assert "records=30 " in gw2.log_text()


def test_wal_keeps_records_when_the_spool_is_small(redis, start_registry,
                                                   start_gateway, tmp_path):
    """With Redis acknowledging promptly, a WAL much smaller than what
    goes through it keeps releasing its acknowledged prefix: reject mode
    refuses nothing and drops nothing, the file stays within
    spool_max_bytes; a leftover <spool>.tmp is removed.  (Reject mode
    reserves a largest record, 4 KiB, per request being served, so the
    file is sized well above that.)"""
    rs = redis()
    reg = start_registry("up1")
    spool = tmp_path / "small.spool"
    cfg = gateway_config(upstream(reg, default=True), instance_id="gw-small",
                         audit=audit_cfg(rs.port, spool,
                                         spool_max_bytes=4 << 20,
                                         on_failure="reject"))
    # What a release a crash interrupted would leave: removed at start.
    tmp = tmp_path / "small.spool.tmp"
    tmp.write_bytes(b"half a release")
    gw = start_gateway(cfg)
    assert not tmp.exists()
    # 20,000 records of about 450 bytes: twice the file.  Reject mode
    # would refuse once 3 MiB were unacknowledged: Redis stalled for
    # seconds, when audit.timeout (2 s) takes the link down first.
    # The premise is a Redis that acknowledges promptly: wait until the
    # writer's link is up and acknowledging (one record arrived) before
    # the load, so that a slow start on a loaded machine is not taken
    # for a stall.
    first = Load(gw.port, [("/v2/", None)], 1, 1).start()
    first.join(timeout=60)
    rs.wait_xlen(STREAM, 1, timeout=60)
    # Then 20,000 in rounds of 2,000 (about 1 MiB of records), each
    # round waited on until Redis holds it: a Redis starved of CPU by a
    # loaded machine must not be taken for the stall reject mode is for.
    ids = list(first.ids)
    for i in range(10):
        load = Load(gw.port, [("/v2/", None)], 2000, 4).start()
        load.join(timeout=600)
        ids += load.ids
        rs.wait_xlen(STREAM, 1 + 2000 * (i + 1), timeout=60)
    assert 0 < spool_size(spool) <= 4 << 20
    got = stream_request_ids(rs)
    assert sorted(got) == sorted(ids)
    gw.stop()
    log = gw.log_text()
    assert "rejected=0" in log and "dropped=0" in log
    released = int(log.split(" released=")[1].split()[0])
    assert released >= 6, "the acknowledged prefix was released"



def _payload(fields):
    """A record payload, "name\\0value\\0" in the order given."""
    return b"".join(k.encode() + b"\0" + v + b"\0" for k, v in fields)


def _frame(magic, payload):
    crc = crc32c(payload) if magic == b"PCR2" else zlib.crc32(payload)
    return magic + struct.pack("<II", len(payload), crc) + payload


def test_spool_of_both_frame_kinds_replays_each_once(redis, start_registry,
                                                     start_gateway, tmp_path):
    """A spool an earlier version left ("PCR1" frames, CRC-32) that this
    one went on writing ("PCR2", CRC-32C), with a torn tail whose length
    points past the end of the file: every whole record reaches the
    stream once, in order, the torn one is dropped, and the readers
    (XRANGE, `audit export`) see each record's fields as written, for
    records just under, at and over the writer's reuse size (640 bytes)
    and of the largest size (AUDIT_REC_MAX, 4096), a tab in a value
    coming out as '?' (a payload from a file is not sanitised)."""
    rs = redis()
    reg = start_registry("up1")
    spool = tmp_path / "mixed.spool"
    inst = b"gw-mix"
    recs, want = [], []

    def rec(magic, run, n, size, ua=b"mixed"):
        rid = b"%s-%d-%d" % (magic.lower(), run, n)
        base = [("time", b"1700000000000"),
                ("id", inst + b"/%d-%d" % (run, n)),
                ("request_id", rid), ("instance", inst),
                ("client_ip", b"127.0.0.1"), ("user_agent", ua),
                ("action", b"pull"), ("method", b"GET")]
        # Long values, up to AUDIT_VALUE_MAX each, fill the record to
        # exactly `size` bytes.
        rest = size - len(_payload(base + [("path", b""), ("error", b""),
                                           ("rule", b""),
                                           ("reference", b"")]))
        vals = []
        for _ in range(4):
            k = min(rest, 1024)
            vals.append(b"/" + b"p" * (k - 1) if k else b"")
            rest -= k
        assert rest == 0
        fields = base + [("path", vals[0]), ("error", vals[1]),
                         ("rule", vals[2]), ("reference", vals[3])]
        p = _payload(fields)
        assert len(p) == size
        recs.append(_frame(magic, p))
        want.append((rid.decode(), {k: v.decode() for k, v in fields}))

    rec(b"PCR1", 1000, 1, 200)
    rec(b"PCR1", 1000, 2, 640)
    rec(b"PCR1", 1000, 3, 641, ua=b"tab\there")
    want[-1][1]["user_agent"] = "tab?here"
    rec(b"PCR2", 1001, 1, 639)
    rec(b"PCR2", 1001, 2, 640)
    rec(b"PCR2", 1001, 3, 4096)
    rec(b"PCR2", 1001, 4, 641)
    hdr = b"PCAUDSP1" + struct.pack("<II", 1001, 0)
    hdr += struct.pack("<I", zlib.crc32(hdr)) + b"\0" * 12
    torn = b"PCR2" + struct.pack("<II", 300, 0) + b"x" * 50
    spool.write_bytes(hdr + b"".join(recs) + torn)
    assert spool_records(spool) == [r for r, _ in want]

    cfg = gateway_config(upstream(reg, default=True),
                         instance_id=inst.decode(),
                         audit=audit_cfg(rs.port, spool))
    gw = start_gateway(cfg)
    rs.wait_xlen(STREAM, len(want), timeout=60)
    wait_for(lambda: spool_size(spool) == HDR, timeout=30,
             what="spool replayed and released")
    with rs.client() as c:
        got = entries_to_dicts(c.call("XRANGE", STREAM, "-", "+"))
    assert [d["request_id"] for _, d in got] == [r for r, _ in want]
    for (_, d), (rid, fields) in zip(got, want):
        for k, v in fields.items():
            assert d[k] == v, (rid, k)
    log = gw.log_text()
    assert "torn_tail bytes=%d" % len(torn) in log
    assert "records=%d " % len(want) in log
    out = run([gateway_bin(), "audit", "export", "-c", gw.config_path],
              timeout=60).stdout
    exp = {j["request_id"]: j for j in map(json.loads, out.splitlines())}
    assert sorted(exp) == sorted(r for r, _ in want)
    for rid, fields in want:
        for k in ("path", "error", "rule", "reference", "user_agent"):
            assert exp[rid][k] == fields[k], (rid, k)
    gw.stop()
    assert "dropped=0" in gw.log_text()


def earlier_version_opens(path):
    """Whether a gateway before CRC-32C frames would take the file as its
    spool: it checks the header ("PCAUDSP1" and its CRC-32) and then
    drops every frame that is not "PCR1", from the first one on, as a
    torn tail."""
    with open(path, "rb") as f:
        h = f.read(HDR)
    return len(h) == HDR and h[:8] == b"PCAUDSP1" and \
        struct.unpack("<I", h[16:20])[0] == zlib.crc32(h[:16])


def test_earlier_version_refuses_a_spool_it_would_empty(
        redis, start_registry, start_gateway, tmp_path):
    """Going back to a version before CRC-32C frames (a rollback after an
    incident, with Redis down) must not drop what the spool holds: such a
    version took every "PCR2" frame for a torn tail and truncated the
    file (shown with the main branch's binary: 20 records spooled while
    Redis was down, "torn_tail bytes=6751", none ever reached the
    stream).  While the file holds frames its header says "PCAUDSP2",
    which such a version refuses to start on ("not a portcullis audit
    spool"); once it is empty again (a clean stop with Redis up) it says
    "PCAUDSP1", and such a version starts on it."""
    rs = redis()
    reg = start_registry("up1")
    spool = tmp_path / "back.spool"
    cfg = gateway_config(upstream(reg, default=True), instance_id="gw-back",
                         audit=audit_cfg(rs.port, spool))
    rs.kill()
    gw = start_gateway(cfg)
    s = requests.Session()
    s.trust_env = False
    ids = [s.get(gw.url + "/v2/", timeout=10).headers["X-Request-Id"]
           for _ in range(20)]
    s.close()
    assert gw.stop() == 0
    assert spool_records(spool) == ids
    assert not earlier_version_opens(spool), \
        "an earlier version would drop the spooled records"
    rs.start()
    gw2 = start_gateway(cfg)
    rs.wait_xlen(STREAM, 20, timeout=60)
    wait_for(lambda: spool_size(spool) == HDR, timeout=30,
             what="spool replayed and released")
    assert gw2.stop() == 0
    assert stream_request_ids(rs) == ids
    assert spool_records(spool) == []
    assert earlier_version_opens(spool), \
        "an empty spool still opens under an earlier version"


def test_a_record_that_cannot_be_sent_does_not_stop_the_rest(
        redis, start_registry, start_gateway, tmp_path):
    """A record in the spool whose frame is sound but whose payload has no
    usable id (a file written by something else: the writer's own records
    always have one) can never be sent.  Before, the writer dropped the
    link for it on every connection ("send failed", again and again):
    neither the records after it nor any new one reached the stream, and
    the spool only grew.  It is dropped (logged with its offset, counted
    as dropped) and everything else goes on, exactly once."""
    rs = redis()
    reg = start_registry("up1")
    spool = tmp_path / "bad.spool"
    inst = b"gw-bad"
    hdr = b"PCAUDSP2" + struct.pack("<II", 1001, 0)
    hdr += struct.pack("<I", zlib.crc32(hdr)) + b"\0" * 12

    def good(n):
        return _frame(b"PCR2", _payload([
            ("time", b"1700000000000"), ("id", inst + b"/1001-%d" % n),
            ("request_id", b"good-%d" % n)]))
    bad = [_frame(b"PCR2", _payload([("time", b"1"),
                                     ("request_id", b"no-id")])),
           _frame(b"PCR1", _payload([("time", b"1"), ("id", b"x/y-z"),
                                     ("request_id", b"bad-id")])),
           _frame(b"PCR2", b"not\0a payload")]
    spool.write_bytes(hdr + good(1) + bad[0] + good(2) + bad[1] + bad[2] +
                      good(3))
    cfg = gateway_config(upstream(reg, default=True),
                         instance_id=inst.decode(),
                         audit=audit_cfg(rs.port, spool))
    gw = start_gateway(cfg)
    s = requests.Session()
    s.trust_env = False
    ids = [s.get(gw.url + "/v2/", timeout=10).headers["X-Request-Id"]
           for _ in range(5)]
    s.close()
    want = ["good-1", "good-2", "good-3"] + ids
    wait_for(lambda: stream_request_ids(rs) == want, timeout=60,
             what="the records around the unsendable ones in the stream")
    wait_for(lambda: spool_size(spool) == HDR, timeout=30,
             what="spool released")
    assert gw.stop() == 0
    log = gw.log_text()
    # Logged at most once a second; the three are counted.
    assert "audit unsendable_record offset=%d " % (
        HDR + len(good(1))) in log, log[-3000:]
    assert "dropped=3" in log
    assert stream_request_ids(rs) == want
