#include "gpt2_tokenizer.h"

#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "error.h"
#include "text_util.h"

namespace mhc {
namespace {

struct Gpt2CharRange {
  uint32_t first, last;
  uint8_t cls;
};
#include "gpt2_tokenizer.tables.inc"

// ASCII classes, the hot path.
struct AsciiClasses {
  Gpt2CharClass cls[128];
  AsciiClasses() {
    for (uint32_t c = 0; c < 128; ++c) {
      cls[c] = Gpt2CharClass::Other;
      for (const auto& r : kGpt2CharRanges)
        if (c >= r.first && c <= r.last) cls[c] = static_cast<Gpt2CharClass>(r.cls);
    }
  }
};
const AsciiClasses kAscii;

constexpr uint32_t kInvalid = 0xFFFFFFFFu;

// Decodes one UTF-8 code point at s[i]; an ill-formed byte decodes as kInvalid, length 1.
uint32_t decode_utf8(std::string_view s, size_t i, size_t& len) {
  const auto b = [&](size_t k) { return static_cast<uint8_t>(s[i + k]); };
  const auto cont = [&](size_t k) { return i + k < s.size() && (b(k) & 0xC0) == 0x80; };
  const uint8_t c = b(0);
  len = 1;
  if (c < 0x80) return c;
  if (c >= 0xC2 && c <= 0xDF && cont(1)) {
    len = 2;
    return (c & 0x1Fu) << 6 | (b(1) & 0x3Fu);
  }
  if (c >= 0xE0 && c <= 0xEF && cont(1) && cont(2)) {
    const uint8_t c1 = b(1);
    if ((c == 0xE0 && c1 < 0xA0) || (c == 0xED && c1 > 0x9F)) return kInvalid;  // overlong, surrogate
    len = 3;
    return (c & 0x0Fu) << 12 | (c1 & 0x3Fu) << 6 | (b(2) & 0x3Fu);
  }
  if (c >= 0xF0 && c <= 0xF4 && cont(1) && cont(2) && cont(3)) {
    const uint8_t c1 = b(1);
    if ((c == 0xF0 && c1 < 0x90) || (c == 0xF4 && c1 > 0x8F)) return kInvalid;  // overlong, > U+10FFFF
    len = 4;
    return (c & 0x07u) << 18 | (c1 & 0x3Fu) << 12 | (b(2) & 0x3Fu) << 6 | (b(3) & 0x3Fu);
  }
  return kInvalid;
}

// GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the other 68
// bytes (controls, space, 0x7F-0xA0, 0xAD) for U+0100 upwards in byte order.
struct ByteMap {
  uint32_t to_cp[256];
  ByteMap() {
    uint32_t next = 256;
    for (uint32_t b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      to_cp[b] = printable ? b : next++;
    }
  }
};
const ByteMap kByteMap;

// A token's raw bytes from its encoder.json / vocab.bpe spelling.
std::string unicode_to_bytes(const std::string& spelled, const std::string& file) {
  std::string raw;
  for (size_t i = 0; i < spelled.size();) {
    size_t len = 0;
    const uint32_t cp = decode_utf8(spelled, i, len);
    const int byte = cp == kInvalid ? -1 : gpt2_unicode_to_byte(cp);
    if (byte < 0)
      fail("{}: token '{}' holds a character that stands for no byte (not a GPT-2 byte-level "
           "vocabulary?)", file, spelled);
    raw.push_back(static_cast<char>(byte));
    i += len;
  }
  return raw;
}

std::string read_required(const std::string& path, const std::string& dir) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec))
    fail("gpt2 tokenizer: '{}' not found (run data/get_gpt2_vocab.sh to fetch encoder.json and "
         "vocab.bpe into data/cache/gpt2, or point --gpt2-dir / MHC_GPT2_DIR at a folder that "
         "holds them; looked in '{}')", path, dir);
  return read_text_file(path);
}

std::string executable_dir() {
  char buf[4096];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return "";
  return std::filesystem::path(std::string(buf, static_cast<size_t>(n))).parent_path().string();
}

}  // namespace

Gpt2CharClass gpt2_char_class(uint32_t cp) {
  if (cp < 128) return kAscii.cls[cp];
  const auto* begin = std::begin(kGpt2CharRanges);
  const auto* end = std::end(kGpt2CharRanges);
  const auto* it = std::upper_bound(begin, end, cp,
                                    [](uint32_t v, const Gpt2CharRange& r) { return v < r.first; });
  if (it == begin) return Gpt2CharClass::Other;
  --it;
  return cp <= it->last ? static_cast<Gpt2CharClass>(it->cls) : Gpt2CharClass::Other;
}

uint32_t gpt2_byte_to_unicode(uint8_t byte) { return kByteMap.to_cp[byte]; }

int gpt2_unicode_to_byte(uint32_t cp) {
  if (cp < 256 && kByteMap.to_cp[cp] == cp) return static_cast<int>(cp);
  if (cp >= 256 && cp < 256 + 68)
    for (int b = 0; b < 256; ++b)
      if (kByteMap.to_cp[b] == cp) return b;
  return -1;
}

std::vector<std::pair<size_t, size_t>> gpt2_pretokenize(std::string_view text) {
  // Code points with their byte offsets (offset[n] = text size) and classes.
  std::vector<uint32_t> cps, offset;
  std::vector<Gpt2CharClass> cls;
  cps.reserve(text.size());
  offset.reserve(text.size() + 1);
  cls.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    size_t len = 0;
    const uint32_t cp = decode_utf8(text, i, len);
    cps.push_back(cp);
    offset.push_back(static_cast<uint32_t>(i));
    cls.push_back(cp == kInvalid ? Gpt2CharClass::Other : gpt2_char_class(cp));
    i += len;
  }
  const size_t n = cps.size();
  offset.push_back(static_cast<uint32_t>(text.size()));

  std::vector<std::pair<size_t, size_t>> out;
  out.reserve(n / 3 + 1);
  size_t i = 0;
  const auto emit = [&](size_t end) {
    out.emplace_back(offset[i], offset[end]);
    i = end;
  };
  while (i < n) {
    // 's|'t|'re|'ve|'m|'ll|'d
    if (cps[i] == '\'' && i + 1 < n) {
      const uint32_t c1 = cps[i + 1];
      if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') {
        emit(i + 2);
        continue;
      }
      if (i + 2 < n) {
        const uint32_t c2 = cps[i + 2];
        if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) {
          emit(i + 3);
          continue;
        }
      }
    }
    //  ?\p{L}+ |  ?\p{N}+ |  ?[^\s\p{L}\p{N}]+  (the optional space is U+0020 only)
    const bool space_first = cps[i] == ' ' && i + 1 < n && cls[i + 1] != Gpt2CharClass::Space;
    const size_t run_start = space_first ? i + 1 : i;
    const Gpt2CharClass c = cls[run_start];
    if (c != Gpt2CharClass::Space) {
      size_t j = run_start + 1;
      while (j < n && cls[j] == c) ++j;
      emit(j);
      continue;
    }
    // \s+(?!\S) | \s+ : a white-space run followed by a non-space leaves its last
    // character to prefix what follows (when the run is longer than one).
    size_t j = i + 1;
    while (j < n && cls[j] == Gpt2CharClass::Space) ++j;
    if (j == n)
      emit(n);
    else
      emit(j - i >= 2 ? j - 1 : j);
  }
  return out;
}

Gpt2Vocab read_gpt2_vocab(const std::string& dir) {
  const std::string enc_path = dir + "/encoder.json", bpe_path = dir + "/vocab.bpe";
  const std::string enc_text = read_required(enc_path, dir);
  const std::string bpe_text = read_required(bpe_path, dir);
  return parse_gpt2_vocab(enc_text, enc_path, bpe_text, bpe_path);
}

Gpt2Vocab parse_gpt2_vocab(const std::string& enc_text, const std::string& enc_path,
                           const std::string& bpe_text, const std::string& bpe_path) {
  Gpt2Vocab v;
  nlohmann::json enc;
  try {
    enc = nlohmann::json::parse(enc_text);
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not valid JSON: {}", enc_path, e.what());
  }
  if (!enc.is_object() || enc.empty()) fail("{}: expected a JSON object of token → id", enc_path);
  v.tokens.assign(enc.size(), std::string());
  std::vector<bool> seen(enc.size(), false);
  for (const auto& [spelled, id_js] : enc.items()) {
    if (!id_js.is_number_integer()) fail("{}: token '{}' has a non-integer id", enc_path, spelled);
    const int64_t id = id_js.get<int64_t>();
    if (id < 0 || id >= static_cast<int64_t>(enc.size()) || seen[static_cast<size_t>(id)])
      fail("{}: ids must be 0..{} without repeats (token '{}' has {})", enc_path, enc.size() - 1,
           spelled, id);
    seen[static_cast<size_t>(id)] = true;
    v.tokens[static_cast<size_t>(id)] = unicode_to_bytes(spelled, enc_path);
  }
  // vocab.bpe: a "#version" line, then one merge "first second" per line.
  size_t line_no = 0;
  for (const std::string& raw_line : split(bpe_text, '\n')) {
    ++line_no;
    std::string line = raw_line;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || (line_no == 1 && line[0] == '#')) continue;
    const size_t sp = line.find(' ');
    if (sp == std::string::npos || sp == 0 || sp + 1 >= line.size() ||
        line.find(' ', sp + 1) != std::string::npos)
      fail("{}:{}: expected 'first second', got '{}'", bpe_path, line_no, line);
    v.merges.emplace_back(unicode_to_bytes(line.substr(0, sp), bpe_path),
                          unicode_to_bytes(line.substr(sp + 1), bpe_path));
  }
  if (v.merges.empty()) fail("{}: no merges", bpe_path);
  return v;
}

Gpt2Tokenizer::Gpt2Tokenizer(const Gpt2Vocab& vocab, PairKeys keys) : tokens_(vocab.tokens) {
  ids_.reserve(tokens_.size() * 2);
  for (size_t id = 0; id < tokens_.size(); ++id)
    if (!ids_.emplace(tokens_[id], static_cast<int32_t>(id)).second)
      fail("gpt2 tokenizer: token {} repeats token {}", id, ids_[tokens_[id]]);
  for (int b = 0; b < 256; ++b) {
    byte_id_[b] = token_id(std::string(1, static_cast<char>(b)));
    if (byte_id_[b] < 0) fail("gpt2 tokenizer: the vocabulary lacks the single byte 0x{:02x}", b);
  }
  const auto key = [](int32_t a, int32_t b) {
    return static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32 | static_cast<uint32_t>(b);
  };
  merges_.reserve(vocab.merges.size() * 2);
  for (size_t r = 0; r < vocab.merges.size(); ++r) {
    const auto& [first, second] = vocab.merges[r];
    const int32_t a = token_id(first), b = token_id(second), ab = token_id(first + second);
    if (a < 0 || b < 0 || ab < 0)
      fail("gpt2 tokenizer: merge {} ('{}' '{}') uses or makes a token missing from the "
           "vocabulary", r + 1, first, second);
    merges_[key(a, b)] = {static_cast<int32_t>(r), ab};  // a repeated pair: the last rank wins
  }
  if (keys == PairKeys::JsJoined) {
    // gpt-3-encoder looks a pair up by the string "first,second": a pair (x, y) that is no
    // merge but spells the same string as merge r gets r's rank (and merges into x+y).
    for (size_t r = 0; r < vocab.merges.size(); ++r) {
      const auto& [first, second] = vocab.merges[r];
      const std::string joined = first + "," + second;
      for (size_t c = joined.find(','); c != std::string::npos; c = joined.find(',', c + 1)) {
        if (c == 0 || c + 1 >= joined.size() || c == first.size()) continue;
        const int32_t x = token_id(joined.substr(0, c)), y = token_id(joined.substr(c + 1));
        const int32_t xy = token_id(joined.substr(0, c) + joined.substr(c + 1));
        if (x < 0 || y < 0 || xy < 0 || merges_.count(key(x, y))) continue;
        merges_[key(x, y)] = {static_cast<int32_t>(r), xy};
      }
    }
  }
}

int32_t Gpt2Tokenizer::token_id(const std::string& bytes) const {
  const auto it = ids_.find(bytes);
  return it == ids_.end() ? -1 : it->second;
}

void Gpt2Tokenizer::bpe(std::string_view piece, std::vector<int32_t>& out) const {
  std::vector<int32_t> word(piece.size());
  for (size_t i = 0; i < piece.size(); ++i) word[i] = byte_id_[static_cast<uint8_t>(piece[i])];
  std::vector<int32_t> next;
  next.reserve(word.size());
  while (word.size() > 1) {
    // The lowest-ranked pair; among equal ranks (only possible with JsJoined keys) the
    // last one, as the reference's rank → pair table keeps the last pair it saw.
    int32_t best_rank = INT32_MAX, first = -1, second = -1, result = -1;
    for (size_t i = 0; i + 1 < word.size(); ++i) {
      const auto it = merges_.find(static_cast<uint64_t>(static_cast<uint32_t>(word[i])) << 32 |
                                   static_cast<uint32_t>(word[i + 1]));
      if (it != merges_.end() && it->second.rank <= best_rank) {
        best_rank = it->second.rank;
        first = word[i];
        second = word[i + 1];
        result = it->second.result;
      }
    }
    if (result < 0) break;
    next.clear();
    for (size_t i = 0; i < word.size();) {
      if (i + 1 < word.size() && word[i] == first && word[i + 1] == second) {
        next.push_back(result);
        i += 2;
      } else {
        next.push_back(word[i++]);
      }
    }
    word.swap(next);
  }
  out.insert(out.end(), word.begin(), word.end());
}

std::vector<int32_t> Gpt2Tokenizer::encode(const std::string& text) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 1);
  std::lock_guard<std::mutex> lock(cache_mutex_);
  if (cache_.size() > 1'000'000) cache_.clear();
  for (const auto& [begin, end] : gpt2_pretokenize(text)) {
    const std::string_view piece(text.data() + begin, end - begin);
    if (piece.size() == 1) {
      out.push_back(byte_id_[static_cast<uint8_t>(piece[0])]);
      continue;
    }
    auto it = cache_.find(std::string(piece));
    if (it == cache_.end()) {
      std::vector<int32_t> ids;
      bpe(piece, ids);
      it = cache_.emplace(std::string(piece), std::move(ids)).first;
    }
    out.insert(out.end(), it->second.begin(), it->second.end());
  }
  return out;
}

std::string Gpt2Tokenizer::decode(const std::vector<int32_t>& tokens) const {
  std::string out;
  for (int32_t t : tokens)
    if (t >= 0 && t < static_cast<int32_t>(tokens_.size())) out += tokens_[static_cast<size_t>(t)];
  return out;
}

std::string find_gpt2_dir(std::string* tried) {
  namespace fs = std::filesystem;
  std::vector<std::string> candidates;
  if (const char* env = std::getenv("MHC_GPT2_DIR"); env && *env) candidates.emplace_back(env);
  candidates.emplace_back("data/cache/gpt2");
  const std::string exe = executable_dir();
  if (!exe.empty())
    for (const char* up : {"..", "../..", "."})
      candidates.push_back((fs::path(exe) / up / "data/cache/gpt2").lexically_normal().string());
  std::string list;
  for (const auto& c : candidates) {
    std::error_code ec;
    if (fs::is_regular_file(fs::path(c) / "encoder.json", ec)) return c;
    list += (list.empty() ? "" : ", ") + c;
  }
  if (tried) *tried = list;
  return "";
}

}  // namespace mhc
