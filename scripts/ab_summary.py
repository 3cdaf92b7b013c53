#!/usr/bin/env python3
"""Medians of gpu_bench JSON lines grouped by config and variant, for scripts/gpu_ab.sh
(variant field "tree": new / base) and scripts/gpu_env_ab.sh (field "value").

  ab_summary.py RUNS.jsonl FIELD [BASE]

Each line of RUNS.jsonl: {FIELD: variant, "args": config, "result": gpu_bench's JSON}.
Per config and variant (in first-seen order) the median of each timing key; with BASE, each
other variant's median ms_per_iter over BASE's.
"""
import collections
import json
import statistics
import sys

KEYS = ["ms_per_iter", "assign_ms_in_loop", "update_ms_in_loop", "set_ms_in_loop", "assign_ms_median", "extra_MB_held"]


def main():
    path, field = sys.argv[1], sys.argv[2]
    base = sys.argv[3] if len(sys.argv) > 3 else None
    runs = collections.OrderedDict()
    for line in open(path):
        try:
            j = json.loads(line)
        except ValueError:
            continue
        if isinstance(j.get("result"), dict):
            runs.setdefault((j["args"], str(j[field])), []).append(j["result"])
    med = lambda rs, k: statistics.median(r.get(k, float("nan")) for r in rs)
    print(f"config | {field} | " + " | ".join(KEYS) + " (medians)")
    for args in dict.fromkeys(a for a, _ in runs):
        variants = [v for a, v in runs if a == args]
        for v in variants:
            print(f"{args} | {v} | " + " | ".join(f"{med(runs[(args, v)], k):.4f}" for k in KEYS))
        if base in variants:
            for v in variants:
                if v != base:
                    ratio = med(runs[(args, v)], "ms_per_iter") / med(runs[(args, base)], "ms_per_iter")
                    print(f"{args} | {v}/{base} ms_per_iter {ratio:.3f}")


if __name__ == "__main__":
    main()
