// The whole CUDA training step on the emulated backend (cuda/emu/) against the CPU
// backend: forward with selective recompute and the chunked classifier, backward, the
// global gradient norm, clipping and AdamW on fp32 master weights (with bf16 working
// copies in bf16), for every residual mode and the mHC variants (residuals.md "Variants");
// and a 20-step bf16 run whose losses must follow the CPU's. The backend sizes its own workspaces on the way.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "cpu/cpu_backend.h"
#include "config.h"
#include "cuda/cuda_backend.h"
#include "model.h"
#include "optimizer.h"
#include "test_support.h"

namespace mhc {
namespace {

struct Mode {
  std::string mode;
  int n;
  bool dynamic;
  std::string variant = "";        // a name for the config overrides ("" = none)
  std::vector<std::string> sets{};  // config overrides "key=value" (residuals.md "Variants")
};

void PrintTo(const Mode& m, std::ostream* os) {
  *os << m.mode << " n=" << m.n << (m.dynamic ? " dynamic" : "");
  for (const std::string& set : m.sets) *os << " " << set;
}

Config mode_config(const Mode& m) {
  Config cfg = testing::tiny_config(m.mode, m.n, m.dynamic);
  for (const std::string& set : m.sets) apply_config_override(cfg, set);
  validate_config(cfg);
  return cfg;
}

struct TrainRun {
  std::vector<double> losses, norms, params;
};

// `steps` optimizer steps of a tiny model from the same (perturbed) weights and data.
TrainRun train(Backend& be, const Config& cfg, int steps, double lr, double clip,
               bool same_batch = false) {
  const ModelShape shape = model_shape_from_config(cfg);
  const ParamLayout layout = ParamLayout::build(shape, cfg);
  const int B = 2, T = shape.T;
  ModelOptions options;
  options.recompute = true;
  options.classifier_chunk = 3;  // does not divide B·T
  Model model(be, shape, layout, B, options);
  {
    CpuBackend<float> cpu;
    Model init(cpu, shape, layout, B, options);
    init.init_weights(17);
    std::vector<double> w = init.get_params();
    const auto noise = testing::random_vector(w.size(), 5, 0.05);
    for (size_t i = 0; i < w.size(); ++i) w[i] += noise[i];
    model.set_params(w);
  }
  OptimizerSettings settings;
  settings.grad_clip = clip;
  AdamW opt(model, settings);
  TrainRun r;
  for (int s = 0; s < steps; ++s) {
    const uint64_t batch = same_batch ? 0 : static_cast<uint64_t>(s);
    const auto inputs = testing::random_tokens(B * T, shape.V, 100 + batch);
    const auto targets = testing::random_tokens(B * T, shape.V, 200 + batch);
    model.zero_grads();
    r.losses.push_back(model.forward(inputs.data(), targets.data(), B, T, 1.0f));
    model.backward();
    const double norm = opt.grad_norm();
    r.norms.push_back(norm);
    opt.step(lr, norm);
  }
  be.synchronize();
  r.params = model.get_params();
  return r;
}

double max_abs(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::fabs(x));
  return m;
}

class EmuTrainingStep : public ::testing::TestWithParam<std::tuple<Mode, DType>> {};

TEST_P(EmuTrainingStep, MatchesCpu) {
  const auto& [m, dtype] = GetParam();
  const bool bf16 = dtype == DType::BF16;
  const double tol = bf16 ? 1e-2 : 1e-4;
  const Config cfg = mode_config(m);
  // clip 0.3: below the first steps' gradient norms, so clipping scales every update.
  CpuBackend<float> cpu;
  const TrainRun ref = train(cpu, cfg, 3, 3e-3, 0.3);
  std::unique_ptr<Backend> gpu = make_cuda_backend(0, dtype);
  const TrainRun got = train(*gpu, cfg, 3, 3e-3, 0.3);
  for (size_t s = 0; s < ref.losses.size(); ++s) {
    EXPECT_NEAR(got.losses[s], ref.losses[s], tol * std::fabs(ref.losses[s])) << "step " << s;
    EXPECT_NEAR(got.norms[s], ref.norms[s], (bf16 ? 5e-2 : 1e-4) * ref.norms[s]) << "step " << s;
    EXPECT_GT(ref.norms[s], 0.3) << "clipping must be active";
  }
  const double scale = max_abs(ref.params);
  double err = 0;
  for (size_t i = 0; i < ref.params.size(); ++i)
    err = std::max(err, std::fabs(got.params[i] - ref.params[i]));
  EXPECT_LE(err / scale, tol) << gpu->name();
}

std::string step_name(const ::testing::TestParamInfo<EmuTrainingStep::ParamType>& info) {
  const Mode& m = std::get<0>(info.param);
  return m.mode + "_n" + std::to_string(m.n) + (m.dynamic ? "_dynamic" : "") +
         (m.variant.empty() ? "" : "_" + m.variant) +
         (std::get<1>(info.param) == DType::BF16 ? "_bf16" : "_f32");
}

INSTANTIATE_TEST_SUITE_P(
    AllModes, EmuTrainingStep,
    ::testing::Combine(::testing::Values(Mode{"baseline", 1, false}, Mode{"hc", 2, false},
                                         Mode{"hc", 4, true}, Mode{"mhc", 1, false},
                                         Mode{"mhc", 2, false}, Mode{"mhc", 4, false},
                                         // the mHC variants and the learned collapse
                                         Mode{"mhc", 4, false, "v4_learned",
                                              {"residual.mhc.numerics=deepseek_v4",
                                               "residual.collapse=learned"}},
                                         Mode{"mhc", 3, false, "birkhoff",
                                              {"residual.mhc.projection=birkhoff"}},
                                         Mode{"mhc", 4, false, "kronecker",
                                              {"residual.mhc.projection=kronecker"}},
                                         Mode{"mhc", 2, false, "identity",
                                              {"residual.mhc.projection=identity"}},
                                         Mode{"mhc", 4, false, "static",
                                              {"residual.mhc.dynamic=false"}}),
                       ::testing::Values(DType::F32, DType::BF16)),
    step_name);

// 20 bf16 steps on one batch (the loss must fall) on the emulated GPU follow the CPU's fp32 loss curve within 2%.
TEST(EmuTrainingRun, Bf16LossCurveFollowsCpu) {
  const Config cfg = testing::tiny_config("mhc", 4);
  CpuBackend<float> cpu;
  const TrainRun ref = train(cpu, cfg, 20, 1e-2, 1.0, true);
  std::unique_ptr<Backend> gpu = make_cuda_backend(0, DType::BF16);
  const TrainRun got = train(*gpu, cfg, 20, 1e-2, 1.0, true);
  for (size_t s = 0; s < ref.losses.size(); ++s)
    EXPECT_NEAR(got.losses[s], ref.losses[s], 0.02 * ref.losses[s]) << "step " << s;
  EXPECT_LT(ref.losses.back(), ref.losses.front());  // the run learns something
}

}  // namespace
}  // namespace mhc
