// Every initialisation: right shape, drawn from the data, reproducible by seed, sensible.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <limits>
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

// k-means++ trials settle most rows from an int8 sketch of X without reading X (CPU, l2);
// the results must be bitwise those of the full pass (make_cpu_backend(t, false) turns the
// sketch off): every trial's potentials, every commit's total, every sample, the centroids.
// Data that makes the sketch's bounds tight or degenerate: tight well-separated blobs
// (most rows settled), overlapping blobs in 64-D (distances concentrate), duplicated rows
// and chosen centres equal to many rows (mind = 0), constant rows, data far from the origin
// (the rounding bound dominates), tiny values (fp32 underflow), values spanning many
// magnitudes within a row, weights.
struct SketchCase {
  const char* name;
  std::int64_t d;
  std::vector<float> x;
  std::vector<float> w;
};

std::vector<SketchCase> sketch_cases() {
  std::vector<SketchCase> cases;
  cases.push_back({"separated", 8, testing::separated_blobs(6000, 8, 40, 0.5, 31), {}});
  cases.push_back({"overlapping64", 64, testing::blobs(5000, 64, 50, 1.0, 1.5, 32), {}});
  {
    auto x = testing::blobs(3000, 17, 12, 4.0, 0.3, 33);
    const std::vector<float> head(x.begin(), x.begin() + 40 * 17);  // 40 rows repeated 20 times
    for (int rep = 0; rep < 20; ++rep) x.insert(x.end(), head.begin(), head.end());
    cases.push_back({"duplicates", 17, std::move(x), {}});
  }
  {
    auto x = testing::blobs(3000, 5, 8, 3.0, 0.2, 34);
    x.insert(x.end(), 2000 * 5, 0.25f);  // 2000 identical rows
    cases.push_back({"constant_rows", 5, std::move(x), {}});
  }
  {
    auto x = testing::blobs(4000, 24, 30, 1.0, 0.05, 35);
    for (auto& v : x) v += 1000.0f;  // |x|^2 ~ 2.4e7 against distances ~ 1
    cases.push_back({"far_from_origin", 24, std::move(x), {}});
  }
  {
    auto x = testing::blobs(3000, 12, 15, 3.0, 0.4, 37);
    for (auto& v : x) v *= 1e-22f;  // products underflow to subnormals in fp32
    cases.push_back({"tiny_magnitudes", 12, std::move(x), {}});
  }
  {
    auto x = testing::blobs(4000, 16, 20, 2.0, 0.5, 36);
    for (std::size_t i = 0; i < x.size(); ++i)
      if (i % 16 == 0) x[i] *= 1e4f;  // one large coordinate: coarse int8 steps elsewhere
    std::vector<float> w(4000);
    for (std::size_t i = 0; i < w.size(); ++i) w[i] = i % 7 == 0 ? 0.0f : float(1 + i % 5) * 0.37f;
    cases.push_back({"wide_range_weighted", 16, std::move(x), std::move(w)});
  }
  return cases;
}

TEST(Init, KmeansppSketchIsBitwiseTheFullPass) {
  for (const auto& sc : sketch_cases()) {
    const std::int64_t d = sc.d, n = static_cast<std::int64_t>(sc.x.size()) / d;
    const float* w = sc.w.empty() ? nullptr : sc.w.data();
    const MatrixView view = MatrixView::of(sc.x.data(), n, d);
    const std::int64_t k = 48;
    const int trials = 2 + static_cast<int>(std::log(double(k)));
    for (std::uint64_t seed : {1u}) {
      auto full = core::make_cpu_backend(2, false);
      full->attach(view, w, Metric::l2);
      const auto expect = core::kmeanspp(*full, k, trials, seed);
      for (int threads : {1, 3}) {
        auto be = core::make_cpu_backend(threads, true);
        be->attach(view, w, Metric::l2);
        const auto got = core::kmeanspp(*be, k, trials, seed);
        ASSERT_EQ(got.size(), expect.size());
        EXPECT_EQ(0, std::memcmp(got.data(), expect.data(), got.size() * sizeof(float)))
            << sc.name << " seed " << seed << " threads " << threads;
        // the comparison means something only where the sketch settles rows; on tight blobs
        // it settles most of them (constant rows: mind = 0 leaves no room, far from the
        // origin the rounding bound dominates)
        const std::int64_t settled = core::cpu_kpp_sketch_settled_rows(*be);
        EXPECT_EQ(core::cpu_kpp_sketch_settled_rows(*full), 0);
        if (std::string(sc.name) == "separated" || std::string(sc.name) == "duplicates")
          EXPECT_GT(settled, 10 * n) << sc.name << ": the sketch settled too few rows";
        std::printf("[ sketch   ] %s threads %d: %lld rows settled over %lld trials of %lld rows\n", sc.name, threads,
                    static_cast<long long>(settled), static_cast<long long>(k - 1), static_cast<long long>(n));
      }
    }
    // Step by step: potentials of every trial, the commit's total and the D^2 samples.
    auto a = core::make_cpu_backend(2, true), b = core::make_cpu_backend(2, false);
    a->attach(view, w, Metric::l2);
    b->attach(view, w, Metric::l2);
    a->mindist_fill(std::numeric_limits<float>::infinity());
    b->mindist_fill(std::numeric_limits<float>::infinity());
    std::vector<float> c(sc.x.begin(), sc.x.begin() + d);
    ASSERT_EQ(a->mindist_update(c.data(), 1), b->mindist_update(c.data(), 1));
    std::uint64_t rng = 0x9e3779b97f4a7c15ull;
    for (int step = 0; step < 60; ++step) {
      std::vector<float> cand(static_cast<std::size_t>(trials * d));
      for (int j = 0; j < trials; ++j) {
        rng = rng * 6364136223846793005ull + 1442695040888963407ull;
        const std::int64_t row = static_cast<std::int64_t>((rng >> 33) % static_cast<std::uint64_t>(n));
        std::copy(sc.x.begin() + row * d, sc.x.begin() + (row + 1) * d, cand.begin() + j * d);
      }
      std::vector<double> pa(trials), pb(trials);
      a->mindist_trial(cand.data(), trials, pa.data());
      b->mindist_trial(cand.data(), trials, pb.data());
      ASSERT_EQ(0, std::memcmp(pa.data(), pb.data(), pa.size() * sizeof(double))) << sc.name << " step " << step;
      const std::int64_t j = step % trials;  // not always the best: other rows change
      const double ta = a->mindist_commit(j, cand.data() + j * d), tb = b->mindist_commit(j, cand.data() + j * d);
      ASSERT_EQ(ta, tb) << sc.name << " step " << step;
      std::vector<double> targets;
      for (int t = 1; t <= 5; ++t) targets.push_back(ta * t / 6.0);
      ASSERT_EQ(a->sample_by_mindist(targets), b->sample_by_mindist(targets)) << sc.name << " step " << step;
    }
  }
}

}  // namespace
}  // namespace flashkm
