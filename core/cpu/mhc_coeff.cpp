// mHC coefficients (residuals.md, "Coefficients" and "Coefficient backward"):
//   m = (v·φ)/r with r = sqrt(mean(v²) + ε) over the token's nC stream entries, then
//   σ / 2σ / Sinkhorn (core/mhc_math.h). The products with φ are BLAS GEMMs over all
//   tokens; the per-token nonlinearities run kConnLanes tokens at once, one per SIMD lane
//   (core/cpu/lanes.h), each lane computing exactly the scalar math.
// Backward with h = α ⊙ g (g = ∂L/∂H̃):
//   ∂φ += vᵀ (h/r),  ∂v += (h/r) φᵀ − (Σ_d h_d m_d) v / (nC r²),  ∂β += g, ∂α_g += Σ g m.
#include <algorithm>
#include <cmath>
#include <vector>

#include "../mhc_math.h"
#include "kernels.h"
#include "lanes.h"
#include "parallel.h"

namespace mhc::cpu {
namespace {

using std::int64_t;

// Lane l of dst[k] = src[(t0 + l) · width + k]. Lanes past `count` (the tail of the token
// range) repeat the last token when pad_with_zero is false, else hold 0.
template <class T>
void gather_lanes(Lanes<T>* dst, const T* src, int64_t t0, int count, int width,
                  bool pad_with_zero) {
  for (int l = 0; l < kConnLanes; ++l) {
    const bool pad = l >= count;
    const T* row = src + (t0 + (pad ? count - 1 : l)) * width;
    for (int k = 0; k < width; ++k) dst[k].v[l] = pad && pad_with_zero ? T(0) : row[k];
  }
}

// dst[(t0 + l) · width + k] = lane l of src[k], for the first `count` lanes.
template <class T>
void scatter_lanes(T* dst, const Lanes<T>* src, int64_t t0, int count, int width) {
  for (int l = 0; l < count; ++l) {
    T* row = dst + (t0 + l) * width;
    for (int k = 0; k < width; ++k) row[k] = src[k].v[l];
  }
}

// Divides the token's projection m by its RMS r and records r (as the paper's op, bit
// for bit).
template <class T>
void normalise_projection(T* mt, T* rms_t, const T* v, int nC, int D, T eps) {
  T ss = 0;
#pragma omp simd reduction(+ : ss)
  for (int i = 0; i < nC; ++i) ss += v[i] * v[i];
  const T r = std::sqrt(ss / nC + eps);
  *rms_t = r;
  for (int d = 0; d < D; ++d) mt[d] /= r;
}

// The forward of any dynamic mHC op: m = X·φ, normalised per token, then
// nonlin(m_lanes, alpha_lanes, bias_lanes, pre, post, res, work) on each block of tokens.
template <class T, class Nonlin>
void coeff_forward_blocks(T* pre, T* post, T* res, T* m, T* rms, const T* X, const T* phi,
                          const T* alpha, const T* bias, int N, int n, int C, int D, T eps,
                          int work_size, Nonlin nonlin) {
  using L = Lanes<T>;
  const int nC = n * C;
  gemm<T>(false, false, N, D, nC, T(1), X, nC, phi, D, T(0), m, D);
  const int blocks = (N + kConnLanes - 1) / kConnLanes;
#pragma omp parallel
  {
    const L alpha_l[3] = {L(alpha[0]), L(alpha[1]), L(alpha[2])};
    std::vector<L> bias_l(bias, bias + D), m_l(D), pre_l(n), post_l(n), res_l(n * n);
    std::vector<L> work(static_cast<size_t>(work_size));
#pragma omp for schedule(static)
    for (int b = 0; b < blocks; ++b) {
      const int64_t t0 = static_cast<int64_t>(b) * kConnLanes;
      const int count = static_cast<int>(std::min<int64_t>(kConnLanes, N - t0));
      for (int l = 0; l < count; ++l)
        normalise_projection(m + (t0 + l) * D, rms + t0 + l, X + (t0 + l) * nC, nC, D, eps);
      gather_lanes(m_l.data(), m, t0, count, D, false);
      nonlin(m_l.data(), alpha_l, bias_l.data(), pre_l.data(), post_l.data(), res_l.data(),
             work.data());
      scatter_lanes(pre, pre_l.data(), t0, count, n);
      scatter_lanes(post, post_l.data(), t0, count, n);
      scatter_lanes(res, res_l.data(), t0, count, n * n);
    }
  }
}

// The backward of any dynamic mHC op. nonlin(m, alpha, bias, dpre, dpost, dres, g, dalpha,
// work) runs on blocks of tokens (padded lanes get a zero upstream gradient, so they add
// nothing); the rest is per token as in the scalar code.
template <class T, class Nonlin>
void coeff_backward_blocks(T* dX, T* dphi, T* dalpha, T* dbias, const T* dpre, const T* dpost,
                           const T* dres, const T* X, const T* phi, const T* alpha,
                           const T* bias, const T* m, const T* rms, int N, int n, int C, int D,
                           int work_size, Nonlin nonlin) {
  using L = Lanes<T>;
  const int nC = n * C;
  std::vector<T> hs(static_cast<size_t>(N) * D), cv(static_cast<size_t>(N));
  // dalpha and dbias reduced per thread.
  std::vector<T> dab(3 + D, T(0));
  parallel_reduce<T>(N, 3 + D, dab.data(), [&](int64_t begin, int64_t end, T* part) {
    const L alpha_l[3] = {L(alpha[0]), L(alpha[1]), L(alpha[2])};
    L dalpha_l[3] = {L(T(0)), L(T(0)), L(T(0))};
    std::vector<L> bias_l(bias, bias + D), m_l(D), dpre_l(n), dpost_l(n), dres_l(n * n), g_l(D);
    std::vector<L> work(static_cast<size_t>(work_size));
    for (int64_t t0 = begin; t0 < end; t0 += kConnLanes) {
      const int count = static_cast<int>(std::min<int64_t>(kConnLanes, end - t0));
      gather_lanes(m_l.data(), m, t0, count, D, false);
      gather_lanes(dpre_l.data(), dpre, t0, count, n, true);
      gather_lanes(dpost_l.data(), dpost, t0, count, n, true);
      gather_lanes(dres_l.data(), dres, t0, count, n * n, true);
      nonlin(m_l.data(), alpha_l, bias_l.data(), dpre_l.data(), dpost_l.data(), dres_l.data(),
             g_l.data(), dalpha_l, work.data());
      for (int l = 0; l < count; ++l) {
        const int64_t t = t0 + l;
        const T* mt = m + t * D;
        const T r = rms[t];
        T hm = 0;
        for (int d = 0; d < D; ++d) {
          const T g = g_l[d].v[l];
          part[3 + d] += g;
          const T h = alpha[math::mhc_gate_of_column(d, n)] * g;
          hs[t * D + d] = h / r;
          hm += h * mt[d];
        }
        cv[t] = -hm / (static_cast<T>(nC) * r * r);
      }
    }
    for (int i = 0; i < 3; ++i)
      for (int l = 0; l < kConnLanes; ++l) part[i] += dalpha_l[i].v[l];
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

}  // namespace

template <class T>
void mhc_coeff_forward(T* pre, T* post, T* res, T* m, T* rms, const T* X, const T* phi,
                       const T* alpha, const T* bias, int N, int n, int C, int iters, T eps) {
  using L = Lanes<T>;
  const int nn = n * n;
  coeff_forward_blocks<T>(pre, post, res, m, rms, X, phi, alpha, bias, N, n, C, 2 * n + nn, eps,
                          2 * nn,
                          [&](const L* m_l, const L* alpha_l, const L* bias_l, L* pre_l,
                              L* post_l, L* res_l, L* work) {
                            math::mhc_coeff_nonlin_forward(m_l, alpha_l, bias_l, n, iters, pre_l,
                                                           post_l, res_l, work, work + nn);
                          });
}

template <class T>
void mhc_coeff_backward(T* dX, T* dphi, T* dalpha, T* dbias, const T* dpre, const T* dpost,
                        const T* dres, const T* X, const T* phi, const T* alpha, const T* bias,
                        const T* m, const T* rms, int N, int n, int C, int iters) {
  using L = Lanes<T>;
  const int nn = n * n;
  coeff_backward_blocks<T>(
      dX, dphi, dalpha, dbias, dpre, dpost, dres, X, phi, alpha, bias, m, rms, N, n, C,
      2 * n + nn, 3 * nn + 2 * n * iters,
      [&](const L* m_l, const L* alpha_l, const L* bias_l, const L* dpre_l, const L* dpost_l,
          const L* dres_l, L* g_l, L* dalpha_l, L* work) {
        math::mhc_coeff_nonlin_backward(m_l, alpha_l, bias_l, dpre_l, dpost_l, dres_l, n, iters,
                                        g_l, dalpha_l, work, work + nn, work + 2 * nn,
                                        work + 3 * nn);
      });
}

// Any variant (residuals.md "Variants"): the same structure with D = 2n + R columns and
// core/mhc_math.h's mhc_variant_forward/backward per token. Static mHC (phi null) has
// no m and no r: H̃ = β for every token, computed once per step, and only β gets a gradient.
template <class T>
void mhc_variant_coeff_forward(T* pre, T* post, T* res, T* m, T* rms, const T* X, const T* phi,
                               const T* alpha, const T* bias, int N, int n, int C, int iters,
                               T eps, const math::MhcVariant& v) {
  using L = Lanes<T>;
  const int D = math::mhc_coeff_count(v.projection, n);
  if (phi == nullptr) {
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
  coeff_forward_blocks<T>(pre, post, res, m, rms, X, phi, alpha, bias, N, n, C, D, eps,
                          math::mhc_variant_work(v, n, iters),
                          [&](const L* m_l, const L* alpha_l, const L* bias_l, L* pre_l,
                              L* post_l, L* res_l, L* work) {
                            math::mhc_variant_forward<L>(m_l, alpha_l, bias_l, n, iters, v, pre_l,
                                                         post_l, res_l, work);
                          });
}

template <class T>
void mhc_variant_coeff_backward(T* dX, T* dphi, T* dalpha, T* dbias, const T* dpre,
                                const T* dpost, const T* dres, const T* X, const T* phi,
                                const T* alpha, const T* bias, const T* m, const T* rms, int N,
                                int n, int C, int iters, const math::MhcVariant& v) {
  using L = Lanes<T>;
  const int D = math::mhc_coeff_count(v.projection, n);
  if (phi == nullptr) {
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
  coeff_backward_blocks<T>(
      dX, dphi, dalpha, dbias, dpre, dpost, dres, X, phi, alpha, bias, m, rms, N, n, C, D,
      math::mhc_variant_work(v, n, iters),
      [&](const L* m_l, const L* alpha_l, const L* bias_l, const L* dpre_l, const L* dpost_l,
          const L* dres_l, L* g_l, L* dalpha_l, L* work) {
        math::mhc_variant_backward<L>(m_l, alpha_l, bias_l, dpre_l, dpost_l, dres_l, n, iters, v,
                                      g_l, dalpha_l, work);
      });
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
