// Who am I in a data-parallel job? Read from the launcher's environment variables
// (architecture.md, "Distributed"). The first launcher found wins, in this order:
//   1. torchrun style  RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE (also what
//                      scripts/launch_local.sh sets for one process per GPU)
//   2. Open MPI        OMPI_COMM_WORLD_RANK, _SIZE, _LOCAL_RANK, _LOCAL_SIZE (mpirun)
//   3. PMI             PMI_RANK, PMI_SIZE (MPICH/Hydra, srun --mpi=pmi2), local rank from
//                      MPI_LOCALRANKID or PMI_LOCAL_RANK
//   4. Slurm           SLURM_PROCID, SLURM_STEP_NUM_TASKS (or SLURM_NTASKS), SLURM_LOCALID
// Explicit torchrun-style variables come first because a launcher script may run
// inside a Slurm allocation whose SLURM_* variables describe the allocation, not it.
// MASTER_ADDR / MASTER_PORT name rank 0's TCP rendezvous when there is no MPI.
#pragma once
#include <functional>
#include <string>

namespace mhc::dist {

struct RankEnv {
  int rank = 0;
  int size = 1;
  int local_rank = 0;
  int local_size = 1;
  std::string source = "none";  // torchrun | openmpi | pmi | slurm | none
  bool mpi_launcher = false;    // started by mpirun/mpiexec (MPI_Init will see the job)
  std::string master_addr;      // "" when unset
  int master_port = 0;          // 0 when unset

  std::string describe() const;  // "rank 1 of 4 (local 1), from Open MPI variables"
};

// Reads the variables through `getenv` (tests pass a map). MhcError for malformed or
// inconsistent values (a rank outside [0, size), a non-numeric value, a bad port).
RankEnv detect_rank_env(const std::function<const char*(const char*)>& getenv);
RankEnv detect_rank_env();

}  // namespace mhc::dist
