// Counter-based random numbers: every draw is a pure function of (key, counter), so
// weights depend only on (seed, parameter name) and data order only on (seed, sample
// index), whatever the thread count, world size or residual mode.
#pragma once
#include <cmath>
#include <cstdint>
#include <string>

namespace mhc {

inline uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

inline uint64_t hash_combine(uint64_t a, uint64_t b) { return splitmix64(a ^ splitmix64(b)); }

inline uint64_t hash_string(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

// Uniform in (0, 1), never exactly 0 (safe for log).
inline double uniform01(uint64_t key, uint64_t counter) {
  uint64_t bits = hash_combine(key, counter) >> 11;
  return (static_cast<double>(bits) + 0.5) * (1.0 / 9007199254740992.0);
}

// Standard normal by Box–Muller on two counter draws.
inline double normal01(uint64_t key, uint64_t counter) {
  double u1 = uniform01(key, 2 * counter);
  double u2 = uniform01(key, 2 * counter + 1);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}

// A small sequential generator for sampling text (state is one integer, saved in
// checkpoints and reproducible).
class SequentialRng {
 public:
  explicit SequentialRng(uint64_t seed) : state_(seed) {}
  double uniform() { return uniform01(state_, counter_++); }
  uint64_t counter() const { return counter_; }
  void set_counter(uint64_t c) { counter_ = c; }

 private:
  uint64_t state_;
  uint64_t counter_ = 0;
};

}  // namespace mhc
