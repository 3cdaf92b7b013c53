// How many ranks the MPI launcher started, read from its environment (no MPI call: this is
// also how a build without MPI recognises that it was started by mpirun).
#include <cstdlib>

#include "mpi/mpi_world.hpp"

namespace flashkm::mpi {

int launched_size() noexcept {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"})
    if (const char* v = std::getenv(name)) return std::atoi(v);
  return 0;
}

int local_rank() noexcept {
  for (const char* name : {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "PMIX_LOCAL_RANK", "SLURM_LOCALID"})
    if (const char* v = std::getenv(name)) return std::atoi(v);
  return 0;
}

}  // namespace flashkm::mpi
