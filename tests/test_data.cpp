// Data module: shard format and validation, the stateless sampler, and `mhc prepare`.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "data/prepare.h"
#include "data/sampler.h"
#include "data/shards.h"
#include "error.h"

namespace {

namespace fs = std::filesystem;
using mhc::MhcError;

// A fresh directory per test, removed afterwards.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::path(::testing::TempDir()) / "mhc_data_XXXXXX").string();
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    if (::mkdtemp(buf.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = buf.data();
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (fs::path(path_) / name).string(); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::vector<uint16_t> iota_tokens(size_t n, int vocab, int start = 0) {
  std::vector<uint16_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint16_t>((start + i) % vocab);
  return v;
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// Overwrites the int32 header slot `slot` of a shard file.
void patch_header(const std::string& path, int slot, int32_t value) {
  std::string bytes = read_bytes(path);
  std::memcpy(&bytes[slot * 4], &value, 4);
  write_bytes(path, bytes);
}

// Runs `fn`, expecting an MhcError whose message contains every one of `parts`.
template <class Fn>
void expect_error(Fn fn, const std::vector<std::string>& parts) {
  try {
    fn();
    ADD_FAILURE() << "expected an MhcError";
  } catch (const MhcError& e) {
    const std::string msg = e.what();
    for (const auto& p : parts)
      EXPECT_NE(msg.find(p), std::string::npos) << msg << "\n  lacks: " << p;
  }
}

std::vector<int32_t> shard_as_int(const mhc::Shard& s) {
  return std::vector<int32_t>(s.tokens(), s.tokens() + s.size());
}

// ---- shards ---------------------------------------------------------------------------

TEST(DataShard, WriteReadRoundTrip) {
  TempDir dir;
  const auto tokens = iota_tokens(1000, 50257);
  const std::string path = dir.file("x_train_000000.bin");
  mhc::write_shard(path, tokens);
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  EXPECT_EQ(fs::file_size(path), 1024u + 2 * tokens.size());

  mhc::Shard shard(path, 50257);
  EXPECT_EQ(shard.path(), path);
  ASSERT_EQ(shard.size(), 1000);
  EXPECT_TRUE(std::equal(tokens.begin(), tokens.end(), shard.tokens()));

  // The header is the llm.c layout: magic, version, count as little-endian int32.
  const std::string bytes = read_bytes(path);
  int32_t header[3];
  std::memcpy(header, bytes.data(), sizeof(header));
  EXPECT_EQ(header[0], 20240520);
  EXPECT_EQ(header[1], 1);
  EXPECT_EQ(header[2], 1000);
}

TEST(DataShard, MoveTransfersMapping) {
  TempDir dir;
  const auto tokens = iota_tokens(100, 256);
  mhc::write_shard(dir.file("a.bin"), tokens);
  mhc::Shard a(dir.file("a.bin"), 256);
  mhc::Shard b(std::move(a));
  EXPECT_EQ(a.size(), 0);
  EXPECT_EQ(a.tokens(), nullptr);
  ASSERT_EQ(b.size(), 100);
  EXPECT_TRUE(std::equal(tokens.begin(), tokens.end(), b.tokens()));
}

TEST(DataShard, WriteRejectsEmpty) {
  TempDir dir;
  expect_error([&] { mhc::write_shard(dir.file("e.bin"), {}); }, {"e.bin", "no tokens"});
}

TEST(DataShard, MissingFile) {
  TempDir dir;
  const std::string path = dir.file("nope.bin");
  expect_error([&] { mhc::Shard(path, 256); }, {path, "does not exist"});
}

TEST(DataShard, EmptyFile) {
  TempDir dir;
  const std::string path = dir.file("empty.bin");
  write_bytes(path, "");
  expect_error([&] { mhc::Shard(path, 256); }, {path, "empty", "0 bytes"});
}

TEST(DataShard, ShorterThanHeader) {
  TempDir dir;
  const std::string path = dir.file("short.bin");
  write_bytes(path, std::string(100, '\0'));
  expect_error([&] { mhc::Shard(path, 256); }, {path, "100 bytes", "header"});
}

TEST(DataShard, BadMagic) {
  TempDir dir;
  const std::string path = dir.file("magic.bin");
  mhc::write_shard(path, iota_tokens(10, 256));
  patch_header(path, 0, 12345);
  expect_error([&] { mhc::Shard(path, 256); }, {path, "magic", "12345", "20240520"});
}

TEST(DataShard, WrongVersion) {
  TempDir dir;
  const std::string path = dir.file("version.bin");
  mhc::write_shard(path, iota_tokens(10, 256));
  patch_header(path, 1, 7);
  expect_error([&] { mhc::Shard(path, 256); }, {path, "version 7"});
}

TEST(DataShard, TruncatedFile) {
  TempDir dir;
  const std::string path = dir.file("trunc.bin");
  mhc::write_shard(path, iota_tokens(10, 256));
  fs::resize_file(path, 1024 + 2 * 9);
  expect_error([&] { mhc::Shard(path, 256); }, {path, "1042 bytes", "10", "1044", "truncated"});
}

TEST(DataShard, ExtraBytes) {
  TempDir dir;
  const std::string path = dir.file("long.bin");
  mhc::write_shard(path, iota_tokens(10, 256));
  fs::resize_file(path, 1024 + 2 * 11);
  expect_error([&] { mhc::Shard(path, 256); }, {path, "1046 bytes", "1044"});
}

TEST(DataShard, NonPositiveCount) {
  TempDir dir;
  const std::string path = dir.file("zero.bin");
  mhc::write_shard(path, iota_tokens(10, 256));
  patch_header(path, 2, 0);
  expect_error([&] { mhc::Shard(path, 256); }, {path, "0 tokens"});
}

TEST(DataShard, TokenOutOfVocab) {
  TempDir dir;
  const std::string path = dir.file("vocab.bin");
  auto tokens = iota_tokens(20, 100);
  tokens[13] = 300;
  mhc::write_shard(path, tokens);
  expect_error([&] { mhc::Shard(path, 256); },
               {path, "token 300", "position 13", "256", "model.vocab_size", "301"});
  EXPECT_NO_THROW(mhc::Shard(path, 301));
}

TEST(DataShardSet, GlobSortedOrder) {
  TempDir dir;
  // Written out of order; the set must come back sorted by path.
  for (int i : {2, 0, 1}) {
    char name[32];
    std::snprintf(name, sizeof(name), "c_train_%06d.bin", i);
    mhc::write_shard(dir.file(name), iota_tokens(10 + i, 256, 100 * i));
  }
  mhc::write_shard(dir.file("c_val_000000.bin"), iota_tokens(5, 256));
  mhc::ShardSet set(dir.file("c_train_*.bin"), 256, "data.train");
  ASSERT_EQ(set.shards().size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(set.shards()[i].size(), 10 + i);
    EXPECT_EQ(set.shards()[i].tokens()[0], 100 * i);
  }
  EXPECT_EQ(set.total_tokens(), 33);
}

TEST(DataShardSet, GlobMatchesNothing) {
  TempDir dir;
  const std::string pattern = dir.file("none_train_*.bin");
  expect_error([&] { mhc::ShardSet(pattern, 256, "data.train_glob"); },
               {pattern, "data.train_glob"});
}

TEST(DataShardSet, BadShardInSetNamesIt) {
  TempDir dir;
  mhc::write_shard(dir.file("d_000.bin"), iota_tokens(10, 256));
  write_bytes(dir.file("d_001.bin"), "");
  expect_error([&] { mhc::ShardSet(dir.file("d_*.bin"), 256, "data.train"); },
               {dir.file("d_001.bin"), "empty"});
}

// ---- sampler --------------------------------------------------------------------------

// Three shards whose tokens are distinct within the vocabulary: shard k holds
// 1000*k + position, so a window's values tell which shard and offset it came from.
struct SamplerFixture {
  TempDir dir;
  std::vector<int> sizes{40, 17, 63};
  std::unique_ptr<mhc::ShardSet> set;
  SamplerFixture() {
    for (size_t k = 0; k < sizes.size(); ++k) {
      std::vector<uint16_t> tokens(sizes[k]);
      for (int i = 0; i < sizes[k]; ++i) tokens[i] = static_cast<uint16_t>(1000 * k + i);
      mhc::write_shard(dir.file("s_" + std::to_string(k) + ".bin"), tokens);
    }
    set = std::make_unique<mhc::ShardSet>(dir.file("s_*.bin"), 4000, "data.train");
  }
};

TEST(DataSampler, TrainIsPureFunctionOfSeedAndIndex) {
  SamplerFixture f;
  const int T = 8;
  mhc::SequenceSampler a(*f.set, T, 42), b(*f.set, T, 42), c(*f.set, T, 43);
  std::vector<int32_t> xa(T), ya(T), xb(T), yb(T);
  std::set<std::vector<int32_t>> distinct;
  int differs_from_other_seed = 0;
  // Query b in reverse order: no hidden state may matter.
  for (int64_t i = 0; i < 200; ++i) {
    a.train_sample(i, xa.data(), ya.data());
    b.train_sample(199 - i, xb.data(), yb.data());
    std::vector<int32_t> xb2(T), yb2(T);
    b.train_sample(i, xb2.data(), yb2.data());
    EXPECT_EQ(xa, xb2);
    EXPECT_EQ(ya, yb2);
    distinct.insert(xa);
    std::vector<int32_t> xc(T), yc(T);
    c.train_sample(i, xc.data(), yc.data());
    differs_from_other_seed += xc != xa;
  }
  // 97 valid windows in all; 200 uniform draws should reach most of them.
  EXPECT_GT(distinct.size(), 60u);
  EXPECT_GT(differs_from_other_seed, 150);
  std::vector<int32_t> x0(T), y0(T), x1(T), y1(T);
  a.train_sample(0, x0.data(), y0.data());
  a.train_sample(1, x1.data(), y1.data());
  EXPECT_NE(x0, x1);
}

TEST(DataSampler, TrainWindowsStayInsideOneShardAndShiftTargets) {
  SamplerFixture f;
  const int T = 16;
  mhc::SequenceSampler s(*f.set, T, 7);
  std::vector<int32_t> x(T), y(T);
  std::set<int> shards_seen;
  std::set<int> last_shard_offsets;
  for (int64_t i = 0; i < 2000; ++i) {
    s.train_sample(i, x.data(), y.data());
    const int shard = x[0] / 1000, offset = x[0] % 1000;
    shards_seen.insert(shard);
    if (shard == 1) last_shard_offsets.insert(offset);
    for (int t = 0; t < T; ++t) {
      EXPECT_EQ(x[t], 1000 * shard + offset + t) << "window crosses a shard end";
      EXPECT_EQ(y[t], x[t] + 1) << "targets are not inputs shifted by one";
    }
    EXPECT_LE(offset + T + 1, f.sizes[shard]);
  }
  EXPECT_EQ(shards_seen.size(), 3u);
  // Shard 1 (17 tokens, T=16) has exactly one valid window, at offset 0.
  EXPECT_EQ(last_shard_offsets, std::set<int>{0});
}

TEST(DataSampler, ValWindowsConsecutiveNonOverlapping) {
  SamplerFixture f;
  const int T = 8;
  mhc::SequenceSampler s(*f.set, T, 1);
  // floor((S - 1) / T) per shard: 39/8 + 16/8 + 62/8 = 4 + 2 + 7.
  ASSERT_EQ(s.val_windows(), 13);
  std::vector<int32_t> x(T), y(T);
  std::vector<int> starts;
  for (int64_t i = 0; i < s.val_windows(); ++i) {
    s.val_sample(i, x.data(), y.data());
    for (int t = 0; t < T; ++t) {
      EXPECT_EQ(x[t], x[0] + t);
      EXPECT_EQ(y[t], x[t] + 1);
    }
    starts.push_back(x[0]);
  }
  const std::vector<int> expected{0,    8,    16,   24,   1000, 1008, 2000,
                                  2008, 2016, 2024, 2032, 2040, 2048};
  EXPECT_EQ(starts, expected);
  // Wraps around, and is independent of the seed.
  mhc::SequenceSampler other(*f.set, T, 999);
  std::vector<int32_t> x2(T), y2(T);
  s.val_sample(13 + 5, x.data(), y.data());
  other.val_sample(5, x2.data(), y2.data());
  EXPECT_EQ(x, x2);
  EXPECT_EQ(x[0], 1008);
}

TEST(DataSampler, ShardShorterThanSeqLenPlusOne) {
  SamplerFixture f;
  // Shard 1 holds 17 tokens: enough for T=16, not for T=17.
  EXPECT_NO_THROW(mhc::SequenceSampler(*f.set, 16, 0));
  expect_error([&] { mhc::SequenceSampler(*f.set, 17, 0); },
               {f.dir.file("s_1.bin"), "17 tokens", "model.seq_len"});
}

// ---- prepare --------------------------------------------------------------------------

std::string decode_split(const std::string& dir, const std::string& pattern) {
  mhc::ShardSet set((fs::path(dir) / pattern).string(), 256, "test");
  std::string out;
  for (const auto& s : set.shards())
    for (int64_t i = 0; i < s.size(); ++i) out.push_back(static_cast<char>(s.tokens()[i]));
  return out;
}

TEST(DataPrepare, ByteShardsDecodeToDocuments) {
  TempDir in, out;
  // Twenty documents in nested directories, plus hidden ones that must be skipped.
  std::vector<std::pair<std::string, std::string>> docs;
  fs::create_directories(in.file("sub/deeper"));
  for (int i = 0; i < 20; ++i) {
    const std::string rel = std::string(i % 3 == 0 ? "sub/" : i % 3 == 1 ? "sub/deeper/" : "") +
                            "doc" + std::to_string(100 + i) + ".txt";
    std::string text;
    for (int j = 0; j < 50 + 7 * i; ++j)
      text.push_back(static_cast<char>(1 + (i * 31 + j * 7) % 255));  // no NUL: prepare takes text
    write_bytes(in.file(rel), text);
    docs.emplace_back(in.file(rel), text);
  }
  fs::create_directories(in.file(".git"));
  write_bytes(in.file(".git/config"), "hidden");
  write_bytes(in.file(".hidden.txt"), "hidden");
  std::sort(docs.begin(), docs.end());

  mhc::PrepareOptions opt;
  opt.inputs = {in.path()};
  opt.output_dir = out.file("corpus");
  opt.val_fraction = 0.3;
  opt.shard_tokens = 500;
  const mhc::PrepareReport r = mhc::prepare_corpus(opt);
  EXPECT_EQ(r.documents, 20);
  EXPECT_GT(r.train_tokens, 0);
  EXPECT_GT(r.val_tokens, 0);
  int64_t bytes = 0;
  for (const auto& d : docs) bytes += static_cast<int64_t>(d.second.size());
  EXPECT_EQ(r.bytes, bytes);
  EXPECT_EQ(r.train_tokens + r.val_tokens, bytes + 2 * 20);
  EXPECT_TRUE(fs::exists(out.file("corpus/corpus_train_000000.bin")));
  EXPECT_TRUE(fs::exists(out.file("corpus/corpus_val_000000.bin")));
  EXPECT_GT(r.files_written.size(), 2u);  // several train shards of <= 500 tokens

  // Each document lands whole in train or val, in path order, each followed by "\n\n".
  const std::string train = decode_split(opt.output_dir, "corpus_train_*.bin");
  const std::string val = decode_split(opt.output_dir, "corpus_val_*.bin");
  EXPECT_EQ(static_cast<int64_t>(train.size()), r.train_tokens);
  EXPECT_EQ(static_cast<int64_t>(val.size()), r.val_tokens);
  size_t tp = 0, vp = 0;
  for (const auto& d : docs) {
    const std::string piece = d.second + "\n\n";
    if (train.compare(tp, piece.size(), piece) == 0) {
      tp += piece.size();
    } else {
      ASSERT_EQ(val.compare(vp, piece.size(), piece), 0) << d.first << " is in neither split";
      vp += piece.size();
    }
  }
  EXPECT_EQ(tp, train.size());
  EXPECT_EQ(vp, val.size());
  for (const auto& f : r.files_written) {
    mhc::Shard s(f, 256);
    EXPECT_LE(s.size(), 500);
  }
}

TEST(DataPrepare, DeterministicAcrossRuns) {
  TempDir in, out;
  for (int i = 0; i < 10; ++i)
    write_bytes(in.file("f" + std::to_string(i)), std::string(30 + i, static_cast<char>('a' + i)));
  mhc::PrepareOptions opt;
  opt.inputs = {in.path()};
  opt.val_fraction = 0.4;
  opt.output_dir = out.file("one");
  const auto r1 = mhc::prepare_corpus(opt);
  opt.output_dir = out.file("two");
  opt.name = "one";  // same file names, so only the directory differs
  const auto r2 = mhc::prepare_corpus(opt);
  ASSERT_EQ(r1.files_written.size(), r2.files_written.size());
  for (size_t i = 0; i < r1.files_written.size(); ++i) {
    EXPECT_EQ(fs::path(r1.files_written[i]).filename(), fs::path(r2.files_written[i]).filename());
    EXPECT_EQ(read_bytes(r1.files_written[i]), read_bytes(r2.files_written[i]));
  }
  EXPECT_EQ(r1.val_tokens, r2.val_tokens);
}

TEST(DataPrepare, SingleFileGetsTailValidation) {
  TempDir in, out;
  std::string text;
  for (int i = 0; i < 10000; ++i) text.push_back(static_cast<char>('a' + i % 26));
  write_bytes(in.file("only.txt"), text);
  mhc::PrepareOptions opt;
  opt.inputs = {in.file("only.txt")};
  opt.output_dir = out.file("single/");  // trailing slash: name is still "single"
  opt.val_fraction = 0.01;
  const auto r = mhc::prepare_corpus(opt);
  EXPECT_EQ(r.documents, 1);
  EXPECT_GT(r.val_tokens, 0);
  EXPECT_GT(r.train_tokens, r.val_tokens);
  const std::string train = decode_split(out.file("single"), "single_train_*.bin");
  const std::string val = decode_split(out.file("single"), "single_val_*.bin");
  EXPECT_EQ(train + val, text + "\n\n");
}

TEST(DataPrepare, AllDocumentsInValFallBackToTail) {
  TempDir in, out;
  std::string stream;
  for (int i = 0; i < 3; ++i) {
    // Long enough that the 1% tail left for training still fills a window.
    const std::string text(20000, static_cast<char>('a' + i));
    write_bytes(in.file("d" + std::to_string(i)), text);
    stream += text + "\n\n";
  }
  mhc::PrepareOptions opt;
  opt.inputs = {in.path()};
  opt.output_dir = out.path();
  opt.name = "v";
  opt.val_fraction = 0.99;  // every document hashes into validation
  const auto r = mhc::prepare_corpus(opt);
  EXPECT_GT(r.train_tokens, 0);
  EXPECT_GT(r.val_tokens, 0);
  EXPECT_EQ(decode_split(out.path(), "v_train_*.bin") + decode_split(out.path(), "v_val_*.bin"),
            stream);
}

TEST(DataPrepare, ZeroValFractionWritesNoValidation) {
  TempDir in, out;
  write_bytes(in.file("a.txt"), std::string(98, 'h'));
  mhc::PrepareOptions opt;
  opt.inputs = {in.file("a.txt")};
  opt.output_dir = out.path();
  opt.name = "z";
  opt.val_fraction = 0.0;
  const auto r = mhc::prepare_corpus(opt);
  EXPECT_EQ(r.val_tokens, 0);
  EXPECT_EQ(r.train_tokens, 100);
  EXPECT_EQ(r.files_written, std::vector<std::string>{out.file("z_train_000000.bin")});
}

TEST(DataPrepare, RerunRemovesStaleShards) {
  TempDir in, out;
  write_bytes(in.file("a.txt"), std::string(3000, 'x'));
  mhc::PrepareOptions opt;
  opt.inputs = {in.path()};
  opt.output_dir = out.path();
  opt.name = "r";
  opt.shard_tokens = 500;
  mhc::prepare_corpus(opt);
  EXPECT_TRUE(fs::exists(out.file("r_train_000003.bin")));
  opt.shard_tokens = 100000;
  const auto r = mhc::prepare_corpus(opt);
  EXPECT_EQ(r.files_written.size(), 2u);
  EXPECT_FALSE(fs::exists(out.file("r_train_000001.bin")));
  EXPECT_FALSE(fs::exists(out.file("r_train_000003.bin")));
}

TEST(DataPrepare, EmptyInputDirectoryIsAnError) {
  TempDir in, out;
  mhc::PrepareOptions opt;
  opt.inputs = {in.path()};
  opt.output_dir = out.file("x");
  expect_error([&] { mhc::prepare_corpus(opt); }, {in.path(), "no input files"});
  EXPECT_FALSE(fs::exists(out.file("x")));
}

TEST(DataPrepare, BinaryAndTooSmallInputsAreErrors) {
  TempDir in, out;
  write_bytes(in.file("prog"), std::string("\x7f" "ELF\x02\x01\x01\0\0\0", 10) + std::string(500, 'x'));
  mhc::PrepareOptions opt;
  opt.inputs = {in.file("prog")};
  opt.output_dir = out.file("x");
  expect_error([&] { mhc::prepare_corpus(opt); }, {in.file("prog"), "not text", "offset 7"});
  // Three empty files: 6 tokens of blank lines.
  fs::create_directories(in.file("empty"));
  for (const char* f : {"e1", "e2", "e3"}) write_bytes(in.file(std::string("empty/") + f), "");
  opt.inputs = {in.file("empty")};
  expect_error([&] { mhc::prepare_corpus(opt); }, {"train", "val tokens", "at least 65"});
  // One short document: its tail would be a validation shard of a few tokens.
  write_bytes(in.file("one.txt"), std::string(200, 'a'));
  opt.inputs = {in.file("one.txt")};
  expect_error([&] { mhc::prepare_corpus(opt); }, {"1 input documents", "at least 65"});
  EXPECT_FALSE(fs::exists(out.file("x")));
}

TEST(DataPrepare, ShardsRecordTheirTokenizer) {
  TempDir dir;
  mhc::write_shard(dir.file("t_000000.bin"), iota_tokens(300, 256), "byte");
  mhc::write_shard(dir.file("u_000000.bin"), iota_tokens(300, 256));  // like llm.c's
  EXPECT_EQ(mhc::Shard(dir.file("t_000000.bin"), 256).tokenizer(), "byte");
  EXPECT_EQ(mhc::Shard(dir.file("u_000000.bin"), 256).tokenizer(), "");
  mhc::ShardSet recorded(dir.file("t_*.bin"), 65536, "data.train");
  EXPECT_NO_THROW(recorded.check_tokenizer("byte", "data.tokenizer"));
  expect_error([&] { recorded.check_tokenizer("gpt2", "data.tokenizer"); },
               {"t_000000.bin", "byte tokenizer", "data.tokenizer is 'gpt2'"});
  // A recorded tokenizer whose vocabulary word disagrees: the header is damaged.
  {
    std::fstream f(dir.file("t_000000.bin"), std::ios::in | std::ios::out | std::ios::binary);
    const int32_t wrong_vocab = 300;
    f.seekp(5 * sizeof(int32_t));
    f.write(reinterpret_cast<const char*>(&wrong_vocab), sizeof(wrong_vocab));
  }
  expect_error([&] { mhc::Shard(dir.file("t_000000.bin"), 256); },
               {"t_000000.bin", "vocabulary size 300", "byte has 256", "corrupt header"});
  // Unrecorded shards: tokens beyond the tokenizer's vocabulary give it away.
  mhc::write_shard(dir.file("g_000000.bin"), iota_tokens(300, 50257, 40000));
  mhc::ShardSet gpt2(dir.file("g_*.bin"), 65536, "data.train");
  EXPECT_NO_THROW(gpt2.check_tokenizer("gpt2", "data.tokenizer"));
  expect_error([&] { gpt2.check_tokenizer("byte", "data.tokenizer"); },
               {"g_000000.bin", "beyond the byte tokenizer's 256 tokens"});
}

TEST(DataPrepare, MissingInputIsAnError) {
  TempDir out;
  mhc::PrepareOptions opt;
  opt.inputs = {out.file("does-not-exist")};
  opt.output_dir = out.file("x");
  expect_error([&] { mhc::prepare_corpus(opt); }, {out.file("does-not-exist"), "does not exist"});
}

}  // namespace
