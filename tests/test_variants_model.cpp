// The mHC variants in the whole model (residuals.md "Variants"): float64 gradient checks of
// every parameter in every variant for n in {1, 2, 4} where the variant allows it, the
// step-0 loss of each variant against the baseline's (invariant 5), the parameter layout
// and export names, and the one-line refusals of bad variant configs.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "cpu/cpu_backend.h"
#include "model.h"
#include "model_gradcheck_support.h"
#include "test_support.h"

namespace mhc {
namespace {

struct VariantModelCase {
  std::string name;
  std::string mode;
  int n;
  std::vector<std::string> sets;  // config overrides "key=value"
  int recompute_segment = 0;
};

Config variant_config(const VariantModelCase& c) {
  Config cfg = testing::tiny_config(c.mode, c.n);
  for (const auto& s : c.sets) apply_config_override(cfg, s);
  return cfg;
}

class VariantModelGradCheck : public ::testing::TestWithParam<VariantModelCase> {};

TEST_P(VariantModelGradCheck, EveryParameterTensorMatchesFiniteDifferences) {
  const VariantModelCase& vc = GetParam();
  Config cfg = variant_config(vc);
  cfg.model.norm_eps = 0.5;  // as in test_model_gradcheck: makes scale-only paths visible
  ModelOptions options;
  options.recompute = vc.recompute_segment > 0;
  options.recompute_segment = vc.recompute_segment;
  testing::expect_model_gradients_match_fd(cfg, options);
}

const std::vector<std::string> kV4 = {"residual.mhc.numerics=deepseek_v4", "residual.mhc.eps=1e-2"};
const std::vector<std::string> kBirkhoff = {"residual.mhc.projection=birkhoff"};
const std::vector<std::string> kKronecker = {"residual.mhc.projection=kronecker"};
const std::vector<std::string> kIdentity = {"residual.mhc.projection=identity"};
const std::vector<std::string> kStatic = {"residual.mhc.dynamic=false"};
const std::vector<std::string> kLearned = {"residual.collapse=learned", "residual.mhc.eps=1e-2"};

std::vector<VariantModelCase> grad_cases() {
  std::vector<VariantModelCase> out;
  const std::pair<const char*, std::vector<std::string>> variants[] = {
      {"v4", kV4}, {"birkhoff", kBirkhoff}, {"kronecker", kKronecker},
      {"identity", kIdentity}, {"static", kStatic}, {"learned", kLearned}};
  for (const auto& [name, sets] : variants)
    for (int n : {1, 2, 4}) out.push_back({std::string(name) + "_n" + std::to_string(n), "mhc", n, sets});
  out.push_back({"hc_learned_n2", "hc", 2, kLearned});
  out.push_back({"hc_dynamic_learned_n4", "hc", 4, {"residual.hc.dynamic=true", "residual.collapse=learned"}});
  // The ablation's DeepSeek-V4 configuration, and a static mHC-lite, with recompute.
  out.push_back({"v4_learned_n4_recompute2", "mhc", 4,
                 {"residual.mhc.numerics=deepseek_v4", "residual.mhc.eps=1e-2",
                  "residual.collapse=learned"}, 2});
  out.push_back({"static_birkhoff_n2_recompute2", "mhc", 2,
                 {"residual.mhc.dynamic=false", "residual.mhc.projection=birkhoff"}, 2});
  return out;
}

INSTANTIATE_TEST_SUITE_P(AllVariants, VariantModelGradCheck, ::testing::ValuesIn(grad_cases()),
                         [](const auto& info) { return info.param.name; });

// ---- invariant 5 for every variant ---------------------------------------------------

double init_loss(const Config& cfg) {
  const ModelShape shape = model_shape_from_config(cfg);
  const ParamLayout layout = ParamLayout::build(shape, cfg);
  CpuBackend<double> backend(1);
  Model model(backend, shape, layout, 2);
  model.init_weights(5);
  const auto inputs = testing::random_tokens(2 * shape.T, shape.V, 21);
  const auto targets = testing::random_tokens(2 * shape.T, shape.V, 22);
  return model.forward(inputs.data(), targets.data(), 2, shape.T, 0.f);
}

// Every variant's init keeps the n streams identical (rows of H_res sum to 1, H_pre a
// positive multiple, equal collapse weights), so with a tiny RMSNorm ε (and V4's ε) the
// step-0 loss is the baseline's.
TEST(VariantInit, EveryVariantReproducesTheBaselineLoss) {
  const double tiny = 1e-12;
  auto config = [&](const std::string& mode, int n, std::vector<std::string> sets) {
    Config cfg = testing::tiny_config(mode, n);
    cfg.model.norm_eps = tiny;
    cfg.model.init_std = 0.3;  // O(1) logits: a real difference would show
    cfg.residual.mhc.eps = tiny;
    for (const auto& s : sets) apply_config_override(cfg, s);
    return cfg;
  };
  const double base = init_loss(config("baseline", 1, {}));
  ASSERT_GT(std::fabs(base - std::log(23.0)), 1e-2) << "init too close to uniform to compare";
  const std::vector<std::vector<std::string>> variants = {
      {"residual.mhc.numerics=deepseek_v4"}, kBirkhoff, kKronecker, kIdentity, kStatic,
      {"residual.collapse=learned"},
      {"residual.mhc.numerics=deepseek_v4", "residual.collapse=learned"}};
  for (const auto& sets : variants)
    for (int n : {1, 2, 4}) {
      std::string what = "n=" + std::to_string(n);
      for (const auto& s : sets) what += " " + s;
      SCOPED_TRACE(what);
      EXPECT_LE(std::fabs(init_loss(config("mhc", n, sets)) - base), 1e-9 * base);
    }
  for (int n : {2, 4}) {
    SCOPED_TRACE("hc learned collapse n=" + std::to_string(n));
    EXPECT_LE(std::fabs(init_loss(config("hc", n, {"residual.collapse=learned"})) - base),
              1e-9 * base);
  }
}

// ---- layout and export names -----------------------------------------------------------

TEST(VariantLayout, ExportNamesAndShapes) {
  auto layout_of = [](const std::string& mode, int n, const std::vector<std::string>& sets) {
    Config cfg = testing::tiny_config(mode, n);
    for (const auto& s : sets) apply_config_override(cfg, s);
    return ParamLayout::build(model_shape_from_config(cfg), cfg);
  };
  const int C = 8;
  struct Expect {
    std::vector<std::string> sets;
    int n, R;
  };
  for (const Expect& e : {Expect{{}, 4, 16}, Expect{kBirkhoff, 4, 24}, Expect{kBirkhoff, 3, 6},
                          Expect{kKronecker, 4, 2}, Expect{kKronecker, 8, 3},
                          Expect{kIdentity, 4, 0}}) {
    const ParamLayout l = layout_of("mhc", e.n, e.sets);
    const int D = 2 * e.n + e.R;
    const ParamInfo& phi = l.params.at(l.find("blocks.1.mlp_conn.phi"));
    EXPECT_EQ(phi.shape, (std::vector<int64_t>{e.n * C, D}));
    EXPECT_EQ(l.params.at(l.find("blocks.0.attn_conn.alpha")).shape, std::vector<int64_t>{3});
    EXPECT_EQ(l.params.at(l.find("blocks.0.attn_conn.bias")).shape, std::vector<int64_t>{D});
  }
  const ParamLayout st = layout_of("mhc", 4, kStatic);
  EXPECT_EQ(st.find("blocks.0.attn_conn.phi"), -1);
  EXPECT_EQ(st.find("blocks.0.attn_conn.alpha"), -1);
  EXPECT_NE(st.find("blocks.0.attn_conn.bias"), -1);
  const ParamLayout lc = layout_of("mhc", 4, {"residual.collapse=learned"});
  EXPECT_EQ(lc.params.at(lc.find("collapse.phi")).shape, (std::vector<int64_t>{4 * C, 4}));
  EXPECT_EQ(lc.params.at(lc.find("collapse.alpha")).shape, std::vector<int64_t>{1});
  EXPECT_EQ(lc.params.at(lc.find("collapse.bias")).shape, std::vector<int64_t>{4});
  EXPECT_EQ(layout_of("mhc", 4, {}).find("collapse.phi"), -1);
}

// ---- bad input: one line naming the key and what is allowed ---------------------------

TEST(VariantConfig, BadCombinationsAreOneClearLine) {
  auto check = [](const std::string& mode, int n, const std::vector<std::string>& sets,
                  const std::vector<std::string>& parts) {
    Config cfg = testing::tiny_config(mode, n);
    for (const auto& s : sets) apply_config_override(cfg, s);
    const std::string msg = testing::expect_mhc_error([&] { validate_config(cfg); }, parts);
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  };
  check("mhc", 6, kBirkhoff, {"residual.mhc.projection=birkhoff", "residual.n=6", "1..5",
                              "sinkhorn", "kronecker", "identity"});
  check("mhc", 3, kKronecker, {"residual.mhc.projection=kronecker", "residual.n=3",
                               "power of two", "sinkhorn", "birkhoff"});
  check("baseline", 1, {"residual.collapse=learned"},
        {"residual.collapse=learned", "residual.mode", "hc or mhc", "residual.collapse=sum"});
  check("mhc", 4, {"residual.mhc.numerics=deepseek_v4", "residual.mhc.projection=kronecker"},
        {"residual.mhc.numerics=deepseek_v4", "residual.mhc.projection=sinkhorn"});
  // Unknown values are refused by the schema, naming the allowed ones.
  Config cfg = default_config();
  testing::expect_mhc_error([&] { apply_config_override(cfg, "residual.mhc.projection=sinkorn"); },
                            {"residual.mhc.projection", "sinkhorn", "birkhoff", "kronecker", "identity"});
  testing::expect_mhc_error([&] { apply_config_override(cfg, "residual.collapse=mean"); },
                            {"residual.collapse", "sum", "learned"});
  // The allowed edges pass.
  for (int n : {1, 2, 3, 4, 5}) {
    Config ok = testing::tiny_config("mhc", n);
    apply_config_override(ok, "residual.mhc.projection=birkhoff");
    EXPECT_NO_THROW(validate_config(ok));
  }
  // Variant keys are ignored outside mode mhc (as the other residual.mhc keys are).
  Config hc = testing::tiny_config("hc", 3);
  apply_config_override(hc, "residual.mhc.projection=kronecker");
  EXPECT_NO_THROW(validate_config(hc));
}

}  // namespace
}  // namespace mhc
