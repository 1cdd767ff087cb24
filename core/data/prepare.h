// `mhc prepare`: text files or directories → train/val token shards.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace mhc {

struct PrepareOptions {
  std::vector<std::string> inputs;  // files or directories (searched recursively)
  std::string output_dir;
  std::string tokenizer = "byte";   // "byte" (built in) or "gpt2"
  std::string gpt2_dir;             // encoder.json + vocab.bpe for "gpt2"
  double val_fraction = 0.05;
  int64_t shard_tokens = 100'000'000;  // tokens per shard at most
  std::string name;                 // shard name prefix; default: output dir's basename
};

struct PrepareReport {
  int64_t documents = 0, train_tokens = 0, val_tokens = 0, bytes = 0;
  std::vector<std::string> files_written;
};

// Documents are the input files in sorted path order. With a tokenizer that has a
// document delimiter (gpt2: <|endoftext|> = 50256) each document starts with it, as in
// llm.c's and nanoGPT's GPT-2 shards; otherwise (byte) each is followed by a blank line.
// A document goes to validation when a hash of its relative path falls under
// val_fraction; when that leaves either side empty (e.g. a single file), the last
// val_fraction of the token stream becomes validation instead. val_fraction 0: no validation.
PrepareReport prepare_corpus(const PrepareOptions& options);

}  // namespace mhc
