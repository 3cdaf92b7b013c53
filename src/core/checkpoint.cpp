// Checkpoint file format, version 1: see docs/FORMAT.md ("Checkpoint file") for the layout.
// The offsets below must stay in step with that document. The two sections that hold
// centroids and histories are model files (Model::to_bytes), so they are written and checked
// by the same code as models, with their own checksums.
#include "core/checkpoint.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>

#include "flashkm/error.hpp"
#include "flashkm/model.hpp"
#include "io/atomic_file.hpp"
#include "io/byte_io.hpp"
#include "io/crc32c.hpp"
#include "io/mapped_file.hpp"

namespace flashkm::core {
namespace {

using io::load_le;

constexpr char kMagic[8] = {'F', 'K', 'M', 'C', 'K', 'P', 'T', '\0'};
constexpr std::uint32_t kVersion = 1;
constexpr std::size_t kOffVersion = 8;
constexpr std::size_t kOffFingerprint = 16;
constexpr std::size_t kOffRun = 100;
constexpr std::size_t kOffBestBytes = 112;
constexpr std::size_t kOffRunBytes = 120;
constexpr std::size_t kHeaderBytes = 128;
constexpr std::size_t kTrailerBytes = 4;
constexpr std::int64_t kSampleRows = 64;

void put_fingerprint(io::ByteWriter& w, const FitFingerprint& f) {
  w.put(f.n);
  w.put(f.d);
  w.put(f.k);
  w.put(f.seed);
  w.put(f.tol);
  w.put(f.oversampling);
  w.put(f.max_iter);
  w.put(f.n_init);
  w.put(f.n_local_trials);
  w.put(f.parallel_rounds);
  for (std::uint8_t b : {f.dtype, f.metric, f.init, f.device, f.precision, f.certify, f.weighted, std::uint8_t{0}})
    w.put(b);
  w.put(f.data_crc);
  w.put(f.weights_crc);
  w.put(f.init_crc);
}

FitFingerprint get_fingerprint(const std::uint8_t* p) {
  FitFingerprint f;
  f.n = load_le<std::int64_t>(p + 0);
  f.d = load_le<std::int64_t>(p + 8);
  f.k = load_le<std::int64_t>(p + 16);
  f.seed = load_le<std::uint64_t>(p + 24);
  f.tol = load_le<double>(p + 32);
  f.oversampling = load_le<double>(p + 40);
  f.max_iter = load_le<std::int32_t>(p + 48);
  f.n_init = load_le<std::int32_t>(p + 52);
  f.n_local_trials = load_le<std::int32_t>(p + 56);
  f.parallel_rounds = load_le<std::int32_t>(p + 60);
  f.dtype = p[64];
  f.metric = p[65];
  f.init = p[66];
  f.device = p[67];
  f.precision = p[68];
  f.certify = p[69];
  f.weighted = p[70];
  f.data_crc = load_le<std::uint32_t>(p + 72);
  f.weights_crc = load_le<std::uint32_t>(p + 76);
  f.init_crc = load_le<std::uint32_t>(p + 80);
  return f;
}

/// Error(invalid_argument) naming the first field in which the checkpoint's fit differs.
void check_same_fit(const FitFingerprint& have, const FitFingerprint& want) {
  auto same = [](const char* what, auto in_file, auto now) {
    FLASHKM_CHECK(in_file == now, invalid_argument, "it was written by another fit: ", what, " is ", in_file,
                  " there and ", now, " here");
  };
  same("n_samples", have.n, want.n);
  same("n_features", have.d, want.d);
  same("dtype code", int(have.dtype), int(want.dtype));
  same("n_clusters", have.k, want.k);
  same("metric code", int(have.metric), int(want.metric));
  same("init code", int(have.init), int(want.init));
  same("seed", have.seed, want.seed);
  same("n_init", have.n_init, want.n_init);
  same("max_iter", have.max_iter, want.max_iter);
  same("tol", have.tol, want.tol);
  same("n_local_trials", have.n_local_trials, want.n_local_trials);
  same("parallel_rounds", have.parallel_rounds, want.parallel_rounds);
  same("oversampling", have.oversampling, want.oversampling);
  same("device code", int(have.device), int(want.device));
  same("precision code", int(have.precision), int(want.precision));
  same("certify", have.certify != 0, want.certify != 0);
  same("sample_weight given", have.weighted != 0, want.weighted != 0);
  same("the checksum of sampled data rows", have.data_crc, want.data_crc);
  same("the checksum of sample_weight", have.weights_crc, want.weights_crc);
  same("the checksum of the init centroids", have.init_crc, want.init_crc);
}

Model as_model(const FitFingerprint& fp, std::vector<float> centroids, std::vector<double> weights, double inertia,
               int n_iter, bool converged, std::vector<IterationInfo> history) {
  Model m;
  m.n_clusters = fp.k;
  m.n_features = fp.d;
  m.metric = static_cast<Metric>(fp.metric);
  m.centroids = std::move(centroids);
  m.cluster_weight = std::move(weights);
  m.inertia = inertia;
  m.n_iter = n_iter;
  m.converged = converged;
  m.seed = fp.seed;
  m.init = static_cast<InitMethod>(fp.init);
  m.history = std::move(history);
  return m;
}

Model section_model(const std::uint8_t* p, std::size_t n, const char* what) {
  try {
    return Model::from_bytes(p, n);
  } catch (const Error& e) {
    FLASHKM_FAIL(format, "its ", what, " section is damaged: ", e.what());
  }
}

}  // namespace

FitFingerprint fingerprint(const MatrixView& x, const Params& p, const float* weights, const float* init_centroids) {
  FitFingerprint f;
  f.n = x.rows;
  f.d = x.cols;
  f.k = p.n_clusters;
  f.seed = p.seed;
  f.tol = p.tol;
  f.oversampling = p.oversampling;
  f.max_iter = p.max_iter;
  f.n_init = p.n_init;
  f.n_local_trials = p.n_local_trials;
  f.parallel_rounds = p.parallel_rounds;
  f.dtype = static_cast<std::uint8_t>(x.dtype);
  f.metric = static_cast<std::uint8_t>(p.metric);
  f.init = static_cast<std::uint8_t>(p.init);
  f.device = static_cast<std::uint8_t>(p.device);
  f.precision = static_cast<std::uint8_t>(p.precision);
  f.certify = p.certify ? 1 : 0;
  f.weighted = weights ? 1 : 0;
  // Host memory only: the driver never reads rows of device data (it stays on the device).
  if (x.where == Location::host) {
    // Evenly spaced rows, first and last included: touching 64 rows costs 64 page reads of a
    // mapped file, however large; a different file almost surely differs in one of them.
    const std::size_t row_bytes = static_cast<std::size_t>(x.cols) * dtype_size(x.dtype);
    const std::int64_t m = std::min(x.rows, kSampleRows);
    for (std::int64_t s = 0; s < m; ++s) {
      const std::int64_t i = m == 1 ? 0 : s * (x.rows - 1) / (m - 1);
      f.data_crc = io::crc32c(x.row(i), row_bytes, f.data_crc);
    }
    if (weights) f.weights_crc = io::crc32c(weights, static_cast<std::size_t>(x.rows) * sizeof(float));
  }
  if (init_centroids)
    f.init_crc = io::crc32c(init_centroids, static_cast<std::size_t>(p.n_clusters * x.cols) * sizeof(float));
  return f;
}

std::vector<std::uint8_t> checkpoint_to_bytes(const FitFingerprint& fp, const CheckpointState& s) {
  std::vector<std::uint8_t> best, run;
  if (s.best_run >= 0)
    best = as_model(fp, s.best.centroids, s.best.cluster_weight, s.best.inertia, s.best.n_iter, s.best.converged,
                    s.best.history)
               .to_bytes();
  if (s.iteration > 0) {
    FLASHKM_ASSERT(s.previous.size() == s.centroids.size() && static_cast<int>(s.history.size()) == s.iteration,
                   "checkpoint state");
    run = as_model(fp, s.centroids, std::vector<double>(static_cast<std::size_t>(fp.k), 0.0), 0.0, s.iteration,
                   false, s.history)
              .to_bytes();
  }
  io::ByteWriter w(kHeaderBytes + best.size() + run.size() + s.previous.size() * 4 + kTrailerBytes);
  w.put_bytes(kMagic, sizeof kMagic);
  w.put(kVersion);
  w.put(std::uint32_t{0});
  put_fingerprint(w, fp);
  FLASHKM_ASSERT(w.size() == kOffRun, "checkpoint header layout");
  w.put(static_cast<std::int32_t>(s.run));
  w.put(static_cast<std::int32_t>(s.iteration));
  w.put(static_cast<std::int32_t>(s.best_run));
  w.put(static_cast<std::uint64_t>(best.size()));
  w.put(static_cast<std::uint64_t>(run.size()));
  FLASHKM_ASSERT(w.size() == kHeaderBytes, "checkpoint header size");
  w.put_bytes(best.data(), best.size());
  w.put_bytes(run.data(), run.size());
  if (s.iteration > 0) w.put_array(s.previous.data(), s.previous.size());
  w.put(io::crc32c(w.data(), w.size()));
  return w.take();
}

CheckpointState checkpoint_from_bytes(const std::uint8_t* data, std::size_t size, const FitFingerprint& want) {
  // Outside in, as for model files: what the file is, its version, whether it is intact,
  // whether it belongs to this fit, and only then its contents.
  FLASHKM_CHECK(size >= sizeof kMagic && std::memcmp(data, kMagic, sizeof kMagic) == 0, format,
                "not a flashkm checkpoint file (bad magic)");
  FLASHKM_CHECK(size >= kHeaderBytes + kTrailerBytes, format, "it is truncated (", size, " bytes)");
  const auto version = load_le<std::uint32_t>(data + kOffVersion);
  FLASHKM_CHECK(version == kVersion, format, "checkpoint format version ", version,
                " is not supported (this build reads version ", kVersion, ")");
  FLASHKM_CHECK(load_le<std::uint32_t>(data + size - kTrailerBytes) == io::crc32c(data, size - kTrailerBytes),
                format, "it is corrupted or truncated (checksum mismatch)");
  check_same_fit(get_fingerprint(data + kOffFingerprint), want);

  CheckpointState s;
  s.run = load_le<std::int32_t>(data + kOffRun);
  s.iteration = load_le<std::int32_t>(data + kOffRun + 4);
  s.best_run = load_le<std::int32_t>(data + kOffRun + 8);
  const auto best_bytes = load_le<std::uint64_t>(data + kOffBestBytes);
  const auto run_bytes = load_le<std::uint64_t>(data + kOffRunBytes);
  const std::size_t kd = static_cast<std::size_t>(want.k * want.d);
  const std::uint64_t prev_bytes = s.iteration > 0 ? kd * 4 : 0;
  const std::uint64_t body = size - kHeaderBytes - kTrailerBytes;
  const int runs = want.init == static_cast<std::uint8_t>(InitMethod::given) ? 1 : want.n_init;
  FLASHKM_CHECK(s.run >= 0 && s.run <= runs && s.iteration >= 0 && s.iteration <= want.max_iter &&
                    (s.run < runs || s.iteration == 0) && s.best_run >= -1 && s.best_run < s.run &&
                    (s.best_run >= 0) == (best_bytes > 0) && (s.iteration > 0) == (run_bytes > 0) &&
                    best_bytes <= body && run_bytes <= body && best_bytes + run_bytes + prev_bytes == body,
                format, "it is invalid (run ", s.run, ", iteration ", s.iteration, ", best run ", s.best_run,
                ", section sizes ", best_bytes, " + ", run_bytes, " + ", prev_bytes, " of ", body, " bytes)");
  const std::uint8_t* p = data + kHeaderBytes;
  if (s.best_run >= 0) {
    Model b = section_model(p, best_bytes, "best-run");
    FLASHKM_CHECK(b.n_clusters == want.k && b.n_features == want.d, format, "its best-run section has shape (",
                  b.n_clusters, ", ", b.n_features, ")");
    s.best.centroids = std::move(b.centroids);
    s.best.cluster_weight = std::move(b.cluster_weight);
    s.best.inertia = b.inertia;
    s.best.n_iter = b.n_iter;
    s.best.converged = b.converged;
    s.best.history = std::move(b.history);
    p += best_bytes;
  }
  if (s.iteration > 0) {
    Model r = section_model(p, run_bytes, "current-run");
    FLASHKM_CHECK(r.n_clusters == want.k && r.n_features == want.d && r.n_iter == s.iteration &&
                      static_cast<int>(r.history.size()) == s.iteration,
                  format, "its current-run section does not match its header (shape (", r.n_clusters, ", ",
                  r.n_features, "), ", r.history.size(), " iterations)");
    s.centroids = std::move(r.centroids);
    s.history = std::move(r.history);
    p += run_bytes;
    s.previous.resize(kd);
    std::memcpy(s.previous.data(), p, kd * 4);
    for (std::size_t t = 0; t < kd; ++t)
      FLASHKM_CHECK(std::isfinite(s.previous[t]), format, "it is invalid (a non-finite previous centroid value)");
  }
  return s;
}

Checkpoint::Checkpoint(const Params& params, const MatrixView& x, const float* weights, const float* init)
    : path_(params.checkpoint_path), every_(params.checkpoint_every), resume_(params.resume) {
  if (enabled()) fp_ = fingerprint(x, params, weights, init);
}

std::optional<CheckpointState> Checkpoint::start() const {
  if (!enabled()) return std::nullopt;
  struct stat st {};
  if (::stat(path_.c_str(), &st) != 0) {
    FLASHKM_CHECK(errno == ENOENT, io, "cannot use checkpoint '", path_, "': ", std::strerror(errno));
    // An unwritable place fails now, not after the initialisation and first iteration
    // (the temporary file is created and removed again).
    { const io::AtomicFile probe(path_); }
    return std::nullopt;  // nothing saved yet: the fit starts from the beginning
  }
  FLASHKM_CHECK(resume_, invalid_argument, "checkpoint '", path_,
                "' already exists: resume from it (resume=true, CLI --resume) or remove it to start over");
  const auto file = io::MappedFile::open(path_);
  try {
    return checkpoint_from_bytes(file->data(), file->size(), fp_);
  } catch (const Error& e) {
    throw Error(e.kind(), "cannot resume from checkpoint '" + path_ + "': " + e.what());
  }
}

void Checkpoint::save(const CheckpointState& state) const {
  const std::vector<std::uint8_t> bytes = checkpoint_to_bytes(fp_, state);
  io::write_file_atomically(path_, bytes.data(), bytes.size());
}

}  // namespace flashkm::core
