// The one validation routine: training's periodic and final evaluations, `mhc eval` and
// `mhc inspect`'s probe batch all read validation windows through it, so every reported
// figure comes from the same code. Owns which windows an evaluation reads (the whole set
// or an evenly spread subset) and the statistics of the result (mean loss, its standard
// error, token and byte counts).
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "comm.h"
#include "data/sampler.h"
#include "model.h"
#include "tokenizer.h"

namespace mhc {

struct EvalResult {
  double loss = 0;       // mean loss per token (nats) over every target token read
  // Standard error of `loss` by batch means: the evaluated windows, in order, are cut
  // into kSeBlocks consecutive blocks (fewer when there are fewer windows) and
  // se = sd(block means) / sqrt(blocks). Consecutive windows share documents, so the
  // per-window losses are correlated; a block of neighbouring windows absorbs that
  // correlation where a per-window estimate would not (it came out ~3x too small on the
  // default corpus). NaN with fewer than two windows.
  double se = 0;
  int se_blocks = 0;     // blocks the SE was computed from (its degrees of freedom + 1)
  int64_t sequences = 0;
  int64_t tokens = 0;
  int64_t batches = 0;   // micro-batches read (over all ranks)
  double bytes = 0;      // bytes the target tokens decode to (document delimiters: none);
                         // 0 when no tokenizer was given
  // Mean loss per token of each evaluated window, in the order of the windows read (the
  // same on every rank): what a paired comparison of two checkpoints needs.
  std::vector<double> window_losses;
  double bits_per_token() const;
  double bits_per_byte() const;  // NaN when bytes is 0
};

// Validation window numbers [0, total) to read: all of them when count >= total, else
// `count` windows spread evenly over the set (window floor(i * total / count)), so a
// small periodic evaluation samples the whole set rather than its first documents.
std::vector<int64_t> eval_windows(int64_t total, int64_t count);

// Blocks of consecutive windows the standard error is computed from (see EvalResult::se).
constexpr int kSeBlocks = 16;

// Mean and batch-means standard error of per-window values (window losses, or the
// per-window differences of two checkpoints on the same windows): the values, in order,
// are cut into min(kSeBlocks, count) consecutive blocks (window p in block
// floor(p * blocks / count)); se = sd(block means) / sqrt(blocks), NaN with fewer than two
// values. Each value weighs the same in the mean.
struct BatchMeans {
  double mean = 0;
  double se = 0;
  int blocks = 0;
};
BatchMeans batch_means(const std::vector<double>& values);

// Called after each micro-batch's forward with the batch's number (0-based, global).
using EvalBatchHook = std::function<void(int64_t batch)>;

// Evaluates `windows` of `sampler`'s validation windows in micro-batches of up to B
// sequences (the last one may be smaller; the model must hold B). With a communicator,
// rank r reads batches r, r + size, ... and the sums are all-reduced (collective: every
// rank calls it). tok may be null (no bytes counted).
EvalResult evaluate(Model& model, const SequenceSampler& sampler,
                    const std::vector<int64_t>& windows, int B, const Tokenizer* tok,
                    Communicator* comm = nullptr, const EvalBatchHook& after_batch = {});

}  // namespace mhc
