// Checkpoints of a fit in progress (docs/FORMAT.md, "Checkpoint file"): what identifies the
// fit, and its state between two iterations, written atomically so that a fit killed at any
// moment leaves either the previous or the new checkpoint.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/lloyd.hpp"
#include "flashkm/params.hpp"
#include "flashkm/types.hpp"

namespace flashkm::core {

/// Everything a fit's result depends on. A checkpoint resumes only the fit it came from:
/// the shapes, the parameters and a cheap fingerprint of the data (CRC-32C of up to 64
/// evenly spaced rows, of all sample weights and of the given init centroids).
struct FitFingerprint {
  std::int64_t n = 0, d = 0, k = 0;
  std::uint64_t seed = 0;
  double tol = 0, oversampling = 0;
  std::int32_t max_iter = 0, n_init = 0, n_local_trials = 0, parallel_rounds = 0;
  std::uint8_t dtype = 0, metric = 0, init = 0, device = 0, precision = 0, certify = 0, weighted = 0;
  std::uint32_t data_crc = 0, weights_crc = 0, init_crc = 0;
};

/// Host data is sampled; data in device memory is not (data_crc = 0, documented).
FitFingerprint fingerprint(const MatrixView& x, const Params& params, const float* weights,
                           const float* init_centroids);

/// A fit between two iterations.
struct CheckpointState {
  int run = 0;        ///< the run in progress, or the next one to start
  int iteration = 0;  ///< completed iterations of that run; 0: it has not started
  std::vector<float> centroids;  ///< [K x D] after the last completed iteration (iteration > 0)
  std::vector<float> previous;   ///< [K x D] the centroids that iteration started from
  std::vector<IterationInfo> history;  ///< [iteration] records of the run so far
  int best_run = -1;  ///< the best completed run, -1 when none has completed
  LloydResult best;   ///< its result (valid when best_run >= 0)
};

std::vector<std::uint8_t> checkpoint_to_bytes(const FitFingerprint& fp, const CheckpointState& state);
/// Parse and check a checkpoint against the fit about to resume. Throws Error(format) for a
/// damaged or foreign file, Error(invalid_argument) naming the first field that differs from
/// `expected` (another fit's checkpoint).
CheckpointState checkpoint_from_bytes(const std::uint8_t* data, std::size_t size, const FitFingerprint& expected);

/// The checkpoint of one fit() call.
class Checkpoint {
 public:
  Checkpoint(const Params& params, const MatrixView& x, const float* weights, const float* init_centroids);

  /// Where the fit starts: the saved state when resuming from an existing checkpoint file,
  /// else nullopt (no checkpoint asked for, or resume with no file yet). Throws
  /// Error(invalid_argument) when the file exists but resume is off (never overwritten
  /// silently), and the errors of checkpoint_from_bytes naming the file.
  std::optional<CheckpointState> start() const;

  bool enabled() const noexcept { return !path_.empty(); }
  /// Whether iteration `it` of a run is one to save after (every checkpoint_every).
  bool due(int it) const noexcept { return enabled() && it % every_ == 0; }
  /// Write the state atomically (temporary file, fsync, rename). Throws Error(io).
  void save(const CheckpointState& state) const;

 private:
  std::string path_;
  int every_ = 1;
  bool resume_ = false;
  FitFingerprint fp_;
};

}  // namespace flashkm::core
