// RMSNorm (Backend::rmsnorm_forward/backward): y = x · rstd · w, rstd = 1/sqrt(mean(x²)+eps).
//   forward:  out [rows,C] (act) overwrite; rstd [rows] (fp32) overwrite.
//   backward: with g = dout·w and x̂ = x·rstd:
//             dx [rows,C] (act) += rstd·(g − x̂·mean(g·x̂));  dw [C] (fp32) += Σ_rows dout·x̂
// x, out, dx, dout, w share the activation type T (w is the working weight copy).
#pragma once
#include <cuda_runtime.h>

#include "common.cuh"

namespace mhc::cuda {

template <class T>
void rmsnorm_forward(T* out, float* rstd, const T* x, const T* w, int rows, int C, float eps,
                     cudaStream_t stream);

size_t rmsnorm_backward_workspace_bytes(int rows, int C);
template <class T>
void rmsnorm_backward(T* dx, float* dw, const T* dout, const T* x, const T* w, const float* rstd,
                      int rows, int C, Workspace& ws, cudaStream_t stream);

}  // namespace mhc::cuda
