#!/usr/bin/env bash
# Out-of-core CPU fit: peak resident memory against the size of a memory-mapped .npy, with
# and without a --max-memory budget, and the cost of streaming (ms/iter, read GB/s).
#
#   [REPEAT=2] bench/ooc_cpu.sh [BUILD_DIR] [N] [D] [BUDGET] [DTYPES]
#   defaults:                     build      12000000 128 1G "f32 f16"
# TAG=name suffixes the results file. REPEAT runs the pair (default budget, BUDGET) that many times, alternating, so that the
# noise of a shared machine shows in the table.
#
# For each dtype it writes an N x D blobs file (bench/make_blobs_npy), then runs
#   flashkm fit FILE -k 16 --init random --max-iter 3 --tol 0 [--max-memory BUDGET]
# under /usr/bin/time (peak RSS counts the mapped file pages the process holds) and checks
# that both runs give the same centroids. Results: bench/results/ooc_cpu_<date>.{json,md}.
# The file is in the page cache after it is written (no root to drop it), so GB/s is the
# rate of reading a cached mapping, not of a disk: it shows the cost of dropping pages and
# faulting them in again, not the disk's speed.
set -euo pipefail
BUILD=${1:-build}
N=${2:-12000000}
D=${3:-128}
BUDGET=${4:-1G}
DTYPES=${5:-"f32 f16"}
K=16
ITERS=3
REPEAT=${REPEAT:-1}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT_DIR="$ROOT/bench/results"
STAMP=$(date -u +%Y-%m-%d)
WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/flashkm_ooc.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}  # shared machine: do not spin

rows_json=()
for dtype in $DTYPES; do
  file="$WORK/x_$dtype.npy"
  "$BUILD/bench/make_blobs_npy" "$file" "$N" "$D" "$dtype" 7
  bytes=$(stat -c %s "$file")
  for budget in $(for r in $(seq "$REPEAT"); do echo auto "$BUDGET"; done); do
    extra=()
    [ "$budget" != auto ] && extra=(--max-memory "$budget")
    /usr/bin/time -f '%M %e' -o "$WORK/time.txt" \
      "$BUILD/flashkm" fit "$file" -k $K --init random --max-iter $ITERS --tol 0 -q \
      --report "$WORK/report_$budget.json" --centroids "$WORK/c_${dtype}_${budget}.npy" "${extra[@]}"
    read -r peak_kb wall_s < "$WORK/time.txt"
    row=$(python3 - "$WORK/report_$budget.json" "$dtype" "$budget" "$bytes" "$peak_kb" "$wall_s" "$N" "$D" \
      "$(cat /proc/loadavg | cut -d' ' -f1)" <<'PY'
import json, sys
rep, dtype, budget, size, peak_kb, wall, n, d, load = sys.argv[1:]
r = json.load(open(rep))
its = r["iterations"]
ms = sorted(it["ms"] for it in its)[len(its) // 2]  # median iteration
size = int(size)
print(json.dumps({"dtype": dtype, "n": int(n), "d": int(d), "file_bytes": size, "budget": budget,
                  "peak_rss_bytes": int(peak_kb) * 1024, "peak_rss_over_file": round(int(peak_kb) * 1024 / size, 3),
                  "ms_per_iter_median": round(ms, 1), "read_gb_per_s": round(size / ms / 1e6, 2),
                  "wall_s": float(wall), "load_avg_1min_after": float(load), "inertia": r["inertia"]}))
PY
)
    echo "$row"
    rows_json+=("$row")
  done
  cmp "$WORK/c_${dtype}_auto.npy" "$WORK/c_${dtype}_${BUDGET}.npy" >/dev/null \
    || { echo "centroids differ between budgets for $dtype" >&2; exit 1; }
  rm -f "$file"
done

mkdir -p "$OUT_DIR"
host="$(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB RAM, $(uname -r)"
python3 - "$OUT_DIR/ooc_cpu_${STAMP}${TAG:+_$TAG}" "$host" "${rows_json[@]}" <<'PY'
import json, sys
base, host, rows = sys.argv[1], sys.argv[2], [json.loads(r) for r in sys.argv[3:]]
json.dump({"host": host, "k": 16, "init": "random", "max_iter": 3, "runs": rows}, open(base + ".json", "w"), indent=1)
with open(base + ".md", "w") as f:
    f.write(f"# Out-of-core CPU fit ({host})\n\nflashkm fit -k 16 --init random --max-iter 3 --tol 0; "
            "peak RSS from /usr/bin/time (mapped file pages included); file in the page cache.\n\n")
    f.write("| dtype | N x D | file | --max-memory | peak RSS | RSS/file | ms/iter | read GB/s | wall s | load avg |\n")
    f.write("|---|---|---|---|---|---|---|---|---|---|\n")
    for r in rows:
        f.write(f"| {r['dtype']} | {r['n']} x {r['d']} | {r['file_bytes']/2**30:.2f} GiB | {r['budget']} | "
                f"{r['peak_rss_bytes']/2**30:.2f} GiB | {r['peak_rss_over_file']} | {r['ms_per_iter_median']} | "
                f"{r['read_gb_per_s']} | {r['wall_s']} | {r['load_avg_1min_after']} |\n")
    f.write("\nSame centroids (byte for byte) with and without the budget, for every dtype. The "
            "machine is shared (load avg = other work too): ms/iter varies run to run.\n")
PY
cat "$OUT_DIR/ooc_cpu_${STAMP}${TAG:+_$TAG}.md"
