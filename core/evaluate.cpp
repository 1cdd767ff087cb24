#include "evaluate.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "error.h"

namespace mhc {

double EvalResult::bits_per_token() const { return loss / std::log(2.0); }

double EvalResult::bits_per_byte() const {
  if (bytes <= 0) return std::numeric_limits<double>::quiet_NaN();
  return loss * static_cast<double>(tokens) / std::log(2.0) / bytes;
}

std::vector<int64_t> eval_windows(int64_t total, int64_t count) {
  MHC_CHECK(total > 0 && count > 0);
  std::vector<int64_t> w;
  if (count >= total) {
    w.resize(static_cast<size_t>(total));
    for (int64_t i = 0; i < total; ++i) w[static_cast<size_t>(i)] = i;
    return w;
  }
  w.reserve(static_cast<size_t>(count));
  // Exact integer arithmetic: the same windows on every platform and rank.
  for (int64_t i = 0; i < count; ++i) w.push_back(static_cast<int64_t>(
      (static_cast<__int128>(i) * total) / count));
  return w;
}

BatchMeans batch_means(const std::vector<double>& values) {
  BatchMeans r;
  const int64_t count = static_cast<int64_t>(values.size());
  r.blocks = static_cast<int>(std::min<int64_t>(kSeBlocks, count));
  r.mean = std::numeric_limits<double>::quiet_NaN();
  r.se = std::numeric_limits<double>::quiet_NaN();
  if (count == 0) return r;
  std::vector<double> sum(static_cast<size_t>(r.blocks), 0.0), n(sum.size(), 0.0);
  for (int64_t p = 0; p < count; ++p) {
    const size_t blk = static_cast<size_t>((static_cast<__int128>(p) * r.blocks) / count);
    sum[blk] += values[static_cast<size_t>(p)];
    n[blk] += 1;
  }
  double total = 0;
  for (double s : sum) total += s;
  r.mean = total / static_cast<double>(count);
  if (r.blocks >= 2) {
    // Sample variance (blocks − 1 in the denominator) of the block means. Blocks differ
    // by at most one window in size; each block mean weighs its windows equally.
    double ss = 0;
    for (size_t b = 0; b < sum.size(); ++b) {
      const double mean_b = sum[b] / n[b];
      ss += (mean_b - r.mean) * (mean_b - r.mean);
    }
    r.se = std::sqrt(ss / (r.blocks - 1) / r.blocks);
  }
  return r;
}

EvalResult evaluate(Model& model, const SequenceSampler& sampler,
                    const std::vector<int64_t>& windows, int B, const Tokenizer* tok,
                    Communicator* comm, const EvalBatchHook& after_batch) {
  MHC_CHECK(B > 0);
  const int T = model.shape().T;
  const int rank = comm ? comm->rank() : 0, world = comm ? comm->size() : 1;
  const int64_t count = static_cast<int64_t>(windows.size());
  const int64_t batches = (count + B - 1) / B;
  std::vector<int32_t> in(static_cast<size_t>(B) * T), tgt(in.size()), seq;
  const int32_t doc_start = tok ? tok->document_start_token() : -1;
  // This rank's sums: [0] sequences, [1] bytes, then every window's mean loss at its
  // position (zero for the other ranks' windows; the all-reduce fills them in).
  std::vector<double> acc(2 + static_cast<size_t>(count), 0.0);
  for (int64_t batch = rank; batch < batches; batch += world) {
    const int64_t first = batch * B;
    const int rows = static_cast<int>(std::min<int64_t>(B, count - first));
    for (int r = 0; r < rows; ++r)
      sampler.val_sample(windows[static_cast<size_t>(first + r)], in.data() + static_cast<size_t>(r) * T,
                         tgt.data() + static_cast<size_t>(r) * T);
    model.forward(in.data(), tgt.data(), rows, T, 0.0f);
    const std::vector<double>& losses = model.token_losses();
    for (int r = 0; r < rows; ++r) {
      double s = 0;
      for (int t = 0; t < T; ++t) s += losses[static_cast<size_t>(r) * T + t];
      acc[0] += 1;
      acc[2 + static_cast<size_t>(first + r)] = s / T;
      if (tok) {
        // A document delimiter stands for no text: it adds no bytes.
        seq.clear();
        for (int t = 0; t < T; ++t) {
          const int32_t id = tgt[static_cast<size_t>(r) * T + t];
          if (id != doc_start) seq.push_back(id);
        }
        acc[1] += static_cast<double>(tok->decode(seq).size());
      }
    }
    if (after_batch) after_batch(batch);
  }
  if (comm) comm->all_reduce_sum_host(acc.data(), static_cast<int>(acc.size()));
  EvalResult res;
  res.sequences = static_cast<int64_t>(acc[0]);
  res.tokens = res.sequences * T;
  res.batches = batches;
  res.bytes = acc[1];
  res.window_losses.assign(acc.begin() + 2, acc.end());
  const BatchMeans bm = batch_means(res.window_losses);
  res.loss = bm.mean;
  res.se = bm.se;
  res.se_blocks = bm.blocks;
  return res;
}

}  // namespace mhc
