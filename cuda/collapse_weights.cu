// Kernels of the learned collapse's weights (cuda/collapse_weights.cuh).
//
// forward:  (1) coeff_project (cuda/coeff_projection.cuh) with D = n: m_raw = X·φ and
//           Σv² per token in one pass over X; (2) one thread per token: r, m = m_raw/r
//           and w = σ(α m + β) + eps (math::collapse_weights_forward).
// backward: (1) one thread per token: math::collapse_weights_backward writes [dα_t | g_t]
//           rows, then hs = α·g/r and cv = −Σ h m/(nC r²); (2) column sums of the rows
//           into dα, dβ (fixed order); (3) coeff_dx_dphi: dX += cv·X + hs·φᵀ and
//           dφ += Xᵀ·hs.
#include "collapse_weights.cuh"

#include "coeff_projection.cuh"
#include "mhc_math.h"
#include "reduce.cuh"

namespace mhc::cuda {
namespace {

constexpr int kTokenBlock = 64;

// rms holds Σv² on entry and r on exit; m holds X·φ, then m/r.
__global__ void collapse_forward_kernel(float* w, float* m, float* rms, const float* alpha,
                                        const float* bias, int N, int n, int C, float eps) {
  const int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (t >= N) return;
  const float r = sqrtf(rms[t] / static_cast<float>(n * C) + eps);
  rms[t] = r;
  float* mt = m + t * n;
  for (int i = 0; i < n; ++i) mt[i] /= r;
  math::collapse_weights_forward<float>(mt, alpha[0], bias, n, eps, w + t * n);
}

// rows [N, 1 + n] = [dα_t | g_t]; hs [N, n] = α·g/r; cv [N] = −Σ_i h_i m_i/(nC r²).
__global__ void collapse_backward_kernel(float* rows, float* hs, float* cv, const float* dw,
                                         const float* m, const float* rms, const float* alpha,
                                         const float* bias, int N, int n, int C) {
  const int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (t >= N) return;
  float* row = rows + t * (1 + n);
  row[0] = 0.f;
  const float* mt = m + t * n;
  math::collapse_weights_backward<float>(mt, alpha[0], bias, dw + t * n, n, row + 1, row);
  const float r = rms[t];
  float hm = 0.f;
  for (int i = 0; i < n; ++i) {
    const float h = alpha[0] * row[1 + i];
    hs[t * n + i] = h / r;
    hm += h * mt[i];
  }
  cv[t] = -hm / (static_cast<float>(n * C) * r * r);
}

}  // namespace

template <class T>
void collapse_weights_forward(float* w, float* m, float* rms, const T* X, const float* phi,
                              const float* alpha, const float* bias, int N, int n, int C,
                              float eps, cudaStream_t stream) {
  if (N <= 0) return;
  coeff_project<T>(m, rms, X, phi, N, n * C, n, stream);
  launch<collapse_forward_kernel>(static_cast<unsigned>(ceil_div(N, kTokenBlock)), kTokenBlock, 0,
                                  stream, w, m, rms, alpha, bias, N, n, C, eps);
  CUDA_CHECK_LAUNCH();
}

size_t collapse_weights_backward_workspace_bytes(int N, int n, int C) {
  const size_t Ns = static_cast<size_t>(N);
  return Workspace::bytes_for<float>(Ns * (1 + n)) + Workspace::bytes_for<float>(Ns * n) +
         Workspace::bytes_for<float>(Ns) + column_sum_workspace_bytes(N, 1) +
         column_sum_workspace_bytes(N, n) + coeff_dx_dphi_workspace_bytes(N, n * C, n);
}

template <class T>
void collapse_weights_backward(T* dX, float* dphi, float* dalpha, float* dbias, const float* dw,
                               const T* X, const float* phi, const float* alpha,
                               const float* bias, const float* m, const float* rms, int N, int n,
                               int C, Workspace& ws, cudaStream_t stream) {
  if (N <= 0) return;
  const size_t Ns = static_cast<size_t>(N);
  float* rows = ws.take<float>(Ns * (1 + n));
  float* hs = ws.take<float>(Ns * n);
  float* cv = ws.take<float>(Ns);
  launch<collapse_backward_kernel>(static_cast<unsigned>(ceil_div(N, kTokenBlock)), kTokenBlock,
                                   0, stream, rows, hs, cv, dw, m, rms, alpha, bias, N, n, C);
  CUDA_CHECK_LAUNCH();
  column_sum_accumulate(dalpha, rows, N, 1, 1 + n, ws, stream);
  column_sum_accumulate(dbias, rows + 1, N, n, 1 + n, ws, stream);
  coeff_dx_dphi<T>(dX, dphi, X, hs, cv, phi, N, n * C, n, ws, stream);
}

#define MHC_INSTANTIATE_COLLAPSE(T)                                                            \
  template void collapse_weights_forward<T>(float*, float*, float*, const T*, const float*,    \
                                            const float*, const float*, int, int, int, float,  \
                                            cudaStream_t);                                     \
  template void collapse_weights_backward<T>(T*, float*, float*, float*, const float*,         \
                                             const T*, const float*, const float*,             \
                                             const float*, const float*, const float*, int,    \
                                             int, int, Workspace&, cudaStream_t);
MHC_INSTANTIATE_COLLAPSE(float)
MHC_INSTANTIATE_COLLAPSE(bf16)
#undef MHC_INSTANTIATE_COLLAPSE

}  // namespace mhc::cuda
