// Sinkhorn–Knopp over many independent n×n problems: the per-token math of
// core/mhc_math.h, one token per loop iteration with thread-private scratch.
#include <vector>

#include "../mhc_math.h"
#include "kernels.h"

namespace mhc::cpu {

template <class T>
void sinkhorn_forward(T* H, const T* Z, int count, int n, int iters) {
#pragma omp parallel
  {
    std::vector<T> M(static_cast<size_t>(n) * n);
#pragma omp for schedule(static)
    for (int p = 0; p < count; ++p)
      math::sinkhorn_forward(Z + static_cast<int64_t>(p) * n * n, n, iters,
                             H + static_cast<int64_t>(p) * n * n, M.data(), static_cast<T*>(nullptr));
  }
}

template <class T>
void sinkhorn_backward(T* dZ, const T* dH, const T* Z, int count, int n, int iters) {
#pragma omp parallel
  {
    std::vector<T> M(static_cast<size_t>(n) * n), G(static_cast<size_t>(n) * n),
        rc(static_cast<size_t>(2) * n * iters);
#pragma omp for schedule(static)
    for (int p = 0; p < count; ++p) {
      const int64_t o = static_cast<int64_t>(p) * n * n;
      math::sinkhorn_backward(Z + o, dH + o, n, iters, dZ + o, M.data(), G.data(), rc.data());
    }
  }
}

template void sinkhorn_forward<float>(float*, const float*, int, int, int);
template void sinkhorn_forward<double>(double*, const double*, int, int, int);
template void sinkhorn_backward<float>(float*, const float*, const float*, int, int, int);
template void sinkhorn_backward<double>(double*, const double*, const double*, int, int, int);

}  // namespace mhc::cpu
