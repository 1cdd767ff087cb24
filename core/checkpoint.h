// Checkpoints of a run directory (architecture.md, "Run directory"):
//   <run>/checkpoints/step_00001000/{model.safetensors, optim_rank00000.safetensors, state.json}
//   <run>/checkpoints/latest   (names the newest complete checkpoint)
// A checkpoint is written into a temporary directory, flushed, renamed into place, and
// only then does `latest` move (atomically), so a crash never leaves a half checkpoint
// where a resume would find it. Weights are stored under their export names. state.json,
// written last, records every other file's size and XXH3 checksum plus its own, and
// every load (resume, eval, sample, export, inspect) verifies them.
//
// Data parallel: save() is collective. Rank 0 prepares the temporary directory; then
// rank 0 writes the weights, state and config, and the optimizer state is written by
// rank 0 (replicated: optim_rank00000 holds every tensor's moments by name) or by every
// rank (ZeRO-1: optim_rank%05d holds that rank's flat shard, with its range in the
// metadata); only when every rank has written (an agreement, which also turns a write
// error on any rank into the same error on all) does rank 0 rename the directory into
// place and move `latest`. A restore reads the moments of any range from either layout,
// so a run resumes on another world size, with or without ZeRO.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "comm.h"
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
  // Collective form: every rank of `comm` calls it (see above).
  std::string save(Model& model, AdamW& opt, const TrainState& state, const Config& cfg,
                   const std::string& tokenizer, Communicator& comm);
  // The newest complete checkpoint of this run, or "" when there is none.
  std::string latest() const;
  // `latest` when its files match their checksums, else the newest step_* that does; ""
  // when none does. Each damaged checkpoint passed over is described in `skipped`.
  std::string latest_intact(std::vector<std::string>& skipped) const;
  // Whether the run has any checkpoint directory (intact or not).
  bool has_any() const;

 private:
  void prune(const std::string& keep) const;
  std::vector<std::string> step_dirs() const;  // step_* names, oldest first
  std::string run_dir_;
  int keep_last_;
};

// A checkpoint directory from a path that is a checkpoint, a run directory, or its
// checkpoints/ folder. MhcError when none is found.
std::string resolve_checkpoint(const std::string& path);
// The resolved config stored with a checkpoint.
Config checkpoint_config(const std::string& ckpt_dir);
TrainState read_train_state(const std::string& ckpt_dir);
// Checks every file against the sizes and XXH3 checksums state.json records (and
// state.json against its own checksum); MhcError naming the damaged file otherwise.
void verify_checkpoint_files(const std::string& ckpt_dir);
// The same from state.json's text; `path` names it in errors (the fuzz harness's entry).
TrainState parse_train_state(const std::string& text, const std::string& path);
// JSON text re-written as save() writes state.json, with its own checksum: the fuzz
// harness seals its inputs so that fuzzing reaches the fields behind the checksum.
std::string seal_state_text(const std::string& json_text);
// Checks, without loading into a model, that a checkpoint is complete and readable and
// holds the config's model shape; MhcError naming the problem otherwise.
void validate_checkpoint(const std::string& ckpt_dir, const Config& cfg);
// The optimizer moments m, v of flat elements [begin, end), from either layout.
struct OptimizerMoments {
  std::vector<double> m, v;
  int64_t adam_steps = -1;  // -1 when the file does not say
};
OptimizerMoments read_optimizer_moments(const std::string& ckpt_dir, const Model& model,
                                        int64_t begin, int64_t end);
// Restores weights, optimizer moments (of the range `opt` owns) and step; refuses a
// checkpoint of another model shape, naming the differing keys.
TrainState restore_checkpoint(const std::string& ckpt_dir, const Config& cfg, Model& model,
                              AdamW& opt);

}  // namespace mhc
