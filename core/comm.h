// Data-parallel communication. The trainer only sees this interface; implementations:
// single process (here), MPI over host buffers, NCCL over GPU buffers.
#pragma once
#include <cstddef>
#include <memory>
#include <string>

#include "tensor.h"

namespace mhc {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual std::string name() const = 0;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual int local_rank() const = 0;
  // In-place sum over ranks of a backend tensor (the trainer's gradients).
  virtual void all_reduce_sum(Tensor t) = 0;
  // In-place sum over ranks of host doubles (losses, counters).
  virtual void all_reduce_sum_host(double* data, int count) = 0;
  virtual void broadcast_host(void* data, size_t bytes, int root) = 0;
  virtual void barrier() = 0;
};

class SingleProcessComm final : public Communicator {
 public:
  std::string name() const override { return "none (single process)"; }
  int rank() const override { return 0; }
  int size() const override { return 1; }
  int local_rank() const override { return 0; }
  void all_reduce_sum(Tensor) override {}
  void all_reduce_sum_host(double*, int) override {}
  void broadcast_host(void*, size_t, int) override {}
  void barrier() override {}
};

}  // namespace mhc
