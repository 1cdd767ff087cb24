// HC coefficients per token (residuals.md, "HC"). Static: pre = a, post = b,
// res = Aᵀ. Dynamic, per stream i with X̄_i = RMSNorm_hc(X_i):
//   a_i = s_α tanh(X̄_i·w_a) + a_i,  A_i: = s_α tanh(X̄_i W_A) + A_i:,
//   b_i = s_β tanh(X̄_i·w_b) + b_i;  res_ji = A_ij.
// Saved: rstd [N·n] and the tanh values [N, n, n+2] (a | A row | b) of each stream.
// The dynamic products run as BLAS GEMMs over all N·n stream rows against the C × (n+2)
// matrix W = [w_a | W_A | w_b] (forward X̄·W; backward dZ·Wᵀ and X̄ᵀ·dZ), the per-row
// RMS and tanh work around them as plain loops.
#include <cmath>
#include <vector>

#include "kernels.h"
#include "parallel.h"

namespace mhc::cpu {
namespace {

// W = [w_a | W_A | w_b]: C rows of n + 2 columns.
template <class T>
std::vector<T> dynamic_weights(const T* w_a, const T* W_A, const T* w_b, int n, int C) {
  const int K = n + 2;
  std::vector<T> W(static_cast<size_t>(C) * K);
  for (int c = 0; c < C; ++c) {
    W[c * K] = w_a[c];
    for (int j = 0; j < n; ++j) W[c * K + 1 + j] = W_A[c * n + j];
    W[c * K + n + 1] = w_b[c];
  }
  return W;
}

// rstd_r = 1 / sqrt(mean(X_r²) + ε) for the N·n stream rows.
template <class T>
void row_rstd(T* rstd, const T* X, int64_t rows, int C, T norm_eps) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const T* x = X + r * C;
    T ss = 0;
#pragma omp simd reduction(+ : ss)
    for (int c = 0; c < C; ++c) ss += x[c] * x[c];
    rstd[r] = T(1) / std::sqrt(ss / C + norm_eps);
  }
}

// X̄_r = X_r · rstd_r ⊙ norm_w.
template <class T>
void normalised_rows(T* Xbar, const T* X, const T* rstd, const T* norm_w, int64_t rows, int C) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const T* x = X + r * C;
    T* xb = Xbar + r * C;
    for (int c = 0; c < C; ++c) xb[c] = x[c] * rstd[r] * norm_w[c];
  }
}

}  // namespace

template <class T>
void hc_coeff_forward(T* pre, T* post, T* res, T* rstd, T* tanh_out, const T* X, const T* a,
                      const T* A, const T* b, const T* norm_w, const T* w_a, const T* W_A,
                      const T* w_b, const T* s_alpha, const T* s_beta, int N, int n, int C,
                      T norm_eps) {
  const bool dynamic = w_a != nullptr;
  const int K = n + 2;
  const int64_t rows = static_cast<int64_t>(N) * n;
  if (dynamic) {
    // tanh_out first holds the pre-activations Z = X̄·W, then their tanh.
    std::vector<T> Xbar(static_cast<size_t>(rows) * C);
    row_rstd(rstd, X, rows, C, norm_eps);
    normalised_rows(Xbar.data(), X, rstd, norm_w, rows, C);
    const std::vector<T> W = dynamic_weights(w_a, W_A, w_b, n, C);
    gemm<T>(false, false, static_cast<int>(rows), K, C, T(1), Xbar.data(), C, W.data(), K, T(0),
            tanh_out, K);
  }
#pragma omp parallel for schedule(static)
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
      T* th = tanh_out + (static_cast<int64_t>(t) * n + i) * K;
      for (int k = 0; k < K; ++k) th[k] = std::tanh(th[k]);
      pt[i] += s_alpha[0] * th[0];
      qt[i] += s_beta[0] * th[n + 1];
      for (int j = 0; j < n; ++j) rt[j * n + i] += s_alpha[0] * th[1 + j];
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
  const int K = n + 2;
  const int64_t rows = static_cast<int64_t>(N) * n;
  // Partial layout: da [n] | dA [n²] | db [n] | ds_α | ds_β
  const int64_t o_dA = n, o_db = n + n * n, o_ds = 2 * n + n * n;
  const int64_t width = dynamic ? o_ds + 2 : o_ds;
  // dZ: the gradient of each stream row's pre-activations (a | A row | b).
  std::vector<T> dZ(dynamic ? static_cast<size_t>(rows) * K : 0);
  std::vector<T> sum(static_cast<size_t>(width), T(0));
  parallel_reduce<T>(N, width, sum.data(), [&](int64_t begin, int64_t end, T* part) {
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
        const T* th = tanh_in + (t * n + i) * K;
        T* dz = dZ.data() + (t * n + i) * K;
        dz[0] = dpt[i] * s_alpha[0] * (T(1) - th[0] * th[0]);
        dz[n + 1] = dqt[i] * s_beta[0] * (T(1) - th[n + 1] * th[n + 1]);
        part[o_ds] += dpt[i] * th[0];
        part[o_ds + 1] += dqt[i] * th[n + 1];
        for (int j = 0; j < n; ++j) {
          const T g = drt[j * n + i];
          const T tj = th[1 + j];
          part[o_ds] += g * tj;
          dz[1 + j] = g * s_alpha[0] * (T(1) - tj * tj);
        }
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

  // dW = X̄ᵀ·dZ, then dX̄ = dZ·Wᵀ (overwriting X̄, no longer needed).
  std::vector<T> Xbar(static_cast<size_t>(rows) * C), dW(static_cast<size_t>(C) * K);
  normalised_rows(Xbar.data(), X, rstd, norm_w, rows, C);
  gemm<T>(true, false, C, K, static_cast<int>(rows), T(1), Xbar.data(), C, dZ.data(), K, T(0),
          dW.data(), K);
  for (int c = 0; c < C; ++c) {
    dw_a[c] += dW[c * K];
    for (int j = 0; j < n; ++j) dW_A[c * n + j] += dW[c * K + 1 + j];
    dw_b[c] += dW[c * K + n + 1];
  }
  const std::vector<T> W = dynamic_weights(w_a, W_A, w_b, n, C);
  std::vector<T>& dXbar = Xbar;
  gemm<T>(false, true, static_cast<int>(rows), C, K, T(1), dZ.data(), K, W.data(), K, T(0),
          dXbar.data(), C);
  // Through X̄ = x̂·norm_w and x̂ = x·rstd, per row; dnorm_w reduced per thread.
  std::vector<T> dnw(static_cast<size_t>(C), T(0));
  parallel_reduce<T>(rows, C, dnw.data(), [&](int64_t begin, int64_t end, T* part) {
    for (int64_t r = begin; r < end; ++r) {
      const T* x = X + r * C;
      const T* dxb = dXbar.data() + r * C;
      const T s = rstd[r];
      T dot = 0;
      for (int c = 0; c < C; ++c) {
        const T xhat = x[c] * s;
        part[c] += dxb[c] * xhat;
        dot += dxb[c] * norm_w[c] * xhat;
      }
      dot /= C;
      T* dx = dX + r * C;
      for (int c = 0; c < C; ++c) dx[c] += s * (dxb[c] * norm_w[c] - x[c] * s * dot);
    }
  });
  for (int c = 0; c < C; ++c) dnorm_w[c] += dnw[c];
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
