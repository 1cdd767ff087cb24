// mhc prepare: text files or directories -> llm.c token shards.
#include <cstdio>

#include "commands.h"
#include "data/prepare.h"

namespace mhc::app {

void add_prepare_command(CLI::App& app) {
  auto opts = std::make_shared<PrepareOptions>();
  CLI::App* cmd = app.add_subcommand("prepare", "tokenize text into train/val shards");
  cmd->add_option("--input", opts->inputs, "text file or directory (repeatable)")->required();
  cmd->add_option("--output", opts->output_dir, "output directory for the shards")->required();
  cmd->add_option("--tokenizer", opts->tokenizer, "byte (a blank line ends each document) or gpt2 (<|endoftext|> = 50256 starts each)")->check(CLI::IsMember({"byte", "gpt2"}));
  cmd->add_option("--gpt2-dir", opts->gpt2_dir, "folder with encoder.json and vocab.bpe (gpt2)");
  cmd->add_option("--val-fraction", opts->val_fraction, "fraction of documents held out");
  cmd->add_option("--shard-tokens", opts->shard_tokens, "tokens per shard at most");
  cmd->add_option("--name", opts->name, "shard name prefix (default: output folder name)");
  cmd->callback([opts]() {
    const PrepareReport r = prepare_corpus(*opts);
    std::printf("prepared %lld documents (%lld bytes): %lld train tokens, %lld val tokens\n",
                static_cast<long long>(r.documents), static_cast<long long>(r.bytes),
                static_cast<long long>(r.train_tokens), static_cast<long long>(r.val_tokens));
    for (const auto& f : r.files_written) std::printf("  %s\n", f.c_str());
  });
}

}  // namespace mhc::app
