// The one mapping from a block of an assign launch to its work: (problem, first row),
// used by every assign kernel (tensor-core resident and streamed, SIMT, the fp64 re-check).
//
// Two layouts, one code path:
//  * equal-sized problems (AssignParams::tiles == nullptr): B problems of n rows, problem b
//    at x + b * x_batch, centroids at b * kp; the grid is (tiles per problem, min(B, 65535))
//    and work item i = blockIdx.x + blockIdx.y * gridDim.x is tile i % per of problem i / per;
//  * ragged problems (a tile table): item i is tiles[i], a row tile of one problem, whose
//    rows, k and centroid offsets are in problems[...]; the grid is 1-D, so B has no limit
//    but the 2^31 - 1 tiles of one launch.
// Blocks loop over items with the grid's size as the stride (a grid smaller than the work
// still covers it). Tiles never straddle two problems: a block's rows share one problem.
#pragma once

#include <cstdint>

#include "cuda/flash_assign.hpp"

namespace flashkm::cuda {

/// A block's work: one row tile of one problem.
struct TileWork {
  int b;                   ///< problem: index of problems[], cmax / dcmax / n_dev / problem_stats
  std::int64_t row0;       ///< first row of the tile within the problem
  std::int64_t n;          ///< rows of the problem (a cascade launch: the capacity)
  std::int64_t row_begin;  ///< row of x / xnorm / labels / dist of the problem's row 0; its flagged region
  std::int64_t x_off;      ///< elements from p.x to the problem's row 0
  std::int64_t c_row;      ///< first row of the problem's operands (c) and cterm
  std::int64_t c32_row;    ///< first row of its fp32 centroids
  int k, kp;
};

/// Problem b of the launch (row0 = 0).
__device__ __forceinline__ TileWork problem_work(const AssignParams& p, int b) {
  TileWork w;
  w.b = b;
  w.row0 = 0;
  if (p.problems) {
    const ProblemDesc& d = p.problems[b];
    w.n = d.n;
    w.row_begin = d.row_begin;
    w.x_off = d.row_begin * p.x_stride;
    w.c_row = d.c_row;
    w.c32_row = d.c32_row;
    w.k = d.k;
    w.kp = d.kp;
  } else {
    w.n = p.n;
    w.row_begin = std::int64_t(b) * p.n;
    w.x_off = std::int64_t(b) * p.x_batch;
    w.c_row = std::int64_t(b) * p.kp;
    w.c32_row = std::int64_t(b) * p.k;
    w.k = p.k;
    w.kp = p.kp;
  }
  return w;
}

/// Work items of a launch whose kernel takes tiles of bm rows.
__device__ __forceinline__ std::int64_t tile_count(const AssignParams& p, int bm) {
  return p.tiles ? p.n_tiles : (p.n + bm - 1) / bm * std::int64_t(p.batch);
}

/// THE block -> (problem, row0) mapping: work item `item` of a kernel with bm-row tiles.
__device__ __forceinline__ TileWork problem_tile(const AssignParams& p, std::int64_t item, int bm) {
  if (p.tiles) {
    const ProblemTile t = p.tiles[item];
    TileWork w = problem_work(p, t.problem);
    w.row0 = t.row0;
    return w;
  }
  const std::int64_t per = (p.n + bm - 1) / bm;
  TileWork w = problem_work(p, static_cast<int>(item / per));
  w.row0 = item % per * bm;
  return w;
}

/// This block's first work item, and the stride between its items.
__device__ __forceinline__ std::int64_t first_tile() { return blockIdx.x + std::int64_t(blockIdx.y) * gridDim.x; }
__device__ __forceinline__ std::int64_t tile_stride() { return std::int64_t(gridDim.x) * gridDim.y; }

/// The problem that holds row `grow` of x (a flat list of flagged rows: the re-check).
/// Ragged: the last problem whose row_begin <= grow (problems are in row order).
__device__ __forceinline__ int problem_of_row(const AssignParams& p, std::int64_t grow) {
  if (!p.problems) return static_cast<int>(grow / p.n);
  int lo = 0, hi = p.batch - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (p.problems[mid].row_begin <= grow) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

}  // namespace flashkm::cuda
