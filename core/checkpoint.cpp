#include "checkpoint.h"

#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cerrno>
#include <cstring>
#include <climits>
#include <filesystem>
#include <fstream>

#include "checksum.h"
#include "dist/agree.h"
#include "dist/grad_reducer.h"
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

constexpr const char* kShardLayout = "zero1-flat";

std::string optim_file(const std::string& dir, int rank) {
  return fmt::format("{}/optim_rank{:05d}.safetensors", dir, rank);
}

int64_t metadata_int(const SafetensorsFile& f, const std::string& key) {
  const std::string v = f.metadata(key);
  if (v.empty()) fail("'{}' lacks the metadata '{}'", f.path(), key);
  int64_t out = 0;
  const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
  if (ec != std::errc() || end != v.data() + v.size())  // "12abc" is damage, not 12
    fail("'{}' has a malformed metadata '{}': '{}' (an integer is expected)", f.path(), key, v);
  return out;
}

// Number of optimizer files a checkpoint has (1 unless it was saved with ZeRO).
int optimizer_file_count(const std::string& dir) {
  SafetensorsFile f(optim_file(dir, 0));
  if (f.metadata("layout") != kShardLayout) return 1;
  const int64_t w = metadata_int(f, "world_size");
  if (w < 1) fail("'{}' has world_size {}", f.path(), w);
  return static_cast<int>(w);
}

void write_optimizer(const std::string& dir, Model& model, AdamW& opt, int rank, int world) {
  Backend& be = model.backend();
  const int64_t n = opt.m().numel;
  std::vector<double> m(static_cast<size_t>(n)), v(static_cast<size_t>(n));
  if (n > 0) {
    be.download(opt.m(), m.data());
    be.download(opt.v(), v.data());
  }
  SafetensorsWriter w;
  if (opt.sharded()) {
    w.add("m", {n}, m.data(), master_storage(be));
    w.add("v", {n}, v.data(), master_storage(be));
    w.set_metadata("layout", kShardLayout);
    w.set_metadata("shard_begin", std::to_string(opt.shard_begin()));
    w.set_metadata("shard_end", std::to_string(opt.shard_end()));
    w.set_metadata("total", std::to_string(model.layout().total));
    w.set_metadata("world_size", std::to_string(world));
  } else {
    add_flat(w, m, model, "m.", master_storage(be));
    add_flat(w, v, model, "v.", master_storage(be));
  }
  w.set_metadata("format", kFormatVersion);
  w.set_metadata("adam_steps", std::to_string(opt.steps_taken()));
  w.write(optim_file(dir, rank));
}

constexpr const char* kStateChecksumKey = "state_xxh3";

// state.json carries a checksum of its own text (without that field), so a flipped byte in
// it is caught like one in the tensor files; the file must also be exactly our dump, so
// even a changed space is seen.
std::string sealed_state_json(nlohmann::ordered_json js) {
  js.erase(kStateChecksumKey);
  const std::string body = js.dump(2);
  js[kStateChecksumKey] = xxh3_hex(body);
  return js.dump(2) + "\n";
}

nlohmann::ordered_json parse_sealed_state(const std::string& text, const std::string& path) {
  nlohmann::ordered_json js;
  try {
    js = nlohmann::ordered_json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail("'{}' is corrupt: {}", path, e.what());
  }
  if (!js.is_object()) fail("'{}' is corrupt: not a JSON object", path);
  if (!js.contains(kStateChecksumKey) || !js[kStateChecksumKey].is_string())
    fail("'{}' has no checksum ({}): written by an older mhc or damaged", path, kStateChecksumKey);
  if (sealed_state_json(js) != text)
    fail("'{}' is damaged: its checksum does not match its contents", path);
  return js;
}

nlohmann::ordered_json read_sealed_state(const std::string& path) {
  return parse_sealed_state(read_text_file(path), path);
}

// Makes the renames inside `dir` durable (best effort: a file system that cannot sync a
// directory still has the renames, only not yet on disk).
void fsync_dir(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

// Moves the complete checkpoint `tmp_dir` to `final_dir`. A re-save of the same step
// (final_dir exists: a stop signal at a checkpoint step, or a resumed run's final save)
// swaps the two atomically, so a crash at any moment leaves a complete checkpoint of that
// step under its name; the old one is removed afterwards. Where the file system cannot
// exchange (EINVAL/ENOSYS), the old one is removed first: the previous step's checkpoint
// (and the complete tmp_dir) remain.
void publish_directory(const std::string& tmp_dir, const std::string& final_dir) {
  std::error_code ec;
  if (fs::exists(final_dir, ec)) {
    if (::renameat2(AT_FDCWD, tmp_dir.c_str(), AT_FDCWD, final_dir.c_str(), RENAME_EXCHANGE) == 0) {
      fs::remove_all(tmp_dir, ec);  // now the old checkpoint
      if (ec) fail("cannot remove the replaced checkpoint '{}': {}", tmp_dir, ec.message());
      return;
    }
    if (errno != EINVAL && errno != ENOSYS)
      fail("cannot move checkpoint '{}' into place: {}", tmp_dir, std::strerror(errno));
    fs::remove_all(final_dir, ec);
  }
  fs::rename(tmp_dir, final_dir, ec);
  if (ec) fail("cannot move checkpoint '{}' into place: {}", tmp_dir, ec.message());
}

}  // namespace

void write_weights(const std::string& path, Model& model, const Config& cfg,
                   const std::string& tokenizer, bool bf16) {
  SafetensorsWriter w;
  add_flat(w, model.get_params(), model, "", bf16 ? StDType::BF16 : master_storage(model.backend()));
  w.set_metadata("format", kFormatVersion);
  w.set_metadata("config", config_to_yaml(cfg));
  w.set_metadata("tokenizer", tokenizer);
  // How to read the connection tensors (φ's res columns, static mHC, the collapse).
  for (const auto& [key, value] : connection_metadata(cfg)) w.set_metadata(key, value);
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
  SingleProcessComm single;
  return save(model, opt, state, cfg, tokenizer, single);
}

std::string CheckpointManager::save(Model& model, AdamW& opt, const TrainState& state,
                                    const Config& cfg, const std::string& tokenizer,
                                    Communicator& comm) {
  const std::string root = run_dir_ + "/checkpoints";
  const std::string name = step_dir_name(state.step);
  const std::string final_dir = root + "/" + name;
  const std::string tmp_dir = root + "/.tmp_" + name;
  const bool root_rank = comm.rank() == 0;
  int files = 1;
  {
    double sharded = opt.sharded() ? 1.0 : 0.0;
    comm.all_reduce_sum_host(&sharded, 1);
    if (sharded > 0) files = comm.size();
  }
  // 1. Rank 0 prepares an empty temporary directory.
  dist::agree(comm, [&] {
    if (!root_rank) return;
    std::error_code ec;
    fs::create_directories(root, ec);
    fs::remove_all(tmp_dir, ec);
    if (!fs::create_directories(tmp_dir, ec)) fail("cannot create checkpoint directory '{}'", tmp_dir);
  });
  // 2. Every rank writes its part (each file is written atomically and flushed).
  dist::agree(comm, [&] {
    if (opt.sharded() || root_rank) write_optimizer(tmp_dir, model, opt, opt.sharded() ? comm.rank() : 0, comm.size());
    if (!root_rank) return;
    write_weights(tmp_dir + "/model.safetensors", model, cfg, tokenizer);
    write_file_atomic(tmp_dir + "/config.yaml", config_to_yaml(cfg));
  });
  // 3. Everything is on disk: rank 0 publishes the checkpoint.
  dist::agree(comm, [&] {
    if (!root_rank) return;
    for (int r = 0; r < files; ++r)
      if (!fs::exists(optim_file(tmp_dir, r)))
        fail("checkpoint '{}' is missing {} after every rank wrote", tmp_dir, optim_file(tmp_dir, r));
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
    js["optimizer_files"] = files;
    js["config_hash"] = fmt::format("{:016x}", config_hash(cfg));
    js["model_hash"] = fmt::format("{:016x}", model_shape_hash(cfg));
    // Sizes and checksums of what is on disk now (read back: what a resume will read).
    nlohmann::ordered_json sums;
    std::vector<std::string> names = {"model.safetensors", "config.yaml"};
    for (int r = 0; r < files; ++r) names.push_back(fs::path(optim_file(tmp_dir, r)).filename().string());
    for (const auto& f : names) {
      const FileDigest d = digest_file(tmp_dir + "/" + f);
      sums[f] = {{"bytes", d.bytes}, {"xxh3", d.xxh3}};
    }
    js["files"] = sums;
    write_file_atomic(tmp_dir + "/state.json", sealed_state_json(js));
    fsync_dir(tmp_dir);
    publish_directory(tmp_dir, final_dir);
    fsync_dir(root);
    write_file_atomic(root + "/latest", name + "\n");
    prune(name);
  });
  return final_dir;
}

std::string CheckpointManager::latest() const {
  const std::string file = run_dir_ + "/checkpoints/latest";
  if (!fs::exists(file)) return "";
  return run_dir_ + "/checkpoints/" + trim(read_text_file(file));
}

std::vector<std::string> CheckpointManager::step_dirs() const {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(run_dir_ + "/checkpoints", ec))
    if (e.is_directory(ec) && starts_with(e.path().filename().string(), "step_"))
      names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

bool CheckpointManager::has_any() const { return !latest().empty() || !step_dirs().empty(); }

std::string CheckpointManager::latest_intact(std::vector<std::string>& skipped) const {
  // `latest` first (what an undisturbed run would resume), then the others newest first.
  std::vector<std::string> candidates;
  std::string named;
  try {
    named = latest();
  } catch (const MhcError& e) {
    skipped.push_back(e.what());
  }
  if (!named.empty()) candidates.push_back(named);
  const std::vector<std::string> names = step_dirs();
  for (auto it = names.rbegin(); it != names.rend(); ++it) {
    const std::string dir = run_dir_ + "/checkpoints/" + *it;
    if (dir != named) candidates.push_back(dir);
  }
  for (const auto& dir : candidates) {
    try {
      verify_checkpoint_files(dir);
      return dir;
    } catch (const MhcError& e) {
      // Named first: some reasons (a missing state.json) name only a file inside it.
      skipped.push_back(fs::path(dir).filename().string() + " (" + e.what() + ")");
    }
  }
  return "";
}

void CheckpointManager::prune(const std::string& keep) const {
  if (keep_last_ <= 0) return;
  const std::vector<std::string> names = step_dirs();
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

std::string seal_state_text(const std::string& json_text) {
  try {
    return sealed_state_json(nlohmann::ordered_json::parse(json_text));
  } catch (const nlohmann::json::exception& e) {
    fail("not JSON: {}", e.what());
  }
}

TrainState read_train_state(const std::string& ckpt_dir) {
  const std::string path = ckpt_dir + "/state.json";
  return parse_train_state(read_text_file(path), path);
}

TrainState parse_train_state(const std::string& text, const std::string& path) {
  const nlohmann::ordered_json js = parse_sealed_state(text, path);
  TrainState s;
  try {
    if (js.at("format").get<std::string>() != kFormatVersion)
      fail("'{}' has format '{}', expected '{}'", path, js.at("format").get<std::string>(), kFormatVersion);
    // Each number's kind and range is checked first: nlohmann converts a float, a negative
    // or an out-of-range number to an integer type without a word (undefined for floats).
    const auto integer = [&](const char* key, uint64_t max) -> uint64_t {
      const nlohmann::json& v = js.at(key);
      if (!v.is_number_integer() || (!v.is_number_unsigned() && v.get<int64_t>() < 0) ||
          v.get<uint64_t>() > max)
        fail("'{}' has {} = {}: expected an integer in [0, {}]", path, key, v.dump(), max);
      return v.get<uint64_t>();
    };
    const auto number = [&](const char* key) -> double {
      const nlohmann::json& v = js.at(key);
      if (!v.is_number()) fail("'{}' has {} = {}: expected a number", path, key, v.dump());
      return v.get<double>();
    };
    s.step = static_cast<int64_t>(integer("step", INT64_MAX));
    s.tokens_seen = static_cast<int64_t>(integer("tokens_seen", INT64_MAX));
    s.next_sample = static_cast<int64_t>(integer("next_sample", INT64_MAX));
    s.seed = integer("seed", UINT64_MAX);
    s.world_size = static_cast<int>(integer("world_size", INT_MAX));
    if (s.world_size < 1) fail("'{}' has world_size = 0: expected at least 1", path);
    s.elapsed_s = number("elapsed_s");
    s.last_val_loss = number("last_val_loss");
  } catch (const nlohmann::json::exception& e) {
    fail("'{}' is missing fields: {}", path, e.what());
  }
  return s;
}

void verify_checkpoint_files(const std::string& ckpt_dir) {
  const std::string state_path = ckpt_dir + "/state.json";
  const nlohmann::ordered_json js = read_sealed_state(state_path);
  if (!js.contains("files") || !js["files"].is_object() || !js["files"].contains("model.safetensors"))
    fail("'{}' lists no file checksums", state_path);
  for (const auto& [name, want] : js["files"].items()) {
    if (name.find('/') != std::string::npos || name.empty() || name[0] == '.')
      fail("'{}' names an unexpected file '{}'", state_path, name);
    const std::string path = ckpt_dir + "/" + name;
    std::error_code ec;
    if (!fs::is_regular_file(path, ec))
      fail("checkpoint '{}' is damaged: {} is missing", ckpt_dir, name);
    int64_t bytes = -1;
    std::string sum;
    try {
      // A float would convert with undefined behaviour: only an integer is a size.
      const auto& b = want.at("bytes");
      if (!b.is_number_integer()) fail("'{}' has a malformed entry for {}", state_path, name);
      bytes = b.get<int64_t>();
      sum = want.at("xxh3").get<std::string>();
    } catch (const nlohmann::json::exception&) {
      fail("'{}' has a malformed entry for {}", state_path, name);
    }
    const FileDigest d = digest_file(path);
    if (d.bytes != bytes)
      fail("checkpoint '{}' is damaged: {} is {} bytes, state.json records {}", ckpt_dir, name,
           d.bytes, bytes);
    if (d.xxh3 != sum)
      fail("checkpoint '{}' is damaged: {} has checksum {}, state.json records {}", ckpt_dir, name,
           d.xxh3, sum);
  }
}

void validate_checkpoint(const std::string& ckpt_dir, const Config& cfg) {
  verify_checkpoint_files(ckpt_dir);
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
  const int files = optimizer_file_count(ckpt_dir);
  for (int r = 1; r < files; ++r)
    if (!fs::exists(optim_file(ckpt_dir, r)))
      fail("checkpoint '{}' is incomplete: {} is missing", ckpt_dir, optim_file(ckpt_dir, r));
}

OptimizerMoments read_optimizer_moments(const std::string& ckpt_dir, const Model& model,
                                        int64_t begin, int64_t end) {
  const int64_t total = model.layout().total;
  MHC_CHECK(0 <= begin && begin <= end && end <= total);
  OptimizerMoments out;
  out.m.assign(static_cast<size_t>(end - begin), 0.0);
  out.v.assign(static_cast<size_t>(end - begin), 0.0);
  SafetensorsFile first(optim_file(ckpt_dir, 0));
  const std::string steps = first.metadata("adam_steps");
  if (!steps.empty()) out.adam_steps = metadata_int(first, "adam_steps");
  if (first.metadata("layout") != kShardLayout) {
    const std::vector<double> m = read_flat(first, model, "m."), v = read_flat(first, model, "v.");
    std::copy(m.begin() + begin, m.begin() + end, out.m.begin());
    std::copy(v.begin() + begin, v.begin() + end, out.v.begin());
    return out;
  }
  const int world = optimizer_file_count(ckpt_dir);
  if (metadata_int(first, "total") != total)
    fail("'{}' holds optimizer shards of {} elements, but the model has {}", first.path(),
         metadata_int(first, "total"), total);
  const std::vector<dist::Range> saved = dist::shard_ranges(total, world);
  for (int r = 0; r < world; ++r) {
    const int64_t lo = std::max(begin, saved[r].begin), hi = std::min(end, saved[r].end);
    if (lo >= hi) continue;
    SafetensorsFile f(optim_file(ckpt_dir, r));
    const int64_t fb = metadata_int(f, "shard_begin"), fe = metadata_int(f, "shard_end");
    if (fb != saved[r].begin || fe != saved[r].end)
      fail("'{}' holds elements [{}, {}), expected [{}, {})", f.path(), fb, fe, saved[r].begin,
           saved[r].end);
    const std::vector<double> m = f.read("m", {fe - fb}), v = f.read("v", {fe - fb});
    std::copy(m.begin() + (lo - fb), m.begin() + (hi - fb), out.m.begin() + (lo - begin));
    std::copy(v.begin() + (lo - fb), v.begin() + (hi - fb), out.v.begin() + (lo - begin));
  }
  return out;
}

TrainState restore_checkpoint(const std::string& ckpt_dir, const Config& cfg, Model& model,
                              AdamW& opt) {
  validate_checkpoint(ckpt_dir, cfg);
  TrainState state = read_train_state(ckpt_dir);
  read_weights(ckpt_dir + "/model.safetensors", model);
  const OptimizerMoments mv = read_optimizer_moments(ckpt_dir, model, opt.shard_begin(), opt.shard_end());
  Backend& be = model.backend();
  if (opt.m().numel > 0) {
    be.upload(opt.m(), mv.m.data());
    be.upload(opt.v(), mv.v.data());
  }
  opt.set_steps_taken(mv.adam_steps < 0 ? state.step : mv.adam_steps);
  return state;
}

}  // namespace mhc
