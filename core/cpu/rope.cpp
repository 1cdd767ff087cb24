// Rotary position embedding, rotate-half convention: within a head of size d, element
// i < d/2 pairs with i + d/2 and both rotate by angle t · theta^(−2i/d). The backward
// is the inverse rotation (the transpose) applied to the gradients.
#include <cmath>
#include <vector>

#include "kernels.h"

namespace mhc::cpu {

template <class T>
void rope(T* qkv, int B, int T_, int n_head, int head_dim, double theta, bool inverse) {
  const int C = n_head * head_dim, half = head_dim / 2;
  std::vector<T> cos_t(static_cast<size_t>(T_) * half), sin_t(static_cast<size_t>(T_) * half);
  for (int t = 0; t < T_; ++t)
    for (int i = 0; i < half; ++i) {
      double freq = std::pow(theta, -2.0 * i / head_dim);
      double a = t * freq;
      cos_t[t * half + i] = static_cast<T>(std::cos(a));
      sin_t[t * half + i] = static_cast<T>(inverse ? -std::sin(a) : std::sin(a));
    }
#pragma omp parallel for schedule(static)
  for (int bt = 0; bt < B * T_; ++bt) {
    const int t = bt % T_;
    T* row = qkv + static_cast<int64_t>(bt) * 3 * C;
    for (int part = 0; part < 2; ++part)  // q then k
      for (int h = 0; h < n_head; ++h) {
        T* v = row + part * C + h * head_dim;
        for (int i = 0; i < half; ++i) {
          const T c = cos_t[t * half + i], s = sin_t[t * half + i];
          const T x0 = v[i], x1 = v[i + half];
          v[i] = x0 * c - x1 * s;
          v[i + half] = x1 * c + x0 * s;
        }
      }
  }
}

template void rope<float>(float*, int, int, int, int, double, bool);
template void rope<double>(double*, int, int, int, int, double, bool);

}  // namespace mhc::cpu
