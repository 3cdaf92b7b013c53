// Every initialisation: right shape, drawn from the data, reproducible by seed, sensible.
#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "core/backend.hpp"
#include "core/init.hpp"
#include "flashkm/flashkm.hpp"
#include "support/reference.hpp"

namespace flashkm {
namespace {

std::vector<float> init_of(const std::vector<float>& x, std::int64_t d, std::int64_t k, InitMethod how,
                           std::uint64_t seed, const float* w = nullptr, int threads = 0) {
  auto be = core::make_cpu_backend(threads);
  be->attach(MatrixView::of(x.data(), static_cast<std::int64_t>(x.size()) / d, d), w, Metric::l2);
  Params p;
  p.n_clusters = k;
  p.init = how;
  return core::initial_centroids(*be, p, seed);
}

// Index of the data row equal to centroid j, or -1.
std::int64_t row_of(const std::vector<float>& x, const std::vector<float>& c, std::int64_t d, std::int64_t j) {
  for (std::int64_t i = 0; i < static_cast<std::int64_t>(x.size()) / d; ++i)
    if (std::equal(c.begin() + j * d, c.begin() + (j + 1) * d, x.begin() + i * d)) return i;
  return -1;
}

double potential(const std::vector<float>& x, const std::vector<float>& c, std::int64_t d) {
  const auto ref = testing::nearest_f64(x, c, d);
  double s = 0;
  for (double v : ref.best) s += v;
  return s;
}

class Inits : public ::testing::TestWithParam<InitMethod> {};

TEST_P(Inits, ShapeRowsAndSeeds) {
  const std::int64_t n = 3000, d = 5, k = 17;
  const auto x = testing::blobs(n, d, 10, 5.0, 1.0, 21);
  const auto a = init_of(x, d, k, GetParam(), 1);
  const auto b = init_of(x, d, k, GetParam(), 1, nullptr, 1);  // other thread count
  const auto c = init_of(x, d, k, GetParam(), 2);
  ASSERT_EQ(static_cast<std::int64_t>(a.size()), k * d);
  EXPECT_EQ(a, b) << "same seed must give the same centroids whatever the thread count";
  EXPECT_NE(a, c) << "another seed should give other centroids";
  if (GetParam() != InitMethod::kmeans_parallel) {  // k-means|| refines its candidates
    std::set<std::int64_t> rows;
    for (std::int64_t j = 0; j < k; ++j) {
      const std::int64_t r = row_of(x, a, d, j);
      EXPECT_GE(r, 0) << "centroid " << j << " is not a data row";
      rows.insert(r);
    }
    if (GetParam() == InitMethod::random) EXPECT_EQ(static_cast<std::int64_t>(rows.size()), k) << "random rows must be distinct";
  }
  for (float v : a) EXPECT_TRUE(std::isfinite(v));
}

TEST_P(Inits, ZeroWeightRowsAreNeverChosen) {
  const std::int64_t n = 2000, d = 3, k = 12;
  const auto x = testing::uniform(n, d, 22);
  std::vector<float> w(n, 1.0f);
  for (std::int64_t i = 0; i < n; i += 2) w[i] = 0.0f;
  const auto c = init_of(x, d, k, GetParam(), 3, w.data());
  if (GetParam() == InitMethod::kmeans_parallel) return;  // centroids are refined means
  for (std::int64_t j = 0; j < k; ++j) {
    const std::int64_t r = row_of(x, c, d, j);
    ASSERT_GE(r, 0);
    EXPECT_EQ(r % 2, 1) << "row " << r << " has weight 0";
  }
}

INSTANTIATE_TEST_SUITE_P(All, Inits,
                         ::testing::Values(InitMethod::kmeanspp, InitMethod::kmeans_parallel, InitMethod::random),
                         [](const auto& info) {
                           return std::string(info.param == InitMethod::kmeanspp         ? "kmeanspp"
                                              : info.param == InitMethod::kmeans_parallel ? "kmeans_parallel"
                                                                                          : "random");
                         });

TEST(Init, SeedingBeatsRandomRowsOnBlobs) {
  // On well separated blobs, D^2 seeding finds (nearly) every blob; random rows do not.
  const std::int64_t n = 4000, d = 4, k = 25;
  const auto x = testing::separated_blobs(n, d, k, 1.0, 23);
  double pp = 0, par = 0, rnd = 0;
  for (std::uint64_t s = 0; s < 3; ++s) {
    pp += potential(x, init_of(x, d, k, InitMethod::kmeanspp, s), d);
    par += potential(x, init_of(x, d, k, InitMethod::kmeans_parallel, s), d);
    rnd += potential(x, init_of(x, d, k, InitMethod::random, s), d);
  }
  EXPECT_LT(pp, 0.5 * rnd);
  EXPECT_LT(par, 0.5 * rnd);
}

TEST(Init, KmeansppSamplesProportionalToDistance) {
  // Two rows at 0, one at 1, one at 3: after a first centre at 0, the second is the row at 3
  // with probability 9/10. Check the frequency over many seeds.
  const std::int64_t d = 1;
  const std::vector<float> x = {0, 0, 1, 3};
  int far = 0, total = 0;
  for (std::uint64_t s = 0; s < 2000; ++s) {
    auto be = core::make_cpu_backend(1);
    be->attach(MatrixView::of(x.data(), 4, d), nullptr, Metric::l2);
    const auto c = core::kmeanspp(*be, 2, 1, s);  // one trial: plain D^2 sampling
    if (c[0] != 0.0f) continue;
    ++total;
    far += c[1] == 3.0f;
  }
  ASSERT_GT(total, 300);
  EXPECT_NEAR(double(far) / total, 0.9, 0.05);
}

TEST(Init, FitWithEveryInitIsReproducible) {
  const std::int64_t n = 1500, d = 6, k = 8;
  const auto x = testing::blobs(n, d, k, 6.0, 1.0, 24);
  for (InitMethod how : {InitMethod::kmeanspp, InitMethod::kmeans_parallel, InitMethod::random}) {
    Params p;
    p.n_clusters = k;
    p.init = how;
    p.seed = 77;
    const Model a = fit(MatrixView::of(x.data(), n, d), p);
    const Model b = fit(MatrixView::of(x.data(), n, d), p);
    EXPECT_EQ(a.centroids, b.centroids) << to_string(how);
    EXPECT_EQ(a.inertia, b.inertia) << to_string(how);
  }
}

}  // namespace
}  // namespace flashkm
