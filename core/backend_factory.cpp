#include "backend_factory.h"

#include <unistd.h>

#include "cpu/cpu_backend.h"
#include "error.h"
#ifdef MHC_WITH_CUDA
#include "cuda/cuda_backend.h"
#endif

namespace mhc {

bool built_with_cuda() {
#ifdef MHC_WITH_CUDA
  return true;
#else
  return false;
#endif
}

BackendChoice make_backend(const Config::Train& train, int local_rank) {
  BackendChoice out;
  std::string why_not_cuda = "this binary was built without CUDA";
#ifdef MHC_WITH_CUDA
#ifdef MHC_CUDA_EMULATED
  // mhc-emu (-DMHC_EMULATED_BINARY=ON): the CUDA backend on the CPU emulator, for
  // debugging kernels. Only an explicit train.device=cuda uses it; auto trains on the CPU.
  why_not_cuda = "mhc-emu emulates CUDA only for train.device=cuda";
  const bool try_cuda = train.device == "cuda";
#else
  const bool try_cuda = train.device != "cpu";
#endif
  if (try_cuda) {
    CudaProbe probe = probe_cuda(local_rank);
    if (probe.usable) {
      const DType compute = train.precision == "bf16" ? DType::BF16 : DType::F32;
      out.backend = make_cuda_backend(local_rank, compute);
      out.memory_bytes = probe.total_memory;
      out.reason = "using " + out.backend->name() +
                   (train.device == "auto" ? " (train.device=auto found a GPU)" : "");
      return out;
    }
    why_not_cuda = probe.reason;
  }
#endif
  if (train.device == "cuda")
    fail("train.device=cuda but CUDA is not usable: {}", why_not_cuda);
  out.backend = std::make_unique<CpuBackend<float>>(static_cast<int>(train.threads));
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  if (pages > 0 && page > 0) out.memory_bytes = static_cast<int64_t>(pages) * page;
  out.reason = "using " + out.backend->name() +
               (train.device == "auto" ? " (train.device=auto: " + why_not_cuda + ")" : "");
  return out;
}

}  // namespace mhc
