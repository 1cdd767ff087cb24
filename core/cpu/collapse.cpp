// The learned collapse's weights (DeepSeek-V4's head mix, residuals.md "Variants"):
//   m = (v·φ_h)/r with r = sqrt(mean(v²) + ε) over the token's nC stream entries,
//   w_i = σ(α m_i + β_i) + ε; the head then reads y = Σ_i w_i X_i (stream_aggregate).
// Backward with g = ∂L/∂(α m + β) and h = α g:
//   ∂φ += vᵀ (h/r),  ∂v += (h/r) φᵀ − (Σ_i h_i m_i) v / (nC r²),  ∂β += g, ∂α += Σ g m.
#include <cmath>
#include <vector>

#include "../mhc_math.h"
#include "kernels.h"
#include "parallel.h"

namespace mhc::cpu {

template <class T>
void collapse_weights_forward(T* w, T* m, T* rms, const T* X, const T* phi, const T* alpha,
                              const T* bias, int N, int n, int C, T eps) {
  const int nC = n * C;
  gemm<T>(false, false, N, n, nC, T(1), X, nC, phi, n, T(0), m, n);
#pragma omp parallel for schedule(static)
  for (int t = 0; t < N; ++t) {
    const T* v = X + static_cast<int64_t>(t) * nC;
    T ss = 0;
    for (int i = 0; i < nC; ++i) ss += v[i] * v[i];
    const T r = std::sqrt(ss / nC + eps);
    rms[t] = r;
    T* mt = m + static_cast<int64_t>(t) * n;
    for (int i = 0; i < n; ++i) mt[i] /= r;
    math::collapse_weights_forward<T>(mt, alpha[0], bias, n, eps, w + static_cast<int64_t>(t) * n);
  }
}

template <class T>
void collapse_weights_backward(T* dX, T* dphi, T* dalpha, T* dbias, const T* dw, const T* X,
                               const T* phi, const T* alpha, const T* bias, const T* m,
                               const T* rms, int N, int n, int C) {
  const int nC = n * C;
  std::vector<T> hs(static_cast<size_t>(N) * n), cv(static_cast<size_t>(N));
  std::vector<T> dab(1 + n, T(0));
  parallel_reduce<T>(N, 1 + n, dab.data(), [&](int64_t begin, int64_t end, T* part) {
    std::vector<T> g(n);
    for (int64_t t = begin; t < end; ++t) {
      const T* mt = m + t * n;
      math::collapse_weights_backward<T>(mt, alpha[0], bias, dw + t * n, n, g.data(), part);
      const T r = rms[t];
      T hm = 0;
      for (int i = 0; i < n; ++i) {
        part[1 + i] += g[i];
        const T h = alpha[0] * g[i];
        hs[t * n + i] = h / r;
        hm += h * mt[i];
      }
      cv[t] = -hm / (static_cast<T>(nC) * r * r);
    }
  });
  dalpha[0] += dab[0];
  for (int i = 0; i < n; ++i) dbias[i] += dab[1 + i];
  gemm<T>(true, false, nC, n, N, T(1), X, nC, hs.data(), n, T(1), dphi, n);
  gemm<T>(false, true, N, nC, n, T(1), hs.data(), n, phi, n, T(1), dX, nC);
#pragma omp parallel for schedule(static)
  for (int t = 0; t < N; ++t) {
    const T* v = X + static_cast<int64_t>(t) * nC;
    T* dv = dX + static_cast<int64_t>(t) * nC;
    for (int i = 0; i < nC; ++i) dv[i] += cv[t] * v[i];
  }
}

#define MHC_INSTANTIATE_COLLAPSE(T)                                                          \
  template void collapse_weights_forward<T>(T*, T*, T*, const T*, const T*, const T*,        \
                                            const T*, int, int, int, T);                     \
  template void collapse_weights_backward<T>(T*, T*, T*, T*, const T*, const T*, const T*,   \
                                             const T*, const T*, const T*, const T*, int, int, \
                                             int);
MHC_INSTANTIATE_COLLAPSE(float)
MHC_INSTANTIATE_COLLAPSE(double)
#undef MHC_INSTANTIATE_COLLAPSE

}  // namespace mhc::cpu
