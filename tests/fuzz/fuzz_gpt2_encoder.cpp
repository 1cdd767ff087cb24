// Fuzz harness: a GPT-2 vocabulary file (encoder.json: {spelled token: id}), read with a
// fixed valid vocab.bpe (gpt2_fixture.h). Bad input must be one MhcError; an accepted
// vocabulary must encode and decode sample text back exactly.
#include <cstdint>
#include <string>

#include "gpt2_fixture.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    const mhc::Gpt2Vocab vocab =
        mhc::parse_gpt2_vocab(text, "encoder.json", fuzz::fixture_vocab_bpe(), "vocab.bpe");
    fuzz::check_round_trip(vocab, {fuzz::sample_text()});
  } catch (const mhc::MhcError&) {
  }
  return 0;
}
