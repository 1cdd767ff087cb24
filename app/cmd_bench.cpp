// mhc bench: throughput, MFU and a per-phase breakdown of a config's training step.
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdio>

#include "bench.h"
#include "cli_common.h"
#include "commands.h"
#include "error.h"
#include "text_util.h"

namespace mhc::app {
namespace {

struct BenchArgs {
  std::vector<std::string> configs, sets;
  int steps = 10, warmup = 2;
  std::string json;
};

}  // namespace

void add_bench_command(CLI::App& app) {
  auto a = std::make_shared<BenchArgs>();
  CLI::App* cmd = app.add_subcommand("bench", "measure training-step throughput of a config");
  cmd->add_option("-c,--config", a->configs, "YAML config file(s)");
  cmd->add_option("--set", a->sets, "override a key (repeatable)");
  cmd->add_option("--steps", a->steps, "timed steps");
  cmd->add_option("--warmup", a->warmup, "untimed steps first");
  cmd->add_option("--json", a->json, "also write the result as JSON to this file");
  cmd->callback([a]() {
    if (a->steps < 1) fail("--steps {}: must be >= 1", a->steps);
    if (a->warmup < 0) fail("--warmup {}: must be >= 0", a->warmup);
    const Config cfg = resolve_config(a->configs, a->sets);
    auto log = make_logger("bench");
    const BenchResult r = run_bench(cfg, a->steps, a->warmup, *log);
    std::printf("device            %s\n", r.device.c_str());
    std::printf("residual mode     %s (n=%lld)\n", r.mode.c_str(),
                static_cast<long long>(r.mode == "baseline" ? 1 : cfg.residual.n));
    std::printf("tokens/step       %lld\n", static_cast<long long>(r.tokens_per_step));
    std::printf("tokens/s          %.1f\n", r.tokens_per_s);
    std::printf("ms/step           %.2f\n", r.ms_per_step);
    std::printf("model TFLOP/s     %.4f (%.3g FLOPs/token)\n", r.achieved_tflops, r.flops_per_token);
    if (std::isfinite(r.mfu)) std::printf("MFU               %.1f%%\n", 100 * r.mfu);
    else std::printf("MFU               n/a (device peak unknown)\n");
    std::printf("peak memory       %.1f MiB\n", r.peak_bytes / 1048576.0);
    std::printf("phases (ms/step)  forward %.2f | backward %.2f | optimizer %.2f\n", r.forward_ms,
                r.backward_ms, r.optimizer_ms);
    std::printf("ops (ms/step, synchronised profiling pass):");
    for (const auto& [k, v] : r.category_ms) std::printf(" %s %.2f |", k.c_str(), v);
    std::printf("\n");
    const ConnectionShare share = connection_share(r.category_ms);
    // The profiling pass synchronises after every op, so its total exceeds ms/step; the
    // share of it is what compares across modes.
    std::printf("connection        %.2f ms/step = %.1f%% of the profiled step (conn_coeff + conn_streams)\n",
                share.connection_ms, 100 * share.fraction);
    if (!a->json.empty()) {
      nlohmann::ordered_json js;
      js["device"] = r.device;
      js["mode"] = r.mode;
      js["tokens_per_step"] = r.tokens_per_step;
      js["tokens_per_s"] = r.tokens_per_s;
      js["ms_per_step"] = r.ms_per_step;
      js["forward_ms"] = r.forward_ms;
      js["backward_ms"] = r.backward_ms;
      js["optimizer_ms"] = r.optimizer_ms;
      js["flops_per_token"] = r.flops_per_token;
      js["achieved_tflops"] = r.achieved_tflops;
      // null, not 0, for a figure this device cannot give (MFU without a known peak).
      js["mfu"] = std::isfinite(r.mfu) ? nlohmann::ordered_json(r.mfu) : nlohmann::ordered_json();
      js["peak_bytes"] = r.peak_bytes;
      js["category_ms"] = r.category_ms;
      js["connection_ms"] = share.connection_ms;
      js["connection_share"] = share.fraction;
      write_file_atomic(a->json, js.dump(2) + "\n");
    }
  });
}

}  // namespace mhc::app
