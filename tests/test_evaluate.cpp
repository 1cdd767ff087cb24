// The shared evaluation routine (core/evaluate.h): which windows it reads, and that its
// mean loss and batch-means standard error are the arithmetic of per-sequence losses computed here
// independently, one sequence per forward, including a partial last micro-batch; the paired
// difference of two models on the same windows (mhc eval --compare, scripts/report) and the
// file that keeps a run's per-window losses.
#include <gtest/gtest.h>

#include <cmath>
#include <set>
#include <string>
#include <vector>

#include "cpu/cpu_backend.h"
#include "data/sampler.h"
#include "data/shards.h"
#include "evaluate.h"
#include "model.h"
#include "test_support.h"
#include "tokenizer.h"
#include "window_losses.h"

namespace mhc {
namespace {

TEST(EvalWindows, WholeSetIsEveryWindowOnce) {
  const std::vector<int64_t> w = eval_windows(37, 1000);
  ASSERT_EQ(w.size(), 37u);
  for (int64_t i = 0; i < 37; ++i) EXPECT_EQ(w[static_cast<size_t>(i)], i);
}

TEST(EvalWindows, SubsetIsSpreadOverTheSet) {
  const std::vector<int64_t> w = eval_windows(1000, 8);
  ASSERT_EQ(w.size(), 8u);
  EXPECT_EQ(w.front(), 0);
  EXPECT_GE(w.back(), 1000 - 1000 / 8);  // reaches the last eighth, not just the start
  for (size_t i = 1; i < w.size(); ++i) EXPECT_EQ(w[i] - w[i - 1], 125);
}

struct EvalFixture {
  static constexpr int kMaxBatch = 4;
  explicit EvalFixture(const std::string& shard_path)
      : cfg(testing::tiny_config("mhc", 2)), shape(model_shape_from_config(cfg)),
        layout(ParamLayout::build(shape, cfg)), backend(1), model(backend, shape, layout, kMaxBatch) {
    model.init_weights(3);
    // Away from init, so sequences score differently and the spread is not tiny.
    std::vector<double> w = model.get_params();
    const std::vector<double> noise = testing::random_vector(w.size(), 11, 0.3);
    for (size_t i = 0; i < w.size(); ++i) w[i] += noise[i];
    model.set_params(w);
    // 37 windows of T tokens (+1 for the last target): not a multiple of the batch.
    const std::vector<int32_t> t = testing::random_tokens(37 * shape.T + 1, shape.V, 5);
    write_shard(shard_path, std::vector<uint16_t>(t.begin(), t.end()));
    shards = std::make_unique<ShardSet>(shard_path, shape.V, "test");
    sampler = std::make_unique<SequenceSampler>(*shards, shape.T, 1);
  }
  // Mean loss of validation window w alone (a forward of one sequence).
  double sequence_loss(int64_t w) {
    std::vector<int32_t> in(static_cast<size_t>(shape.T)), tgt(in.size());
    sampler->val_sample(w, in.data(), tgt.data());
    return model.forward(in.data(), tgt.data(), 1, shape.T, 0.0f);
  }
  Config cfg;
  ModelShape shape;
  ParamLayout layout;
  CpuBackend<double> backend;
  Model model;
  std::unique_ptr<ShardSet> shards;
  std::unique_ptr<SequenceSampler> sampler;
};

TEST(Evaluate, MeanAndStandardErrorArePerSequenceArithmetic) {
  testing::ScratchDir dir;
  EvalFixture s(dir.file("val.bin"));
  const int64_t n = s.sampler->val_windows();
  ASSERT_EQ(n, 37);
  std::vector<double> m;
  for (int64_t w = 0; w < n; ++w) m.push_back(s.sequence_loss(w));
  double mean = 0;
  for (double v : m) mean += v / static_cast<double>(n);
  // Batch means: kSeBlocks blocks of consecutive windows (sizes 2 or 3 for 37 windows),
  // written out here independently of the routine's accumulation.
  const int blocks = kSeBlocks;
  std::vector<double> block_sum(blocks, 0.0), block_count(blocks, 0.0);
  for (int64_t w = 0; w < n; ++w) {
    const int b = static_cast<int>(w * blocks / n);
    block_sum[static_cast<size_t>(b)] += m[static_cast<size_t>(w)];
    block_count[static_cast<size_t>(b)] += 1;
  }
  double ss = 0;
  for (int b = 0; b < blocks; ++b) {
    ASSERT_GE(block_count[static_cast<size_t>(b)], 2.0);
    const double d = block_sum[static_cast<size_t>(b)] / block_count[static_cast<size_t>(b)] - mean;
    ss += d * d;
  }
  const double se = std::sqrt(ss / (blocks - 1) / blocks);
  ASSERT_GT(se, 1e-3);  // the check below would be vacuous for identical sequences

  ByteTokenizer tok;
  const EvalResult r = evaluate(s.model, *s.sampler, eval_windows(n, n), EvalFixture::kMaxBatch, &tok);
  EXPECT_EQ(r.sequences, n);
  EXPECT_EQ(r.tokens, n * s.shape.T);
  EXPECT_EQ(r.batches, (n + EvalFixture::kMaxBatch - 1) / EvalFixture::kMaxBatch);
  EXPECT_NEAR(r.loss, mean, 1e-12);
  EXPECT_NEAR(r.se, se, 1e-12);
  EXPECT_EQ(r.se_blocks, blocks);
  // Byte tokens decode to one byte each: bits per byte equal bits per token.
  EXPECT_EQ(r.bytes, static_cast<double>(r.tokens));
  EXPECT_NEAR(r.bits_per_byte(), r.bits_per_token(), 1e-12);
  EXPECT_NEAR(r.bits_per_token(), mean / std::log(2.0), 1e-12);

  // Disjoint parts: their token-weighted mean is the whole's loss.
  double weighted = 0;
  int64_t tokens = 0;
  for (int64_t lo = 0; lo < n; lo += 10) {
    std::vector<int64_t> part;
    for (int64_t w = lo; w < std::min<int64_t>(n, lo + 10); ++w) part.push_back(w);
    const EvalResult p = evaluate(s.model, *s.sampler, part, EvalFixture::kMaxBatch, nullptr);
    weighted += p.loss * static_cast<double>(p.tokens);
    tokens += p.tokens;
    EXPECT_EQ(p.bytes, 0.0);
    EXPECT_TRUE(std::isnan(p.bits_per_byte()));
  }
  EXPECT_EQ(tokens, r.tokens);
  EXPECT_NEAR(weighted / static_cast<double>(tokens), r.loss, 1e-12);
}

TEST(Evaluate, OneSequenceHasNoStandardError) {
  testing::ScratchDir dir;
  EvalFixture s(dir.file("val.bin"));
  const EvalResult r = evaluate(s.model, *s.sampler, {3}, EvalFixture::kMaxBatch, nullptr);
  EXPECT_EQ(r.sequences, 1);
  EXPECT_NEAR(r.loss, s.sequence_loss(3), 1e-12);
  EXPECT_TRUE(std::isnan(r.se));
}

TEST(BatchMeans, HandComputedBlocks) {
  // 32 values 0..31 in 16 blocks of two: block means 0.5, 2.5, ..., 30.5; their sample
  // variance is 4 · var(0..15) = 4 · 16·17/12, so se = sqrt(4·16·17/12 / 16).
  std::vector<double> v(32);
  for (int i = 0; i < 32; ++i) v[static_cast<size_t>(i)] = i;
  const BatchMeans b = batch_means(v);
  EXPECT_EQ(b.blocks, 16);
  EXPECT_DOUBLE_EQ(b.mean, 15.5);
  EXPECT_NEAR(b.se, std::sqrt(4.0 * 16 * 17 / 12 / 16), 1e-12);
  // A constant shift moves the mean, not the SE; three values make three blocks.
  for (double& x : v) x += 7;
  EXPECT_NEAR(batch_means(v).se, b.se, 1e-12);
  const BatchMeans three = batch_means({1.0, 2.0, 6.0});
  EXPECT_EQ(three.blocks, 3);
  EXPECT_NEAR(three.mean, 3.0, 1e-15);
  EXPECT_NEAR(three.se, std::sqrt(((4.0 + 1.0 + 9.0) / 2) / 3), 1e-12);
  EXPECT_TRUE(std::isnan(batch_means({2.0}).se));
}

TEST(Evaluate, PairedDifferenceIsPerWindowArithmetic) {
  testing::ScratchDir dir;
  EvalFixture s(dir.file("val.bin"));
  const int64_t n = s.sampler->val_windows();
  const std::vector<int64_t> windows = eval_windows(n, n);
  std::vector<double> loss_a;
  for (int64_t w = 0; w < n; ++w) loss_a.push_back(s.sequence_loss(w));
  const EvalResult ra = evaluate(s.model, *s.sampler, windows, EvalFixture::kMaxBatch, nullptr);
  // Model B: A slightly perturbed, so most of each window's loss is shared with A.
  std::vector<double> w = s.model.get_params();
  const std::vector<double> noise = testing::random_vector(w.size(), 17, 0.02);
  for (size_t i = 0; i < w.size(); ++i) w[i] += noise[i];
  s.model.set_params(w);
  std::vector<double> loss_b;
  for (int64_t v = 0; v < n; ++v) loss_b.push_back(s.sequence_loss(v));
  const EvalResult rb = evaluate(s.model, *s.sampler, windows, EvalFixture::kMaxBatch, nullptr);
  ASSERT_EQ(ra.window_losses.size(), static_cast<size_t>(n));
  for (int64_t v = 0; v < n; ++v) {
    EXPECT_NEAR(ra.window_losses[static_cast<size_t>(v)], loss_a[static_cast<size_t>(v)], 1e-12);
    EXPECT_NEAR(rb.window_losses[static_cast<size_t>(v)], loss_b[static_cast<size_t>(v)], 1e-12);
  }
  // The paired SE written out here: per-window differences, block means over the windows
  // [ceil(k·n/16), ceil((k+1)·n/16)), their sample sd / sqrt(16).
  std::vector<double> block_means;
  double mean = 0;
  for (int64_t v = 0; v < n; ++v) mean += (loss_b[static_cast<size_t>(v)] - loss_a[static_cast<size_t>(v)]) / n;
  for (int k = 0; k < kSeBlocks; ++k) {
    const int64_t lo = (k * n + kSeBlocks - 1) / kSeBlocks, hi = ((k + 1) * n + kSeBlocks - 1) / kSeBlocks;
    double sum = 0;
    for (int64_t v = lo; v < hi; ++v) sum += loss_b[static_cast<size_t>(v)] - loss_a[static_cast<size_t>(v)];
    block_means.push_back(sum / static_cast<double>(hi - lo));
  }
  double ss = 0;
  for (double m : block_means) ss += (m - mean) * (m - mean);
  const double paired_se = std::sqrt(ss / (kSeBlocks - 1) / kSeBlocks);
  std::vector<double> diff(static_cast<size_t>(n));
  for (size_t i = 0; i < diff.size(); ++i) diff[i] = rb.window_losses[i] - ra.window_losses[i];
  const BatchMeans d = batch_means(diff);
  EXPECT_NEAR(d.mean, mean, 1e-12);
  EXPECT_NEAR(d.mean, rb.loss - ra.loss, 1e-12);
  ASSERT_GT(paired_se, 0.0);
  EXPECT_NEAR(d.se, paired_se, 1e-12);
  // What pairing is for: the shared part cancels, so the difference is known far better
  // than either loss.
  EXPECT_LT(d.se, 0.5 * std::hypot(ra.se, rb.se));
}

TEST(WindowLosses, FileRoundTrip) {
  testing::ScratchDir dir;
  WindowLosses w;
  w.loss = {2.5, 3.25, 1.0 / 3.0};
  w.window = {0, 7, 11};
  w.step = 600;
  w.data = "data/x_val_*.bin";
  w.tokenizer = "byte";
  w.seq_len = 128;
  w.val_windows = 12;
  write_window_losses(dir.file("w.safetensors"), w);
  const WindowLosses r = read_window_losses(dir.file("w.safetensors"));
  EXPECT_EQ(r.loss, w.loss);  // float64: exact
  EXPECT_EQ(r.window, w.window);
  EXPECT_EQ(r.step, 600);
  EXPECT_EQ(r.data, w.data);
  EXPECT_EQ(r.tokenizer, "byte");
  EXPECT_EQ(r.seq_len, 128);
  EXPECT_EQ(r.val_windows, 12);
}

}  // namespace
}  // namespace mhc
