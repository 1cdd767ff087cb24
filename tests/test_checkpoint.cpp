// safetensors I/O (core/safetensors.h) and run-directory checkpoints (core/checkpoint.h):
// exact round trips, clear MhcErrors for truncated or corrupt files, atomic saves that a
// crash cannot leave half-visible, pruning, and refusing to resume a different model.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include "bf16.h"
#include "checkpoint.h"
#include "cpu/cpu_backend.h"
#include "safetensors.h"
#include "test_support.h"

namespace mhc {
namespace {

namespace fs = std::filesystem;
using testing::expect_mhc_error;
using testing::read_file_bytes;
using testing::ScratchDir;
using testing::write_file_bytes;

// ---- safetensors --------------------------------------------------------------------

// A file with tensors of every dtype and some metadata; returns the values written.
struct Written {
  std::vector<double> f32, f64, bf16, scalar;
  std::vector<int64_t> i64;
};

Written write_sample(const std::string& path) {
  Written w;
  w.f32 = testing::random_vector(6, 1);
  w.f64 = testing::random_vector(5, 2);
  w.bf16 = testing::random_vector(8, 3, 10.0);
  w.bf16[0] = 1.5, w.bf16[1] = -0.25, w.bf16[2] = 3.0;  // exactly representable in bf16
  w.scalar = {std::acos(-1.0)};
  w.i64 = {0, -1, (int64_t{1} << 53) + 1, std::numeric_limits<int64_t>::max(),
           std::numeric_limits<int64_t>::min()};
  SafetensorsWriter st;
  st.add("a.f32", {2, 3}, w.f32.data(), StDType::F32);
  st.add("b.f64", {5}, w.f64.data(), StDType::F64);
  st.add("c.bf16", {2, 2, 2}, w.bf16.data(), StDType::BF16);
  st.add("d.scalar", {}, w.scalar.data(), StDType::F64);
  st.add_i64("e.i64", w.i64);
  st.set_metadata("format", "test");
  st.set_metadata("text", "line 1\nline \"2\" ü\t{json: [1]}");
  st.write(path);
  return w;
}

TEST(Safetensors, RoundTripsEveryDtypeAndMetadata) {
  ScratchDir dir;
  const std::string path = dir.file("t.safetensors");
  const Written w = write_sample(path);
  SafetensorsFile f(path);
  EXPECT_EQ(f.tensors().size(), 5u);
  EXPECT_EQ(f.info("a.f32").shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(f.info("c.bf16").shape, (std::vector<int64_t>{2, 2, 2}));
  EXPECT_TRUE(f.info("d.scalar").shape.empty());
  const std::vector<double> f32 = f.read("a.f32", {2, 3});
  for (size_t i = 0; i < f32.size(); ++i) EXPECT_EQ(f32[i], static_cast<float>(w.f32[i]));
  EXPECT_EQ(f.read("b.f64", {5}), w.f64);  // bit-exact
  EXPECT_EQ(f.read("d.scalar", {}), w.scalar);
  const std::vector<double> bf = f.read("c.bf16");
  for (size_t i = 0; i < bf.size(); ++i) {
    // Round to nearest: within half a bf16 ulp (8 significant bits), and a bf16 value.
    EXPECT_LE(std::fabs(bf[i] - w.bf16[i]), std::ldexp(std::fabs(w.bf16[i]), -8)) << i;
    const float v = static_cast<float>(bf[i]);
    uint32_t bits;
    std::memcpy(&bits, &v, 4);
    EXPECT_EQ(bits & 0xffffu, 0u) << i;
  }
  EXPECT_EQ(bf[0], 1.5);
  EXPECT_EQ(bf[1], -0.25);
  EXPECT_EQ(bf[2], 3.0);
  EXPECT_EQ(f.read_i64("e.i64"), w.i64);
  EXPECT_EQ(f.metadata("format"), "test");
  EXPECT_EQ(f.metadata("text"), "line 1\nline \"2\" ü\t{json: [1]}");
  EXPECT_EQ(f.metadata("absent"), "");
  expect_mhc_error([&] { f.read("nope"); }, {path, "nope"});
  expect_mhc_error([&] { f.read_i64("a.f32"); }, {"a.f32"});
}

TEST(Safetensors, TruncatedFilesAreNamedErrors) {
  ScratchDir dir;
  const std::string path = dir.file("t.safetensors");
  write_sample(path);
  const std::string bytes = read_file_bytes(path);
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes.data(), 8);
  ASSERT_LT(8 + header_len, bytes.size());
  struct Cut {
    const char* where;
    size_t size;
  };
  for (const Cut& c :
       {Cut{"empty", 0}, Cut{"inside the length", 4}, Cut{"after the length", 8},
        Cut{"inside the header", 8 + header_len / 2}, Cut{"end of the header", 8 + header_len},
        Cut{"inside the data", bytes.size() - 3}, Cut{"one byte short", bytes.size() - 1}}) {
    SCOPED_TRACE(c.where);
    const std::string cut = dir.file("cut.safetensors");
    write_file_bytes(cut, bytes.substr(0, c.size));
    const std::string msg = expect_mhc_error([&] { SafetensorsFile f(cut); }, {cut});
    EXPECT_TRUE(msg.find("truncated") != std::string::npos ||
                msg.find("corrupt") != std::string::npos)
        << msg;
  }
  expect_mhc_error([&] { SafetensorsFile f(dir.file("missing.safetensors")); },
                   {"missing.safetensors"});
}

// Replaces the JSON header with `json` (space-padded to 8 bytes), keeping the data.
std::string with_header(const std::string& bytes, std::string json) {
  uint64_t old_len = 0;
  std::memcpy(&old_len, bytes.data(), 8);
  while (json.size() % 8) json += ' ';
  uint64_t len = json.size();
  std::string out(reinterpret_cast<const char*>(&len), 8);
  return out + json + bytes.substr(8 + old_len);
}

TEST(Safetensors, CorruptHeadersAreNamedErrors) {
  ScratchDir dir;
  const std::string path = dir.file("t.safetensors");
  SafetensorsWriter st;
  const std::vector<double> v = {1, 2, 3, 4, 5, 6};
  st.add("w", {2, 3}, v.data(), StDType::F32);
  st.write(path);
  const std::string bytes = read_file_bytes(path);
  const std::string bad = dir.file("bad.safetensors");
  struct Case {
    const char* what;
    std::string json;
  };
  for (const Case& c : {
           Case{"not JSON", "{\"w\": {\"dtype\": \"F32\", \"shape\": [2, 3], "},
           Case{"unknown dtype",
                R"({"w": {"dtype": "F16", "shape": [2, 3], "data_offsets": [0, 24]}})"},
           Case{"offsets disagree with the shape",
                R"({"w": {"dtype": "F32", "shape": [3, 3], "data_offsets": [0, 24]}})"},
           Case{"offsets past the data",
                R"({"w": {"dtype": "F32", "shape": [2, 4], "data_offsets": [0, 32]}})"},
           Case{"missing field", R"({"w": {"dtype": "F32", "shape": [2, 3]}})"},
           Case{"entry of the wrong type", R"({"w": 5})"},
       }) {
    SCOPED_TRACE(c.what);
    write_file_bytes(bad, with_header(bytes, c.json));
    expect_mhc_error([&] { SafetensorsFile f(bad); }, {bad});
  }
  // Garbage bytes in place of the header keep the length but break the JSON.
  std::string garbled = bytes;
  garbled[8] = '\x01';
  write_file_bytes(bad, garbled);
  expect_mhc_error([&] { SafetensorsFile f(bad); }, {bad, "corrupt"});
}

// KNOWN BUG (left failing on purpose, see the report): a header that is valid JSON but
// not an object escapes as a raw nlohmann::json exception instead of an MhcError, because
// SafetensorsFile's constructor (core/safetensors.cpp) calls it.key() on the header's
// iterator outside its try block.
TEST(Safetensors, NonObjectHeaderIsANamedError) {
  ScratchDir dir;
  const std::string path = dir.file("t.safetensors");
  SafetensorsWriter st;
  const std::vector<double> v = {1, 2};
  st.add("w", {2}, v.data(), StDType::F32);
  st.write(path);
  const std::string bytes = read_file_bytes(path);
  for (const char* json : {"[1, 2, 3]", "42", R"({"__metadata__": "oops"})"}) {
    SCOPED_TRACE(json);
    const std::string bad = dir.file("bad.safetensors");
    write_file_bytes(bad, with_header(bytes, json));
    expect_mhc_error([&] { SafetensorsFile f(bad); }, {bad});
  }
}

TEST(Safetensors, ShapeMismatchNamesTheTensorAndBothShapes) {
  ScratchDir dir;
  const std::string path = dir.file("t.safetensors");
  write_sample(path);
  SafetensorsFile f(path);
  expect_mhc_error([&] { f.read("a.f32", {3, 2}); }, {path, "a.f32", "[2, 3]", "[3, 2]"});
  expect_mhc_error([&] { f.read("b.f64", {5, 1}); }, {"b.f64", "[5]", "[5, 1]"});
}

// ---- checkpoints --------------------------------------------------------------------

constexpr int kB = 2;

// A tiny float model with its optimizer, trained for `steps` steps.
struct Trained {
  Trained(const Config& cfg, uint64_t seed)
      : shape(model_shape_from_config(cfg)),
        layout(ParamLayout::build(shape, cfg)),
        backend(1),
        model(backend, shape, layout, kB),
        opt(model, OptimizerSettings{}) {
    model.init_weights(seed);
  }
  void train(int steps) {
    const auto in = testing::random_tokens(kB * shape.T, shape.V, 61);
    const auto tg = testing::random_tokens(kB * shape.T, shape.V, 62);
    for (int s = 0; s < steps; ++s) {
      model.zero_grads();
      model.forward(in.data(), tg.data(), kB, shape.T, 1.0f);
      model.backward();
      opt.step(1e-2, opt.grad_norm());
    }
  }
  std::vector<double> host(Tensor t) {
    std::vector<double> v(static_cast<size_t>(t.numel));
    backend.download(t, v.data());
    return v;
  }
  ModelShape shape;
  ParamLayout layout;
  CpuBackend<float> backend;
  Model model;
  AdamW opt;
};

TrainState state_at(int64_t step) {
  TrainState s;
  s.step = step;
  s.tokens_seen = 1000 * step + 7;
  s.next_sample = 31 * step + 1;
  s.seed = (uint64_t{1} << 63) + 5;  // beyond int64
  s.world_size = 1;
  s.elapsed_s = 12.345678901234567 * step;
  s.last_val_loss = 1.0 / 3.0;
  return s;
}

Config checkpoint_cfg(const std::string& mode = "mhc", int n = 2) {
  return testing::tiny_config(mode, n);
}

TEST(Checkpoint, SaveThenRestoreIsBitExact) {
  ScratchDir dir;
  const Config cfg = checkpoint_cfg();
  Trained a(cfg, 7);
  a.train(3);
  CheckpointManager mgr(dir.path(), 2);
  const std::string ckpt = mgr.save(a.model, a.opt, state_at(3), cfg, "byte");
  EXPECT_EQ(fs::path(ckpt).filename().string(), "step_00000003");

  Trained b(cfg, 99);  // other weights, zero moments
  ASSERT_NE(b.model.get_params(), a.model.get_params());
  const TrainState st = restore_checkpoint(ckpt, cfg, b.model, b.opt);
  EXPECT_EQ(b.model.get_params(), a.model.get_params());
  EXPECT_EQ(b.host(b.opt.m()), a.host(a.opt.m()));
  EXPECT_EQ(b.host(b.opt.v()), a.host(a.opt.v()));
  EXPECT_EQ(b.opt.steps_taken(), a.opt.steps_taken());
  const TrainState want = state_at(3);
  EXPECT_EQ(st.step, want.step);
  EXPECT_EQ(st.tokens_seen, want.tokens_seen);
  EXPECT_EQ(st.next_sample, want.next_sample);
  EXPECT_EQ(st.seed, want.seed);
  EXPECT_EQ(st.world_size, want.world_size);
  EXPECT_EQ(st.elapsed_s, want.elapsed_s);
  EXPECT_EQ(st.last_val_loss, want.last_val_loss);
  EXPECT_EQ(config_to_yaml(checkpoint_config(ckpt)), config_to_yaml(cfg));
  // Both continue identically.
  a.train(1);
  b.train(1);
  EXPECT_EQ(b.model.get_params(), a.model.get_params());
  // A config differing only in training keys may resume.
  Config other = cfg;
  other.train.lr = 0.5;
  other.train.steps = 77;
  Trained c(cfg, 3);
  EXPECT_NO_THROW(restore_checkpoint(ckpt, other, c.model, c.opt));
}

TEST(Checkpoint, LatestNamesTheNewestAndKeepLastPrunes) {
  ScratchDir dir;
  const Config cfg = checkpoint_cfg();
  Trained a(cfg, 7);
  CheckpointManager mgr(dir.path(), 2);
  EXPECT_EQ(mgr.latest(), "");
  std::string last;
  for (int64_t step : {1, 2, 3}) {
    a.train(1);
    last = mgr.save(a.model, a.opt, state_at(step), cfg, "byte");
    EXPECT_EQ(fs::path(mgr.latest()).filename(), fs::path(last).filename());
  }
  const std::string root = dir.path() + "/checkpoints";
  EXPECT_FALSE(fs::exists(root + "/step_00000001"));
  EXPECT_TRUE(fs::exists(root + "/step_00000002"));
  EXPECT_TRUE(fs::exists(root + "/step_00000003"));
  EXPECT_EQ(fs::path(resolve_checkpoint(dir.path())).filename(), "step_00000003");
  EXPECT_EQ(fs::path(resolve_checkpoint(root)).filename(), "step_00000003");
  EXPECT_EQ(fs::path(resolve_checkpoint(root + "/step_00000002")).filename(), "step_00000002");
  // keep_last = 0 keeps everything.
  ScratchDir all;
  CheckpointManager keep_all(all.path(), 0);
  for (int64_t step : {1, 2, 3}) keep_all.save(a.model, a.opt, state_at(step), cfg, "byte");
  for (const char* name : {"step_00000001", "step_00000002", "step_00000003"})
    EXPECT_TRUE(fs::exists(all.path() + "/checkpoints/" + name)) << name;
  expect_mhc_error([&] { resolve_checkpoint(dir.file("nowhere")); }, {"nowhere"});
}

TEST(Checkpoint, LeftoverTemporaryDirectoryIsNeverPickedUp) {
  ScratchDir dir;
  const Config cfg = checkpoint_cfg();
  Trained a(cfg, 7);
  const std::string root = dir.path() + "/checkpoints";
  // A crash during the very first save: only a half-written temporary directory exists
  // (even with a state.json, which is written after the weights).
  fs::create_directories(root + "/.tmp_step_00000005");
  write_file_bytes(root + "/.tmp_step_00000005/model.safetensors", "partial");
  write_file_bytes(root + "/.tmp_step_00000005/state.json", "{}");
  CheckpointManager mgr(dir.path(), 2);
  EXPECT_EQ(mgr.latest(), "");
  expect_mhc_error([&] { resolve_checkpoint(dir.path()); }, {dir.path()});
  // Later complete saves win, and a crashed newer step is still ignored.
  mgr.save(a.model, a.opt, state_at(2), cfg, "byte");
  mgr.save(a.model, a.opt, state_at(3), cfg, "byte");
  fs::create_directories(root + "/.tmp_step_00000004");
  write_file_bytes(root + "/.tmp_step_00000004/model.safetensors", "partial");
  EXPECT_EQ(fs::path(mgr.latest()).filename(), "step_00000003");
  EXPECT_EQ(fs::path(resolve_checkpoint(dir.path())).filename(), "step_00000003");
  // Pruning counts only complete checkpoints and the resumed run can save over the debris.
  EXPECT_TRUE(fs::exists(root + "/step_00000002"));
  const std::string redo = mgr.save(a.model, a.opt, state_at(4), cfg, "byte");
  EXPECT_EQ(fs::path(redo).filename(), "step_00000004");
  EXPECT_FALSE(fs::exists(root + "/.tmp_step_00000004"));
  Trained b(cfg, 1);
  EXPECT_NO_THROW(restore_checkpoint(resolve_checkpoint(dir.path()), cfg, b.model, b.opt));
  EXPECT_EQ(b.model.get_params(), a.model.get_params());
}

// A second save of the same step (a stop signal at a checkpoint step) replaces the first
// one in place: the new weights are what a resume reads, and no temporary is left.
TEST(Checkpoint, SavingTheSameStepAgainReplacesItWhole) {
  ScratchDir dir;
  const Config cfg = checkpoint_cfg();
  Trained a(cfg, 7);
  CheckpointManager mgr(dir.path(), 2);
  mgr.save(a.model, a.opt, state_at(4), cfg, "byte");
  const std::vector<double> first = a.model.get_params();
  a.train(1);
  ASSERT_NE(a.model.get_params(), first);
  const std::string again = mgr.save(a.model, a.opt, state_at(4), cfg, "byte");
  EXPECT_EQ(fs::path(again).filename(), "step_00000004");
  const std::string root = dir.path() + "/checkpoints";
  for (const auto& e : fs::directory_iterator(root))
    EXPECT_NE(e.path().filename().string().rfind(".tmp_", 0), 0u) << e.path();
  Trained b(cfg, 1);
  restore_checkpoint(resolve_checkpoint(dir.path()), cfg, b.model, b.opt);
  EXPECT_EQ(b.model.get_params(), a.model.get_params());
}

TEST(Checkpoint, RestoringADifferentModelNamesTheDifferingKeys) {
  ScratchDir dir;
  const Config cfg = checkpoint_cfg("mhc", 2);
  Trained a(cfg, 7);
  CheckpointManager mgr(dir.path(), 2);
  const std::string ckpt = mgr.save(a.model, a.opt, state_at(1), cfg, "byte");
  struct Case {
    const char* what;
    Config cfg;
    std::vector<std::string> parts;
  };
  Config wide = cfg, hc = cfg, streams = cfg;
  wide.model.d_model = 16;
  hc.residual.mode = "hc";
  streams.residual.n = 4;
  for (const Case& c : {Case{"d_model", wide, {"model.d_model", "8", "16"}},
                        Case{"mode", hc, {"residual.mode", "mhc", "hc"}},
                        Case{"n", streams, {"residual.n", "2", "4"}}}) {
    SCOPED_TRACE(c.what);
    Trained b(c.cfg, 1);
    const std::vector<double> before = b.model.get_params();
    std::vector<std::string> parts = c.parts;
    parts.push_back(ckpt);
    expect_mhc_error([&] { restore_checkpoint(ckpt, c.cfg, b.model, b.opt); }, parts);
    EXPECT_EQ(b.model.get_params(), before) << "a refused restore must not touch the model";
  }
}

TEST(Checkpoint, TruncatedWeightsInsideACheckpointAreAnError) {
  ScratchDir dir;
  const Config cfg = checkpoint_cfg();
  Trained a(cfg, 7);
  CheckpointManager mgr(dir.path(), 2);
  const std::string ckpt = mgr.save(a.model, a.opt, state_at(1), cfg, "byte");
  for (const char* file : {"model.safetensors", "optim_rank00000.safetensors"}) {
    SCOPED_TRACE(file);
    const std::string path = ckpt + "/" + file;
    const std::string bytes = read_file_bytes(path);
    write_file_bytes(path, bytes.substr(0, bytes.size() - 5));
    Trained b(cfg, 1);
    // The recorded size catches it before the file is parsed.
    expect_mhc_error([&] { restore_checkpoint(ckpt, cfg, b.model, b.opt); },
                     {ckpt, std::string(file) + " is ", "bytes, state.json records"});
    write_file_bytes(path, bytes);
  }
  // Corrupt state.json is named too.
  write_file_bytes(ckpt + "/state.json", "{\"format\": ");
  Trained b(cfg, 1);
  expect_mhc_error([&] { restore_checkpoint(ckpt, cfg, b.model, b.opt); }, {"state.json"});
}

TEST(Checkpoint, AFlippedByteInAnyFileIsCaughtAndLatestIntactFallsBack) {
  ScratchDir dir;
  const Config cfg = checkpoint_cfg();
  Trained a(cfg, 7);
  CheckpointManager mgr(dir.path(), 0);
  const std::string older = mgr.save(a.model, a.opt, state_at(1), cfg, "byte");
  const std::string newer = mgr.save(a.model, a.opt, state_at(2), cfg, "byte");
  std::vector<std::string> skipped;
  EXPECT_EQ(mgr.latest_intact(skipped), newer);
  EXPECT_TRUE(skipped.empty());
  for (const char* file : {"model.safetensors", "optim_rank00000.safetensors", "config.yaml", "state.json"}) {
    SCOPED_TRACE(file);
    const std::string path = newer + "/" + file;
    const std::string bytes = read_file_bytes(path);
    std::string flipped = bytes;
    flipped[flipped.size() / 2] ^= 0x04;
    write_file_bytes(path, flipped);
    expect_mhc_error([&] { verify_checkpoint_files(newer); }, {file});
    skipped.clear();
    EXPECT_EQ(mgr.latest_intact(skipped), older);
    ASSERT_EQ(skipped.size(), 1u);
    EXPECT_NE(skipped[0].find("step_00000002"), std::string::npos) << skipped[0];
    write_file_bytes(path, bytes);
    EXPECT_NO_THROW(verify_checkpoint_files(newer));
  }
}

}  // namespace
}  // namespace mhc
