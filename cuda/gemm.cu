// Row-major GEMM mapped onto column-major cuBLAS.
//
// A row-major matrix X [r,c] with leading dimension ld occupies exactly the memory of the
// column-major matrix Xᵀ [c,r] with the same ld. Transposing the row-major product
//   C = op(A) op(B)            (C [m,n])
// gives the column-major product
//   Cᵀ = op(B)ᵀ op(A)ᵀ         (Cᵀ [n,m], column-major, ld ldc)
// so cuBLAS is called with the operands swapped: first operand the B buffer, second
// the A buffer, and (m', n', k') = (n, m, k).
//   First operand, B buffer: not trans_b → B is row-major [k,n] = column-major [n,k],
//     which already is op(B)ᵀ: CUBLAS_OP_N on an n×k matrix (ld ldb).
//     trans_b → B is row-major [n,k] = column-major [k,n]; op(B)ᵀ = (that)ᵀ:
//     CUBLAS_OP_T on a k×n matrix (ld ldb).
//   Second operand, A buffer: not trans_a → row-major [m,k] = column-major [k,m] = op(A)ᵀ:
//     CUBLAS_OP_N on a k×m matrix (ld lda). trans_a → row-major [k,m] = column-major
//     [m,k]: CUBLAS_OP_T on an m×k matrix (ld lda).
//   Result: column-major n×m with ld ldc (C) and ldd (D).
#include "gemm.cuh"

#include <cstdint>
#include <map>
#include <tuple>

#include "cuda_check.h"

namespace mhc::cuda {
namespace {

// Largest power of two (≤ 256) dividing the address: cuBLASLt's heuristics assume
// 256-byte aligned operands unless told otherwise, and weight slices are not.
uint32_t alignment_of(const void* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  uint32_t align = 256;
  while (align > 1 && (a % align) != 0) align >>= 1;
  return align;
}

// Releases whatever cuBLASLt descriptors were created, on every path.
struct LtDescriptors {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr, d = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  LtDescriptors() = default;
  LtDescriptors(const LtDescriptors&) = delete;
  LtDescriptors& operator=(const LtDescriptors&) = delete;
  ~LtDescriptors() {
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (d) cublasLtMatrixLayoutDestroy(d);
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

// A prepared column-major matmul: descriptors and the chosen algorithm (found = false
// when the heuristic had none: the caller falls back to cublasGemmEx).
struct LtPlan {
  LtDescriptors d;
  cublasLtMatmulAlgo_t algo{};
  bool found = false;
};

using LtKey = std::tuple<int, int, int, int, int, int, int, int, int, int, int, uint32_t,
                         uint32_t, uint32_t, uint32_t>;

std::unique_ptr<LtPlan> make_plan(const GemmContext& ctx, cublasOperation_t op1,
                                  cublasOperation_t op2, int m, int n, int k, int ld1, int ld2,
                                  int ldc, int ldd, cudaDataType_t ab_type, cudaDataType_t d_type,
                                  uint32_t align_a, uint32_t align_b, uint32_t align_c,
                                  uint32_t align_d) {
  auto plan = std::make_unique<LtPlan>();
  LtDescriptors& d = plan->d;
  CUBLAS_CHECK(cublasLtMatmulDescCreate(&d.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSA, &op1, sizeof(op1)));
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSB, &op2, sizeof(op2)));
  // Stored shapes: X1 is m×k (N) or k×m (T); X2 is k×n (N) or n×k (T).
  const bool t1 = op1 == CUBLAS_OP_T, t2 = op2 == CUBLAS_OP_T;
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&d.a, ab_type, t1 ? k : m, t1 ? m : k, ld1));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&d.b, ab_type, t2 ? n : k, t2 ? k : n, ld2));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&d.c, d_type, m, n, ldc));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&d.d, d_type, m, n, ldd));
  CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&d.pref));
  const uint64_t ws = ctx.workspace_bytes;
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
      d.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
      d.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align_a, sizeof(align_a)));
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
      d.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align_b, sizeof(align_b)));
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
      d.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align_c, sizeof(align_c)));
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
      d.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align_d, sizeof(align_d)));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(ctx.lt, d.op, d.a, d.b, d.c, d.d,
                                                           d.pref, 1, &result, &found);
  plan->found = st == CUBLAS_STATUS_SUCCESS && found > 0;
  if (plan->found) plan->algo = result.algo;
  return plan;
}

}  // namespace

struct GemmCache::Impl {
  std::map<LtKey, std::unique_ptr<LtPlan>> plans;
};

GemmCache::GemmCache() : impl_(std::make_unique<Impl>()) {}
GemmCache::~GemmCache() = default;

namespace {

// Column-major D = alpha op1(X1) op2(X2) + beta C through cuBLASLt; false when no
// algorithm fits (the caller falls back to cublasGemmEx).
bool lt_matmul(const GemmContext& ctx, cudaStream_t stream, cublasOperation_t op1,
               cublasOperation_t op2, int m, int n, int k, float alpha, const void* X1, int ld1,
               const void* X2, int ld2, cudaDataType_t ab_type, float beta, const void* C, int ldc,
               void* D, int ldd, cudaDataType_t d_type) {
  const uint32_t align_a = alignment_of(X1), align_b = alignment_of(X2);
  const uint32_t align_c = alignment_of(C), align_d = alignment_of(D);
  std::unique_ptr<LtPlan> uncached;
  LtPlan* plan = nullptr;
  if (ctx.cache) {
    const LtKey key{int(op1), int(op2), m, n, k, ld1, ld2, ldc, ldd, int(ab_type), int(d_type),
                    align_a, align_b, align_c, align_d};
    auto& plans = ctx.cache->impl().plans;
    auto it = plans.find(key);
    if (it == plans.end())
      it = plans
               .emplace(key, make_plan(ctx, op1, op2, m, n, k, ld1, ld2, ldc, ldd, ab_type, d_type,
                                       align_a, align_b, align_c, align_d))
               .first;
    plan = it->second.get();
  } else {
    uncached = make_plan(ctx, op1, op2, m, n, k, ld1, ld2, ldc, ldd, ab_type, d_type, align_a,
                         align_b, align_c, align_d);
    plan = uncached.get();
  }
  if (!plan->found) return false;
  const LtDescriptors& d = plan->d;
  CUBLAS_CHECK(cublasLtMatmul(ctx.lt, d.op, &alpha, X1, d.a, X2, d.b, &beta, C, d.c, D, d.d,
                              &plan->algo, ctx.workspace, ctx.workspace_bytes, stream));
  return true;
}

size_t type_bytes(cudaDataType_t t) { return t == CUDA_R_16BF ? 2 : 4; }

}  // namespace

void gemm_ex(const GemmContext& ctx, cudaStream_t stream, bool trans_a, bool trans_b, int m, int n,
             int k, float alpha, const void* A, int lda, const void* B, int ldb,
             cudaDataType_t ab_type, float beta, const void* C, int ldc, void* D, int ldd,
             cudaDataType_t c_type) {
  if (m <= 0 || n <= 0) return;
  const cublasOperation_t op1 = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;  // on the B buffer
  const cublasOperation_t op2 = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;  // on the A buffer
  if (k > 0 && lt_matmul(ctx, stream, op1, op2, n, m, k, alpha, B, ldb, A, lda, ab_type, beta,
                         beta != 0.f ? C : D, beta != 0.f ? ldc : ldd, D, ldd, c_type))
    return;
  // k == 0 (D = beta·C) or no Lt algorithm: copy C into D, then the classic API in place.
  if (beta != 0.f && C != D) {
    const size_t row = size_t(n) * type_bytes(c_type);
    CUDA_CHECK(cudaMemcpy2DAsync(D, size_t(ldd) * type_bytes(c_type), C,
                                 size_t(ldc) * type_bytes(c_type), row, size_t(m),
                                 cudaMemcpyDeviceToDevice, stream));
  }
  CUBLAS_CHECK(cublasSetStream(ctx.blas, stream));
  CUBLAS_CHECK(cublasGemmEx(ctx.blas, op1, op2, n, m, k, &alpha, B, ab_type, ldb, A, ab_type, lda,
                            &beta, D, c_type, ldd, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

}  // namespace mhc::cuda
