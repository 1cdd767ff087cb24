// The resolved configuration of a run. Every field is declared once, with its default
// and help text, in config_schema.cpp; YAML files, --set overrides, --print-config and
// the config hash all go through that one schema.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace mhc {

struct Config {
  struct Run {
    std::string name;
    std::string dir;
    int64_t seed;
  } run;
  struct Model {
    int64_t vocab_size;
    int64_t d_model;
    int64_t n_layer;
    int64_t n_head;
    int64_t seq_len;
    std::string mlp;
    int64_t mlp_hidden;
    bool tie_embeddings;
    double norm_eps;
    double rope_theta;
    double init_std;
  } model;
  struct Residual {
    std::string mode;
    int64_t n;
    struct Hc {
      bool dynamic;
      double gate_init;
    } hc;
    struct Mhc {
      int64_t sinkhorn_iters;
      double alpha_init;
      double init_logit;
      double eps;
      std::string projection;  // sinkhorn | birkhoff | kronecker | identity
      std::string numerics;    // paper | deepseek_v4
      bool dynamic;            // false: static mHC
    } mhc;
    std::string collapse;
  } residual;
  struct Data {
    std::string train;
    std::string val;
    std::string tokenizer;
  } data;
  struct Train {
    std::string device;
    std::string precision;
    int64_t threads;
    int64_t micro_batch;
    int64_t grad_accum;
    int64_t batch_size;
    int64_t steps;
    double lr;
    double min_lr;
    int64_t warmup;
    std::string schedule;
    double decay_frac;
    std::vector<double> step_ratios;
    std::vector<double> step_factors;
    double weight_decay;
    double beta1;
    double beta2;
    double eps;
    double grad_clip;
    double diverge_loss;
    int64_t eval_every;
    int64_t eval_batches;
    int64_t final_eval_batches;
    int64_t log_every;
    int64_t checkpoint_every;
    int64_t keep_last;
    bool recompute;
  } train;
  struct Dist {
    std::string backend;
    int64_t zero;
    std::string reduce_dtype;
    double timeout_s;
    double collective_timeout_s;
  } dist;
};

// A config built from the schema defaults.
Config default_config();

// Applies a YAML file on top of cfg. Unknown keys and wrong types are MhcErrors that
// name the file, the key path and, for typos, the closest known key.
void apply_config_file(Config& cfg, const std::string& path);
// Applies YAML text (used for configs stored in checkpoints); `origin` names it in errors.
void apply_config_text(Config& cfg, const std::string& yaml_text, const std::string& origin);
// Applies one "key.path=value" override; the value is parsed as a YAML scalar.
void apply_config_override(Config& cfg, const std::string& assignment);

// Cross-field checks (d_model divisible by n_head, ...). Throws MhcError naming keys.
void validate_config(const Config& cfg);

// The resolved config as YAML, every key, in schema order.
std::string config_to_yaml(const Config& cfg);
// Hash of the whole resolved config, and of the sections that fix the model's shape
// (model.*, residual.*) so a resume can refuse a different model.
uint64_t config_hash(const Config& cfg);
uint64_t model_shape_hash(const Config& cfg);

// Every key with its value as YAML text, in schema order.
std::vector<std::pair<std::string, std::string>> config_flat(const Config& cfg);
// Keys under `prefixes` whose values differ, as "key: a vs b".
std::vector<std::string> config_differences(const Config& a, const Config& b,
                                            const std::vector<std::string>& prefixes);

struct ConfigKeyHelp {
  std::string key, type, default_value, help;
};
std::vector<ConfigKeyHelp> config_key_help();
// True when `key` is a config key (used by the ablation sweep checker).
bool is_config_key(const std::string& key);

}  // namespace mhc
