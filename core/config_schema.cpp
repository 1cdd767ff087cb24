// The config schema: every key declared once (name, type, default, help). YAML files,
// --set overrides, --print-config, hashing and the sweep checker all read this table.
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <functional>
#include <sstream>
#include <stdexcept>

#include "config.h"
#include "error.h"
#include "text_util.h"

namespace mhc {
namespace {

enum class FieldType { Int, Float, Bool, String, Choice, FloatList };

struct Field {
  std::string key;
  FieldType type;
  std::string help;
  std::vector<std::string> choices;
  std::function<void(Config&, const YAML::Node&, const std::string&)> set;
  std::function<std::string(const Config&)> text;  // YAML text of the value
  std::function<void(Config&)> reset;              // sets the default
};

std::string type_name(const Field& f) {
  switch (f.type) {
    case FieldType::Int: return "int";
    case FieldType::Float: return "float";
    case FieldType::Bool: return "bool";
    case FieldType::String: return "string";
    case FieldType::FloatList: return "list of floats";
    case FieldType::Choice: {
      std::string s;
      for (const auto& c : f.choices) s += (s.empty() ? "" : "|") + c;
      return s;
    }
  }
  return "?";
}

[[noreturn]] void bad_value(const std::string& origin, const std::string& key,
                            const std::string& expected, const YAML::Node& node) {
  std::string got = node.IsScalar() ? "'" + node.Scalar() + "'"
                    : node.IsSequence() ? std::string("a list")
                    : node.IsMap()      ? std::string("a mapping")
                                        : std::string("nothing");
  fail("{}: {}: expected {}, got {}", origin, key, expected, got);
}

int64_t parse_int(const YAML::Node& node, const std::string& key, const std::string& origin) {
  if (!node.IsScalar()) bad_value(origin, key, "an integer (e.g. 256)", node);
  const std::string& s = node.Scalar();
  size_t i = (!s.empty() && (s[0] == '-' || s[0] == '+')) ? 1 : 0;
  // Digits with optional '_' separators, and at least one digit ("___" is no number).
  bool digits = i < s.size() && std::all_of(s.begin() + i, s.end(), [](unsigned char c) {
                  return std::isdigit(c) || c == '_';
                }) && std::any_of(s.begin() + i, s.end(), [](unsigned char c) {
                  return std::isdigit(c);
                });
  if (!digits) bad_value(origin, key, "an integer (e.g. 256)", node);
  std::string clean;
  for (char c : s)
    if (c != '_') clean += c;
  try {
    return std::stoll(clean);
  } catch (const std::out_of_range&) {
    bad_value(origin, key, "an integer within the 64-bit range", node);
  }
}

double parse_float(const YAML::Node& node, const std::string& key, const std::string& origin) {
  if (!node.IsScalar()) bad_value(origin, key, "a number (e.g. 3e-4)", node);
  const std::string& s = node.Scalar();
  char* end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  if (s.empty() || end != s.c_str() + s.size() || !std::isfinite(v))
    bad_value(origin, key, "a finite number (e.g. 3e-4)", node);
  return v;
}

bool parse_bool(const YAML::Node& node, const std::string& key, const std::string& origin) {
  if (node.IsScalar()) {
    std::string s = to_lower(node.Scalar());
    if (s == "true") return true;
    if (s == "false") return false;
  }
  bad_value(origin, key, "true or false", node);
}

std::string format_double(double v) { return fmt::format("{}", v); }

void add_field(std::vector<Field>& fields, const std::string& key,
               std::function<int64_t&(Config&)> ref, int64_t def, const std::string& help) {
  fields.push_back({key, FieldType::Int, help, {},
                    [ref, key](Config& c, const YAML::Node& n, const std::string& o) {
                      ref(c) = parse_int(n, key, o);
                    },
                    [ref](const Config& c) { return std::to_string(ref(const_cast<Config&>(c))); },
                    [ref, def](Config& c) { ref(c) = def; }});
}

void add_field(std::vector<Field>& fields, const std::string& key,
               std::function<double&(Config&)> ref, double def, const std::string& help) {
  fields.push_back({key, FieldType::Float, help, {},
                    [ref, key](Config& c, const YAML::Node& n, const std::string& o) {
                      ref(c) = parse_float(n, key, o);
                    },
                    [ref](const Config& c) { return format_double(ref(const_cast<Config&>(c))); },
                    [ref, def](Config& c) { ref(c) = def; }});
}

void add_field(std::vector<Field>& fields, const std::string& key,
               std::function<bool&(Config&)> ref, bool def, const std::string& help) {
  fields.push_back({key, FieldType::Bool, help, {},
                    [ref, key](Config& c, const YAML::Node& n, const std::string& o) {
                      ref(c) = parse_bool(n, key, o);
                    },
                    [ref](const Config& c) {
                      return std::string(ref(const_cast<Config&>(c)) ? "true" : "false");
                    },
                    [ref, def](Config& c) { ref(c) = def; }});
}

void add_field(std::vector<Field>& fields, const std::string& key,
               std::function<std::string&(Config&)> ref, const char* def, const std::string& help,
               std::vector<std::string> choices = {}) {
  FieldType type = choices.empty() ? FieldType::String : FieldType::Choice;
  fields.push_back(
      {key, type, help, choices,
       [ref, key, choices](Config& c, const YAML::Node& n, const std::string& o) {
         if (!n.IsScalar()) bad_value(o, key, "a string", n);
         const std::string& v = n.Scalar();
         if (!choices.empty() && std::find(choices.begin(), choices.end(), v) == choices.end()) {
           std::string list;
           for (const auto& ch : choices) list += (list.empty() ? "" : ", ") + ch;
           std::string hint = closest_match(v, choices);
           fail("{}: {}: '{}' is not one of {}{}", o, key, v, list,
                hint.empty() ? "" : "; did you mean '" + hint + "'?");
         }
         ref(c) = v;
       },
       [ref](const Config& c) { return ref(const_cast<Config&>(c)); },
       [ref, def = std::string(def)](Config& c) { ref(c) = def; }});
}

void add_field(std::vector<Field>& fields, const std::string& key,
               std::function<std::vector<double>&(Config&)> ref, std::vector<double> def,
               const std::string& help) {
  fields.push_back({key, FieldType::FloatList, help, {},
                    [ref, key](Config& c, const YAML::Node& n, const std::string& o) {
                      if (!n.IsSequence()) bad_value(o, key, "a list of numbers", n);
                      std::vector<double> v;
                      for (const auto& item : n) v.push_back(parse_float(item, key, o));
                      ref(c) = v;
                    },
                    [ref](const Config& c) {
                      std::string s = "[";
                      for (double v : ref(const_cast<Config&>(c)))
                        s += (s.size() > 1 ? ", " : "") + format_double(v);
                      return s + "]";
                    },
                    [ref, def](Config& c) { ref(c) = def; }});
}

#define MHC_REF(path, T) std::function<T&(Config&)>([](Config& c) -> T& { return c.path; })
#define MHC_INT(path, def, help) add_field(f, #path, MHC_REF(path, int64_t), int64_t{def}, help)
#define MHC_FLOAT(path, def, help) add_field(f, #path, MHC_REF(path, double), double{def}, help)
#define MHC_BOOL(path, def, help) add_field(f, #path, MHC_REF(path, bool), def, help)
#define MHC_STR(path, def, help) add_field(f, #path, MHC_REF(path, std::string), def, help)
#define MHC_CHOICE(path, def, help, ...) \
  add_field(f, #path, MHC_REF(path, std::string), def, help, {__VA_ARGS__})
#define MHC_FLOATS(path, def, help) \
  add_field(f, #path, MHC_REF(path, std::vector<double>), std::vector<double> def, help)

std::vector<Field> build_schema() {
  std::vector<Field> f;
  MHC_STR(run.name, "", "run name (<run.dir>/<run.name>); empty = <first config file>-<mode> (no doubled mode: hc.yaml gives hc)");
  MHC_STR(run.dir, "runs", "parent folder of run directories");
  MHC_INT(run.seed, 1337, "seed of weights and data order");

  MHC_INT(model.vocab_size, 256, "vocabulary size (padded to a multiple of 64 internally)");
  MHC_INT(model.d_model, 128, "model width C");
  MHC_INT(model.n_layer, 4, "transformer blocks L (2L sublayers)");
  MHC_INT(model.n_head, 4, "attention heads; must divide d_model");
  MHC_INT(model.seq_len, 128, "context length T");
  MHC_CHOICE(model.mlp, "swiglu", "MLP type", "swiglu", "gelu");
  MHC_INT(model.mlp_hidden, 0, "MLP hidden size; 0 = 8/3·C (swiglu) or 4·C (gelu), multiple of 64");
  MHC_BOOL(model.tie_embeddings, true, "share the embedding and the output head");
  MHC_FLOAT(model.norm_eps, 1e-5, "RMSNorm epsilon");
  MHC_FLOAT(model.rope_theta, 10000.0, "RoPE base");
  MHC_FLOAT(model.init_std, 0.02, "std of weight init (output projections get /sqrt(2L))");

  MHC_CHOICE(residual.mode, "mhc", "residual connection", "baseline", "hc", "mhc");
  MHC_INT(residual.n, 4, "residual streams (expansion rate) for hc/mhc");
  MHC_BOOL(residual.hc.dynamic, false, "HC: add the input-dependent (dynamic) coefficients");
  MHC_FLOAT(residual.hc.gate_init, 0.01, "HC: initial s_alpha and s_beta");
  MHC_INT(residual.mhc.sinkhorn_iters, 20, "mHC: Sinkhorn-Knopp iterations t_max");
  MHC_FLOAT(residual.mhc.alpha_init, 0.01, "mHC: initial gates alpha");
  MHC_FLOAT(residual.mhc.init_logit, 3.0, "mHC: bias scale s of the near-identity init");
  MHC_FLOAT(residual.mhc.eps, 1e-6, "mHC: epsilon of the stream RMS (and of deepseek_v4 numerics)");
  MHC_CHOICE(residual.mhc.projection, "sinkhorn",
             "mHC: H_res from its logits: sinkhorn (paper), birkhoff (mHC-lite, n <= 5), "
             "kronecker (KromHC, n a power of two), identity (H_res = I)",
             "sinkhorn", "birkhoff", "kronecker", "identity");
  MHC_CHOICE(residual.mhc.numerics, "paper",
             "mHC: paper, or deepseek_v4 (eps on H_pre and in the projection, res logits transposed)",
             "paper", "deepseek_v4");
  MHC_BOOL(residual.mhc.dynamic, true, "mHC: input-dependent coefficients; false = static mHC (bias only)");
  MHC_CHOICE(residual.collapse, "sum",
             "how streams become one at the head: sum, or learned (DeepSeek-V4's sigmoid head mix; hc/mhc)",
             "sum", "learned");

  MHC_STR(data.train, "data/cache/linuxdoc/*_train_*.bin", "glob of training shards");
  MHC_STR(data.val, "data/cache/linuxdoc/*_val_*.bin", "glob of validation shards");
  MHC_CHOICE(data.tokenizer, "byte", "tokenizer the shards were made with", "byte", "gpt2");

  MHC_CHOICE(train.device, "auto", "auto picks CUDA when a GPU is usable", "auto", "cpu", "cuda");
  MHC_CHOICE(train.precision, "bf16", "GPU compute precision (the CPU always runs fp32)", "bf16",
             "fp32");
  MHC_INT(train.threads, 0, "CPU threads; 0 = all cores");
  MHC_INT(train.micro_batch, 16, "sequences per rank per micro-step");
  MHC_INT(train.grad_accum, 0, "micro-steps per step; 0 = from batch_size");
  MHC_INT(train.batch_size, 0, "global sequences per step; 0 = micro_batch·grad_accum·ranks");
  MHC_INT(train.steps, 1000, "optimizer steps");
  MHC_FLOAT(train.lr, 1e-3, "peak learning rate");
  MHC_FLOAT(train.min_lr, 1e-4, "final learning rate");
  MHC_INT(train.warmup, 50, "linear warmup steps");
  MHC_CHOICE(train.schedule, "cosine", "decay after warmup", "cosine", "wsd", "step");
  MHC_FLOAT(train.decay_frac, 0.2, "wsd: fraction of steps in the final linear decay");
  MHC_FLOATS(train.step_ratios, ({0.8, 0.9}), "step: fractions of training where lr drops");
  MHC_FLOATS(train.step_factors, ({0.316, 0.1}), "step: lr multipliers from each ratio on");
  MHC_FLOAT(train.weight_decay, 0.1, "AdamW decoupled weight decay (matrices only)");
  MHC_FLOAT(train.beta1, 0.9, "AdamW beta1");
  MHC_FLOAT(train.beta2, 0.95, "AdamW beta2");
  MHC_FLOAT(train.eps, 1e-8, "AdamW epsilon");
  MHC_FLOAT(train.grad_clip, 1.0, "global gradient norm clip; 0 = off");
  MHC_FLOAT(train.diverge_loss, 0.0,
            "a step's training loss above this stops the run as diverged (exit status 3; a "
            "NaN/Inf loss always does); 0 = 1.5·ln(vocab_size)");
  MHC_INT(train.eval_every, 100, "validate every N steps (and at the end); 0 = only at the end");
  MHC_INT(train.eval_batches, 8, "micro-batches of each periodic evaluation (a fixed subset spread over the validation set)");
  MHC_INT(train.final_eval_batches, 0, "micro-batches of the final evaluation; 0 = the whole validation set");
  MHC_INT(train.log_every, 10, "log every N steps");
  MHC_INT(train.checkpoint_every, 0, "checkpoint every N steps (and at the end); 0 = only at the end");
  MHC_INT(train.keep_last, 2, "checkpoints kept; 0 = all");
  MHC_BOOL(train.recompute, false, "recompute connection activations in backward (GPU)");

  MHC_CHOICE(dist.backend, "auto", "data-parallel communication", "auto", "none", "mpi", "nccl");
  MHC_INT(dist.zero, 0, "1 = shard optimizer state (ZeRO-1)");
  MHC_CHOICE(dist.reduce_dtype, "fp32", "gradient all-reduce precision", "fp32", "bf16");
  MHC_FLOAT(dist.timeout_s, 300.0, "seconds to wait for peers at bootstrap");
  MHC_FLOAT(dist.collective_timeout_s, 900.0,
            "seconds a collective (NCCL, or TCP between CPU ranks) may wait for a peer before the job is "
            "ended (the peer or its node died)");
  return f;
}

const std::vector<Field>& schema() {
  static const std::vector<Field> fields = build_schema();
  return fields;
}

const Field* find_field(const std::string& key) {
  for (const auto& f : schema())
    if (f.key == key) return &f;
  return nullptr;
}

bool is_section(const std::string& prefix) {
  for (const auto& f : schema())
    if (starts_with(f.key, prefix + ".")) return true;
  return false;
}

std::vector<std::string> all_keys() {
  std::vector<std::string> keys;
  for (const auto& f : schema()) keys.push_back(f.key);
  return keys;
}

[[noreturn]] void unknown_key(const std::string& key, const std::string& origin) {
  std::string hint = closest_match(key, all_keys());
  fail("{}: unknown config key '{}'{}", origin, key,
       hint.empty() ? " (see `mhc train --help-config`)" : "; did you mean '" + hint + "'?");
}

void apply_node(Config& cfg, const YAML::Node& node, const std::string& prefix,
                const std::string& origin) {
  if (!node.IsMap()) {
    if (prefix.empty() && node.IsNull()) return;
    fail("{}: {} must be a mapping of keys", origin, prefix.empty() ? "the top level" : prefix);
  }
  std::set<std::string> seen;  // YAML parsers keep both copies of a repeated key
  for (const auto& item : node) {
    // A complex or empty key ("? [a]: 1", "? : 1") is no config name.
    if (!item.first.IsScalar()) {
      const int line = item.first.Mark().line;
      fail("{}: {}a key {} is not a name (keys are words such as 'model' or 'lr')", origin,
           line >= 0 ? fmt::format("line {}: ", line + 1) : "",
           prefix.empty() ? "at the top level" : "under '" + prefix + "'");
    }
    std::string key = (prefix.empty() ? "" : prefix + ".") + item.first.Scalar();
    if (!seen.insert(key).second)
      fail("{}: key '{}' appears twice (line {}); each key may be given once", origin, key,
           item.first.Mark().line + 1);
    if (const Field* f = find_field(key)) {
      f->set(cfg, item.second, origin);
    } else if (is_section(key)) {
      apply_node(cfg, item.second, key, origin);
    } else {
      unknown_key(key, origin);
    }
  }
}

YAML::Node load_yaml(const std::string& text, const std::string& origin) {
  try {
    return YAML::Load(text);
  } catch (const YAML::Exception& e) {
    fail("{}: invalid YAML at line {}: {}", origin, e.mark.line + 1, e.msg);
  }
}

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

}  // namespace

Config default_config() {
  Config cfg;
  for (const auto& f : schema()) f.reset(cfg);
  return cfg;
}

void apply_config_text(Config& cfg, const std::string& yaml_text, const std::string& origin) {
  apply_node(cfg, load_yaml(yaml_text, origin), "", origin);
}

void apply_config_file(Config& cfg, const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    fail("config file '{}' is a directory; -c takes a YAML file", path);
  std::ifstream in(path);
  if (!in) fail("config file '{}' cannot be read", path);
  std::stringstream ss;
  ss << in.rdbuf();
  apply_config_text(cfg, ss.str(), path);
}

void apply_config_override(Config& cfg, const std::string& assignment) {
  auto eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0)
    fail("--set '{}': expected key.path=value", assignment);
  std::string key = trim(assignment.substr(0, eq));
  std::string value = assignment.substr(eq + 1);
  const Field* f = find_field(key);
  if (!f) unknown_key(key, "--set");
  YAML::Node node = load_yaml(value.empty() ? "''" : value, "--set " + key);
  if (node.IsNull()) node = YAML::Node(value);
  f->set(cfg, node, "--set");
}

std::string config_to_yaml(const Config& cfg) {
  // Keys in schema order, nested by their dotted sections.
  std::string out;
  std::vector<std::string> open;  // currently open sections
  for (const auto& f : schema()) {
    std::vector<std::string> parts = split(f.key, '.');
    size_t common = 0;
    while (common < open.size() && common + 1 < parts.size() && open[common] == parts[common])
      ++common;
    open.resize(common);
    for (size_t i = common; i + 1 < parts.size(); ++i) {
      out += std::string(2 * i, ' ') + parts[i] + ":\n";
      open.push_back(parts[i]);
    }
    std::string value = f.text(cfg);
    if (f.type == FieldType::String || f.type == FieldType::Choice) {
      YAML::Emitter e;
      e << value;
      value = e.c_str();
    }
    out += std::string(2 * (parts.size() - 1), ' ') + parts.back() + ": " + value + "\n";
  }
  return out;
}

uint64_t config_hash(const Config& cfg) { return fnv1a(config_to_yaml(cfg)); }

uint64_t model_shape_hash(const Config& cfg) {
  std::string text;
  for (const auto& f : schema())
    if (starts_with(f.key, "model.") || starts_with(f.key, "residual."))
      text += f.key + "=" + f.text(cfg) + "\n";
  return fnv1a(text);
}

std::vector<std::pair<std::string, std::string>> config_flat(const Config& cfg) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& f : schema()) out.emplace_back(f.key, f.text(cfg));
  return out;
}

std::vector<std::string> config_differences(const Config& a, const Config& b,
                                            const std::vector<std::string>& prefixes) {
  std::vector<std::string> out;
  for (const auto& f : schema()) {
    bool wanted = false;
    for (const auto& p : prefixes) wanted = wanted || starts_with(f.key, p);
    if (!wanted) continue;
    const std::string va = f.text(a), vb = f.text(b);
    if (va != vb) out.push_back(f.key + ": " + va + " vs " + vb);
  }
  return out;
}

std::vector<ConfigKeyHelp> config_key_help() {
  std::vector<ConfigKeyHelp> out;
  Config defaults = default_config();
  for (const auto& f : schema()) out.push_back({f.key, type_name(f), f.text(defaults), f.help});
  return out;
}

bool is_config_key(const std::string& key) { return find_field(key) != nullptr; }

}  // namespace mhc
