"""A TEST DOUBLE: a quota-reporting upstream, put between the gateway and
a real docker-registry, that answers as Docker Hub does about its pull
quota.

Every GET and HEAD is relayed to the registry and its answer relayed back
(status, headers, body); answers to manifest requests gain Docker Hub's
headers `ratelimit-limit: LIMIT;w=21600` and `ratelimit-remaining:
N;w=21600`, where N is `remaining`, which each manifest GET lowers by one
(Docker Hub counts manifest GETs, not HEADs) and which the test may set.
It keeps the (method, path) of every request it received, so a test can
assert what reached the upstream.  Nothing else: no other method, no
auth.  It runs in threads of the test process on 127.0.0.1; stop()
shuts the server down and joins its thread.

    q = QuotaUpstream(registry.host, limit=100, remaining=4)
    upstream(registry, url=q.url, ...)
    q.requests        # [("GET", "/v2/proj/img/manifests/v1"), ...]
    q.stop()
"""

import http.client
import http.server
import threading

_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer",
        "upgrade", "proxy-connection", "content-length"}


class QuotaUpstream:
    def __init__(self, target, limit=100, remaining=100, window=21600):
        self.target = target
        self.limit = limit
        self.remaining = remaining
        self.window = window
        self.requests = []
        self.lock = threading.Lock()
        double = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _relay(self):
                path = self.path.split("?", 1)[0]
                manifest = "/manifests/" in path
                with double.lock:
                    double.requests.append((self.command, path))
                    if manifest and self.command == "GET" and \
                            double.remaining > 0:
                        double.remaining -= 1
                    rem = double.remaining
                hdrs = {k: v for k, v in self.headers.items()
                        if k.lower() in ("accept", "range", "user-agent")}
                c = http.client.HTTPConnection(*double._hp(), timeout=30)
                try:
                    c.request(self.command, self.path, headers=hdrs)
                    r = c.getresponse()
                    body = r.read()
                    self.send_response(r.status)
                    for k, v in r.getheaders():
                        if k.lower() not in _HOP:
                            self.send_header(k, v)
                    if manifest:
                        self.send_header("ratelimit-limit", "%d;w=%d" % (
                            double.limit, double.window))
                        self.send_header("ratelimit-remaining", "%d;w=%d" % (
                            rem, double.window))
                    self.send_header("Content-Length",
                                     r.getheader("Content-Length") or
                                     str(len(body)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(body)
                finally:
                    c.close()

            do_GET = _relay
            do_HEAD = _relay

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                                      Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.host = "127.0.0.1:%d" % self.port
        self.url = "http://" + self.host
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.1},
                                       daemon=True, name="quota-upstream")
        self.thread.start()

    def _hp(self):
        h, p = self.target.rsplit(":", 1)
        return h, int(p)

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)
