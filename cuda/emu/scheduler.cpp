// The CUDA emulator's execution engine (see scheduler.h): fibers, barriers, warp
// operations, launch checks and thread orders.
//
// Cost model: a warp operation switches to every lane of the warp once, so the long
// attention parity cases make 1-3 x 10^8 switches each (counted). Fibers therefore switch
// with Boost.Context's fcontext primitives (make_fcontext / jump_fcontext: callee-saved
// registers and a stack pointer), not ucontext, whose swapcontext makes a signal-mask
// syscall per switch (it made the long attention cases take minutes), and not
// boost::context::fiber, whose owning handle unwinds a fiber when dropped while the
// emulator abandons a failed thread's stack mid-kernel. A fiber that stops switches
// straight to the next runnable fiber in the scheduling order (the scheduler runs only
// between barrier phases): the order stays exactly "resume every runnable thread in order,
// repeat", with one switch per stop instead of two. The per-lane paths keep small frames
// (failure texts out of line): after a switch each fiber's frames are cache misses. ASan
// is told about every switch (start/finish_switch_fiber); a reused stack's shadow is
// cleared when a fiber starts.
//
// Per OS thread there is one Worker (thread_local): its fibers, their stacks (reused by
// every launch), the warps' operation slots and the block being run.
#include "emu/scheduler.h"

#include <sys/mman.h>
#include <unistd.h>

#include <boost/context/detail/fcontext.hpp>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <numeric>
#include <vector>

// ---- AddressSanitizer fiber annotations -------------------------------------------------
#if defined(__SANITIZE_ADDRESS__)
#define MHC_EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MHC_EMU_ASAN 1
#endif
#endif
#ifdef MHC_EMU_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

namespace mhc_emu {
namespace detail {

thread_local Current current;

namespace {

namespace ctx = boost::context::detail;

// ASan keeps a shadow of each stack; it must be told when execution moves to another
// stack (start before the switch, finish right after it on the new stack).
inline void asan_start(void** fake_stack_save, const void* bottom, size_t size) {
#ifdef MHC_EMU_ASAN
  __sanitizer_start_switch_fiber(fake_stack_save, bottom, size);
#else
  (void)fake_stack_save, (void)bottom, (void)size;
#endif
}
inline void asan_finish(void* fake_stack_save, const void** bottom_old, size_t* size_old) {
#ifdef MHC_EMU_ASAN
  __sanitizer_finish_switch_fiber(fake_stack_save, bottom_old, size_old);
#else
  (void)fake_stack_save, (void)bottom_old, (void)size_old;
#endif
}

// A stack reused by the next block may keep the shadow of frames that never returned (a
// fiber's entry frame, a failed thread's kernel frames): cleared once per fiber start.
inline void asan_clear_stack(void* bottom, size_t size) {
#ifdef MHC_EMU_ASAN
  __asan_unpoison_memory_region(bottom, size);
#else
  (void)bottom, (void)size;
#endif
}

#ifdef MHC_EMU_ASAN
// ASan's shadow of a stack is cleared at every fiber start: a small stack keeps that
// cheap (the kernels' frames are small; use-after-return is off).
constexpr size_t kStackBytes = size_t(64) << 10;
#else
constexpr size_t kStackBytes = size_t(128) << 10;
#endif
constexpr int kMaxThreads = 1024;
constexpr int kOpsPerWarp = 8;

enum class State { Runnable, Barrier, Warp, Done, Failed };

struct Fiber {
  ThreadInfo info{};
  ctx::fcontext_t ctx = nullptr;  // where it is suspended
  char* stack = nullptr;  // usable part (a guard page below it)
  State state = State::Done;
  const char* file = "";  // where it waits
  int line = 0;
  int op = -1;  // warp operation slot while State::Warp
  void* fake_stack = nullptr;
};

struct WarpOp {
  bool used = false, complete = false;
  unsigned mask = 0, arrived = 0;
  int readers = 0;
  const char* file = "";
  int line = 0;
  uint64_t vals[32] = {};
};

struct Warp {
  unsigned exists = 0, exited = 0;
  // Bit i: ops[i] is used / is used and waits for lanes (so arrivals scan only these).
  unsigned used = 0, open = 0;
  WarpOp ops[kOpsPerWarp];
};

uint3 uint3_of(unsigned x, unsigned y, unsigned z) {
  uint3 v;
  v.x = x;
  v.y = y;
  v.z = z;
  return v;
}

uint64_t splitmix(uint64_t& s) {
  uint64_t z = (s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

void fill_order(std::vector<int>& order, int n, const Settings& s, uint64_t salt) {
  order.resize(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  if (s.order == Order::Reverse) std::reverse(order.begin(), order.end());
  if (s.order == Order::Shuffle) {
    uint64_t state = s.seed ^ (salt * 0x2545f4914f6cdd1dull);
    for (int i = n - 1; i > 0; --i)
      std::swap(order[static_cast<size_t>(i)],
                order[static_cast<size_t>(splitmix(state) % static_cast<uint64_t>(i + 1))]);
  }
}

std::string dims(const dim3& d) {
  return "(" + std::to_string(d.x) + "," + std::to_string(d.y) + "," + std::to_string(d.z) + ")";
}
std::string dims(const uint3& d) {
  return "(" + std::to_string(d.x) + "," + std::to_string(d.y) + "," + std::to_string(d.z) + ")";
}
std::string hex(unsigned v) {
  char b[16];
  std::snprintf(b, sizeof(b), "0x%08x", v);
  return b;
}
std::string site(const char* file, int line) {
  const char* slash = std::strrchr(file, '/');
  return std::string(slash ? slash + 1 : file) + ":" + std::to_string(line);
}

class Worker {
 public:
  Worker() { fibers_.resize(kMaxThreads); }
  ~Worker() {
    for (Fiber& f : fibers_)
      if (f.stack) munmap(f.stack - page(), kStackBytes + page());
  }

  void run(const LaunchSpec& spec, const Settings& s, uint64_t launch_no);

  // ---- called from fibers ----
  Fiber& self() { return *running_; }
  // The running fiber stops (its state says why) and the next runnable one continues.
  void yield();
  [[noreturn]] void fail(const std::string& what);
  void barrier(const char* file, int line);
  WarpOp& warp_arrive(const char* file, int line, unsigned mask, uint64_t bits);
  void warp_leave(WarpOp& op);
  [[noreturn, gnu::cold, gnu::noinline]] void warp_misuse(const char* file, int line,
                                                          unsigned mask, const WarpOp* overlap);
  unsigned live_lanes() { return warps_[self().info.linear >> 5].exists & ~warps_[self().info.linear >> 5].exited; }
  void* dynamic_smem() { return smem_.get(); }
  static void trampoline(ctx::transfer_t from);

 private:
  static size_t page() { return static_cast<size_t>(sysconf(_SC_PAGESIZE)); }
  void prepare_fiber(Fiber& f);
  Fiber* next_runnable();
  void jump(Fiber* to);
  void arrived(ctx::transfer_t from);
  void run_block(uint64_t salt);
  std::string where(const Fiber* f) const;
  void on_exit(Fiber& f);
  [[noreturn]] void stuck(int live);

  std::vector<Fiber> fibers_;
  std::vector<Warp> warps_;
  std::vector<int> order_;
  BlockInfo block_{};
  const LaunchSpec* spec_ = nullptr;
  Settings settings_{};
  int threads_ = 0;
  std::unique_ptr<unsigned char[]> smem_;
  ctx::fcontext_t sched_ = nullptr;  // the scheduler, while a fiber runs
  Fiber* running_ = nullptr;          // null: the scheduler runs
  size_t pos_ = 0;                    // the pass through order_
  bool ran_ = false;                  // a fiber ran in this pass
  int live_ = 0;                      // threads of the block not yet returned
  const void* sched_bottom_ = nullptr;
  size_t sched_size_ = 0;
  void* sched_fake_ = nullptr;
  std::string error_;
};

Worker& worker() {
  thread_local Worker w;
  return w;
}

std::string Worker::where(const Fiber* f) const {
  std::string s = "CUDA emulator: kernel " + std::string(spec_->kernel_name) + " (grid " +
                  dims(spec_->grid) + ", block " + dims(spec_->block) + "), block " +
                  dims(block_.idx);
  if (f) s += ", thread " + dims(f->info.idx);
  return s + ": ";
}

void Worker::prepare_fiber(Fiber& f) {
  if (!f.stack) {
    void* p = mmap(nullptr, kStackBytes + page(), PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) throw KernelError("CUDA emulator: cannot map a fiber stack");
    mprotect(p, page(), PROT_NONE);  // guard page: a stack overflow faults
    f.stack = static_cast<char*>(p) + page();
  }
  asan_clear_stack(f.stack, kStackBytes);
  f.ctx = ctx::make_fcontext(f.stack + kStackBytes, kStackBytes, &Worker::trampoline);
  f.state = State::Runnable;
  f.op = -1;
  f.fake_stack = nullptr;
}

// Switches from the running context (a fiber, or the scheduler when running_ is null)
// to `to` (null: the scheduler); returns when something switches back to this context.
void Worker::jump(Fiber* to) {
  Fiber* from = running_;
  running_ = to;
  current.thread = to ? &to->info : nullptr;
  // A returned thread's last switch: a null fake-stack slot lets ASan drop its frames.
  void** fake = !from ? &sched_fake_ : from->state == State::Done ? nullptr : &from->fake_stack;
  asan_start(fake, to ? to->stack : sched_bottom_, to ? kStackBytes : sched_size_);
  arrived(ctx::jump_fcontext(to ? to->ctx : sched_, from));
}

// First thing on a context after a switch: the context switched from is suspended at
// `from` (its Fiber travels as the data pointer; null is the scheduler).
void Worker::arrived(ctx::transfer_t from) {
  Fiber* src = static_cast<Fiber*>(from.data);
  const void* bottom = nullptr;
  size_t size = 0;
  asan_finish(running_ ? running_->fake_stack : sched_fake_, &bottom, &size);
  if (src) {
    src->ctx = from.fctx;  // stale once it has returned; never resumed then
  } else {
    sched_ = from.fctx;
    sched_bottom_ = bottom;  // the scheduler's stack, which ASan knows (a fiber runs now)
    sched_size_ = size;
  }
}

// The next runnable thread in the scheduling order: passes through order_ repeat while a
// pass ran a thread; null when a whole pass found none (a barrier, the end, or stuck).
// Fibers switch to it directly, so a warp operation costs one switch per lane.
Fiber* Worker::next_runnable() {
  for (;;) {
    while (pos_ < order_.size()) {
      Fiber& f = fibers_[static_cast<size_t>(order_[pos_++])];
      if (f.state == State::Runnable) {
        ran_ = true;
        return &f;
      }
    }
    if (!ran_) return nullptr;
    ran_ = false;
    pos_ = 0;
  }
}

// Fiber -> next runnable fiber, or the scheduler after an error or when none can run;
// returns when this fiber is resumed.
void Worker::yield() { jump(error_.empty() ? next_runnable() : nullptr); }

void Worker::trampoline(ctx::transfer_t from) {
  Worker& w = worker();
  w.arrived(from);
  Fiber& f = w.self();
  try {
    w.spec_->body(w.spec_->args);
  } catch (const std::exception& e) {
    w.fail(std::string("the kernel threw: ") + e.what());
  }
  w.on_exit(f);
  w.yield();
  std::abort();  // a returned fiber is never resumed
}

void Worker::fail(const std::string& what) {
  Fiber& f = self();
  if (error_.empty()) error_ = where(&f) + what;
  f.state = State::Failed;
  yield();
  std::abort();  // a failed fiber is never resumed
}

void Worker::on_exit(Fiber& f) {
  const unsigned lane = f.info.linear & 31u;
  Warp& w = warps_[f.info.linear >> 5];
  w.exited |= 1u << lane;
  for (const WarpOp& op : w.ops)
    if (op.used && !op.complete && ((op.mask >> lane) & 1u))
      fail("lane " + std::to_string(lane) + " returned while lanes " + hex(op.arrived) +
           " wait in a warp operation at " + site(op.file, op.line) + " whose mask " +
           hex(op.mask) + " names it");
  f.state = State::Done;
  --live_;
}

void Worker::barrier(const char* file, int line) {
  Fiber& f = self();
  f.state = State::Barrier;
  f.file = file;
  f.line = line;
  yield();
}

WarpOp& Worker::warp_arrive(const char* file, int line, unsigned mask, uint64_t bits) {
  // Runs for every lane of every warp operation: the messages are built out of line, and
  // the frame stays small (each fiber's frames are cache misses after a switch).
  Fiber& f = self();
  const unsigned lane = f.info.linear & 31u;
  Warp& w = warps_[f.info.linear >> 5];
  if (!((mask >> lane) & 1u) || (mask & ~w.exists) || (mask & w.exited))
    warp_misuse(file, line, mask, nullptr);
  int slot = -1;
  for (unsigned open = w.open; open; open &= open - 1) {
    const int i = __builtin_ctz(open);
    WarpOp& op = w.ops[i];
    if (!(op.mask & mask)) continue;
    if (op.mask != mask) warp_misuse(file, line, mask, &op);
    slot = i;
  }
  if (slot < 0) {
    const unsigned free = ~w.used & ((1u << kOpsPerWarp) - 1u);
    if (!free) warp_misuse(file, line, mask, nullptr);
    slot = __builtin_ctz(free);
    w.used |= 1u << slot;
    w.open |= 1u << slot;
    WarpOp& op = w.ops[slot];
    op.used = true;  // vals need no reset: only lanes of the mask are read, all arrived
    op.complete = false;
    op.mask = mask;
    op.arrived = 0;
    op.readers = 0;
    op.file = file;
    op.line = line;
  }
  WarpOp& op = w.ops[slot];
  op.vals[lane] = bits;
  op.arrived |= 1u << lane;
  if (op.arrived == op.mask) {
    op.complete = true;
    w.open &= ~(1u << slot);
    op.readers = __builtin_popcount(op.mask);
    const unsigned base = f.info.linear & ~31u;
    for (unsigned rest = op.mask & ~(1u << lane); rest; rest &= rest - 1) {
      Fiber& other = fibers_[base + static_cast<unsigned>(__builtin_ctz(rest))];
      if (other.state == State::Warp && other.op == slot) other.state = State::Runnable;
    }
  } else {
    f.state = State::Warp;
    f.op = slot;
    f.file = file;
    f.line = line;
    yield();
  }
  f.op = -1;
  return op;
}

// Names why warp_arrive refused the operation (the first rule broken, in the order of the
// checks there); `overlap`: an operation in flight whose mask overlaps but differs.
void Worker::warp_misuse(const char* file, int line, unsigned mask, const WarpOp* overlap) {
  const Fiber& f = self();
  const unsigned lane = f.info.linear & 31u;
  const Warp& w = warps_[f.info.linear >> 5];
  const std::string at = " at " + site(file, line);
  if (!((mask >> lane) & 1u))
    fail("lane " + std::to_string(lane) + " calls a warp operation" + at + " with mask " +
         hex(mask) + " that does not include it");
  if (mask & ~w.exists)
    fail("warp operation" + at + ": mask " + hex(mask) + " names lanes " + hex(mask & ~w.exists) +
         " that do not exist (the block has " + std::to_string(threads_) + " threads)");
  if (mask & w.exited)
    fail("warp operation" + at + ": mask " + hex(mask) + " names lanes " + hex(mask & w.exited) +
         " that have exited");
  if (overlap)
    fail("warp operation" + at + " with mask " + hex(mask) + " overlaps lanes " +
         hex(overlap->arrived) + " waiting at " + site(overlap->file, overlap->line) +
         " with mask " + hex(overlap->mask) + " (diverged lanes)");
  fail("more than " + std::to_string(kOpsPerWarp) + " warp operations in flight");
}

void Worker::warp_leave(WarpOp& op) {
  if (--op.readers > 0) return;
  op.used = false;
  Warp& w = warps_[self().info.linear >> 5];
  w.used &= ~(1u << (&op - w.ops));
}

// Every live thread waits and none can move: name why.
void Worker::stuck(int live) {
  for (Fiber* f = fibers_.data(); f < fibers_.data() + threads_; ++f) {
    if (f->state != State::Warp) continue;
    const Warp& w = warps_[f->info.linear >> 5];
    const WarpOp& op = w.ops[f->op];
    const unsigned missing = op.mask & ~op.arrived;
    for (unsigned l = 0; l < 32; ++l) {
      if (!((missing >> l) & 1u)) continue;
      const Fiber& other = fibers_[(f->info.linear & ~31u) + l];
      std::string doing = other.state == State::Barrier
                              ? "waits at __syncthreads at " + site(other.file, other.line)
                          : other.state == State::Warp
                              ? "waits in another warp operation at " + site(other.file, other.line)
                              : "has exited";
      error_ = where(f) + "warp operation at " + site(op.file, op.line) + ": mask " +
               hex(op.mask) + " names lane " + std::to_string(l) + ", which " + doing +
               " (diverged lanes)";
      throw KernelError(error_);
    }
  }
  error_ = where(nullptr) + std::to_string(live) + " threads wait and none can proceed";
  throw KernelError(error_);
}

void Worker::run_block(uint64_t salt) {
  const int n = threads_;
  const dim3 b = block_.dim;
  for (int i = 0; i < n; ++i) {
    Fiber& f = fibers_[static_cast<size_t>(i)];
    f.info.linear = static_cast<unsigned>(i);
    f.info.idx = uint3_of(i % b.x, (i / b.x) % b.y, i / (b.x * b.y));
    prepare_fiber(f);
  }
  warps_.assign(static_cast<size_t>((n + 31) / 32), Warp{});
  for (size_t w = 0; w < warps_.size(); ++w) {
    const int lanes = std::min(32, n - static_cast<int>(w) * 32);
    warps_[w].exists = lanes == 32 ? 0xffffffffu : ((1u << lanes) - 1u);
  }
  if (smem_) std::memset(smem_.get(), 0xff, spec_->dynamic_smem);  // NaN: never zeroed
  uint64_t phase = 0;
  fill_order(order_, n, settings_, salt * 1315423911u + phase);
  live_ = n;
  pos_ = 0;
  ran_ = false;
  for (;;) {
    // The fibers run (switching among themselves) until none is runnable or one fails.
    if (Fiber* f = next_runnable()) jump(f);
    if (!error_.empty()) throw KernelError(error_);
    const int live = live_;
    if (live == 0) return;
    // No thread can run: a barrier completes, or the block is stuck.
    int at_barrier = 0, done = 0;
    const Fiber* first = nullptr;
    for (int i = 0; i < n; ++i) {
      const Fiber& f = fibers_[static_cast<size_t>(i)];
      if (f.state == State::Done) ++done;
      if (f.state != State::Barrier) continue;
      ++at_barrier;
      if (!first) first = &f;
      if (f.line != first->line || std::strcmp(f.file, first->file) != 0) {
        error_ = where(&f) + "divergent __syncthreads: this thread waits at " +
                 site(f.file, f.line) + ", thread " + dims(first->info.idx) + " at " +
                 site(first->file, first->line);
        throw KernelError(error_);
      }
    }
    if (at_barrier == 0 || at_barrier != live) stuck(live);
    if (done > 0) {
      error_ = where(first) + "__syncthreads at " + site(first->file, first->line) + " is reached by " +
               std::to_string(at_barrier) + " of " + std::to_string(n) + " threads; " +
               std::to_string(done) + " returned without reaching it";
      throw KernelError(error_);
    }
    for (int i = 0; i < n; ++i)
      if (fibers_[static_cast<size_t>(i)].state == State::Barrier)
        fibers_[static_cast<size_t>(i)].state = State::Runnable;
    if (settings_.order == Order::Shuffle) fill_order(order_, n, settings_, salt * 1315423911u + ++phase);
    pos_ = 0;
    ran_ = false;
  }
}

void check_launch(const LaunchSpec& s, size_t opt_in) {
  const auto bad = [&](const std::string& what) {
    throw KernelError("CUDA emulator: kernel " + std::string(s.kernel_name) + " (grid " +
                      dims(s.grid) + ", block " + dims(s.block) + "): " + what);
  };
  const dim3 b = s.block, g = s.grid;
  if (b.x == 0 || b.y == 0 || b.z == 0 || g.x == 0 || g.y == 0 || g.z == 0)
    bad("a launch dimension is 0");
  if (b.x > 1024 || b.y > 1024 || b.z > 64) bad("block dimensions above 1024 x 1024 x 64");
  if (uint64_t(b.x) * b.y * b.z > 1024)
    bad("block of " + std::to_string(uint64_t(b.x) * b.y * b.z) + " threads (at most 1024)");
  if (g.x > 2147483647u || g.y > 65535 || g.z > 65535)
    bad("grid dimensions above 2147483647 x 65535 x 65535");
  if (s.dynamic_smem > kMaxDynamicSmem)
    bad(std::to_string(s.dynamic_smem) + " bytes of dynamic shared memory (sm_90 allows at most " +
        std::to_string(kMaxDynamicSmem) + ")");
  if (s.dynamic_smem > kDefaultDynamicSmem && s.dynamic_smem > opt_in)
    bad(std::to_string(s.dynamic_smem) +
        " bytes of dynamic shared memory without cudaFuncSetAttribute("
        "cudaFuncAttributeMaxDynamicSharedMemorySize) of at least that (allowed: " +
        std::to_string(std::max(opt_in, kDefaultDynamicSmem)) + ")");
}

struct Registry {
  std::mutex mu;
  bool have_settings = false;
  Settings settings;
  std::map<const void*, size_t> smem_opt_in;
};
Registry& registry() {
  static Registry r;
  return r;
}

}  // namespace
}  // namespace detail

Settings parse_order(const std::string& v) {
  Settings s;
  if (v == "forward") return s;
  if (v == "reverse") {
    s.order = Order::Reverse;
    return s;
  }
  if (v.rfind("shuffle", 0) == 0) {
    s.order = Order::Shuffle;
    if (v.size() == 7) return s;
    char* end = nullptr;
    if (v[7] == ':' && v.size() > 8) {
      s.seed = std::strtoull(v.c_str() + 8, &end, 10);
      if (end && *end == '\0') return s;
    }
  }
  throw KernelError("MHC_EMU_ORDER=" + v + ": expected forward, reverse, shuffle or shuffle:SEED");
}

namespace detail {
namespace {
Settings settings_from_env() {
  const char* env = std::getenv("MHC_EMU_ORDER");
  return parse_order(env ? env : "forward");
}
}  // namespace

void outside_kernel(const char* what) {
  throw KernelError(std::string("CUDA emulator: ") + what + " read outside a kernel");
}

void syncthreads(const char* file, int line) { worker().barrier(file, line); }

void syncwarp(const char* file, int line, unsigned mask) {
  Worker& w = worker();
  w.warp_leave(w.warp_arrive(file, line, mask, 0));
}

namespace {
[[noreturn, gnu::cold, gnu::noinline]] void source_outside_mask(const char* file, int line,
                                                                unsigned mask, int src) {
  worker().fail("warp operation at " + site(file, line) + " reads lane " + std::to_string(src) +
                ", outside its mask " + hex(mask));
}
}  // namespace

uint64_t warp_exchange(const char* file, int line, unsigned mask, uint64_t bits, int src) {
  Worker& w = worker();
  WarpOp& op = w.warp_arrive(file, line, mask, bits);
  if (src < 0 || src > 31 || !((mask >> src) & 1u)) source_outside_mask(file, line, mask, src);
  const uint64_t v = op.vals[src];
  w.warp_leave(op);
  return v;
}

void warp_gather(const char* file, int line, unsigned mask, uint64_t bits, uint64_t* all) {
  Worker& w = worker();
  WarpOp& op = w.warp_arrive(file, line, mask, bits);
  for (int i = 0; i < 32; ++i) all[i] = ((mask >> i) & 1u) ? op.vals[i] : 0;
  w.warp_leave(op);
}

unsigned live_lanes() { return worker().live_lanes(); }

void* dynamic_shared_memory() {
  void* p = worker().dynamic_smem();
  if (!p) fail_here(__FILE__, __LINE__, "dynamic shared memory used by a launch that has none");
  return p;
}

void fail_here(const char* file, int line, const std::string& what) {
  worker().fail(what + " (" + site(file, line) + ")");
}

void bad_shuffle_width(const char* file, int line, int width) {
  fail_here(file, line, "shuffle width " + std::to_string(width) + " is not a power of two in 1..32");
}

std::string short_kernel_name(const char* pretty, const char* key) {
  std::string s(pretty);
  const size_t at = s.find(key);
  if (at != std::string::npos) s = s.substr(at + std::strlen(key));
  const size_t semi = s.find_first_of(";]");
  if (semi != std::string::npos) s = s.substr(0, semi);
  for (const char* drop : {"mhc::emu::cuda::", "{anonymous}::", "mhc::emu::"}) {
    for (size_t p = s.find(drop); p != std::string::npos; p = s.find(drop))
      s.erase(p, std::strlen(drop));
  }
  if (!s.empty() && s[0] == '&') s.erase(0, 1);
  return s;
}

}  // namespace detail

Settings settings() {
  detail::Registry& r = detail::registry();
  std::lock_guard<std::mutex> lock(r.mu);
  if (!r.have_settings) {
    r.settings = detail::settings_from_env();
    r.have_settings = true;
  }
  return r.settings;
}

void set_settings(const Settings& s) {
  detail::Registry& r = detail::registry();
  std::lock_guard<std::mutex> lock(r.mu);
  r.settings = s;
  r.have_settings = true;
}

std::string order_name(const Settings& s) {
  switch (s.order) {
    case Order::Forward: return "forward";
    case Order::Reverse: return "reverse";
    case Order::Shuffle: return "shuffle:" + std::to_string(s.seed);
  }
  return "?";
}

void set_max_dynamic_smem(const void* kernel_id, size_t bytes) {
  detail::Registry& r = detail::registry();
  std::lock_guard<std::mutex> lock(r.mu);
  r.smem_opt_in[kernel_id] = bytes;
}

void run_launch(const LaunchSpec& spec) {
  size_t opt_in = 0;
  {
    detail::Registry& r = detail::registry();
    std::lock_guard<std::mutex> lock(r.mu);
    auto it = r.smem_opt_in.find(spec.kernel_id);
    if (it != r.smem_opt_in.end()) opt_in = it->second;
  }
  detail::check_launch(spec, opt_in);
  thread_local uint64_t launches = 0;
  detail::worker().run(spec, settings(), ++launches);
}

namespace detail {
namespace {

void Worker::run(const LaunchSpec& spec, const Settings& s, uint64_t launch_no) {
  if (spec_) throw KernelError("CUDA emulator: a kernel launched from inside a kernel");
  spec_ = &spec;
  settings_ = s;
  error_.clear();
  threads_ = static_cast<int>(spec.block.x * spec.block.y * spec.block.z);
  smem_.reset(spec.dynamic_smem ? new unsigned char[spec.dynamic_smem] : nullptr);
  const uint64_t blocks = uint64_t(spec.grid.x) * spec.grid.y * spec.grid.z;
  struct Reset {
    Worker& w;
    ~Reset() {
      w.spec_ = nullptr;
      w.smem_.reset();
      current = Current{};
    }
  } reset{*this};
  block_.dim = spec.block;
  block_.grid = spec.grid;
  current.block = &block_;
  const auto run_one = [&](uint64_t b) {
    block_.idx = uint3_of(static_cast<unsigned>(b % spec.grid.x),
                            static_cast<unsigned>((b / spec.grid.x) % spec.grid.y),
                            static_cast<unsigned>(b / (uint64_t(spec.grid.x) * spec.grid.y)));
    run_block(launch_no * 0x100000001b3ull + b);
  };
  if (s.order == Order::Forward) {
    for (uint64_t b = 0; b < blocks; ++b) run_one(b);
  } else if (s.order == Order::Reverse) {
    for (uint64_t b = blocks; b-- > 0;) run_one(b);
  } else {
    // A random bijection of [0, blocks): an odd multiplier and offset modulo the next
    // power of two, skipping the values past the end (no table for large grids).
    uint64_t size = 1;
    while (size < blocks) size <<= 1;
    uint64_t st = s.seed ^ launch_no;
    const uint64_t mul = splitmix(st) | 1u, add = splitmix(st);
    for (uint64_t i = 0; i < size; ++i) {
      const uint64_t b = (i * mul + add) & (size - 1);
      if (b < blocks) run_one(b);
    }
  }
}

}  // namespace
}  // namespace detail
}  // namespace mhc_emu
