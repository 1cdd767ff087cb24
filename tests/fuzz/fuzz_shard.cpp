// Fuzz harness: an llm.c token shard (256 x int32 header, then uint16 tokens), checked
// from memory as Shard checks its mapping, against a GPT-2-sized and a byte vocabulary.
// Bad input must be one MhcError; an accepted shard's size must match its header and its
// largest token must lie inside the vocabulary. Header ints 3..5 may record the tokenizer.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "data/shards.h"
#include "error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  for (int vocab : {50304, 256}) {
    try {
      const mhc::ShardCheck c = mhc::check_shard_bytes(data, size, "fuzz.bin", vocab);
      if (c.count <= 0 || static_cast<size_t>(c.count) * 2 + 1024 != size) std::abort();
      if (c.max_token < 0 || c.max_token >= vocab) std::abort();
    } catch (const mhc::MhcError&) {
    }
  }
  return 0;
}
