// Entry points of the CUDA backend, callable from host C++ without CUDA headers.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "backend.h"

// The emulated build (MHC_CUDA_EMULATED, cuda/emu/) compiles the backend a second time;
// its entry points live in the inline namespace mhc::emu, so an emulated and a real
// backend can link into one program without sharing a symbol.
#ifdef MHC_CUDA_EMULATED
#define MHC_CUDA_ENTRY_BEGIN inline namespace emu {
#define MHC_CUDA_ENTRY_END }
#else
#define MHC_CUDA_ENTRY_BEGIN
#define MHC_CUDA_ENTRY_END
#endif

namespace mhc {

struct CudaProbe {
  bool usable = false;
  std::string reason;       // why not usable (no driver, no device, ...)
  std::string name;         // e.g. "NVIDIA H100 80GB HBM3"
  int sm_major = 0, sm_minor = 0;
  int64_t total_memory = 0;  // bytes
  double bf16_peak_tflops = 0;  // dense bf16 tensor-core peak, for MFU
};

MHC_CUDA_ENTRY_BEGIN

// Never throws: reports whether `device` can run the backend. Leaves `device` as the
// calling thread's current device when it exists.
CudaProbe probe_cuda(int device);

// compute: DType::F32 or DType::BF16 (master weights, gradients and optimizer state are
// always fp32). Throws MhcError when the device is unusable.
std::unique_ptr<Backend> make_cuda_backend(int device, DType compute);

// The CUDA backend's cuDNN flash attention: whether it is compiled in and enabled
// (MHC_CUDNN_ATTENTION), and what its last plan build chose or why it fell back to the
// built-in kernels. {false, ""} when `be` is not a CUDA backend.
struct CudaAttentionStatus {
  bool cudnn_enabled = false;
  std::string last;
};
CudaAttentionStatus cuda_attention_status(const Backend& be);

MHC_CUDA_ENTRY_END

}  // namespace mhc
