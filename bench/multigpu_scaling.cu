// Multi-GPU scaling of fit() (Params::device_ids, NCCL): ms per Lloyd iteration on 1, 2 and 4
// GPUs (as many as present, up to --max-gpus) for the same data and the same given init.
// Data: standard normal fp16 generated on GPU 0 (counter-based, as bench/gpu_bench.cu);
// fit() reads it there (GPU 0's shard in place, the others' shards copied to their GPU).
// Init: the first K rows. tol = 0 and max_iter = --iters: every run does the same number of
// iterations. certify = false: certified mode times the fp64 re-check kernel, not scaling
// (docs/CUDA.md); the 1-vs-n-GPU agreement is reported from inertia and centroids instead.
// ms/iter = median of Model::history[i].ms over the iterations after the first (the first
// pays one-time allocations). Rows: 1 GPU plain fit; then through the distributed/NCCL path
// on 1 GPU (its overhead) and n GPUs, once per update path of --updates: "host" = the host
// path of the Lloyd update (FLASHKM_DISTRIBUTED_HOST_UPDATE=1 set around the fit: sums to
// the host, reduced there, centroids divided there), "device" = the device-resident update
// (sums reduced over NCCL in place, centroids finished on each GPU). All host rows of a
// config run before its device rows, so that a failure of the newer path cannot cost the
// reference numbers (the rows are written after each run). Device rows also report how
// far their centroids are from the host row's on as many GPUs ("bitwise" when equal).
// Writes multigpu_scaling.json and .md into --out.
//
//   multigpu_scaling --out DIR [--iters 6] [--max-gpus 4] [--configs 64M:8192,16M:65536] [--d 128]
//                    [--updates host,device]
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <nccl.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "core/multi_gpu.hpp"
#include "core/random.hpp"
#include "flashkm/error.hpp"
#include "flashkm/kmeans.hpp"
#include "cuda_check_or_exit.cuh"

namespace {

__global__ void randn_half(__half* out, std::int64_t n, std::uint64_t seed) {
  for (std::int64_t i = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += std::int64_t(gridDim.x) * blockDim.x) {
    const double u1 = flashkm::core::counter_uniform(seed, 1, i) + 0x1p-54;
    const double u2 = flashkm::core::counter_uniform(seed, 2, i);
    out[i] = __float2half_rn(static_cast<float>(sqrt(-2.0 * log(u1)) * cospi(2.0 * u2)));
  }
}

__global__ void half_to_float(const __half* in, std::int64_t n, float* out) {
  for (std::int64_t i = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += std::int64_t(gridDim.x) * blockDim.x)
    out[i] = __half2float(in[i]);
}


double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::int64_t parse_count(const std::string& s) {  // 64M, 16M, 500k, 1000
  const char u = s.empty() ? '\0' : s.back();
  const double v = std::atof(s.c_str());
  if (u == 'M' || u == 'm') return static_cast<std::int64_t>(v * 1024 * 1024);
  if (u == 'k' || u == 'K') return static_cast<std::int64_t>(v * 1024);
  return static_cast<std::int64_t>(v);
}

struct Config {
  std::string name;
  std::int64_t n = 0, k = 0;
};

struct Row {
  Config cfg;
  std::string path;  // "plain", "nccl-host" or "nccl-dev" (the update path)
  int gpus = 0;
  std::string vs_host = "-";  // nccl-dev rows: "bitwise", or the largest relative centroid difference
  double ms_median = 0, ms_mean = 0, fit_s = 0, inertia = 0, speedup = 0, inertia_rel = 0, centroid_rel = 0;
  int iters = 0;
  std::string error;
};

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

}  // namespace

int main(int argc, char** argv) {
  std::string out_dir = ".", configs = "64M:8192,16M:65536", updates = "host,device";
  int iters = 6, max_gpus = 4;
  std::int64_t d = 128;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i], v = argv[i + 1];
    if (a == "--out") out_dir = v;
    else if (a == "--iters") iters = std::atoi(v.c_str());
    else if (a == "--max-gpus") max_gpus = std::atoi(v.c_str());
    else if (a == "--configs") configs = v;
    else if (a == "--d") d = std::atoll(v.c_str());
    else if (a == "--updates") updates = v;
    else {
      std::fprintf(stderr, "unknown option %s\n", a.c_str());
      return 1;
    }
  }
  const bool run_host = updates.find("host") != std::string::npos;
  const bool run_device = updates.find("device") != std::string::npos;
  if (!run_host && !run_device) {
    std::fprintf(stderr, "--updates lists neither host nor device: %s\n", updates.c_str());
    return 1;
  }
  std::vector<Config> cfgs;
  for (std::size_t p = 0; p < configs.size();) {
    std::size_t q = configs.find(',', p);
    if (q == std::string::npos) q = configs.size();
    const std::string item = configs.substr(p, q - p);
    const std::size_t c = item.find(':');
    cfgs.push_back({"N" + item.substr(0, c) + " K" + item.substr(c + 1) + " D" + std::to_string(d) + " fp16",
                    parse_count(item.substr(0, c)), parse_count(item.substr(c + 1))});
    p = q + 1;
  }
  int count = 0;
  CK(cudaGetDeviceCount(&count));
  int nccl_version = 0;
  ncclGetVersion(&nccl_version);
  cudaDeviceProp prop{};
  CK(cudaGetDeviceProperties(&prop, 0));
  std::vector<int> gpu_counts = {1};
  for (int g : {2, 4, 8})
    if (g <= count && g <= max_gpus) gpu_counts.push_back(g);
  std::printf("%d x %s, NCCL %d, NCCL_NVLS_ENABLE=%s, iters %d\n", count, prop.name, nccl_version,
              std::getenv("NCCL_NVLS_ENABLE") ? std::getenv("NCCL_NVLS_ENABLE") : "(unset)", iters);

  std::vector<Row> rows;
  // Rewritten after every run: a run cut short by the time limit leaves the rows so far.
  auto write_results = [&]() -> bool {
    const std::string json_path = out_dir + "/multigpu_scaling.json", md_path = out_dir + "/multigpu_scaling.md";
    FILE* j = std::fopen(json_path.c_str(), "w");
    FILE* md = std::fopen(md_path.c_str(), "w");
    if (!j || !md) {
      std::fprintf(stderr, "cannot write into %s\n", out_dir.c_str());
      if (j) std::fclose(j);
      if (md) std::fclose(md);
      return false;
    }
    std::fprintf(j, "{\"gpu\": \"%s\", \"gpus_present\": %d, \"nccl_version\": %d, \"iters\": %d, \"certify\": false, "
                 "\"dtype\": \"fp16\", \"runs\": [\n", prop.name, count, nccl_version, iters);
    std::fprintf(md, "# Multi-GPU scaling (%d x %s, NCCL %d)\n\nfit() from the same given init (first K rows), "
                 "%d iterations, tol 0, fp16 standard-normal data on GPU 0, certify off. ms/iter = median over "
                 "iterations 2..%d. speed-up vs the plain 1-GPU fit; rel = |inertia - 1 GPU| / inertia; cent = "
                 "largest relative centroid difference vs 1 GPU. path: nccl-host = the host update path "
                 "(FLASHKM_DISTRIBUTED_HOST_UPDATE=1), nccl-dev = the device-resident update; vs host = nccl-dev's "
                 "centroids against nccl-host's on as many GPUs.\n\n"
                 "| config | path | GPUs | ms/iter | speed-up | fit s | rel inertia | cent | vs host |\n"
                 "|---|---|---|---|---|---|---|---|---|\n", count, prop.name, nccl_version, iters, iters);
    for (std::size_t i = 0; i < rows.size(); ++i) {
      const Row& r = rows[i];
      std::string err;
      for (char c : r.error) err += (c == '"' || c == '\\') ? '\'' : c;
      std::fprintf(j, "  {\"config\": \"%s\", \"n\": %lld, \"k\": %lld, \"d\": %lld, \"path\": \"%s\", \"gpus\": %d, "
                   "\"iterations\": %d, \"ms_per_iter_median\": %.4f, \"ms_per_iter_mean\": %.4f, \"speedup\": %.4f, "
                   "\"fit_s\": %.3f, \"inertia\": %.17g, \"inertia_rel_vs_1gpu\": %.3e, \"centroid_rel_vs_1gpu\": %.3e, "
                   "\"vs_host_update\": \"%s\", \"error\": \"%s\"}%s\n",
                   r.cfg.name.c_str(), (long long)r.cfg.n, (long long)r.cfg.k, (long long)d, r.path.c_str(), r.gpus,
                   r.iters, r.ms_median, r.ms_mean, r.speedup, r.fit_s, r.inertia, r.inertia_rel, r.centroid_rel,
                   r.vs_host.c_str(), err.c_str(), i + 1 < rows.size() ? "," : "");
      if (r.error.empty())
        std::fprintf(md, "| %s | %s | %d | %.1f | %.2f | %.1f | %.1e | %.1e | %s |\n", r.cfg.name.c_str(),
                     r.path.c_str(), r.gpus, r.ms_median, r.speedup, r.fit_s, r.inertia_rel, r.centroid_rel,
                     r.vs_host.c_str());
      else
        std::fprintf(md, "| %s | %s | %d | error: %s | | | | | |\n", r.cfg.name.c_str(), r.path.c_str(), r.gpus,
                     err.c_str());
    }
    std::fprintf(j, "]}\n");
    std::fclose(j);
    std::fclose(md);
    return true;
  };
  for (const Config& cfg : cfgs) {
    CK(cudaSetDevice(0));
    __half* x = nullptr;
    const std::int64_t elems = cfg.n * d;
    CK(cudaMalloc(&x, elems * sizeof(__half)));
    randn_half<<<4096, 256>>>(x, elems, 42);
    float* c0_dev = nullptr;
    CK(cudaMalloc(&c0_dev, cfg.k * d * sizeof(float)));
    half_to_float<<<1024, 256>>>(x, cfg.k * d, c0_dev);
    std::vector<float> c0(static_cast<std::size_t>(cfg.k * d));
    CK(cudaMemcpy(c0.data(), c0_dev, c0.size() * 4, cudaMemcpyDeviceToHost));
    CK(cudaFree(c0_dev));
    const flashkm::MatrixView view =
        flashkm::MatrixView::raw(x, flashkm::DType::f16, cfg.n, d, 0, flashkm::Location::cuda, 0);

    std::vector<float> base_centroids;
    double base_ms = 0, base_inertia = 0;
    std::vector<std::pair<std::string, int>> runs = {{"plain", 1}};
    for (const char* path : {"nccl-host", "nccl-dev"})
      if (std::string(path) == "nccl-host" ? run_host : run_device)
        for (int g : gpu_counts) runs.push_back({path, g});  // also 1 GPU: the NCCL path's overhead
    std::vector<std::vector<float>> host_centroids(9);  // by GPU count: the nccl-host row's
    for (const auto& [path, g] : runs) {
      Row r;
      r.cfg = cfg;
      r.path = path;
      r.gpus = g;
      flashkm::Params p;
      p.device = flashkm::Device::cuda;
      p.n_clusters = cfg.k;
      p.init = flashkm::InitMethod::given;
      p.max_iter = iters;
      p.tol = 0;
      p.certify = false;
      for (int i = 0; i < g; ++i) p.device_ids.push_back(i);
      flashkm::FitArgs a;
      a.init_centroids = c0.data();
      const auto t0 = std::chrono::steady_clock::now();
      try {
        flashkm::Model m;
        if (path == "plain") {
          p.device_ids.clear();
          m = flashkm::fit(view, p, a);
        } else {
          // The switch is read when the fit builds its backends; unset again whatever happens.
          struct HostUpdate {
            explicit HostUpdate(bool on) : on(on) {
              if (on) setenv("FLASHKM_DISTRIBUTED_HOST_UPDATE", "1", 1);
            }
            ~HostUpdate() {
              if (on) unsetenv("FLASHKM_DISTRIBUTED_HOST_UPDATE");
            }
            bool on;
          } host_update(path == "nccl-host");
          m = flashkm::core::fit_multi_gpu(view, p, a);
        }
        r.fit_s = seconds_since(t0);
        std::vector<double> ms;
        for (std::size_t i = 0; i < m.history.size(); ++i)
          if (i > 0 || m.history.size() == 1) ms.push_back(m.history[i].ms);
        r.iters = static_cast<int>(m.history.size());
        r.ms_median = median(ms);
        for (double v : ms) r.ms_mean += v / ms.size();
        r.inertia = m.inertia;
        if (path == "plain") {
          base_ms = r.ms_median;
          base_inertia = m.inertia;
          base_centroids = m.centroids;
        }
        r.speedup = base_ms > 0 ? base_ms / r.ms_median : 0;
        r.inertia_rel = base_inertia != 0 ? std::fabs(m.inertia - base_inertia) / std::fabs(base_inertia) : 0;
        for (std::size_t i = 0; i < std::min(base_centroids.size(), m.centroids.size()); ++i) {
          const double a0 = base_centroids[i], b0 = m.centroids[i];
          r.centroid_rel = std::max(r.centroid_rel, std::fabs(a0 - b0) / std::max({std::fabs(a0), std::fabs(b0), 1e-3}));
        }
        if (path == "nccl-host") host_centroids[static_cast<std::size_t>(g)] = m.centroids;
        const std::vector<float>& hc = host_centroids[static_cast<std::size_t>(g)];
        if (path == "nccl-dev" && !hc.empty() && hc.size() == m.centroids.size()) {
          double rel = 0;
          for (std::size_t i = 0; i < hc.size(); ++i)
            rel = std::max(rel, std::fabs(double(hc[i]) - m.centroids[i]) /
                                    std::max({std::fabs(double(hc[i])), std::fabs(double(m.centroids[i])), 1e-3}));
          char buf[64];
          std::snprintf(buf, sizeof buf, "max rel %.1e", rel);
          r.vs_host = std::memcmp(hc.data(), m.centroids.data(), hc.size() * sizeof(float)) == 0 ? "bitwise" : buf;
        }
      } catch (const std::exception& e) {
        r.fit_s = seconds_since(t0);
        r.error = e.what();
      }
      std::printf("%-26s %-9s %d GPU  %9.2f ms/iter (mean %9.2f)  x%5.2f  fit %6.1f s  inertia %.10g  rel %.2e  "
                  "cent %.2e  vs host %s %s\n",
                  cfg.name.c_str(), path.c_str(), g, r.ms_median, r.ms_mean, r.speedup, r.fit_s, r.inertia,
                  r.inertia_rel, r.centroid_rel, r.vs_host.c_str(), r.error.c_str());
      std::fflush(stdout);
      rows.push_back(r);
      write_results();
    }
    CK(cudaSetDevice(0));
    CK(cudaFree(x));
  }

  if (!write_results()) return 1;
  std::printf("wrote %s/multigpu_scaling.{json,md}\n", out_dir.c_str());
  return 0;
}
