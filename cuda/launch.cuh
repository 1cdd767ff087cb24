// The one way cuda/ launches a kernel:
//   launch<kernel<T>>(grid, block, dynamic_smem_bytes, stream, args...);
// is kernel<T><<<grid, block, dynamic_smem_bytes, stream>>>(args...) under nvcc, and the
// CUDA emulator's launch (cuda/emu/scheduler.h) in the emulated build, where a refused
// launch or a kernel fault becomes a CudaError naming the kernel. Kernel sources are the
// same in both builds.
//
// MHC_DYNAMIC_SHARED(T, name) declares a kernel's dynamic shared memory (extern
// __shared__ T name[] under nvcc; the emulator's per-block buffer otherwise).
#pragma once
#include <cuda_runtime.h>

#include <cstddef>

#include "cuda_check.h"

namespace mhc::cuda {

template <auto Kernel, class... Args>
void launch(dim3 grid, dim3 block, size_t smem, cudaStream_t stream, const Args&... args) {
#ifdef MHC_CUDA_EMULATED
  (void)stream;  // emulated work runs when it is issued (cuda/emu/runtime.h)
  try {
    mhc_emu::launch<Kernel>(grid, block, smem, args...);
  } catch (const mhc_emu::KernelError& e) {
    throw CudaError(e.what());
  }
#else
  Kernel<<<grid, block, smem, stream>>>(args...);
#endif
}

}  // namespace mhc::cuda

#ifndef MHC_CUDA_EMULATED
#define MHC_DYNAMIC_SHARED(type, name) extern __shared__ type name[]
#endif
