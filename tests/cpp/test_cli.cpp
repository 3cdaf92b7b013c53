// The flashkm command-line tool, run as a separate process ($FLASHKM_CLI) on small files.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include <random>
#include <vector>

#include "flashkm/error.hpp"
#include "flashkm/kmeans.hpp"
#include "flashkm/model.hpp"
#include "io/npy.hpp"
#include "support/io_fixtures.hpp"

namespace flashkm {
namespace {

using test::TempDir;

struct RunResult {
  int exit_code = -1;
  std::string out, err;
};

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* cli = std::getenv("FLASHKM_CLI");
    if (cli == nullptr || !test::file_exists(cli)) GTEST_SKIP() << "FLASHKM_CLI is not set to the flashkm binary";
    cli_ = cli;
  }

  // Run `flashkm <args>` with stdout/stderr captured in files outside the work directory
  // (so that the work directory holds only what the tool wrote).
  RunResult run(const std::string& args) {
    const std::string out = capture_.file("stdout"), err = capture_.file("stderr");
    const std::string cmd = "'" + cli_ + "' " + args + " >'" + out + "' 2>'" + err + "'";
    const int status = std::system(cmd.c_str());
    RunResult r;
    r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    const auto o = test::read_bytes(out), e = test::read_bytes(err);
    r.out.assign(o.begin(), o.end());
    r.err.assign(e.begin(), e.end());
    return r;
  }

  std::string path(const std::string& name) const { return dir_.file(name); }
  std::string q(const std::string& name) const { return "'" + path(name) + "'"; }

  // n x d blobs around k well-separated centres, written as float32 .npy.
  void write_blobs(const std::string& name, std::int64_t n, std::int64_t d, std::int64_t k) {
    std::mt19937 rng(42);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> x(static_cast<std::size_t>(n * d));
    for (std::int64_t i = 0; i < n; ++i)
      for (std::int64_t j = 0; j < d; ++j) x[i * d + j] = 20.0f * static_cast<float>((i % k) == j % k) + normal(rng);
    io::save_npy(path(name), x.data(), {n, d});
  }

  // A failed command: non-zero exit, exactly one line "flashkm: error: ..." naming `needle`,
  // and the work directory unchanged.
  void expect_clean_failure(const std::string& args, const std::string& needle) {
    SCOPED_TRACE(args);
    const auto before = dir_.entries();
    const RunResult r = run(args);
    EXPECT_NE(r.exit_code, 0);
    EXPECT_EQ(r.err.rfind("flashkm: error: ", 0), 0u) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
    EXPECT_EQ(dir_.entries(), before);
  }

  std::string cli_;
  TempDir dir_, capture_;
};

std::vector<std::int32_t> read_labels(const std::string& path) {
  const auto bytes = test::read_bytes(path);
  const io::NpyHeader h = io::parse_npy_header(bytes.data(), bytes.size(), path);
  EXPECT_EQ(h.descr, "<i4");
  EXPECT_EQ(h.shape.size(), 1u);
  std::vector<std::int32_t> labels(static_cast<std::size_t>(h.shape.at(0)));
  std::memcpy(labels.data(), bytes.data() + h.data_offset, labels.size() * 4);
  return labels;
}

TEST_F(CliTest, FitWritesModelLabelsCentroidsAndReport) {
  write_blobs("x.npy", 300, 4, 3);
  const RunResult r = run("fit " + q("x.npy") + " -k 3 --seed 7 -o " + q("m.fkm") + " --labels " + q("l.npy") +
                          " --centroids " + q("c.npy") + " --report " + q("r.json"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(r.err.empty()) << "stderr is not a terminal: no progress output expected, got " << r.err;
  EXPECT_NE(r.out.find("k=3"), std::string::npos) << r.out;
  // Exactly the outputs asked for, no temporary files.
  EXPECT_EQ(dir_.entries(), (std::vector<std::string>{"c.npy", "l.npy", "m.fkm", "r.json", "x.npy"}));

  const Model m = Model::load(path("m.fkm"));
  EXPECT_EQ(m.n_clusters, 3);
  EXPECT_EQ(m.n_features, 4);
  EXPECT_EQ(m.seed, 7u);

  const auto labels = read_labels(path("l.npy"));
  ASSERT_EQ(labels.size(), 300u);
  for (std::int32_t l : labels) EXPECT_TRUE(l >= 0 && l < 3);
  // Well separated blobs: rows i and i+3 belong to the same blob, so share a label.
  for (std::size_t i = 0; i + 3 < labels.size(); ++i) EXPECT_EQ(labels[i], labels[i + 3]);

  const io::LoadedMatrix c = io::load_npy(path("c.npy"));
  ASSERT_EQ(c.view.rows, 3);
  ASSERT_EQ(c.view.cols, 4);
  EXPECT_EQ(std::memcmp(c.view.data, m.centroids.data(), 12 * sizeof(float)), 0);

  const auto text = test::read_bytes(path("r.json"));
  const auto j = nlohmann::json::parse(text.begin(), text.end());
  EXPECT_EQ(j["command"], "fit");
  EXPECT_EQ(j["data"]["rows"], 300);
  EXPECT_EQ(j["data"]["cols"], 4);
  EXPECT_EQ(j["data"]["dtype"], "float32");
  EXPECT_EQ(j["params"]["n_clusters"], 3);
  EXPECT_EQ(j["params"]["seed"], 7);
  EXPECT_EQ(j["params"]["init"], "k-means++");
  EXPECT_EQ(j["inertia"].get<double>(), m.inertia);  // JSON doubles round-trip exactly
  EXPECT_EQ(j["n_iter"], m.n_iter);
  EXPECT_EQ(j["converged"], m.converged);
  ASSERT_EQ(j["iterations"].size(), m.history.size());
  EXPECT_EQ(static_cast<int>(j["iterations"].size()), m.n_iter);
  for (std::size_t i = 0; i < m.history.size(); ++i) {
    const auto& it = j["iterations"][i];
    EXPECT_EQ(it["iteration"], static_cast<int>(i + 1));
    for (const char* key : {"inertia", "shift", "ms", "n_changed"}) EXPECT_TRUE(it.contains(key)) << key;
  }
  EXPECT_GE(j["time_ms"]["total"].get<double>(), j["time_ms"]["iterations"].get<double>());
  EXPECT_GE(j["time_ms"]["init"].get<double>(), 0.0);
  EXPECT_GT(j["peak_memory_bytes"].get<std::int64_t>(), 0);
  EXPECT_FALSE(j["simd_level"].get<std::string>().empty());
  EXPECT_EQ(j["cluster_weight_sum"].get<double>(), 300.0);
}

TEST_F(CliTest, PredictReproducesTheFitLabels) {
  write_blobs("x.npy", 500, 6, 4);
  ASSERT_EQ(run("fit " + q("x.npy") + " -k 4 --quiet -o " + q("m.fkm") + " --labels " + q("fit.npy")).exit_code, 0);
  const RunResult r = run("predict " + q("m.fkm") + " " + q("x.npy") + " -o " + q("pred.npy") + " --distances " + q("d.npy"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(test::read_bytes(path("pred.npy")), test::read_bytes(path("fit.npy")));
  const io::LoadedMatrix d = io::load_npy(path("d.npy"), io::NpyRank::vector);
  ASSERT_EQ(d.view.rows, 500);
  for (std::int64_t i = 0; i < 500; ++i) EXPECT_GE(static_cast<const float*>(d.view.data)[i], 0.0f);
}

TEST_F(CliTest, FitIsDeterministicAndAcceptsGivenInit) {
  write_blobs("x.npy", 200, 3, 2);
  for (const char* out : {"a.fkm", "b.fkm"})
    ASSERT_EQ(run("fit " + q("x.npy") + " -k 2 --seed 3 -q -o " + q(out)).exit_code, 0);
  // Bitwise equal results (the files differ only in the recorded iteration times).
  const Model a = Model::load(path("a.fkm")), b = Model::load(path("b.fkm"));
  EXPECT_EQ(a.centroids, b.centroids);
  EXPECT_EQ(a.cluster_weight, b.cluster_weight);
  EXPECT_EQ(a.inertia, b.inertia);
  EXPECT_EQ(a.n_iter, b.n_iter);

  const float init[2][3] = {{20, 0, 20}, {0, 20, 0}};
  io::save_npy(path("init.npy"), &init[0][0], {2, 3});
  const RunResult r = run("fit " + q("x.npy") + " -k 2 --init " + q("init.npy") + " -o " + q("g.fkm"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(Model::load(path("g.fkm")).init, InitMethod::given);
}

TEST_F(CliTest, InfoPrintsTheHeaderAsJson) {
  write_blobs("x.npy", 100, 2, 2);
  ASSERT_EQ(run("fit " + q("x.npy") + " -k 2 --metric cosine -q -o " + q("m.fkm")).exit_code, 0);
  const RunResult r = run("info " + q("m.fkm"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["n_clusters"], 2);
  EXPECT_EQ(j["n_features"], 2);
  EXPECT_EQ(j["metric"], "cosine");
  EXPECT_EQ(j["format_version"], 1);
  EXPECT_EQ(j["file_bytes"], test::read_bytes(path("m.fkm")).size());
}

TEST_F(CliTest, BenchPrintsThroughput) {
  const RunResult r = run("bench -n 2000 -d 8 -k 16 --iters 2");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("GFLOP/s"), std::string::npos) << r.out;
}

TEST_F(CliTest, BadInputsFailCleanly) {
  write_blobs("x.npy", 50, 3, 2);
  write_blobs("x4.npy", 50, 4, 2);
  ASSERT_EQ(run("fit " + q("x.npy") + " -k 2 -q -o " + q("m.fkm")).exit_code, 0);
  const std::string outs = " -o " + q("out.fkm") + " --labels " + q("out.npy") + " --report " + q("out.json");

  expect_clean_failure("fit " + q("missing.npy") + " -k 2" + outs, "missing.npy");
  expect_clean_failure("fit " + q("x.npy") + " -k 51" + outs, "n_clusters=51");
  expect_clean_failure("fit " + q("x.npy") + " -k 0" + outs, "n_clusters");
  expect_clean_failure("fit " + q("x.npy") + " -k 2 --metric chebyshev" + outs, "chebyshev");
  expect_clean_failure("fit " + q("x.npy") + " -k 2 --gpus 0,1" + outs, "needs device 'cuda'");
  expect_clean_failure("fit " + q("x.npy") + " -k 2 --device cuda --gpus 1,1" + outs, "twice");
  expect_clean_failure("fit " + q("x.npy") + " -k 2 --init " + q("x4.npy") + outs, "expected (n_clusters, n_features)");
  expect_clean_failure("fit " + q("x.npy") + " -k 2 -o " + q("no/such/dir.fkm"), "no/such/dir.fkm");
  expect_clean_failure("fit " + q("x.npy") + " -k 2 -o " + q("same.npy") + " --labels " + q("same.npy"), "twice");
  expect_clean_failure("fit " + q("x.npy") + outs, "required");

  // A NaN in row 17.
  std::vector<float> bad(20 * 3, 1.0f);
  bad[17 * 3 + 1] = std::nanf("");
  io::save_npy(path("nan.npy"), bad.data(), {20, 3});
  expect_clean_failure("fit " + q("nan.npy") + " -k 2" + outs, "17");

  // An int32 matrix.
  const std::int32_t ints[4] = {1, 2, 3, 4};
  io::save_npy(path("int.npy"), ints, {4});
  expect_clean_failure("fit " + q("int.npy") + " -k 2" + outs, "int32");

  // predict: wrong number of features, corrupted model, truncated model, not a model.
  expect_clean_failure("predict " + q("m.fkm") + " " + q("x4.npy") + " -o " + q("p.npy"), "features");
  auto model = test::read_bytes(path("m.fkm"));
  model[100] ^= 0x10;
  test::write_bytes(path("bad.fkm"), model);
  model.resize(90);
  test::write_bytes(path("cut.fkm"), model);
  expect_clean_failure("predict " + q("bad.fkm") + " " + q("x.npy") + " -o " + q("p.npy"), "checksum");
  expect_clean_failure("predict " + q("cut.fkm") + " " + q("x.npy") + " -o " + q("p.npy"), "truncated");
  expect_clean_failure("predict " + q("x.npy") + " " + q("x.npy") + " -o " + q("p.npy"), "not a flashkm model");
  expect_clean_failure("info " + q("bad.fkm"), "checksum");
}

// Under an MPI launcher's environment, --distributed off fits alone (no MPI is started), and
// the mode is checked like any option. (Distributed runs: tests/mpi, built with MPI.)
TEST_F(CliTest, DistributedOffFitsAloneAndModesAreChecked) {
  write_blobs("x.npy", 60, 3, 2);
  ::setenv("OMPI_COMM_WORLD_SIZE", "2", 1);
  const RunResult r = run("fit " + q("x.npy") + " -k 2 --distributed off -o " + q("m.fkm"));
  ::unsetenv("OMPI_COMM_WORLD_SIZE");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.find("ranks"), std::string::npos) << r.out;
  EXPECT_EQ(Model::load(path("m.fkm")).n_clusters, 2);
  const RunResult bad = run("fit " + q("x.npy") + " -k 2 --distributed nccl");
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("--distributed"), std::string::npos) << bad.err;
}

TEST_F(CliTest, FailedFitLeavesExistingOutputsUntouched) {
  write_blobs("x.npy", 30, 2, 2);
  test::write_bytes(path("m.fkm"), std::vector<std::uint8_t>{'o', 'l', 'd'});
  expect_clean_failure("fit " + q("x.npy") + " -k 31 -o " + q("m.fkm"), "n_clusters=31");
  EXPECT_EQ(test::read_bytes(path("m.fkm")), (std::vector<std::uint8_t>{'o', 'l', 'd'}));
}

TEST_F(CliTest, ResumesFromACheckpointAndRemovesItAfterwards) {
  write_blobs("x.npy", 3000, 8, 5);
  const std::string opts = " -k 5 --tol 0 --max-iter 6 --seed 3 -q";
  ASSERT_EQ(run("fit " + q("x.npy") + opts + " --centroids " + q("a.npy")).exit_code, 0);
  // A fit of the same data and options, stopped after its first iteration, leaves a checkpoint.
  {
    const io::LoadedMatrix x = io::load_npy(path("x.npy"));
    Params p;
    p.n_clusters = 5;
    p.tol = 0;
    p.max_iter = 6;
    p.seed = 3;
    p.checkpoint_path = path("fit.ckpt");
    p.progress = [](int, const IterationInfo&) { return false; };
    EXPECT_THROW(fit(x.view, p), Error);
  }
  ASSERT_TRUE(test::file_exists(path("fit.ckpt")));
  expect_clean_failure("fit " + q("x.npy") + opts + " --checkpoint " + q("fit.ckpt") + " --centroids " + q("b.npy"),
                       "already exists");
  const RunResult r =
      run("fit " + q("x.npy") + opts + " --checkpoint " + q("fit.ckpt") + " --resume --centroids " + q("b.npy"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(test::read_bytes(path("a.npy")), test::read_bytes(path("b.npy")));
  EXPECT_FALSE(test::file_exists(path("fit.ckpt")));
}

TEST_F(CliTest, MaxMemoryKeepsResultsAndRefusesTooLittle) {
  write_blobs("x.npy", 3000, 8, 5);
  const std::string fit_cmd = "fit " + q("x.npy") + " -k 5 --seed 1 -q --threads 2 ";
  ASSERT_EQ(run(fit_cmd + "--centroids " + q("a.npy")).exit_code, 0);
  ASSERT_EQ(run(fit_cmd + "--max-memory 1G --centroids " + q("b.npy")).exit_code, 0);
  EXPECT_EQ(test::read_bytes(path("a.npy")), test::read_bytes(path("b.npy")));
  expect_clean_failure(fit_cmd + "--max-memory 1M --centroids " + q("c.npy"), "too small");
  expect_clean_failure(fit_cmd + "--max-memory 4X --centroids " + q("c.npy"), "not a byte size");
}

}  // namespace
}  // namespace flashkm
