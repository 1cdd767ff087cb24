#include "dist/tcp_comm.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

#include "bf16.h"
#include "error.h"

namespace mhc::dist {
namespace {

using Clock = std::chrono::steady_clock;
constexpr uint32_t kMagic = 0x3163686du;  // "mhc1"
constexpr uint32_t kVersion = 2;  // 2: hosts in the hello, framed replies from rank 0
constexpr int64_t kChunkBytes = 8 << 20;

struct Hello {
  uint32_t magic, version;
  int32_t rank, size;
  char host[64];  // the sender's hostname, for error messages naming a lost rank's node
};

// Every message from rank 0 to a peer starts with one of these words; an abort is followed
// by its length and text (why rank 0 gave up: a lost rank, a timeout).
constexpr uint32_t kFrameData = 0x64617461u;   // "data"
constexpr uint32_t kFrameAbort = 0x61626f72u;  // "abor"

std::string this_host() {
  char host[64] = {0};
  ::gethostname(host, sizeof(host) - 1);
  return host;
}

int remaining_ms(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return static_cast<int>(std::max<int64_t>(0, left.count()));
}

// Waits until fd is readable (POLLIN) or writable; false on timeout.
bool wait_fd(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    pollfd p{fd, events, 0};
    const int r = ::poll(&p, 1, remaining_ms(deadline));
    if (r > 0) return true;
    if (r == 0) return false;
    if (errno != EINTR) return false;
  }
}

// Sends everything, or fails naming `who` (e.g. "rank 2 on n3"). A peer that stops reading
// (its node hangs, its link is cut) fills the socket buffers: the deadline bounds that wait.
void send_all(int fd, const void* data, size_t bytes, const std::string& who,
              Clock::time_point deadline, double limit_s) {
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    if (!wait_fd(fd, POLLOUT, deadline))
      fail("{} took nothing for {} s (dist.collective_timeout_s): its node or network is "
           "probably lost", who, limit_s);
    const ssize_t n = ::send(fd, p, bytes, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
    if (n <= 0)
      fail("lost the connection to {} while sending ({}); it probably exited, see its error",
           who, std::strerror(errno));
    p += n;
    bytes -= static_cast<size_t>(n);
  }
}

// Receives exactly `bytes`, or fails naming `who`: a closed or reset connection (the peer
// exited or was killed), or nothing arriving before the deadline (its node or link is gone,
// which no socket error ever reports).
void recv_all(int fd, void* data, size_t bytes, const std::string& who,
              Clock::time_point deadline, double limit_s) {
  char* p = static_cast<char*>(data);
  while (bytes > 0) {
    if (!wait_fd(fd, POLLIN, deadline))
      fail("{} sent nothing for {} s (dist.collective_timeout_s): its node or network is "
           "probably lost", who, limit_s);
    const ssize_t n = ::recv(fd, p, bytes, MSG_DONTWAIT);
    if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
    if (n == 0) fail("lost the connection to {}; it probably exited, see its error", who);
    // A peer killed mid-transfer (SIGKILL, OOM) shows as a reset rather than a clean close.
    if (n < 0 && errno == ECONNRESET)
      fail("lost the connection to {} (connection reset); it probably exited, see its error", who);
    if (n < 0) fail("receiving from {} failed: {}", who, std::strerror(errno));
    p += n;
    bytes -= static_cast<size_t>(n);
  }
}

// Reads exactly `bytes` before the deadline; false on timeout or a closed socket.
bool recv_by(int fd, void* data, size_t bytes, Clock::time_point deadline) {
  char* p = static_cast<char*>(data);
  while (bytes > 0) {
    if (!wait_fd(fd, POLLIN, deadline)) return false;
    const ssize_t n = ::recv(fd, p, bytes, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    p += n;
    bytes -= static_cast<size_t>(n);
  }
  return true;
}

void send_verdict(int fd, const std::string& error) {
  const uint32_t head[2] = {error.empty() ? 0u : 1u, static_cast<uint32_t>(error.size())};
  // Best effort: the peer may have gone.
  if (::send(fd, head, sizeof(head), MSG_NOSIGNAL) == static_cast<ssize_t>(sizeof(head)) &&
      !error.empty())
    (void)::send(fd, error.data(), error.size(), MSG_NOSIGNAL);
}

void tune_socket(int fd) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  const int flags = ::fcntl(fd, F_GETFL, 0);
  ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
}

std::string rank_list(const std::vector<int>& ranks) {
  std::string out;
  const size_t shown = std::min<size_t>(ranks.size(), 16);
  for (size_t i = 0; i < shown; ++i) out += (i ? ", " : "") + std::to_string(ranks[i]);
  if (ranks.size() > shown) out += fmt::format(" and {} more", ranks.size() - shown);
  return out.empty() ? "none" : out;
}

}  // namespace

TcpComm::TcpComm(const RankEnv& env, double timeout_s, double collective_timeout_s)
    : rank_(env.rank),
      size_(env.size),
      local_rank_(env.local_rank),
      collective_timeout_s_(collective_timeout_s),
      collective_timeout_(std::chrono::milliseconds(static_cast<int64_t>(collective_timeout_s * 1000))) {
  if (size_ == 1) return;
  if (env.master_addr.empty() || env.master_port == 0)
    fail("{} ranks without MPI need rank 0's address: set MASTER_ADDR and MASTER_PORT on every "
         "rank (scripts/launch_local.sh and scripts/slurm/train.sbatch do), or launch with mpirun",
         size_);
  where_ = fmt::format("{}:{}", env.master_addr, env.master_port);
  peer_fd_.assign(rank_ == 0 ? size_ : 1, -1);
  hosts_.assign(size_, "?");
  hosts_[rank_] = this_host();
  if (rank_ != 0) hosts_[0] = env.master_addr;
  if (rank_ == 0)
    rendezvous_root(timeout_s);
  else
    rendezvous_peer(timeout_s);
}

TcpComm::~TcpComm() {
  for (int fd : peer_fd_)
    if (fd >= 0) ::close(fd);
  if (listen_fd_ >= 0) ::close(listen_fd_);
}

std::string TcpComm::name() const {
  if (rank_ != 0 || size_ == 1) return fmt::format("tcp (rank 0 at {})", where_);
  // Rank 0 knows every rank's host: "ranks 0 on node1, 1-2 on node2" (runs of ranks).
  std::string placement;
  for (int r = 0; r < size_;) {
    int last = r;
    while (last + 1 < size_ && hosts_[last + 1] == hosts_[r]) ++last;
    placement += fmt::format("{}{} on {}", placement.empty() ? "" : ", ",
                             last == r ? std::to_string(r) : fmt::format("{}-{}", r, last), hosts_[r]);
    r = last + 1;
  }
  return fmt::format("tcp (rank 0 at {}; ranks {})", where_, placement);
}

void TcpComm::rendezvous_root(double timeout_s) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0) fail("rank 0: cannot create a socket: {}", std::strerror(errno));
  int one = 1;
  ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_ANY);
  const int port = std::stoi(where_.substr(where_.rfind(':') + 1));
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0)
    fail("rank 0: cannot listen on port {} (MASTER_PORT): {}", port, std::strerror(errno));
  if (::listen(listen_fd_, std::min(size_ + 16, 4096)) != 0)
    fail("rank 0: listen on port {} failed: {}", port, std::strerror(errno));

  std::vector<int> pending;  // accepted, not yet introduced
  int arrived = 1;
  std::string error;
  auto close_all = [&](const std::string& why) {
    for (int r = 1; r < size_; ++r)
      if (peer_fd_[r] >= 0) send_verdict(peer_fd_[r], why);
    for (int fd : pending) ::close(fd);
  };
  while (arrived < size_ && error.empty()) {
    std::vector<pollfd> fds{{listen_fd_, POLLIN, 0}};
    for (int fd : pending) fds.push_back({fd, POLLIN, 0});
    const int ready = ::poll(fds.data(), fds.size(), remaining_ms(deadline));
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) break;  // timeout
    if (fds[0].revents & POLLIN) {
      const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd >= 0) pending.push_back(fd);
    }
    for (size_t i = 1; i < fds.size(); ++i) {
      if (!fds[i].revents) continue;
      const int fd = fds[i].fd;
      pending.erase(std::find(pending.begin(), pending.end(), fd));
      Hello h{};
      const auto hello_deadline = std::min(deadline, Clock::now() + std::chrono::seconds(5));
      if (!recv_by(fd, &h, sizeof(h), hello_deadline) || h.magic != kMagic) {
        ::close(fd);  // not one of ours
        continue;
      }
      if (h.version != kVersion) {
        error = fmt::format("rank {} speaks rendezvous protocol {} but rank 0 speaks {}: every "
                            "rank must run the same mhc binary", h.rank, h.version, kVersion);
      } else if (h.size != size_) {
        error = fmt::format("rank {} was started with a world size of {} but rank 0 with {}: "
                            "every rank must see the same WORLD_SIZE", h.rank, h.size, size_);
      } else if (h.rank < 1 || h.rank >= size_) {
        error = fmt::format("a process introduced itself as rank {}, outside 1..{}", h.rank, size_ - 1);
      } else if (peer_fd_[h.rank] >= 0) {
        error = fmt::format("two processes introduced themselves as rank {}: check RANK on every "
                            "process", h.rank);
      } else {
        peer_fd_[h.rank] = fd;
        hosts_[h.rank] = std::string(h.host, strnlen(h.host, sizeof(h.host)));
        ++arrived;
        continue;
      }
      send_verdict(fd, error);
      ::close(fd);
    }
  }
  if (error.empty() && arrived < size_) {
    std::vector<int> missing, present{0};
    for (int r = 1; r < size_; ++r) (peer_fd_[r] < 0 ? missing : present).push_back(r);
    error = fmt::format("timed out after {} s (dist.timeout_s) waiting for rank(s) {} of {} at {}; "
                        "arrived: rank(s) {}. Check that every rank was launched with the same "
                        "MASTER_ADDR, MASTER_PORT and WORLD_SIZE", timeout_s, rank_list(missing),
                        size_, where_, rank_list(present));
  }
  if (!error.empty()) {
    close_all(error);
    fail("bootstrap failed on rank 0: {}", error);
  }
  for (int r = 1; r < size_; ++r) {
    send_verdict(peer_fd_[r], "");
    tune_socket(peer_fd_[r]);
  }
  for (int fd : pending) ::close(fd);
  ::close(listen_fd_);
  listen_fd_ = -1;
}

void TcpComm::rendezvous_peer(double timeout_s) {
  const auto start = Clock::now();
  const auto deadline = start + std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
  const std::string host = where_.substr(0, where_.rfind(':'));
  const std::string port = where_.substr(where_.rfind(':') + 1);
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  const int gai = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &res);
  if (gai != 0 || res == nullptr)
    fail("rank {}: cannot resolve MASTER_ADDR '{}': {}", rank_, host, ::gai_strerror(gai));
  sockaddr_in addr{};
  std::memcpy(&addr, res->ai_addr, sizeof(addr));
  ::freeaddrinfo(res);

  int fd = -1;
  std::string last_error = "no answer";
  while (Clock::now() < deadline) {
    fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) fail("rank {}: cannot create a socket: {}", rank_, std::strerror(errno));
    int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    if (rc != 0 && errno == EINPROGRESS) {
      if (wait_fd(fd, POLLOUT, deadline)) {
        int err = 0;
        socklen_t len = sizeof(err);
        ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
        rc = err == 0 ? 0 : -1;
        errno = err;
      } else {
        errno = ETIMEDOUT;
      }
    }
    if (rc == 0) break;
    last_error = std::strerror(errno);
    ::close(fd);
    fd = -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(std::min(100, remaining_ms(deadline))));
  }
  if (fd < 0)
    fail("rank {}: could not reach rank 0 at {} within {} s (dist.timeout_s; last error: {}). "
         "Is rank 0 running, and do all ranks have the same MASTER_ADDR and MASTER_PORT?",
         rank_, where_, timeout_s, last_error);
  tune_socket(fd);
  peer_fd_[0] = fd;
  Hello h{kMagic, kVersion, rank_, size_, {}};
  std::strncpy(h.host, hosts_[rank_].c_str(), sizeof(h.host) - 1);
  send_all(fd, &h, sizeof(h), who(0), deadline, timeout_s);
  // Rank 0 answers within its own timeout, which may have started a little later.
  const auto verdict_deadline =
      deadline + std::chrono::milliseconds(static_cast<int64_t>(std::min(timeout_s, 10.0) * 1000));
  uint32_t head[2] = {0, 0};
  if (!recv_by(fd, head, sizeof(head), verdict_deadline))
    fail("rank {}: rank 0 at {} did not complete the rendezvous within {} s (dist.timeout_s)",
         rank_, where_, timeout_s);
  if (head[0] != 0) {
    std::string msg(std::min<uint32_t>(head[1], 1 << 16), '\0');
    if (!recv_by(fd, msg.data(), msg.size(), verdict_deadline)) msg = "(message lost)";
    fail("bootstrap failed (reported by rank 0 to rank {}): {}", rank_, msg);
  }
}

int TcpComm::fd_of(int peer) const { return rank_ == 0 ? peer_fd_.at(peer) : peer_fd_.at(0); }

std::string TcpComm::who(int peer) const {
  return fmt::format("rank {} on {}", peer, hosts_.at(peer));
}

Clock::time_point TcpComm::collective_deadline() const {
  // A peer waits a little longer than rank 0, whose own wait for a lost rank may have
  // started later: rank 0's abort, naming that rank, then arrives first.
  const auto grace = rank_ == 0 ? Clock::duration::zero()
                                : std::min<Clock::duration>(collective_timeout_, std::chrono::seconds(10));
  return Clock::now() + collective_timeout_ + grace;
}

void TcpComm::send_to(int peer, const void* data, size_t bytes) {
  const auto deadline = collective_deadline();
  const double limit_s = collective_timeout_s_;
  if (rank_ != 0) {
    send_all(fd_of(peer), data, bytes, who(peer), deadline, limit_s);
    return;
  }
  try {
    send_all(fd_of(peer), &kFrameData, sizeof(kFrameData), who(peer), deadline, limit_s);
    send_all(fd_of(peer), data, bytes, who(peer), deadline, limit_s);
  } catch (const MhcError& e) {
    abort_peers(e.what(), peer);
    throw;
  }
}

void TcpComm::recv_from(int peer, void* data, size_t bytes) {
  const auto deadline = collective_deadline();
  const double limit_s = collective_timeout_s_;
  if (rank_ == 0) {
    try {
      recv_all(fd_of(peer), data, bytes, who(peer), deadline, limit_s);
    } catch (const MhcError& e) {
      abort_peers(e.what(), peer);
      throw;
    }
    return;
  }
  uint32_t frame = 0;
  recv_all(fd_of(peer), &frame, sizeof(frame), who(peer), deadline, limit_s);
  if (frame == kFrameAbort) {
    uint32_t len = 0;
    std::string why = "(no reason received)";
    try {
      recv_all(fd_of(peer), &len, sizeof(len), who(peer), deadline, limit_s);
      why.assign(std::min<uint32_t>(len, 1 << 16), '\0');
      recv_all(fd_of(peer), why.data(), why.size(), who(peer), deadline, limit_s);
    } catch (const MhcError&) {
    }
    fail("rank 0 ended the job: {}", why);
  }
  if (frame != kFrameData) fail("garbled message from {} (frame {:#x})", who(peer), frame);
  recv_all(fd_of(peer), data, bytes, who(peer), deadline, limit_s);
}

void TcpComm::abort_peers(const std::string& why, int lost) {
  // Best effort and brief: a peer that reads no more (blocked sending) gets a closed socket.
  const auto deadline = Clock::now() + std::chrono::seconds(2);
  const double limit_s = 2;
  const uint32_t len = static_cast<uint32_t>(why.size());
  for (int r = 1; r < size_; ++r) {
    if (r == lost || peer_fd_[r] < 0) continue;
    try {
      send_all(peer_fd_[r], &kFrameAbort, sizeof(kFrameAbort), who(r), deadline, limit_s);
      send_all(peer_fd_[r], &len, sizeof(len), who(r), deadline, limit_s);
      send_all(peer_fd_[r], why.data(), why.size(), who(r), deadline, limit_s);
    } catch (const MhcError&) {
    }
  }
}

template <class T>
void TcpComm::reduce_sum(T* data, int64_t count) {
  const int64_t chunk = std::max<int64_t>(1, kChunkBytes / static_cast<int64_t>(sizeof(T)));
  std::vector<T> buf;
  for (int64_t off = 0; off < count; off += chunk) {
    const int64_t n = std::min(chunk, count - off);
    const size_t bytes = static_cast<size_t>(n) * sizeof(T);
    T* d = data + off;
    if (rank_ == 0) {
      buf.resize(static_cast<size_t>(n));
      for (int r = 1; r < size_; ++r) {
        recv_from(r, buf.data(), bytes);
        for (int64_t i = 0; i < n; ++i) d[i] += buf[i];
      }
      for (int r = 1; r < size_; ++r) send_to(r, d, bytes);
    } else {
      send_to(0, d, bytes);
      recv_from(0, d, bytes);
    }
  }
}

void TcpComm::reduce_sum_bf16(float* data, int64_t count) {
  std::vector<uint16_t> wire(static_cast<size_t>(count)), buf;
  for (int64_t i = 0; i < count; ++i) wire[i] = float_to_bf16(data[i]);
  const size_t bytes = wire.size() * 2;
  if (rank_ == 0) {
    buf.resize(wire.size());
    for (int r = 1; r < size_; ++r) {
      recv_from(r, buf.data(), bytes);
      for (int64_t i = 0; i < count; ++i)
        wire[i] = float_to_bf16(bf16_to_float(wire[i]) + bf16_to_float(buf[i]));
    }
    for (int r = 1; r < size_; ++r) send_to(r, wire.data(), bytes);
  } else {
    send_to(0, wire.data(), bytes);
    recv_from(0, wire.data(), bytes);
  }
  for (int64_t i = 0; i < count; ++i) data[i] = bf16_to_float(wire[i]);
}

CommRequest TcpComm::all_reduce_sum_async(Tensor t, DType wire) {
  if (size_ == 1 || t.numel == 0) return 0;
  if (wire == DType::BF16 && t.dtype == DType::F32)
    reduce_sum_bf16(t.as<float>(), t.numel);
  else if (t.dtype == DType::F32)
    reduce_sum(t.as<float>(), t.numel);
  else if (t.dtype == DType::F64)
    reduce_sum(t.as<double>(), t.numel);
  else
    fail("tcp all-reduce: unsupported tensor dtype {}", dtype_name(t.dtype));
  return 0;
}

CommRequest TcpComm::reduce_scatter_sum_async(Tensor t, const std::vector<int64_t>& counts,
                                              DType wire) {
  MHC_CHECK(static_cast<int>(counts.size()) == size_);
  // Every piece is reduced everywhere, which the contract allows.
  return all_reduce_sum_async(t, wire);
}

CommRequest TcpComm::all_gather_async(Tensor t, const std::vector<int64_t>& counts) {
  MHC_CHECK(static_cast<int>(counts.size()) == size_);
  if (size_ == 1) return 0;
  const size_t es = dtype_size(t.dtype);
  std::vector<int64_t> offset(size_ + 1, 0);
  for (int r = 0; r < size_; ++r) offset[r + 1] = offset[r] + counts[r];
  MHC_CHECK(offset[size_] == t.numel);
  char* base = static_cast<char*>(t.data);
  if (rank_ == 0) {
    for (int r = 1; r < size_; ++r) recv_from(r, base + offset[r] * es, counts[r] * es);
    for (int r = 1; r < size_; ++r) send_to(r, base, t.bytes());
  } else {
    send_to(0, base + offset[rank_] * es, counts[rank_] * es);
    recv_from(0, base, t.bytes());
  }
  return 0;
}

void TcpComm::all_reduce_sum_host(double* data, int count) {
  if (size_ > 1 && count > 0) reduce_sum(data, count);
}

void TcpComm::broadcast_host(void* data, size_t bytes, int root) {
  if (size_ == 1 || bytes == 0) return;
  MHC_CHECK(root >= 0 && root < size_);
  if (rank_ == 0) {
    if (root != 0) recv_from(root, data, bytes);
    for (int r = 1; r < size_; ++r)
      if (r != root) send_to(r, data, bytes);
  } else if (rank_ == root) {
    send_to(0, data, bytes);
  } else {
    recv_from(0, data, bytes);
  }
}

void TcpComm::barrier() {
  double token = 0;
  all_reduce_sum_host(&token, 1);
}

}  // namespace mhc::dist
