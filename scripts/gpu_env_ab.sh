#!/usr/bin/env bash
# One call on the GPU machine: one build of bench/gpu_bench, then the same configs under each
# value of an environment variable the code reads (an experiment's switch), alternating values
# within each repetition so that drift hits all alike (cross-call variance reached ~7 %:
# METHOD.md). Cheaper than scripts/gpu_ab.sh (one tree, one build) when the variants are
# switches of one binary.
#   scripts/gpu_env_ab.sh VAR "v1 v2 ..." [--reps R] [--tests FILTER] "B N K D dtype iters precision certify" ...
# --tests FILTER: flashkm_test_gpu with --gtest_filter=FILTER under each value first.
# Output: $OUT/env_ab.jsonl (every gpu_bench line with "value"), $OUT/env_ab_summary.txt
# (medians per config and value), $OUT/test_<value>.log.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu_out}
mkdir -p "$OUT"
VAR=$1; VALUES=$2; shift 2
REPS=3; FILTER=""
while [ $# -gt 0 ]; do
  case "$1" in --reps) REPS=$2; shift 2 ;; --tests) FILTER=$2; shift 2 ;; *) break ;; esac
done
. scripts/gtest_prefix.sh "$OUT/build.log"
targets="gpu_bench"
[ -n "$FILTER" ] && targets="gpu_bench flashkm_test_gpu"
t0=$(date +%s)
cmake -S . -B build-cudacheck -G Ninja -DCMAKE_BUILD_TYPE=Release -DFLASHKM_CUDA=ON -DFLASHKM_PYTHON=OFF \
  -DFLASHKM_BENCH=OFF -DFLASHKM_TESTS=ON $PREFIX >> "$OUT/build.log" 2>&1 &&
  cmake --build build-cudacheck -j16 --target $targets >> "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
echo "build in $(( $(date +%s) - t0 )) s"
if [ -n "$FILTER" ]; then
  for v in $VALUES; do
    env "$VAR=$v" ./build-cudacheck/tests/gpu/flashkm_test_gpu --gtest_filter="$FILTER" > "$OUT/test_$v.log" 2>&1
    echo "tests with $VAR=$v: rc=$? $(grep -E '^\[  (PASSED|FAILED)' "$OUT/test_$v.log" | tr '\n' ' ')"
  done
fi
: > "$OUT/env_ab.jsonl"
for cfg in "$@"; do
  for r in $(seq "$REPS"); do
    for v in $VALUES; do
      line=$(env "$VAR=$v" ./build-cudacheck/tests/gpu/gpu_bench $cfg 2>&1 | tail -1)
      echo "{\"value\":\"$v\",\"rep\":$r,\"args\":\"$cfg\",\"result\":$line}" >> "$OUT/env_ab.jsonl"
    done
  done
done
# Ratios against the first value listed.
python3 scripts/ab_summary.py "$OUT/env_ab.jsonl" value "${VALUES%% *}" | tee "$OUT/env_ab_summary.txt"
