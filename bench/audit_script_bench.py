#!/usr/bin/env python3
"""audit_script_bench.py: Redis's CPU per record for the audit writer's
Lua script alone, without a gateway: versions of the script, each taken
from a copy of src/audit_redis.c (audit_lua[], with audit.h's macros),
run in alternating rounds against one private redis-server on
127.0.0.1 (no persistence), stopped by PID on exit.

Each round sends BATCHES calls of 100 records in the gateway's layout
(audit_send(): a batch of consecutive records of one run, each with its
subject and repository index keys, time, ref tail and packed record;
records like bench/audit_bench.sh part 4's cached manifest GETs, so
three index streams a call), 10 calls pipelined, and counts the
server's utime + stime over them; the streams are deleted between
rounds, outside the count.  A "floor" script that only XADDs each packed
record shows what the script adds to the writes themselves.  Run under
the bench lock: flock /work/wt/bench.lock bench/audit_script_bench.py ...

usage: audit_script_bench.py [-r ROUNDS] [-b BATCHES] [--floor] FILE...
  e.g. git show main:src/audit_redis.c > /tmp/before.c
       bench/audit_script_bench.py --floor /tmp/before.c src/audit_redis.c
"""
import argparse, os, re, signal, socket, statistics, subprocess, sys
import tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
FLOOR = ("local nrec = (#KEYS - 3) / 2\n"
         "for i = 0, nrec - 1 do\n"
         "  redis.call('XADD', KEYS[1], '*', 'record', ARGV[9 + 3 * i])\n"
         "end\nreturn nrec\n")
K = 100


def script_of(src):
    """The Lua text of audit_lua[] in a copy of audit_redis.c."""
    hdr = open(os.path.join(HERE, "..", "src", "audit.h")).read()
    defs = dict(re.findall(r'#define\s+(AUDIT_\w+)\s+("[^"]*")', hdr))
    text = open(src).read()
    body = text[text.index("static const char audit_lua[] ="):]
    body = body[:body.index(";\n")]
    out = ""
    for tok in re.findall(r'"(?:[^"\\]|\\.)*"|AUDIT_\w+', body):
        if tok.startswith("AUDIT_"):
            tok = defs[tok]
        out += bytes(tok[1:-1], "utf-8").decode("unicode_escape")
    return out


def resp(args):
    b = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a.encode() if isinstance(a, str) else a
        b.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(b)


class Conn:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.buf = b""

    def line(self):
        while b"\r\n" not in self.buf:
            d = self.s.recv(65536)
            if not d:
                raise RuntimeError("connection closed")
            self.buf += d
        l, self.buf = self.buf.split(b"\r\n", 1)
        return l

    def reply(self):
        l = self.line()
        t = l[:1]
        if t == b"$":
            n = int(l[1:])
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self.buf += self.s.recv(65536)
            v, self.buf = self.buf[:n], self.buf[n + 2:]
            return v
        if t == b"*":
            return [self.reply() for _ in range(int(l[1:]))]
        if t == b"-":
            raise RuntimeError(l.decode())
        if t == b":":
            return int(l[1:])
        return l[1:]

    def cmd(self, *a):
        self.s.sendall(resp(a))
        return self.reply()


def cpu_ticks(pid):
    f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])


FIELDS = ["", "", "", "gw1", "127.0.0.1", "Go-http-client/1.1", "anonymous",
          "none", "pull", "bench/app", "sha256:" + "ab" * 32, "up1", "GET",
          "/v2/bench/app/manifests/sha256:" + "ab" * 32, "200", "", "allow",
          "open", "0", "528", "0", "hit", ""]


def batch(sha, stream, run, n0):
    now = str(int(time.time() * 1000))
    keys = [stream, stream + ":writers", stream + ":indexes"]
    argv = ["gw1", str(run), str(n0), "0", "0", "100000"]
    for n in range(n0, n0 + K):
        v = list(FIELDS)
        v[0], v[1], v[2] = now, "gw1/%d-%d" % (run, n), "req-%08d" % n
        keys += [stream + ":subject:anonymous",
                 stream + ":repository:bench/app"]
        argv += [now, " pull 200 allow;", "\t".join(v) + "\t"]
    return resp(["EVALSHA", sha, str(len(keys))] + keys + argv)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-r", "--rounds", type=int, default=5)
    ap.add_argument("-b", "--batches", type=int, default=2000)
    ap.add_argument("--floor", action="store_true")
    ap.add_argument("files", nargs="+")
    o = ap.parse_args()
    if not 1 <= o.rounds <= 100 or not 1 <= o.batches <= 100000:
        sys.exit("rounds 1..100, batches 1..100000")
    variants = [(f, script_of(f)) for f in o.files]
    if o.floor:
        variants.append(("floor (XADD only)", FLOOR))
    print("start:", subprocess.run(["uptime"], capture_output=True,
                                   text=True).stdout.strip())
    work = tempfile.mkdtemp(prefix="audit-script-bench.")
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    rs = subprocess.Popen(["redis-server", "--port", str(port), "--bind",
                           "127.0.0.1", "--dir", work, "--save", "",
                           "--appendonly", "no"], stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                c = Conn(port)
                c.cmd("PING")
                break
            except OSError:
                time.sleep(0.1)
        else:
            sys.exit("redis-server did not start")
        shas = [c.cmd("SCRIPT", "LOAD", text).decode()
                for _, text in variants]
        tck = os.sysconf("SC_CLK_TCK")
        per = {i: [] for i in range(len(variants))}
        run, nxt = int(time.time() * 1000), [1] * len(variants)
        for r in range(o.rounds):
            for v in range(len(variants)):
                st = "sb%d" % v
                cmds = []
                for _ in range(o.batches):
                    cmds.append(batch(shas[v], st, run, nxt[v]))
                    nxt[v] += K
                c0 = cpu_ticks(rs.pid)
                sent = got = 0
                while got < o.batches:
                    while sent < o.batches and sent - got < 10:
                        c.s.sendall(cmds[sent])
                        sent += 1
                    x = c.reply()
                    got += 1
                    if x != K:
                        sys.exit("%s: reply %r" % (variants[v][0], x))
                c1 = cpu_ticks(rs.pid)
                per[v].append((c1 - c0) * 1e6 / tck / (o.batches * K))
                c.cmd("DEL", st, st + ":subject:anonymous",
                      st + ":repository:bench/app",
                      st + ":repository:bench/", st + ":indexes")
        print("Redis CPU per record, us (median of %d rounds of %d "
              "records; each round):" % (o.rounds, o.batches * K))
        for v, (name, _) in enumerate(variants):
            print("  %-40s %5.2f   %s" % (name, statistics.median(per[v]),
                  " ".join("%.2f" % x for x in per[v])))
    finally:
        rs.send_signal(signal.SIGTERM)
        rs.wait(timeout=30)
        subprocess.run(["rm", "-rf", work])
    print("end:", subprocess.run(["uptime"], capture_output=True,
                                 text=True).stdout.strip())


if __name__ == "__main__":
    main()
