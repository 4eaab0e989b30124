"""Reading the audit spool from tests, by its format (src/audit.h).

The spool is a ring: a 4096-byte header page ("PCAUDRG1", run, ring
size, released head, CRC-32), then records at file offset
4096 + (position - 4096) % size, each a 20-byte frame ("PCR3", payload
length, CRC-32C of the payload, the frame's own position) and a
"name\\0value\\0" payload, or a pad ("PCRP", 0, CRC-32C of its
position, its position): the next record starts the next lap.  The records not released are those from the
head to the first frame that does not validate.  An older spool is an
append log ("PCAUDSP1", 32-byte header, 12-byte PCR1/PCR2 frames):
old_log() writes one, for the conversion tests.
"""

import os
import struct
import zlib

DATA = 4096
FRAME = 20
RING_MAGIC = 0x33524350
PAD_MAGIC = 0x50524350

_CRC32C = []


def crc32c(data):
    """CRC-32C (Castagnoli), by table."""
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


def header(path):
    """(run, size, head) of a ring spool, or None when it is not one."""
    try:
        with open(path, "rb") as f:
            h = f.read(40)
    except OSError:
        return None
    if len(h) < 40 or h[:8] != b"PCAUDRG1":
        return None
    if zlib.crc32(h[:32]) != struct.unpack("<I", h[32:36])[0]:
        return None
    return struct.unpack("<QQQ", h[8:32])


def set_head(path, head):
    """Rewrite the ring header's head (as a stale one after a crash)."""
    run, size, _ = header(path)
    h = bytearray(b"PCAUDRG1" + struct.pack("<QQQ", run, size, head))
    h += struct.pack("<I", zlib.crc32(bytes(h)))
    with open(path, "r+b") as f:
        f.write(bytes(h))


def _read(data, size, pos, n):
    out = b""
    while n > 0:
        off = DATA + (pos - DATA) % size
        k = min(n, DATA + size - off)
        out += data[off:off + k]
        pos += k
        n -= k
    return out


def frames(path, pads=None):
    """[(position, payload)] of the records from the head on; the
    positions of the pads walked over appended to pads."""
    h = header(path)
    if h is None:
        return []
    _, size, head = h
    with open(path, "rb") as f:
        data = f.read()
    out, pos = [], head
    while pos + FRAME <= head + size:
        head_bytes = _read(data, size, pos, FRAME)
        if len(head_bytes) < FRAME:
            break                   # past what the file has allocated
        magic, n, crc, at = struct.unpack("<IIIQ", head_bytes)
        if magic == PAD_MAGIC and at == pos and n == 0 and \
                crc == crc32c(struct.pack("<Q", pos)):
            if pads is not None:
                pads.append(pos)
            pos += size - (pos - DATA) % size       # the next lap
            continue
        if magic != RING_MAGIC or at != pos or n == 0 or n > 4096 or \
                pos + FRAME + n > head + size:
            break
        payload = _read(data, size, pos + FRAME, n)
        if crc32c(payload) != crc:
            break
        out.append((pos, payload))
        pos += FRAME + n
    return out


def pending_bytes(path):
    """Bytes of records from the head on; -1 without a ring file."""
    if not os.path.exists(path) or header(path) is None:
        return -1
    return sum(FRAME + len(p) for _, p in frames(path))


def request_ids(path):
    """The request ids of the records from the head on, in order."""
    ids = []
    for _, payload in frames(path):
        parts = payload.split(b"\0")
        fields = dict(zip(parts[0::2], parts[1::2]))
        ids.append(fields[b"request_id"].decode())
    return ids


def old_log(path, payloads, run=1):
    """Write an append-log spool (the format before the ring) holding
    payloads, with PCR2 frames and no acknowledged mark."""
    h = bytearray(32)
    h[:8] = b"PCAUDSP1"
    struct.pack_into("<II", h, 8, run & 0xFFFFFFFF, run >> 32)
    struct.pack_into("<I", h, 16, zlib.crc32(bytes(h[:16])))
    body = b""
    for p in payloads:
        body += struct.pack("<III", 0x32524350, len(p), crc32c(p)) + p
    with open(path, "wb") as f:
        f.write(bytes(h) + body)


def ring(path, payloads, size, run=1, head=DATA, file_len=None):
    """Write a ring spool of `size` bytes of records with its head at
    `head`, holding payloads in "PCR3" frames from there on (across the
    wrap if they reach it).  The file is DATA + size bytes, or file_len
    (a ring the writer has not allocated to its end yet: ring_grow())."""
    h = b"PCAUDRG1" + struct.pack("<QQQ", run, size, head)
    h += struct.pack("<I", zlib.crc32(h))
    with open(path, "wb") as f:
        f.write(h)
        pos = head
        for p in payloads:
            rec = struct.pack("<IIIQ", RING_MAGIC, len(p), crc32c(p),
                              pos) + p
            assert pos + len(rec) <= head + size, "the ring is full"
            off = DATA + (pos - DATA) % size
            k = min(len(rec), DATA + size - off)
            f.seek(off)
            f.write(rec[:k])
            if k < len(rec):
                f.seek(DATA)
                f.write(rec[k:])
            pos += len(rec)
        f.truncate(file_len or DATA + size)
