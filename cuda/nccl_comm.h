// NCCL data-parallel communicator over GPU buffers, one rank per GPU. Plain C++ (no CUDA
// headers), so core/comm_factory.cpp can build one. The unique id travels over a host
// communicator (MPI under mpirun, else TCP to MASTER_ADDR:MASTER_PORT), which also
// carries the small host collectives (losses, flags, barriers).
//
// Overlap: collectives run on the communicator's own high-priority stream. Each one
// first waits (cudaStreamWaitEvent) on an event recorded on the backend's compute stream
// (bind_compute_stream), so it starts as soon as the gradients it reads are computed,
// while the compute stream goes on with backward; wait() makes the compute stream wait
// on the collective's completion event, never the host. Without a bound compute stream
// the communicator falls back to synchronising the device (correct, no overlap).
//
// Compiled into mhc_cuda; the NCCL calls are compiled only with MHC_WITH_NCCL (the
// build defines it when it finds NCCL). Otherwise make_nccl_comm() fails clearly.
#pragma once
#include <memory>

#include "comm.h"

namespace mhc {

bool nccl_available();
// The GPU a local rank drives: local_rank modulo the visible devices (0 when a launcher
// already restricted each task to one GPU).
int cuda_device_for_local_rank(int local_rank);
// Collective: every rank of `host` must call it. Takes ownership of `host`. A watchdog
// thread ends the process with a clear error when NCCL initialisation takes longer than
// init_timeout_s or a collective longer than collective_timeout_s, or when NCCL reports
// an asynchronous error (cuda/nccl_watchdog.cuh): a dead peer never hangs the job.
std::unique_ptr<Communicator> make_nccl_comm(std::unique_ptr<Communicator> host, int device,
                                             double init_timeout_s, double collective_timeout_s);

}  // namespace mhc
