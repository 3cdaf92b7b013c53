// flashkm fit DATA -k K ...: fit, then write the requested outputs all-or-nothing.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include "commands.hpp"
#include "core/communicator.hpp"
#include "core/distributed_fit.hpp"
#include "core/multi_gpu.hpp"
#include "cpu/convert.hpp"
#include "flashkm/error.hpp"
#include "flashkm/kmeans.hpp"
#include "io/npy.hpp"
#include "mpi/mpi_world.hpp"
#include "output_set.hpp"
#include "progress.hpp"
#include "report.hpp"

namespace flashkm::cli {
namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// --init FILE.npy: the initial centroids, [K x D] of any float dtype, as fp32.
std::vector<float> load_init_centroids(const std::string& path, std::int64_t k, std::int64_t d) {
  const io::LoadedMatrix c = io::load_npy(path);
  FLASHKM_CHECK(c.view.rows == k && c.view.cols == d, invalid_argument, "--init '", path, "' has shape (",
                c.view.rows, ", ", c.view.cols, "), expected (n_clusters, n_features) = (", k, ", ", d, ")");
  std::vector<float> out(static_cast<std::size_t>(k * d));
  for (std::int64_t i = 0; i < k; ++i) cpu::load_row(c.view, i, out.data() + i * d);
  return out;
}

void write_text(io::AtomicFile* f, const std::string& s) {
  if (f) f->write(s.data(), s.size());
}

/// Whether this run is one rank of an MPI fit (see FitOptions::distributed).
bool use_mpi(const FitOptions& o) {
  if (o.distributed == "off") return false;
  if (o.distributed == "mpi") return true;
  const int launched = mpi::launched_size();
  if (launched <= 1) return false;
  // Silently running `launched` independent full fits that race on the outputs would be worse.
  FLASHKM_CHECK(mpi::built(), device_unavailable, "started by an MPI launcher with ", launched,
                " ranks, but this flashkm was built without MPI (install libopenmpi-dev and configure with "
                "-DFLASHKM_MPI=ON), or pass --distributed off to run independent fits");
  return true;
}

/// Runs `step` on every rank; when it fails on any, every rank throws (naming the rank).
template <class F>
void on_every_rank(core::Communicator* comm, F&& step) {
  if (!comm) return step();
  std::exception_ptr failure;
  try {
    step();
  } catch (...) {
    failure = std::current_exception();
  }
  core::agree_or_throw(*comm, failure);
}

/// The fit and its outputs; with `comm`, this process is one rank of a distributed fit: it
/// fits its own contiguous rows, and rank 0 alone writes the outputs and prints.
int fit_and_write(const FitOptions& o, core::Communicator* comm) {
  Params params = o.params;
  const bool init_from_file = ends_with(o.init, ".npy");
  params.init = init_from_file ? InitMethod::given : parse_init(o.init);
  FLASHKM_CHECK(init_from_file || params.init != InitMethod::given, invalid_argument,
                "--init given needs the initial centroids: pass --init FILE.npy");
  validate(params);
  const int rank = comm ? comm->rank() : 0, ranks = comm ? comm->size() : 1;
  const bool root = rank == 0;

  // Reserve every output before the (possibly long) fit: a bad path fails now, and nothing
  // appears at any output path unless everything succeeds.
  OutputSet outputs;
  io::AtomicFile *model_file = nullptr, *labels_file = nullptr, *centroids_file = nullptr, *report_file = nullptr;
  io::LoadedMatrix data, local;
  std::vector<float> init_centroids;
  on_every_rank(comm, [&] {
    if (root) {
      model_file = outputs.reserve(o.model_out);
      labels_file = outputs.reserve(o.labels_out);
      centroids_file = outputs.reserve(o.centroids_out);
      report_file = outputs.reserve(o.report_out);
    }
    data = io::load_matrix(o.data);  // memory-mapped: a rank reads only the pages of its rows
    const std::int64_t n = data.view.rows, begin = n * rank / ranks, end = n * (rank + 1) / ranks;
    local = io::row_range(data, begin, end - begin);
    if (init_from_file) init_centroids = load_init_centroids(o.init, params.n_clusters, data.view.cols);
  });

  FitProgress progress(params.max_iter, params.init == InitMethod::given ? 1 : params.n_init,
                       root && !o.quiet && ::isatty(STDERR_FILENO));
  params.progress = progress.callback();
  if (comm) {
    // Ctrl-C reaches the ranks at different moments: they agree at every iteration (the
    // driver calls this at the same point on every rank), so all stop at the same one.
    params.progress = [comm, local = params.progress](int run, const IterationInfo& it) {
      double stop = local(run, it) ? 0.0 : 1.0;
      comm->allreduce_sum(&stop, 1);
      return stop == 0.0;
    };
  }
  const bool want_labels = !o.labels_out.empty();  // the same on every rank
  std::vector<std::int32_t> labels(want_labels ? static_cast<std::size_t>(local.view.rows) : 0);
  FitArgs args;
  args.init_centroids = init_from_file ? init_centroids.data() : nullptr;
  args.labels = want_labels ? labels.data() : nullptr;

  // A distributed GPU fit: one GPU per rank (the local rank's entry of --gpus, else the
  // GPU numbered by the local rank), the ranks' sums combined over NCCL, bootstrapped over MPI.
  std::unique_ptr<core::Communicator> fit_comm;
  if (comm && params.device == Device::cuda) {
    on_every_rank(comm, [&] {
      const int local = mpi::local_rank();
      if (params.device_ids.empty()) {
        params.device_id += local;
      } else {
        FLASHKM_CHECK(local < static_cast<int>(params.device_ids.size()), invalid_argument, "--gpus lists ",
                      params.device_ids.size(), " GPUs, but this host runs more ranks (local rank ", local,
                      "); under mpirun --gpus gives one GPU per rank of a host");
        params.device_id = params.device_ids[static_cast<std::size_t>(local)];
        params.device_ids.clear();
      }
    });
    fit_comm = core::nccl_communicator_over(*comm, params.device_id);
  }
  const auto t0 = std::chrono::steady_clock::now();
  Model model;
  try {
    model = comm ? core::fit_distributed(local.view, params, args, fit_comm ? *fit_comm : *comm)
                 : fit(data.view, params, args);
  } catch (...) {
    progress.finish();
    throw;
  }
  progress.finish();
  const double total_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();

  if (comm && want_labels) {  // every rank's labels to rank 0, in rank order = row order
    const std::vector<std::vector<std::byte>> parts = comm->gather(labels.data(), labels.size() * sizeof(std::int32_t), 0);
    if (root) {
      labels.resize(static_cast<std::size_t>(data.view.rows));
      std::size_t at = 0;
      for (const auto& part : parts) {
        std::memcpy(reinterpret_cast<std::byte*>(labels.data()) + at, part.data(), part.size());
        at += part.size();
      }
      FLASHKM_ASSERT(at == labels.size() * sizeof(std::int32_t), "gathered labels do not cover the rows");
    }
  }
  on_every_rank(comm, [&] {
    if (!root) return;
    if (model_file) {
      const std::vector<std::uint8_t> bytes = model.to_bytes();
      model_file->write(bytes.data(), bytes.size());
    }
    if (labels_file) io::write_npy(*labels_file, labels.data(), {data.view.rows});
    if (centroids_file) io::write_npy(*centroids_file, model.centroids.data(), {model.n_clusters, model.n_features});
    FitReport report{o, data, model, total_ms, progress.init_ms()};
    report.ranks = ranks;
    write_text(report_file, fit_report_json(report));
    outputs.commit_all();
    // The outputs hold the result now; a checkpoint left behind would only make the next run
    // with the same --checkpoint refuse to start (it never overwrites one without --resume).
    if (!params.checkpoint_path.empty()) std::remove(params.checkpoint_path.c_str());
  });

  if (root && !o.quiet)
    std::printf("fit %lld x %lld (%s), k=%lld: inertia %.9g, %d iterations%s, %.1f ms%s\n",
                static_cast<long long>(data.view.rows), static_cast<long long>(data.view.cols),
                data.file_dtype.c_str(), static_cast<long long>(model.n_clusters), model.inertia, model.n_iter,
                model.converged ? " (converged)" : " (max_iter reached)", total_ms,
                ranks > 1 ? (", " + std::to_string(ranks) + " ranks").c_str() : "");
  return 0;
}

}  // namespace

int run_fit(const FitOptions& o) {
  std::unique_ptr<mpi::World> world;
  if (use_mpi(o)) world = std::make_unique<mpi::World>();
  core::Communicator* comm = world ? &world->comm() : nullptr;
  try {
    return fit_and_write(o, comm);
  } catch (const Error& e) {
    if (!comm) throw;
    // Errors of a distributed fit are agreed: every rank has the same one, rank 0 prints it.
    // mpirun ends the whole job as soon as one rank exits non-zero, so no rank leaves before
    // rank 0 has printed (a barrier, bounded by the collective time limit).
    if (comm->rank() == 0) print_error(e.what());
    try {
      comm->allgather(nullptr, 0);
    } catch (...) {  // a broken communicator: rank 0 has printed or cannot be waited for
    }
    return e.kind() == ErrorKind::interrupted ? 130 : 1;
  }
}

}  // namespace flashkm::cli
