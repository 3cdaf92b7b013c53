// The fused assign micro-kernel, written once for every SIMD width. Included only by the
// per-ISA translation units; everything here is instantiated with that TU's -m flags.
//
// Shape of the computation (BLIS-like, DESIGN.md §3 "CPU micro-kernel"):
//   for each panel of NR = NV*W centroids            (panel [d][NR] stays in L1)
//     for each tile of MR rows of the packed block   (block [rows][d] stays in L2)
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
  static_assert(NV == 1 || NV == 2, "the epilogue folds one or two vectors per row");

  /// acc = x[0:MR, 0:d] . panel[0:d, 0:NR]
  static inline __attribute__((always_inline)) void tile(const float* __restrict x, std::int64_t ldx,
                                                         const float* __restrict panel, std::int64_t d,
                                                         F (&acc)[MR][NV]) {
    FLASHKM_UNROLL for (int r = 0; r < MR; ++r) FLASHKM_UNROLL for (int v = 0; v < NV; ++v) acc[r][v] = F{};
    for (std::int64_t k = 0; k < d; ++k) {
      F b[NV];
      FLASHKM_UNROLL for (int v = 0; v < NV; ++v) b[v] = S::load(panel + k * NR + v * W);
      FLASHKM_UNROLL for (int r = 0; r < MR; ++r) {
        const F a = S::splat(x[r * ldx + k]);
        FLASHKM_UNROLL for (int v = 0; v < NV; ++v) acc[r][v] += a * b[v];
      }
    }
  }

  static std::int64_t workspace_floats(std::int64_t rows) {
    const std::int64_t rows_padded = (rows + MR - 1) / MR * MR;
    return rows_padded * W * 3;
  }

  static void argmin2(const float* x, std::int64_t rows, std::int64_t ldx, const PanelView& c, float* ws,
                      std::int32_t* best_index, float* best_score, float* second_score) {
    const std::int64_t rows_padded = (rows + MR - 1) / MR * MR;
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
        tile(x + r0 * ldx, ldx, panel, c.d, acc);
        // ---- epilogue: fold the tile into each row's running top-2 ----
        FLASHKM_UNROLL for (int r = 0; r < MR; ++r) {
          F pair_best = bias[0] + alpha * acc[r][0];
          F pair_worse = inf;
          I pair_index = index0;
          if constexpr (NV == 2) {
            const F s1 = bias[1] + alpha * acc[r][1];
            const I s1_wins = s1 < pair_best;  // strict: equal scores keep the lower index
            pair_worse = s1_wins ? pair_best : s1;
            pair_best = s1_wins ? s1 : pair_best;
            pair_index = s1_wins ? index0 + W : index0;
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
                     std::int64_t p1, float* out, std::int64_t ldo) {
    const std::int64_t rows_padded = (rows + MR - 1) / MR * MR;
    const F alpha = S::splat(c.alpha);
    for (std::int64_t p = p0; p < p1; ++p) {
      const float* panel = c.panels + p * c.d * NR;
      const std::int64_t col0 = (p - p0) * NR;
      const std::int64_t valid = c.k - p * NR < NR ? c.k - p * NR : NR;
      for (std::int64_t r0 = 0; r0 < rows_padded; r0 += MR) {
        F acc[MR][NV];
        tile(x + r0 * ldx, ldx, panel, c.d, acc);
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

  static KernelTable table(const char* name) {
    return KernelTable{name, MR, NR, &argmin2, &scores, &workspace_floats};
  }
};

#undef FLASHKM_UNROLL

}  // namespace flashkm::cpu::FLASHKM_ISA
