// 16-byte vector loads and stores of activations as fp32 registers: W = 8 bf16 or 4 fp32
// per access (one LDG.128 / STG.128), or W = 1 (scalar) when a row length or a pointer
// does not allow the wide form. Conversions round to nearest even, like from_f32().
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <initializer_list>
#include <type_traits>

#include "common.cuh"

namespace mhc::cuda {

template <class T>
constexpr int kVecWidth = 16 / static_cast<int>(sizeof(T));

template <class T, int W>
struct VecIO;

template <>
struct VecIO<bf16, 8> {
  static __device__ __forceinline__ void load(const bf16* p, float (&v)[8]) {
    const uint4 raw = *reinterpret_cast<const uint4*>(p);
    const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const float2 f = __bfloat1622float2(h[k]);
      v[2 * k] = f.x;
      v[2 * k + 1] = f.y;
    }
  }
  static __device__ __forceinline__ void store(bf16* p, const float (&v)[8]) {
    uint4 raw;
    __nv_bfloat162* h = reinterpret_cast<__nv_bfloat162*>(&raw);
#pragma unroll
    for (int k = 0; k < 4; ++k) h[k] = __floats2bfloat162_rn(v[2 * k], v[2 * k + 1]);
    *reinterpret_cast<uint4*>(p) = raw;
  }
};

template <>
struct VecIO<float, 4> {
  static __device__ __forceinline__ void load(const float* p, float (&v)[4]) {
    const float4 f = *reinterpret_cast<const float4*>(p);
    v[0] = f.x;
    v[1] = f.y;
    v[2] = f.z;
    v[3] = f.w;
  }
  static __device__ __forceinline__ void store(float* p, const float (&v)[4]) {
    *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
  }
};

template <class T>
struct VecIO<T, 1> {
  static __device__ __forceinline__ void load(const T* p, float (&v)[1]) { v[0] = to_f32(*p); }
  static __device__ __forceinline__ void store(T* p, const float (&v)[1]) { *p = from_f32<T>(v[0]); }
};

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// Calls f(std::integral_constant<int, W>{}) with the widest W every pointer and the row
// length `C` allow (rows start at multiples of C elements).
template <class T, class F>
void with_vec_width(int C, std::initializer_list<const void*> pointers, F&& f) {
  bool wide = C % kVecWidth<T> == 0;
  for (const void* p : pointers) wide = wide && (p == nullptr || aligned16(p));
  if (wide)
    f(std::integral_constant<int, kVecWidth<T>>{});
  else
    f(std::integral_constant<int, 1>{});
}

// Threads per block for `vectors` vector slots per token row: whole warps, ≤ 256.
inline int row_block(int vectors) {
  const int warps = (vectors + 31) / 32;
  return 32 * (warps < 1 ? 1 : (warps > 8 ? 8 : warps));
}

}  // namespace mhc::cuda
