// Tokenizers: "byte" (token = byte value, vocabulary 256) is built in; "gpt2" (GPT-2's
// byte-level BPE from encoder.json/vocab.bpe, gpt2_tokenizer.h) plugs in behind the same
// interface.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace mhc {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual std::string name() const = 0;
  virtual int vocab_size() const = 0;
  virtual std::vector<int32_t> encode(const std::string& text) const = 0;
  // Decoding may return partial UTF-8 at the edges; callers print the bytes as they are.
  virtual std::string decode(const std::vector<int32_t>& tokens) const = 0;
  // The token `mhc prepare` puts at the start of every document, or -1 when documents are
  // separated by text instead (byte: a blank line after each). GPT-2: <|endoftext|>
  // (50256), as llm.c's and nanoGPT's shards are delimited.
  virtual int32_t document_start_token() const { return -1; }
};

class ByteTokenizer final : public Tokenizer {
 public:
  std::string name() const override { return "byte"; }
  int vocab_size() const override { return 256; }
  std::vector<int32_t> encode(const std::string& text) const override;
  std::string decode(const std::vector<int32_t>& tokens) const override;
};

// name: "byte" or "gpt2" (gpt2_dir holds encoder.json and vocab.bpe; empty = the
// default location, see find_gpt2_dir in gpt2_tokenizer.h: $MHC_GPT2_DIR, else
// data/cache/gpt2, fetched by data/get_gpt2_vocab.sh). MhcError for unknown names or
// missing files.
std::unique_ptr<Tokenizer> make_tokenizer(const std::string& name, const std::string& gpt2_dir = "");

}  // namespace mhc
