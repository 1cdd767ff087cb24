// HC coefficients per token (residuals.md, "HC"). Static: pre = a, post = b,
// res = Aᵀ. Dynamic, per stream i with X̄_i = RMSNorm_hc(X_i):
//   a_i = s_α tanh(X̄_i·w_a) + a_i,  A_i: = s_α tanh(X̄_i W_A) + A_i:,
//   b_i = s_β tanh(X̄_i·w_b) + b_i;  res_ji = A_ij.
// Saved: rstd [N·n] and the tanh values [N, n, n+2] (a | A row | b) of each stream.
#include <cmath>
#include <vector>

#include "kernels.h"
#include "parallel.h"

namespace mhc::cpu {

template <class T>
void hc_coeff_forward(T* pre, T* post, T* res, T* rstd, T* tanh_out, const T* X, const T* a,
                      const T* A, const T* b, const T* norm_w, const T* w_a, const T* W_A,
                      const T* w_b, const T* s_alpha, const T* s_beta, int N, int n, int C,
                      T norm_eps) {
  const bool dynamic = w_a != nullptr;
#pragma omp parallel
  {
    std::vector<T> xbar(C);
#pragma omp for schedule(static)
    for (int t = 0; t < N; ++t) {
      T* pt = pre + static_cast<int64_t>(t) * n;
      T* qt = post + static_cast<int64_t>(t) * n;
      T* rt = res + static_cast<int64_t>(t) * n * n;
      for (int i = 0; i < n; ++i) {
        pt[i] = a[i];
        qt[i] = b[i];
        for (int j = 0; j < n; ++j) rt[j * n + i] = A[i * n + j];
      }
      if (!dynamic) continue;
      for (int i = 0; i < n; ++i) {
        const T* xi = X + (static_cast<int64_t>(t) * n + i) * C;
        T ss = 0;
#pragma omp simd reduction(+ : ss)
        for (int c = 0; c < C; ++c) ss += xi[c] * xi[c];
        const T s = T(1) / std::sqrt(ss / C + norm_eps);
        rstd[static_cast<int64_t>(t) * n + i] = s;
        T za = 0, zb = 0;
        for (int c = 0; c < C; ++c) {
          xbar[c] = xi[c] * s * norm_w[c];
          za += xbar[c] * w_a[c];
          zb += xbar[c] * w_b[c];
        }
        T* th = tanh_out + (static_cast<int64_t>(t) * n + i) * (n + 2);
        th[0] = std::tanh(za);
        th[n + 1] = std::tanh(zb);
        pt[i] += s_alpha[0] * th[0];
        qt[i] += s_beta[0] * th[n + 1];
        for (int j = 0; j < n; ++j) {
          T z = 0;
          for (int c = 0; c < C; ++c) z += xbar[c] * W_A[c * n + j];
          th[1 + j] = std::tanh(z);
          rt[j * n + i] += s_alpha[0] * th[1 + j];
        }
      }
    }
  }
}

template <class T>
void hc_coeff_backward(T* dX, T* da, T* dA, T* db, T* dnorm_w, T* dw_a, T* dW_A, T* dw_b,
                       T* ds_alpha, T* ds_beta, const T* dpre, const T* dpost, const T* dres,
                       const T* X, const T* norm_w, const T* w_a, const T* W_A, const T* w_b,
                       const T* s_alpha, const T* s_beta, const T* rstd, const T* tanh_in, int N,
                       int n, int C) {
  const bool dynamic = w_a != nullptr;
  // Partial layout: da [n] | dA [n²] | db [n] | ds_α | ds_β | dnorm_w [C] | dw_a [C] |
  // dW_A [C·n] | dw_b [C]
  const int64_t o_dA = n, o_db = n + n * n, o_ds = 2 * n + n * n, o_nw = o_ds + 2;
  const int64_t o_wa = o_nw + C, o_WA = o_wa + C, o_wb = o_WA + static_cast<int64_t>(C) * n;
  const int64_t width = dynamic ? o_wb + C : o_ds;
  std::vector<T> sum(static_cast<size_t>(width), T(0));
  parallel_reduce<T>(N, width, sum.data(), [&](int64_t begin, int64_t end, T* part) {
    std::vector<T> xhat(C), dxbar(C);
    for (int64_t t = begin; t < end; ++t) {
      const T* dpt = dpre + t * n;
      const T* dqt = dpost + t * n;
      const T* drt = dres + t * n * n;
      for (int i = 0; i < n; ++i) {
        part[i] += dpt[i];
        part[o_db + i] += dqt[i];
        for (int j = 0; j < n; ++j) part[o_dA + i * n + j] += drt[j * n + i];
      }
      if (!dynamic) continue;
      for (int i = 0; i < n; ++i) {
        const T* xi = X + (t * n + i) * C;
        const T s = rstd[t * n + i];
        const T* th = tanh_in + (t * n + i) * (n + 2);
        const T dza = dpt[i] * s_alpha[0] * (T(1) - th[0] * th[0]);
        const T dzb = dqt[i] * s_beta[0] * (T(1) - th[n + 1] * th[n + 1]);
        part[o_ds] += dpt[i] * th[0];
        part[o_ds + 1] += dqt[i] * th[n + 1];
        for (int c = 0; c < C; ++c) {
          xhat[c] = xi[c] * s;
          dxbar[c] = dza * w_a[c] + dzb * w_b[c];
          const T xb = xhat[c] * norm_w[c];
          part[o_wa + c] += dza * xb;
          part[o_wb + c] += dzb * xb;
        }
        for (int j = 0; j < n; ++j) {
          const T g = drt[j * n + i];
          const T tj = th[1 + j];
          part[o_ds] += g * tj;
          const T dz = g * s_alpha[0] * (T(1) - tj * tj);
          for (int c = 0; c < C; ++c) {
            dxbar[c] += dz * W_A[c * n + j];
            part[o_WA + c * n + j] += dz * xhat[c] * norm_w[c];
          }
        }
        // Through X̄ = x̂·w and x̂ = x·rstd.
        T dot = 0;
        for (int c = 0; c < C; ++c) {
          part[o_nw + c] += dxbar[c] * xhat[c];
          dot += dxbar[c] * norm_w[c] * xhat[c];
        }
        dot /= C;
        T* dxi = dX + (t * n + i) * C;
        for (int c = 0; c < C; ++c) dxi[c] += s * (dxbar[c] * norm_w[c] - xhat[c] * dot);
      }
    }
  });
  for (int i = 0; i < n; ++i) {
    da[i] += sum[i];
    db[i] += sum[o_db + i];
  }
  for (int i = 0; i < n * n; ++i) dA[i] += sum[o_dA + i];
  if (!dynamic) return;
  ds_alpha[0] += sum[o_ds];
  ds_beta[0] += sum[o_ds + 1];
  for (int c = 0; c < C; ++c) {
    dnorm_w[c] += sum[o_nw + c];
    dw_a[c] += sum[o_wa + c];
    dw_b[c] += sum[o_wb + c];
  }
  for (int64_t i = 0; i < static_cast<int64_t>(C) * n; ++i) dW_A[i] += sum[o_WA + i];
}

template void hc_coeff_forward<float>(float*, float*, float*, float*, float*, const float*,
                                      const float*, const float*, const float*, const float*,
                                      const float*, const float*, const float*, const float*,
                                      const float*, int, int, int, float);
template void hc_coeff_forward<double>(double*, double*, double*, double*, double*, const double*,
                                       const double*, const double*, const double*, const double*,
                                       const double*, const double*, const double*,
                                       const double*, const double*, int, int, int, double);
template void hc_coeff_backward<float>(float*, float*, float*, float*, float*, float*, float*,
                                       float*, float*, float*, const float*, const float*,
                                       const float*, const float*, const float*, const float*,
                                       const float*, const float*, const float*, const float*,
                                       const float*, const float*, int, int, int);
template void hc_coeff_backward<double>(double*, double*, double*, double*, double*, double*,
                                        double*, double*, double*, double*, const double*,
                                        const double*, const double*, const double*,
                                        const double*, const double*, const double*,
                                        const double*, const double*, const double*,
                                        const double*, const double*, int, int, int);

}  // namespace mhc::cpu
