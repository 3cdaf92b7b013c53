// flashkm: command-line k-means. Declares the subcommands and their options (CLI11) and
// reports every failure as one line "flashkm: error: <message>" with a non-zero exit code.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <exception>
#include <string>

#include "byte_size.hpp"
#include "commands.hpp"
#include "flashkm/error.hpp"
#include "flashkm/kmeans.hpp"
#include "interrupt.hpp"

namespace {

using namespace flashkm;

constexpr int kExitError = 1;
constexpr int kExitUsage = 2;
constexpr int kExitInterrupted = 130;  // the shell's convention for SIGINT


// Enumerations are read as text and converted by the library's own parsers, so that the CLI
// accepts exactly the names the library prints.
struct DeviceArgs {
  std::string device = "cpu";
  std::string precision = "auto";
  void add_to(CLI::App* app) {
    app->add_option("--device", device, "cpu or cuda")->capture_default_str();
    app->add_option("--precision", precision, "tensor-core operand precision: auto, fp32, tf32, fp16, bf16 (CUDA)")
        ->capture_default_str();
  }
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"flashkm: exact, deterministic k-means (CPU SIMD and CUDA)"};
  app.set_version_flag("--version", std::string(flashkm::version()));
  app.require_subcommand(1);

  // ---- fit ----
  cli::FitOptions fit;
  DeviceArgs fit_dev;
  std::string metric = "l2";
  CLI::App* fit_cmd = app.add_subcommand("fit", "fit k-means to a data file (.npy, .fvecs, .bvecs)");
  fit_cmd->add_option("DATA", fit.data, "data matrix [N x D]")->required();
  fit_cmd->add_option("-k,--n-clusters", fit.params.n_clusters, "number of clusters K")->required();
  fit_cmd->add_option("--init", fit.init, "k-means++, k-means||, random, or FILE.npy of K x D centroids")
      ->capture_default_str();
  fit_cmd->add_option("--max-iter", fit.params.max_iter, "Lloyd iterations at most")->capture_default_str();
  fit_cmd->add_option("--tol", fit.params.tol, "relative centroid-shift tolerance")->capture_default_str();
  fit_cmd->add_option("--seed", fit.params.seed, "random seed")->capture_default_str();
  fit_cmd->add_option("--n-init", fit.params.n_init, "runs from different seeds; the best is kept")
      ->capture_default_str();
  fit_cmd->add_option("--metric", metric, "l2, cosine or inner_product")->capture_default_str();
  fit_dev.add_to(fit_cmd);
  fit_cmd->add_option("--gpus", fit.params.device_ids,
                      "CUDA devices to shard the rows over, e.g. 0,1 (multi-GPU over NCCL; with --device cuda)")
      ->delimiter(',');
  fit_cmd->add_option("--threads", fit.params.n_threads, "CPU threads (0 = all)")->capture_default_str();
  std::string fit_max_memory, pred_max_memory;
  const char* max_memory_help =
      "memory budget, e.g. 4G. CPU: resident host memory (default: half the RAM); a larger data file is "
      "streamed, dropping pages once read. CUDA: device memory (default: the free memory); data that does "
      "not fit is streamed from host memory in chunks, keeping a prefix of rows on the device";
  fit_cmd->add_option("--max-memory", fit_max_memory, max_memory_help);
  fit_cmd->add_option("-o,--model", fit.model_out, "write the model (flashkm model file)");
  fit_cmd->add_option("--labels", fit.labels_out, "write the labels [N] int32 .npy");
  fit_cmd->add_option("--centroids", fit.centroids_out, "write the centroids [K x D] float32 .npy");
  fit_cmd->add_option("--report", fit.report_out, "write a JSON report of the run");
  fit_cmd->add_flag("-q,--quiet", fit.quiet, "no progress bar and no summary");
  fit_cmd->add_option("--checkpoint", fit.params.checkpoint_path,
                      "save the fit's state to FILE after iterations (atomic); removed once the outputs are written");
  fit_cmd->add_option("--checkpoint-every", fit.params.checkpoint_every, "iterations between checkpoints")
      ->capture_default_str();
  fit_cmd->add_flag("--resume", fit.params.resume,
                    "continue from the --checkpoint FILE when it exists (same data and options)");
  fit_cmd->add_option("--distributed", fit.distributed,
                      "auto (MPI when started by mpirun with > 1 rank), mpi, or off; each rank fits its "
                      "own contiguous rows, rank 0 writes the outputs")
      ->check(CLI::IsMember({"auto", "mpi", "off"}))
      ->capture_default_str();

  // ---- predict ----
  cli::PredictOptions pred;
  DeviceArgs pred_dev;
  CLI::App* pred_cmd = app.add_subcommand("predict", "label a data file with a fitted model");
  pred_cmd->add_option("MODEL", pred.model, "model file")->required();
  pred_cmd->add_option("DATA", pred.data, "data matrix [N x D]")->required();
  pred_cmd->add_option("-o,--labels", pred.labels_out, "write the labels [N] int32 .npy")->required();
  pred_cmd->add_option("--distances", pred.distances_out, "write the distance to the nearest centroid [N] float32 .npy");
  pred_dev.add_to(pred_cmd);
  pred_cmd->add_option("--threads", pred.n_threads, "CPU threads (0 = all)");
  pred_cmd->add_option("--max-memory", pred_max_memory, max_memory_help);

  // ---- info ----
  cli::InfoOptions info;
  CLI::App* info_cmd = app.add_subcommand("info", "print a model file's header as JSON");
  info_cmd->add_option("MODEL", info.model, "model file")->required();

  // ---- bench ----
  cli::BenchOptions bench;
  DeviceArgs bench_dev;
  CLI::App* bench_cmd = app.add_subcommand("bench", "time Lloyd iterations on generated blobs");
  bench_cmd->add_option("-n", bench.n, "rows")->capture_default_str();
  bench_cmd->add_option("-d", bench.d, "features")->capture_default_str();
  bench_cmd->add_option("-k", bench.k, "clusters")->capture_default_str();
  bench_cmd->add_option("--iters", bench.iters, "iterations")->capture_default_str();
  bench_cmd->add_option("--seed", bench.seed, "random seed")->capture_default_str();
  bench_dev.add_to(bench_cmd);
  bench_cmd->add_option("--threads", bench.n_threads, "CPU threads (0 = all)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    cli::print_error(e.what());
    return kExitUsage;
  }

  cli::install_interrupt_handler();
  try {
    if (fit_cmd->parsed()) {
      fit.params.metric = parse_metric(metric);
      fit.params.device = parse_device(fit_dev.device);
      fit.params.precision = parse_precision(fit_dev.precision);
      if (!fit_max_memory.empty()) fit.params.max_memory = cli::parse_byte_size(fit_max_memory);
      return cli::run_fit(fit);
    }
    if (pred_cmd->parsed()) {
      pred.device = parse_device(pred_dev.device);
      if (!pred_max_memory.empty()) pred.max_memory = cli::parse_byte_size(pred_max_memory);
      return cli::run_predict(pred);
    }
    if (info_cmd->parsed()) return cli::run_info(info);
    if (bench_cmd->parsed()) {
      bench.device = parse_device(bench_dev.device);
      bench.precision = parse_precision(bench_dev.precision);
      return cli::run_bench(bench);
    }
  } catch (const Error& e) {
    cli::print_error(e.what());
    return e.kind() == ErrorKind::interrupted ? kExitInterrupted : kExitError;
  } catch (const std::bad_alloc&) {
    return cli::print_error("out of memory");
  } catch (const std::exception& e) {
    return cli::print_error(e.what());
  }
  return kExitUsage;
}

int flashkm::cli::print_error(std::string message) {
  std::replace(message.begin(), message.end(), '\n', ' ');  // always exactly one line
  std::fprintf(stderr, "flashkm: error: %s\n", message.c_str());
  std::fflush(stderr);
  return kExitError;
}
