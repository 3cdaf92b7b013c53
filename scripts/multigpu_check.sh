#!/usr/bin/env bash
# One call on a multi-GPU machine (nvidia-h200-x2 or larger): build with CUDA + NCCL, run the
# multi-GPU tests, then the scaling benchmark (bench/multigpu_scaling.cu: N=64M K=8192 and
# N=16M K=65536, D=128 fp16, on 1, 2 and 4 GPUs as present, each through the host and the
# device update path). Logs, JSON and markdown go to $OUT (the device tool's output folder) or
# ./multigpu_out. Budget: under 9 minutes (expected: build ~1 min, tests ~1-2 min, benchmark
# ~3-4 min at --iters 6 with 4 GPUs: per config 1 plain + 2 paths x 3 GPU counts). If the
# benchmark dies (not a timeout), what is left of the budget reruns the host path alone
# into $OUT/host_only, so a crash of the device path cannot cost the reference numbers.
# Usage: scripts/multigpu_check.sh [--no-bench] [--iters N]
# Needs .gpudeps/googletest carried (see scripts/gpu_check.sh for how to prepare it).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/multigpu_out}
mkdir -p "$OUT"
BENCH=1; ITERS=6; BUDGET=${MULTIGPU_BUDGET_S:-540}  # seconds for the whole script
while [ $# -gt 0 ]; do
  case "$1" in --no-bench) BENCH=0 ;; --iters) ITERS=$2; shift ;; esac
  shift
done
# NVLink multicast (NVLS) stays off on these shared hosts: a program that uses it can put
# the host's GPUs out of service (device notes, KINDS.md). Set here, inherited by all below.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export NCCL_DEBUG=${NCCL_DEBUG:-WARN}
T0=$(date +%s)
{
  echo "== $(date -u +%FT%TZ) $(hostname) NCCL_NVLS_ENABLE=$NCCL_NVLS_ENABLE"
  nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv 2>&1
  nvidia-smi topo -m 2>&1 | head -12
  nvcc --version | tail -2
  cmake --version | head -1
} 2>&1 | tee "$OUT/env.log"

. scripts/gtest_prefix.sh "$OUT/build.log"  # sets PREFIX (GoogleTest)
# NCCL: beside the CUDA toolkit or in the system; else the copy of the pip package
# nvidia-nccl-cu13 (which PyTorch uses), wherever its wheel put nccl.h and libnccl.so.2.
NCCL_ARG=""
if [ ! -f /usr/local/cuda/include/nccl.h ] && [ ! -f /usr/include/nccl.h ]; then
  NV=$(python3 -c 'import nvidia; print(" ".join(nvidia.__path__))' 2>/dev/null)
  H=$(find $NV -name nccl.h 2>/dev/null | head -1)
  L=$(find $NV -name 'libnccl.so*' 2>/dev/null | sort | head -1)
  if [ -n "$H" ] && [ -n "$L" ]; then
    NCCL_ARG="-DNCCL_INCLUDE_DIR=$(dirname "$H") -DNCCL_LIBRARY=$L"
    echo "NCCL from the pip package: $H $L" | tee -a "$OUT/env.log"
  fi
fi
cmake -S . -B build-multigpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DFLASHKM_CUDA=ON -DFLASHKM_NCCL=ON \
  -DFLASHKM_PYTHON=OFF -DFLASHKM_BENCH=OFF -DFLASHKM_MPI=OFF -DFLASHKM_TESTS=ON $PREFIX $NCCL_ARG >> "$OUT/build.log" 2>&1 &&
  cmake --build build-multigpu -j32 --target flashkm_test_multigpu multigpu_scaling flashkm_test_multigpu_params \
    >> "$OUT/build.log" 2>&1
rc_build=$?
echo "build rc=$rc_build in $(( $(date +%s) - T0 )) s" | tee -a "$OUT/env.log"
grep -E "NCCL multi-GPU|error|FAILED" "$OUT/build.log" | head -30
[ $rc_build -eq 0 ] || exit 1

# Tests (each binary under a time limit: a hang is a failure, not a stuck machine).
timeout 60 ./build-multigpu/tests/flashkm_test_multigpu_params > "$OUT/test_multigpu_params.log" 2>&1
rc_params=$?
FLASHKM_COLLECTIVE_TIMEOUT_S=60 timeout 240 ./build-multigpu/tests/gpu/flashkm_test_multigpu > "$OUT/test_multigpu.log" 2>&1
rc_test=$?
grep -E "^\[  |^\[==|SKIPPED|Failure|error|Expected|Which is|actual|  [a-z_]+: " "$OUT/test_multigpu.log" | head -80
echo "tests rc: params=$rc_params multigpu=$rc_test ($(( $(date +%s) - T0 )) s)" | tee -a "$OUT/env.log"

if [ $BENCH -eq 1 ]; then
  # Whatever is left of a 9-minute budget (the device tool stops a command at 10).
  LEFT=$(( BUDGET - ($(date +%s) - T0) ))
  [ $LEFT -lt 60 ] && LEFT=60
  # A hung collective becomes an error row after 60 s (the run goes on to the next row)
  # rather than eating the budget: no legitimate wait between ranks comes near it here.
  export FLASHKM_COLLECTIVE_TIMEOUT_S=${FLASHKM_COLLECTIVE_TIMEOUT_S:-60}
  timeout $LEFT ./build-multigpu/tests/gpu/multigpu_scaling --out "$OUT" --iters "$ITERS" 2>&1 | tee "$OUT/bench.log"
  rc_bench=${PIPESTATUS[0]}
  echo "bench rc=$rc_bench ($(( $(date +%s) - T0 )) s)" | tee -a "$OUT/env.log"
  cat "$OUT/multigpu_scaling.md" 2>/dev/null
  LEFT=$(( BUDGET - ($(date +%s) - T0) ))
  if [ $rc_bench -ne 0 ] && [ $rc_bench -ne 124 ] && [ $LEFT -ge 60 ]; then
    echo "== the benchmark died (rc $rc_bench): the host update path alone, $LEFT s left" | tee -a "$OUT/env.log"
    mkdir -p "$OUT/host_only"
    timeout $LEFT ./build-multigpu/tests/gpu/multigpu_scaling --out "$OUT/host_only" --iters "$ITERS" --updates host \
      2>&1 | tee "$OUT/host_only/bench.log"
    echo "host-only bench rc=${PIPESTATUS[0]} ($(( $(date +%s) - T0 )) s)" | tee -a "$OUT/env.log"
  fi
fi
echo "total $(( $(date +%s) - T0 )) s"
