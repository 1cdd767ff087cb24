#include "optimizer.h"

#include <algorithm>
#include <cmath>

#include "error.h"

namespace mhc {

AdamW::AdamW(Model& model, const OptimizerSettings& settings)
    : AdamW(model, settings, 0, model.params().numel) {}

AdamW::AdamW(Model& model, const OptimizerSettings& settings, int64_t shard_begin, int64_t shard_end)
    : model_(model), settings_(settings), begin_(shard_begin), end_(shard_end) {
  MHC_CHECK(0 <= begin_ && begin_ <= end_ && end_ <= model_.params().numel);
  Backend& be = model_.backend();
  // Keep a non-empty allocation for an empty shard (tiny models on many ranks).
  m_mem_ = be.alloc(std::max<int64_t>(1, end_ - begin_), be.master_dtype());
  v_mem_ = be.alloc(std::max<int64_t>(1, end_ - begin_), be.master_dtype());
  m_ = m_mem_.slice(0, end_ - begin_);
  v_ = v_mem_.slice(0, end_ - begin_);
}

AdamW::~AdamW() {
  model_.backend().release(v_mem_);
  model_.backend().release(m_mem_);
}

double AdamW::grad_norm() {
  MHC_CHECK(!sharded());
  return std::sqrt(model_.backend().sum_squares(model_.grads()));
}

double AdamW::shard_grad_sum_squares() {
  if (end_ == begin_) return 0.0;
  return model_.backend().sum_squares(model_.grads().slice(begin_, end_ - begin_));
}

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
    const int64_t lo = std::max(p.offset, begin_), hi = std::min(p.offset + p.numel, end_);
    if (lo >= hi) continue;
    s.weight_decay = p.decay ? static_cast<float>(settings_.weight_decay) : 0.0f;
    be.adamw(model_.params().slice(lo, hi - lo), model_.grads().slice(lo, hi - lo),
             m_.slice(lo - begin_, hi - lo), v_.slice(lo - begin_, hi - lo), s);
  }
  if (!sharded()) model_.sync_working_weights();
}

}  // namespace mhc
