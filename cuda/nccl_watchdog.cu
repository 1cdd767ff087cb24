#include "nccl_watchdog.cuh"

#ifdef MHC_WITH_NCCL
#include <cstdio>
#include <cstdlib>
#include <string>

#include "cuda_check.h"

namespace mhc::cuda {

NcclWatchdog::NcclWatchdog(int rank, int device, double init_timeout_s, double collective_timeout_s)
    : rank_(rank), device_(device), init_timeout_s_(init_timeout_s),
      collective_timeout_s_(collective_timeout_s), thread_([this] { run(); }) {}

NcclWatchdog::~NcclWatchdog() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  thread_.join();
  for (const InFlight& f : in_flight_) cudaEventDestroy(f.done);
  for (cudaEvent_t ev : spare_) cudaEventDestroy(ev);
}

void NcclWatchdog::initialised(ncclComm_t comm) {
  std::lock_guard<std::mutex> lock(mu_);
  comm_ = comm;
}

void NcclWatchdog::watch(cudaStream_t stream) {
  std::lock_guard<std::mutex> lock(mu_);
  cudaEvent_t ev;
  if (!spare_.empty()) {
    ev = spare_.back();
    spare_.pop_back();
  } else {
    CUDA_CHECK(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
  }
  CUDA_CHECK(cudaEventRecord(ev, stream));
  in_flight_.push_back({ev, Clock::now()});
}

void NcclWatchdog::fail(const char* what, double seconds) {
  // Called with mu_ held. Aborting makes the peers' pending collectives fail as well.
  std::fprintf(stderr, "error: rank %d: %s", rank_, what);
  if (seconds > 0) std::fprintf(stderr, " (%.0f s)", seconds);
  std::fprintf(stderr, "; ending this rank\n");
  std::fflush(stderr);
  if (comm_) ncclCommAbort(comm_);
  std::_Exit(1);
}

void NcclWatchdog::run() {
  cudaSetDevice(device_);  // event queries from this thread use the rank's device
  std::unique_lock<std::mutex> lock(mu_);
  while (!wake_.wait_for(lock, std::chrono::milliseconds(500), [this] { return stop_; })) {
    const Clock::time_point now = Clock::now();
    if (!comm_) {
      const double waited = std::chrono::duration<double>(now - started_).count();
      if (waited > init_timeout_s_)
        fail("NCCL initialisation did not finish within dist.timeout_s: a peer rank died or "
             "cannot reach this one (check NCCL_SOCKET_IFNAME and the firewall)", waited);
      continue;
    }
    ncclResult_t async = ncclSuccess;
    if (ncclCommGetAsyncError(comm_, &async) == ncclSuccess && async != ncclSuccess &&
        async != ncclInProgress) {
      const std::string msg = std::string("NCCL reported an asynchronous error: ") +
                              ncclGetErrorString(async) + " (a peer rank or the network failed)";
      fail(msg.c_str(), 0);
    }
    while (!in_flight_.empty()) {
      const InFlight& oldest = in_flight_.front();
      const cudaError_t state = cudaEventQuery(oldest.done);
      if (state == cudaSuccess) {
        spare_.push_back(oldest.done);
        in_flight_.pop_front();
        continue;
      }
      if (state != cudaErrorNotReady) {
        const std::string msg = std::string("CUDA error while a collective ran: ") +
                                cudaGetErrorString(state);
        fail(msg.c_str(), 0);
      }
      const double waited = std::chrono::duration<double>(now - oldest.queued).count();
      if (waited > collective_timeout_s_)
        fail("an NCCL collective did not complete within dist.collective_timeout_s: a peer "
             "rank has probably died or hangs", waited);
      break;
    }
  }
}

}  // namespace mhc::cuda
#endif  // MHC_WITH_NCCL
