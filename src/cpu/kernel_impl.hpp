// The fused assign micro-kernel, written once for every SIMD width. Included only by the
// per-ISA translation units; everything here is instantiated with that TU's -m flags.
//
// Shape of the computation (BLIS-like, DESIGN.md §3 "CPU micro-kernel"):
//   pack the block of rows into MR-row tiles [d][MR]  (block stays in L2)
//   for each panel of NR = NV*W centroids            (panel [d][NR] stays in L1)
//     for each tile of MR rows of the packed block
//       acc[MR][NV] = x_tile . panel                  (MR*NV vector FMAs per d step)
//       epilogue: s = bias + alpha*acc, folded into a per-row, per-lane running
//                 (best, index, second) kept in a small L1-resident workspace
// and once per block a horizontal reduction over the W lanes. Scores never leave the
// core as an N x K matrix. Every dot product is a single FMA chain over d in order, so a
// row's scores are bitwise identical for every W (AVX2 and AVX-512 agree) and thread count.
#pragma once

#include <cstdint>
#include <limits>

#include "cpu/kernels.hpp"
#include "cpu/simd.hpp"

namespace flashkm::cpu::FLASHKM_ISA {

#define FLASHKM_UNROLL _Pragma("GCC unroll 32")

template <int W, int MR, int NV>
struct AssignKernel {
  using S = Simd<W>;
  using F = typename S::F;
  using I = typename S::I;
  static constexpr int NR = NV * W;

  static std::int64_t padded(std::int64_t rows) { return (rows + MR - 1) / MR * MR; }

  /// Copy rows [0, rows) of x into MR-row tiles laid out [tile][d][MR] (rows past the end
  /// are zero), so that the micro-kernel's MR broadcasts per d step come from one pointer
  /// and consecutive addresses: with row pointers instead, MR = 8-12 rows exhaust the
  /// general registers and the compiler spills accumulators (seen in the disassembly).
  static void pack_a(const float* x, std::int64_t rows, std::int64_t ldx, std::int64_t d, float* out) {
    for (std::int64_t r0 = 0; r0 < padded(rows); r0 += MR) {
      float* tile = out + r0 * d;
      for (int r = 0; r < MR; ++r) {
        if (r0 + r < rows) {
          const float* src = x + (r0 + r) * ldx;
          for (std::int64_t k = 0; k < d; ++k) tile[k * MR + r] = src[k];
        } else {
          for (std::int64_t k = 0; k < d; ++k) tile[k * MR + r] = 0.0f;
        }
      }
    }
  }

  /// acc = a_tile[0:d][0:MR]^T . panel[0:d][0:NR]
  static inline __attribute__((always_inline)) void tile(const float* __restrict a, const float* __restrict panel,
                                                         std::int64_t d, F (&acc)[MR][NV]) {
    FLASHKM_UNROLL for (int r = 0; r < MR; ++r) FLASHKM_UNROLL for (int v = 0; v < NV; ++v) acc[r][v] = F{};
    for (std::int64_t k = 0; k < d; ++k) {
      F b[NV];
      FLASHKM_UNROLL for (int v = 0; v < NV; ++v) b[v] = S::load(panel + k * NR + v * W);
      FLASHKM_UNROLL for (int r = 0; r < MR; ++r) {
        const F a_r = S::splat(a[k * MR + r]);
        FLASHKM_UNROLL for (int v = 0; v < NV; ++v) acc[r][v] += a_r * b[v];
      }
    }
  }

  /// Packed rows, then (argmin2 only) the per-lane running state.
  static std::int64_t workspace_floats(std::int64_t rows, std::int64_t d) { return padded(rows) * (d + W * 3); }

  static void argmin2(const float* x, std::int64_t rows, std::int64_t ldx, const PanelView& c, float* ws,
                      std::int32_t* best_index, float* best_score, float* second_score) {
    const std::int64_t rows_padded = padded(rows);
    float* a = ws;  // [rows_padded / MR][d][MR]
    pack_a(x, rows, ldx, c.d, a);
    ws += rows_padded * c.d;
    // Per-row, per-lane running state: best score, its centroid index, second score.
    float* lane_best = ws;                                                  // [rows_padded][W]
    float* lane_second = ws + rows_padded * W;                              // [rows_padded][W]
    auto* lane_index = reinterpret_cast<std::int32_t*>(ws + 2 * rows_padded * W);  // [rows_padded][W]
    const F inf = S::splat(std::numeric_limits<float>::infinity());
    for (std::int64_t r = 0; r < rows_padded; ++r) {
      S::store(lane_best + r * W, inf);
      S::store(lane_second + r * W, inf);
      S::store(lane_index + r * W, S::splat(std::int32_t{0}));
    }
    const F alpha = S::splat(c.alpha);
    const I iota = S::iota();
    const std::int64_t n_panels = c.k_padded / NR;
    for (std::int64_t p = 0; p < n_panels; ++p) {
      const float* panel = c.panels + p * c.d * NR;
      F bias[NV];
      FLASHKM_UNROLL for (int v = 0; v < NV; ++v) bias[v] = S::load(c.bias + p * NR + v * W);
      const I index0 = iota + static_cast<std::int32_t>(p * NR);
      for (std::int64_t r0 = 0; r0 < rows_padded; r0 += MR) {
        F acc[MR][NV];
        tile(a + r0 * c.d, panel, c.d, acc);
        // ---- epilogue: fold the tile into each row's running top-2 ----
        FLASHKM_UNROLL for (int r = 0; r < MR; ++r) {
          // fold this row's NV vectors: lane-wise best / worse-of-the-rest / index
          F pair_best = bias[0] + alpha * acc[r][0];
          F pair_worse = inf;
          I pair_index = index0;
          FLASHKM_UNROLL for (int v = 1; v < NV; ++v) {
            const F sv = bias[v] + alpha * acc[r][v];
            const I sv_wins = sv < pair_best;  // strict: equal scores keep the lower index
            const F loser = sv_wins ? pair_best : sv;
            pair_worse = loser < pair_worse ? loser : pair_worse;
            pair_best = sv_wins ? sv : pair_best;
            pair_index = sv_wins ? index0 + v * W : pair_index;
          }
          float* bp = lane_best + (r0 + r) * W;
          float* sp = lane_second + (r0 + r) * W;
          std::int32_t* ip = lane_index + (r0 + r) * W;
          const F best = S::load(bp);
          const F second = S::load(sp);
          const I index = S::load(ip);
          const I wins = pair_best < best;  // earlier panels hold lower indices: strict
          const F loser = wins ? best : pair_best;
          F new_second = second < pair_worse ? second : pair_worse;
          new_second = new_second < loser ? new_second : loser;
          S::store(bp, wins ? pair_best : best);
          S::store(ip, wins ? pair_index : index);
          S::store(sp, new_second);
        }
      }
    }
    // ---- horizontal reduction over lanes, once per row ----
    for (std::int64_t r = 0; r < rows; ++r) {
      const float* bp = lane_best + r * W;
      const float* sp = lane_second + r * W;
      const std::int32_t* ip = lane_index + r * W;
      int win = 0;
      for (int l = 1; l < W; ++l)
        if (bp[l] < bp[win] || (bp[l] == bp[win] && ip[l] < ip[win])) win = l;
      float second = std::numeric_limits<float>::infinity();
      for (int l = 0; l < W; ++l) {
        if (sp[l] < second) second = sp[l];
        if (l != win && bp[l] < second) second = bp[l];
      }
      best_index[r] = ip[win];
      best_score[r] = bp[win];
      second_score[r] = second;
    }
  }

  static void scores(const float* x, std::int64_t rows, std::int64_t ldx, const PanelView& c, std::int64_t p0,
                     std::int64_t p1, float* out, std::int64_t ldo, float* ws) {
    const std::int64_t rows_padded = padded(rows);
    float* a = ws;
    pack_a(x, rows, ldx, c.d, a);
    const F alpha = S::splat(c.alpha);
    for (std::int64_t p = p0; p < p1; ++p) {
      const float* panel = c.panels + p * c.d * NR;
      const std::int64_t col0 = (p - p0) * NR;
      const std::int64_t valid = c.k - p * NR < NR ? c.k - p * NR : NR;
      for (std::int64_t r0 = 0; r0 < rows_padded; r0 += MR) {
        F acc[MR][NV];
        tile(a + r0 * c.d, panel, c.d, acc);
        FLASHKM_UNROLL for (int r = 0; r < MR; ++r) {
          if (r0 + r >= rows) break;
          float tmp[NR];
          FLASHKM_UNROLL for (int v = 0; v < NV; ++v)
            S::store(tmp + v * W, S::load(c.bias + p * NR + v * W) + alpha * acc[r][v]);
          float* o = out + (r0 + r) * ldo + col0;
          for (std::int64_t j = 0; j < valid; ++j) o[j] = tmp[j];
        }
      }
    }
  }

  /// The table of this level: this kernel plus NarrowScores<W, MR_NARROW>.
  template <int MR_NARROW>
  static KernelTable table(const char* name);
};

/// Scores against one panel of W centroids (a k-means++ step's few candidates), reading
/// rows in place: this pass is memory-bound (one read of X per step), so packing the rows
/// first would only add a copy. MR row pointers stay within the general registers.
template <int W, int MR>
struct NarrowScores {
  using S = Simd<W>;
  using F = typename S::F;

  static std::int64_t workspace_floats(std::int64_t, std::int64_t) { return 0; }

  static void scores(const float* x, std::int64_t rows, std::int64_t ldx, const PanelView& c, std::int64_t p0,
                     std::int64_t p1, float* out, std::int64_t ldo, float*) {
    const F alpha = S::splat(c.alpha);
    for (std::int64_t p = p0; p < p1; ++p) {
      const float* panel = c.panels + p * c.d * W;
      const F bias = S::load(c.bias + p * W);
      const std::int64_t col0 = (p - p0) * W;
      const std::int64_t valid = c.k - p * W < W ? c.k - p * W : W;
      for (std::int64_t r0 = 0; r0 < rows; r0 += MR) {
        const float* xr[MR];
        // rows past the end re-read row r0 (valid memory); their results are dropped
        FLASHKM_UNROLL for (int r = 0; r < MR; ++r) xr[r] = x + (r0 + r < rows ? r0 + r : r0) * ldx;
        F acc[MR];
        FLASHKM_UNROLL for (int r = 0; r < MR; ++r) acc[r] = F{};
        for (std::int64_t k = 0; k < c.d; ++k) {
          const F b = S::load(panel + k * W);
          FLASHKM_UNROLL for (int r = 0; r < MR; ++r) acc[r] += S::splat(xr[r][k]) * b;
        }
        FLASHKM_UNROLL for (int r = 0; r < MR; ++r) {
          if (r0 + r >= rows) break;
          float tmp[W];
          S::store(tmp, bias + alpha * acc[r]);
          float* o = out + (r0 + r) * ldo + col0;
          for (std::int64_t j = 0; j < valid; ++j) o[j] = tmp[j];
        }
      }
    }
  }
};

template <int W, int MR, int NV>
template <int MR_NARROW>
KernelTable AssignKernel<W, MR, NV>::table(const char* name) {
  using Narrow = NarrowScores<W, MR_NARROW>;
  return KernelTable{name, MR, NR, &argmin2, &scores, &workspace_floats, MR_NARROW, W, &Narrow::scores,
                     &Narrow::workspace_floats};
}

#undef FLASHKM_UNROLL

}  // namespace flashkm::cpu::FLASHKM_ISA
