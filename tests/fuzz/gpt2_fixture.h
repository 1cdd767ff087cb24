// A small valid GPT-2 vocabulary for the two tokenizer harnesses: each fuzzes one of the
// two files (encoder.json or vocab.bpe) against this fixed other half, then encodes and
// decodes sample text with whatever vocabulary was accepted.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "error.h"
#include "gpt2_tokenizer.h"

namespace fuzz {

// GPT-2's printable spelling of raw bytes (bytes_to_unicode, UTF-8 encoded).
inline std::string spell(const std::string& raw) {
  std::string out;
  for (unsigned char b : raw) {
    const uint32_t cp = mhc::gpt2_byte_to_unicode(b);
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else {  // every stand-in is below U+0800: two UTF-8 bytes
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }
  return out;
}

inline const std::vector<std::pair<std::string, std::string>>& fixture_merges() {
  static const std::vector<std::pair<std::string, std::string>> merges = {
      {" ", "t"}, {"h", "e"}, {" t", "he"}, {"i", "n"}, {"e", "r"}, {" ", "a"},
      {"o", "r"}, {"1", "2"}, {"\n", "\n"}, {"\xc3", "\xa9"}, {"'", "ll"}, {"l", "l"}};
  return merges;
}

// encoder.json: the 256 single bytes (ids 0..255), then each merge's result.
inline const std::string& fixture_encoder_json() {
  static const std::string text = [] {
    nlohmann::ordered_json js = nlohmann::ordered_json::object();
    for (int b = 0; b < 256; ++b) js[spell(std::string(1, static_cast<char>(b)))] = b;
    int id = 256;
    for (const auto& [a, b] : fixture_merges()) js[spell(a + b)] = id++;
    return js.dump();
  }();
  return text;
}

// vocab.bpe: a version line, then one "first second" per merge (in merge order; "ll"
// comes after "'ll" on purpose, so that merge is never reached, as happens in real files).
inline const std::string& fixture_vocab_bpe() {
  static const std::string text = [] {
    std::string out = "#version: 0.2\n";
    for (const auto& [a, b] : fixture_merges()) out += spell(a) + " " + spell(b) + "\n";
    return out;
  }();
  return text;
}

// Builds a tokenizer from the accepted vocabulary (an MhcError when the two files do not
// fit together) and checks that encode then decode gives back every sample exactly.
inline void check_round_trip(const mhc::Gpt2Vocab& vocab, const std::vector<std::string>& samples) {
  const mhc::Gpt2Tokenizer tok(vocab);
  for (const std::string& s : samples) {
    const std::vector<int32_t> ids = tok.encode(s);
    for (int32_t id : ids)
      if (id < 0 || id >= tok.vocab_size()) std::abort();
    if (tok.decode(ids) != s) std::abort();
  }
}

inline const std::string& sample_text() {
  static const std::string text =
      "Hello there, the theory of 12 things'll cost 123 \xe2\x82\xac!  \n\n\t caf\xc3\xa9 "
      "\xe6\xbc\xa2\xe5\xad\x97 \xff\xfe in order   ";
  return text;
}

}  // namespace fuzz
