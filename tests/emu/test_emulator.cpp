// Unit tests of the CUDA emulator itself (cuda/emu/): barrier semantics in every thread
// order, shared memory per block, every warp operation against a hand computation,
// launch-limit and strictness errors. Compiled like a kernel source (device.h is
// force-included, <cuda_runtime.h> is the emulator's).
#include <gtest/gtest.h>

#include <cuda_runtime.h>

#include <cmath>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

using mhc_emu::Order;
using mhc_emu::Settings;

const Settings kOrders[] = {{Order::Forward, 1}, {Order::Reverse, 1}, {Order::Shuffle, 3},
                            {Order::Shuffle, 11}};

// Runs f once per thread order, restoring the process setting afterwards.
template <class F>
void for_each_order(F&& f) {
  const Settings saved = mhc_emu::settings();
  for (const Settings& s : kOrders) {
    mhc_emu::set_settings(s);
    SCOPED_TRACE("order " + mhc_emu::order_name(s));
    f(s);
  }
  mhc_emu::set_settings(saved);
}

// The KernelError text of a launch that must fail ("" when it did not fail).
template <class F>
std::string launch_error(F&& f) {
  try {
    f();
  } catch (const mhc_emu::KernelError& e) {
    return e.what();
  }
  return "";
}

// ---- barriers ---------------------------------------------------------------------------

// Every thread publishes its id, then reads its right neighbour's: correct only if the
// barrier holds every reader back until all have written.
__global__ void neighbour_kernel(int* out, bool sync) {
  __shared__ int slot[256];
  const int t = threadIdx.x, n = blockDim.x;
  slot[t] = 1000 * blockIdx.x + t;
  if (sync) __syncthreads();
  out[blockIdx.x * n + t] = slot[(t + 1) % n];
  if (sync) __syncthreads();
  slot[t] = -1;  // the next block must not see this block's values mid-flight
}

TEST(EmuBarrier, HoldsEveryThreadUntilAllArrive) {
  for_each_order([](const Settings&) {
    std::vector<int> out(3 * 128, -7);
    mhc_emu::launch<neighbour_kernel>(dim3(3), dim3(128), 0, out.data(), true);
    for (int b = 0; b < 3; ++b)
      for (int t = 0; t < 128; ++t) ASSERT_EQ(out[b * 128 + t], 1000 * b + (t + 1) % 128) << b << " " << t;
  });
}

TEST(EmuBarrier, MissingBarrierIsVisibleInSomeOrder) {
  // Without the barrier, forward order runs thread 0 to completion before thread 1 has
  // written: the kernel's race becomes a wrong value instead of luck.
  int wrong_orders = 0;
  for_each_order([&](const Settings&) {
    std::vector<int> out(128, -7);
    mhc_emu::launch<neighbour_kernel>(dim3(1), dim3(128), 0, out.data(), false);
    for (int t = 0; t < 128; ++t)
      if (out[t] != (t + 1) % 128) {
        ++wrong_orders;
        break;
      }
  });
  EXPECT_GE(wrong_orders, 2);
}

// 2-D block: a sum over the block through shared memory and two barriers per round.
__global__ void block_sum_2d_kernel(const float* in, float* out, int rounds) {
  __shared__ float partial[64];
  const int t = threadIdx.y * blockDim.x + threadIdx.x;
  float acc = 0.f;
  for (int r = 0; r < rounds; ++r) {
    partial[t] = in[r * 64 + t];
    __syncthreads();
    if (t == 0)
      for (int i = 0; i < 64; ++i) acc += partial[i];
    __syncthreads();
  }
  if (t == 0) out[blockIdx.x] = acc;
}

TEST(EmuBarrier, TwoDimensionalBlockLoopsOverBarriers) {
  std::vector<float> in(5 * 64);
  double expect = 0;
  for (size_t i = 0; i < in.size(); ++i) expect += (in[i] = float(i % 17) - 8.f);
  for_each_order([&](const Settings&) {
    float out[2] = {0, 0};
    mhc_emu::launch<block_sum_2d_kernel>(dim3(2), dim3(8, 8), 0, in.data(), out, 5);
    EXPECT_EQ(out[0], expect);
    EXPECT_EQ(out[1], expect);
  });
}

// ---- shared memory -----------------------------------------------------------------------

// Each block stores its id in shared memory, waits, and every thread reports what it sees.
__global__ void shared_identity_kernel(int* out, int spin) {
  __shared__ int owner;
  if (threadIdx.x == 0) owner = blockIdx.x;
  __syncthreads();
  volatile int sink = 0;
  for (int i = 0; i < spin; ++i) sink = sink + i;  // give another OS thread time to run
  __syncthreads();
  out[blockIdx.x * blockDim.x + threadIdx.x] = owner;
}

TEST(EmuSharedMemory, OneCopyPerBlockSharedByItsThreads) {
  for_each_order([](const Settings&) {
    std::vector<int> out(4 * 64, -1);
    mhc_emu::launch<shared_identity_kernel>(dim3(4), dim3(64), 0, out.data(), 0);
    for (int i = 0; i < 4 * 64; ++i) ASSERT_EQ(out[i], i / 64);
  });
}

TEST(EmuSharedMemory, ConcurrentLaunchesDoNotShareBlocks) {
  // Two host threads run blocks at the same time; each block must only see its own
  // shared variable.
  std::vector<int> a(64 * 64, -1), b(64 * 64, -1);
  std::thread t1([&] { mhc_emu::launch<shared_identity_kernel>(dim3(64), dim3(64), 0, a.data(), 2000); });
  std::thread t2([&] { mhc_emu::launch<shared_identity_kernel>(dim3(64), dim3(64), 0, b.data(), 2000); });
  t1.join();
  t2.join();
  for (int i = 0; i < 64 * 64; ++i) {
    ASSERT_EQ(a[i], i / 64);
    ASSERT_EQ(b[i], i / 64);
  }
}

// Dynamic shared memory: one buffer per block, not zeroed (NaN-filled) at block start.
__global__ void dynamic_shared_kernel(float* out, int* fresh) {
  MHC_DYNAMIC_SHARED(float, buf);
  const int t = threadIdx.x;
  if (!std::isnan(buf[t])) atomicAdd(fresh, 1);  // must read the fill, not a previous block
  __syncthreads();
  buf[t] = float(blockIdx.x * 100 + t);
  __syncthreads();
  out[blockIdx.x * blockDim.x + t] = buf[blockDim.x - 1 - t];
}

TEST(EmuSharedMemory, DynamicBufferIsPerBlockAndNeverZeroed) {
  for_each_order([](const Settings&) {
    std::vector<float> out(3 * 32);
    int not_fresh = 0;
    mhc_emu::launch<dynamic_shared_kernel>(dim3(3), dim3(32), 32 * sizeof(float), out.data(), &not_fresh);
    EXPECT_EQ(not_fresh, 0);
    for (int b = 0; b < 3; ++b)
      for (int t = 0; t < 32; ++t) ASSERT_EQ(out[b * 32 + t], float(b * 100 + 31 - t));
  });
}

// ---- warp operations ------------------------------------------------------------------------

enum Op { kIdx, kUp, kDown, kXor };

__global__ void shuffle_kernel(const int* in, int* out, int op, int arg, int width) {
  const int t = threadIdx.x;
  const int v = in[t];
  int r = 0;
  switch (op) {
    case kIdx: r = __shfl_sync(0xffffffffu, v, arg, width); break;
    case kUp: r = __shfl_up_sync(0xffffffffu, v, arg, width); break;
    case kDown: r = __shfl_down_sync(0xffffffffu, v, arg, width); break;
    case kXor: r = __shfl_xor_sync(0xffffffffu, v, arg, width); break;
  }
  out[t] = r;
}

// CUDA's rules, written out per form (programming guide, warp shuffle functions).
int expected_shuffle(const std::vector<int>& in, int lane_in_block, int op, int arg, int width) {
  const int warp_base = lane_in_block / 32 * 32;
  const int lane = lane_in_block % 32;
  const int seg_start = lane / width * width;  // first lane of this lane's width-segment
  const int seg_end = seg_start + width;       // one past its last lane
  int src = lane;
  if (op == kIdx) src = seg_start + arg % width;
  if (op == kUp && lane - arg >= seg_start) src = lane - arg;
  if (op == kDown && lane + arg < seg_end) src = lane + arg;
  if (op == kXor && (lane ^ arg) < seg_end) src = lane ^ arg;
  return in[warp_base + src];
}

TEST(EmuWarp, EveryShuffleFormMatchesTheHandRule) {
  std::vector<int> in(64);
  for (int i = 0; i < 64; ++i) in[i] = 7 * i + 3;
  for_each_order([&](const Settings&) {
    for (int op : {kIdx, kUp, kDown, kXor})
      for (int width : {32, 16, 8, 4, 2, 1})
        for (int arg : {0, 1, 2, 3, 5, 8, 13, 16, 31, 37}) {
          std::vector<int> out(64, -1);
          mhc_emu::launch<shuffle_kernel>(dim3(1), dim3(64), 0, in.data(), out.data(), op, arg, width);
          for (int t = 0; t < 64; ++t)
            ASSERT_EQ(out[t], expected_shuffle(in, t, op, arg, width))
                << "op " << op << " width " << width << " arg " << arg << " lane " << t;
        }
  });
}

__global__ void vote_kernel(const int* in, unsigned* out) {
  const int t = threadIdx.x;
  const bool p = in[t] % 3 == 0;
  out[4 * t + 0] = __ballot_sync(0xffffffffu, p);
  out[4 * t + 1] = __any_sync(0xffffffffu, p);
  out[4 * t + 2] = __all_sync(0xffffffffu, in[t] >= 0);
  out[4 * t + 3] = __reduce_add_sync(0xffffffffu, static_cast<unsigned>(in[t]));
  __syncwarp();
}

TEST(EmuWarp, VotesAndReductionsMatchTheHandComputation) {
  std::vector<int> in(32);
  for (int i = 0; i < 32; ++i) in[i] = (i * 5) % 11;
  unsigned ballot = 0, sum = 0;
  for (int i = 0; i < 32; ++i) {
    if (in[i] % 3 == 0) ballot |= 1u << i;
    sum += in[i];
  }
  for_each_order([&](const Settings&) {
    std::vector<unsigned> out(4 * 32);
    mhc_emu::launch<vote_kernel>(dim3(1), dim3(32), 0, in.data(), out.data());
    for (int t = 0; t < 32; ++t) {
      ASSERT_EQ(out[4 * t + 0], ballot);
      ASSERT_EQ(out[4 * t + 1], 1u);
      ASSERT_EQ(out[4 * t + 2], 1u);
      ASSERT_EQ(out[4 * t + 3], sum);
    }
  });
}

// Half-warps shuffling with disjoint masks at the same time.
__global__ void half_warp_kernel(int* out) {
  const int t = threadIdx.x;
  const unsigned mask = t < 16 ? 0x0000ffffu : 0xffff0000u;
  out[t] = __shfl_sync(mask, t * 10, (t < 16 ? 0 : 16) + 3);
}

TEST(EmuWarp, DisjointMasksRunSideBySide) {
  for_each_order([](const Settings&) {
    int out[32];
    mhc_emu::launch<half_warp_kernel>(dim3(1), dim3(32), 0, out);
    for (int t = 0; t < 32; ++t) ASSERT_EQ(out[t], t < 16 ? 30 : 190);
  });
}

// ---- strictness -----------------------------------------------------------------------------

__global__ void empty_kernel(int) {}

TEST(EmuLaunch, RefusesShapesAGpuRefuses) {
  const auto err = [](dim3 g, dim3 b, size_t smem) {
    return launch_error([&] { mhc_emu::launch<empty_kernel>(g, b, smem, 0); });
  };
  EXPECT_NE(err(dim3(1), dim3(1025), 0).find("block dimensions"), std::string::npos);
  EXPECT_NE(err(dim3(1), dim3(1025), 0).find("empty_kernel"), std::string::npos);
  EXPECT_NE(err(dim3(1), dim3(1, 1, 65), 0).find("block dimensions"), std::string::npos);
  EXPECT_NE(err(dim3(1), dim3(32, 33), 0).find("1056 threads"), std::string::npos);
  EXPECT_NE(err(dim3(1, 65536), dim3(32), 0).find("grid dimensions"), std::string::npos);
  EXPECT_NE(err(dim3(0), dim3(32), 0).find("is 0"), std::string::npos);
  EXPECT_EQ(err(dim3(1), dim3(1024), 0), "");
  EXPECT_EQ(err(dim3(1, 65535, 1), dim3(1), 0), "");
  EXPECT_EQ(err(dim3(1), dim3(32), 48 * 1024), "");
}

__global__ void smem_opt_in_kernel(int) {}

TEST(EmuLaunch, DynamicSharedMemoryAbove48KiBNeedsTheAttribute) {
  const auto run = [](size_t bytes) {
    return launch_error([&] { mhc_emu::launch<smem_opt_in_kernel>(dim3(1), dim3(32), bytes, 0); });
  };
  EXPECT_NE(run(64 * 1024).find("without cudaFuncSetAttribute"), std::string::npos);
  ASSERT_EQ(cudaFuncSetAttribute(smem_opt_in_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 100 * 1024),
            cudaSuccess);
  EXPECT_EQ(run(64 * 1024), "");
  EXPECT_NE(run(120 * 1024).find("without cudaFuncSetAttribute"), std::string::npos);
  EXPECT_NE(run(240 * 1024).find("sm_90 allows at most 232448"), std::string::npos);
  EXPECT_EQ(cudaFuncSetAttribute(smem_opt_in_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 240 * 1024),
            cudaErrorInvalidValue);
}

__global__ void early_return_kernel(int* out) {
  if (threadIdx.x < 16) return;  // these never reach the barrier below
  __syncthreads();
  out[threadIdx.x] = 1;
}

__global__ void if_else_barrier_kernel(int* out) {
  if (threadIdx.x % 2) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = 1;
}

TEST(EmuStrict, DivergentBarriersAreErrors) {
  for_each_order([](const Settings&) {
    int out[64] = {};
    const std::string early =
        launch_error([&] { mhc_emu::launch<early_return_kernel>(dim3(1), dim3(64), 0, out); });
    EXPECT_NE(early.find("early_return_kernel"), std::string::npos) << early;
    EXPECT_NE(early.find("reached by 48 of 64 threads; 16 returned"), std::string::npos) << early;
    const std::string split =
        launch_error([&] { mhc_emu::launch<if_else_barrier_kernel>(dim3(1), dim3(64), 0, out); });
    EXPECT_NE(split.find("divergent __syncthreads"), std::string::npos) << split;
    EXPECT_NE(split.find("if_else_barrier_kernel"), std::string::npos) << split;
  });
}

__global__ void shuffle_after_exit_kernel(int* out) {
  if (threadIdx.x == 5) return;
  out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, int(threadIdx.x), 1);
}

__global__ void shuffle_vs_barrier_kernel(int* out) {
  if (threadIdx.x == 3) {
    __syncthreads();
  } else {
    out[threadIdx.x] = __shfl_down_sync(0xffffffffu, int(threadIdx.x), 1);
    __syncthreads();
  }
}

__global__ void mask_mismatch_kernel(int* out) {
  const unsigned mask = threadIdx.x == 0 ? 0x0000ffffu : 0xffffffffu;
  out[threadIdx.x] = __shfl_sync(mask, 1, 0);
}

__global__ void partial_warp_kernel(int* out) {
  out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, int(threadIdx.x), 1);
}

TEST(EmuStrict, ShuffleMasksMustNameLiveConvergedLanes) {
  for_each_order([](const Settings&) {
    int out[64] = {};
    const std::string exited =
        launch_error([&] { mhc_emu::launch<shuffle_after_exit_kernel>(dim3(1), dim3(32), 0, out); });
    EXPECT_NE(exited.find("shuffle_after_exit_kernel"), std::string::npos) << exited;
    EXPECT_TRUE(exited.find("exited") != std::string::npos ||
                exited.find("returned while") != std::string::npos)
        << exited;
    const std::string diverged =
        launch_error([&] { mhc_emu::launch<shuffle_vs_barrier_kernel>(dim3(1), dim3(32), 0, out); });
    EXPECT_NE(diverged.find("names lane 3, which waits at __syncthreads"), std::string::npos) << diverged;
    const std::string mismatch =
        launch_error([&] { mhc_emu::launch<mask_mismatch_kernel>(dim3(1), dim3(32), 0, out); });
    EXPECT_NE(mismatch.find("mask"), std::string::npos) << mismatch;
    EXPECT_NE(mismatch, "");
    const std::string partial =
        launch_error([&] { mhc_emu::launch<partial_warp_kernel>(dim3(1), dim3(48), 0, out); });
    EXPECT_NE(partial.find("do not exist"), std::string::npos) << partial;
  });
}

TEST(EmuSettings, OrderSettingParsesOrSaysWhatIsAllowed) {
  EXPECT_EQ(mhc_emu::parse_order("forward").order, Order::Forward);
  EXPECT_EQ(mhc_emu::parse_order("reverse").order, Order::Reverse);
  EXPECT_EQ(mhc_emu::parse_order("shuffle:42").seed, 42u);
  EXPECT_EQ(mhc_emu::parse_order("shuffle").order, Order::Shuffle);
  const std::string err = launch_error([] { mhc_emu::parse_order("sideways"); });
  EXPECT_EQ(err, "MHC_EMU_ORDER=sideways: expected forward, reverse, shuffle or shuffle:SEED");
  EXPECT_NE(launch_error([] { mhc_emu::parse_order("shuffle:x"); }), "");
}

}  // namespace
