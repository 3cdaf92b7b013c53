// Device pieces shared by the FlashAssign kernels (flash_assign.cu, flash_assign_sm90.cu):
// element conversion, the top-2 state and its merges, and the per-row finish (certify,
// write label + distance, or append the row to the flagged list). One definition, so every
// kernel certifies and writes rows the same way.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>

#include "cuda/flash_assign.hpp"
#include "cuda/problem_tiles.cuh"

namespace flashkm::cuda::detail {

// ------------------------------------------------------------------------------------
// Element conversion
// ------------------------------------------------------------------------------------
template <class T> __device__ __forceinline__ float to_f32(T v);
template <> __device__ __forceinline__ float to_f32<float>(float v) { return v; }
template <> __device__ __forceinline__ float to_f32<__half>(__half v) { return __half2float(v); }
template <> __device__ __forceinline__ float to_f32<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }

template <class T> __device__ __forceinline__ T from_f32(float v);
template <> __device__ __forceinline__ __half from_f32<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// ------------------------------------------------------------------------------------
// Top-2 state and the shared row finish
// ------------------------------------------------------------------------------------
struct Top2 {
  float best;
  int idx;
  float second;
};

__device__ __forceinline__ void top2_init(Top2& t) {
  t.best = INFINITY;
  t.idx = 0x7fffffff;
  t.second = INFINITY;
}
/// Fold one score; columns arrive in ascending order per thread, so '<' keeps the lowest index.
__device__ __forceinline__ void top2_push(Top2& t, float s, int col) {
  if (s < t.best) {
    t.second = t.best;
    t.best = s;
    t.idx = col;
  } else {
    t.second = fminf(t.second, s);
  }
}
/// Merge two states; (value, index) lexicographic, the loser's best competes for second.
__device__ __forceinline__ Top2 top2_merge(const Top2& a, const Top2& b) {
  const bool b_wins = b.best < a.best || (b.best == a.best && b.idx < a.idx);
  Top2 r;
  r.best = b_wins ? b.best : a.best;
  r.idx = b_wins ? b.idx : a.idx;
  r.second = fminf(fminf(a.second, b.second), b_wins ? a.best : b.best);
  return r;
}
__device__ __forceinline__ Top2 top2_shfl_xor(const Top2& t, int mask) {
  Top2 o;
  o.best = __shfl_xor_sync(0xffffffffu, t.best, mask);
  o.idx = __shfl_xor_sync(0xffffffffu, t.idx, mask);
  o.second = __shfl_xor_sync(0xffffffffu, t.second, mask);
  return top2_merge(t, o);
}

__device__ __forceinline__ float score_to_distance(Metric m, float best, float xn) {
  if (m == Metric::l2) return fmaxf(xn + best, 0.0f);
  if (m == Metric::cosine) return 1.0f + best * rsqrtf(xn);
  return best;
}

/// The candidate level's threshold for a flagged row (certify_candidates.hpp): every
/// centroid whose exact score can be the row's minimum has a computed score <= best + 2e
/// (each computed score is within e of its exact value, the exact minimum is <= the exact
/// score of the computed best). The slack covers this sum's own fp32 rounding (2^-20 of its
/// terms) and the fp64 level's rounding, so that the fp64 argmin is listed too where fp64
/// cannot tell exact near-ties apart: fp64_score_warp rounds each of its terms at most
/// d/32 + 8 times (a lane's fma chain, the 5-step tree, the difference), so two fp64 scores
/// are each within (d/32 + 8) 2^-53 of |x|^2 + |s|, which for d <= kMaxCandidateD (2^18,
/// certify_candidates.hpp: the cascade is not taken above it) is below 2^-38 |x|^2 +
/// 2^-20 |best| and, for the inner products, below 2^-20 e.
__device__ __forceinline__ float candidate_threshold(float best, float e, float xn) {
  const float e2 = 2.0f * e;
  return best + (e2 + 0x1p-20f * (fabsf(best) + e2) + 0x1p-38f * xn);
}

// ------------------------------------------------------------------------------------
// The cascade's candidate level (AssignParams::cand_pairs; certify_candidates.hpp): pieces
// every tensor-core kernel's candidate mode shares. Row f of a candidate launch is position
// f of its flagged list (row_map[f]: the data row level 1 flagged).
// ------------------------------------------------------------------------------------
/// Flagged row f's threshold, which level 1 left in dist[] (candidate_threshold).
__device__ __forceinline__ float cand_row_threshold(const AssignParams& p, std::int64_t f) {
  return p.dist[p.row_map[f]];
}

/// Slots in the pair list for a warp's hits: every lane of the warp calls it (converged)
/// with its count; returns the lane's first slot. One atomicAdd per warp (prefix sum over
/// the lanes), so the pairs' order in the list depends on the warps' timing: level 3 does
/// not depend on it.
__device__ __forceinline__ unsigned long long cand_reserve(const AssignParams& p, int cnt) {
  const int lane = threadIdx.x & 31;
  int incl = cnt;  // inclusive prefix sum over the warp
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const int v = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += v;
  }
  unsigned long long base = 0;
  if (lane == 31) base = atomicAdd(p.cand_count, static_cast<unsigned long long>(incl));
  base = __shfl_sync(0xffffffffu, base, 31);
  return base + static_cast<unsigned long long>(incl - cnt);
}

/// Lists pair (flagged row f, centroid j) at `slot` when the list has room; whether it had
/// (a pair past the capacity is dropped and its row must take the full re-check).
__device__ __forceinline__ bool cand_put(const AssignParams& p, unsigned long long slot, std::int64_t f, int j) {
  if (slot >= static_cast<unsigned long long>(p.cand_capacity)) return false;
  p.cand_pairs[slot] = CandidatePair{static_cast<std::int32_t>(f), j};
  return true;
}

/// The end of flagged row f's listing, once per row, from all of its lanes' and warps'
/// outcomes: `listed` (some pair of the row was listed), `lost` (some was dropped). A row
/// listed whole gets the fp64 level's running minima (cand_keys[f] = ~0, dist[row] =
/// INT_MAX as int bits); any other is marked for the full re-check (no pair listed cannot
/// happen, the best being <= the threshold; kept safe).
__device__ __forceinline__ void cand_finish_row(const AssignParams& p, std::int64_t f, bool listed, bool lost) {
  const std::int64_t grow = p.row_map[f];
  if (lost || !listed) {
    p.flagged[f] = grow | kCandidateMark;
  } else {
    p.cand_keys[f] = ~0ull;
    reinterpret_cast<int*>(p.dist)[grow] = 0x7fffffff;
  }
}

/// The data's row of a launch's row `grow` (the cascade's launches map their rows).
__device__ __forceinline__ std::int64_t data_row(const AssignParams& p, std::int64_t grow) {
  return p.row_map ? p.row_map[grow] : grow;
}
/// What finish_row reads of a row before it writes anything: its |x|^2 and its old label. A
/// kernel that finishes several rows loads all of them first: finish_row's stores may alias
/// the next row's loads for the compiler, so row after row each load waited for the
/// previous row's stores, and the distance's add waited on memory once per row (ncu, H200,
/// K=256: a fifth of the wgmma kernel's stall samples on those adds).
struct RowInputs {
  float xn;
  int old_label;
};
__device__ __forceinline__ RowInputs load_row_inputs(const AssignParams& p, std::int64_t grow) {
  const std::int64_t row = data_row(p, grow);
  return RowInputs{p.xnorm[row], p.labels[row]};
}

/// Certify and write one row's result (or flag it). Returns 1 when the label changed.
/// A flagged row's dist[] holds its candidate threshold until a later level writes it.
/// `grow` is the launch's row and `in` its load_row_inputs(); `w` is the row's tile
/// (problem_tiles.cuh): its problem and the start of its flagged region.
__device__ __forceinline__ int finish_row(const AssignParams& p, const TileWork& w, std::int64_t grow,
                                          const RowInputs& in, const Top2& t) {
  const int b = w.b;
  grow = data_row(p, grow);
  const float xn = in.xn;
  if (p.certify) {
    const float nx = sqrtf(xn);
    const float cm = p.cmax[b], dcm = p.dcmax[b];
    const float e = p.cert_a * nx * cm + p.cert_c * nx * dcm + p.cert_eta * (nx + cm + dcm) + p.cert_b * cm * cm;
    const float gap = t.second - t.best;
    // The subtraction itself rounds: allow 2^-22 of the operands' magnitude on top of 2E.
    if (!(gap > 2.0f * e + 0x1p-22f * (fabsf(t.best) + fabsf(t.second)))) {
      p.dist[grow] = candidate_threshold(t.best, e, xn);  // read by the candidate level, if any
      const unsigned long long slot = atomicAdd(&p.counters[0], 1ull);
      if (p.problem_stats) atomicAdd(&p.problem_stats[2 * std::int64_t(b)], 1ull);
      if (p.problem_counts) {
        const unsigned long long pslot = atomicAdd(&p.problem_counts[b], 1ull);
        p.flagged[w.row_begin + static_cast<std::int64_t>(pslot)] = grow;
      } else {
        p.flagged[slot] = grow;
      }
      return 0;
    }
  }
  p.labels[grow] = t.idx;
  p.dist[grow] = score_to_distance(p.metric, t.best, xn);
  return in.old_label != t.idx;
}
/// One row alone: its loads, then its finish.
__device__ __forceinline__ int finish_row(const AssignParams& p, const TileWork& w, std::int64_t grow, const Top2& t) {
  return finish_row(p, w, grow, load_row_inputs(p, grow), t);
}

}  // namespace flashkm::cuda::detail
