// Emulated build only (cuda/emu/): stands in for cuBLASLt, which is not emulated. The
// backend's host code creates and destroys its handles unchanged; no GEMM entry point
// exists, so the emulated build cannot call one (GEMMs run on cuda/tile_gemm.cu through
// cuda/emu/gemm_tile.cu).
#pragma once
#include "emu/runtime.h"

struct cublasLtContext;
using cublasLtHandle_t = cublasLtContext*;
enum cublasStatus_t { CUBLAS_STATUS_SUCCESS = 0, CUBLAS_STATUS_NOT_SUPPORTED = 15 };

namespace mhc_emu {
inline cublasStatus_t cublasLtCreate(cublasLtHandle_t* h) {
  *h = nullptr;
  return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasLtDestroy(cublasLtHandle_t) { return CUBLAS_STATUS_SUCCESS; }
inline const char* cublasGetStatusString(cublasStatus_t s) {
  return s == CUBLAS_STATUS_SUCCESS ? "success" : "not supported (CUDA emulator)";
}
}  // namespace mhc_emu
using mhc_emu::cublasGetStatusString;
using mhc_emu::cublasLtCreate;
using mhc_emu::cublasLtDestroy;
