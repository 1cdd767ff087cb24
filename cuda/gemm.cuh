// Backend::gemm on cuBLASLt (cublasGemmEx fallback): row-major
//   D[m,n] = alpha · op(A) op(B) + beta · C,   op(A) [m,k], op(B) [k,n],
// A stored [m,k] (ld lda) or [k,m] when trans_a; B stored [k,n] (ld ldb) or [n,k] when
// trans_b. A and B share one type (fp32 or bf16); C/D are fp32 or bf16 (fp32 with bf16
// A/B is how weight gradients accumulate into the master-dtype buffer with beta = 1).
// gemm() is the in-place form (D = C); gemm_ex() writes D from a separate C of the same
// type (cuBLASLt's C ≠ D: a residual add fused into the GEMM's epilogue).
// Compute is always fp32 (CUBLAS_COMPUTE_32F, no TF32), so fp32 results match the CPU.
//
// Descriptors and the heuristic's algorithm are cached per (shape, transposes, leading
// dimensions, types, operand alignments) in the GemmCache the context points to, so a
// training step's few dozen distinct GEMMs query the heuristic once each.
#pragma once
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <memory>

namespace mhc::cuda {

class GemmCache {
 public:
  GemmCache();
  ~GemmCache();
  GemmCache(const GemmCache&) = delete;
  GemmCache& operator=(const GemmCache&) = delete;
  struct Impl;
  Impl& impl() { return *impl_; }

 private:
  std::unique_ptr<Impl> impl_;
};

struct GemmContext {
  cublasLtHandle_t lt = nullptr;
  cublasHandle_t blas = nullptr;  // for the fallback; bound to the same stream
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  GemmCache* cache = nullptr;  // optional
};

// D = alpha op(A) op(B) + beta C with C and D of type c_type (C may equal D).
void gemm_ex(const GemmContext& ctx, cudaStream_t stream, bool trans_a, bool trans_b, int m, int n,
             int k, float alpha, const void* A, int lda, const void* B, int ldb,
             cudaDataType_t ab_type, float beta, const void* C, int ldc, void* D, int ldd,
             cudaDataType_t c_type);

// The in-place form (D = C), shared by the cuBLASLt and the emulated (tile GEMM) builds.
inline void gemm(const GemmContext& ctx, cudaStream_t stream, bool trans_a, bool trans_b, int m,
                 int n, int k, float alpha, const void* A, int lda, const void* B, int ldb,
                 cudaDataType_t ab_type, float beta, void* C, int ldc, cudaDataType_t c_type) {
  gemm_ex(ctx, stream, trans_a, trans_b, m, n, k, alpha, A, lda, B, ldb, ab_type, beta, C, ldc, C,
          ldc, c_type);
}

}  // namespace mhc::cuda
