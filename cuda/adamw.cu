// AdamW: one grid-stride thread per parameter, the same fp32 operation order as the CPU.
#include "adamw.cuh"

#include <cmath>

#include "common.cuh"

namespace mhc::cuda {
namespace {

constexpr int kBlock = 256;

__global__ void adamw_kernel(float* p, const float* g, float* m, float* v, int64_t count,
                             AdamWConstants k) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float gi = g[i] * k.grad_scale;
    const float mi = k.beta1 * m[i] + (1.f - k.beta1) * gi;
    const float vi = k.beta2 * v[i] + (1.f - k.beta2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] = p[i] * k.decay - k.lr * (mi * k.c1) / (sqrtf(vi * k.c2) + k.eps);
  }
}

}  // namespace

AdamWConstants adamw_constants(double lr, double beta1, double beta2, double eps,
                               double weight_decay, double grad_scale, int64_t step) {
  AdamWConstants k;
  k.lr = static_cast<float>(lr);
  k.beta1 = static_cast<float>(beta1);
  k.beta2 = static_cast<float>(beta2);
  k.eps = static_cast<float>(eps);
  k.decay = static_cast<float>(1.0 - lr * weight_decay);
  k.grad_scale = static_cast<float>(grad_scale);
  k.c1 = static_cast<float>(1.0 / (1.0 - std::pow(beta1, static_cast<double>(step))));
  k.c2 = static_cast<float>(1.0 / (1.0 - std::pow(beta2, static_cast<double>(step))));
  return k;
}

void adamw(float* p, const float* g, float* m, float* v, int64_t count, const AdamWConstants& k,
           cudaStream_t stream) {
  if (count <= 0) return;
  launch<adamw_kernel>(grid_for(count, kBlock), kBlock, 0, stream, p, g, m, v, count, k);
  CUDA_CHECK_LAUNCH();
}

}  // namespace mhc::cuda
