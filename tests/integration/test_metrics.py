"""GET /metrics and GET /readyz (issue 12, acceptance 1 and 2) against real
parts: docker-registry as the upstream, skopeo pulling and pushing through
the gateway, redis-server for the audit writer, secrets and revocation.

Every scrape is checked twice: by `promtool check metrics` (Debian's
prometheus package, installed by contrib/install-deps.sh) and by the strict
parser below, written from the text exposition format 0.0.4
(https://prometheus.io/docs/instrumenting/exposition_formats/), which fails
on any line the format does not allow and on histograms whose buckets are
not cumulative or do not end in +Inf = _count.  test_parser_refuses_*
shows that it can fail.  The counters are then read from the parsed
samples and compared before and after a scripted pull, a push, a policy
denial and a refused token; the 429 of rate limits is not wired yet.

/readyz gives its status to everyone but names the failed checks (Redis
addresses, an IdP's error) only to callers /metrics would answer, on
either listener; a refused /metrics is audited like any denial.
"""

import math
import os
import re
import shutil
import socket
import subprocess

import pytest
import requests

from lib.cache import cache_cfg, session
from lib.gateway import gateway_config, upstream
from lib.idfix import (get_token, issuer_cfg, make_keys, needs_idp,
                       start_idp, token_cfg)
from lib.lying_upstream import LyingUpstream
from lib.redis import RedisServer, entries_to_dicts
from lib.util import free_port, wait_for
from test_policy import pki  # noqa: F401 (the fixture: a CA, mTLS clients)

PROMTOOL = shutil.which("promtool")

# --- the exposition format, strictly ----------------------------------------

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r"[a-zA-Z_][a-zA-Z0-9_]*"
_TYPES = ("counter", "gauge", "histogram", "summary", "untyped")


class FormatError(Exception):
    pass


def _unescape(s, allowed, lineno):
    out, i = [], 0
    while i < len(s):
        c = s[i]
        if c == "\\":
            if i + 1 >= len(s) or s[i + 1] not in allowed:
                raise FormatError("line %d: bad escape in %r" % (lineno, s))
            out.append({"\\": "\\", "n": "\n", '"': '"'}[s[i + 1]])
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _float(s, lineno):
    if s in ("+Inf", "Inf"):
        return math.inf
    if s == "-Inf":
        return -math.inf
    if s == "NaN":
        return math.nan
    if not re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", s):
        raise FormatError("line %d: bad value %r" % (lineno, s))
    return float(s)


def _labels(s, lineno):
    """Parse the inside of {...}: name="value" pairs, comma separated, an
    optional trailing comma; returns a dict."""
    labels, i = {}, 0
    while i < len(s):
        m = re.compile(_LABEL).match(s, i)
        if not m:
            raise FormatError("line %d: bad label name at %r" %
                              (lineno, s[i:]))
        name = m.group(0)
        if name.startswith("__"):
            raise FormatError("line %d: reserved label %s" % (lineno, name))
        i = m.end()
        if s[i:i + 2] != '="':
            raise FormatError("line %d: expected =\" after %s" %
                              (lineno, name))
        i += 2
        j = i
        while j < len(s) and s[j] != '"':
            j += 2 if s[j] == "\\" else 1
        if j >= len(s):
            raise FormatError("line %d: unterminated label value" % lineno)
        if name in labels:
            raise FormatError("line %d: label %s twice" % (lineno, name))
        labels[name] = _unescape(s[i:j], "\\n\"", lineno)
        i = j + 1
        if i < len(s):
            if s[i] != ",":
                raise FormatError("line %d: expected , at %r" %
                                  (lineno, s[i:]))
            i += 1
    return labels


def parse_exposition(text):
    """Parse a scrape; returns {"types": {name: type}, "help": {...},
    "samples": {(name, frozenset(labels.items())): value}}.  Raises
    FormatError on anything the format does not allow."""
    if not text.endswith("\n"):
        raise FormatError("the last line does not end with a newline")
    types, helps, samples = {}, {}, {}
    done = set()        # metric families whose group has ended
    current = None
    sample_re = re.compile(r"(%s)(\{(.*)\})?[ \t]+(\S+)([ \t]+(-?\d+))?$" %
                           _NAME)
    for lineno, line in enumerate(text[:-1].split("\n"), 1):
        if line.strip() == "":
            continue
        if line.startswith("#"):
            m = re.match(r"#[ \t]+(HELP|TYPE)[ \t]+(%s)(?:[ \t](.*))?$" %
                         _NAME, line)
            if not m:
                if re.match(r"#[ \t]*(HELP|TYPE)\b", line):
                    raise FormatError("line %d: malformed %r" %
                                      (lineno, line))
                continue        # a plain comment
            kind, name, rest = m.group(1), m.group(2), m.group(3) or ""
            if name in done or (current is not None and name != current and
                                name in types):
                raise FormatError("line %d: %s of %s after its samples" %
                                  (lineno, kind, name))
            if kind == "HELP":
                if name in helps:
                    raise FormatError("line %d: second HELP for %s" %
                                      (lineno, name))
                helps[name] = _unescape(rest, "\\n", lineno)
            else:
                if name in types:
                    raise FormatError("line %d: second TYPE for %s" %
                                      (lineno, name))
                if rest not in _TYPES:
                    raise FormatError("line %d: unknown type %r" %
                                      (lineno, rest))
                if any(k[0] in _family_names(name, rest) for k in samples):
                    raise FormatError("line %d: TYPE %s after its samples" %
                                      (lineno, name))
                types[name] = rest
            if current is not None and current != name:
                done.add(current)
            current = name
            continue
        m = sample_re.match(line)
        if not m:
            raise FormatError("line %d: malformed sample %r" % (lineno, line))
        name, labels = m.group(1), _labels(m.group(3) or "", lineno)
        value = _float(m.group(4), lineno)
        family = _family_of(name, types)
        if family is None:
            raise FormatError("line %d: sample %s without a TYPE" %
                              (lineno, name))
        if family in done or (current is not None and family != current):
            raise FormatError("line %d: %s is not grouped with its family" %
                              (lineno, name))
        current = family
        key = (name, frozenset(labels.items()))
        if key in samples:
            raise FormatError("line %d: duplicate series %s%s" %
                              (lineno, name, labels))
        samples[key] = value
    _check_families(types, samples)
    return {"types": types, "help": helps, "samples": samples}


def _family_names(name, typ):
    if typ == "histogram":
        return {name + "_bucket", name + "_sum", name + "_count"}
    if typ == "summary":
        return {name, name + "_sum", name + "_count"}
    return {name}


def _family_of(sample, types):
    for name, typ in types.items():
        if sample in _family_names(name, typ):
            return name
    return None


def _check_families(types, samples):
    for name, typ in types.items():
        if typ == "counter":
            if not name.endswith("_total"):
                raise FormatError("counter %s does not end in _total" % name)
            for (n, _), v in samples.items():
                if n == name and not v >= 0:
                    raise FormatError("counter %s is %r" % (name, v))
        if typ != "histogram":
            continue
        series = {}
        for (n, ls), v in samples.items():
            d = dict(ls)
            if n == name + "_bucket":
                if "le" not in d:
                    raise FormatError("%s_bucket without le" % name)
                le = d.pop("le")
                series.setdefault(frozenset(d.items()), {}).setdefault(
                    "b", []).append((_float(le, 0), v))
            elif n in (name + "_sum", name + "_count"):
                if "le" in d:
                    raise FormatError("%s with le" % n)
                series.setdefault(ls, {})[n[len(name) + 1:]] = v
        for ls, s in series.items():
            b = sorted(s.get("b", []))
            if not b or b[-1][0] != math.inf:
                raise FormatError("%s%s has no +Inf bucket" % (name,
                                                               dict(ls)))
            if any(b[i][1] > b[i + 1][1] for i in range(len(b) - 1)):
                raise FormatError("%s%s buckets not cumulative" %
                                  (name, dict(ls)))
            if "count" not in s or "sum" not in s:
                raise FormatError("%s%s lacks _sum or _count" %
                                  (name, dict(ls)))
            if s["count"] != b[-1][1]:
                raise FormatError("%s%s +Inf != _count" % (name, dict(ls)))


# --- scraping ------------------------------------------------------------------

def promtool_check(text):
    if PROMTOOL is None:
        return
    r = subprocess.run([PROMTOOL, "check", "metrics"], input=text,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, "promtool: %s%s" % (r.stdout, r.stderr)


class Scrape:
    def __init__(self, text):
        self.text = text
        promtool_check(text)
        p = parse_exposition(text)
        self.types, self.samples = p["types"], p["samples"]

    def get(self, name, **labels):
        """A sample's value; 0 for a series not (yet) exposed."""
        return self.samples.get((name, frozenset(labels.items())), 0)

    def total(self, name, **labels):
        """The sum over every series of name matching labels."""
        t = 0
        for (n, ls), v in self.samples.items():
            if n == name and set(labels.items()) <= ls:
                t += v
        return t


def scrape(gw, s=None):
    s = s or session()
    r = s.get(gw.url + "/metrics", timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return Scrape(r.text)


def req_count(sc, kind, method, cls):
    return sc.get("portcullis_requests_total", kind=kind, method=method,
                  **{"class": cls})


# --- the parser can fail ----------------------------------------------------------

GOOD = """# HELP x_total A help with \\\\ and \\n.
# TYPE x_total counter
x_total{a="v\\"q\\\\\\n",b="2",} 3
x_total 1e3
# TYPE h histogram
h_bucket{le="0.5"} 1
h_bucket{le="+Inf"} 2
h_sum 0.7
h_count 2
"""


@pytest.mark.parametrize("bad", [
    "x_total 1",                                         # no newline
    "# TYPE x_total counter\nx_total{a=\"1\"} 1 2 3\n",   # junk after
    "x_total 1\n",                                       # no TYPE
    "# TYPE x_total counter\nx_total{a=1} 1\n",           # unquoted
    "# TYPE x_total counter\nx_total{a=\"\\t\"} 1\n",     # bad escape
    "# TYPE x_total counter\nx_total{a=\"1\",a=\"2\"} 1\n",
    "# TYPE x_total counter\nx_total 1\nx_total 2\n",    # duplicate
    "# TYPE x_total counter\nx_total one\n",
    "# TYPE x_total gauge\n# TYPE x_total counter\n",
    "# TYPE x_total countr\n",
    "# TYPE x counter\nx 1\n",                           # no _total
    "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\n"
    "h_sum 1\nh_count 1\n",                              # not cumulative
    "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_sum 1\nh_count 2\n",
    "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n",
    "# TYPE a_total counter\n# TYPE b_total counter\na_total 1\nb_total 1\n"
    "a_total{x=\"1\"} 1\n",                              # not grouped
    "# HELP x_total \\q\n# TYPE x_total counter\n",
    "# TYPE x_total counter\nx_total{__n=\"1\"} 1\n",
])
def test_parser_refuses_malformed(bad):
    parse_exposition(GOOD)
    with pytest.raises(FormatError):
        parse_exposition(bad)
    if PROMTOOL is not None and bad.endswith("\n") and "countr" in bad:
        r = subprocess.run([PROMTOOL, "check", "metrics"], input=bad,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode != 0


def test_parser_reads_values():
    p = parse_exposition(GOOD)["samples"]
    assert p[("x_total", frozenset({"a": "v\"q\\\n", "b": "2"}.items()))] \
        == 3
    assert p[("x_total", frozenset())] == 1000


# --- acceptance 1: counters move ----------------------------------------------

def _wait_count(gw, pred, what):
    """Requests are counted when they are retired; a client may see its
    last byte a moment before: wait for the condition, bounded."""
    box = {}

    def ok():
        box["s"] = scrape(gw)
        return pred(box["s"])
    wait_for(ok, timeout=30, what=what)
    return box["s"]


def test_pull_and_push_move_the_counters(start_registry, start_gateway,
                                         skopeo, single_image, tmp_path):
    reg = start_registry("up1")
    img = single_image
    skopeo("copy", "--dest-tls-verify=false", img.ref,
           "docker://%s/app/img:v1" % reg.host)
    gw = start_gateway(gateway_config(
        upstream(reg, prefix="up1"), cache=cache_cfg(tmp_path / "cache"),
        metrics={"allow": ["127.0.0.1"]}))
    im = img.images[0]
    blobs = [im["config_digest"]] + [l["digest"] for l in im["layers"]]
    nbytes = sum(img.blobs[d] for d in blobs)

    s0 = scrape(gw)
    assert s0.types["portcullis_requests_total"] == "counter"
    assert s0.types["portcullis_request_duration_seconds"] == "histogram"
    assert s0.get("portcullis_cache_requests_total", result="miss") == 0
    assert s0.get("portcullis_cache_entries") == 0

    # A cold pull: misses, upstream fetches, bytes out.
    skopeo("copy", "--src-tls-verify=false",
           "docker://%s/up1/app/img:v1" % gw.host,
           "oci:%s:v1" % (tmp_path / "first"))
    s1 = _wait_count(gw, lambda s: req_count(s, "blob", "GET", "2xx") >=
                     len(blobs), "the pull's blob GETs counted")
    assert req_count(s1, "manifest", "GET", "2xx") >= 1
    assert s1.get("portcullis_cache_requests_total", result="miss") >= \
        len(blobs)
    assert s1.get("portcullis_cache_requests_total", result="hit") == 0
    assert s1.get("portcullis_sent_bytes_total", kind="blob") >= nbytes
    assert s1.get("portcullis_upstream_responses_total", upstream="up1",
                  **{"class": "2xx"}) >= len(blobs)
    assert s1.get("portcullis_upstream_response_seconds_count",
                  upstream="up1") >= len(blobs)
    assert s1.get("portcullis_request_duration_seconds_count",
                  kind="blob") >= len(blobs)
    wait_for(lambda: scrape(gw).get("portcullis_cache_entries") >=
             len(blobs), timeout=30, what="the cache entries published")
    s1 = scrape(gw)
    assert s1.get("portcullis_cache_bytes") >= nbytes
    assert s1.get("portcullis_cache_fills_in_progress") == 0

    # The same pull again: hits, no new misses, no upstream blob GETs.
    up_before = s1.total("portcullis_upstream_responses_total",
                         upstream="up1")
    skopeo("copy", "--src-tls-verify=false",
           "docker://%s/up1/app/img:v1" % gw.host,
           "oci:%s:v1" % (tmp_path / "second"))
    s2 = _wait_count(gw, lambda s: s.get(
        "portcullis_cache_requests_total", result="hit") >= len(blobs),
        "the second pull's hits counted")
    assert s2.get("portcullis_cache_requests_total", result="miss") == \
        s1.get("portcullis_cache_requests_total", result="miss")
    assert s2.get("portcullis_cache_sent_bytes_total", result="hit") >= nbytes
    assert s2.get("portcullis_sent_bytes_total", kind="blob") - \
        s1.get("portcullis_sent_bytes_total", kind="blob") >= nbytes
    assert s2.total("portcullis_upstream_responses_total",
                    upstream="up1") - up_before <= 2     # the tag at most

    # A push through the gateway: uploads and a manifest PUT.
    skopeo("copy", "--dest-tls-verify=false", img.ref,
           "docker://%s/up1/pushed/img:v1" % gw.host)
    s3 = _wait_count(gw, lambda s: req_count(s, "manifest", "PUT", "2xx") ==
                     1, "the push's manifest PUT counted")
    # Each blob starts an upload or is mounted (skopeo remembers where it
    # pulled them from): a POST each; what was not mounted is sent.
    assert req_count(s3, "upload_start", "POST", "2xx") >= len(blobs)
    assert s3.total("portcullis_requests_total", kind="upload",
                    method="PUT") >= 1
    assert s3.get("portcullis_received_bytes_total", kind="upload") > 0
    assert s3.get("portcullis_received_bytes_total", kind="manifest") > 0
    assert s3.get("portcullis_connections_open") >= 1
    assert s3.get("portcullis_ready") == 1
    # The scrapes themselves are counted, under their own kind.
    assert req_count(s3, "metrics", "GET", "2xx") >= 3


def test_upstream_429_and_ratelimit_remaining(start_gateway, tmp_path):
    liar = LyingUpstream()
    try:
        d = liar.add_blob(os.urandom(1000))
        gw = start_gateway(gateway_config(
            {"name": "liar", "url": liar.url, "prefix": "liar",
             "hosts": [liar.host]},
            cache=cache_cfg(tmp_path / "c"),
            metrics={"allow": ["127.0.0.1"]}))
        s = session()
        s0 = scrape(gw, s)
        assert ("portcullis_upstream_ratelimit_remaining",
                frozenset({"upstream": "liar"}.items())) not in s0.samples
        r = s.get("%s/v2/liar/app/blobs/%s" % (gw.url, d), timeout=30)
        assert r.status_code == 200
        s1 = scrape(gw, s)
        # Docker Hub's form, "42;w=21600": the number.
        assert s1.get("portcullis_upstream_ratelimit_remaining",
                      upstream="liar") == 42
        liar.fail_all(429, retry_after="17")
        r = s.get("%s/v2/liar/app/manifests/v1" % gw.url, timeout=30)
        assert r.status_code == 429
        s2 = scrape(gw, s)
        assert s2.get("portcullis_upstream_ratelimit_remaining",
                      upstream="liar") == 0
        assert req_count(s2, "manifest", "GET", "4xx") == 1
        assert req_count(s2, "blob", "GET", "2xx") == 1
        assert s2.get("portcullis_upstream_responses_total", upstream="liar",
                      **{"class": "4xx"}) >= 1
        assert s2.total("portcullis_ratelimit_refusals_total") == 0
    finally:
        liar.stop()


DENY_POLICY = {
    "rules": [
        {"id": "no-secret", "effect": "deny",
         "repositories": ["secret/**"], "subjects": ["anonymous"],
         "actions": ["pull"]},
        {"id": "no-private", "effect": "deny",
         "repositories": ["private/**"], "subjects": ["anonymous"],
         "actions": ["pull"]},
        {"id": "pull-all", "effect": "allow", "repositories": ["**"],
         "subjects": ["anonymous", "authenticated"], "actions": ["pull"]},
        {"id": "scraper", "effect": "allow",
         "subjects": ["cidr:127.0.0.1/32"], "actions": ["admin"]},
    ],
}


def test_denial_by_rule_and_refused_token_by_reason(start_registry,
                                                    start_gateway, tmp_path):
    reg = start_registry("up1")
    keys = make_keys(tmp_path)
    gw = start_gateway(gateway_config(
        upstream(reg, prefix="up1"), policy=DENY_POLICY,
        identity={"token": token_cfg(keys)}))
    s = session()
    # No metrics.allow: the admin action, granted by rule "scraper".
    s0 = scrape(gw, s)
    assert s0.get("portcullis_policy_denials_total", rule="no-secret") == 0

    r = s.get(gw.url + "/v2/up1/secret/app/manifests/v1", timeout=15)
    assert r.status_code == 401
    r = s.get(gw.url + "/v2/up1/secret/app/tags/list", timeout=15)
    assert r.status_code == 401
    r = s.get(gw.url + "/v2/up1/pub/app/tags/list", timeout=15,
              headers={"Authorization": "Bearer not.a-token"})
    assert r.status_code == 401 and "invalid_token" in \
        r.headers["WWW-Authenticate"]
    # A token the gateway issued verifies: a check that passed.
    tok = get_token(gw, s, ["repository:up1/pub/app:pull"])["token"]
    r = s.get(gw.url + "/v2/up1/pub/app/tags/list", timeout=15,
              headers={"Authorization": "Bearer " + tok})
    assert r.status_code == 404, r.text      # allowed; no such repository
    s1 = scrape(gw, s)
    assert s1.get("portcullis_auth_checks_total", result="ok") == 1
    assert req_count(s1, "token", "GET", "2xx") == 1
    assert s1.get("portcullis_policy_denials_total", rule="no-secret") == 2
    assert s1.get("portcullis_policy_denials_total", rule="pull-all") == 0
    # A refused token is an auth failure, not a policy denial.
    assert s1.get("portcullis_auth_failures_total", reason="malformed") == 1
    assert s1.get("portcullis_auth_checks_total", result="failed") == 1
    assert s1.total("portcullis_policy_denials_total") == 2
    assert req_count(s1, "manifest", "GET", "4xx") == 1
    assert req_count(s1, "tags", "GET", "4xx") == 3
    # The scrapes were allowed by "scraper", not denied.
    assert s1.get("portcullis_policy_denials_total", rule="scraper") == 0
    assert req_count(s1, "metrics", "GET", "2xx") == 1


def test_metrics_gate_and_label_bound(start_registry, start_gateway):
    reg = start_registry("up1")
    pol = {"rules": [r for r in DENY_POLICY["rules"]
                     if r["id"] != "scraper"]}
    # No admin rule, and an allow list the client is not in: refused.
    gw = start_gateway(gateway_config(
        upstream(reg, prefix="up1"), policy=pol,
        metrics={"allow": ["10.0.0.0/8", "::1"], "label_values": 1}))
    s = session()
    r = s.get(gw.url + "/metrics", timeout=15)
    assert r.status_code == 401 and "portcullis_" not in r.text
    assert s.post(gw.url + "/metrics", timeout=15).status_code == 405
    gw.stop()

    gw = start_gateway(gateway_config(
        upstream(reg, prefix="up1"), policy=pol,
        metrics={"allow": ["127.0.0.0/8"], "label_values": 1}))
    for repo in ("secret/a", "private/b", "private/c"):
        assert s.get("%s/v2/up1/%s/tags/list" % (gw.url, repo),
                     timeout=15).status_code == 401
    sc = scrape(gw, s)
    # One value kept per label: the second rule is counted as _other.
    assert sc.get("portcullis_policy_denials_total", rule="no-secret") == 1
    assert sc.get("portcullis_policy_denials_total", rule="_other") == 2
    assert sc.get("portcullis_policy_denials_total", rule="no-private") == 0


def test_admin_listener(start_registry, start_gateway):
    """admin.listen: a plain listener that answers /metrics (under the
    same gate), /readyz and /healthz and nothing else; the main listener
    keeps answering them too."""
    reg = start_registry("up1")
    port = free_port()
    gw = start_gateway(gateway_config(
        upstream(reg, prefix="up1"), admin={"listen": "127.0.0.1:%d" % port},
        metrics={"allow": ["127.0.0.1"]}))
    admin = "http://127.0.0.1:%d" % port
    s = session()
    r = s.get(admin + "/metrics", timeout=15)
    assert r.status_code == 200
    Scrape(r.text)
    assert s.get(admin + "/readyz", timeout=15).text == "ready\n"
    assert s.get(admin + "/healthz", timeout=15).status_code == 200
    for path in ("/v2/", "/v2/up1/x/tags/list", "/token", "/admin/audit"):
        r = s.get(admin + path, timeout=15)
        assert r.status_code == 404, (path, r.status_code)
        assert "admin listener" in r.text
    # The main listener still answers /metrics; requests on either count.
    sc = scrape(gw, s)
    assert req_count(sc, "metrics", "GET", "2xx") >= 1
    assert sc.total("portcullis_requests_total", **{"class": "4xx"}) == 4
    gw.stop()
    # Taken: the gateway refuses to start, naming the address.
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        bport = busy.getsockname()[1]
        cfg = gateway_config(upstream(reg, prefix="up1"),
                             admin={"listen": "127.0.0.1:%d" % bport})
        g = start_gateway(cfg, expect_fail=True)
        assert g.returncode != 0
        assert "cannot listen on 127.0.0.1:%d" % bport in g.log_text()


def test_metrics_reference_in_readme_matches_the_binary():
    from lib.gateway import REPO_ROOT, gateway_bin
    out = subprocess.run([gateway_bin(), "metrics-reference"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0
    with open(os.path.join(REPO_ROOT, "README.md")) as f:
        readme = f.read()
    b, e = "<!-- metrics-reference:begin -->\n", "<!-- metrics-reference:end -->"
    block = readme[readme.index(b) + len(b):readme.index(e)]
    assert block == out.stdout, "run contrib/update-readme.sh"
    names = re.findall(r"^\| `([a-z_]+)` \|", out.stdout, re.M)
    assert len(names) == len(set(names)) >= 25


# --- acceptance 2: readiness follows Redis -------------------------------------

def _readyz(gw):
    r = session().get(gw.url + "/readyz", timeout=15)
    return r.status_code, r.text


def test_readyz_follows_redis(start_registry, start_gateway, tmp_path):
    reg = start_registry("up1")
    rs = RedisServer(tmp_path / "redis")
    try:
        gw = start_gateway(gateway_config(
            upstream(reg, prefix="up1"),
            redis={"address": rs.host, "reconnect_max": 1},
            audit={"redis": rs.host, "spool_file": str(tmp_path / "spool"),
                   "timeout": 2, "on_failure": "reject"},
            metrics={"allow": ["127.0.0.1"]}))
        wait_for(lambda: _readyz(gw) == (200, "ready\n"), timeout=30,
                 what="/readyz 200 once the Redis links are up")
        sc = scrape(gw)
        for link in ("audit", "secrets", "revocation",
                     "revocation_subscriber"):
            assert sc.get("portcullis_redis_link_up", link=link) == 1, link

        rs.kill()                       # SIGKILL to its PID
        st, body = wait_for(lambda: (lambda r: r if r[0] == 503 else None)(
            _readyz(gw)), timeout=30, what="/readyz 503 with Redis down")
        assert "redis audit: not connected to %s" % rs.host in body
        assert "redis secrets" in body and "redis revocation" in body
        assert "ready\n" != body
        sc = scrape(gw)
        assert sc.get("portcullis_redis_link_up", link="audit") == 0
        assert sc.get("portcullis_ready") == 0
        # Liveness is not readiness.
        assert session().get(gw.url + "/healthz", timeout=15) \
            .status_code == 200

        rs.start()
        wait_for(lambda: _readyz(gw) == (200, "ready\n"), timeout=60,
                 what="/readyz 200 once Redis is back")
        assert scrape(gw).get("portcullis_redis_link_up", link="audit") == 1
    finally:
        rs.stop()


def test_readyz_without_a_redis_requirement(start_registry, start_gateway,
                                            tmp_path):
    """Audit in drop mode and no redis section: Redis is not needed to
    serve, so its absence does not make the gateway unready."""
    reg = start_registry("up1")
    dead = free_port()
    gw = start_gateway(gateway_config(
        upstream(reg, prefix="up1"),
        audit={"redis": "127.0.0.1:%d" % dead,
               "spool_file": str(tmp_path / "spool"), "timeout": 2,
               "on_failure": "drop"}))
    assert _readyz(gw) == (200, "ready\n")
    assert session().post(gw.url + "/readyz", timeout=15).status_code == 405


@needs_idp
def test_readyz_waits_for_each_issuers_keys(start_registry, start_gateway,
                                            tmp_path):
    """An identity provider that is down when the gateway starts: 503
    naming the issuer until its keys are fetched (the retry after a failed
    fetch backs off from min_refresh_interval), then 200."""
    reg = start_registry("up1")
    idp = start_idp(tmp_path / "idp")
    try:
        idp.stop()
        gw = start_gateway(gateway_config(
            upstream(reg, prefix="up1"),
            identity={"issuers": [issuer_cfg(idp, min_refresh_interval=1,
                                             refresh=600)]},
            metrics={"allow": ["127.0.0.1"]}))
        st, body = _readyz(gw)
        assert st == 503 and body.startswith("oidc idp: no keys yet"), body
        idp.start()
        wait_for(lambda: _readyz(gw) == (200, "ready\n"), timeout=60,
                 what="/readyz 200 once the issuer's keys are fetched")
    finally:
        idp.stop()


GENERIC_503 = "not ready (the checks are shown to callers allowed /metrics)\n"


def test_readyz_names_checks_only_to_metrics_callers(start_registry,
                                                    start_gateway, tmp_path):
    """Redis for a reject-mode audit is down: /readyz is 503 for
    everyone, but the check and its address are named only to
    metrics.allow and to the admin action, on either listener; an anonymous
    caller, or one with a refused token, gets a generic line."""
    reg = start_registry("up1")
    dead = "127.0.0.1:%d" % free_port()
    port = free_port()
    pol = {"rules": [r for r in DENY_POLICY["rules"]
                     if r["id"] != "scraper"]}
    audit = {"redis": dead, "spool_file": str(tmp_path / "spool"),
             "timeout": 2, "on_failure": "reject"}
    gw = start_gateway(gateway_config(
        upstream(reg, prefix="up1"), policy=pol, audit=audit,
        admin={"listen": "127.0.0.1:%d" % port},
        metrics={"allow": ["10.0.0.0/8"]}))
    s = session()
    for hdrs in ({}, {"Authorization": "Bearer not.a-token"}):
        r = s.get(gw.url + "/readyz", timeout=15, headers=hdrs)
        assert (r.status_code, r.text) == (503, GENERIC_503), hdrs
        assert dead not in r.text and "redis" not in r.text
    assert s.head(gw.url + "/readyz", timeout=15).status_code == 503
    # The admin listener is gated as /metrics is there (review: it
    # named the checks to anyone who reached it).
    r = s.get("http://127.0.0.1:%d/readyz" % port, timeout=15)
    assert (r.status_code, r.text) == (503, GENERIC_503)
    gw.stop()
    # The admin action (rule "scraper": cidr:127.0.0.1/32) sees them too.
    gw = start_gateway(gateway_config(
        upstream(reg, prefix="up1"), policy=DENY_POLICY, audit=audit))
    st, body = _readyz(gw)
    assert st == 503 and "redis audit: not connected to %s" % dead in body
    gw.stop()
    # metrics.allow: test_readyz_follows_redis.


def test_refused_metrics_scrape_is_audited(start_registry, start_gateway,
                                           tmp_path, pki):
    """Anonymous (401) and identified (403) callers refused /metrics
    leave an audit record like any denial (action admin, decision deny,
    the status and error code); an allowed scrape and /readyz leave
    none.  mTLS gives the identified callers (test_policy's CA)."""
    from test_policy import mtls, tls_listen
    from test_policy import session as tls_session
    reg = start_registry("up1")
    rs = RedisServer(tmp_path / "redis")
    try:
        pol = {"rules": [
            {"id": "pull-all", "effect": "allow", "repositories": ["**"],
             "subjects": ["anonymous", "authenticated"],
             "actions": ["pull"]},
            {"id": "ops", "effect": "allow", "subjects": [mtls(pki.admin)],
             "actions": ["admin"]}]}
        gw = start_gateway(gateway_config(
            upstream(reg, prefix="up1"), listen=tls_listen(pki), policy=pol,
            audit={"redis": rs.host, "spool_file": str(tmp_path / "spool"),
                   "timeout": 2}), tls_client={"ca": pki.ca})
        anon, reader = tls_session(pki), tls_session(pki, pki.reader)
        admin = tls_session(pki, pki.admin)
        r = anon.get(gw.url + "/metrics", timeout=15)
        assert r.status_code == 401 and "portcullis_" not in r.text
        rid_anon = r.headers["X-Request-Id"]
        r = reader.get(gw.url + "/metrics", timeout=15)
        assert r.status_code == 403 and "portcullis_" not in r.text
        assert r.json()["errors"][0]["code"] == "DENIED"
        rid_reader = r.headers["X-Request-Id"]
        r = admin.get(gw.url + "/metrics", timeout=15)
        assert r.status_code == 200
        Scrape(r.text)
        # /readyz: the status for all, the checks for the admin action.
        assert reader.get(gw.url + "/readyz", timeout=15).text == "ready\n"
        assert admin.get(gw.url + "/readyz", timeout=15).text == "ready\n"
        # A request after them all: once its record is in, theirs are.
        r = anon.get(gw.url + "/v2/", timeout=15)
        last = r.headers["X-Request-Id"]

        def recs():
            with rs.client() as c:
                return entries_to_dicts(c.call("XRANGE", "portcullis:audit",
                                               "-", "+"))
        wait_for(lambda: last in [d["request_id"] for _, d in recs()],
                 timeout=30, what="the last request recorded")
        got = {d["request_id"]: d for _, d in recs()}
        assert set(got) == {rid_anon, rid_reader, last}, got
        a, b = got[rid_anon], got[rid_reader]
        for d in (a, b):
            assert (d["path"], d["action"], d["decision"]) == \
                ("/metrics", "admin", "deny"), d
        assert (a["status"], a["error"], a["subject"]) == \
            ("401", "UNAUTHORIZED", "anonymous"), a
        assert (b["status"], b["error"], b["subject"],
                b["auth_method"]) == ("403", "DENIED",
                                      pki.reader["subject"], "mtls"), b
    finally:
        rs.stop()


def test_readyz_on_the_admin_listener_follows_the_metrics_gate(
        start_registry, start_gateway, tmp_path):
    """The admin listener is only an address: an operator may bind it
    where more than the monitoring network reaches (":port" is allowed).
    A caller it refuses /metrics (no metrics.allow, no admin rule) gets
    no more of /readyz there than on the main listener: the status and
    the generic line, never the Redis address."""
    reg = start_registry("up1")
    dead = "127.0.0.1:%d" % free_port()
    port = free_port()
    pol = {"rules": [r for r in DENY_POLICY["rules"]
                     if r["id"] != "scraper"]}
    audit = {"redis": dead, "spool_file": str(tmp_path / "spool"),
             "timeout": 2, "on_failure": "reject"}
    gw = start_gateway(gateway_config(
        upstream(reg, prefix="up1"), policy=pol, audit=audit,
        admin={"listen": "127.0.0.1:%d" % port},
        metrics={"allow": ["10.0.0.0/8"]}))
    s = session()
    admin = "http://127.0.0.1:%d" % port
    r = s.get(admin + "/metrics", timeout=15)
    assert r.status_code == 401 and "portcullis_" not in r.text
    r = s.get(admin + "/readyz", timeout=15)
    assert (r.status_code, r.text) == (503, GENERIC_503)
    assert dead not in r.text and "redis" not in r.text
    gw.stop()
    # Allowed /metrics there (metrics.allow): the checks are named.
    gw = start_gateway(gateway_config(
        upstream(reg, prefix="up1"), policy=pol, audit=audit,
        admin={"listen": "127.0.0.1:%d" % port},
        metrics={"allow": ["127.0.0.1"]}))
    r = s.get(admin + "/readyz", timeout=15)
    assert r.status_code == 503
    assert "redis audit: not connected to %s" % dead in r.text
