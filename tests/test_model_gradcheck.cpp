// Whole-model gradient check in float64: the analytic backward against central finite
// differences of the mean loss, for every parameter tensor, in every residual mode and
// for n in {1, 2, 4} (residuals.md invariant 4).
#include <gtest/gtest.h>

#include <cmath>

#include "cpu/cpu_backend.h"
#include "model.h"
#include "model_gradcheck_support.h"
#include "test_support.h"

namespace mhc {
namespace {

struct GradCase {
  std::string mode;
  int n;
  bool dynamic;
  std::string mlp;
  // ModelOptions: recompute with this segment length (0: off), classifier chunk (0: off).
  int recompute_segment = 0;
  int classifier_chunk = 0;
};

std::string case_name(const ::testing::TestParamInfo<GradCase>& info) {
  return info.param.mode + "_n" + std::to_string(info.param.n) +
         (info.param.dynamic ? "_dynamic" : "") + "_" + info.param.mlp +
         (info.param.recompute_segment ? "_recompute" + std::to_string(info.param.recompute_segment)
                                       : "") +
         (info.param.classifier_chunk ? "_chunk" + std::to_string(info.param.classifier_chunk) : "");
}

ModelOptions options_of(const GradCase& gc) {
  ModelOptions o;
  o.recompute = gc.recompute_segment > 0;
  o.recompute_segment = gc.recompute_segment;
  o.classifier_chunk = gc.classifier_chunk;
  return o;
}

class ModelGradCheck : public ::testing::TestWithParam<GradCase> {};

TEST_P(ModelGradCheck, EveryParameterTensorMatchesFiniteDifferences) {
  const GradCase& gc = GetParam();
  Config cfg = testing::tiny_config(gc.mode, gc.n, gc.dynamic);
  cfg.model.mlp = gc.mlp;
  cfg.model.tie_embeddings = gc.mlp == "swiglu";  // cover both head variants
  // RMSNorm is nearly scale-invariant, which makes gradients that reach a norm only
  // through a scale (HC with n = 1) ~1e-8: below what finite differences resolve. A
  // large epsilon makes those paths visible without changing the code under test.
  cfg.model.norm_eps = 0.5;
  if (gc.recompute_segment) cfg.model.n_layer = 3;  // 6 sublayers: a partial last segment
  testing::expect_model_gradients_match_fd(cfg, options_of(gc));
}

INSTANTIATE_TEST_SUITE_P(
    AllModes, ModelGradCheck,
    ::testing::Values(GradCase{"baseline", 1, false, "swiglu"}, GradCase{"baseline", 1, false, "gelu"},
                      GradCase{"hc", 1, false, "swiglu"}, GradCase{"hc", 2, false, "swiglu"},
                      GradCase{"hc", 4, false, "gelu"}, GradCase{"hc", 1, true, "swiglu"},
                      GradCase{"hc", 2, true, "swiglu"}, GradCase{"hc", 4, true, "gelu"},
                      GradCase{"mhc", 1, false, "swiglu"}, GradCase{"mhc", 2, false, "swiglu"},
                      GradCase{"mhc", 4, false, "gelu"},
                      // train.recompute (segments of 4 and 2 sublayers) and the chunked
                      // classifier (3 of the 10 tokens at a time)
                      GradCase{"mhc", 4, false, "swiglu", 4, 0},
                      GradCase{"mhc", 2, false, "gelu", 2, 3},
                      GradCase{"hc", 4, true, "swiglu", 4, 3},
                      GradCase{"baseline", 1, false, "swiglu", 4, 3}),
    case_name);

// Recompute replays the forward's own kernels: gradients, losses and every residual state
// are bit-identical to storing everything; the chunked classifier only changes the order
// of the head's gradient sums.
TEST(ModelOptions, RecomputeIsBitIdenticalAndChunkingMatches) {
  for (const std::string mode : {"mhc", "hc"}) {
    Config cfg = testing::tiny_config(mode, 4, mode == "hc");
    cfg.model.n_layer = 4;  // 8 sublayers: default segment round(sqrt(8)) = 3
    const ModelShape shape = model_shape_from_config(cfg);
    const ParamLayout layout = ParamLayout::build(shape, cfg);
    CpuBackend<double> backend(1);
    const int B = 2, T = shape.T;
    ModelOptions plain, recompute, chunked;
    recompute.recompute = true;
    chunked.recompute = true;
    chunked.classifier_chunk = 4;
    Model m0(backend, shape, layout, B, plain), m1(backend, shape, layout, B, recompute),
        m2(backend, shape, layout, B, chunked);
    m0.init_weights(5);
    std::vector<double> w = m0.get_params();
    const std::vector<double> noise = testing::random_vector(w.size(), 17, 0.3);
    for (size_t i = 0; i < w.size(); ++i) w[i] += noise[i];
    const auto inputs = testing::random_tokens(B * T, shape.V, 3);
    const auto targets = testing::random_tokens(B * T, shape.V, 4);
    double loss[3];
    std::vector<double> grads[3];
    Model* models[3] = {&m0, &m1, &m2};
    for (int i = 0; i < 3; ++i) {
      models[i]->set_params(w);
      models[i]->zero_grads();
      loss[i] = models[i]->forward(inputs.data(), targets.data(), B, T, 1.0f);
      models[i]->backward();
      grads[i] = models[i]->get_grads();
    }
    EXPECT_EQ(loss[1], loss[0]) << mode;
    EXPECT_EQ(grads[1], grads[0]) << mode;
    EXPECT_NEAR(loss[2], loss[0], 1e-12 * std::fabs(loss[0])) << mode;
    EXPECT_LE(testing::max_rel_error(grads[2], grads[0]), 1e-10) << mode;
    // Residual states and sublayer inputs (recomputed on demand) after a forward.
    m0.forward(inputs.data(), targets.data(), B, T, 0.0f);
    m1.forward(inputs.data(), targets.data(), B, T, 0.0f);
    for (int k = 0; k <= shape.sublayers(); ++k) {
      std::vector<double> a(static_cast<size_t>(m0.residual_state(k).numel)), b(a.size());
      backend.download(m0.residual_state(k), a.data());
      backend.download(m1.residual_state(k), b.data());
      EXPECT_EQ(a, b) << mode << " X_" << k;
      if (k == shape.sublayers()) continue;
      std::vector<double> u0(static_cast<size_t>(m0.sublayer_input(k).numel)), u1(u0.size());
      backend.download(m0.sublayer_input(k), u0.data());
      backend.download(m1.sublayer_input(k), u1.data());
      EXPECT_EQ(u0, u1) << mode << " u_" << k;
    }
    // Fewer bytes: the recomputing model stores a fraction of the residual states.
    EXPECT_LT(Model::planned_bytes(backend, shape, layout, B, recompute),
              Model::planned_bytes(backend, shape, layout, B, plain));
  }
}

}  // namespace
}  // namespace mhc
