#include "checkpoint.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "error.h"
#include "safetensors.h"
#include "text_util.h"

namespace mhc {
namespace fs = std::filesystem;
namespace {

// Vocabulary-sized tensors are stored with V rows (the padding rows are always zero).
std::vector<int64_t> stored_shape(const ParamInfo& p, const ModelShape& s) {
  std::vector<int64_t> shape = p.shape;
  if (p.name == "embed.weight" || p.name == "lm_head.weight") shape[0] = s.V;
  return shape;
}

StDType master_storage(const Backend& be) {
  return be.master_dtype() == DType::F64 ? StDType::F64 : StDType::F32;
}

// Adds every parameter-shaped slice of a flat host buffer under prefix + name.
void add_flat(SafetensorsWriter& w, const std::vector<double>& flat, const Model& model,
              const std::string& prefix, StDType dtype) {
  for (const auto& p : model.layout().params)
    w.add(prefix + p.name, stored_shape(p, model.shape()), flat.data() + p.offset, dtype);
}

// Reads every parameter under prefix + name into a flat host buffer (zeros elsewhere).
std::vector<double> read_flat(const SafetensorsFile& f, const Model& model, const std::string& prefix) {
  std::vector<double> flat(static_cast<size_t>(model.layout().total), 0.0);
  for (const auto& p : model.layout().params) {
    std::vector<double> v = f.read(prefix + p.name, stored_shape(p, model.shape()));
    std::copy(v.begin(), v.end(), flat.begin() + p.offset);
  }
  return flat;
}

std::string step_dir_name(int64_t step) { return fmt::format("step_{:08d}", step); }

void fsync_dir(const std::string& dir) {
  // Best effort: make the rename durable.
  std::FILE* f = std::fopen(dir.c_str(), "r");
  if (f) std::fclose(f);
}

}  // namespace

void write_weights(const std::string& path, Model& model, const Config& cfg,
                   const std::string& tokenizer, bool bf16) {
  SafetensorsWriter w;
  add_flat(w, model.get_params(), model, "", bf16 ? StDType::BF16 : master_storage(model.backend()));
  w.set_metadata("format", kFormatVersion);
  w.set_metadata("config", config_to_yaml(cfg));
  w.set_metadata("tokenizer", tokenizer);
  w.write(path);
}

void read_weights(const std::string& path, Model& model) {
  SafetensorsFile f(path);
  model.set_params(read_flat(f, model, ""));
}

CheckpointManager::CheckpointManager(std::string run_dir, int keep_last)
    : run_dir_(std::move(run_dir)), keep_last_(keep_last) {}

std::string CheckpointManager::save(Model& model, AdamW& opt, const TrainState& state,
                                    const Config& cfg, const std::string& tokenizer) {
  const std::string root = run_dir_ + "/checkpoints";
  const std::string name = step_dir_name(state.step);
  const std::string final_dir = root + "/" + name;
  const std::string tmp_dir = root + "/.tmp_" + name;
  std::error_code ec;
  fs::create_directories(root, ec);
  fs::remove_all(tmp_dir, ec);
  if (!fs::create_directories(tmp_dir, ec)) fail("cannot create checkpoint directory '{}'", tmp_dir);

  write_weights(tmp_dir + "/model.safetensors", model, cfg, tokenizer);
  {
    Backend& be = model.backend();
    std::vector<double> m(static_cast<size_t>(opt.m().numel)), v(static_cast<size_t>(opt.v().numel));
    be.download(opt.m(), m.data());
    be.download(opt.v(), v.data());
    SafetensorsWriter w;
    add_flat(w, m, model, "m.", master_storage(be));
    add_flat(w, v, model, "v.", master_storage(be));
    w.set_metadata("format", kFormatVersion);
    w.set_metadata("adam_steps", std::to_string(opt.steps_taken()));
    w.write(tmp_dir + "/optim_rank00000.safetensors");
  }
  nlohmann::ordered_json js;
  js["format"] = kFormatVersion;
  js["step"] = state.step;
  js["tokens_seen"] = state.tokens_seen;
  js["next_sample"] = state.next_sample;
  js["seed"] = state.seed;
  js["world_size"] = state.world_size;
  js["elapsed_s"] = state.elapsed_s;
  js["last_val_loss"] = state.last_val_loss;
  js["adam_steps"] = opt.steps_taken();
  js["config_hash"] = fmt::format("{:016x}", config_hash(cfg));
  js["model_hash"] = fmt::format("{:016x}", model_shape_hash(cfg));
  write_file_atomic(tmp_dir + "/state.json", js.dump(2) + "\n");
  write_file_atomic(tmp_dir + "/config.yaml", config_to_yaml(cfg));
  fsync_dir(tmp_dir);

  fs::remove_all(final_dir, ec);
  fs::rename(tmp_dir, final_dir, ec);
  if (ec) fail("cannot move checkpoint '{}' into place: {}", tmp_dir, ec.message());
  fsync_dir(root);
  write_file_atomic(root + "/latest", name + "\n");
  prune(name);
  return final_dir;
}

std::string CheckpointManager::latest() const {
  const std::string file = run_dir_ + "/checkpoints/latest";
  if (!fs::exists(file)) return "";
  return run_dir_ + "/checkpoints/" + trim(read_text_file(file));
}

void CheckpointManager::prune(const std::string& keep) const {
  if (keep_last_ <= 0) return;
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(run_dir_ + "/checkpoints"))
    if (e.is_directory() && starts_with(e.path().filename().string(), "step_"))
      names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  const int excess = static_cast<int>(names.size()) - keep_last_;
  for (int i = 0; i < excess; ++i)
    if (names[i] != keep) fs::remove_all(run_dir_ + "/checkpoints/" + names[i]);
}

std::string resolve_checkpoint(const std::string& path) {
  if (fs::exists(path + "/state.json")) return path;
  for (const std::string& root : {path + "/checkpoints", path}) {
    const std::string latest = root + "/latest";
    if (fs::exists(latest)) {
      const std::string dir = root + "/" + trim(read_text_file(latest));
      if (!fs::exists(dir + "/state.json"))
        fail("'{}' names '{}', which is not a complete checkpoint", latest, dir);
      return dir;
    }
  }
  if (!fs::exists(path)) fail("checkpoint path '{}' does not exist", path);
  fail("no checkpoint found in '{}' (expected state.json or checkpoints/latest)", path);
}

Config checkpoint_config(const std::string& ckpt_dir) {
  Config cfg = default_config();
  apply_config_text(cfg, read_text_file(ckpt_dir + "/config.yaml"), ckpt_dir + "/config.yaml");
  return cfg;
}

TrainState read_train_state(const std::string& ckpt_dir) {
  const std::string path = ckpt_dir + "/state.json";
  nlohmann::json js;
  try {
    js = nlohmann::json::parse(read_text_file(path));
  } catch (const nlohmann::json::exception& e) {
    fail("'{}' is corrupt: {}", path, e.what());
  }
  TrainState s;
  try {
    if (js.at("format").get<std::string>() != kFormatVersion)
      fail("'{}' has format '{}', expected '{}'", path, js.at("format").get<std::string>(), kFormatVersion);
    s.step = js.at("step").get<int64_t>();
    s.tokens_seen = js.at("tokens_seen").get<int64_t>();
    s.next_sample = js.at("next_sample").get<int64_t>();
    s.seed = js.at("seed").get<uint64_t>();
    s.world_size = js.at("world_size").get<int>();
    s.elapsed_s = js.at("elapsed_s").get<double>();
    s.last_val_loss = js.at("last_val_loss").get<double>();
  } catch (const nlohmann::json::exception& e) {
    fail("'{}' is missing fields: {}", path, e.what());
  }
  return s;
}

void validate_checkpoint(const std::string& ckpt_dir, const Config& cfg) {
  const Config saved = checkpoint_config(ckpt_dir);
  const auto diffs = config_differences(saved, cfg, {"model.", "residual."});
  if (!diffs.empty()) {
    std::string list;
    for (const auto& d : diffs) list += (list.empty() ? "" : "; ") + d;
    fail("cannot resume from '{}': it holds a different model ({} [checkpoint vs config])",
         ckpt_dir, list);
  }
  read_train_state(ckpt_dir);
  SafetensorsFile weights(ckpt_dir + "/model.safetensors");
  SafetensorsFile optim(ckpt_dir + "/optim_rank00000.safetensors");
}

TrainState restore_checkpoint(const std::string& ckpt_dir, const Config& cfg, Model& model,
                              AdamW& opt) {
  validate_checkpoint(ckpt_dir, cfg);
  TrainState state = read_train_state(ckpt_dir);
  read_weights(ckpt_dir + "/model.safetensors", model);
  SafetensorsFile f(ckpt_dir + "/optim_rank00000.safetensors");
  Backend& be = model.backend();
  std::vector<double> m = read_flat(f, model, "m."), v = read_flat(f, model, "v.");
  be.upload(opt.m(), m.data());
  be.upload(opt.v(), v.data());
  const std::string adam_steps = f.metadata("adam_steps");
  opt.set_steps_taken(adam_steps.empty() ? state.step : std::stoll(adam_steps));
  return state;
}

}  // namespace mhc
