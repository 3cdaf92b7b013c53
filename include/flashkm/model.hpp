// A fitted k-means model: centroids plus how they were obtained. Saved in the format of
// docs/FORMAT.md (versioned, checksummed, written atomically).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "flashkm/params.hpp"
#include "flashkm/types.hpp"

namespace flashkm {

struct Model {
  std::int64_t n_clusters = 0;          ///< K
  std::int64_t n_features = 0;          ///< D
  Metric metric = Metric::l2;
  std::vector<float> centroids;         ///< [K x D] row-major, fp32
  std::vector<double> cluster_weight;   ///< [K] sum of sample weights per cluster (counts if unweighted)
  double inertia = 0;                   ///< weighted sum of distances to the final centroids
  int n_iter = 0;                       ///< Lloyd iterations of the best run
  bool converged = false;               ///< the best run stopped on tol or unchanged labels
  std::uint64_t seed = 0;
  InitMethod init = InitMethod::kmeanspp;
  std::vector<IterationInfo> history;   ///< per-iteration record of the best run

  /// Serialize to bytes / parse bytes (throws Error(format) on anything malformed).
  std::vector<std::uint8_t> to_bytes() const;
  static Model from_bytes(const std::uint8_t* data, std::size_t size);
  /// Write atomically (temporary file in the same directory + rename) / read.
  void save(const std::string& path) const;
  static Model load(const std::string& path);
};

}  // namespace flashkm
