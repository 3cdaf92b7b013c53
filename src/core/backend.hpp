// The seam between the algorithm (core/) and the hardware (cpu/, cuda/).
//
// The Lloyd driver, the initialisations and empty-cluster repair are written once in core/
// against this interface. A backend holds the data (a view, never a copy of N x D unless it
// must convert), the per-row state (labels, best and second-best distance, min-distance for
// initialisation) and the kernels. Everything of size N stays inside the backend, in the
// backend's memory; what crosses the interface is O(K x D) or a few scalars, on the host.
//
// Distances follow the metric (see Metric): l2 = squared Euclidean; inner_product = -x.c;
// cosine = 1 - x.c / |x| against unit-norm centroids (the driver keeps centroids unit-norm).
// All row reductions (inertia, potentials, prefix sums) are summed in fp64 over fixed
// chunks of kReductionChunk rows in row order, then over chunks in order, so that
// results never depend on the thread count or the scheduling.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "flashkm/params.hpp"
#include "flashkm/types.hpp"

namespace flashkm::core {

/// Rows per reduction chunk: the unit of deterministic fp64 summation over rows.
inline constexpr std::int64_t kReductionChunk = 2048;

/// Per-feature moments of the (unweighted) rows: the parts of mean_feature_variance that
/// combine across the row shards of a distributed fit (Chan et al.'s pairwise formula).
struct FeatureMoments {
  std::int64_t count = 0;    ///< rows
  std::vector<double> mean;  ///< [D] per-feature mean
  std::vector<double> m2;    ///< [D] per-feature sum of squared deviations from the mean
};

/// Mean over features of the per-feature (unweighted) variance: scikit-learn's scale for
/// tol. Per-feature divisions, then a sequential sum: the same bits for every backend.
inline double mean_feature_variance(const FeatureMoments& m) {
  double sum = 0;
  for (const double v : m.m2) sum += v / static_cast<double>(m.count);
  return sum / static_cast<double>(m.m2.size());
}

/// Per-cluster sums left on a device by Backend::device_partial_sums (see there). core/ has
/// no CUDA headers: the stream travels as void* (a cudaStream_t).
struct DeviceSums {
  double* sums = nullptr;     ///< [k x D] fp64, device memory of `device`
  double* weights = nullptr;  ///< [k] fp64, same device
  int device = -1;            ///< CUDA device ordinal
  void* stream = nullptr;     ///< the stream the backend orders its work on (cudaStream_t)
};

struct AssignStats {
  double inertia = 0;           ///< sum of w * best distance (fp64 over fixed chunks)
  std::int64_t n_changed = 0;   ///< rows whose label differs from the previous assign()
  std::int64_t n_rechecked = 0; ///< rows re-checked at higher precision (0 on the CPU)
  /// Of those, rows re-checked in fp64 against every centroid (CUDA cascade, docs/CUDA.md:
  /// SIMT cascade: those the exact-fp32 level could not settle; candidate cascade: those whose
  /// candidates did not fit its bounded list; no cascade: all of n_rechecked).
  std::int64_t n_rechecked_fp64 = 0;
  /// Candidate cascade: (row, centroid) pairs listed for the n_rechecked rows and scored in
  /// fp64 (0 elsewhere).
  std::int64_t n_candidates = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;

  /// Take the data [N x D] and optional weights [N] (same location as x). Validation of
  /// values (NaN/Inf, negative weights) is done by the backend here, where the data is,
  /// throwing Error(invalid_argument) naming the first bad row. For cosine, rows of zero
  /// norm are rejected. Called once per backend.
  virtual void attach(const MatrixView& x, const float* weights, Metric metric) = 0;
  /// Memory budget in bytes for what attach() takes next (0: the backend's default). The CPU
  /// backend streams a mapped data file that does not fit it (docs/ARCHITECTURE.md,
  /// "Out of core"); the CUDA backend takes it as device bytes and streams host data that
  /// does not fit (docs/CUDA.md, "Data larger than the GPU"); others ignore it.
  virtual void set_memory_budget(std::int64_t bytes) { (void)bytes; }
  virtual std::int64_t rows() const = 0;
  virtual std::int64_t cols() const = 0;

  /// Per-feature count, mean and M2 of x (unweighted; variance_j = m2_j / count), for
  /// scikit-learn's tol scale (core::mean_feature_variance) and its distributed combination.
  virtual FeatureMoments feature_moments() = 0;

  /// In a distributed fit, the global index of this backend's row 0 (its shard's offset).
  /// Set before attach(). Backends use it where results depend on a row's identity rather
  /// than on its data: the counter-based uniforms of sample_bernoulli and the row named by
  /// an error message, so that a shard behaves exactly like its rows of the whole data.
  /// Row indices passed in and returned stay local to the shard.
  virtual void set_global_row_offset(std::int64_t offset) { global_row_offset_ = offset; }
  std::int64_t global_row_offset() const { return global_row_offset_; }

  /// Replace the centroids [k x D] (fp32, host).
  virtual void set_centroids(const float* centroids, std::int64_t k) = 0;

  /// Assign every row to its nearest current centroid: label, best and second-best
  /// distance (second = +inf when k == 1). Ties go to the lowest centroid index.
  virtual AssignStats assign() = 0;

  /// assign() when no update follows (the final labels of a fit, predict, score): the same
  /// labels, distances and statistics, bitwise, but a backend may skip work it does only for
  /// the next update (the CPU backend's per-stripe sums fused into the pass). A later
  /// accumulate() stays correct; it just has to compute the sums itself.
  virtual AssignStats assign_labels() { return assign(); }

  /// Per-cluster weighted sums of the rows [k x D] (fp64) and weights [k] under the current
  /// labels. For cosine, rows enter normalised (x / |x|). Summation order is fixed
  /// (rows of a cluster in row order), so results are bitwise reproducible.
  virtual void accumulate(double* sums, double* cluster_weight) = 0;

  /// One Lloyd update under the current labels, for the k centroids `current` [k x D] last
  /// given to set_centroids(): next [k x D] = per-cluster weighted means (cosine: the unit
  /// direction of the sums; a cluster whose sums cancel keeps its centroid), empty clusters
  /// first repaired as scikit-learn does (each takes one of the rows farthest from its
  /// centroid), cluster_weight [k] after the repair, *shift = sum of (next - current)^2 in
  /// fp64. Returns the number of empty clusters repaired.
  /// The default is the host path (accumulate() into host sums, repair and divide on the
  /// host; defined in lloyd.cpp). A backend overrides it to keep the sums where they are;
  /// an override must give the same sums (same fixed order) and may differ from the default
  /// only in the rounding of the shift, and must fall back to the default when it finds an
  /// empty cluster.
  virtual std::int64_t update_centroids(std::int64_t k, Metric metric, const float* current, float* next,
                                        double* cluster_weight, double* shift);

  /// update_centroids() that keeps the new centroids in the backend instead of returning
  /// them. On true they are the backend's current centroids, exactly as if set_centroids()
  /// had been given update_centroids()'s `next` (same bits), cluster_weight [k] and *shift
  /// are set, and copy_centroids() reads them. On false nothing has changed and the caller
  /// runs update_centroids() (the default: a backend without a device; also an empty
  /// cluster, which the host path repairs). Saves a device backend the K x D trip to the
  /// host and back every iteration.
  virtual bool update_centroids_kept(std::int64_t k, Metric metric, double* cluster_weight, double* shift) {
    (void)k;
    (void)metric;
    (void)cluster_weight;
    (void)shift;
    return false;
  }
  /// The current centroids [k x D] (fp32, host) of a backend that holds them (after
  /// update_centroids_kept() returned true). The default throws Error(internal).
  virtual void copy_centroids(float* out);

  /// The two halves of a device-resident update, for a distributed fit that reduces the
  /// sums between them without bringing them to the host (DistributedBackend over NCCL):
  ///
  /// device_partial_sums: this backend's per-cluster sums and weights under the current
  /// labels, exactly the values accumulate() would return (same fixed order), left in the
  /// backend's device buffers; `out` says where. The work is complete when it returns (so
  /// that a failure surfaces inside the caller's failure-agreement step). The buffers stay
  /// valid, and may be overwritten in place (the reduction), until the next call into the
  /// backend other than finish_update_from_sums. Returns false, doing nothing, when the
  /// backend has no device (the default).
  virtual bool device_partial_sums(std::int64_t k, DeviceSums* out) {
    (void)k;
    (void)out;
    return false;
  }
  /// The rest of update_centroids from the sums device_partial_sums left (by then the
  /// caller may have replaced them by the sums over all ranks): the same results as
  /// update_centroids when no cluster is empty. When a cluster is empty it returns their
  /// count and changes nothing (next, cluster_weight, shift untouched): the caller then runs
  /// the host path, which repairs them. The default throws Error(internal): only call it
  /// after device_partial_sums returned true.
  virtual std::int64_t finish_update_from_sums(std::int64_t k, Metric metric, const float* current, float* next,
                                               double* cluster_weight, double* shift);

  /// Copy out the current labels [N] / best distances [N] (to host memory).
  virtual void copy_labels(std::int32_t* out) = 0;
  virtual void copy_distances(float* out) = 0;

  /// Among rows of positive weight, the m with the largest best distance, largest first,
  /// ties to the lower index (fewer when fewer rows have positive weight).
  virtual std::vector<std::int64_t> farthest_rows(std::int64_t m) = 0;

  /// Rows by index as fp32 (for cosine: normalised), their labels and weights.
  virtual void gather_rows(const std::int64_t* idx, std::int64_t m, float* rows_out,
                           std::int32_t* labels_out, float* weights_out) = 0;

  /// Exact weighted inertia of the current labels against the current centroids:
  /// sum w * dist(x, c_label) evaluated from differences in fp64 (no cancellation).
  virtual double exact_inertia() = 0;

  /// Per-cluster weights of the current labels (cheap; no sums).
  virtual void cluster_weights(double* out) = 0;

  /// Sample weights [N] to host memory (all ones when none were given).
  virtual void copy_weights(float* out) = 0;

  /// transform(): distances of every row to every current centroid, out [N x k] row-major,
  /// in the memory where x lives (host, or the device for device input). For l2 these are
  /// Euclidean distances (square roots, as scikit-learn's transform), else as `dist`.
  virtual void all_distances(float* out) = 0;

  // ---- initialisation support: a per-row min-distance array `mind` ----

  /// mind[i] = value for every row; returns value * sum of weights.
  virtual double mindist_fill(float value) = 0;
  /// mind[i] = min(mind[i], min_j dist(x_i, c_j)) over the m centroids; returns sum w*mind.
  virtual double mindist_update(const float* centroids, std::int64_t m) = 0;
  /// For each candidate j: pot[j] = sum_i w_i * min(mind_i, dist(x_i, c_j)). mind unchanged.
  virtual void mindist_trial(const float* candidates, std::int64_t m, double* potentials) = 0;
  /// After mindist_trial: mind = min(mind, dist to candidate j of that trial, whose row is
  /// `candidate`); returns sum w*mind. A backend may keep the trial's distances and apply
  /// this lazily; the default recomputes through mindist_update.
  virtual double mindist_commit(std::int64_t j, const float* candidate) {
    (void)j;
    return mindist_update(candidate, 1);
  }
  /// D^2 sampling: for each target t in `targets` (ascending, in [0, sum w*mind)), the first
  /// row i whose inclusive prefix sum of w*mind exceeds t. Prefix sums over fixed chunks.
  virtual std::vector<std::int64_t> sample_by_mindist(const std::vector<double>& targets) = 0;
  /// k-means|| oversampling: rows chosen independently with probability
  /// min(1, factor * w_i * mind_i), using the counter-based uniform(seed, round, i). Ascending.
  virtual std::vector<std::int64_t> sample_bernoulli(double factor, std::uint64_t seed,
                                                     std::uint64_t round) = 0;
  /// Sum of weights of the rows nearest to each of the m centroids: out [m].
  virtual void nearest_weights(const float* centroids, std::int64_t m, double* out) = 0;

 protected:
  /// Host sums and weights of the default update_centroids(), kept between iterations: a
  /// fresh [k x D] fp64 allocation per call costs page faults every iteration.
  std::vector<double> host_sums_, host_weight_;
 private:
  std::int64_t global_row_offset_ = 0;
};

/// The CPU backend (always built). n_threads 0 = all. use_bounds: skip work whose result is
/// provably known (l2: Hamerly bounds in assign, the sketch of k-means++ trials); off only
/// to test that it changes nothing.
std::unique_ptr<Backend> make_cpu_backend(int n_threads, bool use_bounds = true);
/// Rows a CPU backend's k-means++ trials settled from its sketch since attach, summed over
/// trials (tests: that the sketch is used at all); 0 for any other backend.
std::int64_t cpu_kpp_sketch_settled_rows(const Backend& backend);
/// Rows whose label the CPU backend's l2 bounds kept without a full distance pass, since
/// attach: by Hamerly's test, and by the drifted-set test (cpu_backend.cpp, choose_drifted_set).
/// Zero for other backends (tests).
struct BoundsKeptRows {
  std::int64_t hamerly = 0, drifted = 0;
};
BoundsKeptRows cpu_bounds_kept_rows(const Backend& backend);

/// The CUDA backend; throws Error(device_unavailable) when not built or no device.
std::unique_ptr<Backend> make_cuda_backend(int device_id, Precision precision, bool certify);
bool cuda_backend_built() noexcept;
bool cuda_device_present() noexcept;

/// The backend a Params asks for (device and its options).
std::unique_ptr<Backend> make_backend(Device device, int device_id, int n_threads, Precision precision,
                                      bool certify);

}  // namespace flashkm::core
