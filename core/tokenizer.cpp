#include "tokenizer.h"

#include "error.h"
#include "gpt2_tokenizer.h"

namespace mhc {

std::vector<int32_t> ByteTokenizer::encode(const std::string& text) const {
  std::vector<int32_t> out(text.size());
  for (size_t i = 0; i < text.size(); ++i) out[i] = static_cast<unsigned char>(text[i]);
  return out;
}

std::string ByteTokenizer::decode(const std::vector<int32_t>& tokens) const {
  std::string out;
  out.reserve(tokens.size());
  for (int32_t t : tokens)
    if (t >= 0 && t < 256) out.push_back(static_cast<char>(t));
  return out;
}

std::unique_ptr<Tokenizer> make_tokenizer(const std::string& name, const std::string& gpt2_dir) {
  if (name == "byte") return std::make_unique<ByteTokenizer>();
  if (name == "gpt2") {
    std::string dir = gpt2_dir;
    if (dir.empty()) {
      std::string tried;
      dir = find_gpt2_dir(&tried);
      if (dir.empty())
        fail("gpt2 tokenizer: encoder.json and vocab.bpe not found (looked in {}); run "
             "data/get_gpt2_vocab.sh, or set MHC_GPT2_DIR or --gpt2-dir to a folder that holds "
             "them", tried);
    }
    return std::make_unique<Gpt2Tokenizer>(read_gpt2_vocab(dir));
  }
  fail("tokenizer '{}' is not available (known: byte, gpt2)", name);
}

}  // namespace mhc
