#!/usr/bin/env bash
# One call on the GPU machine: an A/B of bench/gpu_bench between this tree and a base tree in
# the same call (machine-to-machine variance reached ~7 % between calls; METHOD.md), and
# optionally this tree's GPU tests, built in parallel with the base.
#   scripts/gpu_ab.sh BASE_DIR [--tests] [--reps R] "B N K D dtype iters precision certify tile update" ...
# BASE_DIR: a copy of the base revision's sources (here: `git archive REV | tar x -C .ab/base`,
# .ab ignored by .git/info/exclude and carried). Each config runs R times per tree,
# alternating (new, base, new, base, ...); every gpu_bench JSON line is printed with a
# "tree" field, and a summary gives per config the median ms/iter and phases of each tree.
# Output: $OUT/ab.jsonl, $OUT/ab_summary.txt, the test logs with --tests.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu_out}
mkdir -p "$OUT"
BASE=$1; shift
TESTS=0; REPS=3
while [ $# -gt 0 ]; do
  case "$1" in --tests) TESTS=1; shift ;; --reps) REPS=$2; shift 2 ;; *) break ;; esac
done
. scripts/gtest_prefix.sh "$OUT/build.log"
flags="-G Ninja -DCMAKE_BUILD_TYPE=Release -DFLASHKM_CUDA=ON -DFLASHKM_PYTHON=OFF -DFLASHKM_BENCH=OFF -DFLASHKM_TESTS=ON $PREFIX"
targets="gpu_bench"
[ $TESTS -eq 1 ] && targets="gpu_bench flashkm_test_gpu flashkm_test_gpu_tf32 flashkm_test_gpu_batched"
t0=$(date +%s)
( cmake -S . -B build-cudacheck $flags && cmake --build build-cudacheck -j12 --target $targets ) > "$OUT/build_new.log" 2>&1 &
pid_new=$!
( cmake -S "$BASE" -B "$BASE/build-ab" $flags && cmake --build "$BASE/build-ab" -j8 --target gpu_bench ) > "$OUT/build_base.log" 2>&1 &
pid_base=$!
wait $pid_new; rc_new=$?
wait $pid_base; rc_base=$?
echo "builds: new rc=$rc_new base rc=$rc_base in $(( $(date +%s) - t0 )) s"
[ $rc_new -eq 0 ] || { tail -30 "$OUT/build_new.log"; exit 1; }
[ $rc_base -eq 0 ] || { tail -30 "$OUT/build_base.log"; exit 1; }
rc_test=0
if [ $TESTS -eq 1 ]; then
  for t in flashkm_test_gpu flashkm_test_gpu_batched flashkm_test_gpu_tf32; do
    timeout 300 ./build-cudacheck/tests/gpu/$t > "$OUT/test_$t.log" 2>&1 || rc_test=1
    grep -E "^\[  (FAILED|PASSED)|Failure" "$OUT/test_$t.log" | head -20
  done
fi
: > "$OUT/ab.jsonl"
for cfg in "$@"; do
  for r in $(seq "$REPS"); do
    for tree in new base; do
      bin=./build-cudacheck/tests/gpu/gpu_bench
      [ $tree = base ] && bin="$BASE/build-ab/tests/gpu/gpu_bench"
      line=$($bin $cfg 2>&1 | tail -1)
      echo "{\"tree\":\"$tree\",\"rep\":$r,\"args\":\"$cfg\",\"result\":$line}" >> "$OUT/ab.jsonl"
    done
  done
done
python3 scripts/ab_summary.py "$OUT/ab.jsonl" tree base | tee "$OUT/ab_summary.txt"
exit $rc_test
