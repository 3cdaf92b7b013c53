// flashkm fit DATA -k K ...: fit, then write the requested outputs all-or-nothing.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <vector>

#include "commands.hpp"
#include "cpu/convert.hpp"
#include "flashkm/error.hpp"
#include "flashkm/kmeans.hpp"
#include "io/npy.hpp"
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

}  // namespace

int run_fit(const FitOptions& o) {
  Params params = o.params;
  const bool init_from_file = ends_with(o.init, ".npy");
  params.init = init_from_file ? InitMethod::given : parse_init(o.init);
  FLASHKM_CHECK(init_from_file || params.init != InitMethod::given, invalid_argument,
                "--init given needs the initial centroids: pass --init FILE.npy");
  validate(params);

  // Reserve every output before the (possibly long) fit: a bad path fails now, and nothing
  // appears at any output path unless everything succeeds.
  OutputSet outputs;
  io::AtomicFile* model_file = outputs.reserve(o.model_out);
  io::AtomicFile* labels_file = outputs.reserve(o.labels_out);
  io::AtomicFile* centroids_file = outputs.reserve(o.centroids_out);
  io::AtomicFile* report_file = outputs.reserve(o.report_out);

  const io::LoadedMatrix data = io::load_matrix(o.data);
  std::vector<float> init_centroids;
  if (init_from_file) init_centroids = load_init_centroids(o.init, params.n_clusters, data.view.cols);

  FitProgress progress(params.max_iter, params.init == InitMethod::given ? 1 : params.n_init,
                       !o.quiet && ::isatty(STDERR_FILENO));
  params.progress = progress.callback();
  std::vector<std::int32_t> labels(labels_file ? static_cast<std::size_t>(data.view.rows) : 0);
  FitArgs args;
  args.init_centroids = init_from_file ? init_centroids.data() : nullptr;
  args.labels = labels_file ? labels.data() : nullptr;

  const auto t0 = std::chrono::steady_clock::now();
  Model model;
  try {
    model = fit(data.view, params, args);
  } catch (...) {
    progress.finish();
    throw;
  }
  progress.finish();
  const double total_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();

  if (model_file) {
    const std::vector<std::uint8_t> bytes = model.to_bytes();
    model_file->write(bytes.data(), bytes.size());
  }
  if (labels_file) io::write_npy(*labels_file, labels.data(), {data.view.rows});
  if (centroids_file) io::write_npy(*centroids_file, model.centroids.data(), {model.n_clusters, model.n_features});
  write_text(report_file, fit_report_json({o, data, model, total_ms, progress.init_ms()}));
  outputs.commit_all();
  // The outputs hold the result now; a checkpoint left behind would only make the next run
  // with the same --checkpoint refuse to start (it never overwrites one without --resume).
  if (!params.checkpoint_path.empty()) std::remove(params.checkpoint_path.c_str());

  if (!o.quiet)
    std::printf("fit %lld x %lld (%s), k=%lld: inertia %.9g, %d iterations%s, %.1f ms\n",
                static_cast<long long>(data.view.rows), static_cast<long long>(data.view.cols),
                data.file_dtype.c_str(), static_cast<long long>(model.n_clusters), model.inertia, model.n_iter,
                model.converged ? " (converged)" : " (max_iter reached)", total_ms);
  return 0;
}

}  // namespace flashkm::cli
