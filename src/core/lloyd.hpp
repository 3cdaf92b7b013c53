// The Lloyd driver, written once for every backend.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "core/backend.hpp"
#include "flashkm/params.hpp"

namespace flashkm::core {

struct LloydResult {
  std::vector<float> centroids;       ///< [K x D]
  std::vector<double> cluster_weight; ///< [K] of the final labels
  double inertia = 0;                 ///< exact, final labels against final centroids
  int n_iter = 0;
  bool converged = false;
  std::vector<IterationInfo> history;
};

/// A run resumed from a checkpoint: `iteration` iterations were completed, the last one
/// started from `previous` [K x D] (the centroids passed to lloyd() are those it produced).
struct LloydResume {
  int iteration = 0;
  std::vector<float> previous;
  std::vector<IterationInfo> history;  ///< [iteration] records of the run so far
};

/// Called after each completed iteration (before the progress callback): the run, the
/// centroids the iteration started from and those it produced, the history so far.
using IterationHook = std::function<void(int run, const std::vector<float>& before, const std::vector<float>& after,
                                         const std::vector<IterationInfo>& history)>;

/// Lloyd iterations from `centroids` until labels stop changing, the centroid shift is at
/// most tol_abs, or max_iter. Empty clusters are re-seeded from the rows farthest from their
/// centroids. The backend keeps the final labels. `run` is passed to the progress callback.
/// With `resume`, the run continues after its iteration `resume->iteration` and returns what
/// the uninterrupted run would have returned (see docs/ARCHITECTURE.md, "Checkpoints").
LloydResult lloyd(Backend& backend, std::vector<float> centroids, std::int64_t k, const Params& params,
                  double tol_abs, int run, const LloydResume* resume = nullptr, const IterationHook& hook = {});

/// scikit-learn's two stopping rules, in its order, after iteration `it` (1-based): labels
/// unchanged (strict; from iteration 2 on), then shift <= tol_abs. Sets *labels_stable.
/// Shared by lloyd() and the batched driver (core/batched_lloyd.cpp).
bool lloyd_stops(int it, std::int64_t n_changed, double shift, double tol_abs, bool* labels_stable);

/// The record of one completed iteration, as lloyd() keeps it: the first iteration counts
/// all `rows` as changed (the backend may still hold the labels of an earlier run).
IterationInfo iteration_record(int it, const AssignStats& st, double shift, std::int64_t rows, double ms);

/// New centroids from per-cluster sums and weights (metric-aware): mean for l2 and
/// inner_product, unit-normalised sum for cosine. Clusters of zero weight are left as they are.
/// centroids [k x d] is updated in place (k = weight.size()).
void centroids_from_sums(const std::vector<double>& sums, const std::vector<double>& weight, std::int64_t d,
                         Metric metric, float* centroids);

}  // namespace flashkm::core
