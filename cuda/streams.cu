// Stream kernels. Elementwise parts: one thread per output entry, summing over streams
// in stream order in fp32. The per-token inner products (dpre, dres, dpost) use one
// block per token: each warp owns a subset of the products and reduces it with a fixed
// shuffle tree (deterministic, no atomics); the elementwise gradient parts are computed
// by the same block.
#include "streams.cuh"

namespace mhc::cuda {
namespace {

constexpr int kBlock = 256;

template <class T>
__global__ void stream_expand_kernel(T* X, const T* x, int N, int n, int C) {
  const int64_t total = int64_t(N) * n * C;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = idx % C, t = idx / (int64_t(n) * C);
    X[idx] = x[t * C + c];
  }
}

template <class T>
__global__ void stream_collapse_kernel(T* x, const T* X, int N, int n, int C) {
  const int64_t total = int64_t(N) * C;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = idx % C, t = idx / C;
    const T* in = X + t * n * C + c;
    float s = to_f32(in[0]);
    for (int i = 1; i < n; ++i) s += to_f32(in[int64_t(i) * C]);
    x[idx] = from_f32<T>(s);
  }
}

template <class T>
__global__ void stream_aggregate_forward_kernel(T* u, const T* X, const float* pre, int N, int n,
                                                int C) {
  const int64_t total = int64_t(N) * C;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = idx % C, t = idx / C;
    const T* in = X + t * n * C + c;
    const float* p = pre + t * n;
    float s = p[0] * to_f32(in[0]);
    for (int i = 1; i < n; ++i) s += p[i] * to_f32(in[int64_t(i) * C]);
    u[idx] = from_f32<T>(s);
  }
}

// One block per token.
template <class T>
__global__ void stream_aggregate_backward_kernel(T* dX, float* dpre, const T* du, const T* X,
                                                 const float* pre, int n, int C) {
  const int64_t t = blockIdx.x;
  const T* g = du + t * C;
  const T* in = X + t * n * C;
  T* din = dX + t * n * C;
  const float* p = pre + t * n;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  // dpre_i = <X_i, du>: warp w handles streams w, w + warps, ...
  for (int i = warp; i < n; i += warps) {
    float s = 0.f;
    for (int c = lane; c < C; c += 32) s += to_f32(in[int64_t(i) * C + c]) * to_f32(g[c]);
    s = warp_sum(s);
    if (lane == 0) dpre[t * n + i] = s;
  }
  for (int idx = threadIdx.x; idx < n * C; idx += blockDim.x) {
    const int i = idx / C, c = idx % C;
    din[idx] = from_f32<T>(to_f32(din[idx]) + p[i] * to_f32(g[c]));
  }
}

template <class T>
__global__ void stream_merge_forward_kernel(T* Y, const T* X, const T* f, const float* res,
                                            const float* post, int N, int n, int C) {
  const int64_t total = int64_t(N) * n * C;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = idx % C;
    const int64_t ti = idx / C;  // t·n + i
    const int64_t t = ti / n;
    const int i = static_cast<int>(ti % n);
    const float* r = res + t * n * n + int64_t(i) * n;
    const T* in = X + t * n * C + c;
    float o = post[ti] * to_f32(f[t * C + c]);
    for (int j = 0; j < n; ++j) o += r[j] * to_f32(in[int64_t(j) * C]);
    Y[idx] = from_f32<T>(o);
  }
}

// One block per token.
template <class T>
__global__ void stream_merge_backward_kernel(T* dX, T* df, float* dres, float* dpost, const T* dY,
                                             const T* X, const T* f, const float* res,
                                             const float* post, int n, int C) {
  const int64_t t = blockIdx.x;
  const int64_t base = t * n * C;
  const T* g = dY + base;
  const T* in = X + base;
  const T* ft = f + t * C;
  const float* r = res + t * n * n;
  const float* p = post + t * n;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  // Products k < n²: dres_ij = <dY_i, X_j> (k = i·n + j); k = n² + i: dpost_i = <dY_i, f>.
  for (int k = warp; k < n * n + n; k += warps) {
    const int i = k < n * n ? k / n : k - n * n;
    const T* a = g + int64_t(i) * C;
    const T* b = k < n * n ? in + int64_t(k % n) * C : ft;
    float s = 0.f;
    for (int c = lane; c < C; c += 32) s += to_f32(a[c]) * to_f32(b[c]);
    s = warp_sum(s);
    if (lane == 0) {
      if (k < n * n)
        dres[t * n * n + k] = s;
      else
        dpost[t * n + i] = s;
    }
  }
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    float s = 0.f;
    for (int i = 0; i < n; ++i) s += p[i] * to_f32(g[int64_t(i) * C + c]);
    df[t * C + c] = from_f32<T>(s);
  }
  for (int idx = threadIdx.x; idx < n * C; idx += blockDim.x) {
    const int j = idx / C, c = idx % C;
    float s = 0.f;
    for (int i = 0; i < n; ++i) s += r[i * n + j] * to_f32(g[int64_t(i) * C + c]);
    dX[base + idx] = from_f32<T>(s);
  }
}

}  // namespace

template <class T>
void stream_expand(T* X, const T* x, int N, int n, int C, cudaStream_t stream) {
  const int64_t total = int64_t(N) * n * C;
  if (total <= 0) return;
  stream_expand_kernel<T><<<grid_for(total, kBlock), kBlock, 0, stream>>>(X, x, N, n, C);
  CUDA_CHECK_LAUNCH();
}

template <class T>
void stream_collapse(T* x, const T* X, int N, int n, int C, cudaStream_t stream) {
  const int64_t total = int64_t(N) * C;
  if (total <= 0) return;
  stream_collapse_kernel<T><<<grid_for(total, kBlock), kBlock, 0, stream>>>(x, X, N, n, C);
  CUDA_CHECK_LAUNCH();
}

template <class T>
void stream_aggregate_forward(T* u, const T* X, const float* pre, int N, int n, int C,
                              cudaStream_t stream) {
  const int64_t total = int64_t(N) * C;
  if (total <= 0) return;
  stream_aggregate_forward_kernel<T><<<grid_for(total, kBlock), kBlock, 0, stream>>>(u, X, pre, N,
                                                                                    n, C);
  CUDA_CHECK_LAUNCH();
}

template <class T>
void stream_aggregate_backward(T* dX, float* dpre, const T* du, const T* X, const float* pre,
                               int N, int n, int C, cudaStream_t stream) {
  if (N <= 0) return;
  stream_aggregate_backward_kernel<T><<<N, kBlock, 0, stream>>>(dX, dpre, du, X, pre, n, C);
  CUDA_CHECK_LAUNCH();
}

template <class T>
void stream_merge_forward(T* Y, const T* X, const T* f, const float* res, const float* post,
                          int N, int n, int C, cudaStream_t stream) {
  const int64_t total = int64_t(N) * n * C;
  if (total <= 0) return;
  stream_merge_forward_kernel<T><<<grid_for(total, kBlock), kBlock, 0, stream>>>(Y, X, f, res,
                                                                                post, N, n, C);
  CUDA_CHECK_LAUNCH();
}

template <class T>
void stream_merge_backward(T* dX, T* df, float* dres, float* dpost, const T* dY, const T* X,
                           const T* f, const float* res, const float* post, int N, int n, int C,
                           cudaStream_t stream) {
  if (N <= 0) return;
  stream_merge_backward_kernel<T><<<N, kBlock, 0, stream>>>(dX, df, dres, dpost, dY, X, f, res,
                                                            post, n, C);
  CUDA_CHECK_LAUNCH();
}

#define MHC_INSTANTIATE(T)                                                                     \
  template void stream_expand<T>(T*, const T*, int, int, int, cudaStream_t);                   \
  template void stream_collapse<T>(T*, const T*, int, int, int, cudaStream_t);                 \
  template void stream_aggregate_forward<T>(T*, const T*, const float*, int, int, int,         \
                                            cudaStream_t);                                     \
  template void stream_aggregate_backward<T>(T*, float*, const T*, const T*, const float*, int, \
                                             int, int, cudaStream_t);                          \
  template void stream_merge_forward<T>(T*, const T*, const T*, const float*, const float*, int, \
                                        int, int, cudaStream_t);                               \
  template void stream_merge_backward<T>(T*, T*, float*, float*, const T*, const T*, const T*,  \
                                         const float*, const float*, int, int, int, cudaStream_t);
MHC_INSTANTIATE(float)
MHC_INSTANTIATE(bf16)
#undef MHC_INSTANTIATE

}  // namespace mhc::cuda
