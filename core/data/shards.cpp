#include "data/shards.h"

#include <fcntl.h>
#include <glob.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>

#include "error.h"

// Tokens are read straight out of the mapping, so the host must share the file's byte order.
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "token shards are little-endian and memory-mapped as is; big-endian is unsupported"
#endif

namespace mhc {

namespace {

constexpr size_t kHeaderBytes = kShardHeaderInts * sizeof(int32_t);

void write_all(int fd, const void* data, size_t bytes, const std::string& path) {
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    ssize_t w = ::write(fd, p, bytes);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      int err = errno;
      ::close(fd);
      fail("cannot write data shard '{}': {}", path, std::strerror(err));
    }
    p += w;
    bytes -= static_cast<size_t>(w);
  }
}

}  // namespace

namespace {

struct KnownTokenizer {
  const char* name;
  int32_t id;
  int32_t vocab;
};
constexpr KnownTokenizer kKnownTokenizers[] = {{"byte", 1, 256}, {"gpt2", 2, 50257}};

}  // namespace

int known_tokenizer_vocab(const std::string& tokenizer) {
  for (const auto& k : kKnownTokenizers)
    if (tokenizer == k.name) return k.vocab;
  fail("unknown tokenizer '{}' (known: byte, gpt2)", tokenizer);
}

void write_shard(const std::string& path, const std::vector<uint16_t>& tokens,
                 const std::string& tokenizer) {
  // An empty shard would be unreadable (the reader requires count > 0).
  if (tokens.empty()) fail("cannot write data shard '{}': no tokens", path);
  if (tokens.size() > static_cast<size_t>(std::numeric_limits<int32_t>::max()))
    fail("cannot write data shard '{}': {} tokens exceed the format's int32 count", path,
         tokens.size());
  int32_t header[kShardHeaderInts] = {};
  header[0] = kShardMagic;
  header[1] = kShardVersion;
  header[2] = static_cast<int32_t>(tokens.size());
  for (const auto& k : kKnownTokenizers)
    if (tokenizer == k.name) {
      header[3] = kShardTokenizerTag;
      header[4] = k.id;
      header[5] = k.vocab;
    }

  const std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) fail("cannot create data shard '{}': {}", tmp, std::strerror(errno));
  write_all(fd, header, sizeof(header), tmp);
  write_all(fd, tokens.data(), tokens.size() * sizeof(uint16_t), tmp);
  if (::fsync(fd) != 0 || ::close(fd) != 0)
    fail("cannot write data shard '{}': {}", tmp, std::strerror(errno));
  if (std::rename(tmp.c_str(), path.c_str()) != 0)
    fail("cannot rename '{}' to '{}': {}", tmp, path, std::strerror(errno));
}

Shard::Shard(const std::string& path, int vocab_size) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) fail("data shard '{}' does not exist", path);
    fail("cannot open data shard '{}': {}", path, std::strerror(errno));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    fail("cannot stat data shard '{}': {}", path, std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail("data shard '{}' is not a regular file", path);
  }
  const auto file_bytes = static_cast<size_t>(st.st_size);
  if (file_bytes == 0) {
    ::close(fd);
    fail("data shard '{}' is empty (0 bytes)", path);
  }
  void* map = ::mmap(nullptr, file_bytes, PROT_READ, MAP_PRIVATE, fd, 0);
  int map_err = errno;
  ::close(fd);  // the mapping stays valid without the descriptor
  if (map == MAP_FAILED) fail("cannot mmap data shard '{}': {}", path, std::strerror(map_err));
  map_ = map;
  map_bytes_ = file_bytes;
  try {
    const ShardCheck c = check_shard_bytes(map_, map_bytes_, path, vocab_size);
    count_ = c.count;
    tokenizer_ = c.tokenizer;
    max_token_ = c.max_token;
  } catch (...) {
    // The destructor does not run when the constructor throws, so unmap before failing.
    ::munmap(map_, map_bytes_);
    map_ = nullptr;
    throw;
  }
  tokens_ = reinterpret_cast<const uint16_t*>(static_cast<const char*>(map_) + kHeaderBytes);
}

ShardCheck check_shard_bytes(const void* bytes, size_t file_bytes, const std::string& path,
                             int vocab_size) {
  if (file_bytes < kHeaderBytes)
    fail("data shard '{}' is {} bytes, shorter than the {}-byte header (truncated?)", path,
         file_bytes, kHeaderBytes);
  int32_t header[kShardHeaderInts];
  std::memcpy(header, bytes, sizeof(header));
  if (header[0] != kShardMagic)
    fail("data shard '{}' has bad magic number {} (expected {}): not an llm.c token shard",
         path, header[0], kShardMagic);
  if (header[1] != kShardVersion)
    fail("data shard '{}' has unsupported version {} (expected {})", path, header[1],
         kShardVersion);
  const int64_t count = header[2];
  if (count <= 0) fail("data shard '{}' header says it holds {} tokens (must be > 0)", path, count);
  const size_t expected = kHeaderBytes + static_cast<size_t>(count) * sizeof(uint16_t);
  if (file_bytes != expected)
    fail("data shard '{}' is {} bytes but its header's token count {} needs {} bytes "
         "(truncated or corrupt)",
         path, file_bytes, count, expected);
  ShardCheck out;
  out.count = count;
  if (header[3] == kShardTokenizerTag) {
    for (const auto& k : kKnownTokenizers)
      if (header[4] == k.id) {
        out.tokenizer = k.name;
        if (header[5] != k.vocab)
          fail("data shard '{}' records tokenizer {} with vocabulary size {}, but {} has {} "
               "(corrupt header)", path, k.name, header[5], k.name, k.vocab);
      }
    if (out.tokenizer.empty())
      fail("data shard '{}' records an unknown tokenizer id {}", path, header[4]);
  }
  const auto* tokens = reinterpret_cast<const uint16_t*>(static_cast<const char*>(bytes) + kHeaderBytes);
  // One pass for the maximum; the position is looked up only when it is out of range.
  uint16_t max_token = 0;
  for (int64_t i = 0; i < count; ++i) max_token = std::max(max_token, tokens[i]);
  out.max_token = max_token;
  if (static_cast<int>(max_token) >= vocab_size) {
    const int64_t at =
        std::find_if(tokens, tokens + count, [&](uint16_t t) { return t >= vocab_size; }) - tokens;
    fail("data shard '{}' has token {} at position {}, not below the vocabulary size {} "
         "(largest token {}): set model.vocab_size to at least {} or use data tokenized for "
         "this vocabulary",
         path, tokens[at], at, vocab_size, max_token, max_token + 1);
  }
  return out;
}

Shard::~Shard() {
  if (map_ != nullptr) ::munmap(map_, map_bytes_);
}

Shard::Shard(Shard&& other) noexcept
    : path_(std::move(other.path_)),
      map_(other.map_),
      map_bytes_(other.map_bytes_),
      tokens_(other.tokens_),
      count_(other.count_),
      tokenizer_(std::move(other.tokenizer_)),
      max_token_(other.max_token_) {
  other.map_ = nullptr;
  other.map_bytes_ = 0;
  other.tokens_ = nullptr;
  other.count_ = 0;
}

std::vector<std::string> shard_paths(const std::string& glob_pattern, const std::string& config_key) {
  glob_t g{};
  int rc = ::glob(glob_pattern.c_str(), 0, nullptr, &g);
  std::vector<std::string> paths;
  if (rc == 0) paths.assign(g.gl_pathv, g.gl_pathv + g.gl_pathc);
  ::globfree(&g);
  if (rc == GLOB_NOMATCH || (rc == 0 && paths.empty())) {
    // A relative glob is the usual culprit when a run starts in another directory.
    std::error_code ec;
    const std::string where = !glob_pattern.empty() && glob_pattern[0] != '/'
                                  ? " (a relative path, from " + std::filesystem::current_path(ec).string() + ")"
                                  : "";
    fail("no data shards match '{}'{} (from {}); check the path, or create shards with "
         "`mhc prepare`",
         glob_pattern, where, config_key);
  }
  if (rc != 0)
    fail("cannot expand '{}' (from {}): {}", glob_pattern, config_key,
         rc == GLOB_NOSPACE ? "out of memory" : "read error");
  // glob(3) sorts by the locale's collation; byte order is the same everywhere.
  std::sort(paths.begin(), paths.end());
  return paths;
}

ShardSet::ShardSet(const std::string& glob_pattern, int vocab_size,
                   const std::string& config_key) {
  const std::vector<std::string> paths = shard_paths(glob_pattern, config_key);
  shards_.reserve(paths.size());
  for (const auto& p : paths) shards_.emplace_back(p, vocab_size);
}

void ShardSet::check_tokenizer(const std::string& tokenizer, const std::string& config_key) const {
  const int vocab = known_tokenizer_vocab(tokenizer);
  for (const auto& s : shards_) {
    if (!s.tokenizer().empty() && s.tokenizer() != tokenizer)
      fail("data shard '{}' was prepared with the {} tokenizer, but {} is '{}'; {}", s.path(),
           s.tokenizer(), config_key, tokenizer,
           config_key == "data.tokenizer" ? "set data.tokenizer: " + s.tokenizer()
                                          : "give data prepared with the " + tokenizer + " tokenizer");
    if (s.max_token() >= vocab)
      fail("data shard '{}' holds token {}, beyond the {} tokenizer's {} tokens ({}): it was "
           "made with another tokenizer",
           s.path(), s.max_token(), tokenizer, vocab, config_key);
  }
}

int64_t ShardSet::total_tokens() const {
  int64_t total = 0;
  for (const auto& s : shards_) total += s.size();
  return total;
}

}  // namespace mhc
