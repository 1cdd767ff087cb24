// Lanes<S, W>: W independent scalars (one per token) that behave like one scalar under
// the arithmetic and the exp_/sqrt_/tanh_/max_ that core/mhc_math.h uses, so the per-token
// connection math runs on W tokens at once in SIMD registers. Every lane computes exactly
// the scalar operations of the scalar code, in the same order, so a lane's result is
// bit-identical to the scalar function's (the build does not contract into FMAs).
#pragma once
#include <cmath>

namespace mhc::cpu {

// 8 floats fill an AVX2 register; doubles (the float64 test backend) take two.
constexpr int kConnLanes = 8;

template <class S, int W = kConnLanes>
struct Lanes {
  // A GCC/Clang vector: its arithmetic compiles to whole-register SIMD instructions
  // (element-wise loops over a plain array were left partly scalar by the vectoriser).
  typedef S Vector __attribute__((vector_size(sizeof(S) * W)));
  Vector v;

  Lanes() = default;
  Lanes(S x) {  // NOLINT(google-explicit-constructor): a scalar broadcasts, as in T(1)
    for (int l = 0; l < W; ++l) v[l] = x;
  }

#define MHC_LANES_COMPOUND(op)                              \
  Lanes& operator op(const Lanes & o) {                     \
    v op o.v;                                               \
    return *this;                                           \
  }
  MHC_LANES_COMPOUND(+=)
  MHC_LANES_COMPOUND(-=)
  MHC_LANES_COMPOUND(*=)
  MHC_LANES_COMPOUND(/=)
#undef MHC_LANES_COMPOUND

#define MHC_LANES_BINARY(op)                                \
  friend Lanes operator op(const Lanes& a, const Lanes& b) { \
    Lanes r;                                                \
    r.v = a.v op b.v;                                       \
    return r;                                               \
  }
  MHC_LANES_BINARY(+)
  MHC_LANES_BINARY(-)
  MHC_LANES_BINARY(*)
  MHC_LANES_BINARY(/)
#undef MHC_LANES_BINARY

  friend Lanes operator-(const Lanes& a) {
    Lanes r;
    r.v = -a.v;
    return r;
  }
  friend Lanes exp_(const Lanes& a) {
    Lanes r;
    for (int l = 0; l < W; ++l) r.v[l] = std::exp(a.v[l]);
    return r;
  }
  friend Lanes sqrt_(const Lanes& a) {
    Lanes r;
    for (int l = 0; l < W; ++l) r.v[l] = std::sqrt(a.v[l]);
    return r;
  }
  friend Lanes tanh_(const Lanes& a) {
    Lanes r;
    for (int l = 0; l < W; ++l) r.v[l] = std::tanh(a.v[l]);
    return r;
  }
  friend Lanes max_(const Lanes& a, const Lanes& b) {
    Lanes r;
    for (int l = 0; l < W; ++l) r.v[l] = a.v[l] > b.v[l] ? a.v[l] : b.v[l];
    return r;
  }
};

}  // namespace mhc::cpu
