// mhc eval: validation loss, bits per token and bits per byte of a checkpoint.
#include <cmath>
#include <cstdio>

#include "commands.h"
#include "data/sampler.h"
#include "data/shards.h"
#include "checkpoint.h"
#include "inference.h"
#include "error.h"
#include "tokenizer.h"

namespace mhc::app {
namespace {

struct EvalArgs {
  std::string checkpoint, data, device = "auto";
  int batches = 0, threads = 0;
};

}  // namespace

void add_eval_command(CLI::App& app) {
  auto a = std::make_shared<EvalArgs>();
  CLI::App* cmd = app.add_subcommand("eval", "evaluate a checkpoint on validation data");
  cmd->add_option("--checkpoint", a->checkpoint, "checkpoint or run directory")->required();
  cmd->add_option("--data", a->data, "glob of shards (default: the run's data.val)");
  cmd->add_option("--batches", a->batches, "micro-batches to evaluate (default: train.eval_batches)");
  cmd->add_option("--device", a->device, "auto, cpu or cuda");
  cmd->add_option("--threads", a->threads, "CPU threads (0 = all)");
  cmd->callback([a]() {
    if (a->batches < 0) fail("--batches {}: must be >= 1 (or 0 for train.eval_batches)", a->batches);
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
    auto tok = make_tokenizer(lm.cfg.data.tokenizer);
    const int batches = a->batches > 0 ? a->batches : static_cast<int>(lm.cfg.train.eval_batches);
    const int T = lm.shape.T;
    std::vector<int32_t> in(static_cast<size_t>(B) * T), tgt(in.size());
    double loss_sum = 0, bytes = 0;
    for (int b = 0; b < batches; ++b) {
      for (int r = 0; r < B; ++r)
        sampler.val_sample(static_cast<int64_t>(b) * B + r, in.data() + static_cast<size_t>(r) * T,
                           tgt.data() + static_cast<size_t>(r) * T);
      loss_sum += lm.model->forward(in.data(), tgt.data(), B, T, 0.0f);
      bytes += static_cast<double>(tok->decode(tgt).size());
    }
    const double loss = loss_sum / batches;
    const double tokens = static_cast<double>(batches) * B * T;
    const double bits_per_token = loss / std::log(2.0);
    std::printf("checkpoint: %s\nval loss: %.4f nats/token over %.0f tokens\n", lm.checkpoint_dir.c_str(),
                loss, tokens);
    std::printf("bits per token: %.4f\nbits per byte: %.4f (%s tokenizer, %.3f bytes/token)\n",
                bits_per_token, bits_per_token * tokens / bytes, tok->name().c_str(), bytes / tokens);
  });
}

}  // namespace mhc::app
