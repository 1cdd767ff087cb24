// Errors. A user error (bad config, bad data, bad checkpoint) is an MhcError: the
// command line prints its one-line message and exits non-zero. Internal invariants use
// MHC_CHECK, which throws InternalError with the file and line.
#pragma once
#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace mhc {

class MhcError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// An outcome that ends a command with its own documented exit status (not 1, a user
// error): e.g. a training run that diverged. main prints the message and returns status.
class ExitWithStatus : public std::runtime_error {
 public:
  ExitWithStatus(int status, const std::string& message)
      : std::runtime_error(message), status_(status) {}
  int status() const { return status_; }

 private:
  int status_;
};

class InternalError : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

template <class... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw MhcError(fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace mhc

#define MHC_CHECK(cond)                                                                  \
  do {                                                                                   \
    if (!(cond))                                                                         \
      throw ::mhc::InternalError(std::string("internal check failed: ") + #cond + " at " + \
                                 __FILE__ + ":" + std::to_string(__LINE__));             \
  } while (0)
