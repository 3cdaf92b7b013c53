// Small deterministic kernels of the CUDA backend: validation, centroid preparation,
// fixed-shape fp64 reductions, the sort-inverse update's piece sums, init support.
// No float atomics anywhere; integer atomics only where their result is order-free.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cfloat>
#include <cmath>
#include <cstdint>

#include "core/random.hpp"
#include "cuda/centroid_prep.cuh"
#include "cuda/cuda_check.hpp"
#include "cuda/device_helpers.cuh"
#include "cuda/kernels.cuh"

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
__global__ void piece_counts_kernel(const std::int32_t* row_off, std::int64_t nc, int piece_rows,
                                    const std::int32_t* per_cluster, std::int64_t* n_pieces) {
  const std::int64_t c = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c < nc) {
    const std::int64_t r = piece_rows_of(piece_rows, per_cluster, c);
    n_pieces[c] = (std::int64_t(row_off[c + 1] - row_off[c]) + r - 1) / r;
  } else if (c == nc) {
    n_pieces[c] = 0;
  }
}
// One thread per piece, not per cluster: with few large clusters a thread per cluster wrote
// hundreds of pieces one after another (K=256, N=1M: 41 us). Piece p belongs to the last
// cluster c with first[c] <= p (clusters without pieces have first[c] == first[c + 1]).
__global__ void fill_pieces_kernel(const std::int32_t* row_off, const std::int64_t* first, std::int64_t nc,
                                   int piece_rows, const std::int32_t* per_cluster, std::int64_t max_pieces,
                                   Piece* pieces) {
  const std::int64_t p = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (p >= max_pieces || p >= first[nc]) return;
  std::int64_t lo = 0, hi = nc - 1;
  while (lo < hi) {
    const std::int64_t mid = (lo + hi + 1) >> 1;
    if (first[mid] <= p) lo = mid;
    else hi = mid - 1;
  }
  const std::int64_t r = piece_rows_of(piece_rows, per_cluster, lo);
  const std::int64_t b = row_off[lo] + (p - first[lo]) * r, e = row_off[lo + 1];
  pieces[p] = Piece{b, b + r < e ? b + r : e};
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

// Piece p = blockIdx.x * blockDim.y + threadIdx.y; its threadIdx.x owns 8 consecutive
// columns (and 8 more every blockDim.x * 8), so a row costs d / 8 threads and many pieces
// run side by side. The rows are gathered in sorted order, so the loop is bound by memory
// latency (ncu, H200, N=1M D=128 fp16: 179 us, 1.4 TB/s, when each group of rows waited for
// its order[] entries and then for its rows). So it is software-pipelined: while group g is
// summed, the rows of group g + 1 and the row indices of group g + 2 are in flight.
// Every column's adds stay one fp64 chain in row order, acc = fma(scale, x, acc) (what the
// unpipelined kernel's acc += scale * x contracted to): the sums do not depend on the launch
// shape, the group size or the pipelining (tests/gpu: PieceSums.* against a host chain).
template <class T>
__global__ void __launch_bounds__(128, 4) piece_sums_kernel(const T* x, std::int64_t stride, int d, bool vec,
                                                            const float* w, const float* xnorm, bool cosine,
                                                            bool with_x, const std::int32_t* order,
                                                            const Piece* pieces, const std::int64_t* n_pieces,
                                                            double* part, const unsigned char* resume) {
  constexpr int kGroup = sizeof(T) == 4 ? 2 : 4;  // 64 bytes of a thread's columns per group
  const std::int64_t p = std::int64_t(blockIdx.x) * blockDim.y + threadIdx.y;
  if (p >= *n_pieces) return;  // no block-wide barrier below
  const Piece pc = pieces[p];
  double* out = part + p * (d + 1);
  const bool cont = resume != nullptr && resume[p] != 0;  // continue the chains stored in out
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
      if (col0 == 0 && threadIdx.x == 0) wacc = out[d];
    }
    std::int32_t idx[kGroup], idx_next[kGroup];
    RowGroup<T, kGroup> cur;
    load_order(order, pc.begin, pc.end, idx);
    load_group(x, stride, col0, d, vec, cols, w, xnorm, cosine, idx, cur);
    load_order(order, pc.begin + kGroup, pc.end, idx_next);
    for (std::int64_t q0 = pc.begin; q0 < pc.end; q0 += kGroup) {
      RowGroup<T, kGroup> next;
      load_group(x, stride, col0, d, vec, cols, w, xnorm, cosine, idx_next, next);
      load_order(order, q0 + 2 * kGroup, pc.end, idx);
#pragma unroll
      for (int u = 0; u < kGroup; ++u) {
        if (q0 + u >= pc.end) break;
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
    if (cols)
      for (int j = 0; j < 8 && col0 + j < d; ++j) out[col0 + j] = acc[j];
    if (col0 == 0 && threadIdx.x == 0) out[d] = wacc;
    if (!cols) break;
  }
}

// One block per sort key (a cluster, or none: cluster_of < 0), its threads over the columns;
// each column's pieces are added in piece order, one chain from 0 (the streamed path's fold
// adds them the same way, so the bits are the same). The loads of kBatch pieces are issued
// before their adds, which stay in order: with few clusters and many pieces (K=256, N=1M,
// 64 pieces each) a load per add left the kernel waiting on memory (152 us on the H200).
// A thread per (cluster, column) instead was slower still (318 us there; 365 us at B=500
// K=256 against 117 for a block per cluster): its 64-bit index arithmetic and dependent
// loads per element cost more than the idle threads of a block per cluster.
__global__ void combine_pieces_kernel(const double* part, const std::int64_t* first, int d, bool with_x,
                                      const std::int32_t* cluster_of, double* sums, double* weights) {
  constexpr int kBatch = 8;
  const std::int64_t v = blockIdx.x;  // the key (the cluster in the sort's key order)
  const std::int64_t c = cluster_of ? cluster_of[v] : v;
  if (c < 0) return;  // a key no cluster has
  const std::int64_t p0 = first[v], p1 = first[v + 1], ld = d + 1;
  for (int j = with_x ? static_cast<int>(threadIdx.x) : d + static_cast<int>(threadIdx.x); j <= d; j += blockDim.x) {
    const double* col = part + j;
    double acc = 0;
    for (std::int64_t p = p0; p < p1; p += kBatch) {
      double x[kBatch];
#pragma unroll
      for (int u = 0; u < kBatch; ++u) x[u] = p + u < p1 ? col[(p + u) * ld] : 0.0;
#pragma unroll
      for (int u = 0; u < kBatch; ++u)
        if (p + u < p1) acc += x[u];
    }
    if (j < d) sums[c * d + j] = acc;
    else weights[c] = acc;
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
void launch_piece_counts(const std::int32_t* row_off, std::int64_t nc, int piece_rows,
                         const std::int32_t* per_cluster, std::int64_t* n_pieces, cudaStream_t s) {
  piece_counts_kernel<<<blocks_for(nc + 1, 256), 256, 0, s>>>(row_off, nc, piece_rows, per_cluster, n_pieces);
  FLASHKM_CUDA_LAUNCH_CHECK();
}
void launch_fill_pieces(const std::int32_t* row_off, const std::int64_t* first, std::int64_t nc, int piece_rows,
                        const std::int32_t* per_cluster, std::int64_t max_pieces, Piece* pieces, cudaStream_t s) {
  if (nc == 0 || max_pieces == 0) return;
  fill_pieces_kernel<<<blocks_for(max_pieces, 256), 256, 0, s>>>(row_off, first, nc, piece_rows, per_cluster,
                                                                  max_pieces, pieces);
  FLASHKM_CUDA_LAUNCH_CHECK();
}
void launch_piece_sums(const XView& x, const float* w, const float* xnorm, bool cosine, bool with_x,
                       const std::int32_t* order, const Piece* pieces, const std::int64_t* n_pieces,
                       std::int64_t max_pieces, double* part, cudaStream_t s, const unsigned char* resume) {
  if (max_pieces == 0) return;
  // Threads per piece: one per 8 columns (at most 128); pieces per block fill 128 threads.
  const int tpp = with_x ? std::min(128, (x.d + 7) / 8) : 1;
  const int ppb = std::max(1, 128 / tpp);
  const dim3 block(tpp, ppb);
  const unsigned grid = static_cast<unsigned>((max_pieces + ppb - 1) / ppb);
  const std::size_t esz = dtype_size(x.dtype);
  const bool vec = (reinterpret_cast<std::uintptr_t>(x.x) & 15) == 0 && (x.stride * esz) % 16 == 0;
  switch (x.dtype) {
    case DType::f32:
      piece_sums_kernel<float><<<grid, block, 0, s>>>(static_cast<const float*>(x.x), x.stride, x.d, vec, w, xnorm,
                                                       cosine, with_x, order, pieces, n_pieces, part, resume);
      break;
    case DType::f16:
      piece_sums_kernel<__half><<<grid, block, 0, s>>>(static_cast<const __half*>(x.x), x.stride, x.d, vec, w, xnorm,
                                                        cosine, with_x, order, pieces, n_pieces, part, resume);
      break;
    case DType::bf16:
      piece_sums_kernel<__nv_bfloat16><<<grid, block, 0, s>>>(static_cast<const __nv_bfloat16*>(x.x), x.stride, x.d,
                                                               vec, w, xnorm, cosine, with_x, order, pieces, n_pieces,
                                                               part, resume);
      break;
    default: FLASHKM_FAIL(internal, "piece sums: the data must be fp32, fp16 or bf16 on the device");
  }
  FLASHKM_CUDA_LAUNCH_CHECK();
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
void launch_combine_pieces(const double* part, const std::int64_t* first, std::int64_t n_clusters, int d, bool with_x,
                           double* sums, double* weights, cudaStream_t s, const std::int32_t* cluster_of) {
  if (n_clusters == 0) return;
  // Threads over the d + 1 columns (sums and the weight), whole warps, at most 256.
  const int threads = with_x ? std::min(256, (d + 1 + 31) / 32 * 32) : 32;
  combine_pieces_kernel<<<static_cast<unsigned>(n_clusters), threads, 0, s>>>(part, first, d, with_x, cluster_of,
                                                                              sums, weights);
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
