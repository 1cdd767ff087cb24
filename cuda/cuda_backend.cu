// The CUDA backend: the Backend op table (core/backend.h) on one GPU, for compute dtype
// fp32 or bf16. Master weights, gradients, optimizer moments, losses and connection
// coefficients are fp32; token ids int32.
//
// Each op checks its tensors' dtypes (and sizes where cheap: a device overrun would be
// silent), dispatches activations on their dtype (float or bf16) and calls the host
// launcher of the op's .cuh, on the backend's stream. Everything is stream-ordered;
// upload/download/sum_squares synchronize because they hand data to the host.
//
// Memory: alloc = cudaMalloc + zero fill, with live/peak accounting that also covers the
// backend's own buffers (cuBLASLt workspace, op scratch). One growable scratch buffer
// serves every op that needs temporary device memory; ops run in stream order, so
// consecutive ops can share it.
#include "cuda_backend.h"

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <type_traits>
#include <vector>

#include "comm.h"  // ComputeStreamSource
#include "activation.cuh"
#include "adamw.cuh"
#include "attention.cuh"
#include "attention_cudnn.cuh"
#include "collapse_weights.cuh"
#include "common.cuh"
#include "cross_entropy.cuh"
#include "cuda_check.h"
#include "elementwise.cuh"
#include "embedding.cuh"
#include "gemm.cuh"
#include "hc_coeff.cuh"
#include "mhc_coeff.cuh"
#include "mhc_variant_coeff.cuh"
#include "reduce.cuh"
#include "rmsnorm.cuh"
#include "rope.cuh"
#include "sinkhorn.cuh"
#include "streams.cuh"

namespace mhc {
MHC_CUDA_ENTRY_BEGIN
namespace {

using cuda::bf16;

constexpr size_t kGemmWorkspaceBytes = size_t(32) << 20;  // cuBLASLt's advice for Hopper
constexpr size_t kScratchGranule = size_t(1) << 20;

// ---- dtype checks ------------------------------------------------------------------------
template <class T>
constexpr DType dtype_of();
template <>
constexpr DType dtype_of<float>() { return DType::F32; }
template <>
constexpr DType dtype_of<bf16>() { return DType::BF16; }

std::string mib(size_t bytes) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.1f MiB", static_cast<double>(bytes) / (1024.0 * 1024.0));
  return text;
}

// Typed pointer of a tensor of element type T (null for an empty tensor).
template <class T>
T* typed(const Tensor& t, const char* what) {
  if (t.data == nullptr) return nullptr;
  if (t.dtype != dtype_of<T>())
    throw InternalError(std::string("cuda backend: ") + what + " must be " +
                        dtype_name(dtype_of<T>()) + ", got " + dtype_name(t.dtype));
  return static_cast<T*>(t.data);
}

float* f32(const Tensor& t, const char* what) { return typed<float>(t, what); }

const int32_t* ids(const Tensor& t, const char* what) {
  if (t.dtype != DType::I32)
    throw InternalError(std::string("cuda backend: ") + what + " must be i32, got " +
                        dtype_name(t.dtype));
  return static_cast<const int32_t*>(t.data);
}

// A launch reads or writes `count` entries: the tensor must hold them.
void need(const Tensor& t, int64_t count, const char* what) {
  if (count > 0 && (t.data == nullptr || t.numel < count))
    throw InternalError(std::string("cuda backend: ") + what + " has " + std::to_string(t.numel) +
                        " elements, the op needs " + std::to_string(count));
}

// Calls f(float{}) or f(bf16{}) for an activation tensor's dtype.
template <class F>
void with_act(const Tensor& t, F&& f) {
  switch (t.dtype) {
    case DType::F32: f(float{}); return;
    case DType::BF16: f(bf16{}); return;
    default:
      throw InternalError(std::string("cuda backend: activation tensor must be f32 or bf16, got ") +
                          dtype_name(t.dtype));
  }
}

cudaDataType_t cuda_type(DType t) {
  switch (t) {
    case DType::F32: return CUDA_R_32F;
    case DType::BF16: return CUDA_R_16BF;
    default:
      throw InternalError(std::string("cuda gemm: unsupported dtype ") + dtype_name(t));
  }
}

// Dense bf16 tensor-core peak (fp32 accumulate) for MFU.
double bf16_peak_tflops(int major, int minor, int sm_count, int clock_khz) {
  // A100 (108 SMs): 312; other sm_80 parts (A30: 56 SMs) scale with their SM count.
  if (major == 8 && minor == 0) return 312.0 * std::min(sm_count, 108) / 108.0;
  // H100 / H200 SXM (132 SMs): 989; H100 PCIe (114 SMs): 756.
  if (major == 9 && minor == 0) return sm_count >= 132 ? 989.0 : 756.0;
  // Anything else is an estimate: SMs × clock × dense bf16 FLOP per clock per SM
  // (4096 for Hopper-class and newer, 1024 for sm_86/sm_89 and other parts).
  const double flops_per_clock = major >= 9 ? 4096.0 : 1024.0;
  return sm_count * (clock_khz * 1e3) * flops_per_clock / 1e12;
}

// A kernel of this library, to ask the runtime whether it has an image for a device.
__global__ void probe_kernel() {}

// ComputeStreamSource lets the trainer hand the compute stream to the NCCL communicator
// (collectives wait on events recorded on it instead of on the host).
class CudaBackend final : public Backend, public ComputeStreamSource {
 public:
  CudaBackend(int device, DType compute, const CudaProbe& probe)
      : device_(device), compute_(compute) {
    name_ = "cuda:" + std::to_string(device) + " " + probe.name + " (" + dtype_name(compute) + ")";
    try {
      CUDA_CHECK(cudaSetDevice(device_));
      CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
      CUBLAS_CHECK(cublasLtCreate(&lt_));
      CUBLAS_CHECK(cublasCreate(&blas_));
      CUBLAS_CHECK(cublasSetStream(blas_, stream_));
      gemm_workspace_ = device_malloc(kGemmWorkspaceBytes, "the cuBLASLt workspace");
    } catch (...) {
      destroy();
      throw;
    }
  }

  ~CudaBackend() override { destroy(); }

  std::string name() const override { return name_; }
  DeviceKind device() const override { return DeviceKind::Cuda; }
  DType compute_dtype() const override { return compute_; }
  DType master_dtype() const override { return DType::F32; }

  // ---- memory -------------------------------------------------------------------------
  Tensor alloc(int64_t numel, DType dtype) override {
    MHC_CHECK(numel >= 0);
    Tensor t{nullptr, numel, dtype};
    if (t.bytes() == 0) return t;
    t.data = device_malloc(t.bytes(), "a tensor");
    CUDA_CHECK(cudaMemsetAsync(t.data, 0, t.bytes(), stream_));
    return t;
  }

  // Never throws: it runs from destructors (Model, AdamW) while an earlier CUDA error
  // unwinds the stack, and a second throw there would terminate the process before the
  // first error is reported (and before the peers are told to stop).
  void release(Tensor t) override {
    if (!t.data) return;
    cudaError_t err = cudaStreamSynchronize(stream_);
    const cudaError_t freed = cudaFree(t.data);
    if (err == cudaSuccess) err = freed;
    live_bytes_ -= static_cast<int64_t>(t.bytes());
    if (err != cudaSuccess && !release_error_reported_) {
      release_error_reported_ = true;
      std::fprintf(stderr, "warning: freeing device memory after a CUDA error: %s\n",
                   cudaGetErrorString(err));
    }
  }

  void upload(Tensor dst, const double* src) override {
    if (dst.numel == 0) return;
    const size_t n = static_cast<size_t>(dst.numel);
    switch (dst.dtype) {
      case DType::F32: {
        std::vector<float> host(n);
        for (size_t i = 0; i < n; ++i) host[i] = static_cast<float>(src[i]);
        to_device(dst, host.data());
        return;
      }
      case DType::BF16: {
        std::vector<bf16> host(n);
        for (size_t i = 0; i < n; ++i) host[i] = __float2bfloat16_rn(static_cast<float>(src[i]));
        to_device(dst, host.data());
        return;
      }
      case DType::F64: to_device(dst, src); return;
      case DType::I32: {
        std::vector<int32_t> host(n);
        for (size_t i = 0; i < n; ++i) host[i] = static_cast<int32_t>(src[i]);
        to_device(dst, host.data());
        return;
      }
    }
  }

  void upload(Tensor dst, const int32_t* src) override {
    MHC_CHECK(dst.dtype == DType::I32);
    if (dst.numel) to_device(dst, src);
  }

  void download(Tensor src, double* dst) override {
    if (src.numel == 0) return;
    const size_t n = static_cast<size_t>(src.numel);
    switch (src.dtype) {
      case DType::F32: {
        std::vector<float> host(n);
        to_host(host.data(), src);
        for (size_t i = 0; i < n; ++i) dst[i] = host[i];
        return;
      }
      case DType::BF16: {
        std::vector<bf16> host(n);
        to_host(host.data(), src);
        for (size_t i = 0; i < n; ++i) dst[i] = __bfloat162float(host[i]);
        return;
      }
      case DType::F64: to_host(dst, src); return;
      case DType::I32: {
        std::vector<int32_t> host(n);
        to_host(host.data(), src);
        for (size_t i = 0; i < n; ++i) dst[i] = host[i];
        return;
      }
    }
  }

  void download(Tensor src, int32_t* dst) override {
    MHC_CHECK(src.dtype == DType::I32);
    if (src.numel) to_host(dst, src);
  }

  void synchronize() override { CUDA_CHECK(cudaStreamSynchronize(stream_)); }
  int64_t peak_bytes() const override { return peak_bytes_; }
  void* compute_stream() const override { return stream_; }
  CudaAttentionStatus attention_status() const {
    if (!cudnn_attention_) return {};
    return {cudnn_attention_->enabled(), cudnn_attention_->describe()};
  }

  // ---- elementwise --------------------------------------------------------------------
  void zero(Tensor t) override {
    if (t.data && t.numel) CUDA_CHECK(cudaMemsetAsync(t.data, 0, t.bytes(), stream_));
  }

  void fill(Tensor t, double value) override {
    if (t.numel == 0) return;
    with_act(t, [&](auto tag) {
      using T = decltype(tag);
      cuda::fill<T>(typed<T>(t, "fill target"), t.numel, static_cast<float>(value), stream_);
    });
  }

  void copy(Tensor dst, Tensor src) override {
    MHC_CHECK(dst.numel == src.numel);
    if (dst.data == src.data || dst.numel == 0) return;
    if (dst.dtype == src.dtype) {
      CUDA_CHECK(cudaMemcpyAsync(dst.data, src.data, dst.bytes(), cudaMemcpyDeviceToDevice, stream_));
    } else if (dst.dtype == DType::BF16 && src.dtype == DType::F32) {
      cuda::convert<bf16, float>(typed<bf16>(dst, "copy dst"), f32(src, "copy src"), dst.numel,
                                 stream_);
    } else if (dst.dtype == DType::F32 && src.dtype == DType::BF16) {
      cuda::convert<float, bf16>(f32(dst, "copy dst"), typed<bf16>(src, "copy src"), dst.numel,
                                 stream_);
    } else {
      throw InternalError(std::string("cuda copy: unsupported conversion ") +
                          dtype_name(src.dtype) + " -> " + dtype_name(dst.dtype));
    }
  }

  void add(Tensor out, Tensor a, Tensor b) override {
    MHC_CHECK(out.numel == a.numel && a.numel == b.numel);
    if (out.numel == 0) return;
    with_act(out, [&](auto tag) {
      using T = decltype(tag);
      cuda::add<T>(typed<T>(out, "add out"), typed<T>(a, "add a"), typed<T>(b, "add b"), out.numel,
                   stream_);
    });
  }

  void scale(Tensor t, double s) override {
    if (t.numel == 0) return;
    with_act(t, [&](auto tag) {
      using T = decltype(tag);
      cuda::scale<T>(typed<T>(t, "scale target"), t.numel, static_cast<float>(s), stream_);
    });
  }

  double sum_squares(Tensor t) override {
    if (t.numel == 0) return 0.0;
    double result = 0;
    with_act(t, [&](auto tag) {
      using T = decltype(tag);
      cuda::Workspace ws = workspace(cuda::sum_squares_workspace_bytes());
      result = cuda::sum_squares<T>(typed<T>(t, "sum_squares input"), t.numel, ws, stream_);
    });
    return result;
  }

  // ---- linear algebra -----------------------------------------------------------------
  void gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, Tensor A, int lda,
            Tensor B, int ldb, float beta, Tensor C, int ldc) override {
    if (A.dtype != B.dtype)
      throw InternalError(std::string("cuda gemm: A is ") + dtype_name(A.dtype) + " but B is " +
                          dtype_name(B.dtype));
    if (m <= 0 || n <= 0) return;
    // Last element touched: (rows − 1)·ld + cols of each stored matrix.
    need(A, trans_a ? int64_t(k - 1) * lda + m : int64_t(m - 1) * lda + k, "gemm A");
    need(B, trans_b ? int64_t(n - 1) * ldb + k : int64_t(k - 1) * ldb + n, "gemm B");
    need(C, int64_t(m - 1) * ldc + n, "gemm C");
    cuda::gemm(gemm_context(), stream_, trans_a, trans_b, m, n, k, alpha, A.data, lda, B.data,
               ldb, cuda_type(A.dtype), beta, C.data, ldc, cuda_type(C.dtype));
  }

  // cuBLASLt with C ≠ D: the residual add rides in the GEMM's epilogue.
  void gemm_ex(bool trans_a, bool trans_b, int m, int n, int k, float alpha, Tensor A, int lda,
               Tensor B, int ldb, float beta, Tensor C, int ldc, Tensor D, int ldd) override {
    if (A.dtype != B.dtype)
      throw InternalError(std::string("cuda gemm_ex: A is ") + dtype_name(A.dtype) +
                          " but B is " + dtype_name(B.dtype));
    if (beta != 0.f && C.dtype != D.dtype)
      throw InternalError(std::string("cuda gemm_ex: C is ") + dtype_name(C.dtype) +
                          " but D is " + dtype_name(D.dtype));
    if (m <= 0 || n <= 0) return;
    need(A, trans_a ? int64_t(k - 1) * lda + m : int64_t(m - 1) * lda + k, "gemm_ex A");
    need(B, trans_b ? int64_t(n - 1) * ldb + k : int64_t(k - 1) * ldb + n, "gemm_ex B");
    need(D, int64_t(m - 1) * ldd + n, "gemm_ex D");
    if (beta != 0.f) need(C, int64_t(m - 1) * ldc + n, "gemm_ex C");
    const Tensor src = beta != 0.f ? C : D;
    cuda::gemm_ex(gemm_context(), stream_, trans_a, trans_b, m, n, k, alpha, A.data, lda, B.data,
                  ldb, cuda_type(A.dtype), beta, src.data, beta != 0.f ? ldc : ldd, D.data, ldd,
                  cuda_type(D.dtype));
  }

  // ---- embedding ----------------------------------------------------------------------
  void embedding_forward(Tensor out, Tensor tokens, Tensor wte, int N, int C) override {
    need(out, int64_t(N) * C, "embedding out");
    need(tokens, N, "embedding tokens");
    with_act(out, [&](auto tag) {
      using T = decltype(tag);
      cuda::embedding_forward<T>(typed<T>(out, "embedding out"), ids(tokens, "tokens"),
                                 typed<T>(wte, "wte"), N, C, stream_);
    });
  }

  void embedding_backward(Tensor dwte, Tensor tokens, Tensor dout, int N, int C) override {
    need(dout, int64_t(N) * C, "embedding dout");
    need(tokens, N, "embedding tokens");
    with_act(dout, [&](auto tag) {
      using T = decltype(tag);
      cuda::Workspace ws = workspace(cuda::embedding_backward_workspace_bytes(N));
      cuda::embedding_backward<T>(f32(dwte, "dwte"), ids(tokens, "tokens"),
                                  typed<T>(dout, "embedding dout"), N, C, ws, stream_);
    });
  }

  // ---- RMSNorm ------------------------------------------------------------------------
  void rmsnorm_forward(Tensor out, Tensor rstd, Tensor x, Tensor w, int rows, int C,
                       float eps) override {
    need(out, int64_t(rows) * C, "rmsnorm out");
    need(x, int64_t(rows) * C, "rmsnorm x");
    need(rstd, rows, "rmsnorm rstd");
    need(w, C, "rmsnorm w");
    with_act(x, [&](auto tag) {
      using T = decltype(tag);
      cuda::rmsnorm_forward<T>(typed<T>(out, "rmsnorm out"), f32(rstd, "rstd"),
                               typed<T>(x, "rmsnorm x"), typed<T>(w, "rmsnorm w"), rows, C, eps,
                               stream_);
    });
  }

  void rmsnorm_backward(Tensor dx, Tensor dw, Tensor dout, Tensor x, Tensor w, Tensor rstd,
                        int rows, int C) override {
    need(dx, int64_t(rows) * C, "rmsnorm dx");
    need(dout, int64_t(rows) * C, "rmsnorm dout");
    need(x, int64_t(rows) * C, "rmsnorm x");
    need(dw, C, "rmsnorm dw");
    need(w, C, "rmsnorm w");
    need(rstd, rows, "rmsnorm rstd");
    with_act(x, [&](auto tag) {
      using T = decltype(tag);
      cuda::Workspace ws = workspace(cuda::rmsnorm_backward_workspace_bytes(rows, C));
      cuda::rmsnorm_backward<T>(typed<T>(dx, "rmsnorm dx"), f32(dw, "rmsnorm dw"),
                                typed<T>(dout, "rmsnorm dout"), typed<T>(x, "rmsnorm x"),
                                typed<T>(w, "rmsnorm w"), f32(rstd, "rstd"), rows, C, ws, stream_);
    });
  }

  // ---- RoPE ---------------------------------------------------------------------------
  void rope_forward(Tensor qkv, const AttentionShape& s, float theta) override {
    rope(qkv, s, theta, false);
  }
  void rope_backward(Tensor dqkv, const AttentionShape& s, float theta) override {
    rope(dqkv, s, theta, true);
  }

  // ---- attention ----------------------------------------------------------------------
  void attention_forward(Tensor out, Tensor lse, Tensor qkv, const AttentionShape& s) override {
    const int64_t NC = int64_t(s.B) * s.T * s.C();
    need(out, NC, "attention out");
    need(qkv, 3 * NC, "attention qkv");
    need(lse, int64_t(s.B) * s.n_head * s.T, "attention lse");
    with_act(qkv, [&](auto tag) {
      using T = decltype(tag);
      // bf16: cuDNN's fused flash attention when it supports the shape; the built-in
      // kernels otherwise (and always in fp32).
      if constexpr (std::is_same_v<T, bf16>) {
        if (cudnn_attention_->forward(typed<T>(out, "attention out"), f32(lse, "lse"),
                                     typed<T>(qkv, "qkv"), s.B, s.T, s.n_head, s.head_dim,
                                     stream_, scratch_fn()))
          return;
      }
      cuda::attention_forward<T>(typed<T>(out, "attention out"), f32(lse, "lse"),
                                 typed<T>(qkv, "qkv"), s.B, s.T, s.n_head, s.head_dim, stream_);
    });
  }

  void attention_backward(Tensor dqkv, Tensor dout, Tensor qkv, Tensor out, Tensor lse,
                          const AttentionShape& s) override {
    const int64_t NC = int64_t(s.B) * s.T * s.C();
    need(dqkv, 3 * NC, "attention dqkv");
    need(qkv, 3 * NC, "attention qkv");
    need(dout, NC, "attention dout");
    need(out, NC, "attention out");
    need(lse, int64_t(s.B) * s.n_head * s.T, "attention lse");
    with_act(qkv, [&](auto tag) {
      using T = decltype(tag);
      if constexpr (std::is_same_v<T, bf16>) {
        if (cudnn_attention_->backward(typed<T>(dqkv, "dqkv"), typed<T>(dout, "attention dout"),
                                      typed<T>(qkv, "qkv"), typed<T>(out, "attention out"),
                                      f32(lse, "lse"), s.B, s.T, s.n_head, s.head_dim, stream_,
                                      scratch_fn()))
          return;
      }
      cuda::Workspace ws = workspace(cuda::attention_backward_workspace_bytes(s.B, s.T, s.n_head));
      cuda::attention_backward<T>(typed<T>(dqkv, "dqkv"), typed<T>(dout, "attention dout"),
                                  typed<T>(qkv, "qkv"), typed<T>(out, "attention out"),
                                  f32(lse, "lse"), s.B, s.T, s.n_head, s.head_dim, ws, stream_);
    });
  }

  // ---- MLP activations ----------------------------------------------------------------
  void swiglu_forward(Tensor out, Tensor gate_up, int N, int H) override {
    need(out, int64_t(N) * H, "swiglu out");
    need(gate_up, 2 * int64_t(N) * H, "swiglu gate_up");
    with_act(out, [&](auto tag) {
      using T = decltype(tag);
      cuda::swiglu_forward<T>(typed<T>(out, "swiglu out"), typed<T>(gate_up, "gate_up"), N, H,
                              stream_);
    });
  }

  void swiglu_backward(Tensor dgate_up, Tensor dout, Tensor gate_up, int N, int H) override {
    need(dgate_up, 2 * int64_t(N) * H, "swiglu dgate_up");
    need(gate_up, 2 * int64_t(N) * H, "swiglu gate_up");
    need(dout, int64_t(N) * H, "swiglu dout");
    with_act(dout, [&](auto tag) {
      using T = decltype(tag);
      cuda::swiglu_backward<T>(typed<T>(dgate_up, "dgate_up"), typed<T>(dout, "swiglu dout"),
                               typed<T>(gate_up, "gate_up"), N, H, stream_);
    });
  }

  void gelu_forward(Tensor out, Tensor x, int N, int H) override {
    need(out, int64_t(N) * H, "gelu out");
    need(x, int64_t(N) * H, "gelu x");
    with_act(x, [&](auto tag) {
      using T = decltype(tag);
      cuda::gelu_forward<T>(typed<T>(out, "gelu out"), typed<T>(x, "gelu x"), N, H, stream_);
    });
  }

  void gelu_backward(Tensor dx, Tensor dout, Tensor x, int N, int H) override {
    need(dx, int64_t(N) * H, "gelu dx");
    need(dout, int64_t(N) * H, "gelu dout");
    need(x, int64_t(N) * H, "gelu x");
    with_act(x, [&](auto tag) {
      using T = decltype(tag);
      cuda::gelu_backward<T>(typed<T>(dx, "gelu dx"), typed<T>(dout, "gelu dout"),
                             typed<T>(x, "gelu x"), N, H, stream_);
    });
  }

  // ---- classifier loss ----------------------------------------------------------------
  void cross_entropy(Tensor losses, Tensor logits, Tensor targets, int N, int V, int Vp,
                     float dloss) override {
    MHC_CHECK(V > 0 && V <= Vp);
    need(losses, N, "cross_entropy losses");
    need(logits, int64_t(N) * Vp, "cross_entropy logits");
    need(targets, N, "cross_entropy targets");
    with_act(logits, [&](auto tag) {
      using T = decltype(tag);
      cuda::cross_entropy<T>(f32(losses, "losses"), typed<T>(logits, "logits"),
                             ids(targets, "targets"), N, V, Vp, dloss, stream_);
    });
  }

  // ---- residual streams ---------------------------------------------------------------
  void stream_expand(Tensor X, Tensor x, int N, int n, int C) override {
    need(X, int64_t(N) * n * C, "stream_expand X");
    need(x, int64_t(N) * C, "stream_expand x");
    with_act(X, [&](auto tag) {
      using T = decltype(tag);
      cuda::stream_expand<T>(typed<T>(X, "X"), typed<T>(x, "x"), N, n, C, stream_);
    });
  }

  void stream_collapse(Tensor x, Tensor X, int N, int n, int C) override {
    need(X, int64_t(N) * n * C, "stream_collapse X");
    need(x, int64_t(N) * C, "stream_collapse x");
    with_act(X, [&](auto tag) {
      using T = decltype(tag);
      cuda::stream_collapse<T>(typed<T>(x, "x"), typed<T>(X, "X"), N, n, C, stream_);
    });
  }

  void stream_aggregate_forward(Tensor u, Tensor X, Tensor pre, const ConnShape& s) override {
    need(u, int64_t(s.N) * s.C, "aggregate u");
    need(X, int64_t(s.N) * s.n * s.C, "aggregate X");
    need(pre, int64_t(s.N) * s.n, "aggregate pre");
    with_act(X, [&](auto tag) {
      using T = decltype(tag);
      cuda::stream_aggregate_forward<T>(typed<T>(u, "u"), typed<T>(X, "X"), f32(pre, "pre"), s.N,
                                        s.n, s.C, stream_);
    });
  }

  void stream_aggregate_backward(Tensor dX, Tensor dpre, Tensor du, Tensor X, Tensor pre,
                                 const ConnShape& s) override {
    need(dX, int64_t(s.N) * s.n * s.C, "aggregate dX");
    need(X, int64_t(s.N) * s.n * s.C, "aggregate X");
    need(du, int64_t(s.N) * s.C, "aggregate du");
    need(pre, int64_t(s.N) * s.n, "aggregate pre");
    need(dpre, int64_t(s.N) * s.n, "aggregate dpre");
    with_act(X, [&](auto tag) {
      using T = decltype(tag);
      cuda::stream_aggregate_backward<T>(typed<T>(dX, "dX"), f32(dpre, "dpre"), typed<T>(du, "du"),
                                         typed<T>(X, "X"), f32(pre, "pre"), s.N, s.n, s.C,
                                         stream_);
    });
  }

  void stream_merge_forward(Tensor Y, Tensor X, Tensor f, const Coeffs& c,
                            const ConnShape& s) override {
    need(Y, int64_t(s.N) * s.n * s.C, "merge Y");
    need(X, int64_t(s.N) * s.n * s.C, "merge X");
    need(f, int64_t(s.N) * s.C, "merge f");
    need(c.res, int64_t(s.N) * s.n * s.n, "merge res");
    need(c.post, int64_t(s.N) * s.n, "merge post");
    with_act(X, [&](auto tag) {
      using T = decltype(tag);
      cuda::stream_merge_forward<T>(typed<T>(Y, "Y"), typed<T>(X, "X"), typed<T>(f, "f"),
                                    f32(c.res, "res"), f32(c.post, "post"), s.N, s.n, s.C, stream_);
    });
  }

  void stream_merge_backward(Tensor dX, Tensor df, const Coeffs& dc, Tensor dY, Tensor X, Tensor f,
                             const Coeffs& c, const ConnShape& s) override {
    const int64_t NnC = int64_t(s.N) * s.n * s.C;
    need(dX, NnC, "merge dX");
    need(dY, NnC, "merge dY");
    need(X, NnC, "merge X");
    need(df, int64_t(s.N) * s.C, "merge df");
    need(f, int64_t(s.N) * s.C, "merge f");
    need(dc.res, int64_t(s.N) * s.n * s.n, "merge dres");
    need(dc.post, int64_t(s.N) * s.n, "merge dpost");
    need(c.res, int64_t(s.N) * s.n * s.n, "merge res");
    need(c.post, int64_t(s.N) * s.n, "merge post");
    with_act(X, [&](auto tag) {
      using T = decltype(tag);
      cuda::stream_merge_backward<T>(typed<T>(dX, "dX"), typed<T>(df, "df"), f32(dc.res, "dres"),
                                     f32(dc.post, "dpost"), typed<T>(dY, "dY"), typed<T>(X, "X"),
                                     typed<T>(f, "f"), f32(c.res, "res"), f32(c.post, "post"), s.N,
                                     s.n, s.C, stream_);
    });
  }

  // ---- Sinkhorn -----------------------------------------------------------------------
  void sinkhorn_forward(Tensor H, Tensor Z, int count, int n, int iters) override {
    need(H, int64_t(count) * n * n, "sinkhorn H");
    need(Z, int64_t(count) * n * n, "sinkhorn Z");
    cuda::sinkhorn_forward(f32(H, "H"), f32(Z, "Z"), count, n, iters, stream_);
  }

  void sinkhorn_backward(Tensor dZ, Tensor dH, Tensor Z, int count, int n, int iters) override {
    need(dZ, int64_t(count) * n * n, "sinkhorn dZ");
    need(dH, int64_t(count) * n * n, "sinkhorn dH");
    need(Z, int64_t(count) * n * n, "sinkhorn Z");
    cuda::Workspace ws = workspace(cuda::sinkhorn_backward_workspace_bytes(count, n, iters));
    cuda::sinkhorn_backward(f32(dZ, "dZ"), f32(dH, "dH"), f32(Z, "Z"), count, n, iters, ws,
                            stream_);
  }

  // ---- mHC coefficients ---------------------------------------------------------------
  void mhc_coeff_forward(const Coeffs& c, const MhcSaved& saved, Tensor X, const MhcParams& p,
                         const ConnShape& s, int iters, float eps) override {
    check_coeffs(c, s, "mhc");
    need(saved.m, int64_t(s.N) * s.D(), "mhc saved m");
    need(saved.rms, s.N, "mhc saved rms");
    need(X, int64_t(s.N) * s.n * s.C, "mhc X");
    check_mhc_params(p, s, "mhc params");
    const cuda::MhcCoeffArgs args{s.N, s.n, s.C, iters};
    with_act(X, [&](auto tag) {
      using T = decltype(tag);
      cuda::mhc_coeff_forward<T>(f32(c.pre, "pre"), f32(c.post, "post"), f32(c.res, "res"),
                                 f32(saved.m, "m"), f32(saved.rms, "rms"), typed<T>(X, "X"),
                                 f32(p.phi, "phi"), f32(p.alpha, "alpha"), f32(p.bias, "bias"),
                                 args, eps, stream_);
    });
  }

  void mhc_coeff_backward(Tensor dX, const MhcParams& dp, const Coeffs& dc, Tensor X,
                          const MhcParams& p, const MhcSaved& saved, const ConnShape& s,
                          int iters) override {
    check_coeffs(dc, s, "mhc gradient");
    need(saved.m, int64_t(s.N) * s.D(), "mhc saved m");
    need(saved.rms, s.N, "mhc saved rms");
    need(X, int64_t(s.N) * s.n * s.C, "mhc X");
    need(dX, int64_t(s.N) * s.n * s.C, "mhc dX");
    check_mhc_params(p, s, "mhc params");
    check_mhc_params(dp, s, "mhc param gradients");
    const cuda::MhcCoeffArgs args{s.N, s.n, s.C, iters};
    with_act(X, [&](auto tag) {
      using T = decltype(tag);
      cuda::Workspace ws = workspace(cuda::mhc_coeff_backward_workspace_bytes(args));
      cuda::mhc_coeff_backward<T>(typed<T>(dX, "dX"), f32(dp.phi, "dphi"), f32(dp.alpha, "dalpha"),
                                  f32(dp.bias, "dbias"), f32(dc.pre, "dpre"), f32(dc.post, "dpost"),
                                  f32(dc.res, "dres"), typed<T>(X, "X"), f32(p.phi, "phi"),
                                  f32(p.alpha, "alpha"), f32(p.bias, "bias"), f32(saved.m, "m"),
                                  f32(saved.rms, "rms"), args, ws, stream_);
    });
  }

  // ---- mHC variants and the learned collapse -------------------------------------------
  void mhc_variant_coeff_forward(const Coeffs& c, const MhcSaved& saved, Tensor X,
                                 const MhcParams& p, const ConnShape& s, int iters,
                                 float eps) override {
    check_coeffs(c, s, "mhc variant");
    check_mhc_variant_params(p, s, "mhc variant params");
    if (s.mhc.dynamic) {
      need(saved.m, int64_t(s.N) * s.D(), "mhc variant saved m");
      need(saved.rms, s.N, "mhc variant saved rms");
      need(X, int64_t(s.N) * s.n * s.C, "mhc variant X");
    }
    const cuda::MhcCoeffArgs args{s.N, s.n, s.C, iters};
    with_act(X, [&](auto tag) {
      using T = decltype(tag);
      cuda::Workspace ws =
          workspace(cuda::mhc_variant_coeff_forward_workspace_bytes(args, s.mhc));
      cuda::mhc_variant_coeff_forward<T>(
          f32(c.pre, "pre"), f32(c.post, "post"), f32(c.res, "res"), f32(saved.m, "m"),
          f32(saved.rms, "rms"), typed<T>(X, "X"), f32(p.phi, "phi"), f32(p.alpha, "alpha"),
          f32(p.bias, "bias"), args, s.mhc, eps, ws, stream_);
    });
  }

  void mhc_variant_coeff_backward(Tensor dX, const MhcParams& dp, const Coeffs& dc, Tensor X,
                                  const MhcParams& p, const MhcSaved& saved, const ConnShape& s,
                                  int iters) override {
    check_coeffs(dc, s, "mhc variant gradient");
    check_mhc_variant_params(p, s, "mhc variant params");
    check_mhc_variant_params(dp, s, "mhc variant param gradients");
    if (s.mhc.dynamic) {
      need(saved.m, int64_t(s.N) * s.D(), "mhc variant saved m");
      need(saved.rms, s.N, "mhc variant saved rms");
      need(X, int64_t(s.N) * s.n * s.C, "mhc variant X");
      need(dX, int64_t(s.N) * s.n * s.C, "mhc variant dX");
    }
    const cuda::MhcCoeffArgs args{s.N, s.n, s.C, iters};
    with_act(X, [&](auto tag) {
      using T = decltype(tag);
      cuda::Workspace ws =
          workspace(cuda::mhc_variant_coeff_backward_workspace_bytes(args, s.mhc));
      cuda::mhc_variant_coeff_backward<T>(
          typed<T>(dX, "dX"), f32(dp.phi, "dphi"), f32(dp.alpha, "dalpha"), f32(dp.bias, "dbias"),
          f32(dc.pre, "dpre"), f32(dc.post, "dpost"), f32(dc.res, "dres"), typed<T>(X, "X"),
          f32(p.phi, "phi"), f32(p.alpha, "alpha"), f32(p.bias, "bias"), f32(saved.m, "m"),
          f32(saved.rms, "rms"), args, s.mhc, ws, stream_);
    });
  }

  void collapse_weights_forward(Tensor w, Tensor m, Tensor rms, Tensor X, Tensor phi,
                                Tensor alpha, Tensor bias, int N, int n, int C,
                                float eps) override {
    need(w, int64_t(N) * n, "collapse w");
    need(m, int64_t(N) * n, "collapse saved m");
    need(rms, N, "collapse saved rms");
    need(X, int64_t(N) * n * C, "collapse X");
    check_collapse_params(phi, alpha, bias, n, C, "collapse params");
    with_act(X, [&](auto tag) {
      using T = decltype(tag);
      cuda::collapse_weights_forward<T>(f32(w, "w"), f32(m, "m"), f32(rms, "rms"),
                                        typed<T>(X, "X"), f32(phi, "phi"), f32(alpha, "alpha"),
                                        f32(bias, "bias"), N, n, C, eps, stream_);
    });
  }

  void collapse_weights_backward(Tensor dX, Tensor dphi, Tensor dalpha, Tensor dbias, Tensor dw,
                                 Tensor X, Tensor phi, Tensor alpha, Tensor bias, Tensor m,
                                 Tensor rms, int N, int n, int C) override {
    need(dX, int64_t(N) * n * C, "collapse dX");
    need(dw, int64_t(N) * n, "collapse dw");
    need(m, int64_t(N) * n, "collapse saved m");
    need(rms, N, "collapse saved rms");
    need(X, int64_t(N) * n * C, "collapse X");
    check_collapse_params(phi, alpha, bias, n, C, "collapse params");
    check_collapse_params(dphi, dalpha, dbias, n, C, "collapse param gradients");
    with_act(X, [&](auto tag) {
      using T = decltype(tag);
      cuda::Workspace ws = workspace(cuda::collapse_weights_backward_workspace_bytes(N, n, C));
      cuda::collapse_weights_backward<T>(typed<T>(dX, "dX"), f32(dphi, "dphi"),
                                         f32(dalpha, "dalpha"), f32(dbias, "dbias"),
                                         f32(dw, "dw"), typed<T>(X, "X"), f32(phi, "phi"),
                                         f32(alpha, "alpha"), f32(bias, "bias"), f32(m, "m"),
                                         f32(rms, "rms"), N, n, C, ws, stream_);
    });
  }

  // ---- HC coefficients ----------------------------------------------------------------
  void hc_coeff_forward(const Coeffs& c, const HcSaved& saved, Tensor X, const HcParams& p,
                        const ConnShape& s, float norm_eps) override {
    check_coeffs(c, s, "hc");
    check_hc_params(p, s);
    if (p.dynamic()) {
      need(X, int64_t(s.N) * s.n * s.C, "hc X");
      need(saved.rstd, int64_t(s.N) * s.n, "hc saved rstd");
      need(saved.tanh, int64_t(s.N) * s.n * (s.n + 2), "hc saved tanh");
    }
    const cuda::HcCoeffParams prm = hc_params(p);
    with_act_or_f32(X, [&](auto tag) {
      using T = decltype(tag);
      cuda::hc_coeff_forward<T>(f32(c.pre, "pre"), f32(c.post, "post"), f32(c.res, "res"),
                                f32(saved.rstd, "rstd"), f32(saved.tanh, "tanh"), typed<T>(X, "X"),
                                prm, s.N, s.n, s.C, norm_eps, stream_);
    });
  }

  void hc_coeff_backward(Tensor dX, const HcParams& dp, const Coeffs& dc, Tensor X,
                         const HcParams& p, const HcSaved& saved, const ConnShape& s) override {
    check_coeffs(dc, s, "hc gradient");
    check_hc_params(p, s);
    check_hc_params(dp, s);
    MHC_CHECK(dp.dynamic() == p.dynamic());
    if (p.dynamic()) {
      need(X, int64_t(s.N) * s.n * s.C, "hc X");
      need(dX, int64_t(s.N) * s.n * s.C, "hc dX");
      need(saved.rstd, int64_t(s.N) * s.n, "hc saved rstd");
      need(saved.tanh, int64_t(s.N) * s.n * (s.n + 2), "hc saved tanh");
    }
    const cuda::HcCoeffParams prm = hc_params(p);
    const cuda::HcCoeffGrads grads{f32(dp.a, "da"),           f32(dp.A, "dA"),
                                   f32(dp.b, "db"),           f32(dp.norm_w, "dnorm_w"),
                                   f32(dp.w_a, "dw_a"),       f32(dp.W_A, "dW_A"),
                                   f32(dp.w_b, "dw_b"),       f32(dp.s_alpha, "ds_alpha"),
                                   f32(dp.s_beta, "ds_beta")};
    with_act_or_f32(X, [&](auto tag) {
      using T = decltype(tag);
      cuda::Workspace ws =
          workspace(cuda::hc_coeff_backward_workspace_bytes(s.N, s.n, s.C, p.dynamic()));
      cuda::hc_coeff_backward<T>(typed<T>(dX, "dX"), grads, f32(dc.pre, "dpre"),
                                 f32(dc.post, "dpost"), f32(dc.res, "dres"), typed<T>(X, "X"), prm,
                                 f32(saved.rstd, "rstd"), f32(saved.tanh, "tanh"), s.N, s.n, s.C,
                                 ws, stream_);
    });
  }

  // ---- optimizer ----------------------------------------------------------------------
  void adamw(Tensor p, Tensor g, Tensor m, Tensor v, const AdamWStep& a) override {
    MHC_CHECK(p.numel == g.numel && g.numel == m.numel && m.numel == v.numel);
    const cuda::AdamWConstants k = cuda::adamw_constants(a.lr, a.beta1, a.beta2, a.eps,
                                                         a.weight_decay, a.grad_scale, a.step);
    cuda::adamw(f32(p, "adamw p"), f32(g, "adamw g"), f32(m, "adamw m"), f32(v, "adamw v"),
                p.numel, k, stream_);
  }

 private:
  void destroy() noexcept {
    if (stream_) cudaStreamSynchronize(stream_);
    cudnn_attention_.reset();
    gemm_cache_.reset();
    if (scratch_) cudaFree(scratch_);
    if (gemm_workspace_) cudaFree(gemm_workspace_);
    if (blas_) cublasDestroy(blas_);
    if (lt_) cublasLtDestroy(lt_);
    if (stream_) cudaStreamDestroy(stream_);
    scratch_ = gemm_workspace_ = nullptr;
    blas_ = nullptr;
    lt_ = nullptr;
    stream_ = nullptr;
  }

  // cudaMalloc with a clear out-of-memory message and live/peak accounting.
  void* device_malloc(size_t bytes, const char* what) {
    void* p = nullptr;
    const cudaError_t err = cudaMalloc(&p, bytes);
    if (err == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();  // clear the error so the context stays usable
      size_t free_bytes = 0, total_bytes = 0;
      (void)cudaMemGetInfo(&free_bytes, &total_bytes);
      throw MhcError("CUDA out of memory on " + name_ + " allocating " + what + ": requested " +
                     mib(bytes) + ", " + mib(free_bytes) + " free of " + mib(total_bytes) +
                     " (this backend holds " + mib(static_cast<size_t>(live_bytes_)) +
                     "); reduce train.micro_batch or model.seq_len");
    }
    CUDA_CHECK(err);
    live_bytes_ += static_cast<int64_t>(bytes);
    peak_bytes_ = std::max(peak_bytes_, live_bytes_);
    return p;
  }

  // The op scratch buffer, grown (never shrunk) to at least `bytes`.
  cuda::Workspace workspace(size_t bytes) {
    if (bytes > scratch_bytes_) {
      if (scratch_) {
        CUDA_CHECK(cudaStreamSynchronize(stream_));  // no queued kernel still uses it
        CUDA_CHECK(cudaFree(scratch_));
        live_bytes_ -= static_cast<int64_t>(scratch_bytes_);
        scratch_ = nullptr;
        scratch_bytes_ = 0;
      }
      const size_t grown = (bytes + kScratchGranule - 1) / kScratchGranule * kScratchGranule;
      scratch_ = device_malloc(grown, "op scratch");
      scratch_bytes_ = grown;
    }
    return cuda::Workspace(scratch_, scratch_bytes_);
  }

  cuda::GemmContext gemm_context() {
    return cuda::GemmContext{lt_, blas_, gemm_workspace_, kGemmWorkspaceBytes, gemm_cache_.get()};
  }

  // The op scratch as a plain allocator callback (for cuDNN's workspace).
  cuda::ScratchFn scratch_fn() {
    return [this](size_t bytes) -> void* {
      cuda::Workspace ws = workspace(bytes);
      return ws.take<char>(bytes);
    };
  }

  template <class H>
  void to_device(Tensor dst, const H* host) {
    MHC_CHECK(sizeof(H) == dtype_size(dst.dtype));
    CUDA_CHECK(cudaMemcpyAsync(dst.data, host, dst.bytes(), cudaMemcpyHostToDevice, stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));
  }

  template <class H>
  void to_host(H* host, Tensor src) {
    MHC_CHECK(sizeof(H) == dtype_size(src.dtype));
    CUDA_CHECK(cudaMemcpyAsync(host, src.data, src.bytes(), cudaMemcpyDeviceToHost, stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));
  }

  void rope(Tensor qkv, const AttentionShape& s, float theta, bool inverse) {
    MHC_CHECK(s.head_dim % 2 == 0);
    need(qkv, 3 * int64_t(s.B) * s.T * s.C(), "rope qkv");
    with_act(qkv, [&](auto tag) {
      using T = decltype(tag);
      cuda::rope<T>(typed<T>(qkv, "qkv"), s.B, s.T, s.n_head, s.head_dim, theta, inverse, stream_);
    });
  }

  // Static HC never reads X; its (possibly empty) X still selects the dtype.
  template <class F>
  void with_act_or_f32(const Tensor& X, F&& f) {
    if (X.data == nullptr)
      f(float{});
    else
      with_act(X, f);
  }

  static void check_coeffs(const Coeffs& c, const ConnShape& s, const char* what) {
    need(c.pre, int64_t(s.N) * s.n, what);
    need(c.post, int64_t(s.N) * s.n, what);
    need(c.res, int64_t(s.N) * s.n * s.n, what);
  }

  static void check_mhc_params(const MhcParams& p, const ConnShape& s, const char* what) {
    need(p.phi, int64_t(s.n) * s.C * s.D(), what);
    need(p.alpha, 3, what);
    need(p.bias, s.D(), what);
  }

  // Static mHC (s.mhc.dynamic false) has no φ and no α.
  static void check_mhc_variant_params(const MhcParams& p, const ConnShape& s, const char* what) {
    if (s.mhc.dynamic) {
      need(p.phi, int64_t(s.n) * s.C * s.D(), what);
      need(p.alpha, 3, what);
    }
    need(p.bias, s.D(), what);
  }

  static void check_collapse_params(const Tensor& phi, const Tensor& alpha, const Tensor& bias,
                                    int n, int C, const char* what) {
    need(phi, int64_t(n) * C * n, what);
    need(alpha, 1, what);
    need(bias, n, what);
  }

  static void check_hc_params(const HcParams& p, const ConnShape& s) {
    need(p.a, s.n, "hc a");
    need(p.A, int64_t(s.n) * s.n, "hc A");
    need(p.b, s.n, "hc b");
    if (!p.dynamic()) return;
    need(p.norm_w, s.C, "hc norm_w");
    need(p.w_a, s.C, "hc w_a");
    need(p.W_A, int64_t(s.C) * s.n, "hc W_A");
    need(p.w_b, s.C, "hc w_b");
    need(p.s_alpha, 1, "hc s_alpha");
    need(p.s_beta, 1, "hc s_beta");
  }

  static cuda::HcCoeffParams hc_params(const HcParams& p) {
    return {f32(p.a, "a"),         f32(p.A, "A"),         f32(p.b, "b"),
            f32(p.norm_w, "norm_w"), f32(p.w_a, "w_a"),     f32(p.W_A, "W_A"),
            f32(p.w_b, "w_b"),     f32(p.s_alpha, "s_alpha"), f32(p.s_beta, "s_beta")};
  }

  int device_;
  DType compute_;
  // cuBLASLt descriptors and algorithms per GEMM shape (see gemm.cuh).
  std::unique_ptr<cuda::GemmCache> gemm_cache_ = std::make_unique<cuda::GemmCache>();
  // bf16 fused attention (falls back per shape); released before the stream.
  std::unique_ptr<cuda::CudnnAttention> cudnn_attention_ = std::make_unique<cuda::CudnnAttention>();
  std::string name_;
  cudaStream_t stream_ = nullptr;
  cublasLtHandle_t lt_ = nullptr;
  cublasHandle_t blas_ = nullptr;
  void* gemm_workspace_ = nullptr;
  void* scratch_ = nullptr;
  size_t scratch_bytes_ = 0;
  int64_t live_bytes_ = 0;
  int64_t peak_bytes_ = 0;
  bool release_error_reported_ = false;
};

}  // namespace

CudaProbe probe_cuda(int device) {
  CudaProbe probe;
  try {
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) {
      (void)cudaGetLastError();
      probe.reason = cudaGetErrorString(err);
      return probe;
    }
    if (count == 0) {
      probe.reason = "no CUDA device found";
      return probe;
    }
    if (device < 0 || device >= count) {
      probe.reason = "CUDA device " + std::to_string(device) + " does not exist (" +
                     std::to_string(count) + " visible)";
      return probe;
    }
    cudaDeviceProp prop{};
    err = cudaGetDeviceProperties(&prop, device);
    if (err != cudaSuccess) {
      (void)cudaGetLastError();
      probe.reason = cudaGetErrorString(err);
      return probe;
    }
    probe.name = prop.name;
    probe.sm_major = prop.major;
    probe.sm_minor = prop.minor;
    probe.total_memory = static_cast<int64_t>(prop.totalGlobalMem);
    int clock_khz = 0;
    if (cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, device) != cudaSuccess) {
      (void)cudaGetLastError();
      clock_khz = 0;
    }
    probe.bf16_peak_tflops =
        bf16_peak_tflops(prop.major, prop.minor, prop.multiProcessorCount, clock_khz);
    if (prop.major < 8) {
      probe.reason = std::string(prop.name) + " has compute capability " +
                     std::to_string(prop.major) + "." + std::to_string(prop.minor) +
                     "; the CUDA backend needs 8.0 or newer (bf16, sm_80/sm_90 kernels)";
      return probe;
    }
    // Is there a kernel image (SASS or JIT-able PTX) for this device in the binary? This
    // leaves `device` current: switching back to the thread's previous device would
    // create a context on GPU 0 in every rank of a multi-GPU job.
    err = cudaSetDevice(device);
    cudaFuncAttributes attr{};
    if (err == cudaSuccess) err = cudaFuncGetAttributes(&attr, probe_kernel);
    if (err != cudaSuccess) {
      (void)cudaGetLastError();
      probe.reason = std::string("cannot run kernels on ") + prop.name + ": " +
                     cudaGetErrorString(err);
      return probe;
    }
    probe.usable = true;
  } catch (const std::exception& e) {  // e.g. std::bad_alloc: still never throw
    probe.usable = false;
    probe.reason = e.what();
  }
  return probe;
}

CudaAttentionStatus cuda_attention_status(const Backend& be) {
  const auto* cuda = dynamic_cast<const CudaBackend*>(&be);
  return cuda ? cuda->attention_status() : CudaAttentionStatus{};
}

std::unique_ptr<Backend> make_cuda_backend(int device, DType compute) {
  if (compute != DType::F32 && compute != DType::BF16)
    throw MhcError(std::string("the CUDA backend computes in f32 or bf16, not ") +
                   dtype_name(compute));
  const CudaProbe probe = probe_cuda(device);
  if (!probe.usable)
    throw MhcError("CUDA device " + std::to_string(device) + " is not usable: " + probe.reason);
  return std::make_unique<CudaBackend>(device, compute, probe);
}

MHC_CUDA_ENTRY_END
}  // namespace mhc
