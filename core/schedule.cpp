#include "schedule.h"

#include <algorithm>
#include <cmath>

namespace mhc {

double learning_rate(const Config::Train& t, int64_t step) {
  const double total = static_cast<double>(std::max<int64_t>(1, t.steps));
  if (step < t.warmup) return t.lr * static_cast<double>(step + 1) / static_cast<double>(t.warmup);
  if (t.schedule == "cosine") {
    const double span = std::max(1.0, total - static_cast<double>(t.warmup));
    const double progress = std::min(1.0, (static_cast<double>(step - t.warmup)) / span);
    return t.min_lr + 0.5 * (t.lr - t.min_lr) * (1.0 + std::cos(M_PI * progress));
  }
  if (t.schedule == "wsd") {
    const double decay_steps = std::max(1.0, t.decay_frac * total);
    const double decay_start = total - decay_steps;
    if (static_cast<double>(step) < decay_start) return t.lr;
    const double progress = std::min(1.0, (static_cast<double>(step) - decay_start) / decay_steps);
    return t.lr + (t.min_lr - t.lr) * progress;
  }
  // step: piecewise constant.
  double lr = t.lr;
  for (size_t i = 0; i < t.step_ratios.size(); ++i)
    if (static_cast<double>(step) >= t.step_ratios[i] * total) lr = t.lr * t.step_factors[i];
  return lr;
}

}  // namespace mhc
