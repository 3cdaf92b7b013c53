// Initial centroids, written once against the Backend interface.
#pragma once

#include <cstdint>
#include <vector>

#include "core/backend.hpp"
#include "flashkm/params.hpp"

namespace flashkm::core {

/// K x D initial centroids (fp32, host; unit-norm for cosine) by params.init, using `seed`.
/// InitMethod::given is handled by the caller.
std::vector<float> initial_centroids(Backend& backend, const Params& params, std::uint64_t seed);

/// Greedy k-means++ (scikit-learn's variant: n_local_trials candidates per step, the one
/// that lowers the potential most wins). Exposed for k-means|| (which runs it on the
/// weighted candidates).
std::vector<float> kmeanspp(Backend& backend, std::int64_t k, int n_local_trials, std::uint64_t seed);

}  // namespace flashkm::core
