// The CUDA emulator's host runtime (see runtime.h): allocations with a range table,
// copies, memsets, streams and events as tokens, one emulated sm_90 device.
#include "emu/runtime.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>

namespace mhc_emu {
namespace {

constexpr size_t kTotalMemory = size_t(80) << 30;  // reported, not reserved

// Live allocations (start -> bytes): device ranges are checked against it.
struct Memory {
  std::mutex mu;
  std::map<const char*, size_t> blocks;
  size_t live = 0;
};
Memory& memory() {
  static Memory m;
  return m;
}

thread_local cudaError_t last_error = cudaSuccess;

cudaError_t fail(cudaError_t err, const std::string& why) {
  std::fprintf(stderr, "CUDA emulator: %s\n", why.c_str());
  last_error = err;
  return err;
}

// Whether [p, p + bytes) lies inside one live allocation.
bool inside_allocation(const void* p, size_t bytes) {
  Memory& m = memory();
  std::lock_guard<std::mutex> lock(m.mu);
  const char* c = static_cast<const char*>(p);
  auto it = m.blocks.upper_bound(c);
  if (it == m.blocks.begin()) return false;
  --it;
  return c >= it->first && c + bytes <= it->first + it->second;
}

cudaError_t check_range(const char* call, const void* p, size_t bytes) {
  if (bytes == 0 || inside_allocation(p, bytes)) return cudaSuccess;
  char b[64];
  std::snprintf(b, sizeof(b), "%p", p);
  return fail(cudaErrorInvalidValue, std::string(call) + ": device range [" + b + ", +" +
                                         std::to_string(bytes) +
                                         " bytes) is not inside one cudaMalloc allocation");
}

cudaError_t check_copy(const char* call, void* dst, const void* src, size_t bytes,
                       cudaMemcpyKind kind) {
  const bool dst_dev = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
  const bool src_dev = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
  if (dst_dev) {
    const cudaError_t e = check_range(call, dst, bytes);
    if (e != cudaSuccess) return e;
  }
  if (src_dev) return check_range(call, src, bytes);
  return cudaSuccess;
}

// Streams and events are distinct non-null tokens; work has completed when issued.
struct Token {
  int kind;
};

}  // namespace

cudaError_t cudaMalloc(void** p, size_t bytes) {
  if (!p) return fail(cudaErrorInvalidValue, "cudaMalloc: null result pointer");
  *p = nullptr;
  if (bytes == 0) return cudaSuccess;
  Memory& m = memory();
  {
    std::lock_guard<std::mutex> lock(m.mu);
    if (m.live + bytes > kTotalMemory) {
      last_error = cudaErrorMemoryAllocation;
      return cudaErrorMemoryAllocation;
    }
  }
  void* q = nullptr;
  if (posix_memalign(&q, 256, bytes) != 0) {
    last_error = cudaErrorMemoryAllocation;
    return cudaErrorMemoryAllocation;
  }
  std::lock_guard<std::mutex> lock(m.mu);
  m.blocks[static_cast<const char*>(q)] = bytes;
  m.live += bytes;
  *p = q;
  return cudaSuccess;
}

cudaError_t cudaFree(void* p) {
  if (!p) return cudaSuccess;
  Memory& m = memory();
  {
    std::lock_guard<std::mutex> lock(m.mu);
    auto it = m.blocks.find(static_cast<const char*>(p));
    if (it == m.blocks.end()) {
      char b[32];
      std::snprintf(b, sizeof(b), "%p", p);
      last_error = cudaErrorInvalidValue;
      std::fprintf(stderr, "CUDA emulator: cudaFree(%s): not a pointer cudaMalloc returned\n", b);
      return cudaErrorInvalidValue;
    }
    m.live -= it->second;
    m.blocks.erase(it);
  }
  std::free(p);
  return cudaSuccess;
}

cudaError_t cudaMallocHost(void** p, size_t bytes) {
  *p = std::malloc(bytes ? bytes : 1);
  return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}
cudaError_t cudaFreeHost(void* p) {
  std::free(p);
  return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  Memory& m = memory();
  std::lock_guard<std::mutex> lock(m.mu);
  if (free_bytes) *free_bytes = kTotalMemory - m.live;
  if (total_bytes) *total_bytes = kTotalMemory;
  return cudaSuccess;
}

cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  const cudaError_t e = check_copy("cudaMemcpy", dst, src, bytes, kind);
  if (e != cudaSuccess) return e;
  if (bytes) std::memmove(dst, src, bytes);
  return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t) {
  const cudaError_t e = check_copy("cudaMemcpyAsync", dst, src, bytes, kind);
  if (e != cudaSuccess) return e;
  if (bytes) std::memmove(dst, src, bytes);
  return cudaSuccess;
}

cudaError_t cudaMemcpy2DAsync(void* dst, size_t dpitch, const void* src, size_t spitch,
                              size_t width, size_t height, cudaMemcpyKind kind, cudaStream_t) {
  if (width > dpitch || width > spitch)
    return fail(cudaErrorInvalidValue, "cudaMemcpy2DAsync: width above a pitch");
  for (size_t r = 0; r < height; ++r) {
    char* d = static_cast<char*>(dst) + r * dpitch;
    const char* s = static_cast<const char*>(src) + r * spitch;
    const cudaError_t e = check_copy("cudaMemcpy2DAsync", d, s, width, kind);
    if (e != cudaSuccess) return e;
    std::memmove(d, s, width);
  }
  return cudaSuccess;
}

cudaError_t cudaMemset(void* p, int value, size_t bytes) {
  const cudaError_t e = check_range("cudaMemset", p, bytes);
  if (e != cudaSuccess) return e;
  if (bytes) std::memset(p, value, bytes);
  return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t) {
  const cudaError_t e = check_range("cudaMemsetAsync", p, bytes);
  if (e != cudaSuccess) return e;
  if (bytes) std::memset(p, value, bytes);
  return cudaSuccess;
}

cudaError_t cudaGetDeviceCount(int* count) {
  *count = 1;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) {
  return device == 0 ? cudaSuccess : fail(cudaErrorInvalidDevice, "cudaSetDevice: only device 0 is emulated");
}
cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  if (device != 0) return fail(cudaErrorInvalidDevice, "cudaGetDeviceProperties: only device 0 is emulated");
  std::memset(prop, 0, sizeof(*prop));
  std::snprintf(prop->name, sizeof(prop->name), "mhc CUDA emulator (sm_90)");
  prop->totalGlobalMem = kTotalMemory;
  prop->sharedMemPerBlock = kDefaultDynamicSmem;
  prop->sharedMemPerBlockOptin = kMaxDynamicSmem;
  prop->warpSize = 32;
  prop->maxThreadsPerBlock = 1024;
  prop->maxThreadsDim[0] = 1024;
  prop->maxThreadsDim[1] = 1024;
  prop->maxThreadsDim[2] = 64;
  prop->maxGridSize[0] = 2147483647;
  prop->maxGridSize[1] = 65535;
  prop->maxGridSize[2] = 65535;
  prop->major = 9;
  prop->minor = 0;
  prop->multiProcessorCount = 132;
  return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  if (device != 0) return fail(cudaErrorInvalidDevice, "cudaDeviceGetAttribute: only device 0 is emulated");
  switch (attr) {
    case cudaDevAttrClockRate: *value = 1980000; return cudaSuccess;  // kHz, H100 SXM boost
    case cudaDevAttrMultiProcessorCount: *value = 132; return cudaSuccess;
    case cudaDevAttrMaxThreadsPerBlock: *value = 1024; return cudaSuccess;
    case cudaDevAttrWarpSize: *value = 32; return cudaSuccess;
    case cudaDevAttrComputeCapabilityMajor: *value = 9; return cudaSuccess;
    case cudaDevAttrComputeCapabilityMinor: *value = 0; return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = static_cast<int>(kMaxDynamicSmem); return cudaSuccess;
    default:
      return fail(cudaErrorInvalidValue,
                  "cudaDeviceGetAttribute: attribute " + std::to_string(int(attr)) + " is not emulated");
  }
}

cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
cudaError_t cudaDeviceGetStreamPriorityRange(int* least, int* greatest) {
  if (least) *least = 0;
  if (greatest) *greatest = -5;
  return cudaSuccess;
}

cudaError_t cudaStreamCreate(cudaStream_t* s) {
  *s = reinterpret_cast<cudaStream_t>(new Token{1});
  return cudaSuccess;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned) { return cudaStreamCreate(s); }
cudaError_t cudaStreamCreateWithPriority(cudaStream_t* s, unsigned, int) { return cudaStreamCreate(s); }
cudaError_t cudaStreamDestroy(cudaStream_t s) {
  delete reinterpret_cast<Token*>(s);
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaStreamQuery(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaStreamWaitEvent(cudaStream_t, cudaEvent_t, unsigned) { return cudaSuccess; }
cudaError_t cudaEventCreate(cudaEvent_t* e) {
  *e = reinterpret_cast<cudaEvent_t>(new Token{2});
  return cudaSuccess;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned) { return cudaEventCreate(e); }
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  delete reinterpret_cast<Token*>(e);
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t, cudaStream_t) { return cudaSuccess; }
cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
cudaError_t cudaEventQuery(cudaEvent_t) { return cudaSuccess; }
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t, cudaEvent_t) {
  *ms = 0.f;  // no timing in emulation
  return cudaSuccess;
}

cudaError_t cudaGetLastError() {
  const cudaError_t e = last_error;
  last_error = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError() { return last_error; }

const char* cudaGetErrorString(cudaError_t err) {
  switch (err) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorNotReady: return "device not ready";
    default: return "unknown error (CUDA emulator)";
  }
}
const char* cudaGetErrorName(cudaError_t err) {
  switch (err) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorNotReady: return "cudaErrorNotReady";
    default: return "cudaErrorUnknown";
  }
}

cudaError_t func_set_attribute(const void* kernel, cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize) return cudaSuccess;
  if (value < 0 || static_cast<size_t>(value) > kMaxDynamicSmem)
    return fail(cudaErrorInvalidValue,
                "cudaFuncSetAttribute(cudaFuncAttributeMaxDynamicSharedMemorySize, " +
                    std::to_string(value) + "): sm_90 allows at most " +
                    std::to_string(kMaxDynamicSmem) + " bytes");
  set_max_dynamic_smem(kernel, static_cast<size_t>(value));
  return cudaSuccess;
}

cudaError_t func_get_attributes(cudaFuncAttributes* attr, const void*) {
  std::memset(attr, 0, sizeof(*attr));
  attr->maxThreadsPerBlock = 1024;
  attr->maxDynamicSharedSizeBytes = static_cast<int>(kDefaultDynamicSmem);
  attr->ptxVersion = 90;
  attr->binaryVersion = 90;
  return cudaSuccess;
}

}  // namespace mhc_emu
