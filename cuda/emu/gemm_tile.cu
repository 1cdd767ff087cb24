// Emulated build only: Backend::gemm / gemm_ex (cuda/gemm.cuh) on the backend's own tile
// GEMM kernel (cuda/tile_gemm.cu) instead of cuBLASLt, which is not emulated. Compiled in
// place of cuda/gemm.cu.
//   D = alpha · op(A) op(B) + beta · C
// alpha = 1 with beta = 0 (or beta = 1 and C = D) is one tile GEMM writing (or
// accumulating into) D; anything else computes op(A) op(B) in fp32 scratch and applies
// alpha and beta in an epilogue kernel. Either way the sum is fp32 and D is rounded once,
// as with cuBLAS's fp32 compute.
#include "gemm.cuh"

#include <type_traits>

#include "common.cuh"
#include "tile_gemm.cuh"

namespace mhc::cuda {

struct GemmCache::Impl {};
GemmCache::GemmCache() : impl_(std::make_unique<Impl>()) {}
GemmCache::~GemmCache() = default;

namespace {

template <class TC>
__global__ void epilogue_kernel(TC* D, int64_t ldd, const TC* C, int64_t ldc, const float* P,
                                int m, int n, float alpha, float beta) {
  const int64_t total = int64_t(m) * n;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / n, c = i % n;
    float v = alpha * P[i];
    if (beta != 0.f) v += beta * to_f32(C[r * ldc + c]);
    D[r * ldd + c] = from_f32<TC>(v);
  }
}

template <class TAB, class TC>
void run(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const void* A, int lda,
         const void* B, int ldb, float beta, const void* C, int ldc, void* D, int ldd,
         cudaStream_t stream) {
  const TAB* a = static_cast<const TAB*>(A);
  const TAB* b = static_cast<const TAB*>(B);
  // A(m, k) = a[m·a_rs + k·a_cs], B(k, n) = b[k·b_rs + n·b_cs] (row-major storage).
  const int64_t a_rs = trans_a ? 1 : lda, a_cs = trans_a ? lda : 1;
  const int64_t b_rs = trans_b ? 1 : ldb, b_cs = trans_b ? ldb : 1;
  TC* d = static_cast<TC*>(D);
  if (alpha == 1.f && (beta == 0.f || (beta == 1.f && C == D && ldc == ldd))) {
    tile_gemm<TAB, TAB, TC>(m, n, k, a, a_rs, a_cs, b, b_rs, b_cs, d, ldd, beta == 1.f, nullptr,
                            stream);
    return;
  }
  float* product = nullptr;
  CUDA_CHECK(cudaMalloc(&product, sizeof(float) * size_t(m) * n));
  try {
    tile_gemm<TAB, TAB, float>(m, n, k, a, a_rs, a_cs, b, b_rs, b_cs, product, n, false, nullptr,
                               stream);
    launch<epilogue_kernel<TC>>(grid_for(int64_t(m) * n, 256), 256, 0, stream, d, int64_t(ldd),
                                static_cast<const TC*>(C), int64_t(ldc),
                                static_cast<const float*>(product), m, n, alpha, beta);
  } catch (...) {
    cudaFree(product);
    throw;
  }
  CUDA_CHECK(cudaFree(product));
}

}  // namespace

void gemm_ex(const GemmContext&, cudaStream_t stream, bool trans_a, bool trans_b, int m, int n,
             int k, float alpha, const void* A, int lda, const void* B, int ldb,
             cudaDataType_t ab_type, float beta, const void* C, int ldc, void* D, int ldd,
             cudaDataType_t c_type) {
  if (m <= 0 || n <= 0) return;
  const bool ab_bf16 = ab_type == CUDA_R_16BF, c_bf16 = c_type == CUDA_R_16BF;
  if (!ab_bf16 && c_bf16)
    throw InternalError("emulated gemm: fp32 operands with a bf16 result are not supported");
  if (ab_bf16 && c_bf16)
    run<bf16, bf16>(trans_a, trans_b, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc, D, ldd, stream);
  else if (ab_bf16)
    run<bf16, float>(trans_a, trans_b, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc, D, ldd, stream);
  else
    run<float, float>(trans_a, trans_b, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc, D, ldd, stream);
}

}  // namespace mhc::cuda
