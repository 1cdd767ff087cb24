// Stream kernels: one block per token (blockIdx.x), each thread owning W consecutive
// channels (one 16-byte access per stream row, see vec.cuh). A thread reads every input
// row of its channels once, keeps the n stream values in registers, and writes every
// output row once: the kernels move exactly their inputs and outputs (merge: X, f in,
// Y out; aggregate: X in, u out; their backwards likewise), each with n + 1 or 2n + 1
// independent 16-byte loads in flight per thread.
// The token's coefficients are staged in shared memory. The per-token inner products
// (dpre, dres, dpost) are per-thread partial sums over the thread's channels, then a
// fixed-order block reduction (warp shuffle tree, then the warps in order): the result
// is deterministic for a given C. Forward kernels split long rows over grid.y blocks;
// kernels that reduce loop over the row inside one block.
// Sums over streams run in stream order in fp32, as the CPU reference does.
#include "streams.cuh"

#include "vec.cuh"

namespace mhc::cuda {
namespace {

constexpr int kMaxBlock = 256;
constexpr int kMaxWarps = kMaxBlock / 32;

template <int K>
constexpr int cap() {
  return K > 0 ? K : kMaxStreams;
}
// Loops over streams unroll fully for a compile-time stream count only (K = 0 is the rare
// runtime-n path: unrolling it 16-fold would only cost compile time).
template <int K>
constexpr int unroll() {
  return K > 0 ? K : 1;
}

// Sums each of `count` per-thread values over the block; thread v < count gets total v
// in out[v] (shared). partial: shared [kMaxWarps][count_cap].
template <int kCount, int kUnroll>
__device__ __forceinline__ void block_sums(const float* vals, int count, float* partial,
                                           float* out) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
#pragma unroll kUnroll
  for (int v = 0; v < kCount; ++v) {
    if (v >= count) break;
    const float s = warp_sum(vals[v]);
    if (lane == 0) partial[warp * kCount + v] = s;
  }
  __syncthreads();
  for (int v = threadIdx.x; v < count; v += blockDim.x) {
    float s = 0.f;
    for (int w = 0; w < warps; ++w) s += partial[w * kCount + v];
    out[v] = s;
  }
  __syncthreads();
}

template <class T, int W>
__global__ void __launch_bounds__(kMaxBlock)
    stream_expand_kernel(T* X, const T* x, int n, int C) {
  const int64_t t = blockIdx.x;
  const int c = (blockIdx.y * blockDim.x + threadIdx.x) * W;
  if (c >= C) return;
  float v[W];
  VecIO<T, W>::load(x + t * C + c, v);
  for (int i = 0; i < n; ++i) VecIO<T, W>::store(X + (t * n + i) * C + c, v);
}

template <class T, int K, int W>
__global__ void __launch_bounds__(kMaxBlock)
    stream_collapse_kernel(T* x, const T* X, int n_rt, int C) {
  const int n = K > 0 ? K : n_rt;
  const int64_t t = blockIdx.x;
  const int c = (blockIdx.y * blockDim.x + threadIdx.x) * W;
  if (c >= C) return;
  float s[W], v[W];
  VecIO<T, W>::load(X + t * n * C + c, s);
#pragma unroll unroll<K>()
  for (int i = 1; i < cap<K>(); ++i) {
    if (i >= n) break;
    VecIO<T, W>::load(X + (t * n + i) * C + c, v);
#pragma unroll
    for (int w = 0; w < W; ++w) s[w] += v[w];
  }
  VecIO<T, W>::store(x + t * C + c, s);
}

template <class T, int K, int W>
__global__ void __launch_bounds__(kMaxBlock)
    stream_aggregate_forward_kernel(T* u, const T* X, const float* pre, int n_rt, int C) {
  const int n = K > 0 ? K : n_rt;
  const int64_t t = blockIdx.x;
  const int c = (blockIdx.y * blockDim.x + threadIdx.x) * W;
  if (c >= C) return;
  const float* p = pre + t * n;
  float x[cap<K>()][W];
#pragma unroll unroll<K>()
  for (int i = 0; i < cap<K>(); ++i)
    if (i < n) VecIO<T, W>::load(X + (t * n + i) * C + c, x[i]);
  float s[W];
  const float p0 = p[0];
#pragma unroll
  for (int w = 0; w < W; ++w) s[w] = p0 * x[0][w];
#pragma unroll unroll<K>()
  for (int i = 1; i < cap<K>(); ++i) {
    if (i >= n) break;
    const float pi = p[i];
#pragma unroll
    for (int w = 0; w < W; ++w) s[w] += pi * x[i][w];
  }
  VecIO<T, W>::store(u + t * C + c, s);
}

// dX_i += pre_i du; dpre_i = <X_i, du>. One block per token, looping over the row.
template <class T, int K, int W>
__global__ void __launch_bounds__(kMaxBlock)
    stream_aggregate_backward_kernel(T* dX, float* dpre, const T* du, const T* X,
                                     const float* pre, int n_rt, int C) {
  constexpr int kCap = cap<K>();
  const int n = K > 0 ? K : n_rt;
  const int64_t t = blockIdx.x;
  __shared__ float partial[kMaxWarps * kCap];
  __shared__ float total[kCap];
  float p[kCap], dot[kCap];
#pragma unroll unroll<K>()
  for (int i = 0; i < kCap; ++i) {
    p[i] = i < n ? pre[t * n + i] : 0.f;
    dot[i] = 0.f;
  }
  for (int c = threadIdx.x * W; c < C; c += blockDim.x * W) {
    float g[W];
    VecIO<T, W>::load(du + t * C + c, g);
#pragma unroll unroll<K>()
    for (int i = 0; i < kCap; ++i) {
      if (i >= n) break;
      float x[W], d[W];
      const int64_t row = (t * n + i) * C + c;
      VecIO<T, W>::load(X + row, x);
      VecIO<T, W>::load(dX + row, d);
#pragma unroll
      for (int w = 0; w < W; ++w) {
        dot[i] += x[w] * g[w];
        d[w] += p[i] * g[w];
      }
      VecIO<T, W>::store(dX + row, d);
    }
  }
  block_sums<kCap, unroll<K>()>(dot, n, partial, total);
  for (int i = threadIdx.x; i < n; i += blockDim.x) dpre[t * n + i] = total[i];
}

// Y_i = Σ_j res_ij X_j + post_i f
template <class T, int K, int W>
__global__ void __launch_bounds__(kMaxBlock)
    stream_merge_forward_kernel(T* Y, const T* X, const T* f, const float* res, const float* post,
                                int n_rt, int C) {
  constexpr int kCap = cap<K>();
  const int n = K > 0 ? K : n_rt;
  const int64_t t = blockIdx.x;
  __shared__ float coef[kCap * kCap + kCap];  // res (row-major), then post
  for (int i = threadIdx.x; i < n * n + n; i += blockDim.x)
    coef[i] = i < n * n ? res[t * n * n + i] : post[t * n + (i - n * n)];
  __syncthreads();
  const int c = (blockIdx.y * blockDim.x + threadIdx.x) * W;
  if (c >= C) return;
  float x[kCap][W], fv[W];
#pragma unroll unroll<K>()
  for (int j = 0; j < kCap; ++j)
    if (j < n) VecIO<T, W>::load(X + (t * n + j) * C + c, x[j]);
  VecIO<T, W>::load(f + t * C + c, fv);
#pragma unroll unroll<K>()
  for (int i = 0; i < kCap; ++i) {
    if (i >= n) break;
    float o[W];
    const float pi = coef[n * n + i];
#pragma unroll
    for (int w = 0; w < W; ++w) o[w] = pi * fv[w];
#pragma unroll unroll<K>()
    for (int j = 0; j < kCap; ++j) {
      if (j >= n) break;
      const float r = coef[i * n + j];
#pragma unroll
      for (int w = 0; w < W; ++w) o[w] += r * x[j][w];
    }
    VecIO<T, W>::store(Y + (t * n + i) * C + c, o);
  }
}

// dX_j = Σ_i res_ij dY_i, df = Σ_i post_i dY_i (overwrite);
// dres_ij = <dY_i, X_j>, dpost_i = <dY_i, f> (overwrite). One block per token.
template <class T, int K, int W>
__global__ void __launch_bounds__(kMaxBlock)
    stream_merge_backward_kernel(T* dX, T* df, float* dres, float* dpost, const T* dY, const T* X,
                                 const T* f, const float* res, const float* post, int n_rt,
                                 int C) {
  constexpr int kCap = cap<K>();
  constexpr int kProducts = kCap * kCap + kCap;
  const int n = K > 0 ? K : n_rt;
  const int64_t t = blockIdx.x;
  __shared__ float coef[kProducts];
  __shared__ float partial[kMaxWarps * kProducts];
  __shared__ float total[kProducts];
  for (int i = threadIdx.x; i < n * n + n; i += blockDim.x)
    coef[i] = i < n * n ? res[t * n * n + i] : post[t * n + (i - n * n)];
  __syncthreads();
  float dot[kProducts];  // [i·n + j] = <dY_i, X_j>, [n² + i] = <dY_i, f>
#pragma unroll
  for (int k = 0; k < kProducts; ++k) dot[k] = 0.f;
  for (int c = threadIdx.x * W; c < C; c += blockDim.x * W) {
    float g[kCap][W], x[kCap][W], fv[W];
#pragma unroll unroll<K>()
    for (int i = 0; i < kCap; ++i) {
      if (i >= n) break;
      VecIO<T, W>::load(dY + (t * n + i) * C + c, g[i]);
      VecIO<T, W>::load(X + (t * n + i) * C + c, x[i]);
    }
    VecIO<T, W>::load(f + t * C + c, fv);
    float o[W];
#pragma unroll
    for (int w = 0; w < W; ++w) o[w] = 0.f;
#pragma unroll unroll<K>()
    for (int i = 0; i < kCap; ++i) {
      if (i >= n) break;
      const float pi = coef[n * n + i];
#pragma unroll
      for (int w = 0; w < W; ++w) {
        o[w] += pi * g[i][w];
        dot[n * n + i] += g[i][w] * fv[w];
      }
#pragma unroll unroll<K>()
      for (int j = 0; j < kCap; ++j) {
        if (j >= n) break;
#pragma unroll
        for (int w = 0; w < W; ++w) dot[i * n + j] += g[i][w] * x[j][w];
      }
    }
    VecIO<T, W>::store(df + t * C + c, o);
#pragma unroll unroll<K>()
    for (int j = 0; j < kCap; ++j) {
      if (j >= n) break;
#pragma unroll
      for (int w = 0; w < W; ++w) o[w] = 0.f;
#pragma unroll unroll<K>()
      for (int i = 0; i < kCap; ++i) {
        if (i >= n) break;
        const float r = coef[i * n + j];
#pragma unroll
        for (int w = 0; w < W; ++w) o[w] += r * g[i][w];
      }
      VecIO<T, W>::store(dX + (t * n + j) * C + c, o);
    }
  }
  block_sums<kProducts, (K > 0 ? K * K + K : 1)>(dot, n * n + n, partial, total);
  for (int k = threadIdx.x; k < n * n + n; k += blockDim.x) {
    if (k < n * n)
      dres[t * n * n + k] = total[k];
    else
      dpost[t * n + (k - n * n)] = total[k];
  }
}

// Launch shapes: forward kernels cover a row with grid.y blocks of row_block() threads;
// reducing kernels use one block of row_block() threads per token.
struct RowLaunch {
  dim3 grid;
  int block;
};

RowLaunch split_rows(int N, int C, int W) {
  const int vectors = (C + W - 1) / W;
  const int block = row_block(vectors);
  return {dim3(static_cast<unsigned>(N), static_cast<unsigned>(ceil_div(vectors, block))), block};
}

RowLaunch one_block_rows(int N, int C, int W) {
  return {dim3(static_cast<unsigned>(N)), row_block((C + W - 1) / W)};
}

}  // namespace

template <class T>
void stream_expand(T* X, const T* x, int N, int n, int C, cudaStream_t stream) {
  if (int64_t(N) * n * C <= 0) return;
  with_vec_width<T>(C, {X, x}, [&](auto w) {
    constexpr int W = decltype(w)::value;
    const RowLaunch l = split_rows(N, C, W);
    launch<stream_expand_kernel<T, W>>(l.grid, l.block, 0, stream, X, x, n, C);
  });
  CUDA_CHECK_LAUNCH();
}

template <class T>
void stream_collapse(T* x, const T* X, int N, int n, int C, cudaStream_t stream) {
  if (int64_t(N) * C <= 0) return;
  with_stream_count(n, [&](auto k) {
    with_vec_width<T>(C, {x, X}, [&](auto w) {
      constexpr int W = decltype(w)::value;
      const RowLaunch l = split_rows(N, C, W);
      launch<stream_collapse_kernel<T, decltype(k)::value, W>>(l.grid, l.block, 0, stream, x, X, n, C);
    });
  });
  CUDA_CHECK_LAUNCH();
}

template <class T>
void stream_aggregate_forward(T* u, const T* X, const float* pre, int N, int n, int C,
                              cudaStream_t stream) {
  if (int64_t(N) * C <= 0) return;
  with_stream_count(n, [&](auto k) {
    with_vec_width<T>(C, {u, X}, [&](auto w) {
      constexpr int W = decltype(w)::value;
      const RowLaunch l = split_rows(N, C, W);
      launch<stream_aggregate_forward_kernel<T, decltype(k)::value, W>>(l.grid, l.block, 0, stream, u, X, pre, n, C);
    });
  });
  CUDA_CHECK_LAUNCH();
}

template <class T>
void stream_aggregate_backward(T* dX, float* dpre, const T* du, const T* X, const float* pre,
                               int N, int n, int C, cudaStream_t stream) {
  if (N <= 0) return;
  with_stream_count(n, [&](auto k) {
    with_vec_width<T>(C, {dX, du, X}, [&](auto w) {
      constexpr int W = decltype(w)::value;
      const RowLaunch l = one_block_rows(N, C, W);
      launch<stream_aggregate_backward_kernel<T, decltype(k)::value, W>>(l.grid, l.block, 0, stream, dX, dpre, du, X, pre, n, C);
    });
  });
  CUDA_CHECK_LAUNCH();
}

template <class T>
void stream_merge_forward(T* Y, const T* X, const T* f, const float* res, const float* post,
                          int N, int n, int C, cudaStream_t stream) {
  if (int64_t(N) * n * C <= 0) return;
  with_stream_count(n, [&](auto k) {
    with_vec_width<T>(C, {Y, X, f}, [&](auto w) {
      constexpr int W = decltype(w)::value;
      const RowLaunch l = split_rows(N, C, W);
      launch<stream_merge_forward_kernel<T, decltype(k)::value, W>>(l.grid, l.block, 0, stream, Y, X, f, res, post, n, C);
    });
  });
  CUDA_CHECK_LAUNCH();
}

template <class T>
void stream_merge_backward(T* dX, T* df, float* dres, float* dpost, const T* dY, const T* X,
                           const T* f, const float* res, const float* post, int N, int n, int C,
                           cudaStream_t stream) {
  if (N <= 0) return;
  with_stream_count(n, [&](auto k) {
    with_vec_width<T>(C, {dX, df, dY, X, f}, [&](auto w) {
      constexpr int W = decltype(w)::value;
      const RowLaunch l = one_block_rows(N, C, W);
      launch<stream_merge_backward_kernel<T, decltype(k)::value, W>>(l.grid, l.block, 0, stream, dX, df, dres, dpost, dY, X, f, res, post, n, C);
    });
  });
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
