"""The splice's pipe size (src/proxy_splice.c): four
buffers.high_watermark, at most fs.pipe-max-size.  A pipe of one
watermark left the 1 GiB pass-through pull level with nginx proxy_pass;
four pull it ahead (README, "Benchmarks").  The size is bounded by
fs.pipe-max-size even where the kernel would grant more (root), and the
body through the larger pipe is whole.

The upstream is the named test double lib/lying_upstream.py (a
misbehaving registry; here it only serves blobs and counts requests)."""

import hashlib
import os
import re

import pytest

from lib import rawhttp
from lib.gateway import gateway_config
from lib.lying_upstream import LyingUpstream

MIB = 1 << 20


@pytest.fixture
def liar():
    up = LyingUpstream()
    try:
        yield up
    finally:
        up.stop()


def pipe_max():
    with open("/proc/sys/fs/pipe-max-size") as f:
        return int(f.read())


def gw_cfg(liar, watermark):
    cfg = gateway_config(
        {"name": "liar", "url": liar.url, "prefix": "liar",
         "hosts": [liar.host]},
        buffers={"high_watermark": watermark, "splice": True})
    cfg["log"] = {"level": "debug"}     # the splice's start: its pipe
    return cfg


def pull(gw, d, size):
    with rawhttp.RawConn("127.0.0.1", gw.port, timeout=60) as c:
        c.send_request("GET", "/v2/liar/app/blobs/" + d)
        r = c.read_response(timeout=60)
    assert r.status == 200, r
    assert len(r.body) == size
    assert "sha256:" + hashlib.sha256(r.body).hexdigest() == d
    return r


def pipes(gw):
    return [int(p) for p in
            re.findall(r"proxy splice start remaining=\d+ pipe=(\d+)",
                       gw.log_text())]


def test_pipe_is_four_watermarks(liar, start_gateway):
    wm = 65536
    if 4 * wm > pipe_max():
        pytest.skip("fs.pipe-max-size below 256 KiB")
    data = os.urandom(3 * MIB + 4321)
    d = liar.add_blob(data)
    gw = start_gateway(gw_cfg(liar, wm))
    pull(gw, d, len(data))
    # The kernel grants what was asked (a power of two pages), so the
    # log says the size that was asked for.
    assert pipes(gw) == [4 * wm], gw.log_text()[-2000:]


def test_pipe_is_bounded_by_pipe_max_size(liar, start_gateway):
    # Four watermarks of 1 MiB would be 4 MiB; the pipe stays at
    # fs.pipe-max-size (root, as the suite may run, could get more).
    wm = MIB
    cap = pipe_max()
    data = os.urandom(6 * MIB + 17)
    d = liar.add_blob(data)
    gw = start_gateway(gw_cfg(liar, wm))
    pull(gw, d, len(data))
    got = pipes(gw)
    assert len(got) == 1, gw.log_text()[-2000:]
    assert got[0] <= cap and got[0] < 4 * wm, (got, cap)
    if cap <= 4 * wm:
        assert got[0] == cap, (got, cap)
