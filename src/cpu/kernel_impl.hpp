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

#include <cmath>
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
  /// With row_index, row r of the block is x + row_index[r] * ldx (a gather for free).
  static void pack_a(const float* x, std::int64_t rows, std::int64_t ldx, std::int64_t d, float* out,
                     const std::int64_t* row_index = nullptr) {
    for (std::int64_t r0 = 0; r0 < padded(rows); r0 += MR) {
      float* tile = out + r0 * d;
      for (int r = 0; r < MR; ++r) {
        if (r0 + r < rows) {
          const float* src = x + (row_index ? row_index[r0 + r] : r0 + r) * ldx;
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
    argmin2_rows(x, nullptr, rows, ldx, c, ws, best_index, best_score, second_score);
  }

  static void argmin2_rows(const float* x, const std::int64_t* row_index, std::int64_t rows, std::int64_t ldx,
                           const PanelView& c, float* ws, std::int32_t* best_index, float* best_score,
                           float* second_score) {
    const std::int64_t rows_padded = padded(rows);
    float* a = ws;  // [rows_padded / MR][d][MR]
    pack_a(x, rows, ldx, c.d, a, row_index);
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
    // One (panel, tile) step: MR rows against NR centroids, folded into the lane state.
    auto step = [&](std::int64_t p, std::int64_t r0) __attribute__((always_inline)) {
      const float* panel = c.panels + p * c.d * NR;
      F bias[NV];
      FLASHKM_UNROLL for (int v = 0; v < NV; ++v) bias[v] = S::load(c.bias + p * NR + v * W);
      const I index0 = iota + static_cast<std::int32_t>(p * NR);
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
    };
    // Panel-outer: a panel (d x NR floats) stays in L1 while the tiles of the block stream
    // from L2. (A tile-outer order for panels larger than L1, i.e. large d, measured the
    // same on d = 768, K = 256: 148 vs 149 GFLOP/s, so it is not kept.)
    for (std::int64_t p = 0; p < n_panels; ++p)
      for (std::int64_t r0 = 0; r0 < rows_padded; r0 += MR) step(p, r0);
    // ---- horizontal reduction over lanes, once per row ----
    for (std::int64_t r = 0; r < rows; ++r) {
      const float* bp = lane_best + r * W;
      const float* sp = lane_second + r * W;
      const std::int32_t* ip = lane_index + r * W;
      // Selects instead of branches: the comparisons depend on the data, and at small d
      // (d = 32, K = 64) the mispredicted branches of this loop took ~30 % of argmin2.
      int win = 0;
      float win_score = bp[0];
      std::int32_t win_index = ip[0];
      FLASHKM_UNROLL for (int l = 1; l < W; ++l) {
        const bool better = (bp[l] < win_score) | ((bp[l] == win_score) & (ip[l] < win_index));
        win = better ? l : win;
        win_score = better ? bp[l] : win_score;
        win_index = better ? ip[l] : win_index;
      }
      float second = std::numeric_limits<float>::infinity();
      FLASHKM_UNROLL for (int l = 0; l < W; ++l) {
        second = sp[l] < second ? sp[l] : second;
        const float other = l == win ? std::numeric_limits<float>::infinity() : bp[l];  // inf: never taken
        second = other < second ? other : second;
      }
      best_index[r] = win_index;
      best_score[r] = win_score;
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

  /// The table of this level: this kernel plus TrialScores.
  static KernelTable table(const char* name);
};

/// A k-means++ step's trial: rows (read in place) against kTrialLanes candidates [8][d]
/// (zero rows pad fewer) in dot-product form: one row vector load feeds 8 FMAs whose other
/// operand comes from L1, and no broadcasts (on AVX2 Zen a broadcast costs an FP pipe slot
/// and this pass is one broadcast per FMA in the outer-product form). Every dot product has
/// 8 fixed partial chains, a fixed reduction tree and the tail in d order, on every ISA,
/// so AVX2 and AVX-512 agree bitwise.
struct TrialScores {
  using S = Simd<kTrialLanes>;
  using F = typename S::F;
  using I = typename S::I;

  /// Lane j of the result = sum of acc[perm[j]], perm = {0, 4, 2, 6, 1, 5, 3, 7}.
  static inline __attribute__((always_inline)) F reduce8(const F (&a)[8]) {
    const I lo1 = {0, 1, 2, 3, 8, 9, 10, 11}, hi1 = {4, 5, 6, 7, 12, 13, 14, 15};
    const I lo2 = {0, 1, 8, 9, 4, 5, 12, 13}, hi2 = {2, 3, 10, 11, 6, 7, 14, 15};
    const I lo3 = {0, 8, 2, 10, 4, 12, 6, 14}, hi3 = {1, 9, 3, 11, 5, 13, 7, 15};
    F s[4];
    FLASHKM_UNROLL for (int q = 0; q < 4; ++q)
      s[q] = __builtin_shuffle(a[2 * q], a[2 * q + 1], lo1) + __builtin_shuffle(a[2 * q], a[2 * q + 1], hi1);
    const F t0 = __builtin_shuffle(s[0], s[1], lo2) + __builtin_shuffle(s[0], s[1], hi2);
    const F t1 = __builtin_shuffle(s[2], s[3], lo2) + __builtin_shuffle(s[2], s[3], hi2);
    return __builtin_shuffle(t0, t1, lo3) + __builtin_shuffle(t0, t1, hi3);
  }

  static void scores(const float* x, std::int64_t rows, std::int64_t ldx, const float* cand, std::int64_t d,
                     const float* bias, float alpha, float* out, std::int64_t ldo) {
    constexpr int lane_of[8] = {0, 4, 2, 6, 1, 5, 3, 7};  // candidate j sits in lane lane_of[j]
    const std::int64_t d8 = d / 8 * 8;
    for (std::int64_t r = 0; r < rows; ++r) {
      const float* xr = x + r * ldx;
      F acc[8];
      FLASHKM_UNROLL for (int j = 0; j < 8; ++j) acc[j] = F{};
      for (std::int64_t k = 0; k < d8; k += 8) {
        const F xv = S::load(xr + k);
        FLASHKM_UNROLL for (int j = 0; j < 8; ++j) acc[j] += xv * S::load(cand + j * d + k);
      }
      float sums[8];
      S::store(sums, reduce8(acc));
      float* o = out + r * ldo;
      for (int j = 0; j < 8; ++j) {
        // explicit fmaf: left to contraction, the compiler of one ISA vectorised this tail
        // over j with separate multiplies and adds, and AVX2 and AVX-512 differed in the
        // last bit (seen on the H200 host)
        float sj = sums[lane_of[j]];
        for (std::int64_t k = d8; k < d; ++k) sj = __builtin_fmaf(xr[k], cand[j * d + k], sj);
        o[j] = __builtin_fmaf(alpha, sj, bias[j]);
      }
    }
  }
};

/// The k-means++ sketch's lower bounds (cpu_backend.cpp, KppSketch): rows of unsigned codes
/// a [rows][d32] (a = k + 64, k in [-63, 63]) against kTrialLanes candidates of signed codes
/// b [8][d32] (|b| <= 127), d32 a multiple of 32. The integer dot k . b is exact (a
/// vpmaddubsw pair sum is <= 2 * 127 * 127 = 32258: no saturation; int32 sums while d32 <
/// 133k): k . b_j = a . b_j - offset_j, offset_j = 64 sum_t b_j[t]. With the sketch rows
/// q = sx k (|q|^2 = qq) and p_j = sc_j b_j (|p_j|^2 = pp_j):
///   |q - p_j|^2 = qq - 2 sx sc_j (k . b_j) + pp_j,
/// formed in fp32 and lowered by 2^-20 (qq + |cross| + pp_j), more than the ~10 fp32
/// roundings of the terms (2^-24 each; k . b_j converts exactly below 2^24 and with one
/// rounding above), and by 2^-100 for what underflow can lose (<= 2^-149 an operation). out[r] = min over the used lanes (pp_j = +inf marks unused ones) of that
/// lower bound of |q_r - p_j|^2. Four times the products of an fp32 FMA per instruction.
struct TrialSketchLower {
  static void lower(const std::uint8_t* a, std::int64_t rows, std::int64_t d32, const std::int8_t* b,
                    const std::int32_t* offset, const float* sc, const float* pp, const float* sx, const float* qq,
                    float* out) {
#if defined(__AVX2__)
    const __m256i ones = _mm256_set1_epi16(1);
    const __m256i off = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(offset));
    const __m256 scv = _mm256_loadu_ps(sc), ppv = _mm256_loadu_ps(pp);
    const __m256 two = _mm256_set1_ps(2.0f), eps = _mm256_set1_ps(0x1p-20f), tiny = _mm256_set1_ps(0x1p-100f);
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256 inf = _mm256_set1_ps(std::numeric_limits<float>::infinity());
    const __m256 unused = _mm256_cmp_ps(ppv, inf, _CMP_EQ_OQ);
    for (std::int64_t r = 0; r < rows; ++r) {
      const std::uint8_t* ar = a + r * d32;
      __m256i acc[8];
      FLASHKM_UNROLL for (int j = 0; j < 8; ++j) acc[j] = _mm256_setzero_si256();
      for (std::int64_t k = 0; k < d32; k += 32) {
        const __m256i av = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ar + k));
        FLASHKM_UNROLL for (int j = 0; j < 8; ++j) {
          const __m256i bv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + j * d32 + k));
          acc[j] = _mm256_add_epi32(acc[j], _mm256_madd_epi16(_mm256_maddubs_epi16(av, bv), ones));
        }
      }
      // 8 vectors -> their 8 sums, lane j = candidate j
      const __m256i s01 = _mm256_hadd_epi32(acc[0], acc[1]), s23 = _mm256_hadd_epi32(acc[2], acc[3]);
      const __m256i s45 = _mm256_hadd_epi32(acc[4], acc[5]), s67 = _mm256_hadd_epi32(acc[6], acc[7]);
      const __m256i s0123 = _mm256_hadd_epi32(s01, s23), s4567 = _mm256_hadd_epi32(s45, s67);
      const __m256i dot = _mm256_add_epi32(_mm256_permute2x128_si256(s0123, s4567, 0x20),
                                           _mm256_permute2x128_si256(s0123, s4567, 0x31));
      const __m256 kb = _mm256_cvtepi32_ps(_mm256_sub_epi32(dot, off));
      const __m256 q2 = _mm256_set1_ps(qq[r]);
      const __m256 cross = _mm256_mul_ps(_mm256_mul_ps(two, _mm256_set1_ps(sx[r])), _mm256_mul_ps(scv, kb));
      const __m256 mag = _mm256_add_ps(_mm256_add_ps(q2, _mm256_and_ps(cross, abs_mask)), ppv);
      const __m256 margin = _mm256_add_ps(_mm256_mul_ps(eps, mag), tiny);
      const __m256 lo = _mm256_blendv_ps(  // unused lanes (pp = inf, lo NaN there): +inf
          _mm256_sub_ps(_mm256_sub_ps(_mm256_add_ps(q2, ppv), cross), margin), inf, unused);
      // horizontal min (no NaN left: finite codes and scales)
      __m128 m4 = _mm_min_ps(_mm256_castps256_ps128(lo), _mm256_extractf128_ps(lo, 1));
      m4 = _mm_min_ps(m4, _mm_movehl_ps(m4, m4));
      m4 = _mm_min_ss(m4, _mm_shuffle_ps(m4, m4, 1));
      out[r] = _mm_cvtss_f32(m4);
    }
#else
    for (std::int64_t r = 0; r < rows; ++r) {
      float best = std::numeric_limits<float>::infinity();
      for (int j = 0; j < 8; ++j) {
        if (std::isinf(pp[j])) continue;  // unused lane
        std::int32_t acc = 0;
        for (std::int64_t k = 0; k < d32; ++k) acc += std::int32_t{a[r * d32 + k]} * std::int32_t{b[j * d32 + k]};
        const float kb = static_cast<float>(acc - offset[j]);
        const float cross = (2.0f * sx[r]) * (sc[j] * kb);
        const float mag = (qq[r] + std::fabs(cross)) + pp[j];
        best = std::min(best, ((qq[r] + pp[j]) - cross) - (0x1p-20f * mag + 0x1p-100f));
      }
      out[r] = best;
    }
#endif
  }
};

template <int W, int MR, int NV>
KernelTable AssignKernel<W, MR, NV>::table(const char* name) {
  return KernelTable{name, MR, NR, &argmin2, &scores, &workspace_floats, &TrialScores::scores, &argmin2_rows, &TrialSketchLower::lower};
}

#undef FLASHKM_UNROLL

}  // namespace flashkm::cpu::FLASHKM_ISA
