// Cross-entropy, one block per row: one read of the row keeping an online (max, Σexp)
// pair per thread (16-byte loads where the row allows), a fixed-order block combination
// of the pairs, then (with a gradient) one more pass that overwrites the row with
// dloss·(softmax − onehot). The row is read twice and written once (it was read three
// times before). The target logit is read before the barriers that precede any overwrite.
#include "cross_entropy.cuh"

#include <cmath>

#include "vec.cuh"

namespace mhc::cuda {
namespace {

constexpr int kBlock = 512;

// (m, s) ← (m, s) ⊕ (m2, s2): the pair of max and Σexp(x − max) of a union. An empty
// side has s = 0; a NaN anywhere makes s NaN and stays NaN, as in the CPU reference (a
// partly-NaN row must give a NaN loss, not a finite one).
__device__ __forceinline__ void combine(float& m, float& s, float m2, float s2) {
  if (s2 == 0.f) return;
  if (s == 0.f) {
    m = m2;
    s = s2;
    return;
  }
  const float M = fmaxf(m, m2);
  s = s * expf(m - M) + s2 * expf(m2 - M);
  m = M;
}

__device__ __forceinline__ void add_value(float& m, float& s, float x) {
  if (isnan(x)) {
    s = NAN;
  } else if (x == -INFINITY) {
    return;  // contributes exp(−∞) = 0
  } else if (x > m) {
    s = (s == 0.f ? 0.f : s * expf(m - x)) + 1.f;  // NaN·0 keeps a NaN
    m = x;
  } else {
    s += expf(x - m);
  }
}

template <class T, int W>
__global__ void __launch_bounds__(kBlock)
    cross_entropy_kernel(float* losses, T* logits, const int32_t* targets, int V, int Vp,
                         float dloss) {
  __shared__ float part_m[kBlock / 32], part_s[kBlock / 32];
  const int64_t r = blockIdx.x;
  T* row = logits + r * Vp;
  const int target = targets[r];
  const bool valid = target >= 0 && target < V;
  const float x_target = valid ? to_f32(row[target]) : 0.f;
  float m = -INFINITY, s = 0.f;
  for (int i = threadIdx.x * W; i < V; i += blockDim.x * W) {
    float x[W];
    VecIO<T, W>::load(row + i, x);
#pragma unroll
    for (int w = 0; w < W; ++w)
      if (i + w < V) add_value(m, s, x[w]);
  }
  // Warp tree, then the warps in order.
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    const float m2 = __shfl_xor_sync(0xffffffffu, m, offset);
    const float s2 = __shfl_xor_sync(0xffffffffu, s, offset);
    combine(m, s, m2, s2);
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) {
    part_m[warp] = m;
    part_s[warp] = s;
  }
  __syncthreads();
  m = part_m[0];
  s = part_s[0];
  for (int w = 1; w < static_cast<int>(blockDim.x >> 5); ++w) combine(m, s, part_m[w], part_s[w]);
  const float lse = m + logf(s);
  if (threadIdx.x == 0) losses[r] = valid ? lse - x_target : NAN;
  if (dloss == 0.f) return;
  for (int i = threadIdx.x * W; i < Vp; i += blockDim.x * W) {
    float x[W];
    VecIO<T, W>::load(row + i, x);
#pragma unroll
    for (int w = 0; w < W; ++w) {
      const int j = i + w;
      float g = 0.f;
      if (valid && j < V) {
        g = expf(x[w] - lse) * dloss;
        if (j == target) g -= dloss;
      }
      x[w] = g;
    }
    VecIO<T, W>::store(row + i, x);
  }
}

}  // namespace

template <class T>
void cross_entropy(float* losses, T* logits, const int32_t* targets, int N, int V, int Vp,
                   float dloss, cudaStream_t stream) {
  if (N <= 0) return;
  with_vec_width<T>(Vp, {logits}, [&](auto w) {
    constexpr int W = decltype(w)::value;
    launch<cross_entropy_kernel<T, W>>(N, kBlock, 0, stream, losses, logits, targets, V, Vp, dloss);
  });
  CUDA_CHECK_LAUNCH();
}

template void cross_entropy<float>(float*, float*, const int32_t*, int, int, int, float,
                                   cudaStream_t);
template void cross_entropy<bf16>(float*, bf16*, const int32_t*, int, int, int, float,
                                  cudaStream_t);

}  // namespace mhc::cuda
