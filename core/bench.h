// `mhc bench`: training-step throughput of a config on random tokens (no data needed):
// tokens/s, ms/step, model FLOPs and MFU (where the device's peak is known), peak
// memory, and a per-phase breakdown (forward, backward, optimizer; and per op category
// from a separate synchronised profiling pass).
#pragma once
#include <map>
#include <memory>
#include <string>

#include <spdlog/logger.h>

#include "config.h"
#include "model_shape.h"
#include "param_layout.h"

namespace mhc {

struct BenchResult {
  std::string device;
  std::string mode;
  int64_t tokens_per_step = 0;
  double tokens_per_s = 0, ms_per_step = 0;
  double forward_ms = 0, backward_ms = 0, optimizer_ms = 0;
  double flops_per_token = 0, achieved_tflops = 0;
  double mfu = 0;  // NaN when the device's peak is unknown (any CPU): not knowable, not 0
  int64_t peak_bytes = 0;
  std::map<std::string, double> category_ms;  // per step, from the profiling pass
};

// The residual connection's part of a profiled step: its coefficient ops (projection,
// RMS, Sinkhorn or HC's maps) plus its stream ops (expand, aggregate, merge, collapse).
struct ConnectionShare {
  double connection_ms = 0;  // conn_coeff + conn_streams
  double profiled_ms = 0;    // every category of the profiling pass
  double fraction = 0;       // connection_ms / profiled_ms (0 when nothing was profiled)
};
ConnectionShare connection_share(const std::map<std::string, double>& category_ms);

// Training FLOPs per token: 6 × (matmul parameters incl. the head) + 12·L·C·T attention.
double flops_per_token(const ModelShape& shape, const ParamLayout& layout);

BenchResult run_bench(const Config& cfg, int steps, int warmup, spdlog::logger& log);

}  // namespace mhc
