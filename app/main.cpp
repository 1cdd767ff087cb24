// mhc: pretraining small transformers with baseline, HC or mHC residual connections.
// A thin main: subcommands live in cmd_*.cpp, all logic in core/.
#include <csignal>
#include <cstdio>

#include "commands.h"
#include "cli_common.h"
#include "error.h"

namespace {

// Signal handlers can only touch a lock-free atomic with static storage: SIGTERM and
// SIGUSR1 (Slurm preemption) ask the trainer to checkpoint and exit cleanly.
std::atomic<bool> g_stop_requested{false};

void on_stop_signal(int) { g_stop_requested.store(true); }

}  // namespace

void install_stop_signals() {
  std::signal(SIGTERM, on_stop_signal);
  std::signal(SIGUSR1, on_stop_signal);
}

int main(int argc, char** argv) {
  CLI::App app{"mhc: pretrain small transformers with baseline, HC or mHC residual connections"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("mhc ") + MHC_VERSION);
  // Only training turns SIGTERM/SIGUSR1 into a graceful stop; other commands keep the
  // default (terminate).
  mhc::app::AppContext ctx{mhc::app::join_command_line(argc, argv), &g_stop_requested,
                           install_stop_signals};
  mhc::app::add_train_command(app, ctx);
  mhc::app::add_prepare_command(app);
  mhc::app::add_eval_command(app);
  mhc::app::add_sample_command(app);
  mhc::app::add_export_command(app);
  mhc::app::add_inspect_command(app);
  mhc::app::add_bench_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const mhc::MhcError& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "internal error: %s\n", e.what());
    return 2;
  }
  return 0;
}
