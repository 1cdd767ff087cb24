// The mHC variants' per-token math and ops (residuals.md "Variants"): float64 finite-
// difference checks of every variant's coefficient op and of the learned collapse, exact
// double stochasticity of birkhoff / kronecker / identity in fp32 on wide logits, the
// forward against definitions written here independently (explicit permutation matrices,
// explicit Kronecker products), and DeepSeek-V4's numerics against the paper's.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>
#include <string>
#include <vector>

#include "cpu/cpu_backend.h"
#include "host_tensors.h"
#include "mhc_math.h"
#include "param_layout.h"
#include "test_support.h"

namespace mhc {
namespace {

using math::MhcProjection;
using math::MhcVariant;
using testing::random_vector;

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

double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

void expect_gradient(std::vector<double>& x, const std::vector<double>& analytic,
                     const std::function<double()>& loss, const std::string& what) {
  ASSERT_EQ(x.size(), analytic.size()) << what;
  const size_t stride = std::max<size_t>(1, x.size() / 256);
  std::vector<double> fd, an;
  for (size_t i = 0; i < x.size(); i += stride) {
    fd.push_back(testing::central_difference(x, i, loss));
    an.push_back(analytic[i]);
  }
  EXPECT_LE(testing::max_rel_error(an, fd, 1e-9), 1e-6) << what << ": " << fd.size()
                                                        << " entries checked";
}

struct VariantCase {
  MhcProjection projection;
  bool v4, dynamic;
  int n;
};

std::string variant_name(const ::testing::TestParamInfo<VariantCase>& info) {
  const VariantCase& c = info.param;
  static const char* names[] = {"sinkhorn", "birkhoff", "kronecker", "identity"};
  return std::string(names[static_cast<int>(c.projection)]) + (c.v4 ? "_v4" : "") +
         (c.dynamic ? "" : "_static") + "_n" + std::to_string(c.n);
}

class VariantOps : public ::testing::TestWithParam<VariantCase> {
 protected:
  // An empty vector stands for an absent parameter (static mHC has no φ, α).
  Tensor make(const std::vector<double>& v) { return v.empty() ? Tensor{} : tensors_.make(v); }
  Tensor garbage(int64_t n) { return make(std::vector<double>(static_cast<size_t>(n), 1e3)); }
  std::vector<double> get(Tensor t) { return tensors_.get(t); }
  void put(Tensor t, const std::vector<double>& v) {
    if (!v.empty()) be_.upload(t, v.data());
  }
  CpuBackend<double> be_{1};
  testing::HostTensors tensors_{be_, DType::F64};  // after be_: released before it
};

// The coefficient op of every variant against finite differences (all inputs and every
// parameter; += contracts included), with V4's ε large enough to matter.
TEST_P(VariantOps, CoefficientGradients) {
  const VariantCase& vc = GetParam();
  ConnShape s{3, vc.n, 4};
  s.mhc.projection = vc.projection;
  s.mhc.v4 = vc.v4;
  s.mhc.dynamic = vc.dynamic;
  s.mhc.eps = vc.v4 ? 1e-2f : 1e-6f;
  const int N = s.N, n = s.n, C = s.C, D = s.D(), nC = n * C, iters = 7;
  std::vector<double> X = random_vector(N * nC, 211);
  std::vector<double> phi, alpha;
  if (vc.dynamic) {
    phi = random_vector(nC * D, 212, 0.3);
    alpha = {0.8, -0.6, 1.3};
  }
  std::vector<double> bias = random_vector(D, 214);
  const std::vector<double> wpre = random_vector(N * n, 215), wpost = random_vector(N * n, 216),
                            wres = random_vector(N * n * n, 217);
  const Tensor t_X = make(X);
  const MhcParams p{make(phi), make(alpha), make(bias)};
  const Coeffs c{garbage(N * n), garbage(N * n), garbage(N * n * n)};
  const MhcSaved saved{garbage(N * D), garbage(N)};
  auto loss = [&] {
    put(t_X, X);
    put(p.phi, phi);
    put(p.alpha, alpha);
    put(p.bias, bias);
    be_.mhc_variant_coeff_forward(c, saved, t_X, p, s, iters, 1e-6f);
    return dot(get(c.pre), wpre) + dot(get(c.post), wpost) + dot(get(c.res), wres);
  };
  loss();
  // Every variant's H_res has rows summing to 1 (V4: 1 − O(ε)); pre and post as the spec.
  const std::vector<double> res = get(c.res), pre = get(c.pre);
  for (int t = 0; t < N; ++t)
    for (int i = 0; i < n; ++i) {
      double row = 0;
      for (int j = 0; j < n; ++j) row += res[(t * n + i) * n + j];
      EXPECT_NEAR(row, 1.0, vc.v4 ? 3e-2 : 1e-12);
      if (!vc.dynamic)
        EXPECT_NEAR(pre[t * n + i], sigmoid(bias[i]) + (vc.v4 ? 1e-2 : 0.0), 1e-7);
    }
  const std::vector<double> f_X = random_vector(N * nC, 218), f_b = random_vector(D, 221);
  std::vector<double> f_phi, f_a;
  if (vc.dynamic) {
    f_phi = random_vector(nC * D, 219);
    f_a = random_vector(3, 220);
  }
  const Tensor dX = make(f_X);
  const MhcParams dp{make(f_phi), make(f_a), make(f_b)};
  const Coeffs dc{make(wpre), make(wpost), make(wres)};
  be_.mhc_variant_coeff_backward(dX, dp, dc, t_X, p, saved, s, iters);
  expect_gradient(bias, minus(get(dp.bias), f_b), loss, "dbias (+=)");
  if (!vc.dynamic) {
    EXPECT_EQ(get(dX), f_X) << "static mHC does not depend on X";
    return;
  }
  expect_gradient(X, minus(get(dX), f_X), loss, "dX (+=)");
  expect_gradient(phi, minus(get(dp.phi), f_phi), loss, "dphi (+=)");
  expect_gradient(alpha, minus(get(dp.alpha), f_a), loss, "dalpha (+=)");
}

INSTANTIATE_TEST_SUITE_P(
    AllVariants, VariantOps,
    ::testing::Values(VariantCase{MhcProjection::Sinkhorn, true, true, 1},
                      VariantCase{MhcProjection::Sinkhorn, true, true, 2},
                      VariantCase{MhcProjection::Sinkhorn, true, true, 4},
                      VariantCase{MhcProjection::Sinkhorn, false, false, 4},
                      VariantCase{MhcProjection::Sinkhorn, true, false, 2},
                      VariantCase{MhcProjection::Birkhoff, false, true, 1},
                      VariantCase{MhcProjection::Birkhoff, false, true, 2},
                      VariantCase{MhcProjection::Birkhoff, false, true, 3},
                      VariantCase{MhcProjection::Birkhoff, false, true, 4},
                      VariantCase{MhcProjection::Birkhoff, false, false, 4},
                      VariantCase{MhcProjection::Kronecker, false, true, 1},
                      VariantCase{MhcProjection::Kronecker, false, true, 2},
                      VariantCase{MhcProjection::Kronecker, false, true, 4},
                      VariantCase{MhcProjection::Kronecker, false, false, 4},
                      VariantCase{MhcProjection::Identity, false, true, 1},
                      VariantCase{MhcProjection::Identity, false, true, 4},
                      VariantCase{MhcProjection::Identity, false, false, 2}),
    variant_name);

// The generic variant op with the default MhcVariant computes bit for bit what the paper's
// op computes (the model keeps calling the paper's op for the default config).
TEST(VariantDefault, GenericOpIsBitIdenticalToThePaperOp) {
  CpuBackend<float> be(1);
  const ConnShape s{5, 4, 8};
  const int N = s.N, n = s.n, D = s.D(), nC = n * s.C;
  testing::HostTensors tensors(be, DType::F32);
  auto make = [&](const std::vector<double>& v) { return tensors.make(v); };
  auto get = [&](Tensor t) { return tensors.get(t); };
  const Tensor X = make(random_vector(N * nC, 901));
  const MhcParams p{make(random_vector(nC * D, 902, 0.3)), make({0.7, -0.4, 1.2}),
                    make(random_vector(D, 903))};
  Coeffs c[2];
  MhcSaved sv[2];
  for (int i = 0; i < 2; ++i) {
    c[i] = {make(std::vector<double>(N * n)), make(std::vector<double>(N * n)),
            make(std::vector<double>(N * n * n))};
    sv[i] = {make(std::vector<double>(N * D)), make(std::vector<double>(N))};
  }
  be.mhc_coeff_forward(c[0], sv[0], X, p, s, 20, 1e-6f);
  be.mhc_variant_coeff_forward(c[1], sv[1], X, p, s, 20, 1e-6f);
  EXPECT_EQ(get(c[0].pre), get(c[1].pre));
  EXPECT_EQ(get(c[0].post), get(c[1].post));
  EXPECT_EQ(get(c[0].res), get(c[1].res));
  const Coeffs dc{make(random_vector(N * n, 904)), make(random_vector(N * n, 905)),
                  make(random_vector(N * n * n, 906))};
  MhcParams dp[2];
  Tensor dX[2];
  for (int i = 0; i < 2; ++i) {
    dp[i] = {make(std::vector<double>(nC * D)), make(std::vector<double>(3)),
             make(std::vector<double>(D))};
    dX[i] = make(std::vector<double>(N * nC));
  }
  be.mhc_coeff_backward(dX[0], dp[0], dc, X, p, sv[0], s, 20);
  be.mhc_variant_coeff_backward(dX[1], dp[1], dc, X, p, sv[1], s, 20);
  EXPECT_EQ(get(dX[0]), get(dX[1]));
  EXPECT_EQ(get(dp[0].phi), get(dp[1].phi));
  EXPECT_EQ(get(dp[0].alpha), get(dp[1].alpha));
  EXPECT_EQ(get(dp[0].bias), get(dp[1].bias));
}

// ---- exact double stochasticity (fp32, wide logits) ---------------------------------

template <class Project>
void expect_doubly_stochastic_fp32(int n, int R, Project project, const char* what) {
  for (uint64_t seed = 0; seed < 50; ++seed) {
    const std::vector<double> zd = random_vector(static_cast<size_t>(std::max(R, 1)), 300 + seed, 12.0);
    std::vector<float> z(zd.begin(), zd.end()), H(n * n, -1.f),
        work(static_cast<size_t>(std::max(R, n * n)) + 16);
    project(z.data(), H.data(), work.data());
    for (int i = 0; i < n; ++i) {
      float row = 0, col = 0;
      for (int j = 0; j < n; ++j) {
        EXPECT_GE(H[i * n + j], 0.f) << what;
        EXPECT_LE(H[i * n + j], 1.f + 1e-6f) << what;
        row += H[i * n + j];
        col += H[j * n + i];
      }
      EXPECT_NEAR(row, 1.f, 1e-6f) << what << " n=" << n << " seed " << seed << " row " << i;
      EXPECT_NEAR(col, 1.f, 1e-6f) << what << " n=" << n << " seed " << seed << " col " << i;
    }
  }
}

TEST(VariantProjections, BirkhoffKroneckerIdentityAreExactlyDoublyStochasticInFp32) {
  for (int n = 1; n <= 5; ++n)
    expect_doubly_stochastic_fp32(n, math::factorial(n), [n](const float* z, float* H, float* w) {
      math::birkhoff_forward(z, n, H, w);
    }, "birkhoff");
  for (int n : {1, 2, 4, 8, 16})
    expect_doubly_stochastic_fp32(n, math::log2_exact(n), [n](const float* z, float* H, float*) {
      math::kronecker_forward(z, n, H);
    }, "kronecker");
  for (int n : {1, 3, 4}) {
    MhcVariant v;
    v.projection = MhcProjection::Identity;
    const int D = math::mhc_coeff_count(v.projection, n);
    std::vector<float> bias(D, 0.5f), pre(n), post(n), res(n * n),
        work(math::mhc_variant_work(v, n, 20));
    math::mhc_variant_forward<float>(nullptr, nullptr, bias.data(), n, 20, v, pre.data(),
                                     post.data(), res.data(), work.data());
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < n; ++j) EXPECT_EQ(res[i * n + j], i == j ? 1.f : 0.f);
  }
}

// ---- forward against independent definitions -----------------------------------------

TEST(VariantProjections, BirkhoffIsTheSoftmaxWeightedSumOfLexicographicPermutations) {
  for (int n = 1; n <= 5; ++n) {
    const int R = math::factorial(n);
    const std::vector<double> z = random_vector(R, 400 + n, 2.0);
    std::vector<double> H(n * n), w(R);
    math::birkhoff_forward(z.data(), n, H.data(), w.data());
    double zmax = *std::max_element(z.begin(), z.end()), s = 0;
    for (double v : z) s += std::exp(v - zmax);
    std::vector<double> ref(n * n, 0.0);
    std::vector<int> perm(n);
    std::iota(perm.begin(), perm.end(), 0);
    int k = 0;
    do {  // std::next_permutation enumerates in lexicographic order from the identity
      for (int i = 0; i < n; ++i) ref[i * n + perm[i]] += std::exp(z[k] - zmax) / s;
      ++k;
    } while (std::next_permutation(perm.begin(), perm.end()));
    ASSERT_EQ(k, R);
    EXPECT_LE(testing::max_abs_diff(H, ref), 1e-15) << "n=" << n;
  }
}

TEST(VariantProjections, KroneckerIsTheProductOfItsFactorsOutermostFirst) {
  for (int n : {1, 2, 4, 8}) {
    const int K = math::log2_exact(n);
    const std::vector<double> z = random_vector(std::max(K, 1), 500 + n, 2.0);
    std::vector<double> H(n * n);
    math::kronecker_forward(z.data(), n, H.data());
    std::vector<double> ref = {1.0};  // kron(B_1, kron(B_2, ...)) built from the inside out
    int size = 1;
    for (int l = K - 1; l >= 0; --l) {
      const double p = sigmoid(z[l]);
      const double B[2][2] = {{p, 1 - p}, {1 - p, p}};
      std::vector<double> next(4 * size * size);
      for (int a = 0; a < 2; ++a)
        for (int b = 0; b < 2; ++b)
          for (int i = 0; i < size; ++i)
            for (int j = 0; j < size; ++j)
              next[(a * size + i) * 2 * size + b * size + j] = B[a][b] * ref[i * size + j];
      ref = next;
      size *= 2;
    }
    EXPECT_LE(testing::max_abs_diff(H, ref), 1e-15) << "n=" << n;
  }
}

// ---- DeepSeek-V4 numerics ---------------------------------------------------------------

// With ε = 0, V4's projection of mat(H̃_res)ᵀ is the paper's Sinkhorn of the transposed
// logits with the same iteration count; pre and post are the paper's.
TEST(VariantProjections, DeepSeekV4WithZeroEpsilonIsThePaperOnTransposedLogits) {
  for (int n : {1, 2, 3, 4}) {
    for (int iters : {1, 5, 20}) {
      const int D = 2 * n + n * n;
      const std::vector<double> m = random_vector(D, 600 + n, 1.5);
      const std::vector<double> alpha = {0.7, 1.1, 2.0}, bias = random_vector(D, 610 + n);
      MhcVariant v4;
      v4.v4 = true;
      v4.eps = 0.f;
      std::vector<double> pre(n), post(n), res(n * n), work(math::mhc_variant_work(v4, n, iters));
      math::mhc_variant_forward(m.data(), alpha.data(), bias.data(), n, iters, v4, pre.data(),
                                post.data(), res.data(), work.data());
      // The paper's op on transposed res logits (m and bias transposed in the res block).
      std::vector<double> mt = m, bt = bias;
      for (int i = 0; i < n; ++i)
        for (int j = 0; j < n; ++j) {
          mt[2 * n + i * n + j] = m[2 * n + j * n + i];
          bt[2 * n + i * n + j] = bias[2 * n + j * n + i];
        }
      std::vector<double> pre_p(n), post_p(n), res_p(n * n), Z(n * n), M(n * n);
      math::mhc_coeff_nonlin_forward(mt.data(), alpha.data(), bt.data(), n, iters, pre_p.data(),
                                     post_p.data(), res_p.data(), Z.data(), M.data());
      EXPECT_EQ(pre, pre_p);
      EXPECT_EQ(post, post_p);
      EXPECT_LE(testing::max_abs_diff(res, res_p), 1e-14) << "n=" << n << " iters=" << iters;
    }
  }
}

// With ε > 0: pre = σ + ε, and the projection is the spec's loop written out here.
TEST(VariantProjections, DeepSeekV4EpsilonPlacements) {
  const int n = 4, iters = 6, D = 2 * n + n * n;
  const double eps = 1e-3;
  const std::vector<double> m = random_vector(D, 700, 1.5), bias = random_vector(D, 701);
  const std::vector<double> alpha = {0.7, 1.1, 2.0};
  MhcVariant v4;
  v4.v4 = true;
  v4.eps = static_cast<float>(eps);
  const double e = static_cast<double>(v4.eps);
  std::vector<double> pre(n), post(n), res(n * n), work(math::mhc_variant_work(v4, n, iters));
  math::mhc_variant_forward(m.data(), alpha.data(), bias.data(), n, iters, v4, pre.data(),
                            post.data(), res.data(), work.data());
  for (int i = 0; i < n; ++i) {
    EXPECT_NEAR(pre[i], sigmoid(alpha[0] * m[i] + bias[i]) + e, 1e-15);
    EXPECT_NEAR(post[i], 2 * sigmoid(alpha[1] * m[n + i] + bias[n + i]), 1e-15);
  }
  double Mx[4][4];
  for (int j = 0; j < n; ++j) {  // Z_ij = H̃_res[j*n + i]; softmax over i of column j
    double s = 0;
    for (int i = 0; i < n; ++i) s += std::exp(alpha[2] * m[2 * n + j * n + i] + bias[2 * n + j * n + i]);
    for (int i = 0; i < n; ++i)
      Mx[i][j] = std::exp(alpha[2] * m[2 * n + j * n + i] + bias[2 * n + j * n + i]) / s + e;
  }
  auto rows = [&] {
    for (int i = 0; i < n; ++i) {
      double s = e;
      for (int j = 0; j < n; ++j) s += Mx[i][j];
      for (int j = 0; j < n; ++j) Mx[i][j] /= s;
    }
  };
  rows();
  for (int t = 1; t < iters; ++t) {
    for (int j = 0; j < n; ++j) {
      double s = e;
      for (int i = 0; i < n; ++i) s += Mx[i][j];
      for (int i = 0; i < n; ++i) Mx[i][j] /= s;
    }
    rows();
  }
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) EXPECT_NEAR(res[i * n + j], Mx[i][j], 1e-14);
}

// mHC-lite's init puts the Sinkhorn init's diagonal mass on the diagonal.
TEST(VariantProjections, BirkhoffInitMatchesTheSinkhornInitDiagonal) {
  for (int n = 2; n <= 5; ++n) {
    const double s = 3.0;
    std::vector<double> z(math::factorial(n), 0.0), H(n * n), w(z.size()), Z(n * n), Hs(n * n),
        M(n * n);
    z[0] = birkhoff_identity_logit(n, s);
    math::birkhoff_forward(z.data(), n, H.data(), w.data());
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < n; ++j) Z[i * n + j] = i == j ? s : -s;
    math::sinkhorn_forward(Z.data(), n, 20, Hs.data(), M.data(), static_cast<double*>(nullptr));
    for (int i = 0; i < n; ++i) EXPECT_NEAR(H[i * n + i], Hs[i * n + i], 1e-12) << "n=" << n;
  }
}

// ---- learned collapse ---------------------------------------------------------------------

TEST(VariantCollapse, WeightsGradients) {
  CpuBackend<double> be(1);
  for (int n : {1, 2, 4}) {
    const int N = 3, C = 4, nC = n * C;
    const double eps = 1e-2;
    std::vector<double> X = random_vector(N * nC, 800 + n), phi = random_vector(nC * n, 810, 0.4),
                        alpha = {0.9}, bias = random_vector(n, 820);
    const std::vector<double> wts = random_vector(N * n, 830);
    testing::HostTensors tensors(be, DType::F64);
    auto make = [&](const std::vector<double>& v) { return tensors.make(v); };
    auto get = [&](Tensor t) { return tensors.get(t); };
    const Tensor tX = make(X), tphi = make(phi), ta = make(alpha), tb = make(bias);
    const Tensor w = make(std::vector<double>(N * n, 7.0)), m = make(std::vector<double>(N * n)),
                 r = make(std::vector<double>(N));
    auto loss = [&] {
      be.upload(tX, X.data());
      be.upload(tphi, phi.data());
      be.upload(ta, alpha.data());
      be.upload(tb, bias.data());
      be.collapse_weights_forward(w, m, r, tX, tphi, ta, tb, N, n, C, static_cast<float>(eps));
      return dot(get(w), wts);
    };
    loss();
    const std::vector<double> wv = get(w);
    for (int t = 0; t < N; ++t) {
      double ss = 0;
      for (int i = 0; i < nC; ++i) ss += X[t * nC + i] * X[t * nC + i];
      const double rt = std::sqrt(ss / nC + static_cast<double>(static_cast<float>(eps)));
      for (int i = 0; i < n; ++i) {
        double mi = 0;
        for (int c = 0; c < nC; ++c) mi += X[t * nC + c] * phi[c * n + i];
        EXPECT_NEAR(wv[t * n + i],
                    sigmoid(alpha[0] * mi / rt + bias[i]) + static_cast<float>(eps), 1e-14);
      }
    }
    const std::vector<double> fX = random_vector(N * nC, 840), fphi = random_vector(nC * n, 841),
                              fa = random_vector(1, 842), fb = random_vector(n, 843);
    const Tensor dX = make(fX), dphi = make(fphi), da = make(fa), db = make(fb);
    be.collapse_weights_backward(dX, dphi, da, db, make(wts), tX, tphi, ta, tb, m, r, N, n, C);
    expect_gradient(X, minus(get(dX), fX), loss, "collapse dX (+=) n=" + std::to_string(n));
    expect_gradient(phi, minus(get(dphi), fphi), loss, "collapse dphi (+=)");
    expect_gradient(alpha, minus(get(da), fa), loss, "collapse dalpha (+=)");
    expect_gradient(bias, minus(get(db), fb), loss, "collapse dbias (+=)");
  }
}

}  // namespace
}  // namespace mhc
