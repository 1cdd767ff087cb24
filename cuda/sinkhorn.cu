// Sinkhorn kernels: one thread per matrix; the matrix and its scratch are thread-local
// arrays sized by the stream-count template K (see with_stream_count). The per-iteration
// sums needed by the exact backward (2·n·iters floats per matrix) live in thread-local
// memory when n ∈ {1,2,4,8} and iters ≤ kLocalIters (the compiler interleaves local
// memory across threads, so those accesses coalesce and stay in L1/L2), otherwise in
// global scratch. The only DRAM traffic is then Z, dH in and H, dZ out.
#include "sinkhorn.cuh"

#include "mhc_math.h"

namespace mhc::cuda {
namespace {

constexpr int kBlock = 128;
constexpr int kLocalIters = 32;

bool sums_in_global(int n, int iters) {
  return (n != 1 && n != 2 && n != 4 && n != 8) || iters > kLocalIters;
}

template <int K>
__global__ void sinkhorn_forward_kernel(float* H, const float* Z, int count, int n_rt, int iters) {
  constexpr int kCap = K > 0 ? K : kMaxStreams;
  const int n = K > 0 ? K : n_rt, nn = n * n;
  const int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (p >= count) return;
  float z[kCap * kCap], h[kCap * kCap], m[kCap * kCap];
  for (int i = 0; i < nn; ++i) z[i] = Z[p * nn + i];
  math::sinkhorn_forward(z, n, iters, h, m, static_cast<float*>(nullptr));
  for (int i = 0; i < nn; ++i) H[p * nn + i] = h[i];
}

template <int K>
__global__ void sinkhorn_backward_kernel(float* dZ, const float* dH, const float* Z, float* sums,
                                         int count, int n_rt, int iters) {
  constexpr int kCap = K > 0 ? K : kMaxStreams;
  const int n = K > 0 ? K : n_rt, nn = n * n;
  const int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (p >= count) return;
  float z[kCap * kCap], dh[kCap * kCap], dz[kCap * kCap], m[kCap * kCap], g[kCap * kCap];
  float local_sums[K > 0 ? 2 * K * kLocalIters : 1];
  float* rc = K > 0 && iters <= kLocalIters ? local_sums : sums + p * 2 * n * iters;
  for (int i = 0; i < nn; ++i) {
    z[i] = Z[p * nn + i];
    dh[i] = dH[p * nn + i];
  }
  math::sinkhorn_backward(z, dh, n, iters, dz, m, g, rc);
  for (int i = 0; i < nn; ++i) dZ[p * nn + i] = dz[i];
}

}  // namespace

void sinkhorn_forward(float* H, const float* Z, int count, int n, int iters, cudaStream_t stream) {
  if (count <= 0) return;
  const unsigned grid = static_cast<unsigned>(ceil_div(count, kBlock));
  with_stream_count(n, [&](auto k) {
    launch<sinkhorn_forward_kernel<decltype(k)::value>>(grid, kBlock, 0, stream, H, Z, count, n, iters);
  });
  CUDA_CHECK_LAUNCH();
}

size_t sinkhorn_backward_workspace_bytes(int count, int n, int iters) {
  if (!sums_in_global(n, iters)) return Workspace::bytes_for<float>(1);
  return Workspace::bytes_for<float>(size_t(count) * 2 * n * (iters > 0 ? iters : 1));
}

void sinkhorn_backward(float* dZ, const float* dH, const float* Z, int count, int n, int iters,
                       Workspace& ws, cudaStream_t stream) {
  if (count <= 0) return;
  float* sums = ws.take<float>(sums_in_global(n, iters)
                                   ? size_t(count) * 2 * n * (iters > 0 ? iters : 1)
                                   : size_t(1));
  const unsigned grid = static_cast<unsigned>(ceil_div(count, kBlock));
  with_stream_count(n, [&](auto k) {
    launch<sinkhorn_backward_kernel<decltype(k)::value>>(grid, kBlock, 0, stream, dZ, dH, Z, sums,
                                                                              count, n, iters);
  });
  CUDA_CHECK_LAUNCH();
}

}  // namespace mhc::cuda
