// The CUDA emulator's device side: what a kernel source needs to compile as host C++ and
// run, thread by thread, on the CPU. The emulated build force-includes this header
// (g++ -include cuda/emu/device.h) into every cuda/*.cu it compiles, so the kernel
// sources themselves are not edited for emulation.
//
// Built-ins mapped here (semantics documented at each):
//   threadIdx, blockIdx, blockDim, gridDim, warpSize     per-fiber / per-block state
//   __syncthreads()                                       block barrier (strict)
//   __syncwarp, __shfl_sync, __shfl_up_sync, __shfl_down_sync, __shfl_xor_sync,
//   __ballot_sync, __any_sync, __all_sync, __activemask, __reduce_{add,min,max}_sync
//                                                         warp operations (strict masks)
//   __ldg, atomicAdd/Max/Min/Exch/CAS, __threadfence*     plain host operations
//   min/max (mixed integer widths), rsqrtf, __expf, __logf, __fdividef, __saturatef, isnan
//   __shared__                                            one copy per running block
//   MHC_DYNAMIC_SHARED(T, name)                           extern __shared__ T name[]
//   __launch_bounds__, __restrict__                       accepted, ignored
//   bf16 / fp16                                           cuda_bf16.h's host paths
// The host runtime API (cudaMalloc, streams, events, ...) is declared in runtime.h.
//
// Name isolation: the real CUDA runtime header is never seen here (its include guard is
// pre-defined), runtime functions live in namespace mhc_emu (so nothing can resolve to
// libcudart's C symbols), and the backend's namespace mhc::cuda is made a member of
// the inline namespace mhc::emu below, so an emulated object and an nvcc-built object of
// the same source never define the same symbol.
#pragma once

#ifdef __CUDACC__
#error "cuda/emu/device.h is for the emulated (host compiler) build only"
#endif

// Keep the real runtime API (extern "C" cudaMalloc, ...) out: vector_functions.h,
// pulled in by cuda_bf16.h, includes it.
#define __CUDA_RUNTIME_API_H__
#define __CUDA_RUNTIME_H__

#include <driver_types.h>
#include <library_types.h>
#include <vector_types.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "emu/scheduler.h"

// mhc::cuda (every kernel source's namespace) becomes mhc::emu::cuda: a later
// `namespace mhc::cuda {` extends the inline namespace's member.
namespace mhc {
inline namespace emu {
namespace cuda {}
}  // namespace emu
}  // namespace mhc

#define MHC_CUDA_EMULATED_DEVICE 1

// ---- qualifiers -------------------------------------------------------------------------
// __global__, __device__, __host__, __forceinline__, __align__ come from the real
// crt/host_defines.h (empty or GCC attributes for a host compiler). __shared__ there is
// empty, which would give every thread its own copy: here a function-scope __shared__
// variable is static and thread_local. All threads of a block run as fibers on one OS
// thread, and one OS thread runs one block at a time, so "static thread_local" is exactly
// one copy per running block. Contents persist between blocks, as on a GPU they are
// undefined at block start.
#undef __shared__
#define __shared__ static thread_local
#ifndef __launch_bounds__
#define __launch_bounds__(...)
#endif
#ifndef __restrict__
#define __restrict__ __restrict
#endif

// ---- indices ----------------------------------------------------------------------------
#define threadIdx (::mhc_emu::detail::current_thread().idx)
#define blockIdx (::mhc_emu::detail::current_block().idx)
#define blockDim (::mhc_emu::detail::current_block().dim)
#define gridDim (::mhc_emu::detail::current_block().grid)
#ifndef warpSize
#define warpSize 32
#endif

// ---- barriers and warp operations ------------------------------------------------------
// Call sites (file:line) travel with each call so that strictness errors can name them.
#define __syncthreads() ::mhc_emu::detail::syncthreads(__FILE__, __LINE__)
#define __syncwarp(...) ::mhc_emu::detail::syncwarp(__FILE__, __LINE__ __VA_OPT__(, ) __VA_ARGS__)
#define __shfl_sync(...) ::mhc_emu::shfl(__FILE__, __LINE__, ::mhc_emu::ShflMode::Idx, __VA_ARGS__)
#define __shfl_up_sync(...) ::mhc_emu::shfl(__FILE__, __LINE__, ::mhc_emu::ShflMode::Up, __VA_ARGS__)
#define __shfl_down_sync(...) \
  ::mhc_emu::shfl(__FILE__, __LINE__, ::mhc_emu::ShflMode::Down, __VA_ARGS__)
#define __shfl_xor_sync(...) ::mhc_emu::shfl(__FILE__, __LINE__, ::mhc_emu::ShflMode::Xor, __VA_ARGS__)
#define __ballot_sync(mask, pred) ::mhc_emu::ballot(__FILE__, __LINE__, mask, pred)
#define __any_sync(mask, pred) (::mhc_emu::ballot(__FILE__, __LINE__, mask, pred) != 0u)
#define __all_sync(mask, pred) \
  (::mhc_emu::ballot(__FILE__, __LINE__, mask, pred) == static_cast<unsigned>(mask))
#define __reduce_add_sync(mask, v) ::mhc_emu::warp_reduce(__FILE__, __LINE__, 0, mask, v)
#define __reduce_min_sync(mask, v) ::mhc_emu::warp_reduce(__FILE__, __LINE__, 1, mask, v)
#define __reduce_max_sync(mask, v) ::mhc_emu::warp_reduce(__FILE__, __LINE__, 2, mask, v)
#define __activemask() ::mhc_emu::detail::live_lanes()

namespace mhc_emu {

enum class ShflMode { Idx, Up, Down, Xor };

// Exchanges one value per lane among the lanes named in `mask` (all of which must call
// the same operation with the same mask, see scheduler.h) and returns the value the CUDA
// rule for `mode` picks for this lane: Idx reads lane (segment base + arg mod width), Up
// lane − arg and Down lane + arg unless that leaves this lane's width-segment (then the
// own value), Xor lane ^ arg unless that is in a later segment (then the own value).
template <class T>
T shfl(const char* file, int line, ShflMode mode, unsigned mask, T value, int arg,
       int width = 32) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value,
                "emulated shuffles move values of at most 8 bytes");
  uint64_t bits = 0;
  std::memcpy(&bits, &value, sizeof(T));
  const int lane = detail::lane_id();
  if (width < 1 || width > 32 || (width & (width - 1)) != 0)
    detail::bad_shuffle_width(file, line, width);
  const int base = lane & ~(width - 1);
  int src = lane;
  switch (mode) {
    case ShflMode::Idx: src = base + (arg & (width - 1)); break;
    case ShflMode::Up: src = (lane - base) >= arg ? lane - arg : lane; break;
    case ShflMode::Down: src = (lane - base) + arg < width ? lane + arg : lane; break;
    case ShflMode::Xor: src = (lane ^ arg) < base + width ? (lane ^ arg) : lane; break;
  }
  const uint64_t got = detail::warp_exchange(file, line, mask, bits, src);
  T out;
  std::memcpy(&out, &got, sizeof(T));
  return out;
}

// __ballot_sync: bit i set when lane i of `mask` passed a true predicate.
inline unsigned ballot(const char* file, int line, unsigned mask, bool pred) {
  uint64_t all[32] = {};
  detail::warp_gather(file, line, mask, pred ? 1u : 0u, all);
  unsigned bits = 0;
  for (int i = 0; i < 32; ++i)
    if (((mask >> i) & 1u) && all[i]) bits |= 1u << i;
  return bits;
}

// __reduce_*_sync: op 0 add, 1 min, 2 max over the lanes of `mask` (32-bit integers).
template <class T>
T warp_reduce(const char* file, int line, int op, unsigned mask, T v) {
  static_assert(std::is_integral<T>::value && sizeof(T) == 4, "__reduce_*_sync takes 32-bit ints");
  uint64_t all[32] = {};
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  detail::warp_gather(file, line, mask, bits, all);
  T r = 0;
  bool first = true;
  for (int i = 0; i < 32; ++i) {
    if (!((mask >> i) & 1u)) continue;
    T x;
    std::memcpy(&x, &all[i], sizeof(T));
    r = first ? x : op == 0 ? T(r + x) : op == 1 ? (x < r ? x : r) : (x > r ? x : r);
    first = false;
  }
  return r;
}

}  // namespace mhc_emu

// ---- loads, atomics, fences -------------------------------------------------------------
template <class T>
inline T __ldg(const T* p) {
  return *p;
}
// Threads of a block are fibers on one OS thread and blocks run one at a time per OS
// thread; atomics still use real atomic instructions, so blocks on other OS threads
// (MHC_EMU_WORKERS) see them too.
template <class T>
inline T atomicAdd(T* p, T v) {
  if constexpr (std::is_integral<T>::value) {
    return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST);
  } else {
    using Bits = std::conditional_t<sizeof(T) == 8, uint64_t, uint32_t>;
    Bits* q = reinterpret_cast<Bits*>(p);
    Bits expected = __atomic_load_n(q, __ATOMIC_SEQ_CST), desired;
    T before, next;
    do {
      std::memcpy(&before, &expected, sizeof(T));
      next = before + v;
      std::memcpy(&desired, &next, sizeof(T));
    } while (!__atomic_compare_exchange_n(q, &expected, desired, false, __ATOMIC_SEQ_CST,
                                          __ATOMIC_SEQ_CST));
    return before;
  }
}
template <class T>
inline T atomicExch(T* p, T v) {
  return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST);
}
template <class T>
inline T atomicCAS(T* p, T compare, T v) {
  __atomic_compare_exchange_n(p, &compare, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
  return compare;
}
template <class T>
inline T atomicMax(T* p, T v) {
  return __atomic_fetch_max(p, v, __ATOMIC_SEQ_CST);
}
template <class T>
inline T atomicMin(T* p, T v) {
  return __atomic_fetch_min(p, v, __ATOMIC_SEQ_CST);
}
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

// ---- math ---------------------------------------------------------------------------------
// CUDA's min/max take mixed integer widths (int with int64_t) through its overload set;
// here one template picks the common type, as CUDA's overloads do for these pairs.
template <class A, class B, class = std::enable_if_t<std::is_arithmetic<A>::value && std::is_arithmetic<B>::value>>
inline std::common_type_t<A, B> min(A a, B b) {
  using C = std::common_type_t<A, B>;
  return static_cast<C>(b) < static_cast<C>(a) ? static_cast<C>(b) : static_cast<C>(a);
}
template <class A, class B, class = std::enable_if_t<std::is_arithmetic<A>::value && std::is_arithmetic<B>::value>>
inline std::common_type_t<A, B> max(A a, B b) {
  using C = std::common_type_t<A, B>;
  return static_cast<C>(a) < static_cast<C>(b) ? static_cast<C>(b) : static_cast<C>(a);
}
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __saturatef(float x) { return x < 0.f ? 0.f : (x > 1.f ? 1.f : x); }
using std::isfinite;
using std::isinf;
using std::isnan;

// ---- dynamic shared memory --------------------------------------------------------------
// `extern __shared__ T name[]` cannot be expressed by a macro on __shared__ alone; the
// kernels write MHC_DYNAMIC_SHARED(T, name) (cuda/launch.cuh), which is the extern
// declaration under nvcc and this per-block buffer (the launch's dynamic size) here.
#define MHC_DYNAMIC_SHARED(type, name) \
  type* name = static_cast<type*>(::mhc_emu::detail::dynamic_shared_memory())
