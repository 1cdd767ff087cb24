// Entry points of the CUDA backend, callable from host C++ without CUDA headers.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "backend.h"

namespace mhc {

struct CudaProbe {
  bool usable = false;
  std::string reason;       // why not usable (no driver, no device, ...)
  std::string name;         // e.g. "NVIDIA H100 80GB HBM3"
  int sm_major = 0, sm_minor = 0;
  int64_t total_memory = 0;  // bytes
  double bf16_peak_tflops = 0;  // dense bf16 tensor-core peak, for MFU
};

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

}  // namespace mhc
