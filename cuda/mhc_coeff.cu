// mHC coefficient kernels (the paper's kernel plan for the coefficient path).
//
// forward:  (1) mhc_project_kernel: m_raw = X·φ with Σv² per token fused into the same
//           pass over X: a block owns 64 tokens × 32 coefficient columns, stages 64×32
//           slices of X (16-byte loads) and 32×32 slices of φ in shared memory, and each
//           thread keeps a 4-token × 2-column register tile (8 FMA per 2 shared loads);
//           (2) one thread per token: r = sqrt(Σv²/nC + eps), m = m_raw/r and the
//           pre/post/Sinkhorn nonlinearities of core/mhc_math.h.
// backward: (1) one thread per token: g from mhc_coeff_nonlin_backward (Sinkhorn sums
//           in thread-local memory), writing [dα_t | g_t] rows, hs = α_gate·g/r and the
//           RMS coefficient cv = −Σ h m/(nC r²); (2) column sums of those rows into dα,
//           dβ; (3) mhc_dx_dphi_kernel, one pass over X: dX += cv·X + hs·φᵀ (dX read and
//           written once) and the split-K partials of dφ = Xᵀ·hs per chunk of tokens;
//           (4) the partials summed in chunk order into dφ.
// The fast paths need D = 2n + n² ≤ 32 (n ≤ 4) and rows of whole 16-byte vectors; other
// shapes use the generic tile_gemm (same results up to summation order).
// Every reduction over tokens has a fixed order: the result does not vary run to run.
#include "mhc_coeff.cuh"

#include <algorithm>

#include "mhc_math.h"
#include "reduce.cuh"
#include "tile_gemm.cuh"
#include "vec.cuh"

namespace mhc::cuda {
namespace {

constexpr int kTokenBlock = 64;
constexpr int kMaxFastD = 32;  // coefficient columns the fused kernels handle (n ≤ 4)
// Sinkhorn iteration sums kept in thread-local memory up to this many iterations
// (more: global scratch).
constexpr int kLocalIters = 32;

// ---- forward projection ----------------------------------------------------------------
constexpr int kPM = 64, kPN = 32, kPK = 32, kPThreads = 256, kPLd = kPK + 4;

template <class T>
__global__ void __launch_bounds__(kPThreads)
    mhc_project_kernel(float* m, float* sumsq, const T* X, const float* phi, int N, int nC, int D) {
  constexpr int VEC = kVecWidth<T>;
  __shared__ __align__(16) float As[kPM][kPLd];  // [token][k], k contiguous
  __shared__ __align__(16) float Bs[kPK][kPN];   // [k][column]
  const int tid = threadIdx.x, rg = tid >> 4, cg = tid & 15;  // rows 4rg.., columns 2cg..
  const int64_t m0 = int64_t(blockIdx.x) * kPM;
  const int n0 = blockIdx.y * kPN;
  const bool want_ss = sumsq != nullptr && blockIdx.y == 0;
  float acc[4][2], ss[4];
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    acc[r][0] = acc[r][1] = 0.f;
    ss[r] = 0.f;
  }
  for (int k0 = 0; k0 < nC; k0 += kPK) {
    // X slice: 64 rows × 32 k as vectors of VEC (nC is a multiple of VEC).
    for (int v = tid; v < kPM * (kPK / VEC); v += kPThreads) {
      const int row = v / (kPK / VEC), kv = (v % (kPK / VEC)) * VEC;
      const int64_t t = m0 + row;
      float x[VEC];
      if (t < N && k0 + kv < nC) {
        VecIO<T, VEC>::load(X + t * nC + k0 + kv, x);
      } else {
#pragma unroll
        for (int e = 0; e < VEC; ++e) x[e] = 0.f;
      }
#pragma unroll
      for (int e = 0; e < VEC; e += 4)
        *reinterpret_cast<float4*>(&As[row][kv + e]) = make_float4(x[e], x[e + 1], x[e + 2], x[e + 3]);
    }
    for (int idx = tid; idx < kPK * kPN; idx += kPThreads) {
      const int kk = idx / kPN, nn = idx % kPN;
      const int k = k0 + kk, col = n0 + nn;
      Bs[kk][nn] = k < nC && col < D ? phi[int64_t(k) * D + col] : 0.f;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kPK; kk += 4) {
      float4 a[4];
#pragma unroll
      for (int r = 0; r < 4; ++r) a[r] = *reinterpret_cast<const float4*>(&As[4 * rg + r][kk]);
      float2 b[4];
#pragma unroll
      for (int q = 0; q < 4; ++q) b[q] = *reinterpret_cast<const float2*>(&Bs[kk + q][2 * cg]);
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        acc[r][0] += a[r].x * b[0].x + a[r].y * b[1].x + a[r].z * b[2].x + a[r].w * b[3].x;
        acc[r][1] += a[r].x * b[0].y + a[r].y * b[1].y + a[r].z * b[2].y + a[r].w * b[3].y;
      }
      // Σv²: the 16 threads of a row group split the 8 float4 chunks of the slice.
      if (want_ss && (kk >> 2) == cg) {
#pragma unroll
        for (int r = 0; r < 4; ++r)
          ss[r] += a[r].x * a[r].x + a[r].y * a[r].y + a[r].z * a[r].z + a[r].w * a[r].w;
      }
    }
    __syncthreads();
  }
  if (want_ss) {  // block-uniform; the 16 lanes of a row group hold its partial sums
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      float s = ss[r];
#pragma unroll
      for (int offset = 8; offset > 0; offset >>= 1) s += __shfl_xor_sync(0xffffffffu, s, offset);
      const int64_t t = m0 + 4 * rg + r;
      if (cg == 0 && t < N) sumsq[t] = s;
    }
  }
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    const int64_t t = m0 + 4 * rg + r;
    if (t >= N) continue;
#pragma unroll
    for (int c = 0; c < 2; ++c) {
      const int col = n0 + 2 * cg + c;
      if (col < D) m[t * D + col] = acc[r][c];
    }
  }
}

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

// ---- backward: dX += cv·X + hs·φᵀ and the split-K partials of dφ = Xᵀ·hs ----------------
// Block (column tile of CT = 8·VEC columns of nC, chunk of tokens). Per tile of 32 tokens:
// thread (token tl = tid/8, vector cv8 = tid%8) updates its VEC entries of dX; then
// thread (column tid % CT, d-group tid / CT) accumulates its dφ entries over the tile's
// tokens from the X tile staged in shared memory. φ's tile is staged once, transposed.
constexpr int kDTokens = 32, kDThreads = 256;

template <class T>
__global__ void __launch_bounds__(kDThreads)
    mhc_dx_dphi_kernel(T* dX, float* partial, const T* X, const float* hs, const float* cv,
                       const float* phi, int N, int nC, int D, int tokens_per_chunk) {
  constexpr int VEC = kVecWidth<T>;
  constexpr int CT = 8 * VEC;               // columns per block
  constexpr int G = kDThreads / CT;         // d-groups for dφ
  constexpr int DPG = kMaxFastD / G;        // d entries per thread for dφ
  __shared__ __align__(16) float phi_s[kMaxFastD][CT];  // φ[col0 + c][d] at [d][c]
  __shared__ __align__(16) float hs_s[kDTokens][kMaxFastD];
  __shared__ __align__(16) float x_s[kDTokens][CT];
  __shared__ float cv_s[kDTokens];
  const int tid = threadIdx.x;
  const int col0 = blockIdx.x * CT;
  const int t_begin = blockIdx.y * tokens_per_chunk;
  const int t_end = min(N, t_begin + tokens_per_chunk);
  for (int idx = tid; idx < CT * kMaxFastD; idx += kDThreads) {
    const int c = idx / kMaxFastD, d = idx % kMaxFastD;
    phi_s[d][c] = col0 + c < nC && d < D ? phi[int64_t(col0 + c) * D + d] : 0.f;
  }
  const int tl = tid >> 3, cv8 = tid & 7;  // dX role
  const int col = col0 + cv8 * VEC;
  const int pc = tid % CT, pg = tid / CT;  // dφ role
  float acc[DPG];
#pragma unroll
  for (int j = 0; j < DPG; ++j) acc[j] = 0.f;
  for (int t0 = t_begin; t0 < t_end; t0 += kDTokens) {
    __syncthreads();  // the previous tile's hs_s, x_s are consumed (first: φ is staged)
    for (int idx = tid; idx < kDTokens * kMaxFastD; idx += kDThreads) {
      const int r = idx / kMaxFastD, d = idx % kMaxFastD, t = t0 + r;
      hs_s[r][d] = t < t_end && d < D ? hs[int64_t(t) * D + d] : 0.f;
    }
    if (tid < kDTokens) cv_s[tid] = t0 + tid < t_end ? cv[t0 + tid] : 0.f;
    const int t = t0 + tl;
    const bool active = t < t_end && col < nC;
    float x[VEC];
    if (active) {
      VecIO<T, VEC>::load(X + int64_t(t) * nC + col, x);
    } else {
#pragma unroll
      for (int e = 0; e < VEC; ++e) x[e] = 0.f;
    }
#pragma unroll
    for (int e = 0; e < VEC; e += 4)
      *reinterpret_cast<float4*>(&x_s[tl][cv8 * VEC + e]) = make_float4(x[e], x[e + 1], x[e + 2], x[e + 3]);
    __syncthreads();
    if (active) {
      float d[VEC];
      VecIO<T, VEC>::load(dX + int64_t(t) * nC + col, d);
      const float c = cv_s[tl];
#pragma unroll
      for (int e = 0; e < VEC; ++e) d[e] += c * x[e];
#pragma unroll 4
      for (int k = 0; k < kMaxFastD; ++k) {
        if (k >= D) break;
        const float h = hs_s[tl][k];
#pragma unroll
        for (int e = 0; e < VEC; e += 4) {
          const float4 p = *reinterpret_cast<const float4*>(&phi_s[k][cv8 * VEC + e]);
          d[e] += h * p.x;
          d[e + 1] += h * p.y;
          d[e + 2] += h * p.z;
          d[e + 3] += h * p.w;
        }
      }
      VecIO<T, VEC>::store(dX + int64_t(t) * nC + col, d);
    }
    if (pg * DPG < D) {  // warp-uniform: a warp lies within one d-group
#pragma unroll 4
      for (int r = 0; r < kDTokens; ++r) {
        const float xv = x_s[r][pc];
#pragma unroll
        for (int j = 0; j < DPG; ++j) acc[j] += xv * hs_s[r][pg * DPG + j];
      }
    }
  }
  if (col0 + pc < nC) {
#pragma unroll
    for (int j = 0; j < DPG; ++j) {
      const int d = pg * DPG + j;
      if (d < D) partial[(int64_t(blockIdx.y) * nC + col0 + pc) * D + d] = acc[j];
    }
  }
}

// out[i] += Σ_c partial[c][i], chunks in order.
__global__ void sum_partials_kernel(float* out, const float* partial, int chunks, int64_t count) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count;
       i += int64_t(gridDim.x) * blockDim.x) {
    float s = 0.f;
    for (int c = 0; c < chunks; ++c) s += partial[int64_t(c) * count + i];
    out[i] += s;
  }
}

// dX[t, i] += cv[t] · X[t, i]   (generic path)
template <class T>
__global__ void add_scaled_rows_kernel(T* dX, const T* X, const float* cv, int N, int nC) {
  const int64_t total = int64_t(N) * nC;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x)
    dX[idx] = from_f32<T>(to_f32(dX[idx]) + cv[idx / nC] * to_f32(X[idx]));
}

int iters_or_one(int iters) { return iters > 0 ? iters : 1; }

template <class T>
bool fast_path(const MhcCoeffArgs& a, std::initializer_list<const void*> pointers) {
  const int nC = a.n * a.C, D = 2 * a.n + a.n * a.n;
  if (D > kMaxFastD || nC % kVecWidth<T> != 0) return false;
  for (const void* p : pointers)
    if (p && !aligned16(p)) return false;
  return true;
}

// Token chunks of the dφ split-K reduction: ~512 tokens each, at most 64.
int dphi_chunks(int N) {
  const int64_t c = ceil_div(N, 512);
  return static_cast<int>(c < 1 ? 1 : (c > 64 ? 64 : c));
}

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
  if (fast_path<T>(a, {X})) {
    const dim3 grid(static_cast<unsigned>(ceil_div(a.N, kPM)), static_cast<unsigned>(ceil_div(D, kPN)));
    launch<mhc_project_kernel<T>>(grid, kPThreads, 0, stream, m, rms, X, phi, a.N, nC, D);
    CUDA_CHECK_LAUNCH();
  } else {
    tile_gemm<T, float, float>(a.N, D, nC, X, nC, 1, phi, D, 1, m, D, false, rms, stream);
  }
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
         std::max(Workspace::bytes_for<float>(size_t(dphi_chunks(a.N)) * nC * D),
                  tile_gemm_splitk_workspace_bytes(static_cast<int>(nC), static_cast<int>(D), a.N));
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
  if (fast_path<T>(a, {dX, X})) {
    // One pass over X: dX += cv·X + hs·φᵀ, and dφ's split-K partials; then dφ += Σ partials.
    const int chunks = dphi_chunks(a.N);
    const int per_chunk = static_cast<int>(ceil_div(a.N, chunks));
    float* partial = ws.take<float>(size_t(chunks) * nC * D);
    constexpr int CT = 8 * kVecWidth<T>;
    const dim3 g2(static_cast<unsigned>(ceil_div(nC, CT)), static_cast<unsigned>(chunks));
    launch<mhc_dx_dphi_kernel<T>>(g2, kDThreads, 0, stream, dX, partial, X, hs, cv, phi, a.N, nC, D,
                                                         per_chunk);
    CUDA_CHECK_LAUNCH();
    const int64_t count = int64_t(nC) * D;
    launch<sum_partials_kernel>(grid_for(count, 256), 256, 0, stream, dphi, partial, chunks, count);
    CUDA_CHECK_LAUNCH();
    return;
  }
  // Generic path. dφ[i, d] += Σ_t X[t, i] · hs[t, d]  (split-K over tokens, deterministic)
  tile_gemm_splitk<T, float, float>(nC, D, a.N, X, 1, nC, hs, D, 1, dphi, D, true, ws, stream);
  // dX[t, i] += Σ_d hs[t, d] · φ[i, d]
  tile_gemm<float, float, T>(a.N, nC, D, hs, D, 1, phi, 1, D, dX, nC, true, nullptr, stream);
  const int64_t total = int64_t(a.N) * nC;
  launch<add_scaled_rows_kernel<T>>(grid_for(total, 256), 256, 0, stream, dX, X, cv, a.N, nC);
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
