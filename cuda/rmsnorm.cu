// RMSNorm kernels. Forward: one block per row. Backward: a fixed number G of blocks
// (a function of rows only), block b handling rows b, b+G, ...; each computes dx for its
// rows and accumulates Σ dout·x̂ for its rows into partial[b, C] (each entry owned by one
// thread), then one thread per channel adds the G partials in order: deterministic.
#include "rmsnorm.cuh"

namespace mhc::cuda {
namespace {

constexpr int kBlock = 128;
constexpr int kRowBlocks = 256;

int row_blocks(int rows) { return rows < kRowBlocks ? (rows < 1 ? 1 : rows) : kRowBlocks; }

template <class T>
__global__ void rmsnorm_forward_kernel(T* out, float* rstd, const T* x, const T* w, int C,
                                       float eps) {
  const int64_t r = blockIdx.x;
  const T* xr = x + r * C;
  T* yr = out + r * C;
  float ss = 0.f;
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    const float v = to_f32(xr[c]);
    ss += v * v;
  }
  ss = block_sum(ss);
  const float s = 1.0f / sqrtf(ss / C + eps);
  if (threadIdx.x == 0) rstd[r] = s;
  for (int c = threadIdx.x; c < C; c += blockDim.x)
    yr[c] = from_f32<T>(to_f32(xr[c]) * s * to_f32(w[c]));
}

template <class T>
__global__ void rmsnorm_backward_kernel(T* dx, float* partial, const T* dout, const T* x,
                                        const T* w, const float* rstd, int rows, int C) {
  float* part = partial + int64_t(blockIdx.x) * C;
  for (int c = threadIdx.x; c < C; c += blockDim.x) part[c] = 0.f;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * C;
    const T* gr = dout + r * C;
    T* dxr = dx + r * C;
    const float s = rstd[r];
    float dot = 0.f;
    for (int c = threadIdx.x; c < C; c += blockDim.x)
      dot += to_f32(gr[c]) * to_f32(w[c]) * (to_f32(xr[c]) * s);
    dot = block_sum(dot) / C;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
      const float xv = to_f32(xr[c]), g = to_f32(gr[c]);
      part[c] += g * (xv * s);
      dxr[c] = from_f32<T>(to_f32(dxr[c]) + s * (g * to_f32(w[c]) - xv * s * dot));
    }
  }
}

__global__ void rmsnorm_dw_kernel(float* dw, const float* partial, int blocks, int C) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float s = 0.f;
  for (int b = 0; b < blocks; ++b) s += partial[int64_t(b) * C + c];
  dw[c] += s;
}

}  // namespace

template <class T>
void rmsnorm_forward(T* out, float* rstd, const T* x, const T* w, int rows, int C, float eps,
                     cudaStream_t stream) {
  if (rows <= 0) return;
  launch<rmsnorm_forward_kernel<T>>(rows, kBlock, 0, stream, out, rstd, x, w, C, eps);
  CUDA_CHECK_LAUNCH();
}

size_t rmsnorm_backward_workspace_bytes(int rows, int C) {
  return Workspace::bytes_for<float>(static_cast<size_t>(row_blocks(rows)) * C);
}

template <class T>
void rmsnorm_backward(T* dx, float* dw, const T* dout, const T* x, const T* w, const float* rstd,
                      int rows, int C, Workspace& ws, cudaStream_t stream) {
  if (rows <= 0 || C <= 0) return;
  const int blocks = row_blocks(rows);
  float* partial = ws.take<float>(static_cast<size_t>(blocks) * C);
  launch<rmsnorm_backward_kernel<T>>(blocks, kBlock, 0, stream, dx, partial, dout, x, w, rstd, rows, C);
  CUDA_CHECK_LAUNCH();
  launch<rmsnorm_dw_kernel>(static_cast<unsigned>(ceil_div(C, 128)), 128, 0, stream, dw, partial,
                                                                                 blocks, C);
  CUDA_CHECK_LAUNCH();
}

template void rmsnorm_forward<float>(float*, float*, const float*, const float*, int, int, float,
                                     cudaStream_t);
template void rmsnorm_forward<bf16>(bf16*, float*, const bf16*, const bf16*, int, int, float,
                                    cudaStream_t);
template void rmsnorm_backward<float>(float*, float*, const float*, const float*, const float*,
                                      const float*, int, int, Workspace&, cudaStream_t);
template void rmsnorm_backward<bf16>(bf16*, float*, const bf16*, const bf16*, const bf16*,
                                     const float*, int, int, Workspace&, cudaStream_t);

}  // namespace mhc::cuda
