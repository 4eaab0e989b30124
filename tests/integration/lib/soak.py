"""Helpers for the soak test (test_soak.py): what a hostile client needs
that the other helpers do not give (a raw connection from a chosen
loopback source address, reading only a response's head), bulk blob
pushes straight to a registry, and a sampler that reads a process's
resources from /proc and a cache directory's sizes from disk.

Nothing here asserts: the test decides what is out of bounds.  Every
loop is bounded in count and time, every socket has a timeout.
"""

import hashlib
import os
import socket
import threading
import time
import urllib.parse

import requests

from . import rawhttp

MIB = 1024 * 1024


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


# -- hostile client connections -------------------------------------------

class SourceConn(rawhttp.RawConn):
    """rawhttp.RawConn whose socket is bound to `source` (a 127.0.0.0/8
    address) before it connects, so that the gateway sees the hostile
    traffic come from a client address of its own."""

    def __init__(self, host, port, source, timeout=10.0):
        # Same state as RawConn.__init__, which connects before a bind
        # could happen.
        self.host = host
        self.port = port
        self.timeout = timeout
        self.buf = b""
        self.eof = False
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            self.sock.bind((source, 0))
            self.sock.settimeout(timeout)
            self.sock.connect((host, port))
        except BaseException:
            self.sock.close()
            raise


def read_head(conn, timeout=10.0, limit=65536):
    """Read a response head (status line and fields) from a RawConn and
    stop there, leaving the body unread.  Returns the status code.
    Raises rawhttp.PeerClosed / ResponseTimeout like RawConn does, and
    ValueError for a head that is not HTTP or larger than `limit`."""
    deadline = time.monotonic() + timeout
    while b"\r\n\r\n" not in conn.buf:
        if len(conn.buf) > limit:
            raise ValueError("response head larger than %d" % limit)
        if not conn._fill(deadline):
            raise rawhttp.PeerClosed("closed before the end of the head",
                                     conn.buf)
    line = conn.buf.split(b"\r\n", 1)[0]
    parts = line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or \
            not parts[1].isdigit():
        raise ValueError("bad status line %r" % line[:200])
    return int(parts[1])


def abortive_close(conn):
    """Close with SO_LINGER 0: the peer gets an RST, as when a client
    process dies mid-download."""
    if conn.sock is not None:
        try:
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                 b"\x01\x00\x00\x00\x00\x00\x00\x00")
        except OSError:
            pass
    conn.close()


# -- registry set-up --------------------------------------------------------

def push_blob(session, reg_url, repo, data, timeout=120):
    """Monolithic upload straight to a docker-registry; returns the
    digest.  Raises RuntimeError on any unexpected status."""
    d = sha256(data)
    r = session.post("%s/v2/%s/blobs/uploads/" % (reg_url, repo),
                     timeout=timeout)
    if r.status_code != 202:
        raise RuntimeError("upload start: %d %s" % (r.status_code, r.text))
    loc = urllib.parse.urljoin(reg_url + "/", r.headers["Location"])
    r = session.put(loc + ("&" if "?" in loc else "?") + "digest=" + d,
                    data=data,
                    headers={"Content-Type": "application/octet-stream"},
                    timeout=timeout)
    if r.status_code != 201:
        raise RuntimeError("upload of %s: %d %s" % (d, r.status_code,
                                                     r.text))
    return d


def push_blobs(reg_url, repo, make_blob, count, workers=2):
    """Push `count` blobs, the i-th being make_blob(i) (bytes), with a few
    threads.  Returns [(digest, size)] in index order."""
    out = [None] * count
    errors = []
    lock = threading.Lock()
    nxt = [0]

    def work():
        s = requests.Session()
        s.trust_env = False
        try:
            while not errors:
                with lock:
                    i = nxt[0]
                    if i >= count:
                        return
                    nxt[0] += 1
                data = make_blob(i)
                out[i] = (push_blob(s, reg_url, repo, data), len(data))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
        finally:
            s.close()

    threads = [threading.Thread(target=work, daemon=True)
               for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    if errors:
        raise errors[0]
    if any(t.is_alive() for t in threads) or None in out:
        raise RuntimeError("blob push did not finish")
    return out


# -- resource probes ---------------------------------------------------------

def proc_status(pid):
    """{"rss_kib": VmRSS, "threads": Threads} from /proc/PID/status."""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                out["rss_kib"] = int(line.split()[1])
            elif line.startswith("Threads:"):
                out["threads"] = int(line.split()[1])
    return out


def fd_count(pid):
    """Open file descriptors of PID."""
    return len(os.listdir("/proc/%d/fd" % pid))


def tree_usage(path):
    """(files, bytes) of the regular files under `path`, recursively;
    files that vanish while being counted are skipped.  (0, 0) when
    `path` does not exist."""
    files = size = 0
    stack = [path]
    while stack:
        d = stack.pop()
        try:
            it = os.scandir(d)
        except (FileNotFoundError, NotADirectoryError):
            continue
        with it:
            for e in it:
                try:
                    if e.is_dir(follow_symlinks=False):
                        stack.append(e.path)
                    elif e.is_file(follow_symlinks=False):
                        files += 1
                        size += e.stat(follow_symlinks=False).st_size
                except FileNotFoundError:
                    continue
    return files, size


class Sampler(threading.Thread):
    """Calls probe() (a dict of figures) every `interval` seconds until
    stop() or `deadline` (monotonic), at most `max_samples` times.  Each
    sample is the probe's dict plus "t" (seconds since start).  A probe
    that raises ends the sampling and is kept in .error."""

    def __init__(self, probe, interval, deadline, max_samples):
        super().__init__(daemon=True, name="soak-sampler")
        self.probe = probe
        self.interval = interval
        self.deadline = deadline
        self.max_samples = max_samples
        self.samples = []
        self.error = None
        self._stop_ev = threading.Event()
        self.t0 = time.monotonic()

    def sample_once(self):
        s = self.probe()
        s["t"] = time.monotonic() - self.t0
        self.samples.append(s)
        return s

    def run(self):
        while not self._stop_ev.is_set() and \
                len(self.samples) < self.max_samples and \
                time.monotonic() < self.deadline:
            try:
                self.sample_once()
            except Exception as e:  # noqa: BLE001 - kept for the report
                self.error = e
                return
            self._stop_ev.wait(self.interval)

    def stop(self):
        self._stop_ev.set()


def sample_table(samples, columns, every=1):
    """Text table of every `every`-th sample (the last one always), one
    column per name in `columns`."""
    head = "%7s" % "t(s)" + "".join("%14s" % c for c in columns)
    rows = [head]
    for i, s in enumerate(samples):
        if i % every and i != len(samples) - 1:
            continue
        rows.append("%7.1f" % s["t"] + "".join(
            "%14s" % (s.get(c, "?"),) for c in columns))
    return "\n".join(rows)
