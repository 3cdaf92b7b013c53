// `mpirun -np P flashkm fit`: the distributed CLI fit equals the single-process fit, and a
// failing rank ends every rank with one error line and no output. Built only with MPI; the
// paths of the flashkm binary and of the launcher are compiled in (tests/CMakeLists.txt).
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "flashkm/model.hpp"
#include "io/npy.hpp"
#include "support/io_fixtures.hpp"
#include "support/reference.hpp"

namespace flashkm {
namespace {

struct RunResult {
  int exit_code = -1;
  std::string out, err;
};

class MpiCli : public ::testing::Test {
 protected:
  void SetUp() override {
    cli_ = FLASHKM_CLI_PATH;
    mpirun_ = FLASHKM_MPIRUN_PATH;
    ASSERT_TRUE(test::file_exists(cli_)) << cli_;
    ASSERT_TRUE(test::file_exists(mpirun_)) << mpirun_;
  }

  /// `flashkm <args>`, under mpirun with `ranks` processes when ranks > 0.
  RunResult run(int ranks, const std::string& args) {
    const std::string out = capture_.file("stdout"), err = capture_.file("stderr");
    std::string cmd;
    // A collective limit well below ctest's: a hang would show up as a failure, not a stall.
    // No single-copy shared memory: containers often forbid the ptrace it needs, and Open
    // MPI's warning about it would pollute stderr.
    if (ranks > 0)
      cmd = "FLASHKM_COLLECTIVE_TIMEOUT_S=60 OMPI_MCA_btl_vader_single_copy_mechanism=none '" + mpirun_ +
            "' --oversubscribe --allow-run-as-root -np " + std::to_string(ranks) + " ";
    cmd += "'" + cli_ + "' " + args + " >'" + out + "' 2>'" + err + "'";
    const int status = std::system(cmd.c_str());
    RunResult r;
    r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    const auto o = test::read_bytes(out), e = test::read_bytes(err);
    r.out.assign(o.begin(), o.end());
    r.err.assign(e.begin(), e.end());
    return r;
  }

  std::string q(const std::string& name) const { return "'" + dir_.file(name) + "'"; }

  std::vector<std::int32_t> labels(const std::string& name) {
    const auto bytes = test::read_bytes(dir_.file(name));
    const io::NpyHeader h = io::parse_npy_header(bytes.data(), bytes.size(), name);
    std::vector<std::int32_t> out(static_cast<std::size_t>(h.shape.at(0)));
    std::memcpy(out.data(), bytes.data() + h.data_offset, out.size() * 4);
    return out;
  }

  std::string cli_, mpirun_;
  test::TempDir dir_, capture_;
};

/// How many "flashkm: error: " lines an error output holds (mpirun adds its own banner).
std::size_t error_lines(const std::string& err) {
  std::size_t lines = 0;
  for (std::size_t at = err.find("flashkm: error: "); at != std::string::npos; at = err.find("flashkm: error: ", at + 1))
    ++lines;
  return lines;
}

TEST_F(MpiCli, DistributedFitEqualsSingleProcessFit) {
  const std::int64_t n = 5003, d = 7, k = 9;  // 5003 rows: no rank gets a round share
  const auto x = testing::separated_blobs(n, d, k, 1.0, 17);
  io::save_npy(dir_.file("x.npy"), x.data(), {n, d});
  for (const std::string init : {"k-means++", "k-means||", "random"}) {
    SCOPED_TRACE(init);
    const std::string common = " -k 9 --seed 4 --threads 1 --init '" + init + "' ";
    ASSERT_EQ(run(0, "fit " + q("x.npy") + common + "-o " + q("m1.fkm") + " --labels " + q("l1.npy")).exit_code, 0);
    const Model ref = Model::load(dir_.file("m1.fkm"));
    for (int ranks : {2, 3}) {
      SCOPED_TRACE("ranks " + std::to_string(ranks));
      const RunResult r = run(ranks, "fit " + q("x.npy") + common + "-o " + q("mp.fkm") + " --labels " + q("lp.npy") +
                                         " --report " + q("r.json"));
      ASSERT_EQ(r.exit_code, 0) << r.err;
      EXPECT_EQ(r.err, "");
      // one summary line, from rank 0: the other ranks print nothing
      EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << r.out;
      EXPECT_NE(r.out.find(std::to_string(ranks) + " ranks"), std::string::npos) << r.out;
      const Model m = Model::load(dir_.file("mp.fkm"));
      ASSERT_EQ(m.centroids.size(), ref.centroids.size());
      for (std::size_t t = 0; t < m.centroids.size(); ++t)
        EXPECT_NEAR(m.centroids[t], ref.centroids[t], 1e-6 * std::max(1.0f, std::abs(ref.centroids[t])));
      EXPECT_NEAR(m.inertia, ref.inertia, 1e-10 * ref.inertia);
      EXPECT_EQ(m.n_iter, ref.n_iter);
      EXPECT_EQ(labels("lp.npy"), labels("l1.npy"));
      const auto report = test::read_bytes(dir_.file("r.json"));
      EXPECT_NE(std::string(report.begin(), report.end()).find("\"ranks\": " + std::to_string(ranks)),
                std::string::npos);
    }
  }
}

TEST_F(MpiCli, ARankWithNaNFailsEveryRankWithOneLineAndNoOutput) {
  const std::int64_t n = 3001, d = 4;
  auto x = testing::separated_blobs(n, d, 5, 1.0, 3);
  x[static_cast<std::size_t>(2500 * d + 1)] = std::numeric_limits<float>::quiet_NaN();  // on the last rank
  io::save_npy(dir_.file("bad.npy"), x.data(), {n, d});
  const auto before = dir_.entries();
  const RunResult r = run(3, "fit " + q("bad.npy") + " -k 5 --threads 1 -o " + q("m.fkm") + " --labels " +
                                 q("l.npy") + " --report " + q("r.json"));
  EXPECT_NE(r.exit_code, 0);
  // mpirun adds its own banner; flashkm's part is exactly one line, from rank 0, that names
  // the failed rank and the global row.
  const std::size_t lines = error_lines(r.err);
  EXPECT_EQ(lines, 1u) << r.err;
  EXPECT_NE(r.err.find("flashkm: error: rank 2 of 3: input contains NaN or infinity: first at row 2500, column 1"),
            std::string::npos)
      << r.err;
  EXPECT_EQ(dir_.entries(), before) << "no output may appear";
}

TEST_F(MpiCli, MoreRanksThanRowsIsAClearError) {
  const auto x = testing::separated_blobs(2, 3, 1, 1.0, 3);
  io::save_npy(dir_.file("tiny.npy"), x.data(), {2, 3});
  const RunResult r = run(3, "fit " + q("tiny.npy") + " -k 1 --threads 1");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("has 0 rows; every rank needs at least one row"), std::string::npos) << r.err;
}

// --device cuda under mpirun: one GPU per rank over NCCL. Where no GPU can be used (CI: no
// CUDA build, no NCCL or no device) it is one clear error from rank 0 and no output, never a
// silent CPU fit. (The GPU run is in scripts/multigpu_check.sh.)
TEST_F(MpiCli, GpuFitWithoutAUsableGpuIsOneClearError) {
  if (device_available(Device::cuda)) GTEST_SKIP() << "a CUDA device is present: covered by scripts/multigpu_check.sh";
  const auto x = testing::separated_blobs(200, 3, 2, 1.0, 3);
  io::save_npy(dir_.file("g.npy"), x.data(), {200, 3});
  const auto before = dir_.entries();
  const RunResult r = run(2, "fit " + q("g.npy") + " -k 2 --threads 1 --device cuda -o " + q("m.fkm"));
  EXPECT_NE(r.exit_code, 0);
  const std::size_t lines = error_lines(r.err);
  EXPECT_EQ(lines, 1u) << r.err;
  EXPECT_TRUE(r.err.find("CUDA") != std::string::npos || r.err.find("NCCL") != std::string::npos) << r.err;
  EXPECT_EQ(dir_.entries(), before) << "no output may appear";
}

}  // namespace
}  // namespace flashkm
