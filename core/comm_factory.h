// Builds the communicator a run asks for (dist.backend) from the launcher's environment
// (Slurm, Open MPI, PMI, torchrun variables; core/dist/rank_env.h).
//
// dist.backend: auto picks
//   one rank                          -> none (single process)
//   several ranks, training on GPUs   -> nccl (bootstrap: MPI under mpirun, else TCP)
//   several ranks on CPUs under MPI   -> mpi
//   several ranks on CPUs, no MPI     -> tcp (rank 0 at MASTER_ADDR:MASTER_PORT)
// none / mpi / nccl force a choice (none with several ranks is an error: every rank would
// train alone into the same run directory; mpi on a GPU is an error: MPI reduces host
// buffers).
#pragma once
#include <memory>
#include <string>

#include "comm.h"
#include "config.h"
#include "dist/rank_env.h"

namespace mhc {

struct CommChoice {
  std::unique_ptr<Communicator> comm;
  std::string reason;  // one line for the log: what was picked and why
  dist::RankEnv env;
};

// MhcError when the request cannot be honoured or the bootstrap fails (after
// dist.timeout_s, naming the missing ranks).
CommChoice make_communicator(const Config& cfg, const dist::RankEnv& env);
CommChoice make_communicator(const Config& cfg);  // from this process's environment

}  // namespace mhc
