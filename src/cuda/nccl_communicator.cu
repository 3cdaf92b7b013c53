// NCCL communicator: all-gather + rank-ordered device sum, deadline-polled collectives.
#include <nccl.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include "cuda/cuda_check.hpp"
#include "cuda/nccl_communicator.hpp"
#include "flashkm/error.hpp"

namespace flashkm::cuda {
namespace {

static_assert(sizeof(ncclUniqueId) == std::tuple_size_v<NcclUniqueId>, "NcclUniqueId must hold an ncclUniqueId");

void nccl_check(ncclResult_t r, const char* what, ErrorKind kind = ErrorKind::internal) {
  if (r == ncclSuccess) return;
  std::string msg = "NCCL error in ";
  msg += what;
  msg += ": ";
  msg += ncclGetErrorString(r);
  const char* last = ncclGetLastError(nullptr);
  if (last && *last) {
    msg += " (";
    msg += last;
    msg += ")";
  }
  throw Error(kind, msg);
}

/// out[i] = in[0][i] + in[1][i] + ... + in[size-1][i], in rank order (fp64).
__global__ void sum_in_rank_order(const double* __restrict__ in, int size, std::size_t n, double* __restrict__ out) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n;
       i += std::size_t(gridDim.x) * blockDim.x) {
    double s = in[i];
    for (int r = 1; r < size; ++r) s += in[std::size_t(r) * n + i];
    out[i] = s;
  }
}

}  // namespace

struct NcclCommunicator::State {
  ncclComm_t comm = nullptr;
  int rank = 0, size = 1, device = 0;
  double timeout_s = 300;
  cudaStream_t stream = nullptr;
  cudaEvent_t after = nullptr;             // allreduce_sum_device: the caller's stream -> ours
  DeviceBuffer<unsigned char> send, recv;  // this rank's contribution; all contributions
  DeviceBuffer<double> sum;                // allreduce_sum's result
  PinnedBuffer<unsigned char> host;        // staging both ways (stream order separates them)
  std::atomic<bool> cancelled{false};
  bool aborted = false;

  void abort() noexcept {
    if (!aborted && comm) ncclCommAbort(comm);
    aborted = true;
  }

  [[noreturn]] void fail(ErrorKind kind, const std::string& why) {
    abort();
    throw Error(kind, "NCCL collective on rank " + std::to_string(rank) + " of " + std::to_string(size) +
                          " (CUDA device " + std::to_string(device) + ") " + why + "; the communicator was aborted");
  }

  void check_usable(const char* what) {
    if (aborted)
      throw Error(ErrorKind::internal, std::string(what) + " on an NCCL communicator that was aborted by an earlier failure");
    if (cancelled.load()) fail(ErrorKind::interrupted, std::string(what) + " cancelled: another rank failed");
  }

  /// Polls until done() is true, against the deadline, watching the communicator's
  /// asynchronous error and cancel(). Spinning (yield) for the first millisecond keeps small
  /// collectives fast; then 50 us sleeps spare the CPU.
  template <class Done>
  void poll(const char* what, Done done) {
    using clock = std::chrono::steady_clock;
    const auto t0 = clock::now();
    const auto deadline = t0 + std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>(timeout_s));
    for (;;) {
      if (done()) return;
      ncclResult_t async = ncclSuccess;
      const ncclResult_t q = ncclCommGetAsyncError(comm, &async);
      if (q != ncclSuccess || (async != ncclSuccess && async != ncclInProgress))
        fail(ErrorKind::internal, std::string(what) + " failed: " + ncclGetErrorString(q != ncclSuccess ? q : async));
      if (cancelled.load()) fail(ErrorKind::interrupted, std::string(what) + " cancelled: another rank failed");
      const auto now = clock::now();
      if (now > deadline)
        fail(ErrorKind::device_unavailable,
             std::string(what) + " timed out after " + std::to_string(timeout_s) +
                 " s (FLASHKM_COLLECTIVE_TIMEOUT_S): a peer rank stopped or hangs");
      if (now - t0 < std::chrono::milliseconds(1))
        std::this_thread::yield();
      else
        std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }

  /// The result of an NCCL call on this (non-blocking) communicator: ncclInProgress means
  /// the call goes on in the background (connection setup with the peers, the first time):
  /// wait until it has been enqueued before anything else touches the communicator.
  void call(ncclResult_t r, const char* what) {
    if (r == ncclInProgress) {
      poll(what, [&] {
        ncclResult_t st = ncclSuccess;
        return ncclCommGetAsyncError(comm, &st) == ncclSuccess && st == ncclSuccess;
      });
      return;
    }
    if (r != ncclSuccess) fail(ErrorKind::internal, std::string(what) + " failed: " + ncclGetErrorString(r));
  }

  /// Waits for everything enqueued on the stream.
  void wait(const char* what) {
    poll(what, [&] {
      const cudaError_t e = cudaStreamQuery(stream);
      if (e == cudaSuccess) return true;
      if (e == cudaErrorNotReady) return false;
      (void)cudaGetLastError();
      fail(ErrorKind::internal, std::string(what) + " failed: CUDA error " + cudaGetErrorName(e) + ": " +
                                    cudaGetErrorString(e));
    });
  }

  /// Sizes every buffer a collective needs before anything is enqueued: growing one frees
  /// the old allocation, which must never happen under an operation in flight.
  void reserve(std::size_t send_bytes, std::size_t recv_bytes) {
    send.ensure(std::max<std::size_t>(send_bytes, 1), "the NCCL send buffer");
    recv.ensure(std::max<std::size_t>(recv_bytes, 1), "the NCCL receive buffer");
    host.ensure(std::max<std::size_t>({send_bytes, recv_bytes, 1}), "the NCCL host staging buffer");
  }

  /// Host bytes -> send (via the pinned staging buffer; reserve() first).
  void upload(const void* data, std::size_t bytes) {
    if (bytes == 0) return;
    std::memcpy(host.get(), data, bytes);
    FLASHKM_CUDA_CHECK(cudaMemcpyAsync(send.get(), host.get(), bytes, cudaMemcpyHostToDevice, stream));
  }

  /// Device bytes -> host staging, waited for with the deadline, then -> out (reserve() first).
  void download(const void* dev, std::size_t bytes, void* out, const char* what) {
    if (bytes > 0) FLASHKM_CUDA_CHECK(cudaMemcpyAsync(host.get(), dev, bytes, cudaMemcpyDeviceToHost, stream));
    wait(what);
    if (bytes > 0) std::memcpy(out, host.get(), bytes);
  }

  /// `bytes` of send (default: the send buffer; equal on all ranks) from every rank into
  /// recv [size x bytes].
  void allgather_equal(std::size_t bytes, const void* from = nullptr) {
    call(ncclAllGather(from ? from : send.get(), recv.get(), bytes, ncclUint8, comm, stream), "ncclAllGather");
  }

  /// out[i] = sum over ranks of recv's n doubles, in rank order (enqueued on the stream).
  void sum_received(std::size_t n, double* out) {
    const int threads = 256;
    const int blocks = static_cast<int>(std::min<std::size_t>((n + threads - 1) / threads, 4096));
    sum_in_rank_order<<<blocks, threads, 0, stream>>>(reinterpret_cast<const double*>(recv.get()), size, n, out);
    FLASHKM_CUDA_LAUNCH_CHECK();
  }
};

NcclCommunicator::NcclCommunicator(ncclComm* comm, int device) : s_(std::make_unique<State>()) {
  s_->comm = comm;
  s_->device = device;
  s_->timeout_s = core::collective_timeout_seconds();
  nccl_check(ncclCommUserRank(comm, &s_->rank), "ncclCommUserRank");
  nccl_check(ncclCommCount(comm, &s_->size), "ncclCommCount");
  DeviceGuard g(device);
  FLASHKM_CUDA_CHECK(cudaStreamCreateWithFlags(&s_->stream, cudaStreamNonBlocking));
}

NcclCommunicator::~NcclCommunicator() {
  // No DeviceGuard and no throwing poll(): a destructor must not throw.
  int prev = 0;
  const bool restore = cudaGetDevice(&prev) == cudaSuccess;
  cudaSetDevice(s_->device);
  // A cancelled communicator's peers may never get here: abort (local, immediate). Else
  // finalize (non-blocking: waits for the group to be quiescent) under the deadline, then
  // free; a group that never gets quiescent is aborted instead of hanging the process.
  if (s_->cancelled.load()) s_->abort();
  if (!s_->aborted) {
    ncclResult_t r = ncclCommFinalize(s_->comm);
    const auto deadline = std::chrono::steady_clock::now() +
                          std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                              std::chrono::duration<double>(s_->timeout_s));
    ncclResult_t st = r;
    while (r == ncclSuccess || r == ncclInProgress) {
      if (ncclCommGetAsyncError(s_->comm, &st) != ncclSuccess || st != ncclInProgress) break;
      if (std::chrono::steady_clock::now() > deadline) break;
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    if ((r == ncclSuccess || r == ncclInProgress) && st == ncclSuccess)
      ncclCommDestroy(s_->comm);
    else
      s_->abort();
  }
  s_->send.release();
  s_->recv.release();
  s_->sum.release();
  if (s_->after) cudaEventDestroy(s_->after);
  if (s_->stream) cudaStreamDestroy(s_->stream);
  if (restore) cudaSetDevice(prev);
}

int NcclCommunicator::rank() const { return s_->rank; }
int NcclCommunicator::size() const { return s_->size; }
int NcclCommunicator::device() const { return s_->device; }
void NcclCommunicator::cancel() noexcept { s_->cancelled.store(true); }

std::vector<std::vector<std::byte>> NcclCommunicator::allgather(const void* data, std::size_t bytes) {
  State& s = *s_;
  s.check_usable("allgather");
  DeviceGuard g(s.device);
  // NCCL gathers equal counts: first the byte counts, then every contribution padded to the
  // largest (the padding is never read).
  const std::uint64_t mine = bytes;
  std::vector<std::uint64_t> counts(static_cast<std::size_t>(s.size));
  s.reserve(sizeof mine, sizeof mine * s.size);
  s.upload(&mine, sizeof mine);
  s.allgather_equal(sizeof mine);
  s.download(s.recv.get(), counts.size() * sizeof mine, counts.data(), "allgather (sizes)");
  const std::size_t most = static_cast<std::size_t>(*std::max_element(counts.begin(), counts.end()));
  std::vector<std::vector<std::byte>> out(static_cast<std::size_t>(s.size));
  if (most == 0) return out;
  std::vector<std::byte> all(most * s.size);
  s.reserve(most, all.size());  // every rank sends `most` bytes: the tail past `bytes` is padding
  s.upload(data, bytes);
  s.allgather_equal(most);
  s.download(s.recv.get(), all.size(), all.data(), "allgather");
  for (int r = 0; r < s.size; ++r)
    out[r].assign(all.begin() + std::size_t(r) * most, all.begin() + std::size_t(r) * most + counts[r]);
  return out;
}

void NcclCommunicator::allreduce_sum(double* data, std::size_t n) {
  State& s = *s_;
  s.check_usable("allreduce_sum");
  if (n == 0) return;
  DeviceGuard g(s.device);
  s.reserve(n * sizeof(double), n * sizeof(double) * s.size);
  s.sum.ensure(n, "the NCCL sum buffer");
  s.upload(data, n * sizeof(double));
  s.allgather_equal(n * sizeof(double));
  s.sum_received(n, s.sum.get());
  s.download(s.sum.get(), n * sizeof(double), data, "allreduce_sum");
}

bool NcclCommunicator::device_allreduce_supported(int device) const { return device == s_->device; }

bool NcclCommunicator::allreduce_sum_device(double* data, std::size_t n, int device, void* stream) {
  State& s = *s_;
  if (!device_allreduce_supported(device)) return false;
  s.check_usable("allreduce_sum_device");
  if (n == 0) return true;
  DeviceGuard g(s.device);
  // Only the receive buffer: the data is sent from where it is and the sum written back
  // there (the all-gather has finished reading it by then: same stream).
  s.recv.ensure(n * sizeof(double) * s.size, "the NCCL receive buffer");
  if (stream) {
    // The caller's work on `data` (its stream) before the all-gather, without a host wait.
    if (!s.after) FLASHKM_CUDA_CHECK(cudaEventCreateWithFlags(&s.after, cudaEventDisableTiming));
    FLASHKM_CUDA_CHECK(cudaEventRecord(s.after, static_cast<cudaStream_t>(stream)));
    FLASHKM_CUDA_CHECK(cudaStreamWaitEvent(s.stream, s.after, 0));
  }
  s.allgather_equal(n * sizeof(double), data);
  s.sum_received(n, data);
  // Waited for on the host, under the deadline: the result is complete on return, so any
  // later work of the caller (any stream) sees it.
  s.wait("allreduce_sum_device");
  return true;
}

void NcclCommunicator::broadcast(void* data, std::size_t bytes, int root) {
  State& s = *s_;
  FLASHKM_CHECK(root >= 0 && root < s.size, invalid_argument, "broadcast root ", root, " is not a rank of ", s.size);
  s.check_usable("broadcast");
  if (bytes == 0) return;
  DeviceGuard g(s.device);
  s.reserve(bytes, bytes);
  s.upload(data, bytes);  // only the root's bytes matter; the others' are overwritten
  s.call(ncclBroadcast(s.send.get(), s.recv.get(), bytes, ncclUint8, root, s.comm, s.stream), "ncclBroadcast");
  s.download(s.recv.get(), bytes, data, "broadcast");
}

NcclUniqueId nccl_unique_id() {
  ncclUniqueId id;
  nccl_check(ncclGetUniqueId(&id), "ncclGetUniqueId", ErrorKind::device_unavailable);
  NcclUniqueId out;
  std::memcpy(out.data(), &id, sizeof id);
  return out;
}

namespace {

/// Waits until every communicator of a non-blocking creation is ready (or failed), against
/// the collective deadline; on failure aborts them all and throws.
void await_init(std::vector<ncclComm_t>& comms, const char* what) {
  const double timeout_s = core::collective_timeout_seconds();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                                                std::chrono::duration<double>(timeout_s));
  auto abort_all = [&] {
    for (ncclComm_t& c : comms)
      if (c) ncclCommAbort(c), c = nullptr;
  };
  for (ncclComm_t c : comms) {
    for (;;) {
      ncclResult_t st = ncclInProgress;
      const ncclResult_t q = ncclCommGetAsyncError(c, &st);
      if (q == ncclSuccess && st == ncclSuccess) break;
      if (q != ncclSuccess || st != ncclInProgress) {
        const std::string msg = ncclGetErrorString(q != ncclSuccess ? q : st);
        abort_all();
        throw Error(ErrorKind::device_unavailable, std::string(what) + " failed: " + msg);
      }
      if (std::chrono::steady_clock::now() > deadline) {
        abort_all();
        throw Error(ErrorKind::device_unavailable, std::string(what) + " timed out after " +
                                                       std::to_string(timeout_s) +
                                                       " s (FLASHKM_COLLECTIVE_TIMEOUT_S): a rank did not join");
      }
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  }
}

/// Non-blocking communicators: every call returns at once (ncclInProgress while it goes on),
/// so a rank whose peer never comes (failed, or stopped) can give up at its deadline or on
/// cancel() instead of blocking inside NCCL, e.g. in the first collective's connection setup.
ncclConfig_t nonblocking_config() {
  ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
  cfg.blocking = 0;
  return cfg;
}

std::vector<std::unique_ptr<NcclCommunicator>> wrap(std::vector<ncclComm_t>& comms, const std::vector<int>& devices) {
  std::vector<std::unique_ptr<NcclCommunicator>> out;
  try {
    for (std::size_t i = 0; i < comms.size(); ++i) {
      out.push_back(std::make_unique<NcclCommunicator>(comms[i], devices[i]));
      comms[i] = nullptr;
    }
  } catch (...) {
    for (ncclComm_t c : comms)
      if (c) ncclCommAbort(c);
    for (auto& c : out) c->cancel();  // abort, not a destroy that might wait for peers
    throw;
  }
  return out;
}

}  // namespace

std::vector<std::unique_ptr<NcclCommunicator>> make_nccl_communicators(const std::vector<int>& devices) {
  FLASHKM_CHECK(!devices.empty(), invalid_argument, "make_nccl_communicators: no devices");
  const int n = static_cast<int>(devices.size());
  // What ncclCommInitAll does (one id, one ncclCommInitRank per device inside a group),
  // spelled out because ncclCommInitAll takes no config and these must be non-blocking.
  ncclUniqueId id;
  nccl_check(ncclGetUniqueId(&id), "ncclGetUniqueId", ErrorKind::device_unavailable);
  ncclConfig_t cfg = nonblocking_config();
  std::vector<ncclComm_t> comms(devices.size(), nullptr);
  int prev = 0;
  FLASHKM_CUDA_CHECK(cudaGetDevice(&prev));
  ncclResult_t r = ncclGroupStart();
  for (int i = 0; i < n && (r == ncclSuccess || r == ncclInProgress); ++i) {
    if (cudaSetDevice(devices[i]) != cudaSuccess) {
      (void)cudaGetLastError();
      r = ncclInvalidArgument;
      break;
    }
    r = ncclCommInitRankConfig(&comms[i], n, id, i, &cfg);
  }
  const ncclResult_t g = ncclGroupEnd();
  cudaSetDevice(prev);
  if ((r != ncclSuccess && r != ncclInProgress) || (g != ncclSuccess && g != ncclInProgress)) {
    for (ncclComm_t c : comms)
      if (c) ncclCommAbort(c);
    nccl_check(r != ncclSuccess && r != ncclInProgress ? r : g, "creating NCCL communicators over the listed CUDA devices",
               ErrorKind::device_unavailable);
  }
  await_init(comms, "creating NCCL communicators over the listed CUDA devices");
  return wrap(comms, devices);
}

void destroy_nccl_communicators(std::vector<std::unique_ptr<NcclCommunicator>>& comms) {
  std::vector<std::thread> threads;
  threads.reserve(comms.size());
  for (auto& c : comms) threads.emplace_back([&c] { c.reset(); });
  for (auto& t : threads) t.join();
  comms.clear();
}

std::unique_ptr<NcclCommunicator> make_nccl_communicator(const NcclUniqueId& id, int rank, int size, int device) {
  FLASHKM_CHECK(size >= 1 && rank >= 0 && rank < size, invalid_argument, "NCCL rank ", rank, " of ", size,
                " is out of range");
  ncclUniqueId nid;
  std::memcpy(&nid, id.data(), sizeof nid);
  DeviceGuard g(device);
  ncclConfig_t cfg = nonblocking_config();
  std::vector<ncclComm_t> comms(1, nullptr);
  const ncclResult_t r = ncclCommInitRankConfig(&comms[0], size, nid, rank, &cfg);
  if (r != ncclSuccess && r != ncclInProgress) {
    if (comms[0]) ncclCommAbort(comms[0]);
    nccl_check(r, "ncclCommInitRankConfig", ErrorKind::device_unavailable);
  }
  await_init(comms, "ncclCommInitRankConfig");
  return std::move(wrap(comms, {device})[0]);
}

}  // namespace flashkm::cuda
