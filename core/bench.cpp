#include "bench.h"

#include <limits>

#include <chrono>

#include "backend_factory.h"
#include "model.h"
#include "optimizer.h"
#include "rng.h"
#include "timed_backend.h"
#ifdef MHC_WITH_CUDA
#include "cuda/cuda_backend.h"
#endif

namespace mhc {
namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

double device_peak_tflops(const Backend& be) {
#ifdef MHC_WITH_CUDA
  if (be.device() == DeviceKind::Cuda && be.compute_dtype() == DType::BF16)
    return probe_cuda(0).bf16_peak_tflops;
#endif
  (void)be;
  return 0;
}

}  // namespace

double flops_per_token(const ModelShape& s, const ParamLayout& layout) {
  double matmul = static_cast<double>(s.Vp) * s.C;  // the head
  for (const auto& sub : layout.sublayers) {
    if (sub.attention)
      matmul += 4.0 * s.C * s.C;
    else
      matmul += (s.swiglu ? 3.0 : 2.0) * s.hidden * s.C;
  }
  return 6.0 * matmul + 12.0 * s.L * s.C * s.T;
}

ConnectionShare connection_share(const std::map<std::string, double>& category_ms) {
  ConnectionShare share;
  for (const auto& [category, ms] : category_ms) {
    share.profiled_ms += ms;
    if (category == "conn_coeff" || category == "conn_streams") share.connection_ms += ms;
  }
  share.fraction = share.profiled_ms > 0 ? share.connection_ms / share.profiled_ms : 0;
  return share;
}

BenchResult run_bench(const Config& cfg, int steps, int warmup, spdlog::logger& log) {
  const ModelShape shape = model_shape_from_config(cfg);
  const ParamLayout layout = ParamLayout::build(shape, cfg);
  BackendChoice choice = make_backend(cfg.train);
  log.info("{}", choice.reason);
  Backend& be = *choice.backend;
  const int B = static_cast<int>(cfg.train.micro_batch), T = shape.T;
  const int64_t accum = cfg.train.grad_accum > 0 ? cfg.train.grad_accum : 1;
  BenchResult r;
  r.device = be.name();
  r.mode = residual_mode_name(shape.mode);
  r.tokens_per_step = static_cast<int64_t>(B) * T * accum;
  r.flops_per_token = flops_per_token(shape, layout);

  std::vector<int32_t> inputs(static_cast<size_t>(B) * T), targets(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    inputs[i] = static_cast<int32_t>(uniform01(1, i) * shape.V) % shape.V;
    targets[i] = static_cast<int32_t>(uniform01(2, i) * shape.V) % shape.V;
  }
  auto run_steps = [&](Model& model, AdamW& opt, int count, bool time_phases) {
    for (int s = 0; s < count; ++s) {
      model.zero_grads();
      for (int64_t m = 0; m < accum; ++m) {
        auto t0 = Clock::now();
        model.forward(inputs.data(), targets.data(), B, T, 1.0f / static_cast<float>(accum));
        if (time_phases) {
          be.synchronize();
          r.forward_ms += ms_since(t0);
          t0 = Clock::now();
        }
        model.backward();
        if (time_phases) {
          be.synchronize();
          r.backward_ms += ms_since(t0);
        }
      }
      const auto t0 = Clock::now();
      opt.step(1e-4, opt.grad_norm());
      be.synchronize();
      if (time_phases) r.optimizer_ms += ms_since(t0);
    }
  };

  {
    Model model(be, shape, layout, B, model_options_for_training(cfg, shape, B));
    model.init_weights(static_cast<uint64_t>(cfg.run.seed));
    AdamW opt(model, OptimizerSettings{});
    run_steps(model, opt, warmup, false);
    be.synchronize();
    const auto t0 = Clock::now();
    run_steps(model, opt, steps, false);
    be.synchronize();
    r.ms_per_step = ms_since(t0) / steps;
    run_steps(model, opt, steps, true);
    r.forward_ms /= steps;
    r.backward_ms /= steps;
    r.optimizer_ms /= steps;
  }
  {
    TimedBackend timed(be);
    Model model(timed, shape, layout, B, model_options_for_training(cfg, shape, B));
    model.init_weights(static_cast<uint64_t>(cfg.run.seed));
    AdamW opt(model, OptimizerSettings{});
    run_steps(model, opt, 1, false);
    timed.reset();
    run_steps(model, opt, steps, false);
    for (const auto& [category, sec] : timed.seconds()) r.category_ms[category] = 1000.0 * sec / steps;
  }
  r.tokens_per_s = r.tokens_per_step / (r.ms_per_step / 1000.0);
  r.achieved_tflops = r.tokens_per_s * r.flops_per_token / 1e12;
  const double peak = device_peak_tflops(be);
  r.mfu = peak > 0 ? r.achieved_tflops / peak : std::numeric_limits<double>::quiet_NaN();
  r.peak_bytes = be.peak_bytes();
  return r;
}

}  // namespace mhc
