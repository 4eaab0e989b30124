"""Fixtures for portcullis integration tests: real docker-registry
upstreams (plain or token-protected), the gateway, OCI images built
locally, and the real clients (skopeo, podman, containerd, dockerd), each on
loopback in temp dirs and stopped by PID even when a test fails.

Factories come in two scopes: start_registry / start_gateway (torn down
after the test) and start_registry_module / start_gateway_module (after the
module), so a module can share its upstreams and images.  liar is the
misbehaving-registry test double (lib/lying_upstream.py)."""

import os
import signal
import sys

import pytest
import requests

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from lib.util import PROXY_ENV, tail  # noqa: E402
from lib.registry import Registry  # noqa: E402
from lib.gateway import Gateway  # noqa: E402
from lib.images import make_oci_layout  # noqa: E402
from lib.clients import Containerd, Dockerd, Podman, Skopeo  # noqa: E402
from lib.lying_upstream import LyingUpstream  # noqa: E402
from lib.redis import RedisServer  # noqa: E402

# Anything this process or its children might send outside goes to a closed
# loopback port instead.
os.environ.update(PROXY_ENV)


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    # contrib/test.sh (and so CI) sets PORTCULLIS_NO_SKIP: a test skipped
    # there proves nothing, so it counts as a failure.
    if rep.skipped and os.environ.get("PORTCULLIS_NO_SKIP") == "1" and \
            not hasattr(rep, "wasxfail"):
        rep.outcome = "failed"
        rep.longrepr = "skipped, but PORTCULLIS_NO_SKIP=1: %s" % (
            rep.longrepr,)
    setattr(item, "rep_" + rep.when, rep)


def _failed(request):
    node = request.node
    for when in ("setup", "call"):
        rep = getattr(node, "rep_" + when, None)
        if rep is not None and rep.failed:
            return True
    return False


class _Servers:
    """Everything a factory started, stopped in reverse order."""

    def __init__(self):
        self.items = []

    def add(self, x):
        self.items.append(x)
        return x

    def stop_all(self, show_logs=False):
        errors = []
        for x in reversed(self.items):
            if show_logs:
                for attr in ("log_path", "access_log_path"):
                    p = getattr(x, attr, None)
                    if p:
                        print("\n==== %s %s (tail) ====\n%s" % (
                            type(x).__name__, p, tail(p, 6000)))
            try:
                x.stop()
            except Exception as e:  # noqa: BLE001
                errors.append(e)
        self.items.clear()
        if errors:
            raise errors[0]


def _registry_factory(tmp_factory, servers):
    def start_registry(name="up1", auth=None, extra_config=None, tls=None):
        d = tmp_factory.mktemp("registry-%s-" % name)
        return servers.add(Registry(d, name=name, auth=auth,
                                    extra_config=extra_config, tls=tls))
    return start_registry


def _gateway_factory(tmp_factory, servers):
    def start_gateway(config, expect_fail=False, start_timeout=30, env=None,
                      **kw):
        d = tmp_factory.mktemp("gateway-")
        return servers.add(Gateway(d, config, expect_fail=expect_fail,
                                   start_timeout=start_timeout, env=env,
                                   **kw))
    return start_gateway


@pytest.fixture
def start_registry(tmp_path_factory, request):
    """Factory: start_registry(name="up1", auth=None|"token") -> Registry."""
    servers = _Servers()
    try:
        yield _registry_factory(tmp_path_factory, servers)
    finally:
        servers.stop_all(show_logs=_failed(request))


@pytest.fixture(scope="module")
def start_registry_module(tmp_path_factory):
    """Module-scoped start_registry."""
    servers = _Servers()
    try:
        yield _registry_factory(tmp_path_factory, servers)
    finally:
        servers.stop_all()


@pytest.fixture
def start_gateway(tmp_path_factory, request):
    """Factory: start_gateway(config, expect_fail=False) -> Gateway."""
    servers = _Servers()
    try:
        yield _gateway_factory(tmp_path_factory, servers)
    finally:
        servers.stop_all(show_logs=_failed(request))


@pytest.fixture(scope="module")
def start_gateway_module(tmp_path_factory):
    """Module-scoped start_gateway."""
    servers = _Servers()
    try:
        yield _gateway_factory(tmp_path_factory, servers)
    finally:
        servers.stop_all()


@pytest.fixture(scope="session")
def image_factory(tmp_path_factory):
    """Factory: image_factory(name, **make_oci_layout kwargs) -> Layout,
    built once per session per (name, kwargs)."""
    cache = {}

    def make(name="img", **kw):
        key = (name, repr(sorted(kw.items())))
        if key not in cache:
            d = tmp_path_factory.mktemp("oci-%s-" % name)
            cache[key] = make_oci_layout(str(d), **kw)
        return cache[key]
    return make


@pytest.fixture(scope="session")
def multiarch_image(image_factory):
    """linux/amd64 + linux/arm64 OCI image index, two small layers each."""
    return image_factory("multiarch")


@pytest.fixture(scope="session")
def single_image(image_factory):
    """One linux/<host arch> image (OCI media types)."""
    from lib.images import HOST_ARCH
    return image_factory("single", platforms=[("linux", HOST_ARCH)],
                         seed="single")


@pytest.fixture(scope="session")
def skopeo(tmp_path_factory):
    """skopeo(*args, timeout=120, check=True) with isolated policy,
    registries.conf, auth file and HOME."""
    return Skopeo(tmp_path_factory.mktemp("skopeo-"))


@pytest.fixture
def podman(tmp_path_factory):
    """podman(*args, timeout=180, check=True) with its own vfs storage."""
    return Podman(tmp_path_factory.mktemp("podman-"))


@pytest.fixture
def start_containerd(request):
    """Factory: start_containerd() -> Containerd (.ctr(*args), .address)."""
    servers = _Servers()
    try:
        yield lambda: servers.add(Containerd())
    finally:
        servers.stop_all(show_logs=_failed(request))


@pytest.fixture
def start_dockerd(request):
    """Factory: start_dockerd(daemon_config) -> Dockerd (.docker(*args))."""
    servers = _Servers()
    try:
        yield lambda daemon_config=None: servers.add(Dockerd(daemon_config))
    finally:
        servers.stop_all(show_logs=_failed(request))


@pytest.fixture
def http():
    """A requests.Session that never uses a proxy."""
    s = requests.Session()
    s.trust_env = False
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def liar():
    """The test double lib/lying_upstream.py (a misbehaving registry),
    stopped after the test."""
    up = LyingUpstream()
    try:
        yield up
    finally:
        up.stop()


@pytest.fixture
def start_redis(tmp_path_factory):
    """Factory: start_redis(**RedisServer kwargs) -> RedisServer, each
    stopped after the test (continued first: a test may have stopped it
    with SIGSTOP)."""
    servers = []

    def start(**kw):
        s = RedisServer(tmp_path_factory.mktemp("redis-"), **kw)
        servers.append(s)
        return s
    try:
        yield start
    finally:
        for s in servers:
            try:
                os.kill(s.pid, signal.SIGCONT)
            except OSError:
                pass
            s.stop()
