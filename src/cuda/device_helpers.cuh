// Small device helpers shared by the kernel files (kernels.cu, batched_kernels.cu): one
// definition, so that the fixed reduction tree and the element loads are the same code in
// the single and the batched backend (their results must match bitwise).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "cuda/kernels.cuh"

namespace flashkm::cuda::detail {

/// Element (row, col) of x as fp64 (exact for every input type).
__device__ __forceinline__ double load_x(const XView& x, std::int64_t row, int col) {
  const std::int64_t off = row * x.stride + col;
  switch (x.dtype) {
    case DType::f32: return double(static_cast<const float*>(x.x)[off]);
    case DType::f16: return double(__half2float(static_cast<const __half*>(x.x)[off]));
    case DType::bf16: return double(__bfloat162float(static_cast<const __nv_bfloat16*>(x.x)[off]));
    default: return static_cast<const double*>(x.x)[off];
  }
}

/// Fixed-shape block sum (blockDim.x == 256): the same tree every launch.
__device__ __forceinline__ double block_sum_256(double v, double* sh) {
  const int tid = threadIdx.x;
  sh[tid] = v;
  __syncthreads();
  for (int s = 128; s > 0; s >>= 1) {
    if (tid < s) sh[tid] += sh[tid + s];
    __syncthreads();
  }
  const double r = sh[0];
  __syncthreads();
  return r;
}

/// w_i * distance(x_i, c) by the metric, in fp64 from differences (l2) or products, by one
/// warp: lanes take columns, then a shuffle tree; the value is valid in lane 0. The exact
/// inertia kernels of the single and the batched backend (same order, same bits).
__device__ __forceinline__ double warp_weighted_distance(const XView& x, std::int64_t i, const float* c,
                                                         Metric metric, const float* w, int lane) {
  double s = 0, nn = 0;
  for (int j = lane; j < x.d; j += 32) {
    const double v = load_x(x, i, j);
    if (metric == Metric::l2) {
      const double df = v - double(c[j]);
      s = fma(df, df, s);
    } else {
      s = fma(v, double(c[j]), s);
      nn = fma(v, v, nn);
    }
  }
  for (int o = 16; o > 0; o >>= 1) {
    s += __shfl_down_sync(0xffffffffu, s, o);
    nn += __shfl_down_sync(0xffffffffu, nn, o);
  }
  const double dist = metric == Metric::l2 ? s : metric == Metric::cosine ? 1.0 - s / sqrt(nn) : -s;
  return (w ? double(w[i]) : 1.0) * dist;
}

/// Sum over the 8 warps of a 256-thread block of their lane 0's `v`, in warp order (the
/// exact inertia kernels of both backends: same adds, same bits); valid in thread 0. Every
/// thread must call it; it ends with a barrier, so `sw` may be reused right after.
__device__ __forceinline__ double sum_over_8_warps(double v, double (&sw)[8]) {
  if ((threadIdx.x & 31) == 0) sw[threadIdx.x >> 5] = v;
  __syncthreads();
  double t = 0;
  if (threadIdx.x == 0)
    for (int q = 0; q < 8; ++q) t += sw[q];
  __syncthreads();
  return t;
}

/// Blocks of `per` threads (or rows) covering n, at least one.
inline unsigned blocks_for(std::int64_t n, int per) {
  const std::int64_t b = (n + per - 1) / per;
  return static_cast<unsigned>(b < 1 ? 1 : b);
}

}  // namespace flashkm::cuda::detail
