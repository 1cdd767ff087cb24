// The CPU's SIMD lanes for the per-token mHC math (core/cpu/lanes.h): the backend's
// blocked coefficient ops give, token for token, the bits of the scalar per-token math of
// core/mhc_math.h (forward outputs and each token's dL/dH̃ as seen in ∂β), including the
// partial last block, for the paper's mHC and every dynamic variant; ∂α (whose per-lane
// partial sums are added in a different order) agrees to rounding.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "cpu/cpu_backend.h"
#include "host_tensors.h"
#include "mhc_math.h"
#include "test_support.h"

namespace mhc {
namespace {

using math::MhcProjection;
using math::MhcVariant;
using testing::random_vector;

struct LaneCase {
  std::string name;
  bool paper_op;  // mhc_coeff_* (the paper's op) instead of mhc_variant_coeff_*
  MhcVariant variant;
  int N, n;
};

std::string lane_case_name(const ::testing::TestParamInfo<LaneCase>& info) {
  return info.param.name;
}

class ConnLanes : public ::testing::TestWithParam<LaneCase> {};

TEST_P(ConnLanes, BlockedOpsEqualTheScalarMathTokenForToken) {
  const LaneCase& lc = GetParam();
  CpuBackend<float> be(2);
  ConnShape s{lc.N, lc.n, 8};
  s.mhc = lc.variant;
  const int N = s.N, n = s.n, D = s.D(), nC = n * s.C, iters = 20;
  const float eps = 1e-6f;
  testing::HostTensors tensors(be, DType::F32);
  auto make = [&](const std::vector<double>& v) { return tensors.make(v); };
  auto get = [&](Tensor t) {  // the fp32 values themselves, for exact comparisons
    const std::vector<double> v = tensors.get(t);
    return std::vector<float>(v.begin(), v.end());
  };
  const Tensor X = make(random_vector(N * nC, 11));
  const std::vector<double> alpha_d{0.7, -0.4, 1.2}, bias_d = random_vector(D, 13);
  const MhcParams p{make(random_vector(nC * D, 12, 0.3)), make(alpha_d), make(bias_d)};
  const Coeffs c{make(std::vector<double>(N * n)), make(std::vector<double>(N * n)),
                 make(std::vector<double>(N * n * n))};
  const MhcSaved sv{make(std::vector<double>(N * D)), make(std::vector<double>(N))};
  if (lc.paper_op) be.mhc_coeff_forward(c, sv, X, p, s, iters, eps);
  else be.mhc_variant_coeff_forward(c, sv, X, p, s, iters, eps);

  const std::vector<float> m = get(sv.m), pre = get(c.pre), post = get(c.post), res = get(c.res);
  const std::vector<float> alpha(alpha_d.begin(), alpha_d.end()), bias(bias_d.begin(), bias_d.end());
  std::vector<float> work(static_cast<size_t>(math::mhc_variant_work(lc.variant, n, iters) + 4 * n * n));
  for (int t = 0; t < N; ++t) {
    std::vector<float> pre1(n), post1(n), res1(n * n);
    math::mhc_variant_forward<float>(m.data() + t * D, alpha.data(), bias.data(), n, iters,
                                     lc.variant, pre1.data(), post1.data(), res1.data(),
                                     work.data());
    for (int i = 0; i < n; ++i) {
      ASSERT_EQ(pre[t * n + i], pre1[i]) << "token " << t;
      ASSERT_EQ(post[t * n + i], post1[i]) << "token " << t;
    }
    for (int k = 0; k < n * n; ++k) ASSERT_EQ(res[t * n * n + k], res1[k]) << "token " << t;
  }

  // Backward: ∂β = Σ_t g_t in token order, the same adds as the scalar code on one thread.
  const Coeffs dc{make(random_vector(N * n, 21)), make(random_vector(N * n, 22)),
                  make(random_vector(N * n * n, 23))};
  const MhcParams dp{make(std::vector<double>(nC * D)), make(std::vector<double>(3)),
                     make(std::vector<double>(D))};
  const Tensor dX = make(std::vector<double>(N * nC));
  if (lc.paper_op) be.mhc_coeff_backward(dX, dp, dc, X, p, sv, s, iters);
  else be.mhc_variant_coeff_backward(dX, dp, dc, X, p, sv, s, iters);
  const std::vector<float> dpre = get(dc.pre), dpost = get(dc.post), dres = get(dc.res);
  std::vector<float> dbias(D, 0.f), g(D);
  std::vector<double> dalpha(3, 0.0);
  for (int t = 0; t < N; ++t) {
    std::vector<float> dalpha_t(3, 0.f);
    math::mhc_variant_backward<float>(m.data() + t * D, alpha.data(), bias.data(),
                                      dpre.data() + t * n, dpost.data() + t * n,
                                      dres.data() + t * n * n, n, iters, lc.variant, g.data(),
                                      dalpha_t.data(), work.data());
    for (int d = 0; d < D; ++d) dbias[d] += g[d];
    for (int i = 0; i < 3; ++i) dalpha[i] += dalpha_t[i];
  }
  EXPECT_EQ(get(dp.bias), dbias);
  const std::vector<float> got_dalpha = get(dp.alpha);
  for (int i = 0; i < 3; ++i)
    EXPECT_NEAR(got_dalpha[i], dalpha[i], 1e-4 * (1 + std::fabs(dalpha[i]))) << "dalpha " << i;
}

MhcVariant variant(MhcProjection projection, bool v4 = false) {
  MhcVariant v;
  v.projection = projection;
  v.v4 = v4;
  return v;
}

// 8 lanes: 5 tokens are one partial block, 8 one full block, 21 two full and a partial.
INSTANTIATE_TEST_SUITE_P(
    AllOps, ConnLanes,
    ::testing::Values(LaneCase{"paper_n4_N21", true, MhcVariant{}, 21, 4},
                      LaneCase{"paper_n2_N5", true, MhcVariant{}, 5, 2},
                      LaneCase{"paper_n3_N8", true, MhcVariant{}, 8, 3},
                      LaneCase{"generic_sinkhorn_n4_N21", false, MhcVariant{}, 21, 4},
                      LaneCase{"v4_n4_N21", false, variant(MhcProjection::Sinkhorn, true), 21, 4},
                      LaneCase{"birkhoff_n3_N13", false, variant(MhcProjection::Birkhoff), 13, 3},
                      LaneCase{"kronecker_n4_N13", false, variant(MhcProjection::Kronecker), 13, 4},
                      LaneCase{"identity_n4_N13", false, variant(MhcProjection::Identity), 13, 4}),
    lane_case_name);

}  // namespace
}  // namespace mhc
