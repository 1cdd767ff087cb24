// Fuzz harness: a checkpoint's state.json (parse_train_state). state.json carries a
// checksum of its own text, which mutated input never matches, so each input is tried
// twice: as it is (the checksum check) and re-sealed as save() writes it (the fields
// behind the check). Bad input must be one MhcError, never a JSON library exception or
// undefined behaviour.
#include <cstdint>
#include <string>

#include "checkpoint.h"
#include "error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    mhc::parse_train_state(text, "state.json");
  } catch (const mhc::MhcError&) {
  }
  std::string sealed;
  try {
    sealed = mhc::seal_state_text(text);
  } catch (const mhc::MhcError&) {
    return 0;  // not JSON: nothing to seal
  }
  try {
    mhc::parse_train_state(sealed, "state.json");
  } catch (const mhc::MhcError&) {
  }
  return 0;
}
