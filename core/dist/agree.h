// Agreement on failure: a step that may fail on some ranks only (input validation,
// writing a checkpoint) runs on every rank, then the ranks exchange whether it failed,
// and every rank throws the same CollectiveError: the message of the lowest failing rank
// (its own message on that rank). No rank is left waiting in a collective for a peer
// that already gave up.
#pragma once
#include <functional>
#include <string>

#include "comm.h"
#include "error.h"

namespace mhc::dist {

// An error every rank raises together; the ranks can exit cleanly (no abort needed).
class CollectiveError : public MhcError {
 public:
  using MhcError::MhcError;
};

// Runs fn; when it throws (std::exception) on any rank, throws CollectiveError on all.
// With one rank it just runs fn (its exception propagates unchanged).
void agree(Communicator& comm, const std::function<void()>& fn);

// Gives every rank root's string.
void broadcast_string(Communicator& comm, std::string& text, int root);

// Throws CollectiveError on every rank whose config hash differs from rank 0's, and on
// rank 0 too, naming the differing keys.
void check_same_config(Communicator& comm, const std::string& config_yaml, uint64_t config_hash);

}  // namespace mhc::dist
