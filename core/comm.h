// Data-parallel communication. The trainer only sees this interface; implementations:
//   SingleProcessComm (here)        one process, every collective is a no-op
//   MpiComm   (core/dist/mpi_comm)  Open MPI over host buffers (CPU data parallel, tests)
//   TcpComm   (core/dist/tcp_comm)  a star over TCP to rank 0 at MASTER_ADDR:MASTER_PORT:
//                                   the NCCL bootstrap without MPI, and a host fallback
//   NcclComm  (cuda/nccl_comm)      NCCL over GPU buffers, one rank per GPU
//
// Tensor collectives take backend tensors (host memory for MPI/TCP, device memory for
// NCCL). The *_async forms return a request that wait() completes; a communicator may
// complete them eagerly (then wait() is a no-op). Requests complete in any order, but
// every rank must start the same collectives in the same order.
//
// Reduce-scatter and all-gather split a tensor into consecutive pieces, counts[r]
// elements for rank r (the counts sum to t.numel, and may be zero):
//   reduce_scatter_sum: afterwards piece `rank()` holds the sum over ranks of that piece;
//                       the rest of t is unspecified.
//   all_gather:         before, piece r is valid on rank r; afterwards every piece is
//                       valid on every rank.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tensor.h"

namespace mhc {

using CommRequest = int64_t;  // 0: already complete

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual std::string name() const = 0;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual int local_rank() const = 0;
  // The GPU this rank drives (NCCL maps local ranks onto the visible devices).
  virtual int device_index() const { return local_rank(); }
  // True for the single-process communicator (no reduction is ever needed).
  virtual bool trivial() const { return false; }

  // ---- tensors (backend memory) --------------------------------------------------------
  // In-place sum over ranks. `wire` is the dtype on the wire: t.dtype, or BF16 to halve
  // the bytes of an F32 tensor (each addition is rounded to bf16).
  virtual CommRequest all_reduce_sum_async(Tensor t, DType wire) = 0;
  virtual CommRequest reduce_scatter_sum_async(Tensor t, const std::vector<int64_t>& counts,
                                               DType wire) = 0;
  virtual CommRequest all_gather_async(Tensor t, const std::vector<int64_t>& counts) = 0;
  virtual void wait(CommRequest request) = 0;
  // Lets outstanding requests advance (MPI progresses non-blocking collectives only
  // inside MPI calls); called between pieces of backward work.
  virtual void progress() {}
  // The backend's compute stream (a cudaStream_t as void*), so device collectives can
  // wait on it with events instead of synchronising the host. Ignored on the CPU.
  virtual void bind_compute_stream(void* stream) {}

  void all_reduce_sum(Tensor t) { wait(all_reduce_sum_async(t, t.dtype)); }
  void reduce_scatter_sum(Tensor t, const std::vector<int64_t>& counts) {
    wait(reduce_scatter_sum_async(t, counts, t.dtype));
  }
  void all_gather(Tensor t, const std::vector<int64_t>& counts) {
    wait(all_gather_async(t, counts));
  }

  // ---- host buffers (small: losses, flags, ids) ---------------------------------------
  // In-place sum over ranks of host doubles, added in rank order (every rank gets the
  // same bits).
  virtual void all_reduce_sum_host(double* data, int count) = 0;
  virtual void broadcast_host(void* data, size_t bytes, int root) = 0;
  virtual void barrier() = 0;

  // Ends the whole job after a failure that the other ranks do not know about (they
  // could otherwise wait forever in a collective). Returns when the transport notices
  // a vanished peer by itself (TCP, single process).
  virtual void abort(int exit_code) {}
};

// Implemented by backends with a device compute stream (the CUDA backend may inherit it
// next to Backend), so the trainer can bind_compute_stream() without core knowing CUDA.
class ComputeStreamSource {
 public:
  virtual ~ComputeStreamSource() = default;
  virtual void* compute_stream() const = 0;  // a cudaStream_t
};

class SingleProcessComm final : public Communicator {
 public:
  std::string name() const override { return "none (single process)"; }
  int rank() const override { return 0; }
  int size() const override { return 1; }
  int local_rank() const override { return 0; }
  bool trivial() const override { return true; }
  CommRequest all_reduce_sum_async(Tensor, DType) override { return 0; }
  CommRequest reduce_scatter_sum_async(Tensor, const std::vector<int64_t>&, DType) override {
    return 0;
  }
  CommRequest all_gather_async(Tensor, const std::vector<int64_t>&) override { return 0; }
  void wait(CommRequest) override {}
  void all_reduce_sum_host(double*, int) override {}
  void broadcast_host(void*, size_t, int) override {}
  void barrier() override {}
};

}  // namespace mhc
