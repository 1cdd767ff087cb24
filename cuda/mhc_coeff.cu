// mHC coefficient kernels.
// forward:  (1) m_raw = X·φ with Σv² per token fused into the same pass over X
//           (tile_gemm, φ read once per 64-token tile), (2) one thread per token:
//           r = sqrt(Σv²/nC + eps), m = m_raw/r and the nonlinearities of core/mhc_math.h.
// backward: (1) one thread per token: g from mhc_coeff_nonlin_backward, writing
//           [dα_t | g_t] rows, h/r and the RMS coefficient −Σhm/(nC r²); (2) column sums
//           of those rows into dα, dβ; (3) dφ += Xᵀ(h/r) and dX += (h/r)φᵀ with
//           tile_gemm (each output summed in order by one thread); (4) dX += c_t·v_t.
// Every reduction over tokens has a fixed order: the result does not vary run to run.
#include "mhc_coeff.cuh"

#include "mhc_math.h"
#include "reduce.cuh"
#include "tile_gemm.cuh"

namespace mhc::cuda {
namespace {

constexpr int kTokenBlock = 64;

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
  float dal[3] = {0.f, 0.f, 0.f};
  for (int d = 0; d < D; ++d) mt[d] = m[t * D + d];
  for (int i = 0; i < n; ++i) {
    dp[i] = dpre[t * n + i];
    dq[i] = dpost[t * n + i];
  }
  for (int i = 0; i < nn; ++i) dh[i] = dres[t * nn + i];
  math::mhc_coeff_nonlin_backward(mt, alpha, bias, dp, dq, dh, n, iters, g, dal, z, M, G,
                                  sums + t * 2 * n * iters);
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

// dX[t, i] += cv[t] · X[t, i]
template <class T>
__global__ void add_scaled_rows_kernel(T* dX, const T* X, const float* cv, int N, int nC) {
  const int64_t total = int64_t(N) * nC;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x)
    dX[idx] = from_f32<T>(to_f32(dX[idx]) + cv[idx / nC] * to_f32(X[idx]));
}

int iters_or_one(int iters) { return iters > 0 ? iters : 1; }

}  // namespace

template <class T>
void mhc_coeff_forward(float* pre, float* post, float* res, float* m, float* rms, const T* X,
                       const float* phi, const float* alpha, const float* bias,
                       const MhcCoeffArgs& a, float eps, cudaStream_t stream) {
  if (a.N <= 0) return;
  const int nC = a.n * a.C, D = 2 * a.n + a.n * a.n;
  // m = X·φ, and Σv² per token into rms (same pass over X).
  tile_gemm<T, float, float>(a.N, D, nC, X, nC, 1, phi, D, 1, m, D, false, rms, stream);
  const unsigned grid = static_cast<unsigned>(ceil_div(a.N, kTokenBlock));
  with_stream_count(a.n, [&](auto k) {
    mhc_nonlin_forward_kernel<decltype(k)::value><<<grid, kTokenBlock, 0, stream>>>(
        pre, post, res, m, rms, alpha, bias, a.N, a.n, a.C, a.iters, eps);
  });
  CUDA_CHECK_LAUNCH();
}

size_t mhc_coeff_backward_workspace_bytes(const MhcCoeffArgs& a) {
  const size_t N = static_cast<size_t>(a.N), D = 2 * a.n + a.n * a.n;
  return Workspace::bytes_for<float>(N * 2 * a.n * iters_or_one(a.iters)) +
         Workspace::bytes_for<float>(N * (3 + D)) + Workspace::bytes_for<float>(N * D) +
         Workspace::bytes_for<float>(N) + column_sum_workspace_bytes(a.N, 3) +
         column_sum_workspace_bytes(a.N, static_cast<int>(D));
}

template <class T>
void mhc_coeff_backward(T* dX, float* dphi, float* dalpha, float* dbias, const float* dpre,
                        const float* dpost, const float* dres, const T* X, const float* phi,
                        const float* alpha, const float* bias, const float* m, const float* rms,
                        const MhcCoeffArgs& a, Workspace& ws, cudaStream_t stream) {
  if (a.N <= 0) return;
  const int nC = a.n * a.C, D = 2 * a.n + a.n * a.n;
  const size_t N = static_cast<size_t>(a.N);
  float* sums = ws.take<float>(N * 2 * a.n * iters_or_one(a.iters));
  float* rows = ws.take<float>(N * (3 + D));
  float* hs = ws.take<float>(N * D);
  float* cv = ws.take<float>(N);
  const unsigned grid = static_cast<unsigned>(ceil_div(a.N, kTokenBlock));
  with_stream_count(a.n, [&](auto k) {
    mhc_nonlin_backward_kernel<decltype(k)::value><<<grid, kTokenBlock, 0, stream>>>(
        rows, hs, cv, sums, dpre, dpost, dres, m, rms, alpha, bias, a.N, a.n, a.C, a.iters);
  });
  CUDA_CHECK_LAUNCH();
  column_sum_accumulate(dalpha, rows, a.N, 3, 3 + D, ws, stream);
  column_sum_accumulate(dbias, rows + 3, a.N, D, 3 + D, ws, stream);
  // dφ[i, d] += Σ_t X[t, i] · hs[t, d]
  tile_gemm<T, float, float>(nC, D, a.N, X, 1, nC, hs, D, 1, dphi, D, true, nullptr, stream);
  // dX[t, i] += Σ_d hs[t, d] · φ[i, d]
  tile_gemm<float, float, T>(a.N, nC, D, hs, D, 1, phi, 1, D, dX, nC, true, nullptr, stream);
  const int64_t total = int64_t(a.N) * nC;
  add_scaled_rows_kernel<T><<<grid_for(total, 256), 256, 0, stream>>>(dX, X, cv, a.N, nC);
  CUDA_CHECK_LAUNCH();
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
