// Activation kernels: one grid-stride thread per hidden unit, fp32 math matching the CPU
// reference formulas term by term.
#include "activation.cuh"

namespace mhc::cuda {
namespace {

constexpr int kBlock = 256;
constexpr float kGeluK = 0.7978845608028654f;  // sqrt(2/pi)
constexpr float kGeluC = 0.044715f;

template <class T>
__global__ void swiglu_forward_kernel(T* out, const T* gate_up, int N, int H) {
  const int64_t total = int64_t(N) * H;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = idx / H, i = idx % H;
    const float g = to_f32(gate_up[r * 2 * H + i]), u = to_f32(gate_up[r * 2 * H + H + i]);
    const float s = 1.f / (1.f + expf(-g));
    out[idx] = from_f32<T>(g * s * u);
  }
}

template <class T>
__global__ void swiglu_backward_kernel(T* dgate_up, const T* dout, const T* gate_up, int N, int H) {
  const int64_t total = int64_t(N) * H;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = idx / H, i = idx % H;
    const float g = to_f32(gate_up[r * 2 * H + i]), u = to_f32(gate_up[r * 2 * H + H + i]);
    const float d = to_f32(dout[idx]);
    const float s = 1.f / (1.f + expf(-g));
    dgate_up[r * 2 * H + H + i] = from_f32<T>(d * (g * s));
    dgate_up[r * 2 * H + i] = from_f32<T>(d * u * s * (1.f + g * (1.f - s)));
  }
}

template <class T>
__global__ void gelu_forward_kernel(T* out, const T* x, int64_t total) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float v = to_f32(x[i]);
    out[i] = from_f32<T>(0.5f * v * (1.f + tanhf(kGeluK * (v + kGeluC * v * v * v))));
  }
}

template <class T>
__global__ void gelu_backward_kernel(T* dx, const T* dout, const T* x, int64_t total) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float v = to_f32(x[i]);
    const float th = tanhf(kGeluK * (v + kGeluC * v * v * v));
    const float dth = (1.f - th * th) * kGeluK * (1.f + 3.f * kGeluC * v * v);
    dx[i] = from_f32<T>(to_f32(dout[i]) * (0.5f * (1.f + th) + 0.5f * v * dth));
  }
}

}  // namespace

template <class T>
void swiglu_forward(T* out, const T* gate_up, int N, int H, cudaStream_t stream) {
  const int64_t total = int64_t(N) * H;
  if (total <= 0) return;
  launch<swiglu_forward_kernel<T>>(grid_for(total, kBlock), kBlock, 0, stream, out, gate_up, N, H);
  CUDA_CHECK_LAUNCH();
}

template <class T>
void swiglu_backward(T* dgate_up, const T* dout, const T* gate_up, int N, int H,
                     cudaStream_t stream) {
  const int64_t total = int64_t(N) * H;
  if (total <= 0) return;
  launch<swiglu_backward_kernel<T>>(grid_for(total, kBlock), kBlock, 0, stream, dgate_up, dout,
                                                                           gate_up, N, H);
  CUDA_CHECK_LAUNCH();
}

template <class T>
void gelu_forward(T* out, const T* x, int N, int H, cudaStream_t stream) {
  const int64_t total = int64_t(N) * H;
  if (total <= 0) return;
  launch<gelu_forward_kernel<T>>(grid_for(total, kBlock), kBlock, 0, stream, out, x, total);
  CUDA_CHECK_LAUNCH();
}

template <class T>
void gelu_backward(T* dx, const T* dout, const T* x, int N, int H, cudaStream_t stream) {
  const int64_t total = int64_t(N) * H;
  if (total <= 0) return;
  launch<gelu_backward_kernel<T>>(grid_for(total, kBlock), kBlock, 0, stream, dx, dout, x, total);
  CUDA_CHECK_LAUNCH();
}

#define MHC_INSTANTIATE(T)                                                             \
  template void swiglu_forward<T>(T*, const T*, int, int, cudaStream_t);               \
  template void swiglu_backward<T>(T*, const T*, const T*, int, int, cudaStream_t);    \
  template void gelu_forward<T>(T*, const T*, int, int, cudaStream_t);                 \
  template void gelu_backward<T>(T*, const T*, const T*, int, int, cudaStream_t);
MHC_INSTANTIATE(float)
MHC_INSTANTIATE(bf16)
#undef MHC_INSTANTIATE

}  // namespace mhc::cuda
