"""A TEST DOUBLE of a registry that implements the OCI 1.1 referrers API
and pages its answer ("paging referrers upstream").

Debian's docker-registry 2.8 has no referrers API at all, so this small
HTTP server stands in for a registry that has one and answers a long
referrers list in pages, each with `Link: <...>; rel="next"` as the
distribution spec allows.  It answers nothing else but `GET /v2/` (200,
anonymous).  How the next page is linked is what a test varies:

    "path"      </v2/<repo>/referrers/<digest>?page=N> (after the first
                page with a rel="prev" link before it, in the same field)
    "query"     <?page=N>
    "absolute"  <http://127.0.0.1:<own port>/v2/...?page=N>
    "elsewhere" <http://127.0.0.1:<other_port>/v2/...?page=N> (another
                origin, which the gateway must never reach)
    "otherrepo" </v2/other/referrers/<digest>?page=N>
    "loop"      always the first page again, with a Link

`extra_query` (default "") is appended to every next link's query, e.g.
"&ns=127.0.0.1:P": what a hostile upstream may put there.
`plain404_on` (default None) names a query parameter that makes it
answer a plain-text 404, as a registry without the API does.

It runs in a thread of the test process on 127.0.0.1 and records every
request's path with its query.

    up = PagingReferrers(page_size=2, link="path")
    up.set_referrers("app", subject, [descriptor, ...])
    up.paths()          # every request so far, "/v2/app/referrers/...?page=1"
    up.stop()
"""

import http.server
import json
import threading
import urllib.parse

from .util import free_port

IDX = "application/vnd.oci.image.index.v1+json"


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet
        pass

    def _send(self, status, ctype, body, extra=()):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802
        up = self.server.up
        with up.lock:
            up.seen.append(self.path)
        path, _, query = self.path.partition("?")
        if path == "/v2/":
            self._send(200, "application/json", b"{}")
            return
        parts = path.split("/referrers/")
        with up.lock:
            refs = up.lists.get((parts[0][len("/v2/"):], parts[-1])) \
                if len(parts) == 2 else None
        if refs is None:
            self._send(404, "application/json",
                       b'{"errors":[{"code":"NAME_UNKNOWN",'
                       b'"message":"unknown"}]}')
            return
        q = urllib.parse.parse_qs(query)
        if up.plain404_on and up.plain404_on in q:
            # What registry 2.8 answers for an endpoint it lacks.
            self._send(404, "text/plain; charset=utf-8",
                       b"404 page not found\n")
            return
        page = int(q.get("page", ["0"])[0])
        size = up.page_size
        chunk = refs[page * size:(page + 1) * size]
        extra = []
        if (page + 1) * size < len(refs) or up.link == "loop":
            n = 0 if up.link == "loop" else page + 1
            link = '<%s>; rel="next"' % up.target(path, parts[-1], n)
            if page > 0 and up.link == "path":
                # Two links in one field, the next one second.
                link = '<%s?page=%d>; rel="prev", %s' % (path, page - 1,
                                                         link)
            extra.append(("Link", link))
        body = json.dumps({"schemaVersion": 2, "mediaType": IDX,
                           "manifests": chunk}).encode()
        self._send(200, IDX, body, extra)


class PagingReferrers:
    """The test double described in the module docstring.  Attributes:
    port, host ("127.0.0.1:P"), url, name."""

    def __init__(self, page_size=2, link="path", other_port=None):
        self.lock = threading.Lock()
        self.lists = {}
        self.seen = []
        self.page_size = page_size
        self.link = link
        self.other_port = other_port
        self.extra_query = ""
        self.plain404_on = None
        self.port = free_port()
        self.host = "127.0.0.1:%d" % self.port
        self.url = "http://" + self.host
        self.name = "pager"
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port),
                                                     _Handler)
        self.httpd.daemon_threads = True
        self.httpd.up = self
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       daemon=True)
        self.thread.start()

    def target(self, path, digest, page):
        q = "?page=%d%s" % (page, self.extra_query)
        if self.link == "query":
            return q
        if self.link == "absolute":
            return self.url + path + q
        if self.link == "elsewhere":
            return "http://127.0.0.1:%d%s%s" % (self.other_port, path, q)
        if self.link == "otherrepo":
            return "/v2/other/referrers/%s%s" % (digest, q)
        return path + q

    def set_referrers(self, repo, subject, descriptors):
        with self.lock:
            self.lists[(repo, subject)] = list(descriptors)

    def paths(self):
        with self.lock:
            return list(self.seen)

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
