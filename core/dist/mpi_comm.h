// Open MPI over host buffers: CPU data-parallel training (and its tests), and the
// bootstrap/host side-channel of NCCL jobs started by mpirun. Compiled when CMake finds
// MPI (MHC_WITH_MPI); make_mpi_comm() fails with a clear message otherwise.
//
// Tensor collectives are non-blocking (MPI_Iallreduce, MPI_Ireduce_scatter,
// MPI_Iallgatherv); progress() tests the outstanding ones so they advance while backward
// computes. A bf16 wire converts to a staging buffer and sums with a user MPI_Op that
// rounds every addition to bf16. Host sums gather every rank's values and add them in
// rank order, so all ranks get the same bits. Every MPI call is checked (MPI_CHECK) and
// a failure throws an MhcError naming the call, file and line.
#pragma once
#include <memory>

#include "comm.h"
#include "dist/rank_env.h"

namespace mhc::dist {

bool mpi_available();  // built with MPI
// Initialises MPI (MPI_THREAD_FUNNELED) unless the process already did; finalises it in
// the destructor when it initialised it.
std::unique_ptr<Communicator> make_mpi_comm();

}  // namespace mhc::dist
