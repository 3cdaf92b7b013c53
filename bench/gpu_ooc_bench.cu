// Data larger than the device budget (issue 6, item 6, third config): Lloyd iterations of
// the CUDA backend on host data under a device budget that forces streaming, as core::lloyd
// drives them (set_centroids -> assign -> update_centroids_kept). Prints one JSON object.
//
//   gpu_ooc_bench N K D f16|f32 iters budget_bytes certify(0|1) [compare_rows]
//
// Data: standard normal, generated on the device in pieces (counter-based, so any N) and
// copied into page-locked host memory (cudaMallocHost; pageable malloc when pinning fails,
// reported). Init: the first K rows. Measured in the same process:
//  * pinned_h2d_GBps: cudaMemcpyAsync host -> device of 1 GiB from pinned memory, best of 5;
//  * per iteration: wall ms, host-to-device bytes of the pass (StreamInfo::bytes_copied),
//    achieved GB/s = bytes / wall time, and its fraction of pinned_h2d_GBps;
//  * compute_ms_est: the same iterations on compare_rows rows (default 16M) resident on the
//    device, scaled by N / compare_rows: the pass's time if copies were free;
//  * transfer_ms_at_pinned: streamed bytes / pinned_h2d_GBps: the pass's time if compute were free.
// The pass is called transfer-bound when transfer_ms_at_pinned > compute_ms_est.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "core/backend.hpp"
#include "core/random.hpp"
#include "cuda/cuda_backend.hpp"
#include "cuda_check_or_exit.cuh"
#include "flashkm/error.hpp"

namespace {

template <class T>
__global__ void randn_kernel(T* out, std::int64_t n, std::int64_t offset, std::uint64_t seed) {
  const std::int64_t i = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const std::uint64_t g = static_cast<std::uint64_t>(offset + i);
  const double u1 = flashkm::core::counter_uniform(seed, 1, g) + 0x1p-54;
  const double u2 = flashkm::core::counter_uniform(seed, 2, g);
  const float z = static_cast<float>(sqrt(-2.0 * log(u1)) * cospi(2.0 * u2));
  if constexpr (sizeof(T) == 2) out[i] = __float2half_rn(z);
  else out[i] = z;
}

double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double pinned_h2d_gbps() {
  const std::size_t bytes = std::size_t(1) << 30;
  void *h = nullptr, *d = nullptr;
  CK(cudaMallocHost(&h, bytes));
  CK(cudaMalloc(&d, bytes));
  std::memset(h, 1, bytes);
  cudaStream_t s;
  CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  double best = 0;
  for (int r = 0; r < 5; ++r) {
    CK(cudaEventRecord(a, s));
    CK(cudaMemcpyAsync(d, h, bytes, cudaMemcpyHostToDevice, s));
    CK(cudaEventRecord(b, s));
    CK(cudaEventSynchronize(b));
    float ms = 0;
    CK(cudaEventElapsedTime(&ms, a, b));
    best = std::max(best, double(bytes) / (ms * 1e-3) / 1e9);
  }
  CK(cudaEventDestroy(a));
  CK(cudaEventDestroy(b));
  CK(cudaStreamDestroy(s));
  CK(cudaFree(d));
  CK(cudaFreeHost(h));
  return best;
}

struct Run {
  std::vector<double> ms, gbps;
  std::vector<long long> bytes;
  double attach_ms = 0;
  std::int64_t rechecked = 0;
  flashkm::cuda::StreamInfo info;
};

/// iters Lloyd iterations from init on x under budget (0: none); per-iteration wall time and
/// copied bytes.
Run lloyd(const flashkm::MatrixView& x, const std::vector<float>& init, int K, int iters, std::int64_t budget,
          bool certify) {
  Run r;
  flashkm::cuda::CudaOptions o;
  o.certify = certify;
  auto be = flashkm::cuda::make_cuda_backend(o);
  be->set_memory_budget(budget);
  CK(cudaDeviceSynchronize());
  double t = now_ms();
  be->attach(x, nullptr, flashkm::Metric::l2);
  r.attach_ms = now_ms() - t;
  std::vector<float> c = init, next(c.size());
  std::vector<double> w(static_cast<std::size_t>(K));
  bool host_current = true;  // as core::lloyd: centroids kept on the device when the update allows
  for (int it = 0; it < iters; ++it) {
    const std::int64_t b0 = flashkm::cuda::stream_info(*be).bytes_copied;
    t = now_ms();
    if (host_current) be->set_centroids(c.data(), K);
    const auto st = be->assign();
    double shift = 0;
    if (be->update_centroids_kept(K, flashkm::Metric::l2, w.data(), &shift)) {
      host_current = false;
    } else {
      if (!host_current) be->copy_centroids(c.data());
      be->update_centroids(K, flashkm::Metric::l2, c.data(), next.data(), w.data(), &shift);
      c.swap(next);
      host_current = true;
    }
    const double ms = now_ms() - t;
    const std::int64_t bytes = flashkm::cuda::stream_info(*be).bytes_copied - b0;
    r.ms.push_back(ms);
    r.bytes.push_back(bytes);
    r.gbps.push_back(double(bytes) / (ms * 1e-3) / 1e9);
    r.rechecked += st.n_rechecked;
    std::fprintf(stderr, "  iteration %d: %.1f ms, %.2f GB copied, %.1f GB/s\n", it + 1, ms, bytes / 1e9,
                 r.gbps.back());
  }
  r.info = flashkm::cuda::stream_info(*be);
  return r;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

std::string list(const std::vector<double>& v) {
  std::string s = "[";
  char buf[32];
  for (std::size_t i = 0; i < v.size(); ++i) {
    std::snprintf(buf, sizeof(buf), "%s%.2f", i ? "," : "", v[i]);
    s += buf;
  }
  return s + "]";
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 8) {
    std::fprintf(stderr, "usage: gpu_ooc_bench N K D f16|f32 iters budget_bytes certify [compare_rows]\n");
    return 1;
  }
  const std::int64_t N = std::atoll(argv[1]);
  const int K = std::atoi(argv[2]);
  const int D = std::atoi(argv[3]);
  const std::string dtype_arg = argv[4];
  if (dtype_arg != "f16" && dtype_arg != "f32") return std::fprintf(stderr, "dtype: f16 or f32, not '%s'\n", argv[4]), 1;
  const bool f16 = dtype_arg == "f16";
  const int iters = std::atoi(argv[5]);
  const std::int64_t budget = std::atoll(argv[6]);
  const bool certify = std::atoi(argv[7]) != 0;
  const std::int64_t compare_rows = std::min<std::int64_t>(N, argc > 8 ? std::atoll(argv[8]) : (1 << 24));
  const std::size_t esz = f16 ? 2 : 4;
  const std::size_t bytes = std::size_t(N) * D * esz;

  const double h2d = pinned_h2d_gbps();
  std::fprintf(stderr, "pinned host->device: %.1f GB/s\n", h2d);
  double t = now_ms();
  void* hx = nullptr;
  bool pinned = cudaMallocHost(&hx, bytes) == cudaSuccess;
  if (!pinned) {
    (void)cudaGetLastError();
    hx = std::malloc(bytes);
    if (!hx) {
      std::printf("{\"N\":%lld,\"error\":\"cannot allocate %zu bytes of host memory\"}\n", (long long)N, bytes);
      return 0;
    }
  }
  const double alloc_ms = now_ms() - t;
  // Generate on the device in pieces of 2^28 elements, copy each to the host.
  t = now_ms();
  const std::int64_t piece = std::int64_t(1) << 28, total = N * D;
  void* dbuf = nullptr;
  CK(cudaMalloc(&dbuf, std::size_t(std::min(piece, total)) * esz));
  for (std::int64_t off = 0; off < total; off += piece) {
    const std::int64_t n = std::min(piece, total - off);
    if (f16) randn_kernel<__half><<<(n + 255) / 256, 256>>>(static_cast<__half*>(dbuf), n, off, 1234);
    else randn_kernel<float><<<(n + 255) / 256, 256>>>(static_cast<float*>(dbuf), n, off, 1234);
    CK(cudaGetLastError());
    CK(cudaMemcpy(static_cast<char*>(hx) + off * esz, dbuf, std::size_t(n) * esz, cudaMemcpyDeviceToHost));
  }
  const double gen_ms = now_ms() - t;
  std::vector<float> init(std::size_t(K) * D);
  for (std::size_t i = 0; i < init.size(); ++i)
    init[i] = f16 ? __half2float(static_cast<const __half*>(hx)[i]) : static_cast<const float*>(hx)[i];
  std::fprintf(stderr, "host data: %.1f GB %s (alloc %.0f ms, generate %.0f ms)\n", bytes / 1e9,
               pinned ? "pinned" : "pageable", alloc_ms, gen_ms);
  const auto dt = f16 ? flashkm::DType::f16 : flashkm::DType::f32;
  try {
    // Streamed from host memory under the budget.
    const Run s = lloyd(flashkm::MatrixView::raw(hx, dt, N, D), init, K, iters, budget, certify);
    // The same iterations on compare_rows rows resident on the device: compute alone.
    CK(cudaFree(dbuf));
    CK(cudaMalloc(&dbuf, std::size_t(compare_rows) * D * esz));
    CK(cudaMemcpy(dbuf, hx, std::size_t(compare_rows) * D * esz, cudaMemcpyHostToDevice));
    std::fprintf(stderr, "resident comparison, %lld rows on the device:\n", (long long)compare_rows);
    const Run c = lloyd(flashkm::MatrixView::raw(dbuf, dt, compare_rows, D, 0, flashkm::Location::cuda, 0), init, K,
                        iters, 0, certify);
    // Iteration 1 of the streamed run also warms up (modules, workspaces): medians over 2..n.
    std::vector<double> sm(s.ms.begin() + (iters > 1), s.ms.end()), sg(s.gbps.begin() + (iters > 1), s.gbps.end());
    std::vector<double> cm(c.ms.begin() + (iters > 1), c.ms.end());
    const double ms = median(sm), gb = median(sg);
    const double compute_est = median(cm) * double(N) / double(compare_rows);
    const double streamed_bytes = double(s.info.rows - s.info.resident_rows) * D * esz;
    const double transfer_ms = streamed_bytes / (h2d * 1e9) * 1e3;
    std::printf(
        "{\"N\":%lld,\"K\":%d,\"D\":%d,\"dtype\":\"%s\",\"certify\":%d,\"iters\":%d,\"budget\":%lld,"
        "\"host_memory\":\"%s\",\"data_GB\":%.2f,\"pinned_h2d_GBps\":%.2f,\"streamed\":%d,\"direct\":%d,"
        "\"resident_rows\":%lld,\"chunk_rows\":%lld,\"chunks\":%lld,\"attach_ms\":%.1f,\"ms_per_iter\":%s,"
        "\"GBps_per_iter\":%s,\"ms_median\":%.2f,\"GBps_median\":%.2f,\"fraction_of_pinned\":%.3f,"
        "\"streamed_GB_per_pass\":%.2f,\"transfer_ms_at_pinned\":%.1f,\"compare_rows\":%lld,"
        "\"compare_ms_median\":%.2f,\"compute_ms_est\":%.1f,\"bound\":\"%s\",\"rechecked_per_iter\":%.1f}\n",
        (long long)N, K, D, f16 ? "float16" : "float32", certify ? 1 : 0, iters, (long long)budget,
        pinned ? "pinned" : "pageable", bytes / 1e9, h2d, int(s.info.streamed), int(s.info.direct),
        (long long)s.info.resident_rows, (long long)s.info.chunk_rows, (long long)s.info.chunks, s.attach_ms,
        list(s.ms).c_str(), list(s.gbps).c_str(), ms, gb, gb / h2d, streamed_bytes / 1e9, transfer_ms,
        (long long)compare_rows, median(cm), compute_est, transfer_ms > compute_est ? "transfer" : "compute",
        double(s.rechecked) / iters);
  } catch (const flashkm::Error& e) {
    std::printf("{\"N\":%lld,\"K\":%d,\"D\":%d,\"error\":\"%s\"}\n", (long long)N, K, D, e.what());
  }
  cudaFree(dbuf);
  if (pinned) cudaFreeHost(hx);
  else std::free(hx);
  return 0;
}
