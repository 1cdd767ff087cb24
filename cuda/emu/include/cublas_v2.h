// Emulated build only (cuda/emu/): stands in for cuBLAS, which is not emulated (see
// cublasLt.h here): handles only.
#pragma once
#include "cublasLt.h"

struct cublasContext;
using cublasHandle_t = cublasContext*;

namespace mhc_emu {
inline cublasStatus_t cublasCreate(cublasHandle_t* h) {
  *h = nullptr;
  return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasDestroy(cublasHandle_t) { return CUBLAS_STATUS_SUCCESS; }
inline cublasStatus_t cublasSetStream(cublasHandle_t, cudaStream_t) { return CUBLAS_STATUS_SUCCESS; }
}  // namespace mhc_emu
using mhc_emu::cublasCreate;
using mhc_emu::cublasDestroy;
using mhc_emu::cublasSetStream;
