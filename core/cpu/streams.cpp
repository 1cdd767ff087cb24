// Residual-stream ops of HC/mHC on X [N, n, C] with per-token coefficients.
//   aggregate: u = Σ_i pre_i X_i            backward: dX_i += pre_i du, dpre_i = <X_i, du>
//   merge:     Y_i = Σ_j res_ij X_j + post_i f
//              backward: dX_j = Σ_i res_ij dY_i, df = Σ_i post_i dY_i,
//                        dres_ij = <dY_i, X_j>, dpost_i = <dY_i, f>
#include <cstring>

#include "kernels.h"

namespace mhc::cpu {

template <class T>
void stream_expand(T* X, const T* x, int N, int n, int C) {
#pragma omp parallel for schedule(static)
  for (int t = 0; t < N; ++t)
    for (int i = 0; i < n; ++i)
      std::memcpy(X + (static_cast<int64_t>(t) * n + i) * C, x + static_cast<int64_t>(t) * C,
                  sizeof(T) * C);
}

template <class T>
void stream_collapse(T* x, const T* X, int N, int n, int C) {
#pragma omp parallel for schedule(static)
  for (int t = 0; t < N; ++t) {
    T* out = x + static_cast<int64_t>(t) * C;
    const T* in = X + static_cast<int64_t>(t) * n * C;
    for (int c = 0; c < C; ++c) out[c] = in[c];
    for (int i = 1; i < n; ++i)
      for (int c = 0; c < C; ++c) out[c] += in[i * C + c];
  }
}

template <class T>
void stream_aggregate_forward(T* u, const T* X, const T* pre, int N, int n, int C) {
#pragma omp parallel for schedule(static)
  for (int t = 0; t < N; ++t) {
    T* out = u + static_cast<int64_t>(t) * C;
    const T* in = X + static_cast<int64_t>(t) * n * C;
    const T* p = pre + static_cast<int64_t>(t) * n;
    for (int c = 0; c < C; ++c) out[c] = p[0] * in[c];
    for (int i = 1; i < n; ++i)
      for (int c = 0; c < C; ++c) out[c] += p[i] * in[i * C + c];
  }
}

template <class T>
void stream_aggregate_backward(T* dX, T* dpre, const T* du, const T* X, const T* pre, int N, int n,
                               int C) {
#pragma omp parallel for schedule(static)
  for (int t = 0; t < N; ++t) {
    const T* g = du + static_cast<int64_t>(t) * C;
    const T* in = X + static_cast<int64_t>(t) * n * C;
    T* din = dX + static_cast<int64_t>(t) * n * C;
    const T* p = pre + static_cast<int64_t>(t) * n;
    for (int i = 0; i < n; ++i) {
      T dot = 0;
#pragma omp simd reduction(+ : dot)
      for (int c = 0; c < C; ++c) {
        dot += in[i * C + c] * g[c];
        din[i * C + c] += p[i] * g[c];
      }
      dpre[static_cast<int64_t>(t) * n + i] = dot;
    }
  }
}

template <class T>
void stream_merge_forward(T* Y, const T* X, const T* f, const T* res, const T* post, int N, int n,
                          int C) {
#pragma omp parallel for schedule(static)
  for (int t = 0; t < N; ++t) {
    const T* in = X + static_cast<int64_t>(t) * n * C;
    const T* ft = f + static_cast<int64_t>(t) * C;
    const T* r = res + static_cast<int64_t>(t) * n * n;
    const T* p = post + static_cast<int64_t>(t) * n;
    T* out = Y + static_cast<int64_t>(t) * n * C;
    for (int i = 0; i < n; ++i) {
      T* o = out + i * C;
      for (int c = 0; c < C; ++c) o[c] = p[i] * ft[c];
      for (int j = 0; j < n; ++j) {
        const T w = r[i * n + j];
        const T* xj = in + j * C;
        for (int c = 0; c < C; ++c) o[c] += w * xj[c];
      }
    }
  }
}

template <class T>
void stream_merge_backward(T* dX, T* df, T* dres, T* dpost, const T* dY, const T* X, const T* f,
                           const T* res, const T* post, int N, int n, int C) {
#pragma omp parallel for schedule(static)
  for (int t = 0; t < N; ++t) {
    const int64_t base = static_cast<int64_t>(t) * n * C;
    const T* g = dY + base;
    const T* in = X + base;
    const T* ft = f + static_cast<int64_t>(t) * C;
    const T* r = res + static_cast<int64_t>(t) * n * n;
    const T* p = post + static_cast<int64_t>(t) * n;
    T* dft = df + static_cast<int64_t>(t) * C;
    T* din = dX + base;
    for (int c = 0; c < C; ++c) dft[c] = 0;
    for (int j = 0; j < n * C; ++j) din[j] = 0;
    for (int i = 0; i < n; ++i) {
      const T* gi = g + i * C;
      T dp = 0;
#pragma omp simd reduction(+ : dp)
      for (int c = 0; c < C; ++c) {
        dp += gi[c] * ft[c];
        dft[c] += p[i] * gi[c];
      }
      dpost[static_cast<int64_t>(t) * n + i] = dp;
      for (int j = 0; j < n; ++j) {
        const T* xj = in + j * C;
        T* dxj = din + j * C;
        const T w = r[i * n + j];
        T dr = 0;
#pragma omp simd reduction(+ : dr)
        for (int c = 0; c < C; ++c) {
          dr += gi[c] * xj[c];
          dxj[c] += w * gi[c];
        }
        dres[static_cast<int64_t>(t) * n * n + i * n + j] = dr;
      }
    }
  }
}

#define MHC_INSTANTIATE(T)                                                                  \
  template void stream_expand<T>(T*, const T*, int, int, int);                              \
  template void stream_collapse<T>(T*, const T*, int, int, int);                            \
  template void stream_aggregate_forward<T>(T*, const T*, const T*, int, int, int);         \
  template void stream_aggregate_backward<T>(T*, T*, const T*, const T*, const T*, int, int, \
                                             int);                                          \
  template void stream_merge_forward<T>(T*, const T*, const T*, const T*, const T*, int, int, \
                                        int);                                               \
  template void stream_merge_backward<T>(T*, T*, T*, T*, const T*, const T*, const T*,       \
                                         const T*, const T*, int, int, int);
MHC_INSTANTIATE(float)
MHC_INSTANTIATE(double)
#undef MHC_INSTANTIATE

}  // namespace mhc::cpu
