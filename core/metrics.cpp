#include "metrics.h"

#include <cerrno>
#include <cstring>
#include <chrono>

#include "error.h"

namespace mhc {

MetricsWriter::MetricsWriter(const std::string& path) : out_(path, std::ios::app) {
  if (!out_) fail("cannot open '{}' for writing: {}", path, std::strerror(errno));
  path_ = path;
}

void MetricsWriter::write(const nlohmann::ordered_json& object) {
  out_ << object.dump() << '\n';
  out_.flush();
  if (!out_) fail("cannot write to '{}': {}", path_, std::strerror(errno));
}

nlohmann::ordered_json amax_json(const AmaxGain& g) {
  nlohmann::ordered_json js;
  js["fwd_mean"] = g.fwd_mean;
  js["fwd_max"] = g.fwd_max;
  js["bwd_mean"] = g.bwd_mean;
  js["bwd_max"] = g.bwd_max;
  js["layer_fwd_mean"] = g.layer_fwd_mean;
  js["layer_fwd_max"] = g.layer_fwd_max;
  js["layer_fwd_worst"] = g.layer_fwd_worst;
  js["layer_bwd_mean"] = g.layer_bwd_mean;
  js["layer_bwd_max"] = g.layer_bwd_max;
  js["layer_bwd_worst"] = g.layer_bwd_worst;
  return js;
}

double unix_time_s() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

int64_t metrics_line_step(const std::string& line) {
  try {
    auto js = nlohmann::json::parse(line);
    if (js.contains("step")) return js["step"].get<int64_t>();
  } catch (const nlohmann::json::exception&) {
  }
  return -1;
}

}  // namespace mhc
