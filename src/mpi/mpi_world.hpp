// The MPI world of a distributed CLI fit, behind a header without <mpi.h>: the CLI and the
// library compile the same whether MPI is built (src/mpi/) or not (src/mpi_disabled/).
#pragma once

#include <memory>

#include "core/communicator.hpp"

namespace flashkm::mpi {

/// Whether this flashkm was built with MPI (CMake FLASHKM_MPI).
bool built() noexcept;

/// Ranks in the launch environment of this process: OMPI_COMM_WORLD_SIZE (Open MPI),
/// PMI_SIZE (MPICH, Slurm) or PMIX_SIZE; 0 when not started by an MPI launcher.
int launched_size() noexcept;

/// This process's rank among the ranks on its own host: OMPI_COMM_WORLD_LOCAL_RANK,
/// MPI_LOCALRANKID (MPICH), PMIX_LOCAL_RANK or SLURM_LOCALID; 0 when none is set.
int local_rank() noexcept;

/// MPI for the lifetime of the object: MPI_Init on construction, MPI_Finalize on
/// destruction; comm() is MPI_COMM_WORLD as a Communicator. Collectives poll non-blocking MPI
/// calls against collective_timeout_seconds(); on a timeout or a failed MPI call the rank
/// that sees it prints one line "flashkm: error: ..." and calls MPI_Abort (every rank ends,
/// none hangs). Built without MPI, the constructor throws Error(device_unavailable).
class World {
 public:
  World();
  ~World();
  World(const World&) = delete;
  World& operator=(const World&) = delete;
  core::Communicator& comm();

 private:
  std::unique_ptr<core::Communicator> comm_;
};

}  // namespace flashkm::mpi
