// OpenMP helpers with a fixed static split, so every reduction is deterministic for a
// given thread count (a requirement of bit-identical resume).
#pragma once
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace mhc::cpu {

// Below this much work (elements touched) a loop runs on one thread: a parallel region
// costs a barrier, and on a shared or oversubscribed machine a barrier waits for the
// slowest, possibly descheduled, thread.
constexpr int64_t kMinParallelWork = 1 << 15;

// body(begin, end, partial) runs over contiguous chunks of [0, count), one per thread,
// each with its own zeroed `width`-sized partial; partials are then added to `out` in
// thread order.
template <class T, class F>
void parallel_reduce(int64_t count, int64_t width, T* out, F body) {
  // The thread count depends only on the sizes, so results stay deterministic.
  const bool small = count * std::max<int64_t>(width, 16) < kMinParallelWork;
  const int threads = small ? 1 : omp_get_max_threads();
  std::vector<T> partial(static_cast<size_t>(threads) * width, T(0));
#pragma omp parallel num_threads(threads)
  {
    const int tid = omp_get_thread_num();
    const int used = omp_get_num_threads();
    const int64_t chunk = (count + used - 1) / used;
    const int64_t begin = std::min<int64_t>(count, chunk * tid);
    const int64_t end = std::min<int64_t>(count, begin + chunk);
    if (begin < end) body(begin, end, partial.data() + static_cast<size_t>(tid) * width);
  }
  for (int t = 0; t < threads; ++t) {
    const T* p = partial.data() + static_cast<size_t>(t) * width;
    for (int64_t i = 0; i < width; ++i) out[i] += p[i];
  }
}

}  // namespace mhc::cpu
