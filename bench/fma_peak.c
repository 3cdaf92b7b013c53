/* fma_peak: the machine's fp32 FMA peak, GFLOP/s over all OpenMP threads.
 *
 * Adapted from ../shared/anchors/cpu_fma_peak.c (the CPU anchor of 2026-11-29): the same
 * 12 independent FMA chains per thread, best of 3; here the ISA is chosen at run time
 * (__builtin_cpu_supports), so one binary built without -m flags runs on any x86-64, and
 * every supported width is measured: AVX-512 (16 lanes) and AVX2+FMA (8 lanes).
 *
 *   gcc -O2 -fopenmp bench/fma_peak.c -o fma_peak && OMP_NUM_THREADS=2 ./fma_peak [avx512|avx2]
 *
 * Prints one JSON object per line: {"isa": ..., "threads": ..., "gflops_best": ..., "runs": [...]}.
 */
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <string.h>

#define CHAINS 12

__attribute__((target("avx512f"))) static float run_avx512(long iters) {
  float sink = 0;
#pragma omp parallel reduction(+ : sink)
  {
    /* distinct starting values: with equal ones the compiler merges the 12 chains into one
       (common subexpressions) and the loop measures FMA latency, not throughput */
    __m512 a0 = _mm512_set1_ps(1.000f), a1 = _mm512_set1_ps(1.001f), a2 = _mm512_set1_ps(1.002f),
           a3 = _mm512_set1_ps(1.003f), a4 = _mm512_set1_ps(1.004f), a5 = _mm512_set1_ps(1.005f),
           a6 = _mm512_set1_ps(1.006f), a7 = _mm512_set1_ps(1.007f), a8 = _mm512_set1_ps(1.008f),
           a9 = _mm512_set1_ps(1.009f), a10 = _mm512_set1_ps(1.010f), a11 = _mm512_set1_ps(1.011f);
    __m512 b = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
    for (long i = 0; i < iters; i++) {
      a0 = _mm512_fmadd_ps(a0, b, c); a1 = _mm512_fmadd_ps(a1, b, c); a2 = _mm512_fmadd_ps(a2, b, c);
      a3 = _mm512_fmadd_ps(a3, b, c); a4 = _mm512_fmadd_ps(a4, b, c); a5 = _mm512_fmadd_ps(a5, b, c);
      a6 = _mm512_fmadd_ps(a6, b, c); a7 = _mm512_fmadd_ps(a7, b, c); a8 = _mm512_fmadd_ps(a8, b, c);
      a9 = _mm512_fmadd_ps(a9, b, c); a10 = _mm512_fmadd_ps(a10, b, c); a11 = _mm512_fmadd_ps(a11, b, c);
    }
    __m512 s = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)),
                             _mm512_add_ps(_mm512_add_ps(a4, a5), _mm512_add_ps(a6, a7)));
    s = _mm512_add_ps(s, _mm512_add_ps(_mm512_add_ps(a8, a9), _mm512_add_ps(a10, a11)));
    sink += _mm512_reduce_add_ps(s);
  }
  return sink;
}

__attribute__((target("avx2,fma"))) static float run_avx2(long iters) {
  float sink = 0;
#pragma omp parallel reduction(+ : sink)
  {
    /* distinct starting values: see run_avx512 */
    __m256 a0 = _mm256_set1_ps(1.000f), a1 = _mm256_set1_ps(1.001f), a2 = _mm256_set1_ps(1.002f),
           a3 = _mm256_set1_ps(1.003f), a4 = _mm256_set1_ps(1.004f), a5 = _mm256_set1_ps(1.005f),
           a6 = _mm256_set1_ps(1.006f), a7 = _mm256_set1_ps(1.007f), a8 = _mm256_set1_ps(1.008f),
           a9 = _mm256_set1_ps(1.009f), a10 = _mm256_set1_ps(1.010f), a11 = _mm256_set1_ps(1.011f);
    __m256 b = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
    for (long i = 0; i < iters; i++) {
      a0 = _mm256_fmadd_ps(a0, b, c); a1 = _mm256_fmadd_ps(a1, b, c); a2 = _mm256_fmadd_ps(a2, b, c);
      a3 = _mm256_fmadd_ps(a3, b, c); a4 = _mm256_fmadd_ps(a4, b, c); a5 = _mm256_fmadd_ps(a5, b, c);
      a6 = _mm256_fmadd_ps(a6, b, c); a7 = _mm256_fmadd_ps(a7, b, c); a8 = _mm256_fmadd_ps(a8, b, c);
      a9 = _mm256_fmadd_ps(a9, b, c); a10 = _mm256_fmadd_ps(a10, b, c); a11 = _mm256_fmadd_ps(a11, b, c);
    }
    __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)),
                             _mm256_add_ps(_mm256_add_ps(a4, a5), _mm256_add_ps(a6, a7)));
    s = _mm256_add_ps(s, _mm256_add_ps(_mm256_add_ps(a8, a9), _mm256_add_ps(a10, a11)));
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    float t[4];
    _mm_storeu_ps(t, h);
    sink += t[0] + t[1] + t[2] + t[3];
  }
  return sink;
}

static void measure(const char* isa, int lanes, float (*fn)(long)) {
  const long iters = 100000000L;
  double best = 0, runs[3];
  float sink = 0;
  int nt = omp_get_max_threads();
  for (int rep = 0; rep < 3; rep++) {
    double t0 = omp_get_wtime();
    sink += fn(iters);
    double t = omp_get_wtime() - t0;
    runs[rep] = (double)iters * CHAINS * lanes * 2 * nt / t / 1e9;
    if (runs[rep] > best) best = runs[rep];
  }
  printf("{\"isa\": \"%s\", \"lanes\": %d, \"threads\": %d, \"gflops_best\": %.1f, \"runs\": [%.1f, %.1f, %.1f], "
         "\"sink\": %g}\n",
         isa, lanes, nt, best, runs[0], runs[1], runs[2], (double)sink);
  fflush(stdout);
}

int main(int argc, char** argv) {
  const char* only = argc > 1 ? argv[1] : "";
  __builtin_cpu_init();
  int have512 = __builtin_cpu_supports("avx512f");
  int have2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (have512 && (!*only || !strcmp(only, "avx512"))) measure("avx512", 16, run_avx512);
  if (have2 && (!*only || !strcmp(only, "avx2"))) measure("avx2", 8, run_avx2);
  if (!have512 && !have2) printf("{\"isa\": \"none\", \"gflops_best\": null}\n");
  return 0;
}
