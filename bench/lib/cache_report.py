#!/usr/bin/python3
"""cache_report.py RESULTS BIG MID TICK: the summary of bench/cache_bench.sh.

RESULTS lines are "name value ttfb cpu_ticks": for transfers value is
seconds (ttfb in seconds, cpu in clock ticks of the serving process), for
conc_* the wall time of 16 concurrent 64 MiB pulls, for mfst_* requests/s (then the requests, a fifth field),
for rss_* a peak RSS in KiB, for cold_upstream_gets a count.  Prints
medians and the ratios the cache's goals are stated in."""

import statistics
import sys
from collections import defaultdict


def main():
    path, big, mid, tick = sys.argv[1], int(sys.argv[2]), \
        int(sys.argv[3]), int(sys.argv[4])
    rows = defaultdict(list)
    for line in open(path):
        f = line.split()
        if len(f) >= 4:
            rows[f[0]].append(tuple(float(x) for x in f[1:]))
    gib = 1 << 30

    def med(name, i=0):
        v = [r[i] for r in rows.get(name, [])]
        return statistics.median(v) if v else None

    def mbs(name, size):
        s = med(name)
        return size / s / 1e6 if s else None

    def cpu_per_gib(name, size):
        c = med(name, 2)
        return c / tick / (size / gib) if c is not None else None

    def line(label, name, size):
        m = mbs(name, size)
        if m is None:
            return None
        print("  %-26s %9.0f MB/s  cpu %6.3f s/GiB" % (
            label, m, cpu_per_gib(name, size)))
        return m

    print("\nwarm %d MiB blob (median of runs)" % (big >> 20))
    pa = line("portcullis sendfile=auto", "warm_auto", big)
    po = line("portcullis sendfile=off", "warm_off", big)
    n1 = line("nginx static sendfile on", "nginx_sendfile_on", big)
    n0 = line("nginx static sendfile off", "nginx_sendfile_off", big)
    best = max(x for x in (n1, n0) if x)
    bestname = "nginx_sendfile_on" if best == n1 else "nginx_sendfile_off"
    mine = max(x for x in (pa, po) if x)
    minename = "warm_auto" if mine == pa else "warm_off"
    print("  ratio portcullis best (%s) / nginx best (%s): %.2fx "
          "(goal >= 1.0); cpu/GiB %.3f vs %.3f" % (
              minename, bestname, mine / best,
              cpu_per_gib(minename, big), cpu_per_gib(bestname, big)))

    print("\ncold %d MiB blob through an empty cache" % (big >> 20))
    d = line("direct from docker-registry", "direct", big)
    c = line("portcullis cold", "cold", big)
    print("  ratio cold / direct: %.2fx (goal >= 0.6)" % (c / d))
    print("  time to first byte (median): %.1f ms (goal < 50)" % (
        med("cold", 1) * 1000))
    print("  upstream blob GETs per cold pull: %s (must be 1)" % (
        ",".join("%d" % r[0] for r in rows["cold_upstream_gets"])))

    print("\n16 concurrent warm pulls of a %d MiB blob" % (mid >> 20))
    tot = 16 * mid
    cp = line("portcullis", "conc_portcullis", tot)
    cn = line("nginx proxy_cache", "conc_nginx_proxy_cache", tot)
    print("  ratio: %.2fx" % (cp / cn))

    def us_per_req(name):
        v = [r[2] / tick * 1e6 / r[3] for r in rows.get(name, [])
             if len(r) > 3 and r[3] > 0]
        return statistics.median(v) if v else float("nan")

    if rows.get("mfst_portcullis_auto"):
        print("\nmanifest GET by digest (median req/s, server CPU/request)")
        for k in ("mfst_portcullis_auto", "mfst_portcullis_on",
                  "mfst_portcullis_off", "mfst_nginx_sendfile_on",
                  "mfst_nginx_sendfile_off"):
            if rows.get(k):
                print("  %-26s %9.0f req/s %7.1f us" % (
                    k[5:], med(k), us_per_req(k)))
        nb = max(med("mfst_nginx_sendfile_on"),
                 med("mfst_nginx_sendfile_off"))
        print("  ratio portcullis auto / nginx best: %.2fx (goal >= 0.6)"
              % (med("mfst_portcullis_auto") / nb))

    print("\npeak RSS")
    for k in ("rss_cold", "rss_warm_auto", "rss_warm_off", "rss_conc",
              "rss_nginx"):
        if rows.get(k):
            print("  %-14s %7.1f MiB" % (k[4:], max(
                r[0] for r in rows[k]) / 1024.0))


if __name__ == "__main__":
    main()
