// mHC coefficient kernels (the paper's kernel plan for the coefficient path).
//
// forward:  (1) coeff_project (cuda/coeff_projection.cuh): m_raw = X·φ with Σv² per
//           token fused into the same pass over X;
//           (2) one thread per token: r = sqrt(Σv²/nC + eps), m = m_raw/r and the
//           pre/post/Sinkhorn nonlinearities of core/mhc_math.h.
// backward: (1) one thread per token: g from mhc_coeff_nonlin_backward (Sinkhorn sums
//           in thread-local memory), writing [dα_t | g_t] rows, hs = α_gate·g/r and the
//           RMS coefficient cv = −Σ h m/(nC r²); (2) column sums of those rows into dα,
//           dβ; (3) coeff_dx_dphi: one pass over X for dX += cv·X + hs·φᵀ and the
//           split-K partials of dφ = Xᵀ·hs, summed in chunk order into dφ.
// Every reduction over tokens has a fixed order: the result does not vary run to run.
#include "mhc_coeff.cuh"

#include "coeff_projection.cuh"
#include "mhc_math.h"
#include "reduce.cuh"

namespace mhc::cuda {
namespace {

constexpr int kTokenBlock = 64;
// Sinkhorn iteration sums kept in thread-local memory up to this many iterations
// (more: global scratch).
constexpr int kLocalIters = 32;

template <int K>
__global__ void mhc_nonlin_forward_kernel(float* pre, float* post, float* res, float* m,
                                          float* rms, const float* alpha, const float* bias, int N,
                                          int n_rt, int C, int iters, float eps) {
  constexpr int kCap = K > 0 ? K : kMaxStreams;
  constexpr int kD = 2 * kCap + kCap * kCap;
  const int n = K > 0 ? K : n_rt, D = 2 * n + n * n;
  const int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (t >= N) return;
  float mt[kD], p[kCap], q[kCap], h[kCap * kCap], z[kCap * kCap], scratch[kCap * kCap];
  const float r = sqrtf(rms[t] / static_cast<float>(n * C) + eps);  // rms holds Σv² here
  rms[t] = r;
  for (int d = 0; d < D; ++d) {
    mt[d] = m[t * D + d] / r;
    m[t * D + d] = mt[d];
  }
  math::mhc_coeff_nonlin_forward(mt, alpha, bias, n, iters, p, q, h, z, scratch);
  for (int i = 0; i < n; ++i) {
    pre[t * n + i] = p[i];
    post[t * n + i] = q[i];
  }
  for (int i = 0; i < n * n; ++i) res[t * n * n + i] = h[i];
}

// rows [N, 3 + D] = [dα_t | g_t]; hs [N, D] = α_gate·g/r; cv [N] = −Σ_d h_d m_d/(nC r²).
// The Sinkhorn sums (2·n·iters) live in thread-local memory when iters ≤ kLocalIters
// (interleaved per thread, so accesses coalesce), else in `sums` (global scratch).
template <int K>
__global__ void mhc_nonlin_backward_kernel(float* rows, float* hs, float* cv, float* sums,
                                           const float* dpre, const float* dpost,
                                           const float* dres, const float* m, const float* rms,
                                           const float* alpha, const float* bias, int N, int n_rt,
                                           int C, int iters) {
  constexpr int kCap = K > 0 ? K : kMaxStreams;
  constexpr int kD = 2 * kCap + kCap * kCap;
  const int n = K > 0 ? K : n_rt, D = 2 * n + n * n, nn = n * n;
  const int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (t >= N) return;
  float mt[kD], g[kD], dp[kCap], dq[kCap], dh[kCap * kCap];
  float z[kCap * kCap], M[kCap * kCap], G[kCap * kCap];
  float local_sums[K > 0 ? 2 * K * kLocalIters : 1];
  float* rc = K > 0 && iters <= kLocalIters ? local_sums : sums + t * 2 * n * iters;
  float dal[3] = {0.f, 0.f, 0.f};
  for (int d = 0; d < D; ++d) mt[d] = m[t * D + d];
  for (int i = 0; i < n; ++i) {
    dp[i] = dpre[t * n + i];
    dq[i] = dpost[t * n + i];
  }
  for (int i = 0; i < nn; ++i) dh[i] = dres[t * nn + i];
  math::mhc_coeff_nonlin_backward(mt, alpha, bias, dp, dq, dh, n, iters, g, dal, z, M, G, rc);
  const float r = rms[t];
  float* row = rows + t * (3 + D);
  row[0] = dal[0];
  row[1] = dal[1];
  row[2] = dal[2];
  float hm = 0.f;
  for (int d = 0; d < D; ++d) {
    row[3 + d] = g[d];
    const float hd = alpha[math::mhc_gate_of_column(d, n)] * g[d];
    hs[t * D + d] = hd / r;
    hm += hd * mt[d];
  }
  cv[t] = -hm / (static_cast<float>(n * C) * r * r);
}

int iters_or_one(int iters) { return iters > 0 ? iters : 1; }

bool sums_in_global(const MhcCoeffArgs& a) {
  return a.n > 8 || (a.n != 1 && a.n != 2 && a.n != 4 && a.n != 8) || a.iters > kLocalIters;
}

}  // namespace

template <class T>
void mhc_coeff_forward(float* pre, float* post, float* res, float* m, float* rms, const T* X,
                       const float* phi, const float* alpha, const float* bias,
                       const MhcCoeffArgs& a, float eps, cudaStream_t stream) {
  if (a.N <= 0) return;
  const int nC = a.n * a.C, D = 2 * a.n + a.n * a.n;
  // m = X·φ, and Σv² per token into rms (same pass over X).
  coeff_project<T>(m, rms, X, phi, a.N, nC, D, stream);
  const unsigned grid = static_cast<unsigned>(ceil_div(a.N, kTokenBlock));
  with_stream_count(a.n, [&](auto k) {
    launch<mhc_nonlin_forward_kernel<decltype(k)::value>>(grid, kTokenBlock, 0, stream,
        pre, post, res, m, rms, alpha, bias, a.N, a.n, a.C, a.iters, eps);
  });
  CUDA_CHECK_LAUNCH();
}

size_t mhc_coeff_backward_workspace_bytes(const MhcCoeffArgs& a) {
  const size_t N = static_cast<size_t>(a.N), D = 2 * a.n + a.n * a.n, nC = size_t(a.n) * a.C;
  const size_t sums = sums_in_global(a) ? N * 2 * a.n * iters_or_one(a.iters) : 1;
  return Workspace::bytes_for<float>(sums) + Workspace::bytes_for<float>(N * (3 + D)) +
         Workspace::bytes_for<float>(N * D) + Workspace::bytes_for<float>(N) +
         column_sum_workspace_bytes(a.N, 3) + column_sum_workspace_bytes(a.N, static_cast<int>(D)) +
         coeff_dx_dphi_workspace_bytes(a.N, static_cast<int>(nC), static_cast<int>(D));
}

template <class T>
void mhc_coeff_backward(T* dX, float* dphi, float* dalpha, float* dbias, const float* dpre,
                        const float* dpost, const float* dres, const T* X, const float* phi,
                        const float* alpha, const float* bias, const float* m, const float* rms,
                        const MhcCoeffArgs& a, Workspace& ws, cudaStream_t stream) {
  if (a.N <= 0) return;
  const int nC = a.n * a.C, D = 2 * a.n + a.n * a.n;
  const size_t N = static_cast<size_t>(a.N);
  float* sums =
      ws.take<float>(sums_in_global(a) ? N * 2 * a.n * iters_or_one(a.iters) : size_t(1));
  float* rows = ws.take<float>(N * (3 + D));
  float* hs = ws.take<float>(N * D);
  float* cv = ws.take<float>(N);
  const unsigned grid = static_cast<unsigned>(ceil_div(a.N, kTokenBlock));
  with_stream_count(a.n, [&](auto k) {
    launch<mhc_nonlin_backward_kernel<decltype(k)::value>>(grid, kTokenBlock, 0, stream,
        rows, hs, cv, sums, dpre, dpost, dres, m, rms, alpha, bias, a.N, a.n, a.C, a.iters);
  });
  CUDA_CHECK_LAUNCH();
  column_sum_accumulate(dalpha, rows, a.N, 3, 3 + D, ws, stream);
  column_sum_accumulate(dbias, rows + 3, a.N, D, 3 + D, ws, stream);
  coeff_dx_dphi<T>(dX, dphi, X, hs, cv, phi, a.N, nC, D, ws, stream);
}

template void mhc_coeff_forward<float>(float*, float*, float*, float*, float*, const float*,
                                       const float*, const float*, const float*,
                                       const MhcCoeffArgs&, float, cudaStream_t);
template void mhc_coeff_forward<bf16>(float*, float*, float*, float*, float*, const bf16*,
                                      const float*, const float*, const float*,
                                      const MhcCoeffArgs&, float, cudaStream_t);
template void mhc_coeff_backward<float>(float*, float*, float*, float*, const float*, const float*,
                                        const float*, const float*, const float*, const float*,
                                        const float*, const float*, const float*,
                                        const MhcCoeffArgs&, Workspace&, cudaStream_t);
template void mhc_coeff_backward<bf16>(bf16*, float*, float*, float*, const float*, const float*,
                                       const float*, const bf16*, const float*, const float*,
                                       const float*, const float*, const float*,
                                       const MhcCoeffArgs&, Workspace&, cudaStream_t);

}  // namespace mhc::cuda
