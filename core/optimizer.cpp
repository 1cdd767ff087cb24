#include "optimizer.h"

#include <cmath>

namespace mhc {

AdamW::AdamW(Model& model, const OptimizerSettings& settings) : model_(model), settings_(settings) {
  Backend& be = model_.backend();
  m_ = be.alloc(model_.params().numel, be.master_dtype());
  v_ = be.alloc(model_.params().numel, be.master_dtype());
}

AdamW::~AdamW() {
  model_.backend().release(v_);
  model_.backend().release(m_);
}

double AdamW::grad_norm() { return std::sqrt(model_.backend().sum_squares(model_.grads())); }

void AdamW::step(double lr, double norm) {
  ++t_;
  Backend& be = model_.backend();
  AdamWStep s;
  s.lr = static_cast<float>(lr);
  s.beta1 = static_cast<float>(settings_.beta1);
  s.beta2 = static_cast<float>(settings_.beta2);
  s.eps = static_cast<float>(settings_.eps);
  s.step = t_;
  s.grad_scale = 1.0f;
  if (settings_.grad_clip > 0 && norm > settings_.grad_clip)
    s.grad_scale = static_cast<float>(settings_.grad_clip / norm);
  for (const auto& p : model_.layout().params) {
    s.weight_decay = p.decay ? static_cast<float>(settings_.weight_decay) : 0.0f;
    be.adamw(model_.params().slice(p.offset, p.numel), model_.grads().slice(p.offset, p.numel),
             m_.slice(p.offset, p.numel), v_.slice(p.offset, p.numel), s);
  }
  model_.sync_working_weights();
}

}  // namespace mhc
