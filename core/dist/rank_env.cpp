#include "dist/rank_env.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>

#include "error.h"

namespace mhc::dist {
namespace {

using Getenv = std::function<const char*(const char*)>;

bool has(const Getenv& env, const char* name) {
  const char* v = env(name);
  return v != nullptr && v[0] != '\0';
}

int parse_int(const Getenv& env, const char* name, int fallback, bool required = false) {
  const char* v = env(name);
  if (v == nullptr || v[0] == '\0') {
    if (required) fail("environment variable {} is not set", name);
    return fallback;
  }
  errno = 0;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  if (errno != 0 || end == v || *end != '\0' || x < 0 || x > 1 << 24)
    fail("environment variable {}='{}' is not a non-negative integer", name, v);
  return static_cast<int>(x);
}

// This node's task count from Slurm's per-node list, "2(x3),1" = 2,2,2,1: entry `node`
// (SLURM_NODEID). Uneven layouts (--ntasks=3 on 2 nodes: "2,1") differ per node.
int tasks_on_node(const char* name, const std::string& list, int node) {
  int seen = 0;
  size_t pos = 0;
  while (pos < list.size()) {
    const size_t end = std::min(list.find(',', pos), list.size());
    const std::string item = list.substr(pos, end - pos);
    int count = 0, repeat = 1;
    char tail = '\0';
    const int got = std::sscanf(item.c_str(), "%d(x%d%c", &count, &repeat, &tail);
    const bool ok = (got == 1 && item.find('(') == std::string::npos) || (got == 3 && tail == ')');
    if (!ok || count < 1 || repeat < 1)
      fail("environment variable {}='{}' is not a Slurm task list like 2(x3),1", name, list);
    if (node < seen + repeat) return count;
    seen += repeat;
    pos = end + 1;
  }
  fail("environment variable {}='{}' lists {} node(s), but SLURM_NODEID is {}", name, list, seen,
       node);
}

}  // namespace

std::string RankEnv::describe() const {
  static const char* names[][2] = {{"torchrun", "torchrun-style RANK/WORLD_SIZE"},
                                   {"openmpi", "Open MPI"},
                                   {"pmi", "PMI"},
                                   {"slurm", "Slurm"},
                                   {"none", "no launcher"}};
  std::string from = source;
  for (const auto& n : names)
    if (source == n[0]) from = n[1];
  return fmt::format("rank {} of {} (local {} of {}), from {} variables", rank, size, local_rank,
                     local_size, from);
}

RankEnv detect_rank_env(const Getenv& env) {
  RankEnv e;
  bool local_size_given = false;  // from a variable, not a default
  if (has(env, "RANK") && has(env, "WORLD_SIZE")) {
    e.source = "torchrun";
    e.rank = parse_int(env, "RANK", 0, true);
    e.size = parse_int(env, "WORLD_SIZE", 1, true);
    e.local_rank = parse_int(env, "LOCAL_RANK", e.rank);
    e.local_size = parse_int(env, "LOCAL_WORLD_SIZE", e.size);
    local_size_given = has(env, "LOCAL_WORLD_SIZE");
  } else if (has(env, "OMPI_COMM_WORLD_RANK") && has(env, "OMPI_COMM_WORLD_SIZE")) {
    e.source = "openmpi";
    e.mpi_launcher = true;
    e.rank = parse_int(env, "OMPI_COMM_WORLD_RANK", 0, true);
    e.size = parse_int(env, "OMPI_COMM_WORLD_SIZE", 1, true);
    e.local_rank = parse_int(env, "OMPI_COMM_WORLD_LOCAL_RANK", 0);
    e.local_size = parse_int(env, "OMPI_COMM_WORLD_LOCAL_SIZE", 1);
    local_size_given = has(env, "OMPI_COMM_WORLD_LOCAL_SIZE");
  } else if (has(env, "PMI_RANK") && has(env, "PMI_SIZE")) {
    e.source = "pmi";
    e.mpi_launcher = true;
    e.rank = parse_int(env, "PMI_RANK", 0, true);
    e.size = parse_int(env, "PMI_SIZE", 1, true);
    e.local_rank = has(env, "MPI_LOCALRANKID") ? parse_int(env, "MPI_LOCALRANKID", 0)
                                                : parse_int(env, "PMI_LOCAL_RANK", 0);
    e.local_size = has(env, "MPI_LOCALNRANKS") ? parse_int(env, "MPI_LOCALNRANKS", 1)
                                                : parse_int(env, "PMI_LOCAL_SIZE", 1);
  } else if (has(env, "SLURM_PROCID") && (has(env, "SLURM_STEP_NUM_TASKS") || has(env, "SLURM_NTASKS"))) {
    e.source = "slurm";
    e.rank = parse_int(env, "SLURM_PROCID", 0, true);
    e.size = has(env, "SLURM_STEP_NUM_TASKS") ? parse_int(env, "SLURM_STEP_NUM_TASKS", 1)
                                               : parse_int(env, "SLURM_NTASKS", 1);
    e.local_rank = parse_int(env, "SLURM_LOCALID", 0);
    e.local_size = 1;
    if (has(env, "SLURM_STEP_TASKS_PER_NODE") || has(env, "SLURM_TASKS_PER_NODE")) {
      const char* name = has(env, "SLURM_STEP_TASKS_PER_NODE") ? "SLURM_STEP_TASKS_PER_NODE"
                                                                : "SLURM_TASKS_PER_NODE";
      e.local_size = tasks_on_node(name, env(name), parse_int(env, "SLURM_NODEID", 0));
      local_size_given = true;
    }
  }
  if (e.size < 1) fail("{} variables give a world size of {}", e.source, e.size);
  if (e.rank >= e.size)
    fail("{} variables give rank {} but a world size of {}", e.source, e.rank, e.size);
  if (e.local_size < 1) e.local_size = 1;
  // A local rank past its node's task count means the launcher's variables disagree (or
  // are read wrongly); two ranks would then drive the same GPU.
  if (local_size_given && e.local_rank >= e.local_size)
    fail("{} variables give local rank {} but {} rank(s) on this node", e.source, e.local_rank,
         e.local_size);
  if (has(env, "MASTER_ADDR")) e.master_addr = env("MASTER_ADDR");
  if (has(env, "MASTER_PORT")) {
    e.master_port = parse_int(env, "MASTER_PORT", 0);
    if (e.master_port < 1 || e.master_port > 65535)
      fail("MASTER_PORT={} is not a TCP port (1-65535)", e.master_port);
  }
  return e;
}

RankEnv detect_rank_env() {
  return detect_rank_env([](const char* name) { return std::getenv(name); });
}

}  // namespace mhc::dist
