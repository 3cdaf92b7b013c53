// The flashkm command-line tool: one function per subcommand, each taking its parsed options.
// main.cpp declares the options (CLI11) and turns every exception into one error line.
#pragma once

#include <cstdint>
#include <string>

#include "flashkm/params.hpp"

namespace flashkm::cli {

struct FitOptions {
  std::string data;
  Params params;                   ///< params.init is derived from `init` by run_fit
  std::string init = "k-means++";  ///< a method name, or a .npy file of initial centroids
  std::string model_out, labels_out, centroids_out, report_out;
  bool quiet = false;
  /// auto: an MPI fit when started by an MPI launcher with more than one rank; mpi: always
  /// (an error when built without MPI); off: never (every rank would fit alone).
  std::string distributed = "auto";
};

struct PredictOptions {
  std::string model, data;
  std::string labels_out, distances_out;
  Device device = Device::cpu;
  int device_id = 0;
  int n_threads = 0;
  std::int64_t max_memory = 0;  ///< bytes; 0 = automatic (Params::max_memory)
};

struct InfoOptions {
  std::string model;
};

struct BenchOptions {
  std::int64_t n = 200000, d = 128, k = 1024;
  int iters = 10;
  std::uint64_t seed = 0;
  Device device = Device::cpu;
  Precision precision = Precision::automatic;
  int n_threads = 0;
};

int run_fit(const FitOptions& o);
int run_predict(const PredictOptions& o);
int run_info(const InfoOptions& o);
int run_bench(const BenchOptions& o);

/// Report a failure as the one line "flashkm: error: <message>" on stderr; returns exit code 1.
int print_error(std::string message);

}  // namespace flashkm::cli
