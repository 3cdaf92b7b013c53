// One rank's part of a distributed fit: the plain fit's steps over a DistributedBackend,
// with the rank-local checks agreed on before the first collective of the backend.
#include "core/distributed_fit.hpp"

#include <exception>

#include "core/backend.hpp"
#include "core/distributed_backend.hpp"
#include "core/fit_driver.hpp"
#include "flashkm/error.hpp"

namespace flashkm::core {

Model fit_distributed(const MatrixView& local_x, const Params& params, const FitArgs& args, Communicator& comm) {
  validate(params);  // the same params everywhere: every rank throws the same error, or none
  std::vector<float> given;
  std::unique_ptr<Backend> local;
  std::exception_ptr failure;
  try {
    // A shard of 0 rows is named by attach(), which knows every rank's row count.
    if (local_x.rows > 0) check_matrix(local_x, "X");
    given = given_centroids(params, args, local_x.cols);
    local = make_backend(params.device, params.device_id, params.n_threads, params.precision, params.certify);
  } catch (...) {
    failure = std::current_exception();
  }
  agree_or_throw(comm, failure);

  std::unique_ptr<Backend> backend = make_distributed_backend(std::move(local), comm);
  backend->attach(local_x, args.sample_weight, params.metric);
  FLASHKM_CHECK(params.n_clusters <= backend->rows(), invalid_argument, "n_samples=", backend->rows(),
                " (over ", comm.size(), " ranks) should be >= n_clusters=", params.n_clusters);
  return fit_attached(*backend, params, args, given);
}

}  // namespace flashkm::core
