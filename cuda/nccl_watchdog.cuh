// A watchdog thread for one NCCL communicator. NCCL has no timeouts of its own: when a
// peer rank dies (out of memory, a node failure), the survivors spin inside a collective
// kernel forever and keep their GPUs. The watchdog polls twice a second and ends the
// process with one error line on stderr and exit code 1 when
//   - ncclCommInitRank has not returned within the init timeout (dist.timeout_s): a peer
//     died between the unique-id broadcast and the NCCL bootstrap;
//   - ncclCommGetAsyncError reports an error (a remote rank or the network failed);
//   - a collective has been queued for longer than the collective timeout
//     (dist.collective_timeout_s) without completing.
// It aborts the communicator first, so the peers' collectives fail too instead of waiting
// for their own timeouts. Only compiled with MHC_WITH_NCCL.
#pragma once
#include <cuda_runtime.h>
#include <nccl.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

namespace mhc::cuda {

class NcclWatchdog {
 public:
  NcclWatchdog(int rank, int device, double init_timeout_s, double collective_timeout_s);
  ~NcclWatchdog();  // stops the thread; never aborts
  NcclWatchdog(const NcclWatchdog&) = delete;
  NcclWatchdog& operator=(const NcclWatchdog&) = delete;

  // The communicator is ready: from now on its asynchronous errors are polled.
  void initialised(ncclComm_t comm);
  // Watches the work queued on `stream` so far (call after each collective).
  void watch(cudaStream_t stream);

 private:
  using Clock = std::chrono::steady_clock;
  struct InFlight {
    cudaEvent_t done;
    Clock::time_point queued;
  };
  void run();
  [[noreturn]] void fail(const char* what, double seconds);

  const int rank_, device_;
  const double init_timeout_s_, collective_timeout_s_;
  const Clock::time_point started_ = Clock::now();
  std::mutex mu_;
  std::condition_variable wake_;
  bool stop_ = false;
  ncclComm_t comm_ = nullptr;
  std::deque<InFlight> in_flight_;  // oldest first
  std::vector<cudaEvent_t> spare_;
  std::thread thread_;
};

}  // namespace mhc::cuda
