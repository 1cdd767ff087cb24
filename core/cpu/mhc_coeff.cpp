// mHC coefficients (residuals.md, "Coefficients" and "Coefficient backward"):
//   m = (v·φ)/r with r = sqrt(mean(v²) + ε) over the token's nC stream entries, then
//   σ / 2σ / Sinkhorn (core/mhc_math.h). The products with φ are BLAS GEMMs over all
//   tokens; the per-token nonlinearities run one token per loop iteration.
// Backward with h = α ⊙ g (g = ∂L/∂H̃):
//   ∂φ += vᵀ (h/r),  ∂v += (h/r) φᵀ − (Σ_d h_d m_d) v / (nC r²),  ∂β += g, ∂α_g += Σ g m.
#include <cmath>
#include <vector>

#include "../mhc_math.h"
#include "kernels.h"
#include "parallel.h"

namespace mhc::cpu {

template <class T>
void mhc_coeff_forward(T* pre, T* post, T* res, T* m, T* rms, const T* X, const T* phi,
                       const T* alpha, const T* bias, int N, int n, int C, int iters, T eps) {
  const int D = 2 * n + n * n, nC = n * C;
  gemm<T>(false, false, N, D, nC, T(1), X, nC, phi, D, T(0), m, D);
#pragma omp parallel
  {
    std::vector<T> Z(static_cast<size_t>(n) * n), M(static_cast<size_t>(n) * n);
#pragma omp for schedule(static)
    for (int t = 0; t < N; ++t) {
      const T* v = X + static_cast<int64_t>(t) * nC;
      T ss = 0;
#pragma omp simd reduction(+ : ss)
      for (int i = 0; i < nC; ++i) ss += v[i] * v[i];
      const T r = std::sqrt(ss / nC + eps);
      rms[t] = r;
      T* mt = m + static_cast<int64_t>(t) * D;
      for (int d = 0; d < D; ++d) mt[d] /= r;
      math::mhc_coeff_nonlin_forward(mt, alpha, bias, n, iters, pre + static_cast<int64_t>(t) * n,
                                     post + static_cast<int64_t>(t) * n,
                                     res + static_cast<int64_t>(t) * n * n, Z.data(), M.data());
    }
  }
}

template <class T>
void mhc_coeff_backward(T* dX, T* dphi, T* dalpha, T* dbias, const T* dpre, const T* dpost,
                        const T* dres, const T* X, const T* phi, const T* alpha, const T* bias,
                        const T* m, const T* rms, int N, int n, int C, int iters) {
  const int D = 2 * n + n * n, nC = n * C;
  std::vector<T> hs(static_cast<size_t>(N) * D), cv(static_cast<size_t>(N));
  // Per-token g, then h/r and the RMS coefficient; dalpha and dbias reduced per thread.
  std::vector<T> dab(3 + D, T(0));
  parallel_reduce<T>(N, 3 + D, dab.data(), [&](int64_t begin, int64_t end, T* part) {
    std::vector<T> g(D), Z(n * n), M(n * n), G(n * n), rc(2 * n * iters);
    for (int64_t t = begin; t < end; ++t) {
      const T* mt = m + t * D;
      math::mhc_coeff_nonlin_backward(mt, alpha, bias, dpre + t * n, dpost + t * n,
                                      dres + t * n * n, n, iters, g.data(), part, Z.data(),
                                      M.data(), G.data(), rc.data());
      const T r = rms[t];
      T hm = 0;
      for (int d = 0; d < D; ++d) {
        part[3 + d] += g[d];
        const T h = alpha[math::mhc_gate_of_column(d, n)] * g[d];
        hs[t * D + d] = h / r;
        hm += h * mt[d];
      }
      cv[t] = -hm / (static_cast<T>(nC) * r * r);
    }
  });
  for (int i = 0; i < 3; ++i) dalpha[i] += dab[i];
  for (int d = 0; d < D; ++d) dbias[d] += dab[3 + d];
  gemm<T>(true, false, nC, D, N, T(1), X, nC, hs.data(), D, T(1), dphi, D);
  gemm<T>(false, true, N, nC, D, T(1), hs.data(), D, phi, D, T(1), dX, nC);
#pragma omp parallel for schedule(static)
  for (int t = 0; t < N; ++t) {
    const T* v = X + static_cast<int64_t>(t) * nC;
    T* dv = dX + static_cast<int64_t>(t) * nC;
    const T c = cv[t];
    for (int i = 0; i < nC; ++i) dv[i] += c * v[i];
  }
}

// Any variant (residuals.md "Variants"): the same structure with D = 2n + R columns and
// core/mhc_math.h's mhc_variant_forward/backward per token. Static mHC (phi null) has
// no m and no r: H̃ = β for every token, computed once per step, and only β gets a gradient.
template <class T>
void mhc_variant_coeff_forward(T* pre, T* post, T* res, T* m, T* rms, const T* X, const T* phi,
                               const T* alpha, const T* bias, int N, int n, int C, int iters,
                               T eps, const math::MhcVariant& v) {
  const int D = math::mhc_coeff_count(v.projection, n), nC = n * C;
  const bool dynamic = phi != nullptr;
  if (!dynamic) {
    // Static mHC: H̃ = β for every token, so the coefficients are computed once and
    // copied (identical to computing them per token, at 1/N of the cost).
    if (N == 0) return;
    std::vector<T> work(static_cast<size_t>(math::mhc_variant_work(v, n, iters)));
    math::mhc_variant_forward<T>(nullptr, alpha, bias, n, iters, v, pre, post, res, work.data());
#pragma omp parallel for schedule(static)
    for (int t = 1; t < N; ++t) {
      for (int i = 0; i < n; ++i) {
        pre[static_cast<int64_t>(t) * n + i] = pre[i];
        post[static_cast<int64_t>(t) * n + i] = post[i];
      }
      for (int k = 0; k < n * n; ++k) res[static_cast<int64_t>(t) * n * n + k] = res[k];
    }
    return;
  }
  gemm<T>(false, false, N, D, nC, T(1), X, nC, phi, D, T(0), m, D);
#pragma omp parallel
  {
    std::vector<T> work(static_cast<size_t>(math::mhc_variant_work(v, n, iters)));
#pragma omp for schedule(static)
    for (int t = 0; t < N; ++t) {
      const T* vt = X + static_cast<int64_t>(t) * nC;
      T ss = 0;
#pragma omp simd reduction(+ : ss)
      for (int i = 0; i < nC; ++i) ss += vt[i] * vt[i];  // as the paper's op, bit for bit
      const T r = std::sqrt(ss / nC + eps);
      rms[t] = r;
      T* mt = m + static_cast<int64_t>(t) * D;
      for (int d = 0; d < D; ++d) mt[d] /= r;
      math::mhc_variant_forward<T>(mt, alpha, bias, n, iters, v,
                                   pre + static_cast<int64_t>(t) * n,
                                   post + static_cast<int64_t>(t) * n,
                                   res + static_cast<int64_t>(t) * n * n, work.data());
    }
  }
}

template <class T>
void mhc_variant_coeff_backward(T* dX, T* dphi, T* dalpha, T* dbias, const T* dpre,
                                const T* dpost, const T* dres, const T* X, const T* phi,
                                const T* alpha, const T* bias, const T* m, const T* rms, int N,
                                int n, int C, int iters, const math::MhcVariant& v) {
  const int D = math::mhc_coeff_count(v.projection, n), nC = n * C;
  const bool dynamic = phi != nullptr;
  if (!dynamic) {
    // Static mHC: every token's Jacobian is the same, so the backward of the summed
    // upstream gradients is the sum of the per-token backwards (up to rounding): one
    // projection backward per step instead of N.
    const int nn = n * n, width = 2 * n + nn;
    std::vector<T> upstream(static_cast<size_t>(width), T(0));
    parallel_reduce<T>(N, width, upstream.data(), [&](int64_t begin, int64_t end, T* part) {
      for (int64_t t = begin; t < end; ++t) {
        for (int i = 0; i < n; ++i) {
          part[i] += dpre[t * n + i];
          part[n + i] += dpost[t * n + i];
        }
        for (int k = 0; k < nn; ++k) part[2 * n + k] += dres[t * nn + k];
      }
    });
    std::vector<T> g(D), unused_dalpha(3, T(0));
    std::vector<T> work(static_cast<size_t>(math::mhc_variant_work(v, n, iters)));
    math::mhc_variant_backward<T>(nullptr, alpha, bias, upstream.data(), upstream.data() + n,
                                  upstream.data() + 2 * n, n, iters, v, g.data(),
                                  unused_dalpha.data(), work.data());
    for (int d = 0; d < D; ++d) dbias[d] += g[d];
    return;
  }
  std::vector<T> hs(static_cast<size_t>(N) * D), cv(static_cast<size_t>(N));
  std::vector<T> dab(3 + D, T(0));
  parallel_reduce<T>(N, 3 + D, dab.data(), [&](int64_t begin, int64_t end, T* part) {
    std::vector<T> g(D), work(static_cast<size_t>(math::mhc_variant_work(v, n, iters)));
    for (int64_t t = begin; t < end; ++t) {
      const T* mt = m + t * D;
      math::mhc_variant_backward<T>(mt, alpha, bias, dpre + t * n, dpost + t * n,
                                    dres + t * n * n, n, iters, v, g.data(), part, work.data());
      for (int d = 0; d < D; ++d) part[3 + d] += g[d];
      const T r = rms[t];
      T hm = 0;
      for (int d = 0; d < D; ++d) {
        const T h = alpha[math::mhc_gate_of_column(d, n)] * g[d];
        hs[t * D + d] = h / r;
        hm += h * mt[d];
      }
      cv[t] = -hm / (static_cast<T>(nC) * r * r);
    }
  });
  for (int d = 0; d < D; ++d) dbias[d] += dab[3 + d];
  for (int i = 0; i < 3; ++i) dalpha[i] += dab[i];
  gemm<T>(true, false, nC, D, N, T(1), X, nC, hs.data(), D, T(1), dphi, D);
  gemm<T>(false, true, N, nC, D, T(1), hs.data(), D, phi, D, T(1), dX, nC);
#pragma omp parallel for schedule(static)
  for (int t = 0; t < N; ++t) {
    const T* vt = X + static_cast<int64_t>(t) * nC;
    T* dv = dX + static_cast<int64_t>(t) * nC;
    const T c = cv[t];
    for (int i = 0; i < nC; ++i) dv[i] += c * vt[i];
  }
}

#define MHC_INSTANTIATE_VARIANT(T)                                                          \
  template void mhc_variant_coeff_forward<T>(T*, T*, T*, T*, T*, const T*, const T*,        \
                                             const T*, const T*, int, int, int, int, T,     \
                                             const math::MhcVariant&);                      \
  template void mhc_variant_coeff_backward<T>(T*, T*, T*, T*, const T*, const T*, const T*, \
                                              const T*, const T*, const T*, const T*,       \
                                              const T*, const T*, int, int, int, int,       \
                                              const math::MhcVariant&);
MHC_INSTANTIATE_VARIANT(float)
MHC_INSTANTIATE_VARIANT(double)
#undef MHC_INSTANTIATE_VARIANT

template void mhc_coeff_forward<float>(float*, float*, float*, float*, float*, const float*,
                                       const float*, const float*, const float*, int, int, int,
                                       int, float);
template void mhc_coeff_forward<double>(double*, double*, double*, double*, double*,
                                        const double*, const double*, const double*,
                                        const double*, int, int, int, int, double);
template void mhc_coeff_backward<float>(float*, float*, float*, float*, const float*,
                                        const float*, const float*, const float*, const float*,
                                        const float*, const float*, const float*, const float*,
                                        int, int, int, int);
template void mhc_coeff_backward<double>(double*, double*, double*, double*, const double*,
                                         const double*, const double*, const double*,
                                         const double*, const double*, const double*,
                                         const double*, const double*, int, int, int, int);

}  // namespace mhc::cpu
