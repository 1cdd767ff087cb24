// Fused causal flash attention through cuDNN's graph (backend) API, bf16, forward and
// backward, on the same layouts as cuda/attention.cuh:
//   qkv [B,T,3C] = [q | k | v] (head h in columns h·hd .. (h+1)·hd of each third),
//   out [B,T,C], lse [B,n_head,T] fp32 = log-sum-exp of each row of scale·q·kᵀ
//   (natural log, scale = 1/sqrt(hd), causal: key j ≤ query t), dqkv [B,T,3C].
// The graphs are the ones cuDNN's runtime-fusion flash-attention engines recognise (the
// composite pattern the cuDNN frontend lowers sdpa / sdpa_backward to):
//   forward:  S = Q·Kᵀ → ×scale → causal select(row ≥ col, S, lowest) → M = max_row S,
//             E = exp(S − M), Z = Σ_row E, lse = M + log Z, P = E / Z (bf16) → O = P·V
//   backward: Δ = Σ_d dO⊙O (fp32, in the workspace); S as above; P = exp(S − lse);
//             dV = Pᵀ·dO; dS = P ⊙ (dO·Vᵀ − Δ) × scale; dK = dSᵀ·Q; dQ = dS·K
// One execution plan per (direction, B, T, n_head, hd), built at the first call and
// cached; a shape cuDNN cannot run (any cuDNN error while building, or at the plan's
// first execution) is remembered, reported once per (direction, n_head, hd) on stderr,
// and answered with `false` so the caller runs the built-in kernels (cuda/attention.cuh
// stays the fallback and the test oracle). Tensors must be 16-byte aligned, else the
// fallback runs.
//
// Determinism: the default backward graph writes dQ directly (the frontend's
// "deterministic / dP-workspace" form); if no engine accepts it, the form that
// accumulates dQ in an fp32 workspace with atomics is tried next. The environment
// variable MHC_CUDNN_ATTENTION selects: "deterministic" (default), "fast" (accumulating
// form first) or "off" (never use cuDNN). Built without cuDNN (MHC_WITH_CUDNN undefined)
// every call returns false.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include "common.cuh"

namespace mhc::cuda {

// Device scratch of at least `bytes`, valid until the next call (the backend's scratch).
using ScratchFn = std::function<void*(size_t bytes)>;

class CudnnAttention {
 public:
  CudnnAttention();
  ~CudnnAttention();
  CudnnAttention(const CudnnAttention&) = delete;
  CudnnAttention& operator=(const CudnnAttention&) = delete;

  // Compiled with cuDNN and not switched off by MHC_CUDNN_ATTENTION=off.
  bool enabled() const;
  // The plan the last call ran, or why it fell back (for logs and tests).
  std::string describe() const;

  // Each returns true when cuDNN ran the op, false when the caller must use the
  // fallback (nothing was written). Throws CudaError only when a plan that has run
  // before fails.
  bool forward(bf16* out, float* lse, const bf16* qkv, int B, int T, int n_head, int head_dim,
               cudaStream_t stream, const ScratchFn& scratch);
  bool backward(bf16* dqkv, const bf16* dout, const bf16* qkv, const bf16* out, const float* lse,
                int B, int T, int n_head, int head_dim, cudaStream_t stream,
                const ScratchFn& scratch);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mhc::cuda
