// The CUDA emulator's host runtime: the part of the CUDA runtime API that cuda/*.cu call
// (memory, copies, memsets, streams, events, device properties, function attributes),
// on host memory. Included through include/cuda_runtime.h in the emulated build.
//
// Every function lives in namespace mhc_emu and is brought into the global namespace
// with a using-declaration, so calls in the kernel sources compile unchanged while the
// linker sees C++ names that cannot clash with libcudart's C symbols.
//
// Semantics: the device is one emulated sm_90 GPU ("mhc CUDA emulator"); device memory is
// host memory (256-byte aligned, exact size, so AddressSanitizer sees overruns); work
// runs when it is issued, so every stream is always idle and events always complete.
// Strict: cudaFree of a pointer cudaMalloc did not return, and copies or memsets whose
// device range is not inside one allocation, fail with cudaErrorInvalidValue and a line
// on stderr saying which.
#pragma once
#include <driver_types.h>

#include <cstddef>

#include "emu/scheduler.h"

namespace mhc_emu {

cudaError_t cudaMalloc(void** p, size_t bytes);
template <class T>
cudaError_t cudaMalloc(T** p, size_t bytes) {
  return cudaMalloc(reinterpret_cast<void**>(p), bytes);
}
cudaError_t cudaFree(void* p);
cudaError_t cudaMallocHost(void** p, size_t bytes);
cudaError_t cudaFreeHost(void* p);
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes);
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream = nullptr);
cudaError_t cudaMemcpy2DAsync(void* dst, size_t dpitch, const void* src, size_t spitch,
                              size_t width, size_t height, cudaMemcpyKind kind,
                              cudaStream_t stream = nullptr);
cudaError_t cudaMemset(void* p, int value, size_t bytes);
cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t stream = nullptr);

cudaError_t cudaGetDeviceCount(int* count);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaGetDevice(int* device);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device);
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device);
cudaError_t cudaDeviceSynchronize();
cudaError_t cudaDeviceGetStreamPriorityRange(int* least, int* greatest);

cudaError_t cudaStreamCreate(cudaStream_t* s);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned flags);
cudaError_t cudaStreamCreateWithPriority(cudaStream_t* s, unsigned flags, int priority);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaStreamQuery(cudaStream_t s);
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned flags = 0);
cudaError_t cudaEventCreate(cudaEvent_t* e);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned flags);
cudaError_t cudaEventDestroy(cudaEvent_t e);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s = nullptr);
cudaError_t cudaEventSynchronize(cudaEvent_t e);
cudaError_t cudaEventQuery(cudaEvent_t e);
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end);

cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
const char* cudaGetErrorString(cudaError_t err);
const char* cudaGetErrorName(cudaError_t err);

cudaError_t func_set_attribute(const void* kernel, cudaFuncAttribute attr, int value);
cudaError_t func_get_attributes(cudaFuncAttributes* attr, const void* kernel);
template <class F>
cudaError_t cudaFuncSetAttribute(F* kernel, cudaFuncAttribute attr, int value) {
  return func_set_attribute(reinterpret_cast<const void*>(kernel), attr, value);
}
template <class F>
cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* attr, F* kernel) {
  return func_get_attributes(attr, reinterpret_cast<const void*>(kernel));
}

}  // namespace mhc_emu

using mhc_emu::cudaDeviceGetAttribute;
using mhc_emu::cudaDeviceGetStreamPriorityRange;
using mhc_emu::cudaDeviceSynchronize;
using mhc_emu::cudaEventCreate;
using mhc_emu::cudaEventCreateWithFlags;
using mhc_emu::cudaEventDestroy;
using mhc_emu::cudaEventElapsedTime;
using mhc_emu::cudaEventQuery;
using mhc_emu::cudaEventRecord;
using mhc_emu::cudaEventSynchronize;
using mhc_emu::cudaFree;
using mhc_emu::cudaFreeHost;
using mhc_emu::cudaFuncGetAttributes;
using mhc_emu::cudaFuncSetAttribute;
using mhc_emu::cudaGetDevice;
using mhc_emu::cudaGetDeviceCount;
using mhc_emu::cudaGetDeviceProperties;
using mhc_emu::cudaGetErrorName;
using mhc_emu::cudaGetErrorString;
using mhc_emu::cudaGetLastError;
using mhc_emu::cudaMalloc;
using mhc_emu::cudaMallocHost;
using mhc_emu::cudaMemcpy;
using mhc_emu::cudaMemcpy2DAsync;
using mhc_emu::cudaMemcpyAsync;
using mhc_emu::cudaMemGetInfo;
using mhc_emu::cudaMemset;
using mhc_emu::cudaMemsetAsync;
using mhc_emu::cudaPeekAtLastError;
using mhc_emu::cudaSetDevice;
using mhc_emu::cudaStreamCreate;
using mhc_emu::cudaStreamCreateWithFlags;
using mhc_emu::cudaStreamCreateWithPriority;
using mhc_emu::cudaStreamDestroy;
using mhc_emu::cudaStreamQuery;
using mhc_emu::cudaStreamSynchronize;
using mhc_emu::cudaStreamWaitEvent;
