// HC coefficient kernels: one warp per (token, stream) row.
// Forward: the static part, and for dynamic HC the row's RMS and its n+2 projections
// (lanes over channels, fixed shuffle-tree reductions).
// Backward, dynamic: per row the pre-activation gradients dz = (dza | dz_A | dzb), the
// dX update through RMSNorm, and E_r = dz·rstd_r; the weight gradients are then all
// sums over rows of x_r[c]·E_r[k], i.e. Q = Xᵀ E [C, n+2] (tile_gemm_splitk: chunks of rows
// in parallel, partials added in order, deterministic):
//   dw_a = norm_w ⊙ Q[:,0], dW_A[:,j] = norm_w ⊙ Q[:,1+j], dw_b = norm_w ⊙ Q[:,n+1],
//   dnorm_w = Σ_k W_k ⊙ Q[:,k] with W = (w_a | W_A | w_b).
// Static gradients (da, db, dA) and ds_α, ds_β are deterministic column sums over tokens.
#include "hc_coeff.cuh"

#include "reduce.cuh"
#include "tile_gemm.cuh"

namespace mhc::cuda {
namespace {

constexpr int kBlock = 128;  // 4 warps = 4 rows

template <class T>
__global__ void hc_forward_kernel(float* pre, float* post, float* res, float* rstd,
                                  float* tanh_out, const T* X, HcCoeffParams p, int N, int n, int C,
                                  float eps) {
  const int64_t rows = int64_t(N) * n;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x / 32);
  const int lane = threadIdx.x & 31;
  for (int64_t row = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / 32; row < rows;
       row += warps) {
    const int i = static_cast<int>(row % n);
    const int64_t t = row / n;
    float* rt = res + t * n * n;
    if (!p.dynamic()) {
      if (lane == 0) {
        pre[row] = p.a[i];
        post[row] = p.b[i];
      }
      for (int j = lane; j < n; j += 32) rt[j * n + i] = p.A[i * n + j];
      continue;
    }
    const T* xi = X + row * C;
    float ss = 0.f;
    for (int c = lane; c < C; c += 32) {
      const float v = to_f32(xi[c]);
      ss += v * v;
    }
    ss = warp_sum(ss);
    const float s = 1.f / sqrtf(ss / C + eps);
    float za = 0.f, zb = 0.f, zA[kMaxStreams];
#pragma unroll
    for (int j = 0; j < kMaxStreams; ++j) zA[j] = 0.f;
    for (int c = lane; c < C; c += 32) {
      const float xb = to_f32(xi[c]) * s * p.norm_w[c];
      za += xb * p.w_a[c];
      zb += xb * p.w_b[c];
#pragma unroll
      for (int j = 0; j < kMaxStreams; ++j)
        if (j < n) zA[j] += xb * p.W_A[int64_t(c) * n + j];
    }
    za = warp_sum(za);
    zb = warp_sum(zb);
#pragma unroll
    for (int j = 0; j < kMaxStreams; ++j)
      if (j < n) zA[j] = warp_sum(zA[j]);
    if (lane == 0) {
      float* th = tanh_out + row * (n + 2);
      rstd[row] = s;
      th[0] = tanhf(za);
      th[n + 1] = tanhf(zb);
      pre[row] = p.a[i] + p.s_alpha[0] * th[0];
      post[row] = p.b[i] + p.s_beta[0] * th[n + 1];
#pragma unroll
      for (int j = 0; j < kMaxStreams; ++j)
        if (j < n) {
          th[1 + j] = tanhf(zA[j]);
          rt[j * n + i] = p.A[i * n + j] + p.s_alpha[0] * th[1 + j];
        }
    }
  }
}

// Per row r = (t, i): E[r] = (dza | dz_A | dzb)·rstd, S[r] = (ds_α, ds_β) contributions,
// and dX_r += rstd·(dX̄ ⊙ norm_w − x̂·mean(dX̄ ⊙ norm_w ⊙ x̂)).
template <class T>
__global__ void hc_backward_rows_kernel(T* dX, float* E, float* S, const float* dpre,
                                        const float* dpost, const float* dres, const T* X,
                                        HcCoeffParams p, const float* rstd, const float* tanh_in,
                                        int N, int n, int C) {
  const int64_t rows = int64_t(N) * n;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x / 32);
  const int lane = threadIdx.x & 31;
  const float sa = p.s_alpha[0], sb = p.s_beta[0];
  for (int64_t row = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / 32; row < rows;
       row += warps) {
    const int i = static_cast<int>(row % n);
    const int64_t t = row / n;
    const float s = rstd[row];
    const float* th = tanh_in + row * (n + 2);
    const float dpt = dpre[row], dqt = dpost[row];
    const float dza = dpt * sa * (1.f - th[0] * th[0]);
    const float dzb = dqt * sb * (1.f - th[n + 1] * th[n + 1]);
    float dsa = dpt * th[0];
    float dz[kMaxStreams];
#pragma unroll
    for (int j = 0; j < kMaxStreams; ++j) {
      dz[j] = 0.f;
      if (j < n) {
        const float g = dres[t * n * n + j * n + i], tj = th[1 + j];
        dsa += g * tj;
        dz[j] = g * sa * (1.f - tj * tj);
      }
    }
    if (lane == 0) {
      float* e = E + row * (n + 2);
      e[0] = dza * s;
      e[n + 1] = dzb * s;
#pragma unroll
      for (int j = 0; j < kMaxStreams; ++j)
        if (j < n) e[1 + j] = dz[j] * s;
      S[row * 2] = dsa;
      S[row * 2 + 1] = dqt * th[n + 1];
    }
    const T* xi = X + row * C;
    T* dxi = dX + row * C;
    // dX̄[c] = dza·w_a[c] + dzb·w_b[c] + Σ_j dz_j·W_A[c, j]; recomputed in the second pass.
    float dot = 0.f;
    for (int c = lane; c < C; c += 32) {
      float dxbar = dza * p.w_a[c] + dzb * p.w_b[c];
#pragma unroll
      for (int j = 0; j < kMaxStreams; ++j)
        if (j < n) dxbar += dz[j] * p.W_A[int64_t(c) * n + j];
      dot += dxbar * p.norm_w[c] * (to_f32(xi[c]) * s);
    }
    dot = warp_sum(dot) / C;
    for (int c = lane; c < C; c += 32) {
      float dxbar = dza * p.w_a[c] + dzb * p.w_b[c];
#pragma unroll
      for (int j = 0; j < kMaxStreams; ++j)
        if (j < n) dxbar += dz[j] * p.W_A[int64_t(c) * n + j];
      const float xhat = to_f32(xi[c]) * s;
      dxi[c] = from_f32<T>(to_f32(dxi[c]) + s * (dxbar * p.norm_w[c] - xhat * dot));
    }
  }
}

// Q [C, n+2] = Σ_r x_r[c]·E_r → the dynamic weight gradients ("+=").
__global__ void hc_weight_grads_kernel(HcCoeffGrads dp, const float* Q, HcCoeffParams p, int n,
                                       int C) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  const float* q = Q + int64_t(c) * (n + 2);
  const float nw = p.norm_w[c];
  dp.w_a[c] += nw * q[0];
  dp.w_b[c] += nw * q[n + 1];
  float dnw = p.w_a[c] * q[0] + p.w_b[c] * q[n + 1];
  for (int j = 0; j < n; ++j) {
    dp.W_A[int64_t(c) * n + j] += nw * q[1 + j];
    dnw += p.W_A[int64_t(c) * n + j] * q[1 + j];
  }
  dp.norm_w[c] += dnw;
}

// dA[i, j] += S[j, i] (the res column sums are indexed like res = Aᵀ).
__global__ void add_transposed_kernel(float* dA, const float* S, int n) {
  const int k = blockIdx.x * blockDim.x + threadIdx.x;
  if (k >= n * n) return;
  const int i = k / n, j = k % n;
  dA[k] += S[j * n + i];
}

unsigned row_grid(int64_t rows) { return grid_for(rows * 32, kBlock); }

}  // namespace

template <class T>
void hc_coeff_forward(float* pre, float* post, float* res, float* rstd, float* tanh_out,
                      const T* X, const HcCoeffParams& p, int N, int n, int C, float norm_eps,
                      cudaStream_t stream) {
  if (N <= 0) return;
  if (n < 1 || n > kMaxStreams) throw InternalError("cuda hc_coeff: n outside 1..16");
  launch<hc_forward_kernel<T>>(row_grid(int64_t(N) * n), kBlock, 0, stream, pre, post, res, rstd,
                                                                        tanh_out, X, p, N, n, C,
                                                                        norm_eps);
  CUDA_CHECK_LAUNCH();
}

size_t hc_coeff_backward_workspace_bytes(int N, int n, int C, bool dynamic) {
  const size_t R = size_t(N) * n;
  size_t bytes = Workspace::bytes_for<float>(size_t(n) * n) + 2 * column_sum_workspace_bytes(N, n) +
                 column_sum_workspace_bytes(N, n * n);
  if (dynamic)
    bytes += Workspace::bytes_for<float>(R * (n + 2)) + Workspace::bytes_for<float>(R * 2) +
             Workspace::bytes_for<float>(size_t(C) * (n + 2)) +
             2 * column_sum_workspace_bytes(static_cast<int64_t>(R), 1) +
             tile_gemm_splitk_workspace_bytes(C, n + 2, static_cast<int>(R));
  return bytes;
}

template <class T>
void hc_coeff_backward(T* dX, const HcCoeffGrads& dp, const float* dpre, const float* dpost,
                       const float* dres, const T* X, const HcCoeffParams& p, const float* rstd,
                       const float* tanh_in, int N, int n, int C, Workspace& ws,
                       cudaStream_t stream) {
  if (N <= 0) return;
  if (n < 1 || n > kMaxStreams) throw InternalError("cuda hc_coeff: n outside 1..16");
  column_sum_accumulate(dp.a, dpre, N, n, n, ws, stream);
  column_sum_accumulate(dp.b, dpost, N, n, n, ws, stream);
  float* res_sum = ws.take<float>(size_t(n) * n);
  CUDA_CHECK(cudaMemsetAsync(res_sum, 0, sizeof(float) * n * n, stream));
  column_sum_accumulate(res_sum, dres, N, n * n, int64_t(n) * n, ws, stream);
  launch<add_transposed_kernel>(static_cast<unsigned>(ceil_div(n * n, 256)), 256, 0, stream,
      dp.A, res_sum, n);
  CUDA_CHECK_LAUNCH();
  if (!p.dynamic()) return;
  const int64_t R = int64_t(N) * n;
  float* E = ws.take<float>(size_t(R) * (n + 2));
  float* S = ws.take<float>(size_t(R) * 2);
  float* Q = ws.take<float>(size_t(C) * (n + 2));
  launch<hc_backward_rows_kernel<T>>(row_grid(R), kBlock, 0, stream, dX, E, S, dpre, dpost, dres, X, p,
                                                                 rstd, tanh_in, N, n, C);
  CUDA_CHECK_LAUNCH();
  column_sum_accumulate(dp.s_alpha, S, R, 1, 2, ws, stream);
  column_sum_accumulate(dp.s_beta, S + 1, R, 1, 2, ws, stream);
  // Q[c, k] = Σ_r X[r, c] · E[r, k]  (split over rows: a reduction over all tokens)
  tile_gemm_splitk<T, float, float>(C, n + 2, static_cast<int>(R), X, 1, C, E, n + 2, 1, Q, n + 2,
                                    false, ws, stream);
  launch<hc_weight_grads_kernel>(static_cast<unsigned>(ceil_div(C, 128)), 128, 0, stream, dp, Q, p, n,
                                                                                      C);
  CUDA_CHECK_LAUNCH();
}

template void hc_coeff_forward<float>(float*, float*, float*, float*, float*, const float*,
                                      const HcCoeffParams&, int, int, int, float, cudaStream_t);
template void hc_coeff_forward<bf16>(float*, float*, float*, float*, float*, const bf16*,
                                     const HcCoeffParams&, int, int, int, float, cudaStream_t);
template void hc_coeff_backward<float>(float*, const HcCoeffGrads&, const float*, const float*,
                                       const float*, const float*, const HcCoeffParams&,
                                       const float*, const float*, int, int, int, Workspace&,
                                       cudaStream_t);
template void hc_coeff_backward<bf16>(bf16*, const HcCoeffGrads&, const float*, const float*,
                                      const float*, const bf16*, const HcCoeffParams&,
                                      const float*, const float*, int, int, int, Workspace&,
                                      cudaStream_t);

}  // namespace mhc::cuda
