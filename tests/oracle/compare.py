#!/usr/bin/python3
"""Compare the C++ classifier's JSON lines with the independent oracle.

  compare.py --config tests/oracle/oracle.toml --pcap F.pcap [ACTUAL|-]

ACTUAL (default: standard input) holds one JSON object per packet, as printed by
`vipfarmctl owner --config C --pcap F --json`: {"index", "verdict", "reason", "group",
"bucket", ...}. Accepted spellings: verdict "malformed/<reason>" or "malformed" with a
"reason" field; "accept" and "not_owner" (a farm verdict with its owner decided) count
as "farm"; a missing or null reason/group/bucket reads as ""/""/-1; a missing index is
the line's position; other fields are ignored.

Exit status 0 when every packet agrees and at least --min packets (10,000) were
compared, 1 otherwise. The last line is `oracle: N passed, M failed`.
"""

import argparse
import collections
import json
import os
import sys

sys.dont_write_bytecode = True     # keep tests/oracle/ free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import oracle  # noqa: E402

FIELDS = ("verdict", "reason", "group", "bucket")
FARM_ALIASES = ("accept", "not_owner", "farm")


def normalize(obj):
    v = obj.get("verdict")
    v = "" if v is None else str(v)
    reason = obj.get("reason")
    reason = "" if reason is None else str(reason)
    if v.startswith("malformed/"):
        v, r2 = v.split("/", 1)
        reason = reason or r2
    if v in FARM_ALIASES:
        v = "farm"
    group = obj.get("group")
    group = "" if group is None else str(group)
    bucket = obj.get("bucket")
    bucket = -1 if bucket is None else bucket
    try:
        bucket = int(bucket)
    except (TypeError, ValueError):
        pass
    return (v, reason, group, bucket)


def read_actual(stream):
    got = {}
    problems = []
    pos = 0
    for lineno, line in enumerate(stream, 1):
        line = line.strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            problems.append("line %d: not JSON: %.80s" % (lineno, line))
            continue
        if not isinstance(obj, dict) or "verdict" not in obj:
            problems.append("line %d: no verdict, ignored: %.80s" % (lineno, line))
            continue
        idx = obj.get("index", pos)
        if isinstance(idx, str) and idx.isdigit():
            idx = int(idx)
        pos += 1
        if idx in got:
            problems.append("line %d: index %s given twice" % (lineno, idx))
        got[idx] = (normalize(obj), obj)
    return got, problems


def label(v):
    return v[0] + ("/" + v[1] if v[1] else "")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--config", required=True)
    ap.add_argument("--pcap", required=True)
    ap.add_argument("--min", type=int, default=10000,
                    help="fail when fewer packets were compared (default 10000)")
    ap.add_argument("--show", type=int, default=20, help="mismatches to print")
    ap.add_argument("actual", nargs="?", default="-",
                    help="the C++ tool's JSON lines (default: standard input)")
    args = ap.parse_args()

    frames = oracle.read_pcap(args.pcap)
    cfg = oracle.Config(args.config)
    expected = [oracle.classify(cfg, fr) for fr in frames]
    if args.actual == "-":
        got, problems = read_actual(sys.stdin)
    else:
        with open(args.actual) as f:
            got, problems = read_actual(f)

    for p in problems[:10]:
        print("warning: " + p)
    passed = failed = 0
    mismatches = []
    per_field = collections.Counter()
    for i, exp in enumerate(expected):
        if i not in got:
            failed += 1
            mismatches.append((i, exp, None, ["missing"]))
            per_field["missing"] += 1
            continue
        act = got[i][0]
        diff = [FIELDS[k] for k in range(4) if exp[k] != act[k]]
        if diff:
            failed += 1
            mismatches.append((i, exp, got[i][1], diff))
            for d in diff:
                per_field[d] += 1
        else:
            passed += 1
    extra = sorted(k for k in got if not (isinstance(k, int) and 0 <= k < len(expected)))
    if extra:
        failed += len(extra)
        per_field["extra"] += len(extra)
        for k in extra[:args.show]:
            mismatches.append((k, None, got[k][1], ["extra"]))

    exp_hist = collections.Counter(label(v) for v in expected)
    act_hist = collections.Counter(label(v[0]) for v in got.values())
    print("packets: %d in the pcap, %d answers from the tool" % (len(expected), len(got)))
    print("%-32s %8s %8s" % ("verdict", "oracle", "tool"))
    for k in sorted(set(exp_hist) | set(act_hist)):
        mark = "" if exp_hist[k] == act_hist[k] else "  <-"
        print("%-32s %8d %8d%s" % (k, exp_hist[k], act_hist[k], mark))
    print("mismatches: %d%s" % (failed, (" (" + ", ".join(
        "%s %d" % kv for kv in sorted(per_field.items())) + ")") if per_field else ""))
    for i, exp, act, diff in mismatches[:args.show]:
        print("--- packet %s: %s" % (i, ", ".join(diff)))
        if exp is not None:
            print("    oracle: %s" % oracle.to_json(i, exp))
        if act is not None:
            print("    tool:   %s" % json.dumps(act, sort_keys=True))
        if isinstance(i, int) and 0 <= i < len(frames):
            print("    frame (%d bytes): %s" % (len(frames[i]), frames[i][:160].hex()))
    compared = passed + failed - len(extra)
    ok = failed == 0 and compared >= args.min
    if compared < args.min:
        print("error: %d packets compared, at least %d needed" % (compared, args.min))
    print("oracle: %d passed, %d failed" % (passed, failed))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
