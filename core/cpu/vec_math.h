// Elementwise math the compiler can vectorise inside `#pragma omp simd` loops (std::exp
// does not vectorise without -ffast-math). float uses a Cody–Waite range reduction and a
// degree-6 polynomial (≈1 ulp on the range that matters); double keeps std::exp so the
// float64 gradient checks see exact math. NaN propagates.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

namespace mhc::cpu {

inline float vexp(float x) {
  // Comparisons, not std::fmin/fmax: those become per-element library calls.
  const float clamped = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  const float k = std::floor(clamped * 1.44269504088896341f + 0.5f);
  const float r = clamped - k * 0.693359375f + k * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(k) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  const float out = y * scale;
  return x != x ? x : (x < -87.0f ? 0.0f : out);
}

inline double vexp(double x) { return std::exp(x); }

template <class T>
inline T vsigmoid(T x) {
  return T(1) / (T(1) + vexp(-x));
}

// tanh(x) = 1 − 2/(e^{2x} + 1), saturating cleanly at ±1.
inline float vtanh(float x) { return 1.0f - 2.0f / (vexp(2.0f * x) + 1.0f); }
inline double vtanh(double x) { return std::tanh(x); }

}  // namespace mhc::cpu
