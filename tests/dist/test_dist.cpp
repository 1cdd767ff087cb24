// Unit tests of the data-parallel pieces that run in one process: rank discovery, ZeRO
// shard and bucket plans, the model's grad-ready hook, the TCP communicator (ranks as
// threads on localhost), bucketed/ZeRO reduction and sharded checkpoints over it.
// (Multi-process training runs are in tests/dist/dist.sh.)
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <functional>
#include <map>
#include <thread>

#include "bf16.h"
#include "checkpoint.h"
#include "cpu/cpu_backend.h"
#include "dist/agree.h"
#include "dist/grad_reducer.h"
#include "dist/rank_env.h"
#include "dist/tcp_comm.h"
#include "model.h"
#include "optimizer.h"
#include "test_support.h"

namespace mhc {
namespace {

using dist::RankEnv;

RankEnv env_of(const std::map<std::string, std::string>& vars) {
  return dist::detect_rank_env([&](const char* name) -> const char* {
    auto it = vars.find(name);
    return it == vars.end() ? nullptr : it->second.c_str();
  });
}

TEST(RankEnv, NoLauncherIsOneRank) {
  const RankEnv e = env_of({});
  EXPECT_EQ(e.size, 1);
  EXPECT_EQ(e.rank, 0);
  EXPECT_EQ(e.source, "none");
  EXPECT_FALSE(e.mpi_launcher);
}

TEST(RankEnv, SlurmLocalSizeIsThisNodesEntryOfAnUnevenList) {
  auto local_size = [](const char* list, const char* node) {
    return env_of({{"SLURM_PROCID", "0"}, {"SLURM_STEP_NUM_TASKS", "9"},
                   {"SLURM_STEP_TASKS_PER_NODE", list}, {"SLURM_NODEID", node}})
        .local_size;
  };
  EXPECT_EQ(local_size("2,1", "0"), 2);
  EXPECT_EQ(local_size("2,1", "1"), 1);
  EXPECT_EQ(local_size("2(x3),1", "2"), 2);
  EXPECT_EQ(local_size("2(x3),1", "3"), 1);
  EXPECT_EQ(local_size("4,2(x2),1", "2"), 2);
  EXPECT_EQ(local_size("4,2(x2),1", "3"), 1);
  auto message = [](const char* list, const char* node) {
    try {
      env_of({{"SLURM_PROCID", "0"}, {"SLURM_STEP_NUM_TASKS", "9"},
              {"SLURM_STEP_TASKS_PER_NODE", list}, {"SLURM_NODEID", node}});
    } catch (const MhcError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message("2,1", "2").find("lists 2 node(s), but SLURM_NODEID is 2"), std::string::npos);
  EXPECT_NE(message("2(x", "0").find("SLURM_STEP_TASKS_PER_NODE='2(x'"), std::string::npos);
  // SLURM_LOCALID past this node's count: the variables disagree.
  try {
    env_of({{"SLURM_PROCID", "2"}, {"SLURM_STEP_NUM_TASKS", "3"}, {"SLURM_LOCALID", "2"},
            {"SLURM_STEP_TASKS_PER_NODE", "2,1"}, {"SLURM_NODEID", "1"}});
    ADD_FAILURE() << "no error";
  } catch (const MhcError& e) {
    EXPECT_NE(std::string(e.what()).find("local rank 2 but 1 rank(s) on this node"), std::string::npos)
        << e.what();
  }
}

TEST(RankEnv, TorchrunVariablesWinOverTheSlurmAllocation) {
  const RankEnv e = env_of({{"RANK", "3"}, {"WORLD_SIZE", "4"}, {"LOCAL_RANK", "1"},
                            {"LOCAL_WORLD_SIZE", "2"}, {"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "8"},
                            {"MASTER_ADDR", "node7"}, {"MASTER_PORT", "29500"}});
  EXPECT_EQ(e.source, "torchrun");
  EXPECT_EQ(e.rank, 3);
  EXPECT_EQ(e.size, 4);
  EXPECT_EQ(e.local_rank, 1);
  EXPECT_EQ(e.local_size, 2);
  EXPECT_EQ(e.master_addr, "node7");
  EXPECT_EQ(e.master_port, 29500);
}

TEST(RankEnv, OpenMpiWinsOverSlurmAndMarksAnMpiLauncher) {
  const RankEnv e = env_of({{"OMPI_COMM_WORLD_RANK", "1"}, {"OMPI_COMM_WORLD_SIZE", "2"},
                            {"OMPI_COMM_WORLD_LOCAL_RANK", "1"}, {"SLURM_PROCID", "0"},
                            {"SLURM_NTASKS", "1"}});
  EXPECT_EQ(e.source, "openmpi");
  EXPECT_TRUE(e.mpi_launcher);
  EXPECT_EQ(e.rank, 1);
  EXPECT_EQ(e.size, 2);
  EXPECT_EQ(e.local_rank, 1);
}

TEST(RankEnv, PmiAndSlurm) {
  RankEnv e = env_of({{"PMI_RANK", "5"}, {"PMI_SIZE", "6"}, {"MPI_LOCALRANKID", "2"}});
  EXPECT_EQ(e.source, "pmi");
  EXPECT_EQ(e.rank, 5);
  EXPECT_EQ(e.local_rank, 2);
  e = env_of({{"SLURM_PROCID", "9"}, {"SLURM_NTASKS", "64"}, {"SLURM_STEP_NUM_TASKS", "16"},
              {"SLURM_LOCALID", "1"}, {"SLURM_STEP_TASKS_PER_NODE", "8(x2)"}});
  EXPECT_EQ(e.source, "slurm");
  EXPECT_EQ(e.rank, 9);
  EXPECT_EQ(e.size, 16);  // the step's tasks, not the allocation's
  EXPECT_EQ(e.local_rank, 1);
  EXPECT_EQ(e.local_size, 8);
  EXPECT_FALSE(e.mpi_launcher);
}

TEST(RankEnv, MalformedValuesAreClearErrors) {
  auto message = [](const std::map<std::string, std::string>& vars) {
    try {
      env_of(vars);
    } catch (const MhcError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message({{"RANK", "4"}, {"WORLD_SIZE", "4"}}).find("rank 4 but a world size of 4"),
            std::string::npos);
  EXPECT_NE(message({{"RANK", "x"}, {"WORLD_SIZE", "4"}}).find("RANK='x'"), std::string::npos);
  EXPECT_NE(message({{"MASTER_PORT", "70000"}}).find("MASTER_PORT=70000"), std::string::npos);
}

TEST(ZeroShards, CoverTheBufferInAlignedContiguousPieces) {
  for (int64_t total : {0, 1, 64, 1000, 4096, 123457})
    for (int world : {1, 2, 3, 7, 64}) {
      const auto s = dist::shard_ranges(total, world);
      ASSERT_EQ(static_cast<int>(s.size()), world);
      EXPECT_EQ(s.front().begin, 0);
      EXPECT_EQ(s.back().end, total);
      for (int r = 0; r < world; ++r) {
        EXPECT_LE(s[r].begin, s[r].end);
        if (r) EXPECT_EQ(s[r].begin, s[r - 1].end);
        if (s[r].end < total) EXPECT_EQ(s[r].end % 64, 0);
      }
    }
}

TEST(GradBuckets, CoverTheBufferBackwardsAtParameterBoundaries) {
  const Config cfg = testing::tiny_config("mhc", 2);
  const ModelShape shape = model_shape_from_config(cfg);
  const ParamLayout layout = ParamLayout::build(shape, cfg);
  for (int64_t bytes : {1LL, 256LL, 4096LL, 1LL << 30}) {
    const auto plan = dist::plan_buckets(layout, 4, bytes);
    ASSERT_FALSE(plan.empty());
    EXPECT_EQ(plan.front().range.end, layout.total);
    EXPECT_EQ(plan.back().range.begin, 0);
    std::vector<int> seen(layout.params.size(), 0);
    for (size_t b = 0; b < plan.size(); ++b) {
      if (b) EXPECT_EQ(plan[b].range.end, plan[b - 1].range.begin);
      if (b + 1 < plan.size()) EXPECT_GE(plan[b].range.size() * 4, bytes);
      for (int p : plan[b].params) {
        ++seen[p];
        EXPECT_GE(layout.params[p].offset, plan[b].range.begin);
        EXPECT_LE(layout.params[p].offset + layout.params[p].numel, plan[b].range.end);
      }
    }
    for (int c : seen) EXPECT_EQ(c, 1);
    if (bytes == 1) EXPECT_EQ(plan.size(), layout.params.size());
    if (bytes == 1LL << 30) EXPECT_EQ(plan.size(), 1u);
  }
}

// ---- the model's grad-ready hook --------------------------------------------------------

struct HookCase {
  std::string mode;
  bool dynamic, tied;
  std::string mlp;
};

class GradReadyHook : public ::testing::TestWithParam<HookCase> {};

TEST_P(GradReadyHook, ReportsEveryParameterOnceAfterItsGradientIsFinal) {
  const HookCase& hc = GetParam();
  Config cfg = testing::tiny_config(hc.mode, 2, hc.dynamic);
  cfg.model.tie_embeddings = hc.tied;
  cfg.model.mlp = hc.mlp;
  const ModelShape shape = model_shape_from_config(cfg);
  const ParamLayout layout = ParamLayout::build(shape, cfg);
  CpuBackend<double> backend(1);
  const int B = 2, T = shape.T;
  Model model(backend, shape, layout, B);
  model.init_weights(3);
  std::vector<double> w = model.get_params();
  const auto noise = testing::random_vector(w.size(), 5, 0.2);
  for (size_t i = 0; i < w.size(); ++i) w[i] += noise[i];
  model.set_params(w);
  const auto inputs = testing::random_tokens(B * T, shape.V, 1);
  const auto targets = testing::random_tokens(B * T, shape.V, 2);

  std::vector<std::vector<int>> calls;
  std::map<int, std::vector<double>> at_report;
  model.set_grad_ready_hook([&](const std::vector<int>& params) {
    calls.push_back(params);
    const std::vector<double> g = model.get_grads();
    for (int p : params) {
      const auto& info = layout.params[p];
      at_report[p].assign(g.begin() + info.offset, g.begin() + info.offset + info.numel);
    }
  });
  for (int micro = 0; micro < 2; ++micro) {  // also with accumulation into existing grads
    calls.clear();
    at_report.clear();
    if (micro == 0) model.zero_grads();
    model.forward(inputs.data(), targets.data(), B, T, 0.5f);
    model.backward();
    EXPECT_EQ(calls, model.grad_stages());
    ASSERT_EQ(static_cast<int>(calls.size()), shape.sublayers() + 2);
    const std::vector<double> final_grads = model.get_grads();
    std::vector<int> seen(layout.params.size(), 0);
    for (const auto& stage : calls)
      for (int p : stage) {
        ++seen[p];
        const auto& info = layout.params[p];
        const std::vector<double> fin(final_grads.begin() + info.offset,
                                      final_grads.begin() + info.offset + info.numel);
        EXPECT_EQ(at_report[p], fin) << info.name << " changed after it was reported";
      }
    for (size_t p = 0; p < seen.size(); ++p) EXPECT_EQ(seen[p], 1) << layout.params[p].name;
  }
  // The embedding is last (tied: the head's contribution comes first), sublayer 2L-1 first.
  EXPECT_EQ(calls.back(), std::vector<int>{layout.embed});
  EXPECT_NE(std::find(calls[1].begin(), calls[1].end(), layout.sublayers.back().w_out), calls[1].end());
  model.set_grad_ready_hook(nullptr);
  model.backward();  // no hook: nothing breaks
}

INSTANTIATE_TEST_SUITE_P(Modes, GradReadyHook,
                         ::testing::Values(HookCase{"baseline", false, true, "swiglu"},
                                           HookCase{"hc", true, false, "gelu"},
                                           HookCase{"hc", false, true, "swiglu"},
                                           HookCase{"mhc", false, false, "swiglu"}),
                         [](const auto& info) {
                           return info.param.mode + (info.param.dynamic ? "_dynamic" : "") +
                                  (info.param.tied ? "_tied" : "_untied") + "_" + info.param.mlp;
                         });

// ---- TCP communicator: ranks as threads -----------------------------------------------

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

RankEnv tcp_env(int rank, int size, int port) {
  RankEnv e;
  e.rank = rank;
  e.size = size;
  e.local_rank = rank;
  e.source = "torchrun";
  e.master_addr = "127.0.0.1";
  e.master_port = port;
  return e;
}

// Runs body(rank) on `world` threads; returns each rank's error ("" when none).
std::vector<std::string> run_ranks(int world, const std::function<void(int)>& body) {
  std::vector<std::string> errors(static_cast<size_t>(world));
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r)
    threads.emplace_back([&, r] {
      try {
        body(r);
      } catch (const std::exception& e) {
        errors[r] = e.what();
      }
    });
  for (auto& t : threads) t.join();
  return errors;
}

void expect_no_errors(const std::vector<std::string>& errors) {
  for (size_t r = 0; r < errors.size(); ++r) EXPECT_EQ(errors[r], "") << "rank " << r;
}

TEST(TcpComm, CollectivesAgreeOnEveryRank) {
  const int W = 3, port = free_port();
  expect_no_errors(run_ranks(W, [&](int r) {
    dist::TcpComm comm(tcp_env(r, W, port), 10.0, 30.0);
    ASSERT_EQ(comm.rank(), r);
    ASSERT_EQ(comm.size(), W);
    // Host sums, in rank order.
    double h[2] = {0.1 * (r + 1), 1.0};
    comm.all_reduce_sum_host(h, 2);
    EXPECT_EQ(h[0], (0.1 + 0.2) + 0.30000000000000004);
    EXPECT_EQ(h[1], 3.0);
    // Broadcast from a non-zero root.
    char text[16] = {0};
    if (r == 2) std::snprintf(text, sizeof(text), "from rank 2");
    comm.broadcast_host(text, sizeof(text), 2);
    EXPECT_STREQ(text, "from rank 2");
    // Tensor all-reduce, fp32 and fp64 and a bf16 wire.
    std::vector<float> f(1000);
    std::vector<double> d(1000);
    for (int i = 0; i < 1000; ++i) f[i] = static_cast<float>(i + r), d[i] = i * (r + 1.0);
    comm.all_reduce_sum(Tensor{f.data(), 1000, DType::F32});
    comm.all_reduce_sum(Tensor{d.data(), 1000, DType::F64});
    for (int i = 0; i < 1000; ++i) {
      EXPECT_EQ(f[i], static_cast<float>(3 * i + 3));
      EXPECT_EQ(d[i], 6.0 * i);
    }
    std::vector<float> b(64);
    for (int i = 0; i < 64; ++i) b[i] = 1.001f * static_cast<float>(i) + r;
    comm.wait(comm.all_reduce_sum_async(Tensor{b.data(), 64, DType::F32}, DType::BF16));
    for (int i = 0; i < 64; ++i) {
      float want = 0;
      for (int k = 0; k < W; ++k)
        want = k ? bf16_to_float(float_to_bf16(want + bf16_to_float(float_to_bf16(1.001f * i + k))))
                 : bf16_to_float(float_to_bf16(1.001f * i + k));
      EXPECT_EQ(b[i], want) << i;
    }
    // Reduce-scatter and all-gather with uneven pieces (one empty).
    const std::vector<int64_t> counts = {5, 0, 3};
    std::vector<float> g(8);
    for (int i = 0; i < 8; ++i) g[i] = static_cast<float>(10 * r + i);
    comm.reduce_scatter_sum(Tensor{g.data(), 8, DType::F32}, counts);
    const int64_t off = r == 0 ? 0 : 5, n = counts[r];
    for (int64_t i = off; i < off + n; ++i) EXPECT_EQ(g[i], static_cast<float>(30 + 3 * i));
    std::vector<float> a(8, -1.f);
    for (int64_t i = off; i < off + n; ++i) a[i] = static_cast<float>(100 * r + i);
    comm.all_gather(Tensor{a.data(), 8, DType::F32}, counts);
    for (int i = 0; i < 8; ++i) EXPECT_EQ(a[i], static_cast<float>(i < 5 ? i : 200 + i));
    comm.barrier();
  }));
}

TEST(TcpComm, AMissingRankIsAClearErrorAfterTheTimeout) {
  const int port = free_port();
  const auto start = std::chrono::steady_clock::now();
  // Ranks 0 and 1 of 3 arrive; rank 2 never does.
  const auto errors = run_ranks(2, [&](int r) { dist::TcpComm comm(tcp_env(r, 3, port), 0.5, 30.0); });
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(took, 5.0);
  EXPECT_NE(errors[0].find("timed out after 0.5 s (dist.timeout_s) waiting for rank(s) 2 of 3"),
            std::string::npos) << errors[0];
  EXPECT_NE(errors[0].find("arrived: rank(s) 0, 1"), std::string::npos) << errors[0];
  EXPECT_NE(errors[1].find("reported by rank 0 to rank 1"), std::string::npos) << errors[1];
  EXPECT_NE(errors[1].find("rank(s) 2 of 3"), std::string::npos) << errors[1];
  // A rank whose rank 0 never comes.
  const auto lonely = run_ranks(1, [&](int) { dist::TcpComm comm(tcp_env(1, 2, free_port()), 0.5, 30.0); });
  EXPECT_NE(lonely[0].find("rank 1: could not reach rank 0"), std::string::npos) << lonely[0];
}

// A rank that falls silent mid-collective (its node lost: no socket error ever comes) is
// named with its host by rank 0 after dist.collective_timeout_s, and rank 0 tells every
// other rank the same before it gives up.
TEST(TcpComm, ASilentRankIsNamedWithItsHostOnEveryRank) {
  const int port = free_port();
  std::atomic<bool> done{false};
  const auto start = std::chrono::steady_clock::now();
  const auto errors = run_ranks(3, [&](int r) {
    dist::TcpComm comm(tcp_env(r, 3, port), 10.0, 0.5);
    double x = 1;
    comm.all_reduce_sum_host(&x, 1);
    if (r == 2) {  // alive, connected, and silent: what a cut link looks like
      while (!done) std::this_thread::sleep_for(std::chrono::milliseconds(10));
      return;
    }
    std::vector<float> g(100000, 1.f);
    try {
      comm.all_reduce_sum(Tensor{g.data(), 100000, DType::F32});
    } catch (...) {
      if (r == 1) done = true;
      throw;
    }
  });
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  char host[64] = {0};
  gethostname(host, sizeof(host) - 1);
  const std::string lost = std::string("rank 2 on ") + host + " sent nothing for 0.5 s";
  EXPECT_NE(errors[0].find(lost), std::string::npos) << errors[0];
  EXPECT_NE(errors[1].find("rank 0 ended the job: " + lost), std::string::npos) << errors[1];
  EXPECT_EQ(errors[2], "");
  EXPECT_LT(took, 5.0);
}

TEST(TcpComm, DisagreeingWorldSizesAreRejected) {
  const int port = free_port();
  const auto errors = run_ranks(2, [&](int r) {
    dist::TcpComm comm(tcp_env(r, r == 0 ? 2 : 3, port), 5.0, 30.0);
  });
  EXPECT_NE(errors[0].find("rank 1 was started with a world size of 3 but rank 0 with 2"),
            std::string::npos) << errors[0];
  EXPECT_NE(errors[1].find("world size of 3 but rank 0 with 2"), std::string::npos) << errors[1];
}

TEST(Agree, OneRanksFailureIsEveryRanksError) {
  const int port = free_port();
  const auto errors = run_ranks(2, [&](int r) {
    dist::TcpComm comm(tcp_env(r, 2, port), 10.0, 30.0);
    dist::agree(comm, [&] {
      if (r == 1) fail("disk full on rank 1");
    });
  });
  EXPECT_EQ(errors[1], "disk full on rank 1");
  EXPECT_EQ(errors[0], "rank 1: disk full on rank 1");
  const int port2 = free_port();
  const auto cfg_errors = run_ranks(2, [&](int r) {
    dist::TcpComm comm(tcp_env(r, 2, port2), 10.0, 30.0);
    Config cfg = testing::tiny_config("mhc", 2);
    if (r == 1) cfg.train.lr = 0.0123;
    dist::check_same_config(comm, config_to_yaml(cfg), config_hash(cfg));
  });
  for (const auto& e : cfg_errors)
    EXPECT_NE(e.find("different configs: rank(s) 1 differ from rank 0 (train.lr:"), std::string::npos) << "message: " << e;
}

// ---- bucketed reduction, ZeRO-1 and sharded checkpoints over TCP ----------------------

struct RankModel {
  Config cfg = testing::tiny_config("mhc", 2);
  ModelShape shape = model_shape_from_config(cfg);
  ParamLayout layout = ParamLayout::build(shape, cfg);
  CpuBackend<float> backend{1};
  Model model{backend, shape, layout, 2};
  RankModel() { model.init_weights(11); }
  // This rank's gradients for its own batch (accumulated over two micro-steps).
  void backward(int rank, const std::function<void(int)>& before_micro = nullptr) {
    model.zero_grads();
    for (int micro = 0; micro < 2; ++micro) {
      const auto in = testing::random_tokens(2 * shape.T, shape.V, 100 + 10 * rank + micro);
      const auto tg = testing::random_tokens(2 * shape.T, shape.V, 200 + 10 * rank + micro);
      model.forward(in.data(), tg.data(), 2, shape.T, 0.25f);
      if (before_micro) before_micro(micro);
      model.backward();
    }
  }
};

TEST(GradReducer, BucketsSumTheGradientsOfAllRanks) {
  const int W = 2;
  // Reference: each rank's local gradients, summed on the host.
  std::vector<double> want;
  for (int r = 0; r < W; ++r) {
    RankModel m;
    m.backward(r);
    const auto g = m.model.get_grads();
    if (want.empty()) want.assign(g.size(), 0.0);
    for (size_t i = 0; i < g.size(); ++i) want[i] += g[i];
  }
  for (bool zero : {false, true}) {
    const int port = free_port();
    expect_no_errors(run_ranks(W, [&](int r) {
      dist::TcpComm comm(tcp_env(r, W, port), 10.0, 30.0);
      RankModel m;
      dist::ReducerOptions ro;
      ro.bucket_bytes = 256;  // many buckets
      ro.zero = zero;
      dist::GradReducer reducer(comm, m.model, ro);
      ASSERT_GT(reducer.buckets().size(), 5u);
      m.backward(r, [&](int micro) {
        if (micro == 1) reducer.arm();
      });
      reducer.finish();
      const auto got = m.model.get_grads();
      const dist::Range mine = reducer.shard();
      for (int64_t i = mine.begin; i < mine.end; ++i)
        ASSERT_NEAR(got[i], want[i], 1e-6 * (1 + std::abs(want[i]))) << "element " << i;
    }));
  }
}

TEST(GradReducer, ZeroShardedUpdateEqualsTheReplicatedOne) {
  const int W = 2;
  OptimizerSettings os;
  os.grad_clip = 0.5;
  // Replicated: every rank does the same full update; take rank 0's.
  std::vector<double> replicated;
  std::vector<double> zeroed;
  for (bool zero : {false, true}) {
    const int port = free_port();
    expect_no_errors(run_ranks(W, [&](int r) {
      dist::TcpComm comm(tcp_env(r, W, port), 10.0, 30.0);
      RankModel m;
      dist::ReducerOptions ro;
      ro.bucket_bytes = 4096;
      ro.zero = zero;
      dist::GradReducer reducer(comm, m.model, ro);
      auto owned = zero ? std::make_unique<AdamW>(m.model, os, reducer.shard().begin, reducer.shard().end)
                        : std::make_unique<AdamW>(m.model, os);
      AdamW& opt = *owned;
      EXPECT_EQ(opt.sharded(), zero);
      for (int step = 0; step < 3; ++step) {
        m.backward(r, [&](int micro) {
          if (micro == 1) reducer.arm();
        });
        reducer.finish();
        double sq = zero ? opt.shard_grad_sum_squares() : 0.0;
        comm.all_reduce_sum_host(&sq, 1);
        const double norm = zero ? std::sqrt(sq) : opt.grad_norm();
        opt.step(1e-2, norm);
        if (zero) {
          reducer.all_gather_params();
          m.model.sync_working_weights();
        }
      }
      // Every rank holds the same whole master copy (after the all-gather under ZeRO).
      std::vector<double> p = m.model.get_params();
      std::vector<double> root = p;
      comm.broadcast_host(root.data(), root.size() * sizeof(double), 0);
      EXPECT_EQ(p, root) << "rank " << r;
      if (r == 0) (zero ? zeroed : replicated) = p;
    }));
  }
  ASSERT_EQ(replicated.size(), zeroed.size());
  for (size_t i = 0; i < replicated.size(); ++i)
    ASSERT_NEAR(zeroed[i], replicated[i], 1e-6) << "element " << i;
}

TEST(ShardedCheckpoint, EveryRankWritesItsShardAndAnyWorldSizeReadsThem) {
  const int W = 2;
  testing::ScratchDir scratch;
  const std::string run = scratch.file("run");
  std::vector<double> full_m, full_v;
  const int port = free_port();
  expect_no_errors(run_ranks(W, [&](int r) {
    dist::TcpComm comm(tcp_env(r, W, port), 10.0, 30.0);
    RankModel m;
    const auto shards = dist::shard_ranges(m.layout.total, W);
    AdamW opt(m.model, OptimizerSettings{}, shards[r].begin, shards[r].end);
    std::vector<double> mv(static_cast<size_t>(shards[r].size()));
    for (size_t i = 0; i < mv.size(); ++i) mv[i] = 1e-3 * static_cast<double>(shards[r].begin + i);
    m.backend.upload(opt.m(), mv.data());
    for (auto& x : mv) x = x * x;
    m.backend.upload(opt.v(), mv.data());
    opt.set_steps_taken(7);
    TrainState st;
    st.step = 7;
    st.world_size = W;
    CheckpointManager mgr(run, 0);
    const std::string dir = mgr.save(m.model, opt, st, m.cfg, "byte", comm);
    EXPECT_TRUE(std::filesystem::exists(dir + "/optim_rank0000" + std::to_string(r) + ".safetensors"));
  }));
  RankModel one;
  const std::string ckpt = resolve_checkpoint(run);
  validate_checkpoint(ckpt, one.cfg);
  // One process reads the whole state; three ranks read their thirds.
  const OptimizerMoments all = read_optimizer_moments(ckpt, one.model, 0, one.layout.total);
  EXPECT_EQ(all.adam_steps, 7);
  for (int64_t i = 0; i < one.layout.total; i += 97) {
    EXPECT_FLOAT_EQ(all.m[i], 1e-3 * i);
    EXPECT_FLOAT_EQ(all.v[i], 1e-6 * i * i);
  }
  for (const auto& s : dist::shard_ranges(one.layout.total, 3)) {
    const OptimizerMoments part = read_optimizer_moments(ckpt, one.model, s.begin, s.end);
    for (int64_t i = s.begin; i < s.end; ++i) ASSERT_EQ(part.m[i - s.begin], all.m[i]);
  }
  AdamW opt(one.model, OptimizerSettings{});
  restore_checkpoint(ckpt, one.cfg, one.model, opt);
  EXPECT_EQ(opt.steps_taken(), 7);
  std::filesystem::remove(ckpt + "/optim_rank00001.safetensors");
  EXPECT_THROW(validate_checkpoint(ckpt, one.cfg), MhcError);
}

}  // namespace
}  // namespace mhc
