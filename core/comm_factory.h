// Builds the communicator a run asks for (dist.backend) from the launcher's
// environment (Slurm, Open MPI, PMI, torchrun variables).
#pragma once
#include <memory>

#include "comm.h"
#include "config.h"

namespace mhc {

std::unique_ptr<Communicator> make_communicator(const Config::Dist& dist);

}  // namespace mhc
