// Bucketed gradient reduction overlapped with backward, and ZeRO-1 sharding.
//
// Buckets: the flat gradient buffer (ParamLayout order) is cut at parameter boundaries
// into contiguous ranges of about `bucket_bytes`, walking the layout backwards, i.e. in
// the order backward finalises gradients (head and final norm, blocks L-1 .. 0, the
// embedding last). Model::backward() reports each stage's finished parameters through
// its grad-ready hook; when the last parameter of a bucket is done, the bucket's
// collective starts at once (non-blocking MPI, or NCCL on its own stream after an event
// on the compute stream) while backward goes on with the earlier layers. finish() waits
// for what is still in flight. Only the last micro-step of a step is armed: the
// accumulation micro-steps before it only add into the local gradients.
//
// ZeRO-1 (dist.zero: 1): rank r owns elements [begin_r, end_r) of the flat buffer
// (shard_ranges: equal 64-element-aligned pieces; parameters may straddle ranks). Each
// bucket is reduce-scattered instead of all-reduced, so a rank ends up with the summed
// gradient of its own piece only; AdamW keeps moments for that piece only, updates that
// piece of the master weights, and all_gather_params() then gives every rank the whole
// updated master copy (it stays replicated: the connection coefficients read it).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "comm.h"
#include "model.h"

namespace mhc::dist {

struct Range {
  int64_t begin = 0, end = 0;
  int64_t size() const { return end - begin; }
};

// ZeRO-1 ownership of `total` elements over `world` ranks (aligned to 64 elements;
// trailing ranks may own fewer, or none, of a small model).
std::vector<Range> shard_ranges(int64_t total, int world);

struct BucketPlan {
  Range range;              // elements of the flat buffer (gaps between tensors included)
  std::vector<int> params;  // ParamLayout indices inside it
};
// Buckets in reverse layout order (bucket 0 ends at `total`), each at least one
// parameter and closed once it reaches bucket_bytes.
std::vector<BucketPlan> plan_buckets(const ParamLayout& layout, int64_t bytes_per_element,
                                     int64_t bucket_bytes);
// A bucket size for this model: 25 MiB (as PyTorch DDP) but at most an eighth of the
// gradients, so small models still get several buckets to overlap. MHC_BUCKET_KB in the
// environment overrides it (tuning, tests).
int64_t default_bucket_bytes(int64_t gradient_bytes);

struct ReducerOptions {
  int64_t bucket_bytes = 25 << 20;
  DType wire = DType::F32;  // F32 (= gradient dtype) or BF16
  bool zero = false;
};

class GradReducer {
 public:
  // Installs itself as the model's grad-ready hook (removed by the destructor).
  GradReducer(Communicator& comm, Model& model, const ReducerOptions& options);
  ~GradReducer();
  GradReducer(const GradReducer&) = delete;
  GradReducer& operator=(const GradReducer&) = delete;

  // The next backward produces the step's final gradients: reduce them as they finish.
  void arm();
  // Starts any bucket not yet started (e.g. no backward ran) and waits for all of them.
  // Afterwards the gradients hold the sum over ranks (ZeRO: on this rank's shard only).
  void finish();
  // ZeRO: every rank's updated shard of the master weights to every rank.
  void all_gather_params();

  bool zero() const { return options_.zero; }
  Range shard() const { return shards_.at(comm_.rank()); }
  const std::vector<Range>& shards() const { return shards_; }
  const std::vector<BucketPlan>& buckets() const { return plan_; }
  // Bytes this rank sends into the reduction per step (before the algorithm's factor).
  int64_t reduced_bytes_per_step() const;
  std::string describe() const;

 private:
  void on_ready(const std::vector<int>& params);
  void launch(int bucket);

  Communicator& comm_;
  Model& model_;
  ReducerOptions options_;
  std::vector<Range> shards_;
  std::vector<BucketPlan> plan_;
  std::vector<int> bucket_of_;   // param index -> bucket
  std::vector<int> remaining_;   // params still to finish, per bucket
  std::vector<CommRequest> requests_;
  std::vector<bool> launched_;
  bool armed_ = false;
};

}  // namespace mhc::dist
