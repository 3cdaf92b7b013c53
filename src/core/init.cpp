#include "core/init.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <queue>

#include "core/lloyd.hpp"
#include "core/random.hpp"
#include "flashkm/error.hpp"

namespace flashkm::core {
namespace {

std::vector<float> rows_of(Backend& backend, const std::vector<std::int64_t>& idx) {
  std::vector<float> out(idx.size() * static_cast<std::size_t>(backend.cols()));
  backend.gather_rows(idx.data(), static_cast<std::int64_t>(idx.size()), out.data(), nullptr, nullptr);
  return out;
}

/// K distinct rows, each drawn with probability proportional to its weight (without
/// replacement): Efraimidis-Spirakis keys u^(1/w), the K largest win. O(N log K).
std::vector<float> random_rows(Backend& backend, std::int64_t k, std::uint64_t seed) {
  const std::int64_t n = backend.rows();
  std::vector<float> w(static_cast<std::size_t>(n));
  backend.copy_weights(w.data());
  using Entry = std::pair<double, std::int64_t>;  // (log key, row); min-heap of the K best
  std::priority_queue<Entry, std::vector<Entry>, std::greater<>> heap;
  for (std::int64_t i = 0; i < n; ++i) {
    if (!(w[i] > 0)) continue;
    const double u = counter_uniform(seed, 0x72616e64, static_cast<std::uint64_t>(i));
    const double key = std::log(std::max(u, 1e-300)) / w[i];  // log(u^(1/w)), monotone in the key
    if (static_cast<std::int64_t>(heap.size()) < k) heap.emplace(key, i);
    else if (key > heap.top().first) { heap.pop(); heap.emplace(key, i); }
  }
  FLASHKM_CHECK(static_cast<std::int64_t>(heap.size()) == k, invalid_argument, "init 'random' needs at least K = ", k,
                " rows of positive weight, found ", heap.size());
  std::vector<std::int64_t> idx;
  while (!heap.empty()) { idx.push_back(heap.top().second); heap.pop(); }
  std::sort(idx.begin(), idx.end());
  // Order of the chosen rows: by their own random draw, so the centroid order is random too.
  Rng rng(seed);
  for (std::size_t i = idx.size(); i > 1; --i) std::swap(idx[i - 1], idx[rng.below(i)]);
  return rows_of(backend, idx);
}

/// k-means|| (Bahmani et al. 2012): `rounds` rounds of independent oversampling with
/// expected `oversampling * K` picks each, then the weighted candidates are reduced to K
/// by k-means++ and a few Lloyd iterations on the candidate set (CPU; it is small).
std::vector<float> kmeans_parallel(Backend& backend, const Params& p, std::uint64_t seed) {
  const std::int64_t k = p.n_clusters, d = backend.cols();
  Rng rng(seed);
  double pot = backend.mindist_fill(1.0f);
  std::vector<std::int64_t> chosen = backend.sample_by_mindist({rng.uniform() * pot});
  backend.mindist_fill(std::numeric_limits<float>::infinity());
  std::vector<float> candidates = rows_of(backend, chosen);
  pot = backend.mindist_update(candidates.data(), 1);
  const double l = p.oversampling * double(k);
  for (int round = 1; round <= p.parallel_rounds && pot > 0; ++round) {
    std::vector<std::int64_t> picked = backend.sample_bernoulli(l / pot, seed, static_cast<std::uint64_t>(round));
    if (picked.empty()) continue;
    std::vector<float> rows = rows_of(backend, picked);
    candidates.insert(candidates.end(), rows.begin(), rows.end());
    pot = backend.mindist_update(rows.data(), static_cast<std::int64_t>(picked.size()));
  }
  // Too few candidates (small N or a tiny potential): top up by D^2 sampling.
  while (static_cast<std::int64_t>(candidates.size()) / d < k) {
    std::vector<std::int64_t> one = backend.sample_by_mindist({rng.uniform() * pot});
    std::vector<float> row = rows_of(backend, one);
    candidates.insert(candidates.end(), row.begin(), row.end());
    pot = backend.mindist_update(row.data(), 1);
  }
  const std::int64_t m = static_cast<std::int64_t>(candidates.size()) / d;
  std::vector<double> wd(static_cast<std::size_t>(m));
  backend.nearest_weights(candidates.data(), m, wd.data());
  if (m == k) return candidates;

  // Reduce the weighted candidates to K centroids on the CPU.
  std::vector<float> wf(wd.begin(), wd.end());
  std::unique_ptr<Backend> small = make_cpu_backend(p.n_threads);
  small->attach(MatrixView::of(candidates.data(), m, d), wf.data(), p.metric);
  const int trials = p.n_local_trials > 0 ? p.n_local_trials : 2 + static_cast<int>(std::log(double(k)));
  std::vector<float> c = kmeanspp(*small, k, trials, splitmix64(seed));
  Params reduce = p;
  reduce.max_iter = 10;
  reduce.progress = nullptr;
  return lloyd(*small, std::move(c), k, reduce, 0.0, 0).centroids;
}

}  // namespace

std::vector<float> kmeanspp(Backend& backend, std::int64_t k, int n_local_trials, std::uint64_t seed) {
  const std::int64_t d = backend.cols();
  Rng rng(seed);
  std::vector<float> centroids;
  centroids.reserve(static_cast<std::size_t>(k * d));
  // First centre: a row drawn with probability proportional to its weight.
  double pot = backend.mindist_fill(1.0f);
  std::vector<std::int64_t> first = backend.sample_by_mindist({rng.uniform() * pot});
  std::vector<float> row = rows_of(backend, first);
  centroids.insert(centroids.end(), row.begin(), row.end());
  backend.mindist_fill(std::numeric_limits<float>::infinity());
  pot = backend.mindist_update(row.data(), 1);

  std::vector<double> targets(static_cast<std::size_t>(n_local_trials)), pots(static_cast<std::size_t>(n_local_trials));
  std::vector<std::size_t> order(static_cast<std::size_t>(n_local_trials));
  for (std::int64_t c = 1; c < k; ++c) {
    // n_local_trials D^2 samples; sampled in ascending order of target, kept in draw order.
    std::vector<double> draws(targets.size());
    for (auto& t : draws) t = rng.uniform() * pot;
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](auto a, auto b) { return draws[a] < draws[b]; });
    for (std::size_t t = 0; t < order.size(); ++t) targets[t] = draws[order[t]];
    const std::vector<std::int64_t> sorted_ids = backend.sample_by_mindist(targets);
    std::vector<std::int64_t> ids(order.size());
    for (std::size_t t = 0; t < order.size(); ++t) ids[order[t]] = sorted_ids[t];

    const std::vector<float> cand = rows_of(backend, ids);
    backend.mindist_trial(cand.data(), n_local_trials, pots.data());
    const auto best = static_cast<std::size_t>(std::min_element(pots.begin(), pots.end()) - pots.begin());
    const float* chosen = cand.data() + best * static_cast<std::size_t>(d);
    centroids.insert(centroids.end(), chosen, chosen + d);
    pot = backend.mindist_commit(static_cast<std::int64_t>(best), chosen);
  }
  return centroids;
}

std::vector<float> initial_centroids(Backend& backend, const Params& params, std::uint64_t seed) {
  switch (params.init) {
    case InitMethod::kmeanspp: {
      const int trials = params.n_local_trials > 0 ? params.n_local_trials
                                                   : 2 + static_cast<int>(std::log(double(params.n_clusters)));
      return kmeanspp(backend, params.n_clusters, trials, seed);
    }
    case InitMethod::kmeans_parallel: return kmeans_parallel(backend, params, seed);
    case InitMethod::random: return random_rows(backend, params.n_clusters, seed);
    case InitMethod::given: break;
  }
  FLASHKM_ASSERT(false, "initial_centroids: InitMethod::given is resolved by fit()");
  return {};
}

}  // namespace flashkm::core
