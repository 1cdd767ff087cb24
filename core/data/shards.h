// llm.c token shards: a 256 × int32 little-endian header (magic 20240520, version 1,
// token count) followed by that many uint16 tokens. Shards are memory-mapped and
// validated when opened (magic, version, exact file size, every token < vocab).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace mhc {

constexpr int32_t kShardMagic = 20240520;
constexpr int32_t kShardVersion = 1;
constexpr int kShardHeaderInts = 256;
// mhc records the tokenizer in header ints 3..5, which llm.c leaves zero and never reads:
// [3] = this tag, [4] = tokenizer id (1 byte, 2 gpt2), [5] = its vocabulary size.
constexpr int32_t kShardTokenizerTag = 0x546b686d;  // "mhkT" little-endian

// Writes one shard (atomically: temporary file, then rename); a non-empty tokenizer
// ("byte" or "gpt2") is recorded in the header.
void write_shard(const std::string& path, const std::vector<uint16_t>& tokens,
                 const std::string& tokenizer = "");
// The vocabulary size of a known tokenizer name (byte 256, gpt2 50257), without loading it.
int known_tokenizer_vocab(const std::string& tokenizer);

// Checks a shard's bytes (header, exact size, recorded tokenizer, every token <
// vocab_size); MhcError naming `path` otherwise. Shard runs it on the mapping; the fuzz
// harness (tests/fuzz/) on bytes in memory.
struct ShardCheck {
  int64_t count = 0;
  std::string tokenizer;  // "" when the header records none
  int max_token = 0;
};
ShardCheck check_shard_bytes(const void* bytes, size_t size, const std::string& path, int vocab_size);

// One memory-mapped, validated shard.
class Shard {
 public:
  // Throws MhcError naming the file and the problem (missing, empty, bad magic, bad
  // version, size mismatch, token >= vocab_size).
  Shard(const std::string& path, int vocab_size);
  ~Shard();
  Shard(Shard&& other) noexcept;
  Shard& operator=(Shard&&) = delete;
  Shard(const Shard&) = delete;

  const std::string& path() const { return path_; }
  int64_t size() const { return count_; }
  const uint16_t* tokens() const { return tokens_; }
  // The tokenizer `mhc prepare` recorded ("" for shards from elsewhere, e.g. llm.c).
  const std::string& tokenizer() const { return tokenizer_; }
  int max_token() const { return max_token_; }

 private:
  std::string path_;
  void* map_ = nullptr;
  size_t map_bytes_ = 0;
  const uint16_t* tokens_ = nullptr;
  int64_t count_ = 0;
  std::string tokenizer_;
  int max_token_ = 0;
};

// The files a glob matches, in byte order; MhcError naming the glob and its config key
// (and, for a relative glob, the current directory) when it matches nothing. Cheap: the
// files are not opened.
std::vector<std::string> shard_paths(const std::string& glob_pattern, const std::string& config_key);

// All shards matching a glob, in sorted path order. Throws when the glob matches
// nothing (naming the glob and the config key it came from).
class ShardSet {
 public:
  ShardSet(const std::string& glob_pattern, int vocab_size, const std::string& config_key);
  const std::vector<Shard>& shards() const { return shards_; }
  int64_t total_tokens() const;
  // MhcError unless every shard suits `tokenizer` (from config_key): a recorded tokenizer
  // must be the same, and no token may lie beyond the tokenizer's vocabulary.
  void check_tokenizer(const std::string& tokenizer, const std::string& config_key) const;

 private:
  std::vector<Shard> shards_;
};

}  // namespace mhc
