// JSON documents of the CLI: the fit report (--report) and the model header (info).
// nlohmann::json stays inside report.cpp (it is slow to compile).
#pragma once

#include <cstdint>
#include <string>

#include "commands.hpp"
#include "flashkm/model.hpp"
#include "io/matrix.hpp"

namespace flashkm::cli {

struct FitReport {
  const FitOptions& options;
  const io::LoadedMatrix& data;
  const Model& model;
  double total_ms = 0;  ///< wall time of fit()
  double init_ms = 0;   ///< of which before the first iteration of each run
  int ranks = 1;        ///< processes of a distributed (MPI) fit
};

/// The --report document, 2-space indented, ending in a newline.
std::string fit_report_json(const FitReport& r);

/// The model header (everything but the arrays) as printed by `flashkm info`.
std::string model_info_json(const Model& m, const std::string& path, std::uint64_t file_bytes);

/// Peak resident memory of this process (VmHWM of /proc/self/status) in bytes; 0 if unknown.
std::int64_t peak_memory_bytes();

}  // namespace flashkm::cli
