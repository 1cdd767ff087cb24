// mHC coefficients (Backend::mhc_coeff_forward/backward; residuals.md "Coefficients"
// and "Coefficient backward"). X [N, nC] is the activation type T; φ [nC, D], α [3],
// β [D] (fp32 master copy), m [N, D], r [N], pre/post [N, n], res [N, n, n] and all
// gradients except dX are fp32. D = 2n + n².
//   forward:  r = sqrt(mean(v²) + eps), m = (v·φ)/r, pre = σ(α₀m+β), post = 2σ(α₁m+β),
//             res = Sinkhorn(α₂m+β)       (pre, post, res, m, r overwrite)
//   backward: with g = ∂L/∂H̃ (core/mhc_math.h) and h = α_gate ⊙ g:
//             dφ += vᵀ(h/r), dX += (h/r)φᵀ − (Σ h⊙m)·v/(nC·r²), dβ += Σ_t g,
//             dα_gate += Σ_t Σ_gate g⊙m      (all "+=")
#pragma once
#include <cuda_runtime.h>

#include "common.cuh"

namespace mhc::cuda {

struct MhcCoeffArgs {
  int N = 0, n = 1, C = 0, iters = 0;
};

template <class T>
void mhc_coeff_forward(float* pre, float* post, float* res, float* m, float* rms, const T* X,
                       const float* phi, const float* alpha, const float* bias,
                       const MhcCoeffArgs& a, float eps, cudaStream_t stream);

size_t mhc_coeff_backward_workspace_bytes(const MhcCoeffArgs& a);
template <class T>
void mhc_coeff_backward(T* dX, float* dphi, float* dalpha, float* dbias, const float* dpre,
                        const float* dpost, const float* dres, const T* X, const float* phi,
                        const float* alpha, const float* bias, const float* m, const float* rms,
                        const MhcCoeffArgs& a, Workspace& ws, cudaStream_t stream);

}  // namespace mhc::cuda
