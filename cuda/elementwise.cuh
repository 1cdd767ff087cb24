// Elementwise ops and the sum of squares (Backend: fill, copy, add, scale, sum_squares).
// T is float or bf16; arithmetic is fp32, rounded once on store. zero() is a memset in
// the backend.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "common.cuh"

namespace mhc::cuda {

// p[i] = value
template <class T>
void fill(T* p, int64_t count, float value, cudaStream_t stream);

// dst[i] = src[i] converted float <-> bf16 (same types: the backend uses cudaMemcpyAsync).
template <class Dst, class Src>
void convert(Dst* dst, const Src* src, int64_t count, cudaStream_t stream);

// out[i] = a[i] + b[i]; out may alias a or b.
template <class T>
void add(T* out, const T* a, const T* b, int64_t count, cudaStream_t stream);

// p[i] *= s
template <class T>
void scale(T* p, int64_t count, float s, cudaStream_t stream);

// Σ x² in double with a fixed two-pass reduction (deterministic for a given count);
// synchronizes the stream and returns the host value. NaN/Inf propagate.
size_t sum_squares_workspace_bytes();
template <class T>
double sum_squares(const T* x, int64_t count, Workspace& ws, cudaStream_t stream);

}  // namespace mhc::cuda
