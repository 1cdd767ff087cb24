// GPT-2's byte-level BPE tokenizer (Radford et al. 2019), from the standard encoder.json
// and vocab.bpe files, without a regex library.
//
// encode(text):
//   1. Pre-tokenize with GPT-2's pattern
//        's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//      on code points (UTF-8 decoded; \p{L}, \p{N} and \s are the JavaScript classes of
//      the reference encoder, tables in gpt2_tokenizer.tables.inc). A byte that is not
//      part of valid UTF-8 is a code point of its own in the class "other", so every byte
//      string is split into contiguous pieces and round-trips exactly.
//   2. Apply the BPE merges to each piece's bytes: repeatedly merge every occurrence
//      (left to right) of the adjacent pair with the lowest merge rank.
// decode(ids) concatenates the tokens' bytes (ids outside the vocabulary are skipped).
//
// Merge ranks are keyed by the pair of tokens, as in OpenAI's encoder.py and tiktoken.
// The npm package gpt-3-encoder keys them by the string "first,second" instead, so 11
// GPT-2 token pairs that are not merges (e.g. ('",', '"')) collide with the key of a real
// merge there; PairKeys::JsJoined reproduces that behaviour exactly (used by the test that
// compares token ids with that package). The two agree except on those pairs.
#pragma once
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "tokenizer.h"

namespace mhc {

enum class Gpt2CharClass : uint8_t { Other = 0, Letter = 1, Number = 2, Space = 3 };

// Class of a Unicode code point for the pre-tokenizer (Other for anything unassigned).
Gpt2CharClass gpt2_char_class(uint32_t cp);

// GPT-2 pre-tokens of `text` as [begin, end) byte ranges covering the text in order.
std::vector<std::pair<size_t, size_t>> gpt2_pretokenize(std::string_view text);

// GPT-2's printable stand-in for a byte (bytes_to_unicode), and its inverse (-1 when the
// code point stands for no byte).
uint32_t gpt2_byte_to_unicode(uint8_t byte);
int gpt2_unicode_to_byte(uint32_t cp);

// A vocabulary as raw bytes: tokens[id] are the bytes of token id; merges in rank order.
struct Gpt2Vocab {
  std::vector<std::string> tokens;
  std::vector<std::pair<std::string, std::string>> merges;
};

// Reads <dir>/encoder.json and <dir>/vocab.bpe. MhcError naming the file for anything
// missing or malformed.
Gpt2Vocab read_gpt2_vocab(const std::string& dir);
// The same from the two files' text; the paths name them in errors (the fuzz harness's
// entry).
Gpt2Vocab parse_gpt2_vocab(const std::string& enc_text, const std::string& enc_path,
                           const std::string& bpe_text, const std::string& bpe_path);

class Gpt2Tokenizer final : public Tokenizer {
 public:
  enum class PairKeys { Tuple, JsJoined };
  // The vocabulary must hold every single byte; every merge's parts and result must be
  // tokens.
  explicit Gpt2Tokenizer(const Gpt2Vocab& vocab, PairKeys keys = PairKeys::Tuple);

  std::string name() const override { return "gpt2"; }
  int vocab_size() const override { return static_cast<int>(tokens_.size()); }
  std::vector<int32_t> encode(const std::string& text) const override;
  std::string decode(const std::vector<int32_t>& tokens) const override;
  // Id of a token given by its raw bytes, -1 when absent.
  int32_t token_id(const std::string& bytes) const;
  // <|endoftext|> (50256 in GPT-2's vocabulary); -1 when the vocabulary lacks it.
  int32_t document_start_token() const override { return token_id("<|endoftext|>"); }

 private:
  void bpe(std::string_view piece, std::vector<int32_t>& out) const;

  struct Merge {
    int32_t rank, result;
  };
  std::vector<std::string> tokens_;
  std::unordered_map<std::string, int32_t> ids_;
  int32_t byte_id_[256];
  std::unordered_map<uint64_t, Merge> merges_;  // (first id << 32 | second id) → merge
  // BPE results per piece, shared by all encode() calls (guarded: encode is const).
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;
};

// Where make_tokenizer("gpt2") looks when no folder is given: $MHC_GPT2_DIR, else
// data/cache/gpt2 under the working directory, else data/cache/gpt2 in the source tree
// next to the running binary (build/mhc → ./data/cache/gpt2). Returns the first folder
// holding encoder.json, or "" with `tried` listing the candidates.
std::string find_gpt2_dir(std::string* tried = nullptr);

}  // namespace mhc
