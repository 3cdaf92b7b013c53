// Params::device_ids (multi-GPU fit): the checks that need no GPU, run in CI. The GPU side
// is tests/gpu/test_multigpu.cpp.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "flashkm/error.hpp"
#include "flashkm/kmeans.hpp"

namespace flashkm {
namespace {

/// The error fit() throws for `p` on a small host matrix (internal when none: fails EXPECTs).
Error fit_error(const Params& p) {
  std::vector<float> x(200 * 4);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 17);
  try {
    fit(MatrixView::of(x.data(), 200, 4), p);
  } catch (const Error& e) {
    return e;
  }
  return Error(ErrorKind::internal, "no error");
}

Params with_ids(Device device, std::vector<int> ids) {
  Params p;
  p.n_clusters = 3;
  p.device = device;
  p.device_ids = std::move(ids);
  return p;
}

void expect_error(const Params& p, ErrorKind kind, const std::string& needle) {
  const Error e = fit_error(p);
  EXPECT_EQ(e.kind(), kind) << e.what();
  EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  // validate() alone says the same for the caller errors (what the CLI calls before reading data).
  if (kind == ErrorKind::invalid_argument) EXPECT_THROW(validate(p), Error);
}

TEST(MultiGpuParams, DeviceIdsNeedCuda) {
  expect_error(with_ids(Device::cpu, {0, 1}), ErrorKind::invalid_argument, "device_ids (multi-GPU) needs device 'cuda'");
  expect_error(with_ids(Device::cpu, {0}), ErrorKind::invalid_argument, "needs device 'cuda'");
}

TEST(MultiGpuParams, DuplicateAndNegativeIds) {
  expect_error(with_ids(Device::cuda, {0, 1, 0}), ErrorKind::invalid_argument, "lists CUDA device 0 twice (at 0 and 2)");
  expect_error(with_ids(Device::cuda, {1, -2}), ErrorKind::invalid_argument, "device_ids[1] must be >= 0, got -2");
}

TEST(MultiGpuParams, EmptyIsTheSingleDevice) {
  Params p;
  p.n_clusters = 3;
  EXPECT_NO_THROW(validate(p));
  EXPECT_TRUE(p.device_ids.empty());
}

TEST(MultiGpuParams, WithoutGpusTheRequestFailsClearly) {
  if (device_available(Device::cuda)) GTEST_SKIP() << "a GPU is present: tests/gpu/test_multigpu.cpp covers this";
  // Never a silent CPU fit: device_unavailable, naming what is missing.
  const Error e = fit_error(with_ids(Device::cuda, {0, 1}));
  EXPECT_EQ(e.kind(), ErrorKind::device_unavailable) << e.what();
  const std::string msg = e.what();
  EXPECT_TRUE(msg.find("without CUDA") != std::string::npos || msg.find("without NCCL") != std::string::npos ||
              msg.find("none is present") != std::string::npos)
      << msg;
}

}  // namespace
}  // namespace flashkm
