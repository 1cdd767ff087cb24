// A small process for tests/dist/dist.sh: joins a job over the TCP rendezvous (rank from
// torchrun-style variables, rank 0 at MASTER_ADDR:MASTER_PORT) the way an NCCL job
// bootstraps without MPI, then shows that every rank holds the same data:
//   id <hex>          rank 0's random 128-byte id (what ncclGetUniqueId would make)
//   sum <s>           the host sum of rank+1 over ranks
//   collectives ok    all-reduce / reduce-scatter / all-gather of tensors agree
// Usage: mhc_dist_tcp_probe TIMEOUT_S. Errors: one "error: ..." line, exit 1.
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "dist/rank_env.h"
#include "dist/tcp_comm.h"
#include "error.h"

int main(int argc, char** argv) {
  try {
    const double timeout = argc > 1 ? std::stod(argv[1]) : 10.0;
    const mhc::dist::RankEnv env = mhc::dist::detect_rank_env();
    mhc::dist::TcpComm comm(env, timeout, timeout);
    unsigned char id[128] = {0};
    if (comm.rank() == 0) {
      std::random_device rd;
      for (auto& b : id) b = static_cast<unsigned char>(rd());
    }
    comm.broadcast_host(id, sizeof(id), 0);
    std::string hex;
    for (unsigned char b : id) hex += "0123456789abcdef"[b >> 4], hex += "0123456789abcdef"[b & 15];
    std::printf("id %s\n", hex.c_str());
    double sum = comm.rank() + 1;
    comm.all_reduce_sum_host(&sum, 1);
    std::printf("sum %g\n", sum);

    const int W = comm.size(), r = comm.rank();
    std::vector<float> x(10);
    for (int i = 0; i < 10; ++i) x[i] = static_cast<float>(i * (r + 1));
    comm.all_reduce_sum(mhc::Tensor{x.data(), 10, mhc::DType::F32});
    bool ok = true;
    for (int i = 0; i < 10; ++i) ok = ok && x[i] == static_cast<float>(i * W * (W + 1) / 2);
    std::vector<int64_t> counts(W, 0);
    for (int k = 0; k < 10; ++k) counts[k % W] += 1;
    std::vector<double> g(10, -1.0);
    int64_t off = 0;
    for (int k = 0; k < r; ++k) off += counts[k];
    for (int64_t i = off; i < off + counts[r]; ++i) g[i] = 100.0 * r + static_cast<double>(i);
    comm.all_gather(mhc::Tensor{g.data(), 10, mhc::DType::F64}, counts);
    off = 0;
    for (int k = 0; k < W; ++k) {
      for (int64_t i = off; i < off + counts[k]; ++i) ok = ok && g[i] == 100.0 * k + static_cast<double>(i);
      off += counts[k];
    }
    comm.barrier();
    std::printf("collectives %s\n", ok ? "ok" : "WRONG");
    return ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
