// Checkpoints of a run directory (architecture.md, "Run directory"):
//   <run>/checkpoints/step_00001000/{model.safetensors, optim_rank00000.safetensors, state.json}
//   <run>/checkpoints/latest   (names the newest complete checkpoint)
// A checkpoint is written into a temporary directory, flushed, renamed into place, and
// only then does `latest` move (atomically), so a crash never leaves a half checkpoint
// where a resume would find it. Weights are stored under their export names.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "config.h"
#include "model.h"
#include "optimizer.h"

namespace mhc {

constexpr const char* kFormatVersion = "mhc-checkpoint-1";

struct TrainState {
  int64_t step = 0;         // optimizer steps completed
  int64_t tokens_seen = 0;
  int64_t next_sample = 0;  // global index of the next training sample
  uint64_t seed = 0;
  int world_size = 1;
  double elapsed_s = 0;     // training wall time so far
  double last_val_loss = 0;
};

// Writes the master weights (F32, or F64 when the master dtype is f64) under export names.
void write_weights(const std::string& path, Model& model, const Config& cfg,
                   const std::string& tokenizer, bool bf16 = false);
// Loads weights by name into the model (padded vocabulary rows stay zero); checks shapes.
void read_weights(const std::string& path, Model& model);

class CheckpointManager {
 public:
  CheckpointManager(std::string run_dir, int keep_last);
  // Saves step `state.step`; returns the checkpoint directory.
  std::string save(Model& model, AdamW& opt, const TrainState& state, const Config& cfg,
                   const std::string& tokenizer);
  // The newest complete checkpoint of this run, or "" when there is none.
  std::string latest() const;

 private:
  void prune(const std::string& keep) const;
  std::string run_dir_;
  int keep_last_;
};

// A checkpoint directory from a path that is a checkpoint, a run directory, or its
// checkpoints/ folder. MhcError when none is found.
std::string resolve_checkpoint(const std::string& path);
// The resolved config stored with a checkpoint.
Config checkpoint_config(const std::string& ckpt_dir);
TrainState read_train_state(const std::string& ckpt_dir);
// Checks, without loading into a model, that a checkpoint is complete and readable and
// holds the config's model shape; MhcError naming the problem otherwise.
void validate_checkpoint(const std::string& ckpt_dir, const Config& cfg);
// Restores weights, optimizer moments and step; refuses a checkpoint of another model
// shape, naming the differing keys.
TrainState restore_checkpoint(const std::string& ckpt_dir, const Config& cfg, Model& model,
                              AdamW& opt);

}  // namespace mhc
