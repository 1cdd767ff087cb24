// One writer per run directory: an exclusive flock(2) on <run>/.lock, held for the whole
// training. The kernel drops it when the process dies (crash, SIGKILL), so a lock is
// never stale; the file only tells a second writer who holds it (host, pid, start time).
#pragma once
#include <string>

namespace mhc {

class RunLock {
 public:
  RunLock() = default;
  // Creates the run directory when needed and takes its lock; MhcError naming the path and
  // the system's reason when it cannot, or the holder when another process has it.
  explicit RunLock(const std::string& run_dir);
  ~RunLock();
  RunLock(RunLock&& other) noexcept;
  RunLock& operator=(RunLock&& other) noexcept;
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;

  bool held() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

}  // namespace mhc
