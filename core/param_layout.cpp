#include "param_layout.h"

#include <cmath>

#include "error.h"
#include "rng.h"

namespace mhc {
namespace {

constexpr int64_t kAlign = 64;  // elements; each group of tensors starts aligned

class LayoutBuilder {
 public:
  explicit LayoutBuilder(ParamLayout& out) : out_(out) {}

  // `contiguous` keeps the tensor right after the previous one (fused GEMM weights).
  int add(const std::string& name, std::vector<int64_t> shape, bool decay, InitKind init,
          double value, int sublayer = -1, bool contiguous = false) {
    ParamInfo p;
    p.name = name;
    p.shape = std::move(shape);
    p.numel = 1;
    for (auto d : p.shape) p.numel *= d;
    if (!contiguous) out_.total = (out_.total + kAlign - 1) / kAlign * kAlign;
    p.offset = out_.total;
    out_.total += p.numel;
    p.decay = decay;
    p.init = init;
    p.init_value = value;
    p.sublayer = sublayer;
    out_.params.push_back(std::move(p));
    return static_cast<int>(out_.params.size()) - 1;
  }

 private:
  ParamLayout& out_;
};

ConnParamIndex add_connection(LayoutBuilder& b, const std::string& prefix, int k,
                              const ModelShape& s, const Config& cfg) {
  ConnParamIndex c;
  const int64_t n = s.n, C = s.C;
  if (s.mode == ResidualMode::HC) {
    c.a = b.add(prefix + "a", {n}, false, InitKind::OneHot, 0, k);
    c.A = b.add(prefix + "A", {n, n}, false, InitKind::Identity, 0, k);
    c.b = b.add(prefix + "b", {n}, false, InitKind::Constant, 1.0, k);
    if (s.hc_dynamic) {
      c.norm_w = b.add(prefix + "norm.weight", {C}, false, InitKind::Constant, 1.0, k);
      c.w_a = b.add(prefix + "w_a", {C}, true, InitKind::Constant, 0.0, k);
      c.W_A = b.add(prefix + "W_A", {C, n}, true, InitKind::Constant, 0.0, k);
      c.w_b = b.add(prefix + "w_b", {C}, true, InitKind::Constant, 0.0, k);
      c.s_alpha = b.add(prefix + "s_alpha", {}, false, InitKind::Constant, cfg.residual.hc.gate_init, k);
      c.s_beta = b.add(prefix + "s_beta", {}, false, InitKind::Constant, cfg.residual.hc.gate_init, k);
    }
  } else if (s.mode == ResidualMode::MHC) {
    if (s.mhc.dynamic) {  // static mHC has the bias alone
      c.phi = b.add(prefix + "phi", {n * C, s.D()}, true, InitKind::Constant, 0.0, k);
      c.alpha = b.add(prefix + "alpha", {3}, false, InitKind::Constant, cfg.residual.mhc.alpha_init, k);
    }
    c.bias = b.add(prefix + "bias", {s.D()}, false, InitKind::MhcBias, cfg.residual.mhc.init_logit, k);
  }
  return c;
}

}  // namespace

ParamLayout ParamLayout::build(const ModelShape& s, const Config& cfg) {
  ParamLayout out;
  LayoutBuilder b(out);
  const int64_t C = s.C, H = s.hidden, Vp = s.Vp;
  const double std = cfg.model.init_std;
  const double out_std = std / std::sqrt(2.0 * s.L);
  out.embed = b.add("embed.weight", {Vp, C}, true, InitKind::Normal, std);
  for (int l = 0; l < s.L; ++l) {
    std::string p = "blocks." + std::to_string(l) + ".";
    SublayerParamIndex attn, mlp;
    attn.attention = true;
    attn.norm = b.add(p + "attn_norm.weight", {C}, false, InitKind::Constant, 1.0);
    attn.w_in = b.add(p + "attn.wq.weight", {C, C}, true, InitKind::Normal, std);
    b.add(p + "attn.wk.weight", {C, C}, true, InitKind::Normal, std, -1, true);
    b.add(p + "attn.wv.weight", {C, C}, true, InitKind::Normal, std, -1, true);
    attn.w_out = b.add(p + "attn.wo.weight", {C, C}, true, InitKind::Normal, out_std);
    mlp.attention = false;
    mlp.norm = b.add(p + "mlp_norm.weight", {C}, false, InitKind::Constant, 1.0);
    if (s.swiglu) {
      mlp.w_in = b.add(p + "mlp.w_gate.weight", {H, C}, true, InitKind::Normal, std);
      b.add(p + "mlp.w_up.weight", {H, C}, true, InitKind::Normal, std, -1, true);
    } else {
      mlp.w_in = b.add(p + "mlp.w_up.weight", {H, C}, true, InitKind::Normal, std);
    }
    mlp.w_out = b.add(p + "mlp.w_down.weight", {C, H}, true, InitKind::Normal, out_std);
    attn.conn = add_connection(b, p + "attn_conn.", 2 * l, s, cfg);
    mlp.conn = add_connection(b, p + "mlp_conn.", 2 * l + 1, s, cfg);
    out.sublayers.push_back(attn);
    out.sublayers.push_back(mlp);
  }
  if (s.learned_collapse) {
    out.collapse_phi = b.add("collapse.phi", {s.n * C, s.n}, true, InitKind::Constant, 0.0);
    out.collapse_alpha = b.add("collapse.alpha", {1}, false, InitKind::Constant,
                               cfg.residual.mhc.alpha_init);
    out.collapse_bias = b.add("collapse.bias", {s.n}, false, InitKind::Constant, 0.0);
  }
  out.final_norm = b.add("final_norm.weight", {C}, false, InitKind::Constant, 1.0);
  if (!s.tied) out.lm_head = b.add("lm_head.weight", {Vp, C}, true, InitKind::Normal, std);
  out.total = (out.total + kAlign - 1) / kAlign * kAlign;
  return out;
}

int ParamLayout::find(const std::string& name) const {
  for (size_t i = 0; i < params.size(); ++i)
    if (params[i].name == name) return static_cast<int>(i);
  return -1;
}

bool is_connection_param(const std::string& name) {
  return name.find("_conn.") != std::string::npos || name.rfind("collapse.", 0) == 0;
}

double birkhoff_identity_logit(int n, double s) {
  if (n < 2) return 0.0;  // one permutation: H_res = [1] whatever its logit
  // Sinkhorn init: H_ii = d = 1/(1 + (n−1)e^{−2s}). Birkhoff with logits (x, 0, …, 0):
  // H_ii = (e^x + (n−1)! − 1)/(e^x + n! − 1), which is d when e^x is as below.
  const double d = 1.0 / (1.0 + (n - 1) * std::exp(-2.0 * s));
  double fact = 1, fact1 = 1;
  for (int i = 2; i <= n; ++i) fact *= i;
  for (int i = 2; i <= n - 1; ++i) fact1 *= i;
  return std::log((d * (fact - 1) - (fact1 - 1)) / (1 - d));
}

int64_t ParamLayout::count_matching(bool connection) const {
  int64_t total_count = 0;
  for (const auto& p : params)
    if (is_connection_param(p.name) == connection) total_count += p.numel;
  return total_count;
}

std::vector<double> init_param(const ParamInfo& p, const ModelShape& s, uint64_t seed) {
  std::vector<double> v(static_cast<size_t>(p.numel), 0.0);
  const int n = s.n;
  switch (p.init) {
    case InitKind::Normal: {
      uint64_t key = hash_combine(seed, hash_string(p.name));
      for (int64_t i = 0; i < p.numel; ++i) v[i] = p.init_value * normal01(key, static_cast<uint64_t>(i));
      // Padded vocabulary rows of the embedding/head start (and, with no gradient, stay) 0.
      if (p.name == "embed.weight" || p.name == "lm_head.weight")
        for (int64_t i = static_cast<int64_t>(s.V) * s.C; i < p.numel; ++i) v[i] = 0;
      break;
    }
    case InitKind::Constant:
      for (auto& x : v) x = p.init_value;
      break;
    case InitKind::Identity:
      for (int i = 0; i < n; ++i) v[i * n + i] = 1.0;
      break;
    case InitKind::OneHot:
      v[p.sublayer % n] = 1.0;
      break;
    case InitKind::MhcBias: {
      const double sc = p.init_value;
      for (int i = 0; i < n; ++i) v[i] = (i == p.sublayer % n) ? sc : -sc;
      for (int i = 0; i < n; ++i) v[n + i] = 0.0;
      switch (s.mhc.projection) {
        case math::MhcProjection::Sinkhorn:
          for (int i = 0; i < n; ++i)
            for (int j = 0; j < n; ++j) v[2 * n + i * n + j] = (i == j) ? sc : -sc;
          break;
        case math::MhcProjection::Birkhoff:  // the identity is permutation 0 (lexicographic)
          v[2 * n] = birkhoff_identity_logit(n, sc);
          break;
        case math::MhcProjection::Kronecker:
          for (int l = 0; l < math::log2_exact(n); ++l) v[2 * n + l] = sc;
          break;
        case math::MhcProjection::Identity: break;
      }
      break;
    }
  }
  return v;
}

std::vector<int64_t> user_param_shape(const ParamInfo& p, const ModelShape& shape) {
  std::vector<int64_t> out = p.shape;
  if (p.name == "embed.weight" || p.name == "lm_head.weight") out[0] = shape.V;
  return out;
}

int64_t parameter_count(const ParamLayout& layout, const ModelShape& shape, bool connections_only) {
  int64_t total = 0;
  for (const auto& p : layout.params) {
    if (connections_only && !is_connection_param(p.name)) continue;
    int64_t n = 1;
    for (int64_t d : user_param_shape(p, shape)) n *= d;
    total += n;
  }
  return total;
}

}  // namespace mhc
