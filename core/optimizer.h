// AdamW over the model's flat parameters, with decoupled weight decay only on the
// tensors the layout marks (matrices; not norms, HC statics, mHC gates/biases), and
// global-norm gradient clipping.
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
  ~AdamW();
  AdamW(const AdamW&) = delete;
  AdamW& operator=(const AdamW&) = delete;

  // Global L2 norm of the gradients (before clipping).
  double grad_norm();
  // One update with learning rate lr, clipping to settings.grad_clip using `norm`.
  // Advances the step counter and refreshes the working weights.
  void step(double lr, double norm);

  int64_t steps_taken() const { return t_; }
  void set_steps_taken(int64_t t) { t_ = t; }
  Tensor m() const { return m_; }
  Tensor v() const { return v_; }

 private:
  Model& model_;
  OptimizerSettings settings_;
  Tensor m_{}, v_{};
  int64_t t_ = 0;
};

}  // namespace mhc
