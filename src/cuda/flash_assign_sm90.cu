// FlashAssign for Hopper (sm_90a): wgmma.mma_async (fp16/bf16 operands, fp32 accumulation),
// TMA-fed centroid tiles, warp specialisation. Same contract as the mma.sync kernel
// (flash_assign.cu): scores s_j = alpha*(x.c_j) + cterm_j, argmin with ties to the lowest j,
// best and second best, certification through the shared finish_row(), B problems.
//
// Persistent grid (one block per SM walks the (problem, rows tile) list, block_tile()).
// Per thread block (Sm90Traits): 3 warpgroups.
//   WG0 (producer, 40 registers): one thread streams centroid tiles [128 x dp] through a
//       kStages-deep ring of shared-memory stages with the bulk tensor copy (TMA, 128-byte
//       swizzle); `full` mbarrier per stage (transaction bytes), `empty` per stage (one
//       arrival per consumer warp). It runs ahead into the next rows tile's centroids.
//   WG1, WG2 (consumers, 232 registers): load the rows tile [kBM x dp] (any input dtype,
//       converted to the operand type) into swizzled shared memory, then each owns kMB*64
//       rows of it. Per centroid tile: wait `full`, issue dp/16 x kMB wgmma m64n128k16
//       (A and B from shared memory), wait, release the stage, fold the [kMB*64 x 128]
//       fp32 scores into per-row (best, tile-local index, second). Uncertified launches run the consumers
//       in ping-pong (named barriers: they take turns issuing their wgmmas, so one's fold
//       runs under the other's MMA, FlashAttention-3's inter-warpgroup overlap);
//       certified launches fold more per score and run faster without it (measured).
//   FINISH  merge over the 4 lanes of a quad (each row lives in one quad), finish_row().
// Index tracking: a score that beats the best records its tile-local column (an immediate
// in the unrolled code) and, once per tile, the tile number is recorded when the best
// improved; ties keep the earlier (lower) column because every compare is strict and each
// thread visits its columns in ascending order. The quad merge is lexicographic.
#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cudaTypedefs.h>

#include <cstdint>
#include <type_traits>

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
template <class T_, int MB_, int STAGES_>
struct Sm90Traits {
  using T = T_;
  static constexpr int kMB = MB_;           // m64 row blocks per consumer warpgroup
  static constexpr int kConsumers = 2;      // consumer warpgroups
  static constexpr int kBM = 64 * kMB * kConsumers;  // rows per block
  static constexpr int kBN = 128;           // centroids per tile (wgmma N)
  static constexpr int kStages = STAGES_;
  static constexpr int kThreads = 128 * (1 + kConsumers);
  static constexpr int kChunk = 64;         // D chunk: 64 b16 = one 128-byte swizzled row
  // Consumers: 128 accumulators + 32 cterm values + the top-2 state + the rows loads.
  static constexpr int kProducerRegs = 40, kConsumerRegs = 232;
  static_assert(kProducerRegs * 128 + kConsumerRegs * 128 * kConsumers <= 65536, "register file");
  static_assert(kBN == 128 && kChunk == kChunkD, "tile shape assumed by the wgmma wrapper and the swizzle");
  /// Shared memory: alignment slack, barriers (1 KB), rows tile, centroid stages:
  /// dp <= 128: 2 KB + 64 KB + 4 x 32 KB = 194 KB; dp <= 256: 2 KB + 64 KB + 2 x 64 KB.
  static std::size_t smem_bytes(int dp) {
    const std::size_t n_dc = std::size_t(dp) / kChunk;
    return 1024 + 1024 + n_dc * kBM * 128 + std::size_t(kStages) * n_dc * kBN * 128;
  }
};

/// One (problem, rows tile) of a block. Persistent grid (one block per SM): the i-th tile
/// of block x is work item x + i*gridDim.x, mapped to (problem, row0) by problem_tile()
/// (problem_tiles.cuh: the one mapping of every assign kernel; equal-sized problems
/// problem-major, or a ragged tile table cut for kBM rows). Producer and consumers both
/// iterate it, so they agree on the sequence of tiles (a tile with row0 >= n is skipped by
/// both); the producer runs ahead into the next tile's centroid stages while the consumers
/// finish the current one.
using RowTile = TileWork;
template <int BM>
__device__ __forceinline__ bool block_tile(const AssignParams& p, int i, RowTile& t) {
  const std::int64_t linear = std::int64_t(blockIdx.x) + std::int64_t(i) * gridDim.x;
  if (linear >= tile_count(p, BM)) return false;
  t = problem_tile(p, linear, BM);
  return true;
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

/// Rows tile [kBM x dp] of problem t.b into sX (dp/64 chunks of [kBM x 64], 128-byte
/// swizzle: 16-byte chunk q of row r at q ^ (r % 8)), converted to T; zero past n and d.
/// Called by the 256 consumer threads; loads are issued in batches of 8 per thread before
/// their stores (one memory latency per batch, not per chunk).
template <class Tr, int kDc>
__device__ __forceinline__ void load_rows_tile(const AssignParams& p, const RowTile& t, typename Tr::T* sX, int ctid) {
  using T = typename Tr::T;
  constexpr DType kT = std::is_same_v<T, __half> ? DType::f16 : DType::bf16;
  constexpr int kCpr = kDc * 8;  // 16-byte chunks per row
  constexpr int kThreads = 128 * Tr::kConsumers;
  constexpr int kIters = Tr::kBM * kCpr / kThreads;
  constexpr int kBatch = kIters % 8 == 0 ? 8 : 4;
  static_assert(Tr::kBM * kCpr % kThreads == 0 && kIters % kBatch == 0, "rows tile split over the consumers");
  const std::int64_t base = t.x_off;
  const bool aligned8 = p.d % 8 == 0 && p.x_stride % 8 == 0 && p.x_batch % 8 == 0 &&
                        (reinterpret_cast<std::uintptr_t>(p.x) & 15) == 0;
  const bool vec16 = p.x_dtype == kT && aligned8;
  const bool vec32 = p.x_dtype == DType::f32 && aligned8;
#pragma unroll
  for (int i0 = 0; i0 < kIters; i0 += kBatch) {
    uint4 v[kBatch];
#pragma unroll
    for (int u = 0; u < kBatch; ++u) {
      const int i = ctid + (i0 + u) * kThreads;
      const int r = i / kCpr, ch = i % kCpr;
      const std::int64_t row = t.row0 + r;
      const int col = ch * 8;
      v[u] = make_uint4(0, 0, 0, 0);
      if (row < t.n && col < p.d) v[u] = load_chunk<T>(p, base + row * p.x_stride + col, col, vec16, vec32);
    }
#pragma unroll
    for (int u = 0; u < kBatch; ++u) {
      const int i = ctid + (i0 + u) * kThreads;
      const int r = i / kCpr, ch = i % kCpr;
      const int c = ch >> 3, q = ch & 7;
      *reinterpret_cast<uint4*>(sX + (std::size_t(c) * Tr::kBM + r) * Tr::kChunk + ((q ^ (r & 7)) << 3)) = v[u];
    }
  }
}

/// kDc = dp / 64 D chunks, a template argument so that the wgmma sequence of a tile is
/// straight-line code (a run-time loop makes ptxas fence the accumulators between wgmmas).
/// kSecond: track the second best (certified launches).
template <class Tr, int kDc, bool kSecond>
__global__ void __launch_bounds__(Tr::kThreads, 1)
    flash_assign_sm90_kernel(const AssignParams p, const __grid_constant__ CUtensorMap tmap_c) {
#if defined(FLASHKM_SM90A_ENABLED)
  using T = typename Tr::T;
  constexpr int kBM = Tr::kBM, kBN = Tr::kBN, kMB = Tr::kMB, kStages = Tr::kStages, kChunk = Tr::kChunk;
  // Consumers in ping-pong for uncertified launches only. Measured on the H200 at N1M
  // K8192 D128 fp16 (bench/results/wgmma_probe_2026-11-29-h200-v2-speed.log): uncertified
  // 576 TFLOP/s with it, 554 without; certified (heavier fold) 424 with it, 443 without.
  constexpr bool kPingPong = !kSecond;
  extern __shared__ unsigned char smem_raw[];
  // Swizzled tiles must start on 1024-byte boundaries (the pattern repeats every 8 rows).
  unsigned char* smem = smem_raw + ((1024 - (arch::smem_u32(smem_raw) & 1023)) & 1023);
  std::uint64_t* full = reinterpret_cast<std::uint64_t*>(smem);  // [kStages] TMA landed
  std::uint64_t* empty = full + kStages;                          // [kStages] consumers done
  constexpr int n_dc = kDc;
  T* sX = reinterpret_cast<T*>(smem + 1024);                      // (n_dc, kBM, 64) swizzled
  T* sC = sX + std::size_t(n_dc) * kBM * kChunk;                  // (kStages, n_dc, kBN, 64) swizzled
  const int stage_elems = n_dc * kBN * kChunk;
  const int wg = threadIdx.x / 128;

  if (threadIdx.x == 0) {
#pragma unroll
    for (int s = 0; s < kStages; ++s) {
      arch::mbar_init(&full[s], 1);
      arch::mbar_init(&empty[s], 4 * Tr::kConsumers);
    }
    arch::fence_barrier_init();
  }
  __syncthreads();

  if (wg == 0) {
    // ---- PRODUCER: centroid tiles, in the consumers' order ------------------------------
    arch::setmaxnreg_dec<Tr::kProducerRegs>();
    if (threadIdx.x == 0) {
      arch::prefetch_tma_descriptor(&tmap_c);
      const unsigned stage_bytes = static_cast<unsigned>(stage_elems * sizeof(T));
      int it = 0;
      RowTile t;
      for (int i = 0; block_tile<kBM>(p, i, t); ++i) {
        if (t.row0 >= t.n) continue;
        const int n_j = t.kp / kBN;
        for (int j = 0; j < n_j; ++j, ++it) {
          const int stage = it % kStages;
          arch::mbar_wait(&empty[stage], ((it / kStages) & 1) ^ 1);  // a fresh barrier passes parity 1
          arch::mbar_arrive_expect_tx(&full[stage], stage_bytes);
          T* dst = sC + std::size_t(stage) * stage_elems;
#pragma unroll
          for (int c = 0; c < n_dc; ++c)
            arch::SM90_TMA_LOAD_2D(dst + c * kBN * kChunk, &tmap_c, &full[stage], c * kChunk,
                                   static_cast<int>(t.c_row) + j * kBN);
        }
      }
    }
  } else {
    // ---- CONSUMERS ----------------------------------------------------------------------
    arch::setmaxnreg_inc<Tr::kConsumerRegs>();
    const int cw = wg - 1;                     // consumer index
    const int ctid = threadIdx.x - 128;        // 0 .. 128*kConsumers-1
    const int wq = (threadIdx.x / 32) & 3;     // warp within the warpgroup: rows wq*16 .. +15
    const int lane = threadIdx.x & 31, g = lane >> 2, tq = lane & 3;
    const float alpha = p.alpha;
    if (kPingPong && cw == 1) arch::named_barrier_arrive(2, 256);  // consumer 0 issues first
    int it = 0;
    RowTile t;
    for (int i = 0; block_tile<kBM>(p, i, t); ++i) {
      if (t.row0 >= t.n) continue;
      const int n_j = t.kp / kBN;
      // The previous problem's wgmmas have all been waited for; both consumers must be
      // past them before the rows tile is overwritten.
      arch::named_barrier_sync(1, 128 * Tr::kConsumers);
      load_rows_tile<Tr, kDc>(p, t, sX, ctid);
      arch::fence_proxy_async_smem();  // generic-proxy stores -> wgmma (async proxy) reads
      arch::named_barrier_sync(1, 128 * Tr::kConsumers);

      float best[2 * kMB], second[2 * kMB], bstart[2 * kMB];
      int lidx[2 * kMB], jbest[2 * kMB];
#pragma unroll
      for (int r = 0; r < 2 * kMB; ++r) {
        best[r] = second[r] = bstart[r] = INFINITY;
        lidx[r] = 0;
        jbest[r] = 0;
      }
      const float* ctb = p.cterm + t.c_row + 2 * tq;
      const std::uint64_t desc_a = arch::gmma_desc_sw128(sX + std::size_t(cw) * kMB * 64 * kChunk);
      float acc[kMB][64];  // (MB, 64): rows mb*64 + wq*16 + g (+8), cols 8n + 2tq (+1)

      // Issue the wgmmas of row block mb against centroid stage `stage` (one commit group).
      auto issue = [&](int mb, int stage) {
        const std::uint64_t desc_b = arch::gmma_desc_sw128(sC + std::size_t(stage) * stage_elems);
#pragma unroll
        for (int r = 0; r < 64; ++r) arch::fence_operand(acc[mb][r]);
        arch::wgmma_fence();
#pragma unroll
        for (int c = 0; c < n_dc; ++c)
#pragma unroll
          for (int ks = 0; ks < kChunk / 16; ++ks) {
            // +32 B per k-step, +128 B per row: the descriptor's start field is in 16 B.
            const std::uint64_t da = desc_a + ((c * kBM * 128 + mb * 64 * 128 + ks * 32) >> 4);
            const std::uint64_t db = desc_b + ((c * kBN * 128 + ks * 32) >> 4);
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

      // ---- MAIN LOOP over centroid tiles ----------------------------------------------
      for (int j = 0; j < n_j; ++j, ++it) {
        const int stage = it % kStages;
        float2 ct[16];  // cterm of this thread's columns; the loads overlap the wait and the MMA
        load_cterm(j, ct);
        arch::mbar_wait(&full[stage], (it / kStages) & 1);
        if constexpr (kPingPong) arch::named_barrier_sync(2 + cw, 256);  // my turn to issue
#pragma unroll
        for (int mb = 0; mb < kMB; ++mb) issue(mb, stage);
        if constexpr (kPingPong) arch::named_barrier_arrive(2 + (cw ^ 1), 256);  // the other's turn
        arch::wgmma_wait<0>();
        if (lane == 0) arch::mbar_arrive(&empty[stage]);
#pragma unroll
        for (int mb = 0; mb < kMB; ++mb) fold(mb, j, ct);
      }

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
// dp <= 128: rows tile 256 x dp, 4 centroid stages; dp <= 256: rows tile 128 x dp, 2
// stages. (v3 of 2026-11-29 loaded the next rows tile with the producer's spare warps into
// a second buffer beside 3 stages: measured slower, 512 vs 576 TFLOP/s at K8192 and 227
// vs 330 at K1024.)
using Sm90H128 = Sm90Traits<__half, 2, 4>;
using Sm90H256 = Sm90Traits<__half, 1, 2>;
using Sm90B128 = Sm90Traits<__nv_bfloat16, 2, 4>;
using Sm90B256 = Sm90Traits<__nv_bfloat16, 1, 2>;

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

/// Tensor map of the centroid operands [B*kp x dp] (b16), boxes [128 rows x 64 cols] in the
/// 128-byte swizzle: one box = one D chunk of one centroid tile.
CUtensorMap centroid_tensor_map(const AssignParams& p, Operand op) {
  const std::uint64_t rows = p.problems ? std::uint64_t(p.c_rows_total) : std::uint64_t(p.batch) * std::uint64_t(p.kp);
  FLASHKM_ASSERT(rows < (std::uint64_t(1) << 31), "wgmma FlashAssign: B*kp centroid rows exceed the TMA coordinate range");
  CUtensorMap m;
  const cuuint64_t dims[2] = {cuuint64_t(p.dp), cuuint64_t(rows)};
  const cuuint64_t strides[1] = {cuuint64_t(p.dp) * 2};
  const cuuint32_t box[2] = {64, 128};
  const cuuint32_t elem_strides[2] = {1, 1};
  const CUresult r = tensor_map_encoder()(
      &m, op == Operand::fp16 ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2,
      const_cast<void*>(p.c), dims, strides, box, elem_strides, CU_TENSOR_MAP_INTERLEAVE_NONE,
      CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  FLASHKM_CHECK(r == CUDA_SUCCESS, internal, "cuTensorMapEncodeTiled failed (CUresult ", int(r), ")");
  return m;
}

template <class Tr, int kDc, bool kSecond>
void run_sm90(const AssignParams& p, const CUtensorMap& map, cudaStream_t s) {
  auto kernel = flash_assign_sm90_kernel<Tr, kDc, kSecond>;
  const std::size_t smem = Tr::smem_bytes(p.dp);
  FLASHKM_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  FLASHKM_ASSERT(p.tiles == nullptr || p.tile_rows == Tr::kBM,
                 "ragged launch: the tile table was cut for another tile height than the wgmma kernel's");
  FLASHKM_ASSERT(p.tiles == nullptr || p.problems != nullptr, "ragged launch: a tile table needs its problem table");
  const std::int64_t tiles = (p.n + Tr::kBM - 1) / Tr::kBM;
  int dev = 0, sms = 0;
  FLASHKM_CUDA_CHECK(cudaGetDevice(&dev));
  FLASHKM_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  // Persistent: one block per SM walks the (problem, tile) list (block_tile). Measured at
  // N1M D128 fp16: K8192 576 TFLOP/s vs 542 with one block per tile, K1024 330 vs 293.
  const std::int64_t total = p.tiles ? p.n_tiles : tiles * p.batch;
  const dim3 grid(static_cast<unsigned>(total < sms ? total : sms), 1, 1);
  kernel<<<grid, Tr::kThreads, smem, s>>>(p, map);
  FLASHKM_CUDA_LAUNCH_CHECK();
}

template <class Tr, int kDc>
void dispatch_certify(const AssignParams& p, const CUtensorMap& map, cudaStream_t s) {
  if (p.certify) return run_sm90<Tr, kDc, true>(p, map, s);  // tracks the second best
  return run_sm90<Tr, kDc, false>(p, map, s);
}

template <class Tr128, class Tr256>
void dispatch_sm90(const AssignParams& p, const CUtensorMap& map, cudaStream_t s) {
  switch (p.dp / kChunkD) {
    case 1: return dispatch_certify<Tr128, 1>(p, map, s);
    case 2: return dispatch_certify<Tr128, 2>(p, map, s);
    case 3: return dispatch_certify<Tr256, 3>(p, map, s);
    default: return dispatch_certify<Tr256, 4>(p, map, s);
  }
}

}  // namespace

bool sm90_wgmma_supported(int cc) {
  if (cc != 90) return false;
  // The build must hold sm_90a machine code for the kernel (not only the sm_80 target's).
  cudaFuncAttributes attr{};
  if (cudaFuncGetAttributes(&attr, flash_assign_sm90_kernel<Sm90H128, 2, false>) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  return attr.binaryVersion == 90;
}

void launch_flash_assign_sm90(const AssignParams& p, Operand op, cudaStream_t s) {
  if (p.tiles ? p.n_tiles == 0 : (p.n == 0 || p.batch == 0)) return;
  FLASHKM_CHECK(p.dp <= 256 && p.dp % kChunkD == 0 && p.kp % 128 == 0, invalid_argument,
                "tile config wgmma_sm90 needs d <= 256 (got padded d ", p.dp, ", padded k ", p.kp, ")");
  FLASHKM_CHECK(p.x_dtype == DType::f32 || p.x_dtype == DType::f16 || p.x_dtype == DType::bf16 ||
                    p.x_dtype == DType::f64,
                invalid_argument, "wgmma FlashAssign: unsupported input dtype ", to_string(p.x_dtype));
  FLASHKM_ASSERT(p.row_map == nullptr, "wgmma FlashAssign does not take a row map (the cascade's level 2 is SIMT)");
  const CUtensorMap map = centroid_tensor_map(p, op);
  if (op == Operand::fp16) return dispatch_sm90<Sm90H128, Sm90H256>(p, map, s);
  if (op == Operand::bf16) return dispatch_sm90<Sm90B128, Sm90B256>(p, map, s);
  FLASHKM_FAIL(internal, "launch_flash_assign_sm90: operand must be fp16 or bf16");
}

}  // namespace flashkm::cuda
