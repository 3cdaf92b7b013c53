// fit() over several GPUs of one host (Params::device_ids): one rank per GPU, one host
// thread each (core::fit_on_threads: each thread runs one rank of fit_distributed with its
// GPU's CUDA backend), NCCL communicators between them. This file adds what is GPU-specific:
// the device checks, where each rank's rows live, and the communicators' creation,
// cancellation and destruction.
//
// Input: host memory (each rank's backend uploads its own rows), or device memory on one
// GPU (the shard of the GPU that holds x is used in place; the others are copied to their
// GPU, peer to peer where the hardware allows). Weights and labels may live on that GPU:
// the backend reads and writes them with cudaMemcpyDefault (unified addressing).
#include <cuda_runtime.h>

#include "core/multi_gpu.hpp"
#include "core/spmd_threads.hpp"
#include "cuda/cuda_check.hpp"
#include "cuda/nccl_communicator.hpp"
#include "flashkm/error.hpp"

namespace flashkm::core {
namespace {

void check_devices(const std::vector<int>& ids, const char* what) {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) (void)cudaGetLastError();
  FLASHKM_CHECK(err == cudaSuccess && count > 0, device_unavailable, what, " needs CUDA devices, but none is present (",
                err == cudaSuccess ? "no devices" : cudaGetErrorString(err), ")");
  for (std::size_t i = 0; i < ids.size(); ++i)
    FLASHKM_CHECK(ids[i] < count, device_unavailable, what, ": CUDA device ", ids[i], " requested, but only ", count,
                  " CUDA device", count == 1 ? " is" : "s are", " present (ids 0..", count - 1, ")");
}

/// Rows on another GPU than `device` are copied to `device`; the copy lives in the result.
std::shared_ptr<void> place_on(int device, MatrixView& shard) {
  if (shard.where != Location::cuda || shard.device_id == device) return nullptr;
  cuda::DeviceGuard g(device);
  const std::size_t esz = dtype_size(shard.dtype), row_bytes = std::size_t(shard.cols) * esz;
  auto copy = std::make_shared<cuda::DeviceBuffer<unsigned char>>(
      row_bytes * std::size_t(shard.rows), "a copy of this GPU's rows of X (X lives on another GPU)");
  // Contiguous rows as one block (a 2-D copy of millions of 256-byte rows can go row by row).
  if (shard.stride() == shard.cols)
    FLASHKM_CUDA_CHECK(cudaMemcpy(copy->get(), shard.data, row_bytes * std::size_t(shard.rows), cudaMemcpyDefault));
  else
    FLASHKM_CUDA_CHECK(cudaMemcpy2D(copy->get(), row_bytes, shard.data, std::size_t(shard.stride()) * esz, row_bytes,
                                    std::size_t(shard.rows), cudaMemcpyDefault));
  shard.data = copy->get();
  shard.row_stride = 0;
  shard.device_id = device;
  return copy;
}

}  // namespace

Model fit_multi_gpu(const MatrixView& x, const Params& params, const FitArgs& args) {
  const std::vector<int> ids = params.device_ids;
  FLASHKM_ASSERT(!ids.empty(), "fit_multi_gpu needs at least one device id");
  check_devices(ids, "device_ids");
  if (x.where == Location::cuda) check_devices({x.device_id}, "X on a CUDA device");
  FLASHKM_CHECK(x.rows >= static_cast<std::int64_t>(ids.size()), invalid_argument, "n_samples=", x.rows,
                " is smaller than the number of GPUs (", ids.size(), "): every GPU needs at least one row");

  // Rank r is a plain one-GPU fit on ids[r] as far as its backend knows.
  std::vector<Params> rank_params(ids.size(), params);
  for (std::size_t r = 0; r < ids.size(); ++r) {
    rank_params[r].device_ids.clear();
    rank_params[r].device_id = ids[r];
  }
  std::vector<std::unique_ptr<cuda::NcclCommunicator>> comms = cuda::make_nccl_communicators(ids);
  std::vector<Communicator*> ranks;
  for (auto& c : comms) ranks.push_back(c.get());
  auto place = [&](int r, MatrixView& shard) { return place_on(ids[r], shard); };
  auto cancel_all = [&] {
    for (auto& c : comms) c->cancel();
  };
  Model m;
  try {
    m = fit_on_threads(x, rank_params, args, ranks, place, cancel_all);
  } catch (...) {
    cuda::destroy_nccl_communicators(comms);
    throw;
  }
  cuda::destroy_nccl_communicators(comms);
  return m;
}

std::unique_ptr<Communicator> nccl_communicator_over(Communicator& bootstrap, int device) {
  check_devices({device}, "a distributed GPU fit");
  // The id is made on rank 0 only (it opens rank 0's bootstrap socket); a failure there must
  // reach every rank before they wait in the broadcast.
  cuda::NcclUniqueId id{};
  std::exception_ptr failure;
  if (bootstrap.rank() == 0) {
    try {
      id = cuda::nccl_unique_id();
    } catch (...) {
      failure = std::current_exception();
    }
  }
  agree_or_throw(bootstrap, failure);
  bootstrap.broadcast(id.data(), id.size(), 0);
  std::unique_ptr<Communicator> comm;
  try {
    comm = cuda::make_nccl_communicator(id, bootstrap.rank(), bootstrap.size(), device);
  } catch (...) {
    failure = std::current_exception();
  }
  agree_or_throw(bootstrap, failure);
  return comm;
}

}  // namespace flashkm::core
