// Communicator over MPI: variable-size allgather/gather and broadcast as non-blocking MPI
// collectives, polled against a time limit so that a dead or diverged rank ends the job
// with a message instead of hanging it.
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include "flashkm/error.hpp"
#include "mpi/mpi_world.hpp"

namespace flashkm::mpi {
namespace {

class MpiCommunicator final : public core::Communicator {
 public:
  explicit MpiCommunicator(double timeout_s) : timeout_s_(timeout_s) {
    // A private copy of the world: our collectives never match anyone else's.
    check(MPI_Comm_dup(MPI_COMM_WORLD, &comm_), "MPI_Comm_dup");
    check(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
    check(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
    check(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
  }
  ~MpiCommunicator() override { MPI_Comm_free(&comm_); }

  int rank() const override { return rank_; }
  int size() const override { return size_; }

  std::vector<std::vector<std::byte>> allgather(const void* data, std::size_t bytes) override {
    const std::vector<int> counts = exchange_counts(bytes, -1);
    std::vector<int> displs;
    std::vector<std::byte> buf(layout(counts, displs));
    MPI_Request req;
    check(MPI_Iallgatherv(data, static_cast<int>(bytes), MPI_BYTE, buf.data(), counts.data(), displs.data(), MPI_BYTE,
                          comm_, &req),
          "MPI_Iallgatherv");
    wait(req, "MPI_Iallgatherv");
    return split(buf, counts, displs);
  }

  std::vector<std::vector<std::byte>> gather(const void* data, std::size_t bytes, int root) override {
    const std::vector<int> counts = exchange_counts(bytes, root);
    std::vector<int> displs;
    std::vector<std::byte> buf(rank_ == root ? layout(counts, displs) : 0);
    MPI_Request req;
    check(MPI_Igatherv(data, static_cast<int>(bytes), MPI_BYTE, buf.data(), counts.data(), displs.data(), MPI_BYTE,
                       root, comm_, &req),
          "MPI_Igatherv");
    wait(req, "MPI_Igatherv");
    if (rank_ != root) return {};
    return split(buf, counts, displs);
  }

  void broadcast(void* data, std::size_t bytes, int root) override {
    if (bytes > INT_MAX) fatal("a broadcast of " + std::to_string(bytes) + " bytes exceeds MPI's 2 GiB count");
    MPI_Request req;
    check(MPI_Ibcast(data, static_cast<int>(bytes), MPI_BYTE, root, comm_, &req), "MPI_Ibcast");
    wait(req, "MPI_Ibcast");
  }

 private:
  /// Every rank's byte count (to every rank, or to `root` only when root >= 0).
  std::vector<int> exchange_counts(std::size_t bytes, int root) {
    // Fatal, not an exception: the other ranks are already inside this collective.
    if (bytes > INT_MAX) fatal("a collective of " + std::to_string(bytes) + " bytes from one rank exceeds MPI's 2 GiB count");
    const int mine = static_cast<int>(bytes);
    std::vector<int> counts(static_cast<std::size_t>(size_), 0);
    MPI_Request req;
    if (root < 0) check(MPI_Iallgather(&mine, 1, MPI_INT, counts.data(), 1, MPI_INT, comm_, &req), "MPI_Iallgather");
    else check(MPI_Igather(&mine, 1, MPI_INT, counts.data(), 1, MPI_INT, root, comm_, &req), "MPI_Igather");
    wait(req, root < 0 ? "MPI_Iallgather" : "MPI_Igather");
    return counts;
  }

  /// Displacements of the counts; returns the total bytes.
  std::size_t layout(const std::vector<int>& counts, std::vector<int>& displs) {
    displs.assign(counts.size(), 0);
    std::size_t total = 0;
    for (std::size_t r = 0; r < counts.size(); ++r) {
      if (total > INT_MAX) fatal("a collective of more than 2 GiB in all exceeds MPI's count");
      displs[r] = static_cast<int>(total);
      total += static_cast<std::size_t>(counts[r]);
    }
    return total;
  }

  static std::vector<std::vector<std::byte>> split(const std::vector<std::byte>& buf, const std::vector<int>& counts,
                                                   const std::vector<int>& displs) {
    std::vector<std::vector<std::byte>> out(counts.size());
    for (std::size_t r = 0; r < counts.size(); ++r)
      out[r].assign(buf.begin() + displs[r], buf.begin() + displs[r] + counts[r]);
    return out;
  }

  /// Polls `req` until it completes. Spins briefly (collectives of ranks in step finish in
  /// microseconds), then sleeps between tests so that a waiting rank leaves its core to the
  /// computing ones. Past the time limit the job cannot continue: report and abort.
  void wait(MPI_Request& req, const char* what) {
    const auto start = std::chrono::steady_clock::now();
    const auto deadline = start + std::chrono::duration<double>(timeout_s_);
    auto nap = std::chrono::microseconds(10);
    for (int polls = 0;; ++polls) {
      int done = 0;
      check(MPI_Test(&req, &done, MPI_STATUS_IGNORE), what);
      if (done) return;
      if (polls < 2000) continue;
      if (std::chrono::steady_clock::now() > deadline)
        fatal(std::string(what) + " timed out after " + core::seconds_text(timeout_s_) +
              " s (a rank died or stopped calling collectives; FLASHKM_COLLECTIVE_TIMEOUT_S sets the limit)");
      std::this_thread::sleep_for(nap);
      nap = std::min(nap * 2, std::chrono::microseconds(500));
    }
  }

  void check(int rc, const char* what) {
    if (rc == MPI_SUCCESS) return;
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, text, &len);
    fatal(std::string(what) + " failed: " + std::string(text, static_cast<std::size_t>(len)));
  }

  /// One line from the rank that saw it, then the whole job ends: the other ranks may be
  /// blocked in a collective that can no longer complete.
  [[noreturn]] void fatal(const std::string& message) const {
    std::fprintf(stderr, "flashkm: error: rank %d of %d: %s\n", rank_, size_, message.c_str());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
    std::_Exit(1);  // MPI_Abort does not return; this is for the compiler
  }

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1;
  double timeout_s_;
};

}  // namespace

bool built() noexcept { return true; }

World::World() {
  const double timeout_s = core::collective_timeout_seconds();  // a bad value fails before MPI starts
  int initialized = 0;
  MPI_Initialized(&initialized);
  FLASHKM_CHECK(!initialized, internal, "MPI is already initialised: one mpi::World per process");
  // Only the main thread calls MPI (the OpenMP threads of the local backend never do).
  int provided = 0;
  FLASHKM_CHECK(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided) == MPI_SUCCESS, io,
                "MPI_Init_thread failed");
  comm_ = std::make_unique<MpiCommunicator>(timeout_s);
}

World::~World() {
  comm_.reset();
  MPI_Finalize();
}

core::Communicator& World::comm() { return *comm_; }

}  // namespace flashkm::mpi
