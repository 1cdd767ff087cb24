// Elementwise kernels: grid-stride loops, fp32 arithmetic. sum_squares: pass 1 has a
// fixed number of blocks (a function of count only) each writing one double partial;
// pass 2 adds the partials in block order in one block.
#include "elementwise.cuh"

#include <algorithm>

namespace mhc::cuda {
namespace {

constexpr int kBlock = 256;
constexpr int kSumBlocks = 512;  // pass-1 blocks at most; also the partial count

template <class T>
__global__ void fill_kernel(T* p, int64_t count, float value) {
  const T v = from_f32<T>(value);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count;
       i += int64_t(gridDim.x) * blockDim.x)
    p[i] = v;
}

template <class Dst, class Src>
__global__ void convert_kernel(Dst* dst, const Src* src, int64_t count) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count;
       i += int64_t(gridDim.x) * blockDim.x)
    dst[i] = from_f32<Dst>(to_f32(src[i]));
}

template <class T>
__global__ void add_kernel(T* out, const T* a, const T* b, int64_t count) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count;
       i += int64_t(gridDim.x) * blockDim.x)
    out[i] = from_f32<T>(to_f32(a[i]) + to_f32(b[i]));
}

template <class T>
__global__ void scale_kernel(T* p, int64_t count, float s) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count;
       i += int64_t(gridDim.x) * blockDim.x)
    p[i] = from_f32<T>(to_f32(p[i]) * s);
}

template <class T>
__global__ void sum_squares_partial_kernel(double* partial, const T* x, int64_t count) {
  double s = 0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count;
       i += int64_t(gridDim.x) * blockDim.x) {
    const double v = to_f32(x[i]);
    s += v * v;
  }
  s = block_sum(s);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

__global__ void sum_partials_kernel(double* out, const double* partial, int count) {
  double s = 0;
  for (int i = threadIdx.x; i < count; i += blockDim.x) s += partial[i];
  s = block_sum(s);
  if (threadIdx.x == 0) *out = s;
}

}  // namespace

template <class T>
void fill(T* p, int64_t count, float value, cudaStream_t stream) {
  if (count <= 0) return;
  launch<fill_kernel<T>>(grid_for(count, kBlock), kBlock, 0, stream, p, count, value);
  CUDA_CHECK_LAUNCH();
}

template <class Dst, class Src>
void convert(Dst* dst, const Src* src, int64_t count, cudaStream_t stream) {
  if (count <= 0) return;
  launch<convert_kernel<Dst, Src>>(grid_for(count, kBlock), kBlock, 0, stream, dst, src, count);
  CUDA_CHECK_LAUNCH();
}

template <class T>
void add(T* out, const T* a, const T* b, int64_t count, cudaStream_t stream) {
  if (count <= 0) return;
  launch<add_kernel<T>>(grid_for(count, kBlock), kBlock, 0, stream, out, a, b, count);
  CUDA_CHECK_LAUNCH();
}

template <class T>
void scale(T* p, int64_t count, float s, cudaStream_t stream) {
  if (count <= 0) return;
  launch<scale_kernel<T>>(grid_for(count, kBlock), kBlock, 0, stream, p, count, s);
  CUDA_CHECK_LAUNCH();
}

size_t sum_squares_workspace_bytes() {
  return Workspace::bytes_for<double>(kSumBlocks) + Workspace::bytes_for<double>(1);
}

template <class T>
double sum_squares(const T* x, int64_t count, Workspace& ws, cudaStream_t stream) {
  if (count <= 0) return 0.0;
  double* partial = ws.take<double>(kSumBlocks);
  double* total = ws.take<double>(1);
  const int blocks = static_cast<int>(std::min<int64_t>(kSumBlocks, ceil_div(count, kBlock)));
  launch<sum_squares_partial_kernel<T>>(blocks, kBlock, 0, stream, partial, x, count);
  CUDA_CHECK_LAUNCH();
  launch<sum_partials_kernel>(1, kBlock, 0, stream, total, partial, blocks);
  CUDA_CHECK_LAUNCH();
  double host = 0;
  CUDA_CHECK(cudaMemcpyAsync(&host, total, sizeof(double), cudaMemcpyDeviceToHost, stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));
  return host;
}

template void fill<float>(float*, int64_t, float, cudaStream_t);
template void fill<bf16>(bf16*, int64_t, float, cudaStream_t);
template void convert<float, bf16>(float*, const bf16*, int64_t, cudaStream_t);
template void convert<bf16, float>(bf16*, const float*, int64_t, cudaStream_t);
template void add<float>(float*, const float*, const float*, int64_t, cudaStream_t);
template void add<bf16>(bf16*, const bf16*, const bf16*, int64_t, cudaStream_t);
template void scale<float>(float*, int64_t, float, cudaStream_t);
template void scale<bf16>(bf16*, int64_t, float, cudaStream_t);
template double sum_squares<float>(const float*, int64_t, Workspace&, cudaStream_t);
template double sum_squares<bf16>(const bf16*, int64_t, Workspace&, cudaStream_t);

}  // namespace mhc::cuda
