// The vectorisable float exp/tanh of the CPU kernels against libm.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "cpu/vec_math.h"

namespace mhc {
namespace {

TEST(VecMath, ExpMatchesLibmToAFewUlp) {
  double worst = 0;
  for (float x = -86.0f; x <= 88.0f; x += 0.001953125f) {
    const double want = std::exp(static_cast<double>(x));
    worst = std::max(worst, std::fabs(cpu::vexp(x) - want) / want);
  }
  EXPECT_LT(worst, 3e-7) << "max relative error over [-86, 88]";
}

TEST(VecMath, ExpEdges) {
  EXPECT_EQ(cpu::vexp(0.0f), 1.0f);
  EXPECT_EQ(cpu::vexp(-200.0f), 0.0f);
  EXPECT_TRUE(std::isnan(cpu::vexp(std::numeric_limits<float>::quiet_NaN())));
  EXPECT_GT(cpu::vexp(88.0f), 1e38f);
}

TEST(VecMath, TanhAndSigmoid) {
  double worst_tanh = 0, worst_sig = 0;
  for (float x = -20.0f; x <= 20.0f; x += 0.0078125f) {
    worst_tanh = std::max(worst_tanh, std::fabs(cpu::vtanh(x) - std::tanh(static_cast<double>(x))));
    worst_sig = std::max(worst_sig, std::fabs(cpu::vsigmoid(x) - 1.0 / (1.0 + std::exp(-static_cast<double>(x)))));
  }
  EXPECT_LT(worst_tanh, 5e-7);
  EXPECT_LT(worst_sig, 2e-7);
  EXPECT_TRUE(std::isnan(cpu::vtanh(std::numeric_limits<float>::quiet_NaN())));
}

}  // namespace
}  // namespace mhc
