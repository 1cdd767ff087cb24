// Rotary position embedding on the q and k thirds of qkv [B,T,3C], in place
// (Backend::rope_forward/backward). Rotate-half convention: in a head of size d, entry
// i < d/2 pairs with i + d/2; both rotate by t·theta^(−2i/d) (t = position in the
// sequence). inverse = true applies the transposed rotation (the backward on dqkv).
#pragma once
#include <cuda_runtime.h>

#include "common.cuh"

namespace mhc::cuda {

template <class T>
void rope(T* qkv, int B, int T_, int n_head, int head_dim, float theta, bool inverse,
          cudaStream_t stream);

}  // namespace mhc::cuda
