// A Backend decorator that times every op (synchronising the device after each) and
// sums the time per phase category, for `mhc bench`'s breakdown. Used for a separate
// profiling pass: the synchronisation makes it slower than the real step.
#pragma once
#include <chrono>
#include <map>
#include <string>

#include "backend.h"

namespace mhc {

class TimedBackend final : public Backend {
 public:
  explicit TimedBackend(Backend& inner) : inner_(inner) {}
  // Seconds spent per category: gemm, attention, norm, conn_coeff (HC/mHC coefficients,
  // Sinkhorn), conn_streams (stream expand/collapse/aggregate/merge), elementwise, loss,
  // embedding, optimizer.
  const std::map<std::string, double>& seconds() const { return seconds_; }
  void reset() { seconds_.clear(); }

  std::string name() const override { return inner_.name(); }
  DeviceKind device() const override { return inner_.device(); }
  DType compute_dtype() const override { return inner_.compute_dtype(); }
  DType master_dtype() const override { return inner_.master_dtype(); }
  Tensor alloc(int64_t numel, DType dtype) override { return inner_.alloc(numel, dtype); }
  void release(Tensor t) override { inner_.release(t); }
  void upload(Tensor d, const double* s) override { inner_.upload(d, s); }
  void upload(Tensor d, const int32_t* s) override { inner_.upload(d, s); }
  void download(Tensor s, double* d) override { inner_.download(s, d); }
  void download(Tensor s, int32_t* d) override { inner_.download(s, d); }
  void synchronize() override { inner_.synchronize(); }
  int64_t peak_bytes() const override { return inner_.peak_bytes(); }

#define MHC_TIMED(category, call)                                    \
  do {                                                               \
    const auto t0 = std::chrono::steady_clock::now();                \
    call;                                                            \
    inner_.synchronize();                                            \
    seconds_[category] += std::chrono::duration<double>(             \
        std::chrono::steady_clock::now() - t0).count();              \
  } while (0)

  void zero(Tensor t) override { MHC_TIMED("elementwise", inner_.zero(t)); }
  void fill(Tensor t, double v) override { MHC_TIMED("elementwise", inner_.fill(t, v)); }
  void copy(Tensor d, Tensor s) override { MHC_TIMED("elementwise", inner_.copy(d, s)); }
  void add(Tensor o, Tensor a, Tensor b) override { MHC_TIMED("elementwise", inner_.add(o, a, b)); }
  void scale(Tensor t, double s) override { MHC_TIMED("elementwise", inner_.scale(t, s)); }
  double sum_squares(Tensor t) override {
    double r = 0;
    MHC_TIMED("optimizer", r = inner_.sum_squares(t));
    return r;
  }
  void gemm(bool ta, bool tb, int m, int n, int k, float alpha, Tensor A, int lda, Tensor B, int ldb,
            float beta, Tensor C, int ldc) override {
    MHC_TIMED("gemm", inner_.gemm(ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc));
  }
  void embedding_forward(Tensor o, Tensor t, Tensor w, int N, int C) override {
    MHC_TIMED("embedding", inner_.embedding_forward(o, t, w, N, C));
  }
  void embedding_backward(Tensor d, Tensor t, Tensor g, int N, int C) override {
    MHC_TIMED("embedding", inner_.embedding_backward(d, t, g, N, C));
  }
  void rmsnorm_forward(Tensor o, Tensor r, Tensor x, Tensor w, int rows, int C, float eps) override {
    MHC_TIMED("norm", inner_.rmsnorm_forward(o, r, x, w, rows, C, eps));
  }
  void rmsnorm_backward(Tensor dx, Tensor dw, Tensor d, Tensor x, Tensor w, Tensor r, int rows,
                        int C) override {
    MHC_TIMED("norm", inner_.rmsnorm_backward(dx, dw, d, x, w, r, rows, C));
  }
  void rope_forward(Tensor q, const AttentionShape& s, float th) override {
    MHC_TIMED("attention", inner_.rope_forward(q, s, th));
  }
  void rope_backward(Tensor q, const AttentionShape& s, float th) override {
    MHC_TIMED("attention", inner_.rope_backward(q, s, th));
  }
  void attention_forward(Tensor o, Tensor l, Tensor q, const AttentionShape& s) override {
    MHC_TIMED("attention", inner_.attention_forward(o, l, q, s));
  }
  void attention_backward(Tensor dq, Tensor d, Tensor q, Tensor o, Tensor l,
                          const AttentionShape& s) override {
    MHC_TIMED("attention", inner_.attention_backward(dq, d, q, o, l, s));
  }
  void swiglu_forward(Tensor o, Tensor g, int N, int H) override {
    MHC_TIMED("elementwise", inner_.swiglu_forward(o, g, N, H));
  }
  void swiglu_backward(Tensor d, Tensor o, Tensor g, int N, int H) override {
    MHC_TIMED("elementwise", inner_.swiglu_backward(d, o, g, N, H));
  }
  void gelu_forward(Tensor o, Tensor x, int N, int H) override {
    MHC_TIMED("elementwise", inner_.gelu_forward(o, x, N, H));
  }
  void gelu_backward(Tensor d, Tensor o, Tensor x, int N, int H) override {
    MHC_TIMED("elementwise", inner_.gelu_backward(d, o, x, N, H));
  }
  void cross_entropy(Tensor l, Tensor lg, Tensor t, int N, int V, int Vp, float dl) override {
    MHC_TIMED("loss", inner_.cross_entropy(l, lg, t, N, V, Vp, dl));
  }
  void stream_expand(Tensor X, Tensor x, int N, int n, int C) override {
    MHC_TIMED("conn_streams", inner_.stream_expand(X, x, N, n, C));
  }
  void stream_collapse(Tensor x, Tensor X, int N, int n, int C) override {
    MHC_TIMED("conn_streams", inner_.stream_collapse(x, X, N, n, C));
  }
  void stream_aggregate_forward(Tensor u, Tensor X, Tensor p, const ConnShape& s) override {
    MHC_TIMED("conn_streams", inner_.stream_aggregate_forward(u, X, p, s));
  }
  void stream_aggregate_backward(Tensor dX, Tensor dp, Tensor du, Tensor X, Tensor p,
                                 const ConnShape& s) override {
    MHC_TIMED("conn_streams", inner_.stream_aggregate_backward(dX, dp, du, X, p, s));
  }
  void stream_merge_forward(Tensor Y, Tensor X, Tensor f, const Coeffs& c, const ConnShape& s) override {
    MHC_TIMED("conn_streams", inner_.stream_merge_forward(Y, X, f, c, s));
  }
  void stream_merge_backward(Tensor dX, Tensor df, const Coeffs& dc, Tensor dY, Tensor X, Tensor f,
                             const Coeffs& c, const ConnShape& s) override {
    MHC_TIMED("conn_streams", inner_.stream_merge_backward(dX, df, dc, dY, X, f, c, s));
  }
  void sinkhorn_forward(Tensor H, Tensor Z, int count, int n, int it) override {
    MHC_TIMED("conn_coeff", inner_.sinkhorn_forward(H, Z, count, n, it));
  }
  void sinkhorn_backward(Tensor dZ, Tensor dH, Tensor Z, int count, int n, int it) override {
    MHC_TIMED("conn_coeff", inner_.sinkhorn_backward(dZ, dH, Z, count, n, it));
  }
  void mhc_coeff_forward(const Coeffs& c, const MhcSaved& sv, Tensor X, const MhcParams& p,
                         const ConnShape& s, int it, float eps) override {
    MHC_TIMED("conn_coeff", inner_.mhc_coeff_forward(c, sv, X, p, s, it, eps));
  }
  void mhc_coeff_backward(Tensor dX, const MhcParams& dp, const Coeffs& dc, Tensor X,
                          const MhcParams& p, const MhcSaved& sv, const ConnShape& s, int it) override {
    MHC_TIMED("conn_coeff", inner_.mhc_coeff_backward(dX, dp, dc, X, p, sv, s, it));
  }
  void mhc_variant_coeff_forward(const Coeffs& c, const MhcSaved& sv, Tensor X,
                                 const MhcParams& p, const ConnShape& s, int it,
                                 float eps) override {
    MHC_TIMED("conn_coeff", inner_.mhc_variant_coeff_forward(c, sv, X, p, s, it, eps));
  }
  void mhc_variant_coeff_backward(Tensor dX, const MhcParams& dp, const Coeffs& dc, Tensor X,
                                  const MhcParams& p, const MhcSaved& sv, const ConnShape& s,
                                  int it) override {
    MHC_TIMED("conn_coeff", inner_.mhc_variant_coeff_backward(dX, dp, dc, X, p, sv, s, it));
  }
  void collapse_weights_forward(Tensor w, Tensor m, Tensor rms, Tensor X, Tensor phi,
                                Tensor alpha, Tensor bias, int N, int n, int C,
                                float eps) override {
    MHC_TIMED("conn_coeff",
              inner_.collapse_weights_forward(w, m, rms, X, phi, alpha, bias, N, n, C, eps));
  }
  void collapse_weights_backward(Tensor dX, Tensor dphi, Tensor dalpha, Tensor dbias, Tensor dw,
                                 Tensor X, Tensor phi, Tensor alpha, Tensor bias, Tensor m,
                                 Tensor rms, int N, int n, int C) override {
    MHC_TIMED("conn_coeff", inner_.collapse_weights_backward(dX, dphi, dalpha, dbias, dw, X, phi,
                                                             alpha, bias, m, rms, N, n, C));
  }
  void hc_coeff_forward(const Coeffs& c, const HcSaved& sv, Tensor X, const HcParams& p,
                        const ConnShape& s, float eps) override {
    MHC_TIMED("conn_coeff", inner_.hc_coeff_forward(c, sv, X, p, s, eps));
  }
  void hc_coeff_backward(Tensor dX, const HcParams& dp, const Coeffs& dc, Tensor X, const HcParams& p,
                         const HcSaved& sv, const ConnShape& s) override {
    MHC_TIMED("conn_coeff", inner_.hc_coeff_backward(dX, dp, dc, X, p, sv, s));
  }
  void adamw(Tensor p, Tensor g, Tensor m, Tensor v, const AdamWStep& st) override {
    MHC_TIMED("optimizer", inner_.adamw(p, g, m, v, st));
  }
  void gemm_ex(bool ta, bool tb, int m, int n, int k, float alpha, Tensor A, int lda, Tensor B,
               int ldb, float beta, Tensor C, int ldc, Tensor D, int ldd) override {
    MHC_TIMED("gemm", inner_.gemm_ex(ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc, D, ldd));
  }
  void classifier(Tensor losses, Tensor dx, Tensor dW, Tensor x, Tensor W, Tensor targets,
                  Tensor scratch, int N, int C, int V, int Vp, int chunk, float dloss) override {
    MHC_TIMED("classifier", inner_.classifier(losses, dx, dW, x, W, targets, scratch, N, C, V, Vp,
                                              chunk, dloss));
  }
#undef MHC_TIMED

 private:
  Backend& inner_;
  std::map<std::string, double> seconds_;
};

}  // namespace mhc
