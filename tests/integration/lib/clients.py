"""The container clients users run, each with isolated state under a temp
dir: skopeo, podman (vfs storage, own --root/--runroot), containerd + ctr,
and dockerd + /usr/bin/docker.  Nothing global (~/.docker, ~/.config,
/var/lib/containers, /run/containerd) is read or written."""

import json
import os
import shutil
import tempfile

from .util import (HarnessError, ManagedProcess, kill_pid, pid_alive, run,
                   safe_env, wait_for)

SKOPEO = "/usr/bin/skopeo"
PODMAN = "/usr/bin/podman"
CTR = "/usr/bin/ctr"
CONTAINERD = "/usr/bin/containerd"
DOCKERD = "/usr/sbin/dockerd"
DOCKER = "/usr/bin/docker"   # not /usr/local/bin/docker (unrelated newer CLI)
UNSHARE = "/usr/bin/unshare"


def short_tmpdir(prefix):
    """A temp dir with a short path: unix socket paths must stay under 108
    bytes, and pytest's tmp_path is long."""
    return tempfile.mkdtemp(prefix=prefix, dir="/tmp")


class ClientEnv:
    """HOME, XDG dirs, registries.conf, policy.json and auth file for the
    containers/image tools, all under `dir`."""

    def __init__(self, dir):
        self.dir = str(dir)
        self.home = os.path.join(self.dir, "home")
        self.xdg_runtime = os.path.join(self.dir, "xdg-run")
        self.xdg_config = os.path.join(self.home, ".config")
        self.xdg_data = os.path.join(self.home, ".local", "share")
        self.tmp = os.path.join(self.dir, "tmp")
        for d in (self.home, self.xdg_runtime, self.xdg_config,
                  self.xdg_data, self.tmp):
            os.makedirs(d, mode=0o700, exist_ok=True)
        self.registries_conf = os.path.join(self.dir, "registries.conf")
        with open(self.registries_conf, "w") as f:
            f.write('unqualified-search-registries = []\n'
                    'short-name-mode = "disabled"\n')
        self.registries_d = os.path.join(self.dir, "registries.d")
        os.makedirs(self.registries_d, exist_ok=True)
        self.policy = os.path.join(self.dir, "policy.json")
        with open(self.policy, "w") as f:
            json.dump({"default": [{"type": "insecureAcceptAnything"}]}, f)
        self.auth_file = os.path.join(self.dir, "auth.json")
        with open(self.auth_file, "w") as f:
            f.write('{"auths": {}}\n')
        self.storage_conf = os.path.join(self.dir, "storage.conf")
        self.containers_conf = os.path.join(self.dir, "containers.conf")
        with open(self.containers_conf, "w") as f:
            f.write('[engine]\nevents_logger = "file"\n'
                    'cgroup_manager = "cgroupfs"\n'
                    '[containers]\nlog_driver = "k8s-file"\n')

    def env(self):
        return safe_env({
            "HOME": self.home,
            "XDG_RUNTIME_DIR": self.xdg_runtime,
            "XDG_CONFIG_HOME": self.xdg_config,
            "XDG_DATA_HOME": self.xdg_data,
            "TMPDIR": self.tmp,
            "CONTAINERS_REGISTRIES_CONF": self.registries_conf,
            "REGISTRY_AUTH_FILE": self.auth_file,
            "CONTAINERS_CONF": self.containers_conf,
            "DOCKER_CONFIG": os.path.join(self.home, ".docker"),
        })


class Skopeo:
    """skopeo(*args, timeout=120, check=True) -> CompletedProcess.  Adds
    --policy and --registries.d; raises HarnessError with stderr on
    failure when check is true."""

    def __init__(self, dir):
        self.cenv = ClientEnv(dir)

    def __call__(self, *args, timeout=120, check=True):
        argv = [SKOPEO, "--policy", self.cenv.policy,
                "--registries.d", self.cenv.registries_d] + list(args)
        return run(argv, timeout=timeout, env=self.cenv.env(), check=check)


class Podman:
    """podman(*args, timeout=180, check=True, input=None) -> CompletedProcess
    (input: its stdin, e.g. for login --password-stdin), with its
    own --root/--runroot under `dir`, vfs storage, file events, cgroupfs."""

    def __init__(self, dir):
        self.cenv = ClientEnv(dir)
        self.root = os.path.join(self.cenv.dir, "root")
        self.runroot = os.path.join(self.cenv.dir, "runroot")
        with open(self.cenv.storage_conf, "w") as f:
            f.write('[storage]\ndriver = "vfs"\nrunroot = "%s"\n'
                    'graphroot = "%s"\n' % (self.runroot, self.root))

    def __call__(self, *args, timeout=180, check=True, input=None):
        env = self.cenv.env()
        env["CONTAINERS_STORAGE_CONF"] = self.cenv.storage_conf
        argv = [PODMAN, "--root", self.root, "--runroot", self.runroot,
                "--storage-driver", "vfs", "--tmpdir", self.cenv.tmp,
                "--events-backend", "file", "--cgroup-manager", "cgroupfs"
                ] + list(args)
        return run(argv, timeout=timeout, env=env, check=check, input=input)


class Containerd:
    """A containerd of our own (CRI plugin disabled) with root, state and
    socket under a short temp dir.  ctr(*args) runs ctr against it."""

    def __init__(self, dir=None, namespace="portcullis-test"):
        self._own_dir = dir is None
        self.dir = dir or short_tmpdir("pc-ctd-")
        os.makedirs(self.dir, exist_ok=True)
        self.root = os.path.join(self.dir, "root")
        self.state = os.path.join(self.dir, "state")
        self.address = os.path.join(self.dir, "c.sock")
        self.namespace = namespace
        self.config_path = os.path.join(self.dir, "config.toml")
        self.log_path = os.path.join(self.dir, "containerd.log")
        with open(self.config_path, "w") as f:
            f.write('version = 2\nroot = "%s"\nstate = "%s"\n'
                    'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
                    '[grpc]\n  address = "%s"\n'
                    '[ttrpc]\n  address = "%s.ttrpc"\n'
                    '[debug]\n  level = "debug"\n'
                    '[metrics]\n  address = ""\n' % (
                        self.root, self.state, self.address, self.address))
        self.proc = ManagedProcess([CONTAINERD, "--config", self.config_path],
                                   self.log_path, env=safe_env(),
                                   name="containerd")
        self.pid = self.proc.pid
        try:
            self.proc.wait_ready(
                lambda: os.path.exists(self.address) and self.ctr(
                    "version", timeout=10, check=False).returncode == 0,
                timeout=30)
        except Exception:
            self.stop()
            raise

    def ctr(self, *args, timeout=180, check=True):
        argv = [CTR, "--address", self.address, "--namespace",
                self.namespace] + list(args)
        return run(argv, timeout=timeout, env=safe_env(), check=check)

    def log_text(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def stop(self):
        # Shims (only started for containers; tests do not run any) would
        # be children of ours; end any left by their PID files.
        shims = []
        for dirpath, _, files in os.walk(self.state):
            for n in files:
                if n in ("shim.pid", "init.pid"):
                    try:
                        with open(os.path.join(dirpath, n)) as f:
                            shims.append(int(f.read().strip()))
                    except (OSError, ValueError):
                        pass
        rc = self.proc.stop()
        for pid in shims:
            if pid_alive(pid):
                kill_pid(pid)
        if self._own_dir and os.environ.get("PORTCULLIS_KEEP_TMP") != "1":
            shutil.rmtree(self.dir, ignore_errors=True)
        return rc


class Dockerd:
    """dockerd 20.10 with its own data-root, exec-root, pidfile, unix
    socket and a containerd of ours; registry-mirrors and other
    daemon.json keys come from `daemon_config`.  docker(*args) runs
    /usr/bin/docker -H unix://SOCK with an isolated DOCKER_CONFIG.

    dockerd has no setting for /etc/docker (certs.d, key.json), so it runs
    in a private mount namespace of its own (unshare) in which a temp dir
    is bind-mounted over /etc/docker: certs_dir(host) is
    /etc/docker/certs.d/<host> as this dockerd sees it, and nothing is
    read from or written to the real /etc/docker.  dockerd reads a
    certs.d directory at each pull, so a test may change it between
    pulls."""

    def __init__(self, daemon_config=None, dir=None):
        self._own_dir = dir is None
        self.dir = dir or short_tmpdir("pc-dkd-")
        self.data_root = os.path.join(self.dir, "data")
        self.exec_root = os.path.join(self.dir, "exec")
        self.pidfile = os.path.join(self.dir, "dockerd.pid")
        self.sock = os.path.join(self.dir, "d.sock")
        self.host = "unix://" + self.sock
        self.log_path = os.path.join(self.dir, "dockerd.log")
        self.config_path = os.path.join(self.dir, "daemon.json")
        self.docker_config = os.path.join(self.dir, "cli")
        os.makedirs(self.docker_config, exist_ok=True)
        self.etc_docker = os.path.join(self.dir, "etc-docker")
        os.makedirs(os.path.join(self.etc_docker, "certs.d"), exist_ok=True)
        if not os.path.isdir("/etc/docker"):
            raise HarnessError("/etc/docker is missing: the private "
                               "/etc/docker of a test dockerd is mounted "
                               "over it")
        with open(self.config_path, "w") as f:
            json.dump(daemon_config or {}, f)
        self.containerd = Containerd(os.path.join(self.dir, "ctd"),
                                     namespace="moby")
        try:
            # unshare without --fork execs: the PID is dockerd's, and the
            # namespace (with its mount) ends with it.
            self.proc = ManagedProcess(
                [UNSHARE, "--mount", "--propagation", "private", "--",
                 "/bin/sh", "-c", 'mount --bind "$0" /etc/docker && '
                 'exec "$@"', self.etc_docker,
                 DOCKERD, "--config-file", self.config_path,
                 "--data-root", self.data_root, "--exec-root", self.exec_root,
                 "--pidfile", self.pidfile, "-H", self.host,
                 "--containerd", self.containerd.address,
                 "--iptables=false", "--ip6tables=false", "--bridge=none",
                 "--ip-masq=false", "--storage-driver=vfs",
                 "--log-level=debug"],
                self.log_path, env=safe_env(), name="dockerd")
            self.pid = self.proc.pid
            self.proc.wait_ready(
                lambda: self.docker("version", timeout=10,
                                    check=False).returncode == 0,
                timeout=60)
        except Exception:
            self.stop()
            raise

    def certs_dir(self, host):
        """/etc/docker/certs.d/<host> of this dockerd (created), where it
        looks for ca.crt, client.cert and client.key for `host` (as
        written in registry-mirrors: "[::1]:5000")."""
        d = os.path.join(self.etc_docker, "certs.d", host)
        os.makedirs(d, exist_ok=True)
        return d

    def docker(self, *args, timeout=180, check=True):
        env = safe_env({"DOCKER_CONFIG": self.docker_config})
        env.pop("DOCKER_HOST", None)
        return run([DOCKER, "-H", self.host] + list(args), timeout=timeout,
                   env=env, check=check)

    def log_text(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def stop(self):
        rc = None
        if getattr(self, "proc", None) is not None:
            rc = self.proc.stop(timeout=20)
        if getattr(self, "containerd", None) is not None:
            self.containerd.stop()
        if self._own_dir and os.environ.get("PORTCULLIS_KEEP_TMP") != "1":
            shutil.rmtree(self.dir, ignore_errors=True)
        return rc


def hosts_dir(base, server_host, mirror_host):
    """A containerd certs.d tree under `base` whose hosts.toml sends pulls
    for `server_host` to the mirror at `mirror_host` (plain HTTP)."""
    d = os.path.join(base, "certs.d")
    os.makedirs(os.path.join(d, server_host), exist_ok=True)
    with open(os.path.join(d, server_host, "hosts.toml"), "w") as f:
        f.write('server = "http://%s"\n\n[host."http://%s"]\n'
                '  capabilities = ["pull", "resolve"]\n' % (
                    server_host, mirror_host))
    return d
