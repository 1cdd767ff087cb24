#include "diagnostics.h"

#include <algorithm>
#include <cmath>

#include "error.h"
#include "metrics.h"

namespace mhc {
namespace {

struct Gains {
  double fwd, bwd;
};

Gains gains_of(const double* P, int n) {
  Gains g{0, 0};
  for (int i = 0; i < n; ++i) {
    double row = 0, col = 0;
    for (int j = 0; j < n; ++j) {
      row += P[i * n + j];
      col += P[j * n + i];
    }
    g.fwd = std::max(g.fwd, std::fabs(row));
    g.bwd = std::max(g.bwd, std::fabs(col));
  }
  return g;
}

}  // namespace

AmaxGain amax_gain(const std::vector<std::vector<double>>& hres, int tokens, int n) {
  AmaxGain out;
  if (hres.empty() || tokens == 0) return out;
  const int layers = static_cast<int>(hres.size());
  const int nn = n * n;
  std::vector<double> P(nn), Q(nn);
  std::vector<double> layer_fwd_sum(layers, 0), layer_fwd_max(layers, 0);
  std::vector<double> layer_bwd_sum(layers, 0), layer_bwd_max(layers, 0);
  for (int t = 0; t < tokens; ++t) {
    std::fill(P.begin(), P.end(), 0.0);
    for (int i = 0; i < n; ++i) P[i * n + i] = 1.0;
    for (int k = 0; k < layers; ++k) {
      MHC_CHECK(static_cast<int64_t>(hres[k].size()) >= static_cast<int64_t>(tokens) * nn);
      const double* H = hres[k].data() + static_cast<int64_t>(t) * nn;
      const Gains g = gains_of(H, n);
      layer_fwd_sum[k] += g.fwd;
      layer_bwd_sum[k] += g.bwd;
      layer_fwd_max[k] = std::max(layer_fwd_max[k], g.fwd);
      layer_bwd_max[k] = std::max(layer_bwd_max[k], g.bwd);
      // P ← H P (later layers multiply on the left).
      for (int i = 0; i < n; ++i)
        for (int j = 0; j < n; ++j) {
          double s = 0;
          for (int m = 0; m < n; ++m) s += H[i * n + m] * P[m * n + j];
          Q[i * n + j] = s;
        }
      std::swap(P, Q);
    }
    const Gains g = gains_of(P.data(), n);
    out.fwd_mean += g.fwd;
    out.bwd_mean += g.bwd;
    out.fwd_max = std::max(out.fwd_max, g.fwd);
    out.bwd_max = std::max(out.bwd_max, g.bwd);
  }
  out.fwd_mean /= tokens;
  out.bwd_mean /= tokens;
  for (int k = 0; k < layers; ++k) {
    if (out.layer_fwd_worst < 0 || layer_fwd_max[k] > out.layer_fwd_max) {
      out.layer_fwd_worst = k;
      out.layer_fwd_max = layer_fwd_max[k];
      out.layer_fwd_mean = layer_fwd_sum[k] / tokens;
    }
    if (out.layer_bwd_worst < 0 || layer_bwd_max[k] > out.layer_bwd_max) {
      out.layer_bwd_worst = k;
      out.layer_bwd_max = layer_bwd_max[k];
      out.layer_bwd_mean = layer_bwd_sum[k] / tokens;
    }
  }
  return out;
}

AmaxGain amax_gain_of(Model& model) {
  const ModelShape& s = model.shape();
  if (s.mode == ResidualMode::Baseline) return {};
  const int N = model.last_tokens();
  std::vector<std::vector<double>> hres(s.sublayers());
  for (int k = 0; k < s.sublayers(); ++k) {
    Tensor res = model.coeffs(k).res;
    hres[k].resize(static_cast<size_t>(res.numel));
    model.backend().download(res, hres[k].data());
  }
  return amax_gain(hres, N, s.n);
}

}  // namespace mhc

namespace mhc {

nlohmann::ordered_json eval_diagnostics(Model& model) {
  nlohmann::ordered_json js = nlohmann::ordered_json::object();
  if (model.shape().mode != ResidualMode::Baseline) js["amax"] = amax_json(amax_gain_of(model));
  return js;
}

}  // namespace mhc
