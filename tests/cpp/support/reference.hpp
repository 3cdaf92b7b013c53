// Test support: data generators and a float64 reference of Lloyd's algorithm.
#pragma once

#include <cstdint>
#include <vector>

#include "flashkm/kmeans.hpp"
#include "flashkm/types.hpp"

namespace flashkm::testing {

/// Gaussian blobs: `centers` true centres ~ N(0, spread^2 I), rows with noise sigma.
std::vector<float> blobs(std::int64_t n, std::int64_t d, std::int64_t centers, double spread, double sigma,
                         std::uint64_t seed);
/// Well-separated blobs: centres at least 20 sigma apart (rejection sampling in a box large
/// enough for any d); row i belongs to blob i % centers, so rows 0..centers-1 hit every blob.
/// No row is anywhere near a tie between two blob centres.
std::vector<float> separated_blobs(std::int64_t n, std::int64_t d, std::int64_t centers, double sigma,
                                   std::uint64_t seed);
/// Uniform noise in [0, 1): many near-ties between centroids.
std::vector<float> uniform(std::int64_t n, std::int64_t d, std::uint64_t seed);

struct NearestRef {
  std::vector<std::int32_t> label;  ///< argmin in float64 (ties to the lowest index)
  std::vector<double> best, second; ///< float64 distances
};
/// Nearest centroid of every row, computed in float64 from differences.
NearestRef nearest_f64(const std::vector<float>& x, const std::vector<float>& c, std::int64_t d,
                       Metric metric = Metric::l2);

/// Tolerance under which two float64 distances count as a near-tie for fp32 arithmetic:
/// a few units of fp32 rounding of |x|^2 + |c|^2 (the expanded form's cancellation).
double tie_tolerance(const std::vector<float>& x, const std::vector<float>& c, std::int64_t d, std::int64_t i);

/// Checks (gtest EXPECTs) that labels are the float64 argmins of x over c except at
/// near-ties (within 2 * tie_tolerance), and that fewer than n / 100 rows differ at all.
void expect_argmins_outside_near_ties(const std::vector<float>& x, const std::vector<float>& c, std::int64_t d,
                                      const std::vector<std::int32_t>& labels);

/// fit() from the given initial centroids c0 [K x D], tol = 0, `iters` iterations; the other
/// parameters (device, precision, threads) from `base`. Labels and weights optional.
Model fit_given(const std::vector<float>& x, std::int64_t d, const std::vector<float>& c0, int iters,
                Params base = {}, std::vector<std::int32_t>* labels = nullptr, const float* weights = nullptr);

struct LloydRef {
  std::vector<double> centroids;
  std::vector<std::int32_t> labels;
  double inertia = 0;
};
/// `iters` plain Lloyd iterations in float64 from c0 (empty clusters re-seeded from the
/// farthest rows, as scikit-learn does), then labels and inertia against the result.
LloydRef lloyd_f64(const std::vector<float>& x, const std::vector<float>& c0, std::int64_t d, int iters,
                   const std::vector<float>* weights = nullptr);

}  // namespace flashkm::testing
