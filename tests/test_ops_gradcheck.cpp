// Op-level float64 checks of the CPU backend (core/backend.h contracts): every op with a
// backward against five-point finite differences of L = Σ w ⊙ out with random w, and the
// "+=" / overwrite contracts (accumulating outputs are pre-filled with random values and
// the fill is subtracted; overwritten outputs are pre-filled with garbage). gemm and
// adamw are checked against hand-written reference formulas.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "cpu/cpu_backend.h"
#include "test_support.h"

namespace mhc {
namespace {

using testing::random_vector;

constexpr double kGradTol = 1e-6;  // max relative error of analytic vs finite differences

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

std::vector<double> minus(const std::vector<double>& a, const std::vector<double>& b) {
  std::vector<double> d(a.size());
  for (size_t i = 0; i < a.size(); ++i) d[i] = a[i] - b[i];
  return d;
}

double max_abs_diff(const std::vector<double>& a, const std::vector<double>& b) {
  double e = 0;
  for (size_t i = 0; i < a.size(); ++i) e = std::max(e, std::fabs(a[i] - b[i]));
  return e;
}

double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// Compares `analytic` with finite differences of `loss` w.r.t. every entry of x (or an
// evenly spaced subset of at most max_checks entries). `loss` must read x by reference.
void expect_gradient(std::vector<double>& x, const std::vector<double>& analytic,
                     const std::function<double()>& loss, const std::string& what,
                     double floor = 1e-9, size_t max_checks = 256) {
  ASSERT_EQ(x.size(), analytic.size()) << what;
  const size_t stride = std::max<size_t>(1, x.size() / max_checks);
  std::vector<double> fd, an;
  for (size_t i = 0; i < x.size(); i += stride) {
    fd.push_back(testing::central_difference(x, i, loss));
    an.push_back(analytic[i]);
  }
  const double err = testing::max_rel_error(an, fd, floor);
  EXPECT_LE(err, kGradTol) << what << ": " << fd.size() << " entries checked";
}

// A CpuBackend<double> whose tensors are released with the fixture.
class OpsGradCheck : public ::testing::Test {
 protected:
  ~OpsGradCheck() override {
    for (auto& t : owned_) be_.release(t);
  }
  Tensor make(const std::vector<double>& v) {
    Tensor t = be_.alloc(static_cast<int64_t>(v.size()), DType::F64);
    be_.upload(t, v.data());
    owned_.push_back(t);
    return t;
  }
  Tensor zeros(int64_t n) {
    owned_.push_back(be_.alloc(n, DType::F64));
    return owned_.back();
  }
  // Garbage that an overwriting op must not read.
  Tensor garbage(int64_t n) { return make(std::vector<double>(static_cast<size_t>(n), 1e3)); }
  Tensor ids(const std::vector<int32_t>& v) {
    Tensor t = be_.alloc(static_cast<int64_t>(v.size()), DType::I32);
    be_.upload(t, v.data());
    owned_.push_back(t);
    return t;
  }
  std::vector<double> get(Tensor t) {
    std::vector<double> v(static_cast<size_t>(t.numel));
    be_.download(t, v.data());
    return v;
  }
  void put(Tensor t, const std::vector<double>& v) { be_.upload(t, v.data()); }

  CpuBackend<double> be_{1};
  std::vector<Tensor> owned_;
};

// ---- embedding --------------------------------------------------------------------------

TEST_F(OpsGradCheck, Embedding) {
  const int V = 7, C = 5, N = 9;
  const std::vector<int32_t> tokens = {3, 0, 6, 3, 1, 3, 5, 0, 2};  // repeats; 4 unused
  std::vector<double> wte = random_vector(V * C, 11);
  const std::vector<double> w = random_vector(N * C, 12);
  const Tensor t_ids = ids(tokens), t_wte = make(wte), t_out = garbage(N * C);
  auto loss = [&] {
    put(t_wte, wte);
    be_.embedding_forward(t_out, t_ids, t_wte, N, C);
    return dot(get(t_out), w);
  };
  loss();
  const std::vector<double> out = get(t_out);
  for (int t = 0; t < N; ++t)
    for (int c = 0; c < C; ++c) EXPECT_EQ(out[t * C + c], wte[tokens[t] * C + c]);

  const std::vector<double> fill = random_vector(V * C, 13);
  const Tensor dwte = make(fill);
  be_.embedding_backward(dwte, t_ids, make(w), N, C);
  const std::vector<double> d = minus(get(dwte), fill);
  expect_gradient(wte, d, loss, "embedding dwte (+=)");
  for (int c = 0; c < C; ++c) EXPECT_EQ(d[4 * C + c], 0.0) << "unused token row changed";
}

// ---- RMSNorm ----------------------------------------------------------------------------

TEST_F(OpsGradCheck, RmsNorm) {
  const int rows = 3, C = 6;
  const float eps = 1e-5f;
  std::vector<double> x = random_vector(rows * C, 21);
  std::vector<double> g = random_vector(C, 22, 0.5);
  for (auto& v : g) v += 1.0;
  const std::vector<double> w = random_vector(rows * C, 23);
  const Tensor t_x = make(x), t_g = make(g), out = garbage(rows * C), rstd = garbage(rows);
  auto loss = [&] {
    put(t_x, x);
    put(t_g, g);
    be_.rmsnorm_forward(out, rstd, t_x, t_g, rows, C, eps);
    return dot(get(out), w);
  };
  loss();
  // Forward against the definition y = x / sqrt(mean(x²) + eps) · w.
  const std::vector<double> y = get(out), rs = get(rstd);
  for (int r = 0; r < rows; ++r) {
    double ms = 0;
    for (int c = 0; c < C; ++c) ms += x[r * C + c] * x[r * C + c] / C;
    const double s = 1.0 / std::sqrt(ms + static_cast<double>(eps));
    EXPECT_NEAR(rs[r], s, 1e-14 * s);
    for (int c = 0; c < C; ++c) EXPECT_NEAR(y[r * C + c], x[r * C + c] * s * g[c], 1e-13);
  }
  const std::vector<double> fill_dx = random_vector(rows * C, 24), fill_dw = random_vector(C, 25);
  const Tensor dx = make(fill_dx), dw = make(fill_dw);
  be_.rmsnorm_backward(dx, dw, make(w), t_x, t_g, rstd, rows, C);
  const std::vector<double> ax = minus(get(dx), fill_dx), ag = minus(get(dw), fill_dw);
  expect_gradient(x, ax, loss, "rmsnorm dx (+=)");
  expect_gradient(g, ag, loss, "rmsnorm dw (+=)");
}

// ---- RoPE -------------------------------------------------------------------------------

TEST_F(OpsGradCheck, RopeForwardMatchesDefinitionAndBackwardIsTranspose) {
  const AttentionShape s{2, 4, 2, 4};
  const int C = s.C(), hd = s.head_dim, half = hd / 2;
  const float theta = 10.0f;  // large angles within 4 positions
  const int64_t numel = static_cast<int64_t>(s.B) * s.T * 3 * C;
  std::vector<double> qkv = random_vector(numel, 31);
  const std::vector<double> w = random_vector(numel, 32);
  const Tensor t = zeros(numel);
  auto loss = [&] {
    put(t, qkv);
    be_.rope_forward(t, s, theta);
    return dot(get(t), w);
  };
  loss();
  // Rotate-half: element i < d/2 pairs with i + d/2, angle pos · theta^(−2i/d); v untouched.
  const std::vector<double> y = get(t);
  for (int b = 0; b < s.B; ++b)
    for (int pos = 0; pos < s.T; ++pos) {
      const int64_t row = (static_cast<int64_t>(b) * s.T + pos) * 3 * C;
      for (int part = 0; part < 3; ++part)
        for (int h = 0; h < s.n_head; ++h)
          for (int i = 0; i < half; ++i) {
            const int64_t o = row + part * C + h * hd + i;
            double e0 = qkv[o], e1 = qkv[o + half];
            if (part < 2) {
              const double a = pos * std::pow(static_cast<double>(theta), -2.0 * i / hd);
              e0 = qkv[o] * std::cos(a) - qkv[o + half] * std::sin(a);
              e1 = qkv[o + half] * std::cos(a) + qkv[o] * std::sin(a);
            }
            EXPECT_NEAR(y[o], e0, 1e-13);
            EXPECT_NEAR(y[o + half], e1, 1e-13);
          }
    }
  const Tensor d = make(w);
  be_.rope_backward(d, s, theta);
  expect_gradient(qkv, get(d), loss, "rope dqkv");
}

// ---- attention --------------------------------------------------------------------------

TEST_F(OpsGradCheck, CausalAttention) {
  const AttentionShape s{2, 4, 2, 4};
  const int C = s.C(), hd = s.head_dim, T = s.T;
  const int64_t numel = static_cast<int64_t>(s.B) * T * 3 * C;
  std::vector<double> qkv = random_vector(numel, 41);
  const std::vector<double> w = random_vector(static_cast<size_t>(s.B) * T * C, 42);
  const Tensor t_qkv = make(qkv), out = garbage(s.B * T * C), lse = garbage(s.B * s.n_head * T);
  auto loss = [&] {
    put(t_qkv, qkv);
    be_.attention_forward(out, lse, t_qkv, s);
    return dot(get(out), w);
  };
  loss();
  // Forward against a naive causal softmax(q·k / sqrt(hd)) v.
  const std::vector<double> y = get(out), l = get(lse);
  for (int b = 0; b < s.B; ++b)
    for (int h = 0; h < s.n_head; ++h)
      for (int t = 0; t < T; ++t) {
        auto at = [&](int pos, int part, int i) {
          return qkv[(static_cast<size_t>(b) * T + pos) * 3 * C + part * C + h * hd + i];
        };
        std::vector<double> sc(t + 1);
        double mx = -std::numeric_limits<double>::infinity();
        for (int j = 0; j <= t; ++j) {
          double d = 0;
          for (int i = 0; i < hd; ++i) d += at(t, 0, i) * at(j, 1, i);
          sc[j] = d / std::sqrt(static_cast<double>(hd));
          mx = std::max(mx, sc[j]);
        }
        double z = 0;
        for (int j = 0; j <= t; ++j) z += std::exp(sc[j] - mx);
        EXPECT_NEAR(l[(static_cast<size_t>(b) * s.n_head + h) * T + t], mx + std::log(z), 1e-13);
        for (int i = 0; i < hd; ++i) {
          double o = 0;
          for (int j = 0; j <= t; ++j) o += std::exp(sc[j] - mx) / z * at(j, 2, i);
          EXPECT_NEAR(y[(static_cast<size_t>(b) * T + t) * C + h * hd + i], o, 1e-13);
        }
      }
  const Tensor dqkv = garbage(numel);  // overwrite contract
  be_.attention_backward(dqkv, make(w), t_qkv, out, lse, s);
  expect_gradient(qkv, get(dqkv), loss, "attention dqkv");
}

// ---- MLP activations --------------------------------------------------------------------

TEST_F(OpsGradCheck, SwiGlu) {
  const int N = 3, H = 5;
  std::vector<double> gu = random_vector(N * 2 * H, 51, 1.5);
  const std::vector<double> w = random_vector(N * H, 52);
  const Tensor t_gu = make(gu), out = garbage(N * H);
  auto loss = [&] {
    put(t_gu, gu);
    be_.swiglu_forward(out, t_gu, N, H);
    return dot(get(out), w);
  };
  loss();
  const std::vector<double> y = get(out);
  for (int r = 0; r < N; ++r)
    for (int i = 0; i < H; ++i) {
      const double g = gu[r * 2 * H + i], u = gu[r * 2 * H + H + i];
      EXPECT_NEAR(y[r * H + i], g * sigmoid(g) * u, 1e-14);
    }
  const Tensor d = garbage(N * 2 * H);
  be_.swiglu_backward(d, make(w), t_gu, N, H);
  expect_gradient(gu, get(d), loss, "swiglu dgate_up");
}

TEST_F(OpsGradCheck, Gelu) {
  const int N = 3, H = 5;
  std::vector<double> x = random_vector(N * H, 53, 2.0);
  const std::vector<double> w = random_vector(N * H, 54);
  const Tensor t_x = make(x), out = garbage(N * H);
  auto loss = [&] {
    put(t_x, x);
    be_.gelu_forward(out, t_x, N, H);
    return dot(get(out), w);
  };
  loss();
  const std::vector<double> y = get(out);
  const double k = std::sqrt(2.0 / M_PI);
  for (int i = 0; i < N * H; ++i)
    EXPECT_NEAR(y[i], 0.5 * x[i] * (1 + std::tanh(k * (x[i] + 0.044715 * x[i] * x[i] * x[i]))),
                1e-14);
  const Tensor d = garbage(N * H);
  be_.gelu_backward(d, make(w), t_x, N, H);
  expect_gradient(x, get(d), loss, "gelu dx");
}

// ---- cross-entropy ----------------------------------------------------------------------

TEST_F(OpsGradCheck, CrossEntropyInPlaceGradientWithPadding) {
  const int N = 4, V = 7, Vp = 10;
  const float dloss = 0.375f;
  std::vector<double> logits = random_vector(N * Vp, 61, 2.0);
  for (int r = 0; r < N; ++r)
    for (int i = V; i < Vp; ++i) logits[r * Vp + i] = 50.0;  // must be ignored
  const std::vector<int32_t> targets = {0, 6, 3, 3};
  const Tensor t_tg = ids(targets), t_lg = zeros(N * Vp), losses = garbage(N);
  auto loss = [&] {
    put(t_lg, logits);
    be_.cross_entropy(losses, t_lg, t_tg, N, V, Vp, 0.0f);
    const std::vector<double> l = get(losses);
    double s = 0;
    for (double v : l) s += v;
    return s;
  };
  loss();
  EXPECT_EQ(get(t_lg), logits) << "dloss = 0 must leave the logits untouched";
  const std::vector<double> l = get(losses);
  for (int r = 0; r < N; ++r) {
    double mx = -1e300, z = 0;
    for (int i = 0; i < V; ++i) mx = std::max(mx, logits[r * Vp + i]);
    for (int i = 0; i < V; ++i) z += std::exp(logits[r * Vp + i] - mx);
    EXPECT_NEAR(l[r], mx + std::log(z) - logits[r * Vp + targets[r]], 1e-13);
  }
  put(t_lg, logits);
  be_.cross_entropy(losses, t_lg, t_tg, N, V, Vp, dloss);
  const std::vector<double> d = get(t_lg);
  for (int r = 0; r < N; ++r)
    for (int i = V; i < Vp; ++i) EXPECT_EQ(d[r * Vp + i], 0.0) << "padded column " << i;
  // The op writes d(dloss · Σ loss)/dlogits.
  std::vector<double> unscaled(d.size());
  for (size_t i = 0; i < d.size(); ++i) unscaled[i] = d[i] / static_cast<double>(dloss);
  expect_gradient(logits, unscaled, loss, "cross_entropy dlogits");
}

// ---- residual streams -------------------------------------------------------------------

TEST_F(OpsGradCheck, StreamExpandAndCollapseAreAdjoint) {
  const int N = 3, n = 3, C = 4;
  std::vector<double> x = random_vector(N * C, 71), X = random_vector(N * n * C, 72);
  const std::vector<double> wX = random_vector(N * n * C, 73), wx = random_vector(N * C, 74);
  const Tensor t_x = make(x), t_X = make(X), outX = garbage(N * n * C), outx = garbage(N * C);
  auto expand_loss = [&] {
    put(t_x, x);
    be_.stream_expand(outX, t_x, N, n, C);
    return dot(get(outX), wX);
  };
  auto collapse_loss = [&] {
    put(t_X, X);
    be_.stream_collapse(outx, t_X, N, n, C);
    return dot(get(outx), wx);
  };
  // Backward of expand is collapse and vice versa (the model relies on this).
  const Tensor gx = garbage(N * C), gX = garbage(N * n * C);
  be_.stream_collapse(gx, make(wX), N, n, C);
  be_.stream_expand(gX, make(wx), N, n, C);
  expect_gradient(x, get(gx), expand_loss, "stream_expand");
  expect_gradient(X, get(gX), collapse_loss, "stream_collapse");
}

TEST_F(OpsGradCheck, StreamAggregate) {
  const ConnShape s{3, 3, 4};
  const int N = s.N, n = s.n, C = s.C;
  std::vector<double> X = random_vector(N * n * C, 81), pre = random_vector(N * n, 82);
  const std::vector<double> w = random_vector(N * C, 83);
  const Tensor t_X = make(X), t_pre = make(pre), u = garbage(N * C);
  auto loss = [&] {
    put(t_X, X);
    put(t_pre, pre);
    be_.stream_aggregate_forward(u, t_X, t_pre, s);
    return dot(get(u), w);
  };
  loss();
  const std::vector<double> fill = random_vector(N * n * C, 84);
  const Tensor dX = make(fill), dpre = garbage(N * n);
  be_.stream_aggregate_backward(dX, dpre, make(w), t_X, t_pre, s);
  expect_gradient(X, minus(get(dX), fill), loss, "stream_aggregate dX (+=)");
  expect_gradient(pre, get(dpre), loss, "stream_aggregate dpre (overwrite)");
}

TEST_F(OpsGradCheck, StreamMerge) {
  const ConnShape s{3, 3, 4};
  const int N = s.N, n = s.n, C = s.C;
  std::vector<double> X = random_vector(N * n * C, 91), f = random_vector(N * C, 92);
  std::vector<double> res = random_vector(N * n * n, 93), post = random_vector(N * n, 94);
  const std::vector<double> w = random_vector(N * n * C, 95);
  const Tensor t_X = make(X), t_f = make(f), t_res = make(res), t_post = make(post);
  const Tensor Y = garbage(N * n * C);
  const Coeffs c{Tensor{}, t_post, t_res};
  auto loss = [&] {
    put(t_X, X);
    put(t_f, f);
    put(t_res, res);
    put(t_post, post);
    be_.stream_merge_forward(Y, t_X, t_f, c, s);
    return dot(get(Y), w);
  };
  loss();
  // Every output of the merge backward is documented as overwrite.
  const Tensor dX = garbage(N * n * C), df = garbage(N * C);
  const Coeffs dc{Tensor{}, garbage(N * n), garbage(N * n * n)};
  be_.stream_merge_backward(dX, df, dc, make(w), t_X, t_f, c, s);
  expect_gradient(X, get(dX), loss, "stream_merge dX");
  expect_gradient(f, get(df), loss, "stream_merge df");
  expect_gradient(res, get(dc.res), loss, "stream_merge dres");
  expect_gradient(post, get(dc.post), loss, "stream_merge dpost");
}

// ---- Sinkhorn (the detailed properties are in test_sinkhorn.cpp) ------------------------

TEST_F(OpsGradCheck, Sinkhorn) {
  const int count = 3, n = 4, iters = 20;
  std::vector<double> Z = random_vector(count * n * n, 101, 1.5);
  const std::vector<double> w = random_vector(count * n * n, 102);
  const Tensor t_Z = make(Z), H = garbage(count * n * n);
  auto loss = [&] {
    put(t_Z, Z);
    be_.sinkhorn_forward(H, t_Z, count, n, iters);
    return dot(get(H), w);
  };
  const Tensor dZ = garbage(count * n * n);
  be_.sinkhorn_backward(dZ, make(w), t_Z, count, n, iters);
  expect_gradient(Z, get(dZ), loss, "sinkhorn dZ");
}

// ---- mHC coefficients -------------------------------------------------------------------

TEST_F(OpsGradCheck, MhcCoefficients) {
  const ConnShape s{3, 3, 4};
  const int N = s.N, n = s.n, C = s.C, D = s.D(), nC = n * C, iters = 20;
  const float eps = 1e-6f;
  std::vector<double> X = random_vector(N * nC, 111), phi = random_vector(nC * D, 112, 0.3);
  std::vector<double> alpha = {0.8, -0.6, 1.3}, bias = random_vector(D, 114);
  const std::vector<double> wpre = random_vector(N * n, 115), wpost = random_vector(N * n, 116),
                            wres = random_vector(N * n * n, 117);
  const Tensor t_X = make(X);
  const MhcParams p{make(phi), make(alpha), make(bias)};
  const Coeffs c{garbage(N * n), garbage(N * n), garbage(N * n * n)};
  const MhcSaved saved{garbage(N * D), garbage(N)};
  auto loss = [&] {
    put(t_X, X);
    put(p.phi, phi);
    put(p.alpha, alpha);
    put(p.bias, bias);
    be_.mhc_coeff_forward(c, saved, t_X, p, s, iters, eps);
    return dot(get(c.pre), wpre) + dot(get(c.post), wpost) + dot(get(c.res), wres);
  };
  loss();
  // Forward against residuals.md: r = sqrt(mean(v²) + ε), m = (v·φ)/r, σ and 2σ gates.
  const std::vector<double> m = get(saved.m), r = get(saved.rms), pre = get(c.pre),
                            post = get(c.post);
  for (int t = 0; t < N; ++t) {
    double ss = 0;
    for (int i = 0; i < nC; ++i) ss += X[t * nC + i] * X[t * nC + i];
    const double rt = std::sqrt(ss / nC + static_cast<double>(eps));
    EXPECT_NEAR(r[t], rt, 1e-14 * rt);
    for (int d = 0; d < D; ++d) {
      double md = 0;
      for (int i = 0; i < nC; ++i) md += X[t * nC + i] * phi[i * D + d];
      EXPECT_NEAR(m[t * D + d], md / rt, 1e-13);
    }
    for (int i = 0; i < n; ++i) {
      EXPECT_NEAR(pre[t * n + i], sigmoid(alpha[0] * m[t * D + i] + bias[i]), 1e-14);
      EXPECT_NEAR(post[t * n + i], 2 * sigmoid(alpha[1] * m[t * D + n + i] + bias[n + i]), 1e-14);
    }
  }
  // Parameter grads and dX accumulate.
  const std::vector<double> f_X = random_vector(N * nC, 118), f_phi = random_vector(nC * D, 119),
                            f_a = random_vector(3, 120), f_b = random_vector(D, 121);
  const Tensor dX = make(f_X);
  const MhcParams dp{make(f_phi), make(f_a), make(f_b)};
  const Coeffs dc{make(wpre), make(wpost), make(wres)};
  be_.mhc_coeff_backward(dX, dp, dc, t_X, p, saved, s, iters);
  expect_gradient(X, minus(get(dX), f_X), loss, "mhc dX (+=)");
  expect_gradient(phi, minus(get(dp.phi), f_phi), loss, "mhc dphi (+=)");
  expect_gradient(alpha, minus(get(dp.alpha), f_a), loss, "mhc dalpha (+=)");
  expect_gradient(bias, minus(get(dp.bias), f_b), loss, "mhc dbias (+=)");
}

// ---- HC coefficients --------------------------------------------------------------------

TEST_F(OpsGradCheck, HcCoefficientsStatic) {
  const ConnShape s{3, 3, 4};
  const int N = s.N, n = s.n, C = s.C;
  std::vector<double> X = random_vector(N * n * C, 131), a = random_vector(n, 132),
                      A = random_vector(n * n, 133), b = random_vector(n, 134);
  const std::vector<double> wpre = random_vector(N * n, 135), wpost = random_vector(N * n, 136),
                            wres = random_vector(N * n * n, 137);
  const Tensor t_X = make(X);
  HcParams p;
  p.a = make(a);
  p.A = make(A);
  p.b = make(b);
  const Coeffs c{garbage(N * n), garbage(N * n), garbage(N * n * n)};
  auto loss = [&] {
    put(t_X, X);
    put(p.a, a);
    put(p.A, A);
    put(p.b, b);
    be_.hc_coeff_forward(c, HcSaved{}, t_X, p, s, 1e-5f);
    return dot(get(c.pre), wpre) + dot(get(c.post), wpost) + dot(get(c.res), wres);
  };
  loss();
  // Static HC: pre = a, post = b, H_res = Aᵀ for every token.
  const std::vector<double> pre = get(c.pre), post = get(c.post), res = get(c.res);
  for (int t = 0; t < N; ++t)
    for (int i = 0; i < n; ++i) {
      EXPECT_EQ(pre[t * n + i], a[i]);
      EXPECT_EQ(post[t * n + i], b[i]);
      for (int j = 0; j < n; ++j) EXPECT_EQ(res[(t * n + i) * n + j], A[j * n + i]);
    }
  const std::vector<double> f_X = random_vector(N * n * C, 138), f_a = random_vector(n, 139),
                            f_A = random_vector(n * n, 140), f_b = random_vector(n, 141);
  const Tensor dX = make(f_X);
  HcParams dp;
  dp.a = make(f_a);
  dp.A = make(f_A);
  dp.b = make(f_b);
  be_.hc_coeff_backward(dX, dp, Coeffs{make(wpre), make(wpost), make(wres)}, t_X, p, HcSaved{}, s);
  expect_gradient(a, minus(get(dp.a), f_a), loss, "hc static da (+=)");
  expect_gradient(A, minus(get(dp.A), f_A), loss, "hc static dA (+=)");
  expect_gradient(b, minus(get(dp.b), f_b), loss, "hc static db (+=)");
  // Static coefficients do not depend on X: dX keeps its fill exactly.
  EXPECT_EQ(get(dX), f_X);
}

TEST_F(OpsGradCheck, HcCoefficientsDynamic) {
  const ConnShape s{3, 3, 4};
  const int N = s.N, n = s.n, C = s.C;
  const float norm_eps = 1e-5f;
  std::vector<double> X = random_vector(N * n * C, 151), a = random_vector(n, 152),
                      A = random_vector(n * n, 153), b = random_vector(n, 154),
                      nw = random_vector(C, 155, 0.3), w_a = random_vector(C, 156, 0.7),
                      W_A = random_vector(C * n, 157, 0.7), w_b = random_vector(C, 158, 0.7),
                      s_a = {0.7}, s_b = {-0.4};
  for (auto& v : nw) v += 1.0;
  const std::vector<double> wpre = random_vector(N * n, 159), wpost = random_vector(N * n, 160),
                            wres = random_vector(N * n * n, 161);
  const Tensor t_X = make(X);
  const HcParams p{make(a),   make(A),   make(b),   make(nw), make(w_a),
                   make(W_A), make(w_b), make(s_a), make(s_b)};
  const Coeffs c{garbage(N * n), garbage(N * n), garbage(N * n * n)};
  const HcSaved saved{garbage(N * n), garbage(N * n * (n + 2))};
  auto loss = [&] {
    put(t_X, X);
    put(p.a, a);
    put(p.A, A);
    put(p.b, b);
    put(p.norm_w, nw);
    put(p.w_a, w_a);
    put(p.W_A, W_A);
    put(p.w_b, w_b);
    put(p.s_alpha, s_a);
    put(p.s_beta, s_b);
    be_.hc_coeff_forward(c, saved, t_X, p, s, norm_eps);
    return dot(get(c.pre), wpre) + dot(get(c.post), wpost) + dot(get(c.res), wres);
  };
  loss();
  // Forward against residuals.md: X̄_i = RMSNorm(X_i), a_i = s_α tanh(X̄_i·w_a) + a_i,
  // A_i: = s_α tanh(X̄_i W_A) + A_i:, b_i = s_β tanh(X̄_i·w_b) + b_i, H_res = Aᵀ.
  const std::vector<double> pre = get(c.pre), post = get(c.post), res = get(c.res);
  for (int t = 0; t < N; ++t)
    for (int i = 0; i < n; ++i) {
      const double* xi = X.data() + (t * n + i) * C;
      double ms = 0;
      for (int k = 0; k < C; ++k) ms += xi[k] * xi[k] / C;
      std::vector<double> xb(C);
      for (int k = 0; k < C; ++k) xb[k] = xi[k] / std::sqrt(ms + double(norm_eps)) * nw[k];
      double za = 0, zb = 0;
      for (int k = 0; k < C; ++k) za += xb[k] * w_a[k], zb += xb[k] * w_b[k];
      EXPECT_NEAR(pre[t * n + i], s_a[0] * std::tanh(za) + a[i], 1e-13);
      EXPECT_NEAR(post[t * n + i], s_b[0] * std::tanh(zb) + b[i], 1e-13);
      for (int j = 0; j < n; ++j) {
        double z = 0;
        for (int k = 0; k < C; ++k) z += xb[k] * W_A[k * n + j];
        EXPECT_NEAR(res[(t * n + j) * n + i], s_a[0] * std::tanh(z) + A[i * n + j], 1e-13);
      }
    }
  std::vector<std::vector<double>> fills;
  for (const auto* v : {&X, &a, &A, &b, &nw, &w_a, &W_A, &w_b, &s_a, &s_b})
    fills.push_back(random_vector(v->size(), 170 + fills.size()));
  const Tensor dX = make(fills[0]);
  const HcParams dp{make(fills[1]), make(fills[2]), make(fills[3]), make(fills[4]), make(fills[5]),
                    make(fills[6]), make(fills[7]), make(fills[8]), make(fills[9])};
  be_.hc_coeff_backward(dX, dp, Coeffs{make(wpre), make(wpost), make(wres)}, t_X, p, saved, s);
  expect_gradient(X, minus(get(dX), fills[0]), loss, "hc dynamic dX (+=)");
  expect_gradient(a, minus(get(dp.a), fills[1]), loss, "hc dynamic da (+=)");
  expect_gradient(A, minus(get(dp.A), fills[2]), loss, "hc dynamic dA (+=)");
  expect_gradient(b, minus(get(dp.b), fills[3]), loss, "hc dynamic db (+=)");
  expect_gradient(nw, minus(get(dp.norm_w), fills[4]), loss, "hc dynamic dnorm_w (+=)");
  expect_gradient(w_a, minus(get(dp.w_a), fills[5]), loss, "hc dynamic dw_a (+=)");
  expect_gradient(W_A, minus(get(dp.W_A), fills[6]), loss, "hc dynamic dW_A (+=)");
  expect_gradient(w_b, minus(get(dp.w_b), fills[7]), loss, "hc dynamic dw_b (+=)");
  expect_gradient(s_a, minus(get(dp.s_alpha), fills[8]), loss, "hc dynamic ds_alpha (+=)");
  expect_gradient(s_b, minus(get(dp.s_beta), fills[9]), loss, "hc dynamic ds_beta (+=)");
}

// ---- GEMM -------------------------------------------------------------------------------

TEST_F(OpsGradCheck, GemmAllTransposesWithLeadingDimensionsAndBeta) {
  const int m = 3, n = 4, k = 5;
  const float alpha = 0.75f, beta = 0.5f;  // exact in float
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      SCOPED_TRACE(std::string("trans_a=") + (ta ? "T" : "N") + " trans_b=" + (tb ? "T" : "N"));
      // Padded leading dimensions: op(A) [m,k] stored [m,lda≥k] or [k,lda≥m].
      const int lda = (ta ? m : k) + 2, ldb = (tb ? k : n) + 1, ldc = n + 3;
      const int a_rows = ta ? k : m, b_rows = tb ? n : k;
      const std::vector<double> A = random_vector(a_rows * lda, 181 + 2 * ta + tb);
      const std::vector<double> B = random_vector(b_rows * ldb, 185 + 2 * ta + tb);
      const std::vector<double> C0 = random_vector(m * ldc, 189 + 2 * ta + tb);
      auto opA = [&](int i, int p) { return ta ? A[p * lda + i] : A[i * lda + p]; };
      auto opB = [&](int p, int j) { return tb ? B[j * ldb + p] : B[p * ldb + j]; };
      std::vector<double> expect = C0;
      for (int i = 0; i < m; ++i)
        for (int j = 0; j < n; ++j) {
          double acc = 0;
          for (int p = 0; p < k; ++p) acc += opA(i, p) * opB(p, j);
          expect[i * ldc + j] = alpha * acc + beta * C0[i * ldc + j];
        }
      const Tensor tC = make(C0);
      be_.gemm(ta, tb, m, n, k, alpha, make(A), lda, make(B), ldb, beta, tC, ldc);
      const std::vector<double> got = get(tC);
      EXPECT_LE(max_abs_diff(got, expect), 1e-13);  // also: padding columns untouched
      // beta = 0 overwrites: C is not read (NaN in C must not leak).
      const Tensor tN = make(std::vector<double>(C0.size(), std::nan("")));
      be_.gemm(ta, tb, m, n, k, alpha, make(A), lda, make(B), ldb, 0.f, tN, ldc);
      const std::vector<double> got0 = get(tN);
      for (int i = 0; i < m; ++i)
        for (int j = 0; j < n; ++j)
          EXPECT_NEAR(got0[i * ldc + j], expect[i * ldc + j] - beta * C0[i * ldc + j], 1e-13);
    }
}

// ---- AdamW ------------------------------------------------------------------------------

// PyTorch AdamW: g ← g·scale; m ← β1 m + (1−β1) g; v ← β2 v + (1−β2) g²;
// p ← p (1 − lr·wd) − lr · m̂ / (sqrt(v̂) + eps), m̂ = m/(1−β1^t), v̂ = v/(1−β2^t).
void adamw_reference(std::vector<double>& p, const std::vector<double>& g, std::vector<double>& m,
                     std::vector<double>& v, const AdamWStep& s) {
  const double b1 = s.beta1, b2 = s.beta2, lr = s.lr, wd = s.weight_decay, eps = s.eps;
  for (size_t i = 0; i < p.size(); ++i) {
    const double gi = g[i] * static_cast<double>(s.grad_scale);
    m[i] = b1 * m[i] + (1 - b1) * gi;
    v[i] = b2 * v[i] + (1 - b2) * gi * gi;
    const double mhat = m[i] / (1 - std::pow(b1, s.step));
    const double vhat = v[i] / (1 - std::pow(b2, s.step));
    p[i] = p[i] * (1 - lr * wd) - lr * mhat / (std::sqrt(vhat) + eps);
  }
}

TEST_F(OpsGradCheck, AdamWMatchesPyTorchFormula) {
  const int count = 9;
  std::vector<double> p = random_vector(count, 191), m = random_vector(count, 193, 0.1),
                      v = random_vector(count, 194, 0.1);
  for (auto& x : v) x *= x;  // second moments are non-negative
  AdamWStep s;
  s.lr = 0.01f;
  s.beta1 = 0.9f;
  s.beta2 = 0.95f;
  s.eps = 1e-8f;
  s.weight_decay = 0.1f;
  s.grad_scale = 0.5f;
  const Tensor tp = make(p), tm = make(m), tv = make(v);
  for (int64_t step : {3, 4}) {  // continue from existing moments: bias correction at t=3, 4
    SCOPED_TRACE("step " + std::to_string(step));
    const std::vector<double> g = random_vector(count, 200 + step);
    s.step = step;
    be_.adamw(tp, make(g), tm, tv, s);
    adamw_reference(p, g, m, v, s);
    auto close = [](const std::vector<double>& a, const std::vector<double>& b) {
      return testing::max_rel_error(a, b, 1e-30);
    };
    EXPECT_LE(close(get(tp), p), 1e-13);
    EXPECT_LE(close(get(tm), m), 1e-13);
    EXPECT_LE(close(get(tv), v), 1e-13);
  }
  // Decoupled decay: with zero gradient and moments only the decay factor acts.
  std::vector<double> q = random_vector(count, 210);
  const Tensor tq = make(q), zg = zeros(count), zm = zeros(count), zv = zeros(count);
  s.step = 1;
  be_.adamw(tq, zg, zm, zv, s);
  const std::vector<double> got = get(tq);
  const double factor = 1.0 - static_cast<double>(s.lr) * static_cast<double>(s.weight_decay);
  for (int i = 0; i < count; ++i) EXPECT_NEAR(got[i], q[i] * factor, 1e-15);
}

}  // namespace
}  // namespace mhc
