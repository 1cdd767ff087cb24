// metrics.jsonl: one JSON object per logged step or evaluation, flushed line by line
// so a crashed run keeps everything it logged.
#pragma once
#include <cstdint>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "diagnostics.h"

namespace mhc {

class MetricsWriter {
 public:
  explicit MetricsWriter(const std::string& path);
  void write(const nlohmann::ordered_json& object);

 private:
  std::ofstream out_;
  std::string path_;
};

nlohmann::ordered_json amax_json(const AmaxGain& g);
// Seconds since the UNIX epoch (wall clock, sub-second resolution): metrics' "time".
double unix_time_s();
// The "step" of a metrics line, or -1 when it has none.
int64_t metrics_line_step(const std::string& line);

}  // namespace mhc
