// Token embedding lookup; the backward scatters by channel slices so no two threads
// touch the same row entry (deterministic, no atomics).
#include <algorithm>
#include <cstring>

#include "kernels.h"
#include "parallel.h"

namespace mhc::cpu {

template <class T>
void embedding_forward(T* out, const int32_t* tokens, const T* wte, int N, int C) {
#pragma omp parallel for schedule(static)
  for (int t = 0; t < N; ++t)
    std::memcpy(out + static_cast<int64_t>(t) * C, wte + static_cast<int64_t>(tokens[t]) * C,
                sizeof(T) * C);
}

template <class T>
void embedding_backward(T* dwte, const int32_t* tokens, const T* dout, int N, int C) {
  const int threads = omp_get_max_threads();
  const int chunk = (C + threads - 1) / threads;
#pragma omp parallel for schedule(static)
  for (int part = 0; part < threads; ++part) {
    const int c0 = part * chunk, c1 = std::min(C, c0 + chunk);
    for (int t = 0; t < N; ++t) {
      T* row = dwte + static_cast<int64_t>(tokens[t]) * C;
      const T* g = dout + static_cast<int64_t>(t) * C;
      for (int c = c0; c < c1; ++c) row[c] += g[c];
    }
  }
}

template void embedding_forward<float>(float*, const int32_t*, const float*, int, int);
template void embedding_forward<double>(double*, const int32_t*, const double*, int, int);
template void embedding_backward<float>(float*, const int32_t*, const float*, int, int);
template void embedding_backward<double>(double*, const int32_t*, const double*, int, int);

}  // namespace mhc::cpu
