// mhc eval: validation loss (with its standard error), bits per token and bits per byte
// of a checkpoint, through the evaluation routine training uses (core/evaluate.h); with
// --compare, two checkpoints on the same windows and their paired difference.
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
  std::string checkpoint, compare, data, device = "auto", json;
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

// A checkpoint's model for evaluation at its training micro-batch, with training's memory
// options (chunked classifier): what fitted for training fits here.
LoadedModel load_for_eval(const std::string& path, const std::string& device, int threads) {
  LoadedModel lm = load_trained_model(path, device, 1, threads);
  const int B = static_cast<int>(lm.cfg.train.micro_batch);
  lm.model.reset();  // the batch-1 model goes first
  lm.model = std::make_unique<Model>(*lm.backend, lm.shape, *lm.layout, B,
                                     model_options_for_training(lm.cfg, lm.shape, B));
  read_weights(lm.checkpoint_dir + "/model.safetensors", *lm.model);
  return lm;
}

// Refuses a --compare checkpoint that would not read the same tokens in the same windows.
void check_comparable(const LoadedModel& a, const LoadedModel& b, bool data_given) {
  const auto& ca = a.cfg;
  const auto& cb = b.cfg;
  if (ca.data.tokenizer != cb.data.tokenizer)
    fail("--compare {}: its data.tokenizer '{}' differs from --checkpoint's '{}'; a paired "
         "comparison needs the same tokens", b.checkpoint_dir, cb.data.tokenizer, ca.data.tokenizer);
  if (a.shape.V != b.shape.V || a.shape.T != b.shape.T)
    fail("--compare {}: vocab_size {} and seq_len {} differ from --checkpoint's {} and {}; a "
         "paired comparison needs the same windows", b.checkpoint_dir, b.shape.V, b.shape.T,
         a.shape.V, a.shape.T);
  if (!data_given && ca.data.val != cb.data.val)
    fail("--compare {}: its validation data data.val='{}' differs from --checkpoint's '{}'; "
         "pass --data GLOB to evaluate both on the same shards", b.checkpoint_dir, cb.data.val,
         ca.data.val);
}

void print_result(const char* name, const EvalResult& r, const Tokenizer* tok) {
  std::printf("%s: val loss %.4f ± %.4f nats/token (standard error, %d blocks)", name, r.loss,
              r.se, r.se_blocks);
  if (tok) std::printf(", %.4f bits per byte", r.bits_per_byte());
  std::printf("\n");
}

// The paired comparison: B − A per window, its mean and batch-means SE.
nlohmann::ordered_json compare(const EvalResult& ra, const EvalResult& rb, const Tokenizer* tok) {
  MHC_CHECK(ra.window_losses.size() == rb.window_losses.size());
  std::vector<double> diff(ra.window_losses.size());
  for (size_t i = 0; i < diff.size(); ++i) diff[i] = rb.window_losses[i] - ra.window_losses[i];
  const BatchMeans d = batch_means(diff);
  const double unpaired = std::hypot(ra.se, rb.se);
  print_result("A", ra, tok);
  print_result("B", rb, tok);
  std::printf("delta B - A: %+.4f ± %.4f nats/token (paired: standard error of the per-window "
              "differences, %d blocks; unpaired it would be ± %.4f) over %lld tokens\n",
              d.mean, d.se, d.blocks, unpaired, static_cast<long long>(ra.tokens));
  if (tok)
    std::printf("delta bits per byte: %+.4f\n", rb.bits_per_byte() - ra.bits_per_byte());
  return {{"loss_a", ra.loss},
          {"loss_b", rb.loss},
          {"delta", d.mean},
          {"delta_se", or_null(d.se)},
          {"delta_se_blocks", d.blocks},
          {"unpaired_se", or_null(unpaired)},
          {"bits_per_byte_a", or_null(ra.bits_per_byte())},
          {"bits_per_byte_b", or_null(rb.bits_per_byte())},
          {"tokens", ra.tokens},
          {"a", result_json(ra)},
          {"b", result_json(rb)}};
}

}  // namespace

void add_eval_command(CLI::App& app) {
  auto a = std::make_shared<EvalArgs>();
  CLI::App* cmd = app.add_subcommand("eval", "evaluate a checkpoint on validation data");
  cmd->add_option("--checkpoint", a->checkpoint, "checkpoint or run directory")->required();
  cmd->add_option("--compare", a->compare,
                  "a second checkpoint or run directory: evaluate both on the same windows and "
                  "report B - A with the standard error of the per-window differences");
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
    if (!a->compare.empty() && a->parts > 0)
      fail("--parts {} cannot be combined with --compare (evaluate one checkpoint for its parts)",
           a->parts);
    LoadedModel lm = load_for_eval(a->checkpoint, a->device, a->threads);
    LoadedModel lm_b;
    if (!a->compare.empty()) {
      lm_b = load_for_eval(a->compare, a->device, a->threads);
      check_comparable(lm, lm_b, !a->data.empty());
    }
    const int B = static_cast<int>(lm.cfg.train.micro_batch);
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
    if (!a->compare.empty()) {
      const EvalResult rb = evaluate(*lm_b.model, sampler, windows,
                                     static_cast<int>(lm_b.cfg.train.micro_batch), tok.get());
      std::printf("A: %s\nB: %s\n", lm.checkpoint_dir.c_str(), lm_b.checkpoint_dir.c_str());
      std::printf("data: %s (%lld of %lld windows of %d tokens%s)\n", glob.c_str(),
                  static_cast<long long>(windows.size()), static_cast<long long>(total), lm.shape.T,
                  whole ? ": the whole set" : ", spread evenly");
      nlohmann::ordered_json js = {{"checkpoint_a", lm.checkpoint_dir},
                                   {"checkpoint_b", lm_b.checkpoint_dir},
                                   {"data", glob},
                                   {"whole_set", whole}};
      js.update(compare(r, rb, tok.get()));
      if (!a->json.empty()) {
        write_file_atomic(a->json, js.dump(2) + "\n");
        std::printf("wrote %s\n", a->json.c_str());
      }
      return;
    }
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
