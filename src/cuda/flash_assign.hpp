// FlashAssign: fused nearest-centroid kernels (host-side interface, no CUDA templates).
//
// One launch assigns every row of B problems (equal-sized, or ragged through a problem
// and tile table: AssignParams::problems / tiles) to its nearest centroid and
// writes int32 labels and the best distance; the N x K distance matrix never exists.
// Scores are  s_j = alpha * (x . c_j) + cterm_j  (alpha = -2, cterm = |c|^2 for l2;
// alpha = -1, cterm = 0 for cosine/inner product), minimised with ties to the lowest j.
// With certification on, rows whose best/second-best gap is under the rounding bound are
// not written but appended to a list; the backend settles them by the candidate cascade
// (the same kernel lists each flagged row's candidate centroids, fp64 scores them:
// certify_candidates.hpp) or re-runs them through the exact-fp32 SIMT kernel (row_map, its
// own tighter bound), and launch_recheck() settles what is still flagged in fp64 (the
// certification cascade, docs/CUDA.md).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "flashkm/types.hpp"

namespace flashkm::cuda {

/// One problem of a ragged launch (AssignParams::problems; mapping in problem_tiles.cuh).
struct ProblemDesc {
  std::int64_t row_begin = 0;  ///< its row 0 as a row of x, xnorm, labels, dist; start of its flagged region
  std::int64_t n = 0;          ///< rows (a cascade launch: the capacity, the count is n_dev[b])
  std::int64_t c_row = 0;      ///< its first row of the operand array c [. x dp] and of cterm
  std::int64_t c32_row = 0;    ///< its first row of the fp32 centroids (re-check)
  int k = 0;                   ///< centroids
  int kp = 0;                  ///< k padded to the launch's centroid tile width
};

/// One row tile of a ragged launch: rows [row0, row0 + tile_rows) of problem `problem`
/// (clipped to its n). Tiles never straddle two problems.
struct ProblemTile {
  std::int64_t row0 = 0;
  std::int32_t problem = 0;
  std::int32_t unused = 0;
};

/// One candidate of the cascade: row r of the candidate launch (index into its row_map) and
/// a centroid of its problem.
struct CandidatePair {
  std::int32_t r;
  std::int32_t j;
};
/// Set in a flagged-list entry by the candidate level: the row's candidates did not all fit.
constexpr std::int64_t kCandidateMark = std::int64_t(1) << 62;

/// Operand format of the distance products. tf32: fp32 values rounded to tf32 (10 explicit
/// mantissa bits, fp32's exponent range; stored as fp32) for mma.sync m16n8k8 (never wgmma).
enum class Operand : std::uint8_t { fp16 = 0, bf16 = 1, fp32 = 2, tf32 = 3 };
/// Bytes per operand element in memory (centroid operand arrays, shared-memory tiles).
constexpr int operand_bytes(Operand op) { return op == Operand::fp16 || op == Operand::bf16 ? 2 : 4; }

/// Everything a FlashAssign kernel reads and writes (a POD, like flash-attention's params).
struct AssignParams {
  // ---- data: B problems of n rows, problem b at x + b * x_batch (elements) ----
  const void* x = nullptr;
  DType x_dtype = DType::f32;
  std::int64_t x_stride = 0;       ///< elements between rows
  /// Rows are zero from d up to the stride (the backends' 16-bit operand copies, stride dp):
  /// the streamed tiles may then read d % 8 != 0 rows in whole 16-byte pieces.
  bool x_zero_padded = false;
  std::int64_t x_batch = 0;        ///< elements between problems
  std::int64_t n = 0;              ///< rows per problem
  int d = 0;                       ///< features
  int batch = 1;                   ///< B
  const float* xnorm = nullptr;    ///< [B*n] |x|^2 in fp32 from the data as given
  // ---- centroids, per problem: [kp x dp] operands, [kp] cterm (+inf past k) ----
  const void* c = nullptr;         ///< fp16/bf16 (tensor path) or fp32 (SIMT path)
  const float* cterm = nullptr;
  const float* cmax = nullptr;     ///< [B] max |c_j| (certification)
  const float* dcmax = nullptr;    ///< [B] max |c_j - operand(c_j)| (exact rounding error, rounded up)
  int k = 0;
  int kp = 0;                      ///< k rounded up to the tile width
  int dp = 0;                      ///< d rounded up to the chunk width
  float alpha = -2.0f;
  Metric metric = Metric::l2;
  // ---- outputs ----
  std::int32_t* labels = nullptr;  ///< [B*n]; also read: the previous labels (n_changed)
  float* dist = nullptr;           ///< [B*n] best distance by the metric
  // ---- certification: E(x) = a*|x|*cmax + c*|x|*dcmax + eta*(|x|+cmax+dcmax) + b*cmax^2 ----
  bool certify = false;
  float cert_a = 0, cert_c = 0, cert_eta = 0, cert_b = 0;
  std::int64_t* flagged = nullptr;               ///< [B*n] capacity: rows to re-check
  unsigned long long* counters = nullptr;        ///< [0] n_flagged, [1] n_changed
  /// When set, flagged rows of problem b go to flagged[b*n + slot], slot counted in
  /// problem_counts[b] (and still in counters[0]): the cascade's next level reads one
  /// problem's rows per tile. nullptr: one list flagged[0, counters[0]).
  unsigned long long* problem_counts = nullptr;
  // ---- cascade (SIMT kernel only): the launch's rows are lists of global rows ----
  /// Row r of problem b in this launch is global row row_map[b*n + r] (x, |x|^2, labels,
  /// dist, flagged entries all use the mapped row). nullptr: row r is row r. Needs n_dev.
  const std::int64_t* row_map = nullptr;
  /// When set, problem b has min(n_dev[b], n) rows, read on the device (the previous
  /// level's per-problem flagged count, so the host need not wait for it); n is then the
  /// capacity per problem.
  const unsigned long long* n_dev = nullptr;
  // ---- ragged problems (problem_tiles.cuh). Null: the B equal-sized problems above ----
  /// [batch] (device): each problem's rows, k and centroid offsets; x_batch, n, k and kp
  /// above are then unused (problem b's row r is row problems[b].row_begin + r of x).
  const ProblemDesc* problems = nullptr;
  /// [n_tiles] (device): block i of the 1-D grid takes tile i (no 65,535 limit on B).
  const ProblemTile* tiles = nullptr;
  std::int64_t n_tiles = 0;
  int tile_rows = 0;               ///< rows per tile the table was cut for: must be the kernel's BM
                                   ///< (flash_tile_rows() for the tensor-core configs)
  std::int64_t c_rows_total = 0;   ///< rows of the operand array c (sum of kp; the wgmma kernel's tensor map)
  /// Rows of x (ragged launches; 0: unknown). The wgmma kernel's rows tensor map spans them;
  /// unknown, it loads a problem's last partial tile without TMA (it might end past x).
  std::int64_t x_rows = 0;
  /// [batch x 2] when set: per problem (rows flagged, label changes) of this launch, counted
  /// besides counters[0] / counters[1] (batched fits report statistics per problem).
  unsigned long long* problem_stats = nullptr;
  // ---- certification cascade, candidate level (the tensor-core kernels; certify_candidates.hpp) ----
  /// When set, the launch assigns nothing: its rows are level 1's flagged rows (row_map: one
  /// problem with n = their count, or ragged problems whose n are their flagged counts; no
  /// n_dev), run through level 1's kernel, tile config and data path, and it lists every
  /// (row, centroid) whose score is <= the row's threshold (level 1 left it in dist[row])
  /// into cand_pairs. A row whose pairs did not all fit (or that listed none) gets kCandidateMark in flagged[r] (the
  /// full fp64 re-check takes it); the others get cand_keys[r] = ~0 and dist[row] = INT_MAX
  /// as int bits (the fp64 level's running minima).
  CandidatePair* cand_pairs = nullptr;
  std::int64_t cand_capacity = 0;            ///< entries of cand_pairs
  unsigned long long* cand_count = nullptr;  ///< pairs found (may exceed the capacity: the excess is dropped)
  unsigned long long* cand_keys = nullptr;   ///< [n] per listed row
};


/// Tile configuration of the tensor-core kernel (the tuning table's key).
enum class TileConfig : std::uint8_t {
  automatic = 0,
  resident_128x128 = 1,  ///< rows tile [128 x D] resident in smem, 4 warps, D <= 256
  stream_128x256 = 2,    ///< rows and centroids streamed in 64-wide D chunks, 8 warps
  stream_128x128 = 3,    ///< same, 4 warps (fewer re-reads of nothing, more blocks)
  /// Hopper only (sm_90a build, compute capability 9.0): wgmma, rows tile [256 x D]
  /// (D <= 128; [128 x D] up to D = kMaxWgmmaDp) by TMA (or converted by the consumers),
  /// [128 x 64] centroid chunks by TMA, a producer warp and two consumer warpgroups
  /// (flash_assign_sm90.cu).
  wgmma_sm90 = 4,
};

/// The heuristic: on a device where the wgmma kernel runs (sm90_wgmma_supported) and
/// padded D <= kMaxWgmmaDp, wgmma_sm90 (the same config for every k at a given D: attach
/// chooses with k unknown); else resident rows tile when it fits, else streamed (split-D)
/// with BN=256. `cc` = compute capability as 10*major + minor.
TileConfig choose_tile(std::int64_t n, int k, int d, int sm_count, int cc);
/// The tile config for tf32 operands (mma.sync only: the wgmma kernel takes fp16/bf16): the
/// resident rows tile while [128 x dp] fp32 fits the b16 config's 64 KB (dp <= 128), else
/// streamed with BN=256. Beside choose_tile(), which the fp16/bf16 operands use.
TileConfig choose_tile_tf32(int d);
/// Whether the tensor-core kernels can run config t with operand op at padded width dp
/// (wgmma: fp16/bf16, dp <= kMaxWgmmaDp; resident: dp * operand bytes <= 512; streamed: any).
bool tile_supports(TileConfig t, Operand op, int dp);
/// Whether the build holds the sm_90a wgmma kernel and a device of compute capability
/// `cc` (10*major + minor) can run it.
bool sm90_wgmma_supported(int cc);
/// Whether `t` reads x through the streamed (16-bit, aligned) path; the others convert
/// any input dtype while loading their resident rows tile.
bool tile_streams_x(TileConfig t);
/// Rows per tile (BM) of the tensor-core kernel of config t at padded width dp: what a
/// ragged launch's tile table must be cut for (128; wgmma_sm90: 256 for dp <= 128, else 128).
int flash_tile_rows(TileConfig t, int dp);
/// Width of the centroid tile (kp must be a multiple of it) and of a D chunk.
int tile_bn(TileConfig t);
constexpr int kChunkD = 64;
/// Largest padded D of TileConfig::wgmma_sm90 (its rows tile [128 x D] in shared memory).
constexpr int kMaxWgmmaDp = 768;
/// Whether the streamed configs can read x directly with 16-byte copies (x already in the
/// operand's storage type: f16 / bf16 / f32 for tf32; aligned rows). When not, fp16/bf16
/// need an operand copy of x; tf32 converts while loading instead.
bool x_streamable(const AssignParams& p, Operand op);

/// Rows per tile of the kernels (a ragged launch's tile table is cut for these).
constexpr int kFlashBM = 128;
constexpr int kSimtBM = 64;

/// Tensor-core FlashAssign (op = fp16, bf16 or tf32). fp16/bf16: x must be readable as op
/// (streamed configs) or any dtype (resident config converts while loading); tf32: any
/// dtype in every mma.sync config, never an operand copy (streamed configs copy aligned fp32
/// rows as they are and round them in registers; everything else is converted and rounded
/// while loading).
/// With p.cand_pairs set it is the cascade's candidate level, in the kernel and data path
/// level 1 took with the same p.x (AssignParams, certify_candidates.hpp).
void launch_flash_assign(const AssignParams& p, Operand op, TileConfig tile, cudaStream_t s);
/// The wgmma kernel behind TileConfig::wgmma_sm90 (flash_assign_sm90.cu); padded d <=
/// kMaxWgmmaDp, any input dtype, kp a multiple of 128. Only on a device where sm90_wgmma_supported().
/// With p.cand_pairs set it is the cascade's candidate level (AssignParams, certify_candidates.hpp).
void launch_flash_assign_sm90(const AssignParams& p, Operand op, cudaStream_t s);

/// Exact-fp32 SIMT assign (fp32 FMA chains; certified with u = 0). c is fp32 [kp x dp],
/// kp a multiple of 64, dp a multiple of 16. With p.row_map it is the cascade's second
/// level: the rows the tensor-core pass flagged (per problem), read in place.
void launch_simt_assign(const AssignParams& p, cudaStream_t s);
constexpr int kSimtBN = 64;
constexpr int kSimtBK = 16;

/// Re-check the flagged rows in fp64 from differences against fp32 centroids
/// c32 [B][k x d]; writes labels/dist, counts label changes. Reads the count on device.
void launch_recheck(const AssignParams& p, const float* c32, cudaStream_t s);

}  // namespace flashkm::cuda
