// Kernels of the mHC variants' coefficients (cuda/mhc_variant_coeff.cuh).
//
// forward:  (1) coeff_project (cuda/coeff_projection.cuh): m_raw = X·φ and Σv² per token
//           in one pass over X (dynamic variants only);
//           (2) one thread per token: r = sqrt(Σv²/nC + eps), m = m_raw/r, then
//           math::mhc_variant_forward (pre, post and the variant's projection).
// backward: (1) one thread per token: math::mhc_variant_backward writes [dα_t | g_t]
//           rows, then hs = α_gate·g/r and cv = −Σ h m/(nC r²); (2) column sums of the
//           rows into dα, dβ (fixed order); (3) coeff_dx_dphi: dX += cv·X + hs·φᵀ and
//           dφ += Xᵀ·hs.
// The per-token scratch of the variant math (its logits, the n! permutation weights,
// the Sinkhorn sums) lives in global scratch, mhc_variant_work(v, n, iters) floats per
// token: the variants trade the paper kernel's register-resident arrays for one code path
// that serves every projection and n.
#include "mhc_variant_coeff.cuh"

#include "coeff_projection.cuh"
#include "reduce.cuh"

namespace mhc::cuda {
namespace {

constexpr int kTokenBlock = 64;

// rms holds Σv² on entry (dynamic variants) and r on exit; m holds X·φ, then m/r.
__global__ void mhc_variant_forward_kernel(float* pre, float* post, float* res, float* m,
                                           float* rms, const float* alpha, const float* bias,
                                           float* work, int N, int n, int C, int iters, int W,
                                           math::MhcVariant v, float eps) {
  const int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (t >= N) return;
  const int D = math::mhc_coeff_count(v.projection, n);
  float* mt = nullptr;
  if (v.dynamic) {
    const float r = sqrtf(rms[t] / static_cast<float>(n * C) + eps);
    rms[t] = r;
    mt = m + t * D;
    for (int d = 0; d < D; ++d) mt[d] /= r;
  }
  math::mhc_variant_forward<float>(mt, alpha, bias, n, iters, v, pre + t * n, post + t * n,
                                   res + t * n * n, work + t * W);
}

// rows [N, 3 + D] = [dα_t | g_t]; dynamic variants also hs [N, D] = α_gate·g/r and
// cv [N] = −Σ_d h_d m_d/(nC r²).
__global__ void mhc_variant_backward_kernel(float* rows, float* hs, float* cv, float* work,
                                            const float* dpre, const float* dpost,
                                            const float* dres, const float* m, const float* rms,
                                            const float* alpha, const float* bias, int N, int n,
                                            int C, int iters, int W, math::MhcVariant v) {
  const int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (t >= N) return;
  const int D = math::mhc_coeff_count(v.projection, n);
  float* row = rows + t * (3 + D);
  row[0] = row[1] = row[2] = 0.f;
  const float* mt = v.dynamic ? m + t * D : nullptr;
  math::mhc_variant_backward<float>(mt, alpha, bias, dpre + t * n, dpost + t * n,
                                    dres + t * n * n, n, iters, v, row + 3, row, work + t * W);
  if (!v.dynamic) return;
  const float r = rms[t];
  float hm = 0.f;
  for (int d = 0; d < D; ++d) {
    const float h = alpha[math::mhc_gate_of_column(d, n)] * row[3 + d];
    hs[t * D + d] = h / r;
    hm += h * mt[d];
  }
  cv[t] = -hm / (static_cast<float>(n * C) * r * r);
}

size_t work_floats(const MhcCoeffArgs& a, const math::MhcVariant& v) {
  return static_cast<size_t>(a.N) * math::mhc_variant_work(v, a.n, a.iters);
}

}  // namespace

size_t mhc_variant_coeff_forward_workspace_bytes(const MhcCoeffArgs& a, const math::MhcVariant& v) {
  return Workspace::bytes_for<float>(work_floats(a, v));
}

template <class T>
void mhc_variant_coeff_forward(float* pre, float* post, float* res, float* m, float* rms,
                               const T* X, const float* phi, const float* alpha,
                               const float* bias, const MhcCoeffArgs& a,
                               const math::MhcVariant& v, float eps, Workspace& ws,
                               cudaStream_t stream) {
  if (a.N <= 0) return;
  const int nC = a.n * a.C, D = math::mhc_coeff_count(v.projection, a.n);
  // m = X·φ, and Σv² per token into rms (same pass over X).
  if (v.dynamic) coeff_project<T>(m, rms, X, phi, a.N, nC, D, stream);
  float* work = ws.take<float>(work_floats(a, v));
  const unsigned grid = static_cast<unsigned>(ceil_div(a.N, kTokenBlock));
  launch<mhc_variant_forward_kernel>(grid, kTokenBlock, 0, stream, pre, post, res, m, rms, alpha,
                                     bias, work, a.N, a.n, a.C, a.iters,
                                     math::mhc_variant_work(v, a.n, a.iters), v, eps);
  CUDA_CHECK_LAUNCH();
}

size_t mhc_variant_coeff_backward_workspace_bytes(const MhcCoeffArgs& a,
                                                  const math::MhcVariant& v) {
  const size_t N = static_cast<size_t>(a.N);
  const int D = math::mhc_coeff_count(v.projection, a.n), nC = a.n * a.C;
  size_t bytes = Workspace::bytes_for<float>(work_floats(a, v)) +
                 Workspace::bytes_for<float>(N * (3 + D)) + column_sum_workspace_bytes(a.N, D);
  if (v.dynamic)
    bytes += Workspace::bytes_for<float>(N * D) + Workspace::bytes_for<float>(N) +
             column_sum_workspace_bytes(a.N, 3) + coeff_dx_dphi_workspace_bytes(a.N, nC, D);
  return bytes;
}

template <class T>
void mhc_variant_coeff_backward(T* dX, float* dphi, float* dalpha, float* dbias,
                                const float* dpre, const float* dpost, const float* dres,
                                const T* X, const float* phi, const float* alpha,
                                const float* bias, const float* m, const float* rms,
                                const MhcCoeffArgs& a, const math::MhcVariant& v, Workspace& ws,
                                cudaStream_t stream) {
  if (a.N <= 0) return;
  const int nC = a.n * a.C, D = math::mhc_coeff_count(v.projection, a.n);
  const size_t N = static_cast<size_t>(a.N);
  float* work = ws.take<float>(work_floats(a, v));
  float* rows = ws.take<float>(N * (3 + D));
  float* hs = v.dynamic ? ws.take<float>(N * D) : nullptr;
  float* cv = v.dynamic ? ws.take<float>(N) : nullptr;
  const unsigned grid = static_cast<unsigned>(ceil_div(a.N, kTokenBlock));
  launch<mhc_variant_backward_kernel>(grid, kTokenBlock, 0, stream, rows, hs, cv, work, dpre,
                                      dpost, dres, m, rms, alpha, bias, a.N, a.n, a.C, a.iters,
                                      math::mhc_variant_work(v, a.n, a.iters), v);
  CUDA_CHECK_LAUNCH();
  column_sum_accumulate(dbias, rows + 3, a.N, D, 3 + D, ws, stream);
  if (!v.dynamic) return;
  column_sum_accumulate(dalpha, rows, a.N, 3, 3 + D, ws, stream);
  coeff_dx_dphi<T>(dX, dphi, X, hs, cv, phi, a.N, nC, D, ws, stream);
}

#define MHC_INSTANTIATE_VARIANT(T)                                                              \
  template void mhc_variant_coeff_forward<T>(float*, float*, float*, float*, float*, const T*,  \
                                             const float*, const float*, const float*,          \
                                             const MhcCoeffArgs&, const math::MhcVariant&,      \
                                             float, Workspace&, cudaStream_t);                  \
  template void mhc_variant_coeff_backward<T>(T*, float*, float*, float*, const float*,         \
                                              const float*, const float*, const T*,             \
                                              const float*, const float*, const float*,         \
                                              const float*, const float*, const MhcCoeffArgs&,  \
                                              const math::MhcVariant&, Workspace&, cudaStream_t);
MHC_INSTANTIATE_VARIANT(float)
MHC_INSTANTIATE_VARIANT(bf16)
#undef MHC_INSTANTIATE_VARIANT

}  // namespace mhc::cuda
