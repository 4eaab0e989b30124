"""docker-registry (Debian's build of distribution 2.8) as a test upstream:
plain, or protected by auth.token against a TokenIssuer.

Access log: distribution wraps its handler in gorilla's
CombinedLoggingHandler writing to stdout unless log.accesslog.disabled, so
stdout goes to <dir>/access.log and the application log (stderr) to
<dir>/registry.log.  access_log() parses the combined-format lines.
"""

import os
import re
import uuid
import urllib.parse

import requests

from .token_issuer import TokenIssuer
from .util import HarnessError, ManagedProcess, free_port, safe_env, wait_for

REGISTRY_BIN = os.environ.get("DOCKER_REGISTRY_BIN", "/usr/bin/docker-registry")

# 127.0.0.1 - - [28/Nov/2023:14:26:00 +0000] "GET /v2/ HTTP/1.1" 200 2 "" "ua"
_ACCESS_RE = re.compile(
    r'^(?P<remote>\S+) \S+ (?P<user>\S+) \[(?P<time>[^\]]+)\] '
    r'"(?P<method>[A-Z]+) (?P<uri>\S+) (?P<proto>[^"]+)" (?P<status>\d{3}) '
    r'(?P<size>\d+|-)(?: "(?P<referer>[^"]*)" "(?P<ua>[^"]*)")?')

_SYNC_REPO = "harness-sync"


def _session():
    s = requests.Session()
    s.trust_env = False   # never use a proxy from the environment
    return s


class Registry:
    """A running docker-registry.  Attributes: name, port, url
    ("http://127.0.0.1:P"), host ("127.0.0.1:P"), root (storage dir), dir,
    log_path (application log), access_log_path, config_path, pid, and for
    auth="token" also issuer (TokenIssuer: .username, .password,
    .requests()) and service."""

    def __init__(self, workdir, name="up1", auth=None, extra_config=None,
                 tls=None):
        self.name = name
        self.dir = str(workdir)
        os.makedirs(self.dir, exist_ok=True)
        self.root = os.path.join(self.dir, "storage")
        os.makedirs(self.root, exist_ok=True)
        self.port = free_port()
        self.host = "127.0.0.1:%d" % self.port
        # tls: {"cert": PEM chain, "key": PEM key, "ca": PEM CA to trust}
        self.tls = tls
        self.url = ("https://" if tls else "http://") + self.host
        self.log_path = os.path.join(self.dir, "registry.log")
        self.access_log_path = os.path.join(self.dir, "access.log")
        self.config_path = os.path.join(self.dir, "config.yml")
        self.issuer = None
        self.service = None
        self._marker = 0
        self.http = _session()
        if tls:
            self.http.verify = tls["ca"]
        if auth not in (None, "token"):
            raise ValueError("auth must be None or 'token'")
        if auth == "token":
            self.issuer = TokenIssuer(os.path.join(self.dir, "issuer"))
            self.service = "test-registry-%s" % name
        try:
            with open(self.config_path, "w") as f:
                f.write(self._config_yaml(extra_config or ""))
            self.proc = ManagedProcess(
                [REGISTRY_BIN, "serve", self.config_path],
                self.access_log_path, self.log_path, env=safe_env(),
                name="docker-registry[%s]" % name)
            self.pid = self.proc.pid
            self.proc.wait_ready(self._ready, timeout=30)
        except Exception:
            self.stop()
            raise

    def _config_yaml(self, extra):
        auth = ""
        if self.issuer:
            auth = ("auth:\n  token:\n    realm: %s\n    service: %s\n"
                    "    issuer: %s\n    rootcertbundle: %s\n" % (
                        self.issuer.realm, self.service, self.issuer.issuer,
                        self.issuer.cert_path))
        tls = ""
        if self.tls:
            tls = ("  tls:\n    certificate: %s\n    key: %s\n" % (
                self.tls["cert"], self.tls["key"]))
        return ("version: 0.1\n"
                "log:\n  level: info\n  formatter: text\n"
                "  accesslog:\n    disabled: false\n"
                "storage:\n  filesystem:\n    rootdirectory: %s\n"
                "  delete:\n    enabled: true\n"
                "  maintenance:\n    uploadpurging:\n      enabled: false\n"
                "http:\n  addr: %s\n  secret: portcullis-test-secret\n"
                "%s"
                "  headers:\n    X-Content-Type-Options: [nosniff]\n"
                "health:\n  storagedriver:\n    enabled: false\n"
                "%s%s" % (self.root, self.host, tls, auth, extra))

    def _ready(self):
        r = self.http.get(self.url + "/v2/", timeout=2)
        return r.status_code in (200, 401)

    # -- access log ------------------------------------------------------

    def _raw_entries(self):
        out = []
        try:
            with open(self.access_log_path, encoding="utf-8",
                      errors="replace") as f:
                for line in f:
                    m = _ACCESS_RE.match(line)
                    if not m:
                        continue
                    uri = m.group("uri")
                    sp = urllib.parse.urlsplit(uri)
                    out.append({
                        "method": m.group("method"), "uri": uri,
                        "path": sp.path, "query": sp.query,
                        "status": int(m.group("status")),
                        "size": 0 if m.group("size") == "-"
                        else int(m.group("size")),
                        "user": m.group("user"),
                        "user_agent": m.group("ua"), "time": m.group("time"),
                    })
        except FileNotFoundError:
            pass
        return out

    def sync(self):
        """Make sure every request answered so far is in the access log:
        send a sentinel request after them and wait until it is logged
        (the line is written when the handler returns, just after the
        client may already hold its response)."""
        token = uuid.uuid4().hex
        self.http.get("%s/v2/%s/tags/list?sync=%s" % (
            self.url, _SYNC_REPO, token), timeout=5)
        wait_for(lambda: any(token in e["uri"] for e in self._raw_entries()),
                 timeout=10, what="registry %s access log sync" % self.name)

    def mark(self):
        """A marker for access_log(since=...): requests logged so far."""
        self.sync()
        return len(self._raw_entries())

    def clear_log_marker(self):
        """Make later access_log() calls (without since) return only
        requests made after now.  Returns the marker."""
        self._marker = self.mark()
        return self._marker

    def access_log(self, since=None, sync=True):
        """Parsed access-log entries, oldest first: dicts with method, path
        (no query), query, uri (path?query as sent), status, size, user,
        user_agent.  Harness sentinel requests are left out.  `since` is a
        marker from mark(); default is the last clear_log_marker()."""
        if sync:
            self.sync()
        start = self._marker if since is None else since
        return [e for e in self._raw_entries()[start:]
                if not e["path"].startswith("/v2/%s/" % _SYNC_REPO)]

    def log_text(self):
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    # -- direct API helpers (bypass any gateway) --------------------------

    def token_for(self, scope):
        """A bearer token for `scope` from this registry's issuer (None for
        a registry without auth)."""
        if not self.issuer:
            return None
        r = self.http.get(self.issuer.realm, params={
            "service": self.service, "scope": scope},
            auth=(self.issuer.username, self.issuer.password), timeout=10)
        r.raise_for_status()
        return r.json()["token"]

    def _headers(self, repo, actions="pull", extra=None):
        h = dict(extra or {})
        if self.issuer:
            h["Authorization"] = "Bearer " + self.token_for(
                "repository:%s:%s" % (repo, actions))
        return h

    def get_manifest(self, repo, ref, accept=None):
        """(response) for GET of a manifest straight from this registry."""
        acc = accept or ", ".join(MANIFEST_TYPES)
        return self.http.get("%s/v2/%s/manifests/%s" % (self.url, repo, ref),
                             headers=self._headers(repo, extra={
                                 "Accept": acc}), timeout=30)

    def get_blob(self, repo, digest):
        return self.http.get("%s/v2/%s/blobs/%s" % (self.url, repo, digest),
                             headers=self._headers(repo), timeout=60)

    def has_blob(self, repo, digest):
        r = self.http.head("%s/v2/%s/blobs/%s" % (self.url, repo, digest),
                           headers=self._headers(repo), timeout=30)
        return r.status_code == 200

    def tags(self, repo):
        r = self.http.get("%s/v2/%s/tags/list" % (self.url, repo),
                          headers=self._headers(repo), timeout=30)
        if r.status_code != 200:
            return []
        return r.json().get("tags") or []

    def stop(self):
        rc = None
        if getattr(self, "proc", None) is not None:
            rc = self.proc.stop()
        if self.issuer is not None:
            self.issuer.stop()
        return rc


MANIFEST_TYPES = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
]
