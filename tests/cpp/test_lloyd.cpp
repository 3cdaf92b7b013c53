// The whole fit against a float64 Lloyd reference, plus the properties every fit must have.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <numeric>
#include <tuple>

#include "flashkm/flashkm.hpp"
#include "support/reference.hpp"

namespace flashkm {
namespace {

// First K rows of a deterministic shuffle: the same init scikit-learn tests use.
std::vector<float> first_rows(const std::vector<float>& x, std::int64_t d, std::int64_t k, std::int64_t stride = 1) {
  std::vector<float> c;
  for (std::int64_t j = 0; j < k; ++j) c.insert(c.end(), x.begin() + j * stride * d, x.begin() + (j * stride + 1) * d);
  return c;
}

class BlobsVsReference : public ::testing::TestWithParam<std::tuple<std::int64_t, std::int64_t>> {};

TEST_P(BlobsVsReference, MatchesFloat64Lloyd) {
  const auto [d, k] = GetParam();
  const std::int64_t n = 1237;
  // Well separated blobs, one init row in each: no near-ties, so every label must equal
  // the reference (a cluster splitting a blob would put its boundary among the rows).
  const auto x = testing::separated_blobs(n, d, k, 1.0, 100 + d * 7 + k);
  const auto c0 = first_rows(x, d, k);
  const int iters = 5;
  std::vector<std::int32_t> labels;
  const Model m = testing::fit_given(x, d, c0, iters, {}, &labels);
  const auto ref = testing::lloyd_f64(x, c0, d, m.n_iter);
  ASSERT_EQ(m.n_clusters, k);
  std::int64_t mismatched = 0;
  for (std::int64_t i = 0; i < n; ++i) mismatched += labels[i] != ref.labels[i];
  EXPECT_EQ(mismatched, 0);
  double max_rel = 0;
  for (std::size_t t = 0; t < ref.centroids.size(); ++t)
    max_rel = std::max(max_rel, std::abs(m.centroids[t] - ref.centroids[t]) / (std::abs(ref.centroids[t]) + 1.0));
  EXPECT_LT(max_rel, 1e-5);
  EXPECT_NEAR(m.inertia, ref.inertia, 1e-6 * ref.inertia + 1e-9);
}

INSTANTIATE_TEST_SUITE_P(Shapes, BlobsVsReference,
                         ::testing::Combine(::testing::Values(1, 3, 17, 128, 1000), ::testing::Values(1, 2, 7, 256)));

TEST(Lloyd, KEqualsN) {
  const std::int64_t n = 97, d = 5;
  const auto x = testing::uniform(n, d, 1);
  std::vector<std::int32_t> labels;
  const Model m = testing::fit_given(x, d, x, 3, {}, &labels);
  EXPECT_NEAR(m.inertia, 0.0, 1e-9);
  for (std::int64_t i = 0; i < n; ++i) EXPECT_EQ(labels[i], i);
}

TEST(Lloyd, UniformNoiseLabelsAreArgminsAndCentroidsAreMeans) {
  // Uniform noise has many near-ties: labels may differ from float64 only there.
  const std::int64_t n = 3001, d = 17, k = 64;
  const auto x = testing::uniform(n, d, 2);
  const auto c0 = first_rows(x, d, k, 7);
  std::vector<std::int32_t> labels;
  const Model m = testing::fit_given(x, d, c0, 4, {}, &labels);
  testing::expect_argmins_outside_near_ties(x, m.centroids, d, labels);
  // Final inertia is evaluated exactly for the returned labels.
  double inertia = 0;
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = 0; j < d; ++j) {
      const double diff = double(x[i * d + j]) - m.centroids[labels[i] * d + j];
      inertia += diff * diff;
    }
  EXPECT_NEAR(m.inertia, inertia, 1e-9 * inertia);
  // Centroids after one more iteration are the float64 means of these labels.
  std::vector<std::int32_t> l5;
  const Model m5 = testing::fit_given(x, d, c0, 5, {}, &l5);
  if (m5.n_iter == 5) {
    std::vector<double> sums(k * d, 0.0), cnt(k, 0.0);
    for (std::int64_t i = 0; i < n; ++i) {
      cnt[labels[i]] += 1;
      for (std::int64_t j = 0; j < d; ++j) sums[labels[i] * d + j] += x[i * d + j];
    }
    for (std::int64_t c = 0; c < k; ++c)
      if (cnt[c] > 0)
        for (std::int64_t j = 0; j < d; ++j)
          EXPECT_NEAR(m5.centroids[c * d + j], sums[c * d + j] / cnt[c], 1e-6) << "cluster " << c;
  }
}

TEST(Lloyd, InertiaNeverIncreases) {
  const std::int64_t n = 5000, d = 8, k = 20;
  const auto x = testing::blobs(n, d, 12, 3.0, 1.0, 3);
  const Model m = testing::fit_given(x, d, first_rows(x, d, k, 11), 50);
  for (std::size_t t = 1; t < m.history.size(); ++t)
    EXPECT_LE(m.history[t].inertia, m.history[t - 1].inertia * (1 + 1e-9)) << "iteration " << t + 1;
  EXPECT_LE(m.inertia, m.history.back().inertia * (1 + 1e-9));
}

TEST(Lloyd, DeterministicAndIndependentOfThreadCount) {
  const std::int64_t n = 20000, d = 24, k = 50;
  const auto x = testing::uniform(n, d, 4);
  Params p;
  p.n_clusters = k;
  p.seed = 42;
  p.max_iter = 20;
  std::vector<std::int32_t> l1(n), l2(n), l3(n);
  FitArgs a;
  a.labels = l1.data();
  p.n_threads = 1;
  const Model m1 = fit(MatrixView::of(x.data(), n, d), p, a);
  a.labels = l2.data();
  p.n_threads = 2;
  const Model m2 = fit(MatrixView::of(x.data(), n, d), p, a);
  a.labels = l3.data();
  const Model m3 = fit(MatrixView::of(x.data(), n, d), p, a);
  EXPECT_EQ(m1.centroids, m2.centroids);
  EXPECT_EQ(m2.centroids, m3.centroids);
  EXPECT_EQ(m1.inertia, m2.inertia);
  EXPECT_EQ(m1.n_iter, m2.n_iter);
  EXPECT_EQ(l1, l2);
  EXPECT_EQ(l2, l3);
}

TEST(Lloyd, IntegerWeightsEqualRepeatedRows) {
  const std::int64_t n = 400, d = 6, k = 5;
  const auto x = testing::blobs(n, d, k, 10.0, 1.0, 5);
  std::vector<float> w(n), repeated;
  for (std::int64_t i = 0; i < n; ++i) {
    w[i] = static_cast<float>(i % 3);  // 0, 1 or 2 copies
    for (int c = 0; c < static_cast<int>(w[i]); ++c) repeated.insert(repeated.end(), x.begin() + i * d, x.begin() + (i + 1) * d);
  }
  const auto c0 = first_rows(x, d, k, 13);
  const Model weighted = testing::fit_given(x, d, c0, 10, {}, nullptr, w.data());
  const Model copies = testing::fit_given(repeated, d, c0, 10);
  EXPECT_EQ(weighted.n_iter, copies.n_iter);
  for (std::size_t t = 0; t < copies.centroids.size(); ++t) EXPECT_NEAR(weighted.centroids[t], copies.centroids[t], 1e-5);
  EXPECT_NEAR(weighted.inertia, copies.inertia, 1e-6 * copies.inertia);
  for (std::int64_t c = 0; c < k; ++c) EXPECT_DOUBLE_EQ(weighted.cluster_weight[c], copies.cluster_weight[c]);
}

TEST(Lloyd, EmptyClusterIsReseededFromTheFarthestRow) {
  // Two tight groups and one far outlier; a third centroid starts far from everything.
  const std::int64_t d = 2;
  std::vector<float> x = {0, 0, 0.1f, 0, 0, 0.1f, 10, 10, 10.1f, 10, 10, 10.1f, 30, 0};
  const std::int64_t n = static_cast<std::int64_t>(x.size()) / d;
  const std::vector<float> c0 = {0, 0, 10, 10, 1000, 1000};
  std::vector<std::int32_t> labels;
  const Model m = testing::fit_given(x, d, c0, 10, {}, &labels);
  for (float v : m.centroids) EXPECT_TRUE(std::isfinite(v));
  // The empty cluster takes the outlier (farthest from its centroid) in the first iteration.
  EXPECT_FLOAT_EQ(m.centroids[4], 30.0f);
  EXPECT_FLOAT_EQ(m.centroids[5], 0.0f);
  EXPECT_EQ(labels[n - 1], 2);
  for (double w : m.cluster_weight) EXPECT_GT(w, 0);
}

TEST(Lloyd, StopsOnTolerance) {
  const std::int64_t n = 3000, d = 4, k = 3;
  const auto x = testing::blobs(n, d, k, 20.0, 1.0, 6);
  Params p;
  p.n_clusters = k;
  p.tol = 1e-1;
  p.max_iter = 300;
  const Model m = fit(MatrixView::of(x.data(), n, d), p);
  EXPECT_TRUE(m.converged);
  EXPECT_LT(m.n_iter, 300);
}

TEST(Lloyd, NInitKeepsTheBestRun) {
  const std::int64_t n = 2000, d = 2, k = 9;
  const auto x = testing::uniform(n, d, 7);
  Params p;
  p.n_clusters = k;
  p.init = InitMethod::random;
  p.seed = 3;
  double best = 1e300;
  for (int r = 0; r < 4; ++r) {
    p.n_init = 1;
    // Runs of n_init=4 use derived seeds; n_init=4 must be at least as good as its first run.
    (void)r;
  }
  p.n_init = 1;
  best = fit(MatrixView::of(x.data(), n, d), p).inertia;
  p.n_init = 4;
  const Model m = fit(MatrixView::of(x.data(), n, d), p);
  EXPECT_LE(m.inertia, best);
}

TEST(Lloyd, CosineCentroidsAreUnitVectors) {
  const std::int64_t n = 1000, d = 16, k = 6;
  const auto x = testing::blobs(n, d, k, 5.0, 1.0, 8);
  Params p;
  p.n_clusters = k;
  p.metric = Metric::cosine;
  p.seed = 1;
  std::vector<std::int32_t> labels(n);
  FitArgs a;
  a.labels = labels.data();
  const Model m = fit(MatrixView::of(x.data(), n, d), p, a);
  for (std::int64_t c = 0; c < k; ++c) {
    double norm2 = 0;
    for (std::int64_t j = 0; j < d; ++j) norm2 += double(m.centroids[c * d + j]) * m.centroids[c * d + j];
    EXPECT_NEAR(norm2, 1.0, 1e-5);
  }
  const auto ref = testing::nearest_f64(x, m.centroids, d, Metric::cosine);
  for (std::int64_t i = 0; i < n; ++i)
    if (labels[i] != ref.label[i]) EXPECT_LT(ref.second[i] - ref.best[i], 1e-5) << "row " << i;
  EXPECT_GE(m.inertia, 0);
}

TEST(Lloyd, InnerProductLabelsMaximiseTheDot) {
  const std::int64_t n = 500, d = 8, k = 4;
  const auto x = testing::uniform(n, d, 9);
  Params p;
  p.n_clusters = k;
  p.metric = Metric::inner_product;
  p.max_iter = 3;
  std::vector<std::int32_t> labels(n);
  FitArgs a;
  a.labels = labels.data();
  const Model m = fit(MatrixView::of(x.data(), n, d), p, a);
  const auto ref = testing::nearest_f64(x, m.centroids, d, Metric::inner_product);
  for (std::int64_t i = 0; i < n; ++i)
    if (labels[i] != ref.label[i]) EXPECT_LT(ref.second[i] - ref.best[i], 1e-5) << "row " << i;
}

TEST(Lloyd, HalfBf16AndDoubleInputsMatchTheirFloatConversion) {
  const std::int64_t n = 700, d = 9, k = 5;
  const auto xf = testing::blobs(n, d, k, 8.0, 1.0, 10);
  // Round the data to bf16 first so that every dtype holds exactly the same values.
  std::vector<std::uint16_t> bf(n * d), half(n * d);
  std::vector<float> rounded(n * d);
  std::vector<double> xd(n * d);
  for (std::int64_t t = 0; t < n * d; ++t) {
    std::uint32_t bits;
    std::memcpy(&bits, &xf[t], 4);
    bf[t] = static_cast<std::uint16_t>(bits >> 16);
    const std::uint32_t back = std::uint32_t{bf[t]} << 16;
    std::memcpy(&rounded[t], &back, 4);
    xd[t] = rounded[t];
  }
  // bf16 values with small exponents are exactly representable in fp16 when in range.
  for (std::int64_t t = 0; t < n * d; ++t) half[t] = 0;
  Params p;
  p.n_clusters = k;
  p.seed = 5;
  const Model mf = fit(MatrixView::of(rounded.data(), n, d), p);
  const Model mb = fit(MatrixView::raw(bf.data(), DType::bf16, n, d), p);
  const Model md = fit(MatrixView::of(xd.data(), n, d), p);
  EXPECT_EQ(mf.centroids, mb.centroids);
  EXPECT_EQ(mf.n_iter, md.n_iter);
  for (std::size_t t = 0; t < mf.centroids.size(); ++t) EXPECT_NEAR(mf.centroids[t], md.centroids[t], 1e-5);
}

TEST(Lloyd, StridedViewEqualsContiguous) {
  const std::int64_t n = 300, d = 7, k = 4, ld = 11;
  const auto x = testing::uniform(n, d, 12);
  std::vector<float> wide(n * ld, -99.0f);
  for (std::int64_t i = 0; i < n; ++i) std::copy(x.begin() + i * d, x.begin() + (i + 1) * d, wide.begin() + i * ld);
  Params p;
  p.n_clusters = k;
  p.seed = 2;
  EXPECT_EQ(fit(MatrixView::of(x.data(), n, d), p).centroids, fit(MatrixView::of(wide.data(), n, d, ld), p).centroids);
}

TEST(Lloyd, ProgressCallbackSeesEveryIterationAndCanStop) {
  const std::int64_t n = 2000, d = 3, k = 5;
  const auto x = testing::uniform(n, d, 13);
  Params p;
  p.n_clusters = k;
  p.tol = 0;
  p.max_iter = 6;
  int calls = 0;
  p.progress = [&](int, const IterationInfo& info) {
    EXPECT_EQ(info.iteration, ++calls);
    return true;
  };
  const Model m = fit(MatrixView::of(x.data(), n, d), p);
  EXPECT_EQ(calls, m.n_iter);
  p.progress = [](int, const IterationInfo& info) { return info.iteration < 2; };
  try {
    fit(MatrixView::of(x.data(), n, d), p);
    FAIL() << "expected an interruption";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::interrupted);
  }
}

}  // namespace
}  // namespace flashkm

namespace flashkm {
namespace {

TEST(Transform, AccurateFarFromTheOrigin) {
  // Rows and centroids far from the origin: the expanded form alone would lose digits.
  const std::int64_t n = 300, d = 16, k = 5;
  auto x = testing::uniform(n, d, 51);
  for (auto& v : x) v += 1000.0f;
  Params p;
  p.n_clusters = k;
  const Model m = fit(MatrixView::of(x.data(), n, d), p);
  std::vector<float> t(n * k);
  transform(m, MatrixView::of(x.data(), n, d), t.data());
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = 0; j < k; ++j) {
      double s = 0;
      for (std::int64_t q = 0; q < d; ++q) {
        const double diff = double(x[i * d + q]) - m.centroids[j * d + q];
        s += diff * diff;
      }
      EXPECT_NEAR(t[i * k + j], std::sqrt(s), 1e-4 * std::sqrt(s) + 1e-6) << i << "," << j;
    }
}

}  // namespace
}  // namespace flashkm

#include "core/lloyd.hpp"

namespace flashkm {
namespace {

TEST(Lloyd, BoundsSkipOnlyRowsWhoseLabelCannotChange) {
  // The same iterations with and without the Hamerly test: identical labels and centroids.
  for (const auto& [n, d, k, seed] : {std::tuple{20000, 16, 40, 1}, std::tuple{5000, 3, 200, 2}}) {
    const auto x = testing::uniform(n, d, 70 + seed);  // near-ties everywhere
    const std::vector<float> c0(x.begin(), x.begin() + std::int64_t{k} * d);
    Params p;
    p.n_clusters = k;
    p.max_iter = 30;
    std::vector<std::int32_t> labels[2];
    std::vector<float> centroids[2];
    double inertia[2];
    for (int use = 0; use < 2; ++use) {
      auto be = core::make_cpu_backend(0, use == 1);
      be->attach(MatrixView::of(x.data(), n, d), nullptr, Metric::l2);
      const auto r = core::lloyd(*be, c0, k, p, 0.0, 0);
      labels[use].resize(n);
      be->copy_labels(labels[use].data());
      centroids[use] = r.centroids;
      inertia[use] = r.inertia;
    }
    EXPECT_EQ(labels[0], labels[1]);
    EXPECT_EQ(centroids[0], centroids[1]);
    EXPECT_EQ(inertia[0], inertia[1]);
  }
}

TEST(Lloyd, DriftedSetKeepsRowsOnlyWhereTheLabelCannotChange) {
  // Three centroids jump far while the others barely move: Hamerly's test (largest drift of
  // all) can keep no row, the drifted-set test (choose_drifted_set) keeps most, and labels,
  // label changes are those of the full computation. K = 128 so that the set
  // exists with every ISA's panel width (K >= 4 nr). Labels are compared bitwise; distances
  // within the expanded form's rounding (kept rows get theirs from differences).
  const std::int64_t n = 30011, d = 24, k = 128;
  const auto x = testing::blobs(n, d, k, 6.0, 1.0, 12);
  std::vector<float> c0(x.begin(), x.begin() + k * d), c1 = c0;
  for (std::int64_t j = 0; j < k; ++j)
    for (std::int64_t t = 0; t < d; ++t) c1[j * d + t] += 1e-3f * float((j * 7 + t * 3) % 5 - 2);
  for (std::int64_t j : {5, 60, 117})
    for (std::int64_t t = 0; t < d; ++t) c1[j * d + t] += 40.0f;
  std::vector<std::int32_t> labels[2];
  std::vector<float> dist[2];
  core::AssignStats st[2];
  core::BoundsKeptRows kept;
  for (int use = 0; use < 2; ++use) {
    auto be = core::make_cpu_backend(2, use == 1);
    be->attach(MatrixView::of(x.data(), n, d), nullptr, Metric::l2);
    be->set_centroids(c0.data(), k);
    be->assign();
    be->set_centroids(c1.data(), k);
    st[use] = be->assign();
    labels[use].resize(n);
    dist[use].resize(n);
    be->copy_labels(labels[use].data());
    be->copy_distances(dist[use].data());
    if (use == 1) kept = core::cpu_bounds_kept_rows(*be);
  }
  EXPECT_EQ(labels[0], labels[1]);
  EXPECT_EQ(st[0].n_changed, st[1].n_changed);
  EXPECT_GT(st[1].n_changed, 0);  // the jumped centroids' rows moved: they were computed
  // A kept row's distance is recomputed from differences in fp64 (more exact than the full
  // computation's expanded form, whose rounding bound is ~4 (d + 4) 2^-24 (|x|^2 + |c|^2)).
  for (std::int64_t i = 0; i < n; ++i) {
    double norm2 = 0;
    for (std::int64_t t = 0; t < d; ++t) norm2 += double(x[i * d + t]) * x[i * d + t];
    ASSERT_NEAR(dist[1][i], dist[0][i], 4.0 * (d + 4) * 0x1p-24 * 3.0 * (norm2 + 1e4)) << i;
  }
  EXPECT_EQ(kept.hamerly, 0);
  EXPECT_GT(kept.drifted, n / 2) << "the drifted-set test kept " << kept.drifted << " of " << n << " rows";
}

TEST(Lloyd, AssignLabelsIsAssignWithoutTheUpdate) {
  // assign_labels() skips the fused per-stripe sums; labels, distances and statistics are the
  // same bits as assign()'s, and an accumulate() after it still gives the sums (computed by
  // itself then, in its own fixed order).
  const std::int64_t n = 30011, d = 24, k = 37;
  const auto x = testing::blobs(n, d, k, 4.0, 1.0, 9);
  const std::vector<float> c(x.begin(), x.begin() + k * d);
  std::vector<std::int32_t> labels[2];
  std::vector<float> dist[2];
  std::vector<double> sums[2], weight[2];
  core::AssignStats st[2];
  for (int labels_only = 0; labels_only < 2; ++labels_only) {
    auto be = core::make_cpu_backend(2);
    be->attach(MatrixView::of(x.data(), n, d), nullptr, Metric::l2);
    be->set_centroids(c.data(), k);
    st[labels_only] = labels_only ? be->assign_labels() : be->assign();
    labels[labels_only].resize(n);
    dist[labels_only].resize(n);
    be->copy_labels(labels[labels_only].data());
    be->copy_distances(dist[labels_only].data());
    sums[labels_only].resize(k * d);
    weight[labels_only].resize(k);
    be->accumulate(sums[labels_only].data(), weight[labels_only].data());
  }
  EXPECT_EQ(labels[0], labels[1]);
  EXPECT_EQ(dist[0], dist[1]);
  EXPECT_EQ(st[0].inertia, st[1].inertia);
  EXPECT_EQ(st[0].n_changed, st[1].n_changed);
  EXPECT_EQ(weight[0], weight[1]);
  for (std::int64_t t = 0; t < k * d; ++t)
    ASSERT_NEAR(sums[1][t], sums[0][t], 1e-12 * std::max(1.0, std::abs(sums[0][t]))) << t;
}

}  // namespace
}  // namespace flashkm
