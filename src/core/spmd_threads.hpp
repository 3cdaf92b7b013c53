// A distributed (SPMD) fit with one host thread per rank, in one process: the row sharding,
// the threads, first-failure cancellation and the labels in row order. Each thread runs one
// rank's fit_distributed (core/distributed_fit.hpp). Used by the multi-GPU fit (one rank per
// GPU over NCCL, src/cuda/multi_gpu_fit.cpp); device-neutral, so the same code runs in
// CPU-only tests over in-memory thread communicators and CPU backends.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "core/communicator.hpp"
#include "flashkm/kmeans.hpp"

namespace flashkm::core {

struct RowRange {
  std::int64_t row0 = 0, rows = 0;
};

/// n rows over `ranks` contiguous ranges, as even as possible (the first n % ranks get one
/// row more), in rank order.
std::vector<RowRange> shard_rows(std::int64_t n, int ranks);

/// Runs on rank r's thread before its fit: may point `shard` elsewhere (a copy of the rows
/// where rank r's backend reads them); the returned object keeps that copy alive until the
/// fit ends. A throw fails the fit on every rank (agreed, naming rank r).
using PlaceShardFn = std::function<std::shared_ptr<void>(int rank, MatrixView& shard)>;

/// Rank r (comms[r]->rank() == r) runs on its own thread (rank 0 on the caller's, where the
/// progress callback is then called, as in a plain fit): place(r, its rows of x), then
/// fit_distributed(its rows, rank_params[r], its range of the weights and labels). Only
/// rank 0 gets params.progress (rank_params[r].progress is dropped for r > 0). The first
/// rank to throw is the error rethrown here; `cancel_all` (optional) is then called once, so
/// the other ranks leave their collectives at once rather than at their timeout. Returns rank
/// 0's Model (every rank computes the same one).
Model fit_on_threads(const MatrixView& x, const std::vector<Params>& rank_params, const FitArgs& args,
                     const std::vector<Communicator*>& comms, const PlaceShardFn& place,
                     const std::function<void()>& cancel_all);

}  // namespace flashkm::core
