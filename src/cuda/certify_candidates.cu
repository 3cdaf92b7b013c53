// The certification cascade's candidate levels 2-3 (certify_candidates.hpp): level 2 is
// level 1's kernel in its candidate mode (flash_assign_sm90_kernel.cuh for the wgmma config,
// flash_assign.cu's flash_assign_kernel for the mma.sync configs), level 3 the kernels
// below: the fp64 score of each listed pair, the per-row argmin (two atomicMin passes, so
// the result does not depend on the order in which the pairs were listed), the write.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>

#include "cuda/certify_candidates.hpp"
#include "cuda/cuda_check.hpp"
#include "cuda/device_helpers.cuh"
#include "cuda/flash_assign_common.cuh"
#include "cuda/fp64_score.cuh"
#include "cuda/problem_tiles.cuh"

namespace flashkm::cuda {
namespace {

using namespace detail;

constexpr int kThreads = 256, kWarps = kThreads / 32;

__device__ __forceinline__ std::int64_t global_warp() { return (std::int64_t(blockIdx.x) * kThreads + threadIdx.x) / 32; }
__device__ __forceinline__ std::int64_t total_warps() { return std::int64_t(gridDim.x) * kWarps; }

/// Pairs listed, capped at the capacity (the rest were dropped and their rows marked).
__device__ __forceinline__ std::int64_t listed(const unsigned long long* found, std::int64_t capacity) {
  const unsigned long long n = *found;
  return n < static_cast<unsigned long long>(capacity) ? static_cast<std::int64_t>(n) : capacity;
}

/// One warp per pair: its fp64 score (the full re-check's arithmetic, fp64_score.cuh), kept
/// per pair, and the row's running minimum (order bits).
template <class XIn>
__global__ void __launch_bounds__(kThreads) candidate_scores_kernel(const AssignParams p, const float* c32,
                                                                   const std::int64_t* list, const CandidatePair* pairs,
                                                                   double* scores, unsigned long long* keys,
                                                                   const unsigned long long* found, std::int64_t capacity) {
  const int lane = threadIdx.x & 31;
  const std::int64_t n = listed(found, capacity);
  for (std::int64_t q = global_warp(); q < n; q += total_warps()) {
    const CandidatePair c = pairs[q];
    const std::int64_t v = list[c.r];
    if (v & kCandidateMark) continue;  // the row goes to the full re-check (warp-uniform)
    const TileWork w = problem_work(p, problem_of_row(p, v));
    if (c.j >= w.k) {  // a padded centroid (+inf score: never listed); never matches a minimum
      if (lane == 0) scores[q] = __longlong_as_double(0x7ff8000000000000ll);
      continue;
    }
    const XIn* xr = static_cast<const XIn*>(p.x) + w.x_off + (v - w.row_begin) * p.x_stride;
    const auto x_at = [&](int i) { return double(to_f32<XIn>(xr[i])); };
    const double s = fp64_score_warp(p.metric, x_at, c32 + (w.c32_row + c.j) * p.d, p.d, lane);
    if (lane == 0) {
      scores[q] = s;
      atomicMin(&keys[c.r], fp64_order_key(s));
    }
  }
}

/// One thread per pair: among the pairs equal to the row's minimum, the lowest centroid
/// (into dist[row] as int bits, INT_MAX since level 2).
__global__ void __launch_bounds__(kThreads) candidate_argmin_kernel(const AssignParams p, const std::int64_t* list,
                                                                    const CandidatePair* pairs, const double* scores,
                                                                    const unsigned long long* keys,
                                                                    const unsigned long long* found, std::int64_t capacity) {
  const std::int64_t n = listed(found, capacity);
  for (std::int64_t q = std::int64_t(blockIdx.x) * kThreads + threadIdx.x; q < n; q += std::int64_t(gridDim.x) * kThreads) {
    const CandidatePair c = pairs[q];
    const std::int64_t v = list[c.r];
    if (v & kCandidateMark) continue;
    if (fp64_order_key(scores[q]) == keys[c.r]) atomicMin(reinterpret_cast<int*>(p.dist) + v, c.j);
  }
}

/// One warp per flagged row of the chunk (the candidate launch's rows: tiles of bm rows of
/// its problems, whose n are the flagged counts): write label and distance as the full
/// re-check does, count the change; a marked row joins the chunk's full re-check list.
template <class XIn>
__global__ void __launch_bounds__(kThreads) candidate_finish_kernel(const AssignParams p, int bm, const std::int64_t* list,
                                                                   const unsigned long long* keys,
                                                                   std::int64_t* fp64_list, unsigned long long* ctr) {
  const int lane = threadIdx.x & 31;
  const std::int64_t rows = tile_count(p, bm) * bm;
  for (std::int64_t v_row = global_warp(); v_row < rows; v_row += total_warps()) {
    const TileWork w = problem_tile(p, v_row / bm, bm);
    const std::int64_t row = w.row0 + v_row % bm;
    if (row >= w.n) continue;
    const std::int64_t f = w.row_begin + row;
    const std::int64_t v = list[f];
    if (v & kCandidateMark) {
      if (lane == 0) {
        fp64_list[atomicAdd(&ctr[kCandFp64Rows], 1ull)] = v & ~kCandidateMark;
        if (p.problem_stats) atomicAdd(&p.problem_stats[2 * std::int64_t(w.b)], 1ull);
      }
      continue;
    }
    const double vb = fp64_from_order_key(keys[f]);
    double dist = vb;
    if (p.metric == Metric::cosine) {
      const XIn* xr = static_cast<const XIn*>(p.x) + w.x_off + (v - w.row_begin) * p.x_stride;
      const auto x_at = [&](int i) { return double(to_f32<XIn>(xr[i])); };
      const double ss = fp64_sumsq_warp(x_at, p.d, lane);
      dist = 1.0 + vb / sqrt(ss);  // lane 0's is the re-check's value
    }
    if (lane == 0) {
      const int j = reinterpret_cast<const int*>(p.dist)[v];
      const int old = p.labels[v];
      p.labels[v] = j;
      p.dist[v] = static_cast<float>(dist);
      if (old != j) {
        atomicAdd(&ctr[kCandChanged], 1ull);
        if (p.problem_stats) atomicAdd(&p.problem_stats[2 * std::int64_t(w.b) + 1], 1ull);
      }
    }
  }
}

/// Blocks for one warp per item (device_helpers' blocks_for), at most max_blocks (the
/// kernels loop with the grid's stride).
unsigned grid_for(std::int64_t warps_wanted, int max_blocks) {
  return std::min(blocks_for(warps_wanted, kWarps), static_cast<unsigned>(max_blocks));
}

/// Level 3 of one chunk. `given`: level 1's rows and problems with x as given (a data row's
/// problem, x and centroids); `rows`: the same, enumerating the chunk's flagged rows as the
/// candidate launch does (n / problems / tiles, tile height bm). list and keys are indexed
/// by the enumerated rows' positions row_begin + row.
template <class XIn>
void level3(const AssignParams& given, const AssignParams& rows, int bm, const float* c32, const CandidateWork& w,
            const std::int64_t* list, unsigned long long* keys, unsigned long long* ctr, int max_blocks, cudaStream_t s) {
  const unsigned long long* found = ctr + kCandPairs;
  const std::int64_t cap = w.sizes.capacity;
  // The pair count is on the device: persistent grids sized for the capacity's share.
  candidate_scores_kernel<XIn><<<grid_for(cap, max_blocks), kThreads, 0, s>>>(given, c32, list, w.pairs, w.scores,
                                                                             keys, found, cap);
  FLASHKM_CUDA_LAUNCH_CHECK();
  candidate_argmin_kernel<<<grid_for(cap / 32, max_blocks), kThreads, 0, s>>>(given, list, w.pairs, w.scores, keys,
                                                                             found, cap);
  FLASHKM_CUDA_LAUNCH_CHECK();
  candidate_finish_kernel<XIn><<<grid_for(w.sizes.chunk_rows, max_blocks), kThreads, 0, s>>>(
      rows, bm, list, keys, reinterpret_cast<std::int64_t*>(w.scores), ctr);
  FLASHKM_CUDA_LAUNCH_CHECK();
}

}  // namespace

CandidateSizes candidate_sizes(std::int64_t flagged) {
  CandidateSizes z;
  // Room for 8 candidates per flagged row (2-3 expected where level 1 is tight, more with
  // bf16 and large d), a power of two (the buffers grow a few times per fit, not at every
  // iteration's count), within the bounds; chunks of rows keep that ratio at the bound.
  // Under a device memory budget (FLASHKM_CUDA_MEMORY_BUDGET) at most a quarter of what it
  // leaves, and never below 4096 pairs (64 KiB).
  const std::size_t left = device_budget_left();
  std::int64_t max_pairs = kMaxCandidatePairs;
  while (max_pairs > 4096 && std::size_t(max_pairs) * 16 > left / 4) max_pairs /= 2;
  std::int64_t want = std::min(kMinCandidatePairs, max_pairs);
  while (want < 8 * flagged && want < max_pairs) want *= 2;
  z.capacity = want;
  z.chunk_rows = std::max<std::int64_t>(1, std::min(flagged, z.capacity / 8));  // <= capacity: the re-check list fits
  z.chunks = flagged > 0 ? (flagged + z.chunk_rows - 1) / z.chunk_rows : 0;
  return z;
}

void launch_candidate_chunk(const AssignParams& level1, Operand op, TileConfig tile, const AssignParams& given,
                            const float* c32, const CandidateRows& rows, const CandidateWork& w,
                            unsigned long long* ctr, cudaStream_t s) {
  int dev = 0, sms = 0;
  FLASHKM_CUDA_CHECK(cudaGetDevice(&dev));
  FLASHKM_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  const int max_blocks = 8 * sms;  // 2048 threads per SM
  std::int64_t* list = w.list + rows.list_off;
  unsigned long long* keys = w.keys + rows.list_off;
  // The rows: one problem of rows.n (no tables), or the chunk's problems and tiles.
  auto enumerate = [&](AssignParams& q) {
    q.n = rows.problems ? q.n : rows.n;
    q.batch = rows.problems ? q.batch : 1;
    q.problems = rows.problems;
    q.tiles = rows.tiles;
    q.n_tiles = rows.n_tiles;
    q.tile_rows = rows.tile_rows;
    q.n_dev = nullptr;
    q.problem_counts = nullptr;
  };
  // Level 2: level 1's kernel and operands over the chunk's flagged rows.
  AssignParams q = level1;
  enumerate(q);
  q.certify = false;
  q.row_map = list;
  q.flagged = list;
  q.problem_stats = nullptr;
  q.counters = nullptr;
  q.cand_pairs = w.pairs;
  q.cand_capacity = w.sizes.capacity;
  q.cand_count = ctr + kCandPairs;
  q.cand_keys = keys;
  launch_flash_assign(q, op, tile, s);
  // Level 3 over the same rows (x as given; a data row's problem from `given`, whose n is the
  // problems' rows, not the flagged counts), then the full re-check of the rows whose
  // candidates did not fit.
  AssignParams g = given;
  enumerate(g);
  g.problem_stats = rows.problem_stats;
  const int bm = rows.tiles ? rows.tile_rows : 256;  // any height without a tile table
  switch (given.x_dtype) {
    case DType::f32: level3<float>(given, g, bm, c32, w, list, keys, ctr, max_blocks, s); break;
    case DType::f16: level3<__half>(given, g, bm, c32, w, list, keys, ctr, max_blocks, s); break;
    case DType::bf16: level3<__nv_bfloat16>(given, g, bm, c32, w, list, keys, ctr, max_blocks, s); break;
    default: FLASHKM_FAIL(internal, "candidate cascade: unsupported input dtype");
  }
  AssignParams r = given;
  r.certify = true;
  r.flagged = reinterpret_cast<std::int64_t*>(w.scores);
  r.counters = ctr + kCandFp64Rows;  // [0] its count, [1] label changes (kCandChanged)
  r.problem_stats = rows.problem_stats;
  launch_recheck(r, c32, s);
}

void launch_candidate_cascade(const AssignParams& level1, Operand op, TileConfig tile, const AssignParams& given,
                              const float* c32, std::int64_t count, const CandidateWork& w, cudaStream_t s) {
  FLASHKM_ASSERT(level1.batch == 1 && level1.problems == nullptr, "candidate cascade: one problem");
  FLASHKM_ASSERT(count <= w.sizes.chunks * w.sizes.chunk_rows, "candidate cascade: workspace sized for fewer rows");
  for (std::int64_t c = 0, f0 = 0; f0 < count; ++c, f0 += w.sizes.chunk_rows) {
    CandidateRows rows;
    rows.n = std::min(w.sizes.chunk_rows, count - f0);
    rows.list_off = f0;
    launch_candidate_chunk(level1, op, tile, given, c32, rows, w, w.ctr + c * kCandSlots, s);
  }
}

}  // namespace flashkm::cuda
