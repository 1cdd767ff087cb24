// HC coefficients (Backend::hc_coeff_forward/backward; residuals.md "HC"). X [N,n,C] is
// the activation type T; parameters (master copy), coefficients, saved state and
// parameter gradients are fp32.
//   static:  pre = a, post = b, res = Aᵀ (per token).
//   dynamic, per stream i with X̄_i = x_i·rstd_i·norm_w:
//     pre_i += s_α tanh(X̄_i·w_a), res_ji += s_α tanh(X̄_i·W_A[:, j]), post_i += s_β tanh(X̄_i·w_b)
//     saved: rstd [N·n], tanh [N, n, n+2] = (a | A row | b) per stream   (overwrite)
//   backward: parameter gradients "+=", dX "+=" (dynamic only; static HC has no X path).
// Dynamic parameter pointers (norm_w ... s_beta) are null for static HC.
#pragma once
#include <cuda_runtime.h>

#include "common.cuh"

namespace mhc::cuda {

struct HcCoeffParams {
  const float *a = nullptr, *A = nullptr, *b = nullptr;
  const float *norm_w = nullptr, *w_a = nullptr, *W_A = nullptr, *w_b = nullptr;
  const float *s_alpha = nullptr, *s_beta = nullptr;
  __host__ __device__ bool dynamic() const { return w_a != nullptr; }
};

struct HcCoeffGrads {
  float *a = nullptr, *A = nullptr, *b = nullptr;
  float *norm_w = nullptr, *w_a = nullptr, *W_A = nullptr, *w_b = nullptr;
  float *s_alpha = nullptr, *s_beta = nullptr;
};

template <class T>
void hc_coeff_forward(float* pre, float* post, float* res, float* rstd, float* tanh_out,
                      const T* X, const HcCoeffParams& p, int N, int n, int C, float norm_eps,
                      cudaStream_t stream);

size_t hc_coeff_backward_workspace_bytes(int N, int n, int C, bool dynamic);
template <class T>
void hc_coeff_backward(T* dX, const HcCoeffGrads& dp, const float* dpre, const float* dpost,
                       const float* dres, const T* X, const HcCoeffParams& p, const float* rstd,
                       const float* tanh_in, int N, int n, int C, Workspace& ws,
                       cudaStream_t stream);

}  // namespace mhc::cuda
