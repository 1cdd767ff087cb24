#include "comm_factory.h"

#include "error.h"

namespace mhc {

std::unique_ptr<Communicator> make_communicator(const Config::Dist& dist) {
  if (dist.backend == "mpi" || dist.backend == "nccl")
    fail("dist.backend={} is not available in this build", dist.backend);
  return std::make_unique<SingleProcessComm>();
}

}  // namespace mhc
