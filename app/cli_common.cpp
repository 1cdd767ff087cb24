#include "cli_common.h"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdio>

#include "error.h"
#include "text_util.h"

namespace mhc::app {

Config resolve_config(const std::vector<std::string>& files, const std::vector<std::string>& sets) {
  Config cfg = default_config();
  for (const auto& f : files) apply_config_file(cfg, f);
  for (const auto& s : sets) apply_config_override(cfg, s);
  validate_config(cfg);
  return cfg;
}

std::shared_ptr<spdlog::logger> make_logger(const std::string& name, const std::string& log_file,
                                            bool quiet) {
  std::vector<spdlog::sink_ptr> sinks;
  auto console = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
  console->set_pattern("[%H:%M:%S] %^%v%$");
  if (quiet) console->set_level(spdlog::level::warn);
  sinks.push_back(console);
  if (!log_file.empty()) {
    std::shared_ptr<spdlog::sinks::basic_file_sink_mt> file;
    try {
      file = std::make_shared<spdlog::sinks::basic_file_sink_mt>(log_file, false);
    } catch (const spdlog::spdlog_ex& e) {
      fail("cannot open log file '{}': {}", log_file, e.what());
    }
    file->set_pattern("[%Y-%m-%d %H:%M:%S.%e] [%l] %v");
    sinks.push_back(file);
  }
  auto logger = std::make_shared<spdlog::logger>(name, sinks.begin(), sinks.end());
  logger->set_level(spdlog::level::info);
  logger->flush_on(spdlog::level::info);
  return logger;
}

void log_to_file_only(spdlog::logger& log, spdlog::level::level_enum level, const std::string& msg) {
  std::vector<spdlog::sink_ptr> files;
  for (const auto& sink : log.sinks())
    if (std::dynamic_pointer_cast<spdlog::sinks::basic_file_sink_mt>(sink)) files.push_back(sink);
  if (files.empty()) return;
  spdlog::logger file_only(log.name(), files.begin(), files.end());
  file_only.log(level, msg);
  file_only.flush();
}

void print_config_help() {
  for (const auto& k : config_key_help())
    std::printf("%-28s %-16s default %-34s %s\n", k.key.c_str(), k.type.c_str(),
                k.default_value.c_str(), k.help.c_str());
}

std::string join_command_line(int argc, char** argv) {
  std::string out;
  for (int i = 0; i < argc; ++i) {
    std::string a = argv[i];
    bool quote = a.find_first_of(" \t'\"*?") != std::string::npos;
    out += (i ? " " : "") + (quote ? "'" + a + "'" : a);
  }
  return out;
}

std::string did_you_mean(const std::string& word, const std::vector<std::string>& known) {
  const std::string best = closest_match(word, known);
  if (!best.empty()) return "; did you mean '" + best + "'?";
  std::string list;
  for (const auto& k : known) list += (list.empty() ? "" : ", ") + k;
  return "; commands: " + list + ", help";
}

}  // namespace mhc::app
