// A star of TCP connections to rank 0 at MASTER_ADDR:MASTER_PORT (IPv4).
//
// Rendezvous: rank 0 listens; every other rank connects (retrying while rank 0 is not up
// yet) and introduces itself (magic, protocol version, rank, world size). When all ranks
// have arrived rank 0 answers "ok" to each; when dist.timeout_s passes first, rank 0
// tells the ranks that did arrive which ranks are missing, and every arrived rank fails
// with that message (a rank that cannot reach rank 0 fails naming rank 0). Nobody waits
// past the timeout (peers allow rank 0 a short grace to deliver its verdict).
//
// Each rank sends its hostname in the hello; rank 0 frames its replies, so that when it
// loses a rank (connection closed, or silent past dist.collective_timeout_s) it can tell
// every other rank which one, and on which host, before it exits.
//
// Collectives go through rank 0, which adds contributions in rank order, so every rank
// gets bit-identical results. It is the NCCL bootstrap (broadcast of the unique id) when
// there is no MPI, the host side-channel of an NCCL job, and a working (if unscalable)
// CPU data-parallel transport. Tensors must be in host memory.
#pragma once
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "comm.h"
#include "dist/rank_env.h"

namespace mhc::dist {

class TcpComm final : public Communicator {
 public:
  // Blocks until the job is assembled; MhcError (naming missing ranks) after timeout_s.
  // A collective that hears nothing from a peer for collective_timeout_s fails naming the
  // peer's rank and host (its node is lost: no socket error would ever come).
  TcpComm(const RankEnv& env, double timeout_s, double collective_timeout_s);
  ~TcpComm() override;
  TcpComm(const TcpComm&) = delete;
  TcpComm& operator=(const TcpComm&) = delete;

  std::string name() const override;
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int local_rank() const override { return local_rank_; }

  CommRequest all_reduce_sum_async(Tensor t, DType wire) override;
  CommRequest reduce_scatter_sum_async(Tensor t, const std::vector<int64_t>& counts,
                                       DType wire) override;
  CommRequest all_gather_async(Tensor t, const std::vector<int64_t>& counts) override;
  void wait(CommRequest) override {}
  void all_reduce_sum_host(double* data, int count) override;
  void broadcast_host(void* data, size_t bytes, int root) override;
  void barrier() override;

 private:
  void send_to(int peer, const void* data, size_t bytes);
  void recv_from(int peer, void* data, size_t bytes);
  int fd_of(int peer) const;
  std::string who(int peer) const;  // "rank 2 on node3"
  std::chrono::steady_clock::time_point collective_deadline() const;
  void abort_peers(const std::string& why, int lost);
  void rendezvous_root(double timeout_s);
  void rendezvous_peer(double timeout_s);
  template <class T>
  void reduce_sum(T* data, int64_t count);
  void reduce_sum_bf16(float* data, int64_t count);

  int rank_ = 0, size_ = 1, local_rank_ = 0;
  double collective_timeout_s_;
  std::chrono::steady_clock::duration collective_timeout_;
  std::string where_;        // "host:port"
  std::vector<std::string> hosts_;  // hostname of each rank (peers know only their own and 0's)
  int listen_fd_ = -1;
  std::vector<int> peer_fd_;  // rank 0: one socket per rank (index = rank); others: [0]
};

}  // namespace mhc::dist
