// Communicator basics (rank-order sums, failure agreement) and the in-memory communicators:
// one rank (a plain fit in distributed form) and one rank per host thread.
#include "core/communicator.hpp"

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

#include "flashkm/error.hpp"

namespace flashkm::core {

void Communicator::allreduce_sum(double* data, std::size_t n) {
  const std::vector<std::vector<std::byte>> all = allgather(data, n * sizeof(double));
  // Rank 0's values as they are, then ranks 1, 2, ... added in order: one rank returns its
  // own bits, and every rank computes the same sums.
  for (std::size_t r = 0; r < all.size(); ++r) {
    FLASHKM_ASSERT(all[r].size() == n * sizeof(double), "allreduce_sum: ranks passed different lengths");
    const auto* v = reinterpret_cast<const double*>(all[r].data());
    if (r == 0) std::memcpy(data, v, n * sizeof(double));
    else
      for (std::size_t i = 0; i < n; ++i) data[i] += v[i];
  }
}

std::vector<std::vector<std::byte>> Communicator::gather(const void* data, std::size_t bytes, int root) {
  std::vector<std::vector<std::byte>> all = allgather(data, bytes);
  if (rank() != root) return {};
  return all;
}

namespace {

// Failure record exchanged by agree_or_throw: [kind: int32][message bytes]; empty = success.
std::vector<std::byte> failure_record(const std::exception_ptr& failure) {
  if (!failure) return {};
  auto kind = static_cast<std::int32_t>(ErrorKind::internal);
  std::string message;
  try {
    std::rethrow_exception(failure);
  } catch (const Error& e) {
    kind = static_cast<std::int32_t>(e.kind());
    message = e.what();
  } catch (const std::bad_alloc&) {
    kind = static_cast<std::int32_t>(ErrorKind::out_of_memory);
    message = "out of memory (host allocation failed)";
  } catch (const std::exception& e) {
    message = e.what();
  } catch (...) {
    message = "unknown exception";
  }
  if (message.empty()) message = "failed";
  std::vector<std::byte> out(sizeof kind + message.size());
  std::memcpy(out.data(), &kind, sizeof kind);
  std::memcpy(out.data() + sizeof kind, message.data(), message.size());
  return out;
}

}  // namespace

namespace {

/// Throws when any of the records (empty = that rank succeeded) is a failure.
void throw_first_failure(const std::vector<std::vector<std::byte>>& records) {
  int n_failed = 0, first = -1;
  for (int r = 0; r < static_cast<int>(records.size()); ++r)
    if (!records[r].empty()) {
      ++n_failed;
      if (first < 0) first = r;
    }
  if (first < 0) return;
  const std::vector<std::byte>& rec = records[static_cast<std::size_t>(first)];
  std::int32_t kind = 0;
  std::memcpy(&kind, rec.data(), sizeof kind);
  const std::string message(reinterpret_cast<const char*>(rec.data()) + sizeof kind, rec.size() - sizeof kind);
  // The kind survives (invalid input stays invalid_argument); the message says where.
  std::string where = "rank " + std::to_string(first) + " of " + std::to_string(records.size());
  if (n_failed > 1) where += " (and " + std::to_string(n_failed - 1) + " more)";
  throw Error(static_cast<ErrorKind>(kind), where + ": " + message);
}

}  // namespace

void agree_or_throw(Communicator& comm, const std::exception_ptr& local_failure) {
  const std::vector<std::byte> mine = failure_record(local_failure);
  throw_first_failure(comm.allgather(mine.data(), mine.size()));
}

std::vector<std::vector<std::byte>> allgather_step(Communicator& comm,
                                                   const std::function<std::vector<std::byte>()>& local_step) {
  // [0][result bytes] on success, [1][failure record] on failure.
  std::vector<std::byte> mine;
  try {
    std::vector<std::byte> result = local_step();
    mine.reserve(result.size() + 1);
    mine.push_back(std::byte{0});
    mine.insert(mine.end(), result.begin(), result.end());
  } catch (...) {
    const std::vector<std::byte> rec = failure_record(std::current_exception());
    mine.assign(1, std::byte{1});
    mine.insert(mine.end(), rec.begin(), rec.end());
  }
  std::vector<std::vector<std::byte>> all = comm.allgather(mine.data(), mine.size());
  std::vector<std::vector<std::byte>> failures(all.size());
  bool failed = false;
  for (std::size_t r = 0; r < all.size(); ++r) {
    FLASHKM_ASSERT(!all[r].empty(), "allgather_step: a rank sent no status byte");
    if (all[r][0] != std::byte{0}) {
      failures[r].assign(all[r].begin() + 1, all[r].end());
      failed = true;
    }
  }
  if (failed) throw_first_failure(failures);
  for (auto& v : all) v.erase(v.begin());
  return all;
}

double collective_timeout_seconds() {
  const char* env = std::getenv("FLASHKM_COLLECTIVE_TIMEOUT_S");
  if (!env || !*env) return 300.0;
  char* end = nullptr;
  const double s = std::strtod(env, &end);
  FLASHKM_CHECK(end != env && *end == '\0' && s > 0, invalid_argument,
                "FLASHKM_COLLECTIVE_TIMEOUT_S must be a positive number of seconds, got '", env, "'");
  return s;
}

std::string seconds_text(double seconds) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", seconds);  // %g: no trailing zeros
  return buf;
}

namespace {

class SingleCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::vector<std::vector<std::byte>> allgather(const void* data, std::size_t bytes) override {
    const auto* p = static_cast<const std::byte*>(data);
    return {std::vector<std::byte>(p, p + bytes)};
  }
  void allreduce_sum(double*, std::size_t) override {}  // the sum over one rank is itself
  bool device_allreduce_supported(int) const override { return true; }
  bool allreduce_sum_device(double*, std::size_t, int, void*) override { return true; }  // ditto
  void broadcast(void*, std::size_t, int root) override {
    FLASHKM_CHECK(root == 0, invalid_argument, "broadcast root ", root, " does not exist in a communicator of 1 rank");
  }
};

/// What the ranks of one thread group share: a generation-counted barrier whose last
/// arriver publishes every rank's contribution.
struct ThreadGroup {
  explicit ThreadGroup(int n) : size(n), slots(static_cast<std::size_t>(n)) {}
  const int size;
  std::mutex mu;
  std::condition_variable cv;
  std::uint64_t generation = 0;  // completed collectives
  int arrived = 0;
  std::vector<std::vector<std::byte>> slots;      // contributions of the collective in progress
  std::vector<std::vector<std::byte>> published;  // contributions of the last completed one
  std::string broken;                             // set once a rank timed out: all later calls fail
};

class ThreadCommunicator final : public Communicator {
 public:
  ThreadCommunicator(std::shared_ptr<ThreadGroup> group, int rank, double timeout_s)
      : group_(std::move(group)), rank_(rank), timeout_s_(timeout_s) {}
  int rank() const override { return rank_; }
  int size() const override { return group_->size; }

  std::vector<std::vector<std::byte>> allgather(const void* data, std::size_t bytes) override {
    ThreadGroup& g = *group_;
    const auto* p = static_cast<const std::byte*>(data);
    std::unique_lock lock(g.mu);
    check_not_broken(g);
    // A rank enters collective G+1 only after it copied the result of G (below, under the
    // lock), so the last arriver of G+1 may overwrite `published`: every reader is done.
    g.slots[static_cast<std::size_t>(rank_)].assign(p, p + bytes);
    const std::uint64_t mine = g.generation;
    if (++g.arrived == g.size) {
      g.published.swap(g.slots);
      g.slots.assign(static_cast<std::size_t>(g.size), {});
      g.arrived = 0;
      ++g.generation;
      g.cv.notify_all();
    } else {
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s_);
      const bool done = g.cv.wait_until(lock, deadline, [&] { return g.generation != mine || !g.broken.empty(); });
      check_not_broken(g);
      if (!done) {
        g.broken = "collective timed out after " + seconds_text(timeout_s_) + " s on rank " + std::to_string(rank_) +
                   ": " + std::to_string(g.size - g.arrived) +
                   " rank(s) never arrived (a rank died or stopped calling collectives; "
                   "FLASHKM_COLLECTIVE_TIMEOUT_S sets the limit)";
        g.cv.notify_all();
        FLASHKM_FAIL(io, g.broken);
      }
    }
    return g.published;
  }

  void broadcast(void* data, std::size_t bytes, int root) override {
    FLASHKM_CHECK(root >= 0 && root < group_->size, invalid_argument, "broadcast root ", root, " does not exist in a ",
                  "communicator of ", group_->size, " ranks");
    const std::vector<std::vector<std::byte>> all = allgather(data, rank_ == root ? bytes : 0);
    FLASHKM_CHECK(all[static_cast<std::size_t>(root)].size() == bytes, internal, "broadcast: root sent ",
                  all[static_cast<std::size_t>(root)].size(), " bytes, rank ", rank_, " expected ", bytes);
    if (rank_ != root && bytes > 0) std::memcpy(data, all[static_cast<std::size_t>(root)].data(), bytes);
  }

 private:
  static void check_not_broken(const ThreadGroup& g) {
    if (!g.broken.empty()) FLASHKM_FAIL(io, g.broken);
  }

  std::shared_ptr<ThreadGroup> group_;
  int rank_;
  double timeout_s_;
};

}  // namespace

std::unique_ptr<Communicator> make_single_communicator() { return std::make_unique<SingleCommunicator>(); }

std::vector<std::unique_ptr<Communicator>> make_thread_communicators(int n) {
  FLASHKM_CHECK(n >= 1, invalid_argument, "a thread communicator needs at least 1 rank, got ", n);
  const double timeout_s = collective_timeout_seconds();
  auto group = std::make_shared<ThreadGroup>(n);
  std::vector<std::unique_ptr<Communicator>> out;
  for (int r = 0; r < n; ++r) out.push_back(std::make_unique<ThreadCommunicator>(group, r, timeout_s));
  return out;
}

}  // namespace flashkm::core
