// Parameters of a k-means fit: one struct, defaults in place, validated in one place.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "flashkm/types.hpp"

namespace flashkm {

/// What one Lloyd iteration did; passed to the progress callback and kept in the model.
struct IterationInfo {
  int iteration = 0;          ///< 1-based
  double inertia = 0;         ///< weighted sum of distances to the centroids the iteration started from
  double shift = 0;           ///< sum of squared centroid movements in this iteration
  double ms = 0;              ///< wall time of the iteration in milliseconds
  std::int64_t n_changed = 0; ///< rows whose label changed (all rows on the first iteration)
  std::int64_t n_rechecked = 0;  ///< rows re-checked at higher precision (tensor-core certification)
};

/// Called after every iteration with the fit's run index (n_init) and the iteration's record.
/// Return false to stop the fit: fit() then throws Error(ErrorKind::interrupted).
using ProgressFn = std::function<bool(int run, const IterationInfo&)>;

struct Params {
  std::int64_t n_clusters = 8;     ///< K, number of centroids (1 <= K <= N)
  int max_iter = 300;              ///< Lloyd iterations at most per run (>= 1)
  double tol = 1e-4;               ///< stop when the centroid shift <= tol * mean feature variance (scikit-learn)
  InitMethod init = InitMethod::kmeanspp;  ///< `given` needs init centroids passed to fit()
  int n_init = 1;                  ///< independent runs from different seeds; the lowest inertia wins
  std::uint64_t seed = 0;          ///< all randomness derives from it: same seed, same result
  Metric metric = Metric::l2;
  Device device = Device::cpu;     ///< cuda is an error when not built or no GPU is present
  int device_id = 0;               ///< CUDA device ordinal
  /// Multi-GPU fit (device cuda only): the CUDA devices to shard the rows over, one host
  /// thread and one contiguous row range per device, combined through NCCL. Empty = the
  /// single `device_id`; one id = that device alone. Results are bitwise reproducible for a
  /// given device count and agree with one GPU within the exact contract (docs/CUDA.md).
  std::vector<int> device_ids;
  Precision precision = Precision::automatic;  ///< tensor-core operand precision (CUDA only)
  bool certify = true;             ///< re-check rows whose best/second gap is under the rounding bound
  int n_threads = 0;               ///< CPU threads; 0 = all available. Results do not depend on it.
  /// CPU: bytes of host memory the fit may keep resident (0 = half the physical memory).
  /// Data in a memory-mapped file (MatrixView::mapped_file) larger than what the per-row
  /// state leaves of it is streamed: passes drop the pages they are done with.
  /// CUDA: bytes of device memory the fit plans for (0 = the device's free memory; also
  /// capped by FLASHKM_CUDA_MEMORY_BUDGET). Host data that does not fit is streamed: a prefix
  /// of rows stays on the device, the rest is copied in chunks on every pass (docs/CUDA.md,
  /// "Data larger than the GPU"). Results do not depend on it (bitwise). An explicit budget
  /// below the per-row state is an error (out_of_memory, naming the bytes).
  std::int64_t max_memory = 0;
  int n_local_trials = 0;          ///< greedy k-means++ candidates per step; 0 = 2 + floor(ln K)
  int parallel_rounds = 5;         ///< k-means|| rounds
  double oversampling = 2.0;       ///< k-means|| expected candidates per round, times K
  ProgressFn progress;             ///< optional; see ProgressFn
  /// Checkpoint file (docs/FORMAT.md): written atomically after every `checkpoint_every`
  /// completed iterations and after every completed run. Empty = none. An existing file is
  /// an error unless `resume` is set.
  std::string checkpoint_path;
  int checkpoint_every = 1;        ///< iterations between checkpoints (>= 1)
  /// Continue from checkpoint_path when it exists (it must match this fit: same data, K,
  /// seed, ...; else Error). The result is the model of an uninterrupted fit. A missing
  /// file starts the fit from the beginning.
  bool resume = false;
};

/// Checks every field; throws Error(invalid_argument) naming the first bad field.
void validate(const Params& params);

}  // namespace flashkm
