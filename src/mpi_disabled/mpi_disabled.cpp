// Built instead of src/mpi/ when MPI is off: asking for a distributed run is an error that
// says so, never a silent fallback to N independent single-process fits.
#include "flashkm/error.hpp"
#include "mpi/mpi_world.hpp"

namespace flashkm::mpi {

bool built() noexcept { return false; }

World::World() {
  FLASHKM_FAIL(device_unavailable,
               "distributed fit requested, but this flashkm was built without MPI "
               "(install libopenmpi-dev and configure with -DFLASHKM_MPI=ON)");
}
World::~World() = default;
core::Communicator& World::comm() { return *comm_; }

}  // namespace flashkm::mpi
