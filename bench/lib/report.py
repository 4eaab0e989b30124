#!/usr/bin/python3
"""report.py RESULTS SIZE [TICK]: the summary table of bench/blob_1g.sh.

RESULTS has one line per measurement: op path run seconds hwm_kib reset
[cpu_ticks [upstream_gets]] (hwm_kib is "-" for the direct path, which has
no proxy process; reset is 1 when the peak was reset before the
measurement, so it is the peak of that operation alone, 0 when it is the
peak since the process started; cpu_ticks is the proxy's utime + stime
over the transfer in TICK-per-second units, "-" for none; upstream_gets
the upstream GETs of the blob a cached pull made).
Prints, per operation and path, the median MB/s (10^6 bytes/s, blob size
over curl's total time), the range, the ratio of medians to direct, the
median CPU seconds per GiB, and the largest peak RSS seen over the runs;
then the pass-through pull (portcullis without a cache) against nginx's
proxy_pass and the cold cached pull of portcullis against the reference
registry's proxy mode."""

import statistics
import sys
from collections import OrderedDict


def main():
    path, size = sys.argv[1], int(sys.argv[2])
    tick = float(sys.argv[3]) if len(sys.argv) > 3 else 100.0
    gib = size / float(1 << 30)
    rows = OrderedDict()
    for line in open(path):
        f = line.split()
        if len(f) < 6:
            continue
        op, name, _run, secs, hwm, reset = f[:6]
        r = rows.setdefault((op, name), {"mbs": [], "hwm": [], "reset": True,
                                         "cpu": [], "gets": []})
        r["mbs"].append(size / float(secs) / 1e6)
        if hwm != "-":
            r["hwm"].append(int(hwm))
            r["reset"] = r["reset"] and reset == "1"
        if len(f) > 6 and f[6] != "-":
            r["cpu"].append(int(f[6]) / tick / gib)
        if len(f) > 7:
            r["gets"].append(int(f[7]))
    print("%-4s %-22s %8s %13s %6s %9s %14s %s" % (
        "op", "path", "MB/s", "(min..max)", "/direct", "CPU s/GiB",
        "peak RSS", "upstream GETs"))
    for (op, name), r in rows.items():
        med = statistics.median(r["mbs"])
        direct = rows.get((op, "direct"))
        ratio = med / statistics.median(direct["mbs"]) if direct else None
        if r["hwm"]:
            rss = "%.1f MiB%s" % (max(r["hwm"]) / 1024.0,
                                  "" if r["reset"] else " (*)")
        else:
            rss = "-"
        print("%-4s %-22s %8.1f %13s %6s %9s %14s %s" % (
            op, name, med, "(%.0f..%.0f)" % (min(r["mbs"]), max(r["mbs"])),
            "%.2f" % ratio if ratio is not None else "-",
            "%.2f" % statistics.median(r["cpu"]) if r["cpu"] else "-", rss,
            ",".join(str(g) for g in r["gets"]) if r["gets"] else ""))
    if any(r["hwm"] and not r["reset"] for r in rows.values()):
        print("(*) VmHWM since process start: /proc/PID/clear_refs could "
              "not be reset")
    pt, ng = rows.get(("pull", "portcullis")), rows.get(("pull", "nginx"))
    if pt and ng:
        a, b = statistics.median(pt["mbs"]), statistics.median(ng["mbs"])
        print("pass-through pull (cache off): portcullis %.0f MB/s, nginx "
              "proxy_pass %.0f MB/s: %.2fx" % (a, b, a / b))
    pc = rows.get(("pull", "portcullis-cache-cold"))
    rp = rows.get(("pull", "registry-proxy-cold"))
    if pc and rp:
        a, b = statistics.median(pc["mbs"]), statistics.median(rp["mbs"])
        print("cold cached pull: portcullis %.0f MB/s, registry proxy mode "
              "%.0f MB/s: %.2fx" % (a, b, a / b))
    fl = rows.get(("pull", "floor-cold"))
    dr = rows.get(("pull", "direct"))
    if fl:
        f = statistics.median(fl["mbs"])
        parts = ["floor %.0f MB/s" % f]
        if pc:
            parts.append("portcullis/floor %.2fx" %
                         (statistics.median(pc["mbs"]) / f))
        if dr:
            parts.append("floor/direct %.2fx" %
                         (f / statistics.median(dr["mbs"])))
        if rp:
            parts.append("floor/registry proxy %.2fx" %
                         (f / statistics.median(rp["mbs"])))
        if pc and pc["cpu"] and fl["cpu"]:
            parts.append("CPU s/GiB portcullis %.2f, floor %.2f" % (
                statistics.median(pc["cpu"]), statistics.median(fl["cpu"])))
        print("cold fill floor: " + ", ".join(parts))


if __name__ == "__main__":
    main()
