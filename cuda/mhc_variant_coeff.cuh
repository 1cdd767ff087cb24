// Coefficients of the mHC variants (Backend::mhc_variant_coeff_forward/backward;
// residuals.md "Variants"): the paper op's structure (cuda/mhc_coeff.cuh) with D =
// 2n + R columns (R = n², n!, log2 n or 0 for sinkhorn, birkhoff, kronecker, identity)
// and core/mhc_math.h's mhc_variant_forward/backward per token, so the CPU and the GPU
// run the same per-token code. X [N, nC] is the activation type T; φ [nC, D], α [3],
// β [D] (fp32 master copy), m [N, D], r [N] and every other tensor are fp32.
// Static mHC (v.dynamic false): φ, α, m, r and X are unused (may be null), H̃ = β for
// every token; the backward then only adds Σ_t g to dβ (dX gets nothing).
#pragma once
#include <cuda_runtime.h>

#include "common.cuh"
#include "mhc_coeff.cuh"
#include "mhc_math.h"

namespace mhc::cuda {

size_t mhc_variant_coeff_forward_workspace_bytes(const MhcCoeffArgs& a, const math::MhcVariant& v);
template <class T>
void mhc_variant_coeff_forward(float* pre, float* post, float* res, float* m, float* rms,
                               const T* X, const float* phi, const float* alpha,
                               const float* bias, const MhcCoeffArgs& a,
                               const math::MhcVariant& v, float eps, Workspace& ws,
                               cudaStream_t stream);

size_t mhc_variant_coeff_backward_workspace_bytes(const MhcCoeffArgs& a,
                                                  const math::MhcVariant& v);
template <class T>
void mhc_variant_coeff_backward(T* dX, float* dphi, float* dalpha, float* dbias,
                                const float* dpre, const float* dpost, const float* dres,
                                const T* X, const float* phi, const float* alpha,
                                const float* bias, const float* m, const float* rms,
                                const MhcCoeffArgs& a, const math::MhcVariant& v, Workspace& ws,
                                cudaStream_t stream);

}  // namespace mhc::cuda
