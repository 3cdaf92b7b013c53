// Batched fits (fit_batched) against per-problem fits on the CPU: equal and ragged sizes,
// per-problem K, every init and metric, per-problem convergence, empty-cluster repair
// inside a batch, more than 65,535 problems, and the errors at the boundary.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "core/batched_backend.hpp"
#include "core/batched_lloyd.hpp"
#include "flashkm/flashkm.hpp"
#include "support/batched_support.hpp"
#include "support/reference.hpp"

namespace flashkm {
namespace {

using testing::expect_same_fit;

/// Fits problem rows [off[b], off[b+1]) of x alone with the batch's params and its K.
Model fit_alone(const std::vector<float>& x, std::int64_t d, std::int64_t begin, std::int64_t end, std::int64_t k,
                Params p, const float* weights, const float* init, std::vector<std::int32_t>* labels) {
  p.n_clusters = k;
  FitArgs args;
  args.sample_weight = weights ? weights + begin : nullptr;
  args.init_centroids = init;
  if (labels) {
    labels->assign(static_cast<std::size_t>(end - begin), -1);
    args.labels = labels->data();
  }
  return fit(MatrixView::of(x.data() + begin * d, end - begin, d), p, args);
}

TEST(Batched, EqualSizesAsListOfViews) {
  const std::int64_t B = 6, n = 500, d = 8, k = 5;
  std::vector<std::vector<float>> xs;
  std::vector<BatchedProblem> ps;
  std::vector<std::vector<std::int32_t>> labels(B, std::vector<std::int32_t>(n, -1));
  for (std::int64_t b = 0; b < B; ++b) xs.push_back(testing::blobs(n, d, 7, 4.0, 1.0, 10 + b));
  for (std::int64_t b = 0; b < B; ++b) {
    BatchedProblem pb;
    pb.x = MatrixView::of(xs[b].data(), n, d);
    pb.labels = labels[b].data();
    ps.push_back(pb);
  }
  Params p;
  p.n_clusters = k;
  p.seed = 3;
  const std::vector<Model> models = fit_batched(ps, p);
  for (std::int64_t b = 0; b < B; ++b) {
    std::vector<std::int32_t> alone_labels;
    const Model alone = fit_alone(xs[b], d, 0, n, k, p, nullptr, nullptr, &alone_labels);
    expect_same_fit(models[b], alone, "problem " + std::to_string(b));
    EXPECT_EQ(labels[b], alone_labels);
  }
}

class RaggedInits : public ::testing::TestWithParam<std::tuple<InitMethod, Metric>> {};

TEST_P(RaggedInits, EveryProblemIsItsAloneFit) {
  const auto [init, metric] = GetParam();
  const std::int64_t d = 7;
  const auto s = testing::ragged_shape(23, 12, 300, 9, 5);
  const auto x = testing::blobs(s.offsets.back(), d, 11, 3.0, 1.0, 42);
  Params p;
  p.init = init;
  p.metric = metric;
  p.seed = 11;
  p.max_iter = 30;
  testing::check_ragged_vs_alone(x, d, s, p);
}

INSTANTIATE_TEST_SUITE_P(All, RaggedInits,
                         ::testing::Combine(::testing::Values(InitMethod::kmeanspp, InitMethod::kmeans_parallel,
                                                              InitMethod::random),
                                            ::testing::Values(Metric::l2, Metric::cosine, Metric::inner_product)));

TEST(Batched, WeightsAndGivenInitPerProblemConvergence) {
  const std::int64_t d = 5;
  const auto s = testing::ragged_shape(17, 30, 400, 8, 9);
  const auto n = s.offsets.back();
  const auto x = testing::blobs(n, d, 6, 3.0, 1.0, 7);
  std::vector<float> w(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) w[i] = 0.25f + static_cast<float>(i % 7);
  // Given init: each problem's first k rows.
  std::vector<float> init;
  for (std::size_t b = 0; b < s.k.size(); ++b)
    init.insert(init.end(), x.begin() + s.offsets[b] * d, x.begin() + (s.offsets[b] + s.k[b]) * d);
  Params p;
  p.init = InitMethod::given;
  p.tol = 1e-3;
  p.max_iter = 100;
  testing::check_ragged_vs_alone(x, d, s, p, &w, &init);
  // Per-problem convergence: the problems stop at different iterations.
  RaggedBatch rb;
  rb.x = MatrixView::of(x.data(), n, d);
  rb.offsets = s.offsets;
  rb.n_clusters = s.k;
  rb.sample_weight = w.data();
  rb.init_centroids = init.data();
  const auto models = fit_batched(rb, p);
  int lo = 1 << 30, hi = 0;
  for (const Model& m : models) {
    EXPECT_TRUE(m.converged);
    lo = std::min(lo, m.n_iter);
    hi = std::max(hi, m.n_iter);
  }
  EXPECT_LT(lo, hi) << "every problem stopped at the same iteration: per-problem convergence is not exercised";
}

TEST(Batched, EmptyClusterRepairInsideABatch) {
  // Problem 1's third initial centroid is far from every row: it empties at the first
  // assignment and is repaired by the farthest-row rule; problems 0 and 2 have no empties.
  const std::int64_t d = 3;
  const std::vector<std::int64_t> off = {0, 200, 450, 700};
  const std::vector<std::int64_t> k = {3, 3, 4};
  const auto x = testing::blobs(off.back(), d, 4, 3.0, 1.0, 99);
  std::vector<float> init;
  for (std::size_t b = 0; b < k.size(); ++b)
    init.insert(init.end(), x.begin() + off[b] * d, x.begin() + (off[b] + k[b]) * d);
  for (std::int64_t t = 0; t < d; ++t) init[(3 + 2) * d + t] = 1e4f;  // problem 1, centroid 2
  Params p;
  p.init = InitMethod::given;
  p.max_iter = 20;
  testing::RaggedShape s{off, k};
  testing::check_ragged_vs_alone(x, d, s, p, nullptr, &init);
  RaggedBatch rb;
  rb.x = MatrixView::of(x.data(), off.back(), d);
  rb.offsets = off;
  rb.n_clusters = k;
  rb.init_centroids = init.data();
  const auto models = fit_batched(rb, p);
  for (const Model& m : models)
    for (double cw : m.cluster_weight) EXPECT_GT(cw, 0.0);
  EXPECT_LT(models[1].centroids[2 * d], 1e3f) << "the far centroid was not moved onto a row";
}

TEST(Batched, MoreThan65535TinyProblems) {
  const std::int64_t B = 70000, n = 4, d = 2, k = 2;
  std::vector<float> x(static_cast<std::size_t>(B * n * d));
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>((i * 2654435761u) % 1000) / 100.0f;
  std::vector<std::int64_t> off(B + 1);
  for (std::int64_t b = 0; b <= B; ++b) off[b] = b * n;
  const std::vector<std::int64_t> ks = {k};
  std::vector<std::int32_t> labels(static_cast<std::size_t>(B * n), -1);
  RaggedBatch rb;
  rb.x = MatrixView::of(x.data(), B * n, d);
  rb.offsets = off;
  rb.n_clusters = ks;
  rb.labels = labels.data();
  Params p;
  p.init = InitMethod::random;
  p.max_iter = 10;
  p.seed = 5;
  const auto models = fit_batched(rb, p);
  ASSERT_EQ(static_cast<std::int64_t>(models.size()), B);
  for (std::int64_t b = 0; b < B; b += 4999) {
    std::vector<std::int32_t> alone_labels;
    const Model alone = fit_alone(x, d, off[b], off[b + 1], k, p, nullptr, nullptr, &alone_labels);
    expect_same_fit(models[b], alone, "problem " + std::to_string(b));
    EXPECT_TRUE(std::equal(alone_labels.begin(), alone_labels.end(), labels.begin() + off[b]));
  }
  for (std::int32_t l : labels) ASSERT_TRUE(l == 0 || l == 1);
}

TEST(Batched, ThreadCountDoesNotChangeBitsAndProgressNamesProblems) {
  const std::int64_t d = 6;
  const auto s = testing::ragged_shape(9, 40, 300, 6, 21);
  const auto x = testing::blobs(s.offsets.back(), d, 5, 3.0, 1.0, 3);
  RaggedBatch rb;
  rb.x = MatrixView::of(x.data(), s.offsets.back(), d);
  rb.offsets = s.offsets;
  rb.n_clusters = s.k;
  Params p;
  p.n_threads = 1;
  std::vector<int> calls(s.k.size(), 0);
  p.progress = [&](int run, const IterationInfo& info) {
    EXPECT_GE(run, 0);
    EXPECT_LT(run, static_cast<int>(s.k.size()));
    EXPECT_EQ(info.iteration, calls[run] + 1);
    ++calls[run];
    return true;
  };
  const auto one = fit_batched(rb, p);
  for (std::size_t b = 0; b < one.size(); ++b) EXPECT_EQ(calls[b], one[b].n_iter);
  p.progress = nullptr;
  p.n_threads = 2;
  const auto two = fit_batched(rb, p);
  for (std::size_t b = 0; b < one.size(); ++b) expect_same_fit(two[b], one[b], "problem " + std::to_string(b));
  // A callback that stops: interrupted, naming the problem.
  p.progress = [](int run, const IterationInfo&) { return run != 4; };
  try {
    fit_batched(rb, p);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::interrupted);
    EXPECT_NE(std::string(e.what()).find("of problem 4"), std::string::npos) << e.what();
  }
}

/// A batched backend that keeps its updated centroids (the CUDA backend's path), over the CPU
/// one: update_centroids_kept runs the update into its own store and hands the new centroids
/// to the inner backend just before the next assign (unless set_centroids comes first), so
/// the inner backends see exactly the calls of the driver without the kept path.
class KeepingBackend final : public core::BatchedBackend {
 public:
  explicit KeepingBackend(std::unique_ptr<core::BatchedBackend> inner) : in_(std::move(inner)) {}
  const char* name() const override { return "keeping"; }
  void attach(const std::vector<core::ProblemData>& p, Metric m) override { in_->attach(p, m); }
  std::int64_t problems() const override { return in_->problems(); }
  std::int64_t rows(std::int64_t b) const override { return in_->rows(b); }
  std::int64_t cols() const override { return in_->cols(); }
  std::vector<core::FeatureMoments> feature_moments() override { return in_->feature_moments(); }
  core::Backend& problem(std::int64_t b) override { return in_->problem(b); }
  void set_centroids(const std::vector<std::int64_t>& active, const std::vector<const float*>& c,
                     const std::vector<std::int64_t>& k) override {
    pending_ = false;
    active_ = active;
    k_ = k;
    cur_.assign(active.size(), {});
    for (std::size_t a = 0; a < active.size(); ++a) cur_[a].assign(c[a], c[a] + k[a] * cols());
    in_->set_centroids(active, c, k);
  }
  void assign(const std::vector<std::int64_t>& which, bool labels_only, std::vector<core::AssignStats>& out) override {
    if (pending_) {
      std::vector<const float*> c(cur_.size());
      for (std::size_t a = 0; a < cur_.size(); ++a) c[a] = cur_[a].data();
      in_->set_centroids(active_, c, k_);
      pending_ = false;
    }
    in_->assign(which, labels_only, out);
  }
  void update_centroids(Metric m, const std::vector<const float*>& current, const std::vector<float*>& next,
                        const std::vector<double*>& weight, std::vector<double>& shift) override {
    in_->update_centroids(m, current, next, weight, shift);
  }
  bool update_centroids_kept(Metric m, const std::vector<double*>& weight, std::vector<double>& shift) override {
    ++kept_calls;
    std::vector<std::vector<float>> next(cur_.size());
    std::vector<const float*> current(cur_.size());
    std::vector<float*> nx(cur_.size());
    for (std::size_t a = 0; a < cur_.size(); ++a) {
      next[a].resize(cur_[a].size());
      current[a] = cur_[a].data();
      nx[a] = next[a].data();
    }
    in_->update_centroids(m, current, nx, weight, shift);
    cur_.swap(next);
    pending_ = true;
    return true;
  }
  void copy_centroids(const std::vector<float*>& out) override {
    ++copies;
    for (std::size_t a = 0; a < cur_.size(); ++a) std::copy(cur_[a].begin(), cur_[a].end(), out[a]);
  }
  void exact_inertia(std::vector<double>& out) override { in_->exact_inertia(out); }
  void cluster_weights(const std::vector<double*>& w) override { in_->cluster_weights(w); }
  void copy_labels(std::int64_t b, std::int32_t* out) override { in_->copy_labels(b, out); }
  int kept_calls = 0, copies = 0;

 private:
  std::unique_ptr<core::BatchedBackend> in_;
  std::vector<std::int64_t> active_, k_;
  std::vector<std::vector<float>> cur_;
  bool pending_ = false;
};

TEST(Batched, DriverWithKeptCentroidsGivesTheSameResults) {
  // The driver's kept path (centroids left in the backend; fetched when the active set
  // changes and at the end) against the plain path: the same results, bitwise.
  const std::int64_t d = 5;
  const auto s = testing::ragged_shape(11, 40, 300, 7, 13);
  const auto x = testing::blobs(s.offsets.back(), d, 6, 3.0, 1.0, 17);
  std::vector<core::ProblemData> data(s.k.size());
  std::vector<std::vector<float>> c0(s.k.size());
  for (std::size_t b = 0; b < s.k.size(); ++b) {
    data[b].x = MatrixView::of(x.data() + s.offsets[b] * d, s.offsets[b + 1] - s.offsets[b], d);
    c0[b].assign(x.begin() + s.offsets[b] * d, x.begin() + (s.offsets[b] + s.k[b]) * d);
  }
  Params p;
  p.max_iter = 60;
  const std::vector<double> tol(s.k.size(), 1e-3);
  auto plain = core::make_cpu_batched_backend(1);
  plain->attach(data, p.metric);
  const auto a = core::batched_lloyd(*plain, c0, s.k, p, tol);
  KeepingBackend keeping(core::make_cpu_batched_backend(1));
  keeping.attach(data, p.metric);
  const auto b = core::batched_lloyd(keeping, c0, s.k, p, tol);
  EXPECT_GT(keeping.kept_calls, 1);
  EXPECT_GT(keeping.copies, 1) << "the active set never changed: per-problem convergence is not exercised";
  int lo = 1 << 30, hi = 0;
  for (std::size_t q = 0; q < a.size(); ++q) {
    SCOPED_TRACE("problem " + std::to_string(q));
    EXPECT_TRUE(testing::same_bits(a[q].centroids.data(), b[q].centroids.data(), a[q].centroids.size() * 4));
    EXPECT_TRUE(testing::same_bits(&a[q].inertia, &b[q].inertia, 8));
    EXPECT_EQ(a[q].cluster_weight, b[q].cluster_weight);
    EXPECT_EQ(a[q].n_iter, b[q].n_iter);
    EXPECT_EQ(a[q].converged, b[q].converged);
    ASSERT_EQ(a[q].history.size(), b[q].history.size());
    for (std::size_t t = 0; t < a[q].history.size(); ++t) {
      EXPECT_EQ(a[q].history[t].n_changed, b[q].history[t].n_changed);
      EXPECT_TRUE(testing::same_bits(&a[q].history[t].shift, &b[q].history[t].shift, 8));
      EXPECT_TRUE(testing::same_bits(&a[q].history[t].inertia, &b[q].history[t].inertia, 8));
    }
    lo = std::min(lo, a[q].n_iter);
    hi = std::max(hi, a[q].n_iter);
  }
  EXPECT_LT(lo, hi);
}

void expect_error(const std::function<void()>& f, ErrorKind kind, const std::string& text) {
  try {
    f();
    ADD_FAILURE() << "no error; expected: " << text;
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), kind) << e.what();
    EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << "message: " << e.what() << "\nexpected: " << text;
  }
}

TEST(Batched, BadInputIsNamedByProblem) {
  const std::int64_t d = 3, n = 60;
  auto x = testing::uniform(n, d, 1);
  const std::vector<std::int64_t> off = {0, 20, 40, 60}, k = {2, 3, 4};
  Params p;
  auto run = [&](std::vector<std::int64_t> o, std::vector<std::int64_t> kk, const Params& pp,
                 const float* w = nullptr, const float* init = nullptr, std::int64_t cols = 3) {
    RaggedBatch rb;
    rb.x = MatrixView::of(x.data(), n, cols);
    rb.offsets = o;
    rb.n_clusters = kk;
    rb.sample_weight = w;
    rb.init_centroids = init;
    fit_batched(rb, pp);
  };
  expect_error([&] { run({0, 20, 20, 60}, k, p); }, ErrorKind::invalid_argument,
               "problem 1 is empty: 0 samples (rows)");
  expect_error([&] { run(off, {2, 30, 4}, p); }, ErrorKind::invalid_argument,
               "problem 1: n_samples=20 should be >= n_clusters=30");
  expect_error([&] { run({0, 30, 20, 60}, k, p); }, ErrorKind::invalid_argument, "offsets must be ascending");
  expect_error([&] { run({0, 20, 40, 59}, k, p); }, ErrorKind::invalid_argument, "offsets[B] = 59 must equal");
  expect_error([&] { run({5, 20, 40, 60}, k, p); }, ErrorKind::invalid_argument, "offsets[0] must be 0");
  expect_error([&] { run(off, {2, 3}, p); }, ErrorKind::invalid_argument, "n_clusters must hold B = 3 entries");
  expect_error([&] { run(off, {2, -1, 3}, p); }, ErrorKind::invalid_argument, "problem 1: n_clusters must be >= 1");
  {
    Params q = p;
    q.n_init = 2;
    expect_error([&] { run(off, k, q); }, ErrorKind::invalid_argument, "n_init must be 1");
    q = p;
    q.checkpoint_path = "/tmp/x.ckpt";
    expect_error([&] { run(off, k, q); }, ErrorKind::invalid_argument, "checkpoint_path");
    q = p;
    q.init = InitMethod::given;
    expect_error([&] { run(off, k, q); }, ErrorKind::invalid_argument, "problem 0: init 'given' needs init_centroids");
  }
  // NaN: named by problem and row within it.
  x[(45 * d) + 2] = std::numeric_limits<float>::quiet_NaN();
  expect_error([&] { run(off, k, p); }, ErrorKind::invalid_argument,
               "problem 2: input contains NaN or infinity: first at row 5, column 2");
  x[(45 * d) + 2] = 0.5f;
  std::vector<float> w(n, 1.0f);
  for (std::int64_t i = 20; i < 40; ++i) w[i] = 0.0f;
  expect_error([&] { run(off, k, p, w.data()); }, ErrorKind::invalid_argument,
               "problem 1: sample_weight sums to zero");
  w[25] = -1.0f;
  expect_error([&] { run(off, k, p, w.data()); }, ErrorKind::invalid_argument,
               "problem 1: sample_weight must be finite and >= 0: row 5");
  // Mismatched D and dtypes (list form).
  std::vector<double> xd(40 * 3, 0.5);
  for (std::size_t i = 0; i < xd.size(); ++i) xd[i] = double(i % 17);
  std::vector<BatchedProblem> ps(2);
  ps[0].x = MatrixView::of(x.data(), 20, 3);
  ps[1].x = MatrixView::of(x.data(), 20, 2);
  expect_error([&] { fit_batched(ps, p); }, ErrorKind::invalid_argument,
               "problem 1 has 2 features but problem 0 has 3");
  ps[1].x = MatrixView::of(xd.data(), 40, 3);
  expect_error([&] { fit_batched(ps, p); }, ErrorKind::invalid_argument, "problem 1 has dtype float64");
  expect_error([&] { fit_batched(std::span<const BatchedProblem>(), p); }, ErrorKind::invalid_argument,
               "no problems given");
  std::vector<float> bad_init(9 * 3, 1.0f);
  bad_init[3 * 3 + 1] = std::numeric_limits<float>::infinity();  // stacked row 3 = problem 1, its row 1
  {
    Params q = p;
    q.init = InitMethod::given;
    expect_error([&] { run(off, k, q, nullptr, bad_init.data()); }, ErrorKind::invalid_argument,
                 "problem 1: init centroids contain NaN or infinity: first at row 1");
  }
}

}  // namespace
}  // namespace flashkm
