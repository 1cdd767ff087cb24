// Fused softmax cross-entropy (Backend::cross_entropy) over the first V of Vp padded
// logit columns, one block per row; probabilities are never stored.
//   losses[t] (fp32) = logsumexp(logits[t, :V]) − logits[t, target]        (overwrite)
//   if dloss != 0: logits[t, i] = dloss·(softmax_i − [i == target]) for i < V, 0 for
//   V ≤ i < Vp (overwrite, in place, act type T).
// A target outside [0, V) gives a NaN loss and a zero gradient row; a NaN logit gives a
// NaN loss.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "common.cuh"

namespace mhc::cuda {

template <class T>
void cross_entropy(float* losses, T* logits, const int32_t* targets, int N, int V, int Vp,
                   float dloss, cudaStream_t stream);

}  // namespace mhc::cuda
