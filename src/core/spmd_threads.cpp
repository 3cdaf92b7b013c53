#include "core/spmd_threads.hpp"

#include <exception>
#include <mutex>
#include <thread>

#include "core/distributed_fit.hpp"
#include "flashkm/error.hpp"

namespace flashkm::core {

std::vector<RowRange> shard_rows(std::int64_t n, int ranks) {
  FLASHKM_ASSERT(ranks >= 1, "shard_rows needs at least one rank");
  std::vector<RowRange> s(static_cast<std::size_t>(ranks));
  const std::int64_t base = n / ranks, extra = n % ranks;
  std::int64_t row0 = 0;
  for (int r = 0; r < ranks; ++r) {
    s[r].row0 = row0;
    s[r].rows = base + (r < extra ? 1 : 0);
    row0 += s[r].rows;
  }
  return s;
}

Model fit_on_threads(const MatrixView& x, const std::vector<Params>& rank_params, const FitArgs& args,
                     const std::vector<Communicator*>& comms, const PlaceShardFn& place,
                     const std::function<void()>& cancel_all) {
  const int ranks = static_cast<int>(comms.size());
  FLASHKM_ASSERT(ranks >= 1 && rank_params.size() == comms.size(), "fit_on_threads: one Params per rank");
  FLASHKM_CHECK(x.rows >= ranks, invalid_argument, "n_samples=", x.rows, " is smaller than the number of ranks (",
                ranks, "): every rank needs at least one row");
  const std::vector<RowRange> shards = shard_rows(x.rows, ranks);

  std::mutex mu;
  std::exception_ptr first_failure;
  Model model;
  auto run_rank = [&](int r) {
    try {
      MatrixView shard = x;
      shard.data = x.row(shards[r].row0);
      shard.rows = shards[r].rows;
      std::shared_ptr<void> keep;
      std::exception_ptr placed;
      try {
        if (place) keep = place(r, shard);
      } catch (...) {
        placed = std::current_exception();
      }
      agree_or_throw(*comms[r], placed);
      // The shard's own rows: its weights in, its labels out.
      FitArgs a = args;
      if (a.sample_weight) a.sample_weight += shards[r].row0;
      if (a.labels) a.labels += shards[r].row0;
      Params p = rank_params[r];
      if (r != 0) p.progress = nullptr;  // one report per iteration; rank 0 stops the others
      Model m = fit_distributed(shard, p, a, *comms[r]);
      if (r == 0) model = std::move(m);
    } catch (...) {
      bool first = false;
      {
        std::lock_guard<std::mutex> lock(mu);
        if (!first_failure) {
          first_failure = std::current_exception();
          first = true;
        }
      }
      // Failures after the agreed steps (rank 0's progress stop, a lost peer) leave the other
      // ranks waiting in a collective: cancel them. Agreed failures: every rank throws anyway.
      if (first && cancel_all) cancel_all();
    }
  };
  // Rank 0 runs on the caller's thread: the progress callback is called where a plain fit
  // calls it (Python checks Ctrl-C there: signals reach the main thread only).
  std::vector<std::thread> threads;
  threads.reserve(static_cast<std::size_t>(ranks));
  for (int r = 1; r < ranks; ++r) threads.emplace_back(run_rank, r);
  run_rank(0);
  for (auto& t : threads) t.join();
  // Agreed failures already name the failed rank; so do the communicators' own errors.
  if (first_failure) std::rethrow_exception(first_failure);
  return model;
}

}  // namespace flashkm::core
