// The sort-inverse update's kernels (src/cuda/kernels.cu) one by one against host code that
// does the same fp64 operations in the same order: piece sums (one fma chain per column in
// row order, resumed chains), the combine of pieces (one chain per column in piece order),
// the cut into pieces, and the division step with block_sum_256's tree. Compared bitwise:
// the kernels are tuned for speed (pipelined loads, thread shapes), the bits must not move.
// Every test skips with a message when no CUDA device is present.
#include <gtest/gtest.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
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
  std::vector<float> w(n), xn(n);
  for (auto& v : w) v = float(rng() % 1000) / 64.0f + 0.015625f;
  for (auto& v : xn) v = float(rng() % 100000) / 1000.0f + 0.5f;
  // A random order of all rows, cut into pieces of 1 ... 150 positions (several lengths
  // around the kernel's group size included).
  std::vector<std::int32_t> order(n);
  for (std::int64_t i = 0; i < n; ++i) order[i] = static_cast<std::int32_t>(i);
  std::shuffle(order.begin(), order.end(), rng);
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

TEST(UpdateKernels, CombinePiecesEqualsHostChainsBitwise) {
  REQUIRE_GPU();
  std::mt19937_64 rng(7);
  for (int d : {1, 5, 128, 300}) {
    for (int mode = 0; mode < 4; ++mode) {
      // mode & 1: weights only; mode & 2: the clusters are sort keys mapped by cluster_of
      // (a shuffled map with keys of no cluster, as the batched backend's label-major keys).
      const bool with_x = (mode & 1) == 0, mapped = (mode & 2) != 0;
      // Clusters with 0 ... 70 pieces (and one with 400), values with signed zeros.
      const std::int64_t nc = 257;
      std::vector<std::int64_t> first(nc + 1, 0);
      for (std::int64_t c = 0; c < nc; ++c) first[c + 1] = first[c] + (c == 3 ? 400 : std::int64_t(rng() % 71));
      const std::int64_t np = first[nc], d1 = d + 1;
      std::vector<double> part(std::size_t(np * d1));
      for (auto& v : part) {
        const std::uint64_t z = rng();
        v = z % 11 == 0 ? -0.0 : std::ldexp(double(std::int64_t(z % 2000001) - 1000000), int((z >> 32) % 60) - 30);
      }
      std::vector<std::int32_t> cluster_of(nc);
      for (std::int64_t v = 0; v < nc; ++v) cluster_of[v] = static_cast<std::int32_t>(v);
      if (mapped) {
        std::shuffle(cluster_of.begin(), cluster_of.end(), rng);
        for (std::int64_t v = 0; v < nc; v += 9) cluster_of[v] = -1;
      }
      std::vector<double> rs(std::size_t(nc * d), 0.0), rw(nc, 0.0);
      for (std::int64_t v = 0; v < nc; ++v) {
        const std::int64_t c = cluster_of[v];
        if (c < 0) continue;
        for (int j = 0; j <= d; ++j) {
          double acc = 0;
          for (std::int64_t p = first[v]; p < first[v + 1]; ++p) acc += part[p * d1 + j];
          if (j < d) rs[c * d + j] = with_x ? acc : 0.0;
          else rw[c] = acc;
        }
      }
      Dev<double> dpart(part), dsums(std::vector<double>(std::size_t(nc * d), 0.0)), dw(std::vector<double>(nc, 0.0));
      Dev<std::int64_t> dfirst(first);
      Dev<std::int32_t> dmap(cluster_of);
      cuda::launch_combine_pieces(dpart.p, dfirst.p, nc, d, with_x, dsums.p, dw.p, nullptr, mapped ? dmap.p : nullptr);
      CK(cudaDeviceSynchronize());
      const auto gs = dsums.get(), gw = dw.get();
      EXPECT_EQ(0, std::memcmp(gs.data(), rs.data(), gs.size() * 8)) << "d " << d << " mode " << mode;
      EXPECT_EQ(0, std::memcmp(gw.data(), rw.data(), gw.size() * 8)) << "d " << d << " mode " << mode;
    }
  }
}

TEST(UpdateKernels, PieceCutMatchesHost) {
  REQUIRE_GPU();
  std::mt19937_64 rng(11);
  const std::int64_t nc = 1000;
  std::vector<std::int32_t> row_off(nc + 1, 0), per(nc);
  for (std::int64_t c = 0; c < nc; ++c) {
    const std::int64_t cnt = c % 7 == 0 ? 0 : c == 5 ? 5000 : std::int64_t(rng() % 300);
    row_off[c + 1] = static_cast<std::int32_t>(row_off[c] + cnt);
    per[c] = c < 500 ? 64 : 1 + static_cast<std::int32_t>(rng() % 100);
  }
  for (bool ragged : {false, true}) {
    const int uniform = 37;
    std::vector<Piece> want;
    std::vector<std::int64_t> counts(nc + 1, 0), first(nc + 1, 0);
    for (std::int64_t c = 0; c < nc; ++c) {
      const std::int64_t r = ragged ? per[c] : uniform;
      for (std::int64_t b = row_off[c]; b < row_off[c + 1]; b += r)
        want.push_back(Piece{b, std::min<std::int64_t>(b + r, row_off[c + 1])});
      counts[c] = (row_off[c + 1] - row_off[c] + r - 1) / r;
      first[c + 1] = first[c] + counts[c];
    }
    const std::int64_t max_pieces = static_cast<std::int64_t>(want.size()) + 100;
    Dev<std::int32_t> doff(row_off), dper(per);
    Dev<std::int64_t> dcounts(std::vector<std::int64_t>(nc + 1, -1)), dfirst(first);
    Dev<Piece> dpieces(std::vector<Piece>(max_pieces, Piece{-1, -1}));
    cuda::launch_piece_counts(doff.p, nc, uniform, ragged ? dper.p : nullptr, dcounts.p, nullptr);
    cuda::launch_fill_pieces(doff.p, dfirst.p, nc, uniform, ragged ? dper.p : nullptr, max_pieces, dpieces.p, nullptr);
    CK(cudaDeviceSynchronize());
    EXPECT_EQ(dcounts.get(), counts) << "ragged " << ragged;
    const auto got = dpieces.get();
    for (std::size_t p = 0; p < got.size(); ++p) {
      const Piece e = p < want.size() ? want[p] : Piece{-1, -1};  // past the count: untouched
      ASSERT_TRUE(got[p].begin == e.begin && got[p].end == e.end)
          << "ragged " << ragged << " piece " << p << ": [" << got[p].begin << ", " << got[p].end << ") instead of ["
          << e.begin << ", " << e.end << ")";
    }
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
