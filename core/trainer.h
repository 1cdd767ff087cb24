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
  // The loss went NaN/Inf or above train.diverge_loss: the run stopped at that step
  // without updating the weights or saving, after a `diverged` metrics record.
  bool diverged = false;
  std::string diverged_reason;
};

// Exit status of `mhc train` for a run that diverged (a result, not an error: sweeps
// record it and go on). 1 is a user error, 2 an internal one.
inline constexpr int kExitDiverged = 3;

// The training loss above which a run counts as diverged: train.diverge_loss, or
// 1.5·ln(vocab_size) when that is 0 (an untrained model starts near ln(vocab_size)).
double divergence_threshold(const Config& cfg);

// Runs the whole training described by cfg. Throws MhcError on bad input. A diverged run
// returns with `diverged` set (the last good checkpoint is left intact).
TrainResult train(const Config& cfg, const TrainOptions& options, Communicator& comm,
                  std::shared_ptr<spdlog::logger> log);

// Where a config's run lives when no --run-dir is given.
std::string default_run_dir(const Config& cfg);

}  // namespace mhc
