// The parts of fit() shared by the plain and the distributed fit: input checks, the given
// initial centroids, and everything after the backend has attached X (runs, labels, Model).
#pragma once

#include <cstdint>
#include <vector>

#include "core/backend.hpp"
#include "core/checkpoint.hpp"
#include "core/lloyd.hpp"
#include "flashkm/kmeans.hpp"

namespace flashkm::core {

/// Shape, dtype and pointer checks of a data matrix; `what` names it in messages.
void check_matrix(const MatrixView& x, const char* what);

/// The caller's initial centroids [K x D] for InitMethod::given: checked finite and, for
/// cosine, normalised. Empty for the other init methods.
std::vector<float> given_centroids(const Params& params, const FitArgs& args, std::int64_t d);

/// scikit-learn's absolute tol: tol times the mean per-feature variance of the rows (0 when tol is 0).
double tol_abs(const Params& params, const FeatureMoments& moments);

/// The seed of run `run` of a fit (n_init): splitmix64 of the fit's seed and the run.
std::uint64_t run_seed(std::uint64_t seed, int run);

/// The Model of a finished Lloyd run of k clusters over d features (moves the run's arrays).
Model model_of(LloydResult&& run, std::int64_t k, std::int64_t d, const Params& params);

/// The fit over a backend that has attached X (backend.rows() rows in all): tol scale,
/// the n_init runs (the lowest inertia wins), the labels into args.labels (what
/// backend.copy_labels writes: a distributed backend writes its own shard's rows), the Model.
/// With a checkpoint, the fit resumes from it (when asked) and saves to it after iterations.
Model fit_attached(Backend& backend, const Params& params, const FitArgs& args, const std::vector<float>& given,
                   const Checkpoint* checkpoint = nullptr);

}  // namespace flashkm::core
