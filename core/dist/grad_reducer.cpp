#include "dist/grad_reducer.h"

#include <algorithm>
#include <cstdlib>

#include "error.h"

namespace mhc::dist {

std::vector<Range> shard_ranges(int64_t total, int world) {
  MHC_CHECK(world >= 1 && total >= 0);
  constexpr int64_t kAlign = 64;
  const int64_t per = ((total + world - 1) / world + kAlign - 1) / kAlign * kAlign;
  std::vector<Range> out(static_cast<size_t>(world));
  for (int r = 0; r < world; ++r) {
    out[r].begin = std::min(total, r * per);
    out[r].end = std::min(total, (r + 1) * per);
  }
  return out;
}

std::vector<BucketPlan> plan_buckets(const ParamLayout& layout, int64_t bytes_per_element,
                                     int64_t bucket_bytes) {
  std::vector<BucketPlan> plan;
  const int P = static_cast<int>(layout.params.size());
  int64_t end = layout.total;
  BucketPlan cur;
  for (int i = P - 1; i >= 0; --i) {
    cur.params.push_back(i);
    const int64_t begin = layout.params[i].offset;
    if ((end - begin) * bytes_per_element >= bucket_bytes || i == 0) {
      cur.range = {i == 0 ? 0 : begin, end};
      plan.push_back(std::move(cur));
      cur = BucketPlan{};
      end = begin;
    }
  }
  return plan;
}

int64_t default_bucket_bytes(int64_t gradient_bytes) {
  if (const char* kb = std::getenv("MHC_BUCKET_KB"); kb && *kb) {
    const long long v = std::atoll(kb);
    if (v <= 0) fail("MHC_BUCKET_KB='{}' must be a positive number of KiB", kb);
    return static_cast<int64_t>(v) * 1024;
  }
  return std::max<int64_t>(1, std::min<int64_t>(25 << 20, gradient_bytes / 8));
}

GradReducer::GradReducer(Communicator& comm, Model& model, const ReducerOptions& options)
    : comm_(comm), model_(model), options_(options) {
  const ParamLayout& layout = model_.layout();
  const int64_t es = static_cast<int64_t>(dtype_size(model_.grads().dtype));
  if (options_.wire != model_.grads().dtype && options_.wire != DType::BF16)
    fail("gradient reduction dtype {} is not supported", dtype_name(options_.wire));
  if (options_.wire == DType::BF16 && model_.grads().dtype != DType::F32)
    fail("dist.reduce_dtype=bf16 needs fp32 gradients, not {}", dtype_name(model_.grads().dtype));
  shards_ = options_.zero ? shard_ranges(layout.total, comm_.size())
                          : std::vector<Range>(static_cast<size_t>(comm_.size()), Range{0, layout.total});
  plan_ = plan_buckets(layout, es, options_.bucket_bytes);
  bucket_of_.assign(layout.params.size(), -1);
  for (size_t b = 0; b < plan_.size(); ++b)
    for (int p : plan_[b].params) bucket_of_[p] = static_cast<int>(b);
  remaining_.assign(plan_.size(), 0);
  requests_.assign(plan_.size(), 0);
  launched_.assign(plan_.size(), true);  // nothing pending until arm()
  model_.set_grad_ready_hook([this](const std::vector<int>& params) { on_ready(params); });
}

GradReducer::~GradReducer() { model_.set_grad_ready_hook(nullptr); }

void GradReducer::arm() {
  for (size_t b = 0; b < plan_.size(); ++b) {
    remaining_[b] = static_cast<int>(plan_[b].params.size());
    launched_[b] = false;
    requests_[b] = 0;
  }
  armed_ = true;
}

void GradReducer::on_ready(const std::vector<int>& params) {
  if (!armed_) return;
  for (int p : params) {
    const int b = bucket_of_.at(p);
    if (--remaining_[b] == 0) launch(b);
  }
  comm_.progress();
}

void GradReducer::launch(int b) {
  MHC_CHECK(!launched_[b]);
  launched_[b] = true;
  const Range r = plan_[b].range;
  const Tensor t = model_.grads().slice(r.begin, r.size());
  if (!options_.zero) {
    requests_[b] = comm_.all_reduce_sum_async(t, options_.wire);
    return;
  }
  std::vector<int64_t> counts(shards_.size());
  for (size_t k = 0; k < shards_.size(); ++k)
    counts[k] = std::max<int64_t>(0, std::min(r.end, shards_[k].end) - std::max(r.begin, shards_[k].begin));
  requests_[b] = comm_.reduce_scatter_sum_async(t, counts, options_.wire);
}

void GradReducer::finish() {
  // Buckets launch in plan order when backward did not run (or skipped a stage); the
  // order is the same on every rank either way.
  for (size_t b = 0; b < plan_.size(); ++b)
    if (!launched_[b]) launch(static_cast<int>(b));
  for (size_t b = 0; b < plan_.size(); ++b) comm_.wait(requests_[b]);
  armed_ = false;
}

void GradReducer::all_gather_params() {
  if (!options_.zero) return;
  std::vector<int64_t> counts;
  for (const Range& r : shards_) counts.push_back(r.size());
  comm_.all_gather(model_.params(), counts);
}

int64_t GradReducer::reduced_bytes_per_step() const {
  const int64_t es = options_.wire == DType::BF16 ? 2 : static_cast<int64_t>(dtype_size(model_.grads().dtype));
  return model_.layout().total * es;
}

std::string GradReducer::describe() const {
  return fmt::format("{} buckets of <= {:.2f} MiB, {} reduction{}, {:.2f} MiB per step{}",
                     plan_.size(), options_.bucket_bytes / 1048576.0,
                     options_.wire == DType::BF16 ? "bf16" : "fp32",
                     options_.zero ? " (reduce-scatter)" : " (all-reduce)",
                     reduced_bytes_per_step() / 1048576.0,
                     options_.zero ? fmt::format("; ZeRO-1: this rank owns elements [{}, {})",
                                                 shard().begin, shard().end)
                                   : std::string());
}

}  // namespace mhc::dist
