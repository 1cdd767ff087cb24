// The learned collapse's weights (DeepSeek-V4's head mix; Backend::collapse_weights_*,
// residuals.md "Variants"): the same shape of problem as the mHC coefficients with D = n.
// X [N, nC] is the activation type T; φ [nC, n], α [1], β [n] (fp32 master copy), and
// w, m [N, n], r [N], dw and the parameter gradients are fp32.
//   forward:  r = sqrt(mean(v²) + eps), m = (v·φ)/r, w = σ(α m + β) + eps (overwrite)
//   backward: with g = ∂L/∂(α m + β), h = α g:  dφ += vᵀ(h/r),
//             dX += (h/r)φᵀ − (Σ h⊙m)·v/(nC·r²), dβ += Σ_t g, dα += Σ_t Σ_i g⊙m  (all "+=")
#pragma once
#include <cuda_runtime.h>

#include "common.cuh"

namespace mhc::cuda {

template <class T>
void collapse_weights_forward(float* w, float* m, float* rms, const T* X, const float* phi,
                              const float* alpha, const float* bias, int N, int n, int C,
                              float eps, cudaStream_t stream);

size_t collapse_weights_backward_workspace_bytes(int N, int n, int C);
template <class T>
void collapse_weights_backward(T* dX, float* dphi, float* dalpha, float* dbias, const float* dw,
                               const T* X, const float* phi, const float* alpha,
                               const float* bias, const float* m, const float* rms, int N, int n,
                               int C, Workspace& ws, cudaStream_t stream);

}  // namespace mhc::cuda
