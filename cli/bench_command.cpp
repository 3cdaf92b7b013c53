// flashkm bench: fit on generated blobs and print the assignment throughput.
#include <cstdio>
#include <random>
#include <vector>

#include "commands.hpp"
#include "flashkm/error.hpp"
#include "flashkm/kmeans.hpp"

namespace flashkm::cli {
namespace {

// n points around k centres. The centres are drawn with the same spread as the noise so
// that the clusters overlap and Lloyd keeps moving for many iterations: a benchmark of
// iteration time needs iterations, not quick convergence.
std::vector<float> make_blobs(std::int64_t n, std::int64_t d, std::int64_t k, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> centres(static_cast<std::size_t>(k * d));
  for (float& c : centres) c = normal(rng);
  std::vector<float> x(static_cast<std::size_t>(n * d));
  for (std::int64_t i = 0; i < n; ++i) {
    const float* c = centres.data() + static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(k)) * d;
    for (std::int64_t j = 0; j < d; ++j) x[i * d + j] = c[j] + normal(rng);
  }
  return x;
}

}  // namespace

int run_bench(const BenchOptions& o) {
  FLASHKM_CHECK(o.n >= 1 && o.d >= 1 && o.k >= 1 && o.k <= o.n && o.iters >= 1, invalid_argument,
                "bench needs n >= k >= 1, d >= 1, iters >= 1 (got n=", o.n, " d=", o.d, " k=", o.k,
                " iters=", o.iters, ")");
  std::printf("generating %lld x %lld blobs ...\n", static_cast<long long>(o.n), static_cast<long long>(o.d));
  std::fflush(stdout);
  const std::vector<float> x = make_blobs(o.n, o.d, o.k, o.seed);

  Params p;
  p.n_clusters = o.k;
  p.max_iter = o.iters;
  p.tol = 0;  // run all iterations unless the labels stop changing
  p.init = InitMethod::random;  // cheapest init: the benchmark measures Lloyd iterations
  p.seed = o.seed;
  p.device = o.device;
  p.precision = o.precision;
  p.n_threads = o.n_threads;
  const Model m = fit(MatrixView::of(x.data(), o.n, o.d), p);

  double ms = 0;
  for (const IterationInfo& it : m.history) ms += it.ms;
  const double ms_per_iter = ms / static_cast<double>(m.history.size());
  // One iteration computes N*K dot products of length D: 2*N*K*D flops.
  const double gflops = 2.0 * static_cast<double>(o.n) * static_cast<double>(o.k) * static_cast<double>(o.d) /
                        (ms_per_iter * 1e-3) / 1e9;
  std::printf("%10s %6s %6s %6s %12s %10s  %s\n", "n", "d", "k", "iters", "ms/iter", "GFLOP/s", "device");
  std::printf("%10lld %6lld %6lld %6zu %12.3f %10.1f  %s (%s)\n", static_cast<long long>(o.n),
              static_cast<long long>(o.d), static_cast<long long>(o.k), m.history.size(), ms_per_iter, gflops,
              to_string(o.device), o.device == Device::cpu ? cpu_simd_level() : to_string(o.precision));
  return 0;
}

}  // namespace flashkm::cli
