#!/usr/bin/env bash
# One-off A/B (session 5): HEAD vs b61f077 (ab_old/: old update kernels) + certified cascades.
set -u
scripts/gpu_check.sh --no-bench --no-ctest > $OUT/check.log 2>&1
grep -hE "^\[  (PASSED|FAILED)|FAILED  \]" $OUT/test_gpu*.log | head -30
. scripts/gtest_prefix.sh $OUT/build_old.log
(cmake -S ab_old -B build-old -G Ninja -DCMAKE_BUILD_TYPE=Release -DFLASHKM_CUDA=ON -DFLASHKM_PYTHON=OFF -DFLASHKM_BENCH=OFF -DFLASHKM_TESTS=ON $PREFIX && cmake --build build-old -j16 --target gpu_bench) >> $OUT/build_old.log 2>&1 || tail -20 $OUT/build_old.log
N=./build-cudacheck/tests/gpu/gpu_bench; O=./build-old/tests/gpu/gpu_bench
for rep in 1 2; do for s in "1 1048576 256 128" "1 1048576 1024 128" "1 1048576 8192 128" "1 1048576 1024 768" "500 20000 256 128"; do
  for b in new old; do
    bin=$N; [ $b = old ] && bin=$O
    $bin $s f16 10 fp16 0 0 device 2>&1 | tail -1 | sed "s/}\$/,\"build\":\"$b\",\"rep\":$rep}/"
  done; done; done > $OUT/ab.jsonl
for s in "1 1048576 256 128" "1 1048576 1024 128" "1 1048576 8192 128" "1 1048576 1024 768" "500 20000 256 128"; do
  for c in candidates simt; do $N $s f16 10 fp16 $c 0 device 2>&1 | tail -1; done; done > $OUT/cert.jsonl
for c in 0 candidates; do $N 1 1048576 1024 128 f32 10 auto $c 0 device 2>&1 | tail -1; done >> $OUT/cert.jsonl
python3 - $OUT <<'PY'
import json, sys
for fn in ("ab.jsonl", "cert.jsonl"):
    print("==", fn)
    for l in open(sys.argv[1] + "/" + fn):
        try: r = json.loads(l)
        except Exception: print(l[:200]); continue
        if "error" in r: print(r.get("K"), r.get("D"), r["error"][:200]); continue
        print(r["B"], r["K"], r["D"], r["dtype"], str(r.get("cascade", r["certify"])).ljust(10), r.get("build", ""), r.get("rep", ""),
              "ms/it %.3f assign %.3f upd %.3f med %.3f rech %s cand %s fp64 %s MB %s" % (r["ms_per_iter"], r["assign_ms_in_loop"], r["update_ms_in_loop"],
              r["assign_ms_median"], r.get("rechecked_per_iter"), r.get("candidates_per_iter"), r.get("rechecked_fp64_per_iter"), r.get("extra_MB_held")))
PY
cd $OUT && tar czf logs.tgz *.log
