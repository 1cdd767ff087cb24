// The CUDA emulator's execution engine: runs a kernel launch on the CPU with every
// thread of a block as a cooperative fiber, so __syncthreads and warp operations keep
// their real semantics (a thread waits until the others arrive). Blocks run one after
// another on the calling OS thread; the thread order within a block (and the block
// order) is a setting, see Order. Used through device.h (built-ins) and launch() below.
//
// Strict where a GPU is undefined (each a KernelError with one line naming the kernel,
// the block and thread, and the call site):
//   - launch shape: a block of more than 1024 threads, block dims above 1024/1024/64,
//     grid dims above 2^31-1/65535/65535, a zero dimension;
//   - dynamic shared memory above 48 KiB without cudaFuncSetAttribute(kernel,
//     cudaFuncAttributeMaxDynamicSharedMemorySize, ≥ bytes), or above sm_90's 227 KiB;
//   - __syncthreads not reached by every live thread of the block: threads waiting at
//     different __syncthreads call sites, or threads that returned while others wait;
//   - a warp operation whose mask names a lane that has exited, that waits elsewhere
//     (at __syncthreads or in a warp operation with another mask), that does not exist
//     (past the end of the block), or that does not include the calling lane; reading a
//     lane outside the mask.
#pragma once
#include <vector_types.h>

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <tuple>

namespace mhc_emu {

// Order in which the runnable threads of a block resume between two barriers (and in
// which the blocks of a grid run). Shuffle draws a fresh permutation, from `seed`, for
// every block and every barrier phase.
enum class Order { Forward, Reverse, Shuffle };

struct Settings {
  Order order = Order::Forward;
  uint64_t seed = 1;
};

// The process's settings: from MHC_EMU_ORDER (forward | reverse | shuffle | shuffle:SEED)
// on first use, or the last set_settings(). A bad MHC_EMU_ORDER throws KernelError.
Settings settings();
// Parses an MHC_EMU_ORDER value; throws KernelError naming what is allowed.
Settings parse_order(const std::string& value);
void set_settings(const Settings& s);
std::string order_name(const Settings& s);

// A kernel or launch the emulator refuses (see the list above).
class KernelError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct LaunchSpec {
  const char* kernel_name;
  const void* kernel_id;  // the kernel's address (cudaFuncSetAttribute's key)
  dim3 grid, block;
  size_t dynamic_smem;
  void (*body)(const void* args);  // runs the kernel for the current thread
  const void* args;
};

// Runs the whole grid before returning. Throws KernelError.
void run_launch(const LaunchSpec& spec);

// Dynamic shared memory limits (bytes) and the per-kernel opt-in.
constexpr size_t kDefaultDynamicSmem = 48 * 1024;
constexpr size_t kMaxDynamicSmem = 232448;  // sm_90: 227 KiB per block
void set_max_dynamic_smem(const void* kernel_id, size_t bytes);

namespace detail {

struct ThreadInfo {
  uint3 idx;
  unsigned linear;
};
struct BlockInfo {
  uint3 idx;
  dim3 dim, grid;
};
// The running fiber's thread and block (null outside a launch).
struct Current {
  ThreadInfo* thread = nullptr;
  BlockInfo* block = nullptr;
};
extern thread_local Current current;

[[noreturn]] void outside_kernel(const char* what);
inline const ThreadInfo& current_thread() {
  if (!current.thread) outside_kernel("threadIdx");
  return *current.thread;
}
inline const BlockInfo& current_block() {
  if (!current.block) outside_kernel("blockIdx/blockDim/gridDim");
  return *current.block;
}
inline int lane_id() { return static_cast<int>(current_thread().linear & 31u); }

void syncthreads(const char* file, int line);
void syncwarp(const char* file, int line, unsigned mask = 0xffffffffu);
// Every lane of `mask` contributes `bits`; returns lane `src`'s contribution.
uint64_t warp_exchange(const char* file, int line, unsigned mask, uint64_t bits, int src);
// Every lane of `mask` contributes `bits`; all[i] receives lane i's (lanes outside the
// mask: 0).
void warp_gather(const char* file, int line, unsigned mask, uint64_t bits, uint64_t* all);
// Lanes of the calling warp that have not exited.
unsigned live_lanes();
void* dynamic_shared_memory();
[[noreturn]] void fail_here(const char* file, int line, const std::string& what);
// fail_here for a shuffle width that is not a power of two in 1..32: out of line, so the
// shuffle's own frame (touched by every lane at every shuffle) stays small.
[[noreturn]] void bad_shuffle_width(const char* file, int line, int width);

// "mhc::emu::cuda::{anonymous}::fill_kernel<float>" -> "fill_kernel<float>".
std::string short_kernel_name(const char* pretty, const char* key);

template <auto Kernel>
const char* kernel_name() {
  static const std::string name = short_kernel_name(__PRETTY_FUNCTION__, "Kernel = ");
  return name.c_str();
}

}  // namespace detail

// Launches Kernel over grid × block with `smem` bytes of dynamic shared memory: the
// arguments are copied once, and every thread calls Kernel with them (converted to the
// kernel's parameter types, as a launch does).
template <auto Kernel, class... Args>
void launch(dim3 grid, dim3 block, size_t smem, Args... args) {
  const std::tuple<Args...> bound(args...);
  struct Thunk {
    static void run(const void* p) { std::apply(Kernel, *static_cast<const std::tuple<Args...>*>(p)); }
  };
  const LaunchSpec spec{detail::kernel_name<Kernel>(), reinterpret_cast<const void*>(Kernel),
                        grid, block, smem, &Thunk::run, &bound};
  run_launch(spec);
}

}  // namespace mhc_emu
