"""The portcullis gateway under test, started as
`$PORTCULLIS_BIN serve -c <config.json>` (default <repo>/portcullis) with
its stderr captured to a file, ready when GET /healthz answers 200, stopped
by SIGTERM to its own PID (SIGKILL after a deadline)."""

import copy
import json
import os

import requests

from .util import HarnessError, ManagedProcess, free_port, safe_env, wait_for

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__),
                                         "..", "..", ".."))


# The policy a test gets when its config has no "policy" key: everyone,
# anonymous or identified, may pull, push, delete and list every repository
# of every upstream, as before there was a policy; nobody is admin by rule
# (audit.admin_addresses, the deprecated alias, still admits its
# addresses).  The gateway itself denies everything without a policy, so
# this keeps the tests that are not about policy about what they test.
# Tests about policy pass their own "policy" (None: leave it out).
OPEN_TEST_POLICY = {
    "rules": [{
        "id": "open-test-policy",
        "effect": "allow",
        "repositories": ["**"],
        "subjects": ["anonymous", "authenticated"],
        "actions": ["pull", "push", "delete", "catalog"],
    }],
}


def gateway_bin():
    return os.environ.get("PORTCULLIS_BIN",
                          os.path.join(REPO_ROOT, "portcullis"))


class Gateway:
    """A running (or, with expect_fail, exited) gateway.  Attributes: port,
    url, host, pid, log_path, config_path, config (the dict written),
    returncode (set once it exited)."""

    def __init__(self, workdir, config, expect_fail=False, start_timeout=30,
                 env=None, tls_client=None):
        self.dir = str(workdir)
        os.makedirs(self.dir, exist_ok=True)
        self.bin = gateway_bin()
        if not (os.path.isfile(self.bin) and os.access(self.bin, os.X_OK)):
            raise HarnessError(
                "gateway binary %s not found or not executable: build it "
                "with ./configure && make, or set PORTCULLIS_BIN" % self.bin)
        tls_client = tls_client or {}
        cfg = copy.deepcopy(config)
        if "policy" not in cfg:
            cfg["policy"] = copy.deepcopy(OPEN_TEST_POLICY)
        elif cfg["policy"] is None:
            del cfg["policy"]
        # One process unless the test asks (test_workers.py) or
        # PORTCULLIS_TEST_WORKERS says otherwise: /metrics and a few
        # counts in the suite are per process (README "Every core").
        cfg.setdefault("workers",
                       int(os.environ.get("PORTCULLIS_TEST_WORKERS", "1")))
        listen = cfg.setdefault("listen", {})
        if not listen.get("address"):
            listen["address"] = "127.0.0.1:%d" % free_port()
        self.config = cfg
        self.host = listen["address"]
        self.port = int(self.host.rsplit(":", 1)[1])
        self.tls = listen.get("tls")
        self.url = ("https://" if self.tls else "http://") + self.host
        n = len([f for f in os.listdir(self.dir) if f.startswith("gateway")])
        self.config_path = os.path.join(self.dir, "gateway-%d.json" % n)
        self.log_path = os.path.join(self.dir, "gateway-%d.log" % n)
        with open(self.config_path, "w") as f:
            json.dump(cfg, f, indent=2)
        self.returncode = None
        self.http = requests.Session()
        self.http.trust_env = False
        if self.tls:
            # Health checks over TLS trust tls_client["ca"] and present
            # tls_client["cert"]/["key"] when the listener wants one.
            self.http.verify = tls_client.get("ca", True)
            if tls_client.get("cert"):
                self.http.cert = (tls_client["cert"], tls_client["key"])
        self.proc = ManagedProcess([self.bin, "serve", "-c", self.config_path],
                                   self.log_path, env=env or safe_env(),
                                   name="portcullis")
        self.pid = self.proc.pid
        try:
            if expect_fail:
                wait_for(lambda: not self.proc.alive(), timeout=start_timeout,
                         what="gateway to exit (expect_fail)")
                self.returncode = self.proc.returncode()
            else:
                self.proc.wait_ready(self._healthy, timeout=start_timeout,
                                     what="gateway /healthz 200")
        except Exception:
            self.stop()
            raise

    def _healthy(self):
        return self.http.get(self.url + "/healthz", timeout=2).status_code \
            == 200

    def log_text(self):
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def reloads_ended(self):
        """Reloads that reached their outcome in the log ("server reload
        start" is logged first: waiting for any "server reload" line
        would go on before the new config is in place)."""
        t = self.log_text()
        return sum(t.count("server reload " + w)
                   for w in ("done", "failed", "refused"))

    def rss_kib(self):
        """VmRSS of the gateway process in KiB (from /proc)."""
        with open("/proc/%d/status" % self.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise HarnessError("no VmRSS for pid %d" % self.pid)

    def alive(self):
        return self.proc.alive()

    def stop(self, timeout=15.0):
        """SIGTERM, wait up to `timeout`, then SIGKILL.  Returns the exit
        code (also kept in .returncode)."""
        self.returncode = self.proc.stop(timeout=timeout)
        return self.returncode


def upstream(registry, name=None, prefix=None, default=False,
             docker_hub=False, hosts=None, credentials_file=None, url=None,
             auth_hosts=None):
    """One entry of the gateway config's "upstreams" list for a Registry."""
    u = {"name": name or registry.name, "url": url or registry.url,
         "prefix": prefix if prefix is not None else (name or registry.name),
         "default": default, "docker_hub": docker_hub,
         "hosts": hosts if hosts is not None else [registry.host]}
    if credentials_file:
        u["credentials_file"] = str(credentials_file)
    if auth_hosts is not None:
        u["auth_hosts"] = list(auth_hosts)
    return u


def gateway_config(*upstreams, **extra):
    """A gateway config dict with short timeouts and the given upstreams."""
    cfg = {"timeouts": {"upstream_connect": 2, "upstream_response": 10},
           "upstreams": list(upstreams),
           # As Gateway() pins it: a config written for a reload must
           # not change it (workers is not reloadable).
           "workers": int(os.environ.get("PORTCULLIS_TEST_WORKERS", "1"))}
    cfg.update(extra)
    return cfg
