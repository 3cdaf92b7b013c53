// Progress of a fit: a one-line bar on stderr when stderr is a terminal (iteration, inertia,
// shift, ms/iter), silence otherwise; and the time spent before each run's first iteration.
#pragma once

#include <chrono>

#include "flashkm/params.hpp"

namespace flashkm::cli {

class FitProgress {
 public:
  /// show: draw the bar (the caller decides: a terminal and not --quiet).
  FitProgress(int max_iter, int n_init, bool show);

  /// The callback for Params::progress. It also stops the fit on Ctrl-C (interrupt.hpp).
  /// The FitProgress must outlive the fit.
  ProgressFn callback();
  /// Show the last iteration and end the bar's line (call after the fit, also when it failed).
  void finish();

  /// Milliseconds before the first iteration of every run, summed (validation, data
  /// attach, initialisation): the fit's time not spent in Lloyd iterations.
  double init_ms() const { return init_ms_; }

 private:
  using Clock = std::chrono::steady_clock;
  bool on_iteration(int run, const IterationInfo& it);
  void draw(int run, const IterationInfo& it);

  int max_iter_, n_init_;
  bool show_;
  bool drawn_ = false;
  bool pending_ = false;  ///< an iteration arrived that the bar does not show yet
  int last_run_ = 0;
  IterationInfo last_{};
  Clock::time_point last_event_;
  Clock::time_point last_draw_{};
  double init_ms_ = 0;
  double run_ms_ = 0;  ///< iteration time of the current run, for the ms/iter average
};

}  // namespace flashkm::cli
