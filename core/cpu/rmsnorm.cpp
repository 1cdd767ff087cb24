// RMSNorm: y = x · rstd · w with rstd = 1/sqrt(mean(x²) + eps).
// Backward: with g = dy·w and x̂ = x·rstd, dx += rstd·(g − x̂·mean(g·x̂)), dw += Σ dy·x̂.
#include <cmath>

#include "kernels.h"
#include "parallel.h"

namespace mhc::cpu {

template <class T>
void rmsnorm_forward(T* out, T* rstd, const T* x, const T* w, int rows, int C, T eps) {
#pragma omp parallel for schedule(static) if (static_cast<int64_t>(rows) * C > kMinParallelWork)
  for (int r = 0; r < rows; ++r) {
    const T* xr = x + static_cast<int64_t>(r) * C;
    T* yr = out + static_cast<int64_t>(r) * C;
    T ss = 0;
#pragma omp simd reduction(+ : ss)
    for (int c = 0; c < C; ++c) ss += xr[c] * xr[c];
    T s = T(1) / std::sqrt(ss / C + eps);
    rstd[r] = s;
    for (int c = 0; c < C; ++c) yr[c] = xr[c] * s * w[c];
  }
}

template <class T>
void rmsnorm_backward(T* dx, T* dw, const T* dout, const T* x, const T* w, const T* rstd, int rows,
                      int C) {
  parallel_reduce<T>(rows, C, dw, [&](int64_t begin, int64_t end, T* dw_part) {
    for (int64_t r = begin; r < end; ++r) {
      const T* xr = x + r * C;
      const T* gr = dout + r * C;
      T* dxr = dx + r * C;
      const T s = rstd[r];
      T dot = 0;
#pragma omp simd reduction(+ : dot)
      for (int c = 0; c < C; ++c) {
        const T xhat = xr[c] * s;
        dot += gr[c] * w[c] * xhat;
        dw_part[c] += gr[c] * xhat;
      }
      dot /= C;
      for (int c = 0; c < C; ++c) dxr[c] += s * (gr[c] * w[c] - xr[c] * s * dot);
    }
  });
}

template void rmsnorm_forward<float>(float*, float*, const float*, const float*, int, int, float);
template void rmsnorm_forward<double>(double*, double*, const double*, const double*, int, int, double);
template void rmsnorm_backward<float>(float*, float*, const float*, const float*, const float*,
                                      const float*, int, int);
template void rmsnorm_backward<double>(double*, double*, const double*, const double*,
                                       const double*, const double*, int, int);

}  // namespace mhc::cpu
