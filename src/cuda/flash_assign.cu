// FlashAssign kernels: tensor-core (mma.sync m16n8k16 with fp16/bf16 operands, m16n8k8 with
// tf32 operands; fp32 accumulation), an exact-fp32 SIMT variant, and the fp64 re-check of
// flagged rows.
//
// Tensor-core kernel, per thread block (see FlashAssignTraits):
//   PROLOGUE   load the rows tile (resident configs: [BM x dp] once; streamed: per chunk)
//              and the first centroid chunks through a STAGES-deep cp.async pipeline
//   MAIN LOOP  over t = (centroid tile j, D chunk dc): wait for stage t, prefetch t+S-1,
//              fragment loads (b16: ldmatrix; tf32: 8-byte LDS) + mma into the [BM x BN]
//              fp32 accumulators
//   EPILOGUE j when dc is the last chunk: s = alpha*acc + cterm_j, fold into per-row
//              (best, index, second) registers, zero the accumulators
//   FINISH     merge the top-2 over the 4 lanes of a quad (shuffles) and over the warps
//              along N (smem), certify, write label + distance or flag the row
// Ties go to the lowest centroid index: each thread visits its columns in ascending
// order with a strict '<', and merges compare (value, index) lexicographically.
// Candidate mode (kCand, AssignParams::cand_pairs; certify_candidates.hpp): the same
// kernel over level 1's flagged rows, gathered through row_map while the rows tile loads;
// same operands, mma sequence and epilogue arithmetic, so every score is bitwise level 1's.
// Its EPILOGUE lists each (row, centroid) whose score is <= the row's threshold instead of
// folding a top-2; FINISH merges per row whether its pairs were listed whole.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cfloat>
#include <cstdint>
#include <type_traits>

#include "cuda/cuda_check.hpp"
#include "cuda/flash_assign.hpp"
#include "cuda/flash_assign_common.cuh"
#include "cuda/fp64_score.cuh"
#include "cuda/mma_sm80.cuh"
#include "cuda/problem_tiles.cuh"
#include "cuda/tf32_round.hpp"

namespace flashkm::cuda {
namespace {

using namespace detail;

// ------------------------------------------------------------------------------------
// Kernel traits (tile sizes as template arguments, everything else derived)
// ------------------------------------------------------------------------------------
// T: the operand as stored in shared memory: __half, __nv_bfloat16, or float holding tf32
// values (round_to_tf32). Every smem row of a stage is 128 bytes (8 chunks of 16 B) for
// either size, so the stages, the swizzle groups and the smem budget are the same.
template <class T_, int BM_, int BN_, int WARPS_M_, int WARPS_N_, int STAGES_, bool RESIDENT_>
struct FlashAssignTraits {
  using T = T_;
  static constexpr bool kTf32 = std::is_same_v<T, float>;
  static constexpr int kBM = BM_;            // rows per block
  static constexpr int kBN = BN_;            // centroids per tile
  static constexpr int kChunkElems = 16 / int(sizeof(T));  // elements per 16-byte chunk (8 b16, 4 tf32)
  static constexpr int kBK = 8 * kChunkElems;              // D chunk per pipeline stage (128 B rows: 64 b16, 32 tf32)
  static constexpr int kStages = STAGES_;
  static constexpr bool kResident = RESIDENT_;
  static constexpr int kWarpsM = WARPS_M_, kWarpsN = WARPS_N_;
  static constexpr int kThreads = kWarpsM * kWarpsN * 32;
  static constexpr int kWM = kBM / kWarpsM;  // warp tile rows
  static constexpr int kWN = kBN / kWarpsN;  // warp tile centroids
  static constexpr int kMT = kWM / 16;       // m16 tiles per warp
  static constexpr int kNT = kWN / 8;        // n8 tiles per warp
  // 64x64 warp tiles: 128 B of ldmatrix traffic per mma, under the ~128 B/clk/SM of shared
  // memory at the tensor-core rate (64x32 tiles would need ~133 B/clk).
  static_assert(kWM % 16 == 0 && kWN % 16 == 0, "warp tile must be a multiple of 16x16");
  static_assert(kBK * sizeof(T) == 128, "the swizzle assumes 8 chunks of 16 B per smem row");
  static_assert(kChunkD % kBK == 0, "the padded width dp (a multiple of kChunkD) must be whole stages");
  static_assert(kStages >= 2, "need at least double buffering");
  static constexpr int kCStageElems = kBN * kBK;
  static constexpr int kXStageElems = kBM * kBK;

  /// Bytes of the centroid stages (also the top-2 merge area at the end).
  static constexpr std::size_t kCRegionBytes =
      std::size_t(kStages) * kCStageElems * sizeof(T) > std::size_t(kWarpsN) * kBM * sizeof(Top2)
          ? std::size_t(kStages) * kCStageElems * sizeof(T)
          : std::size_t(kWarpsN) * kBM * sizeof(Top2);
  /// Dynamic shared memory for padded width dp (resident: the whole rows tile).
  static constexpr std::size_t smem_bytes(int dp) {
    const std::size_t x = kResident ? std::size_t(kBM) * dp * sizeof(T) : std::size_t(kStages) * kXStageElems * sizeof(T);
    return kCRegionBytes + x;
  }
  /// The candidate mode's: the same, then the tile's gathered rows (kBM int64, its row_map
  /// entries read once per tile, not once per stage).
  static constexpr std::size_t smem_bytes_cand(int dp) { return smem_bytes(dp) + std::size_t(kBM) * sizeof(std::int64_t); }
};

/// 16-byte chunk `ch` of row `r` in a swizzled tile, permuted within its group of 8 chunks
/// (128 B, one pass over the 32 banks) so that each fragment load hits every bank once.
/// b16: ldmatrix reads one chunk of 8 consecutive rows -> XOR with r. tf32: a half-warp reads
/// an 8-byte pair from 4 consecutive rows (rows g..g+3, pairs at one chunk pair) -> XOR the
/// chunk pair with r mod 4.
template <bool kTf32>
__device__ __forceinline__ int swz(int r, int ch) {
  if constexpr (kTf32) return ch ^ ((r & 3) << 1);
  else return (ch & ~7) | ((ch ^ r) & 7);
}

/// An fp32 value as the operand the kernel stores (tf32: rounded to nearest, not truncated).
template <class T> __device__ __forceinline__ T to_operand(float v) {
  if constexpr (std::is_same_v<T, float>) return round_to_tf32(v);
  else return from_f32<T>(v);
}
__device__ __forceinline__ std::uint32_t tf32_bits(float v) { return __float_as_uint(round_to_tf32(v)); }

/// kCand: the cascade's candidate level (see the top of the file); a separate instantiation,
/// so level 1's code is untouched by it.
template <class Tr, class XIn, bool kXAsync, bool kCand = false>
__global__ void __launch_bounds__(Tr::kThreads, 1) flash_assign_kernel(const AssignParams p) {
  using T = typename Tr::T;
  constexpr int kBM = Tr::kBM, kBN = Tr::kBN, kBK = Tr::kBK, kStages = Tr::kStages;
  constexpr int kMT = Tr::kMT, kNT = Tr::kNT, kCE = Tr::kChunkElems;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  T* sC = reinterpret_cast<T*>(smem_raw);  // (kStages, BN, BK) swizzled
  T* sX = reinterpret_cast<T*>(smem_raw + Tr::kCRegionBytes);  // resident: (BM, dp); streamed: (kStages, BM, BK)
  Top2* sMerge = reinterpret_cast<Top2*>(smem_raw);  // (WarpsN, BM), reuses the C stages at the end
  // Candidate mode: (BM) data rows of the tile (row_map), after the rows region; and per
  // (WarpsN, BM) whether the row listed pairs (bit 0) / lost one (bit 1), reusing sMerge.
  std::int64_t* sRow = reinterpret_cast<std::int64_t*>(smem_raw + Tr::smem_bytes(p.dp));
  unsigned* sListed = reinterpret_cast<unsigned*>(smem_raw);

  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const int warp = tid >> 5;
  const int wm = warp / Tr::kWarpsN;  // warp row
  const int wn = warp % Tr::kWarpsN;  // warp column
  const int g = lane >> 2, tq = lane & 3;
  const int n_dc = p.dp / kBK;
  const std::int64_t n_items = tile_count(p, kBM);

  for (std::int64_t item = first_tile(); item < n_items; item += tile_stride()) {
    const TileWork w = problem_tile(p, item, kBM);  // one problem's row tile
    const std::int64_t row0 = w.row0;
    const int n_t = (w.kp / kBN) * n_dc;
    const XIn* xb = static_cast<const XIn*>(p.x) + w.x_off;
    const T* cb = static_cast<const T*>(p.c) + w.c_row * p.dp;
    const float* ctb = p.cterm + w.c_row;
    if constexpr (kCand) {
      // The tile's rows are flagged-list positions: their data rows, once (the previous
      // tile's readers are behind the barrier that ends it).
      if (tid < kBM) sRow[tid] = row0 + tid < w.n ? p.row_map[w.row_begin + row0 + tid] - w.row_begin : 0;
      __syncthreads();
    }
    // The row of x (within the problem) that tile row r reads.
    auto x_row = [&](int r) -> std::int64_t {
      if constexpr (kCand) return sRow[r];
      else return row0 + r;
    };

    // ---- loaders -------------------------------------------------------------------
    auto load_c = [&](int t, int stage) {
      const int j = t / n_dc, dc = t % n_dc;
      T* dst = sC + stage * Tr::kCStageElems;
      const T* src = cb + std::int64_t(j) * kBN * p.dp + dc * kBK;
      for (int i = tid; i < kBN * 8; i += Tr::kThreads) {
        const int r = i >> 3, ch = i & 7;
        arch::cp_async_cg_16(dst + r * kBK + swz<Tr::kTf32>(r, ch) * kCE, src + std::int64_t(r) * p.dp + ch * kCE, 16);
      }
    };
    // x rows [row0, row0+BM) x chunks [ch0, ch0+n_ch) into dst (row stride rs elements).
    auto load_x = [&](T* dst, int rs, int ch0, int n_ch) {
      if constexpr (kXAsync) {
        for (int i = tid; i < kBM * n_ch; i += Tr::kThreads) {
          const int r = i / n_ch, ch = i % n_ch;
          const std::int64_t row = row0 + r;
          const int col = (ch0 + ch) * kCE;
          const bool ok = row < w.n && col < p.d;
          const XIn* src = ok ? xb + x_row(r) * p.x_stride + col : xb;
          arch::cp_async_cg_16(dst + r * rs + swz<Tr::kTf32>(r, ch) * kCE, src, ok ? 16 : 0);
        }
      } else {
        for (int i = tid; i < kBM * n_ch; i += Tr::kThreads) {
          const int r = i / n_ch, ch = i % n_ch;
          const std::int64_t row = row0 + r;
          const int col = (ch0 + ch) * kCE;
          alignas(16) T v[kCE];
#pragma unroll
          for (int e = 0; e < kCE; ++e) {
            float f = 0.0f;
            if (row < w.n && col + e < p.d) f = to_f32<XIn>(xb[x_row(r) * p.x_stride + col + e]);
            v[e] = to_operand<T>(f);
          }
          *reinterpret_cast<uint4*>(dst + r * rs + swz<Tr::kTf32>(r, ch) * kCE) = *reinterpret_cast<const uint4*>(v);
        }
      }
    };
    auto load_stage = [&](int t) {
      const int stage = t % kStages;
      load_c(t, stage);
      if constexpr (!Tr::kResident) load_x(sX + stage * Tr::kXStageElems, kBK, (t % n_dc) * 8, 8);
    };

    // ---- PROLOGUE ------------------------------------------------------------------
    if constexpr (Tr::kResident) load_x(sX, p.dp, 0, p.dp / kCE);
#pragma unroll
    for (int s = 0; s < kStages - 1; ++s) {
      if (s < n_t) load_stage(s);
      arch::cp_async_commit();
    }

    float acc[kMT][kNT][4];  // (MT, NT, 4) fp32 accumulators of the warp tile
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[mt][nt][e] = 0.0f;
    Top2 top[kMT][2];  // rows (mt*16 + g) and (mt*16 + g + 8) of the warp tile
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt) {
      top2_init(top[mt][0]);
      top2_init(top[mt][1]);
    }
    // Candidate mode: the same rows' thresholds (-inf past n: no pairs), and per row (bit
    // 2 mt + h) whether this thread listed a pair of it / lost one to the capacity.
    float thr[kMT][2];
    unsigned listed_bits = 0, lost_bits = 0;
    if constexpr (kCand) {
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const std::int64_t row = row0 + wm * Tr::kWM + mt * 16 + g + 8 * h;
          thr[mt][h] = row < w.n ? cand_row_threshold(p, w.row_begin + row) : -INFINITY;
        }
    }

    // ---- PIPELINED MAIN LOOP -------------------------------------------------------
    for (int t = 0; t < n_t; ++t) {
      arch::cp_async_wait<kStages - 2>();
      __syncthreads();
      if (t + kStages - 1 < n_t) load_stage(t + kStages - 1);
      arch::cp_async_commit();

      const int stage = t % kStages;
      const int dc = t % n_dc;
      const T* cs = sC + stage * Tr::kCStageElems;
      const T* xs = Tr::kResident ? sX : sX + stage * Tr::kXStageElems;
      const int xrs = Tr::kResident ? p.dp : kBK;
      const int xch0 = Tr::kResident ? dc * 8 : 0;
      if constexpr (Tr::kTf32) {
        // k8 steps. Thread (g, tq) loads the 8-byte pair at k = 2tq, 2tq+1 of the step from
        // each of its rows and centroids, and hands it to the mma as its k = tq and tq + 4:
        // A and B permute k alike, so each mma still sums the step's 8 products. Rows streamed
        // by cp.async are fp32 as given: rounded here (resident tiles and the centroid
        // operands are stored rounded).
#pragma unroll
        for (int ks = 0; ks < kBK / 8; ++ks) {
          const int ch = ks * 2 + (tq >> 1);  // the pair's 16-byte chunk within the stage row
          const int off = (tq & 1) * 2;       // and its first float within the chunk
          std::uint32_t a[kMT][4];
#pragma unroll
          for (int mt = 0; mt < kMT; ++mt) {
            const int r = wm * Tr::kWM + mt * 16 + g;  // rows r and r + 8 (same r mod 4)
            const float2 lo = *reinterpret_cast<const float2*>(xs + r * xrs + (xch0 + swz<true>(r, ch)) * 4 + off);
            const float2 hi =
                *reinterpret_cast<const float2*>(xs + (r + 8) * xrs + (xch0 + swz<true>(r + 8, ch)) * 4 + off);
            if constexpr (kXAsync) {
              a[mt][0] = tf32_bits(lo.x);
              a[mt][1] = tf32_bits(hi.x);
              a[mt][2] = tf32_bits(lo.y);
              a[mt][3] = tf32_bits(hi.y);
            } else {
              a[mt][0] = __float_as_uint(lo.x);
              a[mt][1] = __float_as_uint(hi.x);
              a[mt][2] = __float_as_uint(lo.y);
              a[mt][3] = __float_as_uint(hi.y);
            }
          }
          std::uint32_t bfr[kNT][2];
#pragma unroll
          for (int nt = 0; nt < kNT; ++nt) {
            const int r = wn * Tr::kWN + nt * 8 + g;
            const float2 v = *reinterpret_cast<const float2*>(cs + r * kBK + swz<true>(r, ch) * 4 + off);
            bfr[nt][0] = __float_as_uint(v.x);
            bfr[nt][1] = __float_as_uint(v.y);
          }
#pragma unroll
          for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
            for (int nt = 0; nt < kNT; ++nt)
              arch::SM80_16x8x8_F32TF32TF32F32_TN(acc[mt][nt], a[mt], bfr[nt][0], bfr[nt][1]);
        }
      } else {
#pragma unroll
        for (int ks = 0; ks < kBK / 16; ++ks) {
          std::uint32_t a[kMT][4];
#pragma unroll
          for (int mt = 0; mt < kMT; ++mt) {
            const int r = wm * Tr::kWM + mt * 16 + (lane & 15);
            const int ch = ks * 2 + (lane >> 4);
            arch::SM75_U32x4_LDSM_N(a[mt], xs + r * xrs + (xch0 + ((ch ^ r) & 7)) * 8);
          }
          std::uint32_t bfr[kNT][2];
#pragma unroll
          for (int np = 0; np < kNT / 2; ++np) {
            const int r = wn * Tr::kWN + np * 16 + (lane & 7) + ((lane >> 4) << 3);
            const int ch = ks * 2 + ((lane >> 3) & 1);
            std::uint32_t q[4];
            arch::SM75_U32x4_LDSM_N(q, cs + r * kBK + ((ch ^ r) & 7) * 8);
            bfr[2 * np][0] = q[0];
            bfr[2 * np][1] = q[1];
            bfr[2 * np + 1][0] = q[2];
            bfr[2 * np + 1][1] = q[3];
          }
#pragma unroll
          for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
            for (int nt = 0; nt < kNT; ++nt) arch::Mma16816<T>::run(acc[mt][nt], a[mt], bfr[nt][0], bfr[nt][1]);
        }
      }

      // ---- EPILOGUE of centroid tile j (candidate mode: list its pairs; else the top-2)
      if constexpr (kCand) {
        if (dc == n_dc - 1) {
          const int colw = (t / n_dc) * kBN + wn * Tr::kWN;
          // Bit 4 nt + e of hit[mt]: accumulator acc[mt][nt][e] (row half e / 2, column e % 2),
          // its score formed exactly as below.
          static_assert(4 * kNT <= 32, "one 32-bit hit mask per m16 tile");
          unsigned hit[kMT];
          int cnt = 0;
#pragma unroll
          for (int mt = 0; mt < kMT; ++mt) hit[mt] = 0;
#pragma unroll
          for (int nt = 0; nt < kNT; ++nt) {
            const float2 ct = __ldg(reinterpret_cast<const float2*>(ctb + colw + nt * 8 + 2 * tq));
#pragma unroll
            for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
              for (int e = 0; e < 4; ++e) {
                const float s = fmaf(p.alpha, acc[mt][nt][e], (e & 1) ? ct.y : ct.x);
                hit[mt] |= static_cast<unsigned>(s <= thr[mt][e >> 1]) << (4 * nt + e);
                acc[mt][nt][e] = 0.0f;
              }
            }
          }
#pragma unroll
          for (int mt = 0; mt < kMT; ++mt) cnt += __popc(hit[mt]);
          if (__any_sync(0xffffffffu, cnt != 0)) {
            unsigned long long slot = cand_reserve(p, cnt);
#pragma unroll
            for (int mt = 0; mt < kMT; ++mt) {
              const std::int64_t f = w.row_begin + row0 + wm * Tr::kWM + mt * 16 + g;
              while (hit[mt]) {
                const int bit = __ffs(static_cast<int>(hit[mt])) - 1;
                hit[mt] &= hit[mt] - 1;
                const int h = (bit >> 1) & 1;
                if (cand_put(p, slot++, f + 8 * h, colw + 8 * (bit >> 2) + 2 * tq + (bit & 1)))
                  listed_bits |= 1u << (2 * mt + h);
                else
                  lost_bits |= 1u << (2 * mt + h);
              }
            }
          }
        }
      } else if (dc == n_dc - 1) {
        const int j = t / n_dc;
        const int colw = j * kBN + wn * Tr::kWN;
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt) {
          const int col = colw + nt * 8 + 2 * tq;
          const float2 ct = __ldg(reinterpret_cast<const float2*>(ctb + col));
#pragma unroll
          for (int mt = 0; mt < kMT; ++mt) {
            top2_push(top[mt][0], fmaf(p.alpha, acc[mt][nt][0], ct.x), col);
            top2_push(top[mt][0], fmaf(p.alpha, acc[mt][nt][1], ct.y), col + 1);
            top2_push(top[mt][1], fmaf(p.alpha, acc[mt][nt][2], ct.x), col);
            top2_push(top[mt][1], fmaf(p.alpha, acc[mt][nt][3], ct.y), col + 1);
            acc[mt][nt][0] = acc[mt][nt][1] = acc[mt][nt][2] = acc[mt][nt][3] = 0.0f;
          }
        }
      }
    }

    // ---- FINISH: merge over the quad, then over the warps along N --------------------
    arch::cp_async_wait<0>();
    __syncthreads();  // all warps done with the stages: sMerge may reuse them
    if constexpr (kCand) {
      // Candidate mode: per row, listed whole or marked for the full re-check.
#pragma unroll
      for (int r = 0; r < 2 * kMT; ++r) {
        unsigned v = ((listed_bits >> r) & 1u) | (((lost_bits >> r) & 1u) << 1);
        v |= __shfl_xor_sync(0xffffffffu, v, 1);
        v |= __shfl_xor_sync(0xffffffffu, v, 2);
        if (tq == 0) sListed[wn * kBM + wm * Tr::kWM + (r >> 1) * 16 + g + 8 * (r & 1)] = v;
      }
      __syncthreads();
      if (tid < kBM && row0 + tid < w.n) {
        unsigned v = 0;
#pragma unroll
        for (int q = 0; q < Tr::kWarpsN; ++q) v |= sListed[q * kBM + tid];
        cand_finish_row(p, w.row_begin + row0 + tid, (v & 1u) != 0, (v & 2u) != 0);
      }
    } else {
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          Top2 v = top[mt][h];
          v = top2_shfl_xor(v, 1);
          v = top2_shfl_xor(v, 2);
          if (tq == 0) sMerge[wn * kBM + wm * Tr::kWM + mt * 16 + g + 8 * h] = v;
        }
      __syncthreads();
      int changed = 0;
      if (tid < kBM && row0 + tid < w.n) {
        Top2 v = sMerge[tid];
#pragma unroll
        for (int q = 1; q < Tr::kWarpsN; ++q) v = top2_merge(v, sMerge[q * kBM + tid]);
        changed = finish_row(p, w, w.row_begin + row0 + tid, v);
      }
      if (tid < kBM) {
        const unsigned ballot = __ballot_sync(0xffffffffu, changed);
        if (lane == 0 && ballot) {
          atomicAdd(&p.counters[1], (unsigned long long)__popc(ballot));
          if (p.problem_stats) atomicAdd(&p.problem_stats[2 * std::int64_t(w.b) + 1], (unsigned long long)__popc(ballot));
        }
      }
    }
    __syncthreads();  // before the next problem reuses shared memory
  }
}

// ------------------------------------------------------------------------------------
// Exact-fp32 SIMT assign: 64 rows x 64 centroids per tile, 256 threads, 4x4 per thread
// ------------------------------------------------------------------------------------
template <class XIn>
__global__ void __launch_bounds__(256) simt_assign_kernel(const AssignParams p) {
  constexpr int BM = 64, BN = kSimtBN, BK = kSimtBK;
  // Rows of BM + 4 floats keep every 4-float group 16-byte aligned: the inner loop reads
  // both operands as float4 (2 shared loads per 16 fma instead of 8).
  __shared__ __align__(16) float sX[BK][BM + 4];  // (BK, BM) transposed rows chunk
  __shared__ __align__(16) float sC[BK][BN + 4];  // (BK, BN) transposed centroid chunk
  __shared__ std::int64_t sRow[BM];  // the row (within problem b) of each tile row (-1: none)
  const int tid = threadIdx.x;
  const int ty = tid >> 4, tx = tid & 15;
  static_assert(BM == kSimtBM, "the tile tables of ragged launches are cut for kSimtBM rows");
  const std::int64_t n_items = tile_count(p, BM);
  for (std::int64_t item = first_tile(); item < n_items; item += tile_stride()) {
    const TileWork w = problem_tile(p, item, BM);  // one problem's row tile
    const int b = w.b;
    const std::int64_t row0 = w.row0;
    // Cascade: the grid is sized for the capacity; a block past problem b's device-side
    // count skips it (block-uniform, so the barriers below stay uniform).
    const std::int64_t n_listed = p.n_dev ? static_cast<std::int64_t>(p.n_dev[b]) : w.n;
    const std::int64_t n = n_listed < w.n ? n_listed : w.n;
    if (row0 >= n) continue;
    // sRow's last readers (the previous problem's tile loads) are behind a barrier already.
    if (tid < BM) {
      const std::int64_t row = row0 + tid;
      const std::int64_t base = w.row_begin;
      sRow[tid] = row < n ? (p.row_map ? p.row_map[base + row] - base : row) : -1;
    }
    __syncthreads();
    const XIn* xb = static_cast<const XIn*>(p.x) + w.x_off;
    const float* cb = static_cast<const float*>(p.c) + w.c_row * p.dp;
    const float* ctb = p.cterm + w.c_row;
    Top2 top[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) top2_init(top[i]);
    for (int j = 0; j < w.kp / BN; ++j) {
      float acc[4][4] = {};
      for (int k0 = 0; k0 < p.dp; k0 += BK) {
#pragma unroll
        for (int q = 0; q < (BM * BK) / 256; ++q) {
          const int e = tid + 256 * q;
          const int r = e / BK, kk = e % BK;
          const std::int64_t row = sRow[r];
          const int col = k0 + kk;
          sX[kk][r] = (row >= 0 && col < p.d) ? to_f32<XIn>(xb[row * p.x_stride + col]) : 0.0f;
          sC[kk][r] = cb[(std::int64_t(j) * BN + r) * p.dp + col];
        }
        __syncthreads();
        // Blocked summation: each BK-term chunk is its own fma chain, then added to acc. The
        // rounding bound is gamma_{BK + dp/BK} instead of gamma_dp (5.3x tighter at d=128,
        // 12x at d=768), which is what the certification cascade's fp32 level charges.
        float part[4][4] = {};
#pragma unroll
        for (int kk = 0; kk < BK; ++kk) {
          // Thread (ty, tx) owns rows ty*4..+3 and centroids tx*4..+3 of the tile.
          const float4 a4 = *reinterpret_cast<const float4*>(&sX[kk][ty * 4]);
          const float4 c4 = *reinterpret_cast<const float4*>(&sC[kk][tx * 4]);
          const float a[4] = {a4.x, a4.y, a4.z, a4.w};
          const float c[4] = {c4.x, c4.y, c4.z, c4.w};
#pragma unroll
          for (int i = 0; i < 4; ++i)
#pragma unroll
            for (int jj = 0; jj < 4; ++jj) part[i][jj] = fmaf(a[i], c[jj], part[i][jj]);
        }
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
          for (int jj = 0; jj < 4; ++jj) acc[i][jj] += part[i][jj];
        __syncthreads();
      }
#pragma unroll
      for (int jj = 0; jj < 4; ++jj) {
        const int col = j * BN + tx * 4 + jj;  // ascending in jj: '<' in top2_push keeps the lowest
        const float ct = ctb[col];
#pragma unroll
        for (int i = 0; i < 4; ++i) top2_push(top[i], fmaf(p.alpha, acc[i][jj], ct), col);
      }
    }
    int changed = 0;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      Top2 v = top[i];
      v = top2_shfl_xor(v, 1);
      v = top2_shfl_xor(v, 2);
      v = top2_shfl_xor(v, 4);
      v = top2_shfl_xor(v, 8);
      const std::int64_t row = row0 + ty * 4 + i;
      if (tx == 0 && row < n) changed += finish_row(p, w, w.row_begin + row, v);
    }
    const int warp_sum = __reduce_add_sync(0xffffffffu, changed);
    if ((tid & 31) == 0 && warp_sum) {
      atomicAdd(&p.counters[1], (unsigned long long)warp_sum);
      if (p.problem_stats) atomicAdd(&p.problem_stats[2 * std::int64_t(b) + 1], (unsigned long long)warp_sum);
    }
  }
}

// ------------------------------------------------------------------------------------
// fp64 re-check of flagged rows: one block per row, warps over centroids, lanes over d
// ------------------------------------------------------------------------------------
template <class XIn>
__global__ void __launch_bounds__(256) recheck_kernel(const AssignParams p, const float* c32) {
  extern __shared__ double sx[];  // (d) the row in fp64
  __shared__ double s_best[8];
  __shared__ int s_idx[8];
  __shared__ double s_norm;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const unsigned long long count = p.counters[0];
  for (unsigned long long f = blockIdx.x; f < count; f += gridDim.x) {
    const std::int64_t grow = p.flagged[f];
    const TileWork pw = problem_work(p, problem_of_row(p, grow));
    const int b = pw.b;
    const std::int64_t row = grow - pw.row_begin;
    const XIn* xr = static_cast<const XIn*>(p.x) + pw.x_off + row * p.x_stride;
    for (int i = tid; i < p.d; i += 256) sx[i] = double(to_f32<XIn>(xr[i]));
    __syncthreads();
    const auto x_at = [&](int i) { return sx[i]; };
    if (warp == 0) {
      const double s = fp64_sumsq_warp(x_at, p.d, lane);  // fp64_score.cuh: shared with the candidate level
      if (lane == 0) s_norm = sqrt(s);
    }
    const float* cb = c32 + pw.c32_row * p.d;
    double best = INFINITY;
    int bi = 0x7fffffff;
    for (int j = warp; j < pw.k; j += 8) {
      const double score = fp64_score_warp(p.metric, x_at, cb + std::int64_t(j) * p.d, p.d, lane);
      if (score < best) {
        best = score;
        bi = j;
      }
    }
    if (lane == 0) {
      s_best[warp] = best;
      s_idx[warp] = bi;
    }
    __syncthreads();
    if (tid == 0) {
      double vb = s_best[0];
      int vi = s_idx[0];
      for (int w = 1; w < 8; ++w)
        if (s_best[w] < vb || (s_best[w] == vb && s_idx[w] < vi)) {
          vb = s_best[w];
          vi = s_idx[w];
        }
      double dist = vb;
      if (p.metric == Metric::cosine) dist = 1.0 + vb / s_norm;
      const int old = p.labels[grow];
      p.labels[grow] = vi;
      p.dist[grow] = static_cast<float>(dist);
      if (old != vi) {
        atomicAdd(&p.counters[1], 1ull);
        if (p.problem_stats) atomicAdd(&p.problem_stats[2 * std::int64_t(b) + 1], 1ull);
      }
    }
    __syncthreads();
  }
}

// ------------------------------------------------------------------------------------
// Launchers
// ------------------------------------------------------------------------------------
using ResidentH = FlashAssignTraits<__half, 128, 128, 2, 2, 3, true>;
using ResidentB = FlashAssignTraits<__nv_bfloat16, 128, 128, 2, 2, 3, true>;
using Stream256H = FlashAssignTraits<__half, 128, 256, 2, 4, 3, false>;
using Stream256B = FlashAssignTraits<__nv_bfloat16, 128, 256, 2, 4, 3, false>;
using Stream128H = FlashAssignTraits<__half, 128, 128, 2, 2, 4, false>;
using Stream128B = FlashAssignTraits<__nv_bfloat16, 128, 128, 2, 2, 4, false>;
// tf32: the same shapes; 128-byte smem rows hold 32 instead of 64 elements, so a stage
// takes the same bytes (the resident rows tile twice as many per D: dp <= 128).
using ResidentT = FlashAssignTraits<float, 128, 128, 2, 2, 3, true>;
using Stream256T = FlashAssignTraits<float, 128, 256, 2, 4, 3, false>;
using Stream128T = FlashAssignTraits<float, 128, 128, 2, 2, 4, false>;

constexpr int kMaxResidentDp = 256;
/// The resident rows tile's bytes per row at most (b16: dp <= 256; tf32: dp <= 128): with
/// three centroid stages, 112 KB of shared memory, two blocks per SM.
constexpr int kMaxResidentRowBytes = kMaxResidentDp * 2;

/// The grid of an assign launch with bm-row tiles (problem_tiles.cuh: how blocks find work).
dim3 grid_for(const AssignParams& p, int bm) {
  if (p.tiles) {
    FLASHKM_ASSERT(p.tile_rows == bm, "ragged launch: the tile table was cut for another tile height");
    FLASHKM_ASSERT(p.problems != nullptr, "ragged launch: a tile table needs its problem table");
    const std::int64_t blocks = p.n_tiles < 0x7fffffff ? p.n_tiles : 0x7fffffff;  // blocks loop past it
    return dim3(static_cast<unsigned>(blocks), 1, 1);
  }
  const std::int64_t tiles = (p.n + bm - 1) / bm;
  FLASHKM_ASSERT(tiles <= 0x7fffffff, "too many row tiles for one launch");
  return dim3(static_cast<unsigned>(tiles), static_cast<unsigned>(p.batch < 65535 ? p.batch : 65535), 1);
}

/// Nothing to assign (no rows, or an empty tile table).
bool empty_launch(const AssignParams& p) { return p.tiles ? p.n_tiles == 0 : (p.n == 0 || p.batch == 0); }

template <class Tr, class XIn, bool kXAsync, bool kCand>
void run_flash_assign_mode(const AssignParams& p, cudaStream_t s) {
  auto kernel = flash_assign_kernel<Tr, XIn, kXAsync, kCand>;
  const std::size_t smem = kCand ? Tr::smem_bytes_cand(p.dp) : Tr::smem_bytes(p.dp);
  FLASHKM_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  static_assert(Tr::kBM == kFlashBM, "the tile tables of ragged launches are cut for kFlashBM rows");
  kernel<<<grid_for(p, Tr::kBM), Tr::kThreads, smem, s>>>(p);
  FLASHKM_CUDA_LAUNCH_CHECK();
}

/// Config Tr reading x as XIn: level 1, or with p.cand_pairs the cascade's candidate level
/// (the same config and data path: the dispatch below decides both from the same p).
template <class Tr, class XIn, bool kXAsync>
void run_flash_assign(const AssignParams& p, cudaStream_t s) {
  if (p.cand_pairs) {
    FLASHKM_ASSERT(p.row_map != nullptr && p.n_dev == nullptr, "candidate level: rows by row_map, count on the host");
    return run_flash_assign_mode<Tr, XIn, kXAsync, true>(p, s);
  }
  run_flash_assign_mode<Tr, XIn, kXAsync, false>(p, s);
}

template <class T, class TrRes, class TrS256, class TrS128>
void dispatch_operand(const AssignParams& p, TileConfig tile, cudaStream_t s) {
  const bool async_ok = x_streamable(p, std::is_same_v<T, __half> ? Operand::fp16 : Operand::bf16);
  if (tile == TileConfig::resident_128x128) {
    FLASHKM_ASSERT(p.dp <= kMaxResidentDp, "resident tile config needs d <= 256");
    switch (p.x_dtype) {
      case DType::f32: return run_flash_assign<TrRes, float, false>(p, s);
      case DType::f16:
        if (std::is_same_v<T, __half> && async_ok) return run_flash_assign<TrRes, T, true>(p, s);
        return run_flash_assign<TrRes, __half, false>(p, s);
      case DType::bf16:
        if (std::is_same_v<T, __nv_bfloat16> && async_ok) return run_flash_assign<TrRes, T, true>(p, s);
        return run_flash_assign<TrRes, __nv_bfloat16, false>(p, s);
      default: break;
    }
    FLASHKM_FAIL(internal, "flash_assign: unsupported input dtype ", to_string(p.x_dtype));
  }
  FLASHKM_ASSERT(async_ok, "streamed tile configs need x as aligned 16-bit operands");
  if (tile == TileConfig::stream_128x256) return run_flash_assign<TrS256, T, true>(p, s);
  return run_flash_assign<TrS128, T, true>(p, s);
}

/// tf32 operands: no operand copy of x in any config. Resident: any dtype converted and
/// rounded while loading. Streamed: aligned fp32 rows by cp.async (rounded in registers),
/// anything else converted and rounded while loading.
/// Config Tr with the rows converted and rounded while loading, for any input dtype.
template <class Tr>
void run_tf32_converting(const AssignParams& p, cudaStream_t s) {
  switch (p.x_dtype) {
    case DType::f32: return run_flash_assign<Tr, float, false>(p, s);
    case DType::f16: return run_flash_assign<Tr, __half, false>(p, s);
    case DType::bf16: return run_flash_assign<Tr, __nv_bfloat16, false>(p, s);
    default: break;
  }
  FLASHKM_FAIL(internal, "flash_assign: unsupported input dtype ", to_string(p.x_dtype));
}

template <class TrS>
void dispatch_tf32_streamed(const AssignParams& p, cudaStream_t s) {
  if (x_streamable(p, Operand::tf32)) return run_flash_assign<TrS, float, true>(p, s);
  return run_tf32_converting<TrS>(p, s);
}

void dispatch_tf32(const AssignParams& p, TileConfig tile, cudaStream_t s) {
  FLASHKM_ASSERT(tile_supports(tile, Operand::tf32, p.dp), "tf32 operands: unsupported tile config for this d");
  if (tile == TileConfig::resident_128x128) return run_tf32_converting<ResidentT>(p, s);
  if (tile == TileConfig::stream_128x256) return dispatch_tf32_streamed<Stream256T>(p, s);
  return dispatch_tf32_streamed<Stream128T>(p, s);
}

}  // namespace

TileConfig choose_tile(std::int64_t, int k, int d, int, int cc) {
  const int dp = (d + kChunkD - 1) / kChunkD * kChunkD;
  // Hopper: the wgmma kernel (flash_assign_sm90.cu) for every shape it takes. Its rows
  // tiles load by TMA into a second buffer under the previous tile's MMA, so it no longer
  // loses to the mma.sync kernel at few centroids (session 3's K256 0.58 ms wgmma vs 0.39
  // resident_128x128 was the rows tile loading between centroid tiles). One config for
  // every k at a given D: attach() chooses with k unknown, and the configs must agree on
  // how they read x (tile_streams_x). Both kernels give the same certified labels (tests/gpu
  // WgmmaTile).
  (void)k;
  if (dp <= kMaxWgmmaDp && sm90_wgmma_supported(cc)) return TileConfig::wgmma_sm90;
  // Resident rows tile when [128 x dp] fp16 fits beside three centroid stages (<= 112 KB,
  // two blocks per SM); otherwise split-D streaming with 256-wide centroid tiles, which
  // halves the re-reads of each rows chunk against 128-wide tiles.
  return dp <= kMaxResidentDp ? TileConfig::resident_128x128 : TileConfig::stream_128x256;
}

TileConfig choose_tile_tf32(int d) {
  const int dp = (d + kChunkD - 1) / kChunkD * kChunkD;
  // Not measured yet: the b16 rule (resident while the rows tile fits 64 KB) in bytes.
  return tile_supports(TileConfig::resident_128x128, Operand::tf32, dp) ? TileConfig::resident_128x128
                                                                         : TileConfig::stream_128x256;
}

bool tile_supports(TileConfig t, Operand op, int dp) {
  if (op == Operand::fp32) return false;  // the SIMT kernel has no tile configs
  switch (t) {
    case TileConfig::wgmma_sm90: return op != Operand::tf32 && dp <= kMaxWgmmaDp;
    case TileConfig::resident_128x128: return dp * operand_bytes(op) <= kMaxResidentRowBytes;
    case TileConfig::stream_128x256:
    case TileConfig::stream_128x128: return true;
    default: return false;
  }
}

int tile_bn(TileConfig t) { return t == TileConfig::stream_128x256 ? 256 : 128; }

bool tile_streams_x(TileConfig t) { return t == TileConfig::stream_128x256 || t == TileConfig::stream_128x128; }

int flash_tile_rows(TileConfig t, int dp) {
  if (t == TileConfig::wgmma_sm90) return dp <= 128 ? 256 : 128;  // flash_assign_sm90.cu: Sm90Traits' kBM
  return kFlashBM;
}

bool x_streamable(const AssignParams& p, Operand op) {
  if (op == Operand::fp32) return false;
  const DType want = op == Operand::fp16 ? DType::f16 : op == Operand::bf16 ? DType::bf16 : DType::f32;
  const int ce = 16 / operand_bytes(op);  // elements per 16-byte copy
  return p.x_dtype == want && (p.d % ce == 0 || (p.x_zero_padded && p.x_stride >= (p.d + ce - 1) / ce * ce)) &&
         p.x_stride % ce == 0 && p.x_batch % ce == 0 &&
         (reinterpret_cast<std::uintptr_t>(p.x) & 15) == 0;
}

void launch_flash_assign(const AssignParams& p, Operand op, TileConfig tile, cudaStream_t s) {
  if (empty_launch(p)) return;
  if (op == Operand::tf32) return dispatch_tf32(p, tile, s);  // mma.sync m16n8k8: never wgmma
  if (tile == TileConfig::wgmma_sm90) return launch_flash_assign_sm90(p, op, s);
  if (op == Operand::fp16) return dispatch_operand<__half, ResidentH, Stream256H, Stream128H>(p, tile, s);
  if (op == Operand::bf16) return dispatch_operand<__nv_bfloat16, ResidentB, Stream256B, Stream128B>(p, tile, s);
  FLASHKM_FAIL(internal, "launch_flash_assign: operand must be fp16, bf16 or tf32");
}

void launch_simt_assign(const AssignParams& p, cudaStream_t s) {
  if (empty_launch(p)) return;
  FLASHKM_ASSERT(p.row_map == nullptr || p.n_dev != nullptr, "simt_assign: row_map needs the device-side counts");
  const dim3 grid = grid_for(p, kSimtBM);
  switch (p.x_dtype) {
    case DType::f32: simt_assign_kernel<float><<<grid, 256, 0, s>>>(p); break;
    case DType::f16: simt_assign_kernel<__half><<<grid, 256, 0, s>>>(p); break;
    case DType::bf16: simt_assign_kernel<__nv_bfloat16><<<grid, 256, 0, s>>>(p); break;
    default: FLASHKM_FAIL(internal, "simt_assign: unsupported input dtype");
  }
  FLASHKM_CUDA_LAUNCH_CHECK();
}

void launch_recheck(const AssignParams& p, const float* c32, cudaStream_t s) {
  if (!p.certify) return;
  const std::size_t smem = std::size_t(p.d) * sizeof(double);
  const unsigned blocks = 264;  // persistent: the flagged count is read on the device
  switch (p.x_dtype) {
    case DType::f32:
      FLASHKM_CUDA_CHECK(cudaFuncSetAttribute(recheck_kernel<float>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
      recheck_kernel<float><<<blocks, 256, smem, s>>>(p, c32);
      break;
    case DType::f16:
      FLASHKM_CUDA_CHECK(cudaFuncSetAttribute(recheck_kernel<__half>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
      recheck_kernel<__half><<<blocks, 256, smem, s>>>(p, c32);
      break;
    case DType::bf16:
      FLASHKM_CUDA_CHECK(cudaFuncSetAttribute(recheck_kernel<__nv_bfloat16>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
      recheck_kernel<__nv_bfloat16><<<blocks, 256, smem, s>>>(p, c32);
      break;
    default: FLASHKM_FAIL(internal, "recheck: unsupported input dtype");
  }
  FLASHKM_CUDA_LAUNCH_CHECK();
}

}  // namespace flashkm::cuda
