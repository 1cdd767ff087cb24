// One error-check macro family for the GPU libraries. Each macro evaluates a call once
// and, when it fails, throws mhc::CudaError (an MhcError: the command line prints the
// one-line message and exits non-zero) naming the library, the failing call text, the
// library's error string, and the file and line.
//
//   CUDA_CHECK(cudaMalloc(&p, bytes));      cudaError_t
//   CUDA_CHECK_LAUNCH();                    cudaGetLastError() after a kernel launch
//   CUBLAS_CHECK(cublasLtMatmul(...));      cublasStatus_t (cuBLAS and cuBLASLt)
//   CUDNN_CHECK(cudnnCreate(&h));           cudnnStatus_t
//   NCCL_CHECK(ncclAllReduce(...));         ncclResult_t
//
// CUDNN_CHECK and NCCL_CHECK name cudnn/nccl functions only inside their expansion, so
// they compile exactly where cudnn.h / nccl.h are included and cost nothing elsewhere.
#pragma once
#include <cuda_runtime.h>

#include <string>

#include "error.h"

namespace mhc {

class CudaError : public MhcError {
 public:
  using MhcError::MhcError;
};

namespace detail {

[[noreturn]] inline void throw_gpu_error(const char* library, const char* call, const char* what,
                                         const char* file, int line) {
  throw CudaError(std::string(library) + " error: " + (what ? what : "unknown") + " in `" + call +
                  "` at " + file + ":" + std::to_string(line));
}

}  // namespace detail
}  // namespace mhc

#define CUDA_CHECK(call)                                                                  \
  do {                                                                                    \
    const cudaError_t mhc_err_ = (call);                                                  \
    if (mhc_err_ != cudaSuccess)                                                          \
      ::mhc::detail::throw_gpu_error("CUDA", #call, cudaGetErrorString(mhc_err_), __FILE__, \
                                     __LINE__);                                           \
  } while (0)

#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())

#define CUBLAS_CHECK(call)                                                                   \
  do {                                                                                       \
    const cublasStatus_t mhc_st_ = (call);                                                   \
    if (mhc_st_ != CUBLAS_STATUS_SUCCESS)                                                    \
      ::mhc::detail::throw_gpu_error("cuBLAS", #call, cublasGetStatusString(mhc_st_), __FILE__, \
                                     __LINE__);                                              \
  } while (0)

#define CUDNN_CHECK(call)                                                                  \
  do {                                                                                     \
    const cudnnStatus_t mhc_st_ = (call);                                                  \
    if (mhc_st_ != CUDNN_STATUS_SUCCESS)                                                   \
      ::mhc::detail::throw_gpu_error("cuDNN", #call, cudnnGetErrorString(mhc_st_), __FILE__, \
                                     __LINE__);                                            \
  } while (0)

#define NCCL_CHECK(call)                                                                  \
  do {                                                                                    \
    const ncclResult_t mhc_st_ = (call);                                                  \
    if (mhc_st_ != ncclSuccess)                                                           \
      ::mhc::detail::throw_gpu_error("NCCL", #call, ncclGetErrorString(mhc_st_), __FILE__, \
                                     __LINE__);                                           \
  } while (0)
