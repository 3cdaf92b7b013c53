#!/usr/bin/env bash
# One call on the GPU machine: build bench/gpu_bench and time every kernel of a few Lloyd
# iterations with Nsight Compute (ncu, --clock-control none: the clocks stay as they are;
# METHOD.md). Where the iteration's time goes, kernel by kernel, next to the host wall clock
# gpu_bench prints per phase. Output: $OUT/profile_<shape>.csv (one row per kernel launch)
# and $OUT/profile_summary.txt (per kernel name: launches, total and mean µs per launch).
#   scripts/gpu_profile.sh ["B N K D dtype" ...]   (default: the N=1M D=128 shapes)
#   BUILD=build-cudacheck scripts/gpu_profile.sh ...  reuses gpu_check.sh's build (same flags).
#   SOURCE_SHAPES="B N K D dtype;..." also samples warp stalls per SASS instruction of one
#   assign launch per shape (ncu SourceCounters): $OUT/source_<shape>.csv, and the 40 hottest
#   instructions with their stall reasons in $OUT/source_top.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu_out}
mkdir -p "$OUT"
. scripts/gtest_prefix.sh "$OUT/build.log"
BUILD=${BUILD:-build-profile}
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DFLASHKM_CUDA=ON -DFLASHKM_PYTHON=OFF \
  -DFLASHKM_BENCH=OFF -DFLASHKM_TESTS=ON $PREFIX >> "$OUT/build.log" 2>&1 &&
  cmake --build "$BUILD" -j16 --target gpu_bench >> "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
[ -n "$NCU" ] || { echo "no ncu on this machine"; exit 1; }
ITERS=4
shapes=("$@")
[ ${#shapes[@]} -gt 0 ] || shapes=("1 1048576 1024 128 f16" "1 1048576 256 128 f16" "1 1048576 8192 128 f16" "500 20000 256 128 f16")
for s in "${shapes[@]}"; do
  tag=$(echo "$s" | tr ' ' '_')
  # Wall clock per phase without the profiler first (ncu serialises and replays kernels).
  ./$BUILD/tests/gpu/gpu_bench $s $ITERS fp16 0 0 device 2>&1 | tail -1 | tee "$OUT/wall_$tag.json"
  "$NCU" --clock-control none --metrics gpu__time_duration.sum --csv \
    ./$BUILD/tests/gpu/gpu_bench $s $ITERS fp16 0 0 device > "$OUT/profile_$tag.csv" 2> "$OUT/ncu_$tag.err"
  python3 - "$OUT/profile_$tag.csv" "$ITERS" "$s" <<'PY' | tee -a "$OUT/profile_summary.txt"
import csv, sys, collections
path, iters, shape = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rows = list(csv.reader(open(path)))  # gpu_bench's own JSON line comes first
start = next(i for i, r in enumerate(rows) if r and r[0] == "ID")
head = rows[start]; rows = [r for r in rows[start + 1:] if len(r) == len(head)]
ki, vi, ui = head.index("Kernel Name"), head.index("Metric Value"), head.index("Metric Unit")
tot = collections.OrderedDict(); cnt = collections.Counter()
for r in rows:
    v = float(r[vi].replace(",", "")); u = r[ui]
    us = {"ns": 1e-3, "nsecond": 1e-3, "us": 1.0, "usecond": 1.0, "ms": 1e3, "msecond": 1e3}[u] * v
    name = r[ki].split("(")[0][:70]
    tot[name] = tot.get(name, 0) + us; cnt[name] += 1
print(f"== {shape}: {iters} timed iterations after 2 warm-up ones, then 5 lone assigns; per kernel: launches, total us, mean us per launch")
for name, us in sorted(tot.items(), key=lambda t: -t[1]):
    print(f"  {name:72s} {cnt[name]:5d} {us:12.1f} {us/cnt[name]:10.1f}")
PY
done
IFS=';' read -r -a src_shapes <<< "${SOURCE_SHAPES:-}"
for s in "${src_shapes[@]}"; do
  [ -n "$s" ] || continue
  tag=$(echo "$s" | tr ' ' '_')
  # The 4th assign launch: past the warm-up's module load, inside the timed iterations.
  "$NCU" --clock-control none -k regex:flash_assign -s 3 -c 1 --section SourceCounters \
    --section WarpStateStats --page source --print-source sass --csv \
    ./$BUILD/tests/gpu/gpu_bench $s $ITERS fp16 0 0 device > "$OUT/source_$tag.csv" 2> "$OUT/ncu_source_$tag.err"
  python3 - "$OUT/source_$tag.csv" "$s" <<'PY' | tee -a "$OUT/source_top.txt"
import csv, sys
path, shape = sys.argv[1], sys.argv[2]
rows = [r for r in csv.reader(open(path)) if r]
start = next((i for i, r in enumerate(rows) if any("Source" == c or "Address" == c for c in r)), None)
if start is None:
    print(f"== {shape}: no source table in {path}"); sys.exit()
head = rows[start]; body = [r for r in rows[start + 1:] if len(r) == len(head)]
def col(name):
    return next((i for i, h in enumerate(head) if h == name), None)
samp = col("Warp Stall Sampling (All Samples)") or col("Warp Stall Sampling (All Cycles)")
src = col("Source")
print(f"== {shape}: columns {head}")
if samp is None:
    sys.exit()
num = lambda v: float(v.replace(",", "") or 0)
total = sum(num(r[samp]) for r in body) or 1
for r in sorted(body, key=lambda r: -num(r[samp]))[:40]:
    print(f"{100 * num(r[samp]) / total:6.2f}%  {r[src][:90]}")
PY
done
