// AdamW with decoupled weight decay (the PyTorch formulation):
//   g ← g·grad_scale; m ← β1 m + (1−β1) g; v ← β2 v + (1−β2) g²
//   p ← p·(1 − lr·wd) − lr · (m/(1−β1^t)) / (sqrt(v/(1−β2^t)) + eps)
#include <cmath>

#include "kernels.h"
#include "parallel.h"

namespace mhc::cpu {

template <class T>
void adamw(T* p, const T* g, T* m, T* v, int64_t count, double lr, double beta1, double beta2,
           double eps, double weight_decay, double grad_scale, int64_t step) {
  const T b1 = static_cast<T>(beta1), b2 = static_cast<T>(beta2);
  const T c1 = static_cast<T>(1.0 / (1.0 - std::pow(beta1, static_cast<double>(step))));
  const T c2 = static_cast<T>(1.0 / (1.0 - std::pow(beta2, static_cast<double>(step))));
  const T decay = static_cast<T>(1.0 - lr * weight_decay);
  const T lr_t = static_cast<T>(lr), eps_t = static_cast<T>(eps), gs = static_cast<T>(grad_scale);
#pragma omp parallel for schedule(static) if (count > kMinParallelWork)
  for (int64_t i = 0; i < count; ++i) {
    const T gi = g[i] * gs;
    m[i] = b1 * m[i] + (T(1) - b1) * gi;
    v[i] = b2 * v[i] + (T(1) - b2) * gi * gi;
    p[i] = p[i] * decay - lr_t * (m[i] * c1) / (std::sqrt(v[i] * c2) + eps_t);
  }
}

template void adamw<float>(float*, const float*, float*, float*, int64_t, double, double, double,
                           double, double, double, int64_t);
template void adamw<double>(double*, const double*, double*, double*, int64_t, double, double,
                            double, double, double, double, int64_t);

}  // namespace mhc::cpu
