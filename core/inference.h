// Loading a trained model for eval / sample / inspect / export, and text generation.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "backend.h"
#include "config.h"
#include "model.h"
#include "tokenizer.h"

namespace mhc {

struct LoadedModel {
  std::string checkpoint_dir;
  Config cfg;
  ModelShape shape;
  std::unique_ptr<ParamLayout> layout;
  std::unique_ptr<Backend> backend;
  std::unique_ptr<Model> model;
};

// path: a checkpoint directory or a run directory (its latest checkpoint).
// device: auto|cpu|cuda. The model is allocated for max_batch sequences. The checkpoint's
// files are verified against their recorded checksums first.
LoadedModel load_trained_model(const std::string& path, const std::string& device, int max_batch,
                               int threads = 0);

struct GenerateOptions {
  int max_new_tokens = 200;
  double temperature = 0.8;  // 0 = greedy
  int top_k = 40;            // 0 = no cut-off
  uint64_t seed = 1;
};

// MhcError naming the flag when an option is out of range.
void validate_generate_options(const GenerateOptions& options);

// Generates continuation tokens of `prompt`; on_text receives each new token's text.
std::string generate(Model& model, const Tokenizer& tok, const std::string& prompt,
                     const GenerateOptions& options,
                     const std::function<void(const std::string&)>& on_text = {});

}  // namespace mhc
