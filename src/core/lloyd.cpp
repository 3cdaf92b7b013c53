#include "core/lloyd.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "flashkm/error.hpp"

namespace flashkm::core {

void centroids_from_sums(const std::vector<double>& sums, const std::vector<double>& weight, std::int64_t d,
                         Metric metric, float* centroids) {
  const auto k = static_cast<std::int64_t>(weight.size());
  for (std::int64_t j = 0; j < k; ++j) {
    if (weight[j] <= 0) continue;
    const double* s = sums.data() + j * d;
    double scale = 1.0 / weight[j];
    if (metric == Metric::cosine) {
      double norm2 = 0;
      for (std::int64_t t = 0; t < d; ++t) norm2 += s[t] * s[t];
      if (norm2 == 0) continue;  // opposite unit vectors cancelled: keep the old direction
      scale = 1.0 / std::sqrt(norm2);
    }
    for (std::int64_t t = 0; t < d; ++t) centroids[j * d + t] = static_cast<float>(s[t] * scale);
  }
}

namespace {

/// scikit-learn's _relocate_empty_clusters: each empty cluster takes one of the rows
/// farthest from their centroid (largest first); that row's weight moves out of its old
/// cluster's sums. Works on sums (before division), so the means stay exact.
void relocate_empty_clusters(Backend& backend, std::vector<double>& sums, std::vector<double>& weight,
                             std::int64_t d) {
  std::vector<std::int64_t> empty;
  for (std::int64_t j = 0; j < static_cast<std::int64_t>(weight.size()); ++j)
    if (weight[j] <= 0) empty.push_back(j);
  if (empty.empty()) return;
  const std::vector<std::int64_t> far = backend.farthest_rows(static_cast<std::int64_t>(empty.size()));
  const auto m = static_cast<std::int64_t>(far.size());
  std::vector<float> rows(static_cast<std::size_t>(m * d));
  std::vector<std::int32_t> labels(static_cast<std::size_t>(m));
  std::vector<float> w(static_cast<std::size_t>(m));
  backend.gather_rows(far.data(), m, rows.data(), labels.data(), w.data());
  for (std::int64_t t = 0; t < m; ++t) {
    const std::int64_t to = empty[t], from = labels[t];
    for (std::int64_t c = 0; c < d; ++c) {
      const double v = double(rows[t * d + c]) * w[t];
      sums[from * d + c] -= v;
      sums[to * d + c] = v;
    }
    weight[from] -= w[t];
    weight[to] = w[t];
  }
}

}  // namespace

// The host path of the update (what every backend did before update_centroids existed).
std::int64_t Backend::update_centroids(std::int64_t k, Metric metric, const float* current, float* next,
                                       double* cluster_weight, double* shift) {
  const std::int64_t d = cols();
  std::vector<double>& sums = host_sums_;
  std::vector<double>& weight = host_weight_;
  sums.resize(static_cast<std::size_t>(k * d));  // accumulate() overwrites every entry
  weight.resize(static_cast<std::size_t>(k));
  accumulate(sums.data(), weight.data());
  std::int64_t n_empty = 0;
  for (const double v : weight) n_empty += v <= 0;
  relocate_empty_clusters(*this, sums, weight, d);
  std::copy(current, current + k * d, next);  // clusters left empty (or cancelled) keep theirs
  centroids_from_sums(sums, weight, d, metric, next);
  double s = 0;
  for (std::int64_t t = 0; t < k * d; ++t) {
    const double diff = double(next[t]) - double(current[t]);
    s += diff * diff;
  }
  *shift = s;
  std::copy(weight.begin(), weight.end(), cluster_weight);
  return n_empty;
}

std::int64_t Backend::finish_update_from_sums(std::int64_t, Metric, const float*, float*, double*, double*) {
  FLASHKM_FAIL(internal, "finish_update_from_sums() on the '", name(),
               "' backend, which keeps no sums on a device (device_partial_sums() returned false)");
}

void Backend::copy_centroids(float*) {
  FLASHKM_FAIL(internal, "copy_centroids() on the '", name(),
               "' backend, which does not keep centroids (update_centroids_kept() returned false)");
}

bool lloyd_stops(int it, std::int64_t n_changed, double shift, double tol_abs, bool* labels_stable) {
  *labels_stable = it > 1 && n_changed == 0;
  return *labels_stable || shift <= tol_abs;
}

IterationInfo iteration_record(int it, const AssignStats& st, double shift, std::int64_t rows, double ms) {
  IterationInfo info;
  info.iteration = it;
  info.inertia = st.inertia;
  info.shift = shift;
  // The first iteration counts every row (IterationInfo): the backend may still hold the
  // labels of an earlier n_init run, which this run's record must not depend on (a
  // resumed fit starts a run on a fresh backend).
  info.n_changed = it == 1 ? rows : st.n_changed;
  info.n_rechecked = st.n_rechecked;
  info.ms = ms;
  return info;
}

LloydResult lloyd(Backend& backend, std::vector<float> centroids, std::int64_t k, const Params& params,
                  double tol_abs, int run, const LloydResume* resume, const IterationHook& hook) {
  using clock = std::chrono::steady_clock;
  const std::int64_t d = backend.cols();
  LloydResult out;
  std::vector<double> weight(static_cast<std::size_t>(k));
  std::vector<float> next(static_cast<std::size_t>(k * d)), before;
  bool labels_stable = false;
  // scikit-learn's two stopping rules, in its order: labels unchanged (strict), then shift.
  auto stops_after = [&](int it, std::int64_t n_changed, double shift) {
    out.converged = lloyd_stops(it, n_changed, shift, tol_abs, &labels_stable);
    return out.converged;
  };

  int first = 1;
  bool done = false;
  if (resume) {
    // The backend's labels as the uninterrupted run had them after that iteration (the next
    // one counts its label changes against them): one assignment against the centroids the
    // iteration started from. Labels depend only on the rows and the centroids, so they
    // are the same bits; the rest of the iteration's results are in its history record.
    FLASHKM_ASSERT(resume->iteration >= 1 && static_cast<int>(resume->history.size()) == resume->iteration,
                   "resume state");
    backend.set_centroids(resume->previous.data(), k);
    backend.assign_labels();  // the next iteration assigns again before any update
    out.history = resume->history;
    out.n_iter = first = resume->iteration;
    const IterationInfo& last = out.history.back();
    done = stops_after(first, last.n_changed, last.shift);
    ++first;
  }

  // A backend that keeps its updated centroids (update_centroids_kept) leaves `centroids`
  // stale until they are needed on the host: by a hook (each iteration), by a host-path
  // update, at the end. Without a hook the K x D centroids then stay on the device.
  bool host_current = true;  // `centroids` holds the backend's current centroids
  auto fetch = [&] {
    if (!host_current) backend.copy_centroids(centroids.data());
    host_current = true;
  };
  for (int it = first; !done && it <= params.max_iter; ++it) {
    const auto t0 = clock::now();
    if (hook) {
      fetch();
      before = centroids;
    }
    if (host_current) backend.set_centroids(centroids.data(), k);
    const AssignStats st = backend.assign();
    double shift = 0;
    if (!hook && backend.update_centroids_kept(k, params.metric, weight.data(), &shift)) {
      host_current = false;
    } else {
      fetch();
      backend.update_centroids(k, params.metric, centroids.data(), next.data(), weight.data(), &shift);
      centroids.swap(next);
    }

    const IterationInfo info = iteration_record(it, st, shift, backend.rows(),
                                                std::chrono::duration<double, std::milli>(clock::now() - t0).count());
    out.history.push_back(info);
    out.n_iter = it;
    if (hook) hook(run, before, centroids, out.history);  // before the callback may stop the fit
    if (params.progress && !params.progress(run, info))
      FLASHKM_FAIL(interrupted, "fit interrupted by the progress callback after iteration ", it);
    if (stops_after(it, st.n_changed, shift)) break;
  }

  // Final labels and inertia against the final centroids. When the labels were stable the
  // centroids are the means of those labels, so one more assignment would change nothing.
  if (host_current) backend.set_centroids(centroids.data(), k);
  else fetch();  // the backend holds them already
  if (!labels_stable) backend.assign_labels();
  out.inertia = backend.exact_inertia();
  out.cluster_weight.resize(static_cast<std::size_t>(k));
  backend.cluster_weights(out.cluster_weight.data());
  out.centroids = std::move(centroids);
  return out;
}

}  // namespace flashkm::core
