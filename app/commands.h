// Each subcommand registers itself on the CLI11 app; the callbacks do the work and
// throw MhcError for user errors (main prints it on one line, exit code 1).
#pragma once
#include <atomic>
#include <string>

#include <CLI/CLI.hpp>

namespace mhc::app {

struct AppContext {
  std::string command_line;
  const std::atomic<bool>* stop_requested = nullptr;
  void (*install_stop_signals)() = nullptr;  // makes SIGINT/SIGTERM/SIGUSR1/SIGHUP set stop_requested
};

void add_train_command(CLI::App& app, const AppContext& ctx);
void add_prepare_command(CLI::App& app);
void add_eval_command(CLI::App& app);
void add_sample_command(CLI::App& app);
void add_export_command(CLI::App& app);
void add_inspect_command(CLI::App& app);
void add_bench_command(CLI::App& app);

}  // namespace mhc::app
