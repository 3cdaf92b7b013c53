// The fp64 score of one row against one fp32 centroid, computed by one warp: the arithmetic
// of the certification's last level. One definition for the full re-check (recheck_kernel,
// every centroid) and the candidate level (certify_candidates.cu, listed centroids only),
// so that both give the same bits for the same (row, centroid) and the candidate cascade
// returns exactly what the full re-check would.
#pragma once

#include <cstdint>

#include "flashkm/types.hpp"

namespace flashkm::cuda::detail {

/// l2: |x - c|^2; cosine / inner product: -x.c; in fp64 from the row's elements x_at(i)
/// (as doubles) and the fp32 centroid c [d]. Lane l sums elements l, l + 32, ... in one fma
/// chain, then a shfl_down tree; the result on every lane. All 32 lanes must call it.
template <class XAt>
__device__ __forceinline__ double fp64_score_warp(Metric m, const XAt& x_at, const float* c, int d, int lane) {
  double s = 0;
  if (m == Metric::l2) {
    for (int i = lane; i < d; i += 32) {
      const double df = x_at(i) - double(c[i]);
      s = fma(df, df, s);
    }
  } else {
    for (int i = lane; i < d; i += 32) s = fma(x_at(i), double(c[i]), s);
  }
  for (int o = 16; o > 0; o >>= 1) s += __shfl_down_sync(0xffffffffu, s, o);
  s = __shfl_sync(0xffffffffu, s, 0);
  return m == Metric::l2 ? s : -s;
}

/// |x|^2 in fp64, same lane split and tree; valid on lane 0 (cosine distances: 1 + s / |x|).
template <class XAt>
__device__ __forceinline__ double fp64_sumsq_warp(const XAt& x_at, int d, int lane) {
  double s = 0;
  for (int i = lane; i < d; i += 32) {
    const double v = x_at(i);
    s = fma(v, v, s);
  }
  for (int o = 16; o > 0; o >>= 1) s += __shfl_down_sync(0xffffffffu, s, o);
  return s;
}

/// Order-preserving map of a double to unsigned bits (a < b as doubles <=> key(a) < key(b),
/// -0.0 below +0.0; the scores a metric gives for equal values share one sign of zero: l2
/// sums of squares start at +0, inner products negate such a sum), and back.
__device__ __forceinline__ unsigned long long fp64_order_key(double v) {
  const unsigned long long u = static_cast<unsigned long long>(__double_as_longlong(v));
  return (u >> 63) ? ~u : (u | (1ull << 63));
}
__device__ __forceinline__ double fp64_from_order_key(unsigned long long k) {
  const unsigned long long u = (k >> 63) ? (k & ~(1ull << 63)) : ~k;
  return __longlong_as_double(static_cast<long long>(u));
}

}  // namespace flashkm::cuda::detail
