// Evaluation diagnostics of the residual connections (residuals.md, "Diagnostics").
//
// Amax gain magnitude (mHC paper §3.1): for each token the composite
// P = H_res^(2L−1) ⋯ H_res^(0); forward gain = max_i |Σ_j P_ij| (largest row sum), backward
// gain = max_j |Σ_i P_ij| (largest column sum). Reported as mean and max over tokens, for
// the composite and for the single worst layer.
//
// Besides the gains, eval_diagnostics() records per-sublayer statistics of the connection
// coefficients, the gradient norm of each parameter group and the RMS of every residual
// state. Everything is computed from the model's last forward and current gradients; the
// coefficients are downloaded once, norms are reduced on the backend (no activation copy).
#pragma once
#include <map>
#include <string>
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

// Statistics of one sublayer's H_res over the tokens of a forward (h: tokens·n·n,
// row-major per token):
//   row_err     max over tokens and rows of |Σ_j H_ij − 1|     (0 for a doubly stochastic H)
//   col_err     max over tokens and columns of |Σ_i H_ij − 1|
//   diag_mass   mean over tokens of trace(H)/n                  (1 = identity mixing)
//   row_entropy mean over tokens and rows of the entropy (nats) of the row's distribution
//               p_j = |H_ij| / Σ_j |H_ij|; 0 = each stream keeps one source, log n = uniform
//               mixing (for HC, whose entries may be negative, the absolute values are used)
struct HresStats {
  double row_err = 0, col_err = 0, diag_mass = 0, row_entropy = 0;
};
HresStats hres_stats(const double* h, int tokens, int n);

// Minimum, mean and maximum of `count` values (all 0 for count 0).
struct ValueRange {
  double min = 0, mean = 0, max = 0;
};
ValueRange value_range(const double* v, int64_t count);

// The gradient-norm group of a parameter export name: "embed", "attention", "mlp",
// "norms", "connections" or "head" (architecture.md, "Exported weights").
std::string param_group(const std::string& name);

// Sum of squares of the gradient per param_group, over the part [begin, end) of the flat
// gradient buffer: all of it, or a ZeRO-1 rank's shard (the only part reduced across
// ranks there; the caller adds the ranks' results). Every group of the model is a key.
std::map<std::string, double> grad_sum_squares_by_group(Model& model, int64_t begin, int64_t end);

// Everything an evaluation records besides the loss, from the model's last forward (a
// validation batch) and its current gradients (those of the last training step; zeros
// before the first step). grad_ss: the gradient's sums of squares by group when the
// caller has them (reduced across ZeRO-1 shards); null: computed from the whole local
// gradient. The trainer writes the returned object into the eval line of
// metrics.jsonl as "diagnostics":
//   "connection": connection_label() of the model (which variant these numbers are of)
//   "amax":      AmaxGain fields (hc/mhc)
//   "h_res":     {"row_err": [2L], "col_err": [2L], "diag_mass": [2L], "row_entropy": [2L]}
//                (hc/mhc; per sublayer k, HresStats)
//   "h_pre", "h_post": {"min": [2L], "mean": [2L], "max": [2L]} over tokens and streams
//                (hc/mhc)
//   "collapse":  {"min": [n], "mean": [n], "max": [n]}: the learned collapse weight of
//                each stream over the tokens (residual.collapse=learned only)
//   "grad_norm": {"embed", "attention", "mlp", "norms", "connections", "head", "total"}:
//                L2 norm of the gradient of each group ("connections" and "head" are
//                present only when the model has such parameters)
//   "act_rms":   [2L+1] RMS of the residual state X_k entering sublayer k (k = 2L: the
//                state after the last sublayer, before the collapse and final norm)
// Per-stream range over the last forward's tokens of the learned collapse weights w [N, n]
// (residual.collapse=learned): {"min": [n], "mean": [n], "max": [n]}.
nlohmann::ordered_json collapse_weight_ranges(Model& model);

nlohmann::ordered_json eval_diagnostics(Model& model,
                                        const std::map<std::string, double>* grad_ss = nullptr);

}  // namespace mhc
