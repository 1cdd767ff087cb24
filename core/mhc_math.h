// Per-token connection math shared by the CPU kernels and the CUDA kernels: the
// Sinkhorn–Knopp projection with its exact backward, and the mHC coefficient
// nonlinearities (residuals.md). Everything here is a __host__ __device__ inline
// function over one token's small arrays; callers pass the scratch memory so a CUDA
// kernel can keep it in registers or shared memory. Templated on the scalar type so
// the CPU tests run it in float64, and on core/cpu/lanes.h's SIMD type so the CPU runs
// several tokens at once (one per lane): only arithmetic, exp_/sqrt_/tanh_/max_ and
// branches that do not depend on the data may appear here.
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
// The larger of a and b, as `a > b ? a : b` (core/cpu/lanes.h gives it per SIMD lane).
MHC_HD float max_(float a, float b) { return a > b ? a : b; }
MHC_HD double max_(double a, double b) { return a > b ? a : b; }

template <class T>
MHC_HD T sigmoid(T x) {
  return T(1) / (T(1) + exp_(-x));
}

// M0 = exp(Z - max Z) for one n×n matrix (the shift cancels exactly in Sinkhorn).
template <class T>
MHC_HD void sinkhorn_init(const T* Z, int n, T* M) {
  T zmax = Z[0];
  for (int i = 1; i < n * n; ++i) zmax = max_(Z[i], zmax);
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

// One step of the Sinkhorn backward, shared by the paper's projection and V4's.
// Undo a row normalisation M = A / r: G ← (G − Σ_j G⊙M) / r, and M ← A.
template <class T>
MHC_HD void sinkhorn_undo_rows(T* G, T* M, const T* r, int n) {
  for (int i = 0; i < n; ++i) {
    T s = 0;
    for (int j = 0; j < n; ++j) s += G[i * n + j] * M[i * n + j];
    const T inv = T(1) / r[i];
    for (int j = 0; j < n; ++j) {
      G[i * n + j] = (G[i * n + j] - s) * inv;
      M[i * n + j] *= r[i];
    }
  }
}

// Undo a column normalisation A = M' / c: G ← (G − Σ_i G⊙A) / c, and M ← M'.
template <class T>
MHC_HD void sinkhorn_undo_cols(T* G, T* M, const T* c, int n) {
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
    sinkhorn_undo_rows(G, M, r, n);  // M^t = A^t / r  →  M holds A^t
    sinkhorn_undo_cols(G, M, c, n);  // A^t = M^{t-1} / c  →  M holds M^{t-1}
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

// ---- Variants (residuals.md, "Variants") ------------------------------------------------
// The projection that turns the res logits into H_res, and the numerics around it. The
// default value of every field is the paper's mHC above.
enum class MhcProjection : int {
  Sinkhorn = 0,   // n² logits, Sinkhorn–Knopp
  Birkhoff = 1,   // mHC-lite: n! logits, softmax-weighted permutation matrices (n ≤ 5)
  Kronecker = 2,  // KromHC: log2 n logits, Kronecker product of 2×2 doubly stochastic factors
  Identity = 3,   // H_res = I, no res logits
};

struct MhcVariant {
  MhcProjection projection = MhcProjection::Sinkhorn;
  bool v4 = false;       // DeepSeek-V4 numerics: ε on H_pre and in the projection, Z transposed
  bool dynamic = true;   // false: static mHC, H̃ = β (no φ, no α)
  float eps = 1e-6f;     // V4's ε (residual.mhc.eps)
};

MHC_HD bool mhc_is_default(const MhcVariant& v) {
  return v.projection == MhcProjection::Sinkhorn && !v.v4 && v.dynamic;
}

MHC_HD int log2_exact(int n) {  // log2 n for a power of two, else -1
  int k = 0;
  while ((1 << k) < n) ++k;
  return (1 << k) == n ? k : -1;
}

MHC_HD int factorial(int n) {
  int f = 1;
  for (int i = 2; i <= n; ++i) f *= i;
  return f;
}

// Number R of res logits per token: n², n!, log2 n or 0.
MHC_HD int mhc_res_count(MhcProjection p, int n) {
  switch (p) {
    case MhcProjection::Birkhoff: return factorial(n);
    case MhcProjection::Kronecker: return log2_exact(n);
    case MhcProjection::Identity: return 0;
    default: return n * n;
  }
}

// Coefficient columns per token: [pre (n) | post (n) | res (R)].
MHC_HD int mhc_coeff_count(MhcProjection p, int n) { return 2 * n + mhc_res_count(p, n); }

// Scratch a variant's per-token forward/backward needs (entries of T).
MHC_HD int mhc_variant_work(const MhcVariant& v, int n, int iters) {
  const int R = mhc_res_count(v.projection, n);
  const int nn = n * n, big = R > nn ? R : nn;
  return 2 * big + 2 * nn + 2 * n * iters + 8;
}

// The next permutation of p[0..n) in lexicographic order; false after the last.
MHC_HD bool next_permutation_(int* p, int n) {
  int i = n - 2;
  while (i >= 0 && p[i] >= p[i + 1]) --i;
  if (i < 0) return false;
  int j = n - 1;
  while (p[j] <= p[i]) --j;
  int t = p[i]; p[i] = p[j]; p[j] = t;
  for (int a = i + 1, b = n - 1; a < b; ++a, --b) { t = p[a]; p[a] = p[b]; p[b] = t; }
  return true;
}

// mHC-lite: w = softmax(z) over the R = n! permutations σ_k (lexicographic),
// H = Σ_k w_k P_k with P_k[i][σ_k(i)] = 1. w [R] receives the weights.
template <class T>
MHC_HD void birkhoff_forward(const T* z, int n, T* H, T* w) {
  const int R = factorial(n);
  T zmax = z[0];
  for (int k = 1; k < R; ++k) zmax = max_(z[k], zmax);
  T s = 0;
  for (int k = 0; k < R; ++k) { w[k] = exp_(z[k] - zmax); s += w[k]; }
  const T inv = T(1) / s;
  for (int k = 0; k < R; ++k) w[k] *= inv;
  for (int i = 0; i < n * n; ++i) H[i] = 0;
  int perm[8];
  for (int i = 0; i < n; ++i) perm[i] = i;
  for (int k = 0; k < R; ++k) {
    for (int i = 0; i < n; ++i) H[i * n + perm[i]] += w[k];
    next_permutation_(perm, n);
  }
}

// Backward: dw_k = Σ_i dH[i][σ_k(i)], dz = w ⊙ (dw − ⟨w, dw⟩). Scratch w [R], dw [R].
template <class T>
MHC_HD void birkhoff_backward(const T* z, const T* dH, int n, T* dz, T* w) {
  const int R = factorial(n);
  T zmax = z[0];
  for (int k = 1; k < R; ++k) zmax = max_(z[k], zmax);
  T s = 0;
  for (int k = 0; k < R; ++k) { w[k] = exp_(z[k] - zmax); s += w[k]; }
  const T inv = T(1) / s;
  for (int k = 0; k < R; ++k) w[k] *= inv;
  int perm[8];
  for (int i = 0; i < n; ++i) perm[i] = i;
  T dot = 0;
  for (int k = 0; k < R; ++k) {
    T d = 0;
    for (int i = 0; i < n; ++i) d += dH[i * n + perm[i]];
    dz[k] = d;
    dot += w[k] * d;
    next_permutation_(perm, n);
  }
  for (int k = 0; k < R; ++k) dz[k] = w[k] * (dz[k] - dot);
}

// KromHC: H = B_1 ⊗ … ⊗ B_K, B_l = [[p_l, 1−p_l], [1−p_l, p_l]], p_l = σ(z_l), B_1
// outermost: H_ij = Π_l (bit_l(i) == bit_l(j) ? p_l : 1 − p_l), bit_1 the most significant.
template <class T>
MHC_HD void kronecker_forward(const T* z, int n, T* H) {
  const int K = log2_exact(n);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) {
      T h = 1;
      for (int l = 0; l < K; ++l) {
        const T p = sigmoid(z[l]);
        const int b = K - 1 - l;
        h *= (((i >> b) & 1) == ((j >> b) & 1)) ? p : T(1) - p;
      }
      H[i * n + j] = h;
    }
}

// Backward: dz_l = σ'(z_l) Σ_ij dH_ij (±1) Π_{m≠l} factor_m (no division, so exact at p = 0, 1).
template <class T>
MHC_HD void kronecker_backward(const T* z, const T* dH, int n, T* dz) {
  const int K = log2_exact(n);
  for (int l = 0; l < K; ++l) {
    T acc = 0;
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < n; ++j) {
        T h = 1;
        for (int m2 = 0; m2 < K; ++m2) {
          if (m2 == l) continue;
          const T p = sigmoid(z[m2]);
          const int b = K - 1 - m2;
          h *= (((i >> b) & 1) == ((j >> b) & 1)) ? p : T(1) - p;
        }
        const int b = K - 1 - l;
        acc += (((i >> b) & 1) == ((j >> b) & 1)) ? dH[i * n + j] * h : -dH[i * n + j] * h;
      }
    const T p = sigmoid(z[l]);
    dz[l] = acc * p * (T(1) - p);
  }
}

// DeepSeek-V4's projection of one n×n matrix Z (already in its transposed layout):
//   M = colsoftmax(Z) + ε; rows: M /= (Σ_j M + ε); then T−1 times columns, rows, each
//   dividing by (sum + ε). With ε = 0 this is sinkhorn_forward(Z, T).
// rc: 2nT scratch or null; block t holds [c^t | r^t] (c^0 unused: the softmax).
template <class T>
MHC_HD void v4_project_forward(const T* Z, int n, int iters, T eps, T* H, T* rc) {
  for (int j = 0; j < n; ++j) {
    T zmax = Z[j];
    for (int i = 1; i < n; ++i) zmax = max_(Z[i * n + j], zmax);
    T s = 0;
    for (int i = 0; i < n; ++i) { H[i * n + j] = exp_(Z[i * n + j] - zmax); s += H[i * n + j]; }
    const T inv = T(1) / s;
    for (int i = 0; i < n; ++i) H[i * n + j] = H[i * n + j] * inv + eps;
  }
  for (int t = 0; t < iters; ++t) {
    if (t > 0)
      for (int j = 0; j < n; ++j) {
        T s = eps;
        for (int i = 0; i < n; ++i) s += H[i * n + j];
        if (rc) rc[2 * n * t + j] = s;
        const T inv = T(1) / s;
        for (int i = 0; i < n; ++i) H[i * n + j] *= inv;
      }
    for (int i = 0; i < n; ++i) {
      T s = eps;
      for (int j = 0; j < n; ++j) s += H[i * n + j];
      if (rc) rc[2 * n * t + n + i] = s;
      const T inv = T(1) / s;
      for (int j = 0; j < n; ++j) H[i * n + j] *= inv;
    }
  }
}

// Exact backward of v4_project_forward (the normalisations as in sinkhorn_backward, with
// the sums including ε; then the column softmax). Scratch: M, G (n×n), rc (2nT).
template <class T>
MHC_HD void v4_project_backward(const T* Z, const T* dH, int n, int iters, T eps, T* dZ, T* M,
                                T* G, T* rc) {
  v4_project_forward(Z, n, iters, eps, M, rc);
  for (int i = 0; i < n * n; ++i) G[i] = dH[i];
  for (int t = iters - 1; t >= 0; --t) {
    const T* c = rc + 2 * n * t;
    const T* r = rc + 2 * n * t + n;
    sinkhorn_undo_rows(G, M, r, n);
    if (t == 0) break;  // the first row step follows the softmax, not a column step
    sinkhorn_undo_cols(G, M, c, n);
  }
  // G = dL/d(colsoftmax(Z)); the softmax is recomputed exactly rather than reconstructed.
  for (int j = 0; j < n; ++j) {
    T zmax = Z[j];
    for (int i = 1; i < n; ++i) zmax = max_(Z[i * n + j], zmax);
    T s = 0;
    for (int i = 0; i < n; ++i) { M[i * n + j] = exp_(Z[i * n + j] - zmax); s += M[i * n + j]; }
    const T inv = T(1) / s;
    T q = 0;
    for (int i = 0; i < n; ++i) { M[i * n + j] *= inv; q += G[i * n + j] * M[i * n + j]; }
    for (int i = 0; i < n; ++i) dZ[i * n + j] = M[i * n + j] * (G[i * n + j] - q);
  }
}

// The pre-activation H̃_d: α_g m_d + β_d, or β_d alone for static mHC (m == null).
template <class T>
MHC_HD T mhc_logit(const T* m, const T* alpha, const T* bias, int d, int n) {
  return m ? alpha[mhc_gate_of_column(d, n)] * m[d] + bias[d] : bias[d];
}

// Coefficient nonlinearities of any variant for one token (the paper's variant computes
// exactly what mhc_coeff_nonlin_forward computes). m [D] (null for static mHC), alpha [3],
// bias [D], D = mhc_coeff_count. Outputs pre [n], post [n], res [n×n].
// work: mhc_variant_work(v, n, iters) entries.
template <class T>
MHC_HD void mhc_variant_forward(const T* m, const T* alpha, const T* bias, int n, int iters,
                                const MhcVariant& v, T* pre, T* post, T* res, T* work) {
  const T eps = v.v4 ? static_cast<T>(v.eps) : T(0);
  for (int i = 0; i < n; ++i) {
    pre[i] = sigmoid(mhc_logit(m, alpha, bias, i, n));
    if (v.v4) pre[i] += eps;
  }
  for (int i = 0; i < n; ++i) post[i] = T(2) * sigmoid(mhc_logit(m, alpha, bias, n + i, n));
  const int R = mhc_res_count(v.projection, n);
  T* z = work;  // R (or n² for Sinkhorn) res logits
  for (int k = 0; k < R; ++k) z[k] = mhc_logit(m, alpha, bias, 2 * n + k, n);
  T* scratch = work + (R > n * n ? R : n * n);
  switch (v.projection) {
    case MhcProjection::Sinkhorn:
      if (v.v4) {
        T* Zt = scratch;  // Z = mat(H̃_res)ᵀ
        for (int i = 0; i < n; ++i)
          for (int j = 0; j < n; ++j) Zt[i * n + j] = z[j * n + i];
        v4_project_forward(Zt, n, iters, eps, res, static_cast<T*>(nullptr));
      } else {
        sinkhorn_forward(z, n, iters, res, scratch, static_cast<T*>(nullptr));
      }
      break;
    case MhcProjection::Birkhoff: birkhoff_forward(z, n, res, scratch); break;
    case MhcProjection::Kronecker: kronecker_forward(z, n, res); break;
    case MhcProjection::Identity:
      for (int i = 0; i < n; ++i)
        for (int j = 0; j < n; ++j) res[i * n + j] = i == j ? T(1) : T(0);
      break;
  }
}

// Backward for one token: g = dL/dH̃ [D]; adds dL/dα to dalpha [3] when m is given.
template <class T>
MHC_HD void mhc_variant_backward(const T* m, const T* alpha, const T* bias, const T* dpre,
                                 const T* dpost, const T* dres, int n, int iters,
                                 const MhcVariant& v, T* g, T* dalpha, T* work) {
  for (int i = 0; i < n; ++i) {
    const T s = sigmoid(mhc_logit(m, alpha, bias, i, n));
    g[i] = dpre[i] * s * (T(1) - s);
  }
  for (int i = 0; i < n; ++i) {
    const T s = sigmoid(mhc_logit(m, alpha, bias, n + i, n));
    g[n + i] = dpost[i] * T(2) * s * (T(1) - s);
  }
  const int R = mhc_res_count(v.projection, n), nn = n * n;
  T* z = work;
  for (int k = 0; k < R; ++k) z[k] = mhc_logit(m, alpha, bias, 2 * n + k, n);
  T* M = work + (R > nn ? R : nn);
  T* G = M + nn;
  T* W = G + nn;  // n² (or R) more, then rc
  T* rc = W + (R > nn ? R : nn);
  T* gres = g + 2 * n;
  switch (v.projection) {
    case MhcProjection::Sinkhorn:
      if (v.v4) {
        for (int i = 0; i < n; ++i)
          for (int j = 0; j < n; ++j) W[i * n + j] = z[j * n + i];
        v4_project_backward(W, dres, n, iters, static_cast<T>(v.eps), z, M, G, rc);
        // z now holds dL/dZ (Z transposed): back to the row-major logit layout.
        for (int i = 0; i < n; ++i)
          for (int j = 0; j < n; ++j) gres[j * n + i] = z[i * n + j];
      } else {
        sinkhorn_backward(z, dres, n, iters, gres, M, G, rc);
      }
      break;
    case MhcProjection::Birkhoff: birkhoff_backward(z, dres, n, gres, W); break;
    case MhcProjection::Kronecker: kronecker_backward(z, dres, n, gres); break;
    case MhcProjection::Identity: break;
  }
  if (m) {
    const int D = 2 * n + R;
    for (int d = 0; d < D; ++d) dalpha[mhc_gate_of_column(d, n)] += g[d] * m[d];
  }
}

// The learned collapse's weights for one token (V4's head mix):
//   w_i = σ(α m_i + β_i) + ε, m = (v·φ_h)/r. Backward: g_i = dw_i σ'(·), dα += Σ g_i m_i.
template <class T>
MHC_HD void collapse_weights_forward(const T* m, T alpha, const T* bias, int n, T eps, T* w) {
  for (int i = 0; i < n; ++i) w[i] = sigmoid(alpha * m[i] + bias[i]) + eps;
}

template <class T>
MHC_HD void collapse_weights_backward(const T* m, T alpha, const T* bias, const T* dw, int n,
                                      T* g, T* dalpha) {
  for (int i = 0; i < n; ++i) {
    const T s = sigmoid(alpha * m[i] + bias[i]);
    g[i] = dw[i] * s * (T(1) - s);
    *dalpha += g[i] * m[i];
  }
}

}  // namespace mhc::math
