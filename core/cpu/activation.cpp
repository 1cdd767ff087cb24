// MLP activations. SwiGLU: out = silu(gate)·up on gate_up = [gate | up] per row.
// GELU: tanh approximation 0.5·x·(1 + tanh(√(2/π)(x + 0.044715x³))).
#include <cmath>

#include "kernels.h"
#include "vec_math.h"

namespace mhc::cpu {

template <class T>
void swiglu_forward(T* out, const T* gate_up, int N, int H) {
#pragma omp parallel for schedule(static)
  for (int r = 0; r < N; ++r) {
    const T* g = gate_up + static_cast<int64_t>(r) * 2 * H;
    const T* u = g + H;
    T* o = out + static_cast<int64_t>(r) * H;
#pragma omp simd
    for (int i = 0; i < H; ++i) o[i] = g[i] * vsigmoid(g[i]) * u[i];
  }
}

template <class T>
void swiglu_backward(T* dgate_up, const T* dout, const T* gate_up, int N, int H) {
#pragma omp parallel for schedule(static)
  for (int r = 0; r < N; ++r) {
    const T* g = gate_up + static_cast<int64_t>(r) * 2 * H;
    const T* u = g + H;
    const T* d = dout + static_cast<int64_t>(r) * H;
    T* dg = dgate_up + static_cast<int64_t>(r) * 2 * H;
    T* du = dg + H;
#pragma omp simd
    for (int i = 0; i < H; ++i) {
      const T s = vsigmoid(g[i]);
      const T silu = g[i] * s;
      du[i] = d[i] * silu;
      dg[i] = d[i] * u[i] * s * (T(1) + g[i] * (T(1) - s));
    }
  }
}

template <class T>
void gelu_forward(T* out, const T* x, int N, int H) {
  const T k = static_cast<T>(0.7978845608028654);  // sqrt(2/pi)
  const int64_t total = static_cast<int64_t>(N) * H;
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < total; ++i) {
    const T v = x[i];
    out[i] = T(0.5) * v * (T(1) + vtanh(k * (v + T(0.044715) * v * v * v)));
  }
}

template <class T>
void gelu_backward(T* dx, const T* dout, const T* x, int N, int H) {
  const T k = static_cast<T>(0.7978845608028654);
  const int64_t total = static_cast<int64_t>(N) * H;
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < total; ++i) {
    const T v = x[i];
    const T th = vtanh(k * (v + T(0.044715) * v * v * v));
    const T dth = (T(1) - th * th) * k * (T(1) + T(3 * 0.044715) * v * v);
    dx[i] = dout[i] * (T(0.5) * (T(1) + th) + T(0.5) * v * dth);
  }
}

template void swiglu_forward<float>(float*, const float*, int, int);
template void swiglu_forward<double>(double*, const double*, int, int);
template void swiglu_backward<float>(float*, const float*, const float*, int, int);
template void swiglu_backward<double>(double*, const double*, const double*, int, int);
template void gelu_forward<float>(float*, const float*, int, int);
template void gelu_forward<double>(double*, const double*, int, int);
template void gelu_backward<float>(float*, const float*, const float*, int, int);
template void gelu_backward<double>(double*, const double*, const double*, int, int);

}  // namespace mhc::cpu
