// flashkm side of bench/gpu_vs_flash_kmeans.py: Lloyd iterations through the CUDA backend
// (set_centroids -> assign -> update_centroids_kept), as core::lloyd drives them. update = host
// runs the base class's host path instead (sums to the host, means there: the pre-2026-11-29
// evening behaviour), for a same-run comparison. Wall-clock time per phase is reported.
// Batched configs (B > 1, device update) run through the batched backend, as fit_batched's
// driver (core/batched_fit.cpp) drives it: the same three phases over all B problems, the
// new centroids kept on the device (update_centroids_kept, no set_centroids); with
// `ragged`, problem b has n_b rows in [N/2, 3N/2) and k_b centroids in [K/2, 3K/2) (a
// deterministic spread, total rows about B*N; flops counted as sum 2 n_b k_b D).
// Data: standard normal on the device (counter-based), fp16 or fp32; init = first K rows
// of each problem (as the Python peers). Prints one JSON object per line.
//
//   gpu_bench B N K D dtype(f16|f32) iters precision(auto|fp16|bf16|tf32|fp32) certify(0|1|candidates|simt|fp64) [tile [device|host [equal|ragged]]]
//   certify: 1 the default cascade; candidates / simt / fp64 pick the certification cascade's
//   levels (cuda::CertifyCascade; the JSON's "cascade"); rows flagged, candidate pairs and
//   rows re-checked against all centroids are reported per iteration.
//   tile: 0 heuristic, 1 resident_128x128, 2 stream_128x256, 3 stream_128x128, 4 wgmma_sm90
//   (tf32 runs on the mma.sync configs 1-3; its heuristic: 1 for D <= 128, else 2)
//   (the batched path takes the heuristic's tile, as fit_batched does)
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <type_traits>
#include <vector>

#include "core/backend.hpp"
#include "core/batched_backend.hpp"
#include "core/random.hpp"
#include "cuda/batched_backend.hpp"
#include "cuda/cuda_backend.hpp"
#include "flashkm/error.hpp"
#include "cuda_check_or_exit.cuh"

namespace {

template <class T>
__global__ void randn_kernel(T* out, std::int64_t n, std::uint64_t seed) {
  const std::int64_t i = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const double u1 = flashkm::core::counter_uniform(seed, 1, i) + 0x1p-54;
  const double u2 = flashkm::core::counter_uniform(seed, 2, i);
  const float z = static_cast<float>(sqrt(-2.0 * log(u1)) * cospi(2.0 * u2));
  if constexpr (sizeof(T) == 2) out[i] = __float2half_rn(z);
  else out[i] = z;
}


double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

/// Problem b's rows and K: equal (N, K) or a deterministic ragged spread around them.
void sizes(int B, std::int64_t N, int K, bool ragged, std::vector<std::int64_t>& off, std::vector<std::int64_t>& ks) {
  off.assign(1, 0);
  ks.clear();
  for (int b = 0; b < B; ++b) {
    const std::uint64_t h = flashkm::core::splitmix64(std::uint64_t(b) + 77);
    const std::int64_t n = ragged ? N / 2 + std::int64_t(h % std::uint64_t(N)) : N;
    const std::int64_t k = ragged ? std::min<std::int64_t>(n, K / 2 + std::int64_t((h >> 32) % std::uint64_t(K))) : K;
    off.push_back(off.back() + n);
    ks.push_back(std::max<std::int64_t>(1, k));
  }
}

/// The batched configs through the batched backend (fit_batched's per-iteration calls).
int run_batched(int B, std::int64_t N, int K, int D, bool f16, int iters, const char* precision, bool certify,
                flashkm::cuda::CertifyCascade cascade, const char* cascade_name, bool ragged) {
  std::vector<std::int64_t> off, ks;
  sizes(B, N, K, ragged, off, ks);
  const std::int64_t rows = off.back(), elems = rows * D;
  const std::size_t esz = f16 ? 2 : 4;
  void* dx = nullptr;
  CK(cudaMalloc(&dx, elems * esz));
  if (f16) randn_kernel<__half><<<(elems + 255) / 256, 256>>>(static_cast<__half*>(dx), elems, 1234);
  else randn_kernel<float><<<(elems + 255) / 256, 256>>>(static_cast<float*>(dx), elems, 1234);
  CK(cudaDeviceSynchronize());
  std::vector<std::vector<float>> init(static_cast<std::size_t>(B));
  double flops = 0;
  for (int b = 0; b < B; ++b) {
    const std::size_t cnt = std::size_t(ks[b]) * D;
    init[b].resize(cnt);
    const char* src = static_cast<const char*>(dx) + std::size_t(off[b]) * D * esz;
    if (f16) {
      std::vector<__half> h(cnt);
      CK(cudaMemcpy(h.data(), src, cnt * 2, cudaMemcpyDeviceToHost));
      for (std::size_t i = 0; i < cnt; ++i) init[b][i] = __half2float(h[i]);
    } else {
      CK(cudaMemcpy(init[b].data(), src, cnt * 4, cudaMemcpyDeviceToHost));
    }
    flops += 2.0 * double(off[b + 1] - off[b]) * double(ks[b]) * D;
  }
  try {
    size_t free0 = 0, total = 0;
    CK(cudaMemGetInfo(&free0, &total));
    flashkm::cuda::CudaOptions o;
    o.precision = flashkm::parse_precision(precision);
    o.certify = certify;
    o.cascade = cascade;
    auto be = flashkm::cuda::make_cuda_batched_backend(o);
    std::vector<flashkm::core::ProblemData> problems(static_cast<std::size_t>(B));
    for (int b = 0; b < B; ++b)
      problems[b].x = flashkm::MatrixView::raw(static_cast<const char*>(dx) + std::size_t(off[b]) * D * esz,
                                               f16 ? flashkm::DType::f16 : flashkm::DType::f32, off[b + 1] - off[b], D,
                                               0, flashkm::Location::cuda, 0);
    be->attach(problems, flashkm::Metric::l2);
    std::vector<std::int64_t> all(static_cast<std::size_t>(B));
    for (int b = 0; b < B; ++b) all[b] = b;
    std::vector<std::vector<float>> c = init, next(c.size());
    std::vector<std::vector<double>> w(c.size());
    for (int b = 0; b < B; ++b) {
      next[b].resize(c[b].size());
      w[b].resize(static_cast<std::size_t>(ks[b]));
    }
    std::vector<flashkm::core::AssignStats> stats;
    std::vector<double> shift;
    std::int64_t rechecked = 0, rechecked_fp64 = 0, candidates = 0;
    double phase_ms[3] = {0, 0, 0};
    auto ptrs = [&](auto& v) {
      std::vector<std::remove_reference_t<decltype(v[0][0])>*> p(v.size());
      for (std::size_t b = 0; b < v.size(); ++b) p[b] = v[b].data();
      return p;
    };
    bool host_current = true;  // as the batched driver: centroids kept on the device when it can
    auto lloyd = [&](int n_it) {
      for (int it = 0; it < n_it; ++it) {
        const double t0 = now_ms();
        if (host_current) {
          const auto cur = ptrs(c);
          be->set_centroids(all, std::vector<const float*>(cur.begin(), cur.end()), ks);
        }
        const double t1 = now_ms();
        be->assign(all, false, stats);
        const double t2 = now_ms();
        for (const auto& st : stats) {
          rechecked += st.n_rechecked;
          rechecked_fp64 += st.n_rechecked_fp64;
          candidates += st.n_candidates;
        }
        if (be->update_centroids_kept(flashkm::Metric::l2, ptrs(w), shift)) {
          host_current = false;
        } else {
          if (!host_current) be->copy_centroids(ptrs(c));
          host_current = true;
          const auto cur = ptrs(c);
          be->update_centroids(flashkm::Metric::l2, std::vector<const float*>(cur.begin(), cur.end()), ptrs(next),
                               ptrs(w), shift);
          c.swap(next);
        }
        const double t3 = now_ms();
        phase_ms[0] += t1 - t0;
        phase_ms[1] += t2 - t1;
        phase_ms[2] += t3 - t2;
      }
    };
    lloyd(2);  // warm-up (module load, workspace)
    c = init;
    host_current = true;
    rechecked = rechecked_fp64 = candidates = 0;
    for (double& v : phase_ms) v = 0;
    CK(cudaDeviceSynchronize());
    const double t0 = now_ms();
    lloyd(iters);
    CK(cudaDeviceSynchronize());
    const double total_ms = now_ms() - t0;
    std::vector<double> a;
    for (int r = 0; r < 5; ++r) {
      const double s = now_ms();
      be->assign(all, false, stats);
      a.push_back(now_ms() - s);
    }
    std::sort(a.begin(), a.end());
    size_t free1 = 0;
    CK(cudaMemGetInfo(&free1, &total));
    std::printf(
        "{\"B\":%d,\"N\":%lld,\"K\":%d,\"D\":%d,\"dtype\":\"%s\",\"precision\":\"%s\",\"certify\":%d,\"tile\":0,"
        "\"update\":\"device\",\"api\":\"batched\",\"layout\":\"%s\",\"rows\":%lld,\"iters\":%d,\"ms_per_iter\":%.4f,"
        "\"set_ms_in_loop\":%.4f,\"assign_ms_in_loop\":%.4f,\"update_ms_in_loop\":%.4f,\"assign_ms_median\":%.4f,"
        "\"assign_tflops\":%.2f,\"iter_tflops_equiv\":%.2f,\"rechecked_per_iter\":%.1f,\"rechecked_fp64_per_iter\":%.1f,"
        "\"candidates_per_iter\":%.1f,\"cascade\":\"%s\",\"extra_MB_held\":%.2f,\"extra_MB_cudaMemGetInfo\":%.2f}\n",
        B, (long long)N, K, D, f16 ? "float16" : "float32", precision, certify ? 1 : 0, ragged ? "ragged" : "equal",
        (long long)rows, iters, total_ms / iters, phase_ms[0] / iters, phase_ms[1] / iters, phase_ms[2] / iters, a[2],
        flops / (a[2] * 1e-3) / 1e12, flops / (total_ms / iters * 1e-3) / 1e12, double(rechecked) / iters,
        double(rechecked_fp64) / iters, double(candidates) / iters, certify ? cascade_name : "none",
        flashkm::cuda::batched_device_bytes_held(*be) / 1048576.0,
        (double(free0) - double(free1)) / 1048576.0);
  } catch (const flashkm::Error& e) {
    std::printf("{\"B\":%d,\"N\":%lld,\"K\":%d,\"D\":%d,\"error\":\"%s\"}\n", B, (long long)N, K, D, e.what());
  }
  cudaFree(dx);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 9) {
    std::fprintf(stderr, "usage: gpu_bench B N K D f16|f32 iters auto|fp16|bf16|tf32|fp32 0|1|candidates|simt|fp64 [tile [device|host [equal|ragged]]]\n");
    return 1;
  }
  const int B = std::atoi(argv[1]);
  const std::int64_t N = std::atoll(argv[2]);
  const int K = std::atoi(argv[3]);
  const int D = std::atoi(argv[4]);
  const std::string dtype_arg = argv[5];
  // Anything else is an error, not float32: "fp16" once ran a whole A/B on fp32 data.
  if (dtype_arg != "f16" && dtype_arg != "f32") return std::fprintf(stderr, "dtype: f16 or f32, not '%s'\n", argv[5]), 1;
  const bool f16 = dtype_arg == "f16";
  const int iters = std::atoi(argv[6]);
  const flashkm::Precision prec = flashkm::parse_precision(argv[7]);
  const std::string certify_arg = argv[8];
  const bool certify = certify_arg != "0";
  using flashkm::cuda::CertifyCascade;
  const CertifyCascade cascade = certify_arg == "candidates" ? CertifyCascade::candidates
                                 : certify_arg == "simt"     ? CertifyCascade::simt
                                 : certify_arg == "fp64"     ? CertifyCascade::fp64
                                                             : CertifyCascade::automatic;
  if (!certify && certify_arg != "0") return std::fprintf(stderr, "certify: 0, 1, candidates, simt or fp64\n"), 1;
  const int tile = argc > 9 ? std::atoi(argv[9]) : 0;
  const std::string update_arg = argc > 10 ? argv[10] : "device";
  const std::string shape_arg = argc > 11 ? argv[11] : "equal";
  if (update_arg != "device" && update_arg != "host") return std::fprintf(stderr, "update: device or host\n"), 1;
  if (shape_arg != "equal" && shape_arg != "ragged") return std::fprintf(stderr, "batch shape: equal or ragged\n"), 1;
  const bool host_update = update_arg == "host";
  const bool ragged = shape_arg == "ragged";
  if (B > 1 && !host_update)
    return run_batched(B, N, K, D, f16, iters, argv[7], certify, cascade, certify_arg.c_str(), ragged);
  const std::int64_t rows = std::int64_t(B) * N;
  const std::int64_t elems = rows * D;
  void* dx = nullptr;
  CK(cudaMalloc(&dx, elems * (f16 ? 2 : 4)));
  if (f16) randn_kernel<__half><<<(elems + 255) / 256, 256>>>(static_cast<__half*>(dx), elems, 1234);
  else randn_kernel<float><<<(elems + 255) / 256, 256>>>(static_cast<float*>(dx), elems, 1234);
  CK(cudaDeviceSynchronize());
  // Init: first K rows of each problem, as fp32 on the host.
  std::vector<float> init(std::size_t(B) * K * D);
  for (int b = 0; b < B; ++b) {
    if (f16) {
      std::vector<__half> h(std::size_t(K) * D);
      CK(cudaMemcpy(h.data(), static_cast<__half*>(dx) + std::int64_t(b) * N * D, h.size() * 2, cudaMemcpyDeviceToHost));
      for (std::size_t i = 0; i < h.size(); ++i) init[std::size_t(b) * K * D + i] = __half2float(h[i]);
    } else {
      CK(cudaMemcpy(init.data() + std::size_t(b) * K * D, static_cast<float*>(dx) + std::int64_t(b) * N * D,
                    std::size_t(K) * D * 4, cudaMemcpyDeviceToHost));
    }
  }
  try {
    size_t free0 = 0, total = 0;
    CK(cudaMemGetInfo(&free0, &total));
    flashkm::cuda::CudaOptions o;
    o.precision = prec;
    o.certify = certify;
    o.batch = B;
    o.tile = static_cast<flashkm::cuda::TileConfig>(tile);
    o.cascade = cascade;
    auto be = flashkm::cuda::make_cuda_backend(o);
    be->attach(flashkm::MatrixView::raw(dx, f16 ? flashkm::DType::f16 : flashkm::DType::f32, rows, D, 0,
                                        flashkm::Location::cuda, 0),
               nullptr, flashkm::Metric::l2);
    const std::int64_t kt = std::int64_t(B) * K;
    std::vector<float> c = init, next(c.size());
    std::vector<double> w(static_cast<std::size_t>(kt));
    // cascade: rows flagged by tensor cores / re-checked in fp64 against all centroids / candidate pairs
    std::int64_t rechecked = 0, rechecked_fp64 = 0, candidates = 0;
    double phase_ms[3] = {0, 0, 0};  // set_centroids, assign, update (host wall clock)
    // As core::lloyd without a hook: the device update keeps the new centroids on the GPU
    // (update_centroids_kept) and the host copy is fetched only when the backend declines.
    bool host_current = true;
    auto lloyd = [&](int n_it) {
      for (int it = 0; it < n_it; ++it) {
        const double t0 = now_ms();
        if (host_current) be->set_centroids(c.data(), kt);
        const double t1 = now_ms();
        const auto st = be->assign();
        const double t2 = now_ms();
        rechecked += st.n_rechecked;
        rechecked_fp64 += st.n_rechecked_fp64;
        candidates += st.n_candidates;
        double shift = 0;
        if (host_update) {
          be->flashkm::core::Backend::update_centroids(kt, flashkm::Metric::l2, c.data(), next.data(), w.data(), &shift);
          c.swap(next);
        } else if (be->update_centroids_kept(kt, flashkm::Metric::l2, w.data(), &shift)) {
          host_current = false;
        } else {
          if (!host_current) be->copy_centroids(c.data());
          host_current = true;
          be->update_centroids(kt, flashkm::Metric::l2, c.data(), next.data(), w.data(), &shift);
          c.swap(next);
        }
        const double t3 = now_ms();
        phase_ms[0] += t1 - t0;
        phase_ms[1] += t2 - t1;
        phase_ms[2] += t3 - t2;
      }
    };
    lloyd(2);  // warm-up (module load, workspace)
    c = init;
    host_current = true;
    rechecked = 0;
    rechecked_fp64 = 0;
    candidates = 0;
    for (double& v : phase_ms) v = 0;
    CK(cudaDeviceSynchronize());
    const double t0 = now_ms();
    lloyd(iters);
    CK(cudaDeviceSynchronize());
    const double total_ms = now_ms() - t0;
    // Assign alone, repeated on the final centroids (median of 5).
    std::vector<double> a;
    for (int r = 0; r < 5; ++r) {
      const double s = now_ms();
      be->assign();
      a.push_back(now_ms() - s);
    }
    std::sort(a.begin(), a.end());
    size_t free1 = 0;
    CK(cudaMemGetInfo(&free1, &total));
    const double flops = 2.0 * double(rows) * K * D;
    std::printf(
        "{\"B\":%d,\"N\":%lld,\"K\":%d,\"D\":%d,\"dtype\":\"%s\",\"precision\":\"%s\",\"certify\":%d,\"tile\":%d,"
        "\"update\":\"%s\",\"iters\":%d,\"ms_per_iter\":%.4f,\"set_ms_in_loop\":%.4f,\"assign_ms_in_loop\":%.4f,"
        "\"update_ms_in_loop\":%.4f,\"assign_ms_median\":%.4f,"
        "\"assign_tflops\":%.2f,\"iter_tflops_equiv\":%.2f,\"rechecked_per_iter\":%.1f,\"rechecked_fp64_per_iter\":%.1f,"
        "\"candidates_per_iter\":%.1f,\"cascade\":\"%s\",\"extra_MB_held\":%.2f,"
        "\"extra_MB_cudaMemGetInfo\":%.2f}\n",
        B, (long long)N, K, D, f16 ? "float16" : "float32", argv[7], certify ? 1 : 0, tile,
        host_update ? "host" : "device", iters, total_ms / iters, phase_ms[0] / iters, phase_ms[1] / iters,
        phase_ms[2] / iters, a[2], flops / (a[2] * 1e-3) / 1e12, flops / (total_ms / iters * 1e-3) / 1e12,
        double(rechecked) / iters, double(rechecked_fp64) / iters, double(candidates) / iters,
        certify ? certify_arg.c_str() : "none", flashkm::cuda::device_bytes_held(*be) / 1048576.0,
        (double(free0) - double(free1)) / 1048576.0);
  } catch (const flashkm::Error& e) {
    std::printf("{\"B\":%d,\"N\":%lld,\"K\":%d,\"D\":%d,\"error\":\"%s\"}\n", B, (long long)N, K, D, e.what());
  }
  cudaFree(dx);
  return 0;
}
