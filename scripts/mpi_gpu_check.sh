#!/usr/bin/env bash
# `mpirun -np P flashkm fit --device cuda` on a multi-GPU machine: one GPU per rank, NCCL
# bootstrapped over MPI (issue 6, item 4). Builds the CLI with CUDA, NCCL and MPI, fits a
# generated blobs file on one process and on P = 2 (and 4 where present) ranks from the same
# given init, and compares labels, centroids and inertia. Output in $OUT/mpi_gpu_check.log.
# Usage: scripts/mpi_gpu_check.sh   (after scripts/multigpu_check.sh has built GoogleTest's
# prefix; no tests are built here, so it is not needed)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/mpi_gpu_out}
mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0 FLASHKM_COLLECTIVE_TIMEOUT_S=60 OMPI_MCA_btl_vader_single_copy_mechanism=none
LOG="$OUT/mpi_gpu_check.log"
T0=$(date +%s)
{
  cmake -S . -B build-mpigpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DFLASHKM_CUDA=ON -DFLASHKM_NCCL=ON -DFLASHKM_MPI=ON \
    -DFLASHKM_PYTHON=OFF -DFLASHKM_BENCH=OFF -DFLASHKM_TESTS=OFF > /tmp/mpigpu_build.log 2>&1 &&
    cmake --build build-mpigpu -j64 --target flashkm_cli >> /tmp/mpigpu_build.log 2>&1
  rc=$?
  echo "build rc=$rc in $(( $(date +%s) - T0 )) s"
  [ $rc -eq 0 ] || { tail -30 /tmp/mpigpu_build.log; exit 1; }
  NGPU=$(nvidia-smi -L | wc -l)
  D=/tmp/mpigpu; mkdir -p $D
  python3 - <<'EOF'
import numpy as np
rng = np.random.default_rng(7)
n, d, k = 2_000_003, 64, 256
centers = rng.standard_normal((k, d)).astype(np.float32) * 8
x = (centers[rng.integers(0, k, n)] + rng.standard_normal((n, d)).astype(np.float32)).astype(np.float32)
np.save("/tmp/mpigpu/x.npy", x)
np.save("/tmp/mpigpu/init.npy", x[:k].copy())
EOF
  FK=./build-mpigpu/flashkm
  COMMON="fit $D/x.npy -k 256 --init $D/init.npy --max-iter 20 --tol 0 --device cuda"
  timeout 120 $FK $COMMON -o $D/m1.fkm --labels $D/l1.npy --report $D/r1.json
  echo "single process rc=$?"
  for P in 2 4; do
    [ $P -le $NGPU ] || continue
    timeout 180 mpirun --allow-run-as-root --oversubscribe -np $P $FK $COMMON -o $D/m$P.fkm --labels $D/l$P.npy \
      --report $D/r$P.json
    echo "mpirun -np $P rc=$?"
  done
  python3 - <<'EOF'
import json, os
import numpy as np
D = "/tmp/mpigpu"
r1 = json.load(open(f"{D}/r1.json")); l1 = np.load(f"{D}/l1.npy")
for p in (2, 4):
    if not os.path.exists(f"{D}/r{p}.json"):
        continue
    rp = json.load(open(f"{D}/r{p}.json")); lp = np.load(f"{D}/l{p}.npy")
    i1, ip = r1["inertia"], rp["inertia"]
    print(f"ranks {p}: ranks in report {rp.get('ranks')}, n_iter {rp['n_iter']} vs {r1['n_iter']}, "
          f"inertia rel diff {abs(ip - i1) / i1:.2e}, labels equal {np.mean(lp == l1) * 100:.4f} %")
EOF
  echo "total $(( $(date +%s) - T0 )) s"
} 2>&1 | tee "$LOG"
