// Deterministic column sums over many rows, the building block of every parameter
// gradient that is a sum over tokens (mHC alpha/bias, HC statics and scales):
//   out[w] += Σ_r in[r·ld + w]      for w < width, r < rows      (fp32)
// Two passes with a split that depends only on `rows`: the same input always gives the
// same bits, with no atomics.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "common.cuh"

namespace mhc::cuda {

size_t column_sum_workspace_bytes(int64_t rows, int width);
void column_sum_accumulate(float* out, const float* in, int64_t rows, int width, int64_t ld,
                           Workspace& ws, cudaStream_t stream);

}  // namespace mhc::cuda
