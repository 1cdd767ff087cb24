#include "checksum.h"

#include <xxhash.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <vector>

#include "error.h"

namespace mhc {
namespace {

std::string hex64(uint64_t v) { return fmt::format("{:016x}", v); }

}  // namespace

FileDigest digest_file(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) fail("cannot read '{}': {}", path, std::strerror(errno));
  std::unique_ptr<XXH3_state_t, XXH_errorcode (*)(XXH3_state_t*)> state(XXH3_createState(),
                                                                         XXH3_freeState);
  XXH3_64bits_reset(state.get());
  std::vector<char> buf(1 << 20);
  FileDigest d;
  for (;;) {
    const size_t n = std::fread(buf.data(), 1, buf.size(), f);
    if (n > 0) {
      XXH3_64bits_update(state.get(), buf.data(), n);
      d.bytes += static_cast<int64_t>(n);
    }
    if (n < buf.size()) break;
  }
  const bool bad = std::ferror(f) != 0;
  const int err = errno;
  std::fclose(f);
  if (bad) fail("cannot read '{}': {}", path, std::strerror(err));
  d.xxh3 = hex64(XXH3_64bits_digest(state.get()));
  return d;
}

std::string xxh3_hex(const std::string& data) { return hex64(XXH3_64bits(data.data(), data.size())); }

}  // namespace mhc
