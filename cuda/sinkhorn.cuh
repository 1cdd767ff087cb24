// Sinkhorn–Knopp over `count` independent n×n logit matrices (Backend::sinkhorn_*;
// residuals.md). H, Z, dZ, dH are fp32 [count, n, n] row-major, all overwritten.
// One thread per matrix running core/mhc_math.h's sinkhorn_forward / sinkhorn_backward
// (the exact same per-matrix code as the CPU backend). n ≤ 16.
#pragma once
#include <cuda_runtime.h>

#include "common.cuh"

namespace mhc::cuda {

void sinkhorn_forward(float* H, const float* Z, int count, int n, int iters, cudaStream_t stream);

// Scratch: the 2·n·iters column/row sums of every matrix.
size_t sinkhorn_backward_workspace_bytes(int count, int n, int iters);
void sinkhorn_backward(float* dZ, const float* dH, const float* Z, int count, int n, int iters,
                       Workspace& ws, cudaStream_t stream);

}  // namespace mhc::cuda
