#!/usr/bin/env bash
# A/B of the wgmma kernel's benchmarking knobs in one call on the GPU machine, interleaved
# (each shape: default, then each knob set alone, twice over), with gpu_bench from an
# existing build (scripts/gpu_check.sh's build-cudacheck by default). The knobs change when
# or where the kernel does its work, never the bits (tests/gpu: ResidentCentroidsEqualStreamedBitwise):
#   FLASHKM_SM90_STREAM_CENTROIDS=1   stream the centroids even where they fit resident
#   FLASHKM_SM90_WRITE_AT_TILE_END=1  write a tile's results at its end, not under the next MMA
# Output: one JSON line per run (gpu_bench's, with "variant" added) to stdout.
#   BUILD=build-cudacheck scripts/gpu_knob_ab.sh ["B N K D dtype certify" ...]
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build-cudacheck}
ITERS=${ITERS:-10}
shapes=("$@")
[ ${#shapes[@]} -gt 0 ] || shapes=("1 1048576 256 128 f16 0" "1 1048576 1024 128 f16 0" "1 1048576 8192 128 f16 0"
  "500 20000 256 128 f16 0" "1 1048576 1024 768 f16 0" "1 1048576 1024 128 f16 1")
variants=("default" "FLASHKM_SM90_STREAM_CENTROIDS=1" "FLASHKM_SM90_WRITE_AT_TILE_END=1")
for rep in 1 2; do
  for s in "${shapes[@]}"; do
    read -r B N K D dt cert <<< "$s"
    for v in "${variants[@]}"; do
      if [ "$v" = default ]; then envs=(); else envs=("$v"); fi
      line=$(env "${envs[@]}" ./"$BUILD"/tests/gpu/gpu_bench "$B" "$N" "$K" "$D" "$dt" "$ITERS" fp16 "$cert" 0 device 2>&1 | tail -1)
      echo "${line%\}},\"variant\":\"$v\",\"rep\":$rep}"
    done
  done
done
