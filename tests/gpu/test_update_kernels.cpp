// The sort-inverse update's kernels (src/cuda/kernels.cu) one by one against host code that
// does the same fp64 operations in the same order: piece sums (one fma chain per column in
// row order, resumed chains: the streamed path's kernel), the combine of big clusters' pieces
// (one chain per column in piece order), the cut into work items, the whole cluster sums
// (fused and big clusters in one launch) against their definition, and the division step with
// block_sum_256's tree. Compared bitwise:
// the kernels are tuned for speed (pipelined loads, thread shapes), the bits must not move.
// Every test skips with a message when no CUDA device is present.
#include <gtest/gtest.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/backend.hpp"
#include "cuda/kernels.cuh"
#include "support/require_gpu.hpp"

using namespace flashkm;
using flashkm::cuda::Piece;

namespace {

#define CK(call) ASSERT_EQ(cudaSuccess, (call)) << #call

/// A device copy of a host vector (freed with the object).
template <class T>
struct Dev {
  T* p = nullptr;
  std::size_t n = 0;
  explicit Dev(const std::vector<T>& h) : n(h.size()) {
    EXPECT_EQ(cudaSuccess, cudaMalloc(&p, std::max<std::size_t>(n, 1) * sizeof(T)));
    if (n) EXPECT_EQ(cudaSuccess, cudaMemcpy(p, h.data(), n * sizeof(T), cudaMemcpyHostToDevice));
  }
  ~Dev() { cudaFree(p); }
  std::vector<T> get() const {
    std::vector<T> h(n);
    if (n) EXPECT_EQ(cudaSuccess, cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
  }
  Dev(const Dev&) = delete;
  Dev& operator=(const Dev&) = delete;
};

/// fp16 bits -> float (normals, subnormals, zeros; the data has no inf / nan).
float half_value(std::uint16_t h) {
  const int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
  const float v = e == 0 ? std::ldexp(float(m), -24) : std::ldexp(float(1024 + m), e - 25);
  return s ? -v : v;
}
float bf16_value(std::uint16_t h) {
  const std::uint32_t u = std::uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

/// Rows [n x stride] of dtype dt with random values (zeros, fp16 subnormals, signs, wide
/// exponents included), raw bytes, and their values as float.
struct Rows {
  std::vector<unsigned char> bytes;
  std::vector<float> val;
};
Rows random_rows(DType dt, std::int64_t n, std::int64_t stride, std::mt19937_64& rng) {
  Rows r;
  const std::size_t esz = dtype_size(dt), cnt = std::size_t(n * stride);
  r.bytes.resize(cnt * esz);
  r.val.resize(cnt);
  for (std::size_t e = 0; e < cnt; ++e) {
    const std::uint64_t z = rng();
    if (dt == DType::f32) {
      float f = std::ldexp(float(std::int64_t(z % 2000001) - 1000000), int((z >> 32) % 40) - 40);
      if ((z >> 40) % 17 == 0) f = 0.0f;
      std::memcpy(&r.bytes[e * 4], &f, 4);
      r.val[e] = f;
    } else if (dt == DType::f16) {
      std::uint16_t h = static_cast<std::uint16_t>((z & 0x83ff) | (((z >> 16) % 24 + 1) << 10));
      if ((z >> 40) % 13 == 0) h = static_cast<std::uint16_t>(z & 0x83ff);  // subnormal or zero
      std::memcpy(&r.bytes[e * 2], &h, 2);
      r.val[e] = half_value(h);
    } else {
      const std::uint16_t h = static_cast<std::uint16_t>((z & 0x807f) | (((z >> 16) % 60 + 100) << 7));
      std::memcpy(&r.bytes[e * 2], &h, 2);
      r.val[e] = bf16_value(h);
    }
  }
  return r;
}

/// What the row-sum kernels read besides the rows, for n rows: positive weights, positive
/// |x|^2 (cosine's scale) and a random order of all rows (the sort's output).
struct RowExtras {
  std::vector<float> w, xn;
  std::vector<std::int32_t> order;
};
RowExtras random_row_extras(std::int64_t n, std::mt19937_64& rng) {
  RowExtras e{std::vector<float>(n), std::vector<float>(n), std::vector<std::int32_t>(n)};
  for (auto& v : e.w) v = float(rng() % 1000) / 64.0f + 0.015625f;
  for (auto& v : e.xn) v = float(rng() % 100000) / 1000.0f + 0.5f;
  for (std::int64_t i = 0; i < n; ++i) e.order[i] = static_cast<std::int32_t>(i);
  std::shuffle(e.order.begin(), e.order.end(), rng);
  return e;
}

struct PieceCase {
  DType dt;
  int d;
  std::int64_t stride;  // elements between rows (d: 16-byte aligned rows when d * esz % 16 == 0)
  bool weights, cosine, with_x, resume;
};

void check_piece_sums(const PieceCase& pc, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  const std::int64_t n = 3000;
  const int d = pc.d;
  const Rows x = random_rows(pc.dt, n, pc.stride, rng);
  const RowExtras ex = random_row_extras(n, rng);
  const std::vector<float>& w = ex.w;
  const std::vector<float>& xn = ex.xn;
  // The random order of all rows, cut into pieces of 1 ... 150 positions (several lengths
  // around the kernel's group size included).
  const std::vector<std::int32_t>& order = ex.order;
  std::vector<Piece> pieces;
  for (std::int64_t b = 0; b < n;) {
    const std::int64_t len = rng() % 4 == 0 ? 1 + std::int64_t(rng() % 9) : 1 + std::int64_t(rng() % 150);
    const std::int64_t e = std::min(n, b + len);
    pieces.push_back(Piece{b, e});
    b = e;
  }
  const std::int64_t np = static_cast<std::int64_t>(pieces.size()), d1 = d + 1;
  std::vector<unsigned char> resume(np + 40, 0);
  std::vector<double> part(std::size_t((np + 40) * d1), 0.0);
  if (pc.resume)
    for (std::int64_t p = 0; p < np; ++p) {
      resume[p] = rng() % 2;
      for (std::int64_t j = 0; j < d1; ++j) part[p * d1 + j] = double(std::int64_t(rng() % 20001) - 10000) / 7.0;
    }
  // The reference: the kernel's chains, in order.
  std::vector<double> ref = part;
  for (std::int64_t p = 0; p < np; ++p) {
    const bool cont = resume[p] != 0;
    for (int j = 0; j <= d; ++j) {
      if (j < d && !pc.with_x) continue;
      double acc = cont ? part[p * d1 + j] : 0.0;
      for (std::int64_t q = pieces[p].begin; q < pieces[p].end; ++q) {
        const std::int64_t i = order[q];
        const double wv = pc.weights ? double(w[i]) : 1.0;
        if (j == d) {
          acc += wv;
        } else {
          const double sc = pc.cosine ? wv / std::sqrt(double(xn[i])) : wv;
          acc = std::fma(sc, double(x.val[i * pc.stride + j]), acc);
        }
      }
      ref[p * d1 + j] = acc;
    }
  }
  Dev<unsigned char> dx(x.bytes), dres(resume);
  Dev<float> dw(w), dxn(xn);
  Dev<std::int32_t> dord(order);
  Dev<Piece> dpieces(pieces);
  Dev<std::int64_t> dnp(std::vector<std::int64_t>{np});
  Dev<double> dpart(part);
  const cuda::XView xv{dx.p, pc.dt, pc.stride, n, d, n};
  // max_pieces past the count: the extra blocks must leave part alone.
  cuda::launch_piece_sums(xv, pc.weights ? dw.p : nullptr, dxn.p, pc.cosine, pc.with_x, dord.p, dpieces.p, dnp.p,
                          np + 40, dpart.p, nullptr, pc.resume ? dres.p : nullptr);
  CK(cudaDeviceSynchronize());
  const std::vector<double> got = dpart.get();
  std::int64_t bad = 0, first_bad = -1;
  for (std::size_t e = 0; e < got.size(); ++e)
    if (std::memcmp(&got[e], &ref[e], 8) != 0 && bad++ == 0) first_bad = static_cast<std::int64_t>(e);
  EXPECT_EQ(bad, 0) << "dtype " << int(pc.dt) << " d " << d << " stride " << pc.stride << " weights "
                    << pc.weights << " cosine " << pc.cosine << " with_x " << pc.with_x << " resume " << pc.resume
                    << ": first difference at piece " << first_bad / d1 << " column " << first_bad % d1 << ": "
                    << (first_bad >= 0 ? got[first_bad] : 0.0) << " vs " << (first_bad >= 0 ? ref[first_bad] : 0.0);
}

TEST(UpdateKernels, PieceSumsEqualHostChainsBitwise) {
  REQUIRE_GPU();
  std::uint64_t seed = 1;
  for (DType dt : {DType::f32, DType::f16, DType::bf16})
    for (int d : {1, 7, 8, 24, 128, 131, 1100}) {
      const std::int64_t pad = dt == DType::f32 ? 4 : 8;  // aligned rows (vector loads)
      const std::int64_t aligned = (d + pad - 1) / pad * pad;
      for (std::int64_t stride : {aligned, std::int64_t(d) + (d % 2 == 0 ? 1 : 0)}) {
        check_piece_sums({dt, d, stride, false, false, true, false}, seed++);
        check_piece_sums({dt, d, stride, true, false, true, true}, seed++);
        check_piece_sums({dt, d, stride, true, true, true, false}, seed++);
      }
      check_piece_sums({dt, d, d, true, false, false, true}, seed++);  // weights only
    }
}

/// The combine of big clusters (launch_combine_big) against host chains: keys with 0 ... 70
/// pieces, kCombineFew and kCombineFew + 1 and one with 400 (the few list's batches of 8 and
/// of 32, the many list's tiles, partial ones, more tiles than stages), values with signed
/// zeros; only the keys of more than kFusedPieces pieces are combined, the others' rows must
/// stay untouched. The bounds exceed the lists' lengths (read on the device) and the lists
/// go on past them with a fused key: a unit past a list's length must do nothing.
TEST(UpdateKernels, CombineBigEqualsHostChainsBitwise) {
  REQUIRE_GPU();
  std::mt19937_64 rng(7);
  constexpr double kUntouched = -12345.0;
  for (int d : {1, 5, 31, 32, 128, 300}) {
    for (int mode = 0; mode < 4; ++mode) {
      // mode & 1: weights only; mode & 2: the clusters are sort keys mapped by cluster_of
      // (a shuffled map with keys of no cluster, as the batched backend's label-major keys).
      const bool with_x = (mode & 1) == 0, mapped = (mode & 2) != 0;
      const std::int64_t nc = 257;
      std::vector<cuda::UpdateCounts> first(nc + 1, cuda::UpdateCounts{0, 0, 0, 0});
      std::vector<std::int32_t> few, many;
      std::int32_t fused_key = -1;
      for (std::int64_t c = 0; c < nc; ++c) {
        const std::int64_t np = c == 3   ? 400
                                : c == 4 ? cuda::kFusedPieces + 1
                                : c == 5 ? cuda::kCombineFew
                                : c == 6 ? cuda::kCombineFew + 1
                                : c == 7 ? 0
                                         : std::int64_t(rng() % 71);
        const bool big = np > cuda::kFusedPieces, is_few = big && np <= cuda::kCombineFew, is_many = big && !is_few;
        if (is_few) few.push_back(static_cast<std::int32_t>(c));
        if (is_many) many.push_back(static_cast<std::int32_t>(c));
        if (!big && fused_key < 0) fused_key = static_cast<std::int32_t>(c);
        first[c + 1] = cuda::UpdateCounts{first[c].items + (big ? np : 1), first[c].pieces + (big ? np : 0),
                                          first[c].few + (is_few ? 1 : 0), first[c].many + (is_many ? 1 : 0)};
      }
      ASSERT_GE(fused_key, 0);
      ASSERT_GT(few.size(), 10u);
      ASSERT_GT(many.size(), 10u);
      const std::int64_t np = first[nc].pieces, d1 = d + 1;
      std::vector<double> part(std::size_t(np * d1));
      for (auto& v : part) {
        const std::uint64_t z = rng();
        v = z % 11 == 0 ? -0.0 : std::ldexp(double(std::int64_t(z % 2000001) - 1000000), int((z >> 32) % 60) - 30);
      }
      std::vector<std::int32_t> cluster_of(nc);
      for (std::int64_t v = 0; v < nc; ++v) cluster_of[v] = static_cast<std::int32_t>(v);
      if (mapped) std::shuffle(cluster_of.begin(), cluster_of.end(), rng);
      std::vector<double> rs(std::size_t(nc * d), kUntouched), rw(nc, kUntouched);
      for (std::int64_t v = 0; v < nc; ++v) {
        if (first[v + 1].pieces == first[v].pieces) continue;  // fused: not combined
        const std::int64_t c = cluster_of[v];
        for (int j = 0; j <= d; ++j) {
          if (j < d && !with_x) continue;
          double acc = 0;
          for (std::int64_t p = first[v].pieces; p < first[v + 1].pieces; ++p) acc += part[p * d1 + j];
          if (j < d) rs[c * d + j] = acc;
          else rw[c] = acc;
        }
      }
      // The lists as the device sees them: past their lengths, bounds' worth of a fused key.
      const std::int64_t max_few = std::int64_t(few.size()) + 30, max_many = std::int64_t(many.size()) + 5;
      few.resize(std::size_t(max_few), fused_key);
      many.resize(std::size_t(max_many), fused_key);
      Dev<double> dpart(part), dsums(std::vector<double>(std::size_t(nc * d), kUntouched)),
          dw(std::vector<double>(nc, kUntouched));
      Dev<cuda::UpdateCounts> dfirst(first);
      Dev<std::int32_t> dmap(cluster_of), dfew(few), dmany(many);
      cuda::launch_combine_big(dpart.p, dfirst.p, nc, dfew.p, max_few, dmany.p, max_many, d, with_x,
                               mapped ? dmap.p : nullptr, dsums.p, dw.p, nullptr);
      CK(cudaDeviceSynchronize());
      const auto gs = dsums.get(), gw = dw.get();
      EXPECT_EQ(0, std::memcmp(gs.data(), rs.data(), gs.size() * 8)) << "d " << d << " mode " << mode;
      EXPECT_EQ(0, std::memcmp(gw.data(), rw.data(), gw.size() * 8)) << "d " << d << " mode " << mode;
    }
  }
}

/// The work items against host code: counts (fused at most kFusedPieces pieces, big ones
/// few at most kCombineFew pieces, else many), the scan, the cut of big clusters into pieces,
/// the two lists of big clusters (nothing written past their lengths); uniform and ragged
/// heights.
TEST(UpdateKernels, ItemCutMatchesHost) {
  REQUIRE_GPU();
  std::mt19937_64 rng(11);
  const std::int64_t nc = 1000;
  const int uniform = 37;
  std::vector<std::int32_t> row_off(nc + 1, 0), per(nc), cluster_of(nc);
  for (std::int64_t c = 0; c < nc; ++c) {
    // Mostly up to 9 pieces of 37 rows; exactly kCombineFew and kCombineFew + 1 of them; some
    // of up to 80 (the many list at both heights).
    const std::int64_t cnt = c % 7 == 0    ? 0
                             : c == 5      ? 5000
                             : c == 6      ? cuda::kCombineFew * uniform
                             : c == 8      ? cuda::kCombineFew * uniform + 1
                             : c % 13 == 1 ? std::int64_t(rng() % (80 * uniform))
                                           : std::int64_t(rng() % 300);
    row_off[c + 1] = static_cast<std::int32_t>(row_off[c] + cnt);
    per[c] = c < 500 ? 64 : 1 + static_cast<std::int32_t>(rng() % 100);
    cluster_of[c] = c % 9 == 0 ? -1 : static_cast<std::int32_t>(nc - 1 - c);
  }
  for (bool ragged : {false, true}) {
    std::vector<cuda::UpdateItem> want;
    std::vector<std::int32_t> want_few, want_many;
    std::vector<cuda::UpdateCounts> counts(nc + 1, cuda::UpdateCounts{0, 0, 0, 0}), first(nc + 1, counts[0]);
    for (std::int64_t c = 0; c < nc; ++c) {
      const std::int32_t r = ragged ? per[c] : uniform;
      const std::int64_t np = (row_off[c + 1] - row_off[c] + r - 1) / r;
      if (np <= cuda::kFusedPieces) {
        counts[c] = cuda::UpdateCounts{1, 0, 0, 0};
        want.push_back(cuda::UpdateItem{row_off[c], row_off[c + 1], r, ragged ? cluster_of[c] : std::int32_t(c)});
      } else {
        const bool is_few = np <= cuda::kCombineFew;
        counts[c] = cuda::UpdateCounts{np, np, is_few ? 1 : 0, is_few ? 0 : 1};
        (is_few ? want_few : want_many).push_back(static_cast<std::int32_t>(c));
        for (std::int64_t q = 0; q < np; ++q) {
          const std::int32_t b = static_cast<std::int32_t>(row_off[c] + q * r);
          want.push_back(cuda::UpdateItem{b, std::min(b + r, row_off[c + 1]), 0,
                                          static_cast<std::int32_t>(first[c].pieces + q)});
        }
      }
      first[c + 1] = cuda::UpdateCounts{first[c].items + counts[c].items, first[c].pieces + counts[c].pieces,
                                        first[c].few + counts[c].few, first[c].many + counts[c].many};
    }
    ASSERT_GE(want_few.size(), 5u) << "ragged " << ragged;
    ASSERT_GE(want_many.size(), 5u) << "ragged " << ragged;
    const std::int64_t max_items = static_cast<std::int64_t>(want.size()) + 100;
    Dev<std::int32_t> doff(row_off), dper(per), dmap(cluster_of),
        dfew(std::vector<std::int32_t>(want_few.size() + 5, -7)),
        dmany(std::vector<std::int32_t>(want_many.size() + 5, -7));
    Dev<cuda::UpdateCounts> dcounts(std::vector<cuda::UpdateCounts>(nc + 1, cuda::UpdateCounts{-1, -1, -1, -1})),
        dfirst(std::vector<cuda::UpdateCounts>(nc + 1, cuda::UpdateCounts{-1, -1, -1, -1}));
    Dev<cuda::UpdateItem> ditems(std::vector<cuda::UpdateItem>(max_items, cuda::UpdateItem{-1, -1, -1, -1}));
    Dev<unsigned char> dtemp(std::vector<unsigned char>(cuda::update_scan_bytes(nc)));
    cuda::launch_update_counts(doff.p, nc, uniform, ragged ? dper.p : nullptr, dcounts.p, nullptr);
    cuda::launch_update_scan(dtemp.p, dtemp.n, dcounts.p, dfirst.p, nc, nullptr);
    cuda::launch_fill_items(doff.p, dfirst.p, nc, uniform, ragged ? dper.p : nullptr, ragged ? dmap.p : nullptr,
                            max_items, ditems.p, dfew.p, dmany.p, nullptr);
    CK(cudaDeviceSynchronize());
    const auto gc = dcounts.get(), gf = dfirst.get();
    auto same = [](const cuda::UpdateCounts& a, const cuda::UpdateCounts& b) {
      return a.items == b.items && a.pieces == b.pieces && a.few == b.few && a.many == b.many;
    };
    for (std::int64_t c = 0; c <= nc; ++c) {
      ASSERT_TRUE(same(gc[c], counts[c])) << "ragged " << ragged << " counts of key " << c;
      ASSERT_TRUE(same(gf[c], first[c])) << "ragged " << ragged << " offsets of key " << c;
    }
    const auto got = ditems.get();
    for (std::size_t p = 0; p < got.size(); ++p) {
      const cuda::UpdateItem e = p < want.size() ? want[p] : cuda::UpdateItem{-1, -1, -1, -1};  // past: untouched
      ASSERT_TRUE(got[p].begin == e.begin && got[p].end == e.end && got[p].rows == e.rows && got[p].out == e.out)
          << "ragged " << ragged << " item " << p << ": [" << got[p].begin << ", " << got[p].end << ") rows "
          << got[p].rows << " out " << got[p].out << " instead of [" << e.begin << ", " << e.end << ") rows "
          << e.rows << " out " << e.out;
    }
    // Each list in order, then untouched.
    want_few.resize(want_few.size() + 5, -7);
    want_many.resize(want_many.size() + 5, -7);
    EXPECT_EQ(dfew.get(), want_few) << "ragged " << ragged;
    EXPECT_EQ(dmany.get(), want_many) << "ragged " << ragged;
  }
}

/// launch_update_sums end to end against the definition computed on the host: per cluster,
/// pieces of R rows of its sorted rows, each column one fma chain from 0 in row order, the
/// cluster's sum ((0 + piece_0) + piece_1) + ... Cluster sizes 0, 1, R - 1, R, R + 1, the
/// largest fused (kFusedPieces R) and the smallest big (kFusedPieces R + 1), many R and one
/// huge cluster, in one launch; weights, cosine, weights only, fp32 / fp16 / bf16, and the
/// batched form (per-key heights, keys mapped to clusters, keys of no cluster).
struct SumsCase {
  DType dt;
  int d;
  bool weights, cosine, with_x, batched;
};
void check_update_sums(const SumsCase& sc, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  const int R = 64;
  // Per key its height (batched: 64, 128 or 256, as problems of different n) and size: the
  // edge cases for its height, then random ones (mostly small), one huge.
  auto height = [&](std::int64_t v) { return sc.batched ? 64 << (v % 3) : R; };
  std::vector<std::int64_t> sizes;
  for (int rep = 0; rep < 3; ++rep)
    for (std::int64_t e : {0, 1, -1, 64, 65, 2 * 64, 2 * 64 + 1, 4 * 64, 4 * 64 + 1, 9 * 64 + 5, 40 * 64 + 3}) {
      const std::int64_t h = height(static_cast<std::int64_t>(sizes.size()));
      // e in units of 64 rows rescaled to the key's height (-1: h - 1)
      sizes.push_back(e == -1 ? h - 1 : e == 1 || e == 0 ? e : (e / 64) * h + e % 64);
    }
  static_assert(cuda::kFusedPieces == 1 || cuda::kFusedPieces == 2 || cuda::kFusedPieces == 4,
                "the edge sizes above: R, R + 1, 2R, 2R + 1, 4R, 4R + 1");
  for (int i = 0; i < 300; ++i) sizes.push_back(rng() % 5 == 0 ? std::int64_t(rng() % (12 * R)) : std::int64_t(rng() % (2 * R)));
  sizes.push_back(150 * R + 7);  // one huge cluster (several combine tiles)
  const std::int64_t nk = static_cast<std::int64_t>(sizes.size());
  std::vector<std::int32_t> row_off(nk + 1, 0), per(nk), cluster_of(nk);
  for (std::int64_t v = 0; v < nk; ++v) {
    row_off[v + 1] = static_cast<std::int32_t>(row_off[v] + sizes[v]);
    per[v] = static_cast<std::int32_t>(height(v));
  }
  // The batched form: keys mapped to clusters in another order, keys without rows of no cluster.
  std::int64_t nc = nk;
  for (std::int64_t v = 0; v < nk; ++v) cluster_of[v] = static_cast<std::int32_t>(v);
  if (sc.batched) {
    std::shuffle(cluster_of.begin(), cluster_of.end(), rng);
    for (std::int64_t v = 0; v < nk; ++v)
      if (sizes[v] == 0 && v % 2 == 0) cluster_of[v] = -1;
  }
  const std::int64_t n = row_off[nk];
  const int d = sc.d;
  const Rows x = random_rows(sc.dt, n, d, rng);
  const RowExtras ex = random_row_extras(n, rng);
  const std::vector<float>& w = ex.w;
  const std::vector<float>& xn = ex.xn;
  const std::vector<std::int32_t>& order = ex.order;
  // The definition.
  constexpr double kUntouched = -777.0;
  std::vector<double> rs(std::size_t(nc * d), kUntouched), rw(nc, kUntouched);
  for (std::int64_t v = 0; v < nk; ++v) {
    const std::int64_t c = cluster_of[v];
    if (c < 0) continue;
    for (int j = 0; j <= d; ++j) {
      if (j < d && !sc.with_x) continue;
      double total = 0;
      for (std::int64_t b = row_off[v]; b < row_off[v + 1]; b += per[v]) {
        double acc = 0;
        for (std::int64_t q = b; q < std::min<std::int64_t>(b + per[v], row_off[v + 1]); ++q) {
          const std::int64_t i = order[q];
          const double wv = sc.weights ? double(w[i]) : 1.0;
          if (j == d) acc += wv;
          else acc = std::fma(sc.cosine ? wv / std::sqrt(double(xn[i])) : wv, double(x.val[i * d + j]), acc);
        }
        total += acc;
      }
      if (j < d) rs[c * d + j] = total;
      else rw[c] = total;
    }
  }
  std::int64_t max_items = nk, max_big = 0;
  for (std::int64_t v = 0; v < nk; ++v) max_items += sizes[v] / per[v];
  for (int r : {64, 128, 256}) max_big += cuda::max_big_pieces(n, r);  // each height's own bound, summed
  Dev<unsigned char> dx(x.bytes), dtemp(std::vector<unsigned char>(cuda::update_scan_bytes(nk)));
  Dev<float> dw(w), dxn(xn);
  Dev<std::int32_t> dord(order), doff(row_off), dper(per), dmap(cluster_of);
  Dev<double> dsums(std::vector<double>(std::size_t(nc * d), kUntouched)), dwt(std::vector<double>(nc, kUntouched));
  cuda::UpdateBuffers buf;
  const cuda::UpdateWorkspace ws = buf.prepare(nk, max_items, max_big, d, dtemp.p, dtemp.n);
  const cuda::XView xv{dx.p, sc.dt, d, n, d, n};
  cuda::launch_update_sums(xv, sc.weights ? dw.p : nullptr, dxn.p, sc.cosine, sc.with_x, dord.p, doff.p, nk, R,
                           sc.batched ? dper.p : nullptr, sc.batched ? dmap.p : nullptr, ws, dsums.p, dwt.p, nullptr);
  CK(cudaDeviceSynchronize());
  const auto gs = dsums.get(), gw = dwt.get();
  std::int64_t bad = 0, first_bad = -1;
  for (std::size_t e = 0; e < gs.size(); ++e)
    if (std::memcmp(&gs[e], &rs[e], 8) != 0 && bad++ == 0) first_bad = static_cast<std::int64_t>(e);
  const std::string what = "dtype " + std::to_string(int(sc.dt)) + " d " + std::to_string(d) + " weights " +
                           std::to_string(sc.weights) + " cosine " + std::to_string(sc.cosine) + " with_x " +
                           std::to_string(sc.with_x) + " batched " + std::to_string(sc.batched);
  EXPECT_EQ(bad, 0) << what << ": first difference at cluster " << first_bad / std::max(d, 1) << " column "
                    << first_bad % std::max(d, 1) << ": " << (first_bad >= 0 ? gs[first_bad] : 0.0) << " vs "
                    << (first_bad >= 0 ? rs[first_bad] : 0.0);
  EXPECT_EQ(0, std::memcmp(gw.data(), rw.data(), gw.size() * 8)) << what << " (weights)";
}

TEST(UpdateKernels, UpdateSumsEqualDefinitionBitwise) {
  REQUIRE_GPU();
  std::uint64_t seed = 100;
  for (DType dt : {DType::f32, DType::f16, DType::bf16})
    for (int d : {1, 8, 128, 131})
      for (bool batched : {false, true}) {
        check_update_sums({dt, d, false, false, true, batched}, seed++);
        check_update_sums({dt, d, true, false, true, batched}, seed++);
        check_update_sums({dt, d, true, true, true, batched}, seed++);
        check_update_sums({dt, d, true, false, false, batched}, seed++);  // weights only
      }
}

/// block_sum_256 on the host: thread t's value v[t], pairs (t, t + s) for s = 128 ... 1.
double tree_256(std::vector<double> v) {
  for (int s = 128; s > 0; s >>= 1)
    for (int t = 0; t < s; ++t) v[t] += v[t + s];
  return v[0];
}

TEST(UpdateKernels, FinishUpdateEqualsHostBitwise) {
  REQUIRE_GPU();
  std::mt19937_64 rng(5);
  for (int d : {3, 128, 300, 600})
    for (bool cosine : {false, true}) {
      const std::int64_t nc = 1003;
      std::vector<double> sums(std::size_t(nc * d)), wts(nc);
      std::vector<float> cur(std::size_t(nc * d));
      for (auto& v : sums) v = double(std::int64_t(rng() % 2000001) - 1000000) / 997.0;
      for (auto& v : cur) v = float(std::int64_t(rng() % 20001) - 10000) / 1000.0f;
      for (std::int64_t c = 0; c < nc; ++c) wts[c] = c % 50 == 7 ? 0.0 : double(rng() % 5000 + 1) / 3.0;
      for (int j = 0; j < d; ++j) sums[std::size_t(11 * d + j)] = 0.0;  // zero norm (cosine keeps)
      std::vector<float> rnext(cur.size());
      std::vector<double> rshift(nc);
      unsigned long long rempty = 0;
      for (std::int64_t c = 0; c < nc; ++c) {
        const double w = wts[c];
        bool keep = !(w > 0);
        double scale = keep ? 0.0 : 1.0 / w;
        std::vector<double> pt(256, 0.0);
        if (cosine && !keep) {
          for (int t = 0; t < 256; ++t)
            for (int j = t; j < d; j += 256) pt[t] = std::fma(sums[c * d + j], sums[c * d + j], pt[t]);
          const double n2 = tree_256(pt);
          if (n2 == 0) keep = true;
          else scale = 1.0 / std::sqrt(n2);
        }
        std::fill(pt.begin(), pt.end(), 0.0);
        for (int t = 0; t < 256; ++t)
          for (int j = t; j < d; j += 256) {
            const float v = keep ? cur[c * d + j] : static_cast<float>(sums[c * d + j] * scale);
            rnext[c * d + j] = v;
            const double diff = double(v) - double(cur[c * d + j]);
            pt[t] = std::fma(diff, diff, pt[t]);
          }
        rshift[c] = tree_256(pt);
        rempty += !(w > 0);
      }
      Dev<double> dsums(sums), dw(wts), dshift(std::vector<double>(nc, -1.0));
      Dev<float> dcur(cur), dnext(std::vector<float>(cur.size(), -1.0f));
      Dev<unsigned long long> dempty(std::vector<unsigned long long>{0});
      cuda::launch_finish_update(dsums.p, dw.p, dcur.p, nc, d, cosine, dnext.p, dshift.p, dempty.p, nullptr);
      CK(cudaDeviceSynchronize());
      const auto gn = dnext.get();
      const auto gs = dshift.get();
      EXPECT_EQ(0, std::memcmp(gn.data(), rnext.data(), gn.size() * 4)) << "d " << d << " cosine " << cosine;
      EXPECT_EQ(0, std::memcmp(gs.data(), rshift.data(), gs.size() * 8)) << "d " << d << " cosine " << cosine;
      EXPECT_EQ(dempty.get()[0], rempty);
    }
}

}  // namespace
