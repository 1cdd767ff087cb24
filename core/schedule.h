// Learning-rate schedules: linear warmup, then cosine to min_lr, WSD (warmup, stable,
// linear decay over the last decay_frac of training), or the mHC paper's step decay
// (lr multiplied by step_factors[i] from step_ratios[i]·steps on).
#pragma once
#include <cstdint>

#include "config.h"

namespace mhc {

// Learning rate for the 0-based optimizer step `step` of `cfg.train.steps`.
double learning_rate(const Config::Train& t, int64_t step);

}  // namespace mhc
