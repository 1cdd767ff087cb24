#include "dist/agree.h"

#include <exception>
#include <vector>

#include "config.h"

namespace mhc::dist {

void agree(Communicator& comm, const std::function<void()>& fn) {
  if (comm.size() == 1) {
    fn();  // alone: the error (of whatever type) is already everyone's
    return;
  }
  std::string error;
  try {
    fn();
  } catch (const std::exception& e) {
    error = e.what();
    if (error.empty()) error = "unknown error";
  }
  std::vector<double> failed(static_cast<size_t>(comm.size()), 0.0);
  failed[comm.rank()] = error.empty() ? 0.0 : 1.0;
  comm.all_reduce_sum_host(failed.data(), comm.size());
  int first = -1, count = 0;
  for (int r = 0; r < comm.size(); ++r)
    if (failed[r] > 0) {
      if (first < 0) first = r;
      ++count;
    }
  if (first < 0) return;
  uint64_t length = comm.rank() == first ? error.size() : 0;
  comm.broadcast_host(&length, sizeof(length), first);
  std::string message(length, '\0');
  if (comm.rank() == first) message = error;
  comm.broadcast_host(message.data(), length, first);
  if (!error.empty()) throw CollectiveError(error);
  throw CollectiveError(fmt::format("rank {}{}: {}", first,
                                    count > 1 ? fmt::format(" (and {} more ranks)", count - 1) : "",
                                    message));
}

void broadcast_string(Communicator& comm, std::string& text, int root) {
  if (comm.size() == 1) return;
  uint64_t length = text.size();
  comm.broadcast_host(&length, sizeof(length), root);
  text.resize(length);
  comm.broadcast_host(text.data(), length, root);
}

void check_same_config(Communicator& comm, const std::string& config_yaml, uint64_t config_hash) {
  if (comm.size() == 1) return;
  uint64_t root_hash = config_hash;
  comm.broadcast_host(&root_hash, sizeof(root_hash), 0);
  std::vector<double> differs(static_cast<size_t>(comm.size()), 0.0);
  differs[comm.rank()] = root_hash != config_hash ? 1.0 : 0.0;
  comm.all_reduce_sum_host(differs.data(), comm.size());
  int first = -1;
  std::string ranks;
  for (int r = 0; r < comm.size(); ++r)
    if (differs[r] > 0) {
      if (first < 0) first = r;
      ranks += (ranks.empty() ? "" : ", ") + std::to_string(r);
    }
  if (first < 0) return;
  // Name the keys: compare rank 0's config with the first differing rank's.
  std::string other = comm.rank() == first ? config_yaml : std::string();
  broadcast_string(comm, other, first);
  std::string root_yaml = comm.rank() == 0 ? config_yaml : std::string();
  broadcast_string(comm, root_yaml, 0);
  std::string keys;
  try {
    Config a = default_config(), b = default_config();
    apply_config_text(a, root_yaml, "rank 0's config");
    apply_config_text(b, other, "another rank's config");
    for (const auto& d : config_differences(a, b, {""})) keys += (keys.empty() ? "" : "; ") + d;
  } catch (const std::exception&) {
    // The hashes still differ; report that.
  }
  throw CollectiveError(fmt::format(
      "the ranks were started with different configs: rank(s) {} differ from rank 0 ({}) [rank 0 "
      "vs rank {}]; start every rank with the same -c files and --set overrides",
      ranks, keys.empty() ? std::string("config hashes differ") : keys, first));
}

}  // namespace mhc::dist
