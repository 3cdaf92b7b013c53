// FlashAssign for Hopper (sm_90a): wgmma.mma_async (fp16/bf16 operands, fp32 accumulation),
// TMA-fed rows and centroid tiles, warp specialisation. Same contract as the mma.sync kernel
// (flash_assign.cu): scores s_j = alpha*(x.c_j) + cterm_j, argmin with ties to the lowest j,
// best and second best, certification through the shared finish_row(), B problems.
//
// Persistent grid (one block per SM walks the (problem, rows tile) list, block_tile()).
// Per thread block (Sm90Traits): 3 warpgroups.
//   WG0 (producer, 40 registers): one thread walks the block's tiles in the consumers'
//       order. Per rows tile it claims a rows buffer (kR = 2 buffers where two fit, so the
//       next tile's rows land while the consumers still multiply the current one; 1 at
//       large D) through `rows_empty`, then either loads the tile [kBM x dp] with the bulk
//       tensor copy (TMA; the input is the operand type, 16-byte rows) completing on
//       `rows_full`, or only arrives on `rows_full` to hand the empty buffer to the
//       consumers, which then load and convert it themselves (fp32/f64 input, unaligned
//       rows, a ragged tile whose rows may end past x). Then it streams the tile's centroid
//       chunks [128 x 64] (16 KB, one D chunk of one centroid tile) through a kS-deep ring
//       of stages; `full` per stage (transaction bytes), `empty` per stage (one arrival per
//       consumer warp). With two rows buffers it issues the next tile's rows right after
//       the current tile's first kS chunks (by then the consumers have left the previous
//       tile, whose buffer it reuses); with one, after the current tile's last chunk.
//   WG1, WG2 (consumers, 232 registers): each owns kMB*64 rows of the rows tile. Per
//       centroid tile j, per D chunk c: wait `full`, issue kMB x 4 wgmma m64n128k16
//       (A and B from shared memory), commit; once the next chunk's group is issued, wait
//       for the previous one and release its stage (wgmma_wait<1>). Then fold the
//       [kMB*64 x 128] fp32 scores into per-row (best, tile-local index, second).
//       Uncertified launches whose stage ring holds a whole centroid tile run the consumers
//       in ping-pong (named barriers: they take turns issuing a tile's wgmmas, so one's fold
//       runs under the other's MMA, FlashAttention-3's inter-warpgroup overlap); certified
//       launches fold more per score and run faster without it (measured).
//   FINISH  merge over the 4 lanes of a quad (each row lives in one quad), finish_row().
// Accumulation order per accumulator: chunks ascending, k-steps ascending, the first
// overwriting (scale_d = 0): one fixed wgmma sequence, whoever loaded the rows tile.
// Index tracking: a score that beats the best records its tile-local column (an immediate
// in the unrolled code) and, once per tile, the tile number is recorded when the best
// improved; ties keep the earlier (lower) column because every compare is strict and each
// thread visits its columns in ascending order. The quad merge is lexicographic.
//
// Barrier phases: producer and consumers walk the same (tile, j, c) sequence, so each
// keeps its own (stage, phase) and (rows buffer, phase) counters, advanced in the same
// order. A waiter for "buffer free" waits on parity phase^1 (a fresh barrier has completed
// the phase of parity 1), a waiter for "buffer filled" on parity phase. Every TMA the
// producer issues completes on a `full`/`rows_full` barrier some consumer waits on, so the
// block never exits with a copy in flight.
#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cudaTypedefs.h>

#include <cstdint>
#include <type_traits>
#include <utility>

#include "cuda/cuda_check.hpp"
#include "cuda/flash_assign.hpp"
#include "cuda/flash_assign_common.cuh"
#include "cuda/problem_tiles.cuh"
#include "cuda/mma_sm90.cuh"

namespace flashkm::cuda {
namespace {

using namespace detail;

// ------------------------------------------------------------------------------------
// Traits
// ------------------------------------------------------------------------------------
/// Shared memory per block on sm_90 (227 KB) and the D chunks the kernel takes (dp <= 768).
constexpr int kSm90SmemLimit = 232448;
constexpr int kSm90MaxChunks = kMaxWgmmaDp / kChunkD;

template <class T_, int MB_>
struct Sm90Traits {
  using T = T_;
  static constexpr int kMB = MB_;           // m64 row blocks per consumer warpgroup
  static constexpr int kConsumers = 2;      // consumer warpgroups
  static constexpr int kBM = 64 * kMB * kConsumers;  // rows per block
  static constexpr int kBN = 128;           // centroids per tile (wgmma N)
  static constexpr int kThreads = 128 * (1 + kConsumers);
  static constexpr int kChunk = 64;         // D chunk: 64 b16 = one 128-byte swizzled row
  static constexpr int kStageBytes = kBN * 128;  // one centroid chunk [128 x 64] b16
  static constexpr int kMaxStages = 8;
  // Consumers: 128 accumulators + 32 cterm values + the top-2 state + the rows loads.
  static constexpr int kProducerRegs = 40, kConsumerRegs = 232;
  static_assert(kProducerRegs * 128 + kConsumerRegs * 128 * kConsumers <= 65536, "register file");
  static_assert(kBN == 128 && kChunk == kChunkD, "tile shape assumed by the wgmma wrapper and the swizzle");
  static_assert(kBM <= 256, "one TMA box spans the rows tile's height");

  /// Bytes of one rows buffer [kBM x 64*dc].
  static constexpr int rows_bytes(int dc) { return dc * kBM * 128; }
  /// Two rows buffers (the next tile's rows load under the current tile's MMA) when they
  /// fit beside 4 centroid stages, else one. Layout: 1 KB alignment slack, 1 KB barriers,
  /// rows buffers, stages.
  static constexpr int rows_buffers(int dc) {
    return 2048 + 2 * rows_bytes(dc) + 4 * kStageBytes <= kSm90SmemLimit ? 2 : 1;
  }
  /// Centroid chunk stages: what is left, at most kMaxStages.
  static constexpr int stages(int dc) {
    const int s = (kSm90SmemLimit - 2048 - rows_buffers(dc) * rows_bytes(dc)) / kStageBytes;
    return s < kMaxStages ? s : kMaxStages;
  }
  static constexpr std::size_t smem_bytes(int dc) {
    return 2048 + std::size_t(rows_buffers(dc)) * rows_bytes(dc) + std::size_t(stages(dc)) * kStageBytes;
  }
};

/// How the rows tiles reach shared memory (host's choice, rows_tensor_map()).
enum RowsMode : int {
  kRowsByConsumers = 0,  ///< every tile loaded (and converted) by the consumers
  kRowsTma = 1,          ///< every tile by TMA: the tensor map spans exactly the rows of x
  kRowsTmaInProblem = 2  ///< TMA for tiles whose rows all lie in their problem (x's end is
                         ///< unknown: ragged launch without AssignParams::x_rows), else consumers
};

/// One (problem, rows tile) of a block. Persistent grid (one block per SM): the i-th tile
/// of block x is work item x + i*gridDim.x, mapped to (problem, row0) by problem_tile()
/// (problem_tiles.cuh: the one mapping of every assign kernel; equal-sized problems
/// problem-major, or a ragged tile table cut for kBM rows). Producer and consumers both
/// iterate it, so they agree on the sequence of tiles (a tile with row0 >= n is skipped by
/// both).
using RowTile = TileWork;
template <int BM>
__device__ __forceinline__ bool block_tile(const AssignParams& p, int i, RowTile& t) {
  const std::int64_t linear = std::int64_t(blockIdx.x) + std::int64_t(i) * gridDim.x;
  if (linear >= tile_count(p, BM)) return false;
  t = problem_tile(p, linear, BM);
  return true;
}

/// The block's first tile from its i-th on that has rows (row0 < n) into t; its index, or -1.
template <int BM>
__device__ __forceinline__ int next_tile(const AssignParams& p, int i, RowTile& t) {
  for (; block_tile<BM>(p, i, t); ++i)
    if (t.row0 < t.n) return i;
  return -1;
}

/// The TMA row coordinate of the tile's first row (x_off is a whole number of rows when the
/// mode is not kRowsByConsumers), or -1 when this tile's rows are loaded by the consumers.
/// Producer and consumers evaluate it alike.
template <int BM>
__device__ __forceinline__ std::int64_t tma_row(const AssignParams& p, const RowTile& t, int mode) {
  if (mode == kRowsByConsumers) return -1;
  const std::int64_t row = t.x_off / p.x_stride + t.row0;
  if (mode == kRowsTmaInProblem && (t.row0 + BM > t.n || row + BM > 0x7fffffff)) return -1;
  return row;
}

[[maybe_unused]] __device__ __forceinline__ float load_f32(const void* x, DType dt, std::int64_t i) {
  switch (dt) {
    case DType::f16: return __half2float(static_cast<const __half*>(x)[i]);
    case DType::bf16: return __bfloat162float(static_cast<const __nv_bfloat16*>(x)[i]);
    case DType::f64: return static_cast<float>(static_cast<const double*>(x)[i]);
    default: return static_cast<const float*>(x)[i];
  }
}

/// One 16-byte chunk (8 columns from `col`) of a row, converted to T; zero past d.
template <class T>
__device__ __forceinline__ uint4 load_chunk(const AssignParams& p, std::int64_t e0, int col, bool vec16, bool vec32) {
  if (vec16) return __ldg(reinterpret_cast<const uint4*>(static_cast<const T*>(p.x) + e0));
  alignas(16) T h[8];
  if (vec32) {
    const float4 a = __ldg(reinterpret_cast<const float4*>(static_cast<const float*>(p.x) + e0));
    const float4 b = __ldg(reinterpret_cast<const float4*>(static_cast<const float*>(p.x) + e0 + 4));
    h[0] = from_f32<T>(a.x), h[1] = from_f32<T>(a.y), h[2] = from_f32<T>(a.z), h[3] = from_f32<T>(a.w);
    h[4] = from_f32<T>(b.x), h[5] = from_f32<T>(b.y), h[6] = from_f32<T>(b.z), h[7] = from_f32<T>(b.w);
  } else {
#pragma unroll
    for (int e = 0; e < 8; ++e) h[e] = from_f32<T>(col + e < p.d ? load_f32(p.x, p.x_dtype, e0 + e) : 0.0f);
  }
  return *reinterpret_cast<const uint4*>(h);
}

/// Consumer cw's rows [cw*kMB*64, +kMB*64) of the rows tile into sX (kDc chunks of
/// [kBM x 64], 128-byte swizzle: 16-byte chunk q of row r at q ^ (r % 8), as TMA writes
/// it), converted to T; zero past n and d. Called by the 128 threads of the consumer (wt =
/// thread within it); loads are issued in batches before their stores (one memory latency
/// per batch, not per chunk).
template <class Tr, int kDc>
__device__ __forceinline__ void load_rows_part(const AssignParams& p, const RowTile& t, typename Tr::T* sX, int cw, int wt) {
  using T = typename Tr::T;
  constexpr DType kT = std::is_same_v<T, __half> ? DType::f16 : DType::bf16;
  constexpr int kCpr = kDc * 8;  // 16-byte chunks per row
  constexpr int kRows = Tr::kMB * 64;
  constexpr int kIters = kRows * kCpr / 128;
  constexpr int kBatch = kIters % 8 == 0 ? 8 : 4;
  static_assert(kRows * kCpr % 128 == 0 && kIters % kBatch == 0, "rows part split over the consumer's threads");
  const std::int64_t base = t.x_off;
  const bool aligned8 = p.d % 8 == 0 && p.x_stride % 8 == 0 && p.x_batch % 8 == 0 &&
                        (reinterpret_cast<std::uintptr_t>(p.x) & 15) == 0;
  const bool vec16 = p.x_dtype == kT && aligned8;
  const bool vec32 = p.x_dtype == DType::f32 && aligned8;
  const int r0 = cw * kRows;
#pragma unroll
  for (int i0 = 0; i0 < kIters; i0 += kBatch) {
    uint4 v[kBatch];
#pragma unroll
    for (int u = 0; u < kBatch; ++u) {
      const int i = wt + (i0 + u) * 128;
      const int r = r0 + i / kCpr, ch = i % kCpr;
      const std::int64_t row = t.row0 + r;
      const int col = ch * 8;
      v[u] = make_uint4(0, 0, 0, 0);
      if (row < t.n && col < p.d) v[u] = load_chunk<T>(p, base + row * p.x_stride + col, col, vec16, vec32);
    }
#pragma unroll
    for (int u = 0; u < kBatch; ++u) {
      const int i = wt + (i0 + u) * 128;
      const int r = r0 + i / kCpr, ch = i % kCpr;
      const int c = ch >> 3, q = ch & 7;
      *reinterpret_cast<uint4*>(sX + (std::size_t(c) * Tr::kBM + r) * Tr::kChunk + ((q ^ (r & 7)) << 3)) = v[u];
    }
  }
}

/// Calls f(std::integral_constant<int, 0>) .. f(<N-1>) in order: straight-line code with
/// compile-time indices (a run-time loop makes ptxas fence the accumulators between wgmmas).
template <class F, int... I>
__device__ __forceinline__ void static_for_impl(F& f, std::integer_sequence<int, I...>) {
  (f(std::integral_constant<int, I>{}), ...);
}
template <int N, class F>
__device__ __forceinline__ void static_for(F&& f) {
  static_for_impl(f, std::make_integer_sequence<int, N>{});
}

/// A ring position: slot and phase parity, advanced in the walk order.
template <int N>
struct Ring {
  int slot = 0;
  unsigned phase = 0;
  __device__ __forceinline__ void advance() {
    if (++slot == N) {
      slot = 0;
      phase ^= 1u;
    }
  }
};

/// kDc = dp / 64 D chunks, a template argument so that the wgmma sequence of a tile is
/// straight-line code. kSecond: track the second best (certified launches).
template <class Tr, int kDc, bool kSecond>
__global__ void __launch_bounds__(Tr::kThreads, 1)
    flash_assign_sm90_kernel(const AssignParams p, const __grid_constant__ CUtensorMap tmap_c,
                             const __grid_constant__ CUtensorMap tmap_x, const int rows_mode) {
#if defined(FLASHKM_SM90A_ENABLED)
  using T = typename Tr::T;
  constexpr int kBM = Tr::kBM, kBN = Tr::kBN, kMB = Tr::kMB, kChunk = Tr::kChunk;
  constexpr int kR = Tr::rows_buffers(kDc), kS = Tr::stages(kDc);
  static_assert(kS >= 2, "at least two centroid stages");
  // Consumers in ping-pong for uncertified launches only. Measured on the H200 at N1M
  // K8192 D128 fp16 (bench/results/wgmma_probe_2026-11-29-h200-v2-speed.log): uncertified
  // 576 TFLOP/s with it, 554 without; certified (heavier fold) 424 with it, 443 without.
  // Only when the ring holds a whole centroid tile (kS >= kDc): a consumer holds the turn
  // while it waits for the tile's chunks, and a chunk's stage is free only once the other
  // consumer, which waits for the turn, has used its previous contents.
  constexpr bool kPingPong = !kSecond && kS >= kDc;
  constexpr int kRowsElems = kDc * kBM * kChunk;  // one rows buffer
  constexpr int kStageElems = kBN * kChunk;       // one centroid chunk
  extern __shared__ unsigned char smem_raw[];
  // Swizzled tiles must start on 1024-byte boundaries (the pattern repeats every 8 rows).
  unsigned char* smem = smem_raw + ((1024 - (arch::smem_u32(smem_raw) & 1023)) & 1023);
  std::uint64_t* full = reinterpret_cast<std::uint64_t*>(smem);  // [kS] centroid chunk landed
  std::uint64_t* empty = full + kS;                               // [kS] consumers done with it
  std::uint64_t* rows_full = empty + kS;                          // [kR] rows tile ready / buffer handed over
  std::uint64_t* rows_empty = rows_full + kR;                     // [kR] consumers done with it
  T* sX = reinterpret_cast<T*>(smem + 1024);                      // (kR, kDc, kBM, 64) swizzled
  T* sC = sX + std::size_t(kR) * kRowsElems;                      // (kS, kBN, 64) swizzled
  const int wg = threadIdx.x / 128;

  if (threadIdx.x == 0) {
#pragma unroll
    for (int s = 0; s < kS; ++s) {
      arch::mbar_init(&full[s], 1);
      arch::mbar_init(&empty[s], 4 * Tr::kConsumers);
    }
#pragma unroll
    for (int s = 0; s < kR; ++s) {
      arch::mbar_init(&rows_full[s], 1);
      arch::mbar_init(&rows_empty[s], 4 * Tr::kConsumers);
    }
    arch::fence_barrier_init();
  }
  __syncthreads();

  if (wg == 0) {
    // ---- PRODUCER: rows tiles and centroid chunks, in the consumers' order ---------------
    arch::setmaxnreg_dec<Tr::kProducerRegs>();
    if (threadIdx.x == 0) {
      arch::prefetch_tma_descriptor(&tmap_c);
      if (rows_mode != kRowsByConsumers) arch::prefetch_tma_descriptor(&tmap_x);
      Ring<kS> st;
      Ring<kR> rb;
      // Rows tile of `t` into the next rows buffer, once the consumers are done with it.
      auto issue_rows = [&](const RowTile& t) {
        arch::mbar_wait(&rows_empty[rb.slot], rb.phase ^ 1u);
        const std::int64_t row = tma_row<kBM>(p, t, rows_mode);
        if (row >= 0) {
          arch::mbar_arrive_expect_tx(&rows_full[rb.slot], static_cast<unsigned>(kRowsElems * sizeof(T)));
          T* dst = sX + std::size_t(rb.slot) * kRowsElems;
#pragma unroll 1
          for (int c = 0; c < kDc; ++c)
            arch::SM90_TMA_LOAD_2D(dst + c * kBM * kChunk, &tmap_x, &rows_full[rb.slot], c * kChunk, static_cast<int>(row));
        } else {
          arch::mbar_arrive(&rows_full[rb.slot]);  // the buffer is free: the consumers fill it
        }
        rb.advance();
      };
      RowTile t, tn;
      int i = next_tile<kBM>(p, 0, t);
      if (i >= 0) issue_rows(t);
      while (i >= 0) {
        const int in = next_tile<kBM>(p, i + 1, tn);
        bool next_rows = in < 0;  // the next tile's rows are issued
        const int n_q = t.kp / kBN * kDc;
        for (int q = 0, j = 0, c = 0; q < n_q; ++q) {
          arch::mbar_wait(&empty[st.slot], st.phase ^ 1u);
          arch::mbar_arrive_expect_tx(&full[st.slot], static_cast<unsigned>(kStageElems * sizeof(T)));
          arch::SM90_TMA_LOAD_2D(sC + std::size_t(st.slot) * kStageElems, &tmap_c, &full[st.slot], c * kChunk,
                                 static_cast<int>(t.c_row) + j * kBN);
          st.advance();
          if (++c == kDc) c = 0, ++j;
          // Two rows buffers: the next tile's buffer was the previous tile's, free once the
          // consumers have released this tile's first chunk stages (then the wait is short);
          // its rows then land under this tile's MMA.
          if (kR == 2 && q == kS - 1 && !next_rows) {
            issue_rows(tn);
            next_rows = true;
          }
        }
        if (!next_rows) issue_rows(tn);
        i = in;
        t = tn;
      }
    }
  } else {
    // ---- CONSUMERS ----------------------------------------------------------------------
    arch::setmaxnreg_inc<Tr::kConsumerRegs>();
    const int cw = wg - 1;                     // consumer index
    const int wt = threadIdx.x & 127;          // thread within the consumer
    const int wq = wt / 32;                    // warp within the warpgroup: rows wq*16 .. +15
    const int lane = threadIdx.x & 31, g = lane >> 2, tq = lane & 3;
    const float alpha = p.alpha;
    if (kPingPong && cw == 1) arch::named_barrier_arrive(2, 256);  // consumer 0 issues first
    Ring<kS> st;
    Ring<kR> rb;
    RowTile t;
    for (int i = 0; block_tile<kBM>(p, i, t); ++i) {
      if (t.row0 >= t.n) continue;
      const int n_j = t.kp / kBN;
      T* sXb = sX + std::size_t(rb.slot) * kRowsElems;
      arch::mbar_wait(&rows_full[rb.slot], rb.phase);
      if (tma_row<kBM>(p, t, rows_mode) < 0) {
        // The producer handed over the empty buffer: load this consumer's rows into it.
        load_rows_part<Tr, kDc>(p, t, sXb, cw, wt);
        arch::fence_proxy_async_smem();  // generic-proxy stores -> wgmma (async proxy) reads
        arch::named_barrier_sync(4 + cw, 128);
      }

      // finish_row reads each row's |x|^2 and old label, row after row (its stores may alias
      // the next row's loads): fetch those lines now, under the tile's MMA.
      if (tq == 0)
#pragma unroll
        for (int r = 0; r < 2 * kMB; ++r) {
          const std::int64_t row = t.row0 + (cw * kMB + r / 2) * 64 + wq * 16 + g + 8 * (r % 2);
          if (row < t.n) {
            arch::prefetch_l1(p.xnorm + t.row_begin + row);
            arch::prefetch_l1(p.labels + t.row_begin + row);
          }
        }

      float best[2 * kMB], second[2 * kMB], bstart[2 * kMB];
      int lidx[2 * kMB], jbest[2 * kMB];
#pragma unroll
      for (int r = 0; r < 2 * kMB; ++r) {
        best[r] = second[r] = bstart[r] = INFINITY;
        lidx[r] = 0;
        jbest[r] = 0;
      }
      const float* ctb = p.cterm + t.c_row + 2 * tq;
      const std::uint64_t desc_a = arch::gmma_desc_sw128(sXb + std::size_t(cw) * kMB * 64 * kChunk);
      float acc[kMB][64];  // (MB, 64): rows mb*64 + wq*16 + g (+8), cols 8n + 2tq (+1)

      // Issue chunk c of every row block against centroid stage `stage` (one commit group).
      auto issue_chunk = [&](auto cc, int stage) {
        constexpr int c = decltype(cc)::value;
        const std::uint64_t desc_b = arch::gmma_desc_sw128(sC + std::size_t(stage) * kStageElems);
#pragma unroll
        for (int mb = 0; mb < kMB; ++mb)
#pragma unroll
          for (int r = 0; r < 64; ++r) arch::fence_operand(acc[mb][r]);
        arch::wgmma_fence();
#pragma unroll
        for (int mb = 0; mb < kMB; ++mb)
#pragma unroll
          for (int ks = 0; ks < kChunk / 16; ++ks) {
            // +32 B per k-step, +128 B per row: the descriptor's start field is in 16 B.
            const std::uint64_t da = desc_a + ((c * kBM * 128 + mb * 64 * 128 + ks * 32) >> 4);
            const std::uint64_t db = desc_b + ((ks * 32) >> 4);
            arch::Wgmma64x128<T>::run(acc[mb], da, db, (c | ks) != 0);
          }
        arch::wgmma_commit();
      };
      // EPILOGUE of row block mb, tile j: s = alpha*acc + cterm, folded per row.
      auto fold = [&](int mb, int j, const float2 (&ct)[16]) {
#pragma unroll
        for (int r = 0; r < 64; ++r) arch::fence_operand(acc[mb][r]);
#pragma unroll
        for (int n = 0; n < 16; ++n)
#pragma unroll
          for (int h = 0; h < 2; ++h)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              const int r = 2 * mb + h;
              const float s = fmaf(alpha, acc[mb][4 * n + 2 * h + e], e ? ct[n].y : ct[n].x);
              if constexpr (kSecond) second[r] = fminf(second[r], fmaxf(best[r], s));
              const bool win = s < best[r];
              best[r] = win ? s : best[r];
              lidx[r] = win ? 8 * n + e : lidx[r];
            }
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int r = 2 * mb + h;
          jbest[r] = best[r] < bstart[r] ? j : jbest[r];
          bstart[r] = best[r];
        }
      };
      auto load_cterm = [&](int j, float2 (&ct)[16]) {
#pragma unroll
        for (int n = 0; n < 16; ++n) ct[n] = __ldg(reinterpret_cast<const float2*>(ctb + j * kBN + 8 * n));
      };

      // ---- MAIN LOOP over centroid tiles, each kDc chunk stages ------------------------
      for (int j = 0; j < n_j; ++j) {
        float2 ct[16];  // cterm of this thread's columns; the loads overlap the wait and the MMA
        load_cterm(j, ct);
        if constexpr (kPingPong) arch::named_barrier_sync(2 + cw, 256);  // my turn to issue
        int prev = 0;  // the previous chunk's stage
        static_for<kDc>([&](auto cc) {
          arch::mbar_wait(&full[st.slot], st.phase);
          issue_chunk(cc, st.slot);
          if constexpr (decltype(cc)::value > 0) {
            arch::wgmma_wait<1>();  // the previous chunk's wgmmas are done: release its stage
            if (lane == 0) arch::mbar_arrive(&empty[prev]);
          }
          prev = st.slot;
          st.advance();
        });
        if constexpr (kPingPong) arch::named_barrier_arrive(2 + (cw ^ 1), 256);  // the other's turn
        arch::wgmma_wait<0>();
        if (lane == 0) {
          arch::mbar_arrive(&empty[prev]);
          if (j == n_j - 1) arch::mbar_arrive(&rows_empty[rb.slot]);  // the rows tile's last reader
        }
#pragma unroll
        for (int mb = 0; mb < kMB; ++mb) fold(mb, j, ct);
      }
      if (n_j == 0 && lane == 0) arch::mbar_arrive(&rows_empty[rb.slot]);
      rb.advance();

      // ---- FINISH: merge over the quad, certify, write -----------------------------------
      int changed = 0;
#pragma unroll
      for (int mb = 0; mb < kMB; ++mb)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int r = 2 * mb + h;
          Top2 v;
          v.best = best[r];
          v.idx = jbest[r] * kBN + lidx[r] + 2 * tq;
          v.second = kSecond ? second[r] : INFINITY;
          v = top2_shfl_xor(v, 1);
          v = top2_shfl_xor(v, 2);
          const std::int64_t row = t.row0 + (cw * kMB + mb) * 64 + wq * 16 + g + 8 * h;
          if (tq == 0 && row < t.n) changed += finish_row(p, t, t.row_begin + row, v);
        }
      const int warp_sum = __reduce_add_sync(0xffffffffu, changed);
      if (lane == 0 && warp_sum) {
        atomicAdd(&p.counters[1], (unsigned long long)warp_sum);
        if (p.problem_stats) atomicAdd(&p.problem_stats[2 * std::int64_t(t.b) + 1], (unsigned long long)warp_sum);
      }
    }
  }
#else
  __trap();  // built for sm_90a only; the host never launches it elsewhere
#endif
}

// ------------------------------------------------------------------------------------
// Host side
// ------------------------------------------------------------------------------------
// dp <= 128: rows tile 256 x dp; dp <= 768: 128 x dp (Sm90Traits: rows buffers and stages
// per dp). (v3 of 2026-11-29 loaded the next rows tile with the producer's spare warps
// through ordinary loads into a second buffer beside 3 whole-tile stages: measured slower,
// 512 vs 576 TFLOP/s at K8192 and 227 vs 330 at K1024.)
using Sm90H256 = Sm90Traits<__half, 2>;  // kBM = 256
using Sm90H128 = Sm90Traits<__half, 1>;  // kBM = 128
using Sm90B256 = Sm90Traits<__nv_bfloat16, 2>;
using Sm90B128 = Sm90Traits<__nv_bfloat16, 1>;
static_assert(Sm90H256::smem_bytes(2) <= kSm90SmemLimit && Sm90H128::smem_bytes(kSm90MaxChunks) <= kSm90SmemLimit,
              "shared memory per block");
static_assert(Sm90H128::stages(kSm90MaxChunks) >= 2, "dp = kMaxWgmmaDp must leave two centroid stages");

/// cuTensorMapEncodeTiled through the runtime's driver entry point (no -lcuda).
PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
  static const PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult q{};
    FLASHKM_CUDA_CHECK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault, &q));
    FLASHKM_CHECK(q == cudaDriverEntryPointSuccess && f != nullptr, device_unavailable,
                  "the CUDA driver has no cuTensorMapEncodeTiled (needed by the wgmma FlashAssign kernel)");
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(f);
  }();
  return fn;
}

/// 2-D b16 tensor map [rows x cols] (row stride `stride` elements), boxes [box_rows x 64
/// cols] in the 128-byte swizzle; reads past rows or cols fill zeros.
CUtensorMap b16_tensor_map(const void* base, Operand op, std::uint64_t rows, std::uint64_t cols, std::uint64_t stride,
                           int box_rows) {
  CUtensorMap m;
  const cuuint64_t dims[2] = {cuuint64_t(cols), cuuint64_t(rows)};
  const cuuint64_t strides[1] = {cuuint64_t(stride) * 2};
  const cuuint32_t box[2] = {64, cuuint32_t(box_rows)};
  const cuuint32_t elem_strides[2] = {1, 1};
  const CUresult r = tensor_map_encoder()(
      &m, op == Operand::fp16 ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2,
      const_cast<void*>(base), dims, strides, box, elem_strides, CU_TENSOR_MAP_INTERLEAVE_NONE,
      CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  FLASHKM_CHECK(r == CUDA_SUCCESS, internal, "cuTensorMapEncodeTiled failed (CUresult ", int(r), ")");
  return m;
}

/// Tensor map of the centroid operands [B*kp x dp]: one box = one D chunk of one centroid tile.
CUtensorMap centroid_tensor_map(const AssignParams& p, Operand op) {
  const std::uint64_t rows = p.problems ? std::uint64_t(p.c_rows_total) : std::uint64_t(p.batch) * std::uint64_t(p.kp);
  FLASHKM_ASSERT(rows < (std::uint64_t(1) << 31), "wgmma FlashAssign: B*kp centroid rows exceed the TMA coordinate range");
  return b16_tensor_map(p.c, op, rows, std::uint64_t(p.dp), std::uint64_t(p.dp), 128);
}

/// Tensor map of the rows [rows of x x d] when TMA can read them as they are (the operand
/// type, 16-byte rows and base, every problem's row 0 a row of the map), and the RowsMode.
/// Columns past d and rows past x's end read as zeros; rows past a problem's end (the next
/// problem's) are multiplied but never written (finish's row < n).
CUtensorMap rows_tensor_map(const AssignParams& p, Operand op, int bm, int& mode) {
  mode = kRowsByConsumers;
  const DType want = op == Operand::fp16 ? DType::f16 : DType::bf16;
  if (p.x_dtype != want || p.x_stride % 8 != 0 || p.x_stride < p.d || (reinterpret_cast<std::uintptr_t>(p.x) & 15) != 0)
    return CUtensorMap{};
  constexpr std::uint64_t kMaxRow = 0x7fffffff;  // TMA coordinates are int32
  std::uint64_t rows = 0;
  if (p.problems) {  // ragged: problem b's row 0 is row problems[b].row_begin of x
    if (p.x_rows > 0) {
      rows = std::uint64_t(p.x_rows);
      mode = kRowsTma;
    } else {
      rows = kMaxRow;  // x's end unknown: only tiles inside their problem (tma_row)
      mode = kRowsTmaInProblem;
    }
  } else {  // equal problems: problem b's row 0 is row b * x_batch / x_stride
    if (p.batch > 1 && p.x_batch % p.x_stride != 0) return CUtensorMap{};
    rows = std::uint64_t(p.batch - 1) * std::uint64_t(p.x_batch / p.x_stride) + std::uint64_t(p.n);
    mode = kRowsTma;
  }
  if (mode == kRowsTma && rows + std::uint64_t(bm) > kMaxRow) {
    mode = kRowsByConsumers;
    return CUtensorMap{};
  }
  return b16_tensor_map(p.x, op, rows, std::uint64_t(p.d), std::uint64_t(p.x_stride), bm);
}

template <class Tr, int kDc, bool kSecond>
void run_sm90(const AssignParams& p, Operand op, const CUtensorMap& cmap, cudaStream_t s) {
  auto kernel = flash_assign_sm90_kernel<Tr, kDc, kSecond>;
  constexpr std::size_t smem = Tr::smem_bytes(kDc);
  FLASHKM_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  FLASHKM_ASSERT(p.tiles == nullptr || p.tile_rows == Tr::kBM,
                 "ragged launch: the tile table was cut for another tile height than the wgmma kernel's");
  FLASHKM_ASSERT(p.tiles == nullptr || p.problems != nullptr, "ragged launch: a tile table needs its problem table");
  int mode = kRowsByConsumers;
  const CUtensorMap xmap = rows_tensor_map(p, op, Tr::kBM, mode);
  const std::int64_t tiles = (p.n + Tr::kBM - 1) / Tr::kBM;
  int dev = 0, sms = 0;
  FLASHKM_CUDA_CHECK(cudaGetDevice(&dev));
  FLASHKM_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  // Persistent: one block per SM walks the (problem, tile) list (block_tile). Measured at
  // N1M D128 fp16: K8192 576 TFLOP/s vs 542 with one block per tile, K1024 330 vs 293.
  const std::int64_t total = p.tiles ? p.n_tiles : tiles * p.batch;
  const dim3 grid(static_cast<unsigned>(total < sms ? total : sms), 1, 1);
  kernel<<<grid, Tr::kThreads, smem, s>>>(p, cmap, xmap, mode);
  FLASHKM_CUDA_LAUNCH_CHECK();
}

template <class Tr, int kDc>
void dispatch_certify(const AssignParams& p, Operand op, const CUtensorMap& cmap, cudaStream_t s) {
  if (p.certify) return run_sm90<Tr, kDc, true>(p, op, cmap, s);  // tracks the second best
  return run_sm90<Tr, kDc, false>(p, op, cmap, s);
}

template <class Tr256, class Tr128>
void dispatch_sm90(const AssignParams& p, Operand op, const CUtensorMap& cmap, cudaStream_t s) {
  static_assert(kSm90MaxChunks == 12, "one case per chunk count below");
  switch (p.dp / kChunkD) {
    case 1: return dispatch_certify<Tr256, 1>(p, op, cmap, s);
    case 2: return dispatch_certify<Tr256, 2>(p, op, cmap, s);
    case 3: return dispatch_certify<Tr128, 3>(p, op, cmap, s);
    case 4: return dispatch_certify<Tr128, 4>(p, op, cmap, s);
    case 5: return dispatch_certify<Tr128, 5>(p, op, cmap, s);
    case 6: return dispatch_certify<Tr128, 6>(p, op, cmap, s);
    case 7: return dispatch_certify<Tr128, 7>(p, op, cmap, s);
    case 8: return dispatch_certify<Tr128, 8>(p, op, cmap, s);
    case 9: return dispatch_certify<Tr128, 9>(p, op, cmap, s);
    case 10: return dispatch_certify<Tr128, 10>(p, op, cmap, s);
    case 11: return dispatch_certify<Tr128, 11>(p, op, cmap, s);
    default: return dispatch_certify<Tr128, 12>(p, op, cmap, s);
  }
}

}  // namespace

bool sm90_wgmma_supported(int cc) {
  if (cc != 90) return false;
  // The build must hold sm_90a machine code for the kernel (not only the sm_80 target's).
  cudaFuncAttributes attr{};
  if (cudaFuncGetAttributes(&attr, flash_assign_sm90_kernel<Sm90H256, 2, false>) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  return attr.binaryVersion == 90;
}

void launch_flash_assign_sm90(const AssignParams& p, Operand op, cudaStream_t s) {
  if (p.tiles ? p.n_tiles == 0 : (p.n == 0 || p.batch == 0)) return;
  FLASHKM_CHECK(p.dp <= kMaxWgmmaDp && p.dp % kChunkD == 0 && p.kp % 128 == 0, invalid_argument,
                "tile config wgmma_sm90 needs d <= ", kMaxWgmmaDp, " (got padded d ", p.dp, ", padded k ", p.kp, ")");
  FLASHKM_CHECK(p.x_dtype == DType::f32 || p.x_dtype == DType::f16 || p.x_dtype == DType::bf16 ||
                    p.x_dtype == DType::f64,
                invalid_argument, "wgmma FlashAssign: unsupported input dtype ", to_string(p.x_dtype));
  FLASHKM_ASSERT(p.row_map == nullptr, "wgmma FlashAssign does not take a row map (the cascade's level 2 is SIMT)");
  const CUtensorMap cmap = centroid_tensor_map(p, op);
  if (op == Operand::fp16) return dispatch_sm90<Sm90H256, Sm90H128>(p, op, cmap, s);
  if (op == Operand::bf16) return dispatch_sm90<Sm90B256, Sm90B128>(p, op, cmap, s);
  FLASHKM_FAIL(internal, "launch_flash_assign_sm90: operand must be fp16 or bf16");
}

}  // namespace flashkm::cuda
