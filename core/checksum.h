// Checksums of checkpoint files: XXH3-64 (Debian's libxxhash), as 16 hex digits. Fast
// enough (several GB/s) to verify every checkpoint on every load.
#pragma once
#include <cstdint>
#include <string>

namespace mhc {

struct FileDigest {
  int64_t bytes = 0;
  std::string xxh3;  // 16 lowercase hex digits
};

// Streams the file; MhcError naming the path and the system's reason when it cannot.
FileDigest digest_file(const std::string& path);
std::string xxh3_hex(const std::string& data);

}  // namespace mhc
