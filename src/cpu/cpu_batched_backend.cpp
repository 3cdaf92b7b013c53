// The CPU batched backend: one CPU Backend per problem (the existing kernels, unchanged),
// problems spread over threads. Every problem's backend sees exactly the calls a fit of
// that problem alone makes, in the same order, so its results are the alone fit's bits
// (the CPU backend's results do not depend on its thread count).
//
// Threads: with at least as many problems as threads, each problem's backend runs on one
// thread and the problems are spread over the threads (dynamic schedule, so ragged sizes
// balance); with fewer problems, the problems run one after another, each on all threads.
#include <omp.h>

#include <exception>
#include <vector>

#include "core/batched_backend.hpp"
#include "flashkm/error.hpp"

namespace flashkm::core {
namespace {

class CpuBatchedBackend final : public BatchedBackend {
 public:
  explicit CpuBatchedBackend(int n_threads) : threads_(n_threads > 0 ? n_threads : omp_get_max_threads()) {}

  const char* name() const override { return "cpu"; }
  std::int64_t problems() const override { return static_cast<std::int64_t>(backends_.size()); }
  std::int64_t rows(std::int64_t b) const override { return backends_[b]->rows(); }
  std::int64_t cols() const override { return d_; }

  void attach(const std::vector<ProblemData>& problems, Metric metric) override {
    const auto n = static_cast<std::int64_t>(problems.size());
    FLASHKM_ASSERT(n >= 1, "batched attach without problems");
    over_problems_ = n >= threads_;
    d_ = problems[0].x.cols;
    backends_.clear();
    backends_.resize(problems.size());
    std::vector<std::int64_t> all(problems.size());
    for (std::int64_t b = 0; b < n; ++b) all[b] = b;
    const int inner = over_problems_ ? 1 : threads_;
    for_each(all, [&](std::size_t i) {
      const std::int64_t b = all[i];
      for_problem(b, [&] {
        backends_[b] = make_cpu_backend(inner);
        backends_[b]->attach(problems[b].x, problems[b].weights, metric);
      });
    });
  }

  std::vector<FeatureMoments> feature_moments() override {
    std::vector<FeatureMoments> m(backends_.size());
    std::vector<std::int64_t> all(backends_.size());
    for (std::size_t b = 0; b < all.size(); ++b) all[b] = static_cast<std::int64_t>(b);
    for_each(all, [&](std::size_t b) { m[b] = backends_[b]->feature_moments(); });
    return m;
  }

  Backend& problem(std::int64_t b) override { return *backends_[b]; }

  void set_centroids(const std::vector<std::int64_t>& active, const std::vector<const float*>& c,
                     const std::vector<std::int64_t>& k) override {
    active_ = active;
    k_ = k;
    for_each(active_, [&](std::size_t a) { backends_[active_[a]]->set_centroids(c[a], k_[a]); });
  }

  void assign(const std::vector<std::int64_t>& which, bool labels_only, std::vector<AssignStats>& out) override {
    out.assign(which.size(), AssignStats{});
    for_each(which, [&](std::size_t i) {
      Backend& be = *backends_[which[i]];
      out[i] = labels_only ? be.assign_labels() : be.assign();
    });
  }

  void update_centroids(Metric metric, const std::vector<const float*>& current, const std::vector<float*>& next,
                        const std::vector<double*>& weight, std::vector<double>& shift) override {
    shift.assign(active_.size(), 0.0);
    for_each(active_, [&](std::size_t a) {
      backends_[active_[a]]->update_centroids(k_[a], metric, current[a], next[a], weight[a], &shift[a]);
    });
  }

  void exact_inertia(std::vector<double>& out) override {
    out.assign(active_.size(), 0.0);
    for_each(active_, [&](std::size_t a) { out[a] = backends_[active_[a]]->exact_inertia(); });
  }

  void cluster_weights(const std::vector<double*>& weight) override {
    for_each(active_, [&](std::size_t a) { backends_[active_[a]]->cluster_weights(weight[a]); });
  }

  void copy_labels(std::int64_t b, std::int32_t* out) override { backends_[b]->copy_labels(out); }

 private:
  /// fn(i) for every i of `which`: spread over the threads when each backend has one (the
  /// first error by position is rethrown once all are done), else in order.
  template <class Fn>
  void for_each(const std::vector<std::int64_t>& which, Fn&& fn) {
    const auto n = static_cast<std::int64_t>(which.size());
    if (!over_problems_ || n <= 1) {
      for (std::int64_t i = 0; i < n; ++i) fn(static_cast<std::size_t>(i));
      return;
    }
    std::vector<std::exception_ptr> errors(which.size());
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads_)
    for (std::int64_t i = 0; i < n; ++i) {
      try {
        fn(static_cast<std::size_t>(i));
      } catch (...) {
        errors[i] = std::current_exception();
      }
    }
    for (auto& e : errors)
      if (e) std::rethrow_exception(e);
  }

  int threads_;
  bool over_problems_ = false;
  std::int64_t d_ = 0;
  std::vector<std::unique_ptr<Backend>> backends_;
  std::vector<std::int64_t> active_, k_;
};

}  // namespace

std::unique_ptr<BatchedBackend> make_cpu_batched_backend(int n_threads) {
  return std::make_unique<CpuBatchedBackend>(n_threads);
}

}  // namespace flashkm::core
