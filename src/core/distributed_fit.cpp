// One rank's part of a distributed fit: the plain fit's steps over a DistributedBackend,
// with the rank-local checks agreed on before the first collective of the backend.
#include "core/distributed_fit.hpp"

#include <cstring>
#include <exception>

#include "core/backend.hpp"
#include "core/distributed_backend.hpp"
#include "core/fit_driver.hpp"
#include "flashkm/error.hpp"

namespace flashkm::core {
namespace {

/// What must be the same on every rank for the ranks to take the same decisions. (Device,
/// threads and precision may differ: they do not change the results' meaning.)
struct SharedSettings {
  std::int64_t n_clusters, cols;
  std::uint64_t seed, given_hash;
  double tol, oversampling;
  std::int32_t max_iter, n_init, init, metric, n_local_trials, parallel_rounds;

  bool operator==(const SharedSettings&) const = default;
};

SharedSettings shared_settings(const Params& p, const MatrixView& x, const std::vector<float>& given) {
  std::uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a over the given centroids' bytes
  for (const auto* b = reinterpret_cast<const unsigned char*>(given.data()),
                  *e = b + given.size() * sizeof(float);
       b != e; ++b)
    h = (h ^ *b) * 0x100000001b3ull;
  return {p.n_clusters, x.cols, p.seed, h, p.tol, p.oversampling, p.max_iter, p.n_init, static_cast<std::int32_t>(p.init),
          static_cast<std::int32_t>(p.metric), p.n_local_trials, p.parallel_rounds};
}

}  // namespace

Model fit_distributed(const MatrixView& local_x, const Params& params, const FitArgs& args, Communicator& comm) {
  validate(params);  // the same params everywhere: every rank throws the same error, or none
  FLASHKM_CHECK(params.checkpoint_path.empty(), invalid_argument,
                "checkpoint_path: checkpoints of distributed and multi-GPU fits are not supported yet");
  FLASHKM_CHECK(params.device_ids.size() <= 1, invalid_argument,
                "device_ids: a distributed (MPI) fit uses one device per rank (device_id); got ", params.device_ids.size(),
                " device ids");
  std::vector<float> given;
  std::unique_ptr<Backend> local;
  std::exception_ptr failure;
  try {
    // A shard of 0 rows is named by attach(), which knows every rank's row count.
    if (local_x.rows > 0) check_matrix(local_x, "X");
    given = given_centroids(params, args, local_x.cols);
    local = make_backend(params.device, params.device_id, params.n_threads, params.precision, params.certify);
    local->set_memory_budget(params.max_memory);
  } catch (...) {
    failure = std::current_exception();
  }
  agree_or_throw(comm, failure);

  // Ranks given other parameters (or other init centroids) would diverge and deadlock later.
  const SharedSettings mine = shared_settings(params, local_x, given);
  const auto all = comm.allgather(&mine, sizeof mine);
  SharedSettings first, theirs;
  std::memcpy(&first, all[0].data(), sizeof first);
  for (std::size_t r = 1; r < all.size(); ++r) {
    std::memcpy(&theirs, all[r].data(), sizeof theirs);
    FLASHKM_CHECK(theirs == first, invalid_argument,
                  "distributed fit: rank ", r, " was given other parameters, init centroids or number of features ",
                  "than rank 0; every rank must fit with the same ones");
  }

  std::unique_ptr<Backend> backend = make_distributed_backend(std::move(local), comm);
  backend->attach(local_x, args.sample_weight, params.metric);
  FLASHKM_CHECK(params.n_clusters <= backend->rows(), invalid_argument, "n_samples=", backend->rows(),
                " (over ", comm.size(), " ranks) should be >= n_clusters=", params.n_clusters);
  return fit_attached(*backend, params, args, given);
}

}  // namespace flashkm::core
