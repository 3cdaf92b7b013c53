#!/usr/bin/env bash
# One call on the GPU machine: configure + build (CUDA on), run every ctest test (GPU ones
# included), then the GPU benchmark; logs and results go to $OUT (the device tool's
# output folder) or ./gpu_out. Usage:
#   scripts/gpu_check.sh [--no-bench] [--quick] [--python] [--tile-sweep] [-- bench args...]
#   --quick: the benchmark's smaller config subset.
#   --no-ctest: build and run only the GPU test binary (not the whole tree and ctest).
#   --no-tests: run no tests at all (benchmarks only; with --no-ctest, the targets they need).
#   --tile-sweep: also time each tensor-core tile config (gpu_bench's override) on a few
#             D=128 shapes, uncertified; JSON lines appended to bench.log.
#   -- ...: passed on to bench/gpu_vs_flash_kmeans.py (e.g. --no-certified --host-update).
#   --largeN: also bench/gpu_largeN.py (flash-kmeans kmeans_largeN vs flashkm, N=16M/32M fp32).
#   --ooc:    data larger than the device budget (issue 6): the streamed GPU tests on their own
#             (test_streamed.log, also part of the full GPU test run) and bench/gpu_ooc_bench at
#             N=200M K=4096 D=128 fp16 in pinned host memory under an 8 GiB device budget,
#             uncertified and certified (gpu_ooc_<date>.{json,md}, ooc.log). With --no-bench
#             only the main comparison benchmark is skipped.
#   --python: also build the Python module (pybind11 from the machine's pip install) and run
#             the Python tests, GPU tensors (torch/cupy) included.
# The GPU image has neither GoogleTest nor dlpack.h: before the call, on the dev machine,
#   mkdir -p .gpudeps/include && cp -r /usr/src/googletest .gpudeps/ && cp -r /usr/include/dlpack .gpudeps/include/
# and name .gpudeps in the device tool's `carry` (it is git-ignored).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu_out}
mkdir -p "$OUT"
BENCH=1; QUICK=""; PY=0; TILES=0; CTEST=1; LARGEN=0; OOC=0; TESTS=1
while [ $# -gt 0 ]; do
  case "$1" in
    --no-bench) BENCH=0 ;; --quick) QUICK="--quick" ;; --python) PY=1 ;; --tile-sweep) TILES=1 ;; --no-ctest) CTEST=0 ;; --no-tests) TESTS=0 ;; --largeN) LARGEN=1 ;; --ooc) OOC=1 ;;
    --) shift; break ;;
  esac
  shift
done
# "$@" now holds the benchmark's own arguments.
export PYTHONUNBUFFERED=1
{
  echo "== $(date -u +%FT%TZ) $(hostname)"
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,memory.total --format=csv 2>&1
  nvcc --version | tail -2
  cmake --version | head -1
} 2>&1 | tee "$OUT/env.log"

t0=$(date +%s)
. scripts/gtest_prefix.sh "$OUT/build.log"  # sets PREFIX (GoogleTest)
cmake -S . -B build-cudacheck -G Ninja -DCMAKE_BUILD_TYPE=Release -DFLASHKM_CUDA=ON -DFLASHKM_PYTHON=OFF \
  -DFLASHKM_BENCH=OFF -DFLASHKM_TESTS=ON $PREFIX >> "$OUT/build.log" 2>&1 &&
  cmake --build build-cudacheck -j16 --target flashkm_test_gpu flashkm_test_gpu_tf32 flashkm_test_gpu_batched gpu_bench gpu_ooc_bench >> "$OUT/build.log" 2>&1
rc_build=$?
# The rest of the tree (CPU tests, CLI) for ctest; its failure does not stop the GPU checks.
[ $CTEST -eq 0 ] || cmake --build build-cudacheck -j16 > "$OUT/build_all.log" 2>&1 || echo "full build failed (see build_all.log)"
echo "build rc=$rc_build in $(( $(date +%s) - t0 )) s" | tee -a "$OUT/env.log"
tail -30 "$OUT/build.log"
[ $rc_build -eq 0 ] || exit 1

rc_test=0
if [ $TESTS -eq 1 ]; then
  # Tests: the GPU test binary first (verbose: it prints measured error ratios), then ctest.
  # Each binary writes its whole log first and is summarised after it exits: a `| head` in
  # its pipe closed the pipe early and killed the binary with SIGPIPE (rc 141, session 6).
  ./build-cudacheck/tests/gpu/flashkm_test_gpu > "$OUT/test_gpu.log" 2>&1 || rc_test=1
  grep -E "^\[  |device:|precision|near-ties|cascade|worst|device update|FAIL|Failure|error" "$OUT/test_gpu.log" | head -100
  # precision=tf32 (its own binary): odd shapes, near-ties, fits against the CPU.
  ./build-cudacheck/tests/gpu/flashkm_test_gpu_tf32 > "$OUT/test_gpu_tf32.log" 2>&1 || rc_test=1
  grep -E "^\[  (FAILED|PASSED)|tf32|Failure|error" "$OUT/test_gpu_tf32.log" | head -40
  # Batched / ragged fits against per-problem CUDA fits (bitwise).
  ./build-cudacheck/tests/gpu/flashkm_test_gpu_batched > "$OUT/test_gpu_batched.log" 2>&1 || rc_test=1
  grep -E "^\[  |FAIL|Failure|error|differ" "$OUT/test_gpu_batched.log" | head -60
  if [ $OOC -eq 1 ]; then
    # The streamed tests alone, verbose (plans, budgets, first differences), then the plan's CPU tests.
    ./build-cudacheck/tests/gpu/flashkm_test_gpu --gtest_filter='Streamed*:AllInits/*' > "$OUT/test_streamed.log" 2>&1
    rc_ooc_test=$?
    [ -x build-cudacheck/tests/flashkm_test_device_stream_plan ] && \
      ./build-cudacheck/tests/flashkm_test_device_stream_plan >> "$OUT/test_streamed.log" 2>&1
    echo "streamed GPU tests rc=$rc_ooc_test"; grep -E "^\[  (FAILED|PASSED)|Failure|streaming budget" "$OUT/test_streamed.log" | head -40
  fi
fi
if [ $CTEST -eq 1 ] && [ $TESTS -eq 1 ]; then
  (cd build-cudacheck && ctest --output-on-failure -j8 --timeout 300) > "$OUT/ctest.log" 2>&1
  rc_test=$?
  tail -5 "$OUT/ctest.log"
  grep -E "Failed|\*\*\*" "$OUT/ctest.log" | head -20
fi

if [ $PY -eq 1 ]; then
  PYBIND=$(python3 -m pybind11 --cmakedir 2>/dev/null)
  # dlpack.h: the GPU image has none; a copy of Debian's libdlpack-dev header travels in .gpudeps/include.
  cmake -S . -B build-cudacheck -DFLASHKM_PYTHON=ON -Dpybind11_DIR="$PYBIND" -DPython3_EXECUTABLE="$(command -v python3)" \
    -DFLASHKM_DLPACK_INCLUDE_DIR=$PWD/.gpudeps/include \
    > "$OUT/build_python.log" 2>&1 && cmake --build build-cudacheck -j16 >> "$OUT/build_python.log" 2>&1
  echo "python build rc=$?"
  PYTHONPATH=$PWD/build-cudacheck/python python3 -m pytest -q -rs tests/python/test_gpu.py tests/python/test_api.py tests/python/test_batched.py > "$OUT/pytest.log" 2>&1
  echo "pytest rc=$?"; tail -15 "$OUT/pytest.log"
fi

if [ $BENCH -eq 1 ]; then
  python3 bench/gpu_vs_flash_kmeans.py --flashkm-bench build-cudacheck/tests/gpu/gpu_bench --out "$OUT" $QUICK "$@" 2>&1 | tee "$OUT/bench.log" | tail -40
fi
if [ $OOC -eq 1 ]; then
  # 51 GB of pinned host memory (the device machine has 128 GiB), generated on the GPU.
  python3 bench/gpu_largeN.py --only-ooc --ooc-bench build-cudacheck/tests/gpu/gpu_ooc_bench --out "$OUT" 2>&1 | tee "$OUT/ooc.log" | tail -12
fi
if [ $LARGEN -eq 1 ]; then
  python3 bench/gpu_largeN.py --flashkm-bench build-cudacheck/tests/gpu/gpu_bench --out "$OUT" 2>&1 | tee "$OUT/largeN.log" | tail -12
fi
if [ $TILES -eq 1 ]; then
  # tile: 1 resident 128x128, 2 streamed 128x256, 3 streamed 128x128 (flash_assign.hpp).
  for shape in "1 1048576 1024 128" "1 1048576 8192 128" "1 1048576 256 128" "32 75600 1000 128"; do
    for tile in 1 2 3; do
      ./build-cudacheck/tests/gpu/gpu_bench $shape f16 10 auto 0 $tile device
    done
  done 2>&1 | tee -a "$OUT/bench.log" | cut -c1-400
fi
echo "tests rc=$rc_test"
