// MLP activations (Backend::swiglu_*/gelu_*), all tensors in the activation type T.
//   SwiGLU: gate_up [N,2H] = [gate | up] per row; out [N,H] = silu(gate)·up (overwrite);
//           backward overwrites dgate_up [N,2H].
//   GELU (tanh approximation): out = 0.5·x·(1 + tanh(√(2/π)(x + 0.044715x³)));
//           backward overwrites dx.
#pragma once
#include <cuda_runtime.h>

#include "common.cuh"

namespace mhc::cuda {

template <class T>
void swiglu_forward(T* out, const T* gate_up, int N, int H, cudaStream_t stream);
template <class T>
void swiglu_backward(T* dgate_up, const T* dout, const T* gate_up, int N, int H,
                     cudaStream_t stream);
template <class T>
void gelu_forward(T* out, const T* x, int N, int H, cudaStream_t stream);
template <class T>
void gelu_backward(T* dx, const T* dout, const T* x, int N, int H, cudaStream_t stream);

}  // namespace mhc::cuda
