// Causal multi-head self-attention (Backend::attention_forward/backward) on
// qkv [B,T,3C] = [q | k | v], head h in columns h·hd .. (h+1)·hd of each third.
//   forward:  out [B,T,C] (act) overwrite; lse [B,n_head,T] (fp32) overwrite, the
//             log-sum-exp of each scaled score row (scale = 1/sqrt(hd)).
//   backward: dqkv [B,T,3C] (act) overwrite, recomputing P = exp(scale·q·k − lse):
//             D_t = dO_t·O_t, dS = P ⊙ (dO Vᵀ − D)·scale,
//             dQ = dS K, dK = dSᵀ Q, dV = Pᵀ dO.
// Any T; head_dim ≤ 256. fp32 accumulation throughout; deterministic (no atomics).
#pragma once
#include <cuda_runtime.h>

#include "common.cuh"

namespace mhc::cuda {

constexpr int kAttentionMaxHeadDim = 256;

template <class T>
void attention_forward(T* out, float* lse, const T* qkv, int B, int T_, int n_head, int head_dim,
                       cudaStream_t stream);

size_t attention_backward_workspace_bytes(int B, int T_, int n_head);
template <class T>
void attention_backward(T* dqkv, const T* dout, const T* qkv, const T* out, const float* lse,
                        int B, int T_, int n_head, int head_dim, Workspace& ws,
                        cudaStream_t stream);

}  // namespace mhc::cuda
