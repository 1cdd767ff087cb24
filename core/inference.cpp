#include "inference.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "backend_factory.h"
#include "checkpoint.h"
#include "error.h"
#include "rng.h"

namespace mhc {

LoadedModel load_trained_model(const std::string& path, const std::string& device, int max_batch,
                               int threads) {
  if (device != "auto" && device != "cpu" && device != "cuda")
    fail("--device '{}' is not one of auto, cpu, cuda", device);
  if (threads < 0) fail("--threads {}: must be >= 0 (0 = all cores)", threads);
  LoadedModel lm;
  lm.checkpoint_dir = resolve_checkpoint(path);
  verify_checkpoint_files(lm.checkpoint_dir);
  lm.cfg = checkpoint_config(lm.checkpoint_dir);
  lm.cfg.train.device = device;
  lm.cfg.train.threads = threads;
  lm.cfg.train.precision = "fp32";
  lm.shape = model_shape_from_config(lm.cfg);
  lm.layout = std::make_unique<ParamLayout>(ParamLayout::build(lm.shape, lm.cfg));
  lm.backend = make_backend(lm.cfg.train).backend;
  lm.model = std::make_unique<Model>(*lm.backend, lm.shape, *lm.layout, max_batch);
  read_weights(lm.checkpoint_dir + "/model.safetensors", *lm.model);
  return lm;
}

void validate_generate_options(const GenerateOptions& o) {
  if (o.max_new_tokens < 0) fail("--max-new-tokens {}: must be >= 0", o.max_new_tokens);
  if (!(o.temperature >= 0) || !std::isfinite(o.temperature))
    fail("--temperature {}: must be a finite number >= 0 (0 = greedy)", o.temperature);
  if (o.top_k < 0) fail("--top-k {}: must be >= 0 (0 = no cut-off)", o.top_k);
}

namespace {

constexpr int kLengthBucket = 64;

int sample_token(std::vector<double> logits, int V, const GenerateOptions& o, SequentialRng& rng) {
  logits.resize(static_cast<size_t>(V));
  if (o.temperature <= 0)
    return static_cast<int>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  std::vector<int> order(static_cast<size_t>(V));
  std::iota(order.begin(), order.end(), 0);
  const int k = (o.top_k > 0 && o.top_k < V) ? o.top_k : V;
  std::partial_sort(order.begin(), order.begin() + k, order.end(),
                    [&](int a, int b) { return logits[a] > logits[b]; });
  const double top = logits[order[0]];
  std::vector<double> p(static_cast<size_t>(k));
  double sum = 0;
  for (int i = 0; i < k; ++i) sum += p[i] = std::exp((logits[order[i]] - top) / o.temperature);
  double u = rng.uniform() * sum;
  for (int i = 0; i < k; ++i) {
    u -= p[i];
    if (u <= 0) return order[i];
  }
  return order[k - 1];
}

}  // namespace

std::string generate(Model& model, const Tokenizer& tok, const std::string& prompt,
                     const GenerateOptions& o, const std::function<void(const std::string&)>& on_text) {
  const ModelShape& s = model.shape();
  validate_generate_options(o);
  std::vector<int32_t> ctx = tok.encode(prompt.empty() ? std::string("\n") : prompt);
  for (int32_t t : ctx)
    if (t >= s.V) fail("the prompt has token {} outside the model's vocabulary of {}", t, s.V);
  SequentialRng rng(o.seed);
  std::vector<int32_t> generated;
  std::vector<double> row(static_cast<size_t>(s.Vp));
  std::vector<int32_t> window;
  for (int i = 0; i < o.max_new_tokens; ++i) {
    const int len = std::min<int>(static_cast<int>(ctx.size()), s.T);
    // The forward runs on the context padded to a multiple of 64 tokens: attention is
    // causal and everything else is per token, so the padding cannot change position
    // len − 1, and the GPU sees a handful of sequence lengths (one cuDNN plan each)
    // instead of a new one per generated token.
    const int padded = std::min(s.T, (len + kLengthBucket - 1) / kLengthBucket * kLengthBucket);
    window.assign(ctx.end() - len, ctx.end());
    window.resize(static_cast<size_t>(padded), 0);
    model.forward(window.data(), nullptr, 1, padded, 0.0f);
    model.backend().download(model.logits().slice(static_cast<int64_t>(len - 1) * s.Vp, s.Vp),
                             row.data());
    // Only ids the tokenizer can print: a model whose vocabulary is padded beyond it would
    // otherwise emit ids that decode to nothing.
    const int next = sample_token(row, std::min(s.V, tok.vocab_size()), o, rng);
    ctx.push_back(next);
    generated.push_back(next);
    if (on_text) on_text(tok.decode({next}));
  }
  return tok.decode(generated);
}

}  // namespace mhc
