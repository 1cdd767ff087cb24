// Evaluation diagnostics (core/diagnostics.h): the Amax gain on constructed matrices, the
// H_res statistics on known matrices, parameter groups, and the eval_diagnostics() object
// of real hc / mhc / baseline models (residuals.md, "Diagnostics").
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "cpu/cpu_backend.h"
#include "diagnostics.h"
#include "model.h"
#include "test_support.h"

namespace mhc {
namespace {

// ---- Amax gain --------------------------------------------------------------------------

TEST(DiagnosticsAmax, IdentityLayersGiveGainOne) {
  const int n = 4, tokens = 3, layers = 6;
  std::vector<double> I(static_cast<size_t>(tokens) * n * n, 0.0);
  for (int t = 0; t < tokens; ++t)
    for (int i = 0; i < n; ++i) I[(t * n + i) * n + i] = 1.0;
  const AmaxGain g = amax_gain(std::vector<std::vector<double>>(layers, I), tokens, n);
  EXPECT_DOUBLE_EQ(g.fwd_mean, 1.0);
  EXPECT_DOUBLE_EQ(g.fwd_max, 1.0);
  EXPECT_DOUBLE_EQ(g.bwd_mean, 1.0);
  EXPECT_DOUBLE_EQ(g.bwd_max, 1.0);
  EXPECT_DOUBLE_EQ(g.layer_fwd_max, 1.0);
  EXPECT_DOUBLE_EQ(g.layer_bwd_max, 1.0);
}

// P = H_{K-1} ⋯ H_0 per token, multiplied out here from the definition; the gains are its
// largest |row sum| (forward) and |column sum| (backward).
TEST(DiagnosticsAmax, KnownProductGivesItsRowAndColumnSums) {
  const int n = 3, tokens = 4, layers = 3;
  std::vector<std::vector<double>> H(layers);
  for (int k = 0; k < layers; ++k) H[k] = testing::random_vector(static_cast<size_t>(tokens) * n * n, 100 + k);
  double fwd_sum = 0, fwd_max = 0, bwd_sum = 0, bwd_max = 0;
  for (int t = 0; t < tokens; ++t) {
    std::vector<double> P(n * n, 0.0);
    for (int i = 0; i < n; ++i) P[i * n + i] = 1;
    for (int k = 0; k < layers; ++k) {
      const double* h = H[k].data() + t * n * n;
      std::vector<double> Q(n * n, 0.0);
      for (int i = 0; i < n; ++i)
        for (int j = 0; j < n; ++j)
          for (int m = 0; m < n; ++m) Q[i * n + j] += h[i * n + m] * P[m * n + j];
      P = Q;
    }
    double fwd = 0, bwd = 0;
    for (int i = 0; i < n; ++i) {
      double row = 0, col = 0;
      for (int j = 0; j < n; ++j) row += P[i * n + j], col += P[j * n + i];
      fwd = std::max(fwd, std::fabs(row));
      bwd = std::max(bwd, std::fabs(col));
    }
    fwd_sum += fwd, bwd_sum += bwd;
    fwd_max = std::max(fwd_max, fwd), bwd_max = std::max(bwd_max, bwd);
  }
  const AmaxGain g = amax_gain(H, tokens, n);
  EXPECT_NEAR(g.fwd_max, fwd_max, 1e-12 * fwd_max);
  EXPECT_NEAR(g.bwd_max, bwd_max, 1e-12 * bwd_max);
  EXPECT_NEAR(g.fwd_mean, fwd_sum / tokens, 1e-12 * fwd_max);
  EXPECT_NEAR(g.bwd_mean, bwd_sum / tokens, 1e-12 * bwd_max);
}

// ---- H_res statistics -------------------------------------------------------------------

TEST(DiagnosticsHres, PermutationIsDoublyStochasticWithZeroEntropy) {
  // token 0: identity; token 1: the cycle 0→1→2→0 (no fixed point).
  const std::vector<double> h = {1, 0, 0, 0, 1, 0, 0, 0, 1, /**/ 0, 1, 0, 0, 0, 1, 1, 0, 0};
  const HresStats s = hres_stats(h.data(), 2, 3);
  EXPECT_DOUBLE_EQ(s.row_err, 0.0);
  EXPECT_DOUBLE_EQ(s.col_err, 0.0);
  EXPECT_DOUBLE_EQ(s.diag_mass, 0.5);  // (3/3 + 0/3) / 2
  EXPECT_DOUBLE_EQ(s.row_entropy, 0.0);
}

TEST(DiagnosticsHres, UniformMixingHasEntropyLogN) {
  const int n = 4;
  const std::vector<double> h(n * n, 1.0 / n);
  const HresStats s = hres_stats(h.data(), 1, n);
  EXPECT_NEAR(s.row_err, 0.0, 1e-15);
  EXPECT_NEAR(s.col_err, 0.0, 1e-15);
  EXPECT_DOUBLE_EQ(s.diag_mass, 1.0 / n);
  EXPECT_NEAR(s.row_entropy, std::log(n), 1e-12);
}

TEST(DiagnosticsHres, KnownMatrix) {
  // rows sum to 1 and 0.8, columns to 0.7 and 1.1; trace 1.1.
  const std::vector<double> h = {0.5, 0.5, 0.2, 0.6};
  const HresStats s = hres_stats(h.data(), 1, 2);
  EXPECT_NEAR(s.row_err, 0.2, 1e-15);
  EXPECT_NEAR(s.col_err, 0.3, 1e-15);
  EXPECT_NEAR(s.diag_mass, 0.55, 1e-15);
  const double h1 = -(0.25 * std::log(0.25) + 0.75 * std::log(0.75));
  EXPECT_NEAR(s.row_entropy, (std::log(2.0) + h1) / 2, 1e-15);
}

TEST(DiagnosticsHres, NegativeEntriesUseAbsoluteValues) {
  // HC's H_res = Aᵀ may be negative: row (2, -1) sums to 1 with p = (2/3, 1/3).
  const std::vector<double> h = {2, -1, 0, 1};
  const HresStats s = hres_stats(h.data(), 1, 2);
  EXPECT_NEAR(s.row_err, 0.0, 1e-15);
  EXPECT_NEAR(s.col_err, 1.0, 1e-15);  // column sums 2 and 0
  const double e = -(2.0 / 3 * std::log(2.0 / 3) + 1.0 / 3 * std::log(1.0 / 3));
  EXPECT_NEAR(s.row_entropy, e / 2, 1e-15);
}

TEST(DiagnosticsRange, MinMeanMax) {
  const std::vector<double> v = {0.5, -1, 3, 1.5};
  const ValueRange r = value_range(v.data(), 4);
  EXPECT_DOUBLE_EQ(r.min, -1);
  EXPECT_DOUBLE_EQ(r.mean, 1);
  EXPECT_DOUBLE_EQ(r.max, 3);
  const ValueRange empty = value_range(nullptr, 0);
  EXPECT_DOUBLE_EQ(empty.max, 0);
}

TEST(DiagnosticsGroups, EveryExportNameHasItsGroup) {
  EXPECT_EQ(param_group("embed.weight"), "embed");
  EXPECT_EQ(param_group("lm_head.weight"), "head");
  EXPECT_EQ(param_group("final_norm.weight"), "norms");
  EXPECT_EQ(param_group("blocks.3.attn_norm.weight"), "norms");
  EXPECT_EQ(param_group("blocks.0.attn.wq.weight"), "attention");
  EXPECT_EQ(param_group("blocks.0.mlp.w_down.weight"), "mlp");
  EXPECT_EQ(param_group("blocks.1.attn_conn.phi"), "connections");
  EXPECT_EQ(param_group("blocks.1.mlp_conn.norm.weight"), "connections");
  EXPECT_THROW(param_group("mystery"), MhcError);
}

// ---- eval_diagnostics() on real models --------------------------------------------------

struct Built {
  explicit Built(const Config& cfg)
      : shape(model_shape_from_config(cfg)), layout(ParamLayout::build(shape, cfg)), backend(1),
        model(backend, shape, layout, 2) {
    model.init_weights(7);
    // Far from init, so H_res is not near the identity and the gradients are not tiny.
    std::vector<double> w = model.get_params();
    const std::vector<double> noise = testing::random_vector(w.size(), 43, 0.5);
    for (size_t i = 0; i < w.size(); ++i) w[i] += noise[i];
    model.set_params(w);
  }
  ModelShape shape;
  ParamLayout layout;
  CpuBackend<float> backend;
  Model model;
};

// One training step's gradients, then a forward on other tokens (as an eval does).
nlohmann::ordered_json diagnostics_after_a_step(Built& b, std::vector<int32_t>* eval_inputs) {
  const int B = 2, T = b.shape.T;
  const auto in = testing::random_tokens(B * T, b.shape.V, 1), tgt = testing::random_tokens(B * T, b.shape.V, 2);
  b.model.zero_grads();
  b.model.forward(in.data(), tgt.data(), B, T, 1.0f);
  b.model.backward();
  *eval_inputs = testing::random_tokens(B * T, b.shape.V, 3);
  const auto tgt2 = testing::random_tokens(B * T, b.shape.V, 4);
  b.model.forward(eval_inputs->data(), tgt2.data(), B, T, 0.0f);
  return eval_diagnostics(b.model);
}

void expect_common_parts(Built& b, const nlohmann::ordered_json& d, const std::vector<int32_t>& inputs) {
  const int K = b.shape.sublayers();
  // Gradient norms: the groups' squares add up to the whole gradient's.
  ASSERT_TRUE(d.contains("grad_norm"));
  const auto& g = d["grad_norm"];
  const std::vector<double> grads = b.model.get_grads();
  double ss = 0;
  for (double v : grads) ss += v * v;
  EXPECT_NEAR(g["total"].get<double>(), std::sqrt(ss), 1e-5 * std::sqrt(ss));
  double groups = 0;
  for (const char* name : {"embed", "attention", "mlp", "norms"}) {
    ASSERT_TRUE(g.contains(name)) << name;
    EXPECT_GT(g[name].get<double>(), 0.0) << name;
    groups += std::pow(g[name].get<double>(), 2);
  }
  if (g.contains("connections")) groups += std::pow(g["connections"].get<double>(), 2);
  if (g.contains("head")) groups += std::pow(g["head"].get<double>(), 2);
  EXPECT_NEAR(groups, ss, 1e-5 * ss);
  EXPECT_FALSE(g.contains("head"));  // tied embeddings (tiny_config default)

  // act_rms[0]: every stream starts as the token embedding, so it is the RMS of the
  // embedding rows of the inputs.
  ASSERT_TRUE(d.contains("act_rms"));
  ASSERT_EQ(d["act_rms"].size(), static_cast<size_t>(K + 1));
  const std::vector<double> w = b.model.get_params();
  const auto& emb = b.layout.params[b.layout.embed];
  double e2 = 0;
  for (int32_t tok : inputs)
    for (int c = 0; c < b.shape.C; ++c) e2 += std::pow(w[emb.offset + static_cast<size_t>(tok) * b.shape.C + c], 2);
  const double rms0 = std::sqrt(e2 / (static_cast<double>(inputs.size()) * b.shape.C));
  EXPECT_NEAR(d["act_rms"][0].get<double>(), rms0, 1e-5 * rms0);
  for (const auto& v : d["act_rms"]) EXPECT_GT(v.get<double>(), 0.0);
}

void expect_connection_parts(const Built& b, const nlohmann::ordered_json& d) {
  const size_t K = static_cast<size_t>(b.shape.sublayers());
  ASSERT_TRUE(d.contains("amax"));
  for (const char* key : {"fwd_mean", "fwd_max", "bwd_mean", "bwd_max", "layer_fwd_max", "layer_bwd_max"})
    EXPECT_TRUE(d["amax"].contains(key)) << key;
  for (const char* group : {"h_res", "h_pre", "h_post"}) ASSERT_TRUE(d.contains(group)) << group;
  for (const char* key : {"row_err", "col_err", "diag_mass", "row_entropy"})
    EXPECT_EQ(d["h_res"][key].size(), K) << key;
  for (const char* group : {"h_pre", "h_post"})
    for (const char* key : {"min", "mean", "max"}) {
      ASSERT_EQ(d[group][key].size(), K);
      for (size_t k = 0; k < K; ++k) {
        EXPECT_LE(d[group]["min"][k].get<double>(), d[group]["mean"][k].get<double>());
        EXPECT_LE(d[group]["mean"][k].get<double>(), d[group]["max"][k].get<double>());
      }
    }
  for (size_t k = 0; k < K; ++k) {
    const double e = d["h_res"]["row_entropy"][k].get<double>();
    EXPECT_GE(e, 0.0);
    EXPECT_LE(e, std::log(b.shape.n) + 1e-9);
  }
}

TEST(EvalDiagnostics, MhcRunHasEveryPartAndForwardGainOne) {
  Built b(testing::tiny_config("mhc", 4));
  std::vector<int32_t> inputs;
  const auto d = diagnostics_after_a_step(b, &inputs);
  expect_common_parts(b, d, inputs);
  expect_connection_parts(b, d);
  EXPECT_TRUE(d["grad_norm"].contains("connections"));
  EXPECT_FALSE(d.contains("collapse"));  // the plain sum has no weights to report
  // Rows of every H_res sum to 1, so the composite's do: forward gain 1 (fp32).
  EXPECT_NEAR(d["amax"]["fwd_mean"].get<double>(), 1.0, 1e-5);
  EXPECT_NEAR(d["amax"]["fwd_max"].get<double>(), 1.0, 1e-5);
  EXPECT_NEAR(d["amax"]["layer_fwd_max"].get<double>(), 1.0, 1e-5);
  for (size_t k = 0; k < d["h_res"]["row_err"].size(); ++k) {
    EXPECT_LT(d["h_res"]["row_err"][k].get<double>(), 1e-5);
    EXPECT_GT(d["h_pre"]["min"][k].get<double>(), 0.0);   // σ(·) ∈ (0, 1)
    EXPECT_LT(d["h_pre"]["max"][k].get<double>(), 1.0);
    EXPECT_GT(d["h_post"]["min"][k].get<double>(), 0.0);  // 2σ(·) ∈ (0, 2)
    EXPECT_LT(d["h_post"]["max"][k].get<double>(), 2.0);
  }
}

TEST(EvalDiagnostics, HcRunHasEveryPart) {
  Built b(testing::tiny_config("hc", 3, /*dynamic=*/true));
  std::vector<int32_t> inputs;
  const auto d = diagnostics_after_a_step(b, &inputs);
  expect_common_parts(b, d, inputs);
  expect_connection_parts(b, d);
  EXPECT_TRUE(d["grad_norm"].contains("connections"));
  EXPECT_GT(std::fabs(d["amax"]["fwd_max"].get<double>() - 1.0), 1e-3);  // not pinned to 1
}

// The learned collapse's weights, recomputed here from the final residual state and the
// collapse parameters (w_i = σ(α (v·φ_i)/r + β_i) + ε, r = sqrt(mean(v²) + ε)), per stream.
TEST(EvalDiagnostics, LearnedCollapseWeightsPerStream) {
  Config cfg = testing::tiny_config("mhc", 3);
  cfg.residual.collapse = "learned";
  Built b(cfg);
  std::vector<int32_t> inputs;
  const auto d = diagnostics_after_a_step(b, &inputs);
  ASSERT_TRUE(d.contains("collapse"));
  const int N = b.model.last_tokens(), n = b.shape.n, nC = n * b.shape.C;
  const std::vector<double> w = b.model.get_params();
  const double* phi = w.data() + b.layout.params[b.layout.collapse_phi].offset;
  const double alpha = w[b.layout.params[b.layout.collapse_alpha].offset];
  const double* bias = w.data() + b.layout.params[b.layout.collapse_bias].offset;
  std::vector<double> X(static_cast<size_t>(N) * nC);
  b.backend.download(b.model.residual_state(b.shape.sublayers()), X.data());
  const double eps = b.shape.mhc_eps;
  for (int i = 0; i < n; ++i) {
    double lo = 1e300, hi = -1e300, sum = 0;
    for (int t = 0; t < N; ++t) {
      const double* v = X.data() + static_cast<size_t>(t) * nC;
      double ss = 0, dot = 0;
      for (int j = 0; j < nC; ++j) {
        ss += v[j] * v[j];
        dot += v[j] * phi[static_cast<size_t>(j) * n + i];
      }
      const double r = std::sqrt(ss / nC + eps);
      const double wi = 1 / (1 + std::exp(-(alpha * dot / r + bias[i]))) + eps;
      lo = std::min(lo, wi), hi = std::max(hi, wi), sum += wi;
    }
    EXPECT_NEAR(d["collapse"]["min"][i].get<double>(), lo, 1e-5) << "stream " << i;
    EXPECT_NEAR(d["collapse"]["mean"][i].get<double>(), sum / N, 1e-5) << "stream " << i;
    EXPECT_NEAR(d["collapse"]["max"][i].get<double>(), hi, 1e-5) << "stream " << i;
    EXPECT_LT(lo, hi) << "stream " << i << ": the weights should depend on the token";
  }
}

TEST(EvalDiagnostics, BaselineHasNormsAndActivationsOnly) {
  Built b(testing::tiny_config("baseline", 1));
  std::vector<int32_t> inputs;
  const auto d = diagnostics_after_a_step(b, &inputs);
  expect_common_parts(b, d, inputs);
  EXPECT_FALSE(d.contains("amax"));
  EXPECT_FALSE(d.contains("h_res"));
  EXPECT_FALSE(d["grad_norm"].contains("connections"));
}

}  // namespace
}  // namespace mhc
