// Cross-entropy: per row a block max, a block sum of exp(x − max), then (with a
// gradient) one more pass that overwrites the row. The target logit is read before
// the barriers that precede any overwrite.
#include "cross_entropy.cuh"

#include <cmath>

namespace mhc::cuda {
namespace {

constexpr int kBlock = 512;

template <class T>
__global__ void cross_entropy_kernel(float* losses, T* logits, const int32_t* targets, int V,
                                     int Vp, float dloss) {
  const int64_t r = blockIdx.x;
  T* row = logits + r * Vp;
  const int target = targets[r];
  const bool valid = target >= 0 && target < V;
  const float x_target = valid ? to_f32(row[target]) : 0.f;
  float mx = -INFINITY;
  for (int i = threadIdx.x; i < V; i += blockDim.x) mx = fmaxf(mx, to_f32(row[i]));
  mx = block_max(mx);
  float sum = 0.f;
  for (int i = threadIdx.x; i < V; i += blockDim.x) sum += expf(to_f32(row[i]) - mx);
  sum = block_sum(sum);
  const float lse = mx + logf(sum);
  if (threadIdx.x == 0) losses[r] = valid ? lse - x_target : NAN;
  if (dloss == 0.f || !valid) return;
  for (int i = threadIdx.x; i < Vp; i += blockDim.x) {
    float g = 0.f;
    if (i < V) {
      g = expf(to_f32(row[i]) - lse) * dloss;
      if (i == target) g -= dloss;
    }
    row[i] = from_f32<T>(g);
  }
}

}  // namespace

template <class T>
void cross_entropy(float* losses, T* logits, const int32_t* targets, int N, int V, int Vp,
                   float dloss, cudaStream_t stream) {
  if (N <= 0) return;
  cross_entropy_kernel<T><<<N, kBlock, 0, stream>>>(losses, logits, targets, V, Vp, dloss);
  CUDA_CHECK_LAUNCH();
}

template void cross_entropy<float>(float*, float*, const int32_t*, int, int, int, float,
                                   cudaStream_t);
template void cross_entropy<bf16>(float*, bf16*, const int32_t*, int, int, int, float,
                                  cudaStream_t);

}  // namespace mhc::cuda
