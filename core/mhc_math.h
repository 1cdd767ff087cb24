// Per-token connection math shared by the CPU kernels and the CUDA kernels: the
// Sinkhorn–Knopp projection with its exact backward, and the mHC coefficient
// nonlinearities (residuals.md). Everything here is a __host__ __device__ inline
// function over one token's small arrays; callers pass the scratch memory so a CUDA
// kernel can keep it in registers or shared memory. Templated on the scalar type so
// the CPU tests run it in float64.
#pragma once

#if defined(__CUDACC__)
#define MHC_HD __host__ __device__ __forceinline__
#else
#define MHC_HD inline
#endif

#include <math.h>

namespace mhc::math {

MHC_HD float exp_(float x) { return expf(x); }
MHC_HD double exp_(double x) { return exp(x); }
MHC_HD float tanh_(float x) { return tanhf(x); }
MHC_HD double tanh_(double x) { return tanh(x); }
MHC_HD float sqrt_(float x) { return sqrtf(x); }
MHC_HD double sqrt_(double x) { return sqrt(x); }

template <class T>
MHC_HD T sigmoid(T x) {
  return T(1) / (T(1) + exp_(-x));
}

// M0 = exp(Z - max Z) for one n×n matrix (the shift cancels exactly in Sinkhorn).
template <class T>
MHC_HD void sinkhorn_init(const T* Z, int n, T* M) {
  T zmax = Z[0];
  for (int i = 1; i < n * n; ++i) zmax = Z[i] > zmax ? Z[i] : zmax;
  for (int i = 0; i < n * n; ++i) M[i] = exp_(Z[i] - zmax);
}

// One Sinkhorn iteration in place: columns first, then rows. When c and r are given
// they receive the column sums and row sums it divided by. Division by a sum is a
// multiplication by its reciprocal: n divisions per step instead of n².
template <class T>
MHC_HD void sinkhorn_step(T* M, int n, T* c, T* r) {
  for (int j = 0; j < n; ++j) {
    T s = 0;
    for (int i = 0; i < n; ++i) s += M[i * n + j];
    if (c) c[j] = s;
    const T inv = T(1) / s;
    for (int i = 0; i < n; ++i) M[i * n + j] *= inv;
  }
  for (int i = 0; i < n; ++i) {
    T s = 0;
    for (int j = 0; j < n; ++j) s += M[i * n + j];
    if (r) r[i] = s;
    const T inv = T(1) / s;
    for (int j = 0; j < n; ++j) M[i * n + j] *= inv;
  }
}

// Forward: H = M^(iters), the last iterate (rows sum to 1 exactly, columns to ~1).
// Z, H: n×n row-major. M: n×n scratch (may alias H). rc: 2*n*iters scratch or null;
// when given it receives [c^1, r^1, c^2, r^2, ...].
template <class T>
MHC_HD void sinkhorn_forward(const T* Z, int n, int iters, T* H, T* M, T* rc) {
  sinkhorn_init(Z, n, M);
  for (int t = 0; t < iters; ++t)
    sinkhorn_step(M, n, rc ? rc + 2 * n * t : nullptr, rc ? rc + 2 * n * t + n : nullptr);
  if (H != M)
    for (int i = 0; i < n * n; ++i) H[i] = M[i];
}

// Exact backward through the unrolled iterations (residuals.md). Replays the forward to
// get the sums, then walks back, reconstructing A^t and M^{t-1} from M^t with the saved
// sums instead of storing every iterate.
// Inputs Z, dH (n×n). Output dZ (n×n). Scratch: M, G (n×n each), rc (2*n*iters).
template <class T>
MHC_HD void sinkhorn_backward(const T* Z, const T* dH, int n, int iters, T* dZ, T* M, T* G,
                              T* rc) {
  sinkhorn_init(Z, n, M);
  for (int t = 0; t < iters; ++t) sinkhorn_step(M, n, rc + 2 * n * t, rc + 2 * n * t + n);
  for (int i = 0; i < n * n; ++i) G[i] = dH[i];  // M holds M^(iters) = H
  for (int t = iters - 1; t >= 0; --t) {
    const T* c = rc + 2 * n * t;
    const T* r = rc + 2 * n * t + n;
    // Undo the row step M^t = A^t / r: G ← (G − Σ_j G⊙M^t) / r, and M ← A^t.
    for (int i = 0; i < n; ++i) {
      T s = 0;
      for (int j = 0; j < n; ++j) s += G[i * n + j] * M[i * n + j];
      const T inv = T(1) / r[i];
      for (int j = 0; j < n; ++j) {
        G[i * n + j] = (G[i * n + j] - s) * inv;
        M[i * n + j] *= r[i];
      }
    }
    // Undo the column step A^t = M^{t-1} / c: G ← (G − Σ_i G⊙A^t) / c, and M ← M^{t-1}.
    for (int j = 0; j < n; ++j) {
      T q = 0;
      for (int i = 0; i < n; ++i) q += G[i * n + j] * M[i * n + j];
      const T inv = T(1) / c[j];
      for (int i = 0; i < n; ++i) {
        G[i * n + j] = (G[i * n + j] - q) * inv;
        M[i * n + j] *= c[j];
      }
    }
  }
  // dZ = G ⊙ M0, with M0 recomputed exactly rather than reconstructed.
  sinkhorn_init(Z, n, M);
  for (int i = 0; i < n * n; ++i) dZ[i] = G[i] * M[i];
}

// mHC coefficient nonlinearities for one token.
// m [D] = (v·φ)/r, alpha [3], bias [D] with D = 2n + n², layout [pre | post | res].
// Outputs pre [n] = σ, post [n] = 2σ, res [n×n] = Sinkhorn. Scratch: Z, M (n×n each).
template <class T>
MHC_HD void mhc_coeff_nonlin_forward(const T* m, const T* alpha, const T* bias, int n, int iters,
                                     T* pre, T* post, T* res, T* Z, T* M) {
  for (int i = 0; i < n; ++i) pre[i] = sigmoid(alpha[0] * m[i] + bias[i]);
  for (int i = 0; i < n; ++i) post[i] = T(2) * sigmoid(alpha[1] * m[n + i] + bias[n + i]);
  for (int i = 0; i < n * n; ++i) Z[i] = alpha[2] * m[2 * n + i] + bias[2 * n + i];
  sinkhorn_forward(Z, n, iters, res, M, static_cast<T*>(nullptr));
}

// Backward of the nonlinearities for one token: from dpre, dpost, dres to
// g = dL/dH̃ [D]. Adds this token's dL/dalpha to dalpha [3]. Scratch: Z, M, G (n×n
// each), rc (2*n*iters).
template <class T>
MHC_HD void mhc_coeff_nonlin_backward(const T* m, const T* alpha, const T* bias, const T* dpre,
                                      const T* dpost, const T* dres, int n, int iters, T* g,
                                      T* dalpha, T* Z, T* M, T* G, T* rc) {
  for (int i = 0; i < n; ++i) {
    T s = sigmoid(alpha[0] * m[i] + bias[i]);
    g[i] = dpre[i] * s * (T(1) - s);
    dalpha[0] += g[i] * m[i];
  }
  for (int i = 0; i < n; ++i) {
    T s = sigmoid(alpha[1] * m[n + i] + bias[n + i]);
    g[n + i] = dpost[i] * T(2) * s * (T(1) - s);
    dalpha[1] += g[n + i] * m[n + i];
  }
  for (int i = 0; i < n * n; ++i) Z[i] = alpha[2] * m[2 * n + i] + bias[2 * n + i];
  sinkhorn_backward(Z, dres, n, iters, g + 2 * n, M, G, rc);
  for (int i = 0; i < n * n; ++i) dalpha[2] += g[2 * n + i] * m[2 * n + i];
}

// Which alpha gate a coefficient column belongs to (0 pre, 1 post, 2 res).
MHC_HD int mhc_gate_of_column(int d, int n) { return d < n ? 0 : (d < 2 * n ? 1 : 2); }

}  // namespace mhc::math
