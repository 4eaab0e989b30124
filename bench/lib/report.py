#!/usr/bin/python3
"""report.py RESULTS SIZE: the summary table of bench/blob_1g.sh.

RESULTS has one line per measurement: op path run seconds hwm_kib reset
(hwm_kib is "-" for the direct path, which has no proxy process; reset is 1
when the peak was reset before the measurement, so it is the peak of that
operation alone, 0 when it is the peak since the process started).
Prints, per operation and path, the median MB/s (10^6 bytes/s, blob size
over curl's total time), the range, the ratio of medians to direct, and the
largest peak RSS seen over the runs."""

import statistics
import sys
from collections import OrderedDict


def main():
    path, size = sys.argv[1], int(sys.argv[2])
    rows = OrderedDict()
    for line in open(path):
        f = line.split()
        if len(f) < 6:
            continue
        op, name, _run, secs, hwm, reset = f[:6]
        r = rows.setdefault((op, name), {"mbs": [], "hwm": [], "reset": True})
        r["mbs"].append(size / float(secs) / 1e6)
        if hwm != "-":
            r["hwm"].append(int(hwm))
            r["reset"] = r["reset"] and reset == "1"
    print("%-5s %-11s %9s %19s %8s %16s" % (
        "op", "path", "MB/s", "(min..max)", "vs direct", "peak RSS"))
    for (op, name), r in rows.items():
        med = statistics.median(r["mbs"])
        direct = rows.get((op, "direct"))
        ratio = med / statistics.median(direct["mbs"]) if direct else None
        if r["hwm"]:
            rss = "%.1f MiB%s" % (max(r["hwm"]) / 1024.0,
                                  "" if r["reset"] else " (*)")
        else:
            rss = "-"
        print("%-5s %-11s %9.1f %19s %8s %16s" % (
            op, name, med, "(%.0f..%.0f)" % (min(r["mbs"]), max(r["mbs"])),
            "%.2f" % ratio if ratio is not None else "-", rss))
    if any(r["hwm"] and not r["reset"] for r in rows.values()):
        print("(*) VmHWM since process start: /proc/PID/clear_refs could "
              "not be reset")


if __name__ == "__main__":
    main()
