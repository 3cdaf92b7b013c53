// Ctrl-C during a fit: the first SIGINT/SIGTERM asks the fit to stop at the end of the
// current iteration (the progress callback returns false), so that the command unwinds and
// removes its temporary files; a second signal kills the process as usual.
#pragma once

namespace flashkm::cli {

void install_interrupt_handler();
bool interrupt_requested() noexcept;

}  // namespace flashkm::cli
