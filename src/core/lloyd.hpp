// The Lloyd driver, written once for every backend.
#pragma once

#include <cstdint>
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

/// Lloyd iterations from `centroids` until labels stop changing, the centroid shift is at
/// most tol_abs, or max_iter. Empty clusters are re-seeded from the rows farthest from their
/// centroids. The backend keeps the final labels. `run` is passed to the progress callback.
LloydResult lloyd(Backend& backend, std::vector<float> centroids, std::int64_t k, const Params& params,
                  double tol_abs, int run);

/// New centroids from per-cluster sums and weights (metric-aware): mean for l2 and
/// inner_product, unit-normalised sum for cosine. Clusters of zero weight are left as they are.
/// centroids [k x d] is updated in place (k = weight.size()).
void centroids_from_sums(const std::vector<double>& sums, const std::vector<double>& weight, std::int64_t d,
                         Metric metric, float* centroids);

}  // namespace flashkm::core
