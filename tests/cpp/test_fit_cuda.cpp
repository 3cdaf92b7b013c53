// The core's fit/predict/transform through the CUDA backend, against the CPU backend from the
// same init: the same Lloyd driver, the same expectations. Skips without a CUDA device.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <string>

#include "flashkm/flashkm.hpp"
#include "support/io_fixtures.hpp"
#include "support/reference.hpp"

namespace flashkm {
namespace {

class FitCuda : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!device_available(Device::cuda)) GTEST_SKIP() << "no CUDA backend built or no CUDA device present";
  }
};

Model fit_on(Device dev, Precision prec, const std::vector<float>& x, std::int64_t d, const std::vector<float>& c0,
             int iters, std::vector<std::int32_t>& labels) {
  Params p;
  p.device = dev;
  p.precision = prec;
  return testing::fit_given(x, d, c0, iters, p, &labels);
}

TEST_F(FitCuda, SeparatedBlobsMatchTheCpuExactly) {
  const std::int64_t n = 20011, d = 64, k = 37;
  const auto x = testing::separated_blobs(n, d, k, 1.0, 41);
  const std::vector<float> c0(x.begin(), x.begin() + k * d);
  for (Precision prec : {Precision::fp32, Precision::fp16, Precision::bf16, Precision::tf32, Precision::automatic}) {
    SCOPED_TRACE(to_string(prec));
    std::vector<std::int32_t> lc, lg;
    const Model cpu = fit_on(Device::cpu, Precision::automatic, x, d, c0, 6, lc);
    const Model gpu = fit_on(Device::cuda, prec, x, d, c0, 6, lg);
    EXPECT_EQ(lc, lg);
    EXPECT_EQ(cpu.n_iter, gpu.n_iter);
    for (std::size_t t = 0; t < cpu.centroids.size(); ++t)
      EXPECT_NEAR(gpu.centroids[t], cpu.centroids[t], 1e-5 * (std::abs(cpu.centroids[t]) + 1.0));
    EXPECT_NEAR(gpu.inertia, cpu.inertia, 1e-6 * cpu.inertia);
  }
}

TEST_F(FitCuda, UniformNoiseCertifiedLabelsDifferOnlyAtNearTies) {
  const std::int64_t n = 30001, d = 32, k = 100;
  const auto x = testing::uniform(n, d, 42);
  const std::vector<float> c0(x.begin(), x.begin() + k * d);
  std::vector<std::int32_t> lg;
  const Model gpu = fit_on(Device::cuda, Precision::fp16, x, d, c0, 3, lg);
  testing::expect_argmins_outside_near_ties(x, gpu.centroids, d, lg);
}

TEST_F(FitCuda, DefaultFitIsDeterministic) {
  const std::int64_t n = 50000, d = 48, k = 64;
  const auto x = testing::blobs(n, d, k, 3.0, 1.0, 43);
  Params p;
  p.n_clusters = k;
  p.seed = 9;
  p.device = Device::cuda;
  const Model a = fit(MatrixView::of(x.data(), n, d), p);
  const Model b = fit(MatrixView::of(x.data(), n, d), p);
  EXPECT_EQ(a.centroids, b.centroids);
  EXPECT_EQ(a.inertia, b.inertia);
  EXPECT_EQ(a.n_iter, b.n_iter);
  for (InitMethod how : {InitMethod::kmeans_parallel, InitMethod::random}) {
    p.init = how;
    const Model m = fit(MatrixView::of(x.data(), n, d), p);
    EXPECT_TRUE(std::isfinite(m.inertia)) << to_string(how);
  }
}

// Without a hook the driver lets the CUDA backend keep its updated centroids on the device
// (update_centroids_kept); a checkpoint installs a hook, which takes the centroids to the
// host every iteration (update_centroids, then set_centroids). Same bits either way.
TEST_F(FitCuda, CentroidsKeptOnTheDeviceEqualTheHostRoundTrip) {
  const std::int64_t n = 40003, d = 40, k = 50;
  const auto x = testing::uniform(n, d, 44);  // many iterations with changing labels
  for (Precision prec : {Precision::fp16, Precision::fp32}) {
    SCOPED_TRACE(to_string(prec));
    test::TempDir dir;
    Params p;
    p.n_clusters = k;
    p.seed = 3;
    p.max_iter = 15;
    p.tol = 0;
    p.device = Device::cuda;
    p.precision = prec;
    std::vector<std::int32_t> la(static_cast<std::size_t>(n)), lb(static_cast<std::size_t>(n));
    FitArgs args;
    args.labels = la.data();
    const Model kept = fit(MatrixView::of(x.data(), n, d), p, args);
    p.checkpoint_path = dir.file("ck.fkc");
    args.labels = lb.data();
    const Model host = fit(MatrixView::of(x.data(), n, d), p, args);
    EXPECT_EQ(kept.n_iter, host.n_iter);
    EXPECT_EQ(kept.centroids, host.centroids);
    EXPECT_EQ(kept.inertia, host.inertia);
    EXPECT_EQ(la, lb);
  }
}

TEST_F(FitCuda, PredictAndTransformMatchTheCpu) {
  const std::int64_t n = 4000, d = 24, k = 10;
  const auto x = testing::separated_blobs(n, d, k, 1.0, 44);
  Params p;
  p.n_clusters = k;
  const Model m = fit(MatrixView::of(x.data(), n, d), p);
  std::vector<std::int32_t> lc(n), lg(n);
  std::vector<float> tc(n * k), tg(n * k);
  PredictOptions gpu;
  gpu.device = Device::cuda;
  predict(m, MatrixView::of(x.data(), n, d), lc.data());
  predict(m, MatrixView::of(x.data(), n, d), lg.data(), nullptr, gpu);
  EXPECT_EQ(lc, lg);
  transform(m, MatrixView::of(x.data(), n, d), tc.data());
  transform(m, MatrixView::of(x.data(), n, d), tg.data(), gpu);
  for (std::size_t t = 0; t < tc.size(); ++t) EXPECT_NEAR(tg[t], tc[t], 1e-3 * (tc[t] + 1.0f)) << "entry " << t;
  EXPECT_NEAR(score(m, MatrixView::of(x.data(), n, d), nullptr, gpu), score(m, MatrixView::of(x.data(), n, d)),
              1e-6 * std::abs(m.inertia));
}

}  // namespace
}  // namespace flashkm

namespace flashkm {
namespace {

TEST_F(FitCuda, MemoryBudgetMakesOutOfMemoryAnErrorAndTheProcessLivesOn) {
  const std::int64_t n = 10000, d = 32, k = 16;
  const auto x = testing::uniform(n, d, 45);
  Params p;
  p.n_clusters = k;
  p.device = Device::cuda;
  ::setenv("FLASHKM_CUDA_MEMORY_BUDGET", "4096", 1);
  try {
    fit(MatrixView::of(x.data(), n, d), p);
    ADD_FAILURE() << "expected an out-of-memory error under a 4 KiB budget";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::out_of_memory) << e.what();
    EXPECT_NE(std::string(e.what()).find("bytes"), std::string::npos) << e.what();
  }
  ::unsetenv("FLASHKM_CUDA_MEMORY_BUDGET");
  const Model m = fit(MatrixView::of(x.data(), n, d), p);  // everything was released
  EXPECT_TRUE(std::isfinite(m.inertia));
}

}  // namespace
}  // namespace flashkm
