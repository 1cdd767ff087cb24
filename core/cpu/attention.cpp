// Causal multi-head attention on qkv [B,T,3C] (q | k | v, head h in columns
// h·hd .. (h+1)·hd of each third). One (batch, head) pair per thread, each with
// single-threaded BLAS on its T×T score block. The forward keeps only the row
// log-sum-exp; the backward recomputes the probabilities from it:
//   P = exp(scale·QKᵀ − lse) (causal), D_t = Σ_j P_tj dP_tj, dS = P ⊙ (dP − D)
//   dQ = scale·dS K, dK = scale·dSᵀ Q, dV = Pᵀ dO with dP = dO Vᵀ.
#include <cmath>
#include <limits>
#include <vector>

#include "kernels.h"
#include "vec_math.h"

namespace mhc::cpu {
namespace {

// Fills S (T×T) with causal probabilities exp(scale·q·k − lse) for one (b, h), using
// the given lse, or computing it (and writing lse) when compute_lse.
template <class T>
void causal_probs(T* S, T* lse, const T* Q, const T* K, int T_, int hd, int ld, bool compute_lse) {
  const T scale = T(1) / std::sqrt(static_cast<T>(hd));
  gemm<T>(false, true, T_, T_, hd, scale, Q, ld, K, ld, T(0), S, T_);
  for (int t = 0; t < T_; ++t) {
    T* row = S + static_cast<int64_t>(t) * T_;
    if (compute_lse) {
      T mx = -std::numeric_limits<T>::infinity();
#pragma omp simd reduction(max : mx)
      for (int j = 0; j <= t; ++j) mx = row[j] > mx ? row[j] : mx;
      T sum = 0;
#pragma omp simd reduction(+ : sum)
      for (int j = 0; j <= t; ++j) sum += vexp(row[j] - mx);
      lse[t] = mx + std::log(sum);
    }
    const T l = lse[t];
#pragma omp simd
    for (int j = 0; j <= t; ++j) row[j] = vexp(row[j] - l);
    for (int j = t + 1; j < T_; ++j) row[j] = 0;
  }
}

}  // namespace

template <class T>
void attention_forward(T* out, T* lse, const T* qkv, int B, int T_, int n_head, int hd) {
  const int C = n_head * hd, ld = 3 * C;
#pragma omp parallel
  {
    std::vector<T> S(static_cast<size_t>(T_) * T_);
#pragma omp for schedule(static)
    for (int bh = 0; bh < B * n_head; ++bh) {
      const int b = bh / n_head, h = bh % n_head;
      const T* base = qkv + static_cast<int64_t>(b) * T_ * ld + h * hd;
      causal_probs<T>(S.data(), lse + static_cast<int64_t>(bh) * T_, base, base + C, T_, hd, ld,
                      true);
      gemm<T>(false, false, T_, hd, T_, T(1), S.data(), T_, base + 2 * C, ld, T(0),
              out + static_cast<int64_t>(b) * T_ * C + h * hd, C);
    }
  }
}

template <class T>
void attention_backward(T* dqkv, const T* dout, const T* qkv, const T* out, const T* lse, int B,
                        int T_, int n_head, int hd) {
  const int C = n_head * hd, ld = 3 * C;
  const T scale = T(1) / std::sqrt(static_cast<T>(hd));
#pragma omp parallel
  {
    std::vector<T> P(static_cast<size_t>(T_) * T_), dP(static_cast<size_t>(T_) * T_);
#pragma omp for schedule(static)
    for (int bh = 0; bh < B * n_head; ++bh) {
      const int b = bh / n_head, h = bh % n_head;
      const T* base = qkv + static_cast<int64_t>(b) * T_ * ld + h * hd;
      const T *Q = base, *K = base + C, *V = base + 2 * C;
      const T* dO = dout + static_cast<int64_t>(b) * T_ * C + h * hd;
      T* dbase = dqkv + static_cast<int64_t>(b) * T_ * ld + h * hd;
      causal_probs<T>(P.data(), const_cast<T*>(lse + static_cast<int64_t>(bh) * T_), Q, K, T_, hd,
                      ld, false);
      gemm<T>(false, true, T_, T_, hd, T(1), dO, C, V, ld, T(0), dP.data(), T_);
      for (int t = 0; t < T_; ++t) {
        T* prow = P.data() + static_cast<int64_t>(t) * T_;
        T* drow = dP.data() + static_cast<int64_t>(t) * T_;
        T D = 0;
#pragma omp simd reduction(+ : D)
        for (int j = 0; j <= t; ++j) D += prow[j] * drow[j];
        for (int j = 0; j <= t; ++j) drow[j] = prow[j] * (drow[j] - D) * scale;
        for (int j = t + 1; j < T_; ++j) drow[j] = 0;
      }
      gemm<T>(false, false, T_, hd, T_, T(1), dP.data(), T_, K, ld, T(0), dbase, ld);
      gemm<T>(true, false, T_, hd, T_, T(1), dP.data(), T_, Q, ld, T(0), dbase + C, ld);
      gemm<T>(true, false, T_, hd, T_, T(1), P.data(), T_, dO, C, T(0), dbase + 2 * C, ld);
    }
  }
  (void)out;
}

template void attention_forward<float>(float*, float*, const float*, int, int, int, int);
template void attention_forward<double>(double*, double*, const double*, int, int, int, int);
template void attention_backward<float>(float*, const float*, const float*, const float*,
                                        const float*, int, int, int, int);
template void attention_backward<double>(double*, const double*, const double*, const double*,
                                         const double*, int, int, int, int);

}  // namespace mhc::cpu
