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

/// Blocks of `per` threads (or rows) covering n, at least one.
inline unsigned blocks_for(std::int64_t n, int per) {
  const std::int64_t b = (n + per - 1) / per;
  return static_cast<unsigned>(b < 1 ? 1 : b);
}

}  // namespace flashkm::cuda::detail
