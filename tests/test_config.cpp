// The config system (config.h): schema defaults, YAML files and --set overrides, error
// messages, cross-field validation, YAML round trip, hashes; and the LR schedules.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "config.h"
#include "model_shape.h"
#include "schedule.h"
#include "test_support.h"

namespace mhc {
namespace {

using testing::expect_mhc_error;
using testing::ScratchDir;

std::string write_yaml(const ScratchDir& dir, const std::string& name, const std::string& text) {
  const std::string path = dir.file(name);
  testing::write_file_bytes(path, text);
  return path;
}

// Value of one key as YAML text.
std::string flat_value(const Config& cfg, const std::string& key) {
  for (const auto& [k, v] : config_flat(cfg))
    if (k == key) return v;
  ADD_FAILURE() << "no key " << key;
  return "";
}

// ---- defaults and layering ------------------------------------------------------------

TEST(Config, DefaultsValidateAndFollowTheSpec) {
  const Config cfg = default_config();
  EXPECT_NO_THROW(validate_config(cfg));
  EXPECT_NO_THROW(model_shape_from_config(cfg));
  // residuals.md defaults.
  EXPECT_EQ(cfg.residual.mode, "mhc");
  EXPECT_EQ(cfg.residual.n, 4);
  EXPECT_EQ(cfg.residual.mhc.sinkhorn_iters, 20);
  EXPECT_EQ(cfg.residual.mhc.eps, 1e-6);
  EXPECT_EQ(cfg.residual.mhc.alpha_init, 0.01);
  EXPECT_EQ(cfg.residual.mhc.init_logit, 3.0);
  EXPECT_EQ(cfg.residual.hc.gate_init, 0.01);
  EXPECT_FALSE(cfg.residual.hc.dynamic);
  EXPECT_EQ(cfg.residual.collapse, "sum");
}

TEST(Config, FileOverridesOnlyTheKeysItNames) {
  ScratchDir dir;
  const std::string path = write_yaml(dir, "a.yaml",
                                      "model:\n  d_model: 64\n  mlp: gelu\n"
                                      "residual:\n  mode: hc\n  hc:\n    dynamic: true\n"
                                      "train:\n  lr: 3e-4\n  step_ratios: [0.5, 0.75]\n"
                                      "  step_factors: [0.5, 0.25]\n");
  Config cfg = default_config();
  apply_config_file(cfg, path);
  EXPECT_EQ(cfg.model.d_model, 64);
  EXPECT_EQ(cfg.model.mlp, "gelu");
  EXPECT_EQ(cfg.residual.mode, "hc");
  EXPECT_TRUE(cfg.residual.hc.dynamic);
  EXPECT_EQ(cfg.train.lr, 3e-4);
  EXPECT_EQ(cfg.train.step_ratios, (std::vector<double>{0.5, 0.75}));
  EXPECT_EQ(cfg.train.step_factors, (std::vector<double>{0.5, 0.25}));
  const std::vector<std::string> changed = {"model.d_model",       "model.mlp", "residual.mode",
                                            "residual.hc.dynamic", "train.lr",  "train.step_ratios",
                                            "train.step_factors"};
  const auto defaults = config_flat(default_config()), now = config_flat(cfg);
  ASSERT_EQ(defaults.size(), now.size());
  for (size_t i = 0; i < now.size(); ++i) {
    const bool named = std::find(changed.begin(), changed.end(), now[i].first) != changed.end();
    if (named)
      EXPECT_NE(now[i].second, defaults[i].second) << now[i].first;
    else
      EXPECT_EQ(now[i].second, defaults[i].second) << now[i].first;
  }
  // An empty file changes nothing.
  Config empty = default_config();
  apply_config_file(empty, write_yaml(dir, "empty.yaml", ""));
  EXPECT_EQ(config_to_yaml(empty), config_to_yaml(default_config()));
}

TEST(Config, FilesMergeInOrderAndSetOverridesFiles) {
  ScratchDir dir;
  const std::string a =
      write_yaml(dir, "a.yaml", "model:\n  d_model: 64\n  n_head: 4\ntrain:\n  lr: 1e-3\n");
  const std::string b = write_yaml(dir, "b.yaml", "model:\n  d_model: 96\nresidual:\n  mode: hc\n");
  Config ab = default_config();
  apply_config_file(ab, a);
  apply_config_file(ab, b);
  EXPECT_EQ(ab.model.d_model, 96);  // the later file wins
  EXPECT_EQ(ab.model.n_head, 4);    // the earlier file's other keys survive
  EXPECT_EQ(ab.train.lr, 1e-3);
  EXPECT_EQ(ab.residual.mode, "hc");
  Config ba = default_config();
  apply_config_file(ba, b);
  apply_config_file(ba, a);
  EXPECT_EQ(ba.model.d_model, 64);
  apply_config_override(ab, "model.d_model=32");
  EXPECT_EQ(ab.model.d_model, 32);
  EXPECT_EQ(ab.model.n_head, 4);
}

TEST(Config, SetParsesYamlScalars) {
  Config cfg = default_config();
  apply_config_override(cfg, "model.n_layer=6");
  apply_config_override(cfg, "train.lr=3e-4");
  apply_config_override(cfg, "train.min_lr=1.5E-5");
  apply_config_override(cfg, "model.tie_embeddings=false");
  apply_config_override(cfg, "residual.hc.dynamic=True");
  apply_config_override(cfg, "train.step_ratios=[0.5, 0.9]");
  apply_config_override(cfg, "residual.mode=baseline");
  apply_config_override(cfg, "run.name=my run");
  apply_config_override(cfg, "run.dir=a=b");          // only the first '=' separates
  apply_config_override(cfg, " model.seq_len = 64");  // spaces around the key and value
  EXPECT_EQ(cfg.model.n_layer, 6);
  EXPECT_EQ(cfg.train.lr, 3e-4);
  EXPECT_EQ(cfg.train.min_lr, 1.5e-5);
  EXPECT_FALSE(cfg.model.tie_embeddings);
  EXPECT_TRUE(cfg.residual.hc.dynamic);
  EXPECT_EQ(cfg.train.step_ratios, (std::vector<double>{0.5, 0.9}));
  EXPECT_EQ(cfg.residual.mode, "baseline");
  EXPECT_EQ(cfg.run.name, "my run");
  EXPECT_EQ(cfg.run.dir, "a=b");
  EXPECT_EQ(cfg.model.seq_len, 64);
  expect_mhc_error([&] { apply_config_override(cfg, "model.d_model"); }, {"model.d_model", "="});
  expect_mhc_error([&] { apply_config_override(cfg, "=5"); }, {"key.path=value"});
}

// ---- error messages -------------------------------------------------------------------

TEST(Config, UnknownKeyNamesFileKeyPathAndSuggestion) {
  ScratchDir dir;
  struct Case {
    std::string yaml, key, hint;
  };
  for (const Case& c : {Case{"model:\n  d_modle: 64\n", "model.d_modle", "model.d_model"},
                        Case{"train:\n  lrr: 0.1\n", "train.lrr", "train.lr"},
                        Case{"residual:\n  mhc:\n    sinkhorn_iter: 5\n",
                             "residual.mhc.sinkhorn_iter", "residual.mhc.sinkhorn_iters"},
                        // The right leaf under the wrong section is still a good hint.
                        Case{"train:\n  d_model: 64\n", "train.d_model", "model.d_model"}}) {
    SCOPED_TRACE(c.key);
    const std::string path = write_yaml(dir, "bad.yaml", c.yaml);
    Config cfg = default_config();
    expect_mhc_error([&] { apply_config_file(cfg, path); },
                     {path, "'" + c.key + "'", "did you mean '" + c.hint + "'"});
  }
  Config cfg = default_config();
  expect_mhc_error([&] { apply_config_override(cfg, "train.lrr=0.1"); },
                   {"--set", "'train.lrr'", "did you mean 'train.lr'"});
  // A section name is not a settable key.
  expect_mhc_error([&] { apply_config_override(cfg, "model=5"); }, {"'model'"});
  const std::string path = write_yaml(dir, "section.yaml", "modle:\n  d_model: 64\n");
  expect_mhc_error([&] { apply_config_file(cfg, path); }, {path, "'modle'"});
}

TEST(Config, WrongTypesNameTheKeyAndWhatWasExpected) {
  ScratchDir dir;
  struct Case {
    std::string yaml, key, expected;
  };
  for (const Case& c : {
           Case{"model:\n  d_model: abc\n", "model.d_model", "integer"},
           Case{"model:\n  d_model: 64.5\n", "model.d_model", "integer"},
           Case{"model:\n  d_model: [1, 2]\n", "model.d_model", "integer"},
           Case{"model:\n  d_model: {a: 1}\n", "model.d_model", "integer"},
           Case{"model:\n  d_model:\n", "model.d_model", "integer"},
           Case{"model:\n  tie_embeddings: yes\n", "model.tie_embeddings", "true or false"},
           Case{"model:\n  tie_embeddings: 1\n", "model.tie_embeddings", "true or false"},
           Case{"train:\n  lr: fast\n", "train.lr", "number"},
           Case{"train:\n  lr: [0.1]\n", "train.lr", "number"},
           Case{"train:\n  step_ratios: 0.5\n", "train.step_ratios", "list"},
           Case{"train:\n  step_ratios: [0.5, x]\n", "train.step_ratios", "number"},
           Case{"run:\n  name: {a: 1}\n", "run.name", "string"},
           Case{"model: 5\n", "model", "mapping"},
       }) {
    SCOPED_TRACE(c.yaml);
    const std::string path = write_yaml(dir, "bad.yaml", c.yaml);
    Config cfg = default_config();
    expect_mhc_error([&] { apply_config_file(cfg, path); }, {path, c.key, c.expected});
  }
  // What was found is named too.
  const std::string path = write_yaml(dir, "list.yaml", "model:\n  d_model: [1, 2]\n");
  Config cfg = default_config();
  expect_mhc_error([&] { apply_config_file(cfg, path); }, {"list"});
  const std::string path2 = write_yaml(dir, "map.yaml", "model:\n  d_model: {a: 1}\n");
  expect_mhc_error([&] { apply_config_file(cfg, path2); }, {"mapping"});
  expect_mhc_error([&] { apply_config_override(cfg, "model.tie_embeddings=yes"); },
                   {"model.tie_embeddings", "true or false", "'yes'"});
  expect_mhc_error([&] { apply_config_override(cfg, "model.d_model=3.5"); },
                   {"model.d_model", "integer", "'3.5'"});
}

// KNOWN BUG (left failing on purpose, see the report): parse_int in core/config_schema.cpp
// calls std::stoll on any digit string, so an integer outside int64 throws
// std::out_of_range("stoll") instead of an MhcError naming the file and key; the CLI
// then prints "internal error: stoll".
TEST(Config, OutOfRangeIntegerIsAConfigError) {
  ScratchDir dir;
  const std::string path = write_yaml(dir, "big.yaml", "model:\n  d_model: 99999999999999999999\n");
  Config cfg = default_config();
  expect_mhc_error([&] { apply_config_file(cfg, path); }, {path, "model.d_model", "integer"});
  expect_mhc_error([&] { apply_config_override(cfg, "train.steps=-99999999999999999999"); },
                   {"train.steps", "integer"});
}

TEST(Config, ChoiceValuesOutsideTheListAreRejectedWithTheChoices) {
  ScratchDir dir;
  const std::string path = write_yaml(dir, "mode.yaml", "residual:\n  mode: mhcc\n");
  Config cfg = default_config();
  expect_mhc_error([&] { apply_config_file(cfg, path); },
                   {path, "residual.mode", "'mhcc'", "baseline, hc, mhc", "did you mean 'mhc'"});
  expect_mhc_error([&] { apply_config_override(cfg, "train.schedule=linear"); },
                   {"train.schedule", "cosine, wsd, step"});
  expect_mhc_error([&] { apply_config_override(cfg, "model.mlp=relu"); },
                   {"model.mlp", "swiglu, gelu"});
  EXPECT_EQ(cfg.residual.mode, "mhc");  // a rejected value leaves the config alone
}

TEST(Config, InvalidYamlIsAnErrorWithALineNumber) {
  ScratchDir dir;
  // Line 3 breaks the indentation of the mapping opened on line 1.
  const std::string path = write_yaml(dir, "broken.yaml", "model:\n  d_model: 64\n n_head: 4\n");
  Config cfg = default_config();
  expect_mhc_error([&] { apply_config_file(cfg, path); }, {path, "line 3"});
  const std::string path2 =
      write_yaml(dir, "flow.yaml", "run:\n  seed: 1\ntrain:\n  step_ratios: [0.5, 0.9\n");
  const std::string msg =
      expect_mhc_error([&] { apply_config_file(cfg, path2); }, {path2, "line "});
  EXPECT_NE(msg.find("invalid YAML"), std::string::npos) << msg;
  expect_mhc_error([&] { apply_config_file(cfg, dir.file("missing.yaml")); }, {"missing.yaml"});
}

// ---- cross-field validation -----------------------------------------------------------

TEST(Config, ValidateRejectsInconsistentValues) {
  struct Case {
    std::vector<std::string> sets;   // --set assignments that make the config invalid
    std::vector<std::string> parts;  // what the message must name
  };
  const std::vector<Case> cases = {
      {{"model.d_model=100", "model.n_head=3"}, {"model.d_model", "100", "model.n_head", "3"}},
      {{"model.d_model=12", "model.n_head=4"}, {"model.d_model", "model.n_head", "3", "even"}},
      {{"residual.n=0"}, {"residual.n", "0"}},
      {{"residual.n=-2"}, {"residual.n", "-2"}},
      {{"residual.mhc.sinkhorn_iters=0"}, {"residual.mhc.sinkhorn_iters", "0"}},
      {{"train.lr=-1e-3"}, {"train.lr", "-0.001"}},
      {{"train.step_factors=[0.3]"}, {"train.step_ratios", "train.step_factors"}},
      {{"train.step_ratios=[0.9, 0.5]"}, {"train.step_ratios"}},
      {{"model.n_head=0"}, {"model.n_head"}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.sets.front());
    Config cfg = default_config();
    for (const auto& set : c.sets) apply_config_override(cfg, set);
    expect_mhc_error([&] { validate_config(cfg); }, c.parts);
    expect_mhc_error([&] { model_shape_from_config(cfg); }, c.parts);
  }
}

// ---- YAML round trip and hashes -------------------------------------------------------

Config unusual_config() {
  Config cfg = default_config();
  cfg.run.name = "weird: name #1";
  cfg.run.dir = "/tmp/with space";
  cfg.run.seed = 1234567890123;
  cfg.model.d_model = 96;
  cfg.model.n_head = 6;
  cfg.model.norm_eps = 1e-12;
  cfg.residual.mode = "hc";
  cfg.residual.hc.dynamic = true;
  cfg.train.lr = 0.1 + 0.2;  // 0.30000000000000004 needs all 17 digits
  cfg.train.min_lr = 1.0 / 3.0;
  cfg.train.step_ratios = {0.25, 0.75};
  cfg.train.step_factors = {1e-3, 2.5e-7};
  cfg.train.schedule = "wsd";
  return cfg;
}

void expect_round_trip(const Config& cfg) {
  const std::string yaml = config_to_yaml(cfg);
  Config back = default_config();
  apply_config_text(back, yaml, "round-trip");
  EXPECT_EQ(config_to_yaml(back), yaml);
  EXPECT_EQ(config_flat(back), config_flat(cfg));
  EXPECT_EQ(config_hash(back), config_hash(cfg));
}

TEST(Config, YamlRoundTripsExactly) {
  expect_round_trip(default_config());
  const Config cfg = unusual_config();
  expect_round_trip(cfg);
  Config back = default_config();
  apply_config_text(back, config_to_yaml(cfg), "round-trip");
  EXPECT_EQ(back.train.lr, cfg.train.lr);  // bit-exact doubles
  EXPECT_EQ(back.train.min_lr, cfg.train.min_lr);
  EXPECT_EQ(back.run.name, cfg.run.name);
  EXPECT_EQ(back.run.seed, cfg.run.seed);
  // Strings that look like other YAML types must come back as the same strings.
  for (const char* s : {"", "true", "yes", "null", "~", "123", "1e3", "[a]", "- x", "'q'"}) {
    SCOPED_TRACE(std::string("run.name = '") + s + "'");
    Config c = default_config();
    c.run.name = s;
    expect_round_trip(c);
  }
}

// A different value for `key` of the given schema type, as --set text.
std::string other_value(const ConfigKeyHelp& k) {
  if (k.type == "int") return std::to_string(std::stoll(k.default_value) + 7);
  if (k.type == "float") return k.default_value == "0.123456789" ? "0.5" : "0.123456789";
  if (k.type == "bool") return k.default_value == "true" ? "false" : "true";
  if (k.type == "string") return k.default_value + "_changed";
  if (k.type == "list of floats") return "[0.125, 0.625, 0.875]";
  // A choice "a|b|c": any other choice (none when there is only one).
  size_t start = 0;
  while (start <= k.type.size()) {
    size_t bar = k.type.find('|', start);
    if (bar == std::string::npos) bar = k.type.size();
    const std::string choice = k.type.substr(start, bar - start);
    if (choice != k.default_value) return choice;
    start = bar + 1;
  }
  return "";
}

TEST(Config, HashesTrackTheRightKeys) {
  const Config base = default_config();
  const uint64_t h = config_hash(base), mh = model_shape_hash(base);
  int changed = 0;
  for (const ConfigKeyHelp& k : config_key_help()) {
    const std::string value = other_value(k);
    if (value.empty()) continue;  // a single-choice key (residual.collapse)
    SCOPED_TRACE(k.key + " = " + value);
    Config cfg = base;
    apply_config_override(cfg, k.key + "=" + value);
    ASSERT_NE(flat_value(cfg, k.key), flat_value(base, k.key));
    EXPECT_NE(config_hash(cfg), h);
    const bool shape_key = k.key.rfind("model.", 0) == 0 || k.key.rfind("residual.", 0) == 0;
    if (shape_key)
      EXPECT_NE(model_shape_hash(cfg), mh);
    else
      EXPECT_EQ(model_shape_hash(cfg), mh);
    ++changed;
  }
  EXPECT_GT(changed, 40);
}

// ---- learning-rate schedules ----------------------------------------------------------

Config::Train schedule_config(const std::string& kind, int64_t steps, int64_t warmup) {
  Config::Train t = default_config().train;
  t.schedule = kind;
  t.steps = steps;
  t.warmup = warmup;
  t.lr = 1e-3;
  t.min_lr = 1e-4;
  return t;
}

TEST(Schedule, WarmupRampsLinearlyToThePeak) {
  for (const char* kind : {"cosine", "wsd", "step"}) {
    SCOPED_TRACE(kind);
    const Config::Train t = schedule_config(kind, 200, 10);
    for (int64_t s = 0; s < 10; ++s) EXPECT_NEAR(learning_rate(t, s), t.lr * (s + 1) / 10.0, 1e-18);
    EXPECT_NEAR(learning_rate(t, 10), t.lr, 1e-18);  // the first post-warmup step is the peak
  }
}

TEST(Schedule, CosineDecaysToMinLr) {
  const Config::Train t = schedule_config("cosine", 110, 10);
  const double span = t.lr - t.min_lr;
  EXPECT_DOUBLE_EQ(learning_rate(t, 10), t.lr);
  EXPECT_NEAR(learning_rate(t, 60), t.min_lr + 0.5 * span, 1e-15);  // halfway: cos(π/2) = 0
  EXPECT_NEAR(learning_rate(t, 35), t.min_lr + 0.5 * span * (1 + std::cos(M_PI / 4)), 1e-15);
  EXPECT_NEAR(learning_rate(t, 110), t.min_lr, 1e-15);
  // The last optimizer step (steps − 1, 0-based) is within a hair of min_lr.
  EXPECT_LE(learning_rate(t, 109) - t.min_lr, 1e-3 * span);
  for (int64_t s = 10; s < 110; ++s) EXPECT_LE(learning_rate(t, s + 1), learning_rate(t, s));
  EXPECT_NEAR(learning_rate(t, 500), t.min_lr, 1e-15);  // past the end it stays at min_lr
}

TEST(Schedule, WsdIsFlatThenDecaysLinearlyOverDecayFrac) {
  Config::Train t = schedule_config("wsd", 100, 10);
  t.decay_frac = 0.2;  // decay over steps 80 .. 100
  for (int64_t s = 10; s <= 80; ++s) EXPECT_EQ(learning_rate(t, s), t.lr) << s;
  for (int64_t s = 80; s <= 100; ++s)
    EXPECT_NEAR(learning_rate(t, s), t.lr + (t.min_lr - t.lr) * (s - 80) / 20.0, 1e-15) << s;
  EXPECT_NEAR(learning_rate(t, 150), t.min_lr, 1e-15);
}

TEST(Schedule, StepDropsAtTheRatiosByTheFactors) {
  Config::Train t = schedule_config("step", 1000, 0);
  t.step_ratios = {0.8, 0.9};
  t.step_factors = {0.316, 0.1};
  EXPECT_EQ(learning_rate(t, 0), t.lr);
  EXPECT_EQ(learning_rate(t, 799), t.lr);
  EXPECT_NEAR(learning_rate(t, 800), 0.316 * t.lr, 1e-18);
  EXPECT_NEAR(learning_rate(t, 899), 0.316 * t.lr, 1e-18);
  EXPECT_NEAR(learning_rate(t, 900), 0.1 * t.lr, 1e-18);  // factors are relative to the peak
  EXPECT_NEAR(learning_rate(t, 999), 0.1 * t.lr, 1e-18);
  t.warmup = 50;
  EXPECT_NEAR(learning_rate(t, 0), t.lr / 50, 1e-18);
  EXPECT_EQ(learning_rate(t, 50), t.lr);
}

}  // namespace
}  // namespace mhc
