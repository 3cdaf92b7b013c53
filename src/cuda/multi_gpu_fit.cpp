// fit() over several GPUs of one host (Params::device_ids): the SPMD layout of
// core/communicator.hpp with one host thread per GPU. Each thread builds its GPU's CUDA
// backend over a contiguous row range, wraps it in a DistributedBackend over its NCCL
// communicator and runs the unchanged fit body (fit_attached: init + Lloyd). Rank 0's model
// is returned; every rank writes its own range of the labels.
//
// Input: host memory (each thread's backend uploads its own rows), or device memory on one
// GPU (the shard of the GPU that holds x is used in place; the others are copied to their
// GPU, peer to peer where the hardware allows). Weights and labels may live on that GPU:
// the backend reads and writes them with cudaMemcpyDefault (unified addressing).
#include <cuda_runtime.h>

#include <exception>
#include <mutex>
#include <thread>

#include "core/distributed_backend.hpp"
#include "core/fit_driver.hpp"
#include "core/multi_gpu.hpp"
#include "cuda/cuda_check.hpp"
#include "cuda/nccl_communicator.hpp"
#include "flashkm/error.hpp"

namespace flashkm::core {
namespace {

struct Shard {
  std::int64_t row0 = 0, rows = 0;
};

/// Contiguous and as even as possible: the first n % ranks shards get one row more.
std::vector<Shard> shard_rows(std::int64_t n, int ranks) {
  std::vector<Shard> s(static_cast<std::size_t>(ranks));
  const std::int64_t base = n / ranks, extra = n % ranks;
  std::int64_t row0 = 0;
  for (int r = 0; r < ranks; ++r) {
    s[r].row0 = row0;
    s[r].rows = base + (r < extra ? 1 : 0);
    row0 += s[r].rows;
  }
  return s;
}

void check_devices(const std::vector<int>& ids) {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) (void)cudaGetLastError();
  FLASHKM_CHECK(err == cudaSuccess && count > 0, device_unavailable, "device_ids lists ", ids.size(),
                " GPUs, but no CUDA device is present (", err == cudaSuccess ? "no devices" : cudaGetErrorString(err),
                ")");
  for (std::size_t i = 0; i < ids.size(); ++i)
    FLASHKM_CHECK(ids[i] < count, device_unavailable, "device_ids[", i, "] = ", ids[i], ": only ", count,
                  " CUDA device", count == 1 ? " is" : "s are", " present (ids 0..", count - 1, ")");
}

/// Rank r's rows as a view its backend can attach: the rows in place when they are host
/// memory or already on the rank's GPU, else a copy on the rank's GPU held in `copy`.
MatrixView shard_view(const MatrixView& x, const Shard& s, int device, cuda::DeviceBuffer<unsigned char>& copy) {
  MatrixView v = x;
  v.data = x.row(s.row0);
  v.rows = s.rows;
  if (x.where != Location::cuda || x.device_id == device) return v;
  cuda::DeviceGuard g(device);
  const std::size_t esz = dtype_size(x.dtype), row_bytes = std::size_t(x.cols) * esz;
  copy.reset(row_bytes * std::size_t(s.rows), "a copy of this GPU's rows of X (input on another GPU)");
  FLASHKM_CUDA_CHECK(cudaMemcpy2D(copy.get(), row_bytes, v.data, std::size_t(x.stride()) * esz, row_bytes,
                                  std::size_t(s.rows), cudaMemcpyDefault));
  v.data = copy.get();
  v.row_stride = 0;
  v.device_id = device;
  return v;
}

}  // namespace

Model fit_multi_gpu(const MatrixView& x, const Params& params, const FitArgs& args, const std::vector<float>& given) {
  const std::vector<int>& ids = params.device_ids;
  const int ranks = static_cast<int>(ids.size());
  FLASHKM_ASSERT(ranks >= 1, "fit_multi_gpu needs at least one device id");
  check_devices(ids);
  FLASHKM_CHECK(x.rows >= ranks, invalid_argument, "n_samples=", x.rows, " is smaller than the number of GPUs (",
                ranks, "): every GPU needs at least one row");
  if (x.where == Location::cuda) check_devices({x.device_id});
  const std::vector<Shard> shards = shard_rows(x.rows, ranks);
  std::vector<std::unique_ptr<cuda::NcclCommunicator>> comms = cuda::make_nccl_communicators(ids);

  // The first failure is the one reported; it cancels the other ranks' communicators so
  // that they leave their next collective at once instead of waiting for the timeout.
  std::mutex mu;
  std::exception_ptr first_failure;
  int failed_rank = -1;
  Model model;

  auto run_rank = [&](int r) {
    try {
      cuda::DeviceGuard g(ids[r]);
      cuda::DeviceBuffer<unsigned char> copy;
      const MatrixView v = shard_view(x, shards[r], ids[r], copy);
      std::unique_ptr<Backend> backend =
          make_distributed_backend(make_cuda_backend(ids[r], params.precision, params.certify), *comms[r]);
      // The shard's own rows: its weights in, its labels out (a DistributedBackend writes
      // its own rows in copy_labels).
      FitArgs a = args;
      if (a.sample_weight) a.sample_weight += shards[r].row0;
      if (a.labels) a.labels += shards[r].row0;
      backend->attach(v, a.sample_weight, params.metric);
      Params p = params;
      if (r != 0) p.progress = nullptr;  // one report per iteration; rank 0 stops the others
      Model m = fit_attached(*backend, p, a, given);
      if (r == 0) model = std::move(m);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu);
      if (!first_failure) {
        first_failure = std::current_exception();
        failed_rank = r;
        for (auto& c : comms) c->cancel();
      }
    }
  };
  std::vector<std::thread> threads;
  threads.reserve(static_cast<std::size_t>(ranks));
  for (int r = 0; r < ranks; ++r) threads.emplace_back(run_rank, r);
  for (auto& t : threads) t.join();

  cuda::destroy_nccl_communicators(comms);

  if (first_failure) {
    try {
      std::rethrow_exception(first_failure);
    } catch (const Error& e) {
      if (ranks == 1 || e.kind() == ErrorKind::interrupted) throw;  // the user's stop, or a plain one-GPU error
      throw Error(e.kind(), "multi-GPU fit, rank " + std::to_string(failed_rank) + " (CUDA device " +
                                std::to_string(ids[failed_rank]) + "): " + e.what());
    }
  }
  return model;
}

}  // namespace flashkm::core
