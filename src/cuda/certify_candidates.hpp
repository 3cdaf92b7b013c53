// The certification cascade's candidate levels (docs/CUDA.md, "Certification"): after the
// tensor-core level 1 has flagged the rows whose top-2 gap its bound cannot settle, leaving
// each flagged row's threshold (best + 2E + slack) in dist[row],
//   level 2: level 1's kernel in its candidate mode (the wgmma kernel, or the mma.sync
//            kernel of every other tile config and operand: fp16, bf16, tf32; same tile,
//            D split and operands) over the flagged rows only (gathered through the flagged
//            list: no copy of the rows) lists every (row, centroid) whose score, bitwise
//            level 1's, is <= the threshold: the only centroids whose exact score can be
//            the row's minimum;
//   level 3: the fp64 score of each listed pair (fp64_score.cuh: the full re-check's
//            arithmetic), reduced per row deterministically (atomicMin on the score's
//            order-preserving bits, then on the centroid index among the pairs equal to the
//            minimum), and the row's label, distance and change count written as the full
//            re-check writes them.
// Rows whose pairs did not fit the bounded list go to the full fp64 re-check
// (launch_recheck). Result: the labels and distances the full fp64 re-check of every
// flagged row would give, at the cost of one tensor-core pass over the flagged rows and
// fp64 work proportional to their candidates. Every tensor-core level 1 (candidate_cascade);
// an fp32 level 1 is the exact SIMT kernel, whose few flagged rows (exact or near-exact
// ties) go straight to the full re-check.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/cuda_backend.hpp"
#include "cuda/flash_assign.hpp"

namespace flashkm::cuda {

/// Whether CertifyCascade::automatic takes the candidate cascade where it applies.
constexpr bool kCandidatesByDefault = true;

/// Largest d the candidate threshold's slack covers the fp64 level's rounding for
/// (candidate_threshold, flash_assign_common.cuh); above it flagged rows take the SIMT cascade.
constexpr int kMaxCandidateD = 1 << 18;

/// Whether a certified assign with tile config `tile` (resolved: not automatic), operand
/// `op` and d features settles its flagged rows by candidates (level 1's kernel in its
/// candidate mode: every tensor-core config and operand); the single and batched backends
/// decide alike, so that a problem alone gives the bits it gives in a batch, and the single
/// backend alike for resident and streamed rows (a streamed fit gives the resident fit's bits).
inline bool candidate_cascade(CertifyCascade how, TileConfig tile, Operand op, int d) {
  const bool asked = how == CertifyCascade::candidates || (how == CertifyCascade::automatic && kCandidatesByDefault);
  return asked && op != Operand::fp32 && tile != TileConfig::automatic && d <= kMaxCandidateD;
}

/// Counters per chunk of flagged rows (CandidateWork::ctr, kCandSlots each).
enum : int {
  kCandFp64Rows = 0,  ///< rows whose candidates did not fit: re-checked against every centroid
  kCandChanged = 1,   ///< label changes (levels 2-3 and that re-check)
  kCandPairs = 2,     ///< candidate pairs found (dropped ones included)
  kCandSlots = 3
};

/// Workspace bounds: at most kMaxCandidatePairs pairs (16 B each: the pair and its fp64
/// score; 32 MiB), flagged rows in chunks of an eighth as many rows.
constexpr std::int64_t kMaxCandidatePairs = std::int64_t(1) << 21;
constexpr std::int64_t kMinCandidatePairs = std::int64_t(1) << 16;

/// Pair capacity for `flagged` rows (grows with them up to the bound; >= the chunk rows)
/// and the rows per chunk.
struct CandidateSizes {
  std::int64_t capacity = 0, chunk_rows = 0, chunks = 0;
};
CandidateSizes candidate_sizes(std::int64_t flagged);

/// Device memory of levels 2-3 for `sizes`.
struct CandidateWork {
  std::int64_t* list = nullptr;        ///< level 1's flagged rows [count] (level 2 marks some)
  unsigned long long* keys = nullptr;  ///< [count] per flagged row: its minimum, order bits
  CandidatePair* pairs = nullptr;      ///< [capacity]
  double* scores = nullptr;            ///< [capacity] fp64 score per pair; then a chunk's fp64 re-check list
  unsigned long long* ctr = nullptr;   ///< [chunks x kCandSlots], zeroed by the caller
  CandidateSizes sizes;
};

/// The flagged rows of one chunk, enumerated as a launch enumerates rows: one problem of n
/// rows at list[list_off] (problems == nullptr), or ragged problems whose n are their
/// flagged counts (flagged region of problem b at its row_begin of the list) with a tile
/// table of the chunk's tiles, cut for level 1's kernel's rows per tile (flash_tile_rows).
struct CandidateRows {
  std::int64_t n = 0;
  std::int64_t list_off = 0;
  const ProblemDesc* problems = nullptr;  ///< device; the level-1 table with n = flagged counts
  const ProblemTile* tiles = nullptr;     ///< device
  std::int64_t n_tiles = 0;
  int tile_rows = 0;
  /// [B x 2] when set: per problem, rows re-checked against every centroid and label changes
  unsigned long long* problem_stats = nullptr;
};

/// Levels 2-3 and the full re-check of the overflowed rows over one chunk of flagged rows;
/// ctr: the chunk's kCandSlots counters (zeroed). level1 / op / tile / given / c32 as below.
void launch_candidate_chunk(const AssignParams& level1, Operand op, TileConfig tile, const AssignParams& given,
                            const float* c32, const CandidateRows& rows, const CandidateWork& w,
                            unsigned long long* ctr, cudaStream_t s);

/// Levels 2-3 over flagged rows list[0, count) of one problem (count known on the host).
/// `level1`: level 1's parameters (x as its operands were read, labels, dist, xnorm, the
/// centroid operands); `op`, `tile`: level 1's operand and tile config (the candidate level
/// must be its kernel: launch_flash_assign with the same p.x, so the same data path);
/// `given`: the same with x as given (fp64 scores), `c32` the fp32 centroids. Asynchronous on s.
void launch_candidate_cascade(const AssignParams& level1, Operand op, TileConfig tile, const AssignParams& given,
                              const float* c32, std::int64_t count, const CandidateWork& w, cudaStream_t s);

}  // namespace flashkm::cuda
