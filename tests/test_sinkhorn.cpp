// Sinkhorn–Knopp and the mHC coefficient path (residuals.md "Sinkhorn–Knopp",
// "Coefficient backward", invariants 1–4), through the CPU backend ops and the shared
// per-token math in core/mhc_math.h.
//
// Regimes: "narrow" logits are N(0,1); "wide" logits are N(0, 8²) (entries of exp(Z)
// spanning ~e^±40). T = 20 is residual.mhc.sinkhorn_iters' default (t_max).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <numeric>
#include <string>
#include <vector>

#include "cpu/cpu_backend.h"
#include "host_tensors.h"
#include "mhc_math.h"
#include "test_support.h"

namespace mhc {
namespace {

using testing::random_vector;

struct Regime {
  const char* name;
  double scale;
};
constexpr Regime kNarrow{"narrow", 1.0}, kWide{"wide", 8.0};
constexpr int kTmax = 20;

// Sinkhorn over every n×n block of Z through a backend (float or double).
std::vector<double> sk_forward(Backend& be, const std::vector<double>& Z, int n, int iters) {
  const int64_t numel = static_cast<int64_t>(Z.size());
  Tensor tz = be.alloc(numel, be.compute_dtype()), th = be.alloc(numel, be.compute_dtype());
  be.upload(tz, Z.data());
  be.sinkhorn_forward(th, tz, static_cast<int>(numel / (n * n)), n, iters);
  std::vector<double> H(Z.size());
  be.download(th, H.data());
  be.release(th);
  be.release(tz);
  return H;
}

std::vector<double> sk_backward(Backend& be, const std::vector<double>& Z,
                                const std::vector<double>& dH, int n, int iters) {
  const int64_t numel = static_cast<int64_t>(Z.size());
  Tensor tz = be.alloc(numel, be.compute_dtype()), tg = be.alloc(numel, be.compute_dtype()),
         td = be.alloc(numel, be.compute_dtype());
  be.upload(tz, Z.data());
  be.upload(tg, dH.data());
  be.sinkhorn_backward(td, tg, tz, static_cast<int>(numel / (n * n)), n, iters);
  std::vector<double> dZ(Z.size());
  be.download(td, dZ.data());
  be.release(td);
  be.release(tg);
  be.release(tz);
  return dZ;
}

double col_sum(const double* H, int n, int j) {
  double s = 0;
  for (int i = 0; i < n; ++i) s += H[i * n + j];
  return s;
}
double row_sum(const double* H, int n, int i) {
  double s = 0;
  for (int j = 0; j < n; ++j) s += H[i * n + j];
  return s;
}

double max_abs(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::fabs(x));
  return m;
}

// A random permutation of 0..n-1 (Fisher–Yates on counter-based uniforms).
std::vector<int> permutation(int n, uint64_t seed) {
  std::vector<int> p(n);
  std::iota(p.begin(), p.end(), 0);
  for (int i = n - 1; i > 0; --i)
    std::swap(p[i], p[static_cast<int>(uniform01(seed, i) * (i + 1)) % (i + 1)]);
  return p;
}

// Upper bound on max_j |colsum_j − 1| after T iterations (Birkhoff–Hopf / Franklin–Lorenz).
// With H = diag(x) M0 diag(y) (rows exact), the column sums after iteration T are
// c = y_T / y_{T+1}, where y ↦ 1/(M0ᵀ (1/(M0 y))) contracts Hilbert's projective metric
// by λ = tanh(Δ/4)², Δ = max_{i,j,k,l} (Z_ik + Z_jl − Z_jk − Z_il) the projective diameter
// of M0 = exp(Z). So δ_T = log(max c / min c) ≤ λ^{T−1} δ_1, and since Σ_j c_j = n
// (rows sum to 1) the sums straddle 1: |c_j − 1| ≤ e^{δ_T} − 1. The tolerance grows
// with the logit spread through Δ, which is why wide logits converge slowly.
double birkhoff_column_bound(const double* Z, const double* H1, int n, int T) {
  double diam = 0;
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j)
      for (int k = 0; k < n; ++k)
        for (int l = 0; l < n; ++l)
          diam = std::max(diam, Z[i * n + k] + Z[j * n + l] - Z[j * n + k] - Z[i * n + l]);
  const double lambda = std::pow(std::tanh(diam / 4), 2);
  double cmax = 0, cmin = 1e300;
  for (int j = 0; j < n; ++j) {
    cmax = std::max(cmax, col_sum(H1, n, j));
    cmin = std::min(cmin, col_sum(H1, n, j));
  }
  return std::expm1(std::pow(lambda, T - 1) * std::log(cmax / cmin)) + 1e-12;  // + rounding
}

// ---- (a) doubly-stochastic structure ------------------------------------------------

TEST(Sinkhorn, EntriesInUnitIntervalRowsExactColumnsWithinSpreadDependentBound) {
  CpuBackend<double> bd(1);
  CpuBackend<float> bf(1);
  const int count = 200;
  for (const Regime& rg : {kNarrow, kWide})
    for (int n : {1, 2, 3, 4, 8}) {
      SCOPED_TRACE(std::string(rg.name) + " n=" + std::to_string(n));
      const int nn = n * n;
      const std::vector<double> Z = random_vector(count * nn, 1000 + n, rg.scale);
      const std::vector<double> H = sk_forward(bd, Z, n, kTmax), H1 = sk_forward(bd, Z, n, 1);
      const std::vector<double> Hf = sk_forward(bf, Z, n, kTmax);
      std::vector<double> col_err(count);
      double worst_bound = 0;
      for (int p = 0; p < count; ++p) {
        const double *h = &H[p * nn], *hf = &Hf[p * nn];
        for (int e = 0; e < nn; ++e) {
          // [0, 1] up to one rounding of the last division.
          EXPECT_TRUE(h[e] >= 0 && h[e] <= 1 + 1e-15) << h[e];
          EXPECT_TRUE(hf[e] >= 0 && hf[e] <= 1 + 1e-6) << hf[e];
        }
        double ce = 0;
        for (int i = 0; i < n; ++i) {
          EXPECT_LE(std::fabs(row_sum(h, n, i) - 1), 1e-12);  // the last step is the row step
          EXPECT_LE(std::fabs(row_sum(hf, n, i) - 1), 1e-6);  // fp32 rounding
          ce = std::max(ce, std::fabs(col_sum(h, n, i) - 1));
        }
        col_err[p] = ce;
        const double bound = birkhoff_column_bound(&Z[p * nn], &H1[p * nn], n, kTmax);
        worst_bound = std::max(worst_bound, bound);
        EXPECT_LE(ce, bound) << "matrix " << p;
      }
      std::sort(col_err.begin(), col_err.end());
      const double median = col_err[count / 2], p90 = col_err[count * 9 / 10];
      // Narrow logits: the spec's "≈1e-6 at T = 20" holds for the typical matrix (median
      // ≤ 1e-6); the slow tail (2×2 minors with large cross-ratios, up to ~1e-4) is covered
      // by the per-matrix bound above. Wide logits: typically 1e-2–1e-1 at T = 20 and the
      // Birkhoff bound exceeds 1 there, so it is bounded loosely: a column a quarter off
      // would mean a broken iteration, not a slow one.
      if (rg.scale == kNarrow.scale) {
        EXPECT_LE(median, 1e-6);
      } else {
        EXPECT_LE(col_err.back(), 0.25);
      }
      std::printf(
          "  [sinkhorn T=%d %-6s n=%d] column |sum-1|: median %.1e  p90 %.1e  max %.1e"
          "  (max Birkhoff bound %.1e)\n",
          kTmax, rg.name, n, median, p90, col_err.back(), worst_bound);
    }
}

TEST(Sinkhorn, ColumnErrorShrinksWithMoreIterations) {
  // The Birkhoff contraction makes more iterations never worse in aggregate; wide logits
  // need many more iterations than t_max for tight columns.
  CpuBackend<double> bd(1);
  for (const Regime& rg : {kNarrow, kWide})
    for (int n : {2, 4, 8}) {
      SCOPED_TRACE(std::string(rg.name) + " n=" + std::to_string(n));
      const std::vector<double> Z = random_vector(50 * n * n, 1100 + n, rg.scale);
      double prev = 1e300;
      for (int T : {1, 5, 20, 100}) {
        const std::vector<double> H = sk_forward(bd, Z, n, T);
        double total = 0;
        for (size_t p = 0; p < H.size() / (n * n); ++p)
          for (int j = 0; j < n; ++j) total += std::fabs(col_sum(&H[p * n * n], n, j) - 1);
        EXPECT_LE(total, prev * (1 + 1e-9) + 1e-12) << "T=" << T;
        prev = total;
      }
    }
}

// ---- (b) permutation equivariance ---------------------------------------------------

TEST(Sinkhorn, PermutationEquivariant) {
  CpuBackend<double> bd(1);
  for (const Regime& rg : {kNarrow, kWide})
    for (int n : {2, 3, 4, 8}) {
      SCOPED_TRACE(std::string(rg.name) + " n=" + std::to_string(n));
      const int count = 20, nn = n * n;
      const std::vector<double> Z = random_vector(count * nn, 1200 + n, rg.scale);
      std::vector<double> PZQ(Z.size());
      std::vector<std::vector<int>> rows(count), cols(count);
      for (int p = 0; p < count; ++p) {
        rows[p] = permutation(n, 1300 + p);
        cols[p] = permutation(n, 1400 + p);
        for (int i = 0; i < n; ++i)
          for (int j = 0; j < n; ++j)
            PZQ[p * nn + i * n + j] = Z[p * nn + rows[p][i] * n + cols[p][j]];
      }
      const std::vector<double> H = sk_forward(bd, Z, n, kTmax), HP = sk_forward(bd, PZQ, n, kTmax);
      double err = 0;
      for (int p = 0; p < count; ++p)
        for (int i = 0; i < n; ++i)
          for (int j = 0; j < n; ++j)
            err = std::max(
                err, std::fabs(HP[p * nn + i * n + j] - H[p * nn + rows[p][i] * n + cols[p][j]]));
      EXPECT_LE(err, 1e-12);
    }
}

// ---- (c) shift invariance and the zero sums of ∂Z -----------------------------------
//
// Which sums vanish: the iteration normalises columns first, so adding c to column j of Z
// multiplies column j of M0 by e^c, which the first column step divides out exactly: the
// output is invariant at every T, hence Σ_i ∂Z_ij = 0 (column sums of ∂Z) exactly. Adding c
// to row i is absorbed by the first row step, but only after it has changed the column
// sums, so the output (and Σ_j ∂Z_ij) is row-invariant only in the limit T → ∞, where
// SK(Z) is the unique doubly-stochastic matrix diag(x) e^Z diag(y). Both are checked, each
// in the regime where it holds, and the finite-T asymmetry is shown to be real.

TEST(Sinkhorn, InvariantToColumnShiftsAtEveryT) {
  CpuBackend<double> bd(1);
  for (const Regime& rg : {kNarrow, kWide})
    for (int n : {2, 3, 4, 8})
      for (int T : {1, 5, kTmax}) {
        SCOPED_TRACE(std::string(rg.name) + " n=" + std::to_string(n) + " T=" + std::to_string(T));
        const int count = 20, nn = n * n;
        const std::vector<double> Z = random_vector(count * nn, 1500 + n, rg.scale);
        std::vector<double> shifted = Z;
        for (int p = 0; p < count; ++p) {
          const int j = p % n;
          const double c = p % 2 ? 3.7 : -5.2;
          for (int i = 0; i < n; ++i) shifted[p * nn + i * n + j] += c;
          for (int e = 0; e < nn; ++e) shifted[p * nn + e] += 1.25;  // and a global shift
        }
        const std::vector<double> H = sk_forward(bd, Z, n, T), Hs = sk_forward(bd, shifted, n, T);
        EXPECT_LE(testing::max_abs_diff(H, Hs), 1e-12);
      }
}

TEST(Sinkhorn, InvariantToRowShiftsOnlyWhenConverged) {
  CpuBackend<double> bd(1);
  const int count = 20, n = 4, nn = n * n;
  const std::vector<double> Z = random_vector(count * nn, 1600, kNarrow.scale);
  std::vector<double> shifted = Z;
  for (int p = 0; p < count; ++p)
    for (int j = 0; j < n; ++j) shifted[p * nn + (p % n) * n + j] += 2.0;
  auto diff = [&](int T) {
    const std::vector<double> H = sk_forward(bd, Z, n, T), Hs = sk_forward(bd, shifted, n, T);
    return testing::max_abs_diff(H, Hs);
  };
  EXPECT_LE(diff(300), 1e-10);  // converged: the doubly-stochastic limit ignores row shifts
  EXPECT_GE(diff(1), 1e-3);     // one iteration: not invariant (so row sums of ∂Z ≠ 0 there)
}

TEST(Sinkhorn, GradientColumnSumsVanishExactlyRowSumsWhenConverged) {
  CpuBackend<double> bd(1);
  for (const Regime& rg : {kNarrow, kWide})
    for (int n : {2, 3, 4, 8})
      for (int T : {1, 5, kTmax}) {
        SCOPED_TRACE(std::string(rg.name) + " n=" + std::to_string(n) + " T=" + std::to_string(T));
        const int count = 20, nn = n * n;
        const std::vector<double> Z = random_vector(count * nn, 1700 + n, rg.scale);
        const std::vector<double> G = random_vector(count * nn, 1800 + n);
        const std::vector<double> dZ = sk_backward(bd, Z, G, n, T);
        for (int p = 0; p < count; ++p) {
          const double* d = &dZ[p * nn];
          double scale = 1e-300;
          for (int e = 0; e < nn; ++e) scale = std::max(scale, std::fabs(d[e]));
          for (int j = 0; j < n; ++j) EXPECT_LE(std::fabs(col_sum(d, n, j)), 1e-12 * (1 + scale));
        }
      }
  // Row sums: zero only in the converged limit (narrow logits, many iterations), and
  // visibly non-zero after a single iteration.
  for (int n : {2, 3, 4, 8}) {
    SCOPED_TRACE("row sums n=" + std::to_string(n));
    const int count = 20, nn = n * n;
    const std::vector<double> Z = random_vector(count * nn, 1900 + n, kNarrow.scale);
    const std::vector<double> G = random_vector(count * nn, 1950 + n);
    const std::vector<double> dZ = sk_backward(bd, Z, G, n, 300), dZ1 = sk_backward(bd, Z, G, n, 1);
    double worst = 0, worst1 = 0;
    for (int p = 0; p < count; ++p)
      for (int i = 0; i < n; ++i) {
        worst = std::max(worst, std::fabs(row_sum(&dZ[p * nn], n, i)));
        worst1 = std::max(worst1, std::fabs(row_sum(&dZ1[p * nn], n, i)));
      }
    EXPECT_LE(worst, 1e-10 * (1 + max_abs(dZ)));
    EXPECT_GE(worst1, 1e-3 * max_abs(dZ1));
  }
}

// ---- (d) exact gradient ---------------------------------------------------------------

TEST(Sinkhorn, BackwardMatchesFiniteDifferencesInFloat64) {
  CpuBackend<double> bd(1);
  for (const Regime& rg : {kNarrow, kWide})
    for (int n : {1, 2, 3, 4, 8})
      for (int T : {1, 5, kTmax}) {
        SCOPED_TRACE(std::string(rg.name) + " n=" + std::to_string(n) + " T=" + std::to_string(T));
        const int count = 2, nn = n * n;
        std::vector<double> Z = random_vector(count * nn, 2000 + 10 * n + T, rg.scale);
        const std::vector<double> w = random_vector(count * nn, 2100 + n);
        auto loss = [&] {
          const std::vector<double> H = sk_forward(bd, Z, n, T);
          double s = 0;
          for (size_t e = 0; e < H.size(); ++e) s += w[e] * H[e];
          return s;
        };
        const std::vector<double> dZ = sk_backward(bd, Z, w, n, T);
        std::vector<double> fd(Z.size());
        for (size_t e = 0; e < Z.size(); ++e) fd[e] = testing::central_difference(Z, e, loss);
        // n = 1: H ≡ 1, the gradient is exactly 0 (FD round-off ~1e-14 against the floor).
        EXPECT_LE(testing::max_rel_error(dZ, fd, 1e-9), 1e-7);
      }
}

// ---- (e) float agrees with double ---------------------------------------------------

TEST(Sinkhorn, FloatMatchesDoubleForNarrowLogits) {
  CpuBackend<double> bd(1);
  CpuBackend<float> bf(1);
  for (int n : {2, 3, 4, 8}) {
    SCOPED_TRACE("n=" + std::to_string(n));
    const int count = 50;
    std::vector<double> Z = random_vector(count * n * n, 2200 + n, kNarrow.scale);
    for (auto& z : Z) z = static_cast<float>(z);  // identical inputs for both
    const std::vector<double> G = random_vector(count * n * n, 2300 + n);
    const std::vector<double> Hd = sk_forward(bd, Z, n, kTmax), Hf = sk_forward(bf, Z, n, kTmax);
    EXPECT_LE(testing::max_abs_diff(Hd, Hf), 1e-5);
    const std::vector<double> dd = sk_backward(bd, Z, G, n, kTmax),
                              df = sk_backward(bf, Z, G, n, kTmax);
    EXPECT_LE(testing::max_rel_error(df, dd), 1e-5);
  }
}

// ---- (f) the mHC coefficient path ---------------------------------------------------

// residuals.md init bias of sublayer k: pre −s + 2s·e_{k mod n} | post 0 | res 2s·I − s.
std::vector<double> init_bias(int n, int k, double s) {
  std::vector<double> b(2 * n + n * n, 0.0);
  for (int i = 0; i < n; ++i) b[i] = i == k % n ? s : -s;
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) b[2 * n + i * n + j] = i == j ? s : -s;
  return b;
}

TEST(MhcCoefficientPath, NonlinearityBackwardMatchesFiniteDifferences) {
  for (int n : {1, 2, 4})
    for (bool init_like : {false, true}) {
      SCOPED_TRACE("n=" + std::to_string(n) + (init_like ? " near-init" : " random"));
      const int D = 2 * n + n * n;
      std::vector<double> m = random_vector(D, 2400 + n);
      std::vector<double> alpha = {0.9, -0.7, 1.4}, bias = random_vector(D, 2500 + n);
      if (init_like) {  // the default init's gates and near-identity (wide, spread 6) bias
        alpha = {0.01, 0.01, 0.01};
        bias = init_bias(n, 1, 3.0);
        const std::vector<double> noise = random_vector(D, 2600 + n, 0.2);
        for (int d = 0; d < D; ++d) bias[d] += noise[d];
      }
      const std::vector<double> wpre = random_vector(n, 2700 + n),
                                wpost = random_vector(n, 2800 + n),
                                wres = random_vector(n * n, 2900 + n);
      std::vector<double> pre(n), post(n), res(n * n), Z(n * n), M(n * n), G(n * n),
          rc(2 * n * kTmax), g(D);
      auto loss = [&] {
        math::mhc_coeff_nonlin_forward(m.data(), alpha.data(), bias.data(), n, kTmax, pre.data(),
                                       post.data(), res.data(), Z.data(), M.data());
        double s = 0;
        for (int i = 0; i < n; ++i) s += wpre[i] * pre[i] + wpost[i] * post[i];
        for (int i = 0; i < n * n; ++i) s += wres[i] * res[i];
        return s;
      };
      std::vector<double> dalpha = {0.25, -0.5, 1.0};  // accumulates (+=)
      math::mhc_coeff_nonlin_backward(m.data(), alpha.data(), bias.data(), wpre.data(),
                                      wpost.data(), wres.data(), n, kTmax, g.data(), dalpha.data(),
                                      Z.data(), M.data(), G.data(), rc.data());
      dalpha[0] -= 0.25, dalpha[1] += 0.5, dalpha[2] -= 1.0;
      // ∂L/∂β = g;  ∂L/∂m_d = α_gate(d) g_d.
      std::vector<double> dm(D);
      for (int d = 0; d < D; ++d) dm[d] = alpha[math::mhc_gate_of_column(d, n)] * g[d];
      auto fd_of = [&](std::vector<double>& x) {
        std::vector<double> fd(x.size());
        for (size_t i = 0; i < x.size(); ++i) fd[i] = testing::central_difference(x, i, loss);
        return fd;
      };
      EXPECT_LE(testing::max_rel_error(g, fd_of(bias), 1e-9), 1e-6) << "dbias";
      EXPECT_LE(testing::max_rel_error(dm, fd_of(m), 1e-9), 1e-6) << "dm";
      EXPECT_LE(testing::max_rel_error(dalpha, fd_of(alpha), 1e-9), 1e-6) << "dalpha";
    }
}

TEST(MhcCoefficientPath, FullCpuOpMatchesFiniteDifferencesNearInit) {
  CpuBackend<double> be(1);
  const ConnShape s{2, 4, 6};
  const int N = s.N, n = s.n, nC = n * s.C, D = s.D();
  std::vector<double> X = random_vector(N * nC, 3000), phi = random_vector(nC * D, 3001, 0.2);
  std::vector<double> alpha = {0.5, 0.3, 0.8}, bias = init_bias(n, 2, 3.0);
  const std::vector<double> noise = random_vector(D, 3002, 0.3);
  for (int d = 0; d < D; ++d) bias[d] += noise[d];
  const std::vector<double> wpre = random_vector(N * n, 3003), wpost = random_vector(N * n, 3004),
                            wres = random_vector(N * n * n, 3005);
  testing::HostTensors tensors(be, DType::F64);
  auto make = [&](const std::vector<double>& v) { return tensors.make(v); };
  auto get = [&](Tensor t) { return tensors.get(t); };
  const Tensor tX = make(X);
  const MhcParams p{make(phi), make(alpha), make(bias)};
  const Coeffs c{make(wpre), make(wpost), make(wres)};  // overwritten by the forward
  const MhcSaved saved{make(std::vector<double>(N * D)), make(std::vector<double>(N))};
  auto dot = [](const std::vector<double>& a, const std::vector<double>& b) {
    return std::inner_product(a.begin(), a.end(), b.begin(), 0.0);
  };
  auto loss = [&] {
    be.upload(tX, X.data());
    be.upload(p.phi, phi.data());
    be.upload(p.alpha, alpha.data());
    be.upload(p.bias, bias.data());
    be.mhc_coeff_forward(c, saved, tX, p, s, kTmax, 1e-6f);
    return dot(get(c.pre), wpre) + dot(get(c.post), wpost) + dot(get(c.res), wres);
  };
  loss();
  const Tensor dX = make(std::vector<double>(X.size()));
  const MhcParams dp{make(std::vector<double>(phi.size())), make(std::vector<double>(3)),
                     make(std::vector<double>(D))};
  be.mhc_coeff_backward(dX, dp, Coeffs{make(wpre), make(wpost), make(wres)}, tX, p, saved, s,
                        kTmax);
  auto check = [&](std::vector<double>& x, const std::vector<double>& an, const char* what) {
    const size_t stride = std::max<size_t>(1, x.size() / 200);
    std::vector<double> fd, a;
    for (size_t i = 0; i < x.size(); i += stride) {
      fd.push_back(testing::central_difference(x, i, loss));
      a.push_back(an[i]);
    }
    EXPECT_LE(testing::max_rel_error(a, fd, 1e-9), 1e-6) << what;
  };
  check(X, get(dX), "dX");
  check(phi, get(dp.phi), "dphi");
  check(alpha, get(dp.alpha), "dalpha");
  check(bias, get(dp.bias), "dbias");
}

}  // namespace
}  // namespace mhc
