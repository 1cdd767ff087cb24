// mhc sample: generate text from a checkpoint.
#include <cstdio>

#include "commands.h"
#include "inference.h"
#include "tokenizer.h"

namespace mhc::app {
namespace {

struct SampleArgs {
  std::string checkpoint, prompt, device = "auto";
  GenerateOptions gen;
  int threads = 0;
};

}  // namespace

void add_sample_command(CLI::App& app) {
  auto a = std::make_shared<SampleArgs>();
  CLI::App* cmd = app.add_subcommand("sample", "generate text from a checkpoint");
  cmd->add_option("--checkpoint", a->checkpoint, "checkpoint or run directory")->required();
  cmd->add_option("--prompt", a->prompt, "text to continue");
  cmd->add_option("--max-new-tokens", a->gen.max_new_tokens, "tokens to generate");
  cmd->add_option("--temperature", a->gen.temperature, "sampling temperature (0 = greedy)");
  cmd->add_option("--top-k", a->gen.top_k, "sample among the k most likely tokens (0 = all)");
  cmd->add_option("--seed", a->gen.seed, "sampling seed");
  cmd->add_option("--device", a->device, "auto, cpu or cuda");
  cmd->add_option("--threads", a->threads, "CPU threads (0 = all)");
  cmd->callback([a]() {
    validate_generate_options(a->gen);
    LoadedModel lm = load_trained_model(a->checkpoint, a->device, 1, a->threads);
    auto tok = make_tokenizer(lm.cfg.data.tokenizer);
    std::fputs(a->prompt.c_str(), stdout);
    generate(*lm.model, *tok, a->prompt, a->gen, [](const std::string& piece) {
      std::fputs(piece.c_str(), stdout);
      std::fflush(stdout);
    });
    std::fputc('\n', stdout);
  });
}

}  // namespace mhc::app
