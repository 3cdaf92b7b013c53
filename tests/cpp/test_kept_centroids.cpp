// The Lloyd driver over a backend that keeps its updated centroids (update_centroids_kept,
// as the CUDA backend does to spare the K x D trip to the host): the fit must be bitwise the
// one through update_centroids(), whether the backend keeps every time, declines now and
// then (an empty cluster on a GPU), or a hook needs the centroids on the host each iteration.
// A CPU fake stands for the device; tests/gpu checks the CUDA backend itself.
#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <vector>

#include "core/backend.hpp"
#include "core/lloyd.hpp"
#include "support/forwarding_backend.hpp"
#include "support/reference.hpp"

namespace flashkm {
namespace {

/// The CPU backend, keeping the centroids it computes: the host path's update, then they
/// become its current set, as the next set_centroids() would have made them.
class KeepingBackend final : public test::ForwardingBackend {
 public:
  explicit KeepingBackend(int decline_every) : ForwardingBackend(core::make_cpu_backend(1)), decline_every_(decline_every) {}

  void set_centroids(const float* c, std::int64_t k) override {
    ++sets;
    current_.assign(c, c + k * cols());
    inner().set_centroids(c, k);
  }
  bool update_centroids_kept(std::int64_t k, Metric metric, double* cluster_weight, double* shift) override {
    ++offers;
    if (decline_every_ > 0 && offers % decline_every_ == 0) return false;
    std::vector<float> next(current_.size());
    inner().update_centroids(k, metric, current_.data(), next.data(), cluster_weight, shift);
    inner().set_centroids(next.data(), k);
    current_ = std::move(next);
    ++kept;
    return true;
  }
  void copy_centroids(float* out) override {
    ++copies;
    std::memcpy(out, current_.data(), current_.size() * sizeof(float));
  }

  int sets = 0, offers = 0, kept = 0, copies = 0;

 private:
  int decline_every_;
  std::vector<float> current_;
};

struct Fit {
  core::LloydResult result;
  std::vector<std::int32_t> labels;
};

template <class B>
Fit run(B& backend, const std::vector<float>& x, std::int64_t n, std::int64_t d, std::int64_t k,
        const core::IterationHook& hook = {}) {
  backend.attach(MatrixView::of(x.data(), n, d), nullptr, Metric::l2);
  Params p;
  p.max_iter = 12;
  p.tol = 0;
  std::vector<float> c0(x.begin(), x.begin() + k * d);
  Fit f;
  f.result = core::lloyd(backend, c0, k, p, 0.0, 0, nullptr, hook);
  f.labels.resize(static_cast<std::size_t>(n));
  backend.copy_labels(f.labels.data());
  return f;
}

void expect_bitwise(const Fit& a, const Fit& b) {
  EXPECT_EQ(a.result.n_iter, b.result.n_iter);
  EXPECT_EQ(a.result.centroids, b.result.centroids);
  EXPECT_EQ(a.result.inertia, b.result.inertia);
  EXPECT_EQ(a.result.cluster_weight, b.result.cluster_weight);
  EXPECT_EQ(a.labels, b.labels);
  ASSERT_EQ(a.result.history.size(), b.result.history.size());
  for (std::size_t i = 0; i < a.result.history.size(); ++i) {
    EXPECT_EQ(a.result.history[i].inertia, b.result.history[i].inertia) << i;
    EXPECT_EQ(a.result.history[i].shift, b.result.history[i].shift) << i;
    EXPECT_EQ(a.result.history[i].n_changed, b.result.history[i].n_changed) << i;
  }
}

class KeptCentroids : public ::testing::Test {
 protected:
  // Uniform noise: labels keep changing for many iterations, so all 12 run.
  const std::int64_t n = 3001, d = 5, k = 17;
  const std::vector<float> x = testing::uniform(n, d, 11);
};

TEST_F(KeptCentroids, BitwiseTheUpdateThroughTheHost) {
  auto plain = core::make_cpu_backend(1);
  const Fit ref = run(*plain, x, n, d, k);
  KeepingBackend keeping(0);
  const Fit f = run(keeping, x, n, d, k);
  expect_bitwise(f, ref);
  EXPECT_EQ(keeping.kept, f.result.n_iter);
  EXPECT_EQ(keeping.sets, 1) << "only the initial centroids are uploaded";
  EXPECT_EQ(keeping.copies, 1) << "the final centroids come to the host once";
}

TEST_F(KeptCentroids, DecliningNowAndThenChangesNothing) {
  auto plain = core::make_cpu_backend(1);
  const Fit ref = run(*plain, x, n, d, k);
  KeepingBackend keeping(3);  // every third offer declined: the driver fetches, then updates on the host
  const Fit f = run(keeping, x, n, d, k);
  expect_bitwise(f, ref);
  EXPECT_GT(keeping.kept, 0);
  EXPECT_LT(keeping.kept, keeping.offers);
}

TEST_F(KeptCentroids, AHookGetsHostCentroidsEveryIteration) {
  auto plain = core::make_cpu_backend(1);
  std::vector<std::vector<float>> seen_ref, seen;
  const Fit ref = run(*plain, x, n, d, k, [&](int, const std::vector<float>&, const std::vector<float>& after,
                                               const std::vector<IterationInfo>&) { seen_ref.push_back(after); });
  KeepingBackend keeping(0);
  const Fit f = run(keeping, x, n, d, k, [&](int, const std::vector<float>&, const std::vector<float>& after,
                                             const std::vector<IterationInfo>&) { seen.push_back(after); });
  expect_bitwise(f, ref);
  EXPECT_EQ(seen, seen_ref);
  EXPECT_EQ(keeping.offers, 0) << "with a hook the driver keeps its own copy";
}

}  // namespace
}  // namespace flashkm
