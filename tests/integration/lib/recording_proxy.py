"""A TEST DOUBLE: a recording TCP pass-through ("wire tap") put between
the gateway and a real docker-registry upstream.

It changes nothing: every byte is relayed as it comes, both ways.  It
keeps a copy of what the gateway sent (request heads and bodies, in
order, per connection) so a test can assert what reached the upstream on
the wire, which the registry's own logs do not show (its access log has no
request header but the user agent).  That is what lets a test prove that
a credential a client sent the gateway was never forwarded upstream.

It runs in threads of the test process on 127.0.0.1; each direction of
each connection is one thread.  What it keeps is bounded (`max_bytes`,
beyond which recording stops and `truncated` is set, so an assertion on a
partial record cannot pass silently); stop() closes every socket and joins
every thread with a deadline.

    tap = RecordingProxy(registry.host)
    upstream(registry, url=tap.url, ...)
    ...
    tap.sent()            # bytes the gateway sent upstream, all connections
    tap.request_lines()   # ["GET /v2/ HTTP/1.1", ...]
    tap.stop()
"""

import re
import socket
import threading

from .util import HarnessError

_REQ_LINE = re.compile(rb"(?m)^([A-Z]+) (\S+) HTTP/1\.[01]\r$")


class RecordingProxy:
    """Listens on 127.0.0.1:<port> and relays each connection to
    `target` ("host:port").  Attributes: port, host, url."""

    def __init__(self, target, max_bytes=256 << 20):
        host, port = target.rsplit(":", 1)
        self.target = (host.strip("[]"), int(port))
        self.max_bytes = max_bytes
        self.truncated = False
        self.lock = threading.Lock()
        self.records = []       # one bytearray per connection, gateway->up
        self.total = 0
        self.socks = []
        self.threads = []
        self.closing = False
        self.ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(64)
        # accept() wakes up now and then to see `closing`: closing a
        # listening socket does not interrupt a thread blocked in it.
        self.ls.settimeout(0.5)
        self.port = self.ls.getsockname()[1]
        self.host = "127.0.0.1:%d" % self.port
        self.url = "http://" + self.host
        t = threading.Thread(target=self._accept, daemon=True,
                             name="recording-proxy-accept")
        t.start()
        self.threads.append(t)

    def _accept(self):
        while not self.closing:
            try:
                c, _ = self.ls.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            c.settimeout(None)
            try:
                u = socket.create_connection(self.target, timeout=10)
                u.settimeout(None)
            except OSError:
                c.close()
                continue
            rec = bytearray()
            with self.lock:
                if self.closing:
                    c.close()
                    u.close()
                    return
                self.socks += [c, u]
                self.records.append(rec)
                for src, dst, keep in ((c, u, rec), (u, c, None)):
                    t = threading.Thread(target=self._pump,
                                         args=(src, dst, keep), daemon=True,
                                         name="recording-proxy-pump")
                    t.start()
                    self.threads.append(t)

    def _pump(self, src, dst, keep):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if keep is not None:
                    with self.lock:
                        room = self.max_bytes - self.total
                        if room < len(data):
                            self.truncated = True
                        keep += data[:max(room, 0)]
                        self.total += min(len(data), max(room, 0))
                dst.sendall(data)
        except OSError:
            pass
        finally:
            # Pass the end on: a half-close stays a half-close.
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def sent(self):
        """Everything the gateway sent upstream so far, connections in
        the order they were accepted.  Raises when recording was cut at
        max_bytes: a partial record proves nothing."""
        with self.lock:
            if self.truncated:
                raise HarnessError("recording proxy passed max_bytes=%d"
                                   % self.max_bytes)
            return b"\n".join(bytes(r) for r in self.records)

    def request_lines(self):
        """The request lines seen ("GET /v2/x/manifests/y HTTP/1.1")."""
        return [m.group(0).rstrip(b"\r").decode("latin-1")
                for m in _REQ_LINE.finditer(self.sent())]

    def stop(self):
        with self.lock:
            self.closing = True
            socks = list(self.socks)
        try:
            self.ls.close()
        except OSError:
            pass
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        for t in self.threads:
            t.join(timeout=10)
