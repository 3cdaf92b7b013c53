// The CPU kernel table: one entry per SIMD level, chosen once at run time (dispatch.cpp).
// Kernels work on a block of fp32 rows (ldx floats apart) against centroids packed in
// panels of nr (packed_centroids.hpp); they repack the rows into their own tile layout
// in the workspace. Scores are s_ij = bias_j + alpha * (x_i . c_j); the argmin of
// s over j is the nearest centroid for every metric (see cpu_backend.cpp).
#pragma once

#include <cstdint>

namespace flashkm::cpu {

/// Centroids as the kernels read them: panels[p] is [d][nr] (centroid p*nr + lane at
/// column lane), bias[k_padded]; padding centroids have bias = +inf so they never win.
struct PanelView {
  const float* panels = nullptr;  ///< [k_padded / nr][d][nr]
  const float* bias = nullptr;    ///< [k_padded]
  std::int64_t k = 0;             ///< real centroids
  std::int64_t k_padded = 0;      ///< multiple of nr
  std::int64_t d = 0;
  float alpha = -2.0f;
};

/// Candidates per trial_scores call (fixed on every ISA: see TrialScores).
inline constexpr int kTrialLanes = 8;

struct KernelTable {
  const char* name;  ///< "avx512", "avx2", "generic"
  int mr;            ///< rows per register tile
  int nr;            ///< centroids per panel
  /// For rows [0, rows) of x (ldx floats apart): index of the lowest score (ties: lowest
  /// index), lowest and second-lowest score. workspace: workspace_floats(rows, d) floats.
  void (*argmin2)(const float* x, std::int64_t rows, std::int64_t ldx, const PanelView& c, float* workspace,
                  std::int32_t* best_index, float* best_score, float* second_score);
  /// Scores of rows [0, rows) against centroids of panels [p0, p1): out[i*ldo + (j - p0*nr)].
  /// Columns past c.k are not written. workspace: workspace_floats(rows, d) floats.
  void (*scores)(const float* x, std::int64_t rows, std::int64_t ldx, const PanelView& c, std::int64_t p0,
                 std::int64_t p1, float* out, std::int64_t ldo, float* workspace);
  /// Floats of workspace argmin2 or scores need for a block of `rows` rows of d columns.
  std::int64_t (*workspace_floats)(std::int64_t rows, std::int64_t d);
  /// k-means++ trial: scores of rows [0, rows) (in place, ldx apart) against kTrialLanes
  /// candidates cand [8][d] with their bias[8]: out[i*ldo + j] = bias[j] + alpha * x_i.c_j.
  void (*trial_scores)(const float* x, std::int64_t rows, std::int64_t ldx, const float* cand, std::int64_t d,
                       const float* bias, float alpha, float* out, std::int64_t ldo);
  /// argmin2 of the rows x + row_index[r] * ldx, r in [0, rows): a gathered block without
  /// the copy (the packing reads the rows where they are).
  void (*argmin2_rows)(const float* x, const std::int64_t* row_index, std::int64_t rows, std::int64_t ldx,
                       const PanelView& c, float* workspace, std::int32_t* best_index, float* best_score,
                       float* second_score);
  /// k-means++ sketch: for rows of unsigned codes a [rows][d32] and kTrialLanes candidates of
  /// signed codes b [8][d32], out[r] = a lower bound of min_j |q_r - p_j|^2 (see
  /// TrialSketchLower: offset, sc, pp per candidate, sx, qq per row).
  void (*trial_sketch_lower)(const std::uint8_t* a, std::int64_t rows, std::int64_t d32, const std::int8_t* b,
                             const std::int32_t* offset, const float* sc, const float* pp, const float* sx,
                             const float* qq, float* out);
};

const KernelTable& kernels_avx512();
const KernelTable& kernels_avx2();
const KernelTable& kernels_generic();

/// The best table this CPU runs (cpuid), unless FLASHKM_SIMD=avx512|avx2|generic asks for a
/// lower one (for tests and benchmarks); asking for a level the CPU lacks is an error.
const KernelTable& select_kernels();
bool cpu_has_avx512();
bool cpu_has_avx2();

}  // namespace flashkm::cpu
