// assign_kernel_bench: the AVX2 assign micro-kernel alone (AssignKernel<8, MR, NV>::argmin2
// over all row blocks, OpenMP dynamic over blocks as the backend does), without predict()'s
// attach pass (NaN scan + fp64 row norms), bounds or allocations. Used for
// bench/results/cpu_2026-11-29-assign-tuning.md.
//
//   g++ -std=c++20 -O3 -mavx2 -mfma -mf16c -ffp-contract=fast -fopenmp -Isrc \
//       bench/assign_kernel_bench.cpp -o /tmp/akb && /tmp/akb 2
//   (-DMRV=4 -DNVV=3 for another tile; CFG=0|1|2 one config; REPS=n best of n; BR=rows per block)
//
// Configs a 200000x128 K256, b 100000x128 K1024, c 50000x768 K256 (Gaussian data; the
// flop count does not depend on the data). Prints best-of-REPS GFLOP/s (2 N K D / s) and a
// hash of (index, best bits, second bits) of every row: equal hashes = bitwise equal results.
#define FLASHKM_ISA avx2bench
#include "cpu/kernel_impl.hpp"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#ifndef MRV
#define MRV 6
#define NVV 2
#endif
using K = flashkm::cpu::avx2bench::AssignKernel<8, MRV, NVV>;

int main(int argc, char** argv) {
  struct Cfg {
    long n, d, k;
  } cfgs[] = {{200000, 128, 256}, {100000, 128, 1024}, {50000, 768, 256}};
  const int threads = argc > 1 ? std::atoi(argv[1]) : 2;
  const int reps = std::getenv("REPS") ? std::atoi(std::getenv("REPS")) : 5;
  for (int ci = 0; ci < 3; ++ci) {
    if (std::getenv("CFG") && std::atoi(std::getenv("CFG")) != ci) continue;
    const Cfg c = cfgs[ci];
    std::mt19937 g(1);
    std::normal_distribution<float> nd;
    std::vector<float> X(c.n * c.d), C(c.k * c.d);
    for (auto& v : X) v = nd(g);
    for (auto& v : C) v = nd(g);
    const long kp = (c.k + K::NR - 1) / K::NR * K::NR;  // packed as PackedCentroids does
    std::vector<float> pan(kp * c.d, 0.0f), bias(kp, INFINITY);
    for (long j = 0; j < c.k; ++j) {
      double n2 = 0;
      for (long t = 0; t < c.d; ++t) {
        pan[(j / K::NR) * c.d * K::NR + t * K::NR + j % K::NR] = C[j * c.d + t];
        n2 += double(C[j * c.d + t]) * C[j * c.d + t];
      }
      bias[j] = float(n2);
    }
    const flashkm::cpu::PanelView pv{pan.data(), bias.data(), c.k, kp, c.d, -2.0f};
    long br = std::clamp<long>((128 * 1024 / 4) / c.d, MRV, 1024);  // the backend's block rows
    if (std::getenv("BR")) br = std::atol(std::getenv("BR"));
    br = br / MRV * MRV;
    std::vector<int> idx(c.n);
    std::vector<float> best(c.n), sec(c.n);
    double bt = 1e9;
    for (int rep = 0; rep < reps; ++rep) {
      const auto t0 = std::chrono::steady_clock::now();
      const long nb = (c.n + br - 1) / br;
#pragma omp parallel num_threads(threads)
      {
        std::vector<float> ws(K::workspace_floats(br, c.d));
#pragma omp for schedule(dynamic, 1)
        for (long b = 0; b < nb; ++b) {
          const long r0 = b * br, rows = std::min(br, c.n - r0);
          K::argmin2(X.data() + r0 * c.d, rows, c.d, pv, ws.data(), idx.data() + r0, best.data() + r0, sec.data() + r0);
        }
      }
      bt = std::min(bt, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    unsigned long h = 0;
    for (long i = 0; i < c.n; ++i) {
      unsigned b, s;
      std::memcpy(&b, &best[i], 4);
      std::memcpy(&s, &sec[i], 4);
      h = h * 1000003 + idx[i] * 7 + b * 13ul + s;
    }
    const double gf = 2.0 * c.n * c.k * c.d / bt / 1e9;
    std::printf("MR%d NV%d threads %d n%ld d%ld k%ld block %ld: %.4f s %.1f GFLOP/s hash %lx\n", MRV, NVV, threads, c.n,
                c.d, c.k, br, bt, gf, h);
  }
}
