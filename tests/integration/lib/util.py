"""Small helpers shared by the integration harness: free loopback ports,
bounded polling, subprocess runs with timeouts, and managed background
processes that are always stopped by their own PID."""

import os
import signal
import socket
import subprocess
import time


class HarnessError(Exception):
    """A helper could not do what a test asked (a tool failed, a server did
    not come up).  The message carries the tool's stderr or log tail."""


def free_port():
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout=30.0, interval=0.05, what="condition"):
    """Poll `predicate` until it returns a truthy value and return that value.
    Exceptions raised by the predicate count as "not yet".  Raises
    HarnessError naming `what` (and the last exception) after `timeout`."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            v = predicate()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - "not yet" includes errors
            last_exc = e
        if time.monotonic() >= deadline:
            msg = "timed out after %.1fs waiting for %s" % (timeout, what)
            if last_exc is not None:
                msg += " (last error: %r)" % (last_exc,)
            raise HarnessError(msg)
        time.sleep(interval)


def port_open(port, host="127.0.0.1"):
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def tail(path, nbytes=4000):
    """The last `nbytes` of a file as text ('' when it does not exist)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - nbytes))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


# Any fallback to the outside world (dockerd falling back to Docker Hub, a
# client following a bad redirect) must hit a closed loopback port instead.
PROXY_ENV = {
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "http_proxy": "http://127.0.0.1:9",
    "https_proxy": "http://127.0.0.1:9",
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
}


def safe_env(extra=None):
    """os.environ with the loopback-only proxy settings (and `extra`)."""
    env = dict(os.environ)
    env.update(PROXY_ENV)
    if extra:
        env.update(extra)
    return env


def run(argv, timeout=120, env=None, check=True, input=None, cwd=None):
    """Run a command to completion with a timeout.  Returns the
    CompletedProcess (text mode).  With check=True a non-zero exit raises
    HarnessError carrying the command line, exit code and stderr."""
    try:
        cp = subprocess.run(
            [str(a) for a in argv], capture_output=True, text=True,
            timeout=timeout, env=env if env is not None else safe_env(),
            input=input, cwd=cwd, stdin=None if input is not None
            else subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise HarnessError("timeout after %ss: %s\nstdout: %s\nstderr: %s" % (
            timeout, " ".join(map(str, argv)), e.stdout, e.stderr)) from None
    if check and cp.returncode != 0:
        raise HarnessError("command failed (exit %d): %s\nstdout: %s\n"
                           "stderr: %s" % (cp.returncode,
                                           " ".join(map(str, argv)),
                                           cp.stdout[-4000:],
                                           cp.stderr[-4000:]))
    return cp


class ManagedProcess:
    """A background server this harness started.  Its stdout and stderr go
    to files; stop() ends exactly this PID (SIGTERM, then SIGKILL after a
    deadline) and is safe to call twice."""

    def __init__(self, argv, stdout_path, stderr_path=None, env=None,
                 cwd=None, name=None):
        self.argv = [str(a) for a in argv]
        self.name = name or os.path.basename(self.argv[0])
        self.stdout_path = str(stdout_path)
        self.stderr_path = str(stderr_path or stdout_path)
        out = open(self.stdout_path, "ab")
        err = out if self.stderr_path == self.stdout_path else \
            open(self.stderr_path, "ab")
        try:
            self.proc = subprocess.Popen(
                self.argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                env=env if env is not None else safe_env(), cwd=cwd)
        finally:
            out.close()
            if err is not out:
                err.close()
        self.pid = self.proc.pid

    def alive(self):
        return self.proc.poll() is None

    def returncode(self):
        return self.proc.poll()

    def wait_ready(self, predicate, timeout=30.0, what=None):
        """Wait for `predicate`; fail early (with the log tail) if the
        process exits first."""
        what = what or ("%s to become ready" % self.name)

        def check():
            if not self.alive():
                raise HarnessError("%s exited with %s before ready:\n%s" % (
                    self.name, self.proc.returncode, self.log_tail()))
            return predicate()
        try:
            return wait_for(check, timeout=timeout, what=what)
        except HarnessError as e:
            if not self.alive() and "exited" in str(e):
                raise
            raise HarnessError("%s\nlog tail:\n%s" % (e, self.log_tail())) \
                from None

    def log_tail(self, nbytes=4000):
        t = tail(self.stderr_path, nbytes)
        if self.stdout_path != self.stderr_path:
            t = tail(self.stdout_path, nbytes // 2) + t
        return t

    def stop(self, timeout=15.0, sig=signal.SIGTERM):
        """Signal this PID, wait up to `timeout`, then SIGKILL.  Returns the
        exit code."""
        if self.proc.poll() is not None:
            return self.proc.returncode
        try:
            self.proc.send_signal(sig)
        except ProcessLookupError:
            pass
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=10)


def pid_alive(pid):
    """True when a process with this PID exists (and is not a zombie)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def kill_pid(pid, timeout=10.0):
    """End a process that one of our servers started on our behalf (e.g. a
    containerd shim), by its PID: SIGTERM, bounded wait, SIGKILL."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        wait_for(lambda: not pid_alive(pid), timeout=timeout,
                 what="pid %d to exit" % pid)
    except HarnessError:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
