// AdamW with decoupled weight decay on fp32 master weights (Backend::adamw), the
// PyTorch formulation:
//   g ← g·grad_scale; m ← β1 m + (1−β1) g; v ← β2 v + (1−β2) g²
//   p ← p·(1 − lr·wd) − lr·(m·c1)/(sqrt(v·c2) + eps),  c1 = 1/(1−β1^t), c2 = 1/(1−β2^t)
// p, m, v updated in place; g read only. The bf16 working copy is refreshed by the
// model (Backend::copy), not here.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace mhc::cuda {

struct AdamWConstants {
  float lr, beta1, beta2, eps, decay, grad_scale, c1, c2;  // decay = 1 − lr·wd
};

// Host-side constants, computed in double like the CPU reference.
AdamWConstants adamw_constants(double lr, double beta1, double beta2, double eps,
                               double weight_decay, double grad_scale, int64_t step);

void adamw(float* p, const float* g, float* m, float* v, int64_t count, const AdamWConstants& k,
           cudaStream_t stream);

}  // namespace mhc::cuda
