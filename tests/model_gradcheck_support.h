// The whole-model float64 gradient check shared by the model and variant tests: every
// parameter tensor's analytic gradient against central differences of the loss.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

#include "cpu/cpu_backend.h"
#include "model.h"
#include "test_support.h"

namespace mhc::testing {

// Builds the model of cfg in float64 (B = 2), moves its weights away from the symmetric
// init (so every path, connections included, is active), and checks each parameter
// tensor: every entry of small tensors, an evenly spread subset of large ones, relative
// error ≤ 1e-6.
inline void expect_model_gradients_match_fd(const Config& cfg, const ModelOptions& options) {
  const ModelShape shape = model_shape_from_config(cfg);
  const ParamLayout layout = ParamLayout::build(shape, cfg);
  CpuBackend<double> backend(1);
  const int B = 2, T = shape.T;
  Model model(backend, shape, layout, B, options);
  model.init_weights(7);
  std::vector<double> w = model.get_params();
  const std::vector<double> noise = random_vector(w.size(), 99, 0.3);
  for (size_t i = 0; i < w.size(); ++i) w[i] += noise[i];
  model.set_params(w);
  const auto inputs = random_tokens(B * T, shape.V, 1);
  const auto targets = random_tokens(B * T, shape.V, 2);

  model.zero_grads();
  model.forward(inputs.data(), targets.data(), B, T, 1.0f);
  model.backward();
  const std::vector<double> analytic = model.get_grads();

  auto loss = [&]() {
    model.set_params(w);
    return model.forward(inputs.data(), targets.data(), B, T, 0.0f);
  };
  for (const auto& p : layout.params) {
    const int64_t stride = std::max<int64_t>(1, p.numel / 24);
    std::vector<double> fd, an;
    for (int64_t i = 0; i < p.numel; i += stride) {
      if ((p.name == "embed.weight" || p.name == "lm_head.weight") && (i / shape.C) >= shape.V)
        continue;  // padded vocabulary rows
      fd.push_back(central_difference(w, static_cast<size_t>(p.offset + i), loss));
      an.push_back(analytic[static_cast<size_t>(p.offset + i)]);
    }
    EXPECT_LE(max_rel_error(an, fd, 1e-9), 1e-6)
        << p.name << " analytic[0]=" << an[0] << " fd[0]=" << fd[0];
  }
}

}  // namespace mhc::testing
