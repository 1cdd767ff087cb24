// Fuzz harness: a GPT-2 merges file (vocab.bpe: a "#version" line, then "first second"
// per line), read with a fixed valid encoder.json (gpt2_fixture.h). Bad input must be one
// MhcError; an accepted merge list must encode and decode sample text, and the input's
// own bytes as text, back exactly.
#include <cstdint>
#include <string>

#include "gpt2_fixture.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    const mhc::Gpt2Vocab vocab =
        mhc::parse_gpt2_vocab(fuzz::fixture_encoder_json(), "encoder.json", text, "vocab.bpe");
    fuzz::check_round_trip(vocab, {fuzz::sample_text(), text});
  } catch (const mhc::MhcError&) {
  }
  return 0;
}
