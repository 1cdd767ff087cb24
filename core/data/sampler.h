// Draws training and validation sequences from a ShardSet as pure functions of their
// index, so any rank and any resumed run can compute its own samples with no state.
#pragma once
#include <cstdint>
#include <vector>

#include "shards.h"

namespace mhc {

class SequenceSampler {
 public:
  // seq_len T: each sample is T inputs and the T next tokens as targets, taken from one
  // shard (every shard must hold at least T + 1 tokens, else MhcError naming it).
  SequenceSampler(const ShardSet& shards, int seq_len, uint64_t seed);

  // Training sample `index`: a window at a position drawn uniformly from all valid
  // windows by a counter-based hash of (seed, index).
  void train_sample(int64_t index, int32_t* inputs, int32_t* targets) const;
  // Validation sample `index`: the index-th consecutive non-overlapping window
  // (wrapping around), the same for every run with the same shards.
  void val_sample(int64_t index, int32_t* inputs, int32_t* targets) const;
  // Number of distinct non-overlapping validation windows.
  int64_t val_windows() const;

 private:
  void window(int64_t global_start, int32_t* inputs, int32_t* targets) const;
  const ShardSet& shards_;
  int T_;
  uint64_t seed_;
  // Per shard: the first window start (in "valid window" space), plus the total at the end.
  std::vector<int64_t> window_begin_;
  int64_t total_windows_ = 0;
  // Per shard: the first validation window's number, plus the total at the end.
  std::vector<int64_t> val_begin_;
};

}  // namespace mhc
