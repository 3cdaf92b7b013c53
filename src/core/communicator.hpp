// Collective operations between the ranks of a distributed fit.
//
// A distributed fit is SPMD: every rank (an MPI process, or one host thread per GPU) runs
// the same Lloyd driver and the same initialisation over a DistributedBackend, which does
// the row work on the rank's own shard and combines the O(K x D) or scalar results through
// a Communicator. Because every combination is deterministic and identical on every rank,
// the driver's decisions (sampling, stopping, empty-cluster repair) are the same on every
// rank and the ranks stay in lockstep without further messages.
//
// Implementations: in-process threads (tests, and one thread per GPU), MPI (src/mpi/), NCCL
// (src/cuda/). Sums are always taken in rank order, never in arrival order, so results are
// bitwise identical run to run for a given number of ranks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace flashkm::core {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;

  /// Every rank contributes `bytes` bytes (the count may differ between ranks); every rank
  /// receives all contributions, indexed by rank. Collective: all ranks must call it.
  virtual std::vector<std::vector<std::byte>> allgather(const void* data, std::size_t bytes) = 0;

  /// data[i] = sum over ranks, in rank order, of every rank's data[i] (fp64). Equal on all
  /// ranks. The default goes through allgather; implementations may do better (a
  /// reduce-scatter / allgather pair that keeps the rank order).
  virtual void allreduce_sum(double* data, std::size_t n);

  /// Whether allreduce_sum_device works on memory of CUDA `device` (false by default:
  /// host-only communicators). A local fact, asked before the collective: every rank must
  /// agree (through a step) that all of them can take the device path before any calls it.
  virtual bool device_allreduce_supported(int device) const {
    (void)device;
    return false;
  }
  /// allreduce_sum on n doubles in device memory of CUDA `device`, in place, with the same
  /// bits as allreduce_sum (rank order). `stream` (a cudaStream_t, may be null) is the
  /// stream whose earlier work produced the data: the reduction is ordered after it. The
  /// result is complete on return. Collective. Returns false, doing nothing (and without
  /// communicating), when !device_allreduce_supported(device).
  virtual bool allreduce_sum_device(double* device_data, std::size_t n, int device, void* stream) {
    (void)device_data;
    (void)n;
    (void)device;
    (void)stream;
    return false;
  }

  /// Every rank's bytes to `root` only, indexed by rank; the other ranks receive an empty
  /// vector. For results of size N that only one rank writes out (labels). The default goes
  /// through allgather; implementations may do better.
  virtual std::vector<std::vector<std::byte>> gather(const void* data, std::size_t bytes, int root);

  /// `bytes` bytes from `root` to every rank.
  virtual void broadcast(void* data, std::size_t bytes, int root) = 0;
};

/// Failure agreement, called by every rank after a local step that may throw: when any rank
/// failed, every rank throws flashkm::Error naming the first failed rank and its message
/// (so no rank is left waiting in the next collective). `local_failure` is null on success.
void agree_or_throw(Communicator& comm, const std::exception_ptr& local_failure);

/// A local step and the exchange of its result in one collective: every rank runs
/// `local_step` and receives every rank's bytes, indexed by rank; when any rank's step threw,
/// every rank throws as agree_or_throw does (the failure travels with the data, so a step
/// costs one collective, not two).
std::vector<std::vector<std::byte>> allgather_step(Communicator& comm,
                                                   const std::function<std::vector<std::byte>()>& local_step);

/// How long a rank waits in one collective before it gives up with an error, so that a dead
/// or diverged rank never hangs the others: FLASHKM_COLLECTIVE_TIMEOUT_S seconds (default 300).
double collective_timeout_seconds();
/// Seconds as text for messages ("300", "0.5").
std::string seconds_text(double seconds);

/// A communicator of one rank (a distributed fit on one rank equals a plain fit).
std::unique_ptr<Communicator> make_single_communicator();

/// `n` communicators connected in memory, one per host thread; rank i is element i. A rank
/// that waits longer than collective_timeout_seconds() throws Error(io), and so does every
/// later collective of the group (the group is broken).
std::vector<std::unique_ptr<Communicator>> make_thread_communicators(int n);

}  // namespace flashkm::core
