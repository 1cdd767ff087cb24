// The training loop: data → forward/backward (with gradient accumulation) → gradient
// all-reduce → clip → AdamW, with periodic logging, validation (+ Amax gains),
// checkpoints and bit-identical resume.
#pragma once
#include <atomic>
#include <memory>
#include <string>

#include <spdlog/logger.h>

#include "comm.h"
#include "config.h"

namespace mhc {

struct TrainOptions {
  std::string run_dir;              // empty: <run.dir>/<run.name>
  std::string resume;               // "", "auto" or a checkpoint/run path
  std::string command_line;         // recorded in cmdline.txt
  const std::atomic<bool>* stop_requested = nullptr;  // set by SIGTERM/SIGUSR1
  int64_t stop_at_step = 0;         // > 0: checkpoint and return once this step is done
  bool overwrite = false;           // start over in a run directory that has checkpoints
};

struct TrainResult {
  int64_t steps_done = 0;
  double final_train_loss = 0;
  double initial_val_loss = 0;      // NaN when resumed
  double final_val_loss = 0;
  std::string run_dir;
  std::string last_checkpoint;
  bool stopped_early = false;       // by a stop request
};

// Runs the whole training described by cfg. Throws MhcError on bad input or a
// non-finite loss (after which the last good checkpoint is left intact).
TrainResult train(const Config& cfg, const TrainOptions& options, Communicator& comm,
                  std::shared_ptr<spdlog::logger> log);

// Where a config's run lives when no --run-dir is given.
std::string default_run_dir(const Config& cfg);

}  // namespace mhc
