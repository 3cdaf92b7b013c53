// DistributedBackend: the local backend's step, then one collective that combines the
// ranks' results in rank order (see distributed_backend.hpp).
#include "core/distributed_backend.hpp"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>

#include "flashkm/error.hpp"

namespace flashkm::core {
namespace {

using Bytes = std::vector<std::byte>;

template <class T>
Bytes to_bytes(const T* data, std::size_t n) {
  static_assert(std::is_trivially_copyable_v<T>);
  Bytes out(n * sizeof(T));
  if (n) std::memcpy(out.data(), data, out.size());
  return out;
}

template <class T>
std::vector<T> from_bytes(const Bytes& b) {
  FLASHKM_ASSERT(b.size() % sizeof(T) == 0, "distributed backend: a rank sent a partial element");
  std::vector<T> out(b.size() / sizeof(T));
  if (!out.empty()) std::memcpy(out.data(), b.data(), b.size());
  return out;
}

/// An environment switch: set and not "0" / empty.
bool env_flag(const char* name) {
  const char* v = std::getenv(name);
  return v && *v && std::strcmp(v, "0") != 0;
}

/// What one rank reports of its assign().
struct AssignPart {
  double inertia;
  std::int64_t n_changed, n_rechecked, n_rechecked_fp64, n_candidates;
};

/// A row of gather_rows as it travels: its position in the request, label, weight; the
/// row's d floats follow each record.
struct GatheredHead {
  std::int64_t position;
  std::int32_t label;
  float weight;
};

/// A candidate of farthest_rows (no padding bytes: the struct travels as bytes).
struct FarRow {
  std::int64_t row;  // global
  float distance;
  std::int32_t unused = 0;
};

class DistributedBackend final : public Backend {
 public:
  DistributedBackend(std::unique_ptr<Backend> local, Communicator& comm) : local_(std::move(local)), comm_(comm) {
    FLASHKM_CHECK(local_ != nullptr, invalid_argument, "make_distributed_backend: the local backend is null");
  }

  const char* name() const override { return local_->name(); }
  std::int64_t rows() const override { return n_total_; }
  std::int64_t cols() const override { return d_; }

  void attach(const MatrixView& x, const float* weights, Metric metric) override {
    // Shapes first: every rank learns every shard's rows, hence its own global offset.
    const std::int64_t shape[2] = {x.rows, x.cols};
    const std::vector<Bytes> shapes = step([&] { return to_bytes(shape, 2); });
    const int p = comm_.size(), me = comm_.rank();
    offsets_.assign(static_cast<std::size_t>(p) + 1, 0);
    for (int r = 0; r < p; ++r) {
      const std::vector<std::int64_t> s = from_bytes<std::int64_t>(shapes[static_cast<std::size_t>(r)]);
      FLASHKM_CHECK(s[0] > 0, invalid_argument, "distributed fit: rank ", r, " of ", p,
                    " has 0 rows; every rank needs at least one row of X (run fewer ranks)");
      FLASHKM_CHECK(s[1] == x.cols, invalid_argument, "distributed fit: rank ", r, " has ", s[1],
                    " features but rank ", me, " has ", x.cols, "; every shard must have the same columns");
      offsets_[static_cast<std::size_t>(r) + 1] = offsets_[static_cast<std::size_t>(r)] + s[0];
    }
    n_total_ = offsets_.back();
    d_ = x.cols;
    n_local_ = x.rows;
    offset_ = offsets_[static_cast<std::size_t>(me)];
    local_->set_global_row_offset(offset_);
    step([&] {
      local_->attach(x, weights, metric);
      return Bytes{};
    });
  }

  FeatureMoments feature_moments() override {
    const std::vector<Bytes> all = step([&] {
      const FeatureMoments m = local_->feature_moments();
      std::vector<double> flat(1 + 2 * static_cast<std::size_t>(d_));
      flat[0] = static_cast<double>(m.count);
      std::copy(m.mean.begin(), m.mean.end(), flat.begin() + 1);
      std::copy(m.m2.begin(), m.m2.end(), flat.begin() + 1 + d_);
      return to_bytes(flat.data(), flat.size());
    });
    // Chan et al.'s pairwise update, ranks in order; rank 0's moments are taken as they are,
    // so one rank gives the local backend's bits.
    FeatureMoments total;
    for (std::size_t r = 0; r < all.size(); ++r) {
      const std::vector<double> f = from_bytes<double>(all[r]);
      const auto nb = static_cast<std::int64_t>(f[0]);
      if (r == 0) {
        total.count = nb;
        total.mean.assign(f.begin() + 1, f.begin() + 1 + d_);
        total.m2.assign(f.begin() + 1 + d_, f.end());
        continue;
      }
      const double na = static_cast<double>(total.count), n = na + static_cast<double>(nb);
      for (std::int64_t j = 0; j < d_; ++j) {
        const double delta = f[1 + j] - total.mean[j];
        total.mean[j] += delta * (static_cast<double>(nb) / n);
        total.m2[j] += f[1 + d_ + j] + delta * delta * (na * static_cast<double>(nb) / n);
      }
      total.count += nb;
    }
    return total;
  }

  void set_centroids(const float* centroids, std::int64_t k) override {
    k_ = k;
    step([&] {
      local_->set_centroids(centroids, k);
      return Bytes{};
    });
  }

  AssignStats assign() override { return combined_assign(false); }
  AssignStats assign_labels() override { return combined_assign(true); }

  /// The local assign (labels only, or preparing the update), its statistics summed over
  /// the ranks in rank order.
  AssignStats combined_assign(bool labels_only) {
    const std::vector<Bytes> all = step([&] {
      const AssignStats s = labels_only ? local_->assign_labels() : local_->assign();
      const AssignPart part{s.inertia, s.n_changed, s.n_rechecked, s.n_rechecked_fp64, s.n_candidates};
      return to_bytes(&part, 1);
    });
    AssignStats st;
    for (std::size_t r = 0; r < all.size(); ++r) {
      const AssignPart part = from_bytes<AssignPart>(all[r])[0];
      st.inertia = r == 0 ? part.inertia : st.inertia + part.inertia;
      st.n_changed += part.n_changed;
      st.n_rechecked += part.n_rechecked;
      st.n_rechecked_fp64 += part.n_rechecked_fp64;
      st.n_candidates += part.n_candidates;
    }
    return st;
  }

  void accumulate(double* sums, double* cluster_weight) override {
    // Local sums straight into the caller's arrays (the host path's, kept between
    // iterations), agreement on success, then in-place rank-order sums: the same bits as a
    // sum_step, without its [k x D] temporaries (fresh 64 MB vectors per iteration at
    // K = 65536, D = 128, several times over).
    step([&] {
      local_->accumulate(sums, cluster_weight);
      return Bytes{};
    });
    comm_.allreduce_sum(sums, static_cast<std::size_t>(k_ * d_));
    comm_.allreduce_sum(cluster_weight, static_cast<std::size_t>(k_));
  }

  // The device-resident update (docs/CUDA.md, "Multi-GPU in one host"): when every rank's
  // backend keeps its sums on a device and the communicator reduces device memory (NCCL),
  // the [k x D] fp64 sums never visit the host: local sums -> in-place rank-order
  // allreduce on the device -> every rank finishes the update from the same sums, so every
  // rank gets the same centroids. Otherwise, and whenever a cluster is empty (every rank
  // sees the same weights, so they agree), the host path of the base class runs: through
  // this class's accumulate / farthest_rows / gather_rows, exactly as before.
  std::int64_t update_centroids(std::int64_t k, Metric metric, const float* current, float* next,
                                double* cluster_weight, double* shift) override {
    if (device_update_ != DeviceUpdate::off && device_update(k, metric, current, next, cluster_weight, shift))
      return 0;
    return Backend::update_centroids(k, metric, current, next, cluster_weight, shift);
  }

  void copy_labels(std::int32_t* out) override {
    step([&] {
      local_->copy_labels(out);
      return Bytes{};
    });
  }

  void copy_distances(float* out) override {
    step([&] {
      local_->copy_distances(out);
      return Bytes{};
    });
  }

  std::vector<std::int64_t> farthest_rows(std::int64_t m) override {
    // Each rank's top m (largest first, ties to the lower index), then the merge of all of
    // them under the same order: the global top m.
    const std::vector<Bytes> all = step([&] {
      const std::vector<std::int64_t> idx = local_->farthest_rows(m);
      std::vector<FarRow> out(idx.size());
      if (!idx.empty()) {
        // The local backend compares its stored best distances; those are what copy_distances
        // returns. O(n_local) host memory, only when a cluster went empty.
        std::vector<float> dist(static_cast<std::size_t>(n_local_));
        local_->copy_distances(dist.data());
        for (std::size_t t = 0; t < idx.size(); ++t) out[t] = {idx[t] + offset_, dist[static_cast<std::size_t>(idx[t])]};
      }
      return to_bytes(out.data(), out.size());
    });
    std::vector<FarRow> merged;
    for (const Bytes& b : all) {
      const std::vector<FarRow> part = from_bytes<FarRow>(b);
      merged.insert(merged.end(), part.begin(), part.end());
    }
    const auto take = std::min<std::size_t>(static_cast<std::size_t>(std::max<std::int64_t>(m, 0)), merged.size());
    std::partial_sort(merged.begin(), merged.begin() + static_cast<std::ptrdiff_t>(take), merged.end(),
                      [](const FarRow& a, const FarRow& b) {
                        return a.distance > b.distance || (a.distance == b.distance && a.row < b.row);
                      });
    std::vector<std::int64_t> out(take);
    for (std::size_t t = 0; t < take; ++t) out[t] = merged[t].row;
    return out;
  }

  void gather_rows(const std::int64_t* idx, std::int64_t m, float* rows_out, std::int32_t* labels_out,
                   float* weights_out) override {
    for (std::int64_t t = 0; t < m; ++t)
      FLASHKM_ASSERT(idx[t] >= 0 && idx[t] < n_total_, "gather_rows index out of range");
    // The owner of each requested row gathers it locally; one allgather delivers them all.
    const std::vector<Bytes> all = step([&] {
      std::vector<std::int64_t> pos, local_idx;
      for (std::int64_t t = 0; t < m; ++t)
        if (idx[t] >= offset_ && idx[t] < offset_ + n_local_) {
          pos.push_back(t);
          local_idx.push_back(idx[t] - offset_);
        }
      const std::size_t q = pos.size(), d = static_cast<std::size_t>(d_);
      std::vector<float> rows(q * d), weights(q);
      std::vector<std::int32_t> labels(q);
      if (q) local_->gather_rows(local_idx.data(), static_cast<std::int64_t>(q), rows.data(), labels.data(), weights.data());
      const std::size_t record = sizeof(GatheredHead) + d * sizeof(float);
      Bytes out(q * record);
      for (std::size_t t = 0; t < q; ++t) {
        const GatheredHead head{pos[t], labels[t], weights[t]};
        std::memcpy(out.data() + t * record, &head, sizeof head);
        std::memcpy(out.data() + t * record + sizeof head, rows.data() + t * d, d * sizeof(float));
      }
      return out;
    });
    const std::size_t d = static_cast<std::size_t>(d_), record = sizeof(GatheredHead) + d * sizeof(float);
    std::int64_t filled = 0;
    for (const Bytes& b : all) {
      FLASHKM_ASSERT(b.size() % record == 0, "gather_rows: a rank sent a partial row");
      for (std::size_t off = 0; off < b.size(); off += record) {
        GatheredHead head;
        std::memcpy(&head, b.data() + off, sizeof head);
        const auto t = static_cast<std::size_t>(head.position);
        if (rows_out) std::memcpy(rows_out + t * d, b.data() + off + sizeof head, d * sizeof(float));
        if (labels_out) labels_out[t] = head.label;
        if (weights_out) weights_out[t] = head.weight;
        ++filled;
      }
    }
    FLASHKM_ASSERT(filled == m, "gather_rows: a requested row has no owner");
  }

  double exact_inertia() override {
    return sum_step(1, [&](double* out) { out[0] = local_->exact_inertia(); })[0];
  }

  void cluster_weights(double* out) override {
    const std::vector<double> total =
        sum_step(static_cast<std::size_t>(k_), [&](double* part) { local_->cluster_weights(part); });
    std::copy(total.begin(), total.end(), out);
  }

  // O(N) on every rank: only init 'random' asks for it (its weighted draw needs every key).
  void copy_weights(float* out) override {
    const std::vector<Bytes> all = step([&] {
      std::vector<float> w(static_cast<std::size_t>(n_local_));
      local_->copy_weights(w.data());
      return to_bytes(w.data(), w.size());
    });
    for (std::size_t r = 0; r < all.size(); ++r)
      if (!all[r].empty()) std::memcpy(out + offsets_[r], all[r].data(), all[r].size());
  }

  void all_distances(float* out) override {
    step([&] {
      local_->all_distances(out);
      return Bytes{};
    });
  }

  // ---- initialisation support ----
  // Every call that changes mind records the ranks' potentials (rank_pot_): sample_by_mindist
  // finds the rank of a target from them without another collective.

  double mindist_fill(float value) override {
    return potential_step([&] { return local_->mindist_fill(value); });
  }

  double mindist_update(const float* centroids, std::int64_t m) override {
    return potential_step([&] { return local_->mindist_update(centroids, m); });
  }

  void mindist_trial(const float* candidates, std::int64_t m, double* potentials) override {
    const std::vector<double> total = sum_step(static_cast<std::size_t>(m), [&](double* part) {
      local_->mindist_trial(candidates, m, part);
    });
    std::copy(total.begin(), total.end(), potentials);
  }

  double mindist_commit(std::int64_t j, const float* candidate) override {
    return potential_step([&] { return local_->mindist_commit(j, candidate); });
  }

  std::vector<std::int64_t> sample_by_mindist(const std::vector<double>& targets) override {
    // The rank of each target by the global prefix over the ranks' potentials (the same loop
    // as the CPU backend's over its chunks); past the total (rounding) it is the last row.
    const int p = comm_.size();
    std::vector<int> owner(targets.size());
    std::vector<double> local_targets;
    double before = 0;
    int r = 0;
    for (std::size_t t = 0; t < targets.size(); ++t) {
      while (r < p && before + rank_pot_[static_cast<std::size_t>(r)] <= targets[t])
        before += rank_pot_[static_cast<std::size_t>(r++)];
      owner[t] = r;
      // rank 0 sees its targets unchanged (before == 0): one rank gives the local bits
      if (r == comm_.rank()) local_targets.push_back(r == 0 ? targets[t] : targets[t] - before);
    }
    const std::vector<Bytes> all = step([&] {
      std::vector<std::int64_t> picks;
      if (!local_targets.empty()) picks = local_->sample_by_mindist(local_targets);
      for (auto& i : picks) i += offset_;
      return to_bytes(picks.data(), picks.size());
    });
    std::vector<std::vector<std::int64_t>> picks(all.size());
    for (std::size_t q = 0; q < all.size(); ++q) picks[q] = from_bytes<std::int64_t>(all[q]);
    std::vector<std::size_t> next(all.size(), 0);
    std::vector<std::int64_t> out(targets.size());
    for (std::size_t t = 0; t < targets.size(); ++t) {
      if (owner[t] == p) {
        out[t] = n_total_ - 1;
        continue;
      }
      const auto q = static_cast<std::size_t>(owner[t]);
      FLASHKM_ASSERT(next[q] < picks[q].size(), "sample_by_mindist: a rank returned too few rows");
      out[t] = picks[q][next[q]++];
    }
    return out;
  }

  std::vector<std::int64_t> sample_bernoulli(double factor, std::uint64_t seed, std::uint64_t round) override {
    // The local backend draws by global row index (set_global_row_offset): the union over
    // ranks, in rank order, is what one backend over all rows would pick, ascending.
    const std::vector<Bytes> all = step([&] {
      std::vector<std::int64_t> picks = local_->sample_bernoulli(factor, seed, round);
      for (auto& i : picks) i += offset_;
      return to_bytes(picks.data(), picks.size());
    });
    std::vector<std::int64_t> out;
    for (const Bytes& b : all) {
      const std::vector<std::int64_t> part = from_bytes<std::int64_t>(b);
      out.insert(out.end(), part.begin(), part.end());
    }
    return out;
  }

  void nearest_weights(const float* centroids, std::int64_t m, double* out) override {
    const std::vector<double> total = sum_step(static_cast<std::size_t>(m), [&](double* part) {
      local_->nearest_weights(centroids, m, part);
    });
    std::copy(total.begin(), total.end(), out);
  }

 private:
  /// Whether update_centroids takes the device path. Every rank starts undecided and asks
  /// in the first update's step, so ranks that differ (an environment switch set on one MPI
  /// rank only, a backend without a device) agree on the host path instead of diverging.
  enum class DeviceUpdate { undecided, on, off };

  /// True when the update was done on the device; false (nothing changed) when the host
  /// path must run: some rank cannot, or a cluster is empty.
  bool device_update(std::int64_t k, Metric metric, const float* current, float* next, double* cluster_weight,
                     double* shift) {
    DeviceSums ds;
    const std::vector<Bytes> can = step([&] {
      const std::uint8_t ok = !host_update_forced_ && local_->device_partial_sums(k, &ds) &&
                              comm_.device_allreduce_supported(ds.device);
      return to_bytes(&ok, 1);
    });
    bool all = true;
    for (const Bytes& b : can) all = all && from_bytes<std::uint8_t>(b)[0] != 0;
    // What one rank cannot do it will not do next iteration either: decide once.
    device_update_ = all ? DeviceUpdate::on : DeviceUpdate::off;
    if (!all) return false;
    // Two collectives (sums, then weights; they live in separate device buffers): the
    // weights are K doubles, one more small all-gather. Each returns true (checked above);
    // a failure inside throws here, aborts the communicator and the others' wait ends at
    // cancel() or their deadline, as for every collective.
    const bool reduced = comm_.allreduce_sum_device(ds.sums, static_cast<std::size_t>(k * d_), ds.device, ds.stream) &&
                         comm_.allreduce_sum_device(ds.weights, static_cast<std::size_t>(k), ds.device, ds.stream);
    FLASHKM_ASSERT(reduced, "allreduce_sum_device refused device memory it said it supports");
    // Identical sums on every rank -> identical results; the step carries each rank's empty
    // count (and any failure), so the fallback decision is checked to be common.
    std::int64_t n_empty = 0;
    const std::vector<Bytes> empties = step([&] {
      n_empty = local_->finish_update_from_sums(k, metric, current, next, cluster_weight, shift);
      return to_bytes(&n_empty, 1);
    });
    for (const Bytes& b : empties)
      FLASHKM_ASSERT(from_bytes<std::int64_t>(b)[0] == n_empty, "ranks disagree on the empty clusters of the same sums");
    return n_empty == 0;
  }

  /// The local step f() -> Bytes on this rank, exchanged with every rank's (or its failure).
  template <class F>
  std::vector<Bytes> step(F&& f) {
    return allgather_step(comm_, [&]() -> Bytes { return f(); });
  }

  /// fill(part) writes this rank's n values; returns their sums over ranks, in rank order
  /// (rank 0's values taken as they are).
  template <class F>
  std::vector<double> sum_step(std::size_t n, F&& fill) {
    const std::vector<Bytes> all = step([&] {
      std::vector<double> part(n, 0.0);
      fill(part.data());
      return to_bytes(part.data(), n);
    });
    std::vector<double> total;
    for (std::size_t r = 0; r < all.size(); ++r) {
      const std::vector<double> part = from_bytes<double>(all[r]);
      FLASHKM_ASSERT(part.size() == n, "distributed backend: ranks sent different lengths");
      if (r == 0) total = part;
      else
        for (std::size_t i = 0; i < n; ++i) total[i] += part[i];
    }
    return total;
  }

  /// A mindist step returning the local potential: records every rank's, returns their sum.
  template <class F>
  double potential_step(F&& f) {
    const std::vector<Bytes> all = step([&] {
      const double pot = f();
      return to_bytes(&pot, 1);
    });
    rank_pot_.resize(all.size());
    double total = 0;
    for (std::size_t r = 0; r < all.size(); ++r) {
      rank_pot_[r] = from_bytes<double>(all[r])[0];
      total = r == 0 ? rank_pot_[r] : total + rank_pot_[r];
    }
    return total;
  }

  std::unique_ptr<Backend> local_;
  Communicator& comm_;
  std::int64_t n_total_ = 0, n_local_ = 0, offset_ = 0, d_ = 0, k_ = 0;
  std::vector<std::int64_t> offsets_;           // first global row of each rank, then n_total_
  std::vector<double> rank_pot_;                // the ranks' sum w*mind after the last mindist call
  DeviceUpdate device_update_ = DeviceUpdate::undecided;
  // FLASHKM_DISTRIBUTED_HOST_UPDATE=1: the host path always (to measure it, or to rule the
  // device path out). Read once per backend, i.e. per fit.
  const bool host_update_forced_ = env_flag("FLASHKM_DISTRIBUTED_HOST_UPDATE");
};

}  // namespace

std::unique_ptr<Backend> make_distributed_backend(std::unique_ptr<Backend> local, Communicator& comm) {
  return std::make_unique<DistributedBackend>(std::move(local), comm);
}

}  // namespace flashkm::core
