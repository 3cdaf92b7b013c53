// Batched fits: B independent k-means problems fitted together, each with its own rows,
// optional weights, its own K and optional initial centroids; everything else (metric,
// max_iter, tol, init, seed, precision, device) is shared through one Params.
//
// Results contract: problem b of a batch is the fit of that problem alone, with Params
// whose n_clusters is its K (same seed, same init). On the CPU this holds bitwise for every
// field but the per-iteration wall times; on CUDA bitwise where the batch and the alone fit
// use the same operand precision (always for explicit precision or fp16/bf16 input; for
// precision 'auto' on fp32 data the batch picks one operand from the whole batch's range,
// see docs/CUDA.md, "Batched and ragged fits"). Each problem stops on its own (labels
// unchanged or shift <= tol * its own mean feature variance) and drops out of the later
// passes; empty clusters are repaired per problem by the rule of fit().
//
// Determinism: as fit(): same input, parameters and backend -> bitwise the same results.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "flashkm/model.hpp"
#include "flashkm/params.hpp"
#include "flashkm/types.hpp"

namespace flashkm {

/// One problem of a batched fit. Pointers live where x lives (host, or the same GPU).
struct BatchedProblem {
  MatrixView x;                          ///< [n_b x D] rows of this problem (D equal for all problems)
  const float* sample_weight = nullptr;  ///< [n_b] non-negative, not all zero; null = all ones
  std::int64_t n_clusters = 0;           ///< K of this problem (1 <= K <= n_b); 0 = Params::n_clusters
  const float* init_centroids = nullptr; ///< [K x D] fp32 host array, required for InitMethod::given
  std::int32_t* labels = nullptr;        ///< [n_b] out: final labels (0..K-1), optional
};

/// B problems as row ranges of one matrix: problem b = rows [offsets[b], offsets[b+1]) of x.
/// On CUDA a device x is used in place (no copy of the rows).
struct RaggedBatch {
  MatrixView x;                              ///< [N x D] all rows, problems one after another
  std::span<const std::int64_t> offsets;     ///< [B + 1] ascending, offsets[0] = 0, offsets[B] = N
  /// [B] K per problem, or [1] one K for all, or empty: Params::n_clusters for all.
  std::span<const std::int64_t> n_clusters;
  const float* sample_weight = nullptr;      ///< [N] or null
  const float* init_centroids = nullptr;     ///< [sum of K x D] host, problem after problem (InitMethod::given)
  std::int32_t* labels = nullptr;            ///< [N] out: each row's label within its problem, optional
};

/// Fit every problem; returns one Model per problem, in order (centroids, cluster weights
/// = cluster sizes when unweighted, exact inertia, n_iter, converged, history).
/// Params::n_init must be 1, and checkpoints, resume and several device_ids are not
/// supported here (Error(invalid_argument)). Params::progress, when set, is called after
/// every iteration of every problem still running, with the problem's index as `run`.
/// Errors name the problem: "problem 3: n_samples=2 should be >= n_clusters=5",
/// "problem 7: input contains NaN or infinity: first at row 12, column 0" (rows within the problem).
/// @code
///   std::vector<flashkm::BatchedProblem> ps = {{flashkm::MatrixView::of(a, na, d), nullptr, 8},
///                                              {flashkm::MatrixView::of(b, nb, d), nullptr, 32}};
///   std::vector<flashkm::Model> models = flashkm::fit_batched(ps, params);
/// @endcode
std::vector<Model> fit_batched(std::span<const BatchedProblem> problems, const Params& params);

/// The same over row ranges of one matrix (see RaggedBatch).
std::vector<Model> fit_batched(const RaggedBatch& batch, const Params& params);

}  // namespace flashkm
