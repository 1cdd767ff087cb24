// mhc eval: validation loss (with its standard error), bits per token and bits per byte
// of a checkpoint, through the evaluation routine training uses (core/evaluate.h).
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdio>

#include "checkpoint.h"
#include "commands.h"
#include "data/sampler.h"
#include "data/shards.h"
#include "error.h"
#include "evaluate.h"
#include "inference.h"
#include "text_util.h"
#include "tokenizer.h"

namespace mhc::app {
namespace {

struct EvalArgs {
  std::string checkpoint, data, device = "auto", json;
  int64_t batches = 0, parts = 0;
  int threads = 0;
};

nlohmann::ordered_json or_null(double v) {
  return std::isfinite(v) ? nlohmann::ordered_json(v) : nlohmann::ordered_json();
}

nlohmann::ordered_json result_json(const EvalResult& r) {
  return {{"val_loss", r.loss},           {"val_loss_se", or_null(r.se)}, {"val_loss_se_blocks", r.se_blocks},
          {"val_tokens", r.tokens},       {"val_sequences", r.sequences},
          {"bits_per_token", r.bits_per_token()}, {"bits_per_byte", or_null(r.bits_per_byte())}};
}

}  // namespace

void add_eval_command(CLI::App& app) {
  auto a = std::make_shared<EvalArgs>();
  CLI::App* cmd = app.add_subcommand("eval", "evaluate a checkpoint on validation data");
  cmd->add_option("--checkpoint", a->checkpoint, "checkpoint or run directory")->required();
  cmd->add_option("--data", a->data, "glob of shards (default: the run's data.val)");
  CLI::Option* batches_opt = cmd->add_option(
      "--batches", a->batches,
      "micro-batches to read, spread evenly over the set as training's periodic evaluation "
      "does (default: the whole set, once)")
      ->default_str("all");
  cmd->add_option("--parts", a->parts,
                  "also evaluate P disjoint consecutive parts and compare their spread with the "
                  "standard error (default: 0 = no parts)");
  cmd->add_option("--json", a->json, "also write the results as JSON to this file");
  cmd->add_option("--device", a->device, "auto, cpu or cuda")->capture_default_str();
  cmd->add_option("--threads", a->threads, "CPU threads (0 = all)")->capture_default_str();
  cmd->callback([a, batches_opt]() {
    if (batches_opt->count() > 0 && a->batches < 1)
      fail("--batches {}: must be at least 1 (leave it out to read the whole validation set)",
           a->batches);
    if (a->parts < 0) fail("--parts {}: must be >= 0", a->parts);
    LoadedModel lm = load_trained_model(a->checkpoint, a->device, 1, a->threads);
    const int B = static_cast<int>(lm.cfg.train.micro_batch);
    // The training micro-batch, with training's memory options (chunked classifier): what
    // fitted for training fits here. The batch-1 model goes first.
    lm.model.reset();
    lm.model = std::make_unique<Model>(*lm.backend, lm.shape, *lm.layout, B,
                                       model_options_for_training(lm.cfg, lm.shape, B));
    read_weights(lm.checkpoint_dir + "/model.safetensors", *lm.model);
    const std::string glob = a->data.empty() ? lm.cfg.data.val : a->data;
    ShardSet shards(glob, lm.shape.V, a->data.empty() ? "data.val" : "--data");
    shards.check_tokenizer(lm.cfg.data.tokenizer, "the checkpoint's data.tokenizer");
    SequenceSampler sampler(shards, lm.shape.T, static_cast<uint64_t>(lm.cfg.run.seed));
    std::unique_ptr<Tokenizer> tok;
    try {
      tok = make_tokenizer(lm.cfg.data.tokenizer);
    } catch (const MhcError& e) {
      std::fprintf(stderr, "note: no bits per byte (%s)\n", e.what());
    }
    const int64_t total = sampler.val_windows();
    const int64_t total_batches = (total + B - 1) / B;
    int64_t count = total;
    if (batches_opt->count() > 0) {
      if (a->batches > total_batches)
        std::fprintf(stderr,
                     "note: --batches %lld exceeds the %lld micro-batches of %d sequences in the "
                     "validation set; reading the whole set once\n",
                     static_cast<long long>(a->batches), static_cast<long long>(total_batches), B);
      else
        count = a->batches * B;
    }
    const std::vector<int64_t> windows = eval_windows(total, count);
    const EvalResult r = evaluate(*lm.model, sampler, windows, B, tok.get());
    const bool whole = static_cast<int64_t>(windows.size()) == total;
    std::printf("checkpoint: %s\n", lm.checkpoint_dir.c_str());
    std::printf("data: %s (%lld of %lld windows of %d tokens%s)\n", glob.c_str(),
                static_cast<long long>(windows.size()), static_cast<long long>(total), lm.shape.T,
                whole ? ": the whole set" : ", spread evenly");
    std::printf("val loss: %.4f ± %.4f nats/token (standard error, %d blocks) over %lld tokens\n", r.loss,
                r.se, r.se_blocks, static_cast<long long>(r.tokens));
    std::printf("bits per token: %.4f\n", r.bits_per_token());
    if (tok)
      std::printf("bits per byte: %.4f (%s tokenizer, %.3f bytes/token)\n", r.bits_per_byte(),
                  tok->name().c_str(), r.bytes / static_cast<double>(r.tokens));
    nlohmann::ordered_json js = result_json(r);
    js = {{"checkpoint", lm.checkpoint_dir}, {"data", glob}, {"whole_set", whole}, {"result", js}};
    if (a->parts > 0) {
      // Disjoint consecutive parts of the windows read above: their losses scatter about
      // the whole's with a standard deviation of about SE·sqrt(parts).
      const int64_t P = std::min<int64_t>(a->parts, static_cast<int64_t>(windows.size()));
      std::vector<double> losses;
      for (int64_t p = 0; p < P; ++p) {
        const size_t lo = windows.size() * p / P, hi = windows.size() * (p + 1) / P;
        const std::vector<int64_t> part(windows.begin() + lo, windows.begin() + hi);
        const EvalResult pr = evaluate(*lm.model, sampler, part, B, nullptr);
        losses.push_back(pr.loss);
        js["parts"].push_back(result_json(pr));
        std::printf("  part %lld: %.4f over %lld tokens\n", static_cast<long long>(p), pr.loss,
                    static_cast<long long>(pr.tokens));
      }
      double mean = 0, ss = 0;
      for (double v : losses) mean += v / P;
      for (double v : losses) ss += (v - mean) * (v - mean);
      const double sd = P > 1 ? std::sqrt(ss / (P - 1)) : NAN;
      std::printf("parts: sd %.4f over %lld parts; SE·sqrt(parts) = %.4f; sd/sqrt(parts) = %.4f "
                  "(compare with the SE %.4f)\n", sd, static_cast<long long>(P),
                  r.se * std::sqrt(static_cast<double>(P)), sd / std::sqrt(static_cast<double>(P)), r.se);
      js["parts_sd"] = or_null(sd);
    }
    if (!a->json.empty()) {
      write_file_atomic(a->json, js.dump(2) + "\n");
      std::printf("wrote %s\n", a->json.c_str());
    }
  });
}

}  // namespace mhc::app
