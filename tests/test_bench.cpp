// `mhc bench`'s connection share: the arithmetic of connection_share(), and that a real
// profiling pass attributes connection work to the connection categories (none for the
// baseline, some for HC and mHC) without losing any of the step.
#include <gtest/gtest.h>

#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

#include "bench.h"
#include "test_support.h"

namespace mhc {
namespace {

TEST(BenchConnectionShare, SumsTheConnectionCategoriesOverAllOfThem) {
  const ConnectionShare s =
      connection_share({{"gemm", 6.0}, {"conn_coeff", 1.5}, {"conn_streams", 0.5}, {"norm", 2.0}});
  EXPECT_DOUBLE_EQ(s.connection_ms, 2.0);
  EXPECT_DOUBLE_EQ(s.profiled_ms, 10.0);
  EXPECT_DOUBLE_EQ(s.fraction, 0.2);
  EXPECT_EQ(connection_share({}).fraction, 0.0);  // nothing profiled: no division by zero
}

BenchResult bench_tiny(const std::string& mode, int n) {
  Config cfg = testing::tiny_config(mode, n);
  cfg.train.device = "cpu";
  cfg.train.threads = 1;
  cfg.train.micro_batch = 2;
  cfg.train.grad_accum = 1;
  cfg.train.batch_size = 2;
  spdlog::logger quiet("bench_test", std::make_shared<spdlog::sinks::null_sink_mt>());
  return run_bench(cfg, 2, 1, quiet);
}

TEST(BenchConnectionShare, BaselineHasNoneAndHyperConnectionsHaveSome) {
  const ConnectionShare baseline = connection_share(bench_tiny("baseline", 1).category_ms);
  EXPECT_EQ(baseline.connection_ms, 0.0);
  EXPECT_GT(baseline.profiled_ms, 0.0);
  for (const std::string mode : {"hc", "mhc"}) {
    const BenchResult r = bench_tiny(mode, 4);
    const ConnectionShare s = connection_share(r.category_ms);
    EXPECT_GT(r.category_ms.count("conn_coeff"), 0u) << mode;
    EXPECT_GT(r.category_ms.count("conn_streams"), 0u) << mode;
    EXPECT_GT(s.connection_ms, 0.0) << mode;
    EXPECT_GT(s.fraction, 0.0) << mode;
    EXPECT_LT(s.fraction, 1.0) << mode;
  }
}

}  // namespace
}  // namespace mhc
