// The batched Lloyd driver (core/batched_fit.cpp), written once for every BatchedBackend.
#pragma once

#include <cstdint>
#include <vector>

#include "core/batched_backend.hpp"
#include "core/lloyd.hpp"
#include "flashkm/params.hpp"

namespace flashkm::core {

/// Lloyd on every problem of an attached batch from centroids c[b] [k[b] x D], each problem
/// stopping on its own (lloyd_stops with tol[b], absolute) and dropping out of the later
/// calls; then lloyd()'s final step per problem. Result b is what lloyd() returns for
/// problem b alone on its single backend (the seam's contract). The backend keeps the
/// final labels. params.progress gets the problem index as `run`.
std::vector<LloydResult> batched_lloyd(BatchedBackend& be, std::vector<std::vector<float>> c,
                                       const std::vector<std::int64_t>& k, const Params& params,
                                       const std::vector<double>& tol);

}  // namespace flashkm::core
