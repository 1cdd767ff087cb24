// Amax gain magnitude (residuals.md, "Diagnostics"; mHC paper §3.1): for each token the
// composite P = H_res^(2L−1) ⋯ H_res^(0); forward gain = max_i |Σ_j P_ij| (largest row
// sum), backward gain = max_j |Σ_i P_ij| (largest column sum). Reported as mean and max
// over tokens, for the composite and for the single worst layer.
#pragma once
#include <vector>

#include <nlohmann/json.hpp>

#include "model.h"

namespace mhc {

struct AmaxGain {
  double fwd_mean = 0, fwd_max = 0, bwd_mean = 0, bwd_max = 0;
  double layer_fwd_mean = 0, layer_fwd_max = 0, layer_bwd_mean = 0, layer_bwd_max = 0;
  int layer_fwd_worst = -1, layer_bwd_worst = -1;  // sublayer k with the largest max gain
};

// hres[k] holds tokens·n·n entries of H_res for sublayer k (row-major per token).
AmaxGain amax_gain(const std::vector<std::vector<double>>& hres, int tokens, int n);

// Gains of the model's last forward (hc/mhc).
AmaxGain amax_gain_of(Model& model);

// Everything an evaluation records besides the loss, from the model's last forward (a
// validation batch) and its current gradients (those of the last training step):
// {"amax": {...}} for hc/mhc, plus further per-layer statistics. The trainer writes the
// returned object into the eval line of metrics.jsonl as "diagnostics".
nlohmann::ordered_json eval_diagnostics(Model& model);

}  // namespace mhc
