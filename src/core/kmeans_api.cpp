// Public entry points: validate at the boundary, then drive a backend.
#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>

#include "core/backend.hpp"
#include "core/checkpoint.hpp"
#include "core/fit_driver.hpp"
#include "core/init.hpp"
#include "core/lloyd.hpp"
#include "core/multi_gpu.hpp"
#include "core/random.hpp"
#include "cpu/kernels.hpp"
#include "flashkm/error.hpp"
#include "flashkm/kmeans.hpp"

namespace flashkm {
namespace core {

void check_matrix(const MatrixView& x, const char* what) {
  FLASHKM_CHECK(static_cast<int>(x.dtype) <= 3, unsupported_type, what, ": unsupported dtype code ", int(x.dtype));
  FLASHKM_CHECK(x.rows > 0, invalid_argument, what, " is empty: 0 samples (rows); at least 1 is required");
  FLASHKM_CHECK(x.cols > 0, invalid_argument, what, " has 0 features (columns); at least 1 is required");
  FLASHKM_CHECK(x.data != nullptr, invalid_argument, what, ": data pointer is null");
  FLASHKM_CHECK(x.stride() >= x.cols, invalid_argument, what, ": row_stride ", x.row_stride,
                " is smaller than the number of columns ", x.cols);
}

std::vector<float> given_centroids(const Params& params, const FitArgs& args, std::int64_t d) {
  const std::int64_t k = params.n_clusters;
  std::vector<float> given;
  if (params.init == InitMethod::given) {
    FLASHKM_CHECK(args.init_centroids != nullptr, invalid_argument,
                  "init 'given' needs init_centroids, an array of shape (n_clusters, n_features) = (", k, ", ", d, ")");
    given.assign(args.init_centroids, args.init_centroids + k * d);
    for (std::int64_t t = 0; t < k * d; ++t)
      FLASHKM_CHECK(std::isfinite(given[t]), invalid_argument, "init centroids contain NaN or infinity: first at row ",
                    t / d, ", column ", t % d);
    if (params.metric == Metric::cosine) {
      for (std::int64_t j = 0; j < k; ++j) {
        double norm2 = 0;
        for (std::int64_t t = 0; t < d; ++t) norm2 += double(given[j * d + t]) * given[j * d + t];
        FLASHKM_CHECK(norm2 > 0, invalid_argument, "metric 'cosine': init centroid ", j, " is all zeros");
        const double s = 1.0 / std::sqrt(norm2);
        for (std::int64_t t = 0; t < d; ++t) given[j * d + t] = static_cast<float>(given[j * d + t] * s);
      }
    }
  }
  return given;
}

double tol_abs(const Params& params, const FeatureMoments& moments) {
  return params.tol > 0 ? params.tol * mean_feature_variance(moments) : 0.0;
}

std::uint64_t run_seed(std::uint64_t seed, int run) {
  return splitmix64(seed + 0x9E3779B97F4A7C15ull * static_cast<std::uint64_t>(run));
}

Model fit_attached(Backend& backend, const Params& params, const FitArgs& args, const std::vector<float>& given,
                   const Checkpoint* checkpoint) {
  const std::int64_t d = backend.cols(), k = params.n_clusters;
  // tol = 0 needs no scale: skip the moments' two passes over X (2 % of a 10-iteration fit).
  const double tol = params.tol > 0 ? tol_abs(params, backend.feature_moments()) : 0.0;

  // A given init is deterministic: more runs would repeat the same fit (scikit-learn warns too).
  const int runs = params.init == InitMethod::given ? 1 : params.n_init;
  const bool saving = checkpoint && checkpoint->enabled();
  CheckpointState state;  // run, best run and best result; the run's own state while saving
  std::optional<CheckpointState> resumed = checkpoint ? checkpoint->start() : std::nullopt;
  if (resumed) {
    state.run = resumed->run;
    state.best_run = resumed->best_run;
    state.best = std::move(resumed->best);
  }
  LloydResult& best = state.best;
  int labels_run = -1;  // the run whose final labels the backend holds
  IterationHook save_iteration;
  if (saving)
    save_iteration = [&](int run, const std::vector<float>& before, const std::vector<float>& after,
                         const std::vector<IterationInfo>& history) {
      const int it = static_cast<int>(history.size());
      if (!checkpoint->due(it)) return;
      state.run = run;
      state.iteration = it;
      state.centroids = after;
      state.previous = before;
      state.history = history;
      checkpoint->save(state);
    };
  for (int run = state.run; run < runs; ++run) {
    LloydResult r;
    if (resumed && resumed->run == run && resumed->iteration > 0) {
      LloydResume from{resumed->iteration, std::move(resumed->previous), std::move(resumed->history)};
      r = lloyd(backend, std::move(resumed->centroids), k, params, tol, run, &from, save_iteration);
    } else {
      const std::uint64_t seed = run_seed(params.seed, run);
      std::vector<float> c0 = params.init == InitMethod::given ? given : initial_centroids(backend, params, seed);
      r = lloyd(backend, std::move(c0), k, params, tol, run, nullptr, save_iteration);
    }
    labels_run = run;
    if (state.best_run < 0 || r.inertia < best.inertia) {
      best = std::move(r);
      state.best_run = run;
    }
    if (saving) {  // the run is complete: the next one starts from its init
      state.run = run + 1;
      state.iteration = 0;
      state.centroids.clear();
      state.previous.clear();
      state.history.clear();
      checkpoint->save(state);
    }
  }
  if (args.labels) {
    if (state.best_run != labels_run) {  // the backend holds another run's labels (or none): reassign
      backend.set_centroids(best.centroids.data(), k);
      backend.assign_labels();
    }
    backend.copy_labels(args.labels);
  }

  return model_of(std::move(best), k, d, params);
}

Model model_of(LloydResult&& run, std::int64_t k, std::int64_t d, const Params& params) {
  Model m;
  m.n_clusters = k;
  m.n_features = d;
  m.metric = params.metric;
  m.centroids = std::move(run.centroids);
  m.cluster_weight = std::move(run.cluster_weight);
  m.inertia = run.inertia;
  m.n_iter = run.n_iter;
  m.converged = run.converged;
  m.seed = params.seed;
  m.init = params.init;
  m.history = std::move(run.history);
  return m;
}

}  // namespace core

namespace {

using core::check_matrix;

void check_model(const Model& m) {
  FLASHKM_CHECK(m.n_clusters >= 1 && m.n_features >= 1 &&
                    static_cast<std::int64_t>(m.centroids.size()) == m.n_clusters * m.n_features,
                invalid_argument, "model is not fitted or inconsistent: ", m.n_clusters, " clusters x ", m.n_features,
                " features but ", m.centroids.size(), " centroid values");
}

void check_features(const Model& m, const MatrixView& x) {
  FLASHKM_CHECK(x.cols == m.n_features, invalid_argument, "X has ", x.cols, " features, but the model was fitted with ",
                m.n_features, " features");
}

std::unique_ptr<core::Backend> backend_for(const PredictOptions& o) {
  FLASHKM_CHECK(o.max_memory >= 0, invalid_argument, "max_memory must be >= 0 (0 = automatic), got ", o.max_memory);
  auto backend = core::make_backend(o.device, o.device_id, o.n_threads, Precision::automatic, true);
  backend->set_memory_budget(o.max_memory);
  return backend;
}

}  // namespace

Model fit(const MatrixView& x, const Params& params, const FitArgs& args) {
  validate(params);
  check_matrix(x, "X");
  const std::int64_t n = x.rows, k = params.n_clusters;
  FLASHKM_CHECK(k <= n, invalid_argument, "n_samples=", n, " should be >= n_clusters=", k);
  const std::vector<float> given = core::given_centroids(params, args, x.cols);
  // Several GPUs: the SPMD path (rows sharded, one thread per GPU); one listed id is that
  // device alone, the plain path below.
  if (params.device_ids.size() > 1) {
    FLASHKM_CHECK(params.checkpoint_path.empty(), invalid_argument,
                  "checkpoint_path: checkpoints of distributed and multi-GPU fits are not supported yet");
    return core::fit_multi_gpu(x, params, args);
  }
  const int device_id = params.device_ids.empty() ? params.device_id : params.device_ids[0];
  // Before any work: a checkpoint that may not be overwritten or does not match fails now.
  const core::Checkpoint checkpoint(params, x, args.sample_weight, given.empty() ? nullptr : given.data());
  std::unique_ptr<core::Backend> backend =
      core::make_backend(params.device, device_id, params.n_threads, params.precision, params.certify);
  backend->set_memory_budget(params.max_memory);
  backend->attach(x, args.sample_weight, params.metric);
  return core::fit_attached(*backend, params, args, given, &checkpoint);
}

void predict(const Model& model, const MatrixView& x, std::int32_t* labels, float* distances,
             const PredictOptions& options) {
  check_model(model);
  check_matrix(x, "X");
  check_features(model, x);
  FLASHKM_CHECK(labels != nullptr || distances != nullptr, invalid_argument, "predict: no output buffer given");
  auto backend = backend_for(options);
  backend->attach(x, nullptr, model.metric);
  backend->set_centroids(model.centroids.data(), model.n_clusters);
  backend->assign_labels();
  if (labels) backend->copy_labels(labels);
  if (distances) backend->copy_distances(distances);
}

void transform(const Model& model, const MatrixView& x, float* out, const PredictOptions& options) {
  check_model(model);
  check_matrix(x, "X");
  check_features(model, x);
  FLASHKM_CHECK(out != nullptr, invalid_argument, "transform: output buffer is null");
  auto backend = backend_for(options);
  backend->attach(x, nullptr, model.metric);
  backend->set_centroids(model.centroids.data(), model.n_clusters);
  backend->all_distances(out);
}

double score(const Model& model, const MatrixView& x, const float* sample_weight, const PredictOptions& options) {
  check_model(model);
  check_matrix(x, "X");
  check_features(model, x);
  auto backend = backend_for(options);
  backend->attach(x, sample_weight, model.metric);
  backend->set_centroids(model.centroids.data(), model.n_clusters);
  backend->assign_labels();
  return -backend->exact_inertia();
}

bool device_available(Device device) {
  if (device == Device::cpu) return true;
  return core::cuda_backend_built() && core::cuda_device_present();
}

const char* cpu_simd_level() { return cpu::select_kernels().name; }

const char* version() { return FLASHKM_VERSION; }

}  // namespace flashkm
