// Model file (docs/FORMAT.md): round trip, every kind of damage, atomic save.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "flashkm/error.hpp"
#include "flashkm/model.hpp"
#include "io/crc32c.hpp"
#include "support/io_fixtures.hpp"

namespace flashkm {
namespace {

using test::TempDir;

Model sample_model(std::int64_t k = 3, std::int64_t d = 5, int iters = 4) {
  Model m;
  m.n_clusters = k;
  m.n_features = d;
  m.metric = Metric::cosine;
  m.init = InitMethod::kmeans_parallel;
  m.seed = 0xDEADBEEFCAFEF00Dull;
  m.inertia = 123.456789;
  m.n_iter = iters;
  m.converged = true;
  for (std::int64_t i = 0; i < k * d; ++i) m.centroids.push_back(std::ldexp(static_cast<float>(i) - 3.3f, int(i % 7) - 3));
  m.centroids[1] = -0.0f;  // the sign of zero must survive
  for (std::int64_t j = 0; j < k; ++j) m.cluster_weight.push_back(10.5 * static_cast<double>(j + 1));
  for (int t = 1; t <= iters; ++t)
    m.history.push_back(IterationInfo{t, 1000.0 / t, 1.0 / (t * t), 0.25 * t, 100 - t, t % 2});
  return m;
}

// Compare every field bit for bit (memcmp on floats: -0.0 vs 0.0 and NaN payloads count).
void expect_bitwise_equal(const Model& a, const Model& b) {
  EXPECT_EQ(a.n_clusters, b.n_clusters);
  EXPECT_EQ(a.n_features, b.n_features);
  EXPECT_EQ(a.metric, b.metric);
  EXPECT_EQ(a.init, b.init);
  EXPECT_EQ(a.seed, b.seed);
  EXPECT_EQ(std::memcmp(&a.inertia, &b.inertia, sizeof(double)), 0);
  EXPECT_EQ(a.n_iter, b.n_iter);
  EXPECT_EQ(a.converged, b.converged);
  ASSERT_EQ(a.centroids.size(), b.centroids.size());
  EXPECT_EQ(std::memcmp(a.centroids.data(), b.centroids.data(), a.centroids.size() * sizeof(float)), 0);
  ASSERT_EQ(a.cluster_weight.size(), b.cluster_weight.size());
  EXPECT_EQ(std::memcmp(a.cluster_weight.data(), b.cluster_weight.data(), a.cluster_weight.size() * 8), 0);
  ASSERT_EQ(a.history.size(), b.history.size());
  for (std::size_t i = 0; i < a.history.size(); ++i) {
    EXPECT_EQ(a.history[i].iteration, b.history[i].iteration);
    EXPECT_EQ(std::memcmp(&a.history[i].inertia, &b.history[i].inertia, 8), 0);
    EXPECT_EQ(std::memcmp(&a.history[i].shift, &b.history[i].shift, 8), 0);
    EXPECT_EQ(std::memcmp(&a.history[i].ms, &b.history[i].ms, 8), 0);
    EXPECT_EQ(a.history[i].n_changed, b.history[i].n_changed);
    EXPECT_EQ(a.history[i].n_rechecked, b.history[i].n_rechecked);
  }
}

// The error a parse of `bytes` throws; fails the test when it does not throw Error(format).
std::string format_error(const std::vector<std::uint8_t>& bytes) {
  try {
    Model::from_bytes(bytes.data(), bytes.size());
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::format) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "from_bytes accepted " << bytes.size() << " malformed bytes";
  return {};
}

void put_u32(std::vector<std::uint8_t>& b, std::size_t at, std::uint32_t v) { std::memcpy(b.data() + at, &v, 4); }
// Re-seal a deliberately edited file: both checksums recomputed, so that only the edit is wrong.
void reseal(std::vector<std::uint8_t>& b) {
  put_u32(b, 76, io::crc32c(b.data(), 76));
  put_u32(b, b.size() - 4, io::crc32c(b.data(), b.size() - 4));
}

TEST(Crc32c, KnownValues) {
  EXPECT_EQ(io::crc32c("123456789", 9), 0xE3069283u);
  EXPECT_EQ(io::crc32c("", 0), 0u);
  // Incremental equals one shot, across the 8-byte blocks of the hardware path.
  const char* text = "The quick brown fox jumps over the lazy dog";
  const auto n = std::strlen(text);
  EXPECT_EQ(io::crc32c(text + 13, n - 13, io::crc32c(text, 13)), io::crc32c(text, n));
}

TEST(ModelFile, RoundTripIsBitwise) {
  const Model m = sample_model();
  const auto bytes = m.to_bytes();
  EXPECT_EQ(bytes.size(), 80u + 3 * 5 * 4 + 3 * 8 + 4 * 48 + 4);
  expect_bitwise_equal(m, Model::from_bytes(bytes.data(), bytes.size()));
  // Serialisation is deterministic: the same model gives the same bytes.
  EXPECT_EQ(bytes, Model::from_bytes(bytes.data(), bytes.size()).to_bytes());
}

TEST(ModelFile, RoundTripWithoutHistoryAndEveryEnum) {
  for (Metric metric : {Metric::l2, Metric::cosine, Metric::inner_product}) {
    for (InitMethod init : {InitMethod::kmeanspp, InitMethod::kmeans_parallel, InitMethod::random, InitMethod::given}) {
      Model m = sample_model(1, 1, 0);
      m.metric = metric;
      m.init = init;
      m.converged = false;
      m.inertia = -2.5;  // inner-product inertia is negative
      const auto bytes = m.to_bytes();
      expect_bitwise_equal(m, Model::from_bytes(bytes.data(), bytes.size()));
    }
  }
}

TEST(ModelFile, HeaderLayoutMatchesFormatDoc) {
  const auto b = sample_model().to_bytes();
  EXPECT_EQ(std::memcmp(b.data(), "FLASHKM\0", 8), 0);
  std::uint32_t version, header;
  std::int64_t k, d, h;
  std::uint64_t total;
  std::memcpy(&version, &b[8], 4);
  std::memcpy(&header, &b[12], 4);
  std::memcpy(&k, &b[16], 8);
  std::memcpy(&d, &b[24], 8);
  std::memcpy(&h, &b[32], 8);
  std::memcpy(&total, &b[40], 8);
  EXPECT_EQ(version, 1u);
  EXPECT_EQ(header, 80u);
  EXPECT_EQ(k, 3);
  EXPECT_EQ(d, 5);
  EXPECT_EQ(h, 4);
  EXPECT_EQ(total, b.size());
  EXPECT_EQ(b[68], 1);  // metric cosine
  EXPECT_EQ(b[69], 1);  // init k-means||
  EXPECT_EQ(b[70], 1);  // converged
  float c0;
  std::memcpy(&c0, &b[80], 4);
  EXPECT_EQ(c0, sample_model().centroids[0]);
}

TEST(ModelFile, TruncatedAnywhereIsAClearError) {
  const auto full = sample_model().to_bytes();
  for (std::size_t n = 0; n < full.size(); ++n) {
    const std::vector<std::uint8_t> cut(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(n));
    const std::string msg = format_error(cut);
    if (n < 8) continue;  // not even a magic: reported as "not a flashkm model file"
    EXPECT_NE(msg.find("truncated"), std::string::npos) << n << ": " << msg;
  }
  // And the message names the region where the file ends.
  auto region = [&](std::size_t n) { return format_error({full.begin(), full.begin() + static_cast<std::ptrdiff_t>(n)}); };
  EXPECT_NE(region(40).find("header"), std::string::npos);
  EXPECT_NE(region(81).find("centroids"), std::string::npos);
  EXPECT_NE(region(80 + 60 + 1).find("cluster weights"), std::string::npos);
  EXPECT_NE(region(80 + 60 + 24 + 1).find("iteration history"), std::string::npos);
  EXPECT_NE(region(full.size() - 1).find("checksum"), std::string::npos);
}

TEST(ModelFile, FlippedByteAnywhereIsDetected) {
  const auto full = sample_model().to_bytes();
  for (std::size_t i = 0; i < full.size(); ++i) {
    for (std::uint8_t mask : {0x01, 0x80}) {
      auto bad = full;
      bad[i] ^= mask;
      const std::string msg = format_error(bad);
      const char* expect = i < 8 ? "magic" : i < 12 ? "version" : "checksum";
      EXPECT_NE(msg.find(expect), std::string::npos) << "byte " << i << ": " << msg;
    }
  }
}

TEST(ModelFile, TrailingBytesAreRejected) {
  auto b = sample_model().to_bytes();
  b.push_back(0);
  EXPECT_NE(format_error(b).find("unexpected bytes"), std::string::npos);
}

TEST(ModelFile, OtherVersionSaysWhichVersions) {
  auto b = sample_model().to_bytes();
  put_u32(b, 8, 2);
  reseal(b);
  const std::string msg = format_error(b);
  EXPECT_NE(msg.find("version 2"), std::string::npos) << msg;
  EXPECT_NE(msg.find("reads version 1"), std::string::npos) << msg;
}

TEST(ModelFile, WrongMagic) {
  std::vector<std::uint8_t> npy = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, 0, 0, 0, 0};
  EXPECT_NE(format_error(npy).find("not a flashkm model file"), std::string::npos);
  EXPECT_NE(format_error({}).find("not a flashkm model file"), std::string::npos);
}

TEST(ModelFile, ValuesAreValidatedEvenWithGoodChecksums) {
  const auto full = sample_model().to_bytes();
  auto with = [&](std::size_t at, std::uint8_t v) {
    auto b = full;
    b[at] = v;
    reseal(b);
    return format_error(b);
  };
  EXPECT_NE(with(68, 3).find("metric"), std::string::npos);
  EXPECT_NE(with(69, 4).find("init"), std::string::npos);
  EXPECT_NE(with(70, 2).find("converged"), std::string::npos);
  EXPECT_NE(with(71, 1).find("reserved"), std::string::npos);
  // K larger than the file holds: the recorded total size no longer matches.
  EXPECT_NE(with(16, 4).find("does not match"), std::string::npos);
  // A NaN centroid.
  auto b = full;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::memcpy(&b[80 + 4 * 7], &nan, 4);
  reseal(b);
  EXPECT_NE(format_error(b).find("centroid 1"), std::string::npos);
}

TEST(ModelFile, ToBytesRejectsInconsistentModel) {
  Model m = sample_model();
  m.centroids.pop_back();
  EXPECT_THROW(m.to_bytes(), Error);
  Model empty;
  EXPECT_THROW(empty.to_bytes(), Error);
}

TEST(ModelFile, SaveLoadLeavesNoTempFiles) {
  TempDir dir;
  const Model m = sample_model();
  m.save(dir.file("model.fkm"));
  expect_bitwise_equal(m, Model::load(dir.file("model.fkm")));
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"model.fkm"});
  // Overwriting replaces the file.
  Model m2 = sample_model(2, 2, 1);
  m2.save(dir.file("model.fkm"));
  expect_bitwise_equal(m2, Model::load(dir.file("model.fkm")));
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"model.fkm"});
}

TEST(ModelFile, FailedSaveLeavesNothingBehind) {
  TempDir dir;
  const Model m = sample_model();
  // The target is a directory.
  ::mkdir(dir.file("adir").c_str(), 0755);
  try {
    m.save(dir.file("adir"));
    FAIL() << "save onto a directory succeeded";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::io);
    EXPECT_NE(std::string(e.what()).find("adir"), std::string::npos);
  }
  // The directory does not exist.
  EXPECT_THROW(m.save(dir.file("missing/model.fkm")), Error);
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"adir"});
  // An invalid model fails before anything touches the existing file.
  const Model good = sample_model(2, 2, 1);
  good.save(dir.file("model.fkm"));
  const auto before = test::read_bytes(dir.file("model.fkm"));
  Model bad = sample_model();
  bad.cluster_weight.clear();
  EXPECT_THROW(bad.save(dir.file("model.fkm")), Error);
  EXPECT_EQ(test::read_bytes(dir.file("model.fkm")), before);
  EXPECT_EQ(dir.entries(), (std::vector<std::string>{"adir", "model.fkm"}));
}

TEST(ModelFile, FailedSaveLeavesExistingFileUntouched) {
  if (::geteuid() == 0) GTEST_SKIP() << "running as root: permission bits do not stop writes";
  TempDir dir;
  const Model old_model = sample_model(2, 2, 1);
  old_model.save(dir.file("model.fkm"));
  const auto before = test::read_bytes(dir.file("model.fkm"));
  ::chmod(dir.path().c_str(), 0555);
  EXPECT_THROW(sample_model().save(dir.file("model.fkm")), Error);
  ::chmod(dir.path().c_str(), 0755);
  EXPECT_EQ(test::read_bytes(dir.file("model.fkm")), before);
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"model.fkm"});
}

TEST(ModelFile, LoadErrorsNameTheFile) {
  TempDir dir;
  try {
    Model::load(dir.file("nope.fkm"));
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::io);
    EXPECT_NE(std::string(e.what()).find("nope.fkm"), std::string::npos);
  }
  auto b = sample_model().to_bytes();
  b.resize(100);
  test::write_bytes(dir.file("cut.fkm"), b);
  try {
    Model::load(dir.file("cut.fkm"));
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::format);
    EXPECT_NE(std::string(e.what()).find("cut.fkm"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("truncated"), std::string::npos);
  }
}

}  // namespace
}  // namespace flashkm
