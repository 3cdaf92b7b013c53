// A Backend that forwards every call to an inner backend: tests derive from it and override
// only the calls they observe or replace (fakes of device behaviour on the CPU).
#pragma once

#include <memory>
#include <utility>
#include <vector>

#include "core/backend.hpp"

namespace flashkm::test {

class ForwardingBackend : public core::Backend {
 public:
  explicit ForwardingBackend(std::unique_ptr<core::Backend> inner) : in_(std::move(inner)) {}

  const char* name() const override { return in_->name(); }
  void attach(const MatrixView& x, const float* w, Metric m) override { in_->attach(x, w, m); }
  void set_memory_budget(std::int64_t bytes) override { in_->set_memory_budget(bytes); }
  void set_global_row_offset(std::int64_t o) override {
    Backend::set_global_row_offset(o);
    in_->set_global_row_offset(o);
  }
  std::int64_t rows() const override { return in_->rows(); }
  std::int64_t cols() const override { return in_->cols(); }
  core::FeatureMoments feature_moments() override { return in_->feature_moments(); }
  void set_centroids(const float* c, std::int64_t k) override { in_->set_centroids(c, k); }
  core::AssignStats assign() override { return in_->assign(); }
  core::AssignStats assign_labels() override { return in_->assign_labels(); }
  void accumulate(double* s, double* w) override { in_->accumulate(s, w); }
  void copy_labels(std::int32_t* out) override { in_->copy_labels(out); }
  void copy_distances(float* out) override { in_->copy_distances(out); }
  std::vector<std::int64_t> farthest_rows(std::int64_t m) override { return in_->farthest_rows(m); }
  void gather_rows(const std::int64_t* idx, std::int64_t m, float* r, std::int32_t* l, float* w) override {
    in_->gather_rows(idx, m, r, l, w);
  }
  double exact_inertia() override { return in_->exact_inertia(); }
  void cluster_weights(double* out) override { in_->cluster_weights(out); }
  void copy_weights(float* out) override { in_->copy_weights(out); }
  void all_distances(float* out) override { in_->all_distances(out); }
  double mindist_fill(float v) override { return in_->mindist_fill(v); }
  double mindist_update(const float* c, std::int64_t m) override { return in_->mindist_update(c, m); }
  void mindist_trial(const float* c, std::int64_t m, double* p) override { in_->mindist_trial(c, m, p); }
  double mindist_commit(std::int64_t j, const float* c) override { return in_->mindist_commit(j, c); }
  std::vector<std::int64_t> sample_by_mindist(const std::vector<double>& t) override { return in_->sample_by_mindist(t); }
  std::vector<std::int64_t> sample_bernoulli(double f, std::uint64_t s, std::uint64_t r) override {
    return in_->sample_bernoulli(f, s, r);
  }
  void nearest_weights(const float* c, std::int64_t m, double* out) override { in_->nearest_weights(c, m, out); }

 protected:
  core::Backend& inner() { return *in_; }

 private:
  std::unique_ptr<core::Backend> in_;
};

}  // namespace flashkm::test
