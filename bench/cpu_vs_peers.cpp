// cpu_vs_peers: the flashkm side of bench/cpu_vs_peers.py.
//
// Runs flashkm's CPU backend on one data set and writes one JSON object to stdout:
//   lloyd        fit(init = given C0, tol = 0, max_iter = iters), best of R whole-call wall
//                times; s/iter = wall / n_iter (the driver stops early when no label changes,
//                so n_iter is reported), plus the per-iteration times the driver records
//   assign       predict() on the same data with the fitted model: one assign pass,
//                best of R; GFLOP/s-equivalent = 2 N K D / seconds
//   kmeanspp     fit(init = k-means++, max_iter = 1): wall, and wall minus the one Lloyd
//                iteration's recorded time as the estimate of the init alone
//   default_fit  fit() with the defaults (k-means++, tol = 1e-4, max_iter = 300)
// Human-readable notes go to stderr. The Python script computes every inertia it compares
// from the centroids written with --centroids-out / --default-centroids-out, with one
// float64 function for all libraries.
//
// Data: --data X.npy and --init C0.npy (2-D little-endian float32, C order, as numpy writes
// them); without --data it generates Gaussian blobs itself (--n --d --k; not the same arrays
// as the Python script, for standalone use only) and takes C0 = the first K rows.
//
//   cpu_vs_peers --data X.npy --init C0.npy --iters 10 --threads 2 --repeats 2
//                [--seed S] [--centroids-out C.npy] [--no-lloyd] [--no-assign]
//                [--kmeanspp] [--default-fit] [--default-centroids-out C.npy]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "flashkm/flashkm.hpp"

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// ---- .npy (format 1.0 / 2.0 / 3.0), 2-D float32 C-order only -----------------------------

struct Array2D {
  std::int64_t rows = 0, cols = 0;
  std::vector<float> data;
};

Array2D read_npy_f32(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot open " + path);
  char magic[6];
  f.read(magic, 6);
  if (!f || std::memcmp(magic, "\x93NUMPY", 6) != 0) throw std::runtime_error(path + ": not a .npy file");
  unsigned char ver[2];
  f.read(reinterpret_cast<char*>(ver), 2);
  std::uint32_t hlen = 0;
  if (ver[0] == 1) {
    unsigned char b[2];
    f.read(reinterpret_cast<char*>(b), 2);
    hlen = b[0] | (b[1] << 8);
  } else {
    unsigned char b[4];
    f.read(reinterpret_cast<char*>(b), 4);
    hlen = b[0] | (b[1] << 8) | (b[2] << 16) | (std::uint32_t(b[3]) << 24);
  }
  std::string header(hlen, '\0');
  f.read(header.data(), hlen);
  if (!f) throw std::runtime_error(path + ": truncated header");
  if (header.find("'descr': '<f4'") == std::string::npos)
    throw std::runtime_error(path + ": dtype must be little-endian float32 ('<f4'), header " + header);
  if (header.find("'fortran_order': False") == std::string::npos)
    throw std::runtime_error(path + ": must be C order");
  auto sp = header.find("'shape': (");
  if (sp == std::string::npos) throw std::runtime_error(path + ": no shape in header");
  sp += 10;
  auto ep = header.find(')', sp);
  std::string shape = header.substr(sp, ep - sp);
  std::vector<std::int64_t> dims;
  std::stringstream ss(shape);
  std::string tok;
  while (std::getline(ss, tok, ',')) {
    tok.erase(std::remove_if(tok.begin(), tok.end(), [](char c) { return c == ' ' || c == 'L'; }), tok.end());
    if (!tok.empty()) dims.push_back(std::stoll(tok));
  }
  if (dims.size() != 2) throw std::runtime_error(path + ": need a 2-D array, shape (" + shape + ")");
  Array2D a;
  a.rows = dims[0];
  a.cols = dims[1];
  a.data.resize(static_cast<std::size_t>(a.rows * a.cols));
  f.read(reinterpret_cast<char*>(a.data.data()), static_cast<std::streamsize>(a.data.size() * sizeof(float)));
  if (!f) throw std::runtime_error(path + ": truncated data");
  return a;
}

void write_npy_f32(const std::string& path, const float* p, std::int64_t rows, std::int64_t cols) {
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + std::to_string(rows) + ", " +
                       std::to_string(cols) + "), }";
  std::size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header.push_back('\n');
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) throw std::runtime_error("cannot write " + path);
  f.write("\x93NUMPY\x01\x00", 8);
  unsigned char len[2] = {static_cast<unsigned char>(header.size() & 0xff),
                          static_cast<unsigned char>(header.size() >> 8)};
  f.write(reinterpret_cast<char*>(len), 2);
  f.write(header.data(), static_cast<std::streamsize>(header.size()));
  f.write(reinterpret_cast<const char*>(p), static_cast<std::streamsize>(rows * cols * sizeof(float)));
  if (!f) throw std::runtime_error("write failed: " + path);
}

// ---- tiny JSON writer ----------------------------------------------------------------------

std::string jnum(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.10g", v);
  return buf;
}
std::string jstr(const std::string& s) {
  std::string o = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') o += '\\';
    if (static_cast<unsigned char>(c) < 0x20) {
      o += ' ';
      continue;
    }
    o += c;
  }
  return o + "\"";
}
std::string jarr(const std::vector<double>& v) {
  std::string o = "[";
  for (std::size_t i = 0; i < v.size(); ++i) o += (i ? ", " : "") + jnum(v[i]);
  return o + "]";
}

struct Obj {
  std::vector<std::pair<std::string, std::string>> kv;
  Obj& add(const std::string& k, const std::string& raw) {
    kv.emplace_back(k, raw);
    return *this;
  }
  Obj& num(const std::string& k, double v) { return add(k, jnum(v)); }
  Obj& str(const std::string& k, const std::string& v) { return add(k, jstr(v)); }
  std::string dump(int indent = 2) const {
    std::string pad(static_cast<std::size_t>(indent), ' ');
    std::string o = "{\n";
    for (std::size_t i = 0; i < kv.size(); ++i)
      o += pad + jstr(kv[i].first) + ": " + kv[i].second + (i + 1 < kv.size() ? ",\n" : "\n");
    return o + std::string(static_cast<std::size_t>(indent > 2 ? indent - 2 : 0), ' ') + "}";
  }
};

double median(std::vector<double> v) {
  if (v.empty()) return std::numeric_limits<double>::quiet_NaN();
  std::sort(v.begin(), v.end());
  std::size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : 0.5 * (v[m - 1] + v[m]);
}

std::vector<double> history_ms(const flashkm::Model& m) {
  std::vector<double> v;
  for (const auto& h : m.history) v.push_back(h.ms);
  return v;
}

struct Args {
  std::string data, init, centroids_out, default_centroids_out;
  std::int64_t n = 200000, d = 128, k = 256;
  int iters = 10, threads = 2, repeats = 2;
  std::uint64_t seed = 20261129;
  bool lloyd = true, assign = true, kmeanspp = false, default_fit = false;
};

[[noreturn]] void usage(const char* msg) {
  std::fprintf(stderr,
               "cpu_vs_peers: %s\nusage: cpu_vs_peers [--data X.npy --init C0.npy | --n N --d D --k K] "
               "[--iters 10] [--threads 2] [--repeats 2] [--seed S] [--centroids-out C.npy] [--no-lloyd] "
               "[--no-assign] [--kmeanspp] [--default-fit] [--default-centroids-out C.npy]\n",
               msg);
  std::exit(2);
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string s = argv[i];
    auto val = [&]() -> std::string {
      if (i + 1 >= argc) usage(("missing value after " + s).c_str());
      return argv[++i];
    };
    if (s == "--data") a.data = val();
    else if (s == "--init") a.init = val();
    else if (s == "--centroids-out") a.centroids_out = val();
    else if (s == "--default-centroids-out") a.default_centroids_out = val();
    else if (s == "--n") a.n = std::stoll(val());
    else if (s == "--d") a.d = std::stoll(val());
    else if (s == "--k") a.k = std::stoll(val());
    else if (s == "--iters") a.iters = std::stoi(val());
    else if (s == "--threads") a.threads = std::stoi(val());
    else if (s == "--repeats") a.repeats = std::max(1, std::stoi(val()));
    else if (s == "--seed") a.seed = std::stoull(val());
    else if (s == "--no-lloyd") a.lloyd = false;
    else if (s == "--no-assign") a.assign = false;
    else if (s == "--kmeanspp") a.kmeanspp = true;
    else if (s == "--default-fit") a.default_fit = true;
    else if (s == "-h" || s == "--help") usage("help");
    else usage(("unknown argument " + s).c_str());
  }
  if (a.data.empty() != a.init.empty()) usage("--data and --init go together");
  return a;
}

}  // namespace

int main(int argc, char** argv) try {
  Args a = parse(argc, argv);

  // ---- data ----
  Array2D X, C0;
  std::string data_desc;
  if (!a.data.empty()) {
    X = read_npy_f32(a.data);
    C0 = read_npy_f32(a.init);
    if (C0.cols != X.cols) throw std::runtime_error("init has D=" + std::to_string(C0.cols) +
                                                    ", data has D=" + std::to_string(X.cols));
    data_desc = a.data;
  } else {
    X.rows = a.n;
    X.cols = a.d;
    X.data.resize(static_cast<std::size_t>(a.n * a.d));
    std::mt19937_64 rng(a.seed);
    std::normal_distribution<float> nd(0.f, 1.f);
    std::vector<float> centers(static_cast<std::size_t>(a.k * a.d));
    for (auto& c : centers) c = nd(rng);
    std::uniform_int_distribution<std::int64_t> pick(0, a.k - 1);
    for (std::int64_t i = 0; i < a.n; ++i) {
      const float* c = &centers[static_cast<std::size_t>(pick(rng) * a.d)];
      for (std::int64_t j = 0; j < a.d; ++j) X.data[static_cast<std::size_t>(i * a.d + j)] = c[j] + 1.5f * nd(rng);
    }
    C0.rows = a.k;
    C0.cols = a.d;
    C0.data.assign(X.data.begin(), X.data.begin() + a.k * a.d);
    data_desc = "generated blobs (std::mt19937_64), C0 = first K rows";
  }
  const std::int64_t N = X.rows, D = X.cols, K = C0.rows;
  const double flop_per_iter = 2.0 * double(N) * double(K) * double(D);
  const auto xv = flashkm::MatrixView::of(X.data.data(), N, D);

  Obj out;
  out.str("library", "flashkm").str("version", flashkm::version()).str("simd", flashkm::cpu_simd_level());
  out.str("data", data_desc).num("N", double(N)).num("D", double(D)).num("K", double(K));
  out.num("iters", a.iters).num("threads", a.threads).num("repeats", a.repeats).num("seed", double(a.seed));
  out.num("gemm_flop_per_iter", flop_per_iter);

  flashkm::Model lloyd_model;
  bool have_model = false;

  // ---- Lloyd from the given init, tol = 0 ----
  if (a.lloyd) {
    flashkm::Params p;
    p.n_clusters = K;
    p.max_iter = a.iters;
    p.tol = 0.0;
    p.init = flashkm::InitMethod::given;
    p.seed = a.seed;
    p.n_threads = a.threads;
    flashkm::FitArgs fa;
    fa.init_centroids = C0.data.data();
    std::vector<double> walls;
    double best = std::numeric_limits<double>::infinity();
    for (int r = 0; r < a.repeats; ++r) {
      auto t0 = Clock::now();
      flashkm::Model m = flashkm::fit(xv, p, fa);
      double w = seconds_since(t0);
      walls.push_back(w);
      if (w < best) {
        best = w;
        lloyd_model = std::move(m);
      }
    }
    have_model = true;
    const int it = std::max(1, lloyd_model.n_iter);
    auto hms = history_ms(lloyd_model);
    double min_ms = hms.empty() ? NAN : *std::min_element(hms.begin(), hms.end());
    Obj o;
    o.add("wall_s_runs", jarr(walls)).num("wall_s_best", best).num("n_iter", lloyd_model.n_iter);
    o.add("converged", lloyd_model.converged ? "true" : "false");
    o.num("s_per_iter_wall", best / it).num("gflops_equiv_wall", flop_per_iter * it / best / 1e9);
    o.add("iter_ms", jarr(hms)).num("iter_ms_median", median(hms)).num("iter_ms_min", min_ms);
    o.num("gflops_equiv_iter_median", flop_per_iter / (median(hms) * 1e-3) / 1e9);
    o.num("inertia_reported", lloyd_model.inertia);
    out.add("lloyd", o.dump(4));
    if (!a.centroids_out.empty()) write_npy_f32(a.centroids_out, lloyd_model.centroids.data(), K, D);
    std::fprintf(stderr, "flashkm lloyd: best %.4f s, n_iter %d, %.4f s/iter, %.1f GFLOP/s-eq\n", best,
                 lloyd_model.n_iter, best / it, flop_per_iter * it / best / 1e9);
  }

  // ---- assign only: predict() = one fused assign pass ----
  if (a.assign) {
    flashkm::Model m;
    if (have_model) {
      m = lloyd_model;
    } else {
      m.n_clusters = K;
      m.n_features = D;
      m.centroids = C0.data;
      m.cluster_weight.assign(static_cast<std::size_t>(K), 1.0);
    }
    flashkm::PredictOptions po;
    po.n_threads = a.threads;
    std::vector<std::int32_t> labels(static_cast<std::size_t>(N));
    std::vector<double> walls;
    int reps = std::max(3, a.repeats);
    for (int r = 0; r < reps; ++r) {
      auto t0 = Clock::now();
      flashkm::predict(m, xv, labels.data(), nullptr, po);
      walls.push_back(seconds_since(t0));
    }
    double best = *std::min_element(walls.begin(), walls.end());
    Obj o;
    o.add("wall_s_runs", jarr(walls)).num("wall_s_best", best).num("gflops_equiv", flop_per_iter / best / 1e9);
    out.add("assign_predict", o.dump(4));
    std::fprintf(stderr, "flashkm assign (predict): %.4f s, %.1f GFLOP/s-eq\n", best, flop_per_iter / best / 1e9);
  }

  // ---- k-means++ init: fit(max_iter = 1) minus the recorded Lloyd iteration ----
  if (a.kmeanspp) {
    flashkm::Params p;
    p.n_clusters = K;
    p.max_iter = 1;
    p.seed = a.seed;
    p.n_threads = a.threads;
    std::vector<double> walls, inits;
    for (int r = 0; r < a.repeats; ++r) {
      auto t0 = Clock::now();
      flashkm::Model m = flashkm::fit(xv, p);
      double w = seconds_since(t0);
      double lloyd_s = 0;
      for (const auto& h : m.history) lloyd_s += h.ms * 1e-3;
      walls.push_back(w);
      inits.push_back(w - lloyd_s);
    }
    Obj o;
    o.str("method", "fit(init=k-means++, max_iter=1) wall; init_s = wall - recorded iteration ms");
    o.add("wall_s_runs", jarr(walls)).num("wall_s_best", *std::min_element(walls.begin(), walls.end()));
    o.add("init_s_runs", jarr(inits)).num("init_s_best", *std::min_element(inits.begin(), inits.end()));
    out.add("kmeanspp", o.dump(4));
    std::fprintf(stderr, "flashkm k-means++ init: %.4f s\n", *std::min_element(inits.begin(), inits.end()));
  }

  // ---- default fit: k-means++ then Lloyd to convergence (tol = 1e-4) ----
  if (a.default_fit) {
    flashkm::Params p;
    p.n_clusters = K;
    p.seed = a.seed;
    p.n_threads = a.threads;
    std::vector<double> walls;
    flashkm::Model best_m;
    double best = std::numeric_limits<double>::infinity();
    for (int r = 0; r < a.repeats; ++r) {
      auto t0 = Clock::now();
      flashkm::Model m = flashkm::fit(xv, p);
      double w = seconds_since(t0);
      walls.push_back(w);
      if (w < best) {
        best = w;
        best_m = std::move(m);
      }
    }
    auto hms = history_ms(best_m);
    double lloyd_s = 0;
    for (double v : hms) lloyd_s += v * 1e-3;
    Obj o;
    o.str("params", "init=k-means++, tol=1e-4, max_iter=300, n_init=1");
    o.add("wall_s_runs", jarr(walls)).num("wall_s_best", best).num("n_iter", best_m.n_iter);
    o.add("converged", best_m.converged ? "true" : "false");
    o.num("lloyd_s", lloyd_s).num("inertia_reported", best_m.inertia);
    out.add("default_fit", o.dump(4));
    if (!a.default_centroids_out.empty()) write_npy_f32(a.default_centroids_out, best_m.centroids.data(), K, D);
    std::fprintf(stderr, "flashkm default fit: %.4f s, n_iter %d, inertia %.6e\n", best, best_m.n_iter,
                 best_m.inertia);
  }

  std::printf("%s\n", out.dump(2).c_str());
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "cpu_vs_peers: %s\n", e.what());
  return 1;
}
