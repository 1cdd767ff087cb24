// The backend op table. The model's forward and backward (model.cpp) are written once
// against this interface; the CPU backend (core/cpu) implements it for float and double,
// the CUDA backend (cuda/) for fp32 and bf16 on a GPU.
//
// Conventions (as in llm.c):
// - Shapes are row-major. N = tokens (B*T), C = d_model, n = residual streams.
// - "out" tensors are overwritten; parameter gradients (d<param>) and tensors documented
//   as "+=" accumulate. Everything else documented as "overwrite" is overwritten.
// - Activations and working weights are in compute_dtype(); master weights, parameter
//   gradients, optimizer moments, losses and all connection coefficients are in
//   master_dtype() (fp32 on GPUs, T on the CPU). Token ids are I32.
// - Connection parameters (HC statics and dynamics, mHC phi/alpha/bias) are always read
//   from the master copy: the coefficient math is fp32 even in bf16 training.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "error.h"
#include "mhc_math.h"
#include "tensor.h"

namespace mhc {

enum class DeviceKind { Cpu, Cuda };

struct AdamWStep {
  float lr = 0;
  float beta1 = 0.9f;
  float beta2 = 0.95f;
  float eps = 1e-8f;
  float weight_decay = 0;
  float grad_scale = 1;  // multiplies the gradient first (clipping)
  int64_t step = 1;      // 1-based, for bias correction
};

struct AttentionShape {
  int B = 0, T = 0, n_head = 0, head_dim = 0;
  int C() const { return n_head * head_dim; }
};

// Shapes of the connection modules (HC and mHC) of one sublayer.
struct ConnShape {
  int N = 0;  // tokens
  int n = 1;  // streams
  int C = 0;  // d_model
  math::MhcVariant mhc{};  // mHC variant (residuals.md "Variants"); default: the paper's
  int D() const { return math::mhc_coeff_count(mhc.projection, n); }
};

// Parameters of one HC connection (views into the master weights). Dynamic ones are
// empty tensors when residual.hc.dynamic is false.
struct HcParams {
  Tensor a, A, b;                         // [n], [n,n], [n]
  Tensor norm_w, w_a, W_A, w_b;           // [C], [C], [C,n], [C]
  Tensor s_alpha, s_beta;                 // [1], [1]
  bool dynamic() const { return !w_a.empty(); }
};

// Saved per-token state of the dynamic HC coefficients.
struct HcSaved {
  Tensor rstd;  // [N*n] RMS reciprocal of each stream
  Tensor tanh;  // [N, n, n+2]: per stream i: tanh of (a_i | A_i: | b_i) pre-activations
};

struct MhcParams {
  Tensor phi;    // [nC, D]  (empty for static mHC)
  Tensor alpha;  // [3]      (empty for static mHC)
  Tensor bias;   // [D]
};

struct MhcSaved {
  Tensor m;    // [N, D]  (v·φ)/r
  Tensor rms;  // [N]     r
};

// Per-token connection coefficients of one sublayer (master dtype).
struct Coeffs {
  Tensor pre;   // [N, n]
  Tensor post;  // [N, n]
  Tensor res;   // [N, n, n]  H_res (row i = output stream i)
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual std::string name() const = 0;
  virtual DeviceKind device() const = 0;
  virtual DType compute_dtype() const = 0;
  virtual DType master_dtype() const = 0;

  // ---- memory -------------------------------------------------------------------------
  virtual Tensor alloc(int64_t numel, DType dtype) = 0;  // zero-filled
  virtual void release(Tensor t) = 0;
  virtual void upload(Tensor dst, const double* src) = 0;   // converts to dst.dtype
  virtual void upload(Tensor dst, const int32_t* src) = 0;  // dst must be I32
  virtual void download(Tensor src, double* dst) = 0;
  virtual void download(Tensor src, int32_t* dst) = 0;
  virtual void synchronize() = 0;
  // Peak bytes allocated through this backend (device memory for CUDA).
  virtual int64_t peak_bytes() const = 0;

  // ---- elementwise --------------------------------------------------------------------
  virtual void zero(Tensor t) = 0;
  virtual void fill(Tensor t, double value) = 0;
  virtual void copy(Tensor dst, Tensor src) = 0;        // same numel; converts dtype
  virtual void add(Tensor out, Tensor a, Tensor b) = 0;  // out = a + b (out may alias a)
  virtual void scale(Tensor t, double s) = 0;
  virtual double sum_squares(Tensor t) = 0;  // host result; non-finite propagates

  // ---- linear algebra -----------------------------------------------------------------
  // C[m,n] = alpha * op(A) op(B) + beta * C, row-major. op(A) is [m,k]: A is stored
  // [m,k] with leading dimension lda, or [k,m] when trans_a. Likewise B ([k,n] / [n,k]).
  // A Linear layer y = x W^T with W [out,in] is gemm(false, true, ...).
  virtual void gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, Tensor A,
                    int lda, Tensor B, int ldb, float beta, Tensor C, int ldc) = 0;

  // ---- embedding ----------------------------------------------------------------------
  // out[N,C] = wte[tokens[t], :]                                     (overwrite)
  virtual void embedding_forward(Tensor out, Tensor tokens, Tensor wte, int N, int C) = 0;
  // dwte[tokens[t], :] += dout[t, :]
  virtual void embedding_backward(Tensor dwte, Tensor tokens, Tensor dout, int N, int C) = 0;

  // ---- RMSNorm: out = x / sqrt(mean(x^2) + eps) * w ----------------------------------
  // out [rows,C] overwrite, rstd [rows] (master dtype) overwrite.
  virtual void rmsnorm_forward(Tensor out, Tensor rstd, Tensor x, Tensor w, int rows, int C,
                               float eps) = 0;
  // dx += ..., dw += ...
  virtual void rmsnorm_backward(Tensor dx, Tensor dw, Tensor dout, Tensor x, Tensor w,
                                Tensor rstd, int rows, int C) = 0;

  // ---- RoPE (rotate-half convention) on the q and k thirds of qkv [B,T,3C], in place ---
  // Position of token (b,t) is t. Backward applies the inverse rotation to dqkv.
  virtual void rope_forward(Tensor qkv, const AttentionShape& s, float theta) = 0;
  virtual void rope_backward(Tensor dqkv, const AttentionShape& s, float theta) = 0;

  // ---- causal self-attention ----------------------------------------------------------
  // out [B,T,C] overwrite; lse [B,n_head,T] (master dtype) log-sum-exp of each score row.
  virtual void attention_forward(Tensor out, Tensor lse, Tensor qkv, const AttentionShape& s) = 0;
  // dqkv [B,T,3C] overwrite.
  virtual void attention_backward(Tensor dqkv, Tensor dout, Tensor qkv, Tensor out, Tensor lse,
                                  const AttentionShape& s) = 0;

  // ---- MLP activations ----------------------------------------------------------------
  // SwiGLU: gate_up [N, 2H] = [gate | up]; out [N,H] = silu(gate) * up.
  virtual void swiglu_forward(Tensor out, Tensor gate_up, int N, int H) = 0;
  virtual void swiglu_backward(Tensor dgate_up, Tensor dout, Tensor gate_up, int N, int H) = 0;
  // GELU (tanh approximation): out [N,H] = gelu(x).
  virtual void gelu_forward(Tensor out, Tensor x, int N, int H) = 0;
  virtual void gelu_backward(Tensor dx, Tensor dout, Tensor x, int N, int H) = 0;

  // ---- classifier loss ----------------------------------------------------------------
  // losses[N] (master dtype) = logsumexp(logits[t, :V]) - logits[t, target]. When
  // dloss != 0, logits [N,Vp] is overwritten by d(dloss * loss_t)/dlogits (padded
  // columns V..Vp get 0). Probabilities are never stored.
  virtual void cross_entropy(Tensor losses, Tensor logits, Tensor targets, int N, int V, int Vp,
                             float dloss) = 0;

  // ---- residual streams ---------------------------------------------------------------
  // Expand: X[N,n,C], every stream = x[N,C].          (overwrite)
  virtual void stream_expand(Tensor X, Tensor x, int N, int n, int C) = 0;
  // Collapse: x[N,C] = sum_i X[N,i,C].                 (overwrite)
  virtual void stream_collapse(Tensor x, Tensor X, int N, int n, int C) = 0;
  // u[N,C] = sum_i pre[N,i] X[N,i,C]                    (overwrite)
  virtual void stream_aggregate_forward(Tensor u, Tensor X, Tensor pre, const ConnShape& s) = 0;
  // dX += pre_i du;  dpre[N,n] = <X_i, du>              (dpre overwrite)
  virtual void stream_aggregate_backward(Tensor dX, Tensor dpre, Tensor du, Tensor X, Tensor pre,
                                         const ConnShape& s) = 0;
  // Y[N,n,C] = sum_j res[N,i,j] X_j + post[N,i] f       (overwrite)
  virtual void stream_merge_forward(Tensor Y, Tensor X, Tensor f, const Coeffs& c,
                                    const ConnShape& s) = 0;
  // dX = res^T dY (overwrite); df = sum_i post_i dY_i (overwrite);
  // dres[N,i,j] = <dY_i, X_j>, dpost[N,i] = <dY_i, f> (overwrite)
  virtual void stream_merge_backward(Tensor dX, Tensor df, const Coeffs& dc, Tensor dY, Tensor X,
                                     Tensor f, const Coeffs& c, const ConnShape& s) = 0;

  // ---- Sinkhorn–Knopp over `count` independent n×n logit matrices (residuals.md) ------
  virtual void sinkhorn_forward(Tensor H, Tensor Z, int count, int n, int iters) = 0;
  virtual void sinkhorn_backward(Tensor dZ, Tensor dH, Tensor Z, int count, int n, int iters) = 0;

  // ---- mHC coefficients ---------------------------------------------------------------
  // From X [N, n*C] (compute dtype): coefficients c (overwrite) and saved m, rms.
  virtual void mhc_coeff_forward(const Coeffs& c, const MhcSaved& saved, Tensor X,
                                 const MhcParams& p, const ConnShape& s, int iters,
                                 float eps) = 0;
  // Given dc: dX +=, dp (phi/alpha/bias grads) +=.
  virtual void mhc_coeff_backward(Tensor dX, const MhcParams& dp, const Coeffs& dc, Tensor X,
                                  const MhcParams& p, const MhcSaved& saved, const ConnShape& s,
                                  int iters) = 0;

  // ---- mHC variants and the learned collapse (residuals.md "Variants") ---------------
  // The mHC coefficient ops above for a non-default s.mhc (projection, numerics, static):
  // same contract, D = s.D(); static mHC passes empty phi/alpha (and X, m, rms unused).
  // Both backends implement them; a backend that does not refuses here.
  virtual void mhc_variant_coeff_forward(const Coeffs&, const MhcSaved&, Tensor, const MhcParams&,
                                         const ConnShape& s, int, float) {
    fail("{}: the mHC variant (projection {}) is not implemented on this backend", name(),
         static_cast<int>(s.mhc.projection));
  }
  virtual void mhc_variant_coeff_backward(Tensor, const MhcParams&, const Coeffs&, Tensor,
                                          const MhcParams&, const MhcSaved&, const ConnShape& s,
                                          int) {
    fail("{}: the mHC variant (projection {}) is not implemented on this backend", name(),
         static_cast<int>(s.mhc.projection));
  }
  // Learned collapse weights (V4's head mix) from X [N, n*C]:
  //   w[N,n] = σ(α (v·φ)/r + β) + eps (overwrite), m [N,n] = (v·φ)/r and rms [N] = r saved,
  //   r = sqrt(mean(v²) + eps). phi [nC, n], alpha [1], bias [n] (master dtype).
  virtual void collapse_weights_forward(Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor,
                                        int, int, int, float) {
    fail("{}: residual.collapse=learned is not implemented on this backend", name());
  }
  // Given dw [N,n]: dX +=, dphi/dalpha/dbias +=.
  virtual void collapse_weights_backward(Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor,
                                         Tensor, Tensor, Tensor, Tensor, int, int, int) {
    fail("{}: residual.collapse=learned is not implemented on this backend", name());
  }

  // ---- HC coefficients (static, or dynamic when p.dynamic()) --------------------------
  virtual void hc_coeff_forward(const Coeffs& c, const HcSaved& saved, Tensor X,
                                const HcParams& p, const ConnShape& s, float norm_eps) = 0;
  virtual void hc_coeff_backward(Tensor dX, const HcParams& dp, const Coeffs& dc, Tensor X,
                                 const HcParams& p, const HcSaved& saved, const ConnShape& s) = 0;

  // ---- optimizer ----------------------------------------------------------------------
  // AdamW with decoupled weight decay on master weights p (grad g, moments m, v).
  virtual void adamw(Tensor p, Tensor g, Tensor m, Tensor v, const AdamWStep& step) = 0;

  // ---- optional fused ops -------------------------------------------------------------
  // Each has a default written with the ops above, so a backend need not implement it;
  // a backend overrides it where fusing saves memory traffic (the CUDA backend).

  // D[m,n] = alpha op(A) op(B) + beta C, with C and D of the same dtype (C may be D;
  // with beta = 0 C is not read). Used to fuse a residual add into the output GEMM:
  // X_{k+1} = X_k + att Woᵀ without writing the sublayer output. Default: copy C into
  // D, then gemm() into D.
  virtual void gemm_ex(bool trans_a, bool trans_b, int m, int n, int k, float alpha, Tensor A,
                       int lda, Tensor B, int ldb, float beta, Tensor C, int ldc, Tensor D,
                       int ldd) {
    if (m <= 0 || n <= 0) return;
    if (beta != 0.f && C.data != D.data) {
      if (ldc == ldd) {
        const int64_t span = static_cast<int64_t>(m - 1) * ldd + n;
        copy(D.slice(0, span), C.slice(0, span));
      } else {
        for (int64_t r = 0; r < m; ++r) copy(D.slice(r * ldd, n), C.slice(r * ldc, n));
      }
    }
    gemm(trans_a, trans_b, m, n, k, alpha, A, lda, B, ldb, beta, D, ldd);
  }

  // The classifier and its loss over N tokens, `chunk` tokens at a time, so no more than
  // chunk·Vp logits exist at once (scratch: at least chunk·Vp, compute dtype):
  //   logits_c = x_c Wᵀ, losses[N] (master dtype, overwrite) as cross_entropy();
  //   when dloss != 0 also dx[N,C] = Σ_c dlogits_c W (overwrite) and
  //   dW[Vp,C] += dlogits_cᵀ x_c, with dlogits = d(dloss · Σ_t loss_t)/dlogits.
  // x [N,C], W [Vp,C] (rows V..Vp-1 padding), targets I32 [N].
  virtual void classifier(Tensor losses, Tensor dx, Tensor dW, Tensor x, Tensor W, Tensor targets,
                          Tensor scratch, int N, int C, int V, int Vp, int chunk, float dloss) {
    if (chunk < 1) chunk = N;
    for (int t0 = 0; t0 < N; t0 += chunk) {
      const int rows = N - t0 < chunk ? N - t0 : chunk;
      const Tensor xc = x.slice(static_cast<int64_t>(t0) * C, static_cast<int64_t>(rows) * C);
      const Tensor logits = scratch.slice(0, static_cast<int64_t>(rows) * Vp);
      gemm(false, true, rows, Vp, C, 1.f, xc, C, W, C, 0.f, logits, Vp);
      cross_entropy(losses.slice(t0, rows), logits, targets.slice(t0, rows), rows, V, Vp, dloss);
      if (dloss == 0.f) continue;
      gemm(false, false, rows, C, Vp, 1.f, logits, Vp, W, C, 0.f,
           dx.slice(static_cast<int64_t>(t0) * C, static_cast<int64_t>(rows) * C), C);
      gemm(true, false, Vp, C, rows, 1.f, logits, Vp, xc, C, 1.f, dW, C);
    }
  }
};

}  // namespace mhc
