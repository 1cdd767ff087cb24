// Backend::gemm on cuBLASLt (cublasGemmEx fallback): row-major
//   C[m,n] = alpha · op(A) op(B) + beta · C,   op(A) [m,k], op(B) [k,n],
// A stored [m,k] (ld lda) or [k,m] when trans_a; B stored [k,n] (ld ldb) or [n,k] when
// trans_b. A and B share one type (fp32 or bf16); C is fp32 or bf16 (fp32 C with bf16
// A/B is how weight gradients accumulate into the master-dtype buffer with beta = 1).
// Compute is always fp32 (CUBLAS_COMPUTE_32F, no TF32), so fp32 results match the CPU.
#pragma once
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstddef>

namespace mhc::cuda {

struct GemmContext {
  cublasLtHandle_t lt = nullptr;
  cublasHandle_t blas = nullptr;  // for the fallback; bound to the same stream
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
};

void gemm(const GemmContext& ctx, cudaStream_t stream, bool trans_a, bool trans_b, int m, int n,
          int k, float alpha, const void* A, int lda, const void* B, int ldb, cudaDataType_t ab_type,
          float beta, void* C, int ldc, cudaDataType_t c_type);

}  // namespace mhc::cuda
