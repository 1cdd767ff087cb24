// Fused softmax cross-entropy over the first V of Vp padded logits; writes the loss per
// row and, when dloss != 0, overwrites the logits with their gradient in place.
#include <cmath>
#include <limits>

#include "kernels.h"

namespace mhc::cpu {

template <class T>
void cross_entropy(T* losses, T* logits, const int32_t* targets, int N, int V, int Vp, T dloss) {
#pragma omp parallel for schedule(static)
  for (int r = 0; r < N; ++r) {
    T* row = logits + static_cast<int64_t>(r) * Vp;
    T mx = -std::numeric_limits<T>::infinity();
    for (int i = 0; i < V; ++i) mx = row[i] > mx ? row[i] : mx;
    T sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int i = 0; i < V; ++i) sum += std::exp(row[i] - mx);
    const T lse = mx + std::log(sum);
    const int target = targets[r];
    losses[r] = lse - row[target];
    if (dloss != T(0)) {
      for (int i = 0; i < V; ++i) row[i] = std::exp(row[i] - lse) * dloss;
      row[target] -= dloss;
      for (int i = V; i < Vp; ++i) row[i] = 0;
    }
  }
}

template void cross_entropy<float>(float*, float*, const int32_t*, int, int, int, float);
template void cross_entropy<double>(double*, double*, const int32_t*, int, int, int, double);

}  // namespace mhc::cpu
