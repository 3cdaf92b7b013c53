// The seam between the batched Lloyd driver (core/batched_lloyd.cpp) and the hardware.
//
// A batched backend holds B independent problems (their rows, weights and per-row state)
// and runs the single-problem Backend operations on many of them at once: one call covers
// every problem of the current *active set* (the problems given to the last
// set_centroids()), in one pass or one launch where the hardware allows. Per-problem
// results must equal what the problem's own single Backend returns (the driver relies on
// it for "a problem in a batch is the problem alone"); the CPU backend is literally one
// single Backend per problem.
//
// problem(b) is problem b as a single Backend: the initialisations (k-means++, k-means||,
// random) run through it with the existing code (core/init.cpp), and a backend whose own
// update cannot repair an empty cluster runs the core's host path on it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/backend.hpp"
#include "flashkm/error.hpp"
#include "flashkm/params.hpp"
#include "flashkm/types.hpp"

namespace flashkm::core {

/// One problem as the backend takes it: its rows and optional weights (same location).
struct ProblemData {
  MatrixView x;
  const float* weights = nullptr;
};

class BatchedBackend {
 public:
  virtual ~BatchedBackend() = default;
  virtual const char* name() const = 0;

  /// Take the problems (same D, same dtype and location, checked by the caller) and
  /// validate their values: Error(invalid_argument) "problem b: <the single backend's
  /// message>", rows named within the problem; the lowest problem index wins.
  virtual void attach(const std::vector<ProblemData>& problems, Metric metric) = 0;
  virtual std::int64_t problems() const = 0;
  virtual std::int64_t rows(std::int64_t b) const = 0;
  virtual std::int64_t cols() const = 0;

  /// Per-problem feature moments (the tol scale), as the problem's own backend gives them.
  virtual std::vector<FeatureMoments> feature_moments() = 0;

  /// Problem b alone as a single Backend (initialisation, empty-cluster repair). The
  /// reference stays valid until the next call into this backend.
  virtual Backend& problem(std::int64_t b) = 0;
  /// Problem b as a Backend that need only answer rows(), cols(), copy_weights() and
  /// gather_rows() with problem(b)'s values (what init 'random' reads). A backend for which
  /// problem(b) is costly returns a light view; the default is problem(b).
  virtual Backend& problem_rows(std::int64_t b) { return problem(b); }

  /// The active set and its centroids: problem active[a] gets k[a] centroids c[a] [k[a] x D]
  /// (host). Later calls act on these problems.
  virtual void set_centroids(const std::vector<std::int64_t>& active, const std::vector<const float*>& c,
                             const std::vector<std::int64_t>& k) = 0;

  /// Backend::assign (labels_only: assign_labels) of the problems `which` (a subset of the
  /// active set, ascending); out[i] is problem which[i]'s statistics.
  virtual void assign(const std::vector<std::int64_t>& which, bool labels_only, std::vector<AssignStats>& out) = 0;

  /// Backend::update_centroids of every active problem a (whole contract, empty-cluster
  /// repair included): current[a] are the centroids set_centroids() got, next[a] [k x D],
  /// weight[a] [k] and shift[a] receive the results.
  virtual void update_centroids(Metric metric, const std::vector<const float*>& current,
                                const std::vector<float*>& next, const std::vector<double*>& weight,
                                std::vector<double>& shift) = 0;

  /// Backend::update_centroids_kept of every active problem: on true the new centroids are
  /// the backend's current ones for the active set, exactly as if set_centroids() had been
  /// given update_centroids()'s `next` (same bits), and weight[a] [k], shift[a] are set; on
  /// false nothing has changed and the caller runs update_centroids(). Default: false.
  virtual bool update_centroids_kept(Metric metric, const std::vector<double*>& weight, std::vector<double>& shift) {
    (void)metric;
    (void)weight;
    (void)shift;
    return false;
  }
  /// The current centroids of the active problems, out[a] [k x D] (host), after
  /// update_centroids_kept() returned true. The default throws Error(internal).
  virtual void copy_centroids(const std::vector<float*>& out) {
    (void)out;
    FLASHKM_FAIL(internal, "copy_centroids() on the batched '", name(), "' backend, which keeps no centroids");
  }

  /// Backend::exact_inertia / cluster_weights of every active problem (out[a], weight[a] [k]).
  virtual void exact_inertia(std::vector<double>& out) = 0;
  virtual void cluster_weights(const std::vector<double*>& weight) = 0;

  /// Problem b's current labels [n_b] (to host or device memory where its x lives).
  virtual void copy_labels(std::int64_t b, std::int32_t* out) = 0;
};

/// fn(), with a flashkm::Error it throws rethrown as "problem b: <message>" (same kind).
template <class Fn>
decltype(auto) for_problem(std::int64_t b, Fn&& fn) {
  try {
    return fn();
  } catch (const Error& e) {
    throw Error(e.kind(), "problem " + std::to_string(b) + ": " + e.what());
  }
}

/// The CPU batched backend: one CPU Backend per problem, problems spread over threads.
std::unique_ptr<BatchedBackend> make_cpu_batched_backend(int n_threads);

/// The CUDA batched backend (ragged problems in one launch); throws
/// Error(device_unavailable) when CUDA is not built or no device is present.
std::unique_ptr<BatchedBackend> make_cuda_batched_backend(int device_id, Precision precision, bool certify);

}  // namespace flashkm::core
