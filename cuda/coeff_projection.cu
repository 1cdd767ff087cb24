// Kernels of cuda/coeff_projection.cuh (the passes over X shared by the coefficient ops).
//
// coeff_project: coeff_project_kernel computes m_raw = X·φ with Σv² per token fused into
//   the same pass over X: a block owns 64 tokens × 32 coefficient columns, stages 64×32
//   slices of X (16-byte loads) and 32×32 slices of φ in shared memory, and each thread
//   keeps a 4-token × 2-column register tile (8 FMA per 2 shared loads).
// coeff_dx_dphi: coeff_dx_dphi_kernel, one pass over X: dX += cv·X + hs·φᵀ (dX read and
//   written once) and the split-K partials of dφ = Xᵀ·hs per chunk of tokens; then the
//   partials summed in chunk order into dφ.
// The fast paths need D ≤ 32 and rows of whole 16-byte vectors; other shapes use the
// generic tile_gemm (same results up to summation order).
#include "coeff_projection.cuh"

#include <algorithm>
#include <initializer_list>

#include "reduce.cuh"
#include "tile_gemm.cuh"
#include "vec.cuh"

namespace mhc::cuda {
namespace {

constexpr int kMaxFastD = 32;  // coefficient columns the fused kernels handle

// ---- forward projection ----------------------------------------------------------------
constexpr int kPM = 64, kPN = 32, kPK = 32, kPThreads = 256, kPLd = kPK + 4;

template <class T>
__global__ void __launch_bounds__(kPThreads)
    coeff_project_kernel(float* m, float* sumsq, const T* X, const float* phi, int N, int nC, int D) {
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

// ---- backward: dX += cv·X + hs·φᵀ and the split-K partials of dφ = Xᵀ·hs ----------------
// Block (column tile of CT = 8·VEC columns of nC, chunk of tokens). Per tile of 32 tokens:
// thread (token tl = tid/8, vector cv8 = tid%8) updates its VEC entries of dX; then
// thread (column tid % CT, d-group tid / CT) accumulates its dφ entries over the tile's
// tokens from the X tile staged in shared memory. φ's tile is staged once, transposed.
constexpr int kDTokens = 32, kDThreads = 256;

template <class T>
__global__ void __launch_bounds__(kDThreads)
    coeff_dx_dphi_kernel(T* dX, float* partial, const T* X, const float* hs, const float* cv,
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

template <class T>
bool fast_path(int nC, int D, std::initializer_list<const void*> pointers) {
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

}  // namespace

template <class T>
void coeff_project(float* m, float* sumsq, const T* X, const float* phi, int N, int nC, int D,
                   cudaStream_t stream) {
  if (N <= 0) return;
  if (fast_path<T>(nC, D, {X})) {
    const dim3 grid(static_cast<unsigned>(ceil_div(N, kPM)), static_cast<unsigned>(ceil_div(D, kPN)));
    launch<coeff_project_kernel<T>>(grid, kPThreads, 0, stream, m, sumsq, X, phi, N, nC, D);
    CUDA_CHECK_LAUNCH();
  } else {
    tile_gemm<T, float, float>(N, D, nC, X, nC, 1, phi, D, 1, m, D, false, sumsq, stream);
  }
}

size_t coeff_dx_dphi_workspace_bytes(int N, int nC, int D) {
  return std::max(Workspace::bytes_for<float>(size_t(dphi_chunks(N)) * nC * D),
                  tile_gemm_splitk_workspace_bytes(nC, D, N));
}

template <class T>
void coeff_dx_dphi(T* dX, float* dphi, const T* X, const float* hs, const float* cv,
                   const float* phi, int N, int nC, int D, Workspace& ws, cudaStream_t stream) {
  if (N <= 0) return;
  if (fast_path<T>(nC, D, {dX, X})) {
    // One pass over X: dX += cv·X + hs·φᵀ, and dφ's split-K partials; then dφ += Σ partials.
    const int chunks = dphi_chunks(N);
    const int per_chunk = static_cast<int>(ceil_div(N, chunks));
    float* partial = ws.take<float>(size_t(chunks) * nC * D);
    constexpr int CT = 8 * kVecWidth<T>;
    const dim3 grid(static_cast<unsigned>(ceil_div(nC, CT)), static_cast<unsigned>(chunks));
    launch<coeff_dx_dphi_kernel<T>>(grid, kDThreads, 0, stream, dX, partial, X, hs, cv, phi, N,
                                    nC, D, per_chunk);
    CUDA_CHECK_LAUNCH();
    const int64_t count = int64_t(nC) * D;
    launch<sum_partials_kernel>(grid_for(count, 256), 256, 0, stream, dphi, partial, chunks, count);
    CUDA_CHECK_LAUNCH();
    return;
  }
  // Generic path. dφ[i, d] += Σ_t X[t, i] · hs[t, d]  (split-K over tokens, deterministic)
  tile_gemm_splitk<T, float, float>(nC, D, N, X, 1, nC, hs, D, 1, dphi, D, true, ws, stream);
  // dX[t, i] += Σ_d hs[t, d] · φ[i, d]
  tile_gemm<float, float, T>(N, nC, D, hs, D, 1, phi, 1, D, dX, nC, true, nullptr, stream);
  const int64_t total = int64_t(N) * nC;
  launch<add_scaled_rows_kernel<T>>(grid_for(total, 256), 256, 0, stream, dX, X, cv, N, nC);
  CUDA_CHECK_LAUNCH();
}

#define MHC_INSTANTIATE_COEFF_PROJECTION(T)                                                  \
  template void coeff_project<T>(float*, float*, const T*, const float*, int, int, int,      \
                                 cudaStream_t);                                              \
  template void coeff_dx_dphi<T>(T*, float*, const T*, const float*, const float*,           \
                                 const float*, int, int, int, Workspace&, cudaStream_t);
MHC_INSTANTIATE_COEFF_PROJECTION(float)
MHC_INSTANTIATE_COEFF_PROJECTION(bf16)
#undef MHC_INSTANTIATE_COEFF_PROJECTION

}  // namespace mhc::cuda
