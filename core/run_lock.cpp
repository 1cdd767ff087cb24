#include "run_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <utility>

#include "error.h"
#include "text_util.h"

namespace mhc {
namespace fs = std::filesystem;

RunLock::RunLock(const std::string& run_dir) {
  std::error_code ec;
  fs::create_directories(run_dir, ec);
  if (ec) fail("cannot create run directory '{}': {}", run_dir, ec.message());
  const std::string path = run_dir + "/.lock";
  // O_RDWR without O_TRUNC: the holder's line stays readable until we own the lock.
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) fail("cannot create lock file '{}': {}", path, std::strerror(errno));
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    char buf[512] = {0};
    const ssize_t n = ::pread(fd, buf, sizeof(buf) - 1, 0);
    ::close(fd);
    if (err != EWOULDBLOCK) fail("cannot lock '{}': {}", path, std::strerror(err));
    const std::string holder = n > 0 ? trim(std::string(buf, static_cast<size_t>(n))) : "";
    fail("run directory '{}' is in use by another mhc train ({}); wait for it to finish, stop "
         "it, or use another --run-dir",
         run_dir, holder.empty() ? "holder unknown" : holder);
  }
  char host[256] = {0};
  ::gethostname(host, sizeof(host) - 1);
  const std::time_t now = std::time(nullptr);
  char date[64];
  std::strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  const std::string line =
      fmt::format("host {}, pid {}, started {}\n", host, static_cast<long>(::getpid()), date);
  if (::ftruncate(fd, 0) != 0 ||
      ::pwrite(fd, line.data(), line.size(), 0) != static_cast<ssize_t>(line.size())) {
    const int err = errno;
    ::close(fd);
    fail("cannot write lock file '{}': {}", path, std::strerror(err));
  }
  fd_ = fd;
}

RunLock::~RunLock() {
  if (fd_ >= 0) ::close(fd_);  // closing the last descriptor releases the flock
}

RunLock::RunLock(RunLock&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}

RunLock& RunLock::operator=(RunLock&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

}  // namespace mhc
