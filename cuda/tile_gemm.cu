// Tiled GEMM: a block computes a 64×32 tile of C with 256 threads (thread (ty, tx) owns
// rows ty, ty+8, ..., ty+56 of column tx), staging 64×32 A and 32×32 B slices of the k
// range in shared memory as fp32. Loads walk the operand's unit-stride dimension with
// consecutive threads, so both row-major and transposed operands load coalesced.
// Split-K (tile_gemm_splitk): blockIdx.z takes one chunk of the k range and writes its
// own fp32 partial product; a second kernel adds the partials in chunk order.
#include "tile_gemm.cuh"

namespace mhc::cuda {
namespace {

constexpr int kTM = 64, kTN = 32, kTK = 32, kThreads = 256, kRowsPerThread = kTM / (kThreads / 32);

template <class TA, class TB, class TC>
__global__ void __launch_bounds__(kThreads)
    tile_gemm_kernel(int M, int N, int K, const TA* A, int64_t a_rs, int64_t a_cs, const TB* B,
                     int64_t b_rs, int64_t b_cs, TC* C, int64_t ldc, bool accumulate,
                     float* row_sumsq, int64_t k_chunk, int64_t c_chunk_stride) {
  __shared__ float As[kTK][kTM + 1];
  // This block's k range (the whole range without split-K) and its output slice.
  const int64_t k_begin = int64_t(blockIdx.z) * k_chunk;
  const int64_t k_end = k_begin + k_chunk < K ? k_begin + k_chunk : K;
  C += int64_t(blockIdx.z) * c_chunk_stride;
  __shared__ float Bs[kTK][kTN + 1];
  const int tx = threadIdx.x & 31, ty = threadIdx.x >> 5;
  const int64_t m0 = int64_t(blockIdx.x) * kTM;
  const int64_t n0 = int64_t(blockIdx.y) * kTN;
  const bool a_k_unit = a_cs == 1, b_n_unit = b_cs == 1;
  // Only the first column of blocks computes the row sums of squares; lane tx takes
  // column kk = tx of each staged slice, the warp (one ty) then adds its 32 lanes.
  const bool sumsq = row_sumsq != nullptr && blockIdx.y == 0;
  float acc[kRowsPerThread], ss[kRowsPerThread];
#pragma unroll
  for (int r = 0; r < kRowsPerThread; ++r) acc[r] = ss[r] = 0.f;
  for (int64_t k0 = k_begin; k0 < k_end; k0 += kTK) {
    for (int idx = threadIdx.x; idx < kTM * kTK; idx += kThreads) {
      const int mm = a_k_unit ? idx / kTK : idx % kTM;
      const int kk = a_k_unit ? idx % kTK : idx / kTM;
      const int64_t gm = m0 + mm, gk = k0 + kk;
      As[kk][mm] = gm < M && gk < k_end ? to_f32(A[gm * a_rs + gk * a_cs]) : 0.f;
    }
    for (int idx = threadIdx.x; idx < kTK * kTN; idx += kThreads) {
      const int nn = b_n_unit ? idx % kTN : idx / kTK;
      const int kk = b_n_unit ? idx / kTN : idx % kTK;
      const int64_t gk = k0 + kk, gn = n0 + nn;
      Bs[kk][nn] = gk < k_end && gn < N ? to_f32(B[gk * b_rs + gn * b_cs]) : 0.f;
    }
    __syncthreads();
    if (sumsq) {
#pragma unroll
      for (int r = 0; r < kRowsPerThread; ++r) ss[r] += As[tx][ty + 8 * r] * As[tx][ty + 8 * r];
    }
#pragma unroll 8
    for (int kk = 0; kk < kTK; ++kk) {
      const float b = Bs[kk][tx];
#pragma unroll
      for (int r = 0; r < kRowsPerThread; ++r) acc[r] += As[kk][ty + 8 * r] * b;
    }
    __syncthreads();
  }
  if (sumsq) {  // block-uniform: every lane of each warp takes part in the shuffles
#pragma unroll
    for (int r = 0; r < kRowsPerThread; ++r) {
      const float total = warp_sum(ss[r]);
      const int64_t gm = m0 + ty + 8 * r;
      if (tx == 0 && gm < M) row_sumsq[gm] = total;
    }
  }
  const int64_t gn = n0 + tx;
  if (gn >= N) return;
#pragma unroll
  for (int r = 0; r < kRowsPerThread; ++r) {
    const int64_t gm = m0 + ty + 8 * r;
    if (gm >= M) continue;
    float v = acc[r];
    if (accumulate) v = to_f32(C[gm * ldc + gn]) + v;
    C[gm * ldc + gn] = from_f32<TC>(v);
  }
}

// C[m, n] (+)= Σ_z partial[z][m, n], z in order.
template <class TC>
__global__ void splitk_finish_kernel(TC* C, int64_t ldc, const float* partial, int chunks, int M,
                                     int N, bool accumulate) {
  const int64_t total = int64_t(M) * N;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    float s = 0.f;
    for (int z = 0; z < chunks; ++z) s += partial[int64_t(z) * total + idx];
    const int64_t m = idx / N, n = idx % N;
    if (accumulate) s = to_f32(C[m * ldc + n]) + s;
    C[m * ldc + n] = from_f32<TC>(s);
  }
}

// Chunks of the k range: enough blocks to fill the GPU (~4 waves of 132 SMs' worth of
// tiles), each chunk at least 256 deep, at most 64 chunks.
int splitk_chunks(int M, int N, int K) {
  const int64_t tiles = ceil_div(M, kTM) * ceil_div(N, kTN);
  int64_t chunks = ceil_div(528, tiles);
  const int64_t deepest = ceil_div(K, 256);
  if (chunks > deepest) chunks = deepest;
  if (chunks > 64) chunks = 64;
  return static_cast<int>(chunks < 1 ? 1 : chunks);
}

}  // namespace

size_t tile_gemm_splitk_workspace_bytes(int M, int N, int K) {
  return Workspace::bytes_for<float>(size_t(splitk_chunks(M, N, K)) * M * N);
}

template <class TA, class TB, class TC>
void tile_gemm_splitk(int M, int N, int K, const TA* A, int64_t a_rs, int64_t a_cs, const TB* B,
                      int64_t b_rs, int64_t b_cs, TC* C, int64_t ldc, bool accumulate,
                      Workspace& ws, cudaStream_t stream) {
  if (M <= 0 || N <= 0) return;
  if (ceil_div(N, kTN) > 65535) throw InternalError("tile_gemm: N too large for the grid");
  const int chunks = splitk_chunks(M, N, K);
  float* partial = ws.take<float>(size_t(chunks) * M * N);
  const int64_t k_chunk = ceil_div(K > 0 ? K : 1, chunks);
  const dim3 grid(static_cast<unsigned>(ceil_div(M, kTM)), static_cast<unsigned>(ceil_div(N, kTN)),
                  static_cast<unsigned>(chunks));
  launch<tile_gemm_kernel<TA, TB, float>>(grid, kThreads, 0, stream,
      M, N, K, A, a_rs, a_cs, B, b_rs, b_cs, partial, N, false, nullptr, k_chunk, int64_t(M) * N);
  CUDA_CHECK_LAUNCH();
  launch<splitk_finish_kernel<TC>>(grid_for(int64_t(M) * N, 256), 256, 0, stream,
      C, ldc, partial, chunks, M, N, accumulate);
  CUDA_CHECK_LAUNCH();
}

template <class TA, class TB, class TC>
void tile_gemm(int M, int N, int K, const TA* A, int64_t a_rs, int64_t a_cs, const TB* B,
               int64_t b_rs, int64_t b_cs, TC* C, int64_t ldc, bool accumulate,
               float* row_sumsq, cudaStream_t stream) {
  if (M <= 0 || N <= 0) return;
  if (ceil_div(N, kTN) > 65535) throw InternalError("tile_gemm: N too large for the grid");
  const dim3 grid(static_cast<unsigned>(ceil_div(M, kTM)), static_cast<unsigned>(ceil_div(N, kTN)));
  launch<tile_gemm_kernel<TA, TB, TC>>(grid, kThreads, 0, stream, M, N, K, A, a_rs, a_cs, B, b_rs,
                                                              b_cs, C, ldc, accumulate,
                                                              row_sumsq, int64_t(K), 0);
  CUDA_CHECK_LAUNCH();
}

template void tile_gemm<float, float, float>(int, int, int, const float*, int64_t, int64_t,
                                             const float*, int64_t, int64_t, float*, int64_t,
                                             bool, float*, cudaStream_t);
template void tile_gemm<bf16, float, float>(int, int, int, const bf16*, int64_t, int64_t,
                                            const float*, int64_t, int64_t, float*, int64_t, bool,
                                            float*, cudaStream_t);
template void tile_gemm<float, float, bf16>(int, int, int, const float*, int64_t, int64_t,
                                            const float*, int64_t, int64_t, bf16*, int64_t, bool,
                                            float*, cudaStream_t);
// Same-type operands: the emulated build's Backend::gemm (cuda/emu/gemm_tile.cu).
template void tile_gemm<bf16, bf16, bf16>(int, int, int, const bf16*, int64_t, int64_t,
                                          const bf16*, int64_t, int64_t, bf16*, int64_t, bool,
                                          float*, cudaStream_t);
template void tile_gemm<bf16, bf16, float>(int, int, int, const bf16*, int64_t, int64_t,
                                           const bf16*, int64_t, int64_t, float*, int64_t, bool,
                                           float*, cudaStream_t);

template void tile_gemm_splitk<float, float, float>(int, int, int, const float*, int64_t, int64_t,
                                                    const float*, int64_t, int64_t, float*,
                                                    int64_t, bool, Workspace&, cudaStream_t);
template void tile_gemm_splitk<bf16, float, float>(int, int, int, const bf16*, int64_t, int64_t,
                                                   const float*, int64_t, int64_t, float*, int64_t,
                                                   bool, Workspace&, cudaStream_t);

}  // namespace mhc::cuda
