// Kernels of the batched CUDA backend (declarations): the row reductions of kernels.cuh
// over a table of row chunks, each chunk kRowChunk rows (or fewer) of ONE problem, cut from
// the problem's row 0. Each chunk is reduced with exactly the shape of the single-problem
// kernel, and a problem's chunks are combined in order, so a problem's sums are the bits
// its single-problem backend computes (the batched results contract).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/flash_assign.hpp"
#include "cuda/kernels.cuh"

namespace flashkm::cuda {

/// Rows [row_begin, row_begin + rows) of x (rows <= kRowChunk), of problem slot `slot`;
/// `out` is the chunk's first position in a compacted row order (sort keys).
struct ProblemChunk {
  std::int64_t row_begin;
  std::int64_t out;
  std::int32_t rows;
  std::int32_t slot;
};

/// Ragged centroid preparation: operand row r in [0, kp_total) belongs to the problem whose
/// [c_row, c_row + kp) holds it (problems[] in c_row order); its centroid j = r - c_row is
/// real when j < k, read from c32 row c32_row + j. cmax / dcmax per problem (zero them).
void launch_prepare_centroids_ragged(const float* c32, const ProblemDesc* problems, int n_problems,
                                     std::int64_t kp_total, int d, int dp, int op, bool l2, void* c_op, float* cterm,
                                     unsigned* cmax_bits, unsigned* dcmax_bits, unsigned* overflow, cudaStream_t s);

/// part[c] = sum over chunk c of w_i * v_i (w null = 1): weighted_sum_chunks per chunk.
void launch_chunk_weighted_sums(const float* v, const float* w, const ProblemChunk* chunks, std::int64_t n_chunks,
                                double* part, cudaStream_t s);
/// out[g] = sum of part[seg[g] .. seg[g+1]) for g < n_segments: sum_parts per segment.
void launch_segment_sums(const double* part, const std::int64_t* seg, std::int64_t n_segments, double* out,
                         cudaStream_t s);
/// Exact inertia parts per chunk (exact_inertia_kernel's shape); the chunk's centroids are
/// c32 rows problems[slot].c32_row + label.
void launch_chunk_exact_inertia(const XView& x, const float* w, const std::int32_t* labels, const float* c32,
                                const ProblemDesc* problems, Metric metric, const ProblemChunk* chunks,
                                std::int64_t n_chunks, double* part, cudaStream_t s);
/// Per-chunk column sums (column_sums_kernel's shape): centers null -> sum x, else
/// sum (x - centers[slot])^2; part [n_chunks x d].
void launch_chunk_column_sums(const XView& x, const double* centers, const ProblemChunk* chunks, std::int64_t n_chunks,
                              double* part, cudaStream_t s);
/// Sort keys of the rows of the chunks, compacted: vals[out + q] = row, and keys[out + q] =
/// problems[slot].c32_row + labels[row] when slot_bits < 0 (a problem's clusters get the keys
/// [c32_row, c32_row + k)), else (labels[row] << slot_bits) | slot (label-major: a sort on the
/// label bits alone, stable, leaves these keys in order; see the batched sort_reduce).
void launch_chunk_keys(const std::int32_t* labels, const ProblemDesc* problems, const ProblemChunk* chunks,
                       std::int64_t n_chunks, int slot_bits, std::int32_t* keys, std::int32_t* vals, cudaStream_t s);

}  // namespace flashkm::cuda
