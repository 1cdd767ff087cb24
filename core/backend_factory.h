// Picks and builds the backend a run asks for (train.device, train.precision,
// train.threads): auto uses CUDA when a GPU is usable, else the CPU.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "backend.h"
#include "config.h"

namespace mhc {

struct BackendChoice {
  std::unique_ptr<Backend> backend;
  std::string reason;  // one line for the log: what was picked and why
  int64_t memory_bytes = 0;  // the GPU's memory (total), or the host's RAM for the CPU backend
};

// local_rank selects the GPU. MhcError when train.device=cuda cannot be honoured.
BackendChoice make_backend(const Config::Train& train, int local_rank = 0);

// Whether this binary was built with the CUDA backend.
bool built_with_cuda();

}  // namespace mhc
