#include "nccl_comm.h"

#include <cuda_runtime.h>

#include <string>

#include "cuda_check.h"

#ifdef MHC_WITH_NCCL
#include <cuda_bf16.h>
#include <nccl.h>

#include <algorithm>
#include <map>
#include <numeric>
#include <vector>

#include "launch.cuh"
#include "nccl_watchdog.cuh"
#endif

namespace mhc {

int cuda_device_for_local_rank(int local_rank) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count <= 0) {
    cudaGetLastError();  // clear the sticky error of a machine without GPUs
    return 0;
  }
  return local_rank % count;
}

#ifdef MHC_WITH_NCCL
namespace {

__global__ void f32_to_bf16_kernel(const float* in, __nv_bfloat16* out, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    out[i] = __float2bfloat16(in[i]);
}

__global__ void bf16_to_f32_kernel(const __nv_bfloat16* in, float* out, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    out[i] = __bfloat162float(in[i]);
}

int grid_for(int64_t n) { return static_cast<int>(std::min<int64_t>((n + 255) / 256, 4096)); }

ncclDataType_t nccl_type(DType t) {
  switch (t) {
    case DType::F32: return ncclFloat32;
    case DType::F64: return ncclFloat64;
    case DType::BF16: return ncclBfloat16;
    default: throw MhcError(std::string("NCCL collectives: unsupported dtype ") + dtype_name(t));
  }
}

// Issues a group of NCCL calls and ends the group even when one of them fails (a throw
// between ncclGroupStart and ncclGroupEnd would leave the group open on this thread).
template <class Calls>
void nccl_group(Calls&& calls) {
  NCCL_CHECK(ncclGroupStart());
  ncclResult_t first = ncclSuccess;
  calls([&](ncclResult_t r) {
    if (first == ncclSuccess) first = r;
  });
  const ncclResult_t end = ncclGroupEnd();
  NCCL_CHECK(first);
  NCCL_CHECK(end);
}

void check_counts(const char* what, const Tensor& t, const std::vector<int64_t>& counts, int size) {
  MHC_CHECK(static_cast<int>(counts.size()) == size);
  if (std::accumulate(counts.begin(), counts.end(), int64_t{0}) != t.numel)
    throw InternalError(std::string(what) + ": the pieces do not add up to the tensor");
}

class NcclComm final : public Communicator {
 public:
  NcclComm(std::unique_ptr<Communicator> host, int device, double init_timeout_s,
           double collective_timeout_s)
      : host_(std::move(host)), device_(device) {
    CUDA_CHECK(cudaSetDevice(device_));
    ncclUniqueId id{};
    if (host_->rank() == 0) NCCL_CHECK(ncclGetUniqueId(&id));
    host_->broadcast_host(&id, sizeof(id), 0);
    watchdog_ = std::make_unique<cuda::NcclWatchdog>(host_->rank(), device_, init_timeout_s,
                                                     collective_timeout_s);
    NCCL_CHECK(ncclCommInitRank(&comm_, host_->size(), id, host_->rank()));
    watchdog_->initialised(comm_);
    int least = 0, greatest = 0;
    CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&least, &greatest));
    CUDA_CHECK(cudaStreamCreateWithPriority(&stream_, cudaStreamNonBlocking, greatest));
  }

  ~NcclComm() override {
    watchdog_.reset();
    cudaSetDevice(device_);
    if (aborted_) return;
    cudaStreamSynchronize(stream_);
    for (auto& [id, ev] : pending_) cudaEventDestroy(ev);
    for (cudaEvent_t ev : free_events_) cudaEventDestroy(ev);
    for (void* p : retired_) cudaFree(p);
    if (stage_) cudaFree(stage_);
    if (comm_) ncclCommDestroy(comm_);
    cudaStreamDestroy(stream_);
  }

  std::string name() const override {
    int v = 0;
    ncclGetVersion(&v);
    return "nccl " + std::to_string(v / 10000) + "." + std::to_string(v / 100 % 100) + "." +
           std::to_string(v % 100) + " (bootstrap: " + host_->name() + ")";
  }
  int rank() const override { return host_->rank(); }
  int size() const override { return host_->size(); }
  int local_rank() const override { return host_->local_rank(); }
  int device_index() const override { return device_; }
  void bind_compute_stream(void* stream) override { compute_ = static_cast<cudaStream_t>(stream); }

  CommRequest all_reduce_sum_async(Tensor t, DType wire) override {
    if (t.numel == 0) return 0;
    after_compute();
    if (wire == DType::BF16 && t.dtype == DType::F32) {
      auto* s = static_cast<__nv_bfloat16*>(stage(t.numel * 2));
      cuda::launch<f32_to_bf16_kernel>(grid_for(t.numel), 256, 0, stream_, t.as<float>(), s, t.numel);
      CUDA_CHECK_LAUNCH();
      NCCL_CHECK(ncclAllReduce(s, s, t.numel, ncclBfloat16, ncclSum, comm_, stream_));
      cuda::launch<bf16_to_f32_kernel>(grid_for(t.numel), 256, 0, stream_, s, t.as<float>(), t.numel);
      CUDA_CHECK_LAUNCH();
    } else {
      NCCL_CHECK(ncclAllReduce(t.data, t.data, t.numel, nccl_type(t.dtype), ncclSum, comm_, stream_));
    }
    return record();
  }

  CommRequest reduce_scatter_sum_async(Tensor t, const std::vector<int64_t>& counts,
                                       DType wire) override {
    check_counts("NCCL reduce-scatter", t, counts, size());
    if (t.numel == 0) return 0;
    after_compute();
    const bool bf16 = wire == DType::BF16 && t.dtype == DType::F32;
    void* buf = t.data;
    ncclDataType_t type = nccl_type(t.dtype);
    size_t es = dtype_size(t.dtype);
    if (bf16) {
      buf = stage(t.numel * 2);
      cuda::launch<f32_to_bf16_kernel>(grid_for(t.numel), 256, 0, stream_,
          t.as<float>(), static_cast<__nv_bfloat16*>(buf), t.numel);
      CUDA_CHECK_LAUNCH();
      type = ncclBfloat16;
      es = 2;
    }
    const bool even = std::all_of(counts.begin(), counts.end(), [&](int64_t c) { return c == counts[0]; });
    int64_t mine_offset = 0;
    for (int r = 0; r < rank(); ++r) mine_offset += counts[r];
    char* base = static_cast<char*>(buf);
    if (even) {
      // In place: each rank's result lands at its own piece.
      NCCL_CHECK(ncclReduceScatter(base, base + mine_offset * es, counts[0], type, ncclSum, comm_,
                                   stream_));
    } else {
      // Uneven pieces: one reduce to each owner, batched into a single group.
      nccl_group([&](auto keep) {
        int64_t off = 0;
        for (int r = 0; r < size(); ++r) {
          if (counts[r] > 0)
            keep(ncclReduce(base + off * es, base + off * es, counts[r], type, ncclSum, r, comm_,
                            stream_));
          off += counts[r];
        }
      });
    }
    if (bf16 && counts[rank()] > 0) {
      cuda::launch<bf16_to_f32_kernel>(grid_for(counts[rank()]), 256, 0, stream_,
          static_cast<__nv_bfloat16*>(buf) + mine_offset, t.as<float>() + mine_offset, counts[rank()]);
      CUDA_CHECK_LAUNCH();
    }
    return record();
  }

  CommRequest all_gather_async(Tensor t, const std::vector<int64_t>& counts) override {
    check_counts("NCCL all-gather", t, counts, size());
    if (t.numel == 0) return 0;
    after_compute();
    const size_t es = dtype_size(t.dtype);
    const ncclDataType_t type = nccl_type(t.dtype);
    char* base = static_cast<char*>(t.data);
    const bool even = std::all_of(counts.begin(), counts.end(), [&](int64_t c) { return c == counts[0]; });
    if (even) {
      NCCL_CHECK(ncclAllGather(base + counts[0] * rank() * es, base, counts[0], type, comm_, stream_));
    } else {
      nccl_group([&](auto keep) {
        int64_t off = 0;
        for (int r = 0; r < size(); ++r) {
          if (counts[r] > 0)
            keep(ncclBroadcast(base + off * es, base + off * es, counts[r], type, r, comm_, stream_));
          off += counts[r];
        }
      });
    }
    return record();
  }

  void wait(CommRequest id) override {
    auto it = pending_.find(id);
    if (it == pending_.end()) return;
    if (compute_)
      CUDA_CHECK(cudaStreamWaitEvent(compute_, it->second, 0));  // the host does not block
    else
      CUDA_CHECK(cudaEventSynchronize(it->second));
    free_events_.push_back(it->second);
    pending_.erase(it);
    if (pending_.empty()) {
      stage_used_ = 0;  // later conversions queue behind earlier ones on stream_
      if (!retired_.empty()) {
        CUDA_CHECK(cudaStreamSynchronize(stream_));
        for (void* p : retired_) CUDA_CHECK(cudaFree(p));
        retired_.clear();
      }
    }
  }

  void all_reduce_sum_host(double* data, int count) override { host_->all_reduce_sum_host(data, count); }
  void broadcast_host(void* data, size_t bytes, int root) override { host_->broadcast_host(data, bytes, root); }
  void barrier() override { host_->barrier(); }
  void abort(int exit_code) override {
    watchdog_.reset();
    aborted_ = true;
    if (comm_) ncclCommAbort(comm_);
    comm_ = nullptr;
    host_->abort(exit_code);
  }

 private:
  // Orders the next collective after the compute stream's work queued so far.
  void after_compute() {
    CUDA_CHECK(cudaSetDevice(device_));
    if (compute_) {
      cudaEvent_t ev = event();
      CUDA_CHECK(cudaEventRecord(ev, compute_));
      CUDA_CHECK(cudaStreamWaitEvent(stream_, ev, 0));
      free_events_.push_back(ev);  // reusable once recorded again: waits capture its state
    } else {
      CUDA_CHECK(cudaDeviceSynchronize());
    }
  }

  CommRequest record() {
    watchdog_->watch(stream_);
    cudaEvent_t ev = event();
    CUDA_CHECK(cudaEventRecord(ev, stream_));
    const CommRequest id = ++next_id_;
    pending_.emplace(id, ev);
    return id;
  }

  cudaEvent_t event() {
    if (!free_events_.empty()) {
      cudaEvent_t ev = free_events_.back();
      free_events_.pop_back();
      return ev;
    }
    cudaEvent_t ev;
    CUDA_CHECK(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
    return ev;
  }

  // Device scratch for bf16 wire buffers, bump-allocated until every request is waited.
  void* stage(int64_t bytes) {
    const size_t need = (static_cast<size_t>(bytes) + 255) / 256 * 256;
    if (stage_used_ + need > stage_cap_) {
      if (stage_) retired_.push_back(stage_);  // in-flight work may still read it
      stage_cap_ = std::max(stage_cap_ * 2, stage_used_ + need);
      CUDA_CHECK(cudaMalloc(&stage_, stage_cap_));
      stage_used_ = 0;
    }
    void* p = static_cast<char*>(stage_) + stage_used_;
    stage_used_ += need;
    return p;
  }

  std::unique_ptr<Communicator> host_;
  int device_ = 0;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  cudaStream_t compute_ = nullptr;
  std::map<CommRequest, cudaEvent_t> pending_;
  std::vector<cudaEvent_t> free_events_;
  CommRequest next_id_ = 0;
  void* stage_ = nullptr;
  size_t stage_cap_ = 0, stage_used_ = 0;
  std::vector<void*> retired_;
  bool aborted_ = false;
  std::unique_ptr<cuda::NcclWatchdog> watchdog_;  // created before comm_, stopped first
};

}  // namespace

bool nccl_available() { return true; }

std::unique_ptr<Communicator> make_nccl_comm(std::unique_ptr<Communicator> host, int device,
                                             double init_timeout_s, double collective_timeout_s) {
  return std::make_unique<NcclComm>(std::move(host), device, init_timeout_s, collective_timeout_s);
}

#else  // !MHC_WITH_NCCL

bool nccl_available() { return false; }

std::unique_ptr<Communicator> make_nccl_comm(std::unique_ptr<Communicator>, int, double, double) {
  throw MhcError(
      "dist.backend=nccl, but this binary was built without NCCL (install NCCL, e.g. "
      "libnccl-dev, and rebuild; CMake defines MHC_WITH_NCCL when it finds it)");
}

#endif

}  // namespace mhc
