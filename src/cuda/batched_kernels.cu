// Kernels of the batched CUDA backend: ragged centroid preparation and the row reductions
// over chunk tables. Each chunk kernel has the exact shape of its single-problem twin in
// kernels.cu (same thread-to-row assignment, same trees), so a problem's sums in a batch
// are the bits of the problem alone; the GPU tests compare them bitwise.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "cuda/batched_kernels.cuh"
#include "cuda/centroid_prep.cuh"
#include "cuda/cuda_check.hpp"
#include "cuda/device_helpers.cuh"

namespace flashkm::cuda {
namespace {

using detail::blocks_for;
using detail::block_sum_256;
using detail::load_x;
using detail::sum_over_8_warps;
using detail::warp_weighted_distance;

/// Blocks of a launch over `items` work items, one block each; larger counts loop.
unsigned item_blocks(std::int64_t items) { return static_cast<unsigned>(items < 0x7fffffff ? items : 0x7fffffff); }

__global__ void prepare_centroids_ragged_kernel(const float* c32, const ProblemDesc* problems, int n_problems,
                                                std::int64_t kp_total, int d, int dp, int op, bool l2, void* c_op,
                                                float* cterm, unsigned* cmax_bits, unsigned* dcmax_bits,
                                                unsigned* overflow) {
  const std::int64_t wid = (std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (wid >= kp_total) return;
  int lo = 0, hi = n_problems - 1;  // the last problem whose c_row <= wid
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (problems[mid].c_row <= wid) lo = mid;
    else hi = mid - 1;
  }
  const ProblemDesc& pd = problems[lo];
  const std::int64_t j = wid - pd.c_row;
  const bool real = j < pd.k;
  const float* src = c32 + (pd.c32_row + (real ? j : 0)) * d;
  prepare_centroid_row(src, real, wid, lane, d, dp, op, l2, c_op, cterm, &cmax_bits[lo], &dcmax_bits[lo], overflow);
}

// weighted_sum_chunks of kernels.cu, one chunk per block.
__global__ void chunk_weighted_sums_kernel(const float* v, const float* w, const ProblemChunk* chunks,
                                           std::int64_t n_chunks, double* part) {
  __shared__ double sh[256];
  for (std::int64_t c = blockIdx.x; c < n_chunks; c += gridDim.x) {
    const ProblemChunk ch = chunks[c];
    double acc = 0;
    for (int q = threadIdx.x; q < kRowChunk; q += 256) {
      const std::int64_t i = ch.row_begin + q;
      if (q < ch.rows) acc += (w ? double(w[i]) : 1.0) * double(v[i]);
    }
    const double r = block_sum_256(acc, sh);
    if (threadIdx.x == 0) part[c] = r;
  }
}

// sum_parts of kernels.cu, one segment per block.
__global__ void segment_sums_kernel(const double* part, const std::int64_t* seg, std::int64_t n_segments,
                                    double* out) {
  __shared__ double sh[256];
  for (std::int64_t g = blockIdx.x; g < n_segments; g += gridDim.x) {
    const double* pg = part + seg[g];
    const std::int64_t m = seg[g + 1] - seg[g];
    double acc = 0;
    for (std::int64_t q = threadIdx.x; q < m; q += 256) acc += pg[q];
    const double r = block_sum_256(acc, sh);
    if (threadIdx.x == 0) out[g] = r;
  }
}

// exact_inertia_kernel of kernels.cu, one chunk per block.
__global__ void chunk_exact_inertia_kernel(XView x, const float* w, const std::int32_t* labels, const float* c32,
                                           const ProblemDesc* problems, Metric metric, const ProblemChunk* chunks,
                                           std::int64_t n_chunks, double* part) {
  __shared__ double sw[8];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (std::int64_t cc = blockIdx.x; cc < n_chunks; cc += gridDim.x) {
    const ProblemChunk ch = chunks[cc];
    const std::int64_t c_row = problems[ch.slot].c32_row;
    double wacc = 0;
    for (int q = warp; q < kRowChunk; q += 8) {
      if (q >= ch.rows) break;
      const std::int64_t i = ch.row_begin + q;
      const float* c = c32 + (c_row + labels[i]) * x.d;
      const double wd = warp_weighted_distance(x, i, c, metric, w, lane);
      if (lane == 0) wacc += wd;
    }
    const double t = sum_over_8_warps(wacc, sw);  // ends with a barrier: sw is free for the next chunk
    if (threadIdx.x == 0) part[cc] = t;
  }
}

// column_sums_kernel of kernels.cu, one chunk per block.
__global__ void chunk_column_sums_kernel(XView x, const double* centers, const ProblemChunk* chunks,
                                         std::int64_t n_chunks, double* part) {
  for (std::int64_t cc = blockIdx.x; cc < n_chunks; cc += gridDim.x) {
    const ProblemChunk ch = chunks[cc];
    const double* center = centers ? centers + std::int64_t(ch.slot) * x.d : nullptr;
    const std::int64_t end = ch.row_begin + ch.rows;
    for (int c = threadIdx.x; c < x.d; c += blockDim.x) {
      double acc = 0;
      for (std::int64_t i = ch.row_begin; i < end; ++i) {
        const double v = load_x(x, i, c);
        if (center) {
          const double df = v - center[c];
          acc += df * df;
        } else {
          acc += v;
        }
      }
      part[cc * x.d + c] = acc;
    }
  }
}

__global__ void chunk_keys_kernel(const std::int32_t* labels, const ProblemDesc* problems, const ProblemChunk* chunks,
                                  std::int64_t n_chunks, int slot_bits, std::int32_t* keys, std::int32_t* vals) {
  for (std::int64_t cc = blockIdx.x; cc < n_chunks; cc += gridDim.x) {
    const ProblemChunk ch = chunks[cc];
    const std::int64_t key0 = problems[ch.slot].c32_row;
    for (int q = threadIdx.x; q < ch.rows; q += blockDim.x) {
      const std::int64_t i = ch.row_begin + q;
      keys[ch.out + q] = static_cast<std::int32_t>(slot_bits < 0 ? key0 + labels[i]
                                                                 : (std::int64_t(labels[i]) << slot_bits) | ch.slot);
      vals[ch.out + q] = static_cast<std::int32_t>(i);
    }
  }
}

}  // namespace

void launch_prepare_centroids_ragged(const float* c32, const ProblemDesc* problems, int n_problems,
                                     std::int64_t kp_total, int d, int dp, int op, bool l2, void* c_op, float* cterm,
                                     unsigned* cmax_bits, unsigned* dcmax_bits, unsigned* overflow, cudaStream_t s) {
  if (kp_total == 0 || n_problems == 0) return;
  prepare_centroids_ragged_kernel<<<blocks_for(kp_total * 32, 256), 256, 0, s>>>(
      c32, problems, n_problems, kp_total, d, dp, op, l2, c_op, cterm, cmax_bits, dcmax_bits, overflow);
  FLASHKM_CUDA_LAUNCH_CHECK();
}

void launch_chunk_weighted_sums(const float* v, const float* w, const ProblemChunk* chunks, std::int64_t n_chunks,
                                double* part, cudaStream_t s) {
  if (n_chunks == 0) return;
  chunk_weighted_sums_kernel<<<item_blocks(n_chunks), 256, 0, s>>>(v, w, chunks, n_chunks, part);
  FLASHKM_CUDA_LAUNCH_CHECK();
}

void launch_segment_sums(const double* part, const std::int64_t* seg, std::int64_t n_segments, double* out,
                         cudaStream_t s) {
  if (n_segments == 0) return;
  segment_sums_kernel<<<item_blocks(n_segments), 256, 0, s>>>(part, seg, n_segments, out);
  FLASHKM_CUDA_LAUNCH_CHECK();
}

void launch_chunk_exact_inertia(const XView& x, const float* w, const std::int32_t* labels, const float* c32,
                                const ProblemDesc* problems, Metric metric, const ProblemChunk* chunks,
                                std::int64_t n_chunks, double* part, cudaStream_t s) {
  if (n_chunks == 0) return;
  chunk_exact_inertia_kernel<<<item_blocks(n_chunks), 256, 0, s>>>(x, w, labels, c32, problems, metric, chunks,
                                                                    n_chunks, part);
  FLASHKM_CUDA_LAUNCH_CHECK();
}

void launch_chunk_column_sums(const XView& x, const double* centers, const ProblemChunk* chunks, std::int64_t n_chunks,
                              double* part, cudaStream_t s) {
  if (n_chunks == 0) return;
  const int threads = x.d >= 256 ? 256 : ((x.d + 31) / 32) * 32;  // as launch_column_sums
  chunk_column_sums_kernel<<<item_blocks(n_chunks), threads, 0, s>>>(x, centers, chunks, n_chunks, part);
  FLASHKM_CUDA_LAUNCH_CHECK();
}

void launch_chunk_keys(const std::int32_t* labels, const ProblemDesc* problems, const ProblemChunk* chunks,
                       std::int64_t n_chunks, int slot_bits, std::int32_t* keys, std::int32_t* vals, cudaStream_t s) {
  if (n_chunks == 0) return;
  chunk_keys_kernel<<<item_blocks(n_chunks), 256, 0, s>>>(labels, problems, chunks, n_chunks, slot_bits, keys, vals);
  FLASHKM_CUDA_LAUNCH_CHECK();
}

}  // namespace flashkm::cuda
