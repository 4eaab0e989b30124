"""A TEST DOUBLE: a misbehaving network between a portcullis process and
a real redis-server, for races the real server alone cannot produce.

Every byte is relayed as it comes, except that a test can
- hold(marker): keep back what Redis sends on each connection whose
  client has sent `marker` (e.g. b"portcullis:revoked", the re-sync's
  HGETALL), until release(): a reply that is late, not lost.  A
  connection holding keeps holding after hold(None), which only stops
  new ones from starting to;
- refuse(marker): close each connection whose client sends `marker`
  (e.g. b"SUBSCRIBE"), now and until refuse(None): a subscriber link
  that cannot come back while command links can;
- kill(marker): close the connections that have sent `marker`.

It runs in threads of the test process on 127.0.0.1, one per direction
of each connection; what it records of each client is bounded (64 KiB);
stop() closes every socket and joins every thread with a deadline."""

import socket
import threading

KEEP = 64 << 10


class _Conn:
    def __init__(self, c, s):
        self.c = c
        self.s = s
        self.up = bytearray()
        self.held = bytearray()
        self.down_bytes = 0
        self.closed = False


class HoldingProxy:
    def __init__(self, target):
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.lock = threading.Lock()
        self.conns = []
        self.threads = []
        self.hold_marker = None
        self.refuse_marker = None
        self.closing = False
        self.ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(64)
        self.ls.settimeout(0.2)
        self.port = self.ls.getsockname()[1]
        self.host = "127.0.0.1:%d" % self.port
        self._start(self._accept)

    def _start(self, fn, *args):
        t = threading.Thread(target=fn, args=args, daemon=True)
        self.threads.append(t)
        t.start()

    def _accept(self):
        while not self.closing:
            try:
                c, _ = self.ls.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                s = socket.create_connection(self.target, timeout=5)
            except OSError:
                c.close()
                continue
            c.settimeout(None)
            s.settimeout(None)
            conn = _Conn(c, s)
            with self.lock:
                self.conns.append(conn)
            self._start(self._up, conn)
            self._start(self._down, conn)

    def _close(self, conn):
        conn.closed = True
        for x in (conn.c, conn.s):
            try:
                x.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _up(self, conn):
        while True:
            try:
                d = conn.c.recv(65536)
            except OSError:
                d = b""
            if not d:
                break
            with self.lock:
                if len(conn.up) < KEEP:
                    conn.up += d[:KEEP - len(conn.up)]
                if self.refuse_marker is not None and \
                        self.refuse_marker in conn.up:
                    self._close(conn)
                    break
            try:
                conn.s.sendall(d)
            except OSError:
                break
        self._close(conn)

    def _down(self, conn):
        while True:
            try:
                d = conn.s.recv(65536)
            except OSError:
                d = b""
            if not d:
                break
            with self.lock:
                conn.down_bytes += len(d)
                if conn.held or (self.hold_marker is not None and
                                 self.hold_marker in conn.up):
                    conn.held += d
                    continue
                try:
                    conn.c.sendall(d)
                except OSError:
                    break
        self._close(conn)

    def hold(self, marker):
        with self.lock:
            self.hold_marker = marker

    def held(self, marker):
        """Bytes held back on live connections that sent marker."""
        with self.lock:
            return sum(len(c.held) for c in self.conns
                       if not c.closed and marker in c.up)

    def held_conns(self, marker):
        """Live connections that sent marker and have bytes held back."""
        with self.lock:
            return sum(1 for c in self.conns
                       if not c.closed and marker in c.up and c.held)

    def release(self):
        with self.lock:
            self.hold_marker = None
            for c in self.conns:
                if c.held and not c.closed:
                    try:
                        c.c.sendall(bytes(c.held))
                    except OSError:
                        pass
                c.held = bytearray()

    def refuse(self, marker):
        with self.lock:
            self.refuse_marker = marker
            if marker is not None:
                for c in self.conns:
                    if marker in c.up:
                        self._close(c)

    def kill(self, marker):
        with self.lock:
            for c in self.conns:
                if marker in c.up:
                    self._close(c)

    def stop(self):
        self.closing = True
        with self.lock:
            for c in self.conns:
                self._close(c)
                for x in (c.c, c.s):
                    x.close()
        self.ls.close()
        for t in self.threads:
            t.join(timeout=5)
