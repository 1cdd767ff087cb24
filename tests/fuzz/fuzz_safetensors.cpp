// Fuzz harness: a safetensors file (8-byte header length, JSON header, data), parsed from
// memory, then every tensor read. Bad input must be one MhcError; whatever the header
// accepted must be readable within the file's data.
#include <cstdint>
#include <string>

#include "error.h"
#include "safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  try {
    const mhc::SafetensorsFile f = mhc::SafetensorsFile::from_bytes(bytes, "fuzz.safetensors");
    for (const auto& [name, info] : f.tensors()) {
      f.read(name);
      if (info.dtype == mhc::StDType::I64) f.read_i64(name);
    }
    f.metadata("adam_steps");
  } catch (const mhc::MhcError&) {
  }
  return 0;
}
