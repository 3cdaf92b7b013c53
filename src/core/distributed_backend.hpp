// A Backend over the row shards of a distributed (SPMD) fit.
//
// Every rank wraps its local backend (its own contiguous range of rows) and runs the same,
// unchanged driver over the wrapper. The wrapper does each step on the local rows and
// combines the O(K x D) or scalar results through the Communicator, summing in rank order,
// so every rank receives the same bits and takes the same decisions. Row indices that cross
// the interface are global (rank r's rows are offset_r .. offset_r + n_r - 1, ranks in order).
//
// Semantics that differ from a plain backend, by design:
// * rows() is the global N; copy_labels, copy_distances and all_distances write the rank's
//   OWN rows only (n_local entries): nothing of size N is ever gathered, except
// * copy_weights, used by init 'random' only: it allgathers all N weights (O(N) per rank).
// * Every rank needs at least one row: a rank with 0 rows makes attach() throw on every rank
//   (naming it) -- a shard of no rows is a launch mistake, not a use case worth the special
//   cases. Each shard's weights must also not all be zero (the local backend checks that).
// * A local step that throws on one rank makes every rank throw Error naming the first
//   failed rank and its message (the failure travels with the step's collective).
// * update_centroids stays on the devices when every rank's backend has device sums
//   (device_partial_sums) and the communicator reduces device memory (NCCL): l2 results
//   equal the host path's bitwise; FLASHKM_DISTRIBUTED_HOST_UPDATE=1 forces the host path.
// With one rank the results are bitwise identical to the local backend's.
#pragma once

#include <memory>

#include "core/backend.hpp"
#include "core/communicator.hpp"

namespace flashkm::core {

/// `comm` must outlive the returned backend.
std::unique_ptr<Backend> make_distributed_backend(std::unique_ptr<Backend> local, Communicator& comm);

}  // namespace flashkm::core
