// `mpirun -np P flashkm fit`: the distributed CLI fit equals the single-process fit, a
// failing rank ends every rank with one error line and no output, and a stopped rank ends the
// job after the collective time limit. Built only with MPI; the
// paths of the flashkm binary and of the launcher are compiled in (tests/CMakeLists.txt).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <thread>
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

/// The processes running `exe` whose command line mentions `marker`, with their CPU time in
/// clock ticks (user + system, /proc/PID/stat fields 14 and 15).
std::vector<std::pair<pid_t, long>> processes_of(const std::string& exe, const std::string& marker) {
  namespace fs = std::filesystem;
  std::vector<std::pair<pid_t, long>> out;
  std::error_code ec;
  const fs::path want = fs::weakly_canonical(exe, ec);
  for (const auto& entry : fs::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || !std::all_of(name.begin(), name.end(), ::isdigit)) continue;
    std::error_code e2;
    if (fs::read_symlink(entry.path() / "exe", e2) != want || e2) continue;
    std::ifstream cmd(entry.path() / "cmdline", std::ios::binary);
    const std::string line((std::istreambuf_iterator<char>(cmd)), std::istreambuf_iterator<char>());
    if (line.find(marker) == std::string::npos) continue;
    std::ifstream stat(entry.path() / "stat");
    std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
    const std::size_t close = text.rfind(')');  // the name field may hold spaces
    if (close == std::string::npos) continue;
    std::istringstream rest(text.substr(close + 2));
    std::string field;
    long utime = 0, stime = 0;
    for (int f = 3; f <= 15 && rest >> field; ++f) {
      if (f == 14) utime = std::stol(field);
      if (f == 15) stime = std::stol(field);
    }
    out.emplace_back(static_cast<pid_t>(std::stol(name)), utime + stime);
  }
  return out;
}

// A rank that stops calling collectives (here: SIGSTOP, as a hung node would) must not hang
// the job: the other rank's collective times out after FLASHKM_COLLECTIVE_TIMEOUT_S, it
// prints one error line naming the limit and the whole job ends with a non-zero status.
TEST_F(MpiCli, AStoppedRankEndsTheJobAfterTheCollectiveTimeLimit) {
  // Uniform 2-D noise with many clusters: Lloyd needs thousands of iterations here, so the
  // ranks are still computing when one of them is stopped.
  const std::int64_t n = 200000, d = 2, k = 1000;
  std::mt19937 gen(5);
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  std::vector<float> x(static_cast<std::size_t>(n * d));
  for (auto& v : x) v = uniform(gen);
  io::save_npy(dir_.file("noise.npy"), x.data(), {n, d});
  const std::string out = capture_.file("stdout"), err = capture_.file("stderr");
  const std::string cmd = "FLASHKM_COLLECTIVE_TIMEOUT_S=2 OMPI_MCA_btl_vader_single_copy_mechanism=none exec '" +
                          mpirun_ + "' --oversubscribe --allow-run-as-root -np 2 '" + cli_ + "' fit " +
                          q("noise.npy") + " -k 1000 --init random --tol 0 --max-iter 1000000 --threads 1 -o " +
                          q("m.fkm") + " >'" + out + "' 2>'" + err + "'";
  const pid_t launcher = fork();
  ASSERT_GE(launcher, 0);
  if (launcher == 0) {
    execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  using clock = std::chrono::steady_clock;
  const long hz = sysconf(_SC_CLK_TCK);
  // Wait until both ranks have computed for a while (0.3 s of CPU each), then stop one.
  pid_t stopped = 0;
  int status = 0;
  bool exited = false;
  for (const auto start = clock::now(); clock::now() - start < std::chrono::seconds(60);) {
    if (waitpid(launcher, &status, WNOHANG) == launcher) {
      exited = true;
      break;
    }
    const auto ranks = processes_of(cli_, dir_.file("noise.npy"));
    if (ranks.size() == 2 && ranks[0].second >= hz * 3 / 10 && ranks[1].second >= hz * 3 / 10) {
      stopped = ranks[1].first;
      ASSERT_EQ(kill(stopped, SIGSTOP), 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_FALSE(exited) << "the job ended before a rank could be stopped (status " << status << ")";
  ASSERT_NE(stopped, 0) << "the two ranks were not seen computing within 60 s";
  const auto stopped_at = clock::now();
  while (!exited && clock::now() - stopped_at < std::chrono::seconds(120)) {
    if (waitpid(launcher, &status, WNOHANG) == launcher) exited = true;
    else std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  const double waited = std::chrono::duration<double>(clock::now() - stopped_at).count();
  if (!exited) {  // the hang this test exists to catch: clean up, then fail
    kill(launcher, SIGKILL);
    waitpid(launcher, &status, 0);
  }
  kill(stopped, SIGKILL);  // mpirun normally has; never leave a stopped process behind
  kill(stopped, SIGCONT);
  ASSERT_TRUE(exited) << "the job still ran 120 s after a rank was stopped";
  EXPECT_LT(waited, 60.0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0) << "status " << status;
  const auto e = test::read_bytes(err);
  const std::string text(e.begin(), e.end());
  EXPECT_NE(text.find("timed out after 2 s"), std::string::npos) << text;
  EXPECT_NE(text.find("FLASHKM_COLLECTIVE_TIMEOUT_S"), std::string::npos) << text;
  EXPECT_FALSE(test::file_exists(dir_.file("m.fkm"))) << "no model may be written";
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
