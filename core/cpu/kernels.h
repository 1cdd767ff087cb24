// CPU reference kernels, templated on the scalar type (float for training, double for
// gradient checks). Contracts are those of the matching Backend ops in core/backend.h;
// each kernel lives in the file named after its op.
#pragma once
#include <cstdint>

#include "../mhc_math.h"

namespace mhc::cpu {

template <class T>
void gemm(bool trans_a, bool trans_b, int m, int n, int k, T alpha, const T* A, int lda, const T* B,
          int ldb, T beta, T* C, int ldc);

template <class T>
void embedding_forward(T* out, const int32_t* tokens, const T* wte, int N, int C);
template <class T>
void embedding_backward(T* dwte, const int32_t* tokens, const T* dout, int N, int C);

template <class T>
void rmsnorm_forward(T* out, T* rstd, const T* x, const T* w, int rows, int C, T eps);
template <class T>
void rmsnorm_backward(T* dx, T* dw, const T* dout, const T* x, const T* w, const T* rstd, int rows,
                      int C);

template <class T>
void rope(T* qkv, int B, int T_, int n_head, int head_dim, double theta, bool inverse);

template <class T>
void attention_forward(T* out, T* lse, const T* qkv, int B, int T_, int n_head, int head_dim);
template <class T>
void attention_backward(T* dqkv, const T* dout, const T* qkv, const T* out, const T* lse, int B,
                        int T_, int n_head, int head_dim);

template <class T>
void swiglu_forward(T* out, const T* gate_up, int N, int H);
template <class T>
void swiglu_backward(T* dgate_up, const T* dout, const T* gate_up, int N, int H);
template <class T>
void gelu_forward(T* out, const T* x, int N, int H);
template <class T>
void gelu_backward(T* dx, const T* dout, const T* x, int N, int H);

template <class T>
void cross_entropy(T* losses, T* logits, const int32_t* targets, int N, int V, int Vp, T dloss);

template <class T>
void stream_expand(T* X, const T* x, int N, int n, int C);
template <class T>
void stream_collapse(T* x, const T* X, int N, int n, int C);
template <class T>
void stream_aggregate_forward(T* u, const T* X, const T* pre, int N, int n, int C);
template <class T>
void stream_aggregate_backward(T* dX, T* dpre, const T* du, const T* X, const T* pre, int N, int n,
                               int C);
template <class T>
void stream_merge_forward(T* Y, const T* X, const T* f, const T* res, const T* post, int N, int n,
                          int C);
template <class T>
void stream_merge_backward(T* dX, T* df, T* dres, T* dpost, const T* dY, const T* X, const T* f,
                           const T* res, const T* post, int N, int n, int C);

template <class T>
void sinkhorn_forward(T* H, const T* Z, int count, int n, int iters);
template <class T>
void sinkhorn_backward(T* dZ, const T* dH, const T* Z, int count, int n, int iters);

template <class T>
void mhc_coeff_forward(T* pre, T* post, T* res, T* m, T* rms, const T* X, const T* phi,
                       const T* alpha, const T* bias, int N, int n, int C, int iters, T eps);
template <class T>
void mhc_coeff_backward(T* dX, T* dphi, T* dalpha, T* dbias, const T* dpre, const T* dpost,
                        const T* dres, const T* X, const T* phi, const T* alpha, const T* bias,
                        const T* m, const T* rms, int N, int n, int C, int iters);

// mHC variants (core/mhc_math.h MhcVariant); phi/alpha/m/rms null for static mHC.
template <class T>
void mhc_variant_coeff_forward(T* pre, T* post, T* res, T* m, T* rms, const T* X, const T* phi,
                               const T* alpha, const T* bias, int N, int n, int C, int iters,
                               T eps, const math::MhcVariant& v);
template <class T>
void mhc_variant_coeff_backward(T* dX, T* dphi, T* dalpha, T* dbias, const T* dpre,
                                const T* dpost, const T* dres, const T* X, const T* phi,
                                const T* alpha, const T* bias, const T* m, const T* rms, int N,
                                int n, int C, int iters, const math::MhcVariant& v);

// Learned collapse weights: w [N,n] = σ(α m + β) + eps with m = (v·φ)/r (saved, as r).
template <class T>
void collapse_weights_forward(T* w, T* m, T* rms, const T* X, const T* phi, const T* alpha,
                              const T* bias, int N, int n, int C, T eps);
template <class T>
void collapse_weights_backward(T* dX, T* dphi, T* dalpha, T* dbias, const T* dw, const T* X,
                               const T* phi, const T* alpha, const T* bias, const T* m,
                               const T* rms, int N, int n, int C);

// HC coefficients. Dynamic pointers (norm_w ... s_beta, rstd, tanh) are null for static HC.
template <class T>
void hc_coeff_forward(T* pre, T* post, T* res, T* rstd, T* tanh_out, const T* X, const T* a,
                      const T* A, const T* b, const T* norm_w, const T* w_a, const T* W_A,
                      const T* w_b, const T* s_alpha, const T* s_beta, int N, int n, int C,
                      T norm_eps);
template <class T>
void hc_coeff_backward(T* dX, T* da, T* dA, T* db, T* dnorm_w, T* dw_a, T* dW_A, T* dw_b,
                       T* ds_alpha, T* ds_beta, const T* dpre, const T* dpost, const T* dres,
                       const T* X, const T* norm_w, const T* w_a, const T* W_A, const T* w_b,
                       const T* s_alpha, const T* s_beta, const T* rstd, const T* tanh_in, int N,
                       int n, int C);

template <class T>
void adamw(T* p, const T* g, T* m, T* v, int64_t count, double lr, double beta1, double beta2,
           double eps, double weight_decay, double grad_scale, int64_t step);

}  // namespace mhc::cpu
