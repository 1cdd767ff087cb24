// mhc_gpt2_tool: drives the C++ GPT-2 tokenizer for tests/tokenizer/run_reference_test.sh.
//
//   mhc_gpt2_tool encode VOCAB_DIR INPUT OUTPUT.u32 [--js]
//       token ids of INPUT's bytes as little-endian uint32 (--js: the pair keys of the npm
//       package gpt-3-encoder, see gpt2_tokenizer.h)
//   mhc_gpt2_tool check VOCAB_DIR INPUT REFERENCE.u32
//       1. ids with --js pair keys equal REFERENCE exactly (first difference shown);
//       2. the standard (tuple-keyed) ids, and how many tokens differ from REFERENCE;
//       3. decode(encode(INPUT)) == INPUT;
//       4. fuzzed round trips of random byte strings (invalid UTF-8 included) and random
//          UTF-8 through the real vocabulary;
//       5. encoding speed (MB/s, cold cache).
//   Exit 0 when every check passes.
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "error.h"
#include "gpt2_tokenizer.h"
#include "rng.h"

namespace {

using namespace mhc;

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot read {}", path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::vector<int32_t> read_u32(const std::string& path) {
  const std::string raw = read_bytes(path);
  std::vector<int32_t> ids(raw.size() / 4);
  std::memcpy(ids.data(), raw.data(), ids.size() * 4);
  return ids;
}

void write_u32(const std::string& path, const std::vector<int32_t>& ids) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(ids.data()), static_cast<std::streamsize>(ids.size() * 4));
  if (!out) fail("cannot write {}", path);
}

std::string printable(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (c == '\n') out += "\\n";
    else if (c < 0x20 || c == 0x7F) out += fmt::format("\\x{:02x}", c);
    else out.push_back(static_cast<char>(c));
  }
  return out;
}

// A random code point of a random plane-weighted kind (ASCII-heavy), never a surrogate.
uint32_t random_code_point(uint64_t seed, uint64_t i) {
  const double u = uniform01(seed, 2 * i), v = uniform01(seed, 2 * i + 1);
  uint32_t cp;
  if (u < 0.5) cp = static_cast<uint32_t>(v * 128);
  else if (u < 0.7) cp = 0x80 + static_cast<uint32_t>(v * (0x800 - 0x80));
  else if (u < 0.9) cp = 0x800 + static_cast<uint32_t>(v * (0x10000 - 0x800));
  else cp = 0x10000 + static_cast<uint32_t>(v * (0x110000 - 0x10000));
  if (cp >= 0xD800 && cp <= 0xDFFF) cp = 'x';
  return cp;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out += {static_cast<char>(0xC0 | (cp >> 6)), static_cast<char>(0x80 | (cp & 0x3F))};
  } else if (cp < 0x10000) {
    out += {static_cast<char>(0xE0 | (cp >> 12)), static_cast<char>(0x80 | ((cp >> 6) & 0x3F)),
            static_cast<char>(0x80 | (cp & 0x3F))};
  } else {
    out += {static_cast<char>(0xF0 | (cp >> 18)), static_cast<char>(0x80 | ((cp >> 12) & 0x3F)),
            static_cast<char>(0x80 | ((cp >> 6) & 0x3F)), static_cast<char>(0x80 | (cp & 0x3F))};
  }
}

int fuzz_round_trips(const Gpt2Tokenizer& tok) {
  int failures = 0, cases = 0;
  for (uint64_t c = 0; c < 2000; ++c) {
    std::string s;
    const int len = static_cast<int>(uniform01(1000 + c, 0) * 200);
    if (c % 2 == 0) {
      for (int i = 0; i < len; ++i)
        s.push_back(static_cast<char>(static_cast<unsigned char>(uniform01(2000 + c, i) * 256)));
    } else {
      for (int i = 0; i < len; ++i) append_utf8(s, random_code_point(3000 + c, i));
    }
    ++cases;
    if (tok.decode(tok.encode(s)) != s && ++failures <= 3)
      std::printf("FAIL: round trip of fuzz case %llu (%s)\n", static_cast<unsigned long long>(c),
                  printable(s).c_str());
  }
  std::printf("%s: %d fuzzed round trips (random bytes incl. invalid UTF-8, random UTF-8)\n",
              failures ? "FAIL" : "ok", cases);
  return failures;
}

int check(const std::string& dir, const std::string& input, const std::string& ref_path) {
  const Gpt2Vocab vocab = read_gpt2_vocab(dir);
  const Gpt2Tokenizer js(vocab, Gpt2Tokenizer::PairKeys::JsJoined);
  const std::string text = read_bytes(input);
  const std::vector<int32_t> ref = read_u32(ref_path);
  int failures = 0;

  const auto t0 = std::chrono::steady_clock::now();
  const std::vector<int32_t> ids = js.encode(text);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  size_t diff = 0;
  while (diff < ids.size() && diff < ref.size() && ids[diff] == ref[diff]) ++diff;
  if (diff == ids.size() && diff == ref.size()) {
    std::printf("ok: %zu bytes -> %zu token ids, identical to the reference encoder\n", text.size(),
                ids.size());
  } else {
    ++failures;
    std::printf("FAIL: ids differ from the reference at token %zu of %zu (reference has %zu)\n", diff,
                ids.size(), ref.size());
    const size_t from = diff >= 5 ? diff - 5 : 0;
    for (size_t i = from; i < diff + 5; ++i) {
      const std::string ours = i < ids.size() ? printable(js.decode({ids[i]})) : "-";
      const std::string theirs = i < ref.size() ? printable(js.decode({ref[i]})) : "-";
      std::printf("  %zu: ours %d '%s'  reference %d '%s'\n", i, i < ids.size() ? ids[i] : -1,
                  ours.c_str(), i < ref.size() ? ref[i] : -1, theirs.c_str());
    }
  }
  std::printf("%s: encoding speed %.2f MB/s (%.3f s for %.2f MB, cold cache)\n",
              secs < 3.0 * (text.size() / 1e6) ? "ok" : "FAIL", text.size() / 1e6 / secs, secs,
              text.size() / 1e6);
  if (secs >= 3.0 * (text.size() / 1e6)) ++failures;

  const Gpt2Tokenizer standard(vocab);
  const std::vector<int32_t> std_ids = standard.encode(text);
  size_t differing = std_ids.size() == ref.size() ? 0 : 1;
  for (size_t i = 0; i < std::min(std_ids.size(), ref.size()); ++i) differing += std_ids[i] != ref[i];
  std::printf("info: standard GPT-2 pair keys: %zu tokens, %s the reference%s\n", std_ids.size(),
              differing == 0 && std_ids.size() == ref.size() ? "identical to" : "differing from",
              differing ? " (the package's \"first,second\" rank keys; gpt2_tokenizer.h)" : "");
  if (standard.decode(std_ids) != text || js.decode(ids) != text) {
    ++failures;
    std::printf("FAIL: decode(encode(text)) != text\n");
  } else {
    std::printf("ok: decode(encode(text)) == text\n");
  }
  failures += fuzz_round_trips(standard);
  return failures ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::vector<std::string> a(argv + 1, argv + argc);
    if (a.size() >= 4 && a[0] == "encode") {
      const bool js = a.size() >= 5 && a[4] == "--js";
      const Gpt2Tokenizer tok(read_gpt2_vocab(a[1]),
                              js ? Gpt2Tokenizer::PairKeys::JsJoined : Gpt2Tokenizer::PairKeys::Tuple);
      write_u32(a[3], tok.encode(read_bytes(a[2])));
      return 0;
    }
    if (a.size() == 4 && a[0] == "check") return check(a[1], a[2], a[3]);
    std::fprintf(stderr, "usage: mhc_gpt2_tool encode VOCAB_DIR INPUT OUT.u32 [--js] | "
                         "check VOCAB_DIR INPUT REFERENCE.u32\n");
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
