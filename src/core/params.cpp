// The one place where Params are checked.
#include <cmath>

#include "flashkm/error.hpp"
#include "flashkm/params.hpp"

namespace flashkm {

void validate(const Params& p) {
  FLASHKM_CHECK(p.n_clusters >= 1, invalid_argument, "n_clusters must be >= 1, got ", p.n_clusters);
  FLASHKM_CHECK(p.max_iter >= 1, invalid_argument, "max_iter must be >= 1, got ", p.max_iter);
  FLASHKM_CHECK(std::isfinite(p.tol) && p.tol >= 0, invalid_argument, "tol must be finite and >= 0, got ", p.tol);
  FLASHKM_CHECK(p.n_init >= 1, invalid_argument, "n_init must be >= 1, got ", p.n_init);
  FLASHKM_CHECK(p.n_threads >= 0, invalid_argument, "n_threads must be >= 0 (0 = all), got ", p.n_threads);
  FLASHKM_CHECK(p.n_local_trials >= 0, invalid_argument, "n_local_trials must be >= 0 (0 = 2 + ln K), got ",
                p.n_local_trials);
  FLASHKM_CHECK(p.parallel_rounds >= 1, invalid_argument, "parallel_rounds must be >= 1, got ", p.parallel_rounds);
  FLASHKM_CHECK(std::isfinite(p.oversampling) && p.oversampling > 0, invalid_argument,
                "oversampling must be > 0, got ", p.oversampling);
  FLASHKM_CHECK(p.max_memory >= 0, invalid_argument, "max_memory must be >= 0 (0 = automatic), got ", p.max_memory);
  FLASHKM_CHECK(p.checkpoint_every >= 1, invalid_argument, "checkpoint_every must be >= 1, got ", p.checkpoint_every);
  FLASHKM_CHECK(!p.resume || !p.checkpoint_path.empty(), invalid_argument,
                "resume needs a checkpoint_path to resume from");
  FLASHKM_CHECK(p.device_id >= 0, invalid_argument, "device_id must be >= 0, got ", p.device_id);
  // device_ids is a multi-GPU request: ignoring it on the CPU would silently run elsewhere.
  FLASHKM_CHECK(p.device_ids.empty() || p.device == Device::cuda, invalid_argument,
                "device_ids (multi-GPU) needs device 'cuda', but device is 'cpu'");
  for (std::size_t i = 0; i < p.device_ids.size(); ++i) {
    FLASHKM_CHECK(p.device_ids[i] >= 0, invalid_argument, "device_ids[", i, "] must be >= 0, got ", p.device_ids[i]);
    for (std::size_t j = 0; j < i; ++j)
      FLASHKM_CHECK(p.device_ids[j] != p.device_ids[i], invalid_argument, "device_ids lists CUDA device ",
                    p.device_ids[i], " twice (at ", j, " and ", i, "); each GPU can hold one shard");
  }
  FLASHKM_CHECK(static_cast<int>(p.metric) <= 2, invalid_argument, "unknown metric value ", int(p.metric));
  FLASHKM_CHECK(static_cast<int>(p.init) <= 3, invalid_argument, "unknown init value ", int(p.init));
  FLASHKM_CHECK(static_cast<int>(p.device) <= 1, invalid_argument, "unknown device value ", int(p.device));
  FLASHKM_CHECK(static_cast<int>(p.precision) <= 4, invalid_argument, "unknown precision value ", int(p.precision));
}

}  // namespace flashkm
