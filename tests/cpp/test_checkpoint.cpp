// Checkpoint / resume: a fit interrupted after any iteration and resumed from its checkpoint
// returns the model of the uninterrupted fit; damaged or foreign checkpoints are refused.
#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "flashkm/flashkm.hpp"
#include "support/io_fixtures.hpp"
#include "support/reference.hpp"

namespace flashkm {
namespace {

struct Fit {
  Model model;
  std::vector<std::int32_t> labels;
};

Fit run_fit(const std::vector<float>& x, std::int64_t d, Params p) {
  Fit f;
  f.labels.assign(x.size() / d, -1);
  FitArgs args;
  args.labels = f.labels.data();
  f.model = fit(MatrixView::of(x.data(), static_cast<std::int64_t>(x.size()) / d, d), p, args);
  return f;
}

/// Fit with a checkpoint, stopped by the progress callback after iteration `stop_it` of run
/// `stop_run`; expects the interruption.
void interrupted_fit(const std::vector<float>& x, std::int64_t d, Params p, int stop_run, int stop_it) {
  p.progress = [&](int run, const IterationInfo& info) { return !(run == stop_run && info.iteration == stop_it); };
  try {
    run_fit(x, d, p);
    FAIL() << "expected an interruption after run " << stop_run << " iteration " << stop_it;
  } catch (const Error& e) {
    ASSERT_EQ(e.kind(), ErrorKind::interrupted) << e.what();
  }
}

/// Everything but wall times must be the same bits. The per-iteration inertia of the
/// iterations after the resume point is compared bitwise only when `history_inertia`: on the
/// CPU with l2 a resumed run starts with fresh Hamerly bounds, so rows skipped by one run and
/// computed by the other record distances of the two forms (docs/ARCHITECTURE.md).
void expect_same(const Fit& a, const Fit& b, bool history_inertia) {
  const Model &m = a.model, &r = b.model;
  ASSERT_EQ(m.centroids.size(), r.centroids.size());
  EXPECT_EQ(std::memcmp(m.centroids.data(), r.centroids.data(), m.centroids.size() * 4), 0);
  EXPECT_EQ(m.cluster_weight, r.cluster_weight);
  EXPECT_EQ(std::memcmp(&m.inertia, &r.inertia, 8), 0) << m.inertia << " vs " << r.inertia;
  EXPECT_EQ(m.n_iter, r.n_iter);
  EXPECT_EQ(m.converged, r.converged);
  EXPECT_EQ(a.labels, b.labels);
  ASSERT_EQ(m.history.size(), r.history.size());
  for (std::size_t i = 0; i < m.history.size(); ++i) {
    EXPECT_EQ(m.history[i].iteration, r.history[i].iteration);
    EXPECT_EQ(m.history[i].shift, r.history[i].shift) << "iteration " << i + 1;
    EXPECT_EQ(m.history[i].n_changed, r.history[i].n_changed) << "iteration " << i + 1;
    if (history_inertia) EXPECT_EQ(m.history[i].inertia, r.history[i].inertia) << "iteration " << i + 1;
    else EXPECT_NEAR(m.history[i].inertia, r.history[i].inertia, 1e-6 * r.history[i].inertia);
  }
}

Params base_params(std::int64_t k) {
  Params p;
  p.n_clusters = k;
  p.max_iter = 12;
  p.tol = 0;
  p.seed = 11;
  p.n_threads = 2;
  return p;
}

class Resume : public ::testing::TestWithParam<std::tuple<Metric, int>> {};

// Interrupt after every possible iteration of a run, resume, compare with the straight fit.
TEST_P(Resume, GivesTheUninterruptedModel) {
  const auto [metric, every] = GetParam();
  const std::int64_t n = 6000, d = 9, k = 24;
  const auto x = testing::uniform(n, d, 5);
  Params p = base_params(k);
  p.metric = metric;
  const Fit straight = run_fit(x, d, p);
  ASSERT_GE(straight.model.n_iter, 4);
  test::TempDir dir;
  const int last = straight.model.n_iter;
  for (int stop : {1, 2, 3, last - 1, last}) {
    SCOPED_TRACE("interrupted after iteration " + std::to_string(stop));
    Params c = p;
    c.checkpoint_path = dir.file("fit.ckpt");
    c.checkpoint_every = every;
    interrupted_fit(x, d, c, 0, stop);
    const int saved = stop / every * every;
    ASSERT_EQ(test::file_exists(c.checkpoint_path), saved > 0);
    c.resume = true;
    int first_reported = 0;
    c.progress = [&](int, const IterationInfo& info) {
      if (first_reported == 0) first_reported = info.iteration;
      return true;
    };
    const Fit resumed = run_fit(x, d, c);
    // resumed from the last saved iteration, not from the beginning
    if (saved < straight.model.n_iter) EXPECT_EQ(first_reported, saved + 1);
    expect_same(straight, resumed, metric != Metric::l2);
    std::remove(c.checkpoint_path.c_str());
  }
}

INSTANTIATE_TEST_SUITE_P(Metrics, Resume,
                         ::testing::Combine(::testing::Values(Metric::l2, Metric::cosine, Metric::inner_product),
                                            ::testing::Values(1, 3)));

TEST(Checkpoint, ResumesAcrossRunsOfNInit) {
  const std::int64_t n = 5000, d = 6, k = 16;
  const auto x = testing::uniform(n, d, 8);
  Params p = base_params(k);
  p.n_init = 3;
  p.max_iter = 6;
  p.metric = Metric::cosine;  // no bounds: the history must match bit for bit
  // Every run's records, not only the best run's (which the model keeps).
  std::map<std::pair<int, int>, IterationInfo> records;
  p.progress = [&](int run, const IterationInfo& info) {
    records[{run, info.iteration}] = info;
    return true;
  };
  const Fit straight = run_fit(x, d, p);
  ASSERT_EQ(records.size(), 3u * p.max_iter);
  test::TempDir dir;
  // (run, iteration, checkpoint_every): with every = 4 the last save before run 1's iteration
  // 2 is the end of run 0, so run 1 starts afresh on a new backend.
  for (const auto [run, it, every] : {std::tuple{0, 6, 1}, std::tuple{1, 2, 1}, std::tuple{2, 5, 1},
                                      std::tuple{1, 2, 4}, std::tuple{2, 3, 4}}) {
    SCOPED_TRACE("interrupted in run " + std::to_string(run) + " after iteration " + std::to_string(it) +
                 ", checkpoint_every " + std::to_string(every));
    Params c = p;
    c.checkpoint_path = dir.file("n_init.ckpt");
    c.checkpoint_every = every;
    interrupted_fit(x, d, c, run, it);
    c.resume = true;
    int first_run = -1, seen = 0;
    c.progress = [&](int r, const IterationInfo& info) {
      if (first_run < 0) first_run = r;
      const IterationInfo& want = records.at({r, info.iteration});
      EXPECT_EQ(info.inertia, want.inertia) << "run " << r << " iteration " << info.iteration;
      EXPECT_EQ(info.shift, want.shift) << "run " << r << " iteration " << info.iteration;
      EXPECT_EQ(info.n_changed, want.n_changed) << "run " << r << " iteration " << info.iteration;
      ++seen;
      return true;
    };
    expect_same(straight, run_fit(x, d, c), true);
    const int saved = every == 1 ? it : 0;  // iterations of `run` in the checkpoint
    EXPECT_EQ(first_run, run + (saved == p.max_iter ? 1 : 0));  // earlier runs are not redone
    EXPECT_EQ(seen, 3 * p.max_iter - (run * p.max_iter + saved));
    std::remove(c.checkpoint_path.c_str());
  }
}

TEST(Checkpoint, ResumeWithoutAFileStartsFromTheBeginning) {
  const std::int64_t d = 4;
  const auto x = testing::uniform(3000, d, 3);
  Params p = base_params(8);
  const Fit straight = run_fit(x, d, p);
  test::TempDir dir;
  p.checkpoint_path = dir.file("none_yet.ckpt");
  p.resume = true;
  expect_same(straight, run_fit(x, d, p), true);
  EXPECT_TRUE(test::file_exists(p.checkpoint_path));  // kept: the caller decides when it is stale
}

class CheckpointErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    p_ = base_params(8);
    p_.checkpoint_path = dir_.file("c.ckpt");
    interrupted_fit(x_, d_, p_, 0, 3);
    p_.resume = true;
  }
  std::string error_of(const std::vector<float>& x, const Params& p, ErrorKind want) {
    try {
      run_fit(x, d_, p);
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), want) << e.what();
      return e.what();
    }
    ADD_FAILURE() << "expected an error";
    return {};
  }
  const std::int64_t d_ = 5;
  const std::vector<float> x_ = testing::uniform(2500, 5, 9);
  test::TempDir dir_;
  Params p_;
};

TEST_F(CheckpointErrors, ExistingFileWithoutResumeIsNotOverwritten) {
  const auto before = test::read_bytes(p_.checkpoint_path);
  Params p = p_;
  p.resume = false;
  const std::string msg = error_of(x_, p, ErrorKind::invalid_argument);
  EXPECT_NE(msg.find("already exists"), std::string::npos) << msg;
  EXPECT_EQ(test::read_bytes(p_.checkpoint_path), before);
}

TEST_F(CheckpointErrors, CorruptedByteIsAFormatError) {
  auto bytes = test::read_bytes(p_.checkpoint_path);
  for (std::size_t at : {std::size_t{20}, std::size_t{130}, bytes.size() / 2, bytes.size() - 1}) {
    auto bad = bytes;
    bad[at] ^= 0x10;
    test::write_bytes(p_.checkpoint_path, bad);
    const std::string msg = error_of(x_, p_, ErrorKind::format);
    EXPECT_NE(msg.find("checksum mismatch"), std::string::npos) << msg;
    EXPECT_NE(msg.find(p_.checkpoint_path), std::string::npos) << msg;
  }
  test::write_bytes(p_.checkpoint_path, bytes.data(), 100);
  EXPECT_NE(error_of(x_, p_, ErrorKind::format).find("truncated"), std::string::npos);
  test::write_bytes(p_.checkpoint_path, "FLASHKM", 8);
  EXPECT_NE(error_of(x_, p_, ErrorKind::format).find("bad magic"), std::string::npos);
}

TEST_F(CheckpointErrors, AnotherFitsCheckpointNamesTheDifference) {
  Params p = p_;
  p.n_clusters = 9;
  EXPECT_NE(error_of(x_, p, ErrorKind::invalid_argument).find("n_clusters is 8 there and 9 here"), std::string::npos);
  p = p_;
  p.seed = 12;
  EXPECT_NE(error_of(x_, p, ErrorKind::invalid_argument).find("seed"), std::string::npos);
  // Same shape, one value changed in a sampled row (the last row is always sampled).
  auto y = x_;
  y.back() += 0.5f;
  EXPECT_NE(error_of(y, p_, ErrorKind::invalid_argument).find("sampled data rows"), std::string::npos);
  auto fewer = std::vector<float>(x_.begin(), x_.end() - d_);
  EXPECT_NE(error_of(fewer, p_, ErrorKind::invalid_argument).find("n_samples"), std::string::npos);
  // Nothing was overwritten by the refused fits: the right one still resumes.
  EXPECT_NO_THROW(run_fit(x_, d_, p_));
}

TEST(CheckpointParams, UnwritablePathFailsBeforeAnyWork) {
  const auto x = testing::uniform(500, 3, 2);
  Params p = base_params(4);
  test::TempDir dir;
  p.checkpoint_path = dir.file("no/such/dir/c.ckpt");
  int iterations = 0;
  p.progress = [&](int, const IterationInfo&) { return ++iterations > 0; };
  try {
    run_fit(x, 3, p);
    FAIL() << "expected an io error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::io) << e.what();
    EXPECT_NE(std::string(e.what()).find("no/such/dir"), std::string::npos) << e.what();
  }
  EXPECT_EQ(iterations, 0);
  EXPECT_TRUE(dir.entries().empty());
}

TEST(CheckpointParams, AreValidated) {
  Params p;
  p.checkpoint_every = 0;
  EXPECT_THROW(validate(p), Error);
  p = Params{};
  p.resume = true;  // without a path
  EXPECT_THROW(validate(p), Error);
}

}  // namespace
}  // namespace flashkm
