// Token embedding (Backend::embedding_forward/backward).
//   forward:  out[t, :] = wte[tokens[t], :]                  (overwrite, T = act dtype)
//   backward: dwte[tokens[t], :] += dout[t, :]               (fp32 master gradient)
// The backward is deterministic without atomics: the (token id, position) pairs are
// sorted, then each run of equal ids is summed by one thread per channel in position
// order. Token ids must lie in [0, rows of wte).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "common.cuh"

namespace mhc::cuda {

template <class T>
void embedding_forward(T* out, const int32_t* tokens, const T* wte, int N, int C,
                       cudaStream_t stream);

size_t embedding_backward_workspace_bytes(int N);
template <class T>
void embedding_backward(float* dwte, const int32_t* tokens, const T* dout, int N, int C,
                        Workspace& ws, cudaStream_t stream);

}  // namespace mhc::cuda
