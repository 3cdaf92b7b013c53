// Model file format, version 1: see docs/FORMAT.md for the byte-by-byte layout. The offsets
// below must stay in step with that document.
#include <cmath>
#include <cstring>
#include <limits>

#include "flashkm/error.hpp"
#include "flashkm/model.hpp"
#include "core/model_format.hpp"
#include "io/atomic_file.hpp"
#include "io/byte_io.hpp"
#include "io/crc32c.hpp"
#include "io/mapped_file.hpp"

namespace flashkm {
namespace {

using io::load_le;

constexpr char kMagic[8] = {'F', 'L', 'A', 'S', 'H', 'K', 'M', '\0'};
constexpr std::uint32_t kVersion = core::kModelFormatVersion;

// Header field offsets (docs/FORMAT.md, "Header").
constexpr std::size_t kOffVersion = 8;
constexpr std::size_t kOffHeaderBytes = 12;
constexpr std::size_t kOffK = 16;
constexpr std::size_t kOffD = 24;
constexpr std::size_t kOffHistory = 32;
constexpr std::size_t kOffTotalBytes = 40;
constexpr std::size_t kOffSeed = 48;
constexpr std::size_t kOffInertia = 56;
constexpr std::size_t kOffNIter = 64;
constexpr std::size_t kOffMetric = 68;
constexpr std::size_t kOffInit = 69;
constexpr std::size_t kOffConverged = 70;
constexpr std::size_t kOffReserved8 = 71;
constexpr std::size_t kOffReserved32 = 72;
constexpr std::size_t kOffHeaderCrc = 76;
constexpr std::size_t kHeaderBytes = 80;

constexpr std::size_t kHistoryRecordBytes = 48;  // i32, u32 pad, 4 x f64/i64 ... see FORMAT.md
constexpr std::size_t kTrailerBytes = 4;         // CRC-32C of everything before it

// Sizes of the sections after the header, or false when they do not fit in 64 bits (a
// corrupted or hostile header must not make us wrap around and read out of bounds).
struct Sections {
  std::size_t centroids = 0, weights = 0, history = 0, total = 0;
};
bool section_sizes(std::uint64_t k, std::uint64_t d, std::uint64_t h, Sections* s) {
  constexpr std::uint64_t kMax = std::numeric_limits<std::uint64_t>::max() / 16;
  if (k == 0 || d == 0 || k > kMax || d > kMax || h > kMax / kHistoryRecordBytes || k > kMax / d / 4) return false;
  s->centroids = k * d * 4;
  s->weights = k * 8;
  s->history = h * kHistoryRecordBytes;
  s->total = kHeaderBytes + s->centroids + s->weights + s->history + kTrailerBytes;
  return true;  // each term is below 2^62, so the sum cannot overflow
}

[[noreturn]] void truncated(std::size_t size, std::size_t need, const char* region) {
  FLASHKM_FAIL(format, "model file is truncated: ", size, " bytes, expected ", need, " (it ends inside the ",
               region, ")");
}

}  // namespace

std::vector<std::uint8_t> Model::to_bytes() const {
  FLASHKM_CHECK(n_clusters >= 1 && n_features >= 1, invalid_argument, "cannot serialize a model with K = ",
                n_clusters, ", D = ", n_features, " (both must be >= 1)");
  Sections s;
  FLASHKM_CHECK(section_sizes(n_clusters, n_features, history.size(), &s), invalid_argument,
                "cannot serialize model: too large");
  FLASHKM_CHECK(centroids.size() == static_cast<std::size_t>(n_clusters * n_features), invalid_argument,
                "cannot serialize model: ", centroids.size(), " centroid values for K x D = ", n_clusters, " x ",
                n_features);
  FLASHKM_CHECK(cluster_weight.size() == static_cast<std::size_t>(n_clusters), invalid_argument,
                "cannot serialize model: ", cluster_weight.size(), " cluster weights for K = ", n_clusters);

  io::ByteWriter w(s.total);
  w.put_bytes(kMagic, sizeof kMagic);
  w.put(kVersion);
  w.put(static_cast<std::uint32_t>(kHeaderBytes));
  w.put(static_cast<std::int64_t>(n_clusters));
  w.put(static_cast<std::int64_t>(n_features));
  w.put(static_cast<std::int64_t>(history.size()));
  w.put(static_cast<std::uint64_t>(s.total));
  w.put(static_cast<std::uint64_t>(seed));
  w.put(inertia);
  w.put(static_cast<std::int32_t>(n_iter));
  w.put(static_cast<std::uint8_t>(metric));
  w.put(static_cast<std::uint8_t>(init));
  w.put(static_cast<std::uint8_t>(converged ? 1 : 0));
  w.put(std::uint8_t{0});
  w.put(std::uint32_t{0});
  FLASHKM_ASSERT(w.size() == kOffHeaderCrc, "header layout");
  w.put(io::crc32c(w.data(), kOffHeaderCrc));

  w.put_array(centroids.data(), centroids.size());
  w.put_array(cluster_weight.data(), cluster_weight.size());
  for (const IterationInfo& it : history) {
    w.put(static_cast<std::int32_t>(it.iteration));
    w.put(std::uint32_t{0});
    w.put(it.inertia);
    w.put(it.shift);
    w.put(it.ms);
    w.put(static_cast<std::int64_t>(it.n_changed));
    w.put(static_cast<std::int64_t>(it.n_rechecked));
  }
  w.put(io::crc32c(w.data(), w.size()));
  FLASHKM_ASSERT(w.size() == s.total, "model size");
  return w.take();
}

Model Model::from_bytes(const std::uint8_t* data, std::size_t size) {
  // Checks go from the outside in, so that each failure has the most useful message:
  // what the file is, its version, whether it is complete, whether it is intact, and only
  // then whether its values make sense.
  FLASHKM_CHECK(size >= sizeof kMagic && std::memcmp(data, kMagic, sizeof kMagic) == 0, format,
                "not a flashkm model file (bad magic)");
  if (size < kOffVersion + 4) truncated(size, kHeaderBytes, "header");
  const auto version = load_le<std::uint32_t>(data + kOffVersion);
  FLASHKM_CHECK(version == kVersion, format, "model file format version ", version,
                " is not supported (this build reads version ", kVersion, ")");
  if (size < kHeaderBytes) truncated(size, kHeaderBytes, "header");
  FLASHKM_CHECK(load_le<std::uint32_t>(data + kOffHeaderCrc) == io::crc32c(data, kOffHeaderCrc), format,
                "model file is corrupted (header checksum mismatch)");

  // The header is intact from here on; its lengths can be trusted to locate the sections.
  FLASHKM_CHECK(load_le<std::uint32_t>(data + kOffHeaderBytes) == kHeaderBytes, format,
                "model file is corrupted (header size ", load_le<std::uint32_t>(data + kOffHeaderBytes),
                ", expected ", kHeaderBytes, ")");
  const auto k = load_le<std::int64_t>(data + kOffK);
  const auto d = load_le<std::int64_t>(data + kOffD);
  const auto h = load_le<std::int64_t>(data + kOffHistory);
  Sections s;
  FLASHKM_CHECK(k >= 1 && d >= 1 && h >= 0 && section_sizes(k, d, h, &s), format,
                "model file is corrupted (K = ", k, ", D = ", d, ", history length ", h, ")");
  FLASHKM_CHECK(load_le<std::uint64_t>(data + kOffTotalBytes) == s.total, format,
                "model file is corrupted (recorded size ", load_le<std::uint64_t>(data + kOffTotalBytes),
                " does not match K, D and history length, which need ", s.total, ")");
  const std::size_t off_centroids = kHeaderBytes;
  const std::size_t off_weights = off_centroids + s.centroids;
  const std::size_t off_history = off_weights + s.weights;
  const std::size_t off_trailer = off_history + s.history;
  if (size < s.total) {
    const char* region = size < off_weights   ? "centroids"
                         : size < off_history ? "cluster weights"
                         : size < off_trailer ? "iteration history"
                                              : "checksum";
    truncated(size, s.total, region);
  }
  FLASHKM_CHECK(size == s.total, format, "model file has ", size - s.total,
                " unexpected bytes after its end (expected ", s.total, " bytes)");
  FLASHKM_CHECK(load_le<std::uint32_t>(data + off_trailer) == io::crc32c(data, off_trailer), format,
                "model file is corrupted (checksum mismatch)");

  Model m;
  m.n_clusters = k;
  m.n_features = d;
  m.seed = load_le<std::uint64_t>(data + kOffSeed);
  m.inertia = load_le<double>(data + kOffInertia);
  m.n_iter = load_le<std::int32_t>(data + kOffNIter);
  const std::uint8_t metric_v = data[kOffMetric], init_v = data[kOffInit], conv_v = data[kOffConverged];
  FLASHKM_CHECK(metric_v <= static_cast<std::uint8_t>(Metric::inner_product), format,
                "model file is invalid (metric code ", int(metric_v), ")");
  FLASHKM_CHECK(init_v <= static_cast<std::uint8_t>(InitMethod::given), format, "model file is invalid (init code ",
                int(init_v), ")");
  FLASHKM_CHECK(conv_v <= 1, format, "model file is invalid (converged flag ", int(conv_v), ")");
  FLASHKM_CHECK(data[kOffReserved8] == 0 && load_le<std::uint32_t>(data + kOffReserved32) == 0, format,
                "model file is invalid (reserved header bytes are not zero)");
  FLASHKM_CHECK(m.n_iter >= 0 && std::isfinite(m.inertia), format, "model file is invalid (n_iter ", m.n_iter,
                ", inertia ", m.inertia, ")");
  m.metric = static_cast<Metric>(metric_v);
  m.init = static_cast<InitMethod>(init_v);
  m.converged = conv_v == 1;

  m.centroids.resize(static_cast<std::size_t>(k * d));
  std::memcpy(m.centroids.data(), data + off_centroids, s.centroids);
  for (std::size_t i = 0; i < m.centroids.size(); ++i)
    FLASHKM_CHECK(std::isfinite(m.centroids[i]), format, "model file is invalid (centroid ",
                  static_cast<std::int64_t>(i) / d, " has a non-finite value)");
  m.cluster_weight.resize(static_cast<std::size_t>(k));
  std::memcpy(m.cluster_weight.data(), data + off_weights, s.weights);
  for (std::size_t j = 0; j < m.cluster_weight.size(); ++j)
    FLASHKM_CHECK(std::isfinite(m.cluster_weight[j]) && m.cluster_weight[j] >= 0, format,
                  "model file is invalid (cluster ", j, " has weight ", m.cluster_weight[j], ")");

  m.history.resize(static_cast<std::size_t>(h));
  for (std::size_t i = 0; i < m.history.size(); ++i) {
    const std::uint8_t* r = data + off_history + i * kHistoryRecordBytes;
    IterationInfo& it = m.history[i];
    it.iteration = load_le<std::int32_t>(r);
    it.inertia = load_le<double>(r + 8);
    it.shift = load_le<double>(r + 16);
    it.ms = load_le<double>(r + 24);
    it.n_changed = load_le<std::int64_t>(r + 32);
    it.n_rechecked = load_le<std::int64_t>(r + 40);
    FLASHKM_CHECK(load_le<std::uint32_t>(r + 4) == 0, format, "model file is invalid (history record ", i,
                  " has non-zero padding)");
  }
  return m;
}

void Model::save(const std::string& path) const {
  const std::vector<std::uint8_t> bytes = to_bytes();
  io::write_file_atomically(path, bytes.data(), bytes.size());
}

Model Model::load(const std::string& path) {
  const auto file = io::MappedFile::open(path);
  try {
    return from_bytes(file->data(), file->size());
  } catch (const Error& e) {
    // Name the file: from_bytes only sees bytes.
    throw Error(e.kind(), "cannot load model '" + path + "': " + e.what());
  }
}

}  // namespace flashkm
