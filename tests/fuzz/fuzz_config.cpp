// Fuzz harness: a config YAML file (apply_config_text) and the cross-field checks
// (validate_config). Bad input must be one MhcError; an accepted config must come back
// unchanged from its own YAML (config_to_yaml is what checkpoints store and resume reads).
#include <cstdint>
#include <cstdlib>
#include <string>

#include "config.h"
#include "error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  mhc::Config cfg = mhc::default_config();
  try {
    mhc::apply_config_text(cfg, text, "fuzz.yaml");
    mhc::validate_config(cfg);
  } catch (const mhc::MhcError&) {
    return 0;
  }
  mhc::Config again = mhc::default_config();
  mhc::apply_config_text(again, mhc::config_to_yaml(cfg), "round trip");
  if (mhc::config_hash(again) != mhc::config_hash(cfg)) std::abort();
  return 0;
}
