// fit() for one rank of a distributed (SPMD) fit: every rank calls it with its own shard.
#pragma once

#include "core/communicator.hpp"
#include "flashkm/kmeans.hpp"

namespace flashkm::core {

/// Fit k-means to the rows of all ranks together; every rank of `comm` calls this with its
/// own contiguous shard `local_x` (rank r holds the rows after those of ranks 0..r-1) and
/// the same params and init centroids. args.sample_weight and args.labels are the shard's
/// [n_local]. Every rank returns the same Model; its inertia, centroids and labels equal a
/// plain fit() of all rows up to the order of the sums over ranks (exactly, with one rank).
/// A failure on any rank throws Error on every rank, naming the failed rank.
Model fit_distributed(const MatrixView& local_x, const Params& params, const FitArgs& args, Communicator& comm);

}  // namespace flashkm::core
