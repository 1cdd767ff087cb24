#include "data/sampler.h"

#include <algorithm>

#include "error.h"
#include "rng.h"

namespace mhc {

namespace {

// Index of the shard whose range [begin[i], begin[i+1]) holds `n` (begin ends with the total).
size_t find_shard(const std::vector<int64_t>& begin, int64_t n) {
  auto it = std::upper_bound(begin.begin(), begin.end(), n);
  return static_cast<size_t>(it - begin.begin()) - 1;
}

}  // namespace

// The seed is mixed with a fixed tag so data order is independent of other streams (weight
// init, dropout) keyed by the same seed.
SequenceSampler::SequenceSampler(const ShardSet& shards, int seq_len, uint64_t seed)
    : shards_(shards), T_(seq_len), seed_(hash_combine(seed, hash_string("train_sample"))) {
  if (seq_len < 1) fail("seq_len must be at least 1 (got {})", seq_len);
  if (shards.shards().empty()) fail("no data shards to sample from");
  window_begin_.reserve(shards.shards().size() + 1);
  val_begin_.reserve(shards.shards().size() + 1);
  int64_t val_total = 0;
  for (const auto& shard : shards.shards()) {
    const int64_t S = shard.size();
    if (S < static_cast<int64_t>(T_) + 1)
      fail("data shard '{}' holds {} tokens, fewer than model.seq_len + 1 = {}; use a smaller "
           "model.seq_len or larger shards",
           shard.path(), S, T_ + 1);
    window_begin_.push_back(total_windows_);
    total_windows_ += S - T_;
    val_begin_.push_back(val_total);
    val_total += (S - 1) / T_;
  }
  window_begin_.push_back(total_windows_);
  val_begin_.push_back(val_total);
}

void SequenceSampler::window(int64_t global_start, int32_t* inputs, int32_t* targets) const {
  MHC_CHECK(global_start >= 0 && global_start < total_windows_);
  const size_t s = find_shard(window_begin_, global_start);
  const uint16_t* tok = shards_.shards()[s].tokens() + (global_start - window_begin_[s]);
  for (int t = 0; t < T_; ++t) {
    inputs[t] = tok[t];
    targets[t] = tok[t + 1];
  }
}

void SequenceSampler::train_sample(int64_t index, int32_t* inputs, int32_t* targets) const {
  const double u = uniform01(seed_, static_cast<uint64_t>(index));
  const auto w = static_cast<int64_t>(u * static_cast<double>(total_windows_));
  window(std::min(w, total_windows_ - 1), inputs, targets);
}

void SequenceSampler::val_sample(int64_t index, int32_t* inputs, int32_t* targets) const {
  const int64_t n = val_windows();
  const int64_t k = ((index % n) + n) % n;
  const size_t s = find_shard(val_begin_, k);
  // The j-th window of shard s starts at token j*T, which is window number begin + j*T.
  window(window_begin_[s] + (k - val_begin_[s]) * T_, inputs, targets);
}

int64_t SequenceSampler::val_windows() const { return val_begin_.back(); }

}  // namespace mhc
