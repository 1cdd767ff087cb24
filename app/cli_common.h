// Pieces shared by the subcommands: resolving configs from -c/--set, loggers.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include <spdlog/logger.h>

#include "config.h"

namespace mhc::app {

// Defaults, then each -c file in order, then each --set override; validated.
Config resolve_config(const std::vector<std::string>& files, const std::vector<std::string>& sets);

// A console logger ("[time] message"); with log_file also appends to that file.
std::shared_ptr<spdlog::logger> make_logger(const std::string& name, const std::string& log_file = "",
                                            bool quiet = false);

// Writes one message to the logger's file sinks only (not the console).
void log_to_file_only(spdlog::logger& log, spdlog::level::level_enum level, const std::string& msg);

// Prints every config key with its type, default and help.
void print_config_help();

std::string join_command_line(int argc, char** argv);

// "; did you mean 'X'?" for the closest of `known` to `word`, else "; commands: a, b, ...".
std::string did_you_mean(const std::string& word, const std::vector<std::string>& known);

}  // namespace mhc::app
