// Cross-field config checks and the derived model shape.
#include <cmath>

#include "config.h"
#include "error.h"
#include "model_shape.h"

namespace mhc {
namespace {

void require_positive(int64_t v, const char* key) {
  if (v <= 0) fail("config: {} must be positive, got {}", key, v);
}

void require_non_negative(double v, const char* key) {
  if (v < 0) fail("config: {} must be >= 0, got {}", key, v);
}

}  // namespace

ResidualMode parse_residual_mode(const std::string& s) {
  if (s == "baseline") return ResidualMode::Baseline;
  if (s == "hc") return ResidualMode::HC;
  if (s == "mhc") return ResidualMode::MHC;
  fail("residual.mode: unknown mode '{}'", s);
}

const char* residual_mode_name(ResidualMode m) {
  switch (m) {
    case ResidualMode::Baseline: return "baseline";
    case ResidualMode::HC: return "hc";
    case ResidualMode::MHC: return "mhc";
  }
  return "?";
}

math::MhcProjection parse_mhc_projection(const std::string& s) {
  if (s == "sinkhorn") return math::MhcProjection::Sinkhorn;
  if (s == "birkhoff") return math::MhcProjection::Birkhoff;
  if (s == "kronecker") return math::MhcProjection::Kronecker;
  if (s == "identity") return math::MhcProjection::Identity;
  fail("config: residual.mhc.projection={} is not one of: sinkhorn, birkhoff, kronecker, identity",
       s);
}

const char* mhc_projection_name(math::MhcProjection p) {
  switch (p) {
    case math::MhcProjection::Sinkhorn: return "sinkhorn";
    case math::MhcProjection::Birkhoff: return "birkhoff";
    case math::MhcProjection::Kronecker: return "kronecker";
    case math::MhcProjection::Identity: return "identity";
  }
  return "?";
}

std::string connection_label(const ModelShape& s) {
  if (s.mode == ResidualMode::Baseline) return "baseline";
  std::string out = std::string(residual_mode_name(s.mode)) + " n=" + std::to_string(s.n);
  if (s.mode == ResidualMode::HC && s.hc_dynamic) out += " dynamic";
  if (s.mode == ResidualMode::MHC) {
    if (s.mhc.projection != math::MhcProjection::Sinkhorn)
      out += std::string(" projection=") + mhc_projection_name(s.mhc.projection);
    if (s.mhc.v4) out += " numerics=deepseek_v4";
    if (!s.mhc.dynamic) out += " static";
  }
  if (s.learned_collapse) out += " collapse=learned";
  return out;
}

std::vector<std::pair<std::string, std::string>> connection_metadata(const Config& cfg) {
  const auto& r = cfg.residual;
  std::vector<std::pair<std::string, std::string>> out = {
      {"residual.mode", r.mode}, {"residual.n", std::to_string(r.n)},
      {"residual.collapse", r.collapse}};
  if (r.mode == "hc") out.push_back({"residual.hc.dynamic", r.hc.dynamic ? "true" : "false"});
  if (r.mode == "mhc") {
    out.push_back({"residual.mhc.projection", r.mhc.projection});
    out.push_back({"residual.mhc.numerics", r.mhc.numerics});
    out.push_back({"residual.mhc.dynamic", r.mhc.dynamic ? "true" : "false"});
    out.push_back({"residual.mhc.sinkhorn_iters", std::to_string(r.mhc.sinkhorn_iters)});
    out.push_back({"residual.mhc.eps", fmt::format("{}", r.mhc.eps)});
  }
  return out;
}

namespace {

// The variant keys (residuals.md "Variants"): each bad combination is one line naming the
// key, its value and what is allowed.
void validate_variants(const Config::Residual& r) {
  if (r.collapse == "learned" && r.mode == "baseline")
    fail("config: residual.collapse=learned needs residual.mode hc or mhc (baseline has one "
         "stream); allowed with residual.mode=baseline: residual.collapse=sum");
  if (r.mode != "mhc") return;
  const math::MhcProjection p = parse_mhc_projection(r.mhc.projection);
  if (p == math::MhcProjection::Birkhoff && r.n > 5)
    fail("config: residual.mhc.projection=birkhoff needs residual.n <= 5 (it has n! logits), got "
         "residual.n={}; allowed: residual.n in 1..5, or residual.mhc.projection: sinkhorn, "
         "kronecker, identity",
         r.n);
  if (p == math::MhcProjection::Kronecker && math::log2_exact(static_cast<int>(r.n)) < 0)
    fail("config: residual.mhc.projection=kronecker needs residual.n a power of two (1, 2, 4, 8, "
         "16), got residual.n={}; or use residual.mhc.projection: sinkhorn, birkhoff, identity",
         r.n);
  if (r.mhc.numerics == "deepseek_v4" && p != math::MhcProjection::Sinkhorn)
    fail("config: residual.mhc.numerics=deepseek_v4 is DeepSeek-V4's Sinkhorn; it needs "
         "residual.mhc.projection=sinkhorn, got residual.mhc.projection={}",
         r.mhc.projection);
}

}  // namespace

void validate_config(const Config& cfg) {
  const auto& m = cfg.model;
  require_positive(m.vocab_size, "model.vocab_size");
  if (m.vocab_size < 2 || m.vocab_size > 65536)
    fail("config: model.vocab_size={} must be in [2, 65536] (uint16 token shards)", m.vocab_size);
  require_positive(m.d_model, "model.d_model");
  require_positive(m.n_layer, "model.n_layer");
  require_positive(m.n_head, "model.n_head");
  require_positive(m.seq_len, "model.seq_len");
  if (m.d_model % m.n_head != 0)
    fail("config: model.d_model={} is not divisible by model.n_head={}", m.d_model, m.n_head);
  if ((m.d_model / m.n_head) % 2 != 0)
    fail("config: head size model.d_model/model.n_head={} must be even for RoPE",
         m.d_model / m.n_head);
  if (m.mlp_hidden < 0) fail("config: model.mlp_hidden must be >= 0, got {}", m.mlp_hidden);
  if (!(m.norm_eps > 0)) fail("config: model.norm_eps must be positive, got {}", m.norm_eps);
  if (!(m.rope_theta > 0)) fail("config: model.rope_theta must be positive, got {}", m.rope_theta);
  require_non_negative(m.init_std, "model.init_std");

  const auto& r = cfg.residual;
  require_positive(r.n, "residual.n");
  if (r.n > 16) fail("config: residual.n={} is larger than the supported 16", r.n);
  require_positive(r.mhc.sinkhorn_iters, "residual.mhc.sinkhorn_iters");
  if (!(r.mhc.eps > 0)) fail("config: residual.mhc.eps must be positive, got {}", r.mhc.eps);
  validate_variants(r);

  const auto& t = cfg.train;
  require_positive(t.micro_batch, "train.micro_batch");
  if (t.grad_accum < 0) fail("config: train.grad_accum must be >= 0, got {}", t.grad_accum);
  if (t.batch_size < 0) fail("config: train.batch_size must be >= 0, got {}", t.batch_size);
  if (t.steps < 1) fail("config: train.steps must be >= 1, got {}", t.steps);
  if (t.threads < 0) fail("config: train.threads must be >= 0, got {}", t.threads);
  require_non_negative(t.lr, "train.lr");
  require_non_negative(t.min_lr, "train.min_lr");
  if (t.warmup < 0) fail("config: train.warmup must be >= 0, got {}", t.warmup);
  if (t.warmup > t.steps)
    fail("config: train.warmup={} is more than train.steps={}; warmup must be in [0, steps]",
         t.warmup, t.steps);
  if (t.min_lr > t.lr)
    fail("config: train.min_lr={} is above train.lr={}; min_lr must be in [0, lr]", t.min_lr,
         t.lr);
  if (t.decay_frac < 0 || t.decay_frac > 1)
    fail("config: train.decay_frac must be in [0, 1], got {}", t.decay_frac);
  if (t.step_ratios.size() != t.step_factors.size())
    fail("config: train.step_ratios ({} values) and train.step_factors ({} values) must have "
         "the same length", t.step_ratios.size(), t.step_factors.size());
  for (size_t i = 0; i < t.step_ratios.size(); ++i)
    if (t.step_ratios[i] <= 0 || t.step_ratios[i] > 1 ||
        (i > 0 && t.step_ratios[i] <= t.step_ratios[i - 1]))
      fail("config: train.step_ratios must increase within (0, 1], got {}", t.step_ratios[i]);
  if (t.beta1 < 0 || t.beta1 >= 1) fail("config: train.beta1 must be in [0, 1), got {}", t.beta1);
  if (t.beta2 < 0 || t.beta2 >= 1) fail("config: train.beta2 must be in [0, 1), got {}", t.beta2);
  if (!(t.eps > 0)) fail("config: train.eps must be positive, got {}", t.eps);
  require_non_negative(t.weight_decay, "train.weight_decay");
  require_non_negative(t.grad_clip, "train.grad_clip");
  if (!(t.diverge_loss >= 0) || !std::isfinite(t.diverge_loss))
    fail("config: train.diverge_loss must be a finite number >= 0 (0 = 1.5·ln(vocab_size)), got {}",
         t.diverge_loss);
  if (t.eval_every < 0) fail("config: train.eval_every must be >= 0, got {}", t.eval_every);
  require_positive(t.eval_batches, "train.eval_batches");
  if (t.final_eval_batches < 0)
    fail("config: train.final_eval_batches must be >= 0 (0 = the whole validation set), got {}",
         t.final_eval_batches);
  require_positive(t.log_every, "train.log_every");
  if (t.checkpoint_every < 0)
    fail("config: train.checkpoint_every must be >= 0, got {}", t.checkpoint_every);
  if (t.keep_last < 0) fail("config: train.keep_last must be >= 0, got {}", t.keep_last);
  if (cfg.dist.zero != 0 && cfg.dist.zero != 1)
    fail("config: dist.zero must be 0 or 1, got {}", cfg.dist.zero);
  if (!(cfg.dist.timeout_s > 0)) fail("config: dist.timeout_s must be positive");
  if (!(cfg.dist.collective_timeout_s > 0))
    fail("config: dist.collective_timeout_s must be positive");
}

ModelShape model_shape_from_config(const Config& cfg) {
  validate_config(cfg);
  ModelShape s;
  s.V = static_cast<int>(cfg.model.vocab_size);
  s.Vp = (s.V + 63) / 64 * 64;
  s.C = static_cast<int>(cfg.model.d_model);
  s.L = static_cast<int>(cfg.model.n_layer);
  s.n_head = static_cast<int>(cfg.model.n_head);
  s.head_dim = s.C / s.n_head;
  s.T = static_cast<int>(cfg.model.seq_len);
  s.swiglu = cfg.model.mlp == "swiglu";
  if (cfg.model.mlp_hidden > 0) {
    s.hidden = static_cast<int>(cfg.model.mlp_hidden);
  } else {
    int raw = s.swiglu ? (8 * s.C) / 3 : 4 * s.C;
    s.hidden = (raw + 63) / 64 * 64;
  }
  s.tied = cfg.model.tie_embeddings;
  s.mode = parse_residual_mode(cfg.residual.mode);
  s.n = s.mode == ResidualMode::Baseline ? 1 : static_cast<int>(cfg.residual.n);
  s.hc_dynamic = cfg.residual.hc.dynamic;
  s.sinkhorn_iters = static_cast<int>(cfg.residual.mhc.sinkhorn_iters);
  s.norm_eps = static_cast<float>(cfg.model.norm_eps);
  s.rope_theta = static_cast<float>(cfg.model.rope_theta);
  s.mhc_eps = static_cast<float>(cfg.residual.mhc.eps);
  if (s.mode == ResidualMode::MHC) {
    s.mhc.projection = parse_mhc_projection(cfg.residual.mhc.projection);
    s.mhc.v4 = cfg.residual.mhc.numerics == "deepseek_v4";
    s.mhc.dynamic = cfg.residual.mhc.dynamic;
    s.mhc.eps = s.mhc_eps;
  }
  s.learned_collapse = s.mode != ResidualMode::Baseline && cfg.residual.collapse == "learned";
  return s;
}

}  // namespace mhc
