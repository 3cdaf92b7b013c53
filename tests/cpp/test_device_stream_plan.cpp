// The device stream plan (core/device_stream_plan.*): when data stays resident on a device,
// how a streamed pass is cut into chunks, and the error when a budget is too small. Pure
// arithmetic, so it runs in CI without a GPU; the CUDA backend executes the plan.
#include <gtest/gtest.h>

#include <string>

#include "core/device_stream_plan.hpp"
#include "flashkm/error.hpp"

using namespace flashkm;
using core::DeviceStreamInput;
using core::kStreamRowGranule;
using core::plan_device_stream;

namespace {

DeviceStreamInput input(std::int64_t rows, std::int64_t row_bytes, std::int64_t budget) {
  DeviceStreamInput in;
  in.rows = rows;
  in.x_row_bytes = row_bytes;
  in.state_row_bytes = 25.5;
  in.resident_row_bytes = 28;
  in.chunk_row_bytes = 40;
  in.budget = budget;
  in.can_stream = true;
  return in;
}

/// Every row in exactly one chunk, in order; boundaries on granules except the data's end.
void expect_covering(const core::DeviceStreamPlan& p) {
  std::int64_t next = 0, streamed = 0;
  for (std::int64_t i = 0; i < p.chunk_count(); ++i) {
    const auto c = p.chunk(i);
    ASSERT_EQ(c.begin, next) << "chunk " << i;
    ASSERT_GT(c.rows, 0) << "chunk " << i;
    ASSERT_LE(c.rows, p.chunk_rows) << "chunk " << i;
    EXPECT_EQ(c.resident, c.begin < p.resident_rows) << "chunk " << i;
    EXPECT_EQ(c.begin % kStreamRowGranule, 0) << "chunk " << i;
    if (c.begin + c.rows < p.rows) EXPECT_EQ((c.begin + c.rows) % kStreamRowGranule, 0) << "chunk " << i;
    if (!c.resident) EXPECT_EQ(c.streamed_index, streamed++);
    else EXPECT_EQ(c.streamed_index, -1);
    next = c.begin + c.rows;
  }
  EXPECT_EQ(next, p.rows);
}

}  // namespace

TEST(DeviceStreamPlan, ResidentWhenItFits) {
  const auto p = plan_device_stream(input(1 << 20, 256, std::int64_t(1) << 30));
  EXPECT_FALSE(p.streamed);
  EXPECT_EQ(p.resident_rows, 1 << 20);
  EXPECT_EQ(p.chunk_count(), 1);
  EXPECT_EQ(p.chunk(0).rows, 1 << 20);
  EXPECT_TRUE(p.chunk(0).resident);
  EXPECT_LE(p.planned_bytes + p.margin, p.budget);
}

TEST(DeviceStreamPlan, ResidentWhenItCannotStream) {
  auto in = input(1 << 20, 256, 1 << 20);  // far too small, but e.g. device input: never streamed
  in.can_stream = false;
  const auto p = plan_device_stream(in);
  EXPECT_FALSE(p.streamed);
  EXPECT_EQ(p.resident_rows, 1 << 20);
}

TEST(DeviceStreamPlan, StreamedWithResidentPrefix) {
  // The benchmark's shape: N = 200M fp16 rows of D = 128 under 8 GiB.
  const std::int64_t n = 200'000'000, budget = std::int64_t(8) << 30;
  const auto p = plan_device_stream(input(n, 256, budget));
  ASSERT_TRUE(p.streamed);
  EXPECT_EQ(p.chunk_rows % kStreamRowGranule, 0);
  EXPECT_EQ(p.resident_rows % kStreamRowGranule, 0);
  EXPECT_GT(p.resident_rows, 0);
  EXPECT_LT(p.resident_rows, n);
  EXPECT_LE(p.chunk_rows * 256, std::int64_t(64) << 20);
  EXPECT_LE(p.planned_bytes + p.margin, budget);
  EXPECT_GT(p.planned_bytes + p.margin, budget - (std::int64_t(1) << 22) - 256 * kStreamRowGranule)
      << "the prefix should take what the budget leaves";
  expect_covering(p);
  std::printf("N=200M D=128 fp16, 8 GiB: resident %lld rows, chunks of %lld rows, %lld chunks\n",
              (long long)p.resident_rows, (long long)p.chunk_rows, (long long)p.chunk_count());
}

TEST(DeviceStreamPlan, SmallBudgetGivesSeveralChunks) {
  // As the GPU tests force it: 40,000 fp32 rows of D = 32 (5 MB) under 3 MB.
  const auto p = plan_device_stream(input(40000, 128, 3 << 20));
  ASSERT_TRUE(p.streamed);
  EXPECT_EQ(p.chunk_rows, kStreamRowGranule);
  EXPECT_GT(p.resident_rows, 0);
  EXPECT_GE(p.chunk_count() - (p.resident_rows + p.chunk_rows - 1) / p.chunk_rows, 3);
  EXPECT_LE(p.planned_bytes + p.margin, p.budget);
  expect_covering(p);
}

TEST(DeviceStreamPlan, NoPrefixWhenOnlyChunksFit) {
  auto in = input(100000, 128, 0);
  in.state_row_bytes = 12;
  // state 1.2 MB + 3 slots of 2048 rows (0.79 MB) + chunk scratch (0.08 MB), margin 1/16.
  in.budget = static_cast<std::int64_t>((1'200'000 + 2048 * (3 * 128 + 40)) * 16.0 / 15.0) + 4096;
  const auto p = plan_device_stream(in);
  ASSERT_TRUE(p.streamed);
  EXPECT_EQ(p.resident_rows, 0);
  EXPECT_EQ(p.chunk_rows, kStreamRowGranule);
  expect_covering(p);
}

TEST(DeviceStreamPlan, EveryRowResidentBesideTheChunkBuffers) {
  // Over budget for the resident mode's sort buffers, but the rows fit beside the chunk
  // buffers: streamed (chunked update) with nothing to copy per pass.
  auto in = input(50000, 64, 0);
  in.state_row_bytes = 12;
  in.resident_row_bytes = 200;
  in.budget = 50000 * (64 + 12) + 2048 * 3 * (3 * 64 + 40) + (1 << 20);
  in.budget += in.budget / 15;
  const auto p = plan_device_stream(in);
  ASSERT_TRUE(p.streamed);
  EXPECT_EQ(p.resident_rows, 50000);
  EXPECT_EQ(p.streamed_rows(), 0);
  expect_covering(p);
}

TEST(DeviceStreamPlan, TooSmallBudgetNamesTheBytes) {
  try {
    plan_device_stream(input(1'000'000, 512, 10 << 20));
    FAIL() << "expected out_of_memory";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::out_of_memory);
    const std::string m = e.what();
    EXPECT_NE(m.find("10485760 bytes is too small"), std::string::npos) << m;
    EXPECT_NE(m.find("25500000 bytes"), std::string::npos) << m;  // the per-row state
    EXPECT_NE(m.find("max_memory"), std::string::npos) << m;
  }
}

TEST(DeviceStreamPlan, SameInputSamePlan) {
  const auto a = plan_device_stream(input(12'345'678, 512, std::int64_t(3) << 30));
  const auto b = plan_device_stream(input(12'345'678, 512, std::int64_t(3) << 30));
  EXPECT_EQ(a.resident_rows, b.resident_rows);
  EXPECT_EQ(a.chunk_rows, b.chunk_rows);
  EXPECT_EQ(a.streamed, b.streamed);
  expect_covering(a);
}
