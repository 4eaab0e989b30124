#!/usr/bin/python3
"""A deliberately small Python stand-in for the gateway's proxy contract,
used only to check that the integration tests themselves are right (run the
suite with PORTCULLIS_BIN=tests/integration/lib/refgw.py).  It is not the
product: no cache, no policy, bodies buffered in memory.

Implements: serve -c CONFIG; /healthz; GET /v2/; routing by prefix, by
containerd's ns= (stripped), and the default upstream; docker_hub library/
mapping; upstream token auth with credentials_file and a token cache;
Location rewriting to the gateway; one log line per request on stderr."""

import base64
import http.client
import json
import re
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
       "te", "trailer", "transfer-encoding", "upgrade", "host",
       "authorization", "content-length"}
NAME_RE = re.compile(r"^(?P<name>.+?)/(?P<kind>manifests|blobs|tags|referrers)"
                     r"(?P<tail>/.*)?$")


def oci_error(code, msg):
    return json.dumps({"errors": [{"code": code, "message": msg}]}).encode()


class Upstream:
    def __init__(self, d):
        self.name = d["name"]
        u = urllib.parse.urlsplit(d["url"])
        self.hostport = u.netloc
        self.prefix = d.get("prefix") or ""
        self.default = bool(d.get("default"))
        self.docker_hub = bool(d.get("docker_hub"))
        self.hosts = list(d.get("hosts") or [])
        self.creds = None
        if d.get("credentials_file"):
            with open(d["credentials_file"]) as f:
                self.creds = f.read().strip()
        self.tokens = {}
        self.lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def _send(self, status, body=b"", ctype="application/json", extra=()):
        self.send_response(status)
        self.send_header("Docker-Distribution-Api-Version", "registry/2.0")
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            out = b""
            while True:
                n = int(self.rfile.readline().split(b";")[0], 16)
                if n == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(n)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else None

    def _route(self, rest, ns):
        ups = self.server.upstreams
        first, _, remainder = rest.partition("/")
        m = NAME_RE.match(remainder) if remainder else None
        for u in ups:
            if u.prefix and first == u.prefix and m:
                return u, remainder, u.prefix
        chosen = None
        if ns:
            chosen = next((u for u in ups if ns in u.hosts), None)
        if chosen is None:
            chosen = next((u for u in ups if u.default), None)
        return chosen, rest, None

    def _token(self, up, chal):
        params = dict(re.findall(r'(\w+)="([^"]*)"', chal))
        q = [("service", params.get("service", ""))]
        for s in params.get("scope", "").split(" "):
            if s:
                q.append(("scope", s))
        r = urllib.parse.urlsplit(params["realm"])
        c = http.client.HTTPConnection(r.netloc, timeout=10)
        h = {}
        if up.creds:
            h["Authorization"] = "Basic " + base64.b64encode(
                up.creds.encode()).decode()
        c.request("GET", r.path + "?" + urllib.parse.urlencode(q), headers=h)
        resp = c.getresponse()
        data = resp.read()
        c.close()
        if resp.status != 200:
            return None
        j = json.loads(data)
        return j.get("token") or j.get("access_token")

    def _forward(self, up, method, path, headers, body, key):
        c = http.client.HTTPConnection(up.hostport, timeout=10)
        c.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        c.putheader("Host", up.hostport)
        for k, v in headers:
            c.putheader(k, v)
        with up.lock:
            tok = up.tokens.get(key)
        if tok:
            c.putheader("Authorization", "Bearer " + tok)
        c.putheader("Content-Length", str(len(body or b"")))
        c.endheaders(body or b"")
        return c, c.getresponse()

    def _handle(self):
        t0 = time.time()
        sp = urllib.parse.urlsplit(self.path)
        if sp.path == "/healthz":
            return self._send(200, b"ok", "text/plain")
        if sp.path in ("/v2", "/v2/"):
            return self._send(200, b"{}")
        if not sp.path.startswith("/v2/"):
            return self._send(404, oci_error("NOT_FOUND", "no such path"))
        q = urllib.parse.parse_qsl(sp.query, keep_blank_values=True)
        ns = next((v for k, v in q if k == "ns"), None)
        q = [(k, v) for k, v in q if k != "ns"]
        up, rest, prefix = self._route(sp.path[4:], ns)
        if up is None:
            return self._send(404, oci_error("NAME_UNKNOWN", "no upstream"))
        # A cross-repository mount names the source in the client's view of
        # the namespace: strip the prefix and map library/ the same way.
        fixed = []
        for k, v in q:
            if k == "from":
                if prefix and v.startswith(prefix + "/"):
                    v = v[len(prefix) + 1:]
                if up.docker_hub and "/" not in v:
                    v = "library/" + v
            fixed.append((k, v))
        q = fixed
        m = NAME_RE.match(rest)
        if not m:
            return self._send(404, oci_error("NAME_INVALID", "bad path"))
        name = m.group("name")
        if up.docker_hub and "/" not in name:
            name = "library/" + name
        upath = "/v2/%s/%s%s" % (name, m.group("kind"), m.group("tail") or "")
        uq = urllib.parse.urlencode(q, safe=":/")
        upath_q = upath + ("?" + uq if uq else "")
        headers = [(k, v) for k, v in self.headers.items()
                   if k.lower() not in HOP]
        body = self._body()
        key = (name, self.command in ("GET", "HEAD"))
        try:
            c, resp = self._forward(up, self.command, upath_q, headers, body,
                                    key)
            if resp.status == 401 and up.creds and "bearer" in (
                    resp.getheader("WWW-Authenticate") or "").lower():
                resp.read()
                c.close()
                tok = self._token(up, resp.getheader("WWW-Authenticate"))
                if not tok:
                    self._log(up, upath_q, 502, t0)
                    return self._send(502, oci_error(
                        "UNAUTHORIZED", "upstream refused our credentials"))
                with up.lock:
                    up.tokens[key] = tok
                c, resp = self._forward(up, self.command, upath_q, headers,
                                        body, key)
        except OSError as e:
            self._log(up, upath_q, 502, t0)
            return self._send(502, oci_error("UNAVAILABLE", str(e)))
        data = resp.read() if self.command != "HEAD" else b""
        self.send_response(resp.status)
        seen_api = False
        for k, v in resp.getheaders():
            lk = k.lower()
            if lk in HOP - {"content-length"}:
                continue
            if lk == "content-length" and self.command != "HEAD":
                continue
            if lk == "docker-distribution-api-version":
                seen_api = True
            if lk == "location":
                v = self._rewrite_location(v, prefix)
            self.send_header(k, v)
        if not seen_api:
            self.send_header("Docker-Distribution-Api-Version",
                             "registry/2.0")
        if self.command != "HEAD":
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data:
            self.wfile.write(data)
        c.close()
        self._log(up, upath_q, resp.status, t0)

    def _rewrite_location(self, v, prefix):
        lu = urllib.parse.urlsplit(v)
        path = lu.path
        if prefix and path.startswith("/v2/"):
            path = "/v2/%s/%s" % (prefix, path[4:])
        host = self.headers.get("Host") or self.server.listen
        return urllib.parse.urlunsplit(("http", host, path, lu.query, ""))

    def _log(self, up, upath, status, t0):
        sys.stderr.write("req method=%s uri=%s upstream=%s upstream_uri=%s "
                         "status=%d ms=%d\n" % (
                             self.command, self.path, up.name, upath, status,
                             (time.time() - t0) * 1000))
        sys.stderr.flush()

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _handle


def main(argv):
    if len(argv) < 3 or argv[0] != "serve" or argv[1] != "-c":
        sys.stderr.write("usage: refgw.py serve -c CONFIG\n")
        return 2
    with open(argv[2]) as f:
        cfg = json.load(f)
    host, port = cfg["listen"]["address"].rsplit(":", 1)
    srv = ThreadingHTTPServer((host, int(port)), Handler)
    srv.daemon_threads = True
    srv.upstreams = [Upstream(u) for u in cfg.get("upstreams", [])]
    srv.listen = cfg["listen"]["address"]
    sys.stderr.write("refgw listening on %s\n" % srv.listen)
    sys.stderr.flush()
    srv.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
