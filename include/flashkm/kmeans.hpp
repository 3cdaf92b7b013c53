// The k-means entry points. Every function validates its inputs first and throws
// flashkm::Error with a precise message; nothing is written to outputs on error.
//
// Determinism: for the same input, parameters, seed and backend, results are bitwise
// identical run to run. The CPU backend's results also do not depend on the thread count.
#pragma once

#include <cstdint>

#include "flashkm/model.hpp"
#include "flashkm/params.hpp"
#include "flashkm/types.hpp"

namespace flashkm {

/// Optional inputs and outputs of fit(). Pointers live where x lives (host or the same GPU).
struct FitArgs {
  const float* sample_weight = nullptr;  ///< [N] non-negative, not all zero; null = all ones
  const float* init_centroids = nullptr; ///< [K x D] fp32 host array, required for InitMethod::given
  std::int32_t* labels = nullptr;        ///< [N] out: final labels, optional
};

/// Fit k-means to x [N x D].
/// @code
///   flashkm::Params p; p.n_clusters = 256; p.seed = 7;
///   flashkm::Model m = flashkm::fit(flashkm::MatrixView::of(data, n, d), p);
/// @endcode
Model fit(const MatrixView& x, const Params& params, const FitArgs& args = {});

/// Options for the functions that use a fitted model.
struct PredictOptions {
  Device device = Device::cpu;
  int device_id = 0;
  int n_threads = 0;
  std::int64_t max_memory = 0;  ///< as Params::max_memory
};

/// Nearest centroid of every row: labels [N] and, optionally, the distance to it [N]
/// (squared L2, 1 - cos, or -x.c by the model's metric).
void predict(const Model& model, const MatrixView& x, std::int32_t* labels, float* distances = nullptr,
             const PredictOptions& options = {});

/// Distances of every row to every centroid, out [N x K] row-major. Euclidean (not squared)
/// for l2 as in scikit-learn's transform; 1 - cos for cosine; -x.c for inner_product.
void transform(const Model& model, const MatrixView& x, float* out, const PredictOptions& options = {});

/// Minus the weighted inertia of x under the model (scikit-learn's score).
double score(const Model& model, const MatrixView& x, const float* sample_weight = nullptr,
             const PredictOptions& options = {});

/// Whether a backend can run here: cpu always; cuda when built and a device is present.
bool device_available(Device device);

/// The CPU SIMD path chosen at run time ("avx512", "avx2", "generic").
const char* cpu_simd_level();

/// Library version string.
const char* version();

}  // namespace flashkm
