#include "support/reference.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>

namespace flashkm::testing {

std::vector<float> blobs(std::int64_t n, std::int64_t d, std::int64_t centers, double spread, double sigma,
                         std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> g(0.0, 1.0);
  std::vector<double> mu(static_cast<std::size_t>(centers * d));
  for (auto& v : mu) v = spread * g(rng);
  std::vector<float> x(static_cast<std::size_t>(n * d));
  for (std::int64_t i = 0; i < n; ++i) {
    const std::int64_t c = static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(centers));
    for (std::int64_t j = 0; j < d; ++j) x[i * d + j] = static_cast<float>(mu[c * d + j] + sigma * g(rng));
  }
  return x;
}

std::vector<float> separated_blobs(std::int64_t n, std::int64_t d, std::int64_t centers, double sigma,
                                   std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> g(0.0, 1.0);
  const double min_gap = 20.0 * sigma * std::sqrt(double(d));  // noise norm ~ sigma sqrt(d)
  const double side = 4.0 * min_gap * std::pow(double(centers), 1.0 / double(d)) + min_gap;
  std::uniform_real_distribution<double> u(-side, side);
  std::vector<double> mu;
  while (static_cast<std::int64_t>(mu.size()) < centers * d) {
    std::vector<double> c(static_cast<std::size_t>(d));
    for (auto& v : c) v = u(rng);
    bool ok = true;
    for (std::size_t q = 0; ok && q < mu.size(); q += static_cast<std::size_t>(d)) {
      double dist2 = 0;
      for (std::int64_t j = 0; j < d; ++j) dist2 += (mu[q + j] - c[j]) * (mu[q + j] - c[j]);
      ok = dist2 >= min_gap * min_gap;
    }
    if (ok) mu.insert(mu.end(), c.begin(), c.end());
  }
  std::vector<float> x(static_cast<std::size_t>(n * d));
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = 0; j < d; ++j) x[i * d + j] = static_cast<float>(mu[(i % centers) * d + j] + sigma * g(rng));
  return x;
}

std::vector<float> uniform(std::int64_t n, std::int64_t d, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  std::vector<float> x(static_cast<std::size_t>(n * d));
  for (auto& v : x) v = u(rng);
  return x;
}

static double dist_f64(const float* x, const double* c, std::int64_t d, Metric metric) {
  double acc = 0, dot = 0, nx = 0;
  for (std::int64_t j = 0; j < d; ++j) {
    const double diff = double(x[j]) - c[j];
    acc += diff * diff;
    dot += double(x[j]) * c[j];
    nx += double(x[j]) * x[j];
  }
  if (metric == Metric::l2) return acc;
  if (metric == Metric::cosine) return 1.0 - dot / std::sqrt(nx);
  return -dot;
}

NearestRef nearest_f64(const std::vector<float>& x, const std::vector<float>& c, std::int64_t d, Metric metric) {
  const std::int64_t n = static_cast<std::int64_t>(x.size()) / d, k = static_cast<std::int64_t>(c.size()) / d;
  std::vector<double> cd(c.begin(), c.end());
  NearestRef r;
  r.label.resize(n);
  r.best.resize(n);
  r.second.resize(n);
  for (std::int64_t i = 0; i < n; ++i) {
    double b = std::numeric_limits<double>::infinity(), s = b;
    std::int32_t bl = 0;
    for (std::int64_t j = 0; j < k; ++j) {
      const double v = dist_f64(&x[i * d], &cd[j * d], d, metric);
      if (v < b) { s = b; b = v; bl = static_cast<std::int32_t>(j); }
      else if (v < s) s = v;
    }
    r.label[i] = bl;
    r.best[i] = b;
    r.second[i] = s;
  }
  return r;
}

double tie_tolerance(const std::vector<float>& x, const std::vector<float>& c, std::int64_t d, std::int64_t i) {
  const std::int64_t k = static_cast<std::int64_t>(c.size()) / d;
  double nx = 0, nc = 0;
  for (std::int64_t j = 0; j < d; ++j) nx += double(x[i * d + j]) * x[i * d + j];
  for (std::int64_t t = 0; t < k * d; ++t) nc = std::max(nc, double(c[t]) * c[t] * d);
  // fp32 dot products over d terms: error <= ~d * 2^-24 * |x||c|; plus rounding of the norms.
  const double eps = std::ldexp(1.0, -24);
  return 4.0 * (double(d) + 4.0) * eps * (nx + nc + 2.0 * std::sqrt(nx * nc));
}

void expect_argmins_outside_near_ties(const std::vector<float>& x, const std::vector<float>& c, std::int64_t d,
                                      const std::vector<std::int32_t>& labels) {
  const auto ref = nearest_f64(x, c, d);
  const auto n = static_cast<std::int64_t>(labels.size());
  std::int64_t differ = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    if (labels[i] == ref.label[i]) continue;
    ++differ;
    EXPECT_LE(ref.second[i] - ref.best[i], 2 * tie_tolerance(x, c, d, i)) << "row " << i << " differs outside a near-tie";
  }
  EXPECT_LT(differ, n / 100);
}

Model fit_given(const std::vector<float>& x, std::int64_t d, const std::vector<float>& c0, int iters, Params base,
                std::vector<std::int32_t>* labels, const float* weights) {
  base.n_clusters = static_cast<std::int64_t>(c0.size()) / d;
  base.init = InitMethod::given;
  base.max_iter = iters;
  base.tol = 0;
  FitArgs a;
  a.init_centroids = c0.data();
  a.sample_weight = weights;
  const std::int64_t n = static_cast<std::int64_t>(x.size()) / d;
  if (labels) {
    labels->assign(static_cast<std::size_t>(n), -1);
    a.labels = labels->data();
  }
  return fit(MatrixView::of(x.data(), n, d), base, a);
}

LloydRef lloyd_f64(const std::vector<float>& x, const std::vector<float>& c0, std::int64_t d, int iters,
                   const std::vector<float>* weights) {
  const std::int64_t n = static_cast<std::int64_t>(x.size()) / d, k = static_cast<std::int64_t>(c0.size()) / d;
  LloydRef r;
  r.centroids.assign(c0.begin(), c0.end());
  std::vector<double> best(static_cast<std::size_t>(n));
  auto weight = [&](std::int64_t i) { return weights ? double((*weights)[i]) : 1.0; };
  auto assign = [&]() {
    r.labels.assign(n, 0);
    r.inertia = 0;
    for (std::int64_t i = 0; i < n; ++i) {
      double b = std::numeric_limits<double>::infinity();
      for (std::int64_t j = 0; j < k; ++j) {
        const double v = dist_f64(&x[i * d], &r.centroids[j * d], d, Metric::l2);
        if (v < b) { b = v; r.labels[i] = static_cast<std::int32_t>(j); }
      }
      best[i] = b;
      r.inertia += weight(i) * b;
    }
  };
  for (int it = 0; it < iters; ++it) {
    assign();
    std::vector<double> sums(static_cast<std::size_t>(k * d), 0.0), w(static_cast<std::size_t>(k), 0.0);
    for (std::int64_t i = 0; i < n; ++i) {
      const double wi = weight(i);
      for (std::int64_t j = 0; j < d; ++j) sums[r.labels[i] * d + j] += wi * x[i * d + j];
      w[r.labels[i]] += wi;
    }
    // Empty clusters: the rows farthest from their centroid (largest first, ties to the lower
    // index, positive weight only) move into them.
    std::vector<std::int64_t> order;
    for (std::int64_t i = 0; i < n; ++i)
      if (weight(i) > 0) order.push_back(i);
    std::stable_sort(order.begin(), order.end(), [&](std::int64_t a, std::int64_t b) { return best[a] > best[b]; });
    std::size_t next = 0;
    for (std::int64_t j = 0; j < k; ++j) {
      if (w[j] > 0 || next >= order.size()) continue;
      const std::int64_t i = order[next++];
      const std::int64_t from = r.labels[i];
      for (std::int64_t t = 0; t < d; ++t) {
        sums[from * d + t] -= weight(i) * x[i * d + t];
        sums[j * d + t] = weight(i) * x[i * d + t];
      }
      w[from] -= weight(i);
      w[j] = weight(i);
    }
    for (std::int64_t j = 0; j < k; ++j)
      if (w[j] > 0)
        for (std::int64_t t = 0; t < d; ++t) r.centroids[j * d + t] = sums[j * d + t] / w[j];
  }
  assign();
  return r;
}

}  // namespace flashkm::testing
