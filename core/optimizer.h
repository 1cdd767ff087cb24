// AdamW over the model's flat parameters, with decoupled weight decay only on the
// tensors the layout marks (matrices; not norms, HC statics, mHC gates/biases), and
// global-norm gradient clipping.
//
// Sharded (ZeRO-1): an AdamW may own only the elements [shard_begin, shard_end) of the
// flat parameter buffer; its moments then cover just that range, and step() updates just
// that range of the master weights (the caller all-gathers the rest, then refreshes the
// working weights). Parameters straddling the range are updated piecewise; AdamW is
// elementwise, so the result is the same as an unsharded update.
#pragma once
#include <cstdint>
#include <vector>

#include "backend.h"
#include "model.h"

namespace mhc {

struct OptimizerSettings {
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weight_decay = 0.1, grad_clip = 1.0;
};

class AdamW {
 public:
  AdamW(Model& model, const OptimizerSettings& settings);
  // Owns [shard_begin, shard_end) of the flat parameters only.
  AdamW(Model& model, const OptimizerSettings& settings, int64_t shard_begin, int64_t shard_end);
  ~AdamW();
  AdamW(const AdamW&) = delete;
  AdamW& operator=(const AdamW&) = delete;

  // Global L2 norm of the gradients (before clipping). Unsharded only.
  double grad_norm();
  // Sum of squares of the gradients in the owned range (sharded: sum over ranks, sqrt).
  double shard_grad_sum_squares();
  // One update with learning rate lr, clipping to settings.grad_clip using `norm`.
  // Advances the step counter; refreshes the working weights when unsharded.
  void step(double lr, double norm);

  int64_t steps_taken() const { return t_; }
  void set_steps_taken(int64_t t) { t_ = t; }
  bool sharded() const { return begin_ != 0 || end_ != model_.params().numel; }
  int64_t shard_begin() const { return begin_; }
  int64_t shard_end() const { return end_; }
  // Moments of the owned range (element i is flat element shard_begin + i).
  Tensor m() const { return m_; }
  Tensor v() const { return v_; }

 private:
  Model& model_;
  OptimizerSettings settings_;
  int64_t begin_ = 0, end_ = 0;
  Tensor m_mem_{}, v_mem_{};  // the allocations
  Tensor m_{}, v_{};
  int64_t t_ = 0;
};

}  // namespace mhc
