#!/usr/bin/env python3
"""Checks a metrics.jsonl against docs/metrics.md: every field path a record holds
(nested objects joined with '.', lists are leaves) must appear in the docs as `path`, and
every record must carry a numeric UNIX `time` and `elapsed_s`, both non-decreasing.

    check_metrics_doc.py RUN/metrics.jsonl docs/metrics.md
"""
import json
import re
import sys


def paths(obj, prefix=""):
    for key, value in obj.items():
        path = prefix + key
        if isinstance(value, dict):
            yield from paths(value, path + ".")
        else:
            yield path


def main():
    if len(sys.argv) != 3:
        print("usage: check_metrics_doc.py METRICS_JSONL METRICS_MD", file=sys.stderr)
        return 2
    metrics, doc = sys.argv[1], sys.argv[2]
    documented = set(re.findall(r"`([A-Za-z_][A-Za-z0-9_.]*)`", open(doc).read()))
    problems, last_time, last_elapsed, seen = [], -1.0, -1.0, set()
    for n, line in enumerate(open(metrics), 1):
        rec = json.loads(line)
        for p in paths(rec):
            seen.add(p)
            if p not in documented:
                problems.append("line %d: field '%s' is not documented in %s" % (n, p, doc))
        t, e = rec.get("time"), rec.get("elapsed_s")
        if not isinstance(t, (int, float)) or not isinstance(e, (int, float)):
            problems.append("line %d: no numeric time / elapsed_s" % n)
            continue
        # A time stamp of this century, not a step count or a duration.
        if not 1.5e9 < t < 4e9:
            problems.append("line %d: time %r is not a UNIX time stamp" % (n, t))
        if t < last_time or e < last_elapsed:
            problems.append("line %d: time or elapsed_s went backwards" % n)
        last_time, last_elapsed = t, e
    for p in problems[:20]:
        print(p, file=sys.stderr)
    if problems:
        return 1
    print("%d fields, all documented; every record time-stamped" % len(seen))
    return 0


if __name__ == "__main__":
    sys.exit(main())
