#include "comm_factory.h"

#include "backend_factory.h"
#include "dist/mpi_comm.h"
#include "dist/tcp_comm.h"
#include "error.h"
#include "model_shape.h"
#if defined(MHC_WITH_CUDA) && !defined(MHC_CUDA_EMULATED)
#include "cuda/cuda_backend.h"
#include "cuda/nccl_comm.h"
#endif

namespace mhc {
namespace {

// Whether training will run on a GPU (mirrors make_backend), and why not.
bool uses_gpu(const Config::Train& train, int local_rank, std::string* why_not) {
#ifdef MHC_CUDA_EMULATED
  (void)local_rank;
  *why_not = "mhc-emu emulates CUDA only for train.device=cuda";
  return train.device == "cuda";
#elif defined(MHC_WITH_CUDA)
  if (train.device == "cpu") {
    *why_not = "train.device=cpu";
    return false;
  }
  const CudaProbe probe = probe_cuda(cuda_device_for_local_rank(local_rank));
  if (!probe.usable) *why_not = probe.reason;
  return probe.usable;
#else
  *why_not = "this binary was built without CUDA";
  return false;
#endif
}

std::unique_ptr<Communicator> make_mpi_checked(const dist::RankEnv& env) {
  std::unique_ptr<Communicator> comm = dist::make_mpi_comm();
  if (env.source != "none" && comm->size() != env.size)
    fail("MPI reports a world of {} ranks but the launcher's {} variables say {}: launch "
         "with mpirun/srun so that MPI sees the whole job", comm->size(), env.source, env.size);
  return comm;
}

#if defined(MHC_WITH_CUDA) && !defined(MHC_CUDA_EMULATED)
// The host communicator an NCCL job bootstraps over.
std::unique_ptr<Communicator> bootstrap_comm(const dist::RankEnv& env, double timeout_s,
                                             double collective_timeout_s, std::string* how) {
  if (env.size == 1) {
    *how = "single process";
    return std::make_unique<SingleProcessComm>();
  }
  if (env.mpi_launcher && dist::mpi_available()) {
    *how = "MPI broadcast of the unique id";
    return make_mpi_checked(env);
  }
  *how = "TCP rendezvous at MASTER_ADDR:MASTER_PORT";
  return std::make_unique<dist::TcpComm>(env, timeout_s, collective_timeout_s);
}
#endif

}  // namespace

CommChoice make_communicator(const Config& cfg, const dist::RankEnv& env) {
  CommChoice out;
  out.env = env;
  const std::string& want = cfg.dist.backend;
  const int world = env.size;
  if (want == "none") {
    if (world > 1)
      fail("dist.backend=none, but the launcher started {} ranks ({}): every rank would train "
           "alone into the same run directory; use dist.backend=auto", world, env.describe());
    out.comm = std::make_unique<SingleProcessComm>();
    out.reason = "dist.backend=none: single process";
    return out;
  }
  if (want == "auto" && world == 1) {
    out.comm = std::make_unique<SingleProcessComm>();
    out.reason = "dist.backend=auto: one rank, no communication";
    return out;
  }
  std::string why_not_gpu;
  const bool gpu = uses_gpu(cfg.train, env.local_rank, &why_not_gpu);
  if (want == "nccl" || (want == "auto" && gpu)) {
#ifdef MHC_CUDA_EMULATED
    fail("dist.backend={} with {} ranks: mhc-emu (the CUDA emulator binary) has no NCCL; "
         "run it as one process", want, world);
#elif defined(MHC_WITH_CUDA)
    if (!gpu) fail("dist.backend=nccl needs a usable GPU: {}", why_not_gpu);
    if (!nccl_available())
      fail("dist.backend{} needs NCCL, but this binary was built without it (install NCCL and "
           "rebuild)", want == "auto" ? "=auto with GPUs" : "=nccl");
    std::string how;
    std::unique_ptr<Communicator> host = bootstrap_comm(env, cfg.dist.timeout_s, cfg.dist.collective_timeout_s, &how);
    out.comm = make_nccl_comm(std::move(host), cuda_device_for_local_rank(env.local_rank),
                              cfg.dist.timeout_s, cfg.dist.collective_timeout_s);
    out.reason = fmt::format("dist.backend={}: {} ranks on GPUs -> {} (bootstrap: {})", want, world,
                             out.comm->name(), how);
    return out;
#else
    fail("dist.backend=nccl, but this binary was built without CUDA");
#endif
  }
  if (want == "mpi" && gpu)
    fail("dist.backend=mpi reduces host buffers, but this run trains on a GPU: use "
         "dist.backend=nccl (or auto), or train.device=cpu for CPU data parallelism");
  if (want == "mpi" || (env.mpi_launcher && dist::mpi_available())) {
    out.comm = make_mpi_checked(env);
    out.reason = fmt::format("dist.backend={}: {} CPU ranks{} -> {}", want, out.comm->size(),
                             want == "auto" ? " under an MPI launcher" : "", out.comm->name());
    return out;
  }
  // auto, CPUs, no MPI: the TCP star.
  if (env.mpi_launcher)
    fail("{} ranks were started by an MPI launcher, but this binary was built without MPI: "
         "rebuild with Open MPI (libopenmpi-dev), or launch with torchrun-style variables and "
         "MASTER_ADDR/MASTER_PORT", world);
  out.comm = std::make_unique<dist::TcpComm>(env, cfg.dist.timeout_s, cfg.dist.collective_timeout_s);
  out.reason = fmt::format("dist.backend=auto: {} CPU ranks without MPI ({}) -> {}", world,
                           why_not_gpu, out.comm->name());
  return out;
}

CommChoice make_communicator(const Config& cfg) {
  return make_communicator(cfg, dist::detect_rank_env());
}

}  // namespace mhc
