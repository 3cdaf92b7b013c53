// core::Communicator over NCCL: the ranks of a multi-GPU fit, one GPU each (one host thread
// per GPU in one process, or one process per GPU bootstrapped through MPI).
//
// Determinism: NCCL's reductions combine in an order that depends on the topology and the
// algorithm it picks, so allreduce_sum never uses ncclAllReduce. It all-gathers every
// rank's contribution into a device buffer [size x n] and sums it in rank order on the
// device: the same bits on every rank, for every run, for a given number of ranks.
//
// Liveness: the NCCL communicators are non-blocking (ncclConfig_t::blocking = 0), so no NCCL
// call can block the thread; creation, every collective and the stream are polled against a
// deadline (environment variable FLASHKM_COLLECTIVE_TIMEOUT_S, seconds, default 300) with
// ncclCommGetAsyncError checked; on timeout, an NCCL error or cancel() the communicator is
// aborted (ncclCommAbort) and the call throws flashkm::Error. An aborted one stays unusable.
//
// The payloads are O(K x D) host arrays: they are staged through pinned host memory and
// device buffers owned here (grown on demand, kept between calls). allreduce_sum_device
// takes device memory of the communicator's GPU instead (the Lloyd sums left there by the
// CUDA backend) and never touches the host.
#pragma once

#include <array>
#include <memory>
#include <vector>

#include "core/communicator.hpp"

struct ncclComm;  // nccl.h: typedef struct ncclComm* ncclComm_t (kept out of this header)

namespace flashkm::cuda {

/// The bytes of an ncclUniqueId (NCCL_UNIQUE_ID_BYTES; checked against nccl.h in the .cu):
/// created on one rank, sent to the others (MPI_Bcast), passed to make_nccl_communicator.
using NcclUniqueId = std::array<char, 128>;

/// A fresh id (ncclGetUniqueId); call on one rank only.
NcclUniqueId nccl_unique_id();

class NcclCommunicator final : public core::Communicator {
 public:
  /// Takes ownership of an initialised NCCL communicator of rank `rank` on CUDA `device`.
  NcclCommunicator(ncclComm* comm, int device);
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override;
  int size() const override;
  int device() const;

  std::vector<std::vector<std::byte>> allgather(const void* data, std::size_t bytes) override;
  void allreduce_sum(double* data, std::size_t n) override;
  void broadcast(void* data, std::size_t bytes, int root) override;
  /// Memory of this communicator's device only.
  bool device_allreduce_supported(int device) const override;
  /// In place: ncclAllGather straight from `device_data` into the receive buffer, then the
  /// rank-order sum back into `device_data` (no host staging), after `stream`'s work.
  bool allreduce_sum_device(double* device_data, std::size_t n, int device, void* stream) override;

  /// Another rank failed: make this rank's collective in progress (or its next one) abort
  /// and throw instead of waiting for a peer that will never come. Thread-safe; the
  /// communicator is aborted by the thread that uses it.
  void cancel() noexcept;

 private:
  struct State;
  std::unique_ptr<State> s_;
};

/// One communicator per listed device, all in this process (what ncclCommInitAll does, with
/// the non-blocking config); rank i runs on devices[i]. Each must then be used by one host
/// thread (a collective returns when its result is on the host).
std::vector<std::unique_ptr<NcclCommunicator>> make_nccl_communicators(const std::vector<int>& devices);

/// Destroys every communicator of a group at once, one thread each: ncclCommDestroy waits
/// until the group is quiescent, so destroying the ranks one after the other from a single
/// thread could wait for a peer that is only destroyed later. Leaves `comms` empty.
void destroy_nccl_communicators(std::vector<std::unique_ptr<NcclCommunicator>>& comms);

/// Rank `rank` of `size` from an id shared by rank 0 (the MPI bootstrap), on CUDA `device`.
/// Waits until all ranks have joined (ncclCommInitRankConfig), at most the deadline.
std::unique_ptr<NcclCommunicator> make_nccl_communicator(const NcclUniqueId& id, int rank, int size, int device);

}  // namespace flashkm::cuda
