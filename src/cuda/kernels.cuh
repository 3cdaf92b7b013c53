// Small deterministic kernels of the CUDA backend (declarations). Every reduction over
// rows sums fp64 over fixed chunks of kRowChunk rows with a fixed shape, then over chunks
// in order, so results never depend on scheduling.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/cuda_check.hpp"
#include "flashkm/types.hpp"

namespace flashkm::cuda {

inline constexpr int kRowChunk = 2048;
/// Rows per piece of a cluster in the sort-inverse update (sort_reduce): each piece is one
/// in-order chain per column, so shorter pieces mean more chains side by side. The piece
/// sums take (n / rows + clusters) x (d + 1) doubles; rows is the smallest power of two
/// >= 64 that keeps the first term within 32 MiB. Measured on the H200 (2026-11-29, ncu): at
/// N=1M D=128 fp16 the 256-row pieces gave 5k pieces, 2.3 warps per scheduler and 323 us
/// (0.87 TB/s: latency-bound); 64-row pieces give 4x the chains. A function of the shape
/// only, so the sums stay bitwise reproducible. The pieces fix the order of the fp64 sums:
/// the batched backend cuts each problem's clusters with its own n here, as alone.
inline std::int64_t piece_rows_for(std::int64_t n, int d) {
  constexpr double kPieceBytes = 32.0 * 1024 * 1024;
  std::int64_t rows = 64;
  while (rows < 4096 && double(n) / double(rows) * double(d + 1) * 8.0 > kPieceBytes) rows *= 2;
  return rows;
}

struct XView {
  const void* x;
  DType dtype;
  std::int64_t stride;  ///< elements between rows
  std::int64_t n;       ///< rows (all problems)
  int d;
  std::int64_t n_per;   ///< rows per problem (batched): row r belongs to problem r / n_per
};

/// Validate rows and compute |x|^2 (fp64 -> fp32): first non-finite row, first bad weight,
/// first zero row, max |x_ij| (as float bits); results in `status` [4] (int64 / uint bits).
void launch_validate(const XView& x, const float* w, float* xnorm, long long* status, cudaStream_t s);
/// Convert rows to fp32 [n x d] (for f64 input) from a device f64 matrix.
void launch_f64_to_f32(const double* src, std::int64_t n, int d, std::int64_t stride, float* dst, cudaStream_t s);
/// Rows converted to 16-bit operands [n x dp] zero-padded (op: 0 fp16, 1 bf16).
void launch_convert_rows(const XView& x, int op, int dp, void* dst, cudaStream_t s);

/// Centroids fp32 [kt x d] (kt = B*k) -> operand copy [B][kp x dp] (op 0 fp16, 1 bf16, 2 fp32, 3 tf32),
/// cterm [B][kp] (|c|^2 or 0; +inf past k), cmax [B] (max |c| rounded up, as float bits),
/// dcmax [B] (max |c - operand(c)|, the operands' exact rounding error, rounded up; 0 for
/// fp32), overflow flag (|c| > 65504 with fp16). cmax and dcmax are atomicMax'ed: zero them.
void launch_prepare_centroids(const float* c32, int batch, int k, int d, int kp, int dp, int op, bool l2,
                              void* c_op, float* cterm, unsigned* cmax_bits, unsigned* dcmax_bits,
                              unsigned* overflow, cudaStream_t s);

/// part[c] = sum over chunk c of w_i * v_i (w null = 1); then out = sum of parts in order.
void launch_weighted_sum(const float* v, const float* w, std::int64_t n, double* part, double* out, cudaStream_t s);
/// The first half of launch_weighted_sum alone (per-chunk parts), for rows processed chunk by
/// chunk; launch_sum_parts over all the parts then gives the same bits.
void launch_weighted_sum_parts(const float* v, const float* w, std::int64_t n, double* part, cudaStream_t s);
/// mind[i] = min(mind[i], v[i]).
void launch_min_into(float* mind, const float* v, std::int64_t n, cudaStream_t s);
void launch_fill(float* p, float value, std::int64_t n, cudaStream_t s);
void launch_iota_keys(const std::int32_t* labels, std::int64_t n, std::int64_t n_per, int k, std::int32_t* keys,
                      std::int32_t* vals, cudaStream_t s);
/// row_off[c] = first position of sorted_keys [n] holding a key >= c, for c in [0, nc]
/// (so cluster c occupies [row_off[c], row_off[c+1]) and row_off[nc] = n). No atomics.
void launch_cluster_offsets(const std::int32_t* sorted_keys, std::int64_t n, std::int64_t nc, std::int32_t* row_off,
                            cudaStream_t s);

/// One work piece: sorted positions [begin, end) of cluster `cluster`.
struct Piece {
  std::int64_t begin, end;
};
/// part[p][0..d) = sum in order of scale_i * x_i over the piece's rows, part[p][d] = sum w_i.
/// with_x false: only the weights. cosine: scale = w / |x|. Launched over max_pieces blocks;
/// those at or past *n_pieces (device memory: the count is known only on the device) exit.
/// resume (optional, [max_pieces]): where resume[p] != 0 the chains start from the values in
/// part[p] instead of 0 (a piece continued from an earlier chunk of rows: the same chain,
/// so the same bits as one launch over all its rows).
void launch_piece_sums(const XView& x, const float* w, const float* xnorm, bool cosine, bool with_x,
                       const std::int32_t* order, const Piece* pieces, const std::int64_t* n_pieces,
                       std::int64_t max_pieces, double* part, cudaStream_t s, const unsigned char* resume = nullptr);
// ---- The resident update's cluster sums (launch_update_sums) ------------------------------
// The sums are defined by pieces: cluster c's sorted rows cut into pieces of R_c rows, each
// piece's column one fp64 fma chain from 0 in row order, the cluster's sum
// ((0 + piece_0) + piece_1) + ... in piece order. How they are computed: a cluster of at most
// kFusedPieces pieces is one work item, whose thread group runs its pieces' chains one after
// another and adds each into the cluster's sum in registers (no piece buffer, no combine); a
// larger (big) cluster is one item per piece (its sums in a piece buffer), combined by column
// slices of 32 (units): a big cluster of at most kCombineFew pieces by a warp per unit, one
// of more by a thread block per unit staging its pieces through shared memory; each kernel
// over its own list of clusters, so a huge cluster does not serialise onto one thread group
// and no kernel walks the other's units. Same operations, same order: the bits of the
// definition, whichever way a cluster goes.

/// Clusters with at most this many pieces are summed whole by one thread group. Two: fusing
/// up to 4 made a fused item's chain up to 4 times longer and the items fewer (H200, same-call
/// A/B: the update at N=1M D=768 K=1024, clusters of 4 pieces of 256 rows, 0.86 vs 0.72 ms),
/// while clusters of ~78 rows at R = 64 (B=500 x N=20k x K=256) seemed to gain from it (2.04
/// ms with up to 4 fused vs 2.50 with one-piece clusters alone fused, two calls apart and the
/// latter with a slower combine: not a clean measurement). Two is a compromise, not A/B'd.
inline constexpr int kFusedPieces = 2;
/// Bound on the pieces of clusters of more than kFusedPieces pieces of R rows among n rows:
/// such a cluster has more than kFusedPieces * R rows and at most rows / R + 1 pieces.
inline std::int64_t max_big_pieces(std::int64_t n, std::int64_t R) {
  return n / R + n / (kFusedPieces * R + 1) + 1;
}
/// Big clusters of at most this many pieces are combined by a warp per unit (their pieces'
/// loads in one or a few batches ahead of the adds), longer ones by a block per unit with
/// tiles of pieces in flight through shared memory (cp.async): fast for clusters of many
/// pieces (N=1M K=256, 64 pieces per cluster on average), too heavy for short ones.
inline constexpr int kCombineFew = 32;
/// Per sort key (cluster) of launch_update_sums: its work items (1 if fused, else its pieces),
/// its pieces in the piece buffer (0 if fused) and whether it is a big cluster of at most
/// kCombineFew pieces (few) or of more (many), each 0 or 1; the workspace holds their
/// exclusive prefix sums, so one scan gives every offset and the last entry the totals.
struct UpdateCounts {
  std::int64_t items, pieces, few, many;
};
/// One work item: sorted positions [begin, end). rows > 0: a whole cluster in chains of
/// `rows` rows, its sums written to row `out` of sums / weights (-1: a key of no cluster,
/// nothing written); rows == 0: one piece of a big cluster, its chains written to row `out`
/// of the piece buffer.
struct UpdateItem {
  std::int32_t begin, end, rows, out;
};
/// Device memory of launch_update_sums (UpdateBuffers::prepare sizes it).
struct UpdateWorkspace {
  UpdateCounts* counts = nullptr;  ///< [nc + 1]
  UpdateCounts* first = nullptr;   ///< [nc + 1]
  UpdateItem* items = nullptr;     ///< [max_items]
  std::int32_t* few = nullptr;     ///< [max_few]: keys of big clusters of <= kCombineFew pieces, in order
  std::int32_t* many = nullptr;    ///< [max_many]: keys of big clusters of more pieces, in order
  double* part = nullptr;          ///< [max_big_pieces x (d + 1)]: big clusters' piece sums
  void* temp = nullptr;            ///< the scan's workspace
  std::size_t temp_bytes = 0;      ///< >= update_scan_bytes(nc)
  std::int64_t max_items = 0, max_few = 0, max_many = 0, max_big_pieces = 0;
};
/// The workspace's buffers, owned (a backend keeps them across iterations).
struct UpdateBuffers {
  DeviceBuffer<UpdateCounts> counts, first;
  DeviceBuffer<UpdateItem> items;
  DeviceBuffer<std::int32_t> bigs;  // the few list, then the many list
  DeviceBuffer<double> part;
  /// Grown for nc keys, at most max_items items (n / R + nc) and max_big_pieces pieces of big
  /// clusters (max_big_pieces(), summed over problems), rows of d columns; temp: the caller's
  /// scan workspace (update_scan_bytes(nc) bytes at least).
  UpdateWorkspace prepare(std::int64_t nc, std::int64_t max_items, std::int64_t max_big_pieces, int d, void* temp,
                          std::size_t temp_bytes);
  std::size_t bytes() const {
    return counts.bytes() + first.bytes() + items.bytes() + bigs.bytes() + part.bytes();
  }
};
/// Bytes of the scan's workspace for nc keys (CUB's two-phase query).
std::size_t update_scan_bytes(std::int64_t nc);
/// Cluster sums of the sorted rows: order [n] the row of each sorted position, row_off
/// [nc + 1] the clusters' extents (launch_cluster_offsets), R_c = piece_rows or per_cluster[c]
/// (the batched backend: each problem's own height, as alone); cluster_of (optional, [nc]):
/// the keys' clusters (rows of sums / weights; -1: none), null: the key itself. Writes sums
/// [clusters x d] (with_x) and weights [clusters]: per column one chain over pieces as the
/// definition above; cosine: rows scaled by w / sqrt(|x|^2). Asynchronous, no host wait.
/// Bounds the caller must size (UpdateBuffers::prepare): max_items >= sum max(1, pieces_c)
/// (n / R + nc), max_big_pieces >= the pieces of clusters of more than kFusedPieces pieces.
void launch_update_sums(const XView& x, const float* w, const float* xnorm, bool cosine, bool with_x,
                        const std::int32_t* order, const std::int32_t* row_off, std::int64_t nc, int piece_rows,
                        const std::int32_t* per_cluster, const std::int32_t* cluster_of, const UpdateWorkspace& ws,
                        double* sums, double* weights, cudaStream_t s);
/// The stages of launch_update_sums, one by one (tests/gpu checks each).
/// counts[c] for c < nc (and zeros at nc) from the extents and heights.
void launch_update_counts(const std::int32_t* row_off, std::int64_t nc, int piece_rows,
                          const std::int32_t* per_cluster, UpdateCounts* counts, cudaStream_t s);
/// first = exclusive prefix sums of counts [nc + 1].
void launch_update_scan(void* temp, std::size_t temp_bytes, const UpdateCounts* counts, UpdateCounts* first,
                        std::int64_t nc, cudaStream_t s);
/// The work items (one thread each, max_items of them: those past the total exit) and the big
/// clusters' keys, each into its list (few: first[c].few, many: first[c].many).
void launch_fill_items(const std::int32_t* row_off, const UpdateCounts* first, std::int64_t nc, int piece_rows,
                       const std::int32_t* per_cluster, const std::int32_t* cluster_of, std::int64_t max_items,
                       UpdateItem* items, std::int32_t* few, std::int32_t* many, cudaStream_t s);
/// The items' sums: fused clusters into sums / weights, pieces into part (ld d + 1). n_items:
/// the count on the device (first[nc].items).
void launch_item_sums(const XView& x, const float* w, const float* xnorm, bool cosine, bool with_x,
                      const std::int32_t* order, const UpdateItem* items, const std::int64_t* n_items,
                      std::int64_t max_items, double* part, double* sums, double* weights, cudaStream_t s);
/// The big clusters' sums from their pieces in part: per column ((0 + p0) + p1) + ... in
/// piece order. Two kernels: a warp per unit over the few list's units, a block per unit over
/// the many list's; the lists' lengths are read on the device (first[nc].few, first[nc].many),
/// max_few / max_many bound them (the grids' sizes).
void launch_combine_big(const double* part, const UpdateCounts* first, std::int64_t nc, const std::int32_t* few,
                        std::int64_t max_few, const std::int32_t* many, std::int64_t max_many, int d, bool with_x,
                        const std::int32_t* cluster_of, double* sums, double* weights, cudaStream_t s);

/// The division step of a Lloyd update, one warp per cluster: next = sums / weight (cosine:
/// sums / |sums|; sums of zero norm and clusters of weight <= 0 keep `current`, the latter
/// counted in *n_empty), shift_part[c] = sum over d of (next - current)^2 in a fixed order.
/// The division is the host path's (s * (1 / w) in fp64, then rounded to fp32).
void launch_finish_update(const double* sums, const double* weights, const float* current, std::int64_t nc, int d,
                          bool cosine, float* next, double* shift_part, unsigned long long* n_empty, cudaStream_t s);
/// out = sum of part[0..m) in a fixed order (one block).
void launch_sum_parts(const double* part, std::int64_t m, double* out, cudaStream_t s);

/// Exact inertia parts: per chunk, sum w * dist(x_i, c_label) in fp64 from differences.
void launch_exact_inertia(const XView& x, const float* w, const std::int32_t* labels, const float* c32, int k,
                          Metric metric, double* part, cudaStream_t s);
/// Per-chunk column sums: center null -> sum x, else sum (x - center)^2; part [chunks x d].
void launch_column_sums(const XView& x, const double* center, double* part, cudaStream_t s);
/// Sequential (row-order) chunk sums of w * mind, one thread per chunk.
void launch_sequential_chunk_sums(const float* mind, const float* w, std::int64_t n, double* part, cudaStream_t s);
/// flags[i] = uniform(seed, round, i) < factor * w_i * mind_i.
void launch_bernoulli(const float* mind, const float* w, std::int64_t n, double factor, std::uint64_t seed,
                      std::uint64_t round, std::int64_t row0, unsigned char* flags, cudaStream_t s);
/// Gather rows (fp32; cosine: normalised), labels and weights. x_compact: x holds the m
/// requested rows in order (row t of x is row idx[t]; streamed data gathered on the host),
/// while xnorm, labels and w are still indexed by idx.
void launch_gather(const XView& x, const float* xnorm, bool cosine, const std::int32_t* labels, const float* w,
                   const std::int64_t* idx, std::int64_t m, float* rows, std::int32_t* lab, float* wout,
                   cudaStream_t s, bool x_compact = false);
/// out[i][j] = dist(x_{r0+i}, c_j) for rows [r0, r0+rows), by the metric.
void launch_all_distances(const XView& x, const float* xnorm, const float* c32, int k, Metric metric,
                          std::int64_t r0, std::int64_t rows, float* out, cudaStream_t s);

}  // namespace flashkm::cuda
