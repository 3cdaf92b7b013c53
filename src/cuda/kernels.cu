// Small deterministic kernels of the CUDA backend: validation, centroid preparation,
// fixed-shape fp64 reductions, the sort-inverse update's piece sums, init support.
// No float atomics anywhere; integer atomics only where their result is order-free.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cub/device/device_scan.cuh>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>

#include "core/random.hpp"
#include "cuda/centroid_prep.cuh"
#include "cuda/cuda_check.hpp"
#include "cuda/device_helpers.cuh"
#include "cuda/kernels.cuh"
#include "cuda/mma_sm80.cuh"

namespace flashkm::cuda {
namespace {

using detail::blocks_for;
using detail::block_sum_256;
using detail::load_x;
using detail::sum_over_8_warps;
using detail::warp_weighted_distance;

// ---- validation ------------------------------------------------------------------------
__global__ void validate_kernel(XView x, const float* w, float* xnorm, long long* status) {
  const std::int64_t i = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= x.n) return;
  double s = 0, mx = 0;
  for (int j = 0; j < x.d; ++j) {
    const double v = load_x(x, i, j);
    s = fma(v, v, s);
    mx = fmax(mx, fabs(v));
  }
  if (!isfinite(s)) {
    atomicMin(&status[0], (long long)i);
    return;
  }
  if (w && !(w[i] >= 0.0f && isfinite(w[i]))) atomicMin(&status[1], (long long)i);
  if (s == 0.0) atomicMin(&status[2], (long long)i);
  xnorm[i] = static_cast<float>(s);
  atomicMax(reinterpret_cast<unsigned*>(&status[3]), __float_as_uint(__double2float_ru(mx)));
}

__global__ void f64_to_f32_kernel(const double* src, std::int64_t n, int d, std::int64_t stride, float* dst) {
  const std::int64_t e = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= n * d) return;
  const std::int64_t r = e / d;
  const int c = static_cast<int>(e % d);
  dst[e] = static_cast<float>(src[r * stride + c]);
}

template <class T>
__global__ void convert_rows_kernel(XView x, int dp, T* dst) {
  const std::int64_t e = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= x.n * dp) return;
  const std::int64_t r = e / dp;
  const int c = static_cast<int>(e % dp);
  const float v = c < x.d ? static_cast<float>(load_x(x, r, c)) : 0.0f;
  if constexpr (sizeof(T) == 2 && std::is_same_v<T, __half>) dst[e] = __float2half_rn(v);
  else dst[e] = __float2bfloat16_rn(v);
}

// ---- centroids ------------------------------------------------------------------------
// One warp per (problem, padded centroid row); the row itself: centroid_prep.cuh.
__global__ void prepare_centroids_kernel(const float* c32, int batch, int k, int d, int kp, int dp, int op, bool l2,
                                         void* c_op, float* cterm, unsigned* cmax_bits, unsigned* dcmax_bits,
                                         unsigned* overflow) {
  const std::int64_t wid = (std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (wid >= std::int64_t(batch) * kp) return;
  const int b = static_cast<int>(wid / kp);
  const int j = static_cast<int>(wid % kp);
  const bool real = j < k;
  const float* src = c32 + (std::int64_t(b) * k + j) * d;
  prepare_centroid_row(src, real, wid, lane, d, dp, op, l2, c_op, cterm, &cmax_bits[b], &dcmax_bits[b], overflow);
}

// ---- reductions -------------------------------------------------------------------------
__global__ void weighted_sum_chunks(const float* v, const float* w, std::int64_t n, double* part) {
  __shared__ double sh[256];
  const std::int64_t base = std::int64_t(blockIdx.x) * kRowChunk;
  double acc = 0;
  for (int q = threadIdx.x; q < kRowChunk; q += 256) {
    const std::int64_t i = base + q;
    if (i < n) acc += (w ? double(w[i]) : 1.0) * double(v[i]);
  }
  const double r = block_sum_256(acc, sh);
  if (threadIdx.x == 0) part[blockIdx.x] = r;
}
__global__ void sum_parts(const double* part, std::int64_t m, double* out) {
  __shared__ double sh[256];
  double acc = 0;
  for (std::int64_t q = threadIdx.x; q < m; q += 256) acc += part[q];
  const double r = block_sum_256(acc, sh);
  if (threadIdx.x == 0) *out = r;
}

__global__ void min_into_kernel(float* mind, const float* v, std::int64_t n) {
  const std::int64_t i = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) mind[i] = fminf(mind[i], v[i]);
}
__global__ void fill_kernel(float* p, float value, std::int64_t n) {
  const std::int64_t i = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) p[i] = value;
}

// ---- sort-inverse update -----------------------------------------------------------------
__global__ void iota_keys_kernel(const std::int32_t* labels, std::int64_t n, std::int64_t n_per, int k,
                                 std::int32_t* keys, std::int32_t* vals) {
  const std::int64_t i = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  keys[i] = static_cast<std::int32_t>((i / n_per) * k + labels[i]);
  vals[i] = static_cast<std::int32_t>(i);
}
// Thread i in [0, n] owns the keys c in (key[i-1], key[i]] (from 0 at i = 0, to nc at
// i = n): their first position is i. Each c in [0, nc] is written exactly once.
__global__ void cluster_offsets_kernel(const std::int32_t* keys, std::int64_t n, std::int64_t nc,
                                       std::int32_t* row_off) {
  const std::int64_t i = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i > n) return;
  const std::int64_t lo = i == 0 ? 0 : std::int64_t(keys[i - 1]) + 1;
  const std::int64_t hi = i == n ? nc : std::int64_t(keys[i]);
  for (std::int64_t c = lo; c <= hi; ++c) row_off[c] = static_cast<std::int32_t>(i);
}
// Piece heights: one for every cluster, or (per_cluster non-null) each cluster's own (the
// batched backend: its problem's piece_rows_for(n_b, d), as alone).
__device__ __forceinline__ std::int64_t piece_rows_of(int piece_rows, const std::int32_t* per_cluster, std::int64_t c) {
  return per_cluster ? per_cluster[c] : piece_rows;
}
// Per key: fused (at most kFusedPieces pieces: one item, nothing in the piece buffer) or big
// (an item and a piece-buffer row per piece, an entry in the few list (at most kCombineFew
// pieces) or the many list). Zeros at c = nc, so that the exclusive scan's last entry holds
// the totals.
__global__ void update_counts_kernel(const std::int32_t* row_off, std::int64_t nc, int piece_rows,
                                     const std::int32_t* per_cluster, UpdateCounts* counts) {
  const std::int64_t c = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c < nc) {
    const std::int64_t r = piece_rows_of(piece_rows, per_cluster, c);
    const std::int64_t np = (std::int64_t(row_off[c + 1] - row_off[c]) + r - 1) / r;
    counts[c] = np <= kFusedPieces  ? UpdateCounts{1, 0, 0, 0}
                : np <= kCombineFew ? UpdateCounts{np, np, 1, 0}
                                    : UpdateCounts{np, np, 0, 1};
  } else if (c == nc) {
    counts[c] = UpdateCounts{0, 0, 0, 0};
  }
}
struct AddCounts {
  __host__ __device__ UpdateCounts operator()(const UpdateCounts& a, const UpdateCounts& b) const {
    return UpdateCounts{a.items + b.items, a.pieces + b.pieces, a.few + b.few, a.many + b.many};
  }
};
// One thread per item, not per cluster: with few large clusters a thread per cluster wrote
// hundreds of pieces one after another (K=256, N=1M: 41 us). Item p belongs to the last key
// c with first[c].items <= p (every key has at least one item).
__global__ void fill_items_kernel(const std::int32_t* row_off, const UpdateCounts* first, std::int64_t nc,
                                  int piece_rows, const std::int32_t* per_cluster, const std::int32_t* cluster_of,
                                  std::int64_t max_items, UpdateItem* items, std::int32_t* few, std::int32_t* many) {
  const std::int64_t p = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (p >= max_items || p >= first[nc].items) return;
  std::int64_t lo = 0, hi = nc - 1;
  while (lo < hi) {
    const std::int64_t mid = (lo + hi + 1) >> 1;
    if (first[mid].items <= p) lo = mid;
    else hi = mid - 1;
  }
  const UpdateCounts f = first[lo], g = first[lo + 1];
  const std::int32_t r = static_cast<std::int32_t>(piece_rows_of(piece_rows, per_cluster, lo));
  const std::int32_t b0 = row_off[lo], e = row_off[lo + 1];
  if (g.pieces == f.pieces) {  // fused (a big cluster has pieces): the whole cluster
    items[p] = UpdateItem{b0, e, r, cluster_of ? cluster_of[lo] : static_cast<std::int32_t>(lo)};
    return;
  }
  const std::int64_t q = p - f.items;  // the piece's index within its cluster
  const std::int32_t b = static_cast<std::int32_t>(b0 + q * r);
  items[p] = UpdateItem{b, e - b > r ? b + r : e, 0, static_cast<std::int32_t>(f.pieces + q)};
  if (q == 0) {
    if (g.few != f.few) few[f.few] = static_cast<std::int32_t>(lo);
    else many[f.many] = static_cast<std::int32_t>(lo);
  }
}

/// Eight consecutive elements of a row as loaded: their raw bits in 4-byte words (16 bytes,
/// 32 for fp32), converted to fp64 only when summed (fewer registers per row in flight).
template <class T>
struct Row8 {
  static constexpr int kWords = 2 * static_cast<int>(sizeof(T));
  std::uint32_t u[kWords];
  /// Element j as fp64 (exact for every input type, as double(float(element)) is).
  __device__ __forceinline__ double at(int j) const {
    if constexpr (sizeof(T) == 4) {
      return double(__uint_as_float(u[j]));
    } else {
      const unsigned short b = static_cast<unsigned short>(u[j >> 1] >> (16 * (j & 1)));
      if constexpr (std::is_same_v<T, __half>) return double(__half2float(__ushort_as_half(b)));
      else return double(__bfloat162float(__ushort_as_bfloat16(b)));
    }
  }
};
template <class T>
__device__ __forceinline__ std::uint32_t raw_bits(T v) {
  if constexpr (sizeof(T) == 4) return __float_as_uint(v);
  else if constexpr (std::is_same_v<T, __half>) return __half_as_ushort(v);
  else return __bfloat16_as_ushort(v);
}

/// Columns [col0, col0 + 8) of one row (0 past d): one 16-byte load (two for fp32) when
/// `vec` says rows are 16-byte aligned. The rows do not change during the kernel (ld.nc).
template <class T>
__device__ __forceinline__ void load_row8(const T* row, int col0, int d, bool vec, Row8<T>& r) {
  if (vec && col0 + 8 <= d) {
    const uint4* p = reinterpret_cast<const uint4*>(row + col0);
#pragma unroll
    for (int h = 0; h < Row8<T>::kWords / 4; ++h) {
      const uint4 q = __ldg(p + h);
      r.u[4 * h] = q.x, r.u[4 * h + 1] = q.y, r.u[4 * h + 2] = q.z, r.u[4 * h + 3] = q.w;
    }
  } else {
#pragma unroll
    for (int h = 0; h < Row8<T>::kWords; ++h) r.u[h] = 0;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      if (col0 + j >= d) break;
      if constexpr (sizeof(T) == 4) r.u[j] = raw_bits(row[col0 + j]);
      else r.u[j >> 1] |= raw_bits(row[col0 + j]) << (16 * (j & 1));
    }
  }
}

/// kGroup rows of a piece in flight: their columns, weights and norms (1 where absent).
template <class T, int G>
struct RowGroup {
  Row8<T> r[G];
  float w[G], nrm[G];
};
/// Sorted positions [q0, q0 + G) of a piece ending at `end`: their row indices (-1 past end).
template <int G>
__device__ __forceinline__ void load_order(const std::int32_t* order, std::int64_t q0, std::int64_t end,
                                           std::int32_t (&idx)[G]) {
#pragma unroll
  for (int u = 0; u < G; ++u) idx[u] = q0 + u < end ? __ldg(order + q0 + u) : -1;
}
template <class T, int G>
__device__ __forceinline__ void load_group(const T* x, std::int64_t stride, int col0, int d, bool vec, bool cols,
                                           const float* w, const float* xnorm, bool cosine,
                                           const std::int32_t (&idx)[G], RowGroup<T, G>& g) {
#pragma unroll
  for (int u = 0; u < G; ++u) {
    g.w[u] = 1.0f;
    g.nrm[u] = 1.0f;
    if (idx[u] >= 0) {
      const std::int64_t i = idx[u];
      if (w) g.w[u] = __ldg(w + i);
      if (cosine) g.nrm[u] = __ldg(xnorm + i);
      if (cols) load_row8(x + i * stride, col0, d, vec, g.r[u]);
    }
  }
}

// Work item p = blockIdx.x * blockDim.y + threadIdx.y (a Piece, or with kItems an
// UpdateItem); its threadIdx.x owns 8 consecutive columns (and 8 more every blockDim.x * 8),
// so a row costs d / 8 threads and many items run side by side. The rows are gathered in
// sorted order, so the loop is bound by memory latency (ncu, H200, N=1M D=128 fp16: 179 us,
// 1.4 TB/s, when each group of rows waited for its order[] entries and then for its rows).
// So it is software-pipelined: while group g is summed, the rows of group g + 1 and the row
// indices of group g + 2 are in flight.
// Every column's adds stay one fp64 chain in row order, acc = fma(scale, x, acc) (what the
// unpipelined kernel's acc += scale * x contracted to): the sums do not depend on the launch
// shape, the group size or the pipelining (tests/gpu: PieceSums.* against a host chain).
// A fused item (a whole cluster, UpdateItem::rows > 0) ends a chain every `rows` rows and adds
// it into the cluster's sum, cacc = cacc + acc from cacc = 0: the combine's adds, in registers.
template <class T, bool kItems>
__global__ void __launch_bounds__(128, 4) piece_sums_kernel(const T* x, std::int64_t stride, int d, bool vec,
                                                            const float* w, const float* xnorm, bool cosine,
                                                            bool with_x, const std::int32_t* order,
                                                            const void* work, const std::int64_t* n_work,
                                                            double* part, const unsigned char* resume,
                                                            double* sums, double* weights) {
  constexpr int kGroup = sizeof(T) == 4 ? 2 : 4;  // 64 bytes of a thread's columns per group
  const std::int64_t p = std::int64_t(blockIdx.x) * blockDim.y + threadIdx.y;
  if (p >= *n_work) return;  // no block-wide barrier below
  std::int64_t begin, end, chain_rows = 0;  // chain_rows > 0: a fused cluster's chain height
  double* out;                              // the piece's row of part, or the cluster's of sums
  double* wout;                             // the weight's slot
  bool cont = false;                        // continue the chains stored in out
  if constexpr (kItems) {
    const UpdateItem it = static_cast<const UpdateItem*>(work)[p];
    begin = it.begin, end = it.end, chain_rows = it.rows;
    if (chain_rows > 0 && it.out < 0) return;  // a sort key of no cluster (it has no rows)
    if (chain_rows > 0) {
      out = sums + std::int64_t(it.out) * d;
      wout = weights + it.out;
    } else {
      out = part + std::int64_t(it.out) * (d + 1);
      wout = out + d;
    }
  } else {
    const Piece pc = static_cast<const Piece*>(work)[p];
    begin = pc.begin, end = pc.end;
    out = part + p * (d + 1);
    wout = out + d;
    cont = resume != nullptr && resume[p] != 0;
  }
  const bool fused = chain_rows > 0;
  const int c_end = with_x ? d : 0;
  // A thread whose first column chunk is past d still runs the loop once when it must sum
  // the weights (threadIdx.x == 0 always has col0 = 0).
  for (int col0 = threadIdx.x * 8; col0 < c_end || (col0 == 0 && threadIdx.x == 0); col0 += blockDim.x * 8) {
    const bool cols = col0 < c_end;
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    double wacc = 0;
    if (cont) {
      if (cols) {
#pragma unroll
        for (int j = 0; j < 8; ++j)
          if (col0 + j < d) acc[j] = out[col0 + j];
      }
      if (col0 == 0 && threadIdx.x == 0) wacc = *wout;
    }
    // The fused cluster's sums and where its current chain ends (never inside a piece).
    double cacc[kItems ? 8 : 1] = {}, cw = 0;
    std::int64_t chain_end = fused ? begin + chain_rows : end;
    std::int32_t idx[kGroup], idx_next[kGroup];
    RowGroup<T, kGroup> cur;
    load_order(order, begin, end, idx);
    load_group(x, stride, col0, d, vec, cols, w, xnorm, cosine, idx, cur);
    load_order(order, begin + kGroup, end, idx_next);
    for (std::int64_t q0 = begin; q0 < end; q0 += kGroup) {
      RowGroup<T, kGroup> next;
      load_group(x, stride, col0, d, vec, cols, w, xnorm, cosine, idx_next, next);
      load_order(order, q0 + 2 * kGroup, end, idx);
#pragma unroll
      for (int u = 0; u < kGroup; ++u) {
        if (q0 + u >= end) break;
        if constexpr (kItems) {
          if (q0 + u == chain_end) {  // a chain of the fused cluster ends: add it, start the next
            chain_end += chain_rows;
            cw = cw + wacc;
            wacc = 0;
#pragma unroll
            for (int j = 0; j < 8; ++j) cacc[j] = cacc[j] + acc[j], acc[j] = 0;
          }
        }
        const double wv = double(cur.w[u]);
        wacc += wv;
        if (cols) {
          const double sc = cosine ? wv / sqrt(double(cur.nrm[u])) : wv;
#pragma unroll
          for (int j = 0; j < 8; ++j) acc[j] = fma(sc, cur.r[u].at(j), acc[j]);
        }
      }
      cur = next;
#pragma unroll
      for (int u = 0; u < kGroup; ++u) idx_next[u] = idx[u];
    }
    if constexpr (kItems) {
      if (fused) {  // the last chain (an empty cluster: 0 + 0, the combine's 0 of no pieces)
        wacc = cw + wacc;
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[j] = cacc[j] + acc[j];
      }
    }
    if (cols)
      for (int j = 0; j < 8 && col0 + j < d; ++j) out[col0 + j] = acc[j];
    if (col0 == 0 && threadIdx.x == 0) *wout = wacc;
    if (!cols) break;
  }
}

// The big clusters' sums from their pieces: unit = (big cluster, a slice of 32 of the d + 1
// columns), so a huge cluster's slices run on several SMs. A column's sum is one chain over
// the cluster's pieces in order, ((0 + p0) + p1) + ...; the chain is sequential, so the loads
// must run ahead of it. Two kernels, each over its own list of clusters (first[nc].few /
// .many units' clusters, read on the device), the same adds in the same order:
// * combine_few_kernel, clusters of at most kCombineFew pieces: a warp per unit, units
//   strided over the grid's warps; each batch of pieces (8 for clusters of at most 8 pieces,
//   else 32: at most one batch) is loaded (clamped: every load valid, the extra ones unused)
//   before its adds.
// * combine_many_kernel, longer clusters: a block per unit, units strided over the grid;
//   tiles of kCombineTile pieces x 32 columns are copied to shared memory by all four warps
//   (cp.async, kCombineStages tiles in flight) while warp 0 adds the previous tile.
// Measured on the H200 (N=1M K=256, 64 pieces per cluster on average): a block per cluster
// with 8 loads ahead waited on memory (~100 us); the block-staged kernel alone made the
// update 0.213 ms, a warp per unit with batches of 32 ~0.26 ms (two calls apart). The staged
// kernel over the list of all big clusters' units, skipping the short ones', walked 640,000
// units per block at B=500 x K=256 (+0.4 ms): hence two lists.
template <int kBatch>
__device__ __forceinline__ double chain_of_pieces(const double* col, std::int64_t np, std::int64_t ld) {
  double acc = 0;
  for (std::int64_t b = 0; b < np; b += kBatch) {
    double x[kBatch];
#pragma unroll
    for (int r = 0; r < kBatch; ++r) x[r] = col[(b + r < np ? b + r : np - 1) * ld];
#pragma unroll
    for (int r = 0; r < kBatch; ++r)
      if (b + r < np) acc += x[r];
  }
  return acc;
}
// Writes one unit's chain: column j < d to the sums, j == d to the weight (key v's cluster;
// none for -1).
__device__ __forceinline__ void store_combined(double acc, std::int64_t v, int j, int d,
                                               const std::int32_t* cluster_of, double* sums, double* weights) {
  const std::int64_t c = cluster_of ? cluster_of[v] : v;
  if (c >= 0 && j <= d) {
    if (j < d) sums[c * d + j] = acc;
    else weights[c] = acc;
  }
}
__global__ void combine_few_kernel(const double* part, const UpdateCounts* first, std::int64_t nc,
                                   const std::int32_t* few, int d, bool with_x, const std::int32_t* cluster_of,
                                   double* sums, double* weights) {
  const int lane = threadIdx.x & 31;
  const std::int64_t ld = d + 1;
  const int slices = with_x ? (d + 32) / 32 : 1;  // ceil((d + 1) / 32)
  const std::int64_t units = first[nc].few * slices, warps = std::int64_t(gridDim.x) * (blockDim.x >> 5);
  for (std::int64_t u = std::int64_t(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5); u < units; u += warps) {
    const std::int64_t v = few[u / slices];
    const std::int64_t p0 = first[v].pieces, np = first[v + 1].pieces - p0;  // kFusedPieces < np <= kCombineFew
    const int j = (with_x ? static_cast<int>(u % slices) * 32 : d) + lane;  // this lane's column
    const double* col = part + (j <= d ? j : d) + p0 * ld;                  // clamped: loads stay valid
    const double acc = np <= 8 ? chain_of_pieces<8>(col, np, ld) : chain_of_pieces<kCombineFew>(col, np, ld);
    store_combined(acc, v, j, d, cluster_of, sums, weights);
  }
}
constexpr int kCombineTile = 32, kCombineStages = 4, kCombineWarps = 4;
__global__ void __launch_bounds__(32 * kCombineWarps)
    combine_many_kernel(const double* part, const UpdateCounts* first, std::int64_t nc, const std::int32_t* many,
                        int d, bool with_x, const std::int32_t* cluster_of, double* sums, double* weights) {
  __shared__ double stage[kCombineStages][kCombineTile][32];  // 32 KB
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const std::int64_t ld = d + 1;
  const int slices = with_x ? (d + 32) / 32 : 1;  // ceil((d + 1) / 32)
  const std::int64_t units = first[nc].many * slices;
  for (std::int64_t u = blockIdx.x; u < units; u += gridDim.x) {
    const std::int64_t v = many[u / slices];
    const int j = (with_x ? static_cast<int>(u % slices) * 32 : d) + lane;  // this lane's column
    const double* col = part + (j <= d ? j : d);                             // clamped: loads stay valid
    const std::int64_t p0 = first[v].pieces, np = first[v + 1].pieces - p0;  // np > kCombineFew
    const std::int64_t tiles = (np + kCombineTile - 1) / kCombineTile;
    // Tile t's pieces (clamped to the last: every copy valid, the extra ones unused) into its
    // stage; one commit group per tile, empty past the last, so that wait_group counts tiles.
    auto issue = [&](std::int64_t t) {
      if (t < tiles) {
        double(&dst)[kCombineTile][32] = stage[t % kCombineStages];
        for (int r = warp; r < kCombineTile; r += kCombineWarps) {
          const std::int64_t q = t * kCombineTile + r;
          arch::cp_async_ca_8(&dst[r][lane], col + (p0 + (q < np ? q : np - 1)) * ld);
        }
      }
      arch::cp_async_commit();
    };
#pragma unroll
    for (int t = 0; t < kCombineStages - 1; ++t) issue(t);
    double acc = 0;
    for (std::int64_t t = 0; t < tiles; ++t) {
      issue(t + kCombineStages - 1);  // into the stage tile t - 1 used (freed by the last barrier)
      arch::cp_async_wait<kCombineStages - 1>();  // this thread's copies of tile t have landed
      __syncthreads();                            // and everyone's
      if (warp == 0) {
        const double(&src)[kCombineTile][32] = stage[t % kCombineStages];
        const int m = static_cast<int>(np - t * kCombineTile < kCombineTile ? np - t * kCombineTile : kCombineTile);
#pragma unroll 8
        for (int r = 0; r < m; ++r) acc += src[r][lane];
      }
      __syncthreads();  // the stage is read before it is refilled
    }
    arch::cp_async_wait<0>();  // no copy (the empty groups') outlives the unit
    if (warp == 0) store_combined(acc, v, j, d, cluster_of, sums, weights);
  }
}

// block_sum_256's tree over the partial sums of a 256-thread block, computed by one warp:
// lane l holds the partials of the block's threads l + 32 i (i < 8). Levels 128, 64, 32 of
// the tree pair them in registers, levels 16 ... 1 are shuffles: the same adds of the same
// values, so the same bits as block_sum_256. The result is valid in every lane.
__device__ __forceinline__ double warp_tree_256(double (&v)[8]) {
#pragma unroll
  for (int i = 0; i < 4; ++i) v[i] += v[i + 4];
#pragma unroll
  for (int i = 0; i < 2; ++i) v[i] += v[i + 2];
  double r = v[0] + v[1];
  for (int o = 16; o > 0; o >>= 1) r += __shfl_down_sync(0xffffffffu, r, o);
  return __shfl_sync(0xffffffffu, r, 0);
}

// One warp per cluster, 8 per block: lane l stands for the threads l + 32 i of the former
// block of 256 per cluster (columns j = l + 32 i + 256 m, each thread's in order), and
// warp_tree_256 is that block's tree; a block per cluster left half its threads idle at
// D=128 and waited on 16 barriers (B=500 x K=256: 252 us).
__global__ void finish_update_kernel(const double* sums, const double* weights, const float* current,
                                     std::int64_t nc, int d, bool cosine, float* next, double* shift_part,
                                     unsigned long long* n_empty) {
  const std::int64_t c = (std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (c >= nc) return;  // the whole warp: no barrier below
  const double* s = sums + c * d;
  const float* cur = current + c * d;
  float* nx = next + c * d;
  const double w = weights[c];
  bool keep = !(w > 0);
  double scale = keep ? 0.0 : 1.0 / w;
  double part[8];
  if (cosine && !keep) {
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      part[i] = 0;
      for (int j = lane + 32 * i; j < d; j += 256) part[i] = fma(s[j], s[j], part[i]);
    }
    const double n2 = warp_tree_256(part);
    if (n2 == 0) keep = true;  // opposite unit vectors cancelled: keep the old direction
    else scale = 1.0 / sqrt(n2);
  }
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    part[i] = 0;
    for (int j = lane + 32 * i; j < d; j += 256) {
      const float v = keep ? cur[j] : static_cast<float>(s[j] * scale);
      nx[j] = v;
      const double diff = double(v) - double(cur[j]);
      part[i] = fma(diff, diff, part[i]);
    }
  }
  const double acc = warp_tree_256(part);
  if (lane == 0) {
    shift_part[c] = acc;
    if (!(w > 0)) atomicAdd(n_empty, 1ull);
  }
}

// ---- exact inertia: warp per row, rows of a chunk round-robin over 8 warps -------------
__global__ void exact_inertia_kernel(XView x, const float* w, const std::int32_t* labels, const float* c32, int k,
                                     Metric metric, double* part) {
  __shared__ double sw[8];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const std::int64_t base = std::int64_t(blockIdx.x) * kRowChunk;
  double wacc = 0;
  for (int q = warp; q < kRowChunk; q += 8) {
    const std::int64_t i = base + q;
    if (i >= x.n) break;
    const int b = static_cast<int>(i / x.n_per);
    const float* c = c32 + (std::int64_t(b) * k + labels[i]) * x.d;
    const double wd = warp_weighted_distance(x, i, c, metric, w, lane);
    if (lane == 0) wacc += wd;
  }
  const double t = sum_over_8_warps(wacc, sw);
  if (threadIdx.x == 0) part[blockIdx.x] = t;
}

// ---- per-feature sums: block per chunk, threads over d, rows in order ----------------------
__global__ void column_sums_kernel(XView x, const double* center, double* part) {
  const std::int64_t base = std::int64_t(blockIdx.x) * kRowChunk;
  const std::int64_t end = base + kRowChunk < x.n ? base + kRowChunk : x.n;
  for (int c = threadIdx.x; c < x.d; c += blockDim.x) {
    double acc = 0;
    for (std::int64_t i = base; i < end; ++i) {
      const double v = load_x(x, i, c);
      if (center) {
        const double df = v - center[c];
        acc += df * df;
      } else {
        acc += v;
      }
    }
    part[std::int64_t(blockIdx.x) * x.d + c] = acc;
  }
}

__global__ void sequential_chunk_sums_kernel(const float* mind, const float* w, std::int64_t n, double* part,
                                             std::int64_t n_chunks) {
  const std::int64_t c = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= n_chunks) return;
  double s = 0;
  const std::int64_t end = (c + 1) * kRowChunk < n ? (c + 1) * kRowChunk : n;
  for (std::int64_t i = c * kRowChunk; i < end; ++i) s += (w ? double(w[i]) : 1.0) * double(mind[i]);
  part[c] = s;
}

// row0: the global index of row 0 (a shard of a distributed fit draws its rows' uniforms,
// so that the sample does not depend on how the rows are sharded).
__global__ void bernoulli_kernel(const float* mind, const float* w, std::int64_t n, double factor, std::uint64_t seed,
                                 std::uint64_t round, std::int64_t row0, unsigned char* flags) {
  const std::int64_t i = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const double p = factor * (w ? double(w[i]) : 1.0) * double(mind[i]);
  flags[i] = core::counter_uniform(seed, round, static_cast<std::uint64_t>(row0 + i)) < p ? 1 : 0;
}

__global__ void gather_kernel(XView x, const float* xnorm, bool cosine, const std::int32_t* labels, const float* w,
                              const std::int64_t* idx, std::int64_t m, float* rows, std::int32_t* lab, float* wout,
                              bool x_compact) {
  const std::int64_t t = blockIdx.x;
  if (t >= m) return;
  const std::int64_t i = idx[t];
  const std::int64_t xi = x_compact ? t : i;
  if (rows) {
    const double inv = cosine ? 1.0 / sqrt(double(xnorm[i])) : 1.0;
    for (int c = threadIdx.x; c < x.d; c += blockDim.x)
      rows[t * x.d + c] = static_cast<float>(cosine ? load_x(x, xi, c) * inv : load_x(x, xi, c));
  }
  if (threadIdx.x == 0) {
    if (lab) lab[t] = labels ? labels[i] : -1;
    if (wout) wout[t] = w ? w[i] : 1.0f;
  }
}

// One warp per (row, centroid): distance from differences (l2) or dot products.
__global__ void all_distances_kernel(XView x, const float* xnorm, const float* c32, int k, Metric metric,
                                     std::int64_t r0, std::int64_t rows, float* out) {
  const std::int64_t wid = (std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (wid >= rows * k) return;
  const std::int64_t r = wid / k;
  const int j = static_cast<int>(wid % k);
  const std::int64_t i = r0 + r;
  const float* c = c32 + std::int64_t(j) * x.d;
  double s = 0;
  for (int q = lane; q < x.d; q += 32) {
    const double v = load_x(x, i, q);
    if (metric == Metric::l2) {
      const double df = v - double(c[q]);
      s = fma(df, df, s);
    } else {
      s = fma(v, double(c[q]), s);
    }
  }
  for (int o = 16; o > 0; o >>= 1) s += __shfl_down_sync(0xffffffffu, s, o);
  if (lane == 0) {
    double dist = s;
    if (metric == Metric::l2) dist = sqrt(s);  // transform(): Euclidean, as scikit-learn
    else if (metric == Metric::cosine) dist = 1.0 - s / sqrt(double(xnorm[i]));
    else if (metric == Metric::inner_product) dist = -s;
    out[r * k + j] = static_cast<float>(dist);
  }
}

// The row-sum kernel over max_work items (a Piece list, or UpdateItems with kItems), by dtype.
template <bool kItems>
void launch_row_sums(const XView& x, const float* w, const float* xnorm, bool cosine, bool with_x,
                     const std::int32_t* order, const void* work, const std::int64_t* n_work, std::int64_t max_work,
                     double* part, const unsigned char* resume, double* sums, double* weights, cudaStream_t s) {
  if (max_work == 0) return;
  // Threads per item: one per 8 columns (at most 128); items per block fill 128 threads.
  const int tpp = with_x ? std::min(128, (x.d + 7) / 8) : 1;
  const int ppb = std::max(1, 128 / tpp);
  const dim3 block(tpp, ppb);
  const unsigned grid = static_cast<unsigned>((max_work + ppb - 1) / ppb);
  const std::size_t esz = dtype_size(x.dtype);
  const bool vec = (reinterpret_cast<std::uintptr_t>(x.x) & 15) == 0 && (x.stride * esz) % 16 == 0;
  auto run = [&](auto tag) {
    using T = decltype(tag);
    piece_sums_kernel<T, kItems><<<grid, block, 0, s>>>(static_cast<const T*>(x.x), x.stride, x.d, vec, w, xnorm,
                                                        cosine, with_x, order, work, n_work, part, resume, sums,
                                                        weights);
  };
  switch (x.dtype) {
    case DType::f32: run(float{}); break;
    case DType::f16: run(__half{}); break;
    case DType::bf16: run(__nv_bfloat16{}); break;
    default: FLASHKM_FAIL(internal, "piece sums: the data must be fp32, fp16 or bf16 on the device");
  }
  FLASHKM_CUDA_LAUNCH_CHECK();
}

}  // namespace

void launch_validate(const XView& x, const float* w, float* xnorm, long long* status, cudaStream_t s) {
  if (x.n == 0) return;
  validate_kernel<<<blocks_for(x.n, 256), 256, 0, s>>>(x, w, xnorm, status);
  FLASHKM_CUDA_LAUNCH_CHECK();
}
void launch_f64_to_f32(const double* src, std::int64_t n, int d, std::int64_t stride, float* dst, cudaStream_t s) {
  if (n == 0) return;
  f64_to_f32_kernel<<<blocks_for(n * d, 256), 256, 0, s>>>(src, n, d, stride, dst);
  FLASHKM_CUDA_LAUNCH_CHECK();
}
void launch_convert_rows(const XView& x, int op, int dp, void* dst, cudaStream_t s) {
  if (x.n == 0) return;
  if (op == 0) convert_rows_kernel<__half><<<blocks_for(x.n * dp, 256), 256, 0, s>>>(x, dp, static_cast<__half*>(dst));
  else convert_rows_kernel<__nv_bfloat16><<<blocks_for(x.n * dp, 256), 256, 0, s>>>(x, dp, static_cast<__nv_bfloat16*>(dst));
  FLASHKM_CUDA_LAUNCH_CHECK();
}
void launch_prepare_centroids(const float* c32, int batch, int k, int d, int kp, int dp, int op, bool l2, void* c_op,
                              float* cterm, unsigned* cmax_bits, unsigned* dcmax_bits, unsigned* overflow,
                              cudaStream_t s) {
  const std::int64_t threads = std::int64_t(batch) * kp * 32;
  prepare_centroids_kernel<<<blocks_for(threads, 256), 256, 0, s>>>(c32, batch, k, d, kp, dp, op, l2, c_op, cterm,
                                                                     cmax_bits, dcmax_bits, overflow);
  FLASHKM_CUDA_LAUNCH_CHECK();
}
void launch_weighted_sum(const float* v, const float* w, std::int64_t n, double* part, double* out, cudaStream_t s) {
  const unsigned chunks = blocks_for(n, kRowChunk);
  weighted_sum_chunks<<<chunks, 256, 0, s>>>(v, w, n, part);
  FLASHKM_CUDA_LAUNCH_CHECK();
  sum_parts<<<1, 256, 0, s>>>(part, chunks, out);
  FLASHKM_CUDA_LAUNCH_CHECK();
}
void launch_weighted_sum_parts(const float* v, const float* w, std::int64_t n, double* part, cudaStream_t s) {
  if (n == 0) return;
  weighted_sum_chunks<<<blocks_for(n, kRowChunk), 256, 0, s>>>(v, w, n, part);
  FLASHKM_CUDA_LAUNCH_CHECK();
}
void launch_min_into(float* mind, const float* v, std::int64_t n, cudaStream_t s) {
  min_into_kernel<<<blocks_for(n, 256), 256, 0, s>>>(mind, v, n);
  FLASHKM_CUDA_LAUNCH_CHECK();
}
void launch_fill(float* p, float value, std::int64_t n, cudaStream_t s) {
  fill_kernel<<<blocks_for(n, 256), 256, 0, s>>>(p, value, n);
  FLASHKM_CUDA_LAUNCH_CHECK();
}
void launch_iota_keys(const std::int32_t* labels, std::int64_t n, std::int64_t n_per, int k, std::int32_t* keys,
                      std::int32_t* vals, cudaStream_t s) {
  iota_keys_kernel<<<blocks_for(n, 256), 256, 0, s>>>(labels, n, n_per, k, keys, vals);
  FLASHKM_CUDA_LAUNCH_CHECK();
}
void launch_cluster_offsets(const std::int32_t* sorted_keys, std::int64_t n, std::int64_t nc, std::int32_t* row_off,
                            cudaStream_t s) {
  cluster_offsets_kernel<<<blocks_for(n + 1, 256), 256, 0, s>>>(sorted_keys, n, nc, row_off);
  FLASHKM_CUDA_LAUNCH_CHECK();
}
void launch_piece_sums(const XView& x, const float* w, const float* xnorm, bool cosine, bool with_x,
                       const std::int32_t* order, const Piece* pieces, const std::int64_t* n_pieces,
                       std::int64_t max_pieces, double* part, cudaStream_t s, const unsigned char* resume) {
  launch_row_sums<false>(x, w, xnorm, cosine, with_x, order, pieces, n_pieces, max_pieces, part, resume, nullptr,
                         nullptr, s);
}
void launch_item_sums(const XView& x, const float* w, const float* xnorm, bool cosine, bool with_x,
                      const std::int32_t* order, const UpdateItem* items, const std::int64_t* n_items,
                      std::int64_t max_items, double* part, double* sums, double* weights, cudaStream_t s) {
  launch_row_sums<true>(x, w, xnorm, cosine, with_x, order, items, n_items, max_items, part, nullptr, sums, weights,
                        s);
}
void launch_update_counts(const std::int32_t* row_off, std::int64_t nc, int piece_rows,
                          const std::int32_t* per_cluster, UpdateCounts* counts, cudaStream_t s) {
  update_counts_kernel<<<blocks_for(nc + 1, 256), 256, 0, s>>>(row_off, nc, piece_rows, per_cluster, counts);
  FLASHKM_CUDA_LAUNCH_CHECK();
}
std::size_t update_scan_bytes(std::int64_t nc) {
  std::size_t bytes = 0;
  FLASHKM_CUDA_CHECK(cub::DeviceScan::ExclusiveScan(nullptr, bytes, static_cast<const UpdateCounts*>(nullptr),
                                                    static_cast<UpdateCounts*>(nullptr), AddCounts{},
                                                    UpdateCounts{0, 0, 0, 0}, nc + 1));
  return bytes;
}
void launch_update_scan(void* temp, std::size_t temp_bytes, const UpdateCounts* counts, UpdateCounts* first,
                        std::int64_t nc, cudaStream_t s) {
  FLASHKM_CUDA_CHECK(
      cub::DeviceScan::ExclusiveScan(temp, temp_bytes, counts, first, AddCounts{}, UpdateCounts{0, 0, 0, 0}, nc + 1, s));
  FLASHKM_CUDA_LAUNCH_CHECK();
}
void launch_fill_items(const std::int32_t* row_off, const UpdateCounts* first, std::int64_t nc, int piece_rows,
                       const std::int32_t* per_cluster, const std::int32_t* cluster_of, std::int64_t max_items,
                       UpdateItem* items, std::int32_t* few, std::int32_t* many, cudaStream_t s) {
  if (nc == 0 || max_items == 0) return;
  fill_items_kernel<<<blocks_for(max_items, 256), 256, 0, s>>>(row_off, first, nc, piece_rows, per_cluster,
                                                                cluster_of, max_items, items, few, many);
  FLASHKM_CUDA_LAUNCH_CHECK();
}
void launch_combine_big(const double* part, const UpdateCounts* first, std::int64_t nc, const std::int32_t* few,
                        std::int64_t max_few, const std::int32_t* many, std::int64_t max_many, int d, bool with_x,
                        const std::int32_t* cluster_of, double* sums, double* weights, cudaStream_t s) {
  const std::int64_t slices = with_x ? (d + 32) / 32 : 1;
  if (max_few > 0) {
    // A warp per unit, 8 warps per block, a warp for every unit the bound allows.
    combine_few_kernel<<<blocks_for(max_few * slices * 32, 256), 256, 0, s>>>(part, first, nc, few, d, with_x,
                                                                              cluster_of, sums, weights);
    FLASHKM_CUDA_LAUNCH_CHECK();
  }
  if (max_many > 0) {
    // A block per unit, strided over at most 2048 blocks: enough for every SM at 32 KB of
    // shared memory per block; blocks past the units exit.
    const unsigned grid = static_cast<unsigned>(std::min<std::int64_t>(max_many * slices, 2048));
    combine_many_kernel<<<grid, 32 * kCombineWarps, 0, s>>>(part, first, nc, many, d, with_x, cluster_of, sums,
                                                            weights);
    FLASHKM_CUDA_LAUNCH_CHECK();
  }
}
UpdateWorkspace UpdateBuffers::prepare(std::int64_t nc, std::int64_t max_items, std::int64_t max_big_pieces, int d,
                                       void* temp, std::size_t temp_bytes) {
  UpdateWorkspace ws;
  ws.max_items = max_items;
  ws.max_big_pieces = std::min(max_items, max_big_pieces);
  // Each list's clusters have more pieces than its lower limit.
  ws.max_few = std::min(nc, ws.max_big_pieces / (kFusedPieces + 1));
  ws.max_many = std::min(nc, ws.max_big_pieces / (kCombineFew + 1));
  counts.ensure(std::size_t(nc + 1), "update counts per cluster");
  first.ensure(std::size_t(nc + 1), "update count offsets");
  items.ensure(std::size_t(std::max<std::int64_t>(max_items, 1)), "update work items");
  bigs.ensure(std::size_t(std::max<std::int64_t>(ws.max_few + ws.max_many, 1)), "update big clusters");
  part.ensure(std::size_t(std::max<std::int64_t>(ws.max_big_pieces, 1)) * std::size_t(d + 1), "update piece sums");
  ws.counts = counts.get();
  ws.first = first.get();
  ws.items = items.get();
  ws.few = bigs.get();
  ws.many = bigs.get() + ws.max_few;
  ws.part = part.get();
  ws.temp = temp;
  ws.temp_bytes = temp_bytes;
  return ws;
}
void launch_update_sums(const XView& x, const float* w, const float* xnorm, bool cosine, bool with_x,
                        const std::int32_t* order, const std::int32_t* row_off, std::int64_t nc, int piece_rows,
                        const std::int32_t* per_cluster, const std::int32_t* cluster_of, const UpdateWorkspace& ws,
                        double* sums, double* weights, cudaStream_t s) {
  if (nc == 0) return;
  launch_update_counts(row_off, nc, piece_rows, per_cluster, ws.counts, s);
  launch_update_scan(ws.temp, ws.temp_bytes, ws.counts, ws.first, nc, s);
  launch_fill_items(row_off, ws.first, nc, piece_rows, per_cluster, cluster_of, ws.max_items, ws.items, ws.few,
                    ws.many, s);
  launch_item_sums(x, w, xnorm, cosine, with_x, order, ws.items, &ws.first[nc].items, ws.max_items, ws.part, sums,
                   weights, s);
  launch_combine_big(ws.part, ws.first, nc, ws.few, ws.max_few, ws.many, ws.max_many, x.d, with_x, cluster_of, sums,
                     weights, s);
}
void launch_finish_update(const double* sums, const double* weights, const float* current, std::int64_t nc, int d,
                          bool cosine, float* next, double* shift_part, unsigned long long* n_empty, cudaStream_t s) {
  if (nc == 0) return;
  finish_update_kernel<<<blocks_for(nc * 32, 256), 256, 0, s>>>(sums, weights, current, nc, d, cosine, next,
                                                                 shift_part, n_empty);
  FLASHKM_CUDA_LAUNCH_CHECK();
}
void launch_sum_parts(const double* part, std::int64_t m, double* out, cudaStream_t s) {
  sum_parts<<<1, 256, 0, s>>>(part, m, out);
  FLASHKM_CUDA_LAUNCH_CHECK();
}
void launch_exact_inertia(const XView& x, const float* w, const std::int32_t* labels, const float* c32, int k,
                          Metric metric, double* part, cudaStream_t s) {
  exact_inertia_kernel<<<blocks_for(x.n, kRowChunk), 256, 0, s>>>(x, w, labels, c32, k, metric, part);
  FLASHKM_CUDA_LAUNCH_CHECK();
}
void launch_column_sums(const XView& x, const double* center, double* part, cudaStream_t s) {
  const int threads = x.d >= 256 ? 256 : ((x.d + 31) / 32) * 32;
  column_sums_kernel<<<blocks_for(x.n, kRowChunk), threads, 0, s>>>(x, center, part);
  FLASHKM_CUDA_LAUNCH_CHECK();
}
void launch_sequential_chunk_sums(const float* mind, const float* w, std::int64_t n, double* part, cudaStream_t s) {
  const std::int64_t chunks = (n + kRowChunk - 1) / kRowChunk;
  sequential_chunk_sums_kernel<<<blocks_for(chunks, 64), 64, 0, s>>>(mind, w, n, part, chunks);
  FLASHKM_CUDA_LAUNCH_CHECK();
}
void launch_bernoulli(const float* mind, const float* w, std::int64_t n, double factor, std::uint64_t seed,
                      std::uint64_t round, std::int64_t row0, unsigned char* flags, cudaStream_t s) {
  bernoulli_kernel<<<blocks_for(n, 256), 256, 0, s>>>(mind, w, n, factor, seed, round, row0, flags);
  FLASHKM_CUDA_LAUNCH_CHECK();
}
void launch_gather(const XView& x, const float* xnorm, bool cosine, const std::int32_t* labels, const float* w,
                   const std::int64_t* idx, std::int64_t m, float* rows, std::int32_t* lab, float* wout,
                   cudaStream_t s, bool x_compact) {
  if (m == 0) return;
  gather_kernel<<<static_cast<unsigned>(m), 128, 0, s>>>(x, xnorm, cosine, labels, w, idx, m, rows, lab, wout,
                                                         x_compact);
  FLASHKM_CUDA_LAUNCH_CHECK();
}
void launch_all_distances(const XView& x, const float* xnorm, const float* c32, int k, Metric metric, std::int64_t r0,
                          std::int64_t rows, float* out, cudaStream_t s) {
  if (rows == 0 || k == 0) return;
  all_distances_kernel<<<blocks_for(rows * k * 32, 256), 256, 0, s>>>(x, xnorm, c32, k, metric, r0, rows, out);
  FLASHKM_CUDA_LAUNCH_CHECK();
}

}  // namespace flashkm::cuda
