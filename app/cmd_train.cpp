// mhc train: resolve the config, then dry-run / print it, or train.
#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "backend_factory.h"
#include "cli_common.h"
#include "commands.h"
#include "comm_factory.h"
#include "data/shards.h"
#include "dist/agree.h"
#include "model.h"
#include "model_shape.h"
#include "param_layout.h"
#include "safetensors.h"
#include "run_lock.h"
#include "trainer.h"

namespace mhc::app {
namespace {

struct TrainArgs {
  std::vector<std::string> configs, sets;
  std::string run_dir, resume;
  int64_t stop_at_step = 0;
  bool print_config = false, dry_run = false, help_config = false, overwrite = false;
};

std::string human_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) {
    b /= 1024;
    ++u;
  }
  return fmt::format("{:.1f} {}", b, units[u]);
}

void dry_run(const Config& cfg) {
  const ModelShape shape = model_shape_from_config(cfg);
  const ParamLayout layout = ParamLayout::build(shape, cfg);
  std::printf("%-40s %-16s %12s  %s\n", "parameter", "shape", "count", "decay");
  for (const auto& p : layout.params) {
    const std::vector<int64_t> shp = user_param_shape(p, shape);
    int64_t count = 1;
    for (int64_t d : shp) count *= d;
    std::printf("%-40s %-16s %12lld  %s\n", p.name.c_str(), shape_string(shp).c_str(),
                static_cast<long long>(count), p.decay ? "yes" : "no");
  }
  const int64_t total = parameter_count(layout, shape);
  const int64_t conn = parameter_count(layout, shape, true);
  std::printf("\ntotal parameters: %lld (%.3fM; %lld in residual connections)\n",
              static_cast<long long>(total), total / 1e6, static_cast<long long>(conn));
  BackendChoice choice = make_backend(cfg.train);
  const Backend& be = *choice.backend;
  const int B = static_cast<int>(cfg.train.micro_batch);
  const int64_t model_bytes =
      Model::planned_bytes(be, shape, layout, B, model_options_for_training(cfg, shape, B));
  const int64_t opt_bytes = 2 * layout.total * static_cast<int64_t>(dtype_size(be.master_dtype()));
  std::printf("backend: %s\n", be.name().c_str());
  std::printf("memory estimate (micro-batch %d x %d): weights+grads+activations %s, optimizer %s, "
              "total %s\n", B, shape.T, human_bytes(static_cast<double>(model_bytes)).c_str(),
              human_bytes(static_cast<double>(opt_bytes)).c_str(),
              human_bytes(static_cast<double>(model_bytes + opt_bytes)).c_str());
  const char* where = be.device() == DeviceKind::Cpu ? "host memory" : "device memory";
  if (choice.memory_bytes > 0 && model_bytes + opt_bytes > choice.memory_bytes)
    std::fprintf(stderr, "warning: the memory estimate %s exceeds the %s (%s); lower "
                 "train.micro_batch (with train.grad_accum) or set train.recompute\n",
                 human_bytes(static_cast<double>(model_bytes + opt_bytes)).c_str(), where,
                 human_bytes(static_cast<double>(choice.memory_bytes)).c_str());
  // The data a run would read: a missing or malformed shard fails here, not at step 0.
  const ShardSet train(cfg.data.train, shape.V, "data.train");
  const ShardSet val(cfg.data.val, shape.V, "data.val");
  std::printf("data: %lld train tokens in %zu shards, %lld val tokens in %zu shards\n",
              static_cast<long long>(train.total_tokens()), train.shards().size(),
              static_cast<long long>(val.total_tokens()), val.shards().size());
}

// <first config file's stem>-<mode>, without doubling a stem that already names the mode
// (configs/hc.yaml gives "hc", not "hc-hc").
std::string default_run_name(const std::vector<std::string>& configs, const std::string& mode) {
  const std::string stem =
      configs.empty() ? std::string("run") : std::filesystem::path(configs.front()).stem().string();
  const std::string suffix = "-" + mode;
  if (stem == mode || (stem.size() > suffix.size() &&
                       stem.compare(stem.size() - suffix.size(), suffix.size(), suffix) == 0))
    return stem;
  return stem + suffix;
}

}  // namespace

void add_train_command(CLI::App& app, const AppContext& ctx) {
  auto args = std::make_shared<TrainArgs>();
  CLI::App* cmd = app.add_subcommand("train", "train a model from a config");
  cmd->add_option("-c,--config", args->configs, "YAML config file(s); later files override earlier");
  cmd->add_option("--set", args->sets, "override a key: --set train.lr=3e-4 (repeatable)");
  cmd->add_option("--run-dir", args->run_dir, "run directory (default <run.dir>/<run.name>)");
  cmd->add_option("--resume", args->resume, "'auto' (latest checkpoint of the run) or a checkpoint path");
  cmd->add_flag("--overwrite", args->overwrite, "start over in a run directory that has checkpoints");
  cmd->add_option("--stop-at-step", args->stop_at_step,
                  "checkpoint and exit once this step is done (e.g. before a job's time limit)");
  cmd->add_flag("--print-config", args->print_config, "print the resolved config and exit");
  cmd->add_flag("--dry-run", args->dry_run, "print the parameter table and memory estimate and exit");
  cmd->add_flag("--help-config", args->help_config, "list every config key and exit");
  cmd->callback([args, ctx]() {
    if (args->help_config) {
      print_config_help();
      return;
    }
    if (args->stop_at_step < 0)
      fail("--stop-at-step {}: must be >= 1 (or 0, the default, for no stop)", args->stop_at_step);
    Config cfg = resolve_config(args->configs, args->sets);
    if (cfg.run.name.empty()) cfg.run.name = default_run_name(args->configs, cfg.residual.mode);
    if (args->print_config) {
      std::fputs(config_to_yaml(cfg).c_str(), stdout);
      return;
    }
    if (args->dry_run) {
      dry_run(cfg);
      return;
    }
    // Nothing is created before the data are known to exist: a run started from the wrong
    // directory (relative data globs) fails here, leaving no empty run directory behind.
    shard_paths(cfg.data.train, "data.train");
    shard_paths(cfg.data.val, "data.val");
    // Joins the data-parallel job (a no-op for one process); bootstrap failures are
    // errors on every rank that arrived, after dist.timeout_s at most.
    if (ctx.install_stop_signals) ctx.install_stop_signals();
    CommChoice dist = make_communicator(cfg);
    Communicator& comm = *dist.comm;
    TrainOptions opts;
    opts.run_dir = args->run_dir.empty() ? default_run_dir(cfg) : args->run_dir;
    opts.resume = args->resume;
    opts.stop_at_step = args->stop_at_step;
    opts.overwrite = args->overwrite;
    opts.command_line = ctx.command_line;
    opts.stop_requested = ctx.stop_requested;
    // One writer per run directory: the rank that writes takes the lock before anything
    // is written (train.log included), so a second `mhc train` on it stops right here.
    RunLock lock;
    dist::agree(comm, [&] {
      if (comm.rank() == 0) lock = RunLock(opts.run_dir);
    });
    const std::string log_file = comm.rank() == 0 ? opts.run_dir + "/train.log" : "";
    // Only rank 0 logs (warnings and errors from every rank still reach the console).
    auto log = make_logger("train", log_file, comm.rank() != 0);
    // The run's own record gets the error too (the console line comes from main).
    auto log_error = [&](const std::exception& e) {
      if (!log_file.empty()) log_to_file_only(*log, spdlog::level::err, e.what());
    };
    if (comm.size() > 1 || !comm.trivial()) {
      log->info("data parallel: {} ranks over {}", comm.size(), comm.name());
      log->info("{} ({})", dist.reason, dist.env.describe());
    }
    TrainResult result;
    try {
      result = train(cfg, opts, comm, log);
    } catch (const dist::CollectiveError& e) {
      log_error(e);
      throw;  // every rank raised it together: exit cleanly everywhere
    } catch (const std::exception& e) {
      log_error(e);
      if (comm.size() > 1) {
        // The other ranks may be waiting in a collective for this one: end the job.
        std::fprintf(stderr, "error: rank %d: %s\n", comm.rank(), e.what());
        std::fflush(stderr);
        comm.abort(1);  // MPI: ends every rank. TCP: the peers see the connection drop.
        std::exit(1);
      }
      throw;
    }
    // Every rank saw the same reduced loss and returns here together.
    if (result.diverged)
      throw ExitWithStatus(kExitDiverged,
                           fmt::format("mhc train: {} (see metrics.jsonl; exit status {})",
                                       result.diverged_reason, kExitDiverged));
  });
}

}  // namespace mhc::app
