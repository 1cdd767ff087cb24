#include "data/prepare.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <set>
#include <system_error>

#include "data/shards.h"
#include "error.h"
#include "rng.h"
#include "text_util.h"
#include "tokenizer.h"

namespace mhc {

namespace {

namespace fs = std::filesystem;

// When no document hashes into validation (e.g. one input file), the tail of the stream is
// used instead, at least this long so a typical seq_len + 1 window fits, but never more
// than a quarter of the corpus.
constexpr int64_t kMinTailValTokens = 1025;
// Fewer tokens than this in a split cannot fill one window of even a tiny model (64-token
// context + 1): such shards would only fail later, in training, so prepare refuses them.
constexpr int64_t kMinSplitTokens = 65;

struct Document {
  std::string path;  // as found, for reading and error messages
  std::string rel;   // relative to its input root; keys the train/val split
};

bool is_hidden(const fs::path& p) {
  const std::string name = p.filename().string();
  return !name.empty() && name[0] == '.';
}

// Regular files under `root` (recursively), skipping hidden files and directories and the
// output directory (so re-running with the output inside an input does not read shards).
void collect_directory(const fs::path& root, const fs::path& output_canonical,
                       std::vector<Document>& docs) {
  std::error_code ec;
  fs::recursive_directory_iterator it(root, ec);
  if (ec) fail("cannot list input directory '{}': {}", root.string(), ec.message());
  for (const fs::recursive_directory_iterator end; it != end; it.increment(ec)) {
    if (ec) fail("cannot list input directory '{}': {}", root.string(), ec.message());
    const fs::path& p = it->path();
    const bool is_dir = it->is_directory(ec);
    if (is_dir) {
      if (is_hidden(p) || fs::weakly_canonical(p, ec) == output_canonical)
        it.disable_recursion_pending();
      continue;
    }
    if (is_hidden(p) || !it->is_regular_file(ec)) continue;
    docs.push_back({p.string(), p.lexically_relative(root).generic_string()});
  }
  if (ec) fail("cannot list input directory '{}': {}", root.string(), ec.message());
}

std::vector<Document> collect_documents(const std::vector<std::string>& inputs,
                                        const fs::path& output_canonical) {
  std::vector<Document> docs;
  for (const auto& input : inputs) {
    std::error_code ec;
    const fs::file_status st = fs::status(input, ec);
    if (!fs::exists(st)) fail("prepare: input '{}' does not exist", input);
    if (fs::is_directory(st)) {
      collect_directory(input, output_canonical, docs);
    } else if (fs::is_regular_file(st)) {
      docs.push_back({input, fs::path(input).filename().generic_string()});
    } else {
      fail("prepare: input '{}' is neither a regular file nor a directory", input);
    }
  }
  std::sort(docs.begin(), docs.end(),
            [](const Document& a, const Document& b) { return a.path < b.path; });
  docs.erase(std::unique(docs.begin(), docs.end(),
                         [](const Document& a, const Document& b) { return a.path == b.path; }),
             docs.end());
  return docs;
}

// Splits `tokens` into the fewest shards of at most `max_tokens`, of near-equal size (so
// no shard is a tiny remainder), and writes them as <dir>/<name>_<split>_%06d.bin.
void write_split(const std::vector<uint16_t>& tokens, int64_t max_tokens, const fs::path& dir,
                 const std::string& name, const std::string& split, const std::string& tokenizer,
                 PrepareReport& report) {
  const auto total = static_cast<int64_t>(tokens.size());
  if (total == 0) return;
  const int64_t n_shards = (total + max_tokens - 1) / max_tokens;
  for (int64_t i = 0; i < n_shards; ++i) {
    const int64_t begin = total * i / n_shards, end = total * (i + 1) / n_shards;
    char file[64];
    std::snprintf(file, sizeof(file), "_%s_%06lld.bin", split.c_str(),
                  static_cast<long long>(i));
    const std::string path = (dir / (name + file)).string();
    write_shard(path, std::vector<uint16_t>(tokens.begin() + begin, tokens.begin() + end), tokenizer);
    report.files_written.push_back(path);
  }
}

// Whether `file` is named like one of our shards: <name>_(train|val)_<6 digits>.bin.
bool is_shard_name(const std::string& file, const std::string& name) {
  for (const std::string split : {"_train_", "_val_"}) {
    const std::string prefix = name + split;
    if (file.size() != prefix.size() + 6 + 4 || !starts_with(file, prefix) ||
        !ends_with(file, ".bin"))
      continue;
    const std::string digits = file.substr(prefix.size(), 6);
    if (std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }))
      return true;
  }
  return false;
}

// Shards from an earlier, larger run would otherwise be picked up by the data globs.
void remove_stale_shards(const fs::path& dir, const std::string& name,
                         const std::vector<std::string>& written) {
  std::set<std::string> keep;
  for (const auto& w : written) keep.insert(fs::path(w).filename().string());
  std::error_code ec;
  std::vector<fs::path> stale;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string file = entry.path().filename().string();
    if (is_shard_name(file, name) && !keep.count(file))
      stale.push_back(entry.path());
  }
  for (const auto& p : stale) {
    fs::remove(p, ec);
    if (ec) fail("cannot remove stale shard '{}': {}", p.string(), ec.message());
  }
}

}  // namespace

PrepareReport prepare_corpus(const PrepareOptions& options) {
  if (options.inputs.empty()) fail("prepare: no inputs given (use --input)");
  if (options.output_dir.empty()) fail("prepare: no output directory given (use --output)");
  if (!(options.val_fraction >= 0.0 && options.val_fraction < 1.0))
    fail("prepare: val_fraction must be in [0, 1) (got {})", options.val_fraction);
  if (options.shard_tokens < 1 || options.shard_tokens > std::numeric_limits<int32_t>::max())
    fail("prepare: shard_tokens must be in [1, {}] (got {})",
         std::numeric_limits<int32_t>::max(), options.shard_tokens);

  const auto tokenizer = make_tokenizer(options.tokenizer, options.gpt2_dir);
  const int vocab = tokenizer->vocab_size();
  const int32_t doc_start = tokenizer->document_start_token();
  if (vocab > 65536)
    fail("prepare: tokenizer '{}' has {} tokens, more than the shard format's uint16 holds",
         tokenizer->name(), vocab);

  const fs::path out_dir = fs::path(options.output_dir);
  std::string name = options.name;
  if (name.empty()) {
    // "out/" and "out/." have an empty or "." filename; the directory's own name is wanted.
    fs::path abs = fs::absolute(out_dir).lexically_normal();
    if (abs.filename().empty()) abs = abs.parent_path();
    name = abs.filename().string();
    if (name.empty() || name == "..")
      fail("prepare: cannot derive a shard name from '{}'; give a name", options.output_dir);
  }

  std::error_code ec;
  const fs::path out_canonical = fs::weakly_canonical(out_dir, ec);
  const std::vector<Document> docs = collect_documents(options.inputs, out_canonical);
  if (docs.empty()) {
    std::string list;
    for (const auto& in : options.inputs) list += (list.empty() ? "'" : ", '") + in + "'";
    fail("prepare: no input files found in {} (hidden files are skipped)", list);
  }

  PrepareReport report;
  std::vector<uint16_t> train, val;
  for (const auto& doc : docs) {
    std::string text = read_text_file(doc.path);
    // Text never holds NUL bytes; an executable, image or archive almost always does.
    const size_t nul = text.find('\0');
    if (nul != std::string::npos)
      fail("prepare: input '{}' is not text (a NUL byte at offset {}); give text files", doc.path,
           nul);
    report.bytes += static_cast<int64_t>(text.size());
    const bool to_val = uniform01(hash_string(doc.rel), 0) < options.val_fraction;
    std::vector<uint16_t>& dest = to_val ? val : train;
    // A delimiter token starts each document (GPT-2's <|endoftext|>, as llm.c and nanoGPT
    // write their shards); without one (byte), a blank line ends each document.
    if (doc_start >= 0)
      dest.push_back(static_cast<uint16_t>(doc_start));
    else
      text += "\n\n";
    for (int32_t t : tokenizer->encode(text)) {
      MHC_CHECK(t >= 0 && t < vocab);
      dest.push_back(static_cast<uint16_t>(t));
    }
    ++report.documents;
  }

  // Few documents can leave one side empty; one side then holds the whole stream in
  // document order, and its tail becomes validation.
  if ((val.empty() || train.empty()) && options.val_fraction > 0.0) {
    if (train.empty()) train.swap(val);
    const auto n = static_cast<int64_t>(train.size());
    int64_t k = static_cast<int64_t>(std::ceil(options.val_fraction * static_cast<double>(n)));
    k = std::min(std::max({k, std::min(kMinTailValTokens, n / 4), int64_t{1}}), n);
    val.assign(train.end() - k, train.end());
    train.resize(static_cast<size_t>(n - k));
  }
  if (train.empty())
    fail("prepare: {} input documents hold only {} tokens, too few to split into training and "
         "validation data",
         report.documents, val.size());
  if (static_cast<int64_t>(train.size()) < kMinSplitTokens ||
      (options.val_fraction > 0.0 && static_cast<int64_t>(val.size()) < kMinSplitTokens))
    fail("prepare: {} input documents give {} train and {} val tokens; each split needs at least "
         "{} (one window of a 64-token context): give more text",
         report.documents, train.size(), val.size(), kMinSplitTokens);

  fs::create_directories(out_dir, ec);
  if (ec) fail("prepare: cannot create output directory '{}': {}", out_dir.string(), ec.message());
  write_split(train, options.shard_tokens, out_dir, name, "train", tokenizer->name(), report);
  write_split(val, options.shard_tokens, out_dir, name, "val", tokenizer->name(), report);
  remove_stale_shards(out_dir, name, report.files_written);
  report.train_tokens = static_cast<int64_t>(train.size());
  report.val_tokens = static_cast<int64_t>(val.size());
  return report;
}

}  // namespace mhc
