// RoPE: one thread per rotated pair. The angle is computed in double, like the CPU
// reference (positions up to thousands times a frequency lose digits in fp32), then
// cos/sin are rounded to fp32 and the rotation itself is fp32.
#include "rope.cuh"

namespace mhc::cuda {
namespace {

constexpr int kBlock = 256;

template <class T>
__global__ void rope_kernel(T* qkv, int B, int T_, int n_head, int head_dim, double theta,
                            bool inverse) {
  const int half = head_dim / 2, C = n_head * head_dim;
  // pair index = ((bt · 2 + part) · n_head + h) · half + i
  const int64_t total = int64_t(B) * T_ * 2 * n_head * half;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int i = static_cast<int>(idx % half);
    int64_t rest = idx / half;
    const int h = static_cast<int>(rest % n_head);
    rest /= n_head;
    const int part = static_cast<int>(rest % 2);  // 0: q, 1: k
    const int64_t bt = rest / 2;
    const int t = static_cast<int>(bt % T_);
    const double freq = pow(theta, -2.0 * i / head_dim);
    double sd, cd;
    sincos(t * freq, &sd, &cd);
    const float c = static_cast<float>(cd);
    const float s = static_cast<float>(inverse ? -sd : sd);
    T* v = qkv + bt * 3 * C + int64_t(part) * C + int64_t(h) * head_dim;
    const float x0 = to_f32(v[i]), x1 = to_f32(v[i + half]);
    v[i] = from_f32<T>(x0 * c - x1 * s);
    v[i + half] = from_f32<T>(x1 * c + x0 * s);
  }
}

}  // namespace

template <class T>
void rope(T* qkv, int B, int T_, int n_head, int head_dim, float theta, bool inverse,
          cudaStream_t stream) {
  const int64_t total = int64_t(B) * T_ * 2 * n_head * (head_dim / 2);
  if (total <= 0) return;
  launch<rope_kernel<T>>(grid_for(total, kBlock), kBlock, 0, stream, qkv, B, T_, n_head, head_dim,
                                                                 static_cast<double>(theta),
                                                                 inverse);
  CUDA_CHECK_LAUNCH();
}

template void rope<float>(float*, int, int, int, int, float, bool, cudaStream_t);
template void rope<bf16>(bf16*, int, int, int, int, float, bool, cudaStream_t);

}  // namespace mhc::cuda
