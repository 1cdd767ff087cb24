// A small fp32-accumulating tiled GEMM for the connection coefficients, where one
// operand is an activation (fp32 or bf16) and the other an fp32 master parameter or an
// fp32 per-token coefficient, so cuBLAS's same-type operands do not fit:
//   C[m, n] = (accumulate ? C[m, n] : 0) + Σ_k A(m, k) · B(k, n)
//   A(m, k) = A[m·a_rs + k·a_cs],  B(k, n) = B[k·b_rs + n·b_cs],  C[m·ldc + n]
// Strides express transposes. Each output has one owner thread that sums k in order:
// deterministic, including long reductions over tokens (e.g. dφ = Xᵀ·h).
// row_sumsq (optional, [M]): also writes Σ_k A(m, k)² (fp32), fused into the pass over
// A (mHC's RMS over the same X the projection reads).
// Instantiated for (TA, TB, TC) = (float, float, float), (bf16, float, float),
// (float, float, bf16).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "common.cuh"

namespace mhc::cuda {

template <class TA, class TB, class TC>
void tile_gemm(int M, int N, int K, const TA* A, int64_t a_rs, int64_t a_cs, const TB* B,
               int64_t b_rs, int64_t b_cs, TC* C, int64_t ldc, bool accumulate,
               float* row_sumsq, cudaStream_t stream);

// The same product for long reductions (K ≫ M·N, e.g. weight gradients summed over all
// tokens): the k range is split into chunks that run as separate blocks, each writing an
// fp32 partial [M, N] into the workspace, then the partials are added in chunk order —
// deterministic, with enough blocks to fill the GPU. Instantiated for (TA, TB, TC) =
// (float, float, float) and (bf16, float, float).
size_t tile_gemm_splitk_workspace_bytes(int M, int N, int K);
template <class TA, class TB, class TC>
void tile_gemm_splitk(int M, int N, int K, const TA* A, int64_t a_rs, int64_t a_cs, const TB* B,
                      int64_t b_rs, int64_t b_cs, TC* C, int64_t ldc, bool accumulate,
                      Workspace& ws, cudaStream_t stream);

}  // namespace mhc::cuda
