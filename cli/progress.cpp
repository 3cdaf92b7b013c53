#include "progress.hpp"

#include <cstdio>

#include "interrupt.hpp"

namespace flashkm::cli {

FitProgress::FitProgress(int max_iter, int n_init, bool show)
    : max_iter_(max_iter), n_init_(n_init), show_(show), last_event_(Clock::now()) {}

ProgressFn FitProgress::callback() {
  return [this](int run, const IterationInfo& it) { return on_iteration(run, it); };
}

bool FitProgress::on_iteration(int run, const IterationInfo& it) {
  const auto now = Clock::now();
  if (it.iteration == 1) {
    // Everything since the previous run's last iteration (or the start), minus this
    // iteration itself, was spent before the run's first iteration.
    init_ms_ += std::chrono::duration<double, std::milli>(now - last_event_).count() - it.ms;
    run_ms_ = 0;
  }
  run_ms_ += it.ms;
  last_event_ = now;
  // Redraw at most ~20 times a second: fast iterations would otherwise flood the terminal.
  last_run_ = run;
  last_ = it;
  pending_ = true;
  if (show_ && now - last_draw_ > std::chrono::milliseconds(50)) {
    last_draw_ = now;
    draw(run, it);
  }
  return !interrupt_requested();
}

void FitProgress::draw(int run, const IterationInfo& it) {
  constexpr int kWidth = 20;
  const int filled = max_iter_ > 0 ? kWidth * it.iteration / max_iter_ : 0;
  char bar[kWidth + 1];
  for (int i = 0; i < kWidth; ++i) bar[i] = i < filled ? '#' : '.';
  bar[kWidth] = '\0';
  char runs[32] = "";
  if (n_init_ > 1) std::snprintf(runs, sizeof runs, "run %d/%d  ", run + 1, n_init_);
  // \r + erase-to-end-of-line: redraw in place.
  std::fprintf(stderr, "\r\033[K%s[%s] iter %d/%d  inertia %.6g  shift %.3g  %.2f ms/iter", runs, bar, it.iteration,
               max_iter_, it.inertia, it.shift, run_ms_ / it.iteration);
  std::fflush(stderr);
  drawn_ = true;
  pending_ = false;
}

void FitProgress::finish() {
  if (show_ && pending_) draw(last_run_, last_);
  if (drawn_) std::fputc('\n', stderr);
  drawn_ = false;
}

}  // namespace flashkm::cli
