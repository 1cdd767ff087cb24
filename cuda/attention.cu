// Attention kernels: simple, exact, fp32-accumulating tiles (cuDNN flash attention is a
// later replacement for speed). A block has 4 warps; each warp owns 4 "rows" and the 32
// lanes of a warp index the 32 entries of a streamed tile, so a score is one lane's
// full dot product over the head (no shuffles per score) and the weighted sums
// broadcast each lane's probability with one shuffle.
//   forward:  block = (16 queries, b·h); K/V tiles of 32 keys; online softmax.
//   dQ:       block = (16 queries, b·h); K/V tiles of 32 keys.
//   dK, dV:   block = (16 keys, b·h); Q/dO tiles of 32 queries from the first query
//             that sees the keys to T; so every output has one owner and no atomics.
// Tiles live in shared memory as fp32 rows padded to hd+1 floats: lane-indexed row reads
// then hit distinct banks. Each lane keeps ceil(hd/32) ≤ 8 output dims per row.
#include "attention.cuh"

#include <cmath>

namespace mhc::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kRowsPerWarp = 4;
constexpr int kBlockRows = kWarps * kRowsPerWarp;  // rows (queries or keys) per block
constexpr int kTile = 32;                          // streamed entries per tile = lanes
constexpr int kDimsPerLane = kAttentionMaxHeadDim / 32;

// Copies rows [first, first+count) of one head's q, k or v (third = 0, 1, 2) into a
// padded fp32 tile; rows past T are zero.
template <class T>
__device__ __forceinline__ void load_tile(float* tile, const T* base, int first, int count, int T_,
                                          int hd, int64_t row_stride, int ld) {
  for (int idx = threadIdx.x; idx < count * hd; idx += blockDim.x) {
    const int r = idx / hd, d = idx % hd, t = first + r;
    tile[r * ld + d] = t < T_ ? to_f32(base[int64_t(t) * row_stride + d]) : 0.f;
  }
}

__device__ __forceinline__ float dot_rows(const float* a, const float* b, int hd) {
  float s = 0.f;
  for (int d = 0; d < hd; ++d) s += a[d] * b[d];
  return s;
}

template <class T>
__global__ void __launch_bounds__(kThreads)
    attention_forward_kernel(T* out, float* lse, const T* qkv, int T_, int n_head, int hd,
                             float scale) {
  MHC_DYNAMIC_SHARED(float, smem);
  const int ld = hd + 1;
  float* Qs = smem;                  // [kBlockRows][ld]
  float* Ks = Qs + kBlockRows * ld;  // [kTile][ld]
  float* Vs = Ks + kTile * ld;       // [kTile][ld]
  const int C = n_head * hd;
  const int64_t row_stride = 3 * int64_t(C);
  const int bh = blockIdx.y, b = bh / n_head, h = bh % n_head;
  const int q0 = blockIdx.x * kBlockRows;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const T* base = qkv + int64_t(b) * T_ * row_stride + int64_t(h) * hd;

  load_tile(Qs, base, q0, kBlockRows, T_, hd, row_stride, ld);
  float m[kRowsPerWarp], l[kRowsPerWarp], acc[kRowsPerWarp][kDimsPerLane];
#pragma unroll
  for (int rr = 0; rr < kRowsPerWarp; ++rr) {
    m[rr] = -INFINITY;
    l[rr] = 0.f;
#pragma unroll
    for (int e = 0; e < kDimsPerLane; ++e) acc[rr][e] = 0.f;
  }
  const int q_last = min(q0 + kBlockRows, T_) - 1;
  for (int k0 = 0; k0 <= q_last; k0 += kTile) {
    __syncthreads();  // the previous tile is consumed (first pass: Q is loaded)
    load_tile(Ks, base + C, k0, kTile, T_, hd, row_stride, ld);
    load_tile(Vs, base + 2 * C, k0, kTile, T_, hd, row_stride, ld);
    __syncthreads();
#pragma unroll
    for (int rr = 0; rr < kRowsPerWarp; ++rr) {
      const int qr = warp * kRowsPerWarp + rr, t = q0 + qr;
      if (t >= T_ || k0 > t) continue;  // warp-uniform
      const int j = k0 + lane;
      const float s = j <= t ? dot_rows(Qs + qr * ld, Ks + lane * ld, hd) * scale : -INFINITY;
      const float m_new = fmaxf(m[rr], warp_max(s));  // finite: key k0 ≤ t is visible
      const float corr = expf(m[rr] - m_new);
      const float p = j <= t ? expf(s - m_new) : 0.f;
      l[rr] = l[rr] * corr + warp_sum(p);
      m[rr] = m_new;
#pragma unroll
      for (int e = 0; e < kDimsPerLane; ++e) acc[rr][e] *= corr;
      const int keys = min(kTile, t - k0 + 1);
      for (int jj = 0; jj < keys; ++jj) {
        const float pj = __shfl_sync(0xffffffffu, p, jj);
        const float* vr = Vs + jj * ld;
#pragma unroll
        for (int e = 0; e < kDimsPerLane; ++e) {
          const int d = e * 32 + lane;
          if (d < hd) acc[rr][e] += pj * vr[d];
        }
      }
    }
  }
#pragma unroll
  for (int rr = 0; rr < kRowsPerWarp; ++rr) {
    const int t = q0 + warp * kRowsPerWarp + rr;
    if (t >= T_) continue;
    const float inv = 1.f / l[rr];
    T* o = out + (int64_t(b) * T_ + t) * C + int64_t(h) * hd;
#pragma unroll
    for (int e = 0; e < kDimsPerLane; ++e) {
      const int d = e * 32 + lane;
      if (d < hd) o[d] = from_f32<T>(acc[rr][e] * inv);
    }
    if (lane == 0) lse[int64_t(bh) * T_ + t] = m[rr] + logf(l[rr]);
  }
}

// D[bh, t] = dO_t · O_t (= Σ_j P_tj dP_tj), one warp per (b, t, h) row (warp-stride).
template <class T>
__global__ void attention_delta_kernel(float* D, const T* dout, const T* out, int B, int T_,
                                       int n_head, int hd) {
  const int64_t rows = int64_t(B) * T_ * n_head;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x / 32);
  const int lane = threadIdx.x & 31;
  for (int64_t row = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / 32; row < rows;
       row += warps) {
    const int h = static_cast<int>(row % n_head);
    const int64_t bt = row / n_head;
    const int64_t offset = bt * n_head * hd + int64_t(h) * hd;
    float s = 0.f;
    for (int d = lane; d < hd; d += 32) s += to_f32(dout[offset + d]) * to_f32(out[offset + d]);
    s = warp_sum(s);
    const int64_t b = bt / T_, t = bt % T_;
    if (lane == 0) D[(b * n_head + h) * T_ + t] = s;
  }
}

template <class T>
__global__ void __launch_bounds__(kThreads)
    attention_dq_kernel(T* dqkv, const T* dout, const T* qkv, const float* lse, const float* D,
                        int T_, int n_head, int hd, float scale) {
  MHC_DYNAMIC_SHARED(float, smem);
  const int ld = hd + 1;
  float* Qs = smem;                   // [kBlockRows][ld]
  float* dOs = Qs + kBlockRows * ld;  // [kBlockRows][ld]
  float* Ks = dOs + kBlockRows * ld;  // [kTile][ld]
  float* Vs = Ks + kTile * ld;        // [kTile][ld]
  const int C = n_head * hd;
  const int64_t row_stride = 3 * int64_t(C);
  const int bh = blockIdx.y, b = bh / n_head, h = bh % n_head;
  const int q0 = blockIdx.x * kBlockRows;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const T* base = qkv + int64_t(b) * T_ * row_stride + int64_t(h) * hd;
  const T* dbase = dout + int64_t(b) * T_ * C + int64_t(h) * hd;

  load_tile(Qs, base, q0, kBlockRows, T_, hd, row_stride, ld);
  load_tile(dOs, dbase, q0, kBlockRows, T_, hd, C, ld);
  float row_lse[kRowsPerWarp], row_D[kRowsPerWarp], acc[kRowsPerWarp][kDimsPerLane];
#pragma unroll
  for (int rr = 0; rr < kRowsPerWarp; ++rr) {
    const int t = q0 + warp * kRowsPerWarp + rr;
    row_lse[rr] = t < T_ ? lse[int64_t(bh) * T_ + t] : 0.f;
    row_D[rr] = t < T_ ? D[int64_t(bh) * T_ + t] : 0.f;
#pragma unroll
    for (int e = 0; e < kDimsPerLane; ++e) acc[rr][e] = 0.f;
  }
  const int q_last = min(q0 + kBlockRows, T_) - 1;
  for (int k0 = 0; k0 <= q_last; k0 += kTile) {
    __syncthreads();
    load_tile(Ks, base + C, k0, kTile, T_, hd, row_stride, ld);
    load_tile(Vs, base + 2 * C, k0, kTile, T_, hd, row_stride, ld);
    __syncthreads();
#pragma unroll
    for (int rr = 0; rr < kRowsPerWarp; ++rr) {
      const int qr = warp * kRowsPerWarp + rr, t = q0 + qr;
      if (t >= T_ || k0 > t) continue;  // warp-uniform
      const int j = k0 + lane;
      float ds = 0.f;
      if (j <= t) {
        const float p = expf(dot_rows(Qs + qr * ld, Ks + lane * ld, hd) * scale - row_lse[rr]);
        const float dp = dot_rows(dOs + qr * ld, Vs + lane * ld, hd);
        ds = p * (dp - row_D[rr]) * scale;
      }
      const int keys = min(kTile, t - k0 + 1);
      for (int jj = 0; jj < keys; ++jj) {
        const float dsj = __shfl_sync(0xffffffffu, ds, jj);
        const float* kr = Ks + jj * ld;
#pragma unroll
        for (int e = 0; e < kDimsPerLane; ++e) {
          const int d = e * 32 + lane;
          if (d < hd) acc[rr][e] += dsj * kr[d];
        }
      }
    }
  }
#pragma unroll
  for (int rr = 0; rr < kRowsPerWarp; ++rr) {
    const int t = q0 + warp * kRowsPerWarp + rr;
    if (t >= T_) continue;
    T* dq = dqkv + (int64_t(b) * T_ + t) * row_stride + int64_t(h) * hd;
#pragma unroll
    for (int e = 0; e < kDimsPerLane; ++e) {
      const int d = e * 32 + lane;
      if (d < hd) dq[d] = from_f32<T>(acc[rr][e]);
    }
  }
}

template <class T>
__global__ void __launch_bounds__(kThreads)
    attention_dkv_kernel(T* dqkv, const T* dout, const T* qkv, const float* lse, const float* D,
                         int T_, int n_head, int hd, float scale) {
  MHC_DYNAMIC_SHARED(float, smem);
  const int ld = hd + 1;
  float* Ks = smem;                  // [kBlockRows][ld]
  float* Vs = Ks + kBlockRows * ld;  // [kBlockRows][ld]
  float* Qs = Vs + kBlockRows * ld;  // [kTile][ld]
  float* dOs = Qs + kTile * ld;      // [kTile][ld]
  float* lse_s = dOs + kTile * ld;   // [kTile]
  float* D_s = lse_s + kTile;        // [kTile]
  const int C = n_head * hd;
  const int64_t row_stride = 3 * int64_t(C);
  const int bh = blockIdx.y, b = bh / n_head, h = bh % n_head;
  const int k0 = blockIdx.x * kBlockRows;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const T* base = qkv + int64_t(b) * T_ * row_stride + int64_t(h) * hd;
  const T* dbase = dout + int64_t(b) * T_ * C + int64_t(h) * hd;
  const float* lse_bh = lse + int64_t(bh) * T_;
  const float* D_bh = D + int64_t(bh) * T_;

  load_tile(Ks, base + C, k0, kBlockRows, T_, hd, row_stride, ld);
  load_tile(Vs, base + 2 * C, k0, kBlockRows, T_, hd, row_stride, ld);
  float dk[kRowsPerWarp][kDimsPerLane], dv[kRowsPerWarp][kDimsPerLane];
#pragma unroll
  for (int rr = 0; rr < kRowsPerWarp; ++rr)
#pragma unroll
    for (int e = 0; e < kDimsPerLane; ++e) dk[rr][e] = dv[rr][e] = 0.f;

  for (int q0 = k0 / kTile * kTile; q0 < T_; q0 += kTile) {
    __syncthreads();
    load_tile(Qs, base, q0, kTile, T_, hd, row_stride, ld);
    load_tile(dOs, dbase, q0, kTile, T_, hd, C, ld);
    if (threadIdx.x < kTile) {
      const int i = q0 + threadIdx.x;
      lse_s[threadIdx.x] = i < T_ ? lse_bh[i] : 0.f;
      D_s[threadIdx.x] = i < T_ ? D_bh[i] : 0.f;
    }
    __syncthreads();
#pragma unroll
    for (int rr = 0; rr < kRowsPerWarp; ++rr) {
      const int kr = warp * kRowsPerWarp + rr, j = k0 + kr;
      if (j >= T_ || q0 + kTile - 1 < j) continue;  // warp-uniform: no query sees key j
      const int i = q0 + lane;
      float p = 0.f, ds = 0.f;
      if (i >= j && i < T_) {
        p = expf(dot_rows(Qs + lane * ld, Ks + kr * ld, hd) * scale - lse_s[lane]);
        const float dp = dot_rows(dOs + lane * ld, Vs + kr * ld, hd);
        ds = p * (dp - D_s[lane]) * scale;
      }
      const int first = j > q0 ? j - q0 : 0;
      const int last = min(kTile, T_ - q0);
      for (int ii = first; ii < last; ++ii) {
        const float pi = __shfl_sync(0xffffffffu, p, ii);
        const float dsi = __shfl_sync(0xffffffffu, ds, ii);
        const float* qrow = Qs + ii * ld;
        const float* dorow = dOs + ii * ld;
#pragma unroll
        for (int e = 0; e < kDimsPerLane; ++e) {
          const int d = e * 32 + lane;
          if (d < hd) {
            dv[rr][e] += pi * dorow[d];
            dk[rr][e] += dsi * qrow[d];
          }
        }
      }
    }
  }
#pragma unroll
  for (int rr = 0; rr < kRowsPerWarp; ++rr) {
    const int j = k0 + warp * kRowsPerWarp + rr;
    if (j >= T_) continue;
    T* drow = dqkv + (int64_t(b) * T_ + j) * row_stride + int64_t(h) * hd;
#pragma unroll
    for (int e = 0; e < kDimsPerLane; ++e) {
      const int d = e * 32 + lane;
      if (d < hd) {
        drow[C + d] = from_f32<T>(dk[rr][e]);
        drow[2 * C + d] = from_f32<T>(dv[rr][e]);
      }
    }
  }
}

// Shapes a valid config can still reach but these kernels do not support: a clear error
// naming the config keys, not an internal one (the CPU backend has no such limits).
void check_shape(int B, int T_, int n_head, int hd) {
  if (hd < 1 || hd > kAttentionMaxHeadDim)
    throw MhcError("the CUDA attention kernels support head sizes up to " +
                   std::to_string(kAttentionMaxHeadDim) + ", but model.d_model / model.n_head = " +
                   std::to_string(hd) + ": use more heads or train.device=cpu");
  if (int64_t(B) * n_head > 65535)
    throw MhcError("the CUDA attention kernels support micro_batch × n_head up to 65535, not " +
                   std::to_string(int64_t(B) * n_head) + ": lower train.micro_batch");
  (void)T_;
}

size_t tile_bytes(int rows, int hd) { return sizeof(float) * size_t(rows) * size_t(hd + 1); }

}  // namespace

template <class T>
void attention_forward(T* out, float* lse, const T* qkv, int B, int T_, int n_head, int head_dim,
                       cudaStream_t stream) {
  if (B <= 0 || T_ <= 0 || n_head <= 0) return;
  check_shape(B, T_, n_head, head_dim);
  const size_t smem = tile_bytes(kBlockRows + 2 * kTile, head_dim);
  allow_shared_memory(attention_forward_kernel<T>, smem);
  const dim3 grid(static_cast<unsigned>(ceil_div(T_, kBlockRows)), static_cast<unsigned>(B * n_head));
  const float scale = 1.0f / sqrtf(static_cast<float>(head_dim));
  launch<attention_forward_kernel<T>>(grid, kThreads, smem, stream, out, lse, qkv, T_, n_head,
                                                                head_dim, scale);
  CUDA_CHECK_LAUNCH();
}

size_t attention_backward_workspace_bytes(int B, int T_, int n_head) {
  return Workspace::bytes_for<float>(size_t(B) * T_ * n_head);
}

template <class T>
void attention_backward(T* dqkv, const T* dout, const T* qkv, const T* out, const float* lse,
                        int B, int T_, int n_head, int head_dim, Workspace& ws,
                        cudaStream_t stream) {
  if (B <= 0 || T_ <= 0 || n_head <= 0) return;
  check_shape(B, T_, n_head, head_dim);
  float* D = ws.take<float>(size_t(B) * T_ * n_head);
  const int64_t rows = int64_t(B) * T_ * n_head;
  launch<attention_delta_kernel<T>>(grid_for(rows * 32, 256), 256, 0, stream, D, dout, out, B, T_,
                                                                          n_head, head_dim);
  CUDA_CHECK_LAUNCH();
  const float scale = 1.0f / sqrtf(static_cast<float>(head_dim));
  const dim3 grid(static_cast<unsigned>(ceil_div(T_, kBlockRows)), static_cast<unsigned>(B * n_head));
  const size_t dq_smem = tile_bytes(2 * kBlockRows + 2 * kTile, head_dim);
  allow_shared_memory(attention_dq_kernel<T>, dq_smem);
  launch<attention_dq_kernel<T>>(grid, kThreads, dq_smem, stream, dqkv, dout, qkv, lse, D, T_, n_head,
                                                              head_dim, scale);
  CUDA_CHECK_LAUNCH();
  const size_t dkv_smem = tile_bytes(2 * kBlockRows + 2 * kTile, head_dim) + 2 * kTile * sizeof(float);
  allow_shared_memory(attention_dkv_kernel<T>, dkv_smem);
  launch<attention_dkv_kernel<T>>(grid, kThreads, dkv_smem, stream, dqkv, dout, qkv, lse, D, T_,
                                                                n_head, head_dim, scale);
  CUDA_CHECK_LAUNCH();
}

template void attention_forward<float>(float*, float*, const float*, int, int, int, int,
                                       cudaStream_t);
template void attention_forward<bf16>(bf16*, float*, const bf16*, int, int, int, int,
                                      cudaStream_t);
template void attention_backward<float>(float*, const float*, const float*, const float*,
                                        const float*, int, int, int, int, Workspace&,
                                        cudaStream_t);
template void attention_backward<bf16>(bf16*, const bf16*, const bf16*, const bf16*,
                                       const float*, int, int, int, int, Workspace&,
                                       cudaStream_t);

}  // namespace mhc::cuda
