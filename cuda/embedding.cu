// Embedding lookup and its deterministic scatter-add.
// Backward: keys = (token id << 32) | position, padded to a power of two with the
// largest key, are bitonic-sorted (one launch per merge step: simple, and the key count
// is only the number of tokens). Keys are unique, so the order is fully determined.
// Then thread (sorted index i, channel c) that starts a run of equal ids sums the run
// in position order and adds it to dwte.
#include "embedding.cuh"

namespace mhc::cuda {
namespace {

constexpr int kBlock = 256;

int64_t pow2_at_least(int64_t x) {
  int64_t p = 1;
  while (p < x) p <<= 1;
  return p;
}

template <class T>
__global__ void embedding_forward_kernel(T* out, const int32_t* tokens, const T* wte, int N,
                                         int C) {
  const int64_t total = int64_t(N) * C;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = i / C, c = i % C;
    out[i] = wte[int64_t(tokens[t]) * C + c];
  }
}

__global__ void make_keys_kernel(uint64_t* keys, const int32_t* tokens, int N, int64_t padded) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < padded;
       i += int64_t(gridDim.x) * blockDim.x)
    keys[i] = i < N ? (uint64_t(uint32_t(tokens[i])) << 32) | uint64_t(i) : ~uint64_t(0);
}

// One compare-exchange step of the bitonic network (k: sequence size, j: distance).
__global__ void bitonic_step_kernel(uint64_t* keys, int64_t padded, int64_t j, int64_t k) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < padded;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t partner = i ^ j;
    if (partner <= i) continue;
    const bool ascending = (i & k) == 0;
    const uint64_t a = keys[i], b = keys[partner];
    if ((a > b) == ascending) {
      keys[i] = b;
      keys[partner] = a;
    }
  }
}

// grid.x: sorted index i; grid.y × block: channels.
template <class T>
__global__ void embedding_accumulate_kernel(float* dwte, const uint64_t* keys, const T* dout,
                                            int N, int C) {
  const int i = blockIdx.x;
  const int c = blockIdx.y * blockDim.x + threadIdx.x;
  if (c >= C) return;
  const uint32_t id = uint32_t(keys[i] >> 32);
  if (i > 0 && uint32_t(keys[i - 1] >> 32) == id) return;  // not the start of a run
  float sum = 0.f;
  for (int r = i; r < N && uint32_t(keys[r] >> 32) == id; ++r) {
    const int64_t t = int64_t(keys[r] & 0xffffffffu);
    sum += to_f32(dout[t * C + c]);
  }
  float* row = dwte + int64_t(id) * C;
  row[c] += sum;
}

}  // namespace

template <class T>
void embedding_forward(T* out, const int32_t* tokens, const T* wte, int N, int C,
                       cudaStream_t stream) {
  const int64_t total = int64_t(N) * C;
  if (total <= 0) return;
  launch<embedding_forward_kernel<T>>(grid_for(total, kBlock), kBlock, 0, stream, out, tokens, wte, N,
                                                                             C);
  CUDA_CHECK_LAUNCH();
}

size_t embedding_backward_workspace_bytes(int N) {
  return Workspace::bytes_for<uint64_t>(static_cast<size_t>(pow2_at_least(N)));
}

template <class T>
void embedding_backward(float* dwte, const int32_t* tokens, const T* dout, int N, int C,
                        Workspace& ws, cudaStream_t stream) {
  if (N <= 0 || C <= 0) return;
  const int64_t padded = pow2_at_least(N);
  uint64_t* keys = ws.take<uint64_t>(static_cast<size_t>(padded));
  const unsigned grid = grid_for(padded, kBlock);
  launch<make_keys_kernel>(grid, kBlock, 0, stream, keys, tokens, N, padded);
  CUDA_CHECK_LAUNCH();
  for (int64_t k = 2; k <= padded; k <<= 1)
    for (int64_t j = k >> 1; j > 0; j >>= 1) {
      launch<bitonic_step_kernel>(grid, kBlock, 0, stream, keys, padded, j, k);
      CUDA_CHECK_LAUNCH();
    }
  const dim3 acc_grid(static_cast<unsigned>(N), static_cast<unsigned>(ceil_div(C, kBlock)));
  launch<embedding_accumulate_kernel<T>>(acc_grid, kBlock, 0, stream, dwte, keys, dout, N, C);
  CUDA_CHECK_LAUNCH();
}

template void embedding_forward<float>(float*, const int32_t*, const float*, int, int,
                                       cudaStream_t);
template void embedding_forward<bf16>(bf16*, const int32_t*, const bf16*, int, int, cudaStream_t);
template void embedding_backward<float>(float*, const int32_t*, const float*, int, int,
                                        Workspace&, cudaStream_t);
template void embedding_backward<bf16>(float*, const int32_t*, const bf16*, int, int, Workspace&,
                                       cudaStream_t);

}  // namespace mhc::cuda
