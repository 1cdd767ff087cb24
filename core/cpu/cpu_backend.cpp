#include "cpu_backend.h"

#include <cblas.h>
#include <omp.h>

#include <cmath>
#include <cstdlib>
#include <cstring>

#include "kernels.h"
#include "parallel.h"

namespace mhc {
namespace {

template <class T>
constexpr DType dtype_of();
template <>
constexpr DType dtype_of<float>() { return DType::F32; }
template <>
constexpr DType dtype_of<double>() { return DType::F64; }

// Checked typed pointer of a tensor (null for an empty tensor).
template <class T>
T* p(const Tensor& t) {
  if (t.data == nullptr) return nullptr;
  if (t.dtype != dtype_of<T>())
    throw InternalError(std::string("cpu backend: expected ") + dtype_name(dtype_of<T>()) +
                        " tensor, got " + dtype_name(t.dtype));
  return static_cast<T*>(t.data);
}

const int32_t* ids(const Tensor& t) {
  MHC_CHECK(t.dtype == DType::I32);
  return static_cast<const int32_t*>(t.data);
}

}  // namespace

template <class T>
CpuBackend<T>::CpuBackend(int threads) {
  if (threads > 0) {
    omp_set_num_threads(threads);
    openblas_set_num_threads(threads);
  }
}

template <class T>
std::string CpuBackend<T>::name() const {
  return std::string("cpu-") + dtype_name(dtype_of<T>()) + " (" +
         std::to_string(omp_get_max_threads()) + " threads)";
}

template <class T>
DType CpuBackend<T>::compute_dtype() const {
  return dtype_of<T>();
}

template <class T>
Tensor CpuBackend<T>::alloc(int64_t numel, DType dtype) {
  Tensor t{nullptr, numel, dtype};
  size_t bytes = (t.bytes() + 63) / 64 * 64;
  if (bytes == 0) return t;
  void* mem = nullptr;
  if (posix_memalign(&mem, 64, bytes) != 0) fail("out of host memory allocating {} bytes", bytes);
  std::memset(mem, 0, bytes);
  t.data = mem;
  live_bytes_ += static_cast<int64_t>(bytes);
  peak_bytes_ = std::max(peak_bytes_, live_bytes_);
  return t;
}

template <class T>
void CpuBackend<T>::release(Tensor t) {
  if (!t.data) return;
  live_bytes_ -= static_cast<int64_t>((t.bytes() + 63) / 64 * 64);
  std::free(t.data);
}

template <class T>
void CpuBackend<T>::upload(Tensor dst, const double* src) {
  T* d = p<T>(dst);
  for (int64_t i = 0; i < dst.numel; ++i) d[i] = static_cast<T>(src[i]);
}

template <class T>
void CpuBackend<T>::upload(Tensor dst, const int32_t* src) {
  MHC_CHECK(dst.dtype == DType::I32);
  std::memcpy(dst.data, src, dst.bytes());
}

template <class T>
void CpuBackend<T>::download(Tensor src, double* dst) {
  const T* s = p<T>(src);
  for (int64_t i = 0; i < src.numel; ++i) dst[i] = static_cast<double>(s[i]);
}

template <class T>
void CpuBackend<T>::download(Tensor src, int32_t* dst) {
  MHC_CHECK(src.dtype == DType::I32);
  std::memcpy(dst, src.data, src.bytes());
}

template <class T>
void CpuBackend<T>::zero(Tensor t) {
  if (t.data) std::memset(t.data, 0, t.bytes());
}

template <class T>
void CpuBackend<T>::fill(Tensor t, double value) {
  T* d = p<T>(t);
  for (int64_t i = 0; i < t.numel; ++i) d[i] = static_cast<T>(value);
}

template <class T>
void CpuBackend<T>::copy(Tensor dst, Tensor src) {
  MHC_CHECK(dst.numel == src.numel);
  if (dst.data == src.data) return;
  std::memcpy(p<T>(dst), p<T>(src), dst.bytes());
}

template <class T>
void CpuBackend<T>::add(Tensor out, Tensor a, Tensor b) {
  MHC_CHECK(out.numel == a.numel && a.numel == b.numel);
  T *o = p<T>(out);
  const T *x = p<T>(a), *y = p<T>(b);
#pragma omp parallel for schedule(static) if (out.numel > cpu::kMinParallelWork)
  for (int64_t i = 0; i < out.numel; ++i) o[i] = x[i] + y[i];
}

template <class T>
void CpuBackend<T>::scale(Tensor t, double s) {
  T* d = p<T>(t);
  const T st = static_cast<T>(s);
#pragma omp parallel for schedule(static) if (t.numel > cpu::kMinParallelWork)
  for (int64_t i = 0; i < t.numel; ++i) d[i] *= st;
}

template <class T>
double CpuBackend<T>::sum_squares(Tensor t) {
  const T* d = p<T>(t);
  double total = 0;
  cpu::parallel_reduce<double>(t.numel, 1, &total, [&](int64_t b, int64_t e, double* part) {
    double s = 0;
    for (int64_t i = b; i < e; ++i) s += static_cast<double>(d[i]) * static_cast<double>(d[i]);
    part[0] += s;
  });
  return total;
}

template <class T>
void CpuBackend<T>::gemm(bool ta, bool tb, int m, int n, int k, float alpha, Tensor A, int lda,
                         Tensor B, int ldb, float beta, Tensor C, int ldc) {
  cpu::gemm<T>(ta, tb, m, n, k, static_cast<T>(alpha), p<T>(A), lda, p<T>(B), ldb,
               static_cast<T>(beta), p<T>(C), ldc);
}

template <class T>
void CpuBackend<T>::embedding_forward(Tensor out, Tensor tokens, Tensor wte, int N, int C) {
  cpu::embedding_forward<T>(p<T>(out), ids(tokens), p<T>(wte), N, C);
}
template <class T>
void CpuBackend<T>::embedding_backward(Tensor dwte, Tensor tokens, Tensor dout, int N, int C) {
  cpu::embedding_backward<T>(p<T>(dwte), ids(tokens), p<T>(dout), N, C);
}
template <class T>
void CpuBackend<T>::rmsnorm_forward(Tensor out, Tensor rstd, Tensor x, Tensor w, int rows, int C,
                                    float eps) {
  cpu::rmsnorm_forward<T>(p<T>(out), p<T>(rstd), p<T>(x), p<T>(w), rows, C, static_cast<T>(eps));
}
template <class T>
void CpuBackend<T>::rmsnorm_backward(Tensor dx, Tensor dw, Tensor dout, Tensor x, Tensor w,
                                     Tensor rstd, int rows, int C) {
  cpu::rmsnorm_backward<T>(p<T>(dx), p<T>(dw), p<T>(dout), p<T>(x), p<T>(w), p<T>(rstd), rows, C);
}
template <class T>
void CpuBackend<T>::rope_forward(Tensor qkv, const AttentionShape& s, float theta) {
  cpu::rope<T>(p<T>(qkv), s.B, s.T, s.n_head, s.head_dim, theta, false);
}
template <class T>
void CpuBackend<T>::rope_backward(Tensor dqkv, const AttentionShape& s, float theta) {
  cpu::rope<T>(p<T>(dqkv), s.B, s.T, s.n_head, s.head_dim, theta, true);
}
template <class T>
void CpuBackend<T>::attention_forward(Tensor out, Tensor lse, Tensor qkv, const AttentionShape& s) {
  cpu::attention_forward<T>(p<T>(out), p<T>(lse), p<T>(qkv), s.B, s.T, s.n_head, s.head_dim);
}
template <class T>
void CpuBackend<T>::attention_backward(Tensor dqkv, Tensor dout, Tensor qkv, Tensor out,
                                       Tensor lse, const AttentionShape& s) {
  cpu::attention_backward<T>(p<T>(dqkv), p<T>(dout), p<T>(qkv), p<T>(out), p<T>(lse), s.B, s.T,
                             s.n_head, s.head_dim);
}
template <class T>
void CpuBackend<T>::swiglu_forward(Tensor out, Tensor gate_up, int N, int H) {
  cpu::swiglu_forward<T>(p<T>(out), p<T>(gate_up), N, H);
}
template <class T>
void CpuBackend<T>::swiglu_backward(Tensor dgate_up, Tensor dout, Tensor gate_up, int N, int H) {
  cpu::swiglu_backward<T>(p<T>(dgate_up), p<T>(dout), p<T>(gate_up), N, H);
}
template <class T>
void CpuBackend<T>::gelu_forward(Tensor out, Tensor x, int N, int H) {
  cpu::gelu_forward<T>(p<T>(out), p<T>(x), N, H);
}
template <class T>
void CpuBackend<T>::gelu_backward(Tensor dx, Tensor dout, Tensor x, int N, int H) {
  cpu::gelu_backward<T>(p<T>(dx), p<T>(dout), p<T>(x), N, H);
}
template <class T>
void CpuBackend<T>::cross_entropy(Tensor losses, Tensor logits, Tensor targets, int N, int V,
                                  int Vp, float dloss) {
  cpu::cross_entropy<T>(p<T>(losses), p<T>(logits), ids(targets), N, V, Vp, static_cast<T>(dloss));
}

template <class T>
void CpuBackend<T>::stream_expand(Tensor X, Tensor x, int N, int n, int C) {
  cpu::stream_expand<T>(p<T>(X), p<T>(x), N, n, C);
}
template <class T>
void CpuBackend<T>::stream_collapse(Tensor x, Tensor X, int N, int n, int C) {
  cpu::stream_collapse<T>(p<T>(x), p<T>(X), N, n, C);
}
template <class T>
void CpuBackend<T>::stream_aggregate_forward(Tensor u, Tensor X, Tensor pre, const ConnShape& s) {
  cpu::stream_aggregate_forward<T>(p<T>(u), p<T>(X), p<T>(pre), s.N, s.n, s.C);
}
template <class T>
void CpuBackend<T>::stream_aggregate_backward(Tensor dX, Tensor dpre, Tensor du, Tensor X,
                                              Tensor pre, const ConnShape& s) {
  cpu::stream_aggregate_backward<T>(p<T>(dX), p<T>(dpre), p<T>(du), p<T>(X), p<T>(pre), s.N, s.n,
                                    s.C);
}
template <class T>
void CpuBackend<T>::stream_merge_forward(Tensor Y, Tensor X, Tensor f, const Coeffs& c,
                                         const ConnShape& s) {
  cpu::stream_merge_forward<T>(p<T>(Y), p<T>(X), p<T>(f), p<T>(c.res), p<T>(c.post), s.N, s.n, s.C);
}
template <class T>
void CpuBackend<T>::stream_merge_backward(Tensor dX, Tensor df, const Coeffs& dc, Tensor dY,
                                          Tensor X, Tensor f, const Coeffs& c, const ConnShape& s) {
  cpu::stream_merge_backward<T>(p<T>(dX), p<T>(df), p<T>(dc.res), p<T>(dc.post), p<T>(dY), p<T>(X),
                                p<T>(f), p<T>(c.res), p<T>(c.post), s.N, s.n, s.C);
}
template <class T>
void CpuBackend<T>::sinkhorn_forward(Tensor H, Tensor Z, int count, int n, int iters) {
  cpu::sinkhorn_forward<T>(p<T>(H), p<T>(Z), count, n, iters);
}
template <class T>
void CpuBackend<T>::sinkhorn_backward(Tensor dZ, Tensor dH, Tensor Z, int count, int n, int iters) {
  cpu::sinkhorn_backward<T>(p<T>(dZ), p<T>(dH), p<T>(Z), count, n, iters);
}
template <class T>
void CpuBackend<T>::mhc_coeff_forward(const Coeffs& c, const MhcSaved& saved, Tensor X,
                                      const MhcParams& prm, const ConnShape& s, int iters,
                                      float eps) {
  cpu::mhc_coeff_forward<T>(p<T>(c.pre), p<T>(c.post), p<T>(c.res), p<T>(saved.m), p<T>(saved.rms),
                            p<T>(X), p<T>(prm.phi), p<T>(prm.alpha), p<T>(prm.bias), s.N, s.n, s.C,
                            iters, static_cast<T>(eps));
}
template <class T>
void CpuBackend<T>::mhc_coeff_backward(Tensor dX, const MhcParams& dp, const Coeffs& dc, Tensor X,
                                       const MhcParams& prm, const MhcSaved& saved,
                                       const ConnShape& s, int iters) {
  cpu::mhc_coeff_backward<T>(p<T>(dX), p<T>(dp.phi), p<T>(dp.alpha), p<T>(dp.bias), p<T>(dc.pre),
                             p<T>(dc.post), p<T>(dc.res), p<T>(X), p<T>(prm.phi), p<T>(prm.alpha),
                             p<T>(prm.bias), p<T>(saved.m), p<T>(saved.rms), s.N, s.n, s.C, iters);
}
template <class T>
void CpuBackend<T>::mhc_variant_coeff_forward(const Coeffs& c, const MhcSaved& saved, Tensor X,
                                              const MhcParams& prm, const ConnShape& s,
                                              int iters, float eps) {
  cpu::mhc_variant_coeff_forward<T>(p<T>(c.pre), p<T>(c.post), p<T>(c.res), p<T>(saved.m),
                                    p<T>(saved.rms), p<T>(X), p<T>(prm.phi), p<T>(prm.alpha),
                                    p<T>(prm.bias), s.N, s.n, s.C, iters, static_cast<T>(eps),
                                    s.mhc);
}
template <class T>
void CpuBackend<T>::mhc_variant_coeff_backward(Tensor dX, const MhcParams& dp, const Coeffs& dc,
                                               Tensor X, const MhcParams& prm,
                                               const MhcSaved& saved, const ConnShape& s,
                                               int iters) {
  cpu::mhc_variant_coeff_backward<T>(p<T>(dX), p<T>(dp.phi), p<T>(dp.alpha), p<T>(dp.bias),
                                     p<T>(dc.pre), p<T>(dc.post), p<T>(dc.res), p<T>(X),
                                     p<T>(prm.phi), p<T>(prm.alpha), p<T>(prm.bias),
                                     p<T>(saved.m), p<T>(saved.rms), s.N, s.n, s.C, iters, s.mhc);
}
template <class T>
void CpuBackend<T>::collapse_weights_forward(Tensor w, Tensor m, Tensor rms, Tensor X,
                                             Tensor phi, Tensor alpha, Tensor bias, int N, int n,
                                             int C, float eps) {
  cpu::collapse_weights_forward<T>(p<T>(w), p<T>(m), p<T>(rms), p<T>(X), p<T>(phi), p<T>(alpha),
                                   p<T>(bias), N, n, C, static_cast<T>(eps));
}
template <class T>
void CpuBackend<T>::collapse_weights_backward(Tensor dX, Tensor dphi, Tensor dalpha,
                                              Tensor dbias, Tensor dw, Tensor X, Tensor phi,
                                              Tensor alpha, Tensor bias, Tensor m, Tensor rms,
                                              int N, int n, int C) {
  cpu::collapse_weights_backward<T>(p<T>(dX), p<T>(dphi), p<T>(dalpha), p<T>(dbias), p<T>(dw),
                                    p<T>(X), p<T>(phi), p<T>(alpha), p<T>(bias), p<T>(m),
                                    p<T>(rms), N, n, C);
}
template <class T>
void CpuBackend<T>::hc_coeff_forward(const Coeffs& c, const HcSaved& saved, Tensor X,
                                     const HcParams& prm, const ConnShape& s, float norm_eps) {
  cpu::hc_coeff_forward<T>(p<T>(c.pre), p<T>(c.post), p<T>(c.res), p<T>(saved.rstd),
                           p<T>(saved.tanh), p<T>(X), p<T>(prm.a), p<T>(prm.A), p<T>(prm.b),
                           p<T>(prm.norm_w), p<T>(prm.w_a), p<T>(prm.W_A), p<T>(prm.w_b),
                           p<T>(prm.s_alpha), p<T>(prm.s_beta), s.N, s.n, s.C,
                           static_cast<T>(norm_eps));
}
template <class T>
void CpuBackend<T>::hc_coeff_backward(Tensor dX, const HcParams& dp, const Coeffs& dc, Tensor X,
                                      const HcParams& prm, const HcSaved& saved,
                                      const ConnShape& s) {
  cpu::hc_coeff_backward<T>(p<T>(dX), p<T>(dp.a), p<T>(dp.A), p<T>(dp.b), p<T>(dp.norm_w),
                            p<T>(dp.w_a), p<T>(dp.W_A), p<T>(dp.w_b), p<T>(dp.s_alpha),
                            p<T>(dp.s_beta), p<T>(dc.pre), p<T>(dc.post), p<T>(dc.res), p<T>(X),
                            p<T>(prm.norm_w), p<T>(prm.w_a), p<T>(prm.W_A), p<T>(prm.w_b),
                            p<T>(prm.s_alpha), p<T>(prm.s_beta), p<T>(saved.rstd),
                            p<T>(saved.tanh), s.N, s.n, s.C);
}
template <class T>
void CpuBackend<T>::adamw(Tensor prm, Tensor g, Tensor m, Tensor v, const AdamWStep& a) {
  MHC_CHECK(prm.numel == g.numel && g.numel == m.numel && m.numel == v.numel);
  cpu::adamw<T>(p<T>(prm), p<T>(g), p<T>(m), p<T>(v), prm.numel, a.lr, a.beta1, a.beta2, a.eps,
                a.weight_decay, a.grad_scale, a.step);
}

template class CpuBackend<float>;
template class CpuBackend<double>;

}  // namespace mhc
