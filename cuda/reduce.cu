// Column sums: pass 1 gives each of G row chunks a block column of 32 columns × 8 row
// lanes, reduced over the lanes in a fixed order into partial[G, width]; pass 2 adds the
// G partials of each column in chunk order.
#include "reduce.cuh"

namespace mhc::cuda {
namespace {

constexpr int kCols = 32, kLanes = 8, kMaxChunks = 128, kRowsPerChunk = 64;

int chunks_for(int64_t rows) {
  const int64_t g = ceil_div(rows, kRowsPerChunk);
  return static_cast<int>(g < 1 ? 1 : (g > kMaxChunks ? kMaxChunks : g));
}

__global__ void column_partial_kernel(float* partial, const float* in, int64_t rows, int width,
                                      int64_t ld, int64_t chunk) {
  __shared__ float lanes[kLanes][kCols + 1];
  const int col = blockIdx.x * kCols + threadIdx.x;
  const int64_t begin = blockIdx.y * chunk;
  const int64_t end = begin + chunk < rows ? begin + chunk : rows;
  float s = 0.f;
  if (col < width)
    for (int64_t r = begin + threadIdx.y; r < end; r += kLanes) s += in[r * ld + col];
  lanes[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && col < width) {
    float total = 0.f;
    for (int l = 0; l < kLanes; ++l) total += lanes[l][threadIdx.x];
    partial[int64_t(blockIdx.y) * width + col] = total;
  }
}

__global__ void column_finish_kernel(float* out, const float* partial, int chunks, int width) {
  const int col = blockIdx.x * blockDim.x + threadIdx.x;
  if (col >= width) return;
  float s = 0.f;
  for (int g = 0; g < chunks; ++g) s += partial[int64_t(g) * width + col];
  out[col] += s;
}

}  // namespace

size_t column_sum_workspace_bytes(int64_t rows, int width) {
  return Workspace::bytes_for<float>(static_cast<size_t>(chunks_for(rows)) * width);
}

void column_sum_accumulate(float* out, const float* in, int64_t rows, int width, int64_t ld,
                           Workspace& ws, cudaStream_t stream) {
  if (rows <= 0 || width <= 0) return;
  const int chunks = chunks_for(rows);
  const int64_t chunk = ceil_div(rows, chunks);
  float* partial = ws.take<float>(static_cast<size_t>(chunks) * width);
  const dim3 grid(static_cast<unsigned>(ceil_div(width, kCols)), static_cast<unsigned>(chunks));
  launch<column_partial_kernel>(grid, dim3(kCols, kLanes), 0, stream, partial, in, rows, width, ld,
                                                                  chunk);
  CUDA_CHECK_LAUNCH();
  launch<column_finish_kernel>(static_cast<unsigned>(ceil_div(width, 128)), 128, 0, stream,
      out, partial, chunks, width);
  CUDA_CHECK_LAUNCH();
}

}  // namespace mhc::cuda
