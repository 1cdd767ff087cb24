// Device helpers shared by the kernels of the CUDA backend: fp32 <-> storage-type
// conversion, deterministic warp/block reductions, launch-size arithmetic, and a
// bump allocator over the backend's scratch buffer.
//
// Reductions are deterministic: a fixed shuffle tree per warp, then the warp partials
// summed in warp order, so the same input and launch shape give bit-identical results.
// Block reductions require blockDim.x to be a multiple of 32 and every thread to call.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>

#include "cuda_check.h"
#include "launch.cuh"

namespace mhc::cuda {

using bf16 = __nv_bfloat16;

// ---- conversions ----------------------------------------------------------------------
__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(bf16 x) { return __bfloat162float(x); }

template <class T>
__device__ __forceinline__ T from_f32(float x);
template <>
__device__ __forceinline__ float from_f32<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ bf16 from_f32<bf16>(float x) {
  return __float2bfloat16_rn(x);
}

// ---- reductions -----------------------------------------------------------------------
template <class T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1)
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

// Sum over the block, returned to every thread. The leading barrier makes back-to-back
// calls safe (the shared partials of the previous call have been read).
template <class T>
__device__ __forceinline__ T block_sum(T v) {
  __shared__ T partial[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  T total = 0;
  for (int w = 0; w < warps; ++w) total += partial[w];
  return total;
}

__device__ __forceinline__ float block_max(float v) {
  __shared__ float partial[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  float total = partial[0];
  for (int w = 1; w < warps; ++w) total = fmaxf(total, partial[w]);
  return total;
}

// ---- launch arithmetic ----------------------------------------------------------------
inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Blocks for a grid-stride loop over `count` items (capped: the loop covers the rest).
inline unsigned grid_for(int64_t count, int block) {
  const int64_t blocks = ceil_div(count, block);
  const int64_t cap = int64_t(1) << 20;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > cap ? cap : blocks));
}

// Kernels that want more than the default 48 KiB of dynamic shared memory must opt in.
template <class Kernel>
void allow_shared_memory(Kernel kernel, size_t bytes) {
  if (bytes > 48 * 1024)
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    static_cast<int>(bytes)));
}

// ---- residual stream count ------------------------------------------------------------
// Per-token connection kernels keep one token's n×n matrices in thread-local arrays.
// with_stream_count(n, f) calls f(std::integral_constant<int, K>{}) with K = n for
// n ∈ {1, 2, 4, 8}, so loops over n unroll and small arrays stay in registers, and
// K = 0 (arrays sized for kMaxStreams, runtime n) otherwise: fully unrolling n = 16
// would cost much compile time for a rarely used size.
constexpr int kMaxStreams = 16;

template <class F>
void with_stream_count(int n, F&& f) {
  if (n < 1 || n > kMaxStreams)
    throw InternalError("cuda backend: residual.n = " + std::to_string(n) + " outside 1.." +
                        std::to_string(kMaxStreams));
  switch (n) {
    case 1: f(std::integral_constant<int, 1>{}); break;
    case 2: f(std::integral_constant<int, 2>{}); break;
    case 4: f(std::integral_constant<int, 4>{}); break;
    case 8: f(std::integral_constant<int, 8>{}); break;
    default: f(std::integral_constant<int, 0>{}); break;
  }
}

// ---- scratch ----------------------------------------------------------------------------
// Carves 256-byte aligned pieces out of a device buffer. Launchers that need scratch
// take a Workspace and document its size with a matching *_workspace_bytes() function;
// take() throws instead of overrunning when the two disagree.
class Workspace {
 public:
  Workspace(void* base, size_t bytes) : base_(static_cast<char*>(base)), bytes_(bytes) {}

  template <class T>
  T* take(size_t count) {
    const size_t offset = (used_ + kAlign - 1) / kAlign * kAlign;
    const size_t need = count * sizeof(T);
    if (offset + need > bytes_)
      throw InternalError("cuda workspace overrun: need " + std::to_string(offset + need) +
                          " bytes, have " + std::to_string(bytes_));
    used_ = offset + need;
    return reinterpret_cast<T*>(base_ + offset);
  }

  // Bytes take<T>(count) consumes at most (for *_workspace_bytes functions).
  template <class T>
  static size_t bytes_for(size_t count) {
    return (count * sizeof(T) + kAlign - 1) / kAlign * kAlign;
  }

 private:
  static constexpr size_t kAlign = 256;
  char* base_;
  size_t bytes_;
  size_t used_ = 0;
};

}  // namespace mhc::cuda
