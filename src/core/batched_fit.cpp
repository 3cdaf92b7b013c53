// fit_batched: validation at the boundary, per-problem initialisation through the
// single-problem code, and the batched Lloyd driver, written once for every backend
// (core/batched_backend.hpp). The driver runs, per iteration, the single driver's steps
// (set_centroids -> assign -> update_centroids) on every problem still running, then
// applies the single driver's stopping rule to each (lloyd_stops); a problem that stops
// drops out of the later passes. The final step is lloyd()'s, per problem.
#include <algorithm>
#include <chrono>
#include <numeric>
#include <string>

#include "core/batched_backend.hpp"
#include "core/batched_lloyd.hpp"
#include "core/fit_driver.hpp"
#include "core/init.hpp"
#include "core/lloyd.hpp"
#include "flashkm/batched.hpp"
#include "flashkm/error.hpp"

namespace flashkm {
namespace core {
namespace {

template <class T>
std::vector<T*> pointers(std::vector<std::vector<T>>& v, const std::vector<std::int64_t>& which) {
  std::vector<T*> p(which.size());
  for (std::size_t a = 0; a < which.size(); ++a) p[a] = v[static_cast<std::size_t>(which[a])].data();
  return p;
}

}  // namespace

std::vector<LloydResult> batched_lloyd(BatchedBackend& be, std::vector<std::vector<float>> c,
                                       const std::vector<std::int64_t>& k, const Params& params,
                                       const std::vector<double>& tol) {
  using clock = std::chrono::steady_clock;
  const std::int64_t n_problems = be.problems(), d = be.cols();
  std::vector<LloydResult> out(static_cast<std::size_t>(n_problems));
  std::vector<std::vector<float>> next(out.size());
  std::vector<std::vector<double>> weight(out.size());
  std::vector<char> stable(out.size(), 0);
  std::vector<std::int64_t> active(out.size());
  std::iota(active.begin(), active.end(), std::int64_t{0});
  std::vector<AssignStats> stats;
  std::vector<double> shift;
  auto ks_of = [&](const std::vector<std::int64_t>& which) {
    std::vector<std::int64_t> ks(which.size());
    for (std::size_t a = 0; a < which.size(); ++a) ks[a] = k[static_cast<std::size_t>(which[a])];
    return ks;
  };

  // A backend that keeps its updated centroids (update_centroids_kept) leaves c[b] of the
  // `held` problems stale until they are needed on the host: when the active set changes
  // (a problem stopped), for a host-path update, at the end (lloyd()'s scheme, per batch).
  bool host_current = true;
  std::vector<std::int64_t> held;
  auto fetch = [&] {
    if (!host_current) be.copy_centroids(pointers(c, held));
    host_current = true;
  };
  for (int it = 1; it <= params.max_iter && !active.empty(); ++it) {
    const auto t0 = clock::now();
    for (const std::int64_t b : active) {
      next[b].resize(static_cast<std::size_t>(k[b] * d));
      weight[b].resize(static_cast<std::size_t>(k[b]));
    }
    if (!host_current && held != active) fetch();
    if (host_current) {
      const std::vector<float*> cur = pointers(c, active);
      be.set_centroids(active, std::vector<const float*>(cur.begin(), cur.end()), ks_of(active));
    }
    be.assign(active, false, stats);
    const bool kept = be.update_centroids_kept(params.metric, pointers(weight, active), shift);
    if (kept) {
      host_current = false;
      held = active;
    } else {
      fetch();
      const std::vector<float*> cur = pointers(c, active);
      be.update_centroids(params.metric, std::vector<const float*>(cur.begin(), cur.end()), pointers(next, active),
                          pointers(weight, active), shift);
    }
    // One wall time for the whole batch's iteration: the problems ran together.
    const double ms = std::chrono::duration<double, std::milli>(clock::now() - t0).count();
    std::vector<std::int64_t> running;
    running.reserve(active.size());
    for (std::size_t a = 0; a < active.size(); ++a) {
      const std::int64_t b = active[a];
      if (!kept) c[b].swap(next[b]);
      const IterationInfo info = iteration_record(it, stats[a], shift[a], be.rows(b), ms);
      out[b].history.push_back(info);
      out[b].n_iter = it;
      if (params.progress && !params.progress(static_cast<int>(b), info))
        FLASHKM_FAIL(interrupted, "fit_batched interrupted by the progress callback after iteration ", it,
                     " of problem ", b);
      bool labels_stable = false;
      out[b].converged = lloyd_stops(it, stats[a].n_changed, shift[a], tol[b], &labels_stable);
      stable[b] = labels_stable;
      if (!out[b].converged) running.push_back(b);
    }
    active.swap(running);
  }

  // lloyd()'s final step per problem: labels against the final centroids (unless they were
  // stable), exact inertia, cluster weights.
  fetch();
  std::vector<std::int64_t> all(out.size()), unstable;
  std::iota(all.begin(), all.end(), std::int64_t{0});
  for (const std::int64_t b : all)
    if (!stable[b]) unstable.push_back(b);
  const std::vector<float*> fin = pointers(c, all);
  be.set_centroids(all, std::vector<const float*>(fin.begin(), fin.end()), ks_of(all));
  if (!unstable.empty()) be.assign(unstable, true, stats);
  std::vector<double> inertia;
  be.exact_inertia(inertia);
  for (const std::int64_t b : all) out[b].cluster_weight.resize(static_cast<std::size_t>(k[b]));
  std::vector<double*> cw(out.size());
  for (const std::int64_t b : all) cw[b] = out[b].cluster_weight.data();
  be.cluster_weights(cw);
  for (const std::int64_t b : all) {
    out[b].inertia = inertia[b];
    out[b].centroids = std::move(c[b]);
  }
  return out;
}

namespace {

std::unique_ptr<BatchedBackend> make_batched_backend(const Params& p) {
  if (p.device == Device::cpu) return make_cpu_batched_backend(p.n_threads);
  const int device_id = p.device_ids.empty() ? p.device_id : p.device_ids[0];
  return make_cuda_batched_backend(device_id, p.precision, p.certify);
}

}  // namespace
}  // namespace core

std::vector<Model> fit_batched(std::span<const BatchedProblem> problems, const Params& params) {
  using core::for_problem;
  validate(params);
  FLASHKM_CHECK(!problems.empty(), invalid_argument, "fit_batched: no problems given (B = 0)");
  FLASHKM_CHECK(params.n_init == 1 || params.init == InitMethod::given, invalid_argument,
                "fit_batched: n_init must be 1 (each problem is fitted once), got ", params.n_init);
  FLASHKM_CHECK(params.device_ids.size() <= 1, invalid_argument,
                "fit_batched: several device_ids (multi-GPU) are not supported for batched fits; give one device");
  FLASHKM_CHECK(params.checkpoint_path.empty() && !params.resume, invalid_argument,
                "fit_batched: checkpoint_path / resume are not supported for batched fits");
  const auto n_problems = static_cast<std::int64_t>(problems.size());
  FLASHKM_CHECK(n_problems < (std::int64_t{1} << 31), invalid_argument, "fit_batched: at most 2^31 - 1 problems, got ",
                n_problems);

  // ---- validation: shapes, K, given centroids (values of the rows: the backend's attach) ----
  const MatrixView& x0 = problems[0].x;
  std::vector<std::int64_t> k(problems.size());
  std::vector<std::vector<float>> given(problems.size());
  for (std::int64_t b = 0; b < n_problems; ++b) {
    const BatchedProblem& pb = problems[b];
    const std::string name = "problem " + std::to_string(b);
    core::check_matrix(pb.x, name.c_str());
    FLASHKM_CHECK(pb.x.cols == x0.cols, invalid_argument, "problem ", b, " has ", pb.x.cols,
                  " features but problem 0 has ", x0.cols, ": every problem needs the same number of features");
    FLASHKM_CHECK(pb.x.dtype == x0.dtype, invalid_argument, "problem ", b, " has dtype ", to_string(pb.x.dtype),
                  " but problem 0 has ", to_string(x0.dtype), ": every problem needs the same dtype");
    FLASHKM_CHECK(pb.x.where == x0.where && (pb.x.where == Location::host || pb.x.device_id == x0.device_id),
                  invalid_argument, "problem ", b,
                  " lives in other memory than problem 0: every problem must be in host memory or on the same GPU");
    FLASHKM_CHECK(pb.n_clusters >= 0, invalid_argument, "problem ", b, ": n_clusters must be >= 1 (or 0 = Params::n_clusters), got ",
                  pb.n_clusters);
    k[b] = pb.n_clusters > 0 ? pb.n_clusters : params.n_clusters;
    FLASHKM_CHECK(k[b] <= pb.x.rows, invalid_argument, "problem ", b, ": n_samples=", pb.x.rows,
                  " should be >= n_clusters=", k[b]);
    FLASHKM_CHECK(k[b] < (std::int64_t{1} << 31), invalid_argument, "problem ", b, ": n_clusters=", k[b],
                  " is too large (at most 2^31 - 1)");
    if (params.init == InitMethod::given) {
      Params p = params;
      p.n_clusters = k[b];
      FitArgs args;
      args.init_centroids = pb.init_centroids;
      given[b] = for_problem(b, [&] { return core::given_centroids(p, args, x0.cols); });
    }
  }

  // ---- attach, tol scales, initial centroids (each problem through the single-problem init) ----
  std::unique_ptr<core::BatchedBackend> be = core::make_batched_backend(params);
  std::vector<core::ProblemData> data(problems.size());
  for (std::int64_t b = 0; b < n_problems; ++b) data[b] = {problems[b].x, problems[b].sample_weight};
  be->attach(data, params.metric);
  std::vector<double> tol(problems.size(), 0.0);
  if (params.tol > 0) {  // tol = 0 needs no scale: no moments pass
    const std::vector<core::FeatureMoments> moments = be->feature_moments();
    for (std::int64_t b = 0; b < n_problems; ++b) tol[b] = core::tol_abs(params, moments[b]);
  }
  std::vector<std::vector<float>> c0(problems.size());
  const std::uint64_t seed = core::run_seed(params.seed, 0);
  for (std::int64_t b = 0; b < n_problems; ++b) {
    if (params.init == InitMethod::given) {
      c0[b] = std::move(given[b]);
      continue;
    }
    Params p = params;
    p.n_clusters = k[b];
    // init 'random' reads only weights and rows: a backend may hand a light view for it.
    c0[b] = for_problem(b, [&] {
      return core::initial_centroids(p.init == InitMethod::random ? be->problem_rows(b) : be->problem(b), p, seed);
    });
  }

  std::vector<core::LloydResult> runs = core::batched_lloyd(*be, std::move(c0), k, params, tol);

  std::vector<Model> models(problems.size());
  for (std::int64_t b = 0; b < n_problems; ++b) {
    if (problems[b].labels) be->copy_labels(b, problems[b].labels);
    models[b] = core::model_of(std::move(runs[b]), k[b], x0.cols, params);
  }
  return models;
}

std::vector<Model> fit_batched(const RaggedBatch& batch, const Params& params) {
  const MatrixView& x = batch.x;
  core::check_matrix(x, "X");
  const auto& off = batch.offsets;
  FLASHKM_CHECK(off.size() >= 2, invalid_argument, "fit_batched: offsets must hold B + 1 >= 2 entries, got ",
                off.size());
  const auto n_problems = static_cast<std::int64_t>(off.size()) - 1;
  FLASHKM_CHECK(off[0] == 0, invalid_argument, "fit_batched: offsets[0] must be 0, got ", off[0]);
  for (std::int64_t b = 0; b < n_problems; ++b)
    FLASHKM_CHECK(off[b + 1] >= off[b], invalid_argument, "fit_batched: offsets must be ascending: offsets[", b + 1,
                  "] = ", off[b + 1], " < offsets[", b, "] = ", off[b]);
  FLASHKM_CHECK(off[n_problems] == x.rows, invalid_argument, "fit_batched: offsets[B] = ", off[n_problems],
                " must equal the number of rows of X, ", x.rows);
  const std::size_t nk = batch.n_clusters.size();
  FLASHKM_CHECK(nk == 0 || nk == 1 || nk == static_cast<std::size_t>(n_problems), invalid_argument,
                "fit_batched: n_clusters must hold B = ", n_problems, " entries (or 1, or none), got ", nk);
  std::vector<BatchedProblem> ps(static_cast<std::size_t>(n_problems));
  const float* init = batch.init_centroids;
  for (std::int64_t b = 0; b < n_problems; ++b) {
    BatchedProblem& p = ps[b];
    const std::int64_t n = off[b + 1] - off[b];
    p.x = x;
    p.x.data = n > 0 ? x.row(off[b]) : x.data;  // an empty problem is reported by the checks
    p.x.rows = n;
    p.x.row_stride = x.stride();
    p.sample_weight = batch.sample_weight ? batch.sample_weight + off[b] : nullptr;
    p.n_clusters = nk == 0 ? 0 : batch.n_clusters[nk == 1 ? 0 : b];
    p.labels = batch.labels ? batch.labels + off[b] : nullptr;
    if (init) {
      p.init_centroids = init;
      const std::int64_t kb = p.n_clusters > 0 ? p.n_clusters : params.n_clusters;
      if (kb > 0) init += kb * x.cols;
    }
  }
  return fit_batched(std::span<const BatchedProblem>(ps), params);
}

}  // namespace flashkm
