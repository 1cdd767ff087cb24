// mhc: pretraining small transformers with baseline, HC or mHC residual connections.
// A thin main: subcommands live in cmd_*.cpp, all logic in core/.
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "commands.h"
#include "cli_common.h"
#include "error.h"

namespace {

// Signal handlers can only touch a lock-free atomic with static storage: SIGINT (Ctrl-C),
// SIGTERM, SIGUSR1 (Slurm preemption) and SIGHUP (a closed terminal) ask the trainer to
// finish the step, checkpoint and exit cleanly. A second one means "now": the default
// action (termination) runs. A repeated SIGHUP does not: a hangup can come twice (from the
// kernel and from the shell passing it on to its jobs).
std::atomic<bool> g_stop_requested{false};
static_assert(std::atomic<bool>::is_always_lock_free, "the signal handler needs a lock-free flag");

void on_stop_signal(int sig) {
  if (g_stop_requested.exchange(true)) {
    if (sig == SIGHUP) return;
    std::signal(sig, SIG_DFL);
    std::raise(sig);
    return;
  }
  // write(2) is async-signal-safe; the trainer logs the stop itself at the step's end.
  static const char msg[] =
      "\nstop requested: finishing this step, then checkpointing (send it again to abort at once)\n";
  [[maybe_unused]] ssize_t n = ::write(STDERR_FILENO, msg, sizeof(msg) - 1);
}

}  // namespace

void install_stop_signals() {
  for (int sig : {SIGINT, SIGTERM, SIGUSR1, SIGHUP}) {
    // A closed terminal or a dropped ssh session (SIGHUP) saves like Ctrl-C, except under
    // `nohup` (SIGHUP ignored), whose promise is that the run keeps going.
    struct sigaction old {};
    if (sig == SIGHUP && sigaction(sig, nullptr, &old) == 0 && old.sa_handler == SIG_IGN) continue;
    struct sigaction sa {};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;  // blocking reads and writes carry on; the loop polls the flag
    sigaction(sig, &sa, nullptr);
  }
}

int main(int argc, char** argv) {
  CLI::App app{"mhc: pretrain small transformers with baseline, HC or mHC residual connections", "mhc"};
  app.require_subcommand(1);
  // Every subcommand's --help shows each option's default (inherited by add_subcommand).
  app.option_defaults()->always_capture_default();
  app.footer("Run 'mhc help COMMAND' or 'mhc COMMAND --help' for a command's options.");
  app.set_version_flag("--version", std::string("mhc ") + MHC_VERSION);
  // Only training turns SIGINT/SIGTERM/SIGUSR1/SIGHUP into a graceful stop; other commands
  // keep the default (terminate).
  mhc::app::AppContext ctx{mhc::app::join_command_line(argc, argv), &g_stop_requested,
                           install_stop_signals};
  mhc::app::add_train_command(app, ctx);
  mhc::app::add_prepare_command(app);
  mhc::app::add_eval_command(app);
  mhc::app::add_sample_command(app);
  mhc::app::add_export_command(app);
  mhc::app::add_inspect_command(app);
  mhc::app::add_bench_command(app);
  std::vector<std::string> commands;
  for (const CLI::App* sub : app.get_subcommands([](CLI::App*) { return true; }))
    commands.push_back(sub->get_name());
  if (argc >= 2 && argv[1][0] != '-') {
    const std::string word = argv[1];
    if (word == "help") {  // mhc help [COMMAND]
      if (argc >= 3) {
        for (const CLI::App* sub : app.get_subcommands([](CLI::App*) { return true; }))
          if (sub->get_name() == argv[2]) {
            std::fputs(sub->help().c_str(), stdout);
            return 0;
          }
        std::fprintf(stderr, "error: unknown command '%s'%s\n", argv[2],
                     mhc::app::did_you_mean(argv[2], commands).c_str());
        return 1;
      }
      std::fputs(app.help().c_str(), stdout);
      return 0;
    }
    if (std::find(commands.begin(), commands.end(), word) == commands.end()) {
      std::fprintf(stderr, "error: unknown command '%s'%s\n", word.c_str(),
                   mhc::app::did_you_mean(word, commands).c_str());
      return 1;
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const mhc::ExitWithStatus& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return e.status();
  } catch (const mhc::MhcError& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  } catch (const std::filesystem::filesystem_error& e) {
    // A file-system failure is the user's environment (permissions, a full disk), not a
    // bug: say which path and the system's reason.
    std::string what = e.what();
    const std::string prefix = "filesystem error: ";
    if (what.compare(0, prefix.size(), prefix) == 0) what = what.substr(prefix.size());
    std::fprintf(stderr, "error: %s\n", what.c_str());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "internal error: %s\n", e.what());
    return 2;
  }
  return 0;
}
