// mhc inspect: parameter table of a checkpoint and, for hc/mhc, its connection matrices
// averaged over a probe batch, their per-token statistics (diagnostics.h), the composite
// H_res product and the Amax gains. --json writes them for plotting (scripts/report draws
// heatmaps from it): {checkpoint, mode, connection (the variant in words), n, probe, n_layer, sublayers: [{name, k, H_pre,
// H_post, H_res (n·n row-major), H_res_stats, H_pre_range, H_post_range}], composite_H_res,
// amax, collapse (learned collapse only: per-stream min/mean/max of its weights)}.
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdio>

#include "commands.h"
#include "data/sampler.h"
#include "data/shards.h"
#include "diagnostics.h"
#include "error.h"
#include "evaluate.h"
#include "inference.h"
#include "metrics.h"
#include "rng.h"
#include "safetensors.h"
#include "text_util.h"

namespace mhc::app {
namespace {

struct InspectArgs {
  std::string checkpoint, json, device = "cpu";
  int batch = 4;
};

// Probe: a forward over `B` validation windows spread over the set (through the shared
// evaluation routine) when the run's data is present, else over random tokens.
std::string probe_forward(LoadedModel& lm, int B) {
  const int T = lm.shape.T;
  try {
    ShardSet shards(lm.cfg.data.val, lm.shape.V, "data.val");
    SequenceSampler sampler(shards, T, static_cast<uint64_t>(lm.cfg.run.seed));
    const EvalResult r =
        evaluate(*lm.model, sampler, eval_windows(sampler.val_windows(), B), B, nullptr);
    return fmt::format("validation data {}, loss {:.4f} over {} tokens", lm.cfg.data.val, r.loss,
                       r.tokens);
  } catch (const MhcError&) {
    std::vector<int32_t> in(static_cast<size_t>(B) * T), tgt(in.size(), 0);
    for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<int32_t>(uniform01(5, i) * lm.shape.V) % lm.shape.V;
    lm.model->forward(in.data(), tgt.data(), B, T, 0.0f);
    return "random tokens (validation data not found)";
  }
}

std::vector<double> token_mean(std::vector<double> values, int tokens, int width) {
  std::vector<double> mean(static_cast<size_t>(width), 0.0);
  for (int t = 0; t < tokens; ++t)
    for (int i = 0; i < width; ++i) mean[i] += values[static_cast<size_t>(t) * width + i] / tokens;
  return mean;
}

std::string row_text(const double* v, int n) {
  std::string s;
  for (int i = 0; i < n; ++i) s += fmt::format("{:8.4f}", v[i]);
  return s;
}

}  // namespace

void add_inspect_command(CLI::App& app) {
  auto a = std::make_shared<InspectArgs>();
  CLI::App* cmd = app.add_subcommand("inspect", "parameters, connection matrices and Amax gains");
  cmd->add_option("--checkpoint", a->checkpoint, "checkpoint or run directory")->required();
  cmd->add_option("--json", a->json, "write the connection matrices and gains as JSON");
  cmd->add_option("--batch", a->batch, "probe sequences");
  cmd->add_option("--device", a->device, "auto, cpu or cuda");
  cmd->callback([a]() {
    if (a->batch < 1) fail("--batch {}: must be at least 1", a->batch);
    LoadedModel lm = load_trained_model(a->checkpoint, a->device, a->batch);
    const ModelShape& s = lm.shape;
    std::printf("checkpoint %s: %s, %d layers, d=%d, %lld parameters\n\n",
                lm.checkpoint_dir.c_str(), connection_label(s).c_str(), s.L, s.C,
                static_cast<long long>(parameter_count(*lm.layout, s)));
    std::vector<double> params = lm.model->get_params();
    std::printf("%-40s %-16s %12s %12s\n", "parameter", "shape", "rms", "max|x|");
    for (const auto& p : lm.layout->params) {
      double ss = 0, mx = 0;
      for (int64_t i = 0; i < p.numel; ++i) {
        const double v = params[static_cast<size_t>(p.offset + i)];
        ss += v * v;
        mx = std::max(mx, std::fabs(v));
      }
      std::printf("%-40s %-16s %12.5f %12.5f\n", p.name.c_str(), shape_string(p.shape).c_str(),
                  std::sqrt(ss / std::max<int64_t>(1, p.numel)), mx);
    }
    if (s.mode == ResidualMode::Baseline) return;
    const std::string probe = probe_forward(lm, a->batch);
    const int N = lm.model->last_tokens(), n = s.n;
    nlohmann::ordered_json js;
    js["checkpoint"] = lm.checkpoint_dir;
    js["mode"] = residual_mode_name(s.mode);
    js["connection"] = connection_label(s);
    js["n"] = n;
    js["probe"] = probe;
    js["n_layer"] = s.L;
    std::printf("\nconnection coefficients averaged over %d probe tokens (%s)\n", N, probe.c_str());
    std::vector<std::vector<double>> all_res(static_cast<size_t>(s.sublayers()));
    for (int k = 0; k < s.sublayers(); ++k) {
      Coeffs c = lm.model->coeffs(k);
      auto get = [&](Tensor t) {
        std::vector<double> v(static_cast<size_t>(t.numel));
        lm.backend->download(t, v.data());
        return v;
      };
      const auto pre_all = get(c.pre), post_all = get(c.post);
      all_res[k] = get(c.res);
      const auto pre = token_mean(pre_all, N, n), post = token_mean(post_all, N, n);
      const auto res = token_mean(all_res[k], N, n * n);
      const HresStats st = hres_stats(all_res[k].data(), N, n);
      const ValueRange pre_r = value_range(pre_all.data(), static_cast<int64_t>(pre_all.size()));
      const ValueRange post_r = value_range(post_all.data(), static_cast<int64_t>(post_all.size()));
      const std::string name = fmt::format("blocks.{}.{}", k / 2, k % 2 == 0 ? "attn" : "mlp");
      std::printf("\n%s\n  H_pre  %s\n  H_post %s\n  H_res", name.c_str(), row_text(pre.data(), n).c_str(),
                  row_text(post.data(), n).c_str());
      for (int i = 0; i < n; ++i) std::printf("%s%s\n", i ? "         " : " ", row_text(res.data() + i * n, n).c_str());
      std::printf("  H_res per token: max |row sum-1| %.2e, max |col sum-1| %.2e, diagonal mass %.4f, "
                  "row entropy %.4f nats (uniform: %.4f)\n", st.row_err, st.col_err, st.diag_mass,
                  st.row_entropy, std::log(static_cast<double>(n)));
      js["sublayers"].push_back(
          {{"name", name}, {"k", k}, {"H_pre", pre}, {"H_post", post}, {"H_res", res},
           {"H_res_stats", {{"row_err", st.row_err}, {"col_err", st.col_err}, {"diag_mass", st.diag_mass},
                            {"row_entropy", st.row_entropy}}},
           {"H_pre_range", {{"min", pre_r.min}, {"mean", pre_r.mean}, {"max", pre_r.max}}},
           {"H_post_range", {{"min", post_r.min}, {"mean", post_r.mean}, {"max", post_r.max}}}});
    }
    // The composite P = H_res^(2L-1) ... H_res^(0) of each token, averaged over the tokens
    // (the paper's composite mapping heatmap).
    std::vector<double> composite(static_cast<size_t>(n) * n, 0.0), P(composite.size()), Q(composite.size());
    for (int t = 0; t < N; ++t) {
      std::fill(P.begin(), P.end(), 0.0);
      for (int i = 0; i < n; ++i) P[static_cast<size_t>(i) * n + i] = 1;
      for (int k = 0; k < s.sublayers(); ++k) {
        const double* H = all_res[k].data() + static_cast<size_t>(t) * n * n;
        for (int i = 0; i < n; ++i)
          for (int j = 0; j < n; ++j) {
            double acc = 0;
            for (int m = 0; m < n; ++m) acc += H[i * n + m] * P[static_cast<size_t>(m) * n + j];
            Q[static_cast<size_t>(i) * n + j] = acc;
          }
        std::swap(P, Q);
      }
      for (size_t i = 0; i < P.size(); ++i) composite[i] += P[i] / N;
    }
    std::printf("\ncomposite H_res^(%d) ... H_res^(0), averaged over tokens\n", s.sublayers() - 1);
    for (int i = 0; i < n; ++i) std::printf("  %s\n", row_text(composite.data() + i * n, n).c_str());
    js["composite_H_res"] = composite;
    const AmaxGain g = amax_gain(all_res, N, n);
    std::printf("\nAmax gain (composite): forward mean %.4f max %.4f | backward mean %.4f max %.4f\n",
                g.fwd_mean, g.fwd_max, g.bwd_mean, g.bwd_max);
    std::printf("worst single layer: forward max %.4f (sublayer %d) | backward max %.4f (sublayer %d)\n",
                g.layer_fwd_max, g.layer_fwd_worst, g.layer_bwd_max, g.layer_bwd_worst);
    js["amax"] = amax_json(g);
    if (s.learned_collapse) {
      // The learned collapse y = Σ_i w_i X_i replaces the plain stream sum (weights 1).
      const nlohmann::ordered_json w = collapse_weight_ranges(*lm.model);
      const std::vector<double> mean = w["mean"], lo = w["min"], hi = w["max"];
      std::printf("\nlearned collapse weights per stream (the plain sum uses 1)\n  mean %s\n  min  %s\n"
                  "  max  %s\n", row_text(mean.data(), n).c_str(), row_text(lo.data(), n).c_str(),
                  row_text(hi.data(), n).c_str());
      js["collapse"] = w;
    }
    if (!a->json.empty()) {
      write_file_atomic(a->json, js.dump(2) + "\n");
      std::printf("wrote %s\n", a->json.c_str());
    }
  });
}

}  // namespace mhc::app
