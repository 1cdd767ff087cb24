// The two passes over the streams X [N, nC] that every φ-projected connection coefficient
// shares (the paper's mHC, its variants, the learned collapse; residuals.md "Coefficients"
// and "Variants"), for any number D of coefficient columns. φ [nC, D] is fp32.
//   coeff_project:  m [N, D] = X·φ (overwrite) and sumsq [N] = Σ_i X[t,i]² (overwrite)
//   coeff_dx_dphi:  dX += cv·X + hs·φᵀ  and  dφ += Xᵀ·hs
//                   (hs [N, D] and cv [N] fp32, computed per token by the caller)
// Fast paths for D ≤ 32 with rows of whole 16-byte vectors; the generic tile_gemm path
// otherwise (same results up to summation order). Every reduction over tokens runs in a
// fixed order, so results do not vary run to run.
#pragma once
#include <cuda_runtime.h>

#include "common.cuh"

namespace mhc::cuda {

template <class T>
void coeff_project(float* m, float* sumsq, const T* X, const float* phi, int N, int nC, int D,
                   cudaStream_t stream);

size_t coeff_dx_dphi_workspace_bytes(int N, int nC, int D);
template <class T>
void coeff_dx_dphi(T* dX, float* dphi, const T* X, const float* hs, const float* cv,
                   const float* phi, int N, int nC, int D, Workspace& ws, cudaStream_t stream);

}  // namespace mhc::cuda
