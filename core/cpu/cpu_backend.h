// The CPU backend: the Backend op table over host memory for scalar type T (float for
// training, double for the gradient checks). Each op checks its tensors' types and
// forwards to the kernel of the same name in kernels.h.
#pragma once
#include <memory>

#include "../backend.h"

namespace mhc {

template <class T>
class CpuBackend final : public Backend {
 public:
  // threads: OpenMP/BLAS threads; 0 keeps the runtime's default (all cores).
  explicit CpuBackend(int threads = 0);

  std::string name() const override;
  DeviceKind device() const override { return DeviceKind::Cpu; }
  DType compute_dtype() const override;
  DType master_dtype() const override { return compute_dtype(); }

  Tensor alloc(int64_t numel, DType dtype) override;
  void release(Tensor t) override;
  void upload(Tensor dst, const double* src) override;
  void upload(Tensor dst, const int32_t* src) override;
  void download(Tensor src, double* dst) override;
  void download(Tensor src, int32_t* dst) override;
  void synchronize() override {}
  int64_t peak_bytes() const override { return peak_bytes_; }

  void zero(Tensor t) override;
  void fill(Tensor t, double value) override;
  void copy(Tensor dst, Tensor src) override;
  void add(Tensor out, Tensor a, Tensor b) override;
  void scale(Tensor t, double s) override;
  double sum_squares(Tensor t) override;

  void gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, Tensor A, int lda,
            Tensor B, int ldb, float beta, Tensor C, int ldc) override;

  void embedding_forward(Tensor out, Tensor tokens, Tensor wte, int N, int C) override;
  void embedding_backward(Tensor dwte, Tensor tokens, Tensor dout, int N, int C) override;
  void rmsnorm_forward(Tensor out, Tensor rstd, Tensor x, Tensor w, int rows, int C,
                       float eps) override;
  void rmsnorm_backward(Tensor dx, Tensor dw, Tensor dout, Tensor x, Tensor w, Tensor rstd,
                        int rows, int C) override;
  void rope_forward(Tensor qkv, const AttentionShape& s, float theta) override;
  void rope_backward(Tensor dqkv, const AttentionShape& s, float theta) override;
  void attention_forward(Tensor out, Tensor lse, Tensor qkv, const AttentionShape& s) override;
  void attention_backward(Tensor dqkv, Tensor dout, Tensor qkv, Tensor out, Tensor lse,
                          const AttentionShape& s) override;
  void swiglu_forward(Tensor out, Tensor gate_up, int N, int H) override;
  void swiglu_backward(Tensor dgate_up, Tensor dout, Tensor gate_up, int N, int H) override;
  void gelu_forward(Tensor out, Tensor x, int N, int H) override;
  void gelu_backward(Tensor dx, Tensor dout, Tensor x, int N, int H) override;
  void cross_entropy(Tensor losses, Tensor logits, Tensor targets, int N, int V, int Vp,
                     float dloss) override;

  void stream_expand(Tensor X, Tensor x, int N, int n, int C) override;
  void stream_collapse(Tensor x, Tensor X, int N, int n, int C) override;
  void stream_aggregate_forward(Tensor u, Tensor X, Tensor pre, const ConnShape& s) override;
  void stream_aggregate_backward(Tensor dX, Tensor dpre, Tensor du, Tensor X, Tensor pre,
                                 const ConnShape& s) override;
  void stream_merge_forward(Tensor Y, Tensor X, Tensor f, const Coeffs& c,
                            const ConnShape& s) override;
  void stream_merge_backward(Tensor dX, Tensor df, const Coeffs& dc, Tensor dY, Tensor X, Tensor f,
                             const Coeffs& c, const ConnShape& s) override;
  void sinkhorn_forward(Tensor H, Tensor Z, int count, int n, int iters) override;
  void sinkhorn_backward(Tensor dZ, Tensor dH, Tensor Z, int count, int n, int iters) override;
  void mhc_coeff_forward(const Coeffs& c, const MhcSaved& saved, Tensor X, const MhcParams& p,
                         const ConnShape& s, int iters, float eps) override;
  void mhc_coeff_backward(Tensor dX, const MhcParams& dp, const Coeffs& dc, Tensor X,
                          const MhcParams& p, const MhcSaved& saved, const ConnShape& s,
                          int iters) override;
  void mhc_variant_coeff_forward(const Coeffs& c, const MhcSaved& saved, Tensor X,
                                 const MhcParams& p, const ConnShape& s, int iters,
                                 float eps) override;
  void mhc_variant_coeff_backward(Tensor dX, const MhcParams& dp, const Coeffs& dc, Tensor X,
                                  const MhcParams& p, const MhcSaved& saved, const ConnShape& s,
                                  int iters) override;
  void collapse_weights_forward(Tensor w, Tensor m, Tensor rms, Tensor X, Tensor phi,
                                Tensor alpha, Tensor bias, int N, int n, int C,
                                float eps) override;
  void collapse_weights_backward(Tensor dX, Tensor dphi, Tensor dalpha, Tensor dbias, Tensor dw,
                                 Tensor X, Tensor phi, Tensor alpha, Tensor bias, Tensor m,
                                 Tensor rms, int N, int n, int C) override;
  void hc_coeff_forward(const Coeffs& c, const HcSaved& saved, Tensor X, const HcParams& p,
                        const ConnShape& s, float norm_eps) override;
  void hc_coeff_backward(Tensor dX, const HcParams& dp, const Coeffs& dc, Tensor X,
                         const HcParams& p, const HcSaved& saved, const ConnShape& s) override;

  void adamw(Tensor p, Tensor g, Tensor m, Tensor v, const AdamWStep& step) override;

 private:
  int64_t live_bytes_ = 0;
  int64_t peak_bytes_ = 0;
};

extern template class CpuBackend<float>;
extern template class CpuBackend<double>;

}  // namespace mhc
