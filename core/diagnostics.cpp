#include "diagnostics.h"

#include <algorithm>
#include <cmath>
#include <map>

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

std::vector<double> download_all(Backend& be, Tensor t) {
  std::vector<double> v(static_cast<size_t>(t.numel));
  if (t.numel > 0) be.download(t, v.data());
  return v;
}

// H_pre, H_post and H_res of every sublayer of the last forward, downloaded once.
struct HostCoeffs {
  std::vector<std::vector<double>> pre, post, res;
};

HostCoeffs download_coeffs(Model& model, bool with_pre_post) {
  const int K = model.shape().sublayers();
  HostCoeffs h;
  h.res.resize(K);
  if (with_pre_post) h.pre.resize(K), h.post.resize(K);
  for (int k = 0; k < K; ++k) {
    const Coeffs c = model.coeffs(k);
    h.res[k] = download_all(model.backend(), c.res);
    if (with_pre_post) {
      h.pre[k] = download_all(model.backend(), c.pre);
      h.post[k] = download_all(model.backend(), c.post);
    }
  }
  return h;
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
  return amax_gain(download_coeffs(model, false).res, model.last_tokens(), s.n);
}

HresStats hres_stats(const double* h, int tokens, int n) {
  HresStats st;
  if (tokens <= 0 || n <= 0) return st;
  const int64_t nn = static_cast<int64_t>(n) * n;
  double diag_sum = 0, entropy_sum = 0;
  for (int t = 0; t < tokens; ++t) {
    const double* H = h + t * nn;
    for (int i = 0; i < n; ++i) {
      double row = 0, col = 0, abs_row = 0;
      for (int j = 0; j < n; ++j) {
        row += H[i * n + j];
        col += H[j * n + i];
        abs_row += std::fabs(H[i * n + j]);
      }
      st.row_err = std::max(st.row_err, std::fabs(row - 1));
      st.col_err = std::max(st.col_err, std::fabs(col - 1));
      diag_sum += H[i * n + i];
      if (abs_row > 0)
        for (int j = 0; j < n; ++j) {
          const double p = std::fabs(H[i * n + j]) / abs_row;
          if (p > 0) entropy_sum -= p * std::log(p);
        }
    }
  }
  st.diag_mass = diag_sum / (static_cast<double>(tokens) * n);
  st.row_entropy = entropy_sum / (static_cast<double>(tokens) * n);
  return st;
}

ValueRange value_range(const double* v, int64_t count) {
  ValueRange r;
  if (count <= 0) return r;
  r.min = r.max = v[0];
  double sum = 0;
  for (int64_t i = 0; i < count; ++i) {
    r.min = std::min(r.min, v[i]);
    r.max = std::max(r.max, v[i]);
    sum += v[i];
  }
  r.mean = sum / static_cast<double>(count);
  return r;
}

std::string param_group(const std::string& name) {
  if (name == "embed.weight") return "embed";
  if (name == "lm_head.weight") return "head";
  if (name.find("_conn.") != std::string::npos) return "connections";
  if (name.rfind("collapse.", 0) == 0) return "connections";  // residual.collapse=learned
  if (name.find(".attn.") != std::string::npos) return "attention";
  if (name.find(".mlp.") != std::string::npos) return "mlp";
  const std::string suffix = "norm.weight";
  if (name.size() >= suffix.size() &&
      name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0)
    return "norms";
  fail("diagnostics: parameter '{}' belongs to no gradient-norm group", name);
}

std::map<std::string, double> grad_sum_squares_by_group(Model& model, int64_t begin, int64_t end) {
  std::map<std::string, double> ss;
  for (const auto& p : model.layout().params) {
    double& group = ss[param_group(p.name)];
    const int64_t from = std::max(begin, p.offset), to = std::min(end, p.offset + p.numel);
    if (from < to) group += model.backend().sum_squares(model.grads().slice(from, to - from));
  }
  return ss;
}

nlohmann::ordered_json collapse_weight_ranges(Model& model) {
  const int N = model.last_tokens(), n = model.shape().n;
  const std::vector<double> w = download_all(model.backend(), model.collapse_weights());
  nlohmann::ordered_json js;
  for (const char* key : {"min", "mean", "max"}) js[key] = nlohmann::ordered_json::array();
  std::vector<double> stream(static_cast<size_t>(N));
  for (int i = 0; i < n && !w.empty(); ++i) {
    for (int t = 0; t < N; ++t) stream[t] = w[static_cast<size_t>(t) * n + i];
    const ValueRange r = value_range(stream.data(), N);
    js["min"].push_back(r.min);
    js["mean"].push_back(r.mean);
    js["max"].push_back(r.max);
  }
  return js;
}

nlohmann::ordered_json eval_diagnostics(Model& model, const std::map<std::string, double>* grad_ss) {
  const ModelShape& s = model.shape();
  Backend& be = model.backend();
  const int N = model.last_tokens(), n = s.n, K = s.sublayers();
  nlohmann::ordered_json js = nlohmann::ordered_json::object();

  js["connection"] = connection_label(s);
  if (s.mode != ResidualMode::Baseline && N > 0) {
    const HostCoeffs h = download_coeffs(model, true);
    js["amax"] = amax_json(amax_gain(h.res, N, n));
    nlohmann::ordered_json res, pre, post;
    for (const char* key : {"row_err", "col_err", "diag_mass", "row_entropy"})
      res[key] = nlohmann::ordered_json::array();
    for (auto* range : {&pre, &post})
      for (const char* key : {"min", "mean", "max"}) (*range)[key] = nlohmann::ordered_json::array();
    for (int k = 0; k < K; ++k) {
      const HresStats st = hres_stats(h.res[k].data(), N, n);
      res["row_err"].push_back(st.row_err);
      res["col_err"].push_back(st.col_err);
      res["diag_mass"].push_back(st.diag_mass);
      res["row_entropy"].push_back(st.row_entropy);
      const int64_t count = static_cast<int64_t>(N) * n;
      for (auto [range, values] : {std::pair{&pre, &h.pre[k]}, std::pair{&post, &h.post[k]}}) {
        const ValueRange r = value_range(values->data(), count);
        (*range)["min"].push_back(r.min);
        (*range)["mean"].push_back(r.mean);
        (*range)["max"].push_back(r.max);
      }
    }
    js["h_res"] = std::move(res);
    js["h_pre"] = std::move(pre);
    js["h_post"] = std::move(post);
  }
  if (s.learned_collapse && N > 0) js["collapse"] = collapse_weight_ranges(model);

  // Gradient norms per group (sums of squares reduced on the backend, per tensor).
  const std::map<std::string, double> ss =
      grad_ss ? *grad_ss : grad_sum_squares_by_group(model, 0, model.grads().numel);
  nlohmann::ordered_json grads = nlohmann::ordered_json::object();
  double total = 0;
  for (const char* group : {"embed", "attention", "mlp", "norms", "connections", "head"}) {
    const auto it = ss.find(group);
    if (it == ss.end()) continue;
    grads[group] = std::sqrt(it->second);
    total += it->second;
  }
  grads["total"] = std::sqrt(total);
  js["grad_norm"] = std::move(grads);

  nlohmann::ordered_json act = nlohmann::ordered_json::array();
  if (N > 0)
    for (int k = 0; k <= K; ++k) {
      const Tensor x = model.residual_state(k);
      act.push_back(std::sqrt(be.sum_squares(x) / static_cast<double>(std::max<int64_t>(1, x.numel))));
    }
  js["act_rms"] = std::move(act);
  return js;
}

}  // namespace mhc
