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
constexpr uint32_t kVersion = 1;
constexpr int64_t kChunkBytes = 8 << 20;

struct Hello {
  uint32_t magic, version;
  int32_t rank, size;
};

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

void send_all(int fd, const void* data, size_t bytes, int peer) {
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    const ssize_t n = ::send(fd, p, bytes, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0)
      fail("lost the connection to rank {} while sending ({}); it probably exited, see its error",
           peer, std::strerror(errno));
    p += n;
    bytes -= static_cast<size_t>(n);
  }
}

void recv_all(int fd, void* data, size_t bytes, int peer) {
  char* p = static_cast<char*>(data);
  while (bytes > 0) {
    const ssize_t n = ::recv(fd, p, bytes, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n == 0) fail("lost the connection to rank {}; it probably exited, see its error", peer);
    // A peer killed mid-transfer (SIGKILL, OOM) shows as a reset rather than a clean close.
    if (n < 0 && errno == ECONNRESET)
      fail("lost the connection to rank {} (connection reset); it probably exited, see its error", peer);
    if (n < 0) fail("receiving from rank {} failed: {}", peer, std::strerror(errno));
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

TcpComm::TcpComm(const RankEnv& env, double timeout_s)
    : rank_(env.rank), size_(env.size), local_rank_(env.local_rank) {
  if (size_ == 1) return;
  if (env.master_addr.empty() || env.master_port == 0)
    fail("{} ranks without MPI need rank 0's address: set MASTER_ADDR and MASTER_PORT on every "
         "rank (scripts/launch_local.sh and scripts/slurm/train.sbatch do), or launch with mpirun",
         size_);
  where_ = fmt::format("{}:{}", env.master_addr, env.master_port);
  peer_fd_.assign(rank_ == 0 ? size_ : 1, -1);
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

std::string TcpComm::name() const { return fmt::format("tcp (rank 0 at {})", where_); }

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
  const Hello h{kMagic, kVersion, rank_, size_};
  send_all(fd, &h, sizeof(h), 0);
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

void TcpComm::send_to(int peer, const void* data, size_t bytes) {
  send_all(fd_of(peer), data, bytes, peer);
}
void TcpComm::recv_from(int peer, void* data, size_t bytes) {
  recv_all(fd_of(peer), data, bytes, peer);
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
