// Residual-stream ops of HC/mHC on X [N,n,C] (Backend::stream_*). X, x, u, f, Y and their
// gradients are in the activation type T; the per-token coefficients pre [N,n],
// post [N,n], res [N,n,n] and their gradients are fp32.
//   expand:    X_i = x                                                   (overwrite)
//   collapse:  x = Σ_i X_i                                               (overwrite)
//   aggregate: u = Σ_i pre_i X_i                                         (overwrite)
//              backward: dX_i += pre_i du;  dpre_i = <X_i, du>           (dpre overwrite)
//   merge:     Y_i = Σ_j res_ij X_j + post_i f                           (overwrite)
//              backward: dX_j = Σ_i res_ij dY_i, df = Σ_i post_i dY_i,
//                        dres_ij = <dY_i, X_j>, dpost_i = <dY_i, f>       (all overwrite)
#pragma once
#include <cuda_runtime.h>

#include "common.cuh"

namespace mhc::cuda {

template <class T>
void stream_expand(T* X, const T* x, int N, int n, int C, cudaStream_t stream);
template <class T>
void stream_collapse(T* x, const T* X, int N, int n, int C, cudaStream_t stream);
template <class T>
void stream_aggregate_forward(T* u, const T* X, const float* pre, int N, int n, int C,
                              cudaStream_t stream);
template <class T>
void stream_aggregate_backward(T* dX, float* dpre, const T* du, const T* X, const float* pre,
                               int N, int n, int C, cudaStream_t stream);
template <class T>
void stream_merge_forward(T* Y, const T* X, const T* f, const float* res, const float* post,
                          int N, int n, int C, cudaStream_t stream);
template <class T>
void stream_merge_backward(T* dX, T* df, float* dres, float* dpost, const T* dY, const T* X,
                           const T* f, const float* res, const float* post, int N, int n, int C,
                           cudaStream_t stream);

}  // namespace mhc::cuda
