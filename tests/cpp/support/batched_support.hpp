// Test support for batched fits: ragged problems and the "a problem in a batch is the
// problem alone" comparison (CPU tests/cpp/test_batched.cpp and GPU tests/gpu).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "flashkm/flashkm.hpp"

namespace flashkm::testing {

/// Bitwise equal doubles / floats (NaN-free data: memcmp is the test).
inline bool same_bits(const void* a, const void* b, std::size_t bytes) { return std::memcmp(a, b, bytes) == 0; }

/// EXPECTs that two models agree bitwise in every field but the wall times of the history.
inline void expect_same_fit(const Model& batched, const Model& alone, const std::string& what) {
  SCOPED_TRACE(what);
  ASSERT_EQ(batched.n_clusters, alone.n_clusters);
  ASSERT_EQ(batched.n_features, alone.n_features);
  ASSERT_EQ(batched.centroids.size(), alone.centroids.size());
  EXPECT_TRUE(same_bits(batched.centroids.data(), alone.centroids.data(), alone.centroids.size() * sizeof(float)))
      << "centroids differ";
  ASSERT_EQ(batched.cluster_weight.size(), alone.cluster_weight.size());
  EXPECT_TRUE(same_bits(batched.cluster_weight.data(), alone.cluster_weight.data(),
                        alone.cluster_weight.size() * sizeof(double)))
      << "cluster weights differ";
  EXPECT_TRUE(same_bits(&batched.inertia, &alone.inertia, sizeof(double)))
      << "inertia " << batched.inertia << " vs " << alone.inertia;
  EXPECT_EQ(batched.n_iter, alone.n_iter);
  EXPECT_EQ(batched.converged, alone.converged);
  EXPECT_EQ(batched.seed, alone.seed);
  EXPECT_EQ(batched.init, alone.init);
  ASSERT_EQ(batched.history.size(), alone.history.size());
  for (std::size_t t = 0; t < alone.history.size(); ++t) {
    const IterationInfo &a = batched.history[t], &b = alone.history[t];
    EXPECT_EQ(a.iteration, b.iteration);
    EXPECT_TRUE(same_bits(&a.inertia, &b.inertia, sizeof(double))) << "iteration " << t + 1 << " inertia "
                                                                    << a.inertia << " vs " << b.inertia;
    EXPECT_TRUE(same_bits(&a.shift, &b.shift, sizeof(double))) << "iteration " << t + 1 << " shift";
    EXPECT_EQ(a.n_changed, b.n_changed) << "iteration " << t + 1;
    EXPECT_EQ(a.n_rechecked, b.n_rechecked) << "iteration " << t + 1;
  }
}

/// Ragged sizes n_b and K k_b for B problems (deterministic).
struct RaggedShape {
  std::vector<std::int64_t> offsets, k;
};
inline RaggedShape ragged_shape(std::int64_t problems, std::int64_t n_min, std::int64_t n_max, std::int64_t k_max,
                                std::uint64_t seed) {
  RaggedShape s;
  s.offsets.push_back(0);
  std::uint64_t h = seed * 0x9E3779B97F4A7C15ull + 1;
  for (std::int64_t b = 0; b < problems; ++b) {
    h ^= h >> 31;
    h *= 0xBF58476D1CE4E5B9ull;
    h ^= h >> 29;
    const std::int64_t n = n_min + static_cast<std::int64_t>(h % static_cast<std::uint64_t>(n_max - n_min + 1));
    s.offsets.push_back(s.offsets.back() + n);
    s.k.push_back(1 + static_cast<std::int64_t>((h >> 17) % static_cast<std::uint64_t>(std::min(k_max, n))));
  }
  return s;
}

/// Fits the ragged batch of x [N x D] (host) once, then every `check_every`-th problem
/// alone (its rows, weights and given centroids, n_clusters = k_b) and EXPECTs the two
/// bitwise equal, labels included. `init`: the problems' given centroids, stacked.
inline void check_ragged_vs_alone(const std::vector<float>& x, std::int64_t d, const RaggedShape& s,
                                  const Params& p, const std::vector<float>* w = nullptr,
                                  const std::vector<float>* init = nullptr, std::int64_t check_every = 1) {
  const auto n = s.offsets.back();
  std::vector<std::int32_t> labels(static_cast<std::size_t>(n), -1);
  RaggedBatch rb;
  rb.x = MatrixView::of(x.data(), n, d);
  rb.offsets = s.offsets;
  rb.n_clusters = s.k;
  rb.sample_weight = w ? w->data() : nullptr;
  rb.init_centroids = init ? init->data() : nullptr;
  rb.labels = labels.data();
  const std::vector<Model> models = fit_batched(rb, p);
  ASSERT_EQ(models.size(), s.k.size());
  std::vector<std::int64_t> init_off(s.k.size() + 1, 0);
  for (std::size_t b = 0; b < s.k.size(); ++b) init_off[b + 1] = init_off[b] + s.k[b] * d;
  for (std::size_t b = 0; b < s.k.size(); b += static_cast<std::size_t>(check_every)) {
    Params q = p;
    q.n_clusters = s.k[b];
    const std::int64_t begin = s.offsets[b], end = s.offsets[b + 1];
    std::vector<std::int32_t> alone_labels(static_cast<std::size_t>(end - begin), -1);
    FitArgs args;
    args.labels = alone_labels.data();
    args.sample_weight = w ? w->data() + begin : nullptr;
    args.init_centroids = init ? init->data() + init_off[b] : nullptr;
    const Model alone = fit(MatrixView::of(x.data() + begin * d, end - begin, d), q, args);
    expect_same_fit(models[b], alone, "problem " + std::to_string(b));
    EXPECT_TRUE(std::equal(alone_labels.begin(), alone_labels.end(), labels.begin() + begin))
        << "labels of problem " << b;
  }
}

}  // namespace flashkm::testing
